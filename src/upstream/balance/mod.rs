//! Backend selection policies, behind one small trait so the pool can filter backends (health,
//! ejection, drain, circuit breaking, retries) without knowing the algorithm, and each algorithm
//! stays pure: it sees a list of eligible candidates and its own state, never a socket or a
//! clock it did not get as an argument.

mod ewma;
mod hash;
mod least;
mod random;
mod round_robin;

use std::fmt::Debug;

pub use ewma::{PeakEwma, PeakEwmaBalancer};
pub use hash::HashRing;
pub use least::LeastRequests;
pub use random::WeightedRandom;
pub use round_robin::SmoothRoundRobin;

/// A backend that may serve the request being balanced, with what the policies weigh.
///
/// The pool builds the list per pick from its backends' live state, leaving out those that are
/// down, ejected, drained, saturated or already tried; candidates are in ascending `index`
/// order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The backend's position in the pool's backend list (stable for the pool's lifetime).
    pub index: usize,
    /// Effective weight: the configured weight, scaled down while the backend slow-starts.
    /// Always > 0.
    pub weight: f64,
    /// Requests in flight to the backend now.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate in nanoseconds (decayed to now); `0.0` before any sample.
    pub latency_ns: f64,
}

/// Chooses which of the eligible candidates serves a request.
pub trait Balancer: Send + Sync + Debug {
    /// The `index` of the chosen candidate, or `None` when `candidates` is empty.
    ///
    /// `key` is the request's hash key, for policies that use one (`None` when the request has
    /// none, e.g. the configured header is missing; policies then choose as they see fit).
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> Option<usize>;
}
