//! Header semantics of a proxy (RFC 9110 §7.6): hop-by-hop removal, forwarding headers, `Via`,
//! configured header edits and request ids. Pure functions over `HeaderMap`.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::ForwardedSettings;
use crate::protect::identity::HidePolicy;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// The request id header, sent to the backend and back to the client.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `Via` value: a pseudonym and no version, so the response names no software release.
const VIA_VALUE: &str = "1.1 gatehouse";

/// [`address_value`], from a one-entry cache per thread: consecutive connections often come from
/// one address (a load balancer, a NAT, a client reconnecting), and a copy of the value shares its
/// bytes (no allocation, no formatting).
pub fn address_value_cached(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((known, value)) if *known == ip => value.clone(),
            _ => {
                let value = address_value(ip);
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// A client address as a header value (`X-Forwarded-For`), formatted once per connection.
///
/// IPv4 is written digit by digit: `Ipv4Addr`'s `Display` goes through the formatting machinery
/// and a growing `String` (1,600 instructions, 4 % of a connection-per-request exchange).
pub fn address_value(ip: IpAddr) -> HeaderValue {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut length = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[length] = b'.';
                    length += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for digit in &digits[skip..] {
                    text[length] = b'0' + digit;
                    length += 1;
                }
            }
            HeaderValue::from_bytes(&text[..length])
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()),
    }
    // Digits, dots, hex and colons: always a valid value.
    .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// True if a `Connection` header of `headers` lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| lists_token(value, token))
}

