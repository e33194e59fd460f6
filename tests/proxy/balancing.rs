//! Load balancing across a pool: smooth weighted round robin, least requests, peak EWMA,
//! consistent hashing (also across a reload), sticky cookies, backup backends, per-backend
//! connection limits (circuit breaking), active health checks, and the config errors of all
//! these settings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::support::*;

/// A config with one listener on port 0, the access log off, `pool` (the whole `[pool.app]`
/// section, sub-tables included) and one route to `app`.
fn config(pool: &str) -> String {
    format!(
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n{pool}\n\n[[route]]\npool = \"app\"\n"
    )
}

/// `"ADDR", "ADDR", ...` for a `backends` list.
fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A 200 response naming its origin in `x-origin` and the body.
fn named_response(name: &'static str) -> http::Response<OriginBody> {
    let mut response = text(200, name);
    response
        .headers_mut()
        .insert("x-origin", http::HeaderValue::from_static(name));
    response
}

/// What the tests look at in a response.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `x-origin`, or "" when absent.
    origin: String,
    /// `Set-Cookie` values, in order.
    cookies: Vec<String>,
}

/// GET `path` with extra `headers`.
async fn get(
    client: &reqwest::Client,
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client.get(proxy.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request through the proxy");
    let status = response.status().as_u16();
    let origin = response
        .headers()
        .get("x-origin")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let _ = response.bytes().await.expect("response body");
    Answer {
        status,
        origin,
        cookies,
    }
}

/// Sends GETs (one every 50 ms) until one is answered by `name` or `limit` passes; returns
/// whether that happened and the statuses of every non-200 answer on the way.
async fn until_served_by(
    client: &reqwest::Client,
    proxy: &Proxy,
    name: &str,
    limit: Duration,
) -> (bool, Vec<u16>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut errors = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let answer = get(client, proxy, "/probe", &[]).await;
        if answer.status != 200 {
            errors.push(answer.status);
        } else if answer.origin == name {
            return (true, errors);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (false, errors)
}

/// Requests `origin` saw other than health checks (paths under `/health`).
fn traffic(origin: &Origin) -> usize {
    origin
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| !s.uri.path().starts_with("/health"))
        .count()
}

/// Health checks (paths under `/health`) `origin` saw.
fn checks(origin: &Origin) -> usize {
    origin
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri.path().starts_with("/health"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn weighted_round_robin_splits_sequential_requests_exactly_and_smoothly() {
    let (a, b, c) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    );
    let proxy = Proxy::start(&config(&format!(
        r#"[pool.app]
backends = [{{ address = "{}", weight = 1 }}, {{ address = "{}", weight = 2 }}, {{ address = "{}", weight = 3 }}]
balance = "round_robin"
"#,
        a.addr, b.addr, c.addr
    )))
    .await;
    let client = client();
    let mut order = Vec::new();
    for _ in 0..600 {
        let answer = get(&client, &proxy, "/rr", &[]).await;
        assert_eq!(answer.status, 200);
        order.push(answer.origin);
    }
    let counts = [a.count(), b.count(), c.count()];
    for (count, expected) in counts.iter().zip([100usize, 200, 300]) {
        assert!(
            count.abs_diff(expected) <= 2,
            "weights 1/2/3 over 600 sequential requests should give 100/200/300, got {counts:?}"
        );
    }
    // Smooth (nginx) WRR interleaves: weight 3 of 6 never means three or more in a row.
    let longest_run = order
        .chunk_by(|x, y| x == y)
        .map(|run| run.len())
        .max()
        .unwrap_or(0);
    assert!(
        longest_run <= 2,
        "smooth WRR should interleave backends; longest run of one backend was {longest_run}: {:?}",
        &order[..30]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_sends_new_requests_to_the_idle_backend() {
    // Backend "a" holds requests for /slow until the gate opens; "b" answers everything at once.
    let gate = Arc::new(Semaphore::new(0));
    let a = {
        let gate = gate.clone();
        Origin::start(move |request| {
            let gate = gate.clone();
            async move {
                if request.uri().path() == "/slow" {
                    let _permit = gate.acquire().await.expect("gate");
                }
                named_response("a")
            }
        })
        .await
    };
    let b = Origin::named("b").await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [{}]\nbalance = \"least_requests\"\n",
        list(&[a.addr, b.addr])
    )))
    .await;
    let proxy_url = proxy.url("/slow");
    let slow_at_a = || {
        a.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri.path() == "/slow")
            .count()
    };

    // Send /slow requests one at a time until one is held at "a" (those that land on "b"
    // finish at once).
    let finished = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for _ in 0..10 {
        let (url, done) = (proxy_url.clone(), finished.clone());
        slow.push(tokio::spawn(async move {
            let response = client().get(url).send().await.expect("slow request");
            let status = response.status().as_u16();
            done.fetch_add(1, Ordering::SeqCst);
            status
        }));
        let sent = slow.len();
        assert!(
            eventually(Duration::from_secs(10), || {
                finished.load(Ordering::SeqCst) + slow_at_a() == sent
            })
            .await,
            "a /slow request neither finished nor reached the holding backend"
        );
        if slow_at_a() > 0 {
            break;
        }
    }
    assert_eq!(
        slow_at_a(),
        1,
        "one /slow request should be held at backend a"
    );

    // "a" has one request in flight, "b" none: sequential requests all go to "b".
    let client = client();
    let mut to_b = 0;
    for _ in 0..20 {
        let answer = get(&client, &proxy, "/fast", &[]).await;
        assert_eq!(answer.status, 200);
        if answer.origin == "b" {
            to_b += 1;
        }
    }
    assert!(
        to_b >= 18,
        "least_requests should send (nearly) every request to the idle backend; b got {to_b} of 20"
    );

    gate.add_permits(1000);
    for task in slow {
        assert_eq!(task.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_keeps_traffic_away_from_a_slow_backend() {
    let fast1 = Origin::named("fast1").await;
    let fast2 = Origin::named("fast2").await;
    let slow = Origin::start(|_request| async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        named_response("slow")
    })
    .await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [{}]\nbalance = \"peak_ewma\"\n",
        list(&[fast1.addr, slow.addr, fast2.addr])
    )))
    .await;
    let client = client();
    for _ in 0..30 {
        assert_eq!(get(&client, &proxy, "/warm-up", &[]).await.status, 200);
    }
    let slow_before = slow.count();
    let load = Load::start(proxy.url(""), 4, 300);
    let (done, failures) = load.finish().await;
    assert_eq!(done, 300);
    assert!(failures.is_empty(), "{failures:?}");
    let to_slow = slow.count() - slow_before;
    assert!(
        to_slow < 30,
        "the slow backend should get under 10% of 300 requests after warm-up, got {to_slow} \
         (fast1 {}, fast2 {})",
        fast1.count(),
        fast2.count()
    );
}

