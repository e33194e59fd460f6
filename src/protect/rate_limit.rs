//! Per-key request rate limits: `rate_limit = { rate = "100/s", burst = 20, key = ..., max_keys
//! = ... }` on a route.
//!
//! **Algorithm.** GCRA (the generic cell rate algorithm), the token bucket written as one number
//! per key: the *theoretical arrival time* (TAT) at which the key's bucket would be full again.
//! With emission interval `T = per / count` and tolerance `τ = T × (burst − 1)`, a request at
//! `now` passes when `now ≥ TAT − τ`, and then moves TAT to `max(TAT, now) + T`. A refused
//! request changes nothing. One `u64` per key, updated by compare-and-swap: no lock is held while
//! deciding, and two requests of the same key can never both take the last unit of quota.
//! Decisions take the time as an argument, so the unit tests drive them on explicit instants.
//!
//! **Memory.** Keys are whatever clients send (addresses, API keys), so the table is bounded
//! twice: at most `max_keys` entries (the least recently seen are forgotten first, as the config
//! documents), and an entry idle for as long as a full bucket takes to refill is dropped — by
//! then it holds nothing a fresh entry would not, so forgetting it loses no limit. Each entry's
//! key is at most [`MAX_RAW_KEY`] bytes plus a tag: longer keys (long header values) are replaced
//! by their SHA-256 digest, so a client cannot make entries large.
//!
//! **Reloads.** A [`RateLimitRegistry`] hands the same [`RateLimiter`] (and so the same table) to
//! the next generation when the route keeps its name and an equivalent limit; like the backend
//! registry it holds weak references, so a limiter lives exactly as long as some generation uses
//! it. A changed limit starts from empty buckets.
//!
//! **Headers.** The fields of the current IETF draft, draft-ietf-httpapi-ratelimit-headers-11
//! (the syntax has been the same since -08): `RateLimit-Policy: "default";q=BURST;w=REFILL` and
//! `RateLimit: "default";r=REMAINING;t=SECONDS`, plus `Retry-After` on refusals. The older -07
//! syntax (`RateLimit: limit=.., remaining=.., reset=..`) is not emitted: the working group
//! replaced it and the newer form is what the draft now registers. See [`headers`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use tokio::time::Instant;

use crate::config::RateLimitSettings;

/// The `RateLimit` response field (draft-ietf-httpapi-ratelimit-headers §4).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The `RateLimit-Policy` response field (draft-ietf-httpapi-ratelimit-headers §3).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The policy identifier in both fields. Fixed rather than the route's name, which is the
/// operator's and may say more about the deployment than clients need to know.
pub const POLICY_NAME: &str = "default";

/// Keys up to this many bytes are stored as they are; longer ones as a SHA-256 digest.
pub const MAX_RAW_KEY: usize = 64;

/// The longest a full bucket may take to refill (`burst × T`): a limit past this is a typo, and
/// keeping every duration far below `u64` nanoseconds keeps the arithmetic exact.
const MAX_REFILL: Duration = Duration::from_secs(365 * 24 * 3600);

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Tag of a stored key that is a digest; raw keys start with a key-part tag, never this byte.
const DIGEST_TAG: u8 = 0xff;

/// Parses a rate: `"COUNT/s"`, `"COUNT/m"` or `"COUNT/h"`, with COUNT at least 1. Returns the
/// count and the period it is counted over.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || {
        format!("rate {text:?} is not a rate; write COUNT/s, COUNT/m or COUNT/h (like \"100/s\")")
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: u32 = count
        .parse()
        .map_err(|_| format!("rate {text:?}: the count is too large"))?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!(
            "rate {text:?} allows no request at all; the count must be at least 1"
        ));
    }
    Ok((count, per))
}

/// Checks `rate_limit` settings: a valid rate above zero, `burst` ≥ 1, keys that are
/// `client_ip`, `route` or `header:NAME` (each at most once), `max_keys` ≥ 1. The message
/// names the first problem found.
pub fn check_settings(settings: &RateLimitSettings) -> Result<(), String> {
    Spec::compile(settings).map(|_| ())
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    /// The client's address (IPv6 by its /64 network).
    ClientIp,
    /// The route's name: with nothing else, one bucket for the whole route.
    Route,
    /// The values of a request header.
    Header(HeaderName),
}

impl KeyPart {
    fn parse(text: &str) -> Result<KeyPart, String> {
        match text.trim() {
            "client_ip" => Ok(KeyPart::ClientIp),
            "route" => Ok(KeyPart::Route),
            other => {
                let name = other.strip_prefix("header:").ok_or_else(|| {
                    format!("rate_limit key {text:?} is not one of client_ip, route or header:NAME")
                })?;
                HeaderName::from_bytes(name.trim().as_bytes())
                    .map(KeyPart::Header)
                    .map_err(|_| format!("rate_limit key {text:?} does not name a valid header"))
            }
        }
    }
}

