//! Per-host results and how they are printed: one JSON document with `--json`, a plain
//! table otherwise. The exit code is derived from the results here, nowhere else.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::EXIT_FAILED;

/// The `result` of one host: DESIGN.md's deployment values (`activated`, `unchanged`,
/// `failed`, `rolled-back`, `skipped`); the read-only commands extend the set with
/// `evaluated`, `built` and `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// One host's entry in the report.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub result: HostResult,
    pub rev: Option<String>,
    pub lock: Option<String>,
    pub toplevel: Option<String>,
    pub error: Option<String>,
    /// Command-specific fields (e.g. `drv_path`, `system`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The human line's text after the result, when the command has more to say than
    /// the toplevel (e.g. `status`, `apply`); not part of the JSON.
    #[serde(skip)]
    pub summary: Option<String>,
    /// Lines printed below the host's line, indented (e.g. `history`'s table); not JSON.
    #[serde(skip)]
    pub body: Option<String>,
}

impl HostReport {
    pub fn new(result: HostResult, rev: Option<String>, lock: Option<String>) -> Self {
        Self { result, rev, lock, toplevel: None, error: None, extra: Map::new(), summary: None, body: None }
    }

    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

/// A command's result: one entry per selected host, plus command-level fields.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub hosts: BTreeMap<String, HostReport>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Findings that make the command fail even if every host succeeded (e.g. `check`).
    #[serde(skip)]
    pub failed: bool,
}

impl Report {
    /// `0` if every host succeeded, `1` if any failed.
    pub fn exit_code(&self) -> u8 {
        if self.failed || self.hosts.values().any(|h| h.result.is_failure()) {
            EXIT_FAILED
        } else {
            0
        }
    }

    /// Prints the report: JSON on stdout, or a line per host (errors indented below).
    pub fn print(&self, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
        if json {
            serde_json::to_writer_pretty(&mut *out, self)?;
            return writeln!(out);
        }
        let width = self.hosts.keys().map(String::len).max().unwrap_or(0);
        for (name, host) in &self.hosts {
            let detail = host
                .summary
                .as_deref()
                .or_else(|| {
                    host.extra.get("drv_path").and_then(Value::as_str).filter(|_| host.result == HostResult::Evaluated)
                })
                .or(host.toplevel.as_deref())
                .unwrap_or("");
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
            if let Some(log) = host.extra.get("log_tail").and_then(Value::as_str).filter(|l| !l.trim().is_empty()) {
                writeln!(out, "{:width$}    activation log (tail):", "")?;
                for line in log.lines() {
                    writeln!(out, "{:width$}      {line}", "")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_and_json_shape() {
        let mut report = Report::default();
        let ok = HostReport::new(HostResult::Evaluated, Some("abc".into()), None).field("drv_path", "/nix/store/x.drv");
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

        let mut buf = Vec::new();
        report.print(false, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("web1  evaluated  /nix/store/x.drv"), "{text}");
        assert!(text.contains("      second line"), "{text}");
    }
}
