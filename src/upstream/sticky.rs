//! Sticky sessions: the cookie that sends a client back to the backend that served it.
//!
//! The cookie value is an HMAC of the pool and backend address under a secret, cut to 16 hex
//! digits: it names the backend without revealing its address, and a client cannot forge a
//! value that steers it to a backend of its choosing without the secret.

use aws_lc_rs::hmac;
use http::HeaderValue;

/// A pool's sticky-cookie settings and the cookie value of each backend.
#[derive(Debug)]
pub struct StickyCookie {
    /// Cookie name.
    pub name: String,
    max_age: Option<u64>,
    /// Cookie value per backend, in backend order.
    tokens: Vec<String>,
}

impl StickyCookie {
    /// Derives each backend's cookie value from `secret`, or from `fallback_key` when the pool
    /// sets none.
    pub fn new(
        name: &str,
        secret: Option<&str>,
        fallback_key: &[u8],
        max_age: Option<std::time::Duration>,
        pool: &str,
        addresses: &[&str],
    ) -> Self {
        let key = match secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            None => hmac::Key::new(hmac::HMAC_SHA256, fallback_key),
        };
        let tokens = addresses
            .iter()
            .map(|address| {
                let mut context = hmac::Context::with_key(&key);
                context.update(pool.as_bytes());
                context.update(&[0]);
                context.update(address.as_bytes());
                let tag = context.sign();
                tag.as_ref()
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        StickyCookie {
            name: name.to_owned(),
            max_age: max_age.map(|d| d.as_secs()),
            tokens,
        }
    }

    /// The backend a request's `Cookie` headers stick it to, if any.
    pub fn backend_of(&self, headers: &http::HeaderMap) -> Option<usize> {
        let value = cookie_value(headers, &self.name)?;
        self.tokens.iter().position(|token| token == value)
    }

    /// The `Set-Cookie` value that sticks a client to `backend`.
    pub fn set_cookie(&self, backend: usize, secure: bool) -> Option<HeaderValue> {
        let token = self.tokens.get(backend)?;
        let mut value = format!("{}={token}; Path=/; HttpOnly; SameSite=Lax", self.name);
        if let Some(age) = self.max_age {
            value.push_str(&format!("; Max-Age={age}"));
        }
        if secure {
            value.push_str("; Secure");
        }
        HeaderValue::from_str(&value).ok()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4 syntax).
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    #[test]
    fn a_set_cookie_leads_back_to_its_backend_without_naming_it() {
        let sticky = StickyCookie::new(
            "s",
            Some("k"),
            b"",
            None,
            "app",
            &["10.0.0.1:80", "10.0.0.2:80"],
        );
        for backend in 0..2 {
            let set = sticky.set_cookie(backend, false).unwrap();
            let set = set.to_str().unwrap();
            assert!(!set.contains("10.0.0"), "{set}");
            let pair = set.split(';').next().unwrap();
            assert_eq!(
                sticky.backend_of(&headers(&format!("a=1; {pair}"))),
                Some(backend)
            );
        }
        assert_eq!(sticky.backend_of(&headers("s=0123456789abcdef")), None);
        assert_eq!(sticky.backend_of(&headers("other=1")), None);
    }

    #[test]
    fn values_depend_on_the_secret_and_are_stable_for_it() {
        let a = StickyCookie::new("s", Some("k1"), b"", None, "app", &["h:1"]);
        let b = StickyCookie::new("s", Some("k1"), b"", None, "app", &["h:1"]);
        let c = StickyCookie::new("s", Some("k2"), b"", None, "app", &["h:1"]);
        assert_eq!(a.tokens, b.tokens);
        assert_ne!(a.tokens, c.tokens);
    }

    #[test]
    fn cookie_attributes_follow_the_settings() {
        let s = StickyCookie::new(
            "s",
            None,
            b"random",
            Some(std::time::Duration::from_secs(60)),
            "p",
            &["h:1"],
        );
        let v = s.set_cookie(0, true).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.contains("Max-Age=60") && v.ends_with("; Secure") && v.contains("HttpOnly"));
        assert!(s.set_cookie(5, false).is_none());
    }

    /// Properties of sticky cookies (docs/load-balancing.md, "Sticky sessions"): the value is
    /// the client's, so any bytes are handled; a cookie Gatehouse set leads back to its
    /// backend; anything else (forged, altered, cut) leads nowhere.
    mod properties {
        use super::*;
        use proptest::collection::{btree_set, vec};
        use proptest::prelude::*;

