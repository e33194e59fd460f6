//! Operations: hot reload (routes, listeners, broken configs, under load, with long-lived
//! connections open), the admin listener (metrics, API, drain, token), access-log rotation and
//! sampling, and the real binary's SIGHUP and SIGUSR1.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use gatehouse::config::Config;
use gatehouse::server::RunningServer;

use crate::support::*;

/// Liveness bound for one step; far above what any step needs.
const STEP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Parses config text the test knows to be valid.
fn parse(text: &str) -> Config {
    gatehouse::config::parse(Path::new("test.toml"), text)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{text}"))
}

/// Starts the proxy from the config file at `path`, remembering the path so `POST /api/reload`
/// can re-read it.
async fn start_from_file(path: &Path) -> Proxy {
    let config = gatehouse::config::load(path)
        .unwrap_or_else(|e| panic!("test config {} is invalid:\n{e}", path.display()));
    let server = gatehouse::server::start_with_path(&config, Some(path.to_owned()))
        .await
        .expect("proxy starts");
    let addr = server.local_addr();
    Proxy {
        server: Some(server),
        addr,
    }
}

fn running(proxy: &Proxy) -> &RunningServer {
    proxy.server.as_ref().expect("proxy running")
}

/// A TOML string literal for a filesystem path.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Polls the async `condition` every 20 ms for up to `limit`; true once it holds.
async fn until<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` through `addr` on a fresh connection (`Connection: close`): (status, body).
async fn fresh_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: ops.test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let raw = read_until_closed(&mut stream, STEP)
        .await
        .ok_or_else(|| format!("GET {path}: the connection stayed open"))?;
    let status = status_of(&raw);
    if status == 0 {
        return Err(format!("GET {path}: no response: {raw:?}"));
    }
    let body = raw
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Ok((status, body))
}

/// `GET path` through the proxy with a shared client: (status, `x-origin` header, body).
async fn get(client: &reqwest::Client, url: String) -> (u16, String, String) {
    let response = tokio::time::timeout(STEP, client.get(&url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer within the liveness bound"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let origin = response
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.text().await.expect("response body");
    (status, origin, body)
}

/// A client of the admin listener.
struct Admin {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Admin {
    fn of(server: &RunningServer, token: Option<&str>) -> Admin {
        let addr = server.admin_addr().expect("an admin listener");
        Admin {
            base: format!("http://{addr}"),
            token: token.map(str::to_owned),
            client: client(),
        }
    }

    async fn send(&self, method: http::Method, path: &str) -> (u16, String, String) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = tokio::time::timeout(STEP, request.send())
            .await
            .unwrap_or_else(|_| panic!("admin {method} {path}: no answer"))
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.expect("admin body");
        (status, content_type, body)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.send(http::Method::GET, path).await;
        (status, body)
    }

    async fn post(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.send(http::Method::POST, path).await;
        (status, body)
    }

    async fn json(&self, method: http::Method, path: &str) -> (u16, serde_json::Value) {
        let (status, content_type, body) = self.send(method, path).await;
        assert!(
            content_type.starts_with("application/json"),
            "{path}: content-type {content_type:?}: {body}"
        );
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        (status, value)
    }

    async fn metrics(&self) -> Scrape {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics: {body}");
        Scrape(body)
    }

    /// Scrapes until `ready` holds (or `limit` passes) and returns the last scrape.
    async fn metrics_when(&self, limit: Duration, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let scrape = self.metrics().await;
            if ready(&scrape) || tokio::time::Instant::now() >= deadline {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A Prometheus text exposition.
struct Scrape(String);

impl Scrape {
    /// The value of the series `name` whose labels are exactly `labels` (in any order).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, label_text) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                if series_name != name {
                    return None;
                }
                let mut found = parse_labels(label_text)?;
                found.sort();
                if found != wanted {
                    return None;
                }
                value.trim().parse().ok()
            })
    }

    /// True when some series `name` has label `key` = `value`.
    fn has_series_with(&self, name: &str, key: &str, value: &str) -> bool {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, _) = line.rsplit_once(' ')?;
                let (series_name, label_text) = series.split_once('{')?;
                (series_name == name).then(|| parse_labels(label_text.strip_suffix('}')?))?
            })
            .any(|labels| labels.iter().any(|(k, v)| k == key && v == value))
    }
}

/// `k="v",k2="v2"` → pairs (values unescaped only as far as the tests need).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            }
        }
        let end = end?;
        out.push((key.to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// A 200 with `x-origin: NAME` and body NAME.
fn named(name: &'static str) -> Response<OriginBody> {
    let mut response = text(200, name);
    response
        .headers_mut()
        .insert("x-origin", http::HeaderValue::from_static(name));
    response
}

/// Waits for `path` to hold `count` complete lines and returns them.
async fn log_lines(path: &Path, count: usize) -> Vec<String> {
    let read = || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        (text.is_empty() || text.ends_with('\n'))
            .then(|| text.lines().map(str::to_owned).collect::<Vec<_>>())
    };
    let ready = eventually(STEP, || read().is_some_and(|lines| lines.len() >= count)).await;
    let found = read().unwrap_or_default();
    assert!(
        ready,
        "expected {count} lines in {}, found {}:\n{}",
        path.display(),
        found.len(),
        found.join("\n")
    );
    found
}

// ---------------------------------------------------------------------------------------------
// 1. Reload with a WebSocket and a slow download open
// ---------------------------------------------------------------------------------------------

const SLOW_CHUNKS: u64 = 20;
const SLOW_CHUNK_BYTES: usize = 4096;
/// The slow download pauses after this many chunks until the test opens the gate.
const SLOW_HELD_AFTER: u64 = 10;

/// Chunk `index` of the slow download: its index in every byte pattern, so a lost, repeated or
/// reordered chunk changes the digest.
fn slow_chunk(index: u64) -> Bytes {
    (0..SLOW_CHUNK_BYTES as u64)
        .map(|j| ((index * 131 + j * 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn slow_digest() -> Vec<u8> {
    let mut hasher = Sha256::new();
    for index in 0..SLOW_CHUNKS {
        hasher.update(slow_chunk(index));
    }
    hasher.finalize().to_vec()
}

/// 20 chunks, 50 ms apart; after the 10th it waits for a permit from `gate`, so the download is
/// in flight for exactly as long as the test needs.
fn slow_download(gate: Arc<Semaphore>) -> Response<OriginBody> {
    let frames = futures_util::stream::unfold(0u64, move |index| {
        let gate = gate.clone();
        async move {
            if index == SLOW_CHUNKS {
                return None;
            }
            if index == SLOW_HELD_AFTER {
                let _ = gate.acquire().await.map(|permit| permit.forget());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(
                    slow_chunk(index),
                )),
                index + 1,
            ))
        }
    });
    Response::new(BodyExt::boxed(StreamBody::new(frames)))
}

/// Accepts the WebSocket handshake in `request` and echoes every text and binary message.
fn websocket_echo(mut request: Request<Incoming>) -> Response<OriginBody> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return text(400, "not a WebSocket handshake");
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .expect("101 response")
}

async fn next_ws_message<S>(ws: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("a message within the liveness bound")
        .expect("the WebSocket is open")
        .expect("a valid message")
}

fn two_pool_config(a: SocketAddr, b: SocketAddr, new_route: bool) -> String {
    let mut text = format!(
        "[access_log]\nenabled = false\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.a]\nbackends = [\"{a}\"]\n\n[pool.b]\nbackends = [\"{b}\"]\n\n\
         [[route]]\nname = \"default\"\npool = \"a\"\n"
    );
    if new_route {
        text.push_str("\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"b\"\n");
    }
    text
}

#[tokio::test]
async fn reload_changes_routes_while_a_websocket_and_a_slow_download_stay_open() {
    let gate = Arc::new(Semaphore::new(0));
    let a = {
        let gate = gate.clone();
        Origin::start(move |request| {
            let gate = gate.clone();
            async move {
                match request.uri().path() {
                    "/ws" => websocket_echo(request),
                    "/slow" => slow_download(gate),
                    _ => named("A"),
                }
            }
        })
        .await
    };
    let b = Origin::named("B").await;
    let proxy = Proxy::start(&two_pool_config(a.addr, b.addr, false)).await;
    let requests = client();
    assert_eq!(
        get(&requests, proxy.url("/new")).await,
        (200, "A".into(), "A".into()),
        "before the reload, /new takes the default route"
    );

    // A WebSocket through the proxy.
    let (mut ws, handshake) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr)),
    )
    .await
    .expect("handshake within the liveness bound")
    .expect("WebSocket handshake through the proxy");
    assert_eq!(handshake.status(), 101);
    ws.send(Message::text("before the reload")).await.unwrap();
    assert_eq!(
        next_ws_message(&mut ws).await,
        Message::text("before the reload")
    );

    // A slow download through the proxy, read in the background; it stops half way until the
    // gate opens.
    let received = Arc::new(AtomicUsize::new(0));
    let mut response = client().get(proxy.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let download = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut hasher = Sha256::new();
            let mut total = 0usize;
            while let Some(chunk) = response.chunk().await? {
                hasher.update(&chunk);
                total += chunk.len();
                received.store(total, Ordering::SeqCst);
            }
            Ok::<_, reqwest::Error>((total, hasher.finalize().to_vec()))
        })
    };
    let half = SLOW_HELD_AFTER as usize * SLOW_CHUNK_BYTES;
    assert!(
        eventually(STEP, || received.load(Ordering::SeqCst) >= half).await,
        "the first half of the download arrives"
    );

    running(&proxy)
        .reload(&parse(&two_pool_config(a.addr, b.addr, true)))
        .await
        .expect("reload");

    // New requests take the new route; the old ones are untouched.
    assert_eq!(
        get(&requests, proxy.url("/new")).await,
        (200, "B".into(), "B".into()),
        "after the reload, /new goes to pool b"
    );
    assert_eq!(
        get(&client(), proxy.url("/other")).await,
        (200, "A".into(), "A".into()),
        "the default route is unchanged"
    );
    assert!(
        !download.is_finished(),
        "the download is still in flight (held by the origin)"
    );
    assert_eq!(received.load(Ordering::SeqCst), half);

    // The WebSocket opened before the reload still echoes.
    for text in ["after the reload", "and again"] {
        ws.send(Message::text(text))
            .await
            .expect("send after reload");
        assert_eq!(next_ws_message(&mut ws).await, Message::text(text));
    }

    // The download finishes intact.
    gate.add_permits(1);
    let (total, digest) = tokio::time::timeout(STEP, download)
        .await
        .expect("the download ends within the liveness bound")
        .unwrap()
        .expect("the download completes without error");
    assert_eq!(total, SLOW_CHUNKS as usize * SLOW_CHUNK_BYTES);
    assert!(digest == slow_digest(), "the downloaded bytes differ");

    ws.close(None).await.expect("send close");
    let reply = next_ws_message(&mut ws).await;
    assert!(matches!(reply, Message::Close(_)), "got {reply:?}");

    let paths: Vec<String> = a
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/new", "/ws", "/slow", "/other"], "origin A saw");
    assert_eq!(b.count(), 1, "origin B saw only the new route's request");
}

// ---------------------------------------------------------------------------------------------
// 2. A broken reload changes nothing and is reported
// ---------------------------------------------------------------------------------------------

/// Pools `a` (origin A) and `b` (origin B), the default route to `a`, an admin listener, and
/// `extra` appended.
fn admin_config(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        "[access_log]\nenabled = false\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.a]\nbackends = [\"{a}\"]\n\n[pool.b]\nbackends = [\"{b}\"]\n\n\
         [[route]]\nname = \"default\"\npool = \"a\"\n{extra}"
    )
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_config_serving_and_is_reported() {
    let a = Origin::named("A").await;
    let b = Origin::named("B").await;
    let dir = TempDir::new("ops-broken-reload");
    let file = dir.join("gatehouse.toml");
    std::fs::write(&file, admin_config(a.addr, b.addr, "")).unwrap();
    let proxy = start_from_file(&file).await;
    let admin = Admin::of(running(&proxy), None);
    let requests = client();
    assert_eq!(get(&requests, proxy.url("/new")).await.1, "A");

    // A route to a pool that does not exist: refused by the parser...
    let undefined_pool = admin_config(
        a.addr,
        b.addr,
        "\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"nope\"\n",
    );
    let errors = gatehouse::config::parse(&file, &undefined_pool)
        .expect_err("a route to an undefined pool does not parse");
    assert!(
        errors.to_string().contains("\"nope\" is not defined"),
        "{errors}"
    );
    // ...and by a reload of the file.
    std::fs::write(&file, &undefined_pool).unwrap();
    let (status, answer) = admin.json(http::Method::POST, "/api/reload").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("\"nope\" is not defined"), "{answer}");

    assert_eq!(
        get(&requests, proxy.url("/new")).await.1,
        "A",
        "the old routes still serve"
    );
    let (status, version) = admin.json(http::Method::GET, "/api/version").await;
    assert_eq!(status, 200);
    assert_eq!(version["last_reload"]["ok"], false, "{version}");
    assert!(
        version["last_reload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"nope\" is not defined")),
        "{version}"
    );
    let scrape = admin.metrics().await;
    assert_eq!(
        scrape.value("gatehouse_reloads_total", &[("result", "failure")]),
        Some(1.0),
        "{}",
        scrape.0
    );
    assert_eq!(
        scrape.value("gatehouse_last_reload_success", &[]),
        Some(0.0),
        "{}",
        scrape.0
    );

    // A config that parses but cannot be applied: its second listener's address is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let unbindable = admin_config(
        a.addr,
        b.addr,
        &format!(
            "\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"b\"\n\n\
             [[listener]]\nname = \"second\"\naddress = \"{taken_addr}\"\n"
        ),
    );
    gatehouse::config::parse(&file, &unbindable).expect("the unbindable config parses");
    std::fs::write(&file, &unbindable).unwrap();
    let (status, answer) = admin.json(http::Method::POST, "/api/reload").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&taken_addr.to_string()) && error.contains("second"),
        "the error names the listener and its address: {answer}"
    );
    assert_eq!(
        get(&requests, proxy.url("/new")).await.1,
        "A",
        "the route of the refused config is not in force"
    );
    assert_eq!(
        running(&proxy).local_addrs(),
        vec![(Arc::from("main"), proxy.addr)],
        "no listener was added"
    );
    let (_, version) = admin.json(http::Method::GET, "/api/version").await;
    assert_eq!(version["last_reload"]["ok"], false, "{version}");
    let scrape = admin.metrics().await;
    assert_eq!(
        scrape.value("gatehouse_reloads_total", &[("result", "failure")]),
        Some(2.0),
        "{}",
        scrape.0
    );
    assert_eq!(
        scrape.value("gatehouse_last_reload_success", &[]),
        Some(0.0)
    );
    assert_eq!(
        scrape.value("gatehouse_reloads_total", &[("result", "success")]),
        None,
        "no reload succeeded yet"
    );

    // Once the file is fixed, the same route goes live.
    drop(taken);
    let fixed = admin_config(
        a.addr,
        b.addr,
        "\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"b\"\n",
    );
    std::fs::write(&file, fixed).unwrap();
    let (status, answer) = admin.json(http::Method::POST, "/api/reload").await;
    assert_eq!((status, &answer["ok"]), (200, &serde_json::json!(true)));
    assert_eq!(get(&requests, proxy.url("/new")).await.1, "B");
    let scrape = admin.metrics().await;
    assert_eq!(
        scrape.value("gatehouse_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("gatehouse_last_reload_success", &[]),
        Some(1.0)
    );
    let (_, version) = admin.json(http::Method::GET, "/api/version").await;
    assert_eq!(version["last_reload"]["ok"], true, "{version}");
}

// ---------------------------------------------------------------------------------------------
// 3. 50 reloads under load refuse no connection
// ---------------------------------------------------------------------------------------------

fn load_config(a: SocketAddr, b: SocketAddr, extra_route: bool) -> String {
    let mut text = format!(
        "[access_log]\nenabled = false\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.a]\nbackends = [\"{a}\"]\n\n[pool.b]\nbackends = [\"{b}\"]\n\n\
         [[route]]\nname = \"all\"\npath_prefix = \"/\"\npool = \"a\"\n"
    );
    if extra_route {
        text.push_str("\n[[route]]\nname = \"extra\"\npath_prefix = \"/extra\"\npool = \"b\"\n");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_listener_refuses_no_connection_across_50_reloads() {
    let a = Origin::named("A").await;
    let b = Origin::named("B").await;
    let without = parse(&load_config(a.addr, b.addr, false));
    let with = parse(&load_config(a.addr, b.addr, true));
    let proxy = Proxy::start(&load_config(a.addr, b.addr, false)).await;
    let server = running(&proxy);
    let addr = proxy.addr;
    let listeners_before = server.local_addrs();
    assert_eq!(listeners_before, vec![(Arc::from("main"), addr)]);

    // Clients that open a new connection for every request until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..3)
        .map(|worker| {
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let path = format!("/load/{worker}/{n}");
                    match fresh_get(addr, &path).await {
                        Ok((200, body)) if body == "A" => {}
                        Ok((status, body)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {status} {body:?}")),
                        Err(error) => failures.lock().unwrap().push(error),
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    for i in 0..50 {
        let seen = done.load(Ordering::SeqCst);
        let (config, expect) = if i % 2 == 0 {
            (&with, "B")
        } else {
            (&without, "A")
        };
        server
            .reload(config)
            .await
            .unwrap_or_else(|e| panic!("reload {i}: {e:#}"));
        // The reload is in force for new connections...
        let answer = fresh_get(addr, "/extra/probe").await;
        assert_eq!(
            answer,
            Ok((200, expect.to_owned())),
            "after reload {i}, /extra goes to {expect}"
        );
        // ...and the load went on across it.
        assert!(
            eventually(STEP, || done.load(Ordering::SeqCst) >= seen + 2).await,
            "the clients made no progress after reload {i}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for worker in clients {
        tokio::time::timeout(STEP, worker)
            .await
            .expect("client stops")
            .unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the reloads:\n{}",
        failures.len(),
        done.load(Ordering::SeqCst),
        failures.join("\n")
    );
    assert!(done.load(Ordering::SeqCst) >= 100);
    assert_eq!(
        server.local_addrs(),
        listeners_before,
        "the listener kept its address"
    );
    assert_eq!(server.control().last_reload().map(|r| r.ok), Some(true));
}

// ---------------------------------------------------------------------------------------------
// 4. Listeners added and removed by a reload
// ---------------------------------------------------------------------------------------------

fn listeners_config(origin: SocketAddr, second: bool) -> String {
    let mut text = format!(
        "[access_log]\nenabled = false\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.app]\nbackends = [\"{origin}\"]\n\n[[route]]\npool = \"app\"\n"
    );
    if second {
        text.push_str("\n[[listener]]\nname = \"second\"\naddress = \"127.0.0.1:0\"\n");
    }
    text
}

#[tokio::test]
async fn reload_opens_added_listeners_and_closes_removed_ones() {
    // Echoes the path; `/held` answers only once the gate opens.
    let gate = Arc::new(Semaphore::new(0));
    let origin = {
        let gate = gate.clone();
        Origin::start(move |request| {
            let gate = gate.clone();
            async move {
                let path = request.uri().path().to_owned();
                if path == "/held" {
                    let _ = gate.acquire().await.map(|permit| permit.forget());
                }
                text(200, &path)
            }
        })
        .await
    };
    let proxy = Proxy::start(&listeners_config(origin.addr, false)).await;
    let server = running(&proxy);
    let main = proxy.addr;

    server
        .reload(&parse(&listeners_config(origin.addr, true)))
        .await
        .expect("reload adding a listener");
    let listeners = server.local_addrs();
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert_eq!(listeners[0], (Arc::from("main"), main), "main is kept");
    let (name, second) = listeners[1].clone();
    assert_eq!(&*name, "second");
    assert_ne!(second.port(), 0);
    assert_ne!(second, main);
    assert_eq!(
        fresh_get(second, "/via-second").await,
        Ok((200, "/via-second".to_owned()))
    );
    assert_eq!(
        fresh_get(main, "/via-main").await,
        Ok((200, "/via-main".to_owned()))
    );

    // A keep-alive request in flight through the listener that is about to go.
    let mut held = RawConn::connect(second).await;
    held.send(b"GET /held HTTP/1.1\r\nHost: ops.test\r\n\r\n")
        .await;
    assert!(
        eventually(STEP, || origin.count() == 3).await,
        "the held request reaches the origin"
    );

    server
        .reload(&parse(&listeners_config(origin.addr, false)))
        .await
        .expect("reload removing a listener");
    assert_eq!(server.local_addrs(), vec![(Arc::from("main"), main)]);
    let refused = until(STEP, || async {
        matches!(
            TcpStream::connect(second).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    assert!(
        refused,
        "connections to the removed listener {second} are refused"
    );
    assert_eq!(
        fresh_get(main, "/still").await,
        Ok((200, "/still".to_owned()))
    );

    // The request in flight on the removed listener finishes, then its connection closes.
    gate.add_permits(1);
    let response = held.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"/held");
    assert!(
        held.closed_within(STEP).await,
        "the removed listener's connection closes once its request is done"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Metrics match the traffic
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_match_the_traffic() {
    let origin = Origin::echo().await;
    let backend = origin.addr.to_string();
    let proxy = Proxy::start(&format!(
        "[access_log]\nenabled = false\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.app]\nbackends = [\"{backend}\"]\n\n\
         [[route]]\nname = \"a\"\nhost = \"a.test\"\npool = \"app\"\n"
    ))
    .await;
    let admin = Admin::of(running(&proxy), None);
    let requests = client();
    let mut body_bytes = 0usize;
    for i in 0..7 {
        let response = requests
            .get(proxy.url(&format!("/get/{i}")))
            .header("host", "a.test")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        body_bytes += response.bytes().await.unwrap().len();
    }
    for i in 0..3 {
        let response = requests
            .get(proxy.url(&format!("/unknown/{i}")))
            .header("host", "nobody.test")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        response.bytes().await.unwrap();
    }
    for i in 0..2 {
        let response = requests
            .post(proxy.url(&format!("/post/{i}")))
            .header("host", "a.test")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        body_bytes += response.bytes().await.unwrap().len();
    }
    assert!(body_bytes > 0);

    // Durations and bytes are recorded when each body ends, just after the client has it.
    let body_bytes = body_bytes as f64;
    let scrape = admin
        .metrics_when(STEP, |s| {
            s.value(
                "gatehouse_request_duration_seconds_count",
                &[("route", "a")],
            ) == Some(9.0)
                && s.value("gatehouse_response_bytes_total", &[("route", "a")]) == Some(body_bytes)
        })
        .await;
    let text = &scrape.0;
    let requests_total = |route: &str, method: &str, class: &str| {
        scrape.value(
            "gatehouse_requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests_total("a", "GET", "2xx"), Some(7.0), "{text}");
    assert_eq!(requests_total("-", "GET", "4xx"), Some(3.0), "{text}");
    assert_eq!(requests_total("a", "POST", "2xx"), Some(2.0), "{text}");
    assert_eq!(requests_total("a", "GET", "4xx"), None, "{text}");
    assert_eq!(
        scrape.value(
            "gatehouse_request_duration_seconds_count",
            &[("route", "a")]
        ),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        scrape.value(
            "gatehouse_request_duration_seconds_count",
            &[("route", "-")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        scrape.value("gatehouse_response_bytes_total", &[("route", "a")]),
        Some(body_bytes),
        "{text}"
    );
    assert_eq!(
        scrape.value("gatehouse_request_bytes_total", &[("route", "a")]),
        Some(("payload".len() * 2) as f64),
        "{text}"
    );
    assert_eq!(
        scrape.value(
            "gatehouse_backend_up",
            &[("pool", "app"), ("backend", &backend)]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        scrape.has_series_with("gatehouse_active_connections", "listener", "main"),
        "{text}"
    );
    assert!(
        scrape.value("gatehouse_uptime_seconds", &[]).is_some(),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Admin actions: drain, reload, purge, token
// ---------------------------------------------------------------------------------------------

fn drain_config(one: SocketAddr, two: SocketAddr, three: SocketAddr, new_route: bool) -> String {
    let mut text = format!(
        "[access_log]\nenabled = false\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.app]\nbackends = [\"{one}\", \"{two}\"]\n\n[pool.other]\nbackends = [\"{three}\"]\n\n\
         [[route]]\nname = \"default\"\npool = \"app\"\n"
    );
    if new_route {
        text.push_str("\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"other\"\n");
    }
    text
}

/// The view of backend `address` in pool `pool` from `GET /api/pools`.
async fn backend_view(admin: &Admin, pool: &str, address: &str) -> serde_json::Value {
    let (status, pools) = admin.json(http::Method::GET, "/api/pools").await;
    assert_eq!(status, 200, "{pools}");
    pools
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["backends"].as_array())
        .and_then(|backends| backends.iter().find(|b| b["address"] == address))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {address} in pool {pool}: {pools}"))
}

/// Which origins answered `n` requests (by `x-origin`).
async fn answered_by(client: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let (status, origin, _) = get(client, url.to_owned()).await;
        assert_eq!(status, 200);
        names.push(origin);
    }
    names
}

#[tokio::test]
async fn admin_actions_take_effect() {
    let one = Origin::named("one").await;
    let two = Origin::named("two").await;
    let three = Origin::named("three").await;
    let dir = TempDir::new("ops-admin");
    let file = dir.join("gatehouse.toml");
    std::fs::write(&file, drain_config(one.addr, two.addr, three.addr, false)).unwrap();
    let proxy = start_from_file(&file).await;
    let admin = Admin::of(running(&proxy), None);
    let requests = client();
    let url = proxy.url("/x");
    let one_addr = one.addr.to_string();

    let names = answered_by(&requests, &url, 4).await;
    assert!(
        names.contains(&"one".to_owned()) && names.contains(&"two".to_owned()),
        "both backends take traffic at first: {names:?}"
    );

    // Drain "one": everything goes to "two".
    let (status, answer) = admin
        .json(
            http::Method::POST,
            &format!("/api/pools/app/backends/{one_addr}/drain"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["draining"], true, "{answer}");
    let view = backend_view(&admin, "app", &one_addr).await;
    assert_eq!(view["status"], "draining", "{view}");
    assert_eq!(view["draining"], true, "{view}");
    assert_eq!(
        backend_view(&admin, "app", &two.addr.to_string()).await["status"],
        "available"
    );
    let names = answered_by(&requests, &url, 10).await;
    assert!(
        names.iter().all(|n| n == "two"),
        "a drained backend gets no new requests: {names:?}"
    );
    let scrape = admin.metrics().await;
    assert_eq!(
        scrape.value(
            "gatehouse_backend_up",
            &[("pool", "app"), ("backend", &one_addr)]
        ),
        Some(0.0),
        "{}",
        scrape.0
    );

    // Undrain: "one" gets traffic again.
    let (status, answer) = admin
        .json(
            http::Method::POST,
            &format!("/api/pools/app/backends/{one_addr}/undrain"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["draining"], false, "{answer}");
    assert_eq!(
        backend_view(&admin, "app", &one_addr).await["status"],
        "available"
    );
    let names = answered_by(&requests, &url, 10).await;
    assert!(
        names.iter().any(|n| n == "one"),
        "an undrained backend takes requests again: {names:?}"
    );

    // Unknown pools and backends are 404s.
    let (status, _) = admin
        .json(
            http::Method::POST,
            &format!("/api/pools/nope/backends/{one_addr}/drain"),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = admin
        .json(
            http::Method::POST,
            "/api/pools/app/backends/127.0.0.1:1/drain",
        )
        .await;
    assert_eq!(status, 404);

    // POST /api/reload re-reads the file.
    assert_eq!(get(&requests, proxy.url("/new")).await.0, 200);
    assert_ne!(get(&requests, proxy.url("/new")).await.1, "three");
    std::fs::write(&file, drain_config(one.addr, two.addr, three.addr, true)).unwrap();
    let (status, answer) = admin.json(http::Method::POST, "/api/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(get(&requests, proxy.url("/new")).await.1, "three");
    let (_, version) = admin.json(http::Method::GET, "/api/version").await;
    assert_eq!(version["last_reload"]["ok"], true, "{version}");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"), "{version}");

    // A purge names a URL or a prefix; without either it is refused with a JSON error (purges
    // themselves are tested in cache.rs).
    let (status, answer) = admin.json(http::Method::POST, "/api/cache/purge").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
}

#[tokio::test]
async fn the_admin_token_guards_the_api_and_secrets_are_not_shown() {
    // Distinctive values, so "the token does not appear in the config view" means something.
    const TOKEN: &str = "tok-6bq2Xw7";
    const STICKY_SECRET: &str = "stick-9Hd3kq";
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&format!(
        "[access_log]\nenabled = false\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.app]\nbackends = [\"{}\"]\n\n[pool.app.sticky]\nsecret = \"{STICKY_SECRET}\"\n\n\
         [[route]]\npool = \"app\"\n",
        origin.addr
    ))
    .await;
    let server = running(&proxy);
    let anonymous = Admin::of(server, None);
    let wrong = Admin::of(server, Some("tok-6bq2Xw8"));
    let admin = Admin::of(server, Some(TOKEN));

    let (status, content_type, body) = anonymous.send(http::Method::GET, "/metrics").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(wrong.get("/metrics").await.0, 401);
    assert_eq!(anonymous.get("/api/config").await.0, 401);
    assert_eq!(anonymous.post("/api/reload").await.0, 401);
    assert_eq!(
        anonymous
            .post(&format!("/api/pools/app/backends/{}/drain", origin.addr))
            .await
            .0,
        401
    );
    let (status, body) = admin.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gatehouse_uptime_seconds"), "{body}");
    assert_eq!(
        anonymous
            .get(&format!("/api/version?token={TOKEN}"))
            .await
            .0,
        200,
        "the token may come in the query, for the dashboard"
    );

    // The dashboard page holds no data: served without a token.
    let (status, content_type, page) = anonymous.send(http::Method::GET, "/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(!page.is_empty());

    let (status, config) = admin.get("/api/config").await;
    assert_eq!(status, 200, "{config}");
    assert!(
        !config.contains(TOKEN) && !config.contains(STICKY_SECRET),
        "secrets are redacted: {config}"
    );
    let value: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(value["admin"]["token"], "[redacted]", "{config}");
    assert_eq!(value["pool"]["app"]["sticky"]["secret"], "[redacted]");
    assert_eq!(
        value["pool"]["app"]["backends"][0],
        origin.addr.to_string(),
        "the rest of the config is shown"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Access log: reopen after rotation, sampling
// ---------------------------------------------------------------------------------------------

fn logged_config(path: &Path, origin: SocketAddr, sample: &str) -> String {
    format!(
        "[access_log]\nformat = \"json\"\npath = {}\nsample = {sample}\n\n\
         [[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n\
         [pool.app]\nbackends = [\"{origin}\"]\n\n\
         [[route]]\nname = \"api\"\nhost = \"api.test\"\npool = \"app\"\n",
        toml_path(path)
    )
}

fn request_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            record["request_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Sends `GET path` with `host`; returns (status, request id).
async fn logged_get(
    client: &reqwest::Client,
    proxy: &Proxy,
    host: &str,
    path: &str,
) -> (u16, String) {
    let response = client
        .get(proxy.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    response.bytes().await.unwrap();
    (status, id)
}

#[tokio::test]
async fn the_access_log_is_reopened_after_rotation() {
    let dir = TempDir::new("ops-rotate");
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&logged_config(&path, origin.addr, "1.0")).await;
    let requests = client();

    let (status, first) = logged_get(&requests, &proxy, "api.test", "/first").await;
    assert_eq!(status, 200);
    assert_eq!(request_ids(&log_lines(&path, 1).await), [first.as_str()]);

    std::fs::rename(&path, &rotated).unwrap();
    running(&proxy).state().access_log().reopen();
    assert!(
        eventually(STEP, || path.exists()).await,
        "the writer creates a new file at the configured path"
    );
    let (status, second) = logged_get(&requests, &proxy, "api.test", "/second").await;
    assert_eq!(status, 200);

    assert_eq!(
        request_ids(&log_lines(&path, 1).await),
        [second],
        "the new file has the second request"
    );
    assert_eq!(
        request_ids(&log_lines(&rotated, 1).await),
        [first],
        "the rotated file keeps the first request only"
    );
}

#[tokio::test]
async fn sampling_zero_logs_errors_only() {
    let dir = TempDir::new("ops-sample");
    let path = dir.join("access.log");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&logged_config(&path, origin.addr, "0.0")).await;
    let requests = client();
    for i in 0..5 {
        let (status, _) = logged_get(&requests, &proxy, "api.test", &format!("/ok/{i}")).await;
        assert_eq!(status, 200);
    }
    // Each response's line (if any) is queued when its body ends, which is when its duration is
    // recorded: once all five are, any line for them is ahead of the 404's in the queue.
    let server = running(&proxy);
    assert!(
        eventually(STEP, || {
            Scrape(server.control().render_metrics()).value(
                "gatehouse_request_duration_seconds_count",
                &[("route", "api")],
            ) == Some(5.0)
        })
        .await,
        "the five responses ended"
    );
    let (status, missing) = logged_get(&requests, &proxy, "nobody.test", "/missing").await;
    assert_eq!(status, 404);

    let lines = log_lines(&path, 1).await;
    assert_eq!(
        request_ids(&lines),
        [missing],
        "only the 404 is logged: {lines:#?}"
    );
    let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(record["status"], 404);
}

// ---------------------------------------------------------------------------------------------
// 8. The real binary: SIGHUP and SIGUSR1
// ---------------------------------------------------------------------------------------------

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

#[tokio::test]
async fn the_binary_reloads_on_sighup_and_reopens_its_log_on_sigusr1() {
    let a = Origin::named("A").await;
    let b = Origin::named("B").await;
    let logs = TempDir::new("ops-binary");
    let log = logs.join("access.log");
    let rotated = logs.join("access.log.1");
    let config = {
        let (a, b, log) = (a.addr, b.addr, toml_path(&log));
        move |listen: SocketAddr, extra: &str| {
            format!(
                "[access_log]\nformat = \"json\"\npath = {log}\n\n\
                 [[listener]]\naddress = \"{listen}\"\n\n\
                 [pool.a]\nbackends = [\"{a}\"]\n\n[pool.b]\nbackends = [\"{b}\"]\n\n\
                 [[route]]\nname = \"default\"\npool = \"a\"\n{extra}"
            )
        }
    };
    let mut proxy = BinaryProxy::start(|listen| config(listen, "")).await;
    let file = proxy.config_path();
    let requests = client();
    let mut sent = 0;
    let (status, origin, _) = get(&requests, proxy.url("/new")).await;
    sent += 1;
    assert_eq!((status, origin.as_str()), (200, "A"));

    // SIGHUP re-reads the file.
    let new_route = "\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"b\"\n";
    std::fs::write(&file, config(proxy.addr, new_route)).unwrap();
    signal(proxy.pid(), "HUP");
    let mut switched = false;
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        let (status, origin, _) = get(&requests, proxy.url("/new")).await;
        sent += 1;
        assert_eq!(status, 200);
        if origin == "B" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        switched,
        "the new route is served after SIGHUP; log:\n{}",
        proxy.stderr().join("\n")
    );

    // A broken file on SIGHUP is refused; the process and the config in force stay.
    std::fs::write(
        &file,
        config(
            proxy.addr,
            "\n[[route]]\nname = \"bad\"\npath_prefix = \"/bad\"\npool = \"nope\"\n",
        ),
    )
    .unwrap();
    signal(proxy.pid(), "HUP");
    assert!(
        eventually(STEP, || proxy
            .stderr()
            .iter()
            .any(|l| l.contains("reload refused")))
        .await,
        "the refused reload is logged:\n{}",
        proxy.stderr().join("\n")
    );
    let (status, origin, _) = get(&requests, proxy.url("/new")).await;
    sent += 1;
    assert_eq!((status, origin.as_str()), (200, "B"));

    // SIGUSR1 after rotation: the binary writes to a new file at the configured path.
    log_lines(&log, sent).await;
    std::fs::rename(&log, &rotated).unwrap();
    signal(proxy.pid(), "USR1");
    assert!(
        eventually(STEP, || log.exists()).await,
        "the access log is reopened at its path after SIGUSR1; log:\n{}",
        proxy.stderr().join("\n")
    );
    let (status, _, _) = get(&requests, proxy.url("/after-rotation")).await;
    assert_eq!(status, 200);
    let fresh = log_lines(&log, 1).await;
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    let record: serde_json::Value = serde_json::from_str(&fresh[0]).unwrap();
    assert_eq!(record["target"], "/after-rotation");
    let old = log_lines(&rotated, sent).await;
    assert_eq!(old.len(), sent, "the rotated file keeps the earlier lines");
    assert!(!old.iter().any(|l| l.contains("/after-rotation")));

    proxy.terminate();
    let status = proxy.wait_exit(STEP).await;
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "exit status {status:?}; log:\n{}",
        proxy.stderr().join("\n")
    );
}

#[tokio::test]
async fn with_watch_the_binary_reloads_when_its_files_change() {
    let a = Origin::named("A").await;
    let b = Origin::named("B").await;
    let lists = TempDir::new("ops-watch");
    let deny = lists.join("deny.txt");
    std::fs::write(&deny, "# nobody yet\n").unwrap();
    let config = {
        let (a, b) = (a.addr, b.addr);
        let deny = format!("{:?}", format!("file:{}", deny.display()));
        move |listen: SocketAddr, extra: &str| {
            format!(
                "[access_log]\nenabled = false\n\n\
                 [[listener]]\naddress = \"{listen}\"\n\n\
                 [pool.a]\nbackends = [\"{a}\"]\n\n[pool.b]\nbackends = [\"{b}\"]\n\n\
                 [[route]]\nname = \"default\"\npool = \"a\"\ndeny = [{deny}]\n{extra}"
            )
        }
    };
    let proxy = BinaryProxy::start_with_args(|listen| config(listen, ""), &["--watch"]).await;
    let file = proxy.config_path();
    let requests = client();
    let (status, origin, _) = get(&requests, proxy.url("/new")).await;
    assert_eq!((status, origin.as_str()), (200, "A"));

    // A new route in the file, with no signal.
    let new_route = "\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\npool = \"b\"\n";
    std::fs::write(&file, config(proxy.addr, new_route)).unwrap();
    let switched = until(STEP, || async {
        get(&requests, proxy.url("/new")).await.1 == "B"
    })
    .await;
    assert!(
        switched,
        "the new route is served after the file changed; log:\n{}",
        proxy.stderr().join("\n")
    );

    // A list the configuration names: denying loopback refuses us on the default route.
    std::fs::write(&deny, "127.0.0.0/8\n").unwrap();
    let denied = until(STEP, || async {
        get(&requests, proxy.url("/other")).await.0 == 403
    })
    .await;
    assert!(
        denied,
        "the deny list's new contents apply; log:\n{}",
        proxy.stderr().join("\n")
    );

    // A broken file is refused and the configuration in force stays.
    std::fs::write(&file, "[[route]]\npool = \"nope\"\n").unwrap();
    assert!(
        eventually(STEP, || proxy
            .stderr()
            .iter()
            .any(|l| l.contains("reload refused")))
        .await,
        "the refused reload is logged:\n{}",
        proxy.stderr().join("\n")
    );
    let (status, origin, _) = get(&requests, proxy.url("/new")).await;
    assert_eq!((status, origin.as_str()), (200, "B"));
}
