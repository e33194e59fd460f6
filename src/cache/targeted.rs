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
/// order) has a non-empty value; otherwise a copy whose `Cache-Control` is the first such
/// field's value and which has no `Expires` (RFC 9213 §2.2: the targeted field is used instead
/// of both).
pub fn policy_view<'a>(headers: &'a HeaderMap, targeted: &[HeaderName]) -> Cow<'a, HeaderMap> {
    for name in targeted {
        let lines: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if lines.is_empty() {
            continue;
        }
        let Ok(value) = HeaderValue::from_str(&lines.join(", ")) else {
            continue;
        };
        let mut view = headers.clone();
        view.insert(header::CACHE_CONTROL, value);
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
        assert_eq!(
            policy_view(&both, &names())["cache-control"],
            "max-age=60, stale-while-revalidate=30",
            "list order decides, lines are combined"
        );
    }
}
