//! Moves a response body from a backend's socket to the client's through a kernel pipe
//! (`splice(2)`), so that its bytes are never copied into Gatehouse's memory and out again.
//!
//! Only for what needs no look at the bytes: plain TCP on both sides, HTTP/1.1 with a known
//! length, no compression, cache fill or TLS. Two copies of every byte (socket to user space,
//! user space to socket) were about 13 % of the CPU samples with 100 KiB responses
//! (docs/performance.md); HAProxy offers the same as `option splice-response`. tokio has no
//! splice of its own, so this is written here over `rustix`'s safe system-call wrappers and
//! tokio's readiness (`poll_*_ready`, `try_io`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::body::BoxError;

/// The least body left, after what was read with the response head, for splicing it rather than
/// reading it. Splicing costs about three system calls more per response (the head and the bytes
/// read with it written on their own, a splice each way, a readiness check the last splice leaves
/// behind), which the copies saved pay for only from about 50 KiB. Paired A/Bs in scenario 2 with
/// this at 16 KiB and every head read small: 40 KiB bodies +23 % CPU per request, 64 KiB ±0,
/// 100 KiB −13 %; as it is now (and heads read small only after a large body): 24 and 40 KiB
/// ±1 %, 100 KiB −20 %.
pub const SPLICE_MIN: u64 = 64 * 1024;

/// The most a response head's read takes from a backend's plain TCP socket when splicing is
/// expected, so that the body's bytes stay in the socket (bytes read with the head are sent the
/// ordinary way).
pub const HEAD_READ: usize = 16 * 1024;

/// A response body at least this long makes the next head's read on its connection small
/// ([`HEAD_READ`]): a backend's responses on one connection tend to be alike, and a small head
/// read costs a system call more for a body that is then not spliced (+5 % CPU per request for
/// 24 KiB bodies, paired A/B).
pub const SPLICE_EXPECTED: u64 = HEAD_READ as u64 + SPLICE_MIN;

/// The size asked for a pipe. Linux's default (16 pages) holds 16 pieces of a socket's data,
/// often fewer bytes than one read would have taken; 256 KiB moves a 100 KiB body in one call
/// each way. When the kernel refuses (the user's pipe quota), the default is kept.
const PIPE_SIZE: usize = 256 * 1024;

/// The least a pipe must hold to be used. Past the user's pipe quota
/// (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB of pipes by default) the kernel makes new pipes
/// of two pages and refuses to grow them; splicing through one would cost more system calls than
/// the copies it saves, so the body is sent the ordinary way then.
const PIPE_MIN: usize = 64 * 1024;

/// Empty pipes a thread keeps for later bodies: a pipe costs two descriptors and three system
/// calls to set up. A body is usually spliced within one poll, so few are in use at once
/// (scenario 2, 64 connections: 18 pipes made in all for 61,000 requests); each one kept counts
/// against the user's pipe quota.
const KEPT: usize = 16;

/// After a pipe could not be had (the user's pipe quota, or no file descriptors left), the
/// large bodies a thread sends before it tries again: making and closing a pipe the kernel will
/// not grow costs about five system calls, as much as splicing saves on a 100 KiB body. A retry
/// every this many bodies costs a few hundredths of a system call each.
const RETRY_AFTER: u32 = 256;

thread_local! {
    static IDLE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    static BACK_OFF: Cell<PipeBackOff> = const { Cell::new(PipeBackOff::new()) };
}

/// Whether a thread should try to make a pipe, after its last try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PipeBackOff {
    /// Bodies still to send without trying.
    skip: u32,
}

impl PipeBackOff {
    const fn new() -> Self {
        PipeBackOff { skip: 0 }
    }

    /// Whether to try making a pipe for this body (and counts the body if not).
    fn try_now(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// The try failed: leave the next bodies alone.
    fn failed(&mut self) {
        self.skip = RETRY_AFTER;
    }
}

/// Runs `f` on this thread's [`PipeBackOff`].
fn back_off<T>(f: impl FnOnce(&mut PipeBackOff) -> T) -> T {
    BACK_OFF.with(|cell| {
        let mut state = cell.get();
        let answer = f(&mut state);
        cell.set(state);
        answer
    })
}

/// Whether `splice(2)` may be called here, asked once per process with the first pipe made. A
/// sandbox's system-call filter (seccomp) may refuse it, and a refusal met after a response's
/// head is sent would cut the response short; refused, every body is copied the ordinary way.
static SPLICE_ALLOWED: OnceLock<bool> = OnceLock::new();

/// A kernel pipe holding body bytes between the two sockets.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe.
    held: usize,
    /// What it can hold.
    capacity: usize,
}

