//! Failed-attempt limits: a source address that keeps failing to authenticate (bootstrap or
//! admin tokens), or a bootstrap token whose secret keeps being guessed wrong, is refused for a
//! while. Token secrets are 256 bits, so guessing was hopeless anyway; this keeps it cheap for us.
//!
//! Only authentication failures count: a node that sends a bad CSR with a good token is not
//! locked out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
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
#[derive(Debug, Default)]
pub struct AttemptLimiter {
    limits: AttemptLimits,
    sources: Mutex<HashMap<IpAddr, Window>>,
    tokens: Mutex<HashMap<String, Window>>,
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

    /// Refuses (429) a source or token that failed too often recently.
    pub fn check(
        &self,
        source: IpAddr,
        token_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ApiError> {
        let l = self.limits;
        if let Some(wait) = over(&self.sources, &source, l.per_source, l.window, now) {
            return Err(ApiError::Request {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "too_many_attempts",
                message: format!(
                    "too many failed attempts from {source}; try again in {}s",
                    wait.as_secs().max(1)
                ),
            });
        }
        if let Some(id) = token_id {
            if let Some(wait) = over(&self.tokens, &id.to_string(), l.per_token, l.window, now) {
                return Err(ApiError::Request {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "token_locked",
                    message: format!(
                        "this token failed {} times; it is locked for {}s (create a new one)",
                        l.per_token,
                        wait.as_secs().max(1)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Counts an authentication failure.
    pub fn failed(&self, source: IpAddr, token_id: Option<&str>, now: Instant) {
        count(&self.sources, source, self.limits.window, now);
        if let Some(id) = token_id {
            count(&self.tokens, id.to_string(), self.limits.window, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_tokens_are_locked_after_their_limits_and_released_after_the_window() {
        let limiter = AttemptLimiter::new(AttemptLimits {
            per_source: 3,
            per_token: 2,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        limiter.failed(a, Some("tok"), t0);
        assert!(limiter.check(a, Some("tok"), t0).is_ok());
        limiter.failed(b, Some("tok"), t0);
        // The token is locked for everyone, the sources are not yet.
        assert!(limiter.check(a, Some("tok"), t0).is_err());
        assert!(limiter.check(a, Some("other"), t0).is_ok());
        limiter.failed(a, None, t0);
        limiter.failed(a, None, t0);
        assert!(limiter.check(a, None, t0).is_err());
        assert!(limiter.check(b, None, t0).is_ok());
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.check(a, Some("tok"), later).is_ok());
    }
}
