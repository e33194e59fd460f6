//! What Gatehouse knows about one backend while it runs: requests in flight, latency, active
//! health, passive ejection, drain. It lives in a [`BackendRegistry`] keyed by pool and address,
//! so a config reload that keeps a backend keeps what was learned about it.
//!
//! Decisions about health (rise/fall, ejection, back-off) are plain methods that take the time
//! as an argument, so they are unit-tested on explicit instants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::balance::PeakEwma;

/// How long a latency sample keeps its weight in the peak-EWMA estimate (linkerd's default).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Live state of one backend.
#[derive(Debug)]
pub struct BackendState {
    in_flight: AtomicU32,
    ejections_total: std::sync::atomic::AtomicU64,
    draining: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    latency: PeakEwma,
    /// Active health: `None` before the first check (or without checks).
    checked_up: Option<bool>,
    passes: u32,
    failures_in_row: u32,
    /// Passive: consecutive failed requests.
    request_failures: u32,
    ejected_until: Option<Instant>,
    /// Ejections since the back-off last reset.
    ejections: u32,
    /// When the backend last became available again (for slow start).
    available_since: Option<Instant>,
}

/// Whether a backend may be sent new requests, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// It may.
    Available,
    /// Active health checks failed.
    Down,
    /// Passive health checks ejected it until the given time.
    Ejected,
    /// An operator drained it.
    Draining,
}

/// What became of a request sent to a backend, for passive health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that does not count as a failure.
    Success,
    /// A connect error, reset, timeout or a failure status.
    Failure,
}

