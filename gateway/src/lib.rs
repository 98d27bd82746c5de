//! The Chaperone gateway: the lesson core (pure), and the async shell around
//! it: authentication, signaling, media forwarding, the state store and the
//! feed to the recorder.
#![forbid(unsafe_code)]
pub mod app;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod errors;
pub mod feed;
pub mod http;
pub mod media;
pub mod metrics;
pub mod room;
pub mod signal;
pub mod store;
pub mod web;
