//! The PROXY protocol. Listeners with `proxy_protocol = true` read a v1 or v2 header before
//! anything else (TLS included) and believe its address only from a trusted peer: then the
//! origin's `X-Forwarded-For`, the access log, route and listener lists and per-client limits all
//! see the announced client. Connections without a valid header are closed unanswered. Pools
//! with `proxy_protocol = "v1" | "v2"` start every backend connection with a header naming the
//! client, and never let two client connections share one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::tls::{Trust, client_config};
use crate::support::*;

/// Only a bound for liveness; nothing here waits on a timer.
const LIMIT: Duration = Duration::from_secs(10);

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header announcing `client` (connected to 192.0.2.1:80).
fn v1(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let (family, dest) = if client.is_ipv4() {
        ("TCP4", "192.0.2.1")
    } else {
        ("TCP6", "2001:db8::1")
    };
    format!(
        "PROXY {family} {} {dest} {} 80\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// A v2 `PROXY` header announcing `client` (connected to 192.0.2.1:80 or [2001:db8::1]:80).
fn v2(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let mut payload = Vec::new();
    let family = match client.ip() {
        IpAddr::V4(ip) => {
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(&[192, 0, 2, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            payload.extend_from_slice(&ip.octets());
            payload.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            0x21
        }
    };
    payload.extend_from_slice(&client.port().to_be_bytes());
    payload.extend_from_slice(&80u16.to_be_bytes());
    v2_raw(0x21, family, &payload)
}

fn v2_raw(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.push(command);
    bytes.push(family);
    bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// An origin answering with the `X-Forwarded-For` it received.
async fn xff_origin() -> Origin {
    Origin::start(|request| async move {
        let xff = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        text(200, &xff)
    })
    .await
}

/// One listener with `proxy_protocol = true` and `listener` keys, in front of `origin`, with
/// `extra` appended (a `[security]` table, routes).
fn proxied_listener(origin: SocketAddr, listener: &str, extra: &str) -> String {
    single_pool_config(&[origin], extra).replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\nproxy_protocol = true\n{listener}\n"),
        1,
    )
}

const TRUSTED: &str = "[security]\ntrusted_proxies = [\"127.0.0.1\"]\n";
const UNTRUSTED: &str = "[security]\ntrusted_proxies = [\"192.0.2.250\"]\n";

/// Sends `header` then `GET path` on a new connection; the status and body of the answer, or
/// `None` when the connection was closed unanswered.
async fn get_after(
    proxy: SocketAddr,
    header: &[u8],
    path: &str,
    extra: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n").as_bytes(),
    );
    if stream.write_all(&bytes).await.is_err() {
        return None;
    }
    answer(&mut stream).await
}

async fn answer(stream: &mut TcpStream) -> Option<(u16, String)> {
    let response = read_one_response(stream, LIMIT).await;
    if response.is_empty() {
        return None;
    }
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status_of(&response), body))
}

/// The value of `gatehouse_connections_refused_total` for `reason` (0 when absent).
fn refused(proxy: &Proxy, reason: &str) -> u64 {
    let needle = format!("reason=\"{reason}\"}} ");
    proxy
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("gatehouse_connections_refused_total{"))
        .find_map(|l| {
            l.split_once(&needle)
                .map(|(_, n)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn from_a_trusted_peer_the_announced_address_is_the_client_v1_and_v2() {
    let origin = xff_origin().await;
    let proxy = Proxy::start(&proxied_listener(origin.addr, "", TRUSTED)).await;
    for (header, client) in [
        (v1("203.0.113.9:5555"), "203.0.113.9"),
        (v1("[2001:db8::9]:5555"), "2001:db8::9"),
        (v2("203.0.113.10:5555"), "203.0.113.10"),
        (v2("[2001:db8::10]:5555"), "2001:db8::10"),
    ] {
        assert_eq!(
            get_after(proxy.addr, &header, "/", "").await,
            Some((200, client.to_owned())),
            "{}",
            String::from_utf8_lossy(&header)
        );
    }
    // v1 UNKNOWN and v2 LOCAL announce nobody: the peer stays the client.
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), v2_raw(0x20, 0x00, &[])] {
        assert_eq!(
            get_after(proxy.addr, &header, "/", "").await,
            Some((200, "127.0.0.1".to_owned()))
        );
    }
}

#[tokio::test]
async fn from_an_untrusted_peer_the_header_is_read_and_ignored_v1_and_v2() {
    let origin = xff_origin().await;
    let proxy = Proxy::start(&proxied_listener(origin.addr, "", UNTRUSTED)).await;
    for header in [v1("203.0.113.9:5555"), v2("203.0.113.9:5555")] {
        assert_eq!(
            get_after(proxy.addr, &header, "/", "").await,
            Some((200, "127.0.0.1".to_owned()))
        );
    }
    // Nor can such a client claim an address through X-Forwarded-For.
    assert_eq!(
        get_after(
            proxy.addr,
            &v1("203.0.113.9:5555"),
            "/",
            "X-Forwarded-For: 198.51.100.1\r\n"
        )
        .await,
        Some((200, "127.0.0.1".to_owned()))
    );
}

#[tokio::test]
async fn the_announced_client_is_the_peer_for_forwarding_headers() {
    let origin = xff_origin().await;
    let proxy = Proxy::start(&proxied_listener(origin.addr, "", TRUSTED)).await;
    // The announced client is not a trusted proxy: what it says in X-Forwarded-For is its own
    // say-so, replaced.
    assert_eq!(
        get_after(
            proxy.addr,
            &v2("203.0.113.9:1"),
            "/",
            "X-Forwarded-For: 198.51.100.1\r\n"
        )
        .await,
        Some((200, "203.0.113.9".to_owned()))
    );
    // An announced client that is itself a trusted proxy (a CDN in front of the balancer, say)
    // is believed about the client before it.
    let proxy = Proxy::start(&proxied_listener(
        origin.addr,
        "",
        "[security]\ntrusted_proxies = [\"127.0.0.1\", \"203.0.113.0/24\"]\n",
    ))
    .await;
    assert_eq!(
        get_after(
            proxy.addr,
            &v2("203.0.113.9:1"),
            "/",
            "X-Forwarded-For: 198.51.100.1\r\n"
        )
        .await,
        Some((200, "198.51.100.1, 203.0.113.9".to_owned()))
    );
}

#[tokio::test]
async fn route_and_listener_lists_and_the_access_log_see_the_announced_client() {
    let origin = xff_origin().await;
    let dir = TempDir::new("proxy-protocol-log");
    let log = dir.join("access.log");
    let config = proxied_listener(
        origin.addr,
        "deny = [\"198.51.100.0/24\"]",
        &format!(
            "{TRUSTED}\n[[route]]\nname = \"guarded\"\npool = \"app\"\ndeny = [\"203.0.113.0/24\"]\n"
        ),
    )
    .replace(
        "[access_log]\nenabled = false\n",
        &format!("[access_log]\nformat = \"json\"\npath = {:?}\n", log.display().to_string()),
    );
    let proxy = Proxy::start(&config).await;
    assert_eq!(
        get_after(proxy.addr, &v1("203.0.113.9:1"), "/", "")
            .await
            .map(|a| a.0),
        Some(403),
        "the route's deny list sees the announced client"
    );
    assert_eq!(
        get_after(proxy.addr, &v1("192.0.2.77:1"), "/", "").await,
        Some((200, "192.0.2.77".to_owned()))
    );
    let before = origin.count();
    assert_eq!(
        get_after(proxy.addr, &v2("198.51.100.7:1"), "/", "").await,
        None,
        "the listener's deny list closes the announced client's connection"
    );
    assert_eq!(origin.count(), before);
    assert_eq!(refused(&proxy, "acl"), 1);
    // The access log names the announced clients.
    let ok = eventually(LIMIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().count() >= 2 && text.ends_with('\n')
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ok, "two access log lines expected:\n{text}");
    let clients: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json line")["client"].to_string()
        })
        .collect();
    assert_eq!(clients, ["\"203.0.113.9\"", "\"192.0.2.77\""]);
}

