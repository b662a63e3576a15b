//! Human durations such as `500ms`, `30s`, `1h30m` or `2d`, as written in YAML files
//! and on the command line.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A duration with millisecond precision, written as integer amounts of `d`, `h`,
/// `m`, `s` and `ms` in that order (`1h30m`, `90s`, `500ms`).
///
/// Displays in canonical form, which parses back to the same value (`90s` → `1m30s`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {problem}; expected a duration like 30s, 5m or 1h30m (units: d, h, m, s, ms)")]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// What exactly was wrong with it.
    pub problem: &'static str,
}

/// Units from largest to smallest, in milliseconds.
const UNITS: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl Duration {
    /// `n` milliseconds.
    pub const fn from_millis(n: u64) -> Self {
        Self(std::time::Duration::from_millis(n))
    }

    /// `n` seconds.
    pub const fn from_secs(n: u64) -> Self {
        Self(std::time::Duration::from_secs(n))
    }

    /// The standard library duration, for timers and timeouts.
    pub const fn as_std(&self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(&self) -> u128 {
        self.0.as_millis()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl From<std::time::Duration> for Duration {
    /// Truncates to whole milliseconds, the precision durations are written with.
    fn from(d: std::time::Duration) -> Self {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self::from_millis(millis)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        let fail = |problem| DurationError { input: s.to_owned(), problem };
        if s.is_empty() {
            return Err(fail("it is empty"));
        }
        let mut rest = s;
        let mut total: u64 = 0;
        // Index into UNITS of the next unit allowed; enforces strictly descending units.
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("each unit needs an integer amount before it"));
            }
            let amount: u64 = rest[..digits].parse().map_err(|_| fail("the number is too large"))?;
            rest = &rest[digits..];
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            if letters == 0 {
                return Err(fail("a number needs a unit"));
            }
            let unit = &rest[..letters];
            rest = &rest[letters..];
            let index = UNITS.iter().position(|(name, _)| *name == unit).ok_or_else(|| fail("unknown unit"))?;
            if index < next_unit {
                return Err(fail("units must go from largest to smallest, each at most once"));
            }
            next_unit = index + 1;
            total = amount
                .checked_mul(UNITS[index].1)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(|| fail("the duration is too large"))?;
        }
        Ok(Self::from_millis(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0.as_millis();
        if left == 0 {
            return f.write_str("0s");
        }
        for (name, size) in UNITS {
            let size = u128::from(size);
            if left >= size {
                write!(f, "{}{name}", left / size)?;
                left %= size;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

crate::ids::serde_via_str!(Duration, "duration");

impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$",
            "minLength": 2,
            "description": "A duration such as 500ms, 30s, 5m, 1h30m or 2d; at most 2^64 - 1 milliseconds in all.",
            "examples": ["30s", "5m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u128 {
        s.parse::<Duration>().unwrap().as_millis()
    }

    #[test]
    fn parses_units() {
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("30s"), 30_000);
        assert_eq!(ms("5m"), 300_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("2d"), 172_800_000);
        assert_eq!(ms("1d2h3m4s5ms"), 93_784_005);
        assert_eq!(ms("0s"), 0);
        assert_eq!(ms("90s"), 90_000);
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for (input, canonical) in [
            ("90s", "1m30s"),
            ("1h30m", "1h30m"),
            ("500ms", "500ms"),
            ("1500ms", "1s500ms"),
            ("0ms", "0s"),
            ("48h", "2d"),
            ("1d2h3m4s5ms", "1d2h3m4s5ms"),
        ] {
            let d: Duration = input.parse().unwrap();
            assert_eq!(d.to_string(), canonical);
            assert_eq!(canonical.parse::<Duration>().unwrap(), d);
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for (input, problem) in [
            ("30x", "unknown unit"),
            ("30", "a number needs a unit"),
            ("s", "each unit needs an integer amount"),
            ("", "it is empty"),
            ("1.5s", "a number needs a unit"),
            ("-5s", "each unit needs an integer amount"),
            ("30m1h", "largest to smallest"),
            ("1s1s", "largest to smallest"),
            ("5 s", "a number needs a unit"),
            ("30S", "unknown unit"),
            ("99999999999999999999s", "too large"),
            ("999999999999999d", "too large"),
        ] {
            let err = input.parse::<Duration>().unwrap_err();
            assert!(err.problem.contains(problem), "{input}: {err}");
            let text = err.to_string();
            assert!(text.contains("expected a duration like 30s, 5m or 1h30m"), "{text}");
            assert!(text.contains(&format!("`{input}`")), "{text}");
        }
    }

    #[test]
    fn serde_as_string() {
        let d: Duration = serde_json::from_str("\"90s\"").unwrap();
        assert_eq!(d, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m30s\"");
        assert_eq!(std::time::Duration::from(d), std::time::Duration::from_secs(90));
        assert_eq!(Duration::from(std::time::Duration::from_micros(1500)).as_millis(), 1);
    }
}
