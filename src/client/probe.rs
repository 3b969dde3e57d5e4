//! The probe of what an etcd member really serves: a TLS handshake with its client or peer
//! port that records the certificate chain the member presents, whoever signed it. The agent
//! runs it against its own member, `etcd-ca check` against every member; both then judge the
//! chain themselves (served serial against issued, SANs, chain against the bundle).

use std::sync::Mutex;

use super::*;

/// What a member presented in its handshake: its certificate first, then any others it sent.
#[derive(Clone, Debug)]
pub struct ServedChain {
    pub leaf: Vec<u8>,
    pub intermediates: Vec<Vec<u8>>,
}

/// Why a member's certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{endpoint} is not an https://host:port URL")]
    Url { endpoint: String },
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("{endpoint} presented no certificate: {reason}")]
    NoCertificate { endpoint: String, reason: String },
}

/// Records the chain the server presents and accepts it: the probe judges it afterwards, and
/// a member whose certificate is wrong is exactly what it must still be able to read.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<ServedChain>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = ServedChain {
            leaf: end_entity.to_vec(),
            intermediates: intermediates.iter().map(|c| c.to_vec()).collect(),
        };
        // A poisoned lock only means another handshake of this probe panicked; the slot is
        // still a plain Option.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    crate::pki::signature_checks!(provider.signature_verification_algorithms);
}

/// Connects to `endpoint` (`https://host:port`) and returns the chain it presents. With an
/// `identity` the handshake completes on a port that requires client certificates; without
/// one the member's certificate is still read (it comes before the client's in TLS).
pub async fn served_chain(
    endpoint: &str,
    identity: Option<Identity>,
    timeout: Duration,
) -> Result<ServedChain, ProbeError> {
    let url = Endpoint::parse(endpoint).map_err(|_| ProbeError::Url {
        endpoint: endpoint.to_string(),
    })?;
    let provider = crate::pki::tls_provider();
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let connect_error = |reason: String| ProbeError::Connect {
        endpoint: endpoint.to_string(),
        reason,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| connect_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone());
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain.into_iter().map(CertificateDer::from).collect(),
                id.key,
            )
            .map_err(|e| connect_error(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(url.addr.as_str())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        connector
            .connect(url.server_name.clone(), tcp)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
            .or_else(|reason| {
                // A refusal after the member's certificate arrived (no client certificate, an
                // unknown CA) still told us what it serves.
                if recorder
                    .seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some()
                {
                    Ok(())
                } else {
                    Err(ProbeError::NoCertificate {
                        endpoint: endpoint.to_string(),
                        reason,
                    })
                }
            })
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| connect_error(format!("no answer within {}s", timeout.as_secs())))??;
    let seen = recorder
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    seen.ok_or_else(|| ProbeError::NoCertificate {
        endpoint: endpoint.to_string(),
        reason: "the handshake ended before a certificate".into(),
    })
}
