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
/// `Last-Modified` when that date is a strong validator.
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
    // §8.8.2.2: a cache may take `Last-Modified` as a strong validator only when it is at least
    // 60 seconds before the stored `Date`; closer, two versions may share the date, and the
    // client would splice a range of one onto the bytes it has of the other.
    match (
        httpdate::parse_http_date(text).ok(),
        date_header(stored, header::LAST_MODIFIED),
        date_header(stored, header::DATE),
    ) {
        (Some(asked), Some(modified), Some(sent)) => {
            asked == modified
                && modified
                    .checked_add(STRONG_LAST_MODIFIED)
                    .is_some_and(|strong_until| strong_until <= sent)
        }
        _ => false,
    }
}

/// How long before the stored `Date` a `Last-Modified` must lie to be a strong validator for a
/// cache (RFC 9110 §8.8.2.2).
const STRONG_LAST_MODIFIED: std::time::Duration = std::time::Duration::from_secs(60);

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
            ("date", "Tue, 15 Nov 1994 08:13:31 GMT"),
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

    /// Regression (found by `properties::if_range_gates_the_range`): an `If-Range` date equal to
    /// `Last-Modified` let the range through even when that date was no strong validator (no
    /// `Date`, or `Date` less than 60 seconds later, RFC 9110 §8.8.2.2), so a client resuming a
    /// download could get a range of a newer version modified within the same second.
    #[test]
    fn if_range_dates_count_only_as_strong_validators() {
        let request = headers(&[
            ("range", "bytes=0-0"),
            ("if-range", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ]);
        let modified = ("last-modified", "Thu, 01 Jan 1970 00:00:00 GMT");
        for stored in [
            headers(&[modified]),
            headers(&[modified, ("date", "Thu, 01 Jan 1970 00:00:59 GMT")]),
        ] {
            assert_eq!(evaluate(&request, &stored, 1), RangeAnswer::Full);
        }
        let strong = headers(&[modified, ("date", "Thu, 01 Jan 1970 00:01:00 GMT")]);
        assert_eq!(
            evaluate(&request, &strong, 1),
            RangeAnswer::Partial { start: 0, end: 0 }
        );
    }

    /// Property tests: `Range` and `If-Range` come from clients, so any value must be answered
    /// without panicking or overflowing, a 206 must lie within the body, and single ranges must be
    /// answered as RFC 9110 §14.1.2–§14.1.3 reads them (checked against a model in `u128`, where no
    /// arithmetic can overflow).
    mod properties {
        use super::*;
        use http::HeaderValue;
        use proptest::prelude::*;

        /// Pieces of `Range` syntax, so random values get past the unit.
        fn soup() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    "bytes",
                    "BYTES",
                    "items",
                    "=",
                    "-",
                    ",",
                    " ",
                    "\t",
                    "0",
                    "1",
                    "18446744073709551615",
                    "18446744073709551616",
                    "+",
                    "\u{e9}",
                ])
                .prop_map(str::to_owned),
                "[0-9]{1,22}",
                any::<char>().prop_map(String::from),
            ];
            prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
        }

        /// A body length around the edges: empty, small, huge.
        fn length() -> impl Strategy<Value = u64> {
            prop_oneof![0u64..50, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
        }

        /// A byte position: small (near small lengths), around u64::MAX, and beyond it.
        fn position() -> impl Strategy<Value = u128> {
            prop_oneof![
                0u128..60,
                prop::sample::select(vec![
                    u128::from(u64::MAX) - 1,
                    u128::from(u64::MAX),
                    u128::from(u64::MAX) + 1,
                ]),
                any::<u64>().prop_map(u128::from),
                any::<u128>(),
            ]
        }

        /// RFC 9110 §14.1.2 and §14.1.3 for one range-spec, with this cache's documented choices: a
        /// range it does not serve (invalid, or a number beyond u64, which §14.2 lets a server
        /// ignore) gets the whole response.
        fn model(first: Option<u128>, last: Option<u128>, length: u64) -> RangeAnswer {
            let length = u128::from(length);
            let fits = |n: u128| n <= u128::from(u64::MAX);
            let partial = |start: u128, end: u128| RangeAnswer::Partial {
                start: start as u64,
                end: end as u64,
            };
            match (first, last) {
                (None, None) => RangeAnswer::Full,
                (None, Some(suffix)) if !fits(suffix) => RangeAnswer::Full,
                (None, Some(0)) => RangeAnswer::Unsatisfiable,
                (None, Some(_)) if length == 0 => RangeAnswer::Unsatisfiable,
                // The last `suffix` bytes, or the whole body if it is shorter.
                (None, Some(suffix)) => partial(length - suffix.min(length), length - 1),
                (Some(first), _) if !fits(first) => RangeAnswer::Full,
                (Some(_), Some(last)) if !fits(last) => RangeAnswer::Full,
                (Some(first), Some(last)) if last < first => RangeAnswer::Full,
                (Some(first), _) if first >= length => RangeAnswer::Unsatisfiable,
                (Some(first), last) => partial(first, last.unwrap_or(u128::MAX).min(length - 1)),
            }
        }

        /// `n` with up to three leading zeros (1*DIGIT allows them).
        fn decimal(n: Option<u128>, zeros: u8) -> String {
            n.map_or(String::new(), |n| {
                format!("{}{n}", "0".repeat(usize::from(zeros % 4)))
            })
        }

        fn range_value(unit_upper: bool, ows: &str, first: &str, last: &str) -> String {
            let unit = if unit_upper { "Bytes" } else { "bytes" };
            format!("{unit}{ows}={ows}{first}-{last}{ows}")
        }

        fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_str(value).expect("test value"));
            }
            map
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever a client writes, against any length: no panic, and a partial answer names
            /// bytes that exist (start <= end < length).
            #[test]
            fn any_range_is_answered_within_the_body(range in soup(), length in length()) {
                if let RangeAnswer::Partial { start, end } = parse(&range, length) {
                    let within = start <= end && end < length;
                    prop_assert!(within, "{range:?} {length} -> {start}-{end}");
                }
            }

            /// One range-spec, any numbers (u64::MAX and beyond included), leading zeros, unit case
            /// and OWS: the answer is the model's.
            #[test]
            fn single_ranges_agree_with_the_model(
                first in prop::option::of(position()),
                last in prop::option::of(position()),
                length in length(),
                zeros in any::<(u8, u8)>(),
                unit_upper in any::<bool>(),
                ows in prop::sample::select(vec!["", " ", "\t", " \t "]),
            ) {
                let (first_text, last_text) = (decimal(first, zeros.0), decimal(last, zeros.1));
                let value = range_value(unit_upper, ows, &first_text, &last_text);
                prop_assert_eq!(parse(&value, length), model(first, last, length), "{}", value);
            }

            /// Several ranges are answered with the whole response (§14.2 allows it), never a part
            /// of one of them.
            #[test]
            fn several_ranges_get_the_whole_response(
                ranges in prop::collection::vec((0u64..1000, 0u64..1000), 2..6),
                length in length(),
            ) {
                let set: Vec<String> =
                    ranges.iter().map(|(a, b)| format!("{a}-{}", a + b)).collect();
                let value = format!("bytes={}", set.join(", "));
                prop_assert_eq!(parse(&value, length), RangeAnswer::Full);
            }

            /// §13.1.5: `If-Range` lets the range through only for an entity tag strongly equal to
            /// the stored one, or the exact `Last-Modified` date when that date is a strong
            /// validator for a cache (§8.8.2.2: at least 60 seconds before the stored `Date`);
            /// otherwise the whole response goes.
            #[test]
            fn if_range_gates_the_range(
                stored_tag in "[!#-~]{0,6}",
                asked_tag in "[!#-~]{0,6}",
                stored_weak in any::<bool>(),
                asked_weak in any::<bool>(),
                modified in 0u64..253_402_300_000,
                asked_offset in prop_oneof![Just(0u64), 0u64..3],
                date_after_modified in prop::option::of(-100i64..200),
                by_date in any::<bool>(),
                first in 0u64..20,
                length in 1u64..40,
            ) {
                let tag = |weak: bool, opaque: &str| {
                    format!("{}\"{opaque}\"", if weak { "W/" } else { "" })
                };
                let date = |seconds: u64| {
                    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
                    httpdate::fmt_http_date(time)
                };
                let mut stored = headers(&[
                    ("etag", tag(stored_weak, &stored_tag)),
                    ("last-modified", date(modified)),
                ]);
                // The origin's `Date`, some seconds after (or before) `Last-Modified`, or none.
                let sent = date_after_modified.and_then(|after| modified.checked_add_signed(after));
                if let Some(sent) = sent {
                    stored.insert("date", HeaderValue::from_str(&date(sent)).expect("a date"));
                }
                let range = format!("bytes={first}-");
                let (if_range, holds) = if by_date {
                    let strong = sent.is_some_and(|sent| sent >= modified + 60);
                    let asked_date = modified.saturating_sub(asked_offset);
                    (date(asked_date), asked_date == modified && strong)
                } else {
                    (
                        tag(asked_weak, &asked_tag),
                        !asked_weak && !stored_weak && asked_tag == stored_tag,
                    )
                };
                let request = headers(&[("range", range.clone()), ("if-range", if_range)]);
                let expected = if holds { parse(&range, length) } else { RangeAnswer::Full };
                prop_assert_eq!(evaluate(&request, &stored, length), expected);
                // Without If-Range, the range alone decides.
                let plain = headers(&[("range", range.clone())]);
                prop_assert_eq!(evaluate(&plain, &stored, length), parse(&range, length));
            }

            /// Any bytes in `Range`, `If-Range` and the stored validators: no panic, and a partial
            /// answer lies within the body.
            #[test]
            fn any_header_bytes_are_answered_within_the_body(
                values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 4),
                length in length(),
            ) {
                let value = |bytes: &[u8]| {
                    let kept: Vec<u8> = bytes
                        .iter()
                        .copied()
                        .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
                        .collect();
                    HeaderValue::from_bytes(&kept).expect("filtered to field-value bytes")
                };
                let mut request = HeaderMap::new();
                request.insert(header::RANGE, value(&values[0]));
                request.insert(header::IF_RANGE, value(&values[1]));
                let mut stored = HeaderMap::new();
                stored.insert(header::ETAG, value(&values[2]));
                stored.insert(header::LAST_MODIFIED, value(&values[3]));
                if let RangeAnswer::Partial { start, end } = evaluate(&request, &stored, length) {
                    prop_assert!(start <= end && end < length);
                }
            }
        }
    }
}
