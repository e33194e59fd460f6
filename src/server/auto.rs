//! HTTP/1.1 and HTTP/2 on one connection (h2c with prior knowledge on a cleartext listener),
//! told apart by the HTTP/2 connection preface, in one read; and idle HTTP/1 connections
//! parked without buffers.
//!
//! hyper-util's auto builder does the same sniffing, but its first read asks for exactly the 24
//! bytes of the preface, so every new HTTP/1 connection costs a second read for the rest of its
//! first request. Here the first read is a full-size one, and the bytes it got are handed to
//! hyper ahead of the stream, so a request that came in one segment is read with one system call.
//!
//! Parking: hyper keeps an HTTP/1 connection's read and write buffers and the slot for the
//! request future (together ~25 KiB) for the connection's whole life, idle or not. nginx and
//! HAProxy hold no buffer while a keep-alive connection waits. hyper has no such mode, but it
//! can hand the stream back: asked to close while idle, it finishes, and the stream, the bytes it
//! read ahead and the service come back (`into_parts`). A parked connection holds only those and
//! waits for the socket to become readable, without a buffer; then a new hyper connection
//! carries on from where the old one stopped. Only a connection between requests is parked (the
//! caller's clock knows: no request in flight, no byte of a new head), and the stream's
//! `poll_shutdown` is held back meanwhile, so the client never sees the close.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::H2_PREFACE;
use super::h1::{self, Http1Connection};
use super::write_coalesce::{Coalesced, Hold};
use crate::body::{BoxError, ClientBody};

/// Bytes asked for by the first read: as much as hyper's own first read, so that the first
/// request head fits unless it is a very large one (hyper then reads the rest itself).
const FIRST_READ: usize = 8192;

/// The builders a listener picks from, once the first bytes are in.
pub(super) struct Builders {
    /// For connections that do not start with the HTTP/2 preface.
    pub http1: http1::Builder,
    /// For connections that do; `None` on an HTTP/1-only listener, where the preface is a
    /// malformed HTTP/1 request like any other.
    pub http2: Option<http2::Builder<TokioExecutor>>,
    /// `gatehouse_client_connections_parked_total` of the listener.
    pub parked: metrics::Counter,
    /// The limits hyper's HTTP/1 server has, for plain requests served without it.
    pub limits: h1::Limits,
    /// `gatehouse_response_bytes_spliced_total` of the listener.
    pub spliced: metrics::Counter,
}

/// A client stream an idle HTTP/1 connection can wait on for its next bytes without reading
/// them (so without a buffer).
pub(super) trait WaitReadable {
    /// Whether [`WaitReadable::poll_read_ready`] works for this stream; a connection on a
    /// stream that cannot is never parked.
    fn can_wait(&self) -> bool;

    /// Ready when a read would not block: bytes, end of stream or an error are there.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether dropping the stream ends it as `poll_shutdown` would, so that a connection closed
    /// for good can skip the shutdown: plain TCP's close sends the FIN after any unsent bytes,
    /// exactly as `shutdown(SHUT_WR)` does (one system call per closed connection saved, as
    /// nginx saves it). Not where shutting down writes something of its own (TLS's
    /// `close_notify`), and never for a stream that lives on after the shutdown (a tunnel's
    /// half-close).
    fn closes_on_drop(&self) -> bool {
        false
    }

    /// The TCP socket itself when nothing stands between it and the bytes (no TLS), so that a
    /// response body can be spliced into it (`crate::splice`).
    fn plain_tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }

    /// Tells the connection's send clock about a write made past the stream, into
    /// [`WaitReadable::plain_tcp`]: whether it would block (`true`) or moved bytes.
    fn note_send(&self, _blocked: bool) {}
}

impl WaitReadable for tokio::net::TcpStream {
    fn can_wait(&self) -> bool {
        true
    }

    fn closes_on_drop(&self) -> bool {
        true
    }

    fn plain_tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

/// A stream whose first bytes were already read: reads return those, then the stream's own.
#[derive(Debug)]
pub(super) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
    /// Set while the connection is being parked: `poll_shutdown` then only flushes, as the
    /// stream lives on.
    parking: Option<Arc<AtomicBool>>,
}

/// The stream hyper serves: the bytes of the first read, then the client's.
type Io<IO> = TokioIo<Prefixed<IO>>;