/// Validated settings, in the form decisions use. Two settings with equal specs behave the same
/// (`"60/m"` and `"1/s"`, an explicit burst equal to the default), so a reload between them keeps
/// the table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    /// Nanoseconds between two requests at the sustained rate (`T`).
    interval: u64,
    /// Requests a full bucket lets through at once.
    burst: u32,
    keys: Vec<KeyPart>,
    max_keys: u64,
}

impl Spec {
    fn compile(settings: &RateLimitSettings) -> Result<Spec, String> {
        let (count, per) = parse_rate(&settings.rate)?;
        let per_ns = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX);
        let interval = per_ns / u64::from(count);
        if interval == 0 {
            return Err(format!(
                "rate {:?} is more than one request per nanosecond",
                settings.rate
            ));
        }
        let burst = match settings.burst {
            Some(0) => return Err("rate_limit burst must be at least 1".to_owned()),
            Some(burst) => burst,
            // One second's worth of the rate, rounded up, at least 1.
            None => {
                let per_secs = u32::try_from(per.as_secs()).unwrap_or(u32::MAX).max(1);
                count.div_ceil(per_secs).max(1)
            }
        };
        let refill = u128::from(interval) * u128::from(burst);
        if refill > MAX_REFILL.as_nanos() {
            return Err(format!(
                "rate_limit burst {burst} at {:?} takes more than a year to refill",
                settings.rate
            ));
        }
        let keys = settings
            .key
            .0
            .iter()
            .map(|k| KeyPart::parse(k))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(
                "rate_limit key lists nothing; use client_ip, route, header:NAME or a list of them"
                    .to_owned(),
            );
        }
        for (i, part) in keys.iter().enumerate() {
            if keys[..i].contains(part) {
                return Err(format!(
                    "rate_limit key {:?} is listed twice",
                    settings.key.0[i]
                ));
            }
        }
        if settings.max_keys == 0 {
            return Err("rate_limit max_keys must be at least 1".to_owned());
        }
        Ok(Spec {
            interval,
            burst,
            keys,
            max_keys: u64::try_from(settings.max_keys).unwrap_or(u64::MAX),
        })
    }

    /// Nanoseconds an empty bucket takes to fill again: `burst × T` (at most a year).
    fn refill_ns(&self) -> u64 {
        self.interval.saturating_mul(u64::from(self.burst))
    }
}

/// The GCRA arithmetic, on nanoseconds since the limiter's epoch. Pure: no clock, no state.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// `T`, nanoseconds per request at the sustained rate.
    interval: u64,
    /// `τ = T × (burst − 1)`: how far ahead of `now` the TAT may run and still let one more in.
    tolerance: u64,
    burst: u32,
}

impl Gcra {
    fn new(spec: &Spec) -> Gcra {
        Gcra {
            interval: spec.interval,
            tolerance: spec
                .interval
                .saturating_mul(u64::from(spec.burst.saturating_sub(1))),
            burst: spec.burst,
        }
    }

    /// Decides a request at `now` against the stored TAT; returns the TAT to store (`None`: leave
    /// it) and the decision.
    fn decide(&self, stored: u64, now: u64) -> (Option<u64>, Decision) {
        // A TAT in the past is a full bucket: it counts from now.
        let tat = stored.max(now);
        if tat - now <= self.tolerance {
            let next = tat.saturating_add(self.interval);
            // `next − now ≤ τ + T` here, so this never underflows.
            let headroom = now
                .saturating_add(self.tolerance)
                .saturating_add(self.interval)
                .saturating_sub(next);
            let remaining = u32::try_from(headroom / self.interval)
                .unwrap_or(u32::MAX)
                .min(self.burst);
            let retry_after = if remaining == 0 {
                ceil_secs(next.saturating_sub(self.tolerance).saturating_sub(now))
            } else {
                0
            };
            let decision = Decision {
                allowed: true,
                limit: self.burst,
                remaining,
                reset: ceil_secs(next - now),
                retry_after,
            };
            (Some(next), decision)
        } else {
            // The next request passes once `now ≥ TAT − τ`.
            let wait = tat - self.tolerance - now;
            let decision = Decision {
                allowed: false,
                limit: self.burst,
                remaining: 0,
                reset: ceil_secs(tat - now),
                retry_after: ceil_secs(wait).max(1),
            };
            (None, decision)
        }
    }
}

/// Nanoseconds to whole seconds, rounded up.
fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

/// The outcome of one request against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests a full bucket lets through at once (`burst`).
    pub limit: u32,
    /// Whole requests that could still pass right now, after this one.
    pub remaining: u32,
    /// Seconds (rounded up) until the key's bucket is full again; 0 when it is.
    pub reset: u64,
    /// Seconds (rounded up) until the next request of this key would pass: at least 1 when
    /// refused, 0 when another request would pass now.
    pub retry_after: u64,
}

