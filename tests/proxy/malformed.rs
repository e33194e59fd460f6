//! Malformed requests: each is refused with the right status, nothing reaches the origin that
//! the proxy did not frame itself, and the proxy keeps serving afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Far above anything a refusal needs; only a bound for liveness.
const WAIT: Duration = Duration::from_secs(10);

/// Sends `request` on a fresh connection and returns the whole answer, read until the proxy
/// closes the connection.
async fn refused(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream, WAIT)
        .await
        .expect("the proxy closes the connection after refusing a malformed request")
}

/// A normal request on a new connection still works.
async fn still_serving(proxy: &Proxy, origin: &Origin) {
    // Count only health checks: an aborted earlier request may still reach the origin late.
    let healthy = || {
        origin
            .seen
            .lock()
            .expect("seen lock")
            .iter()
            .filter(|seen| seen.uri.path() == "/healthy")
            .count()
    };
    let before = healthy();
    let answer = raw_exchange(
        proxy.addr,
        b"GET /healthy HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(healthy(), before + 1);
}

async fn setup() -> (Origin, Proxy) {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    (origin, proxy)
}

#[tokio::test]
async fn a_garbage_request_line_is_400() {
    let (origin, proxy) = setup().await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a.test\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        let answer = refused(proxy.addr, garbage).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn invalid_header_name_bytes_are_400() {
    let (origin, proxy) = setup().await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\nBad Name: v\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nBad\x01Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nBad(Name): v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\n: no name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nName : space before colon\r\n\r\n",
    ] {
        let answer = refused(proxy.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn obs_fold_and_control_bytes_in_header_values_are_400() {
    let (origin, proxy) = setup().await;
    for request in [
        // obs-fold (a continuation line): hyper refuses it in requests.
        &b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Folded: first\r\n second\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Folded: first\r\n\tsecond\r\n\r\n",
        // Control bytes other than HTAB.
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Bad: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Bad: a\x7fb\r\n\r\n",
        // A bare CR inside a value.
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Bad: a\rb\r\n\r\n",
    ] {
        let answer = refused(proxy.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn conflicting_or_invalid_content_lengths_are_400() {
    let (origin, proxy) = setup().await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: x\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: -1\r\n\r\n",
        // A transfer coding that is not chunked cannot be framed.
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ] {
        let answer = refused(proxy.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_closes_the_connection() {
    // hyper treats such a body as chunked (RFC 9112 §6.3: Transfer-Encoding wins), drops the
    // Content-Length and ends the connection after the response. The origin must see the body
    // exactly as the proxy framed it, and nothing that followed it on the client's connection.
    let origin = Origin::start(|request| async move {
        let length = request
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let chunked = request.headers().get("transfer-encoding").is_some();
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        text(
            200,
            &format!(
                "body={} cl={length:?} chunked={chunked}",
                String::from_utf8_lossy(&body)
            ),
        )
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    for request in [
        &b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
           5\r\nhello\r\n0\r\n\r\n\
           GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
           5\r\nhello\r\n0\r\n\r\n\
           GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        let answer = refused(proxy.addr, request).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
        assert!(
            answer.ends_with("body=hello cl=None chunked=true"),
            "the origin saw the chunked body without a Content-Length: {answer}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one response, then the connection is closed: {answer}"
        );
        assert_eq!(
            header_of(&answer, "connection").as_deref(),
            Some("close"),
            "{answer}"
        );
    }
    let seen: Vec<String> = origin
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert_eq!(seen, ["/first", "/first"], "nothing smuggled through");
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn an_oversized_request_head_is_431() {
    let (origin, proxy) = setup().await;
    // The default limit is 32 KiB.
    let mut big = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 40 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let answer = refused(proxy.addr, &big).await;
    assert_eq!(status_of(&answer), 431, "{answer}");

    // Too many header fields (default limit 100).
    let mut many = b"GET / HTTP/1.1\r\nHost: a.test\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let answer = refused(proxy.addr, &many).await;
    assert_eq!(status_of(&answer), 431, "{answer}");

    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn a_larger_head_is_served_when_the_limit_is_raised() {
    // The counterpart of the test above, with a raised limit.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[server]\nmax_header_bytes = \"64KiB\"\n",
    ))
    .await;
    let mut big = b"GET /big HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 40 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let answer = refused(proxy.addr, &big).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(origin.last().headers["x-big"].len(), 40 * 1024);
}

#[tokio::test]
async fn http11_without_host_is_400() {
    let (origin, proxy) = setup().await;
    let answer = refused(proxy.addr, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(header_of(&answer, "x-request-id").is_some(), "{answer}");
    assert_eq!(origin.count(), 0);
    // HTTP/1.0 may omit Host.
    let answer = raw_exchange(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn two_host_headers_are_400() {
    let (origin, proxy) = setup().await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test/evil\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    ] {
        let answer = refused(proxy.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn a_truncated_streamed_body_never_reaches_the_origin_as_complete() {
    // The client declares 100,000 bytes (over the 64 KiB the proxy holds for retries, so the
    // body streams), sends 3 and stops sending.
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let origin = {
        let outcomes = outcomes.clone();
        Origin::start(move |request| {
            let outcomes = outcomes.clone();
            async move {
                let body = http_body_util::BodyExt::collect(request.into_body()).await;
                let outcome = match body {
                    Ok(body) => format!("complete:{}", String::from_utf8_lossy(&body.to_bytes())),
                    Err(_) => "incomplete".to_owned(),
                };
                outcomes.lock().unwrap().push(outcome);
                text(200, "done")
            }
        })
        .await
    };
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /cut HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_until_closed(&mut stream, WAIT)
        .await
        .expect("the proxy ends the connection");
    assert_ne!(status_of(&answer), 200, "{answer}");
    assert!(
        eventually(WAIT, || !outcomes.lock().unwrap().is_empty()).await,
        "the origin's request ended"
    );
    assert_eq!(*outcomes.lock().unwrap(), ["incomplete"]);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn a_truncated_small_body_is_refused_before_any_backend_sees_it() {
    // Small declared bodies are read whole before forwarding (so they can be retried): one that
    // ends early is the client's fault, answered 400, and no backend hears of it.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /cut HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_until_closed(&mut stream, WAIT)
        .await
        .expect("the proxy ends the connection");
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn invalid_host_values_and_userinfo_are_400() {
    let (origin, proxy) = setup().await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a.test:abc\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:80:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\xfe.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\"b.test\r\n\r\n",
        // Userinfo in an absolute-form target (RFC 9110 §4.2.4).
        b"GET http://evil@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        let answer = refused(proxy.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count(), 0);
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn an_absolute_form_target_that_agrees_with_host_is_served() {
    // RFC 9112 §3.2.2: the absolute-form target names the host. One that disagrees with Host is
    // refused (strict.rs); one that agrees is forwarded like any request.
    let (origin, proxy) = setup().await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET http://a.test:8080/abs?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("/abs?q=1"), "{answer}");
    let seen = origin.last();
    assert_eq!(seen.uri, "/abs?q=1");
    assert_eq!(seen.headers["host"], "a.test:8080");
}

#[tokio::test]
async fn an_unread_body_of_a_refused_request_is_never_parsed_as_a_request() {
    // The body of a request answered without forwarding (no route here) must not be read as
    // the next request on the connection, nor reach the origin.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[[route]]\nhost = \"a.test\"\npool = \"app\"\n",
    ))
    .await;
    let inner = b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let mut request = format!(
        "POST /nowhere HTTP/1.1\r\nHost: other.test\r\nContent-Length: {}\r\n\r\n",
        inner.len()
    )
    .into_bytes();
    request.extend_from_slice(inner);
    request.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(proxy.addr, &request, Duration::from_secs(3)).await;
    assert_eq!(status_of(&answer), 404, "{answer}");
    let paths: Vec<String> = origin
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "the body was parsed as a request: {paths:?}\n{answer}"
    );
    // If the connection was kept, the next request is the real one.
    if answer.matches("HTTP/1.1 ").count() > 1 {
        assert_eq!(paths, ["/next"], "{answer}");
    }
    still_serving(&proxy, &origin).await;
}

#[tokio::test]
async fn an_invalid_chunked_body_is_the_clients_fault_not_the_upstreams() {
    let origin = Origin::start(|request| async move {
        let body = http_body_util::BodyExt::collect(request.into_body()).await;
        text(
            200,
            if body.is_ok() {
                "complete"
            } else {
                "incomplete"
            },
        )
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let answer = refused(
        proxy.addr,
        b"POST /chunk HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    still_serving(&proxy, &origin).await;
}
