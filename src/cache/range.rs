//! Range requests answered from a stored whole response (RFC 9110 §14): which part of the body a
//! `Range` asks for, and whether its `If-Range` still holds.
//!
//! Hand-written because it is small and the cache needs exactly these RFC 9110 choices: one
//! `bytes` range is served as a 206; several ranges get the whole 200 (allowed by §14.2, and
//! it spares building `multipart/byteranges`); a malformed `Range` is ignored (§14.2).

use http::{HeaderMap, header};

use super::conditional::EntityTag;
use super::policy::date_header;

/// What to answer a request for a stored body of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole response (no `Range`, an ignored one, or an `If-Range` that no longer holds).
    Full,
    /// `206` with bytes `start..=end` of the body.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// `416`: the range lies beyond the body.
    Unsatisfiable,
}

/// The answer to `request` for a stored `200` with `stored` headers and a body of `length`
/// bytes.
pub fn evaluate(request: &HeaderMap, stored: &HeaderMap, length: u64) -> RangeAnswer {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if !if_range_holds(request, stored) {
        return RangeAnswer::Full;
    }
    parse(range, length)
}

/// RFC 9110 §13.1.5: without `If-Range` the range applies; with it, only when it names the
/// stored response: an entity tag strongly equal to its `ETag`, or a date equal to its
/// `Last-Modified`.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(value) = request.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        let stored_tag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
        return match (
            EntityTag::parse(text),
            stored_tag.and_then(EntityTag::parse),
        ) {
            (Some(asked), Some(stored)) => asked.strong_eq(&stored),
            _ => false,
        };
    }
    match (
        httpdate::parse_http_date(text).ok(),
        date_header(stored, header::LAST_MODIFIED),
    ) {
        (Some(asked), Some(modified)) => asked == modified,
        _ => false,
    }
}

/// Parses a `Range` value against a body of `length` bytes.
pub fn parse(range: &str, length: u64) -> RangeAnswer {
    let Some((unit, set)) = range.split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `-N`: the last N bytes.
        return match number(last) {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if length == 0 => RangeAnswer::Unsatisfiable,
            Some(suffix) => RangeAnswer::Partial {
                start: length.saturating_sub(suffix),
                end: length - 1,
            },
        };
    }
    // `A-` and `A-B`.
    let Some(start) = number(first) else {
        return RangeAnswer::Full;
    };
    let last = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(last) if last >= start => Some(last),
            _ => return RangeAnswer::Full,
        }
    };
    if start >= length {
        return RangeAnswer::Unsatisfiable;
    }
    let end = last.map_or(length - 1, |last| last.min(length - 1));
    RangeAnswer::Partial { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn single_byte_ranges() {
        use RangeAnswer::*;
        assert_eq!(parse("bytes=0-4", 10), Partial { start: 0, end: 4 });
        assert_eq!(parse("bytes=5-", 10), Partial { start: 5, end: 9 });
        assert_eq!(parse("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(parse("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse("bytes=8-100", 10), Partial { start: 8, end: 9 });
        assert_eq!(parse("Bytes = 1-1", 10), Partial { start: 1, end: 1 });
        assert_eq!(parse("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        // Ignored: several ranges, other units, nonsense.
        assert_eq!(parse("bytes=0-1,4-5", 10), Full);
        assert_eq!(parse("items=0-1", 10), Full);
        assert_eq!(parse("bytes=5-2", 10), Full);
        assert_eq!(parse("bytes=a-b", 10), Full);
        assert_eq!(parse("bytes=-", 10), Full);
        assert_eq!(parse("bytes=+1-2", 10), Full);
        assert_eq!(parse("bytes 0-1", 10), Full);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn if_range_needs_a_strong_etag_match_or_the_exact_last_modified() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 15 Nov 1994 08:12:31 GMT"),
        ]);
        let partial = RangeAnswer::Partial { start: 0, end: 1 };
        let with = |if_range: &'static str| {
            evaluate(
                &headers(&[("range", "bytes=0-1"), ("if-range", if_range)]),
                &stored,
                10,
            )
        };
        assert_eq!(with("\"v1\""), partial);
        assert_eq!(with("\"v2\""), RangeAnswer::Full);
        assert_eq!(with("W/\"v1\""), RangeAnswer::Full, "weak never matches");
        assert_eq!(with("Tue, 15 Nov 1994 08:12:31 GMT"), partial);
        assert_eq!(with("Tue, 15 Nov 1994 08:12:32 GMT"), RangeAnswer::Full);
        assert_eq!(with("garbage"), RangeAnswer::Full);
        let weak_stored = headers(&[("etag", "W/\"v1\"")]);
        assert_eq!(
            evaluate(
                &headers(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]),
                &weak_stored,
                10
            ),
            RangeAnswer::Full
        );
        assert_eq!(
            evaluate(&headers(&[("range", "bytes=0-1")]), &stored, 10),
            partial
        );
        assert_eq!(evaluate(&HeaderMap::new(), &stored, 10), RangeAnswer::Full);
    }
}
