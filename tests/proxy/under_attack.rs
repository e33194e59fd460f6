//! Under attack: while one client address (127.0.0.2) holds 500 slowloris connections and floods
//! the proxy with requests, another (127.0.0.3) keeps getting every answer from the origin, and the
//! defences are seen to act on the attacker. How much slower the good client gets is measured by
//! bench/under_attack.sh, not asserted here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::*;

/// The attacker's source address (every loopback /8 address is local on Linux).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The well-behaved client's source address.
const GOOD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Slowloris connections the attacker keeps trying to hold at once.
const SLOWLORIS: usize = 500;
/// Flood tasks sending request after request on keep-alive connections.
const FLOOD_KEEPALIVE_TASKS: usize = 4;
/// Flood tasks opening a new connection for every request.
const FLOOD_NEW_CONNECTION_TASKS: usize = 4;
/// Requests the good client sends, one after the other.
const GOOD_REQUESTS: usize = 200;
/// Pause between two requests of the good client: under 100/s, the route's rate per client, so
/// the rate limit has no reason to refuse it.
const GOOD_PACE: Duration = Duration::from_millis(10);
/// Generous bound on one request of the good client (a liveness bound, not a latency target).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// `timeouts.client_header` of the proxy under attack.
const CLIENT_HEADER: Duration = Duration::from_secs(2);
/// A slowloris connection sends one more byte of its never-ending head this often.
const TRICKLE: Duration = Duration::from_millis(400);
/// A slowloris slot whose connection was closed opens another after this pause.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// A slowloris connection that lasted this long was accepted and held by the proxy; one that
/// ended sooner was refused at accept.
const HELD: Duration = Duration::from_secs(1);
/// No slowloris connection may last longer than this: `client_header` with ample room for a
/// loaded machine, and below the default `client_header` (10 s), so without the configured
/// timeout the test fails.
const LONGEST_SLOWLORIS: Duration = Duration::from_secs(8);
/// The attack lasts at least this long, longer than the default `client_header`, so that a
/// header timeout that never fires shows.
const ATTACK_AT_LEAST: Duration = Duration::from_secs(12);
/// The per-address connection cap of the listener: below the new-connection burst (40), so the
/// slowloris connections opened at once meet the cap first and the rate after it.
const MAX_CONNECTIONS_PER_IP: u64 = 32;

/// What an operator would put in front of an application exposed to the internet: per-address
/// connection caps and rates on the listener, a per-client rate limit on the route, a short
/// header timeout.
fn defended_config(origin: SocketAddr) -> String {
    let listener = format!(
        "max_connections = 4096\n\
         max_connections_per_ip = {MAX_CONNECTIONS_PER_IP}\n\
         max_requests_per_ip = 32\n\
         new_connections_per_ip = \"20/s\"\n\
         new_connections_burst = 40\n"
    );
    let extra = format!(
        "[timeouts]\nclient_header = \"{}s\"\nclient_idle = \"30s\"\n\n\
         [server]\nmax_requests_per_connection = 1000\n\n\
         [[route]]\nname = \"app\"\npool = \"app\"\n\
         rate_limit = {{ rate = \"100/s\", burst = 200, key = \"client_ip\" }}\n",
        CLIENT_HEADER.as_secs()
    );
    single_pool_config(&[origin], &extra).replacen(
        "address = \"127.0.0.1:0\"\n",
        &format!("address = \"127.0.0.1:0\"\n{listener}"),
        1,
    )
}

