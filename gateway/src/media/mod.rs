//! The media plane: the sans-IO SFU of `chaperone-sfu` (str0m behind our
//! own types, so nothing in the gateway names a str0m type) and the driver
//! that gives it a socket and a clock.
//!
//! [`Sfu`] is sans-IO: it owns one WebRTC connection per admitted
//! participant and forwards a track to a subscriber only when the lesson core
//! has said both `Forward { track, on: true }` and `Receive { participant, on:
//! true }`. What a client sends beyond that is dropped here, on the server
//! (docs/security.md §15, §16). [`driver`] is the thin tokio shell that owns the one
//! UDP socket and the clock.
//!
//! It must never forward by default, read the clock outside the driver, or
//! tell a participant any address but the server's own (docs/security.md §19).

pub mod driver;

pub use chaperone_sfu::{
    MAX_SDP_LEN, MediaError, MediaOutput, MediaPath, MediaSample, RecordedFrame, Sfu, SfuConfig,
    SfuStats,
};
pub use driver::{MediaDriverConfig, MediaEvent, MediaHandle};
