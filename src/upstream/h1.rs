//! Gatehouse's own HTTP/1.1 exchange with a backend, for requests without a body (GET and HEAD):
//! the request's task writes the head and reads the response itself, on a kept connection.
//!
//! hyper's client connection runs in a task of its own and hands each request and response
//! across channels (request in, response head out, body chunks out): two extra task wake-ups per
//! request and about a third of Gatehouse's user-space instructions in the scenario-1 profile
//! (docs/performance.md). No crate offers an HTTP/1.1 client that reads in the caller's task, so
//! this is written here, over `httparse` (the parser hyper uses) and `http`'s types. It covers
//! what a bodiless request can meet: interim 1xx responses (skipped, as hyper does), bodies
//! framed by `Content-Length`, by chunked coding (trailers included) or by the connection's
//! close, and responses that have no body (HEAD, 204, 304). Requests with a body, upgrades and
//! `Expect` still go through hyper (`keepalive.rs`).

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::dial::BackendStream;
use super::keepalive::Homecoming;
use super::read_timeout::ReadTimeout;
use crate::body::BoxError;
use crate::proxy::field_memo::FieldMemo;
use crate::splice::{HEAD_READ, SPLICE_EXPECTED};

/// The largest response head accepted: hyper's default read-buffer limit, so a backend that
/// worked behind the hyper client works here too.
const MAX_HEAD: usize = 8192 + 4096 * 100;

/// The most header fields in a response head or trailer section (hyper's default too).
const MAX_HEADERS: usize = 100;

/// The room a connection's first read is given, and the least any read is given.
const READ_MIN: usize = 8192;

/// The most room a read is given. A read that fills its room doubles the next one's up to this,
/// so a large body is read in few system calls; one that uses under a quarter halves it (hyper's
/// adaptive read strategy does the same).
const READ_MAX: usize = 128 * 1024;

/// Why a body read from a backend, or spliced from it, failed when its connection closed early.
const CLOSED_WITHIN_BODY: &str = "the backend closed the connection within the body";

/// The longest chunk-size line accepted (size, extensions, CRLF).
const MAX_CHUNK_LINE: usize = 4096;

/// A kept HTTP/1.1 connection to a backend, idle between exchanges.
pub(super) struct DirectConnection {
    stream: BackendStream,
    /// Bytes read from the backend and not yet used.
    read: BytesMut,
    /// The request head being written (kept for the next one's allocation).
    write: Vec<u8>,
    /// The room the next read is given, between [`READ_MIN`] and [`READ_MAX`].
    read_size: usize,
    /// The field names of the last response head (a backend sends the same ones every time).
    fields: FieldMemo,
    /// The last response's body was long enough to be spliced: the next head is read small.
    large_last: bool,
    /// `timeouts.upstream_read` of the body being read: kept here, in the connection's box,
    /// rather than in every response body, whose size shows in the copies of responses.
    read_timeout: Option<ReadTimeout>,
}

/// Why an exchange failed.
pub(super) struct ExchangeError {
    /// Nothing at all came back (the write failed, or the connection closed before a byte of
    /// a response): on a kept connection the backend most likely closed it while idle.
    pub silent: bool,
    /// What happened, for the log.
    pub cause: String,
}

impl ExchangeError {
    fn silent(cause: String) -> Self {
        ExchangeError {
            silent: true,
            cause,
        }
    }

    fn failed(cause: String) -> Self {
        ExchangeError {
            silent: false,
            cause,
        }
    }
}

impl DirectConnection {
    /// A connection just opened. Boxed for life: it moves between its list and the response
    /// body that reads from it, and the body is moved along the pipeline with every response.
    pub(super) fn new(stream: BackendStream) -> Box<Self> {
        Box::new(DirectConnection {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            read_size: READ_MIN,
            fields: FieldMemo::default(),
            large_last: false,
            read_timeout: None,
        })
    }

