//! Routing end to end: precedence of host, path, method and header conditions, misses, path and
//! Host rewriting, header edits, and per-route body caps and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// A config with one listener, the access log off, one pool per `(name, backend)` and `routes`.
fn config(pools: &[(&str, SocketAddr)], routes: &str) -> String {
    let mut text =
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n".to_owned();
    for (name, addr) in pools {
        text.push_str(&format!("[pool.{name}]\nbackends = [\"{addr}\"]\n\n"));
    }
    text.push_str(routes);
    text
}

/// `method path` with `Host: host` and extra headers; returns (status, x-origin or "").
async fn ask(
    proxy: &Proxy,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client()
        .request(method, proxy.url(path))
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let origin = response
        .headers()
        .get("x-origin")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, origin)
}

async fn which(proxy: &Proxy, host: &str, path: &str) -> String {
    let (status, origin) = ask(proxy, "GET", host, path, &[]).await;
    assert_eq!(status, 200, "{host}{path}");
    origin
}

#[tokio::test]
async fn exact_host_beats_wildcard_beats_any_host() {
    let (exact, wild, deep, any) = (
        Origin::named("exact").await,
        Origin::named("wild").await,
        Origin::named("deep").await,
        Origin::named("any").await,
    );
    let proxy = Proxy::start(&config(
        &[
            ("exact", exact.addr),
            ("wild", wild.addr),
            ("deep", deep.addr),
            ("any", any.addr),
        ],
        r#"
[[route]]
pool = "any"

[[route]]
host = "*.example.com"
pool = "wild"

[[route]]
host = "*.api.example.com"
pool = "deep"

[[route]]
host = "www.example.com"
pool = "exact"
"#,
    ))
    .await;
    assert_eq!(which(&proxy, "www.example.com", "/").await, "exact");
    assert_eq!(which(&proxy, "WWW.Example.COM:8080", "/").await, "exact");
    assert_eq!(which(&proxy, "shop.example.com", "/").await, "wild");
    assert_eq!(which(&proxy, "a.b.example.com", "/").await, "wild");
    assert_eq!(which(&proxy, "v1.api.example.com", "/").await, "deep");
    assert_eq!(
        which(&proxy, "example.com", "/").await,
        "any",
        "a wildcard does not match its apex"
    );
    assert_eq!(which(&proxy, "badexample.com", "/").await, "any");
    assert_eq!(which(&proxy, "other.org", "/").await, "any");
}

#[tokio::test]
async fn a_host_route_takes_its_host_even_over_a_more_specific_host_less_path() {
    let (app, login) = (Origin::named("app").await, Origin::named("login").await);
    let proxy = Proxy::start(&config(
        &[("app", app.addr), ("login", login.addr)],
        r#"
[[route]]
path = "/login"
pool = "login"

[[route]]
host = "app.example.com"
pool = "app"
"#,
    ))
    .await;
    assert_eq!(which(&proxy, "app.example.com", "/login").await, "app");
    assert_eq!(which(&proxy, "other.example.com", "/login").await, "login");
}

#[tokio::test]
async fn exact_path_beats_longest_prefix_beats_regex_beats_catch_all() {
    let (health, v1, api, regex, all) = (
        Origin::named("health").await,
        Origin::named("v1").await,
        Origin::named("api").await,
        Origin::named("regex").await,
        Origin::named("all").await,
    );
    let proxy = Proxy::start(&config(
        &[
            ("health", health.addr),
            ("v1", v1.addr),
            ("api", api.addr),
            ("regex", regex.addr),
            ("all", all.addr),
        ],
        r#"
[[route]]
pool = "all"

[[route]]
path_regex = "^/(api|u)/[0-9]+$"
pool = "regex"

[[route]]
path_prefix = "/api/"
pool = "api"

[[route]]
path_prefix = "/api/v1/"
pool = "v1"

[[route]]
path = "/api/v1/health"
pool = "health"
"#,
    ))
    .await;
    let h = "h.test";
    assert_eq!(which(&proxy, h, "/api/v1/health").await, "health");
    assert_eq!(which(&proxy, h, "/api/v1/health/x").await, "v1");
    assert_eq!(which(&proxy, h, "/api/v1/health?q=1").await, "health");
    assert_eq!(which(&proxy, h, "/api/v1/users").await, "v1");
    assert_eq!(which(&proxy, h, "/api/v2/users").await, "api");
    assert_eq!(
        which(&proxy, h, "/api/42").await,
        "api",
        "prefix beats regex"
    );
    assert_eq!(which(&proxy, h, "/u/42").await, "regex");
    assert_eq!(which(&proxy, h, "/u/x").await, "all");
    assert_eq!(which(&proxy, h, "/").await, "all");
}

