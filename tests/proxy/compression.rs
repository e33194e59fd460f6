//! Compression end to end: negotiation, when not to compress, header rewriting, streaming,
//! decoding for clients without support, and request-body decoding with a bomb cap.
//! Round trips are checked with real decoding clients (curl, and the codec crates).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::support::*;

/// A JSON document of about 100 KiB.
fn json_100k() -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0u32;
    while out.len() < 100 * 1024 {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"name\":\"item {}\",\"tags\":[\"a\",\"b\"]}}",
                i % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.push(b']');
    out
}

/// An origin serving `body` with `content_type` and the extra headers, with a Content-Length.
async fn serving(
    body: Vec<u8>,
    content_type: &'static str,
    extra: &'static [(&'static str, &'static str)],
) -> Origin {
    let body = Bytes::from(body);
    Origin::start(move |_request| {
        let body = body.clone();
        async move {
            let mut response = Response::new(full(body));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static(content_type));
            for (name, value) in extra {
                response
                    .headers_mut()
                    .append(*name, HeaderValue::from_static(value));
            }
            response
        }
    })
    .await
}

fn compressing(origin: SocketAddr, settings: &str) -> String {
    single_pool_config(
        &[origin],
        &format!("[compression]\nenabled = true\n{settings}\n"),
    )
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        "zstd" => out = zstd::decode_all(data).expect("zstd"),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

/// Runs curl with `--compressed` (it decodes gzip, br and zstd) and returns (body, encoding seen).
async fn curl_decoded(url: String, accept: &'static str) -> (Vec<u8>, String) {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("curl")
            .args(["-sS", "--compressed", "-D", "/dev/stderr", "-H"])
            .arg(format!("Accept-Encoding: {accept}"))
            .arg(&url)
            .output()
            .expect("curl runs (install it from Debian)");
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let headers = String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
        let encoding = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-encoding:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        (output.stdout, encoding)
    })
    .await
    .expect("curl task")
}

#[tokio::test]
async fn each_algorithm_round_trips_byte_identical_through_curl() {
    let body = json_100k();
    let origin = serving(body.clone(), "application/json", &[]).await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    for encoding in ["gzip", "br", "zstd"] {
        let (decoded, seen) = curl_decoded(proxy.url("/data.json"), encoding).await;
        assert_eq!(seen, encoding);
        assert_eq!(
            Sha256::digest(&decoded),
            Sha256::digest(&body),
            "{encoding} round trip"
        );
    }
}

#[tokio::test]
async fn compressed_bodies_are_smaller_and_decode_with_an_independent_decoder() {
    let body = json_100k();
    let origin = serving(body.clone(), "application/json", &[]).await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    for encoding in ["gzip", "br", "zstd"] {
        let response = client()
            .get(proxy.url("/"))
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-encoding"], encoding);
        assert!(response.headers().get("content-length").is_none());
        let raw = response.bytes().await.unwrap();
        assert!(
            raw.len() < body.len() / 4,
            "{encoding}: {} bytes",
            raw.len()
        );
        assert_eq!(decode(encoding, &raw), body, "{encoding}");
    }
}

