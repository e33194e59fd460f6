//! A minimal HTTP/2 client speaking raw frames, for what real clients do not let a test control:
//! which frames are sent (floods, resets, oversized header blocks) and which are left unanswered.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above any timeout the tests configure; only a bound for liveness.
const LIMIT: Duration = Duration::from_secs(10);

/// Frame types.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame on the wire: the 9-byte header, then the payload.
pub fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("frame length");
    assert!(length < 1 << 24, "frame too long");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The HPACK block of `GET http://a.test{path}`: :method GET and :scheme http from the static
/// table (2, 6), then :path and :authority as literals without indexing (name indexes 4 and 1).
pub fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![
        0x82,
        0x86,
        0x04,
        u8::try_from(path.len()).expect("short path"),
    ];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 6]);
    block.extend_from_slice(b"a.test");
    block
}

/// The error code of a GOAWAY or RST_STREAM frame.
pub fn error_code(frame: &Frame) -> Option<u32> {
    let at = match frame.0 {
        GOAWAY => 4,
        RST_STREAM => 0,
        _ => return None,
    };
    let code = frame.3.get(at..at + 4)?;
    Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
}

/// A minimal HTTP/2 client speaking raw frames, for what real clients do not let a test control
/// (which frames are sent, and which are left unanswered).
pub struct RawH2 {
    /// The connection, for reads and writes the methods do not cover.
    pub stream: TcpStream,
}

/// One frame: type, flags, stream id, payload.
pub type Frame = (u8, u8, u32, Vec<u8>);

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame (the server's SETTINGS are
    /// never acknowledged; the h2 server does not insist).
    pub async fn connect(addr: SocketAddr) -> RawH2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        stream.write_all(&hello).await.unwrap();
        RawH2 { stream }
    }

    /// Sends `GET http://a.test{path}` on stream `id` with END_STREAM.
    pub async fn get(&mut self, id: u32, path: &str) {
        let bytes = frame(HEADERS, END_HEADERS | END_STREAM, id, &get_block(path));
        self.send(&bytes).await;
    }

    /// Connects, then waits for the server's SETTINGS and acknowledges them, so the limits the
    /// server announced are in force for what follows.
    pub async fn connect_acked(addr: SocketAddr) -> RawH2 {
        let mut h2 = RawH2::connect(addr).await;
        let frames = h2
            .read_until(LIMIT, |f| f.0 == SETTINGS && f.1 & 1 == 0)
            .await;
        assert!(
            frames.last().is_some_and(|f| f.0 == SETTINGS),
            "the server sent no SETTINGS: {frames:?}"
        );
        h2.send(&frame(SETTINGS, 1, 0, &[])).await;
        h2
    }

    /// Writes `bytes` as they are; a write the server refuses (it closed) is not an error here.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends a PING (not an ack).
    pub async fn ping(&mut self) {
        let mut frame = vec![0, 0, 8, 0x6, 0, 0, 0, 0, 0];
        frame.extend_from_slice(b"pingpong");
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads frames until `done` holds for one (returned last), the connection ends or `limit`
    /// passes.
    pub async fn read_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Frame) -> bool,
    ) -> Vec<Frame> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut head = [0u8; 9];
            if !matches!(
                tokio::time::timeout_at(deadline, self.stream.read_exact(&mut head)).await,
                Ok(Ok(_))
            ) {
                return frames;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            if !matches!(
                tokio::time::timeout_at(deadline, self.stream.read_exact(&mut payload)).await,
                Ok(Ok(_))
            ) {
                return frames;
            }
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let frame = (head[3], head[4], id, payload);
            let finished = done(&frame);
            frames.push(frame);
            if finished {
                return frames;
            }
        }
    }

    /// Reads the body of the response on stream `id` (DATA frames up to END_STREAM).
    pub async fn body(&mut self, id: u32) -> String {
        let frames = self
            .read_until(LIMIT, |f| {
                f.2 == id && f.1 & 0x1 == 0x1 && matches!(f.0, 0x0 | 0x1)
            })
            .await;
        let last = frames.last().expect("a response");
        assert!(
            last.2 == id && last.1 & 0x1 == 0x1,
            "the response on stream {id} did not finish: {frames:?}"
        );
        frames
            .iter()
            .filter(|f| f.0 == 0x0 && f.2 == id)
            .map(|f| String::from_utf8_lossy(&f.3).into_owned())
            .collect()
    }
}
