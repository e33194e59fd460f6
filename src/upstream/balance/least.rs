//! Least outstanding requests, weighted: sends each request where the fewest requests wait per
//! unit of weight, which adapts to slow backends without measuring latency.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::random::sane_weight;
use super::{Balancer, Candidate};

/// Picks the candidate with the smallest `(in_flight + 1) / weight`.
///
/// The `+ 1` counts the request being placed, so at equal load the heavier backend wins and an
/// idle backend of weight 2 takes two requests for every one an idle backend of weight 1 takes.
/// Ties rotate among the tied candidates, so equally idle backends share light traffic evenly
/// instead of the lowest index taking all of it.
#[derive(Debug, Default)]
pub struct LeastRequests {
    /// Advances on every pick; chooses which of the tied candidates wins.
    rotation: AtomicUsize,
}

impl LeastRequests {
    /// A least-requests balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Requests waiting per unit of weight if this candidate got the request.
fn load(candidate: &Candidate) -> f64 {
    (f64::from(candidate.in_flight) + 1.0) / sane_weight(candidate.weight)
}

impl Balancer for LeastRequests {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        let lowest = candidates.iter().map(load).reduce(f64::min)?;
        // Tied loads come from identical inputs through identical arithmetic, so they compare
        // equal exactly; no epsilon is needed.
        let tied = candidates.iter().filter(|c| load(c) == lowest).count();
        // Relaxed: the counter only spreads ties; it orders nothing else.
        let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % tied.max(1);
        candidates
            .iter()
            .filter(|c| load(c) == lowest)
            .nth(turn)
            .map(|c| c.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(index: usize, weight: f64, in_flight: u32) -> Candidate {
        Candidate {
            index,
            weight,
            in_flight,
            latency_ns: 0.0,
        }
    }

    #[test]
    fn empty_gives_none() {
        assert_eq!(LeastRequests::new().pick(&[], None), None);
    }

    #[test]
    fn single_candidate_is_picked_whatever_its_load() {
        let balancer = LeastRequests::new();
        for _ in 0..5 {
            assert_eq!(balancer.pick(&[candidate(3, 1.0, 1_000)], None), Some(3));
        }
    }

    #[test]
    fn prefers_the_idle_backend() {
        let balancer = LeastRequests::new();
        let candidates = [
            candidate(0, 1.0, 4),
            candidate(1, 1.0, 0),
            candidate(2, 1.0, 2),
        ];
        for _ in 0..10 {
            assert_eq!(balancer.pick(&candidates, None), Some(1));
        }
    }

    #[test]
    fn weight_outweighs_a_small_load_difference() {
        let balancer = LeastRequests::new();
        // (2 + 1) / 4 = 0.75 beats (0 + 1) / 1 = 1.
        let candidates = [candidate(0, 1.0, 0), candidate(1, 4.0, 2)];
        assert_eq!(balancer.pick(&candidates, None), Some(1));
    }

    #[test]
    fn weight_doubles_the_share_at_equal_load() {
        let balancer = LeastRequests::new();
        let mut in_flight = [0u32; 2];
        // Requests pile up without completing: each pick adds one to the chosen backend's load,
        // so the split shows how much load each weight is made to carry.
        for _ in 0..3_000 {
            let candidates = [
                candidate(0, 1.0, in_flight[0]),
                candidate(1, 2.0, in_flight[1]),
            ];
            let chosen = balancer.pick(&candidates, None).unwrap();
            in_flight[chosen] += 1;
        }
        assert!(in_flight[0].abs_diff(1_000) <= 1, "{in_flight:?}");
        assert!(in_flight[1].abs_diff(2_000) <= 1, "{in_flight:?}");
    }

    #[test]
    fn weight_doubles_the_share_with_completions() {
        fastrand::seed(0x1ea5_0001);
        let balancer = LeastRequests::new();
        let mut in_flight = [0u32; 2];
        let mut served = [0usize; 2];
        // Equally fast backends: each request in flight completes with the same chance per
        // step, so the heavier backend carries twice the load and serves twice the requests.
        for _ in 0..20_000 {
            for load in &mut in_flight {
                let done = (0..*load).filter(|_| fastrand::f64() < 0.1).count();
                *load -= u32::try_from(done).unwrap();
            }
            let candidates = [
                candidate(0, 1.0, in_flight[0]),
                candidate(1, 2.0, in_flight[1]),
            ];
            let chosen = balancer.pick(&candidates, None).unwrap();
            in_flight[chosen] += 1;
            served[chosen] += 1;
        }
        let ratio = served[1] as f64 / served[0] as f64;
        assert!((1.6..2.5).contains(&ratio), "{served:?}");
    }

    #[test]
    fn ties_rotate_across_all_tied() {
        let balancer = LeastRequests::new();
        // Backend 1 is busier; the three idle ones share the traffic evenly.
        let candidates = [
            candidate(0, 1.0, 0),
            candidate(1, 1.0, 3),
            candidate(2, 1.0, 0),
            candidate(5, 1.0, 0),
        ];
        let mut counts = [0usize; 6];
        for _ in 0..3_000 {
            counts[balancer.pick(&candidates, None).unwrap()] += 1;
        }
        assert_eq!(counts, [1_000, 0, 1_000, 0, 0, 1_000]);
    }

    #[test]
    fn equal_idle_backends_take_turns() {
        let balancer = LeastRequests::new();
        let candidates = [candidate(0, 1.0, 0), candidate(1, 1.0, 0)];
        let sequence: Vec<_> = (0..6)
            .map(|_| balancer.pick(&candidates, None).unwrap())
            .collect();
        for pair in sequence.windows(2) {
            assert_ne!(pair[0], pair[1], "{sequence:?}");
        }
    }

    #[test]
    fn bad_weights_still_pick_a_candidate() {
        let balancer = LeastRequests::new();
        let candidates = [
            candidate(0, f64::NAN, 0),
            candidate(1, 0.0, 0),
            candidate(2, f64::INFINITY, u32::MAX),
        ];
        for _ in 0..10 {
            assert_eq!(balancer.pick(&candidates, None), Some(2));
        }
        let broken = [candidate(0, f64::NAN, 0), candidate(1, -1.0, 0)];
        for _ in 0..10 {
            assert!(balancer.pick(&broken, None).is_some());
        }
    }
}
