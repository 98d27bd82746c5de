//! The Chaperone recorder, write side: `recorder serve` takes each lesson's
//! feed from the gateways, seals it into segments encrypted to public age
//! recipients, and writes them with hash-chained, signed manifests to object
//! storage, spooling locally while the store is down.
//!
//! - [`service`]: the feed service (WebSocket from gateways, service tokens,
//!   acknowledgements, health, metrics);
//! - [`ingest`]: a lesson's frames collected into segments and checkpoints;
//! - [`spool`]: the store the ingest side writes to: a local, bounded,
//!   fsync'd spool in front of the object store, backfilled in order;
//! - [`clock`]: the service shell's clock.
//!
//! What a recording is (segments, manifests, layout, the store, verify) is
//! `chaperone-archive`; reading one back is `chaperone-review`. This crate
//! must never hold an age identity, never overwrite a stored object, and
//! never read a clock outside the service shell.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod clock;
pub mod ingest;
pub mod service;
pub mod spool;