#[tokio::test]
async fn per_client_connection_limits_count_announced_clients() {
    let origin = xff_origin().await;
    let proxy = Proxy::start(&proxied_listener(
        origin.addr,
        "max_connections_per_ip = 1",
        TRUSTED,
    ))
    .await;
    let open = |header: Vec<u8>| async move {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream.write_all(&header).await.expect("write");
        stream
    };
    let mut first = open(v1("203.0.113.1:1")).await;
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        answer(&mut first).await,
        Some((200, "203.0.113.1".to_owned()))
    );
    // Same TCP peer, another announced client: a place of its own.
    let mut other = open(v1("203.0.113.2:1")).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        answer(&mut other).await,
        Some((200, "203.0.113.2".to_owned()))
    );
    // The first client again, while its connection is open: over its limit.
    let mut again = open(v2("203.0.113.1:2")).await;
    assert!(
        read_until_closed(&mut again, LIMIT)
            .await
            .is_some_and(|s| s.is_empty())
    );
    assert_eq!(refused(&proxy, "per_ip"), 1);
    drop((first, other));
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_and_reach_nothing() {
    let origin = xff_origin().await;
    let proxy = Proxy::start(&proxied_listener(origin.addr, "", TRUSTED)).await;
    let mut long_v1 = b"PROXY TCP4 ".to_vec();
    long_v1.resize(200, b'1');
    let mut huge_v2 = V2_SIGNATURE.to_vec();
    huge_v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\x16\x03\x01\x00\x05hello".to_vec(),
        b"PROXY TCP4 203.0.113.9 192.0.2.1 99999 80\r\n".to_vec(),
        b"PROXY TCP9 203.0.113.9 192.0.2.1 1 80\r\n".to_vec(),
        long_v1,
        huge_v2,
        // A v2 header with an undefined address family.
        v2_raw(0x21, 0x51, &[0; 12]),
    ];
    let count = garbage.len() + 1;
    for header in garbage {
        let reply = get_after(proxy.addr, &header, "/", "").await;
        assert_eq!(reply, None, "{:?}", String::from_utf8_lossy(&header));
    }
    // Truncated: 12 bytes of addresses announced, 4 sent, then the client is done writing.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(&v2_raw(0x21, 0x11, &[0; 12])[..20])
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(
        read_until_closed(&mut stream, LIMIT).await.as_deref(),
        Some("")
    );
    assert_eq!(origin.count(), 0, "nothing reached the origin");
    assert!(
        eventually(LIMIT, || refused(&proxy, "proxy_protocol") == count as u64).await,
        "every closed connection counted:\n{}",
        proxy.metrics_text()
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_client_header_timeout() {
    let origin = xff_origin().await;
    let config = proxied_listener(
        origin.addr,
        "",
        &format!("{TRUSTED}\n[timeouts]\nclient_header = \"300ms\"\n"),
    );
    let proxy = Proxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    // Half a header, then nothing.
    stream.write_all(b"PROXY TCP4 203.0.").await.unwrap();
    assert_eq!(
        read_until_closed(&mut stream, LIMIT).await.as_deref(),
        Some("")
    );
    assert!(eventually(LIMIT, || refused(&proxy, "proxy_protocol") == 1).await);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn a_tls_listener_reads_the_header_before_the_handshake() {
    let origin = xff_origin().await;
    let config = proxied_listener(origin.addr, "tls = \"self-signed\"", TRUSTED);
    let proxy = Proxy::start(&config).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    tcp.write_all(&v2("203.0.113.44:1234"))
        .await
        .expect("header");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(
        &Trust::Anything,
        &[b"http/1.1"],
        None,
    )));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(LIMIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(LIMIT, tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.ends_with("203.0.113.44"), "{response}");
}

/// What a PROXY-protocol backend saw of one request.
#[derive(Debug, Clone)]
struct Record {
    /// Which of its connections (in accept order).
    conn: usize,
    /// The header's client, `ip:port`, or `unknown`.
    announced: String,
    path: String,
}

/// A backend that expects a PROXY header (v1 or v2) on every connection, then serves HTTP/1.1
/// or h2c.
struct ProxiedOrigin {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxiedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxiedOrigin {
    async fn start() -> ProxiedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let records = records.clone();
            tokio::spawn(async move {
                for conn in 0.. {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let records = records.clone();
                    tokio::spawn(async move {
                        // Without a header, the connection is closed: as a strict backend does.
                        let Some(announced) = read_announced(&mut stream).await else {
                            return;
                        };
                        let service =
                            service_fn(move |request: http::Request<hyper::body::Incoming>| {
                                records.lock().unwrap().push(Record {
                                    conn,
                                    announced: announced.clone(),
                                    path: request.uri().path().to_owned(),
                                });
                                async move { Ok::<_, std::convert::Infallible>(text(200, "ok")) }
                            });
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    });
                }
            })
        };
        ProxiedOrigin {
            addr,
            records,
            task,
        }
    }

    fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }
}