        /// A pool: name, secret (or none, with a random fallback key), cookie name, distinct
        /// addresses (the config refuses a backend listed twice).
        fn sticky() -> impl Strategy<Value = (StickyCookie, usize)> {
            (
                "[a-z][a-z0-9_-]{0,8}",
                prop::option::of(".{0,24}"),
                vec(any::<u8>(), 0..32),
                "[A-Za-z0-9_.!#$%&'*+^`|~-]{1,12}",
                btree_set("[a-z0-9.-]{1,12}:[0-9]{1,5}", 1..6),
            )
                .prop_map(|(pool, secret, fallback, cookie, addresses)| {
                    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
                    let sticky = StickyCookie::new(
                        &cookie,
                        secret.as_deref(),
                        &fallback,
                        None,
                        &pool,
                        &addresses,
                    );
                    (sticky, addresses.len())
                })
        }

        /// Bytes a header value may hold: anything but controls other than tab, and DEL.
        fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
            vec(
                prop_oneof![
                    any::<u8>(),
                    prop::sample::select(b";= \t\"abcdef0123456789".to_vec()),
                ],
                0..80,
            )
            .prop_map(|bytes| {
                bytes
                    .into_iter()
                    .map(|b| {
                        if (b < 0x20 && b != b'\t') || b == 0x7f {
                            b'x'
                        } else {
                            b
                        }
                    })
                    .collect()
            })
        }

        fn cookie_headers(lines: &[Vec<u8>]) -> http::HeaderMap {
            let mut map = http::HeaderMap::new();
            for line in lines {
                map.append(
                    http::header::COOKIE,
                    HeaderValue::from_bytes(line).expect("valid header bytes"),
                );
            }
            map
        }

        /// The `NAME=VALUE` a `Set-Cookie` value starts with.
        fn pair(sticky: &StickyCookie, backend: usize) -> String {
            let set = sticky
                .set_cookie(backend, false)
                .expect("a backend of the pool");
            set.to_str().unwrap().split(';').next().unwrap().to_owned()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any `Cookie` lines, with or without the pool's cookie in them: no panic, and
            /// at most a backend of the pool.
            #[test]
            fn any_cookie_bytes_lead_at_most_to_a_backend_of_the_pool(
                (sticky, backends) in sticky(),
                lines in vec(header_bytes(), 0..4),
                with_name in any::<bool>(),
            ) {
                let mut lines = lines;
                if with_name && let Some(first) = lines.first_mut() {
                    let mut prefixed = format!("{}=", sticky.name).into_bytes();
                    prefixed.append(first);
                    *first = prefixed;
                }
                let headers = cookie_headers(&lines);
                let _ = cookie_value(&headers, &sticky.name);
                if let Some(backend) = sticky.backend_of(&headers) {
                    prop_assert!(backend < backends);
                }
            }

            /// The cookie set for a backend leads back to it, among other cookies, quoted or
            /// not, on any of several `Cookie` lines.
            #[test]
            fn a_cookie_gatehouse_set_leads_back_to_its_backend(
                (sticky, backends) in sticky(),
                backend in any::<prop::sample::Index>(),
                others in vec(("[A-Za-z0-9_-]{1,8}", "[A-Za-z0-9_-]{0,8}"), 0..4),
                position in any::<prop::sample::Index>(),
                quoted in any::<bool>(),
                line in 0usize..3,
            ) {
                let backend = backend.index(backends);
                let ours = pair(&sticky, backend);
                let ours = if quoted {
                    let (name, value) = ours.split_once('=').unwrap();
                    format!("{name}=\"{value}\"")
                } else {
                    ours
                };
                let mut pairs: Vec<String> = others
                    .into_iter()
                    .filter(|(name, _)| *name != sticky.name)
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                pairs.insert(position.index(pairs.len() + 1), ours);
                let mut lines = vec![Vec::new(); 3];
                lines[line] = pairs.join("; ").into_bytes();
                lines.retain(|l| !l.is_empty());
                prop_assert_eq!(sticky.backend_of(&cookie_headers(&lines)), Some(backend));
            }

            /// A value altered in any way (a character changed, cut, lengthened, its case
            /// changed) names no backend: without the secret a client cannot steer itself.
            #[test]
            fn an_altered_cookie_leads_nowhere(
                (sticky, backends) in sticky(),
                backend in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                replacement in prop::sample::select(b"0123456789abcdefABCDEFxz".to_vec()),
                how in 0u8..4,
            ) {
                let backend = backend.index(backends);
                let ours = pair(&sticky, backend);
                let (name, value) = ours.split_once('=').unwrap();
                let mut value = value.as_bytes().to_vec();
                let at = at.index(value.len());
                match how {
                    0 => {
                        prop_assume!(value[at] != replacement);
                        value[at] = replacement;
                    }
                    1 => value.truncate(at),
                    2 => value.insert(at, replacement),
                    _ => {
                        prop_assume!(value.iter().any(u8::is_ascii_lowercase));
                        value.make_ascii_uppercase();
                    }
                }
                let forged = format!("{name}={}", String::from_utf8(value).unwrap());
                prop_assert_eq!(
                    sticky.backend_of(&cookie_headers(&[forged.into_bytes()])),
                    None
                );
            }
        }
    }
}
