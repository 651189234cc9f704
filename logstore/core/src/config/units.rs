//! Serde helpers for config values: byte sizes with binary suffixes, durations in a key's unit or
//! with an explicit unit, and the lenient scalars upstream's YAML relies on (empty values, numbers
//! written where a string is meant).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Parses a byte size: an integer, or an integer followed by a binary suffix
/// (`K`, `M`, `G`, `T`, optionally followed by `B` or `iB`, any case; `1GB` = 2^30 bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "invalid size `{text}`: expected an integer number of bytes, optionally with a K/M/G/T suffix"
        ));
    }
    let value: u64 = number.parse().map_err(|e| format!("invalid size `{text}`: {e}"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "invalid size `{text}`: unknown suffix `{other}` (expected K, M, G or T, optionally followed by B or iB)"
            ));
        }
    };
    value.checked_mul(1u64 << shift).ok_or_else(|| format!("invalid size `{text}`: larger than {} bytes", u64::MAX))
}

/// Parses a duration: a plain number counts in `unit`; a string may carry its own unit
/// (`200ms`, `10s`, `5m`, `1h 30m`; see `humantime`).
pub fn parse_duration(text: &str, unit: Duration) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let count: u64 = trimmed.parse().map_err(|e| format!("invalid duration `{text}`: {e}"))?;
        return scale(count, unit).ok_or_else(|| format!("invalid duration `{text}`: too large"));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!(
            "invalid duration `{text}`: {e}; expected an integer number of {} or a string with a unit such as \"200ms\" or \"10s\"",
            unit_name(unit)
        )
    })
}

fn scale(count: u64, unit: Duration) -> Option<Duration> {
    let nanos = unit.as_nanos().checked_mul(u128::from(count))?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    // The remainder is below 10^9 and fits u32.
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

fn unit_name(unit: Duration) -> &'static str {
    if unit == Duration::from_millis(1) {
        "milliseconds"
    } else if unit == Duration::from_secs(1) {
        "seconds"
    } else {
        "units"
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte size: an integer or a string like \"64M\" or \"1GB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..1.8e19).contains(&v) {
            // Integral and in range: the cast is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(v as u64)
        } else {
            Err(E::custom(format!("invalid size {v}: must be a whole, non-negative number of bytes")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(E::custom)
    }
}

/// Byte sizes: `u64` bytes, written as integers, read from integers or suffixed strings.
pub mod bytes {
    use super::*;

    /// Writes the size as an integer number of bytes.
    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value)
    }

    /// Reads an integer or a suffixed string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

struct DurationVisitor(Duration);

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration: an integer number of {} or a string like \"200ms\" or \"10s\"", unit_name(self.0))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        scale(v, self.0).ok_or_else(|| E::custom(format!("invalid duration {v}: too large")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))?;
        self.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(self.0.as_secs_f64() * v)
            .map_err(|_| E::custom(format!("invalid duration {v}: must be a finite, non-negative number")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v, self.0).map_err(E::custom)
    }
}

fn serialize_in_unit<S: Serializer>(value: &Duration, unit: Duration, serializer: S) -> Result<S::Ok, S::Error> {
    let nanos = value.as_nanos();
    let unit_nanos = unit.as_nanos();
    if nanos.is_multiple_of(unit_nanos)
        && let Ok(count) = u64::try_from(nanos / unit_nanos)
    {
        return serializer.serialize_u64(count);
    }
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

/// Durations whose plain numbers count milliseconds.
pub mod millis {
    use super::*;

    const UNIT: Duration = Duration::from_millis(1);

    /// Writes whole milliseconds as an integer, anything finer as a string with units.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_in_unit(value, UNIT, serializer)
    }

    /// Reads milliseconds or a string with units.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor(UNIT))
    }
}

/// Durations whose plain numbers count seconds.
pub mod seconds {
    use super::*;

    const UNIT: Duration = Duration::from_secs(1);

    /// Writes whole seconds as an integer, anything finer as a string with units.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_in_unit(value, UNIT, serializer)
    }

    /// Reads seconds or a string with units.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor(UNIT))
    }
}

struct LenientStringVisitor;

impl Visitor<'_> for LenientStringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

/// Strings as upstream's Go YAML reads them: an empty value is `""`, and a number or boolean
/// written where a string is meant (`tlsMinVersion: 1.3`) keeps its text.
pub mod lenient_string {
    use super::*;

    /// Writes the string.
    pub fn serialize<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    /// Reads a string, an empty value or a scalar's text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(LenientStringVisitor)
    }
}

/// Values where an empty YAML value (`customPlacement:`) means the default (an empty list).
pub mod nullable {
    use super::*;

    /// Writes the value.
    pub fn serialize<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }

    /// Reads the value, or its default for an empty value.
    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
    }
}

/// A list of strings that also accepts one comma-separated string (older upstream `etcd.endpoints`)
/// or an empty value; items may be written as numbers.
pub mod string_list {
    use super::*;

    struct Item(String);

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(LenientStringVisitor).map(Item)
        }
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or one comma-separated string")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(Item(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
    }

    /// Writes the list.
    pub fn serialize<S: Serializer>(value: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        value.serialize(serializer)
    }

    /// Reads a list, a comma-separated string or an empty value.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_any(ListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_suffixes_in_any_case() {
        assert_eq!(parse_size("2000000"), Ok(2_000_000));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2 tb"), Ok(2 << 40));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("10X").unwrap_err().contains("unknown suffix `x`"));
        assert!(parse_size("20000000000T").unwrap_err().contains("larger than"));
    }

    #[test]
    fn durations_count_in_the_key_unit_unless_a_unit_is_given() {
        let ms = Duration::from_millis(1);
        let s = Duration::from_secs(1);
        assert_eq!(parse_duration("200", ms), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("200", s), Ok(Duration::from_secs(200)));
        assert_eq!(parse_duration("200ms", s), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("10s", ms), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30m", s), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h 30m", s), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("ten", s).unwrap_err().contains("integer number of seconds"));
        assert!(parse_duration("-5", ms).is_err());
    }
}
