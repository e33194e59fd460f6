//! HTTP/1.1 upgrades (WebSocket and friends): once the backend answers `101 Switching
//! Protocols`, both connections become a byte tunnel, copied in both directions until either
//! side closes, the tunnel carries nothing for `timeouts.tunnel_idle`, or the client takes
//! nothing sent to it for `timeouts.client_send`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::error::ProxyError;
use crate::body::{ResponseBody, UpstreamBody};
use crate::server::DrainToken;
use crate::upstream::BackendLease;

/// How long a tunnel may go without moving bytes.
#[derive(Debug, Clone, Copy)]
pub struct TunnelTimeouts {
    /// `timeouts.tunnel_idle`: no byte either way; `None` for no limit.
    pub idle: Option<Duration>,
    /// `timeouts.client_send`: a write to the client blocked with nothing taken; `None` for no
    /// limit.
    pub send: Option<Duration>,
}

/// The counts of tunnels closed by their watcher, by why (`gatehouse_tunnel_timeouts_total`).
#[derive(Debug, Clone)]
pub struct TunnelStalls {
    /// Closed after `timeouts.tunnel_idle` with no byte either way.
    pub idle: metrics::Counter,
    /// Closed after `timeouts.client_send` with the client taking nothing.
    pub client_send: metrics::Counter,
}

/// Why a tunnel's watcher closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Nothing moved either way for `timeouts.tunnel_idle`.
    Idle,
    /// A write to the client blocked for `timeouts.client_send`.
    ClientSend,
}

/// Turns the backend's 101 response into the client's, and splices the two upgraded
/// connections together in a task of their own.
///
/// The task holds `drain`, so graceful shutdown waits for open tunnels up to its grace period,
/// and `lease`, so the tunnel counts as a request in flight to its backend while it is open.
pub fn splice(
    mut response: Response<UpstreamBody>,
    client_upgrade: OnUpgrade,
    drain: DrainToken,
    lease: Option<BackendLease>,
    timeouts: TunnelTimeouts,
    stalls: TunnelStalls,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _drain = drain;
        let _lease = lease;
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let traffic = Arc::new(TunnelTraffic::default());
        let mut client = Counted {
            io: TokioIo::new(client),
            traffic: traffic.clone(),
            client: true,
        };
        let mut upstream = Counted {
            io: TokioIo::new(upstream),
            traffic: traffic.clone(),
            client: false,
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((to_upstream, to_client)) => {
                    tracing::debug!(to_upstream, to_client, "upgraded connection closed");
                }
                Err(error) => tracing::debug!(%error, "upgraded connection ended with an error"),
            },
            why = traffic.stalled(timeouts) => {
                let (counter, reason) = match why {
                    Stall::Idle => (&stalls.idle, "nothing moved for tunnel_idle"),
                    Stall::ClientSend => (&stalls.client_send, "the client takes no bytes"),
                };
                counter.increment(1);
                tracing::debug!(reason, "upgraded connection closed: it stalled");
            }
        }
    });
    Ok(response.map(|_| ResponseBody::empty()))
}

/// What a tunnel's watcher sees of its traffic: counts only, so the copies read no clock.
#[derive(Debug, Default)]
struct TunnelTraffic {
    /// Reads and writes that moved bytes, either way.
    moved: AtomicU64,
    /// Writes to the client that moved bytes, shifted left by one; the low bit is set while a
    /// write to the client is blocked.
    to_client: AtomicU64,
}

impl TunnelTraffic {
    /// Ends when the tunnel has stalled, with why: nothing moved for `idle`, or a write to the
    /// client blocked for `send`. Looks every quarter of the shorter timeout, so a stall is
    /// seen between its timeout and a quarter past it.
    async fn stalled(&self, timeouts: TunnelTimeouts) -> Stall {
        let Some(shortest) = [timeouts.idle, timeouts.send].into_iter().flatten().min() else {
            return std::future::pending().await;
        };
        let mut moved = (self.moved.load(Ordering::Relaxed), Instant::now());
        let mut sent = (self.to_client.load(Ordering::Relaxed), Instant::now());
        loop {
            tokio::time::sleep(shortest / 4).await;
            let now = Instant::now();
            let moved_now = self.moved.load(Ordering::Relaxed);
            if moved_now != moved.0 {
                moved = (moved_now, now);
            } else if timeouts.idle.is_some_and(|idle| now - moved.1 >= idle) {
                return Stall::Idle;
            }
            let sent_now = self.to_client.load(Ordering::Relaxed);
            if sent_now != sent.0 {
                sent = (sent_now, now);
            } else if sent_now & 1 == 1 && timeouts.send.is_some_and(|send| now - sent.1 >= send) {
                return Stall::ClientSend;
            }
        }
    }
}

/// One side of a tunnel, counting what moves through it into the tunnel's [`TunnelTraffic`].
struct Counted<T> {
    io: T,
    traffic: Arc<TunnelTraffic>,
    /// The client's side, whose blocked writes the send timeout watches.
    client: bool,
}

impl<T> Counted<T> {
    fn note_write(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.traffic.moved.fetch_add(1, Ordering::Relaxed);
                if self.client {
                    let writes = (self.traffic.to_client.load(Ordering::Relaxed) >> 1) + 1;
                    self.traffic.to_client.store(writes << 1, Ordering::Relaxed);
                }
            }
            Poll::Pending if self.client => {
                self.traffic.to_client.fetch_or(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.traffic.moved.fetch_add(1, Ordering::Relaxed);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_write(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(3600);
    const SEND: Duration = Duration::from_secs(60);

    fn timeouts() -> TunnelTimeouts {
        TunnelTimeouts {
            idle: Some(IDLE),
            send: Some(SEND),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_stalls_within_a_quarter_past_the_idle_timeout() {
        let traffic = TunnelTraffic::default();
        let start = Instant::now();
        let only_idle = TunnelTimeouts {
            send: None,
            ..timeouts()
        };
        assert_eq!(traffic.stalled(only_idle).await, Stall::Idle);
        let waited = start.elapsed();
        assert!(waited >= IDLE && waited <= IDLE + IDLE / 4, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_to_the_client_stalls_after_the_send_timeout() {
        let traffic = Arc::new(TunnelTraffic::default());
        traffic.to_client.fetch_or(1, Ordering::Relaxed);
        let start = Instant::now();
        assert_eq!(traffic.stalled(timeouts()).await, Stall::ClientSend);
        let waited = start.elapsed();
        assert!(waited >= SEND && waited <= SEND + SEND / 4, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_that_moves_bytes_does_not_stall() {
        let traffic = Arc::new(TunnelTraffic::default());
        let watcher = {
            let traffic = traffic.clone();
            tokio::spawn(async move { traffic.stalled(timeouts()).await })
        };
        // Writes to the client block now and then, and go through each time.
        for _ in 0..1000 {
            traffic.to_client.fetch_or(1, Ordering::Relaxed);
            tokio::time::sleep(SEND / 2).await;
            let writes = (traffic.to_client.load(Ordering::Relaxed) >> 1) + 1;
            traffic.to_client.store(writes << 1, Ordering::Relaxed);
            traffic.moved.fetch_add(1, Ordering::Relaxed);
        }
        assert!(!watcher.is_finished());
        watcher.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_timeouts_a_tunnel_never_stalls() {
        let traffic = TunnelTraffic::default();
        let off = TunnelTimeouts {
            idle: None,
            send: None,
        };
        let stalled = tokio::time::timeout(IDLE * 10, traffic.stalled(off)).await;
        assert!(stalled.is_err());
    }
}