/// The `[pool.app]` of the hash tests.
fn hash_pool(addrs: &[SocketAddr]) -> String {
    config(&format!(
        "[pool.app]\nbackends = [{}]\nbalance = \"hash\"\nhash_key = \"header:x-user\"\n",
        list(addrs)
    ))
}

#[tokio::test]
async fn hash_keeps_each_key_on_one_backend_and_a_removal_moves_only_its_keys() {
    let origins = [
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
        Origin::named("d").await,
    ];
    let addrs: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
    let proxy = Proxy::start(&hash_pool(&addrs)).await;
    let client = client();
    let mut placement: HashMap<String, String> = HashMap::new();
    for user in 0..50 {
        let user = format!("user-{user}");
        for _ in 0..4 {
            let answer = get(&client, &proxy, "/h", &[("x-user", &user)]).await;
            assert_eq!(answer.status, 200);
            let first = placement
                .entry(user.clone())
                .or_insert_with(|| answer.origin.clone());
            assert_eq!(
                *first, answer.origin,
                "{user} was sent to two backends before any change"
            );
        }
    }
    for name in ["a", "b", "c", "d"] {
        assert!(
            placement.values().any(|o| o == name),
            "no user of 50 hashed to backend {name}: {placement:?}"
        );
    }

    // Remove "d": only its users move, to the remaining backends.
    let text = hash_pool(&addrs[..3]);
    let new_config = gatehouse::config::parse(Path::new("test.toml"), &text).expect("valid");
    proxy
        .server
        .as_ref()
        .unwrap()
        .reload(&new_config)
        .await
        .expect("reload");
    let d_before = origins[3].count();
    let mut moved = 0;
    for user in 0..50 {
        let user = format!("user-{user}");
        let before = placement[&user].clone();
        let mut after = None;
        for _ in 0..2 {
            let answer = get(&client, &proxy, "/h", &[("x-user", &user)]).await;
            assert_eq!(answer.status, 200);
            assert_eq!(
                *after.get_or_insert_with(|| answer.origin.clone()),
                answer.origin,
                "{user} was sent to two backends after the reload"
            );
        }
        let after = after.unwrap();
        if before == "d" {
            assert_ne!(after, "d", "{user} still went to the removed backend");
            moved += 1;
        } else {
            assert_eq!(
                after, before,
                "{user} moved from {before} to {after} though {before} is still in the pool"
            );
        }
    }
    assert_eq!(
        origins[3].count(),
        d_before,
        "the removed backend got traffic"
    );
    assert!(
        (3..=25).contains(&moved),
        "about a quarter of the users should have been on the removed backend; {moved} of 50 were"
    );
}

