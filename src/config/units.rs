//! Human-readable durations (`"30s"`, `"1m 30s"`) and byte sizes (`"10MiB"`) for the config file.
//!
//! Durations are parsed by `humantime`; sizes by hand, because no small, well-kept crate accepts both
//! the IEC (`KiB`) and SI (`kB`) suffixes without pulling in more than it is worth.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written as text in the config (`"250ms"`, `"30s"`, `"5m"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds a duration of `secs` seconds; for defaults.
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The duration as a limit: `None` for `0s`, which turns the check off.
    pub fn limit(self) -> Option<Duration> {
        Some(self.0).filter(|d| !d.is_zero())
    }
}

/// The longest duration a setting may have: beyond any sensible timeout or window, and short
/// enough that a deadline of now plus it never overflows the clock (which would panic where
/// the deadline is computed; humantime reads up to 584 billion years). A year is humantime's,
/// 365.25 days.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let too_long = || {
            format!("duration {s:?} is too long: at most 100 years (\"0s\" turns a timeout off)")
        };
        // humantime panics ("overflow in Duration::new") when parts of a second carry into the
        // most seconds it can count (`18446744073709551615s 1000ms`): text that could come near
        // that is refused before humantime reads it. It is far past the limit anyway.
        if most_nanos(s.trim()) >= u128::from(u64::MAX / 2) * 1_000_000_000 {
            return Err(too_long());
        }
        let duration = humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?}: {e} (write e.g. \"500ms\", \"30s\", \"5m\")")
        })?;
        if duration > LONGEST {
            return Err(too_long());
        }
        Ok(HumanDuration(duration))
    }
}

