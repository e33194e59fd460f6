//! HTTP/2 abuse from clients: rapid reset, CONTINUATION floods, oversized header lists and
//! streams over the concurrency limit. Each attack is sent as raw frames, and each test checks
//! both that the attacker's connection is dealt with and that well-behaved clients are served.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::support::raw_h2::*;
use crate::support::*;

/// Far above anything configured here; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(10);

/// `ENHANCE_YOUR_CALM` and `REFUSED_STREAM` error codes (RFC 9113 section 7).
const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;
/// `CANCEL`, what browsers send when they give up on a stream.
const CANCEL: u32 = 0x8;

/// Reads until the server's GOAWAY (returned) or the end of the connection.
async fn goaway(h2: &mut RawH2) -> Option<Frame> {
    h2.read_until(LIMIT, |f| f.0 == GOAWAY)
        .await
        .into_iter()
        .find(|f| f.0 == GOAWAY)
}

/// The proxy still serves a fresh client over HTTP/2.
async fn still_serves(proxy: &Proxy) {
    let response = h2_client()
        .get(proxy.url("/healthy"))
        .send()
        .await
        .expect("a well-behaved client is served");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
}

/// `count` streams, each opened and cancelled at once (streams 1, 3, 5, ...).
fn rapid_reset(count: u32) -> Vec<u8> {
    (0..count)
        .flat_map(|n| {
            let id = 2 * n + 1;
            let mut pair = frame(HEADERS, END_HEADERS | END_STREAM, id, &get_block("/reset"));
            pair.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            pair
        })
        .collect()
}

#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    // CVE-2023-44487: open a stream and cancel it at once, a thousand times, in one write.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    h2.send(&rapid_reset(1000)).await;
    let away = goaway(&mut h2).await.expect("the server sends GOAWAY");
    assert_eq!(error_code(&away), Some(ENHANCE_YOUR_CALM), "{away:?}");
    assert!(
        closed_within(&mut h2.stream, LIMIT).await,
        "the attacker's connection is closed"
    );
    assert!(
        origin.count() < 1000,
        "cancelled streams must not all reach the backend: {}",
        origin.count()
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn the_rapid_reset_allowance_is_configurable() {
    // A client cancelling a few streams (a browser navigating away) is within the default, and
    // well within a raised allowance: no GOAWAY, and the connection goes on serving.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[server]\nh2_max_pending_reset_streams = 2000\n",
    ))
    .await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    h2.send(&rapid_reset(1000)).await;
    h2.get(2001, "/after").await;
    assert_eq!(h2.body(2001).await, "/after");
}

#[tokio::test]
async fn a_continuation_flood_gets_goaway() {
    // CVE-2024-27316 class: a header block that never ends, sent as endless CONTINUATION
    // frames. The server must give up long before ten thousand of them, without buffering them.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    let mut flood = frame(HEADERS, END_STREAM, 1, &get_block("/never"));
    let pad: Vec<u8> = [0x00, 0x05]
        .iter()
        .chain(b"x-pad")
        .chain(&[0x10])
        .chain(&[b'p'; 16])
        .copied()
        .collect();
    for _ in 0..10_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &pad));
    }
    h2.send(&flood).await;
    let away = goaway(&mut h2).await.expect("the server sends GOAWAY");
    assert_eq!(error_code(&away), Some(ENHANCE_YOUR_CALM), "{away:?}");
    assert!(closed_within(&mut h2.stream, LIMIT).await);
    assert_eq!(
        origin.count(),
        0,
        "the endless request never reached the backend"
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn an_h2_header_list_over_the_limit_gets_431() {
    // 300 headers of 100-byte values: about 40 KiB of header list against the 32 KiB default,
    // in a properly ended block spread over CONTINUATION frames.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    let mut block = get_block("/big");
    for n in 0..300 {
        let name = format!("x-pad-{n:03}");
        block.push(0x00);
        block.push(u8::try_from(name.len()).expect("short name"));
        block.extend_from_slice(name.as_bytes());
        block.push(100);
        block.extend_from_slice(&[b'v'; 100]);
    }
    let mut chunks = block.chunks(8192);
    let mut bytes = frame(
        HEADERS,
        END_STREAM,
        1,
        chunks.next().expect("a first chunk"),
    );
    let rest: Vec<&[u8]> = chunks.collect();
    for (i, chunk) in rest.iter().enumerate() {
        let flags = if i + 1 == rest.len() { END_HEADERS } else { 0 };
        bytes.extend(frame(CONTINUATION, flags, 1, chunk));
    }
    h2.send(&bytes).await;
    let frames = h2
        .read_until(LIMIT, |f| f.2 == 1 && matches!(f.0, HEADERS | RST_STREAM))
        .await;
    let answer = frames.last().expect("an answer on stream 1");
    assert_eq!(answer.0, HEADERS, "a response, not a reset: {frames:?}");
    // `:status 431` is not in HPACK's static table: it comes as a literal, its value "431"
    // either plain or Huffman-coded (length byte 0x83, then 011010 011001 00001 + padding).
    let block = &answer.3;
    assert!(
        block.windows(3).any(|w| w == b"431")
            || block.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff]),
        "the response is 431: {answer:?}"
    );
    assert_eq!(origin.count(), 0);
    // The stream was refused, not the connection: it still serves.
    h2.get(3, "/after").await;
    assert_eq!(h2.body(3).await, "/after");
}

