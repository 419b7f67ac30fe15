//! A TLS directory (ca.pem, cert.pem, key.pem), loaded and checked as one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, RootCertStore};

use crate::error::TlsError;
use crate::identity::{CertIdentity, Role};
use crate::info::CertInfo;

/// The CA certificates (one or more) that every peer's certificate must chain to.
pub const CA_FILE: &str = "ca.pem";
/// This process's certificate, then any intermediates.
pub const CERT_FILE: &str = "cert.pem";
/// This process's private key (PKCS#8, SEC1 or PKCS#1 PEM).
pub const KEY_FILE: &str = "key.pem";

/// The one rule of every process (server, agent, client) for its
/// `--tls-dir` and `--insecure`: the TLS directory, unless plaintext is
/// asked for; asking for both is an error.
pub fn tls_or_plaintext(tls_dir: Option<&Path>, insecure: bool) -> Result<Option<&Path>, TlsError> {
    match (tls_dir, insecure) {
        (Some(dir), true) => Err(TlsError::TlsAndInsecure { dir: dir.into() }),
        (dir, _) => Ok(dir),
    }
}

/// The protocol every tidal connection speaks over TLS (gRPC).
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// A certificate that verified but names the wrong identity (or none),
/// as rustls reports it: the message travels in the error's source.
pub(crate) fn refused(e: crate::identity::IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

/// The crypto provider of every configuration: ring, named explicitly so
/// that no other provider (aws-lc-rs) is ever needed or picked up.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A loaded TLS directory. Loading checks everything that can be checked
/// alone, so a configuration built from it fails only on the wire: each
/// file parses, key.pem belongs to cert.pem, cert.pem names a tidal
/// identity, chains to ca.pem with the key usages of its role, and is
/// valid now.
#[derive(Clone)]
pub struct TlsDir {
    dir: PathBuf,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    identity: CertIdentity,
    not_after: SystemTime,
}

impl fmt::Debug for TlsDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsDir")
            .field("dir", &self.dir)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl TlsDir {
    /// Reads and checks `dir`/ca.pem, cert.pem and key.pem. Errors name the file.
    pub fn load(dir: impl AsRef<Path>) -> Result<TlsDir, TlsError> {
        TlsDir::load_at(dir.as_ref(), SystemTime::now())
    }

    /// [`load`](Self::load) with validity checked at `now`.
    pub(crate) fn load_at(dir: &Path, now: SystemTime) -> Result<TlsDir, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|error| TlsError::Read { path, error })
        };
        let (ca, cert, key) = (read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?);
        TlsDir::from_pem(dir, &ca, &cert, &key, now)
    }

    /// A TLS directory from the contents of its three files.
    pub(crate) fn from_pem(
        dir: &Path,
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        now: SystemTime,
    ) -> Result<TlsDir, TlsError> {
        let file = |name: &str, reason: String| TlsError::File {
            path: dir.join(name),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for (i, c) in certs(ca)
            .map_err(|r| file(CA_FILE, r))?
            .into_iter()
            .enumerate()
        {
            roots.add(c).map_err(|e| {
                file(
                    CA_FILE,
                    format!("certificate {} is not a usable CA: {e}", i + 1),
                )
            })?;
        }
        let chain = certs(cert).map_err(|r| file(CERT_FILE, r))?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            file(
                KEY_FILE,
                format!("holds no PEM private key (-----BEGIN PRIVATE KEY-----): {e}"),
            )
        })?;
        let signing = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| file(KEY_FILE, format!("unusable private key: {e}")))?;
        CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .map_err(|_| file(KEY_FILE, format!("is not the key of {CERT_FILE}")))?;
        let info = CertInfo::from_der(&chain[0]).map_err(|e| file(CERT_FILE, e.to_string()))?;
        let identity = info
            .identity
            .clone()
            .map_err(|e| file(CERT_FILE, e.to_string()))?;
        let roots = Arc::new(roots);
        verify_own(&roots, &chain, identity.role(), now)
            .map_err(|e| file(CERT_FILE, own_cert_failure(&e, &info)))?;
        Ok(TlsDir {
            dir: dir.to_path_buf(),
            roots,
            chain,
            key: Arc::new(key),
            identity,
            not_after: info.not_after,
        })
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity cert.pem proves.
    pub fn identity(&self) -> &CertIdentity {
        &self.identity
    }

    /// When cert.pem expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// Every certificate in a PEM file; at least one.
fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// `now` as webpki wants it (times before 1970 are not a concern).
pub(crate) fn unix_time(now: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

/// Checks a certificate chain against `roots` the way a peer will: as a
/// TLS client (every role dials) and, for servers, as a TLS server.
pub(crate) fn verify_own(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    role: Role,
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let provider = provider();
    let now = unix_time(now);
    let (leaf, rest) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    if role == Role::Server {
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &ParsedCertificate::try_from(leaf)?,
            roots,
            rest,
            now,
            provider.signature_verification_algorithms.all,
        )?;
    }
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_client_cert(leaf, rest, now)?;
    Ok(())
}

/// Why a process's own certificate failed [`verify_own`], for an operator.
fn own_cert_failure(e: &rustls::Error, info: &CertInfo) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => {
                format!("expired at {}", utc(info.not_after))
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("is not valid before {}", utc(info.not_before))
            }
            C::UnknownIssuer | C::BadSignature => {
                format!(
                    "is not signed by the CA of {CA_FILE} (its issuer is {})",
                    info.issuer
                )
            }
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
                "its key usages do not fit its role ({}): {c}",
                info.identity
                    .as_ref()
                    .map(|i| i.role().as_str())
                    .unwrap_or("unknown")
            ),
            other => format!("does not verify against {CA_FILE}: {other}"),
        },
        other => format!("does not verify against {CA_FILE}: {other}"),
    }
}

/// A time as RFC 3339 in UTC, for messages.
pub(crate) fn utc(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{t:?}"))
}

#[cfg(test)]
mod tls_or_plaintext_tests {
    use super::*;

    #[test]
    fn tls_or_plaintext_refuses_both() {
        let dir = Path::new("/etc/tidal/tls");
        assert_eq!(tls_or_plaintext(Some(dir), false).unwrap(), Some(dir));
        assert_eq!(tls_or_plaintext(None, true).unwrap(), None);
        assert_eq!(tls_or_plaintext(None, false).unwrap(), None);
        let e = tls_or_plaintext(Some(dir), true).unwrap_err().to_string();
        assert_eq!(
            e,
            "both --tls-dir /etc/tidal/tls (or TIDAL_TLS_DIR) and --insecure (or TIDAL_INSECURE) \
             are set: choose TLS or plaintext"
        );
    }
}
