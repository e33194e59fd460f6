//! Compiles a validated [`Config`] into a [`Generation`]: the immutable routing table, pools and
//! policies that requests run against.
//!
//! A request loads the current generation once and uses it to the end, so a later reload can
//! swap in a new generation without disturbing requests in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use http::{HeaderName, HeaderValue, Method};

use crate::compress::{CompressionPolicy, Encoding, Levels, MediaRange, RequestDecoding};
use crate::config::{
    AccessLogSettings, Config, ForwardedSettings, HeaderRules, ListenerConfig, ListenerTls,
    ServerSettings, Timeouts,
};
use crate::proxy::headers::HeaderEdits;
use crate::routing::{HostPattern, PathMatcher, RouteMatch, RouteTable};
use crate::upstream::{BackendRegistry, UpstreamPool};

/// What the `Host` header sent to the backend is.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// The client's own `Host`.
    Preserve,
    /// The backend's `host:port`.
    Backend,
    /// A fixed value.
    Fixed(HeaderValue),
}

/// A route, compiled: everything the pipeline needs once a request has matched it.
#[derive(Debug)]
pub struct Route {
    /// Name for logs.
    pub name: Arc<str>,
    /// Where requests go.
    pub pool: Arc<UpstreamPool>,
    /// Path prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Path prefix added before forwarding (after stripping).
    pub add_prefix: Option<String>,
    /// What `Host` the backend sees.
    pub host: HostRewrite,
    /// Edits to the request headers.
    pub request_edits: HeaderEdits,
    /// Edits to the response headers.
    pub response_edits: HeaderEdits,
    /// How long the backend has to send its response head.
    pub upstream_header_timeout: Duration,
    /// Longest the backend may send nothing within a response body; `None` for no limit.
    pub upstream_read_timeout: Option<Duration>,
    /// Request body cap in bytes.
    pub max_body: Option<u64>,
    /// `Strict-Transport-Security` value for HTTPS responses.
    pub hsts: Option<HeaderValue>,
    /// Response compression, when on for this route.
    pub compression: Option<Arc<CompressionPolicy>>,
    /// Request body decoding, when on for this route.
    pub request_decoding: Option<RequestDecoding>,
    /// Who may use the route (`deny`, `allow`, `allow_methods`, `basic_auth`).
    pub access: Option<crate::protect::access::AccessPolicy>,
    /// Metric handles, registered on the route's first request.
    pub metrics: std::sync::OnceLock<Arc<crate::observe::metrics::RouteMetrics>>,
    /// Per-key rate limit, shared with earlier generations that had the same limit.
    pub rate_limit: Option<Arc<crate::protect::rate_limit::RateLimiter>>,
    /// The HTTP cache, when on for this route.
    pub cache: Option<Arc<crate::cache::RouteCache>>,
}

/// A listener as configured.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Name for logs.
    pub name: Arc<str>,
    /// Address to bind.
    pub address: SocketAddr,
    /// Serve HTTP/1.1.
    pub http1: bool,
    /// Serve HTTP/2 (h2c, or ALPN h2 with TLS).
    pub http2: bool,
    /// TLS settings, for an HTTPS listener.
    pub tls: Option<ListenerTls>,
    /// Port to redirect every request to over HTTPS, for a redirecting listener.
    pub redirect_https: Option<u16>,
    /// Which TCP peers may connect (`deny`, `allow`).
    pub access: Option<Arc<crate::protect::access::AccessPolicy>>,
}

/// One compiled configuration.
#[derive(Debug)]
pub struct Generation {
    /// Route lookup.
    pub routes: RouteTable<Arc<Route>>,
    /// Pools by name.
    pub pools: HashMap<String, Arc<UpstreamPool>>,
    /// Listeners to serve.
    pub listeners: Vec<ListenerSpec>,
    /// Process-wide settings.
    pub server: ServerSettings,
    /// Default timeouts.
    pub timeouts: Timeouts,
    /// Forwarding headers to add.
    pub forwarded: ForwardedSettings,
    /// Access log settings.
    pub access_log: AccessLogSettings,
    /// Client-certificate subject headers of the mutual-TLS listeners. Removed from every
    /// client request on every listener, so no client can forge one through another listener.
    pub subject_headers: Vec<HeaderName>,
    /// Peers whose forwarding headers name the client.
    pub trusted_proxies: crate::protect::ip::TrustedProxies,
    /// Which header names the client behind a trusted proxy.
    pub client_ip_header: crate::config::ClientIpHeader,
    /// `[security]`: identity hiding and the other process-wide protection settings.
    pub security: crate::config::SecuritySettings,
    /// `security.hide_headers`, compiled.
    pub hide: crate::protect::identity::HidePolicy,
    /// The active health checks of this generation's pools, stopped with it.
    health_tasks: std::sync::Mutex<Vec<crate::upstream::health::HealthTasks>>,
}

