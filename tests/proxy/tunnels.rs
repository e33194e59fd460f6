//! Timeouts of upgraded connections (tunnels): one that carries nothing for
//! `timeouts.tunnel_idle` is closed on both sides, one that keeps moving is not, and one whose
//! client takes nothing the backend pushes is closed after `timeouts.client_send`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Far above the configured timeouts; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(20);

/// What the origin does once a connection is upgraded.
#[derive(Clone, Copy)]
enum Tunnel {
    /// Sends back every byte it reads.
    Echo,
    /// Sends bytes as fast as the connection takes them, for ever.
    Push,
}

/// An origin that answers every request with `101 Switching Protocols` and then acts as
/// `tunnel`; counts its connections that have ended.
async fn upgrade_origin(tunnel: Tunnel) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ended = Arc::new(AtomicUsize::new(0));
    let counted = ended.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let ended = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x-test\r\n\r\n";
                if stream.write_all(switching).await.is_ok() {
                    match tunnel {
                        Tunnel::Echo => loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        },
                        Tunnel::Push => while stream.write_all(&buf).await.is_ok() {},
                    }
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, ended)
}

/// Opens a connection (with a receive buffer of `receive_buffer` bytes) and upgrades it.
async fn upgraded(proxy: &Proxy, receive_buffer: u32) -> TcpStream {
    let mut stream = connect_with_receive_buffer(proxy.addr, receive_buffer).await;
    stream
        .write_all(b"GET /tunnel HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: x-test\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, stream.read(&mut byte))
            .await
            .expect("a response head in time")
            .expect("read");
        assert_eq!(n, 1, "closed before the response head: {head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

async fn tunnel_proxy(tunnel: Tunnel, timeouts: &str) -> (Proxy, Arc<AtomicUsize>) {
    let (origin, ended) = upgrade_origin(tunnel).await;
    let proxy = Proxy::start(&single_pool_config(
        &[origin],
        &format!("[timeouts]\n{timeouts}\n"),
    ))
    .await;
    (proxy, ended)
}

#[tokio::test]
async fn a_tunnel_that_carries_nothing_is_closed_on_both_sides() {
    let (proxy, ended) = tunnel_proxy(Tunnel::Echo, "tunnel_idle = \"300ms\"").await;
    let mut stream = upgraded(&proxy, 64 << 10).await;
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut echo))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&echo, b"ping");
    assert!(
        closed_within(&mut stream, LIMIT).await,
        "the silent tunnel was not closed"
    );
    assert!(
        eventually(LIMIT, || ended.load(Ordering::SeqCst) == 1).await,
        "the backend side of the tunnel was not closed"
    );
    let closed = |reason| {
        proxy.metric(
            "gatehouse_tunnel_timeouts_total",
            &[("route", "default"), ("reason", reason)],
        )
    };
    assert_eq!((closed("idle"), closed("client_send")), (1, 0));
}

#[tokio::test]
async fn a_tunnel_that_keeps_moving_is_not_closed() {
    // Far longer in all than the idle timeout, each pause far shorter.
    let (proxy, ended) = tunnel_proxy(Tunnel::Echo, "tunnel_idle = \"1s\"").await;
    let mut stream = upgraded(&proxy, 64 << 10).await;
    for round in 0..30u32 {
        let message = round.to_be_bytes();
        stream.write_all(&message).await.unwrap();
        let mut echo = [0u8; 4];
        tokio::time::timeout(LIMIT, stream.read_exact(&mut echo))
            .await
            .expect("the echo in time")
            .expect("the tunnel is open");
        assert_eq!(echo, message);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ended.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.metric("gatehouse_tunnel_timeouts_total", &[]), 0);
}

#[tokio::test]
async fn a_tunnel_client_that_takes_nothing_is_closed_after_the_send_timeout() {
    // The backend pushes; the client never reads: the tunnel is busy until the buffers fill,
    // then nothing moves, and the send timeout (not the hour-long idle one) closes it.
    let (proxy, ended) = tunnel_proxy(Tunnel::Push, "client_send = \"300ms\"").await;
    let stream = upgraded(&proxy, 16 << 10).await;
    assert!(
        eventually(LIMIT, || ended.load(Ordering::SeqCst) == 1).await,
        "the tunnel of a client that takes nothing was not closed"
    );
    drop(stream);
    let closed = |reason| {
        proxy.metric(
            "gatehouse_tunnel_timeouts_total",
            &[("route", "default"), ("reason", reason)],
        )
    };
    assert_eq!((closed("idle"), closed("client_send")), (0, 1));
}
