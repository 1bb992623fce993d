//! Fuzz target: `anyfork::fuzzing::rpc_shared_frames` (see that function's docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| anyfork::fuzzing::rpc_shared_frames(data));
