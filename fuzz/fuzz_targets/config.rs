//! A config file: parsing, validation and compilation (src/config/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::config::fuzz_parse_and_compile(data));
