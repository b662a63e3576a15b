//! Nix's JSON output, parsed into types, for every Nix version hostctl supports, and the
//! typed operations built on [`NixCommand`] + [`Nix`].

use std::collections::BTreeMap;

use hostctl_schemas::ids::{AttrName, StorePath};
use serde::Deserialize;
use serde_json::Value;

use crate::command::{FlakeRef, NixCommand};
use crate::runner::{Nix, NixError};

/// What `eval_toplevel` returns for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toplevel {
    pub drv_path: StorePath,
    pub out_path: StorePath,
    /// The toplevel derivation's `system`, if it has one.
    pub system: Option<String>,
}

#[derive(Deserialize)]
struct RawToplevel {
    #[serde(rename = "drv")]
    drv_path: String,
    #[serde(rename = "out")]
    out_path: String,
    system: Option<String>,
}

/// One entry of `nix build --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuildResult {
    #[serde(rename = "drvPath")]
    pub drv_path: String,
    pub outputs: BTreeMap<String, String>,
}

/// One store path's metadata from `nix path-info --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub signatures: Vec<String>,
}

#[derive(Deserialize)]
struct RawPathInfo {
    path: Option<String>,
    #[serde(rename = "narHash")]
    nar_hash: String,
    #[serde(rename = "narSize")]
    nar_size: u64,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    #[serde(default)]
    signatures: Vec<String>,
}

/// Parses `nix path-info --json` from any supported Nix: before 2.19 an array of objects
/// with a `path` key; from 2.19 an object keyed by path, with `null` for invalid paths
/// (which are left out here, as older Nix fails on them instead). References and the
/// deriver are full store paths in both, but later Nix may print base names: both are
/// normalised to full paths under `store_dir`.
pub fn parse_path_info(json: &[u8], store_dir: &str) -> Result<Vec<PathInfo>, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let entries: Vec<(Option<String>, Value)> = match value {
        Value::Array(items) => items.into_iter().map(|v| (None, v)).collect(),
        Value::Object(map) => map.into_iter().map(|(k, v)| (Some(k), v)).collect(),
        other => return Err(format!("expected a JSON array or object, found {}", kind(&other))),
    };
    let full = |p: String| if p.starts_with('/') { p } else { format!("{store_dir}/{p}") };
    let mut infos = Vec::with_capacity(entries.len());
    for (key, v) in entries {
        if v.is_null() {
            continue;
        }
        let raw: RawPathInfo = serde_json::from_value(v).map_err(|e| e.to_string())?;
        let path = key.or(raw.path).ok_or("a path-info entry has no path")?;
        infos.push(PathInfo {
            path: full(path),
            nar_hash: raw.nar_hash,
            nar_size: raw.nar_size,
            references: raw.references.into_iter().map(full).collect(),
            deriver: raw.deriver.map(full),
            signatures: raw.signatures,
        });
    }
    Ok(infos)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Nix {
    /// Evaluates one host's toplevel. The error carries Nix's own message.
    pub async fn eval_toplevel(&self, flake: &FlakeRef, attr: &AttrName) -> Result<Toplevel, NixError> {
        let cmd = NixCommand::eval_toplevel(flake, attr);
        let out = self.run(&cmd).await?;
        let raw: RawToplevel =
            serde_json::from_slice(&out.stdout).map_err(|e| self.bad_output(&cmd, e.to_string(), &out.stdout))?;
        let path = |p: &str| p.parse::<StorePath>().map_err(|e| self.bad_output(&cmd, e.to_string(), &out.stdout));
        Ok(Toplevel { drv_path: path(&raw.drv_path)?, out_path: path(&raw.out_path)?, system: raw.system })
    }

    /// The names under `nixosConfigurations`.
    pub async fn list_configurations(&self, flake: &FlakeRef) -> Result<Vec<String>, NixError> {
        self.run_json(&NixCommand::list_configurations(flake)).await
    }

    /// Builds all outputs of `drvs` in one invocation. On failure the error holds the
    /// combined stderr; callers find out which outputs exist with [`Nix::path_info`].
    pub async fn build_outputs(&self, drvs: &[StorePath]) -> Result<Vec<BuildResult>, NixError> {
        let version = self.version().await?;
        self.run_json(&NixCommand::build_outputs(version, drvs)).await
    }

    /// Which of `paths` are not valid in the store.
    pub async fn invalid_paths(&self, paths: &[StorePath]) -> Result<Vec<String>, NixError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.run(&NixCommand::check_validity(paths)).await?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// The closure of `paths` (for a `.drv`: every derivation and source it needs).
    pub async fn requisites(&self, paths: &[StorePath]) -> Result<Vec<String>, NixError> {
        let out = self.run(&NixCommand::query_requisites(paths)).await?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// Metadata of the given valid paths (and their closure if `recursive`).
    pub async fn path_info(&self, paths: &[StorePath], recursive: bool) -> Result<Vec<PathInfo>, NixError> {
        let cmd = NixCommand::path_info(paths, recursive);
        let out = self.run(&cmd).await?;
        parse_path_info(&out.stdout, "/nix/store").map_err(|problem| self.bad_output(&cmd, problem, &out.stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x";

    #[test]
    fn path_info_array_form_from_nix_2_8() {
        let json = format!(
            r#"[{{"path":"{P}","narHash":"sha256-EFUd","narSize":120,"references":[],"deriver":"/nix/store/mh3rz2qzm0lrcxk22g2b1kifak7q2nj9-x.drv","registrationTime":1795252433,"ultimate":true}}]"#
        );
        let infos = parse_path_info(json.as_bytes(), "/nix/store").unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].path, P);
        assert_eq!(infos[0].nar_size, 120);
        assert_eq!(infos[0].deriver.as_deref(), Some("/nix/store/mh3rz2qzm0lrcxk22g2b1kifak7q2nj9-x.drv"));
    }

    #[test]
    fn path_info_object_form_from_current_nix() {
        let json = format!(
            r#"{{"{P}":{{"narHash":"sha256-EFUd","narSize":120,"references":["zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x"],"deriver":null,"signatures":["c:abc"]}},"/nix/store/00000000000000000000000000000000-gone":null}}"#
        );
        let infos = parse_path_info(json.as_bytes(), "/nix/store").unwrap();
        assert_eq!(infos.len(), 1, "invalid (null) paths are skipped");
        assert_eq!(infos[0].references, [P]);
        assert_eq!(infos[0].signatures, ["c:abc"]);
        assert_eq!(infos[0].deriver, None);
    }

    #[test]
    fn path_info_rejects_other_shapes() {
        assert!(parse_path_info(b"42", "/nix/store").unwrap_err().contains("a number"));
        assert!(parse_path_info(b"[{}]", "/nix/store").is_err());
    }
}
