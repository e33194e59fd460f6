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
        let duration = humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?}: {e} (write e.g. \"500ms\", \"30s\", \"5m\")")
        })?;
        if duration > LONGEST {
            return Err(format!(
                "duration {s:?} is too long: at most 100 years (\"0s\" turns a timeout off)"
            ));
        }
        Ok(HumanDuration(duration))
    }
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
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number followed by a unit, e.g. \"10MiB\"")
        })?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("invalid size {s:?}: out of range"));
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
}
