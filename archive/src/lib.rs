//! What the writer and the readers of a Chaperone recording share.
//!
//! - [`segment`]: the plaintext segment format and sealing to public age
//!   recipients;
//! - [`manifest`]: entries, gaps, the hash chain and canonical bytes;
//! - [`keys`]: the recorder's Ed25519 manifest-signing key;
//! - [`layout`]: where each object of a lesson lives in the store;
//! - [`writer`]: the put-if-absent writer of segments and checkpoints;
//! - [`store`]: the object store, opened and probed the same way by the
//!   recorder and by every reader;
//! - [`verify`]: `recorder verify`, a lesson checked end to end.
//!
//! The write side is `chaperone-recorder`; the read side, which alone holds
//! an age identity, is `chaperone-review`. This crate must never take an
//! age identity (it seals, it never opens), never overwrite a stored object
//! and never read a clock: times come in as arguments.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub use object_store::ObjectStore;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod segment;
pub mod store;
pub mod verify;
pub mod writer;
