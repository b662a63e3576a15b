//! `hostctl apply`: eval -> build -> per batch, per host in parallel: push the closure,
//! activate, wait, health gate, confirm. `--dry-run` stops after asking each host what
//! it lacks.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::ids::HostName;
use hostctl_schemas::inventory::{Batch, Mode, RebootPolicy};
use hostctl_schemas::text::plural;
use schemars::JsonSchema;
use serde::Serialize;

use crate::cache::{ViaCache, ViaCacheReport};
use crate::client::HttpHost;
use crate::commit_policy::{self, Checked};
use crate::context::FleetContext;
use crate::deploy::{DeploySettings, Outcome, Step};
use crate::deploy_report::{self, OutcomeFields};
use crate::error::Error;
use crate::host::Host;
use crate::pipeline::{eval_and_build, Built, EvalOptions, Failure};
use crate::push::NixStore;
use crate::report::{Extra, Fields, HostReport, HostResult, Report};
use crate::rollout::{dry_run, roll_out, Plan, Policy, Target};
use crate::select::Selection;
use crate::{health, progress, Output};

/// `apply`'s options, defaults from the fleet file already applied.
#[derive(Debug)]
pub struct ApplyOptions {
    pub eval: EvalOptions,
    pub selection: Selection,
    pub mode: Mode,
    pub batch: Batch,
    pub max_failures: u32,
    /// Hosts deployed at once within a batch.
    pub parallel: usize,
    pub dry_run: bool,
    /// The binary cache the agents fetch from; never set with `dry_run`.
    pub via_cache: Option<ViaCache>,
    /// Show each host's diff and ask first (`yes`: without asking).
    pub diff: bool,
    pub yes: bool,
    /// Deploy a commit the signature policy refuses (recorded on each host).
    pub allow_unsigned: bool,
    /// `--reboot`: hosts without a `reboot` setting reboot if needed.
    pub reboot: bool,
    /// How long a rebooting host has to come back.
    pub reboot_timeout: hostctl_schemas::duration::Duration,
}

/// An `apply` entry's own fields: how the deployment went, or with `--dry-run` what it
/// would do. (A dry run reports hosts that failed to evaluate or build as deployments.)
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ApplyFields {
    Deployed(Box<DeployedFields>),
    Planned(PlannedFields),
}

impl Fields for ApplyFields {
    fn log_tail(&self) -> Option<&str> {
        match self {
            ApplyFields::Deployed(d) => d.outcome.log_tail.as_deref(),
            ApplyFields::Planned(_) => None,
        }
    }
}

/// A deployed (or failed) host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployedFields {
    /// The batch (1-based) the host was in; null when it never reached one.
    pub batch: Option<usize>,
    #[serde(flatten)]
    pub outcome: OutcomeFields,
}

/// What `--dry-run` found for a host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlannedFields {
    pub batch: Option<usize>,
    pub bytes_to_copy: u64,
    pub paths_to_copy: u64,
    /// `unchanged` or `activate`; null when the plan could not be made.
    pub plan: Option<&'static str>,
    pub previous_toplevel: Option<String>,
    pub step: Option<&'static str>,
}

/// `apply`'s command-level fields.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct ApplyExtra {
    pub dry_run: bool,
    /// The activation mode used.
    pub mode: &'static str,
    /// The binary cache the closures went through (`--via-cache`), if any.
    pub via_cache: Option<ViaCacheReport>,
}

impl Extra for ApplyExtra {}

pub type ApplyReport = Report<ApplyFields, ApplyExtra>;

