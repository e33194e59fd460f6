//! Backend identity hiding: what a response must not tell the client about the servers behind
//! the proxy.
//!
//! Three leaks are closed here, each as a pure function over headers that the pipeline calls
//! while it rewrites a backend's response:
//!
//! - **Revealing headers** (`Server: Apache/2.4.1`, `X-Powered-By`, `X-Backend-Server: web-3`)
//!   name the software, its version or the machine. [`HidePolicy`] removes the configured names
//!   (`[security] hide_headers`, where `x-backend*` is a prefix).
//! - **Redirects to the backend's own address** (`Location: http://10.0.0.7:8080/next`) happen
//!   whenever a backend builds absolute URLs from its socket rather than from `Host`; the client
//!   would follow them straight past the proxy, or fail and learn the internal address.
//!   [`rewrite_location`] points them back at the host the client asked for.
//! - **Backend error pages** (stack traces, framework banners, internal host names) in 5xx
//!   bodies. [`should_replace_error_page`] says when the pipeline swaps the body for Gatehouse's
//!   generic page, and [`kept_error_headers`] which of the backend's headers survive the swap.
//!
//! Everything here works on bytes and never panics on what a backend sends.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, StatusCode};

use crate::config::SecuritySettings;

/// Headers no `hide_headers` entry may remove: the client needs them to frame, decode or follow
/// the response, and the proxy sets some of them itself (compression adds `Content-Encoding`
/// and `Vary` before identity hiding runs).
const PROTECTED: [&str; 9] = [
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "content-type",
    "location",
    "transfer-encoding",
    "upgrade",
    "vary",
];

/// The compiled `hide_headers` list: which response headers never reach the client.
///
/// Exact names and prefixes (`x-backend*` → `x-backend`) are short lists, all lower-case like
/// every [`HeaderName`]. Every response header is checked against them, so a mask of the exact
/// names' lengths turns most names away with one bit test, and a prefix is compared only with
/// names that start with its first byte: no allocation, and rarely a byte comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HidePolicy {
    /// Names removed exactly (valid header names, so lower case), sorted, without duplicates.
    exact: Vec<Box<str>>,
    /// Bit `n` is set when an exact name is `n` bytes long (bit 63: 63 bytes or more).
    exact_lengths: u64,
    /// Lower-case prefixes, none empty: a header whose name starts with one is removed.
    prefixes: Vec<Box<str>>,
    /// Bit `b` is set when a prefix starts with the (ASCII) byte `b`.
    prefix_starts: u128,
}

/// The bit of [`HidePolicy::exact_lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The bit of [`HidePolicy::prefix_starts`] for a name starting with `first` (none for a
/// non-ASCII byte, which no header name has).
fn start_bit(first: u8) -> u128 {
    1u128.checked_shl(u32::from(first)).unwrap_or(0)
}

impl HidePolicy {
    /// Compiles `settings.hide_headers`. An entry is a header name, or a name prefix followed by
    /// `*`; case does not matter.
    ///
    /// Refused: empty entries, a lone `*` (it would hide every header), `*` anywhere but at the
    /// end, bytes a header name cannot hold, and any entry that would remove a header the client
    /// needs to read the response (`Content-Type`, `Content-Length`, `Location`, ...).
    pub fn new(settings: &SecuritySettings) -> Result<HidePolicy, String> {
        HidePolicy::from_entries(&settings.hide_headers)
    }

    /// Compiles a list of `hide_headers` entries; see [`HidePolicy::new`].
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<HidePolicy, String> {
        let mut exact = Vec::new();
        let mut prefixes: Vec<Box<str>> = Vec::new();
        for entry in entries {
            let entry = entry.as_ref();
            let lower = entry.to_ascii_lowercase();
            match lower.strip_suffix('*') {
                Some("") => {
                    return Err(format!(
                        "hide_headers entry {entry:?} would hide every header; \
                         write a prefix before `*`, e.g. \"x-backend*\""
                    ));
                }
                Some(prefix) => {
                    check_name(entry, prefix)?;
                    if let Some(needed) = PROTECTED.iter().find(|p| p.starts_with(prefix)) {
                        return Err(protected_error(entry, needed));
                    }
                    prefixes.push(Box::from(prefix));
                }
                None => {
                    check_name(entry, &lower)?;
                    if PROTECTED.contains(&lower.as_str()) {
                        return Err(protected_error(entry, &lower));
                    }
                    let name = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
                        format!("hide_headers entry {entry:?} is not a header name")
                    })?;
                    exact.push(Box::<str>::from(name.as_str()));
                }
            }
        }
        // A prefix covered by a shorter one, or a name covered by a prefix, is redundant.
        prefixes.sort_by_key(|p| p.len());
        let mut kept: Vec<Box<str>> = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            if !kept.iter().any(|k| prefix.starts_with(&**k)) {
                kept.push(prefix);
            }
        }
        exact.retain(|name| !kept.iter().any(|k| name.starts_with(&**k)));
        exact.sort();
        exact.dedup();
        let exact_lengths = exact
            .iter()
            .fold(0, |mask, name| mask | length_bit(name.len()));
        let prefix_starts = kept
            .iter()
            .filter_map(|prefix| prefix.as_bytes().first())
            .fold(0, |mask, &first| mask | start_bit(first));
        Ok(HidePolicy {
            exact,
            exact_lengths,
            prefixes: kept,
            prefix_starts,
        })
    }

    /// True when the policy hides nothing (`hide_headers = []`).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// True when a response header called `name` is hidden.
    pub fn matches(&self, name: &HeaderName) -> bool {
        self.matches_str(name.as_str())
    }

    /// [`HidePolicy::matches`] for the text of a header name (lower case, as every
    /// [`HeaderName`] is).
    pub fn matches_str(&self, text: &str) -> bool {
        let Some(&first) = text.as_bytes().first() else {
            return false;
        };
        (self.exact_lengths & length_bit(text.len()) != 0
            && self.exact.iter().any(|hidden| **hidden == *text))
            || (self.prefix_starts & start_bit(first) != 0
                && self
                    .prefixes
                    .iter()
                    .any(|prefix| text.starts_with(&**prefix)))
    }

    /// Removes every hidden header (all of its values) from `headers`.
    ///
    /// One pass over the distinct names; nothing is allocated unless a header is removed.
    pub fn hide(&self, headers: &mut HeaderMap) {
        if self.is_empty() {
            return;
        }
        // Collecting from a filter allocates only once something matched.
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.matches(name))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

fn check_name(entry: &str, name: &str) -> Result<(), String> {
    if name.contains('*') {
        return Err(format!(
            "hide_headers entry {entry:?}: `*` may only end an entry (a name prefix)"
        ));
    }
    if name.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "hide_headers entry {entry:?} is not a header name (or name prefix)"
        ));
    }
    Ok(())
}

fn protected_error(entry: &str, needed: &str) -> String {
    format!(
        "hide_headers entry {entry:?} would remove {needed}, which clients need to read the response"
    )
}

