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

    /// Seconds left before the response goes stale (0 once stale): `Cache-Status`'s `ttl`.
    pub fn ttl(&self, now: SystemTime) -> i64 {
        self.lifetime as i64 - self.current_age(now) as i64
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
}
