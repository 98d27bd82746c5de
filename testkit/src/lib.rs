//! Harness for end-to-end tests: starts real services on free loopback ports
//! and stops them again, also when a test fails.
#![forbid(unsafe_code)]
// The harness runs in real time: waiting for a real server to listen is a
// wall-clock matter, unlike the lesson core where time is an input.
#![allow(clippy::disallowed_methods)]

#[cfg(feature = "archive")]
pub mod archive;
pub mod gateway;
pub mod idp;
pub mod process;
pub mod recorder;
pub mod redis;
pub mod s3;
