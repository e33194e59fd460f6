//! The HTTP cache (RFC 9111, shared): pure policy first (`directives`, `policy`, `vary`,
//! `conditional`, `status`), storage and the pipeline stage on top.
//!
//! Why our own policy rather than the `http-cache-semantics` crate: that crate (a port of the
//! JavaScript library, RFC 7234-era) answers "storable?" and "fresh?" as booleans over one
//! stored request/response pair. A shared cache needs the reasons (they go in `Cache-Status`),
//! configurable `Set-Cookie` handling, the RFC 5861 stale windows, the §4.3.4 rules for which
//! stored response a 304 updates, and control over Vary normalisation and time (every rule here
//! takes `now`, so it is tested without a clock). The rules are small pure functions; owning them
//! costs less than working around a policy object.

pub mod coalesce;
pub mod conditional;
pub mod directives;
pub mod disk;
pub mod key;
pub mod policy;
pub mod range;
pub mod stage;
pub mod status;
pub mod store;
pub mod tags;
pub mod targeted;
pub mod vary;

pub use stage::{Answer, CacheRegistry, CacheState, Completed, Forwarding, Lookup, RouteCache};