// -------------------------------------------------------------------------------------------
// Location rewriting
// -------------------------------------------------------------------------------------------

/// Points `Location` and `Content-Location` values that name a backend back at the public host.
///
/// A value is rewritten when it is an absolute `http`/`https` URI (or a network-path reference,
/// `//host/...`) whose authority is `backend` or one of `all_backends`: host compared
/// case-insensitively (IP addresses as addresses, so `[::1]` matches `[0:0::1]`), port compared
/// with the scheme's default applied (`http://10.0.0.1/` is `10.0.0.1:80`). Its scheme and
/// authority become `public_scheme://public_host`; path, query and fragment are kept. Without a
/// usable public host (HTTP/1.0 without `Host`) the value becomes a relative reference from the
/// path on. Relative values and URIs of other sites are left alone.
///
/// `public_host` is the `Host` (or `:authority`) the client used, `public_scheme` the scheme of
/// the client's connection (`"http"` or `"https"`).
pub fn rewrite_location(
    headers: &mut HeaderMap,
    backend: &Authority,
    all_backends: &[Authority],
    public_host: Option<&HeaderValue>,
    public_scheme: &str,
) {
    rewrite_location_among(
        headers,
        std::iter::once(backend).chain(all_backends),
        public_host,
        public_scheme,
    );
}

/// [`rewrite_location`] over any cheap-to-clone iterator of backend authorities, so a caller
/// holding backends in another shape (`pool.backends.iter().map(|b| &b.authority)`) need not
/// collect them. The iterator is walked only when a `Location`/`Content-Location` is present.
pub fn rewrite_location_among<'a, I>(
    headers: &mut HeaderMap,
    backends: I,
    public_host: Option<&HeaderValue>,
    public_scheme: &str,
) where
    I: IntoIterator<Item = &'a Authority> + Clone,
{
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        rewrite_field(headers, name, backends.clone(), public_host, public_scheme);
    }
}

/// What a backend URI is rewritten to.
enum Target<'a> {
    /// `scheme://host` of the client's request.
    Public { scheme: &'a str, host: &'a [u8] },
    /// No public host known: a path-absolute reference.
    Relative,
}

impl<'a> Target<'a> {
    fn of(public_host: Option<&'a HeaderValue>, public_scheme: &'a str) -> Target<'a> {
        let scheme_ok = public_scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            && public_scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        match public_host {
            Some(host) if scheme_ok && crate::routing::is_valid_host(host.as_bytes()) => {
                Target::Public {
                    scheme: public_scheme,
                    host: host.as_bytes(),
                }
            }
            _ => Target::Relative,
        }
    }
}

fn rewrite_field<'a, I>(
    headers: &mut HeaderMap,
    name: HeaderName,
    backends: I,
    public_host: Option<&HeaderValue>,
    public_scheme: &str,
) where
    I: IntoIterator<Item = &'a Authority> + Clone,
{
    let values = headers.get_all(&name);
    // The common case: no such header, or one that names no backend (nothing allocated, and
    // the public host is not even validated).
    if !values
        .iter()
        .any(|v| backend_reference(v.as_bytes(), backends.clone()).is_some())
    {
        return;
    }
    let target = &Target::of(public_host, public_scheme);
    let replaced: Vec<HeaderValue> = values
        .iter()
        .filter_map(
            |value| match backend_reference(value.as_bytes(), backends.clone()) {
                None => Some(value.clone()),
                // A value that cannot be rebuilt is dropped rather than left naming the backend.
                Some(rest) => HeaderValue::from_bytes(&rebuild(&rest, target)).ok(),
            },
        )
        .collect();
    headers.remove(&name);
    for value in replaced {
        headers.append(name.clone(), value);
    }
}

/// If `value` is an absolute reference to one of `backends`, what follows its authority.
fn backend_reference<'a, 'v, I>(value: &'v [u8], backends: I) -> Option<Cow<'v, [u8]>>
where
    I: IntoIterator<Item = &'a Authority>,
{
    // Browsers drop tabs anywhere in a URL; a backend address split by one is still one.
    let cleaned: Cow<'v, [u8]> = if value.contains(&b'\t') {
        Cow::Owned(value.iter().copied().filter(|&b| b != b'\t').collect())
    } else {
        Cow::Borrowed(value)
    };
    let rest_at = {
        let reference = split_reference(trim(&cleaned))?;
        let host = parse_host(reference.host)?;
        let named = backends.into_iter().any(|backend| {
            port_matches(reference.port, backend.port_u16(), reference.defaults)
                && parse_host(backend.host().as_bytes()).is_some_and(|b| b.same_as(&host))
        });
        if !named {
            return None;
        }
        reference.rest_at
    };
    Some(match cleaned {
        Cow::Borrowed(bytes) => Cow::Borrowed(&trim(bytes)[rest_at..]),
        Cow::Owned(bytes) => Cow::Owned(trim(&bytes)[rest_at..].to_vec()),
    })
}

/// The new value: the target's scheme and authority (or nothing) before `rest`.
fn rebuild(rest: &[u8], target: &Target<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len() + 64);
    // Browsers read `\` as `/` in http(s) URLs; say `/` so every client reads the same path.
    let (first, tail) = match rest.split_first() {
        Some((b'\\', tail)) => (Some(b'/'), tail),
        Some((&first, tail)) => (Some(first), tail),
        None => (None, rest),
    };
    match target {
        Target::Public { scheme, host } => {
            out.extend_from_slice(scheme.as_bytes());
            out.extend_from_slice(b"://");
            out.extend_from_slice(host);
            if first != Some(b'/') {
                out.push(b'/');
            }
        }
        Target::Relative => match first {
            // `//evil.example/x` would be a network-path reference to another site; `/.//` is
            // the same path-absolute reference once dot segments are removed.
            Some(b'/') if tail.first().is_some_and(|&b| b == b'/' || b == b'\\') => {
                out.extend_from_slice(b"/.");
            }
            Some(b'/') => {}
            // Empty, `?query` or `#fragment`: relative to the root, as the absolute URI was.
            _ => out.push(b'/'),
        },
    }
    if let Some(first) = first {
        out.push(first);
    }
    out.extend_from_slice(tail);
    out
}

/// An absolute `http(s)` URI or network-path reference, split at its authority.
struct Reference<'a> {
    /// Ports an absent port stands for: the scheme's default (both for `//host`).
    defaults: &'static [u16],
    /// Host as written (brackets kept for IPv6), without userinfo or port.
    host: &'a [u8],
    /// Port as written; `None` when absent or empty.
    port: Option<u16>,
    /// Where the path (or query, or fragment) starts.
    rest_at: usize,
}

