//! Backend identity hiding on the wire: revealing response headers removed (`[security]
//! hide_headers`), `Location`/`Content-Location` that name a backend pointed back at the host the
//! client used (plain and TLS listeners, HTTP/1.x and HTTP/2), backend 5xx pages replaced by
//! Gatehouse's own (`replace_error_pages`), and no error page or header of the proxy ever naming
//! a backend's address.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::tls::{TlsHttp, Trust, client_config};
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What careless backends say about themselves, header names in odd cases on purpose.
const REVEALING: &str = "Server: Apache/2.4.1 (Unix)\r\n\
    X-Powered-By: PHP/8.2.1\r\n\
    X-AspNet-Version: 4.0.30319\r\n\
    X-BACKEND-SERVER: web-3\r\n\
    x-backend-id: 7\r\n\
    X-Runtime: 0.012\r\n\
    X-Upstream-Addr: 10.0.0.7:8080\r\n";

/// The header names of [`REVEALING`], lower-cased.
const REVEALING_NAMES: [&str; 7] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-backend-server",
    "x-backend-id",
    "x-runtime",
    "x-upstream-addr",
];

/// An origin that speaks raw HTTP/1.1, so its response reaches the proxy exactly as written
/// (header case included). The response is made from the origin's own address, for backends
/// that build absolute URLs from their socket.
struct RawOrigin {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    /// Answers every request head (requests have no body) with `response(own address)`,
    /// keeping the connection open for the next one.
    async fn start(response: impl FnOnce(SocketAddr) -> String) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let response = Arc::new(response(addr));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        RawOrigin { addr, task }
    }

    /// An origin answering `status` with `headers` (raw lines) and `body`.
    async fn answering(status: &str, headers: &str, body: &str) -> RawOrigin {
        let (status, headers, body) = (status.to_owned(), headers.to_owned(), body.to_owned());
        RawOrigin::start(move |_| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
                body.len()
            )
        })
        .await
    }
}

/// A GET with `Host: host` over a fresh raw HTTP/1.1 connection.
async fn get_raw(proxy: &Proxy, host: &str, path: &str) -> RawResponse {
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await;
    conn.response().await
}

/// Asserts no header value and no body byte names `origin` (its `IP:PORT`, or its port after a
/// colon). The request id is left out: its random digits could spell the port by chance.
fn assert_names_no_backend(
    origin: SocketAddr,
    headers: &[(String, String)],
    body: &str,
    context: &str,
) {
    let address = origin.to_string();
    let port = format!(":{}", origin.port());
    let id = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
        .map_or("", |(_, v)| v.as_str());
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("x-request-id") {
            continue;
        }
        assert!(
            !value.contains(&address) && !value.contains(&port),
            "{context}: header {name} names the backend {address}: {value}"
        );
    }
    let body = if id.is_empty() {
        body.to_owned()
    } else {
        body.replace(id, "")
    };
    assert!(
        !body.contains(&address) && !body.contains(&port),
        "{context}: the body names the backend {address}: {body}"
    );
}

/// The headers of a reqwest response as (name, value) text pairs.
fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn security(settings: &str) -> String {
    format!("[security]\n{settings}\n")
}

// ---------------------------------------------------------------------------------------------
// hide_headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_settings_hide_the_backends_software_and_names() {
    let origin = RawOrigin::answering("200 OK", &format!("{REVEALING}X-Kept: yes\r\n"), "ok").await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;

    let response = get_raw(&proxy, "shop.example.test", "/").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"ok");
    assert_eq!(response.header("x-kept"), Some("yes"), "other headers pass");
    for name in REVEALING_NAMES {
        assert!(
            !response.has(name),
            "HTTP/1.1: {name} reached the client: {response:?}"
        );
    }
    assert!(response.has("x-request-id"));

    let response = h2_client()
        .get(proxy.url("/h2"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-kept"], "yes");
    for name in REVEALING_NAMES {
        assert!(
            !response.headers().contains_key(name),
            "HTTP/2: {name} reached the client: {:?}",
            response.headers()
        );
    }
}

#[tokio::test]
async fn a_custom_hide_headers_list_replaces_the_default_one() {
    let origin = RawOrigin::answering(
        "200 OK",
        "Server: Apache/2.4.1\r\nX-Powered-By: PHP/8\r\nX-Secret: s3cr3t\r\n\
         X-Internal-Node: db01\r\nX-Internal: kept\r\n",
        "ok",
    )
    .await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        &security("hide_headers = [\"x-secret\", \"X-Internal-*\"]"),
    ))
    .await;

    let response = get_raw(&proxy, "shop.example.test", "/").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(!response.has("x-secret"), "{response:?}");
    assert!(!response.has("x-internal-node"), "{response:?}");
    assert_eq!(response.header("x-internal"), Some("kept"));
    // The list replaces the defaults: what only they name passes.
    assert_eq!(response.header("server"), Some("Apache/2.4.1"));
    assert_eq!(response.header("x-powered-by"), Some("PHP/8"));

    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        &security("hide_headers = []"),
    ))
    .await;
    let response = get_raw(&proxy, "shop.example.test", "/").await;
    assert_eq!(
        response.header("x-secret"),
        Some("s3cr3t"),
        "an empty list hides nothing"
    );
}

