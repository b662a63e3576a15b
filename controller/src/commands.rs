//! The dispatcher: turns the parsed command line into typed options (a [`Selection`]
//! matched against the inventory, [`EvalOptions`], each command's own options) and runs
//! the command. Input is checked here, in the order each command has always reported
//! it (a command that talks to agents reads the signing key first), so a command
//! module starts with valid options and never sees [`Cli`].

use std::num::NonZeroUsize;
use std::sync::Arc;

use hostctl_nix::Nix;

use crate::apply::ApplyOptions;
use crate::bundle::BundleOptions;
use crate::cache::ViaCache;
use crate::cli::{Cli, Command, Select};
use crate::context::FleetContext;
use crate::error::Error;
use crate::pipeline::EvalOptions;
use crate::report::{NoFields, Printable, Report};
use crate::rollback::RollbackOptions;
use crate::rollback_target::Wanted;
use crate::rollout::DEFAULT_PARALLEL;
use crate::select::Selection;
use crate::{apply, bundle, check, diff, enroll, eval_build, history, rollback, status, Output};

/// The Nix handle every command uses: `--builders`, `--show-trace`, `--nix-option`s.
pub fn nix_handle(cli: &Cli) -> Result<Nix, Error> {
    let options = cli
        .nix_option
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => hostctl_nix::NixOption::new(name, value),
            _ => Err(hostctl_nix::command::NixOptionError(pair.concat())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Nix::new().with_builders(cli.builders.clone()).with_options(&options).with_show_trace(cli.show_trace))
}

/// Runs the parsed command; returns the report to print.
pub async fn run(cli: &Cli, nix: Arc<Nix>, out: &mut Output) -> Result<Box<dyn Printable>, Error> {
    let fleet_file = match &cli.fleet {
        Some(file) => file.clone(),
        None => crate::context::find_fleet_file()?,
    };
    let ctx = FleetContext::load(&fleet_file, cli.key.clone())?;
    if let Some(warning) = ctx.untracked_warning() {
        out.warn(&warning);
    }
    let eval = EvalOptions { jobs: cli.eval_jobs, cache: !cli.no_eval_cache };
    let ctx = &ctx;
    Ok(match &cli.command {
        Command::Eval(sel) => Box::new(eval_build::eval(&eval, ctx, nix, &selection(ctx, sel)?).await?),
        Command::Build(sel) => Box::new(eval_build::build(&eval, ctx, nix, &selection(ctx, sel)?).await?),
        Command::Check => Box::new(check::check(ctx, &nix).await?),
        Command::Apply(args) => {
            ctx.signing_key()?;
            let via_cache = match ViaCache::choose(args.via_cache.as_ref(), ctx.fleet.cache.as_ref()) {
                Some(urls) if !args.dry_run => Some(ViaCache::new(urls, nix.clone(), &ctx.signing_key_path()?)?),
                _ => None,
            };
            let opts = ApplyOptions {
                eval,
                selection: selection(ctx, &args.select)?,
                mode: args.mode.unwrap_or(ctx.fleet.defaults.mode),
                batch: args.batch.unwrap_or(ctx.fleet.rollout.batch),
                max_failures: args.max_failures.unwrap_or(ctx.fleet.rollout.max_failures),
                parallel: cli.parallel.map_or(DEFAULT_PARALLEL, NonZeroUsize::get),
                dry_run: args.dry_run,
                via_cache,
                diff: args.diff,
                yes: args.yes,
                allow_unsigned: args.allow_unsigned,
                reboot: args.reboots.reboot,
                reboot_timeout: args.reboots.timeout.reboot_timeout,
            };
            Box::new(apply::apply(opts, ctx, nix, out).await?)
        }
        Command::Status(args) => {
            ctx.signing_key()?;
            let eval = (!args.no_drift).then_some(eval);
            Box::new(status::status(eval.as_ref(), ctx, nix, &selection(ctx, &args.select)?).await?)
        }
        Command::Diff(sel) => {
            ctx.signing_key()?;
            Box::new(diff::diff(&eval, ctx, nix, &selection(ctx, sel)?).await?)
        }
        Command::Bundle(args) => {
            ctx.signing_key()?;
            ctx.host(&args.host)?;
            let opts = BundleOptions {
                host: args.host.clone(),
                output: args.output.clone(),
                mode: args.mode.unwrap_or(ctx.fleet.defaults.mode),
            };
            Box::new(bundle::bundle(&eval, &opts, ctx, nix).await?)
        }
        Command::History(args) => {
            let selection = host_args(ctx, &args.hosts)?;
            ctx.signing_key()?;
            Box::new(history::history(&selection, ctx).await?)
        }
        Command::Rollback(args) => {
            let wanted = Wanted::from_args(args.to_lock.as_deref(), args.generation)?;
            let hosts = host_args(ctx, &args.hosts)?.hosts().to_vec();
            ctx.signing_key()?;
            Box::new(
                rollback::rollback(
                    RollbackOptions { hosts, wanted, allow_unsigned: args.allow_unsigned },
                    ctx,
                    nix,
                    out,
                )
                .await?,
            )
        }
        Command::Enroll(args) => {
            let mut hosts = args.hosts.clone();
            hosts.sort();
            hosts.dedup();
            for name in &hosts {
                ctx.host(name)?;
            }
            Box::new(enroll::enroll(&hosts, args.expect.as_ref(), ctx).await?)
        }
        Command::Logs(args) => {
            ctx.host(&args.host)?;
            ctx.signing_key()?;
            let opts = crate::logs::LogsOptions {
                host: args.host.clone(),
                deployment: args.deployment.clone(),
                follow: args.follow,
                json: cli.json,
            };
            Box::new(crate::logs::logs(&opts, ctx).await?)
        }
        Command::Gc(args) => {
            let retention = args.retention();
            let hosts = host_args(ctx, &args.hosts)?.hosts().to_vec();
            ctx.signing_key()?;
            let opts = crate::gc::GcOptions { hosts, dry_run: args.dry_run, retention };
            Box::new(crate::gc::gc(&opts, ctx).await?)
        }
        Command::Reboot(args) => {
            let selection = host_args(ctx, &args.hosts)?;
            ctx.signing_key()?;
            let opts = crate::reboot_cmd::RebootOptions {
                hosts: selection.hosts().to_vec(),
                batch: args.batch.unwrap_or(ctx.fleet.rollout.batch),
                max_failures: args.max_failures.unwrap_or(ctx.fleet.rollout.max_failures),
                parallel: cli.parallel.map_or(DEFAULT_PARALLEL, NonZeroUsize::get),
                reboot_timeout: args.timeout.reboot_timeout,
            };
            Box::new(crate::reboot_cmd::reboot(opts, ctx, nix).await?)
        }
        // Written by `main` before a fleet is loaded (`crate::docs`).
        Command::Completions(_) | Command::Man(_) => Box::new(Report::<NoFields>::default()),
    })
}

/// `--on` matched against the inventory.
fn selection(ctx: &FleetContext, sel: &Select) -> Result<Selection, Error> {
    Ok(Selection::parse(&ctx.fleet.hosts, &sel.on, &ctx.fleet_file.display().to_string())?)
}

/// HOST arguments (`rollback`, `history`): selectors as `--on` takes them.
fn host_args(ctx: &FleetContext, selectors: &[String]) -> Result<Selection, Error> {
    Ok(Selection::parse_args(&ctx.fleet.hosts, selectors, &ctx.fleet_file.display().to_string())?)
}
