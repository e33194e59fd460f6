//! What operators see: diagnostic logging and the access log.

pub mod access_log;
pub mod logging;
