//! The one clock etcd-ca reads: "now" in whole seconds (what certificates carry, what is stored
//! and printed). Everything that decides by time takes a `now` from here, or as a parameter
//! (policy, schedule and checks are pure and get it passed in).
//!
//! Tests move time instead of sleeping: in debug builds (the ones the test suite runs), when
//! `ETCD_CA_CLOCK_OFFSET_FILE` names a file, the signed number of seconds it holds is added to
//! the system clock, re-read at every call, so a test can advance a running server and agent by
//! days at once. Release builds read the system clock only; the variable does nothing there.

use time::OffsetDateTime;

/// The environment variable naming the offset file (debug builds only).
pub const OFFSET_FILE_ENV: &str = "ETCD_CA_CLOCK_OFFSET_FILE";

/// The current time, whole seconds.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc() + offset();
    now.replace_nanosecond(0).unwrap_or(now)
}

#[cfg(debug_assertions)]
fn offset() -> time::Duration {
    let Some(path) = std::env::var_os(OFFSET_FILE_ENV) else {
        return time::Duration::ZERO;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .map_or(time::Duration::ZERO, time::Duration::seconds)
}

#[cfg(not(debug_assertions))]
fn offset() -> time::Duration {
    time::Duration::ZERO
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_whole_seconds() {
        assert_eq!(super::now().nanosecond(), 0);
    }
}
