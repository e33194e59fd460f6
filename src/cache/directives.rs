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
}
