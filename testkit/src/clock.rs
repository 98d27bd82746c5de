//! The harness's clock: the only place it reads the time. The harness runs
//! in real time (waiting for a real server to listen is a wall-clock
//! matter, unlike the lesson core where time is an input), so its deadlines
//! read the monotonic clock, here and nowhere else.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock, for deadlines.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time as Unix nanoseconds: the clock the kernel stamps
/// received datagrams with (`SO_TIMESTAMPNS`).
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