#[tokio::test]
async fn method_and_header_conditions_select_routes() {
    let (default, post, canary) = (
        Origin::named("default").await,
        Origin::named("post").await,
        Origin::named("canary").await,
    );
    let proxy = Proxy::start(&config(
        &[
            ("default", default.addr),
            ("post", post.addr),
            ("canary", canary.addr),
        ],
        r#"
[[route]]
pool = "default"

[[route]]
methods = ["POST", "PUT"]
pool = "post"

[[route]]
headers = { x-canary = "1" }
pool = "canary"
"#,
    ))
    .await;
    let h = "h.test";
    assert_eq!(
        ask(&proxy, "POST", h, "/x", &[]).await,
        (200, "post".into())
    );
    assert_eq!(ask(&proxy, "PUT", h, "/x", &[]).await, (200, "post".into()));
    assert_eq!(
        ask(&proxy, "GET", h, "/x", &[]).await,
        (200, "default".into())
    );
    assert_eq!(
        ask(&proxy, "DELETE", h, "/x", &[]).await,
        (200, "default".into())
    );
    assert_eq!(
        ask(&proxy, "GET", h, "/x", &[("x-canary", "1")]).await,
        (200, "canary".into())
    );
    assert_eq!(
        ask(&proxy, "GET", h, "/x", &[("x-canary", "2")]).await,
        (200, "default".into())
    );
    assert_eq!(
        ask(&proxy, "POST", h, "/x", &[("x-canary", "1")]).await,
        (200, "post".into()),
        "a method condition ranks above a header condition"
    );
}

#[tokio::test]
async fn a_miss_is_404_when_there_is_no_default_route() {
    let origin = Origin::named("only").await;
    let proxy = Proxy::start(&config(
        &[("only", origin.addr)],
        r#"
[[route]]
host = "a.test"
path_prefix = "/app/"
methods = ["GET"]
pool = "only"
"#,
    ))
    .await;
    assert_eq!(
        ask(&proxy, "GET", "a.test", "/app/x", &[]).await,
        (200, "only".into())
    );
    for (method, host, path) in [
        ("GET", "b.test", "/app/x"),
        ("GET", "a.test", "/other"),
        ("GET", "a.test", "/app"),
        ("POST", "a.test", "/app/x"),
    ] {
        let (status, _) = ask(&proxy, method, host, path, &[]).await;
        assert_eq!(status, 404, "{method} {host}{path}");
    }
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn strip_prefix_and_add_prefix_rewrite_what_the_origin_sees() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&config(
        &[("app", origin.addr)],
        r#"
[[route]]
path_prefix = "/api/"
strip_prefix = "/api"
add_prefix = "/v2"
pool = "app"

[[route]]
path_prefix = "/strip/"
strip_prefix = "/strip"
pool = "app"

[[route]]
path_prefix = "/add/"
add_prefix = "/inner/"
pool = "app"

[[route]]
pool = "app"
"#,
    ))
    .await;
    let client = client();
    for (asked, seen) in [
        ("/api/users?id=7&x=%20", "/v2/users?id=7&x=%20"),
        ("/api/", "/v2/"),
        ("/strip/a/b", "/a/b"),
        ("/add/x?q", "/inner/add/x?q"),
        ("/untouched?k=v", "/untouched?k=v"),
    ] {
        let response = client.get(proxy.url(asked)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), seen, "{asked}");
        assert_eq!(origin.last().uri.to_string(), seen);
    }
}

#[tokio::test]
async fn the_host_the_origin_sees_follows_the_route() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&config(
        &[("app", origin.addr)],
        r#"
[[route]]
path = "/preserve"
pool = "app"

[[route]]
path = "/backend"
preserve_host = false
pool = "app"

[[route]]
path = "/fixed"
host_header = "internal.test"
pool = "app"
"#,
    ))
    .await;
    let host_seen = |path: &'static str| {
        let client = client();
        let url = proxy.url(path);
        let origin = &origin;
        async move {
            let response = client
                .get(url)
                .header("host", "public.test")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let seen = origin.last();
            let hosts: Vec<String> = seen
                .headers
                .get_all("host")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(seen.uri.path(), path);
            hosts
        }
    };
    assert_eq!(host_seen("/preserve").await, ["public.test"]);
    assert_eq!(host_seen("/backend").await, [origin.addr.to_string()]);
    assert_eq!(host_seen("/fixed").await, ["internal.test"]);
    // Whatever the origin sees, X-Forwarded-Host reports what the client asked for.
    assert_eq!(origin.last().headers["x-forwarded-host"], "public.test");
}

