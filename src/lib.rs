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
pub mod tls;
pub mod upstream;
