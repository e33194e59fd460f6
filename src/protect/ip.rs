//! Client addresses: IP lists (`allow`/`deny` on routes and listeners, `trusted_proxies`) and
//! the client's address as seen through trusted proxies.
//!
//! An [`IpList`] is compiled once per configuration generation into sorted, merged address
//! ranges, so [`IpList::contains`] is a binary search whatever the list's length: a deny list of
//! a hundred thousand networks read from a file costs the same few comparisons per request as a
//! list of one. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`) are the IPv4 address they map,
//! both in lists and in lookups, so a dual-stack socket cannot slip an IPv4 client past an IPv4
//! entry.
//!
//! [`TrustedProxies::client_ip`] reads `X-Forwarded-For` or RFC 7239 `Forwarded` only when the
//! TCP peer is itself a trusted proxy, and walks them from the right: each trusted proxy appends
//! the address it received the request from, so the right-most address that is not a trusted
//! proxy is the first one no trusted party can vouch for — the client. Entries further left were
//! written by the client and are never believed. Anything malformed ends the walk at the last
//! address that was believed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::{GetAll, HeaderName, HeaderValue};

use crate::config::{ClientIpHeader, SecuritySettings};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// What an entry may look like, for error messages.
const ENTRY_FORMS: &str = "expected an address (192.0.2.7, ::1), a CIDR (10.0.0.0/8, \
     2001:db8::/32) or \"file:PATH\"";

/// A set of IP addresses: the union of addresses and CIDR networks, IPv4 and IPv6.
///
/// Lookups are a binary search over merged ranges. IPv4-mapped IPv6 addresses and networks are
/// treated as the IPv4 ones they map. An empty list contains nothing (an empty `allow` admits
/// no one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    /// Inclusive IPv4 ranges, sorted and merged (no two overlap or touch).
    v4: Vec<(u32, u32)>,
    /// Inclusive IPv6 ranges (never in `::ffff:0:0/96`), sorted and merged.
    v6: Vec<(u128, u128)>,
}

/// One parsed entry: an inclusive range in one address family.
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

impl IpList {
    /// Compiles list entries: addresses (`192.0.2.7`, `::1`), CIDRs (`10.0.0.0/8`,
    /// `2001:db8::/32`), or `"file:PATH"` naming a file with one such entry per line, where `#`
    /// starts a comment and blank lines are ignored.
    ///
    /// A CIDR with bits set past its prefix (`10.0.0.1/8`) is refused rather than silently
    /// widened: it is usually a typo for a single address. Errors name the entry at fault, and
    /// for files the file and line.
    pub fn parse_entries<I, S>(entries: I) -> Result<IpList, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut add = |range| match range {
            Range::V4(a, b) => v4.push((a, b)),
            Range::V6(a, b) => v6.push((a, b)),
        };
        for entry in entries {
            let entry = entry.as_ref();
            match entry.trim().strip_prefix("file:") {
                Some(path) => {
                    for range in read_list_file(entry, path.trim())? {
                        add(range);
                    }
                }
                None => add(parse_entry(entry.trim()).map_err(|why| format!("{entry:?}: {why}"))?),
            }
        }
        Ok(IpList {
            v4: merge(v4),
            v6: merge(v6),
        })
    }

    /// True if `ip` is in the list. An IPv4-mapped IPv6 address is looked up as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }

    /// True when no address is in the list.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Compiles a list: the same as [`IpList::parse_entries`].
pub fn parse_entries<I, S>(entries: I) -> Result<IpList, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    IpList::parse_entries(entries)
}

/// Reads a `file:` list; `entry` is the entry as written, for messages.
fn read_list_file(entry: &str, path: &str) -> Result<Vec<Range>, String> {
    if path.is_empty() {
        return Err(format!("{entry:?}: \"file:\" needs a path"));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{entry:?}: cannot read {path}: {e}"))?;
    let mut ranges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let at = || format!("{path}:{}", index + 1);
        if content.starts_with("file:") {
            return Err(format!(
                "{}: {content:?}: a list file cannot name another",
                at()
            ));
        }
        ranges.push(parse_entry(content).map_err(|why| format!("{}: {content:?}: {why}", at()))?);
    }
    Ok(ranges)
}

/// One address or CIDR as a range; IPv4-mapped IPv6 becomes IPv4.
fn parse_entry(text: &str) -> Result<Range, String> {
    if text.contains('/') {
        let net: ipnet::IpNet = text.parse().map_err(|_| ENTRY_FORMS.to_owned())?;
        if net.addr() != net.network() {
            return Err(format!(
                "has bits set past the /{} prefix: write {}/{} for the network, or the address \
                 alone",
                net.prefix_len(),
                net.network(),
                net.prefix_len()
            ));
        }
        return Ok(match net {
            ipnet::IpNet::V4(n) => Range::V4(n.network().into(), n.broadcast().into()),
            ipnet::IpNet::V6(n) => {
                let (start, end) = (u128::from(n.network()), u128::from(n.broadcast()));
                match (mapped_v4(start), n.prefix_len() >= 96) {
                    (Some(first), true) => Range::V4(first, end as u32),
                    _ => Range::V6(start, end),
                }
            }
        });
    }
    let ip: IpAddr = text.parse().map_err(|_| ENTRY_FORMS.to_owned())?;
    Ok(match ip.to_canonical() {
        IpAddr::V4(v4) => Range::V4(v4.into(), v4.into()),
        IpAddr::V6(v6) => Range::V6(v6.into(), v6.into()),
    })
}

