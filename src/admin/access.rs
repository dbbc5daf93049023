//! Who may use an admin API: with a token, whoever presents it; without
//! one, only requests addressed to the loopback listener by a loopback name
//! and not sent on behalf of a foreign web origin. Loopback alone does not
//! keep a web page out: a page can send a cross-site request (its `Origin`
//! names the page's site) or rebind its own DNS name to 127.0.0.1 (its
//! `Host` is that name), so such requests are refused.
//!
//! One guard for every admin API (the proxy's, `serve`'s). Never echoes a
//! token in a refusal.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::StatusCode;

/// Who may use the API: with a token, whoever presents it; without one,
/// requests addressed to this loopback listener by a loopback name and not
/// sent on behalf of a foreign web origin.
pub(super) struct Access {
    token: Option<Arc<str>>,
    /// The bound IP as a `Host` gives it (`127.0.0.2`, `[::1]`), besides
    /// the loopback names every loopback listener answers to.
    bound_host: Option<String>,
}

/// Hosts that name this machine's loopback interface and nothing else, so a
/// page cannot rebind one of them to reach us.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl Access {
    pub(super) fn new(token: Option<Arc<str>>, bound: Option<SocketAddr>) -> Self {
        Access {
            token,
            bound_host: bound.map(|a| match a {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }),
        }
    }

    /// `Err((status, why))` when the request must be refused.
    pub(super) fn check(
        &self,
        headers: &hyper::HeaderMap,
    ) -> Result<(), (StatusCode, &'static str)> {
        if let Some(want) = &self.token {
            // A token is the proof: whatever page sends the request, it
            // cannot know it.
            return match authorized(headers, want) {
                true => Ok(()),
                false => Err((
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong admin token (Authorization: Bearer TOKEN)\n",
                )),
            };
        }
        let host = headers
            .get(hyper::header::HOST)
            .map(|h| h.to_str().unwrap_or(""));
        if host.is_some_and(|h| !self.is_local_host(h)) {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                "refused: the Host header is not a loopback name (localhost, 127.0.0.1, [::1]) or this listener's address; without --admin-token the admin API answers only requests addressed to loopback (DNS rebinding guard)\n",
            ));
        }
        let origin = headers
            .get(hyper::header::ORIGIN)
            .map(|o| o.to_str().unwrap_or(""));
        if origin.is_some_and(|o| !self.is_local_origin(o)) {
            return Err((
                StatusCode::FORBIDDEN,
                "refused: the request comes from a web page of another origin; without --admin-token the admin API answers only loopback origins (cross-site request guard)\n",
            ));
        }
        Ok(())
    }

    /// `localhost`, `127.0.0.1`, `[::1]` or the bound address, any port.
    fn is_local_host(&self, host: &str) -> bool {
        // `[::1]:15000` keeps its brackets; `localhost:15000` loses its port.
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (!name.starts_with('[') || name.ends_with(']')) =>
            {
                name
            }
            _ => host,
        };
        LOOPBACK_HOSTS.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self
                .bound_host
                .as_deref()
                .is_some_and(|b| name.eq_ignore_ascii_case(b))
    }

    /// `http(s)://` a local host; `null` (a sandboxed or file page) is not.
    fn is_local_origin(&self, origin: &str) -> bool {
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        rest.is_some_and(|host| !host.contains('/') && self.is_local_host(host))
    }
}

/// `Authorization: Bearer <want>`, compared in constant time.
fn authorized(headers: &hyper::HeaderMap, want: &str) -> bool {
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), want.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    hyper::header::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn without_a_token_only_loopback_hosts_and_origins_pass() {
        let a = Access::new(None, Some("127.0.0.2:15000".parse().unwrap()));
        for host in [
            "localhost",
            "LOCALHOST:15000",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:15000",
            "127.0.0.2:15000",
        ] {
            assert!(a.check(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:15000",
            "localhost.evil.example",
            "127.0.0.3",
            "[::1",
        ] {
            let e = a.check(&headers(&[("host", host)])).unwrap_err();
            assert_eq!(e.0, StatusCode::MISDIRECTED_REQUEST, "{host}");
        }
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
        ] {
            let h = headers(&[("host", "127.0.0.1"), ("origin", origin)]);
            assert!(a.check(&h).is_ok(), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost.evil.example",
            "file://",
            "http://127.0.0.1/x",
        ] {
            let h = headers(&[("host", "127.0.0.1"), ("origin", origin)]);
            assert_eq!(
                a.check(&h).unwrap_err().0,
                StatusCode::FORBIDDEN,
                "{origin}"
            );
        }
        assert!(
            a.check(&headers(&[])).is_ok(),
            "no Host (HTTP/1.0): no page sent it"
        );
    }

    #[test]
    fn with_a_token_the_token_decides() {
        let a = Access::new(Some(Arc::from("0123456789abcdef")), None);
        let h = headers(&[
            ("host", "evil.example"),
            ("authorization", "Bearer 0123456789abcdef"),
        ]);
        assert!(a.check(&h).is_ok());
        let h = headers(&[("host", "127.0.0.1")]);
        assert_eq!(a.check(&h).unwrap_err().0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
