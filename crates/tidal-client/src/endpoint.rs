//! Endpoint strings: `HOST:PORT`, validated and normalized.

use crate::Error;

const HTTPS: &str = "https://";

/// Validates one endpoint and returns it as `HOST:PORT`. An `http://` or
/// `https://` prefix is accepted and stripped: whether a connection uses
/// TLS is the client's setting (`ClientOptions::tls`), and `https://` only
/// asks that it be on ([`wants_tls`]).
pub fn normalize(raw: &str) -> Result<String, Error> {
    let s = raw.trim();
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "invalid endpoint {raw:?}: {why} (expected HOST:PORT)"
        ))
    };
    let s = strip_scheme(s, HTTPS)
        .or_else(|| strip_scheme(s, "http://"))
        .unwrap_or(s);
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

/// Whether `raw` names the `https://` scheme, which requires TLS.
pub fn wants_tls(raw: &str) -> bool {
    strip_scheme(raw.trim(), HTTPS).is_some()
}

/// `s` without `scheme` (matched without regard to case), if it starts with it.
fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let head = s.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &s[scheme.len()..])
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
        assert_eq!(
            normalize("https://node-1.example:7001").unwrap(),
            "node-1.example:7001"
        );
        assert_eq!(normalize("HTTPS://[::1]:7001/").unwrap(), "[::1]:7001");
        assert_eq!(normalize("Http://h:1").unwrap(), "h:1");
    }

    #[test]
    fn https_asks_for_tls() {
        for yes in ["https://h:1", " HTTPS://h:1", "Https://[::1]:2/"] {
            assert!(wants_tls(yes), "{yes:?}");
        }
        for no in ["h:1", "http://h:1", "httpsx://h:1", "https:/h:1", "h"] {
            assert!(!wants_tls(no), "{no:?}");
        }
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
            "https://",
            "https://h",
            "https://https://h:1",
            "ftp://h:1",
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