#[tokio::test]
async fn hash_without_the_key_still_answers() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    for key in ["header:x-user", "cookie:sid"] {
        let proxy = Proxy::start(&config(&format!(
            "[pool.app]\nbackends = [{}]\nbalance = \"hash\"\nhash_key = \"{key}\"\n",
            list(&[a.addr, b.addr])
        )))
        .await;
        let client = client();
        for _ in 0..10 {
            let answer = get(&client, &proxy, "/no-key", &[]).await;
            assert_eq!(answer.status, 200, "hash_key {key} absent from the request");
            assert!(answer.origin == "a" || answer.origin == "b");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sticky sessions and backups
// ---------------------------------------------------------------------------------------------

/// The value of the `gatehouse_sticky` cookie set in `answer`, checking its exact attributes.
fn sticky_cookie(answer: &Answer) -> Option<String> {
    let set = answer
        .cookies
        .iter()
        .find(|c| c.starts_with("gatehouse_sticky="))?;
    let value = set
        .strip_prefix("gatehouse_sticky=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    assert_eq!(
        *set,
        format!("gatehouse_sticky={value}; Path=/; HttpOnly; SameSite=Lax"),
        "sticky Set-Cookie attributes"
    );
    assert!(
        value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "the sticky cookie value should be 16 hex digits: {value:?}"
    );
    Some(value)
}

#[tokio::test]
async fn a_sticky_cookie_pins_the_backend_until_it_dies() {
    let origins = [
        KillableOrigin::start("a").await,
        KillableOrigin::start("b").await,
        KillableOrigin::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [{}]\n\n[pool.app.sticky]\nsecret = \"s3cret\"\n",
        list(&addrs)
    )))
    .await;
    let client = client();

    let first = get(&client, &proxy, "/s", &[]).await;
    assert_eq!(first.status, 200);
    let cookie = sticky_cookie(&first).expect("the first response sets the sticky cookie");
    // 16 hex digits cannot hold "127.0.0.1:PORT"; nor may they be its hex encoding.
    assert!(
        !cookie.to_ascii_lowercase().contains("7f000001"),
        "the cookie must not carry the backend address: {cookie}"
    );
    let pinned = first.origin.clone();
    let header = format!("gatehouse_sticky={cookie}");
    for _ in 0..20 {
        let answer = get(&client, &proxy, "/s", &[("cookie", &header)]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.origin, pinned, "the cookie should pin the backend");
        assert!(
            sticky_cookie(&answer).is_none(),
            "no new cookie while the pinned backend serves: {:?}",
            answer.cookies
        );
    }

    // A cookie naming no backend is replaced.
    let forged = get(
        &client,
        &proxy,
        "/s",
        &[("cookie", "gatehouse_sticky=0123456789abcdef")],
    )
    .await;
    assert_eq!(forged.status, 200);
    assert!(
        sticky_cookie(&forged).is_some(),
        "a cookie naming no backend should be replaced: {:?}",
        forged.cookies
    );

    // The pinned backend dies: the next request goes elsewhere and is re-pinned there.
    let dead = origins.iter().find(|o| o.name == pinned).unwrap();
    dead.kill().await;
    let moved = get(&client, &proxy, "/s", &[("cookie", &header)]).await;
    assert_eq!(
        moved.status, 200,
        "the pinned backend is down; the request should be served by another one"
    );
    assert_ne!(moved.origin, pinned);
    let new_cookie = sticky_cookie(&moved).expect("a new cookie naming the new backend");
    assert_ne!(new_cookie, cookie);
    let new_header = format!("gatehouse_sticky={new_cookie}");
    for _ in 0..5 {
        let answer = get(&client, &proxy, "/s", &[("cookie", &new_header)]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.origin, moved.origin, "the new cookie should pin");
    }
}