    /// False when the backend closed the connection, or sent something, while it was idle.
    ///
    /// Costs no system call when nothing happened: the stream is polled once with a no-op waker,
    /// and tokio answers from the readiness epoll last reported.
    pub(super) fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        // Pending: nothing to read, still open. Anything else (end, bytes, error) ends it.
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Sends a bodiless request (`method`, `target`, `headers`) and reads the response head.
    /// The response's body reads from this connection, which `home` takes back once the body
    /// has ended (when the backend lets it be reused).
    pub(super) async fn exchange(
        mut self: Box<Self>,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        home: Homecoming,
    ) -> Result<Response<DirectBody>, ExchangeError> {
        encode_head(&mut self.write, method, target, headers);
        let written = async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        };
        if let Err(e) = written.await {
            return Err(ExchangeError::silent(format!("writing the request: {e}")));
        }
        let mut received_any = false;
        loop {
            match parse_head(&mut self.read, &mut self.fields) {
                Err(cause) => return Err(ExchangeError::failed(cause)),
                Ok(Some(head)) if head.status.is_informational() => {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(ExchangeError::failed(
                            "101 Switching Protocols to a request that asked for no upgrade"
                                .to_owned(),
                        ));
                    }
                    // 100 Continue, 103 Early Hints...: interim, the final response follows.
                    received_any = true;
                    continue;
                }
                Ok(Some(head)) => {
                    let (framing, reusable) = framing(
                        method,
                        head.status,
                        head.version,
                        &head.headers,
                        head.fields,
                    )
                    .map_err(ExchangeError::failed)?;
                    self.large_last = matches!(framing, Framing::Length(n) if n >= SPLICE_EXPECTED);
                    let mut response = Response::new(DirectBody {
                        connection: Some(self),
                        framing,
                        reusable,
                        home: Some(home),
                    });
                    *response.status_mut() = head.status;
                    *response.version_mut() = head.version;
                    *response.headers_mut() = head.headers;
                    if response.body().framing.is_done() {
                        response.body_mut().finish();
                    }
                    return Ok(response);
                }
                Ok(None) => {}
            }
            received_any |= !self.read.is_empty();
            // After a large response, a head is read in a small piece on plain TCP: body bytes
            // still in the socket can be spliced to the client (crate::splice), those read with
            // the head cannot.
            let most = match self.stream {
                BackendStream::Tcp(_) if self.large_last => HEAD_READ,
                _ => usize::MAX,
            };
            let cause = match poll_fn(|cx| self.poll_fill(cx, most)).await {
                Ok(0) if received_any => {
                    "the connection closed within the response head".to_owned()
                }
                Ok(0) => "the connection closed before a response".to_owned(),
                Ok(_) => continue,
                Err(e) => format!("reading the response: {e}"),
            };
            // Silent when nothing of a response came: see `send_direct`'s retry.
            return Err(ExchangeError {
                silent: !received_any,
                cause,
            });
        }
    }

    /// Reads what the backend sent next into the buffer, at most `most` bytes; `Ok(0)` at the
    /// end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, most: usize) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            // Reuses the buffer's space when the bytes split off it earlier are gone.
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut (&mut self.read).limit(most)
        ))?;
        // A capped read says nothing of how much the backend sends at once.
        if most >= room {
            if n == room {
                self.read_size = (self.read_size * 2).min(READ_MAX);
            } else if n < self.read_size / 4 {
                self.read_size = (self.read_size / 2).max(READ_MIN);
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// Writes a request head for a backend: request line in origin form, then the headers as they
/// are (names lowercase, as hyper writes them).
fn encode_head(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    fields: FramingFields,
}

/// What the head's framing fields said, noted during the parse so that [`framing`] looks up
/// only fields that are there.
#[derive(Debug, Default, Clone, Copy)]
struct FramingFields {
    /// `Connection` lists `close`.
    close: bool,
    /// `Connection` lists `keep-alive`.
    keep_alive: bool,
    transfer_encoding: bool,
    content_length: bool,
}

/// Parses a response head at the start of `read` and takes it out of the buffer; `None` while
/// it is incomplete. `memo` holds the connection's last head's names.
fn parse_head(read: &mut BytesMut, memo: &mut FieldMemo) -> Result<Option<Head>, String> {
    // Each field's name, and where its value lies in the head, so the values can share the
    // head's bytes once it is split off (no copy per value). Inline for typical heads; nothing
    // is initialised up front (a zeroed array of `MAX_HEADERS` spans cost more than the parse).
    let mut fields: SmallVec<[(HeaderName, (usize, usize)); 24]> = SmallVec::new();
    let mut framing_fields = FramingFields::default();
    let (length, code, minor) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let base = read.as_ptr() as usize;
        // httparse's defaults are hyper's client defaults: nothing lenient (no obs-fold, no space
        // before the colon).
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            read,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(length)) => {
                for (index, field) in response.headers.iter().enumerate() {
                    let name = memo
                        .name(index, field.name.as_bytes())
                        .map_err(|_| "invalid response header name".to_owned())?;
                    // httparse's slices lie within `read`; checked all the same, since the
                    // values are sliced out of the head below.
                    let at = (field.value.as_ptr() as usize)
                        .checked_sub(base)
                        .filter(|at| at + field.value.len() <= length)
                        .ok_or_else(|| "response header value outside the head".to_owned())?;
                    match name {
                        CONNECTION => {
                            let mut only_persistence = true;
                            for token in field.value.split(|b| *b == b',') {
                                let token = token.trim_ascii();
                                if token.eq_ignore_ascii_case(b"close") {
                                    framing_fields.close = true;
                                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                                    framing_fields.keep_alive = true;
                                } else {
                                    only_persistence = false;
                                }
                            }
                            if only_persistence {
                                // Hop-by-hop and naming no other field: the pipeline would only
                                // remove it again (an insertion and a removal per response).
                                continue;
                            }
                        }
                        TRANSFER_ENCODING => framing_fields.transfer_encoding = true,
                        CONTENT_LENGTH => framing_fields.content_length = true,
                        _ => {}
                    }
                    fields.push((name, (at, at + field.value.len())));
                }
                (
                    length,
                    response.code.unwrap_or(0),
                    response.version.unwrap_or(1),
                )
            }
            Ok(httparse::Status::Partial) if read.len() >= MAX_HEAD => {
                return Err(format!("response head larger than {MAX_HEAD} bytes"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(format!("more than {MAX_HEADERS} response header fields"));
            }
            Err(e) => return Err(format!("invalid response head: {e}")),
        }
    };
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status code {code}"))?;
    let head = read.split_to(length).freeze();
    // Room for what the pipeline adds to a response (`X-Request-Id`, `Cache-Status`, HSTS).
    let headers = memo.map(&fields, 3, |name, (start, end)| {
        HeaderValue::from_maybe_shared(head.slice(*start..*end))
            .map_err(|_| format!("invalid value in response header {name}"))
    })?;
    Ok(Some(Head {
        status,
        version: if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        headers,
        fields: framing_fields,
    }))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked transfer coding, at this point of it.
    Chunked(ChunkState),
    /// Everything until the backend closes the connection.
    UntilClose,
    /// Nothing more (no body, or all of it read).
    Done,
}

impl Framing {
    fn is_done(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }
}

/// Where a chunked body's decoder is.
#[derive(Debug, PartialEq)]
enum ChunkState {
    /// At a chunk-size line.
    Size,
    /// Within a chunk's data; this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, at the trailer section.
    Trailers,
}

/// How the response's body is framed, and whether the connection may serve another request
/// after it.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    fields: FramingFields,
) -> Result<(Framing, bool), String> {
    let mut reusable = !fields.close && (version == Version::HTTP_11 || fields.keep_alive);
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // No body, whatever Content-Length says (for HEAD and 304 it describes another one).
        return Ok((Framing::Done, reusable));
    }
    if fields.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err("Transfer-Encoding in an HTTP/1.0 response".to_owned());
        }
        // The last coding of the whole list: empty elements, and so lines holding nothing
        // else, do not count (RFC 9110 §5.6.1.2).
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .rev()
            .find_map(crate::proxy::headers::line_ends_chunked)
            .unwrap_or(false);
        if fields.content_length {
            // Both: Transfer-Encoding wins (RFC 9112 §6.3), and a backend that sends both is
            // not trusted with another request on this connection.
            reusable = false;
        }
        return Ok(if chunked {
            (Framing::Chunked(ChunkState::Size), reusable)
        } else {
            // Not chunked last: the body runs until the connection closes.
            (Framing::UntilClose, false)
        });
    }
    let mut length = None;
    let lengths = fields
        .content_length
        .then(|| headers.get_all(CONTENT_LENGTH))
        .into_iter()
        .flatten();
    for value in lengths {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = crate::proxy::headers::parse_content_length(part.trim_ascii())
                .ok_or_else(|| "invalid Content-Length in the response".to_owned())?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values in the response".to_owned());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, reusable),
        Some(n) => (Framing::Length(n), reusable),
        None => (Framing::UntilClose, false),
    })
}

