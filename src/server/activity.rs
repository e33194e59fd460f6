//! Per-connection activity: requests in flight, when the client last went quiet and whether it
//! takes what is sent to it, for the client header-read, idle keep-alive and send timeouts.
//!
//! hyper has a single `header_read_timeout` that also covers idle time between keep-alive
//! requests, so one cannot have a short header timeout (slowloris) and a long idle timeout at
//! once. This module keeps the two apart: the idle clock runs while no request is in flight and
//! no byte of a new one has arrived; the header clock starts at that first byte.
//!
//! On an HTTP/2 connection bytes between requests are mostly control frames (PING, SETTINGS,
//! WINDOW_UPDATE), not the start of a request head, so once the connection preface is recognised
//! only the idle clock applies.
//!
//! Both clocks share one timer, [`ClientClock`], and nothing on the per-request path touches it:
//! requests only record what happened (a few relaxed atomics), and the timer is armed lazily.
//! It is never later than the deadline that applies, so when it fires the deadline is worked out
//! from the record and the timer either reports a timeout or is set again, later. The one event
//! that brings a deadline forward, the first byte of a request head, is read by the connection's
//! own task (through [`TrackedIo`]), which tells the clock at once ([`ClientClock::after_io`]).
//!
//! The send clock (nginx's `send_timeout`) runs while a write to the client would block (its
//! socket buffer is full) with nothing written since, requests in flight or not: a client that
//! stops reading a response would otherwise hold the connection, and the backend connection
//! behind the response, for ever. A write that blocks is also seen by the connection's own task,
//! so it too is noted by [`ClientClock::after_io`], and any byte written stops the clock.
//!
//! An HTTP/2 client can stall a response without ever filling the socket, by granting no more
//! flow-control window: the stream then waits while the connection reads and writes as usual.
//! Each HTTP/2 response body reports how it is taken ([`StreamSend`]), and while streams are in
//! flight the clock looks at them every quarter of the send timeout: one that has waited that
//! long for window, with its body not asked for more, ends the connection as a blocked write does.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Which timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request for `client_idle`.
    Idle,
    /// A request head was started but not finished within `client_header`.
    Header,
    /// No request for `client_idle_release`: time to park the connection (not a timeout:
    /// reported once per idle period, and the clock runs on).
    Park,
    /// A write to the client has been blocked for `client_send` with nothing written since.
    Send,
}

