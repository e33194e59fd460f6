//! The typed shape of `gatehouse.toml`: what each key is called, its type and its default.
//!
//! Unknown keys are refused everywhere (`deny_unknown_fields`), so a typo is an error with a line
//! number rather than a silently ignored setting. Values that are checked after parsing (names,
//! references, addresses, patterns) are kept as [`Spanned`] so their errors can point at them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::units::{ByteSize, HumanDuration};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings: workers, limits, shutdown.
    #[serde(default)]
    pub server: ServerSettings,
    /// Default timeouts; routes and pools may override some of them.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Which forwarding headers are added to requests sent to backends.
    #[serde(default)]
    pub forwarded: ForwardedSettings,
    /// Diagnostic logging.
    #[serde(default)]
    pub log: LogSettings,
    /// One line per request.
    #[serde(default)]
    pub access_log: AccessLogSettings,
    /// Response compression defaults; routes turn it on or off with `compression`.
    #[serde(default)]
    pub compression: CompressionSettings,
    /// The HTTP cache: its memory bound and the defaults routes inherit with `cache = true`.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Sockets to accept clients on (`[[listener]]`).
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Named groups of backends (`[pool.NAME]`).
    #[serde(default, rename = "pool")]
    pub pools: BTreeMap<String, PoolConfig>,
    /// Routing rules (`[[route]]`), matched by specificity (see `docs/configuration.md`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The admin listener: metrics, API and dashboard.
    pub admin: Option<Spanned<AdminSettings>>,
    /// Identity hiding, client identity and request strictness.
    #[serde(default)]
    pub security: super::protect::SecuritySettings,
    /// The text the config was parsed from (for the admin API's view of the config in force).
    #[serde(skip)]
    pub source: Option<String>,
}

/// `[admin]`: the admin listener (metrics, API, dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `IP:PORT` to bind; loopback unless a `token` is set.
    pub address: String,
    /// Bearer token every admin request must carry (`Authorization: Bearer TOKEN`, or
    /// `?token=TOKEN` for the dashboard page).
    pub token: Option<String>,
}

/// `[server]`: settings for the whole process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Worker threads; `0` means one per CPU core.
    pub workers: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT before connections are closed.
    pub grace_period: HumanDuration,
    /// Largest request head (request line and headers) accepted; beyond it the client gets 431.
    pub max_header_bytes: ByteSize,
    /// Most header fields in one request; beyond it the client gets 431.
    pub max_headers: usize,
    /// Default cap on a request body; routes may set their own. Unset means no cap.
    pub max_body: Option<ByteSize>,
    /// Most concurrent HTTP/2 streams per client connection.
    pub h2_max_concurrent_streams: u32,
    /// Rapid-reset defence (CVE-2023-44487): most HTTP/2 streams a client may open and reset
    /// before the proxy has taken them up; past it the connection gets GOAWAY
    /// `ENHANCE_YOUR_CALM`.
    pub h2_max_pending_reset_streams: usize,
    /// "MadeYouReset" defence (CVE-2025-8671): most HTTP/2 streams the proxy itself may reset
    /// because of a client's protocol errors on one connection; past it, GOAWAY
    /// `ENHANCE_YOUR_CALM`.
    pub h2_max_local_error_resets: usize,
    /// Most requests served on one client connection: the last HTTP/1.1 response carries
    /// `Connection: close`, an HTTP/2 connection gets GOAWAY. `0` means no limit.
    pub max_requests_per_connection: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            grace_period: HumanDuration::secs(30),
            max_header_bytes: ByteSize::kib(32),
            max_headers: 100,
            max_body: None,
            h2_max_concurrent_streams: 256,
            h2_max_pending_reset_streams: 20,
            h2_max_local_error_resets: 1024,
            max_requests_per_connection: 0,
        }
    }
}

