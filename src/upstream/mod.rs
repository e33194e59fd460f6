//! Upstream pools: the backends behind a name, how one is chosen for a request, and the pooled
//! client that talks to them.
//!
//! Choosing is two steps: the pool filters its backends down to the eligible ones (health,
//! ejection, drain, circuit breaking, backends already tried, backup tier), then the pool's
//! [`Balancer`] picks among them. Each pool owns its connections to its backends: a keep-alive
//! list per backend (HTTP/1.1), one multiplexed connection per backend (h2c), or connections
//! private to a client connection (PROXY protocol).

pub mod balance;
mod dial;
mod h1;
#[cfg(any(test, feature = "fuzzing"))]
pub use h1::fuzz_responses;
mod h2;
pub mod health;
mod keepalive;
pub mod proxied;
pub mod read_timeout;
pub mod retry;
pub mod state;
pub mod sticky;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use smallvec::SmallVec;

pub use balance::{Balancer, Candidate};
pub use h1::DirectBody;
pub use state::{Availability, BackendRegistry, BackendState, Outcome};

use crate::body::{RequestBody, UpstreamBody};
use crate::config::{BalancePolicy, PoolConfig, Timeouts, UpstreamProtocol};
use balance::{HashRing, LeastRequests, PeakEwmaBalancer, SmoothRoundRobin, WeightedRandom};
use retry::RetryPolicy;
use state::EjectionPolicy;
use sticky::StickyCookie;

/// Parses a backend address `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 address).
pub fn parse_backend_address(text: &str) -> Result<Authority, String> {
    let complaint = || {
        format!(
            "{text:?} is not a backend address; write HOST:PORT, e.g. \"127.0.0.1:9000\" or \"app.internal:80\""
        )
    };
    if text.contains("://") || text.contains('/') || text.contains('@') {
        return Err(complaint());
    }
    let authority: Authority = text.parse().map_err(|_| complaint())?;
    match authority.port_u16() {
        Some(port) if port > 0 && !authority.host().is_empty() => Ok(authority),
        _ => Err(complaint()),
    }
}

/// One backend server.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Position in the pool's backend list.
    pub index: usize,
    /// `host:port` to connect to.
    pub authority: Authority,
    /// Configured share of the traffic.
    pub weight: u32,
    /// Used only while no primary backend is available.
    pub backup: bool,
    /// What is known about it at run time (shared across config reloads).
    pub state: Arc<BackendState>,
    /// Metric handles, registered on first use.
    pub metrics: std::sync::OnceLock<crate::observe::metrics::BackendMetrics>,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The request path.
    Path,
    /// The path and query.
    Uri,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
}

impl HashKey {
    /// Parses `client_ip`, `path`, `uri`, `header:NAME` or `cookie:NAME`.
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let complaint = || {
            format!(
                "{text:?} is not a hash key; use client_ip, path, uri, header:NAME or cookie:NAME"
            )
        };
        match text {
            "client_ip" => Ok(HashKey::ClientIp),
            "path" => Ok(HashKey::Path),
            "uri" => Ok(HashKey::Uri),
            _ => match text.split_once(':') {
                Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(HashKey::Header)
                    .map_err(|_| complaint()),
                Some(("cookie", name)) if !name.is_empty() => Ok(HashKey::Cookie(name.to_owned())),
                _ => Err(complaint()),
            },
        }
    }
}

/// What the pool needs to know about a request to choose its backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectionKey {
    /// Hash of the request's hash key, for `balance = "hash"`.
    pub hash: Option<u64>,
    /// The backend the sticky cookie names.
    pub sticky: Option<usize>,
}

/// Why no backend could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// The pool has no backend left to try.
    NoBackend,
    /// Every eligible backend is at `max_connections` and the queue is full (or the wait ran out).
    Overloaded,
}

/// A chosen backend, counted in flight until dropped.
#[derive(Debug)]
pub struct BackendLease {
    state: Arc<BackendState>,
    released: Arc<tokio::sync::Notify>,
    /// Index of the backend in its pool.
    pub index: usize,
}

impl Drop for BackendLease {
    fn drop(&mut self) {
        self.state.release();
        self.released.notify_one();
    }
}

