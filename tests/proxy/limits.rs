//! Connection limits: `max_connections`, `max_connections_per_ip` and `new_connections_per_ip`
//! close excess connections at accept without a word; `max_requests_per_ip` answers excess
//! requests with 429; `server.max_requests_per_connection` ends keep-alive connections (HTTP/1.1
//! `Connection: close`, HTTP/2 GOAWAY); refusals are counted in the metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::support::*;

/// Only a bound for liveness; nothing here waits on a timer.
const LIMIT: Duration = Duration::from_secs(10);

/// The config of a proxy in front of `origin` with `listener` keys on the listener and `extra`
/// appended (a `[server]` table, say).
fn limited(origin: SocketAddr, listener: &str, extra: &str) -> String {
    single_pool_config(&[origin], extra).replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\n{listener}\n"),
        1,
    )
}

/// A connection from `source` (any port) to `proxy`.
async fn connect_from(source: &str, proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source address"))
        .expect("bind the client socket");
    socket.connect(proxy).await.expect("connect")
}

/// A keep-alive connection that has had one request answered: accepted and being served.
async fn served_conn(mut stream: TcpStream) -> TcpStream {
    assert_eq!(fetch(&mut stream, "/first").await, "/first");
    stream
}

/// Sends a request on a raw connection; the body of the 200 answer, or the whole answer when
/// it is not a 200 (empty when the connection was closed).
async fn fetch(stream: &mut TcpStream, path: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let response = read_one_response(stream, LIMIT).await;
    match response.split_once("\r\n\r\n") {
        Some((_, body)) if status_of(&response) == 200 => body.to_owned(),
        _ => response,
    }
}

async fn get(conn: &mut RawConn, path: &str) -> RawResponse {
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
        .await;
    conn.response().await
}

/// True when the proxy closes `stream` without sending a byte.
async fn refused(stream: &mut TcpStream) -> bool {
    read_until_closed(stream, LIMIT).await.as_deref() == Some("")
}

fn refusals(proxy: &Proxy, reason: &str) -> u64 {
    proxy.metric(
        "gatehouse_connections_refused_total",
        &[("listener", "127.0.0.1:0"), ("reason", reason)],
    )
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_unanswered() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited(origin.addr, "max_connections = 2", "")).await;
    let mut first = served_conn(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let mut second = served_conn(TcpStream::connect(proxy.addr).await.unwrap()).await;

    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(refused(&mut third).await, "the third connection was served");
    assert_eq!(refusals(&proxy, "limit"), 1);
    assert_eq!(refusals(&proxy, "per_ip"), 0);

    // The two held connections are untouched.
    assert_eq!(fetch(&mut first, "/again").await, "/again");
    assert_eq!(fetch(&mut second, "/again").await, "/again");

    // A closed connection gives its place back (once the proxy has seen it close).
    drop(first);
    let mut replaced = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        if fetch(&mut stream, "/x").await == "/x" {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        replaced,
        "the place of the closed connection was not given back"
    );
}

#[tokio::test]
async fn the_per_client_cap_refuses_one_address_and_not_another() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited(origin.addr, "max_connections_per_ip = 2", "")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(served_conn(connect_from("127.0.0.1", proxy.addr).await).await);
    }
    let mut third = connect_from("127.0.0.1", proxy.addr).await;
    assert!(
        refused(&mut third).await,
        "a third connection from 127.0.0.1 was served"
    );
    assert_eq!(refusals(&proxy, "per_ip"), 1);

    // Another client address has its own count.
    let mut other = served_conn(connect_from("127.0.0.2", proxy.addr).await).await;
    assert_eq!(fetch(&mut other, "/other").await, "/other");
    for conn in &mut held {
        assert_eq!(fetch(conn, "/still").await, "/still");
    }
    assert_eq!(refusals(&proxy, "per_ip"), 1);
    assert_eq!(refusals(&proxy, "limit"), 0);
}

#[tokio::test]
async fn new_connections_past_the_rate_are_closed() {
    let origin = Origin::echo().await;
    // Two at once, then one every 30 s: the test never waits long enough for a refill.
    let proxy = Proxy::start(&limited(
        origin.addr,
        "new_connections_per_ip = \"2/m\"\nnew_connections_burst = 2",
        "",
    ))
    .await;
    let first = served_conn(connect_from("127.0.0.1", proxy.addr).await).await;
    let _second = served_conn(connect_from("127.0.0.1", proxy.addr).await).await;
    let mut third = connect_from("127.0.0.1", proxy.addr).await;
    assert!(
        refused(&mut third).await,
        "the third new connection was served"
    );

    // A rate, not a cap: closing a connection does not bring the quota back.
    drop(first);
    let mut fourth = connect_from("127.0.0.1", proxy.addr).await;
    assert!(
        refused(&mut fourth).await,
        "the fourth new connection was served"
    );
    assert_eq!(refusals(&proxy, "rate"), 2);

    // Another client has its own bucket.
    served_conn(connect_from("127.0.0.2", proxy.addr).await).await;
}

