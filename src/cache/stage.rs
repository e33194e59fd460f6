//! The cache's place in the request pipeline: [`RouteCache::lookup`] before the backend is
//! asked (answer from the store, or say how to forward), [`Forwarding::on_response`] after
//! (refresh on 304, serve stale on error, or stream the response to the client while a
//! [`Fill`] copies it into the store).
//!
//! The stored response is the backend's response, before compression and header edits: the
//! pipeline applies those to hits exactly as to responses that come from the backend, so a hit
//! is coded for the client that asked for it, and one stored copy serves every coding.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};

use super::coalesce::{self, Acquired, FillGuard, FillOutcome, Locks};
use super::conditional;
use super::directives::CacheControl;
use super::disk::{DiskLimits, DiskStore};
use super::key::{KeyOptions, QueryKey};
use super::policy::{self, Freshness, PolicyConfig, Reuse};
use super::range::{self, RangeAnswer};
use super::status::{CacheStatus, Forward};
use super::store::{Found, Store, StoredResponse};
use super::targeted;
use super::vary;
use crate::body::{BodyTap, IncomingBody, UpstreamBody};
use crate::config::{CacheSettings, KeyQueryMode, RouteCacheSettings, SetCookieMode};
use crate::observe::metrics::Metrics;
use crate::protect::ip::IpList;

/// How many times a request waits for another's fetch before fetching itself.
const MAX_WAITS: usize = 2;

/// The cache shared by every route and kept across reloads: the memory store and the locks of
/// the fetches in flight.
#[derive(Debug)]
pub struct CacheState {
    /// The memory tier.
    pub store: Store,
    locks: Arc<Locks>,
    /// The key options of the latest configuration (for purges by URL from the admin API).
    key_options: Mutex<Arc<KeyOptions>>,
}

