//! The typed HTTPS client for the CA server's API, used by the admin CLI's remote mode (and the
//! renewal agent).
//!
//! It trusts the server either through a pinned CA fingerprint (`sha256:...`, what a node knows
//! at first contact: no trust on first use) or through a CA bundle file, can present a client
//! certificate (renewal over mTLS, admin certificates) or a bearer admin token, and turns the
//! server's JSON errors into [`ClientError::Api`] with their stable `code` (as a
//! [`crate::wire::ErrorCode`] through [`ClientError::error_code`]). Each endpoint has one method
//! taking and returning [`crate::wire`] types; `send`/`get` remain for the conditional GETs of
//! the trust bundle and CRLs, which need their headers.
//!
//! - `transport`: one request on a fresh connection, to the server that answered last and the
//!   next after a failure or a 5xx (several servers of one CA), answers whole or streamed;
//! - `verify`: the server's certificate checked against the pinned fingerprints.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::pki;
use crate::wire;

pub mod probe;
mod transport;
mod verify;

use transport::Endpoint;
use verify::PinnedCaVerifier;

/// Why a call to the CA server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server's certificate is not one we trust (a pin mismatch): retrying cannot help.
    #[error("{addr} is not a CA server we trust: {reason}")]
    Untrusted { addr: String, reason: String },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("the server {server} refused ({status}, {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The server (`host:port`) that refused, one of several perhaps.
        server: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// The server could not be reached or did not answer (another replica may).
    pub fn server_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Handshake { .. }
                | ClientError::Untrusted { .. }
                | ClientError::Http(_)
                | ClientError::Timeout { .. }
        )
    }

    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The server's error code as this version knows it (None for none, or an unknown one).
    pub fn error_code(&self) -> Option<crate::wire::ErrorCode> {
        self.code().and_then(crate::wire::ErrorCode::parse)
    }
}

/// How the client decides the server is the CA it means.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The server must present (in its chain) a CA certificate with this `sha256:` fingerprint,
    /// or one it endorsed across rotations (see [`crate::lineage`]).
    Fingerprint(String),
    /// The same for any of these fingerprints (an agent pins the bundle it installed).
    Pins(Vec<String>),
    /// Trust these CA certificates (DER).
    Bundle(Vec<Vec<u8>>),
}

/// A client certificate chain and its key.
pub struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub key: PrivateKeyDer<'static>,
}

/// A response: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The server (`host:port`) that answered.
    pub server: String,
}

/// The CA, reached through one server or several (replicas of one CA): a request goes to the
/// server that last answered, and moves on to the next after a connection failure, a timeout
/// or a 5xx answer. A 4xx answer is the CA's answer, wherever it came from.
#[derive(Clone)]
pub struct ApiClient {
    endpoints: Arc<Vec<Endpoint>>,
    /// The endpoint that answered last.
    preferred: Arc<AtomicUsize>,
    connector: tokio_rustls::TlsConnector,
    bearer: Option<String>,
    timeout: Duration,
}

