//! Addresses as users write them, and where an admin API may listen.

use std::net::SocketAddr;

/// Why `HOST:PORT` could not be read; each message shows the input and how
/// to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    #[error("{0:?} has no port; write HOST:PORT (e.g. localhost:8443 or [::1]:8443)")]
    NoPort(String),
    #[error("{0:?} has no host before the port; write HOST:PORT (e.g. localhost:8443)")]
    NoHost(String),
    #[error("{input:?}: {port:?} is not a port number (1-65535)")]
    BadPort { input: String, port: String },
    #[error("{0:?}: the `[` of the IPv6 address is never closed; write [ADDRESS]:PORT (e.g. [::1]:8443)")]
    UnclosedBracket(String),
    #[error("{0:?}: brackets belong around a whole IPv6 address, before the port; write [ADDRESS]:PORT (e.g. [::1]:8443)")]
    StrayBracket(String),
}

/// Non-whitespace characters an admin token needs: a one-character token
/// is guessed as fast as it is typed.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// An admin address and token that may not be used together: the flag to
/// fix and how. Never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct AdminBindError {
    pub flag: &'static str,
    pub problem: String,
}

/// The one rule for every admin API (`proxy --admin`, `serve --admin`): on
/// loopback it may run without a token; anywhere else (0.0.0.0 included)
/// only with one, and a token must have at least [`MIN_ADMIN_TOKEN`]
/// non-whitespace characters. Returns the token to require (an empty one
/// means none).
pub fn check_admin_bind(
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<Option<String>, AdminBindError> {
    let token = token.filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(AdminBindError {
            flag: "--admin",
            problem: format!("{addr} is not a loopback address: the admin API shows (and on the proxy changes) this process's state, so a non-loopback bind requires --admin-token TOKEN"),
        });
    }
    if let Some(t) = token {
        // Counted, never shown: the message must not echo the secret.
        let strong = t.chars().filter(|c| !c.is_whitespace()).count();
        if strong < MIN_ADMIN_TOKEN {
            return Err(AdminBindError {
                flag: "--admin-token",
                problem: format!("has {strong} non-whitespace characters; give at least {MIN_ADMIN_TOKEN} (e.g. `openssl rand -hex 16`), or leave it unset to keep the admin API on loopback without one"),
            });
        }
    }
    Ok(token.map(str::to_string))
}

/// `host:port` or `[v6]:port` → the host (brackets removed) and the port.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    parse_host_port(s).ok()
}

/// [`split_host_port`], saying what is wrong: a missing port, a port that
/// is no number, an IPv6 bracket left open (`[::1` would otherwise split
/// into host `[:` and port 1).
pub fn parse_host_port(s: &str) -> Result<(&str, u16), HostPortError> {
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (addr, rest) = v6
                .split_once(']')
                .ok_or_else(|| HostPortError::UnclosedBracket(s.to_string()))?;
            let port = rest
                .strip_prefix(':')
                .ok_or_else(|| HostPortError::NoPort(s.to_string()))?;
            (addr, port)
        }
        None => s
            .rsplit_once(':')
            .ok_or_else(|| HostPortError::NoPort(s.to_string()))?,
    };
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return Err(HostPortError::StrayBracket(s.to_string()));
    }
    if host.is_empty() {
        return Err(HostPortError::NoHost(s.to_string()));
    }
    if port.is_empty() {
        return Err(HostPortError::NoPort(s.to_string()));
    }
    let port = port.parse().map_err(|_| HostPortError::BadPort {
        input: s.to_string(),
        port: port.to_string(),
    })?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_split_with_v6_brackets_removed() {
        assert_eq!(split_host_port("localhost:8443"), Some(("localhost", 8443)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", 443)));
        assert_eq!(split_host_port(":443"), None);
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port("host:http"), None);
    }

    #[test]
    fn each_mistake_has_its_own_error() {
        use HostPortError::*;
        let e = |s: &str| parse_host_port(s).unwrap_err();
        assert!(matches!(e("[::1"), UnclosedBracket(_)));
        assert!(matches!(e("[::1:443"), UnclosedBracket(_)));
        assert!(matches!(e("[::1]"), NoPort(_)));
        assert!(matches!(e("[::1]443"), NoPort(_)));
        assert!(matches!(e("::1]:443"), StrayBracket(_)));
        assert!(matches!(e("[]:443"), NoHost(_)));
        assert!(matches!(e("host:"), NoPort(_)));
        assert!(matches!(e("host:99999"), BadPort { .. }));
        let text = e("[::1").to_string();
        assert!(
            text.contains("\"[::1\"") && text.contains("never closed"),
            "{text}"
        );
        assert_eq!(parse_host_port("[fe80::1]:8443"), Ok(("fe80::1", 8443)));
    }
}
