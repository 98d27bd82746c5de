//! Harness for end-to-end tests: starts real services on free loopback ports
//! and stops them again, also when a test fails.
#![forbid(unsafe_code)]

pub mod process;