/// Runs `apply` for the selected hosts. Bad input (key, selectors, inventory) has been
/// reported before anything is evaluated or contacted.
pub async fn apply(
    mut opts: ApplyOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    out: &mut Output,
) -> Result<ApplyReport, Error> {
    let mut settings = DeploySettings::new(opts.mode, ctx.fleet.defaults.confirm_timeout);
    settings.rev = ctx.rev();
    settings.lock = ctx.lock_id().cloned();
    if let Some(warning) = ctx.dirty_warning() {
        out.warn(&warning);
    }
    let mut warn = |w: &str| out.warn(w);
    let hosts = opts.selection.hosts();
    settings.commit_signatures = commit_policy::check(ctx, hosts, Checked::Head, opts.allow_unsigned, &mut warn)?;
    settings.retention = hosts.iter().filter_map(|h| Some((h.clone(), ctx.retention(h)?))).collect();
    let unset = if opts.reboot { RebootPolicy::IfNeeded } else { RebootPolicy::Never };
    settings.reboot = hosts.iter().map(|h| (h.clone(), ctx.reboot_policy(h).unwrap_or(unset))).collect();
    settings.reboot_timeout = opts.reboot_timeout.as_std();
    settings.wait_limit += settings.reboot_timeout;
    let built = eval_and_build(&opts.eval, ctx, nix.clone(), &opts.selection).await?;
    // One local store for the diff and the push: each closure is queried once.
    let store = Arc::new(NixStore::new(nix.clone()));
    if opts.diff {
        show_diff_and_ask(ctx, nix.clone(), store.clone(), &built, opts.yes).await?;
    }
    let policy =
        Policy { batch_size: opts.batch.size(built.len()), max_failures: opts.max_failures, parallel: opts.parallel };
    let mut report = ApplyReport { tally: true, ..ApplyReport::default() };
    report.extra.mode = settings.mode.as_str();
    report.extra.dry_run = opts.dry_run;
    let (targets, failed_before) = targets(ctx, &built, &mut report)?;
    if let Some(mut cache) = opts.via_cache.take() {
        cache.set_toplevels(targets.iter().map(|t| t.toplevel.clone()).collect());
        settings.cache = Some(Arc::new(cache));
    }
    if !opts.dry_run {
        let checks = targets.iter().map(|t| (t.host.name(), t.checks.as_slice()));
        for warning in health::warnings(checks, settings.mode, settings.confirm_timeout) {
            out.warn(&warning);
        }
    }
    let cache = settings.cache.clone();
    if opts.dry_run {
        let batches = batch_numbers(&targets, policy.batch_size);
        for (name, plan) in dry_run(targets, store, settings.mode).await {
            let toplevel = toplevel_of(&built, &name);
            let entry = plan_entry(ctx, toplevel, batches.get(&name).copied(), &plan);
            report.hosts.insert(name.to_string(), entry);
        }
    } else {
        let results = roll_out(targets, store, Arc::new(settings), policy, failed_before).await;
        if let Err(e) = crate::deployed_roots::keep_inputs(&nix, &ctx.fleet_file, &ctx.flake).await {
            out.warn(&e);
        }
        let landed = results
            .iter()
            .filter(|(_, (_, outcome))| matches!(outcome.result, HostResult::Activated | HostResult::Unchanged))
            .filter_map(|(name, _)| Some((name.clone(), built.get(name)?.as_ref().ok()?.out_path.clone())));
        for warning in crate::deployed_roots::keep_all(nix.clone(), &ctx.fleet_file, landed.collect()).await {
            out.warn(&warning);
        }
        for (name, (batch, outcome)) in results {
            let entry = outcome_entry(ctx, toplevel_of(&built, &name), Some(batch), &outcome);
            report.hosts.insert(name.to_string(), entry);
        }
    }
    report.extra.via_cache = cache.map(|c| c.report());
    // A host whose task died (a bug) must not vanish from the report.
    for name in built.keys() {
        if !report.hosts.contains_key(name.as_str()) {
            let outcome = Outcome::failed(Step::Deploy, format!("{name}: internal error: no result"));
            report.hosts.insert(name.to_string(), outcome_entry(ctx, toplevel_of(&built, name), None, &outcome));
        }
    }
    Ok(report)
}

/// `apply --diff`: every built host's diff on stderr, then, unless `yes`, a question on
/// stderr answered on stdin (a terminal, or a pipe for scripts); anything but `y`/`yes`
/// (end of input included) stops before any host is contacted for a change.
async fn show_diff_and_ask(
    ctx: &FleetContext,
    nix: Arc<Nix>,
    store: Arc<NixStore>,
    built: &Built,
    yes: bool,
) -> Result<(), Error> {
    let diffs = crate::closure_diff::diff_built(ctx, nix, store, built.clone()).await?;
    let mut stderr = std::io::stderr().lock();
    for (name, diff) in &diffs {
        let _ = match diff {
            Ok(d) => writeln!(stderr, "{name}: {}", d.summary())
                .and_then(|()| d.lines().iter().try_for_each(|l| writeln!(stderr, "    {l}"))),
            Err(e) => writeln!(stderr, "{name}: diff failed: {e}"),
        };
    }
    if yes {
        return Ok(());
    }
    let _ = write!(stderr, "Apply to {}? [y/N] ", plural(diffs.len(), "host", "hosts"));
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Error::Declined(format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        "" => Err(Error::Declined("no answer (use --yes to apply without asking)".to_owned())),
        other => Err(Error::Declined(format!("the answer was `{other}`"))),
    }
}