impl Generation {
    /// Compiles a config that [`crate::config::parse`] accepted.
    ///
    /// Errors here mean validation missed something; they are reported, never panicked on.
    pub fn compile(config: &Config) -> anyhow::Result<Generation> {
        Self::compile_with(config, &BackendRegistry::new())
    }

    /// Compiles a config, taking backend state from `registry`: a backend that the previous
    /// generation had in the same pool keeps its health, ejection and latency.
    pub fn compile_with(config: &Config, registry: &BackendRegistry) -> anyhow::Result<Generation> {
        let mut pools = HashMap::new();
        for (name, pool) in &config.pools {
            let compiled = UpstreamPool::with_registry(name, pool, &config.timeouts, registry)
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("pool {name:?}"))?;
            pools.insert(name.clone(), Arc::new(compiled));
        }
        let compression = Arc::new(compile_compression(config)?);
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            let name: Arc<str> = match &route.name {
                Some(name) => Arc::from(name.get_ref().as_str()),
                None => Arc::from(format!("route-{}", index + 1)),
            };
            let compiled =
                compile_route(config, route, name.clone(), &pools, &compression, registry)
                    .with_context(|| format!("route {name:?}"))?;
            routes.push(compiled);
        }
        let listeners = config
            .listeners
            .iter()
            .map(compile_listener)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let hide = crate::protect::identity::HidePolicy::new(&config.security)
            .map_err(|e| anyhow!("security.{e}"))?;
        Ok(Generation {
            security: config.security.clone(),
            hide,
            routes: RouteTable::new(routes),
            pools,
            listeners,
            server: config.server.clone(),
            timeouts: config.timeouts.clone(),
            forwarded: config.forwarded.clone(),
            access_log: config.access_log.clone(),
            subject_headers: subject_headers(config),
            trusted_proxies: crate::protect::ip::TrustedProxies::from_settings(&config.security)
                .map_err(|e| anyhow!(e))?,
            client_ip_header: config.security.client_ip_header,
            health_tasks: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Every pool's backends with their live state, by pool name (the admin view).
    pub fn pool_snapshots(&self) -> Vec<crate::upstream::PoolSnapshot> {
        let mut pools: Vec<_> = self.pools.values().map(|p| p.snapshot()).collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools
    }

    /// Starts the active health checks of every pool that has them, and returns once each
    /// backend not checked before has had its first check, so no traffic goes to a backend that
    /// is down at start. Needs a Tokio runtime.
    pub async fn start_health_checks(&self) {
        let starts = self.pools.values().filter_map(|pool| {
            let check = pool.health_check.clone()?;
            let backends = pool
                .backends
                .iter()
                .map(|b| (b.authority.clone(), b.state.clone()))
                .collect();
            Some(crate::upstream::health::start(
                pool.name.clone(),
                check,
                backends,
            ))
        });
        let tasks = futures_util::future::join_all(starts).await;
        self.health_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
    }
}

fn subject_headers(config: &Config) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .map(|tls| &tls.get_ref().0)
        .filter(|tls| tls.client_ca.is_some())
        .filter_map(|tls| HeaderName::from_bytes(tls.client_subject_header.as_bytes()).ok())
        .collect();
    names.dedup();
    names
}

fn compile_listener(listener: &ListenerConfig) -> anyhow::Result<ListenerSpec> {
    let address: SocketAddr = listener
        .address
        .get_ref()
        .parse()
        .with_context(|| format!("listener address {:?}", listener.address.get_ref()))?;
    let name = match &listener.name {
        Some(name) => Arc::from(name.get_ref().as_str()),
        None => Arc::from(address.to_string()),
    };
    let access = crate::protect::access::AccessPolicy::for_listener(listener)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("listener {name}"))?
        .map(Arc::new);
    Ok(ListenerSpec {
        name,
        address,
        http1: listener.http1,
        http2: listener.http2,
        tls: listener.tls.as_ref().map(|t| t.get_ref().0.clone()),
        redirect_https: listener.redirect_https.then_some(listener.https_port),
        access,
    })
}

