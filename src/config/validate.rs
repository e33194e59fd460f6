//! Whole-config checks that serde cannot express: references, duplicates, addresses, patterns.
//!
//! Each check uses the same parser the runtime compiles with, so a config that passes here
//! compiles, and every problem is collected rather than stopping at the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use http::{HeaderName, HeaderValue};
use serde_spanned::Spanned;

use super::schema::{Config, HeaderRules};
use crate::routing::HostPattern;
use crate::upstream::parse_backend_address;

/// A problem found by validation, located by a byte span of the config text.
#[derive(Debug)]
pub struct Problem {
    /// Where in the text; `None` when the problem is about the file as a whole.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
}

struct Problems(Vec<Problem>);

impl Problems {
    fn at<T>(&mut self, item: &Spanned<T>, message: impl Into<String>) {
        self.0.push(Problem {
            span: Some(item.span()),
            message: message.into(),
        });
    }
}

/// Returns every problem in `config`; empty means it compiles.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Problems(Vec::new());
    if config.listeners.is_empty() {
        problems.0.push(Problem {
            span: None,
            message: "no [[listener]] is configured; add one with an `address`".to_owned(),
        });
    }
    if config.server.max_header_bytes.0 < 8192 {
        problems.0.push(Problem {
            span: None,
            message: "server.max_header_bytes must be at least 8KiB".to_owned(),
        });
    }
    if let Err(message) = crate::protect::identity::HidePolicy::new(&config.security) {
        problems.0.push(Problem {
            span: None,
            message: format!("security.{message}"),
        });
    }
    if !(0.0..=1.0).contains(&config.access_log.sample) {
        problems.0.push(Problem {
            span: None,
            message: "access_log.sample must be 0.0 to 1.0".to_owned(),
        });
    }
    if let Some(admin) = &config.admin {
        match admin.get_ref().address.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_loopback() && admin.get_ref().token.is_none() => {
                problems.at(admin, "an admin listener off loopback needs a `token`")
            }
            Ok(addr)
                if config.listeners.iter().any(|l| {
                    l.address.get_ref().parse::<SocketAddr>().ok() == Some(addr) && addr.port() != 0
                }) =>
            {
                problems.at(
                    admin,
                    format!("admin address {addr} is also a listener's address"),
                )
            }
            Ok(_) => {}
            Err(_) => problems.at(
                admin,
                format!(
                    "{:?} is not a socket address; write IP:PORT, e.g. \"127.0.0.1:9901\"",
                    admin.get_ref().address
                ),
            ),
        }
        if admin.get_ref().token.as_deref() == Some("") {
            problems.at(admin, "admin.token is empty");
        }
    }
    for entry in &config.security.trusted_proxies {
        if let Err(message) = crate::protect::ip::parse_entries([entry.get_ref()]) {
            problems.at(entry, message);
        }
    }
    check_compression(config, &mut problems);
    check_cache(config, &mut problems);
    check_listeners(config, &mut problems);
    check_pools(config, &mut problems);
    check_routes(config, &mut problems);
    problems.0
}

/// The cache's sizes and fraction, globally and per route.
fn check_cache(config: &Config, problems: &mut Problems) {
    let settings = &config.cache;
    let max_size = settings.max_size.get_ref().0;
    if max_size < 1 << 20 {
        problems.at(&settings.max_size, "cache.max_size must be at least 1MiB");
    }
    let check_object = |size: &Spanned<crate::config::units::ByteSize>, problems: &mut Problems| {
        let bytes = size.get_ref().0;
        if bytes == 0 {
            problems.at(size, "max_object_size must be more than 0");
        } else if bytes > max_size {
            problems.at(
                size,
                format!("max_object_size ({bytes} bytes) is larger than cache.max_size ({max_size} bytes)"),
            );
        } else if bytes > 1 << 30 {
            // Objects are held in memory whole; the weigher counts up to 4GiB per entry.
            problems.at(size, "max_object_size must be at most 1GiB");
        }
    };
    let check_fraction = |fraction: &Spanned<f64>, problems: &mut Problems| {
        if !(0.0..=1.0).contains(fraction.get_ref()) {
            problems.at(fraction, "heuristic_fraction must be 0.0 to 1.0");
        }
    };
    check_object(&settings.max_object_size, problems);
    check_fraction(&settings.heuristic_fraction, problems);
    if let Some(disk) = &settings.disk {
        check_cache_disk(disk.get_ref(), problems);
    }
    check_ip_lists(Some(&settings.purge_allow), None, problems);
    for name in &settings.key_cookies {
        if let Err(message) = crate::cache::key::cookie_field(name.get_ref()) {
            problems.at(name, message);
        }
    }
    for name in settings
        .targeted_headers
        .iter()
        .chain(&settings.key_headers)
    {
        if HeaderName::from_bytes(name.get_ref().as_bytes()).is_err() {
            problems.at(
                name,
                format!("{:?} is not a valid header name", name.get_ref()),
            );
        }
    }
    for route in &config.routes {
        let Some(cache) = &route.cache else {
            continue;
        };
        let cache = &cache.get_ref().0;
        if let Some(size) = &cache.max_object_size {
            check_object(size, problems);
        }
        if let Some(fraction) = &cache.heuristic_fraction {
            check_fraction(fraction, problems);
        }
    }
}

