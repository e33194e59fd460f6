//! Prometheus metrics: one recorder per running server (so several servers in one process, as in
//! the tests, never mix their numbers), handles registered once per route or backend, and the
//! text exposition for the admin listener.
//!
//! Hot-path updates go through pre-registered handles (an atomic add each); values that already
//! live elsewhere (backend health, in-flight counts, TLS failures) are copied in when the
//! metrics are rendered rather than updated on every change.

use std::sync::OnceLock;

use http::{Method, StatusCode};
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Methods that get their own label value; every other method is counted as `OTHER`, so a client
/// cannot grow the number of series by inventing methods.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The metrics of one running server.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    started: std::time::Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty set of metrics with Gatehouse's descriptions and histogram buckets.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // The bucket list is a non-empty constant: setting it cannot fail.
        let builder = match builder.set_buckets(&LATENCY_BUCKETS) {
            Ok(builder) => builder,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            started: std::time::Instant::now(),
        };
        metrics.describe();
        metrics
    }

    fn describe(&self) {
        let describe = |name: &'static str, unit: Option<Unit>, text: &'static str| {
            self.recorder
                .describe_counter(name.into(), unit, text.into());
        };
        describe(
            "gatehouse_requests_total",
            None,
            "Requests answered, by route, method and status class.",
        );
        describe(
            "gatehouse_request_duration_seconds",
            Some(Unit::Seconds),
            "Time from request head to the end of the response, by route.",
        );
        describe(
            "gatehouse_request_bytes_total",
            Some(Unit::Bytes),
            "Request body bytes received from clients, by route.",
        );
        describe(
            "gatehouse_response_bytes_total",
            Some(Unit::Bytes),
            "Response body bytes sent to clients, by route.",
        );
        describe(
            "gatehouse_response_bytes_spliced_total",
            Some(Unit::Bytes),
            "Response body bytes moved from a backend's socket to a client's by splice(2), by listener.",
        );
        describe(
            "gatehouse_upstream_response_seconds",
            Some(Unit::Seconds),
            "Time a backend took to send its response head, by pool and backend.",
        );
        describe(
            "gatehouse_upstream_connect_errors_total",
            None,
            "Failed connections to backends, by pool and backend.",
        );
        describe(
            "gatehouse_upstream_read_timeouts_total",
            None,
            "Responses cut because the backend sent nothing for timeouts.upstream_read within the body, by pool and backend.",
        );
        describe(
            "gatehouse_tunnel_timeouts_total",
            None,
            "Upgraded connections (WebSocket) closed by a timeout, by route and reason: idle (timeouts.tunnel_idle) or client_send.",
        );
        describe(
            "gatehouse_upstream_retries_total",
            None,
            "Requests retried on another backend, by pool.",
        );
        describe(
            "gatehouse_backend_up",
            None,
            "1 when the backend may take requests (healthy, not ejected, not drained).",
        );
        describe(
            "gatehouse_backend_in_flight",
            None,
            "Requests in flight to the backend.",
        );
        describe(
            "gatehouse_backend_ejections_total",
            None,
            "Times passive health checks ejected the backend.",
        );
        describe(
            "gatehouse_active_connections",
            None,
            "Open client connections, by listener.",
        );
        describe(
            "gatehouse_connections_refused_total",
            None,
            "Client connections closed at accept, by listener and reason (acl, limit, per_ip, rate).",
        );
        describe(
            "gatehouse_requests_refused_total",
            None,
            "Requests refused with 429 because the client was at max_requests_per_ip, by listener.",
        );
        describe(
            "gatehouse_client_header_timeouts_total",
            None,
            "Client connections closed because a request head did not arrive within timeouts.client_header, by listener.",
        );
        describe(
            "gatehouse_client_send_timeouts_total",
            None,
            "Client connections closed because the client took no bytes of a response for timeouts.client_send, by listener.",
        );
        describe(
            "gatehouse_tls_handshake_failures_total",
            None,
            "TLS handshakes that failed or timed out, over all listeners.",
        );
        describe(
            "gatehouse_reloads_total",
            None,
            "Configuration reloads, by result.",
        );
        describe(
            "gatehouse_last_reload_success",
            None,
            "1 when the last configuration reload succeeded.",
        );
        describe(
            "gatehouse_last_reload_timestamp_seconds",
            Some(Unit::Seconds),
            "Unix time of the last reload attempt.",
        );
        describe(
            "gatehouse_rate_limited_total",
            None,
            "Requests refused by a route's rate limit (429), by route.",
        );
        describe(
            "gatehouse_access_denied_total",
            None,
            "Requests refused by a route's access rules (403, 405, 401), by route and status.",
        );
        describe(
            "gatehouse_access_log_dropped_total",
            None,
            "Access log lines dropped because the writer could not keep up.",
        );
        describe(
            "gatehouse_uptime_seconds",
            Some(Unit::Seconds),
            "Seconds since the server started.",
        );
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| {
                // The exporter reads a backslash as escaping what follows (`a\"b` came out as
                // `a"b`, `a\\b` as `a\b`) and escapes only a pair, so each one is doubled here
                // to read back as written.
                let value = if v.contains('\\') {
                    v.replace('\\', "\\\\")
                } else {
                    (*v).to_owned()
                };
                Label::new(*k, value)
            })
            .collect();
        Key::from_parts(name, labels)
    }

    /// The counter `name` with `labels`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }

    /// The histogram `name` with `labels`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&Self::key(name, labels), &METADATA)
    }

    /// The handles of one route (or `-` for requests that matched none).
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_owned(),
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: self.histogram("gatehouse_request_duration_seconds", &[("route", route)]),
            request_bytes: self.counter("gatehouse_request_bytes_total", &[("route", route)]),
            response_bytes: self.counter("gatehouse_response_bytes_total", &[("route", route)]),
        }
    }

    /// The handles of one backend of a pool.
    pub fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        let labels = [("pool", pool), ("backend", backend)];
        BackendMetrics {
            response_time: self.histogram("gatehouse_upstream_response_seconds", &labels),
            connect_errors: self.counter("gatehouse_upstream_connect_errors_total", &labels),
            read_timeouts: self.counter("gatehouse_upstream_read_timeouts_total", &labels),
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.gauge("gatehouse_uptime_seconds", &[])
            .set(self.started.elapsed().as_secs_f64());
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets; call every few seconds so the
    /// samples do not pile up between scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// The metric handles of one route, registered on first use of each series.
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    /// One counter per (method, status class), created when first needed.
    requests: [OnceLock<Counter>; (METHODS.len() + 1) * STATUS_CLASSES.len()],
    /// Whole-request latency.
    pub duration: Histogram,
    /// Request body bytes.
    pub request_bytes: Counter,
    /// Response body bytes.
    pub response_bytes: Counter,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn count(&self, metrics: &Metrics, method: &Method, status: StatusCode) {
        let method_index = METHODS
            .iter()
            .position(|m| m == method)
            .unwrap_or(METHODS.len());
        let class_index = usize::from(status.as_u16() / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        let slot = method_index * STATUS_CLASSES.len() + class_index;
        let Some(cell) = self.requests.get(slot) else {
            return;
        };
        cell.get_or_init(|| {
            let method = METHODS.get(method_index).map_or("OTHER", Method::as_str);
            let class = STATUS_CLASSES.get(class_index).copied().unwrap_or("5xx");
            metrics.counter(
                "gatehouse_requests_total",
                &[
                    ("route", &self.route),
                    ("method", method),
                    ("status_class", class),
                ],
            )
        })
        .increment(1);
    }
}

/// The metric handles of one backend.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Time to the response head.
    pub response_time: Histogram,
    /// Failed connects.
    pub connect_errors: Counter,
    /// Response bodies cut by the backend read timeout.
    pub read_timeouts: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series whose line starts with `prefix` (name and labels), if any.
    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn requests_are_counted_per_route_method_and_class() {
        let metrics = Metrics::new();
        let route = metrics.route("api");
        route.count(&metrics, &Method::GET, StatusCode::OK);
        route.count(&metrics, &Method::GET, StatusCode::NO_CONTENT);
        route.count(
            &metrics,
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::BAD_GATEWAY,
        );
        let text = metrics.render();
        assert_eq!(
            value(
                &text,
                "gatehouse_requests_total{route=\"api\",method=\"GET\",status_class=\"2xx\"}"
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "gatehouse_requests_total{route=\"api\",method=\"OTHER\",status_class=\"5xx\"}"
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn latency_lands_in_buckets_and_servers_do_not_share_numbers() {
        let one = Metrics::new();
        let two = Metrics::new();
        one.route("r").duration.record(0.003);
        one.run_upkeep();
        let text = one.render();
        assert_eq!(
            value(
                &text,
                "gatehouse_request_duration_seconds_bucket{route=\"r\",le=\"0.005\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "gatehouse_request_duration_seconds_bucket{route=\"r\",le=\"0.0025\"}"
            ),
            Some(0.0)
        );
        assert!(!two.render().contains("route=\"r\""));
    }

    /// Regression (found by `requests_land_in_a_bounded_set_of_series_that_render_as_valid_text`
    /// once its exception was lifted): the exporter took a backslash in a route name as an
    /// escape, so the route `a\"b` was shown as `a"b` and `c:\` lost its backslash.
    #[test]
    fn backslashes_in_label_values_read_back_as_written() {
        let metrics = Metrics::new();
        for name in ["a\\\"b", "c:\\", "d\\\\e"] {
            metrics
                .route(name)
                .count(&metrics, &Method::GET, StatusCode::OK);
        }
        let text = metrics.render();
        for shown in [
            "route=\"a\\\\\\\"b\"",
            "route=\"c:\\\\\"",
            "route=\"d\\\\\\\\e\"",
        ] {
            assert!(
                text.contains(&format!("gatehouse_requests_total{{{shown},")),
                "{shown} in {text}"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// A method as a client may send it: the usual ones, or any token.
        fn method() -> impl Strategy<Value = Method> {
            prop_oneof![
                2 => prop::sample::select(METHODS.to_vec()),
                1 => prop::sample::select(vec![Method::CONNECT, Method::TRACE]),
                2 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
                    .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token")),
            ]
        }

        /// Undoes the escapes of a Prometheus label value (`\\`, `\"`, `\n`).
        fn unescape(value: &str) -> Option<String> {
            let mut out = String::new();
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                out.push(match c {
                    '\\' => match chars.next()? {
                        'n' => '\n',
                        c @ ('\\' | '"') => c,
                        _ => return None,
                    },
                    c => c,
                });
            }
            Some(out)
        }

        /// A sample line, `name{label="value",...} number`, read strictly: label values end at
        /// the first unescaped quote.
        fn sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
            let (name, mut rest) = match line.split_once('{') {
                Some((name, rest)) => (name, rest),
                None => {
                    let (name, value) = line.split_once(' ')?;
                    return Some((name.to_owned(), BTreeMap::new(), value.parse().ok()?));
                }
            };
            let mut labels = BTreeMap::new();
            loop {
                if let Some(after) = rest.strip_prefix("} ") {
                    return Some((name.to_owned(), labels, after.parse().ok()?));
                }
                let (key, after) = rest.split_once("=\"")?;
                let mut escaped = false;
                let end = after.char_indices().find_map(|(i, c)| match c {
                    '"' if !escaped => Some(i),
                    '\\' if !escaped => {
                        escaped = true;
                        None
                    }
                    _ => {
                        escaped = false;
                        None
                    }
                })?;
                labels.insert(
                    key.trim_start_matches(',').to_owned(),
                    unescape(&after[..end])?,
                );
                rest = &after[end + 1..];
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever methods clients send and whatever statuses answer them, a route counts
            /// them under the seven usual methods or `OTHER` and five status classes, so a client
            /// cannot add series; the counts add up; and every line of the exposition is a
            /// well-formed sample, whatever characters the (operator's) route name holds.
            #[test]
            fn requests_land_in_a_bounded_set_of_series_that_render_as_valid_text(
                route in "([ -~]|\"|\\\\|\n|\r|é){0,12}",
                requests in vec((method(), 100u16..=999), 1..30),
            ) {
                let metrics = Metrics::new();
                let handles = metrics.route(&route);
                let mut expected: BTreeMap<(String, String), f64> = BTreeMap::new();
                for (method, status) in &requests {
                    handles.count(&metrics, method, StatusCode::from_u16(*status).expect("status"));
                    let label = if METHODS.contains(method) { method.as_str() } else { "OTHER" };
                    let class = format!("{}xx", (status / 100).min(5));
                    *expected.entry((label.to_owned(), class)).or_default() += 1.0;
                }
                let text = metrics.render();
                let mut counted: BTreeMap<(String, String), f64> = BTreeMap::new();
                for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
                    let parsed = sample(line);
                    prop_assert!(parsed.is_some(), "not a sample: {:?}", line);
                    let (name, labels, value) = parsed.unwrap_or_default();
                    if name != "gatehouse_requests_total" {
                        continue;
                    }
                    prop_assert_eq!(labels.get("route"), Some(&route), "{:?}", line);
                    prop_assert_eq!(labels.len(), 3, "{:?}", line);
                    let key = (labels["method"].clone(), labels["status_class"].clone());
                    *counted.entry(key).or_default() += value;
                }
                prop_assert_eq!(counted, expected);
            }
        }
    }
}
