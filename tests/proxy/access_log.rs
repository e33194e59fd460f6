//! The access log: one line per request, JSON or combined-like text, written to a file by a
//! background thread.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// Far above what the writer thread needs; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(10);

/// A config logging to `path` in `format`, with pool `app` on `backend` and a route `api` for
/// host `api.test` (everything else is a 404).
fn config(path: &std::path::Path, format: &str, backend: SocketAddr) -> String {
    format!(
        "[access_log]\nformat = \"{format}\"\npath = {path:?}\n\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [pool.app]\nbackends = [\"{backend}\"]\n\n\
         [[route]]\nname = \"api\"\nhost = \"api.test\"\npool = \"app\"\n",
        path = path.display().to_string(),
    )
}

/// The file's complete lines once there are `count` of them.
async fn lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let read = || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let complete = |text: &str| text.is_empty() || text.ends_with('\n');
    let ready = eventually(LIMIT, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        complete(&text) && text.lines().count() >= count
    })
    .await;
    let found = read();
    assert!(
        ready,
        "expected {count} access log lines, found {}:\n{}",
        found.len(),
        found.join("\n")
    );
    found
}

/// Sends a request and returns (status, X-Request-Id, body length).
async fn send(request: reqwest::RequestBuilder) -> (u16, String, usize) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.bytes().await.unwrap();
    (status, id, body.len())
}

#[tokio::test]
async fn json_lines_describe_each_request() {
    let dir = TempDir::new("access-json");
    let path = dir.join("access.log");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&config(&path, "json", origin.addr)).await;
    let client = client();

    let get = send(
        client
            .get(proxy.url("/a/b?x=1&y=%22"))
            .header("host", "api.test")
            .header("user-agent", "log-test/1.0")
            .header("referer", "http://ref.test/page"),
    )
    .await;
    let post = send(
        client
            .post(proxy.url("/submit"))
            .header("host", "api.test")
            .body("some body"),
    )
    .await;
    let miss = send(
        client
            .get(proxy.url("/nowhere"))
            .header("host", "other.test"),
    )
    .await;
    assert_eq!((get.0, post.0, miss.0), (200, 200, 404));

    let lines = lines(&path, 3).await;
    assert_eq!(lines.len(), 3, "one line per request: {lines:#?}");
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no line with request id {id}: {lines:#?}"))
    };
    let upstream = origin.addr.to_string();

    let line = by_id(&get.1);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "api.test");
    assert_eq!(line["target"], "/a/b?x=1&y=%22");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], get.2 as u64);
    assert_eq!(line["bytes"], "/a/b?x=1&y=%22".len() as u64);
    assert_eq!(line["route"], "api");
    assert_eq!(line["upstream"], upstream.as_str());
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["user_agent"], "log-test/1.0");
    assert_eq!(line["referer"], "http://ref.test/page");
    assert_eq!(line["complete"], true);
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    assert!(line["time"].as_str().is_some_and(|t| !t.is_empty()));

    let line = by_id(&post.1);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["target"], "/submit");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], "/submit".len() as u64);
    assert_eq!(line["route"], "api");
    assert_eq!(line["upstream"], upstream.as_str());

    let line = by_id(&miss.1);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "other.test");
    assert_eq!(line["target"], "/nowhere");
    assert_eq!(line["status"], 404);
    assert_eq!(line["bytes"], miss.2 as u64);
    assert_eq!(line["route"], "-");
    assert_eq!(line["upstream"], "-");
}

