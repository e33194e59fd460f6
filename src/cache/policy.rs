//! The shared-cache rules of RFC 9111 as pure functions over request and response heads:
//! whether a response may be stored (§3), how long it stays fresh (§4.2.1, §4.2.2), how old it
//! is (§4.2.3), whether a stored response may answer a request or must be validated first
//! (§4.2.4, §5.2.1, RFC 5861), and which requests invalidate stored responses (§4.4).
//!
//! Nothing here does I/O or reads the clock: callers pass `now`, so every rule is unit-tested.

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, CONTENT_RANGE, DATE, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use super::directives::{CacheControl, DELTA_SECONDS_MAX, MaxStale};

/// What the cache does with a response that carries `Set-Cookie`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SetCookiePolicy {
    /// Do not store it (the default): a cookie is almost always meant for one client.
    #[default]
    NoStore,
    /// Store it without its `Set-Cookie` lines; the client whose request filled the cache
    /// still gets them.
    Strip,
    /// Store it with the cookies, which every later client then receives.
    Store,
}

/// The operator's knobs that the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// Share of the time since `Last-Modified` a response without an explicit lifetime is
    /// considered fresh (§4.2.2); 0 turns heuristic freshness off.
    pub heuristic_fraction: f64,
    /// What to do with responses that set cookies.
    pub set_cookie: SetCookiePolicy,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            heuristic_fraction: 0.1,
            set_cookie: SetCookiePolicy::NoStore,
        }
    }
}

/// Why a response is not stored; the text is what `Cache-Status` reports in `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The request method is not one whose responses are cached (§3: GET and HEAD).
    Method,
    /// The status is not final, not understood, or partial content (§3, §3.3).
    Status,
    /// `no-store` in the request or the response (§5.2.1.5, §5.2.2.5).
    NoStore,
    /// `private` in the response: a shared cache must not store it (§5.2.2.7).
    Private,
    /// The request carried `Authorization` and the response did not allow sharing (§3.5).
    Authorization,
    /// The response sets a cookie and the configuration does not store those.
    SetCookie,
    /// `Vary: *`: no later request can ever match it (§4.1).
    VaryStar,
    /// No explicit lifetime, no heuristic one, and no validator: it could never be reused.
    NotReusable,
}

impl NotStored {
    /// A token for `Cache-Status`'s `detail` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NotReusable => "not-reusable",
        }
    }
}

/// A positive storage decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storable {
    /// Remove `Set-Cookie` from the stored copy.
    pub strip_set_cookie: bool,
}

/// Whether the methods' responses are stored at all (§3: a cache must understand the method
/// and it must be defined as cacheable; POST responses are never reused here).
pub fn method_is_cacheable(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// RFC 9110 §15.1: statuses cacheable by default, which may get heuristic freshness.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// A final status this cache understands (§3: "the response status code is final and
/// understood"): registered codes only, never 206 (a part cannot answer for the whole) nor 304
/// (an update, not a response to store).
pub fn status_is_understood(status: StatusCode) -> bool {
    let code = status.as_u16();
    code >= 200 && code != 206 && code != 304 && status.canonical_reason().is_some() && code != 101
}

/// RFC 9111 §3: may this response to this request be stored by a shared cache?
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_cc: &CacheControl,
    status: StatusCode,
    response: &HeaderMap,
    response_cc: &CacheControl,
    config: &PolicyConfig,
) -> Result<Storable, NotStored> {
    if !method_is_cacheable(method) {
        return Err(NotStored::Method);
    }
    // §3.3: a partial response is not stored as if it were the whole.
    if !status_is_understood(status) || response.contains_key(CONTENT_RANGE) {
        return Err(NotStored::Status);
    }
    // §5.2.2.3: must-understand overrides no-store when the status is understood (it is, here).
    if request_cc.no_store || (response_cc.no_store && !response_cc.must_understand) {
        return Err(NotStored::NoStore);
    }
    if response_cc.private {
        return Err(NotStored::Private);
    }
    // §3.5: only these directives make a response to an authenticated request shareable.
    if request.contains_key(AUTHORIZATION)
        && !(response_cc.public || response_cc.s_maxage.is_some() || response_cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if super::vary::is_star(response) {
        return Err(NotStored::VaryStar);
    }
    let strip_set_cookie = if response.contains_key(SET_COOKIE) {
        match config.set_cookie {
            SetCookiePolicy::NoStore => return Err(NotStored::SetCookie),
            SetCookiePolicy::Strip => true,
            SetCookiePolicy::Store => false,
        }
    } else {
        false
    };
    // §3: one of these must allow storage. `public` alone allows it even for a status that is
    // not cacheable by default.
    let explicit = response_cc.public
        || response_cc.max_age.is_some()
        || response_cc.s_maxage.is_some()
        || response.contains_key(EXPIRES);
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStored::Status);
    }
    // Storing a response that can never be reused (no lifetime, nothing to validate with)
    // only costs memory.
    let lifetime = freshness_lifetime(status, response, response_cc, config.heuristic_fraction);
    if lifetime == 0 && !super::conditional::has_validator(response) {
        return Err(NotStored::NotReusable);
    }
    Ok(Storable { strip_set_cookie })
}