/// Why a request to a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made; the request never reached the backend.
    Connect {
        /// The connect timeout ran out (rather than a refusal or reset).
        timed_out: bool,
        /// The cause chain, for the log.
        cause: String,
    },
    /// The connection failed after the request was sent, or the response was invalid.
    Failed(String),
    /// The client's request body failed (unreadable, over its cap, or too slow); the backend
    /// is not at fault.
    ClientBody {
        /// What was wrong with it.
        fault: crate::body::ClientFault,
        /// The cause, for the log.
        cause: String,
    },
}

/// How a pool reaches its backends.
enum Transport {
    /// HTTP/1.1 keep-alive connections (plain or TLS), a list per backend.
    Http1(keepalive::KeepAlivePool),
    /// One multiplexed h2c connection per backend; the URI authority is sent as `:authority`.
    H2c(h2::H2Connections),
    /// Connections that start with a PROXY header, private to one client connection.
    Proxied(proxied::ProxiedTransport),
}

/// A named group of backends and the means to reach them.
pub struct UpstreamPool {
    /// The pool's name from the config.
    pub name: Arc<str>,
    /// Backends in config order.
    pub backends: Vec<Backend>,
    /// Chooses a backend per request.
    pub balancer: Box<dyn Balancer>,
    /// The policy's name, for the admin view.
    pub policy: BalancePolicy,
    /// What the hash policy hashes.
    pub hash_key: Option<HashKey>,
    /// Session affinity.
    pub sticky: Option<StickyCookie>,
    slow_start: Option<Duration>,
    max_connections: Option<u32>,
    max_pending: u32,
    pending: AtomicU32,
    /// Woken when a request to any of the pool's backends finishes, for queued requests.
    released: Arc<tokio::sync::Notify>,
    queue_wait: Duration,
    ejection: EjectionPolicy,
    failure_statuses: Vec<u16>,
    max_ejected_percent: u32,
    /// Retry rules and budget.
    pub retry: RetryPolicy,
    /// Counter of retries, registered on first use.
    pub retries: std::sync::OnceLock<metrics::Counter>,
    /// Active health checks, when configured.
    pub health_check: Option<Arc<health::HealthCheck>>,
    transport: Transport,
    /// HTTP version spoken to the backends.
    pub protocol: UpstreamProtocol,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("backends", &self.backends)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// Builds a pool from its (validated) config, with fresh backend state.
    pub fn new(name: &str, config: &PoolConfig, timeouts: &Timeouts) -> Result<Self, String> {
        Self::with_registry(name, config, timeouts, &BackendRegistry::new())
    }