#[tokio::test]
async fn a_backup_serves_only_while_the_primary_is_down() {
    let primary = KillableOrigin::start("primary").await;
    let backup = Origin::named("backup").await;
    let proxy = Proxy::start(&config(&format!(
        r#"[pool.app]
backends = ["{}", {{ address = "{}", backup = true }}]

[pool.app.health_check]
path = "/health"
interval = "200ms"
timeout = "500ms"
fall = 1
rise = 1
"#,
        primary.addr, backup.addr
    )))
    .await;
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, &proxy, "/b", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.origin, "primary");
    }
    assert_eq!(
        traffic(&backup),
        0,
        "the backup must idle while the primary is up"
    );

    primary.kill().await;
    let (served, errors) =
        until_served_by(&client, &proxy, "backup", Duration::from_secs(10)).await;
    assert!(served, "the backup never served with the primary dead");
    assert!(
        errors.is_empty(),
        "with the primary dead, requests should fail over to the backup, got {errors:?}"
    );
    for _ in 0..10 {
        let answer = get(&client, &proxy, "/b", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.origin, "backup");
    }

    primary.restart().await;
    let (served, errors) =
        until_served_by(&client, &proxy, "primary", Duration::from_secs(20)).await;
    assert!(served, "traffic never went back to the recovered primary");
    assert!(errors.is_empty(), "{errors:?}");
    let backup_before = traffic(&backup);
    for _ in 0..20 {
        let answer = get(&client, &proxy, "/b", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.origin, "primary");
    }
    assert_eq!(traffic(&backup), backup_before);
}

// ---------------------------------------------------------------------------------------------
// Connection limits (circuit breaking)
// ---------------------------------------------------------------------------------------------

/// An origin that holds every request until `gate` gets permits.
async fn gated_origin(gate: &Arc<Semaphore>) -> Origin {
    let gate = gate.clone();
    Origin::start(move |_request| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.expect("gate");
            named_response("gated")
        }
    })
    .await
}

