//! Binary caches a fleet is served through (`cache:` in fleet.yaml, `apply --via-cache`,
//! the deployment request's `cache`, the agent's `caches` allow-list): the URL type and
//! its checks.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Nix binary cache URL: `file:///abs/path`, `http://…`, `https://…` or `s3://bucket`,
/// optionally with Nix store parameters (`?compression=zstd&region=eu-west-1`). It goes
/// to Nix as one argv element (`nix copy --to/--from URL`); never through a shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheUrl(String);

/// The schemes Nix serves as binary caches (`nix copy --to` signs narinfos there with
/// `secret-key=`, and an agent substitutes from them with signature checks).
pub const CACHE_SCHEMES: [&str; 4] = ["file://", "http://", "https://", "s3://"];

/// Store parameters a cache URL must not carry: `secret-key` is hostctl's to set (the
/// fleet key), and `trusted` would let Nix take unsigned paths from it.
const RESERVED_PARAMS: [&str; 2] = ["secret-key", "trusted"];

/// The longest URL accepted.
const MAX_LEN: usize = 2048;

/// Text that is not a usable cache URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cache URL `{input}`: {problem}")]
pub struct CacheUrlError {
    /// The rejected text.
    pub input: String,
    /// What was wrong, phrased with what was expected.
    pub problem: String,
}

impl CacheUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL without its `?parameters`.
    pub fn base(&self) -> &str {
        self.0.split_once('?').map_or(self.0.as_str(), |(base, _)| base)
    }

    /// Whether the URL already has `?parameters`.
    pub fn has_params(&self) -> bool {
        self.0.contains('?')
    }

    /// Whether the URL sets the store parameter `name`.
    pub fn has_param(&self, name: &str) -> bool {
        params(&self.0).any(|(key, _)| key == name)
    }

    /// For `file://` caches: the directory (a local path, or a network file system
    /// mounted on every host).
    pub fn file_dir(&self) -> Option<&str> {
        self.base().strip_prefix("file://")
    }
}

/// The `key=value` pairs after `?`.
fn params(url: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn check(s: &str) -> Result<(), String> {
    if s.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} characters"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it must not contain whitespace or control characters".into());
    }
    if s.contains('#') {
        return Err("it must not contain `#`".into());
    }
    let Some(scheme) = CACHE_SCHEMES.iter().find(|scheme| s.starts_with(**scheme)) else {
        return Err(format!("expected a binary cache URL starting with {}", CACHE_SCHEMES.join(", ")));
    };
    let base = s.split_once('?').map_or(s, |(base, _)| base);
    let rest = &base[scheme.len()..];
    if *scheme == "file://" {
        if !rest.starts_with('/') || rest.len() < 2 {
            return Err("a file:// cache needs an absolute directory, like file:///var/cache/fleet".into());
        }
        if rest.split('/').any(|c| c == "..") {
            return Err("a file:// cache path must not contain `..`".into());
        }
    } else if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{scheme}` must be followed by a host or bucket name"));
    }
    for (key, _) in params(s) {
        if RESERVED_PARAMS.contains(&key) {
            return Err(format!(
                "the store parameter `{key}` is not allowed here (hostctl signs with the fleet key; agents \
                 accept only paths signed by keys they trust)"
            ));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("`{key}` is not a store parameter name"));
        }
    }
    Ok(())
}

impl FromStr for CacheUrl {
    type Err = CacheUrlError;

    fn from_str(s: &str) -> Result<Self, CacheUrlError> {
        check(s).map_err(|problem| CacheUrlError { input: s.to_owned(), problem })?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

crate::ids::serde_via_str!(CacheUrl, "binary cache URL");

impl JsonSchema for CacheUrl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CacheUrl".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Nix binary cache URL: file:///absolute/dir, http(s)://host/path or s3://bucket, \
                            optionally with store parameters (?compression=zstd); not `secret-key` or `trusted`.",
            "type": "string",
            "maxLength": MAX_LEN,
            "pattern": "^(file:///[^?\\s#]|(https?|s3)://[^/?\\s#])[^\\s#]*$"
        })
    }
}

/// `cache:` in fleet.yaml: `hostctl apply` pushes the built closures once to `url`
/// (signed with the fleet key) and the agents fetch them from `substituter`, instead of
/// each receiving a stream from the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a cache mapping with `url`")]
pub struct FleetCache {
    /// Where `hostctl apply` copies the closures to (`nix copy --to`).
    pub url: CacheUrl,
    /// What the agents fetch from, when it differs from `url` (e.g. the controller
    /// writes `s3://fleet-cache` and hosts read `https://fleet-cache.example.com`); each
    /// agent must list it in its `caches`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substituter: Option<CacheUrl>,
}

impl FleetCache {
    /// The URL agents fetch from.
    pub fn substituter(&self) -> &CacheUrl {
        self.substituter.as_ref().unwrap_or(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_binary_cache_urls() {
        for ok in [
            "file:///var/cache/fleet",
            "file:///tmp/x?compression=zstd",
            "https://cache.example.com",
            "http://198.51.100.1:8080/fleet",
            "s3://fleet-cache?region=eu-west-1&compression=zstd",
        ] {
            let url: CacheUrl = ok.parse().unwrap();
            assert_eq!(url.to_string(), ok);
        }
        let url: CacheUrl = "file:///tmp/x?compression=zstd".parse().unwrap();
        assert_eq!((url.base(), url.file_dir()), ("file:///tmp/x", Some("/tmp/x")));
        assert!(url.has_param("compression") && !url.has_param("region") && url.has_params());
        let s3: CacheUrl = "s3://b".parse().unwrap();
        assert_eq!(s3.file_dir(), None);
    }

    #[test]
    fn refuses_what_is_not_one() {
        for (bad, want) in [
            ("", "expected a binary cache URL"),
            ("/var/cache/fleet", "expected a binary cache URL"),
            ("ssh-ng://root@cache", "expected a binary cache URL"),
            ("--to=x", "expected a binary cache URL"),
            ("file://relative", "absolute directory"),
            ("file:///", "absolute directory"),
            ("file:///a/../etc", "`..`"),
            ("https://", "host or bucket"),
            ("s3:///x", "host or bucket"),
            ("https://c.example.com/a b", "whitespace"),
            ("https://c.example.com/#x", "`#`"),
            ("file:///c?secret-key=/k", "`secret-key` is not allowed"),
            ("https://c?trusted=1", "`trusted` is not allowed"),
            ("https://c?a;b=1", "not a store parameter name"),
        ] {
            let err = bad.parse::<CacheUrl>().unwrap_err();
            assert!(err.to_string().contains(want), "{bad}: {err}");
            assert!(err.to_string().starts_with(&format!("invalid cache URL `{bad}`")), "{err}");
        }
        assert!("https://x/".repeat(300).parse::<CacheUrl>().is_err());
    }

    #[test]
    fn fleet_cache_substituter_defaults_to_url() {
        let c: FleetCache = serde_json::from_str(r#"{"url": "s3://b"}"#).unwrap();
        assert_eq!(c.substituter().as_str(), "s3://b");
        let c: FleetCache = serde_json::from_str(r#"{"url": "s3://b", "substituter": "https://c"}"#).unwrap();
        assert_eq!(c.substituter().as_str(), "https://c");
        assert!(serde_json::from_str::<FleetCache>(r#"{"url": "ftp://x"}"#).is_err());
    }
}
