//! Harness for the tests of every crate, the end-to-end tests and the load
//! generator: starts real services on free loopback ports and stops them
//! again, also when a test fails or a benchmark is aborted. One copy of
//! every such helper:
//!
//! - [`process`]: child processes ([`process::ChildGuard`],
//!   [`process::Launch`]), free ports, readiness waits, scratch
//!   directories, the workspace's binaries;
//! - [`gateway`], [`recorder`]: the workspace's own servers as processes;
//! - [`redis`], [`s3`], [`idp`], [`turn`]: private third-party servers;
//! - [`netns`]: a network namespace behind a capped link (root only);
//! - [`impair`]: a UDP relay that caps, loses and delays a client's datagrams;
//! - `archive` (feature `archive`): lessons written by the real writer.
//!
//! It is never a dependency of a product crate (only of tests and the load
//! generator), and it never reads the clock outside its `clock` module.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

#[cfg(feature = "archive")]
pub mod archive;
mod clock;
pub mod gateway;
pub mod idp;
pub mod impair;
pub mod netns;
pub mod process;
pub mod recorder;
pub mod redis;
pub mod s3;
pub mod turn;