/// hyper's HTTP/2 connection as served here: its writes are coalesced ([`super::write_coalesce`]).
type Http2Connection<IO, S> =
    http2::Connection<TokioIo<Coalesced<Prefixed<IO>>>, BoxedFutures<FromHyper<S>>, TokioExecutor>;

/// Serves one connection with HTTP/1.1 or HTTP/2, whichever its first bytes say, parking it
/// between HTTP/1 requests when asked to ([`AutoConnection::park`]).
///
/// HTTP/1 requests are served by [`h1`] while they are plain; the first that is not goes to
/// hyper's HTTP/1 server with the connection, which keeps it until it is parked (the next
/// bytes after that start with [`h1`] again).
// `Plain` is the large variant and most connections' state for most of their life: kept inline,
// where a box would cost an allocation per connection.
#[allow(clippy::large_enum_variant)]
pub(super) enum AutoConnection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body,
{
    /// Waiting for the first bytes. `io` and `service` are taken when they are in.
    Sniffing {
        io: Option<IO>,
        service: Option<S>,
        // What came so far of a connection that may yet send the whole preface (rare: the
        // preface split over segments).
        partial: Vec<u8>,
        builders: Arc<Builders>,
        // Asked to close before any request: the connection ends at the next poll.
        cancelled: bool,
    },
    /// Plain HTTP/1 requests, served by [`h1`].
    Plain {
        conn: Http1Connection<IO, S, B>,
        builders: Arc<Builders>,
    },
    /// Boxed: hyper's connection is twice the size of [`Http1Connection`], and only connections
    /// that sent a request that is not plain have one; inline, it would size every connection's
    /// task, idle ones too.
    Http1 {
        conn: Box<http1::UpgradeableConnection<Io<IO>, FromHyper<S>>>,
        builders: Arc<Builders>,
        /// Shared with the stream inside `conn` when the connection can be parked; set while it
        /// is being parked.
        parking: Option<Arc<AtomicBool>>,
        /// Asked to close: never parked after that (the close must end it).
        closing: bool,
    },
    /// Between two HTTP/1 requests, with no hyper connection: waiting for the client's next
    /// bytes.
    Parked {
        io: Option<IO>,
        service: Option<S>,
        builders: Arc<Builders>,
        cancelled: bool,
    },
    /// Boxed: HTTP/2 connections are few and long, and the box keeps this enum (in every
    /// connection's task) as small as the HTTP/1 connection.
    Http2 {
        conn: Pin<Box<Http2Connection<IO, S>>>,
        /// Whether what h2 writes is held (shared with the connection's stream).
        hold: Arc<Hold>,
        /// Held bytes are waiting for the other ready tasks to run once.
        deferred: bool,
    },
    /// Parts are being moved between states (never seen by a poll).
    Moving(PhantomData<fn() -> B>),
}

impl<IO, S, B> AutoConnection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body,
{
    /// Serves `io` with `service`, with the builder for the version the client speaks.
    pub(super) fn new(io: IO, service: S, builders: Arc<Builders>) -> Self {
        AutoConnection::Sniffing {
            io: Some(io),
            service: Some(service),
            partial: Vec::new(),
            builders,
            cancelled: false,
        }
    }
}

impl<IO, S, B> AutoConnection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>> + Unpin,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + WaitReadable + Unpin + Send + 'static,
    B: Body<Data = Bytes> + crate::splice::SpliceSource + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor:
        Http2ServerConnExec<Pin<Box<<FromHyper<S> as Service<Request<Incoming>>>::Future>>, B>,
{
    /// hyper's `graceful_shutdown` for the version in use (or [`h1`]'s); before the first
    /// bytes, or while parked, the connection just ends.
    pub(super) fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.get_mut() {
            AutoConnection::Sniffing { cancelled, .. }
            | AutoConnection::Parked { cancelled, .. } => *cancelled = true,
            AutoConnection::Plain { conn, .. } => conn.graceful_shutdown(),
            AutoConnection::Http1 {
                conn,
                parking,
                closing,
                ..
            } => {
                // A close asked for while parking is a real close.
                if let Some(parking) = parking {
                    parking.store(false, Ordering::Release);
                }
                *closing = true;
                Pin::new(&mut **conn).graceful_shutdown();
            }
            AutoConnection::Http2 { conn, .. } => conn.as_mut().graceful_shutdown(),
            AutoConnection::Moving(_) => {}
        }
    }

    /// Puts an idle HTTP/1 connection's buffers (and hyper's connection) away until the client
    /// sends again. Call it only between requests: no request in flight and no byte of a new
    /// one read (a head already partly read is kept and served). Does nothing for other
    /// connections.
    pub(super) fn park(self: Pin<&mut Self>) {
        match self.get_mut() {
            AutoConnection::Plain { conn, builders } => {
                builders.parked.increment(u64::from(conn.park()));
            }
            AutoConnection::Http1 {
                conn,
                parking: Some(parking),
                closing: false,
                ..
            } => {
                parking.store(true, Ordering::Release);
                // Idle, hyper closes at once (flushing first); the poll that sees it done parks.
                Pin::new(&mut **conn).graceful_shutdown();
            }
            _ => {}
        }
    }
}

