#![no_main]
//! See `chaperone_archive::fuzzing::manifest`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chaperone_archive::fuzzing::manifest(data));
