//! Per-host results and how they are printed: one JSON document with `--json`, a plain
//! table otherwise, both from the same typed entries. The exit code is derived from the
//! results here, nowhere else.

use std::collections::BTreeMap;
use std::io::Write;

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use crate::context::FleetContext;
use crate::error::EXIT_FAILED;

/// The `result` of one host: DESIGN.md's deployment values (`activated`, `unchanged`,
/// `failed`, `rolled-back`, `skipped`); the read-only commands extend the set with
/// `evaluated`, `built` and `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostResult {
    Activated,
    Unchanged,
    Failed,
    RolledBack,
    Skipped,
    Evaluated,
    Built,
    Ok,
}

impl HostResult {
    /// Every result, in the order the tally line counts them.
    const ALL: [HostResult; 8] = [
        HostResult::Activated,
        HostResult::Unchanged,
        HostResult::Failed,
        HostResult::RolledBack,
        HostResult::Skipped,
        HostResult::Evaluated,
        HostResult::Built,
        HostResult::Ok,
    ];

    fn as_str(self) -> &'static str {
        match self {
            HostResult::Activated => "activated",
            HostResult::Unchanged => "unchanged",
            HostResult::Failed => "failed",
            HostResult::RolledBack => "rolled-back",
            HostResult::Skipped => "skipped",
            HostResult::Evaluated => "evaluated",
            HostResult::Built => "built",
            HostResult::Ok => "ok",
        }
    }

    /// Exit code 1: the host failed, or its deployment was rolled back. A `skipped` host
    /// is not a failure of its own (the failure that stopped the rollout is reported).
    fn is_failure(self) -> bool {
        matches!(self, HostResult::Failed | HostResult::RolledBack)
    }
}

/// What a command adds to each host's entry: one struct (or an untagged enum) per
/// command, flattened after the common fields.
pub trait Fields: Serialize + JsonSchema {
    /// An activation's output, printed below a failed host's line (`apply`, `rollback`).
    fn log_tail(&self) -> Option<&str> {
        None
    }
}

/// Command-level fields next to `hosts` (e.g. `check`'s `findings`).
pub trait Extra: Serialize + JsonSchema {
    /// Text for stderr after the human report (`check`'s findings).
    fn notes(&self) -> String {
        String::new()
    }
}

/// No command-specific fields (`check`'s entries; a report without command-level fields).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct NoFields {}

impl Fields for NoFields {}
impl Extra for NoFields {}

/// One host's entry in the report: the fields every command has, then the command's own.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(bound(serialize = "E: Serialize"))]
pub struct HostReport<E> {
    pub result: HostResult,
    /// The flake revision (a commit, `-dirty` when the tree had changes).
    pub rev: Option<String>,
    /// The flake lock's id.
    pub lock: Option<String>,
    /// The NixOS system (toplevel store path).
    pub toplevel: Option<String>,
    /// Why the host failed, when it did.
    pub error: Option<String>,
    /// The command's fields; absent when the host failed before they could exist
    /// (e.g. `build`'s `drv_path` when the evaluation failed). Written in sorted key
    /// order, as they were when entries were maps.
    #[serde(flatten, serialize_with = "sorted")]
    pub fields: Option<E>,
    /// The human line's text after the result, when the command has more to say than
    /// the toplevel (e.g. `status`, `apply`); not part of the JSON.
    #[serde(skip)]
    pub summary: Option<String>,
    /// Lines printed below the host's line, indented (e.g. `history`'s table); not JSON.
    #[serde(skip)]
    pub body: Option<String>,
}

impl<E> HostReport<E> {
    pub fn new(result: HostResult, rev: Option<String>, lock: Option<String>) -> Self {
        Self { result, rev, lock, toplevel: None, error: None, fields: None, summary: None, body: None }
    }

    /// An entry with the fleet's current revision and lock.
    pub fn base(ctx: &FleetContext, result: HostResult) -> Self {
        Self::new(result, ctx.rev(), ctx.lock_id().map(ToString::to_string))
    }

    /// A host that failed with `message`, before any command-specific fields existed.
    pub fn failed(ctx: &FleetContext, message: String) -> Self {
        Self { error: Some(message), ..Self::base(ctx, HostResult::Failed) }
    }

    pub fn with(mut self, fields: E) -> Self {
        self.fields = Some(fields);
        self
    }
}

/// A command's result: one entry per selected host, plus command-level fields.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(bound(serialize = "E: Serialize, X: Serialize"))]
pub struct Report<E, X = NoFields> {
    pub hosts: BTreeMap<String, HostReport<E>>,
    /// Written after `hosts`, in sorted key order.
    #[serde(flatten, serialize_with = "sorted")]
    pub extra: X,
    /// Findings that make the command fail even if every host succeeded (e.g. `check`).
    #[serde(skip)]
    pub failed: bool,
    /// Whether the human output ends with a tally of the results on stderr
    /// (`3 activated, 1 unchanged, 1 failed`): commands that act on many hosts at once.
    #[serde(skip)]
    pub tally: bool,
}

impl<E, X: Default> Default for Report<E, X> {
    fn default() -> Self {
        Self { hosts: BTreeMap::new(), extra: X::default(), failed: false, tally: false }
    }
}

impl<E, X> Report<E, X> {
    /// `3 activated, 1 unchanged, 1 failed`: the non-zero counts, in [`HostResult`]'s
    /// order; empty when there are no hosts.
    pub fn tally_line(&self) -> String {
        let counts = HostResult::ALL.iter().filter_map(|&result| {
            let n = self.hosts.values().filter(|h| h.result == result).count();
            (n > 0).then(|| format!("{n} {}", result.as_str()))
        });
        counts.collect::<Vec<_>>().join(", ")
    }
}

