//! `hostctl reboot SEL...`: each host rebooted into the system its profile names, the
//! same way `apply --reboot` does it (a `boot` deployment with `reboot` of that system:
//! booted once, waited for within `--reboot-timeout`, health-checked, confirmed), in the
//! fleet's batches with `max_failures`. Reports like `apply`.
//!
//! Never evaluates, builds or pushes anything: a host without a system is failed at
//! `connect`.

use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::ids::{HostName, StorePath};
use hostctl_schemas::inventory::{Batch, Mode};

use crate::apply::{outcome_entry, ApplyReport};
use crate::context::FleetContext;
use crate::deploy::{DeploySettings, Outcome, Step};
use crate::error::Error;
use crate::host::Host as _;
use crate::push::NixStore;
use crate::rollout::{roll_out, Policy, Target};

/// What `hostctl reboot` was asked.
#[derive(Debug, Clone)]
pub struct RebootOptions {
    pub hosts: Vec<HostName>,
    pub batch: Batch,
    pub max_failures: u32,
    pub parallel: usize,
    pub reboot_timeout: hostctl_schemas::duration::Duration,
}

/// Reboots the selected hosts; see the module documentation.
pub async fn reboot(opts: RebootOptions, ctx: &FleetContext, nix: Arc<Nix>) -> Result<ApplyReport, Error> {
    let mut settings = DeploySettings::new(Mode::Boot, ctx.fleet.defaults.confirm_timeout);
    settings.reboot_all = Some("hostctl reboot".to_owned());
    settings.reboot_timeout = opts.reboot_timeout.as_std();
    settings.wait_limit += settings.reboot_timeout;
    let mut report = ApplyReport { tally: true, ..ApplyReport::default() };
    report.extra.mode = Mode::Boot.as_str();
    // Each host's system, asked of all agents at once.
    let answers = crate::tasks::ask_each_agent(ctx, &opts.hosts, "GET /v1/status", |_, client| async move {
        let status = client.status().await?;
        Ok((client, status.toplevel))
    })
    .await?;
    let mut targets = Vec::new();
    let mut failed = 0;
    for (name, answer) in answers {
        let found =
            answer.map_err(|e| e.to_string()).and_then(|(host, toplevel)| Ok((system_of(&name, toplevel)?, host)));
        match found {
            Ok((toplevel, host)) => {
                targets.push(Target { host: Arc::new(host), toplevel, checks: ctx.health_checks(&name) })
            }
            Err(e) => {
                failed += 1;
                let outcome = Outcome::failed(Step::Connect, e);
                report.hosts.insert(name.to_string(), outcome_entry(ctx, None, None, &outcome));
            }
        }
    }
    let toplevels: std::collections::BTreeMap<HostName, String> =
        targets.iter().map(|t| (t.host.name().clone(), t.toplevel.to_string())).collect();
    let policy = Policy {
        batch_size: opts.batch.size(opts.hosts.len()),
        max_failures: opts.max_failures,
        parallel: opts.parallel,
    };
    let store = Arc::new(NixStore::new(nix));
    for (name, (batch, outcome)) in roll_out(targets, store, Arc::new(settings), policy, failed).await {
        let toplevel = toplevels.get(&name).cloned();
        report.hosts.insert(name.to_string(), outcome_entry(ctx, toplevel, Some(batch), &outcome));
    }
    Ok(report)
}

/// The system `host`'s agent says its profile names (what a reboot boots).
fn system_of(host: &HostName, toplevel: Option<String>) -> Result<StorePath, String> {
    let toplevel = toplevel.ok_or_else(|| format!("{host}: has no system to reboot into"))?;
    toplevel.parse().map_err(|e| format!("{host}: its agent names the system `{toplevel}`: {e}"))
}