/// `[timeouts]`: defaults for every connection and request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time a client has to send a complete request head once it starts one (slowloris defence).
    pub client_header: HumanDuration,
    /// Time a client connection may stay open with no request in flight.
    pub client_idle: HumanDuration,
    /// Time an HTTP/1 client connection waits between requests before its buffers are released
    /// until the client sends again (idle keep-alive connections then hold ~3.5 KiB, not ~25 KiB).
    /// `0s` keeps them for the connection's life.
    pub client_idle_release: HumanDuration,
    /// Longest a write to a client may stay blocked with nothing taken (nginx's `send_timeout`):
    /// a client that stops reading a response is disconnected. `0s` turns the check off.
    pub client_send: HumanDuration,
    /// Longest an upgraded connection (WebSocket) may carry no byte either way before both
    /// sides are closed (HAProxy's `timeout tunnel`). `0s` turns the check off.
    pub tunnel_idle: HumanDuration,
    /// Longest pause between two pieces of a request body the proxy reads before forwarding
    /// (small bodies held for retries); past it the client gets 408.
    pub client_body: HumanDuration,
    /// Least average rate (bytes per second) a client must keep up while sending a request body,
    /// once `min_upload_grace` is used up (Apache mod_reqtimeout's `MinRate`); past it the
    /// client gets 408. `0` turns the check off.
    pub min_upload_rate: ByteSize,
    /// Time every request body gets before `min_upload_rate` counts; each `min_upload_rate`
    /// bytes delivered earns one more second.
    pub min_upload_grace: HumanDuration,
    /// Time to establish a TCP connection to a backend.
    pub upstream_connect: HumanDuration,
    /// Time a backend has to send its response head once the request is sent.
    pub upstream_header: HumanDuration,
    /// Longest a backend may send nothing within a response body (nginx's `proxy_read_timeout`);
    /// past it the response is cut. `0s` turns the check off.
    pub upstream_read: HumanDuration,
    /// Time an unused pooled backend connection is kept open.
    pub upstream_idle: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            client_header: HumanDuration::secs(10),
            client_idle: HumanDuration::secs(60),
            client_idle_release: HumanDuration::secs(1),
            client_send: HumanDuration::secs(60),
            tunnel_idle: HumanDuration::secs(3600),
            client_body: HumanDuration::secs(60),
            min_upload_rate: ByteSize(500),
            min_upload_grace: HumanDuration::secs(20),
            upstream_connect: HumanDuration::secs(5),
            upstream_header: HumanDuration::secs(60),
            upstream_read: HumanDuration::secs(60),
            upstream_idle: HumanDuration::secs(60),
        }
    }
}

/// `[forwarded]`: headers that tell the backend about the client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardedSettings {
    /// Append the client address to `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto` to the scheme the client used.
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host` to the host the client asked for.
    pub x_forwarded_host: bool,
    /// Append an RFC 7239 `Forwarded` element.
    pub forwarded: bool,
    /// Add `Via: 1.1 gatehouse` to requests and responses (no version is ever sent).
    pub via: bool,
}

impl Default for ForwardedSettings {
    fn default() -> Self {
        Self {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            forwarded: false,
            via: false,
        }
    }
}

/// `[log]`: diagnostic logging to stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter such as `"info"` or `"gatehouse=debug"`; `RUST_LOG` overrides it.
    pub level: String,
    /// `"text"` or `"json"`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Line format for diagnostic and access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[access_log]`: one line per request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSettings {
    /// Write access log lines at all.
    pub enabled: bool,
    /// `"text"` (combined-like) or `"json"`.
    pub format: LogFormat,
    /// `"-"` for stdout, or a file path (appended to; reopened on SIGUSR1 for log rotation).
    pub path: String,
    /// Share of successful requests logged, 0.0 to 1.0; responses with status 400 and above are
    /// always logged.
    pub sample: f64,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            format: LogFormat::Text,
            path: "-".to_owned(),
            sample: 1.0,
        }
    }
}

