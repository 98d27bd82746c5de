//! The one place the gateway's async shell reads the clock. The lesson core,
//! the media plane and the store take time as an input; `clippy.toml` bans
//! `Instant::now` and `SystemTime::now` everywhere else.
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now, for the lesson core and timers. Read through tokio so that
/// tests with paused time (`#[tokio::test(start_paused = true)]`) drive the
/// lesson's graces without waiting; outside such tests it is the real clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Wall-clock milliseconds since the Unix epoch, for what is persisted or
/// shared between nodes (sessions, blocks, grants).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall-clock milliseconds of a monotonic instant in the past (an
/// event's time as the lesson task stamped it), for what is persisted.
pub(crate) fn unix_millis_at(at: Instant) -> u64 {
    let age = now().saturating_duration_since(at);
    unix_millis().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(0))
}
