//! `Vary` (RFC 9111 §4.1): the request header values a stored response was selected by, kept
//! as a secondary key, so that one URL can have several stored variants.
//!
//! Values are normalised only in ways that keep their meaning (§4.1 allows it): header lines
//! are combined, list members trimmed and rejoined; `Accept-Encoding` and `Accept-Language`
//! are compared case-insensitively, and `Accept-Encoding` members in any order, which lets
//! clients that write the same preference differently share a variant.

use http::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE, VARY};
use http::{HeaderMap, HeaderName};

/// Whether the response has `Vary: *`: it varies on something outside the request, so a
/// cache can never reuse it.
pub fn is_star(response: &HeaderMap) -> bool {
    members(response).any(|field| field == b"*")
}

/// The members of the `Vary` lines, OWS trimmed, empty ones left out. Read as bytes: a member
/// that is not text names no field, but must not hide the fields its line also names.
fn members(response: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    response
        .get_all(VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|f| !f.is_empty())
}

/// The header names listed in the response's `Vary` lines, lowercased, each once, in order.
/// Names that are not valid header names cannot be matched by any request and are kept out;
/// `*` is not a name (see [`is_star`]).
pub fn fields(response: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for member in members(response) {
        if let Ok(name) = HeaderName::from_bytes(member)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// The normalised values of `fields` in `request`: the secondary key of §4.1. A field absent
/// from the request is `None`, which matches only another absence.
pub fn secondary_key(fields: &[HeaderName], request: &HeaderMap) -> Vec<Option<String>> {
    fields.iter().map(|name| normalise(name, request)).collect()
}

/// The secondary-key entry of one field: its lines' list members, OWS (SP and HTAB only) trimmed
/// around each member and each `;`, empty members dropped. Nothing else is removed or merged:
/// values that differ in any other byte get different entries.
fn normalise(name: &HeaderName, request: &HeaderMap) -> Option<String> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let case_insensitive = name == ACCEPT_ENCODING || name == ACCEPT_LANGUAGE;
    let mut parts: Vec<String> = lines
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(|m| {
            // Whitespace around `;` carries no meaning in these lists either.
            let member = m
                .split(|&b| b == b';')
                .map(<[u8]>::trim_ascii)
                .collect::<Vec<_>>()
                .join(&b';');
            let member = member_text(&member);
            if case_insensitive {
                member.to_ascii_lowercase()
            } else {
                member
            }
        })
        .filter(|m| !m.is_empty())
        .collect();
    if name == ACCEPT_ENCODING {
        parts.sort();
    }
    Some(parts.join(", "))
}

/// A member's bytes as key text, losing none: UTF-8 as it is; anything else as one char per
/// byte after a NUL, which no header value holds, so it equals no UTF-8 member. (Lossy UTF-8
/// would turn every invalid sequence into U+FFFD and make different values one variant.)
fn member_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => std::iter::once('\0')
            .chain(bytes.iter().map(|&b| char::from(b)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::header_map as map;

    #[test]
    fn vary_fields_are_collected_across_lines() {
        let response = map(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "Origin, ACCEPT-ENCODING"),
        ]);
        let names: Vec<_> = fields(&response)
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        assert_eq!(names, ["accept-encoding", "accept-language", "origin"]);
        assert!(!is_star(&response));
        assert!(is_star(&map(&[("vary", "origin"), ("vary", " * ")])));
    }

    /// §4.1: combined lines and whitespace do not make a different variant; absence differs
    /// from any value, including the empty one.
    #[test]
    fn secondary_keys_are_normalised() {
        let fields = fields(&map(&[("vary", "accept-encoding, x-mode")]));
        let a = secondary_key(
            &fields,
            &map(&[("accept-encoding", "gzip,br"), ("x-mode", "A")]),
        );
        let b = secondary_key(
            &fields,
            &map(&[
                ("accept-encoding", "BR"),
                ("accept-encoding", " gzip "),
                ("x-mode", "A"),
            ]),
        );
        assert_eq!(a, b);
        let other_case = secondary_key(
            &fields,
            &map(&[("accept-encoding", "gzip, br"), ("x-mode", "a")]),
        );
        assert_ne!(a, other_case, "other fields stay case-sensitive");
        let absent = secondary_key(&fields, &map(&[("accept-encoding", "gzip, br")]));
        let empty = secondary_key(
            &fields,
            &map(&[("accept-encoding", "gzip, br"), ("x-mode", "")]),
        );
        assert_ne!(absent, empty);
        assert_eq!(absent[1], None);
        let q = secondary_key(
            &fields,
            &map(&[("accept-encoding", "gzip ; q=0.5, br"), ("x-mode", "A")]),
        );
        let q2 = secondary_key(
            &fields,
            &map(&[("accept-encoding", "br,gzip;q=0.5"), ("x-mode", "A")]),
        );
        assert_eq!(q, q2);
    }

    /// Regression (found by `properties::vary_fields_agree_with_the_model`): a `Vary` line
    /// holding one non-text byte was skipped whole, so the fields it also named were not part
    /// of the secondary key and a variant was served to requests it was not selected for.
    #[test]
    fn a_non_text_vary_member_does_not_hide_the_others() {
        let mut response = HeaderMap::new();
        response.insert(
            VARY,
            http::HeaderValue::from_bytes(b"\x80, Accept-Encoding").unwrap(),
        );
        assert_eq!(fields(&response), [ACCEPT_ENCODING]);
    }

    /// Regression (found by `properties::different_values_get_different_keys`): request values
    /// were read as lossy UTF-8 and trimmed of Unicode whitespace, so `\x80` and `\xe1\x80` (both
    /// one U+FFFD), or `a` and `a` followed by a non-breaking space, shared a variant.
    #[test]
    fn values_that_differ_in_non_text_bytes_are_different_variants() {
        let fields = [HeaderName::from_static("x-mode")];
        let key = |value: &[u8]| {
            let mut request = HeaderMap::new();
            request.insert("x-mode", http::HeaderValue::from_bytes(value).unwrap());
            secondary_key(&fields, &request)
        };
        assert_ne!(key(b"\x80"), key(b"\xe1\x80"));
        assert_ne!(key(b"a"), key("a\u{a0}".as_bytes()));
        assert_ne!(key(b"\xe9"), key("\u{e9}".as_bytes()));
        assert_eq!(key(b" a ;b , c"), key(b"a;b,c"));
    }

    /// Property tests: `Vary` comes from backends and the values it names from clients, so both
    /// must be read from any bytes without panicking; the secondary key must be the same for
    /// requests whose fields differ only in ways §4.1 lets a cache normalise away (line splits,
    /// OWS, case or order where the field's syntax says they carry no meaning), and different for
    /// any other difference, or one client would be served a variant selected for another.
    mod properties {
        use super::*;
        use http::HeaderValue;
        use proptest::prelude::*;

        fn field_value(bytes: &[u8]) -> HeaderValue {
            let kept: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
                .collect();
            HeaderValue::from_bytes(&kept).expect("filtered to field-value bytes")
        }

        fn map(pairs: &[(&'static str, Vec<u8>)]) -> HeaderMap {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, field_value(value));
            }
            map
        }

        /// A `Vary` member: a field name in any case, `*`, something that is no field name, or
        /// nothing (an empty list element).
        fn member() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                4 => "[a-zA-Z][a-zA-Z0-9-]{0,6}".prop_map(String::into_bytes),
                1 => Just(b"*".to_vec()),
                // Any bytes but the list separator, which would make two members of one.
                1 => prop::collection::vec(
                    any::<u8>().prop_map(|b| if b == b',' { b';' } else { b }),
                    1..4,
                ),
                1 => Just(Vec::new()),
            ]
        }

        /// A list member's bytes as the model reads them: SP and HTAB are the only OWS (RFC 9110
        /// §5.6.3).
        fn trim_ows(bytes: &[u8]) -> &[u8] {
            let start = bytes
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t'))
                .unwrap_or(bytes.len());
            let end = bytes
                .iter()
                .rposition(|b| !matches!(b, b' ' | b'\t'))
                .map_or(start, |i| i + 1);
            &bytes[start..end]
        }

        /// The meaning of a request field's lines for the model: its list members, OWS around
        /// members and around `;` removed, empty members dropped; `fold_case` lower-cases ASCII,
        /// `sort` ignores member order.
        fn meaning(lines: &[Vec<u8>], fold_case: bool, sort: bool) -> Vec<Vec<u8>> {
            let mut members: Vec<Vec<u8>> = lines
                .iter()
                .map(|line| field_value(line).as_bytes().to_vec())
                .flat_map(|line| {
                    line.split(|&b| b == b',')
                        .map(<[u8]>::to_vec)
                        .collect::<Vec<_>>()
                })
                .map(|member| {
                    let parts: Vec<&[u8]> = member.split(|&b| b == b';').map(trim_ows).collect();
                    let joined = parts.join(&b';');
                    if fold_case {
                        joined.to_ascii_lowercase()
                    } else {
                        joined
                    }
                })
                .filter(|member| !member.is_empty())
                .collect();
            if sort {
                members.sort();
            }
            members
        }

        /// A request field's bytes: list syntax, OWS, and bytes a valid field never holds but a
        /// client may send (obs-text, invalid UTF-8, non-breaking spaces).
        fn request_value() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    "gzip", "GZIP", "br", "en", "q=0.5", ",", ";", " ", "\t", "\u{a0}", "\u{e9}",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                any::<u8>().prop_map(|b| vec![b]),
            ];
            prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The fields of `Vary` lines are their valid field names, lower-cased, each once, in
            /// order, whatever else the lines hold; `*` anywhere is seen.
            #[test]
            fn vary_fields_agree_with_the_model(
                lines in prop::collection::vec(
                    prop::collection::vec((member(), "[ \t]{0,2}"), 0..5),
                    1..4,
                ),
            ) {
                let mut response = HeaderMap::new();
                let mut model: Vec<HeaderName> = Vec::new();
                let mut star = false;
                for line in &lines {
                    let mut bytes = Vec::new();
                    for (i, (member, ows)) in line.iter().enumerate() {
                        if i > 0 {
                            bytes.push(b',');
                        }
                        bytes.extend_from_slice(ows.as_bytes());
                        bytes.extend_from_slice(member);
                        bytes.extend_from_slice(ows.as_bytes());
                        let member = trim_ows(field_value(member).as_bytes()).to_vec();
                        star |= member == b"*";
                        if let Ok(name) = HeaderName::from_bytes(&member)
                            && !model.contains(&name)
                        {
                            model.push(name);
                        }
                    }
                    response.append(VARY, field_value(&bytes));
                }
                prop_assert_eq!(fields(&response), model, "{:?}", response);
                prop_assert_eq!(is_star(&response), star);
            }

            /// The key has one entry per field, `None` exactly for the fields the request lacks,
            /// and is the same for lines that say the same list (§4.1: combined lines, OWS).
            #[test]
            fn secondary_keys_ignore_line_splits_and_ows(
                members in prop::collection::vec("[a-z]{1,4}(;q=0\\.[0-9])?", 1..5),
                split_at in any::<prop::sample::Index>(),
                ows in prop::sample::select(vec!["", " ", "\t", "  "]),
                present in any::<[bool; 3]>(),
            ) {
                let names = [ACCEPT_ENCODING, ACCEPT_LANGUAGE, HeaderName::from_static("x-mode")];
                let one_line = members.join(",");
                let at = split_at.index(members.len());
                let spaced = |members: &[String]| -> Vec<u8> {
                    members
                        .iter()
                        .map(|m| format!("{ows}{}{ows}", m.replace(';', &format!("{ows};{ows}"))))
                        .collect::<Vec<_>>()
                        .join(",")
                        .into_bytes()
                };
                let mut plain = HeaderMap::new();
                let mut split = HeaderMap::new();
                for (name, present) in names.iter().zip(present) {
                    if present {
                        plain.append(name, field_value(one_line.as_bytes()));
                        split.append(name, field_value(&spaced(&members[..at])));
                        split.append(name, field_value(&spaced(&members[at..])));
                    }
                }
                let key = secondary_key(&names, &plain);
                prop_assert_eq!(key.len(), names.len());
                for (entry, present) in key.iter().zip(present) {
                    prop_assert_eq!(entry.is_some(), present);
                }
                prop_assert_eq!(secondary_key(&names, &split), key);
            }

            /// §4.1 lets `Accept-Encoding` and `Accept-Language` be compared without case, and
            /// `Accept-Encoding` members in any order.
            #[test]
            fn accept_fields_ignore_case_and_encoding_order(
                members in prop::collection::vec("[a-z]{1,4}", 1..5),
                masks in any::<u64>(),
                rotate in any::<prop::sample::Index>(),
            ) {
                let shouted: Vec<String> = members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        if masks >> (i % 64) & 1 == 1 { m.to_ascii_uppercase() } else { m.clone() }
                    })
                    .collect();
                let mut rotated = shouted.clone();
                rotated.rotate_left(rotate.index(members.len()));
                let fields = [ACCEPT_ENCODING, ACCEPT_LANGUAGE];
                let request = |encodings: &[String], languages: &[String]| {
                    map(&[
                        ("accept-encoding", encodings.join(", ").into_bytes()),
                        ("accept-language", languages.join(", ").into_bytes()),
                    ])
                };
                prop_assert_eq!(
                    secondary_key(&fields, &request(&rotated, &shouted)),
                    secondary_key(&fields, &request(&members, &members))
                );
            }

            /// Requests whose fields mean different things get different keys, whatever bytes they
            /// hold: a case-sensitive field is told apart by any byte outside the OWS and empty
            /// members the model removes, `Accept-Encoding` by anything but ASCII case and order.
            #[test]
            fn different_values_get_different_keys(
                a in prop::collection::vec(request_value(), 1..3),
                other in prop::collection::vec(request_value(), 1..3),
                edit in (
                    any::<prop::sample::Index>(),
                    any::<prop::sample::Index>(),
                    any::<u8>(),
                    any::<bool>(),
                ),
                edited in any::<bool>(),
            ) {
                // `b` is another value, or `a` with one byte replaced or inserted: most often a
                // near miss, which is where a normalisation that goes too far shows.
                let b = if edited {
                    let (line, at, byte, insert) = edit;
                    let mut b = a.clone();
                    let line = &mut b[line.index(a.len())];
                    if insert || line.is_empty() {
                        let at = at.index(line.len() + 1);
                        line.insert(at, byte);
                    } else {
                        let at = at.index(line.len());
                        line[at] = byte;
                    }
                    b
                } else {
                    other
                };
                let models = [("x-mode", false, false), ("accept-encoding", true, true)];
                for (name, fold_case, sort) in models {
                    let field = [HeaderName::from_static(name)];
                    let request = |lines: &[Vec<u8>]| {
                        let mut map = HeaderMap::new();
                        for line in lines {
                            map.append(name, field_value(line));
                        }
                        secondary_key(&field, &map)
                    };
                    let same = meaning(&a, fold_case, sort) == meaning(&b, fold_case, sort);
                    let equal = request(&a) == request(&b);
                    prop_assert_eq!(equal, same, "{}: {:?} / {:?}", name, a, b);
                }
            }
        }
    }
}
