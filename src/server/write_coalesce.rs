//! Write coalescing for HTTP/2 client connections: the frames h2 writes during one round of the
//! connection's task go out in one system call rather than one per response.
//!
//! h2 writes a DATA frame of 256 bytes or more from the body's own buffer (a vectored write, no
//! copy), so it has to write before it can take the next one: a connection whose four streams
//! answer at once costs four system calls where one would do (scenario 4 measured 1.00 `writev`
//! per request, HAProxy 0.26; docs/performance.md). [`Coalesced`] copies small writes into a
//! buffer while its [`Hold`] is on; the connection's task (`auto.rs`) holds what h2 writes, lets
//! the other ready tasks run once (streams about to answer on the same connection, typically), then
//! lets the buffer go out with h2's next flush. hyper and h2 offer no such setting (their own
//! write buffer flushes at every chained frame), so it is written here.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes up to this size are copied into the buffer; larger ones go out as they are (after
/// what is held), as a copy would cost more than the system call it saves.
const COPY_MAX: usize = 16 * 1024;

/// The most bytes held: past this, what is held goes out before more is taken.
const HOLD_MAX: usize = 64 * 1024;

/// Shared by a [`Coalesced`] stream and the task that polls its connection.
#[derive(Debug, Default)]
pub(super) struct Hold {
    /// Flushes leave what is held in the buffer (the task writes it out later).
    on: AtomicBool,
    /// The buffer holds bytes not yet written.
    pending: AtomicBool,
}

impl Hold {
    /// Holds writes (`true`) or lets the next flush write them out (`false`).
    pub(super) fn set(&self, on: bool) {
        // One task touches both sides; the atomics only make the pair `Sync`.
        self.on.store(on, Ordering::Relaxed);
    }

    /// Bytes are held, waiting for a flush with the hold off.
    pub(super) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }
}

/// A stream whose small writes are gathered into one buffer while its [`Hold`] is on.
#[derive(Debug)]
pub(super) struct Coalesced<IO> {
    io: IO,
    buf: Vec<u8>,
    /// How much of `buf` has been written (a write can take part of it).
    written: usize,
    hold: Arc<Hold>,
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// `io`, its writes held as `hold` says.
    pub(super) fn new(io: IO, hold: Arc<Hold>) -> Self {
        Coalesced {
            io,
            buf: Vec::new(),
            written: 0,
            hold,
        }
    }

    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let rest = &self.buf[self.written..];
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.buf.capacity() > COPY_MAX {
            // A burst grew it: an idle HTTP/2 connection keeps no more than a typical round needs.
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.hold.pending.store(false, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }

    /// Copies `bufs` (`total` bytes in all) into the buffer.
    fn take(&mut self, bufs: &[IoSlice<'_>], total: usize) -> usize {
        self.buf.reserve(total);
        for part in bufs {
            self.buf.extend_from_slice(part);
        }
        if total > 0 {
            self.hold.pending.store(true, Ordering::Relaxed);
        }
        total
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|part| part.len()).sum::<usize>();
        if total <= COPY_MAX && this.buf.len() + total <= HOLD_MAX {
            return Poll::Ready(Ok(this.take(bufs, total)));
        }
        // Too large to copy, or the buffer is full: what is held goes first, to keep the order.
        ready!(this.poll_drain(cx))?;
        if total <= COPY_MAX {
            return Poll::Ready(Ok(this.take(bufs, total)));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.hold.on.load(Ordering::Relaxed) && !this.buf.is_empty() {
            // The task that set the hold writes it out in this round or the next.
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn held_writes_go_out_together_and_in_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let hold = Arc::new(Hold::default());
        let mut stream = Coalesced::new(near, hold.clone());
        hold.set(true);
        stream.write_all(b"one ").await.expect("write");
        stream.flush().await.expect("flush");
        stream.write_all(b"two ").await.expect("write");
        stream.flush().await.expect("flush");
        assert!(hold.is_pending());
        // Nothing has gone out while held (the pipe is in memory: a write would be there now).
        let mut probe = [0u8; 16];
        let early = far.read(&mut probe).now_or_never();
        assert!(early.is_none(), "held bytes were written: {early:?}");
        // A large write goes out after what is held, not before it.
        let large = vec![b'x'; COPY_MAX + 1];
        stream.write_all(&large).await.expect("write");
        stream.write_all(b" three").await.expect("write");
        hold.set(false);
        stream.flush().await.expect("flush");
        assert!(!hold.is_pending());
        let mut expected = b"one two ".to_vec();
        expected.extend_from_slice(&large);
        expected.extend_from_slice(b" three");
        let mut got = vec![0u8; expected.len()];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expected);
        // A burst of held writes grows the buffer past 16 KiB; drained, it is given back.
        hold.set(true);
        let chunk = vec![b'z'; 10 * 1024];
        for _ in 0..3 {
            stream.write_all(&chunk).await.expect("write");
        }
        stream.flush().await.expect("flush");
        assert!(stream.buf.capacity() > COPY_MAX);
        hold.set(false);
        stream.flush().await.expect("flush");
        let mut burst = vec![0u8; 3 * chunk.len()];
        far.read_exact(&mut burst).await.expect("read");
        assert!(burst.iter().all(|b| *b == b'z'));
        let kept = stream.buf.capacity();
        assert!(kept <= COPY_MAX, "{kept} bytes kept");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_held_first() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let hold = Arc::new(Hold::default());
        let mut stream = Coalesced::new(near, hold.clone());
        hold.set(true);
        stream.write_all(b"last words").await.expect("write");
        stream.flush().await.expect("flush");
        stream.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn the_buffer_is_bounded_and_backpressure_reaches_the_writer() {
        // The peer reads nothing: once the pipe and the buffer are full, writes wait.
        let (near, _far) = tokio::io::duplex(1024);
        let hold = Arc::new(Hold::default());
        let mut stream = Coalesced::new(near, hold.clone());
        hold.set(true);
        let chunk = vec![b'y'; 4096];
        let mut accepted = 0;
        for _ in 0..64 {
            // Pending: the write waits for the peer (the pipe is in memory, nothing else is).
            if stream.write_all(&chunk).now_or_never().is_none() {
                break;
            }
            accepted += chunk.len();
        }
        assert!(accepted <= HOLD_MAX + 1024, "{accepted} bytes taken");
        assert!(stream.buf.len() <= HOLD_MAX);
    }
}
