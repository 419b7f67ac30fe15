//! The plaintext rule of clients and agents: without TLS, loopback servers only, unless `--insecure`.

use std::net::IpAddr;

/// A client or an agent without TLS was given a server that is not on
/// this machine, and plaintext was not asked for (`--insecure`): its
/// token and its tasks would cross the network readable by anyone on
/// the way. A usage error (the `tidal` CLI exits 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to connect in plaintext to {endpoint} (not a loopback address): give --tls-dir DIR \
     or TIDAL_TLS_DIR (see `tidal cert`), or --insecure or TIDAL_INSECURE=true"
)]
pub struct PlaintextRefused {
    /// The endpoint as it was given.
    pub endpoint: String,
}

/// Whether `host` (an IP address, an IPv6 address in brackets or a name)
/// is this machine's loopback: an address in 127.0.0.0/8, `::1` (also as
/// `::ffff:127.x.y.z`) or the name `localhost`. Other names count as not
/// loopback: they are not resolved.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The host of an endpoint `[http://|https://]HOST:PORT[/]`, IPv6 hosts
/// in brackets kept as they are; the whole text when it has no port.
pub fn endpoint_host(endpoint: &str) -> &str {
    let s = endpoint.trim();
    let s = s
        .split_once("://")
        .map_or(s, |(_scheme, rest)| rest)
        .trim_end_matches('/');
    s.rsplit_once(':')
        .filter(|(host, _port)| !host.is_empty() && (host.ends_with(']') || !host.contains(':')))
        .map_or(s, |(host, _port)| host)
}

/// The rule every client and agent follows before connecting: with TLS
/// (`tls`) or with plaintext asked for (`insecure`) any server will do;
/// otherwise each endpoint must be loopback ([`is_loopback_host`]), and
/// the first that is not is refused.
pub fn check_plaintext_endpoints<S: AsRef<str>>(
    endpoints: &[S],
    tls: bool,
    insecure: bool,
) -> Result<(), PlaintextRefused> {
    if tls || insecure {
        return Ok(());
    }
    match endpoints
        .iter()
        .map(AsRef::as_ref)
        .find(|e| !is_loopback_host(endpoint_host(e)))
    {
        Some(e) => Err(PlaintextRefused {
            endpoint: e.trim().to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "plaintext_test.rs"]
mod tests;
