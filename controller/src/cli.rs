//! The command line (clap): DESIGN.md's CLI contract. Commands appear here once they work.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hostctl", version, about = "Declarative NixOS fleet manager")]
pub struct Cli {
    /// The fleet inventory.
    #[arg(long, global = true, default_value = "fleet.yaml", value_name = "FILE")]
    pub fleet: PathBuf,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Evaluations to run at once (default: from cores and free memory).
    #[arg(long, global = true, value_name = "N")]
    pub eval_jobs: Option<NonZeroUsize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate each selected host: host -> .drv path.
    Eval(Select),
    /// Build each selected host: host -> toplevel store path.
    Build(Select),
    /// Lint the fleet: inventory vs flake, lock hygiene, git state.
    Check,
}

#[derive(Debug, Args)]
pub struct Select {
    /// A host name, a glob (`web*`) or `@tag`; repeat to OR. Default: all hosts.
    #[arg(long = "on", value_name = "SEL")]
    pub on: Vec<String>,
}