impl<IO, S, B> Future for AutoConnection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>> + Unpin,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + WaitReadable + Unpin + Send + 'static,
    B: Body<Data = Bytes> + crate::splice::SpliceSource + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor:
        Http2ServerConnExec<Pin<Box<<FromHyper<S> as Service<Request<Incoming>>>::Future>>, B>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this {
                AutoConnection::Http2 {
                    conn,
                    hold,
                    deferred,
                } => {
                    // What h2 writes in this poll is held; if anything is, the other ready
                    // tasks run once (streams of this connection about to answer, typically) and
                    // the next poll lets it all go out in one write.
                    hold.set(true);
                    let polled = conn.as_mut().poll(cx);
                    if polled.is_ready() || !hold.is_pending() {
                        // Nothing held; or the connection is ending, and h2 shuts the stream
                        // down, which writes what is held first.
                        *deferred = false;
                        return polled.map_err(Into::into);
                    }
                    if !*deferred {
                        *deferred = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    *deferred = false;
                    hold.set(false);
                    // h2 ends every poll with a flush, which writes what is held now.
                    return conn.as_mut().poll(cx).map_err(Into::into);
                }
                AutoConnection::Plain { conn, .. } => {
                    if ready!(conn.poll(cx))? == h1::Progress::Closed {
                        return Poll::Ready(Ok(()));
                    }
                    let AutoConnection::Plain { conn, builders } =
                        std::mem::replace(this, AutoConnection::Moving(PhantomData))
                    else {
                        return Poll::Ready(Ok(()));
                    };
                    // A request for hyper: it reads it (and what follows) from the start.
                    let (io, service, unread) = conn.into_parts();
                    let parking = io.can_wait().then(|| Arc::new(AtomicBool::new(false)));
                    *this = http1_connection(builders, unread, io, service, parking);
                }
                AutoConnection::Http1 { conn, parking, .. } => {
                    ready!(Pin::new(&mut **conn).poll(cx))?;
                    if !parking.as_ref().is_some_and(|p| p.load(Ordering::Acquire)) {
                        return Poll::Ready(Ok(()));
                    }
                    // Parked: hyper closed the idle connection and left the stream open.
                    let AutoConnection::Http1 { conn, builders, .. } =
                        std::mem::replace(this, AutoConnection::Moving(PhantomData))
                    else {
                        return Poll::Ready(Ok(()));
                    };
                    // `None` after an upgrade, which ends the connection here.
                    let Some(parts) = (*conn).into_parts() else {
                        return Poll::Ready(Ok(()));
                    };
                    let Prefixed { prefix, io, .. } = parts.io.into_inner();
                    // What hyper read ahead comes first, then what it had not yet taken.
                    let unread = if prefix.is_empty() {
                        parts.read_buf
                    } else {
                        let mut both = BytesMut::from(&parts.read_buf[..]);
                        both.extend_from_slice(&prefix);
                        both.freeze()
                    };
                    let service = parts.service.0;
                    *this = if unread.is_empty() {
                        builders.parked.increment(1);
                        AutoConnection::Parked {
                            io: Some(io),
                            service: Some(service),
                            builders,
                            cancelled: false,
                        }
                    } else {
                        // The client had already sent more: serve it at once.
                        plain_connection(builders, unread, io, service)
                    };
                }
                AutoConnection::Parked {
                    io,
                    service,
                    builders,
                    cancelled,
                } => {
                    if *cancelled {
                        return Poll::Ready(Ok(()));
                    }
                    let Some(stream) = io.as_ref() else {
                        return Poll::Ready(Ok(()));
                    };
                    ready!(stream.poll_read_ready(cx))?;
                    let (Some(io), Some(service)) = (io.take(), service.take()) else {
                        return Poll::Ready(Ok(()));
                    };
                    *this = plain_connection(builders.clone(), Bytes::new(), io, service);
                }
                AutoConnection::Sniffing {
                    io,
                    service,
                    partial,
                    builders,
                    cancelled,
                } => {
                    if *cancelled {
                        return Poll::Ready(Ok(()));
                    }
                    let Some(stream) = io.as_mut() else {
                        return Poll::Ready(Ok(()));
                    };
                    let sniff = builders.http2.is_some();
                    let Some((http2, prefix)) =
                        ready!(poll_first_bytes(stream, partial, sniff, cx))?
                    else {
                        // Closed before sending anything: nothing to serve.
                        return Poll::Ready(Ok(()));
                    };
                    let (Some(io), Some(service)) = (io.take(), service.take()) else {
                        return Poll::Ready(Ok(()));
                    };
                    let builders = builders.clone();
                    *this = match (http2, &builders.http2) {
                        (true, Some(http2)) => {
                            let hold = Arc::new(Hold::default());
                            let stream = Prefixed {
                                prefix,
                                io,
                                parking: None,
                            };
                            AutoConnection::Http2 {
                                conn: Box::pin(http2.serve_connection(
                                    TokioIo::new(Coalesced::new(stream, hold.clone())),
                                    BoxedFutures(FromHyper(service)),
                                )),
                                hold,
                                deferred: false,
                            }
                        }
                        _ => plain_connection(builders, prefix, io, service),
                    };
                }
                AutoConnection::Moving(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// A connection whose next requests [`h1`] serves, `prefix` read before it.
fn plain_connection<IO, S, B>(
    builders: Arc<Builders>,
    prefix: Bytes,
    io: IO,
    service: S,
) -> AutoConnection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + WaitReadable + Unpin,
    B: Body<Data = Bytes> + crate::splice::SpliceSource,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let limits = builders.limits;
    AutoConnection::Plain {
        conn: Http1Connection::new(io, service, prefix, limits, builders.spliced.clone()),
        builders,
    }
}

/// A new hyper HTTP/1 connection on `io`, with `prefix` read before it.
fn http1_connection<IO, S, B>(
    builders: Arc<Builders>,
    prefix: Bytes,
    io: IO,
    service: S,
    parking: Option<Arc<AtomicBool>>,
) -> AutoConnection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let io = TokioIo::new(Prefixed {
        prefix,
        io,
        parking: parking.clone(),
    });
    AutoConnection::Http1 {
        conn: Box::new(
            builders
                .http1
                .serve_connection(io, FromHyper(service))
                .with_upgrades(),
        ),
        builders,
        parking,
        closing: false,
    }
}

/// A service taking requests with [`ClientBody`], as hyper's servers call it (with hyper's
/// body).
#[derive(Debug, Clone)]
pub(super) struct FromHyper<S>(pub(super) S);

impl<S> Service<Request<Incoming>> for FromHyper<S>
where
    S: Service<Request<ClientBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.0.call(request.map(ClientBody::from))
    }
}

