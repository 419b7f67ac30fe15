//! What a certificate says, read for display (`tidal cert show`) and for the checks at load.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;

use crate::identity::{CertIdentity, IdentityError};

/// The parts of a certificate an operator checks.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// The subject's distinguished name, as OpenSSL prints it (`CN=...`).
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Every subjectAltName, as `URI:...`, `DNS:...` or `IP:...`.
    pub sans: Vec<String>,
    /// The start of the validity period.
    pub not_before: SystemTime,
    /// The end of the validity period.
    pub not_after: SystemTime,
    /// A CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
    /// The certificate may serve TLS (extended key usage ServerAuth).
    pub server_auth: bool,
    /// The certificate may dial TLS (extended key usage ClientAuth).
    pub client_auth: bool,
    /// The tidal identity, or why there is none (a CA has none).
    pub identity: Result<CertIdentity, IdentityError>,
}

impl CertInfo {
    /// The first certificate of a PEM file.
    pub fn from_pem(pem: &[u8]) -> Result<CertInfo, IdentityError> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem)
            .map_err(|e| IdentityError(format!("holds no PEM certificate: {e}")))?;
        CertInfo::from_der(&der)
    }

    /// What a DER certificate says; an error only if it does not parse.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError(format!("cannot parse the certificate: {e}")))?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext.value.general_names.iter().map(san).collect(),
            Ok(None) => Vec::new(),
            Err(e) => vec![format!("(bad subjectAltName extension: {e})")],
        };
        let (server_auth, client_auth) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (
                eku.value.server_auth || eku.value.any,
                eku.value.client_auth || eku.value.any,
            ),
            // No EKU extension: the key may be used for anything.
            Ok(None) => (true, true),
            Err(_) => (false, false),
        };
        let time = |t: &x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            not_before: time(&cert.validity().not_before),
            not_after: time(&cert.validity().not_after),
            is_ca: cert.is_ca(),
            server_auth,
            client_auth,
            identity: CertIdentity::from_der(der),
        })
    }
}

/// One subjectAltName the way OpenSSL writes it.
fn san(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*b) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => format!("IP:(bad, {} bytes)", b.len()),
            },
        },
        other => other.to_string(),
    }
}
