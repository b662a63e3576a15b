//! How a fleet rolls forward: batch size and tolerated failures.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Rollout policy (`rollout:` in fleet.yaml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default, expecting = "a mapping of `batch` and `max_failures`")]
pub struct Rollout {
    /// Hosts per batch: a count (`3`) or a percentage of the selected hosts (`25%`).
    pub batch: Batch,
    /// Failed hosts tolerated before the rollout stops.
    pub max_failures: u32,
}

impl Default for Rollout {
    fn default() -> Self {
        Self { batch: Batch::Percent(100), max_failures: 0 }
    }
}

/// Hosts per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Batch {
    /// A number of hosts, at least 1.
    Count(u32),
    /// A percentage of the selected hosts, 1 to 100, rounded up.
    Percent(u8),
}

impl Default for Batch {
    fn default() -> Self {
        Self::Percent(100)
    }
}

impl Batch {
    /// Hosts per batch out of `total` selected hosts: percentages round up, and the
    /// result is never 0 (so it can be used as a chunk size) nor more than needed.
    pub fn size(&self, total: usize) -> usize {
        let size = match *self {
            Self::Count(n) => usize::try_from(n).unwrap_or(usize::MAX).min(total),
            Self::Percent(p) => total.saturating_mul(usize::from(p)).div_ceil(100),
        };
        size.max(1)
    }
}

/// Text that is not a batch size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid batch `{input}`: {problem}")]
pub struct BatchError {
    /// The rejected text.
    pub input: String,
    /// What was wrong, phrased with what was expected.
    pub problem: &'static str,
}

const BATCH_EXPECTED: &str = "expected a host count of at least 1 (like 3) or a percentage (like 25%)";

impl FromStr for Batch {
    type Err = BatchError;

    fn from_str(s: &str) -> Result<Self, BatchError> {
        let fail = |problem| BatchError { input: s.to_owned(), problem };
        let (digits, percent) = match s.strip_suffix('%') {
            Some(digits) => (digits, true),
            None => (s, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(BATCH_EXPECTED));
        }
        let value: u32 = digits.parse().map_err(|_| fail("the number is too large"))?;
        if percent {
            match u8::try_from(value) {
                Ok(p) if (1..=100).contains(&p) => Ok(Self::Percent(p)),
                _ => Err(fail("a percentage must be between 1% and 100%")),
            }
        } else if value == 0 {
            Err(fail(BATCH_EXPECTED))
        } else {
            Ok(Self::Count(value))
        }
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(n) => s.serialize_u32(*n),
            Self::Percent(_) => s.collect_str(self),
        }
    }
}

/// Accepts a YAML integer (`3`) or a string (`25%`, `"3"`).
struct BatchVisitor;

impl serde::de::Visitor<'_> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a host count of at least 1 (like 3) or a percentage (like 25%)")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Batch, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Batch, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Batch, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BatchVisitor)
    }
}

impl JsonSchema for Batch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Batch".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Hosts per batch: a count of at least 1, or a percentage from 1% to 100%.",
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": u32::MAX},
                {"type": "string", "pattern": "^([1-9][0-9]?%|100%|[1-9][0-9]*)$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_percentages() {
        assert_eq!("3".parse::<Batch>().unwrap(), Batch::Count(3));
        assert_eq!("25%".parse::<Batch>().unwrap(), Batch::Percent(25));
        assert_eq!("100%".parse::<Batch>().unwrap(), Batch::Percent(100));
        assert_eq!("1%".parse::<Batch>().unwrap(), Batch::Percent(1));
        for b in [Batch::Count(7), Batch::Percent(30)] {
            assert_eq!(b.to_string().parse::<Batch>().unwrap(), b);
        }
    }

    #[test]
    fn rejects_bad_batches() {
        for (input, want) in [
            ("0", "at least 1"),
            ("0%", "between 1% and 100%"),
            ("150%", "between 1% and 100%"),
            ("abc", "at least 1"),
            ("", "at least 1"),
            ("%", "at least 1"),
            ("-1", "at least 1"),
            ("2.5%", "at least 1"),
            ("99999999999", "too large"),
        ] {
            let err = input.parse::<Batch>().unwrap_err();
            assert!(err.to_string().contains(want), "{input}: {err}");
            assert!(err.to_string().contains(&format!("`{input}`")), "{err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(Batch::Percent(25).size(10), 3);
        assert_eq!(Batch::Percent(25).size(8), 2);
        assert_eq!(Batch::Percent(1).size(3), 1);
        assert_eq!(Batch::Percent(100).size(7), 7);
        assert_eq!(Batch::Percent(50).size(0), 1);
        assert_eq!(Batch::Count(3).size(10), 3);
        assert_eq!(Batch::Count(30).size(10), 10);
        assert_eq!(Batch::Count(3).size(0), 1);
    }

    #[test]
    fn serde_forms() {
        let count: Batch = serde_json::from_str("3").unwrap();
        assert_eq!(count, Batch::Count(3));
        assert_eq!(serde_json::from_str::<Batch>("\"3\"").unwrap(), count);
        assert_eq!(serde_json::to_string(&count).unwrap(), "3");
        let pct: Batch = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(serde_json::to_string(&pct).unwrap(), "\"25%\"");
        assert!(serde_json::from_str::<Batch>("0").is_err());
        assert!(serde_json::from_str::<Batch>("-2").is_err());
        assert!(serde_json::from_str::<Batch>("true").is_err());
    }

    #[test]
    fn rollout_defaults() {
        let r: Rollout = serde_json::from_str("{}").unwrap();
        assert_eq!(r, Rollout { batch: Batch::Percent(100), max_failures: 0 });
    }
}
