//! The client send timeout (`timeouts.client_send`): a client that stops taking a response is
//! disconnected, and the backend connection behind the response let go, over HTTP/1.1 (copied
//! and spliced bodies), HTTP/2 (a full socket, or a stream starved of flow-control window) and
//! TLS; a client that reads slowly but steadily is not, nor one waiting for a slow backend.
//!
//! A stalled reader here is a real socket with a small receive buffer that is never read: the
//! proxy's writes block once that buffer and the proxy's own send buffer are full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::support::raw_h2::{END_HEADERS, END_STREAM, HEADERS, RawH2, SETTINGS, frame, get_block};
use crate::support::tls::{TestCa, Trust, client_config, toml_path};
use crate::support::*;

/// Far above the configured send timeouts; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(20);

/// A body far larger than every buffer between the proxy and a client that does not read (the
/// proxy's send buffer grows to 4 MiB on loopback), so the proxy's writes must block.
const HUGE: usize = 64 << 20;

/// One piece of a streamed body.
const PIECE: usize = 64 << 10;

/// How the origin frames its large body.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length`: spliced to a plain HTTP/1.1 client.
    Length,
    /// Chunked: copied through the proxy.
    Chunked,
}

/// What the origin tells about the large bodies it sends.
#[derive(Default)]
struct Sent {
    /// Bytes handed to the origin's connection so far.
    bytes: AtomicUsize,
    /// A body's last piece was given.
    finished: AtomicBool,
    /// A body was dropped before its end: the proxy let its connection go.
    abandoned: AtomicBool,
}

/// Marks its body abandoned if dropped before the last piece was taken.
struct Abandon(Arc<Sent>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.0.finished.load(Ordering::SeqCst) {
            self.0.abandoned.store(true, Ordering::SeqCst);
        }
    }
}

/// An origin answering `/big` with `len` bytes (other paths with a few), framed as `framing`, streamed in pieces.
async fn large_body_origin(len: usize, framing: Framing) -> (Origin, Arc<Sent>) {
    let sent = Arc::new(Sent::default());
    let seen = sent.clone();
    let origin = Origin::start(move |request| {
        let sent = seen.clone();
        async move {
            if request.uri().path() != "/big" {
                return text(200, "small");
            }
            let piece = Bytes::from(vec![b'x'; PIECE]);
            let pieces = len.div_ceil(PIECE);
            let guard = Abandon(sent.clone());
            let stream = futures_util::stream::unfold((0, guard), move |(n, guard)| {
                let piece = piece.clone();
                async move {
                    if n == pieces {
                        return None;
                    }
                    let size = PIECE.min(len - n * PIECE);
                    guard.0.bytes.fetch_add(size, Ordering::SeqCst);
                    if n + 1 == pieces {
                        // With a length, the body is not asked for its end.
                        guard.0.finished.store(true, Ordering::SeqCst);
                    }
                    let frame = http_body::Frame::data(piece.slice(..size));
                    Some((Ok(frame), (n + 1, guard)))
                }
            });
            let mut response = http::Response::new(http_body_util::StreamBody::new(stream).boxed());
            if framing == Framing::Length {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, len.into());
            }
            response
        }
    })
    .await;
    (origin, sent)
}

/// A proxy with `client_send = timeout` in front of a [`large_body_origin`].
async fn send_timeout_proxy(
    len: usize,
    framing: Framing,
    timeout: &str,
) -> (Origin, Arc<Sent>, Proxy) {
    let (origin, sent) = large_body_origin(len, framing).await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        &format!("[timeouts]\nclient_send = \"{timeout}\"\n"),
    ))
    .await;
    (origin, sent, proxy)
}

/// Reads `client` to its end, pausing `pause` after each read; the bytes read, or `None` if it
/// did not end within `limit`.
async fn read_to_end(
    client: &mut (impl AsyncRead + Unpin),
    limit: Duration,
    pause: Duration,
) -> Option<usize> {
    let mut received = 0;
    let mut buf = vec![0; 64 << 10];
    let read = async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(received)
}

fn send_timeouts(proxy: &Proxy) -> u64 {
    proxy.metric(
        "gatehouse_client_send_timeouts_total",
        &[("listener", "127.0.0.1:0")],
    )
}

/// Waits until the proxy has cut one client for the send timeout and the origin has seen its
/// body abandoned, then reads what the client was sent: it must end short of `len`.
async fn assert_cut(proxy: &Proxy, sent: &Sent, client: &mut (impl AsyncRead + Unpin), len: usize) {
    assert!(
        eventually(LIMIT, || send_timeouts(proxy) == 1).await,
        "the client that took no bytes was not cut"
    );
    assert!(
        eventually(LIMIT, || sent.abandoned.load(Ordering::SeqCst)).await,
        "the backend connection behind the stalled response was not let go"
    );
    assert!(sent.bytes.load(Ordering::SeqCst) < len);
    let received = read_to_end(client, LIMIT, Duration::ZERO)
        .await
        .expect("the connection did not end");
    assert!(received < len, "the whole body arrived: {received} bytes");
}

