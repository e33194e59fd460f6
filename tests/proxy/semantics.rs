//! HTTP semantics of a proxy, checked on the wire: hop-by-hop headers in both directions,
//! forwarding headers, `Expect: 100-continue`, responses without a body, header limits and the
//! body cap.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// Liveness bound for raw reads that should end with a close.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Sends one raw GET with `extra` header lines through a fresh proxy and returns what the origin
/// saw. Every request also carries `X-End-To-End: kept`, which must arrive, so a test cannot pass
/// by the origin seeing no headers at all.
async fn origin_view_of(extra: &str) -> Seen {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        format!("GET /hop HTTP/1.1\r\nHost: example.test\r\nX-End-To-End: kept\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"/hop");
    let seen = origin.last();
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    seen
}

/// An origin that speaks raw HTTP/1.1, so its response headers reach the proxy exactly as written.
struct RawOrigin {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    /// Answers every request head (requests have no body) with `response`, keeping the
    /// connection open for the next one.
    async fn start(response: String) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let response = Arc::new(response);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        RawOrigin { addr, task }
    }
}

/// What a client sees when the origin answers a 200 with `extra` header lines. The response also
/// carries `X-End-To-End: kept` and the body `ok`, which must arrive.
async fn client_view_of(extra: &str) -> RawResponse {
    let origin = RawOrigin::start(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-End-To-End: kept\r\n{extra}\r\nok"
    ))
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"ok");
    assert_eq!(response.header("x-end-to-end"), Some("kept"));
    response
}

/// An origin that answers 200 with the request body it received, and records each body.
async fn body_echo() -> (Origin, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let recorded = bodies.clone();
    let origin = Origin::start(move |request| {
        let bodies = recorded.clone();
        async move {
            match request.into_body().collect().await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    bodies.lock().expect("bodies").push(bytes.to_vec());
                    let mut response = http::Response::new(full(bytes));
                    *response.status_mut() = http::StatusCode::OK;
                    response
                }
                Err(_) => text(400, "body did not arrive whole"),
            }
        }
    })
    .await;
    (origin, bodies)
}

