//! This server's certificate (`--tls-dir`): loaded and checked once at start, then used by every listener and every dial to another server.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use tidal_tls::{CertIdentity, TlsDir};

use crate::config::ServerConfig;

/// A certificate that expires sooner than this is warned about at start.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Loads `config.tls_dir`, if it is set, and checks the certificate as the
/// other servers will: it chains to ca.pem, is valid now (both checked by
/// [`TlsDir::load`]) and names this server, `server/<dc>/<id>`. Errors name
/// the file. `tidal server` calls it before binding, to fail early;
/// [`load_and_warn`] is the server's own.
pub fn load(config: &ServerConfig) -> anyhow::Result<Option<TlsDir>> {
    let Some(path) = &config.tls_dir else {
        return Ok(None);
    };
    let dir = TlsDir::load(path).with_context(|| format!("--tls-dir {}", path.display()))?;
    let cert = path.join(tidal_tls::files::CERT_FILE);
    check_identity(dir.identity(), &config.dc, config.node_id).map_err(|why| {
        anyhow::anyhow!("--tls-dir {}: {}: {why}", path.display(), cert.display())
    })?;
    Ok(Some(dir))
}

/// [`load`], then a warning when the certificate expires within [`EXPIRY_WARNING`].
pub fn load_and_warn(config: &ServerConfig) -> anyhow::Result<Option<TlsDir>> {
    let dir = load(config)?;
    if let Some(dir) = &dir {
        if let Some(left) = expires_within(dir.not_after(), SystemTime::now(), EXPIRY_WARNING) {
            tracing::warn!(node_id = config.node_id,
                cert = %dir.dir().join(tidal_tls::files::CERT_FILE).display(),
                days_left = left.as_secs() / 86_400,
                "this server's certificate expires soon: issue a new one (tidal cert issue) and restart");
        }
    }
    Ok(dir)
}

/// Why a server certificate naming `identity` is not the one of node `id`
/// of `dc`, if it is not.
pub fn check_identity(identity: &CertIdentity, dc: &str, id: u64) -> Result<(), String> {
    if identity.role() == tidal_tls::Role::Server
        && identity.dc() == Some(dc)
        && identity.node_id() == Some(id)
    {
        return Ok(());
    }
    Err(format!(
        "the certificate names {identity}, not server '{id}' of dc '{dc}' (this server's --id \
         and --dc): issue one with `tidal cert issue --ca CA_DIR --role server --dc {dc} \
         --name {id} --out DIR`"
    ))
}

/// How long until `not_after`, when that is less than `within` from `now`
/// (zero once it has passed).
pub fn expires_within(
    not_after: SystemTime,
    now: SystemTime,
    within: Duration,
) -> Option<Duration> {
    let left = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    (left < within).then_some(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_certificate_of_this_node_and_dc_fits() {
        let server = |dc, id| CertIdentity::server(dc, id).unwrap();
        assert!(check_identity(&server("dc1", 2), "dc1", 2).is_ok());
        let e = check_identity(&server("dc1", 3), "dc1", 2).unwrap_err();
        assert!(
            e.contains("names server '3' of dc 'dc1', not server '2' of dc 'dc1'"),
            "{e}"
        );
        assert!(check_identity(&server("dc2", 2), "dc1", 2).is_err());
        let client = CertIdentity::new(tidal_tls::Role::Client, None, "2").unwrap();
        let e = check_identity(&client, "dc1", 2).unwrap_err();
        assert!(e.contains("client '2' of any dc"), "{e}");
    }

    #[test]
    fn a_certificate_is_warned_about_within_14_days_of_its_end() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(expires_within(now + 30 * day, now, EXPIRY_WARNING), None);
        assert_eq!(expires_within(now + 14 * day, now, EXPIRY_WARNING), None);
        assert_eq!(
            expires_within(now + 13 * day, now, EXPIRY_WARNING),
            Some(13 * day)
        );
        assert_eq!(
            expires_within(now - day, now, EXPIRY_WARNING),
            Some(Duration::ZERO)
        );
    }
}
