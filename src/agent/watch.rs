//! Waiting for the CA to change, in seconds rather than at the refresh interval.
//!
//! The agent long-polls `GET /v1/watch`: the server answers as soon as its watched state
//! (generations, revocations) moves, or after 25 s with the same version. When the version
//! moves the agent refreshes its bundle and CRL (and so takes the restart lease if the bundle
//! changed). A random delay of up to a second spreads a fleet woken by the same change.

use std::time::Duration;

use crate::client::ApiClient;
use crate::wire::WatchQuery;

/// How long one long poll may wait at the server.
const WAIT: &str = "25s";

/// How long to wait before polling again after a failed poll (the CA is down or restarting).
const RETRY: Duration = Duration::from_secs(5);

/// The last version the server reported.
#[derive(Debug, Default)]
pub struct ChangeWatch {
    version: Option<String>,
}

impl ChangeWatch {
    /// Completes when the server reports a version other than the last one seen (the first
    /// answer only records it). Never completes without a client (nothing enrolled yet).
    /// Cancel-safe: dropping it loses at most a poll in flight.
    pub async fn next_change(&mut self, client: Option<ApiClient>, jitter: f64) {
        let Some(client) = client else {
            return std::future::pending().await;
        };
        let client = client.with_timeout(Duration::from_secs(35));
        loop {
            let query = match &self.version {
                Some(v) => WatchQuery {
                    version: Some(v.clone()),
                    wait: Some(WAIT.to_string()),
                },
                None => WatchQuery {
                    version: None,
                    wait: Some("0s".into()),
                },
            };
            match client.watch(&query).await {
                Ok(answer) => {
                    let before = self.version.replace(answer.version.clone());
                    if before.is_some_and(|v| v != answer.version) {
                        tokio::time::sleep(Duration::from_secs(1).mul_f64(jitter)).await;
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the CA for changes");
                    tokio::time::sleep(RETRY.mul_f64(1.0 + jitter)).await;
                }
            }
        }
    }
}