/// `[compression]`: response compression and decoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionSettings {
    /// Compress responses (routes may override with `compression = true/false`).
    pub enabled: bool,
    /// Codings offered, in server preference order: `"zstd"`, `"br"`, `"gzip"`.
    pub algorithms: Vec<Spanned<String>>,
    /// Smallest response worth compressing.
    pub min_size: ByteSize,
    /// Media type patterns worth compressing: `"text/*"`, `"application/json"`, `"*/*+json"`.
    pub types: Vec<Spanned<String>>,
    /// gzip level, 1–9.
    pub gzip_level: u32,
    /// Brotli quality, 0–11.
    pub brotli_level: u32,
    /// zstd level, 1–19.
    pub zstd_level: i32,
    /// Decode compressed request bodies (`Content-Encoding` on a request) for the backend.
    pub decompress_requests: bool,
    /// Most bytes a decoded request body may have; beyond it the client gets 413.
    pub max_decompressed_request: ByteSize,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        let spanned = |s: &str| Spanned::new(0..0, s.to_owned());
        CompressionSettings {
            enabled: false,
            algorithms: ["zstd", "br", "gzip"].iter().map(|s| spanned(s)).collect(),
            min_size: ByteSize::kib(1),
            types: crate::compress::default_types()
                .iter()
                .map(|s| spanned(s))
                .collect(),
            gzip_level: 1,
            brotli_level: 4,
            zstd_level: 3,
            decompress_requests: false,
            max_decompressed_request: ByteSize(16 << 20),
        }
    }
}

/// What the cache does with responses that carry `Set-Cookie`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SetCookieMode {
    /// Do not store them.
    #[default]
    #[serde(rename = "no-store")]
    NoStore,
    /// Store them without their `Set-Cookie` lines.
    #[serde(rename = "strip")]
    Strip,
    /// Store them with the cookies: every client then gets them.
    #[serde(rename = "store")]
    Store,
}

/// `[cache]`: the shared HTTP cache (RFC 9111). One memory store serves every route that turns
/// caching on; the other keys are defaults a route's `cache = { ... }` may override.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Cache the responses of every route that does not say otherwise.
    pub enabled: bool,
    /// Most bytes the memory store holds (bodies, headers and keys); least useful entries are
    /// evicted beyond it.
    pub max_size: Spanned<ByteSize>,
    /// Largest response body stored; larger responses are passed through, not stored.
    pub max_object_size: Spanned<ByteSize>,
    /// Share of the time since `Last-Modified` a response without an explicit lifetime stays
    /// fresh (RFC 9111 §4.2.2), 0.0 to 1.0; 0 turns heuristic freshness off.
    pub heuristic_fraction: Spanned<f64>,
    /// Responses with `Set-Cookie`: `"no-store"`, `"strip"` or `"store"`.
    pub set_cookie: SetCookieMode,
    /// How long a request waits for another request that is already fetching the same URL
    /// (request coalescing) before going to the backend itself.
    pub lock_timeout: HumanDuration,
    /// The longest a background refresh (`stale-while-revalidate`) may take, response body
    /// included; it is abandoned after that.
    pub refresh_timeout: HumanDuration,
    /// Client addresses (CIDRs, or `"file:PATH"`) that may send `PURGE`; empty: nobody (403).
    pub purge_allow: Vec<Spanned<String>>,
    /// Remove `Surrogate-Key` and `Cache-Tag` from responses sent to clients (they are still
    /// stored and indexed).
    pub strip_surrogate_keys: bool,
    /// Targeted cache-control fields (RFC 9213) this cache obeys instead of `Cache-Control`
    /// and `Expires`, in priority order; empty turns targeted cache control off.
    pub targeted_headers: Vec<Spanned<String>>,
    /// Remove the `targeted_headers` from responses sent to clients.
    pub strip_targeted_headers: bool,
    /// What of the query the cache key keeps: `"as-is"`, `"sorted"` or `"ignore"`.
    pub key_query: KeyQueryMode,
    /// Query parameters left out of the cache key: names, or prefixes written `name*`.
    pub key_ignore_query: Vec<Spanned<String>>,
    /// Request headers whose values are part of the cache key (as variants of the URL).
    pub key_headers: Vec<Spanned<String>>,
    /// Cookies whose values are part of the cache key (as variants of the URL).
    pub key_cookies: Vec<Spanned<String>>,
    /// The optional disk tier below the memory store; absent means memory only.
    pub disk: Option<Spanned<DiskCacheSettings>>,
}

/// `[cache] disk = { path, max_size, max_object_size }`: stored responses also kept as files,
/// bounded in bytes, found again after a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskCacheSettings {
    /// The directory (created if missing; relative paths are from the working directory).
    pub path: Spanned<String>,
    /// Most bytes the files take together; least recently used ones are deleted beyond it.
    #[serde(default = "disk_max_size")]
    pub max_size: Spanned<ByteSize>,
    /// Largest response body written to disk (default: 8MiB, or `max_size` if smaller).
    pub max_object_size: Option<Spanned<ByteSize>>,
}

