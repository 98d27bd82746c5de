#![no_main]
//! See `chaperone_review::fuzzing::audit_record`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chaperone_review::fuzzing::audit_record(data));
