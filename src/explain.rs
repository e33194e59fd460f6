//! `gatehouse route`: explains what a request would meet — route, pool, backends and policies —
//! without sending it, like `nginx -T` plus a dry run.
//!
//! [`explain`] is pure: it runs the proxy's own route lookup, selection key and path rewrite over
//! a compiled [`Generation`] and describes the result as `key: value` lines. [`command`] is the
//! command line around it (parse the request, load and compile the config, print).

use std::cmp::Reverse;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

use crate::config::units::{ByteSize, HumanDuration};
use crate::config::{BalancePolicy, Config, HealthCheckKind, PoolConfig, UpstreamProtocol};
use crate::proxy::headers::HeaderEdits;
use crate::routing::{
    HostPattern, PathMatcher, RequestFacts, RouteMatch, is_valid_host, normalize_host,
};
use crate::runtime::{Generation, HostRewrite, Route};
use crate::upstream::{Candidate, HashKey, UpstreamPool, sticky};

/// Width of the `key:` column in the output.
const KEY_WIDTH: usize = 16;

/// A request to explain, as given on the command line.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    /// The request method (case-sensitive, as on the wire).
    pub method: Method,
    /// The target: absolute form (`http://host/path?query`) or origin form (`/path?query`).
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
    /// The client's address, for `hash_key = "client_ip"`.
    pub client_ip: IpAddr,
}

/// Why a request given on the command line cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest(pub String);

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRequest {}

impl ExplainRequest {
    /// Builds a request from its command-line parts: `method`, `url` (absolute or origin form)
    /// and `headers` written `"Name: value"`.
    ///
    /// Refuses what the proxy itself would refuse with `400` before routing (several `Host`
    /// headers, an invalid host, `CONNECT`), since such a request never reaches a route.
    pub fn parse(
        method: &str,
        url: &str,
        headers: &[String],
        client_ip: IpAddr,
    ) -> Result<ExplainRequest, InvalidRequest> {
        let bad = |message: String| Err(InvalidRequest(message));
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return bad(format!(
                "method {method:?} is not an HTTP method (a token such as GET or POST)"
            ));
        };
        if method == Method::CONNECT {
            return bad(
                "CONNECT is not served by a reverse proxy listener (the proxy answers 400)".into(),
            );
        }
        let uri = match Uri::try_from(url) {
            Ok(uri) => uri,
            Err(error) => return bad(format!("URL {url:?} is not valid: {error}")),
        };
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(authority)) => {
                if !is_valid_host(authority.as_str().as_bytes()) {
                    return bad(format!(
                        "URL {url:?} has an invalid host {:?} (the proxy answers 400)",
                        authority.as_str()
                    ));
                }
            }
            (Some(scheme), _) => {
                return bad(format!(
                    "URL {url:?}: scheme {scheme:?} is not served; use http:// or https://"
                ));
            }
            (None, _) if url.starts_with('/') => {}
            (None, _) => {
                return bad(format!(
                    "URL {url:?} must be absolute (http://host/path) or start with / (with -H \"Host: ...\")"
                ));
            }
        }
        let mut map = HeaderMap::new();
        for line in headers {
            let Some((name, value)) = line.split_once(':') else {
                return bad(format!("header {line:?} must be written \"Name: value\""));
            };
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return bad(format!("header {line:?}: {name:?} is not a header name"));
            };
            let Ok(value) = HeaderValue::from_str(value.trim()) else {
                return bad(format!(
                    "header {line:?}: the value is not a valid header value"
                ));
            };
            map.append(name, value);
        }
        if map.get_all(header::HOST).iter().count() > 1 {
            return bad("more than one Host header (the proxy answers 400)".into());
        }
        if let Some(host) = map.get(header::HOST)
            && !is_valid_host(host.as_bytes())
        {
            return bad(format!(
                "invalid Host header {:?} (the proxy answers 400)",
                String::from_utf8_lossy(host.as_bytes())
            ));
        }
        Ok(ExplainRequest {
            method,
            uri,
            headers: map,
            client_ip,
        })
    }

    /// The host routing sees: the URL's authority, else the `Host` header (as the proxy does).
    pub fn host(&self) -> Option<&str> {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
    }
}

/// What a request would meet: the route it matches (if any) and a description in lines.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The matched route's name and its index in file order (from 0); `None` is a 404.
    pub route: Option<(String, usize)>,
    /// `(key, value)` lines in display order; the keys are stable.
    pub lines: Vec<(&'static str, String)>,
}