impl CacheState {
    /// The key options of the latest configuration.
    pub fn key_options(&self) -> Arc<KeyOptions> {
        self.key_options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Keeps the one [`CacheState`] across reloads while its size stays the same.
#[derive(Debug, Default)]
pub struct CacheRegistry {
    state: Mutex<Weak<CacheState>>,
}

impl CacheRegistry {
    /// The live state if it has `max_size` and `disk`, a new one otherwise (empty in memory;
    /// a disk tier that fails to open is logged and left out).
    pub fn state_for(&self, max_size: u64, disk: Option<&DiskLimits>) -> Arc<CacheState> {
        let mut slot = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = slot.upgrade()
            && state.store.max_size() == max_size
            && state.store.disk().map(|d| d.limits()) == disk
        {
            return state;
        }
        let disk = disk.and_then(|limits| match DiskStore::open(limits.clone()) {
            Ok(disk) => Some(Arc::new(disk)),
            Err(error) => {
                tracing::error!(dir = %limits.dir.display(), %error, "cache disk tier not opened");
                None
            }
        });
        let state = Arc::new(CacheState {
            store: Store::with_disk(max_size, disk),
            locks: Arc::new(Locks::default()),
            key_options: Mutex::new(Arc::new(KeyOptions::default())),
        });
        *slot = Arc::downgrade(&state);
        state
    }

    /// The live state, if any route caches.
    pub fn current(&self) -> Option<Arc<CacheState>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }
}

/// Metric handles of one route's cache.
#[derive(Debug)]
struct CacheMetrics {
    hit: metrics::Counter,
    stale: metrics::Counter,
    revalidated: metrics::Counter,
    miss: metrics::Counter,
    bypass: metrics::Counter,
    stored: metrics::Counter,
    stored_bytes: metrics::Counter,
    size: metrics::Gauge,
    entries: metrics::Gauge,
}

impl CacheMetrics {
    fn new(metrics: &Metrics, route: &str) -> CacheMetrics {
        let result = |result: &str| {
            metrics.counter(
                "gatehouse_cache_requests_total",
                &[("route", route), ("result", result)],
            )
        };
        CacheMetrics {
            hit: result("hit"),
            stale: result("stale"),
            revalidated: result("revalidated"),
            miss: result("miss"),
            bypass: result("bypass"),
            stored: metrics.counter("gatehouse_cache_stored_total", &[("route", route)]),
            stored_bytes: metrics
                .counter("gatehouse_cache_stored_bytes_total", &[("route", route)]),
            size: metrics.gauge("gatehouse_cache_size_bytes", &[]),
            entries: metrics.gauge("gatehouse_cache_entries", &[]),
        }
    }
}

/// One route's cache: the shared store and the route's settings.
#[derive(Debug)]
pub struct RouteCache {
    state: Arc<CacheState>,
    policy: PolicyConfig,
    max_object_size: u64,
    lock_timeout: Duration,
    refresh_timeout: Duration,
    /// What makes the key of a request (`cache.key_*`).
    key: Arc<KeyOptions>,
    /// Who may send `PURGE` (`cache.purge_allow`); empty: nobody.
    purge_allow: Arc<IpList>,
    /// Remove `Surrogate-Key` and `Cache-Tag` from what clients get.
    strip_surrogate_keys: bool,
    /// Targeted cache-control fields this cache obeys, first present wins (RFC 9213).
    targeted: Arc<[HeaderName]>,
    /// Remove the targeted fields from what clients get.
    strip_targeted: bool,
    route: Arc<str>,
    metrics: OnceLock<Arc<CacheMetrics>>,
}

impl RouteCache {
    /// The cache of a route, or `None` when caching is off for it; an error when
    /// `cache.purge_allow` cannot be read.
    pub fn for_route(
        route: Arc<str>,
        global: &CacheSettings,
        own: Option<&RouteCacheSettings>,
        registry: &CacheRegistry,
    ) -> Result<Option<Arc<RouteCache>>, String> {
        let enabled = own.map_or(global.enabled, |o| o.enabled);
        if !enabled {
            return Ok(None);
        }
        let purge_allow = IpList::parse_entries(global.purge_allow.iter().map(|e| e.get_ref()))
            .map_err(|e| format!("cache.purge_allow: {e}"))?;
        let strings = |list: &[serde_spanned::Spanned<String>]| -> Vec<String> {
            list.iter().map(|e| e.get_ref().clone()).collect()
        };
        let key = Arc::new(KeyOptions::new(
            match global.key_query {
                KeyQueryMode::AsIs => QueryKey::AsIs,
                KeyQueryMode::Sorted => QueryKey::Sorted,
                KeyQueryMode::Ignore => QueryKey::Ignore,
            },
            strings(&global.key_ignore_query),
            &strings(&global.key_headers),
            &strings(&global.key_cookies),
        )?);
        let state = registry.state_for(
            global.max_size.get_ref().0,
            global.disk.as_ref().map(|d| d.get_ref().limits()).as_ref(),
        );
        *state.key_options.lock().unwrap_or_else(|e| e.into_inner()) = key.clone();
        let set_cookie = own.and_then(|o| o.set_cookie).unwrap_or(global.set_cookie);
        Ok(Some(Arc::new(RouteCache {
            state,
            key,
            policy: PolicyConfig {
                heuristic_fraction: *own
                    .and_then(|o| o.heuristic_fraction.as_ref())
                    .unwrap_or(&global.heuristic_fraction)
                    .get_ref(),
                set_cookie: match set_cookie {
                    SetCookieMode::NoStore => policy::SetCookiePolicy::NoStore,
                    SetCookieMode::Strip => policy::SetCookiePolicy::Strip,
                    SetCookieMode::Store => policy::SetCookiePolicy::Store,
                },
            },
            max_object_size: own
                .and_then(|o| o.max_object_size.as_ref())
                .unwrap_or(&global.max_object_size)
                .get_ref()
                .0,
            lock_timeout: own
                .and_then(|o| o.lock_timeout)
                .unwrap_or(global.lock_timeout)
                .0,
            refresh_timeout: global.refresh_timeout.0,
            purge_allow: Arc::new(purge_allow),
            strip_surrogate_keys: global.strip_surrogate_keys,
            targeted: global
                .targeted_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.get_ref().as_bytes()).ok())
                .collect(),
            strip_targeted: global.strip_targeted_headers,
            route,
            metrics: OnceLock::new(),
        })))
    }

    /// Answers a `PURGE` of the request's URL from `client`: every stored variant of it is
    /// removed when `client` is in `cache.purge_allow` (`200` with `{"purged": N}`), else
    /// `403`.
    pub fn purge(&self, scheme: &str, host: &str, uri: &http::Uri, client: IpAddr) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut cache_status = CacheStatus::forward(Forward::Method);
        if !self.purge_allow.contains(client) {
            cache_status.detail = Some("purge-refused");
            return Answer {
                status: StatusCode::FORBIDDEN,
                headers,
                body: Bytes::from_static(
                    b"{\"error\": \"PURGE is not allowed from this address\"}\n",
                ),
                cache_status,
            };
        }
        let key = self.key.primary_key(scheme, host, uri);
        let purged = usize::from(self.state.store.remove(&key));
        tracing::info!(url = %key, purged, %client, "cache purged by a PURGE request");
        cache_status.detail = Some("purged");
        Answer {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(format!("{{\"purged\": {purged}}}\n")),
            cache_status,
        }
    }

    /// The shared state (for purges and tests).
    pub fn state(&self) -> &Arc<CacheState> {
        &self.state
    }

    fn metrics(&self, metrics: &Metrics) -> Arc<CacheMetrics> {
        self.metrics
            .get_or_init(|| Arc::new(CacheMetrics::new(metrics, &self.route)))
            .clone()
    }

    /// Looks `request` up before it goes to the backend. On [`Lookup::Forward`] the request's
    /// headers may have been changed: the client's `If-None-Match` / `If-Modified-Since` are
    /// replaced by the stored response's validators (or removed on a miss, so the backend
    /// sends a whole response the cache can store).
    ///
    /// `background` says whether a stale response within its `stale-while-revalidate` window
    /// may be served at once while the pipeline refreshes it in the background
    /// ([`Lookup::AnswerAndRefresh`]); without it such a response is revalidated first.
    pub async fn lookup<B>(
        self: &Arc<Self>,
        metrics: &Metrics,
        scheme: &str,
        host: &str,
        request: &mut Request<B>,
        background: bool,
    ) -> Lookup {
        let handles = self.metrics(metrics);
        let method = request.method().clone();
        let key = self.key.primary_key(scheme, host, request.uri());
        let mut forwarding = Forwarding {
            cache: self.clone(),
            metrics: handles.clone(),
            key: key.clone(),
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            method: method.clone(),
            request_headers: HeaderMap::new(),
            request_cc: CacheControl::default(),
            request_time: SystemTime::now(),
            mode: Mode::Bypass,
            stale: None,
            guard: None,
            status: CacheStatus::forward(Forward::Bypass),
        };
        if !policy::method_is_cacheable(&method) {
            forwarding.status = CacheStatus::forward(Forward::Method);
            if !method.is_safe() {
                forwarding.mode = Mode::Invalidate;
            }
            return Lookup::Forward(Box::new(forwarding));
        }
        // Conditionals only the origin can evaluate go to it as they are.
        if conditional::origin_only_conditionals(request.headers()) {
            return Lookup::Forward(Box::new(forwarding));
        }
        // A `Range` is served from a stored whole response; without one it goes to the origin.
        let ranged = method == Method::GET && request.headers().contains_key(header::RANGE);
        let request_cc = CacheControl::of_request(request.headers());
        // With the keyed cookies as fields of their own, for selecting variants.
        forwarding.request_headers = self.key.keying_headers(request.headers());
        forwarding.request_cc = request_cc.clone();
        let mut collapsed = false;
        for attempt in 0..=MAX_WAITS {
            let now = SystemTime::now();
            let found = match self.state.store.find(&key, &forwarding.request_headers) {
                Found::Hit(stored) => Found::Hit(stored),
                missed => match self
                    .state
                    .store
                    .find_on_disk(&key, &forwarding.request_headers)
                    .await
                {
                    Some(stored) => Found::Hit(stored),
                    None => missed,
                },
            };
            let (reason, stale) = match found {
                Found::Hit(stored) => match policy::reuse(&request_cc, &stored.freshness, now) {
                    Reuse::Fresh => {
                        handles.hit.increment(1);
                        let mut status = CacheStatus::hit(stored.freshness.ttl(now));
                        status.collapsed = collapsed;
                        return Lookup::Answer(forwarding.answer(&stored, now, status));
                    }
                    Reuse::StaleAccepted => {
                        handles.stale.increment(1);
                        let mut status = CacheStatus::hit(stored.freshness.ttl(now));
                        status.detail = Some("stale");
                        return Lookup::Answer(forwarding.answer(&stored, now, status));
                    }
                    Reuse::StaleWhileRevalidate if background => {
                        handles.stale.increment(1);
                        // RFC 9211 §2.1: `hit` means this request was not forwarded; the
                        // refresh is a request of its own, so no `fwd` here.
                        let mut status = CacheStatus::hit(stored.freshness.ttl(now));
                        status.detail = Some("stale-while-revalidate");
                        let answer = forwarding.answer(&stored, now, status);
                        // At most one refresh per URL at a time: if a fetch is already in
                        // flight, it refreshes the entry for this request too.
                        let Acquired::Leader(guard) = self.state.locks.acquire(&key) else {
                            return Lookup::Answer(answer);
                        };
                        forwarding.guard = Some(guard);
                        forwarding.mode = Mode::Fill;
                        // A HEAD's refresh fetches the GET it is answered from.
                        forwarding.method = Method::GET;
                        forwarding.status = CacheStatus::forward(Forward::Stale);
                        forwarding.prepare(request.headers_mut(), Some(stored));
                        return Lookup::AnswerAndRefresh(answer, Box::new(forwarding));
                    }
                    Reuse::StaleWhileRevalidate | Reuse::Validate => {
                        let plain = policy::reuse(&CacheControl::default(), &stored.freshness, now);
                        let reason =
                            if matches!(plain, Reuse::Validate | Reuse::StaleWhileRevalidate) {
                                Forward::Stale
                            } else {
                                Forward::Request
                            };
                        (reason, Some(stored))
                    }
                },
                Found::VaryMiss => (Forward::VaryMiss, None),
                Found::Miss => (Forward::UriMiss, None),
            };
            if request_cc.only_if_cached {
                // RFC 9111 §5.2.1.7: nothing usable without going forward.
                handles.miss.increment(1);
                let mut status = CacheStatus::forward(reason);
                status.detail = Some("only-if-cached");
                return Lookup::Answer(Answer {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    headers: HeaderMap::new(),
                    body: Bytes::new(),
                    cache_status: status,
                });
            }
            forwarding.status = CacheStatus::forward(reason);
            forwarding.status.collapsed = collapsed;
            if ranged && stale.is_none() {
                // Nothing stored to cut the range from: the range goes to the origin as asked
                // (its 206 is not stored). The size is unknown until the response comes, and
                // fetching a whole large object to serve a few bytes would make this client
                // wait for all of it; a plain GET fills the cache.
                forwarding.status.detail = Some("range");
                forwarding.prepare(request.headers_mut(), None);
                return Lookup::Forward(Box::new(forwarding));
            }
            // A HEAD miss is forwarded as it is and not stored: a GET fills the cache.
            forwarding.mode = if method == Method::GET {
                Mode::Fill
            } else {
                Mode::Bypass
            };
            // Requests whose own directives send them forward do not wait for others.
            if reason != Forward::Request && attempt < MAX_WAITS && forwarding.mode == Mode::Fill {
                match self.state.locks.acquire(&key) {
                    Acquired::Leader(guard) => forwarding.guard = Some(guard),
                    Acquired::Follower(receiver) => {
                        if coalesce::wait(receiver, self.lock_timeout).await == FillOutcome::Stored
                        {
                            collapsed = true;
                            continue;
                        }
                    }
                }
            }
            forwarding.prepare(request.headers_mut(), stale);
            return Lookup::Forward(Box::new(forwarding));
        }
        forwarding.prepare(request.headers_mut(), None);
        Lookup::Forward(Box::new(forwarding))
    }
}