/// A service as HTTP/2 connections run it: each request's future boxed.
///
/// hyper runs every HTTP/2 stream as a task of its own, and the stream's future, with the
/// service's future inside (several KiB: the whole request pipeline), is moved several times on
/// its way into the task: in the scenario-4 profile that was ~90 KB of memcpy per request. Boxed,
/// only a pointer moves. HTTP/1 keeps the future unboxed: hyper keeps it in a per-connection slot
/// it is written into once.
#[derive(Debug, Clone)]
pub(super) struct BoxedFutures<S>(pub(super) S);

impl<S, R> Service<R> for BoxedFutures<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<S::Future>>;

    fn call(&self, request: R) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// Reads the first bytes of a connection, as many as come in one read, and tells whether they
/// are the HTTP/2 preface (only if `sniff`): `Some((http2, bytes read))`, or `None` if the
/// client closed without sending anything. Reads on only while what came is a strict prefix of
/// the preface.
fn poll_first_bytes<IO: AsyncRead + Unpin>(
    io: &mut IO,
    partial: &mut Vec<u8>,
    sniff: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<(bool, Bytes)>>> {
    // On the stack, so a connection waiting for its first bytes holds no buffer; what was read
    // is copied into one of its size.
    let mut storage = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    loop {
        let mut buf = ReadBuf::uninit(&mut storage);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        if read.is_empty() {
            // End of stream. A partial preface goes to HTTP/1, which reports it as malformed.
            return Poll::Ready(Ok(
                (!partial.is_empty()).then(|| (false, Bytes::from(std::mem::take(partial))))
            ));
        }
        let seen = partial.len();
        let compared = read.len().min(H2_PREFACE.len() - seen);
        let http2 = if !sniff || read[..compared] != H2_PREFACE[seen..seen + compared] {
            false
        } else if seen + compared == H2_PREFACE.len() {
            true
        } else {
            partial.extend_from_slice(read);
            continue;
        };
        let bytes = if partial.is_empty() {
            Bytes::copy_from_slice(read)
        } else {
            partial.extend_from_slice(read);
            Bytes::from(std::mem::take(partial))
        };
        return Poll::Ready(Ok(Some((http2, bytes))));
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // Frees the buffer now rather than with the connection.
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self
            .parking
            .as_ref()
            .is_some_and(|p| p.load(Ordering::Acquire))
        {
            // Parking: the stream lives on, only what was written must be out.
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A stream that yields the given reads, one per poll, then end of stream.
    struct Segments(Vec<&'static [u8]>);

    impl AsyncRead for Segments {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.0.is_empty() {
                let segment = self.0.remove(0);
                buf.put_slice(segment);
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn first_bytes(segments: Vec<&'static [u8]>) -> (Option<(bool, Bytes)>, Segments) {
        let mut io = Segments(segments);
        let mut partial = Vec::new();
        let found = std::future::poll_fn(|cx| poll_first_bytes(&mut io, &mut partial, true, cx))
            .await
            .expect("no I/O error");
        (found, io)
    }

    #[tokio::test]
    async fn an_http1_request_is_read_whole_in_one_read() {
        let request: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let (found, io) = first_bytes(vec![request, b"next"]).await;
        assert_eq!(found, Some((false, Bytes::from_static(request))));
        assert_eq!(io.0.len(), 1, "only one read was made");
    }

    #[tokio::test]
    async fn the_preface_is_recognised_with_what_follows_it() {
        let mut sent = H2_PREFACE.to_vec();
        sent.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        let sent: &'static [u8] = sent.leak();
        let (found, _) = first_bytes(vec![sent]).await;
        assert_eq!(found, Some((true, Bytes::from_static(sent))));
    }

    #[tokio::test]
    async fn a_preface_split_over_reads_is_recognised() {
        let (found, _) = first_bytes(vec![
            &H2_PREFACE[..3],
            &H2_PREFACE[3..20],
            &H2_PREFACE[20..],
        ])
        .await;
        assert_eq!(found, Some((true, Bytes::from_static(H2_PREFACE))));
    }

    #[tokio::test]
    async fn a_pri_method_that_is_not_the_preface_is_http1() {
        let (found, _) = first_bytes(vec![b"PRI", b" / HTTP/1.1\r\n"]).await;
        assert_eq!(
            found,
            Some((false, Bytes::from_static(b"PRI / HTTP/1.1\r\n")))
        );
    }

    #[tokio::test]
    async fn a_closed_connection_has_no_first_bytes() {
        assert_eq!(first_bytes(vec![]).await.0, None);
        let (found, _) = first_bytes(vec![b"PRI * HT"]).await;
        assert_eq!(found, Some((false, Bytes::from_static(b"PRI * HT"))));
    }

    #[tokio::test]
    async fn the_bytes_read_come_first_then_the_stream() {
        let mut io = Prefixed {
            prefix: Bytes::from_static(b"hello "),
            io: Segments(vec![b"world"]),
            parking: None,
        };
        let mut out = String::new();
        io.read_to_string(&mut out).await.expect("reads");
        assert_eq!(out, "hello world");
    }
}
