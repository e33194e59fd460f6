//! Protection: what stands between hostile traffic and the backends — strict request checks,
//! path normalisation, identity hiding, client identity behind trusted proxies, IP lists,
//! method lists, basic auth, rate limits, connection limits and the minimum upload rate. Each
//! submodule is pure policy; the pipeline and the accept loop call them.

pub mod strict;

pub mod access;
pub mod ip;

pub mod rate_limit;

pub mod conn_limit;
pub mod identity;
pub mod upload_rate;