impl Pipe {
    /// An empty pipe, kept by this thread or new; `None` when none can be made (out of file
    /// descriptors), when the kernel gives only a small one, or where `splice` is refused: the
    /// body is then sent the ordinary way.
    pub fn take() -> Option<Pipe> {
        if let Some(pipe) = IDLE.with(|idle| idle.borrow_mut().pop()) {
            return Some(pipe);
        }
        if SPLICE_ALLOWED.get() == Some(&false) {
            // Known refused: no pipe made and closed for every large body.
            return None;
        }
        if !back_off(PipeBackOff::try_now) {
            return None;
        }
        let made = Self::make();
        if made.is_none() {
            back_off(PipeBackOff::failed);
        }
        let (read, write, capacity) = made?;
        let allowed = SPLICE_ALLOWED.get_or_init(|| {
            allowed(rustix::pipe::splice(
                &read,
                None,
                &write,
                None,
                0,
                SpliceFlags::NONBLOCK,
            ))
        });
        if !allowed {
            return None;
        }
        Some(Pipe {
            read,
            write,
            held: 0,
            capacity,
        })
    }

    /// A new pipe and what it holds; `None` when none can be had, or only a small one.
    fn make() -> Option<(OwnedFd, OwnedFd, usize)> {
        let (read, write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        let capacity = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))
            .ok()
            .filter(|&capacity| capacity >= PIPE_MIN)?;
        Some((read, write, capacity))
    }

    /// Keeps an empty pipe for the next body; one still holding bytes is closed with them.
    pub fn give_back(self) {
        if self.held > 0 {
            return;
        }
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.len() < KEPT {
                idle.push(self);
            }
        });
    }

    /// Bytes in the pipe, waiting for the client's socket.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves up to `max` bytes that `source` has received into the pipe; how many (0 at the end
    /// of the stream). Only into an empty pipe: a full one would make the call fail as a socket
    /// with nothing to read does, and tokio would forget the socket's readiness.
    pub fn poll_fill_from(
        &mut self,
        source: &TcpStream,
        max: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.held > 0 {
            return Poll::Ready(Err(io::Error::other(
                "splicing into a pipe not yet emptied",
            )));
        }
        let len = max.min(self.capacity);
        loop {
            ready!(source.poll_read_ready(cx))?;
            let moved = source.try_io(Interest::READABLE, || {
                rustix::pipe::splice(source, None, &self.write, None, len, SpliceFlags::NONBLOCK)
                    .map_err(io::Error::from)
            });
            match moved {
                Ok(n) => {
                    self.held = n;
                    return Poll::Ready(Ok(n));
                }
                // Nothing there after all: tokio has cleared the readiness; wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves what the pipe holds to `sink`, as far as its send buffer takes it; how many bytes.
    pub fn poll_drain_to(
        &mut self,
        sink: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(sink.poll_write_ready(cx))?;
            let moved = sink.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(
                    &self.read,
                    None,
                    sink,
                    None,
                    self.held,
                    SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match moved {
                Ok(0) if self.held > 0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.held -= n.min(self.held);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Whether the answer to a zero-length `splice` says the call may be used: for a length of 0 the
/// kernel answers 0 before it looks at the descriptors, so an error can only be the call itself
/// refused (`ENOSYS`, `EPERM` from a seccomp filter).
fn allowed(answer: rustix::io::Result<usize>) -> bool {
    match answer {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "splice(2) is refused here: large response bodies are copied");
            false
        }
    }
}

/// A response body that can move the rest of its bytes through a [`Pipe`] instead of yielding
/// them as frames.
pub trait SpliceSource {
    /// The bytes left when all of them are still in a backend's plain TCP socket, so that
    /// [`SpliceSource::poll_splice`] can move them; `None` when the body must be polled for frames
    /// (bytes already read, a tap or coder that needs them, another framing or stream).
    fn splice_len(&self) -> Option<u64> {
        None
    }

    /// Moves the next of the body's bytes into the empty `pipe`; how many. Only after
    /// [`SpliceSource::splice_len`] said how many are left, and never beyond them.
    fn poll_splice(
        self: Pin<&mut Self>,
        _pipe: &mut Pipe,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<usize, BoxError>> {
        Poll::Ready(Err("this body cannot be spliced".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected loopback sockets.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (connected, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (connected.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn bytes_move_from_one_socket_to_another_whole_and_in_order() {
        // backend_out → [proxy_in → pipe → proxy_out] → client_in
        let (mut backend_out, proxy_in) = socket_pair().await;
        let (proxy_out, mut client_in) = socket_pair().await;
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            backend_out.write_all(&sent).await.expect("backend writes");
            backend_out
        });
        let reader = tokio::spawn(async move {
            let mut received = vec![0; 1_000_000];
            client_in
                .read_exact(&mut received)
                .await
                .expect("client reads");
            received
        });
        let mut pipe = Pipe::take().expect("a pipe");
        let mut left = body.len();
        while left > 0 {
            let n = poll_fn(|cx| pipe.poll_fill_from(&proxy_in, left, cx))
                .await
                .expect("fill");
            assert!(n > 0 && n <= left, "moved {n} of {left}");
            left -= n;
            while pipe.held() > 0 {
                poll_fn(|cx| pipe.poll_drain_to(&proxy_out, cx))
                    .await
                    .expect("drain");
            }
        }
        assert_eq!(reader.await.expect("reader"), body);
        // The backend's writer is done and nothing more is in the pipe.
        let _backend = writer.await.expect("writer");
        pipe.give_back();
        IDLE.with(|idle| assert_eq!(idle.borrow().len(), 1, "the emptied pipe is kept"));
    }

    #[test]
    fn the_probe_passes_where_splice_works_and_refusals_are_recognised() {
        // The probe as `Pipe::take` makes it: a zero-length splice from a pipe into itself,
        // which the kernel answers with 0 whatever the descriptors.
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).expect("pipe");
        let answer = rustix::pipe::splice(&read, None, &write, None, 0, SpliceFlags::NONBLOCK);
        assert_eq!(answer, Ok(0));
        assert!(allowed(answer));
        assert!(!allowed(Err(rustix::io::Errno::NOSYS)));
        assert!(!allowed(Err(rustix::io::Errno::PERM)));
    }

    #[tokio::test]
    async fn the_end_of_the_source_stream_is_zero_bytes() {
        let (backend_out, proxy_in) = socket_pair().await;
        drop(backend_out);
        let mut pipe = Pipe::take().expect("a pipe");
        let n = poll_fn(|cx| pipe.poll_fill_from(&proxy_in, 4096, cx))
            .await
            .expect("fill at the end");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_pipe_still_holding_bytes_is_not_kept() {
        let (mut backend_out, proxy_in) = socket_pair().await;
        backend_out.write_all(b"held").await.expect("write");
        let mut pipe = Pipe::take().expect("a pipe");
        let n = poll_fn(|cx| pipe.poll_fill_from(&proxy_in, 4, cx))
            .await
            .expect("fill");
        assert_eq!(n, 4);
        // A second fill before draining is refused rather than confusing the socket's readiness.
        assert!(
            poll_fn(|cx| pipe.poll_fill_from(&proxy_in, 4, cx))
                .await
                .is_err()
        );
        pipe.give_back();
        // This thread keeps no pipe with stale bytes for a later body.
        IDLE.with(|idle| assert!(idle.borrow().is_empty()));
    }

    #[test]
    fn after_a_failed_try_a_thread_leaves_the_next_bodies_alone_then_tries_again() {
        let mut state = PipeBackOff::new();
        assert!(state.try_now(), "no failure yet: try every body");
        assert!(state.try_now());
        state.failed();
        let skipped = (0..RETRY_AFTER).filter(|_| !state.try_now()).count();
        assert_eq!(skipped, RETRY_AFTER as usize);
        assert!(state.try_now(), "tries again after {RETRY_AFTER} bodies");
        assert!(state.try_now(), "and for every body while tries succeed");
    }
}