/// Shared between a connection's I/O, its requests and its timeout watcher.
#[derive(Debug)]
pub struct ConnActivity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch`, plus one, when the first byte of a new request arrived; 0 if
    /// none; [`UNSTAMPED`] when it arrived and the clock has not yet noted the time.
    head_started: AtomicU64,
    /// Milliseconds since `epoch`, plus one, since when a write to the client has been blocked
    /// with nothing written since; 0 if none is; [`UNSTAMPED`] when one blocked and the clock has
    /// not yet noted the time.
    send_blocked: AtomicU64,
    /// The connection began with the HTTP/2 preface: there is no header clock.
    http2: AtomicBool,
    /// The response bodies of HTTP/2 streams, for the send clock; empty on HTTP/1.
    streams: Mutex<Vec<WatchedStream>>,
}

/// How an HTTP/2 stream's response body is being taken: whether the stream waits for the client
/// (flow-control window) to send what the body gave it, and how often the body has been polled,
/// so the clock can tell a stream that waits from one that moves between two looks.
///
/// Written only by the stream's task, after each poll of its body; one relaxed store.
#[derive(Debug)]
pub struct StreamSend(AtomicU64);

impl StreamSend {
    /// A body just handed to its stream counts as given and not yet asked for, so that a stream
    /// whose body is never asked for (hyper asks for the first frame before it waits for window,
    /// but nothing promises that) counts as waiting too.
    fn handed_over() -> Self {
        StreamSend(AtomicU64::new(1))
    }

    /// The body was polled; `gave_data` if it gave a data frame, which the stream must now send
    /// before it asks for more. A body that is pending waits for its backend, not the client.
    pub fn polled(&self, gave_data: bool) {
        let polls = (self.0.load(Ordering::Relaxed) >> 1).wrapping_add(1);
        self.0
            .store((polls << 1) | u64::from(gave_data), Ordering::Relaxed);
    }
}

/// A stream the clock follows, and what it saw at its last look.
#[derive(Debug)]
struct WatchedStream {
    send: Arc<StreamSend>,
    seen: u64,
    /// When the clock first saw `seen`; `None` before its first look.
    since: Option<Instant>,
}

/// `head_started` of a head whose first byte came in a read the clock has not looked at yet (and
/// `send_blocked` of a write that blocked since the clock last looked). Taking the time there
/// rather than at the read costs no clock reading for the usual request, whose head is complete
/// (and the request started) by the end of the same poll.
const UNSTAMPED: u64 = u64::MAX;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
            send_blocked: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks a request as started; the returned guard marks it finished when dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.head_started.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
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
            self.head_started.store(UNSTAMPED, Ordering::Relaxed);
        }
    }

    /// Marks the connection as HTTP/2: from now on only the idle clock applies.
    fn http2_recognised(&self) {
        self.http2.store(true, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// A write to the client would block: its socket buffer is full.
    fn write_blocked(&self) {
        if self.send_blocked.load(Ordering::Relaxed) == 0 {
            self.send_blocked.store(UNSTAMPED, Ordering::Relaxed);
        }
    }

    /// A write to the client moved bytes: the client is taking them.
    fn wrote(&self) {
        if self.send_blocked.load(Ordering::Relaxed) != 0 {
            self.send_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// When `mark` (`head_started` or `send_blocked`) was set since the clock last looked,
    /// notes the time in it and returns it.
    fn stamp(&self, mark: &AtomicU64) -> Option<Instant> {
        if mark.load(Ordering::Relaxed) != UNSTAMPED {
            return None;
        }
        let now_ms = self.now_ms();
        // Cleared meanwhile (a request started on another thread, say): the clearing wins.
        mark.compare_exchange(UNSTAMPED, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| self.epoch + Duration::from_millis(now_ms))
    }

    /// Since when `mark` has been set, if it is (about now if the clock has not noted it yet).
    fn since(&self, mark: &AtomicU64) -> Option<Instant> {
        match mark.load(Ordering::Relaxed) {
            0 => None,
            UNSTAMPED => Some(Instant::now()),
            stamped => Some(self.epoch + Duration::from_millis(stamped - 1)),
        }
    }

    /// Follows an HTTP/2 stream's response body for the send clock; the body reports to the
    /// returned [`StreamSend`], and the stream is forgotten once that is dropped.
    pub fn watch_stream(&self) -> Arc<StreamSend> {
        let send = Arc::new(StreamSend::handed_over());
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.len() == streams.capacity() {
            // Forget ended streams before the list grows: it stays near the most streams in
            // flight at once, however many the connection has carried.
            streams.retain(|watched| Arc::strong_count(&watched.send) > 1);
        }
        streams.push(WatchedStream {
            send: send.clone(),
            seen: 0,
            since: None,
        });
        send
    }

    /// Whether, looking `now`, an HTTP/2 stream has waited for the client to take what its body
    /// gave since at least `timeout` ago (as far as the looks, `timeout / 4` apart, can tell).
    fn stream_stalled(&self, now: Instant, timeout: Duration) -> bool {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.retain(|watched| Arc::strong_count(&watched.send) > 1);
        let mut stalled = false;
        for watched in streams.iter_mut() {
            let state = watched.send.0.load(Ordering::Relaxed);
            match watched.since {
                Some(since) if state == watched.seen => {
                    stalled |= state & 1 == 1 && now.duration_since(since) >= timeout;
                }
                _ => {
                    watched.seen = state;
                    watched.since = Some(now);
                }
            }
        }
        stalled
    }

    /// When a blocked write to the client runs out of `client_send`, if one is blocked.
    fn send_deadline(&self, timeouts: &ClientTimeouts) -> Option<Instant> {
        Some(self.since(&self.send_blocked)? + timeouts.send?)
    }

    /// HTTP/2 streams may be running: the send clock must look at them.
    fn streams_running(&self) -> bool {
        self.http2.load(Ordering::Relaxed) && self.in_flight() > 0
    }

    /// The earliest deadline that applies now and the timeout it is for: the send clock's while
    /// a write is blocked, and while no request is in flight the idle or header clock's.
    fn deadline(&self, timeouts: &ClientTimeouts) -> Option<(Instant, Expired)> {
        let send = self
            .send_deadline(timeouts)
            .map(|deadline| (deadline, Expired::Send));
        if self.in_flight() > 0 {
            return send;
        }
        let between = match self.since(&self.head_started) {
            None => (
                self.epoch
                    + Duration::from_millis(self.idle_since.load(Ordering::Relaxed))
                    + timeouts.idle,
                Expired::Idle,
            ),
            Some(started) => (started + timeouts.header, Expired::Header),
        };
        Some(match send {
            Some(send) if send.0 < between.0 => send,
            _ => between,
        })
    }
}

/// A request in flight on a connection; dropping it marks the request finished.
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // Before the count drops: a clock that then sees no request in flight must not read the
        // time the connection went idle before this request.
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client timeouts of a listener, as [`ClientClock`] applies them.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// `client_header`: to finish a request head once its first byte came (HTTP/1).
    pub header: Duration,
    /// `client_idle`: with no request in flight and none begun.
    pub idle: Duration,
    /// `client_send`: a write to the client blocked with nothing written; `None` for no limit.
    pub send: Option<Duration>,
    /// `client_idle_release`: `None` if the connection is never parked.
    pub park_after: Option<Duration>,
}

pin_project_lite::pin_project! {
    /// The client header, idle and send timeouts of one connection, on one timer; see the
    /// module comment. Poll it with [`ClientClock::poll_expired`], and call
    /// [`ClientClock::after_io`] after each poll of the connection.
    #[derive(Debug)]
    pub struct ClientClock {
        activity: Arc<ConnActivity>,
        timeouts: ClientTimeouts,
        // The `idle_since` of the idle period the connection was last told to park in.
        parked_since: u64,
        // Told to park, and no request since.
        parked: bool,
        // The timer is set to look at HTTP/2 streams within a quarter of the send timeout.
        looking: bool,
        // Never later than the deadline that applies; when it fires, the deadline is checked.
        #[pin]
        timer: Sleep,
    }
}

impl ClientClock {
    /// The clocks of a connection that has just been accepted: idle, nothing read.
    ///
    /// With `park_after`, the clock also tells when the connection has been idle that long
    /// ([`Expired::Park`]): between `park_after` and twice that after its last request ended.
    /// The timer then also fires at least every `park_after` while requests run (never while
    /// parked), as a request's end does not touch it.
    pub fn new(activity: Arc<ConnActivity>, timeouts: ClientTimeouts) -> Self {
        let first = timeouts
            .park_after
            .map_or(timeouts.idle, |after| after.min(timeouts.idle));
        let timer = tokio::time::sleep_until(activity.epoch + first);
        ClientClock {
            activity,
            timeouts,
            parked_since: u64::MAX,
            parked: false,
            looking: false,
            timer,
        }
    }

    /// Starts the header clock if a request head began in the reads just done, and the send
    /// clock if a write blocked. Cheap (two atomic loads) unless one did.
    pub fn after_io(self: Pin<&mut Self>) {
        let mut this = self.project();
        let activity = &this.activity;
        let timeouts = *this.timeouts;
        let head = activity
            .stamp(&activity.head_started)
            .map(|started| started + timeouts.header);
        let send = timeouts
            .send
            .and_then(|send| Some(activity.stamp(&activity.send_blocked)? + send));
        let mut look = None;
        if !*this.looking
            && let Some(send) = timeouts.send
            && activity.streams_running()
        {
            // Streams have started: look at them soon, then every quarter (`poll_expired`).
            *this.looking = true;
            look = Some(Instant::now() + send / 4);
        }
        if let Some(deadline) = [head, send, look].into_iter().flatten().min()
            && deadline < this.timer.deadline()
        {
            this.timer.as_mut().reset(deadline);
        }
        if *this.parked
            && let Some(after) = this.timeouts.park_after
            && (activity.in_flight() > 0 || activity.head_started.load(Ordering::Relaxed) != 0)
        {
            // Unparked by a new request: look again within `park_after` of it.
            *this.parked = false;
            let deadline = Instant::now() + after;
            if deadline < this.timer.deadline() {
                this.timer.reset(deadline);
            }
        }
    }

    /// Whether a write to the client has been blocked for longer than `client_send`: for a
    /// connection asked to close, which no longer waits for its clock.
    pub fn send_overdue(&self) -> bool {
        let Some(send) = self.timeouts.send else {
            return false;
        };
        let now = Instant::now();
        let activity = &self.activity;
        activity
            .send_deadline(&self.timeouts)
            .is_some_and(|deadline| deadline <= now)
            || (activity.http2.load(Ordering::Relaxed) && activity.stream_stalled(now, send))
    }

    /// Ready with the timeout that ran out. The waker is woken only by the timer.
    pub fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Expired> {
        let mut this = self.project();
        loop {
            std::task::ready!(this.timer.as_mut().poll(cx));
            let now = Instant::now();
            let applies = this.activity.deadline(this.timeouts);
            let mut next = match applies {
                Some((deadline, kind)) if deadline <= now => return Poll::Ready(kind),
                Some((deadline, _)) => deadline,
                // The idle clock starts when the request ends, so no earlier than the idle
                // timeout from now; a new head after it is seen by `after_io`.
                None => now + this.timeouts.idle,
            };
            *this.looking = false;
            if let Some(send) = this.timeouts.send
                && this.activity.streams_running()
            {
                // Streams stalled by flow control leave no other trace: look at them.
                if this.activity.stream_stalled(now, send) {
                    return Poll::Ready(Expired::Send);
                }
                *this.looking = true;
                next = next.min(now + send / 4);
            }
            if let Some(after) = this.timeouts.park_after
                && !this.activity.http2.load(Ordering::Relaxed)
            {
                if let Some((_, Expired::Idle)) = applies {
                    let since = this.activity.idle_since.load(Ordering::Relaxed);
                    if *this.parked_since != since {
                        let park_at = this.activity.epoch + Duration::from_millis(since) + after;
                        if park_at <= now {
                            *this.parked_since = since;
                            *this.parked = true;
                            // The timer stays fired: the next poll sets it again.
                            return Poll::Ready(Expired::Park);
                        }
                        next = next.min(park_at);
                    }
                } else {
                    // A request runs or a head is coming: its end does not touch the timer, so
                    // look again within `park_after`.
                    next = next.min(now + after);
                }
            }
            this.timer.as_mut().reset(next);
        }
    }
}

/// Wraps a connection's I/O to notice the first byte of each request, and to hold each request
/// head to the size limit exactly.
///
/// hyper refuses a head (431) when its read buffer reaches `max_buf_size` with the head still
/// incomplete, but it checks only between reads, and its reads grow: whether a head somewhat
/// over the limit is refused depends on where the reads happened to end. Here reads are cut so
/// that the bytes of a head never run past the limit, so hyper's buffer reaches it exactly.
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<ConnActivity>,
    /// Bytes of the HTTP/2 preface matched so far; `None` once it is known whether it was sent.
    preface: Option<usize>,
    /// The largest request head accepted, in bytes (hyper's `max_buf_size`).
    head_limit: usize,
    /// Bytes read since the current request head began.
    head_bytes: usize,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`, reporting reads to `activity`; a request head may be up to `head_limit`
    /// bytes.
    pub fn new(inner: T, activity: Arc<ConnActivity>, head_limit: usize) -> Self {
        TrackedIo {
            inner,
            activity,
            preface: Some(0),
            head_limit,
            head_bytes: 0,
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

    /// How many more bytes the head being read may have, when the next read is (part of) an
    /// HTTP/1 request head; `None` when it is not (a request in flight, or HTTP/2).
    fn head_allowance(&mut self) -> Option<usize> {
        let activity = &self.activity;
        if activity.in_flight.load(Ordering::Relaxed) > 0 || activity.http2.load(Ordering::Relaxed)
        {
            return None;
        }
        if activity.head_started.load(Ordering::Relaxed) == 0 {
            // No head begun: the next byte starts one.
            self.head_bytes = 0;
        }
        Some(self.head_limit.saturating_sub(self.head_bytes))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let allowance = self.head_allowance();
        let before = buf.filled().len();
        let result = match allowance {
            // Only for a head near the limit; at the limit itself hyper has already refused it
            // (were it asked to read on, it is not a head, and is not cut).
            Some(allowed) if allowed > 0 && allowed < buf.remaining() => {
                let mut cut = vec![0; allowed];
                let mut cut = ReadBuf::new(&mut cut);
                let result = Pin::new(&mut self.inner).poll_read(cx, &mut cut);
                buf.put_slice(cut.filled());
                result
            }
            _ => Pin::new(&mut self.inner).poll_read(cx, buf),
        };
        let read = buf.filled().len() - before;
        if matches!(result, Poll::Ready(Ok(()))) && read > 0 {
            if allowance.is_some() {
                self.head_bytes = self.head_bytes.saturating_add(read);
            }
            self.activity.bytes_read();
            if self.preface.is_some() {
                let read = &buf.filled()[before..];
                self.check_preface(read);
            }
        }
        result
    }
}

impl<T: super::auto::WaitReadable> super::auto::WaitReadable for TrackedIo<T> {
    fn can_wait(&self) -> bool {
        self.inner.can_wait()
    }

    fn closes_on_drop(&self) -> bool {
        self.inner.closes_on_drop()
    }

    fn plain_tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.inner.plain_tcp()
    }

    fn note_send(&self, blocked: bool) {
        if blocked {
            self.activity.write_blocked();
        } else {
            self.activity.wrote();
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
}

impl<T> TrackedIo<T> {
    /// Tells the send clock how a write to the client went: blocked, or moved bytes.
    fn note_write<R>(&self, result: &Poll<io::Result<R>>, moved: impl FnOnce(&R) -> bool) {
        match result {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(done)) if moved(done) => self.activity.wrote(),
            Poll::Ready(_) => {}
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&result, |&n| n > 0);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result, |&n| n > 0);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream takes writes into its own buffer and blocks here once the socket is full.
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(&result, |()| true);
        result
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
    const SEND: Duration = Duration::from_secs(30);

    /// The timeouts of the tests: parking after `park_after`, if given.
    fn timeouts(park_after: Option<Duration>) -> ClientTimeouts {
        ClientTimeouts {
            header: HEADER,
            idle: IDLE,
            send: Some(SEND),
            park_after,
        }
    }

    /// Runs a connection's clock until a timeout runs out, telling it of reads at the start as
    /// the connection's task would.
    async fn expiry(activity: &Arc<ConnActivity>) -> Expired {
        let clock = ClientClock::new(activity.clone(), timeouts(None));
        tokio::pin!(clock);
        clock.as_mut().after_io();
        std::future::poll_fn(|cx| clock.as_mut().poll_expired(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn an_untouched_connection_expires_idle_after_the_idle_timeout() {
        let activity = Arc::new(ConnActivity::new());
        let start = Instant::now();
        assert_eq!(expiry(&activity).await, Expired::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_request_head_expires_after_the_header_timeout() {
        let activity = Arc::new(ConnActivity::new());
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let start = Instant::now();
        assert_eq!(expiry(&activity).await, Expired::Header);
        assert_eq!(start.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_while_the_idle_timer_runs_brings_the_deadline_forward() {
        let activity = Arc::new(ConnActivity::new());
        let start = Instant::now();
        let clock = ClientClock::new(activity.clone(), timeouts(None));
        tokio::pin!(clock);
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        clock.as_mut().after_io();
        let expired = std::future::poll_fn(|cx| clock.as_mut().poll_expired(cx)).await;
        assert_eq!(expired, Expired::Header);
        assert_eq!(start.elapsed(), Duration::from_secs(5) + HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_completes_in_the_same_poll_starts_no_header_clock() {
        let activity = Arc::new(ConnActivity::new());
        let clock = ClientClock::new(activity.clone(), timeouts(None));
        tokio::pin!(clock);
        activity.bytes_read();
        let request = activity.start_request();
        clock.as_mut().after_io();
        assert_eq!(clock.timer.deadline(), activity.epoch + IDLE);
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_expires_while_a_request_is_in_flight() {
        let activity = Arc::new(ConnActivity::new());
        let request = activity.start_request();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { expiry(&activity).await })
        };
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished());
        let finished_at = Instant::now();
        // Dropped here, not in the watcher's task, as an HTTP/2 stream's request is.
        drop(request);
        assert_eq!(watcher.await.unwrap(), Expired::Idle);
        assert_eq!(finished_at.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_header_clock_once_the_preface_is_read() {
        let activity = Arc::new(ConnActivity::new());
        let mut io = TrackedIo::new((), activity.clone(), 8192);
        // The preface may arrive in pieces.
        activity.bytes_read();
        io.check_preface(&H2_PREFACE[..5]);
        assert_ne!(activity.head_started.load(Ordering::Relaxed), 0);
        io.check_preface(&H2_PREFACE[5..]);
        assert_eq!(activity.head_started.load(Ordering::Relaxed), 0);
        // A stray control frame between requests does not start the header clock.
        activity.bytes_read();
        let start = Instant::now();
        assert_eq!(expiry(&activity).await, Expired::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }

    #[test]
    fn an_http1_request_with_a_pri_method_is_not_http2() {
        let activity = Arc::new(ConnActivity::new());
        let mut io = TrackedIo::new((), activity.clone(), 8192);
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
        assert_eq!(expiry(&activity).await, Expired::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }

    const PARK: Duration = Duration::from_secs(1);

    /// The next event of a connection's clock with parking on, and when it came.
    async fn next_event(clock: Pin<&mut ClientClock>) -> (Expired, Instant) {
        let mut clock = clock;
        let expired = std::future::poll_fn(|cx| clock.as_mut().poll_expired(cx)).await;
        (expired, Instant::now())
    }

    /// Parking is told within `park_after` of when it could first be: the timer looks at least
    /// that often.
    fn assert_parked_in_time(ended: Instant, at: Instant) {
        assert!(
            at >= ended + PARK && at <= ended + 2 * PARK,
            "told to park {:?} after the request ended",
            at - ended
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_told_to_park_once_then_expires_idle() {
        let activity = Arc::new(ConnActivity::new());
        let start = Instant::now();
        let clock = ClientClock::new(activity.clone(), timeouts(Some(PARK)));
        tokio::pin!(clock);
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(activity.start_request());
        let ended = Instant::now();
        let (event, at) = next_event(clock.as_mut()).await;
        assert_eq!(event, Expired::Park);
        assert_parked_in_time(ended, at);
        let (event, at) = next_event(clock.as_mut()).await;
        assert_eq!(event, Expired::Idle, "parking is told once per idle period");
        assert_eq!(at - start, Duration::from_secs(3) + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_on_a_parked_connection_makes_it_park_again_after_it() {
        let activity = Arc::new(ConnActivity::new());
        let clock = ClientClock::new(activity.clone(), timeouts(Some(PARK)));
        tokio::pin!(clock);
        drop(activity.start_request());
        assert_eq!(next_event(clock.as_mut()).await.0, Expired::Park);
        // Long after, the client sends again: the request runs over two seconds.
        tokio::time::advance(Duration::from_secs(20)).await;
        let request = activity.start_request();
        clock.as_mut().after_io();
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(request);
        let ended = Instant::now();
        let (event, at) = next_event(clock.as_mut()).await;
        assert_eq!(event, Expired::Park);
        assert_parked_in_time(ended, at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_is_not_parked_but_times_out() {
        let activity = Arc::new(ConnActivity::new());
        let clock = ClientClock::new(activity.clone(), timeouts(Some(PARK)));
        tokio::pin!(clock);
        drop(activity.start_request());
        assert_eq!(next_event(clock.as_mut()).await.0, Expired::Park);
        activity.bytes_read();
        clock.as_mut().after_io();
        let started = Instant::now();
        let (event, at) = next_event(clock.as_mut()).await;
        assert_eq!(event, Expired::Header);
        assert_eq!(at - started, HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_while_a_request_runs_expires_after_the_send_timeout() {
        let activity = Arc::new(ConnActivity::new());
        let request = activity.start_request();
        let clock = ClientClock::new(activity.clone(), timeouts(None));
        tokio::pin!(clock);
        tokio::time::advance(Duration::from_secs(100)).await;
        activity.write_blocked();
        clock.as_mut().after_io();
        let blocked = Instant::now();
        assert!(!clock.send_overdue());
        let expired = std::future::poll_fn(|cx| clock.as_mut().poll_expired(cx)).await;
        assert_eq!(expired, Expired::Send);
        assert_eq!(blocked.elapsed(), SEND);
        assert!(clock.send_overdue());
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_moves_bytes_stops_the_send_clock() {
        let activity = Arc::new(ConnActivity::new());
        let request = activity.start_request();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move {
                let clock = ClientClock::new(activity.clone(), timeouts(None));
                tokio::pin!(clock);
                // The writes are the watcher's own, as they are the connection task's.
                activity.write_blocked();
                clock.as_mut().after_io();
                tokio::time::sleep(SEND / 2).await;
                activity.wrote();
                tokio::time::sleep(SEND / 4).await;
                activity.write_blocked();
                clock.as_mut().after_io();
                tokio::time::sleep(SEND / 2).await;
                activity.wrote();
                assert!(!clock.send_overdue());
                std::future::poll_fn(|cx| clock.as_mut().poll_expired(cx)).await
            })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(
            !watcher.is_finished(),
            "no timeout while the client takes bytes"
        );
        drop(request);
        let expired = watcher.await.unwrap();
        assert_eq!(expired, Expired::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_on_an_idle_connection_expires_at_the_earlier_deadline() {
        // The last bytes of a response the client does not take, after the request ended.
        let activity = Arc::new(ConnActivity::new());
        drop(activity.start_request());
        activity.write_blocked();
        let start = Instant::now();
        assert_eq!(expiry(&activity).await, Expired::Send);
        assert_eq!(start.elapsed(), SEND);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_send_timeout_a_blocked_write_never_expires() {
        let activity = Arc::new(ConnActivity::new());
        let request = activity.start_request();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move {
                let off = ClientTimeouts {
                    send: None,
                    ..timeouts(None)
                };
                let clock = ClientClock::new(activity.clone(), off);
                tokio::pin!(clock);
                activity.write_blocked();
                clock.as_mut().after_io();
                assert!(!clock.send_overdue());
                std::future::poll_fn(|cx| clock.as_mut().poll_expired(cx)).await
            })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished());
        watcher.abort();
        drop(request);
    }

    /// An HTTP/2 connection with one request in flight.
    fn http2_in_flight() -> (Arc<ConnActivity>, InFlight) {
        let activity = Arc::new(ConnActivity::new());
        activity.http2_recognised();
        let request = activity.start_request();
        (activity, request)
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_stream_waiting_for_window_expires_within_a_quarter_past_the_send_timeout() {
        // Never asked for its body (the client granted no window at all), or asked once and not
        // again after the body gave data: either way the stream waits for the client.
        for asked_once in [false, true] {
            let (activity, _request) = http2_in_flight();
            let stream = activity.watch_stream();
            let clock = ClientClock::new(activity.clone(), timeouts(None));
            tokio::pin!(clock);
            // As the connection's task does after the poll that started the stream.
            clock.as_mut().after_io();
            if asked_once {
                stream.polled(true);
            }
            let stalled = Instant::now();
            let (event, at) = next_event(clock.as_mut()).await;
            assert_eq!(event, Expired::Send);
            let waited = at - stalled;
            assert!(
                waited >= SEND && waited <= SEND + SEND / 2,
                "cut after {waited:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn http2_streams_that_move_or_wait_for_their_backend_do_not_expire() {
        let (activity, request) = http2_in_flight();
        let moving = activity.watch_stream();
        let backend_bound = activity.watch_stream();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move {
                let clock = ClientClock::new(activity, timeouts(None));
                tokio::pin!(clock);
                clock.as_mut().after_io();
                next_event(clock.as_mut()).await.0
            })
        };
        // Pending on its backend: not the client's doing.
        backend_bound.polled(false);
        for _ in 0..100 {
            moving.polled(true);
            tokio::time::sleep(SEND / 8).await;
        }
        assert!(
            !watcher.is_finished(),
            "a stream that moves was taken as stalled"
        );
        drop(request);
        drop((moving, backend_bound));
        assert_eq!(watcher.await.unwrap(), Expired::Idle);
    }

    #[test]
    fn ended_http2_streams_are_forgotten() {
        let activity = ConnActivity::new();
        let kept = activity.watch_stream();
        for _ in 0..10_000 {
            drop(activity.watch_stream());
        }
        let watched = activity.streams.lock().unwrap().len();
        assert!(watched <= 4, "{watched} streams still watched");
        drop(kept);
        assert!(!activity.stream_stalled(Instant::now(), SEND));
        assert!(activity.streams.lock().unwrap().is_empty());
    }

    /// A client socket that takes writes only while `open` is set.
    struct Gate {
        open: bool,
    }

    impl AsyncWrite for Gate {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.open {
                Poll::Ready(Ok(buf.len()))
            } else {
                Poll::Pending
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.open {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl crate::server::auto::WaitReadable for Gate {
        fn can_wait(&self) -> bool {
            false
        }

        fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[test]
    fn tracked_writes_start_and_stop_the_send_clock() {
        use crate::server::auto::WaitReadable as _;
        let activity = Arc::new(ConnActivity::new());
        let mut io = TrackedIo::new(Gate { open: false }, activity.clone(), 8192);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let blocked = || activity.send_blocked.load(Ordering::Relaxed) != 0;
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"x").is_pending());
        assert!(blocked());
        io.inner.open = true;
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"").is_ready());
        assert!(blocked(), "an empty write moves nothing");
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"x").is_ready());
        assert!(!blocked());
        io.inner.open = false;
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert!(blocked(), "a flush that blocks counts (TLS)");
        io.inner.open = true;
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert!(!blocked());
        // What a splice into the socket reports.
        io.note_send(true);
        assert!(blocked());
        io.note_send(false);
        assert!(!blocked());
    }

    /// A stream that fills every read to the brim.
    struct Endless;

    impl AsyncRead for Endless {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            buf.put_slice(&vec![b'a'; buf.remaining()]);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn reads_of_a_request_head_stop_at_the_limit() {
        use tokio::io::AsyncReadExt;
        let activity = Arc::new(ConnActivity::new());
        let mut io = TrackedIo::new(Endless, activity.clone(), 100);
        let mut buf = [0; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 64);
        assert_eq!(io.read(&mut buf).await.unwrap(), 36, "cut at the limit");
        // Past it (hyper has refused the head by then), reads are not cut.
        assert_eq!(io.read(&mut buf).await.unwrap(), 64);
        // A request in flight: its body is not a head.
        let request = activity.start_request();
        assert_eq!(io.read(&mut buf).await.unwrap(), 64);
        drop(request);
        // The next head has the whole allowance again.
        assert_eq!(io.read(&mut buf).await.unwrap(), 64);
        assert_eq!(io.read(&mut buf).await.unwrap(), 36);
    }
}