/// An HTTP date header's value, if it is one; the first line counts (§4.2.1).
pub fn date_header(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

fn seconds_between(later: SystemTime, earlier: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .map_or(0, |d| d.as_secs())
        .min(DELTA_SECONDS_MAX)
}

/// §4.2.1: the freshness lifetime in seconds for a shared cache: `s-maxage`, else `max-age`,
/// else `Expires` minus `Date`, else the heuristic of §4.2.2 (a fraction of the time since
/// `Last-Modified`, only for statuses cacheable by default or responses marked `public`).
///
/// The stored response is expected to carry `Date` (one is added at receipt when missing,
/// RFC 9110 §6.6.1).
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    heuristic_fraction: f64,
) -> u64 {
    if let Some(seconds) = cc.s_maxage {
        return seconds;
    }
    if let Some(seconds) = cc.max_age {
        return seconds;
    }
    let date = date_header(headers, DATE);
    if headers.contains_key(EXPIRES) {
        // An invalid Expires ("0" included) means already expired (§5.3).
        return match (date_header(headers, EXPIRES), date) {
            (Some(expires), Some(date)) => seconds_between(expires, date),
            _ => 0,
        };
    }
    if !(heuristically_cacheable(status) || cc.public) || heuristic_fraction <= 0.0 {
        return 0;
    }
    match (date_header(headers, LAST_MODIFIED), date) {
        (Some(modified), Some(date)) => {
            let since = seconds_between(date, modified) as f64;
            (since * heuristic_fraction.min(1.0)) as u64
        }
        _ => 0,
    }
}

/// The value of an `Age` header: the first member, when it is a valid delta-seconds
/// (§5.1: an invalid value is ignored).
pub fn age_header(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::AGE)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    super::directives::delta_seconds(Some(first))
}

/// §4.2.3: the age a response had when it was received (`corrected_initial_age`), from its
/// `Date` and `Age` and the times the request was sent and the response received.
pub fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> u64 {
    let apparent_age =
        date_header(headers, DATE).map_or(0, |date| seconds_between(response_time, date));
    let response_delay = seconds_between(response_time, request_time);
    let corrected_age_value = age_header(headers)
        .unwrap_or(0)
        .saturating_add(response_delay);
    apparent_age.max(corrected_age_value).min(DELTA_SECONDS_MAX)
}

/// What the freshness rules need to know about one stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Freshness {
    /// The response's `Cache-Control`.
    pub cc: CacheControl,
    /// Freshness lifetime, in seconds.
    pub lifetime: u64,
    /// Age when received (`corrected_initial_age`), in seconds.
    pub initial_age: u64,
    /// When it was received.
    pub response_time: SystemTime,
}

impl Freshness {
    /// The freshness of a response received at `response_time` for a request sent at
    /// `request_time`.
    pub fn of(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        heuristic_fraction: f64,
    ) -> Freshness {
        let cc = CacheControl::of(headers);
        Freshness {
            lifetime: freshness_lifetime(status, headers, &cc, heuristic_fraction),
            initial_age: initial_age(headers, request_time, response_time),
            response_time,
            cc,
        }
    }

    /// §4.2.3 `current_age`: the initial age plus the time spent in this cache.
    pub fn current_age(&self, now: SystemTime) -> u64 {
        self.initial_age
            .saturating_add(seconds_between(now, self.response_time))
            .min(DELTA_SECONDS_MAX)
    }

    /// Whether the response is fresh at `now` (§4.2).
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.current_age(now)
    }

    /// Seconds the response has been stale at `now` (0 while fresh).
    pub fn staleness(&self, now: SystemTime) -> u64 {
        self.current_age(now).saturating_sub(self.lifetime)
    }

    /// Seconds left before the response goes stale (negative once stale): `Cache-Status`'s
    /// `ttl`.
    pub fn ttl(&self, now: SystemTime) -> i64 {
        // A lifetime computed here is at most 2^31, but one read back from a disk entry may be
        // any u64: saturate rather than wrap (`as i64`) or overflow.
        let lifetime = i64::try_from(self.lifetime).unwrap_or(i64::MAX);
        // The current age is at most DELTA_SECONDS_MAX, which fits.
        lifetime.saturating_sub(self.current_age(now) as i64)
    }

    /// `must-revalidate`, `proxy-revalidate` or `s-maxage` (which implies proxy-revalidate in a
    /// shared cache, §5.2.2.10): never served stale, whatever the client accepts.
    pub fn forbids_stale(&self) -> bool {
        self.cc.must_revalidate || self.cc.proxy_revalidate || self.cc.s_maxage.is_some()
    }

    /// How long after it goes stale the response may still be kept for stale serving:
    /// the larger of its `stale-while-revalidate` and `stale-if-error` windows.
    pub fn stale_window(&self) -> Duration {
        if self.forbids_stale() {
            return Duration::ZERO;
        }
        Duration::from_secs(
            self.cc
                .stale_while_revalidate
                .unwrap_or(0)
                .max(self.cc.stale_if_error.unwrap_or(0)),
        )
    }
}

/// Whether a stored response may answer a request as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh and acceptable to the client: serve it.
    Fresh,
    /// Stale, but the client accepts that much staleness (`max-stale`, §5.2.1.2): serve it.
    StaleAccepted,
    /// Stale within the response's `stale-while-revalidate` window (RFC 5861 §3): serve it and
    /// refresh it in the background.
    StaleWhileRevalidate,
    /// It must be validated with the origin first (§4.3).
    Validate,
}

