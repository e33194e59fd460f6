//! Active health checks: a probe per backend every `interval` (an HTTP request whose status and
//! body must match, or a TCP connect), turned into up/down with rise/fall thresholds.
//!
//! Each probe opens its own connection rather than borrowing one from the request pool: a pooled
//! connection that still works says little about whether a new one can be made.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::state::BackendState;
use crate::config::{HealthCheckKind, HealthCheckSettings, UpstreamProtocol, UpstreamTls};

/// Most of a check response's body read to look for `body_contains`.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// A pool's compiled health check.
#[derive(Debug)]
pub struct HealthCheck {
    kind: HealthCheckKind,
    method: Method,
    path: PathAndQuery,
    host: Option<HeaderValue>,
    expect: Vec<RangeInclusive<u16>>,
    body_contains: Option<String>,
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Passes in a row that bring a down backend up.
    pub rise: u32,
    /// Failures in a row that take an up backend down.
    pub fall: u32,
    tls: Option<TlsProbe>,
    http2: bool,
    /// For a pool whose backends expect a PROXY header: the one that announces no client
    /// (v1 `UNKNOWN`, v2 `LOCAL`), sent first on every probe connection.
    proxy_header: Option<Vec<u8>>,
}

struct TlsProbe {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl std::fmt::Debug for TlsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProbe")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl HealthCheck {
    /// Compiles validated settings; `tls` is the pool's upstream TLS, if any.
    pub fn new(
        settings: &HealthCheckSettings,
        tls: Option<&UpstreamTls>,
        protocol: UpstreamProtocol,
    ) -> Result<Self, String> {
        let http2 = protocol == UpstreamProtocol::H2c;
        let tls = match tls {
            Some(spec) => {
                let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
                let config = crate::tls::upstream::client_config(spec, alpn)?;
                let server_name = spec
                    .server_name
                    .as_ref()
                    .map(|name| {
                        rustls_pki_types::ServerName::try_from(name.clone())
                            .map_err(|e| format!("server_name {name:?}: {e}"))
                    })
                    .transpose()?;
                Some(TlsProbe {
                    connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                    server_name,
                })
            }
            None => None,
        };
        Ok(HealthCheck {
            kind: settings.kind,
            method: health_method(settings.method.get_ref())?,
            path: check_path(settings.path.get_ref())?,
            host: settings
                .host
                .as_ref()
                .map(|h| HeaderValue::from_str(h.get_ref()))
                .transpose()
                .map_err(|_| "health_check.host is not a valid header value".to_owned())?,
            expect: parse_statuses(settings.expect_status.get_ref())?,
            body_contains: settings.body_contains.clone(),
            interval: settings.interval.0.max(Duration::from_millis(10)),
            timeout: settings.timeout.0,
            rise: settings.rise.max(1),
            fall: settings.fall.max(1),
            tls,
            http2,
            proxy_header: None,
        })
    }

    /// The same check, its connections starting with a PROXY header of `version` (when set)
    /// that announces no client, as a backend behind a PROXY-protocol pool expects.
    pub fn with_proxy_header(mut self, version: Option<crate::proxy_protocol::Version>) -> Self {
        self.proxy_header = version.map(|v| crate::proxy_protocol::encode(v, None));
        self
    }

    /// Probes `backend` once; `Err` says why it failed.
    pub async fn probe(&self, backend: &Authority) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.probe_untimed(backend)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn probe_untimed(&self, backend: &Authority) -> Result<(), String> {
        let mut stream = TcpStream::connect(backend.as_str())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if let Some(header) = &self.proxy_header {
            use tokio::io::AsyncWriteExt;
            stream
                .write_all(header)
                .await
                .map_err(|e| format!("writing the PROXY header: {e}"))?;
        }
        if self.kind == HealthCheckKind::Tcp {
            return Ok(());
        }
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => self.exchange(backend, stream).await,
            Some(tls) => {
                let name = match &tls.server_name {
                    Some(name) => name.clone(),
                    None => rustls_pki_types::ServerName::try_from(
                        backend.host().trim_matches(['[', ']']).to_owned(),
                    )
                    .map_err(|e| format!("backend host is not a TLS server name: {e}"))?,
                };
                let stream = tls
                    .connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                self.exchange(backend, stream).await
            }
        }
    }

    async fn exchange<IO>(&self, backend: &Authority, io: IO) -> Result<(), String>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let host = self
            .host
            .clone()
            .or_else(|| HeaderValue::from_str(backend.as_str()).ok());
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = self.method.clone();
        let response = if self.http2 {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            let authority = host
                .as_ref()
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| backend.clone());
            *request.uri_mut() = http::Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(self.path.clone())
                .build()
                .map_err(|e| e.to_string())?;
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(connection);
            sender.send_request(request).await
        } else {
            *request.uri_mut() = http::Uri::from(self.path.clone());
            if let Some(host) = host {
                request.headers_mut().insert(http::header::HOST, host);
            }
            request
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            sender.send_request(request).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        if !self.expect.iter().any(|range| range.contains(&status)) {
            return Err(format!("status {status}"));
        }
        let Some(needle) = &self.body_contains else {
            return Ok(());
        };
        let mut body = response.into_body();
        let mut seen = Vec::new();
        while seen.len() < MAX_CHECK_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        seen.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => return Err(format!("body: {e}")),
                None => break,
            }
        }
        seen.truncate(MAX_CHECK_BODY);
        if contains(&seen, needle.as_bytes()) {
            Ok(())
        } else {
            Err(format!("body does not contain {needle:?}"))
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_path(text: &str) -> Result<PathAndQuery, String> {
    if !text.starts_with('/') {
        return Err(format!("health_check.path {text:?} must start with '/'"));
    }
    PathAndQuery::try_from(text)
        .map_err(|_| format!("health_check.path {text:?} is not a valid path"))
}

/// Parses `"200-399"`, `"200"` or a comma list of both into status ranges.
pub fn parse_statuses(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    let complaint =
        || format!("{text:?} is not a status list; write e.g. \"200-399\" or \"200,204,300-308\"");
    let status = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
            .ok_or_else(complaint)
    };
    let ranges = text
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (status(low)?, status(high)?);
                if low > high {
                    return Err(complaint());
                }
                Ok(low..=high)
            }
            None => status(part).map(|s| s..=s),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ranges.is_empty() {
        return Err(complaint());
    }
    Ok(ranges)
}

