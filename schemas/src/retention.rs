//! Retention of system generations (`retention:` in fleet.yaml and agent.yaml, the
//! deployment request's and `POST /v1/gc`'s policy): which profile generations an agent
//! keeps when it collects garbage. The protected generations (running, booted, pending,
//! last confirmed, current) are kept whatever the policy says; that rule is the agent's.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::Duration;

/// Keep the newest `keep_last` generations and (union) every generation younger than
/// `keep_younger_than`; at least one of the two is set, both are more than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct Retention {
    /// Keep the newest N generations of the system profile (1 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<u32>,
    /// Keep the generations made less than this long ago (more than 0s, e.g. `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_younger_than: Option<Duration>,
}

/// The text form; each value is checked as it is read, so a YAML error points at it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a retention mapping with `keep_last` and/or `keep_younger_than`")]
struct RawRetention {
    #[serde(default, deserialize_with = "checked_keep_last")]
    keep_last: Option<i64>,
    #[serde(default, deserialize_with = "checked_age")]
    keep_younger_than: Option<Duration>,
}

fn checked_keep_last<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = i64::deserialize(d)?;
    Retention::new(Some(n), None).map(|_| Some(n)).map_err(serde::de::Error::custom)
}

fn checked_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let age = Duration::deserialize(d)?;
    Retention::new(None, Some(age)).map(|_| Some(age)).map_err(serde::de::Error::custom)
}

/// A policy that would keep nothing, or is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error("keep_last: {0} generations: expected 1 or more (the protected generations are kept anyway)")]
    KeepLast(i64),
    #[error("keep_younger_than: 0s keeps nothing: expected a duration of more than 0s, such as 30d")]
    ZeroAge,
    #[error("a retention policy sets `keep_last`, `keep_younger_than` or both")]
    Empty,
}

impl Retention {
    /// Checks the values: `keep_last` 1 or more, `keep_younger_than` more than 0s, one of them set.
    pub fn new(keep_last: Option<i64>, keep_younger_than: Option<Duration>) -> Result<Self, RetentionError> {
        let keep_last = match keep_last {
            None => None,
            Some(n) => Some(u32::try_from(n).ok().filter(|n| *n >= 1).ok_or(RetentionError::KeepLast(n))?),
        };
        if keep_younger_than.is_some_and(|d| d.as_millis() == 0) {
            return Err(RetentionError::ZeroAge);
        }
        if keep_last.is_none() && keep_younger_than.is_none() {
            return Err(RetentionError::Empty);
        }
        Ok(Self { keep_last, keep_younger_than })
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRetention::deserialize(d)?;
        Retention::new(raw.keep_last, raw.keep_younger_than).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Retention {
    /// `keep_last 5, keep_younger_than 30d` (what is set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.keep_last.map(|n| format!("keep_last {n}"));
        let age = self.keep_younger_than.map(|d| format!("keep_younger_than {d}"));
        let parts: Vec<String> = last.into_iter().chain(age).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Host `name`'s policy in `fleet` with the key it came from: its own `retention`, else
/// that of its tags in `tag_retention` (two tags with different policies: an error at
/// `hosts.<name>`), else `defaults.retention`; `None`: the agent's own policy applies.
pub fn host_retention(
    fleet: &crate::inventory::Fleet,
    name: &crate::ids::HostName,
    file: &std::path::Path,
) -> Result<Option<(Retention, String)>, crate::yaml::YamlError> {
    let own = fleet.hosts.get(name).and_then(|h| h.retention.as_ref());
    let fallback = fleet.defaults.retention.as_ref().map(|p| (p, "defaults.retention"));
    let found = crate::inventory::host_setting(
        fleet,
        name,
        file,
        (own, "retention"),
        (&fleet.tag_retention, "tag_retention"),
        fallback,
    )?;
    Ok(found.map(|(policy, key)| (*policy, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_checked() {
        let ok: Retention = serde_json::from_str(r#"{"keep_last": 3, "keep_younger_than": "30d"}"#).unwrap();
        assert_eq!(ok.to_string(), "keep_last 3, keep_younger_than 30d");
        for (bad, says) in [
            (r#"{"keep_last": 0}"#, "keep_last: 0 generations: expected 1 or more"),
            (r#"{"keep_last": -2}"#, "keep_last: -2 generations"),
            (r#"{"keep_younger_than": "0s"}"#, "0s keeps nothing"),
            (r#"{"keep_younger_than": "3 days"}"#, "invalid duration `3 days`"),
            (r#"{}"#, "sets `keep_last`, `keep_younger_than` or both"),
            (r#"{"keep": 1}"#, "unknown field `keep`"),
        ] {
            let err = serde_json::from_str::<Retention>(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_host_gets_its_own_then_its_tags_then_the_default() {
        let yaml = "defaults: {retention: {keep_last: 9}}\ntag_retention:\n  db: {keep_last: 3}\n  eu: {keep_last: 4}\n\
                    hosts:\n  web1: {address: a}\n  db1: {address: b, tags: [db]}\n  own: {address: c, tags: [db, eu], retention: {keep_younger_than: 1d}}\n\
                    \x20 both: {address: d, tags: [db, eu]}\n";
        let file = std::path::Path::new("fleet.yaml");
        let fleet = crate::inventory::parse_fleet(yaml, file).unwrap();
        let of = |name: &str| {
            host_retention(&fleet, &name.parse().unwrap(), file).map(|r| r.map(|(p, key)| (p.to_string(), key)))
        };
        assert_eq!(of("web1").unwrap(), Some(("keep_last 9".into(), "defaults.retention".into())));
        assert_eq!(of("db1").unwrap(), Some(("keep_last 3".into(), "tag_retention.db".into())));
        assert_eq!(of("own").unwrap(), Some(("keep_younger_than 1d".into(), "hosts.own.retention".into())));
        let err = of("both").unwrap_err().to_string();
        assert!(
            err.contains("fleet.yaml: hosts.both: its tags `db` and `eu` have different `tag_retention` policies"),
            "{err}"
        );
    }
}
