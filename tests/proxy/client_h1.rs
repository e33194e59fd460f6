//! Gatehouse's own client-side HTTP/1.1 for plain requests (GET and HEAD without a body), and
//! the hand-over to hyper's server for every other request: the two must answer alike, and a
//! connection must move from one to the other at any request boundary, pipelined or not.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::support::*;

/// An origin with one kind of response per path: a fixed length, a streamed body of unknown
/// length, an empty body, 204, 304 and 404.
async fn varied_origin() -> Origin {
    Origin::start(|request| async move {
        match request.uri().path() {
            "/fixed" => text(200, "a body of fixed length"),
            "/stream" => {
                let pieces = ["streamed ", "in ", "pieces"].map(|piece| {
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(
                        bytes::Bytes::from_static(piece.as_bytes()),
                    ))
                });
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(pieces));
                http::Response::new(http_body_util::BodyExt::boxed(body))
            }
            "/empty" => text(200, ""),
            "/none" => text(204, ""),
            "/same" => {
                let mut response = text(304, "");
                response
                    .headers_mut()
                    .insert("etag", http::HeaderValue::from_static("\"v1\""));
                response
            }
            _ => text(404, "no such page"),
        }
    })
    .await
}

/// A response with the fields that differ per response (date, request id) left out, sorted, so
/// two answers to the same request can be compared.
fn comparable(response: &RawResponse) -> (u16, Vec<(String, String)>, Vec<u8>, bool) {
    let mut headers: Vec<_> = response
        .headers
        .iter()
        .filter(|(name, _)| name != "date" && name != "x-request-id")
        .cloned()
        .collect();
    headers.sort();
    (
        response.status,
        headers,
        response.body.clone(),
        response.chunked,
    )
}

/// Every kind of response, to GET and HEAD, with and without `Connection: close`: served plain
/// and served by hyper (the same request with `Content-Length: 0`, which is not plain), the
/// answers are the same field for field, framing included.
#[tokio::test]
async fn plain_requests_are_answered_as_hyper_answers_them() {
    let origin = varied_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let paths = ["/fixed", "/stream", "/empty", "/none", "/same", "/missing"];
    for method in ["GET", "HEAD"] {
        for path in paths {
            for connection in ["", "Connection: close\r\n"] {
                let mut answers = Vec::new();
                for extra in ["", "Content-Length: 0\r\n"] {
                    let mut conn = RawConn::connect(proxy.addr).await;
                    let request =
                        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{connection}{extra}\r\n");
                    conn.send(request.as_bytes()).await;
                    let response = if method == "HEAD" {
                        conn.head_response().await
                    } else {
                        conn.response().await
                    };
                    assert!(
                        response.has("date"),
                        "{method} {path} {extra:?}: no date field"
                    );
                    answers.push(comparable(&response));
                }
                assert_eq!(
                    answers[0], answers[1],
                    "{method} {path} {connection:?}: plain answer (left) differs from hyper's (right)"
                );
                if connection.is_empty() {
                    assert!(
                        !answers[0].1.iter().any(|(name, _)| name == "connection"),
                        "{method} {path}: a kept connection says {:?}",
                        answers[0].1
                    );
                } else {
                    assert!(
                        answers[0]
                            .1
                            .contains(&("connection".to_owned(), "close".to_owned())),
                        "{method} {path}: a closing connection must say so: {:?}",
                        answers[0].1
                    );
                }
            }
        }
    }
    let fixed = {
        let mut conn = RawConn::connect(proxy.addr).await;
        conn.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n").await;
        conn.response().await
    };
    assert!(fixed.chunked, "a body of unknown length is sent chunked");
    assert_eq!(fixed.body, b"streamed in pieces");
}

/// A client that asks to close gets its answer, then the connection closes.
#[tokio::test]
async fn a_plain_request_asking_to_close_closes_after_its_answer() {
    let origin = varied_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /fixed HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"a body of fixed length");
    assert!(conn.closed_within(Duration::from_secs(10)).await);
}

