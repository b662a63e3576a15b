//! `hostctl`: the fleet controller CLI. Glue only: parse, run, print, exit.

mod apply;
mod build;
mod bundle;
mod cache;
mod check;
mod cli;
mod client;
mod clock;
mod closure_diff;
mod commands;
mod commit_policy;
mod complete;
mod context;
mod deploy;
mod deploy_report;
mod deployed_roots;
mod diff;
mod docs;
mod enroll;
mod error;
mod eval_build;
mod evalcache;
mod evaltrace;
mod flake_nix;
mod gc;
mod health;
mod history;
mod host;
mod incremental;
mod logs;
#[cfg(test)]
mod output_schemas;
mod pieces;
mod pipeline;
mod pool;
mod probe;
mod progress;
mod push;
mod reboot;
mod reboot_cmd;
mod rebuild;
mod report;
mod rollback;
mod rollback_target;
mod rollout;
mod select;
mod source_paths;
mod status;
mod tasks;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::cli::Cli;
use crate::error::{EXIT_BAD_INPUT, EXIT_FAILED};

/// Where human-facing text goes; stdout stays machine-readable with `--json`.
#[derive(Debug)]
pub struct Output {
    stderr: std::io::Stderr,
}

impl Output {
    pub fn warn(&mut self, message: &str) {
        let _ = writeln!(self.stderr, "warning: {message}");
    }
}

fn main() -> ExitCode {
    // Answers the completion script (`COMPLETE=SHELL hostctl -- WORDS`) and exits; else a no-op.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    // Documentation commands need no fleet, runtime or Nix.
    if let Some(written) = docs::write(&cli.command, &mut std::io::stdout().lock()) {
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write output: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let mut output = Output { stderr: std::io::stderr() };
    let progress = progress::start();
    let result = match commands::nix_handle(&cli) {
        Ok(nix) => runtime.block_on(commands::run(&cli, Arc::new(nix), &mut output)),
        Err(e) => Err(e),
    };
    // Every progress line is out before the report and any error.
    progress.finish();
    match result {
        Ok(report) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = report.print(cli.json, &mut stdout) {
                eprintln!("error: cannot write output: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
            if !cli.json {
                eprint!("{}", report.notes());
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            // `--json` promises one document on stdout, also when the run never started.
            if cli.json {
                let mut stdout = std::io::stdout().lock();
                let written = serde_json::to_writer_pretty(&mut stdout, &e.document()).map_err(std::io::Error::from);
                if let Err(e) = written.and_then(|()| writeln!(stdout)) {
                    eprintln!("error: cannot write output: {e}");
                }
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