const GET_BIG: &[u8] = b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n";

async fn stalled_http1_reader_is_cut(framing: Framing) -> Proxy {
    let (origin, sent, proxy) = send_timeout_proxy(HUGE, framing, "300ms").await;
    let mut stream = connect_with_receive_buffer(proxy.addr, 16 << 10).await;
    stream.write_all(GET_BIG).await.unwrap();
    assert_cut(&proxy, &sent, &mut stream, HUGE).await;
    assert_eq!(origin.count(), 1);
    // The listener serves on.
    let response = client().get(proxy.url("/after")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    proxy
}

#[tokio::test]
async fn a_client_that_stops_reading_a_copied_body_is_cut() {
    let proxy = stalled_http1_reader_is_cut(Framing::Chunked).await;
    assert_eq!(
        proxy.metric("gatehouse_response_bytes_spliced_total", &[]),
        0
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_a_spliced_body_is_cut() {
    let proxy = stalled_http1_reader_is_cut(Framing::Length).await;
    assert!(
        proxy.metric("gatehouse_response_bytes_spliced_total", &[]) > 0,
        "the body was not spliced: this test is about the splice path"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_over_http2_is_cut() {
    let (_origin, sent, proxy) = send_timeout_proxy(HUGE, Framing::Length, "300ms").await;
    let mut stream = connect_with_receive_buffer(proxy.addr, 16 << 10).await;
    // Windows as large as HTTP/2 allows, so that flow control never holds the proxy back: only
    // the full socket does.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let initial_window: u32 = (1 << 31) - 1;
    let mut settings = vec![0, 4];
    settings.extend_from_slice(&initial_window.to_be_bytes());
    hello.extend(frame(SETTINGS, 0, 0, &settings));
    hello.extend(frame(0x8, 0, 0, &(initial_window - 65_535).to_be_bytes()));
    hello.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &get_block("/big"),
    ));
    stream.write_all(&hello).await.unwrap();
    assert_cut(&proxy, &sent, &mut stream, HUGE).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_over_tls_is_cut() {
    let dir = TempDir::new("slow-reader-tls");
    let ca = TestCa::new("Gatehouse Test CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server");
    let (origin, sent) = large_body_origin(HUGE, Framing::Length).await;
    let text = single_pool_config(&[origin.addr], "[timeouts]\nclient_send = \"300ms\"\n");
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\n";
    let text = text.replacen(
        listener,
        &format!(
            "{listener}tls = {{ certificates = [{{ cert = {}, key = {} }}] }}\n",
            toml_path(&cert),
            toml_path(&key)
        ),
        1,
    );
    let proxy = Proxy::start(&text).await;
    let tcp = connect_with_receive_buffer(proxy.addr, 16 << 10).await;
    let config = Arc::new(client_config(&Trust::Anything, &[b"http/1.1"], None));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    stream.write_all(GET_BIG).await.unwrap();
    stream.flush().await.unwrap();
    assert_cut(&proxy, &sent, &mut stream, HUGE).await;
}

#[tokio::test]
async fn a_client_reading_slowly_but_steadily_is_not_cut() {
    // The proxy's writes block again and again (the body is many times its send buffer), but
    // each time the client takes bytes within far less than the timeout: the clock runs between
    // two writes, not over the whole response, which takes several timeouts to read.
    const LEN: usize = 24 << 20;
    let (_origin, sent, proxy) = send_timeout_proxy(LEN, Framing::Chunked, "500ms").await;
    let mut stream = connect_with_receive_buffer(proxy.addr, 64 << 10).await;
    // The connection ends with the response.
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // About 16 MB/s: a third of the proxy's send buffer drains in well under 500 ms.
    let received = read_to_end(&mut stream, LIMIT * 3, Duration::from_millis(4))
        .await
        .expect("the response did not end");
    assert_eq!(send_timeouts(&proxy), 0);
    assert!(
        received > LEN,
        "the whole response (head and chunked body) arrived: {received} bytes"
    );
    assert!(!sent.abandoned.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_send_timeout_of_zero_turns_the_check_off() {
    let (_origin, sent, proxy) = send_timeout_proxy(HUGE, Framing::Chunked, "0s").await;
    let mut stream = connect_with_receive_buffer(proxy.addr, 16 << 10).await;
    stream.write_all(GET_BIG).await.unwrap();
    // The proxy's writes are blocked (the origin has sent far more than the client took)...
    assert!(eventually(LIMIT, || sent.bytes.load(Ordering::SeqCst) > 4 << 20).await);
    // ...for well over the 300 ms the other tests cut at.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(send_timeouts(&proxy), 0);
    assert!(!sent.abandoned.load(Ordering::SeqCst));
    drop(stream);
    assert!(
        eventually(LIMIT, || sent.abandoned.load(Ordering::SeqCst)).await,
        "the backend connection was let go once the client left"
    );
}

#[tokio::test]
async fn an_http2_client_that_withholds_flow_control_window_is_cut() {
    // The client reads every byte, so the proxy's socket never fills, but it never grants more
    // than the initial 64 KiB window: the stream waits for ever unless the clock looks at it.
    let (_origin, sent, proxy) = send_timeout_proxy(HUGE, Framing::Length, "300ms").await;
    let mut h2 = RawH2::connect(proxy.addr).await;
    h2.get(1, "/big").await;
    assert_cut(&proxy, &sent, &mut h2.stream, HUGE).await;
}

/// An origin that sends three small pieces, `pause` apart.
async fn slow_origin(pause: Duration) -> Origin {
    Origin::start(move |_request| async move {
        let pieces = futures_util::stream::unfold(0u8, move |n| async move {
            if n == 3 {
                return None;
            }
            tokio::time::sleep(pause).await;
            let frame = http_body::Frame::data(Bytes::from(format!("piece{n};")));
            Some((
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame),
                n + 1,
            ))
        });
        http::Response::new(http_body_util::StreamBody::new(pieces).boxed())
    })
    .await
}

#[tokio::test]
async fn a_slow_backend_is_not_taken_for_a_slow_client() {
    // The response waits for its backend, not for the client: no clock of the client's runs,
    // on HTTP/1.1 or HTTP/2 (where the stream is watched).
    let origin = slow_origin(Duration::from_millis(400)).await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_send = \"100ms\"\n",
    ))
    .await;
    for client in [client(), h2_client()] {
        let response = client.get(proxy.url("/slow")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "piece0;piece1;piece2;");
    }
    assert_eq!(send_timeouts(&proxy), 0);
}

#[tokio::test]
async fn an_http2_download_that_moves_is_not_cut() {
    // Many windows' worth: the stream waits for window again and again, and gets it each time.
    const LEN: usize = 8 << 20;
    let (_origin, sent, proxy) = send_timeout_proxy(LEN, Framing::Length, "300ms").await;
    let response = h2_client().get(proxy.url("/big")).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), LEN);
    assert_eq!(send_timeouts(&proxy), 0);
    assert!(!sent.abandoned.load(Ordering::SeqCst));
}

#[tokio::test]
async fn an_http2_client_that_grants_no_window_at_all_is_cut() {
    // An initial window of 0: the response head goes out, and no byte of the body can follow.
    let (_origin, sent, proxy) = send_timeout_proxy(HUGE, Framing::Length, "300ms").await;
    let mut h2 = RawH2::connect(proxy.addr).await;
    h2.send(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0])).await;
    h2.get(1, "/big").await;
    assert_cut(&proxy, &sent, &mut h2.stream, HUGE).await;
}

