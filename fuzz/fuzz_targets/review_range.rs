#![no_main]
//! See `chaperone_review::fuzzing::review_range`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chaperone_review::fuzzing::review_range(data));
