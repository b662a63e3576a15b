//! `hostctl-agent status`: asks the running agent for its `Status()` over D-Bus and
//! prints it, as the JSON document itself (`--json`) or as lines for humans.
//!
//! The bus is `--bus`, else the `bus` of `--config FILE`, else that of
//! `/etc/hostctl/agent.yaml` if it exists and this user may read it, else the system bus.

use std::path::Path;
use std::time::Duration;

use hostctl_schemas::agent_config::{load_agent_config, Bus};
use hostctl_schemas::api::status::StatusResponse;

use super::props::agent_state_name;
use super::{builder, describe, INTERFACE, NAME, PATH};

/// The configuration read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/hostctl/agent.yaml";

/// How long the agent may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `status` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad input: the configuration or the bus address (exit code 2).
    #[error("{0}")]
    BadInput(String),
    #[error("cannot connect to {bus}: {source}")]
    Connect {
        bus: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("no hostctl agent on {bus}: nobody owns {NAME} ({message})")]
    NoAgent { bus: String, message: String },
    #[error("{NAME}.Status() on {bus} failed: {source}")]
    Call {
        bus: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("the agent on {bus} answered a status this version cannot read: {problem}")]
    Answer { bus: String, problem: String },
}

impl ClientError {
    /// Bad input (exit 2) rather than an unreachable agent (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::BadInput(_))
    }
}

/// The bus to ask: `bus`, else the configuration's (see the module documentation).
pub fn resolve_bus(bus: Option<Bus>, config: Option<&Path>) -> Result<Bus, ClientError> {
    if let Some(bus) = bus {
        return Ok(bus);
    }
    let path = match config {
        Some(path) => path,
        // Only if this user can read it: the bus alone does not need root.
        None if std::fs::File::open(DEFAULT_CONFIG).is_ok() => Path::new(DEFAULT_CONFIG),
        None => return Ok(Bus::System),
    };
    load_agent_config(path).map(|c| c.bus).map_err(|e| ClientError::BadInput(e.to_string()))
}

