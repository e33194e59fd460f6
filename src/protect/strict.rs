//! Strict request checks and path normalisation: what hyper's parser lets through but a proxy
//! must not pass on.
//!
//! A proxy and the backend behind it each read the request. Wherever the two could read it
//! differently — where a body ends, which host it is for, which path it names — an attacker can
//! hide a second request inside the first (request smuggling) or reach a path a route was meant
//! to guard. This module removes that room: [`check_request`] refuses ambiguous framing and host
//! information (RFC 9112 §6.1 and §6.3, RFC 9110 §7.2 and §8.6), and [`normalize_path`] gives
//! every path a single spelling (RFC 3986 §5.2.4 and §6.2.2) before routing sees it, so the
//! route chosen and the path the backend receives are the same path. Paths whose meaning depends
//! on who decodes them are refused rather than guessed.
//!
//! Both are pure functions over borrowed data: no I/O, no panics on any input, and no allocation
//! for an ordinary request.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Request, Version};

/// Refuses a request whose framing or host information a backend could read differently from
/// the proxy; the error names the reason (for a `400 Bad Request`).
///
/// Refused:
/// - `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.3 rule 3);
/// - more than one `Content-Length` value, on several lines or as a comma list, even when the
///   values are equal (RFC 9110 §8.6 allows refusing; a single value is never ambiguous);
/// - a `Content-Length` that is not one non-empty run of ASCII digits fitting in a `u64`;
/// - `Transfer-Encoding` that is anything but exactly `chunked` (one coding, once), or that
///   appears outside HTTP/1.1. RFC 9112 §6.1 suggests `501` for an unknown coding; this stays a
///   `400`, as hyper answers the codings it refuses itself;
/// - more than one `Host`, or a `Host` with userinfo (`@`), whitespace or control bytes;
/// - a request target with an authority (absolute-form, or HTTP/2 `:authority`) that holds
///   userinfo or names another host or port than `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1). Names
///   compare case-insensitively, a trailing dot ignored; a missing port is the scheme's default
///   (`http` 80, `https` 443).
pub fn check_request<B>(request: &Request<B>) -> Result<(), &'static str> {
    let headers = request.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    let framing = Framing {
        host: hosts.next(),
        more_hosts: hosts.next().is_some(),
        content_length: true,
        transfer_encoding: true,
    };
    check_request_with(request, framing)
}

/// What a caller of [`check_request_with`] already knows about the request's headers, so that
/// nothing is looked up twice (each lookup hashes the name).
#[derive(Debug, Clone, Copy)]
pub struct Framing<'a> {
    /// The first `Host` line.
    pub host: Option<&'a HeaderValue>,
    /// There is more than one `Host` line.
    pub more_hosts: bool,
    /// The request may have `Content-Length` (false only when it surely has none).
    pub content_length: bool,
    /// The request may have `Transfer-Encoding` (false only when it surely has none).
    pub transfer_encoding: bool,
}

/// [`check_request`] with the `Host` lines already found and the framing headers known to be
/// absent where `framing` says so.
pub fn check_request_with<B>(
    request: &Request<B>,
    framing: Framing<'_>,
) -> Result<(), &'static str> {
    let headers = request.headers();
    let has_length = framing.content_length
        && check_content_length(headers.get_all(header::CONTENT_LENGTH).iter())?;
    let has_coding = framing.transfer_encoding
        && check_transfer_encoding(
            headers.get_all(header::TRANSFER_ENCODING).iter(),
            request.version(),
        )?;
    if has_length && has_coding {
        return Err("both Content-Length and Transfer-Encoding");
    }

    let host = framing.host;
    if framing.more_hosts {
        return Err("more than one Host header");
    }
    if let Some(host) = host
        && host
            .as_bytes()
            .iter()
            .any(|&b| b == b'@' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("Host with userinfo, whitespace or control bytes");
    }

    if let Some(authority) = request.uri().authority() {
        if authority.as_str().contains('@') {
            return Err("userinfo in the request target");
        }
        if let Some(host) = host {
            let default_port = match request.uri().scheme_str() {
                Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
                Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
                _ => None,
            };
            let target = split_host_port(authority.as_str())
                .ok_or("invalid authority in the request target")?;
            let host = host
                .to_str()
                .ok()
                .and_then(split_host_port)
                .ok_or("invalid Host header")?;
            if !same_host_name(target.0, host.0)
                || target.1.or(default_port) != host.1.or(default_port)
            {
                return Err("request target and Host name different hosts");
            }
        }
    }
    Ok(())
}

/// Checks every `Content-Length` line; true when there is one (valid) value.
fn check_content_length<'a>(
    mut values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<bool, &'static str> {
    let Some(first) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some() {
        return Err("more than one Content-Length");
    }
    let bytes = first.as_bytes();
    if bytes.contains(&b',') {
        return Err("more than one Content-Length");
    }
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err("Content-Length is not a number");
    }
    // Digits only, so this parse differs from a plain digit check only by overflow.
    match std::str::from_utf8(bytes).map(str::parse::<u64>) {
        Ok(Ok(_)) => Ok(true),
        _ => Err("Content-Length is too large"),
    }
}

