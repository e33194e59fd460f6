//! Test harness: real origins on ephemeral loopback ports, the real proxy started in-process
//! from a TOML config, and small raw-socket helpers for what HTTP clients refuse to send.
//!
//! A scenario is a few lines:
//! ```ignore
//! let origin = Origin::echo().await;
//! let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
//! let response = client().get(proxy.url("/x")).send().await.unwrap();
//! ```

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use gatehouse::server::RunningServer;

/// Body type origins answer with.
pub type OriginBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<OriginBody>> + Send>>
        + Send
        + Sync,
>;

/// What an origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: http::Method,
    /// Request target as received (origin-form for HTTP/1.1).
    pub uri: http::Uri,
    /// Version spoken to the origin.
    pub version: http::Version,
    /// Headers as received.
    pub headers: HeaderMap,
}

/// A real HTTP/1.1 + h2c server on an ephemeral loopback port.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// TCP connections that have ended.
    pub closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A full body from bytes.
pub fn full(data: impl Into<Bytes>) -> OriginBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with `status` and a text body.
pub fn text(status: u16, body: &str) -> Response<OriginBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response
}

impl Origin {
    /// Starts an origin answering each request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<OriginBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let task = {
            let (seen, connections, closed) = (seen.clone(), connections.clone(), closed.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (handler, seen, closed) = (handler.clone(), seen.clone(), closed.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            seen.lock().expect("seen lock").push(Seen {
                                method: request.method().clone(),
                                uri: request.uri().clone(),
                                version: request.version(),
                                headers: request.headers().clone(),
                            });
                            let handler = handler.clone();
                            async move { Ok::<_, Infallible>(handler(request).await) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Origin {
            addr,
            seen,
            connections,
            closed,
            task,
        }
    }

    /// An origin that answers 200 with its own name in `x-origin` and body `name`.
    pub async fn named(name: &'static str) -> Origin {
        Origin::start(move |_request| async move {
            let mut response = text(200, name);
            response
                .headers_mut()
                .insert("x-origin", http::HeaderValue::from_static(name));
            response
        })
        .await
    }

    /// An origin that answers 200 with the request path and query as the body.
    pub async fn echo() -> Origin {
        Origin::start(|request| async move {
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned();
            text(200, &target)
        })
        .await
    }

    /// The last request this origin saw.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("seen lock")
            .last()
            .cloned()
            .expect("origin saw a request")
    }

    /// Number of requests seen.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }
}

/// The proxy under test, started in-process.
pub struct Proxy {
    /// The running server; `None` after [`Proxy::shutdown`].
    pub server: Option<RunningServer>,
    /// The first listener's address.
    pub addr: SocketAddr,
}

impl Proxy {
    /// Starts the proxy from config text; listeners should use port 0.
    pub async fn start(config_text: &str) -> Proxy {
        let config = gatehouse::config::parse(Path::new("test.toml"), config_text)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{config_text}"));
        let server = gatehouse::server::start(&config)
            .await
            .expect("proxy starts");
        let addr = server.local_addr();
        Proxy {
            server: Some(server),
            addr,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful shutdown; returns true when everything finished within the grace period.
    pub async fn shutdown(&mut self) -> bool {
        self.server.take().expect("proxy running").shutdown().await
    }
}

/// A config with one listener on port 0, pool `app` with `backends`, the access log off, and
/// `extra` appended verbatim (routes, settings). With no `[[route]]` in `extra`, one default route
/// to `app` is added.
pub fn single_pool_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let mut text = format!(
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [{}]\n\n",
        list.join(", ")
    );
    text.push_str(extra);
    if !extra.contains("[[route]]") {
        text.push_str("\n[[route]]\nname = \"default\"\npool = \"app\"\n");
    }
    text
}

/// An HTTP/1.1 client that does not pool connections between tests and follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// An h2c (prior knowledge) client.
pub fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client")
}

/// Sends raw bytes and returns everything the proxy answers until it closes the connection
/// or `wait` passes with no more data.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_until_quiet(&mut stream, wait).await
}

/// Reads until the peer closes or `wait` passes with no data.
pub async fn read_until_quiet(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when the peer closes `stream` within `limit` (reads return EOF or an error).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The status code of the first response in raw HTTP/1.1 text, or 0.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Polls `condition` every 20 ms for up to `limit`; true once it holds.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// A loopback address nothing listens on (bound, then released).
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}
