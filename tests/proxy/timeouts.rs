//! Client header (slowloris) and idle timeouts, which must not cut requests in flight, the
//! upstream idle timeout of pooled backend connections, and the upstream read timeout within a
//! response body. (Upstream connect and response-header
//! timeouts are in `errors.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::raw_h2::RawH2;
use crate::support::*;

/// Far above every configured timeout here; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(10);

/// For the header-timeout tests: far above the configured 300 ms, yet well below the 10 s
/// default, so the tests fail if the configured value were not applied.
const HEADER_LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_header = \"300ms\"\n",
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a.test\r\nX-Partial: ")
        .await
        .unwrap();
    assert!(
        closed_within(&mut stream, HEADER_LIMIT).await,
        "a half-sent request head must not hold the connection open"
    );
    assert_eq!(origin.count(), 0);
    assert_eq!(
        proxy.metric(
            "gatehouse_client_header_timeouts_total",
            &[("listener", "127.0.0.1:0")]
        ),
        1
    );
    let response = client().get(proxy.url("/after")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_client_trickling_its_head_byte_by_byte_is_disconnected() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_header = \"300ms\"\n",
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // Keep sending a header byte every 100 ms: activity alone must not extend the deadline.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"X").await.is_err() {
                return true;
            }
        }
    };
    let cut = tokio::time::timeout(HEADER_LIMIT, trickle).await;
    assert_eq!(cut, Ok(true), "the trickling client was not disconnected");
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn the_header_clock_starts_at_the_first_byte_not_at_connect() {
    // A short header timeout with the default (long) idle timeout: a connection that has sent
    // nothing is idle, not slow, and stays open well past the header timeout.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_header = \"300ms\"\n",
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        !closed_within(&mut stream, Duration::from_millis(1500)).await,
        "an idle connection was closed by the header timeout"
    );
    stream
        .write_all(b"GET /late HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let response = read_one_response(&mut stream, LIMIT).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.ends_with("/late"), "{response}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_idle = \"300ms\"\n",
    ))
    .await;

    // A connection that never sends a request.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, LIMIT).await,
        "a connection without requests must be closed"
    );

    // A keep-alive connection after one request.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, LIMIT)
        .await
        .expect("the idle keep-alive connection must be closed");
    assert_eq!(status_of(&seen), 200, "{seen}");
    assert!(seen.ends_with("/one"), "exactly one response: {seen}");
}

#[tokio::test]
async fn a_request_longer_than_the_idle_timeout_is_not_cut() {
    let origin = Origin::start(|_request| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        text(200, "slow but fine")
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_idle = \"300ms\"\nclient_header = \"300ms\"\n",
    ))
    .await;
    let response = client().get(proxy.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow but fine");

    // Same over a raw keep-alive connection: the response arrives, then the idle clock runs.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, LIMIT)
        .await
        .expect("closed once idle after the response");
    assert_eq!(status_of(&seen), 200, "{seen}");
    assert!(seen.ends_with("slow but fine"), "{seen}");
}

#[tokio::test]
async fn a_slow_response_body_is_not_cut_by_the_idle_timeout() {
    let origin = Origin::start(|_request| async {
        let chunks = futures_util::stream::unfold(0u8, |n| async move {
            if n == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let frame = http_body::Frame::data(bytes::Bytes::from(format!("chunk{n};")));
            Some((
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame),
                n + 1,
            ))
        });
        let body = http_body_util::StreamBody::new(chunks);
        http::Response::new(http_body_util::BodyExt::boxed(body))
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_idle = \"300ms\"\n",
    ))
    .await;
    let response = client().get(proxy.url("/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "chunk0;chunk1;chunk2;",
        "the body streamed to the end"
    );
}

#[tokio::test]
async fn idle_pooled_upstream_connections_are_closed() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nupstream_idle = \"300ms\"\n",
    ))
    .await;
    let response = client().get(proxy.url("/pooled")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "/pooled");
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    assert!(
        eventually(LIMIT, || origin.closed.load(Ordering::SeqCst) == 1).await,
        "the pooled connection to the origin was not closed when idle"
    );
    // A new request opens a new connection.
    let response = client().get(proxy.url("/again")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "/again");
    assert_eq!(origin.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pooled_upstream_connections_stay_open_under_the_default_idle_timeout() {
    // The counterpart of the test above, so it cannot pass by closing every connection at once.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let response = client().get(proxy.url("/kept")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "/kept");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        origin.closed.load(Ordering::SeqCst),
        0,
        "with upstream_idle at its default (60 s) the connection stays pooled"
    );
}

