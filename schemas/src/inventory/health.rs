//! Health checks run after an activation: an HTTP probe or a command, with retries.

use std::fmt;

use schemars::JsonSchema;
use serde::de::value::MapAccessDeserializer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Duration;

/// One health check; the deployment fails if it still fails after `retries` retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What to probe.
    pub kind: HealthKind,
    /// Time limit for one attempt.
    pub timeout: Duration,
    /// Attempts after the first before giving up.
    pub retries: u32,
    /// Wait between attempts.
    pub interval: Duration,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// GET this `http://` or `https://` URL; success is a 2xx status.
    Http(String),
    /// Run this argv (no shell); success is exit status 0.
    Command(Vec<String>),
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

impl HealthCheck {
    /// A check with the default timeout (5s), retries (3) and interval (2s).
    pub fn new(kind: HealthKind) -> Self {
        Self { kind, timeout: DEFAULT_TIMEOUT, retries: DEFAULT_RETRIES, interval: DEFAULT_INTERVAL }
    }
}

/// The YAML shape of a health check: exactly one of `http` or `command`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename = "HealthCheck")]
#[schemars(
    description = "A health check: exactly one of `http` or `command`.",
    extend("oneOf" = [{"required": ["http"]}, {"required": ["command"]}])
)]
struct HealthCheckDoc {
    /// URL to GET (http:// or https://); a 2xx status is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", regex(pattern = "^https?://."))]
    http: Option<String>,
    /// Command and arguments to run without a shell; exit status 0 is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>", length(min = 1))]
    command: Option<Vec<String>>,
    /// Time limit for one attempt.
    #[serde(default = "default_timeout")]
    timeout: Duration,
    /// Attempts after the first before the check fails.
    #[serde(default = "default_retries")]
    retries: u32,
    /// Wait between attempts.
    #[serde(default = "default_interval")]
    interval: Duration,
}

impl TryFrom<HealthCheckDoc> for HealthCheck {
    type Error = &'static str;

    fn try_from(doc: HealthCheckDoc) -> Result<Self, Self::Error> {
        let kind = match (doc.http, doc.command) {
            (Some(_), Some(_)) => return Err("a health check has either `http` or `command`, not both"),
            (None, None) => return Err("a health check needs `http: URL` or `command: [argv...]`"),
            (Some(url), None) => {
                let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(str::is_empty) {
                    return Err("`http` must be a URL starting with http:// or https://");
                }
                HealthKind::Http(url)
            }
            (None, Some(argv)) => {
                if argv.first().is_none_or(String::is_empty) {
                    return Err("`command` must be a non-empty list: the program, then its arguments");
                }
                HealthKind::Command(argv)
            }
        };
        Ok(Self { kind, timeout: doc.timeout, retries: doc.retries, interval: doc.interval })
    }
}

impl From<&HealthCheck> for HealthCheckDoc {
    fn from(check: &HealthCheck) -> Self {
        let (http, command) = match &check.kind {
            HealthKind::Http(url) => (Some(url.clone()), None),
            HealthKind::Command(argv) => (None, Some(argv.clone())),
        };
        Self { http, command, timeout: check.timeout, retries: check.retries, interval: check.interval }
    }
}

impl Serialize for HealthCheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HealthCheckDoc::from(self).serialize(s)
    }
}

/// Validates inside `visit_map` so the error carries the location of the check's
/// own mapping rather than of the list holding it.
struct HealthCheckVisitor;

impl<'de> serde::de::Visitor<'de> for HealthCheckVisitor {
    type Value = HealthCheck;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a health check mapping with `http` or `command`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HealthCheck, A::Error> {
        let doc = HealthCheckDoc::deserialize(MapAccessDeserializer::new(map))?;
        HealthCheck::try_from(doc).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(HealthCheckVisitor)
    }
}

impl JsonSchema for HealthCheck {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HealthCheck".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        HealthCheckDoc::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<HealthCheck, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_filled_in() {
        let check = parse(r#"{"http": "http://x/healthz"}"#).unwrap();
        assert_eq!(check, HealthCheck::new(HealthKind::Http("http://x/healthz".into())));
        assert_eq!(check.timeout, Duration::from_secs(5));
        assert_eq!(check.retries, 3);
        assert_eq!(check.interval, Duration::from_secs(2));
    }

    #[test]
    fn round_trips() {
        let check = parse(r#"{"command": ["true"], "timeout": "1m", "retries": 0}"#).unwrap();
        assert_eq!(check.kind, HealthKind::Command(vec!["true".into()]));
        let json = serde_json::to_string(&check).unwrap();
        assert_eq!(json, r#"{"command":["true"],"timeout":"1m","retries":0,"interval":"2s"}"#);
        assert_eq!(parse(&json).unwrap(), check);
    }

    #[test]
    fn rejects_bad_checks() {
        for (json, want) in [
            (r#"{"http": "http://x", "command": ["true"]}"#, "not both"),
            (r#"{"timeout": "5s"}"#, "needs `http: URL` or `command"),
            (r#"{"http": "ftp://x"}"#, "starting with http://"),
            (r#"{"http": "https://"}"#, "starting with http://"),
            (r#"{"command": []}"#, "non-empty list"),
            (r#"{"command": [""]}"#, "non-empty list"),
            (r#"{"http": "http://x", "tiemout": "5s"}"#, "unknown field `tiemout`"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
