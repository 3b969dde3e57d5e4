//! Failed-attempt limits: a source address that keeps presenting wrong credentials (bootstrap
//! or admin tokens) gets 429 for its wrong ones, unaudited, for a while; a bootstrap token whose
//! secret keeps being guessed wrong is locked. Token secrets are 256 bits, so guessing was
//! hopeless anyway; this keeps it cheap for us (no audit row, no fsync, per wrong attempt).
//!
//! Only wrong credentials count: a request with none at all costs nothing to refuse, and a node
//! that sends a bad CSR with a good token is not locked out. A valid credential is never refused
//! because others failed from the same address (everyone behind one NAT shares it).
//!
//! Refusals of requests without any credentials are not audited one by one either:
//! [`RefusalDigest`] counts them and the server audits a summary each minute.
//!
//! One server counts in memory. Servers that share a database count there (one upsert per
//! wrong credential), so that N servers do not multiply the budget by N; if that count cannot
//! be read, the request is not refused for it (the secrets stay unguessable) and a warning is
//! logged.

use crate::authority::Authority;
use crate::wire::ErrorCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::error::ApiError;

/// How many failures, in what window.
#[derive(Clone, Copy, Debug)]
pub struct AttemptLimits {
    pub per_source: u32,
    pub per_token: u32,
    pub window: Duration,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        Self {
            per_source: 20,
            per_token: 5,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure counts per source address and per token id.
#[derive(Default)]
pub struct AttemptLimiter {
    limits: AttemptLimits,
    sources: Mutex<HashMap<IpAddr, Window>>,
    tokens: Mutex<HashMap<String, Window>>,
    /// Where the counts live when servers share a database.
    shared: Option<Arc<Authority>>,
}

impl std::fmt::Debug for AttemptLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLimiter")
            .field("limits", &self.limits)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

fn over<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Window>>,
    key: &K,
    max: u32,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    let w = map.get(key)?;
    let elapsed = now.saturating_duration_since(w.started);
    (w.failures >= max && elapsed < window).then(|| window - elapsed)
}

fn count<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Window>>,
    key: K,
    window: Duration,
    now: Instant,
) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    // Forget old windows now and then, so memory stays bounded by recent attackers.
    if map.len() > 10_000 {
        map.retain(|_, w| now.saturating_duration_since(w.started) < window);
    }
    let w = map.entry(key).or_insert(Window {
        started: now,
        failures: 0,
    });
    if now.saturating_duration_since(w.started) >= window {
        *w = Window {
            started: now,
            failures: 0,
        };
    }
    w.failures += 1;
}

impl AttemptLimiter {
    pub fn new(limits: AttemptLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Counts in `authority`'s store when it is shared with other servers, else in memory.
    pub fn for_authority(limits: AttemptLimits, authority: &Arc<Authority>) -> Self {
        Self {
            limits,
            shared: authority
                .counts_attempts_in_store()
                .then(|| authority.clone()),
            ..Default::default()
        }
    }

    /// Refuses (429) a token whose secret was guessed wrong too often recently.
    pub async fn check_token(&self, token_id: Option<&str>, now: Instant) -> Result<(), ApiError> {
        let l = self.limits;
        let Some(id) = token_id else {
            return Ok(());
        };
        let locked = match &self.shared {
            None => over(&self.tokens, &id.to_string(), l.per_token, l.window, now),
            Some(authority) => {
                let at = crate::clock::now();
                match authority
                    .failed_attempts(&format!("token:{id}"), at, l.window)
                    .await
                {
                    Ok(Some((failures, started))) if failures >= i64::from(l.per_token) => {
                        Some(remaining(l.window, at - started))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read failed attempts; not counted");
                        None
                    }
                }
            }
        };
        match locked {
            Some(wait) => Err(ApiError::Request {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: ErrorCode::TokenLocked,
                message: format!(
                    "this token failed {} times; it is locked for {}s (create a new one)",
                    l.per_token,
                    wait.as_secs().max(1)
                ),
            }),
            None => Ok(()),
        }
    }

    /// Counts a wrong credential. Returns the 429 to answer instead of the usual refusal when
    /// the source has failed too often recently (that refusal is then not audited).
    pub async fn failed(
        &self,
        source: IpAddr,
        token_id: Option<&str>,
        now: Instant,
    ) -> Option<ApiError> {
        let l = self.limits;
        let locked = match &self.shared {
            None => {
                let locked = over(&self.sources, &source, l.per_source, l.window, now);
                count(&self.sources, source, l.window, now);
                if let Some(id) = token_id {
                    count(&self.tokens, id.to_string(), l.window, now);
                }
                locked
            }
            Some(authority) => {
                let at = crate::clock::now();
                if let Some(id) = token_id {
                    if let Err(e) = authority
                        .count_failed_attempt(&format!("token:{id}"), at, l.window)
                        .await
                    {
                        tracing::warn!(error = %e, "cannot count a failed attempt");
                    }
                }
                match authority
                    .count_failed_attempt(&format!("source:{source}"), at, l.window)
                    .await
                {
                    // This failure is counted: the ones before it reached the limit.
                    Ok((failures, started)) if failures > i64::from(l.per_source) => {
                        Some(remaining(l.window, at - started))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count a failed attempt");
                        None
                    }
                }
            }
        };
        locked.map(|wait| ApiError::Request {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: ErrorCode::TooManyAttempts,
            message: format!(
                "too many failed attempts from {source}; try again in {}s",
                wait.as_secs().max(1)
            ),
        })
    }
}

/// What is left of `window` after `elapsed` (database times are whole seconds).
fn remaining(window: Duration, elapsed: time::Duration) -> Duration {
    window.saturating_sub(Duration::try_from(elapsed).unwrap_or_default())
}

/// Refusals of requests that carried no credentials at all, by action and code, since the
/// last summary.
#[derive(Debug, Default)]
pub struct RefusalDigest {
    counts: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

impl RefusalDigest {
    pub fn note(&self, action: &str, code: ErrorCode) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((action.to_string(), code.as_str()))
            .or_insert(0) += 1;
    }

    /// The counts so far, as one line for the audit trail (None when there were none), and
    /// starts over.
    pub fn take(&self) -> Option<String> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        (!counts.is_empty()).then(|| {
            counts
                .iter()
                .map(|((action, code), n)| format!("{action} {code} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sources_and_tokens_are_locked_after_their_limits_and_released_after_the_window() {
        let limiter = AttemptLimiter::new(AttemptLimits {
            per_source: 3,
            per_token: 2,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.failed(a, Some("tok"), t0).await.is_none());
        assert!(limiter.check_token(Some("tok"), t0).await.is_ok());
        assert!(limiter.failed(b, Some("tok"), t0).await.is_none());
        // The token is locked for everyone, other tokens are not.
        assert!(limiter.check_token(Some("tok"), t0).await.is_err());
        assert!(limiter.check_token(Some("other"), t0).await.is_ok());
        // a's third failure is the last answered normally; from the fourth on it gets 429.
        assert!(limiter.failed(a, None, t0).await.is_none());
        assert!(limiter.failed(a, None, t0).await.is_none());
        assert!(limiter.failed(a, None, t0).await.is_some());
        assert!(limiter.failed(b, None, t0).await.is_none());
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.check_token(Some("tok"), later).await.is_ok());
        assert!(limiter.failed(a, None, later).await.is_none());
    }
}
