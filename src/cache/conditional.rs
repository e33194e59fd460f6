//! Validators and conditional requests: comparing entity tags (RFC 9110 §8.8.3.2), answering a
//! client's `If-None-Match` / `If-Modified-Since` from a stored response (RFC 9110 §13.2.2,
//! RFC 9111 §4.3.2), the validators sent upstream to revalidate (§4.3.1), and folding a 304 into
//! the stored response (§4.3.4, §3.2).

use std::time::SystemTime;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::policy::date_header;

/// Whether the response has a validator (`ETag` or `Last-Modified`) to revalidate it with.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// An entity tag: its opaque part (quotes included) and whether it is weak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// `W/` prefix present.
    pub weak: bool,
    /// The quoted opaque tag.
    pub opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// Parses one entity tag, surrounding whitespace allowed.
    pub fn parse(text: &'a str) -> Option<EntityTag<'a>> {
        let (tags, rest) = parse_list_item(text.trim())?;
        rest.trim().is_empty().then_some(tags)
    }

    /// Weak comparison: the opaque tags match, weak or not (RFC 9110 §8.8.3.2).
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong and the opaque tags match.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// Reads one entity tag from the start of `text`; returns it and what follows.
fn parse_list_item(text: &str) -> Option<(EntityTag<'_>, &str)> {
    let (weak, rest) = match text.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let inner = rest.strip_prefix('"')?;
    let end = inner.find('"')?;
    // etagc is %x21 / %x23-7E / obs-text: no controls or spaces inside the quotes.
    if inner[..end].bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return None;
    }
    let opaque = &rest[..end + 2];
    Some((EntityTag { weak, opaque }, &inner[end + 1..]))
}

/// The members of an `If-None-Match`-style list: `None` for `*`, else the tags. A malformed
/// list yields the tags read before the error (none of the rest can match anyway).
fn tag_list(headers: &HeaderMap, name: HeaderName) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    for line in headers.get_all(name) {
        let Ok(mut text) = line.to_str() else {
            continue;
        };
        loop {
            text = text.trim_start_matches([' ', '\t', ',']);
            if text.is_empty() {
                break;
            }
            if let Some(rest) = text.strip_prefix('*') {
                if rest.trim_start_matches([' ', '\t']).is_empty()
                    || rest.trim_start().starts_with(',')
                {
                    return None;
                }
                break;
            }
            match parse_list_item(text) {
                Some((tag, rest)) => {
                    tags.push(tag);
                    text = rest;
                }
                None => break,
            }
        }
    }
    Some(tags)
}

