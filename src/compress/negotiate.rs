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
        // A coding listed more than once gets its highest weight, unless one of them is 0: a
        // coding the client refuses anywhere in the list is refused.
        let find = |names: &[&str]| {
            let mut weights = self
                .entries
                .iter()
                .filter(|(c, _)| names.contains(&c.as_str()))
                .map(|(_, q)| *q);
            let first = weights.next()?;
            Some(weights.fold(
                first,
                |q, next| if q == 0 || next == 0 { 0 } else { q.max(next) },
            ))
        };
        let names: &[&str] = if coding == "gzip" {
            &["gzip", "x-gzip"]
        } else {
            &[coding]
        };
        if let Some(q) = find(names) {
            return q;
        }
        if let Some(q) = find(&["*"]) {
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

    /// Regression: a coding listed twice took its highest weight, so `br, br;q=0` (or
    /// `gzip;q=0, x-gzip`) got `br` (`gzip`), a coding the client had refused with `q=0`.
    #[test]
    fn a_zero_weight_anywhere_refuses_a_coding_listed_twice() {
        assert_eq!(parse("br,br;q=0").choose(&ALL), None);
        assert_eq!(parse("br;q=0, br").choose(&ALL), None);
        assert_eq!(parse("gzip;q=0, x-gzip").choose(&ALL), None);
        assert_eq!(
            AcceptEncoding::parse(["gzip", "gzip;q=0"]).choose(&ALL),
            None
        );
        assert!(!parse("*;q=0, *").accepts_identity());
        assert_eq!(
            parse("br;q=0.5, br;q=0.8, gzip;q=0.7").choose(&ALL),
            Some(Encoding::Brotli)
        );
    }

    #[test]
    fn malformed_weights_make_an_entry_unusable() {
        assert_eq!(parse("br;q=2, gzip").choose(&ALL), Some(Encoding::Gzip));
        assert_eq!(parse("GZIP;Q=0.8").choose(&ALL), Some(Encoding::Gzip));
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// The weight of one list element, as the model reads it.
        #[derive(Debug, Clone)]
        enum Weight {
            /// No `q` parameter: 1.
            Absent,
            /// A valid qvalue, in thousandths, and how it is written.
            Valid(u16, String),
            /// A malformed qvalue: the entry is unusable (docs/compression.md).
            Invalid(&'static str),
        }

        #[derive(Debug, Clone)]
        struct Entry {
            /// Lower case.
            coding: &'static str,
            weight: Weight,
        }

        /// RFC 9110 §12.5.3 over structured entries: a listed coding (`x-gzip` is `gzip`) has
        /// its weight, 0 if any of its entries says 0, else the highest; an unlisted one the
        /// weight of `*`; failing both, identity is acceptable and nothing else is. Without
        /// the header (`None`) only identity is wanted.
        fn model_quality(entries: Option<&[Entry]>, coding: &str) -> u16 {
            let Some(entries) = entries else {
                return if coding == "identity" { 1000 } else { 0 };
            };
            let listed = |names: &[&str]| {
                let weights: Vec<u16> = entries
                    .iter()
                    .filter(|e| names.contains(&e.coding))
                    .map(|e| match &e.weight {
                        Weight::Absent => 1000,
                        Weight::Valid(q, _) => *q,
                        Weight::Invalid(_) => 0,
                    })
                    .collect();
                if weights.contains(&0) {
                    Some(0)
                } else {
                    weights.into_iter().max()
                }
            };
            let names: &[&str] = if coding == "gzip" {
                &["gzip", "x-gzip"]
            } else {
                &[coding]
            };
            listed(names)
                .or_else(|| listed(&["*"]))
                .unwrap_or(if coding == "identity" { 1000 } else { 0 })
        }

        fn model_choose(entries: Option<&[Entry]>, preference: &[Encoding]) -> Option<Encoding> {
            let mut best: Option<(Encoding, u16)> = None;
            for &encoding in preference {
                let q = model_quality(entries, encoding.token());
                if q > 0 && best.is_none_or(|(_, b)| q > b) {
                    best = Some((encoding, q));
                }
            }
            best.map(|(encoding, _)| encoding)
        }

        /// Every way RFC 9110 allows to write `q` (0 to 3 decimals, trailing zeros or not).
        fn valid_weight() -> impl Strategy<Value = Weight> {
            let q = prop_oneof![
                prop::sample::select(vec![0u16, 1, 500, 999, 1000]),
                0u16..=1000
            ];
            (q, 0usize..=3, any::<bool>()).prop_map(|(q, more, dot)| {
                let whole = if q == 1000 { "1" } else { "0" };
                let fraction = format!("{:03}", q % 1000);
                let decimals = fraction.trim_end_matches('0').len().max(more);
                let text = if decimals == 0 && !dot {
                    whole.to_owned()
                } else {
                    format!("{whole}.{}", &fraction[..decimals])
                };
                Weight::Valid(q, text)
            })
        }

        fn weight() -> impl Strategy<Value = Weight> {
            let invalid = prop::sample::select(vec![
                "1.5", "2", "0.1234", "1.001", "1.0000", "-0.5", ".5", "abc", "", "0.5x", "1e0",
                "01", "00.5", "+1", "0..5", "\"0.5\"", "0x1",
            ])
            .prop_map(Weight::Invalid);
            prop_oneof![2 => Just(Weight::Absent), 3 => valid_weight(), 1 => invalid]
        }

        fn entry() -> impl Strategy<Value = Entry> {
            let coding = prop::sample::select(vec![
                "gzip", "x-gzip", "br", "zstd", "identity", "*", "deflate", "compress", "gzip2",
                "x-br",
            ]);
            (coding, weight()).prop_map(|(coding, weight)| Entry { coding, weight })
        }

        /// `entries` as one or more field values, each choice of case, whitespace (OWS: spaces
        /// and tabs), empty list elements and field lines taken from `style`.
        fn render(entries: &[Entry], style: &[u64]) -> Vec<String> {
            const OWS: [&str; 4] = ["", " ", "\t", " \t "];
            let mut values = vec![String::new()];
            for (i, entry) in entries.iter().enumerate() {
                let bits = style.get(i % style.len().max(1)).copied().unwrap_or(0);
                let pick = |shift: u32| OWS[(bits >> shift) as usize & 3];
                let value = values.last_mut().expect("never empty");
                if !value.is_empty() || bits & (1 << 10) != 0 {
                    value.push_str(&format!("{},{}", pick(0), pick(2)));
                }
                if bits & (1 << 11) != 0 {
                    value.push_str(&format!(",{}", pick(4)));
                }
                let upper = bits >> 32;
                value.extend(entry.coding.chars().enumerate().map(|(i, c)| {
                    if upper & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                }));
                let q = if bits & (1 << 12) != 0 { "Q" } else { "q" };
                match &entry.weight {
                    Weight::Absent => {}
                    Weight::Valid(_, text) => {
                        value.push_str(&format!("{};{}{q}={text}", pick(6), pick(8)))
                    }
                    Weight::Invalid(text) => {
                        value.push_str(&format!("{};{}{q}={text}", pick(6), pick(8)))
                    }
                }
                if bits & (1 << 13) != 0 {
                    values.push(String::new());
                }
            }
            values
        }

        fn parse_all(values: &[String]) -> AcceptEncoding {
            AcceptEncoding::parse(values.iter().map(String::as_str))
        }

        fn preference() -> impl Strategy<Value = Vec<Encoding>> {
            (Just(ALL.to_vec()).prop_shuffle(), 0usize..=3).prop_map(|(mut all, n)| {
                all.truncate(n);
                all
            })
        }

        /// Text near the grammar: codings, separators, weights and stray bytes.
        fn header_text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                12 => prop::sample::select(vec![
                    "gzip", "GZIP", "x-gzip", "br", "zstd", "identity", "*", ",", ";", ";q=",
                    "; Q=", "q=", "=", "0", "1", ".", "000", "5", " ", "\t", "\u{a0}", "é",
                    "\r\n",
                ])
                .prop_map(str::to_owned),
                1 => vec(any::<u8>(), 0..6).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                1 => any::<String>(),
            ];
            vec(piece, 0..16).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Headers written every way the grammar allows get the model's weights, and the
            /// model's choice: never a coding the client gave `q=0`, never one it did not list
            /// (unless `*` covers it).
            #[test]
            fn negotiation_follows_the_rfc_model(
                entries in vec(entry(), 0..6),
                style in vec(any::<u64>(), 1..6),
                preference in preference(),
                absent in prop::bool::weighted(0.1),
            ) {
                let values = if absent { Vec::new() } else { render(&entries, &style) };
                let model = (!absent).then_some(&entries[..]);
                let parsed = parse_all(&values);
                for coding in ["gzip", "br", "zstd", "identity"] {
                    prop_assert_eq!(
                        parsed.quality(coding),
                        model_quality(model, coding),
                        "{} in {:?}", coding, values
                    );
                }
                prop_assert_eq!(
                    parsed.accepts_identity(),
                    model_quality(model, "identity") > 0,
                    "{:?}", values
                );
                prop_assert_eq!(
                    parsed.choose(&preference),
                    model_choose(model, &preference),
                    "{:?} with {:?}", values, preference
                );
            }

            /// Case, whitespace, empty elements, the order of the entries and how they are
            /// spread over field lines do not change the answer.
            #[test]
            fn the_answer_does_not_depend_on_how_the_list_is_written(
                (entries, shuffled) in vec(entry(), 0..6)
                    .prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
                one in vec(any::<u64>(), 1..6),
                two in vec(any::<u64>(), 1..6),
                preference in preference(),
            ) {
                let a = parse_all(&render(&entries, &one));
                let b = parse_all(&render(&shuffled, &two));
                prop_assert_eq!(a.choose(&preference), b.choose(&preference));
                for coding in ["gzip", "br", "zstd", "identity", "deflate"] {
                    prop_assert_eq!(a.quality(coding), b.quality(coding), "{}", coding);
                }
            }

            /// Any text at all: no panic, weights within 0..=1000, and the choice is an offered
            /// coding the client weighs above 0, the heaviest, first in server order on a tie.
            #[test]
            fn any_text_gets_a_sound_answer(
                values in vec(header_text(), 0..3),
                preference in preference(),
            ) {
                let parsed = parse_all(&values);
                let chosen = parsed.choose(&preference);
                let mut best: Option<(Encoding, u16)> = None;
                for &encoding in &preference {
                    let q = parsed.quality(encoding.token());
                    prop_assert!(q <= 1000);
                    prop_assert_eq!(parsed.accepts(encoding), q > 0);
                    if q > 0 && best.is_none_or(|(_, b)| q > b) {
                        best = Some((encoding, q));
                    }
                }
                prop_assert_eq!(chosen, best.map(|(e, _)| e), "{:?}", values);
                prop_assert!(parsed.quality("identity") <= 1000);
            }
        }
    }
}