/// Requests sent back to back in one write are answered in order, across hand-overs both ways:
/// plain, then one with a body (hyper's), then plain again on the same connection.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_hand_overs() {
    let origin = Origin::start(|request| async move {
        let path = request.uri().path().to_owned();
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        text(200, &format!("{path}:{}", String::from_utf8_lossy(&body)))
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /four HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /five HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    for expected in ["/one:", "/two:", "/three:hello", "/four:"] {
        let response = conn.response().await;
        assert_eq!(response.status, 200, "{expected}");
        assert_eq!(String::from_utf8_lossy(&response.body), expected);
    }
    let head = conn.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("6"));
    // And the connection is still good for more.
    conn.send(b"GET /six HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.body, b"/six:");
}

/// A head that arrives a few bytes at a time is read whole, and what is not plain in it is
/// noticed wherever it falls (here the last field, which hands the request to hyper).
#[tokio::test]
async fn heads_arriving_in_pieces_are_read_whole() {
    let origin = varied_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    for head in [
        &b"GET /fixed HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n"[..],
        &b"GET /fixed HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let mut conn = RawConn::connect(proxy.addr).await;
        for piece in head.chunks(3) {
            conn.send(piece).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let response = conn.response().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"a body of fixed length");
    }
}

/// Malformed or unusual heads are hyper's to answer, as before: a bad header name is a 400, a
/// head over the limit a 431, and HTTP/1.0 still gets an HTTP/1.0 answer.
#[tokio::test]
async fn requests_that_are_not_plain_get_hypers_answers() {
    let origin = varied_origin().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[server]\nmax_header_bytes = \"8KiB\"\n",
    ))
    .await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /fixed HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 400);

    let mut conn = RawConn::connect(proxy.addr).await;
    let big = format!(
        "GET /fixed HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    conn.send(big.as_bytes()).await;
    assert_eq!(conn.response().await.status, 431);

    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /fixed HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let mut status_line = String::new();
    tokio::io::AsyncBufReadExt::read_line(conn.stream_mut(), &mut status_line)
        .await
        .expect("status line");
    assert!(
        status_line.starts_with("HTTP/1.0 200"),
        "HTTP/1.0 request answered with {status_line:?}"
    );
}

/// A next request that arrives while one is in flight is kept and answered after it, also when
/// the connection's buffer had no room left (a connection's first request leaves it so) and the
/// request is longer than one read of the watch for the client closing.
#[tokio::test]
async fn a_request_sent_while_one_is_in_flight_is_kept_and_answered_next() {
    let gate = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(Notify::new());
    let origin = {
        let (gate, arrived) = (gate.clone(), arrived.clone());
        Origin::start(move |request| {
            let (gate, arrived) = (gate.clone(), arrived.clone());
            async move {
                let path = request.uri().path().to_owned();
                if path == "/held" {
                    arrived.notify_one();
                    let _permit = gate.acquire().await.expect("gate");
                }
                let long = request.headers().get("x-long").map_or(0, |v| v.len());
                text(200, &format!("{path}:{long}"))
            }
        })
        .await
    };
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n").await;
    arrived.notified().await;
    let long = "x".repeat(6000);
    conn.send(format!("GET /next HTTP/1.1\r\nHost: t\r\nX-Long: {long}\r\n\r\n").as_bytes())
        .await;
    // Not needed for the verdict: gives the proxy time to see the bytes while /held is held.
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1);
    assert_eq!(conn.response().await.body, b"/held:0");
    assert_eq!(conn.response().await.body, b"/next:6000");
}

/// A closing connection's last response arrives whole before the end of the stream, also when
/// most of it is still queued in the socket as the connection closes (the plain path closes a
/// TCP connection without a separate shutdown: the kernel sends the queued bytes, then the FIN).
#[tokio::test]
async fn a_large_last_response_arrives_whole_before_the_close() {
    const SIZE: usize = 16 << 20;
    let origin = Origin::start(|_request| async move { text(200, &"x".repeat(SIZE)) }).await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    // A small receive buffer, so that the proxy's socket still holds megabytes when it closes.
    let mut conn = RawConn::from_stream(connect_with_receive_buffer(proxy.addr, 64 * 1024).await);
    conn.send(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    // Not needed for the verdict: lets the proxy queue what its socket takes and close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), SIZE);
    assert!(response.body.iter().all(|&b| b == b'x'));
    assert!(conn.closed_within(Duration::from_secs(10)).await);
}

/// The segments a client socket received, and how many of them carried data (Linux `TCP_INFO`).
#[cfg(target_os = "linux")]
fn segments_received(stream: &tokio::net::TcpStream) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe one writable `tcp_info`; the kernel writes at
    // most `length` bytes of it, and the rest stays zeroed.
    let status = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut length,
        )
    };
    assert_eq!(status, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // SAFETY: zero-initialised and partly filled in by the kernel: every field is an integer.
    let info = unsafe { info.assume_init() };
    (info.tcpi_segs_in, info.tcpi_data_segs_in)
}

/// A client that asks to close gets the proxy's whole answer in one segment that also carries
/// the FIN and acknowledges the request: the only segment without data it receives is the
/// SYN-ACK. Without the listener's delayed acknowledgement the request's ACK comes on its own,
/// and without the held-back last write the FIN does. (A delayed ACK sent after 40 ms by a
/// slow machine also counts as one, so a few connections are tried.)
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_closing_answer_leaves_with_its_fin_and_ack_in_one_segment() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = varied_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /fixed HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 200 "));
        assert!(answer.ends_with(b"a body of fixed length"));
        let (segments, with_data) = segments_received(&stream);
        seen.push((segments, with_data));
        if segments - with_data == 1 {
            return;
        }
    }
    panic!("segments received, with data: {seen:?}; expected only the SYN-ACK without data");
}