/// Checks the `Transfer-Encoding` lines as one list; true when the request is chunked.
fn check_transfer_encoding<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
    version: Version,
) -> Result<bool, &'static str> {
    let mut codings = 0usize;
    for value in values {
        if version != Version::HTTP_11 {
            return Err("Transfer-Encoding outside HTTP/1.1");
        }
        for coding in value.as_bytes().split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            codings += 1;
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return Err("Transfer-Encoding other than chunked");
            }
        }
    }
    match codings {
        0 => Ok(false),
        1 => Ok(true),
        // `chunked, chunked`: a body chunked twice is read once by some and twice by others.
        _ => Err("Transfer-Encoding other than chunked"),
    }
}

/// Whether two host names (as [`split_host_port`] gives them) name the same host: names compare
/// without regard to case, IPv6 literals by address (`[::1]` and `[0:0::1]` are one host).
fn same_host_name(a: &str, b: &str) -> bool {
    let literal = |name: &str| {
        name.strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .and_then(|n| n.parse::<std::net::Ipv6Addr>().ok())
    };
    match (literal(a), literal(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Splits `host[:port]` (or `[v6]:port`) into its name, without a trailing dot, and port.
/// An empty port (`host:`) is no port (RFC 3986 §3.2.3). `None` if the port is not a number.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (name, rest) = if text.starts_with('[') {
        let end = text.find(']')?;
        text.split_at(end + 1)
    } else {
        match text.rfind(':') {
            Some(colon) => text.split_at(colon),
            None => (text, ""),
        }
    };
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some("") => None,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.parse().ok()?),
        Some(_) => return None,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some((name, port))
}

/// Gives a request path (no query) a single spelling, or refuses it.
///
/// - Dot segments are resolved as RFC 3986 §5.2.4 `remove_dot_segments` does, with
///   percent-encoded dots (`%2e`, `%2E`) read as dots, so `/admin/%2e%2e/x` is `/x`.
/// - Percent-encoded unreserved characters (letters, digits, `-._~`) are decoded (RFC 3986
///   §6.2.2.2: the URIs are equivalent), so `/%61dmin` is routed as the `/admin` it is for.
///   Other escapes are kept as sent.
/// - With `merge_slashes`, runs of `/` become one (as nginx's `merge_slashes`), before dot
///   segments are resolved.
///
/// Refused (`Err`), because proxy and backend could disagree on what the path names:
/// - `%2F` (encoded `/`), `\` and `%5C`: some backends decode or translate them into a segment
///   separator after the proxy has routed, so `/public%2f..%2fadmin` or `/public\..\admin` would
///   reach a path no route allowed. Refusing is the only reading both sides share;
/// - `%00`: a NUL ends the path for backends written in C and not for others;
/// - a `%` not followed by two hex digits;
/// - a `.` or `..` segment carrying `;` parameters (`/..;/admin`): Java servlet containers strip
///   the parameters and then resolve the dots;
/// - a `..` that would climb above the root (`/../x`): RFC 3986 clamps it at the root, but such
///   a path is never sent by an honest client, and nginx answers it with 400 too.
///
/// `""` and `"*"` (the `OPTIONS *` target) are returned as they are. Returns
/// [`Cow::Borrowed`] whenever the result equals the input, so ordinary paths do not allocate.
pub fn normalize_path(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return if path.is_empty() || path == "*" {
            Ok(Cow::Borrowed(path))
        } else {
            Err("request path does not start with /")
        };
    };
    if is_plain(rest, merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }

    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut segments = rest.split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let segment = decode_segment(raw)?;
        match segment.as_ref() {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err("path climbs above the root");
                }
            }
            "" if merge_slashes && !last => continue,
            other if is_dot_with_params(other) => {
                return Err("dot segment with parameters in the path");
            }
            _ => {
                out.push(segment);
                continue;
            }
        }
        // A path ending in a dot segment names a directory: keep its trailing slash.
        if last {
            out.push(Cow::Borrowed(""));
        }
    }

    let mut normalized = String::with_capacity(path.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok(if normalized == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalized)
    })
}

/// True when the path after its leading `/` needs no work: no escapes, no backslash, no dot
/// segment and (when merging) no empty segment before the last.
fn is_plain(rest: &str, merge_slashes: bool) -> bool {
    if rest.bytes().any(|b| b == b'%' || b == b'\\') {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if matches!(segment.split(';').next(), Some("." | "..")) {
            return false;
        }
        if merge_slashes && segment.is_empty() && segments.peek().is_some() {
            return false;
        }
    }
    true
}

/// `.;x` or `..;x`.
fn is_dot_with_params(segment: &str) -> bool {
    segment.contains(';') && matches!(segment.split(';').next(), Some("." | ".."))
}

