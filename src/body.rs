//! Body types that stream through the proxy in both directions with bounded memory.
//!
//! [`RequestBody`] carries the client's body to the backend and enforces the route's size cap
//! while streaming, so a chunked upload over the cap is cut off without being buffered.
//! [`ResponseBody`] carries the backend's body (or a small generated page) to the client and
//! counts the bytes for the access log. Both are concrete types rather than boxed trait objects:
//! one allocation less per request on the hot path.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::compress::CodecBody;
use crate::protect::upload_rate::{MinUploadRate, UploadPace};
use crate::splice::{Pipe, SpliceSource};
use crate::upstream::read_timeout::ReadTimeout;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Boxed error type used by the body types.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The request body grew past the route's `max_body`.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeds the configured limit")
    }
}

impl StdError for BodyTooLarge {}

/// The client's request body could not be read (a malformed chunk, a truncated upload, bytes a
/// decoder cannot decode): the client's fault, answered with 400, never blamed on the backend.
#[derive(Debug)]
pub struct ClientBodyError(pub String);

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body could not be read: {}", self.0)
    }
}

impl StdError for ClientBodyError {}

/// The client sent its request body too slowly: under `timeouts.min_upload_rate` once its grace
/// and earned time ran out. Answered with 408, never blamed on the backend.
#[derive(Debug, Clone, Copy)]
pub struct UploadTooSlow {
    /// Bytes the client had delivered.
    pub received: u64,
}

impl fmt::Display for UploadTooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body arrived under the minimum upload rate ({} bytes received)",
            self.received
        )
    }
}

impl StdError for UploadTooSlow {}

/// What was wrong with the client's body, when a body error is the client's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// [`BodyTooLarge`]: 413.
    TooLarge,
    /// [`ClientBodyError`]: 400.
    Unreadable,
    /// [`UploadTooSlow`]: 408.
    TooSlow,
}

/// Whether `error` or any of its causes is one of ours about the client's body, and which.
pub fn client_body_fault(error: &(dyn StdError + 'static)) -> Option<ClientFault> {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return Some(ClientFault::TooLarge);
        }
        if e.is::<ClientBodyError>() {
            return Some(ClientFault::Unreadable);
        }
        if e.is::<UploadTooSlow>() {
            return Some(ClientFault::TooSlow);
        }
        current = e.source();
    }
    None
}

/// A body's [`UploadPace`] and the timer that wakes its reader when the client runs out of time.
struct Pacer {
    pace: UploadPace,
    timer: Pin<Box<tokio::time::Sleep>>,
}

pin_project! {
    /// A client request body on its way to a backend, with an optional size cap.
    pub struct RequestBody {
        #[pin]
        inner: Option<Incoming>,
        limit: u64,
        seen: u64,
        exceeded: Option<Arc<AtomicBool>>,
        progress: Option<watch::Sender<()>>,
        // Set instead of `inner` when the body is decoded on its way (it owns the source).
        decoded: Option<Box<CodecBody>>,
        // Set instead of `inner` for a body held in memory so it can be sent again.
        buffered: Option<Bytes>,
        // Set instead of `inner` for a body shared between attempts until one reads it.
        slot: Option<BodySlot>,
        // The body taken out of `slot` by the first poll.
        taken: Option<Pin<Box<RequestBody>>>,
        // Counts the bytes that pass, for metrics.
        counter: Option<metrics::Counter>,
        // The minimum upload rate, for a body read from the client.
        pacer: Option<Box<Pacer>>,
    }
}

/// A request body handed from one attempt to the next until an attempt starts reading it.
///
/// A request that fails to connect never had its body read, so it can be retried on another
/// backend even when the body is too large to hold in memory; once an attempt has read from
/// the body, it is gone and later attempts get nothing.
#[derive(Clone)]
pub struct BodySlot(Arc<std::sync::Mutex<Option<RequestBody>>>);

