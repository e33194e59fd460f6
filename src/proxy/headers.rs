//! Header semantics of a proxy (RFC 9110 §7.6): hop-by-hop removal, forwarding headers, `Via`,
//! configured header edits and request ids. Pure functions over `HeaderMap`.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::ForwardedSettings;

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

/// True if a `Connection` header of `headers` lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The protocol a client asks to switch to, if this is an HTTP/1.1 upgrade request.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    connection_has(headers, "upgrade").then(|| upgrade.clone())
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `Transfer-Encoding`,
/// `Upgrade`, and `TE` except its `trailers` token (RFC 9110 §7.6.1, §10.1.4).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these or only `Connection`,
    // and a removal costs a hash lookup each (this runs twice per request).
    const FIXED: [&HeaderName; 6] = [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ];
    let mut connection = false;
    let mut te = false;
    let mut fixed = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TE {
            te = true;
        } else if FIXED.contains(&name) {
            fixed = true;
        }
    }
    if connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `close` names no header and `keep-alive` is removed below anyway.
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    if fixed {
        for name in FIXED {
            headers.remove(name);
        }
    }
    if te {
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
    if settings.x_forwarded_for {
        match joined(headers, &X_FORWARDED_FOR) {
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
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(client.proto),
        );
    }
    if settings.x_forwarded_host {
        match client.host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    if settings.forwarded {
        let element = forwarded_element(client);
        let combined = match joined(headers, &FORWARDED) {
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
        let is_token = host
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
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid {
            return value.clone();
        }
    }
    new_request_id()
}

/// A random 128-bit id as 32 lower-case hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for slot in out.iter_mut().rev() {
        *slot = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
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
}