/// At least as many nanoseconds as humantime reads from `text` (a bound, not the value): each
/// number (whitespace inside it skipped, as humantime does) plus one for its fraction, times its
/// unit (a year when the unit is unknown), saturating.
fn most_nanos(text: &str) -> u128 {
    fn unit_nanos(unit: &str) -> u128 {
        let secs = match unit {
            "nanos" | "nsec" | "ns" => return 1,
            "usec" | "us" | "µs" => return 1_000,
            "millis" | "msec" | "ms" => return 1_000_000,
            "seconds" | "second" | "secs" | "sec" | "s" => 1,
            "minutes" | "minute" | "min" | "mins" | "m" => 60,
            "hours" | "hour" | "hr" | "hrs" | "h" => 3_600,
            "days" | "day" | "d" => 86_400,
            "weeks" | "week" | "wk" | "wks" | "w" => 604_800,
            "months" | "month" | "M" => 2_630_016,
            _ => 31_557_600,
        };
        secs * 1_000_000_000
    }
    let mut total = 0u128;
    let (mut number, mut fraction, mut unit) = (0u128, false, String::new());
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        if let Some(digit) = c.to_digit(10) {
            if !unit.is_empty() {
                total = total
                    .saturating_add(number.saturating_add(1).saturating_mul(unit_nanos(&unit)));
                (number, fraction) = (0, false);
                unit.clear();
            }
            if !fraction {
                number = number.saturating_mul(10).saturating_add(u128::from(digit));
            }
        } else if c == '.' && unit.is_empty() {
            fraction = true;
        } else {
            unit.push(c);
        }
    }
    total.saturating_add(number.saturating_add(1).saturating_mul(unit_nanos(&unit)))
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A size in bytes, written as an integer or as text with a unit (`"64KiB"`, `"10MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes; for defaults.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
                ));
            }
        };
        let out_of_range = || format!("invalid size {s:?}: out of range");
        if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
            // Whole numbers exactly: as an f64, one past 2^53 would lose its last digits (and
            // Display's output would not read back) and 2^64 would saturate to u64::MAX.
            let digits = number.trim_start_matches('0');
            let value = if digits.is_empty() {
                Some(0)
            } else {
                digits.parse::<u64>().ok()
            };
            return value
                .and_then(|value| value.checked_mul(multiplier))
                .map(ByteSize)
                .ok_or_else(out_of_range);
        }
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number followed by a unit, e.g. \"10MiB\"")
        })?;
        let bytes = value * multiplier as f64;
        // `u64::MAX as f64` is 2^64, one past the largest size.
        if !bytes.is_finite() || bytes < 0.0 || bytes.round() >= u64::MAX as f64 {
            return Err(out_of_range());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
            ("B", 1),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{}", self.0 / size, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_a_century_are_refused_before_they_can_overflow_a_deadline() {
        assert_eq!(
            "100 years".parse::<HumanDuration>().unwrap().0,
            humantime::parse_duration("100 years").unwrap()
        );
        let error = "500000000000years".parse::<HumanDuration>().unwrap_err();
        assert!(error.contains("too long"), "{error}");
        // What the refused value would have done to a deadline.
        let huge = humantime::parse_duration("500000000000years").unwrap();
        assert!(tokio::time::Instant::now().checked_add(huge).is_none());
        assert!("0s".parse::<HumanDuration>().is_ok());
    }

    /// Regression: humantime panicked ("overflow in Duration::new") when parts of a second
    /// carried into its largest count of seconds, so reading a config with such a duration
    /// panicked instead of refusing it.
    #[test]
    fn durations_that_would_overflow_humantime_are_refused_not_a_panic() {
        for text in [
            "18446744073709551615s 1000ms",
            "18446744073709551615s 1000000000ns",
            "18446744073709551615s 500ms 500ms",
            "18446744073709551614s 1000ms 1000ms",
            "584542046090years 19767615s 1000ms",
        ] {
            let error = text.parse::<HumanDuration>().unwrap_err();
            assert!(error.contains("too long"), "{text}: {error}");
        }
        // Long spellings of durations within the limit still read.
        assert_eq!(
            "1000000000000000000ns".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(1_000_000_000)
        );
        assert_eq!(
            "0000000000000000000000000000000000000001s"
                .parse::<HumanDuration>()
                .unwrap()
                .0,
            Duration::from_secs(1)
        );
    }

    /// Regression: sizes were read as f64, so whole numbers past 2^53 lost their last digits
    /// (`9007199254740993` read as ...992, and Display's `9082200830873701B` did not read back)
    /// and 2^64 bytes (`16777216TiB`) was taken as u64::MAX instead of refused.
    #[test]
    fn whole_sizes_are_exact_and_refused_past_u64() {
        assert_eq!(
            "9007199254740993".parse::<ByteSize>().unwrap().0,
            9_007_199_254_740_993
        );
        assert_eq!(
            "9082200830873701B".parse::<ByteSize>().unwrap().0,
            9_082_200_830_873_701
        );
        assert_eq!(
            "18446744073709551615".parse::<ByteSize>().unwrap().0,
            u64::MAX
        );
        for text in [
            "18446744073709551616",
            "16777216TiB",
            "18446744073709551616.0",
        ] {
            assert!(text.parse::<ByteSize>().is_err(), "{text}");
        }
    }

    #[test]
    fn sizes_parse_with_iec_and_si_units() {
        assert_eq!("10MiB".parse::<ByteSize>().unwrap().0, 10 * 1024 * 1024);
        assert_eq!("64 KiB".parse::<ByteSize>().unwrap().0, 65536);
        assert_eq!("1kB".parse::<ByteSize>().unwrap().0, 1000);
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap().0, 3 << 29);
        assert_eq!("512".parse::<ByteSize>().unwrap().0, 512);
    }

    #[test]
    fn sizes_reject_unknown_units_and_garbage() {
        assert!("10 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("1e999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(32 * 1024).to_string(), "32KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_parse_humantime_forms() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "1m 30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(90)
        );
        assert!("soon".parse::<HumanDuration>().is_err());
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// humantime's units and their length in nanoseconds (a month is 30.44 days, a year
        /// 365.25 days).
        const UNITS: [(&str, u128); 17] = [
            ("ns", 1),
            ("nsec", 1),
            ("us", 1_000),
            ("µs", 1_000),
            ("ms", 1_000_000),
            ("s", 1_000_000_000),
            ("sec", 1_000_000_000),
            ("seconds", 1_000_000_000),
            ("m", 60_000_000_000),
            ("min", 60_000_000_000),
            ("h", 3_600_000_000_000),
            ("hrs", 3_600_000_000_000),
            ("d", 86_400_000_000_000),
            ("w", 604_800_000_000_000),
            ("M", 2_630_016_000_000_000),
            ("y", 31_557_600_000_000_000),
            ("years", 31_557_600_000_000_000),
        ];

        const NANOS: u128 = 1_000_000_000;

        /// Counts near every edge: a century, the largest number humantime reads, a second in
        /// smaller units (the carries into whole seconds), and any at all.
        fn count() -> impl Strategy<Value = u64> {
            prop_oneof![
                3 => prop::sample::select(vec![
                    0,
                    1,
                    59,
                    500,
                    999,
                    1_000,
                    1_000_000,
                    999_999_999,
                    1_000_000_000,
                    3_155_760_000,
                    3_155_760_001,
                    u64::MAX / 31_557_600,
                    u64::MAX / 1_000,
                    u64::MAX - 1,
                    u64::MAX,
                ]),
                2 => 0u64..10_000,
                1 => any::<u64>(),
            ]
        }

        /// One `<number>[.<fraction>]<unit>` of a duration, and the text between it and the next.
        #[derive(Debug, Clone)]
        struct Item {
            count: u64,
            zeros: usize,
            fraction: Option<String>,
            space: &'static str,
            unit: usize,
            separator: &'static str,
        }

        fn item() -> impl Strategy<Value = Item> {
            let unit = prop_oneof![
                3 => prop::sample::select(vec![0usize, 4, 5, 15]),
                2 => 0..UNITS.len(),
            ];
            (
                count(),
                prop::sample::select(vec![0usize, 0, 0, 2]),
                prop::option::weighted(0.2, "[0-9]{1,6}"),
                prop::sample::select(vec!["", "", " "]),
                unit,
                prop::sample::select(vec!["", " ", " ", "  ", "\t"]),
            )
                .prop_map(|(count, zeros, fraction, space, unit, separator)| Item {
                    count,
                    zeros,
                    fraction,
                    space,
                    unit,
                    separator,
                })
        }

        /// Items, a quarter of them after the most seconds humantime can count (where a carry
        /// from the parts of a second that follow overflows).
        fn items() -> impl Strategy<Value = Vec<Item>> {
            let most = Item {
                count: u64::MAX,
                zeros: 0,
                fraction: None,
                space: "",
                unit: 5,
                separator: " ",
            };
            prop_oneof![
                3 => vec(item(), 0..5),
                1 => vec(item(), 1..4).prop_map(move |mut items| {
                    items.insert(0, most.clone());
                    items
                }),
            ]
        }

        fn render(items: &[Item]) -> String {
            items
                .iter()
                .map(|i| {
                    let fraction = i
                        .fraction
                        .as_ref()
                        .map(|f| format!(".{f}"))
                        .unwrap_or_default();
                    format!(
                        "{}{}{fraction}{}{}{}",
                        "0".repeat(i.zeros),
                        i.count,
                        i.space,
                        UNITS[i.unit].0,
                        i.separator
                    )
                })
                .collect()
        }

        /// What humantime reads, in nanoseconds: each count times its unit, plus the fraction
        /// of the unit; `None` where it refuses: nothing at all, or a fraction that is not a
        /// whole number of nanoseconds (of seconds, for hours and longer: `0.001y` is refused).
        fn model(items: &[Item]) -> Option<u128> {
            if items.is_empty() {
                return None;
            }
            let mut total = 0u128;
            for item in items {
                let unit = UNITS[item.unit].1;
                total += u128::from(item.count) * unit;
                if let Some(fraction) = &item.fraction {
                    if unit == 1 {
                        return None;
                    }
                    let numerator: u128 = fraction.parse().ok()?;
                    let denominator = 10u128.pow(fraction.len() as u32);
                    let step = if unit >= 3_600 * NANOS { NANOS } else { 1 };
                    let steps = numerator * (unit / step);
                    if steps % denominator != 0 {
                        return None;
                    }
                    total += steps / denominator * step;
                }
            }
            Some(total)
        }

        /// Text near the grammar, and anything at all.
        fn duration_text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                6 => prop::sample::select(vec![
                    "0", "1", "9", "1000", "18446744073709551615", "584542046090", ".", "5",
                    "s", "ms", "ns", "us", "µs", "y", "M", "m", "h", "d", " ", "\t", "\u{a0}",
                    "years", "-", "+", "e9", "_",
                ])
                .prop_map(str::to_owned),
                1 => any::<String>(),
            ];
            vec(piece, 0..12).prop_map(|pieces| pieces.concat())
        }

        /// A size: a number (any u64, 2^53 + 1, 2^64 and past it, leading zeros), maybe a
        /// fraction, a unit in any case.
        #[derive(Debug, Clone)]
        struct Size {
            whole: String,
            fraction: Option<String>,
            space: &'static str,
            unit: (String, u64),
        }

        fn size() -> impl Strategy<Value = Size> {
            let whole = prop_oneof![
                prop::sample::select(vec![
                    "0",
                    "1",
                    "10",
                    "1023",
                    "9007199254740993",
                    "18446744073709551615",
                    "18446744073709551616",
                    "99999999999999999999999",
                    "000000000000000000000000064",
                    "16777216",
                    "17179869184",
                    "",
                ])
                .prop_map(str::to_owned),
                any::<u64>().prop_map(|n| n.to_string()),
                (0u64..100_000).prop_map(|n| n.to_string()),
            ];
            let units = vec![
                ("", 1),
                ("b", 1),
                ("k", 1_000),
                ("kb", 1_000),
                ("kib", 1 << 10),
                ("m", 1_000_000),
                ("mb", 1_000_000),
                ("mib", 1 << 20),
                ("g", 1_000_000_000),
                ("gb", 1_000_000_000),
                ("gib", 1 << 30),
                ("t", 1_000_000_000_000),
                ("tb", 1_000_000_000_000),
                ("tib", 1 << 40),
            ];
            let unit =
                (prop::sample::select(units), any::<u8>()).prop_map(|((name, size), upper)| {
                    let name: String = name
                        .chars()
                        .enumerate()
                        .map(|(i, c)| {
                            if upper & (1 << i) != 0 {
                                c.to_ascii_uppercase()
                            } else {
                                c
                            }
                        })
                        .collect();
                    (name, size)
                });
            (
                whole,
                prop::option::weighted(0.3, "[0-9]{0,4}"),
                prop::sample::select(vec!["", " ", "  "]),
                unit,
            )
                .prop_map(|(whole, fraction, space, unit)| Size {
                    whole,
                    fraction,
                    space,
                    unit,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Durations built from humantime's units read as the model says, up to 100 years;
            /// longer ones (and ones humantime cannot hold) are refused, never a panic.
            #[test]
            fn durations_agree_with_the_model_and_stop_at_a_century(
                items in items(),
                padding in prop::sample::select(vec!["", " ", "\t"]),
            ) {
                let text = format!("{padding}{}{padding}", render(&items));
                let parsed = text.parse::<HumanDuration>();
                let longest = LONGEST.as_nanos();
                match model(&items) {
                    Some(nanos) if nanos <= longest => prop_assert_eq!(
                        parsed.map(|d| d.0.as_nanos()),
                        Ok(nanos),
                        "{:?}", text
                    ),
                    _ => prop_assert!(parsed.is_err(), "{:?} gave {:?}", text, parsed),
                }
            }

            /// Any text: no panic, and nothing over 100 years gets through.
            #[test]
            fn any_text_gives_a_duration_of_at_most_a_century_or_an_error(text in duration_text()) {
                if let Ok(d) = text.parse::<HumanDuration>() {
                    prop_assert!(d.0 <= LONGEST, "{:?} gave {:?}", text, d);
                }
            }

            /// What Display writes reads back as the same duration up to 100 years (the
            /// configuration Gatehouse shows can be pasted back in), and is refused beyond.
            #[test]
            fn durations_round_trip_through_display(
                secs in prop_oneof![0..=LONGEST.as_secs(), any::<u64>()],
                nanos in prop_oneof![Just(0u32), 0..1_000_000_000u32],
            ) {
                let d = Duration::new(secs, nanos);
                let text = HumanDuration(d).to_string();
                let parsed = text.parse::<HumanDuration>();
                if d <= LONGEST {
                    prop_assert_eq!(parsed, Ok(HumanDuration(d)), "{:?}", text);
                } else {
                    prop_assert!(parsed.is_err(), "{:?}", text);
                }
            }

            /// Sizes: a whole number times its unit exactly, refused past u64::MAX (never
            /// wrapped or saturated); with a fraction, within a byte of the exact product
            /// rounded (or within 2^-50 of it when large), refused well past u64::MAX.
            #[test]
            fn sizes_agree_with_the_model(
                s in size(),
                padding in prop::sample::select(vec!["", " "]),
            ) {
                let fraction = s.fraction.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
                let (number, space, unit_name) = (&s.whole, s.space, &s.unit.0);
                let text = format!("{padding}{number}{fraction}{space}{unit_name}{padding}");
                let parsed = text.parse::<ByteSize>().map(|b| b.0);
                let digits = s.whole.trim_start_matches('0');
                let whole: Option<u128> = if digits.is_empty() {
                    Some(0)
                } else if digits.len() > 20 {
                    None
                } else {
                    digits.parse().ok()
                };
                let unit = u128::from(s.unit.1);
                match (&s.fraction, whole) {
                    _ if s.whole.is_empty() && s.fraction.as_deref().unwrap_or("").is_empty() => {
                        prop_assert!(parsed.is_err(), "{:?} gave {:?}", text, parsed)
                    }
                    (_, None) => prop_assert!(parsed.is_err(), "{:?} gave {:?}", text, parsed),
                    (None, Some(whole)) => {
                        let exact = u64::try_from(whole * unit).ok();
                        prop_assert_eq!(parsed.ok(), exact, "{:?}", text);
                    }
                    (Some(fraction), Some(whole)) => {
                        let scale = 10u128.pow(fraction.len() as u32);
                        let digits = fraction.parse::<u128>().unwrap_or(0);
                        let numerator = (whole * scale + digits) * unit;
                        // Rounded half up.
                        let exact = (2 * numerator + scale) / (2 * scale);
                        let margin = (exact >> 50).max(1);
                        if exact + margin <= u128::from(u64::MAX) {
                            let got = parsed.map(u128::from);
                            prop_assert!(
                                got.as_ref().is_ok_and(|got| got.abs_diff(exact) <= margin),
                                "{:?} gave {:?}, not {}", text, got, exact
                            );
                        } else if exact > u128::from(u64::MAX) + margin {
                            prop_assert!(parsed.is_err(), "{:?} gave {:?}", text, parsed);
                        }
                    }
                }
            }

            /// Display writes every size so that it reads back exactly.
            #[test]
            fn sizes_round_trip_through_display(
                bytes in prop_oneof![
                    any::<u64>(),
                    (0u64..1 << 24, 0u32..41).prop_map(|(n, shift)| n << shift),
                ],
            ) {
                let text = ByteSize(bytes).to_string();
                prop_assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{:?}", text);
            }

            /// Any text: a size or an error, never a panic. Mostly a number-like start (where
            /// the parser splits number from unit) and a unit-like end.
            #[test]
            fn any_text_gives_a_size_or_an_error(
                text in prop_oneof![
                    1 => any::<String>(),
                    3 => (
                        vec(
                            prop::sample::select(vec![
                                "1", "0", ".", "9", "18446744073709551615", "99999999999", "e",
                                "-", "+", "inf", "NaN", "é",
                            ]),
                            0..4,
                        ),
                        prop::sample::select(vec!["", " ", "\u{a0}"]),
                        prop::sample::select(vec![
                            "", "B", "KiB", "mb", "T", "TiB", "E5", "kib ", "_", "µ", "\u{212a}B",
                        ]),
                    )
                        .prop_map(|(number, space, unit)| {
                            format!("{}{space}{unit}", number.concat())
                        }),
                ],
            ) {
                let _ = text.parse::<ByteSize>();
            }
        }
    }
}
