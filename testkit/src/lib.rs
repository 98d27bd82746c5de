//! Harness for end-to-end tests: starts real services on free loopback ports
//! and stops them again, also when a test fails.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

#[cfg(feature = "archive")]
pub mod archive;
mod clock;
pub mod gateway;
pub mod idp;
pub mod process;
pub mod recorder;
pub mod redis;
pub mod s3;
