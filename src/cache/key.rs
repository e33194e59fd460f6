//! Cache key options: how much of the request makes a stored response's key, beyond scheme,
//! host, path and query. The query can be kept as sent, sorted, stripped of some parameters
//! (`utm_*`) or dropped; request headers and cookies can be added.
//!
//! The query options change the URL the response is stored under (the primary key), so purges
//! and invalidations of a URL apply them too. Added headers and cookies make variants of one
//! URL, exactly as if the response had `Vary` on them (a cookie counts as a field of its own),
//! so a purge of the URL removes all of them.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// What part of the query the key keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryKey {
    /// The query as the client sent it (minus ignored parameters).
    #[default]
    AsIs,
    /// Parameters sorted by name, so `?b=2&a=1` and `?a=1&b=2` share an entry.
    Sorted,
    /// No query at all: every query string of a path shares one entry.
    Ignore,
}

/// Prefix of the request fields a `key_cookies` cookie is keyed as (see [`KeyOptions`]).
const COOKIE_FIELD_PREFIX: &str = "gatehouse-key-cookie-";

/// The cache key options (`[cache] key_*`).
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// What of the query counts.
    pub query: QueryKey,
    /// Parameter names left out of the key: exact names, or prefixes written `name*`.
    pub ignore_params: Vec<String>,
    /// Request headers whose values make variants.
    pub headers: Vec<HeaderName>,
    /// Cookies whose values make variants, with the field each is keyed as.
    cookies: Vec<(String, HeaderName)>,
}

impl KeyOptions {
    /// Options from the configuration's values; `Err` names a cookie or header that cannot be
    /// keyed on.
    pub fn new(
        query: QueryKey,
        ignore_params: Vec<String>,
        headers: &[String],
        cookies: &[String],
    ) -> Result<KeyOptions, String> {
        let headers = headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cookies = cookies
            .iter()
            .map(|name| cookie_field(name).map(|field| (name.clone(), field)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyOptions {
            query,
            ignore_params,
            headers,
            cookies,
        })
    }

    /// The primary key of a request for `uri` on `scheme://host`.
    pub fn primary_key(&self, scheme: &str, host: &str, uri: &http::Uri) -> Arc<str> {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        super::stage::key_of(scheme, host, &self.target(target))
    }

    /// The request target (path and query) as the key keeps it.
    pub fn target<'a>(&self, target: &'a str) -> Cow<'a, str> {
        let Some((path, query)) = target.split_once('?') else {
            return Cow::Borrowed(target);
        };
        if self.query == QueryKey::Ignore {
            return Cow::Owned(path.to_owned());
        }
        if self.query == QueryKey::AsIs && self.ignore_params.is_empty() {
            return Cow::Borrowed(target);
        }
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|param| !param.is_empty())
            .filter(|param| {
                let name = param.split_once('=').map_or(*param, |(name, _)| name);
                !self.ignores(name)
            })
            .collect();
        if self.query == QueryKey::Sorted {
            // By name; a stable sort keeps repeated names in their order (`a=1&a=2` differs
            // from `a=2&a=1` for most applications).
            params.sort_by_key(|param| param.split_once('=').map_or(*param, |(name, _)| name));
        }
        if params.is_empty() {
            Cow::Owned(path.to_owned())
        } else {
            Cow::Owned(format!("{path}?{}", params.join("&")))
        }
    }

    fn ignores(&self, name: &str) -> bool {
        self.ignore_params
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }

    /// The request fields added to every stored response's `Vary` fields.
    pub fn vary_fields(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers
            .iter()
            .chain(self.cookies.iter().map(|(_, field)| field))
    }

    /// The request headers variants are selected by: `request`, with each keyed cookie's
    /// value as a field of its own (and any such field the client sent itself removed).
    pub fn keying_headers(&self, request: &HeaderMap) -> HeaderMap {
        let mut headers = request.clone();
        if self.cookies.is_empty() {
            return headers;
        }
        for (name, field) in &self.cookies {
            headers.remove(field);
            if let Some(value) = cookie_value(request, name)
                && let Ok(value) = HeaderValue::from_str(value)
            {
                headers.insert(field.clone(), value);
            }
        }
        headers
    }
}

/// The field a cookie is keyed as; `Err` when `name` is not a cookie name (RFC 6265 token).
pub fn cookie_field(name: &str) -> Result<HeaderName, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid
        .then(|| HeaderName::from_bytes(format!("{COOKIE_FIELD_PREFIX}{name}").as_bytes()).ok())
        .flatten()
        .ok_or_else(|| format!("{name:?} is not a valid cookie name"))
}

