//! `hostctl-agent`: the per-host daemon. This first version validates its configuration;
//! the HTTP API, activation and D-Bus service build on it (see the README's code map).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hostctl_schemas::agent_config::load_agent_config;

/// Exit code for bad input, as for `hostctl`.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "hostctl-agent", version, about = "hostctl's per-host agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate an agent configuration and print it with defaults filled in.
    CheckConfig {
        #[arg(long, default_value = "/etc/hostctl/agent.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Print the configuration as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    match cli.command {
        Command::CheckConfig { config, json } => match load_agent_config(&config) {
            Ok(cfg) => {
                if json {
                    match serde_json::to_string_pretty(&cfg) {
                        Ok(text) => println!("{text}"),
                        Err(e) => {
                            eprintln!("error: cannot print the configuration: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    println!(
                        "{}: ok (hostname {}, {} trusted key(s))",
                        config.display(),
                        cfg.hostname,
                        cfg.trusted_keys.len()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
    }
}
