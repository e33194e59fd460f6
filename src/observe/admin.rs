//! The admin listener: Prometheus metrics, a JSON API (config in force, reload, pools and
//! backends, drain, version) and the live dashboard, on a socket of its own (loopback unless a
//! token guards it), so none of it is reachable through the proxy's listeners.
//!
//! The API is small and read-mostly; it is served by hyper directly rather than through the
//! proxy pipeline, so admin requests never count in the proxy's own metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::AdminSettings;
use crate::server::Control;

/// The dashboard page: self-contained HTML, CSS and JS.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Keys whose values the config view never shows: secrets, and header values that carry
/// credentials (in `request_headers.set` and the like).
const SECRET_KEYS: [&str; 7] = [
    "secret",
    "token",
    "password",
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `settings.address` and serves the admin API for `control`.
    pub async fn start(settings: &AdminSettings, control: Arc<Control>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.address).await?;
        let addr = listener.local_addr()?;
        tracing::info!(address = %addr, "admin listener");
        let token = settings.token.clone().map(Arc::<str>::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let (control, token) = (control.clone(), token.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (control, token) = (control.clone(), token.clone());
                        async move {
                            Ok::<_, Infallible>(answer(&control, token.as_deref(), request).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(AdminServer { addr, task })
    }

    /// Stops accepting admin connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

type AdminResponse = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    reply(status, "application/json", text)
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message }))
}

/// Whether the request carries the token (header or, for the browser, `?token=`).
fn authorized(token: Option<&str>, request: &Request<Incoming>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let from_query = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v)
    });
    [from_header, from_query]
        .into_iter()
        .flatten()
        .any(|given| same_secret(given.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference, so response time says nothing about how
/// much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn answer(
    control: &Control,
    token: Option<&str>,
    request: Request<Incoming>,
) -> AdminResponse {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    // The page itself holds no data; it sends the token on its own requests.
    if path == "/" && method == Method::GET {
        return reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
    }
    if !authorized(token, &request) {
        let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            control.render_metrics(),
        ),
        (&Method::GET, ["api", "version"]) => json(
            StatusCode::OK,
            &serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": control.started.elapsed().as_secs_f64(),
                "last_reload": control.last_reload(),
            }),
        ),
        (&Method::GET, ["api", "config"]) => match control.source() {
            Some(text) => match toml::from_str::<toml::Table>(&text) {
                Ok(mut table) => {
                    redact(&mut table);
                    json(
                        StatusCode::OK,
                        &serde_json::to_value(&table).unwrap_or_default(),
                    )
                }
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the config in force cannot be shown",
                ),
            },
            None => error(
                StatusCode::NOT_FOUND,
                "the server was not started from a config file",
            ),
        },
        (&Method::POST, ["api", "reload"]) => match control.reload_from_file().await {
            Ok(()) => {
                // As SIGHUP does: the certificate files are re-read too.
                control.reload_certificates();
                json(StatusCode::OK, &serde_json::json!({ "ok": true }))
            }
            Err(e) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "ok": false, "error": format!("{e:#}") }),
            ),
        },
        (&Method::GET, ["api", "pools"]) => json(
            StatusCode::OK,
            &serde_json::to_value(control.state.generation().pool_snapshots()).unwrap_or_default(),
        ),
        (
            &Method::POST,
            [
                "api",
                "pools",
                pool,
                "backends",
                backend,
                action @ ("drain" | "undrain"),
            ],
        ) => drain(control, pool, backend, *action == "drain"),
        (&Method::POST, ["api", "cache", "purge"]) => purge(control, request).await,
        (
            _,
            ["metrics"]
            | ["api", "version" | "config" | "reload" | "pools"]
            | ["api", "pools", _, "backends", _, "drain" | "undrain"]
            | ["api", "cache", "purge"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// `POST /api/cache/purge` with `{"url": "http://host/path?q"}` (that URL, every variant),
/// `{"prefix": "http://host/path"}` (every stored URL that starts with it) or `{"key": "name"}`
/// (every stored URL whose response carried that `Surrogate-Key` / `Cache-Tag`); with
/// `"soft": true` the entries are marked stale instead of removed.
async fn purge(control: &Control, request: Request<Incoming>) -> AdminResponse {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body could not be read (64 KiB at most)",
            );
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Purge {
        url: Option<String>,
        prefix: Option<String>,
        key: Option<String>,
        #[serde(default)]
        soft: bool,
    }
    let asked: Purge = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"url\": ...}}, {{\"prefix\": ...}} or {{\"key\": ...}}: {e}"),
            );
        }
    };
    enum Target {
        Url(Arc<str>),
        Prefix(Arc<str>),
        SurrogateKey(String),
    }
    let cache = control.state.registry.caches().current();
    // URLs are keyed as the cache keys requests: with `cache.key_query` and
    // `cache.key_ignore_query` applied (a prefix is taken as it is).
    let key_options = cache.as_ref().map(|c| c.key_options()).unwrap_or_default();
    let absolute = |text: &str, whole_url: bool| {
        text.parse::<http::Uri>().ok().and_then(|uri| {
            let (scheme, host) = (uri.scheme_str()?, uri.authority()?.as_str());
            Some(if whole_url {
                key_options.primary_key(scheme, host, &uri)
            } else {
                crate::cache::stage::primary_key(scheme, host, &uri)
            })
        })
    };
    let (target, description) = match (asked.url, asked.prefix, asked.key) {
        (Some(url), None, None) => (absolute(&url, true).map(Target::Url), url),
        (None, Some(prefix), None) => (absolute(&prefix, false).map(Target::Prefix), prefix),
        (None, None, Some(key)) if !key.is_empty() => {
            (Some(Target::SurrogateKey(key.clone())), key)
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of `url`, `prefix` and `key` (not empty)",
            );
        }
    };
    let Some(target) = target else {
        return error(
            StatusCode::BAD_REQUEST,
            "an absolute URL is needed, e.g. \"http://example.com/path\"",
        );
    };
    let Some(cache) = cache else {
        return json(StatusCode::OK, &serde_json::json!({ "purged": 0 }));
    };
    let store = &cache.store;
    let soft = asked.soft;
    // A prefix without a path ("http://host") is "http://host/": every path of that host, and
    // never another host whose name merely starts the same.
    let purged = match &target {
        Target::Url(key) if soft => usize::from(store.mark_stale(key)),
        Target::Url(key) => usize::from(store.remove(key)),
        Target::Prefix(key) if soft => store.mark_stale_prefix(key),
        Target::Prefix(key) => store.remove_prefix(key),
        Target::SurrogateKey(name) => store.purge_surrogate_key(name, soft),
    };
    tracing::info!(target = %description, soft, purged, "cache purged by the admin API");
    json(
        StatusCode::OK,
        &serde_json::json!({ "purged": purged, "soft": soft }),
    )
}

