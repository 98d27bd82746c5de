//! Chaperone's load generator: lesson-shaped load from many simulated
//! participants (str0m WebRTC peers, one UDP socket each, all on one
//! thread), against the Chaperone gateway or, for comparison, Janus's
//! VideoRoom, measured at the receivers.
//!
//! - [`media`]: one participant's media (publish on a schedule, measure
//!   what arrives without decrypting it); [`rtp`]: the clear header bytes.
//! - [`gateway`] and [`janus`]: each server's signaling and start-up;
//!   [`recorder`]: a recorder process of its own, to measure recording.
//! - [`scenario`]: the named scenarios and their runner; [`report`]: the figures;
//!   [`constrained`]: pupils behind capped links (impairment relays).
//! - [`soak`]: lessons that start, run and end in turn, and whether the
//!   gateway ends where it began.
//! - [`cluster`]: three gateway nodes, Redis and a recorder on one machine;
//!   [`failover`]: a lesson's owner killed or drained mid-lesson, and how
//!   long until media is back at every participant.
//!
//! It must never weaken what it measures: it joins through the gateway's
//! real checks (room tokens, waiting room, controls) and never reads the
//! clock outside [`clock`]. Child processes, ports and the recorder
//! process come from `chaperone_testkit`, shared with the tests.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod clock;
pub mod cluster;
pub mod constrained;
pub mod failover;
pub mod gateway;
pub mod janus;
pub mod media;
pub mod plan;
pub mod procfs;
pub mod recorder;
pub mod report;
pub mod rtp;
pub mod scenario;
pub mod soak;
pub mod target;
