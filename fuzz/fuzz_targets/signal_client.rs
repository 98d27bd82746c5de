#![no_main]
//! See `chaperone_protocol::fuzzing::signal_client`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chaperone_protocol::fuzzing::signal_client(data));
