//! Latency-aware balancing: a peak-sensitive moving average of each backend's response time, and
//! a power-of-two-choices balancer over it that steers traffic away from slow or busy backends
//! without the herding a "pick the global minimum" rule causes.

use std::time::Duration;

use tokio::time::Instant;

use super::random::sane_weight;
use super::{Balancer, Candidate};

/// Peak-sensitive exponentially weighted moving average of one backend's round-trip time.
///
/// A sample above the estimate replaces it at once, so a backend that turns slow is avoided
/// from its first slow response. A lower sample is blended in with weight
/// `1 - exp(-elapsed / decay)`, `elapsed` being the time since the previous sample, so recovery
/// follows wall time rather than request count: many fast samples in a short while move the
/// estimate little, one sample after a long silence moves it almost all the way.
///
/// Time is passed in, never read, so the estimator is deterministic under test.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    /// The decay period in nanoseconds; `0.0` means no smoothing (the latest sample wins).
    decay_ns: f64,
    /// The smoothed round-trip time in nanoseconds as of `observed_at`; `0.0` before any sample.
    estimate_ns: f64,
    /// When the latest sample was taken; `None` before any.
    observed_at: Option<Instant>,
}

impl PeakEwma {
    /// An estimator with no samples whose memory fades over `decay`.
    ///
    /// A zero `decay` disables smoothing and fading: the estimate is always the latest sample.
    pub fn new(decay: Duration) -> Self {
        Self {
            decay_ns: nanos(decay),
            estimate_ns: 0.0,
            observed_at: None,
        }
    }

    /// Records a response that took `rtt`, completed at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let sample = nanos(rtt);
        let blended = match self.observed_at {
            Some(previous) if sample <= self.estimate_ns && self.decay_ns > 0.0 => {
                let retained = self.retained_since(previous, now);
                self.estimate_ns * retained + sample * (1.0 - retained)
            }
            // The first sample, a new peak, or no smoothing: take the sample as it is.
            _ => sample,
        };
        self.estimate_ns = finite_non_negative(blended);
        // Completions can be reported slightly out of order; the clock used for later decay
        // must not run backwards.
        self.observed_at = Some(self.observed_at.map_or(now, |previous| previous.max(now)));
    }

    /// The estimate in nanoseconds as of `now`; `0.0` before any sample.
    ///
    /// The estimate also fades toward zero by `exp(-elapsed / decay)` since the latest sample.
    /// Without that, a backend whose estimate spiked would be avoided, so it would produce no
    /// new samples, so its estimate would never come down: it would stay starved long after it
    /// recovered. Fading makes it cheap enough again to be picked now and then, and the
    /// responses it then sends either confirm it is slow (a new peak) or bring it back.
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        match self.observed_at {
            Some(at) if self.decay_ns > 0.0 => {
                finite_non_negative(self.estimate_ns * self.retained_since(at, now))
            }
            _ => self.estimate_ns,
        }
    }

    /// The share of the old estimate that survives from `since` to `now`, in `[0, 1]`.
    fn retained_since(&self, since: Instant, now: Instant) -> f64 {
        let elapsed = nanos(now.saturating_duration_since(since));
        // The callers check `decay_ns > 0.0`, so this is finite and non-negative.
        let retained = (-elapsed / self.decay_ns).exp();
        debug_assert!((0.0..=1.0).contains(&retained), "retained {retained}");
        retained.clamp(0.0, 1.0)
    }
}

/// A duration in nanoseconds, as a float (exact up to about 104 days).
fn nanos(duration: Duration) -> f64 {
    duration.as_nanos() as f64
}

