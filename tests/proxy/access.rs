//! Access control end to end: route and listener IP lists (inline and from files, re-read on
//! reload), `allow_methods`, basic auth against an htpasswd file, and the client address behind
//! trusted proxies deciding the lists.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// `[[route]]` named `guarded` to pool `app` with `settings` appended, after `before` (settings
/// tables such as `[security]`).
fn guarded(origin: &Origin, before: &str, settings: &str) -> String {
    single_pool_config(
        &[origin.addr],
        &format!("{before}\n[[route]]\nname = \"guarded\"\npool = \"app\"\n{settings}\n"),
    )
}

async fn status(proxy: &Proxy, method: &str, headers: &[(&str, &str)]) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method, proxy.url("/x"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn parse(text: &str) -> gatehouse::config::Config {
    gatehouse::config::parse(Path::new("test.toml"), text).expect("valid config")
}

async fn reload(proxy: &Proxy, text: &str) -> anyhow::Result<()> {
    proxy.server.as_ref().unwrap().reload(&parse(text)).await
}

#[tokio::test]
async fn a_denied_address_gets_403_and_the_origin_sees_nothing() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&guarded(&origin, "", "deny = [\"127.0.0.1/32\"]")).await;
    assert_eq!(status(&proxy, "GET", &[]).await, 403);
    assert_eq!(status(&proxy, "POST", &[]).await, 403);
    assert_eq!(origin.count(), 0, "a denied request reached the origin");
}