/// What the attacker saw.
#[derive(Default, Debug)]
struct AttackStats {
    /// Slowloris connections whose connect completed.
    slowloris_opened: AtomicU64,
    /// Slowloris connections closed by the proxy right away (refused at accept).
    slowloris_refused: AtomicU64,
    /// Slowloris connections the proxy held for a while, then closed (the header timeout).
    slowloris_cut: AtomicU64,
    /// The longest a slowloris connection stayed open, in milliseconds.
    slowloris_longest_ms: AtomicU64,
    /// Flood requests answered 200.
    flood_ok: AtomicU64,
    /// Flood requests answered 429.
    flood_limited: AtomicU64,
    /// Flood requests answered with another status.
    flood_other: AtomicU64,
    /// Flood requests whose connection was closed (or could not be opened) before an answer.
    flood_unanswered: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A connection from `source` (any port) to `proxy`; `None` if it cannot be opened in time.
async fn connect_from(source: Ipv4Addr, proxy: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
    tokio::time::timeout(REQUEST_LIMIT, socket.connect(proxy))
        .await
        .ok()?
        .ok()
}

/// One slowloris slot: opens a connection, starts a request head and adds a byte to it every
/// [`TRICKLE`], never finishing it; when the proxy closes it, opens another after a pause.
async fn slowloris(proxy: SocketAddr, stats: Arc<AttackStats>) {
    loop {
        let Some(mut stream) = connect_from(ATTACKER, proxy).await else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        add(&stats.slowloris_opened);
        let opened = Instant::now();
        let mut open = stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: a.test\r\nX-Slow: ")
            .await
            .is_ok();
        let mut buf = [0u8; 1024];
        while open {
            tokio::select! {
                read = stream.read(&mut buf) => open = matches!(read, Ok(n) if n > 0),
                _ = tokio::time::sleep(TRICKLE) => open = stream.write_all(b"a").await.is_ok(),
            }
            // Recorded as it goes: the task is dropped at the end of the attack.
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

/// Counts the answer to one flood request; false when the connection cannot carry another.
fn count_flood_answer(stats: &AttackStats, response: &str) -> bool {
    match status_of(response) {
        0 => {
            add(&stats.flood_unanswered);
            return false;
        }
        200 => add(&stats.flood_ok),
        429 => add(&stats.flood_limited),
        _ => add(&stats.flood_other),
    }
    !header_of(response, "connection").is_some_and(|value| value.eq_ignore_ascii_case("close"))
}

/// Sends requests as fast as answers come, on a keep-alive connection reopened when it ends.
async fn flood_keepalive(proxy: SocketAddr, stats: Arc<AttackStats>) {
    loop {
        let Some(mut stream) = connect_from(ATTACKER, proxy).await else {
            add(&stats.flood_unanswered);
            tokio::task::yield_now().await;
            continue;
        };
        loop {
            if stream
                .write_all(b"GET /flood HTTP/1.1\r\nHost: a.test\r\n\r\n")
                .await
                .is_err()
            {
                add(&stats.flood_unanswered);
                break;
            }
            let response = read_one_response(&mut stream, REQUEST_LIMIT).await;
            if !count_flood_answer(&stats, &response) {
                break;
            }
        }
    }
}

/// Opens a new connection for every request, as fast as answers (or refusals) come.
async fn flood_new_connections(proxy: SocketAddr, stats: Arc<AttackStats>) {
    loop {
        let Some(mut stream) = connect_from(ATTACKER, proxy).await else {
            add(&stats.flood_unanswered);
            tokio::task::yield_now().await;
            continue;
        };
        let request = b"GET /flood HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            add(&stats.flood_unanswered);
            continue;
        }
        let response = read_one_response(&mut stream, REQUEST_LIMIT).await;
        count_flood_answer(&stats, &response);
    }
}

/// Runs `attack` until `stop` turns true; dropping it closes its sockets.
fn spawn_until(
    mut stop: watch::Receiver<bool>,
    attack: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = attack => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    })
}

/// 500 sockets on the attacker's side, their peers in the proxy, origin and good-client sockets
/// and the other tests of this binary: raise the soft open-file limit to the hard limit, and
/// scale the slowloris connections down (saying so) if even that is too low.
fn slowloris_connections() -> usize {
    const HEADROOM: u64 = 500;
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let affordable = limit.saturating_sub(HEADROOM) as usize;
    if affordable < SLOWLORIS {
        eprintln!(
            "under_attack: the open-file limit is {limit} even after raising it to the hard \
             limit; using {affordable} slowloris connections instead of {SLOWLORIS}"
        );
    }
    SLOWLORIS
        .min(affordable)
        .max(MAX_CONNECTIONS_PER_IP as usize * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_client_is_served_while_another_address_attacks() {
    let slowloris_count = slowloris_connections();
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&defended_config(origin.addr)).await;
    let listener = [("listener", "127.0.0.1:0")];

    let attack_started = Instant::now();
    let stats = Arc::new(AttackStats::default());
    let (stop, stopped) = watch::channel(false);
    let mut attackers = Vec::new();
    for _ in 0..slowloris_count {
        attackers.push(spawn_until(
            stopped.clone(),
            slowloris(proxy.addr, stats.clone()),
        ));
    }
    for _ in 0..FLOOD_KEEPALIVE_TASKS {
        attackers.push(spawn_until(
            stopped.clone(),
            flood_keepalive(proxy.addr, stats.clone()),
        ));
    }
    for _ in 0..FLOOD_NEW_CONNECTION_TASKS {
        attackers.push(spawn_until(
            stopped.clone(),
            flood_new_connections(proxy.addr, stats.clone()),
        ));
    }
    // The good client starts once every slowloris slot has had a connection.
    assert!(
        eventually(Duration::from_secs(20), || read(&stats.slowloris_opened)
            >= slowloris_count as u64)
        .await,
        "the attacker could not open its slowloris connections: {stats:?}"
    );

    let good = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(GOOD))
        .timeout(REQUEST_LIMIT)
        .build()
        .expect("client");
    let mut failures = Vec::new();
    for n in 0..GOOD_REQUESTS {
        let path = format!("/good/{n}");
        match good.get(proxy.url(&path)).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                if status != 200 || body != path {
                    failures.push(format!("{path}: {status} {body:?}"));
                }
            }
            Err(error) => failures.push(format!("{path}: {error}")),
        }
        tokio::time::sleep(GOOD_PACE).await;
    }

    // Keep the pressure on past the default header timeout, then look at the proxy mid-attack.
    tokio::time::sleep_until(attack_started + ATTACK_AT_LEAST).await;
    let open_connections = proxy.metric("gatehouse_active_connections", &listener);
    let refused_per_ip = proxy.metric(
        "gatehouse_connections_refused_total",
        &[listener[0], ("reason", "per_ip")],
    );
    let refused_rate = proxy.metric(
        "gatehouse_connections_refused_total",
        &[listener[0], ("reason", "rate")],
    );
    let rate_limited = proxy.metric("gatehouse_rate_limited_total", &[("route", "app")]);
    stop.send_replace(true);
    for attacker in attackers {
        tokio::time::timeout(REQUEST_LIMIT, attacker)
            .await
            .expect("an attacker task did not stop")
            .expect("an attacker task panicked");
    }

    eprintln!(
        "under_attack: {stats:?}; proxy: {open_connections} open, refused per_ip \
         {refused_per_ip}, rate {refused_rate}, rate-limited {rate_limited}"
    );
    assert!(
        failures.is_empty(),
        "{} of {GOOD_REQUESTS} good requests failed under attack: {failures:#?}",
        failures.len()
    );
    // The defences acted on the attacker, and on it alone.
    assert!(
        open_connections <= MAX_CONNECTIONS_PER_IP + 4,
        "{open_connections} connections open: the per-address cap did not hold"
    );
    assert!(
        refused_per_ip > 0,
        "no connection refused by max_connections_per_ip"
    );
    assert!(
        read(&stats.slowloris_cut) > 0,
        "no held slowloris connection was closed by the header timeout"
    );
    assert!(
        proxy.metric("gatehouse_client_header_timeouts_total", &[]) > 0,
        "the proxy counted no header timeout"
    );
    let longest = Duration::from_millis(read(&stats.slowloris_longest_ms));
    assert!(
        longest <= LONGEST_SLOWLORIS,
        "a slowloris connection stayed open {longest:?} with client_header = {CLIENT_HEADER:?}"
    );
    assert!(
        refused_rate > 0,
        "no connection refused by new_connections_per_ip"
    );
    assert!(
        read(&stats.slowloris_refused) > 0,
        "the attacker saw no refusal"
    );
    assert!(
        read(&stats.flood_limited) > 0 && rate_limited > 0,
        "the flood was never answered 429"
    );
    assert!(
        read(&stats.flood_ok) > 0,
        "the attacker never got through at all (the test's flood is broken)"
    );
    // The origin saw the good client's every request.
    let seen = origin.seen.lock().expect("seen lock");
    let good_seen = seen
        .iter()
        .filter(|request| request.uri.path().starts_with("/good/"))
        .count();
    assert_eq!(good_seen, GOOD_REQUESTS);
}
