//! Consistent hashing on a Ketama-style ring: requests with the same key go to the same backend,
//! and a backend leaving or joining moves only its own share of the keys (cache affinity
//! survives pool changes and health flaps).

use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

use super::{Balancer, Candidate};

/// Ring points per unit of weight: enough that each backend's share of the keys is within a few
/// percent of its weight's share, few enough that building the ring is cheap.
const POINTS_PER_WEIGHT: u64 = 160;

/// The most points a ring gets; heavier configurations are scaled down to it, keeping the
/// weights' proportions, so huge weights cannot make the ring eat memory.
const MAX_POINTS: u64 = 1_000_000;

/// A consistent-hash ring over a pool's backends.
///
/// Each backend gets `160 * weight` points (scaled down if the ring would exceed a million
/// points; weight 0 gets none), each at the hash of `"{address}-{i}"`. A point's place depends
/// only on the backend's address and the point's number, never on the backend's position in the
/// list, so rebuilding the ring without one backend leaves every other backend's points, and
/// so its keys, where they were.
///
/// A key goes to the first point at or after its hash, clockwise, whose backend is a candidate;
/// a backend that is down therefore hands its keys to its ring neighbours while every other
/// key stays put.
#[derive(Clone)]
pub struct HashRing {
    /// `(point, backend index)`, sorted.
    points: Vec<(u64, usize)>,
    /// Whether each backend (by index) has any point, to spot keys that can find no candidate
    /// on the ring without walking all of it.
    on_ring: Vec<bool>,
}

impl HashRing {
    /// Builds the ring for backends given as `(address, weight)`, in the pool's index order.
    pub fn new(backends: &[(String, u32)]) -> Self {
        let total_weight: u64 = backends.iter().map(|(_, weight)| u64::from(*weight)).sum();
        let wanted = total_weight.saturating_mul(POINTS_PER_WEIGHT);
        let points_for = |weight: u32| -> u64 {
            let full = u64::from(weight) * POINTS_PER_WEIGHT;
            if weight == 0 || wanted <= MAX_POINTS {
                return full;
            }
            // u128: `full * MAX_POINTS` overflows u64 for weights near u32::MAX.
            let scaled = u128::from(full) * u128::from(MAX_POINTS) / u128::from(wanted);
            // At least one point, so a light backend in a heavy pool is not silently dropped.
            u64::try_from(scaled).unwrap_or(MAX_POINTS).max(1)
        };

        let mut points = Vec::new();
        let mut on_ring = Vec::with_capacity(backends.len());
        for (index, (address, weight)) in backends.iter().enumerate() {
            let count = points_for(*weight);
            on_ring.push(count > 0);
            for i in 0..count {
                points.push((xxh3_64(format!("{address}-{i}").as_bytes()), index));
            }
        }
        // Sorting by index too makes colliding points resolve the same way on every build.
        points.sort_unstable();
        Self { points, on_ring }
    }

    /// Hashes a request key (a header value, a client address, ...) onto the ring's key space.
    pub fn key_hash(bytes: &[u8]) -> u64 {
        xxh3_64(bytes)
    }

    fn has_points(&self, index: usize) -> bool {
        self.on_ring.get(index).copied().unwrap_or(false)
    }
}

impl fmt::Debug for HashRing {
    // The points are far too many to print and mean nothing to a reader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashRing")
            .field("backends", &self.on_ring.len())
            .field("points", &self.points.len())
            .finish()
    }
}