impl Explanation {
    /// The value of the line with `key`, if the explanation has one.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.lines {
            let label = format!("{key}:");
            writeln!(f, "{label:<KEY_WIDTH$}{value}")?;
        }
        Ok(())
    }
}

/// Explains which route, pool, backends and policies `request` would meet under `generation`.
///
/// `config` must be the configuration `generation` was compiled from: it supplies the few
/// settings the compiled pools keep private (connect timeout, health-check target, outlier
/// detection, whether the sticky cookie has a fixed secret). Backends are described as
/// configured; live state (health, ejection, load) is not known offline.
pub fn explain(config: &Config, generation: &Generation, request: &ExplainRequest) -> Explanation {
    let mut lines = vec![
        ("request", format!("{} {}", request.method, request.uri)),
        ("host", host_line(request)),
    ];
    let facts = RequestFacts {
        host: request.host(),
        path: request.uri.path(),
        method: &request.method,
        headers: &request.headers,
    };
    let Some((index, route)) = generation.routes.route_for(&facts) else {
        lines.push(("route", "none — the request would get 404".to_owned()));
        return Explanation { route: None, lines };
    };
    let pool = &route.pool;
    let pool_config = config.pools.get(&*pool.name);

    lines.push((
        "route",
        format!("{} (config order {})", route.name, index + 1),
    ));
    if let Some((conditions, _)) = generation.routes.route(index) {
        lines.push(("matched by", matched_by(conditions, request)));
    }
    lines.push(("pool", pool_line(pool)));
    lines.push(("backends", backends_line(pool)));
    if let Some(key) = &pool.hash_key {
        lines.push(("hash key", hash_key_line(pool, key, request)));
    }
    lines.push(("sticky cookie", sticky_line(pool, pool_config, request)));
    lines.push(("forwarded path", forwarded_path_line(route, request)));
    lines.push(("host header", host_header_line(route, request)));
    lines.push(("request edits", edits_line(&route.request_edits)));
    lines.push(("response edits", edits_line(&route.response_edits)));
    let connect = pool_config
        .and_then(|p| p.connect_timeout)
        .unwrap_or(config.timeouts.upstream_connect);
    lines.push((
        "timeouts",
        format!(
            "upstream_header {}; upstream_read {}; connect {connect}",
            HumanDuration(route.upstream_header_timeout),
            route
                .upstream_read_timeout
                .map_or_else(|| "off".to_owned(), |t| HumanDuration(t).to_string())
        ),
    ));
    lines.push(("max body", max_body_line(route, request)));
    lines.push(("retries", retries_line(pool, request)));
    lines.push(("health check", health_check_line(pool, pool_config)));
    lines.push(("outlier", outlier_line(pool_config)));
    lines.push((
        "compression",
        match &route.compression {
            Some(policy) => format!("on ({})", join(policy.preference.iter(), ", ")),
            None => "off".to_owned(),
        },
    ));
    lines.push((
        "decompression",
        match &route.request_decoding {
            Some(decoding) => format!("on (up to {} decoded)", ByteSize(decoding.max_decoded)),
            None => "off".to_owned(),
        },
    ));
    lines.push((
        "hsts",
        match &route.hsts {
            Some(value) => format!("{} (HTTPS responses)", text(value)),
            None => "none".to_owned(),
        },
    ));
    lines.push(("cache", "none (not implemented yet)".to_owned()));
    lines.push(("limits", "none (not implemented yet)".to_owned()));
    Explanation {
        route: Some((route.name.to_string(), index)),
        lines,
    }
}

