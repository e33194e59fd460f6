//! The `Cache-Status` response header (RFC 9211): what the cache did with a request, as one
//! list member named `gatehouse` with its parameters.

use http::HeaderValue;

/// Why the request went forward to the origin (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was configured not to handle this request (a Range request, a conditional only
    /// the origin can evaluate, an upgrade).
    Bypass,
    /// The method is not one whose responses are cached.
    Method,
    /// No stored response for the URL.
    UriMiss,
    /// Stored responses for the URL, none for this request's `Vary` values.
    VaryMiss,
    /// The request's own directives (`no-cache`, `max-age`, `min-fresh`) required going forward.
    Request,
    /// The stored response was stale (or marked `no-cache`) and had to be validated.
    Stale,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Request => "request",
            Forward::Stale => "stale",
        }
    }
}

/// One `Cache-Status` member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the cache without going forward (or after a 304 refreshed it: then `fwd`
    /// is set too).
    pub hit: bool,
    /// Why the request went forward.
    pub fwd: Option<Forward>,
    /// The status the origin answered the forward request with.
    pub fwd_status: Option<u16>,
    /// Seconds the response stays fresh (negative once stale).
    pub ttl: Option<i64>,
    /// The origin's response was stored.
    pub stored: bool,
    /// The request waited for another request's forward request instead of making its own.
    pub collapsed: bool,
    /// A token saying more (why not stored, stale served on error, and so on).
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// A hit with `ttl` seconds of freshness left.
    pub fn hit(ttl: i64) -> CacheStatus {
        CacheStatus {
            hit: true,
            ttl: Some(ttl),
            ..CacheStatus::default()
        }
    }

    /// A request that went forward for `reason`.
    pub fn forward(reason: Forward) -> CacheStatus {
        CacheStatus {
            fwd: Some(reason),
            ..CacheStatus::default()
        }
    }

    /// The member as it is written: `gatehouse; hit; ttl=30` and so on (RFC 8941 list member
    /// syntax: a token with parameters).
    pub fn to_header_value(&self) -> HeaderValue {
        let mut text = String::from("gatehouse");
        if self.hit {
            text.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            text.push_str("; fwd=");
            text.push_str(fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            text.push_str(&format!("; fwd-status={status}"));
        }
        if let Some(ttl) = self.ttl {
            text.push_str(&format!("; ttl={ttl}"));
        }
        if self.stored {
            text.push_str("; stored");
        }
        if self.collapsed {
            text.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            text.push_str("; detail=");
            text.push_str(detail);
        }
        // Only ASCII tokens, digits and fixed words are written above.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("gatehouse"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9211 §2: parameters hit, fwd, fwd-status, ttl, stored, collapsed, detail.
    #[test]
    fn members_are_written_as_rfc_9211_lists() {
        assert_eq!(
            CacheStatus::hit(42).to_header_value(),
            "gatehouse; hit; ttl=42"
        );
        let mut miss = CacheStatus::forward(Forward::UriMiss);
        miss.fwd_status = Some(200);
        miss.stored = true;
        miss.ttl = Some(60);
        assert_eq!(
            miss.to_header_value(),
            "gatehouse; fwd=uri-miss; fwd-status=200; ttl=60; stored"
        );
        let mut not_stored = CacheStatus::forward(Forward::UriMiss);
        not_stored.detail = Some("no-store");
        assert_eq!(
            not_stored.to_header_value(),
            "gatehouse; fwd=uri-miss; detail=no-store"
        );
        let mut revalidated = CacheStatus::hit(60);
        revalidated.fwd = Some(Forward::Stale);
        revalidated.fwd_status = Some(304);
        assert_eq!(
            revalidated.to_header_value(),
            "gatehouse; hit; fwd=stale; fwd-status=304; ttl=60"
        );
        // Served stale while a background refresh runs: not forwarded itself.
        let mut swr = CacheStatus::hit(-3);
        swr.detail = Some("stale-while-revalidate");
        assert_eq!(
            swr.to_header_value(),
            "gatehouse; hit; ttl=-3; detail=stale-while-revalidate"
        );
        let mut collapsed = CacheStatus::hit(5);
        collapsed.collapsed = true;
        assert_eq!(
            collapsed.to_header_value(),
            "gatehouse; hit; ttl=5; collapsed"
        );
    }
}
