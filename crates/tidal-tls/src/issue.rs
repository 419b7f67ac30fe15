//! Issuing certificates: a new CA, and certificates signed by a CA directory (ECDSA P-256 keys).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::TlsError;
use crate::files::{TlsDir, CA_FILE, CERT_FILE, KEY_FILE};
use crate::identity::{CertIdentity, Role};

/// A CA directory's private key, beside its ca.pem.
pub const CA_KEY_FILE: &str = "ca.key";

/// Host names a server certificate carries when none are asked for, so
/// that third-party clients that check host names can reach a local server.
pub const DEFAULT_SERVER_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first moment it is valid.
    pub not_before: SystemTime,
    /// The last moment it is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks differ) until `days` days from now.
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// What to put into a new certificate.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who the certificate names (its SAN URI and, by role, its key usages).
    pub identity: CertIdentity,
    /// DNS names or IP addresses added as SANs, for clients that check host
    /// names (tidal's own clients check the identity instead). Empty for a
    /// server means [`DEFAULT_SERVER_HOSTS`].
    pub hosts: Vec<String>,
    /// When it is valid.
    pub validity: Validity,
}

/// Creates a CA in `out`: ca.pem and ca.key (mode 0600). Refuses to
/// overwrite either file.
pub fn new_ca(out: &Path, name: &str, validity: Validity) -> Result<(), TlsError> {
    let key = KeyPair::generate().map_err(issue_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, validity);
    let cert = params.self_signed(&key).map_err(issue_error)?;
    write_new(
        out,
        &[
            (CA_FILE, cert.pem(), 0o644),
            (CA_KEY_FILE, key.serialize_pem(), 0o600),
        ],
    )
}

/// Issues a certificate signed by the CA in `ca_dir` (ca.pem, ca.key) into
/// `out`: a copy of ca.pem, cert.pem and key.pem (mode 0600), which is a
/// TLS directory as [`TlsDir::load`] reads it. The new certificate is
/// checked against the CA before anything is written; no file is
/// overwritten. Returns the new directory as loaded.
pub fn issue(ca_dir: &Path, req: &Request, out: &Path) -> Result<TlsDir, TlsError> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(|error| TlsError::Read { path, error })
    };
    let bad = |name: &str, reason: String| TlsError::File {
        path: ca_dir.join(name),
        reason,
    };
    let (ca_pem, ca_key) = (read(CA_FILE)?, read(CA_KEY_FILE)?);
    let ca_key = KeyPair::from_pem(&ca_key)
        .map_err(|e| bad(CA_KEY_FILE, format!("holds no usable private key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| bad(CA_FILE, format!("holds no usable CA certificate: {e}")))?;

    let id = &req.identity;
    let key = KeyPair::generate().map_err(issue_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(id.name());
    let uri = id.to_uri().try_into().map_err(issue_error)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let defaults: Vec<String> = DEFAULT_SERVER_HOSTS.iter().map(|h| h.to_string()).collect();
    let hosts = match (id.role(), req.hosts.is_empty()) {
        (Role::Server, true) => &defaults,
        _ => &req.hosts,
    };
    for h in hosts {
        params.subject_alt_names.push(match h.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into().map_err(|e| {
                TlsError::Issue(format!(
                    "host {h:?} is neither an IP address nor a DNS name: {e}"
                ))
            })?),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Only a server's certificate may serve: a leaked agent or client key
    // cannot pose as a server (webpki checks the key usage).
    params.extended_key_usages = match id.role() {
        Role::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Agent | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, req.validity);
    let cert = params.signed_by(&key, &issuer).map_err(issue_error)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());

    let v = req.validity;
    let midway = v.not_before + v.not_after.duration_since(v.not_before).unwrap_or_default() / 2;
    let checked = TlsDir::from_pem(
        out,
        ca_pem.as_bytes(),
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        midway,
    )
    .map_err(|e| {
        TlsError::Issue(format!(
            "the new certificate does not verify against {}: {e}",
            ca_dir.join(CA_FILE).display()
        ))
    })?;
    write_new(
        out,
        &[
            (CA_FILE, ca_pem, 0o644),
            (CERT_FILE, cert_pem, 0o644),
            (KEY_FILE, key_pem, 0o600),
        ],
    )?;
    Ok(checked)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, v: Validity) {
    params.not_before = time::OffsetDateTime::from(v.not_before);
    params.not_after = time::OffsetDateTime::from(v.not_after);
}

fn issue_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Issue(e.to_string())
}

/// Writes new files into `dir` (created if missing): none may exist
/// already; if one write fails, the files written before it are removed.
fn write_new(dir: &Path, files: &[(&str, String, u32)]) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write {
        path: dir.to_path_buf(),
        error,
    })?;
    for (name, _, _) in files {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            return Err(TlsError::Exists { path });
        }
    }
    let mut written: Vec<PathBuf> = Vec::new();
    for (name, contents, mode) in files {
        let path = dir.join(name);
        let undo = |written: &[PathBuf]| {
            for p in written {
                let _ = std::fs::remove_file(p);
            }
        };
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(&path)
        {
            Ok(f) => f,
            Err(source) => {
                undo(&written);
                return Err(match source.kind() {
                    std::io::ErrorKind::AlreadyExists => TlsError::Exists { path },
                    _ => TlsError::Write {
                        path,
                        error: source,
                    },
                });
            }
        };
        written.push(path.clone());
        if let Err(source) = f.write_all(contents.as_bytes()).and_then(|()| f.sync_all()) {
            undo(&written);
            return Err(TlsError::Write {
                path,
                error: source,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "issue_test.rs"]
mod tests;
