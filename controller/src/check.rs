//! `hostctl check`: lints the fleet without building or changing anything — inventory vs
//! `nixosConfigurations`, git state Nix would trip over, and `flake.lock` hygiene.

use std::collections::BTreeSet;

use hostctl_nix::Nix;
use schemars::JsonSchema;
use serde::Serialize;

use crate::context::FleetContext;
use crate::error::Error;
use crate::flake_nix;
use crate::report::{Extra, HostReport, HostResult, NoFields, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing `check` found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Finding {
    pub severity: Severity,
    pub kind: &'static str,
    /// `file:line:column` or `file` when known.
    pub location: Option<String>,
    pub message: String,
}

/// `check`'s command-level fields.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct CheckExtra {
    pub findings: Vec<Finding>,
}

impl Extra for CheckExtra {
    /// The findings, for humans, one per paragraph: `location: severity: message`.
    fn notes(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let location = f.location.as_deref().filter(|l| !l.is_empty());
            let prefix = location.map_or_else(String::new, |l| format!("{l}: "));
            let severity = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            out.push_str(&format!("{prefix}{severity}: {}\n", f.message));
        }
        out
    }
}

/// Runs every check; error-severity findings make the command exit 1.
pub async fn check(ctx: &FleetContext, nix: &Nix) -> Result<Report<NoFields, CheckExtra>, Error> {
    let mut findings = git_findings(ctx);
    findings.extend(lock_findings(ctx));
    let mut report: Report<NoFields, CheckExtra> = Report::default();
    let fleet_file = ctx.fleet_file.display().to_string();
    let configurations: BTreeSet<String> = match nix.list_configurations(&ctx.flake).await {
        Ok(names) => names.into_iter().collect(),
        Err(e) => {
            // The git and lock findings stand on their own: report them, and mark what
            // needed Nix as not checked.
            let message = ctx.local_paths(nix, e.nix_message().map_or(&e.to_string(), str::trim_end)).await;
            findings.push(Finding {
                severity: Severity::Error,
                kind: "eval-failed",
                location: Some(fleet_file),
                message: format!(
                    "cannot list nixosConfigurations of {}, so no host was checked against it:\n{message}",
                    ctx.flake
                ),
            });
            for name in ctx.fleet.hosts.keys() {
                let mut entry = HostReport::base(ctx, HostResult::Failed);
                entry.error = Some(format!("host {name}: not checked: nixosConfigurations could not be evaluated"));
                report.hosts.insert(name.to_string(), entry);
            }
            report.failed = true;
            report.extra.findings = findings;
            return Ok(report);
        }
    };
    let mut used = BTreeSet::new();
    for (name, host) in &ctx.fleet.hosts {
        let attr = host.configuration_attr(name);
        let mut entry = HostReport::base(ctx, HostResult::Ok);
        if !configurations.contains(attr.as_str()) {
            entry.result = HostResult::Failed;
            let message = format!("host {name}: nixosConfigurations.{attr} does not exist in {}", ctx.flake);
            entry.error = Some(message.clone());
            findings.push(Finding {
                severity: Severity::Error,
                kind: "missing-configuration",
                location: Some(fleet_file.clone()),
                message,
            });
        }
        used.insert(attr.as_str().to_owned());
        report.hosts.insert(name.to_string(), entry);
    }
    for extra in configurations.difference(&used) {
        findings.push(Finding {
            severity: Severity::Warning,
            kind: "unlisted-configuration",
            location: Some(fleet_file.clone()),
            message: format!("nixosConfigurations.{extra} is not deployed by any host in the inventory"),
        });
    }
    report.failed = findings.iter().any(|f| f.severity == Severity::Error);
    report.extra.findings = findings;
    Ok(report)
}

fn git_findings(ctx: &FleetContext) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Some(source) = &ctx.source else { return findings };
    let dir = source.dir.display().to_string();
    let Some(git) = &source.git else {
        findings.push(Finding {
            severity: Severity::Warning,
            kind: "not-a-git-repository",
            location: Some(dir),
            message: "the flake is not in a git repository: deployments cannot be tied to a revision".into(),
        });
        return findings;
    };
    if let Some(message) = ctx.untracked_warning() {
        findings.push(Finding {
            severity: Severity::Warning,
            kind: "untracked-files",
            location: Some(dir.clone()),
            message,
        });
    }
    if git.rev.is_none() {
        findings.push(Finding {
            severity: Severity::Warning,
            kind: "no-commit",
            location: Some(dir.clone()),
            message: "the repository has no commit yet".into(),
        });
    }
    if let Some(message) = ctx.dirty_warning() {
        findings.push(Finding { severity: Severity::Warning, kind: "dirty-tree", location: Some(dir), message });
    }
    findings
}

/// More than one nixpkgs in `flake.lock` means an input lacks `inputs.nixpkgs.follows`:
/// each host then evaluates two nixpkgs (slower, more memory, mismatched packages).
fn lock_findings(ctx: &FleetContext) -> Vec<Finding> {
    let (Some(lock), Some(source)) = (&ctx.lock, &ctx.source) else { return Vec::new() };
    let flake_nix_path = source.dir.join("flake.nix");
    let flake_nix = std::fs::read_to_string(&flake_nix_path).unwrap_or_default();
    let root_nixpkgs = if lock.root_inputs().contains_key("nixpkgs") { "nixpkgs" } else { "<your nixpkgs input>" };
    lock.nixpkgs_duplicates()
        .into_iter()
        .map(|dup| {
            let declared = dup.via.first().and_then(|input| flake_nix::find_input(&flake_nix, input));
            let location = match declared {
                Some(p) => format!("{}:{}:{}", flake_nix_path.display(), p.line, p.column),
                None => flake_nix_path.display().to_string(),
            };
            let chain = dup.via.join(" -> ");
            Finding {
                severity: Severity::Error,
                kind: "duplicate-nixpkgs",
                location: Some(location),
                message: format!(
                    "input `{chain}` brings its own nixpkgs (flake.lock node `{}`) instead of following the fleet's; add to flake.nix:\n  {}",
                    dup.node,
                    dup.follows_line(root_nixpkgs)
                ),
            }
        })
        .collect()
}