/// Runs `gatehouse route`: exit 0 with the explanation on stdout (a 404 included), 1 for a bad
/// config (its errors on stderr, as `gatehouse check` prints them), 2 for a bad request.
pub fn command(
    config_path: &Path,
    method: &str,
    url: &str,
    headers: &[String],
    client_ip: IpAddr,
) -> ExitCode {
    let request = match ExplainRequest::parse(method, url, headers, client_ip) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("gatehouse route: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match crate::config::load(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", config_path.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let generation = match Generation::compile(&config) {
        Ok(generation) => generation,
        Err(error) => {
            eprintln!("{}: cannot compile: {error:#}", config_path.display());
            return ExitCode::FAILURE;
        }
    };
    print!("{}", explain(&config, &generation, &request));
    ExitCode::SUCCESS
}

fn host_line(request: &ExplainRequest) -> String {
    match (request.uri.authority(), request.host()) {
        (Some(authority), _) if request.headers.contains_key(header::HOST) => {
            format!("{authority} (from the URL; the Host header is not used for routing)")
        }
        (Some(authority), _) => format!("{authority} (from the URL)"),
        (None, Some(host)) => format!("{host} (from the Host header)"),
        (None, None) => "none (over HTTP/1.1 the proxy answers 400 without one)".to_owned(),
    }
}

fn matched_by(conditions: &RouteMatch, request: &ExplainRequest) -> String {
    let mut parts = Vec::new();
    if conditions.hosts.is_empty() {
        parts.push("any host".to_owned());
    } else {
        let host = request.host().map(normalize_host);
        // The most specific pattern that matches, as the table ranks them.
        let matched = host.as_deref().and_then(|host| {
            conditions
                .hosts
                .iter()
                .filter(|pattern| pattern.matches(host))
                .min_by_key(|pattern| match pattern {
                    HostPattern::Exact(_) => (0, Reverse(0)),
                    HostPattern::Wildcard(suffix) => (1, Reverse(suffix.len())),
                })
        });
        match matched {
            Some(pattern) => parts.push(format!("host {}", host_pattern(pattern))),
            None => parts.push(format!(
                "host {}",
                join(conditions.hosts.iter().map(host_pattern), " or ")
            )),
        }
    }
    parts.push(match &conditions.path {
        PathMatcher::Any => "any path".to_owned(),
        PathMatcher::Exact(path) => format!("path {path}"),
        PathMatcher::Prefix(prefix) => format!("path prefix {prefix}"),
        PathMatcher::Regex(regex) => format!("path regex {}", regex.as_str()),
    });
    if let Some(methods) = &conditions.methods {
        parts.push(format!("methods {}", join(methods.iter(), ",")));
    }
    for (name, value) in &conditions.headers {
        parts.push(format!("header {name}: {}", text(value)));
    }
    parts.join(", ")
}

fn host_pattern(pattern: &HostPattern) -> String {
    match pattern {
        HostPattern::Exact(name) => name.clone(),
        HostPattern::Wildcard(suffix) => format!("*{suffix}"),
    }
}

fn pool_line(pool: &UpstreamPool) -> String {
    let policy = match pool.policy {
        BalancePolicy::RoundRobin => "round_robin",
        BalancePolicy::LeastRequests => "least_requests",
        BalancePolicy::PeakEwma => "peak_ewma",
        BalancePolicy::Hash => "hash",
        BalancePolicy::Random => "random",
    };
    let protocol = match pool.protocol {
        UpstreamProtocol::Http1 => "http1",
        UpstreamProtocol::H2c => "h2c",
    };
    let tls = if pool.scheme() == http::uri::Scheme::HTTPS {
        ", tls"
    } else {
        ""
    };
    format!("{} ({policy}, {protocol}{tls})", pool.name)
}

fn backends_line(pool: &UpstreamPool) -> String {
    let each = pool.backends.iter().map(|backend| {
        let backup = if backend.backup { " backup" } else { "" };
        format!("{} weight {}{backup}", backend.authority, backend.weight)
    });
    join(each, "; ")
}

fn hash_key_text(key: &HashKey) -> String {
    match key {
        HashKey::ClientIp => "client_ip".to_owned(),
        HashKey::Path => "path".to_owned(),
        HashKey::Uri => "uri".to_owned(),
        HashKey::Header(name) => format!("header:{name}"),
        HashKey::Cookie(name) => format!("cookie:{name}"),
    }
}

fn hash_key_line(pool: &UpstreamPool, key: &HashKey, request: &ExplainRequest) -> String {
    let selection = pool.selection_key(&request.uri, &request.headers, request.client_ip);
    let name = hash_key_text(key);
    let Some(hash) = selection.hash else {
        return format!("{name} → missing (no affinity: any backend)");
    };
    // The pool tries primaries first; with none configured, the backups.
    let has_primary = pool.backends.iter().any(|b| !b.backup);
    let candidates: Vec<Candidate> = pool
        .backends
        .iter()
        .filter(|b| b.backup != has_primary)
        .map(|b| Candidate {
            index: b.index,
            weight: f64::from(b.weight).max(f64::MIN_POSITIVE),
            in_flight: 0,
            latency_ns: 0.0,
        })
        .collect();
    match pool
        .balancer
        .pick(&candidates, Some(hash))
        .and_then(|index| pool.backend(index))
    {
        Some(backend) => format!(
            "{name} → present (goes to {} while it is up)",
            backend.authority
        ),
        None => format!("{name} → present"),
    }
}

fn sticky_line(
    pool: &UpstreamPool,
    pool_config: Option<&PoolConfig>,
    request: &ExplainRequest,
) -> String {
    let Some(cookie) = &pool.sticky else {
        return "none".to_owned();
    };
    let state = match sticky::cookie_value(&request.headers, &cookie.name) {
        None => "request has none".to_owned(),
        Some(_) => match cookie
            .backend_of(&request.headers)
            .and_then(|i| pool.backend(i))
        {
            Some(backend) => format!("names backend {}", backend.authority),
            None => "its value names no backend; a new cookie is set".to_owned(),
        },
    };
    let random_secret = pool_config
        .and_then(|p| p.sticky.as_ref())
        .is_some_and(|s| s.get_ref().secret.is_none());
    let secret = if random_secret {
        "; no secret: values change on every start"
    } else {
        ""
    };
    format!("{} ({state}{secret})", cookie.name)
}

fn forwarded_path_line(route: &Route, request: &ExplainRequest) -> String {
    // The proxy's own rewrite, so the answer cannot drift from what is forwarded.
    match crate::proxy::pipeline::rewrite_path(route, &request.uri) {
        Ok(path) => path.as_str().to_owned(),
        Err(error) => format!(
            "none — the proxy would answer {} ({})",
            error.status().as_u16(),
            error.cause()
        ),
    }
}

fn host_header_line(route: &Route, request: &ExplainRequest) -> String {
    let text = match &route.host {
        HostRewrite::Preserve => match request.host() {
            Some(host) => format!("preserved {host}"),
            None => "preserved (the request has none, so none is sent)".to_owned(),
        },
        HostRewrite::Backend => "backend address".to_owned(),
        HostRewrite::Fixed(value) => format!("fixed {}", text(value)),
    };
    if route.pool.protocol == UpstreamProtocol::H2c {
        format!("{text} (sent as :authority)")
    } else {
        text
    }
}

fn edits_line(edits: &HeaderEdits) -> String {
    if edits.is_empty() {
        return "none".to_owned();
    }
    let mut parts = Vec::new();
    if !edits.remove.is_empty() {
        parts.push(format!("remove {}", join(edits.remove.iter(), ", ")));
    }
    for (verb, pairs) in [("set", &edits.set), ("add", &edits.add)] {
        for (name, value) in pairs {
            parts.push(format!("{verb} {name}: {}", text(value)));
        }
    }
    parts.join("; ")
}

fn max_body_line(route: &Route, request: &ExplainRequest) -> String {
    let Some(limit) = route.max_body else {
        return "none".to_owned();
    };
    let declared = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => format!(
            "{} (this request's Content-Length {length} is over it: 413)",
            ByteSize(limit)
        ),
        _ => ByteSize(limit).to_string(),
    }
}

