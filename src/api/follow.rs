//! The server following the CA's state, however it changed: a rotation step taken through this
//! server's API, by the CLI on the data dir, or by another server process.
//!
//! One task owns both consequences of a change, so they cannot disagree:
//! - the server's own TLS certificate is re-issued whenever the generations differ from the ones
//!   it was issued under (not "when this reload saw a change": a step taken through the API has
//!   already reloaded them in-process);
//! - the watched state (generations, revocations) is published to agents waiting on
//!   `GET /v1/watch`.
//!
//! It wakes at once when this process changed something ([`Authority::changed`]) and polls the
//! store every [`POLL`] for changes made elsewhere.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::tls::ServingCertificate;
use crate::authority::{Authority, AuthorityError};
use crate::names::San;
use crate::store::GenerationRecord;

/// How often the store is read for changes made by other processes.
pub const POLL: Duration = Duration::from_secs(2);

/// What the server publishes to agents waiting for a change: an opaque version, and whether the
/// server is shutting down (waiting requests then answer at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub version: String,
    pub closing: bool,
}

/// Keeps the serving certificate and the watched state in step with the CA.
pub struct Follower {
    authority: Arc<Authority>,
    serving: Arc<ServingCertificate>,
    sans: Vec<San>,
    /// The generations the serving certificate was issued under.
    served_for: Vec<GenerationRecord>,
    published: watch::Sender<Watched>,
    /// Distinguishes this process's versions from a previous run's.
    boot: String,
}

impl Follower {
    /// Issues the first serving certificate for `sans` and the first watched version.
    pub async fn start(
        authority: Arc<Authority>,
        sans: Vec<San>,
    ) -> Result<(Self, Arc<ServingCertificate>, watch::Receiver<Watched>), AuthorityError> {
        let now = OffsetDateTime::now_utc();
        let served_for = authority.generations();
        let (chain, key) = authority
            .issue_server_certificate(sans.clone(), now)
            .await?;
        let serving = ServingCertificate::new(chain, key.serialize_der())
            .map_err(|e| AuthorityError::Sign(e.to_string()))?;
        let boot = {
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; 8];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| AuthorityError::Random)?;
            hex::encode(bytes)
        };
        let version = format!("{boot}-{}", authority.watched_state().await?);
        let (published, watching) = watch::channel(Watched {
            version,
            closing: false,
        });
        Ok((
            Self {
                authority,
                serving: serving.clone(),
                sans,
                served_for,
                published,
                boot,
            },
            serving,
            watching,
        ))
    }

    /// Follows the CA until `shutdown` completes, then tells waiting agents the server closes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
                _ = self.authority.changed() => {}
            }
            self.follow_once().await;
        }
        self.published.send_modify(|w| w.closing = true);
    }

    /// Reloads the generations, re-issues the serving certificate if they differ from the ones
    /// it was issued under, and publishes the watched state.
    pub async fn follow_once(&mut self) {
        let now = OffsetDateTime::now_utc();
        if let Err(e) = self.authority.reload_generations().await {
            tracing::warn!(error = %e, "cannot reload the CA generations");
        }
        let current = self.authority.generations();
        if current != self.served_for {
            match self.reissue(now).await {
                Ok(()) => {
                    tracing::info!(ca_fingerprint = %self.authority.fingerprint().unwrap_or_default(), "CA generations changed: serving a certificate from the signing generation");
                    self.served_for = current;
                }
                // Tried again at the next poll.
                Err(e) => tracing::error!(error = %e, "cannot re-issue the server certificate"),
            }
        }
        if let Err(e) = self.authority.follow_admin_revocations().await {
            tracing::warn!(error = %e, "cannot read admin token revocations");
        }
        match self.authority.watched_state().await {
            Ok(state) => {
                let version = format!("{}-{state}", self.boot);
                self.published.send_if_modified(|w| {
                    let changed = w.version != version;
                    w.version = version;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the CA state"),
        }
    }

    async fn reissue(&self, now: OffsetDateTime) -> Result<(), AuthorityError> {
        let (chain, key) = self
            .authority
            .issue_server_certificate(self.sans.clone(), now)
            .await?;
        self.serving
            .replace(chain, key.serialize_der())
            .map_err(|e| AuthorityError::Sign(e.to_string()))
    }
}