/// What a limit advertises in `RateLimit-Policy`: `q` = the burst, `w` = the seconds a full
/// bucket takes to refill (rounded up, at least 1). So `q` is what `RateLimit`'s `r` counts down
/// from, and `q / w` is the sustained rate (or a little under it, when the refill time is not a
/// whole number of seconds — never over it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The `q` parameter: quota units (requests) of a full bucket.
    pub quota: u32,
    /// The `w` parameter: window in seconds.
    pub window: u64,
    value: HeaderValue,
}

impl Policy {
    fn of(spec: &Spec) -> Policy {
        let quota = spec.burst;
        let window = ceil_secs(spec.refill_ns()).max(1);
        let value = HeaderValue::try_from(format!("\"{POLICY_NAME}\";q={quota};w={window}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""));
        Policy {
            quota,
            window,
            value,
        }
    }

    /// The `RateLimit-Policy` field value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }
}

/// The response fields for a decision, per draft-ietf-httpapi-ratelimit-headers-11:
///
/// - `RateLimit-Policy: "default";q=BURST;w=REFILL_SECONDS` (see [`Policy`]);
/// - `RateLimit: "default";r=REMAINING;t=SECONDS`, where `t` is, for an allowed request, the
///   seconds until the bucket is full again (within them the client can surely use `r` requests,
///   a safe statement for a bucket that only refills), and for a refused one the `Retry-After`
///   seconds — the draft asks that `Retry-After` not point before the end of the effective
///   window, and a refused client's window ends when its next request would pass;
/// - `Retry-After: SECONDS` on refusals only.
///
/// Meant for every response of a limited route (the draft allows the fields on any status):
/// clients can slow down before they are refused.
pub fn headers(decision: &Decision, policy: &Policy) -> Vec<(HeaderName, HeaderValue)> {
    let mut fields = Vec::with_capacity(3);
    fields.push((RATELIMIT_POLICY.clone(), policy.value.clone()));
    let window = if decision.allowed {
        decision.reset
    } else {
        decision.retry_after
    };
    if let Ok(value) = HeaderValue::try_from(format!(
        "\"{POLICY_NAME}\";r={};t={window}",
        decision.remaining
    )) {
        fields.push((RATELIMIT.clone(), value));
    }
    if !decision.allowed {
        fields.push((header::RETRY_AFTER, HeaderValue::from(decision.retry_after)));
    }
    fields
}

/// One route's limit: its settings and the table of keys it has seen.
pub struct RateLimiter {
    settings: RateLimitSettings,
    spec: Spec,
    gcra: Gcra,
    policy: Policy,
    /// Key → TAT in nanoseconds since `epoch`.
    table: Cache<Vec<u8>, Arc<AtomicU64>>,
    epoch: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .field("policy", &self.policy)
            .field("keys", &self.table.entry_count())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with an empty table; errors as [`check_settings`] does.
    pub fn new(settings: &RateLimitSettings) -> Result<RateLimiter, String> {
        let spec = Spec::compile(settings)?;
        // Idle for a whole refill, an entry is a full bucket: forgetting it changes nothing.
        // At least a second, so tiny refill times do not churn the table.
        let idle = Duration::from_nanos(spec.refill_ns()).max(Duration::from_secs(1));
        let table = Cache::builder()
            .max_capacity(spec.max_keys)
            .time_to_idle(idle)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Ok(RateLimiter {
            settings: settings.clone(),
            gcra: Gcra::new(&spec),
            policy: Policy::of(&spec),
            spec,
            table,
            epoch: Instant::now(),
        })
    }

    /// The settings this limiter was built from.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// What the limit advertises in `RateLimit-Policy`.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The key a request is counted under: the configured parts in order, each tagged and
    /// length-prefixed so no two different requests make the same bytes; longer than
    /// [`MAX_RAW_KEY`], the SHA-256 of that.
    ///
    /// - `client_ip`: the address as given (pass the client's address after trusted-proxy
    ///   resolution); IPv4-mapped IPv6 counts as IPv4, and IPv6 counts by its /64, since one
    ///   host commonly holds a whole /64 and could otherwise rotate through it.
    /// - `route`: `route`.
    /// - `header:NAME`: every value of the header, in order. A request without the header is
    ///   counted under a shared "header absent" part rather than let through unlimited:
    ///   otherwise leaving the header out would bypass the limit. With `header:NAME` alone, all
    ///   requests without it share one bucket; combine it with `client_ip` to give them one
    ///   bucket per client instead.
    pub fn key_for(&self, route: &str, client_ip: IpAddr, headers: &HeaderMap) -> Vec<u8> {
        let mut key = Vec::with_capacity(32);
        for part in &self.spec.keys {
            match part {
                KeyPart::ClientIp => match client_ip.to_canonical() {
                    IpAddr::V4(v4) => {
                        key.push(b'4');
                        key.extend_from_slice(&v4.octets());
                    }
                    IpAddr::V6(v6) => {
                        key.push(b'6');
                        key.extend_from_slice(&v6.octets()[..8]);
                    }
                },
                KeyPart::Route => {
                    key.push(b'r');
                    push_len_prefixed(&mut key, route.as_bytes());
                }
                KeyPart::Header(name) => {
                    key.push(b'h');
                    let mut values = headers.get_all(name).iter().peekable();
                    if values.peek().is_none() {
                        key.push(b'-');
                    } else {
                        for value in values {
                            key.push(b'v');
                            push_len_prefixed(&mut key, value.as_bytes());
                        }
                        key.push(b'.');
                    }
                }
            }
        }
        if key.len() > MAX_RAW_KEY {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key);
            let mut short = Vec::with_capacity(1 + digest.as_ref().len());
            short.push(DIGEST_TAG);
            short.extend_from_slice(digest.as_ref());
            return short;
        }
        key
    }

    /// Counts one request under `key` at `now`.
    pub fn check_key(&self, key: &[u8], now: Instant) -> Decision {
        let cell = self
            .table
            .get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut stored = cell.load(Ordering::Acquire);
        loop {
            let (next, decision) = self.gcra.decide(stored, now);
            let Some(next) = next else {
                return decision;
            };
            match cell.compare_exchange_weak(stored, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(actual) => stored = actual,
            }
        }
    }

    /// Counts one request at `now`: [`RateLimiter::key_for`] then [`RateLimiter::check_key`].
    pub fn check(
        &self,
        route: &str,
        client_ip: IpAddr,
        headers: &HeaderMap,
        now: Instant,
    ) -> Decision {
        self.check_key(&self.key_for(route, client_ip, headers), now)
    }

    /// Keys in the table. Approximate until pending maintenance runs (see
    /// [`RateLimiter::run_pending_tasks`]).
    pub fn key_count(&self) -> u64 {
        self.table.entry_count()
    }

    /// Runs the table's pending evictions now (they otherwise run in small batches as requests
    /// come); for tests and the admin view.
    pub fn run_pending_tasks(&self) {
        self.table.run_pending_tasks();
    }
}

fn push_len_prefixed(key: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(bytes);
}

/// Limiters by route name, shared by every generation, so a reload that keeps a route's limit
/// keeps its table (and clients cannot reset their buckets by waiting for a reload).
///
/// Holds weak references, like the backend registry: a limiter lives as long as some generation
/// uses it, and the next generation picks it up when the route keeps its name and an equivalent
/// limit.
#[derive(Debug, Default)]
pub struct RateLimitRegistry {
    limiters: Mutex<HashMap<String, Weak<RateLimiter>>>,
}

impl RateLimitRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limiter of `route`: the live one when its settings are equivalent to `settings`
    /// (same interval, burst, keys and max_keys), a new empty one otherwise. Errors as
    /// [`check_settings`] does.
    pub fn limiter_for(
        &self,
        route: &str,
        settings: &RateLimitSettings,
    ) -> Result<Arc<RateLimiter>, String> {
        let spec = Spec::compile(settings)?;
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.retain(|_, limiter| limiter.strong_count() > 0);
        if let Some(limiter) = limiters.get(route).and_then(Weak::upgrade)
            && limiter.spec == spec
        {
            return Ok(limiter);
        }
        let limiter = Arc::new(RateLimiter::new(settings)?);
        limiters.insert(route.to_owned(), Arc::downgrade(&limiter));
        Ok(limiter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OneOrMany;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn settings(rate: &str, burst: Option<u32>, keys: &[&str]) -> RateLimitSettings {
        RateLimitSettings {
            rate: rate.to_owned(),
            burst,
            key: OneOrMany(keys.iter().map(|k| (*k).to_owned()).collect()),
            max_keys: 100_000,
        }
    }

    fn limiter(rate: &str, burst: Option<u32>, keys: &[&str]) -> RateLimiter {
        RateLimiter::new(&settings(rate, burst, keys)).expect("valid settings")
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn hit(limiter: &RateLimiter, key: &[u8], at: Instant) -> Decision {
        limiter.check_key(key, at)
    }

    #[test]
    fn rates_parse_and_nonsense_is_refused() {
        assert_eq!(parse_rate("100/s"), Ok((100, Duration::from_secs(1))));
        assert_eq!(parse_rate("600/m"), Ok((600, Duration::from_secs(60))));
        assert_eq!(
            parse_rate(" 10000 / h "),
            Ok((10000, Duration::from_secs(3600)))
        );
        for bad in [
            "",
            "100",
            "/s",
            "0/s",
            "-1/s",
            "+1/s",
            "1.5/s",
            "1/d",
            "1/sec",
            "x/s",
            "1/",
            "99999999999/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            check_settings(&settings("5/s", None, &["client_ip"])),
            Ok(())
        );
        assert_eq!(
            check_settings(&settings(
                "5/s",
                Some(3),
                &["client_ip", "route", "header:X-Api-Key"]
            )),
            Ok(())
        );
        let problems = [
            settings("5/x", None, &["client_ip"]),
            settings("0/s", None, &["client_ip"]),
            settings("5/s", Some(0), &["client_ip"]),
            settings("5/s", None, &[]),
            settings("5/s", None, &["cookie:a"]),
            settings("5/s", None, &["header:"]),
            settings("5/s", None, &["header:bad name"]),
            settings("5/s", None, &["client_ip", "client_ip"]),
            settings("5/s", None, &["header:A", "header:a"]),
            // 1/h with a burst of 10,000 takes over a year to refill.
            settings("1/h", Some(10_000), &["client_ip"]),
        ];
        for bad in problems {
            assert!(check_settings(&bad).is_err(), "{bad:?} passed");
        }
        let mut zero = settings("5/s", None, &["client_ip"]);
        zero.max_keys = 0;
        assert!(check_settings(&zero).unwrap_err().contains("max_keys"));
    }

    #[test]
    fn the_default_burst_is_one_seconds_worth() {
        assert_eq!(limiter("100/s", None, &["route"]).policy().quota, 100);
        assert_eq!(limiter("600/m", None, &["route"]).policy().quota, 10);
        assert_eq!(limiter("10000/h", None, &["route"]).policy().quota, 3);
        assert_eq!(limiter("1/h", None, &["route"]).policy().quota, 1);
    }

    #[test]
    fn a_burst_passes_then_refusals_until_the_bucket_refills() {
        let limiter = limiter("5/s", Some(5), &["client_ip"]);
        let start = Instant::now();
        let key = limiter.key_for("r", IP, &HeaderMap::new());
        for expected in (0..5).rev() {
            let decision = hit(&limiter, &key, start);
            assert!(decision.allowed);
            assert_eq!(decision.limit, 5);
            assert_eq!(decision.remaining, expected, "remaining counts down");
        }
        let refused = hit(&limiter, &key, start);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, 1, "0.2 s rounds up to 1");
        assert_eq!(refused.reset, 1);
        // Refusals cost nothing: one interval later exactly one more passes.
        let later = start + Duration::from_millis(200);
        let one = hit(&limiter, &key, later);
        assert!(one.allowed);
        assert_eq!(one.remaining, 0);
        assert_eq!(one.retry_after, 1);
        assert!(!hit(&limiter, &key, later).allowed);
        // A full refill later the whole burst is back.
        let recovered = start + Duration::from_millis(1200);
        for expected in (0..5).rev() {
            assert_eq!(hit(&limiter, &key, recovered).remaining, expected);
        }
        assert!(!hit(&limiter, &key, recovered).allowed);
    }

    #[test]
    fn retry_after_is_exact_and_rounded_up() {
        let limiter = limiter("1/m", Some(1), &["route"]);
        let start = Instant::now();
        let key = limiter.key_for("r", IP, &HeaderMap::new());
        let first = hit(&limiter, &key, start);
        assert!(first.allowed);
        assert_eq!(first.remaining, 0);
        assert_eq!(first.reset, 60);
        assert_eq!(first.retry_after, 60);
        let refused = hit(&limiter, &key, start + Duration::from_secs(10));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 50);
        assert_eq!(refused.reset, 50);
        let almost = hit(&limiter, &key, start + Duration::from_millis(59_500));
        assert!(!almost.allowed);
        assert_eq!(almost.retry_after, 1, "half a second left still says 1");
        assert!(hit(&limiter, &key, start + Duration::from_secs(60)).allowed);
    }

    #[test]
    fn a_burst_above_the_rate_spends_then_paces() {
        // 2/s with a burst of 6: six at once, then one per half second.
        let limiter = limiter("2/s", Some(6), &["route"]);
        let start = Instant::now();
        let key = limiter.key_for("r", IP, &HeaderMap::new());
        for _ in 0..6 {
            assert!(hit(&limiter, &key, start).allowed);
        }
        let refused = hit(&limiter, &key, start);
        assert!(!refused.allowed);
        assert_eq!(
            refused.reset, 3,
            "an empty bucket of 6 at 2/s refills in 3 s"
        );
        assert_eq!(refused.retry_after, 1);
        assert!(hit(&limiter, &key, start + Duration::from_millis(500)).allowed);
        assert!(!hit(&limiter, &key, start + Duration::from_millis(900)).allowed);
        assert!(hit(&limiter, &key, start + Duration::from_millis(1000)).allowed);
        assert_eq!(limiter.policy().quota, 6);
        assert_eq!(limiter.policy().window, 3);
    }

    #[test]
    fn keys_are_independent() {
        let limiter = limiter("1/m", Some(2), &["client_ip"]);
        let now = Instant::now();
        let none = HeaderMap::new();
        let a = limiter.key_for("r", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), &none);
        let b = limiter.key_for("r", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), &none);
        assert_ne!(a, b);
        for _ in 0..2 {
            assert!(hit(&limiter, &a, now).allowed);
        }
        assert!(!hit(&limiter, &a, now).allowed);
        assert!(hit(&limiter, &b, now).allowed);
        assert_eq!(hit(&limiter, &b, now).remaining, 0);
    }

    #[test]
    fn combined_keys_need_every_part_equal() {
        let limiter = limiter("1/m", Some(1), &["client_ip", "header:x-api-key"]);
        let now = Instant::now();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", HeaderValue::from_str(value).unwrap());
            headers
        };
        let other_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let keys = [
            limiter.key_for("r", IP, &with("k1")),
            limiter.key_for("r", IP, &with("k2")),
            limiter.key_for("r", other_ip, &with("k1")),
            limiter.key_for("r", IP, &HeaderMap::new()),
            limiter.key_for("r", IP, &with("")),
        ];
        for (i, key) in keys.iter().enumerate() {
            for other in &keys[..i] {
                assert_ne!(key, other);
            }
            assert!(hit(&limiter, key, now).allowed);
        }
        for key in &keys {
            assert!(!hit(&limiter, key, now).allowed);
        }
        // The same request again makes the same key.
        assert_eq!(keys[0], limiter.key_for("r", IP, &with("k1")));
    }

    #[test]
    fn requests_without_the_header_share_one_bucket() {
        let limiter = limiter("1/m", Some(1), &["header:x-api-key"]);
        let now = Instant::now();
        let a = limiter.key_for(
            "r",
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            &HeaderMap::new(),
        );
        let b = limiter.key_for(
            "r",
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            &HeaderMap::new(),
        );
        assert_eq!(a, b);
        assert!(hit(&limiter, &a, now).allowed);
        assert!(!hit(&limiter, &b, now).allowed);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let limiter = limiter("1/m", None, &["client_ip"]);
        let none = HeaderMap::new();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_net: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            limiter.key_for("r", one, &none),
            limiter.key_for("r", same_net, &none)
        );
        assert_ne!(
            limiter.key_for("r", one, &none),
            limiter.key_for("r", other_net, &none)
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(
            limiter.key_for("r", mapped, &none),
            limiter.key_for("r", IP, &none)
        );
        assert_ne!(
            limiter.key_for("r", IpAddr::V6(Ipv6Addr::LOCALHOST), &none),
            limiter.key_for("r", IpAddr::V4(Ipv4Addr::LOCALHOST), &none)
        );
    }

    #[test]
    fn long_keys_are_digested_and_stay_distinct() {
        let limiter = limiter("1/m", Some(1), &["header:x-api-key"]);
        let now = Instant::now();
        let long = |fill: char| {
            let mut headers = HeaderMap::new();
            let value = std::iter::repeat_n(fill, 4096).collect::<String>();
            headers.insert("x-api-key", HeaderValue::from_str(&value).unwrap());
            headers
        };
        let a = limiter.key_for("r", IP, &long('a'));
        let b = limiter.key_for("r", IP, &long('b'));
        assert_eq!(a.len(), 33);
        assert_eq!(a[0], DIGEST_TAG);
        assert_ne!(a, b);
        assert!(hit(&limiter, &a, now).allowed);
        assert!(!hit(&limiter, &a, now).allowed);
        assert!(hit(&limiter, &b, now).allowed);
    }

    #[test]
    fn the_table_never_holds_more_than_max_keys() {
        let mut capped = settings("1/m", Some(1), &["header:x-api-key"]);
        capped.max_keys = 100;
        let limiter = RateLimiter::new(&capped).unwrap();
        let now = Instant::now();
        for i in 0..5_000u32 {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", HeaderValue::from(i));
            let key = limiter.key_for("r", IP, &headers);
            assert!(limiter.check_key(&key, now).allowed);
        }
        limiter.run_pending_tasks();
        let count = limiter.key_count();
        assert!(count <= 100, "{count} keys remembered, cap 100");
        assert!(count > 0);
    }

    #[test]
    fn the_latest_key_survives_a_flood_of_others() {
        // Least recently seen are forgotten first: a key in use stays limited. (The table orders
        // keys in batches of a few dozen operations, so its LRU is exact only up to a batch.)
        let mut capped = settings("1/m", Some(1), &["header:x-api-key"]);
        capped.max_keys = 1_000;
        let limiter = RateLimiter::new(&capped).unwrap();
        let now = Instant::now();
        let mut steady = HeaderMap::new();
        steady.insert("x-api-key", HeaderValue::from_static("steady"));
        let steady = limiter.key_for("r", IP, &steady);
        assert!(limiter.check_key(&steady, now).allowed);
        for i in 0..10_000u32 {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", HeaderValue::from(i));
            limiter.check_key(&limiter.key_for("r", IP, &headers), now);
            if i % 10 == 0 {
                assert!(!limiter.check_key(&steady, now).allowed, "after {i} others");
            }
        }
    }

    #[test]
    fn concurrent_requests_never_overspend() {
        let limiter = Arc::new(limiter("1/m", Some(100), &["route"]));
        let now = Instant::now();
        let key = limiter.key_for("r", IP, &HeaderMap::new());
        let passed = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (limiter, key) = (&limiter, &key);
                    scope.spawn(move || {
                        (0..100)
                            .filter(|_| limiter.check_key(key, now).allowed)
                            .count()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(passed, 100);
    }

    #[test]
    fn headers_follow_the_draft() {
        let limiter = limiter("5/s", Some(5), &["client_ip"]);
        let now = Instant::now();
        let key = limiter.key_for("r", IP, &HeaderMap::new());
        let first = hit(&limiter, &key, now);
        let fields = headers(&first, limiter.policy());
        let find = |fields: &[(HeaderName, HeaderValue)], name: &str| {
            fields
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            find(&fields, "ratelimit-policy").as_deref(),
            Some("\"default\";q=5;w=1")
        );
        assert_eq!(
            find(&fields, "ratelimit").as_deref(),
            Some("\"default\";r=4;t=1")
        );
        assert_eq!(find(&fields, "retry-after"), None);
        for _ in 0..4 {
            hit(&limiter, &key, now);
        }
        let refused = hit(&limiter, &key, now);
        let fields = headers(&refused, limiter.policy());
        assert_eq!(
            find(&fields, "ratelimit").as_deref(),
            Some("\"default\";r=0;t=1")
        );
        assert_eq!(find(&fields, "retry-after").as_deref(), Some("1"));

        let slow = super::tests::limiter("1/m", Some(3), &["route"]);
        assert_eq!(
            slow.policy().header_value().to_str().unwrap(),
            "\"default\";q=3;w=180"
        );
    }

    #[test]
    fn huge_durations_saturate_instead_of_overflowing() {
        let limiter = limiter("1/h", Some(8760), &["route"]);
        let start = Instant::now();
        let key = limiter.key_for("r", IP, &HeaderMap::new());
        for _ in 0..8760 {
            assert!(hit(&limiter, &key, start).allowed);
        }
        let refused = hit(&limiter, &key, start);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 3600);
        assert_eq!(refused.reset, 8760 * 3600);
        // An instant before the limiter's epoch counts as the epoch.
        let early = RateLimiter::new(&settings("1/s", None, &["route"])).unwrap();
        let before = early
            .epoch
            .checked_sub(Duration::from_secs(5))
            .unwrap_or(early.epoch);
        assert!(early.check_key(b"k", before).allowed);
        assert!(!early.check_key(b"k", before).allowed);
    }

    #[test]
    fn the_registry_keeps_the_table_across_an_equal_reload_only() {
        let registry = RateLimitRegistry::new();
        let now = Instant::now();
        let original = settings("1/m", Some(1), &["client_ip"]);
        let first = registry.limiter_for("api", &original).unwrap();
        let key = first.key_for("api", IP, &HeaderMap::new());
        assert!(first.check_key(&key, now).allowed);

        // A reload with the same limit (written differently) gets the same table.
        let same = settings("60/h", Some(1), &["client_ip"]);
        let reloaded = registry.limiter_for("api", &same).unwrap();
        assert!(Arc::ptr_eq(&first, &reloaded));
        assert!(!reloaded.check_key(&key, now).allowed, "still limited");
        let equivalent = settings("1/m", None, &["client_ip"]);
        assert!(Arc::ptr_eq(
            &first,
            &registry.limiter_for("api", &equivalent).unwrap()
        ));

        let header_case = settings("1/m", Some(1), &["header:X-Api-Key"]);
        let lower_case = settings("1/m", Some(1), &["header:x-api-key"]);
        let by_header = registry.limiter_for("keyed", &header_case).unwrap();
        assert!(Arc::ptr_eq(
            &by_header,
            &registry.limiter_for("keyed", &lower_case).unwrap()
        ));

        // Another route never shares it.
        let other = registry.limiter_for("other", &original).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));

        // A changed rate starts from empty buckets.
        let changed = registry
            .limiter_for("api", &settings("2/m", Some(1), &["client_ip"]))
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(changed.check_key(&key, now).allowed);

        // Once no generation holds a limiter it is forgotten.
        drop((first, reloaded, changed));
        let fresh = registry.limiter_for("api", &original).unwrap();
        assert!(fresh.check_key(&key, now).allowed);
        assert!(
            registry
                .limiter_for("api", &settings("0/s", None, &["route"]))
                .is_err()
        );
    }

    /// Random requests against a model of what a key tells apart: two requests share a key
    /// exactly when every configured part sees the same thing in both, and a key stays short
    /// whatever the client sends.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        const KEY_PARTS: [&str; 4] = ["client_ip", "route", "header:x-api-key", "header:X-Tenant"];

        /// What one configured part sees of a request.
        #[derive(Debug, PartialEq, Eq)]
        enum Seen {
            /// The address as counted: IPv4 (mapped or not), or the /64 of IPv6.
            Client([u8; 4], [u8; 8]),
            Route(String),
            /// The header's values in order; `None` when it is absent.
            Header(Option<Vec<Vec<u8>>>),
        }

        #[derive(Debug, Clone)]
        struct Request {
            route: &'static str,
            client: IpAddr,
            headers: HeaderMap,
        }

        fn model_key(parts: &[&str], request: &Request) -> Vec<Seen> {
            parts
                .iter()
                .map(|part| match *part {
                    "client_ip" => match request.client.to_canonical() {
                        IpAddr::V4(v4) => Seen::Client(v4.octets(), [0xff; 8]),
                        IpAddr::V6(v6) => {
                            let segments = v6.segments();
                            let mut net = [0; 8];
                            for (pair, segment) in net.chunks_mut(2).zip(segments) {
                                pair.copy_from_slice(&segment.to_be_bytes());
                            }
                            Seen::Client([0; 4], net)
                        }
                    },
                    "route" => Seen::Route(request.route.to_owned()),
                    name => {
                        let name = name.trim_start_matches("header:").to_ascii_lowercase();
                        let values: Vec<Vec<u8>> = request
                            .headers
                            .get_all(name.as_str())
                            .iter()
                            .map(|v| v.as_bytes().to_vec())
                            .collect();
                        Seen::Header((!values.is_empty()).then_some(values))
                    }
                })
                .collect()
        }

        /// A byte a field value may hold: visible ASCII, space, tab and obs-text.
        fn field_byte() -> impl Strategy<Value = u8> {
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 2 => 0x80u8..=0xff]
        }

        /// Values from a small pool, so that requests often agree, or anything.
        fn header_value() -> impl Strategy<Value = HeaderValue> {
            let pool = prop::sample::select(vec![
                b"".to_vec(),
                b"k".to_vec(),
                b"k2".to_vec(),
                b"k,k2".to_vec(),
                vec![b'x'; 80],
            ]);
            prop_oneof![4 => pool, 1 => vec(field_byte(), 0..100)]
                .prop_map(|v| HeaderValue::from_bytes(&v).expect("a field value"))
        }

        fn request() -> impl Strategy<Value = Request> {
            let route = prop::sample::select(vec![
                "api",
                "apI",
                "",
                "ap",
                "a-route-name-that-is-long-enough-to-need-a-digest-of-the-whole-key",
            ]);
            let client = prop::sample::select(vec![
                IpAddr::from([192, 0, 2, 1]),
                IpAddr::from([192, 0, 2, 2]),
                IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6("2001:db8:0:1::1".parse().expect("an address")),
                IpAddr::V6("2001:db8:0:1:ffff::2".parse().expect("an address")),
                IpAddr::V6("2001:db8:0:2::1".parse().expect("an address")),
            ]);
            let lines = vec(
                (
                    prop::sample::select(vec!["x-api-key", "X-Tenant", "x-other"]),
                    header_value(),
                ),
                0..4,
            );
            (route, client, lines).prop_map(|(route, client, lines)| {
                let mut headers = HeaderMap::new();
                for (name, value) in lines {
                    headers.append(
                        HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                        value,
                    );
                }
                Request {
                    route,
                    client,
                    headers,
                }
            })
        }

        fn key_parts() -> impl Strategy<Value = Vec<&'static str>> {
            prop::sample::subsequence(KEY_PARTS.to_vec(), 1..=KEY_PARTS.len()).prop_shuffle()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn requests_share_a_key_exactly_when_every_part_agrees(
                parts in key_parts(),
                requests in vec(request(), 2..6),
            ) {
                let limiter = limiter("10/s", None, &parts);
                let keys: Vec<Vec<u8>> = requests
                    .iter()
                    .map(|r| limiter.key_for(r.route, r.client, &r.headers))
                    .collect();
                let seen: Vec<Vec<Seen>> = requests.iter().map(|r| model_key(&parts, r)).collect();
                for (i, j) in (0..keys.len()).flat_map(|i| (0..i).map(move |j| (i, j))) {
                    prop_assert_eq!(
                        keys[i] == keys[j],
                        seen[i] == seen[j],
                        "{:?} and {:?} by {:?}", requests[i], requests[j], parts
                    );
                }
            }

            #[test]
            fn keys_stay_short_whatever_the_client_sends(
                parts in key_parts(),
                request in request(),
                (pattern, length) in (vec(field_byte(), 1..16), 0..5000usize),
            ) {
                // A long value from a short random pattern: cheap to generate, and long.
                let long: Vec<u8> = pattern.iter().copied().cycle().take(length).collect();
                let limiter = limiter("10/s", None, &parts);
                let mut headers = request.headers.clone();
                headers.append("x-api-key", HeaderValue::from_bytes(&long).expect("a field value"));
                for headers in [&request.headers, &headers] {
                    let key = limiter.key_for(request.route, request.client, headers);
                    match key.first() {
                        Some(&DIGEST_TAG) => prop_assert_eq!(key.len(), 33),
                        Some(_) => prop_assert!(key.len() <= MAX_RAW_KEY, "{:?}", key),
                        None => prop_assert!(false, "an empty key"),
                    }
                }
            }
        }
    }
}
