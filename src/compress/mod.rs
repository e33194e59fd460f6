//! Response compression (gzip, brotli, zstd) and decoding, negotiated per request.
//!
//! [`plan`] is the pure decision — compress, decode for a client that cannot read the backend's
//! coding, or leave alone — from the request's `Accept-Encoding`, method and `Range` and the
//! response's status and headers. [`apply`] carries it out on a streaming body.

pub mod codec;
pub mod negotiate;
mod stream;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

pub use codec::{Codec, Levels};
pub use negotiate::{AcceptEncoding, Encoding};
pub use stream::CodecBody;

use crate::body::{IncomingBody, ResponseBody};

/// How long a response of unknown length is read ahead to learn whether it reaches `min_size`.
/// A stream that has not reached it by then is compressed anyway (it is likely long-lived).
pub const PROBE_WINDOW: Duration = Duration::from_millis(100);

/// Compiled compression settings of a route.
#[derive(Debug, Clone)]
pub struct CompressionPolicy {
    /// Codings to offer, in server preference order.
    pub preference: Vec<Encoding>,
    /// Smallest body worth compressing.
    pub min_size: u64,
    /// Media types worth compressing.
    pub types: Vec<MediaRange>,
    /// Levels per algorithm.
    pub levels: Levels,
}

/// A media type pattern: `text/*`, `application/json`, or a structured-syntax suffix `*/*+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRange {
    /// `type/*`.
    AnySubtype(String),
    /// `type/subtype`.
    Exact(String),
    /// `*/*+suffix`: the subtype ends in `+suffix`.
    Suffix(String),
}

impl MediaRange {
    /// Parses a pattern from the config.
    pub fn parse(text: &str) -> Result<MediaRange, String> {
        let lower = text.trim().to_ascii_lowercase();
        let complaint = || {
            format!(
                "{text:?} is not a media type pattern; write \"text/*\", \"application/json\" or \"*/*+json\""
            )
        };
        let (kind, subtype) = lower.split_once('/').ok_or_else(complaint)?;
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if kind == "*" && subtype.starts_with("*+") && token(&subtype[2..]) {
            return Ok(MediaRange::Suffix(format!("+{}", &subtype[2..])));
        }
        if !token(kind) {
            return Err(complaint());
        }
        if subtype == "*" {
            return Ok(MediaRange::AnySubtype(kind.to_owned()));
        }
        if token(subtype) {
            return Ok(MediaRange::Exact(lower));
        }
        Err(complaint())
    }

    fn matches(&self, media_type: &str) -> bool {
        match self {
            MediaRange::AnySubtype(kind) => {
                media_type.split_once('/').is_some_and(|(k, _)| k == kind)
            }
            MediaRange::Exact(exact) => media_type == exact,
            MediaRange::Suffix(suffix) => media_type.ends_with(suffix.as_str()),
        }
    }
}

/// The default compressible types: text, JSON, JavaScript, XML, SVG, WebAssembly.
pub fn default_types() -> Vec<&'static str> {
    vec![
        "text/*",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/wasm",
        "image/svg+xml",
        "*/*+json",
        "*/*+xml",
    ]
}

/// What compression needs to know about the request, taken before it goes to the backend.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    accept: AcceptEncoding,
    head: bool,
    range: bool,
}

impl RequestFacts {
    /// Reads the facts from a request head.
    pub fn of(method: &Method, headers: &HeaderMap) -> Self {
        RequestFacts {
            accept: AcceptEncoding::parse(
                headers
                    .get_all(header::ACCEPT_ENCODING)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            ),
            head: method == Method::HEAD,
            range: headers.contains_key(header::RANGE),
        }
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Send it as it is.
    Pass,
    /// Send it as it is, but say it varies by `Accept-Encoding`: another client would have got
    /// it compressed, so a downstream cache must keep the variants apart.
    PassVaryingByEncoding,
    /// Compress with this coding.
    Encode(Encoding),
    /// The length is unknown: read up to `min_size` first, then compress if it is reached.
    ProbeThenEncode(Encoding),
    /// The backend used a coding the client does not accept: decode it.
    Decode(Encoding),
}

/// Decides what to do with a response. Pure.
pub fn plan(
    policy: &CompressionPolicy,
    request: &RequestFacts,
    status: StatusCode,
    headers: &HeaderMap,
) -> Plan {
    let bodiless = request.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless
        || status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return Plan::Pass;
    }
    if let Some(coding) = content_coding(headers) {
        return match coding {
            Coding::Identity => Plan::Pass,
            Coding::Supported(encoding)
                if !request.accept.accepts(encoding) && request.accept.accepts_identity() =>
            {
                Plan::Decode(encoding)
            }
            _ => Plan::Pass,
        };
    }
    if request.range || no_transform(headers) || !compressible(policy, headers) {
        return Plan::Pass;
    }
    let length = content_length(headers);
    if length.is_some_and(|l| l < policy.min_size) {
        return Plan::Pass;
    }
    let Some(encoding) = request.accept.choose(&policy.preference) else {
        return Plan::PassVaryingByEncoding;
    };
    match length {
        Some(_) => Plan::Encode(encoding),
        None => Plan::ProbeThenEncode(encoding),
    }
}

