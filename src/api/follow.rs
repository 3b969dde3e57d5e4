//! The server following the CA's state, however it changed: a rotation step taken through this
//! server's API, by the CLI on the data dir, or by another server process.
//!
//! One task owns both consequences of a change, so they cannot disagree:
//! - the server's own TLS certificate is re-issued whenever the generations differ from the ones
//!   it was issued under (not "when this reload saw a change": a step taken through the API has
//!   already reloaded them in-process), and when it is due for renewal (the server never serves
//!   an expired certificate of its own; a restart reuses the kept one, see
//!   [`Authority::serving_identity`]);
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
use crate::authority::{Authority, AuthorityError, Fault};
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
    /// When the serving certificate is due for renewal.
    renew_at: OffsetDateTime,
    published: watch::Sender<Watched>,
    /// Distinguishes this process's versions from a previous run's.
    boot: String,
}

impl Follower {
    /// Takes the kept serving certificate for `sans` (or issues one) and the first watched
    /// version.
    pub async fn start(
        authority: Arc<Authority>,
        sans: Vec<San>,
    ) -> Result<(Self, Arc<ServingCertificate>, watch::Receiver<Watched>), AuthorityError> {
        let now = crate::clock::now();
        let served_for = authority.generations();
        let identity = authority.serving_identity(&sans, now).await?;
        tracing::info!(serial = %identity.serial, renew_at = %crate::duration::rfc3339(identity.renew_at), "serving certificate");
        let renew_at = identity.renew_at;
        let serving = ServingCertificate::new(identity.chain, identity.key_der)
            .map_err(|e| Fault::ServingTls(e.to_string()))?;
        let boot = hex::encode(crate::pki::random_bytes::<8>().map_err(|_| Fault::Random)?);
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
                renew_at,
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
        let now = crate::clock::now();
        if let Err(e) = self.authority.reload_generations().await {
            tracing::warn!(error = %e, "cannot reload the CA generations");
        }
        let current = self.authority.generations();
        let why = if current != self.served_for {
            Some("CA generations changed: serving a certificate from the signing generation")
        } else if now >= self.renew_at {
            Some("renewed the server certificate")
        } else {
            None
        };
        if let Some(why) = why {
            match self.reissue(now).await {
                Ok(serial) => {
                    tracing::info!(ca_fingerprint = %self.authority.fingerprint().unwrap_or_default(), serial = %serial, "{why}");
                    self.served_for = current;
                }
                // Tried again at the next poll.
                Err(e) => tracing::error!(error = %e, "cannot re-issue the server certificate"),
            }
        }
        if let Err(e) = self.authority.follow_admin_revocations().await {
            tracing::warn!(error = %e, "cannot read admin token revocations");
        }
        if let Err(e) = self.authority.follow_policy().await {
            tracing::warn!(error = %e, "cannot read the database's policy");
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

    async fn reissue(&mut self, now: OffsetDateTime) -> Result<String, AuthorityError> {
        let identity = self.authority.new_serving_identity(&self.sans, now).await?;
        self.serving
            .replace(identity.chain, identity.key_der)
            .map_err(|e| Fault::ServingTls(e.to_string()))?;
        self.renew_at = identity.renew_at;
        Ok(identity.serial)
    }
}
