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
//! - [`service`]: `recorder serve`, the feed from gateways over WebSocket;
//! - [`clock`]: the service shell's clock;
//!
//! and the review side, which alone holds an age identity:
//!
//! - [`review`]: opening segments with the review identity;
//! - [`library`]: a recording opened for review, on one timeline;
//! - [`webm`]: remuxing recorded frames into WebM (libwebm);
//! - [`policy`]: what each review scope may see;
//! - [`marks`]: DSL-only ranges and legal holds;
//! - [`audit`]: the review audit log, hash-chained in the object store;
//! - [`retention`]: the retention sweep;
//! - [`export`]: export bundles for external agencies;
//! - [`replay`]: the review service's HTTP API (`recorder review`).
//!
//! It must never hold an age identity in the ingest path, never overwrite a
//! stored object, and never read a clock outside the services' shells.
#![forbid(unsafe_code)]

pub use object_store::ObjectStore;

pub mod archive;
pub mod audit;
pub mod clock;
pub mod export;
pub mod ingest;
pub mod keys;
pub mod library;
pub mod manifest;
pub mod marks;
pub mod policy;
pub mod replay;
pub mod retention;
pub mod review;
pub mod segment;
pub mod service;
pub mod store;
pub mod verify;
pub mod webm;