impl BackendState {
    fn new() -> Self {
        BackendState {
            in_flight: AtomicU32::new(0),
            ejections_total: std::sync::atomic::AtomicU64::new(0),
            draining: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                latency: PeakEwma::new(EWMA_DECAY),
                checked_up: None,
                passes: 0,
                failures_in_row: 0,
                request_failures: 0,
                ejected_until: None,
                ejections: 0,
                available_since: None,
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent field by field; a panic elsewhere must not stop balancing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight unless that would exceed `limit`.
    pub fn try_acquire(&self, limit: Option<u32>) -> bool {
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        match limit {
            Some(limit) if previous >= limit => {
                self.release();
                false
            }
            _ => true,
        }
    }

    /// Counts a request as finished.
    pub fn release(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether an operator drained the backend.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Drains (no new requests) or undrains the backend.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether the backend may take new requests at `now`.
    pub fn availability(&self, now: Instant) -> Availability {
        if self.is_draining() {
            return Availability::Draining;
        }
        let mut inner = self.inner();
        if inner.checked_up == Some(false) {
            return Availability::Down;
        }
        match inner.ejected_until {
            Some(until) if until > now => Availability::Ejected,
            Some(until) => {
                // The ejection is over: slow start counts from its end.
                inner.ejected_until = None;
                inner.available_since = Some(until);
                Availability::Available
            }
            None => Availability::Available,
        }
    }

    /// In one look (one lock): whether the backend is available at `now`, and if so its
    /// latency estimate (0 unless `with_latency`: decaying it costs an `exp` per backend and
    /// request, which only the latency balancer needs) and slow-start factor, for the balancer.
    pub fn eligibility(
        &self,
        window: Option<Duration>,
        now: Instant,
        with_latency: bool,
    ) -> Option<(f64, f64)> {
        if self.is_draining() {
            return None;
        }
        let mut inner = self.inner();
        if inner.checked_up == Some(false) {
            return None;
        }
        match inner.ejected_until {
            Some(until) if until > now => return None,
            Some(until) => {
                inner.ejected_until = None;
                inner.available_since = Some(until);
            }
            None => {}
        }
        let factor = slow_start(window, inner.available_since, now);
        let latency = if with_latency {
            inner.latency.estimate_ns(now)
        } else {
            0.0
        };
        Some((latency, factor))
    }

    /// Latency estimate in nanoseconds at `now`.
    pub fn latency_ns(&self, now: Instant) -> f64 {
        self.inner().latency.estimate_ns(now)
    }

    /// Records the time a backend took to send its response head.
    pub fn observe_latency(&self, rtt: Duration, now: Instant) {
        self.inner().latency.observe(rtt, now);
    }

    /// The share of its weight the backend gets at `now` while it slow-starts: from 10 % right
    /// after it became available to 100 % after `window`.
    pub fn slow_start_factor(&self, window: Option<Duration>, now: Instant) -> f64 {
        slow_start(window, self.inner().available_since, now)
    }

    /// Applies one active health check result; returns the new up/down state when it changed.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32, now: Instant) -> Option<bool> {
        let mut inner = self.inner();
        let before = inner.checked_up;
        if passed {
            inner.failures_in_row = 0;
            inner.passes = inner.passes.saturating_add(1);
        } else {
            inner.passes = 0;
            inner.failures_in_row = inner.failures_in_row.saturating_add(1);
        }
        let after = match before {
            // The first check decides at once: traffic must not wait for `rise` checks at start.
            None => passed,
            Some(false) => inner.passes >= rise.max(1),
            Some(true) => inner.failures_in_row < fall.max(1),
        };
        inner.checked_up = Some(after);
        if after && before == Some(false) {
            inner.available_since = Some(now);
            inner.request_failures = 0;
            // Coming back up by the active check ends an ejection the outage caused (as Envoy
            // does): the check is the better witness that the backend works again.
            inner.ejected_until = None;
        }
        (before != Some(after)).then_some(after)
    }

    /// Forgets the active health verdict (the pool's checks were removed).
    pub fn clear_check(&self) {
        let mut inner = self.inner();
        inner.checked_up = None;
        inner.passes = 0;
        inner.failures_in_row = 0;
    }

    /// Whether the active health check has run at least once.
    pub fn checked(&self) -> bool {
        self.inner().checked_up.is_some()
    }

    /// Records a request's outcome for passive health checking. Returns the ejection length when
    /// this outcome ejects the backend; `may_eject` says whether the pool's ejection cap allows
    /// one more.
    pub fn record_outcome(
        &self,
        outcome: Outcome,
        policy: &EjectionPolicy,
        may_eject: bool,
        now: Instant,
    ) -> Option<Duration> {
        let mut inner = self.inner();
        if let Some(until) = inner.ejected_until
            && until <= now
        {
            // The ejection is over: the backend counts as available again from its end.
            inner.ejected_until = None;
            inner.available_since = Some(until);
        }
        match outcome {
            Outcome::Success => {
                inner.request_failures = 0;
                // A backend that stayed in service for the longest ejection earns a fresh start.
                // Not while ejected: it is out of service, and a request that was in flight (or
                // sent while every backend was out) must not wipe the back-off.
                if inner.ejections > 0
                    && inner.ejected_until.is_none()
                    && inner
                        .available_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= policy.max)
                {
                    inner.ejections = 0;
                }
                None
            }
            Outcome::Failure => {
                if inner.ejected_until.is_some() {
                    // Failures while ejected (requests in flight at the ejection, or sent while
                    // every backend was out) are not counted: once the ejection ends it takes
                    // `consecutive_failures` new ones to eject the backend again.
                    return None;
                }
                inner.request_failures = inner.request_failures.saturating_add(1);
                let eject = policy.consecutive_failures > 0
                    && inner.request_failures >= policy.consecutive_failures
                    && may_eject;
                if !eject {
                    return None;
                }
                let length = policy.ejection_length(inner.ejections);
                self.ejections_total.fetch_add(1, Ordering::Relaxed);
                inner.ejections = inner.ejections.saturating_add(1);
                inner.ejected_until = Some(now + length);
                inner.request_failures = 0;
                Some(length)
            }
        }
    }

    /// Ejections since the process started.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Whether passive health checks hold the backend out at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.inner().ejected_until.is_some_and(|until| until > now)
    }

    /// A snapshot for the admin view.
    pub fn snapshot(&self, now: Instant) -> BackendSnapshot {
        let inner = self.inner();
        BackendSnapshot {
            in_flight: self.in_flight(),
            draining: self.is_draining(),
            health_checked: inner.checked_up,
            ejected_for_seconds: inner
                .ejected_until
                .filter(|until| *until > now)
                .map(|until| (until - now).as_secs_f64()),
            ejections: inner.ejections,
            latency_ms: inner.latency.estimate_ns(now) / 1e6,
        }
    }
}