fn is_separator(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Splits an absolute `http`/`https` reference (or `//authority...`) the way browsers read
/// one: any run of `/` and `\` after the scheme, authority up to `/`, `\`, `?` or `#`.
fn split_reference(value: &[u8]) -> Option<Reference<'_>> {
    let (defaults, authority_from): (&'static [u16], usize) =
        if value.len() >= 2 && is_separator(value[0]) && is_separator(value[1]) {
            (&[80, 443], 0)
        } else {
            let colon = value.iter().position(|&b| b == b':')?;
            let scheme = &value[..colon];
            let defaults: &'static [u16] = if scheme.eq_ignore_ascii_case(b"http") {
                &[80]
            } else if scheme.eq_ignore_ascii_case(b"https") {
                &[443]
            } else {
                return None;
            };
            (defaults, colon + 1)
        };
    let start = value[authority_from..]
        .iter()
        .position(|&b| !is_separator(b))
        .map_or(value.len(), |i| authority_from + i);
    let end = value[start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'\\' | b'?' | b'#'))
        .map_or(value.len(), |i| start + i);
    let authority = &value[start..end];
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = split_host_port(host_port)?;
    Some(Reference {
        defaults,
        host,
        port,
        rest_at: end,
    })
}

fn split_host_port(host_port: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, port) = if host_port.first() == Some(&b'[') {
        let close = host_port.iter().position(|&b| b == b']')?;
        let (host, after) = host_port.split_at(close + 1);
        match after {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return None,
        }
    } else {
        match host_port.iter().position(|&b| b == b':') {
            Some(colon) => (&host_port[..colon], Some(&host_port[colon + 1..])),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Some((host, port))
}

/// A decimal port (leading zeros allowed, as browsers do) of at most 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    let mut port: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(d - b'0');
        if port > u32::from(u16::MAX) {
            return None;
        }
    }
    u16::try_from(port).ok()
}

fn port_matches(location: Option<u16>, backend: Option<u16>, defaults: &[u16]) -> bool {
    match (location, backend) {
        (Some(l), Some(b)) => l == b,
        (None, Some(b)) => defaults.contains(&b),
        (Some(l), None) => defaults.contains(&l),
        (None, None) => true,
    }
}

/// A host as an address or a name, for comparing a URI's host with a backend's.
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    /// An IP address (IPv4-mapped IPv6 counts as IPv4).
    Ip(IpAddr),
    /// A registered name, without its trailing dot.
    Name(Cow<'a, [u8]>),
}

impl Host<'_> {
    fn same_as(&self, other: &Host<'_>) -> bool {
        match (self, other) {
            (Host::Ip(a), Host::Ip(b)) => a == b,
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

fn parse_host(host: &[u8]) -> Option<Host<'_>> {
    if let Some(literal) = host.strip_prefix(b"[") {
        let literal = literal.strip_suffix(b"]")?;
        let address: Ipv6Addr = std::str::from_utf8(literal).ok()?.parse().ok()?;
        return Some(Host::Ip(IpAddr::V6(address).to_canonical()));
    }
    // Browsers percent-decode hosts: `10%2E0.0.1` is 10.0.0.1.
    let decoded: Cow<'_, [u8]> = if host.contains(&b'%') {
        Cow::Owned(percent_decode(host)?)
    } else {
        Cow::Borrowed(host)
    };
    if let Some(address) = std::str::from_utf8(&decoded).ok().and_then(parse_ipv4) {
        return Some(Host::Ip(IpAddr::V4(address)));
    }
    let name: Cow<'_, [u8]> = match decoded {
        Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix(b".").unwrap_or(b)),
        Cow::Owned(mut b) => {
            if b.last() == Some(&b'.') {
                b.pop();
            }
            Cow::Owned(b)
        }
    };
    (!name.is_empty()).then_some(Host::Name(name))
}

fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            // `from_str_radix` would take a sign: `%+1` is no escape.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let digits = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// An IPv4 address as browsers read a URL host (WHATWG URL, "IPv4 parser"): one to four
/// dot-separated parts, each decimal, `0x` hex or `0`-prefixed octal, the last filling the
/// remaining bytes; so `10.0.0.1`, `10.1`, `0xa.0.0.1` and `167772161` are one address.
/// `None` for anything that is not such a number.
fn parse_ipv4(text: &str) -> Option<Ipv4Addr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in text.split('.') {
        if count == 4 {
            return None;
        }
        parts[count] = parse_ipv4_number(part)?;
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let (last, leading) = (parts[count - 1], &parts[..count - 1]);
    if leading.iter().any(|&p| p > 255) || last >= 256u64.pow(5 - count as u32) {
        return None;
    }
    let mut address = last;
    for (i, &part) in leading.iter().enumerate() {
        address += part << (8 * (3 - i));
    }
    u32::try_from(address).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    // Browsers read any number of leading zeros (`0x00000000000a` is 10): only the digits
    // after them can make a number too long for an address.
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    // Long enough to overflow an address is not an address; from_str_radix refuses signs.
    if digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

// -------------------------------------------------------------------------------------------
// Error pages
// -------------------------------------------------------------------------------------------

/// True when a backend response with `status` is to be answered with Gatehouse's own error page
/// (`[security] replace_error_pages` is `settings_on`).
///
/// Every 5xx is replaced, 501 and 505 included: a server-error body is where stack traces,
/// framework banners and internal host names turn up, and Apache's or nginx's stock 501 page
/// names the server software just as its 500 page does. The status is kept, so clients lose
/// nothing they could act on. 4xx bodies pass: they are the application's answer (validation
/// errors, a designed 404) and the client needs them.
pub fn should_replace_error_page(settings_on: bool, status: StatusCode) -> bool {
    settings_on && status.is_server_error()
}

/// The backend headers a replaced error page carries over; everything else of the backend's
/// response is dropped with its body.
///
/// - `Retry-After`, when it is a delay in seconds or an HTTP date: it tells clients when to come
///   back after a 503, and a number or a date reveals nothing (any other text might).
/// - `Access-Control-Allow-Origin` and `Access-Control-Allow-Credentials`: without them a
///   browser hides the response from the page's script, which then sees a network error instead
///   of a 500 it could report or retry. They name the client's origin, not the backend.
///
/// Gatehouse's own headers (request id, HSTS, `Via`, the sticky cookie, configured edits) are not
/// here: the pipeline adds them to the page as to any response.
pub fn kept_error_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    if let Some(value) = headers.get(header::RETRY_AFTER)
        && is_retry_after(value.as_bytes())
    {
        kept.insert(header::RETRY_AFTER, value.clone());
    }
    if let Some(value) = headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        && is_allowed_origin(value.as_bytes())
    {
        kept.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value.clone());
    }
    if let Some(value) = headers.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        && value.as_bytes() == b"true"
    {
        kept.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, value.clone());
    }
    kept
}

/// `delay-seconds` or an IMF-fixdate (RFC 9110 §10.2.3, §5.6.7), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_retry_after(value: &[u8]) -> bool {
    if !value.is_empty() && value.len() <= 10 && value.iter().all(u8::is_ascii_digit) {
        return true;
    }
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let digits = |range: std::ops::Range<usize>| value[range].iter().all(u8::is_ascii_digit);
    value.len() == 29
        && DAYS.contains(&&value[0..3])
        && &value[3..5] == b", "
        && digits(5..7)
        && value[7] == b' '
        && MONTHS.contains(&&value[8..11])
        && value[11] == b' '
        && digits(12..16)
        && value[16] == b' '
        && digits(17..19)
        && value[19] == b':'
        && digits(20..22)
        && value[22] == b':'
        && digits(23..25)
        && &value[25..] == b" GMT"
}

