//! Load client of bench/under_attack.sh: `good` measures one well-behaved client's latency
//! (paced requests, one after the other, from its own source address); `attack` runs slowloris
//! connections and a request flood from another source address until SIGTERM or a time bound.
//!
//! Hand-written rather than wrk or h2load because neither can choose its source address, and
//! the proxy's per-address defences are what is being measured.
//!
//! ```text
//! under_attack_client good   PROXY SOURCE REQUESTS PACE_MS
//! under_attack_client attack PROXY SOURCE SLOWLORIS FLOOD_TASKS MAX_SECONDS READY_FILE
//! ```
//! Each prints one JSON object on stdout when it is done.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Bound on one request, on opening one connection.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// A slowloris connection adds one byte to its never-ending request head this often.
const TRICKLE: Duration = Duration::from_millis(400);
/// A slowloris connection that lasted this long was accepted and held by the proxy.
const HELD: Duration = Duration::from_secs(1);
/// Pause before a slowloris slot reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("good") if args.len() == 6 => good(&args[2..]).await,
        Some("attack") if args.len() == 8 => attack(&args[2..]).await,
        _ => Err(
            "usage: under_attack_client good PROXY SOURCE REQUESTS PACE_MS | \
                  attack PROXY SOURCE SLOWLORIS FLOOD_TASKS MAX_SECONDS READY_FILE"
                .into(),
        ),
    };
    if let Err(error) = result {
        eprintln!("under_attack_client: {error}");
        std::process::exit(2);
    }
}

/// A connection from `source` (any port) to `proxy`, within [`REQUEST_LIMIT`].
async fn connect_from(source: IpAddr, proxy: SocketAddr) -> Result<TcpStream, Failure> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = tokio::time::timeout(REQUEST_LIMIT, socket.connect(proxy)).await??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

// ---------------------------------------------------------------------------------------------
// The good client