    /// Builds a pool from its (validated) config, taking each backend's state from `registry`
    /// so an unchanged backend keeps its health, ejection and latency across a reload.
    pub fn with_registry(
        name: &str,
        config: &PoolConfig,
        timeouts: &Timeouts,
        registry: &BackendRegistry,
    ) -> Result<Self, String> {
        let backends = config
            .backends
            .get_ref()
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let entry = entry.get_ref();
                parse_backend_address(&entry.address).map(|authority| Backend {
                    index,
                    state: registry.state_for(name, authority.as_str()),
                    authority,
                    weight: entry.weight,
                    backup: entry.backup,
                    metrics: std::sync::OnceLock::new(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = config
            .connect_timeout
            .unwrap_or(timeouts.upstream_connect)
            .0;
        let idle_timeout = config.idle_timeout.unwrap_or(timeouts.upstream_idle).0;
        let tls = config.tls.as_ref().and_then(|t| t.get_ref().0.clone());
        let proxy_header = config.proxy_protocol.as_ref().map(|v| *v.get_ref());
        let transport = match (config.protocol, &tls, proxy_header) {
            (protocol, tls, Some(version)) => Transport::Proxied(proxied::ProxiedTransport::new(
                version,
                connect_timeout,
                tls.as_ref(),
                protocol == UpstreamProtocol::H2c,
            )?),
            (UpstreamProtocol::Http1, tls, None) => {
                let tls = match tls {
                    // No ALPN: an HTTP/1.1-only client need not offer any (RFC 7301 §3.1).
                    Some(spec) => Some(dial::UpstreamTlsSide::new(spec, &[])?),
                    None => None,
                };
                Transport::Http1(keepalive::KeepAlivePool::new(
                    dial::Dialer::new(connect_timeout, tls, false),
                    backends.len(),
                    config.max_idle_per_backend,
                    idle_timeout,
                ))
            }
            (UpstreamProtocol::H2c, tls, None) => {
                let tls = match tls {
                    Some(spec) => Some(dial::UpstreamTlsSide::new(spec, &[b"h2"])?),
                    None => None,
                };
                Transport::H2c(h2::H2Connections::new(backends.len(), connect_timeout, tls))
            }
        };
        let balancer: Box<dyn Balancer> = match config.balance {
            BalancePolicy::RoundRobin => Box::new(SmoothRoundRobin::new(backends.len())),
            BalancePolicy::LeastRequests => Box::new(LeastRequests::new()),
            BalancePolicy::PeakEwma => Box::new(PeakEwmaBalancer::new()),
            BalancePolicy::Random => Box::new(WeightedRandom::new()),
            BalancePolicy::Hash => Box::new(HashRing::new(
                &backends
                    .iter()
                    .map(|b| (b.authority.as_str().to_owned(), b.weight))
                    .collect::<Vec<_>>(),
            )),
        };
        let hash_key = match (config.balance, &config.hash_key) {
            (BalancePolicy::Hash, Some(key)) => Some(HashKey::parse(key.get_ref())?),
            (BalancePolicy::Hash, None) => Some(HashKey::ClientIp),
            _ => None,
        };
        let sticky = config.sticky.as_ref().map(|s| {
            let s = s.get_ref();
            let addresses: Vec<&str> = backends.iter().map(|b| b.authority.as_str()).collect();
            StickyCookie::new(
                &s.cookie,
                s.secret.as_deref(),
                registry.sticky_secret(),
                s.max_age.map(|d| d.0),
                name,
                &addresses,
            )
        });
        let health_check = config
            .health_check
            .as_ref()
            .map(|h| {
                health::HealthCheck::new(h.get_ref(), tls.as_ref(), config.protocol)
                    .map(|check| check.with_proxy_header(proxy_header))
            })
            .transpose()?
            .map(Arc::new);
        if config.health_check.is_none() {
            // Checks removed by a reload: their last verdict must not hold a backend down.
            for backend in &backends {
                backend.state.clear_check();
            }
        }
        let outlier = config.outlier();
        Ok(UpstreamPool {
            name: Arc::from(name),
            balancer,
            policy: config.balance,
            hash_key,
            sticky,
            slow_start: config.slow_start.map(|d| d.0),
            max_connections: config
                .max_connections
                .as_ref()
                .map(|n| u32::try_from(*n.get_ref()).unwrap_or(u32::MAX)),
            max_pending: config
                .max_pending
                .as_ref()
                .map_or(0, |n| u32::try_from(*n.get_ref()).unwrap_or(u32::MAX)),
            pending: AtomicU32::new(0),
            released: Arc::new(tokio::sync::Notify::new()),
            queue_wait: connect_timeout,
            ejection: EjectionPolicy {
                consecutive_failures: outlier.consecutive_failures,
                base: outlier.ejection_time.0,
                max: outlier.max_ejection_time.0,
            },
            failure_statuses: outlier.failure_statuses,
            max_ejected_percent: outlier.max_ejected_percent,
            retry: RetryPolicy::new(&config.retry(), tokio::time::Instant::now()),
            retries: std::sync::OnceLock::new(),
            health_check,
            transport,
            protocol: config.protocol,
            backends,
        })
    }

    /// Sends `request` to `backend`.
    ///
    /// The connection is chosen by `backend`. For HTTP/1.1 `Host` is sent as a header and the
    /// request target in origin form (a URI scheme and authority are dropped); for h2c the URI
    /// authority is what the backend sees as `:authority`.
    ///
    /// Not an `async fn`, so the future holds the chosen transport's state only, not the request
    /// beside it.
    pub fn send<'a>(
        &'a self,
        backend: &'a Backend,
        request: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        type Other<'a> =
            Pin<Box<dyn Future<Output = Result<Response<Incoming>, UpstreamError>> + Send + 'a>>;
        let other: Other<'a> = match &self.transport {
            Transport::Http1(pool) => return Either::Left(pool.send(backend, request)),
            // Boxed, so their larger futures do not grow the common HTTP/1.1 path's.
            Transport::H2c(connections) => Box::pin(connections.send(backend, request)),
            Transport::Proxied(transport) => Box::pin(transport.send(backend, request)),
        };
        Either::Right(other.map(|sent| sent.map(|r| r.map(UpstreamBody::from))))
    }

    /// True when the pool's backend connections start with a PROXY header: requests must then
    /// carry a [`proxied::ClientOrigin`].
    pub fn sends_proxy_header(&self) -> bool {
        matches!(self.transport, Transport::Proxied(_))
    }

    /// The URI scheme of requests to this pool's backends.
    pub fn scheme(&self) -> http::uri::Scheme {
        match &self.transport {
            Transport::Http1(pool) if pool.is_tls() => http::uri::Scheme::HTTPS,
            Transport::H2c(connections) if connections.is_tls() => http::uri::Scheme::HTTPS,
            Transport::Proxied(transport) if transport.is_tls() => http::uri::Scheme::HTTPS,
            _ => http::uri::Scheme::HTTP,
        }
    }

    /// The selection key of a request: its hash key and sticky backend.
    pub fn selection_key(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        client: IpAddr,
    ) -> SelectionKey {
        let hash = self.hash_key.as_ref().and_then(|key| {
            let hashed = |bytes: &[u8]| Some(HashRing::key_hash(bytes));
            match key {
                HashKey::ClientIp => match client {
                    IpAddr::V4(ip) => hashed(&ip.octets()),
                    IpAddr::V6(ip) => hashed(&ip.octets()),
                },
                HashKey::Path => hashed(uri.path().as_bytes()),
                HashKey::Uri => hashed(
                    uri.path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .as_bytes(),
                ),
                HashKey::Header(name) => headers.get(name).and_then(|v| hashed(v.as_bytes())),
                HashKey::Cookie(name) => {
                    sticky::cookie_value(headers, name).and_then(|v| hashed(v.as_bytes()))
                }
            }
        });
        let sticky = self.sticky.as_ref().and_then(|s| s.backend_of(headers));
        SelectionKey { hash, sticky }
    }

    /// Chooses a backend for a request, leaving out the backends in `tried`, and counts the
    /// request in flight on it. A saturated pool makes the request wait (up to the connect
    /// timeout) for a free slot when its queue has room.
    pub async fn select(
        &self,
        key: SelectionKey,
        tried: &[usize],
    ) -> Result<BackendLease, SelectError> {
        self.select_at(key, tried, &mut tokio::time::Instant::now())
            .await
    }

    /// [`select`](Self::select) with the time already read by the caller; a request that waits
    /// for a free slot reads it again, and `now` is when the backend was leased.
    pub async fn select_at(
        &self,
        key: SelectionKey,
        tried: &[usize],
        now: &mut tokio::time::Instant,
    ) -> Result<BackendLease, SelectError> {
        let deadline = *now + self.queue_wait;
        let mut queued = None;
        loop {
            match self.try_select(key, tried, *now) {
                Choice::Leased(lease) => return Ok(lease),
                Choice::Nothing => return Err(SelectError::NoBackend),
                Choice::Saturated => {
                    if queued.is_none() {
                        if self.max_pending == 0
                            || self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending
                        {
                            if self.max_pending != 0 {
                                self.pending.fetch_sub(1, Ordering::AcqRel);
                            }
                            return Err(SelectError::Overloaded);
                        }
                        queued = Some(PendingSlot(&self.pending));
                    }
                    let released = self.released.notified();
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(SelectError::Overloaded);
                    }
                    *now = tokio::time::Instant::now();
                }
            }
        }
    }

