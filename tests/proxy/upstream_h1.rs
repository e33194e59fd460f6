//! Gatehouse's own HTTP/1.1 exchange with backends (bodiless GET and HEAD), against a scripted
//! origin that writes its responses byte for byte: framings and interim responses hyper's server
//! would never send, responses split across many writes, and connections closed while idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What a scripted origin does for one request.
struct Reply {
    /// Written in this order, each piece its own write after a short pause, so the proxy reads
    /// the response in pieces.
    pieces: Vec<Vec<u8>>,
    /// Close the connection after the reply.
    close: bool,
}

impl Reply {
    fn whole(bytes: &[u8]) -> Reply {
        Reply {
            pieces: vec![bytes.to_vec()],
            close: false,
        }
    }

    fn split(bytes: &[u8], size: usize) -> Reply {
        Reply {
            pieces: bytes.chunks(size).map(<[u8]>::to_vec).collect(),
            close: false,
        }
    }

    fn then_close(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// An origin that answers each request head with the reply its script gives for the request's
/// path; counts the connections it accepted.
struct ScriptedOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl ScriptedOrigin {
    async fn start(script: fn(&str) -> Reply) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_scripted(stream, script));
            }
        });
        ScriptedOrigin { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve_scripted(mut stream: TcpStream, script: fn(&str) -> Reply) {
    let mut pending = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
        pending.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let reply = script(&path);
        for piece in &reply.pieces {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            // Lets the proxy read what came so far before the next piece.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if reply.close {
            return;
        }
    }
}

async fn get(conn: &mut RawConn, path: &str) -> RawResponse {
    conn.send(
        format!("GET {path} HTTP/1.1\r\nHost: example.test\r\nTE: trailers\r\n\r\n").as_bytes(),
    )
    .await;
    conn.response().await
}

/// Starts `script`'s origin and the proxy in front of it, sends `rounds` GETs on one client
/// connection and checks that each is a 200 with `body`; returns the last response and how many
/// connections the origin accepted.
async fn gets_through_proxy(
    script: fn(&str) -> Reply,
    rounds: usize,
    body: &[u8],
) -> (RawResponse, usize) {
    let origin = ScriptedOrigin::start(script).await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut last = None;
    for round in 1..=rounds {
        let response = get(&mut conn, "/").await;
        assert_eq!(response.status, 200, "round {round}");
        assert_eq!(response.body, body, "round {round}");
        last = Some(response);
    }
    (last.expect("at least one round"), origin.connections())
}

#[tokio::test]
async fn a_body_delimited_by_the_close_arrives_whole_and_its_connection_is_not_reused() {
    let script = |_: &str| {
        Reply::split(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the very end",
            5,
        )
        .then_close()
    };
    let (_, connections) = gets_through_proxy(script, 2, b"until the very end").await;
    assert_eq!(connections, 2);
}

#[tokio::test]
async fn interim_responses_are_skipped_and_the_final_one_is_forwarded() {
    let script = |_: &str| {
        Reply::whole(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        )
    };
    let (_, connections) = gets_through_proxy(script, 2, b"final").await;
    assert_eq!(connections, 1, "the connection is reused");
}

#[tokio::test]
async fn a_chunked_body_split_across_many_writes_is_decoded_with_its_trailers() {
    let script = |_: &str| {
        Reply::split(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              6;name=value\r\nhello \r\n5\r\nworld\r\n0\r\nx-sum: 42\r\n\r\n",
            3,
        )
    };
    let (last, connections) = gets_through_proxy(script, 2, b"hello world").await;
    assert_eq!(last.trailer("x-sum"), Some("42"), "{:?}", last.trailers);
    assert_eq!(connections, 1, "the connection is reused");
}

