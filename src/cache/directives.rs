//! Parses `Cache-Control` (RFC 9111 §5.2) of requests and responses into one typed value.
//!
//! Parsing is tolerant where the RFC allows it (names in any case, quoted arguments, unknown
//! extensions ignored) and conservative where a value is broken: an invalid `max-age` or
//! `s-maxage` counts as 0, so a response whose lifetime cannot be read is stale rather than
//! fresh for an unknown time (§4.2.1).

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// The largest delta-seconds value kept; larger ones (and overflows) become this (§1.2.2).
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// `max-stale` of a request: any staleness, or up to so many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without an argument: any staleness is accepted.
    Any,
    /// `max-stale=N`.
    Seconds(u64),
}

/// The directives of one message's `Cache-Control` header lines. Request-only and
/// response-only directives share the type; each side reads the ones that apply to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N` (both sides).
    pub max_age: Option<u64>,
    /// `s-maxage=N` (response): the shared-cache lifetime.
    pub s_maxage: Option<u64>,
    /// `no-store` (both sides).
    pub no_store: bool,
    /// `no-cache` (both sides; a response's field-name list is treated as unqualified).
    pub no_cache: bool,
    /// `private` (response; a field-name list is treated as unqualified).
    pub private: bool,
    /// `public` (response).
    pub public: bool,
    /// `must-revalidate` (response).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (response).
    pub proxy_revalidate: bool,
    /// `must-understand` (response).
    pub must_understand: bool,
    /// `no-transform` (both sides).
    pub no_transform: bool,
    /// `immutable` (response, RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate=N` (response, RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (both sides, RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `max-stale[=N]` (request).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh=N` (request).
    pub min_fresh: Option<u64>,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
}

impl CacheControl {
    /// The directives of every `Cache-Control` line of `headers`. For the first occurrence of a
    /// repeated directive wins (§4.2.1 allows "first occurrence").
    pub fn of(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut seen = Seen::default();
        for line in headers.get_all(CACHE_CONTROL) {
            // Non-ASCII bytes cannot be part of a directive; the line's readable prefix is kept
            // by reading it lossily.
            let text = String::from_utf8_lossy(line.as_bytes());
            for (name, argument) in split_directives(&text) {
                cc.apply(&name, argument.as_deref(), &mut seen);
            }
        }
        cc
    }

    /// A request's directives, with `Pragma: no-cache` read as `no-cache` when the request has
    /// no `Cache-Control` at all (RFC 9111 §5.4: kept for HTTP/1.0 clients).
    pub fn of_request(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::of(headers);
        if !headers.contains_key(CACHE_CONTROL)
            && headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    fn apply(&mut self, name: &str, argument: Option<&str>, seen: &mut Seen) {
        match name {
            "max-age" if !seen.max_age => {
                seen.max_age = true;
                // Invalid means stale (§4.2.1): 0, not absent.
                self.max_age = Some(delta_seconds(argument).unwrap_or(0));
            }
            "s-maxage" if !seen.s_maxage => {
                seen.s_maxage = true;
                self.s_maxage = Some(delta_seconds(argument).unwrap_or(0));
            }
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "no-transform" => self.no_transform = true,
            "immutable" => self.immutable = true,
            "stale-while-revalidate" if self.stale_while_revalidate.is_none() => {
                self.stale_while_revalidate = delta_seconds(argument);
            }
            "stale-if-error" if self.stale_if_error.is_none() => {
                self.stale_if_error = delta_seconds(argument);
            }
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = match argument {
                    None => Some(MaxStale::Any),
                    // An unreadable argument accepts no staleness rather than any.
                    Some(_) => Some(MaxStale::Seconds(delta_seconds(argument).unwrap_or(0))),
                };
            }
            "min-fresh" if self.min_fresh.is_none() => {
                self.min_fresh = delta_seconds(argument);
            }
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }
}

#[derive(Default)]
struct Seen {
    max_age: bool,
    s_maxage: bool,
}

/// Reads a delta-seconds argument (§1.2.2): digits only, capped at [`DELTA_SECONDS_MAX`].
pub fn delta_seconds(argument: Option<&str>) -> Option<u64> {
    let text = argument?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX)),
    )
}

