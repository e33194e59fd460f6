//! Idle HTTP/1 keep-alive connections are parked (`timeouts.client_idle_release`): hyper's
//! connection and its buffers are dropped until the client sends again. The client must never
//! notice: the next request, a head split around the park, pipelined requests, a body, the idle
//! timeout and a drain all behave as on a connection that was never parked.

use std::time::Duration;

use crate::support::*;

/// Far above every configured timeout here; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(10);

/// Parks after 100 ms idle; the idle timeout stays long unless a test sets it.
fn parking_config(origin: &Origin, extra: &str) -> String {
    single_pool_config(
        &[origin.addr],
        &format!("[timeouts]\nclient_idle_release = \"100ms\"\n{extra}"),
    )
}

fn parked(proxy: &Proxy) -> u64 {
    proxy.metric(
        "gatehouse_client_connections_parked_total",
        &[("listener", "127.0.0.1:0")],
    )
}

async fn wait_parked(proxy: &Proxy, count: u64) {
    assert!(
        eventually(LIMIT, || parked(proxy) >= count).await,
        "the connection was not parked (parked {} times, expected {count})",
        parked(proxy)
    );
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests_and_parks_again() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&parking_config(&origin, "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&get("/first")).await;
    let first = conn.response().await;
    assert_eq!((first.status, first.body.as_slice()), (200, &b"/first"[..]));

    wait_parked(&proxy, 1).await;
    conn.send(&get("/second")).await;
    let second = conn.response().await;
    assert_eq!(
        (second.status, second.body.as_slice()),
        (200, &b"/second"[..])
    );

    // Unparked by that request, the connection is parked again once it is idle again.
    wait_parked(&proxy, 2).await;
    conn.send(&get("/third")).await;
    let third = conn.response().await;
    assert_eq!((third.status, third.body.as_slice()), (200, &b"/third"[..]));
    assert_eq!(origin.count(), 3);
    assert_eq!(
        proxy.metric(
            "gatehouse_active_connections",
            &[("listener", "127.0.0.1:0")]
        ),
        1,
        "all three requests came on the one connection"
    );
}

#[tokio::test]
async fn a_head_split_after_the_park_and_pipelined_requests_are_served_in_order() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&parking_config(&origin, "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&get("/warm")).await;
    assert_eq!(conn.response().await.status, 200);
    wait_parked(&proxy, 1).await;

    // Half a head wakes the connection; the rest comes after longer than `client_idle_release`,
    // which must not park it again with the head half read.
    conn.send(b"GET /split HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.send(b"st: a.test\r\n\r\n").await;
    let split = conn.response().await;
    assert_eq!((split.status, split.body.as_slice()), (200, &b"/split"[..]));
    wait_parked(&proxy, 2).await;

    // Two requests in one segment wake a parked connection: both answered, in order.
    let mut both = get("/one");
    both.extend_from_slice(&get("/two"));
    conn.send(&both).await;
    let one = conn.response().await;
    let two = conn.response().await;
    assert_eq!(one.body, b"/one");
    assert_eq!(two.body, b"/two");
}

#[tokio::test]
async fn a_request_with_a_body_is_forwarded_whole_after_a_park() {
    let origin = Origin::start(|request: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        text(200, &format!("got {} bytes", body.len()))
    })
    .await;
    let proxy = Proxy::start(&parking_config(&origin, "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let post = |len: usize| {
        let mut request =
            format!("POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'x', len));
        request
    };
    conn.send(&post(5000)).await;
    assert_eq!(conn.response().await.body, b"got 5000 bytes");
    wait_parked(&proxy, 1).await;
    conn.send(&post(70_000)).await;
    assert_eq!(conn.response().await.body, b"got 70000 bytes");
    wait_parked(&proxy, 2).await;
    conn.send(&get("/after")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn a_parked_connection_still_closes_at_the_idle_timeout() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&parking_config(&origin, "client_idle = \"600ms\"\n")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&get("/")).await;
    assert_eq!(conn.response().await.status, 200);
    wait_parked(&proxy, 1).await;
    assert!(
        conn.closed_within(LIMIT).await,
        "a parked connection must be closed when client_idle runs out"
    );
    assert!(
        eventually(LIMIT, || proxy.metric(
            "gatehouse_active_connections",
            &[("listener", "127.0.0.1:0")]
        ) == 0)
        .await
    );
}

#[tokio::test]
async fn a_drain_closes_parked_connections_at_once() {
    let origin = Origin::echo().await;
    let mut proxy = Proxy::start(&parking_config(&origin, "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&get("/")).await;
    assert_eq!(conn.response().await.status, 200);
    wait_parked(&proxy, 1).await;
    let finished = tokio::time::timeout(LIMIT, proxy.shutdown())
        .await
        .expect("shutdown ends");
    assert!(finished, "a parked connection must not hold up the drain");
    assert!(conn.closed_within(LIMIT).await);
}

#[tokio::test]
async fn an_http1_only_listener_parks_too() {
    let origin = Origin::echo().await;
    let config = parking_config(&origin, "").replace(
        "address = \"127.0.0.1:0\"\n",
        "address = \"127.0.0.1:0\"\nhttp2 = false\n",
    );
    let proxy = Proxy::start(&config).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(&get("/a")).await;
    assert_eq!(conn.response().await.body, b"/a");
    wait_parked(&proxy, 1).await;
    conn.send(&get("/b")).await;
    assert_eq!(conn.response().await.body, b"/b");
}

#[tokio::test]
async fn http2_connections_and_a_zero_release_time_are_never_parked() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&parking_config(&origin, "")).await;
    let h2 = h2_client();
    let response = h2.get(proxy.url("/h2")).send().await.expect("h2 request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.text().await.expect("body"), "/h2");
    // Several times `client_idle_release`: an HTTP/1 connection would have been parked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(parked(&proxy), 0, "an HTTP/2 connection was parked");
    let response = h2
        .get(proxy.url("/again"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(response.text().await.expect("body"), "/again");

    let off = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[timeouts]\nclient_idle_release = \"0s\"\n",
    ))
    .await;
    let mut conn = RawConn::connect(off.addr).await;
    conn.send(&get("/")).await;
    assert_eq!(conn.response().await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        parked(&off),
        0,
        "client_idle_release = 0s must turn parking off"
    );
    conn.send(&get("/still")).await;
    assert_eq!(conn.response().await.body, b"/still");
}

#[tokio::test]
async fn a_proxy_protocol_connection_parks_and_keeps_its_client_address() {
    let origin = Origin::start(|request: http::Request<hyper::body::Incoming>| async move {
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        text(200, &forwarded)
    })
    .await;
    let config = parking_config(&origin, "[security]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .replace(
            "address = \"127.0.0.1:0\"\n",
            "address = \"127.0.0.1:0\"\nproxy_protocol = true\n",
        );
    let proxy = Proxy::start(&config).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut first = b"PROXY TCP4 203.0.113.9 192.0.2.1 5555 80\r\n".to_vec();
    first.extend_from_slice(&get("/one"));
    conn.send(&first).await;
    assert_eq!(conn.response().await.body, b"203.0.113.9");
    wait_parked(&proxy, 1).await;
    // After the park, the connection still speaks for the client the header named.
    conn.send(&get("/two")).await;
    assert_eq!(conn.response().await.body, b"203.0.113.9");
}
