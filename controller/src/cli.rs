//! The command line (clap): DESIGN.md's CLI contract. Commands appear here once they work.
//! Numeric options allow negative numbers so that `--generation -1` is refused as an
//! invalid value of `--generation`, not as an unknown flag `-1`.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use hostctl_schemas::ids::HostName;
use hostctl_schemas::inventory::{Batch, CacheUrl, Mode};

/// Where `--help` and the man pages list the options every subcommand takes, apart from
/// the subcommand's own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Parser)]
#[command(name = "hostctl", version, about = "Declarative NixOS fleet manager")]
pub struct Cli {
    /// The fleet inventory. Default: `$HOSTCTL_FLEET`, else the first `fleet.yaml` in the
    /// working directory or a directory above it.
    #[arg(long, global = true, help_heading = GLOBAL, env = "HOSTCTL_FLEET", value_name = "FILE")]
    pub fleet: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The key that signs requests to agents. Default: `$HOSTCTL_KEY`, else `signing_key`
    /// in the fleet file.
    #[arg(long, global = true, help_heading = GLOBAL, env = "HOSTCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Evaluations to run at once (default: from cores and free memory).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub eval_jobs: Option<NonZeroUsize>,
    /// Hosts deployed at once within a batch (default 100).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub parallel: Option<NonZeroUsize>,
    /// Evaluate every host even when a clean commit's result is cached.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_eval_cache: bool,
    /// Nix remote builders for the builds (Nix's `builders` setting, checked, then passed
    /// to `nix build`: `ssh://builder x86_64-linux`, `@/etc/nix/machines`; "" builds locally).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "BUILDERS")]
    pub builders: Option<hostctl_schemas::builders::Builders>,
    /// Pass `--show-trace` to every `nix` invocation (evaluation errors with Nix's trace).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub show_trace: bool,
    /// Set a Nix setting for every Nix invocation (`--option NAME VALUE`); repeatable.
    #[arg(long, global = true, help_heading = GLOBAL, num_args = 2, value_names = ["NAME", "VALUE"], allow_hyphen_values = true)]
    pub nix_option: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// A count of things run at once: clap names the option and the value, this says
/// what is allowed (`NonZeroUsize`'s own error is "number would be zero for non-zero type").
fn at_least_one(text: &str) -> Result<NonZeroUsize, String> {
    match text.parse::<usize>() {
        Ok(n) => NonZeroUsize::new(n).ok_or_else(|| "must be at least 1".to_owned()),
        Err(_) => Err("expected a whole number, at least 1".to_owned()),
    }
}

/// A count that may be 0, in words rather than the integer type's range.
fn whole_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| "expected a whole number, 0 or more".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate each selected host: host -> .drv path.
    #[command(after_help = "Examples:\n  hostctl eval --on web1\n  hostctl --show-trace eval --on @web")]
    Eval(Select),
    /// Build each selected host: host -> toplevel store path.
    #[command(
        after_help = "Examples:\n  hostctl build\n  hostctl --builders 'ssh://builder x86_64-linux' build --on @web"
    )]
    Build(Select),
    /// Lint the fleet: inventory vs flake, lock hygiene, git state.
    #[command(after_help = "Examples:\n  hostctl check\n  hostctl --fleet infra/fleet.yaml --json check")]
    Check,
    /// Evaluate, build, push and activate, batch by batch.
    #[command(
        after_help = "Examples:\n  hostctl apply --on web1,web2\n  hostctl apply --on @web --batch 25% --diff\n  hostctl apply --dry-run"
    )]
    Apply(ApplyArgs),
    /// What each agent reports, and drift from the flake.
    #[command(after_help = "Examples:\n  hostctl status\n  hostctl status --on @db --no-drift --json")]
    Status(StatusArgs),
    /// Per host, the closure difference from the running system to the new one.
    #[command(after_help = "Examples:\n  hostctl diff --on web1")]
    Diff(Select),
    /// Return hosts to an earlier system: the previous lock, a lock, a revision or a generation.
    #[command(
        after_help = "Examples:\n  hostctl rollback web1\n  hostctl rollback @web --to-lock v1.4\n  hostctl rollback db1 --generation 41"
    )]
    Rollback(RollbackArgs),
    /// Deployments of a host, newest first: time, rev, lock, toplevel, mode, result.
    #[command(after_help = "Examples:\n  hostctl history web1\n  hostctl history @web --json")]
    History(HistoryArgs),
    /// Write one signed file with a host's closure and deployment, for a host without
    /// network (`hostctl-agent import FILE` on the host).
    #[command(
        after_help = "Example:\n  hostctl bundle kiosk1 -o kiosk1.bundle   # then on kiosk1: hostctl-agent import kiosk1.bundle"
    )]
    Bundle(BundleArgs),
    /// Pin hosts' agent identities in `known_agents` beside the fleet file: a TLS
    /// handshake only (no request), the key shown printed, and recorded when none is
    /// pinned yet or `--expect` names exactly the key shown.
    Enroll(EnrollArgs),
    /// Print a deployment's whole activation log from its agent (the newest deployment's
    /// unless one is named); `--follow` until the deployment ends.
    Logs(LogsArgs),
    /// Delete old system generations on hosts under their retention policy, then the
    /// store paths nothing keeps; report what went (or would go, with `--dry-run`).
    #[command(after_help = "Examples:\n  hostctl gc web1 --dry-run\n  hostctl gc @web --keep-last 5 --json")]
    Gc(GcArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout; it
    /// completes subcommands, options, and host names and `@tag`s from the fleet file.
    #[command(after_help = "Example:\n  hostctl completions bash > /etc/bash_completion.d/hostctl")]
    Completions(CompletionsArgs),
    /// Print a man page (roff) on stdout: hostctl(1), or hostctl-SUBCOMMAND(1); or write
    /// them all into a directory.
    #[command(after_help = "Examples:\n  hostctl man apply | man -l -\n  hostctl man --dir /usr/local/share/man/man1")]
    Man(ManArgs),
    /// Reboot hosts into the system they have (their profile's): booted once, health-checked
    /// and confirmed as by `apply --reboot`; in batches, stopping past `max_failures`.
    #[command(after_help = "Examples:\n  hostctl reboot web1\n  hostctl reboot @web --batch 1 --reboot-timeout 5m")]
    Reboot(RebootCmdArgs),
}

