//! `hostctl enroll HOST... [--expect KEY]`: pins each host's agent identity in
//! `known_agents` beside the fleet file, as ssh's `StrictHostKeyChecking=yes` expects an
//! operator to: a TLS handshake only (no request is sent), the key the agent showed
//! printed, and recorded only when nothing else is pinned for the host or `--expect`
//! names exactly the key shown. Ordinary commands never record a key.

use std::io::Write as _;
use std::sync::Arc;

use hostctl_schemas::ids::HostName;
use hostctl_schemas::key::PublicKey;
use hostctl_schemas::known_agents::KnownAgents;
use schemars::JsonSchema;
use serde::Serialize;

use crate::context::FleetContext;
use crate::error::Error;
use crate::report::{Fields, HostReport, HostResult, Report};

/// An `enroll` entry's own fields.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnrollFields {
    /// The identity the agent showed (`host:base64`); null if it could not be reached.
    pub seen: Option<String>,
    /// The identity pinned before (fleet.yaml `agent_key` or `known_agents`), if any.
    pub pinned: Option<String>,
    /// Whether `seen` was written to `known_agents` by this run.
    pub recorded: bool,
}

impl Fields for EnrollFields {}

/// One host's outcome before it is reported.
struct Outcome {
    seen: Option<PublicKey>,
    pinned: Option<PublicKey>,
    record: bool,
    error: Option<String>,
}

/// Runs `enroll`: every host at once; then one write of `known_agents` with the keys to record.
pub async fn enroll(
    hosts: &[HostName],
    expect: Option<&PublicKey>,
    ctx: &FleetContext,
) -> Result<Report<EnrollFields>, Error> {
    let mut tasks = Vec::new();
    for name in hosts {
        let host = ctx.host(name)?;
        let addr = host.address.authority(ctx.fleet.defaults.port);
        tasks.push((name.clone(), ctx.pin(name)?, tokio::spawn(seen_key(addr))));
    }
    let from_fleet = |name: &HostName| ctx.fleet.hosts.get(name).is_some_and(|h| h.agent_key.is_some());
    let mut known = ctx.known_agents()?.clone();
    let mut report = Report::default();
    let mut changed = false;
    for (name, pinned, task) in tasks {
        let seen = match task.await {
            Ok(Ok(key)) => Ok(PublicKey { name: name.to_string(), key }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        };
        let outcome = judge(&ctx.enroll_command(&name), seen, pinned, expect, from_fleet(&name));
        if let (true, Some(seen)) = (outcome.record, &outcome.seen) {
            known.pins.insert(name.clone(), seen.clone());
            changed = true;
        }
        report.hosts.insert(name.to_string(), entry(outcome));
    }
    if changed {
        write_pins(ctx, &known)?;
    }
    Ok(report)
}

/// What to do with the key `seen` for the host `enroll` (`hostctl ... enroll HOST`) names.
fn judge(
    enroll: &str,
    seen: Result<PublicKey, String>,
    pinned: Option<PublicKey>,
    expect: Option<&PublicKey>,
    pinned_in_fleet: bool,
) -> Outcome {
    let seen = match seen {
        Ok(seen) => seen,
        Err(error) => return Outcome { seen: None, pinned, record: false, error: Some(error) },
    };
    let fail = |error: String| Some(error);
    let error = match (expect, &pinned) {
        (Some(expect), _) if expect.key != seen.key => {
            fail(format!("the agent shows {seen}, not the expected {expect}; nothing recorded"))
        }
        (_, Some(p)) if p.key == seen.key => None,
        (_, Some(p)) if pinned_in_fleet => fail(format!(
            "the agent shows {seen}, but fleet.yaml pins {p} (`agent_key`); change it there if the new key is right"
        )),
        (None, Some(p)) => fail(format!(
            "the agent shows {seen}, but {p} is pinned; if the new key is right (check `hostctl-agent identity` on the host), run: {enroll} --expect {seen}"
        )),
        _ => None,
    };
    let unchanged = pinned.as_ref().is_some_and(|p| p.key == seen.key);
    let record = error.is_none() && !unchanged;
    Outcome { seen: Some(seen), pinned, record, error }
}

fn entry(outcome: Outcome) -> HostReport<EnrollFields> {
    let result = if outcome.error.is_some() { HostResult::Failed } else { HostResult::Ok };
    let mut entry = HostReport::new(result, None, None).with(EnrollFields {
        seen: outcome.seen.as_ref().map(ToString::to_string),
        pinned: outcome.pinned.as_ref().map(ToString::to_string),
        recorded: outcome.record,
    });
    entry.summary = Some(match (&outcome.seen, outcome.record) {
        (Some(seen), true) => format!("recorded {seen} in known_agents"),
        (Some(seen), false) if outcome.error.is_none() => format!("{seen} already pinned"),
        (Some(seen), false) => format!("shows {seen}, not recorded"),
        (None, _) => "unreachable".to_owned(),
    });
    entry.error = outcome.error;
    entry
}

/// Connects to the agent at `addr` and completes a TLS handshake only; the identity key
/// its certificate carries (the handshake signature verified against it).
async fn seen_key(addr: String) -> Result<[u8; 32], String> {
    let (config, seen) = hostctl_wire::accept_any().map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let mut tls = connector
            .connect(hostctl_wire::server_name(), tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
        // Closed at once: enrollment sends no request.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(crate::client::CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("no TLS handshake with {addr} within {}s", crate::client::CONNECT_TIMEOUT.as_secs()))??;
    seen.get().ok_or_else(|| format!("{addr} showed no ed25519 identity"))
}

/// Writes `known_agents` (a temporary file renamed over it).
fn write_pins(ctx: &FleetContext, known: &KnownAgents) -> Result<(), Error> {
    let path = ctx.known_agents_path();
    let err = |source| Error::WritePins { file: path.display().to_string(), source };
    let mut tmp = tempfile::NamedTempFile::new_in(ctx.fleet_dir()).map_err(err)?;
    tmp.write_all(known.render().as_bytes()).map_err(err)?;
    tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey { name: "web1".into(), key: [byte; 32] }
    }

    #[test]
    fn records_only_a_first_or_expected_key() {
        let web1 = "hostctl enroll web1";
        let first = judge(web1, Ok(key(1)), None, None, false);
        assert!(first.record && first.error.is_none());
        let same = judge(web1, Ok(key(1)), Some(key(1)), None, false);
        assert!(!same.record && same.error.is_none(), "already pinned: nothing to write");
        let changed = judge(web1, Ok(key(2)), Some(key(1)), None, false);
        assert!(!changed.record);
        let text = changed.error.unwrap();
        assert!(text.contains(&format!("hostctl enroll web1 --expect {}", key(2))), "{text}");
        let accepted = judge(web1, Ok(key(2)), Some(key(1)), Some(&key(2)), false);
        assert!(accepted.record && accepted.error.is_none());
        let mismatch = judge(web1, Ok(key(2)), None, Some(&key(3)), false);
        assert!(!mismatch.record);
        assert!(mismatch.error.unwrap().contains(&format!("shows {}, not the expected {}", key(2), key(3))));
        let in_fleet = judge(web1, Ok(key(2)), Some(key(1)), Some(&key(2)), true);
        assert!(!in_fleet.record && in_fleet.error.unwrap().contains("fleet.yaml pins"));
        let unreachable = judge(web1, Err("cannot connect".into()), None, None, false);
        assert!(!unreachable.record && unreachable.error.is_some());
    }
}