/// The key of a request: scheme, host (lowercase, default port dropped) and the path and
/// query as the client sent them (after path normalisation).
pub fn primary_key(scheme: &str, host: &str, uri: &http::Uri) -> Arc<str> {
    key_of(
        scheme,
        host,
        uri.path_and_query().map_or("/", |pq| pq.as_str()),
    )
}

/// The key of `target` (path and query, as the key options left it) on `scheme://host`.
pub fn key_of(scheme: &str, host: &str, target: &str) -> Arc<str> {
    let mut host = host.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    if let Some(stripped) = host.strip_suffix(default_port) {
        host.truncate(stripped.len());
    }
    Arc::from(format!("{scheme}://{host}{target}"))
}

/// What the lookup decided.
pub enum Lookup {
    /// Answer from the cache (or with 504 for `only-if-cached`); nothing goes to the backend.
    Answer(Answer),
    /// Answer from the cache now with a stale response (within its `stale-while-revalidate`
    /// window), and refresh it in the background: send the request (its headers prepared for
    /// the revalidation, method GET) to the backend apart from the client, and hand the
    /// response to [`Forwarding::on_response`], then read its body to the end (so it is
    /// stored). The forwarding holds the URL's fetch lock until it ends or is dropped.
    AnswerAndRefresh(Answer, Box<Forwarding>),
    /// Go to the backend, then hand the response to [`Forwarding::on_response`].
    Forward(Box<Forwarding>),
}

