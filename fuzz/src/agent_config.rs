//! Target `agent_config`: `agent.yaml` text through `parse_agent_config` and then the
//! checks `hostctl-agent` runs on it before it serves (`main.rs::load`: no `http` health
//! checks, `pull.check`, the binfmt plan). Every refusal names the file and position or
//! the key; an accepted config reads back unchanged from YAML and from the JSON that
//! `check-config --json` prints and the NixOS module writes.

use std::path::{Path, PathBuf};

use hostctl_agent::binfmt::config::{plan_for, HostFacts};
use hostctl_schemas::agent_config::{parse_agent_config, AgentConfig};

use super::{ensure, yaml_error_names_place, Verdict};

/// The file name the errors must name.
pub const ORIGIN: &str = "agent.yaml";

/// Whether `parse_agent_config` accepts the input.
pub fn accepts(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|text| parse_agent_config(text, Path::new(ORIGIN)).is_ok())
}

pub fn check(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else { return Ok(()) };
    match parse_agent_config(text, Path::new(ORIGIN)) {
        Err(err) => yaml_error_names_place(&err, ORIGIN, text),
        Ok(config) => {
            round_trips(&config)?;
            start_checks(&config)
        }
    }
}

fn round_trips(config: &AgentConfig) -> Verdict {
    let yaml = serde_yaml::to_string(config).map_err(|e| format!("an accepted config does not serialize: {e}"))?;
    let again = parse_agent_config(&yaml, Path::new(ORIGIN));
    ensure(again.as_ref().ok() == Some(config), || format!("YAML round trip changed the config:\n{yaml}\n{again:?}"))?;
    let json =
        serde_json::to_string_pretty(config).map_err(|e| format!("an accepted config does not serialize: {e}"))?;
    let again = parse_agent_config(&json, Path::new(ORIGIN));
    ensure(again.as_ref().ok() == Some(config), || format!("JSON round trip changed the config:\n{json}\n{again:?}"))
}

/// What `hostctl-agent` checks after parsing; the binfmt plan against a fixed host (no
/// qemu anywhere), so the outcome does not depend on the machine.
fn start_checks(config: &AgentConfig) -> Verdict {
    if let Err(e) = hostctl_agent::health::refuse_http("health", &config.health) {
        ensure(e.starts_with("health["), || format!("http refusal does not name the check: {e}"))?;
    }
    if let Some(pull) = &config.pull {
        let _ = (pull.remote(), pull.known_hosts_file());
        if let Err(e) = pull.check(Path::new(ORIGIN)) {
            let shown = e.to_string();
            ensure(shown.starts_with("agent.yaml: pull."), || format!("pull refusal does not name the key: {shown}"))?;
        }
    }
    if let Some(binfmt) = &config.binfmt {
        let host = HostFacts {
            system: "x86_64-linux".to_owned(),
            qemu_dir: PathBuf::from("/nonexistent/hostctl-fuzz"),
            path: None,
        };
        match plan_for(binfmt, &host) {
            Err(e) => ensure(e.key.starts_with("binfmt."), || format!("binfmt refusal does not name the key: {e}"))?,
            Ok(plan) => {
                for wanted in &plan.wanted {
                    // `:name:M::magic:mask:interpreter:flags`: a `:` inside a field would
                    // shift the kernel's fields.
                    let line = wanted.register_line();
                    ensure(line.split(':').count() == 8, || format!("register line has extra fields: {line}"))?;
                }
            }
        }
    }
    Ok(())
}
