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

    /// Property tests: `If-None-Match`, `If-Modified-Since` and the validators of a stored response
    /// come from clients and backends, so any bytes must be evaluated without panicking, lists of
    /// tags must be read however they are spaced and split across lines, and the answers must be
    /// RFC 9110 §13.1's (weak comparison for `If-None-Match`, `<=` on dates for
    /// `If-Modified-Since`), checked against models written here.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::time::{Duration, UNIX_EPOCH};

        /// The last second httpdate can write: 9999-12-31T23:59:59Z.
        const LAST_DATE: u64 = 253_402_300_799;

        fn field_value(mut bytes: Vec<u8>) -> HeaderValue {
            bytes.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            HeaderValue::from_bytes(&bytes).expect("filtered to field-value bytes")
        }

        /// Pieces of entity-tag and date syntax, so random values get past the first byte.
        fn soup() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    "W/",
                    "\"",
                    "*",
                    ",",
                    " ",
                    "\t",
                    "a",
                    "\"v1\"",
                    "Sun, 06 Nov 1994 08:49:37 GMT",
                    "GMT",
                    "99",
                    "\u{e9}",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                any::<u8>().prop_map(|b| vec![b]),
            ];
            prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
        }

        /// An opaque tag's inside: etagc characters (`%x21 / %x23-7E`), from a small alphabet half
        /// the time so that tags collide.
        fn opaque() -> impl Strategy<Value = String> {
            prop_oneof!["[ab]{0,2}", "[!#-~]{0,12}"]
        }

        fn written(weak: bool, opaque: &str) -> String {
            format!("{}\"{opaque}\"", if weak { "W/" } else { "" })
        }

        fn date(seconds: u64) -> String {
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds))
        }

        fn has_it(request: &HeaderMap, stored: &HeaderMap) -> bool {
            client_has_it(&Method::GET, request, StatusCode::OK, stored)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// An entity tag written with any OWS around it reads back as written.
            #[test]
            fn entity_tags_read_back(
                weak in any::<bool>(),
                inside in opaque(),
                before in "[ \t]{0,2}",
                after in "[ \t]{0,2}",
            ) {
                let text = format!("{before}{}{after}", written(weak, &inside));
                let tag = EntityTag::parse(&text);
                let quoted = format!("\"{inside}\"");
                prop_assert_eq!(tag, Some(EntityTag { weak, opaque: &quoted }));
            }

            /// Any text: no panic; whatever reads as a tag is a quoted run of etagc characters,
            /// weak exactly when the text starts with `W/`.
            #[test]
            fn entity_tag_parsing_takes_any_text(text in "\\PC{0,24}|[W/\" !#a]{0,10}") {
                if let Some(tag) = EntityTag::parse(&text) {
                    let inside = tag
                        .opaque
                        .strip_prefix('"')
                        .and_then(|rest| rest.strip_suffix('"'));
                    prop_assert!(inside.is_some_and(|inside| {
                        inside.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
                    }), "{:?}", tag);
                    prop_assert_eq!(tag.weak, text.trim().starts_with("W/"));
                }
            }

            /// §8.8.3.2: both comparisons are symmetric, strong equality implies weak equality, and
            /// a tag is strongly equal to itself exactly when it is strong.
            #[test]
            fn comparisons_follow_the_rfc_table(
                a in (any::<bool>(), opaque()),
                b in (any::<bool>(), opaque()),
            ) {
                let (a_text, b_text) = (written(a.0, &a.1), written(b.0, &b.1));
                let a = EntityTag::parse(&a_text).expect("a valid tag");
                let b = EntityTag::parse(&b_text).expect("a valid tag");
                prop_assert_eq!(a.weak_eq(&b), b.weak_eq(&a));
                prop_assert_eq!(a.strong_eq(&b), b.strong_eq(&a));
                prop_assert!(!a.strong_eq(&b) || a.weak_eq(&b));
                prop_assert_eq!(a.strong_eq(&a), !a.weak);
                prop_assert!(a.weak_eq(&a));
            }

            /// §13.1.2: a list of tags, with any OWS, empty elements and split over any number of
            /// lines, matches the stored tag exactly when one of its tags matches it weakly.
            #[test]
            fn if_none_match_lists_agree_with_the_model(
                tags in prop::collection::vec((any::<bool>(), opaque()), 1..6),
                separators in prop::collection::vec(
                    prop::sample::select(vec![",", ", ", " ,\t", ",,", " , , "]),
                    1..4,
                ),
                breaks in any::<u8>(),
                stored in (any::<bool>(), opaque()),
            ) {
                let mut request = HeaderMap::new();
                let mut line = String::new();
                for (i, (weak, inside)) in tags.iter().enumerate() {
                    if i > 0 {
                        if breaks >> (i % 8) & 1 == 1 {
                            let value = HeaderValue::from_str(&line).expect("a line");
                            request.append(header::IF_NONE_MATCH, value);
                            line.clear();
                        } else {
                            line.push_str(separators[i % separators.len()]);
                        }
                    }
                    line.push_str(&written(*weak, inside));
                }
                let last = HeaderValue::from_str(&line).expect("a line");
                request.append(header::IF_NONE_MATCH, last);
                let stored_tag = written(stored.0, &stored.1);
                let stored_headers = crate::testing::header_map(&[("etag", &stored_tag)]);
                let model = tags.iter().any(|(_, inside)| *inside == stored.1);
                prop_assert_eq!(has_it(&request, &stored_headers), model);
                // `*` matches any stored response (§13.1.2), with or without an ETag.
                let star = crate::testing::header_map(&[("if-none-match", " * ")]);
                prop_assert!(has_it(&star, &stored_headers));
                prop_assert!(has_it(&star, &HeaderMap::new()));
            }

            /// §13.1.3: `If-Modified-Since` is answered by comparing dates: a 304 exactly when the
            /// stored `Last-Modified` (or `Date` without one) is not after it. So the answer is
            /// monotone: a later `If-Modified-Since` never turns a 304 into a 200.
            #[test]
            fn if_modified_since_compares_dates(
                modified in 0u64..=LAST_DATE,
                since in prop_oneof![0u64..=LAST_DATE, Just(0u64)],
                near in prop::option::of(-2i64..3),
                use_date in any::<bool>(),
                ows in "[ \t]{0,2}",
            ) {
                // Half the time the two dates are equal or within a few seconds of each other.
                let since =
                    near.map_or(since, |near| modified.saturating_add_signed(near).min(LAST_DATE));
                let since_text = format!("{ows}{}{ows}", date(since));
                let request = crate::testing::header_map(&[("if-modified-since", &since_text)]);
                let name = if use_date { "date" } else { "last-modified" };
                let stored = crate::testing::header_map(&[(name, &date(modified))]);
                prop_assert_eq!(has_it(&request, &stored), modified <= since);
                // Two lines are a list, which is ignored.
                let mut twice = request.clone();
                let again = HeaderValue::from_str(&date(since)).expect("a date");
                twice.append(header::IF_MODIFIED_SINCE, again);
                prop_assert!(!has_it(&twice, &stored));
            }

            /// Any bytes in the conditional fields and the stored validators: no panic, and no 304
            /// for methods other than GET and HEAD or stored statuses other than 200.
            #[test]
            fn any_conditional_bytes_are_evaluated(
                values in prop::collection::vec(
                    prop_oneof![soup(), prop::collection::vec(any::<u8>(), 0..32)],
                    6,
                ),
                status in 100u16..600,
            ) {
                let mut request = HeaderMap::new();
                request.append(header::IF_NONE_MATCH, field_value(values[0].clone()));
                request.append(header::IF_MODIFIED_SINCE, field_value(values[1].clone()));
                let mut stored = HeaderMap::new();
                stored.append(header::ETAG, field_value(values[2].clone()));
                stored.append(header::LAST_MODIFIED, field_value(values[3].clone()));
                stored.append(header::DATE, field_value(values[4].clone()));
                let mut not_modified = HeaderMap::new();
                not_modified.append(header::ETAG, field_value(values[5].clone()));
                let status = StatusCode::from_u16(status).expect("100..600");
                let _ = has_it(&request, &stored);
                if status != StatusCode::OK {
                    prop_assert!(!client_has_it(&Method::GET, &request, status, &stored));
                }
                prop_assert!(!client_has_it(&Method::POST, &request, StatusCode::OK, &stored));
                let _ = updates(&stored, &not_modified);
                update_headers(&mut stored, &not_modified);
            }

            /// §4.3.4: a 304 carrying the stored response's own validators (what
            /// `not_modified_headers` generates) always updates it; a strong tag in the 304 never
            /// updates a response with another opaque tag or a weak one.
            #[test]
            fn a_304_with_the_stored_validators_updates_it(
                stored_tag in prop::option::of((any::<bool>(), opaque())),
                new_tag in (any::<bool>(), opaque()),
                modified in prop::option::of(0u64..=LAST_DATE),
            ) {
                let mut stored = HeaderMap::new();
                if let Some((weak, inside)) = &stored_tag {
                    let tag = HeaderValue::from_str(&written(*weak, inside)).expect("a tag");
                    stored.insert(header::ETAG, tag);
                }
                if let Some(modified) = modified {
                    let modified = HeaderValue::from_str(&date(modified)).expect("a date");
                    stored.insert(header::LAST_MODIFIED, modified);
                }
                prop_assert!(updates(&stored, &not_modified_headers(&stored)));
                let new = crate::testing::header_map(&[("etag", &written(new_tag.0, &new_tag.1))]);
                let model = stored_tag.as_ref().is_some_and(|(stored_weak, inside)| {
                    *inside == new_tag.1 && (new_tag.0 || !stored_weak)
                });
                prop_assert_eq!(updates(&stored, &new), model);
            }

            /// §3.2: after a 304 update, every field the 304 carries replaces the stored one,
            /// except the framing and hop-by-hop fields and those its `Connection` names, which
            /// keep their stored values; fields the 304 lacks are untouched.
            #[test]
            fn a_304_replaces_all_but_framing_and_hop_by_hop_fields(
                stored_fields in prop::collection::vec((0usize..8, "[a-z0-9]{0,3}"), 0..8),
                new_fields in prop::collection::vec((0usize..8, "[a-z0-9]{0,3}"), 0..8),
                connection in prop::collection::vec(0usize..8, 0..3),
            ) {
                const NAMES: [&str; 8] = [
                    "cache-control", "content-length", "content-encoding", "x-a", "x-b",
                    "keep-alive", "transfer-encoding", "etag",
                ];
                let map = |fields: &[(usize, String)]| {
                    let mut map = HeaderMap::new();
                    for (name, value) in fields {
                        map.append(NAMES[*name], HeaderValue::from_str(value).expect("a value"));
                    }
                    map
                };
                let before = map(&stored_fields);
                let mut new = map(&new_fields);
                let listed: Vec<&str> = connection.iter().map(|i| NAMES[*i]).collect();
                if !listed.is_empty() {
                    let list = HeaderValue::from_str(&listed.join(" , ")).expect("a list");
                    new.insert(header::CONNECTION, list);
                }
                let mut after = before.clone();
                update_headers(&mut after, &new);
                let values = |map: &HeaderMap, name: &str| {
                    map.get_all(name).iter().cloned().collect::<Vec<_>>()
                };
                for name in NAMES.iter().copied().chain(["connection"]) {
                    let kept =
                        kept_on_update(&HeaderName::from_static(name)) || listed.contains(&name);
                    let expected = if new.contains_key(name) && !kept {
                        values(&new, name)
                    } else {
                        values(&before, name)
                    };
                    prop_assert_eq!(values(&after, name), expected, "{}", name);
                }
            }
        }
    }
}