fn retries_line(pool: &UpstreamPool, request: &ExplainRequest) -> String {
    let retry = &pool.retry;
    if retry.tries <= 1 {
        return "off (1 try)".to_owned();
    }
    let statuses = if retry.statuses.is_empty() {
        "none".to_owned()
    } else {
        join(retry.statuses.iter(), ",")
    };
    let methods = if retry.non_idempotent {
        "any method"
    } else {
        "idempotent methods only"
    };
    let this = if retry.may_repeat(&request.method) {
        format!("{} may be retried", request.method)
    } else {
        format!("{} only after a connect failure", request.method)
    };
    format!(
        "{} tries; statuses {statuses}; {methods}; {this}",
        retry.tries
    )
}

fn health_check_line(pool: &UpstreamPool, pool_config: Option<&PoolConfig>) -> String {
    let (Some(check), Some(settings)) = (
        &pool.health_check,
        pool_config.and_then(|p| p.health_check.as_ref()),
    ) else {
        return "none".to_owned();
    };
    let settings = settings.get_ref();
    let probe = match settings.kind {
        HealthCheckKind::Http => format!(
            "http {} {} expect {}",
            settings.method.get_ref(),
            settings.path.get_ref(),
            settings.expect_status.get_ref()
        ),
        HealthCheckKind::Tcp => "tcp connect".to_owned(),
    };
    format!(
        "{probe} every {} (timeout {}, rise {}, fall {})",
        HumanDuration(check.interval),
        HumanDuration(check.timeout),
        check.rise,
        check.fall
    )
}

