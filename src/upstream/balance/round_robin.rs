//! Smooth weighted round robin (nginx's algorithm): exact weight proportions like plain weighted
//! round robin, but interleaved, so a heavy backend never takes its whole share in one burst.

use std::sync::{Mutex, PoisonError};

use super::random::sane_weight;
use super::{Balancer, Candidate};

/// Backend indices at or above this are balanced without remembered state instead of growing
/// the table: the pool's indices are positions in its backend list, so only a bug could produce
/// one this large, and it must not become a huge allocation.
const MAX_TRACKED: usize = 1 << 16;

/// Smooth weighted round robin over the eligible candidates.
///
/// Each backend has a current weight. On every pick each candidate's current weight grows by its
/// effective weight, the largest wins (ties go to the lowest index), and the winner gives back
/// the candidates' total. Backends that are not candidates (down, ejected, already tried) keep
/// their current weight, so the rotation resumes where it was when they come back rather than
/// favouring or starving them.
#[derive(Debug)]
pub struct SmoothRoundRobin {
    /// Current weight per backend index.
    current: Mutex<Vec<f64>>,
}

impl SmoothRoundRobin {
    /// A balancer for a pool of `backends` backends (indices beyond it are tracked on demand).
    pub fn new(backends: usize) -> Self {
        Self {
            current: Mutex::new(vec![0.0; backends.min(MAX_TRACKED)]),
        }
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        // Nothing below can panic while the lock is held, and the state is plain numbers that
        // are valid whatever a panicking holder left behind, so a poisoned lock is still usable.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(highest) = candidates.iter().map(|c| c.index).max() {
            let needed = highest.saturating_add(1).min(MAX_TRACKED);
            if needed > current.len() {
                current.resize(needed, 0.0);
            }
        }

        let mut total = 0.0;
        let mut best: Option<(usize, f64)> = None;
        for candidate in candidates {
            let weight = sane_weight(candidate.weight);
            total += weight;
            let raised = match current.get_mut(candidate.index) {
                Some(slot) => {
                    // Weights are finite, so this only triggers after a bug; restart the
                    // backend's rotation rather than let NaN lose every comparison forever.
                    if !slot.is_finite() {
                        *slot = 0.0;
                    }
                    *slot += weight;
                    *slot
                }
                None => weight,
            };
            let wins = best.is_none_or(|(best_index, best_weight)| {
                raised > best_weight || (raised == best_weight && candidate.index < best_index)
            });
            if wins {
                best = Some((candidate.index, raised));
            }
        }

        let (chosen, _) = best?;
        if let Some(slot) = current.get_mut(chosen) {
            *slot -= total;
        }
        Some(chosen)
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