#[tokio::test]
async fn streams_over_the_concurrency_limit_are_refused() {
    // Two streams may be open at once; the origin holds them, so a third is over the limit.
    let gate = Arc::new(Semaphore::new(0));
    let origin = {
        let gate = gate.clone();
        Origin::start(move |request| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await;
                text(200, request.uri().path())
            }
        })
        .await
    };
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[server]\nh2_max_concurrent_streams = 2\n",
    ))
    .await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    h2.get(1, "/one").await;
    h2.get(3, "/two").await;
    h2.get(5, "/three").await;
    let frames = h2.read_until(LIMIT, |f| f.0 == RST_STREAM).await;
    let reset = frames.last().expect("a reset");
    assert_eq!((reset.0, reset.2), (RST_STREAM, 5), "{frames:?}");
    assert_eq!(error_code(reset), Some(REFUSED_STREAM));
    gate.add_permits(10);
    assert_eq!(h2.body(1).await, "/one");
    assert_eq!(h2.body(3).await, "/two");
    assert_eq!(
        origin.count(),
        2,
        "the refused stream never reached the backend"
    );
}

/// `count` requests the server must refuse with a stream reset of its own: HEADERS without
/// `:path` (RFC 9113 section 8.3.1 makes that malformed).
fn malformed_requests(count: u32) -> Vec<u8> {
    let block = [0x82, 0x86, 0x01, 6, b'a', b'.', b't', b'e', b's', b't'];
    (0..count)
        .flat_map(|n| frame(HEADERS, END_HEADERS | END_STREAM, 2 * n + 1, &block))
        .collect()
}

#[tokio::test]
async fn streams_the_server_must_reset_are_bounded_per_connection() {
    // CVE-2025-8671 ("MadeYouReset"): make the server reset stream after stream by sending
    // malformed requests. Past `h2_max_local_error_resets`, the connection gets GOAWAY.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[server]\nh2_max_local_error_resets = 10\n",
    ))
    .await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    h2.send(&malformed_requests(50)).await;
    let away = goaway(&mut h2).await.expect("the server sends GOAWAY");
    assert_eq!(error_code(&away), Some(ENHANCE_YOUR_CALM), "{away:?}");
    assert!(closed_within(&mut h2.stream, LIMIT).await);
    assert_eq!(origin.count(), 0);
    still_serves(&proxy).await;
}

#[tokio::test]
async fn a_few_malformed_requests_only_cost_their_streams() {
    // Under the default allowance, each malformed request is reset on its own and the
    // connection goes on serving.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut h2 = RawH2::connect_acked(proxy.addr).await;
    h2.send(&malformed_requests(50)).await;
    h2.get(101, "/after").await;
    assert_eq!(h2.body(101).await, "/after");
    assert_eq!(origin.count(), 1);
}