/// True if a comma-separated header value lists `token` (case-insensitive).
pub fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether the last transfer coding of one `Transfer-Encoding` line is `chunked`; `None` when the
/// line lists no coding at all. Empty list elements are no codings (RFC 9110 §5.6.1.2), so
/// `chunked,` ends in chunked, and a line of only empty elements leaves the last coding of the
/// field to the lines before it. A line that is not text ends in no `chunked`.
pub fn line_ends_chunked(value: &HeaderValue) -> Option<bool> {
    let last = value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .find(|coding| !coding.is_empty())?;
    Some(value.to_str().is_ok() && last.eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value: decimal digits only, no sign, at most 19 digits (no overflow).
pub fn parse_content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The protocol a client asks to switch to, if this is an HTTP/1.1 upgrade request.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    connection_has(headers, "upgrade").then(|| upgrade.clone())
}

/// Which of the headers the pipeline acts on a message carries, found in one pass over its names.
///
/// Looking a header up in a `HeaderMap` hashes its name and probes the table, whether the header
/// is there or not, and most messages carry few of the headers a proxy asks about. One pass over
/// the names answers all those questions at once; the pipeline then looks up only what is there.
/// A `Present` describes the map when it was taken: whoever removes headers afterwards clears
/// their flags ([`Present::without`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u32);

impl Present {
    /// Nothing.
    pub const NONE: Present = Present(0);
    /// `Host`.
    pub const HOST: Present = Present(1);
    /// `Accept`.
    pub const ACCEPT: Present = Present(1 << 1);
    /// `X-Request-Id`.
    pub const X_REQUEST_ID: Present = Present(1 << 2);
    /// `Content-Length`.
    pub const CONTENT_LENGTH: Present = Present(1 << 3);
    /// `Transfer-Encoding` (also a [`Present::HOP_FIXED`] header).
    pub const TRANSFER_ENCODING: Present = Present(1 << 4);
    /// `Connection`.
    pub const CONNECTION: Present = Present(1 << 5);
    /// `TE`.
    pub const TE: Present = Present(1 << 6);
    /// `Upgrade` (also a [`Present::HOP_FIXED`] header).
    pub const UPGRADE: Present = Present(1 << 7);
    /// `Expect`.
    pub const EXPECT: Present = Present(1 << 8);
    /// A hop-by-hop header removed whatever `Connection` says: `Keep-Alive`, `Proxy-Connection`,
    /// `Proxy-Authenticate`, `Proxy-Authorization`, `Transfer-Encoding` or `Upgrade`.
    pub const HOP_FIXED: Present = Present(1 << 9);
    /// One of the [`CLIENT_CLAIMS`].
    pub const CLIENT_CLAIM: Present = Present(1 << 10);
    /// `X-Forwarded-For` (also a [`Present::CLIENT_CLAIM`]).
    pub const X_FORWARDED_FOR: Present = Present(1 << 11);
    /// `Forwarded` (also a [`Present::CLIENT_CLAIM`]).
    pub const FORWARDED: Present = Present(1 << 12);
    /// `Location` or `Content-Location`.
    pub const LOCATION: Present = Present(1 << 13);
    /// Every flag: what a caller that knows nothing about a map must assume.
    pub const ALL: Present = Present(u32::MAX);

    /// One pass over the names of `headers`.
    pub fn of(headers: &HeaderMap) -> Present {
        let mut present = Present::NONE;
        for name in headers.keys() {
            present.0 |= classify(name.as_str()).0;
        }
        present
    }

    /// The flags of a header called `name`.
    pub fn of_name(name: &HeaderName) -> Present {
        classify(name.as_str())
    }

    /// True if any of the headers `flags` names is present.
    pub fn any(self, flags: Present) -> bool {
        self.0 & flags.0 != 0
    }

    /// These flags as well.
    pub fn with(self, flags: Present) -> Present {
        Present(self.0 | flags.0)
    }

    /// These flags cleared: the headers were removed.
    pub fn without(self, flags: Present) -> Present {
        Present(self.0 & !flags.0)
    }
}

/// The flags of the header called `name` (lower case, as every [`HeaderName`] is). The match
/// goes by length first, so most names cost a length comparison or two.
fn classify(name: &str) -> Present {
    let hop = |flag: Present| flag.with(Present::HOP_FIXED);
    let claim = |flag: Present| flag.with(Present::CLIENT_CLAIM);
    match name.len() {
        2 if name == "te" => Present::TE,
        4 if name == "host" => Present::HOST,
        6 => match name {
            "accept" => Present::ACCEPT,
            "expect" => Present::EXPECT,
            _ => Present::NONE,
        },
        7 if name == "upgrade" => hop(Present::UPGRADE),
        8 if name == "location" => Present::LOCATION,
        9 => match name {
            "forwarded" => claim(Present::FORWARDED),
            "x-real-ip" => Present::CLIENT_CLAIM,
            _ => Present::NONE,
        },
        10 => match name {
            "connection" => Present::CONNECTION,
            "keep-alive" => Present::HOP_FIXED,
            _ => Present::NONE,
        },
        11 if name == "x-client-ip" => Present::CLIENT_CLAIM,
        12 if name == "x-request-id" => Present::X_REQUEST_ID,
        14 => match name {
            "content-length" => Present::CONTENT_LENGTH,
            "true-client-ip" => Present::CLIENT_CLAIM,
            _ => Present::NONE,
        },
        15 if name == "x-forwarded-for" => claim(Present::X_FORWARDED_FOR),
        16 => match name {
            "x-forwarded-host" | "x-forwarded-port" | "cf-connecting-ip" | "fastly-client-ip" => {
                Present::CLIENT_CLAIM
            }
            "proxy-connection" => Present::HOP_FIXED,
            "content-location" => Present::LOCATION,
            _ => Present::NONE,
        },
        17 => match name {
            "x-forwarded-proto" => Present::CLIENT_CLAIM,
            "transfer-encoding" => hop(Present::TRANSFER_ENCODING),
            _ => Present::NONE,
        },
        18 => match name {
            "x-forwarded-prefix" => Present::CLIENT_CLAIM,
            "proxy-authenticate" => Present::HOP_FIXED,
            _ => Present::NONE,
        },
        19 => match name {
            "x-cluster-client-ip" => Present::CLIENT_CLAIM,
            "proxy-authorization" => Present::HOP_FIXED,
            _ => Present::NONE,
        },
        _ => Present::NONE,
    }
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `Transfer-Encoding`,
/// `Upgrade`, and `TE` except its `trailers` token (RFC 9110 §7.6.1, §10.1.4).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_by_hop_present(headers, Present::of(headers));
}

/// [`remove_hop_by_hop`] for a caller that has already passed over the names: `present` says
/// which hop-by-hop headers the map holds, and only those are looked up (a removal costs a hash
/// lookup each, and this runs on every request and every response).
pub fn remove_hop_by_hop_present(headers: &mut HeaderMap, present: Present) {
    const FIXED: [&HeaderName; 6] = [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ];
    if present.any(Present::CONNECTION) {
        let mut named = NameList::default();
        for value in headers.get_all(header::CONNECTION) {
            let bytes = value.as_bytes();
            // What nearly every message says, and names no header.
            if bytes.eq_ignore_ascii_case(b"keep-alive") || bytes.eq_ignore_ascii_case(b"close") {
                continue;
            }
            // A value that is not text names nothing.
            let Ok(text) = value.to_str() else {
                continue;
            };
            // Text has no byte that `trim_ascii` and `str::trim` would treat differently.
            for token in text
                .as_bytes()
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
            {
                // `close` names no header and `keep-alive` is removed below anyway.
                if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        named.remove_from(headers);
        headers.remove(header::CONNECTION);
    }
    if present.any(Present::HOP_FIXED) {
        for name in FIXED {
            headers.remove(name);
        }
    }
    if present.any(Present::TE) {
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Removes a response's hop-by-hop headers (as [`remove_hop_by_hop`]) and then every header
/// `hide` hides, finding both in one pass over the names; returns what that pass found (before
/// the removals), so the caller can skip work on headers that are not there (`Location`).
///
/// Nothing is allocated unless `Connection` names headers or more than a few are hidden.
pub fn strip_response(headers: &mut HeaderMap, hide: &HidePolicy) -> Present {
    let mut present = Present::NONE;
    let mut hidden = NameList::default();
    for name in headers.keys() {
        let text = name.as_str();
        present.0 |= classify(text).0;
        if hide.matches_str(text) {
            hidden.push(name.clone());
        }
    }
    remove_hop_by_hop_present(headers, present);
    // After the hop-by-hop removal, as identity hiding always ran: a hidden `TE` goes even when
    // its `trailers` token was kept.
    hidden.remove_from(headers);
    present
}

/// A few header names held without allocating; more spill into a `Vec`.
#[derive(Default)]
struct NameList {
    inline: [Option<HeaderName>; 4],
    len: usize,
    spill: Vec<HeaderName>,
}

impl NameList {
    fn push(&mut self, name: HeaderName) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(name),
            None => self.spill.push(name),
        }
        self.len += 1;
    }

    /// Removes every header named; nothing to do (the common case) costs one comparison.
    fn remove_from(&mut self, headers: &mut HeaderMap) {
        if self.len == 0 {
            return;
        }
        for slot in &mut self.inline {
            if let Some(name) = slot.take() {
                headers.remove(name);
            }
        }
        for name in self.spill.drain(..) {
            headers.remove(name);
        }
        self.len = 0;
    }
}

/// Facts about the client connection that forwarding headers report.
#[derive(Debug, Clone, Copy)]
pub struct ClientFacts<'a> {
    /// The address of the client's end of the TCP connection.
    pub ip: IpAddr,
    /// The same address as text, formatted once per connection.
    pub ip_text: &'a HeaderValue,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The host the client asked for, if any.
    pub host: Option<&'a HeaderValue>,
}

/// Headers in which a proxy vouches for the client (its address, scheme, host, port). Only a
/// trusted proxy may say these; from anyone else they are the client's own say-so and are
/// removed before the request goes on, whether or not Gatehouse writes its own version. A backend
/// (or a framework's "trust proxy" setting) that reads one of them cannot be fooled through us.
pub const CLIENT_CLAIMS: [&str; 12] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// Removes the [`CLIENT_CLAIMS`] a client that is not a trusted proxy sent.
pub fn remove_client_claims(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names, then removals only for what is there.
    let present = headers
        .keys()
        .any(|name| CLIENT_CLAIMS.contains(&name.as_str()));
    if present {
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
}

/// Adds `X-Forwarded-*`, `Forwarded` and `Via` to a request as `settings` ask.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    settings: &ForwardedSettings,
    client: ClientFacts<'_>,
) {
    add_forwarding_present(headers, settings, client, Present::ALL);
}

/// [`add_forwarding`] for a caller that knows which forwarding headers the request holds: prior
/// `X-Forwarded-For` and `Forwarded` values are looked up only when `present` has them, and a
/// stale `X-Forwarded-Host` only when it has a [`Present::CLIENT_CLAIM`].
pub fn add_forwarding_present(
    headers: &mut HeaderMap,
    settings: &ForwardedSettings,
    client: ClientFacts<'_>,
    present: Present,
) {
    if settings.x_forwarded_for {
        let prior = if present.any(Present::X_FORWARDED_FOR) {
            joined(headers, &X_FORWARDED_FOR)
        } else {
            None
        };
        match prior {
            Some(prior) => {
                let ip = client.ip_text.to_str().unwrap_or("");
                if let Ok(value) = HeaderValue::try_from(format!("{prior}, {ip}")) {
                    headers.insert(X_FORWARDED_FOR.clone(), value);
                }
            }
            // The common case costs no formatting and no allocation.
            None => {
                headers.insert(X_FORWARDED_FOR.clone(), client.ip_text.clone());
            }
        }
    }
    if settings.x_forwarded_proto {
        headers.insert(X_FORWARDED_PROTO.clone(), proto_value(client.proto));
    }
    if settings.x_forwarded_host {
        match client.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
            None if present.any(Present::CLIENT_CLAIM) => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    if settings.forwarded {
        let element = forwarded_element(client);
        let prior = if present.any(Present::FORWARDED) {
            joined(headers, &FORWARDED)
        } else {
            None
        };
        let combined = match prior {
            Some(prior) => format!("{prior}, {element}"),
            None => element,
        };
        if let Ok(value) = HeaderValue::try_from(combined) {
            headers.insert(FORWARDED.clone(), value);
        }
    }
    if settings.via {
        add_via(headers);
    }
}

/// `client.proto` as a header value; the usual two are made once, not validated per request.
fn proto_value(proto: &'static str) -> HeaderValue {
    static HTTP: HeaderValue = HeaderValue::from_static("http");
    static HTTPS: HeaderValue = HeaderValue::from_static("https");
    match proto {
        "http" => HTTP.clone(),
        "https" => HTTPS.clone(),
        other => HeaderValue::from_static(other),
    }
}

/// Appends this proxy to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA_VALUE));
}

/// All values of `name` joined by `", "`, or `None` if absent or not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(text);
            }
            None => out = Some(text.to_owned()),
        }
    }
    out
}

