//! The harness's clock: the only place it reads the time. The harness runs
//! in real time (waiting for a real server to listen is a wall-clock
//! matter, unlike the lesson core where time is an input), so its deadlines
//! read the monotonic clock, here and nowhere else.

use std::time::Instant;

/// The monotonic clock, for deadlines.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}