    fn try_select(&self, key: SelectionKey, tried: &[usize], now: tokio::time::Instant) -> Choice {
        let limit = self.max_connections;
        if let Some(index) = key.sticky
            && !tried.contains(&index)
            && let Some(backend) = self.backends.get(index)
            && backend.state.availability(now) == Availability::Available
            // A session parked on a backup moves back once a primary is available.
            && (!backend.backup || !self.any_primary_available(now))
            && backend.state.try_acquire(limit)
        {
            return Choice::Leased(self.lease(backend));
        }
        // On the stack for pools of up to 16 backends: no allocation per request.
        let mut candidates: SmallVec<[Candidate; 16]> = SmallVec::new();
        let mut saturated: Option<(usize, u32)> = None;
        for backup in [false, true] {
            for backend in self.backends.iter().filter(|b| b.backup == backup) {
                if tried.contains(&backend.index) {
                    continue;
                }
                let Some((latency_ns, factor)) = backend.state.eligibility(
                    self.slow_start,
                    now,
                    self.policy == BalancePolicy::PeakEwma,
                ) else {
                    continue;
                };
                let in_flight = backend.state.in_flight();
                if limit.is_some_and(|limit| in_flight >= limit) {
                    if saturated.is_none_or(|(_, load)| in_flight < load) {
                        saturated = Some((backend.index, in_flight));
                    }
                    continue;
                }
                candidates.push(Candidate {
                    index: backend.index,
                    weight: (f64::from(backend.weight) * factor).max(f64::MIN_POSITIVE),
                    in_flight,
                    latency_ns,
                });
            }
            if !candidates.is_empty() || saturated.is_some() {
                break;
            }
        }
        if candidates.is_empty() && saturated.is_none() {
            // Every backend is down or ejected. Rather than fail every request, try them anyway
            // (as nginx does when all its servers are marked failed): a check may be wrong, and a
            // request that fails costs no more than a 503.
            candidates = self
                .backends
                .iter()
                .filter(|b| !tried.contains(&b.index) && !b.state.is_draining())
                .map(|b| self.candidate(b, b.state.in_flight(), now))
                .collect();
        }
        // Another request may take the last slot between the count and the acquire: pick again.
        for _ in 0..3 {
            let Some(index) = self.balancer.pick(&candidates, key.hash) else {
                break;
            };
            let Some(backend) = self.backends.get(index) else {
                break;
            };
            if backend.state.try_acquire(limit) {
                return Choice::Leased(self.lease(backend));
            }
            candidates.retain(|c| c.index != index);
            saturated.get_or_insert((index, 0));
        }
        if saturated.is_some() {
            Choice::Saturated
        } else {
            Choice::Nothing
        }
    }