#[tokio::test]
async fn stalled_readers_cannot_starve_a_capped_pool_for_long() {
    // Two clients that never read hold both requests a backend may have in flight; once they
    // are cut, others are served again. Without the send timeout the pool stays full for ever.
    let (origin, sent) = large_body_origin(HUGE, Framing::Chunked).await;
    let config = single_pool_config(&[origin.addr], "[timeouts]\nclient_send = \"300ms\"\n")
        .replacen("[pool.app]\n", "[pool.app]\nmax_connections = 2\n", 1);
    assert!(config.contains("max_connections = 2"), "{config}");
    let proxy = Proxy::start(&config).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_with_receive_buffer(proxy.addr, 16 << 10).await;
        stream.write_all(GET_BIG).await.unwrap();
        stalled.push(stream);
    }
    assert!(
        eventually(LIMIT, || origin.count() == 2).await,
        "both large responses under way"
    );
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let response = client().get(proxy.url("/after")).send().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503, "a full pool answers 503");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool stayed full of stalled responses"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first cut frees a slot, so the request above may be served before the second
    // stalled client is cut; on a loaded machine that can be a while later.
    assert!(
        eventually(LIMIT, || send_timeouts(&proxy) == 2).await,
        "both stalled clients cut (cut: {})",
        send_timeouts(&proxy)
    );
    assert!(sent.abandoned.load(Ordering::SeqCst));
}
