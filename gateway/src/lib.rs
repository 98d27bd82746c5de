//! The Chaperone gateway: the lesson core (pure), and the async shell around
//! it: authentication, signaling, media forwarding, the state store and the
//! feed to the recorder.
// One module may call into the C allocator (`room/trim.rs`); no other.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
pub mod app;
pub mod auth;
pub(crate) mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub(crate) mod errors;
pub(crate) mod feed;
pub mod http;
pub mod media;
pub(crate) mod metrics;
pub mod room;
pub mod roster;
pub mod signal;
pub mod store;
pub(crate) mod web;