/// Decodes the escapes of unreserved characters in one segment; refuses `\`, malformed escapes
/// and escapes of `/`, `\` and NUL. Borrows when nothing is decoded.
fn decode_segment(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    if raw.contains('\\') {
        return Err("backslash in the path");
    }
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded: Option<String> = None;
    // Start of the bytes not yet copied into `decoded`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let value = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&high), Some(&low)) => match (hex_value(high), hex_value(low)) {
                (Some(high), Some(low)) => high * 16 + low,
                _ => return Err("malformed percent-encoding in the path"),
            },
            _ => return Err("malformed percent-encoding in the path"),
        };
        match value {
            b'/' => return Err("encoded slash in the path"),
            b'\\' => return Err("encoded backslash in the path"),
            0 => return Err("encoded NUL in the path"),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                let out = decoded.get_or_insert_with(|| String::with_capacity(raw.len()));
                // `i` is at an ASCII `%`, so both ends are character boundaries.
                out.push_str(raw.get(copied..i).unwrap_or_default());
                out.push(char::from(b));
                copied = i + 3;
            }
            _ => {}
        }
        i += 3;
    }
    Ok(match decoded {
        Some(mut out) => {
            out.push_str(raw.get(copied..).unwrap_or_default());
            Cow::Owned(out)
        }
        None => Cow::Borrowed(raw),
    })
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, headers: &[(&str, &[u8])]) -> Request<()> {
        let mut request = Request::builder()
            .version(version)
            .uri(target)
            .body(())
            .expect("request");
        for (name, value) in headers {
            request.headers_mut().append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        request
    }

    fn check(target: &str, headers: &[(&str, &[u8])]) -> Result<(), &'static str> {
        check_request(&request(Version::HTTP_11, target, headers))
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(check("/", &[("host", b"a.test")]), Ok(()));
        assert_eq!(
            check(
                "/upload?x=1",
                &[("host", b"a.test:8080"), ("content-length", b"42")]
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "/",
                &[("host", b"a.test"), ("transfer-encoding", b"chunked")]
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "/",
                &[("host", b"a.test"), ("transfer-encoding", b" Chunked ")]
            ),
            Ok(())
        );
        assert_eq!(check("/", &[("host", b"[::1]:8080")]), Ok(()));
        assert_eq!(check("/", &[("content-length", b"0")]), Ok(()));
        // Leading zeros are still digits.
        assert_eq!(check("/", &[("content-length", b"007")]), Ok(()));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        for (first, second) in [
            (
                ("content-length", &b"5"[..]),
                ("transfer-encoding", &b"chunked"[..]),
            ),
            (("transfer-encoding", b"chunked"), ("content-length", b"5")),
        ] {
            assert_eq!(
                check("/", &[("host", b"a.test"), first, second]),
                Err("both Content-Length and Transfer-Encoding")
            );
        }
    }

    #[test]
    fn several_content_lengths_are_refused_even_when_equal() {
        for headers in [
            &[("content-length", &b"3"[..]), ("content-length", b"4")][..],
            &[("content-length", b"3"), ("content-length", b"3")],
            &[("content-length", b"3, 4")],
            &[("content-length", b"3,3")],
            &[("content-length", b"3 , 3")],
        ] {
            assert_eq!(
                check("/", headers),
                Err("more than one Content-Length"),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn a_content_length_that_is_not_digits_is_refused() {
        for value in [
            &b""[..],
            b"+3",
            b"-1",
            b"3 ",
            b" 3",
            b"0x10",
            b"3.0",
            b"1e3",
            b"x",
            b"\xd9\xa3",
        ] {
            assert_eq!(
                check("/", &[("content-length", value)]),
                Err("Content-Length is not a number"),
                "{value:?}"
            );
        }
        assert_eq!(
            check("/", &[("content-length", b"99999999999999999999999")]),
            Err("Content-Length is too large")
        );
        assert_eq!(
            check("/", &[("content-length", b"18446744073709551615")]),
            Ok(())
        );
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        for headers in [
            &[("transfer-encoding", &b"gzip"[..])][..],
            &[("transfer-encoding", b"gzip, chunked")],
            &[("transfer-encoding", b"chunked, gzip")],
            &[("transfer-encoding", b"chunked, chunked")],
            &[
                ("transfer-encoding", b"chunked"),
                ("transfer-encoding", b"chunked"),
            ],
            &[
                ("transfer-encoding", b"gzip"),
                ("transfer-encoding", b"chunked"),
            ],
            &[("transfer-encoding", b"chunked;q=1")],
            &[("transfer-encoding", b"chunked,")],
            &[("transfer-encoding", b", chunked")],
            &[("transfer-encoding", b"")],
            &[("transfer-encoding", b"identity")],
            &[("transfer-encoding", b"xchunked")],
        ] {
            assert_eq!(
                check("/", headers),
                Err("Transfer-Encoding other than chunked"),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_outside_http_1_1_is_refused() {
        for version in [Version::HTTP_10, Version::HTTP_2] {
            assert_eq!(
                check_request(&request(version, "/", &[("transfer-encoding", b"chunked")])),
                Err("Transfer-Encoding outside HTTP/1.1"),
                "{version:?}"
            );
        }
    }

    #[test]
    fn bad_hosts_are_refused() {
        for host in [
            &b"user@a.test"[..],
            b"@a.test",
            b"a.test @b.test",
            b"a .test",
            b"a\t.test",
            b"a.test\t",
        ] {
            assert_eq!(
                check("/", &[("host", host)]),
                Err("Host with userinfo, whitespace or control bytes"),
                "{host:?}"
            );
        }
        assert_eq!(
            check("/", &[("host", b"a.test"), ("host", b"a.test")]),
            Err("more than one Host header")
        );
    }

    #[test]
    fn an_absolute_form_target_must_name_the_host_it_is_sent_with() {
        // Same host: case, default ports and a trailing dot do not matter.
        for (target, host) in [
            ("http://a.test/x", &b"a.test"[..]),
            ("http://A.Test/x", b"a.TEST"),
            ("http://a.test:80/x", b"a.test"),
            ("http://a.test/x", b"a.test:80"),
            ("http://a.test:/x", b"a.test"),
            ("https://a.test/x", b"a.test:443"),
            ("https://a.test:443/x", b"a.test"),
            ("http://a.test:8080/x", b"a.test:8080"),
            ("http://a.test./x", b"a.test"),
            ("http://[::1]:8080/x", b"[::1]:8080"),
            ("http://[::1]/x", b"[::1]:80"),
            // One address, spelled two ways (RFC 4291 §2.2): the same host.
            ("http://[::1]/x", b"[0:0::1]"),
            ("http://[2001:DB8::1]/x", b"[2001:db8:0:0::1]"),
        ] {
            assert_eq!(
                check(target, &[("host", host)]),
                Ok(()),
                "{target} {host:?}"
            );
        }
        // Without a Host the target alone names the host (the missing Host is not ours to judge).
        assert_eq!(check("http://a.test/x", &[]), Ok(()));

        for (target, host) in [
            ("http://a.test/x", &b"b.test"[..]),
            ("http://a.test:8080/x", b"b.test"),
            ("http://a.test:8080/x", b"a.test"),
            ("http://a.test/x", b"a.test:8080"),
            ("http://a.test/x", b"a.test:443"),
            ("https://a.test/x", b"a.test:80"),
            ("http://a.test/x", b"a.test.evil"),
            ("http://[::1]/x", b"[::2]"),
        ] {
            assert_eq!(
                check(target, &[("host", host)]),
                Err("request target and Host name different hosts"),
                "{target} {host:?}"
            );
        }
        assert_eq!(
            check("http://a.test/x", &[("host", b"a.test:http")]),
            Err("invalid Host header")
        );
        assert_eq!(
            check("http://a.test/x", &[("host", b"a.test:99999")]),
            Err("invalid Host header")
        );
        assert_eq!(
            check("http://u@a.test/x", &[("host", b"a.test")]),
            Err("userinfo in the request target")
        );
        // HTTP/2: `:authority` and a differing `Host` (RFC 9113 §8.3.1).
        assert_eq!(
            check_request(&request(
                Version::HTTP_2,
                "https://a.test/x",
                &[("host", b"b.test")]
            )),
            Err("request target and Host name different hosts")
        );
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("a.test"), Some(("a.test", None)));
        assert_eq!(split_host_port("a.test:81"), Some(("a.test", Some(81))));
        assert_eq!(split_host_port("a.test:"), Some(("a.test", None)));
        assert_eq!(split_host_port("[::1]:81"), Some(("[::1]", Some(81))));
        assert_eq!(split_host_port("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_host_port("[::1"), None);
        assert_eq!(split_host_port("[::1]x"), None);
        assert_eq!(split_host_port("a.test:+1"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("."), None);
        assert_eq!(split_host_port(""), None);
    }

    fn normal(path: &str) -> Result<Cow<'_, str>, &'static str> {
        normalize_path(path, false)
    }

    fn merged(path: &str) -> Result<Cow<'_, str>, &'static str> {
        normalize_path(path, true)
    }

    #[test]
    fn ordinary_paths_are_borrowed() {
        for path in [
            "/",
            "/a",
            "/a/b/c",
            "/a/b/",
            "/a.b/c..d/.e/..f/...",
            "/a;b=c/d",
            "/é/ü",
            "/a%20b",
            "/a%2Bb",
            "/%E2%82%AC",
            "*",
            "",
        ] {
            for merge in [false, true] {
                let result = normalize_path(path, merge);
                assert!(
                    matches!(result, Ok(Cow::Borrowed(p)) if p == path),
                    "{path} merge={merge}: {result:?}"
                );
            }
        }
        // Without merging, doubled slashes are left to the backend.
        assert!(matches!(normal("//a//b"), Ok(Cow::Borrowed("//a//b"))));
    }

    #[test]
    fn dot_segments_are_resolved() {
        for (path, expected) in [
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/./../c", "/a/c"),
            ("/a/b/c/../../d", "/a/d"),
            ("/./a", "/a"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/./", "/a/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/b/../../c/./d/", "/c/d/"),
            // Without merging, an empty segment is a segment: `..` removes it.
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(normal(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn percent_encoded_dots_are_dots() {
        for (path, expected) in [
            ("/a/%2e%2e/c", "/c"),
            ("/a/%2E./c", "/c"),
            ("/a/.%2E/c", "/c"),
            ("/a/%2E%2e/c", "/c"),
            ("/a/%2e/c", "/a/c"),
            ("/admin/%2e%2e/public", "/public"),
            ("/a/b/%2e%2e", "/a/"),
            ("/a/%2e", "/a/"),
            // Not a dot segment once decoded: just decoded.
            ("/a/%2e%2e%2e/c", "/a/.../c"),
            ("/a%2eb", "/a.b"),
        ] {
            assert_eq!(normal(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept() {
        for (path, expected) in [
            ("/%61dmin/x", "/admin/x"),
            ("/%41%5a%30%2D%5F%7E", "/AZ0-_~"),
            ("/a%20b/%2e%2e/c%3F", "/c%3F"),
            ("/%e2%82%ac/%61", "/%e2%82%ac/a"),
        ] {
            assert_eq!(normal(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in [
            "/..",
            "/../",
            "/../x",
            "/a/../..",
            "/a/../../b",
            "/./../a",
            "/%2e%2e/a",
            "/a/%2E%2E/%2e./b",
        ] {
            for merge in [false, true] {
                assert_eq!(
                    normalize_path(path, merge),
                    Err("path climbs above the root"),
                    "{path} merge={merge}"
                );
            }
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, reason) in [
            ("/a%2fb", "encoded slash in the path"),
            ("/a%2Fb", "encoded slash in the path"),
            ("/a/%2e%2e%2fadmin", "encoded slash in the path"),
            ("/a\\b", "backslash in the path"),
            ("/public\\..\\admin", "backslash in the path"),
            ("/a%5cb", "encoded backslash in the path"),
            ("/a%5Cb", "encoded backslash in the path"),
            ("/a%00b", "encoded NUL in the path"),
            ("/a%", "malformed percent-encoding in the path"),
            ("/a%2", "malformed percent-encoding in the path"),
            ("/a%zz", "malformed percent-encoding in the path"),
            ("/a%%30", "malformed percent-encoding in the path"),
            ("/a%é", "malformed percent-encoding in the path"),
            (
                "/public/..;/admin",
                "dot segment with parameters in the path",
            ),
            ("/.;x/admin", "dot segment with parameters in the path"),
            (
                "/a/%2e%2e;jsessionid=1/b",
                "dot segment with parameters in the path",
            ),
            ("a/b", "request path does not start with /"),
        ] {
            for merge in [false, true] {
                assert_eq!(normalize_path(path, merge), Err(reason), "{path}");
            }
        }
    }

    #[test]
    fn slashes_are_merged_only_when_asked() {
        for (path, plain, with_merge) in [
            ("//a//b", "//a//b", "/a/b"),
            ("//", "//", "/"),
            ("///", "///", "/"),
            ("/a//", "/a//", "/a/"),
            ("/a///b/", "/a///b/", "/a/b/"),
            // Merged first, then resolved: as a backend that merges slashes reads it.
            ("/a//../b", "/a/b", "/b"),
            ("//./a", "//a", "/a"),
        ] {
            assert_eq!(normal(path).as_deref(), Ok(plain), "{path}");
            assert_eq!(merged(path).as_deref(), Ok(with_merge), "{path} merged");
        }
    }

    /// The properties every normalised path has.
    fn assert_normal(input: &str, output: &str, merge: bool) {
        let context = || format!("{input:?} -> {output:?} (merge={merge})");
        assert!(output.starts_with('/'), "{}", context());
        assert!(output.len() <= input.len(), "{}", context());
        let segments: Vec<&str> = output[1..].split('/').collect();
        assert!(
            !segments.iter().any(|s| *s == "." || *s == ".."),
            "{}",
            context()
        );
        assert!(
            !output.contains("/./") && !output.contains("/../"),
            "{}",
            context()
        );
        let lower = output.to_ascii_lowercase();
        for escape in ["%2e", "%2f", "%5c", "%00", "\\"] {
            assert!(!lower.contains(escape), "{}", context());
        }
        if merge {
            assert!(!output.contains("//"), "{}", context());
        }
        // Normalising again changes nothing, and borrows.
        assert!(
            matches!(normalize_path(output, merge), Ok(Cow::Borrowed(again)) if again == output),
            "{}",
            context()
        );
    }

    const PIECES: [&str; 20] = [
        "/", "a", "b", ".", "..", "%2e", "%2E", "%2f", "%5c", "%00", "%", "%4", "%41", "%20", "\\",
        ";", "é", "//", "~", "x.y",
    ];

    fn check_generated(path: &str) {
        for merge in [false, true] {
            if let Ok(output) = normalize_path(path, merge) {
                assert_normal(path, &output, merge);
            }
        }
    }

    #[test]
    fn every_short_combination_of_pieces_normalises_soundly() {
        // Every path of up to four pieces after the leading slash: 20^4 + ... ≈ 170 000 paths.
        let mut stack: Vec<usize> = Vec::new();
        loop {
            let mut path = String::from("/");
            for &piece in &stack {
                path.push_str(PIECES[piece]);
            }
            check_generated(&path);
            // Next combination, shortest first, as an odometer.
            if stack.len() < 4 {
                stack.push(0);
                continue;
            }
            while let Some(top) = stack.pop() {
                if top + 1 < PIECES.len() {
                    stack.push(top + 1);
                    break;
                }
            }
            if stack.is_empty() {
                break;
            }
        }
    }

    #[test]
    fn long_random_paths_normalise_soundly() {
        let mut rng = fastrand::Rng::with_seed(0x6a7e_4053);
        for _ in 0..50_000 {
            let mut path = String::from("/");
            for _ in 0..rng.usize(0..24) {
                path.push_str(PIECES[rng.usize(0..PIECES.len())]);
            }
            check_generated(&path);
        }
        // Arbitrary characters, arbitrary bytes turned into text: no panic, sound results.
        for _ in 0..20_000 {
            let path: String = std::iter::once('/')
                .chain((0..rng.usize(0..16)).map(|_| match rng.u8(0..4) {
                    0 => '/',
                    1 => '.',
                    2 => '%',
                    _ => rng.char(..),
                }))
                .collect();
            check_generated(&path);
            let _ = normalize_path(&path[1..], false);
        }
    }

    /// Random requests against simple models: the framing rules as RFC 9110 and 9112 state
    /// them, the host comparison of a target with its `Host`, RFC 3986 `remove_dot_segments`;
    /// and an answer, never a panic, for any bytes.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// A byte a field value may hold: visible ASCII, space, tab and obs-text.
        fn field_byte() -> impl Strategy<Value = u8> {
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 2 => 0x80u8..=0xff]
        }

        fn values(of: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<HeaderValue>> {
            vec(
                of.prop_map(|v| HeaderValue::from_bytes(&v).expect("a field value")),
                0..3,
            )
        }

        fn content_length_value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                "[0-9]{1,6}",
                "0{0,25}[0-9]{1,21}",
                "[0-9]{1,3}[ ,]{1,2}[0-9]{1,3}",
                "[0-9 ,+x.-]{0,6}",
            ]
            .prop_map(String::into_bytes)
        }

        /// The model of `check_content_length`: one line holding one value, a run of digits no
        /// larger than a `u64`.
        fn model_content_length(values: &[HeaderValue]) -> Result<bool, &'static str> {
            let [value] = values else {
                return if values.is_empty() {
                    Ok(false)
                } else {
                    Err("more than one Content-Length")
                };
            };
            let text = value.as_bytes();
            if text.contains(&b',') {
                return Err("more than one Content-Length");
            }
            if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
                return Err("Content-Length is not a number");
            }
            let text = value.to_str().unwrap_or_default();
            let significant = text.trim_start_matches('0');
            match significant.len() <= 20
                && significant.parse::<u128>().unwrap_or(0) <= u128::from(u64::MAX)
            {
                true => Ok(true),
                false => Err("Content-Length is too large"),
            }
        }

        fn transfer_encoding_value() -> impl Strategy<Value = Vec<u8>> {
            let coding = prop::sample::select(vec![
                "chunked",
                "Chunked",
                "CHUNKED",
                " chunked\t",
                "gzip",
                "identity",
                "",
                " ",
                "chunked;q=1",
                "xchunked",
            ]);
            (vec(coding, 1..3), prop::bool::ANY).prop_map(|(codings, spaced)| {
                codings.join(if spaced { ", " } else { "," }).into_bytes()
            })
        }

        /// The model of `check_transfer_encoding`: over all lines, exactly one coding, `chunked`,
        /// and only in HTTP/1.1.
        fn model_transfer_encoding(
            values: &[HeaderValue],
            version: Version,
        ) -> Result<bool, &'static str> {
            if values.is_empty() {
                return Ok(false);
            }
            if version != Version::HTTP_11 {
                return Err("Transfer-Encoding outside HTTP/1.1");
            }
            let codings: Vec<&[u8]> = values
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(|c| c.trim_ascii())
                .collect();
            match codings.as_slice() {
                [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(true),
                _ => Err("Transfer-Encoding other than chunked"),
            }
        }

        /// Host names in a few spellings of a few hosts, so that equal and different hosts are
        /// both common.
        fn host_name() -> impl Strategy<Value = String> {
            let name = prop::sample::select(vec![
                "a.test",
                "b.test",
                "a.test.evil",
                "xn--d1a.test",
                "127.0.0.1",
                "[::1]",
                "[0:0::1]",
                "[0000:0:0:0:0:0:0:1]",
                "[2001:db8::1]",
                "[2001:DB8:0::1]",
                "[2001:db8::2]",
            ]);
            (name, vec(any::<bool>(), 16), any::<bool>()).prop_map(|(name, upper, dot)| {
                let mut text: String = name
                    .chars()
                    .zip(upper.into_iter().chain(std::iter::repeat(false)))
                    .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                    .collect();
                if dot && !text.ends_with(']') {
                    text.push('.');
                }
                text
            })
        }

        /// A port as written after a host: none, empty, a number (maybe zero-padded).
        fn port_text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just(":".to_owned()),
                prop::sample::select(vec![80u16, 443, 8080]).prop_map(|p| format!(":{p}")),
                any::<u16>().prop_map(|p| format!(":{p}")),
                any::<u16>().prop_map(|p| format!(":00{p}")),
            ]
        }

        /// What a host-and-port means: the name without its trailing dot, in lower case, and
        /// the port with the scheme's default for none.
        fn model_host(text: &str, port: &str, default: Option<u16>) -> (String, Option<u16>) {
            let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
            // An IPv6 literal is its address, however it is spelled (RFC 4291 §2.2).
            let name = match name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .and_then(|n| n.parse::<std::net::Ipv6Addr>().ok())
            {
                Some(address) => format!("[{address}]"),
                None => name,
            };
            let port = match port.strip_prefix(':') {
                Some(digits) if !digits.is_empty() => digits.parse().ok(),
                _ => None,
            };
            (name, port.or(default))
        }

        /// RFC 3986 §5.2.4 `remove_dot_segments`, as written there (on a path that starts with
        /// `/`), except that a `..` with nothing left to remove refuses the path.
        fn remove_dot_segments(path: &str) -> Result<String, ()> {
            let mut input = path.to_owned();
            let mut output = String::new();
            while !input.is_empty() {
                if input.starts_with("/./") || input == "/." {
                    input.replace_range(..2, "");
                    if input.is_empty() {
                        input.push('/');
                    }
                } else if input.starts_with("/../") || input == "/.." {
                    if output.is_empty() {
                        return Err(());
                    }
                    input.replace_range(..3, "");
                    if input.is_empty() {
                        input.push('/');
                    }
                    output.truncate(output.rfind('/').unwrap_or(0));
                } else {
                    // Move the first segment, with its leading `/`, to the output.
                    let end = input
                        .char_indices()
                        .skip(1)
                        .find(|&(_, c)| c == '/')
                        .map_or(input.len(), |(at, _)| at);
                    output.extend(input.drain(..end));
                }
            }
            Ok(output)
        }

        /// The model of [`normalize_path`]: refuse what the documentation refuses, decode the
        /// unreserved escapes, merge slashes if asked, then remove dot segments.
        fn model_normalize(path: &str, merge: bool) -> Result<String, ()> {
            if path.is_empty() || path == "*" {
                return Ok(path.to_owned());
            }
            if !path.starts_with('/') || path.contains('\\') {
                return Err(());
            }
            let mut decoded = String::new();
            let mut rest = path;
            while let Some(at) = rest.find('%') {
                decoded.push_str(rest.get(..at).ok_or(())?);
                let hex = rest.get(at + 1..at + 3).ok_or(())?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(());
                }
                let byte = u8::from_str_radix(hex, 16).map_err(|_| ())?;
                if matches!(byte, b'/' | b'\\' | 0) {
                    return Err(());
                }
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(byte));
                } else {
                    decoded.push_str(rest.get(at..at + 3).ok_or(())?);
                }
                rest = rest.get(at + 3..).ok_or(())?;
            }
            decoded.push_str(rest);
            if merge {
                while decoded.contains("//") {
                    decoded = decoded.replace("//", "/");
                }
            }
            let dot_with_params = |segment: &str| {
                segment.contains(';') && matches!(segment.split(';').next(), Some("." | ".."))
            };
            if decoded.split('/').any(dot_with_params) {
                return Err(());
            }
            remove_dot_segments(&decoded)
        }

        fn path() -> impl Strategy<Value = String> {
            // Mostly pieces of paths that normalise, so that outputs, not only refusals, are
            // compared.
            let fine = prop::sample::select(vec![
                "/", "/", "/", "a", "b", ".", "..", "%2e", "%2E", "%41", "%20", "%7e", "%3B", ";x",
                "é", "//", "~", "x.y", "%C3%A9",
            ]);
            let refused = prop::sample::select(vec![
                "%2f", "%5C", "%00", "%", "%4", "%g1", "%+1", "\\", ";", "/..;",
            ]);
            let piece = prop_oneof![12 => fine, 1 => refused];
            prop_oneof![
                8 => vec(piece, 0..16).prop_map(|pieces| format!("/{}", pieces.concat())),
                1 => any::<String>(),
                1 => prop::sample::select(vec!["", "*", "a/b", "*/"]).prop_map(str::to_owned),
            ]
        }

        fn version() -> impl Strategy<Value = Version> {
            prop::sample::select(vec![
                Version::HTTP_09,
                Version::HTTP_10,
                Version::HTTP_11,
                Version::HTTP_2,
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn content_length_is_one_number_or_refused(
                lines in values(prop_oneof![4 => content_length_value(), 1 => vec(field_byte(), 0..8)]),
            ) {
                prop_assert_eq!(
                    check_content_length(lines.iter()),
                    model_content_length(&lines),
                    "{:?}", lines
                );
            }

            #[test]
            fn transfer_encoding_is_chunked_once_or_refused(
                lines in values(prop_oneof![4 => transfer_encoding_value(), 1 => vec(field_byte(), 0..8)]),
                version in version(),
            ) {
                prop_assert_eq!(
                    check_transfer_encoding(lines.iter(), version),
                    model_transfer_encoding(&lines, version),
                    "{:?} {:?}", lines, version
                );
            }

            /// Whatever the framing headers say, the answer is the models' combined.
            #[test]
            fn framing_is_refused_exactly_when_the_models_say(
                lengths in values(content_length_value()),
                codings in values(transfer_encoding_value()),
                version in version(),
            ) {
                let mut request = request(version, "/", &[("host", b"a.test")]);
                for value in &lengths {
                    request.headers_mut().append(header::CONTENT_LENGTH, value.clone());
                }
                for value in &codings {
                    request.headers_mut().append(header::TRANSFER_ENCODING, value.clone());
                }
                let expected = model_content_length(&lengths).and_then(|has_length| {
                    let has_coding = model_transfer_encoding(&codings, version)?;
                    if has_length && has_coding {
                        Err("both Content-Length and Transfer-Encoding")
                    } else {
                        Ok(())
                    }
                });
                prop_assert_eq!(check_request(&request), expected);
            }

            #[test]
            fn a_host_with_userinfo_whitespace_or_controls_is_refused(
                host in prop_oneof![
                    vec(field_byte(), 0..24),
                    "[a-z.@ ]{0,12}(:[0-9]{0,6})?".prop_map(String::into_bytes),
                ],
            ) {
                let bad = host
                    .iter()
                    .any(|&b| b == b'@' || b.is_ascii_whitespace() || b.is_ascii_control());
                let expected = if bad {
                    Err("Host with userinfo, whitespace or control bytes")
                } else {
                    Ok(())
                };
                prop_assert_eq!(check("/x", &[("host", &host)]), expected, "{:?}", host);
            }

            /// An absolute-form target and its `Host` name the same host exactly when their
            /// names agree, ignoring case and a trailing dot, and their ports do with the
            /// scheme's default for a missing one.
            #[test]
            fn target_and_host_agree_as_the_model_says(
                scheme in prop::sample::select(vec!["http", "https", "HTTP", "HtTpS"]),
                target_name in host_name(),
                target_port in port_text(),
                host_name in host_name(),
                host_port in prop_oneof![
                    4 => port_text(),
                    1 => prop::sample::select(vec![":65536", ":99999999999", ":http", ":-1", ":8x0"])
                        .prop_map(str::to_owned),
                ],
                version in prop::sample::select(vec![Version::HTTP_11, Version::HTTP_2]),
            ) {
                let target = format!("{scheme}://{target_name}{target_port}/x?y");
                let host = format!("{host_name}{host_port}");
                let default = if scheme.eq_ignore_ascii_case("http") { 80 } else { 443 };
                let port_ok = host_port
                    .strip_prefix(':')
                    .is_none_or(|p| p.is_empty() || p.parse::<u16>().is_ok());
                let expected = if !port_ok {
                    Err("invalid Host header")
                } else if model_host(&target_name, &target_port, Some(default))
                    == model_host(&host_name, &host_port, Some(default))
                {
                    Ok(())
                } else {
                    Err("request target and Host name different hosts")
                };
                let request = request(version, &target, &[("host", host.as_bytes())]);
                prop_assert_eq!(check_request(&request), expected, "{} with Host {}", target, host);
            }

            /// Any authority a URI can hold, with any `Host`: an answer, and never `Ok` for
            /// userinfo in either.
            #[test]
            fn any_target_and_host_get_an_answer(
                authority in "([a-z:%]{0,4}@)?([a-zA-Z0-9._~-]{1,10}|\\[[0-9a-fA-F:.]{2,12}\\])(:[0-9]{0,7})?",
                host in prop_oneof![
                    vec(field_byte(), 0..24),
                    "[a-zA-Z0-9.:@\\[\\]-]{0,24}".prop_map(String::into_bytes),
                ],
                version in version(),
            ) {
                let target = format!("http://{authority}/x");
                prop_assume!(target.parse::<http::Uri>().is_ok());
                let request = request(version, &target, &[("host", &host)]);
                if check_request(&request).is_ok() {
                    prop_assert!(!authority.contains('@') && !host.contains(&b'@'));
                }
            }

            #[test]
            fn host_and_port_split_back(
                name in host_name(),
                port in port_text(),
                noise in any::<String>(),
            ) {
                let text = format!("{name}{port}");
                let (expected_name, expected_port) = model_host(&name, &port, None);
                let split = split_host_port(&text);
                prop_assert_eq!(
                    split.map(|(n, p)| (model_host(n, "", None).0, p)),
                    Some((expected_name, expected_port)),
                    "{}", text
                );
                if let Some((name, _)) = split_host_port(&noise) {
                    prop_assert!(!name.is_empty() && noise.starts_with(name), "{:?}", noise);
                }
            }

            #[test]
            fn paths_normalise_as_rfc_3986_removes_dot_segments(
                path in path(),
                merge in any::<bool>(),
            ) {
                let normalized = normalize_path(&path, merge);
                let model = model_normalize(&path, merge);
                prop_assert_eq!(
                    normalized.as_deref().ok(),
                    model.as_deref().ok(),
                    "{:?} merge={}", path, merge
                );
                // Nothing is allocated for a path that needs no change.
                if let Ok(Cow::Owned(changed)) = &normalized {
                    prop_assert_ne!(changed, &path);
                }
            }
        }
    }
}
