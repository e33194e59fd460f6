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
            state.refilled = now;
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
}