/// `*`, `null` or a serialized origin (`scheme://host[:port]`).
fn is_allowed_origin(value: &[u8]) -> bool {
    if value == b"*" || value == b"null" {
        return true;
    }
    let Some(sep) = value.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let scheme = &value[..sep];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && crate::routing::is_valid_host(&value[sep + 3..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    fn default_policy() -> HidePolicy {
        HidePolicy::new(&SecuritySettings::default()).expect("the default list compiles")
    }

    // --- hide_headers ------------------------------------------------------------------------

    #[test]
    fn the_default_list_hides_software_and_backend_names() {
        let mut map = headers(&[
            ("Server", "Apache/2.4.1 (Unix)"),
            ("X-Powered-By", "PHP/8.2"),
            ("X-AspNet-Version", "4.0.30319"),
            ("X-AspNetMvc-Version", "5.2"),
            ("X-Runtime", "0.012"),
            ("X-Backend-Server", "web-3"),
            ("x-backend-id", "7"),
            ("X-Upstream-Addr", "10.0.0.7:8080"),
            ("X-Served-By", "cache-fra1"),
            ("X-Generator", "Drupal 10"),
            ("Content-Type", "text/html"),
            ("Cache-Control", "no-cache"),
            ("X-Request-Id", "abc"),
        ]);
        default_policy().hide(&mut map);
        assert_eq!(
            names(&map),
            ["cache-control", "content-type", "x-request-id"]
        );
    }

    #[test]
    fn every_value_of_a_hidden_header_goes() {
        let mut map = headers(&[("x-backend", "a"), ("X-Backend", "b"), ("date", "now")]);
        default_policy().hide(&mut map);
        assert_eq!(names(&map), ["date"]);
    }

    #[test]
    fn entries_are_case_insensitive_and_prefixes_end_in_a_star() {
        let policy = HidePolicy::from_entries(&["X-Secret", "X-INTERNAL-*"]).unwrap();
        let mut map = headers(&[
            ("x-secret", "1"),
            ("X-SECRET-NOT", "kept: not a prefix entry"),
            ("x-internal-node", "db01"),
            ("X-Internal-", "empty rest still matches"),
            ("x-internal", "kept: shorter than the prefix"),
            ("server", "kept: the list replaces the defaults"),
        ]);
        policy.hide(&mut map);
        assert_eq!(names(&map), ["server", "x-internal", "x-secret-not"]);
    }

    #[test]
    fn a_response_without_hidden_headers_is_untouched() {
        let mut map = headers(&[("content-type", "text/plain"), ("etag", "\"x\"")]);
        let before = map.clone();
        default_policy().hide(&mut map);
        assert_eq!(map, before);
        let mut empty = HeaderMap::new();
        default_policy().hide(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn an_empty_list_hides_nothing() {
        let policy = HidePolicy::from_entries::<&str>(&[]).unwrap();
        assert!(policy.is_empty());
        assert_eq!(policy, HidePolicy::default());
        let mut map = headers(&[("server", "Apache")]);
        policy.hide(&mut map);
        assert_eq!(names(&map), ["server"]);
    }

    #[test]
    fn long_names_and_names_of_a_hidden_length_are_told_apart() {
        let long = "x-".repeat(40);
        let longer = format!("{long}z");
        let policy = HidePolicy::from_entries(&[long.as_str(), "x-tag"]).unwrap();
        let name = |text: &str| HeaderName::from_bytes(text.as_bytes()).unwrap();
        assert!(policy.matches(&name(&long)));
        assert!(!policy.matches(&name(&longer)));
        assert!(policy.matches(&name("x-tag")));
        // Same length as `x-tag`, or the same first byte as the long entry: still kept.
        assert!(!policy.matches(&name("x-taf")));
        assert!(!policy.matches(&name("x-ta")));
        assert!(HidePolicy::default().is_empty());
        assert!(!HidePolicy::default().matches(&name("server")));
    }

    #[test]
    fn redundant_entries_collapse() {
        let policy = HidePolicy::from_entries(&[
            "x-backend-id",
            "x-backend*",
            "x-back*",
            "server",
            "SERVER",
        ])
        .unwrap();
        assert_eq!(policy.prefixes, vec![Box::from("x-back")]);
        assert_eq!(policy.exact, vec![Box::from("server")]);
    }

    #[test]
    fn invalid_entries_are_refused_with_the_entry_named() {
        for (entry, says) in [
            ("*", "every header"),
            ("", "not a header name"),
            ("x-*-id", "may only end"),
            ("*x", "may only end"),
            ("x backend", "not a header name"),
            ("x-é", "not a header name"),
            ("content-type", "content-type"),
            ("Content-Length", "content-length"),
            ("content-*", "content-encoding"),
            ("loc*", "location"),
            ("transfer-encoding", "transfer-encoding"),
            ("vary", "vary"),
        ] {
            let error = HidePolicy::from_entries(&[entry]).expect_err(entry);
            assert!(error.contains(says), "{entry:?}: {error}");
            assert!(error.contains(&format!("{entry:?}")), "{entry:?}: {error}");
        }
    }

    #[test]
    fn settings_compile_through_new() {
        let settings = SecuritySettings {
            hide_headers: vec!["x-secret".to_owned()],
            ..SecuritySettings::default()
        };
        let policy = HidePolicy::new(&settings).unwrap();
        assert!(policy.matches(&HeaderName::from_static("x-secret")));
        assert!(!policy.matches(&header::SERVER));
    }

    // --- Location ----------------------------------------------------------------------------

    fn authority(text: &str) -> Authority {
        text.parse().unwrap()
    }

    /// The `Location` a client sees when `backend` (in a pool with `others`) answers with
    /// `location`, the client having asked for `public` over `scheme`.
    fn relocated(
        location: &str,
        backend: &str,
        others: &[&str],
        public: Option<&str>,
        scheme: &str,
    ) -> String {
        let mut map = headers(&[("location", location)]);
        let all: Vec<Authority> = others.iter().map(|o| authority(o)).collect();
        let public = public.map(|p| HeaderValue::from_str(p).unwrap());
        rewrite_location(&mut map, &authority(backend), &all, public.as_ref(), scheme);
        let values: Vec<_> = map.get_all("location").iter().collect();
        assert_eq!(values.len(), 1, "{values:?}");
        values[0].to_str().unwrap().to_owned()
    }

    fn public(location: &str, backend: &str) -> String {
        relocated(location, backend, &[], Some("shop.example"), "https")
    }

    #[test]
    fn a_location_at_the_backend_points_at_the_public_host() {
        assert_eq!(
            public("http://10.0.0.1:8080/next?x=1#top", "10.0.0.1:8080"),
            "https://shop.example/next?x=1#top"
        );
        assert_eq!(
            relocated(
                "http://127.0.0.1:9000/a",
                "127.0.0.1:9000",
                &[],
                Some("127.0.0.1:4000"),
                "http"
            ),
            "http://127.0.0.1:4000/a"
        );
        // Nothing after the authority, or only a query.
        assert_eq!(
            public("http://10.0.0.1:8080", "10.0.0.1:8080"),
            "https://shop.example/"
        );
        assert_eq!(
            public("http://10.0.0.1:8080?q", "10.0.0.1:8080"),
            "https://shop.example/?q"
        );
    }

    #[test]
    fn host_and_scheme_compare_case_insensitively() {
        assert_eq!(
            public("HTTP://App.Internal:8080/x", "app.internal:8080"),
            "https://shop.example/x"
        );
        assert_eq!(
            public("http://app.internal.:8080/x", "APP.internal:8080"),
            "https://shop.example/x"
        );
    }

    #[test]
    fn default_ports_are_the_schemes() {
        assert_eq!(
            public("http://10.0.0.1/", "10.0.0.1:80"),
            "https://shop.example/"
        );
        assert_eq!(
            public("http://10.0.0.1:/", "10.0.0.1:80"),
            "https://shop.example/"
        );
        assert_eq!(
            public("https://10.0.0.1/s", "10.0.0.1:443"),
            "https://shop.example/s"
        );
        assert_eq!(
            public("http://10.0.0.1:080/", "10.0.0.1:80"),
            "https://shop.example/"
        );
        // Another port of the same machine is another service.
        assert_eq!(
            public("https://10.0.0.1/", "10.0.0.1:80"),
            "https://10.0.0.1/"
        );
        assert_eq!(
            public("http://10.0.0.1:8081/", "10.0.0.1:8080"),
            "http://10.0.0.1:8081/"
        );
    }

    #[test]
    fn ipv6_backends_match_in_any_spelling() {
        assert_eq!(
            public("http://[::1]:8080/v6", "[::1]:8080"),
            "https://shop.example/v6"
        );
        assert_eq!(
            public("http://[0:0:0:0:0:0:0:1]:8080/v6", "[::1]:8080"),
            "https://shop.example/v6"
        );
        assert_eq!(
            public("http://[::ffff:10.0.0.1]:8080/", "10.0.0.1:8080"),
            "https://shop.example/"
        );
        assert_eq!(
            public("http://[::2]:8080/v6", "[::1]:8080"),
            "http://[::2]:8080/v6"
        );
    }

    #[test]
    fn ip_addresses_match_as_browsers_read_them() {
        for spelling in [
            "http://10.0.0.1:8080/p",
            "http://10.0.0.1.:8080/p",
            "http://0xa.0.0.1:8080/p",
            "http://012.0.0.1:8080/p",
            "http://10.1:8080/p",
            "http://167772161:8080/p",
            "http://10%2E0.0.1:8080/p",
            "http://user:pw@10.0.0.1:8080/p",
            "http:\\\\10.0.0.1:8080/p",
            "http:/10.0.0.1:8080/p",
            "  http://10.0.0.1:8080/p  ",
            "http://10.0.\t0.1:8080/p",
        ] {
            assert_eq!(
                public(spelling, "10.0.0.1:8080"),
                "https://shop.example/p",
                "{spelling:?}"
            );
        }
    }

    #[test]
    fn any_backend_of_the_pool_is_recognised() {
        assert_eq!(
            relocated(
                "http://10.0.0.2:8080/x",
                "10.0.0.1:8080",
                &["10.0.0.1:8080", "10.0.0.2:8080"],
                Some("shop.example"),
                "http"
            ),
            "http://shop.example/x"
        );
    }

    #[test]
    fn other_sites_and_relative_references_are_untouched() {
        for location in [
            "https://example.org/elsewhere",
            "http://10.0.0.10:8080/x",
            "http://10.0.0.1.evil.example:8080/x",
            "http://evil.example/10.0.0.1:8080",
            "/relative?x=1",
            "next",
            "?q=1",
            "mailto:ops@10.0.0.1",
            "ftp://10.0.0.1:8080/x",
            "http://10.0.0.1:99999/x",
            "http://[::1/x",
            "http://10.0.0.1:8080%zz/",
            "",
        ] {
            assert_eq!(public(location, "10.0.0.1:8080"), location, "{location:?}");
        }
    }

    #[test]
    fn without_a_public_host_the_location_becomes_relative() {
        let relative = |location: &str| relocated(location, "10.0.0.1:8080", &[], None, "http");
        assert_eq!(relative("http://10.0.0.1:8080/next?x=1"), "/next?x=1");
        assert_eq!(relative("http://10.0.0.1:8080"), "/");
        assert_eq!(relative("http://10.0.0.1:8080?x"), "/?x");
        assert_eq!(relative("http://10.0.0.1:8080#f"), "/#f");
        assert_eq!(relative("http://10.0.0.1:8080\\x"), "/x");
        // Never a network-path reference to some other site.
        assert_eq!(
            relative("http://10.0.0.1:8080//evil.example/x"),
            "/.//evil.example/x"
        );
        assert_eq!(
            relative("http://10.0.0.1:8080/\\evil.example/x"),
            "/./\\evil.example/x"
        );
        assert_eq!(
            relative("http://10.0.0.1:8080\\\\evil.example/x"),
            "/./\\evil.example/x"
        );
        // An unusable public host or scheme counts as none.
        assert_eq!(
            relocated(
                "http://10.0.0.1:8080/n",
                "10.0.0.1:8080",
                &[],
                Some("evil.example/x"),
                "http"
            ),
            "/n"
        );
        assert_eq!(
            relocated(
                "http://10.0.0.1:8080/n",
                "10.0.0.1:8080",
                &[],
                Some("shop.example"),
                "ht tp"
            ),
            "/n"
        );
    }

    #[test]
    fn network_path_references_to_the_backend_are_rewritten() {
        assert_eq!(
            public("//10.0.0.1:8080/n", "10.0.0.1:8080"),
            "https://shop.example/n"
        );
        assert_eq!(
            public("//10.0.0.1/n", "10.0.0.1:80"),
            "https://shop.example/n"
        );
        assert_eq!(
            public("//10.0.0.1/n", "10.0.0.1:443"),
            "https://shop.example/n"
        );
    }

    #[test]
    fn content_location_is_rewritten_too_and_other_headers_are_not() {
        let mut map = headers(&[
            ("content-location", "http://10.0.0.1:8080/doc.en"),
            ("link", "<http://10.0.0.1:8080/style.css>; rel=preload"),
        ]);
        let public = HeaderValue::from_static("shop.example");
        rewrite_location(
            &mut map,
            &authority("10.0.0.1:8080"),
            &[],
            Some(&public),
            "http",
        );
        assert_eq!(map["content-location"], "http://shop.example/doc.en");
        assert!(!map.contains_key("location"));
        assert_eq!(map["link"], "<http://10.0.0.1:8080/style.css>; rel=preload");
    }

    #[test]
    fn every_value_of_a_repeated_location_is_checked() {
        let mut map = headers(&[
            ("location", "https://example.org/"),
            ("location", "http://10.0.0.1:8080/b"),
        ]);
        let public = HeaderValue::from_static("shop.example");
        rewrite_location(
            &mut map,
            &authority("10.0.0.1:8080"),
            &[],
            Some(&public),
            "http",
        );
        let values: Vec<_> = map.get_all("location").iter().collect();
        assert_eq!(values, ["https://example.org/", "http://shop.example/b"]);
    }

    #[test]
    fn non_utf8_paths_survive_the_rewrite() {
        let mut map = HeaderMap::new();
        map.insert(
            header::LOCATION,
            HeaderValue::from_bytes(b"http://10.0.0.1:8080/caf\xe9").unwrap(),
        );
        rewrite_location(&mut map, &authority("10.0.0.1:8080"), &[], None, "http");
        assert_eq!(map["location"].as_bytes(), b"/caf\xe9");
    }

    #[test]
    fn the_iterator_form_needs_no_collected_list() {
        let pool = [authority("10.0.0.1:8080"), authority("10.0.0.2:8080")];
        let mut map = headers(&[("location", "http://10.0.0.2:8080/x")]);
        rewrite_location_among(&mut map, pool.iter(), None, "http");
        assert_eq!(map["location"], "/x");
    }

    #[test]
    fn ipv4_reading_follows_the_url_standard() {
        let ip = |text: &str| parse_ipv4(text).map(|a| a.to_string());
        assert_eq!(ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("0x7f.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("0177.0.0.01").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("4294967295").as_deref(), Some("255.255.255.255"));
        assert_eq!(ip("0x").as_deref(), Some("0.0.0.0"));
        for not_ipv4 in [
            "",
            "4294967296",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "app.internal",
            "1..2",
            "09.0.0.1",
            "+1.0.0.1",
            "99999999999999999999",
        ] {
            assert_eq!(ip(not_ipv4), None, "{not_ipv4:?}");
        }
    }

    /// Regression (found by `numeric_hosts_read_as_the_url_standard_reads_them`): a number part
    /// of more than twelve digits was refused even when leading zeros made it long, so a
    /// `Location` naming the backend as browsers read it (`00000000000012.0.0.1` is 10.0.0.1)
    /// went out unrewritten.
    #[test]
    fn leading_zeros_do_not_make_an_address_part_too_long() {
        let ip = |text: &str| parse_ipv4(text).map(|a| a.to_string());
        assert_eq!(ip("00000100000000").as_deref(), Some("1.0.0.0"));
        assert_eq!(ip("0x0000000000000a.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("00000000000012.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("0x0000000100000000"), None);
        assert_eq!(
            public("http://0x000000000000a.0.0.1:8080/p", "10.0.0.1:8080"),
            "https://shop.example/p"
        );
    }

    /// Regression (found by `percent_decoding_decodes_exactly_the_escapes`): `%+0` was decoded
    /// as a NUL byte, because `u8::from_str_radix` takes a leading `+`; it is no escape.
    #[test]
    fn a_sign_is_not_a_hex_digit_of_an_escape() {
        assert_eq!(percent_decode(b"%+0"), None);
        assert_eq!(percent_decode(b"a%2Eb"), Some(b"a.b".to_vec()));
    }

    // --- error pages -------------------------------------------------------------------------

    #[test]
    fn only_server_errors_are_replaced_and_only_when_asked() {
        for code in [500, 501, 502, 503, 504, 505, 507, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(should_replace_error_page(true, status), "{code}");
            assert!(!should_replace_error_page(false, status), "{code}");
        }
        for code in [200, 204, 301, 304, 400, 401, 404, 429, 499] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(!should_replace_error_page(true, status), "{code}");
        }
    }

    #[test]
    fn a_replaced_page_keeps_retry_after_and_cors_only() {
        let backend = headers(&[
            ("retry-after", "120"),
            ("access-control-allow-origin", "https://app.example"),
            ("access-control-allow-credentials", "true"),
            ("server", "Apache/2.4.1"),
            ("x-debug", "db01.internal"),
            ("set-cookie", "SERVERID=web-3"),
            ("content-type", "text/html"),
            ("content-length", "1234"),
            ("location", "http://10.0.0.1:8080/"),
        ]);
        let kept = kept_error_headers(&backend);
        assert_eq!(
            names(&kept),
            [
                "access-control-allow-credentials",
                "access-control-allow-origin",
                "retry-after"
            ]
        );
        assert_eq!(kept["retry-after"], "120");
    }

    #[test]
    fn retry_after_is_kept_only_as_seconds_or_a_date() {
        let kept = |value: &str| {
            kept_error_headers(&headers(&[("retry-after", value)])).contains_key("retry-after")
        };
        assert!(kept("0"));
        assert!(kept("3600"));
        assert!(kept("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(!kept("db01 is down, try in 5"));
        assert!(!kept("-1"));
        assert!(!kept("12345678901"));
        assert!(!kept("Sun, 06 Nov 1994 08:49:37 UTC"));
        assert!(!kept("Sunday, 06-Nov-94 08:49:37 GMT"));
        assert!(!kept(""));
    }

    #[test]
    fn cors_headers_are_kept_only_when_well_formed() {
        let kept = |name: &str, value: &str| {
            kept_error_headers(&headers(&[(name, value)])).contains_key(name)
        };
        assert!(kept("access-control-allow-origin", "*"));
        assert!(kept("access-control-allow-origin", "null"));
        assert!(kept("access-control-allow-origin", "http://localhost:3000"));
        assert!(!kept(
            "access-control-allow-origin",
            "https://a.example/path"
        ));
        assert!(!kept("access-control-allow-origin", "backend db01"));
        assert!(kept("access-control-allow-credentials", "true"));
        assert!(!kept("access-control-allow-credentials", "yes"));
    }

    /// Random values against simple models: the URL standard's IPv4 reader, percent-decoding,
    /// which `Location` values name the backend, what a `Retry-After` may be and which headers
    /// a policy hides; and an answer, never a panic, for any bytes a backend sends.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// The WHATWG URL "IPv4 number parser": `None` for failure; numbers too large for a
        /// `u128` saturate (they are refused either way).
        fn model_number(part: &str) -> Option<u128> {
            if part.is_empty() {
                return None;
            }
            let (digits, radix) = match part.get(..2) {
                Some("0x" | "0X") => (part.get(2..)?, 16),
                Some(_) if part.starts_with('0') => (part.get(1..)?, 8),
                _ => (part, 10),
            };
            digits.chars().try_fold(0u128, |n, c| {
                let digit = c.to_digit(radix)?;
                Some(
                    n.saturating_mul(u128::from(radix))
                        .saturating_add(u128::from(digit)),
                )
            })
        }

        /// The WHATWG URL "IPv4 parser", with failure as `None`.
        fn model_ipv4(text: &str) -> Option<Ipv4Addr> {
            let mut parts: Vec<&str> = text.split('.').collect();
            if parts.len() > 1 && parts.last() == Some(&"") {
                parts.pop();
            }
            if parts.len() > 4 {
                return None;
            }
            let numbers: Vec<u128> = parts
                .iter()
                .map(|p| model_number(p))
                .collect::<Option<_>>()?;
            let (&last, leading) = numbers.split_last()?;
            let count = u32::try_from(numbers.len()).ok()?;
            if leading.iter().any(|&n| n > 255) || last >= 256u128.pow(5 - count) {
                return None;
            }
            let mut address = last;
            for (n, shift) in leading.iter().zip([24, 16, 8]) {
                address += n << shift;
            }
            u32::try_from(address).ok().map(Ipv4Addr::from)
        }

        /// A part of a numeric host: a number in any radix with any leading zeros, or
        /// something that looks almost like one.
        fn ipv4_part() -> impl Strategy<Value = String> {
            let number = (
                prop_oneof![0u64..=255, 0u64..=0xffff_ffff, any::<u64>()],
                0..3u8,
                0..18usize,
                any::<bool>(),
            )
                .prop_map(|(value, radix, zeros, upper)| {
                    let zeros = "0".repeat(zeros);
                    match (radix, upper) {
                        (0, _) => format!("{zeros}{value}"),
                        (1, _) => format!("0{zeros}{value:o}"),
                        (_, false) => format!("0x{zeros}{value:x}"),
                        (_, true) => format!("0X{zeros}{value:X}"),
                    }
                });
            let odd = prop::sample::select(vec![
                "", "0", "0x", "0X", "09", "1a", "+1", "-1", "0x+1", "0xg", " 1", "é", "٣",
            ])
            .prop_map(str::to_owned);
            prop_oneof![8 => number, 1 => odd]
        }

        fn numeric_host() -> impl Strategy<Value = String> {
            (vec(ipv4_part(), 1..=5), any::<bool>()).prop_map(|(parts, dot)| {
                let mut text = parts.join(".");
                if dot {
                    text.push('.');
                }
                text
            })
        }

        /// Percent-decoding as the URL standard does it, except that a `%` not followed by
        /// two hex digits refuses the host (the standard leaves it, and then refuses the host).
        fn model_percent_decode(text: &[u8]) -> Option<Vec<u8>> {
            let mut out = Vec::new();
            let mut rest = text;
            while let Some((&byte, tail)) = rest.split_first() {
                if byte != b'%' {
                    out.push(byte);
                    rest = tail;
                    continue;
                }
                let [high, low, after @ ..] = tail else {
                    return None;
                };
                let high = char::from(*high).to_digit(16)?;
                let low = char::from(*low).to_digit(16)?;
                out.push(u8::try_from(high * 16 + low).ok()?);
                rest = after;
            }
            Some(out)
        }

        /// How a `Location` may spell an IPv4 host: dotted, with a trailing dot, hex, octal, fewer
        /// parts, one number, percent-encoded dots, as a mapped IPv6 literal.
        fn ipv4_spelling(address: Ipv4Addr, style: u8) -> String {
            let [a, b, c, d] = address.octets();
            let n = u32::from(address);
            match style % 9 {
                0 => address.to_string(),
                1 => format!("{address}."),
                2 => format!("0x{a:x}.0X{b:X}.0x{c:02x}.{d}"),
                3 => format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
                4 => format!("{a}.{}", n & 0xff_ffff),
                5 => format!("{a}.{b}.{}", n & 0xffff),
                6 => n.to_string(),
                7 => format!("{a}%2E{b}%2e{c}.{d}"),
                _ => format!("[{}]", address.to_ipv6_mapped()),
            }
        }

        fn ipv6_spelling(address: Ipv6Addr, style: u8) -> String {
            match style % 3 {
                0 => format!("[{address}]"),
                1 => format!(
                    "[{}]",
                    address.segments().map(|s| format!("{s:04X}")).join(":")
                ),
                _ => format!("[{}]", address.to_string().to_uppercase()),
            }
        }

        /// A backend address, or one close to it (so both outcomes are common).
        fn address_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
            let v4 = (any::<u32>(), prop_oneof![Just(0u32), Just(1), any::<u32>()]).prop_map(
                |(a, delta)| {
                    (
                        IpAddr::from(a.to_be_bytes()),
                        IpAddr::from((a ^ delta).to_be_bytes()),
                    )
                },
            );
            let v6 = (
                any::<u128>(),
                prop_oneof![Just(0u128), Just(1), any::<u128>()],
            )
                .prop_map(|(a, delta)| {
                    (
                        IpAddr::V6(Ipv6Addr::from(a)),
                        IpAddr::V6(Ipv6Addr::from(a ^ delta)),
                    )
                });
            prop_oneof![v4, v6]
        }

        /// A byte a field value may hold: visible ASCII, space, tab and obs-text.
        fn field_byte() -> impl Strategy<Value = u8> {
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 2 => 0x80u8..=0xff]
        }

        /// Text made of the pieces of `Location` values that name a backend, in any order.
        fn location_noise() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop::sample::select(vec![
                "http:",
                "HTTPS:",
                "//",
                "/",
                "\\",
                "10.0.0.1",
                "0xa.0.0.1",
                "167772161",
                "[::1]",
                "[::ffff:10.0.0.1]",
                "[",
                "]",
                ":8080",
                ":80",
                ":",
                ":99999999999",
                "@",
                "?",
                "#",
                "%2E",
                "%",
                "%+1",
                "\t",
                " ",
                ".",
                "a",
                "é",
            ]);
            vec(piece, 0..16).prop_map(|pieces| pieces.concat().into_bytes())
        }

        fn backends() -> Vec<Authority> {
            [
                "10.0.0.1:8080",
                "[::1]:8080",
                "10.0.0.1:80",
                "app.internal:443",
            ]
            .map(|a| a.parse().unwrap())
            .to_vec()
        }

        /// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as a `Retry-After` reader must take it.
        fn http_date() -> impl Strategy<Value = String> {
            (
                0..7usize,
                0..32u8,
                0..12usize,
                0..10000u16,
                0..24u8,
                0..60u8,
                0..61u8,
            )
                .prop_map(|(day, date, month, year, hour, minute, second)| {
                    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
                    let months = [
                        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                        "Nov", "Dec",
                    ];
                    format!(
                        "{}, {date:02} {} {year:04} {hour:02}:{minute:02}:{second:02} GMT",
                        days[day], months[month]
                    )
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn numeric_hosts_read_as_the_url_standard_reads_them(text in numeric_host()) {
                prop_assert_eq!(parse_ipv4(&text), model_ipv4(&text), "{:?}", text);
            }

            #[test]
            fn percent_decoding_decodes_exactly_the_escapes(
                text in vec(
                    prop::sample::select(b"%%%+-0aFg. \xc3\xa9".to_vec()),
                    0..16,
                ),
            ) {
                prop_assert_eq!(percent_decode(&text), model_percent_decode(&text));
            }

            #[test]
            fn ports_are_read_by_value(
                digits in prop_oneof![
                    "[0-9]{1,12}",
                    "0{0,20}[0-9]{1,6}",
                    "[0-9+ -]{1,6}",
                ],
            ) {
                let model = digits
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| digits.trim_start_matches('0'))
                    .and_then(|d| if d.is_empty() { Some(0) } else { d.parse::<u16>().ok() });
                prop_assert_eq!(parse_port(digits.as_bytes()), model, "{:?}", digits);
            }

            /// The backend's address in any spelling, with or without its port, is rewritten to
            /// the public host, the rest kept; another address or port is left alone.
            #[test]
            fn a_location_is_rewritten_exactly_when_it_names_the_backend(
                (backend_ip, location_ip) in address_pair(),
                backend_port in prop_oneof![Just(80u16), Just(443), Just(8080), any::<u16>()],
                location_port in prop_oneof![
                    Just(None),
                    Just(Some(80u16)),
                    Just(Some(443)),
                    Just(Some(8080)),
                    any::<u16>().prop_map(Some),
                ],
                zero_padded in any::<bool>(),
                scheme in 0..5usize,
                style in any::<u8>(),
                userinfo in prop_oneof![Just(""), Just("user:pw@"), Just("@")],
                rest in "(/[a-z0-9.]{0,5}){0,3}(\\?[a-z=/]{0,5})?(#[a-z]{0,4})?",
            ) {
                let (scheme_text, defaults): (&str, &[u16]) =
                    [("http://", &[80][..]), ("HTTPS://", &[443]), ("//", &[80, 443]),
                     ("http:\\\\", &[80]), ("https:/", &[443])][scheme];
                let host = match location_ip {
                    IpAddr::V4(a) => ipv4_spelling(a, style),
                    IpAddr::V6(a) => ipv6_spelling(a, style),
                };
                let port = match location_port {
                    None => String::new(),
                    Some(p) if zero_padded => format!(":0{p}"),
                    Some(p) => format!(":{p}"),
                };
                let location = format!("{scheme_text}{userinfo}{host}{port}{rest}");
                let backend: Authority = match backend_ip {
                    IpAddr::V4(a) => format!("{a}:{backend_port}"),
                    IpAddr::V6(a) => format!("[{a}]:{backend_port}"),
                }
                .parse()
                .unwrap();
                let named = location_ip.to_canonical() == backend_ip.to_canonical()
                    && location_port.map_or(defaults.contains(&backend_port), |p| p == backend_port);
                let expected = if named {
                    let slash = if rest.starts_with('/') { "" } else { "/" };
                    format!("https://shop.example{slash}{rest}")
                } else {
                    location.clone()
                };
                let mut map = HeaderMap::new();
                map.insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
                let public = HeaderValue::from_static("shop.example");
                rewrite_location(&mut map, &backend, &[], Some(&public), "https");
                prop_assert_eq!(
                    map.get(header::LOCATION).map(HeaderValue::as_bytes),
                    Some(expected.as_bytes()),
                    "{} from {}", location, backend
                );
            }

            /// Whatever a backend writes, what reaches the client names no backend: rewriting
            /// the result again finds nothing to rewrite.
            #[test]
            fn no_rewritten_location_names_a_backend(
                values in vec(prop_oneof![location_noise(), vec(field_byte(), 0..48)], 1..4),
                public in prop_oneof![
                    Just(None),
                    Just(Some("shop.example")),
                    Just(Some("shop.example:8443")),
                    Just(Some("bad host")),
                ],
            ) {
                let backends = backends();
                let mut map = HeaderMap::new();
                for value in &values {
                    map.append(header::LOCATION, HeaderValue::from_bytes(value).unwrap());
                }
                let public = public.map(HeaderValue::from_static);
                rewrite_location_among(&mut map, backends.iter(), public.as_ref(), "https");
                prop_assert!(map.get_all(header::LOCATION).iter().count() <= values.len());
                for value in map.get_all(header::LOCATION) {
                    prop_assert!(
                        backend_reference(value.as_bytes(), backends.iter()).is_none(),
                        "{:?} from {:?}", value, values
                    );
                }
            }

            #[test]
            fn retry_after_is_seconds_or_a_date_and_nothing_else(
                value in prop_oneof![
                    http_date().prop_map(String::into_bytes),
                    "[0-9]{1,12}".prop_map(String::into_bytes),
                    (http_date(), 0..29usize, field_byte()).prop_map(|(date, at, byte)| {
                        let mut bytes = date.into_bytes();
                        if let Some(b) = bytes.get_mut(at) {
                            *b = byte;
                        }
                        bytes
                    }),
                    vec(field_byte(), 0..40),
                ],
            ) {
                let model = regex::bytes::Regex::new(
                    "^(?-u:[0-9]{1,10}|(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} \
                     (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} \
                     [0-9]{2}:[0-9]{2}:[0-9]{2} GMT)$",
                )
                .unwrap();
                prop_assert_eq!(is_retry_after(&value), model.is_match(&value), "{:?}", value);
            }

            #[test]
            fn a_replaced_page_keeps_only_what_it_was_sent(
                retry in vec(field_byte(), 0..40),
                origin in prop_oneof![
                    vec(field_byte(), 0..40),
                    "[a-z+.-]{0,6}://[a-z0-9.:\\[\\]@/-]{0,20}".prop_map(String::into_bytes),
                ],
                credentials in vec(field_byte(), 0..8),
            ) {
                let mut sent = HeaderMap::new();
                for (name, value) in [
                    (header::RETRY_AFTER, &retry),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, &origin),
                    (header::ACCESS_CONTROL_ALLOW_CREDENTIALS, &credentials),
                ] {
                    sent.insert(name, HeaderValue::from_bytes(value).unwrap());
                }
                let kept = kept_error_headers(&sent);
                for (name, value) in &kept {
                    prop_assert_eq!(Some(value), sent.get(name));
                }
            }

            #[test]
            fn a_policy_hides_what_its_entries_name(
                entries in vec("[xyzXYZ-]{1,4}\\*?", 0..6),
                names in vec(prop_oneof!["[xyz-]{1,6}", any::<String>()], 1..8),
            ) {
                let policy = HidePolicy::from_entries(&entries);
                prop_assert!(policy.is_ok(), "{:?}: {:?}", entries, policy);
                let policy = policy.unwrap_or_default();
                let lower: Vec<String> = entries.iter().map(|e| e.to_ascii_lowercase()).collect();
                for name in &names {
                    let model = lower.iter().any(|entry| match entry.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => entry == name,
                    });
                    prop_assert_eq!(policy.matches_str(name), model, "{:?} by {:?}", name, entries);
                }
            }
        }
    }
}