fn compile_route(
    config: &Config,
    route: &crate::config::RouteConfig,
    name: Arc<str>,
    pools: &HashMap<String, Arc<UpstreamPool>>,
    compression: &Arc<CompressionPolicy>,
    registry: &BackendRegistry,
) -> anyhow::Result<(RouteMatch, Arc<Route>)> {
    let hosts = route
        .host
        .as_ref()
        .map(|h| h.get_ref().0.clone())
        .unwrap_or_default()
        .iter()
        .map(|h| HostPattern::parse(h).map_err(|e| anyhow!(e)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let path = match (&route.path, &route.path_prefix, &route.path_regex) {
        (Some(p), _, _) => PathMatcher::Exact(p.get_ref().clone()),
        (_, Some(p), _) => PathMatcher::Prefix(p.get_ref().clone()),
        (_, _, Some(r)) => PathMatcher::Regex(regex::Regex::new(r.get_ref())?),
        _ => PathMatcher::Any,
    };
    let methods = route
        .methods
        .as_ref()
        .map(|ms| {
            ms.iter()
                .map(|m| Method::from_bytes(m.get_ref().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let headers = route
        .headers
        .iter()
        .map(|(n, v)| {
            Ok((
                HeaderName::from_bytes(n.as_bytes())?,
                HeaderValue::from_str(v.get_ref())?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pool = pools
        .get(route.pool.get_ref())
        .cloned()
        .ok_or_else(|| anyhow!("pool {:?} is not defined", route.pool.get_ref()))?;
    let host = match (&route.host_header, route.preserve_host) {
        (Some(fixed), _) => HostRewrite::Fixed(HeaderValue::from_str(fixed.get_ref())?),
        (None, true) => HostRewrite::Preserve,
        (None, false) => HostRewrite::Backend,
    };
    let matcher = RouteMatch {
        hosts,
        path,
        methods,
        headers,
    };
    let rate_limit = route
        .rate_limit
        .as_ref()
        .map(|settings| {
            registry
                .rate_limits()
                .limiter_for(&name, settings.get_ref())
                .map_err(|e| anyhow!(e))
        })
        .transpose()?;
    let cache = crate::cache::RouteCache::for_route(
        name.clone(),
        &config.cache,
        route.cache.as_ref().map(|c| &c.get_ref().0),
        registry.caches(),
    )
    .map_err(|e| anyhow!(e))?;
    let compiled = Route {
        cache,
        name,
        pool,
        strip_prefix: route.strip_prefix.as_ref().map(|p| p.get_ref().clone()),
        add_prefix: route.add_prefix.as_ref().map(|p| p.get_ref().clone()),
        host,
        request_edits: compile_edits(&route.request_headers)?,
        response_edits: compile_edits(&route.response_headers)?,
        upstream_header_timeout: route
            .timeouts
            .upstream_header
            .unwrap_or(config.timeouts.upstream_header)
            .0,
        upstream_read_timeout: route
            .timeouts
            .upstream_read
            .unwrap_or(config.timeouts.upstream_read)
            .limit(),
        max_body: route.max_body.or(config.server.max_body).map(|b| b.0),
        hsts: route.hsts.as_ref().map(hsts_value),
        compression: route
            .compression
            .unwrap_or(config.compression.enabled)
            .then(|| compression.clone()),
        request_decoding: route
            .decompress_requests
            .unwrap_or(config.compression.decompress_requests)
            .then_some(RequestDecoding {
                max_decoded: config.compression.max_decompressed_request.0,
            }),
        metrics: std::sync::OnceLock::new(),
        rate_limit,
        access: crate::protect::access::AccessPolicy::for_route(route).map_err(|e| anyhow!(e))?,
    };
    Ok((matcher, Arc::new(compiled)))
}

fn hsts_value(hsts: &crate::config::Hsts) -> HeaderValue {
    let mut value = format!("max-age={}", hsts.max_age.0.as_secs());
    if hsts.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if hsts.preload {
        value.push_str("; preload");
    }
    // Digits and fixed ASCII words only: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"))
}

fn compile_compression(config: &Config) -> anyhow::Result<CompressionPolicy> {
    let settings = &config.compression;
    Ok(CompressionPolicy {
        preference: settings
            .algorithms
            .iter()
            .map(|a| a.get_ref().parse::<Encoding>().map_err(|e| anyhow!(e)))
            .collect::<anyhow::Result<Vec<_>>>()?,
        min_size: settings.min_size.0,
        types: settings
            .types
            .iter()
            .map(|t| MediaRange::parse(t.get_ref()).map_err(|e| anyhow!(e)))
            .collect::<anyhow::Result<Vec<_>>>()?,
        levels: Levels {
            gzip: settings.gzip_level,
            brotli: settings.brotli_level,
            zstd: settings.zstd_level,
        },
    })
}

fn compile_edits(rules: &HeaderRules) -> anyhow::Result<HeaderEdits> {
    let pairs = |map: &std::collections::BTreeMap<String, serde_spanned::Spanned<String>>| {
        map.iter()
            .map(|(n, v)| {
                Ok((
                    HeaderName::from_bytes(n.as_bytes())?,
                    HeaderValue::from_str(v.get_ref())?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    Ok(HeaderEdits {
        remove: rules
            .remove
            .iter()
            .map(|n| HeaderName::from_bytes(n.get_ref().as_bytes()))
            .collect::<Result<Vec<_>, _>>()?,
        set: pairs(&rules.set)?,
        add: pairs(&rules.add)?,
    })
}