/// The IPv4 address `v6` maps, if it is in `::ffff:0:0/96`.
fn mapped_v4(v6: u128) -> Option<u32> {
    (v6 >> 32 == 0xffff).then_some(v6 as u32)
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T: Ord + Copy + Bounded>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == T::MAX || start <= last.1.next() => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => merged.push((start, end)),
        }
    }
    merged.shrink_to_fit();
    merged
}

/// True if `x` is in one of the sorted, disjoint inclusive `ranges`.
fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(start, _)| start <= x);
    after > 0 && ranges[after - 1].1 >= x
}

/// The integer types ranges are made of.
trait Bounded {
    const MAX: Self;
    /// `self + 1`; only called below `MAX`.
    fn next(self) -> Self;
}

impl Bounded for u32 {
    const MAX: Self = u32::MAX;
    fn next(self) -> Self {
        self.saturating_add(1)
    }
}

impl Bounded for u128 {
    const MAX: Self = u128::MAX;
    fn next(self) -> Self {
        self.saturating_add(1)
    }
}

/// The peers whose forwarding headers are believed (`[security] trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    list: IpList,
}

/// What one hop of a forwarding header says.
enum Hop {
    /// A client address.
    Address(IpAddr),
    /// `unknown`, an obfuscated identifier, no `for=` or something malformed: nothing further
    /// left can be attributed, so the walk ends.
    Stop,
}

impl TrustedProxies {
    /// Compiles `trusted_proxies` entries (see [`IpList::parse_entries`]).
    pub fn parse_entries<I, S>(entries: I) -> Result<TrustedProxies, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(TrustedProxies {
            list: IpList::parse_entries(entries)?,
        })
    }

    /// Compiles `[security] trusted_proxies`.
    pub fn from_settings(settings: &SecuritySettings) -> Result<TrustedProxies, String> {
        Self::parse_entries(settings.trusted_proxies.iter().map(|e| e.get_ref()))
            .map_err(|e| format!("security.trusted_proxies: {e}"))
    }

    /// True when no peer is trusted: every client is its TCP peer.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// True if `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.list.contains(ip)
    }

    /// The client's address: the TCP `peer` unless it is a trusted proxy, in which case the
    /// right-most address in `header` that is not a trusted proxy (the left-most one when all
    /// are trusted). A malformed, `unknown` or obfuscated hop ends the walk at the last address
    /// believed. IPv4-mapped addresses are returned as IPv4.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap, header: ClientIpHeader) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.list.contains(peer) {
            return peer;
        }
        match header {
            ClientIpHeader::XForwardedFor => {
                self.walk(headers.get_all(&X_FORWARDED_FOR), peer, x_forwarded_for_hop)
            }
            ClientIpHeader::Forwarded => {
                self.walk(headers.get_all(&FORWARDED), peer, forwarded_hop)
            }
        }
    }

    /// Walks the comma-separated hops of every line of a header from the right.
    fn walk(&self, lines: GetAll<'_, HeaderValue>, peer: IpAddr, hop: fn(&str) -> Hop) -> IpAddr {
        let mut believed = peer;
        for line in lines.iter().rev() {
            // Read the line element by element even when some of it is not ASCII: the client
            // writes the left of the line a trusted proxy appends to, and obs-text there must
            // not make the whole line, the address the proxy appended included, unreadable.
            // An element that is not ASCII is malformed and ends the walk when reached.
            let text = String::from_utf8_lossy(line.as_bytes());
            for element in text.rsplit(',') {
                let element = element.trim_matches([' ', '\t']);
                // Empty list elements are allowed by the list syntax (RFC 9110 §5.6.1).
                if element.is_empty() {
                    continue;
                }
                match hop(element) {
                    Hop::Address(ip) => {
                        believed = ip.to_canonical();
                        if !self.list.contains(believed) {
                            return believed;
                        }
                    }
                    Hop::Stop => return believed,
                }
            }
        }
        believed
    }
}

/// One `X-Forwarded-For` element: an address, optionally bracketed (IPv6) and with a port.
fn x_forwarded_for_hop(element: &str) -> Hop {
    node_address(element).map_or(Hop::Stop, Hop::Address)
}

/// One RFC 7239 `Forwarded` element: its `for=` node.
///
/// Elements are split at every comma and pairs at every semicolon, quoted or not: no address
/// form contains either, so a quoted value that does is malformed here. That keeps a client's
/// unbalanced quote on the left from swallowing the elements trusted proxies appended after it.
fn forwarded_hop(element: &str) -> Hop {
    let mut node = None;
    for pair in element.split(';') {
        let pair = pair.trim_matches([' ', '\t']);
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Hop::Stop;
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Hop::Stop;
        }
        let Some(value) = pair_value(value) else {
            return Hop::Stop;
        };
        if name.eq_ignore_ascii_case("for") {
            // A parameter must not occur twice in one element (RFC 7239 §4).
            if node.is_some() {
                return Hop::Stop;
            }
            node = Some(value);
        }
    }
    let Some(node) = node else {
        return Hop::Stop;
    };
    if node.eq_ignore_ascii_case("unknown") || node.starts_with('_') {
        return Hop::Stop;
    }
    node_address(&node).map_or(Hop::Stop, Hop::Address)
}

