//! Endpoint strings: `HOST:PORT`, validated and normalized.

use crate::Error;

/// Validates one endpoint and returns it as `HOST:PORT` (an `http://` prefix
/// is accepted and stripped; it is added back when a channel is built).
pub fn normalize(raw: &str) -> Result<String, Error> {
    let s = raw.trim();
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "invalid endpoint {raw:?}: {why} (expected HOST:PORT)"
        ))
    };
    if s.starts_with("https://") {
        return Err(bad("TLS (https://) is not supported"));
    }
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.contains(|c: char| c.is_whitespace() || c == '/' || c == '?' || c == '#' || c == '@') {
        return Err(bad("unexpected character"));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(bad("unbalanced brackets"));
    }
    if !host.starts_with('[') && host.contains(':') {
        return Err(bad("an IPv6 host must be in brackets"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("port must be 1..=65535")),
        Ok(_) => {}
    }
    Ok(s.to_string())
}

/// Validates a list of endpoints, dropping duplicates (first one wins).
pub fn normalize_all<S: AsRef<str>>(raw: &[S]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for r in raw {
        let e = normalize(r.as_ref())?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.is_empty() {
        return Err(Error::invalid_argument(
            "no endpoints given (expected at least one HOST:PORT)",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_forms() {
        assert_eq!(normalize("127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(
            normalize(" node-1.example:443 ").unwrap(),
            "node-1.example:443"
        );
        assert_eq!(
            normalize("http://localhost:7000").unwrap(),
            "localhost:7000"
        );
        assert_eq!(
            normalize("http://localhost:7000/").unwrap(),
            "localhost:7000"
        );
        assert_eq!(normalize("[::1]:7000").unwrap(), "[::1]:7000");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "localhost",
            ":7000",
            "host:",
            "host:0",
            "host:70000",
            "host:abc",
            "https://h:1",
            "a b:1",
            "h:1/x",
            "::1:7000",
            "[::1:7000",
        ] {
            let e = normalize(bad).unwrap_err();
            assert_eq!(e.code, tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.message.contains("invalid endpoint"), "{}", e.message);
        }
    }

    #[test]
    fn list_dedups_and_needs_one() {
        let v = normalize_all(&["a:1", "http://a:1", "b:2"]).unwrap();
        assert_eq!(v, vec!["a:1".to_string(), "b:2".to_string()]);
        assert!(normalize_all::<&str>(&[]).is_err());
    }
}