#[tokio::test]
async fn a_client_request_id_is_logged_as_sent() {
    let dir = TempDir::new("access-id");
    let path = dir.join("access.log");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&config(&path, "json", origin.addr)).await;
    let (status, id, _) = send(
        client()
            .get(proxy.url("/traced"))
            .header("host", "api.test")
            .header("x-request-id", "trace-me-42"),
    )
    .await;
    assert_eq!((status, id.as_str()), (200, "trace-me-42"));
    let lines = lines(&path, 1).await;
    let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(record["request_id"], "trace-me-42");
    assert_eq!(origin.last().headers["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn upstream_errors_are_logged_with_their_status_and_backend() {
    let dir = TempDir::new("access-502");
    let path = dir.join("access.log");
    let dead = dead_address().await;
    let proxy = Proxy::start(&config(&path, "json", dead)).await;
    let (status, id, bytes) =
        send(client().get(proxy.url("/down")).header("host", "api.test")).await;
    assert_eq!(status, 502);
    let lines = lines(&path, 1).await;
    let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(record["status"], 502);
    assert_eq!(record["request_id"], id.as_str());
    assert_eq!(record["route"], "api");
    assert_eq!(record["upstream"], dead.to_string().as_str());
    assert_eq!(record["bytes"], bytes as u64);
}

#[tokio::test]
async fn text_lines_have_the_combined_fields() {
    let dir = TempDir::new("access-text");
    let path = dir.join("access.log");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&config(&path, "text", origin.addr)).await;
    let client = client();
    let ok = send(
        client
            .get(proxy.url("/t?q=1"))
            .header("host", "api.test")
            .header("user-agent", "ua \"quoted\"")
            .header("referer", "http://ref.test/"),
    )
    .await;
    let miss = send(client.get(proxy.url("/x")).header("host", "nope.test")).await;
    assert_eq!((ok.0, miss.0), (200, 404));

    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let line = lines
        .iter()
        .find(|l| l.ends_with(&format!("id={}", ok.1)))
        .unwrap_or_else(|| panic!("no line for {}: {lines:#?}", ok.1));
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(&format!(
            r#""GET /t?q=1 HTTP/1.1" 200 {} "http://ref.test/" "ua \"quoted\"""#,
            ok.2
        )),
        "{line}"
    );
    assert!(line.contains("host=\"api.test\""), "{line}");
    assert!(line.contains("route=\"api\""), "{line}");
    assert!(
        line.contains(&format!("upstream=\"{}\"", origin.addr)),
        "{line}"
    );
    assert!(line.contains(" duration="), "{line}");
    assert!(!line.contains("aborted"), "{line}");

    let line = lines
        .iter()
        .find(|l| l.ends_with(&format!("id={}", miss.1)))
        .unwrap_or_else(|| panic!("no line for {}: {lines:#?}", miss.1));
    assert!(
        line.contains(&format!(r#""GET /x HTTP/1.1" 404 {} "" """#, miss.2)),
        "{line}"
    );
    assert!(line.contains("route=\"-\" upstream=\"-\""), "{line}");
}

#[tokio::test]
async fn control_characters_from_the_client_cannot_forge_log_lines() {
    let dir = TempDir::new("access-inject");
    let path = dir.join("access.log");
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&config(&path, "text", origin.addr)).await;
    // A header value may carry obs-text and tabs; the text log must keep them on one line
    // and inside their quotes.
    let (status, id, _) = send(
        client()
            .get(proxy.url("/i"))
            .header("host", "api.test")
            .header("user-agent", "evil\t\" 200 0 \"x"),
    )
    .await;
    assert_eq!(status, 200);
    let lines = lines(&path, 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert!(line.ends_with(&format!("id={id}")), "{line}");
    assert!(!line.contains('\t'), "{line}");
    assert!(line.contains(r#""evil\t\" 200 0 \"x""#), "{line}");
}

#[tokio::test]
async fn a_response_the_client_abandons_is_logged_as_incomplete() {
    let dir = TempDir::new("access-abort");
    let path = dir.join("access.log");
    // The origin sends one chunk, then holds the response open.
    let origin = Origin::start(|_request| async {
        let first = futures_util::stream::once(async {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(
                bytes::Bytes::from_static(b"first-chunk"),
            ))
        });
        let rest = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"never")))
        });
        let body = http_body_util::StreamBody::new(futures_util::StreamExt::chain(first, rest));
        http::Response::new(http_body_util::BodyExt::boxed(body))
    })
    .await;
    let proxy = Proxy::start(&config(&path, "json", origin.addr)).await;
    let mut response = client()
        .get(proxy.url("/abandoned"))
        .header("host", "api.test")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let chunk = response.chunk().await.unwrap().expect("the first chunk");
    assert_eq!(&chunk[..], b"first-chunk");
    drop(response);

    let lines = lines(&path, 1).await;
    let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(record["request_id"], id.as_str());
    assert_eq!(record["status"], 200);
    assert_eq!(record["complete"], false);
    assert_eq!(record["bytes"], "first-chunk".len() as u64);
}
