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
