//! The minimum upload data rate: how long a client may take to send a request body, given how
//! much of it it has sent so far.
//!
//! The rule is Apache mod_reqtimeout's `body=GRACE,MinRate=RATE`: the client has `grace`, plus one
//! second for every `rate` bytes it has delivered. A client that starts fast banks credit for a
//! pause later; one that dribbles a byte every few seconds (the slow-POST attack, which a plain
//! pause timeout never catches) runs out of time and gets 408.
//!
//! Only time spent *waiting for the client* is counted: while the backend is not reading (its
//! socket is full, so the proxy stops pulling the body), the client cannot send either and is
//! not to blame. The caller marks when it starts and stops waiting; this module is the arithmetic,
//! free of I/O and clocks so it can be tested exactly.

use std::time::Duration;

use tokio::time::Instant;

/// The configured rule: at least `bytes_per_second` after a `grace` period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinUploadRate {
    /// Bytes per second the client must keep up, on average; never zero.
    pub bytes_per_second: u64,
    /// Time every body gets before the rate counts.
    pub grace: Duration,
}

impl MinUploadRate {
    /// The rule, or `None` when `bytes_per_second` is zero (the check is off).
    pub fn new(bytes_per_second: u64, grace: Duration) -> Option<Self> {
        (bytes_per_second > 0).then_some(MinUploadRate {
            bytes_per_second,
            grace,
        })
    }
}

/// One body's account: bytes delivered and time spent waiting for them.
#[derive(Debug, Clone)]
pub struct UploadPace {
    rule: MinUploadRate,
    received: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
}

impl UploadPace {
    /// A fresh account under `rule`.
    pub fn new(rule: MinUploadRate) -> Self {
        UploadPace {
            rule,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// Total waiting time the client has earned so far.
    fn allowed(&self) -> Duration {
        // Whole seconds and the remainder separately: exact, and no float rounding at the edge.
        let rate = self.rule.bytes_per_second;
        // The remainder in u128: `remainder * 10^9` overflows u64 for rates over 18 GB/s.
        let fraction = u128::from(self.received % rate) * 1_000_000_000 / u128::from(rate);
        let earned = Duration::from_secs(self.received / rate)
            + Duration::from_nanos(u64::try_from(fraction).unwrap_or(999_999_999));
        self.rule.grace.saturating_add(earned)
    }

    fn waited_until(&self, now: Instant) -> Duration {
        let current = self
            .waiting_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.waited.saturating_add(current)
    }

    /// The client delivered `bytes`: the wait (if any) ends, and the bytes earn more time.
    pub fn delivered(&mut self, bytes: u64, now: Instant) {
        self.waited = self.waited_until(now);
        self.waiting_since = None;
        self.received = self.received.saturating_add(bytes);
    }

    /// The proxy starts (or goes on) waiting for the client; returns the instant at which the
    /// client will have run out of time if nothing arrives.
    pub fn waiting(&mut self, now: Instant) -> Instant {
        let since = *self.waiting_since.get_or_insert(now);
        let left = self.allowed().saturating_sub(self.waited);
        // A deadline past what the clock can represent is as good as none: a year will do.
        since
            .checked_add(left)
            .unwrap_or_else(|| since + Duration::from_secs(365 * 24 * 3600))
    }

    /// Whether the client has used up its time as of `now` (at the instant [`waiting`] returned,
    /// it has: a timer set to that instant must find the client out of time).
    ///
    /// [`waiting`]: UploadPace::waiting
    pub fn too_slow(&self, now: Instant) -> bool {
        self.waited_until(now) >= self.allowed()
    }

    /// Bytes delivered so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rate: u64, grace_secs: u64) -> MinUploadRate {
        MinUploadRate::new(rate, Duration::from_secs(grace_secs)).expect("rate > 0")
    }

    #[test]
    fn a_zero_rate_turns_the_check_off() {
        assert_eq!(MinUploadRate::new(0, Duration::from_secs(5)), None);
    }

    #[test]
    fn a_silent_client_has_the_grace_period_and_no_more() {
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(500, 20));
        let deadline = pace.waiting(start);
        assert_eq!(deadline, start + Duration::from_secs(20));
        assert!(!pace.too_slow(start + Duration::from_millis(19_999)));
        assert!(pace.too_slow(deadline));
    }

