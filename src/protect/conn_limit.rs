//! Connection limits of a listener: `max_connections`, `max_connections_per_ip`,
//! `max_requests_per_ip` and `new_connections_per_ip`.
//!
//! **Where.** Connection limits are decided in the accept loop, on the TCP peer's address, before
//! any TLS or HTTP work: a refused connection costs an `accept` and a `close`. On a
//! `proxy_protocol` listener only `max_connections` is decided at accept; the per-client limits
//! wait for the header, which names the client ([`ConnLimiter::admit_client`]). The request limit
//! is decided per request, before routing. Neither sees forwarding headers, so behind a proxy
//! every client is the proxy.
//!
//! **Client key.** IPv4 addresses (and IPv4-mapped IPv6) count as themselves; IPv6 addresses
//! count by their /64, since one host commonly holds a whole /64 and could otherwise rotate
//! through it (as the route rate limit does).
//!
//! **Counting.** Open connections are one atomic per listener. Per-client counts live in a map
//! split into [`SHARDS`] mutex-guarded shards (each lock is held for a hash-map update and nothing
//! else). A client has an entry only while it has a counted connection or request: the entry is
//! removed when both counts reach zero, so the table never holds more entries than there are
//! open connections, and idle clients are forgotten at once. Counts are given back by guards
//! ([`ConnGuard`], [`RequestGuard`]) on drop — also when the task holding them panics or is
//! cancelled — so a count cannot leak.
//!
//! **New-connection rate.** A [`RateLimiter`] (GCRA on a bounded, idle-forgetting moka table) keyed
//! on the client: the same algorithm and table as route rate limits.
//!
//! **Reloads.** A listener that a reload keeps hands its table (and, when the rate is unchanged,
//! its rate limiter) to the new settings, so connections open at the reload stay counted.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderMap;
use tokio::time::Instant;

use super::rate_limit::RateLimiter;
use crate::config::{ListenerConfig, OneOrMany, RateLimitSettings};

/// Shards of the per-client table.
pub const SHARDS: usize = 64;

/// Most clients the new-connection rate limiter remembers (least recently seen forgotten first).
pub const RATE_MAX_KEYS: usize = 100_000;

/// Why a connection (or request) was refused; the `reason` label of the refusal metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's `allow`/`deny` lists.
    Acl,
    /// `max_connections`.
    Limit,
    /// `max_connections_per_ip` (or, for requests, `max_requests_per_ip`).
    PerIp,
    /// `new_connections_per_ip`.
    Rate,
    /// A `proxy_protocol` listener's connection sent no valid PROXY header in time.
    ProxyProtocol,
}

impl Refusal {
    /// Every reason, in [`Refusal::index`] order.
    pub const ALL: [Refusal; 5] = [
        Refusal::Acl,
        Refusal::Limit,
        Refusal::PerIp,
        Refusal::Rate,
        Refusal::ProxyProtocol,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Acl => "acl",
            Refusal::Limit => "limit",
            Refusal::PerIp => "per_ip",
            Refusal::Rate => "rate",
            Refusal::ProxyProtocol => "proxy_protocol",
        }
    }

    /// Position in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        match self {
            Refusal::Acl => 0,
            Refusal::Limit => 1,
            Refusal::PerIp => 2,
            Refusal::Rate => 3,
            Refusal::ProxyProtocol => 4,
        }
    }
}

/// The limits of one listener, as configured; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnLimitSettings {
    /// Most connections open at once on the listener.
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client.
    pub max_connections_per_ip: Option<usize>,
    /// Most requests in flight at once from one client, over all its connections.
    pub max_requests_per_ip: Option<usize>,
    /// New connections one client may open: `"20/s"` and the like.
    pub new_connections_per_ip: Option<String>,
    /// Connections over the rate a client may open at once (default: one second's worth).
    pub new_connections_burst: Option<u32>,
}