/// Keeps an estimate usable: NaN or infinity would make every cost comparison false.
fn finite_non_negative(value: f64) -> f64 {
    debug_assert!(value.is_finite() && value >= 0.0, "estimate {value}");
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

/// Power of two random choices over the peak-EWMA latency estimates.
///
/// Two distinct candidates are drawn at random and the cheaper one wins, cost being
/// `latency_ns * (in_flight + 1) / weight`: latency and load multiply, so a fast backend that is
/// swamped looks as expensive as a slow idle one. Comparing two random candidates, rather than
/// taking the cheapest of all, keeps every proxy thread from flocking to the same backend
/// between estimate updates, while the worst backend still loses every comparison it is in.
///
/// A candidate with no latency sample yet costs zero, so a new or recovered backend gets
/// measured soon; between two such candidates the less loaded (per weight) one wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakEwmaBalancer;

impl PeakEwmaBalancer {
    /// A peak-EWMA balancer (its randomness is thread-local; it keeps no state).
    pub fn new() -> Self {
        Self
    }
}

/// Requests waiting per unit of weight if this candidate got the request.
fn load(candidate: &Candidate) -> f64 {
    (f64::from(candidate.in_flight) + 1.0) / sane_weight(candidate.weight)
}

/// The expected cost of sending one more request to `candidate`.
fn cost(candidate: &Candidate) -> f64 {
    let latency = candidate.latency_ns;
    // No sample yet (or a broken one): free, so it is tried and measured.
    if !latency.is_finite() || latency <= 0.0 {
        return 0.0;
    }
    latency * load(candidate)
}

impl Balancer for PeakEwmaBalancer {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        let count = candidates.len();
        if count < 2 {
            return candidates.first().map(|c| c.index);
        }
        // Two distinct positions: draw the second from the other `count - 1` and skip the first.
        let first = fastrand::usize(..count);
        let mut second = fastrand::usize(..count - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (candidates.get(first)?, candidates.get(second)?);
        let (cost_a, cost_b) = (cost(a), cost(b));
        let b_wins = cost_b < cost_a || (cost_b == cost_a && load(b) < load(a));
        Some(if b_wins { b.index } else { a.index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ns_of_ms(n: f64) -> f64 {
        n * 1e6
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= expected.abs() * 1e-9 + 1e-6,
            "{actual} != {expected}"
        );
    }

    #[test]
    fn no_samples_estimate_zero() {
        let t0 = Instant::now();
        let ewma = PeakEwma::new(ms(10_000));
        assert_eq!(ewma.estimate_ns(t0), 0.0);
        assert_eq!(ewma.estimate_ns(t0 + ms(5_000)), 0.0);
    }

    #[test]
    fn first_sample_is_taken_as_is() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(10_000));
        ewma.observe(ms(40), t0);
        assert_close(ewma.estimate_ns(t0), ns_of_ms(40.0));
    }

    #[test]
    fn peak_replaces_immediately() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(10_000));
        ewma.observe(ms(10), t0);
        ewma.observe(ms(10), t0 + MS);
        ewma.observe(ms(500), t0 + ms(2));
        assert_close(ewma.estimate_ns(t0 + ms(2)), ns_of_ms(500.0));
    }

    #[test]
    fn lower_sample_blends_by_elapsed_time() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(10_000));
        ewma.observe(ms(100), t0);
        ewma.observe(ms(10), t0 + ms(1_000));
        // Weight of the new sample: 1 - exp(-1s / 10s).
        let kept = (-0.1f64).exp();
        let expected = ns_of_ms(100.0) * kept + ns_of_ms(10.0) * (1.0 - kept);
        assert_close(ewma.estimate_ns(t0 + ms(1_000)), expected);
    }

    #[test]
    fn frequent_samples_move_slowly_and_rare_ones_quickly() {
        let t0 = Instant::now();
        let mut frequent = PeakEwma::new(ms(10_000));
        frequent.observe(ms(100), t0);
        for step in 1..=10 {
            frequent.observe(ms(10), t0 + MS * step);
        }
        // Ten fast samples over 10 ms barely dent a 100 ms estimate with a 10 s decay.
        assert!(frequent.estimate_ns(t0 + ms(10)) > ns_of_ms(99.0));

        let mut rare = PeakEwma::new(ms(10_000));
        rare.observe(ms(100), t0);
        rare.observe(ms(10), t0 + ms(100_000));
        // One fast sample after ten decay periods all but replaces it.
        assert!(rare.estimate_ns(t0 + ms(100_000)) < ns_of_ms(10.01));
    }

    #[test]
    fn converges_on_a_steady_lower_latency() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(1_000));
        ewma.observe(ms(200), t0);
        let mut now = t0;
        for _ in 0..1_000 {
            now += ms(50);
            ewma.observe(ms(20), now);
        }
        // 50 s of samples is 50 decay periods: the 200 ms peak is gone.
        assert_close(ewma.estimate_ns(now), ns_of_ms(20.0));
    }

    #[test]
    fn steady_latency_is_estimated_exactly() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(10_000));
        let mut now = t0;
        for _ in 0..100 {
            ewma.observe(ms(30), now);
            now += ms(7);
        }
        assert_close(ewma.estimate_ns(now - ms(7)), ns_of_ms(30.0));
    }

    #[test]
    fn estimate_decays_while_unobserved() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(10_000));
        ewma.observe(ms(800), t0);
        let one_period = ewma.estimate_ns(t0 + ms(10_000));
        assert_close(one_period, ns_of_ms(800.0) * (-1.0f64).exp());
        let later = ewma.estimate_ns(t0 + ms(30_000));
        assert!(later < one_period);
        assert_close(later, ns_of_ms(800.0) * (-3.0f64).exp());
        // Reading does not change the state.
        assert_close(ewma.estimate_ns(t0), ns_of_ms(800.0));
    }

    #[test]
    fn decayed_backend_becomes_cheaper_than_a_steady_one() {
        let t0 = Instant::now();
        let mut spiked = PeakEwma::new(ms(10_000));
        spiked.observe(ms(2_000), t0);
        let mut steady = PeakEwma::new(ms(10_000));
        let mut now = t0;
        for _ in 0..600 {
            now += ms(100);
            steady.observe(ms(50), now);
        }
        // A minute later the spiked backend, never picked meanwhile, is worth another try.
        assert!(spiked.estimate_ns(now) < steady.estimate_ns(now));
    }

    #[test]
    fn zero_decay_means_latest_sample_wins() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(Duration::ZERO);
        ewma.observe(ms(100), t0);
        ewma.observe(ms(10), t0);
        assert_close(ewma.estimate_ns(t0), ns_of_ms(10.0));
        ewma.observe(ms(30), t0 + ms(5));
        let estimate = ewma.estimate_ns(t0 + ms(60_000));
        assert!(estimate.is_finite());
        assert_close(estimate, ns_of_ms(30.0));
    }

    #[test]
    fn out_of_order_observations_stay_finite() {
        let t0 = Instant::now() + ms(10_000);
        let mut ewma = PeakEwma::new(ms(1_000));
        ewma.observe(ms(50), t0);
        ewma.observe(ms(10), t0 - ms(500));
        // A sample from "before" the latest one has no time to blend over: ignored.
        assert_close(ewma.estimate_ns(t0), ns_of_ms(50.0));
        // And the fade is measured from the latest time seen, not the earlier one.
        assert_close(
            ewma.estimate_ns(t0 + ms(1_000)),
            ns_of_ms(50.0) * (-1.0f64).exp(),
        );
        assert_eq!(ewma.estimate_ns(t0 - ms(5_000)), ns_of_ms(50.0));
    }

    #[test]
    fn extreme_durations_stay_finite() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(Duration::from_nanos(1));
        ewma.observe(Duration::from_secs(u64::MAX / 4), t0);
        ewma.observe(Duration::ZERO, t0 + ms(1));
        let estimate = ewma.estimate_ns(t0 + ms(2));
        assert!(estimate.is_finite() && estimate >= 0.0);

        let mut slow_decay = PeakEwma::new(Duration::from_secs(u64::MAX / 4));
        slow_decay.observe(ms(5), t0);
        slow_decay.observe(ms(1), t0 + ms(1));
        let estimate = slow_decay.estimate_ns(t0 + ms(2));
        assert!(estimate.is_finite() && estimate > 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn works_on_the_paused_runtime_clock() {
        let mut ewma = PeakEwma::new(ms(10_000));
        ewma.observe(ms(100), Instant::now());
        tokio::time::advance(ms(10_000)).await;
        assert_close(
            ewma.estimate_ns(Instant::now()),
            ns_of_ms(100.0) * (-1.0f64).exp(),
        );
    }

    fn candidate(index: usize, weight: f64, in_flight: u32, latency_ns: f64) -> Candidate {
        Candidate {
            index,
            weight,
            in_flight,
            latency_ns,
        }
    }

    fn counts(candidates: &[Candidate], picks: usize) -> Vec<usize> {
        let balancer = PeakEwmaBalancer::new();
        let size = candidates.iter().map(|c| c.index + 1).max().unwrap_or(0);
        let mut counts = vec![0; size];
        for _ in 0..picks {
            counts[balancer.pick(candidates, None).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn empty_gives_none() {
        assert_eq!(PeakEwmaBalancer::new().pick(&[], None), None);
    }

    #[test]
    fn single_candidate_is_picked() {
        let balancer = PeakEwmaBalancer::new();
        let only = [candidate(7, 1.0, 50, 1e9)];
        for _ in 0..10 {
            assert_eq!(balancer.pick(&only, None), Some(7));
        }
    }

    #[test]
    fn two_candidates_are_always_compared() {
        fastrand::seed(0xe3a_0001);
        let pair = [candidate(2, 1.0, 0, 2e6), candidate(9, 1.0, 0, 1e6)];
        assert_eq!(counts(&pair, 1_000)[9], 1_000);
    }

    #[test]
    fn slow_backend_is_avoided() {
        fastrand::seed(0xe3a_0002);
        let candidates = [
            candidate(0, 1.0, 0, 1e6),
            candidate(1, 1.0, 0, 1e8),
            candidate(2, 1.0, 0, 1e6),
        ];
        let counts = counts(&candidates, 10_000);
        assert!(counts[1] < 500, "{counts:?}");
        // The two fast ones share the rest about evenly.
        assert!(counts[0].abs_diff(counts[2]) < 1_000, "{counts:?}");
    }

    #[test]
    fn load_counts() {
        fastrand::seed(0xe3a_0003);
        let candidates = [
            candidate(0, 1.0, 9, 1e6),
            candidate(1, 1.0, 0, 1e6),
            candidate(2, 1.0, 0, 1e6),
        ];
        let counts = counts(&candidates, 10_000);
        assert!(counts[0] < 500, "{counts:?}");
        // A fast but swamped backend loses to a slower idle one: 1 ms * 10 > 4 ms * 1.
        let candidates = [candidate(0, 1.0, 9, 1e6), candidate(1, 1.0, 0, 4e6)];
        assert_eq!(PeakEwmaBalancer::new().pick(&candidates, None), Some(1));
    }

    #[test]
    fn weight_lowers_cost() {
        // Same latency and load; weight 4 makes backend 0 four times cheaper.
        let candidates = [candidate(0, 4.0, 2, 3e6), candidate(1, 1.0, 0, 3e6)];
        for _ in 0..100 {
            assert_eq!(PeakEwmaBalancer::new().pick(&candidates, None), Some(0));
        }
    }

    #[test]
    fn unmeasured_backend_is_tried_first() {
        fastrand::seed(0xe3a_0004);
        let candidates = [
            candidate(0, 1.0, 0, 1e6),
            candidate(1, 1.0, 0, 1e6),
            candidate(2, 1.0, 0, 0.0),
        ];
        // It wins every comparison it is drawn into: two of the three possible pairs.
        let share = counts(&candidates, 9_000)[2] as f64 / 9_000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.05, "{share}");
    }

    #[test]
    fn unmeasured_ties_go_to_the_less_loaded() {
        let candidates = [candidate(0, 1.0, 5, 0.0), candidate(1, 1.0, 1, 0.0)];
        for _ in 0..100 {
            assert_eq!(PeakEwmaBalancer::new().pick(&candidates, None), Some(1));
        }
    }

    #[test]
    fn equal_candidates_share_evenly() {
        fastrand::seed(0xe3a_0005);
        let candidates: Vec<_> = (0..4).map(|i| candidate(i, 1.0, 0, 5e6)).collect();
        for count in counts(&candidates, 20_000) {
            assert!(count.abs_diff(5_000) < 600, "{count}");
        }
    }

    #[test]
    fn broken_inputs_still_pick() {
        fastrand::seed(0xe3a_0006);
        let candidates = [
            candidate(0, f64::NAN, 0, f64::NAN),
            candidate(1, 0.0, u32::MAX, f64::INFINITY),
            candidate(2, 1.0, 0, -5.0),
        ];
        let balancer = PeakEwmaBalancer::new();
        for _ in 0..100 {
            assert!(balancer.pick(&candidates, None).is_some_and(|i| i <= 2));
        }
    }

    /// Properties of the peak-EWMA estimate and of the power-of-two-choices balancer
    /// (docs/load-balancing.md, `peak_ewma`), on explicit instants.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Round-trip times from nothing to absurd.
        fn rtt() -> impl Strategy<Value = Duration> {
            prop_oneof![
                Just(Duration::ZERO),
                (0u64..5_000).prop_map(Duration::from_millis),
                any::<u64>().prop_map(Duration::from_nanos),
                Just(Duration::MAX),
            ]
        }

        fn decay() -> impl Strategy<Value = Duration> {
            prop_oneof![
                Just(Duration::ZERO),
                Just(Duration::from_nanos(1)),
                Just(Duration::from_secs(10)),
                (1u64..100_000).prop_map(Duration::from_millis),
                Just(Duration::from_secs(u64::MAX / 4)),
            ]
        }

        /// Observations at offsets (milliseconds, possibly before earlier ones) from a base.
        fn observations() -> impl Strategy<Value = Vec<(Duration, i64)>> {
            vec((rtt(), -20_000i64..200_000), 1..12)
        }

        fn at(base: Instant, offset_ms: i64) -> Instant {
            let shift = Duration::from_millis(offset_ms.unsigned_abs());
            if offset_ms < 0 {
                base - shift
            } else {
                base + shift
            }
        }

        /// What one of these costs, as docs/load-balancing.md defines it.
        fn cost_of(c: &Candidate) -> f64 {
            if c.latency_ns.is_finite() && c.latency_ns > 0.0 {
                c.latency_ns * (f64::from(c.in_flight) + 1.0) / c.weight
            } else {
                0.0
            }
        }

        fn weight() -> impl Strategy<Value = f64> {
            prop_oneof![(1u32..=4).prop_map(f64::from), 0.1f64..=10_000.0]
        }

        fn latency() -> impl Strategy<Value = f64> {
            prop_oneof![
                Just(0.0),
                (1u32..=5).prop_map(|ms| f64::from(ms) * 1e6),
                1.0f64..1e13,
                // The largest estimate a `Duration` can produce, and beyond.
                Just(Duration::MAX.as_nanos() as f64),
            ]
        }

        fn candidates(max: usize) -> impl Strategy<Value = Vec<Candidate>> {
            vec(
                (weight(), prop_oneof![0u32..4, any::<u32>()], latency()),
                2..=max,
            )
            .prop_map(|specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(index, (weight, in_flight, latency))| {
                        candidate(index * 2, weight, in_flight, latency)
                    })
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the samples (zero to `Duration::MAX`), their order in time and the decay
            /// period: the estimate is finite, never negative and never above the largest
            /// sample; a sample above the estimate replaces it at once; a faster one leaves it
            /// between the sample and the old estimate; and between samples the
            /// estimate fades by `exp(-elapsed / decay)`.
            #[test]
            fn the_estimate_stays_sane_peaks_at_once_and_only_fades(
                decay in decay(),
                observations in observations(),
                probes in vec(0i64..500_000, 1..6),
            ) {
                let base = Instant::now() + Duration::from_secs(100);
                let mut ewma = PeakEwma::new(decay);
                let mut largest = 0.0f64;
                let mut latest: Option<Instant> = None;
                for (rtt, offset) in observations {
                    let now = at(base, offset);
                    let sample = rtt.as_nanos() as f64;
                    // The estimate as of the previous sample, before any fading.
                    let before = latest.map_or(0.0, |t| ewma.estimate_ns(t));
                    ewma.observe(rtt, now);
                    largest = largest.max(sample);
                    let when = latest.map_or(now, |t| t.max(now));
                    latest = Some(when);
                    let after = ewma.estimate_ns(when);
                    prop_assert!(after.is_finite() && after >= 0.0, "{}", after);
                    prop_assert!(
                        after <= largest * (1.0 + 1e-12),
                        "{} above every sample {}", after, largest
                    );
                    if sample > before {
                        prop_assert_eq!(after, sample, "a peak replaces the estimate");
                    } else {
                        // Blending rounds: allow a part in 10^12.
                        prop_assert!(
                            after >= sample * (1.0 - 1e-12) && after <= before * (1.0 + 1e-12),
                            "{} not between {} and {}", after, sample, before
                        );
                    }
                }
                let mut probes: Vec<Instant> = probes
                    .into_iter()
                    .map(|p| latest.unwrap() + Duration::from_millis(p.unsigned_abs()))
                    .collect();
                probes.sort();
                let stored = ewma.estimate_ns(latest.unwrap());
                let mut previous = stored;
                for probe in probes {
                    let estimate = ewma.estimate_ns(probe);
                    prop_assert!(estimate.is_finite() && estimate >= 0.0);
                    prop_assert!(estimate <= previous, "{} grew to {}", previous, estimate);
                    // It fades by `exp(-elapsed / decay)` (not at all without a decay).
                    let elapsed = (probe - latest.unwrap()).as_nanos() as f64;
                    let decay_ns = decay.as_nanos() as f64;
                    let faded = if decay_ns > 0.0 {
                        stored * (-elapsed / decay_ns).exp()
                    } else {
                        stored
                    };
                    prop_assert!(
                        (estimate - faded).abs() <= faded * 1e-9,
                        "{} faded to {}, not {}", stored, estimate, faded
                    );
                    previous = estimate;
                }
            }

            /// Two candidates are always both drawn: the cheaper wins; at equal cost, the less
            /// loaded; only an exact tie of both may go either way. Costs are compared only
            /// when they differ by more than rounding (a part in 10^12).
            #[test]
            fn of_two_the_cheaper_wins(pair in candidates(2), seed in any::<u64>()) {
                fastrand::seed(seed);
                let (a, b) = (pair[0], pair[1]);
                let (cost_a, cost_b) = (cost_of(&a), cost_of(&b));
                let load = |c: &Candidate| (f64::from(c.in_flight) + 1.0) / c.weight;
                let apart = (cost_a - cost_b).abs() > 1e-12 * cost_a.max(cost_b);
                for _ in 0..4 {
                    let chosen = PeakEwmaBalancer::new().pick(&pair, None).unwrap();
                    prop_assert!(chosen == a.index || chosen == b.index);
                    if apart {
                        let cheaper = if cost_a < cost_b { a.index } else { b.index };
                        prop_assert_eq!(chosen, cheaper, "costs {} and {}", cost_a, cost_b);
                    } else if cost_a == cost_b && load(&a) != load(&b) {
                        let lighter = if load(&a) < load(&b) { a.index } else { b.index };
                        prop_assert_eq!(chosen, lighter);
                    }
                }
            }

            /// With distinct costs, the candidate ranked `r` (0 the cheapest) of `n` wins when
            /// it is one of the two drawn and the other is dearer: with probability
            /// `2 (n - 1 - r) / (n (n - 1))`. Over 3000 picks (seeded) each count is within
            /// `8 sigma + 10` of that (Bernstein: off by chance less than once in a million
            /// checks). The dearest never wins.
            #[test]
            fn shares_are_those_of_the_cheaper_of_two_random_draws(
                costs in vec(1u32..1_000_000, 2..7),
                seed in any::<u64>(),
            ) {
                let mut costs = costs;
                costs.sort_unstable();
                costs.dedup();
                prop_assume!(costs.len() >= 2);
                // Shuffle ranks over positions deterministically by the seed.
                fastrand::seed(seed);
                fastrand::shuffle(&mut costs);
                let n = costs.len();
                let candidates: Vec<Candidate> = costs
                    .iter()
                    .enumerate()
                    .map(|(index, &cost)| candidate(index, 1.0, 0, f64::from(cost)))
                    .collect();
                let picks = 3_000usize;
                let mut counts = vec![0usize; n];
                let balancer = PeakEwmaBalancer::new();
                for _ in 0..picks {
                    counts[balancer.pick(&candidates, None).unwrap()] += 1;
                }
                let mut sorted = costs.clone();
                sorted.sort_unstable();
                for (index, cost) in costs.iter().enumerate() {
                    let rank = sorted.iter().position(|c| c == cost).unwrap();
                    let p = 2.0 * (n - 1 - rank) as f64 / (n * (n - 1)) as f64;
                    let expected = picks as f64 * p;
                    let sigma = (expected * (1.0 - p)).sqrt();
                    prop_assert!(
                        (counts[index] as f64 - expected).abs() <= 8.0 * sigma + 10.0,
                        "costs {:?}: counts {:?}", costs, counts
                    );
                    if rank == n - 1 {
                        prop_assert_eq!(counts[index], 0, "the dearest won");
                    }
                }
            }

            /// Any floats at all (NaN, infinite, negative latencies and weights, `u32::MAX` in
            /// flight): a candidate is picked, never anything else.
            #[test]
            fn any_inputs_pick_a_candidate(
                specs in vec((any::<f64>(), any::<u32>(), prop_oneof![
                    any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(0.0),
                ]), 0..6),
                seed in any::<u64>(),
            ) {
                fastrand::seed(seed);
                let candidates: Vec<Candidate> = specs
                    .into_iter()
                    .enumerate()
                    .map(|(index, (w, n, l))| candidate(index, w, n, l))
                    .collect();
                for _ in 0..10 {
                    let chosen = PeakEwmaBalancer::new().pick(&candidates, None);
                    prop_assert_eq!(chosen.is_some(), !candidates.is_empty());
                    if let Some(chosen) = chosen {
                        prop_assert!(chosen < candidates.len());
                    }
                }
            }
        }
    }
}