    #[test]
    fn each_rate_worth_of_bytes_earns_a_second() {
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(500, 20));
        pace.waiting(start);
        pace.delivered(1000, start + Duration::from_secs(5));
        // 5 s used of 20 + 2 earned: 17 s left from now.
        let now = start + Duration::from_secs(5);
        assert_eq!(pace.waiting(now), now + Duration::from_secs(17));
        pace.delivered(250, now);
        // Half a rate's worth earns half a second.
        assert_eq!(pace.waiting(now), now + Duration::from_millis(17_500));
        assert_eq!(pace.received(), 1250);
    }

    #[test]
    fn a_dribbling_client_runs_out_of_time() {
        // One byte every 2 s never earns more than it spends at 500 B/s.
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(500, 20));
        let mut now = start;
        let mut sent = 0;
        loop {
            pace.waiting(now);
            now += Duration::from_secs(2);
            if pace.too_slow(now) {
                break;
            }
            pace.delivered(1, now);
            sent += 1;
            assert!(sent < 100, "the dribbling client was never caught");
        }
        assert!(sent >= 9, "caught too early, after {sent} bytes");
    }

    #[test]
    fn time_the_proxy_is_not_waiting_does_not_count() {
        // The backend holds the proxy back for a minute between two reads: not the client's fault.
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(500, 20));
        pace.waiting(start);
        pace.delivered(10, start + Duration::from_secs(1));
        let resumed = start + Duration::from_secs(61);
        let deadline = pace.waiting(resumed);
        assert!(deadline > resumed + Duration::from_secs(18));
        assert!(!pace.too_slow(resumed + Duration::from_secs(18)));
    }

    #[test]
    fn a_fast_start_banks_credit_for_a_pause() {
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(1024, 1));
        pace.waiting(start);
        pace.delivered(64 * 1024, start);
        // 1 s grace + 64 s earned: a 30 s pause is fine.
        assert!(!pace.too_slow(start + Duration::from_secs(30)));
        pace.waiting(start);
        assert!(!pace.too_slow(start + Duration::from_millis(64_999)));
        assert!(pace.too_slow(start + Duration::from_secs(65)));
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(1, u64::MAX / 4));
        pace.delivered(u64::MAX, start);
        pace.delivered(u64::MAX, start);
        assert!(!pace.too_slow(start + Duration::from_secs(1_000_000)));
        let _ = pace.waiting(start);
    }

    /// Regression (found by `the_pace_follows_the_exact_model`): the fraction of a second the
    /// bytes earn was computed as `remainder * 10^9` in u64, saturating above a rate of about
    /// 18 GB/s: at `min_upload_rate = "100GB"` half a rate's worth of bytes earned 184 ms
    /// instead of 500, and the client was cut off early.
    #[test]
    fn huge_rates_earn_exact_fractions() {
        let start = Instant::now();
        let mut pace = UploadPace::new(rule(100_000_000_000, 0));
        pace.delivered(50_000_000_000, start);
        assert_eq!(pace.waiting(start), start + Duration::from_millis(500));
    }

    /// Properties of the upload pace against an exact model (nanoseconds in `u128`): only
    /// time spent waiting for the client counts, each `rate` bytes earn a second on top of
    /// the grace, and the deadline `waiting` returns is the very instant the client runs out.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy)]
        enum Event {
            /// The proxy waits for the client (again).
            Wait,
            /// The client delivers so many bytes.
            Deliver(u64),
            /// Time passes, in nanoseconds.
            Pass(u64),
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                3 => Just(Event::Wait),
                3 => prop_oneof![0u64..10_000, 0u64..100_000_000, any::<u64>()].prop_map(Event::Deliver),
                4 => prop_oneof![0u64..5_000_000_000, 0u64..100_000_000_000, Just(86_400_000_000_000)]
                    .prop_map(Event::Pass),
            ]
        }

        const NS: u128 = 1_000_000_000;

        /// The client's account as the module doc words it.
        #[derive(Debug)]
        struct Model {
            rate: u128,
            grace_ns: u128,
            received: u64,
            waited_ns: u128,
            since: Option<Instant>,
        }

        impl Model {
            fn allowed_ns(&self) -> u128 {
                self.grace_ns + u128::from(self.received) * NS / self.rate
            }

            fn waited_ns(&self, now: Instant) -> u128 {
                self.waited_ns
                    + self
                        .since
                        .map_or(0, |since| now.saturating_duration_since(since).as_nanos())
            }
        }

        fn duration_of(ns: u128) -> Option<Duration> {
            Some(Duration::new(
                u64::try_from(ns / NS).ok()?,
                (ns % NS) as u32,
            ))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn the_pace_follows_the_exact_model(
                rate in prop_oneof![1u64..=1_000, 1u64..=10_000_000, any::<u64>().prop_map(|r| r.max(1))],
                grace_ms in prop_oneof![0u64..=60_000, 0u64..=3_155_760_000_000],
                events in vec(event(), 0..60),
            ) {
                let rule = MinUploadRate::new(rate, Duration::from_millis(grace_ms)).unwrap();
                let mut pace = UploadPace::new(rule);
                let mut model = Model {
                    rate: u128::from(rate),
                    grace_ns: u128::from(grace_ms) * 1_000_000,
                    received: 0,
                    waited_ns: 0,
                    since: None,
                };
                let mut now = Instant::now();
                for (step, event) in events.into_iter().enumerate() {
                    match event {
                        Event::Wait => {
                            let deadline = pace.waiting(now);
                            let since = *model.since.get_or_insert(now);
                            let left = model.allowed_ns().saturating_sub(model.waited_ns);
                            match duration_of(left).and_then(|left| since.checked_add(left)) {
                                Some(expected) => {
                                    prop_assert_eq!(deadline, expected, "step {}", step);
                                    // The deadline is the first instant the client is out.
                                    prop_assert!(pace.too_slow(deadline));
                                    if deadline > now {
                                        prop_assert!(!pace.too_slow(deadline - Duration::from_nanos(1)));
                                    }
                                }
                                // Beyond what the clock holds: a year stands in for never.
                                None => prop_assert!(deadline >= since + Duration::from_secs(365 * 24 * 3600)),
                            }
                        }
                        Event::Deliver(bytes) => {
                            pace.delivered(bytes, now);
                            model.waited_ns = model.waited_ns(now);
                            model.since = None;
                            model.received = model.received.saturating_add(bytes);
                        }
                        Event::Pass(ns) => now += Duration::from_nanos(ns),
                    }
                    prop_assert_eq!(pace.received(), model.received);
                    prop_assert_eq!(
                        pace.too_slow(now),
                        model.waited_ns(now) >= model.allowed_ns(),
                        "step {}: {:?}", step, model
                    );
                }
            }
        }
    }
}
