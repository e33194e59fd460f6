//! Gatehouse's own client-side HTTP/1.1 for plain requests (GET and HEAD with no body, upgrade,
//! expectation or transfer coding), which is most of the traffic a proxy sees; every other
//! request goes to hyper's HTTP/1 server, handed the connection with the bytes read so far.
//!
//! Why: in the scenario-1 profile hyper's server (dispatcher, codec, buffers) cost ~8,000
//! instructions per request outside the service, a quarter of all user-space work. A request
//! that is not plain, or that this module does not parse cleanly, is never answered here:
//! hyper reads it from the start, so its answers to malformed requests (400, 414, 431), its
//! request-body framing (the request-smuggling surface), `Expect: 100-continue` and upgrades
//! stay exactly as they were. Responses are written as hyper writes them (same framing rules,
//! `Date`, `connection: close` when the connection will close), so a client cannot tell which
//! of the two served it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use hyper::service::Service;
use pin_project_lite::pin_project;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite};

use super::auto::WaitReadable;
use crate::body::{BoxError, ClientBody};
use crate::proxy::field_memo::FieldMemo;
use crate::proxy::headers::{line_ends_chunked, lists_token, parse_content_length};
use crate::splice::{Pipe, SPLICE_MIN, SpliceSource};

/// Header slots parsed in place; a listener allowing more fields hands heads with more to hyper.
const SLOTS: usize = 128;
/// The read size, as hyper's first read.
const READ_SIZE: usize = 8192;
/// The stack buffer [`client_gone`] reads into when the connection's buffer has no room: bytes
/// that come while a request is in flight are a pipelined next request, seldom more than this;
/// more stay in the socket for the next read.
const WATCH_READ: usize = 2048;
/// hyper's longest request target; a longer one gets its 414.
const MAX_TARGET: usize = u16::MAX as usize - 1;
/// Data frames up to this size are copied beside the head (one write for a small response);
/// larger ones are written from their own buffers.
const COPY_BELOW: usize = 8192;
/// Room reserved for a response head beyond its fields (status line, framing, `date`).
const HEAD_ROOM: usize = 128;
/// Output queued beyond this is written before the body is polled again (backpressure).
const MAX_QUEUED: usize = 256 * 1024;
/// Buffers handed to one `writev`.
const MAX_SLICES: usize = 16;

/// The limits hyper is configured with, which a plain request must also be within.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `server.max_headers`.
    pub max_headers: usize,
    /// The largest request head, in bytes (hyper's `max_buf_size`).
    pub max_head: usize,
}

/// Why [`Http1Connection::poll`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// The connection is over.
    Closed,
    /// The next request is not a plain one: hyper takes the connection
    /// ([`Http1Connection::into_parts`]).
    Handoff,
}

/// What the exchange on the connection is doing.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Between requests.
    Idle,
    /// The service is working on a request.
    Waiting(Facts),
    /// The response body is being sent.
    Sending { framing: Framing, keep_alive: bool },
    /// The response body is being spliced from the backend's socket (`left` bytes still to
    /// reach the client's).
    Splicing { left: u64, keep_alive: bool },
    /// The response is queued; written out, the connection goes on (or closes).
    Written { keep_alive: bool },
}

/// What the response to a request depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    /// A HEAD request: the response has no body.
    head: bool,
    /// The client did not ask to close.
    keep_alive: bool,
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to be sent.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// No body is sent (HEAD, 204, 304, or an empty one); the body is dropped unpolled.
    Nothing,
}

/// What the service's response body says about its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLength {
    Empty,
    Known(u64),
    Unknown,
}

