//! When to renew, how long to back off, how loudly to warn: pure functions of a certificate's
//! validity and `now`, so they are tested without a clock.
//!
//! Renewal is due at 2/3 of the lifetime, moved by up to ±1/12 of the lifetime (so between 58%
//! and 75%) by a jitter derived from the certificate's serial: stable for one certificate, spread
//! across a fleet that was enrolled at the same moment.

use std::time::Duration;

use time::OffsetDateTime;

/// Fraction of the lifetime at which renewal is due, before jitter.
pub const RENEW_AT: f64 = 2.0 / 3.0;
/// Largest jitter, as a fraction of the lifetime, either way.
pub const JITTER: f64 = 1.0 / 12.0;

/// A certificate's validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    pub fn lifetime(&self) -> time::Duration {
        self.not_after - self.not_before
    }

    pub fn remaining(&self, now: OffsetDateTime) -> time::Duration {
        self.not_after - now
    }
}

/// A number in [-1, 1) derived from `seed` (a serial number): the certificate's own jitter.
pub fn jitter_from(seed: &[u8]) -> f64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, seed);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    let unit = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    unit * 2.0 - 1.0
}

/// When renewal of a certificate with this validity and jitter is due.
pub fn renewal_time(validity: Validity, jitter: f64) -> OffsetDateTime {
    let fraction = RENEW_AT + JITTER * jitter.clamp(-1.0, 1.0);
    validity.not_before + validity.lifetime() * fraction
}

/// How long to wait after the `attempt`-th consecutive failure (1-based): doubling from `base`,
/// capped at `cap` and at a tenth of what is left of the certificate's life (so retries grow
/// more frequent, not rarer, as expiry nears), with "equal jitter" (half fixed, half random).
pub fn backoff(
    attempt: u32,
    base: Duration,
    cap: Duration,
    remaining: time::Duration,
    random_unit: f64,
) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let life_cap = Duration::try_from(remaining / 10).unwrap_or(Duration::ZERO);
    let ceiling = exponential.min(cap).min(life_cap.max(base));
    let half = ceiling / 2;
    half + half.mul_f64(random_unit.clamp(0.0, 1.0))
}

/// How worried to be about a certificate that has not been renewed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// Renewal is not due yet.
    Calm,
    /// Renewal is due: retrying is normal.
    Due,
    /// Less than a tenth of the lifetime is left.
    Critical,
    /// Expired: it can no longer authenticate a renewal; a new token is needed.
    Expired,
}

pub fn urgency(validity: Validity, jitter: f64, now: OffsetDateTime) -> Urgency {
    if now >= validity.not_after {
        Urgency::Expired
    } else if validity.remaining(now) < validity.lifetime() / 10 {
        Urgency::Critical
    } else if now >= renewal_time(validity, jitter) {
        Urgency::Due
    } else {
        Urgency::Calm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const START: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

    fn ninety_days() -> Validity {
        Validity {
            not_before: START,
            not_after: START + time::Duration::days(90),
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_without_jitter() {
        assert_eq!(
            renewal_time(ninety_days(), 0.0),
            START + time::Duration::days(60)
        );
    }

    #[test]
    fn jitter_stays_within_a_twelfth_of_the_lifetime() {
        let v = ninety_days();
        let earliest = START + time::Duration::days(90) * (RENEW_AT - JITTER);
        let latest = START + time::Duration::days(90) * (RENEW_AT + JITTER);
        assert_eq!(renewal_time(v, -1.0), earliest);
        assert_eq!(renewal_time(v, 1.0), latest);
        assert_eq!(
            renewal_time(v, 7.0),
            latest,
            "out-of-range jitter is clamped"
        );
        let mut seen = Vec::new();
        for serial in 0u32..1000 {
            let j = jitter_from(&serial.to_be_bytes());
            assert!((-1.0..1.0).contains(&j));
            let at = renewal_time(v, j);
            assert!(at >= earliest && at <= latest);
            seen.push(j);
        }
        // Spread, not lockstep: both halves of the window are used.
        assert!(seen.iter().filter(|j| **j < 0.0).count() > 300);
        assert!(seen.iter().filter(|j| **j > 0.0).count() > 300);
        assert_eq!(
            jitter_from(b"serial"),
            jitter_from(b"serial"),
            "stable per certificate"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_shrinks_near_expiry() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        let plenty = time::Duration::days(30);
        // Upper edge (random = 1): 1, 2, 4, 8 ... capped at 300.
        let upper: Vec<u64> = (1..=12)
            .map(|a| backoff(a, base, cap, plenty, 1.0).as_secs())
            .collect();
        assert_eq!(upper, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // Lower edge (random = 0) is half of it.
        assert_eq!(backoff(4, base, cap, plenty, 0.0), Duration::from_secs(4));
        // With 20 s of life left, never wait more than 2 s.
        let short = time::Duration::seconds(20);
        assert_eq!(
            backoff(10, base, cap, short, 1.0),
            Duration::from_secs(2).max(base)
        );
        // Never below the base, even when the certificate is nearly gone.
        assert!(backoff(10, base, cap, time::Duration::seconds(1), 0.0) >= base / 2);
    }

    #[test]
    fn urgency_grows_as_expiry_nears() {
        let v = ninety_days();
        assert_eq!(
            urgency(v, 0.0, START + time::Duration::days(10)),
            Urgency::Calm
        );
        assert_eq!(
            urgency(v, 0.0, START + time::Duration::days(61)),
            Urgency::Due
        );
        assert_eq!(
            urgency(v, 0.0, START + time::Duration::days(85)),
            Urgency::Critical
        );
        assert_eq!(
            urgency(v, 0.0, START + time::Duration::days(90)),
            Urgency::Expired
        );
    }
}