fn outlier_line(pool_config: Option<&PoolConfig>) -> String {
    let outlier = pool_config.map(PoolConfig::outlier).unwrap_or_default();
    if outlier.consecutive_failures == 0 {
        return "off".to_owned();
    }
    let statuses = if outlier.failure_statuses.is_empty() {
        String::new()
    } else {
        format!(", statuses {}", join(outlier.failure_statuses.iter(), ","))
    };
    format!(
        "eject after {} failures in a row (connect errors, timeouts{statuses}) for {} (doubling up to {}); at most {}% of the pool",
        outlier.consecutive_failures,
        outlier.ejection_time,
        outlier.max_ejection_time,
        outlier.max_ejected_percent
    )
}

/// A header value as text (invalid UTF-8 replaced), for display only.
fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn join<T: fmt::Display>(items: impl Iterator<Item = T>, separator: &str) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[pool.app]
backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }, { address = "127.0.0.1:9003", backup = true }]
health_check = { path = "/health", interval = "5s" }

[pool.canary]
backends = ["127.0.0.1:9101"]
protocol = "h2c"

[pool.hashed]
backends = ["127.0.0.1:9201", "127.0.0.1:9202", "127.0.0.1:9203"]
balance = "hash"
hash_key = "header:x-user"
sticky = { secret = "s3cret" }
retry = { tries = 1 }

[[route]]
name = "wild"
host = "*.example.com"
pool = "app"
compression = true

[[route]]
name = "api"
host = "api.example.com"
path_prefix = "/v1"
strip_prefix = "/v1"
pool = "app"
max_body = "10MiB"

[[route]]
name = "canary"
host = "api.example.com"
path_prefix = "/v1"
headers = { "x-env" = "canary" }
pool = "canary"