#[tokio::test]
async fn h2_control_frames_between_requests_do_not_count_as_a_slow_request_head() {
    // A PING (or WINDOW_UPDATE, SETTINGS) on an otherwise idle HTTP/2 connection is not the
    // start of a request head: the connection is idle, not slow, and must not be cut by
    // the header timeout.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_header = \"300ms\"\n",
    ))
    .await;
    let mut h2 = RawH2::connect(proxy.addr).await;
    h2.get(1, "/first").await;
    assert_eq!(h2.body(1).await, "/first");
    h2.ping().await;
    let frames = h2.read_until(LIMIT, |f| f.0 == 0x6 && f.1 & 1 == 1).await;
    assert!(
        frames.last().is_some_and(|f| f.0 == 0x6),
        "the PING is acked: {frames:?}"
    );
    // Well past the header timeout, far below the idle timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h2.get(3, "/second").await;
    assert_eq!(h2.body(3).await, "/second");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn an_idle_h2_connection_that_ignores_goaway_is_closed_anyway() {
    // Once idle, the proxy sends GOAWAY and a PING, and h2 waits for the PING's ack before it
    // closes. A client that never acks must not keep the connection open forever.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_idle = \"300ms\"\nclient_header = \"300ms\"\n",
    ))
    .await;
    let mut h2 = RawH2::connect(proxy.addr).await;
    h2.get(1, "/only").await;
    assert_eq!(h2.body(1).await, "/only");
    let frames = h2.read_until(LIMIT, |f| f.0 == 0x7).await;
    assert!(
        frames.last().is_some_and(|f| f.0 == 0x7),
        "a GOAWAY once idle: {frames:?}"
    );
    assert!(
        closed_within(&mut h2.stream, LIMIT).await,
        "the connection must be closed even if the client ignores the shutdown"
    );
}

#[tokio::test]
async fn a_client_stalling_a_small_body_gets_408_and_no_backend_hears_of_it() {
    // Small declared bodies are read whole before forwarding (so a failed attempt can be
    // retried); a pause longer than `client_body` is the client's fault.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_body = \"300ms\"\n",
    ))
    .await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"POST /stall HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let response = conn.response().await;
    assert_eq!(response.status, 408, "{:?}", response.headers);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(origin.count(), 0);
    let response = client().get(proxy.url("/after")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// An origin that reads the whole request body and answers with its length (or `cut` when the
/// body ended in an error: the proxy aborted the upload).
async fn body_length_origin() -> Origin {
    Origin::start(|request| async move {
        use http_body_util::BodyExt;
        match request.into_body().collect().await {
            Ok(body) => text(200, &body.to_bytes().len().to_string()),
            Err(_) => text(200, "cut"),
        }
    })
    .await
}

/// Sends `head`, then `chunk` every `every` until the connection fails or `max` chunks are
/// sent; returns the response (or what the socket gave before closing).
async fn dribble(
    addr: std::net::SocketAddr,
    head: &'static [u8],
    chunk: &'static [u8],
    every: Duration,
    max: usize,
) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head).await.unwrap();
    let writing = tokio::spawn(async move {
        for _ in 0..max {
            tokio::time::sleep(every).await;
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
        // Keep the write half open: dropping it would half-close the connection, which the
        // server takes as the client leaving.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {
                raw.extend_from_slice(&buffer[..n]);
                if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    writing.abort();
    String::from_utf8_lossy(&raw).into_owned()
}

/// A [`body_length_origin`] behind a proxy with `min_upload_rate = rate` after a 500 ms grace.
async fn paced_proxy(rate: &str) -> (Origin, Proxy) {
    let origin = body_length_origin().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        &format!("[timeouts]\nmin_upload_rate = \"{rate}\"\nmin_upload_grace = \"500ms\"\n"),
    ))
    .await;
    (origin, proxy)
}

