//! `hostctl-agent`: the per-host daemon (`serve`), its configuration check
//! (`check-config`), `status` (the running agent, read over D-Bus) and `binfmt` (one
//! reconcile of the binfmt_misc emulation). Glue only: the daemon lives in the library
//! (see `lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hostctl_schemas::agent_config::{load_agent_config, AgentConfig, Bus};

/// Exit code for bad input (here: a bad configuration), as for `hostctl`.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "hostctl-agent", version, about = "hostctl's per-host agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent daemon: the signed HTTP API v1, activations, the deployment journal.
    Serve {
        #[arg(long, default_value = "/etc/hostctl/agent.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate an agent configuration and print it with defaults filled in.
    CheckConfig {
        #[arg(long, default_value = "/etc/hostctl/agent.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Print the configuration as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the running agent's state, read over D-Bus (org.hostctl.Agent1).
    Status {
        /// Print the JSON document of the agent's Status() method.
        #[arg(long)]
        json: bool,
        /// Take the bus from this agent configuration (default: /etc/hostctl/agent.yaml if
        /// it exists and is readable, else the system bus).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The bus: `system`, `session` or a D-Bus address; overrides the configuration.
        #[arg(long, value_name = "ADDR")]
        bus: Option<Bus>,
    },
    /// Hand a bundle written by `hostctl bundle` to the agent running on this host (no
    /// network needed) and wait for its deployment. Exit 0 confirmed, 1 failed or rolled
    /// back (or the agent is not running), 2 refused (signature, host, age, hash).
    Import {
        /// The bundle file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, default_value = "/etc/hostctl/agent.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Register the binfmt_misc emulation of `binfmt.emulated_systems` once, as `serve` does
    /// (and keeps doing), write the Nix config file, and print what is registered. Exit 1
    /// if the kernel refused something.
    Binfmt {
        #[arg(long, default_value = "/etc/hostctl/agent.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
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
        Command::Serve { config } => match load(&config) {
            Ok(cfg) => serve(cfg),
            Err(code) => code,
        },
        Command::CheckConfig { config, json } => match load(&config) {
            Ok(cfg) => check_config(&config, &cfg, json),
            Err(code) => code,
        },
        Command::Status { json, config, bus } => status(json, config, bus),
        Command::Import { file, config } => match load(&config) {
            Ok(cfg) => import(&cfg, &file),
            Err(code) => code,
        },
        Command::Binfmt { config, json, dry_run } => match load(&config) {
            Ok(cfg) => binfmt(&config, &cfg, json, dry_run),
            Err(code) => code,
        },
    }
}

/// `status`: exit 2 for a bad configuration or bus address, 1 if the agent is not reachable.
fn status(json: bool, config: Option<PathBuf>, bus: Option<Bus>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hostctl_agent::dbus::client::status(bus, config.as_deref(), json)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { EXIT_BAD_INPUT } else { 1 })
        }
    }
}

/// `import`: the deployment's end decides the exit code.
fn import(config: &AgentConfig, file: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hostctl_agent::bundle_client::import(config, file)) {
        Ok(d) => {
            println!("{}", hostctl_agent::bundle_client::describe(&d));
            let confirmed = d.state == hostctl_schemas::api::deployments::DeploymentState::Confirmed;
            ExitCode::from(if confirmed { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { EXIT_BAD_INPUT } else { 1 })
        }
    }
}

/// Loads the configuration; a bad one is reported (file:line:column) as bad input, as
/// is a health check the agent cannot run.
fn load(path: &std::path::Path) -> Result<AgentConfig, ExitCode> {
    let config = load_agent_config(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_BAD_INPUT)
    })?;
    hostctl_agent::health::refuse_http("health", &config.health).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(EXIT_BAD_INPUT)
    })?;
    if let Some(pull) = &config.pull {
        pull.check(path).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        })?;
    }
    if let Some(binfmt) = &config.binfmt {
        hostctl_agent::binfmt::plan(binfmt).map_err(|e| {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::from(EXIT_BAD_INPUT)
        })?;
    }
    Ok(config)
}

fn serve(config: AgentConfig) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Plain lines for journald when stderr is not a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hostctl_agent::serve::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_bad_input() {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `binfmt`: one reconcile of the configuration's `binfmt:` section.
fn binfmt(path: &std::path::Path, cfg: &AgentConfig, json: bool, dry_run: bool) -> ExitCode {
    let Some(section) = &cfg.binfmt else {
        eprintln!("error: {}: no `binfmt:` section (binfmt.emulated_systems)", path.display());
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    let plan = match hostctl_agent::binfmt::plan(section) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let report = hostctl_agent::binfmt::reconcile(&plan, dry_run);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot print the report: {e}"),
        }
    } else {
        for line in report.lines() {
            println!("{line}");
        }
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_config(path: &std::path::Path, cfg: &AgentConfig, json: bool) -> ExitCode {
    // What `serve` would refuse at start, reported before a restart meets it.
    if let Err(e) = hostctl_agent::serve::check_private_paths(cfg) {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if json {
        match serde_json::to_string_pretty(cfg) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot print the configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let keys = hostctl_schemas::text::plural(cfg.trusted_keys.len(), "trusted key", "trusted keys");
        println!("{}: ok (hostname {}, {keys})", path.display(), cfg.hostname);
    }
    ExitCode::SUCCESS
}
