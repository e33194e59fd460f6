//! When a failed request may be tried again on another backend, and the budget that keeps
//! retries from multiplying an outage.
//!
//! A request that never reached a backend (connect failure) is always safe to retry. One that
//! may have reached it is retried only when repeating it is harmless (an idempotent method, or
//! the operator said so) and its body can be sent again. The budget, as in Finagle and linkerd,
//! lets retries add at most a fixed share to the traffic plus a small floor per second, so when
//! every backend fails, retries do not triple the load on them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use crate::config::RetrySettings;

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No connection: the request never reached the backend.
    Connect,
    /// The connection failed or timed out after the request was (maybe) sent.
    AfterSend,
    /// The backend answered with a status the pool retries.
    Status(u16),
}

/// A pool's retry rules.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Most tries of one request, the first included.
    pub tries: u32,
    /// Statuses that make an idempotent request be tried elsewhere.
    pub statuses: Vec<u16>,
    /// Retry non-idempotent requests after a send failure or a retried status too.
    pub non_idempotent: bool,
    /// Bodies with a declared length up to this are held in memory so they can be resent.
    pub buffer_body: u64,
    budget: RetryBudget,
}

impl RetryPolicy {
    /// The policy of a pool's `retry` settings.
    pub fn new(settings: &RetrySettings, now: Instant) -> Self {
        RetryPolicy {
            tries: settings.tries.max(1),
            statuses: settings.statuses.clone(),
            non_idempotent: settings.non_idempotent,
            buffer_body: settings.buffer_body.0,
            budget: RetryBudget::new(
                f64::from(settings.budget_percent) / 100.0,
                settings.min_retries_per_second,
                now,
            ),
        }
    }

    /// Whether the pool retries responses with `status`.
    pub fn retries_status(&self, status: u16) -> bool {
        self.tries > 1 && self.statuses.contains(&status)
    }

    /// Whether `method` may be repeated after it may have reached a backend.
    pub fn may_repeat(&self, method: &Method) -> bool {
        self.non_idempotent || is_idempotent(method)
    }

    /// Counts a new request (not a retry) towards the budget.
    pub fn on_request(&self, now: Instant) {
        self.budget.deposit(now);
    }