impl BodySlot {
    /// A slot holding `body`.
    pub fn new(body: RequestBody) -> Self {
        BodySlot(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RequestBody>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A body for the next attempt, or `None` when an earlier attempt already read it.
    pub fn attempt(&self) -> Option<RequestBody> {
        self.lock().is_some().then(|| {
            let mut body = RequestBody::empty();
            body.slot = Some(self.clone());
            body
        })
    }

    /// Whether the body is still there for another attempt.
    pub fn is_available(&self) -> bool {
        self.lock().is_some()
    }

    /// Progress of the body in the slot (see [`RequestBody::progress`]).
    pub fn progress(&self) -> Option<watch::Receiver<()>> {
        self.lock().as_mut().map(RequestBody::progress)
    }
}

impl RequestBody {
    /// A body with no bytes.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            limit: u64::MAX,
            seen: 0,
            exceeded: None,
            progress: None,
            decoded: None,
            buffered: None,
            slot: None,
            taken: None,
            counter: None,
            pacer: None,
        }
    }

    /// Streams `inner` unchanged.
    pub fn new(inner: ClientBody) -> Self {
        RequestBody {
            inner: inner.into_incoming(),
            limit: u64::MAX,
            seen: 0,
            exceeded: None,
            progress: None,
            decoded: None,
            buffered: None,
            slot: None,
            taken: None,
            counter: None,
            pacer: None,
        }
    }

    /// Streams `inner` but fails with [`BodyTooLarge`] once more than `limit` bytes have passed;
    /// `flag` is set when that happens so the caller can answer 413 instead of 502.
    pub fn limited(inner: ClientBody, limit: u64, flag: Arc<AtomicBool>) -> Self {
        RequestBody {
            inner: inner.into_incoming(),
            limit,
            seen: 0,
            exceeded: Some(flag),
            progress: None,
            decoded: None,
            buffered: None,
            slot: None,
            taken: None,
            counter: None,
            pacer: None,
        }
    }

    /// Streams a body through a decoder, failing with [`BodyTooLarge`] (and setting `flag`) once
    /// more than `limit` decoded bytes have passed: a small compressed upload cannot expand
    /// without bound.
    pub fn decoded(body: CodecBody, limit: u64, flag: Arc<AtomicBool>) -> Self {
        RequestBody {
            inner: None,
            limit,
            seen: 0,
            exceeded: Some(flag),
            progress: None,
            decoded: Some(Box::new(body)),
            buffered: None,
            slot: None,
            taken: None,
            counter: None,
            pacer: None,
        }
    }

    /// Holds the client to `rule` while it sends this body (see [`crate::protect::upload_rate`]):
    /// past its time the body fails with [`UploadTooSlow`]. Only bodies read from the client
    /// are paced; a buffered body is already here.
    pub fn paced(mut self, rule: Option<MinUploadRate>) -> Self {
        self.pacer = rule.map(|rule| {
            Box::new(Pacer {
                pace: UploadPace::new(rule),
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            })
        });
        self
    }

    /// Counts the bytes that pass through `counter`.
    pub fn counting(mut self, counter: metrics::Counter) -> Self {
        self.counter = Some(counter);
        self
    }

    /// A body held in memory, which can be sent any number of times.
    pub fn buffered(data: Bytes) -> Self {
        let mut body = RequestBody::empty();
        body.buffered = Some(data);
        body
    }