/// Reads a PROXY header byte-exactly (written here, not with the proxy's parser, so the test
/// checks the bytes on the wire): `ip:port` of the announced client, `unknown`, or `None`.
async fn read_announced(stream: &mut TcpStream) -> Option<String> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.ok()?;
    if first[0] == b'P' {
        let mut line = vec![b'P'];
        while !line.ends_with(b"\r\n") && line.len() <= 107 {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.ok()?;
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).ok()?;
        let parts: Vec<&str> = line.trim_end().split(' ').collect();
        return match parts.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Some("unknown".to_owned()),
            ["PROXY", "TCP4" | "TCP6", source, _, port, _] => {
                Some(SocketAddr::new(source.parse().ok()?, port.parse().ok()?).to_string())
            }
            _ => None,
        };
    }
    let mut fixed = [0u8; 16];
    fixed[0] = first[0];
    stream.read_exact(&mut fixed[1..]).await.ok()?;
    if &fixed[..12] != V2_SIGNATURE || fixed[12] >> 4 != 2 {
        return None;
    }
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes([fixed[14], fixed[15]]))];
    stream.read_exact(&mut payload).await.ok()?;
    if fixed[12] & 0x0f == 0 {
        return Some("unknown".to_owned());
    }
    match fixed[13] >> 4 {
        1 => {
            let ip: [u8; 4] = payload.get(..4)?.try_into().ok()?;
            let port = u16::from_be_bytes(payload.get(8..10)?.try_into().ok()?);
            Some(SocketAddr::new(IpAddr::from(ip), port).to_string())
        }
        2 => {
            let ip: [u8; 16] = payload.get(..16)?.try_into().ok()?;
            let port = u16::from_be_bytes(payload.get(32..34)?.try_into().ok()?);
            Some(SocketAddr::new(IpAddr::from(ip), port).to_string())
        }
        _ => None,
    }
}