/// A chunked body of `sizes` chunks, filled with `fill`, with the terminating zero chunk.
fn chunked(sizes: &[usize], fill: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for &size in sizes {
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(fill, size));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Hop-by-hop headers, request side
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn request_headers_named_by_connection_are_not_forwarded() {
    let seen = origin_view_of("Connection: keep-alive, X-Custom\r\nX-Custom: secret\r\n").await;
    assert!(!seen.headers.contains_key("x-custom"), "{:?}", seen.headers);
    assert!(
        !seen.headers.contains_key("connection"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn request_keep_alive_header_is_not_forwarded() {
    let seen = origin_view_of("Keep-Alive: timeout=5, max=100\r\n").await;
    assert!(
        !seen.headers.contains_key("keep-alive"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn request_proxy_connection_header_is_not_forwarded() {
    let seen = origin_view_of("Proxy-Connection: keep-alive\r\n").await;
    assert!(
        !seen.headers.contains_key("proxy-connection"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn request_te_without_trailers_is_not_forwarded() {
    let seen = origin_view_of("TE: gzip\r\n").await;
    assert!(!seen.headers.contains_key("te"), "{:?}", seen.headers);
}

#[tokio::test]
async fn request_te_trailers_is_forwarded_as_trailers_only() {
    let seen = origin_view_of("TE: trailers\r\n").await;
    let te: Vec<_> = seen.headers.get_all("te").iter().collect();
    assert_eq!(te, ["trailers"]);

    let seen = origin_view_of("TE: gzip;q=0.5, trailers\r\n").await;
    let te: Vec<_> = seen.headers.get_all("te").iter().collect();
    assert_eq!(te, ["trailers"]);
}

#[tokio::test]
async fn request_upgrade_without_connection_upgrade_is_not_forwarded() {
    let seen = origin_view_of("Upgrade: websocket\r\n").await;
    assert!(!seen.headers.contains_key("upgrade"), "{:?}", seen.headers);
    assert!(
        !seen.headers.contains_key("connection"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn request_proxy_authorization_is_not_forwarded() {
    let seen = origin_view_of("Proxy-Authorization: Basic dXNlcjpwYXNz\r\n").await;
    assert!(
        !seen.headers.contains_key("proxy-authorization"),
        "{:?}",
        seen.headers
    );
}

// ---------------------------------------------------------------------------------------------
// Hop-by-hop headers, response side (raw origin: hyper's server would rewrite some of them)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn response_headers_named_by_connection_are_not_returned() {
    let response = client_view_of("Connection: X-Hop\r\nX-Hop: secret\r\n").await;
    assert!(!response.has("x-hop"), "{:?}", response.headers);
    assert!(!response.has("connection"), "{:?}", response.headers);
}

#[tokio::test]
async fn response_keep_alive_header_is_not_returned() {
    let response = client_view_of("Keep-Alive: timeout=5, max=100\r\n").await;
    assert!(!response.has("keep-alive"), "{:?}", response.headers);
}

#[tokio::test]
async fn response_proxy_connection_header_is_not_returned() {
    let response = client_view_of("Proxy-Connection: keep-alive\r\n").await;
    assert!(!response.has("proxy-connection"), "{:?}", response.headers);
}

#[tokio::test]
async fn response_proxy_authenticate_is_not_returned() {
    let response = client_view_of("Proxy-Authenticate: Basic realm=\"origin\"\r\n").await;
    assert!(
        !response.has("proxy-authenticate"),
        "{:?}",
        response.headers
    );
}

#[tokio::test]
async fn response_upgrade_header_on_a_200_is_not_returned() {
    let response = client_view_of("Upgrade: h2c\r\n").await;
    assert!(!response.has("upgrade"), "{:?}", response.headers);
}

// ---------------------------------------------------------------------------------------------
// Forwarding headers
// ---------------------------------------------------------------------------------------------

/// Sends a GET for `shop.example` with an incoming `X-Forwarded-For` and `Forwarded`, returns
/// what the origin saw and what the client got.
async fn forwarded_exchange(extra_config: &str) -> (Seen, RawResponse) {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], extra_config)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"GET /f HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 1.2.3.4\r\n\
          Forwarded: for=192.0.2.60\r\n\r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    (origin.last(), response)
}

#[tokio::test]
async fn x_forwarded_headers_are_added_by_default_and_forwarded_via_are_not() {
    let (seen, response) = forwarded_exchange("").await;
    let h = &seen.headers;
    // The client is no trusted proxy: its own X-Forwarded-For is replaced, not extended, so a
    // backend reading the left-most entry cannot be fooled.
    assert_eq!(
        h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["host"], "shop.example");
    // Not enabled: no Forwarded is written, and the client's own (it is no trusted proxy) is
    // removed rather than passed on; no Via.
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert!(!h.contains_key("via"), "{h:?}");
    assert!(!response.has("via"), "{:?}", response.headers);
}

#[tokio::test]
async fn x_forwarded_for_is_the_client_address_when_none_came_in() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-Proto: https\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 200);
    let seen = origin.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    // The client cannot claim a scheme it did not use.
    assert_eq!(
        seen.headers
            .get_all("x-forwarded-proto")
            .iter()
            .collect::<Vec<_>>(),
        ["http"]
    );
}

#[tokio::test]
async fn forwarded_and_via_are_added_when_enabled() {
    let (seen, response) = forwarded_exchange("[forwarded]\nforwarded = true\nvia = true\n").await;
    let h = &seen.headers;
    assert_eq!(
        h.get_all("forwarded").iter().collect::<Vec<_>>(),
        ["for=127.0.0.1;proto=http;host=shop.example"]
    );
    assert_eq!(
        h.get_all("via").iter().collect::<Vec<_>>(),
        ["1.1 gatehouse"]
    );
    assert_eq!(response.header("via"), Some("1.1 gatehouse"));
    // The X-Forwarded-* defaults stay on.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
}

#[tokio::test]
async fn disabled_forwarding_headers_are_not_added() {
    let (seen, response) = forwarded_exchange(
        "[forwarded]\nx_forwarded_for = false\nx_forwarded_proto = false\n\
         x_forwarded_host = false\nforwarded = false\nvia = false\n",
    )
    .await;
    let h = &seen.headers;
    // Nothing is written, and the untrusted client's own claims are removed.
    assert!(!h.contains_key("x-forwarded-for"), "{h:?}");
    assert!(!h.contains_key("x-forwarded-proto"), "{h:?}");
    assert!(!h.contains_key("x-forwarded-host"), "{h:?}");
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert!(!h.contains_key("via"), "{h:?}");
    assert!(!response.has("via"), "{:?}", response.headers);
}

// ---------------------------------------------------------------------------------------------
// Expect: 100-continue
// ---------------------------------------------------------------------------------------------

const CAPPED: &str = "[[route]]\nname = \"capped\"\npool = \"app\"\nmax_body = \"1KiB\"\n";

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let (origin, bodies) = body_echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], CAPPED)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nExpect: 100-continue\r\n\
          Content-Length: 11\r\n\r\n",
    )
    .await;
    let interim = conn.response().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send(b"hello world").await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"hello world");
    assert_eq!(*bodies.lock().unwrap(), [b"hello world".to_vec()]);
    let seen = origin.last();
    assert!(!seen.headers.contains_key("expect"), "{:?}", seen.headers);
    assert_eq!(seen.headers["content-length"], "11");
}

#[tokio::test]
async fn expect_100_continue_over_max_body_gets_413_and_no_100() {
    let (origin, bodies) = body_echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], CAPPED)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nExpect: 100-continue\r\n\
          Content-Length: 5000\r\n\r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 413, "no 100 Continue first: {response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closed_within(WAIT).await, "the connection is closed");
    assert_eq!(origin.count(), 0, "the origin saw nothing");
    assert!(bodies.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Responses without a body
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn head_keeps_the_get_content_length_and_sends_no_body() {
    let origin = Origin::start(|_request| async { text(200, &"x".repeat(5000)) }).await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;

    conn.send(b"GET /doc HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let get = conn.response().await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-length"), Some("5000"));
    assert_eq!(get.body.len(), 5000);

    conn.send(b"HEAD /doc HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let head = conn.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5000"));
    assert!(!head.has("transfer-encoding"), "{:?}", head.headers);

    // Any body byte after the HEAD response would show up as a broken status line here.
    conn.send(b"GET /doc HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let again = conn.response().await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, get.body);
    assert_eq!(origin.seen.lock().unwrap()[1].method, http::Method::HEAD);
}

#[tokio::test]
async fn no_content_and_not_modified_arrive_without_a_body() {
    let origin = Origin::start(|request| async move {
        match request.uri().path() {
            "/204" => text(204, ""),
            "/304" => {
                let mut response = text(304, "");
                response
                    .headers_mut()
                    .insert("etag", http::HeaderValue::from_static("\"v1\""));
                response
            }
            _ => text(200, "after"),
        }
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;

    conn.send(b"DELETE /204 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let no_content = conn.response().await;
    assert_eq!(no_content.status, 204);
    assert!(!no_content.has("transfer-encoding"), "{no_content:?}");
    assert!(
        no_content.header("content-length").is_none_or(|v| v == "0"),
        "{no_content:?}"
    );

    conn.send(b"GET /304 HTTP/1.1\r\nHost: example.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    let not_modified = conn.response().await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(!not_modified.has("transfer-encoding"), "{not_modified:?}");

    // The same connection still parses: nothing was sent after either head.
    conn.send(b"GET /after HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let after = conn.response().await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, b"after");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Header limits
// ---------------------------------------------------------------------------------------------

const SMALL_HEADS: &str = "[server]\nmax_header_bytes = \"16KiB\"\nmax_headers = 20\n";

/// A GET whose head is exactly `total` bytes, padded with one `X-Pad` header.
fn head_of_size(total: usize) -> Vec<u8> {
    let start = "GET /big HTTP/1.1\r\nHost: example.test\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = total - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad)).into_bytes()
}

/// A GET with Host and `n` more header fields.
fn head_with_fields(n: usize) -> Vec<u8> {
    let mut head = String::from("GET /many HTTP/1.1\r\nHost: example.test\r\n");
    for i in 0..n {
        head.push_str(&format!("X-Field-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn request_head_over_max_header_bytes_gets_431() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], SMALL_HEADS)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    // 17 KiB: over the configured 16 KiB, well under the 32 KiB default.
    conn.send(&head_of_size(17 * 1024)).await;
    let response = conn.response().await;
    assert_eq!(response.status, 431, "{response:?}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn request_head_just_under_max_header_bytes_is_proxied() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], SMALL_HEADS)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&head_of_size(16 * 1024 - 256)).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"/big");
    assert!(origin.last().headers["x-pad"].len() > 15 * 1024);
}

#[tokio::test]
async fn more_header_fields_than_max_headers_gets_431() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], SMALL_HEADS)).await;

    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&head_with_fields(25)).await;
    let response = conn.response().await;
    assert_eq!(response.status, 431, "26 fields, limit 20: {response:?}");
    assert_eq!(origin.count(), 0);

    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&head_with_fields(17)).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "18 fields, limit 20: {response:?}");
    assert_eq!(origin.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Body cap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn declared_body_over_max_body_gets_413_without_sending_it() {
    let (origin, _bodies) = body_echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], CAPPED)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    // Only the head: the answer must not wait for a body.
    conn.send(b"POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1025\r\n\r\n")
        .await;
    let response = conn.response().await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closed_within(WAIT).await);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn chunked_body_growing_over_max_body_gets_413() {
    let (origin, bodies) = body_echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], CAPPED)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut request =
        b"POST /up HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend(chunked(&[400, 400, 400], b'c'));
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        bodies.lock().unwrap().is_empty(),
        "the origin never got a whole body"
    );
}

#[tokio::test]
async fn bodies_under_max_body_pass() {
    let (origin, bodies) = body_echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], CAPPED)).await;
    let mut conn = RawConn::connect(proxy.addr).await;

    let mut request =
        b"POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1024\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'l', 1024));
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, vec![b'l'; 1024]);

    let mut request =
        b"POST /up HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend(chunked(&[500, 500, 24], b'c'));
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, vec![b'c'; 1024]);

    assert_eq!(
        *bodies.lock().unwrap(),
        [vec![b'l'; 1024], vec![b'c'; 1024]]
    );
}