/// Spawns a GET of `url`; the task yields the status.
fn spawn_get(url: String) -> tokio::task::JoinHandle<u16> {
    tokio::spawn(async move {
        let response = client().get(url).send().await.expect("request");
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        status
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_without_a_queue_answers_503() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = gated_origin(&gate).await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [\"{}\"]\nmax_connections = 1\nmax_pending = 0\n",
        origin.addr
    )))
    .await;
    let held = spawn_get(proxy.url("/one"));
    assert!(eventually(Duration::from_secs(10), || origin.count() == 1).await);

    let second = tokio::time::timeout(
        Duration::from_secs(10),
        client().get(proxy.url("/two")).send(),
    )
    .await
    .expect("the over-limit request should be answered, not queued")
    .unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(
        origin.count(),
        1,
        "the over-limit request reached the backend"
    );
    assert!(!held.is_finished());

    gate.add_permits(1000);
    assert_eq!(held.await.unwrap(), 200);
    let third = client().get(proxy.url("/three")).send().await.unwrap();
    assert_eq!(third.status(), 200, "the freed slot should be usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_queues_up_to_max_pending_then_answers_503() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = gated_origin(&gate).await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [\"{}\"]\nmax_connections = 1\nmax_pending = 1\nconnect_timeout = \"20s\"\n",
        origin.addr
    )))
    .await;
    let held = spawn_get(proxy.url("/one"));
    assert!(eventually(Duration::from_secs(10), || origin.count() == 1).await);

    // Of two more, one waits in the queue and the other is refused.
    let (x, y) = (spawn_get(proxy.url("/x")), spawn_get(proxy.url("/y")));
    assert!(
        eventually(Duration::from_secs(10), || x.is_finished()
            || y.is_finished())
        .await,
        "with the queue full, one of the two requests should be refused at once"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !(x.is_finished() && y.is_finished()),
        "one request should still be waiting in the queue"
    );
    let (refused, queued) = if x.is_finished() { (x, y) } else { (y, x) };
    assert_eq!(refused.await.unwrap(), 503);
    assert_eq!(origin.count(), 1);

    gate.add_permits(1000);
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200, "the queued request is served");
    assert_eq!(origin.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_in_the_queue_is_bounded_by_the_connect_timeout() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = gated_origin(&gate).await;
    let proxy = Proxy::start(&config(&format!(
        "[pool.app]\nbackends = [\"{}\"]\nmax_connections = 1\nmax_pending = 1\nconnect_timeout = \"1s\"\n",
        origin.addr
    )))
    .await;
    let held = spawn_get(proxy.url("/one"));
    assert!(eventually(Duration::from_secs(10), || origin.count() == 1).await);
    let waiting = tokio::time::timeout(Duration::from_secs(15), spawn_get(proxy.url("/two")))
        .await
        .expect("a queued request must give up after the connect timeout")
        .unwrap();
    assert!(
        waiting == 503 || waiting == 504,
        "a request that waited out the connect timeout in the queue: {waiting}"
    );
    assert_eq!(origin.count(), 1);
    assert!(!held.is_finished());
    gate.add_permits(1000);
    assert_eq!(held.await.unwrap(), 200);
}

// ---------------------------------------------------------------------------------------------
// Active health checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unhealthy_backend_gets_no_traffic_until_its_check_passes() {
    // 0: /health answers 503; 1: 200 without the needle; 2: 200 "healthy".
    let state = Arc::new(AtomicU8::new(0));
    let flaky = {
        let state = state.clone();
        Origin::start(move |request| {
            let state = state.load(Ordering::SeqCst);
            async move {
                if request.uri().path() != "/health" {
                    return named_response("flaky");
                }
                match state {
                    0 => text(503, "down"),
                    1 => text(200, "warming up"),
                    _ => text(200, "all healthy"),
                }
            }
        })
        .await
    };
    let good = Origin::start(|request| async move {
        if request.uri().path() == "/health" {
            text(200, "all healthy")
        } else {
            named_response("good")
        }
    })
    .await;
    let proxy = Proxy::start(&config(&format!(
        r#"[pool.app]
backends = [{}]

[pool.app.health_check]
path = "/health"
body_contains = "healthy"
interval = "200ms"
timeout = "500ms"
rise = 2
fall = 1
"#,
        list(&[flaky.addr, good.addr])
    )))
    .await;
    assert!(
        checks(&flaky) >= 1,
        "the first check runs before the proxy serves"
    );
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, &proxy, "/a", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.origin, "good", "a backend failing its first check");
    }

    // A 200 without the expected body text is still unhealthy.
    let checks_before = checks(&flaky);
    state.store(1, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || checks(&flaky)
            >= checks_before + 4)
        .await,
        "health checks stopped"
    );
    for _ in 0..20 {
        let answer = get(&client, &proxy, "/b", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.origin, "good",
            "a check answer without `body_contains` must not pass"
        );
    }
    assert_eq!(traffic(&flaky), 0);

    state.store(2, Ordering::SeqCst);
    let (served, errors) = until_served_by(&client, &proxy, "flaky", Duration::from_secs(10)).await;
    assert!(
        served,
        "the backend never got traffic after passing its checks"
    );
    assert!(errors.is_empty(), "{errors:?}");
}