    /// Whether attempt number `attempt` (1 for the first), which failed with `failure`, is
    /// tried again. `body_available` says whether the body can still be sent. Spends budget
    /// when the answer is yes.
    pub fn should_retry(
        &self,
        attempt: u32,
        failure: AttemptFailure,
        method: &Method,
        body_available: bool,
        now: Instant,
    ) -> bool {
        if attempt >= self.tries || !body_available {
            return false;
        }
        let allowed = match failure {
            AttemptFailure::Connect => true,
            AttemptFailure::AfterSend => self.may_repeat(method),
            AttemptFailure::Status(status) => {
                self.statuses.contains(&status) && self.may_repeat(method)
            }
        };
        allowed && self.budget.withdraw(now)
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Tokens for retries: each request deposits `ratio`, each retry takes one; when none are left,
/// a floor of `min_per_second` retries per second still passes (so a quiet pool can retry).
///
/// Tokens are counted in thousandths so that, say, 100 requests at 20 % earn exactly 20 retries.
#[derive(Debug)]
struct RetryBudget {
    /// Thousandths of a retry earned per request.
    deposit: u64,
    /// Retries per second the floor allows.
    min_per_second: u64,
    /// Thousandths of a retry earned by requests.
    tokens: AtomicU64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    /// Thousandths of a retry, from the floor.
    floor_tokens: u64,
    refilled: Instant,
}

/// One retry, in thousandths.
const RETRY: u64 = 1000;
/// Retries saved up in quiet times may not all burst out at once.
const MAX_SAVED: u64 = 100 * RETRY;

impl RetryBudget {
    fn new(ratio: f64, min_per_second: u32, now: Instant) -> Self {
        let min_per_second = u64::from(min_per_second);
        RetryBudget {
            // Rounded to thousandths, then exact: 20 % is 200 per request.
            deposit: (ratio.clamp(0.0, 100.0) * RETRY as f64).round() as u64,
            min_per_second,
            tokens: AtomicU64::new(0),
            state: Mutex::new(BudgetState {
                floor_tokens: min_per_second * RETRY,
                refilled: now,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deposit(&self, _now: Instant) {
        // On every request: a lock-free add, capped.
        if self.deposit > 0 {
            let _ = self
                .tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                    (tokens < MAX_SAVED).then(|| (tokens + self.deposit).min(MAX_SAVED))
                });
        }
    }

    fn withdraw(&self, now: Instant) -> bool {
        let mut state = self.state();
        let elapsed_ms = u64::try_from(now.saturating_duration_since(state.refilled).as_millis())
            .unwrap_or(u64::MAX);
        if elapsed_ms > 0 {
            // Advance by the whole milliseconds counted, not to `now`: the fraction left over
            // counts towards the next refill. (Moving to `now` dropped up to a millisecond per
            // call, so retries asked for every 1.5 ms got two thirds of the floor.)
            state.refilled = state
                .refilled
                .checked_add(Duration::from_millis(elapsed_ms))
                .map_or(now, |refilled| refilled.min(now));
            let earned = elapsed_ms.saturating_mul(self.min_per_second);
            state.floor_tokens = state
                .floor_tokens
                .saturating_add(earned)
                .min(self.min_per_second * RETRY);
        }
        let earned = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                tokens.checked_sub(RETRY)
            })
            .is_ok();
        if earned {
            true
        } else if state.floor_tokens >= RETRY {
            state.floor_tokens -= RETRY;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy_at(budget_percent: u32, min_per_second: u32, now: Instant) -> RetryPolicy {
        let settings = RetrySettings {
            budget_percent,
            min_retries_per_second: min_per_second,
            ..RetrySettings::default()
        };
        RetryPolicy::new(&settings, now)
    }

    fn policy(budget_percent: u32, min_per_second: u32) -> RetryPolicy {
        policy_at(budget_percent, min_per_second, Instant::now())
    }

    #[test]
    fn connect_failures_retry_any_method_others_only_idempotent_ones() {
        let p = policy(100, 100);
        let now = Instant::now();
        assert!(p.should_retry(1, AttemptFailure::Connect, &Method::POST, true, now));
        assert!(!p.should_retry(1, AttemptFailure::AfterSend, &Method::POST, true, now));
        assert!(p.should_retry(1, AttemptFailure::AfterSend, &Method::GET, true, now));
        assert!(p.should_retry(1, AttemptFailure::Status(503), &Method::PUT, true, now));
        assert!(!p.should_retry(1, AttemptFailure::Status(500), &Method::GET, true, now));
        assert!(!p.should_retry(1, AttemptFailure::Status(503), &Method::PATCH, true, now));
    }

    #[test]
    fn tries_and_body_availability_bound_retries() {
        let p = policy(100, 100);
        let now = Instant::now();
        assert!(p.should_retry(2, AttemptFailure::Connect, &Method::GET, true, now));
        assert!(!p.should_retry(3, AttemptFailure::Connect, &Method::GET, true, now));
        assert!(!p.should_retry(1, AttemptFailure::Connect, &Method::GET, false, now));
    }

    #[test]
    fn non_idempotent_retries_when_configured() {
        let settings = RetrySettings {
            non_idempotent: true,
            ..RetrySettings::default()
        };
        let p = RetryPolicy::new(&settings, Instant::now());
        assert!(p.should_retry(
            1,
            AttemptFailure::AfterSend,
            &Method::POST,
            true,
            Instant::now()
        ));
    }

    #[test]
    fn the_budget_allows_its_share_plus_the_floor() {
        let start = Instant::now();
        let p = policy_at(20, 2, start);
        // The floor: two retries in the first second with no traffic at all.
        assert!(p.should_retry(1, AttemptFailure::Connect, &Method::GET, true, start));
        assert!(p.should_retry(1, AttemptFailure::Connect, &Method::GET, true, start));
        assert!(!p.should_retry(1, AttemptFailure::Connect, &Method::GET, true, start));
        // 100 requests earn 20 retries.
        for _ in 0..100 {
            p.on_request(start);
        }
        let granted = (0..50)
            .filter(|_| p.should_retry(1, AttemptFailure::Connect, &Method::GET, true, start))
            .count();
        assert_eq!(granted, 20);
        // A second later the floor is back.
        let later = start + Duration::from_secs(1);
        let granted = (0..10)
            .filter(|_| p.should_retry(1, AttemptFailure::Connect, &Method::GET, true, later))
            .count();
        assert_eq!(granted, 2);
    }

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    /// Regression (found by `the_budget_grants_what_the_documented_budget_allows`): the floor
    /// refill moved its clock to the time of each retry asked for, dropping the fraction of a
    /// millisecond not yet counted, so retries asked for every 1.5 ms earned 1 ms of floor per
    /// 1.5 ms: 76 retries in 10 s at `min_retries_per_second = 10` instead of 109 (10 at the
    /// start, then 10 per second, counted to the millisecond).
    #[test]
    fn frequent_retries_get_the_whole_floor() {
        let start = Instant::now();
        let p = policy_at(0, 10, start);
        let granted = (1..=6_666u32)
            .filter(|&k| {
                let now = start + Duration::from_micros(1_500) * k;
                p.should_retry(1, AttemptFailure::Connect, &Method::GET, true, now)
            })
            .count();
        assert_eq!(granted, 109);
    }

    /// Properties of the retry rules and budget (docs/load-balancing.md, "Retries"), on
    /// explicit instants.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy)]
        enum Event {
            /// A new request.
            Request,
            /// A retry asked for (a connect failure of a GET, so only the budget decides).
            Retry,
            /// Time passes, in nanoseconds.
            Wait(u64),
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                3 => Just(Event::Request),
                3 => Just(Event::Retry),
                2 => prop_oneof![
                    0u64..3_000_000,
                    Just(1_500_000),
                    Just(999_999),
                    0u64..2_000_000_000,
                    Just(u64::MAX / 2),
                ]
                .prop_map(Event::Wait),
            ]
        }

        /// The budget as docs/load-balancing.md words it, in thousandths of a retry: each
        /// request earns `budget_percent / 100` of a retry, at most 100 are saved, a retry
        /// spends one; without savings a floor bucket of `min_retries_per_second` (full at the
        /// start) passes retries, refilled at that rate (to the millisecond) up to that much.
        struct Model {
            deposit: u128,
            min: u128,
            saved: u128,
            floor: u128,
            /// Time not yet turned into floor tokens, in nanoseconds.
            pending_ns: u128,
        }

        impl Model {
            fn new(percent: u32, min: u32) -> Self {
                let min = u128::from(min);
                Model {
                    deposit: u128::from(percent.min(10_000)) * 10,
                    min,
                    saved: 0,
                    floor: min * 1000,
                    pending_ns: 0,
                }
            }

            fn request(&mut self) {
                if self.saved < 100_000 {
                    self.saved = (self.saved + self.deposit).min(100_000);
                }
            }

            fn wait(&mut self, ns: u64) {
                self.pending_ns += u128::from(ns);
            }

            fn retry(&mut self) -> bool {
                let ms = self.pending_ns / 1_000_000;
                self.pending_ns %= 1_000_000;
                self.floor = (self.floor + ms * self.min).min(self.min * 1000);
                if self.saved >= 1000 {
                    self.saved -= 1000;
                    true
                } else if self.floor >= 1000 {
                    self.floor -= 1000;
                    true
                } else {
                    false
                }
            }
        }

        fn policy(percent: u32, min: u32, now: Instant) -> RetryPolicy {
            let settings = RetrySettings {
                budget_percent: percent,
                min_retries_per_second: min,
                ..RetrySettings::default()
            };
            RetryPolicy::new(&settings, now)
        }

        fn method() -> impl Strategy<Value = Method> {
            prop::sample::select(vec![
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
                Method::TRACE,
                Method::POST,
                Method::PATCH,
                Method::CONNECT,
            ])
        }

        fn failure() -> impl Strategy<Value = AttemptFailure> {
            prop_oneof![
                Just(AttemptFailure::Connect),
                Just(AttemptFailure::AfterSend),
                prop::sample::select(vec![200u16, 500, 502, 503, 504, 429])
                    .prop_map(AttemptFailure::Status),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Under any sequence of requests, retries and waits (sub-millisecond to
            /// centuries), each retry is granted exactly when the documented budget allows it,
            /// and the counters stay within their caps (100 retries saved, one second of
            /// floor): nothing overflows or goes negative.
            #[test]
            fn the_budget_grants_what_the_documented_budget_allows(
                percent in prop_oneof![0u32..=100, 0u32..=1000],
                min in prop_oneof![0u32..=20, 0u32..=5_000, Just(u32::MAX)],
                events in vec(event(), 0..120),
            ) {
                let mut now = Instant::now();
                let policy = policy(percent, min, now);
                let mut model = Model::new(percent, min);
                for (step, event) in events.into_iter().enumerate() {
                    match event {
                        Event::Request => {
                            policy.on_request(now);
                            model.request();
                        }
                        Event::Retry => {
                            let granted = policy.should_retry(
                                1,
                                AttemptFailure::Connect,
                                &Method::GET,
                                true,
                                now,
                            );
                            prop_assert_eq!(granted, model.retry(), "step {}", step);
                            // The floor bucket holds what the model's does, to the thousandth.
                            prop_assert_eq!(
                                u128::from(policy.budget.state().floor_tokens),
                                model.floor,
                                "floor at step {}", step
                            );
                        }
                        Event::Wait(ns) => {
                            now += Duration::from_nanos(ns);
                            model.wait(ns);
                        }
                    }
                    let budget = &policy.budget;
                    prop_assert!(budget.tokens.load(Ordering::Relaxed) <= MAX_SAVED);
                    prop_assert!(budget.state().floor_tokens <= u64::from(min) * RETRY);
                }
            }

            /// A retry is granted exactly when tries are left, the body can be sent again, and
            /// the failure allows it (connect failures for every method, other failures and
            /// the configured statuses for idempotent methods or with `non_idempotent`); a
            /// request refused by these rules spends no budget.
            #[test]
            fn retries_follow_the_rules_and_refusals_spend_nothing(
                tries in 1u32..=10,
                non_idempotent in any::<bool>(),
                floor in 0u32..4,
                asks in vec((0u32..12, failure(), method(), any::<bool>()), 1..30),
            ) {
                let now = Instant::now();
                let settings = RetrySettings {
                    tries,
                    non_idempotent,
                    budget_percent: 0,
                    min_retries_per_second: floor,
                    ..RetrySettings::default()
                };
                let policy = RetryPolicy::new(&settings, now);
                let mut left = floor;
                for (attempt, failure, method, body) in asks {
                    let repeatable = non_idempotent
                        || matches!(
                            method,
                            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
                                | Method::OPTIONS | Method::TRACE
                        );
                    let rule = attempt < tries
                        && body
                        && match failure {
                            AttemptFailure::Connect => true,
                            AttemptFailure::AfterSend => repeatable,
                            AttemptFailure::Status(s) => [502, 503, 504].contains(&s) && repeatable,
                        };
                    let granted = policy.should_retry(attempt, failure, &method, body, now);
                    prop_assert_eq!(granted, rule && left > 0, "{:?} {:?} {} {}", failure, method, attempt, body);
                    if granted {
                        left -= 1;
                    }
                }
            }
        }
    }
}