    /// A receiver that sees a change each time a data frame passes, and is closed once the
    /// whole body has been read or the body is dropped (sent, or given up on).
    ///
    /// The pipeline uses it so a long upload is not cut off by the backend's header timeout.
    pub fn progress(&mut self) -> watch::Receiver<()> {
        let (sender, receiver) = watch::channel(());
        self.progress = Some(sender);
        receiver
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(slot) = this.slot.take() {
            // The first poll takes the body out of the slot for good.
            let Some(mut body) = slot.lock().take() else {
                return Poll::Ready(None);
            };
            // Whoever watches this attempt's progress now watches the body itself.
            if let Some(progress) = this.progress.take() {
                body.progress = Some(progress);
            }
            *this.decoded = None;
            this.inner.set(None);
            *this.slot = None;
            let mut owned = Box::pin(body);
            let polled = owned.as_mut().poll_frame(cx);
            *this.taken = Some(owned);
            return polled;
        }
        if let Some(taken) = this.taken.as_mut() {
            return taken.as_mut().poll_frame(cx);
        }
        if this.buffered.is_some() {
            return Poll::Ready(this.buffered.take().map(|data| Ok(Frame::data(data))));
        }
        let raw = if let Some(decoded) = this.decoded.as_deref_mut() {
            Pin::new(decoded).poll_frame(cx)
        } else if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            inner
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|e| Box::new(e) as BoxError)))
        } else {
            return Poll::Ready(None);
        };
        if let Some(pacer) = this.pacer.as_deref_mut() {
            let now = tokio::time::Instant::now();
            match &raw {
                Poll::Pending => {
                    let deadline = pacer.pace.waiting(now);
                    pacer.timer.as_mut().reset(deadline);
                    if pacer.timer.as_mut().poll(cx).is_ready() && pacer.pace.too_slow(now) {
                        *this.progress = None;
                        let received = pacer.pace.received();
                        return Poll::Ready(Some(Err(Box::new(UploadTooSlow { received }))));
                    }
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
                    pacer.pace.delivered(bytes, now);
                }
                Poll::Ready(_) => {}
            }
        }
        let polled = match raw {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(counter) = this.counter {
                        counter.increment(data.len() as u64);
                    }
                    if *this.seen > *this.limit {
                        if let Some(flag) = this.exceeded {
                            flag.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Some(Ok(frame))
            }
            Poll::Ready(Some(Err(e))) => {
                Some(Err(Box::new(ClientBodyError(e.to_string())) as BoxError))
            }
            Poll::Ready(None) => None,
            Poll::Pending => return Poll::Pending,
        };
        let at_end = match (this.decoded.as_deref(), this.inner.as_ref().as_pin_ref()) {
            (Some(decoded), _) => decoded.is_end_stream(),
            (None, Some(inner)) => inner.is_end_stream(),
            (None, None) => true,
        };
        // The sender may stop polling once the body says it has ended, so close it now.
        if polled.as_ref().is_none_or(Result::is_err) || at_end {
            *this.progress = None;
        } else if let Some(progress) = this.progress {
            progress.send_replace(());
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        if let Some(slot) = &self.slot {
            return slot.lock().as_ref().is_none_or(Body::is_end_stream);
        }
        if let Some(taken) = &self.taken {
            return taken.is_end_stream();
        }
        if let Some(data) = &self.buffered {
            return data.is_empty();
        }
        match &self.decoded {
            Some(decoded) => decoded.is_end_stream(),
            None => self.inner.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(slot) = &self.slot {
            return slot
                .lock()
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        }
        if let Some(taken) = &self.taken {
            return taken.size_hint();
        }
        if let Some(data) = &self.buffered {
            return SizeHint::with_exact(data.len() as u64);
        }
        if self.decoded.is_some() {
            return SizeHint::default();
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// Sees the frames of a body as they pass: the cache copies a backend response it stores while
/// the response streams to the client.
pub trait BodyTap: Send + 'static {
    /// A data frame passed.
    fn data(&mut self, chunk: &Bytes);
    /// A trailers frame passed.
    fn trailers(&mut self);
    /// Called once: the body ended (`complete`) or failed or was dropped before its end.
    fn end(&mut self, complete: bool);
}

/// A client's request body: read by hyper, or none (a request Gatehouse's own HTTP/1.1 server
/// path read, which takes only requests without a body; see `server::h1`).
#[derive(Debug, Default)]
pub struct ClientBody(Option<Incoming>);

impl ClientBody {
    /// A request without a body.
    pub fn empty() -> Self {
        ClientBody(None)
    }

    /// hyper's body, when there is one.
    pub fn into_incoming(self) -> Option<Incoming> {
        self.0
    }
}

impl From<Incoming> for ClientBody {
    fn from(inner: Incoming) -> Self {
        ClientBody(Some(inner))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A body received from a peer: from hyper (a client's request body; a backend's response
/// through hyper's client: HTTP/2, requests with a body, upgrades), or from Gatehouse's own
/// HTTP/1.1 exchange (responses to bodiless GET and HEAD); a backend's, under its read timeout.
pub struct UpstreamBody(UpstreamSource);

/// Who reads an [`UpstreamBody`], and where its read timeout is kept: in the direct exchange's
/// connection box, or in a box with hyper's body, so that neither makes the body (and every
/// response it is moved in) larger: 8 bytes more cost ~0.7 % more instructions per request in
/// scenario 1 (callgrind), the copies of the response growing past the compiler's inline moves.
enum UpstreamSource {
    /// hyper, no read timeout.
    Hyper(Incoming),
    /// hyper, under a read timeout.
    HyperWatched(Box<(Incoming, ReadTimeout)>),
    /// Gatehouse's own exchange.
    Direct(crate::upstream::DirectBody),
    /// Only while [`UpstreamBody::set_read_timeout`] moves hyper's body; never polled.
    Moving,
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody(UpstreamSource::Hyper(body))
    }
}

impl From<crate::upstream::DirectBody> for UpstreamBody {
    fn from(body: crate::upstream::DirectBody) -> Self {
        UpstreamBody(UpstreamSource::Direct(body))
    }
}

impl UpstreamBody {
    /// Whether Gatehouse's own HTTP/1.1 exchange reads it (not hyper).
    pub fn is_direct(&self) -> bool {
        matches!(self.0, UpstreamSource::Direct(_))
    }

    /// Ends the body with an error once its backend has sent nothing for `timeout` while the
    /// body was waited on (`timeouts.upstream_read`); `None` for no limit.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        if let UpstreamSource::Direct(body) = &mut self.0 {
            body.set_read_timeout(timeout);
            return;
        }
        self.0 = match (
            std::mem::replace(&mut self.0, UpstreamSource::Moving),
            timeout,
        ) {
            (UpstreamSource::Hyper(body), Some(timeout)) => {
                UpstreamSource::HyperWatched(Box::new((body, ReadTimeout::new(timeout))))
            }
            (UpstreamSource::HyperWatched(watched), None) => UpstreamSource::Hyper(watched.0),
            (UpstreamSource::HyperWatched(mut watched), Some(timeout)) => {
                watched.1 = ReadTimeout::new(timeout);
                UpstreamSource::HyperWatched(watched)
            }
            (source, _) => source,
        };
    }

    /// The read timeout, where one is set and the body still has a backend to read from.
    fn read_timeout(&mut self) -> Option<&mut ReadTimeout> {
        match &mut self.0 {
            UpstreamSource::Hyper(_) | UpstreamSource::Moving => None,
            UpstreamSource::HyperWatched(watched) => Some(&mut watched.1),
            UpstreamSource::Direct(body) => body.read_timeout(),
        }
    }

    /// Tells the read timeout how a poll went: `Some(error)` when it was a wait, and the
    /// backend has now sent nothing for the timeout. The outcome itself is not moved: a frame
    /// passed through here cost copies on every poll.
    fn wait_expired(&mut self, waiting: bool, cx: &mut Context<'_>) -> Option<BoxError> {
        let watch = self.read_timeout()?;
        watch.expired(waiting, cx).then(|| {
            Box::new(BackendStalled {
                timeout: watch.timeout(),
            }) as BoxError
        })
    }
}

/// The error a response body ends with when its backend sent nothing for the read timeout
/// (`timeouts.upstream_read`): the backend's failure, not the client's, which the body's
/// observer is told apart ([`BodyObserver::backend_stalled`]).
#[derive(Debug)]
pub struct BackendStalled {
    /// The read timeout that ran out.
    pub timeout: Duration,
}

impl fmt::Display for BackendStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the backend sent nothing for {:?} within the response body",
            self.timeout
        )
    }
}

