//! Route matching: which configured route a request belongs to. Pure code, no I/O.
//!
//! Precedence is decided once, when the table is built, so lookup is a scan of a short,
//! pre-sorted candidate list. The order, most specific first:
//! 1. host: exact name, then wildcard (longer suffix first), then routes without a host;
//! 2. path: exact, then prefix (longer first), then regex, then no path matcher;
//! 3. routes restricted to methods before routes for any method;
//! 4. more header conditions before fewer;
//! 5. earlier in the file before later.
//!
//! The first candidate whose every condition holds wins. Host comes first, as in nginx's
//! `server_name` before `location`: a route for `api.example.com` takes all of that host's traffic
//! it matches, even when a host-less route has a more specific path.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

/// A host condition: an exact name or a `*.suffix` wildcard, compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches exactly this (lower-case) host name.
    Exact(String),
    /// `*.example.com`: matches any name ending in `.example.com` (any depth), not `example.com`.
    /// Holds the suffix including its leading dot.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `example.com` or `*.example.com`; ports are not part of a host pattern.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "{text:?} is not a host pattern; write a name like \"example.com\" or a wildcard like \"*.example.com\""
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// True if `host` matches; `host` must be normalized first (see [`normalize_host`]).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// A path condition.
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// Any path.
    Any,
    /// Exactly this path.
    Exact(String),
    /// Paths starting with this string (a plain string prefix: `/api` also matches `/apiary`).
    Prefix(String),
    /// Paths the regex finds a match in (anchor it with `^...$` to match the whole path).
    Regex(Regex),
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => p == path,
            PathMatcher::Prefix(p) => path.starts_with(p.as_str()),
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }
}

/// Every condition of one route.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// Host patterns, any of which must match; empty means any host.
    pub hosts: Vec<HostPattern>,
    /// The path condition.
    pub path: PathMatcher,
    /// Allowed methods; `None` means any.
    pub methods: Option<Vec<Method>>,
    /// Headers that must be present with exactly these values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the table needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The `Host` header or the URI authority, as the client sent it (port allowed).
    pub host: Option<&'a str>,
    /// The request path, without the query.
    pub path: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// One (route, host pattern) pair; a route with several hosts has one entry per host.
#[derive(Debug)]
struct Entry {
    route: usize,
    host: Option<HostPattern>,
}

/// Routes indexed for lookup; `T` is whatever the caller attaches to a route.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<(RouteMatch, T)>,
    entries: Vec<Entry>,
    /// Candidate entries for each exact host name, in precedence order.
    by_host: HashMap<String, Vec<usize>>,
    /// Candidate entries for any other host (wildcards and host-less routes), in precedence order.
    other_hosts: Vec<usize>,
    /// No route has a host condition: lookups need not normalise the request's host.
    any_host: bool,
}

impl<T> RouteTable<T> {
    /// Builds the table; `routes` are in file order, which breaks ties.
    pub fn new(routes: Vec<(RouteMatch, T)>) -> Self {
        let mut entries = Vec::new();
        for (index, (route, _)) in routes.iter().enumerate() {
            if route.hosts.is_empty() {
                entries.push(Entry {
                    route: index,
                    host: None,
                });
            }
            for host in &route.hosts {
                entries.push(Entry {
                    route: index,
                    host: Some(host.clone()),
                });
            }
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&e| precedence(&entries[e], &routes[entries[e].route].0));

        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut other_hosts = Vec::new();
        for &e in &order {
            match &entries[e].host {
                Some(HostPattern::Exact(name)) => by_host.entry(name.clone()).or_default().push(e),
                _ => other_hosts.push(e),
            }
        }
        // Each exact host also falls back to the wildcard and host-less entries, after its own.
        for list in by_host.values_mut() {
            list.extend_from_slice(&other_hosts);
        }
        let any_host = entries.iter().all(|entry| entry.host.is_none());
        RouteTable {
            routes,
            entries,
            by_host,
            other_hosts,
            any_host,
        }
    }

