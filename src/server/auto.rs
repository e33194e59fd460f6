//! HTTP/1.1 and HTTP/2 on one connection (h2c with prior knowledge on a cleartext listener),
//! told apart by the HTTP/2 connection preface, in one read.
//!
//! hyper-util's auto builder does the same, but its first read asks for exactly the 24 bytes of
//! the preface, so every new HTTP/1 connection costs a second read for the rest of its first
//! request. Here the first read is a full-size one, and the bytes it got are handed to hyper
//! ahead of the stream, so a request that came in one segment is read with one system call.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::H2_PREFACE;

/// Bytes asked for by the first read: as much as hyper's own first read, so that the first
/// request head fits unless it is a very large one (hyper then reads the rest itself).
const FIRST_READ: usize = 8192;

/// The builders a listener serving both versions picks from, once the first bytes are in.
pub(super) struct Builders {
    /// For connections that do not start with the HTTP/2 preface.
    pub http1: http1::Builder,
    /// For connections that do.
    pub http2: http2::Builder<TokioExecutor>,
}

/// A stream whose first bytes were already read: reads return those, then the stream's own.
#[derive(Debug)]
pub(super) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

/// The stream hyper serves: the bytes of the first read, then the client's.
type Io<IO> = TokioIo<Prefixed<IO>>;

pin_project_lite::pin_project! {
    /// Serves one connection with HTTP/1.1 or HTTP/2, whichever its first bytes say.
    #[project = AutoProj]
    pub(super) enum AutoConnection<'a, IO, S, B>
    where
        S: Service<Request<Incoming>, Response = Response<B>>,
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
            builders: &'a Builders,
            // Asked to close before any request: the connection ends at the next poll.
            cancelled: bool,
        },
        Http1 {
            #[pin]
            conn: http1::UpgradeableConnection<Io<IO>, S>,
        },
        Http2 {
            #[pin]
            conn: http2::Connection<Io<IO>, BoxedFutures<S>, TokioExecutor>,
        },
    }
}

impl<'a, IO, S, B> AutoConnection<'a, IO, S, B>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body,
{
    /// Serves `io` with `service`, with the builder for the version the client speaks.
    pub(super) fn new(io: IO, service: S, builders: &'a Builders) -> Self {
        AutoConnection::Sniffing {
            io: Some(io),
            service: Some(service),
            partial: Vec::new(),
            builders,
            cancelled: false,
        }
    }
}

impl<IO, S, B> AutoConnection<'_, IO, S, B>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: Http2ServerConnExec<Pin<Box<S::Future>>, B>,
{
    /// hyper's `graceful_shutdown` for the version in use; before the first bytes, the
    /// connection just ends.
    pub(super) fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            AutoProj::Sniffing { cancelled, .. } => *cancelled = true,
            AutoProj::Http1 { conn } => conn.graceful_shutdown(),
            AutoProj::Http2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<IO, S, B> Future for AutoConnection<'_, IO, S, B>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: Http2ServerConnExec<Pin<Box<S::Future>>, B>,
{
    type Output = Result<(), Box<dyn StdError + Send + Sync>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let next = match self.as_mut().project() {
            AutoProj::Http1 { conn } => return conn.poll(cx).map_err(Into::into),
            AutoProj::Http2 { conn } => return conn.poll(cx).map_err(Into::into),
            AutoProj::Sniffing {
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
                let Some((http2, prefix)) = ready!(poll_first_bytes(stream, partial, cx))? else {
                    // Closed before sending anything: nothing to serve.
                    return Poll::Ready(Ok(()));
                };
                let (Some(io), Some(service)) = (io.take(), service.take()) else {
                    return Poll::Ready(Ok(()));
                };
                let io = TokioIo::new(Prefixed { prefix, io });
                if http2 {
                    AutoConnection::Http2 {
                        conn: builders.http2.serve_connection(io, BoxedFutures(service)),
                    }
                } else {
                    AutoConnection::Http1 {
                        conn: builders.http1.serve_connection(io, service).with_upgrades(),
                    }
                }
            }
        };
        self.set(next);
        self.poll(cx)
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
/// are the HTTP/2 preface: `Some((http2, bytes read))`, or `None` if the client closed without
/// sending anything. Reads on only while what came is a strict prefix of the preface.
fn poll_first_bytes<IO: AsyncRead + Unpin>(
    io: &mut IO,
    partial: &mut Vec<u8>,
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
        let http2 = if read[..compared] != H2_PREFACE[seen..seen + compared] {
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
        let found = std::future::poll_fn(|cx| poll_first_bytes(&mut io, &mut partial, cx))
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
        };
        let mut out = String::new();
        io.read_to_string(&mut out).await.expect("reads");
        assert_eq!(out, "hello world");
    }
}
