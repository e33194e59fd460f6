//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3): which content coding, if any, a client
//! takes. Pure functions; no I/O.

use std::fmt;
use std::str::FromStr;

/// A content coding Gatehouse can produce and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `br` (Brotli, RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
}

impl Encoding {
    /// The token used in `Content-Encoding` and `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding named by a `Content-Encoding` value, if it is one we support.
    pub fn from_token(token: &str) -> Option<Encoding> {
        let token = token.trim();
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else if token.eq_ignore_ascii_case("br") {
            Some(Encoding::Brotli)
        } else if token.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else {
            None
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::from_token(s)
            .ok_or_else(|| format!("unknown encoding {s:?}; use \"gzip\", \"br\" or \"zstd\""))
    }
}

/// A parsed `Accept-Encoding` header.
#[derive(Debug, Clone, Default)]
pub struct AcceptEncoding {
    /// (coding, q) pairs as listed, codings lower-cased; q in thousandths (0..=1000).
    entries: Vec<(String, u16)>,
    /// False when the request had no `Accept-Encoding` at all.
    present: bool,
}

impl AcceptEncoding {
    /// Parses every `Accept-Encoding` value of a request (`values` empty = header absent).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> AcceptEncoding {
        let mut parsed = AcceptEncoding::default();
        for value in values {
            parsed.present = true;
            for item in value.split(',') {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                if coding.is_empty() {
                    continue;
                }
                let mut q = 1000;
                for param in parts {
                    let param = param.trim();
                    if let Some(value) = param
                        .strip_prefix("q=")
                        .or_else(|| param.strip_prefix("Q="))
                    {
                        // A malformed weight makes the entry unusable rather than preferred.
                        q = parse_qvalue(value.trim()).unwrap_or(0);
                    }
                }
                parsed.entries.push((coding, q));
            }
        }
        parsed
    }

    /// The client's weight for `coding` (thousandths), following the RFC's rules for `*` and
    /// `identity`.
    pub fn quality(&self, coding: &str) -> u16 {
        if !self.present {
            // No header: any coding is acceptable, but sending one unasked is rude; callers treat
            // this as "identity preferred" (see `choose`).
            return if coding == "identity" { 1000 } else { 0 };
        }
        let find = |name: &str| {
            self.entries
                .iter()
                .filter(|(c, _)| c == name)
                .map(|(_, q)| *q)
                .max()
        };
        let aliased = if coding == "gzip" {
            find("x-gzip")
        } else {
            None
        };
        if let Some(q) = find(coding).max(aliased) {
            return q;
        }
        if let Some(q) = find("*") {
            return q;
        }
        if coding == "identity" { 1000 } else { 0 }
    }

    /// True when the client takes a response with `encoding` applied.
    pub fn accepts(&self, encoding: Encoding) -> bool {
        self.quality(encoding.token()) > 0
    }

    /// True when the client takes an unencoded response.
    pub fn accepts_identity(&self) -> bool {
        self.quality("identity") > 0
    }

    /// The coding to compress with: among `preference` (server order), the one with the highest
    /// client weight above zero; ties go to the server's order. `None` means send identity.
    pub fn choose(&self, preference: &[Encoding]) -> Option<Encoding> {
        let mut best: Option<(Encoding, u16)> = None;
        for &encoding in preference {
            let q = self.quality(encoding.token());
            if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((encoding, q));
            }
        }
        best.map(|(encoding, _)| encoding)
    }
}

/// Parses a qvalue (`0`, `0.5`, `1`, `1.000`) into thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    fn parse(value: &str) -> AcceptEncoding {
        AcceptEncoding::parse([value])
    }

    #[test]
    fn qvalues_parse_strictly() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("abc"), None);
    }

    #[test]
    fn highest_client_weight_wins_and_ties_follow_server_order() {
        assert_eq!(parse("gzip, br").choose(&ALL), Some(Encoding::Brotli));
        assert_eq!(
            parse("gzip;q=1, br;q=0.5").choose(&ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            parse("gzip, br, zstd").choose(&[Encoding::Gzip, Encoding::Brotli]),
            Some(Encoding::Gzip)
        );
        assert_eq!(parse("deflate").choose(&ALL), None);
        assert_eq!(parse("x-gzip").choose(&ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn zero_weight_excludes_a_coding() {
        assert_eq!(parse("gzip;q=0, br;q=0").choose(&ALL), None);
        assert_eq!(
            parse("*;q=0.5, br;q=0").choose(&[Encoding::Brotli, Encoding::Gzip]),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn star_covers_unlisted_codings_and_identity() {
        assert_eq!(parse("*").choose(&ALL), Some(Encoding::Zstd));
        assert!(!parse("*;q=0").accepts_identity());
        assert!(parse("*;q=0, identity").accepts_identity());
        assert!(!parse("gzip, identity;q=0").accepts_identity());
        assert!(
            parse("gzip").accepts_identity(),
            "identity is acceptable unless excluded"
        );
    }

    #[test]
    fn no_header_means_identity_and_an_empty_header_means_identity_only() {
        let absent = AcceptEncoding::parse(std::iter::empty());
        assert_eq!(absent.choose(&ALL), None);
        assert!(absent.accepts_identity());
        let empty = parse("");
        assert_eq!(empty.choose(&ALL), None);
        assert!(empty.accepts_identity());
        assert!(!empty.accepts(Encoding::Gzip));
    }

    #[test]
    fn malformed_weights_make_an_entry_unusable() {
        assert_eq!(parse("br;q=2, gzip").choose(&ALL), Some(Encoding::Gzip));
        assert_eq!(parse("GZIP;Q=0.8").choose(&ALL), Some(Encoding::Gzip));
    }
}