    /// The route the request belongs to, with its index in file order; `None` is a 404.
    pub fn route_for(&self, request: &RequestFacts<'_>) -> Option<(usize, &T)> {
        // Without host conditions the host decides nothing (and `by_host` is empty).
        let host = request.host.filter(|_| !self.any_host).map(normalize_host);
        let candidates = match host.as_deref().and_then(|h| self.by_host.get(h)) {
            Some(list) => list,
            None => &self.other_hosts,
        };
        for &e in candidates {
            let entry = &self.entries[e];
            let (route, value) = &self.routes[entry.route];
            let host_ok = match (&entry.host, host.as_deref()) {
                (None, _) => true,
                (Some(pattern), Some(h)) => pattern.matches(h),
                (Some(_), None) => false,
            };
            if host_ok
                && route.path.matches(request.path)
                && route
                    .methods
                    .as_ref()
                    .is_none_or(|m| m.contains(request.method))
                && route
                    .headers
                    .iter()
                    .all(|(name, value)| request.headers.get_all(name).iter().any(|v| v == value))
            {
                return Some((entry.route, value));
            }
        }
        None
    }

    /// The conditions and value of the route at `index` in file order (as [`Self::route_for`]
    /// returns it), for tools that explain a match.
    pub fn route(&self, index: usize) -> Option<(&RouteMatch, &T)> {
        self.routes
            .get(index)
            .map(|(conditions, value)| (conditions, value))
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table has no routes (every request is a 404).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

type Precedence = (
    u8,
    Reverse<usize>,
    u8,
    Reverse<usize>,
    u8,
    Reverse<usize>,
    usize,
);

fn precedence(entry: &Entry, route: &RouteMatch) -> Precedence {
    let (host_class, host_len) = match &entry.host {
        Some(HostPattern::Exact(name)) => (0, name.len()),
        Some(HostPattern::Wildcard(suffix)) => (1, suffix.len()),
        None => (2, 0),
    };
    let (path_class, path_len) = match &route.path {
        PathMatcher::Exact(p) => (0, p.len()),
        PathMatcher::Prefix(p) => (1, p.len()),
        PathMatcher::Regex(_) => (2, 0),
        PathMatcher::Any => (3, 0),
    };
    let method_class = u8::from(route.methods.is_none());
    (
        host_class,
        Reverse(host_len),
        path_class,
        Reverse(path_len),
        method_class,
        Reverse(route.headers.len()),
        entry.route,
    )
}

/// Bytes a host name (registered name or IPv4 address) may hold: URI unreserved characters,
/// sub-delims and `%` (RFC 3986 §3.2.2). A table, so checking a byte is one load rather than a
/// search of the punctuation list (this runs on every request).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        byte += 1;
    }
    table
};

/// True if `host` is a valid `Host` value or request authority without userinfo (RFC 9110 §7.2,
/// RFC 3986 §3.2.2): a name or IPv4 address of URI characters, or a bracketed IPv6 literal,
/// then an optional `:port` of at most 65535. Whitespace, `/`, `@`, non-ASCII and control
/// bytes are all refused.
pub fn is_valid_host(host: &[u8]) -> bool {
    let rest = if let Some(literal) = host.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let address = &literal[..end];
        if address.is_empty()
            || !address
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        &literal[end + 1..]
    } else {
        // The name runs up to the first `:` and must not be empty.
        let name_len = host
            .iter()
            .position(|&b| !NAME_BYTES[usize::from(b)])
            .unwrap_or(host.len());
        if name_len == 0 {
            return false;
        }
        &host[name_len..]
    };
    match rest {
        [] => true,
        [b':', digits @ ..] => {
            // Leading zeros are allowed (`:080`); the value may not pass 65535.
            let mut port: u32 = 0;
            for &digit in digits {
                if !digit.is_ascii_digit() {
                    return false;
                }
                port = port * 10 + u32::from(digit - b'0');
                if port > u32::from(u16::MAX) {
                    return false;
                }
            }
            true
        }
        _ => false,
    }
}