#[tokio::test]
async fn a_streamed_upload_under_the_minimum_rate_gets_408() {
    // The slow-POST attack: a byte every 100 ms never trips a pause timeout, but at 1 KiB/s
    // after a 500 ms grace the client runs out of time long before the 200 bytes it sends.
    let (_origin, proxy) = paced_proxy("1KiB").await;
    let raw = dribble(
        proxy.addr,
        b"POST /slow HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n",
        Duration::from_millis(100),
        200,
    )
    .await;
    assert_eq!(status_of(&raw), 408, "{raw}");
    assert_eq!(header_of(&raw, "connection").as_deref(), Some("close"));
    // The proxy is fine for everyone else.
    let response = client().get(proxy.url("/after")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_small_held_body_under_the_minimum_rate_gets_408_before_the_pause_timeout() {
    // A small declared body is read whole before forwarding; a byte every 100 ms never pauses
    // for `client_body` (60 s), but the minimum rate catches it, and no backend hears of it.
    let (origin, proxy) = paced_proxy("1KiB").await;
    let raw = dribble(
        proxy.addr,
        b"POST /slow HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\n",
        b"x",
        Duration::from_millis(100),
        1000,
    )
    .await;
    assert_eq!(status_of(&raw), 408, "{raw}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn a_fast_upload_banks_time_for_a_pause() {
    // 64 KiB at once earns 64 s at 1 KiB/s: a 1.5 s pause afterwards (three times the grace)
    // is within the client's credit, and the whole body arrives.
    let (_origin, proxy) = paced_proxy("1KiB").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut head =
        b"POST /fast HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    head.extend_from_slice(format!("{:x}\r\n", 65536).as_bytes());
    head.extend_from_slice(&[b'a'; 65536]);
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"5\r\nhello\r\n0\r\n\r\n").await.unwrap();
    let raw = read_one_response(&mut stream, LIMIT).await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert!(
        raw.ends_with("65541"),
        "the whole body reached the origin: {raw}"
    );
}

#[tokio::test]
async fn the_minimum_rate_can_be_turned_off() {
    // With `min_upload_rate = 0`, a dribbling upload is only bounded by the other timeouts:
    // 20 bytes at one per 100 ms (2 s, four times the grace that would apply) go through.
    let (_origin, proxy) = paced_proxy("0").await;
    let raw = dribble(
        proxy.addr,
        b"POST /slow HTTP/1.1\r\nHost: a.test\r\nContent-Length: 20\r\n\r\n",
        b"x",
        Duration::from_millis(100),
        20,
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
}

/// An origin that answers every request with `head_and_start`, then sends `pieces` more pieces
/// `pause` apart, then goes silent with the connection open; counts the connections the proxy
/// has closed.
async fn stalling_origin(
    head_and_start: &'static [u8],
    pieces: Vec<&'static [u8]>,
    pause: Duration,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let counted = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (closed, pieces) = (counted.clone(), pieces.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if stream.write_all(head_and_start).await.is_err() {
                    return;
                }
                for piece in pieces {
                    tokio::time::sleep(pause).await;
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                }
                // Silent, until the proxy lets the connection go.
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

/// A proxy with `extra` in front of `origin`; what a raw `GET path` on it gets until the proxy
/// closes the connection (which it must, within the liveness bound).
async fn get_until_cut(origin: std::net::SocketAddr, extra: &str, path: &str) -> (Proxy, String) {
    let proxy = Proxy::start(&single_pool_config(&[origin], extra)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, LIMIT)
        .await
        .expect("the response must be cut, not left hanging");
    (proxy, seen)
}

const CHUNKED_START: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n";

#[tokio::test]
async fn a_backend_that_stalls_within_a_body_has_the_response_cut() {
    let (origin, closed) = stalling_origin(CHUNKED_START, Vec::new(), Duration::ZERO).await;
    let (proxy, seen) =
        get_until_cut(origin, "[timeouts]\nupstream_read = \"300ms\"\n", "/stall").await;
    assert_eq!(status_of(&seen), 200, "{seen}");
    assert!(seen.contains("first"), "{seen}");
    assert!(
        !seen.ends_with("0\r\n\r\n"),
        "the cut response looks complete: {seen}"
    );
    assert!(
        eventually(LIMIT, || closed.load(Ordering::SeqCst) == 1).await,
        "the stalled backend connection was not let go"
    );

    // A request with a body goes through hyper's client: its response is watched the same way.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /stall HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, LIMIT)
        .await
        .expect("the stalled response read by hyper must be cut too");
    assert!(
        seen.contains("first") && !seen.ends_with("0\r\n\r\n"),
        "{seen}"
    );
    assert!(eventually(LIMIT, || closed.load(Ordering::SeqCst) == 2).await);

    // Over HTTP/2 the stream ends in an error, and the connection serves on.
    let h2 = h2_client();
    let response = h2.get(proxy.url("/stall")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the cut body must not end cleanly"
    );
}

#[tokio::test]
async fn a_route_read_timeout_cuts_a_stalled_spliced_body() {
    // Content-Length and 100 KB left: the body is spliced, and the watch applies there too.
    const SPLICED_START: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nfirst";
    let (origin, closed) = stalling_origin(SPLICED_START, Vec::new(), Duration::ZERO).await;
    // Cut within the liveness bound: the route's timeout applies, not the 60 s default.
    let route = "[[route]]\npool = \"app\"\ntimeouts = { upstream_read = \"300ms\" }\n";
    let (_proxy, seen) = get_until_cut(origin, route, "/stall").await;
    assert_eq!(status_of(&seen), 200, "{seen}");
    assert!(seen.ends_with("first"), "{seen}");
    assert!(eventually(LIMIT, || closed.load(Ordering::SeqCst) == 1).await);
}

#[tokio::test]
async fn a_backend_sending_slowly_within_the_read_timeout_is_not_cut() {
    // Each pause well under the timeout, the whole body several timeouts long.
    let pieces = vec![&b"5\r\npiece\r\n"[..]; 8];
    let (origin, _closed) =
        stalling_origin(CHUNKED_START, pieces, Duration::from_millis(150)).await;
    // The origin then goes silent: the read timeout cuts the response after the last piece.
    let (_proxy, seen) =
        get_until_cut(origin, "[timeouts]\nupstream_read = \"500ms\"\n", "/slow").await;
    assert_eq!(
        seen.matches("piece").count(),
        8,
        "every piece arrived: {seen}"
    );
}

/// A backend that stalls within a body is a failed backend: passive health ejects it (here after
/// one failure), so the requests after it all go to the healthy one, and the stall is counted by
/// pool and backend. Without it, round robin would keep sending every other request to the
/// stalled backend, each cut after the read timeout.
#[tokio::test]
async fn a_backend_stalling_within_a_body_counts_as_failed_and_is_ejected() {
    let (stalling, closed) = stalling_origin(CHUNKED_START, Vec::new(), Duration::ZERO).await;
    let healthy = Origin::start(|_request| async move { text(200, "healthy") }).await;
    let extra = "[pool.app.outlier]\nconsecutive_failures = 1\nejection_time = \"60s\"\n\n\
                 [timeouts]\nupstream_read = \"300ms\"\n";
    let proxy = Proxy::start(&single_pool_config(&[stalling, healthy.addr], extra)).await;
    let client = client();
    // Round robin: one of the first two requests meets the stalling backend and is cut.
    let mut cut = 0;
    for _ in 0..2 {
        let response = client.get(proxy.url("/")).send().await.expect("head");
        assert_eq!(response.status(), 200);
        if response.bytes().await.is_err() {
            cut += 1;
        }
    }
    assert_eq!(cut, 1, "exactly one response should have been cut");
    assert!(eventually(LIMIT, || closed.load(Ordering::SeqCst) == 1).await);
    let stalled = stalling.to_string();
    assert_eq!(
        proxy.metric(
            "gatehouse_upstream_read_timeouts_total",
            &[("pool", "app"), ("backend", &stalled)]
        ),
        1
    );
    assert_eq!(
        proxy.metric(
            "gatehouse_upstream_read_timeouts_total",
            &[("backend", &healthy.addr.to_string())]
        ),
        0
    );
    for attempt in 0..10 {
        let response = client.get(proxy.url("/")).send().await.expect("head");
        let body = response.bytes().await;
        assert!(
            matches!(&body, Ok(bytes) if &bytes[..] == b"healthy"),
            "request {attempt} after the stall did not come whole from the healthy backend: {body:?}"
        );
    }
}