/// A response body read from a [`DirectConnection`] by whoever polls it; the connection goes
/// back to its pool when the body has ended, or is closed if the body is dropped before that.
pub struct DirectBody {
    connection: Option<Box<DirectConnection>>,
    framing: Framing,
    reusable: bool,
    home: Option<Homecoming>,
}

impl DirectBody {
    /// The body is over: the connection goes home when it may be used again.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut connection) = self.connection.take()
            && self.reusable
            // Bytes after the end of the body: the backend is out of step with us.
            && connection.read.is_empty()
            && let Some(home) = self.home.take()
        {
            // A timer left armed in an idle connection would wake this request's task later.
            connection.read_timeout = None;
            home.put(connection);
        }
    }

    /// Sets `timeouts.upstream_read` for the rest of the body (see [`UpstreamBody`]).
    ///
    /// [`UpstreamBody`]: crate::body::UpstreamBody
    pub fn set_read_timeout(&mut self, timeout: Option<std::time::Duration>) {
        if let Some(connection) = self.connection.as_mut() {
            connection.read_timeout = timeout.map(ReadTimeout::new);
        }
    }

    /// The body's read timeout, while it has a connection to read from.
    pub fn read_timeout(&mut self) -> Option<&mut ReadTimeout> {
        self.connection.as_mut()?.read_timeout.as_mut()
    }

    /// Drops the connection (its stream can no longer be trusted) and reports `cause`.
    fn fail(&mut self, cause: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err(self.broken(cause))))
    }

    /// Drops the connection (its stream can no longer be trusted); the error saying why.
    fn broken(&mut self, cause: impl Into<String>) -> BoxError {
        self.connection = None;
        self.framing = Framing::Done;
        cause.into().into()
    }
}

