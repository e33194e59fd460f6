//! Protection: what stands between hostile traffic and the backends — strict request checks,
//! path normalisation, identity hiding, client identity behind trusted proxies, IP lists,
//! method lists, basic auth and rate limits. Each submodule is pure policy; the pipeline calls
//! them at its guard stages.

pub mod strict;

pub mod access;
pub mod ip;

pub mod rate_limit;

pub mod conn_limit;
pub mod identity;