impl ApiClient {
    /// A client for `url` (`https://host:port`), or for several servers of one CA given as
    /// URLs separated by commas (`https://ca1:8443,https://ca2:8443`).
    pub fn new(url: &str, trust: Trust, identity: Option<Identity>) -> Result<Self, ClientError> {
        let endpoints = url
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::Url {
                url: url.to_string(),
                reason: "no server".into(),
            });
        }
        let provider = crate::pki::tls_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let pinned = |pins: Vec<String>| {
            let pins = pins.iter().map(|p| p.to_ascii_lowercase()).collect();
            Arc::new(PinnedCaVerifier {
                pins,
                provider: provider.clone(),
            })
        };
        let builder = match trust {
            Trust::Fingerprint(fingerprint) => builder
                .dangerous()
                .with_custom_certificate_verifier(pinned(vec![fingerprint])),
            Trust::Pins(pins) => builder
                .dangerous()
                .with_custom_certificate_verifier(pinned(pins)),
            Trust::Bundle(ders) => {
                let mut roots = RootCertStore::empty();
                for der in ders {
                    roots
                        .add(CertificateDer::from(der))
                        .map_err(|e| ClientError::Tls(e.to_string()))?;
                }
                builder.with_root_certificates(roots)
            }
        };
        let mut config = match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    id.chain.into_iter().map(CertificateDer::from).collect(),
                    id.key,
                )
                .map_err(|e| ClientError::Tls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(AtomicUsize::new(0)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            bearer: None,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends `Authorization: Bearer TOKEN` with every request (admin API).
    pub fn with_bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Shares with other clients which server answered last, so that a process that builds a
    /// client per request (the agent: one identity per certificate) goes on asking the server
    /// that answers instead of a dead first one each time.
    pub fn sharing_preferred_server(mut self, preferred: Arc<AtomicUsize>) -> Self {
        self.preferred = preferred;
        self
    }
}

/// One method per endpoint, with the wire types: the only place the API's paths are spelled on
/// the client side.
impl ApiClient {
    pub async fn health(&self) -> Result<wire::Health, ClientError> {
        self.get_json("/v1/health").await
    }

    /// The trust bundle (PEM).
    pub async fn trust_bundle(&self) -> Result<String, ClientError> {
        Ok(String::from_utf8_lossy(&self.get("/v1/ca").await?.body).into_owned())
    }

    /// Every generation's certificate and endorsement (PEM), for following a pin.
    pub async fn lineage(&self) -> Result<Vec<u8>, ClientError> {
        Ok(self.get("/v1/ca/lineage").await?.body.to_vec())
    }

    /// etcd's CRL (DER), or with `generation` that generation's own.
    pub async fn crl(&self, generation: Option<i64>) -> Result<Vec<u8>, ClientError> {
        let path = match generation {
            Some(id) => format!("/v1/crl?generation={id}"),
            None => "/v1/crl".to_string(),
        };
        Ok(self.get(&path).await?.body.to_vec())
    }

    /// Waits for the CA's watched state to differ from `query.version` (a long poll).
    pub async fn watch(&self, query: &wire::WatchQuery) -> Result<wire::WatchAnswer, ClientError> {
        let query = serde_urlencoded::to_string(query)
            .map_err(|e| ClientError::Decode(format!("cannot encode the query: {e}")))?;
        self.get_json(&format!("/v1/watch?{query}")).await
    }

    pub async fn enroll(&self, body: &wire::EnrollBody) -> Result<wire::Enrollment, ClientError> {
        self.post_json("/v1/enroll", body).await
    }

    /// Renews the certificate this client presents.
    pub async fn renew(&self, body: &wire::RenewBody) -> Result<wire::Certificate, ClientError> {
        self.post_json("/v1/renew", body).await
    }

    pub async fn create_token(
        &self,
        body: &wire::TokenBody,
    ) -> Result<wire::TokenResponse, ClientError> {
        self.post_json("/v1/tokens", body).await
    }

    pub async fn issue(&self, body: &wire::IssueBody) -> Result<wire::IssueResponse, ClientError> {
        self.post_json("/v1/issue", body).await
    }

    /// One page of certificates (see [`wire::CertificatePage`]).
    pub async fn certificates(
        &self,
        query: &wire::CertsQuery,
    ) -> Result<wire::CertificatePage, ClientError> {
        let query = serde_urlencoded::to_string(query)
            .map_err(|e| ClientError::Decode(format!("cannot encode the query: {e}")))?;
        self.get_json(&format!("/v1/certs?{query}")).await
    }

    /// One certificate; `serial` is normalised lower-case hex.
    pub async fn certificate(&self, serial: &str) -> Result<wire::CertificateInfo, ClientError> {
        self.get_json(&format!("/v1/certs/{serial}")).await
    }

    pub async fn revoke(
        &self,
        serial: &str,
        body: &wire::RevokeBody,
    ) -> Result<wire::CertificateInfo, ClientError> {
        self.post_json(&format!("/v1/certs/{serial}/revoke"), body)
            .await
    }

    pub async fn audit(&self, limit: i64) -> Result<Vec<wire::AuditEntry>, ClientError> {
        self.get_json(&format!("/v1/audit?limit={limit}")).await
    }

    pub async fn admin_tokens(&self) -> Result<Vec<wire::AdminTokenInfo>, ClientError> {
        self.get_json("/v1/admin-tokens").await
    }

    pub async fn revoke_admin_token(
        &self,
        id: &str,
    ) -> Result<wire::AdminTokenRevoked, ClientError> {
        self.post_json(&format!("/v1/admin-tokens/{id}/revoke"), &())
            .await
    }

    /// Removes what is past its retention (or only counts it).
    pub async fn tidy(&self, body: &wire::TidyBody) -> Result<wire::TidyAnswer, ClientError> {
        self.post_json("/v1/tidy", body).await
    }

    /// Where the CA rotation stands.
    /// Every node with what it was issued, installed and serves.
    pub async fn fleet(&self) -> Result<wire::Fleet, ClientError> {
        self.get_json("/v1/fleet").await
    }

    pub async fn rotation_status(&self) -> Result<wire::RotationStatus, ClientError> {
        self.get_json("/v1/rotation").await
    }

    /// A rotation step (`start`, `activate`, `finish`, `abort`); answers the status after it.
    pub async fn rotate(
        &self,
        step: &str,
        body: &wire::RotateBody,
    ) -> Result<wire::RotationStatus, ClientError> {
        self.post_json(&format!("/v1/rotation/{step}"), body).await
    }

    /// What this node's agent installed and runs with (mTLS).
    pub async fn report(&self, body: &wire::ReportBody) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        Self::check(
            self.send(
                Method::POST,
                "/v1/agent/report",
                Some(("application/json", bytes)),
                &[],
            )
            .await?,
        )?;
        Ok(())
    }

    /// Takes the restart lease for this node (mTLS); `lease_held` when another member has it.
    pub async fn take_lease(&self) -> Result<wire::Lease, ClientError> {
        decode(Self::check(
            self.send(Method::POST, "/v1/rotation/lease", None, &[])
                .await?,
        )?)
    }

    /// Gives the restart lease back.
    pub async fn release_lease(&self) -> Result<(), ClientError> {
        Self::check(
            self.send(Method::POST, "/v1/rotation/lease/release", None, &[])
                .await?,
        )?;
        Ok(())
    }

    /// A consistent backup of the CA (a tar archive), with the response headers describing it.
    /// Streams a backup archive into `to`; the answer's headers carry its counts.
    pub async fn backup(&self, to: &mut impl std::io::Write) -> Result<HeaderMap, ClientError> {
        self.download("/v1/backup", to).await
    }
}

fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A header value for `If-None-Match` and the like.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}