#[tokio::test]
async fn an_address_outside_the_allow_list_gets_403() {
    let origin = Origin::echo().await;
    let routes = "[[route]]\nname = \"lab\"\npath_prefix = \"/lab\"\npool = \"app\"\n\
                  allow = [\"10.0.0.0/8\"]\n\n\
                  [[route]]\nname = \"local\"\npath_prefix = \"/local\"\npool = \"app\"\n\
                  allow = [\"10.0.0.0/8\", \"127.0.0.0/8\", \"::1\"]\n";
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], routes)).await;
    let lab = client().get(proxy.url("/lab/x")).send().await.unwrap();
    assert_eq!(lab.status(), 403);
    assert_eq!(origin.count(), 0);
    let local = client().get(proxy.url("/local/x")).send().await.unwrap();
    assert_eq!(local.status(), 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn an_allow_list_file_is_read_again_on_reload() {
    let origin = Origin::echo().await;
    let dir = TempDir::new("access-allow");
    let list = dir.join("allow.txt");
    std::fs::write(&list, "# the lab only\n10.0.0.0/8\n").unwrap();
    let text = guarded(
        &origin,
        "",
        &format!("allow = [\"file:{}\"]", list.display()),
    );
    let proxy = Proxy::start(&text).await;
    assert_eq!(status(&proxy, "GET", &[]).await, 403);

    std::fs::write(&list, "10.0.0.0/8\n127.0.0.1   # this machine\n").unwrap();
    reload(&proxy, &text).await.expect("reload");
    assert_eq!(status(&proxy, "GET", &[]).await, 200);

    // A bad line fails the new configuration (already when it is read, as a reload reads it),
    // naming the list's line, and the list in force stays.
    std::fs::write(&list, "127.0.0.1\nnot-an-address\n").unwrap();
    let error = gatehouse::config::parse(Path::new("test.toml"), &text)
        .expect_err("the broken list is refused")
        .to_string();
    assert!(error.contains(":2:"), "{error}");
    assert!(error.contains("not-an-address"), "{error}");
    assert_eq!(status(&proxy, "GET", &[]).await, 200);
}

#[tokio::test]
async fn a_method_outside_allow_methods_gets_405_with_allow() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&guarded(&origin, "", "allow_methods = [\"GET\"]")).await;
    let response = client()
        .post(proxy.url("/x"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    // Serving GET means serving HEAD (RFC 9110 §9.3.2).
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(origin.count(), 0);
    assert_eq!(status(&proxy, "GET", &[]).await, 200);
    assert_eq!(status(&proxy, "HEAD", &[]).await, 200);
    assert_eq!(status(&proxy, "DELETE", &[]).await, 405);
    assert_eq!(origin.count(), 2);
}

/// An htpasswd file with `alice:secret` (bcrypt, cost 4: cheap for a test).
fn htpasswd(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(&path, format!("# staff\nalice:{hash}\n")).unwrap();
    path
}

#[tokio::test]
async fn basic_auth_challenges_refuses_and_admits() {
    let origin = Origin::echo().await;
    let dir = TempDir::new("access-auth");
    let file = htpasswd(&dir);
    let routes = format!(
        "[[route]]\nname = \"staff\"\npath_prefix = \"/staff\"\npool = \"app\"\n\
         basic_auth = {{ realm = \"Staff area\", htpasswd = \"{}\" }}\n\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api\"\npool = \"app\"\n",
        file.display()
    );
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], &routes)).await;

    let none = client().get(proxy.url("/staff/x")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Basic realm=\"Staff area\", charset=\"UTF-8\""
    );
    for (user, password) in [("alice", "wrong"), ("mallory", "secret"), ("alice", "")] {
        let refused = client()
            .get(proxy.url("/staff/x"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{user}:{password}");
        assert!(refused.headers().contains_key("www-authenticate"));
    }
    let malformed = client()
        .get(proxy.url("/staff/x"))
        .header("authorization", "Basic not*base64")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 401);
    assert_eq!(
        origin.count(),
        0,
        "an unauthenticated request reached the origin"
    );

    for _ in 0..3 {
        let admitted = client()
            .get(proxy.url("/staff/x"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(admitted.status(), 200);
    }
    // The credentials were the proxy's: the backend never sees them.
    assert!(
        origin.last().headers.get("authorization").is_none(),
        "the proxy passed on the credentials it checked"
    );
    // A route without basic_auth passes Authorization through for the backend's own checks.
    let api = client()
        .get(proxy.url("/api/x"))
        .header("authorization", "Bearer backend-token")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert_eq!(
        origin.last().headers["authorization"],
        "Bearer backend-token"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_x_forwarded_for_decides_the_lists() {
    let origin = Origin::echo().await;
    let text = guarded(
        &origin,
        "[security]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        "deny = [\"203.0.113.0/24\"]",
    );
    let proxy = Proxy::start(&text).await;
    assert_eq!(
        status(&proxy, "GET", &[("x-forwarded-for", "203.0.113.9")]).await,
        403
    );
    // The right-most untrusted address is the client; a spoofed one on its left is ignored.
    assert_eq!(
        status(
            &proxy,
            "GET",
            &[("x-forwarded-for", "198.51.100.7, 203.0.113.9")]
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &proxy,
            "GET",
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.7")]
        )
        .await,
        200
    );
    // No header: the trusted peer itself is the client.
    assert_eq!(status(&proxy, "GET", &[]).await, 200);
}

#[tokio::test]
async fn bytes_a_client_wrote_that_are_not_ascii_do_not_hide_the_address_its_proxy_appended() {
    // The client sends `X-Forwarded-For: é`; its proxy (trusted) appends the address it saw to
    // that line. Reading the line whole as text failed, and the trusted proxy itself was taken
    // for the client: a denied client got through.
    let origin = Origin::echo().await;
    let text = guarded(
        &origin,
        "[security]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        "deny = [\"203.0.113.0/24\"]",
    );
    let proxy = Proxy::start(&text).await;
    let request = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
        X-Forwarded-For: \xc3\xa9, 203.0.113.9\r\n\r\n";
    let answer = raw_exchange(proxy.addr, request, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    // And an allowed client behind the same bytes still gets through.
    let request = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
        X-Forwarded-For: \xc3\xa9, 198.51.100.7\r\n\r\n";
    let answer = raw_exchange(proxy.addr, request, Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored_for_the_lists() {
    let origin = Origin::echo().await;
    let deny = guarded(&origin, "", "deny = [\"203.0.113.0/24\"]");
    let proxy = Proxy::start(&deny).await;
    assert_eq!(
        status(&proxy, "GET", &[("x-forwarded-for", "203.0.113.9")]).await,
        200
    );
    // Nor can a client talk its way onto an allow list.
    let allow = guarded(&origin, "", "allow = [\"10.0.0.0/8\"]");
    reload(&proxy, &allow).await.expect("reload");
    assert_eq!(
        status(&proxy, "GET", &[("x-forwarded-for", "10.0.0.1")]).await,
        403
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_forwarded_can_name_the_client() {
    let origin = Origin::echo().await;
    let text = guarded(
        &origin,
        "[security]\ntrusted_proxies = [\"127.0.0.1/32\"]\nclient_ip_header = \"forwarded\"\n",
        "deny = [\"2001:db8::/32\"]",
    );
    let proxy = Proxy::start(&text).await;
    assert_eq!(
        status(
            &proxy,
            "GET",
            &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]
        )
        .await,
        403
    );
    // X-Forwarded-For is not the configured header.
    assert_eq!(
        status(&proxy, "GET", &[("x-forwarded-for", "2001:db8::7")]).await,
        200
    );
    assert_eq!(
        status(&proxy, "GET", &[("forwarded", "for=unknown")]).await,
        200
    );
}

#[tokio::test]
async fn an_untrusted_clients_forwarding_headers_are_replaced_not_extended() {
    // Recommended wiring: a client that is not a trusted proxy cannot seed X-Forwarded-For, so a
    // backend reading its left-most entry is not fooled either.
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    assert_eq!(
        status(&proxy, "GET", &[("x-forwarded-for", "203.0.113.9")]).await,
        200
    );
    assert_eq!(origin.last().headers["x-forwarded-for"], "127.0.0.1");

    // The same for every header in which a proxy vouches for the client, whether or not
    // Gatehouse writes its own (`Forwarded` is off by default, `X-Real-IP` it never writes).
    let claims = [
        ("x-real-ip", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;proto=https"),
        ("true-client-ip", "203.0.113.9"),
        ("x-forwarded-port", "443"),
    ];
    assert_eq!(status(&proxy, "GET", &claims).await, 200);
    let seen = origin.last().headers;
    for (name, _) in claims {
        assert!(!seen.contains_key(name), "{name} reached the backend");
    }

    // Through a trusted proxy the chain is kept and extended.
    let trusted = single_pool_config(
        &[origin.addr],
        "[security]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    reload(&proxy, &trusted).await.expect("reload");
    assert_eq!(
        status(&proxy, "GET", &[("x-forwarded-for", "203.0.113.9")]).await,
        200
    );
    assert_eq!(
        origin.last().headers["x-forwarded-for"],
        "203.0.113.9, 127.0.0.1"
    );
    // and what it says about the client reaches the backend.
    assert_eq!(status(&proxy, "GET", &claims).await, 200);
    assert_eq!(origin.last().headers["x-real-ip"], "203.0.113.9");
}

/// A config whose only listener carries `guard` (e.g. `deny = [...]`).
fn listener_config(origin: &Origin, guard: &str) -> String {
    format!(
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n{guard}\n\n\
         [pool.app]\nbackends = [\"{}\"]\n\n[[route]]\npool = \"app\"\n",
        origin.addr
    )
}

#[tokio::test]
async fn a_listener_deny_closes_the_connection_unanswered() {
    let origin = Origin::echo().await;
    let request = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n";
    for guard in ["deny = [\"127.0.0.1/32\"]", "allow = [\"10.0.0.0/8\"]"] {
        let proxy = Proxy::start(&listener_config(&origin, guard)).await;
        let answer = raw_exchange(proxy.addr, request, Duration::from_secs(2)).await;
        assert_eq!(answer, "", "{guard}: the connection was answered");
    }
    assert_eq!(origin.count(), 0);
    // An allowed peer is served.
    let proxy = Proxy::start(&listener_config(&origin, "allow = [\"127.0.0.0/8\"]")).await;
    let answer = raw_exchange(proxy.addr, request, Duration::from_millis(500)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}
