//! Nix's JSON output, parsed into types, for every Nix version hostctl supports, and the
//! typed operations built on [`NixCommand`] + [`Nix`].

use std::collections::BTreeMap;

use hostctl_schemas::ids::{AttrName, StorePath};
use hostctl_schemas::key::PublicKey;
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

/// What `nix flake metadata --json` says about a locked flake: its source in the store
/// and the identity Nix hands its outputs as `self` (`rev`, `lastModified`, `narHash`,
/// `revCount`; absent for sources that lack them, e.g. a dirty tree has no `rev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeMetadata {
    pub path: StorePath,
    pub rev: Option<String>,
    pub last_modified: Option<u64>,
    pub nar_hash: Option<String>,
    pub rev_count: Option<u64>,
}

#[derive(Deserialize)]
struct RawFlakeMetadata {
    path: String,
    #[serde(default)]
    locked: RawLocked,
}

#[derive(Default, Deserialize)]
struct RawLocked {
    rev: Option<String>,
    #[serde(rename = "lastModified")]
    last_modified: Option<u64>,
    #[serde(rename = "narHash")]
    nar_hash: Option<String>,
    #[serde(rename = "revCount")]
    rev_count: Option<u64>,
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
/// with a `path` key (`"valid": false` for invalid paths); from 2.19 an object keyed by
/// path, with `null` for invalid paths. Invalid paths are left out in both cases. References and the
/// deriver are full store paths in both, but later Nix may print base names: both are
/// normalised to full paths under `store_dir`.
pub fn parse_path_info(json: &[u8], store_dir: &str) -> Result<Vec<PathInfo>, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let entries: Vec<(Option<String>, Value)> = match value {
        Value::Array(items) => items.into_iter().map(|v| (None, v)).collect(),
        Value::Object(map) => map.into_iter().map(|(k, v)| (Some(k), v)).collect(),
        other => return Err(format!("expected a JSON array or object, found {}", kind(&other))),
    };
    let full = |p: String| full_path(store_dir, p);
    let mut infos = Vec::with_capacity(entries.len());
    for (key, v) in entries {
        if v.is_null() || v.get("valid") == Some(&Value::Bool(false)) {
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

/// A store path as printed by Nix, made absolute: newer Nix may print base names.
fn full_path(store_dir: &str, p: String) -> String {
    if p.starts_with('/') {
        p
    } else {
        format!("{store_dir}/{p}")
    }
}

/// One store derivation as `nix show-derivation` (Nix < 2.15) or `nix derivation show`
/// prints it: the parts hostctl reads. Paths are full store paths whatever Nix printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    /// The `.drv` file.
    pub path: String,
    pub system: String,
    pub builder: String,
    /// Output name -> output path; `None` where the path is only known after the build
    /// (content-addressed derivations).
    pub outputs: BTreeMap<String, Option<String>>,
    /// The `.drv` files this one needs. Which of their outputs it needs is left out: that
    /// part changed shape (2.8: a list; 2.26: `{"outputs": [...], "dynamicOutputs": {}}`).
    pub input_drvs: Vec<String>,
}

#[derive(Deserialize)]
struct RawDerivation {
    system: String,
    builder: String,
    #[serde(default)]
    outputs: BTreeMap<String, RawDerivationOutput>,
    #[serde(default, rename = "inputDrvs")]
    input_drvs: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawDerivationOutput {
    path: Option<String>,
}

/// Parses `nix show-derivation` / `nix derivation show` output: an object keyed by `.drv`
/// path (full paths in 2.8 and 2.26; base names are accepted too, as for path-info).
pub fn parse_derivations(json: &[u8], store_dir: &str) -> Result<Vec<Derivation>, String> {
    let value: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err(format!("expected a JSON object keyed by .drv path, found {}", kind(&value)));
    };
    let mut drvs = Vec::with_capacity(map.len());
    for (key, v) in map {
        let raw: RawDerivation = serde_json::from_value(v).map_err(|e| format!("{key}: {e}"))?;
        drvs.push(Derivation {
            path: full_path(store_dir, key),
            system: raw.system,
            builder: raw.builder,
            outputs: raw.outputs.into_iter().map(|(name, o)| (name, o.path.map(|p| full_path(store_dir, p)))).collect(),
            input_drvs: raw.input_drvs.into_keys().map(|p| full_path(store_dir, p)).collect(),
        });
    }
    Ok(drvs)
}

/// Parses `nix flake metadata --json` (the same keys in Nix 2.8 and 2.26).
pub fn parse_flake_metadata(json: &[u8]) -> Result<FlakeMetadata, String> {
    let raw: RawFlakeMetadata = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let path = raw.path.parse::<StorePath>().map_err(|e| format!("path: {e}"))?;
    let l = raw.locked;
    Ok(FlakeMetadata { path, rev: l.rev, last_modified: l.last_modified, nar_hash: l.nar_hash, rev_count: l.rev_count })
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
        self.eval_toplevel_wrapped(&[], flake, attr).await
    }

    /// [`Nix::eval_toplevel`] run under `wrapper` (see [`Nix::run_wrapped`]): the same
    /// evaluation, observed from outside (incremental evaluation traces it).
    pub async fn eval_toplevel_wrapped(
        &self,
        wrapper: &[String],
        flake: &FlakeRef,
        attr: &AttrName,
    ) -> Result<Toplevel, NixError> {
        let cmd = NixCommand::eval_toplevel(flake, attr);
        let out = self.run_wrapped(wrapper, &cmd).await?;
        let raw: RawToplevel =
            serde_json::from_slice(&out.stdout).map_err(|e| self.bad_output(&cmd, e.to_string(), &out.stdout))?;
        let path = |p: &str| p.parse::<StorePath>().map_err(|e| self.bad_output(&cmd, e.to_string(), &out.stdout));
        Ok(Toplevel { drv_path: path(&raw.drv_path)?, out_path: path(&raw.out_path)?, system: raw.system })
    }

    /// `nix flake metadata` of `flake` (see [`NixCommand::flake_metadata`]).
    pub async fn flake_metadata(&self, flake: &FlakeRef) -> Result<FlakeMetadata, NixError> {
        let cmd = NixCommand::flake_metadata(flake);
        let out = self.run(&cmd).await?;
        parse_flake_metadata(&out.stdout).map_err(|problem| self.bad_output(&cmd, problem, &out.stdout))
    }

    /// The names under `nixosConfigurations`.
    pub async fn list_configurations(&self, flake: &FlakeRef) -> Result<Vec<String>, NixError> {
        self.run_json(&NixCommand::list_configurations(flake)).await
    }

    /// Builds all outputs of `drvs` in one invocation. On failure the error holds the
    /// combined stderr; callers find out which outputs exist with [`Nix::path_info`].
    pub async fn build_outputs(&self, drvs: &[StorePath]) -> Result<Vec<BuildResult>, NixError> {
        let version = self.version().await?;
        self.run_json(&NixCommand::build_outputs_on(version, drvs, self.builders())).await
    }

    /// Copies the closures of `paths` to the store at `store_url` (`nix copy --to`).
    pub async fn copy_to(&self, store_url: &str, paths: &[StorePath]) -> Result<(), NixError> {
        self.run(&NixCommand::copy_to(store_url, paths)).await.map(|_| ())
    }

    /// Copies the closures of `paths` from the store at `store_url` into this handle's
    /// store, accepting only paths signed by one of `trusted_keys` (see
    /// [`NixCommand::copy_from`]).
    pub async fn copy_from(
        &self,
        store_url: &str,
        paths: &[StorePath],
        trusted_keys: &[PublicKey],
    ) -> Result<(), NixError> {
        self.run(&NixCommand::copy_from(store_url, paths, trusted_keys)).await.map(|_| ())
    }

    /// Runs `nix flake update` on the flake in `dir` (see [`NixCommand::flake_update`]).
    pub async fn flake_update(&self, dir: &str) -> Result<(), NixError> {
        let version = self.version().await?;
        self.run(&NixCommand::flake_update(version, dir)).await.map(|_| ())
    }

    /// Which of `paths` are not valid in the store.
    pub async fn invalid_paths(&self, paths: &[StorePath]) -> Result<Vec<String>, NixError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.run(&NixCommand::check_validity(paths)).await?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// The closure of `paths` in Nix's order (for a `.drv`: every derivation and source it
    /// needs; no paths: empty).
    pub async fn requisites(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, NixError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = NixCommand::query_requisites(paths);
        let out = self.run(&cmd).await?;
        store_path_lines(self, &cmd, &out.stdout)
    }

    /// Starts `nix-store --export` of `paths`; read the stream from
    /// [`NixStdout::stdout`](crate::runner::NixStdout::stdout), then `finish()` it.
    pub fn export(&self, paths: &[StorePath]) -> Result<crate::runner::NixStdout, NixError> {
        self.spawn_stdout(&NixCommand::export(paths))
    }

    /// Metadata of the given valid paths (and their closure if `recursive`).
    pub async fn path_info(&self, paths: &[StorePath], recursive: bool) -> Result<Vec<PathInfo>, NixError> {
        let cmd = NixCommand::path_info(paths, recursive);
        let out = self.run(&cmd).await?;
        parse_path_info(&out.stdout, "/nix/store").map_err(|problem| self.bad_output(&cmd, problem, &out.stdout))
    }

    /// The store derivation `drv` (which must be valid in the store).
    pub async fn show_derivation(&self, drv: &StorePath) -> Result<Derivation, NixError> {
        let version = self.version().await?;
        let cmd = NixCommand::show_derivation(version, drv);
        let out = self.run(&cmd).await?;
        let drvs = parse_derivations(&out.stdout, "/nix/store")
            .map_err(|problem| self.bad_output(&cmd, problem, &out.stdout))?;
        drvs.into_iter()
            .find(|d| d.path == drv.as_str())
            .ok_or_else(|| self.bad_output(&cmd, format!("it does not show {drv}"), &out.stdout))
    }
}

/// Store paths from Nix's one-a-line output; anything else is a bad-output error.
pub(crate) fn store_path_lines<C: FromIterator<StorePath>>(
    nix: &Nix,
    cmd: &NixCommand,
    stdout: &[u8],
) -> Result<C, NixError> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse::<StorePath>().map_err(|e| nix.bad_output(cmd, e.to_string(), stdout)))
        .collect()
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
    fn path_info_invalid_paths_from_nix_2_8_are_skipped() {
        let json = r#"[{"path":"/nix/store/00000000000000000000000000000000-nope","valid":false}]"#;
        assert!(parse_path_info(json.as_bytes(), "/nix/store").unwrap().is_empty());
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

    const DRV: &str = "/nix/store/5ccspxd2jmnywax2qs3rwhiig18kcx2y-nixos-system-web1-24.05-example.drv";
    const ETC_DRV: &str = "/nix/store/qsjpp0icnyia039z4zdyc7qf525av4hh-etc.drv";

    #[test]
    fn show_derivation_from_nix_2_8() {
        // Trimmed `nix show-derivation` output of Nix 2.8.0 (env left out).
        let json = format!(
            r#"{{"{DRV}":{{"outputs":{{"out":{{"path":"{P}"}}}},"inputSrcs":["/nix/store/a11dp0c4bhx13mdd36z2g7dan64wvkq6-toplevel.sh"],"inputDrvs":{{"{ETC_DRV}":["out"]}},"system":"x86_64-linux","builder":"/bin/sh","args":["-eu"],"env":{{}}}}}}"#
        );
        let drvs = parse_derivations(json.as_bytes(), "/nix/store").unwrap();
        assert_eq!(drvs.len(), 1);
        assert_eq!(drvs[0].path, DRV);
        assert_eq!(drvs[0].system, "x86_64-linux");
        assert_eq!(drvs[0].builder, "/bin/sh");
        assert_eq!(drvs[0].outputs["out"].as_deref(), Some(P));
        assert_eq!(drvs[0].input_drvs, [ETC_DRV]);
    }

    #[test]
    fn show_derivation_from_nix_2_26() {
        // Trimmed `nix derivation show` output of Nix 2.26.3: adds `name`, and inputDrvs
        // values are objects; a content-addressed output has no path (base names accepted).
        let json = format!(
            r#"{{"{DRV}":{{"args":["-eu"],"builder":"/bin/sh","env":{{}},"inputDrvs":{{"qsjpp0icnyia039z4zdyc7qf525av4hh-etc.drv":{{"dynamicOutputs":{{}},"outputs":["out"]}}}},"inputSrcs":[],"name":"x","outputs":{{"out":{{"path":"{P}"}},"dev":{{"hashAlgo":"sha256","method":"nar"}}}},"system":"aarch64-linux"}}}}"#
        );
        let drvs = parse_derivations(json.as_bytes(), "/nix/store").unwrap();
        assert_eq!(drvs[0].path, DRV);
        assert_eq!(drvs[0].system, "aarch64-linux");
        assert_eq!(drvs[0].outputs["out"].as_deref(), Some(P));
        assert_eq!(drvs[0].outputs["dev"], None);
        assert_eq!(drvs[0].input_drvs, [ETC_DRV]);
        assert!(parse_derivations(b"[]", "/nix/store").unwrap_err().contains("an array"));
    }

    #[test]
    fn flake_metadata_from_nix_2_8() {
        // Trimmed `nix flake metadata --json` of a clean git flake, Nix 2.8.0.
        let json = br#"{"description":"hostctl example fleet","lastModified":1795263015,"locked":{"lastModified":1795263015,"narHash":"sha256-a37SXv1QzcCzsLL8fKCX6isIWlc/SI2ZImuPq40RaKI=","ref":"main","rev":"fa370957d87f8fdbb2048660b6b09c2c63d5f787","revCount":1,"type":"git","url":"file:///tmp/f"},"path":"/nix/store/dz03myap4kl7dpw3hrwqw4r7013nw1fc-source","revision":"fa370957d87f8fdbb2048660b6b09c2c63d5f787"}"#;
        let m = parse_flake_metadata(json).unwrap();
        assert_eq!(m.path.as_str(), "/nix/store/dz03myap4kl7dpw3hrwqw4r7013nw1fc-source");
        assert_eq!(m.rev.as_deref(), Some("fa370957d87f8fdbb2048660b6b09c2c63d5f787"));
        assert_eq!((m.last_modified, m.rev_count), (Some(1795263015), Some(1)));
        assert_eq!(m.nar_hash.as_deref(), Some("sha256-a37SXv1QzcCzsLL8fKCX6isIWlc/SI2ZImuPq40RaKI="));
        let dirty = parse_flake_metadata(
            br#"{"path":"/nix/store/dz03myap4kl7dpw3hrwqw4r7013nw1fc-source","locked":{"type":"git"}}"#,
        )
        .unwrap();
        assert_eq!(dirty.rev, None);
        assert!(parse_flake_metadata(br#"{"path":"/tmp/x"}"#).unwrap_err().starts_with("path:"));
    }

    #[test]
    fn path_info_rejects_other_shapes() {
        assert!(parse_path_info(b"42", "/nix/store").unwrap_err().contains("a number"));
        assert!(parse_path_info(b"[{}]", "/nix/store").is_err());
    }
}