async fn good(args: &[String]) -> Result<(), Failure> {
    let proxy: SocketAddr = args[0].parse()?;
    let source: IpAddr = args[1].parse()?;
    let requests: usize = args[2].parse()?;
    let pace = Duration::from_millis(args[3].parse()?);
    let mut latencies_us = Vec::with_capacity(requests);
    let (mut errors, mut not_200, mut connections) = (0u64, 0u64, 0u64);
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    for _ in 0..requests {
        let started = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_LIMIT, async {
            // Reconnect when the proxy ended the connection (max_requests_per_connection): a
            // real client pays for that too, so it is inside the measured time.
            let reusable = match sender.as_mut() {
                Some(open) => open.ready().await.is_ok(),
                None => false,
            };
            if !reusable {
                let stream = connect_from(source, proxy).await?;
                let (open, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                connections += 1;
                sender = Some(open);
            }
            let open = sender.as_mut().ok_or("no connection")?;
            let request = http::Request::get("/good")
                .header(http::header::HOST, "bench.test")
                .body(Empty::<Bytes>::new())?;
            let response = open.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, Failure>(status)
        })
        .await;
        latencies_us.push(started.elapsed().as_micros() as u64);
        match outcome {
            Ok(Ok(status)) if status == 200 => {}
            Ok(Ok(_)) => not_200 += 1,
            Ok(Err(_)) | Err(_) => {
                errors += 1;
                sender = None;
            }
        }
        tokio::time::sleep_until(started + pace).await;
    }
    latencies_us.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies_us.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies_us.get(index).copied().unwrap_or(0)
    };
    let mean = latencies_us.iter().sum::<u64>() / (latencies_us.len().max(1) as u64);
    println!(
        "{{\"requests\":{requests},\"errors\":{errors},\"not_200\":{not_200},\
         \"connections\":{connections},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\
         \"max_us\":{},\"mean_us\":{mean}}}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The attacker

/// What the attacker saw.
#[derive(Default)]
struct AttackStats {
    slowloris_opened: AtomicU64,
    slowloris_refused: AtomicU64,
    slowloris_cut: AtomicU64,
    slowloris_longest_ms: AtomicU64,
    flood_ok: AtomicU64,
    flood_limited: AtomicU64,
    flood_other: AtomicU64,
    flood_unanswered: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn attack(args: &[String]) -> Result<(), Failure> {
    let proxy: SocketAddr = args[0].parse()?;
    let source: IpAddr = args[1].parse()?;
    let slowloris_count: usize = args[2].parse()?;
    let flood_tasks: usize = args[3].parse()?;
    let max = Duration::from_secs(args[4].parse()?);
    let ready_file = args[5].clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    let stats = Arc::new(AttackStats::default());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..slowloris_count {
        tasks.spawn(slowloris(proxy, source, stats.clone()));
    }
    for n in 0..flood_tasks {
        if n % 2 == 0 {
            tasks.spawn(flood_keepalive(proxy, source, stats.clone()));
        } else {
            tasks.spawn(flood_new_connections(proxy, source, stats.clone()));
        }
    }
    // Ready once every slowloris slot has had a connection (or after 20 s, whatever it has).
    let ready_by = started + Duration::from_secs(20);
    while stats.slowloris_opened.load(Ordering::Relaxed) < slowloris_count as u64
        && Instant::now() < ready_by
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(
        &ready_file,
        format!("{}\n", stats.slowloris_opened.load(Ordering::Relaxed)),
    )?;
    let flood_from = Instant::now();
    let flood_before = flood_total(&stats);
    tokio::select! {
        _ = terminate.recv() => {}
        () = tokio::time::sleep_until(started + max) => {}
    }
    let flood_seconds = flood_from.elapsed().as_secs_f64();
    let flood_during = flood_total(&stats) - flood_before;
    tasks.abort_all();
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "{{\"seconds\":{:.1},\"slowloris\":{slowloris_count},\"slowloris_opened\":{},\
         \"slowloris_refused\":{},\"slowloris_cut\":{},\"slowloris_longest_ms\":{},\
         \"flood_ok\":{},\"flood_limited\":{},\"flood_other\":{},\"flood_unanswered\":{},\
         \"flood_per_second\":{:.0}}}",
        started.elapsed().as_secs_f64(),
        read(&stats.slowloris_opened),
        read(&stats.slowloris_refused),
        read(&stats.slowloris_cut),
        read(&stats.slowloris_longest_ms),
        read(&stats.flood_ok),
        read(&stats.flood_limited),
        read(&stats.flood_other),
        read(&stats.flood_unanswered),
        flood_during as f64 / flood_seconds.max(0.001)
    );
    Ok(())
}

/// Flood attempts so far (answered or not).
fn flood_total(stats: &AttackStats) -> u64 {
    [
        &stats.flood_ok,
        &stats.flood_limited,
        &stats.flood_other,
        &stats.flood_unanswered,
    ]
    .iter()
    .map(|counter| counter.load(Ordering::Relaxed))
    .sum()
}

/// One slowloris slot: a request head that never ends, a byte at a time; reconnects when the
/// proxy closes it.
async fn slowloris(proxy: SocketAddr, source: IpAddr, stats: Arc<AttackStats>) {
    loop {
        let Ok(mut stream) = connect_from(source, proxy).await else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        add(&stats.slowloris_opened);
        let opened = Instant::now();
        let mut open = stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: bench.test\r\nX-Slow: ")
            .await
            .is_ok();
        let mut buf = [0u8; 1024];
        while open {
            tokio::select! {
                read = stream.read(&mut buf) => open = matches!(read, Ok(n) if n > 0),
                () = tokio::time::sleep(TRICKLE) => open = stream.write_all(b"a").await.is_ok(),
            }
            stats
                .slowloris_longest_ms
                .fetch_max(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        if opened.elapsed() >= HELD {
            add(&stats.slowloris_cut);
        } else {
            add(&stats.slowloris_refused);
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Reads one `Content-Length`-framed response; its status, or `None` if the connection ended
/// (or stalled) first. Also says whether the proxy asked to close the connection.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + REQUEST_LIMIT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let close = head.lines().any(|line| line == "connection: close");
                return Some((status, close));
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

fn count(stats: &AttackStats, answer: Option<(u16, bool)>) -> bool {
    match answer {
        None => {
            add(&stats.flood_unanswered);
            false
        }
        Some((status, close)) => {
            match status {
                200 => add(&stats.flood_ok),
                429 => add(&stats.flood_limited),
                _ => add(&stats.flood_other),
            }
            !close
        }
    }
}

/// Requests as fast as answers come, on a keep-alive connection reopened when it ends.
async fn flood_keepalive(proxy: SocketAddr, source: IpAddr, stats: Arc<AttackStats>) {
    let mut buf = Vec::new();
    loop {
        let Ok(mut stream) = connect_from(source, proxy).await else {
            add(&stats.flood_unanswered);
            tokio::task::yield_now().await;
            continue;
        };
        loop {
            let sent = stream
                .write_all(b"GET /flood HTTP/1.1\r\nHost: bench.test\r\n\r\n")
                .await;
            let answer = match sent {
                Ok(()) => read_response(&mut stream, &mut buf).await,
                Err(_) => None,
            };
            if !count(&stats, answer) {
                break;
            }
        }
    }
}

/// A new connection for every request, as fast as answers (or refusals) come.
async fn flood_new_connections(proxy: SocketAddr, source: IpAddr, stats: Arc<AttackStats>) {
    let mut buf = Vec::new();
    loop {
        let Ok(mut stream) = connect_from(source, proxy).await else {
            add(&stats.flood_unanswered);
            tokio::task::yield_now().await;
            continue;
        };
        let sent = stream
            .write_all(b"GET /flood HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
            .await;
        let answer = match sent {
            Ok(()) => read_response(&mut stream, &mut buf).await,
            Err(_) => None,
        };
        count(&stats, answer);
    }
}