/// The disk tier's sizes, and its directory: created if missing and written to, so a
/// directory the process cannot use is refused at start and reload rather than found later.
fn check_cache_disk(disk: &crate::config::schema::DiskCacheSettings, problems: &mut Problems) {
    let max_size = disk.max_size.get_ref().0;
    if max_size < 1 << 20 {
        problems.at(&disk.max_size, "cache.disk.max_size must be at least 1MiB");
    }
    if let Some(size) = &disk.max_object_size {
        let object = size.get_ref().0;
        if object == 0 {
            problems.at(size, "cache.disk.max_object_size must be more than 0");
        } else if object > max_size {
            problems.at(
                size,
            format!(
                "cache.disk.max_object_size ({object} bytes) is larger than cache.disk.max_size ({max_size} bytes)"
            ),
            );
        }
    }
    let path = disk.path.get_ref();
    if path.is_empty() {
        problems.at(&disk.path, "cache.disk.path is empty");
    } else if let Err(error) = crate::cache::disk::check_writable(std::path::Path::new(path)) {
        problems.at(
            &disk.path,
            format!("cache.disk.path {path:?} cannot be created or written: {error}"),
        );
    }
}

fn check_compression(config: &Config, problems: &mut Problems) {
    let settings = &config.compression;
    for algorithm in &settings.algorithms {
        if let Err(message) = algorithm.get_ref().parse::<crate::compress::Encoding>() {
            problems.at(algorithm, message);
        }
    }
    for media in &settings.types {
        if let Err(message) = crate::compress::MediaRange::parse(media.get_ref()) {
            problems.at(media, message);
        }
    }
    let levels = [
        (
            "compression.gzip_level",
            (1..=9).contains(&settings.gzip_level),
            "1 to 9",
        ),
        (
            "compression.brotli_level",
            settings.brotli_level <= 11,
            "0 to 11",
        ),
        (
            "compression.zstd_level",
            (1..=19).contains(&settings.zstd_level),
            "1 to 19",
        ),
    ];
    for (key, ok, range) in levels {
        if !ok {
            problems.0.push(Problem {
                span: None,
                message: format!("{key} must be {range}"),
            });
        }
    }
}

fn check_listeners(config: &Config, problems: &mut Problems) {
    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, ()> = HashMap::new();
    for listener in &config.listeners {
        match listener.address.get_ref().parse::<SocketAddr>() {
            Ok(addr) => {
                // Port 0 asks the kernel for any free port: such listeners never clash.
                if addr.port() != 0 && addresses.insert(addr, ()).is_some() {
                    problems.at(&listener.address, format!("address {addr} is used by two listeners"));
                }
            }
            Err(_) => problems.at(
                &listener.address,
                format!(
                    "{:?} is not a socket address; write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                    listener.address.get_ref()
                ),
            ),
        }
        if let Some(name) = &listener.name
            && names.insert(name.get_ref(), ()).is_some()
        {
            problems.at(
                name,
                format!("listener name {:?} is used twice", name.get_ref()),
            );
        }
        check_ip_lists(
            listener.allow.as_deref(),
            listener.deny.as_deref(),
            problems,
        );
        if !listener.http1 && !listener.http2 {
            problems.at(&listener.address, "listener serves neither http1 nor http2");
        }
        check_conn_limits(listener, problems);
        if let Some(tls) = &listener.tls {
            if let Err(message) = crate::tls::check_listener(&tls.get_ref().0) {
                problems.at(tls, message);
            }
            if listener.redirect_https {
                problems.at(
                    tls,
                    "redirect_https belongs on a plain HTTP listener, not on a TLS one",
                );
            }
        }
    }
}