enum Coding {
    Identity,
    Supported(Encoding),
    Other,
}

/// The response's content coding, if it has a `Content-Encoding` header.
fn content_coding(headers: &HeaderMap) -> Option<Coding> {
    let mut codings = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .peekable();
    codings.peek()?;
    let all: Vec<&str> = codings.collect();
    Some(match all.as_slice() {
        [one] if one.eq_ignore_ascii_case("identity") => Coding::Identity,
        [one] => Encoding::from_token(one).map_or(Coding::Other, Coding::Supported),
        // Stacked codings are passed through untouched.
        _ => Coding::Other,
    })
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

fn compressible(policy: &CompressionPolicy, headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    policy.types.iter().any(|range| range.matches(&media_type))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Adapts headers to a body whose coding changes: new `Content-Encoding` (or none), no length,
/// no ranges, `Vary: Accept-Encoding`, and a weak ETag (the bytes differ, the meaning does not).
pub fn rewrite_headers(headers: &mut HeaderMap, encoding: Option<Encoding>) {
    match encoding {
        Some(encoding) => headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        ),
        None => headers.remove(header::CONTENT_ENCODING),
    };
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    add_vary_accept_encoding(headers);
    if let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

/// Merges `Accept-Encoding` into `Vary` unless it is already listed or `Vary` is `*`.
pub fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let listed = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|f| f == "*" || f.eq_ignore_ascii_case("accept-encoding"));
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Carries out `plan` on a backend response.
pub async fn apply(
    policy: &CompressionPolicy,
    plan: Plan,
    response: Response<IncomingBody>,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let (encoding, prefix, source) = match plan {
        Plan::Pass => return Response::from_parts(parts, ResponseBody::upstream(body)),
        Plan::PassVaryingByEncoding => {
            add_vary_accept_encoding(&mut parts.headers);
            return Response::from_parts(parts, ResponseBody::upstream(body));
        }
        Plan::Decode(encoding) => {
            let Ok(codec) = Codec::decoder(encoding) else {
                return Response::from_parts(parts, ResponseBody::upstream(body));
            };
            rewrite_headers(&mut parts.headers, None);
            return Response::from_parts(
                parts,
                ResponseBody::coded(CodecBody::new(codec, Vec::new(), Some(body))),
            );
        }
        Plan::Encode(encoding) => (encoding, Vec::new(), Some(body)),
        Plan::ProbeThenEncode(encoding) => match probe(body, policy.min_size).await {
            Probed::Small(data) => {
                // Too small to be worth it: send what was read, with its now-known length.
                add_vary_accept_encoding(&mut parts.headers);
                return Response::from_parts(parts, ResponseBody::full(data));
            }
            Probed::Large(prefix, rest) => (encoding, prefix, rest),
        },
    };
    let (encoding, codec) = match Codec::encoder(encoding, policy.levels) {
        Ok(codec) => (encoding, codec),
        Err(error) => {
            tracing::debug!(%error, %encoding, "encoder unavailable; using gzip");
            (Encoding::Gzip, Codec::gzip_encoder(policy.levels.gzip))
        }
    };
    rewrite_headers(&mut parts.headers, Some(encoding));
    Response::from_parts(
        parts,
        ResponseBody::coded(CodecBody::new(codec, prefix, source)),
    )
}

/// Carries out `plan` on a response held whole in memory (a cache hit): the stored backend
/// response is coded for this client as a streamed one would be.
pub fn apply_stored(
    policy: &CompressionPolicy,
    plan: Plan,
    response: Response<Bytes>,
) -> Response<ResponseBody> {
    let (mut parts, data) = response.into_parts();
    let codec = match plan {
        Plan::Pass => return Response::from_parts(parts, ResponseBody::full(data)),
        Plan::PassVaryingByEncoding => {
            add_vary_accept_encoding(&mut parts.headers);
            return Response::from_parts(parts, ResponseBody::full(data));
        }
        Plan::Decode(encoding) => match Codec::decoder(encoding) {
            Ok(codec) => {
                rewrite_headers(&mut parts.headers, None);
                codec
            }
            Err(_) => return Response::from_parts(parts, ResponseBody::full(data)),
        },
        Plan::Encode(encoding) | Plan::ProbeThenEncode(encoding) => {
            if (data.len() as u64) < policy.min_size {
                add_vary_accept_encoding(&mut parts.headers);
                return Response::from_parts(parts, ResponseBody::full(data));
            }
            let (encoding, codec) = match Codec::encoder(encoding, policy.levels) {
                Ok(codec) => (encoding, codec),
                Err(_) => (Encoding::Gzip, Codec::gzip_encoder(policy.levels.gzip)),
            };
            rewrite_headers(&mut parts.headers, Some(encoding));
            codec
        }
    };
    Response::from_parts(
        parts,
        ResponseBody::coded(CodecBody::new(codec, vec![data], None)),
    )
}

enum Probed {
    /// The whole body, shorter than the minimum.
    Small(Bytes),
    /// What was read, and the rest of the body (`None` if it ended).
    Large(Vec<Bytes>, Option<IncomingBody>),
}

/// Reads a body of unknown length until `min_size` bytes, its end, or [`PROBE_WINDOW`].
async fn probe(mut body: IncomingBody, min_size: u64) -> Probed {
    use http_body_util::BodyExt;
    let mut prefix = Vec::new();
    let mut read: u64 = 0;
    let deadline = tokio::time::Instant::now() + PROBE_WINDOW;
    loop {
        if read >= min_size {
            return Probed::Large(prefix, Some(body));
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Probed::Large(prefix, Some(body)),
            Ok(None) => {
                let mut all = Vec::with_capacity(read as usize);
                for chunk in &prefix {
                    all.extend_from_slice(chunk);
                }
                return Probed::Small(Bytes::from(all));
            }
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    read += data.len() as u64;
                    prefix.push(data);
                }
                // Trailers end the body; keep them by taking the streaming path.
                Err(_) => return Probed::Large(prefix, None),
            },
            Ok(Some(Err(_))) => return Probed::Large(prefix, None),
        }
    }
}

