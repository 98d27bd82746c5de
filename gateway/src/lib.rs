//! The Chaperone gateway: the lesson core (pure), and the async shell around
//! it: authentication, signaling, media forwarding, the state store and the
//! feed to the recorder.
#![forbid(unsafe_code)]
pub mod lesson;
pub mod media;
pub mod room;
pub mod signal;