impl StdError for BackendStalled {}

/// Whether `error`, or an error it wraps (a stage that turns its source's error into an I/O
/// error, say), is a [`BackendStalled`]. Today's stages pass it on as it is; the walk keeps that
/// from mattering.
fn is_backend_stall(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<BackendStalled>() {
            return true;
        }
        // An I/O error's `source` skips the error it wraps: look at that one directly.
        if let Some(wrapped) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_backend_stall(wrapped)
        {
            return true;
        }
        current = error.source();
    }
    false
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.0 {
            UpstreamSource::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            UpstreamSource::HyperWatched(watched) => Pin::new(&mut watched.0)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            UpstreamSource::Direct(body) => Pin::new(body).poll_frame(cx),
            UpstreamSource::Moving => Poll::Ready(None),
        };
        match this.wait_expired(polled.is_pending(), cx) {
            Some(error) => Poll::Ready(Some(Err(error))),
            None => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            UpstreamSource::Hyper(body) => body.is_end_stream(),
            UpstreamSource::HyperWatched(watched) => watched.0.is_end_stream(),
            UpstreamSource::Moving => true,
            UpstreamSource::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            UpstreamSource::Hyper(body) => body.size_hint(),
            UpstreamSource::HyperWatched(watched) => watched.0.size_hint(),
            UpstreamSource::Moving => SizeHint::with_exact(0),
            UpstreamSource::Direct(body) => body.size_hint(),
        }
    }
}

