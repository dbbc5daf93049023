//! Addresses as users write them.

/// `host:port` or `[v6]:port` → the host (brackets removed) and the port.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
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
}
