//! Fuzz target: `anyfork::fuzzing::codecs` (see that function's docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| anyfork::fuzzing::codecs(data));
