//! Fuzz target: `anyfork::fuzzing::commands` (see that function's docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| anyfork::fuzzing::commands(data));