/// Validates a pool's `health_check` table with the same code that compiles it.
/// The check's method, by the rules of a route's `methods` (so `"head"` is refused as a typo
/// instead of sending a method the backend answers with `405`, marking it down).
fn health_method(name: &str) -> Result<Method, String> {
    crate::protect::access::parse_methods([name])?
        .pop()
        .ok_or_else(|| format!("{name:?} is not an HTTP method"))
}

pub fn check_settings(settings: &HealthCheckSettings) -> Result<(), String> {
    parse_statuses(settings.expect_status.get_ref())?;
    check_path(settings.path.get_ref())?;
    health_method(settings.method.get_ref())?;
    if settings.timeout.0.is_zero() || settings.interval.0.is_zero() {
        return Err("health_check.interval and health_check.timeout must be more than 0".into());
    }
    Ok(())
}

/// The probes of one pool's backends, stopped when dropped.
#[derive(Debug, Default)]
pub struct HealthTasks(Vec<JoinHandle<()>>);

impl Drop for HealthTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Probes every backend once (concurrently, so this takes at most one timeout), records the
/// results, then keeps probing each backend every `interval` in tasks that stop when the
/// returned [`HealthTasks`] is dropped.
pub async fn start(
    pool: Arc<str>,
    check: Arc<HealthCheck>,
    backends: Vec<(Authority, Arc<BackendState>)>,
) -> HealthTasks {
    let first = backends.iter().map(|(authority, state)| {
        let (pool, check) = (pool.clone(), check.clone());
        async move {
            if !state.checked() {
                run_probe(&pool, &check, authority, state).await;
            }
        }
    });
    futures_util::future::join_all(first).await;
    let tasks = backends
        .into_iter()
        .map(|(authority, state)| {
            let (pool, check) = (pool.clone(), check.clone());
            // A weak reference: a backend removed by a reload stops being probed with its pool.
            let state = Arc::downgrade(&state);
            tokio::spawn(async move {
                // Spread the probes of a pool over the interval rather than firing them together.
                let offset = check.interval.mul_f64(fastrand::f64());
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, check.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(state) = state.upgrade() else {
                        return;
                    };
                    run_probe(&pool, &check, &authority, &state).await;
                }
            })
        })
        .collect();
    HealthTasks(tasks)
}

async fn run_probe(pool: &str, check: &HealthCheck, authority: &Authority, state: &BackendState) {
    let result = check.probe(authority).await;
    let now = tokio::time::Instant::now();
    match (
        state.record_check(result.is_ok(), check.rise, check.fall, now),
        result,
    ) {
        (Some(true), _) => tracing::info!(pool, backend = %authority, "backend is up"),
        (Some(false), Err(cause)) => {
            tracing::warn!(pool, backend = %authority, %cause, "backend is down")
        }
        (_, Err(cause)) => {
            tracing::debug!(pool, backend = %authority, %cause, "health check failed")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_parse_ranges_and_singles() {
        assert_eq!(parse_statuses("200-399").unwrap(), vec![200..=399]);
        assert_eq!(
            parse_statuses("200, 204,300-308").unwrap(),
            vec![200..=200, 204..=204, 300..=308]
        );
        for bad in ["", "abc", "399-200", "99", "200-600", "200,"] {
            assert!(parse_statuses(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn needles_are_found_anywhere_in_the_body() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: fine", b"ok"));
        assert!(contains(b"x", b""));
    }
}