fn slow_start(window: Option<Duration>, since: Option<Instant>, now: Instant) -> f64 {
    let (Some(window), Some(since)) = (window, since) else {
        return 1.0;
    };
    let elapsed = now.saturating_duration_since(since);
    if elapsed >= window || window.is_zero() {
        return 1.0;
    }
    (0.1 + 0.9 * elapsed.as_secs_f64() / window.as_secs_f64()).clamp(0.1, 1.0)
}

/// When and for how long passive health checks eject a backend.
#[derive(Debug, Clone)]
pub struct EjectionPolicy {
    /// Consecutive failures that eject; 0 never ejects.
    pub consecutive_failures: u32,
    /// First ejection's length.
    pub base: Duration,
    /// Longest ejection.
    pub max: Duration,
}

impl EjectionPolicy {
    /// Length of an ejection after `previous` ones: doubles each time, up to the maximum.
    pub fn ejection_length(&self, previous: u32) -> Duration {
        // Doubled step by step until the maximum: a fixed cap on the number of doublings
        // (2^20 once) stopped short of a long maximum.
        let mut length = self.base;
        for _ in 0..previous.min(128) {
            if length >= self.max {
                break;
            }
            length = length.saturating_mul(2);
        }
        length.min(self.max)
    }
}

/// A backend's state as the admin view shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendSnapshot {
    /// Requests in flight.
    pub in_flight: u32,
    /// Drained by an operator.
    pub draining: bool,
    /// Active health: `None` without checks (or before the first).
    pub health_checked: Option<bool>,
    /// Time left of the current ejection, in seconds.
    pub ejected_for_seconds: Option<f64>,
    /// Ejections since the back-off last reset.
    pub ejections: u32,
    /// Peak-EWMA latency in milliseconds.
    pub latency_ms: f64,
}

/// Backend states by pool name and address, shared by every generation.
///
/// Holds weak references: a backend's state lives as long as some generation's pool uses it,
/// and is picked up again by the next generation that names the same backend in the same pool.
#[derive(Debug)]
pub struct BackendRegistry {
    states: Mutex<HashMap<(String, String), Weak<BackendState>>>,
    sticky_secret: [u8; 32],
    rate_limits: crate::protect::rate_limit::RateLimitRegistry,
    caches: crate::cache::CacheRegistry,
}

impl Default for BackendRegistry {
    fn default() -> Self {
        BackendRegistry {
            states: Mutex::new(HashMap::new()),
            sticky_secret: std::array::from_fn(|_| fastrand::u8(..)),
            rate_limits: crate::protect::rate_limit::RateLimitRegistry::new(),
            caches: crate::cache::CacheRegistry::default(),
        }
    }
}

