//! What operators see: diagnostic logging, the access log and metrics.

pub mod access_log;
pub mod admin;
pub mod logging;
pub mod metrics;