fn disk_max_size() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(1 << 30))
}

impl DiskCacheSettings {
    /// The limits the disk tier is opened with.
    pub fn limits(&self) -> crate::cache::disk::DiskLimits {
        crate::cache::disk::DiskLimits {
            dir: std::path::PathBuf::from(self.path.get_ref()),
            max_size: self.max_size.get_ref().0,
            max_object_size: self
                .max_object_size
                .as_ref()
                .map_or((8 << 20).min(self.max_size.get_ref().0), |s| s.get_ref().0),
        }
    }
}

/// What of the query the cache key keeps (`cache.key_query`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum KeyQueryMode {
    /// As the client sent it.
    #[default]
    #[serde(rename = "as-is")]
    AsIs,
    /// Parameters sorted by name.
    #[serde(rename = "sorted")]
    Sorted,
    /// Left out entirely.
    #[serde(rename = "ignore")]
    Ignore,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: false,
            max_size: Spanned::new(0..0, ByteSize(256 << 20)),
            max_object_size: Spanned::new(0..0, ByteSize(8 << 20)),
            heuristic_fraction: Spanned::new(0..0, 0.1),
            set_cookie: SetCookieMode::NoStore,
            lock_timeout: HumanDuration::secs(5),
            disk: None,
            refresh_timeout: HumanDuration::secs(30),
            purge_allow: Vec::new(),
            strip_surrogate_keys: true,
            targeted_headers: ["Gatehouse-Cache-Control", "CDN-Cache-Control"]
                .into_iter()
                .map(|name| Spanned::new(0..0, name.to_owned()))
                .collect(),
            strip_targeted_headers: true,
            key_query: KeyQueryMode::AsIs,
            key_ignore_query: Vec::new(),
            key_headers: Vec::new(),
            key_cookies: Vec::new(),
        }
    }
}

/// A route's `cache = true/false` or `cache = { ... }`: overrides of `[cache]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSettings {
    /// Cache this route's responses (a table without `enabled` means true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides `cache.max_object_size`.
    pub max_object_size: Option<Spanned<ByteSize>>,
    /// Overrides `cache.heuristic_fraction`.
    pub heuristic_fraction: Option<Spanned<f64>>,
    /// Overrides `cache.set_cookie`.
    pub set_cookie: Option<SetCookieMode>,
    /// Overrides `cache.lock_timeout`.
    pub lock_timeout: Option<HumanDuration>,
}

/// `cache = true`, `cache = false` or a `cache = { ... }` table, on a route.
#[derive(Debug, Clone)]
pub struct RouteCacheSetting(pub RouteCacheSettings);

impl<'de> Deserialize<'de> for RouteCacheSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> serde::de::Visitor<'de> for Setting {
            type Value = RouteCacheSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table of cache settings")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RouteCacheSetting, E> {
                Ok(RouteCacheSetting(RouteCacheSettings {
                    enabled: v,
                    ..RouteCacheSettings::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RouteCacheSetting, A::Error> {
                RouteCacheSettings::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RouteCacheSetting)
            }
        }
        deserializer.deserialize_any(Setting)
    }
}

