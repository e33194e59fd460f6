//! Strict request parsing and path normalisation through the real proxy: requests a backend
//! could read differently from the proxy are refused with 400 before any backend hears of them,
//! and paths are normalised before routing, the backend getting the normalised path.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Far above anything an answer needs; only a bound for liveness.
const WAIT: Duration = Duration::from_secs(10);

/// Sends `request` on a fresh connection and returns everything answered until the proxy closes
/// the connection (every request here either is refused or asks for `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_until_closed(&mut stream, WAIT)
        .await
        .expect("the proxy closes the connection")
}

/// Each request is answered 400 and the origin sees none of them.
async fn assert_all_refused(requests: &[&[u8]]) {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    for request in requests {
        // Read until the proxy closes or falls quiet, so a request that was served shows its
        // answer rather than a timeout.
        let answer = raw_exchange(proxy.addr, request, WAIT).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count(), 0, "the origin saw a refused request");
}

#[tokio::test]
async fn differing_content_lengths_are_400() {
    assert_all_refused(&[
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nContent-Length: 3\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3, 3\r\n\r\nabc",
    ])
    .await;
}

#[tokio::test]
async fn obs_fold_is_400() {
    assert_all_refused(&[
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Folded: first\r\n second\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\t5\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn an_invalid_header_name_is_400() {
    assert_all_refused(&[
        b"GET / HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn a_nul_in_a_header_value_is_400() {
    assert_all_refused(&[
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\x00.evil\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn a_bad_host_is_400() {
    assert_all_refused(&[
        b"GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_400() {
    // `gzip` alone hyper refuses; the lists ending in `chunked` hyper accepts and only the
    // strict check refuses (a backend would read the body with other codings than the proxy).
    assert_all_refused(&[
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn an_absolute_form_target_naming_another_host_is_400() {
    assert_all_refused(&[
        b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test:8080/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://user@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ])
    .await;

    // The same host, spelled differently, is served.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let answer = exchange(
        proxy.addr,
        b"GET http://A.test:80/x HTTP/1.1\r\nHost: a.TEST\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(origin.last().uri, "/x");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    // hyper reads such a body as chunked (RFC 9112 §6.3: Transfer-Encoding wins), removes the
    // Content-Length before the proxy sees the request, and closes the connection after
    // answering: the strict check cannot see both headers, so the answer is not a 400. What
    // matters holds either way: no backend sees both framings or the request hidden behind.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    for request in [
        &b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
           0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
           0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        let answer = exchange(proxy.addr, request).await;
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer, then the connection is closed: {answer}"
        );
        assert!(
            matches!(status_of(&answer), 200 | 400),
            "{answer}"
        );
    }
    let seen = origin.seen.lock().expect("seen lock").clone();
    assert!(
        seen.iter().all(|s| s.uri.path() == "/first"),
        "nothing smuggled through: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| !(s.headers.contains_key("content-length")
                && s.headers.contains_key("transfer-encoding"))),
        "no backend sees both framings: {seen:?}"
    );
}

/// Routes `/admin...` to an origin answering "admin" and everything else to one answering
/// "public".
async fn two_routes() -> (Origin, Origin, Proxy) {
    let admin = Origin::named("admin").await;
    let public = Origin::named("public").await;
    let config = format!(
        r#"[access_log]
enabled = false

[[listener]]
address = "127.0.0.1:0"

[pool.admin]
backends = ["{}"]

[pool.public]
backends = ["{}"]

[[route]]
name = "admin"
path_prefix = "/admin"
pool = "admin"

[[route]]
name = "public"
pool = "public"
"#,
        admin.addr, public.addr
    );
    let proxy = Proxy::start(&config).await;
    (admin, public, proxy)
}

/// `GET target` with `Connection: close`: (status, body).
async fn get(proxy: &Proxy, target: &str) -> (u16, String) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    let answer = exchange(proxy.addr, request.as_bytes()).await;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status_of(&answer), body)
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing_and_forwarding() {
    let (admin, public, proxy) = two_routes().await;

    let (status, body) = get(&proxy, "/public/../admin/x").await;
    assert_eq!((status, body.as_str()), (200, "admin"));
    assert_eq!(
        admin.last().uri,
        "/admin/x",
        "the backend gets the normalised path"
    );

    let (status, body) = get(&proxy, "/public/./../admin/y/./z?q=/../%2e%2e").await;
    assert_eq!((status, body.as_str()), (200, "admin"));
    assert_eq!(
        admin.last().uri,
        "/admin/y/z?q=/../%2e%2e",
        "the query is kept as sent"
    );

    let (status, body) = get(&proxy, "/admin/%2e%2e/public").await;
    assert_eq!((status, body.as_str()), (200, "public"));
    assert_eq!(public.last().uri, "/public");

    let (status, body) = get(&proxy, "/admin/%2E./%61dmin/w").await;
    assert_eq!((status, body.as_str()), (200, "admin"));
    assert_eq!(admin.last().uri, "/admin/w");

    assert_eq!(admin.count(), 3);
    assert_eq!(public.count(), 1);
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_reach_no_backend() {
    let (admin, public, proxy) = two_routes().await;
    for target in [
        "/a%2fb",
        "/public%2f..%2fadmin/x",
        "/public/..%5cadmin/x",
        "/public\\..\\admin/x",
        "/admin%00.html",
        "/..",
        "/../admin/x",
        "/public/../../admin/x",
        "/public/..;/admin/x",
        "/public/%zz",
    ] {
        let (status, _) = get(&proxy, target).await;
        assert_eq!(status, 400, "{target}");
    }
    assert_eq!(
        admin.count() + public.count(),
        0,
        "a backend saw a refused path"
    );
}