/// A config with a plain listener (or `listener_keys`), pool `app` sending `version` headers to
/// `backend`, with a health check, and `extra` appended.
fn proxied_pool(backend: SocketAddr, version: &str, listener_keys: &str, extra: &str) -> String {
    format!(
        "[access_log]\nenabled = false\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n{listener_keys}\n\n\
         [pool.app]\nbackends = [\"{backend}\"]\nproxy_protocol = \"{version}\"\n\
         health_check = {{ path = \"/health\", interval = \"1s\" }}\n\n\
         [[route]]\nname = \"default\"\npool = \"app\"\n{extra}"
    )
}

#[tokio::test]
async fn pools_announce_each_client_on_connections_of_its_own_v1_and_v2() {
    for (version, protocol) in [("v1", "http1"), ("v2", "http1"), ("v2", "h2c")] {
        let backend = ProxiedOrigin::start().await;
        let config = proxied_pool(backend.addr, version, "", "").replacen(
            "[pool.app]\n",
            &format!("[pool.app]\nprotocol = \"{protocol}\"\n"),
            1,
        );
        let proxy = Proxy::start(&config).await;
        // The health checks got in: with a header that announces nobody.
        let health: Vec<Record> = backend
            .records()
            .into_iter()
            .filter(|r| r.path == "/health")
            .collect();
        assert!(
            !health.is_empty(),
            "{version}: a first check before traffic"
        );
        assert!(
            health.iter().all(|r| r.announced == "unknown"),
            "{version}: {health:?}"
        );

        // Two clients on keep-alive connections, their requests interleaved.
        let mut a = TcpStream::connect(proxy.addr).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr).await.unwrap();
        let ports = HashMap::from([
            ("a", a.local_addr().unwrap().to_string()),
            ("b", b.local_addr().unwrap().to_string()),
        ]);
        for round in 0..3 {
            for (name, stream) in [("a", &mut a), ("b", &mut b)] {
                let request = format!("GET /{name}/{round} HTTP/1.1\r\nHost: x\r\n\r\n");
                stream.write_all(request.as_bytes()).await.unwrap();
                assert_eq!(
                    answer(stream).await,
                    Some((200, "ok".to_owned())),
                    "{version}"
                );
            }
        }
        let records: Vec<Record> = backend
            .records()
            .into_iter()
            .filter(|r| r.path != "/health")
            .collect();
        assert_eq!(records.len(), 6, "{version}: {records:?}");
        let mut conns: HashMap<&str, HashSet<usize>> = HashMap::new();
        for record in &records {
            let sender = &record.path[1..2];
            assert_eq!(
                record.announced, ports[sender],
                "{version}: a request of client {sender} went on a connection announcing another"
            );
            conns
                .entry(if sender == "a" { "a" } else { "b" })
                .or_default()
                .insert(record.conn);
        }
        assert!(
            conns["a"].is_disjoint(&conns["b"]),
            "{version}: a backend connection was shared: {records:?}"
        );
        drop(backend);
    }
}

