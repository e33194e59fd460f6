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

    /// The proxy's metrics, in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.server
            .as_ref()
            .expect("proxy running")
            .control()
            .render_metrics()
    }

    /// The sum of the series of `name` carrying all of `labels` (in any order); 0 when none.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let prefix = format!("{name}{{");
        self.metrics_text()
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|value| value as u64)
            .sum()
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

/// A connection to `addr` whose receive buffer is about `bytes` (`SO_RCVBUF`): a client that
/// reads slowly, or not at all, fills it soon and the proxy's socket holds the rest.
pub async fn connect_with_receive_buffer(addr: SocketAddr, bytes: u32) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
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

/// One HTTP/1.x response read off a raw connection by [`RawConn`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
    /// True when the body was sent with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Trailer fields of a chunked body, names lower-cased.
    pub trailers: Vec<(String, String)>,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when header `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The first value of trailer field `name`.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 client connection that reads one response at a time, following the message
/// framing (so a stray body byte on a keep-alive connection breaks the next response).
pub struct RawConn {
    stream: tokio::io::BufReader<TcpStream>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawConn {
            stream: tokio::io::BufReader::new(stream),
        }
    }

    /// A connection the test made itself (to set socket options first).
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            stream: tokio::io::BufReader::new(stream),
        }
    }

    /// The connection, to read it raw.
    pub fn stream_mut(&mut self) -> &mut tokio::io::BufReader<TcpStream> {
        &mut self.stream
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    /// Reads one response (an interim 1xx included) to a request that was not `HEAD`.
    pub async fn response(&mut self) -> RawResponse {
        self.read(false).await
    }

    /// Reads one response to a `HEAD` request: never a body, whatever the headers say.
    pub async fn head_response(&mut self) -> RawResponse {
        self.read(true).await
    }

    /// True when the peer closes the connection within `limit` with no further bytes.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn read(&mut self, head: bool) -> RawResponse {
        tokio::time::timeout(Duration::from_secs(20), self.read_inner(head))
            .await
            .expect("a complete response within 20 s")
    }

    async fn line(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut line = Vec::new();
        self.stream
            .read_until(b'\n', &mut line)
            .await
            .expect("read line");
        assert!(
            line.ends_with(b"\r\n"),
            "connection ended inside a line: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("line is UTF-8")
    }

    async fn fields(&mut self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return fields;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed field line {line:?}"));
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    async fn read_inner(&mut self, head: bool) -> RawResponse {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert!(
            version.starts_with("HTTP/1."),
            "not a status line: {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
        let headers = self.fields().await;
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            return response;
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.chunked = true;
            loop {
                let size_line = self.line().await;
                let size_text = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_text, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    response.trailers = self.fields().await;
                    break;
                }
                let start = response.body.len();
                response.body.resize(start + size, 0);
                self.stream
                    .read_exact(&mut response.body[start..])
                    .await
                    .expect("chunk data");
                assert_eq!(self.line().await, "", "chunk data not followed by CRLF");
            }
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().expect("numeric content-length");
            response.body.resize(length, 0);
            self.stream
                .read_exact(&mut response.body)
                .await
                .expect("body of content-length");
        } else {
            self.stream
                .read_to_end(&mut response.body)
                .await
                .expect("body until close");
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the error, timeout, shutdown, malformed-input, routing and access-log tests.
// ---------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed (best effort) when dropped.
pub struct TempDir {
    /// The directory.
    pub path: std::path::PathBuf,
}

impl TempDir {
    /// Creates `gatehouse-test-{tag}-{pid}-{n}` in the temp dir.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "gatehouse-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Reads from `stream` until the peer closes it; `Some(everything read)` if that happens within
/// `limit`, `None` if the connection is still open then.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one `Content-Length`-framed HTTP/1.1 response from `stream` (head and body), waiting at
/// most `limit` in all; returns what was read (possibly incomplete if the time ran out).
pub async fn read_one_response(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of header `name` in the first response of raw HTTP/1.1 text (case-insensitive name).
pub fn header_of(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The real `gatehouse` binary, started with `run -c FILE` on a free loopback port.
pub struct BinaryProxy {
    child: std::process::Child,
    /// The listener address.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl BinaryProxy {
    /// Starts the binary with the config `config(listen_address)` and waits until it listens.
    /// Retries on a fresh port if the one picked was taken in the meantime.
    pub async fn start(config: impl Fn(SocketAddr) -> String) -> BinaryProxy {
        BinaryProxy::start_with_args(config, &[]).await
    }

    /// [`BinaryProxy::start`] with extra arguments for `gatehouse run`.
    pub async fn start_with_args(
        config: impl Fn(SocketAddr) -> String,
        args: &[&str],
    ) -> BinaryProxy {
        let mut last_log = Vec::new();
        for _attempt in 0..3 {
            let dir = TempDir::new("bin");
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let path = dir.join("gatehouse.toml");
            std::fs::write(&path, config(addr)).expect("write config");
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
                .arg("run")
                .arg("-c")
                .arg(&path)
                .args(args)
                .env_remove("RUST_LOG")
                .env("NO_COLOR", "1")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn gatehouse");
            let stderr = Arc::new(Mutex::new(Vec::new()));
            if let Some(pipe) = child.stderr.take() {
                let lines = stderr.clone();
                std::thread::spawn(move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        lines.lock().expect("stderr lock").push(line);
                    }
                });
            }
            let mut proxy = BinaryProxy {
                child,
                addr,
                stderr,
                _dir: dir,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if proxy.stderr().iter().any(|l| l.contains("listening")) {
                    return proxy;
                }
                if let Ok(Some(_)) = proxy.child.try_wait() {
                    // Give the reader thread a moment to collect the last lines.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    last_log = proxy.stderr();
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "gatehouse did not start listening:\n{}",
                        proxy.stderr().join("\n")
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "gatehouse failed to start three times:\n{}",
            last_log.join("\n")
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Sends SIGTERM to the process.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
pub mod raw_h2;
pub mod tls;

// ---------------------------------------------------------------------------------------------
// Helpers for the balancing and failover tests.
// ---------------------------------------------------------------------------------------------

pub use killable::{KillableOrigin, Load, Mode};

mod killable {
    use std::sync::atomic::{AtomicU8, AtomicU64};

    use tokio::task::{JoinHandle, JoinSet};

    use super::*;

    /// What a [`KillableOrigin`] does with each request, switchable at run time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mode {
        /// 200 with `x-origin: NAME`, `x-body-len: N` (bytes of request body read) and body NAME.
        Ok,
        /// 503 with `x-origin: NAME`.
        Fail503,
        /// Reads the request, then never answers.
        Hang,
    }

    impl Mode {
        fn to_u8(self) -> u8 {
            match self {
                Mode::Ok => 0,
                Mode::Fail503 => 1,
                Mode::Hang => 2,
            }
        }

        fn from_u8(value: u8) -> Mode {
            match value {
                1 => Mode::Fail503,
                2 => Mode::Hang,
                _ => Mode::Ok,
            }
        }
    }

    struct Shared {
        name: &'static str,
        mode: AtomicU8,
        delay_ms: AtomicU64,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    struct Serving {
        accept: JoinHandle<()>,
        connections: Arc<Mutex<JoinSet<()>>>,
    }

    /// A named origin that can be killed (listener closed and every open connection aborted)
    /// and restarted on the same address, and whose answers can be switched at run time.
    /// Requests are recorded in `seen` across restarts, health checks included.
    pub struct KillableOrigin {
        /// Where it listens (the same after a restart).
        pub addr: SocketAddr,
        /// Its name, as sent in `x-origin` and the body.
        pub name: &'static str,
        /// Requests received, in order, over all lives of the origin.
        pub seen: Arc<Mutex<Vec<Seen>>>,
        shared: Arc<Shared>,
        serving: Mutex<Option<Serving>>,
    }

    impl KillableOrigin {
        /// Starts an origin called `name` on an ephemeral loopback port, in [`Mode::Ok`].
        pub async fn start(name: &'static str) -> KillableOrigin {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
            let addr = listener.local_addr().expect("origin addr");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let shared = Arc::new(Shared {
                name,
                mode: AtomicU8::new(Mode::Ok.to_u8()),
                delay_ms: AtomicU64::new(0),
                seen: seen.clone(),
            });
            let serving = serve(listener, shared.clone());
            KillableOrigin {
                addr,
                name,
                seen,
                shared,
                serving: Mutex::new(Some(serving)),
            }
        }

        /// Switches what the origin does with requests that arrive from now on.
        pub fn set_mode(&self, mode: Mode) {
            self.shared.mode.store(mode.to_u8(), Ordering::SeqCst);
        }

        /// Delays every answer by `delay` (requests that arrive from now on).
        pub fn set_delay(&self, delay: Duration) {
            let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            self.shared.delay_ms.store(ms, Ordering::SeqCst);
        }

        /// Closes the listener and aborts every open connection; returns once all are closed,
        /// so new connections are refused and pooled ones are dead.
        pub async fn kill(&self) {
            let serving = self
                .serving
                .lock()
                .expect("serving lock")
                .take()
                .expect("origin is running");
            serving.accept.abort();
            let _ = serving.accept.await;
            let mut connections =
                std::mem::take(&mut *serving.connections.lock().expect("connections lock"));
            connections.shutdown().await;
        }

        /// Listens on the same address again (retrying the bind for a few seconds).
        pub async fn restart(&self) {
            assert!(
                self.serving.lock().expect("serving lock").is_none(),
                "restart of a running origin"
            );
            let mut attempts = 0;
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(listener) => break listener,
                    Err(_) if attempts < 100 => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
                }
            };
            let serving = serve(listener, self.shared.clone());
            *self.serving.lock().expect("serving lock") = Some(serving);
        }

        /// Requests seen whose path starts with `prefix`.
        pub fn count_path(&self, prefix: &str) -> usize {
            self.seen
                .lock()
                .expect("seen lock")
                .iter()
                .filter(|s| s.uri.path().starts_with(prefix))
                .count()
        }

        /// Requests seen other than health checks (paths under `/health`).
        pub fn traffic(&self) -> usize {
            self.seen
                .lock()
                .expect("seen lock")
                .iter()
                .filter(|s| !s.uri.path().starts_with("/health"))
                .count()
        }

        /// Requests seen with `method` (health checks included).
        pub fn count_method(&self, method: &str) -> usize {
            self.seen
                .lock()
                .expect("seen lock")
                .iter()
                .filter(|s| s.method.as_str() == method)
                .count()
        }
    }

    impl Drop for KillableOrigin {
        fn drop(&mut self) {
            if let Some(serving) = self.serving.lock().map(|mut s| s.take()).ok().flatten() {
                serving.accept.abort();
                // Dropping the set aborts every connection task once the accept task is gone.
                if let Ok(mut connections) = serving.connections.lock() {
                    connections.abort_all();
                }
            }
        }
    }

    fn serve(listener: TcpListener, shared: Arc<Shared>) -> Serving {
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = {
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    let mut set = connections.lock().expect("connections lock");
                    while set.try_join_next().is_some() {}
                    set.spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(answer(shared, request).await) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Serving {
            accept,
            connections,
        }
    }

    async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Response<OriginBody> {
        shared.seen.lock().expect("seen lock").push(Seen {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        });
        let mode = Mode::from_u8(shared.mode.load(Ordering::SeqCst));
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        let body_len = match request.into_body().collect().await {
            Ok(body) => body.to_bytes().len(),
            Err(_) => 0,
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let name = shared.name;
        let mut response = match mode {
            Mode::Hang => std::future::pending::<Response<OriginBody>>().await,
            Mode::Fail503 => text(503, name),
            Mode::Ok => text(200, name),
        };
        let headers = response.headers_mut();
        headers.insert("x-origin", http::HeaderValue::from_static(name));
        headers.insert("x-body-len", http::HeaderValue::from(body_len));
        response
    }

    /// GET load from a few concurrent workers against `BASE/load/N`, counting every answer
    /// that is not a complete 200 (and every client error) as a failure.
    pub struct Load {
        done: Arc<AtomicUsize>,
        limit: Arc<AtomicUsize>,
        failures: Arc<Mutex<Vec<String>>>,
        workers: Vec<JoinHandle<()>>,
    }

    impl Load {
        /// Starts `concurrency` workers that together send requests until `limit` were issued
        /// (or [`Load::stop`]). Each request may take at most 15 s.
        pub fn start(base_url: String, concurrency: usize, limit: usize) -> Load {
            let client = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client");
            let issued = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let limit = Arc::new(AtomicUsize::new(limit));
            let failures = Arc::new(Mutex::new(Vec::new()));
            let workers = (0..concurrency)
                .map(|_| {
                    let (client, base_url) = (client.clone(), base_url.clone());
                    let (issued, done, limit, failures) = (
                        issued.clone(),
                        done.clone(),
                        limit.clone(),
                        failures.clone(),
                    );
                    tokio::spawn(async move {
                        loop {
                            let n = issued.fetch_add(1, Ordering::SeqCst);
                            if n >= limit.load(Ordering::SeqCst) {
                                break;
                            }
                            let failure =
                                match client.get(format!("{base_url}/load/{n}")).send().await {
                                    Ok(response) => {
                                        let status = response.status().as_u16();
                                        match response.bytes().await {
                                            Ok(_) if status == 200 => None,
                                            Ok(body) => Some(format!(
                                                "request {n}: status {status}: {}",
                                                String::from_utf8_lossy(&body)
                                                    .chars()
                                                    .take(200)
                                                    .collect::<String>()
                                            )),
                                            Err(e) => Some(format!("request {n}: body: {e}")),
                                        }
                                    }
                                    Err(e) => Some(format!("request {n}: {e}")),
                                };
                            if let Some(failure) = failure {
                                failures.lock().expect("failures lock").push(failure);
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            Load {
                done,
                limit,
                failures,
                workers,
            }
        }

        /// Requests answered (or failed) so far.
        pub fn done(&self) -> usize {
            self.done.load(Ordering::SeqCst)
        }

        /// Waits until `n` requests have completed; panics after `limit`.
        pub async fn wait_for(&self, n: usize, limit: Duration) {
            let done = self.done.clone();
            assert!(
                eventually(limit, || done.load(Ordering::SeqCst) >= n).await,
                "load: only {} of {n} requests completed within {limit:?}",
                self.done()
            );
        }

        /// Lets the workers finish the requests in flight and issue no more.
        pub fn stop(&self) {
            self.limit.store(0, Ordering::SeqCst);
        }

        /// Waits for the workers (after the limit was reached or [`Load::stop`]) and returns
        /// the number of completed requests and the failures.
        pub async fn finish(self) -> (usize, Vec<String>) {
            for worker in self.workers {
                worker.await.expect("load worker");
            }
            let failures = self.failures.lock().expect("failures lock").clone();
            (self.done.load(Ordering::SeqCst), failures)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the operations tests.
// ---------------------------------------------------------------------------------------------

impl BinaryProxy {
    /// The config file the binary was started with (edit it, then SIGHUP, to reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.join("gatehouse.toml")
    }
}
