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
pub mod tls;