/// Lower-cases a host and drops its port and trailing dot, borrowing when nothing changes.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let bytes = host.as_bytes();
    let end = if bytes.first() == Some(&b'[') {
        // IPv6 literal: keep the brackets, drop what follows them.
        bytes
            .iter()
            .position(|&b| b == b']')
            .map_or(bytes.len(), |close| close + 1)
    } else {
        bytes
            .iter()
            .rposition(|&b| b == b':')
            .unwrap_or(bytes.len())
    };
    let end = match end.checked_sub(1) {
        Some(last) if bytes.get(last) == Some(&b'.') => last,
        _ => end,
    };
    // `end` is at an ASCII byte (or the end), so always a character boundary.
    let trimmed = host.get(..end).unwrap_or(host);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], path: PathMatcher) -> RouteMatch {
        RouteMatch {
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).expect("host"))
                .collect(),
            path,
            methods: None,
            headers: Vec::new(),
        }
    }

    fn lookup<'t>(
        table: &'t RouteTable<&'static str>,
        host: &str,
        method: &str,
        path: &str,
    ) -> Option<&'t str> {
        lookup_with(table, host, method, path, &HeaderMap::new())
    }

    fn lookup_with<'t>(
        table: &'t RouteTable<&'static str>,
        host: &str,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&'t str> {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let facts = RequestFacts {
            host: Some(host),
            path,
            method: &method,
            headers,
        };
        table.route_for(&facts).map(|(_, name)| *name)
    }

    fn prefix(p: &str) -> PathMatcher {
        PathMatcher::Prefix(p.to_owned())
    }

    #[test]
    fn host_patterns_parse_and_refuse_garbage() {
        assert_eq!(
            HostPattern::parse("Example.COM.").unwrap(),
            HostPattern::Exact("example.com".into())
        );
        assert_eq!(
            HostPattern::parse("*.example.com").unwrap(),
            HostPattern::Wildcard(".example.com".into())
        );
        for bad in [
            "",
            "*.",
            "exa mple.com",
            "a..b",
            "*example.com",
            "ex*.com",
            "host:80",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn wildcards_match_subdomains_at_any_depth_but_not_the_apex() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_host() {
        let table = RouteTable::new(vec![
            (route(&[], PathMatcher::Any), "any"),
            (route(&["*.example.com"], PathMatcher::Any), "wild"),
            (
                route(&["*.api.example.com"], PathMatcher::Any),
                "longer-wild",
            ),
            (route(&["www.example.com"], PathMatcher::Any), "exact"),
        ]);
        assert_eq!(lookup(&table, "www.example.com", "GET", "/"), Some("exact"));
        assert_eq!(
            lookup(&table, "WWW.Example.com:8080", "GET", "/"),
            Some("exact")
        );
        assert_eq!(lookup(&table, "shop.example.com", "GET", "/"), Some("wild"));
        assert_eq!(
            lookup(&table, "v1.api.example.com", "GET", "/"),
            Some("longer-wild")
        );
        assert_eq!(lookup(&table, "other.org", "GET", "/"), Some("any"));
    }

    #[test]
    fn host_wins_over_path_specificity() {
        let table = RouteTable::new(vec![
            (
                route(&[], PathMatcher::Exact("/login".into())),
                "any-host-login",
            ),
            (route(&["app.example.com"], prefix("/")), "app"),
        ]);
        assert_eq!(
            lookup(&table, "app.example.com", "GET", "/login"),
            Some("app")
        );
        assert_eq!(
            lookup(&table, "other.example.com", "GET", "/login"),
            Some("any-host-login")
        );
    }

    #[test]
    fn exact_path_beats_longest_prefix_beats_regex_beats_catch_all() {
        let table = RouteTable::new(vec![
            (route(&[], PathMatcher::Any), "catch-all"),
            (
                route(
                    &[],
                    PathMatcher::Regex(Regex::new("^/api/v[0-9]+/").unwrap()),
                ),
                "regex",
            ),
            (route(&[], prefix("/api/")), "api"),
            (route(&[], prefix("/api/v1/")), "api-v1"),
            (
                route(&[], PathMatcher::Exact("/api/v1/health".into())),
                "health",
            ),
        ]);
        assert_eq!(lookup(&table, "h", "GET", "/api/v1/health"), Some("health"));
        assert_eq!(lookup(&table, "h", "GET", "/api/v1/users"), Some("api-v1"));
        assert_eq!(lookup(&table, "h", "GET", "/api/v2/users"), Some("api"));
        assert_eq!(lookup(&table, "h", "GET", "/apx/v2/"), Some("catch-all"));
        let regex_only = RouteTable::new(vec![
            (route(&[], PathMatcher::Any), "catch-all"),
            (
                route(&[], PathMatcher::Regex(Regex::new("^/u/[0-9]+$").unwrap())),
                "regex",
            ),
        ]);
        assert_eq!(lookup(&regex_only, "h", "GET", "/u/42"), Some("regex"));
        assert_eq!(lookup(&regex_only, "h", "GET", "/u/x"), Some("catch-all"));
    }

    #[test]
    fn method_and_header_conditions_narrow_and_take_precedence() {
        let mut post_only = route(&[], prefix("/"));
        post_only.methods = Some(vec![Method::POST]);
        let mut canary = route(&[], prefix("/"));
        canary.headers = vec![(
            HeaderName::from_static("x-canary"),
            HeaderValue::from_static("1"),
        )];
        let table = RouteTable::new(vec![
            (route(&[], prefix("/")), "default"),
            (canary, "canary"),
            (post_only, "post"),
        ]);
        assert_eq!(lookup(&table, "h", "POST", "/x"), Some("post"));
        assert_eq!(lookup(&table, "h", "GET", "/x"), Some("default"));
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(
            lookup_with(&table, "h", "GET", "/x", &headers),
            Some("canary")
        );
        headers.insert("x-canary", HeaderValue::from_static("2"));
        assert_eq!(
            lookup_with(&table, "h", "GET", "/x", &headers),
            Some("default")
        );
    }

    #[test]
    fn ties_go_to_the_earlier_route_and_a_miss_is_none() {
        let table = RouteTable::new(vec![
            (route(&["a.test"], prefix("/x")), "first"),
            (route(&["a.test"], prefix("/x")), "second"),
        ]);
        assert_eq!(lookup(&table, "a.test", "GET", "/x"), Some("first"));
        assert_eq!(lookup(&table, "a.test", "GET", "/y"), None);
        assert_eq!(lookup(&table, "b.test", "GET", "/x"), None);
    }

    #[test]
    fn host_values_are_validated() {
        for good in [
            "example.com",
            "Example.COM:8080",
            "a_b.internal",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]",
            "a.test:",
            "a.test.",
        ] {
            assert!(
                is_valid_host(good.as_bytes()),
                "{good:?} should be accepted"
            );
        }
        for bad in [
            "",
            ":80",
            "a.test:abc",
            "a.test:99999",
            "a.test:+1",
            "a.test:80:80",
            "::1",
            "[::1",
            "[::1]x",
            "[]",
            "[zz::1]",
            "user@a.test",
            "a.test/x",
            "a test",
            "a.test\t",
            "a.test, b.test",
            "a\"b",
            "\u{e9}.test",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} should be refused");
        }
        assert!(!is_valid_host(b"\xff\xfe"));
    }

    #[test]
    fn hosts_are_normalized_without_needless_allocation() {
        assert!(matches!(
            normalize_host("example.com:443"),
            Cow::Borrowed("example.com")
        ));
        assert_eq!(normalize_host("EXAMPLE.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("a.test.:80"), "a.test");
        assert_eq!(normalize_host("a.test:"), "a.test");
        assert_eq!(normalize_host("[::1]."), "[::1]");
        assert_eq!(normalize_host("[::1"), "[::1");
        assert_eq!(normalize_host("."), "");
        assert_eq!(normalize_host(""), "");
    }

    #[test]
    fn ports_are_checked_by_value() {
        for good in ["a:0", "a:00080", "a:65535", "[::1]:065535"] {
            assert!(
                is_valid_host(good.as_bytes()),
                "{good:?} should be accepted"
            );
        }
        for bad in ["a:65536", "a:0000065536", "a:-1", "[::1]:70000", "a:8 0"] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} should be refused");
        }
    }

    #[test]
    fn without_host_conditions_any_host_matches_and_none_is_needed() {
        let table = RouteTable::new(vec![
            (route(&[], prefix("/api")), "api"),
            (route(&[], PathMatcher::Any), "rest"),
        ]);
        assert_eq!(
            lookup(&table, "WHATEVER.test:1", "GET", "/api/x"),
            Some("api")
        );
        let method = Method::GET;
        let headers = HeaderMap::new();
        let facts = RequestFacts {
            host: None,
            path: "/x",
            method: &method,
            headers: &headers,
        };
        assert_eq!(table.route_for(&facts).map(|(_, r)| *r), Some("rest"));
    }

    /// Random tables and requests against a naive model: the route chosen is the first whose
    /// every condition holds, in the documented order of precedence, found by trying every
    /// route; hosts match by labels, whatever their case, trailing dot or port; and an answer,
    /// never a panic, for any host bytes.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::net::Ipv6Addr;

        const LABELS: [&str; 6] = ["a", "b", "example", "com", "xn--d1a", "_srv"];

        /// A host pattern as the model sees it: a wildcard or not, and its labels.
        #[derive(Debug, Clone)]
        struct HostSpec {
            wildcard: bool,
            labels: Vec<&'static str>,
        }

        fn labels(max: usize) -> impl Strategy<Value = Vec<&'static str>> {
            vec(prop::sample::select(LABELS.to_vec()), 1..=max)
        }

        /// `text` with the ASCII letters `upper` picks in upper case.
        fn recase(text: &str, upper: &[bool]) -> String {
            text.chars()
                .zip(upper.iter().copied().chain(std::iter::repeat(false)))
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect()
        }

        fn host_spec() -> impl Strategy<Value = (HostSpec, String)> {
            (
                any::<bool>(),
                labels(3),
                vec(any::<bool>(), 24),
                any::<bool>(),
            )
                .prop_map(|(wildcard, labels, upper, dot)| {
                    let mut text = recase(&labels.join("."), &upper);
                    if wildcard {
                        text.insert_str(0, "*.");
                    }
                    if dot {
                        text.push('.');
                    }
                    (HostSpec { wildcard, labels }, text)
                })
        }

        /// The model of host matching, by labels: an exact pattern names the host's labels; a
        /// wildcard, the last labels of a host with at least one more.
        fn model_host_matches(spec: &HostSpec, host: &[&str]) -> bool {
            if spec.wildcard {
                host.len() > spec.labels.len() && host.ends_with(&spec.labels)
            } else {
                host == spec.labels.as_slice()
            }
        }

        /// A `Host` as a client sends it: labels in any case, maybe a trailing dot, maybe a
        /// port (maybe zero-padded, maybe empty).
        fn request_host() -> impl Strategy<Value = (Vec<&'static str>, String)> {
            let port = prop_oneof![
                Just(String::new()),
                Just(":".to_owned()),
                any::<u16>().prop_map(|p| format!(":{p}")),
                any::<u16>().prop_map(|p| format!(":000{p}")),
            ];
            (labels(4), vec(any::<bool>(), 32), any::<bool>(), port).prop_map(
                |(labels, upper, dot, port)| {
                    let mut text = recase(&labels.join("."), &upper);
                    if dot {
                        text.push('.');
                    }
                    text.push_str(&port);
                    (labels, text)
                },
            )
        }

        const PATHS: [&str; 7] = ["/", "/a", "/a/", "/ab", "/a/b", "/b", "/a/b/c"];
        const REGEXES: [&str; 3] = ["^/a", "b$", "^/a/[a-z]+$"];
        const HEADERS: [(&str, &str); 4] = [("x-a", "1"), ("x-a", "2"), ("x-b", "1"), ("x-a", "3")];

        /// A route as the model sees it.
        #[derive(Debug, Clone)]
        struct RouteSpec {
            hosts: Vec<HostSpec>,
            host_texts: Vec<String>,
            /// 0 exact, 1 prefix, 2 regex, 3 any; and which path or regex.
            path: (u8, usize),
            methods: Option<Vec<Method>>,
            headers: Vec<usize>,
        }

        fn method() -> impl Strategy<Value = Method> {
            prop::sample::select(vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
            ])
        }

        fn route_spec(with_hosts: bool) -> impl Strategy<Value = RouteSpec> {
            let hosts = if with_hosts { 0..3usize } else { 0..1 };
            (
                vec(host_spec(), hosts),
                (0..4u8, 0..PATHS.len()),
                proptest::option::of(vec(method(), 1..3)),
                prop::sample::subsequence(vec![0, 1, 2], 0..=2),
            )
                .prop_map(|(hosts, path, methods, headers)| {
                    let (hosts, host_texts) = hosts.into_iter().unzip();
                    RouteSpec {
                        hosts,
                        host_texts,
                        path: (
                            path.0,
                            path.1
                                % if path.0 == 2 {
                                    REGEXES.len()
                                } else {
                                    PATHS.len()
                                },
                        ),
                        methods,
                        headers,
                    }
                })
        }

        fn route_match(spec: &RouteSpec) -> RouteMatch {
            let path = match spec.path {
                (0, p) => PathMatcher::Exact(PATHS[p].to_owned()),
                (1, p) => PathMatcher::Prefix(PATHS[p].to_owned()),
                (2, r) => PathMatcher::Regex(Regex::new(REGEXES[r]).expect("a regex")),
                _ => PathMatcher::Any,
            };
            RouteMatch {
                hosts: spec
                    .host_texts
                    .iter()
                    .map(|h| HostPattern::parse(h).expect("a host pattern"))
                    .collect(),
                path,
                methods: spec.methods.clone(),
                headers: spec
                    .headers
                    .iter()
                    .map(|&h| {
                        let (name, value) = HEADERS[h];
                        (
                            HeaderName::from_static(name),
                            HeaderValue::from_static(value),
                        )
                    })
                    .collect(),
            }
        }

        /// The model of [`RouteTable::route_for`]: try every route; of those whose conditions
        /// all hold, take the most specific by the documented order, the earliest on a tie.
        fn model_route(
            specs: &[RouteSpec],
            host: Option<&[&str]>,
            path: &str,
            method: &Method,
            headers: &[usize],
        ) -> Option<usize> {
            specs
                .iter()
                .enumerate()
                .filter_map(|(index, spec)| {
                    // Host: an exact name (longer first), a wildcard (longer suffix first), none.
                    let host_rank = if spec.hosts.is_empty() {
                        (2, Reverse(0))
                    } else {
                        spec.hosts
                            .iter()
                            .filter(|h| host.is_some_and(|labels| model_host_matches(h, labels)))
                            .map(|h| {
                                let len = h.labels.join(".").len();
                                if h.wildcard {
                                    (1, Reverse(len + 1))
                                } else {
                                    (0, Reverse(len))
                                }
                            })
                            .min()?
                    };
                    let (path_ok, path_rank) = match spec.path {
                        (0, p) => (path == PATHS[p], (0, Reverse(PATHS[p].len()))),
                        (1, p) => (path.starts_with(PATHS[p]), (1, Reverse(PATHS[p].len()))),
                        (2, r) => {
                            let regex = Regex::new(REGEXES[r]).expect("a regex");
                            (regex.is_match(path), (2, Reverse(0)))
                        }
                        _ => (true, (3, Reverse(0))),
                    };
                    let method_ok = spec.methods.as_ref().is_none_or(|ms| ms.contains(method));
                    let headers_ok = spec
                        .headers
                        .iter()
                        .all(|h| headers.iter().any(|sent| HEADERS[*sent] == HEADERS[*h]));
                    (path_ok && method_ok && headers_ok).then_some((
                        host_rank,
                        path_rank,
                        spec.methods.is_none(),
                        Reverse(spec.headers.len()),
                        index,
                    ))
                })
                .min()
                .map(|rank| rank.4)
        }

        /// Host bytes around the edges of what a host may hold.
        fn host_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop::sample::select(vec![
                "a",
                "Z",
                "0",
                "9",
                ".",
                "-",
                "_",
                "~",
                "%",
                ",",
                ":",
                "[",
                "]",
                "::1",
                "f",
                "@",
                " ",
                "/",
                "\t",
                "é",
                ":65535",
                ":65536",
                ":000080",
                ":99999999999",
            ]);
            prop_oneof![
                4 => vec(piece, 0..8).prop_map(|pieces| pieces.concat().into_bytes()),
                1 => vec(any::<u8>(), 0..16),
            ]
        }

        /// The model of [`is_valid_host`]: a name of URI characters or a bracketed literal of
        /// hex digits, colons and dots, then perhaps `:` and a port of at most 65535.
        fn model_valid_host(host: &[u8]) -> bool {
            let (name_ok, rest) = match host.strip_prefix(b"[") {
                Some(literal) => match literal.iter().position(|&b| b == b']') {
                    None => return false,
                    Some(close) => {
                        let (inside, rest) = literal.split_at(close);
                        let ok = !inside.is_empty()
                            && inside
                                .iter()
                                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                        (ok, rest.get(1..).unwrap_or_default())
                    }
                },
                None => {
                    let end = host.iter().position(|&b| b == b':').unwrap_or(host.len());
                    let (name, rest) = host.split_at(end);
                    let ok = !name.is_empty()
                        && name.iter().all(|&b| {
                            b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
                        });
                    (ok, rest)
                }
            };
            name_ok
                && match rest {
                    [] => true,
                    [b':', digits @ ..] => {
                        let significant = std::str::from_utf8(digits)
                            .unwrap_or("x")
                            .trim_start_matches('0');
                        digits.iter().all(u8::is_ascii_digit)
                            && significant.len() <= 5
                            && significant.parse::<u32>().unwrap_or(0) <= 65535
                    }
                    _ => false,
                }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn the_route_chosen_is_the_models(
                with_hosts in any::<bool>(),
                specs in vec(route_spec(true), 1..8),
                host in proptest::option::of(prop_oneof![
                    4 => request_host().prop_map(|(labels, text)| (Some(labels), text)),
                    1 => Just((None, "[::1]:8080".to_owned())),
                ]),
                path in prop::sample::select(PATHS.to_vec()),
                method in method(),
                headers in vec(0..HEADERS.len(), 0..3),
            ) {
                // Tables without any host condition take another way through the lookup.
                let specs: Vec<RouteSpec> = specs
                    .into_iter()
                    .map(|mut spec| {
                        if !with_hosts {
                            spec.hosts.clear();
                            spec.host_texts.clear();
                        }
                        spec
                    })
                    .collect();
                let table = RouteTable::new(
                    specs.iter().enumerate().map(|(i, spec)| (route_match(spec), i)).collect(),
                );
                let mut header_map = HeaderMap::new();
                for &h in &headers {
                    let (name, value) = HEADERS[h];
                    header_map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
                }
                let facts = RequestFacts {
                    host: host.as_ref().map(|(_, text)| text.as_str()),
                    path,
                    method: &method,
                    headers: &header_map,
                };
                let chosen = table.route_for(&facts);
                prop_assert!(chosen.is_none_or(|(index, value)| index == *value));
                let labels = host.as_ref().map(|(labels, _)| labels.as_deref().unwrap_or(&[]));
                prop_assert_eq!(
                    chosen.map(|(index, _)| index),
                    model_route(&specs, labels, path, &method, &headers),
                    "{:?} {} {} {:?} in {:#?}", host, method, path, headers, specs
                );
            }

            #[test]
            fn host_patterns_match_by_labels_ignoring_case_dot_and_port(
                (spec, text) in host_spec(),
                (labels, host) in request_host(),
            ) {
                let pattern = HostPattern::parse(&text);
                prop_assert!(pattern.is_ok(), "{:?}: {:?}", text, pattern);
                let pattern = pattern.unwrap_or(HostPattern::Exact(String::new()));
                prop_assert_eq!(
                    pattern.matches(&normalize_host(&host)),
                    model_host_matches(&spec, &labels),
                    "{} against {}", host, text
                );
            }

            #[test]
            fn hosts_normalise_to_their_lower_case_name(
                (labels, host) in prop_oneof![
                    request_host().prop_map(|(labels, text)| (labels.join("."), text)),
                    (any::<u128>(), vec(any::<bool>(), 48), any::<bool>(), proptest::option::of(any::<u16>()))
                        .prop_map(|(address, upper, dot, port)| {
                            let name = format!("[{}]", Ipv6Addr::from(address));
                            let mut text = recase(&name, &upper);
                            if dot {
                                text.push('.');
                            }
                            if let Some(port) = port {
                                text.push_str(&format!(":{port}"));
                            }
                            (name, text)
                        }),
                ],
            ) {
                prop_assert_eq!(normalize_host(&host), labels.as_str(), "{}", host);
            }

            #[test]
            fn any_host_text_normalises_to_a_lower_case_prefix(host in any::<String>()) {
                let normalized = normalize_host(&host);
                prop_assert!(!normalized.bytes().any(|b| b.is_ascii_uppercase()));
                prop_assert!(host.to_ascii_lowercase().starts_with(&*normalized), "{:?}", host);
            }

            #[test]
            fn host_values_are_valid_exactly_as_the_model_says(host in host_bytes()) {
                prop_assert_eq!(
                    is_valid_host(&host),
                    model_valid_host(&host),
                    "{:?}", String::from_utf8_lossy(&host)
                );
            }

            /// As documented, a prefix is a plain string prefix (`/api` matches `/apiary`), an
            /// exact path is the whole path.
            #[test]
            fn paths_match_as_documented(
                pattern in "/[a/]{0,4}",
                path in "/[ab/]{0,6}",
            ) {
                prop_assert_eq!(
                    PathMatcher::Prefix(pattern.clone()).matches(&path),
                    path.starts_with(&pattern)
                );
                prop_assert_eq!(PathMatcher::Exact(pattern.clone()).matches(&path), path == pattern);
                prop_assert!(PathMatcher::Any.matches(&path));
            }
        }
    }
}
