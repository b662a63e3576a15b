//! `hostctl-agent`: the per-host daemon (`serve`), its configuration check
//! (`check-config`), its public identity (`identity`), `status` (the running agent, read over D-Bus) and `binfmt` (one
//! reconcile of the binfmt_misc emulation). Glue only: the daemon lives in the library
//! (see `lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write as _;
use std::path::Path;

use clap::{Parser, Subcommand};
use hostctl_schemas::agent_config::{load_agent_config, AgentConfig, AgentConfigError, Bus};

/// Exit code for bad input (here: a bad configuration), as for `hostctl`.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for work that could not be done (or a deployment that did not succeed).
const EXIT_FAILED: u8 = 1;

/// Why a subcommand did not succeed; [`AgentError::exit_code`] is the one place errors
/// become exit codes.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error(transparent)]
    Config(#[from] AgentConfigError),
    /// The configuration `file` loads but cannot be used as it is.
    #[error("{file}: {problem}")]
    Unusable { file: String, problem: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Status(#[from] hostctl_agent::dbus::client::ClientError),
    #[error(transparent)]
    Import(#[from] hostctl_agent::bundle_client::ImportError),
    #[error(transparent)]
    Serve(#[from] hostctl_agent::serve::ServeError),
    #[error(transparent)]
    Identity(#[from] hostctl_agent::identity::IdentityError),
    #[error("{dir}: {source}")]
    StateDir { dir: String, source: hostctl_agent::journal::JournalError },
    #[error("cannot print the configuration: {0}")]
    Print(serde_json::Error),
    /// The command printed its result, which is a failure (a deployment not confirmed,
    /// emulation the kernel refused): nothing more to say.
    #[error("")]
    Reported,
    /// An argument clap could not check (the page of `man`).
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

impl AgentError {
    fn unusable(file: &Path, problem: impl std::fmt::Display) -> Self {
        Self::Unusable { file: file.display().to_string(), problem: problem.to_string() }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Unusable { .. } | Self::Usage(_) => EXIT_BAD_INPUT,
            Self::Status(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            Self::Import(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            Self::Serve(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            Self::Identity(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            Self::Runtime(_)
            | Self::Status(_)
            | Self::Import(_)
            | Self::Serve(_)
            | Self::Identity(_)
            | Self::StateDir { .. }
            | Self::Print(_)
            | Self::Reported
            | Self::Output(_) => EXIT_FAILED,
        }
    }
}

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
    /// Print the agent's public identity, `<hostname>:<base64>`, as the controller pins it
    /// (fleet.yaml `agent_key`, `hostctl enroll --expect`); generates the identity key
    /// first if there is none yet, as `serve` would.
    Identity {
        #[arg(long, default_value = "/etc/hostctl/agent.yaml", value_name = "FILE")]
        config: PathBuf,
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
    /// Print a man page (roff) on stdout: hostctl-agent(1), or hostctl-agent-SUBCOMMAND(1);
    /// or write them all into a directory.
    Man {
        /// The subcommand whose page to print (default: the hostctl-agent(1) page).
        #[arg(value_name = "SUBCOMMAND", conflicts_with = "dir")]
        page: Option<String>,
        /// Write every page (hostctl-agent.1, hostctl-agent-serve.1, ...) into this existing
        /// directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// What every page says beyond the options: the exit codes of [`AgentError::exit_code`].
const MAN_SECTIONS: &[hostctl_schemas::man::Section<'static>] = &[
    hostctl_schemas::man::Section {
        title: "EXIT STATUS",
        items: &[
            ("0", "Success (for import: the deployment was confirmed)."),
            ("1", "The work could not be done, or its result is a failure (import: failed or rolled back; binfmt: the kernel refused)."),
            ("2", "Bad input: a bad configuration, bus address or bundle (signature, host, age, hash); nothing was changed."),
        ],
    },
    hostctl_schemas::man::Section {
        title: "ENVIRONMENT",
        items: &[("RUST_LOG", "Log filter for stderr (default `info`), e.g. `hostctl_agent=debug`.")],
    },
    hostctl_schemas::man::Section {
        title: "FILES",
        items: &[
            ("/etc/hostctl/agent.yaml", "The agent configuration (--config); `hostctl-agent check-config` validates it."),
            ("/var/lib/hostctl-agent", "The default `state_dir`: the deployment journal and records."),
            (
                "state_dir/identity.key, state_dir/identity.pub",
                "The agent's identity key (0600, generated at first start unless `identity_key_file` names one) and its public half (`hostctl-agent identity`), which controllers pin in fleet.yaml or known_agents.",
            ),
        ],
    },
];

/// `man`: a page on stdout, or every page into `dir` (their paths on stdout).
fn man(page: Option<&str>, dir: Option<&Path>) -> Result<(), AgentError> {
    use clap::CommandFactory as _;
    let mut stdout = std::io::stdout().lock();
    let written = match dir {
        Some(dir) => hostctl_schemas::man::write_dir(Cli::command(), dir, MAN_SECTIONS)
            .and_then(|files| files.iter().try_for_each(|f| writeln!(stdout, "{}", f.display()))),
        None => hostctl_schemas::man::render(Cli::command(), page, MAN_SECTIONS, &mut stdout),
    };
    written.map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            AgentError::Usage(e.to_string())
        } else {
            AgentError::Output(e)
        }
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, AgentError::Reported) {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(command: Command) -> Result<(), AgentError> {
    match command {
        Command::Serve { config } => serve(&config, load(&config)?),
        Command::CheckConfig { config, json } => check_config(&config, &load(&config)?, json),
        Command::Identity { config } => identity(&load(&config)?),
        Command::Status { json, config, bus } => status(json, config, bus),
        Command::Import { file, config } => import(&load(&config)?, &file),
        Command::Binfmt { config, json, dry_run } => binfmt(&config, &load(&config)?, json, dry_run),
        Command::Man { page, dir } => man(page.as_deref(), dir.as_deref()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AgentError::Runtime)
}

/// `status`: exit 2 for a bad configuration or bus address, 1 if the agent is not reachable.
fn status(json: bool, config: Option<PathBuf>, bus: Option<Bus>) -> Result<(), AgentError> {
    let text = runtime()?.block_on(hostctl_agent::dbus::client::status(bus, config.as_deref(), json))?;
    print!("{text}");
    Ok(())
}

/// `identity`: the public identity; a named key file that is missing, unreadable or
/// readable by others is exit 2, naming it.
fn identity(config: &AgentConfig) -> Result<(), AgentError> {
    hostctl_agent::serve::check_private_paths(config).map_err(hostctl_agent::serve::ServeError::from)?;
    hostctl_agent::journal::create_private_dir(&config.state_dir)
        .map_err(|source| AgentError::StateDir { dir: config.state_dir.display().to_string(), source })?;
    let key = hostctl_agent::identity::load_or_create(config)?;
    println!("{}", hostctl_agent::identity::public_identity(config, &key));
    Ok(())
}

/// `import`: the deployment's end decides the exit code.
fn import(config: &AgentConfig, file: &Path) -> Result<(), AgentError> {
    let d = runtime()?.block_on(hostctl_agent::bundle_client::import(config, file))?;
    println!("{}", hostctl_agent::bundle_client::describe(&d));
    if d.state == hostctl_schemas::api::deployments::DeploymentState::Confirmed {
        Ok(())
    } else {
        Err(AgentError::Reported)
    }
}

/// Loads the configuration; a bad one is reported (file:line:column) as bad input, as
/// is a health check the agent cannot run.
fn load(path: &Path) -> Result<AgentConfig, AgentError> {
    let config = load_agent_config(path)?;
    hostctl_agent::health::refuse_http("health", &config.health).map_err(|e| AgentError::unusable(path, e))?;
    if let Some(pull) = &config.pull {
        pull.check(path)?;
        if let Some(policy) = &pull.commits {
            policy.check(path, "pull.commits")?;
        }
        hostctl_agent::pull::verify::load_trust(pull).map_err(|e| AgentError::unusable(path, e))?;
    }
    if let Some(binfmt) = &config.binfmt {
        hostctl_agent::binfmt::plan(binfmt).map_err(|e| AgentError::unusable(path, e))?;
    }
    Ok(config)
}

/// `serve`; what it refuses in the configuration names the file, as `check-config` does.
fn serve(path: &Path, config: AgentConfig) -> Result<(), AgentError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Plain lines for journald when stderr is not a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(AgentError::Runtime)?;
    runtime.block_on(hostctl_agent::serve::serve(config)).map_err(|e| match e {
        e @ (hostctl_agent::serve::ServeError::Config(_) | hostctl_agent::serve::ServeError::Permissions(_)) => {
            AgentError::unusable(path, e)
        }
        e => AgentError::Serve(e),
    })
}

/// `binfmt`: one reconcile of the configuration's `binfmt:` section.
fn binfmt(path: &Path, cfg: &AgentConfig, json: bool, dry_run: bool) -> Result<(), AgentError> {
    let section = cfg
        .binfmt
        .as_ref()
        .ok_or_else(|| AgentError::unusable(path, "no `binfmt:` section (binfmt.emulated_systems)"))?;
    let plan = hostctl_agent::binfmt::plan(section).map_err(|e| AgentError::unusable(path, e))?;
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
        Ok(())
    } else {
        Err(AgentError::Reported)
    }
}

fn check_config(path: &Path, cfg: &AgentConfig, json: bool) -> Result<(), AgentError> {
    // What `serve` would refuse at start, reported before a restart meets it.
    hostctl_agent::serve::check_startable(cfg).map_err(|e| AgentError::unusable(path, e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(cfg).map_err(AgentError::Print)?);
    } else {
        let keys = hostctl_schemas::text::plural(cfg.trusted_keys.len(), "trusted key", "trusted keys");
        println!("{}: ok (hostname {}, {keys})", path.display(), cfg.hostname);
    }
    Ok(())
}