impl ConnLimitSettings {
    /// The limits set on `listener`.
    pub fn of(listener: &ListenerConfig) -> Self {
        ConnLimitSettings {
            max_connections: listener.max_connections.as_ref().map(|m| *m.get_ref()),
            max_connections_per_ip: listener
                .max_connections_per_ip
                .as_ref()
                .map(|m| *m.get_ref()),
            max_requests_per_ip: listener.max_requests_per_ip.as_ref().map(|m| *m.get_ref()),
            new_connections_per_ip: listener
                .new_connections_per_ip
                .as_ref()
                .map(|r| r.get_ref().clone()),
            new_connections_burst: listener
                .new_connections_burst
                .as_ref()
                .map(|b| *b.get_ref()),
        }
    }
}

/// The route rate-limit settings a new-connection rate stands for (keyed on the client).
pub fn rate_settings(rate: &str, burst: Option<u32>) -> RateLimitSettings {
    RateLimitSettings {
        rate: rate.to_owned(),
        burst,
        key: OneOrMany(vec!["client_ip".to_owned()]),
        max_keys: RATE_MAX_KEYS,
    }
}

/// The key a client is counted under: IPv4 as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

/// What one client has open.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    connections: usize,
    requests: usize,
}

/// Which of a client's counts a guard holds.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Connections,
    Requests,
}

impl Counts {
    fn get(&mut self, slot: Slot) -> &mut usize {
        match slot {
            Slot::Connections => &mut self.connections,
            Slot::Requests => &mut self.requests,
        }
    }
}

