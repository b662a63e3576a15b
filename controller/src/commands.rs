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
use crate::{apply, bundle, check, diff, eval_build, history, rollback, status, Output};

/// Runs the parsed command; returns the report to print.
pub async fn run(cli: &Cli, nix: Arc<Nix>, out: &mut Output) -> Result<Box<dyn Printable>, Error> {
    let ctx = FleetContext::load(&cli.fleet, cli.key.clone())?;
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
            ctx.host(&args.host)?;
            ctx.signing_key()?;
            Box::new(history::history(&args.host, ctx).await?)
        }
        Command::Rollback(args) => {
            let wanted = Wanted::from_args(args.to_lock.as_deref(), args.generation)?;
            let mut hosts = args.hosts.clone();
            hosts.sort();
            hosts.dedup();
            for name in &hosts {
                ctx.host(name)?;
            }
            ctx.signing_key()?;
            Box::new(rollback::rollback(RollbackOptions { hosts, wanted }, ctx, nix, out).await?)
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
        // Written by `main` before a fleet is loaded (`crate::docs`).
        Command::Completions(_) | Command::Man => Box::new(Report::<NoFields>::default()),
    })
}

/// `--on` matched against the inventory.
fn selection(ctx: &FleetContext, sel: &Select) -> Result<Selection, Error> {
    Ok(Selection::parse(&ctx.fleet.hosts, &sel.on, &ctx.fleet_file.display().to_string())?)
}
