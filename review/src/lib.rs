//! The Chaperone review service, read side: the only part of Chaperone that
//! holds the age identity recordings are sealed to.
//!
//! - [`open`]: opening sealed segments with the review (or escrow) identity;
//! - `library`: a recording opened for review, on one timeline;
//! - [`webm`]: remuxing recorded frames into WebM (libwebm);
//! - `policy`: what each review scope may see (`annotation`: the marks
//!   drawn on shared screens, for the replay);
//! - [`marks`]: DSL-only ranges and legal holds;
//! - [`audit`]: the review audit log, hash-chained in the object store;
//! - [`retention`]: the retention sweep;
//! - `export`: export bundles for external agencies;
//! - [`http`]: the review service's HTTP API;
//! - [`command`]: `recorder review`, the service as its own process.
//!
//! It must never serve a byte a review token's scope does not cover, never
//! open a recording without an audit record, and never change what a
//! recording holds: it writes only beside a lesson (marks, holds, the audit
//! log), and deletes only whole lessons, by the retention schedule, audited.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub(crate) mod annotation;
pub mod audit;
pub mod command;
pub(crate) mod export;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub(crate) mod library;
pub mod marks;
pub mod open;
pub(crate) mod policy;
pub mod retention;
pub mod webm;
