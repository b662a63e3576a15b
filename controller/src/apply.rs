//! `hostctl apply`: eval -> build -> per batch, per host in parallel: push the closure,
//! activate, wait, health gate, confirm. `--dry-run` stops after asking each host what
//! it lacks.

use std::io::Write as _;
use std::num::NonZeroUsize;
use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::ids::HostName;
use hostctl_schemas::signing::SecretKey;
use serde_json::Value;

use crate::cache::ViaCache;
use crate::cli::{ApplyArgs, Cli};
use crate::client::{load_signing_key, signing_key_path, HttpHost};
use crate::commands::{base_entry, eval_and_build, Built, Failure};
use crate::context::FleetContext;
use crate::deploy::{DeploySettings, Outcome};
use crate::error::Error;
use crate::host::Host;
use crate::push::NixStore;
use crate::report::{HostReport, HostResult, Report};
use crate::rollout::{dry_run, roll_out, Plan, Policy, Target, DEFAULT_PARALLEL};
use crate::{health, progress, Output};

/// Runs `apply` for the selected hosts. Bad input (key, selectors, inventory) is
/// reported before anything is evaluated or contacted.
pub async fn apply(
    cli: &Cli,
    args: &ApplyArgs,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    out: &mut Output,
) -> Result<Report, Error> {
    let key = load_signing_key(ctx, cli.key.as_deref())?;
    let mut via_cache = match ViaCache::choose(args.via_cache.as_ref(), ctx.fleet.cache.as_ref()) {
        Some(urls) if !args.dry_run => {
            Some(ViaCache::new(urls, nix.clone(), &signing_key_path(ctx, cli.key.as_deref())?)?)
        }
        _ => None,
    };
    let mut settings =
        DeploySettings::new(args.mode.unwrap_or(ctx.fleet.defaults.mode), ctx.fleet.defaults.confirm_timeout);
    settings.rev = ctx.rev();
    settings.lock = ctx.lock_id().cloned();
    let built = eval_and_build(cli, ctx, nix.clone(), &args.select).await?;
    // One local store for the diff and the push: each closure is queried once.
    let store = Arc::new(NixStore::new(nix.clone()));
    if args.diff {
        show_diff_and_ask(ctx, &key, nix.clone(), store.clone(), &built, args.yes).await?;
    }
    let policy = Policy {
        batch_size: args.batch.unwrap_or(ctx.fleet.rollout.batch).size(built.len()),
        max_failures: args.max_failures.unwrap_or(ctx.fleet.rollout.max_failures),
        parallel: cli.parallel.map_or(DEFAULT_PARALLEL, NonZeroUsize::get),
    };
    let mut report = Report::default();
    report.extra.insert("mode".into(), settings.mode.as_str().into());
    report.extra.insert("dry_run".into(), args.dry_run.into());
    let (targets, failed_before) = targets(ctx, &key, &built, &mut report);
    if let Some(mut cache) = via_cache.take() {
        cache.set_toplevels(targets.iter().map(|t| t.toplevel.clone()).collect());
        settings.cache = Some(Arc::new(cache));
    }
    if !args.dry_run {
        let checks = targets.iter().map(|t| (t.host.name(), t.checks.as_slice()));
        for warning in health::warnings(checks, settings.mode, settings.confirm_timeout) {
            out.warn(&warning);
        }
    }
    let cache = settings.cache.clone();
    if args.dry_run {
        let batches = batch_numbers(&targets, policy.batch_size);
        for (name, plan) in dry_run(targets, store, settings.mode).await {
            let toplevel = toplevel_of(&built, &name);
            let entry = plan_entry(ctx, toplevel, batches.get(&name).copied(), &plan);
            report.hosts.insert(name.to_string(), entry);
        }
    } else {
        let results = roll_out(targets, store, Arc::new(settings), policy, failed_before).await;
        for (name, (batch, outcome)) in results {
            let entry = outcome_entry(ctx, toplevel_of(&built, &name), Some(batch), &outcome);
            report.hosts.insert(name.to_string(), entry);
        }
    }
    report.extra.insert("via_cache".into(), cache.map_or(Value::Null, |c| c.report()));
    // A host whose task died (a bug) must not vanish from the report.
    for name in built.keys() {
        if !report.hosts.contains_key(name.as_str()) {
            let outcome = Outcome::failed(crate::deploy::Step::Deploy, format!("{name}: internal error: no result"));
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
    key: &Arc<SecretKey>,
    nix: Arc<Nix>,
    store: Arc<NixStore>,
    built: &Built,
    yes: bool,
) -> Result<(), Error> {
    let diffs = crate::diff::diff_built(ctx, key, nix, store, built.clone()).await;
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
    let _ = write!(stderr, "Apply to {} host(s)? [y/N] ", diffs.len());
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
    key: &Arc<SecretKey>,
    built: &Built,
    report: &mut Report,
) -> (Vec<Target<HttpHost>>, usize) {
    let mut targets = Vec::new();
    let mut failed = 0;
    for (name, result) in built {
        let failure = match (result, ctx.fleet.hosts.get(name)) {
            (Ok(toplevel), Some(host)) => {
                match HttpHost::new(name.clone(), &host.address, ctx.fleet.defaults.port, key.clone()) {
                    Ok(h) => {
                        let (host, toplevel) = (Arc::new(h), toplevel.out_path.clone());
                        targets.push(Target { host, toplevel, checks: host_checks(ctx, name) });
                        continue;
                    }
                    Err(e) => Outcome::failed(crate::deploy::Step::Connect, e.to_string()),
                }
            }
            (Ok(_), None) => Outcome::failed(crate::deploy::Step::Connect, format!("{name}: not in the inventory")),
            (Err(Failure { step, message }), _) => {
                progress::step(name, format!("{} failed", step.as_str()));
                Outcome::failed(*step, message.clone())
            }
        };
        failed += 1;
        report.hosts.insert(name.to_string(), outcome_entry(ctx, toplevel_of(built, name), None, &failure));
    }
    (targets, failed)
}

/// The host's `health` checks from the inventory.
pub fn host_checks(ctx: &FleetContext, name: &HostName) -> Vec<hostctl_schemas::inventory::HealthCheck> {
    ctx.fleet.hosts.get(name).map(|h| h.health.clone()).unwrap_or_default()
}

fn toplevel_of(built: &Built, name: &HostName) -> Option<String> {
    built.get(name).and_then(|r| r.as_ref().ok()).map(|t| t.out_path.to_string())
}

/// Which batch (1-based) each target would be in.
fn batch_numbers(targets: &[Target<HttpHost>], size: usize) -> std::collections::BTreeMap<HostName, usize> {
    targets.iter().enumerate().map(|(i, t)| (t.host.name().clone(), i / size.max(1) + 1)).collect()
}

/// A host's `apply` entry. Every host has the same keys, null where not applicable.
pub fn outcome_entry(ctx: &FleetContext, toplevel: Option<String>, batch: Option<usize>, o: &Outcome) -> HostReport {
    let mut e = base_entry(ctx, o.result)
        .field("step", o.step.map(|s| s.as_str()))
        .field("previous_toplevel", o.previous_toplevel.clone())
        .field("batch", batch)
        .field("paths_copied", o.pushed.paths)
        .field("bytes_copied", o.pushed.nar_bytes)
        .field("wire_bytes", o.pushed.wire_bytes)
        .field("deployment", o.deployment.clone())
        .field("generation", o.generation)
        .field("log_tail", o.log_tail.clone())
        .field("health", serde_json::to_value(&o.health).unwrap_or(Value::Null))
        .field("seconds", (o.seconds * 1000.0).round() / 1000.0);
    e.toplevel = toplevel;
    e.error = o.error.clone();
    e.summary = Some(match (o.result, o.step) {
        (HostResult::Activated, _) => format!(
            "generation {}, {} paths ({}) copied",
            o.generation.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            o.pushed.paths,
            progress::bytes(o.pushed.nar_bytes)
        ),
        (HostResult::Unchanged, _) => e.toplevel.clone().unwrap_or_default(),
        (_, Some(step)) => format!("at step {}", step.as_str()),
        _ => String::new(),
    });
    e
}

/// A host's `apply --dry-run` entry: `result` is `ok` when the plan could be made.
pub fn plan_entry(ctx: &FleetContext, toplevel: Option<String>, batch: Option<usize>, plan: &Plan) -> HostReport {
    let (result, kind, current, paths, bytes) = match plan {
        Plan::Unchanged { current } => (HostResult::Ok, Some("unchanged"), current.clone(), 0, 0),
        Plan::Activate { current, paths, nar_bytes } => {
            (HostResult::Ok, Some("activate"), current.clone(), *paths as u64, *nar_bytes)
        }
        Plan::Failed { .. } => (HostResult::Failed, None, None, 0, 0),
    };
    let mut e = base_entry(ctx, result)
        .field("plan", kind)
        .field("step", if let Plan::Failed { step, .. } = plan { Value::from(step.as_str()) } else { Value::Null })
        .field("previous_toplevel", current)
        .field("batch", batch)
        .field("paths_to_copy", paths)
        .field("bytes_to_copy", bytes);
    e.toplevel = toplevel;
    e.summary = Some(match plan {
        Plan::Unchanged { .. } => "would be unchanged".to_owned(),
        Plan::Activate { .. } => format!("would activate, copying {paths} paths ({})", progress::bytes(bytes)),
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

    fn ctx() -> (tempfile::TempDir, FleetContext) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.yaml");
        std::fs::write(&file, "hosts:\n  web1:\n    address: 192.0.2.1\n").unwrap();
        std::fs::write(dir.path().join("flake.nix"), "{ outputs = _: {}; }\n").unwrap();
        let ctx = FleetContext::load(&file).unwrap();
        (dir, ctx)
    }

    const TOP: &str = "/nix/store/22222222222222222222222222222222-nixos-system-web";

    fn json(entry: &HostReport) -> Value {
        serde_json::to_value(entry).unwrap()
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

        let mut failed = Outcome::failed(Step::Activate, "switch-to-configuration exited with 4");
        failed.log_tail = Some("foo.service failed".into());
        let v = json(&outcome_entry(&ctx, Some(TOP.into()), Some(2), &failed));
        assert_eq!((v["result"].as_str(), v["step"].as_str()), (Some("failed"), Some("activate")));
        assert_eq!(v["log_tail"], "foo.service failed");
        assert_eq!(v["error"], "switch-to-configuration exited with 4");

        let mut rolled = failed.clone();
        (rolled.result, rolled.step) = (HostResult::RolledBack, Some(Step::Confirm));
        assert_eq!(json(&outcome_entry(&ctx, None, None, &rolled))["result"], "rolled-back");
        let mut skipped = Outcome::failed(Step::Deploy, "not attempted: rollout stopped after 1 failures");
        (skipped.result, skipped.step) = (HostResult::Skipped, None);
        assert_eq!(json(&outcome_entry(&ctx, None, Some(2), &skipped))["result"], "skipped");
    }

    #[test]
    fn dry_run_entries() {
        let (_dir, ctx) = ctx();
        let plan = Plan::Activate { current: None, paths: 3, nar_bytes: 2048 };
        let entry = plan_entry(&ctx, Some(TOP.into()), Some(1), &plan);
        assert_eq!(entry.summary.as_deref(), Some("would activate, copying 3 paths (2.0 KiB)"));
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
