//! End-to-end tests: real origins, the real proxy and real clients over loopback.
//! One test binary with a module per area, so the suite links once.

mod support;

mod access;
mod access_log;
mod balancing;
mod basics;
mod cache;
mod client_h1;
mod compression;
mod config_errors;
mod demo;
mod errors;
mod failover;
mod h2_floods;
mod identity;
mod limits;
mod malformed;
mod operations;
mod parking;
mod proxy_protocol;
mod rate_limit;
mod routing;
mod semantics;
mod shutdown;
mod slow_readers;
mod streaming;
mod strict;
mod timeouts;
mod tls;
mod tunnels;
mod under_attack;
mod upstream_h1;
mod websocket;
