//! Targeted cache control (RFC 9213): a response field such as `CDN-Cache-Control` that speaks
//! to this cache only, and replaces `Cache-Control` and `Expires` in its decisions.
//!
//! The cache keeps the response's own headers (downstream caches and browsers obey its
//! `Cache-Control`) and decides storage and freshness on a view of them in which the first
//! targeted field present stands in for `Cache-Control`.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// `CDN-Cache-Control` (RFC 9213 §3), the field every CDN-like cache obeys.
pub const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// The headers the cache's rules read: `headers` itself when none of `targeted` (in priority
/// order) has a non-empty value; otherwise a copy whose `Cache-Control` lines are the first
/// such field's lines and which has no `Expires` (RFC 9213 §2.2: the targeted field is used instead
/// of both).
pub fn policy_view<'a>(headers: &'a HeaderMap, targeted: &[HeaderName]) -> Cow<'a, HeaderMap> {
    for name in targeted {
        // The lines as they came, one `Cache-Control` line each, so the `Cache-Control` parser
        // reads them exactly as it would read that field. (Joining their text dropped every
        // line that was not visible ASCII, so a field holding, say, `x="café"` was ignored
        // and `Cache-Control` decided instead; and an unclosed quote swallowed the next line.)
        let lines: Vec<&HeaderValue> = headers
            .get_all(name)
            .iter()
            .filter(|v| v.as_bytes().iter().any(|&b| b != b' ' && b != b'\t'))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let mut view = headers.clone();
        view.remove(header::CACHE_CONTROL);
        for line in lines {
            view.append(header::CACHE_CONTROL, line.clone());
        }
        view.remove(header::EXPIRES);
        // `Pragma: no-cache` only counts without a `Cache-Control`: it does not come back.
        return Cow::Owned(view);
    }
    Cow::Borrowed(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("gatehouse-cache-control"),
            HeaderName::from_static(CDN_CACHE_CONTROL),
        ]
    }

    fn response(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn without_a_targeted_field_the_headers_are_used_as_they_are() {
        let headers = response(&[("cache-control", "max-age=5"), ("expires", "0")]);
        assert!(matches!(policy_view(&headers, &names()), Cow::Borrowed(_)));
        let empty = response(&[("cdn-cache-control", "  "), ("cache-control", "max-age=5")]);
        assert!(matches!(policy_view(&empty, &names()), Cow::Borrowed(_)));
        assert!(matches!(
            policy_view(&response(&[("cdn-cache-control", "max-age=9")]), &[]),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_first_targeted_field_present_replaces_cache_control_and_expires() {
        let headers = response(&[
            ("cache-control", "no-store"),
            ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let view = policy_view(&headers, &names());
        assert_eq!(view["cache-control"], "max-age=600");
        assert!(view.get("expires").is_none());
        assert_eq!(headers["cache-control"], "no-store", "the original is kept");

        let both = response(&[
            ("cdn-cache-control", "max-age=600"),
            ("gatehouse-cache-control", "max-age=60"),
            ("gatehouse-cache-control", "stale-while-revalidate=30"),
        ]);
        let view = policy_view(&both, &names());
        assert_eq!(
            view.get_all("cache-control").iter().collect::<Vec<_>>(),
            ["max-age=60", "stale-while-revalidate=30"],
            "list order decides, every line counts"
        );
    }

    /// Regression (found by `the_first_non_empty_targeted_field_is_read_as_cache_control`): a
    /// targeted line that was not visible ASCII was dropped, and with it the whole field when it
    /// had no other line, so `Cache-Control` decided instead: here the response was cached for
    /// ten minutes although `CDN-Cache-Control` said `no-store`. And since the lines were
    /// joined, an unclosed quote on one line swallowed the next.
    #[test]
    fn targeted_lines_are_read_as_cache_control_lines_whatever_their_bytes() {
        let mut headers = response(&[("cache-control", "max-age=600")]);
        headers.append(
            CDN_CACHE_CONTROL,
            HeaderValue::from_bytes("no-store, x=\"caf\u{e9}\"".as_bytes()).unwrap(),
        );
        let view = policy_view(&headers, &names());
        assert!(crate::cache::directives::CacheControl::of(&view).no_store);
        assert_eq!(
            crate::cache::directives::CacheControl::of(&view).max_age,
            None
        );

        let quoted = response(&[
            ("cdn-cache-control", "x=\"unclosed"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        let view = policy_view(&quoted, &names());
        assert_eq!(
            crate::cache::directives::CacheControl::of(&view).max_age,
            Some(60)
        );
    }

    /// Properties of targeted fields (RFC 9213, docs/caching.md): the first targeted field with
    /// a non-empty value stands in for `Cache-Control` and `Expires`, read by the same parser
    /// as `Cache-Control`, whatever bytes it holds.
    mod properties {
        use super::*;
        use crate::cache::directives::CacheControl;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// A field line: directives (well-formed or broken: unterminated quotes, stray
        /// commas, obs-text, blanks) or any bytes a header value may hold.
        fn line() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                6 => prop::sample::select(vec![
                    "max-age=600", "max-age=60", "s-maxage=5", "no-store", "no-cache", "private",
                    "public", "must-revalidate", "stale-while-revalidate=30", "max-age=\"9\"",
                    "x=\"a,b\"", "x=\"unterminated", "\"", ",", ", ", " ", "\t", "=",
                    "MAX-AGE=7", "max-age=abc", "x=\"caf\u{e9}\"",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                1 => Just(vec![0xff]),
                1 => vec(any::<u8>(), 1..6),
            ];
            vec(piece, 0..6).prop_map(|pieces| {
                pieces
                    .join(&b", "[..])
                    .into_iter()
                    .map(|b| {
                        if (b < 0x20 && b != b'\t') || b == 0x7f {
                            b' '
                        } else {
                            b
                        }
                    })
                    .collect()
            })
        }

        const GATEHOUSE: &str = "gatehouse-cache-control";

        fn blank(line: &[u8]) -> bool {
            line.iter().all(|&b| b == b' ' || b == b'\t')
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn the_first_non_empty_targeted_field_is_read_as_cache_control(
                own in vec(line(), 0..3),
                cdn in vec(line(), 0..3),
                cache_control in vec(line(), 0..3),
                expires in any::<bool>(),
                order in 0u8..4,
            ) {
                let targeted: Vec<HeaderName> = match order {
                    0 => vec![HeaderName::from_static(GATEHOUSE), HeaderName::from_static(CDN_CACHE_CONTROL)],
                    1 => vec![HeaderName::from_static(CDN_CACHE_CONTROL), HeaderName::from_static(GATEHOUSE)],
                    2 => vec![HeaderName::from_static(CDN_CACHE_CONTROL)],
                    _ => vec![],
                };
                let mut headers = HeaderMap::new();
                let fields = [(GATEHOUSE, &own), (CDN_CACHE_CONTROL, &cdn), ("cache-control", &cache_control)];
                for (name, lines) in fields {
                    for line in lines {
                        headers.append(
                            HeaderName::from_static(name),
                            HeaderValue::from_bytes(line).unwrap(),
                        );
                    }
                }
                if expires {
                    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
                }
                headers.insert("x-other", HeaderValue::from_static("kept"));

                let lines_of = |name: &HeaderName| -> Vec<Vec<u8>> {
                    headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
                };
                let chosen = targeted
                    .iter()
                    .find(|name| lines_of(name).iter().any(|l| !blank(l)));
                let view = policy_view(&headers, &targeted);
                match chosen {
                    None => {
                        prop_assert!(matches!(view, Cow::Borrowed(_)));
                    }
                    Some(name) => {
                        // What `Cache-Control` with the targeted field's lines would say.
                        let mut alone = HeaderMap::new();
                        for line in lines_of(name) {
                            alone.append(header::CACHE_CONTROL, HeaderValue::from_bytes(&line).unwrap());
                        }
                        prop_assert_eq!(CacheControl::of(&view), CacheControl::of(&alone));
                        prop_assert!(view.get(header::EXPIRES).is_none());
                        for kept in [GATEHOUSE, CDN_CACHE_CONTROL, "x-other"] {
                            let before: Vec<_> = headers.get_all(kept).iter().collect();
                            let after: Vec<_> = view.get_all(kept).iter().collect();
                            prop_assert_eq!(before, after);
                        }
                    }
                }
            }
        }
    }
}
