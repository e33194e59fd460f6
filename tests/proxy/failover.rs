//! A backend that dies costs users nothing: under steady GET load a backend is killed and
//! restarted, starts answering 503, or stops answering at all, and clients see only 200s while
//! active and passive health checks take it out and bring it back. Non-idempotent requests are
//! retried only when they never reached a backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::*;

/// Bound for each load phase to complete.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// Hard cap on the requests of one load run.
const MAX_REQUESTS: usize = 50_000;

/// Concurrent clients of the load runs.
const CONCURRENCY: usize = 8;

/// A config with one listener on port 0, the access log off, `pool` (the whole `[pool.app]`
/// section with its sub-tables, and any other top-level tables) and one route to `app`.
fn config(pool: &str) -> String {
    format!(
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n{pool}\n\n[[route]]\npool = \"app\"\n"
    )
}

/// Three killable origins a, b, c, each answering after `delay` so load phases take a while.
async fn three_origins(delay: Duration) -> [KillableOrigin; 3] {
    let origins = [
        KillableOrigin::start("a").await,
        KillableOrigin::start("b").await,
        KillableOrigin::start("c").await,
    ];
    for origin in &origins {
        origin.set_delay(delay);
    }
    origins
}

/// `backends = [...]` for `origins`.
fn backends(origins: &[&KillableOrigin]) -> String {
    let list: Vec<String> = origins.iter().map(|o| format!("\"{}\"", o.addr)).collect();
    format!("backends = [{}]", list.join(", "))
}