pin_project! {
    /// The request in flight: the service's future, then the response body. Boxed once per
    /// connection and reused (the future is several KiB; as hyper does).
    #[project = SlotProj]
    enum Slot<F, B> {
        Empty,
        Waiting { #[pin] future: F },
        Sending { #[pin] body: B },
    }
}

/// The boxed [`Slot`].
type InFlight<F, B> = Pin<Box<Slot<F, B>>>;

/// One client connection served by this module until it closes or hands off to hyper.
pub(super) struct Http1Connection<IO, S, B>
where
    S: Service<Request<ClientBody>, Response = Response<B>>,
{
    io: IO,
    service: S,
    read: BytesMut,
    out: Outgoing,
    slot: Option<InFlight<S::Future, B>>,
    /// A response's emptied header map, reused for the next request's headers.
    spare_headers: Option<HeaderMap>,
    /// The last request's field names, from the second request on (a client sends the same ones
    /// every time; a connection that serves one request has no use for it). Dropped when parked.
    memo: Option<Box<FieldMemo>>,
    /// A response has been written on this connection.
    answered: bool,
    phase: Phase,
    limits: Limits,
    /// Asked to close: no new request is read, the one in flight is the last.
    closing: bool,
    /// The request in flight asked to close the connection (`Connection: close`).
    client_closes: bool,
    /// Buffers released while idle: wait until the client sends before taking new ones.
    parked: bool,
    /// The pipe of the body being spliced.
    pipe: Option<Pipe>,
    /// `gatehouse_response_bytes_spliced_total` of the listener.
    spliced: metrics::Counter,
}

impl<IO, S, B> Http1Connection<IO, S, B>
where
    IO: AsyncRead + AsyncWrite + WaitReadable + Unpin,
    S: Service<Request<ClientBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + SpliceSource,
    B::Error: Into<BoxError>,
{
    /// Serves `io`, whose first bytes, already read, are `read`; bytes of response bodies
    /// spliced are counted in `spliced`.
    pub(super) fn new(
        io: IO,
        service: S,
        read: Bytes,
        limits: Limits,
        spliced: metrics::Counter,
    ) -> Self {
        Http1Connection {
            io,
            service,
            read: BytesMut::from(read),
            out: Outgoing::default(),
            slot: None,
            spare_headers: None,
            memo: None,
            answered: false,
            phase: Phase::Idle,
            limits,
            closing: false,
            client_closes: false,
            parked: false,
            pipe: None,
            spliced,
        }
    }

    /// The stream, the service and the bytes read but not used, for hyper to carry on with.
    /// Only after [`Progress::Handoff`]: then nothing is in flight or waiting to be written.
    pub(super) fn into_parts(self) -> (IO, S, Bytes) {
        (self.io, self.service, self.read.freeze())
    }

    /// Finishes the request in flight, if any, and closes (hyper's `graceful_shutdown`).
    pub(super) fn graceful_shutdown(&mut self) {
        self.closing = true;
    }

    /// Releases the buffers of a connection waiting for its next request; the next bytes the
    /// client sends take new ones. True when released (not if a request or bytes are there).
    pub(super) fn park(&mut self) -> bool {
        if !matches!(self.phase, Phase::Idle) || !self.read.is_empty() || !self.out.is_empty() {
            return false;
        }
        self.read = BytesMut::new();
        self.out = Outgoing::default();
        self.slot = None;
        self.spare_headers = None;
        self.memo = None;
        self.parked = true;
        true
    }

    /// Serves requests until the connection closes, or a request for hyper comes.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Progress, BoxError>> {
        loop {
            match self.phase {
                Phase::Idle => {
                    if self.closing {
                        return self.poll_close(cx);
                    }
                    let spare = self.spare_headers.take().unwrap_or_default();
                    if self.answered && self.memo.is_none() {
                        self.memo = Some(Box::default());
                    }
                    let memo = self.memo.as_deref_mut();
                    match parse_plain(&mut self.read, self.limits.max_headers, spare, memo) {
                        Parsed::Plain(request, facts) => {
                            let future = self.service.call(request);
                            match &mut self.slot {
                                Some(slot) => slot.set(Slot::Waiting { future }),
                                None => self.slot = Some(Box::pin(Slot::Waiting { future })),
                            }
                            self.phase = Phase::Waiting(facts);
                        }
                        Parsed::Other => return Poll::Ready(Ok(Progress::Handoff)),
                        Parsed::Partial(spare) => {
                            self.spare_headers = Some(spare);
                            if self.read.len() >= self.limits.max_head {
                                // hyper refuses it (431) the way it always has.
                                return Poll::Ready(Ok(Progress::Handoff));
                            }
                            if ready!(self.poll_fill(cx))? == 0 {
                                if self.read.is_empty() {
                                    return self.poll_close(cx);
                                }
                                // A head cut short: hyper reports it.
                                return Poll::Ready(Ok(Progress::Handoff));
                            }
                        }
                    }
                }
                Phase::Waiting(facts) => {
                    let Some(slot) = self.slot.as_mut() else {
                        return Poll::Ready(Err("request slot missing".into()));
                    };
                    let polled = match slot.as_mut().project() {
                        SlotProj::Waiting { future } => future.poll(cx),
                        _ => return Poll::Ready(Err("request slot in the wrong state".into())),
                    };
                    let Poll::Ready(response) = polled else {
                        client_gone(&mut self.io, &mut self.read, cx)?;
                        return Poll::Pending;
                    };
                    let response = response.map_err(Into::into)?;
                    let (mut parts, body) = response.into_parts();
                    let length = if body.is_end_stream() {
                        BodyLength::Empty
                    } else {
                        body.size_hint()
                            .exact()
                            .map_or(BodyLength::Unknown, BodyLength::Known)
                    };
                    // One allocation for the head and a small body, not a doubling series (a
                    // new connection's buffer starts empty).
                    let small_body = match length {
                        BodyLength::Known(n) if n < COPY_BELOW as u64 => n as usize,
                        _ => 0,
                    };
                    self.out
                        .gather
                        .reserve(HEAD_ROOM + parts.headers.len() * 64 + small_body);
                    let keep_alive = facts.keep_alive && !self.closing;
                    self.client_closes = !facts.keep_alive;
                    let encoded =
                        encode_head(&parts, facts.head, length, keep_alive, &mut self.out);
                    parts.headers.clear();
                    self.spare_headers = Some(parts.headers);
                    self.answered = true;
                    let (framing, keep_alive) = match encoded {
                        Ok(encoded) => encoded,
                        Err(error) => {
                            slot.set(Slot::Empty);
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    if framing == Framing::Nothing {
                        slot.set(Slot::Empty);
                        self.phase = Phase::Written { keep_alive };
                    } else {
                        slot.set(Slot::Sending { body });
                        self.phase = Phase::Sending {
                            framing,
                            keep_alive,
                        };
                    }
                }
                Phase::Sending {
                    framing,
                    keep_alive,
                } => {
                    let phase = ready!(self.poll_send_body(cx, framing, keep_alive))?;
                    self.phase = phase;
                }
                Phase::Splicing { left, keep_alive } => {
                    let phase = ready!(self.poll_splice_body(cx, left, keep_alive))?;
                    self.phase = phase;
                }
                Phase::Written { keep_alive } => {
                    if !keep_alive && self.client_closes {
                        self.send_last_with_fin();
                    }
                    ready!(self.out.poll_write_all(&mut self.io, cx))?;
                    if !keep_alive {
                        self.closing = true;
                        return self.poll_close(cx);
                    }
                    self.phase = Phase::Idle;
                }
            }
        }
    }

    /// Moves the response body to the output until it ends, writing when enough is queued or
    /// the body has nothing yet; the phase after it.
    fn poll_send_body(
        &mut self,
        cx: &mut Context<'_>,
        mut framing: Framing,
        mut keep_alive: bool,
    ) -> Poll<Result<Phase, BoxError>> {
        let Some(slot) = self.slot.as_mut() else {
            return Poll::Ready(Err("response slot missing".into()));
        };
        loop {
            if self.out.len() >= MAX_QUEUED {
                ready!(self.out.poll_write_all(&mut self.io, cx))?;
            }
            let SlotProj::Sending { mut body } = slot.as_mut().project() else {
                return Poll::Ready(Err("response slot in the wrong state".into()));
            };
            if let Framing::Length(left) = framing
                && left >= SPLICE_MIN
                && self.io.plain_tcp().is_some()
                && body.splice_len() == Some(left)
                && let Some(pipe) = Pipe::take()
            {
                self.pipe = Some(pipe);
                return Poll::Ready(Ok(Phase::Splicing { left, keep_alive }));
            }
            let frame = match body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    // Nothing more yet: what is queued goes out meanwhile.
                    ready!(self.out.poll_write_all(&mut self.io, cx))?;
                    client_gone(&mut self.io, &mut self.read, cx)?;
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            let ended = match frame {
                None => true,
                Some(Err(error)) => {
                    slot.set(Slot::Empty);
                    return Poll::Ready(Err(error.into()));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        match &mut framing {
                            Framing::Length(remaining) => {
                                let mut data = data;
                                if data.len() as u64 > *remaining {
                                    // More than the body said: cut, and never reuse the
                                    // connection (the client counts the declared length).
                                    data.truncate(usize::try_from(*remaining).unwrap_or(0));
                                    keep_alive = false;
                                }
                                *remaining -= data.len() as u64;
                                self.out.put(data);
                            }
                            Framing::Chunked if !data.is_empty() => {
                                self.out.chunk_size(data.len());
                                self.out.put(data);
                                self.out.put_slice(b"\r\n");
                            }
                            Framing::Chunked | Framing::Nothing => {}
                        }
                        self.phase = Phase::Sending {
                            framing,
                            keep_alive,
                        };
                        body.is_end_stream() || framing == Framing::Length(0)
                    }
                    // Trailers end the body; they are not sent (hyper sends them only to clients
                    // that ask with `TE: trailers`, which are not served here).
                    Err(_) => true,
                },
            };
            if ended {
                match framing {
                    Framing::Length(left) if left > 0 => {
                        slot.set(Slot::Empty);
                        return Poll::Ready(Err(format!(
                            "response body ended {left} bytes short of its length"
                        )
                        .into()));
                    }
                    Framing::Chunked => self.out.put_slice(b"0\r\n\r\n"),
                    _ => {}
                }
                slot.set(Slot::Empty);
                return Poll::Ready(Ok(Phase::Written { keep_alive }));
            }
        }
    }

    /// Moves the rest of the response body from the backend's socket to the client's through
    /// the connection's pipe, after what is queued; the phase after it.
    fn poll_splice_body(
        &mut self,
        cx: &mut Context<'_>,
        mut left: u64,
        keep_alive: bool,
    ) -> Poll<Result<Phase, BoxError>> {
        // The head and any body bytes read with it go first.
        ready!(self.out.poll_write_all(&mut self.io, cx))?;
        let (Some(slot), Some(pipe), Some(client)) =
            (self.slot.as_mut(), self.pipe.as_mut(), self.io.plain_tcp())
        else {
            return Poll::Ready(Err(
                "splicing without a body, a pipe or a plain stream".into()
            ));
        };
        loop {
            if pipe.held() > 0 {
                let Poll::Ready(drained) = pipe.poll_drain_to(client, cx) else {
                    self.io.note_send(true);
                    return Poll::Pending;
                };
                let n = drained?;
                self.io.note_send(false);
                left = left.saturating_sub(n as u64);
                self.spliced.increment(n as u64);
                self.phase = Phase::Splicing { left, keep_alive };
                continue;
            }
            if left == 0 {
                // The body has ended (its connection gone home); dropping it completes it.
                slot.set(Slot::Empty);
                if let Some(pipe) = self.pipe.take() {
                    pipe.give_back();
                }
                return Poll::Ready(Ok(Phase::Written { keep_alive }));
            }
            let SlotProj::Sending { body } = slot.as_mut().project() else {
                return Poll::Ready(Err("response slot in the wrong state".into()));
            };
            match body.poll_splice(pipe, cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    slot.set(Slot::Empty);
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    client_gone(&mut self.io, &mut self.read, cx)?;
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads more of the client's bytes; how many (0 at the end of the stream).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.parked {
            ready!(self.io.poll_read_ready(cx))?;
            self.parked = false;
        }
        fill(&mut self.io, &mut self.read, cx)
    }

    /// Sends the last response of a connection the client asked to close as one held-back
    /// segment (`MSG_MORE`) that the close right after sends with its FIN: one packet less per
    /// connection for clients that close after every request (nginx gets the same from
    /// `tcp_nopush`). Only when nothing the client sent is left unread here (it sends nothing
    /// after asking to close, RFC 9112 §9.6), since closing a socket with unread bytes resets it
    /// and would drop what is held. Anything not sent here is written the ordinary way.
    fn send_last_with_fin(&mut self) {
        if !self.read.is_empty() || !self.out.queue.is_empty() || self.out.gather.is_empty() {
            return;
        }
        let Some(tcp) = self.io.plain_tcp() else {
            return;
        };
        let gather = &self.out.gather;
        let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            use rustix::net::SendFlags;
            rustix::net::send(tcp, gather, SendFlags::MORE | SendFlags::NOSIGNAL)
                .map_err(io::Error::from)
        });
        if let Ok(n) = sent {
            self.out.gather.advance(n);
            self.io.note_send(false);
        }
    }

    /// Writes what is queued, then closes the stream (the caller drops it next).
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<Progress, BoxError>> {
        ready!(self.out.poll_write_all(&mut self.io, cx))?;
        if !self.io.closes_on_drop() {
            // The peer may be gone already; the connection is over either way.
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
        }
        Poll::Ready(Ok(Progress::Closed))
    }
}

/// Reads more of the client's bytes into `read`; how many (0 at the end of the stream).
fn fill<IO: AsyncRead + Unpin>(
    io: &mut IO,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < READ_SIZE / 4 {
        read.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}

/// While a request is in flight, notices the client closing the connection: an error then, so
/// that the request's work is dropped (as hyper does; a client that half-closes after its
/// request is treated as gone, as hyper's default is). Bytes of a next request are kept for
/// later, and nothing more is read while some are waiting. Usually costs no system call: the
/// read that brought the request left the socket marked as drained.
///
/// When `read` has little room (a connection's first request leaves it with none: it holds
/// exactly the bytes of the first read), the read goes to the stack, and `read` grows only if
/// bytes come: most such reads find nothing, and a `Connection: close` request would otherwise
/// allocate a buffer for nothing (callgrind, scenario 3).
fn client_gone<IO: AsyncRead + Unpin>(
    io: &mut IO,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Result<(), BoxError> {
    if !read.is_empty() {
        return Ok(());
    }
    let polled = if read.capacity() >= READ_SIZE / 4 {
        fill(io, read, cx)
    } else {
        let mut storage = [MaybeUninit::<u8>::uninit(); WATCH_READ];
        let mut buf = tokio::io::ReadBuf::uninit(&mut storage);
        Pin::new(&mut *io).poll_read(cx, &mut buf).map_ok(|()| {
            read.extend_from_slice(buf.filled());
            buf.filled().len()
        })
    };
    match polled {
        Poll::Ready(Ok(0)) => Err("the client closed the connection".into()),
        Poll::Ready(Err(error)) => Err(error.into()),
        Poll::Ready(Ok(_)) | Poll::Pending => Ok(()),
    }
}

/// Fields the pipeline may add to a request on its way to a backend (`X-Forwarded-For`,
/// `-Proto`, `-Host`, `Forwarded`, `X-Request-Id`, `Host`). A map is made with room for them:
/// filled to the brim, a client's first request rebuilt its table twice on the way (callgrind,
/// scenario 3: ~900 instructions per request).
const ADDED_FIELDS: usize = 6;

/// The fewest fields for which a request's map is copied from the last one's shape
/// ([`FieldMemo::map`]) rather than filled into the spare map: the copy costs two allocations,
/// filling costs a hashed insertion per field.
const SHAPE_MIN: usize = 4;

/// What the front of the read buffer holds.
enum Parsed {
    /// A plain request, taken off the buffer.
    Plain(Request<ClientBody>, Facts),
    /// Not a whole head yet; the spare header map is handed back.
    Partial(HeaderMap),
    /// A request for hyper (not plain, or not parsed cleanly); the buffer is as it was.
    Other,
}

/// Takes a plain request off the front of `read`, if one is there whole. `headers` is an empty
/// map to fill (reused between requests); `memo`, the connection's last request's names.
fn parse_plain(
    read: &mut BytesMut,
    max_headers: usize,
    mut headers: HeaderMap,
    mut memo: Option<&mut FieldMemo>,
) -> Parsed {
    // Each field's name, and where its value lies in the head, so the values can share the
    // head's bytes once it is split off.
    let mut fields: SmallVec<[(HeaderName, (usize, usize)); 16]> = SmallVec::new();
    let (length, method, target, keep_alive) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; SLOTS];
        let slots = &mut slots[..max_headers.min(SLOTS)];
        let mut request = httparse::Request::new(&mut []);
        let base = read.as_ptr() as usize;
        // httparse's defaults are hyper's server defaults: nothing lenient.
        let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            read,
            slots,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Parsed::Partial(headers),
            Err(_) => return Parsed::Other,
        };
        if request.version != Some(1) {
            return Parsed::Other;
        }
        let method = match request.method {
            Some("GET") => Method::GET,
            Some("HEAD") => Method::HEAD,
            _ => return Parsed::Other,
        };
        let Some(target) = request
            .path
            .filter(|path| path.starts_with('/') && path.len() <= MAX_TARGET)
            .and_then(|path| span(base, path.as_bytes(), length))
        else {
            return Parsed::Other;
        };
        let mut keep_alive = true;
        for (index, field) in request.headers.iter().enumerate() {
            let name = match memo.as_deref_mut() {
                Some(memo) => memo.name(index, field.name.as_bytes()),
                None => HeaderName::from_bytes(field.name.as_bytes()),
            };
            let Ok(name) = name else {
                return Parsed::Other;
            };
            match name {
                // A body, an upgrade or an expectation: hyper's part.
                header::CONTENT_LENGTH
                | header::TRANSFER_ENCODING
                | header::UPGRADE
                | header::EXPECT
                | header::TE => return Parsed::Other,
                header::CONNECTION => {
                    if field.value.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if !field.value.eq_ignore_ascii_case(b"keep-alive") {
                        return Parsed::Other;
                    }
                }
                _ => {}
            }
            let Some(value) = span(base, field.value, length) else {
                return Parsed::Other;
            };
            fields.push((name, value));
        }
        (length, method, target, keep_alive)
    };
    let head = read.split_to(length).freeze();
    let Ok(uri) = http::Uri::from_maybe_shared(head.slice(target.0..target.1)) else {
        return give_back(read, &head);
    };
    // httparse accepts exactly the bytes a header value may hold; checked all the same.
    let value_of =
        |(start, end): &(usize, usize)| HeaderValue::from_maybe_shared(head.slice(*start..*end));
    match memo {
        Some(memo) if fields.len() >= SHAPE_MIN => {
            match memo.map(&fields, ADDED_FIELDS, |_, value| value_of(value)) {
                Ok(map) => headers = map,
                Err(_) => return give_back(read, &head),
            }
        }
        _ => {
            headers.reserve(fields.len() + ADDED_FIELDS);
            // `drain`, not `into_iter`: that would move the whole inline array.
            for (name, value) in fields.drain(..) {
                let Ok(value) = value_of(&value) else {
                    return give_back(read, &head);
                };
                headers.append(name, value);
            }
        }
    }
    let facts = Facts {
        head: method == Method::HEAD,
        keep_alive,
    };
    let mut request = Request::new(ClientBody::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Parsed::Plain(request, facts)
}

/// Puts a head taken off `read` back in front of it, for hyper (a rare path: a head httparse
/// accepted that `http` does not).
fn give_back(read: &mut BytesMut, head: &[u8]) -> Parsed {
    let mut whole = BytesMut::with_capacity(head.len() + read.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(read);
    *read = whole;
    Parsed::Other
}

/// Where `part` (a slice httparse returned) lies in a head of `length` bytes at `base`.
fn span(base: usize, part: &[u8], length: usize) -> Option<(usize, usize)> {
    (part.as_ptr() as usize)
        .checked_sub(base)
        .filter(|at| at + part.len() <= length)
        .map(|at| (at, at + part.len()))
}

/// Writes the response head as hyper's server does for the same response and request: the
/// framing it chooses (the response's own `content-length` or `transfer-encoding`, else the
/// body's exact length, else chunked; nothing for HEAD, 204 and 304), `connection: close` when
/// the connection will close, and `date`. Returns how the body is sent and whether the
/// connection stays open after it. A 1xx from the service gets hyper's bare 500 and a close;
/// responses hyper refuses to send (an invalid or differing `content-length`, `content-length`
/// and `transfer-encoding` both) are an error, and the connection is dropped with nothing sent.
fn encode_head(
    parts: &http::response::Parts,
    head_request: bool,
    length: BodyLength,
    keep_alive: bool,
    out: &mut Outgoing,
) -> Result<(Framing, bool), &'static str> {
    let status = parts.status;
    if status.is_informational() {
        // hyper answers a 1xx from the service with a bare 500 and ends the connection.
        tracing::debug!(%status, "the service answered a plain request with a 1xx status; sending 500");
        out.put_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\ndate: ");
        put_date(out);
        out.put_slice(b"\r\n\r\n");
        return Ok((Framing::Nothing, false));
    }
    let can_body =
        !(head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED);
    let can_length = !(status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED);
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_slice(b" ");
        match reason {
            Some(reason) => out.put_slice(reason.as_bytes()),
            None => out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.put_slice(b"\r\n");
    }
    let mut framing = None;
    let mut close = !keep_alive;
    let mut said_close = false;
    let mut wrote_date = false;
    // A header whose values are joined on one line (connection, transfer-encoding, trailer),
    // while its line is open; and, for transfer-encoding, whether the last coding was chunked.
    let mut open: Option<&HeaderName> = None;
    let mut last_chunked = true;
    let mut content_length = None;
    for (name, value) in parts.headers.iter() {
        if let Some(line) = open {
            if line == name {
                out.put_slice(b", ");
                out.put_slice(value.as_bytes());
                if name == header::CONNECTION {
                    said_close |= lists_token(value, "close");
                } else if name == header::TRANSFER_ENCODING
                    // A line of no codings leaves the last coding what it was (else a `chunked`
                    // line followed by an empty one was sent as `chunked, , chunked`).
                    && let Some(chunked) = line_ends_chunked(value)
                {
                    last_chunked = chunked;
                }
                continue;
            }
            end_line(out, line, last_chunked);
            open = None;
        }
        match *name {
            header::CONTENT_LENGTH => {
                if framing.is_some() && content_length.is_none() {
                    return Err("content-length after transfer-encoding");
                }
                match length {
                    BodyLength::Known(known) => {
                        if content_length.is_some() {
                            continue;
                        }
                        content_length = Some(known);
                        framing = Some(Framing::Length(known));
                    }
                    BodyLength::Unknown => {
                        let parsed = parse_content_length(value.as_bytes())
                            .ok_or("invalid content-length in the response")?;
                        match content_length {
                            Some(previous) if previous != parsed => {
                                return Err("differing content-length values in the response");
                            }
                            Some(_) => continue,
                            None => {
                                content_length = Some(parsed);
                                framing = Some(Framing::Length(parsed));
                            }
                        }
                    }
                    // An empty body: the header goes only on a HEAD response (where it describes
                    // the GET); otherwise `content-length: 0` is written below.
                    BodyLength::Empty if !head_request => continue,
                    BodyLength::Empty => {
                        if content_length.is_some() {
                            continue;
                        }
                        content_length = Some(0);
                        framing = Some(Framing::Nothing);
                    }
                }
            }
            header::TRANSFER_ENCODING => {
                if framing.is_some() {
                    return Err("transfer-encoding after content-length");
                }
                if !can_body {
                    continue;
                }
                framing = Some(Framing::Chunked);
                last_chunked = line_ends_chunked(value).unwrap_or(false);
                out.put_slice(b"transfer-encoding: ");
                out.put_slice(value.as_bytes());
                open = Some(name);
                continue;
            }
            header::CONNECTION => {
                said_close |= lists_token(value, "close");
                out.put_slice(b"connection: ");
                out.put_slice(value.as_bytes());
                open = Some(name);
                continue;
            }
            header::TRAILER => {
                if !can_body {
                    continue;
                }
                out.put_slice(b"trailer: ");
                out.put_slice(value.as_bytes());
                open = Some(name);
                continue;
            }
            header::DATE => wrote_date = true,
            _ => {}
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some(line) = open {
        end_line(out, line, last_chunked);
    }
    close |= said_close;
    if !keep_alive && !said_close {
        out.put_slice(b"connection: close\r\n");
    }
    let framing = match framing {
        Some(framing) => framing,
        None => match length {
            BodyLength::Unknown if can_body => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyLength::Unknown => Framing::Nothing,
            BodyLength::Empty | BodyLength::Known(0) => {
                if can_length && !head_request {
                    out.put_slice(b"content-length: 0\r\n");
                }
                Framing::Nothing
            }
            BodyLength::Known(known) if can_length => {
                out.put_slice(b"content-length: ");
                out.put_slice(itoa::Buffer::new().format(known).as_bytes());
                out.put_slice(b"\r\n");
                Framing::Length(known)
            }
            BodyLength::Known(_) => Framing::Nothing,
        },
    };
    let framing = match framing {
        _ if !can_body => Framing::Nothing,
        Framing::Length(0) => Framing::Nothing,
        framing => framing,
    };
    if !wrote_date {
        out.put_slice(b"date: ");
        put_date(out);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    Ok((framing, !close))
}

/// Ends a joined header line; a transfer-encoding whose last coding is not chunked gets it
/// (the body is sent chunked).
fn end_line(out: &mut Outgoing, name: &HeaderName, last_chunked: bool) {
    if name == header::TRANSFER_ENCODING && !last_chunked {
        out.put_slice(b", chunked");
    }
    out.put_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second per thread.
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

/// Appends the current time as an HTTP date (IMF-fixdate, always 29 bytes).
fn put_date(out: &mut Outgoing) {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second || cached.1[0] == 0 {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            } else {
                out.put_slice(text.as_bytes());
                return;
            }
        }
        out.put_slice(&cached.1);
    });
}

/// The bytes waiting to be written to the client: small pieces gathered in one buffer, large
/// bodies queued as they are.
#[derive(Default)]
struct Outgoing {
    /// Gathered bytes, written after everything in `queue`.
    gather: BytesMut,
    /// Buffers ahead of `gather`, in order.
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    queued: usize,
}

impl Outgoing {
    fn len(&self) -> usize {
        self.queued + self.gather.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.gather.extend_from_slice(bytes);
    }

    /// Queues a data frame: copied if small, as it is otherwise.
    fn put(&mut self, data: Bytes) {
        if data.len() < COPY_BELOW {
            self.gather.extend_from_slice(&data);
            return;
        }
        self.seal();
        self.queued += data.len();
        self.queue.push_back(data);
    }

    /// A chunk-size line.
    fn chunk_size(&mut self, size: usize) {
        use std::fmt::Write;
        // `BytesMut` is a `fmt::Write`, which cannot fail (it grows).
        let _ = write!(self.gather, "{size:X}\r\n");
    }

    /// Moves the gathered bytes to the queue, so that what comes next goes after them.
    fn seal(&mut self) {
        if !self.gather.is_empty() {
            let sealed = self.gather.split().freeze();
            self.queued += sealed.len();
            self.queue.push_back(sealed);
        }
    }

    /// Writes everything out (and flushes the stream, for TLS).
    fn poll_write_all<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while self.queue.is_empty() && !self.gather.is_empty() {
            // The common case, one buffer: written without queueing it.
            let written = ready!(Pin::new(&mut *io).poll_write(cx, &self.gather))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.gather.advance(written);
        }
        self.seal();
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slice, buffer) in slices.iter_mut().zip(self.queue.iter()) {
                *slice = IoSlice::new(buffer);
                count += 1;
            }
            let mut written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.queued = self.queued.saturating_sub(written);
            while written > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        Pin::new(&mut *io).poll_flush(cx)
    }
}