[[route]]
name = "hashed"
host = "hash.test"
pool = "hashed"
preserve_host = false
"#;

    fn compiled(text: &str) -> (Config, Generation) {
        let config = crate::config::parse(Path::new("test.toml"), text).expect("valid config");
        let generation = Generation::compile(&config).expect("compiles");
        (config, generation)
    }

    fn run(method: &str, url: &str, headers: &[&str]) -> Explanation {
        let (config, generation) = compiled(CONFIG);
        let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        let request = ExplainRequest::parse(method, url, &headers, IpAddr::from([127, 0, 0, 1]))
            .expect("valid request");
        explain(&config, &generation, &request)
    }

    fn route_name(explanation: &Explanation) -> Option<&str> {
        explanation.route.as_ref().map(|(name, _)| name.as_str())
    }

    #[test]
    fn a_wildcard_host_matches_a_subdomain() {
        let e = run("GET", "http://Shop.Example.com:8080/cart", &[]);
        assert_eq!(route_name(&e), Some("wild"));
        assert_eq!(e.value("route"), Some("wild (config order 1)"));
        assert_eq!(e.value("matched by"), Some("host *.example.com, any path"));
        assert_eq!(e.value("pool"), Some("app (round_robin, http1)"));
        assert_eq!(
            e.value("backends"),
            Some(
                "127.0.0.1:9001 weight 1; 127.0.0.1:9002 weight 3; 127.0.0.1:9003 weight 1 backup"
            )
        );
        assert_eq!(
            e.value("host header"),
            Some("preserved Shop.Example.com:8080")
        );
        assert_eq!(e.value("compression"), Some("on (zstd, br, gzip)"));
        assert_eq!(
            e.value("health check"),
            Some("http GET /health expect 200-399 every 5s (timeout 2s, rise 2, fall 3)")
        );
        assert_eq!(e.value("hash key"), None);
        // The apex is not a subdomain.
        assert_eq!(route_name(&run("GET", "http://example.com/", &[])), None);
    }

    #[test]
    fn an_exact_host_and_prefix_win_and_the_prefix_is_stripped() {
        let e = run("GET", "/v1/users?x=1", &["Host: api.example.com"]);
        assert_eq!(e.value("route"), Some("api (config order 2)"));
        assert_eq!(
            e.value("host"),
            Some("api.example.com (from the Host header)")
        );
        assert_eq!(
            e.value("matched by"),
            Some("host api.example.com, path prefix /v1")
        );
        assert_eq!(e.value("forwarded path"), Some("/users?x=1"));
        assert_eq!(e.value("max body"), Some("10MiB"));
        assert_eq!(
            e.value("retries"),
            Some("3 tries; statuses 502,503,504; idempotent methods only; GET may be retried")
        );
        let post = run(
            "POST",
            "http://api.example.com/v1",
            &["Content-Length: 20000000"],
        );
        assert_eq!(post.value("forwarded path"), Some("/"));
        assert!(
            post.value("max body").is_some_and(|v| v.contains("413")),
            "{post}"
        );
        assert!(
            post.value("retries")
                .is_some_and(|v| v.ends_with("POST only after a connect failure")),
            "{post}"
        );
    }

    #[test]
    fn a_header_condition_selects_its_route() {
        let e = run("GET", "http://api.example.com/v1/x", &["X-Env: canary"]);
        assert_eq!(route_name(&e), Some("canary"));
        assert_eq!(
            e.value("matched by"),
            Some("host api.example.com, path prefix /v1, header x-env: canary")
        );
        assert_eq!(e.value("pool"), Some("canary (round_robin, h2c)"));
        assert_eq!(
            e.value("host header"),
            Some("preserved api.example.com (sent as :authority)")
        );
        assert_eq!(e.value("forwarded path"), Some("/v1/x"));
        let other = run("GET", "http://api.example.com/v1/x", &["X-Env: prod"]);
        assert_eq!(route_name(&other), Some("api"));
    }

    #[test]
    fn no_match_is_a_404_explained() {
        let e = run("GET", "http://nowhere.test/", &[]);
        assert_eq!(e.route, None);
        assert_eq!(e.value("route"), Some("none — the request would get 404"));
        assert_eq!(e.value("pool"), None);
        let shown = e.to_string();
        assert!(
            shown.contains("\nroute:          none — the request would get 404\n"),
            "{shown}"
        );
        let no_host = run("GET", "/", &[]);
        assert_eq!(no_host.route, None);
        assert!(
            no_host.value("host").is_some_and(|v| v.starts_with("none")),
            "{no_host}"
        );
    }

    #[test]
    fn the_hash_key_is_reported_present_or_missing() {
        let with = run("GET", "http://hash.test/", &["X-User: alice"]);
        let value = with.value("hash key").expect("hash key line");
        assert!(
            value.starts_with("header:x-user → present (goes to 127.0.0.1:92"),
            "{value}"
        );
        // The same key always lands on the same backend.
        assert_eq!(
            run("GET", "http://hash.test/", &["X-User: alice"]).value("hash key"),
            Some(value)
        );
        let without = run("GET", "http://hash.test/", &[]);
        assert_eq!(
            without.value("hash key"),
            Some("header:x-user → missing (no affinity: any backend)")
        );
        assert_eq!(without.value("pool"), Some("hashed (hash, http1)"));
        assert_eq!(without.value("host header"), Some("backend address"));
        assert_eq!(without.value("retries"), Some("off (1 try)"));
        assert_eq!(
            without.value("sticky cookie"),
            Some("gatehouse_sticky (request has none)")
        );
    }

    #[test]
    fn a_sticky_cookie_names_its_backend() {
        let (config, generation) = compiled(CONFIG);
        let pool = generation.pools.get("hashed").expect("pool");
        let cookie = pool.sticky.as_ref().expect("sticky");
        let set = cookie.set_cookie(1, false).expect("set-cookie");
        let pair = text(&set).split(';').next().unwrap_or_default().to_owned();
        let headers = vec![format!("Cookie: a=1; {pair}")];
        let request = ExplainRequest::parse(
            "GET",
            "http://hash.test/",
            &headers,
            IpAddr::from([127, 0, 0, 1]),
        )
        .expect("request");
        let e = explain(&config, &generation, &request);
        assert_eq!(
            e.value("sticky cookie"),
            Some("gatehouse_sticky (names backend 127.0.0.1:9202)")
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let parse = |method: &str, url: &str, headers: &[&str]| {
            let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
            ExplainRequest::parse(method, url, &headers, ip).err()
        };
        assert!(parse("GE T", "/", &[]).is_some());
        assert!(parse("", "/", &[]).is_some());
        assert!(parse("CONNECT", "/", &[]).is_some());
        assert!(parse("GET", "not a url", &[]).is_some());
        assert!(parse("GET", "example.com", &[]).is_some());
        assert!(parse("GET", "ftp://example.com/", &[]).is_some());
        assert!(parse("GET", "http://user@example.com/", &[]).is_some());
        assert!(parse("GET", "/", &["NoColon"]).is_some());
        assert!(parse("GET", "/", &["Bad Name: x"]).is_some());
        assert!(parse("GET", "/", &["Host: a.test", "Host: b.test"]).is_some());
        assert!(parse("GET", "/", &["Host: a test"]).is_some());
        assert!(parse("get", "/x", &["Host: a.test", "X-A:1"]).is_none());
    }
}