#[derive(Debug, Args)]
pub struct RebootCmdArgs {
    /// The hosts to reboot: names, globs (`web*`), `@tag`s or tag globs (`@web-*`),
    /// comma lists (`web1,web2`); each must match a host.
    #[arg(required = true, value_name = "HOST", add = ArgValueCompleter::new(crate::complete::hosts))]
    pub hosts: Vec<String>,
    /// Hosts per batch: a count or a percentage (default: `rollout.batch`).
    #[arg(long, value_name = "N|P%", allow_negative_numbers = true)]
    pub batch: Option<Batch>,
    /// Failed hosts tolerated before the later batches are skipped (default: `rollout.max_failures`).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number::<u32>)]
    pub max_failures: Option<u32>,
    #[command(flatten)]
    pub timeout: RebootTimeoutArg,
}

/// `--reboot-timeout`, shared by `apply` and `reboot`.
#[derive(Debug, Args)]
pub struct RebootTimeoutArg {
    /// How long a rebooting host has to come back (its agent answering on a new boot id)
    /// before its step `reboot` fails.
    #[arg(long, value_name = "D", default_value = "10m")]
    pub reboot_timeout: hostctl_schemas::duration::Duration,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print (default: the hostctl(1) page).
    #[arg(value_name = "SUBCOMMAND", value_parser = man_page, conflicts_with = "dir")]
    pub page: Option<String>,
    /// Write every page (hostctl.1, hostctl-apply.1, ...) into this existing directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A subcommand that has a page, named in the error with the pages there are.
fn man_page(text: &str) -> Result<String, String> {
    use clap::CommandFactory as _;
    let names = hostctl_schemas::man::page_names(&Cli::command());
    if names.iter().any(|n| n == text) {
        Ok(text.to_owned())
    } else {
        Err(format!("no such subcommand; pages: {}", names.join(", ")))
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The hosts to roll back: names, globs (`web*`), `@tag`s or tag globs (`@web-*`),
    /// comma lists (`web1,web2`); as `--on`, each must match a host.
    #[arg(required = true, value_name = "HOST", add = ArgValueCompleter::new(crate::complete::hosts))]
    pub hosts: Vec<String>,
    /// A lock id (64 hex, or a unique prefix of at least 12 of a lock in the host's
    /// history) or a git revision of the flake (commit, tag, branch), which stands for its
    /// flake.lock: the host returns to the newest system it confirmed with that lock, not
    /// to that revision's configuration. Default: the previous lock (the newest earlier
    /// deployment with a different lock).
    #[arg(long, value_name = "LOCK|REV", conflicts_with = "generation")]
    pub to_lock: Option<String>,
    /// A generation of the host's system profile.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number::<u64>)]
    pub generation: Option<u64>,
    /// When the target must be rebuilt from a commit that fails the fleet's `commits`
    /// signature policy: rebuild and deploy it anyway, recorded in the host's journal.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The host (a name from the fleet file).
    #[arg(value_name = "HOST")]
    pub host: HostName,
    /// The bundle file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Activation mode (default: the fleet's).
    #[arg(long, value_name = "M")]
    pub mode: Option<Mode>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub select: Select,
    /// Only ask the agents: skip evaluating the flake (drift is `unknown`).
    #[arg(long)]
    pub no_drift: bool,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// Hosts (names from the fleet file).
    #[arg(value_name = "HOST", required = true)]
    pub hosts: Vec<HostName>,
    /// Record only if the agent shows exactly this key (`hostctl-agent identity` on the
    /// host); also what replaces a pin that changed.
    #[arg(long, value_name = "KEY")]
    pub expect: Option<hostctl_schemas::key::PublicKey>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The hosts: names, globs (`web*`), `@tag`s or tag globs (`@web-*`), comma lists
    /// (`web1,web2`); as `--on`, each must match a host.
    #[arg(required = true, value_name = "HOST", add = ArgValueCompleter::new(crate::complete::hosts))]
    pub hosts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The host (a name from the fleet file).
    #[arg(value_name = "HOST")]
    pub host: HostName,
    /// The deployment (an id from `hostctl history HOST`); default: the newest.
    #[arg(value_name = "DEPLOYMENT", value_parser = deployment_id)]
    pub deployment: Option<String>,
    /// Keep reading until the deployment has ended.
    #[arg(long, short)]
    pub follow: bool,
}

/// A deployment id as the agent accepts it.
fn deployment_id(id: &str) -> Result<String, String> {
    if hostctl_schemas::api::deployments::valid_id(id) {
        Ok(id.to_owned())
    } else {
        Err(format!("`{id}` is not a deployment id ([A-Za-z0-9._-], 1 to 128 characters)"))
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub select: Select,
    /// switch, boot, test or dry-activate (default: `defaults.mode` of the fleet).
    #[arg(long, value_name = "M")]
    pub mode: Option<Mode>,
    /// Hosts per batch: a count or a percentage (default: `rollout.batch`).
    #[arg(long, value_name = "N|P%", allow_negative_numbers = true)]
    pub batch: Option<Batch>,
    /// Failed hosts tolerated before the rollout stops (default: `rollout.max_failures`).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number::<u32>)]
    pub max_failures: Option<u32>,
    /// Evaluate and build, then show what each host would get; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Push the closures once to this Nix binary cache (file://, http(s)://, s3://),
    /// signed with the fleet key; the agents fetch from it (default: `cache` in the fleet).
    #[arg(long, value_name = "URL")]
    pub via_cache: Option<CacheUrl>,
    /// Show each host's closure difference (as `hostctl diff`) and ask before applying.
    #[arg(long, conflicts_with = "dry_run")]
    pub diff: bool,
    /// With --diff: apply without asking.
    #[arg(long, requires = "diff")]
    pub yes: bool,
    /// Deploy even if the commit fails the fleet's `commits` signature policy (or the
    /// tree is dirty); each host's journal records the override and the key that asked.
    #[arg(long)]
    pub allow_unsigned: bool,
    #[command(flatten)]
    pub reboots: RebootArgs,
}

/// How `apply` reboots hosts (issue 16).
#[derive(Debug, Args)]
pub struct RebootArgs {
    /// Reboot the hosts whose new system needs it (kernel, initrd, kernel modules or
    /// parameters, systemd changed): activated with `boot`, booted once, health-checked,
    /// confirmed. A host's `reboot` in fleet.yaml (`never`, `if-needed`, `always`) wins.
    #[arg(long)]
    pub reboot: bool,
    #[command(flatten)]
    pub timeout: RebootTimeoutArg,
}

#[derive(Debug, Args)]
pub struct Select {
    /// A host name, a glob (`web*`), `@tag` or tag glob (`@web-*`), or a comma list of
    /// them (`web1,web2`); repeat to OR. Default: all hosts.
    #[arg(long = "on", value_name = "SEL", add = ArgValueCompleter::new(crate::complete::hosts))]
    pub on: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    fn error(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(cli) => format!("parsed: {cli:?}"),
            Err(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
        }
    }

    #[test]
    fn counts_say_what_is_allowed() {
        for (args, want) in [
            (
                &["hostctl", "apply", "--parallel", "0"][..],
                "error: invalid value '0' for '--parallel <N>': must be at least 1",
            ),
            (
                &["hostctl", "--eval-jobs", "0", "eval"],
                "error: invalid value '0' for '--eval-jobs <N>': must be at least 1",
            ),
            (
                &["hostctl", "apply", "--parallel", "-2"],
                "error: invalid value '-2' for '--parallel <N>': expected a whole number, at least 1",
            ),
            (
                &["hostctl", "apply", "--max-failures", "-1"],
                "error: invalid value '-1' for '--max-failures <N>': expected a whole number, 0 or more",
            ),
            (
                &["hostctl", "rollback", "web1", "--generation", "abc"],
                "error: invalid value 'abc' for '--generation <N>': expected a whole number, 0 or more",
            ),
        ] {
            assert_eq!(error(args), want, "{args:?}");
        }
    }
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The hosts: names, globs (`web*`), `@tag`s or tag globs (`@web-*`), comma lists
    /// (`web1,web2`); as `--on`, each must match a host.
    #[arg(required = true, value_name = "HOST", add = ArgValueCompleter::new(crate::complete::hosts))]
    pub hosts: Vec<String>,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the newest N generations (1 or more), instead of fleet.yaml's `retention`.
    #[arg(long, value_name = "N", value_parser = keep_last, allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the generations younger than this (e.g. `30d`), instead of fleet.yaml's `retention`.
    #[arg(long, value_name = "DURATION", value_parser = keep_younger_than)]
    pub keep_younger_than: Option<hostctl_schemas::duration::Duration>,
}

impl GcArgs {
    /// The policy the options give, if any (each value was checked by its parser).
    pub fn retention(&self) -> Option<hostctl_schemas::retention::Retention> {
        hostctl_schemas::retention::Retention::new(self.keep_last, self.keep_younger_than).ok()
    }
}

/// `--keep-younger-than`: a duration of more than 0s.
fn keep_younger_than(text: &str) -> Result<hostctl_schemas::duration::Duration, String> {
    let d: hostctl_schemas::duration::Duration =
        text.parse().map_err(|e: hostctl_schemas::DurationError| e.to_string())?;
    hostctl_schemas::retention::Retention::new(None, Some(d)).map(|_| d).map_err(|e| e.to_string())
}

/// `--keep-last`: 1 or more.
fn keep_last(text: &str) -> Result<i64, String> {
    let n: i64 = text.parse().map_err(|_| format!("`{text}` is not a number of generations"))?;
    hostctl_schemas::retention::Retention::new(Some(n), None).map(|_| n).map_err(|e| e.to_string())
}