/// Fuzz entry (`fuzz/`, `--features fuzzing`): `data` as the bytes a client sent on one
/// connection, taken off request by request as the connection does. Each plain request must be
/// what a parse without the connection's memo makes of the same bytes (the memo may never
/// change a request), and anything not taken must be left as it was, for hyper.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_request_heads(data: &[u8]) {
    let mut read = BytesMut::from(data);
    let mut memo = FieldMemo::default();
    loop {
        let before = read.clone();
        let mut alone = before.clone();
        let reference = parse_plain(&mut alone, 100, HeaderMap::new(), None);
        match parse_plain(&mut read, 100, HeaderMap::new(), Some(&mut memo)) {
            Parsed::Plain(request, facts) => {
                let Parsed::Plain(expected, expected_facts) = reference else {
                    panic!("the memo made a request of bytes that are not one alone");
                };
                assert_eq!(facts, expected_facts);
                assert_eq!(request.method(), expected.method());
                assert_eq!(request.uri(), expected.uri());
                assert_eq!(
                    request.headers().iter().collect::<Vec<_>>(),
                    expected.headers().iter().collect::<Vec<_>>()
                );
                assert_eq!(read, alone, "a request is taken off whole");
                assert!(read.len() < before.len());
            }
            Parsed::Partial(_) | Parsed::Other => {
                assert!(!matches!(reference, Parsed::Plain(..)));
                assert_eq!(read, before, "what is not taken stays");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut read = BytesMut::from(bytes);
        let parsed = parse_plain(&mut read, 100, HeaderMap::new(), None);
        (parsed, read)
    }

    #[test]
    fn a_request_map_has_room_for_the_fields_the_pipeline_adds() {
        // A connection's first request (no spare map yet) and a later one copied from the memo's
        // shape: neither may need its hash table rebuilt when the forwarding headers go in.
        let first = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let Parsed::Plain(request, _) = parse(first).0 else {
            panic!("a plain request")
        };
        assert!(request.headers().capacity() >= 2 + ADDED_FIELDS);
        let browser =
            b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: u\r\nAccept: a\r\nCookie: c\r\n\r\n";
        let mut memo = FieldMemo::default();
        for _ in 0..2 {
            let parsed = parse_plain(
                &mut BytesMut::from(&browser[..]),
                100,
                HeaderMap::new(),
                Some(&mut memo),
            );
            let Parsed::Plain(request, _) = parsed else {
                panic!("a plain request")
            };
            assert!(request.headers().capacity() >= 4 + ADDED_FIELDS);
        }
    }

    #[test]
    fn requests_on_one_connection_parse_as_they_would_alone() {
        // The connection's memo of the last request's names must never change what a request
        // parses to: same names, other values, other case, more, fewer, repeated, invalid.
        let heads: [&[u8]; 10] = [
            b"GET /1 HTTP/1.1\r\nHost: t\r\nUser-Agent: u\r\nAccept: a\r\nCookie: c=1\r\nX-Custom: 1\r\n\r\n",
            b"GET /2 HTTP/1.1\r\nHost: t\r\nUser-Agent: u\r\nAccept: b\r\nCookie: c=2\r\nX-Custom: 2\r\n\r\n",
            b"GET /3 HTTP/1.1\r\nhost: t\r\nuser-agent: u\r\naccept: b\r\ncookie: c=3\r\nx-custom: 3\r\n\r\n",
            b"GET /3b HTTP/1.1\r\nhost: t\r\nuser-agent: u\r\naccept: b\r\nreferer: c=3\r\nx-custom: 3\r\n\r\n",
            b"GET /4 HTTP/1.1\r\nhost: t\r\nuser-agent: u\r\naccept: b\r\ncookie: c=3\r\nx-custom: 3\r\nX-More: m\r\n\r\n",
            b"GET /5 HTTP/1.1\r\nhost: t\r\nuser-agent: u\r\n\r\n",
            b"GET /6 HTTP/1.1\r\nhost: t\r\nAccept: x\r\nAccept: y\r\nCookie: a\r\nCookie: b\r\n\r\n",
            b"GET /7 HTTP/1.1\r\nhost: t\r\nAccept: z\r\nAccept: w\r\nCookie: c\r\nCookie: d\r\n\r\n",
            b"GET /8 HTTP/1.1\r\nhost: t\r\nuser-agent: u\r\naccept: b\r\nBad Name: c=3\r\nx-custom: 3\r\n\r\n",
            b"GET /9 HTTP/1.1\r\nHost: t\r\nUser-Agent: u\r\nAccept: a\r\nCookie: c=1\r\nX-Custom: 1\r\n\r\n",
        ];
        let listed = |parsed: Parsed| match parsed {
            Parsed::Plain(request, _) => Some(
                request
                    .headers()
                    .iter()
                    .map(|(n, v)| format!("{n}: {v:?}"))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let mut memo = FieldMemo::default();
        let mut spare = HeaderMap::new();
        for head in heads {
            let alone = listed(parse(head).0);
            let along = parse_plain(&mut BytesMut::from(head), 100, spare, Some(&mut memo));
            spare = HeaderMap::new();
            assert_eq!(listed(along), alone, "{}", String::from_utf8_lossy(head));
        }
        assert!(
            listed(parse(heads[8]).0).is_none(),
            "a bad name goes to hyper"
        );
    }

    #[test]
    fn plain_heads_are_taken_off_the_buffer() {
        let (parsed, rest) =
            parse(b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nAccept: x\r\nAccept: y\r\n\r\nGET /next");
        let Parsed::Plain(request, facts) = parsed else {
            panic!("a plain GET");
        };
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.version(), http::Version::HTTP_11);
        assert_eq!(request.headers()["host"], "t");
        assert_eq!(request.headers().get_all("accept").iter().count(), 2);
        assert!(http_body::Body::is_end_stream(request.body()));
        assert_eq!(
            facts,
            Facts {
                head: false,
                keep_alive: true
            }
        );
        assert_eq!(&rest[..], b"GET /next");

        let (parsed, _) = parse(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: Close\r\n\r\n");
        let Parsed::Plain(_, facts) = parsed else {
            panic!("a plain HEAD");
        };
        assert_eq!(
            facts,
            Facts {
                head: true,
                keep_alive: false
            }
        );
    }

    #[test]
    fn other_heads_are_left_whole_for_hyper() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"[..],
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x-private\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: t\r\n\r\n",
            b"GET http://t/ HTTP/1.1\r\nHost: t\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
            b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: t\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
        ] {
            let (parsed, rest) = parse(head);
            assert!(
                matches!(parsed, Parsed::Other),
                "{:?} is hyper's",
                String::from_utf8_lossy(head)
            );
            assert_eq!(&rest[..], head, "the buffer is left as it was");
        }
    }

    #[test]
    fn incomplete_and_oversized_heads() {
        let (parsed, rest) = parse(b"GET / HTTP/1.1\r\nHost: t\r\n");
        assert!(matches!(parsed, Parsed::Partial(_)));
        assert_eq!(rest.len(), 25);
        // More fields than the listener allows: hyper answers 431.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..5 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut read = BytesMut::from(&many[..]);
        assert!(matches!(
            parse_plain(&mut read, 4, HeaderMap::new(), None),
            Parsed::Other
        ));
        assert!(matches!(
            parse_plain(&mut read, 5, HeaderMap::new(), None),
            Parsed::Plain(..)
        ));
    }

    /// The head written for a response, and how its body goes.
    fn encode(
        response: Response<()>,
        head: bool,
        length: BodyLength,
        keep_alive: bool,
    ) -> (String, Result<(Framing, bool), &'static str>) {
        let (parts, ()) = response.into_parts();
        let mut out = Outgoing::default();
        let result = encode_head(&parts, head, length, keep_alive, &mut out);
        let text = String::from_utf8(out.gather.to_vec()).expect("ASCII head");
        // The date changes; its shape does not.
        let text = text
            .split("\r\n")
            .map(|line| match line.strip_prefix("date: ") {
                Some(date) => {
                    assert_eq!(date.len(), 29, "IMF-fixdate: {date:?}");
                    assert!(date.ends_with(" GMT"));
                    "date: D"
                }
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        (text, result)
    }

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        response
    }

    #[test]
    fn response_heads_are_framed_as_hyper_frames_them() {
        use BodyLength::*;
        let ok = |headers| response(200, headers);
        let cases: Vec<(Response<()>, bool, BodyLength, &str, Framing)> = vec![
            (
                ok(&[("x-a", "1")]),
                false,
                Known(5),
                "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: D\r\n\r\n",
                Framing::Length(5),
            ),
            (
                ok(&[("content-length", "5")]),
                false,
                Known(5),
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: D\r\n\r\n",
                Framing::Length(5),
            ),
            (
                ok(&[("content-length", "7")]),
                false,
                Unknown,
                "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: D\r\n\r\n",
                Framing::Length(7),
            ),
            (
                ok(&[]),
                false,
                Unknown,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: D\r\n\r\n",
                Framing::Chunked,
            ),
            (
                ok(&[("transfer-encoding", "gzip")]),
                false,
                Unknown,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ndate: D\r\n\r\n",
                Framing::Chunked,
            ),
            (
                // A line of no codings after `chunked` does not make it chunked twice.
                ok(&[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", " , "),
                ]),
                false,
                Unknown,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,  , \r\ndate: D\r\n\r\n",
                Framing::Chunked,
            ),
            (
                ok(&[("content-length", "0")]),
                false,
                Empty,
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
            // HEAD: the length of the GET is described, nothing is sent.
            (
                ok(&[("content-length", "9")]),
                true,
                Empty,
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
            (
                ok(&[]),
                true,
                Known(9),
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
            (
                ok(&[("transfer-encoding", "chunked")]),
                true,
                Unknown,
                "HTTP/1.1 200 OK\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
            (
                response(204, &[]),
                false,
                Empty,
                "HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
            (
                response(304, &[("etag", "\"1\"")]),
                false,
                Empty,
                "HTTP/1.1 304 Not Modified\r\netag: \"1\"\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
            (
                response(404, &[("date", "Thu, 01 Jan 1970 00:00:00 GMT")]),
                false,
                Known(2),
                "HTTP/1.1 404 Not Found\r\ndate: D\r\ncontent-length: 2\r\n\r\n",
                Framing::Length(2),
            ),
            (
                response(599, &[]),
                false,
                Empty,
                "HTTP/1.1 599 <none>\r\ncontent-length: 0\r\ndate: D\r\n\r\n",
                Framing::Nothing,
            ),
        ];
        for (response, head, length, expected, framing) in cases {
            let (text, result) = encode(response, head, length, true);
            assert_eq!(text, expected);
            assert_eq!(result, Ok((framing, true)), "{expected:?}");
        }
    }

    #[test]
    fn closing_is_said_once_and_kept_to() {
        let (text, result) = encode(response(200, &[]), false, BodyLength::Known(1), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\ndate: D\r\n\r\n"
        );
        assert_eq!(result, Ok((Framing::Length(1), false)));
        // The response itself says close (max_requests_per_connection): not said twice.
        let said = response(200, &[("connection", "close")]);
        let (text, result) = encode(said, false, BodyLength::Known(1), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\ndate: D\r\n\r\n"
        );
        assert_eq!(result, Ok((Framing::Length(1), false)));
    }

    #[test]
    fn responses_hyper_refuses_are_refused() {
        let bad = response(200, &[("content-length", "x")]);
        assert!(encode(bad, false, BodyLength::Unknown, true).1.is_err());
        let differing = response(200, &[("content-length", "1"), ("content-length", "2")]);
        assert!(
            encode(differing, false, BodyLength::Unknown, true)
                .1
                .is_err()
        );
        let both = response(
            200,
            &[("transfer-encoding", "chunked"), ("content-length", "2")],
        );
        assert!(encode(both, false, BodyLength::Unknown, true).1.is_err());
        // A 1xx is answered with hyper's bare 500, and the connection closes.
        let (text, result) = encode(response(103, &[]), false, BodyLength::Empty, true);
        assert_eq!(result, Ok((Framing::Nothing, false)));
        assert_eq!(
            text,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\ndate: D\r\n\r\n"
        );
    }

    #[test]
    fn outgoing_keeps_the_order_of_small_and_large_pieces() {
        let mut out = Outgoing::default();
        out.put_slice(b"head;");
        out.put(Bytes::from(vec![b'a'; COPY_BELOW]));
        out.chunk_size(255);
        out.put(Bytes::from_static(b"small"));
        out.put(Bytes::from(vec![b'b'; COPY_BELOW + 1]));
        out.put_slice(b";end");
        assert_eq!(out.len(), 5 + COPY_BELOW + 4 + 5 + COPY_BELOW + 1 + 4);
        out.seal();
        let all: Vec<u8> = out.queue.iter().flat_map(|b| b.to_vec()).collect();
        let mut expected = b"head;".to_vec();
        expected.extend(vec![b'a'; COPY_BELOW]);
        expected.extend_from_slice(b"FF\r\nsmall");
        expected.extend(vec![b'b'; COPY_BELOW + 1]);
        expected.extend_from_slice(b";end");
        assert_eq!(all, expected);
    }

    /// Random request heads against a model of what the client sent: a plain request is taken
    /// off the buffer as sent (method, target, every field in a `HeaderMap`'s order, whether the
    /// client asked to close), whatever the connection's memo of earlier requests holds; any
    /// other request, an incomplete head or garbage leaves the buffer untouched for hyper.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Names from a pool a browser's requests share (so the memo is exercised), in any
        /// case, the fields that make a request not plain, or any token.
        fn field_name() -> impl Strategy<Value = String> {
            let pool = prop_oneof![
                Just("host"),
                Just("user-agent"),
                Just("accept"),
                Just("accept-encoding"),
                Just("cookie"),
                Just("x-a"),
                Just("connection"),
                Just("content-length"),
                Just("transfer-encoding"),
                Just("upgrade"),
                Just("expect"),
                Just("te"),
            ]
            .prop_flat_map(|name| {
                vec(any::<bool>(), name.len()).prop_map(move |upper| {
                    name.chars()
                        .zip(upper)
                        .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                        .collect()
                })
            });
            prop_oneof![5 => pool, 1 => "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}"]
        }

        fn field_value(name: &str) -> BoxedStrategy<Vec<u8>> {
            if name.eq_ignore_ascii_case("connection") {
                return prop_oneof![
                    Just(b"keep-alive".to_vec()),
                    Just(b"Close".to_vec()),
                    Just(b"close, x-a".to_vec()),
                ]
                .boxed();
            }
            let inner = prop_oneof![8 => 0x21u8..0x7f, 1 => Just(b' '), 1 => 0x80u8..=0xff];
            (0x21u8..0x7f, vec(inner, 0..16), 0x21u8..0x7f)
                .prop_map(|(first, middle, last)| [vec![first], middle, vec![last]].concat())
                .boxed()
        }

        /// Header fields as sent: names and values.
        type Fields = Vec<(String, Vec<u8>)>;

        #[derive(Debug, Clone)]
        struct Head {
            method: &'static str,
            target: String,
            minor: u8,
            fields: Vec<(String, Vec<u8>)>,
        }

        fn head() -> impl Strategy<Value = Head> {
            let method = prop_oneof![
                4 => Just("GET"),
                2 => Just("HEAD"),
                1 => Just("POST"),
                1 => Just("OPTIONS"),
            ];
            let target = prop_oneof![
                8 => "/[a-zA-Z0-9/._~%-]{0,24}(\\?[a-z0-9=&%]{0,12})?",
                1 => Just("*".to_owned()),
                1 => Just("http://example.com/a".to_owned()),
            ];
            let fields = vec(
                field_name().prop_flat_map(|name| {
                    let value = field_value(&name);
                    (Just(name), value)
                }),
                0..10,
            );
            (
                method,
                target,
                prop_oneof![5 => Just(1u8), 1 => Just(0u8)],
                fields,
            )
                .prop_map(|(method, target, minor, fields)| Head {
                    method,
                    target,
                    minor,
                    fields,
                })
        }

        impl Head {
            fn bytes(&self) -> Vec<u8> {
                let mut out = format!("{} {} HTTP/1.{}\r\n", self.method, self.target, self.minor)
                    .into_bytes();
                for (name, value) in &self.fields {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out
            }

            /// What the parse must give: `None` for a request hyper is to serve; else whether
            /// the client asked to close, and the fields in a `HeaderMap`'s order.
            fn expected(&self) -> Option<(bool, Fields)> {
                let plain_method = matches!(self.method, "GET" | "HEAD");
                if !plain_method || self.minor != 1 || !self.target.starts_with('/') {
                    return None;
                }
                let mut keep_alive = true;
                for (name, value) in &self.fields {
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" | "transfer-encoding" | "upgrade" | "expect" | "te" => {
                            return None;
                        }
                        "connection" if value.eq_ignore_ascii_case(b"close") => {
                            keep_alive = false;
                        }
                        "connection" if !value.eq_ignore_ascii_case(b"keep-alive") => {
                            return None;
                        }
                        _ => {}
                    }
                }
                let lower: Fields = self
                    .fields
                    .iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                    .collect();
                let mut names: Vec<&String> = Vec::new();
                for (name, _) in &lower {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                let grouped = names
                    .iter()
                    .flat_map(|name| lower.iter().filter(move |(n, _)| n == *name).cloned())
                    .collect();
                Some((keep_alive, grouped))
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn heads_parse_as_sent_whatever_came_before(
                heads in vec(head(), 1..6),
                after in vec(any::<u8>(), 0..16),
            ) {
                let mut memo = FieldMemo::default();
                for head in &heads {
                    let bytes = head.bytes();
                    let mut read = BytesMut::from(&bytes[..]);
                    read.extend_from_slice(&after);
                    let parsed = parse_plain(&mut read, 100, HeaderMap::new(), Some(&mut memo));
                    match (parsed, head.expected()) {
                        (Parsed::Plain(request, facts), Some((keep_alive, fields))) => {
                            prop_assert_eq!(request.method().as_str(), head.method);
                            prop_assert_eq!(
                                request.uri().path_and_query().map(|p| p.as_str()),
                                Some(head.target.as_str())
                            );
                            prop_assert_eq!(facts, Facts { head: head.method == "HEAD", keep_alive });
                            let got: Fields = request
                                .headers()
                                .iter()
                                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                                .collect();
                            prop_assert_eq!(got, fields);
                            prop_assert_eq!(&read[..], &after[..], "what follows stays");
                        }
                        (Parsed::Other, None) => {
                            prop_assert_eq!(&read[..], &[&bytes[..], &after[..]].concat()[..]);
                        }
                        (Parsed::Plain(..), None) => prop_assert!(false, "served a request hyper must serve"),
                        (Parsed::Other, Some(_)) => prop_assert!(false, "a plain request went to hyper"),
                        (Parsed::Partial(_), _) => prop_assert!(false, "a whole head is incomplete"),
                    }
                }
            }

            #[test]
            fn every_cut_of_a_head_waits_for_more_and_keeps_its_bytes(head in head()) {
                let bytes = head.bytes();
                for cut in 0..bytes.len() {
                    let mut read = BytesMut::from(&bytes[..cut]);
                    match parse_plain(&mut read, 100, HeaderMap::new(), None) {
                        Parsed::Partial(_) => prop_assert_eq!(&read[..], &bytes[..cut]),
                        // httparse may see a bad request line before the head is whole.
                        Parsed::Other => {
                            prop_assert!(head.expected().is_none());
                            prop_assert_eq!(&read[..], &bytes[..cut]);
                        }
                        Parsed::Plain(..) => prop_assert!(false, "cut at {}: a request", cut),
                    }
                }
            }

            #[test]
            fn any_bytes_are_taken_only_as_a_whole_plain_request(
                input in prop_oneof![
                    vec(any::<u8>(), 0..200),
                    vec(any::<u8>(), 0..200).prop_map(|rest| [b"GET /".to_vec(), rest].concat()),
                ],
            ) {
                let mut read = BytesMut::from(&input[..]);
                match parse_plain(&mut read, 100, HeaderMap::new(), None) {
                    Parsed::Plain(..) => prop_assert!(read.len() < input.len()),
                    Parsed::Partial(_) | Parsed::Other => prop_assert_eq!(&read[..], &input[..]),
                }
            }
        }
    }
}