/// A response made by the cache.
#[derive(Debug)]
pub struct Answer {
    /// Its status (the stored one, 304 for a client that has it, 504 for `only-if-cached`).
    pub status: StatusCode,
    /// Its headers, `Age` included.
    pub headers: HeaderMap,
    /// Its body (empty for HEAD and 304).
    pub body: Bytes,
    /// What the cache did, for `Cache-Status`.
    pub cache_status: CacheStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward and pass the response through untouched.
    Bypass,
    /// Forward, store the response if it may be.
    Fill,
    /// An unsafe method: a successful response invalidates the URL (RFC 9111 §4.4).
    Invalidate,
}

/// A request on its way to the backend, and what the cache needs to handle the response.
pub struct Forwarding {
    cache: Arc<RouteCache>,
    metrics: Arc<CacheMetrics>,
    key: Arc<str>,
    scheme: String,
    host: String,
    method: Method,
    /// The client's request headers as they arrived (conditionals included).
    request_headers: HeaderMap,
    request_cc: CacheControl,
    request_time: SystemTime,
    mode: Mode,
    /// The stored response being revalidated or replaced.
    stale: Option<Arc<StoredResponse>>,
    guard: Option<FillGuard>,
    status: CacheStatus,
}

/// What the pipeline does with the backend's response.
pub enum Completed {
    /// Answer from the cache instead (a 304 refreshed the stored response, or a stale one is
    /// served on error).
    Answer(Answer),
    /// Send the backend's response on (its body possibly copied into the cache).
    Pass(Response<IncomingBody>, CacheStatus),
}

