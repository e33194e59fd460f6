//! `gatehouse demo` works as the README says: the binary starts origins and a proxy, prints the
//! config and curl commands, and the proxy answers them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn the_demo_serves_the_routes_its_readme_shows() {
    let port = free_port();
    let tls_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    // The demo prints its config and the curl commands before serving; read until the last line.
    let printed = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("Ctrl-C stops the demo");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let printed = tokio::time::timeout(Duration::from_secs(30), printed)
        .await
        .expect("demo prints its banner")
        .expect("reader");
    assert!(
        printed.iter().any(|l| l.starts_with("[[listener]]")),
        "config printed: {printed:?}"
    );
    assert!(
        printed.iter().any(|l| l.starts_with("curl ")),
        "curl commands printed"
    );

    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let web = client.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(web.status(), 200);
    assert!(web.text().await.unwrap().starts_with("hello from origin-3"));

    let mut api_origins = Vec::new();
    for _ in 0..2 {
        let api = client
            .get(format!("{base}/api/users?id=7"))
            .send()
            .await
            .expect("GET /api");
        assert_eq!(api.headers()["x-served-by-route"], "api");
        let body = api.text().await.unwrap();
        assert!(body.contains("GET /users?id=7"), "prefix stripped: {body}");
        api_origins.push(body.lines().next().unwrap_or("").to_owned());
    }
    api_origins.sort();
    assert_eq!(api_origins, ["hello from origin-1", "hello from origin-2"]);

    let shop = client
        .get(format!("{base}/"))
        .header("host", "shop.example.test")
        .send()
        .await
        .expect("wildcard host");
    assert!(
        shop.text()
            .await
            .unwrap()
            .contains("host: shop.example.test")
    );

    let h2 = h2_client()
        .get(format!("{base}/api/x"))
        .send()
        .await
        .expect("h2");
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), 200);

    // The HTTPS listener with its self-signed certificate, as the README's curl -k does.
    let https = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sSk", &format!("https://localhost:{tls_port}/api/x")])
            .output()
            .expect("curl runs")
    })
    .await
    .expect("curl task");
    let body = String::from_utf8_lossy(&https.stdout);
    assert!(
        body.contains("x-forwarded-proto: https"),
        "HTTPS through the demo: {body}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("https://localhost:{tls_port}"))),
        "the HTTPS curl line names the real port"
    );

    let _ = child.kill();
    let _ = child.wait();
}
