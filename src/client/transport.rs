//! How a request reaches the CA: a fresh TLS connection per request to the server that
//! answered last, the next one after a connection failure, a timeout or a 5xx (never after a
//! 4xx), and answers read whole or streamed (a backup).

use super::*;

/// An answer read whole, or with its body still to come.
pub(super) enum Answer {
    Whole(Response),
    /// The answer and the server (`host:port`) it came from.
    Streaming(hyper::Response<hyper::body::Incoming>, String),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Whole(r) => r.status,
            Answer::Streaming(r, _) => r.status(),
        }
    }
}

/// One CA server's address.
pub(super) struct Endpoint {
    pub(super) addr: String,
    host: String,
    pub(super) server_name: ServerName<'static>,
}

impl Endpoint {
    pub(super) fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let server_name = match bare_host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(bare_host.to_string())
                .map_err(|_| bad("the host is neither an address nor a DNS name"))?,
        };
        Ok(Self {
            addr: format!("{host}:{port}"),
            host: format!("{host}:{port}"),
            server_name,
        })
    }
}

impl ApiClient {
    /// One request on a fresh connection (to the next server after a connection failure, a
    /// timeout or a 5xx). Any status is returned as a `Response`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Response, ClientError> {
        match self.each_server(method, path, body, headers, true).await? {
            Answer::Whole(response) => Ok(response),
            Answer::Streaming(response, server) => collect(response, server).await,
        }
    }

    /// Sends the request to each server in turn, the one that answered last first, each within
    /// the timeout, until one gives an answer that is not a 5xx (or the last one was tried).
    /// With `whole`, the answer's body is read within the attempt too.
    async fn each_server(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(header::HeaderName, String)],
        whole: bool,
    ) -> Result<Answer, ClientError> {
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut outcome = None;
        for i in (0..count).map(|k| (first + k) % count) {
            let endpoint = &self.endpoints[i];
            let attempt = async {
                let response = self
                    .open(endpoint, method.clone(), path, body.clone(), headers)
                    .await?;
                Ok(if whole {
                    Answer::Whole(collect(response, endpoint.addr.clone()).await?)
                } else {
                    Answer::Streaming(response, endpoint.addr.clone())
                })
            };
            let result = tokio::time::timeout(self.timeout, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Timeout {
                        addr: endpoint.addr.clone(),
                        timeout: self.timeout,
                    })
                });
            let why_move_on = match &result {
                Ok(answer) if answer.status().is_server_error() => {
                    Some(format!("answered {}", answer.status()))
                }
                Ok(_) => None,
                Err(e) if e.server_unavailable() => Some(e.to_string()),
                Err(_) => None,
            };
            match why_move_on {
                Some(why) if count > 1 => {
                    tracing::warn!(server = %endpoint.addr, reason = %why, "CA server unavailable; trying the next");
                    outcome = Some(result);
                }
                _ => {
                    if result.is_ok() {
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return result;
                }
            }
        }
        // Every server was tried and none answered usefully: the last one's outcome.
        outcome.unwrap_or_else(|| {
            Err(ClientError::Url {
                url: String::new(),
                reason: "no server".into(),
            })
        })
    }

    /// Connects, sends the request and returns the answer with its body still to be read.
    async fn open(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(header::HeaderName, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let tcp = tokio::net::TcpStream::connect(&endpoint.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: endpoint.addr.clone(),
                source,
            })?;
        let tls = self
            .connector
            .connect(endpoint.server_name.clone(), tcp)
            .await
            .map_err(|source| {
                let rejected = source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .filter(|e| {
                        matches!(
                            e,
                            rustls::Error::General(_) | rustls::Error::InvalidCertificate(_)
                        )
                    })
                    .map(|e| match e {
                        rustls::Error::General(reason) => reason.clone(),
                        other => other.to_string(),
                    });
                match rejected {
                    Some(reason) => ClientError::Untrusted {
                        addr: endpoint.addr.clone(),
                        reason,
                    },
                    None => ClientError::Handshake {
                        addr: endpoint.addr.clone(),
                        source,
                    },
                }
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &endpoint.host);
        if let Some(token) = &self.bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// GETs `path` and writes its body, as it arrives, to `to` (a large download: the answer
    /// is never held whole). Each piece is written as it comes (a local file's writes land in
    /// the page cache; handing them to another thread cost more memory than it saved time).
    /// Returns the answer's headers; a refusal is `ClientError::Api`.
    pub async fn download(
        &self,
        path: &str,
        to: &mut impl std::io::Write,
    ) -> Result<HeaderMap, ClientError> {
        // Any server until one answers with the archive's headers; the body is not retried.
        let (response, server) = match self
            .each_server(Method::GET, path, None, &[], false)
            .await?
        {
            Answer::Streaming(response, server) => (response, server),
            Answer::Whole(whole) => return Self::check(whole).map(|r| r.headers),
        };
        if !response.status().is_success() {
            return Self::check(collect(response, server).await?).map(|r| r.headers);
        }
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let fetch = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    to.write_all(&data).map_err(|e| {
                        ClientError::Http(format!("cannot write the download: {e}"))
                    })?;
                }
            }
            to.flush()
                .map_err(|e| ClientError::Http(format!("cannot write the download: {e}")))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.endpoints[self.preferred.load(Ordering::Relaxed) % self.endpoints.len()]
                    .addr
                    .clone(),
                timeout: self.timeout,
            })??;
        Ok(headers)
    }

    /// Turns a non-2xx answer into `ClientError::Api`.
    pub fn check(response: Response) -> Result<Response, ClientError> {
        if response.status.is_success() || response.status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let status = response.status.as_u16();
        match serde_json::from_slice::<crate::wire::ErrorBody>(&response.body) {
            Ok(e) => Err(ClientError::Api {
                status,
                code: e.code,
                message: e.message,
                server: response.server,
            }),
            Err(_) => Err(ClientError::Api {
                status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&response.body).into_owned(),
                server: response.server,
            }),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        Self::check(self.send(Method::GET, path, None, &[]).await?)
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(self.get(path).await?)
    }

    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let response = self
            .send(Method::POST, path, Some(("application/json", bytes)), &[])
            .await?;
        decode(Self::check(response)?)
    }
}

/// Reads a whole answer (API answers are small and bounded; downloads use `download`).
pub(super) async fn collect(
    response: hyper::Response<hyper::body::Incoming>,
    server: String,
) -> Result<Response, ClientError> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
        server,
    })
}