/// `[[listener]]`: one socket clients connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs; defaults to the address.
    pub name: Option<Spanned<String>>,
    /// `IP:PORT` to bind, e.g. `"0.0.0.0:80"` or `"[::]:8080"`.
    pub address: Spanned<String>,
    /// Serve HTTP/1.1.
    #[serde(default = "yes")]
    pub http1: bool,
    /// Serve HTTP/2: h2c with prior knowledge on a cleartext listener, ALPN `h2` on a TLS one.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Terminate TLS: `tls = "self-signed"` or a `[listener.tls]` table.
    pub tls: Option<Spanned<TlsSetting>>,
    /// Answer every request with a permanent redirect to the same URL over HTTPS.
    #[serde(default)]
    pub redirect_https: bool,
    /// Port used in HTTPS redirect URLs (omitted from the URL when 443).
    #[serde(default = "https_port")]
    pub https_port: u16,
    /// Client addresses (CIDRs, or `"file:PATH"`) allowed to connect; others are closed at once.
    pub allow: Option<Vec<Spanned<String>>>,
    /// Client addresses whose connections are closed at once (checked before `allow`).
    pub deny: Option<Vec<Spanned<String>>>,
    /// Most client connections open at once on this listener; more are closed at accept.
    /// Unset means no limit.
    pub max_connections: Option<Spanned<usize>>,
    /// Most connections open at once from one client address (IPv6: one /64); more are closed
    /// at accept. Unset means no limit.
    pub max_connections_per_ip: Option<Spanned<usize>>,
    /// Most requests in flight at once from one client address, over all its connections; more
    /// get 429. Unset means no limit.
    pub max_requests_per_ip: Option<Spanned<usize>>,
    /// New connections one client address may open: `"20/s"`, `"600/m"`; more are closed at
    /// accept. Unset means no limit.
    pub new_connections_per_ip: Option<Spanned<String>>,
    /// With `new_connections_per_ip`: connections a client may open at once above the rate
    /// (default: one second's worth, at least 1).
    pub new_connections_burst: Option<Spanned<u32>>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, told apart by their
    /// first bytes), read before TLS; a connection without one is closed. The address in it is
    /// the client's only when the connecting peer is in `security.trusted_proxies`.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn https_port() -> u16 {
    443
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chains and keys (PEM); the names each serves come from its SANs.
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// Generate a self-signed certificate for `self_signed_names` at start-up.
    #[serde(default)]
    pub self_signed: bool,
    /// Names in the generated certificate.
    #[serde(default = "localhost_names")]
    pub self_signed_names: Vec<String>,
    /// For clients that send no SNI or a name no certificate covers: `"first"` certificate, or `"refuse"`.
    #[serde(default)]
    pub unknown_sni: UnknownSni,
    /// CA bundle (PEM) for client certificates; enables mutual TLS.
    pub client_ca: Option<String>,
    /// With `client_ca`: `"required"` (default) or `"optional"`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Header that carries the verified client certificate's subject to the backend.
    #[serde(default = "subject_header")]
    pub client_subject_header: String,
    /// Time a client has to complete the TLS handshake.
    #[serde(default = "handshake_timeout")]
    pub handshake_timeout: HumanDuration,
}

fn localhost_names() -> Vec<String> {
    vec!["localhost".to_owned()]
}

fn subject_header() -> String {
    "x-client-subject".to_owned()
}

fn handshake_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

impl ListenerTls {
    /// The settings `tls = "self-signed"` stands for.
    pub fn self_signed() -> Self {
        ListenerTls {
            self_signed: true,
            self_signed_names: localhost_names(),
            client_subject_header: subject_header(),
            handshake_timeout: handshake_timeout(),
            ..ListenerTls::default()
        }
    }
}

/// `tls = "self-signed"` or a `tls = { ... }` table.
#[derive(Debug, Clone)]
pub struct TlsSetting(pub ListenerTls);

impl<'de> Deserialize<'de> for TlsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> serde::de::Visitor<'de> for Setting {
            type Value = TlsSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"self-signed\" or a table of TLS settings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsSetting, E> {
                if v == "self-signed" {
                    Ok(TlsSetting(ListenerTls::self_signed()))
                } else {
                    Err(E::custom(format!(
                        "unknown TLS mode {v:?}; write \"self-signed\" or a table"
                    )))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TlsSetting, A::Error> {
                ListenerTls::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TlsSetting)
            }
        }
        deserializer.deserialize_any(Setting)
    }
}

/// `tls = true` (verify against the system's roots) or a `tls = { ... }` table, on a pool.
#[derive(Debug, Clone)]
pub struct UpstreamTlsSetting(pub Option<UpstreamTls>);

impl<'de> Deserialize<'de> for UpstreamTlsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> serde::de::Visitor<'de> for Setting {
            type Value = UpstreamTlsSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table of upstream TLS settings")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<UpstreamTlsSetting, E> {
                Ok(UpstreamTlsSetting(v.then(UpstreamTls::default)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<UpstreamTlsSetting, A::Error> {
                UpstreamTls::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|tls| UpstreamTlsSetting(Some(tls)))
            }
        }
        deserializer.deserialize_any(Setting)
    }
}

