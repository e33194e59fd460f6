//! Forwarding basics: round robin, HTTP/2 from clients and to backends, the default route.

use std::sync::Arc;

use http::Response;

use crate::support::*;

#[tokio::test]
async fn round_robin_spreads_requests_evenly_over_the_pool() {
    let (a, b, c) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    );
    let proxy = Proxy::start(&single_pool_config(&[a.addr, b.addr, c.addr], "")).await;
    let client = client();
    let mut served = Vec::new();
    for _ in 0..9 {
        let response = client.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        served.push(response.text().await.unwrap());
    }
    assert_eq!(served, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
    assert_eq!((a.count(), b.count(), c.count()), (3, 3, 3));
}

#[tokio::test]
async fn http2_clients_are_served_over_h2c_and_backends_see_http11() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let response = h2_client().get(proxy.url("/h2?x=1")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "/h2?x=1");
    let seen = origin.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.headers["host"], proxy.addr.to_string().as_str());
}

#[tokio::test]
async fn http2_streams_answered_at_once_each_get_their_own_whole_response() {
    // The backend holds every request until all have come, then answers them together, so the
    // proxy has many streams' frames of one HTTP/2 connection to write at once (its writes are
    // coalesced: small ones gathered, large ones after what is held; the unit tests in
    // `server/write_coalesce.rs` pin the order). Every body must arrive whole and unmixed.
    const STREAMS: usize = 12;
    let arrived = Arc::new(tokio::sync::Barrier::new(STREAMS));
    let origin = Origin::start(move |request| {
        let arrived = arrived.clone();
        async move {
            arrived.wait().await;
            let n: usize = request.uri().path()[1..].parse().unwrap_or(0);
            Response::new(full(stream_body(n)))
        }
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let client = h2_client();
    let requests = (0..STREAMS).map(|n| {
        let (client, url) = (client.clone(), proxy.url(&format!("/{n}")));
        async move {
            let response = client.get(url).send().await.expect("response");
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            (n, response.bytes().await.expect("body"))
        }
    });
    for (n, body) in futures_util::future::join_all(requests).await {
        assert!(body == stream_body(n), "stream {n}: {} bytes", body.len());
    }
}

/// Stream `n`'s body: 10 B to 160 KiB (below the coalescing copy limit, around it, and far
/// above), its own letter, and its number at the end.
fn stream_body(n: usize) -> Vec<u8> {
    let size = [10, 1_000, 16_000, 17_000, 40_000, 160_000][n % 6];
    let mut body = vec![b'a' + (n as u8); size];
    body.extend_from_slice(format!("|{n}").as_bytes());
    body
}

#[tokio::test]
async fn h2c_pools_speak_http2_to_their_backends() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(
        &single_pool_config(&[origin.addr], "")
            .replace("[pool.app]\n", "[pool.app]\nprotocol = \"h2c\"\n"),
    )
    .await;
    let client = client();
    for _ in 0..3 {
        let response = client.get(proxy.url("/over-h2")).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "/over-h2");
    }
    let seen = origin.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        seen.uri.authority().map(|a| a.as_str().to_owned()),
        Some(proxy.addr.to_string()),
        ":authority is the client host"
    );
    assert!(
        seen.headers.get("host").is_none(),
        "no Host beside :authority"
    );
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
}

/// `single_pool_config` with the listener's `http1`/`http2` switched as given.
fn listener_protocols(origin: &Origin, protocols: &str) -> String {
    single_pool_config(&[origin.addr], "").replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\n{protocols}"),
        1,
    )
}

#[tokio::test]
async fn a_listener_with_http2_off_does_not_speak_h2c() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&listener_protocols(&origin, "http2 = false\n")).await;
    let refused = h2_client().get(proxy.url("/h2")).send().await;
    assert!(refused.is_err(), "h2c was served: {refused:?}");
    let response = client().get(proxy.url("/h1")).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(response.text().await.unwrap(), "/h1");
    assert_eq!(
        origin.count(),
        1,
        "only the HTTP/1.1 request reached the origin"
    );
}

#[tokio::test]
async fn a_listener_with_http1_off_speaks_only_h2c() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&listener_protocols(&origin, "http1 = false\n")).await;
    let refused = client().get(proxy.url("/h1")).send().await;
    assert!(refused.is_err(), "HTTP/1.1 was served: {refused:?}");
    let response = h2_client().get(proxy.url("/h2")).send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "/h2");
    assert_eq!(
        origin.count(),
        1,
        "only the HTTP/2 request reached the origin"
    );
}