/// The value of cookie `name` in the request's `Cookie` lines (the first one), if any.
fn cookie_value<'a>(request: &'a HeaderMap, name: &str) -> Option<&'a str> {
    request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(query: QueryKey, ignore: &[&str]) -> KeyOptions {
        KeyOptions::new(
            query,
            ignore.iter().map(|s| s.to_string()).collect(),
            &[],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn query_options() {
        let as_is = options(QueryKey::AsIs, &[]);
        assert_eq!(as_is.target("/p?b=2&a=1"), "/p?b=2&a=1");
        assert_eq!(as_is.target("/p"), "/p");
        let sorted = options(QueryKey::Sorted, &[]);
        assert_eq!(sorted.target("/p?b=2&a=1&a=0"), "/p?a=1&a=0&b=2");
        let ignored = options(QueryKey::Ignore, &[]);
        assert_eq!(ignored.target("/p?b=2&a=1"), "/p");
        let tracking = options(QueryKey::AsIs, &["utm_*", "fbclid"]);
        assert_eq!(
            tracking.target("/p?utm_source=x&id=7&fbclid=y&fbclid2=z"),
            "/p?id=7&fbclid2=z"
        );
        assert_eq!(tracking.target("/p?utm_source=x"), "/p");
        assert_eq!(tracking.target("/p?&&id=1&"), "/p?id=1");
        let sorted_tracking = options(QueryKey::Sorted, &["utm_*"]);
        assert_eq!(sorted_tracking.target("/p?z=1&utm_x=2&a"), "/p?a&z=1");
    }

    #[test]
    fn primary_keys_apply_the_query_options() {
        let uri: http::Uri = "/a?utm_medium=m&x=1".parse().unwrap();
        assert_eq!(
            &*options(QueryKey::AsIs, &["utm_*"]).primary_key("http", "Example.com:80", &uri),
            "http://example.com/a?x=1"
        );
    }

    #[test]
    fn keyed_cookies_become_fields_of_their_own() {
        let keyed = KeyOptions::new(
            QueryKey::AsIs,
            Vec::new(),
            &["X-Device".to_owned()],
            &["lang".to_owned()],
        )
        .unwrap();
        let mut request = HeaderMap::new();
        request.insert("cookie", HeaderValue::from_static("session=1; lang=fr"));
        request.insert(
            "gatehouse-key-cookie-lang",
            HeaderValue::from_static("forged"),
        );
        let headers = keyed.keying_headers(&request);
        assert_eq!(headers["gatehouse-key-cookie-lang"], "fr");
        let fields: Vec<&str> = keyed.vary_fields().map(|f| f.as_str()).collect();
        assert_eq!(fields, ["x-device", "gatehouse-key-cookie-lang"]);
        let without = keyed.keying_headers(&HeaderMap::new());
        assert!(without.get("gatehouse-key-cookie-lang").is_none());
        assert!(KeyOptions::new(QueryKey::AsIs, Vec::new(), &[], &["a b".to_owned()]).is_err());
        assert!(KeyOptions::new(QueryKey::AsIs, Vec::new(), &["a b".to_owned()], &[]).is_err());
    }

    /// Property tests: the request target and `Cookie` lines a key is built from are the client's,
    /// so the key options must handle any target and any cookie text, keep exactly the parameters
    /// they are told to keep (in the order they promise), and never let a client's own field stand
    /// in for a keyed cookie.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A query parameter: a name from a small set (so names repeat and `utm_*` / `fbclid`
        /// match), with or without a value, or an empty one (`&&`).
        fn param() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (
                    prop::sample::select(vec![
                        "a", "b", "id", "utm_source", "utm_", "fbclid", "fbclid2", "é",
                    ]),
                    prop::option::of("[a-z0-9=%]{0,4}"),
                )
                    .prop_map(|(name, value)| match value {
                        Some(value) => format!("{name}={value}"),
                        None => name.to_owned(),
                    }),
                1 => Just(String::new()),
            ]
        }

        fn options(query: QueryKey, ignore: &[&str]) -> KeyOptions {
            KeyOptions::new(
                query,
                ignore.iter().map(|s| (*s).to_owned()).collect(),
                &[],
                &[],
            )
            .expect("no headers or cookies to check")
        }

        fn name_of(param: &str) -> &str {
            param.split_once('=').map_or(param, |(name, _)| name)
        }

        fn query_key() -> impl Strategy<Value = QueryKey> {
            prop::sample::select(vec![QueryKey::AsIs, QueryKey::Sorted, QueryKey::Ignore])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The key's query holds exactly the non-empty parameters not ignored, as sent (AsIs)
            /// or stably sorted by name (Sorted), none for Ignore; the path is always kept as sent.
            #[test]
            fn keys_keep_exactly_the_parameters_not_ignored(
                path in "/[a-z/%.]{0,8}",
                params in prop::collection::vec(param(), 0..8),
                query in query_key(),
                ignore in prop::sample::subsequence(vec!["utm_*", "fbclid", "*x", "id"], 0..=2),
            ) {
                let target = format!("{path}?{}", params.join("&"));
                let key = options(query, &ignore).target(&target).into_owned();
                let ignored = |name: &str| {
                    ignore.iter().any(|pattern| match pattern.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => name == *pattern,
                    })
                };
                let mut kept: Vec<&str> = params
                    .iter()
                    .map(String::as_str)
                    .filter(|p| !p.is_empty() && !ignored(name_of(p)))
                    .collect();
                let expected = match query {
                    QueryKey::Ignore => path.clone(),
                    QueryKey::AsIs if ignore.is_empty() => target.clone(),
                    _ => {
                        if query == QueryKey::Sorted {
                            kept.sort_by(|x, y| name_of(x).cmp(name_of(y)));
                        }
                        if kept.is_empty() {
                            path.clone()
                        } else {
                            format!("{path}?{}", kept.join("&"))
                        }
                    }
                };
                prop_assert_eq!(key, expected);
            }

            /// Any target: no panic, a target without `?` is kept as it is, and applying the
            /// options to a key changes it no further (purges apply them to URLs that may be keys
            /// already).
            #[test]
            fn keys_are_stable_under_the_options(
                target in "\\PC{0,30}|[/?&=a-z]{0,20}",
                query in query_key(),
                ignore in prop::sample::subsequence(vec!["utm_*", "a", "*"], 0..=2),
            ) {
                let options = options(query, &ignore);
                let key = options.target(&target).into_owned();
                if !target.contains('?') {
                    prop_assert_eq!(&key, &target);
                }
                prop_assert_eq!(options.target(&key).into_owned(), key);
            }

            /// Sorted: parameters with distinct names give one key in any order.
            #[test]
            fn sorted_keys_do_not_depend_on_parameter_order(
                params in prop::collection::btree_map("[a-z]{1,3}", "[a-z0-9]{0,2}", 1..6),
                rotate in any::<prop::sample::Index>(),
            ) {
                let mut pairs: Vec<String> =
                    params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let sorted = pairs.join("&");
                let by = rotate.index(pairs.len());
                pairs.rotate_left(by);
                pairs.reverse();
                let options = options(QueryKey::Sorted, &[]);
                prop_assert_eq!(
                    options.target(&format!("/p?{}", pairs.join("&"))).into_owned(),
                    format!("/p?{sorted}")
                );
            }

            /// The primary key does not depend on the case of the host or an explicit default port.
            #[test]
            fn primary_keys_ignore_host_case_and_the_default_port(
                host in "[a-z][a-z0-9.-]{0,12}",
                upper in any::<u32>(),
                https in any::<bool>(),
                path in "/[a-z0-9]{0,6}",
            ) {
                let scheme = if https { "https" } else { "http" };
                let port = if https { ":443" } else { ":80" };
                let shouted: String = host
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if upper >> (i % 32) & 1 == 1 { c.to_ascii_uppercase() } else { c }
                    })
                    .collect();
                let uri: http::Uri = path.parse().expect("a path");
                let options = KeyOptions::default();
                let key = options.primary_key(scheme, &host, &uri);
                let spelled = format!("{shouted}{port}");
                prop_assert_eq!(&key, &options.primary_key(scheme, &spelled, &uri));
                let expected = format!("{scheme}://{host}{path}");
                prop_assert_eq!(&*key, expected.as_str());
            }

            /// §4.1.1 of RFC 6265: a cookie name is a token; exactly those are keyed on.
            #[test]
            fn cookie_names_are_keyed_exactly_when_tokens(
                name in "\\PC{0,8}|[a-zA-Z0-9!#$%&'*+.^_`|~ ;=-]{0,8}",
            ) {
                let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                let token = !name.is_empty() && name.bytes().all(tchar);
                prop_assert_eq!(cookie_field(&name).is_ok(), token, "{:?}", name);
            }

            /// A keyed cookie's field holds the value of the first such cookie in the `Cookie`
            /// lines, or is absent; a field of that name the client sent itself never survives.
            #[test]
            fn keyed_cookie_fields_hold_the_first_cookie_value(
                lines in prop::collection::vec(
                    prop::collection::vec(
                        (
                            prop::sample::select(vec!["lang", "Lang", "session", "lang2", " lang"]),
                            "[a-z0-9=]{0,4}",
                        ),
                        0..4,
                    ),
                    0..3,
                ),
                forged in any::<bool>(),
            ) {
                let keyed = KeyOptions::new(QueryKey::AsIs, Vec::new(), &[], &["lang".to_owned()])
                    .expect("a token");
                let mut request = HeaderMap::new();
                for line in &lines {
                    let text: Vec<String> = line.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let line = HeaderValue::from_str(&text.join("; ")).expect("a line");
                    request.append(header::COOKIE, line);
                }
                if forged {
                    request.insert("gatehouse-key-cookie-lang", HeaderValue::from_static("forged"));
                }
                // Pairs are trimmed, so " lang" is `lang` too; names are case-sensitive.
                let first = lines
                    .iter()
                    .flatten()
                    .find(|(k, _)| k.trim() == "lang")
                    .map(|(_, v)| v.as_str());
                let headers = keyed.keying_headers(&request);
                let field = headers.get_all("gatehouse-key-cookie-lang").iter().collect::<Vec<_>>();
                match first {
                    Some(value) => prop_assert_eq!(field, [value]),
                    None => prop_assert!(field.is_empty()),
                }
            }
        }
    }
}