#[test]
fn hide_headers_entries_that_would_break_responses_are_refused() {
    for (entry, fragment) in [
        ("content-*", "content-"),
        ("*", "every header"),
        ("x-*-id", "*"),
        ("bad name", "bad name"),
    ] {
        let text = single_pool_config(
            &["127.0.0.1:9".parse().expect("addr")],
            &security(&format!("hide_headers = [{entry:?}]")),
        );
        let error = match gatehouse::config::parse(std::path::Path::new("test.toml"), &text) {
            Ok(_) => panic!("hide_headers = [{entry:?}] should be refused"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("hide_headers") && error.contains(fragment),
            "{entry:?}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Location and Content-Location
// ---------------------------------------------------------------------------------------------

/// An origin that redirects to itself by address, as a backend that builds URLs from its socket
/// does, and names itself in `Content-Location`.
async fn self_redirecting_origin() -> RawOrigin {
    RawOrigin::start(|addr| {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{addr}/next?x=1\r\n\
             Content-Location: http://{addr}/doc.en\r\nContent-Length: 0\r\n\r\n"
        )
    })
    .await
}

#[tokio::test]
async fn a_redirect_to_the_backend_points_at_the_host_the_client_used() {
    let origin = self_redirecting_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;

    // HTTP/1.1 with a name.
    let response = get_raw(&proxy, "shop.example.test", "/go").await;
    assert_eq!(response.status, 302, "{response:?}");
    assert_eq!(
        response.header("location"),
        Some("http://shop.example.test/next?x=1")
    );
    assert_eq!(
        response.header("content-location"),
        Some("http://shop.example.test/doc.en")
    );
    assert_names_no_backend(origin.addr, &response.headers, "", "HTTP/1.1");

    // The proxy's own address and port, as a client that connected by IP sends it.
    let response = client()
        .get(proxy.url("/go"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("http://{}/next?x=1", proxy.addr).as_str()
    );
    assert_names_no_backend(origin.addr, &pairs(response.headers()), "", "reqwest");

    // HTTP/2: the host is the `:authority`.
    let h2_no_redirects = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("h2 client");
    let response = h2_no_redirects
        .get(proxy.url("/go"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("http://{}/next?x=1", proxy.addr).as_str()
    );
    assert_names_no_backend(origin.addr, &pairs(response.headers()), "", "HTTP/2");

    // HTTP/1.0 without Host: no public host to name, so a relative reference.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /go HTTP/1.0\r\n\r\n").await;
    let response = conn.response().await;
    assert_eq!(response.status, 302, "{response:?}");
    assert_eq!(response.header("location"), Some("/next?x=1"));
    assert_eq!(response.header("content-location"), Some("/doc.en"));
}

#[tokio::test]
async fn a_redirect_over_a_tls_listener_points_at_https() {
    let origin = self_redirecting_origin().await;
    let text = single_pool_config(&[origin.addr], "");
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\n";
    assert!(text.contains(listener));
    let text = text.replacen(listener, &format!("{listener}tls = \"self-signed\"\n"), 1);
    let proxy = Proxy::start(&text).await;

    const H1: &[&[u8]] = &[b"http/1.1"];
    const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
    for alpn in [H1, H2_H1] {
        let config = Arc::new(client_config(&Trust::Anything, alpn, None));
        let mut connection = TlsHttp::open(proxy.addr, Some("localhost"), config)
            .await
            .expect("TLS connection");
        let response = connection
            .get("shop.example.test", "/go", &[])
            .await
            .expect("TLS request");
        assert_eq!(response.status, 302, "{:?}", response.version);
        assert_eq!(
            response.header("location").as_deref(),
            Some("https://shop.example.test/next?x=1"),
            "{:?}",
            response.version
        );
        assert_eq!(
            response.header("content-location").as_deref(),
            Some("https://shop.example.test/doc.en")
        );
    }
}

#[tokio::test]
async fn locations_of_other_sites_and_relative_ones_are_untouched() {
    for location in [
        "https://example.org/elsewhere?x=1",
        "/login?next=%2Fcart",
        "next-page",
    ] {
        let origin =
            RawOrigin::answering("302 Found", &format!("Location: {location}\r\n"), "").await;
        let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
        let response = get_raw(&proxy, "shop.example.test", "/").await;
        assert_eq!(response.status, 302, "{response:?}");
        assert_eq!(response.header("location"), Some(location));
    }
}

#[tokio::test]
async fn rewrite_location_false_passes_the_backends_location() {
    let origin = self_redirecting_origin().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        &security("rewrite_location = false"),
    ))
    .await;
    let response = get_raw(&proxy, "shop.example.test", "/go").await;
    assert_eq!(
        response.header("location"),
        Some(format!("http://{}/next?x=1", origin.addr).as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Error pages
// ---------------------------------------------------------------------------------------------

/// An origin whose 5xx pages leak its internals, and whose 404 is an application answer.
async fn leaky_origin() -> RawOrigin {
    RawOrigin::start(|addr| {
        let body = format!("stack trace at db01.internal ({addr})");
        format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nServer: Apache/2.4.1\r\nX-Debug-Host: db01.internal\r\n\
             Set-Cookie: SERVERID=db01; Path=/\r\nRetry-After: 30\r\n\r\n{body}",
            body.len()
        )
    })
    .await
}

#[tokio::test]
async fn replace_error_pages_answers_backend_5xx_with_gatehouses_page() {
    let origin = leaky_origin().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        &security("replace_error_pages = true"),
    ))
    .await;

    let response = get_raw(&proxy, "shop.example.test", "/boom").await;
    assert_eq!(response.status, 500, "{response:?}");
    let body = String::from_utf8_lossy(&response.body).into_owned();
    let id = response
        .header("x-request-id")
        .expect("the page carries X-Request-Id")
        .to_owned();
    assert!(!body.contains("db01"), "the backend's page leaked: {body}");
    assert!(!body.contains("stack trace"), "{body}");
    assert!(
        body.contains("500") && body.contains(&id),
        "Gatehouse's page: {body}"
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        response.header("retry-after"),
        Some("30"),
        "Retry-After is kept"
    );
    for (name, value) in &response.headers {
        assert!(!value.contains("db01"), "header {name} leaked: {value}");
    }
    assert!(!response.has("server"));
    assert_names_no_backend(origin.addr, &response.headers, &body, "replaced 500");

    // A client preferring JSON gets the JSON page.
    let response = client()
        .get(proxy.url("/boom"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/json");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let body = response.text().await.expect("body");
    assert!(body.contains(&format!("\"request_id\":\"{id}\"")), "{body}");
    assert!(!body.contains("db01"), "{body}");
}

#[tokio::test]
async fn every_backend_5xx_is_replaced_but_4xx_pass() {
    for (status, replaced) in [
        ("502 Bad Gateway", true),
        ("503 Service Unavailable", true),
        ("501 Not Implemented", true),
        ("404 Not Found", false),
        ("422 Unprocessable Content", false),
    ] {
        let origin = RawOrigin::answering(status, "", "app says: db01 row missing").await;
        let proxy = Proxy::start(&single_pool_config(
            &[origin.addr],
            &security("replace_error_pages = true"),
        ))
        .await;
        let response = get_raw(&proxy, "shop.example.test", "/").await;
        assert_eq!(
            response.status.to_string(),
            &status[..3],
            "{status}: the status is kept"
        );
        let body = String::from_utf8_lossy(&response.body);
        assert_eq!(!body.contains("db01"), replaced, "{status}: {body}");
    }
}

#[tokio::test]
async fn by_default_backend_error_pages_pass() {
    let origin = leaky_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let response = get_raw(&proxy, "shop.example.test", "/boom").await;
    assert_eq!(response.status, 500, "{response:?}");
    let body = String::from_utf8_lossy(&response.body);
    assert!(
        body.starts_with("stack trace at db01.internal"),
        "replace_error_pages is off by default: {body}"
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn the_proxys_own_error_pages_never_name_the_backend() {
    let dead = dead_address().await;
    for settings in ["", "replace_error_pages = true"] {
        let proxy = Proxy::start(&single_pool_config(&[dead], &security(settings))).await;
        let response = get_raw(&proxy, "shop.example.test", "/").await;
        assert_eq!(response.status, 502, "{response:?}");
        let body = String::from_utf8_lossy(&response.body).into_owned();
        assert_names_no_backend(dead, &response.headers, &body, "502 (HTML)");

        let response = client()
            .get(proxy.url("/"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 502);
        let headers = pairs(response.headers());
        let body = response.text().await.expect("body");
        assert_names_no_backend(dead, &headers, &body, "502 (JSON)");
    }
}
