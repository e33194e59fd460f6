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

    /// Properties of `least_requests` (docs/load-balancing.md): the smallest
    /// `(in flight + 1) / weight` wins, ties rotate, and requests piling up spread by weight.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Weights as the pool makes them: configured 1 to 10000, times a slow-start factor.
        fn weight() -> impl Strategy<Value = f64> {
            prop_oneof![
                (1u32..=4).prop_map(f64::from),
                (1u32..=10_000, 0.1f64..=1.0).prop_map(|(w, f)| f64::from(w) * f),
            ]
        }

        fn in_flight() -> impl Strategy<Value = u32> {
            prop_oneof![0u32..4, any::<u32>()]
        }

        /// Candidates with distinct ascending indices, as the pool hands them over.
        fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
            vec((1usize..4, weight(), in_flight()), 1..8).prop_map(|specs| {
                let mut index = 0;
                specs
                    .into_iter()
                    .map(|(step, weight, in_flight)| {
                        index += step;
                        candidate(index, weight, in_flight)
                    })
                    .collect()
            })
        }

        fn load_of(c: &Candidate) -> f64 {
            (f64::from(c.in_flight) + 1.0) / c.weight
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every pick has the least load of all candidates, and over as many picks as there
            /// are tied candidates each of them is picked exactly once, whatever picks came
            /// before.
            #[test]
            fn picks_a_minimum_and_ties_take_turns(
                candidates in candidates(),
                earlier in 0usize..10,
            ) {
                let balancer = LeastRequests::new();
                for _ in 0..earlier {
                    balancer.pick(&candidates[..1], None);
                }
                let lowest = candidates.iter().map(load_of).fold(f64::INFINITY, f64::min);
                let tied: Vec<usize> = candidates
                    .iter()
                    .filter(|c| load_of(c) == lowest)
                    .map(|c| c.index)
                    .collect();
                let mut chosen: Vec<usize> = (0..tied.len())
                    .map(|_| balancer.pick(&candidates, None).unwrap())
                    .collect();
                for index in &chosen {
                    let picked = candidates.iter().find(|c| c.index == *index).unwrap();
                    prop_assert!(load_of(picked) <= lowest, "{:?} -> {}", candidates, index);
                }
                chosen.sort_unstable();
                prop_assert_eq!(chosen, tied);
            }

            /// Requests that pile up without completing spread by weight: after every pick, no
            /// backend carries more than one request per unit of weight beyond any other
            /// (`in_flight_i / w_i <= (in_flight_j + 1) / w_j`).
            #[test]
            fn piled_up_requests_spread_by_weight(
                weights in vec(1u32..=8, 1..6),
                picks in 1usize..200,
            ) {
                let balancer = LeastRequests::new();
                let mut in_flight = vec![0u32; weights.len()];
                for _ in 0..picks {
                    let candidates: Vec<Candidate> = weights
                        .iter()
                        .zip(&in_flight)
                        .enumerate()
                        .map(|(index, (&w, &n))| candidate(index, f64::from(w), n))
                        .collect();
                    let chosen = balancer.pick(&candidates, None).unwrap();
                    in_flight[chosen] += 1;
                    for i in 0..weights.len() {
                        for j in 0..weights.len() {
                            // Integers: in_i * w_j <= (in_j + 1) * w_i.
                            prop_assert!(
                                u64::from(in_flight[i]) * u64::from(weights[j])
                                    <= (u64::from(in_flight[j]) + 1) * u64::from(weights[i]),
                                "{:?} with weights {:?}", in_flight, weights
                            );
                        }
                    }
                }
            }

            /// Any weights and loads at all (NaN, zero, negative, infinite, `u32::MAX` in
            /// flight): a candidate is picked, never anything else.
            #[test]
            fn any_inputs_pick_a_candidate(
                specs in vec(
                    (
                        prop_oneof![
                            any::<f64>(),
                            Just(f64::NAN),
                            Just(0.0),
                            Just(-1.0),
                            Just(f64::INFINITY),
                        ],
                        any::<u32>(),
                    ),
                    0..6,
                ),
            ) {
                let candidates: Vec<Candidate> = specs
                    .into_iter()
                    .enumerate()
                    .map(|(index, (weight, in_flight))| candidate(index, weight, in_flight))
                    .collect();
                let balancer = LeastRequests::new();
                for _ in 0..3 {
                    let chosen = balancer.pick(&candidates, None);
                    prop_assert_eq!(chosen.is_some(), !candidates.is_empty());
                    if let Some(chosen) = chosen {
                        prop_assert!(chosen < candidates.len());
                    }
                }
            }
        }
    }
}