/// One RFC 7239 element: `for=...;proto=...;host=...`, quoting where the grammar requires.
fn forwarded_element(client: ClientFacts<'_>) -> String {
    let for_value = match client.ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={for_value};proto={}", client.proto);
    if let Some(host) = client.host.and_then(|h| h.to_str().ok()) {
        // A token has one character at least: an empty host is written `host=""`.
        let is_token = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if is_token {
            element.push_str(";host=");
            element.push_str(host);
        } else {
            element.push_str(";host=\"");
            element.push_str(&host.replace('\\', "\\\\").replace('"', "\\\""));
            element.push('"');
        }
    }
    element
}

/// Header edits compiled from a route's `request_headers` or `response_headers`.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Removed first.
    pub remove: Vec<HeaderName>,
    /// Then replaced.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Then appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies remove, then set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The client's request id if it is one we accept, else a fresh one.
///
/// A client id is kept only when it is 1–128 characters of `[A-Za-z0-9._:-]`, so it is safe to
/// log and to pass on; anything else is replaced rather than trusted.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    request_id_present(headers, Present::ALL)
}

/// [`request_id`] for a caller that knows whether the request has an `X-Request-Id`.
///
/// The id is marked sensitive: HTTP/2's HPACK then sends it as a literal never indexed. A value
/// unique to each message would otherwise be inserted into the connection's dynamic table on
/// every response, evicting the fields that do repeat (`content-type`, `etag`, ...), and the
/// encoder would compare each new id against every earlier one still in the table (h2 chains
/// equal names): 7.9 % of the instructions per h2c request in the scenario-4 profile were in
/// HPACK encoding.
pub fn request_id_present(headers: &HeaderMap, present: Present) -> HeaderValue {
    if present.any(Present::X_REQUEST_ID)
        && let Some(value) = headers.get(&X_REQUEST_ID)
        && is_kept_request_id(value.as_bytes())
    {
        let mut value = value.clone();
        value.set_sensitive(true);
        return value;
    }
    new_request_id()
}

