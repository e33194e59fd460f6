//! Upstream failures and their error pages: refused, reset, timeouts, no route; what the client
//! sees (a generic page with a request id) and what the operator's log says.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Checks the things every error response must have, and returns its body.
async fn assert_generic_error(
    response: reqwest::Response,
    status: u16,
    backend: Option<SocketAddr>,
) -> String {
    assert_eq!(response.status(), status);
    let headers = response.headers().clone();
    assert!(
        headers.get("server").is_none(),
        "error pages carry no Server header: {headers:?}"
    );
    let id = headers
        .get("x-request-id")
        .expect("error responses carry X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!id.is_empty());
    let body = response.text().await.unwrap();
    assert!(body.contains(&id), "the page names the request id: {body}");
    assert!(body.contains(&status.to_string()), "{body}");
    if let Some(backend) = backend {
        let port = backend.port().to_string();
        // The (random) request id is left out: its hex digits could spell the port by chance.
        assert!(
            !body.replace(&id, "").contains(&port),
            "the page must not name the backend: {body}"
        );
        for (name, value) in &headers {
            let value = value.to_str().unwrap_or("");
            assert!(
                !value.contains(&port) || name == "x-request-id",
                "header {name} names the backend: {value}"
            );
        }
    }
    body
}

/// A backend that accepts, reads the request head, then closes without answering; with
/// `reset` the close is abortive (RST) rather than a FIN.
async fn hang_up_origin(reset: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
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
            if reset {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
            drop(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn refused_upstream_is_a_generic_502_html_page() {
    let dead = dead_address().await;
    let proxy = Proxy::start(&single_pool_config(&[dead], "")).await;
    let response = client().get(proxy.url("/x")).send().await.unwrap();
    let content_type = response.headers()["content-type"].clone();
    let body = assert_generic_error(response, 502, Some(dead)).await;
    assert!(content_type.to_str().unwrap().starts_with("text/html"));
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains("502 Bad Gateway"), "{body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn error_pages_are_json_when_the_client_asks_for_json() {
    let dead = dead_address().await;
    let proxy = Proxy::start(&single_pool_config(&[dead], "")).await;
    let response = client()
        .get(proxy.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = assert_generic_error(response, 502, Some(dead)).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON error page");
    assert_eq!(json["status"], 502);
    assert_eq!(json["error"], "Bad Gateway");
    assert_eq!(json["request_id"], id.as_str());
    assert_eq!(
        json.as_object().unwrap().len(),
        3,
        "nothing but status, error and request id: {json}"
    );
}

#[tokio::test]
async fn upstream_closing_without_an_answer_is_502() {
    let (addr, _task) = hang_up_origin(false).await;
    let proxy = Proxy::start(&single_pool_config(&[addr], "")).await;
    let response = client().get(proxy.url("/x")).send().await.unwrap();
    assert_generic_error(response, 502, Some(addr)).await;
}

#[tokio::test]
async fn upstream_reset_is_502() {
    let (addr, _task) = hang_up_origin(true).await;
    let proxy = Proxy::start(&single_pool_config(&[addr], "")).await;
    let response = client().get(proxy.url("/x")).send().await.unwrap();
    assert_generic_error(response, 502, Some(addr)).await;
    // The proxy is still serving.
    let response = client().get(proxy.url("/y")).send().await.unwrap();
    assert_generic_error(response, 502, Some(addr)).await;
}

#[tokio::test]
async fn upstream_response_header_timeout_is_504() {
    let origin = Origin::start(|_request| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(200, "too late")
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[[route]]\npool = \"app\"\ntimeouts = { upstream_header = \"300ms\" }\n",
    ))
    .await;
    let response = client().get(proxy.url("/slow")).send().await.unwrap();
    let body = assert_generic_error(response, 504, Some(origin.addr)).await;
    assert!(body.contains("504 Gateway Timeout"), "{body}");
    assert_eq!(origin.count(), 1, "the request did reach the origin");
}

/// A loopback listener whose accept queue is full, so the kernel drops further SYNs and a
/// connect to it hangs until the connecting side gives up. Returns the address and what must be
/// kept alive.
async fn blackhole() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // With a backlog of 0, Linux queues one connection; after that SYNs are dropped. Connect
    // until one attempt hangs, which proves the queue is full.
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(error)) => panic!("connect to the blackhole failed: {error}"),
            Err(_) => return (addr, socket, queued),
        }
    }
    panic!("could not fill the accept queue of a backlog-0 listener");
}