    fn any_primary_available(&self, now: tokio::time::Instant) -> bool {
        self.backends
            .iter()
            .any(|b| !b.backup && b.state.availability(now) == Availability::Available)
    }

    fn candidate(&self, backend: &Backend, in_flight: u32, now: tokio::time::Instant) -> Candidate {
        let factor = backend.state.slow_start_factor(self.slow_start, now);
        Candidate {
            index: backend.index,
            weight: (f64::from(backend.weight) * factor).max(f64::MIN_POSITIVE),
            in_flight,
            latency_ns: backend.state.latency_ns(now),
        }
    }

    fn lease(&self, backend: &Backend) -> BackendLease {
        BackendLease {
            state: backend.state.clone(),
            released: self.released.clone(),
            index: backend.index,
        }
    }

    /// The backend at `index`.
    pub fn backend(&self, index: usize) -> Option<&Backend> {
        self.backends.get(index)
    }

    /// Whether a backend's response status counts as a failure for passive health checks.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.contains(&status)
    }

    /// Records the outcome of a request to backend `index` for passive health checks, ejecting
    /// the backend when it has failed too often in a row (within the pool's ejection cap).
    pub fn record_outcome(&self, index: usize, outcome: Outcome) {
        self.record_outcome_at(index, outcome, tokio::time::Instant::now());
    }

    /// [`record_outcome`](Self::record_outcome) with the time already read by the caller.
    pub fn record_outcome_at(&self, index: usize, outcome: Outcome, now: tokio::time::Instant) {
        let Some(backend) = self.backends.get(index) else {
            return;
        };
        let may_eject = outcome == Outcome::Failure && {
            let ejected = self
                .backends
                .iter()
                .filter(|b| b.state.is_ejected(now))
                .count();
            let cap = (self.backends.len() * self.max_ejected_percent as usize / 100).max(1);
            ejected < cap
        };
        if let Some(length) = backend
            .state
            .record_outcome(outcome, &self.ejection, may_eject, now)
        {
            tracing::warn!(
                pool = %self.name,
                backend = %backend.authority,
                seconds = length.as_secs_f64(),
                "backend ejected after consecutive failures"
            );
        }
    }
}

/// A pool as the admin view shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolSnapshot {
    /// Pool name.
    pub name: String,
    /// Balancing policy.
    pub balance: String,
    /// Each backend, in config order.
    pub backends: Vec<BackendView>,
}

