//! Weighted random choice: stateless, so it needs no lock and no coordination between threads,
//! at the price of only statistical (not exact) adherence to the weights.

use super::{Balancer, Candidate};

/// The smallest weight a policy works with: keeps `1 / weight` finite and gives a backend whose
/// weight is zero, negative or NaN (which the pool should never hand over) a negligible share
/// instead of poisoning the arithmetic.
const MIN_WEIGHT: f64 = 1e-9;

/// The largest weight a policy works with: sums over thousands of backends stay finite.
const MAX_WEIGHT: f64 = 1e12;

/// A candidate's weight forced into `[MIN_WEIGHT, MAX_WEIGHT]`, for every weighted policy here,
/// so a bad weight can skew a share but never produce NaN or infinity (which would make every
/// comparison false and the choice arbitrary).
pub(super) fn sane_weight(weight: f64) -> f64 {
    if weight.is_nan() {
        MIN_WEIGHT
    } else {
        weight.clamp(MIN_WEIGHT, MAX_WEIGHT)
    }
}

/// Picks a candidate at random with probability proportional to its weight.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedRandom;

impl WeightedRandom {
    /// A weighted random balancer (it keeps no state).
    pub fn new() -> Self {
        Self
    }
}

impl Balancer for WeightedRandom {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        let last = candidates.last()?;
        if candidates.len() == 1 {
            return Some(last.index);
        }
        let total: f64 = candidates.iter().map(|c| sane_weight(c.weight)).sum();
        let mut point = fastrand::f64() * total;
        for candidate in candidates {
            let weight = sane_weight(candidate.weight);
            if point < weight {
                return Some(candidate.index);
            }
            point -= weight;
        }
        // Rounding in the running subtraction can leave `point` a hair above the last weight.
        Some(last.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(index: usize, weight: f64) -> Candidate {
        Candidate {
            index,
            weight,
            in_flight: 0,
            latency_ns: 0.0,
        }
    }

    #[test]
    fn empty_gives_none() {
        assert_eq!(WeightedRandom::new().pick(&[], None), None);
        assert_eq!(WeightedRandom::new().pick(&[], Some(7)), None);
    }

    #[test]
    fn single_candidate_is_always_picked() {
        let balancer = WeightedRandom::new();
        for _ in 0..100 {
            assert_eq!(balancer.pick(&[candidate(4, 0.25)], None), Some(4));
        }
    }

    #[test]
    fn proportions_follow_weights() {
        fastrand::seed(0x5eed_0001);
        let balancer = WeightedRandom::new();
        // Non-contiguous indices: the result must be the candidate's index, not its position.
        let candidates = [candidate(1, 5.0), candidate(3, 3.0), candidate(8, 2.0)];
        let picks = 20_000;
        let mut counts = [0usize; 9];
        for _ in 0..picks {
            let index = balancer.pick(&candidates, None).unwrap();
            counts[index] += 1;
        }
        for (index, expected) in [(1, 0.5), (3, 0.3), (8, 0.2)] {
            let share = counts[index] as f64 / picks as f64;
            assert!(
                (share - expected).abs() < 0.03,
                "backend {index}: share {share}, expected {expected}"
            );
        }
        assert_eq!(counts.iter().sum::<usize>(), picks);
    }

    #[test]
    fn fractional_weights_work() {
        fastrand::seed(0x5eed_0002);
        let balancer = WeightedRandom::new();
        // Slow start scales weights to fractions; only the ratio matters.
        let candidates = [candidate(0, 0.01), candidate(1, 0.03)];
        let picks = 20_000;
        let ones = (0..picks)
            .filter(|_| balancer.pick(&candidates, None) == Some(1))
            .count();
        let share = ones as f64 / picks as f64;
        assert!((share - 0.75).abs() < 0.03, "share {share}");
    }

    #[test]
    fn bad_weights_never_break_the_pick() {
        fastrand::seed(0x5eed_0003);
        let balancer = WeightedRandom::new();
        let candidates = [
            candidate(0, f64::NAN),
            candidate(1, 1.0),
            candidate(2, -3.0),
            candidate(3, f64::INFINITY),
        ];
        for _ in 0..1_000 {
            let index = balancer.pick(&candidates, None).unwrap();
            assert!(index <= 3);
        }
        // The finite, positive weights still dominate the broken ones.
        let healthy = [candidate(0, f64::NAN), candidate(1, 1.0)];
        let ones = (0..1_000)
            .filter(|_| balancer.pick(&healthy, None) == Some(1))
            .count();
        assert!(ones > 990, "{ones}");
    }

    #[test]
    fn sane_weight_clamps() {
        assert_eq!(sane_weight(2.5), 2.5);
        assert_eq!(sane_weight(0.0), MIN_WEIGHT);
        assert_eq!(sane_weight(-1.0), MIN_WEIGHT);
        assert_eq!(sane_weight(f64::NAN), MIN_WEIGHT);
        assert_eq!(sane_weight(f64::INFINITY), MAX_WEIGHT);
    }

    /// Properties of `random` (docs/load-balancing.md): only candidates, with probability
    /// proportional to the weight.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Over 4000 picks (the generator seeded, so a case always draws the same), each
            /// candidate's count is within `8 sigma + 10` of `picks * weight / total`. By
            /// Bernstein's inequality a correct picker strays that far less than once in a
            /// million checks whatever the share (the `+ 10` covers tiny shares, where the
            /// normal approximation fails); one that ignores weights of 1 against 10 misses by
            /// ten times the bound.
            #[test]
            fn shares_follow_weights(
                specs in vec((0usize..3, prop_oneof![1u32..=10, 1u32..=10_000]), 1..7),
                fraction in 0.1f64..=1.0,
                seed in any::<u64>(),
            ) {
                let mut index = 0;
                let candidates: Vec<Candidate> = specs
                    .iter()
                    .map(|&(step, weight)| {
                        index += step + 1;
                        // A slow start scales one of them down.
                        let factor = if index == 1 + specs[0].0 { fraction } else { 1.0 };
                        candidate(index, f64::from(weight) * factor)
                    })
                    .collect();
                let total: f64 = candidates.iter().map(|c| c.weight).sum();
                fastrand::seed(seed);
                let balancer = WeightedRandom::new();
                let picks = 4_000usize;
                let mut counts = vec![0usize; index + 1];
                for _ in 0..picks {
                    let chosen = balancer.pick(&candidates, None).unwrap();
                    prop_assert!(candidates.iter().any(|c| c.index == chosen), "{}", chosen);
                    counts[chosen] += 1;
                }
                for c in &candidates {
                    let p = c.weight / total;
                    let expected = picks as f64 * p;
                    let sigma = (expected * (1.0 - p)).sqrt();
                    prop_assert!(
                        (counts[c.index] as f64 - expected).abs() <= 8.0 * sigma + 10.0,
                        "backend {}: {} picks, expected {} (sigma {})",
                        c.index, counts[c.index], expected, sigma
                    );
                }
            }

            /// Any weights (NaN, zero, negative, infinite, huge, tiny): a candidate is always
            /// picked, never anything else.
            #[test]
            fn any_weights_pick_a_candidate(
                weights in vec(
                    prop_oneof![
                        any::<f64>(),
                        Just(f64::NAN),
                        Just(f64::INFINITY),
                        Just(f64::NEG_INFINITY),
                        Just(0.0),
                        Just(f64::MAX),
                    ],
                    0..6,
                ),
                seed in any::<u64>(),
            ) {
                fastrand::seed(seed);
                let candidates: Vec<Candidate> = weights
                    .iter()
                    .enumerate()
                    .map(|(index, &weight)| candidate(2 * index + 1, weight))
                    .collect();
                for _ in 0..20 {
                    let chosen = WeightedRandom::new().pick(&candidates, None);
                    prop_assert_eq!(chosen.is_some(), !candidates.is_empty());
                    if let Some(chosen) = chosen {
                        prop_assert!(candidates.iter().any(|c| c.index == chosen), "{}", chosen);
                    }
                }
            }
        }
    }
}