#[tokio::test]
async fn a_trusted_announced_client_is_what_the_pool_announces() {
    let backend = ProxiedOrigin::start().await;
    let proxy = Proxy::start(&proxied_pool(
        backend.addr,
        "v2",
        "proxy_protocol = true",
        &format!("\n{TRUSTED}"),
    ))
    .await;
    assert_eq!(
        get_after(proxy.addr, &v1("203.0.113.5:4444"), "/via", "").await,
        Some((200, "ok".to_owned()))
    );
    let via: Vec<Record> = backend
        .records()
        .into_iter()
        .filter(|r| r.path == "/via")
        .collect();
    assert_eq!(via.len(), 1);
    assert_eq!(via[0].announced, "203.0.113.5:4444");
}

#[test]
fn bad_values_are_refused_with_their_line_and_key() {
    let pool = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\nproxy_protocol = \"v3\"\n\n[[route]]\npool = \"app\"\n";
    let error = gatehouse::config::parse(Path::new("pp.toml"), pool)
        .expect_err("v3 is refused")
        .to_string();
    assert!(error.contains("pp.toml:6:"), "{error}");
    assert!(error.contains("proxy_protocol"), "{error}");
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = \"yes\"\n\n[pool.app]\nbackends = [\"127.0.0.1:1\"]\n\n[[route]]\npool = \"app\"\n";
    let error = gatehouse::config::parse(Path::new("pp.toml"), listener)
        .expect_err("a string is refused")
        .to_string();
    assert!(error.contains("pp.toml:3:"), "{error}");
    assert!(error.contains("proxy_protocol"), "{error}");
}