impl Forwarding {
    /// The `Cache-Status` so far.
    pub fn cache_status(&self) -> &CacheStatus {
        &self.status
    }

    /// How long a background refresh may take in all (`cache.refresh_timeout`).
    pub fn refresh_timeout(&self) -> Duration {
        self.cache.refresh_timeout
    }

    /// The most body bytes worth reading for the store.
    pub fn max_object_size(&self) -> u64 {
        self.cache.max_object_size
    }

    /// Replaces the client's validators with the stored response's, or removes them.
    fn prepare(&mut self, headers: &mut HeaderMap, stale: Option<Arc<StoredResponse>>) {
        self.request_time = SystemTime::now();
        if self.mode != Mode::Fill {
            self.stale = stale;
            return;
        }
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        // What is fetched to be stored is the whole response.
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
        if let Some(stored) = &stale {
            for (name, value) in conditional::upstream_validators(&stored.headers) {
                headers.insert(name, value);
            }
        }
        self.stale = stale;
    }

    /// The answer from `stored` for this request at `now`: a 304 when the client's own
    /// validators match, else the stored response with its current `Age`.
    fn answer(
        &self,
        stored: &StoredResponse,
        now: SystemTime,
        cache_status: CacheStatus,
    ) -> Answer {
        let age = HeaderValue::from(stored.freshness.current_age(now));
        if conditional::client_has_it(
            &self.method,
            &self.request_headers,
            stored.status,
            &stored.headers,
        ) {
            let mut headers = conditional::not_modified_headers(&stored.headers);
            headers.insert(header::AGE, age);
            self.strip_for_client(&mut headers);
            return Answer {
                status: StatusCode::NOT_MODIFIED,
                headers,
                body: Bytes::new(),
                cache_status,
            };
        }
        let mut headers = stored.headers.clone();
        headers.insert(header::AGE, age);
        self.strip_for_client(&mut headers);
        let length = stored.body.len() as u64;
        let wanted = if self.method == Method::GET && stored.status == StatusCode::OK {
            range::evaluate(&self.request_headers, &stored.headers, length)
        } else {
            RangeAnswer::Full
        };
        let (status, body) = match wanted {
            RangeAnswer::Full => (
                stored.status,
                if self.method == Method::HEAD {
                    Bytes::new()
                } else {
                    stored.body.clone()
                },
            ),
            RangeAnswer::Partial { start, end } => {
                let content_range = format!("bytes {start}-{end}/{length}");
                if let Ok(value) = HeaderValue::from_str(&content_range) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                // Both are within the body: `range::parse` clamps `end` below `length`.
                let body = stored.body.slice(start as usize..=end as usize);
                (StatusCode::PARTIAL_CONTENT, body)
            }
            RangeAnswer::Unsatisfiable => {
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                return Answer {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    headers,
                    body: Bytes::new(),
                    cache_status,
                };
            }
        };
        let bodiless =
            stored.status == StatusCode::NO_CONTENT || stored.status == StatusCode::NOT_MODIFIED;
        if !bodiless {
            let declared = if status == StatusCode::PARTIAL_CONTENT {
                body.len()
            } else {
                stored.body.len()
            };
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
        }
        Answer {
            status,
            headers,
            body,
            cache_status,
        }
    }

