//! Sizes as people write them in configs: `"512MiB"`, `"1.5GB"`, `"800kB"`,
//! `"4096B"`. The unit is required, so a threshold is never ambiguous.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// A number of bytes written with a unit: `"512MiB"`, `"1.5GB"`.
///
/// ```
/// use healer_plugin_sdk::Bytes;
/// assert_eq!(Bytes::parse("512MiB").unwrap().0, 512 * 1024 * 1024);
/// assert!(Bytes::parse("512").is_err()); // which unit?
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Parses a number followed by a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB).
    pub fn parse(text: &str) -> Result<Bytes, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = (&text[..split], text[split..].trim());
        let explain = || {
            format!("invalid size {text:?}: write a number and a unit, e.g. \"512MiB\", \"1.5GB\", \"800kB\"")
        };
        let value: f64 = number.parse().map_err(|_| explain())?;
        let (_, scale) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(explain)?;
        Ok(Bytes((value * *scale as f64).round() as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, scale) = UNITS[5..]
            .iter()
            .rev()
            .find(|(_, scale)| self.0 >= *scale)
            .copied()
            .unwrap_or(("B", 1));
        if scale == 1 {
            write!(f, "{}B", self.0)
        } else {
            write!(f, "{:.1}{name}", self.0 as f64 / scale as f64)
        }
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}B", self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        Bytes::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_decimal_and_binary_units() {
        assert_eq!(Bytes::parse("800kB").unwrap().0, 800_000);
        assert_eq!(Bytes::parse("1.5GB").unwrap().0, 1_500_000_000);
        assert_eq!(Bytes::parse("2 GiB").unwrap().0, 2 << 30);
        assert_eq!(Bytes::parse("4096B").unwrap().0, 4096);
    }

    #[test]
    fn refuses_sizes_without_a_unit() {
        assert!(Bytes::parse("512")
            .unwrap_err()
            .contains("write a number and a unit"));
        assert!(Bytes::parse("5 parsecs").is_err());
    }

    #[test]
    fn prints_in_binary_units() {
        assert_eq!(Bytes(512 << 20).to_string(), "512.0MiB");
        assert_eq!(Bytes(100).to_string(), "100B");
    }
}
