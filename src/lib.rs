//! Gatehouse: a reverse proxy in one memory-safe binary.
//!
//! The crate is a library so integration tests and the `demo` command can start the real proxy
//! in-process; `main.rs` is only the command line.

#![forbid(unsafe_code)]

pub mod body;
pub mod cache;
pub mod compress;
pub mod config;
pub mod demo;
pub mod explain;
pub mod observe;
pub mod protect;
pub mod proxy;
pub mod proxy_protocol;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod splice;
pub mod tls;
pub mod upstream;

/// Helpers shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod testing {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A header map from `(name, value)` pairs, in order (repeated names append).
    pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        headers
    }
}

/// The fuzz targets' seeds and every input the fuzzers found a fault with (`fuzz/seeds/`,
/// `fuzz/regressions/`), run through the same entry points on every `cargo test`: a fault once
/// found stays fixed without nightly or a fuzzing run (docs/testing.md).
#[cfg(test)]
mod fuzz_inputs {
    use std::path::Path;

    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 4] = [
        ("request_heads", crate::server::fuzz_request_heads),
        ("responses", crate::upstream::fuzz_responses),
        ("proxy_protocol", crate::proxy_protocol::fuzz_parse),
        ("config", crate::config::fuzz_parse_and_compile),
    ];

    #[test]
    fn every_kept_fuzz_input_passes_its_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut seeds = 0;
        for (name, target) in TARGETS {
            for kind in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.expect("directory entry").path();
                    let input = std::fs::read(&path).expect("readable input");
                    target(&input);
                    seeds += usize::from(kind == "seeds");
                }
            }
        }
        assert!(
            seeds >= TARGETS.len(),
            "every target has a seed ({seeds} found)"
        );
    }
}
