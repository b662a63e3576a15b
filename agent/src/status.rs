//! The agent's status as one snapshot: what `GET /v1/status` answers and what the D-Bus
//! properties publish, computed from the profile, the journal, the pull task and the
//! kernel's binfmt_misc entries. Read-only.

use hostctl_schemas::agent_config::DEFAULT_BINFMT_MOUNT;
use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::api::status::{AgentState, StatusResponse};

use crate::generations::system_of_generation;
use crate::handles::Handles;
use crate::host::{nix_system, read_link_text, BOOTED_SYSTEM, CURRENT_SYSTEM};
use crate::journal::Record;

/// What `GET /v1/status` answers now (the D-Bus properties come from the same snapshot).
pub fn snapshot(app: &Handles) -> Result<StatusResponse, String> {
    let profile = app.deployer.profile();
    let current = profile.current().map_err(|e| format!("cannot read the profile {profile}: {e}"))?;
    let (generation, toplevel) = match current {
        Some((n, toplevel)) => (Some(n), toplevel),
        None => (None, None),
    };
    let records = app.deployer.records();
    let made_current = generation.zip(toplevel.as_ref()).and_then(|(n, t)| system_of_generation(&records, n, t));
    let store_fs = crate::host::StoreFs::from_store_url(app.config.store.as_deref());
    let booted = std::path::Path::new(BOOTED_SYSTEM);
    let reboot = toplevel.as_ref().and_then(|t| crate::reboot::reasons(&store_fs, booted, t));
    Ok(StatusResponse {
        hostname: app.config.hostname.to_string(),
        system: nix_system(),
        state: agent_state(&records),
        generation,
        toplevel: toplevel.map(String::from),
        rev: made_current.and_then(|r| r.deployment.rev.clone()),
        lock: made_current.and_then(|r| r.deployment.lock.as_ref().map(ToString::to_string)),
        deployment: made_current.map(|r| r.deployment.id.clone()),
        pinned_lock: crate::pull::pinned_lock(&records).map(ToString::to_string),
        booted_system: read_link_text(std::path::Path::new(BOOTED_SYSTEM)),
        current_system: read_link_text(std::path::Path::new(CURRENT_SYSTEM)),
        emulated_systems: crate::binfmt::emulated_systems(binfmt_mount(app)),
        version: crate::version::version(),
        pull: app.pull.as_ref().map(|p| p.status(&records)),
        damaged_records: damaged_records(app),
        signer: made_current.and_then(|r| r.deployment.signer.clone()),
        last_deployment: records
            .iter()
            .rev()
            .find(|r| !r.is_open())
            .map(|r| hostctl_schemas::api::status::LastDeployment::of(&r.deployment)),
        store_free_bytes: store_fs.store_free_bytes(),
        reboot_required: reboot.as_ref().map(|reasons| !reasons.is_empty()),
        reboot_reasons: reboot.unwrap_or_default(),
        boot_id: crate::bootloader::read_boot_id(&app.config.boot.boot_id_file),
        boot_free_bytes: store_fs.boot_free_bytes(),
    })
}

/// The journal records moved aside at start (see `journal.rs`).
fn damaged_records(app: &Handles) -> Vec<hostctl_schemas::api::status::DamagedRecord> {
    let shown = |p: &std::path::Path| p.display().to_string();
    app.deployer
        .journal()
        .quarantined()
        .iter()
        .map(|q| hostctl_schemas::api::status::DamagedRecord {
            file: shown(&q.file),
            moved_to: shown(&q.moved_to),
            problem: q.problem.clone(),
        })
        .collect()
}

/// Where binfmt_misc is read: the configured mount point, else the default one (entries a
/// previous configuration left are still reported while they are registered).
fn binfmt_mount(app: &Handles) -> &std::path::Path {
    app.config.binfmt.as_ref().map_or(std::path::Path::new(DEFAULT_BINFMT_MOUNT), |b| b.mount_point.as_path())
}

/// What the agent is doing, from the deployments not yet final.
pub fn agent_state(records: &[Record]) -> AgentState {
    let states = || records.iter().map(|r| r.deployment.state);
    if states().any(|s| matches!(s, DeploymentState::Queued | DeploymentState::Activating | DeploymentState::Rebooting))
    {
        AgentState::Activating
    } else if states().any(|s| s == DeploymentState::AwaitingConfirmation) {
        AgentState::AwaitingConfirmation
    } else {
        AgentState::Idle
    }
}