/// TLS towards a pool's backends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle (PEM) to verify backends with; the system's roots when absent.
    pub ca: Option<String>,
    /// Name sent as SNI and verified in the backend certificate; the backend host when absent.
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) for backends that require mutual TLS.
    pub client_cert: Option<String>,
    /// Key of `client_cert`.
    pub client_key: Option<String>,
    /// Accept any backend certificate. For tests only: it removes all protection TLS gives.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: String,
}

/// What a TLS listener does with a client whose SNI no certificate covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSni {
    /// Serve the first configured certificate.
    #[default]
    First,
    /// Fail the handshake.
    Refuse,
}

/// Whether a client certificate is required when `client_ca` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Clients without a valid certificate are refused.
    #[default]
    Required,
    /// Clients may connect without a certificate; a presented one must be valid.
    Optional,
}

fn yes() -> bool {
    true
}

/// `[pool.NAME]`: a group of interchangeable backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Backends: `"HOST:PORT"` or `{ address = "HOST:PORT", weight = N, backup = true }`.
    pub backends: Spanned<Vec<Spanned<BackendEntry>>>,
    /// Protocol spoken to the backends.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// How a backend is chosen for each request.
    #[serde(default)]
    pub balance: BalancePolicy,
    /// What `balance = "hash"` hashes: `client_ip`, `path`, `uri`, `header:NAME` or
    /// `cookie:NAME`.
    pub hash_key: Option<Spanned<String>>,
    /// Cookie-based session affinity on top of the balancing policy.
    pub sticky: Option<Spanned<StickySettings>>,
    /// A backend that becomes available again ramps its weight up over this long.
    pub slow_start: Option<HumanDuration>,
    /// Most requests in flight to one backend (each holds one HTTP/1.1 connection); unset means
    /// no limit.
    pub max_connections: Option<Spanned<usize>>,
    /// With `max_connections`: most requests that may wait for a busy backend; beyond it, 503.
    pub max_pending: Option<Spanned<usize>>,
    /// Active health checks.
    pub health_check: Option<Spanned<HealthCheckSettings>>,
    /// Passive health checks: eject backends that keep failing real requests.
    pub outlier: Option<Spanned<OutlierSettings>>,
    /// Retries of failed requests on other backends.
    pub retry: Option<Spanned<RetrySettings>>,
    /// Overrides `timeouts.upstream_connect` for this pool.
    pub connect_timeout: Option<HumanDuration>,
    /// Overrides `timeouts.upstream_idle` for this pool.
    pub idle_timeout: Option<HumanDuration>,
    /// Most keep-alive connections kept per backend for reuse (including those still finishing
    /// an exchange); one opened beyond it closes after its exchange.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_backend: usize,
    /// Speak TLS to the backends: `tls = true` or a table.
    pub tls: Option<Spanned<UpstreamTlsSetting>>,
    /// Start every backend connection with a PROXY protocol header of this version naming the
    /// client; such connections are never shared between client connections. Unset: none.
    pub proxy_protocol: Option<Spanned<ProxyProtocolVersion>>,
}

fn default_max_idle() -> usize {
    256
}

impl PoolConfig {
    /// The `outlier` settings, defaults filled in.
    pub fn outlier(&self) -> OutlierSettings {
        self.outlier
            .as_ref()
            .map(|o| o.get_ref().clone())
            .unwrap_or_default()
    }

    /// The `retry` settings, defaults filled in.
    pub fn retry(&self) -> RetrySettings {
        self.retry
            .as_ref()
            .map(|r| r.get_ref().clone())
            .unwrap_or_default()
    }
}

