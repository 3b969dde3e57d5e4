//! Human-readable durations (`90d`, `30m`, `10y`) for flags and policy files, the one format
//! every printed time uses, and days left as a person reads them.
//!
//! Years and months are calendar units: `10y` from 2026-11-29 ends on 2036-11-29 (3,653 days),
//! not 3,652.5 days later. Everything else is a fixed span. Spans are parsed with `humantime`
//! so every place that accepts a lifetime or a warning window reads the same syntax.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// Average length of a month (what `humantime` counts), for [`HumanDuration::as_std`] only.
const AVERAGE_MONTH: Duration = Duration::from_secs(2_630_016);

/// A duration written the way people write them: `90d`, `12h`, `30m`, `10y`, `1y 6months`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration {
    /// Calendar months (a year is twelve).
    months: u32,
    /// Everything else.
    fixed: Duration,
}

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            months: 0,
            fixed: Duration::from_secs(secs),
        }
    }

    /// The span as a fixed duration (a month counted as its average length): for comparisons,
    /// timers and windows. A moment this long after another is [`Self::after`].
    pub fn as_std(self) -> Duration {
        AVERAGE_MONTH * self.months + self.fixed
    }

    /// The same span as a signed `time::Duration` (see [`Self::as_std`]).
    pub fn as_time(self) -> time::Duration {
        // A duration parsed from text is far below i64::MAX seconds; saturate to be safe.
        time::Duration::try_from(self.as_std()).unwrap_or(time::Duration::MAX)
    }

    /// The moment this long after `start`, counting years and months on the calendar (a day
    /// past the end of a shorter month becomes its last day: Feb 29 plus one year is Feb 28).
    pub fn after(self, start: OffsetDateTime) -> OffsetDateTime {
        let total = start.month() as i64 - 1 + i64::from(self.months);
        let year = start.year() as i64 + total.div_euclid(12);
        let month = time::Month::try_from(total.rem_euclid(12) as u8 + 1).unwrap_or(start.month());
        let year = i32::try_from(year).unwrap_or(i32::MAX);
        let day = start.day().min(month.length(year));
        let date = time::Date::from_calendar_date(year, month, day).unwrap_or(start.date());
        let moved = start.replace_date(date);
        let fixed = time::Duration::try_from(self.fixed).unwrap_or(time::Duration::MAX);
        moved.checked_add(fixed).unwrap_or(moved)
    }

    /// The exact span from `start` to [`Self::after`] it.
    pub fn span_from(self, start: OffsetDateTime) -> Duration {
        Duration::try_from(self.after(start) - start).unwrap_or(Duration::ZERO)
    }
}