/// The hosts that built, as [`HttpHost`]s; hosts that did not are reported here and
/// counted (they count against `max_failures`).
fn targets(
    ctx: &FleetContext,
    built: &Built,
    report: &mut ApplyReport,
) -> Result<(Vec<Target<HttpHost>>, usize), Error> {
    let mut targets = Vec::new();
    let mut failed = 0;
    for (name, result) in built {
        let failure = match (result, ctx.fleet.hosts.contains_key(name)) {
            (Ok(toplevel), true) => match ctx.agent(name)? {
                Ok(h) => {
                    let (host, toplevel) = (Arc::new(h), toplevel.out_path.clone());
                    targets.push(Target { host, toplevel, checks: ctx.health_checks(name) });
                    continue;
                }
                Err(e) => Outcome::failed(Step::Connect, e.to_string()),
            },
            (Ok(_), false) => Outcome::failed(Step::Connect, format!("{name}: not in the inventory")),
            (Err(Failure { step, message }), _) => {
                // The evaluation pool has already said `evaluation failed`: once is enough.
                if *step != Step::Eval {
                    progress::step(name, format!("{} failed", step.as_str()));
                }
                Outcome::failed(*step, message.clone())
            }
        };
        failed += 1;
        report.hosts.insert(name.to_string(), outcome_entry(ctx, toplevel_of(built, name), None, &failure));
    }
    Ok((targets, failed))
}

fn toplevel_of(built: &Built, name: &HostName) -> Option<String> {
    built.get(name).and_then(|r| r.as_ref().ok()).map(|t| t.out_path.to_string())
}

/// Which batch (1-based) each target would be in.
fn batch_numbers(targets: &[Target<HttpHost>], size: usize) -> BTreeMap<HostName, usize> {
    targets.iter().enumerate().map(|(i, t)| (t.host.name().clone(), i / size.max(1) + 1)).collect()
}

/// A host's `apply` entry. Every host has the same keys, null where not applicable.
pub fn outcome_entry(
    ctx: &FleetContext,
    toplevel: Option<String>,
    batch: Option<usize>,
    o: &Outcome,
) -> HostReport<ApplyFields> {
    let mut e = HostReport::base(ctx, o.result)
        .with(ApplyFields::Deployed(Box::new(DeployedFields { batch, outcome: OutcomeFields::new(o) })));
    e.summary = Some(deploy_report::summary(o, toplevel.as_deref()));
    e.toplevel = toplevel;
    e.error = o.error.clone();
    e
}

