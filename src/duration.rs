//! Human-readable durations (`90d`, `30m`, `10y`) for flags and policy files, and the one
//! format every printed time uses.
//!
//! A thin newtype over [`std::time::Duration`] parsed with `humantime`, so every place that
//! accepts a lifetime or a warning window reads the same syntax and prints it back the same way.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the way people write them: `90d`, `12h`, `30m`, `10y`, `1y 6months`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn as_std(self) -> Duration {
        self.0
    }

    /// The same span as a signed `time::Duration` for date arithmetic.
    pub fn as_time(self) -> time::Duration {
        // A std Duration parsed from text is far below i64::MAX seconds; saturate to be safe.
        time::Duration::try_from(self.0).unwrap_or(time::Duration::MAX)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

/// Why a duration did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 90d, 12h, 30m, 10y)")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|e| DurationError {
                input: s.to_string(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A moment as RFC 3339 (`2026-11-22T12:00:00Z`): how etcd-ca prints every time.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_operators_write() {
        assert_eq!(
            "90d".parse::<HumanDuration>().unwrap().as_std().as_secs(),
            90 * 86400
        );
        assert_eq!(
            "30m".parse::<HumanDuration>().unwrap().as_std().as_secs(),
            1800
        );
        assert!("ninety days".parse::<HumanDuration>().is_err());
    }
}