impl From<Duration> for HumanDuration {
    fn from(fixed: Duration) -> Self {
        Self { months: 0, fixed }
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

    /// Splits off the calendar parts (`y`, `year(s)`, `month(s)`, `M`) and hands the rest to
    /// humantime, so both kinds can be mixed (`1y 6months 2d`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DurationError {
            input: s.to_string(),
            reason,
        };
        let mut months: u32 = 0;
        let mut rest = String::new();
        let text = s.trim();
        let mut chars = text.char_indices().peekable();
        while let Some(&(start, c)) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if !c.is_ascii_digit() {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            let number = &text[start..end];
            while let Some(&(_, c)) = chars.peek() {
                if !c.is_whitespace() {
                    break;
                }
                chars.next();
            }
            let unit_start = chars.peek().map_or(text.len(), |&(i, _)| i);
            let mut unit_end = unit_start;
            while let Some(&(i, c)) = chars.peek() {
                if !c.is_alphabetic() {
                    break;
                }
                unit_end = i + c.len_utf8();
                chars.next();
            }
            let unit = &text[unit_start..unit_end];
            if number.is_empty() {
                // Not a number followed by a unit: let humantime explain.
                rest.push_str(&text[start..]);
                break;
            }
            let per_unit = match unit {
                "y" | "year" | "years" => Some(12),
                "M" | "month" | "months" => Some(1),
                _ => None,
            };
            match per_unit {
                Some(per_unit) => {
                    let n: u32 = number
                        .parse()
                        .map_err(|_| err(format!("{number} is too large")))?;
                    months = n
                        .checked_mul(per_unit)
                        .and_then(|m| months.checked_add(m))
                        .ok_or_else(|| err("too long".into()))?;
                }
                None => {
                    rest.push_str(number);
                    rest.push_str(unit);
                    rest.push(' ');
                }
            }
        }
        let fixed = if rest.trim().is_empty() {
            if months == 0 {
                return Err(err("value was empty".into()));
            }
            Duration::ZERO
        } else {
            humantime::parse_duration(rest.trim()).map_err(|e| err(e.to_string()))?
        };
        Ok(Self { months, fixed })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (years, months) = (self.months / 12, self.months % 12);
        let mut parts = Vec::new();
        if years > 0 {
            parts.push(format!("{years}y"));
        }
        if months > 0 {
            parts.push(format!(
                "{months}month{}",
                if months == 1 { "" } else { "s" }
            ));
        }
        // Fixed spans in days and smaller units only, so the text parses back to the same span
        // (humantime would print months and years, which parse as calendar units here).
        let secs = self.fixed.as_secs();
        let units = [
            ("d", secs / 86_400),
            ("h", secs % 86_400 / 3_600),
            ("m", secs % 3_600 / 60),
            ("s", secs % 60),
        ];
        for (unit, n) in units {
            if n > 0 {
                parts.push(format!("{n}{unit}"));
            }
        }
        let millis = self.fixed.subsec_millis();
        if millis > 0 {
            parts.push(format!("{millis}ms"));
        }
        if parts.is_empty() {
            parts.push("0s".into());
        }
        write!(f, "{}", parts.join(" "))
    }
}

/// Days left until `not_after` as a person reads them: rounded to the nearest day, so a
/// certificate issued for 90 days a minute ago has 90 left (not 89); negative once expired.
pub fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (not_after - now)
        .whole_seconds()
        .saturating_add(43_200)
        .div_euclid(86_400)
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
        assert!("".parse::<HumanDuration>().is_err());
        assert!("10x".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn years_and_months_are_calendar_units() {
        let at = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let ten_years: HumanDuration = "10y".parse().unwrap();
        assert_eq!(
            ten_years.after(at("2026-11-29T16:00:00Z")),
            at("2036-11-29T16:00:00Z")
        );
        assert_eq!(
            ten_years.span_from(at("2026-11-29T16:00:00Z")).as_secs(),
            3653 * 86400
        );
        let leap: HumanDuration = "1y".parse().unwrap();
        assert_eq!(
            leap.after(at("2028-02-29T00:00:00Z")),
            at("2029-02-28T00:00:00Z")
        );
        let mixed: HumanDuration = "1y 6months 2d".parse().unwrap();
        assert_eq!(
            mixed.after(at("2026-11-29T00:00:00Z")),
            at("2028-05-31T00:00:00Z")
        );
        assert_eq!(mixed.to_string(), "1y 6months 2d");
        let month: HumanDuration = "1M".parse().unwrap();
        assert_eq!(
            month.after(at("2027-01-31T00:00:00Z")),
            at("2027-02-28T00:00:00Z")
        );
        assert_eq!("90d".parse::<HumanDuration>().unwrap().to_string(), "90d");
        let odd: HumanDuration = "1d 1h 30m 5s".parse().unwrap();
        assert_eq!(odd.to_string(), "1d 1h 30m 5s");
        assert_eq!(odd.to_string().parse::<HumanDuration>().unwrap(), odd);
    }

    #[test]
    fn days_left_rounds_as_a_person_reads_them() {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        let d =
            |days: i64, secs: i64| now + time::Duration::days(days) + time::Duration::seconds(secs);
        assert_eq!(days_left(d(90, -60), now), 90);
        assert_eq!(days_left(d(90, 0), now), 90);
        assert_eq!(days_left(d(0, 3600), now), 0);
        assert_eq!(days_left(d(0, 13 * 3600), now), 1);
        assert_eq!(days_left(d(-1, 0), now), -1);
    }
}
