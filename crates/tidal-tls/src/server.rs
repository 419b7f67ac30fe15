//! The server side: a rustls configuration that requires a client certificate from the CA, and the peer's identity.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CommonState, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::error::TlsError;
use crate::files::{provider, refused, TlsDir, ALPN_H2};
use crate::identity::{CertIdentity, IdentityError};

/// A server configuration from `dir`: TLS 1.2 and 1.3 with the ring
/// provider, ALPN `h2`, and a client certificate required. The client's
/// certificate must chain to ca.pem, allow TLS client use and name a
/// tidal identity (any role); what that identity may do is for the
/// caller to decide ([`peer_identity`]).
pub fn server_config(dir: &TlsDir) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(dir.roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(IdentityClientVerifier(webpki)))
        .with_single_cert(dir.chain.clone(), dir.key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The identity of the peer of an established connection (for a server,
/// the client's certificate, which [`server_config`] made mandatory).
/// Pass the rustls connection: `tls_stream.get_ref().1`.
pub fn peer_identity(conn: &CommonState) -> Result<CertIdentity, IdentityError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| IdentityError("the peer presented no certificate".into()))?;
    CertIdentity::from_der(leaf)
}

/// webpki's client verification, then a tidal identity in the certificate,
/// so a connection whose peer names none fails in the handshake.
#[derive(Debug)]
struct IdentityClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for IdentityClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        CertIdentity::from_der(end_entity).map_err(refused)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}