async fn negotiated(proxy: &Proxy, accept: &str) -> Option<String> {
    let response = client()
        .get(proxy.url("/"))
        .header("accept-encoding", accept)
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn q_values_and_server_preference_decide_the_coding() {
    let origin = serving(json_100k(), "application/json", &[]).await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    assert_eq!(
        negotiated(&proxy, "gzip, br").await.as_deref(),
        Some("br"),
        "server prefers br over gzip"
    );
    assert_eq!(
        negotiated(&proxy, "gzip;q=1, br;q=0.5").await.as_deref(),
        Some("gzip")
    );
    assert_eq!(
        negotiated(&proxy, "*;q=0.2, zstd;q=0").await.as_deref(),
        Some("br")
    );
    assert_eq!(negotiated(&proxy, "gzip;q=0, br;q=0, zstd;q=0").await, None);
    assert_eq!(negotiated(&proxy, "identity").await, None);
    assert_eq!(negotiated(&proxy, "deflate").await, None);

    let gzip_first =
        Proxy::start(&compressing(origin.addr, "algorithms = [\"gzip\", \"br\"]")).await;
    assert_eq!(
        negotiated(&gzip_first, "br, gzip, zstd").await.as_deref(),
        Some("gzip")
    );
}

#[tokio::test]
async fn no_compression_when_small_encoded_excluded_or_no_transform() {
    let small = serving(b"{\"ok\":true}".to_vec(), "application/json", &[]).await;
    let png = serving(vec![7u8; 50_000], "image/png", &[]).await;
    let no_transform = serving(
        json_100k(),
        "application/json",
        &[("cache-control", "no-transform")],
    )
    .await;
    let encoded = serving(
        {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&json_100k()).unwrap();
            e.finish().unwrap()
        },
        "application/json",
        &[("content-encoding", "gzip")],
    )
    .await;
    for (origin, case) in [
        (&small, "small"),
        (&png, "png"),
        (&no_transform, "no-transform"),
    ] {
        let proxy = Proxy::start(&compressing(origin.addr, "")).await;
        assert_eq!(negotiated(&proxy, "gzip, br, zstd").await, None, "{case}");
    }
    let proxy = Proxy::start(&compressing(encoded.addr, "")).await;
    let response = client()
        .get(proxy.url("/"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-encoding"],
        "gzip",
        "already gzip: passed as is"
    );
    assert_eq!(
        decode("gzip", &response.bytes().await.unwrap()),
        json_100k()
    );
}

#[tokio::test]
async fn no_compression_for_head_304_or_range_requests() {
    let body = json_100k();
    let length = body.len().to_string();
    let origin = Origin::start(|request| async move {
        if request.headers().contains_key("if-none-match") {
            let mut response = text(304, "");
            response
                .headers_mut()
                .insert("etag", HeaderValue::from_static("\"v1\""));
            return response;
        }
        let mut response = Response::new(full(json_100k()));
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        response
    })
    .await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    let head = client()
        .head(proxy.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(head.headers().get("content-encoding").is_none(), "HEAD");
    assert_eq!(
        head.headers()["content-length"],
        length.as_str(),
        "HEAD keeps the GET length"
    );
    let not_modified = client()
        .get(proxy.url("/"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert!(
        not_modified.headers().get("content-encoding").is_none(),
        "304"
    );
    let ranged = client()
        .get(proxy.url("/"))
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert!(ranged.headers().get("content-encoding").is_none(), "Range");
}

#[tokio::test]
async fn vary_is_merged_and_strong_etags_become_weak() {
    let origin = serving(
        json_100k(),
        "application/json",
        &[("vary", "Origin"), ("etag", "\"abc\"")],
    )
    .await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    let response = client()
        .get(proxy.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let vary: Vec<&str> = response
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vary, ["Origin", "Accept-Encoding"]);
    assert_eq!(response.headers()["etag"], "W/\"abc\"");

    let uncompressed = client()
        .get(proxy.url("/"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert!(uncompressed.headers().get("content-encoding").is_none());
    let vary: Vec<&str> = uncompressed
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        vary,
        ["Origin", "Accept-Encoding"],
        "the identity variant varies too"
    );
    assert_eq!(
        uncompressed.headers()["etag"],
        "\"abc\"",
        "an unchanged body keeps its strong ETag"
    );
}

#[tokio::test]
async fn a_gzip_backend_body_is_decoded_for_a_client_without_gzip() {
    let body = json_100k();
    let gzipped = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    let origin = serving(
        gzipped,
        "application/json",
        &[("content-encoding", "gzip"), ("etag", "\"g\"")],
    )
    .await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    for accept in [Some("br"), Some("identity"), None] {
        let mut request = client().get(proxy.url("/"));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{accept:?}"
        );
        assert_eq!(response.headers()["etag"], "W/\"g\"");
        assert_eq!(response.bytes().await.unwrap(), body, "{accept:?}");
    }
}

#[tokio::test]
async fn bodies_of_unknown_length_are_compressed_when_large_and_left_alone_when_small() {
    let origin = Origin::start(|request| async move {
        let size = if request.uri().path() == "/large" {
            100 * 1024
        } else {
            64
        };
        let chunks: Vec<Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
            (0..4)
                .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; size / 4]))))
                .collect();
        let mut response =
            Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed());
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        response
    })
    .await;
    let proxy = Proxy::start(&compressing(origin.addr, "")).await;
    let large = client()
        .get(proxy.url("/large"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(large.headers()["content-encoding"], "gzip");
    assert_eq!(
        decode("gzip", &large.bytes().await.unwrap()),
        vec![b'x'; 100 * 1024]
    );
    let small = client()
        .get(proxy.url("/small"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
    assert_eq!(small.bytes().await.unwrap(), vec![b'x'; 64]);
}

#[tokio::test]
async fn compressed_output_is_flushed_while_the_backend_stream_is_still_open() {
    let release = Arc::new(Notify::new());
    let origin = {
        let release = release.clone();
        Origin::start(move |_request| {
            let release = release.clone();
            async move {
                let first = format!("data: {}\n\n", "event ".repeat(400));
                let stream = futures_util::stream::unfold(0, move |step| {
                    let release = release.clone();
                    let first = first.clone();
                    async move {
                        match step {
                            0 => Some((
                                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                                    http_body::Frame::data(Bytes::from(first)),
                                ),
                                1,
                            )),
                            1 => {
                                release.notified().await;
                                Some((
                                    Ok(http_body::Frame::data(Bytes::from_static(
                                        b"data: last\n\n",
                                    ))),
                                    2,
                                ))
                            }
                            _ => None,
                        }
                    }
                });
                let mut response = Response::new(StreamBody::new(stream).boxed());
                response.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("text/event-stream"),
                );
                response
            }
        })
        .await
    };
    let proxy = Proxy::start(&compressing(origin.addr, "min_size = 16")).await;
    let mut response = client()
        .get(proxy.url("/events"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    // The first event must arrive, decodable, while the origin still holds the stream open.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let got_first_event = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            decoder.write_all(&chunk).unwrap();
            decoder.flush().unwrap();
            if decoder.get_ref().ends_with(b"\n\n") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        got_first_event,
        Ok(true),
        "first event flushed before the stream ended"
    );
    release.notify_one();
    while let Some(chunk) = response.chunk().await.unwrap() {
        decoder.write_all(&chunk).unwrap();
    }
    let all = decoder.finish().unwrap();
    assert!(all.ends_with(b"data: last\n\n"));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn compressed_request_bodies_are_decoded_for_the_backend() {
    let origin = Origin::start(|request| async move {
        let encoding = request
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text(
            200,
            &format!("{encoding:?} {}", String::from_utf8_lossy(&body)),
        )
    })
    .await;
    let proxy = Proxy::start(&compressing(origin.addr, "decompress_requests = true")).await;
    let response = client()
        .post(proxy.url("/upload"))
        .header("content-encoding", "gzip")
        .body(gzip(b"hello compressed world"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "None hello compressed world"
    );
}

#[tokio::test]
async fn a_request_zip_bomb_gets_413_not_an_oom() {
    let origin = Origin::echo().await;
    let proxy = Proxy::start(&compressing(
        origin.addr,
        "decompress_requests = true\nmax_decompressed_request = \"1MiB\"",
    ))
    .await;
    // 64 MiB of zeros compress to about 64 KiB.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let response = client()
        .post(proxy.url("/upload"))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}
