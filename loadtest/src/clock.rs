//! The generator's clock: the only place it reads the time. Everything else
//! takes instants and Unix nanoseconds as arguments.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock (str0m's time base, timers).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time as Unix nanoseconds: the clock the kernel stamps
/// received datagrams with (`SO_TIMESTAMPNS`) and origin times are in.
#[allow(clippy::disallowed_methods)]
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A Unix-nanosecond time as a `SystemTime`.
pub fn system_time_of(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}
