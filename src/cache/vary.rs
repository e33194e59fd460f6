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
    members(response).any(|field| field == "*")
}

fn members(response: &HeaderMap) -> impl Iterator<Item = &str> {
    response
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
}

/// The header names listed in the response's `Vary` lines, lowercased, each once, in order.
/// Names that are not valid header names cannot be matched by any request and are kept out;
/// `*` is not a name (see [`is_star`]).
pub fn fields(response: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for member in members(response) {
        if let Ok(name) = HeaderName::from_bytes(member.as_bytes())
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

fn normalise(name: &HeaderName, request: &HeaderMap) -> Option<String> {
    let lines: Vec<&[u8]> = request.get_all(name).iter().map(|v| v.as_bytes()).collect();
    if lines.is_empty() {
        return None;
    }
    let combined = lines
        .iter()
        .map(|line| String::from_utf8_lossy(line))
        .collect::<Vec<_>>()
        .join(",");
    let case_insensitive = name == ACCEPT_ENCODING || name == ACCEPT_LANGUAGE;
    let mut parts: Vec<String> = combined
        .split(',')
        .map(|m| {
            // Whitespace around `;` carries no meaning in these lists either.
            let member = m.split(';').map(str::trim).collect::<Vec<_>>().join(";");
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
}
