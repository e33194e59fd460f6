//! The HTTP cache end to end, through real origins that count their requests: hits with `Age`
//! and `Cache-Status`, responses that must not be stored, expiry and revalidation with 304,
//! `Vary` variants, request directives, request coalescing, the object size cap, HEAD from a
//! stored GET, 304s to clients, invalidation by unsafe methods, stale-if-error, and hits coded
//! for each client by the compression stage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Response};

use crate::support::*;

/// One route to pool `app` with the cache on (`[cache]` keys in `settings`).
fn cached_config(origin: std::net::SocketAddr, settings: &str) -> String {
    single_pool_config(&[origin], &format!("[cache]\nenabled = true\n{settings}\n"))
}

/// A 200 with `body` and the given headers.
fn answer(body: &str, headers: &[(&'static str, &str)]) -> Response<OriginBody> {
    let mut response = text(200, body);
    for (name, value) in headers {
        response
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).expect("header value"));
    }
    response
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

fn seen_on(origin: &Origin, path: &str) -> usize {
    origin
        .seen
        .lock()
        .expect("seen lock")
        .iter()
        .filter(|s| s.uri.path() == path)
        .count()
}

async fn get(
    client: &reqwest::Client,
    proxy: &Proxy,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let response = client.get(proxy.url(path)).send().await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.expect("body"), headers)
}

