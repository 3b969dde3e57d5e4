//! TLS for the CA server: TLS 1.2+ with rustls (ring), the server's own certificate chain, and
//! optional client certificates.
//!
//! The handshake proves that a client holds the key of the certificate it presents. Whether
//! that certificate is trusted (issued by a CA generation, recorded, not expired or revoked) is
//! decided by the authority for each request, so a refused renewal gets a JSON answer with a
//! reason instead of a failed handshake the client cannot explain.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure TLS: {0}")]
pub struct TlsError(String);

/// Accepts any client certificate whose key the client proves it holds; trust is decided later.
#[derive(Debug)]
struct DeferredClientVerifier {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The provider every TLS endpoint of etcd-ca uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config: `chain` is the server certificate then the CA, `key` its PKCS#8 key;
/// `trusted_ca_subjects` are the raw subjects hinted to clients choosing a certificate.
pub fn server_config(
    chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    trusted_ca_subjects: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(DeferredClientVerifier {
        hints: trusted_ca_subjects
            .into_iter()
            .map(DistinguishedName::from)
            .collect(),
        algorithms: provider.signature_verification_algorithms,
    });
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
