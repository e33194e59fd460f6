//! Responses a backend sends on one connection (heads and chunked bodies, src/upstream/h1.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::upstream::fuzz_responses(data));