#[tokio::test]
async fn request_and_response_headers_are_edited() {
    let origin = Origin::start(|_request| async {
        let mut response = text(200, "ok");
        let headers = response.headers_mut();
        headers.insert("x-secret", http::HeaderValue::from_static("internal"));
        headers.insert("x-resp-set", http::HeaderValue::from_static("old"));
        headers.insert("x-resp-add", http::HeaderValue::from_static("from-origin"));
        response
    })
    .await;
    let proxy = Proxy::start(&config(
        &[("app", origin.addr)],
        r#"
[[route]]
pool = "app"

[route.request_headers]
set = { x-set = "new" }
add = { x-add = "added", x-keep = "second" }
remove = ["x-remove", "cookie"]

[route.response_headers]
set = { x-resp-set = "new" }
add = { x-resp-add = "from-proxy", x-frame-options = "DENY" }
remove = ["x-secret"]
"#,
    ))
    .await;
    let response = client()
        .get(proxy.url("/h"))
        .header("x-set", "old-1")
        .header("x-keep", "first")
        .header("x-remove", "gone")
        .header("cookie", "a=b")
        .header("x-untouched", "same")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let values = |headers: &http::HeaderMap, name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let got = response.headers().clone();
    assert_eq!(values(&got, "x-resp-set"), ["new"]);
    assert_eq!(values(&got, "x-resp-add"), ["from-origin", "from-proxy"]);
    assert_eq!(values(&got, "x-frame-options"), ["DENY"]);
    assert!(got.get("x-secret").is_none());

    let seen = origin.last().headers;
    assert_eq!(values(&seen, "x-set"), ["new"]);
    assert_eq!(values(&seen, "x-add"), ["added"]);
    assert_eq!(values(&seen, "x-keep"), ["first", "second"]);
    assert!(seen.get("x-remove").is_none());
    assert!(seen.get("cookie").is_none());
    assert_eq!(values(&seen, "x-untouched"), ["same"]);
}

/// An origin that reads the whole request body and answers with its length.
async fn body_length_origin() -> Origin {
    Origin::start(|request| async move {
        match http_body_util::BodyExt::collect(request.into_body()).await {
            Ok(body) => text(200, &body.to_bytes().len().to_string()),
            Err(_) => text(400, "body error"),
        }
    })
    .await
}

#[tokio::test]
async fn max_body_applies_per_route() {
    let origin = body_length_origin().await;
    let proxy = Proxy::start(&config(
        &[("app", origin.addr)],
        r#"
[server]
max_body = "1KiB"

[[route]]
path_prefix = "/small"
max_body = "10B"
pool = "app"

[[route]]
path_prefix = "/big"
max_body = "1MiB"
pool = "app"

[[route]]
pool = "app"
"#,
    ))
    .await;
    let post = |path: &'static str, size: usize| {
        let url = proxy.url(path);
        async move {
            let response = client()
                .post(url)
                .body(vec![b'x'; size])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(post("/small", 10).await, (200, "10".into()));
    assert_eq!(post("/small", 11).await.0, 413);
    assert_eq!(post("/big", 100_000).await, (200, "100000".into()));
    assert_eq!(post("/other", 1024).await, (200, "1024".into()));
    assert_eq!(
        post("/other", 1025).await.0,
        413,
        "the server-wide default applies"
    );
    // Over HTTP/2 too (where the connection cannot be closed for one stream).
    let response = h2_client()
        .post(proxy.url("/small"))
        .body(vec![b'x'; 11])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = h2_client()
        .post(proxy.url("/small"))
        .body(vec![b'x'; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let before = origin.count();

    // A chunked body (no Content-Length) over the cap is cut off while streaming.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789"))),
    );
    let response = client()
        .post(proxy.url("/small"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        origin.count(),
        before + 1,
        "the streamed request was started towards the origin, then cut off"
    );
}

#[tokio::test]
async fn upstream_header_timeout_applies_per_route() {
    let origin = Origin::start(|_request| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        text(200, "slow")
    })
    .await;
    let proxy = Proxy::start(&config(
        &[("app", origin.addr)],
        r#"
[[route]]
path = "/impatient"
timeouts = { upstream_header = "300ms" }
pool = "app"

[[route]]
pool = "app"
"#,
    ))
    .await;
    let response = client().get(proxy.url("/impatient")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    let response = client().get(proxy.url("/patient")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow");
}