// ---------------------------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------------------------

/// A pool config with every balancing setting, as documented.
const FULL_POOL: &str = r#"[access_log]
enabled = false

[[listener]]
address = "127.0.0.1:0"

[pool.app]
backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }, { address = "127.0.0.1:9003", backup = true }]
balance = "hash"
hash_key = "header:x-user"
slow_start = "30s"
max_connections = 10
max_pending = 5
connect_timeout = "1s"

[pool.app.sticky]
cookie = "gatehouse_sticky"
secret = "s3cret"
max_age = "1h"

[pool.app.health_check]
kind = "http"
path = "/health"
method = "GET"
host = "x.test"
expect_status = "200,204,300-308"
body_contains = "ok"
interval = "5s"
timeout = "2s"
rise = 2
fall = 3

[pool.app.outlier]
consecutive_failures = 5
failure_statuses = [502, 503, 504]
ejection_time = "10s"
max_ejection_time = "5m"
max_ejected_percent = 50

[pool.app.retry]
tries = 3
statuses = [502, 503, 504]
non_idempotent = false
budget_percent = 20
min_retries_per_second = 10
buffer_body = "64KiB"

[timeouts]
upstream_header = "60s"

[[route]]
pool = "app"
"#;

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"));
    text[..at].matches('\n').count() + 1
}

/// Asserts that `text` is refused with an error on one of `lines` whose key (under
/// `pool.app`) or message mentions `word`.
fn assert_refused(name: &str, text: &str, lines: &[usize], word: &str) {
    let errors = match gatehouse::config::parse(Path::new("test.toml"), text) {
        Ok(_) => panic!("{name}: the config should be refused:\n{text}"),
        Err(errors) => errors,
    };
    let shown = errors.to_string();
    let found = errors.0.iter().find(|e| {
        lines.contains(&e.line)
            && e.key.starts_with("pool.app")
            && (e.key.contains(word) || e.message.to_lowercase().contains(word))
    });
    let error = found.unwrap_or_else(|| {
        panic!(
            "{name}: no error on line(s) {lines:?} in `pool.app...` mentioning {word:?}:\n{shown}"
        )
    });
    assert!(
        shown.contains(&format!(
            "test.toml:{}:{}: error in `",
            error.line, error.column
        )),
        "{name}: the message names the place: {shown}"
    );
}

#[test]
fn a_full_pool_config_is_accepted() {
    if let Err(errors) = gatehouse::config::parse(Path::new("test.toml"), FULL_POOL) {
        panic!("the documented pool settings should be accepted:\n{errors}");
    }
}

#[test]
fn bad_balancing_settings_are_refused_with_their_line() {
    let text = FULL_POOL.replace("balance = \"hash\"\n", "");
    assert_refused(
        "hash_key without hash",
        &text,
        &[line_of(&text, "hash_key =")],
        "hash",
    );

    let text = FULL_POOL.replace("weight = 3", "weight = 0");
    assert_refused("weight 0", &text, &[line_of(&text, "backends =")], "weight");

    let text = FULL_POOL.replace("\"127.0.0.1:9002\"", "\"127.0.0.1:9001\"");
    assert_refused(
        "duplicate backend",
        &text,
        &[line_of(&text, "backends =")],
        "backend",
    );

    let text = FULL_POOL.replace("max_connections = 10\n", "");
    assert_refused(
        "max_pending alone",
        &text,
        &[line_of(&text, "max_pending =")],
        "max_",
    );

    let text = FULL_POOL.replace("tries = 3", "tries = 0");
    assert_refused(
        "no tries",
        &text,
        &[
            line_of(&text, "[pool.app.retry]"),
            line_of(&text, "tries ="),
        ],
        "tries",
    );

    let text = FULL_POOL.replace("\"200,204,300-308\"", "\"abc\"");
    assert_refused(
        "bad expect_status",
        &text,
        &[
            line_of(&text, "[pool.app.health_check]"),
            line_of(&text, "expect_status ="),
        ],
        "status",
    );
}
