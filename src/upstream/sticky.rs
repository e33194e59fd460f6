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
}