    /// The backend could not be reached: a stale response the rules allow serving on error
    /// (RFC 5861 `stale-if-error`), if there is one.
    pub fn on_error(self) -> Option<Answer> {
        let stale = self.stale.as_ref()?;
        let now = SystemTime::now();
        if !policy::usable_on_error(&self.request_cc, &stale.freshness, now) {
            return None;
        }
        self.metrics.stale.increment(1);
        let mut status = CacheStatus::hit(stale.freshness.ttl(now));
        status.fwd = self.status.fwd;
        status.detail = Some("stale-if-error");
        Some(self.answer(stale, now, status))
    }

    /// Handles the backend's response.
    pub fn on_response(mut self, response: Response<UpstreamBody>) -> Completed {
        let response_time = SystemTime::now();
        let status = response.status();
        self.status.fwd_status = Some(status.as_u16());
        if self.mode != Mode::Fill {
            self.metrics.bypass.increment(1);
        }
        match self.mode {
            Mode::Bypass => return self.pass(response.map(Into::into)),
            Mode::Invalidate => {
                if policy::invalidates(&self.method, status) {
                    self.invalidate(response.headers());
                }
                return self.pass(response.map(Into::into));
            }
            Mode::Fill => {}
        }
        if let Some(stale) = self.stale.clone() {
            if status == StatusCode::NOT_MODIFIED
                && conditional::updates(&stale.headers, response.headers())
            {
                let refreshed = Arc::new(refresh(
                    &stale,
                    response.headers(),
                    self.request_time,
                    response_time,
                    &self.cache,
                ));
                self.cache
                    .state
                    .store
                    .replace(&self.key, &stale, refreshed.clone());
                if let Some(guard) = self.guard.take() {
                    guard.finish(FillOutcome::Stored);
                }
                self.metrics.revalidated.increment(1);
                let now = SystemTime::now();
                let mut cache_status = self.status.clone();
                cache_status.ttl = Some(refreshed.freshness.ttl(now));
                return Completed::Answer(self.answer(&refreshed, now, cache_status));
            }
            if policy::is_error_status(status)
                && policy::usable_on_error(&self.request_cc, &stale.freshness, response_time)
            {
                self.metrics.stale.increment(1);
                let mut cache_status = CacheStatus::hit(stale.freshness.ttl(response_time));
                cache_status.fwd = self.status.fwd;
                cache_status.fwd_status = Some(status.as_u16());
                cache_status.detail = Some("stale-if-error");
                return Completed::Answer(self.answer(&stale, response_time, cache_status));
            }
        }
        self.metrics.miss.increment(1);
        let storable = {
            // RFC 9213: a targeted field speaks for Cache-Control and Expires to this cache.
            let view = targeted::policy_view(response.headers(), &self.cache.targeted);
            let response_cc = CacheControl::of(&view);
            policy::storable(
                &self.method,
                &self.request_headers,
                &self.request_cc,
                status,
                &view,
                &response_cc,
                &self.cache.policy,
            )
        };
        let storable = match storable {
            Ok(storable) => storable,
            Err(reason) => {
                self.status.detail = Some(reason.as_str());
                // What was stored is superseded by a response that may not be stored.
                if self.stale.is_some() && status != StatusCode::NOT_MODIFIED {
                    self.cache.state.store.remove(&self.key);
                }
                return self.pass(response.map(Into::into));
            }
        };
        let declared = http_body::Body::size_hint(response.body()).exact();
        if declared.is_some_and(|length| length > self.cache.max_object_size) {
            self.status.detail = Some("too-large");
            return self.pass(response.map(Into::into));
        }
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers.clone();
        crate::proxy::headers::remove_hop_by_hop(&mut headers);
        if storable.strip_set_cookie {
            headers.remove(header::SET_COOKIE);
        }
        conditional::ensure_date(&mut headers, response_time);
        let freshness = Freshness::of(
            status,
            &targeted::policy_view(&headers, &self.cache.targeted),
            self.request_time,
            response_time,
            self.cache.policy.heuristic_fraction,
        );
        self.status.stored = true;
        self.status.ttl = Some(freshness.ttl(response_time));
        let mut vary_fields = vary::fields(&headers);
        // Keyed headers and cookies make variants as if the response varied on them.
        for field in self.cache.key.vary_fields() {
            if !vary_fields.contains(field) {
                vary_fields.push(field.clone());
            }
        }
        let vary_key = vary::secondary_key(&vary_fields, &self.request_headers);
        let capacity = declared.unwrap_or(0).min(self.cache.max_object_size) as usize;
        let fill = Fill {
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            key: self.key.clone(),
            pending: Some((status, headers, freshness, vary_fields, vary_key)),
            body: BytesMut::with_capacity(capacity),
            guard: self.guard.take(),
        };
        let cache_status = self.status.clone();
        let mut parts = parts;
        self.strip_for_client(&mut parts.headers);
        Completed::Pass(
            Response::from_parts(parts, IncomingBody::tapped(body, Box::new(fill))),
            cache_status,
        )
    }

