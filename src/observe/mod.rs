//! What operators see: diagnostic logging, the access log and metrics.

pub mod access_log;
pub mod logging;
pub mod metrics;