impl BackendRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key of sticky cookies for pools that set no `secret`: random, but the same for the
    /// whole process, so reloads keep sessions where they are.
    pub fn sticky_secret(&self) -> &[u8] {
        &self.sticky_secret
    }

    /// The HTTP cache, kept across reloads that keep its size.
    pub fn caches(&self) -> &crate::cache::CacheRegistry {
        &self.caches
    }

    /// Rate limiters by route, kept across reloads that keep a route's limit.
    pub fn rate_limits(&self) -> &crate::protect::rate_limit::RateLimitRegistry {
        &self.rate_limits
    }

    /// The state of `address` in `pool`: the existing one if a live generation uses it, else new.
    pub fn state_for(&self, pool: &str, address: &str) -> Arc<BackendState> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.retain(|_, state| state.strong_count() > 0);
        let key = (pool.to_owned(), address.to_owned());
        if let Some(state) = states.get(&key).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(BackendState::new());
        states.insert(key, Arc::downgrade(&state));
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EjectionPolicy {
        EjectionPolicy {
            consecutive_failures: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_first_check_decides_then_rise_and_fall_apply() {
        let state = BackendState::new();
        let now = Instant::now();
        assert_eq!(state.availability(now), Availability::Available);
        assert_eq!(state.record_check(false, 2, 3, now), Some(false));
        assert_eq!(state.availability(now), Availability::Down);
        assert_eq!(state.record_check(true, 2, 3, now), None);
        assert_eq!(state.record_check(true, 2, 3, now), Some(true));
        assert_eq!(state.record_check(false, 2, 3, now), None);
        assert_eq!(state.record_check(false, 2, 3, now), None);
        assert_eq!(state.record_check(true, 2, 3, now), None);
        for _ in 0..2 {
            assert_eq!(state.record_check(false, 2, 3, now), None);
        }
        assert_eq!(state.record_check(false, 2, 3, now), Some(false));
    }

    #[test]
    fn consecutive_failures_eject_with_a_doubling_back_off() {
        let state = BackendState::new();
        let policy = policy();
        let mut now = Instant::now();
        assert_eq!(
            state.record_outcome(Outcome::Failure, &policy, true, now),
            None
        );
        assert_eq!(
            state.record_outcome(Outcome::Success, &policy, true, now),
            None
        );
        for _ in 0..2 {
            assert_eq!(
                state.record_outcome(Outcome::Failure, &policy, true, now),
                None
            );
        }
        assert_eq!(
            state.record_outcome(Outcome::Failure, &policy, true, now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(state.availability(now), Availability::Ejected);
        now += Duration::from_secs(11);
        assert_eq!(state.availability(now), Availability::Available);
        for _ in 0..2 {
            state.record_outcome(Outcome::Failure, &policy, true, now);
        }
        assert_eq!(
            state.record_outcome(Outcome::Failure, &policy, true, now),
            Some(Duration::from_secs(20))
        );
        now += Duration::from_secs(21);
        for _ in 0..5 {
            for _ in 0..2 {
                state.record_outcome(Outcome::Failure, &policy, true, now);
            }
            let length = state
                .record_outcome(Outcome::Failure, &policy, true, now)
                .expect("ejected");
            assert!(length <= Duration::from_secs(60));
            now += length + Duration::from_secs(1);
        }
    }

    #[test]
    fn the_back_off_resets_after_a_long_healthy_stretch() {
        let state = BackendState::new();
        let policy = policy();
        let mut now = Instant::now();
        for _ in 0..3 {
            state.record_outcome(Outcome::Failure, &policy, true, now);
        }
        now += Duration::from_secs(75);
        assert_eq!(
            state.record_outcome(Outcome::Success, &policy, true, now),
            None
        );
        for _ in 0..2 {
            state.record_outcome(Outcome::Failure, &policy, true, now);
        }
        assert_eq!(
            state.record_outcome(Outcome::Failure, &policy, true, now),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn the_pool_cap_can_forbid_an_ejection() {
        let state = BackendState::new();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                state.record_outcome(Outcome::Failure, &policy(), false, now),
                None
            );
        }
        assert_eq!(state.availability(now), Availability::Available);
    }

    #[test]
    fn drained_backends_are_unavailable_and_the_limit_holds() {
        let state = BackendState::new();
        state.set_draining(true);
        assert_eq!(state.availability(Instant::now()), Availability::Draining);
        assert!(state.try_acquire(Some(1)));
        assert!(!state.try_acquire(Some(1)));
        assert_eq!(state.in_flight(), 1);
        state.release();
        state.release();
        assert_eq!(state.in_flight(), 0);
    }

    #[test]
    fn an_active_check_bringing_a_backend_up_ends_its_ejection() {
        let state = BackendState::new();
        let now = Instant::now();
        state.record_check(true, 1, 1, now);
        for _ in 0..3 {
            state.record_outcome(Outcome::Failure, &policy(), true, now);
        }
        assert_eq!(state.availability(now), Availability::Ejected);
        // Passing checks while up do not lift it...
        state.record_check(true, 1, 1, now);
        assert_eq!(state.availability(now), Availability::Ejected);
        // ...coming back up from down does.
        state.record_check(false, 1, 1, now);
        state.record_check(true, 1, 1, now);
        assert_eq!(state.availability(now), Availability::Available);
    }

    #[test]
    fn slow_start_ramps_from_a_tenth_to_full_weight() {
        let state = BackendState::new();
        let now = Instant::now();
        state.record_check(false, 1, 1, now);
        state.record_check(true, 1, 1, now);
        let window = Some(Duration::from_secs(10));
        assert!((state.slow_start_factor(window, now) - 0.1).abs() < 1e-9);
        let half = state.slow_start_factor(window, now + Duration::from_secs(5));
        assert!((half - 0.55).abs() < 1e-9);
        assert_eq!(
            state.slow_start_factor(window, now + Duration::from_secs(10)),
            1.0
        );
        assert_eq!(state.slow_start_factor(None, now), 1.0);
    }

    #[test]
    fn the_registry_hands_back_live_state_and_forgets_dropped_state() {
        let registry = BackendRegistry::new();
        let a = registry.state_for("app", "127.0.0.1:1");
        a.set_draining(true);
        let again = registry.state_for("app", "127.0.0.1:1");
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(
            &a,
            &registry.state_for("other", "127.0.0.1:1")
        ));
        drop((a, again));
        assert!(!registry.state_for("app", "127.0.0.1:1").is_draining());
    }

    /// Regression (found by `ejections_double_up_to_the_maximum`): the doubling stopped after
    /// 20 ejections (the factor was capped at 2^20), so with `ejection_time = "1s"` and
    /// `max_ejection_time = "30d"` ejections stayed at 12 days 3 hours (2^20 s) instead of
    /// doubling on to 30 days as documented.
    #[test]
    fn ejections_keep_doubling_past_twenty() {
        let policy = EjectionPolicy {
            consecutive_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30 * 24 * 3600),
        };
        assert_eq!(policy.ejection_length(20), Duration::from_secs(1 << 20));
        assert_eq!(policy.ejection_length(21), Duration::from_secs(1 << 21));
        assert_eq!(policy.ejection_length(22), policy.max);
        assert_eq!(policy.ejection_length(u32::MAX), policy.max);
    }

    /// Regression (found by `health_follows_the_documented_rules`): failures recorded while the
    /// backend was ejected (requests in flight when it was ejected, or sent to it while every
    /// backend was out) counted towards the next ejection, so once the ejection ended a
    /// single new failure ejected it again, with the doubled time; the doc says it takes
    /// `consecutive_failures` new ones.
    #[test]
    fn failures_while_ejected_do_not_count_towards_the_next_ejection() {
        let state = BackendState::new();
        let policy = policy();
        let start = Instant::now();
        for _ in 0..3 {
            state.record_outcome(Outcome::Failure, &policy, true, start);
        }
        assert!(state.is_ejected(start));
        let during = start + Duration::from_secs(5);
        for _ in 0..3 {
            assert_eq!(
                state.record_outcome(Outcome::Failure, &policy, true, during),
                None
            );
        }
        let after = start + Duration::from_secs(11);
        for _ in 0..2 {
            assert_eq!(
                state.record_outcome(Outcome::Failure, &policy, true, after),
                None
            );
        }
        assert_eq!(state.availability(after), Availability::Available);
        assert_eq!(
            state.record_outcome(Outcome::Failure, &policy, true, after),
            Some(Duration::from_secs(20))
        );
    }

    /// Regression (found by `health_follows_the_documented_rules`): a success recorded while
    /// the backend was ejected reset the back-off when it had come back `max_ejection_time`
    /// before, although it was out of service: a backend flapping at the longest ejection
    /// went back to the shortest one because a request in flight succeeded during it.
    #[test]
    fn a_success_while_ejected_does_not_reset_the_back_off() {
        let state = BackendState::new();
        let policy = policy();
        let start = Instant::now();
        let eject = |at: u64| {
            let now = start + Duration::from_millis(at);
            for _ in 0..2 {
                assert_eq!(
                    state.record_outcome(Outcome::Failure, &policy, true, now),
                    None
                );
            }
            state.record_outcome(Outcome::Failure, &policy, true, now)
        };
        assert_eq!(eject(0), Some(Duration::from_secs(10)));
        assert_eq!(eject(11_000), Some(Duration::from_secs(20)));
        assert_eq!(eject(32_000), Some(Duration::from_secs(40)));
        // Back at 72 s, ejected at 73 s until 133 s.
        assert_eq!(eject(73_000), Some(Duration::from_secs(60)));
        let during = start + Duration::from_millis(132_500);
        assert!(state.is_ejected(during));
        state.record_outcome(Outcome::Success, &policy, true, during);
        assert_eq!(eject(134_000), Some(Duration::from_secs(60)));
    }

    /// Properties of the live backend state (docs/load-balancing.md, "Passive health checks"
    /// and "Circuit breaking"), against models of what the doc says, on explicit instants.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        const SLOW_START: Duration = Duration::from_secs(30);

        #[derive(Debug, Clone, Copy)]
        enum Event {
            Failure {
                may_eject: bool,
            },
            Success,
            /// Time passes, in milliseconds.
            Wait(u64),
            /// An active health check (`rise = fall = 1`).
            Check(bool),
            Drain(bool),
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                6 => prop::bool::weighted(0.9).prop_map(|may_eject| Event::Failure { may_eject }),
                2 => Just(Event::Success),
                3 => prop_oneof![0u64..2_000, 0u64..120_000, 0u64..700_000].prop_map(Event::Wait),
                1 => any::<bool>().prop_map(Event::Check),
                1 => prop::bool::weighted(0.3).prop_map(Event::Drain),
            ]
        }

        fn ejection_policy() -> impl Strategy<Value = EjectionPolicy> {
            (0u32..=4, 1u64..=20_000, 1u64..=40).prop_map(|(consecutive_failures, base, times)| {
                EjectionPolicy {
                    consecutive_failures,
                    base: Duration::from_millis(base),
                    max: Duration::from_millis(base * times),
                }
            })
        }

        /// The doc's ejection length: `base` doubled once per earlier ejection, at most `max`.
        fn documented_length(policy: &EjectionPolicy, previous: u32) -> Duration {
            let mut length = policy.base;
            for _ in 0..previous {
                if length >= policy.max {
                    break;
                }
                length = length.saturating_mul(2);
            }
            length.min(policy.max)
        }

        /// Passive and active health as docs/load-balancing.md tells them.
        #[derive(Debug, Default)]
        struct Model {
            /// Failed requests in a row, since the backend was last in service.
            failures: u32,
            ejected_until: Option<Instant>,
            /// Ejections since the back-off last reset.
            ejections: u32,
            /// When it last came back (an ejection ended, or a check brought it up).
            back: Option<Instant>,
            up: Option<bool>,
            draining: bool,
        }

        impl Model {
            fn settle(&mut self, now: Instant) {
                if let Some(until) = self.ejected_until
                    && until <= now
                {
                    self.ejected_until = None;
                    self.back = Some(until);
                }
            }

            fn available(&self) -> Availability {
                if self.draining {
                    Availability::Draining
                } else if self.up == Some(false) {
                    Availability::Down
                } else if self.ejected_until.is_some() {
                    Availability::Ejected
                } else {
                    Availability::Available
                }
            }

            fn outcome(
                &mut self,
                failed: bool,
                may_eject: bool,
                policy: &EjectionPolicy,
                now: Instant,
            ) -> Option<Duration> {
                self.settle(now);
                let ejected = self.ejected_until.is_some();
                if !failed {
                    self.failures = 0;
                    // "The doubling resets when the backend succeeds after staying in service
                    // for max_ejection_time since it last came back."
                    if !ejected
                        && self
                            .back
                            .is_some_and(|back| now.saturating_duration_since(back) >= policy.max)
                    {
                        self.ejections = 0;
                    }
                    return None;
                }
                if ejected {
                    // Out of service: "it takes consecutive_failures new failures in a row to
                    // eject it again" once the ejection ends.
                    return None;
                }
                self.failures += 1;
                if policy.consecutive_failures == 0
                    || self.failures < policy.consecutive_failures
                    || !may_eject
                {
                    return None;
                }
                let length = documented_length(policy, self.ejections);
                self.ejections += 1;
                self.ejected_until = Some(now + length);
                self.failures = 0;
                Some(length)
            }

            fn check(&mut self, passed: bool, now: Instant) {
                let before = self.up;
                self.up = Some(passed);
                if passed && before == Some(false) {
                    self.back = Some(now);
                    self.failures = 0;
                    self.ejected_until = None;
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// An ejection lasts `base` doubled once per earlier ejection, capped at `max`,
            /// for any number of earlier ejections and any lengths a config may set (up to
            /// 100 years).
            #[test]
            fn ejections_double_up_to_the_maximum(
                base_ms in prop_oneof![1u64..=1_000, 1u64..=3_155_760_000_000],
                max_ms in prop_oneof![1u64..=1_000_000, 1u64..=3_155_760_000_000],
                previous in prop_oneof![0u32..64, any::<u32>()],
            ) {
                let policy = EjectionPolicy {
                    consecutive_failures: 5,
                    base: Duration::from_millis(base_ms.min(max_ms)),
                    max: Duration::from_millis(max_ms),
                };
                let length = policy.ejection_length(previous);
                prop_assert_eq!(length, documented_length(&policy, previous));
                prop_assert!(length >= policy.base && length <= policy.max);
                if previous > 0 {
                    let shorter = policy.ejection_length(previous - 1);
                    prop_assert!(length == policy.max || length == shorter * 2);
                }
            }

            /// Under any sequence of failures, successes, health checks, drains and waits,
            /// ejections happen exactly when the doc says and last as long as it says; the
            /// backend is offered to the balancer (`eligibility`) exactly when it is
            /// available, never while ejected, down or drained; and its slow start counts
            /// from when it came back.
            #[test]
            fn health_follows_the_documented_rules(
                policy in ejection_policy(),
                events in vec(event(), 0..80),
            ) {
                let state = BackendState::new();
                let mut model = Model::default();
                let mut now = Instant::now();
                for (step, event) in events.into_iter().enumerate() {
                    match event {
                        Event::Failure { may_eject } => {
                            let got = state.record_outcome(Outcome::Failure, &policy, may_eject, now);
                            let want = model.outcome(true, may_eject, &policy, now);
                            prop_assert_eq!(got, want, "step {}: {:?}", step, model);
                        }
                        Event::Success => {
                            prop_assert_eq!(state.record_outcome(Outcome::Success, &policy, true, now), None);
                            model.outcome(false, true, &policy, now);
                        }
                        Event::Wait(ms) => now += Duration::from_millis(ms),
                        Event::Check(passed) => {
                            state.record_check(passed, 1, 1, now);
                            model.check(passed, now);
                        }
                        Event::Drain(on) => {
                            state.set_draining(on);
                            model.draining = on;
                        }
                    }
                    model.settle(now);
                    let availability = state.availability(now);
                    prop_assert_eq!(availability, model.available(), "step {}: {:?}", step, model);
                    prop_assert_eq!(state.is_ejected(now), model.ejected_until.is_some());
                    let eligible = state.eligibility(Some(SLOW_START), now, true);
                    prop_assert_eq!(eligible.is_some(), availability == Availability::Available);
                    if let Some((latency, factor)) = eligible {
                        prop_assert_eq!(latency, 0.0);
                        let expected = model.back.map_or(1.0, |back| {
                            let elapsed = now.saturating_duration_since(back);
                            if elapsed >= SLOW_START {
                                1.0
                            } else {
                                0.1 + 0.9 * elapsed.as_secs_f64() / SLOW_START.as_secs_f64()
                            }
                        });
                        prop_assert!((factor - expected).abs() < 1e-9, "{} != {}", factor, expected);
                    }
                    prop_assert_eq!(state.snapshot(now).ejections, model.ejections);
                }
            }

            /// Requests in flight are a plain counter: an acquire under the limit counts one,
            /// at the limit it is refused and counts nothing, a release takes one off and never
            /// goes below zero.
            #[test]
            fn in_flight_counts_exactly_and_the_limit_is_exact(
                limit in prop::option::of(0u32..5),
                events in vec(any::<bool>(), 0..60),
            ) {
                let state = BackendState::new();
                let mut count = 0u32;
                for acquire in events {
                    if acquire {
                        let allowed = limit.is_none_or(|limit| count < limit);
                        prop_assert_eq!(state.try_acquire(limit), allowed);
                        if allowed {
                            count += 1;
                        }
                    } else {
                        state.release();
                        count = count.saturating_sub(1);
                    }
                    prop_assert_eq!(state.in_flight(), count);
                }
            }
        }
    }
}