    fn pass(self, mut response: Response<IncomingBody>) -> Completed {
        self.strip_for_client(response.headers_mut());
        let status = self.status.clone();
        Completed::Pass(response, status)
    }

    /// Removes what is for the cache only from a response going to the client.
    fn strip_for_client(&self, headers: &mut HeaderMap) {
        if self.cache.strip_surrogate_keys {
            headers.remove(super::tags::SURROGATE_KEY);
            headers.remove(super::tags::CACHE_TAG);
        }
        if self.cache.strip_targeted {
            for name in self.cache.targeted.iter() {
                headers.remove(name);
            }
        }
    }

    /// RFC 9111 §4.4: the target URI and the same-host `Location` / `Content-Location`.
    fn invalidate(&self, response: &HeaderMap) {
        let store = &self.cache.state.store;
        store.remove(&self.key);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = response
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = match target.authority() {
                None => target.path().starts_with('/'),
                Some(authority) => authority.as_str().eq_ignore_ascii_case(&self.host),
            };
            if same_host {
                store.remove(
                    &self
                        .cache
                        .key
                        .primary_key(&self.scheme, &self.host, &target),
                );
            }
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        update_gauges(&self.cache, &self.metrics);
    }
}

fn update_gauges(cache: &RouteCache, metrics: &CacheMetrics) {
    metrics.size.set(cache.state.store.weighted_size() as f64);
    metrics.entries.set(cache.state.store.entry_count() as f64);
}