#[tokio::test]
async fn invalid_response_framing_is_a_502_that_names_nothing_of_the_backend() {
    let origin = ScriptedOrigin::start(|path| match path {
        "/conflict" => Reply::whole(
            b"HTTP/1.1 200 OK\r\nServer: secret-backend\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        "/bad-chunk" => Reply::whole(
            b"HTTP/1.1 200 OK\r\nServer: secret-backend\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        )
        .then_close(),
        _ => Reply::whole(b"HTTP/1.1 200 OK\r\nBroken Header\r\n\r\n").then_close(),
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let client = client();
    for path in ["/conflict", "/garbled"] {
        let response = client.get(proxy.url(path)).send().await.expect("response");
        assert_eq!(response.status(), 502, "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("secret"), "{path}: {body}");
    }
    // A body that goes bad after the head: the head has been forwarded, so the client sees the
    // response cut short rather than a complete one.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /bad-chunk HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let mut raw = Vec::new();
    let mut stream_end = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let stream = conn.stream_mut();
        loop {
            match stream.read(&mut stream_end).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&stream_end[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the client connection was not closed");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("\r\n0\r\n\r\n"),
        "a cut body must not look complete: {text}"
    );
}

#[tokio::test]
async fn bytes_after_the_body_keep_its_connection_from_being_reused() {
    let script = |_: &str| Reply::whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokXX");
    let (_, connections) = gets_through_proxy(script, 2, b"ok").await;
    assert_eq!(connections, 2);
}

#[tokio::test]
async fn a_kept_connection_the_backend_closed_while_idle_is_replaced_unseen() {
    // Keep-alive announced, then the connection closes: the next request finds it dead (either
    // already seen closed, or failing when used) and must not fail for it.
    let script =
        |_: &str| Reply::whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").then_close();
    let (_, connections) = gets_through_proxy(script, 3, b"ok").await;
    assert_eq!(connections, 3);
}

#[tokio::test]
async fn head_responses_carry_no_body_and_leave_the_connection_usable() {
    let origin = ScriptedOrigin::start(|_| {
        Reply::whole(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n")
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    for _ in 0..2 {
        conn.send(b"HEAD / HTTP/1.1\r\nHost: example.test\r\n\r\n")
            .await;
        let response = conn.head_response().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-length"), Some("1234"));
    }
    assert_eq!(origin.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// Large bodies spliced from the backend's socket to the client's (src/splice.rs).
// ---------------------------------------------------------------------------------------------

/// A body size well over what is read with the head (16 KiB) and over one pipe's worth.
const LARGE: usize = 1 << 20;

/// `len` bytes in a pattern that repeats only every 251 bytes, so that a byte lost, doubled or
/// out of place shows.
fn patterned(len: usize) -> Vec<u8> {
    seeded(len, 0)
}

/// `len` bytes of a pattern that starts at `seed`: bodies of different seeds differ at every
/// offset, so bytes of one body in another show.
fn seeded(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

/// A 200 with a `Content-Length` body of `len` patterned bytes.
fn sized_response(len: usize) -> Vec<u8> {
    seeded_response(len, 0)
}

/// A 200 with a `Content-Length` body of `len` bytes of `seed`'s pattern.
fn seeded_response(len: usize, seed: usize) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    response.extend(seeded(len, seed));
    response
}

fn spliced(proxy: &Proxy) -> u64 {
    proxy.metric("gatehouse_response_bytes_spliced_total", &[])
}

#[tokio::test]
async fn large_bodies_are_spliced_whole_in_order_and_both_connections_are_kept() {
    let origin = ScriptedOrigin::start(|path| match path {
        "/small" => Reply::whole(&sized_response(4096)),
        // Many writes, so that the body is spliced in many pieces as it comes.
        "/pieces" => Reply::split(&sized_response(LARGE), 100_000),
        _ => Reply::whole(&sized_response(LARGE)),
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    for (path, len) in [("/whole", LARGE), ("/pieces", LARGE), ("/small", 4096)] {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.header("content-length"), Some(&*len.to_string()));
        assert!(response.body == patterned(len), "{path}: the body differs");
    }
    // Two requests in one write: the second waits in the client's socket while the first
    // response is spliced, and is answered after it.
    conn.send(b"GET /whole HTTP/1.1\r\nHost: t\r\n\r\nGET /pieces HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    for path in ["/whole", "/pieces"] {
        let response = conn.response().await;
        assert_eq!(response.status, 200, "pipelined {path}");
        assert!(
            response.body == patterned(LARGE),
            "pipelined {path}: the body differs"
        );
    }
    assert_eq!(origin.connections(), 1, "the backend connection is reused");
    // Every large body but what came with its head (one read: 8 KiB on a new connection, 16
    // KiB after a large body, a little more if the buffer had room) went through the pipe;
    // none of the small one. And the bytes spliced count as sent, as any other.
    let large = 4 * LARGE as u64;
    let moved = spliced(&proxy);
    assert!(
        moved > large - 4 * 65536 && moved <= large,
        "{moved} bytes spliced"
    );
    let route_bytes = || proxy.metric("gatehouse_response_bytes_total", &[("route", "default")]);
    assert!(
        eventually(Duration::from_secs(10), || route_bytes() == large + 4096).await,
        "{} response bytes counted",
        route_bytes()
    );
}

#[tokio::test]
async fn bodies_of_every_size_around_the_splicing_thresholds_arrive_whole() {
    // The path's edges: a head read of 8 KiB on a new connection, of at most 16 KiB after a
    // body of 80 KiB or more, splicing from 64 KiB left, a 256 KiB pipe. The origin answers `/N`
    // with an N-byte body, and `/N/split` in many writes (1,000 bytes each below 64 KiB, 50,000
    // above). Each size comes after a small body and after a large one.
    let origin = ScriptedOrigin::start(|path| {
        let mut parts = path.trim_start_matches('/').split('/');
        let len = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        match parts.next() {
            Some("split") if len < 65_536 => Reply::split(&sized_response(len), 1000),
            Some("split") => Reply::split(&sized_response(len), 50_000),
            _ => Reply::whole(&sized_response(len)),
        }
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut sizes = vec![0, 1, 8191, 8192, 8193, 262_143, 262_144, 262_145, 300_001];
    // Around 16 KiB; around 72 and 80 KiB less the head, where the rest left after a head read
    // of 8 or 16 KiB crosses 64 KiB; around 80 KiB, where the next head's read gets small.
    sizes.extend((16_370..16_400).step_by(3));
    sizes.extend((73_600..73_800).step_by(17));
    sizes.extend((81_800..82_000).step_by(17));
    for len in sizes {
        for path in [
            format!("/{len}"),
            format!("/{len}/split"),
            "/300000".to_owned(),
            format!("/{len}"),
            "/5".to_owned(),
        ] {
            conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            let response = conn.response().await;
            assert_eq!(response.status, 200, "{path}");
            let expected = path[1..].split('/').next().and_then(|n| n.parse().ok());
            assert!(
                response.body == patterned(expected.unwrap_or(0)),
                "{path}: the body differs"
            );
        }
    }
    assert_eq!(
        origin.connections(),
        1,
        "every exchange left the connection clean"
    );
    assert!(spliced(&proxy) > 0);
}

#[tokio::test]
async fn medium_bodies_are_copied_not_spliced() {
    // Below 64 KiB left, splicing costs more system calls than the copies it saves (measured:
    // docs/performance.md); and a 40 KB body after a 1 MiB one is still copied.
    let origin = ScriptedOrigin::start(|path| match path {
        "/large" => Reply::whole(&sized_response(LARGE)),
        _ => Reply::whole(&sized_response(40_000)),
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut fetch = async |path: &str, len: usize| {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let response = conn.response().await;
        assert!(response.body == patterned(len), "{path}: the body differs");
    };
    for _ in 0..3 {
        fetch("/medium", 40_000).await;
    }
    assert_eq!(spliced(&proxy), 0);
    fetch("/large", LARGE).await;
    let after_large = spliced(&proxy);
    assert!(after_large > 0);
    fetch("/medium", 40_000).await;
    assert_eq!(spliced(&proxy), after_large);
}

/// Sends a GET for `path` on `stream` and reads the first `bytes` of what comes back (a client
/// about to leave within the body).
async fn get_and_read(stream: &mut TcpStream, path: &str, bytes: usize) {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut some = vec![0u8; bytes];
    stream
        .read_exact(&mut some)
        .await
        .expect("some of the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_their_own_spliced_body() {
    // `/LEN/SEED`: a LEN-byte body of SEED's pattern, in 64 KB writes.
    let origin = ScriptedOrigin::start(|path| {
        let mut parts = path.trim_start_matches('/').split('/');
        let len = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let seed = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        Reply::split(&seeded_response(len, seed), 64_000)
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut clients = Vec::new();
    for client in 0..12usize {
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            for round in 0..4usize {
                let seed = client * 4 + round;
                let len = 40_000 + seed * 37_000;
                conn.send(format!("GET /{len}/{seed} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                    .await;
                let response = conn.response().await;
                assert_eq!(response.status, 200, "body {seed}");
                assert!(response.body == seeded(len, seed), "body {seed} differs");
            }
        }));
        if client % 4 == 3 {
            // A client that leaves within its body, beside the others: its pipe still holds
            // bytes and must not be handed to anyone.
            let addr = proxy.addr;
            clients.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                get_and_read(&mut stream, "/3000000/250", 50_000).await;
            }));
        }
    }
    for client in clients {
        client.await.expect("client");
    }
    assert!(spliced(&proxy) > 0);
}

#[tokio::test]
async fn a_backend_closing_within_a_spliced_body_cuts_the_response_and_is_not_reused() {
    let origin = ScriptedOrigin::start(|path| match path {
        "/cut" => {
            // Declares 1 MiB, sends 200 KB of it, closes.
            let mut response = sized_response(LARGE);
            response.truncate(response.len() - LARGE + 200_000);
            Reply::whole(&response).then_close()
        }
        _ => Reply::whole(&sized_response(LARGE)),
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        conn.stream_mut().read_to_end(&mut raw),
    )
    .await
    .expect("the proxy closes the client's connection")
    .expect("read");
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &raw[..raw.len().min(100)]
    );
    assert!(
        raw.len() < LARGE,
        "the response was cut short ({} bytes)",
        raw.len()
    );
    assert!(spliced(&proxy) > 0, "the body was being spliced");
    // The next request gets a connection of its own and the whole body.
    let mut conn = RawConn::connect(proxy.addr).await;
    let response = get(&mut conn, "/whole").await;
    assert!(response.body == patterned(LARGE), "the body differs");
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn a_client_leaving_within_a_spliced_body_leaves_no_bytes_for_the_next_request() {
    const HUGE: usize = 16 << 20;
    let origin = ScriptedOrigin::start(|path| match path {
        "/huge" => Reply::whole(&sized_response(HUGE)),
        _ => Reply::whole(&sized_response(LARGE)),
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    // A client with a small receive buffer that reads a little of a 16 MiB body and leaves: the
    // backend's connection still holds most of it.
    let mut stream = connect_with_receive_buffer(proxy.addr, 64 * 1024).await;
    get_and_read(&mut stream, "/huge", 100_000).await;
    assert!(
        eventually(Duration::from_secs(10), || spliced(&proxy) > 0).await,
        "the body is being spliced"
    );
    drop(stream);
    // Had the half-read connection gone back to the pool, this body would be the rest of the
    // last one.
    let mut conn = RawConn::connect(proxy.addr).await;
    for _ in 0..2 {
        let response = get(&mut conn, "/large").await;
        assert_eq!(response.status, 200);
        assert!(response.body == patterned(LARGE), "the body differs");
    }
    assert_eq!(origin.connections(), 2);
}
