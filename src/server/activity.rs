//! Per-connection activity: requests in flight and when the client last went quiet, for the
//! client header-read and idle keep-alive timeouts.
//!
//! hyper has a single `header_read_timeout` that also covers idle time between keep-alive
//! requests, so one cannot have a short header timeout (slowloris) and a long idle timeout at
//! once. This module keeps the two apart: the idle clock runs while no request is in flight and
//! no byte of a new one has arrived; the header clock starts at that first byte.
//!
//! On an HTTP/2 connection bytes between requests are mostly control frames (PING, SETTINGS,
//! WINDOW_UPDATE), not the start of a request head, so once the connection preface is recognised
//! only the idle clock applies.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request for `client_idle`.
    Idle,
    /// A request head was started but not finished within `client_header`.
    Header,
}

/// Shared between a connection's I/O, its requests and its timeout watcher.
#[derive(Debug)]
pub struct ConnActivity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch`, plus one, when the first byte of a new request arrived; 0 if none.
    head_started: AtomicU64,
    /// The connection began with the HTTP/2 preface: there is no header clock.
    http2: AtomicBool,
    changed: Notify,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnActivity {
    /// A connection that has just been accepted (idle, nothing read).
    pub fn new() -> Self {
        ConnActivity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks a request as started; the returned guard marks it finished when dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.head_started.store(0, Ordering::Relaxed);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed.notify_one();
        }
        InFlight(self.clone())
    }

    /// Requests whose response has not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Marks the connection as HTTP/2: from now on only the idle clock applies.
    fn http2_recognised(&self) {
        self.http2.store(true, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Resolves when a timeout runs out. Cancel-safe: it can be dropped and called again.
    pub async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> Expired {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight() > 0 {
                changed.await;
                continue;
            }
            let head_started = self.head_started.load(Ordering::Relaxed);
            let (since_ms, limit, kind) = if head_started > 0 {
                (head_started - 1, header_timeout, Expired::Header)
            } else {
                (
                    self.idle_since.load(Ordering::Relaxed),
                    idle_timeout,
                    Expired::Idle,
                )
            };
            let deadline = self.epoch + Duration::from_millis(since_ms) + limit;
            if Instant::now() >= deadline {
                return kind;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

/// A request in flight on a connection; dropping it marks the request finished.
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// Wraps a connection's I/O to notice the first byte of each request.
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<ConnActivity>,
    /// Bytes of the HTTP/2 preface matched so far; `None` once it is known whether it was sent.
    preface: Option<usize>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`, reporting reads to `activity`.
    pub fn new(inner: T, activity: Arc<ConnActivity>) -> Self {
        TrackedIo {
            inner,
            activity,
            preface: Some(0),
        }
    }

    /// Follows the first bytes of the connection to tell whether it speaks HTTP/2.
    fn check_preface(&mut self, read: &[u8]) {
        let Some(matched) = self.preface else {
            return;
        };
        let expected = &H2_PREFACE[matched..];
        let n = read.len().min(expected.len());
        self.preface = if read[..n] != expected[..n] {
            None
        } else if matched + n == H2_PREFACE.len() {
            self.activity.http2_recognised();
            None
        } else {
            Some(matched + n)
        };
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
            if self.preface.is_some() {
                let read = &buf.filled()[before..];
                self.check_preface(read);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn an_untouched_connection_expires_idle_after_the_idle_timeout() {
        let activity = Arc::new(ConnActivity::new());
        let start = Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_request_head_expires_after_the_header_timeout() {
        let activity = Arc::new(ConnActivity::new());
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let start = Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Header);
        assert_eq!(start.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_expires_while_a_request_is_in_flight() {
        let activity = Arc::new(ConnActivity::new());
        let request = activity.start_request();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired(HEADER, IDLE).await })
        };
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished());
        let finished_at = Instant::now();
        drop(request);
        assert_eq!(watcher.await.unwrap(), Expired::Idle);
        assert_eq!(finished_at.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_header_clock_once_the_preface_is_read() {
        let activity = Arc::new(ConnActivity::new());
        let mut io = TrackedIo::new((), activity.clone());
        // The preface may arrive in pieces.
        activity.bytes_read();
        io.check_preface(&H2_PREFACE[..5]);
        assert_ne!(activity.head_started.load(Ordering::Relaxed), 0);
        io.check_preface(&H2_PREFACE[5..]);
        assert_eq!(activity.head_started.load(Ordering::Relaxed), 0);
        // A stray control frame between requests does not start the header clock.
        activity.bytes_read();
        let start = Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }

    #[test]
    fn an_http1_request_with_a_pri_method_is_not_http2() {
        let activity = Arc::new(ConnActivity::new());
        let mut io = TrackedIo::new((), activity.clone());
        io.check_preface(b"PRI / HTTP/1.1\r\n");
        assert!(io.preface.is_none());
        io.check_preface(&H2_PREFACE[14..]);
        assert!(!activity.http2.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_restarts_after_each_request() {
        let activity = Arc::new(ConnActivity::new());
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.bytes_read();
        drop(activity.start_request());
        let start = Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }
}
