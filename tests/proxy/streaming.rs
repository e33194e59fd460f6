//! Bodies stream through the proxy: a gigabyte each way with bounded proxy memory, chunked
//! bodies byte-identical, and trailers in both directions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};

use crate::support::*;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// A gigabyte each way, the proxy in its own process
// ---------------------------------------------------------------------------------------------

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;
const PROXY_MEMORY_LIMIT: u64 = 64 << 20;

/// Chunk `index` of the deterministic test stream: a fixed pseudo-random block with the index
/// written into every 4 KiB, so lost, repeated or reordered chunks change the digest.
fn chunk(index: u64) -> Bytes {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..CHUNK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    });
    let mut data = base.clone();
    for offset in (0..CHUNK).step_by(4096) {
        data[offset..offset + 8].copy_from_slice(&index.to_le_bytes());
    }
    Bytes::from(data)
}

/// `total` bytes of the test stream as a stream of chunks; the digest of what was produced is
/// sent on `digest` once the last chunk has been handed out.
fn generated(
    total: u64,
    digest: tokio::sync::oneshot::Sender<String>,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let chunks = total.div_ceil(CHUNK as u64);
    stream::unfold(
        (0u64, Sha256::new(), Some(digest)),
        move |(index, mut hasher, mut digest)| async move {
            if index == chunks {
                return None;
            }
            let mut data = chunk(index);
            let remaining = total - index * CHUNK as u64;
            if remaining < CHUNK as u64 {
                data.truncate(remaining as usize);
            }
            hasher.update(&data);
            // A sender that knows the length stops polling after the last byte, so the digest
            // goes out with the last chunk rather than at the end of the stream.
            if index + 1 == chunks
                && let Some(digest) = digest.take()
            {
                let _ = digest.send(hex(&hasher.finalize_reset()));
            }
            Some((data, (index + 1, hasher, digest)))
        },
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The proxy binary running in a child process, killed when dropped.
struct ProxyProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl ProxyProcess {
    /// Writes a config routing everything to `backend` and runs `gatehouse run -c FILE` until
    /// `GET /probe` through its port answers `probe` (so it is this proxy in front of this
    /// backend). A port picked free can be taken by someone else before the child binds it, so a
    /// start that fails is retried on a fresh port.
    async fn start(backend: SocketAddr, probe: &str) -> ProxyProcess {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-streaming-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut failures = Vec::new();
        for _ in 0..3 {
            let addr = dead_address().await;
            let config = dir.join("gatehouse.toml");
            std::fs::write(
                &config,
                format!(
                    "[log]\nlevel = \"warn\"\n\n[access_log]\nenabled = false\n\n\
                     [[listener]]\naddress = \"{addr}\"\n\n\
                     [pool.app]\nbackends = [\"{backend}\"]\n\n\
                     [[route]]\nname = \"all\"\npool = \"app\"\n"
                ),
            )
            .expect("write config");
            let stderr_path = dir.join("stderr.log");
            let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
                .arg("run")
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .expect("spawn gatehouse");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    let answer = match client().get(format!("http://{addr}/probe")).send().await {
                        Ok(response) => response.text().await.unwrap_or_default(),
                        Err(error) => error.to_string(),
                    };
                    if answer == probe {
                        return ProxyProcess { child, addr, dir };
                    }
                    let _ = child.kill().await;
                    failures.push(format!("{addr} answered {answer:?}, not the probe"));
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    failures.push(format!("exited with {status}: {log}"));
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!("gatehouse did not answer on {addr} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("gatehouse did not start: {failures:#?}");
    }

    /// The child's peak resident set size (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let pid = self.child.id().expect("child is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM line");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmHWM value");
        kib * 1024
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // `kill_on_drop` ends the child if the test failed before `stop`.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Streams request bodies to a digest (`/upload`), serves a generated gigabyte (`/download`),
/// reporting the digest of what it generated, and answers `/probe` with `probe`.
async fn digest_origin(
    download_digest: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<String>>>>,
    probe: String,
) -> Origin {
    Origin::start(move |request| {
        let download_digest = download_digest.clone();
        let probe = probe.clone();
        async move {
            match request.uri().path() {
                "/probe" => text(200, &probe),
                "/upload" => {
                    let mut body = request.into_body();
                    let mut hasher = Sha256::new();
                    let mut count = 0u64;
                    while let Some(frame) = body.frame().await {
                        match frame {
                            Ok(frame) => {
                                if let Some(data) = frame.data_ref() {
                                    count += data.len() as u64;
                                    hasher.update(data);
                                }
                            }
                            Err(error) => return text(400, &format!("upload broke: {error}")),
                        }
                    }
                    text(200, &format!("{count} {}", hex(&hasher.finalize())))
                }
                "/download" => {
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    *download_digest.lock().expect("digest") = Some(receiver);
                    let frames =
                        generated(GIB, sender).map(|data| Ok::<_, BoxError>(Frame::data(data)));
                    http::Response::new(BodyExt::boxed(StreamBody::new(frames)))
                }
                _ => text(404, "no"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_each_way_with_bounded_proxy_memory() {
    let download_digest = Arc::new(Mutex::new(None));
    let probe = format!("origin-{:016x}", fastrand::u64(..));
    let origin = digest_origin(download_digest.clone(), probe.clone()).await;
    let proxy = ProxyProcess::start(origin.addr, &probe).await;
    let client = client();
    let started = Instant::now();
    let liveness = Duration::from_secs(600);

    let upload = async {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let body = generated(GIB, sender).map(Ok::<_, std::io::Error>);
        let response = client
            .post(format!("http://{}/upload", proxy.addr))
            .header("content-length", GIB.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .expect("upload response");
        assert_eq!(response.status(), 200);
        let answer = response.text().await.expect("upload answer");
        let sent = receiver.await.expect("upload digest");
        (answer, sent, started.elapsed())
    };
    let download = async {
        let response = client
            .get(format!("http://{}/download", proxy.addr))
            .send()
            .await
            .expect("download response");
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        while let Some(data) = body.next().await {
            let data = data.expect("download data");
            count += data.len() as u64;
            hasher.update(&data);
        }
        let receiver = download_digest
            .lock()
            .expect("digest")
            .take()
            .expect("origin served the download");
        let generated = receiver.await.expect("download digest");
        (count, hex(&hasher.finalize()), generated, started.elapsed())
    };
    let ((answer, sent, upload_took), (count, received, generated, download_took)) =
        tokio::time::timeout(liveness, async { tokio::join!(upload, download) })
            .await
            .expect("transfers finish (liveness bound)");

    assert_eq!(answer, format!("{GIB} {sent}"), "the origin got every byte");
    assert_eq!(count, GIB, "the client got every byte");
    assert_eq!(received, generated, "the client got the origin's bytes");
    let peak = proxy.peak_rss();
    println!(
        "1 GiB each way, concurrently: upload {upload_took:.1?}, download {download_took:.1?}; \
         proxy VmHWM {:.1} MiB",
        peak as f64 / (1 << 20) as f64
    );
    assert!(
        peak < PROXY_MEMORY_LIMIT,
        "proxy peak RSS {peak} bytes is over {PROXY_MEMORY_LIMIT}"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------------

/// Raw chunked encoding of `chunks`, with `trailers` (full field lines) after the last chunk.
fn encode_chunked(chunks: &[&[u8]], trailers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for data in chunks {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
    out
}

/// An origin that answers with the request body streamed back frame by frame (so its response
/// is chunked too), recording the bytes and any trailers it received.
async fn mirror_origin() -> (Origin, Arc<Mutex<Vec<(Vec<u8>, Option<http::HeaderMap>)>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    let origin = Origin::start(move |request| {
        let record = record.clone();
        async move {
            let collected = match request.into_body().collect().await {
                Ok(collected) => collected,
                Err(error) => return text(400, &format!("body broke: {error}")),
            };
            let trailers = collected.trailers().cloned();
            let bytes = collected.to_bytes();
            record
                .lock()
                .expect("record")
                .push((bytes.to_vec(), trailers));
            // Several frames and no length: hyper sends it chunked.
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = bytes
                .chunks(1000)
                .map(|piece| Ok(Frame::data(Bytes::copy_from_slice(piece))))
                .collect();
            http::Response::new(BodyExt::boxed(StreamBody::new(stream::iter(frames))))
        }
    })
    .await;
    (origin, received)
}

#[tokio::test]
async fn chunked_request_and_response_bodies_pass_byte_identical() {
    let (origin, received) = mirror_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    // Binary data in chunks of odd sizes, one of them looking like the end of a chunked body.
    let data: Vec<u8> = (0..7000u32).map(|i| (i * 7 % 256) as u8).collect();
    let pieces: Vec<&[u8]> = vec![
        &data[..1],
        &data[1..4097],
        &data[4097..4099],
        b"\r\n0\r\n\r\n",
        &data[4099..],
    ];
    let expected: Vec<u8> = pieces.concat();

    let mut conn = RawConn::connect(proxy.addr).await;
    let mut request =
        b"POST /mirror HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    request.extend(encode_chunked(&pieces, ""));
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{:?}", response.headers);
    assert!(
        response.chunked,
        "the response is chunked: {:?}",
        response.headers
    );
    assert!(!response.has("content-length"));
    assert_eq!(
        response.body, expected,
        "the client got the bytes back unchanged"
    );

    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].0, expected,
        "the origin got the bytes unchanged"
    );
    let seen = origin.last();
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(!seen.headers.contains_key("content-length"));
}

// ---------------------------------------------------------------------------------------------
// Trailers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn response_trailers_reach_a_client_that_accepts_them() {
    let origin = Origin::start(|_request| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut response =
            http::Response::new(BodyExt::boxed(StreamBody::new(stream::iter(frames))));
        // hyper only sends trailer fields that `Trailer` declares.
        response
            .headers_mut()
            .insert("trailer", http::HeaderValue::from_static("x-checksum"));
        response
    })
    .await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /t HTTP/1.1\r\nHost: example.test\r\nTE: trailers\r\n\r\n")
        .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{:?}", response.headers);
    assert_eq!(response.body, b"hello world");
    assert!(response.chunked);
    assert_eq!(response.header("trailer"), Some("x-checksum"));
    assert_eq!(
        response.trailer("x-checksum"),
        Some("abc123"),
        "trailers: {:?}",
        response.trailers
    );
    assert_eq!(origin.last().headers["te"], "trailers");
}

#[tokio::test]
async fn request_trailers_reach_the_origin() {
    let (origin, received) = mirror_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut request = b"POST /t HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\
                        Trailer: x-checksum\r\n\r\n"
        .to_vec();
    request.extend(encode_chunked(
        &[b"hello ", b"world"],
        "X-Checksum: abc123\r\n",
    ));
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{:?}", response.headers);
    assert_eq!(response.body, b"hello world");

    let received = received.lock().unwrap();
    let (body, trailers) = &received[0];
    assert_eq!(body, b"hello world");
    let trailers = trailers.as_ref().expect("the origin received trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(origin.last().headers["trailer"], "x-checksum");
}

// ---------------------------------------------------------------------------------------------
// Long uploads and the backend's response-header timeout
// ---------------------------------------------------------------------------------------------

const SHORT_HEADER_TIMEOUT: &str =
    "[[route]]\nname = \"r\"\npool = \"app\"\ntimeouts = { upstream_header = \"2s\" }\n";

#[tokio::test]
async fn an_upload_longer_than_the_upstream_header_timeout_is_not_cut_off() {
    let (origin, received) = mirror_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], SHORT_HEADER_TIMEOUT)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let pieces = 20u8;
    conn.send(
        format!(
            "POST /slow HTTP/1.1\r\nHost: example.test\r\nContent-Length: {}\r\n\r\n",
            pieces as usize * 100
        )
        .as_bytes(),
    )
    .await;
    // About 4 s in all, twice the header timeout; never more than 0.2 s without a byte.
    for i in 0..pieces {
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.send(&[b'a' + i; 100]).await;
    }
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{:?}", response.headers);
    let expected: Vec<u8> = (0..pieces).flat_map(|i| [b'a' + i; 100]).collect();
    assert_eq!(response.body, expected);
    assert_eq!(received.lock().unwrap()[0].0, expected);
}

#[tokio::test]
async fn a_stalled_upload_still_ends_with_a_gateway_timeout() {
    let (origin, received) = mirror_origin().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], SHORT_HEADER_TIMEOUT)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    // Declared larger than the 64 KiB the proxy holds for retries, so the body streams.
    conn.send(
        b"POST /stall HTTP/1.1\r\nHost: example.test\r\nContent-Length: 100000\r\n\r\n0123456789",
    )
    .await;
    // No more bytes: the exchange must still end rather than hang.
    let response = conn.response().await;
    assert_eq!(response.status, 504, "{:?}", response.headers);
    assert!(received.lock().unwrap().is_empty());
}
