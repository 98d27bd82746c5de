//! The recorder service's clock: the only place the recorder reads the
//! time. Everything below the service shell takes `now` as an argument.
//!
//! It reads tokio's clock for instants, so paused-time tests drive it.

use std::time::Instant;

/// Now, as an instant (tokio's clock: paused in tests).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Now, in microseconds since the Unix epoch.
#[allow(clippy::disallowed_methods)]
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Now, in seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    unix_micros() / 1_000_000
}
