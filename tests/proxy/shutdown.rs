//! Graceful shutdown: requests in flight finish, new connections are refused, the grace period
//! is a hard limit; and the real binary does the same on SIGTERM and exits 0.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::support::*;

/// Far above every configured duration here; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(20);

/// An origin that answers after `delay`.
async fn slow_origin(delay: Duration) -> Origin {
    Origin::start(move |_request| async move {
        tokio::time::sleep(delay).await;
        text(200, "finished")
    })
    .await
}

/// An origin that answers only once the returned gate is opened (`add_permits`), so a request
/// can be held in flight for exactly as long as a test needs.
async fn gated_origin() -> (Origin, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let origin = {
        let gate = gate.clone();
        Origin::start(move |_request| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await;
                text(200, "finished")
            }
        })
        .await
    };
    (origin, gate)
}

/// Resolves once `addr` refuses connections (the listener is closed). While the listener is
/// closing, a connect may still succeed or be reset; only a refusal counts.
async fn refused(addr: std::net::SocketAddr) -> std::io::ErrorKind {
    loop {
        match TcpStream::connect(addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                return error.kind();
            }
            Err(_) => {}
            Ok(stream) => drop(stream),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a GET of `url` in the background and waits until `origin` has received it.
async fn request_in_flight(
    url: String,
    origin: &Origin,
) -> tokio::task::JoinHandle<reqwest::Result<(u16, String)>> {
    let before = origin.count();
    let request = tokio::spawn(async move {
        let response = client().get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    });
    assert!(
        eventually(LIMIT, || origin.count() > before).await,
        "the request did not reach the origin"
    );
    request
}

#[tokio::test]
async fn in_flight_requests_complete_after_shutdown_begins() {
    let (origin, gate) = gated_origin().await;
    let mut proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let addr = proxy.addr;
    let request = request_in_flight(proxy.url("/slow"), &origin).await;
    let server = proxy.server.take().expect("running");
    let shutdown = tokio::spawn(server.shutdown());
    // Shutdown has begun once the listener is closed; only then may the origin answer.
    tokio::time::timeout(LIMIT, refused(addr))
        .await
        .expect("the listener closes");
    assert!(!request.is_finished(), "the request is still in flight");
    gate.add_permits(1);
    let (status, body) = tokio::time::timeout(LIMIT, request)
        .await
        .expect("the request ends")
        .unwrap()
        .expect("the request completes");
    assert_eq!((status, body.as_str()), (200, "finished"));
    let drained = tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(drained, "everything finished within the grace period");
}

#[tokio::test]
async fn in_flight_requests_complete_when_shutdown_is_awaited_directly() {
    // Through `Proxy::shutdown()`, with an origin that takes a second.
    let origin = slow_origin(Duration::from_secs(1)).await;
    let mut proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let request = request_in_flight(proxy.url("/slow"), &origin).await;
    let drained = tokio::time::timeout(LIMIT, proxy.shutdown())
        .await
        .expect("shutdown finishes");
    let (status, body) = request.await.unwrap().expect("the request completes");
    assert_eq!((status, body.as_str()), (200, "finished"));
    assert!(drained, "everything finished within the grace period");
}

#[tokio::test]
async fn new_connections_are_refused_once_shutdown_begins() {
    let (origin, gate) = gated_origin().await;
    let mut proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let addr = proxy.addr;
    let request = request_in_flight(proxy.url("/slow"), &origin).await;
    let server = proxy.server.take().expect("running");
    let shutdown = tokio::spawn(server.shutdown());

    // While the held request keeps the proxy draining, the listener is already closed.
    tokio::time::timeout(LIMIT, refused(addr))
        .await
        .expect("the listener closes: connections are refused");
    let error = client()
        .get(format!("http://{addr}/new"))
        .send()
        .await
        .expect_err("no new requests during shutdown");
    assert!(error.is_connect(), "{error:?}");
    assert!(
        !shutdown.is_finished(),
        "still draining the request in flight"
    );

    gate.add_permits(1);
    let (status, body) = request.await.unwrap().expect("the request completes");
    assert_eq!((status, body.as_str()), (200, "finished"));
    let drained = tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(drained);
    assert_eq!(
        origin.count(),
        1,
        "only the first request reached the origin"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let origin = Origin::echo().await;
    let mut proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    // A reqwest client keeps its connection open after the response.
    let client = client();
    let response = client.get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "/x");
    let mut raw = TcpStream::connect(proxy.addr).await.unwrap();
    let drained = tokio::time::timeout(LIMIT, proxy.shutdown())
        .await
        .expect("shutdown finishes");
    assert!(
        drained,
        "idle connections are closed at once, not waited for"
    );
    assert!(closed_within(&mut raw, LIMIT).await);
}

#[tokio::test]
async fn requests_longer_than_the_grace_period_are_cut() {
    let (origin, _gate) = gated_origin().await;
    let mut proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[server]\ngrace_period = \"500ms\"\n",
    ))
    .await;
    let request = request_in_flight(proxy.url("/forever"), &origin).await;
    let drained = tokio::time::timeout(LIMIT, proxy.shutdown())
        .await
        .expect("shutdown gives up after the grace period");
    assert!(
        !drained,
        "the request could not finish within the grace period"
    );
    let outcome = tokio::time::timeout(LIMIT, request)
        .await
        .expect("the client's request ends")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the connection is closed without a response: {outcome:?}"
    );
}

#[tokio::test]
async fn the_binary_finishes_in_flight_requests_on_sigterm_and_exits_0() {
    let origin = slow_origin(Duration::from_secs(1)).await;
    let backend = origin.addr;
    let mut proxy = BinaryProxy::start(|listen| {
        format!(
            "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"{listen}\"\n\n\
             [pool.app]\nbackends = [\"{backend}\"]\n\n[[route]]\npool = \"app\"\n"
        )
    })
    .await;
    let request = request_in_flight(proxy.url("/slow"), &origin).await;
    proxy.terminate();
    let (status, body) = tokio::time::timeout(LIMIT, request)
        .await
        .expect("the request ends")
        .unwrap()
        .expect("the request completes");
    assert_eq!((status, body.as_str()), (200, "finished"));
    let status = proxy.wait_exit(LIMIT).await;
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "exit status {status:?}; log:\n{}",
        proxy.stderr().join("\n")
    );
    assert!(
        proxy.stderr().iter().any(|l| l.contains("shutting down")),
        "{}",
        proxy.stderr().join("\n")
    );
}