/// A finished command's report, whatever its entry type: what `main` prints.
pub trait Printable {
    /// `0` if every host succeeded, `1` if any failed.
    fn exit_code(&self) -> u8;
    /// Prints the report: JSON on stdout, or a line per host (errors indented below).
    fn print(&self, json: bool, out: &mut dyn Write) -> std::io::Result<()>;
    /// What goes to stderr after the human report.
    fn notes(&self) -> String;
}

impl<E: Fields, X: Extra> Printable for Report<E, X> {
    fn exit_code(&self) -> u8 {
        if self.failed || self.hosts.values().any(|h| h.result.is_failure()) {
            EXIT_FAILED
        } else {
            0
        }
    }

    fn print(&self, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
        if json {
            serde_json::to_writer_pretty(&mut *out, self)?;
            return writeln!(out);
        }
        let width = self.hosts.keys().map(String::len).max().unwrap_or(0);
        for (name, host) in &self.hosts {
            let detail = host.summary.as_deref().or(host.toplevel.as_deref()).unwrap_or("");
            let line = format!("{name:width$}  {:<9}  {detail}", host.result.as_str());
            writeln!(out, "{}", line.trim_end())?;
            if let Some(error) = &host.error {
                for line in error.lines() {
                    writeln!(out, "{:width$}    {line}", "")?;
                }
            }
            for line in host.body.iter().flat_map(|b| b.lines()) {
                writeln!(out, "{}", format!("  {line}").trim_end())?;
            }
            // An activation's output explains its failure; `apply` puts it here.
            let log = host.fields.as_ref().and_then(Fields::log_tail).filter(|l| !l.trim().is_empty());
            if let Some(log) = log {
                writeln!(out, "{:width$}    activation log (tail):", "")?;
                for line in log.lines() {
                    writeln!(out, "{:width$}      {line}", "")?;
                }
            }
        }
        Ok(())
    }

    fn notes(&self) -> String {
        let mut notes = self.extra.notes();
        let tally = self.tally_line();
        if self.tally && !tally.is_empty() {
            notes.push_str(&tally);
            notes.push('\n');
        }
        notes
    }
}

/// A revision as human output shows it: the commit's first 12 characters, keeping the
/// `-dirty` mark the JSON has (`1a2b3c4d5e6f-dirty`).
pub fn short_rev(rev: &str) -> String {
    let (sha, dirty) = rev.strip_suffix("-dirty").map_or((rev, ""), |s| (s, "-dirty"));
    format!("{}{dirty}", sha.chars().take(12).collect::<String>())
}

/// Serializes `value` through [`serde_json::Value`], whose maps are sorted: nested
/// objects keep the key order `--json` has always had, while the field stays typed
/// (and so in the JSON Schema).
pub fn sorted<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value).map_err(serde::ser::Error::custom)?.serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[derive(Debug, Serialize, JsonSchema)]
    struct Drv {
        drv_path: String,
    }

    impl Fields for Drv {}

    #[test]
    fn exit_code_and_json_shape() {
        let mut report: Report<Drv> = Report::default();
        let mut ok = HostReport::new(HostResult::Evaluated, Some("abc".into()), None)
            .with(Drv { drv_path: "/nix/store/x.drv".into() });
        ok.summary = Some("/nix/store/x.drv".into());
        report.hosts.insert("web1".into(), ok);
        assert_eq!(report.exit_code(), 0);
        let mut bad = HostReport::new(HostResult::Failed, None, None);
        bad.error = Some("boom\nsecond line".into());
        report.hosts.insert("web2".into(), bad);
        assert_eq!(report.exit_code(), 1);

        let mut buf = Vec::new();
        report.print(true, &mut buf).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["hosts"]["web1"]["result"], "evaluated");
        assert_eq!(v["hosts"]["web1"]["drv_path"], "/nix/store/x.drv");
        assert_eq!(v["hosts"]["web2"]["error"], "boom\nsecond line");
        assert!(v["hosts"]["web1"]["error"].is_null());
        assert!(v["hosts"]["web2"].get("drv_path").is_none(), "no fields: the keys are absent");
        let keys: Vec<&str> = v["hosts"]["web1"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["drv_path", "error", "lock", "result", "rev", "toplevel"]);

        let mut buf = Vec::new();
        report.print(false, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("web1  evaluated  /nix/store/x.drv"), "{text}");
        assert!(text.contains("      second line"), "{text}");
        assert_eq!(report.notes(), "", "no tally unless the command asks for one");
    }

    #[test]
    fn short_revs_keep_the_dirty_mark() {
        let sha = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d";
        assert_eq!(short_rev(sha), "1a2b3c4d5e6f");
        assert_eq!(short_rev(&format!("{sha}-dirty")), "1a2b3c4d5e6f-dirty");
        assert_eq!(short_rev("abc-dirty"), "abc-dirty");
    }

    #[test]
    fn the_tally_counts_non_zero_results_in_a_fixed_order() {
        let mut report: Report<Drv> = Report { tally: true, ..Report::default() };
        assert_eq!(report.notes(), "", "no hosts, no tally");
        for (name, result) in [
            ("a", HostResult::Failed),
            ("b", HostResult::Unchanged),
            ("c", HostResult::Activated),
            ("d", HostResult::Activated),
            ("e", HostResult::Activated),
        ] {
            report.hosts.insert(name.into(), HostReport::new(result, None, None));
        }
        assert_eq!(report.notes(), "3 activated, 1 unchanged, 1 failed\n");
        let mut buf = Vec::new();
        report.print(true, &mut buf).unwrap();
        assert!(!String::from_utf8(buf).unwrap().contains("activated,"), "not in the JSON");
    }
}
