//! The Chaperone recorder: seals each lesson's feed into segments encrypted
//! with age, writes them to object storage with a hash-chained, signed
//! manifest, and verifies an archive end to end.
//!
//! What it owns, by module:
//!
//! - [`segment`]: the plaintext segment format and sealing to public age
//!   recipients (the ingest side; never an identity);
//! - [`archive`]: the object layout and the put-if-absent writer;
//! - [`ingest`]: a lesson's frames collected into segments and checkpoints;
//! - [`manifest`]: entries, gaps, the chain and canonical bytes;
//! - [`keys`]: the manifest-signing Ed25519 key;
//! - [`verify`]: `recorder verify`;
//! - [`store`]: the object store: configuration, start-up probe, retries,
//!   the ingest spool and backfill, store metrics;
//! - [`review`]: opening segments with the review identity (review side only);
//! - [`service`]: `recorder serve`, the feed from gateways over WebSocket;
//! - [`clock`]: the service shell's clock, the only place time is read.
//!
//! It must never hold an age identity in the ingest path, never overwrite a
//! stored object, and never read a clock outside [`clock`].
#![forbid(unsafe_code)]

pub use object_store::ObjectStore;

pub mod archive;
pub mod clock;
pub mod ingest;
pub mod keys;
pub mod manifest;
pub mod review;
pub mod segment;
pub mod service;
pub mod store;
pub mod verify;