impl SpliceSource for UpstreamBody {
    fn splice_len(&self) -> Option<u64> {
        match &self.0 {
            UpstreamSource::Hyper(_) | UpstreamSource::HyperWatched(_) | UpstreamSource::Moving => {
                None
            }
            UpstreamSource::Direct(body) => body.splice_len(),
        }
    }

    fn poll_splice(
        self: Pin<&mut Self>,
        pipe: &mut Pipe,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, BoxError>> {
        let this = self.get_mut();
        let polled = match &mut this.0 {
            UpstreamSource::Hyper(_) | UpstreamSource::HyperWatched(_) | UpstreamSource::Moving => {
                return Poll::Ready(Err("a body read by hyper is not spliced".into()));
            }
            UpstreamSource::Direct(body) => Pin::new(body).poll_splice(pipe, cx),
        };
        match this.wait_expired(polled.is_pending(), cx) {
            Some(error) => Poll::Ready(Err(error)),
            None => polled,
        }
    }
}

pin_project! {
    /// A body received from a peer, optionally watched by a [`BodyTap`].
    pub struct IncomingBody {
        inner: UpstreamBody,
        tap: Option<Box<dyn BodyTap>>,
    }

    impl PinnedDrop for IncomingBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut tap) = this.tap.take() {
                // A body that ended without being polled to its end (or was empty) is complete.
                tap.end(this.inner.is_end_stream());
            }
        }
    }
}

impl IncomingBody {
    /// `inner` as it is.
    pub fn new(inner: UpstreamBody) -> Self {
        IncomingBody { inner, tap: None }
    }

    /// `inner`, with every frame shown to `tap`.
    pub fn tapped(inner: UpstreamBody, tap: Box<dyn BodyTap>) -> Self {
        IncomingBody {
            inner,
            tap: Some(tap),
        }
    }
}

impl From<Incoming> for IncomingBody {
    fn from(inner: Incoming) -> Self {
        IncomingBody::new(UpstreamBody::from(inner))
    }
}

impl From<UpstreamBody> for IncomingBody {
    fn from(inner: UpstreamBody) -> Self {
        IncomingBody::new(inner)
    }
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = match Pin::new(this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(polled) => polled,
        };
        if let Some(tap) = this.tap.as_mut() {
            match &polled {
                Some(Ok(frame)) => match frame.data_ref() {
                    Some(data) => tap.data(data),
                    None => tap.trailers(),
                },
                Some(Err(_)) => {
                    if let Some(mut tap) = this.tap.take() {
                        tap.end(false);
                    }
                }
                None => {
                    if let Some(mut tap) = this.tap.take() {
                        tap.end(true);
                    }
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A tapped body is never spliced: its tap needs the bytes.
impl SpliceSource for IncomingBody {
    fn splice_len(&self) -> Option<u64> {
        match self.tap {
            Some(_) => None,
            None => self.inner.splice_len(),
        }
    }

    fn poll_splice(
        self: Pin<&mut Self>,
        pipe: &mut Pipe,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, BoxError>> {
        let this = self.project();
        if this.tap.is_some() {
            return Poll::Ready(Err("a tapped body is not spliced".into()));
        }
        Pin::new(this.inner).poll_splice(pipe, cx)
    }
}

/// Something told when a response body is finished or dropped, with the bytes sent.
pub trait BodyObserver: Send + 'static {
    /// Called once: `bytes` were sent, `complete` is false when the body ended early.
    fn finished(&mut self, bytes: u64, complete: bool);

    /// Called before [`finished`](Self::finished) when the body ended because its backend sent
    /// nothing for the read timeout ([`BackendStalled`]).
    fn backend_stalled(&mut self) {}
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream { #[pin] body: IncomingBody },
        Full { data: Option<Bytes> },
        Coded { body: Box<CodecBody> },
    }
}

pin_project! {
    /// A response body on its way to the client.
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
        bytes: u64,
        observer: Option<Box<dyn BodyObserver>>,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body that was empty from the start is never polled, yet it is complete.
            let complete = kind_ended(this.kind.as_ref().get_ref());
            tell_observer(this.observer, *this.bytes, complete);
        }
    }
}

impl ResponseBody {
    /// Streams a backend's body.
    pub fn upstream(body: impl Into<IncomingBody>) -> Self {
        let body = body.into();
        ResponseBody {
            kind: Kind::Upstream { body },
            bytes: 0,
            observer: None,
        }
    }

    /// A body held in memory (error pages and other generated responses).
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
            bytes: 0,
            observer: None,
        }
    }

