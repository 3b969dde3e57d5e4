//! TLS for the CA server: TLS 1.2+ with rustls (ring), the server's own certificate chain, and
//! optional client certificates.
//!
//! The handshake proves that a client holds the key of the certificate it presents. Whether
//! that certificate is trusted (issued by a CA generation, recorded, not expired or revoked) is
//! decided by the authority for each request, so a refused renewal gets a JSON answer with a
//! reason instead of a failed handshake the client cannot explain.

use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, ServerConfig};

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure TLS: {0}")]
pub struct TlsError(String);

/// Accepts any client certificate whose key the client proves it holds; trust is decided later.
///
/// It names no acceptable CAs: the generations change while the server runs (a rotation), and
/// Go's TLS client sends no certificate at all when its certificate's issuer is not among the
/// names hinted, so hints fixed at start would silently break mTLS after `activate`.
#[derive(Debug)]
struct DeferredClientVerifier {
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
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    crate::pki::signature_checks!(algorithms);
}

/// The server's own certificate, replaceable while serving (after a CA rotation step the server
/// presents a certificate from the new active generation without a restart).
#[derive(Debug)]
pub struct ServingCertificate {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
}

fn certified_key(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    CertifiedKey::from_der(chain, key, &crate::pki::tls_provider())
        .map(Arc::new)
        .map_err(|e| TlsError(e.to_string()))
}

impl ServingCertificate {
    /// `chain` is the server certificate then the CA, `key` its PKCS#8 key.
    pub fn new(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: std::sync::RwLock::new(certified_key(chain, key_pkcs8)?),
        }))
    }

    /// Presents this chain from the next handshake on.
    pub fn replace(&self, chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<(), TlsError> {
        let fresh = certified_key(chain, key_pkcs8)?;
        // A poisoned lock only means a panic while swapping an Arc; the Arc is whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Server config presenting `serving`, asking for (not requiring) a client certificate.
pub fn server_config(serving: Arc<ServingCertificate>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crate::pki::tls_provider();
    let verifier = Arc::new(DeferredClientVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Our suite order, not the client's (rustls clients put AES-256 first).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