/// One entry of a pool's `backends` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendEntry {
    /// `HOST:PORT`.
    pub address: String,
    /// Relative share of the traffic (default 1).
    pub weight: u32,
    /// Used only while no primary backend is available.
    pub backup: bool,
}

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Detailed {
            address: String,
            #[serde(default = "one")]
            weight: u32,
            #[serde(default)]
            backup: bool,
        }
        fn one() -> u32 {
            1
        }
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = BackendEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"HOST:PORT\" or a table { address = \"HOST:PORT\", weight = N, backup = BOOL }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BackendEntry, E> {
                Ok(BackendEntry {
                    address: v.to_owned(),
                    weight: 1,
                    backup: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BackendEntry, A::Error> {
                let detailed =
                    Detailed::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(BackendEntry {
                    address: detailed.address,
                    weight: detailed.weight,
                    backup: detailed.backup,
                })
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

/// The PROXY protocol version a pool sends its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// Protocol spoken to a pool's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

/// Backend selection policy of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// The backend with the fewest requests in flight relative to its weight.
    LeastRequests,
    /// Power of two random choices over peak-EWMA latency times load.
    PeakEwma,
    /// Consistent hashing (Ketama ring) on `hash_key`.
    Hash,
    /// Uniformly at random, weighted.
    Random,
}

impl BalancePolicy {
    /// The policy's name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BalancePolicy::RoundRobin => "round_robin",
            BalancePolicy::LeastRequests => "least_requests",
            BalancePolicy::PeakEwma => "peak_ewma",
            BalancePolicy::Hash => "hash",
            BalancePolicy::Random => "random",
        }
    }
}

/// `[pool.NAME.sticky]`: session affinity through a signed cookie.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySettings {
    /// Cookie name.
    #[serde(default = "default_sticky_cookie")]
    pub cookie: String,
    /// Key the cookie value is derived from (HMAC-SHA256); unset means a random key per
    /// process (kept across reloads), so sessions do not survive a restart or move between
    /// instances.
    pub secret: Option<String>,
    /// Cookie lifetime; unset means a session cookie.
    pub max_age: Option<HumanDuration>,
}

fn default_sticky_cookie() -> String {
    "gatehouse_sticky".to_owned()
}

/// Kind of active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// An HTTP request whose status (and optionally body) must match.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// `[pool.NAME.health_check]`: active health checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSettings {
    /// `http` or `tcp`.
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// Path requested by HTTP checks.
    #[serde(default = "default_check_path")]
    pub path: Spanned<String>,
    /// Method of HTTP checks.
    #[serde(default = "default_check_method")]
    pub method: Spanned<String>,
    /// `Host` of HTTP checks; unset means the backend's address.
    pub host: Option<Spanned<String>>,
    /// Statuses that mean healthy: `"200-399"`, `"200"`, or a comma list of both.
    #[serde(default = "default_expect_status")]
    pub expect_status: Spanned<String>,
    /// Text the response body must contain (first 64 KiB).
    pub body_contains: Option<String>,
    /// Time between checks of one backend.
    #[serde(default = "default_check_interval")]
    pub interval: HumanDuration,
    /// Time a check may take.
    #[serde(default = "default_check_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive passes that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_check_path() -> Spanned<String> {
    Spanned::new(0..0, "/".to_owned())
}
fn default_check_method() -> Spanned<String> {
    Spanned::new(0..0, "GET".to_owned())
}
fn default_expect_status() -> Spanned<String> {
    Spanned::new(0..0, "200-399".to_owned())
}
fn default_check_interval() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_check_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// `[pool.NAME.outlier]`: passive health checks (outlier detection).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSettings {
    /// Consecutive failed requests that eject a backend; `0` turns ejection off.
    pub consecutive_failures: u32,
    /// Backend response statuses that count as failures (connect errors, resets and timeouts
    /// always do).
    pub failure_statuses: Vec<u16>,
    /// First ejection's length; each repeat ejection doubles it.
    pub ejection_time: HumanDuration,
    /// Longest ejection.
    pub max_ejection_time: HumanDuration,
    /// Most of the pool (in percent) that may be ejected at once; one backend always may.
    pub max_ejected_percent: u32,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_statuses: vec![502, 503, 504],
            ejection_time: HumanDuration::secs(10),
            max_ejection_time: HumanDuration::secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// `[pool.NAME.retry]`: trying a failed request again on another backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Most tries of one request, the first included; `1` turns retries off.
    pub tries: u32,
    /// Backend response statuses that make an idempotent request be tried elsewhere.
    pub statuses: Vec<u16>,
    /// Also retry non-idempotent methods after a failure once the request was sent.
    pub non_idempotent: bool,
    /// Retries may add at most this percentage to the requests sent (plus the minimum below).
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the budget.
    pub min_retries_per_second: u32,
    /// Request bodies with a declared length up to this are held so they can be sent again.
    pub buffer_body: ByteSize,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            tries: 3,
            statuses: vec![502, 503, 504],
            non_idempotent: false,
            budget_percent: 20,
            min_retries_per_second: 10,
            buffer_body: ByteSize::kib(64),
        }
    }
}