/// The JSON of the agent's `Status()` on `bus`.
pub async fn fetch_status(bus: &Bus) -> Result<String, ClientError> {
    let bus_text = describe(bus);
    let builder = builder(bus).map_err(|e| ClientError::BadInput(format!("bus `{}`: {e}", bus.as_str())))?;
    let connection = builder
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(|e| ClientError::Connect { bus: bus_text.clone(), source: Box::new(e) })?;
    let reply =
        connection.call_method(Some(NAME), PATH, Some(INTERFACE), "Status", &()).await.map_err(
            |source| match &source {
                zbus::Error::MethodError(name, message, _)
                    if matches!(
                        name.as_str(),
                        "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    ) =>
                {
                    ClientError::NoAgent { bus: bus_text.clone(), message: message.clone().unwrap_or_default() }
                }
                _ => ClientError::Call { bus: bus_text.clone(), source: Box::new(source) },
            },
        )?;
    reply.body().deserialize::<String>().map_err(|e| ClientError::Answer { bus: bus_text, problem: e.to_string() })
}

/// What `hostctl-agent status` prints: the JSON document (`json`) or [`render`]ed lines.
pub async fn status(bus: Option<Bus>, config: Option<&Path>, json: bool) -> Result<String, ClientError> {
    let bus = resolve_bus(bus, config)?;
    let text = fetch_status(&bus).await?;
    let status: StatusResponse =
        serde_json::from_str(&text).map_err(|e| ClientError::Answer { bus: describe(&bus), problem: e.to_string() })?;
    if json {
        Ok(format!("{text}\n"))
    } else {
        Ok(render(&status))
    }
}

/// The status for humans, one `key value` line each; `-` for what is not known.
pub fn render(s: &StatusResponse) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut lines = vec![format!("{}: {} ({}, agent {})", s.hostname, agent_state_name(s.state), s.system, s.version)];
    let mut line = |key: &str, value: String| lines.push(format!("  {key:<12}{value}"));
    line("generation", s.generation.map_or_else(|| "-".to_owned(), |g| g.to_string()));
    line("system", or_dash(&s.toplevel));
    line("revision", or_dash(&s.rev));
    line("lock", or_dash(&s.lock));
    line("pinned lock", or_dash(&s.pinned_lock));
    line("deployment", or_dash(&s.deployment));
    line("running", or_dash(&s.current_system));
    line("booted", or_dash(&s.booted_system));
    line("emulated", if s.emulated_systems.is_empty() { "-".to_owned() } else { s.emulated_systems.join(", ") });
    if let Some(p) = &s.pull {
        line("pull", format!("{} {} (lock {})", p.url, p.branch, p.lock_policy));
        line("fetched", or_dash(&p.fetched_commit));
        line("applied", or_dash(&p.applied_commit));
        let pending = match (&p.pending_commit, &p.pending_lock) {
            (Some(c), Some(l)) => format!("{c} (lock {l})"),
            (Some(c), None) => c.clone(),
            _ => "-".to_owned(),
        };
        line("pending", pending);
        if let Some(r) = &p.refused {
            line("refused", format!("{} ({})", r.commit, r.reason.as_str()));
        }
        if let Some(e) = &p.last_error {
            line("pull error", e.clone());
        }
    }
    if let Some(signer) = &s.signer {
        line("signed by", signer.to_string());
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let flag: Bus = "unix:path=/tmp/a".parse().unwrap();
        assert_eq!(resolve_bus(Some(flag.clone()), Some(Path::new("/nonexistent.yaml"))).unwrap(), flag);
        let missing = resolve_bus(None, Some(&dir.path().join("agent.yaml"))).unwrap_err();
        assert!(missing.is_bad_input(), "{missing}");
        let config = dir.path().join("agent.yaml");
        let key = "k:".to_owned() + &"A".repeat(43) + "=";
        std::fs::write(&config, format!("hostname: web1\ntrusted_keys: [\"{key}\"]\nbus: unix:path=/tmp/b\n")).unwrap();
        assert_eq!(resolve_bus(None, Some(&config)).unwrap(), Bus::Address("unix:path=/tmp/b".into()));
    }

    #[test]
    fn render_uses_dashes_for_nothing() {
        let status: StatusResponse = serde_json::from_value(serde_json::json!({
            "hostname": "web1", "system": "x86_64-linux", "state": "awaiting-confirmation", "generation": 2,
            "toplevel": "/nix/store/00000000000000000000000000000000-s", "rev": null, "lock": null,
            "deployment": "d1", "pinned_lock": null, "booted_system": null, "current_system": null,
            "emulated_systems": [], "version": "0.1.0", "pull": null
        }))
        .unwrap();
        let text = render(&status);
        assert!(text.starts_with("web1: awaiting-confirmation (x86_64-linux, agent 0.1.0)\n"), "{text}");
        assert!(text.contains("\n  generation  2\n"), "{text}");
        assert!(text.contains("\n  revision    -\n"), "{text}");
    }

    #[test]
    fn render_shows_a_refused_commit_and_the_signer() {
        let mut status = StatusResponse::idle("web1");
        status.signer = serde_json::from_value(serde_json::json!({
            "kind": "ssh", "name": "alice@example.com", "fingerprint": "SHA256:abc"
        }))
        .unwrap();
        status.pull = serde_json::from_value(serde_json::json!({
            "url": "/srv/fleet.git", "branch": "main", "lock_policy": "pinned", "fetched_commit": null,
            "applied_commit": null, "pending_commit": null, "pending_lock": null, "last_fetch": null,
            "last_error": "commit c1: it is not signed",
            "refused": {"reason": "unsigned", "commit": "c1", "message": "commit c1: it is not signed"}
        }))
        .unwrap();
        let text = render(&status);
        assert!(text.contains("\n  refused     c1 (unsigned)\n"), "{text}");
        assert!(text.contains("\n  signed by   alice@example.com (SHA256:abc)\n"), "{text}");
    }
}