    fn weighted(weights: &[f64]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| candidate(index, weight))
            .collect()
    }

    fn picks(balancer: &SmoothRoundRobin, candidates: &[Candidate], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| balancer.pick(candidates, None).unwrap())
            .collect()
    }

    #[test]
    fn empty_gives_none() {
        let balancer = SmoothRoundRobin::new(3);
        assert_eq!(balancer.pick(&[], None), None);
        // An empty pick leaves the rotation untouched.
        assert_eq!(picks(&balancer, &weighted(&[1.0, 1.0]), 2), [0, 1]);
    }

    #[test]
    fn nginx_sequence_for_weights_5_1_1() {
        let balancer = SmoothRoundRobin::new(3);
        let candidates = weighted(&[5.0, 1.0, 1.0]);
        // nginx documents { a, a, b, a, c, a, a } for these weights.
        assert_eq!(picks(&balancer, &candidates, 7), [0, 0, 1, 0, 2, 0, 0]);
        // The state is back at zero after a full cycle, so the cycle repeats.
        assert_eq!(picks(&balancer, &candidates, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_rotate_in_index_order() {
        let balancer = SmoothRoundRobin::new(3);
        let candidates = weighted(&[2.0, 2.0, 2.0]);
        assert_eq!(picks(&balancer, &candidates, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn proportions_match_weights_exactly() {
        let balancer = SmoothRoundRobin::new(3);
        let candidates = weighted(&[5.0, 3.0, 2.0]);
        let mut counts = [0usize; 3];
        for index in picks(&balancer, &candidates, 10_000) {
            counts[index] += 1;
        }
        assert_eq!(counts, [5_000, 3_000, 2_000]);
    }

    #[test]
    fn proportions_within_one_when_picks_are_not_a_multiple_of_the_total() {
        for weights in [
            &[3.0, 2.0, 2.0][..],
            &[1.0, 7.0][..],
            &[0.5, 0.25, 0.125, 0.125][..],
            &[13.0, 1.0, 4.0, 9.0, 2.0][..],
        ] {
            let balancer = SmoothRoundRobin::new(weights.len());
            let candidates = weighted(weights);
            let n = 10_000;
            let mut counts = vec![0usize; weights.len()];
            for index in picks(&balancer, &candidates, n) {
                counts[index] += 1;
            }
            let total: f64 = weights.iter().sum();
            for (index, &weight) in weights.iter().enumerate() {
                let expected = n as f64 * weight / total;
                assert!(
                    (counts[index] as f64 - expected).abs() <= 1.0,
                    "weights {weights:?}: backend {index} got {}, expected {expected}",
                    counts[index]
                );
            }
        }
    }

    #[test]
    fn heavy_backend_is_interleaved_not_bursted() {
        let balancer = SmoothRoundRobin::new(3);
        // Plain weighted round robin would send two in a row to backend 0, then two to 1.
        let sequence = picks(&balancer, &weighted(&[2.0, 2.0, 1.0]), 500);
        let longest_run = sequence
            .chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap();
        assert_eq!(longest_run, 1, "{sequence:?}");
    }

    #[test]
    fn leaving_and_rejoining_starves_no_one() {
        let balancer = SmoothRoundRobin::new(3);
        let all = weighted(&[1.0, 1.0, 1.0]);
        let without_middle = [candidate(0, 1.0), candidate(2, 1.0)];

        picks(&balancer, &all, 4);
        // Backend 1 is down for a while; the others alternate between themselves.
        let sequence = picks(&balancer, &without_middle, 101);
        assert!(!sequence.contains(&1));
        let zeros = sequence.iter().filter(|&&i| i == 0).count();
        assert!(zeros.abs_diff(101 - zeros) <= 1, "{sequence:?}");

        // Back up: every backend is served at least once in every window of three picks, and
        // the long-run split is even.
        let sequence = picks(&balancer, &all, 3_000);
        for window in sequence.windows(3) {
            for index in 0..3 {
                assert!(window.contains(&index), "{window:?} misses {index}");
            }
        }
        let mut counts = [0usize; 3];
        for index in sequence {
            counts[index] += 1;
        }
        assert_eq!(counts, [1_000, 1_000, 1_000]);
    }

    #[test]
    fn weighted_backend_rejoining_gets_its_share_back() {
        let balancer = SmoothRoundRobin::new(3);
        let all = weighted(&[4.0, 1.0, 1.0]);
        let without_heavy = [candidate(1, 1.0), candidate(2, 1.0)];
        for round in 0..20 {
            picks(&balancer, &all, 7 + round);
            picks(&balancer, &without_heavy, 3 + round);
        }
        let mut counts = [0usize; 3];
        for index in picks(&balancer, &all, 6_000) {
            counts[index] += 1;
        }
        for (count, expected) in counts.into_iter().zip([4_000.0, 1_000.0, 1_000.0]) {
            assert!((count as f64 - expected).abs() <= 2.0, "{counts:?}");
        }
    }

    #[test]
    fn slow_start_weights_ramp_the_share() {
        let balancer = SmoothRoundRobin::new(2);
        // Backend 1 warms up from a tenth of its weight to all of it over 1_000 picks.
        let mut newcomer = 0usize;
        for step in 0..1_000 {
            let ramp = 0.1 + 0.9 * step as f64 / 1_000.0;
            let candidates = [candidate(0, 1.0), candidate(1, ramp)];
            if balancer.pick(&candidates, None) == Some(1) {
                newcomer += 1;
            }
        }
        // Its share grows from about 9% to about 50%: well under half, well over a tenth.
        assert!((250..450).contains(&newcomer), "{newcomer}");
    }

    #[test]
    fn indices_beyond_the_initial_size_are_tracked() {
        let balancer = SmoothRoundRobin::new(0);
        let candidates = weighted(&[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(picks(&balancer, &candidates, 8), [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn absurd_index_does_not_panic_or_allocate() {
        let balancer = SmoothRoundRobin::new(2);
        let candidates = [
            candidate(0, 1.0),
            candidate(1, 1.0),
            candidate(usize::MAX, 1.0),
        ];
        for _ in 0..10 {
            assert!(balancer.pick(&candidates, None).is_some());
        }
        let tracked = balancer
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(tracked <= MAX_TRACKED);
    }

    #[test]
    fn bad_weights_do_not_stop_the_rotation() {
        let balancer = SmoothRoundRobin::new(3);
        let candidates = [candidate(0, f64::NAN), candidate(1, 1.0), candidate(2, 1.0)];
        let sequence = picks(&balancer, &candidates, 100);
        assert!(sequence.contains(&1) && sequence.contains(&2));
    }

    #[test]
    fn poisoned_lock_is_recovered() {
        let balancer = std::sync::Arc::new(SmoothRoundRobin::new(2));
        let poisoner = std::sync::Arc::clone(&balancer);
        let result = std::thread::spawn(move || {
            let _guard = poisoner.current.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(result.is_err());
        assert!(balancer.current.is_poisoned());
        assert_eq!(picks(&balancer, &weighted(&[1.0, 1.0]), 4), [0, 1, 0, 1]);
    }

    /// Properties of what docs/load-balancing.md promises of `round_robin`: exact shares per
    /// cycle, interleaved rather than in bursts, only candidates picked, and a backend out of
    /// the rotation keeps its place.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Integer weights (exact in f64), as the pool hands them over outside slow start.
        fn weights() -> impl Strategy<Value = Vec<u32>> {
            vec(1u32..=12, 1..=4)
        }

        fn as_candidates(weights: &[u32]) -> Vec<Candidate> {
            weights
                .iter()
                .enumerate()
                .map(|(index, &weight)| candidate(index, f64::from(weight)))
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Each cycle of `total weight` picks gives every backend exactly its weight, and
            /// in every stretch of picks a backend's count strays less than 2 from its share
            /// (`count - picks * weight / total`): bursts, as plain weighted round robin gives
            /// (weights 6, 6: six of one, then six of the other), stray further. The bound was
            /// checked exhaustively for up to four backends of weight 1 to 12 (at most 1.5).
            #[test]
            fn each_cycle_gives_exact_shares_interleaved(weights in weights()) {
                let balancer = SmoothRoundRobin::new(weights.len());
                let candidates = as_candidates(&weights);
                let total: u32 = weights.iter().sum();
                let sequence = picks(&balancer, &candidates, 3 * total as usize);
                for cycle in sequence.chunks(total as usize) {
                    for (index, &weight) in weights.iter().enumerate() {
                        let count = cycle.iter().filter(|&&i| i == index).count();
                        prop_assert_eq!(count, weight as usize, "{:?}: {:?}", weights, cycle);
                    }
                }
                for (index, &weight) in weights.iter().enumerate() {
                    let mut before = vec![0usize];
                    for &chosen in &sequence {
                        before.push(before.last().unwrap() + usize::from(chosen == index));
                    }
                    for start in 0..sequence.len() {
                        for end in start + 1..=sequence.len() {
                            let count = (before[end] - before[start]) as f64;
                            let share = (end - start) as f64 * f64::from(weight)
                                / f64::from(total);
                            prop_assert!(
                                (count - share).abs() < 2.0,
                                "{:?}: backend {} got {} of picks {}..{}, share {}",
                                weights, index, count, start, end, share
                            );
                        }
                    }
                }
            }

            /// Whatever came before (backends leaving and rejoining, any number of picks), only
            /// candidates are picked, a backend out of the rotation keeps its place (its
            /// current weight is untouched), and once all are back the long-run shares are
            /// the weights': after `m` picks each count is within the number of backends of
            /// `m * weight / total` (current weights stay above minus the total weight and,
            /// summing to zero, below `n - 1` times it).
            #[test]
            fn leaving_and_rejoining_keeps_places_and_shares(
                weights in weights(),
                history in vec((any::<u16>(), 0usize..12), 0..12),
                cycles in 1usize..=4,
            ) {
                let n = weights.len();
                let balancer = SmoothRoundRobin::new(n);
                let all = as_candidates(&weights);
                for (mask, count) in history {
                    let subset: Vec<Candidate> =
                        all.iter().copied().filter(|c| mask & (1 << c.index) != 0).collect();
                    for _ in 0..count {
                        let before = balancer.current.lock().unwrap().clone();
                        let chosen = balancer.pick(&subset, None);
                        prop_assert_eq!(chosen.is_some(), !subset.is_empty());
                        if let Some(chosen) = chosen {
                            prop_assert!(subset.iter().any(|c| c.index == chosen));
                        }
                        let after = balancer.current.lock().unwrap().clone();
                        for index in 0..n {
                            if !subset.iter().any(|c| c.index == index) {
                                prop_assert_eq!(before[index], after[index], "backend {} moved", index);
                            }
                        }
                    }
                }
                let total: u32 = weights.iter().sum();
                let m = cycles * 10 * total as usize;
                let mut counts = vec![0usize; n];
                for index in picks(&balancer, &all, m) {
                    counts[index] += 1;
                }
                for (index, &weight) in weights.iter().enumerate() {
                    let share = m as f64 * f64::from(weight) / f64::from(total);
                    prop_assert!(
                        (counts[index] as f64 - share).abs() < n as f64,
                        "{:?}: {:?} after {} picks", weights, counts, m
                    );
                }
            }

            /// Any weights at all (zero, negative, NaN, infinite, huge, tiny) and any indices:
            /// a candidate is always picked, never anything else.
            #[test]
            fn any_weights_pick_a_candidate(
                candidates in vec(
                    (0usize..40, prop_oneof![
                        any::<f64>(),
                        Just(f64::NAN),
                        Just(f64::INFINITY),
                        Just(0.0),
                        Just(f64::MIN_POSITIVE),
                        0.0f64..1e6,
                    ]),
                    0..6,
                ),
                rounds in 1usize..20,
            ) {
                let mut candidates: Vec<Candidate> =
                    candidates.into_iter().map(|(index, weight)| candidate(index, weight)).collect();
                candidates.sort_by_key(|c| c.index);
                candidates.dedup_by_key(|c| c.index);
                let balancer = SmoothRoundRobin::new(4);
                for _ in 0..rounds {
                    let chosen = balancer.pick(&candidates, None);
                    prop_assert_eq!(chosen.is_some(), !candidates.is_empty());
                    if let Some(chosen) = chosen {
                        prop_assert!(candidates.iter().any(|c| c.index == chosen));
                    }
                }
            }
        }
    }
}