fn cache_status(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("cache-status")
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_cacheable_response_is_served_from_the_cache_with_age_and_cache_status() {
    let origin =
        Origin::start(|_| async { answer("hello", &[("cache-control", "max-age=60")]) }).await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();

    let (status, body, headers) = get(&client, &proxy, "/page").await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    let first = cache_status(&headers);
    assert!(
        first.starts_with("gatehouse; fwd=uri-miss; fwd-status=200"),
        "{first}"
    );
    assert!(first.contains("; stored"), "{first}");

    for _ in 0..3 {
        let (status, body, headers) = get(&client, &proxy, "/page").await;
        assert_eq!((status, body.as_str()), (200, "hello"));
        let hit = cache_status(&headers);
        assert!(hit.starts_with("gatehouse; hit; ttl="), "{hit}");
        let age: u64 = headers["age"]
            .to_str()
            .unwrap()
            .parse()
            .expect("Age is a number");
        assert!(age < 60, "Age {age}");
        assert_eq!(headers["content-length"], "5");
    }
    assert_eq!(
        origin.count(),
        1,
        "one origin request for four client requests"
    );

    // Another URL (the query counts) is another entry.
    let (_, body, _) = get(&client, &proxy, "/page?x=1").await;
    assert_eq!(body, "hello");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn no_store_private_and_set_cookie_responses_are_not_stored() {
    let origin = Origin::start(|request| async move {
        match request.uri().path() {
            "/no-store" => answer("a", &[("cache-control", "no-store, max-age=60")]),
            "/private" => answer("b", &[("cache-control", "private, max-age=60")]),
            "/cookie" => answer(
                "c",
                &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
            ),
            _ => answer("d", &[]),
        }
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    for (path, detail) in [
        ("/no-store", "no-store"),
        ("/private", "private"),
        ("/cookie", "set-cookie"),
    ] {
        for _ in 0..2 {
            let (status, _, headers) = get(&client, &proxy, path).await;
            assert_eq!(status, 200);
            let cs = cache_status(&headers);
            assert!(
                cs.contains(&format!("detail={detail}")) && !cs.contains("stored"),
                "{path}: {cs}"
            );
        }
        assert_eq!(
            seen_on(&origin, path),
            2,
            "{path} went to the origin each time"
        );
    }
    // The cookie still reaches the client that asked.
    let response = client.get(proxy.url("/cookie")).send().await.unwrap();
    assert_eq!(header(&response, "set-cookie").as_deref(), Some("id=1"));
}

#[tokio::test]
async fn set_cookie_can_be_stripped_from_the_stored_copy() {
    let origin = Origin::start(|_| async {
        answer(
            "c",
            &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "set_cookie = \"strip\"")).await;
    let client = client();
    let first = client.get(proxy.url("/c")).send().await.unwrap();
    assert_eq!(
        header(&first, "set-cookie").as_deref(),
        Some("id=1"),
        "the filling client gets it"
    );
    let second = client.get(proxy.url("/c")).send().await.unwrap();
    assert!(header(&second, "cache-status").unwrap().contains("hit"));
    assert_eq!(header(&second, "set-cookie"), None, "later clients do not");
    assert_eq!(origin.count(), 1);
}

/// An origin whose responses live one second and carry ETag "v1"; it answers 304 to a request
/// that has it.
async fn validating_origin() -> Origin {
    Origin::start(|request| async move {
        let validated = request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == b"\"v1\"");
        if validated {
            let mut response = text(304, "");
            *response.body_mut() = full("");
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("max-age=1"));
            response
                .headers_mut()
                .insert("etag", HeaderValue::from_static("\"v1\""));
            response
                .headers_mut()
                .insert("x-refreshed", HeaderValue::from_static("yes"));
            response
        } else {
            answer(
                "body-v1",
                &[("cache-control", "max-age=1"), ("etag", "\"v1\"")],
            )
        }
    })
    .await
}

#[tokio::test]
async fn an_expired_response_is_revalidated_with_304_and_refreshed() {
    let origin = validating_origin().await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    let (_, body, _) = get(&client, &proxy, "/doc").await;
    assert_eq!(body, "body-v1");
    assert!(
        origin.last().headers.get("if-none-match").is_none(),
        "a miss asks unconditionally"
    );

    // Past max-age=1 (generously: the Age arithmetic works in whole seconds).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body, headers) = get(&client, &proxy, "/doc").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "body-v1"),
        "the stored body, revalidated"
    );
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");
    let cs = cache_status(&headers);
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    assert_eq!(
        headers["x-refreshed"], "yes",
        "the 304's fields update the stored response"
    );

    // Fresh again after the 304.
    let (_, _, headers) = get(&client, &proxy, "/doc").await;
    assert!(
        cache_status(&headers).contains("hit"),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn request_no_cache_forces_revalidation_and_only_if_cached_misses_get_504() {
    let origin = Origin::start(|request| async move {
        if request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == b"\"v1\"")
        {
            let mut response = text(304, "");
            response
                .headers_mut()
                .insert("etag", HeaderValue::from_static("\"v1\""));
            return response;
        }
        answer(
            "fresh",
            &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();

    let response = client
        .get(proxy.url("/nothing-here"))
        .header("cache-control", "only-if-cached")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        header(&response, "cache-status")
            .unwrap()
            .contains("detail=only-if-cached")
    );
    assert_eq!(origin.count(), 0, "only-if-cached never goes forward");

    get(&client, &proxy, "/r").await;
    let response = client
        .get(proxy.url("/r"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cs = header(&response, "cache-status").unwrap();
    assert!(
        cs.contains("fwd=request") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    assert_eq!(response.text().await.unwrap(), "fresh");
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");

    let response = client
        .get(proxy.url("/r"))
        .header("cache-control", "only-if-cached")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "a stored fresh response answers only-if-cached"
    );
    let response = client
        .get(proxy.url("/r"))
        .header("pragma", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        origin.count(),
        3,
        "Pragma: no-cache without Cache-Control revalidates too"
    );
}

#[tokio::test]
async fn vary_keeps_one_variant_per_header_value() {
    let origin = Origin::start(|request| async move {
        let language = request
            .headers()
            .get("accept-language")
            .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
        answer(
            &language,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    let ask = |language: &'static str| {
        let client = client.clone();
        let url = proxy.url("/v");
        async move {
            let response = client
                .get(url)
                .header("accept-language", language)
                .send()
                .await
                .unwrap();
            let cs = header(&response, "cache-status").unwrap();
            (response.text().await.unwrap(), cs)
        }
    };
    assert_eq!(ask("en").await.0, "en");
    let (body, cs) = ask("fr").await;
    assert_eq!(body, "fr");
    assert!(cs.contains("fwd=vary-miss"), "{cs}");
    for _ in 0..2 {
        let (body, cs) = ask("en").await;
        assert_eq!(body, "en");
        assert!(cs.contains("hit"), "{cs}");
        assert_eq!(ask("fr").await.0, "fr");
    }
    let (_, body, _) = get(&client, &proxy, "/v").await;
    assert_eq!(body, "none", "no header is a variant of its own");
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn vary_star_is_never_served_from_the_cache() {
    let origin =
        Origin::start(|_| async { answer("x", &[("cache-control", "max-age=60"), ("vary", "*")]) })
            .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    get(&client, &proxy, "/s").await;
    let (_, _, headers) = get(&client, &proxy, "/s").await;
    assert!(cache_status(&headers).contains("detail=vary-star"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn concurrent_misses_for_one_url_make_one_origin_request() {
    // Closed until the test opens it; once open, every request passes (none can hang).
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = {
        let release = release.clone();
        Origin::start(move |_| {
            let release = release.clone();
            async move {
                let _permit = release.acquire().await;
                answer("shared", &[("cache-control", "max-age=60")])
            }
        })
        .await
    };
    let proxy = Proxy::start(&cached_config(origin.addr, "lock_timeout = \"60s\"")).await;
    let client = client();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = proxy.url("/slow");
            tokio::spawn(async move {
                let response = client.get(url).send().await.expect("response");
                let cs = header(&response, "cache-status").unwrap_or_default();
                (response.text().await.expect("body"), cs)
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || origin.count() == 1).await,
        "the first miss reaches the origin"
    );
    // Give the other requests time to reach the proxy and queue behind the first; whenever they
    // arrive, none may reach the origin (before the fill they wait, after it they hit).
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.add_permits(100);
    for request in requests {
        let (body, cache_status) = request.await.expect("task");
        assert_eq!(body, "shared");
        assert!(cache_status.starts_with("gatehouse;"), "{cache_status}");
    }
    assert_eq!(
        origin.count(),
        1,
        "eight concurrent requests, one origin request"
    );
}

#[tokio::test]
async fn objects_over_the_size_cap_are_passed_through_and_not_stored() {
    let origin = Origin::start(|request| async move {
        let big = "x".repeat(4096);
        if request.uri().path() == "/chunked" {
            // No Content-Length: the cap is found while the body streams.
            let stream = futures_util::stream::iter((0..4).map(|_| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(
                    "y".repeat(1024),
                )))
            }));
            let body = http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
                http_body_util::StreamBody::new(stream),
                |never| match never {},
            ));
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("max-age=60"));
            return response;
        }
        answer(&big, &[("cache-control", "max-age=60")])
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "max_object_size = \"1KiB\"")).await;
    let client = client();
    for _ in 0..2 {
        let (status, body, headers) = get(&client, &proxy, "/big").await;
        assert_eq!((status, body.len()), (200, 4096));
        assert!(
            cache_status(&headers).contains("detail=too-large"),
            "{}",
            cache_status(&headers)
        );
        let (status, body, _) = get(&client, &proxy, "/chunked").await;
        assert_eq!((status, body.len()), (200, 4096));
    }
    assert_eq!(seen_on(&origin, "/big"), 2);
    assert_eq!(seen_on(&origin, "/chunked"), 2);
}

#[tokio::test]
async fn head_is_served_from_a_stored_get_and_clients_validators_get_304() {
    let origin = Origin::start(|_| async {
        answer(
            "twelve bytes",
            &[("cache-control", "max-age=60"), ("etag", "W/\"t1\"")],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    get(&client, &proxy, "/h").await;

    let response = client.head(proxy.url("/h")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-length").as_deref(), Some("12"));
    assert!(header(&response, "cache-status").unwrap().contains("hit"));

    let response = client
        .get(proxy.url("/h"))
        .header("if-none-match", "\"t1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304, "weak comparison matches");
    assert_eq!(header(&response, "etag").as_deref(), Some("W/\"t1\""));
    assert!(header(&response, "age").is_some());
    let response = client
        .get(proxy.url("/h"))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "twelve bytes");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_stored_response() {
    let origin = Origin::start(|request| async move {
        if request.method() == http::Method::POST {
            return text(204, "");
        }
        answer("v", &[("cache-control", "max-age=600")])
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    get(&client, &proxy, "/item").await;
    get(&client, &proxy, "/item").await;
    assert_eq!(origin.count(), 1);
    let response = client
        .post(proxy.url("/item"))
        .body("change")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        header(&response, "cache-status")
            .unwrap()
            .contains("fwd=method")
    );
    let (_, _, headers) = get(&client, &proxy, "/item").await;
    assert!(
        cache_status(&headers).contains("fwd=uri-miss"),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn a_stale_response_stands_in_for_a_failing_origin_within_stale_if_error() {
    let failing = Arc::new(AtomicBool::new(false));
    let origin = {
        let failing = failing.clone();
        Origin::start(move |_| {
            let failing = failing.load(Ordering::SeqCst);
            async move {
                if failing {
                    text(503, "down")
                } else {
                    answer(
                        "kept",
                        &[("cache-control", "max-age=1, stale-if-error=600")],
                    )
                }
            }
        })
        .await
    };
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    get(&client, &proxy, "/e").await;
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body, headers) = get(&client, &proxy, "/e").await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    let cs = cache_status(&headers);
    assert!(
        cs.contains("detail=stale-if-error") && cs.contains("fwd-status=503"),
        "{cs}"
    );
    assert_eq!(origin.count(), 2, "the origin was asked first");
}

#[tokio::test]
async fn hits_are_compressed_for_each_client_from_one_stored_copy() {
    let origin = Origin::start(|_| async {
        answer(
            &"compressible text ".repeat(200),
            &[
                ("cache-control", "max-age=60"),
                ("content-type", "text/plain"),
            ],
        )
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[cache]\nenabled = true\n\n[compression]\nenabled = true\n",
    ))
    .await;
    let raw = client();
    for _ in 0..2 {
        let gzip = raw
            .get(proxy.url("/t"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&gzip, "content-encoding").as_deref(), Some("gzip"));
        let plain = raw
            .get(proxy.url("/t"))
            .header("accept-encoding", "identity")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&plain, "content-encoding"), None);
        assert_eq!(plain.text().await.unwrap().len(), 18 * 200);
    }
    assert_eq!(
        origin.count(),
        1,
        "one stored (uncompressed) copy serves both codings"
    );
}

#[tokio::test]
async fn routes_turn_the_cache_on_and_off() {
    let origin = Origin::start(|_| async { answer("r", &[("cache-control", "max-age=60")]) }).await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[[route]]\nname = \"cached\"\npath_prefix = \"/c\"\npool = \"app\"\ncache = { max_object_size = \"1MiB\" }\n\n\
         [[route]]\nname = \"plain\"\npool = \"app\"\n",
    ))
    .await;
    let client = client();
    for _ in 0..2 {
        get(&client, &proxy, "/c/x").await;
        let (_, _, headers) = get(&client, &proxy, "/p/x").await;
        assert!(
            headers.get("cache-status").is_none(),
            "no cache, no Cache-Status"
        );
    }
    assert_eq!(seen_on(&origin, "/c/x"), 1);
    assert_eq!(seen_on(&origin, "/p/x"), 2);
}

#[test]
fn bad_cache_settings_are_refused_with_their_line_and_key() {
    let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n\n\
                [cache]\nheuristic_fraction = 2.0\n\n[[route]]\npool = \"app\"\ncache = { max_object_size = \"2GiB\" }\n";
    let errors = gatehouse::config::parse(std::path::Path::new("bad.toml"), text)
        .expect_err("refused")
        .0;
    let fraction = errors
        .iter()
        .find(|e| e.key == "cache.heuristic_fraction")
        .expect("fraction error");
    assert_eq!(fraction.line, 8);
    let size = errors
        .iter()
        .find(|e| e.key.ends_with("cache.max_object_size"))
        .expect("size error");
    assert_eq!(size.line, 12);
    assert!(
        size.message.contains("larger than cache.max_size"),
        "{}",
        size.message
    );
}

#[tokio::test]
async fn the_admin_api_purges_a_url_or_a_prefix() {
    let origin =
        Origin::start(|_| async { answer("p", &[("cache-control", "max-age=600")]) }).await;
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
        cached_config(origin.addr, "")
    );
    let proxy = Proxy::start(&config).await;
    let admin = proxy
        .server
        .as_ref()
        .unwrap()
        .admin_addr()
        .expect("admin listener");
    let client = client();
    let purge = |body: String| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://{admin}/api/cache/purge"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                status,
                serde_json::from_str::<serde_json::Value>(&text).expect("JSON"),
            )
        }
    };
    for path in ["/a/1", "/a/2", "/b"] {
        get(&client, &proxy, path).await;
        get(&client, &proxy, path).await;
    }
    assert_eq!(origin.count(), 3);

    let host = proxy.addr;
    let (status, answer) = purge(format!("{{\"url\": \"http://{host}/b\"}}")).await;
    assert_eq!(
        (status, answer["purged"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    get(&client, &proxy, "/b").await;
    assert_eq!(seen_on(&origin, "/b"), 2, "purged: fetched again");

    let (status, answer) = purge(format!("{{\"prefix\": \"http://{host}/a/\"}}")).await;
    assert_eq!(
        (status, answer["purged"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    get(&client, &proxy, "/a/1").await;
    get(&client, &proxy, "/b").await;
    assert_eq!(seen_on(&origin, "/a/1"), 2);
    assert_eq!(
        seen_on(&origin, "/b"),
        2,
        "outside the prefix: still stored"
    );

    let (status, answer) = purge("{\"url\": \"/relative\"}".to_owned()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = purge("{\"url\": \"http://x/\", \"prefix\": \"http://x/\"}".to_owned()).await;
    assert_eq!(status, 400);
}

/// `[cache]` settings with the disk tier in `dir` (and `extra` keys in its table).
fn disk_settings(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "disk = {{ path = {:?}{extra} }}",
        dir.to_str().expect("UTF-8 temp path")
    )
}

/// The entry files in `dir` (the disk tier names them `*.ghc`).
fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "ghc"))
                .collect()
        })
        .unwrap_or_default()
}

/// GET `path` with a fixed `Host`, so the cache key stays the same across proxies listening on
/// different ports.
async fn get_as_host(
    client: &reqwest::Client,
    proxy: &Proxy,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let response = client
        .get(proxy.url(path))
        .header("host", "cache.test")
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.expect("body"), headers)
}

/// True once an entry file in `dir` holds the key ending in `path` (the writer works in the
/// background).
async fn written_to_disk(dir: &std::path::Path, path: &str) -> bool {
    let needle = format!("{path}\"");
    eventually(Duration::from_secs(20), || {
        entry_files(dir).iter().any(|file| {
            std::fs::read(file).is_ok_and(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            })
        })
    })
    .await
}

#[tokio::test]
async fn a_response_on_the_disk_tier_survives_a_restart_with_its_age() {
    let origin = Origin::start(|_| async {
        answer(
            "from the origin",
            &[("cache-control", "max-age=3600"), ("age", "10")],
        )
    })
    .await;
    let dir = TempDir::new("cache-disk-restart");
    let config = cached_config(origin.addr, &disk_settings(&dir.path, ""));
    let client = client();

    let mut proxy = Proxy::start(&config).await;
    let (status, body, headers) = get_as_host(&client, &proxy, "/kept").await;
    assert_eq!((status, body.as_str()), (200, "from the origin"));
    assert!(cache_status(&headers).contains("; stored"));
    assert!(
        written_to_disk(&dir.path, "/kept").await,
        "entry file written"
    );
    proxy.shutdown().await;
    // Time passes while the proxy is down; Age must count it.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let proxy = Proxy::start(&config).await;
    let (status, body, headers) = get_as_host(&client, &proxy, "/kept").await;
    assert_eq!((status, body.as_str()), (200, "from the origin"));
    let hit = cache_status(&headers);
    assert!(hit.starts_with("gatehouse; hit; ttl="), "{hit}");
    let age: u64 = headers["age"].to_str().unwrap().parse().expect("Age");
    assert!(
        (11..3600).contains(&age),
        "Age {age}: the origin's 10 plus the time since stored"
    );
    assert_eq!(origin.count(), 1, "the restarted proxy served it from disk");
    // Promoted to memory: served again without the origin.
    let (_, body, _) = get_as_host(&client, &proxy, "/kept").await;
    assert_eq!(body, "from the origin");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_damaged_file_on_the_disk_tier_is_ignored_and_deleted() {
    let origin =
        Origin::start(|_| async { answer("whole body", &[("cache-control", "max-age=3600")]) })
            .await;
    let dir = TempDir::new("cache-disk-damaged");
    // Junk that looks like an entry file by its name.
    std::fs::write(
        dir.join("0123456789abcdef0123456789abcdef.ghc"),
        b"not an entry",
    )
    .expect("write junk");
    let config = cached_config(origin.addr, &disk_settings(&dir.path, ""));
    let client = client();

    let mut proxy = Proxy::start(&config).await;
    assert!(
        !dir.join("0123456789abcdef0123456789abcdef.ghc").exists(),
        "junk deleted by the scan"
    );
    get_as_host(&client, &proxy, "/damaged").await;
    assert!(written_to_disk(&dir.path, "/damaged").await);
    proxy.shutdown().await;

    // Cut the entry short, as a crash in the middle of a write without rename would.
    let files = entry_files(&dir.path);
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).expect("read entry");
    std::fs::write(&files[0], &bytes[..bytes.len() - 3]).expect("truncate entry");

    let proxy = Proxy::start(&config).await;
    let (status, body, headers) = get_as_host(&client, &proxy, "/damaged").await;
    assert_eq!((status, body.as_str()), (200, "whole body"));
    assert!(
        cache_status(&headers).starts_with("gatehouse; fwd=uri-miss"),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(origin.count(), 2, "the damaged entry was not served");
}

#[tokio::test]
async fn the_disk_tier_stays_within_its_max_size() {
    let origin = Origin::start(|_| async {
        answer(
            &"d".repeat(100 * 1024),
            &[("cache-control", "max-age=3600")],
        )
    })
    .await;
    let dir = TempDir::new("cache-disk-bound");
    let config = cached_config(
        origin.addr,
        &disk_settings(
            &dir.path,
            ", max_size = \"1MiB\", max_object_size = \"256KiB\"",
        ),
    );
    let client = client();
    let proxy = Proxy::start(&config).await;
    for i in 0..20 {
        let (status, body, _) = get(&client, &proxy, &format!("/r{i}")).await;
        assert_eq!((status, body.len()), (200, 100 * 1024));
        // One at a time, so the bounded writer queue never skips one.
        assert!(written_to_disk(&dir.path, &format!("/r{i}")).await, "r{i}");
    }
    let files = entry_files(&dir.path);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    assert!(total <= 1 << 20, "{total} bytes on disk");
    assert!(files.len() >= 5, "{} files", files.len());
    drop(proxy);
}

#[tokio::test]
async fn an_unusable_disk_path_is_refused_with_its_line() {
    let dir = TempDir::new("cache-disk-refused");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, b"x").expect("write");
    let text = single_pool_config(
        &["127.0.0.1:1".parse().unwrap()],
        &format!(
            "[cache]\nenabled = true\n{}\n",
            disk_settings(&blocker.join("sub"), "")
        ),
    );
    let error = gatehouse::config::parse(std::path::Path::new("test.toml"), &text)
        .expect_err("a path under a file cannot be created")
        .to_string();
    assert!(error.contains("test.toml:"), "{error}");
    assert!(error.contains("cache.disk.path"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Cache, phase 3 (branch cache-more): background stale-while-revalidate, PURGE and surrogate
// keys, Range requests from stored responses, targeted cache control (RFC 9213), cache key
// options.
// ---------------------------------------------------------------------------------------------

/// An origin whose n-th response has body `v{n}`, lives one second and may then be served stale
/// for 600 s while revalidated. Requests after the first wait for a permit from `gate`.
async fn versioned_origin(gate: Arc<tokio::sync::Semaphore>) -> Origin {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Origin::start(move |_| {
        let (gate, served) = (gate.clone(), served.clone());
        async move {
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            if n > 1 {
                // A closed gate lets everyone through (the test's end).
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
            }
            answer(
                &format!("v{n}"),
                &[("cache-control", "max-age=1, stale-while-revalidate=600")],
            )
        }
    })
    .await
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = versioned_origin(gate.clone()).await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    assert_eq!(get(&client, &proxy, "/swr").await.1, "v1");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The origin holds every refresh: these are answered from the stale entry regardless.
    let stale = (0..5).map(|_| get(&client, &proxy, "/swr"));
    for (status, body, headers) in futures_util::future::join_all(stale).await {
        assert_eq!((status, body.as_str()), (200, "v1"));
        let cs = cache_status(&headers);
        assert!(
            cs.starts_with("gatehouse; hit; ttl=-")
                && cs.ends_with("detail=stale-while-revalidate"),
            "{cs}"
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || origin.count() == 2).await,
        "one refresh went to the origin"
    );
    let (_, body, _) = get(&client, &proxy, "/swr").await;
    assert_eq!(body, "v1", "still stale while the refresh is held");
    assert_eq!(origin.count(), 2, "at most one refresh per URL at a time");

    gate.add_permits(1);
    let mut refreshed = false;
    for _ in 0..200 {
        let (_, body, _) = get(&client, &proxy, "/swr").await;
        if body == "v2" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refreshed, "the background refresh stored v2");
    gate.close();
}

#[tokio::test]
async fn a_background_refresh_ends_within_refresh_timeout() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = versioned_origin(gate.clone()).await;
    let proxy = Proxy::start(&cached_config(origin.addr, "refresh_timeout = \"1s\"")).await;
    let client = client();
    get(&client, &proxy, "/slow").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The first refresh hangs at the origin; once it is abandoned, the URL's lock is free and
    // a later stale hit starts another.
    let mut second_refresh = false;
    for _ in 0..150 {
        let (status, body, _) = get(&client, &proxy, "/slow").await;
        assert_eq!((status, body.as_str()), (200, "v1"));
        if origin.count() >= 3 {
            second_refresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second_refresh, "the hung refresh was abandoned");
    gate.close();
}

/// Starts a proxy with an admin listener over the cached route; returns it and its admin address.
async fn proxy_with_admin(
    origin: std::net::SocketAddr,
    settings: &str,
) -> (Proxy, std::net::SocketAddr) {
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
        cached_config(origin, settings)
    );
    let proxy = Proxy::start(&config).await;
    let admin = proxy
        .server
        .as_ref()
        .expect("server")
        .admin_addr()
        .expect("admin listener");
    (proxy, admin)
}

async fn admin_purge(admin: std::net::SocketAddr, body: &str) -> (u16, serde_json::Value) {
    let response = client()
        .post(format!("http://{admin}/api/cache/purge"))
        .body(body.to_owned())
        .send()
        .await
        .expect("admin response");
    let status = response.status().as_u16();
    let text = response.text().await.expect("admin body");
    (status, serde_json::from_str(&text).expect("JSON"))
}

fn purge_method() -> reqwest::Method {
    reqwest::Method::from_bytes(b"PURGE").expect("method")
}

#[tokio::test]
async fn purge_removes_every_variant_of_a_url_for_allowed_addresses_only() {
    let origin = Origin::start(|_| async {
        answer(
            "v",
            &[
                ("cache-control", "max-age=600"),
                ("vary", "accept-language"),
            ],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(
        origin.addr,
        "purge_allow = [\"127.0.0.1/32\", \"::1\"]",
    ))
    .await;
    let client = client();
    for language in ["en", "fr", "en", "fr"] {
        client
            .get(proxy.url("/v"))
            .header("accept-language", language)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(origin.count(), 2, "two variants stored");
    let purged = client
        .request(purge_method(), proxy.url("/v"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status().as_u16(), 200);
    let answer: serde_json::Value = serde_json::from_str(&purged.text().await.unwrap()).unwrap();
    assert_eq!(answer["purged"], 1, "{answer}");
    for language in ["en", "fr"] {
        client
            .get(proxy.url("/v"))
            .header("accept-language", language)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(origin.count(), 4, "both variants fetched again");
    assert_eq!(
        origin
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method.as_str() == "PURGE")
            .count(),
        0,
        "PURGE is never forwarded"
    );

    // Without `purge_allow`, nobody may purge.
    let closed = Proxy::start(&cached_config(origin.addr, "")).await;
    get(&client, &closed, "/c").await;
    let refused = client
        .request(purge_method(), closed.url("/c"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    get(&client, &closed, "/c").await;
    assert_eq!(seen_on(&origin, "/c"), 1, "still stored");
}

#[test]
fn a_bad_purge_allow_entry_is_refused_with_its_line() {
    let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n\n\
                [cache]\npurge_allow = [\"10.0.0.0/99\"]\n";
    let errors = gatehouse::config::parse(std::path::Path::new("bad.toml"), text)
        .expect_err("refused")
        .0;
    let error = errors
        .iter()
        .find(|e| e.key.starts_with("cache.purge_allow"))
        .expect("purge_allow error");
    assert_eq!(error.line, 8);
}

#[tokio::test]
async fn surrogate_keys_are_indexed_purged_by_the_admin_api_and_hidden_from_clients() {
    let origin = Origin::start(|request| async move {
        match request.uri().path() {
            "/p1" => answer(
                "1",
                &[
                    ("cache-control", "max-age=600"),
                    ("surrogate-key", "all product-1"),
                ],
            ),
            "/p2" => answer(
                "2",
                &[
                    ("cache-control", "max-age=600"),
                    ("cache-tag", "all, product-2"),
                ],
            ),
            _ => answer("3", &[("cache-control", "max-age=600")]),
        }
    })
    .await;
    let (proxy, admin) = proxy_with_admin(origin.addr, "").await;
    let client = client();
    for path in ["/p1", "/p2", "/p3"] {
        let (_, _, headers) = get(&client, &proxy, path).await;
        assert!(headers.get("surrogate-key").is_none() && headers.get("cache-tag").is_none());
        let (_, _, headers) = get(&client, &proxy, path).await;
        assert!(cache_status(&headers).contains("hit"));
        assert!(headers.get("surrogate-key").is_none() && headers.get("cache-tag").is_none());
    }
    assert_eq!(origin.count(), 3);

    let (status, answer) = admin_purge(admin, "{\"key\": \"product-1\"}").await;
    assert_eq!(
        (status, answer["purged"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    get(&client, &proxy, "/p1").await;
    get(&client, &proxy, "/p2").await;
    assert_eq!((seen_on(&origin, "/p1"), seen_on(&origin, "/p2")), (2, 1));

    let (_, answer) = admin_purge(admin, "{\"key\": \"all\"}").await;
    assert_eq!(answer["purged"].as_u64(), Some(2), "{answer}");
    for path in ["/p1", "/p2", "/p3"] {
        get(&client, &proxy, path).await;
    }
    assert_eq!(
        (
            seen_on(&origin, "/p1"),
            seen_on(&origin, "/p2"),
            seen_on(&origin, "/p3")
        ),
        (3, 2, 1)
    );
    let (_, answer) = admin_purge(admin, "{\"key\": \"nothing-has-this\"}").await;
    assert_eq!(answer["purged"].as_u64(), Some(0));
    let (status, _) = admin_purge(admin, "{\"key\": \"\"}").await;
    assert_eq!(status, 400);

    // Configured to keep them, clients see the names.
    let shown = Proxy::start(&cached_config(origin.addr, "strip_surrogate_keys = false")).await;
    for _ in 0..2 {
        let (_, _, headers) = get(&client, &shown, "/p1").await;
        assert_eq!(headers["surrogate-key"], "all product-1");
    }
}

#[tokio::test]
async fn a_soft_purge_marks_stale_so_the_next_request_revalidates() {
    // Fresh for ten minutes, ETag "v1": only a purge makes the proxy ask again.
    let origin = Origin::start(|request| async move {
        let has_it = request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == b"\"v1\"");
        let mut response = if has_it {
            let mut response = text(304, "");
            *response.body_mut() = full("");
            response
        } else {
            answer("soft", &[("surrogate-key", "s")])
        };
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("max-age=600"));
        response
            .headers_mut()
            .insert("etag", HeaderValue::from_static("\"v1\""));
        response
    })
    .await;
    let (proxy, admin) = proxy_with_admin(origin.addr, "").await;
    let client = client();
    let host = proxy.addr;
    get(&client, &proxy, "/s").await;
    get(&client, &proxy, "/s").await;
    assert_eq!(origin.count(), 1);

    for purge in [
        format!("{{\"url\": \"http://{host}/s\", \"soft\": true}}"),
        "{\"key\": \"s\", \"soft\": true}".to_owned(),
        format!("{{\"prefix\": \"http://{host}/\", \"soft\": true}}"),
    ] {
        let before = origin.count();
        let (status, answer) = admin_purge(admin, &purge).await;
        assert_eq!(
            (status, answer["purged"].as_u64()),
            (200, Some(1)),
            "{purge}: {answer}"
        );
        let (status, body, headers) = get(&client, &proxy, "/s").await;
        assert_eq!((status, body.as_str()), (200, "soft"), "the stored body");
        let cs = cache_status(&headers);
        assert!(
            cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
            "{purge}: {cs}"
        );
        assert_eq!(origin.count(), before + 1);
        assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");
        // Fresh again after the 304.
        let (_, _, headers) = get(&client, &proxy, "/s").await;
        assert!(cache_status(&headers).starts_with("gatehouse; hit"));
        assert_eq!(origin.count(), before + 1);
    }
}

async fn get_with(
    client: &reqwest::Client,
    proxy: &Proxy,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut request = client.get(proxy.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.expect("body"), headers)
}

#[tokio::test]
async fn range_requests_are_cut_from_a_stored_200() {
    let origin = Origin::start(|request| async move {
        if request.uri().path() == "/partial" {
            let mut response = answer("012", &[("cache-control", "max-age=600")]);
            *response.status_mut() = http::StatusCode::PARTIAL_CONTENT;
            response
                .headers_mut()
                .insert("content-range", HeaderValue::from_static("bytes 0-2/10"));
            return response;
        }
        answer(
            "0123456789",
            &[("cache-control", "max-age=600"), ("etag", "\"r1\"")],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();

    // A miss with Range: the range goes to the origin as asked, nothing is stored.
    let (status, _, headers) = get_with(&client, &proxy, "/r", &[("range", "bytes=0-3")]).await;
    assert_eq!(status, 200, "this origin ignores Range");
    assert!(
        cache_status(&headers).contains("detail=range"),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(origin.last().headers["range"], "bytes=0-3");
    // A plain GET fills the cache; ranges are then cut from it.
    get(&client, &proxy, "/r").await;
    assert_eq!(origin.count(), 2);

    let (status, body, headers) = get_with(&client, &proxy, "/r", &[("range", "bytes=2-5")]).await;
    assert_eq!((status, body.as_str()), (206, "2345"));
    assert_eq!(headers["content-range"], "bytes 2-5/10");
    assert_eq!(headers["content-length"], "4");
    assert!(cache_status(&headers).starts_with("gatehouse; hit"));
    let (status, body, _) = get_with(&client, &proxy, "/r", &[("range", "bytes=-3")]).await;
    assert_eq!((status, body.as_str()), (206, "789"));
    let (status, body, _) = get_with(&client, &proxy, "/r", &[("range", "bytes=7-")]).await;
    assert_eq!((status, body.as_str()), (206, "789"));

    let (status, body, headers) = get_with(&client, &proxy, "/r", &[("range", "bytes=20-")]).await;
    assert_eq!((status, body.as_str()), (416, ""));
    assert_eq!(headers["content-range"], "bytes */10");

    // Several ranges: the whole 200 (RFC 9110 §14.2 allows it).
    let (status, body, _) = get_with(&client, &proxy, "/r", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!((status, body.as_str()), (200, "0123456789"));

    // If-Range: the range only while it names the stored response.
    let (status, body, _) = get_with(
        &client,
        &proxy,
        "/r",
        &[("range", "bytes=0-1"), ("if-range", "\"r1\"")],
    )
    .await;
    assert_eq!((status, body.as_str()), (206, "01"));
    let (status, body, _) = get_with(
        &client,
        &proxy,
        "/r",
        &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "0123456789"));
    // HEAD ignores Range.
    let head = client
        .head(proxy.url("/r"))
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        origin.count(),
        2,
        "every range after the fill came from the cache"
    );

    // A 206 from the origin is never stored.
    for _ in 0..2 {
        let (status, _, headers) = get(&client, &proxy, "/partial").await;
        assert_eq!(status, 206);
        assert!(
            !cache_status(&headers).contains("stored"),
            "{}",
            cache_status(&headers)
        );
    }
    assert_eq!(seen_on(&origin, "/partial"), 2);
}

#[tokio::test]
async fn targeted_cache_control_overrides_cache_control_for_gatehouse_only() {
    let origin = Origin::start(|request| async move {
        match request.uri().path() {
            // Browsers must not store it; the edge may, for ten minutes.
            "/cdn" => answer(
                "c",
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=600"),
                ],
            ),
            // Gatehouse's own field wins over CDN-Cache-Control and Cache-Control.
            "/own" => answer(
                "o",
                &[
                    ("cache-control", "max-age=600"),
                    ("cdn-cache-control", "max-age=600"),
                    ("gatehouse-cache-control", "no-store"),
                ],
            ),
            _ => answer(
                "x",
                &[("cache-control", "no-store"), ("x-edge", "max-age=600")],
            ),
        }
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    for _ in 0..2 {
        let (_, body, headers) = get(&client, &proxy, "/cdn").await;
        assert_eq!(body, "c");
        assert_eq!(
            headers["cache-control"], "no-store",
            "the client's own field is kept"
        );
        assert!(
            headers.get("cdn-cache-control").is_none(),
            "removed for clients"
        );
        let (_, _, headers) = get(&client, &proxy, "/own").await;
        assert!(
            cache_status(&headers).contains("detail=no-store"),
            "{}",
            cache_status(&headers)
        );
        assert!(headers.get("gatehouse-cache-control").is_none());
    }
    assert_eq!(seen_on(&origin, "/cdn"), 1, "stored per CDN-Cache-Control");
    assert_eq!(
        seen_on(&origin, "/own"),
        2,
        "not stored per Gatehouse-Cache-Control"
    );

    // Another field name, kept in client responses; CDN-Cache-Control is then not obeyed.
    let custom = Proxy::start(&cached_config(
        origin.addr,
        "targeted_headers = [\"X-Edge\"]\nstrip_targeted_headers = false",
    ))
    .await;
    for _ in 0..2 {
        let (_, _, headers) = get(&client, &custom, "/x").await;
        assert_eq!(headers["x-edge"], "max-age=600");
        let (_, _, headers) = get(&client, &custom, "/cdn").await;
        assert_eq!(headers["cdn-cache-control"], "max-age=600");
    }
    assert_eq!(seen_on(&origin, "/x"), 1, "stored per X-Edge");
    assert_eq!(
        seen_on(&origin, "/cdn"),
        3,
        "no-store obeyed: CDN-Cache-Control is not listed"
    );
}

#[test]
fn a_bad_targeted_header_name_is_refused_with_its_line() {
    let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n\n\
                [cache]\n\ntargeted_headers = [\"bad name\"]\n";
    let errors = gatehouse::config::parse(std::path::Path::new("bad.toml"), text)
        .expect_err("refused")
        .0;
    let error = errors
        .iter()
        .find(|e| e.key.starts_with("cache.targeted_headers"))
        .expect("targeted_headers error");
    assert_eq!(error.line, 9);
}

#[tokio::test]
async fn cache_key_options_ignore_sort_and_add_headers_and_cookies() {
    let origin =
        Origin::start(|_| async { answer("k", &[("cache-control", "max-age=600")]) }).await;
    let (proxy, admin) = proxy_with_admin(
        origin.addr,
        "key_query = \"sorted\"\nkey_ignore_query = [\"utm_*\", \"fbclid\"]\n\
         key_headers = [\"X-Device\"]\nkey_cookies = [\"lang\"]",
    )
    .await;
    let client = client();
    let hit = |headers: &reqwest::header::HeaderMap| cache_status(headers).contains("hit");

    let (_, _, headers) = get(&client, &proxy, "/k?b=2&a=1&utm_source=news").await;
    assert!(!hit(&headers));
    let (_, _, headers) = get(&client, &proxy, "/k?a=1&fbclid=x&b=2").await;
    assert!(hit(&headers), "same key: {}", cache_status(&headers));
    assert_eq!(origin.count(), 1);
    // The origin still gets the query as the client sent it.
    assert_eq!(origin.last().uri.query(), Some("b=2&a=1&utm_source=news"));

    let (_, _, headers) = get_with(&client, &proxy, "/k?a=1&b=2", &[("x-device", "mobile")]).await;
    assert!(!hit(&headers), "another device is another variant");
    let (_, _, headers) = get_with(&client, &proxy, "/k?a=1&b=2", &[("x-device", "mobile")]).await;
    assert!(hit(&headers));
    let (_, _, headers) = get_with(&client, &proxy, "/k?a=1&b=2", &[("cookie", "lang=fr")]).await;
    assert!(!hit(&headers), "another language is another variant");
    let (_, _, headers) = get_with(
        &client,
        &proxy,
        "/k?a=1&b=2",
        &[("cookie", "session=9; lang=fr")],
    )
    .await;
    assert!(hit(&headers), "other cookies do not count");
    let (_, _, headers) = get(&client, &proxy, "/k?b=2&a=1").await;
    assert!(hit(&headers), "the first variant is still there");
    assert_eq!(origin.count(), 3);

    // A purge of the URL, written any way that keys the same, removes every variant.
    let host = proxy.addr;
    let (status, answer) = admin_purge(
        admin,
        &format!("{{\"url\": \"http://{host}/k?utm_x=1&b=2&a=1\"}}"),
    )
    .await;
    assert_eq!(
        (status, answer["purged"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    get_with(&client, &proxy, "/k?a=1&b=2", &[("x-device", "mobile")]).await;
    get(&client, &proxy, "/k?a=1&b=2").await;
    assert_eq!(origin.count(), 5);

    // `ignore`: every query string of a path shares its entry.
    let ignoring = Proxy::start(&cached_config(origin.addr, "key_query = \"ignore\"")).await;
    get(&client, &ignoring, "/i?x=1").await;
    let (_, _, headers) = get(&client, &ignoring, "/i?x=2").await;
    assert!(hit(&headers));
    assert_eq!(seen_on(&origin, "/i"), 1);
}

#[test]
fn bad_key_options_are_refused_with_their_lines() {
    let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n\n\
                [cache]\nkey_cookies = [\"a;b\"]\nkey_headers = [\"bad header\"]\n";
    let errors = gatehouse::config::parse(std::path::Path::new("bad.toml"), text)
        .expect_err("refused")
        .0;
    let line_of = |key: &str| {
        errors
            .iter()
            .find(|e| e.key.starts_with(key))
            .unwrap_or_else(|| panic!("{key} error in {errors:?}"))
            .line
    };
    assert_eq!(line_of("cache.key_cookies"), 8);
    assert_eq!(line_of("cache.key_headers"), 9);
    let unknown = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n\n\
                   [cache]\nkey_query = \"random\"\n";
    let errors = gatehouse::config::parse(std::path::Path::new("bad.toml"), unknown)
        .expect_err("refused")
        .0;
    assert_eq!(errors[0].line, 8, "{errors:?}");
}

#[tokio::test]
async fn a_stale_response_stands_in_for_an_origin_that_is_down() {
    // The origin is gone altogether (connections refused), not merely answering 5xx. It closes
    // each connection after answering, so none is left pooled when it goes.
    let origin = Origin::start(|_| async {
        answer(
            "kept",
            &[
                ("cache-control", "max-age=1, stale-if-error=600"),
                ("connection", "close"),
            ],
        )
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    let (status, body, _) = get(&client, &proxy, "/down").await;
    assert_eq!((status, body.as_str()), (200, "kept"));
    drop(origin);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body, headers) = get(&client, &proxy, "/down").await;
    assert_eq!((status, body.as_str()), (200, "kept"), "{headers:?}");
    assert!(
        cache_status(&headers).contains("detail=stale-if-error"),
        "{}",
        cache_status(&headers)
    );
}

#[tokio::test]
async fn a_large_body_being_stored_is_not_spliced_past_the_cache() {
    // Large enough that, without the cache, it would be spliced socket to socket unread.
    let body = "0123456789abcdef".repeat(64 * 1024);
    let sent = body.clone();
    let origin = Origin::start(move |_| {
        let body = sent.clone();
        async move { answer(&body, &[("cache-control", "max-age=600")]) }
    })
    .await;
    let proxy = Proxy::start(&cached_config(origin.addr, "")).await;
    let client = client();
    for round in ["miss", "hit"] {
        let (status, received, headers) = get(&client, &proxy, "/big").await;
        assert_eq!(status, 200, "{round}");
        assert!(received == body, "{round}: the body differs");
        assert!(
            cache_status(&headers).contains(round),
            "{round}: {headers:?}"
        );
    }
    assert_eq!(seen_on(&origin, "/big"), 1, "the second request is a hit");
    assert_eq!(
        proxy.metric("gatehouse_response_bytes_spliced_total", &[]),
        0
    );
}