/// Whether a client's `X-Request-Id` is kept: 1 to 128 of `[A-Za-z0-9._:-]`, so that it can go
/// into logs and headers as it is (the text access log writes it unquoted).
pub fn is_kept_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A random 128-bit id as 32 lower-case hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    // Most significant digit first: a byte at a time, two digits each.
    for (pair, byte) in out
        .chunks_exact_mut(2)
        .zip(fastrand::u128(..).to_be_bytes())
    {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // One allocation that every copy shares (the id goes to the backend, the client and the
    // log); bytes copied into a plain `Bytes` would take a second one at the first copy.
    // Hex digits are always a valid header value.
    let mut id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    id.set_sensitive(true);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::header_map as map;

    #[test]
    fn client_claims_are_removed_and_other_headers_kept() {
        let mut headers = map(&[
            ("x-real-ip", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("True-Client-IP", "203.0.113.9"),
            ("accept", "*/*"),
        ]);
        remove_client_claims(&mut headers);
        let left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-other"),
            ("x-custom-hop", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("proxy-authorization", "Basic x"),
            ("x-end-to-end", "kept"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end-to-end"]);
    }

    #[test]
    fn connection_tokens_are_read_case_and_space_insensitively() {
        let mut h = map(&[
            ("connection", " Close ,X-A,, x-b\t"),
            ("connection", "KEEP-ALIVE"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("close", "not named: `close` is an option"),
            ("keep-alive", "timeout=5"),
            ("x-c", "kept"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["close", "x-c"]);
        // More named headers than are held without allocating.
        let mut h = map(&[
            ("connection", "a, b, c, d, e, f"),
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            ("e", "1"),
            ("f", "1"),
            ("g", "kept"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["g"]);
    }

    #[test]
    fn every_name_the_pipeline_acts_on_is_classified() {
        let flags =
            |name: &str| Present::of_name(&HeaderName::from_bytes(name.as_bytes()).unwrap());
        for claim in CLIENT_CLAIMS {
            assert!(flags(claim).any(Present::CLIENT_CLAIM), "{claim}");
        }
        for hop in [
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(flags(hop).any(Present::HOP_FIXED), "{hop}");
        }
        for (name, flag) in [
            ("host", Present::HOST),
            ("accept", Present::ACCEPT),
            ("x-request-id", Present::X_REQUEST_ID),
            ("content-length", Present::CONTENT_LENGTH),
            ("transfer-encoding", Present::TRANSFER_ENCODING),
            ("connection", Present::CONNECTION),
            ("te", Present::TE),
            ("upgrade", Present::UPGRADE),
            ("expect", Present::EXPECT),
            ("x-forwarded-for", Present::X_FORWARDED_FOR),
            ("forwarded", Present::FORWARDED),
            ("location", Present::LOCATION),
            ("content-location", Present::LOCATION),
        ] {
            assert_eq!(
                flags(name)
                    .without(Present::HOP_FIXED)
                    .without(Present::CLIENT_CLAIM),
                flag,
                "{name}"
            );
        }
        for other in [
            "date",
            "server",
            "x-forwarded",
            "hosts",
            "accept-encoding",
            "content-type",
        ] {
            assert_eq!(flags(other), Present::NONE, "{other}");
        }
        let h = map(&[("Host", "a"), ("X-Real-IP", "1.2.3.4"), ("te", "trailers")]);
        let present = Present::of(&h);
        assert!(present.any(Present::HOST));
        assert!(present.any(Present::CLIENT_CLAIM));
        assert!(present.any(Present::TE));
        assert!(!present.any(Present::CONNECTION.with(Present::ACCEPT)));
        assert_eq!(present.without(Present::ALL), Present::NONE);
    }

    #[test]
    fn response_stripping_removes_hop_by_hop_and_hidden_headers_in_one_go() {
        let hide = HidePolicy::from_entries(&["server", "x-backend*", "te", "x-gone"]).unwrap();
        let mut h = map(&[
            ("connection", "keep-alive, x-gone"),
            ("keep-alive", "timeout=5"),
            ("server", "nginx"),
            ("x-backend-id", "3"),
            ("x-gone", "1"),
            ("te", "trailers"),
            ("location", "/next"),
            ("content-type", "text/plain"),
            ("date", "now"),
        ]);
        let present = strip_response(&mut h, &hide);
        assert!(present.any(Present::LOCATION));
        assert!(present.any(Present::CONNECTION));
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // A hidden `TE` goes, `trailers` or not, as when hiding ran after hop-by-hop removal.
        assert_eq!(names, ["content-type", "date", "location"]);
        // Without a policy it is hop-by-hop removal alone.
        let mut h = map(&[("te", "trailers"), ("server", "nginx"), ("upgrade", "h2c")]);
        let present = strip_response(&mut h, &HidePolicy::default());
        assert!(!present.any(Present::LOCATION));
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("server").unwrap(), "nginx");
        assert!(h.get("upgrade").is_none());
        // More hidden names than are held without allocating.
        let mut h = map(&[
            ("x-backend-a", "1"),
            ("x-backend-b", "1"),
            ("x-backend-c", "1"),
            ("x-backend-d", "1"),
            ("x-backend-e", "1"),
            ("server", "x"),
            ("etag", "kept"),
        ]);
        strip_response(&mut h, &hide);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["etag"]);
    }

    #[test]
    fn known_absent_headers_are_not_looked_up_and_known_present_ones_are() {
        let h = map(&[("x-request-id", "abc")]);
        assert_eq!(request_id_present(&h, Present::of(&h)), "abc");
        assert_ne!(request_id_present(&h, Present::NONE), "abc");
        let host = HeaderValue::from_static("example.com");
        let mut with = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-host", "old")]);
        let present = Present::of(&with);
        add_forwarding_present(
            &mut with,
            &ForwardedSettings::default(),
            client("10.0.0.9", None),
            present,
        );
        assert_eq!(with.get("x-forwarded-for").unwrap(), "1.1.1.1, 10.0.0.9");
        assert!(with.get("x-forwarded-host").is_none());
        let mut without = HeaderMap::new();
        add_forwarding_present(
            &mut without,
            &ForwardedSettings::default(),
            client("10.0.0.9", Some(&host)),
            Present::NONE,
        );
        assert_eq!(without.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(without.get("x-forwarded-host").unwrap(), "example.com");
    }

    #[test]
    fn te_trailers_survives_as_the_only_te_token() {
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn upgrade_needs_both_the_header_and_the_connection_token() {
        assert!(
            upgrade_requested(&map(&[("connection", "Upgrade"), ("upgrade", "websocket")]))
                .is_some()
        );
        assert!(upgrade_requested(&map(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_requested(&map(&[("connection", "keep-alive, upgrade")])).is_none());
    }

    fn client<'a>(ip: &str, host: Option<&'a HeaderValue>) -> ClientFacts<'a> {
        let ip: IpAddr = ip.parse().unwrap();
        let text: &'static HeaderValue =
            Box::leak(Box::new(HeaderValue::from_str(&ip.to_string()).unwrap()));
        ClientFacts {
            ip_text: text,
            ip,
            proto: "http",
            host,
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.30.4",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(address_value(ip), ip.to_string().as_str(), "{text}");
            // Twice: formatted, then from the cache; then the cache is replaced by another.
            assert_eq!(address_value_cached(ip), ip.to_string().as_str(), "{text}");
            assert_eq!(address_value_cached(ip), ip.to_string().as_str(), "{text}");
        }
    }

    #[test]
    fn x_forwarded_for_is_appended_and_others_are_set() {
        let host = HeaderValue::from_static("example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarding(
            &mut h,
            &ForwardedSettings::default(),
            client("10.0.0.9", Some(&host)),
        );
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 2.2.2.2, 10.0.0.9"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.com");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("via").is_none());
    }

    #[test]
    fn forwarded_elements_quote_ipv6_and_non_token_hosts() {
        let settings = ForwardedSettings {
            forwarded: true,
            via: true,
            ..ForwardedSettings::default()
        };
        let host = HeaderValue::from_static("example.com:8080");
        let mut h = map(&[("forwarded", "for=192.0.2.1")]);
        add_forwarding(&mut h, &settings, client("::1", Some(&host)));
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=192.0.2.1, for=\"[::1]\";proto=http;host=\"example.com:8080\""
        );
        assert_eq!(h.get("via").unwrap(), "1.1 gatehouse");
    }

    /// Regression (found by `properties::forwarded_elements_parse_back`): an empty host passed
    /// the token check (every byte of nothing is a tchar) and was written `host=`, which is no
    /// RFC 7239 value (a token has one character at least), so a backend parsing `Forwarded`
    /// strictly could reject or misread the whole field.
    #[test]
    fn an_empty_host_is_written_as_an_empty_quoted_string() {
        let settings = ForwardedSettings {
            forwarded: true,
            ..ForwardedSettings::default()
        };
        let empty = HeaderValue::from_static("");
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &settings, client("0.0.0.0", Some(&empty)));
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=0.0.0.0;proto=http;host=\"\""
        );
    }

    /// Regression (found by `properties::line_ends_chunked_reads_the_last_coding`): the last list
    /// element was taken even when empty, so `chunked,` was not chunked last (RFC 9110 §5.6.1.2
    /// has recipients ignore empty elements): a backend's chunked response was read until close
    /// with its chunk framing passed on as body, and a response head written with such a value
    /// got a second `, chunked`.
    #[test]
    fn empty_list_elements_after_chunked_are_ignored() {
        for value in ["chunked,", "gzip, chunked , ,", "CHUNKED,\t"] {
            let value = HeaderValue::from_static(value);
            assert_eq!(line_ends_chunked(&value), Some(true), "{value:?}");
        }
        for value in ["chunked, gzip", "chunked;x=1,"] {
            let value = HeaderValue::from_static(value);
            assert_eq!(line_ends_chunked(&value), Some(false), "{value:?}");
        }
        for value in ["", ",", " , \t,"] {
            let value = HeaderValue::from_static(value);
            assert_eq!(line_ends_chunked(&value), None, "{value:?}");
        }
    }

    #[test]
    fn disabled_forwarding_headers_are_left_alone() {
        let settings = ForwardedSettings {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            forwarded: false,
            via: false,
        };
        let mut h = map(&[("x-forwarded-for", "1.1.1.1")]);
        add_forwarding(&mut h, &settings, client("10.0.0.1", None));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.1.1.1");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn header_edits_remove_then_set_then_add() {
        let edits = HeaderEdits {
            remove: vec![HeaderName::from_static("x-secret")],
            set: vec![(
                HeaderName::from_static("x-mode"),
                HeaderValue::from_static("b"),
            )],
            add: vec![(
                HeaderName::from_static("x-tag"),
                HeaderValue::from_static("two"),
            )],
        };
        let mut h = map(&[
            ("x-secret", "s"),
            ("x-mode", "a"),
            ("x-mode", "a2"),
            ("x-tag", "one"),
        ]);
        edits.apply(&mut h);
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.get_all("x-mode").iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            h.get_all("x-tag").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
    }

    #[test]
    fn request_ids_are_kept_when_safe_and_replaced_otherwise() {
        assert_eq!(
            request_id(&map(&[("x-request-id", "abc-123.x_y:z")])),
            "abc-123.x_y:z"
        );
        let replaced = request_id(&map(&[("x-request-id", "bad id<script>")]));
        assert_eq!(replaced.len(), 32);
        assert!(replaced.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(new_request_id(), new_request_id());
        let too_long = "a".repeat(129);
        assert_ne!(
            request_id(&map(&[("x-request-id", &too_long)])),
            too_long.as_str()
        );
    }

    #[test]
    fn request_ids_are_sensitive_so_hpack_never_indexes_them() {
        assert!(new_request_id().is_sensitive());
        assert!(request_id(&map(&[("x-request-id", "abc-123")])).is_sensitive());
        assert!(request_id(&map(&[])).is_sensitive());
    }

    /// Property tests: every helper here reads fields a client or backend wrote (`Connection`,
    /// `TE`, `Transfer-Encoding`, `Content-Length`, `X-Forwarded-For`, `Forwarded`, `X-Request-Id`,
    /// the `Host` that `Forwarded` reports), so each must take any bytes without panicking and
    /// agree with a plain model of the RFC rule it implements; and what this proxy writes
    /// (`Forwarded`, `X-Forwarded-For`) must parse back, by the RFC 7239 grammar, to what it meant
    /// to say.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        fn field_value(bytes: &[u8]) -> HeaderValue {
            let kept: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
                .collect();
            HeaderValue::from_bytes(&kept).expect("filtered to field-value bytes")
        }

        /// List members a peer may write, with OWS, empty elements and odd bytes among them.
        fn list_value() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    "close",
                    "Close",
                    "keep-alive",
                    "KEEP-ALIVE",
                    "upgrade",
                    "chunked",
                    "CHUNKED",
                    "gzip",
                    "trailers",
                    ",",
                    ", ",
                    " ",
                    "\t",
                    ";q=1",
                    "\u{e9}",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                any::<u8>().prop_map(|b| vec![b]),
            ];
            prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
        }

        /// The list members of a text value, trimmed of OWS (SP, HTAB), empty ones left out: the
        /// model every list helper is checked against (RFC 9110 §5.6.1).
        fn members(value: &HeaderValue) -> Option<Vec<String>> {
            let text = value.to_str().ok()?;
            Some(
                text.split(',')
                    .map(|m| m.trim_matches([' ', '\t']).to_owned())
                    .filter(|m| !m.is_empty())
                    .collect(),
            )
        }

        fn any_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
                any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
                prop::sample::select(vec![0u32, 1, 0x7f00_0001, u32::MAX])
                    .prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            ]
        }

        /// One RFC 7239 `Forwarded` value read by its grammar: elements separated by `,`, pairs by
        /// `;`, each `token=value` with a token or quoted-string value; `None` if it does not
        /// parse.
        fn parse_forwarded(text: &str) -> Option<Vec<Vec<(String, String)>>> {
            let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            let mut chars = text.chars().peekable();
            let mut elements = vec![Vec::new()];
            loop {
                while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&c) = chars.peek().filter(|c| is_tchar(**c)) {
                    name.push(c);
                    chars.next();
                }
                if name.is_empty() || chars.next() != Some('=') {
                    return None;
                }
                let mut value = String::new();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    loop {
                        match chars.next()? {
                            '"' => break,
                            '\\' => value.push(chars.next()?),
                            c => value.push(c),
                        }
                    }
                } else {
                    while let Some(&c) = chars.peek().filter(|c| is_tchar(**c)) {
                        value.push(c);
                        chars.next();
                    }
                    if value.is_empty() {
                        return None;
                    }
                }
                elements
                    .last_mut()?
                    .push((name.to_ascii_lowercase(), value));
                while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                    chars.next();
                }
                match chars.next() {
                    None => return Some(elements),
                    Some(';') => {}
                    Some(',') => elements.push(Vec::new()),
                    Some(_) => return None,
                }
            }
        }

        fn client_facts<'a>(
            ip: IpAddr,
            ip_text: &'a HeaderValue,
            https: bool,
            host: Option<&'a HeaderValue>,
        ) -> ClientFacts<'a> {
            ClientFacts {
                ip,
                ip_text,
                proto: if https { "https" } else { "http" },
                host,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// `lists_token` and `connection_has` find a token exactly when a list member of a text
            /// value equals it without regard to case; nothing in a value that is not text.
            #[test]
            fn token_search_agrees_with_the_model(
                lines in prop::collection::vec(list_value(), 0..3),
                token in prop::sample::select(vec!["close", "keep-alive", "upgrade", "Upgrade"]),
            ) {
                let mut headers = HeaderMap::new();
                let mut any_line = false;
                for line in &lines {
                    let value = field_value(line);
                    let model = members(&value)
                        .is_some_and(|m| m.iter().any(|m| m.eq_ignore_ascii_case(token)));
                    prop_assert_eq!(lists_token(&value, token), model, "{:?}", value);
                    any_line |= model;
                    headers.append(header::CONNECTION, value);
                }
                prop_assert_eq!(connection_has(&headers, token), any_line);
            }

            /// RFC 9112 §6.3 asks whether chunked is the final coding; empty list elements do not
            /// count (RFC 9110 §5.6.1.2), so `chunked,` ends in chunked and `chunked, gzip` does
            /// not.
            #[test]
            fn line_ends_chunked_reads_the_last_coding(
                value in list_value(),
                codings in prop::collection::vec(
                    prop::sample::select(vec!["chunked", "CHUNKED", "gzip", "", " "]),
                    1..4,
                ),
                trailing in "[, \t]{0,3}",
            ) {
                // Codings as senders list them, often followed by separators (merged lines, sloppy
                // senders), and any other bytes.
                let listed = format!("{}{trailing}", codings.join(","));
                for value in [field_value(listed.as_bytes()), field_value(&value)] {
                    let model = members(&value)
                        .and_then(|m| m.last().map(|last| last.eq_ignore_ascii_case("chunked")))
                        .unwrap_or(false);
                    prop_assert_eq!(line_ends_chunked(&value) == Some(true), model, "{:?}", value);
                }
            }

            /// `Content-Length` is 1 to 19 decimal digits and their value (so it never overflows:
            /// 19 nines fit in u64); anything else, u64::MAX's 20 digits included, is refused.
            #[test]
            fn content_length_is_the_decimal_value(
                digits in prop_oneof![
                    "[0-9]{1,25}",
                    Just("18446744073709551615".to_owned()),
                    Just("9999999999999999999".to_owned()),
                ],
                other in prop::collection::vec(any::<u8>(), 0..24),
            ) {
                let model =
                    (digits.len() <= 19).then(|| digits.parse::<u64>().expect("19 digits fit"));
                prop_assert_eq!(parse_content_length(digits.as_bytes()), model);
                let decimal =
                    (1..=19).contains(&other.len()) && other.iter().all(u8::is_ascii_digit);
                let other_model = decimal
                    .then(|| std::str::from_utf8(&other).ok()?.parse::<u64>().ok())
                    .flatten();
                prop_assert_eq!(parse_content_length(&other), other_model);
            }

            /// RFC 9110 §7.6.1: after removal there is no `Connection`, no field it names (but
            /// `close`), no fixed hop-by-hop field, and `TE` only as `trailers` when the client
            /// offered trailers; every other field keeps all its values. Knowing which fields are
            /// present (`Present`) or also hiding nothing (`strip_response`) changes nothing.
            #[test]
            fn hop_by_hop_removal_agrees_with_the_model(
                fields in prop::collection::vec((0usize..14, "[a-z0-9]{0,3}"), 0..10),
                connection in prop::collection::vec(
                    prop::collection::vec((0usize..14, any::<bool>(), "[ \t]{0,2}"), 0..4),
                    0..3,
                ),
                te in prop::option::of(prop::sample::select(vec![
                    "trailers", "gzip, Trailers;q=1", "gzip", "", "trailers;q=0, x",
                ])),
            ) {
                const NAMES: [&str; 14] = [
                    "x-a", "x-b", "close", "keep-alive", "proxy-connection", "proxy-authenticate",
                    "proxy-authorization", "transfer-encoding", "upgrade", "host", "te", "accept",
                    "x-c d", "",
                ];
                const FIXED: [&str; 6] = [
                    "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                    "transfer-encoding", "upgrade",
                ];
                let mut before = HeaderMap::new();
                for (name, value) in &fields {
                    if let Ok(name) = HeaderName::from_bytes(NAMES[*name].as_bytes()) {
                        before.append(name, HeaderValue::from_str(value).expect("a value"));
                    }
                }
                if let Some(te) = te {
                    before.append(header::TE, HeaderValue::from_static(te));
                }
                let mut named: Vec<String> = Vec::new();
                for line in &connection {
                    let tokens: Vec<String> = line
                        .iter()
                        .map(|(name, upper, ows)| {
                            let name = if *upper {
                                NAMES[*name].to_ascii_uppercase()
                            } else {
                                NAMES[*name].to_owned()
                            };
                            format!("{ows}{name}{ows}")
                        })
                        .collect();
                    named.extend(
                        tokens.iter().map(|t| t.trim_matches([' ', '\t']).to_ascii_lowercase()),
                    );
                    let list = HeaderValue::from_str(&tokens.join(",")).expect("a list");
                    before.append(header::CONNECTION, list);
                }
                let mut after = before.clone();
                remove_hop_by_hop(&mut after);
                let trailers_offered = before
                    .get_all(header::TE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter_map(|m| m.split(';').next())
                    .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"));
                for name in before.keys() {
                    let text = name.as_str();
                    let values = after.get_all(name).iter().collect::<Vec<_>>();
                    let removed = text == "connection"
                        || FIXED.contains(&text)
                        || (text != "close" && named.iter().any(|n| n == text));
                    if removed {
                        prop_assert!(values.is_empty(), "{} kept", text);
                    } else if text == "te" {
                        let expected: &[&str] = if trailers_offered { &["trailers"] } else { &[] };
                        prop_assert_eq!(values, expected);
                    } else {
                        let kept = before.get_all(name).iter().collect::<Vec<_>>();
                        prop_assert_eq!(values, kept, "{}", text);
                    }
                }
                prop_assert!(after.keys().all(|name| before.contains_key(name)));
                let mut with_all = before.clone();
                remove_hop_by_hop_present(&mut with_all, Present::ALL);
                prop_assert_eq!(&with_all, &after);
                let mut stripped = before.clone();
                strip_response(&mut stripped, &HidePolicy::default());
                prop_assert_eq!(&stripped, &after);
            }

            /// Each `Present` flag is set exactly when the map holds one of the fields it stands
            /// for, for any field names.
            #[test]
            fn present_flags_agree_with_lookups(
                names in prop::collection::vec(prop_oneof![
                    prop::sample::select(vec![
                        "host", "accept", "x-request-id", "content-length", "transfer-encoding",
                        "connection", "te", "upgrade", "expect", "keep-alive", "proxy-connection",
                        "proxy-authenticate", "proxy-authorization", "x-forwarded-for", "forwarded",
                        "location", "content-location", "x-real-ip", "cf-connecting-ip",
                        "x-forwarded-prefix",
                    ]).prop_map(str::to_owned),
                    "[a-z0-9-]{1,20}",
                ], 0..8),
            ) {
                let mut headers = HeaderMap::new();
                for name in &names {
                    let name = HeaderName::from_bytes(name.as_bytes()).expect("a name");
                    headers.append(name, HeaderValue::from_static("1"));
                }
                let present = Present::of(&headers);
                let fixed: &[&str] = &[
                    "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                    "transfer-encoding", "upgrade",
                ];
                for (flag, fields) in [
                    (Present::HOST, &["host"][..]),
                    (Present::ACCEPT, &["accept"]),
                    (Present::X_REQUEST_ID, &["x-request-id"]),
                    (Present::CONTENT_LENGTH, &["content-length"]),
                    (Present::TRANSFER_ENCODING, &["transfer-encoding"]),
                    (Present::CONNECTION, &["connection"]),
                    (Present::TE, &["te"]),
                    (Present::UPGRADE, &["upgrade"]),
                    (Present::EXPECT, &["expect"]),
                    (Present::HOP_FIXED, fixed),
                    (Present::CLIENT_CLAIM, &CLIENT_CLAIMS),
                    (Present::X_FORWARDED_FOR, &["x-forwarded-for"]),
                    (Present::FORWARDED, &["forwarded"]),
                    (Present::LOCATION, &["location", "content-location"]),
                ] {
                    let model = fields.iter().any(|f| headers.contains_key(*f));
                    prop_assert_eq!(present.any(flag), model, "{:?} {:?}", flag, fields);
                }
            }

            /// RFC 7239: the `Forwarded` elements written over two hops parse back by the grammar
            /// to each hop's client address (IPv6 bracketed), scheme and host, whatever text the
            /// host holds (empty, quotes, backslashes, spaces); a host that is not text is left
            /// out.
            #[test]
            fn forwarded_elements_parse_back(
                hops in prop::collection::vec(
                    (
                        any_ip(),
                        any::<bool>(),
                        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
                    ),
                    1..3,
                ),
                prior in prop::option::of("for=[a-z0-9.]{1,8}(;proto=https)?"),
            ) {
                let settings = ForwardedSettings {
                    forwarded: true,
                    ..ForwardedSettings::default()
                };
                let mut headers = HeaderMap::new();
                if let Some(prior) = &prior {
                    let prior = HeaderValue::from_str(prior).expect("a value");
                    headers.insert(FORWARDED.clone(), prior);
                }
                for (ip, https, host) in &hops {
                    let ip_text = address_value(*ip);
                    let host = host.as_ref().map(|h| field_value(h));
                    let client = client_facts(*ip, &ip_text, *https, host.as_ref());
                    add_forwarding(&mut headers, &settings, client);
                }
                let written = headers.get(&FORWARDED).expect("written").to_str().expect("text");
                let elements = parse_forwarded(written);
                prop_assert!(elements.is_some(), "{:?} does not parse", written);
                let elements = elements.expect("checked");
                let ours = &elements[usize::from(prior.is_some())..];
                prop_assert_eq!(ours.len(), hops.len());
                for ((ip, https, host), element) in hops.iter().zip(ours) {
                    let for_value = match ip {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    let mut expected = vec![
                        ("for".to_owned(), for_value),
                        ("proto".to_owned(), if *https { "https" } else { "http" }.to_owned()),
                    ];
                    if let Some(host) = host.as_ref().map(|h| field_value(h))
                        && let Ok(host) = host.to_str()
                    {
                        expected.push(("host".to_owned(), host.to_owned()));
                    }
                    prop_assert_eq!(element, &expected, "{:?}", written);
                }
            }

            /// `X-Forwarded-For` gets the client address appended to the prior text lines joined
            /// with `, `; when a prior line is not text the list cannot be extended and is
            /// replaced.
            #[test]
            fn x_forwarded_for_appends_the_client(
                prior in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..10), 0..3),
                ip in any_ip(),
            ) {
                let mut headers = HeaderMap::new();
                for line in &prior {
                    headers.append(X_FORWARDED_FOR.clone(), field_value(line));
                }
                let ip_text = address_value(ip);
                let texts: Option<Vec<String>> = prior
                    .iter()
                    .map(|line| field_value(line).to_str().ok().map(str::to_owned))
                    .collect();
                let client = client_facts(ip, &ip_text, false, None);
                add_forwarding(&mut headers, &ForwardedSettings::default(), client);
                let expected = match texts {
                    Some(texts) if !texts.is_empty() => format!("{}, {ip}", texts.join(", ")),
                    _ => ip.to_string(),
                };
                let written = headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>();
                prop_assert_eq!(written, [expected.as_str()]);
            }

            /// A client's `X-Request-Id` is kept exactly when it is 1–128 of `[A-Za-z0-9._:-]`;
            /// otherwise a new id of 32 lower-case hex digits; either way marked sensitive.
            #[test]
            fn request_ids_are_kept_only_when_safe(
                id in prop_oneof![
                    "[A-Za-z0-9._:-]{0,130}".prop_map(String::into_bytes),
                    prop::collection::vec(any::<u8>(), 0..20),
                ],
            ) {
                let value = field_value(&id);
                let mut headers = HeaderMap::new();
                headers.insert(X_REQUEST_ID.clone(), value.clone());
                let bytes = value.as_bytes();
                let safe = (1..=128).contains(&bytes.len())
                    && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(b));
                let chosen = request_id(&headers);
                prop_assert!(chosen.is_sensitive());
                if safe {
                    prop_assert_eq!(&chosen, &value);
                } else {
                    prop_assert_eq!(chosen.len(), 32);
                    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
                    prop_assert!(chosen.as_bytes().iter().all(hex));
                }
            }

            /// Addresses are written as `Display` writes them, cached or not.
            #[test]
            fn addresses_are_written_as_display_writes_them(ip in any_ip()) {
                let text = ip.to_string();
                prop_assert_eq!(address_value(ip), text.as_str());
                prop_assert_eq!(address_value_cached(ip), text.as_str());
            }
        }
    }
}