impl Balancer for HashRing {
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> Option<usize> {
        let count = candidates.len();
        if count == 0 {
            return None;
        }
        let Some(key) = key else {
            // No key, no affinity to keep: spread such requests at random.
            return candidates.get(fastrand::usize(..count)).map(|c| c.index);
        };

        // The walk's membership test is a binary search, which needs the pool's ordering.
        debug_assert!(candidates.is_sorted_by_key(|c| c.index));
        if candidates.iter().any(|c| self.has_points(c.index)) {
            let start = self.points.partition_point(|&(point, _)| point < key);
            let (before, after) = self.points.split_at(start.min(self.points.len()));
            let chosen = after
                .iter()
                .chain(before)
                .find(|&&(_, index)| candidates.binary_search_by_key(&index, |c| c.index).is_ok());
            if let Some(&(_, index)) = chosen {
                return Some(index);
            }
        }

        // No candidate is on the ring (all weight 0): still keep each key on one backend.
        let position = usize::try_from(key % count as u64).unwrap_or(0);
        candidates.get(position).map(|c| c.index)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ring(backends: &[(&str, u32)]) -> HashRing {
        let owned: Vec<_> = backends
            .iter()
            .map(|&(address, weight)| (address.to_owned(), weight))
            .collect();
        HashRing::new(&owned)
    }

    fn candidates(indices: impl IntoIterator<Item = usize>) -> Vec<Candidate> {
        indices
            .into_iter()
            .map(|index| Candidate {
                index,
                weight: 1.0,
                in_flight: 0,
                latency_ns: 0.0,
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| HashRing::key_hash(format!("user-{i}").as_bytes()))
            .collect()
    }

    /// Where each key goes, by backend address.
    fn assignment<'a>(
        ring: &HashRing,
        addresses: &[&'a str],
        live: &[Candidate],
        keys: &[u64],
    ) -> Vec<&'a str> {
        keys.iter()
            .map(|&key| addresses[ring.pick(live, Some(key)).unwrap()])
            .collect()
    }

    const FIVE: [&str; 5] = [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
        "10.0.0.3:8080",
        "10.0.0.4:8080",
        "10.0.0.5:8080",
    ];

    #[test]
    fn empty_gives_none() {
        let ring = ring(&[("a:1", 1)]);
        assert_eq!(ring.pick(&[], Some(42)), None);
        assert_eq!(ring.pick(&[], None), None);
        assert_eq!(HashRing::new(&[]).pick(&[], Some(1)), None);
    }

    #[test]
    fn same_key_same_backend_always() {
        let backends: Vec<_> = FIVE.iter().map(|&a| (a, 1)).collect();
        let first = ring(&backends);
        let rebuilt = ring(&backends);
        let live = candidates(0..5);
        for key in keys(1_000) {
            let chosen = first.pick(&live, Some(key));
            assert!(chosen.is_some());
            for _ in 0..3 {
                assert_eq!(first.pick(&live, Some(key)), chosen);
            }
            assert_eq!(rebuilt.pick(&live, Some(key)), chosen);
        }
    }

    #[test]
    fn key_hash_is_stable() {
        assert_eq!(HashRing::key_hash(b"abc"), HashRing::key_hash(b"abc"));
        assert_ne!(HashRing::key_hash(b"abc"), HashRing::key_hash(b"abd"));
        // xxh3 is specified, so this holds across builds and machines.
        assert_eq!(HashRing::key_hash(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn equal_backends_get_even_shares() {
        let ring = ring(&FIVE[..4].iter().map(|&a| (a, 1)).collect::<Vec<_>>());
        let mut counts = [0usize; 4];
        for key in keys(10_000) {
            counts[ring.pick(&candidates(0..4), Some(key)).unwrap()] += 1;
        }
        for count in counts {
            assert!(count.abs_diff(2_500) <= 500, "{counts:?}");
        }
    }

    #[test]
    fn double_weight_gets_about_twice_the_keys() {
        let ring = ring(&[(FIVE[0], 2), (FIVE[1], 1), (FIVE[2], 1)]);
        let mut counts = [0usize; 3];
        for key in keys(20_000) {
            counts[ring.pick(&candidates(0..3), Some(key)).unwrap()] += 1;
        }
        for light in [counts[1], counts[2]] {
            let ratio = counts[0] as f64 / light as f64;
            assert!((1.6..2.4).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let keys = keys(10_000);
        let full = ring(&FIVE.map(|a| (a, 1)));
        let before = assignment(&full, &FIVE, &candidates(0..5), &keys);

        // Backend 10.0.0.3 leaves the configuration: the ring is rebuilt and indices shift.
        let remaining = [FIVE[0], FIVE[1], FIVE[3], FIVE[4]];
        let smaller = ring(&remaining.map(|a| (a, 1)));
        let after = assignment(&smaller, &remaining, &candidates(0..4), &keys);

        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            if old == new {
                continue;
            }
            assert_eq!(*old, FIVE[2], "a key moved off a backend that stayed");
            moved += 1;
        }
        // Every key of the removed backend moved, and those were about a fifth of all.
        assert_eq!(moved, before.iter().filter(|&&a| a == FIVE[2]).count());
        assert!((1_200..=2_800).contains(&moved), "{moved}");
    }

    #[test]
    fn adding_a_backend_takes_keys_only_for_itself() {
        let keys = keys(10_000);
        let four = [FIVE[0], FIVE[1], FIVE[2], FIVE[3]];
        let before = assignment(
            &ring(&four.map(|a| (a, 1))),
            &four,
            &candidates(0..4),
            &keys,
        );
        let after = assignment(
            &ring(&FIVE.map(|a| (a, 1))),
            &FIVE,
            &candidates(0..5),
            &keys,
        );
        for (old, new) in before.iter().zip(&after) {
            assert!(old == new || *new == FIVE[4], "{old} -> {new}");
        }
    }

    #[test]
    fn down_backend_hands_its_keys_to_others_and_no_other_key_moves() {
        let keys = keys(10_000);
        let ring = ring(&FIVE.map(|a| (a, 1)));
        let before = assignment(&ring, &FIVE, &candidates(0..5), &keys);
        let after = assignment(&ring, &FIVE, &candidates([0, 1, 3, 4]), &keys);

        let mut receivers = HashMap::new();
        for (old, new) in before.iter().zip(&after) {
            assert_ne!(*new, FIVE[2]);
            if *old == FIVE[2] {
                *receivers.entry(*new).or_insert(0usize) += 1;
            } else {
                assert_eq!(old, new, "a key of a live backend moved");
            }
        }
        // The orphaned keys spread over the survivors instead of piling onto one neighbour.
        assert_eq!(receivers.len(), 4, "{receivers:?}");

        // Back up: exactly the old assignment again.
        assert_eq!(assignment(&ring, &FIVE, &candidates(0..5), &keys), before);
    }

    #[test]
    fn key_goes_to_the_next_point_clockwise() {
        let ring = ring(&FIVE.map(|a| (a, 1)));
        let live = candidates(0..5);
        for pair in ring.points.windows(2).step_by(37) {
            let [(previous, _), (point, owner)] = [pair[0], pair[1]];
            if previous == point {
                continue;
            }
            assert_eq!(ring.pick(&live, Some(point)), Some(owner));
            assert_eq!(ring.pick(&live, Some(previous + 1)), Some(owner));
        }
    }

    #[test]
    fn keys_wrap_around_the_ring() {
        let ring = ring(&FIVE.map(|a| (a, 1)));
        let live = candidates(0..5);
        let first_point_owner = ring.points.first().map(|&(_, index)| index);
        // Past the last point the walk continues at the first.
        assert_eq!(ring.pick(&live, Some(u64::MAX)), first_point_owner);
        let last = ring.points.last().unwrap().0;
        if last < u64::MAX {
            assert_eq!(ring.pick(&live, Some(last + 1)), first_point_owner);
        }
    }

    #[test]
    fn zero_weight_backends_get_no_keys_while_others_are_up() {
        let ring = ring(&[(FIVE[0], 1), (FIVE[1], 0), (FIVE[2], 1)]);
        for key in keys(2_000) {
            assert_ne!(ring.pick(&candidates(0..3), Some(key)), Some(1));
        }
    }

    #[test]
    fn falls_back_to_key_modulo_when_no_candidate_is_on_the_ring() {
        let ring = ring(&[(FIVE[0], 1), (FIVE[1], 0), (FIVE[2], 0)]);
        let live = candidates([1, 2]);
        assert_eq!(ring.pick(&live, Some(10)), Some(1));
        assert_eq!(ring.pick(&live, Some(11)), Some(2));
        // A candidate index the ring has never heard of is handled the same way.
        assert_eq!(ring.pick(&candidates([7]), Some(3)), Some(7));
        // An all-zero ring has no points at all.
        let empty = self::ring(&[(FIVE[0], 0)]);
        assert!(empty.points.is_empty());
        assert_eq!(empty.pick(&candidates([0]), Some(5)), Some(0));
    }

    #[test]
    fn no_key_picks_a_random_candidate() {
        fastrand::seed(0x4a54_0001);
        let ring = ring(&FIVE.map(|a| (a, 1)));
        let live = candidates([0, 2, 4]);
        let mut counts = [0usize; 5];
        for _ in 0..3_000 {
            counts[ring.pick(&live, None).unwrap()] += 1;
        }
        assert_eq!(counts[1] + counts[3], 0);
        for index in [0, 2, 4] {
            assert!(counts[index].abs_diff(1_000) < 200, "{counts:?}");
        }
    }

    #[test]
    fn point_count_follows_weight_and_is_capped() {
        let small = ring(&[(FIVE[0], 1), (FIVE[1], 3), (FIVE[2], 0)]);
        assert_eq!(small.points.len(), 4 * 160);

        let huge = ring(&[(FIVE[0], u32::MAX), (FIVE[1], u32::MAX / 2), (FIVE[2], 1)]);
        let per_backend = |index| huge.points.iter().filter(|p| p.1 == index).count();
        assert!(huge.points.len() <= 1_000_000 + 3, "{}", huge.points.len());
        // Proportions survive the scaling, and the light backend keeps a point.
        assert!(per_backend(0).abs_diff(2 * per_backend(1)) <= 2);
        assert_eq!(per_backend(2), 1);
        assert!(huge.points.is_sorted());
    }

    #[test]
    fn points_do_not_depend_on_position() {
        let forward = ring(&[(FIVE[0], 1), (FIVE[1], 1)]);
        let reversed = ring(&[(FIVE[1], 1), (FIVE[0], 1)]);
        let swap = |(point, index): (u64, usize)| (point, 1 - index);
        let mut mapped: Vec<_> = reversed.points.iter().copied().map(swap).collect();
        mapped.sort_unstable();
        assert_eq!(forward.points, mapped);
    }

    #[test]
    fn debug_output_is_short() {
        let ring = ring(&FIVE.map(|a| (a, 100)));
        let text = format!("{ring:?}");
        assert!(text.len() < 100, "{text}");
        assert!(text.contains("80000"), "{text}");
    }

    /// Properties of `hash` (docs/load-balancing.md): a key's backend is the first point
    /// clockwise whose backend is eligible, so it is the same every time, only the keys of a
    /// backend that leaves move (and they come back with it), and shares follow the weights.
    mod properties {
        use super::*;
        use proptest::collection::{btree_set, vec};
        use proptest::prelude::*;

        /// Distinct backend addresses with their weights (0 now and then: no points).
        fn pool(min: usize) -> impl Strategy<Value = Vec<(String, u32)>> {
            btree_set((any::<[u8; 2]>(), 1u16..), min..=6).prop_flat_map(|addresses| {
                let n = addresses.len();
                let addresses: Vec<String> = addresses
                    .into_iter()
                    .map(|([a, b], port)| format!("10.0.{a}.{b}:{port}"))
                    .collect();
                vec(prop_oneof![8 => 1u32..=4, 1 => Just(0u32)], n).prop_map(move |weights| {
                    addresses.iter().cloned().zip(weights).collect::<Vec<_>>()
                })
            })
        }

        fn keys() -> impl Strategy<Value = Vec<u64>> {
            vec(prop_oneof![any::<u64>(), Just(0), Just(u64::MAX)], 1..64)
        }

        /// The candidates a bit mask leaves in (at least one).
        fn subset(n: usize, mask: u8) -> Vec<Candidate> {
            let chosen: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            if chosen.is_empty() {
                candidates([0])
            } else {
                candidates(chosen)
            }
        }

        /// The model: the first point at or after the key, wrapping, whose backend is a
        /// candidate; `key % count` among the candidates when none of them has a point.
        fn model(ring: &HashRing, live: &[Candidate], key: u64) -> usize {
            let is_live = |index: usize| live.iter().any(|c| c.index == index);
            let after = ring.points.iter().filter(|(point, _)| *point >= key);
            let before = ring.points.iter().filter(|(point, _)| *point < key);
            match after.chain(before).find(|(_, index)| is_live(*index)) {
                Some(&(_, index)) => index,
                None => live[(key % live.len() as u64) as usize].index,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A key goes to the first eligible point clockwise, the same every time and on a
            /// ring built again from the same pool.
            #[test]
            fn a_key_goes_to_the_first_eligible_point_clockwise_every_time(
                backends in pool(1),
                mask in any::<u8>(),
                keys in keys(),
            ) {
                let ring = HashRing::new(&backends);
                let rebuilt = HashRing::new(&backends);
                let live = subset(backends.len(), mask);
                // Keys right at, before and after some points, where an off-by-one would show.
                let edges = ring.points.iter().step_by(97).flat_map(|&(point, _)| {
                    [point, point.wrapping_sub(1), point.wrapping_add(1)]
                });
                for key in keys.into_iter().chain(edges) {
                    let chosen = ring.pick(&live, Some(key));
                    prop_assert_eq!(chosen, Some(model(&ring, &live, key)), "key {}", key);
                    prop_assert_eq!(ring.pick(&live, Some(key)), chosen);
                    prop_assert_eq!(rebuilt.pick(&live, Some(key)), chosen);
                }
            }

            /// Backends going down (fewer candidates) move only their own keys; back up, every
            /// key is where it was.
            #[test]
            fn going_down_moves_only_the_keys_of_those_down(
                backends in pool(2),
                down in any::<u8>(),
                keys in keys(),
            ) {
                let ring = HashRing::new(&backends);
                let all = candidates(0..backends.len());
                let mut live: Vec<Candidate> =
                    all.iter().copied().filter(|c| down & (1 << c.index) == 0).collect();
                if live.is_empty() {
                    live.push(all[0]);
                }
                // Without any point among the candidates the fallback is `key % count`,
                // which promises nothing about moves: both sides need a backend on the ring.
                prop_assume!(live.iter().any(|c| backends[c.index].1 > 0));
                for key in keys {
                    let before = ring.pick(&all, Some(key)).unwrap();
                    let after = ring.pick(&live, Some(key)).unwrap();
                    if live.iter().any(|c| c.index == before) {
                        prop_assert_eq!(after, before, "key {} moved off a live backend", key);
                    }
                    prop_assert!(live.iter().any(|c| c.index == after));
                    prop_assert_eq!(ring.pick(&all, Some(key)), Some(before));
                }
            }

            /// A backend removed from the configuration (the ring rebuilt, later indices
            /// shifted) takes only its own keys with it, and added back, restores the old
            /// mapping exactly.
            #[test]
            fn removing_a_backend_moves_only_its_keys_and_adding_it_back_restores_them(
                backends in pool(2),
                removed in any::<prop::sample::Index>(),
                keys in keys(),
            ) {
                let removed = removed.index(backends.len());
                prop_assume!(backends.iter().enumerate().any(|(i, b)| i != removed && b.1 > 0));
                let mut fewer = backends.clone();
                let gone = fewer.remove(removed);
                let full = HashRing::new(&backends);
                let smaller = HashRing::new(&fewer);
                let restored = HashRing::new(&backends);
                for key in keys {
                    let before = &backends[full.pick(&candidates(0..backends.len()), Some(key)).unwrap()].0;
                    let after = &fewer[smaller.pick(&candidates(0..fewer.len()), Some(key)).unwrap()].0;
                    if *before != gone.0 {
                        prop_assert_eq!(after, before, "key {} moved off a backend that stayed", key);
                    } else {
                        prop_assert_ne!(after, &gone.0);
                    }
                    let back = &backends[restored.pick(&candidates(0..backends.len()), Some(key)).unwrap()].0;
                    prop_assert_eq!(back, before);
                }
            }

            /// Each backend's share of the key space (the arcs ending at its points, which is
            /// where the first property sends keys) is between 0.4 and 1.7 times its weight's
            /// share. With `160 * weight` points a share is a Beta variable whose relative
            /// spread is at most `1 / sqrt(160)`, 8 %: these bounds are more than six spreads
            /// away (Chernoff: outside them less than once in 10^11 backends).
            #[test]
            fn shares_of_the_key_space_follow_the_weights(
                addresses in btree_set((any::<[u8; 2]>(), 1u16..), 2..=6),
                weights in vec(1u32..=4, 6),
            ) {
                let backends: Vec<(String, u32)> = addresses
                    .into_iter()
                    .zip(weights)
                    .map(|(([a, b], port), weight)| (format!("10.0.{a}.{b}:{port}"), weight))
                    .collect();
                let ring = HashRing::new(&backends);
                let mut owned = vec![0u128; backends.len()];
                let mut previous = u128::from(ring.points.last().unwrap().0);
                for &(point, index) in &ring.points {
                    let point = u128::from(point);
                    // The arc (previous, point], wrapping past 2^64 for the first point.
                    owned[index] += (point + (1u128 << 64) - previous) % (1u128 << 64);
                    previous = point;
                }
                let total: u32 = backends.iter().map(|b| b.1).sum();
                for (index, &(_, weight)) in backends.iter().enumerate() {
                    let share = owned[index] as f64 / 2f64.powi(64);
                    let expected = f64::from(weight) / f64::from(total);
                    prop_assert!(
                        (0.4 * expected..=1.7 * expected).contains(&share),
                        "backend {} of {:?}: share {}, expected {}", index, backends, share, expected
                    );
                }
            }
        }
    }
}