/// `max_connections`, `max_connections_per_ip`, `max_requests_per_ip` (each at least 1) and
/// `new_connections_per_ip` / `new_connections_burst` (checked as the rate limiter compiles them).
fn check_conn_limits(listener: &crate::config::ListenerConfig, problems: &mut Problems) {
    for (key, limit) in [
        ("max_connections", &listener.max_connections),
        ("max_connections_per_ip", &listener.max_connections_per_ip),
        ("max_requests_per_ip", &listener.max_requests_per_ip),
    ] {
        if let Some(limit) = limit
            && *limit.get_ref() == 0
        {
            problems.at(
                limit,
                format!("{key} must be at least 1; leave it out for no limit"),
            );
        }
    }
    if let (Some(total), Some(per_ip)) =
        (&listener.max_connections, &listener.max_connections_per_ip)
        && per_ip.get_ref() > total.get_ref()
    {
        problems.at(
            per_ip,
            "max_connections_per_ip is more than max_connections, so it never applies",
        );
    }
    match (
        &listener.new_connections_per_ip,
        &listener.new_connections_burst,
    ) {
        (Some(rate), burst) => {
            let settings = crate::protect::conn_limit::rate_settings(
                rate.get_ref(),
                burst.as_ref().map(|b| *b.get_ref()),
            );
            if let Err(message) = crate::protect::rate_limit::check_settings(&settings) {
                match burst {
                    Some(burst) if message.starts_with("rate_limit burst") => problems.at(
                        burst,
                        message.replacen("rate_limit burst", "new_connections_burst", 1),
                    ),
                    _ => problems.at(rate, format!("new_connections_per_ip: {message}")),
                }
            }
        }
        (None, Some(burst)) => {
            problems.at(burst, "new_connections_burst needs new_connections_per_ip")
        }
        (None, None) => {}
    }
}

fn check_pools(config: &Config, problems: &mut Problems) {
    for (name, pool) in &config.pools {
        let entries = pool.backends.get_ref();
        if entries.is_empty() {
            problems.at(&pool.backends, "a pool needs at least one backend");
        } else if entries.iter().all(|e| e.get_ref().backup) {
            problems.at(
                &pool.backends,
                "every backend is a backup; at least one must be a primary",
            );
        }
        let mut seen: HashMap<String, ()> = HashMap::new();
        for entry in entries {
            let backend = entry.get_ref();
            match parse_backend_address(&backend.address) {
                Ok(authority) => {
                    if seen.insert(authority.as_str().to_owned(), ()).is_some() {
                        problems.at(
                            entry,
                            format!("backend {} is listed twice in pool {name:?}", authority),
                        );
                    }
                }
                Err(message) => problems.at(entry, message),
            }
            if !(1..=10_000).contains(&backend.weight) {
                problems.at(entry, "weight must be 1 to 10000");
            }
        }
        match (&pool.hash_key, pool.balance) {
            (Some(key), crate::config::BalancePolicy::Hash) => {
                if let Err(message) = crate::upstream::HashKey::parse(key.get_ref()) {
                    problems.at(key, message);
                }
            }
            (Some(key), _) => problems.at(key, "hash_key needs balance = \"hash\""),
            _ => {}
        }
        if let Some(sticky) = &pool.sticky {
            let settings = sticky.get_ref();
            if settings.cookie.is_empty()
                || !settings
                    .cookie
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                problems.at(
                    sticky,
                    format!("{:?} is not a valid cookie name", settings.cookie),
                );
            }
            if settings.max_age.is_some_and(|age| age.0.is_zero()) {
                problems.at(
                    sticky,
                    "sticky.max_age must be more than 0s; leave it out for a session cookie",
                );
            }
            if settings.secret.as_deref() == Some("") {
                problems.at(
                    sticky,
                    "sticky.secret is empty; leave it out for a random one",
                );
            }
        }
        if let Some(max) = &pool.max_connections
            && *max.get_ref() == 0
        {
            problems.at(
                max,
                "max_connections must be at least 1; leave it out for no limit",
            );
        }
        if let Some(pending) = &pool.max_pending
            && pool.max_connections.is_none()
        {
            problems.at(pending, "max_pending needs max_connections");
        }
        if let Some(check) = &pool.health_check
            && let Err(message) = crate::upstream::health::check_settings(check.get_ref())
        {
            problems.at(check, message);
        }
        if let Some(outlier) = &pool.outlier {
            let settings = outlier.get_ref();
            if settings.max_ejected_percent > 100 {
                problems.at(outlier, "outlier.max_ejected_percent must be 0 to 100");
            }
            if settings
                .failure_statuses
                .iter()
                .any(|s| !(100..=599).contains(s))
            {
                problems.at(
                    outlier,
                    "outlier.failure_statuses must be HTTP statuses (100-599)",
                );
            }
            if settings.ejection_time.0 > settings.max_ejection_time.0 {
                problems.at(
                    outlier,
                    "outlier.ejection_time is longer than max_ejection_time",
                );
            }
        }
        if let Some(retry) = &pool.retry {
            let settings = retry.get_ref();
            if !(1..=10).contains(&settings.tries) {
                problems.at(retry, "retry.tries must be 1 to 10 (1 means no retries)");
            }
            if settings.statuses.iter().any(|s| !(100..=599).contains(s)) {
                problems.at(retry, "retry.statuses must be HTTP statuses (100-599)");
            }
            if settings.budget_percent > 1000 {
                problems.at(retry, "retry.budget_percent must be 0 to 1000");
            }
        }
        if let Some(tls) = &pool.tls
            && let Some(spec) = &tls.get_ref().0
            && let Err(message) = crate::tls::upstream::client_config(spec, &[])
        {
            problems.at(tls, message);
        }
    }
}