/// One backend in the admin view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendView {
    /// `host:port`.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// A backup backend.
    pub backup: bool,
    /// `available`, `down`, `ejected` or `draining`.
    pub status: &'static str,
    /// Live state.
    #[serde(flatten)]
    pub state: state::BackendSnapshot,
}

impl UpstreamPool {
    /// The pool's backends with their health, load, latency and ejection state.
    pub fn snapshot(&self) -> PoolSnapshot {
        let now = tokio::time::Instant::now();
        PoolSnapshot {
            name: self.name.to_string(),
            balance: self.policy.as_str().to_owned(),
            backends: self
                .backends
                .iter()
                .map(|b| BackendView {
                    address: b.authority.to_string(),
                    weight: b.weight,
                    backup: b.backup,
                    status: match b.state.availability(now) {
                        Availability::Available => "available",
                        Availability::Down => "down",
                        Availability::Ejected => "ejected",
                        Availability::Draining => "draining",
                    },
                    state: b.state.snapshot(now),
                })
                .collect(),
        }
    }
}

enum Choice {
    Leased(BackendLease),
    /// Nothing free right now, but some backend will be when a request finishes.
    Saturated,
    Nothing,
}

/// A place in a pool's queue of requests waiting for a saturated backend.
struct PendingSlot<'a>(&'a AtomicU32);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An error and its sources on one line, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(toml_text: &str) -> UpstreamPool {
        pool_in(toml_text, &BackendRegistry::new())
    }

    fn pool_in(toml_text: &str, registry: &BackendRegistry) -> UpstreamPool {
        let config: PoolConfig = toml::from_str(toml_text).expect("pool config");
        UpstreamPool::with_registry("app", &config, &Timeouts::default(), registry).expect("pool")
    }

    async fn pick(pool: &UpstreamPool, key: SelectionKey, tried: &[usize]) -> Option<usize> {
        pool.select(key, tried).await.ok().map(|lease| lease.index)
    }

    fn mark_down(pool: &UpstreamPool, index: usize) {
        let state = &pool.backends[index].state;
        state.record_check(false, 1, 1, tokio::time::Instant::now());
    }

    const THREE: &str =
        r#"backends = ["127.0.0.1:1", "127.0.0.1:2", { address = "127.0.0.1:3", backup = true }]"#;

    #[tokio::test]
    async fn backups_serve_only_while_no_primary_is_available() {
        let pool = pool(THREE);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(pick(&pool, SelectionKey::default(), &[]).await);
        }
        assert!(seen.iter().all(|s| matches!(s, Some(0 | 1))), "{seen:?}");
        mark_down(&pool, 0);
        assert_eq!(pick(&pool, SelectionKey::default(), &[]).await, Some(1));
        mark_down(&pool, 1);
        assert_eq!(pick(&pool, SelectionKey::default(), &[]).await, Some(2));
    }

    #[tokio::test]
    async fn with_every_backend_down_the_pool_still_tries_them() {
        let pool = pool(THREE);
        for i in 0..3 {
            mark_down(&pool, i);
        }
        assert!(pick(&pool, SelectionKey::default(), &[]).await.is_some());
        pool.backends[0].state.set_draining(true);
        assert_eq!(pick(&pool, SelectionKey::default(), &[1, 2]).await, None);
    }

    #[tokio::test]
    async fn tried_backends_are_left_out_until_none_is_left() {
        let pool = pool(THREE);
        assert_eq!(pick(&pool, SelectionKey::default(), &[0]).await, Some(1));
        assert_eq!(pick(&pool, SelectionKey::default(), &[0, 1]).await, Some(2));
        assert_eq!(
            pool.select(SelectionKey::default(), &[0, 1, 2]).await.err(),
            Some(SelectError::NoBackend)
        );
    }

    #[tokio::test]
    async fn a_sticky_key_wins_while_its_backend_is_available() {
        let pool = pool(&format!("{THREE}\nsticky = {{ secret = \"k\" }}"));
        let key = SelectionKey {
            hash: None,
            sticky: Some(1),
        };
        for _ in 0..5 {
            assert_eq!(pick(&pool, key, &[]).await, Some(1));
        }
        mark_down(&pool, 1);
        assert_eq!(pick(&pool, key, &[]).await, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_backend_refuses_at_once_or_queues_when_allowed() {
        let pool = pool(
            r#"backends = ["127.0.0.1:1"]
max_connections = 1"#,
        );
        let held = pool
            .select(SelectionKey::default(), &[])
            .await
            .expect("first");
        assert_eq!(
            pool.select(SelectionKey::default(), &[]).await.err(),
            Some(SelectError::Overloaded)
        );
        drop(held);
        let queued = Arc::new(pool_in(
            r#"backends = ["127.0.0.1:1"]
max_connections = 1
max_pending = 1"#,
            &BackendRegistry::new(),
        ));
        let held = queued
            .select(SelectionKey::default(), &[])
            .await
            .expect("first");
        let waiter = {
            let queued = queued.clone();
            tokio::spawn(async move { queued.select(SelectionKey::default(), &[]).await.is_ok() })
        };
        tokio::task::yield_now().await;
        // The queue (one place) is taken by the waiter: a third request is refused.
        assert_eq!(
            queued.select(SelectionKey::default(), &[]).await.err(),
            Some(SelectError::Overloaded)
        );
        drop(held);
        assert!(waiter.await.expect("waiter"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gives_up_after_the_connect_timeout() {
        let pool = Arc::new(pool(
            r#"backends = ["127.0.0.1:1"]
max_connections = 1
max_pending = 4
connect_timeout = "1s""#,
        ));
        let _held = pool
            .select(SelectionKey::default(), &[])
            .await
            .expect("first");
        assert_eq!(
            pool.select(SelectionKey::default(), &[]).await.err(),
            Some(SelectError::Overloaded)
        );
    }

    #[tokio::test]
    async fn at_most_the_configured_share_of_a_pool_is_ejected() {
        let pool = pool(
            r#"backends = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]
outlier = { consecutive_failures = 1, max_ejected_percent = 50 }"#,
        );
        for i in 0..4 {
            pool.record_outcome(i, Outcome::Failure);
        }
        let now = tokio::time::Instant::now();
        let ejected = pool
            .backends
            .iter()
            .filter(|b| b.state.is_ejected(now))
            .count();
        assert_eq!(ejected, 2);
    }

    #[tokio::test]
    async fn a_reload_keeps_the_state_of_unchanged_backends() {
        let registry = BackendRegistry::new();
        let before = pool_in(
            r#"backends = ["127.0.0.1:1", "127.0.0.1:2"]
health_check = { path = "/" }"#,
            &registry,
        );
        mark_down(&before, 1);
        let after = pool_in(
            r#"backends = ["127.0.0.1:2", "127.0.0.1:3"]
health_check = { path = "/health" }"#,
            &registry,
        );
        assert_eq!(
            after.backends[0]
                .state
                .availability(tokio::time::Instant::now()),
            Availability::Down
        );
        assert!(Arc::ptr_eq(
            &before.backends[1].state,
            &after.backends[0].state
        ));
        assert!(!after.backends[1].state.checked());
        let snapshot = after.snapshot();
        assert_eq!(snapshot.backends[0].status, "down");
        assert_eq!(snapshot.backends[1].status, "available");
        // Checks removed: their verdict goes with them.
        let unchecked = pool_in(r#"backends = ["127.0.0.1:2"]"#, &registry);
        assert_eq!(unchecked.snapshot().backends[0].status, "available");
    }

    #[test]
    fn hash_keys_parse() {
        assert_eq!(HashKey::parse("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(
            HashKey::parse("header:X-User"),
            Ok(HashKey::Header(http::HeaderName::from_static("x-user")))
        );
        assert_eq!(
            HashKey::parse("cookie:sid"),
            Ok(HashKey::Cookie("sid".into()))
        );
        for bad in ["", "ip", "header:", "cookie:", "header:a b"] {
            assert!(HashKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backend_addresses_need_a_host_and_a_port() {
        assert_eq!(
            parse_backend_address("127.0.0.1:9000").unwrap().port_u16(),
            Some(9000)
        );
        assert_eq!(parse_backend_address("[::1]:80").unwrap().host(), "[::1]");
        assert!(parse_backend_address("app.internal:8080").is_ok());
        for bad in [
            "127.0.0.1",
            "http://a:1",
            "a:1/x",
            "a:http",
            "a:0",
            ":80",
            "a:99999",
            "u@a:1",
            "",
        ] {
            assert!(
                parse_backend_address(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