/// A pair's value: a token, or a quoted-string with its escapes undone. Unquoted values that are
/// not tokens (`for=[2001:db8::1]`) are taken as written; the address check that follows is
/// strict either way.
fn pair_value(value: &str) -> Option<String> {
    let Some(quoted) = value.strip_prefix('"') else {
        let plain = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        return plain.then(|| value.to_owned());
    };
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return chars.as_str().is_empty().then_some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    // No closing quote.
    None
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An address with an optional port: `192.0.2.7`, `192.0.2.7:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080` (a port may also be an RFC 7239 obfuscated `_port`).
fn node_address(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return Some(IpAddr::V6(ip));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = text.split_once(':')?;
    let ip: Ipv4Addr = host.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// A port number, or an obfuscated port (`_` followed by letters, digits, `.`, `_`, `-`).
fn is_port(text: &str) -> bool {
    match text.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> IpList {
        IpList::parse_entries(entries).expect("valid list")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn ipv4_cidrs_and_addresses() {
        let l = list(&["10.0.0.0/8", "192.0.2.7", "198.51.100.0/24"]);
        assert!(l.contains(ip("10.0.0.0")));
        assert!(l.contains(ip("10.255.255.255")));
        assert!(!l.contains(ip("11.0.0.0")));
        assert!(!l.contains(ip("9.255.255.255")));
        assert!(l.contains(ip("192.0.2.7")));
        assert!(!l.contains(ip("192.0.2.8")));
        assert!(l.contains(ip("198.51.100.200")));
        assert!(!l.contains(ip("::1")));
    }

    #[test]
    fn ipv6_cidrs_and_addresses() {
        let l = list(&["::1", "2001:db8::/32"]);
        assert!(l.contains(ip("::1")));
        assert!(l.contains(ip("2001:db8:ffff::1")));
        assert!(!l.contains(ip("2001:db9::1")));
        assert!(!l.contains(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_addresses_match_ipv4_entries_both_ways() {
        let l = list(&["1.2.3.0/24"]);
        assert!(l.contains(ip("::ffff:1.2.3.4")));
        assert!(!l.contains(ip("::ffff:1.2.4.4")));
        let mapped = list(&["::ffff:10.0.0.0/104", "::ffff:192.0.2.7"]);
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(mapped.contains(ip("192.0.2.7")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        // A wide IPv6 network is IPv6 only.
        assert!(!list(&["::/0"]).contains(ip("127.0.0.1")));
        assert!(list(&["::/0"]).contains(ip("2001:db8::1")));
        assert!(list(&["0.0.0.0/0"]).contains(ip("::ffff:203.0.113.9")));
    }

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let l = list(&[
            "10.0.0.0/9",
            "10.128.0.0/9",
            "10.1.0.0/16",
            "255.255.255.255",
            "0.0.0.0/0",
        ]);
        assert_eq!(l.v4, [(0, u32::MAX)]);
        let l = list(&["10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24"]);
        assert_eq!(l.v4.len(), 2);
        assert!(l.contains(ip("10.0.1.255")));
        assert!(!l.contains(ip("10.0.2.0")));
        assert!(list(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"]).contains(ip("::2")));
        assert!(IpList::parse_entries::<_, &str>([]).unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, words) in [
            (
                "10.0.0.1/8",
                "bits set past the /8 prefix: write 10.0.0.0/8",
            ),
            ("10.0.0.0/33", "expected an address"),
            ("example.com", "expected an address"),
            ("", "expected an address"),
            ("file:", "needs a path"),
        ] {
            let error = IpList::parse_entries([entry]).unwrap_err();
            assert!(error.contains(&format!("{entry:?}")), "{error}");
            assert!(error.contains(words), "{error}");
        }
        let error = IpList::parse_entries(["file:/nonexistent/gatehouse.txt"]).unwrap_err();
        assert!(
            error.contains("cannot read /nonexistent/gatehouse.txt"),
            "{error}"
        );
    }

    #[test]
    fn list_files_have_comments_and_report_bad_lines() {
        let dir = std::env::temp_dir().join(format!("gatehouse-ip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(
            &good,
            "# office\n10.0.0.0/8   # the VPN\n\n  192.0.2.7\r\n2001:db8::/32\n",
        )
        .unwrap();
        let l = IpList::parse_entries([format!("file:{}", good.display()), "::1".to_owned()])
            .expect("valid file");
        for yes in ["10.9.9.9", "192.0.2.7", "2001:db8::5", "::1"] {
            assert!(l.contains(ip(yes)), "{yes}");
        }
        assert!(!l.contains(ip("192.0.2.8")));

        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "10.0.0.0/8\n# fine\nnot-an-ip # oops\n").unwrap();
        let error = IpList::parse_entries([format!("file:{}", bad.display())]).unwrap_err();
        assert!(
            error.starts_with(&format!("{}:3: \"not-an-ip\"", bad.display())),
            "{error}"
        );
        let nested = dir.join("nested.txt");
        std::fs::write(&nested, "file:/etc/passwd\n").unwrap();
        let error = IpList::parse_entries([format!("file:{}", nested.display())]).unwrap_err();
        assert!(error.contains("cannot name another"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse_entries(["10.0.0.0/8", "2001:db8::/32"]).unwrap()
    }

    fn xff(peer: &str, values: &[&str]) -> IpAddr {
        proxies().client_ip(
            ip(peer),
            &headers("x-forwarded-for", values),
            ClientIpHeader::XForwardedFor,
        )
    }

    fn fwd(peer: &str, values: &[&str]) -> IpAddr {
        proxies().client_ip(
            ip(peer),
            &headers("forwarded", values),
            ClientIpHeader::Forwarded,
        )
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_address() {
        // The client claimed 1.1.1.1; the load balancer 10.0.0.2 appended the real address.
        assert_eq!(
            xff("10.0.0.1", &["1.1.1.1, 203.0.113.9, 10.0.0.2"]),
            ip("203.0.113.9")
        );
        // Several lines are one list, in order.
        assert_eq!(
            xff(
                "10.0.0.1",
                &["1.1.1.1", "203.0.113.9", "10.0.0.2, 10.0.0.3"]
            ),
            ip("203.0.113.9")
        );
        // All trusted: the left-most.
        assert_eq!(xff("10.0.0.1", &["10.0.0.7, 10.0.0.2"]), ip("10.0.0.7"));
        // No header: the peer.
        assert_eq!(xff("10.0.0.1", &[]), ip("10.0.0.1"));
        // Ports, brackets, mapped addresses and empty elements.
        assert_eq!(xff("10.0.0.1", &["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(
            xff("10.0.0.1", &["[2001:db9::1]:443, , 10.0.0.2"]),
            ip("2001:db9::1")
        );
        assert_eq!(xff("10.0.0.1", &["2001:db9::1"]), ip("2001:db9::1"));
        assert_eq!(
            xff("10.0.0.1", &["::ffff:198.51.100.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            xff("::ffff:10.0.0.1", &["198.51.100.1"]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn garbage_in_x_forwarded_for_stops_at_the_last_believed_address() {
        assert_eq!(
            xff("10.0.0.1", &["203.0.113.9, garbage, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(xff("10.0.0.1", &["unknown"]), ip("10.0.0.1"));
        assert_eq!(xff("10.0.0.1", &["203.0.113.9:99999"]), ip("10.0.0.1"));
        assert_eq!(xff("10.0.0.1", &["fe80::1%eth0"]), ip("10.0.0.1"));
        // Garbage left of the client is never reached.
        assert_eq!(
            xff("10.0.0.1", &["<script>, 203.0.113.9"]),
            ip("203.0.113.9")
        );
        // A line that is not text stops the walk too.
        let mut map = headers("x-forwarded-for", &["203.0.113.9"]);
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(
            proxies().client_ip(ip("10.0.0.1"), &map, ClientIpHeader::XForwardedFor),
            ip("10.0.0.1")
        );
    }

    /// Regression (found by `what_a_client_writes_left_of_its_address_changes_nothing`): a line
    /// that was not all ASCII stopped the walk before its first element, so a client sending
    /// `X-Forwarded-For: é` through a proxy that appends `, <client>` to it was taken for the
    /// trusted proxy itself, with that proxy's place in allow lists and rate limits.
    #[test]
    fn obs_text_left_of_the_client_does_not_hide_it() {
        for (header, name, client_line, proxy_line) in [
            (
                ClientIpHeader::XForwardedFor,
                "x-forwarded-for",
                &b"\xc3\xa9, 203.0.113.9"[..],
                "10.0.0.2",
            ),
            (
                ClientIpHeader::Forwarded,
                "forwarded",
                b"for=\xff, for=203.0.113.9",
                "for=10.0.0.2",
            ),
        ] {
            let mut map = HeaderMap::new();
            map.append(name, HeaderValue::from_bytes(client_line).unwrap());
            map.append(name, HeaderValue::from_static(proxy_line));
            assert_eq!(
                proxies().client_ip(ip("10.0.0.1"), &map, header),
                ip("203.0.113.9"),
                "{header:?}"
            );
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        assert_eq!(
            xff("203.0.113.50", &["10.0.0.2, 1.2.3.4"]),
            ip("203.0.113.50")
        );
        assert_eq!(fwd("203.0.113.50", &["for=1.2.3.4"]), ip("203.0.113.50"));
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert_eq!(
            none.client_ip(
                ip("127.0.0.1"),
                &headers("x-forwarded-for", &["1.2.3.4"]),
                ClientIpHeader::XForwardedFor
            ),
            ip("127.0.0.1")
        );
        // Only the configured header is read.
        assert_eq!(
            proxies().client_ip(
                ip("10.0.0.1"),
                &headers("forwarded", &["for=1.2.3.4"]),
                ClientIpHeader::XForwardedFor
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_is_read_with_quotes_brackets_and_ports() {
        assert_eq!(
            fwd(
                "10.0.0.1",
                &["for=1.1.1.1, for=203.0.113.9;proto=https, for=10.0.0.2"]
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            fwd("10.0.0.1", &["For=\"[2001:db9::7]:8443\";by=10.0.0.1"]),
            ip("2001:db9::7")
        );
        assert_eq!(
            fwd("10.0.0.1", &["for=\"[2001:db9::7]\""]),
            ip("2001:db9::7")
        );
        assert_eq!(
            fwd("10.0.0.1", &["for=\"198.51.100.4:_p1\""]),
            ip("198.51.100.4")
        );
        assert_eq!(
            fwd(
                "10.0.0.1",
                &["proto=http;for=\"198.51.100.4\";host=a.example"]
            ),
            ip("198.51.100.4")
        );
        assert_eq!(
            fwd("10.0.0.1", &["for=\"198.51\\.100.4\""]),
            ip("198.51.100.4")
        );
        assert_eq!(
            fwd("10.0.0.1", &["for=203.0.113.9", "for=10.0.0.2"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_unknown_obfuscated_and_malformed_stop_the_walk() {
        assert_eq!(
            fwd("10.0.0.1", &["for=203.0.113.9, for=unknown, for=10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(fwd("10.0.0.1", &["for=_hidden"]), ip("10.0.0.1"));
        assert_eq!(fwd("10.0.0.1", &["proto=https"]), ip("10.0.0.1"));
        assert_eq!(
            fwd("10.0.0.1", &["for=1.2.3.4;for=5.6.7.8"]),
            ip("10.0.0.1")
        );
        assert_eq!(fwd("10.0.0.1", &["for=\"1.2.3.4"]), ip("10.0.0.1"));
        assert_eq!(fwd("10.0.0.1", &["for=\"1.2.3.4\"x"]), ip("10.0.0.1"));
        assert_eq!(fwd("10.0.0.1", &["for=2001:db9::1"]), ip("2001:db9::1"));
        assert_eq!(fwd("10.0.0.1", &["for=\"[2001:db9::1\""]), ip("10.0.0.1"));
        assert_eq!(fwd("10.0.0.1", &["for"]), ip("10.0.0.1"));
        // A client's unbalanced quote on the left does not hide the hop appended after it.
        assert_eq!(
            fwd("10.0.0.1", &["for=\"x, for=203.0.113.9"]),
            ip("203.0.113.9")
        );
    }

    /// Random lists, addresses and forwarding headers against simple models of what the code
    /// above promises: list membership as masking, the client as a naive right-to-left walk,
    /// every allowed spelling of an address read back as that address, and an answer (never a
    /// panic) for any text at all.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// One list entry as the model sees it: a network address and its prefix length.
        #[derive(Debug, Clone, Copy)]
        enum Net {
            V4(u32, u8),
            V6(u128, u8),
        }

        fn mask32(prefix: u8) -> u32 {
            u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
        }

        fn mask128(prefix: u8) -> u128 {
            u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
        }

        /// `::ffff:0:0`, where IPv4-mapped addresses live.
        const MAPPED: u128 = 0xffff << 32;

        /// The model of [`IpList::contains`]: an address is in a network when its bits under the
        /// network's mask are the network's. An IPv4 address, mapped or not, is also in an IPv6
        /// network of /96 or longer inside `::ffff:0:0/96`; a wider IPv6 network holds no IPv4.
        fn model_contains(nets: &[Net], ip: IpAddr) -> bool {
            nets.iter().any(|&net| match (net, ip.to_canonical()) {
                (Net::V4(n, p), IpAddr::V4(a)) => u32::from(a) & mask32(p) == n,
                (Net::V6(n, p), IpAddr::V6(a)) => u128::from(a) & mask128(p) == n,
                (Net::V6(n, p), IpAddr::V4(a)) => {
                    p >= 96 && (MAPPED | u128::from(u32::from(a))) & mask128(p) == n
                }
                (Net::V4(..), IpAddr::V6(_)) => false,
            })
        }

        /// Addresses near a few bases, so that random networks overlap, nest and touch.
        fn near_v4() -> impl Strategy<Value = u32> {
            let bases = vec![0, 0x0a00_0000, 0x0a00_0100, 0xc000_0200, 0xffff_ff00];
            (prop::sample::select(bases), any::<u32>(), 0..=32u32)
                .prop_map(|(base, noise, bits)| base ^ noise.checked_shr(32 - bits).unwrap_or(0))
        }

        fn near_v6() -> impl Strategy<Value = u128> {
            let bases = vec![
                0,
                1,
                0x2001_0db8 << 96,
                MAPPED | 0x0a00_0000,
                u128::MAX ^ 0xff,
            ];
            (prop::sample::select(bases), any::<u128>(), 0..=128u32)
                .prop_map(|(base, noise, bits)| base ^ noise.checked_shr(128 - bits).unwrap_or(0))
        }

        fn near_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                near_v4().prop_map(|a| IpAddr::V4(a.into())),
                near_v6().prop_map(|a| IpAddr::V6(a.into())),
                near_v4().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
            ]
        }

        fn net() -> impl Strategy<Value = Net> {
            prop_oneof![
                (near_v4(), 0..=32u8).prop_map(|(a, p)| Net::V4(a & mask32(p), p)),
                (near_v6(), 0..=128u8).prop_map(|(a, p)| Net::V6(a & mask128(p), p)),
                // IPv4 networks written as mapped IPv6.
                (near_v4(), 96..=128u8)
                    .prop_map(|(a, p)| Net::V6((MAPPED | u128::from(a)) & mask128(p), p)),
            ]
        }

        /// An entry as an operator writes it: `NET/PREFIX`, or a bare address for a host.
        fn entry_text(net: Net, bare: bool) -> String {
            match net {
                Net::V4(n, 32) if bare => Ipv4Addr::from(n).to_string(),
                Net::V6(n, 128) if bare => format!(" {} ", Ipv6Addr::from(n)),
                Net::V4(n, p) => format!("{}/{p}", Ipv4Addr::from(n)),
                Net::V6(n, p) => format!("{}/{p}", Ipv6Addr::from(n)),
            }
        }

        /// The addresses at and just outside a network's ends, where a merge goes wrong if it
        /// does.
        fn edges(net: Net) -> Vec<IpAddr> {
            match net {
                Net::V4(n, p) => {
                    let last = n | !mask32(p);
                    [n.wrapping_sub(1), n, last, last.wrapping_add(1)]
                        .map(|a| IpAddr::V4(a.into()))
                        .to_vec()
                }
                Net::V6(n, p) => {
                    let last = n | !mask128(p);
                    [n.wrapping_sub(1), n, last, last.wrapping_add(1)]
                        .map(|a| IpAddr::V6(a.into()))
                        .to_vec()
                }
            }
        }

        /// Sorted, each range non-empty, and no two overlapping or touching.
        fn assert_apart<T: Ord + Copy + Bounded + std::fmt::Debug>(
            ranges: &[(T, T)],
        ) -> Result<(), TestCaseError> {
            for &(start, end) in ranges {
                prop_assert!(start <= end, "{:?}", ranges);
            }
            for pair in ranges.windows(2) {
                if let [(_, end), (next, _)] = pair {
                    prop_assert!(*end < T::MAX && *next > end.next(), "{:?}", ranges);
                }
            }
            Ok(())
        }

        // --- the client address ---------------------------------------------------------------

        /// The trusted proxies of [`proxies`], as a model.
        fn trusted_model(ip: IpAddr) -> bool {
            match ip.to_canonical() {
                IpAddr::V4(a) => a.octets()[0] == 10,
                IpAddr::V6(a) => a.segments()[..2] == [0x2001, 0x0db8],
            }
        }

        fn trusted_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<[u8; 3]>().prop_map(|[b, c, d]| IpAddr::from([10, b, c, d])),
                any::<u128>().prop_map(|low| {
                    IpAddr::V6(Ipv6Addr::from((0x2001_0db8 << 96) | (low >> 32)))
                }),
                any::<[u8; 3]>()
                    .prop_map(|[b, c, d]| IpAddr::V6(Ipv4Addr::new(10, b, c, d).to_ipv6_mapped())),
            ]
        }

        fn any_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
                any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
                any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
            ]
        }

        /// A port as it may follow an address: a number (leading zeros allowed) or an RFC 7239
        /// obfuscated port.
        fn port() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u16>().prop_map(|p| p.to_string()),
                (any::<u16>(), 1..4usize)
                    .prop_map(|(p, zeros)| format!("{}{p}", "0".repeat(zeros))),
                "_[A-Za-z0-9._-]{1,8}",
            ]
        }

        /// How an address is written in a hop: `style` picks compressed or full upper-case IPv6,
        /// with or without brackets; a port is added where the form allows one.
        #[derive(Debug, Clone)]
        struct Spelling {
            style: u8,
            port: Option<String>,
        }

        fn spelling() -> impl Strategy<Value = Spelling> {
            (0..3u8, proptest::option::of(port()))
                .prop_map(|(style, port)| Spelling { style, port })
        }

        /// The node (`192.0.2.7:80`, `[2001:db8::1]:80`, `2001:DB8:0:0:0:0:0:1`) of `ip`.
        fn node(ip: IpAddr, spelling: &Spelling) -> String {
            let v6 = |a: Ipv6Addr| match spelling.style {
                0 => a.to_string(),
                _ => a.segments().map(|s| format!("{s:X}")).join(":"),
            };
            match (ip, &spelling.port) {
                (IpAddr::V4(a), None) => a.to_string(),
                (IpAddr::V4(a), Some(port)) => format!("{a}:{port}"),
                // Without brackets an IPv6 address can carry no port.
                (IpAddr::V6(a), None) if spelling.style == 2 => v6(a),
                (IpAddr::V6(a), None) => format!("[{}]", v6(a)),
                (IpAddr::V6(a), Some(port)) => format!("[{}]:{port}", v6(a)),
            }
        }

        /// A `Forwarded` element for `node`: `for=` in any case, among other pairs, the value a
        /// token where it can be and otherwise a quoted-string, some of its characters escaped.
        fn forwarded_element(node: &str, shape: &ElementShape) -> String {
            let token = node.bytes().all(is_tchar);
            let value = if token && !shape.quoted {
                node.to_owned()
            } else {
                let mut quoted = String::from("\"");
                for (c, escape) in node.chars().zip(shape.escapes.iter().cycle()) {
                    if *escape {
                        quoted.push('\\');
                    }
                    quoted.push(c);
                }
                quoted.push('"');
                quoted
            };
            let name = ["for", "For", "FOR"][usize::from(shape.name_case % 3)];
            let mut pairs: Vec<String> = shape.before.iter().map(|p| (*p).to_owned()).collect();
            pairs.push(format!("{name}={value}"));
            pairs.extend(shape.after.iter().map(|p| (*p).to_owned()));
            pairs.join(";")
        }

        #[derive(Debug, Clone)]
        struct ElementShape {
            quoted: bool,
            escapes: Vec<bool>,
            name_case: u8,
            before: Vec<&'static str>,
            after: Vec<&'static str>,
        }

        fn element_shape() -> impl Strategy<Value = ElementShape> {
            let other = prop::sample::select(vec![
                "proto=https",
                "proto=http",
                "host=a.example",
                "host=\"a.example:8443\"",
                "by=\"[2001:db8::9]:80\"",
                "by=_hidden",
                "by=10.0.0.1",
            ]);
            (
                any::<bool>(),
                vec(prop::bool::weighted(0.2), 1..8),
                any::<u8>(),
                vec(other.clone(), 0..3),
                vec(other, 0..3),
            )
                .prop_map(|(quoted, escapes, name_case, before, after)| ElementShape {
                    quoted,
                    escapes,
                    name_case,
                    before,
                    after,
                })
        }

        /// One hop of a chain, as the model sees it.
        #[derive(Debug, Clone)]
        enum ModelHop {
            Address(IpAddr, Spelling, ElementShape),
            /// Something no hop may be: the walk ends there. Holds an index into the garbage
            /// lists below.
            Garbage(usize),
            /// An empty list element (`a, , b`), which the list syntax allows.
            Empty,
        }

        const XFF_GARBAGE: [&str; 7] = [
            "unknown",
            "garbage",
            "192.0.2.7:99999",
            "192.0.2.7:99999999999",
            "[2001:db9::1",
            "fe80::1%eth0",
            "[2001:db9::1]x",
        ];

        const FORWARDED_GARBAGE: [&str; 8] = [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=192.0.2.7;for=192.0.2.8",
            "for=\"192.0.2.7",
            "for=[2001:db9::1]:99999",
            "for",
            ";;",
        ];

        fn hop() -> impl Strategy<Value = ModelHop> {
            prop_oneof![
                6 => (prop_oneof![trusted_ip(), any_ip()], spelling(), element_shape())
                    .prop_map(|(ip, spelling, shape)| ModelHop::Address(ip, spelling, shape)),
                1 => (0..XFF_GARBAGE.len().min(FORWARDED_GARBAGE.len())).prop_map(ModelHop::Garbage),
                1 => Just(ModelHop::Empty),
            ]
        }

        /// The model of [`TrustedProxies::client_ip`]: walk the hops from the right, believing
        /// each address while it is a trusted proxy's.
        fn model_client(peer: IpAddr, chain: &[ModelHop]) -> IpAddr {
            let mut believed = peer.to_canonical();
            if !trusted_model(believed) {
                return believed;
            }
            for hop in chain.iter().rev() {
                match hop {
                    ModelHop::Address(ip, ..) => {
                        believed = ip.to_canonical();
                        if !trusted_model(believed) {
                            return believed;
                        }
                    }
                    ModelHop::Garbage(_) => return believed,
                    ModelHop::Empty => {}
                }
            }
            believed
        }

        /// The header lines of a chain: a new line wherever `breaks` says, elements of a line
        /// joined by commas with optional whitespace.
        fn header_lines(
            chain: &[ModelHop],
            header: ClientIpHeader,
            breaks: &[bool],
            separators: &[u8],
        ) -> Vec<String> {
            let mut lines: Vec<String> = Vec::new();
            for (i, hop) in chain.iter().enumerate() {
                let element = match (hop, header) {
                    (ModelHop::Address(ip, spelling, _), ClientIpHeader::XForwardedFor) => {
                        node(*ip, spelling)
                    }
                    (ModelHop::Address(ip, spelling, shape), ClientIpHeader::Forwarded) => {
                        forwarded_element(&node(*ip, spelling), shape)
                    }
                    (ModelHop::Garbage(g), ClientIpHeader::XForwardedFor) => {
                        XFF_GARBAGE[*g].to_owned()
                    }
                    (ModelHop::Garbage(g), ClientIpHeader::Forwarded) => {
                        FORWARDED_GARBAGE[*g].to_owned()
                    }
                    (ModelHop::Empty, _) => String::new(),
                };
                let separator = [",", ", ", " , ", ",\t", "\t,  "]
                    [usize::from(separators.get(i).copied().unwrap_or(0) % 5)];
                match lines.last_mut() {
                    Some(line) if !breaks.get(i).copied().unwrap_or(false) => {
                        line.push_str(separator);
                        line.push_str(&element);
                    }
                    _ => lines.push(element),
                }
            }
            lines
        }

        fn header_map(header: ClientIpHeader, lines: &[Vec<u8>]) -> HeaderMap {
            let name = match header {
                ClientIpHeader::XForwardedFor => &X_FORWARDED_FOR,
                ClientIpHeader::Forwarded => &FORWARDED,
            };
            let mut map = HeaderMap::new();
            for line in lines {
                map.append(
                    name.clone(),
                    HeaderValue::from_bytes(line).expect("a field value"),
                );
            }
            map
        }

        fn which_header() -> impl Strategy<Value = ClientIpHeader> {
            prop_oneof![
                Just(ClientIpHeader::XForwardedFor),
                Just(ClientIpHeader::Forwarded)
            ]
        }

        /// A byte a field value may hold: visible ASCII, space, tab and obs-text.
        fn field_byte() -> impl Strategy<Value = u8> {
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 2 => 0x80u8..=0xff]
        }

        /// Text made of the pieces forwarding headers are made of, in any order.
        fn forwarding_noise() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop::sample::select(vec![
                ",",
                ";",
                "=",
                "\"",
                "\\",
                "[",
                "]",
                ":",
                " ",
                "\t",
                "for",
                "FOR",
                "by",
                "_x",
                "unknown",
                "192.0.2.7",
                "10.0.0.2",
                "2001:db8::1",
                "::ffff:",
                "99999999999",
                "65536",
                "é",
            ]);
            vec(piece, 0..24).prop_map(|pieces| pieces.concat().into_bytes())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn a_list_contains_what_masking_says(
                nets in vec(net(), 0..12),
                bare in any::<bool>(),
                probes in vec(near_ip(), 0..16),
            ) {
                let texts: Vec<String> = nets.iter().map(|&net| entry_text(net, bare)).collect();
                let list = IpList::parse_entries(&texts);
                prop_assert!(list.is_ok(), "{:?}: {:?}", texts, list);
                let list = list.unwrap_or_default();
                prop_assert_eq!(list.is_empty(), nets.is_empty());
                let edges = nets.iter().flat_map(|&net| edges(net));
                for ip in probes.iter().copied().chain(edges) {
                    prop_assert_eq!(
                        list.contains(ip),
                        model_contains(&nets, ip),
                        "{} in {:?}", ip, texts
                    );
                }
            }

            #[test]
            fn compiled_ranges_are_sorted_and_apart(nets in vec(net(), 0..16)) {
                let texts: Vec<String> = nets.iter().map(|&net| entry_text(net, false)).collect();
                let list = IpList::parse_entries(&texts).unwrap_or_default();
                assert_apart(&list.v4)?;
                assert_apart(&list.v6)?;
            }

            #[test]
            fn bits_past_the_prefix_are_refused_and_only_they(
                (text, stray_bits) in prop_oneof![
                    (near_v4(), 0..=32u8).prop_map(|(a, p)| {
                        (format!("{}/{p}", Ipv4Addr::from(a)), a & !mask32(p) != 0)
                    }),
                    (near_v6(), 0..=128u8).prop_map(|(a, p)| {
                        (format!("{}/{p}", Ipv6Addr::from(a)), a & !mask128(p) != 0)
                    }),
                ],
            ) {
                match IpList::parse_entries([&text]) {
                    Ok(_) => prop_assert!(!stray_bits, "{} accepted", text),
                    Err(error) => {
                        prop_assert!(stray_bits, "{}: {}", text, error);
                        prop_assert!(error.contains("bits set past"), "{}", error);
                    }
                }
            }

            #[test]
            fn any_entry_text_gets_an_answer(
                text in prop_oneof![
                    "[0-9a-fA-F.:/%\\[\\] x-]{0,48}",
                    "[0-9]{1,4}(\\.[0-9]{1,12}){0,5}(/[0-9]{1,12})?",
                    any::<String>(),
                ],
            ) {
                // `file:` would read the file system; a list file is not network input.
                prop_assume!(!text.trim().starts_with("file:"));
                if let Ok(list) = IpList::parse_entries([&text]) {
                    prop_assert!(!list.is_empty(), "{:?}", text);
                }
            }

            #[test]
            fn every_spelling_of_an_address_reads_back(
                ip in any_ip(),
                spelling in spelling(),
                shape in element_shape(),
            ) {
                let text = node(ip, &spelling);
                prop_assert_eq!(node_address(&text), Some(ip), "{}", text);
                prop_assert!(
                    matches!(x_forwarded_for_hop(&text), super::Hop::Address(read) if read == ip),
                    "{}", text
                );
                let element = forwarded_element(&text, &shape);
                prop_assert!(
                    matches!(forwarded_hop(&element), super::Hop::Address(read) if read == ip),
                    "{}", element
                );
            }

            #[test]
            fn the_client_is_the_right_most_untrusted_hop(
                peer in prop_oneof![3 => trusted_ip(), 1 => any_ip()],
                chain in vec(hop(), 0..10),
                header in which_header(),
                breaks in vec(prop::bool::weighted(0.3), 10),
                separators in vec(any::<u8>(), 10),
            ) {
                let lines = header_lines(&chain, header, &breaks, &separators);
                let bytes: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
                let map = header_map(header, &bytes);
                prop_assert_eq!(
                    proxies().client_ip(peer, &map, header),
                    model_client(peer, &chain),
                    "peer {} sent {:?}", peer, lines
                );
            }

            /// Everything left of the client's address was written by the client: whatever it
            /// is, on the same line or on lines of its own, the answer stays.
            #[test]
            fn what_a_client_writes_left_of_its_address_changes_nothing(
                peer in trusted_ip(),
                left in vec(hop(), 0..4),
                client in (
                    any_ip().prop_filter("an untrusted client", |ip| !trusted_model(*ip)),
                    spelling(),
                    element_shape(),
                ),
                proxies_hops in vec((trusted_ip(), spelling(), element_shape()), 0..4),
                header in which_header(),
                breaks in vec(prop::bool::weighted(0.3), 9),
                junk in prop_oneof![vec(field_byte(), 0..40), forwarding_noise()],
                own_line in any::<bool>(),
            ) {
                let address = |(ip, spelling, shape)| ModelHop::Address(ip, spelling, shape);
                let mut chain = left;
                chain.push(address(client.clone()));
                chain.extend(proxies_hops.into_iter().map(address));
                let lines = header_lines(&chain, header, &breaks, &[0; 9]);
                let mut bytes: Vec<Vec<u8>> =
                    lines.iter().map(|l| l.clone().into_bytes()).collect();
                prop_assert_eq!(
                    proxies().client_ip(peer, &header_map(header, &bytes), header),
                    client.0.to_canonical(),
                    "{:?}", lines
                );
                if own_line {
                    bytes.insert(0, junk.clone());
                } else if let Some(first) = bytes.first_mut() {
                    let mut line = junk.clone();
                    line.push(b',');
                    line.append(first);
                    *first = line;
                }
                prop_assert_eq!(
                    proxies().client_ip(peer, &header_map(header, &bytes), header),
                    client.0.to_canonical(),
                    "junk {:?} before {:?}", String::from_utf8_lossy(&junk), lines
                );
            }

            #[test]
            fn any_forwarding_header_gets_an_answer(
                peer in prop_oneof![trusted_ip(), any_ip()],
                header in which_header(),
                lines in vec(prop_oneof![vec(field_byte(), 0..64), forwarding_noise()], 0..4),
            ) {
                let client = proxies().client_ip(peer, &header_map(header, &lines), header);
                prop_assert_eq!(client, client.to_canonical(), "a mapped address is IPv4");
                if !trusted_model(peer) {
                    prop_assert_eq!(client, peer.to_canonical());
                }
            }
        }
    }
}