#[tokio::test]
async fn upstream_connect_timeout_is_504() {
    let (addr, _listener, _queued) = blackhole().await;
    let proxy = Proxy::start(&single_pool_config(
        &[addr],
        "connect_timeout = \"300ms\"\n",
    ))
    .await;
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        client().get(proxy.url("/x")).send(),
    )
    .await
    .expect("the proxy answers once its connect timeout passes")
    .unwrap();
    assert_generic_error(response, 504, Some(addr)).await;
}

#[tokio::test]
async fn no_route_is_a_generic_404_and_reaches_no_origin() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin.addr],
        "[[route]]\nhost = \"only.test\"\npool = \"app\"\n",
    ))
    .await;
    let response = client()
        .get(proxy.url("/x"))
        .header("host", "other.test")
        .send()
        .await
        .unwrap();
    let body = assert_generic_error(response, 404, Some(origin.addr)).await;
    assert!(body.contains("404 Not Found"), "{body}");
    assert_eq!(origin.count(), 0);
    // The route itself works.
    let response = client()
        .get(proxy.url("/x"))
        .header("host", "only.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_valid_client_request_id_is_kept_and_forwarded() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let response = client()
        .get(proxy.url("/x"))
        .header("x-request-id", "client-id_1.2:3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-id_1.2:3");
    let seen = origin.last();
    let forwarded: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
    assert_eq!(forwarded, ["client-id_1.2:3"]);
}

#[tokio::test]
async fn an_invalid_client_request_id_is_replaced_everywhere() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    for bad in ["has space", "semi;colon", &"x".repeat(129)] {
        let response = client()
            .get(proxy.url("/x"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32, "a fresh id: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let seen = origin.last();
        let forwarded: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
        assert_eq!(
            forwarded,
            [id.as_str()],
            "the origin sees the same fresh id"
        );
    }
}

#[tokio::test]
async fn error_responses_keep_a_valid_client_request_id_and_replace_an_invalid_one() {
    let dead = dead_address().await;
    let proxy = Proxy::start(&single_pool_config(&[dead], "")).await;
    let response = client()
        .get(proxy.url("/x"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    assert_generic_error(response, 502, Some(dead)).await;

    let response = client()
        .get(proxy.url("/x"))
        .header("x-request-id", "<script>")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "<script>");
    let body = assert_generic_error(response, 502, Some(dead)).await;
    assert!(!body.contains("<script>"), "{body}");
}

#[tokio::test]
async fn the_binary_logs_the_real_cause_with_the_request_id() {
    let dead = dead_address().await;
    let mut proxy = BinaryProxy::start(|listen| {
        format!(
            "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"{listen}\"\n\n\
             [pool.app]\nbackends = [\"{dead}\"]\n\n[[route]]\npool = \"app\"\n"
        )
    })
    .await;
    let response = client().get(proxy.url("/logged")).send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = assert_generic_error(response, 502, Some(dead)).await;
    assert!(!body.contains("connect"), "{body}");
    let logged = eventually(Duration::from_secs(10), || {
        proxy
            .stderr()
            .iter()
            .any(|line| line.contains(&id) && line.contains("connect"))
    })
    .await;
    assert!(
        logged,
        "no log line with the cause and request id {id}:\n{}",
        proxy.stderr().join("\n")
    );
    let line = proxy
        .stderr()
        .into_iter()
        .find(|line| line.contains(&id))
        .unwrap();
    assert!(
        line.contains(&dead.to_string()),
        "the log names the backend: {line}"
    );
    assert!(
        line.to_ascii_lowercase().contains("refused"),
        "the log has the real cause: {line}"
    );
    proxy.terminate();
    let status = proxy.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