fn drain(control: &Control, pool: &str, backend: &str, draining: bool) -> AdminResponse {
    let generation = control.state.generation();
    let Some(found) = generation.pools.get(pool) else {
        return error(StatusCode::NOT_FOUND, "no such pool");
    };
    let Some(target) = found
        .backends
        .iter()
        .find(|b| b.authority.as_str() == backend)
    else {
        return error(StatusCode::NOT_FOUND, "no such backend in this pool");
    };
    target.state.set_draining(draining);
    tracing::info!(
        pool,
        backend,
        draining,
        "backend drain changed by the admin API"
    );
    json(
        StatusCode::OK,
        &serde_json::json!({ "pool": pool, "backend": backend, "draining": draining }),
    )
}

/// Replaces the values of secret-looking keys, at any depth.
fn redact(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        let key = key.to_ascii_lowercase();
        let secret = SECRET_KEYS
            .iter()
            .any(|s| key == *s || key.ends_with(&format!("_{s}")));
        match value {
            toml::Value::Table(inner) => redact(inner),
            _ if secret => *value = toml::Value::String("[redacted]".to_owned()),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        redact(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut table: toml::Table = toml::from_str(
            r#"
            [admin]
            address = "127.0.0.1:1"
            token = "t0p"
            [pool.app.sticky]
            secret = "s3cret"
            [[listener]]
            address = "0.0.0.0:443"
            tls = { certificates = [{ cert = "c.pem", key = "k.pem" }] }
            [[route]]
            pool = "app"
            request_headers = { set = { Authorization = "Bearer abc123" } }
            "#,
        )
        .unwrap();
        redact(&mut table);
        let text = serde_json::to_string(&table).unwrap();
        assert!(!text.contains("t0p") && !text.contains("s3cret"), "{text}");
        assert!(!text.contains("abc123"), "{text}");
        assert!(
            text.contains("127.0.0.1:1") && text.contains("c.pem"),
            "{text}"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
    }
}