/// The counts of one listener, kept across reloads.
#[derive(Debug)]
pub struct ConnTable {
    open: AtomicUsize,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<IpAddr, Counts>>]>,
}

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable {
            open: AtomicUsize::new(0),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ConnTable {
    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Counts>> {
        let hash = self.hasher.hash_one(key);
        let index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        // A panic while a shard is locked cannot leave a count half-updated: take it as it is.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one to `key`'s `slot` unless it is already at `max`.
    fn try_add(&self, key: IpAddr, slot: Slot, max: usize) -> bool {
        let mut shard = self.shard(&key);
        let counts = shard.entry(key).or_default();
        let count = counts.get(slot);
        if *count >= max {
            let empty = counts.connections == 0 && counts.requests == 0;
            if empty {
                shard.remove(&key);
            }
            return false;
        }
        *count += 1;
        true
    }

    fn release(&self, key: IpAddr, slot: Slot) {
        let mut shard = self.shard(&key);
        if let Some(counts) = shard.get_mut(&key) {
            let count = counts.get(slot);
            *count = count.saturating_sub(1);
            if counts.connections == 0 && counts.requests == 0 {
                shard.remove(&key);
            }
        }
    }

    /// Connections open on the listener (counted whether or not a limit is set).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Clients with a counted connection or request in flight.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// One listener's limits and counts.
pub struct ConnLimiter {
    settings: ConnLimitSettings,
    new_connections: Option<Arc<RateLimiter>>,
    table: Arc<ConnTable>,
}

impl std::fmt::Debug for ConnLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLimiter")
            .field("settings", &self.settings)
            .field("open", &self.table.open())
            .finish_non_exhaustive()
    }
}

impl ConnLimiter {
    /// A limiter for `settings`. With `previous` (the same listener before a reload), its counts
    /// carry over, and so does its rate table when the rate is unchanged.
    pub fn new(
        settings: &ConnLimitSettings,
        previous: Option<&ConnLimiter>,
    ) -> Result<ConnLimiter, String> {
        let new_connections = match &settings.new_connections_per_ip {
            None => None,
            Some(rate) => {
                let wanted = rate_settings(rate, settings.new_connections_burst);
                match previous.and_then(|p| p.new_connections.as_ref()) {
                    Some(old) if *old.settings() == wanted => Some(old.clone()),
                    _ => Some(Arc::new(
                        RateLimiter::new(&wanted)
                            .map_err(|e| format!("new_connections_per_ip: {e}"))?,
                    )),
                }
            }
        };
        Ok(ConnLimiter {
            settings: settings.clone(),
            new_connections,
            table: previous.map_or_else(Arc::default, |p| p.table.clone()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &ConnLimitSettings {
        &self.settings
    }

    /// The counts (shared with the limiters before and after a reload).
    pub fn table(&self) -> &Arc<ConnTable> {
        &self.table
    }

    /// Decides a new connection from `ip` at `now`: a guard to hold for as long as the
    /// connection is open, or why it must be closed. Checks the cheapest limits first; a refused
    /// connection takes nothing (not even a token of the rate).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<ConnGuard, Refusal> {
        let mut guard = self.admit_connection()?;
        self.admit_client(&mut guard, ip, now)?;
        Ok(guard)
    }

    /// The first half of [`ConnLimiter::admit`], for a connection whose client is not known yet
    /// (a `proxy_protocol` listener, before the header): a place under `max_connections` only.
    pub fn admit_connection(&self) -> Result<ConnGuard, Refusal> {
        let max = self.settings.max_connections;
        self.table
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| match max {
                Some(max) if open >= max => None,
                _ => Some(open + 1),
            })
            .map_err(|_| Refusal::Limit)?;
        // From here on, dropping the guard gives back what it holds.
        Ok(ConnGuard {
            table: self.table.clone(),
            key: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            per_ip: false,
        })
    }

    /// The second half of [`ConnLimiter::admit`]: the per-client limits for the connection
    /// `guard` holds, now that its client is known to be `ip`. Call it once per guard; on
    /// `Err`, drop the guard (and the connection).
    pub fn admit_client(
        &self,
        guard: &mut ConnGuard,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        let key = client_key(ip);
        if guard.per_ip {
            // Counted already: a second call must not count the connection twice.
            return Ok(());
        }
        guard.key = key;
        if let Some(max) = self.settings.max_connections_per_ip {
            if !self.table.try_add(key, Slot::Connections, max) {
                return Err(Refusal::PerIp);
            }
            guard.per_ip = true;
        }
        if let Some(rate) = &self.new_connections
            && !rate
                .check_key(&rate.key_for("", key, &HeaderMap::new()), now)
                .allowed
        {
            return Err(Refusal::Rate);
        }
        Ok(())
    }

    /// Decides a new request from `ip`: `Ok(None)` with no request limit, `Ok(Some(guard))` to
    /// hold until the response is finished, or `Err` when the client already has
    /// `max_requests_per_ip` in flight.
    pub fn start_request(&self, ip: IpAddr) -> Result<Option<RequestGuard>, Refusal> {
        let Some(max) = self.settings.max_requests_per_ip else {
            return Ok(None);
        };
        let key = client_key(ip);
        if self.table.try_add(key, Slot::Requests, max) {
            Ok(Some(RequestGuard {
                table: self.table.clone(),
                key,
            }))
        } else {
            Err(Refusal::PerIp)
        }
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct ConnGuard {
    table: Arc<ConnTable>,
    key: IpAddr,
    /// Whether the client's connection count was raised (only when a per-client limit is set).
    per_ip: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.per_ip {
            self.table.release(self.key, Slot::Connections);
        }
        self.table.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct RequestGuard {
    table: Arc<ConnTable>,
    key: IpAddr,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.table.release(self.key, Slot::Requests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limiter(settings: ConnLimitSettings) -> ConnLimiter {
        ConnLimiter::new(&settings, None).unwrap()
    }

    #[test]
    fn the_listener_cap_counts_every_client() {
        let limits = limiter(ConnLimitSettings {
            max_connections: Some(2),
            ..Default::default()
        });
        let now = Instant::now();
        let a = limits.admit(ip("10.0.0.1"), now).unwrap();
        let _b = limits.admit(ip("10.0.0.2"), now).unwrap();
        assert_eq!(
            limits.admit(ip("10.0.0.3"), now).unwrap_err(),
            Refusal::Limit
        );
        drop(a);
        assert!(limits.admit(ip("10.0.0.3"), now).is_ok());
        assert_eq!(
            limits.table().clients(),
            0,
            "no per-client entries without a per-client limit"
        );
    }

    #[test]
    fn the_per_client_cap_counts_one_client_and_forgets_it_when_it_leaves() {
        let limits = limiter(ConnLimitSettings {
            max_connections_per_ip: Some(2),
            ..Default::default()
        });
        let now = Instant::now();
        let a = limits.admit(ip("10.0.0.1"), now).unwrap();
        let b = limits.admit(ip("10.0.0.1"), now).unwrap();
        assert_eq!(
            limits.admit(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::PerIp
        );
        assert_eq!(limits.table().open(), 2, "a refusal gives its place back");
        let other = limits.admit(ip("10.0.0.2"), now).unwrap();
        assert_eq!(limits.table().clients(), 2);
        drop((a, b, other));
        assert_eq!(limits.table().clients(), 0);
        assert_eq!(limits.table().open(), 0);
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(
            client_key(ip("2001:db8::1")),
            client_key(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            client_key(ip("2001:db8::1")),
            client_key(ip("2001:db8:0:1::1"))
        );
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn requests_are_counted_per_client_across_connections() {
        let limits = limiter(ConnLimitSettings {
            max_requests_per_ip: Some(1),
            ..Default::default()
        });
        assert!(
            limiter(ConnLimitSettings::default())
                .start_request(ip("10.0.0.1"))
                .unwrap()
                .is_none()
        );
        let held = limits.start_request(ip("10.0.0.1")).unwrap();
        assert!(held.is_some());
        assert_eq!(
            limits.start_request(ip("10.0.0.1")).unwrap_err(),
            Refusal::PerIp
        );
        assert!(limits.start_request(ip("10.0.0.2")).unwrap().is_some());
        drop(held);
        assert!(limits.start_request(ip("10.0.0.1")).unwrap().is_some());
        assert_eq!(limits.table().clients(), 0);
    }

    #[test]
    fn the_new_connection_rate_refuses_past_the_burst_and_refills() {
        let limits = limiter(ConnLimitSettings {
            new_connections_per_ip: Some("2/s".to_owned()),
            ..Default::default()
        });
        let start = Instant::now();
        let _a = limits.admit(ip("10.0.0.1"), start).unwrap();
        let _b = limits.admit(ip("10.0.0.1"), start).unwrap();
        assert_eq!(
            limits.admit(ip("10.0.0.1"), start).unwrap_err(),
            Refusal::Rate
        );
        assert_eq!(limits.table().open(), 2);
        assert!(limits.admit(ip("10.0.0.2"), start).is_ok());
        let later = start + Duration::from_millis(500);
        assert!(limits.admit(ip("10.0.0.1"), later).is_ok());
    }

    #[test]
    fn a_reload_keeps_the_counts_and_an_unchanged_rate() {
        let settings = ConnLimitSettings {
            max_connections_per_ip: Some(1),
            new_connections_per_ip: Some("1/m".to_owned()),
            ..Default::default()
        };
        let old = limiter(settings.clone());
        let now = Instant::now();
        let _held = old.admit(ip("10.0.0.1"), now).unwrap();
        let new = ConnLimiter::new(&settings, Some(&old)).unwrap();
        assert_eq!(new.admit(ip("10.0.0.1"), now).unwrap_err(), Refusal::PerIp);
        let raised = ConnLimitSettings {
            max_connections_per_ip: Some(5),
            ..settings
        };
        let new = ConnLimiter::new(&raised, Some(&old)).unwrap();
        assert_eq!(
            new.admit(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::Rate,
            "the rate table carried over"
        );
    }

    #[test]
    fn a_guard_dropped_by_a_panicking_task_gives_its_count_back() {
        let limits = Arc::new(limiter(ConnLimitSettings {
            max_connections_per_ip: Some(1),
            ..Default::default()
        }));
        let inner = limits.clone();
        let result = std::thread::spawn(move || {
            let _guard = inner.admit(ip("10.0.0.1"), Instant::now()).unwrap();
            panic!("connection task panics");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(limits.table().open(), 0);
        assert!(limits.admit(ip("10.0.0.1"), Instant::now()).is_ok());
    }

    /// Properties of the listener limits against a model (a counter per client key and one
    /// for the listener): for any sequence of connections, requests, closes and reloads every
    /// decision is the model's, the N+1-th is refused, a release lets one more in, and the
    /// counts never drift, underflow or leave entries behind.
    mod properties {
        use std::collections::HashMap;

        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Clients, some of which share a key (a mapped IPv4, two addresses in one /64).
        const CLIENTS: [&str; 6] = [
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "10.0.0.2",
            "2001:db8::1",
            "2001:db8::ffff:2",
            "2001:db8:0:1::1",
        ];

        /// The key the doc says each of [`CLIENTS`] counts under.
        const KEY: [usize; 6] = [0, 0, 1, 2, 2, 3];

        #[derive(Debug, Clone)]
        enum Event {
            /// A connection on a plain listener.
            Admit(usize),
            /// A connection on a `proxy_protocol` listener: the listener cap first, the client
            /// when its header arrives (`again`: the second half called a second time, which
            /// must count nothing more once the client was counted).
            Split {
                client: usize,
                again: bool,
            },
            /// The `n`-th open connection (modulo) closes.
            Close(usize),
            Request(usize),
            /// The `n`-th request in flight (modulo) finishes.
            Finish(usize),
            /// A reload with new limits (the rate unchanged, so its table is kept).
            Reload(Limits),
        }

        #[derive(Debug, Clone, Copy)]
        struct Limits {
            max_connections: Option<usize>,
            per_ip: Option<usize>,
            requests: Option<usize>,
        }

        fn limits() -> impl Strategy<Value = Limits> {
            (
                prop::option::of(0usize..5),
                prop::option::of(0usize..3),
                prop::option::of(0usize..3),
            )
                .prop_map(|(max_connections, per_ip, requests)| Limits {
                    max_connections,
                    per_ip,
                    requests,
                })
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                4 => (0usize..6).prop_map(Event::Admit),
                2 => (0usize..6, any::<bool>()).prop_map(|(client, again)| Event::Split { client, again }),
                3 => any::<usize>().prop_map(Event::Close),
                3 => (0usize..6).prop_map(Event::Request),
                2 => any::<usize>().prop_map(Event::Finish),
                1 => limits().prop_map(Event::Reload),
            ]
        }

        fn settings(limits: Limits, rate: Option<u32>) -> ConnLimitSettings {
            ConnLimitSettings {
                max_connections: limits.max_connections,
                max_connections_per_ip: limits.per_ip,
                max_requests_per_ip: limits.requests,
                new_connections_per_ip: rate.map(|n| format!("{n}/s")),
                new_connections_burst: None,
            }
        }

        #[derive(Debug, Default)]
        struct Model {
            open: usize,
            connections: HashMap<usize, usize>,
            requests: HashMap<usize, usize>,
            /// New connections the rate let through, per key (time stands still: no refill).
            rate_used: HashMap<usize, u32>,
        }

        impl Model {
            /// A connection from `key` under `limits`: `Ok(counted per client)` or the refusal.
            fn admit(
                &mut self,
                key: usize,
                limits: Limits,
                rate: Option<u32>,
            ) -> Result<bool, Refusal> {
                if limits.max_connections.is_some_and(|max| self.open >= max) {
                    return Err(Refusal::Limit);
                }
                let count = self.connections.get(&key).copied().unwrap_or(0);
                if limits.per_ip.is_some_and(|max| count >= max) {
                    return Err(Refusal::PerIp);
                }
                let used = self.rate_used.get(&key).copied().unwrap_or(0);
                if rate.is_some_and(|burst| used >= burst) {
                    return Err(Refusal::Rate);
                }
                if rate.is_some() {
                    self.rate_used.insert(key, used + 1);
                }
                self.open += 1;
                if limits.per_ip.is_some() {
                    self.connections.insert(key, count + 1);
                }
                Ok(limits.per_ip.is_some())
            }

            fn clients(&self) -> usize {
                let mut keys: Vec<usize> = self
                    .connections
                    .iter()
                    .chain(&self.requests)
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, _)| *k)
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                keys.len()
            }

            fn take(map: &mut HashMap<usize, usize>, key: usize) {
                let n = map.get_mut(&key).expect("counted");
                *n -= 1;
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn decisions_and_counts_follow_the_model(
                first in limits(),
                rate in prop::option::of(1u32..4),
                events in vec(event(), 0..60),
            ) {
                let now = Instant::now();
                let mut limits = first;
                let mut limiter = ConnLimiter::new(&settings(limits, rate), None).unwrap();
                let mut model = Model::default();
                // Open connections and requests in flight, with the key and whether the guard
                // counts per client, as the model has them.
                let mut connections: Vec<(ConnGuard, usize, bool)> = Vec::new();
                let mut requests: Vec<(RequestGuard, usize)> = Vec::new();
                for (step, event) in events.into_iter().enumerate() {
                    match event {
                        Event::Admit(client) => {
                            let key = KEY[client];
                            let got = limiter.admit(ip(CLIENTS[client]), now);
                            let want = model.admit(key, limits, rate);
                            prop_assert_eq!(got.as_ref().err(), want.as_ref().err(), "step {}", step);
                            if let (Ok(guard), Ok(counted)) = (got, want) {
                                connections.push((guard, key, counted));
                            }
                        }
                        Event::Split { client, again } => {
                            let key = KEY[client];
                            let want = model.admit(key, limits, rate);
                            let got = limiter.admit_connection().and_then(|mut guard| {
                                limiter.admit_client(&mut guard, ip(CLIENTS[client]), now)?;
                                Ok(guard)
                            });
                            prop_assert_eq!(got.as_ref().err(), want.as_ref().err(), "step {}", step);
                            if let (Ok(mut guard), Ok(counted)) = (got, want) {
                                if again && counted {
                                    // Counted per client already: a second call counts nothing.
                                    // (Without a per-client limit a second call checks the rate
                                    // again; the doc asks for one call per guard, and the
                                    // server makes one.)
                                    let other = ip(CLIENTS[(client + 1) % CLIENTS.len()]);
                                    prop_assert!(limiter.admit_client(&mut guard, other, now).is_ok());
                                }
                                connections.push((guard, key, counted));
                            }
                        }
                        Event::Close(n) => {
                            if !connections.is_empty() {
                                let (guard, key, counted) = connections.remove(n % connections.len());
                                drop(guard);
                                model.open -= 1;
                                if counted {
                                    Model::take(&mut model.connections, key);
                                }
                            }
                        }
                        Event::Request(client) => {
                            let key = KEY[client];
                            let got = limiter.start_request(ip(CLIENTS[client]));
                            match limits.requests {
                                None => prop_assert!(matches!(got, Ok(None))),
                                Some(max) => {
                                    let count = model.requests.get(&key).copied().unwrap_or(0);
                                    if count >= max {
                                        prop_assert_eq!(got.err(), Some(Refusal::PerIp), "step {}", step);
                                    } else {
                                        let guard = got.ok().flatten();
                                        prop_assert!(guard.is_some(), "step {}", step);
                                        requests.push((guard.unwrap(), key));
                                        model.requests.insert(key, count + 1);
                                    }
                                }
                            }
                        }
                        Event::Finish(n) => {
                            if !requests.is_empty() {
                                let (guard, key) = requests.remove(n % requests.len());
                                drop(guard);
                                Model::take(&mut model.requests, key);
                            }
                        }
                        Event::Reload(new) => {
                            limiter = ConnLimiter::new(&settings(new, rate), Some(&limiter)).unwrap();
                            limits = new;
                        }
                    }
                    prop_assert_eq!(limiter.table().open(), model.open, "step {}", step);
                    prop_assert_eq!(limiter.table().clients(), model.clients(), "step {}", step);
                }
                drop(connections);
                drop(requests);
                prop_assert_eq!(limiter.table().open(), 0);
                prop_assert_eq!(limiter.table().clients(), 0);
            }
        }
    }
}