/// Keeps the load running until `origin` got at least `more` requests beyond `from` and
/// `total` requests completed (for at most 25 s), then stops it; returns whether `origin` got
/// them.
async fn run_until_served(
    load: &Load,
    origin: &KillableOrigin,
    from: usize,
    more: usize,
    total: usize,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let served = loop {
        if origin.traffic() >= from + more && load.done() >= total {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    load.stop();
    served
}

/// Asserts a load run completed with no failure at all.
fn assert_no_failures(done: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {done} requests failed; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_and_restarted_under_load_costs_no_request() {
    let [a, b, c] = three_origins(Duration::from_millis(10)).await;
    let proxy = Proxy::start(&config(&format!(
        r#"[pool.app]
{}

[pool.app.health_check]
path = "/health"
interval = "200ms"
timeout = "500ms"
fall = 1
rise = 1
"#,
        backends(&[&a, &b, &c])
    )))
    .await;
    let load = Load::start(proxy.url(""), CONCURRENCY, MAX_REQUESTS);

    load.wait_for(500, PHASE_LIMIT).await;
    assert!(b.traffic() > 0, "b served before it was killed");
    b.kill().await;
    let b_at_kill = b.traffic();
    let killed_at = tokio::time::Instant::now();

    // Dead for at least 500 requests and 1 s (five check intervals).
    load.wait_for(1000, PHASE_LIMIT).await;
    tokio::time::sleep_until(killed_at + Duration::from_secs(1)).await;
    assert_eq!(
        b.traffic(),
        b_at_kill,
        "a killed origin cannot receive requests"
    );
    b.restart().await;
    let b_at_restart = b.traffic();

    let recovered = run_until_served(&load, &b, b_at_restart, 20, 1500).await;
    let (done, failures) = load.finish().await;
    assert_no_failures(done, &failures);
    assert!(
        recovered,
        "the restarted backend got only {} requests after its restart",
        b.traffic() - b_at_restart
    );
    assert!(a.traffic() > 0 && c.traffic() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_is_retried_around_ejected_and_readmitted() {
    let [a, b, c] = three_origins(Duration::from_millis(5)).await;
    let proxy = Proxy::start(&config(&format!(
        r#"[pool.app]
{}

[pool.app.outlier]
ejection_time = "1s"
max_ejection_time = "2s"
"#,
        backends(&[&a, &b, &c])
    )))
    .await;
    let load = Load::start(proxy.url(""), CONCURRENCY, MAX_REQUESTS);

    load.wait_for(400, PHASE_LIMIT).await;
    assert!(b.traffic() > 0, "b served before it failed");
    let b_before = b.traffic();
    let done_before = load.done();
    b.set_mode(Mode::Fail503);

    load.wait_for(done_before + 900, PHASE_LIMIT).await;
    let failing_share = b.traffic() - b_before;
    b.set_mode(Mode::Ok);
    let b_at_recovery = b.traffic();

    let readmitted = run_until_served(&load, &b, b_at_recovery, 20, done_before + 1400).await;
    let (done, failures) = load.finish().await;
    assert_no_failures(done, &failures);
    assert!(
        failing_share < 90,
        "a backend answering 503 should be ejected after a few failures; it got {failing_share} \
         of the 900 requests sent meanwhile"
    );
    assert!(
        readmitted,
        "the backend answered 200 again but got only {} more requests",
        b.traffic() - b_at_recovery
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_answering_is_timed_out_retried_and_ejected() {
    let [a, b, c] = three_origins(Duration::from_millis(5)).await;
    let proxy = Proxy::start(&config(&format!(
        r#"[pool.app]
{}

[pool.app.outlier]
consecutive_failures = 2

[timeouts]
upstream_header = "1s"
"#,
        backends(&[&a, &b, &c])
    )))
    .await;
    let load = Load::start(proxy.url(""), CONCURRENCY, MAX_REQUESTS);

    load.wait_for(300, PHASE_LIMIT).await;
    assert!(b.traffic() > 0, "b served before it hung");
    let b_before = b.traffic();
    let done_before = load.done();
    b.set_mode(Mode::Hang);

    load.wait_for(done_before + 600, PHASE_LIMIT).await;
    load.stop();
    let hung_share = b.traffic() - b_before;
    let (done, failures) = load.finish().await;
    assert_no_failures(done, &failures);
    assert!(
        hung_share < 60,
        "a backend that never answers should be ejected after two timeouts; it got \
         {hung_share} of the 600 requests sent meanwhile"
    );
    assert!(a.traffic() > 0 && c.traffic() > 0);
}

/// POSTs `body` through `proxy`; returns (status, x-origin, x-body-len).
async fn post(client: &reqwest::Client, proxy: &Proxy, body: String) -> (u16, String, String) {
    let response = client
        .post(proxy.url("/submit"))
        .body(body)
        .send()
        .await
        .expect("POST through the proxy");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (origin, length) = (header("x-origin"), header("x-body-len"));
    let _ = response.bytes().await;
    (status, origin, length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_a_silent_backend_is_not_retried() {
    let silent = KillableOrigin::start("silent").await;
    silent.set_mode(Mode::Hang);
    let healthy = KillableOrigin::start("healthy").await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\n{}\n\n[timeouts]\nupstream_header = \"500ms\"\n",
        backends(&[&silent, &healthy])
    )))
    .await;
    let client = client();
    let mut reached_silent = false;
    for i in 0..6 {
        let (silent_before, healthy_before) =
            (silent.count_method("POST"), healthy.count_method("POST"));
        let (status, origin, _) = post(&client, &proxy, format!("order {i}")).await;
        if silent.count_method("POST") > silent_before {
            assert_eq!(
                silent.count_method("POST"),
                silent_before + 1,
                "the POST was sent to the silent backend twice"
            );
            assert_eq!(
                healthy.count_method("POST"),
                healthy_before,
                "a POST that timed out after being sent must not be retried elsewhere"
            );
            assert!(
                status == 504 || status == 502,
                "a POST that timed out at the backend: status {status}"
            );
            reached_silent = true;
            break;
        }
        assert_eq!((status, origin.as_str()), (200, "healthy"));
    }
    assert!(
        reached_silent,
        "no POST of six was sent to the silent backend"
    );
}

/// A backend that reads each request head, counts it, then closes with a reset.
async fn resetting_backend() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let task = {
        let heads = heads.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"POST ") {
                    heads.fetch_add(1, Ordering::SeqCst);
                }
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
            }
        })
    };
    (addr, heads, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reset_by_its_backend_is_not_retried() {
    let (resetter, posts, task) = resetting_backend().await;
    let healthy = KillableOrigin::start("healthy").await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [\"{resetter}\", \"{}\"]\n",
        healthy.addr
    )))
    .await;
    let client = client();
    let mut reached_resetter = false;
    for i in 0..6 {
        let (reset_before, healthy_before) =
            (posts.load(Ordering::SeqCst), healthy.count_method("POST"));
        let (status, origin, _) = post(&client, &proxy, format!("order {i}")).await;
        if posts.load(Ordering::SeqCst) > reset_before {
            assert_eq!(
                posts.load(Ordering::SeqCst),
                reset_before + 1,
                "the POST was sent to the resetting backend twice"
            );
            assert_eq!(
                healthy.count_method("POST"),
                healthy_before,
                "a POST reset after being sent must not be retried elsewhere"
            );
            assert_eq!(status, 502, "a POST reset by the backend");
            reached_resetter = true;
            break;
        }
        assert_eq!((status, origin.as_str()), (200, "healthy"));
    }
    task.abort();
    assert!(
        reached_resetter,
        "no POST of six was sent to the resetting backend"
    );
}

#[tokio::test]
async fn a_post_to_a_refused_backend_is_retried_on_another() {
    let dead = dead_address().await;
    let healthy = KillableOrigin::start("healthy").await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [\"{dead}\", \"{}\"]\n",
        healthy.addr
    )))
    .await;
    let client = client();
    for i in 0..6 {
        let body = format!("order number {i}");
        let length = body.len().to_string();
        let (status, origin, received) = post(&client, &proxy, body).await;
        assert_eq!(
            (status, origin.as_str()),
            (200, "healthy"),
            "a POST whose connect was refused never left the proxy and should be retried"
        );
        assert_eq!(
            received, length,
            "the retried POST arrives with its whole body"
        );
    }
    assert_eq!(healthy.count_method("POST"), 6);
}