impl crate::splice::SpliceSource for DirectBody {
    fn splice_len(&self) -> Option<u64> {
        let connection = self.connection.as_ref()?;
        match (&self.framing, &connection.stream) {
            (Framing::Length(left), BackendStream::Tcp(_))
                if *left > 0 && connection.read.is_empty() =>
            {
                Some(*left)
            }
            _ => None,
        }
    }

    fn poll_splice(
        self: Pin<&mut Self>,
        pipe: &mut crate::splice::Pipe,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, BoxError>> {
        let this = self.get_mut();
        let (Some(connection), &Framing::Length(left)) = (this.connection.as_mut(), &this.framing)
        else {
            return Poll::Ready(Err("no body left to splice".into()));
        };
        let BackendStream::Tcp(stream) = &connection.stream else {
            return Poll::Ready(Err("a body over TLS cannot be spliced".into()));
        };
        let max = usize::try_from(left).unwrap_or(usize::MAX);
        let cause = match ready!(pipe.poll_fill_from(stream, max, cx)) {
            Ok(0) => CLOSED_WITHIN_BODY.to_owned(),
            Ok(n) => {
                let left = left - n as u64;
                this.framing = Framing::Length(left);
                if left == 0 {
                    // Every byte is out of the backend's socket: it can serve the next request.
                    this.finish();
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) => format!("reading the response body: {e}"),
        };
        Poll::Ready(Err(this.broken(cause)))
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = connection.read.len();
            match &mut this.framing {
                Framing::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if buffered > 0 => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buffered);
                    let data = connection.read.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if buffered > 0 => {
                    let data = connection.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match decode_chunked(state, &mut connection.read) {
                    Err(cause) => return this.fail(cause),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End(trailers)) => {
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => {}
                },
                Framing::Length(_) | Framing::UntilClose => {}
            }
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(connection.poll_fill(cx, usize::MAX)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.connection = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(CLOSED_WITHIN_BODY),
                Ok(_) => {}
                Err(e) => return this.fail(format!("reading the response body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What the chunked decoder made of the buffer.
enum Decoded {
    /// Some of a chunk's data.
    Data(Bytes),
    /// The last chunk and the trailer section (with its fields, if any) were read.
    End(Option<HeaderMap>),
    /// More bytes are needed.
    NeedMore,
}

/// Decodes chunked coding from the front of `read` (RFC 9112 §7.1).
fn decode_chunked(state: &mut ChunkState, read: &mut BytesMut) -> Result<Decoded, String> {
    loop {
        match state {
            ChunkState::Size => {
                if !read.first().is_some_and(u8::is_ascii_hexdigit) {
                    if read.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Err("invalid chunk size".to_owned());
                }
                match httparse::parse_chunk_size(read) {
                    // httparse takes any byte in a chunk extension, a bare LF too, up to the
                    // CRLF; hyper refuses a bare LF there (a parser ending the line at the LF
                    // would frame the body differently), and so does this decoder.
                    Ok(httparse::Status::Complete((used, _)))
                        if read[..used - 2].contains(&b'\n') =>
                    {
                        return Err("chunk extension with a bare LF".to_owned());
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        read.advance(used);
                        *state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if read.len() > MAX_CHUNK_LINE => {
                        return Err("chunk-size line too long".to_owned());
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err("invalid chunk size".to_owned()),
                }
            }
            ChunkState::Data(left) => {
                if read.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                let data = read.split_to(n).freeze();
                *left -= n as u64;
                if *left == 0 {
                    *state = ChunkState::DataEnd;
                }
                return Ok(Decoded::Data(data));
            }
            ChunkState::DataEnd => {
                if read.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &read[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".to_owned());
                }
                read.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers => {
                if read.starts_with(b"\r\n") {
                    read.advance(2);
                    return Ok(Decoded::End(None));
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(read, &mut fields) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for field in fields {
                            let name = HeaderName::from_bytes(field.name.as_bytes())
                                .map_err(|_| "invalid trailer name".to_owned())?;
                            let value = HeaderValue::from_bytes(field.value)
                                .map_err(|_| "invalid trailer value".to_owned())?;
                            trailers.append(name, value);
                        }
                        read.advance(used);
                        Ok(Decoded::End(Some(trailers)))
                    }
                    Ok(httparse::Status::Partial) if read.len() >= MAX_HEAD => {
                        Err("trailer section too large".to_owned())
                    }
                    Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
                    Err(e) => Err(format!("invalid trailer section: {e}")),
                };
            }
        }
    }
}

/// Fuzz entry (`fuzz/`, `--features fuzzing`): `data` as the bytes a backend sent on one
/// connection in answer to GET requests, read response by response as the connection does.
/// Each head must parse as it does without the connection's memo; a chunked body must decode
/// to the same bytes and trailers whether it arrives all at once or byte by byte, and never to
/// more bytes than it holds.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_responses(data: &[u8]) {
    let listed = |map: &HeaderMap| {
        map.iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let mut read = BytesMut::from(data);
    let mut memo = FieldMemo::default();
    loop {
        let before = read.clone();
        let mut alone = before.clone();
        let reference = parse_head(&mut alone, &mut FieldMemo::default());
        let head = match parse_head(&mut read, &mut memo) {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => {
                assert!(!matches!(reference, Ok(Some(_))));
                assert_eq!(read, before, "an unread head stays");
                return;
            }
        };
        let Ok(Some(expected)) = reference else {
            panic!("the memo made a head of bytes that are not one alone");
        };
        assert_eq!(head.status, expected.status);
        assert_eq!(listed(&head.headers), listed(&expected.headers));
        assert_eq!(read, alone);
        let Ok((framing, _)) = framing(
            &Method::GET,
            head.status,
            head.version,
            &head.headers,
            head.fields,
        ) else {
            return;
        };
        match framing {
            Framing::Done => {}
            Framing::Length(n) => {
                read.advance(usize::try_from(n).unwrap_or(usize::MAX).min(read.len()))
            }
            Framing::UntilClose => return,
            Framing::Chunked(_) => {
                let whole = fuzz_decode(&read, read.len().max(1));
                let bytewise = fuzz_decode(&read, 1);
                assert_eq!(
                    whole, bytewise,
                    "a chunked body decodes the same however it is read"
                );
                match whole {
                    Some((body, used, _)) => {
                        assert!(body.len() <= used);
                        read.advance(used);
                    }
                    None => return,
                }
            }
        }
    }
}

/// A trailer section's fields in order, for comparing two decodes.
#[cfg(any(test, feature = "fuzzing"))]
type FuzzFields = Vec<(HeaderName, HeaderValue)>;

/// Decodes a chunked body from `input` fed in pieces of `step` bytes: the body, the bytes the
/// coding took and its trailers; `None` if it is invalid or cut short.
#[cfg(any(test, feature = "fuzzing"))]
fn fuzz_decode(input: &[u8], step: usize) -> Option<(Vec<u8>, usize, Option<FuzzFields>)> {
    let mut state = ChunkState::Size;
    let mut read = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = input.chunks(step);
    let mut fed = 0;
    loop {
        match decode_chunked(&mut state, &mut read).ok()? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End(trailers) => {
                let trailers =
                    trailers.map(|map| map.iter().map(|(n, v)| (n.clone(), v.clone())).collect());
                return Some((body, fed - read.len(), trailers));
            }
            Decoded::NeedMore => {
                let piece = pieces.next()?;
                fed += piece.len();
                read.extend_from_slice(piece);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(text: &str) -> Result<Option<Head>, String> {
        parse_head(&mut BytesMut::from(text), &mut FieldMemo::default())
    }

    fn framing_of(method: Method, text: &str) -> Result<(Framing, bool), String> {
        let head = head_of(text)?.expect("complete head");
        framing(
            &method,
            head.status,
            head.version,
            &head.headers,
            head.fields,
        )
    }

    #[test]
    fn connection_fields_that_only_say_keep_alive_or_close_are_not_kept() {
        let head =
            head_of("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .expect("valid")
                .expect("complete");
        assert!(!head.headers.contains_key(CONNECTION));
        assert!(head.fields.keep_alive && !head.fields.close && head.fields.content_length);
        let head = head_of("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!head.headers.contains_key(CONNECTION));
        assert!(head.fields.close);
        // Naming another field: kept, so that the pipeline removes the named field too.
        let head =
            head_of("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n")
                .expect("valid")
                .expect("complete");
        assert_eq!(head.headers[CONNECTION], "keep-alive, X-Secret");
        assert!(head.fields.keep_alive);
    }

    #[test]
    fn heads_read_one_after_another_on_a_connection_parse_as_they_would_alone() {
        // The connection remembers the last head's names; the fields the parse leaves out
        // (a `Connection` that only says keep-alive/close) must not shift what it remembers.
        let heads = [
            "HTTP/1.1 200 OK\r\nServer: o\r\nConnection: keep-alive\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: o\r\nConnection: keep-alive\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: o\r\nConnection: keep-alive, X-A\r\nX-A: 3\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: o\r\nConnection: close\r\nX-A: 4\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: o\r\nX-A: 5\r\nX-A: 6\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: o\r\nX-B: 7\r\nX-A: 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nServer: o\r\nX-B: 9\r\nX-A: 10\r\n\r\n",
        ];
        let mut memo = FieldMemo::default();
        for text in heads {
            let alone = head_of(text).expect("valid").expect("complete");
            let along = parse_head(&mut BytesMut::from(text), &mut memo)
                .expect("valid")
                .expect("complete");
            let list = |map: &HeaderMap| {
                map.iter()
                    .map(|(n, v)| format!("{n}: {v:?}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(list(&along.headers), list(&alone.headers), "{text}");
            assert_eq!(
                along.headers.get_all("x-a").iter().collect::<Vec<_>>(),
                alone.headers.get_all("x-a").iter().collect::<Vec<_>>()
            );
            assert_eq!(format!("{:?}", along.fields), format!("{:?}", alone.fields));
        }
    }

    #[test]
    fn a_head_is_parsed_and_taken_out_of_the_buffer() {
        let mut read =
            BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello");
        let head = parse_head(&mut read, &mut FieldMemo::default())
            .expect("valid")
            .expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["content-length"], "5");
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&read[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_waits_and_a_bad_one_is_refused() {
        assert!(
            head_of("HTTP/1.1 200 OK\r\nContent-Le")
                .expect("partial")
                .is_none()
        );
        assert!(head_of("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n").is_err());
        assert!(head_of("HTTP/1.1 20 OK\r\n\r\n").is_err());
        assert!(
            head_of("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n").is_err(),
            "obs-fold"
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(head_of(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
        let huge = "HTTP/1.1 200 OK\r\nX: ".to_owned() + &"a".repeat(MAX_HEAD);
        assert!(head_of(&huge).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = "HTTP/1.1 200 OK\r\n";
        let f = |m: Method, h: &str| framing_of(m, &format!("{ok}{h}\r\n"));
        assert_eq!(
            f(Method::GET, "Content-Length: 7\r\n"),
            Ok((Framing::Length(7), true))
        );
        assert_eq!(
            f(Method::GET, "Content-Length: 0\r\n"),
            Ok((Framing::Done, true))
        );
        assert_eq!(
            f(Method::HEAD, "Content-Length: 7\r\n"),
            Ok((Framing::Done, true))
        );
        assert_eq!(
            f(Method::GET, "Transfer-Encoding: gzip, chunked\r\n"),
            Ok((Framing::Chunked(ChunkState::Size), true))
        );
        assert_eq!(
            f(
                Method::GET,
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"
            ),
            Ok((Framing::Chunked(ChunkState::Size), false)),
            "both: chunked wins, the connection is not reused"
        );
        assert_eq!(
            f(
                Method::GET,
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\nTransfer-Encoding:\r\n"
            ),
            Ok((Framing::Chunked(ChunkState::Size), true)),
            "lines with only empty elements are no codings: chunked is last"
        );
        assert_eq!(
            f(Method::GET, "Transfer-Encoding: gzip\r\n"),
            Ok((Framing::UntilClose, false))
        );
        assert_eq!(f(Method::GET, ""), Ok((Framing::UntilClose, false)));
        assert_eq!(
            f(Method::GET, "Content-Length: 7\r\nConnection: close\r\n"),
            Ok((Framing::Length(7), false))
        );
        assert_eq!(
            f(Method::GET, "Content-Length: 7, 7\r\n"),
            Ok((Framing::Length(7), true))
        );
        assert!(f(Method::GET, "Content-Length: 7\r\nContent-Length: 8\r\n").is_err());
        assert!(f(Method::GET, "Content-Length: +7\r\n").is_err());
        assert!(f(Method::GET, "Content-Length: 99999999999999999999\r\n").is_err());
        let no_content = framing_of(
            Method::GET,
            "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(no_content, Ok((Framing::Done, true)));
        let old = |h: &str| framing_of(Method::GET, &format!("HTTP/1.0 200 OK\r\n{h}\r\n"));
        assert_eq!(
            old("Content-Length: 1\r\n"),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            old("Content-Length: 1\r\nConnection: keep-alive\r\n"),
            Ok((Framing::Length(1), true))
        );
        assert!(old("Transfer-Encoding: chunked\r\n").is_err());
    }

    /// Runs the chunked decoder over `input` fed in pieces of `step` bytes.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut state = ChunkState::Size;
        let mut read = BytesMut::new();
        let mut data = Vec::new();
        let mut pieces = input.chunks(step);
        loop {
            match decode_chunked(&mut state, &mut read)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::End(trailers) => {
                    assert!(read.is_empty(), "bytes left after the body");
                    return Ok((data, trailers));
                }
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => read.extend_from_slice(piece),
                    None => return Err("ran out of input".to_owned()),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads_split() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 9\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers) = decode_all(input, step).expect("valid");
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(trailers.expect("trailers")["x-sum"], "9");
        }
        let (data, trailers) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", 4).expect("valid");
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_none());
    }

    #[test]
    fn malformed_chunked_bodies_fail() {
        for bad in [
            &b"5\r\nhelloXX0\r\n\r\n"[..],
            b"\r\n5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"zz\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            // A bare LF in an extension, refused as hyper refuses it: a parser that ends the
            // line there would read "X" as the chunk's first byte.
            b"5;a\nX\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("5;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(decode_all(long.as_bytes(), 64).is_err());
    }

    #[test]
    fn request_heads_are_written_in_origin_form_with_every_field() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_head(&mut out, &Method::GET, "/p?q=1", &headers);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "GET /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }

    /// Random heads and bodies against a model of what the backend sent: the fields in order
    /// (less a `Connection` that only says keep-alive or close), whatever the connection's memo
    /// of earlier heads; a chunked body back whole, whatever its chunks, extensions, trailers
    /// and the reads' splits; and an answer for any bytes at all.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Names from a small pool (so that heads on one connection share names, as real ones
        /// do, and the memo is exercised), in any case, or any token.
        fn field_name() -> impl Strategy<Value = String> {
            let pool = prop_oneof![
                Just("server"),
                Just("date"),
                Just("content-type"),
                Just("cache-control"),
                Just("set-cookie"),
                Just("x-a"),
                Just("x-b"),
                Just("connection"),
                Just("vary"),
            ]
            .prop_flat_map(|name| {
                vec(any::<bool>(), name.len()).prop_map(move |upper| {
                    name.chars()
                        .zip(upper)
                        .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                        .collect()
                })
            });
            prop_oneof![4 => pool, 1 => "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}"]
        }

        /// A value as a backend sends it: visible ASCII, inner spaces, obs-text; no
        /// whitespace at either end (httparse trims it).
        fn field_value(name: &str) -> BoxedStrategy<Vec<u8>> {
            if name.eq_ignore_ascii_case("connection") {
                return prop_oneof![
                    Just(b"keep-alive".to_vec()),
                    Just(b"close".to_vec()),
                    Just(b"Keep-Alive, close".to_vec()),
                    Just(b"keep-alive, X-A".to_vec()),
                    Just(b"upgrade".to_vec()),
                ]
                .boxed();
            }
            let inner = prop_oneof![8 => 0x21u8..0x7f, 1 => Just(b' '), 1 => 0x80u8..=0xff];
            (0x21u8..0x7f, vec(inner, 0..20), 0x21u8..0x7f)
                .prop_map(|(first, middle, last)| {
                    let mut value = vec![first];
                    value.extend(middle);
                    value.push(last);
                    value
                })
                .boxed()
        }

        fn fields() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
            vec(
                field_name().prop_flat_map(|name| {
                    let value = field_value(&name);
                    (Just(name), value)
                }),
                0..12,
            )
        }

        fn head_bytes(status: u16, fields: &[(String, Vec<u8>)]) -> Vec<u8> {
            let mut head = format!("HTTP/1.1 {status} X\r\n").into_bytes();
            for (name, value) in fields {
                head.extend_from_slice(name.as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            head
        }

        /// The fields the parsed map must hold, in a `HeaderMap`'s order: names in the order
        /// they first came, each with its values in the order they came.
        fn expected(fields: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
            let kept: Vec<(String, Vec<u8>)> = fields
                .iter()
                .filter(|(name, value)| {
                    !name.eq_ignore_ascii_case("connection")
                        || value.split(|b| *b == b',').any(|token| {
                            let token = token.trim_ascii();
                            !token.eq_ignore_ascii_case(b"close")
                                && !token.eq_ignore_ascii_case(b"keep-alive")
                        })
                })
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .collect();
            let mut names: Vec<&String> = Vec::new();
            for (name, _) in &kept {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
                .iter()
                .flat_map(|name| kept.iter().filter(move |(n, _)| n == *name).cloned())
                .collect()
        }

        fn listed(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
            headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect()
        }

        /// A chunked coding of `body` cut at `cuts`, with sizes in either case and with leading
        /// zeros, extensions on some chunks, and `trailers`.
        fn chunked(
            body: &[u8],
            cuts: &[usize],
            style: &[(bool, u8, bool)],
            trailers: &[(String, Vec<u8>)],
        ) -> Vec<u8> {
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
            points.extend([0, body.len()]);
            points.sort_unstable();
            points.dedup();
            let mut out = Vec::new();
            let mut styles = style.iter().cycle();
            let mut size_line = |out: &mut Vec<u8>, size: usize| {
                let (upper, zeros, extension) = styles.next().copied().unwrap_or_default();
                out.extend(std::iter::repeat_n(b'0', usize::from(zeros % 3)));
                let hex = if upper {
                    format!("{size:X}")
                } else {
                    format!("{size:x}")
                };
                out.extend_from_slice(hex.as_bytes());
                if extension {
                    out.extend_from_slice(b";name=\"v;\\\"x\"; flag");
                }
                out.extend_from_slice(b"\r\n");
            };
            for pair in points.windows(2) {
                let chunk = &body[pair[0]..pair[1]];
                size_line(&mut out, chunk.len());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            size_line(&mut out, 0);
            for (name, value) in trailers {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn heads_parse_to_their_fields_whatever_came_before(
                heads in vec((200u16..600, fields()), 1..6),
                after in vec(any::<u8>(), 0..16),
            ) {
                let mut memo = FieldMemo::default();
                for (status, fields) in &heads {
                    let mut read = BytesMut::from(&head_bytes(*status, fields)[..]);
                    read.extend_from_slice(&after);
                    let head = parse_head(&mut read, &mut memo)
                        .map_err(TestCaseError::fail)?
                        .ok_or_else(|| TestCaseError::fail("a whole head is incomplete"))?;
                    prop_assert_eq!(head.status.as_u16(), *status);
                    prop_assert_eq!(listed(&head.headers), expected(fields));
                    prop_assert_eq!(&read[..], &after[..], "what follows the head stays");
                }
            }

            #[test]
            fn any_bytes_get_an_answer_and_an_incomplete_head_stays_whole(
                input in prop_oneof![
                    vec(any::<u8>(), 0..200),
                    vec(any::<u8>(), 0..200).prop_map(|rest| [b"HTTP/1.1 ".to_vec(), rest].concat()),
                ],
            ) {
                let mut read = BytesMut::from(&input[..]);
                match parse_head(&mut read, &mut FieldMemo::default()) {
                    Ok(Some(_)) => prop_assert!(read.len() < input.len()),
                    Ok(None) | Err(_) => prop_assert_eq!(&read[..], &input[..]),
                }
            }

            #[test]
            fn chunked_bodies_come_back_whole_whatever_the_coding_and_the_reads(
                body in vec(any::<u8>(), 0..600),
                cuts in vec(any::<usize>(), 0..8),
                style in vec((any::<bool>(), any::<u8>(), any::<bool>()), 1..4),
                trailers in vec(("x-[a-z]{1,8}", "[!-~]{1,10}".prop_map(String::into_bytes)), 0..3),
                step in 1usize..80,
            ) {
                let input = chunked(&body, &cuts, &style, &trailers);
                let (data, got) = decode_all(&input, step).map_err(TestCaseError::fail)?;
                prop_assert_eq!(data, body);
                let got = got.map(|map| listed(&map)).unwrap_or_default();
                prop_assert_eq!(got, expected(&trailers));
            }

            #[test]
            fn any_bytes_decode_to_no_more_than_they_hold(
                input in vec(any::<u8>(), 0..300),
                step in 1usize..40,
            ) {
                let mut state = ChunkState::Size;
                let mut read = BytesMut::new();
                let mut out = 0usize;
                let mut pieces = input.chunks(step);
                loop {
                    match decode_chunked(&mut state, &mut read) {
                        Ok(Decoded::Data(data)) => {
                            prop_assert!(!data.is_empty());
                            out += data.len();
                        }
                        Ok(Decoded::End(_)) | Err(_) => break,
                        Ok(Decoded::NeedMore) => match pieces.next() {
                            Some(piece) => read.extend_from_slice(piece),
                            None => break,
                        },
                    }
                }
                prop_assert!(out <= input.len());
            }
        }
    }
}