#[tokio::test]
async fn the_listener_access_lists_count_as_refusals() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited(origin.addr, "deny = [\"127.0.0.2\"]", "")).await;
    let mut denied = connect_from("127.0.0.2", proxy.addr).await;
    assert!(refused(&mut denied).await);
    served_conn(connect_from("127.0.0.1", proxy.addr).await).await;
    assert_eq!(refusals(&proxy, "acl"), 1);
}

#[tokio::test]
async fn a_client_at_max_requests_per_ip_gets_429() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = {
        let gate = gate.clone();
        Origin::start(move |_request| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.expect("gate open").forget();
                text(200, "slow")
            }
        })
        .await
    };
    let proxy = Proxy::start(&limited(origin.addr, "max_requests_per_ip = 1", "")).await;

    let slow = tokio::spawn({
        let url = proxy.url("/slow");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    assert!(
        eventually(LIMIT, || origin.count() == 1).await,
        "the first request never reached the origin"
    );

    // A second connection, same client: the request is refused, the connection stays usable.
    let mut conn = RawConn::connect(proxy.addr).await;
    let response = get(&mut conn, "/second").await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        String::from_utf8_lossy(&response.body).contains("429 Too Many Requests"),
        "not Gatehouse's error page: {response:?}"
    );
    assert!(response.has("x-request-id"));
    assert_eq!(origin.count(), 1, "the refused request reached the origin");
    assert_eq!(
        proxy.metric(
            "gatehouse_requests_refused_total",
            &[("listener", "127.0.0.1:0"), ("reason", "per_ip")]
        ),
        1
    );

    // Over HTTP/2 the same.
    let h2 = h2_client().get(proxy.url("/h2")).send().await.unwrap();
    assert_eq!(h2.status(), 429);

    gate.add_permits(100);
    assert_eq!(
        tokio::time::timeout(LIMIT, slow).await.unwrap().unwrap(),
        "slow"
    );
    // With the first request done, the client may send again (its place is given back when the
    // proxy has finished the response, which may be just after the client has read it).
    let mut status = 0;
    for _ in 0..50 {
        status = get(&mut conn, "/third").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_http1_connection_closes_after_max_requests_per_connection() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited(
        origin.addr,
        "",
        "[server]\nmax_requests_per_connection = 3\n",
    ))
    .await;
    let mut conn = RawConn::connect(proxy.addr).await;
    for n in 1..=2 {
        let response = get(&mut conn, &format!("/{n}")).await;
        assert_eq!(response.status, 200);
        assert_ne!(
            response.header("connection").map(str::to_ascii_lowercase),
            Some("close".to_owned()),
            "response {n} ends the connection: {response:?}"
        );
    }
    let last = get(&mut conn, "/3").await;
    assert_eq!(last.status, 200);
    assert_eq!(last.body, b"/3");
    assert_eq!(last.header("connection"), Some("close"), "{last:?}");
    assert!(
        conn.closed_within(LIMIT).await,
        "the connection stayed open after its last request"
    );
    // A new connection starts a new count.
    let mut fresh = RawConn::connect(proxy.addr).await;
    assert_eq!(get(&mut fresh, "/4").await.header("connection"), None);
}

#[tokio::test]
async fn an_http2_connection_gets_goaway_after_max_requests_per_connection() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited(
        origin.addr,
        "",
        "[server]\nmax_requests_per_connection = 2\n",
    ))
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    for n in 1..=2 {
        let request = http::Request::get(format!("http://a.test/{n}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("/{n}").as_bytes());
    }
    // The proxy sent GOAWAY: the connection ends once its streams are done.
    let ended = tokio::time::timeout(LIMIT, connection).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the HTTP/2 connection did not end: {ended:?}"
    );
    // Clients that reconnect are served as usual.
    let response = h2_client().get(proxy.url("/again")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "/again");
}

#[test]
fn limits_of_zero_and_bad_rates_are_config_errors() {
    let parse = |listener: &str| {
        let text = limited("127.0.0.1:9".parse().unwrap(), listener, "");
        gatehouse::config::parse(Path::new("test.toml"), &text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(parse("max_connections = 0").contains("max_connections must be at least 1"));
    assert!(parse("max_connections_per_ip = 0").contains("max_connections_per_ip must be"));
    assert!(parse("max_requests_per_ip = 0").contains("max_requests_per_ip must be"));
    assert!(parse("max_connections = 10\nmax_connections_per_ip = 20").contains("never applies"));
    assert!(parse("new_connections_per_ip = \"2/x\"").contains("new_connections_per_ip"));
    assert!(parse("new_connections_burst = 3").contains("needs new_connections_per_ip"));
    assert!(
        parse("new_connections_per_ip = \"2/s\"\nnew_connections_burst = 0")
            .contains("new_connections_burst must be at least 1")
    );
    assert_eq!(
        parse(
            "max_connections = 100\nmax_connections_per_ip = 10\nmax_requests_per_ip = 20\n\
             new_connections_per_ip = \"20/s\"\nnew_connections_burst = 40"
        ),
        ""
    );
    let server = |value: &str| {
        let text = single_pool_config(
            &["127.0.0.1:9".parse().unwrap()],
            &format!("[server]\nmax_requests_per_connection = {value}\n"),
        );
        gatehouse::config::parse(Path::new("test.toml"), &text).is_ok()
    };
    assert!(server("0"));
    assert!(server("1000"));
    assert!(!server("-1"));
}