/// Splits a `Cache-Control` line into lowercase directive names and their arguments (quotes
/// removed, backslash escapes resolved). Commas inside quoted strings do not split.
fn split_directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut directives = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // Skip separators.
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        let name = name.trim().to_owned();
        let mut argument = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        c => value.push(c),
                    }
                }
                // Anything after the closing quote up to the next comma is junk.
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            argument = Some(value.trim().to_owned());
        }
        if !name.is_empty() {
            directives.push((name, argument));
        }
    }
    directives
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(lines: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(line).unwrap());
        }
        CacheControl::of(&headers)
    }

    #[test]
    fn directives_are_read_case_insensitively_across_lines() {
        let parsed = cc(&["Public, MAX-AGE=60", "s-maxage=30,must-revalidate"]);
        assert!(parsed.public && parsed.must_revalidate);
        assert_eq!(parsed.max_age, Some(60));
        assert_eq!(parsed.s_maxage, Some(30));
    }

    /// §5.2: arguments may be quoted; recipients accept both forms.
    #[test]
    fn quoted_arguments_are_accepted() {
        assert_eq!(cc(&["max-age=\"3600\""]).max_age, Some(3600));
        let parsed = cc(&["private=\"set-cookie, x-a\", max-age=5"]);
        assert!(parsed.private, "qualified private is treated as private");
        assert_eq!(
            parsed.max_age,
            Some(5),
            "comma inside quotes does not split"
        );
    }

    /// §4.2.1: invalid freshness information makes a response stale; §1.2.2: huge values are
    /// capped at 2^31.
    #[test]
    fn invalid_lifetimes_are_zero_and_huge_ones_capped() {
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(0));
        assert_eq!(cc(&["max-age"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=1.5"]).max_age, Some(0));
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    /// §4.2.1: with duplicate directives, the first occurrence is used.
    #[test]
    fn the_first_of_repeated_directives_wins() {
        assert_eq!(cc(&["max-age=10, max-age=20"]).max_age, Some(10));
        assert_eq!(cc(&["max-age=10", "max-age=20"]).max_age, Some(10));
    }

    /// §5.2.1: request directives.
    #[test]
    fn request_directives_are_read() {
        let parsed = cc(&["max-stale, min-fresh=5, only-if-cached, no-cache, no-store"]);
        assert_eq!(parsed.max_stale, Some(MaxStale::Any));
        assert_eq!(parsed.min_fresh, Some(5));
        assert!(parsed.only_if_cached && parsed.no_cache && parsed.no_store);
        assert_eq!(cc(&["max-stale=7"]).max_stale, Some(MaxStale::Seconds(7)));
        assert_eq!(cc(&["max-stale=x"]).max_stale, Some(MaxStale::Seconds(0)));
    }

    /// RFC 5861 windows; unknown extensions are ignored (§5.2.3).
    #[test]
    fn stale_windows_and_extensions() {
        let parsed = cc(&["stale-while-revalidate=30, stale-if-error=600, foo=\"bar\", baz"]);
        assert_eq!(parsed.stale_while_revalidate, Some(30));
        assert_eq!(parsed.stale_if_error, Some(600));
        assert_eq!(cc(&[""]), CacheControl::default());
        assert_eq!(cc(&[",,, ,"]), CacheControl::default());
    }

    /// §5.4: `Pragma: no-cache` counts only when the request has no `Cache-Control`.
    #[test]
    fn pragma_no_cache_applies_without_cache_control() {
        let mut headers = HeaderMap::new();
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::of_request(&headers).no_cache);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::of_request(&headers).no_cache);
    }

    /// Property tests: `Cache-Control` comes from clients and backends alike, so the parser must
    /// take any bytes without panicking or overflowing, read every spelling the RFC allows for a
    /// directive (any case, OWS, token or quoted argument, several lines) the same way, and never
    /// let an extension's quoted argument pass for directives.
    mod properties {
        use super::*;
        use http::HeaderValue;
        use proptest::prelude::*;

        /// The bytes a header value may hold: HTAB, SP, visible ASCII and obs-text.
        fn field_value(mut bytes: Vec<u8>) -> HeaderValue {
            bytes.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            HeaderValue::from_bytes(&bytes).expect("filtered to field-value bytes")
        }

        /// Pieces of `Cache-Control` syntax, so random lines reach past the first byte of a
        /// directive.
        fn soup() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    "max-age",
                    "s-maxage",
                    "MAX-STALE",
                    "min-fresh",
                    "stale-if-error",
                    "stale-while-revalidate",
                    "no-cache",
                    "private",
                    "=",
                    "\"",
                    "\\",
                    ",",
                    " ",
                    "\t",
                    "18446744073709551616",
                    "99999999999999999999999999999999999999",
                    "-1",
                    "\u{e9}",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                any::<u8>().prop_map(|b| vec![b]),
                "[0-9]{1,25}".prop_map(String::into_bytes),
            ];
            prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
        }

        /// A delta-seconds value around the interesting edges: small, the cap, u64::MAX, beyond.
        fn delta() -> impl Strategy<Value = u128> {
            let cap = u128::from(DELTA_SECONDS_MAX);
            prop_oneof![
                0u128..100,
                prop::sample::select(vec![
                    cap - 1,
                    cap,
                    cap + 1,
                    u128::from(u64::MAX),
                    u128::from(u64::MAX) + 1
                ]),
                any::<u128>(),
            ]
        }

        fn capped(n: u128) -> u64 {
            n.min(u128::from(DELTA_SECONDS_MAX)) as u64
        }

        /// `name` with the letters whose bit is set in `mask` upper-cased.
        fn spelled(name: &str, mask: u32) -> String {
            name.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 32) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        }

        /// `digits` as an argument: a token, or a quoted string with some digits backslash-escaped.
        fn argument(digits: &str, quoted: bool, escapes: u32) -> String {
            if !quoted {
                return digits.to_owned();
            }
            let mut out = String::from("\"");
            for (i, c) in digits.chars().enumerate() {
                if escapes >> (i % 32) & 1 == 1 {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }

        /// One directive as a sender may write it.
        #[derive(Debug, Clone)]
        struct Written {
            name: &'static str,
            digits: Option<String>,
            mask: u32,
            quoted: bool,
            escapes: u32,
            space_before_eq: bool,
        }

        impl Written {
            fn render(&self) -> String {
                let name = spelled(self.name, self.mask);
                match &self.digits {
                    None => name,
                    Some(digits) => {
                        let eq = if self.space_before_eq { " = " } else { "=" };
                        format!("{name}{eq}{}", argument(digits, self.quoted, self.escapes))
                    }
                }
            }
        }

        #[derive(Debug, Clone)]
        struct Expected {
            flags: [bool; 10],
            max_age: Option<u128>,
            s_maxage: Option<u128>,
            stale_while_revalidate: Option<u128>,
            stale_if_error: Option<u128>,
            min_fresh: Option<u128>,
            max_stale: Option<Option<u128>>,
        }

        const FLAGS: [&str; 10] = [
            "no-store",
            "no-cache",
            "private",
            "public",
            "must-revalidate",
            "proxy-revalidate",
            "must-understand",
            "no-transform",
            "immutable",
            "only-if-cached",
        ];

        fn expected() -> impl Strategy<Value = Expected> {
            (
                any::<[bool; 10]>(),
                (
                    prop::option::of(delta()),
                    prop::option::of(delta()),
                    prop::option::of(delta()),
                    prop::option::of(delta()),
                    prop::option::of(delta()),
                    prop::option::of(prop::option::of(delta())),
                ),
            )
                .prop_map(
                    |(flags, (max_age, s_maxage, swr, sie, min_fresh, max_stale))| Expected {
                        flags,
                        max_age,
                        s_maxage,
                        stale_while_revalidate: swr,
                        stale_if_error: sie,
                        min_fresh,
                        max_stale,
                    },
                )
        }

        impl Expected {
            fn directives(&self) -> Vec<(&'static str, Option<u128>)> {
                let mut out: Vec<(&'static str, Option<u128>)> = FLAGS
                    .iter()
                    .zip(self.flags)
                    .filter(|(_, on)| *on)
                    .map(|(name, _)| (*name, None))
                    .collect();
                for (name, value) in [
                    ("max-age", self.max_age),
                    ("s-maxage", self.s_maxage),
                    ("stale-while-revalidate", self.stale_while_revalidate),
                    ("stale-if-error", self.stale_if_error),
                    ("min-fresh", self.min_fresh),
                ] {
                    if let Some(n) = value {
                        out.push((name, Some(n)));
                    }
                }
                if let Some(limit) = self.max_stale {
                    out.push(("max-stale", limit));
                }
                out
            }

            fn parsed(&self) -> CacheControl {
                CacheControl {
                    max_age: self.max_age.map(capped),
                    s_maxage: self.s_maxage.map(capped),
                    no_store: self.flags[0],
                    no_cache: self.flags[1],
                    private: self.flags[2],
                    public: self.flags[3],
                    must_revalidate: self.flags[4],
                    proxy_revalidate: self.flags[5],
                    must_understand: self.flags[6],
                    no_transform: self.flags[7],
                    immutable: self.flags[8],
                    stale_while_revalidate: self.stale_while_revalidate.map(capped),
                    stale_if_error: self.stale_if_error.map(capped),
                    max_stale: self
                        .max_stale
                        .map(|limit| limit.map_or(MaxStale::Any, |n| MaxStale::Seconds(capped(n)))),
                    min_fresh: self.min_fresh.map(capped),
                    only_if_cached: self.flags[9],
                }
            }
        }

        /// The header lines of `written`: joined with the separators of `separators` (cycled), and
        /// a new line started where `breaks` has a bit set.
        fn lines(written: &[String], separators: &[&str], breaks: u32) -> Vec<String> {
            let mut lines = vec![String::new()];
            for (i, directive) in written.iter().enumerate() {
                let line = lines.last_mut().expect("one line at least");
                if i > 0 {
                    if breaks >> (i % 32) & 1 == 1 {
                        lines.push(String::new());
                    } else {
                        line.push_str(separators[i % separators.len()]);
                    }
                }
                lines
                    .last_mut()
                    .expect("one line at least")
                    .push_str(directive);
            }
            lines
        }

        fn parse_lines(lines: &[String]) -> CacheControl {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(
                    CACHE_CONTROL,
                    HeaderValue::from_str(line).expect("test line"),
                );
            }
            CacheControl::of(&headers)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes on any number of lines parse, and no lifetime read exceeds the cap of
            /// §1.2.2.
            #[test]
            fn any_field_lines_parse_within_the_cap(
                lines in prop::collection::vec(
                    prop_oneof![soup(), prop::collection::vec(any::<u8>(), 0..64)],
                    0..4,
                ),
                pragma in soup(),
            ) {
                let mut headers = HeaderMap::new();
                for line in lines {
                    headers.append(CACHE_CONTROL, field_value(line));
                }
                headers.append(PRAGMA, field_value(pragma));
                for cc in [CacheControl::of(&headers), CacheControl::of_request(&headers)] {
                    let lifetimes = [
                        cc.max_age,
                        cc.s_maxage,
                        cc.stale_while_revalidate,
                        cc.stale_if_error,
                        cc.min_fresh,
                    ];
                    for value in lifetimes.into_iter().flatten() {
                        prop_assert!(value <= DELTA_SECONDS_MAX);
                    }
                    if let Some(MaxStale::Seconds(limit)) = cc.max_stale {
                        prop_assert!(limit <= DELTA_SECONDS_MAX);
                    }
                }
            }

            /// §1.2.2: any run of digits (leading zeros, u64::MAX, hundreds of digits) is its value
            /// capped at 2^31; anything else is not delta-seconds.
            #[test]
            fn delta_seconds_is_the_capped_decimal_value(
                digits in "[0-9]{1,300}",
                other in "\\PC{0,20}",
            ) {
                let significant = digits.trim_start_matches('0');
                let model = if significant.len() > 10 {
                    DELTA_SECONDS_MAX
                } else {
                    capped(significant.parse::<u128>().unwrap_or(0))
                };
                prop_assert_eq!(delta_seconds(Some(&digits)), Some(model));
                let is_digits = !other.is_empty() && other.bytes().all(|b| b.is_ascii_digit());
                prop_assert_eq!(delta_seconds(Some(&other)).is_some(), is_digits);
                prop_assert_eq!(delta_seconds(None), None);
            }

            /// Directives written in any order, case, argument form (token or quoted, with quoted
            /// pairs), with any separators and over several lines, read back as written; repeats
            /// after the first change nothing (§4.2.1).
            #[test]
            fn written_directives_read_back(
                expected in expected(),
                order in any::<u64>(),
                masks in any::<[u32; 16]>(),
                quoted in any::<[bool; 16]>(),
                escapes in any::<[u32; 16]>(),
                leading_zeros in any::<[u8; 16]>(),
                separators in prop::collection::vec(
                    prop::sample::select(vec![",", ", ", " ,", ",,", " , ,\t", ",\t"]),
                    1..4,
                ),
                breaks in any::<u32>(),
                repeats in prop::collection::vec(delta(), 0..3),
            ) {
                let mut directives = expected.directives();
                // A deterministic shuffle driven by `order`.
                let len = directives.len();
                for i in (1..len).rev() {
                    directives.swap(i, (order.rotate_left(i as u32) as usize) % (i + 1));
                }
                let mut written: Vec<String> = directives
                    .iter()
                    .enumerate()
                    .map(|(i, (name, value))| {
                        Written {
                            name,
                            digits: value.map(|n| {
                                format!("{}{n}", "0".repeat(usize::from(leading_zeros[i % 16] % 4)))
                            }),
                            mask: masks[i % 16],
                            quoted: quoted[i % 16],
                            escapes: escapes[i % 16],
                            space_before_eq: masks[(i + 1) % 16] & 1 == 1,
                        }
                        .render()
                    })
                    .collect();
                // Later repeats of directives already present are ignored.
                for (i, n) in repeats.iter().enumerate() {
                    let Some((name, Some(_))) = directives.get(i) else { continue };
                    written.push(format!("{name}={n}"));
                }
                let lines = lines(&written, &separators, breaks);
                prop_assert_eq!(parse_lines(&lines), expected.parsed(), "{:?}", lines);
            }

            /// §5.2.3: an extension directive is ignored, whatever its quoted argument holds
            /// (commas, known directive names, escaped quotes).
            #[test]
            fn extensions_with_quoted_arguments_change_nothing(
                expected in expected(),
                extension in "x-[a-z]{1,8}",
                inside in prop::collection::vec(prop::sample::select(vec![
                    "no-store", "max-age=0", ",", ", private", "\\\"", "\\\\", " ", "s-maxage=1",
                ]), 0..6),
                at in any::<prop::sample::Index>(),
            ) {
                let mut written: Vec<String> = expected
                    .directives()
                    .iter()
                    .map(|(name, value)| match value {
                        Some(n) => format!("{name}={n}"),
                        None => (*name).to_owned(),
                    })
                    .collect();
                let position = at.index(written.len() + 1);
                written.insert(position, format!("{extension}=\"{}\"", inside.concat()));
                let line = written.join(", ");
                let parsed = parse_lines(std::slice::from_ref(&line));
                prop_assert_eq!(parsed, expected.parsed(), "{}", line);
            }

            /// §5.4: `Pragma: no-cache`, in any case and position of its list, means `no-cache` for
            /// a request without `Cache-Control`, and nothing for one with it.
            #[test]
            fn pragma_no_cache_counts_only_without_cache_control(
                before in prop::collection::vec("[a-z]{1,6}(=[a-z0-9]{1,3})?", 0..3),
                after in prop::collection::vec("[a-z]{1,6}", 0..3),
                mask in any::<u32>(),
                with_cache_control in any::<bool>(),
            ) {
                let mut members = before.clone();
                members.push(format!(" {} ", spelled("no-cache", mask)));
                members.extend(after);
                let mut headers = HeaderMap::new();
                let pragma = HeaderValue::from_str(&members.join(",")).expect("test line");
                headers.insert(PRAGMA, pragma);
                if with_cache_control {
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
                }
                prop_assert_eq!(CacheControl::of_request(&headers).no_cache, !with_cache_control);
            }
        }
    }
}