/// The request body decoding a route allows: `Content-Encoding` on requests is decoded for the
/// backend, up to `max_decoded` bytes (beyond it the client gets 413).
#[derive(Debug, Clone, Copy)]
pub struct RequestDecoding {
    /// Most bytes a decoded request body may have.
    pub max_decoded: u64,
}

/// The coding of a request body that can be decoded, if it has exactly one we support.
pub fn request_coding(headers: &HeaderMap) -> Option<Encoding> {
    match content_coding(headers)? {
        Coding::Supported(encoding) => Some(encoding),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompressionPolicy {
        CompressionPolicy {
            preference: vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip],
            min_size: 1024,
            types: default_types()
                .iter()
                .map(|t| MediaRange::parse(t).unwrap())
                .collect(),
            levels: Levels::default(),
        }
    }

    fn request(accept: &str) -> RequestFacts {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
        RequestFacts::of(&Method::GET, &headers)
    }

    fn response(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    const JSON_2K: &[(&str, &str)] = &[
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "2048"),
    ];

    #[test]
    fn compressible_responses_get_the_negotiated_coding() {
        let p = policy();
        assert_eq!(
            plan(&p, &request("gzip, br"), StatusCode::OK, &response(JSON_2K)),
            Plan::Encode(Encoding::Brotli)
        );
        assert_eq!(
            plan(
                &p,
                &request("gzip"),
                StatusCode::NOT_FOUND,
                &response(JSON_2K)
            ),
            Plan::Encode(Encoding::Gzip)
        );
        let chunked = response(&[("content-type", "text/html")]);
        assert_eq!(
            plan(&p, &request("zstd"), StatusCode::OK, &chunked),
            Plan::ProbeThenEncode(Encoding::Zstd)
        );
    }

    #[test]
    fn nothing_is_compressed_when_not_worth_it_or_not_allowed() {
        let p = policy();
        let gzip = request("gzip");
        let small = response(&[("content-type", "text/plain"), ("content-length", "100")]);
        assert_eq!(plan(&p, &gzip, StatusCode::OK, &small), Plan::Pass, "small");
        let png = response(&[("content-type", "image/png"), ("content-length", "5000")]);
        assert_eq!(
            plan(&p, &gzip, StatusCode::OK, &png),
            Plan::Pass,
            "excluded type"
        );
        let untyped = response(&[("content-length", "5000")]);
        assert_eq!(
            plan(&p, &gzip, StatusCode::OK, &untyped),
            Plan::Pass,
            "no type"
        );
        let mut no_transform = response(JSON_2K);
        no_transform.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, no-transform"),
        );
        assert_eq!(
            plan(&p, &gzip, StatusCode::OK, &no_transform),
            Plan::Pass,
            "no-transform"
        );
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::PARTIAL_CONTENT,
        ] {
            assert_eq!(
                plan(&p, &gzip, status, &response(JSON_2K)),
                Plan::Pass,
                "{status}"
            );
        }
        let mut head = gzip.clone();
        head.head = true;
        assert_eq!(
            plan(&p, &head, StatusCode::OK, &response(JSON_2K)),
            Plan::Pass,
            "HEAD"
        );
        let mut ranged = gzip.clone();
        ranged.range = true;
        assert_eq!(
            plan(&p, &ranged, StatusCode::OK, &response(JSON_2K)),
            Plan::Pass,
            "Range"
        );
        assert_eq!(
            plan(&p, &request("identity"), StatusCode::OK, &response(JSON_2K)),
            Plan::PassVaryingByEncoding,
            "identity only: not compressed, but another client would get it compressed"
        );
    }

    #[test]
    fn already_encoded_responses_pass_or_are_decoded_for_clients_without_support() {
        let p = policy();
        let mut encoded = response(JSON_2K);
        encoded.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            plan(&p, &request("gzip, br"), StatusCode::OK, &encoded),
            Plan::Pass
        );
        assert_eq!(
            plan(&p, &request("br"), StatusCode::OK, &encoded),
            Plan::Decode(Encoding::Gzip)
        );
        encoded.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("deflate"),
        );
        assert_eq!(
            plan(&p, &request("br"), StatusCode::OK, &encoded),
            Plan::Pass,
            "unknown coding passes"
        );
    }

    #[test]
    fn media_ranges_parse_and_match() {
        assert_eq!(
            MediaRange::parse("Text/*").unwrap(),
            MediaRange::AnySubtype("text".into())
        );
        assert!(
            MediaRange::parse("*/*+json")
                .unwrap()
                .matches("application/problem+json")
        );
        assert!(
            MediaRange::parse("application/json")
                .unwrap()
                .matches("application/json")
        );
        for bad in ["json", "*/*", "text/ html", "/x"] {
            assert!(MediaRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rewritten_headers_drop_length_merge_vary_and_weaken_etags() {
        let mut headers = response(&[
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("vary", "Origin"),
            ("etag", "\"abc\""),
        ]);
        rewrite_headers(&mut headers, Some(Encoding::Gzip));
        assert_eq!(headers["content-encoding"], "gzip");
        assert!(headers.get("content-length").is_none());
        assert!(headers.get("accept-ranges").is_none());
        assert_eq!(
            headers.get_all("vary").iter().collect::<Vec<_>>(),
            ["Origin", "Accept-Encoding"]
        );
        assert_eq!(headers["etag"], "W/\"abc\"");
        rewrite_headers(&mut headers, Some(Encoding::Gzip));
        assert_eq!(
            headers.get_all("vary").iter().count(),
            2,
            "Vary not duplicated"
        );
        assert_eq!(headers["etag"], "W/\"abc\"", "weak stays weak");
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// What a response's `Content-Encoding` says, as the model reads it.
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Ce {
            Absent,
            Identity,
            One(Encoding),
            Other,
        }

        #[derive(Debug, Clone)]
        struct Exchange {
            accept: Option<Vec<Vec<u8>>>,
            head: bool,
            range: bool,
            status: u16,
            /// (value, compressible)
            content_type: (Option<&'static str>, bool),
            /// (value, what it says)
            content_length: (Option<&'static str>, Option<u64>),
            content_encoding: (Option<&'static str>, Ce),
            /// (value, says no-transform)
            cache_control: (Option<&'static str>, bool),
            content_range: bool,
            preference: Vec<Encoding>,
        }

        fn accept_value() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                8 => prop::sample::select(vec![
                    "gzip", "br", "zstd", "x-gzip", "identity", "*", "deflate", ";q=0", ";q=1",
                    ";q=0.5", ";q=0.001", ";q=2", ", ", ",", " ",
                ])
                .prop_map(|p| p.as_bytes().to_vec()),
                1 => vec(0x80u8..=0xff, 1..3),
            ];
            vec(piece, 0..8).prop_map(|pieces| pieces.concat())
        }

        fn exchange() -> impl Strategy<Value = Exchange> {
            let types = vec![
                (None, false),
                (Some("application/json; charset=utf-8"), true),
                (Some("TEXT/HTML"), true),
                (Some("text/plain;charset=x"), true),
                (Some("application/problem+json"), true),
                (Some("image/svg+xml"), true),
                (Some("image/png"), false),
                (Some("application/octet-stream"), false),
                (Some("application/jsonx"), false),
                (Some("text"), false),
                (Some(""), false),
            ];
            let lengths = vec![
                (None, None),
                (Some("0"), Some(0)),
                (Some("1023"), Some(1023)),
                (Some("1024"), Some(1024)),
                (Some("4096"), Some(4096)),
                (Some("x"), None),
                (Some("99999999999999999999"), None),
            ];
            let encodings = vec![
                (None, Ce::Absent),
                (Some("gzip"), Ce::One(Encoding::Gzip)),
                (Some("BR"), Ce::One(Encoding::Brotli)),
                (Some("zstd"), Ce::One(Encoding::Zstd)),
                (Some("x-gzip"), Ce::One(Encoding::Gzip)),
                (Some("gzip,"), Ce::One(Encoding::Gzip)),
                (Some("identity"), Ce::Identity),
                (Some("deflate"), Ce::Other),
                (Some("gzip, br"), Ce::Other),
            ];
            let cache_controls = vec![
                (None, false),
                (Some("no-transform"), true),
                (Some("public, No-Transform"), true),
                (Some("no-cache"), false),
                (Some("no-transformx"), false),
            ];
            let statuses = vec![101u16, 200, 201, 204, 206, 304, 404, 500];
            let preference = (
                Just(vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip]).prop_shuffle(),
                0usize..=3,
            )
                .prop_map(|(mut all, n)| {
                    all.truncate(n);
                    all
                });
            (
                (
                    prop::option::weighted(0.9, vec(accept_value(), 1..3)),
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.1),
                    prop::sample::select(statuses),
                ),
                (
                    prop::sample::select(types),
                    prop::sample::select(lengths),
                    prop::sample::select(encodings),
                    prop::sample::select(cache_controls),
                    prop::bool::weighted(0.1),
                    preference,
                ),
            )
                .prop_map(
                    |(
                        (accept, head, range, status),
                        (
                            content_type,
                            content_length,
                            content_encoding,
                            cache_control,
                            content_range,
                            preference,
                        ),
                    )| Exchange {
                        accept,
                        head,
                        range,
                        status,
                        content_type,
                        content_length,
                        content_encoding,
                        cache_control,
                        content_range,
                        preference,
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// `plan` against the rules of docs/compression.md, with the client's wishes read by
            /// `AcceptEncoding` from the same field values: a response is compressed only with
            /// an offered coding the client takes, only when it has a body Gatehouse may
            /// transform; decoded only for a client that takes identity but not its coding.
            #[test]
            fn plans_follow_the_documented_rules(x in exchange()) {
                let mut request_headers = HeaderMap::new();
                for value in x.accept.iter().flatten() {
                    if let Ok(value) = HeaderValue::from_bytes(value) {
                        request_headers.append(header::ACCEPT_ENCODING, value);
                    }
                }
                let method = if x.head { Method::HEAD } else { Method::GET };
                if x.range {
                    request_headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
                }
                let facts = RequestFacts::of(&method, &request_headers);
                let accept = AcceptEncoding::parse(
                    request_headers
                        .get_all(header::ACCEPT_ENCODING)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                let mut headers = HeaderMap::new();
                let mut set = |name, value: Option<&'static str>| {
                    if let Some(value) = value {
                        headers.insert(name, HeaderValue::from_static(value));
                    }
                };
                set(header::CONTENT_TYPE, x.content_type.0);
                set(header::CONTENT_LENGTH, x.content_length.0);
                set(header::CONTENT_ENCODING, x.content_encoding.0);
                set(header::CACHE_CONTROL, x.cache_control.0);
                set(header::CONTENT_RANGE, x.content_range.then_some("bytes 0-1/2"));
                let mut policy = policy();
                policy.preference = x.preference.clone();
                let status = StatusCode::from_u16(x.status).expect("a status");

                let bodiless = x.head || matches!(x.status, 101 | 204 | 304);
                let expected = if bodiless || x.status == 206 || x.content_range {
                    Plan::Pass
                } else if x.content_encoding.1 != Ce::Absent {
                    match x.content_encoding.1 {
                        Ce::One(e) if !accept.accepts(e) && accept.accepts_identity() => {
                            Plan::Decode(e)
                        }
                        _ => Plan::Pass,
                    }
                } else if x.range
                    || x.cache_control.1
                    || !x.content_type.1
                    || x.content_length.1.is_some_and(|l| l < policy.min_size)
                {
                    Plan::Pass
                } else {
                    match accept.choose(&x.preference) {
                        None => Plan::PassVaryingByEncoding,
                        Some(e) if x.content_length.1.is_some() => Plan::Encode(e),
                        Some(e) => Plan::ProbeThenEncode(e),
                    }
                };
                let planned = plan(&policy, &facts, status, &headers);
                prop_assert_eq!(planned, expected, "{:?}", x);
                if let Plan::Encode(e) | Plan::ProbeThenEncode(e) = planned {
                    prop_assert!(x.preference.contains(&e) && accept.quality(e.token()) > 0);
                }
            }

            /// Rewritten headers carry the new coding and no length or ranges, list
            /// `Accept-Encoding` in `Vary` once (none added to `Vary: *`), weaken a strong ETag
            /// and keep a weak one; rewriting twice changes nothing more.
            #[test]
            fn rewritten_headers_are_consistent_and_rewriting_is_idempotent(
                varies in vec(
                    prop::sample::select(vec![
                        "Origin",
                        "accept-encoding",
                        "ACCEPT-ENCODING",
                        "*",
                        "Origin, Accept-Encoding",
                        "Cookie,Accept-Language", "",
                    ]),
                    0..3,
                ),
                etag in prop::sample::select(vec![
                    None,
                    Some("\"a\""),
                    Some("W/\"a\""),
                    Some("\"\""),
                ]),
                length in any::<bool>(),
                ranges in any::<bool>(),
                encoding in prop::option::of(prop::sample::select(vec![
                    Encoding::Gzip, Encoding::Brotli, Encoding::Zstd,
                ])),
                had_encoding in any::<bool>(),
            ) {
                let mut headers = HeaderMap::new();
                for vary in &varies {
                    headers.append(header::VARY, HeaderValue::from_static(vary));
                }
                if let Some(etag) = etag {
                    headers.insert(header::ETAG, HeaderValue::from_static(etag));
                }
                if length {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5000"));
                }
                if ranges {
                    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                }
                if had_encoding {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                rewrite_headers(&mut headers, encoding);
                let once = headers.clone();
                rewrite_headers(&mut headers, encoding);
                prop_assert_eq!(&headers, &once, "not idempotent");

                prop_assert_eq!(
                    headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()),
                    encoding.map(Encoding::token)
                );
                prop_assert!(!headers.contains_key(header::CONTENT_LENGTH));
                prop_assert!(!headers.contains_key(header::ACCEPT_RANGES));
                let members: Vec<String> = headers
                    .get_all(header::VARY)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(|m| m.trim().to_ascii_lowercase())
                    .filter(|m| !m.is_empty())
                    .collect();
                let star = varies.iter().any(|v| v.trim() == "*");
                let listed_before = varies
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter(|m| m.trim().eq_ignore_ascii_case("accept-encoding"))
                    .count();
                let listed = members.iter().filter(|m| *m == "accept-encoding").count();
                if star {
                    prop_assert_eq!(listed, listed_before, "added to Vary: *");
                } else {
                    prop_assert_eq!(listed, listed_before.max(1), "{:?}", members);
                }
                let expected_etag = etag.map(|e| {
                    if e.starts_with("W/") { e.to_owned() } else { format!("W/{e}") }
                });
                prop_assert_eq!(
                    headers.get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned),
                    expected_etag
                );
            }
        }
    }
}
