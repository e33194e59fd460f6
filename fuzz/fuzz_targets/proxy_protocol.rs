//! The start of a connection behind a load balancer (PROXY protocol v1 and v2, src/proxy_protocol.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::proxy_protocol::fuzz_parse(data));