/// One string or a list of strings (`host = "a.test"` or `host = ["a.test", "b.test"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings;
        impl<'de> serde::de::Visitor<'de> for Strings {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(Strings)
    }
}

/// `[[route]]`: which requests go where, and what happens to them on the way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs; defaults to `route-N` (N counts from 1 in file order).
    pub name: Option<Spanned<String>>,
    /// Host patterns: `"example.com"` or `"*.example.com"`; absent means any host.
    pub host: Option<Spanned<OneOrMany>>,
    /// Exact path match.
    pub path: Option<Spanned<String>>,
    /// Path prefix match (plain string prefix).
    pub path_prefix: Option<Spanned<String>>,
    /// Path regular expression (Rust `regex` syntax, matched against the path only).
    pub path_regex: Option<Spanned<String>>,
    /// Allowed methods; absent means any.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// The pool requests are sent to.
    pub pool: Spanned<String>,
    /// Remove this prefix from the path before forwarding.
    pub strip_prefix: Option<Spanned<String>>,
    /// Put this prefix in front of the path before forwarding (after `strip_prefix`).
    pub add_prefix: Option<Spanned<String>>,
    /// Send the client's `Host` to the backend (default) or, when false, the backend's address.
    #[serde(default = "yes")]
    pub preserve_host: bool,
    /// Send this `Host` to the backend instead.
    pub host_header: Option<Spanned<String>>,
    /// Changes to request headers sent to the backend.
    #[serde(default)]
    pub request_headers: HeaderRules,
    /// Changes to response headers sent to the client.
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// Timeouts for this route.
    #[serde(default)]
    pub timeouts: RouteTimeouts,
    /// Cap on the request body; overrides `server.max_body`.
    pub max_body: Option<ByteSize>,
    /// Send `Strict-Transport-Security` on HTTPS responses.
    pub hsts: Option<Hsts>,
    /// Compress responses of this route; overrides `compression.enabled`.
    pub compression: Option<bool>,
    /// Decode compressed request bodies; overrides `compression.decompress_requests`.
    pub decompress_requests: Option<bool>,
    /// Client addresses (CIDRs, or `"file:PATH"` for a list in a file) allowed; others get 403.
    pub allow: Option<Vec<Spanned<String>>>,
    /// Client addresses refused with 403 (checked before `allow`).
    pub deny: Option<Vec<Spanned<String>>>,
    /// Methods this route serves; others get 405 (unlike `methods`, which only matches).
    pub allow_methods: Option<Vec<Spanned<String>>>,
    /// HTTP basic authentication.
    pub basic_auth: Option<Spanned<super::protect::BasicAuthSettings>>,
    /// Per-key request rate limit.
    pub rate_limit: Option<Spanned<super::protect::RateLimitSettings>>,
    /// Cache this route's responses: `true`, `false`, or a table overriding `[cache]`.
    pub cache: Option<Spanned<RouteCacheSetting>>,
}

/// `hsts = { ... }` on a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    /// How long browsers remember to use HTTPS only.
    #[serde(default = "hsts_max_age")]
    pub max_age: HumanDuration,
    /// Apply to subdomains too.
    #[serde(default)]
    pub include_subdomains: bool,
    /// Ask to be preloaded into browsers.
    #[serde(default)]
    pub preload: bool,
}

fn hsts_max_age() -> HumanDuration {
    HumanDuration::secs(365 * 24 * 3600)
}

/// Header edits: `add` appends a value, `set` replaces all values, `remove` deletes the header.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// Headers appended (existing values are kept).
    #[serde(default)]
    pub add: BTreeMap<String, Spanned<String>>,
    /// Headers replaced.
    #[serde(default)]
    pub set: BTreeMap<String, Spanned<String>>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// `timeouts` inside a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Overrides `timeouts.upstream_header`.
    pub upstream_header: Option<HumanDuration>,
    /// Overrides `timeouts.upstream_read`.
    pub upstream_read: Option<HumanDuration>,
}
