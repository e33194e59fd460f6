//! The typed shape of the protection settings: `[security]` (identity hiding, client identity,
//! request strictness) and the per-route and per-listener guards (IP lists, methods, basic auth,
//! rate limits).

use serde::Deserialize;
use serde_spanned::Spanned;

/// `[security]`: process-wide protection settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Response headers removed so clients never learn what runs behind the proxy. An entry
    /// ending in `*` removes every header starting with what precedes it.
    pub hide_headers: Vec<String>,
    /// Replace the bodies of backend 5xx responses with Gatehouse's own generic page.
    pub replace_error_pages: bool,
    /// Rewrite `Location`/`Content-Location` headers that point at a backend's address to the
    /// host the client asked for.
    pub rewrite_location: bool,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For`/`Forwarded` (and PROXY protocol) are
    /// believed for the client's address. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Which header names the client behind a trusted proxy: `x-forwarded-for` or `forwarded`.
    pub client_ip_header: ClientIpHeader,
    /// Collapse `//` in request paths (dot segments are always resolved).
    pub merge_slashes: bool,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            hide_headers: [
                "server",
                "x-powered-by",
                "x-aspnet-version",
                "x-aspnetmvc-version",
                "x-runtime",
                "x-backend*",
                "x-upstream*",
                "x-served-by",
                "x-generator",
            ]
            .map(str::to_owned)
            .to_vec(),
            replace_error_pages: false,
            rewrite_location: true,
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            merge_slashes: false,
        }
    }
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: the right-most address not in `trusted_proxies`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=...`, read the same way.
    Forwarded,
}

/// `basic_auth = { ... }` on a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSettings {
    /// Realm shown by browsers.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// htpasswd file with bcrypt (`$2y$`) or argon2 (`$argon2id$`) hashes; re-read on reload.
    pub htpasswd: String,
}

fn default_realm() -> String {
    "restricted".to_owned()
}

/// `rate_limit = { ... }` on a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained rate per key: `"100/s"`, `"600/m"`, `"10000/h"`.
    pub rate: String,
    /// Requests a key may send at once above the rate (default: one second's worth, at least 1).
    pub burst: Option<u32>,
    /// What a key is: `client_ip`, `route`, `header:NAME`, or a list combining them.
    #[serde(default = "default_rate_key")]
    pub key: super::OneOrMany,
    /// Most keys remembered; the least recently seen are forgotten first.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_rate_key() -> super::OneOrMany {
    super::OneOrMany(vec!["client_ip".to_owned()])
}

fn default_max_keys() -> usize {
    100_000
}