/// §4: may the stored response with `freshness` answer a request with directives `request`
/// at `now` without contacting the origin?
pub fn reuse(request: &CacheControl, freshness: &Freshness, now: SystemTime) -> Reuse {
    // §5.2.1.4, §5.2.2.4: no-cache on either side means validate every time.
    if request.no_cache || freshness.cc.no_cache {
        return Reuse::Validate;
    }
    let age = freshness.current_age(now);
    // §5.2.1.1: the client does not want a response older than max-age.
    if request.max_age.is_some_and(|max_age| age > max_age) {
        return Reuse::Validate;
    }
    // §5.2.1.3: it wants one that stays fresh at least min-fresh longer.
    if request
        .min_fresh
        .is_some_and(|min_fresh| freshness.lifetime.saturating_sub(age) < min_fresh)
    {
        return Reuse::Validate;
    }
    if freshness.lifetime > age {
        return Reuse::Fresh;
    }
    // §4.2.4: stale responses only where a directive allows it, and never against
    // must-revalidate / proxy-revalidate / s-maxage.
    if freshness.forbids_stale() {
        return Reuse::Validate;
    }
    let staleness = age - freshness.lifetime;
    // `max-age` limits the age even when `max-stale` is present (checked above).
    match request.max_stale {
        Some(MaxStale::Any) => return Reuse::StaleAccepted,
        Some(MaxStale::Seconds(limit)) if staleness <= limit => return Reuse::StaleAccepted,
        _ => {}
    }
    if freshness
        .cc
        .stale_while_revalidate
        .is_some_and(|window| staleness <= window)
    {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Validate
}

/// RFC 5861 §4: when the origin cannot be reached or answers 500, 502, 503 or 504, may the
/// stale stored response be served instead? The request's `stale-if-error` or `max-stale`, or
/// the response's `stale-if-error`, must cover the staleness; must-revalidate forbids it
/// (RFC 9111 §5.2.2.2 requires a 504 then).
pub fn usable_on_error(request: &CacheControl, freshness: &Freshness, now: SystemTime) -> bool {
    if freshness.forbids_stale() || request.no_cache {
        return false;
    }
    let staleness = freshness.staleness(now);
    let window = request
        .stale_if_error
        .max(freshness.cc.stale_if_error)
        .unwrap_or(0);
    staleness <= window
        || match request.max_stale {
            Some(MaxStale::Any) => true,
            Some(MaxStale::Seconds(limit)) => staleness <= limit,
            None => false,
        }
}

/// Statuses that count as an origin error for `stale-if-error` (RFC 5861 §4).
pub fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// §4.4: does a response with `status` to a request with `method` invalidate the stored
/// responses for the target URI (and its `Location` / `Content-Location`)? Unsafe methods with
/// a non-error status do.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    !method.is_safe() && (status.is_success() || status.is_redirection())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const T0: u64 = 1_700_000_000;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(at(seconds))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn check(
        method: &str,
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
        config: &PolicyConfig,
    ) -> Result<Storable, NotStored> {
        let request = headers(request);
        let response = headers(response);
        storable(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &request,
            &CacheControl::of_request(&request),
            StatusCode::from_u16(status).unwrap(),
            &response,
            &CacheControl::of(&response),
            config,
        )
    }

    fn store(
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
    ) -> Result<(), NotStored> {
        check("GET", request, status, response, &PolicyConfig::default()).map(|_| ())
    }

    /// §3: only GET and HEAD responses are stored; POST never.
    #[test]
    fn only_get_and_head_are_stored() {
        let fresh = [("cache-control", "max-age=60")];
        assert_eq!(
            check("GET", &[], 200, &fresh, &PolicyConfig::default()).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            check("HEAD", &[], 200, &fresh, &PolicyConfig::default()).map(|_| ()),
            Ok(())
        );
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            assert_eq!(
                check(method, &[], 200, &fresh, &PolicyConfig::default()),
                Err(NotStored::Method),
                "{method}"
            );
        }
    }

    /// §3 and RFC 9110 §15.1: without explicit freshness only the statuses cacheable by default
    /// are stored; with it, any understood final status; never 206 or 304 or 1xx.
    #[test]
    fn statuses_cacheable_by_default_and_explicitly() {
        let last_modified = date(T0 - 1000);
        let heuristic = [("date", &*date(T0)), ("last-modified", &*last_modified)];
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(store(&[], status, &heuristic), Ok(()), "{status}");
        }
        for status in [201, 302, 303, 307, 400, 403, 500, 502, 503] {
            assert_eq!(
                store(&[], status, &heuristic),
                Err(NotStored::Status),
                "{status}"
            );
            assert_eq!(
                store(&[], status, &[("cache-control", "max-age=10")]),
                Ok(()),
                "{status} with max-age"
            );
        }
        assert_eq!(
            store(
                &[],
                302,
                &[("expires", &date(T0 + 60)), ("date", &date(T0))]
            ),
            Ok(()),
            "Expires is explicit freshness"
        );
        assert_eq!(
            store(&[], 302, &[("cache-control", "public"), ("etag", "\"a\"")]),
            Ok(()),
            "public allows storage"
        );
        for status in [206, 304, 100] {
            assert_eq!(
                store(&[], status, &[("cache-control", "max-age=10")]),
                Err(NotStored::Status),
                "{status}"
            );
        }
        assert_eq!(
            store(
                &[],
                200,
                &[
                    ("cache-control", "max-age=10"),
                    ("content-range", "bytes 0-1/5")
                ]
            ),
            Err(NotStored::Status),
            "a partial body is never stored as the whole (§3.3)"
        );
        assert_eq!(
            store(&[], 599, &[("cache-control", "max-age=10")]),
            Err(NotStored::Status)
        );
    }

    /// §5.2.1.5, §5.2.2.5, §5.2.2.3: no-store on either side; must-understand overrides the
    /// response's no-store for understood statuses.
    #[test]
    fn no_store_on_either_side() {
        let fresh = [("cache-control", "max-age=60")];
        assert_eq!(
            store(&[("cache-control", "no-store")], 200, &fresh),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(&[], 200, &[("cache-control", "max-age=60, no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(
                &[],
                200,
                &[("cache-control", "max-age=60, no-store, must-understand")]
            ),
            Ok(())
        );
    }

    /// §5.2.2.7: private responses are not stored by a shared cache, qualified or not.
    #[test]
    fn private_is_not_stored() {
        assert_eq!(
            store(&[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(
                &[],
                200,
                &[("cache-control", "private=\"x-user\", max-age=60")]
            ),
            Err(NotStored::Private)
        );
    }

    /// §3.5: a response to a request with Authorization is shared only with public, s-maxage
    /// or must-revalidate.
    #[test]
    fn authorization_needs_an_explicit_permission() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            store(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(NotStored::Authorization)
        );
        for allowed in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(
                store(&auth, 200, &[("cache-control", allowed)]),
                Ok(()),
                "{allowed}"
            );
        }
    }

    /// Set-Cookie as configured: not stored by default, stripped or stored on request.
    #[test]
    fn set_cookie_follows_the_configuration() {
        let response = [("cache-control", "max-age=60"), ("set-cookie", "id=1")];
        assert_eq!(store(&[], 200, &response), Err(NotStored::SetCookie));
        let strip = PolicyConfig {
            set_cookie: SetCookiePolicy::Strip,
            ..PolicyConfig::default()
        };
        assert_eq!(
            check("GET", &[], 200, &response, &strip),
            Ok(Storable {
                strip_set_cookie: true
            })
        );
        let keep = PolicyConfig {
            set_cookie: SetCookiePolicy::Store,
            ..PolicyConfig::default()
        };
        assert_eq!(
            check("GET", &[], 200, &response, &keep),
            Ok(Storable {
                strip_set_cookie: false
            })
        );
    }

    /// §4.1: Vary: * can never be matched, so it is not stored.
    #[test]
    fn vary_star_is_not_stored() {
        assert_eq!(
            store(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept, *")]
            ),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn responses_that_could_never_be_reused_are_not_stored() {
        assert_eq!(store(&[], 200, &[]), Err(NotStored::NotReusable));
        assert_eq!(
            store(&[], 200, &[("cache-control", "no-cache")]),
            Err(NotStored::NotReusable)
        );
        assert_eq!(
            store(
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")]
            ),
            Ok(())
        );
    }

    fn lifetime(status: u16, pairs: &[(&str, &str)], fraction: f64) -> u64 {
        let headers = headers(pairs);
        freshness_lifetime(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            &CacheControl::of(&headers),
            fraction,
        )
    }

    /// §4.2.1: s-maxage, then max-age, then Expires − Date.
    #[test]
    fn lifetime_precedence() {
        let now = date(T0);
        let expires = date(T0 + 300);
        let all = [
            ("cache-control", "max-age=60, s-maxage=30"),
            ("expires", &*expires),
            ("date", &*now),
        ];
        assert_eq!(lifetime(200, &all, 0.1), 30);
        let no_s = [
            ("cache-control", "max-age=60"),
            ("expires", &*expires),
            ("date", &*now),
        ];
        assert_eq!(lifetime(200, &no_s, 0.1), 60);
        let expires_only = [("expires", &*expires), ("date", &*now)];
        assert_eq!(lifetime(200, &expires_only, 0.1), 300);
    }

    /// §5.3: an invalid Expires, including "0", means already expired; an Expires in the past
    /// gives no lifetime.
    #[test]
    fn invalid_or_past_expires_is_stale() {
        let now = date(T0);
        let last_modified = date(T0 - 10_000);
        for bad in ["0", "tomorrow", ""] {
            let pairs = [
                ("expires", bad),
                ("date", &*now),
                ("last-modified", &*last_modified),
            ];
            assert_eq!(
                lifetime(200, &pairs, 0.1),
                0,
                "{bad:?} (and no heuristic either)"
            );
        }
        let past = date(T0 - 60);
        assert_eq!(
            lifetime(200, &[("expires", &*past), ("date", &*now)], 0.1),
            0
        );
    }

    /// §4.2.2: heuristic freshness is a fraction of Date − Last-Modified, only for statuses
    /// cacheable by default (or public), and never alongside explicit freshness.
    #[test]
    fn heuristic_freshness() {
        let now = date(T0);
        let modified = date(T0 - 10_000);
        let pairs = [("date", &*now), ("last-modified", &*modified)];
        assert_eq!(lifetime(200, &pairs, 0.1), 1000);
        assert_eq!(lifetime(200, &pairs, 0.25), 2500);
        assert_eq!(lifetime(200, &pairs, 0.0), 0, "turned off");
        assert_eq!(lifetime(404, &pairs, 0.1), 1000);
        assert_eq!(
            lifetime(302, &pairs, 0.1),
            0,
            "302 is not heuristically cacheable"
        );
        let public = [
            ("date", &*now),
            ("last-modified", &*modified),
            ("cache-control", "public"),
        ];
        assert_eq!(lifetime(302, &public, 0.1), 1000);
        let explicit = [
            ("date", &*now),
            ("last-modified", &*modified),
            ("cache-control", "max-age=5"),
        ];
        assert_eq!(lifetime(200, &explicit, 0.1), 5);
        let future = date(T0 + 100);
        assert_eq!(
            lifetime(200, &[("date", &*now), ("last-modified", &*future)], 0.1),
            0
        );
        assert_eq!(
            lifetime(200, &[("date", &*now)], 0.1),
            0,
            "nothing to base it on"
        );
    }

    /// §4.2.3: apparent age from Date, corrected by Age and the response delay, plus resident
    /// time.
    #[test]
    fn current_age_calculation() {
        let pairs = [("date", &*date(T0 - 10)), ("age", "3")];
        let h = headers(&pairs);
        // Request sent at T0-2, response received at T0: apparent age 10, corrected Age 3+2.
        assert_eq!(initial_age(&h, at(T0 - 2), at(T0)), 10);
        let h = headers(&[("date", &*date(T0)), ("age", "100")]);
        assert_eq!(initial_age(&h, at(T0 - 2), at(T0)), 102);
        let h = headers(&[("date", &*date(T0 + 50))]);
        assert_eq!(
            initial_age(&h, at(T0), at(T0)),
            0,
            "a Date in the future gives age 0"
        );
        let h = headers(&[("age", "abc"), ("date", &*date(T0))]);
        assert_eq!(
            initial_age(&h, at(T0), at(T0)),
            0,
            "an invalid Age is ignored (§5.1)"
        );
        let h = headers(&[("age", "7, 9"), ("date", &*date(T0))]);
        assert_eq!(
            initial_age(&h, at(T0), at(T0)),
            7,
            "the first member of a list counts"
        );

        let h = headers(&[
            ("date", &*date(T0)),
            ("cache-control", "max-age=60"),
            ("age", "20"),
        ]);
        let freshness = Freshness::of(StatusCode::OK, &h, at(T0), at(T0), 0.1);
        assert_eq!(freshness.current_age(at(T0 + 30)), 50);
        assert!(freshness.is_fresh(at(T0 + 39)));
        assert!(!freshness.is_fresh(at(T0 + 40)));
        assert_eq!(freshness.staleness(at(T0 + 45)), 5);
        assert_eq!(freshness.ttl(at(T0 + 45)), -5);
    }

    fn freshness(cc: &str) -> Freshness {
        let h = headers(&[("date", &*date(T0)), ("cache-control", cc)]);
        Freshness::of(StatusCode::OK, &h, at(T0), at(T0), 0.1)
    }

    fn request(cc: &str) -> CacheControl {
        CacheControl::of_request(&headers(&[("cache-control", cc)]))
    }

    #[test]
    fn fresh_responses_are_reused_and_stale_ones_validated() {
        let f = freshness("max-age=60");
        assert_eq!(
            reuse(&CacheControl::default(), &f, at(T0 + 59)),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(&CacheControl::default(), &f, at(T0 + 60)),
            Reuse::Validate
        );
    }

    /// §5.2.1.4, §5.2.2.4: no-cache in the request or the response forces validation.
    #[test]
    fn no_cache_forces_validation() {
        assert_eq!(
            reuse(&request("no-cache"), &freshness("max-age=60"), at(T0)),
            Reuse::Validate
        );
        assert_eq!(
            reuse(
                &CacheControl::default(),
                &freshness("no-cache, max-age=60"),
                at(T0)
            ),
            Reuse::Validate
        );
    }

    /// §5.2.1.1 max-age and §5.2.1.3 min-fresh narrow what the client accepts.
    #[test]
    fn request_max_age_and_min_fresh() {
        let f = freshness("max-age=60");
        assert_eq!(reuse(&request("max-age=10"), &f, at(T0 + 10)), Reuse::Fresh);
        assert_eq!(
            reuse(&request("max-age=10"), &f, at(T0 + 11)),
            Reuse::Validate
        );
        assert_eq!(
            reuse(&request("max-age=0"), &f, at(T0 + 1)),
            Reuse::Validate
        );
        assert_eq!(
            reuse(&request("min-fresh=20"), &f, at(T0 + 40)),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(&request("min-fresh=20"), &f, at(T0 + 41)),
            Reuse::Validate
        );
    }

    /// §5.2.1.2: max-stale accepts stale responses, within its limit, unless the response says
    /// must-revalidate, proxy-revalidate or s-maxage (§4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10).
    #[test]
    fn max_stale_and_what_forbids_it() {
        let f = freshness("max-age=60");
        assert_eq!(
            reuse(&request("max-stale"), &f, at(T0 + 1000)),
            Reuse::StaleAccepted
        );
        assert_eq!(
            reuse(&request("max-stale=10"), &f, at(T0 + 70)),
            Reuse::StaleAccepted
        );
        assert_eq!(
            reuse(&request("max-stale=10"), &f, at(T0 + 71)),
            Reuse::Validate
        );
        assert_eq!(
            reuse(&request("max-stale, max-age=30"), &f, at(T0 + 70)),
            Reuse::Validate,
            "max-age still bounds the age"
        );
        for strict in [
            "max-age=60, must-revalidate",
            "max-age=60, proxy-revalidate",
            "s-maxage=60",
        ] {
            assert_eq!(
                reuse(&request("max-stale"), &freshness(strict), at(T0 + 70)),
                Reuse::Validate,
                "{strict}"
            );
        }
    }

    /// RFC 5861 §3: stale-while-revalidate serves stale within its window.
    #[test]
    fn stale_while_revalidate_window() {
        let f = freshness("max-age=60, stale-while-revalidate=30");
        assert_eq!(
            reuse(&CacheControl::default(), &f, at(T0 + 30)),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(&CacheControl::default(), &f, at(T0 + 90)),
            Reuse::StaleWhileRevalidate
        );
        assert_eq!(
            reuse(&CacheControl::default(), &f, at(T0 + 91)),
            Reuse::Validate
        );
        assert_eq!(
            reuse(&request("no-cache"), &f, at(T0 + 70)),
            Reuse::Validate
        );
        let strict = freshness("max-age=60, stale-while-revalidate=30, must-revalidate");
        assert_eq!(
            reuse(&CacheControl::default(), &strict, at(T0 + 70)),
            Reuse::Validate
        );
        assert_eq!(f.stale_window(), Duration::from_secs(30));
        assert_eq!(strict.stale_window(), Duration::ZERO);
    }

    /// RFC 5861 §4: stale-if-error in the response or the request, never with must-revalidate.
    #[test]
    fn stale_if_error_window() {
        let f = freshness("max-age=60, stale-if-error=100");
        assert!(usable_on_error(&CacheControl::default(), &f, at(T0 + 160)));
        assert!(!usable_on_error(&CacheControl::default(), &f, at(T0 + 161)));
        let plain = freshness("max-age=60");
        assert!(!usable_on_error(
            &CacheControl::default(),
            &plain,
            at(T0 + 61)
        ));
        assert!(usable_on_error(
            &request("stale-if-error=10"),
            &plain,
            at(T0 + 70)
        ));
        assert!(usable_on_error(
            &request("max-stale"),
            &plain,
            at(T0 + 7000)
        ));
        let strict = freshness("max-age=60, stale-if-error=100, must-revalidate");
        assert!(!usable_on_error(
            &CacheControl::default(),
            &strict,
            at(T0 + 61)
        ));
        assert!(is_error_status(StatusCode::BAD_GATEWAY));
        assert!(!is_error_status(StatusCode::NOT_FOUND));
    }

    /// Regression (found by `properties::freshness_arithmetic_never_overflows`): `ttl` cast the
    /// lifetime with `as i64`, so a lifetime of 2^63 or more (a disk entry's metadata is read
    /// back unchecked) overflowed the subtraction (a panic in debug builds) or, for u64::MAX,
    /// gave -1: a fresh response reported as stale and judged of no further use by the store.
    #[test]
    fn ttl_saturates_for_lifetimes_beyond_i64() {
        for lifetime in [u64::MAX, 1 << 63] {
            let freshness = Freshness {
                cc: CacheControl::default(),
                lifetime,
                initial_age: 0,
                response_time: at(T0),
            };
            assert!(freshness.is_fresh(at(T0 + 10)));
            assert_eq!(freshness.ttl(at(T0 + 10)), i64::MAX - 10);
        }
    }

    /// §4.4: unsafe methods invalidate on success or redirect, not on errors; safe ones never.
    #[test]
    fn invalidation_by_unsafe_methods() {
        assert!(invalidates(&Method::POST, StatusCode::OK));
        assert!(invalidates(&Method::DELETE, StatusCode::NO_CONTENT));
        assert!(invalidates(&Method::PUT, StatusCode::SEE_OTHER));
        assert!(!invalidates(
            &Method::POST,
            StatusCode::INTERNAL_SERVER_ERROR
        ));
        assert!(!invalidates(&Method::POST, StatusCode::NOT_FOUND));
        assert!(!invalidates(&Method::GET, StatusCode::OK));
        assert!(!invalidates(&Method::OPTIONS, StatusCode::OK));
    }

    /// Property tests: the freshness rules do arithmetic on numbers and dates from backends (`Age`,
    /// `Date`, `Expires`, `Last-Modified`, `max-age`, `s-maxage`), from clients (request
    /// directives) and from disk entries (a stored lifetime and age), so no value, however extreme,
    /// may overflow (debug builds panic on it); the lifetime must follow §4.2.1's order, the age
    /// §4.2.3's formula, and serving without validation must only get harder as time passes.
    mod properties {
        use super::*;
        use http::HeaderValue;
        use proptest::prelude::*;

        /// The last second httpdate can write: 9999-12-31T23:59:59Z.
        const LAST_DATE: u64 = 253_402_300_799;
        const CAP: u64 = DELTA_SECONDS_MAX;

        fn at(seconds: u64) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
        }

        /// Any instant a clock may give, before the epoch included.
        fn instant() -> impl Strategy<Value = SystemTime> {
            prop_oneof![
                (0u64..=LAST_DATE).prop_map(at),
                (0u64..1 << 40).prop_map(|s| SystemTime::UNIX_EPOCH - Duration::from_secs(s)),
            ]
        }

        /// A header date: a valid one (seconds since the epoch) or text that is none.
        #[derive(Debug, Clone)]
        enum DateField {
            Valid(u64),
            Junk(&'static str),
        }

        impl DateField {
            fn valid(&self) -> Option<u64> {
                match self {
                    DateField::Valid(seconds) => Some(*seconds),
                    DateField::Junk(_) => None,
                }
            }

            fn text(&self) -> String {
                match self {
                    DateField::Valid(seconds) => {
                        format!(" {} ", httpdate::fmt_http_date(at(*seconds)))
                    }
                    DateField::Junk(text) => (*text).to_owned(),
                }
            }
        }

        fn date_field() -> impl Strategy<Value = DateField> {
            prop_oneof![
                4 => prop_oneof![0u64..=LAST_DATE, Just(0), Just(LAST_DATE)]
                    .prop_map(DateField::Valid),
                1 => prop::sample::select(vec![
                    "0",
                    "",
                    "-1",
                    "tomorrow",
                    "18446744073709551616",
                    "Sun, 32 Nov 1994 08:49:37 GMT",
                ])
                .prop_map(DateField::Junk),
            ]
        }

        /// A delta-seconds argument: a number (huge ones included) or text that is none.
        fn delta_argument() -> impl Strategy<Value = (String, u64)> {
            prop_oneof![
                4 => any::<u128>().prop_map(|n| (n.to_string(), n.min(u128::from(CAP)) as u64)),
                4 => (0u64..10_000).prop_map(|n| (n.to_string(), n)),
                // Invalid means stale: 0 (§4.2.1); too many digits is the cap (§1.2.2).
                1 => prop::sample::select(vec![
                    ("-1", 0),
                    ("1.5", 0),
                    ("", 0),
                    ("abc", 0),
                    ("99999999999999999999999999999999999999999", CAP),
                ])
                .prop_map(|(text, seconds)| (text.to_owned(), seconds)),
            ]
        }

        fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_str(value).expect("test value"));
            }
            map
        }

        /// Directives from both sides, with values at the edges.
        fn directives() -> impl Strategy<Value = String> {
            let directive = prop_oneof![
                prop::sample::select(vec![
                    "no-cache",
                    "no-store",
                    "must-revalidate",
                    "proxy-revalidate",
                    "public",
                    "private",
                    "must-understand",
                    "max-stale",
                    "only-if-cached",
                    "immutable",
                ])
                .prop_map(str::to_owned),
                (
                    prop::sample::select(vec![
                        "max-age",
                        "s-maxage",
                        "max-stale",
                        "min-fresh",
                        "stale-while-revalidate",
                        "stale-if-error",
                    ]),
                    prop_oneof![0u64..200, Just(CAP), Just(u64::MAX)],
                )
                    .prop_map(|(name, n)| format!("{name}={n}")),
            ];
            prop::collection::vec(directive, 0..4).prop_map(|d| d.join(", "))
        }

        fn freshness() -> impl Strategy<Value = Freshness> {
            (
                directives(),
                prop_oneof![any::<u64>(), 0u64..300, Just(u64::MAX), Just(1 << 63)],
                prop_oneof![any::<u64>(), 0u64..300, Just(u64::MAX)],
                instant(),
            )
                .prop_map(|(cc, lifetime, initial_age, response_time)| Freshness {
                    cc: CacheControl::of(&headers(&[("cache-control", cc)])),
                    lifetime,
                    initial_age,
                    response_time,
                })
        }

        fn is_served(reuse: Reuse) -> bool {
            reuse != Reuse::Validate
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// §4.2.1: `s-maxage`, else `max-age`, else `Expires` − `Date` (0 if either is invalid,
            /// §5.3), else the heuristic of §4.2.2 for statuses cacheable by default or `public`;
            /// never more than the 2^31 cap, for any dates from 1970 to 9999.
            #[test]
            fn lifetime_follows_the_rfc_order(
                s_maxage in prop::option::of(delta_argument()),
                max_age in prop::option::of(delta_argument()),
                expires in prop::option::of(date_field()),
                date in prop::option::of(date_field()),
                last_modified in prop::option::of(date_field()),
                status in prop::sample::select(vec![
                    200u16, 203, 206, 301, 302, 404, 410, 500, 503,
                ]),
                public in any::<bool>(),
                fraction in prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
            ) {
                let mut cc = Vec::new();
                if public {
                    cc.push("public".to_owned());
                }
                if let Some((text, _)) = &max_age {
                    cc.push(format!("max-age={text}"));
                }
                if let Some((text, _)) = &s_maxage {
                    cc.push(format!("s-maxage={text}"));
                }
                let mut pairs = vec![("cache-control", cc.join(", "))];
                let dates =
                    [("expires", &expires), ("date", &date), ("last-modified", &last_modified)];
                for (name, field) in dates {
                    if let Some(field) = field {
                        pairs.push((name, field.text()));
                    }
                }
                let headers = headers(&pairs);
                let status = StatusCode::from_u16(status).expect("a status");
                let cc = CacheControl::of(&headers);
                let lifetime = freshness_lifetime(status, &headers, &cc, fraction);
                let between = |later: u64, earlier: u64| later.saturating_sub(earlier).min(CAP);
                let valid = |field: &Option<DateField>| field.as_ref().and_then(DateField::valid);
                let model = if let Some((_, seconds)) = s_maxage {
                    seconds
                } else if let Some((_, seconds)) = max_age {
                    seconds
                } else if expires.is_some() {
                    match (valid(&expires), valid(&date)) {
                        (Some(expires), Some(date)) => between(expires, date),
                        _ => 0,
                    }
                } else if !(heuristically_cacheable(status) || public) || fraction <= 0.0 {
                    0
                } else {
                    match (valid(&last_modified), valid(&date)) {
                        (Some(modified), Some(date)) => {
                            (between(date, modified) as f64 * fraction) as u64
                        }
                        _ => 0,
                    }
                };
                prop_assert_eq!(lifetime, model, "{:?}", headers);
                prop_assert!(lifetime <= CAP);
            }

            /// §4.2.3: the initial age is the larger of the apparent age (response time − `Date`)
            /// and `Age` plus the response delay, capped at 2^31; any `Age` text and any clock
            /// readings (before the epoch, out of order) are handled; more `Age` never means
            /// younger.
            #[test]
            fn initial_age_follows_the_rfc_formula(
                age in prop::option::of(prop_oneof![
                    delta_argument().prop_map(|(text, _)| text),
                    "[0-9]{1,40}, [0-9]{1,3}",
                    "\\PC{0,8}",
                ]),
                date in prop::option::of(date_field()),
                request_time in instant(),
                response_time in instant(),
            ) {
                let mut pairs = Vec::new();
                if let Some(age) = &age {
                    pairs.push(("age", age.clone()));
                }
                if let Some(date) = &date {
                    pairs.push(("date", date.text()));
                }
                let headers = headers(&pairs);
                let initial = initial_age(&headers, request_time, response_time);
                let seconds = |later: SystemTime, earlier: SystemTime| {
                    later.duration_since(earlier).map_or(0, |d| d.as_secs()).min(CAP)
                };
                let apparent = date
                    .as_ref()
                    .and_then(DateField::valid)
                    .map_or(0, |date| seconds(response_time, at(date)));
                let age_value = age_header(&headers).unwrap_or(0);
                let corrected = age_value.saturating_add(seconds(response_time, request_time));
                prop_assert_eq!(initial, apparent.max(corrected).min(CAP));
                prop_assert!(initial <= CAP);
                let mut older = headers.clone();
                older.insert(http::header::AGE, HeaderValue::from(age_value.saturating_add(1)));
                prop_assert!(initial_age(&older, request_time, response_time) >= initial);
            }

            /// Any stored freshness (a disk entry's lifetime and age may be any u64) at any time:
            /// no overflow, and the answers agree: fresh exactly while `ttl` > 0, `ttl` the
            /// lifetime minus the age, stale by the age minus the lifetime.
            #[test]
            fn freshness_arithmetic_never_overflows(
                freshness in freshness(),
                now in instant(),
                request in directives(),
            ) {
                let age = freshness.current_age(now);
                prop_assert!(age <= CAP);
                let ttl = freshness.ttl(now);
                prop_assert_eq!(freshness.is_fresh(now), ttl > 0);
                let exact = i128::from(freshness.lifetime) - i128::from(age);
                // Exact wherever i64 holds the lifetime; beyond, only the sign and size matter.
                if i64::try_from(freshness.lifetime).is_ok() {
                    prop_assert_eq!(i128::from(ttl), exact);
                } else {
                    prop_assert!(ttl >= i64::MAX - i64::try_from(CAP).expect("2^31 fits"));
                }
                prop_assert_eq!(u128::from(freshness.staleness(now)), (-exact).max(0) as u128);
                let request = CacheControl::of_request(&headers(&[("cache-control", request)]));
                let _ = freshness.stale_window();
                let _ = reuse(&request, &freshness, now);
                let _ = usable_on_error(&request, &freshness, now);
            }

            /// Serving without validation only gets harder with time: what may be served at some
            /// time may be served at any earlier one (after the response was received), by `reuse`
            /// and by `usable_on_error` alike; and a `Fresh` answer honours the request's `max-age`
            /// and `min-fresh` (§5.2.1.1, §5.2.1.3).
            #[test]
            fn reuse_is_monotone_in_time(
                freshness in freshness(),
                request in directives(),
                later_by in prop_oneof![0u64..400, any::<u32>().prop_map(u64::from)],
                earlier_by in 0u64..400,
            ) {
                let request = CacheControl::of_request(&headers(&[("cache-control", request)]));
                let later = freshness.response_time + Duration::from_secs(later_by);
                let earlier_secs = later_by.saturating_sub(earlier_by);
                let earlier = freshness.response_time + Duration::from_secs(earlier_secs);
                if is_served(reuse(&request, &freshness, later)) {
                    prop_assert!(is_served(reuse(&request, &freshness, earlier)));
                }
                if usable_on_error(&request, &freshness, later) {
                    prop_assert!(usable_on_error(&request, &freshness, earlier));
                }
                let age = freshness.current_age(later);
                match reuse(&request, &freshness, later) {
                    Reuse::Fresh => {
                        prop_assert!(freshness.lifetime > age);
                        prop_assert!(request.max_age.is_none_or(|max_age| age <= max_age));
                        let left = freshness.lifetime - age;
                        prop_assert!(request.min_fresh.is_none_or(|min_fresh| left >= min_fresh));
                    }
                    Reuse::StaleAccepted | Reuse::StaleWhileRevalidate => {
                        prop_assert!(!freshness.forbids_stale());
                        prop_assert!(!freshness.cc.no_cache && !request.no_cache);
                    }
                    Reuse::Validate => {}
                }
            }

            /// §3: whatever both sides say, a response is stored only when every rule allows it.
            #[test]
            fn only_what_every_rule_allows_is_stored(
                method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "OPTIONS"]),
                request_cc in directives(),
                response_cc in directives(),
                status in prop::sample::select(vec![
                    100u16, 200, 204, 206, 302, 304, 404, 500, 599,
                ]),
                authorization in any::<bool>(),
                set_cookie in any::<bool>(),
                vary in prop::sample::select(vec!["", "accept", "*", "accept, *", " * "]),
                etag in any::<bool>(),
                set_cookie_policy in prop::sample::select(vec![
                    SetCookiePolicy::NoStore,
                    SetCookiePolicy::Strip,
                    SetCookiePolicy::Store,
                ]),
            ) {
                let request = {
                    let mut pairs = vec![("cache-control", request_cc)];
                    if authorization {
                        pairs.push(("authorization", "Bearer x".to_owned()));
                    }
                    headers(&pairs)
                };
                let mut pairs = vec![("cache-control", response_cc), ("vary", vary.to_owned())];
                if set_cookie {
                    pairs.push(("set-cookie", "id=1".to_owned()));
                }
                if etag {
                    pairs.push(("etag", "\"v\"".to_owned()));
                }
                let response = headers(&pairs);
                let request_cc = CacheControl::of_request(&request);
                let response_cc = CacheControl::of(&response);
                let status = StatusCode::from_u16(status).expect("a status");
                let config = PolicyConfig {
                    set_cookie: set_cookie_policy,
                    ..PolicyConfig::default()
                };
                let method = Method::from_bytes(method.as_bytes()).expect("a method");
                let decision = storable(
                    &method,
                    &request,
                    &request_cc,
                    status,
                    &response,
                    &response_cc,
                    &config,
                );
                if let Ok(storable) = decision {
                    prop_assert!(method_is_cacheable(&method) && status_is_understood(status));
                    prop_assert!(!request_cc.no_store);
                    prop_assert!(!response_cc.no_store || response_cc.must_understand);
                    prop_assert!(!response_cc.private && !vary.contains('*'));
                    let shareable = response_cc.public
                        || response_cc.s_maxage.is_some()
                        || response_cc.must_revalidate;
                    prop_assert!(!authorization || shareable);
                    prop_assert!(!set_cookie || set_cookie_policy != SetCookiePolicy::NoStore);
                    let strip = set_cookie && set_cookie_policy == SetCookiePolicy::Strip;
                    prop_assert_eq!(storable.strip_set_cookie, strip);
                    let lifetime = freshness_lifetime(status, &response, &response_cc, 0.1);
                    prop_assert!(etag || lifetime > 0);
                }
            }
        }
    }
}