/// A host's `apply --dry-run` entry: `result` is `ok` when the plan could be made.
pub fn plan_entry(
    ctx: &FleetContext,
    toplevel: Option<String>,
    batch: Option<usize>,
    plan: &Plan,
) -> HostReport<ApplyFields> {
    let (result, kind, current, paths, bytes) = match plan {
        Plan::Unchanged { current } => (HostResult::Ok, Some("unchanged"), current.clone(), 0, 0),
        Plan::Activate { current, paths, nar_bytes } => {
            (HostResult::Ok, Some("activate"), current.clone(), *paths as u64, *nar_bytes)
        }
        Plan::Failed { .. } => (HostResult::Failed, None, None, 0, 0),
    };
    let step = if let Plan::Failed { step, .. } = plan { Some(step.as_str()) } else { None };
    let mut e = HostReport::base(ctx, result).with(ApplyFields::Planned(PlannedFields {
        batch,
        bytes_to_copy: bytes,
        paths_to_copy: paths,
        plan: kind,
        previous_toplevel: current,
        step,
    }));
    e.toplevel = toplevel;
    e.summary = Some(match plan {
        Plan::Unchanged { .. } => "would be unchanged".to_owned(),
        Plan::Activate { .. } => {
            format!("would activate, copying {} ({})", plural(paths, "path", "paths"), progress::bytes(bytes))
        }
        Plan::Failed { step, .. } => format!("at step {}", step.as_str()),
    });
    if let Plan::Failed { error, .. } = plan {
        e.error = Some(error.clone());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Step;
    use crate::push::PushStats;
    use serde_json::Value;

    fn ctx() -> (tempfile::TempDir, FleetContext) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.yaml");
        std::fs::write(&file, "hosts:\n  web1:\n    address: 192.0.2.1\n").unwrap();
        std::fs::write(dir.path().join("flake.nix"), "{ outputs = _: {}; }\n").unwrap();
        let ctx = FleetContext::load(&file, None).unwrap();
        (dir, ctx)
    }

    const TOP: &str = "/nix/store/22222222222222222222222222222222-nixos-system-web";

    /// The entry's JSON, checked against `output-apply.schema.json`.
    fn json(entry: &HostReport<ApplyFields>) -> Value {
        let v = serde_json::to_value(entry).unwrap();
        crate::output_schemas::assert_entry_conforms("apply", &v);
        v
    }

    #[test]
    fn apply_entries_have_the_documented_fields() {
        let (_dir, ctx) = ctx();
        let mut activated = Outcome::failed(Step::Deploy, "");
        (activated.result, activated.step, activated.error) = (HostResult::Activated, None, None);
        activated.pushed = PushStats { paths: 12, nar_bytes: 3_565_158, wire_bytes: 1_000_000 };
        activated.deployment = Some("web1-1700000000-0011aabb".into());
        activated.generation = Some(4);
        let v = json(&outcome_entry(&ctx, Some(TOP.into()), Some(1), &activated));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "result",
            "rev",
            "lock",
            "toplevel",
            "error",
            "step",
            "previous_toplevel",
            "batch",
            "paths_copied",
            "bytes_copied",
            "wire_bytes",
            "deployment",
            "generation",
            "log_tail",
            "health",
            "seconds",
            "reboot_required",
            "reboot_reasons",
            "reboot",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["result"], "activated");
        assert_eq!(v["toplevel"], TOP);
        assert_eq!(v["paths_copied"], 12);
        assert_eq!(v["bytes_copied"], 3_565_158);
        assert_eq!(v["generation"], 4);
        assert_eq!(v["deployment"], "web1-1700000000-0011aabb");
        assert!(v["error"].is_null() && v["step"].is_null() && v["log_tail"].is_null());
        assert!(v["reboot_required"].is_null() && v["reboot_reasons"] == serde_json::json!([]));
        let kernel = hostctl_schemas::api::deployments::RebootReason {
            part: "kernel".into(),
            booted: Some("/nix/store/a-linux-6.1/bzImage".into()),
            new: Some("/nix/store/b-linux-6.6/bzImage".into()),
        };
        (activated.reboot_required, activated.reboot_reasons) = (Some(true), vec![kernel]);
        let entry = outcome_entry(&ctx, Some(TOP.into()), Some(1), &activated);
        assert!(entry.summary.as_deref().unwrap().ends_with("copied; reboot required (kernel changed)"), "{entry:?}");
        let v = json(&entry);
        assert_eq!(v["reboot_required"], true);
        assert_eq!(v["reboot_reasons"][0]["new"], "/nix/store/b-linux-6.6/bzImage");

        let mut failed = Outcome::failed(Step::Activate, "switch-to-configuration exited with 4");
        failed.log_tail = Some("foo.service failed".into());
        let v = json(&outcome_entry(&ctx, Some(TOP.into()), Some(2), &failed));
        assert_eq!((v["result"].as_str(), v["step"].as_str()), (Some("failed"), Some("activate")));
        assert_eq!(v["log_tail"], "foo.service failed");
        assert_eq!(v["error"], "switch-to-configuration exited with 4");

        let mut rolled = failed.clone();
        (rolled.result, rolled.step) = (HostResult::RolledBack, Some(Step::Confirm));
        assert_eq!(json(&outcome_entry(&ctx, None, None, &rolled))["result"], "rolled-back");
        let mut skipped = Outcome::failed(Step::Deploy, "not attempted: rollout stopped after 1 failure");
        (skipped.result, skipped.step) = (HostResult::Skipped, None);
        assert_eq!(json(&outcome_entry(&ctx, None, Some(2), &skipped))["result"], "skipped");
    }

    #[test]
    fn dry_run_entries() {
        let (_dir, ctx) = ctx();
        let plan = Plan::Activate { current: None, paths: 3, nar_bytes: 2048 };
        let entry = plan_entry(&ctx, Some(TOP.into()), Some(1), &plan);
        assert_eq!(entry.summary.as_deref(), Some("would activate, copying 3 paths (2.0 KiB)"));
        let one = Plan::Activate { current: None, paths: 1, nar_bytes: 512 };
        let summary = plan_entry(&ctx, Some(TOP.into()), Some(1), &one).summary;
        assert_eq!(summary.as_deref(), Some("would activate, copying 1 path (512 B)"));
        let v = json(&entry);
        assert_eq!((v["result"].as_str(), v["plan"].as_str()), (Some("ok"), Some("activate")));
        assert_eq!((v["paths_to_copy"].as_u64(), v["bytes_to_copy"].as_u64()), (Some(3), Some(2048)));
        let v = json(&plan_entry(&ctx, None, None, &Plan::Failed { step: Step::Connect, error: "down".into() }));
        assert_eq!(
            (v["result"].as_str(), v["step"].as_str(), v["error"].as_str()),
            (Some("failed"), Some("connect"), Some("down"))
        );
    }
}