/// §4.3.4: the stored response with the 304's header fields, and its freshness recomputed from
/// the 304's exchange.
fn refresh(
    stale: &StoredResponse,
    not_modified: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    cache: &RouteCache,
) -> StoredResponse {
    let mut headers = stale.headers.clone();
    conditional::update_headers(&mut headers, not_modified);
    // The old Date and Age describe the old exchange.
    if !not_modified.contains_key(header::AGE) {
        headers.remove(header::AGE);
    }
    if !not_modified.contains_key(header::DATE) {
        headers.remove(header::DATE);
        conditional::ensure_date(&mut headers, response_time);
    }
    StoredResponse {
        status: stale.status,
        freshness: Freshness::of(
            stale.status,
            &targeted::policy_view(&headers, &cache.targeted),
            request_time,
            response_time,
            cache.policy.heuristic_fraction,
        ),
        headers,
        body: stale.body.clone(),
        vary_fields: stale.vary_fields.clone(),
        vary_key: stale.vary_key.clone(),
    }
}

type Pending = (
    StatusCode,
    HeaderMap,
    Freshness,
    Vec<http::HeaderName>,
    Vec<Option<String>>,
);

/// Copies a backend response into the store as it streams to the client; stores it once the
/// whole body has passed within `max_object_size`.
struct Fill {
    cache: Arc<RouteCache>,
    metrics: Arc<CacheMetrics>,
    key: Arc<str>,
    /// The head; `None` once the copy is given up.
    pending: Option<Pending>,
    body: BytesMut,
    guard: Option<FillGuard>,
}

impl Fill {
    fn give_up(&mut self) {
        self.pending = None;
        self.body = BytesMut::new();
        if let Some(guard) = self.guard.take() {
            guard.finish(FillOutcome::NotStored);
        }
    }
}

impl BodyTap for Fill {
    fn data(&mut self, chunk: &Bytes) {
        if self.pending.is_none() {
            return;
        }
        if (self.body.len() + chunk.len()) as u64 > self.cache.max_object_size {
            self.give_up();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    fn trailers(&mut self) {
        // Trailers are not stored; a response that needs them is not stored either.
        self.give_up();
    }

    fn end(&mut self, complete: bool) {
        let Some((status, headers, freshness, vary_fields, vary_key)) = self.pending.take() else {
            return;
        };
        if !complete {
            self.give_up();
            return;
        }
        let body = std::mem::take(&mut self.body).freeze();
        self.metrics.stored.increment(1);
        self.metrics.stored_bytes.increment(body.len() as u64);
        self.cache.state.store.insert(
            &self.key,
            StoredResponse {
                status,
                headers,
                body,
                freshness,
                vary_fields,
                vary_key,
            },
        );
        update_gauges(&self.cache, &self.metrics);
        if let Some(guard) = self.guard.take() {
            guard.finish(FillOutcome::Stored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scheme_host_and_target_with_default_ports_dropped() {
        let uri: http::Uri = "/a/b?x=1".parse().unwrap();
        assert_eq!(
            &*primary_key("http", "Example.COM:80", &uri),
            "http://example.com/a/b?x=1"
        );
        assert_eq!(
            &*primary_key("https", "example.com:443", &uri),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(
            &*primary_key("http", "example.com:8080", &uri),
            "http://example.com:8080/a/b?x=1"
        );
        assert_eq!(
            &*primary_key("https", "example.com:80", &uri),
            "https://example.com:80/a/b?x=1"
        );
    }
}
