//! `gatehouse demo`: three small origin servers on loopback and the real proxy in front of them,
//! configured by a generated config that is printed so it can be copied and edited.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::{config, server};

/// Runs the demo until Ctrl-C.
pub async fn run(listen: SocketAddr, tls_listen: SocketAddr) -> anyhow::Result<()> {
    let mut origins = Vec::new();
    for name in ["origin-1", "origin-2", "origin-3"] {
        origins.push(start_origin(name).await?);
    }
    let text = demo_config(listen, tls_listen, &origins);
    let config = config::parse(Path::new("<demo>"), &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy = server::start(&config).await.with_context(|| {
        format!(
            "starting the demo proxy on {listen} (is the port free? try --listen 127.0.0.1:8081)"
        )
    })?;
    let addr = proxy.local_addr();
    let tls_port = proxy
        .local_addrs()
        .get(1)
        .map_or(tls_listen.port(), |(_, a)| a.port());
    println!("# Gatehouse demo: three origins on loopback, the proxy on http://{addr}\n");
    println!("# The generated configuration (save it as gatehouse.toml and `gatehouse run` it):\n");
    println!("{text}");
    println!("# Try:");
    println!("curl -i http://{addr}/                         # the web pool (origin-3)");
    println!(
        "curl -i http://{addr}/api/users?id=7           # the api pool, round robin over origin-1 and origin-2, /api stripped"
    );
    println!("curl -i -H 'Host: shop.example.test' http://{addr}/   # wildcard host route");
    println!("curl -i --http2-prior-knowledge http://{addr}/api/x    # HTTP/2 (h2c) to the proxy");
    println!(
        "curl -ik https://localhost:{tls_port}/api/x          # HTTPS, self-signed certificate (-k accepts it)"
    );
    println!(
        "curl -i http://{addr}/nowhere -H 'Host: unknown.test' -H 'Accept: application/json'  # still routed: the web route is the default"
    );
    println!("\n# Ctrl-C stops the demo.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    proxy.shutdown().await;
    Ok(())
}

fn demo_config(listen: SocketAddr, tls_listen: SocketAddr, origins: &[SocketAddr]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "[[listener]]\nname = \"public\"\naddress = \"{listen}\"\n"
    );
    let _ = writeln!(
        text,
        "[[listener]]\nname = \"public-tls\"\naddress = \"{tls_listen}\"\ntls = \"self-signed\"   # a certificate for localhost, made at start-up\n"
    );
    let _ = writeln!(text, "[access_log]\nformat = \"text\"   # or \"json\"\n");
    let _ = writeln!(
        text,
        "[pool.api]\nbackends = [\"{}\", \"{}\"]\n\n[pool.web]\nbackends = [\"{}\"]\n",
        origins[0], origins[1], origins[2]
    );
    text.push_str(
        r#"[[route]]
name = "api"
path_prefix = "/api/"
strip_prefix = "/api"
pool = "api"
response_headers = { set = { "x-served-by-route" = "api" } }

[[route]]
name = "shop"
host = "*.example.test"
pool = "api"

[[route]]
name = "web"
pool = "web"
"#,
    );
    text
}

/// Starts one origin on an ephemeral loopback port; it answers every request with a short text
/// saying who it is and what it received.
async fn start_origin(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(origin_response(name, &request))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn origin_response(name: &str, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut body = format!(
        "hello from {name}\n{} {}\n",
        request.method(),
        request.uri()
    );
    for header in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ] {
        if let Some(value) = request.headers().get(header).and_then(|v| v.to_str().ok()) {
            let _ = writeln!(body, "{header}: {value}");
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid() {
        let origins: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], 9000 + p)))
            .collect();
        let text = demo_config(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            &origins,
        );
        let config = config::parse(Path::new("<demo>"), &text).expect("demo config is valid");
        assert_eq!(config.routes.len(), 3);
        assert!(config.listeners[1].tls.is_some());
    }
}
