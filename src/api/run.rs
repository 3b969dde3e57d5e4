//! The whole server, assembled: the follower (serving certificate, watched state), the TLS
//! config, the app with its state, the summary of anonymous refusals, and the accept loop, run
//! until a shutdown future completes. `etcd-ca serve` only binds, prepares the data dir and
//! calls [`run`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::authority::{Authority, AuthorityError};
use crate::names::San;

use super::limits::{AttemptLimiter, AttemptLimits, RefusalDigest};
use super::metrics::Metrics;
use super::server::Limits;
use super::AppState;

/// When the server first removes what is past its retention, and how often after.
const TIDY_FIRST: std::time::Duration = std::time::Duration::from_secs(60);
const TIDY_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(String),
    #[error("cannot read the listening address: {0}")]
    Address(std::io::Error),
}

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Names nodes reach the server by, beside the listening address.
    pub sans: Vec<San>,
    pub attempts: AttemptLimits,
    pub limits: Limits,
}

/// The names the server's certificate carries for `listen` and the operator's `extra` names:
/// the listening address, and `localhost`/127.0.0.1 when it listens on loopback or everywhere.
pub fn server_names(listen: SocketAddr, extra: &[San]) -> Vec<San> {
    let mut sans = extra.to_vec();
    let ip = listen.ip();
    if !ip.is_unspecified() {
        sans.push(San::Ip(ip));
    }
    if ip.is_loopback() || ip.is_unspecified() {
        if let Ok(localhost) = San::parse_loose("localhost") {
            sans.push(localhost);
        }
        sans.push(San::Ip(IpAddr::from([127, 0, 0, 1])));
    }
    sans.sort();
    sans.dedup();
    sans
}

/// Serves the API on `listener` until `shutdown` completes: in-flight requests finish, waiting
/// agents are told, and the summary of anonymous refusals is written. `ready` is called with the
/// address and the CA fingerprint once the server accepts connections.
pub async fn run(
    authority: Arc<Authority>,
    listener: tokio::net::TcpListener,
    settings: Settings,
    ready: impl FnOnce(SocketAddr, &str),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // One task follows every change of the CA, however it was made: it re-issues the server's
    // own certificate from the signing generation and tells waiting agents.
    let (follower, serving, watched) =
        super::follow::Follower::start(authority.clone(), settings.sans.clone()).await?;
    let tls = super::tls::server_config(serving).map_err(|e| RunError::Tls(e.to_string()))?;
    let addr = listener.local_addr().map_err(RunError::Address)?;
    let fingerprint = authority.fingerprint()?.to_string();
    let names: Vec<String> = settings.sans.iter().map(|s| s.to_string()).collect();
    tracing::info!(listen = %addr, ca_fingerprint = %fingerprint, server_names = %names.join(","), "etcd-ca server ready");
    ready(addr, &fingerprint);
    let state = AppState {
        authority: authority.clone(),
        metrics: Arc::new(Metrics::default()),
        limiter: Arc::new(AttemptLimiter::for_authority(settings.attempts, &authority)),
        watched,
        anonymous: Arc::new(RefusalDigest::default()),
    };
    // Refusals of requests without credentials go to the audit trail as one line a minute.
    let digest = state.anonymous.clone();
    let summaries = {
        let (authority, digest) = (authority.clone(), state.anonymous.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(summary) = digest.take() {
                    authority
                        .audit_summary("refused.anonymous", &summary, crate::clock::now())
                        .await;
                }
            }
        })
    };
    // What is past its retention goes in small batches, a minute after start and then hourly.
    let tidier = {
        let authority = authority.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TIDY_FIRST).await;
            let mut tick = tokio::time::interval(TIDY_EVERY);
            loop {
                tick.tick().await;
                match authority
                    .tidy(false, false, "etcd-ca serve", crate::clock::now())
                    .await
                {
                    Ok(report) if report.removed.total() == 0 => {
                        tracing::info!("retention: nothing is past its retention")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot remove what is past its retention; will retry")
                    }
                }
            }
        })
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let follower = tokio::spawn(follower.run(stopped(stopping.clone())));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    super::server::serve(
        listener,
        tls,
        super::app(state),
        settings.limits,
        stopped(stopping),
    )
    .await;
    let _ = follower.await;
    summaries.abort();
    tidier.abort();
    if let Some(summary) = digest.take() {
        authority
            .audit_summary("refused.anonymous", &summary, crate::clock::now())
            .await;
    }
    tracing::info!("etcd-ca server stopped");
    Ok(())
}
