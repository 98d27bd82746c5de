#![no_main]
//! See `chaperone_protocol::fuzzing::feed_frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chaperone_protocol::fuzzing::feed_frame(data));