/// RFC 9110 §13.2.2 applied by the cache to a request it can answer from a stored response
/// (RFC 9111 §4.3.2): does the client already have it, so a 304 answers? Only GET and HEAD,
/// only a stored 200. `If-None-Match` decides when present (weak comparison, `*` matches any
/// stored response); otherwise `If-Modified-Since` against `Last-Modified` (or `Date`).
pub fn client_has_it(
    method: &Method,
    request: &HeaderMap,
    stored_status: StatusCode,
    stored: &HeaderMap,
) -> bool {
    if (method != Method::GET && method != Method::HEAD) || stored_status != StatusCode::OK {
        return false;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(tags) = tag_list(request, header::IF_NONE_MATCH) else {
            return true;
        };
        let Some(stored_tag) = stored
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(EntityTag::parse)
        else {
            return false;
        };
        return tags.iter().any(|tag| tag.weak_eq(&stored_tag));
    }
    // A list, or anything but one valid date, is ignored (RFC 9110 §13.1.3).
    let lines = request.get_all(header::IF_MODIFIED_SINCE).iter().count();
    if lines != 1 {
        return false;
    }
    let Some(since) = date_header(request, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified =
        date_header(stored, header::LAST_MODIFIED).or_else(|| date_header(stored, header::DATE));
    modified.is_some_and(|modified| modified <= since)
}

/// Conditional request fields only an origin can evaluate: with them the request goes to the
/// origin as it is. The cache answers `If-None-Match` and `If-Modified-Since` (RFC 9111
/// §4.3.2) and `If-Range` (against the stored response it cuts the range from, `range.rs`).
pub fn origin_only_conditionals(request: &HeaderMap) -> bool {
    request.contains_key(header::IF_MATCH) || request.contains_key(header::IF_UNMODIFIED_SINCE)
}

/// The validators that revalidate a stored response upstream (§4.3.1): `If-None-Match` with
/// its `ETag`, `If-Modified-Since` with its `Last-Modified`.
pub fn upstream_validators(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut validators = Vec::with_capacity(2);
    if let Some(etag) = stored.get(header::ETAG) {
        validators.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        validators.push((header::IF_MODIFIED_SINCE, modified.clone()));
    }
    validators
}

/// §4.3.4: does this 304 update the stored response that was validated? A strong ETag in the
/// 304 must equal the stored strong ETag; a weak one must match weakly; with no ETag, a
/// `Last-Modified` must equal the stored one. A 304 with no validator at all refers to the one
/// response the cache asked about.
pub fn updates(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let tag = |h: &HeaderMap| {
        h.get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(new) = tag(not_modified) {
        let Some(new) = EntityTag::parse(&new).map(|t| (t.weak, t.opaque.to_owned())) else {
            return false;
        };
        let Some(old) = tag(stored) else {
            return false;
        };
        let Some(old) = EntityTag::parse(&old) else {
            return false;
        };
        return if new.0 {
            old.opaque == new.1
        } else {
            !old.weak && old.opaque == new.1
        };
    }
    if let Some(new) = not_modified.get(header::LAST_MODIFIED) {
        return stored.get(header::LAST_MODIFIED) == Some(new);
    }
    true
}

/// Fields a 304 never changes in the stored response (§3.2): framing and coding describe the
/// stored body, not the 304's, and hop-by-hop fields are not stored at all.
fn kept_on_update(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::CONTENT_ENCODING
        || name == header::CONTENT_RANGE
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name.as_str() == "keep-alive"
}

/// §3.2: the 304's header fields replace the stored ones of the same name, except those in
/// [`kept_on_update`] and those the 304's `Connection` lists.
pub fn update_headers(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let connection_listed: Vec<String> = not_modified
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for name in not_modified.keys() {
        if kept_on_update(name) || connection_listed.iter().any(|c| c == name.as_str()) {
            continue;
        }
        stored.remove(name);
        for value in not_modified.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
}

/// RFC 9110 §15.4.5: the fields of a 304 generated from a stored 200.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Adds `Date` when the response has none (RFC 9110 §6.6.1: a recipient that caches a response
/// without Date records when it was received).
pub fn ensure_date(headers: &mut HeaderMap, received: SystemTime) {
    if !headers.contains_key(header::DATE)
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(received))
    {
        headers.insert(header::DATE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::header_map as map;

    /// RFC 9110 §8.8.3.2's comparison table.
    #[test]
    fn entity_tag_comparison() {
        let t = |s| EntityTag::parse(s).unwrap();
        assert!(!t("W/\"1\"").strong_eq(&t("W/\"1\"")));
        assert!(t("W/\"1\"").weak_eq(&t("W/\"1\"")));
        assert!(!t("W/\"1\"").weak_eq(&t("W/\"2\"")));
        assert!(!t("W/\"1\"").strong_eq(&t("\"1\"")));
        assert!(t("W/\"1\"").weak_eq(&t("\"1\"")));
        assert!(t("\"1\"").strong_eq(&t("\"1\"")));
        assert!(EntityTag::parse("1").is_none());
        assert!(EntityTag::parse("\"a b\"").is_none());
        assert!(EntityTag::parse("\"unterminated").is_none());
    }

    fn has_it(request: &[(&str, &str)], stored: &[(&str, &str)]) -> bool {
        client_has_it(&Method::GET, &map(request), StatusCode::OK, &map(stored))
    }

    /// RFC 9110 §13.1.2: If-None-Match uses weak comparison; `*` matches; lists may hold
    /// commas inside tags.
    #[test]
    fn if_none_match_is_answered_from_the_stored_etag() {
        let stored = [("etag", "W/\"v1\"")];
        assert!(has_it(&[("if-none-match", "\"v1\"")], &stored));
        assert!(has_it(&[("if-none-match", "\"x\", W/\"v1\"")], &stored));
        assert!(has_it(
            &[("if-none-match", "\"x\""), ("if-none-match", "\"v1\"")],
            &stored
        ));
        assert!(!has_it(&[("if-none-match", "\"v2\"")], &stored));
        assert!(has_it(&[("if-none-match", "*")], &stored));
        assert!(has_it(
            &[("if-none-match", "\"a,b\"")],
            &[("etag", "\"a,b\"")]
        ));
        assert!(
            !has_it(&[("if-none-match", "\"v1\"")], &[]),
            "nothing to compare with"
        );
        assert!(
            !has_it(
                &[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", "Sun, 06 Nov 2095 08:49:37 GMT")
                ],
                &[
                    ("etag", "\"v1\""),
                    ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
                ]
            ),
            "If-None-Match decides when present"
        );
        assert!(!client_has_it(
            &Method::POST,
            &map(&[("if-none-match", "*")]),
            StatusCode::OK,
            &map(&stored)
        ));
        assert!(!client_has_it(
            &Method::GET,
            &map(&[("if-none-match", "*")]),
            StatusCode::NOT_FOUND,
            &map(&stored)
        ));
    }

    /// RFC 9110 §13.1.3; RFC 9111 §4.3.2 (Date stands in for a missing Last-Modified).
    #[test]
    fn if_modified_since_is_answered_from_last_modified_or_date() {
        let stored = [("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")];
        assert!(has_it(
            &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            &stored
        ));
        assert!(has_it(
            &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
            &stored
        ));
        assert!(!has_it(
            &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
            &stored
        ));
        assert!(!has_it(&[("if-modified-since", "yesterday")], &stored));
        assert!(has_it(
            &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
            &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]
        ));
    }

    #[test]
    fn upstream_validators_come_from_the_stored_response() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let validators = upstream_validators(&stored);
        assert_eq!(
            validators[0],
            (header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""))
        );
        assert_eq!(validators[1].0, header::IF_MODIFIED_SINCE);
        assert!(upstream_validators(&HeaderMap::new()).is_empty());
    }

    /// §4.3.4: which stored response a 304 updates.
    #[test]
    fn a_304_updates_the_matching_stored_response_only() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(updates(&stored, &map(&[("etag", "\"v1\"")])));
        assert!(updates(&stored, &map(&[("etag", "W/\"v1\"")])));
        assert!(!updates(&stored, &map(&[("etag", "\"v2\"")])));
        assert!(
            !updates(&map(&[("etag", "W/\"v1\"")]), &map(&[("etag", "\"v1\"")])),
            "strong needs strong"
        );
        assert!(updates(
            &stored,
            &map(&[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")])
        ));
        assert!(!updates(
            &stored,
            &map(&[("last-modified", "Mon, 07 Nov 1994 08:49:37 GMT")])
        ));
        assert!(updates(&stored, &HeaderMap::new()));
    }

    /// §3.2: the 304's fields replace the stored ones, but not the body's framing.
    #[test]
    fn a_304_replaces_header_fields_except_framing() {
        let mut stored = map(&[
            ("cache-control", "max-age=10"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("x-a", "old"),
            ("x-b", "kept"),
        ]);
        let not_modified = map(&[
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("content-encoding", "br"),
            ("x-a", "new1"),
            ("x-a", "new2"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ]);
        update_headers(&mut stored, &not_modified);
        assert_eq!(stored["cache-control"], "max-age=60");
        assert_eq!(stored["content-length"], "5");
        assert_eq!(stored["content-encoding"], "gzip");
        assert_eq!(
            stored.get_all("x-a").iter().collect::<Vec<_>>(),
            ["new1", "new2"]
        );
        assert_eq!(stored["x-b"], "kept");
        assert!(!stored.contains_key("x-hop") && !stored.contains_key("connection"));
    }

    /// RFC 9110 §15.4.5: what a generated 304 carries.
    #[test]
    fn generated_304_carries_the_listed_fields() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("vary", "accept-encoding"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let headers = not_modified_headers(&stored);
        assert_eq!(headers["etag"], "\"v1\"");
        assert_eq!(headers["vary"], "accept-encoding");
        assert!(headers.contains_key("date") && headers.contains_key("cache-control"));
        assert!(!headers.contains_key("content-type") && !headers.contains_key("content-length"));
    }

    #[test]
    fn date_is_added_only_when_missing() {
        let mut headers = HeaderMap::new();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        ensure_date(&mut headers, t);
        assert_eq!(headers["date"], "Sun, 06 Nov 1994 08:49:37 GMT");
        ensure_date(&mut headers, SystemTime::UNIX_EPOCH);
        assert_eq!(headers["date"], "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