fn check_routes(config: &Config, problems: &mut Problems) {
    let mut names: HashMap<&str, ()> = HashMap::new();
    for route in &config.routes {
        if let Some(name) = &route.name
            && names.insert(name.get_ref(), ()).is_some()
        {
            problems.at(
                name,
                format!("route name {:?} is used twice", name.get_ref()),
            );
        }
        if !config.pools.contains_key(route.pool.get_ref()) {
            let known: Vec<&str> = config.pools.keys().map(String::as_str).collect();
            problems.at(
                &route.pool,
                format!(
                    "pool {:?} is not defined (defined pools: {})",
                    route.pool.get_ref(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        if let Some(hosts) = &route.host {
            if hosts.get_ref().0.is_empty() {
                problems.at(
                    hosts,
                    "an empty host list matches nothing; leave `host` out to match any host",
                );
            }
            for host in &hosts.get_ref().0 {
                if let Err(message) = HostPattern::parse(host) {
                    problems.at(hosts, message);
                }
            }
        }
        let path_matchers = [&route.path, &route.path_prefix, &route.path_regex];
        let given: Vec<&Spanned<String>> =
            path_matchers.iter().filter_map(|m| m.as_ref()).collect();
        if given.len() > 1 {
            problems.at(
                given[1],
                "use only one of `path`, `path_prefix` and `path_regex`",
            );
        }
        for path in [
            &route.path,
            &route.path_prefix,
            &route.strip_prefix,
            &route.add_prefix,
        ]
        .into_iter()
        .flatten()
        {
            if !path.get_ref().starts_with('/') {
                problems.at(path, format!("{:?} must start with '/'", path.get_ref()));
            }
        }
        if let Some(regex) = &route.path_regex
            && let Err(e) = regex::Regex::new(regex.get_ref())
        {
            problems.at(regex, format!("invalid regular expression: {e}"));
        }
        // The same rules as `allow_methods`: a lower-case `get` would be a method of its own
        // that no client sends, so the route would silently never match.
        for method in route.methods.iter().flatten() {
            if let Err(message) = crate::protect::access::parse_methods([method.get_ref()]) {
                problems.at(method, message);
            }
        }
        for (name, value) in &route.headers {
            check_header(name, value, problems);
        }
        if let Some(host) = &route.host_header
            && HeaderValue::from_str(host.get_ref()).is_err()
        {
            problems.at(host, "host_header is not a valid header value");
        }
        check_rules(&route.request_headers, problems);
        check_rules(&route.response_headers, problems);
        if let Some(limit) = &route.rate_limit
            && let Err(message) = crate::protect::rate_limit::check_settings(limit.get_ref())
        {
            problems.at(limit, message);
        }
        check_ip_lists(route.allow.as_deref(), route.deny.as_deref(), problems);
        if let Some(auth) = &route.basic_auth
            && let Err(message) = crate::protect::access::BasicAuth::load(auth.get_ref())
        {
            problems.at(auth, message);
        }
        for method in route.allow_methods.iter().flatten() {
            if let Err(message) = crate::protect::access::parse_methods([method.get_ref()]) {
                problems.at(method, message);
            }
        }
    }
}

/// Entries of allow/deny lists, each checked where it is written; a `file:` entry's file is read
/// (so `gatehouse check` finds a missing or broken list), and its own line named in the message.
fn check_ip_lists(
    allow: Option<&[Spanned<String>]>,
    deny: Option<&[Spanned<String>]>,
    problems: &mut Problems,
) {
    for entry in allow.into_iter().chain(deny).flatten() {
        if let Err(message) = crate::protect::ip::parse_entries([entry.get_ref()]) {
            problems.at(entry, message);
        }
    }
}

fn check_rules(rules: &HeaderRules, problems: &mut Problems) {
    for (name, value) in rules.add.iter().chain(&rules.set) {
        check_header(name, value, problems);
    }
    for name in &rules.remove {
        if HeaderName::from_bytes(name.get_ref().as_bytes()).is_err() {
            problems.at(
                name,
                format!("{:?} is not a valid header name", name.get_ref()),
            );
        }
    }
}

fn check_header(name: &str, value: &Spanned<String>, problems: &mut Problems) {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        problems.at(value, format!("{name:?} is not a valid header name"));
    }
    if HeaderValue::from_str(value.get_ref()).is_err() {
        problems.at(
            value,
            format!("the value for header {name:?} is not a valid header value"),
        );
    }
}
