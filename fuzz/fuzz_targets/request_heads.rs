//! Request heads a client sends on one connection (the plain-request parser, src/server/h1.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::server::fuzz_request_heads(data));
