//! Per-key rate limits end to end: a burst passes and the next request gets Gatehouse's 429 page
//! with `Retry-After` and the draft-ietf-httpapi-ratelimit-headers fields; waiting `Retry-After`
//! lets requests through again; header keys are independent; a reload with the same limit keeps
//! the buckets and a changed limit starts afresh.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// One route `limited` to pool `app` with `rate_limit = { LIMIT }`, and one route `free` for
/// `/free` without a limit.
fn limited_config(origin: std::net::SocketAddr, limit: &str) -> String {
    single_pool_config(
        &[origin],
        &format!(
            "[[route]]\nname = \"free\"\npath_prefix = \"/free\"\npool = \"app\"\n\n\
             [[route]]\nname = \"limited\"\npool = \"app\"\nrate_limit = {{ {limit} }}\n"
        ),
    )
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

async fn get(client: &reqwest::Client, proxy: &Proxy, key: Option<&str>) -> reqwest::Response {
    let mut request = client.get(proxy.url("/limited"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.expect("response")
}

async fn reload(proxy: &Proxy, text: &str) {
    let config = gatehouse::config::parse(Path::new("test.toml"), text).expect("valid config");
    proxy
        .server
        .as_ref()
        .expect("proxy running")
        .reload(&config)
        .await
        .expect("reload");
}

#[tokio::test]
async fn a_burst_passes_then_429_with_retry_after_then_requests_pass_again() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited_config(origin.addr, "rate = \"5/s\", burst = 5")).await;
    let client = client();

    // 5/s refills one request every 200 ms: count how many pass before the first refusal and
    // allow for refills if the machine is slow.
    let started = Instant::now();
    let mut passed = 0;
    let mut refused = None;
    for i in 0..12 {
        let response = get(&client, &proxy, None).await;
        match response.status().as_u16() {
            200 => {
                if i == 0 {
                    assert_eq!(
                        header(&response, "ratelimit-policy").as_deref(),
                        Some("\"default\";q=5;w=1"),
                        "allowed responses advertise the policy"
                    );
                    assert_eq!(
                        header(&response, "ratelimit").as_deref(),
                        Some("\"default\";r=4;t=1"),
                        "allowed responses say what is left"
                    );
                }
                assert!(
                    header(&response, "retry-after").is_none(),
                    "Retry-After only on refusals"
                );
                passed += 1;
            }
            429 => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed();
    let refills = (elapsed.as_millis() / 200) as usize;
    assert!(
        (5..=5 + refills).contains(&passed),
        "{passed} requests passed in {elapsed:?} (burst 5, {refills} refills)"
    );
    let refused = refused.expect("a request over the burst is refused");
    assert_eq!(
        origin.count(),
        passed,
        "refused requests never reach the backend"
    );

    let retry_after: u64 = header(&refused, "retry-after")
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert_eq!(
        retry_after, 1,
        "the next request passes within 200 ms, rounded up"
    );
    assert_eq!(
        header(&refused, "ratelimit-policy").as_deref(),
        Some("\"default\";q=5;w=1")
    );
    assert_eq!(
        header(&refused, "ratelimit").as_deref(),
        Some("\"default\";r=0;t=1")
    );
    assert_eq!(
        header(&refused, "cache-control").as_deref(),
        Some("no-store")
    );
    let id = header(&refused, "x-request-id").expect("429 carries X-Request-Id");
    let body = refused.text().await.unwrap();
    assert!(body.contains("429 Too Many Requests"), "{body}");
    assert!(body.contains(&id), "the page names the request id: {body}");

    // The same page in JSON for clients that prefer it.
    let json = client
        .get(proxy.url("/limited"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    if json.status() == 429 {
        assert_eq!(
            header(&json, "content-type").as_deref(),
            Some("application/json")
        );
        assert!(json.text().await.unwrap().contains("\"status\":429"));
    }

    // A route without a limit is neither limited nor labelled.
    let free = client.get(proxy.url("/free")).send().await.unwrap();
    assert_eq!(free.status(), 200);
    assert!(header(&free, "ratelimit").is_none());
    assert!(header(&free, "ratelimit-policy").is_none());

    // Waiting as long as Retry-After says (bounded, should it ever say more) is enough.
    tokio::time::sleep(Duration::from_secs(retry_after.min(5)) + Duration::from_millis(20)).await;
    let again = get(&client, &proxy, None).await;
    assert_eq!(again.status(), 200, "a request after Retry-After passes");
    // A whole refill has passed since the burst: most of it is back.
    let remaining = header(&again, "ratelimit").expect("RateLimit on allowed responses");
    assert!(
        remaining.starts_with("\"default\";r="),
        "RateLimit is a draft-11 service limit item: {remaining}"
    );
}

#[tokio::test]
async fn header_keys_are_counted_apart_and_requests_without_one_share_a_bucket() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited_config(
        origin.addr,
        "rate = \"1/m\", burst = 2, key = \"header:x-api-key\"",
    ))
    .await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(get(&client, &proxy, Some("alice")).await.status(), 200);
    }
    assert_eq!(get(&client, &proxy, Some("alice")).await.status(), 429);
    // Another key has its own bucket, and spending it leaves alice's as it was.
    for _ in 0..2 {
        assert_eq!(get(&client, &proxy, Some("bob")).await.status(), 200);
    }
    assert_eq!(get(&client, &proxy, Some("bob")).await.status(), 429);
    let alice = get(&client, &proxy, Some("alice")).await;
    assert_eq!(alice.status(), 429);
    let retry_after: u64 = header(&alice, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "1/m: at most a minute to wait, said {retry_after}"
    );
    // Leaving the header out is no way around the limit: such requests share one bucket.
    for _ in 0..2 {
        assert_eq!(get(&client, &proxy, None).await.status(), 200);
    }
    assert_eq!(get(&client, &proxy, None).await.status(), 429);
    assert_eq!(origin.count(), 6);
}

#[tokio::test]
async fn the_buckets_survive_an_equal_reload_and_reset_when_the_rate_changes() {
    let origin = Origin::echo().await;
    // 1/m: nothing refills while the test runs.
    let text = limited_config(origin.addr, "rate = \"1/m\", burst = 2");
    let proxy = Proxy::start(&text).await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(get(&client, &proxy, None).await.status(), 200);
    }
    assert_eq!(get(&client, &proxy, None).await.status(), 429);

    reload(&proxy, &text).await;
    assert_eq!(
        get(&client, &proxy, None).await.status(),
        429,
        "a reload with the same limit must not hand out a fresh burst"
    );

    // The same limit written another way is the same limit.
    reload(
        &proxy,
        &limited_config(origin.addr, "rate = \"60/h\", burst = 2"),
    )
    .await;
    assert_eq!(get(&client, &proxy, None).await.status(), 429);

    let changed = limited_config(origin.addr, "rate = \"2/m\", burst = 2");
    reload(&proxy, &changed).await;
    for _ in 0..2 {
        assert_eq!(
            get(&client, &proxy, None).await.status(),
            200,
            "a changed limit starts from full buckets"
        );
    }
    assert_eq!(get(&client, &proxy, None).await.status(), 429);
}

#[tokio::test]
async fn a_refused_request_with_an_unread_body_closes_its_connection() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&limited_config(origin.addr, "rate = \"1/m\", burst = 1")).await;
    let request = b"POST /limited HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(request).await;
    assert_eq!(conn.response().await.status, 200);
    conn.send(request).await;
    let refused = conn.response().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(refused.has("retry-after"));
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    // Without a body the connection stays open for the client's next request.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /limited HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let refused = conn.response().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("connection"), None);
    conn.send(b"GET /free HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn refusals_are_counted_in_the_metrics() {
    let origin = Origin::echo().await;
    // A long window: the burst of 2 cannot refill while the test runs.
    let proxy = Proxy::start(&limited_config(origin.addr, "rate = \"2/h\", burst = 2")).await;
    let client = client();
    let mut refused = 0;
    for _ in 0..5 {
        if get(&client, &proxy, None).await.status() == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    let text = proxy
        .server
        .as_ref()
        .expect("proxy running")
        .control()
        .render_metrics();
    assert!(
        text.lines()
            .any(|l| l == "gatehouse_rate_limited_total{route=\"limited\",status=\"429\"} 3"),
        "{text}"
    );
}