    /// A backend's body passed through an encoder or decoder.
    pub fn coded(body: CodecBody) -> Self {
        ResponseBody {
            kind: Kind::Coded {
                body: Box::new(body),
            },
            bytes: 0,
            observer: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// Attaches an observer told when the body is finished or dropped.
    pub fn observe(&mut self, observer: Box<dyn BodyObserver>) {
        self.observer = Some(observer);
    }
}

/// Tells the observer, if it has not been told yet, that the body is over.
fn tell_observer(observer: &mut Option<Box<dyn BodyObserver>>, bytes: u64, complete: bool) {
    if let Some(mut observer) = observer.take() {
        observer.finished(bytes, complete);
    }
}

/// Tells the observer, if it has not been told yet, that the body ended in `error`.
fn tell_observer_failed(
    observer: &mut Option<Box<dyn BodyObserver>>,
    bytes: u64,
    error: &BoxError,
) {
    if let Some(mut observer) = observer.take() {
        if is_backend_stall(error.as_ref()) {
            observer.backend_stalled();
        }
        observer.finished(bytes, false);
    }
}

fn kind_ended(kind: &Kind) -> bool {
    match kind {
        Kind::Upstream { body } => body.is_end_stream(),
        Kind::Full { data } => data.is_none(),
        Kind::Coded { body } => body.is_end_stream(),
    }
}

/// Only a backend's body as it came; the bytes spliced count as sent, as frames do.
impl SpliceSource for ResponseBody {
    fn splice_len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Upstream { body } => body.splice_len(),
            Kind::Full { .. } | Kind::Coded { .. } => None,
        }
    }

    fn poll_splice(
        self: Pin<&mut Self>,
        pipe: &mut Pipe,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, BoxError>> {
        let this = self.project();
        let KindProj::Upstream { body } = this.kind.project() else {
            return Poll::Ready(Err("only a backend's own body is spliced".into()));
        };
        let moved = ready!(body.poll_splice(pipe, cx));
        match &moved {
            Ok(n) => *this.bytes += *n as u64,
            Err(error) => tell_observer_failed(this.observer, *this.bytes, error),
        }
        Poll::Ready(moved)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = match this.kind.project() {
            KindProj::Upstream { body } => match body.poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            },
            KindProj::Full { data } => data.take().map(|d| Ok(Frame::data(d))),
            KindProj::Coded { body } => match Pin::new(body.as_mut()).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            },
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Some(Err(error)) => tell_observer_failed(this.observer, *this.bytes, error),
            None => tell_observer(this.observer, *this.bytes, true),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        kind_ended(&self.kind)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Coded { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod size {
    #[test]
    fn a_backend_body_is_no_larger_than_what_reads_it() {
        // Its read timeout lives elsewhere (see `UpstreamSource`): a larger body costs copies.
        let largest = std::mem::size_of::<hyper::body::Incoming>()
            .max(std::mem::size_of::<crate::upstream::DirectBody>());
        assert_eq!(std::mem::size_of::<super::UpstreamBody>(), largest);
    }
}

#[cfg(test)]
mod stall {
    use super::{BackendStalled, BoxError, is_backend_stall};
    use std::time::Duration;

    fn stalled() -> BoxError {
        Box::new(BackendStalled {
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn a_stall_is_known_as_it_is_and_inside_io_errors_that_wrap_it() {
        assert!(is_backend_stall(stalled().as_ref()));
        let wrapped = std::io::Error::other(stalled());
        assert!(is_backend_stall(&wrapped));
        let twice = std::io::Error::other(std::io::Error::other(stalled()));
        assert!(is_backend_stall(&twice));
    }

    #[test]
    fn other_errors_are_not_stalls() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_backend_stall(&reset));
        let text: BoxError = "the backend closed the connection".into();
        assert!(!is_backend_stall(text.as_ref()));
        assert!(!is_backend_stall(&std::io::Error::other(text)));
    }
}
