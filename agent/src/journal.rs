//! The deployment journal: one JSON file per deployment in `<state_dir>/deployments/`,
//! next to its activation log (`<id>.log`) and exit status (`<id>.exit`), the rollback
//! activation's (`<id>+rollback.log`, `<id>+rollback.exit`) and the last health check
//! output (`<id>+health.log`; `+` is not allowed in ids, so these names cannot collide).
//!
//! Each record carries a [`Phase`]: a marker written *before* each step that changes the
//! host, so a restarted agent knows exactly which step may have been cut short (see
//! `recovery.rs` for what it does about each).
//!
//! Invariant: a record on disk is always complete: it is written to `<id>.json.tmp`,
//! fsynced, renamed over `<id>.json`, and the directory fsynced, so a crash leaves the
//! old or the new version, never half of one. A leftover `.tmp` is such an interrupted
//! write and is discarded on load (with a warning). The in-memory copy changes only after
//! the disk write succeeded, so what the API reports is always what a restarted agent will
//! load; a write that fails (a full disk) removes its `.tmp` again. One exception: when
//! even the write that ends a deployment fails, [`Journal::close_unwritten`] ends it in
//! memory so the agent does not stay stuck on it; that version is written before any new
//! deployment is accepted, and a restart before then finishes the deployment from the
//! phase on disk (recovery never needs the lost version).
//!
//! A record that cannot be loaded anyway (damaged on disk, truncated by a file system
//! without ordered writes, edited by hand) must neither keep the agent from starting nor
//! be forgotten: it is renamed to `<id>.json.corrupt-<unix time>` (kept, never deleted,
//! never loaded again), logged as an error with `file:line:column` and the parse error,
//! listed by [`Journal::quarantined`], and the agent goes on with the other records. The
//! host keeps running whatever it runs: a deployment whose record is lost is not resumed
//! or rolled back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use hostctl_schemas::api::deployments::{Deployment, DeploymentState, EndReason};
use hostctl_schemas::api::rollback::RollbackTarget;
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::{CacheUrl, HealthCheck};
use serde::{Deserialize, Serialize};

use crate::activation::ActivationHandle;
use crate::events::{AgentEvent, Events};
use crate::orphan::ChildProcess;
use crate::transition::{IllegalTransition, Transition};

/// One deployment as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Creation order (several deployments can share a `created` second).
    pub seq: u64,
    /// What the API reports.
    pub deployment: Deployment,
    /// The confirmation window the deployment was requested with.
    pub confirm_timeout: Duration,
    /// The running or finished activation, once started.
    pub activation: Option<ActivationHandle>,
    /// Which step the deployment is at (written before the step starts).
    #[serde(default)]
    pub phase: Phase,
    /// The dead man's switch: set in the same write that journals the activation handle,
    /// before `switch-to-configuration` may run, for deployments that need confirmation.
    /// An armed deployment ends confirmed or re-activates `previous_toplevel`, also across
    /// agent restarts.
    #[serde(default)]
    pub armed: bool,
    /// The request's `command` health checks (the agent's own come from its config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// The rollback in progress or done (re-activating `previous_toplevel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRun>,
    /// For deployments made by `POST /v1/rollback`: the target asked for (a retry with the
    /// same id and target gets this deployment back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_target: Option<RollbackTarget>,
    /// What the profile pointed at when the deployment was accepted: what a failed or
    /// rolled-back switch/boot deployment restores the profile (and boot entry) to. It
    /// differs from `previous_toplevel` (the system that was *running*) after a `boot`
    /// or `test` deployment. Records of older agents lack it: see [`Record::profile_before`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_profile: Option<StorePath>,
    /// The latest profile-changing Nix process started for this deployment (journaled
    /// before the agent waits on it; see `orphan.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nix_child: Option<ChildProcess>,
    /// The binary cache the request named (`substitute.rs`): the toplevel's closure is
    /// fetched from it before anything else if the store lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheUrl>,
    /// The request's generation retention (fleet.yaml), applied once it is confirmed
    /// (`crate::gc`); `None`: the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<hostctl_schemas::retention::Retention>,
    /// The request asked to boot the new system once and reboot into it (`boot` only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
}

impl Record {
    /// A fresh record (`seq` is assigned on insert).
    pub fn new(deployment: Deployment, confirm_timeout: Duration) -> Self {
        Self {
            seq: 0,
            deployment,
            confirm_timeout,
            activation: None,
            phase: Phase::Accepted,
            armed: false,
            health: Vec::new(),
            rollback: None,
            rollback_target: None,
            previous_profile: None,
            nix_child: None,
            cache: None,
            retention: None,
            reboot: false,
        }
    }

    /// What the profile pointed at before this deployment (`previous_profile`, or for a
    /// record written before that field existed, `previous_toplevel`).
    pub fn profile_before(&self) -> Option<&StorePath> {
        self.previous_profile.as_ref().or(self.deployment.previous_toplevel.as_ref())
    }

    /// Not final yet: the agent still has work to do for it.
    pub fn is_open(&self) -> bool {
        !self.deployment.state.is_final()
    }
}

/// Where a deployment is; each marker is journaled before the step it names begins. Only
/// [`Record::apply`] (`transition.rs`) changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Accepted (`queued`); nothing changed on the host.
    #[default]
    Accepted,
    /// Still `queued`: fetching the toplevel's closure from the request's cache (only
    /// store paths are added; profile and running system untouched).
    Substituting,
    /// About to run `nix-env --set TOPLEVEL` (switch/boot): the profile may have changed.
    SettingProfile,
    /// The profile has the new generation; the activation was not started.
    ProfileSet,
    /// The activation handle is journaled; `switch-to-configuration` may be running.
    Activating,
    /// The activation succeeded; health checks are running.
    Checking,
    /// Waiting for confirmation until `confirm_deadline`.
    AwaitingConfirmation,
    /// Re-activating `previous_toplevel` (details in [`Record::rollback`]).
    RollingBack,
    /// A `reboot` deployment activated with `boot`: the loader boots the new system once
    /// and the reboot was asked for (`deployment.reboot`; see `boot_once.rs`).
    Rebooting,
    /// Final: nothing left to do.
    Done,
}

/// A rollback: why, how the deployment ends once it worked, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRun {
    /// Why the deployment is rolled back (the start of its `error`).
    pub reason: String,
    /// `failed` (the activation failed) or `rolled-back` (unconfirmed, unhealthy, asked).
    pub end_state: DeploymentState,
    /// Why, typed: the deployment's `end_reason` once the rollback ends (absent in
    /// records of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    pub step: RollbackStep,
    /// The generation `nix-env --set PREVIOUS` created (switch/boot).
    #[serde(default)]
    pub generation: Option<u64>,
    /// The rollback's current activation (of the step `activation_index` of the plan,
    /// see `rollback.rs`).
    #[serde(default)]
    pub activation: Option<ActivationHandle>,
    /// Which activation of the rollback's plan `activation` is (0 for the first).
    #[serde(default)]
    pub activation_index: usize,
    /// Every activation of the plan succeeded: the previous system runs again.
    #[serde(default)]
    pub done: bool,
}

/// How far a rollback got; journaled before each step as [`Phase`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackStep {
    /// Decided; nothing done yet.
    Decided,
    /// About to run `nix-env --set PREVIOUS`.
    SettingProfile,
    /// The profile points at the previous system again.
    ProfileSet,
    /// The handle of the previous system's activation is journaled.
    Activating,
}

/// Journal failures; each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the directory {dir}: {source}")]
    CreateDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the journal {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal file {file} is corrupt ({problem}) and cannot be moved aside to {aside}: {source}")]
    Quarantine {
        file: String,
        problem: String,
        aside: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write journal file {file}: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no deployment `{0}` in the journal")]
    Unknown(String),
    #[error("deployment `{0}` would still be open: only its end can be kept in memory")]
    StillOpen(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("deployment `{0}`: its phase, state or dead man's switch change only by a transition")]
    NotATransition(String),
}

/// Creates `dir` (and parents) and makes it private to the agent (0700): it holds
/// activation logs and import streams.
pub fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    let err = |source| JournalError::CreateDir { dir: dir.display().to_string(), source };
    fs::create_dir_all(dir).map_err(err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)
}

/// A record file that could not be loaded and was moved aside at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was (`<dir>/<id>.json`).
    pub file: PathBuf,
    /// Where it is now (`<dir>/<id>.json.corrupt-<unix time>`).
    pub moved_to: PathBuf,
    /// Why it could not be loaded: `file:line:column: message` for a parse error.
    pub problem: String,
}

/// All deployments, loaded at start and kept in memory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    records: BTreeMap<String, Record>,
    next_seq: u64,
    /// Told about every record written.
    events: Option<Events>,
    /// Records moved aside by [`Journal::open`].
    quarantined: Vec<Quarantined>,
    /// Ended deployments whose final version is in memory only ([`Journal::close_unwritten`]).
    unwritten: BTreeSet<String>,
}

impl Journal {
    /// Opens (creating it if needed) the journal in `dir` and loads every record; a
    /// record that cannot be loaded is moved aside (see the module documentation). Fails
    /// only if the directory cannot be read or a bad record cannot be moved.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        create_private_dir(dir)?;
        let read_err = |source| JournalError::Read { file: dir.display().to_string(), source };
        let mut records = BTreeMap::new();
        let mut quarantined = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.ends_with(".json.tmp") {
                discard_interrupted_write(&path);
            } else if let Some(id) = name.strip_suffix(".json") {
                match load_record(&path, id) {
                    Ok(record) => {
                        records.insert(id.to_owned(), record);
                    }
                    Err(problem) => quarantined.push(quarantine(&path, problem)?),
                }
            }
        }
        let next_seq = records.values().map(|r| r.seq + 1).max().unwrap_or(0);
        Ok(Self { dir: dir.to_path_buf(), records, next_seq, events: None, quarantined, unwritten: BTreeSet::new() })
    }

    /// The record files [`Journal::open`] could not load and moved aside.
    pub fn quarantined(&self) -> &[Quarantined] {
        &self.quarantined
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `seq` the next inserted record gets (unique: ids made from it cannot repeat).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Where deployment `id`'s activation output goes.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Where deployment `id`'s activation exit status goes.
    pub fn exit_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.exit"))
    }

    /// The output of the activation that rolls deployment `id` back.
    pub fn rollback_log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}+rollback.log"))
    }

    /// The exit status of the activation that rolls deployment `id` back.
    pub fn rollback_exit_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}+rollback.exit"))
    }

    /// The output of deployment `id`'s latest health check attempt.
    pub fn health_log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}+health.log"))
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    /// Every record, oldest first.
    pub fn records(&self) -> Vec<&Record> {
        let mut all: Vec<&Record> = self.records.values().collect();
        all.sort_by_key(|r| r.seq);
        all
    }

    /// Records a new deployment (the caller checked its id is unused).
    pub fn insert(&mut self, deployment: Deployment, confirm_timeout: Duration) -> Result<Record, JournalError> {
        self.insert_record(Record::new(deployment, confirm_timeout))
    }

    /// Records a new deployment with its extra fields; `seq` is assigned here.
    pub fn insert_record(&mut self, mut record: Record) -> Result<Record, JournalError> {
        self.write_unwritten()?;
        record.seq = self.next_seq;
        self.write(&record)?;
        self.next_seq += 1;
        self.records.insert(record.deployment.id.clone(), record.clone());
        self.announce(None, &record);
        crate::pause::point("journal:insert");
        Ok(record)
    }

    /// Moves a record on by `transition` (see `transition.rs`), on disk first, and returns
    /// the new version; a transition its phase does not allow changes nothing.
    pub fn transition(&mut self, id: &str, transition: Transition) -> Result<Record, JournalError> {
        let mut record = self.records.get(id).cloned().ok_or_else(|| JournalError::Unknown(id.to_owned()))?;
        let previous = record.deployment.state;
        let name = transition.name();
        record.apply(transition)?;
        let stored = self.store(previous, record)?;
        crate::pause::point(&format!("journal:{name}"));
        Ok(stored)
    }

    /// Changes a record's data with `change`, on disk first, and returns the new version.
    /// A change of its phase, state or `armed` is refused: those change only by
    /// [`Journal::transition`].
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut Record)) -> Result<Record, JournalError> {
        let mut record = self.records.get(id).cloned().ok_or_else(|| JournalError::Unknown(id.to_owned()))?;
        let previous = record.deployment.state;
        let lifecycle = |r: &Record| (r.phase, r.deployment.state, r.armed);
        let before = lifecycle(&record);
        change(&mut record);
        if lifecycle(&record) != before {
            return Err(JournalError::NotATransition(id.to_owned()));
        }
        let stored = self.store(previous, record)?;
        crate::pause::point(&format!("journal:update@{:?}", stored.phase));
        Ok(stored)
    }

    /// Writes a changed record (it was `previous` before), then keeps and announces it.
    fn store(&mut self, previous: DeploymentState, record: Record) -> Result<Record, JournalError> {
        self.write(&record)?;
        let id = record.deployment.id.clone();
        self.unwritten.remove(&id);
        self.records.insert(id, record.clone());
        self.announce(Some(previous), &record);
        Ok(record)
    }

    /// Ends deployment `id` with `change` in memory only, for when [`Journal::update`]
    /// could not write that end (a full disk): otherwise the agent would report it open,
    /// and refuse every new deployment, until restarted. The end is written before the
    /// next insert. `end` must make the deployment final.
    pub fn close_unwritten(&mut self, id: &str, end: Transition) -> Result<Record, JournalError> {
        let mut record = self.records.get(id).cloned().ok_or_else(|| JournalError::Unknown(id.to_owned()))?;
        let previous = record.deployment.state;
        record.apply(end)?;
        if record.is_open() {
            return Err(JournalError::StillOpen(id.to_owned()));
        }
        self.unwritten.insert(id.to_owned());
        self.records.insert(id.to_owned(), record.clone());
        self.announce(Some(previous), &record);
        Ok(record)
    }

    /// Writes what [`Journal::close_unwritten`] kept in memory only.
    fn write_unwritten(&mut self) -> Result<(), JournalError> {
        while let Some(id) = self.unwritten.first().cloned() {
            if let Some(record) = self.records.get(&id) {
                self.write(record)?;
                tracing::info!(id, "journaled the end of a deployment that could not be written before");
            }
            self.unwritten.remove(&id);
        }
        Ok(())
    }

    /// From now on, every record written is announced on `events`.
    pub fn set_events(&mut self, events: Events) {
        self.events = Some(events);
    }

    fn announce(&self, previous: Option<DeploymentState>, record: &Record) {
        if let Some(events) = &self.events {
            events.send(AgentEvent::Deployment { previous, deployment: Box::new(record.deployment.clone()) });
        }
    }

    fn write(&self, record: &Record) -> Result<(), JournalError> {
        let file = self.dir.join(format!("{}.json", record.deployment.id));
        let err = |source| JournalError::Write { file: file.display().to_string(), source };
        let json = serde_json::to_vec_pretty(record).map_err(|e| err(std::io::Error::other(e)))?;
        write_atomically(&file, &json).map_err(err)
    }
}

/// The record in `path` (named for deployment `id`), or why it cannot be used:
/// `path:line:column: message` for JSON that does not parse as a record.
fn load_record(path: &Path, id: &str) -> Result<Record, String> {
    let file = path.display();
    let text = fs::read(path).map_err(|e| format!("{file}: cannot read it: {e}"))?;
    let record: Record = serde_json::from_slice(&text).map_err(|e| {
        let location = format!(" at line {} column {}", e.line(), e.column());
        let message = e.to_string();
        let message = message.strip_suffix(&location).unwrap_or(&message);
        format!("{file}:{}:{}: {message}", e.line(), e.column())
    })?;
    if record.deployment.id != id {
        return Err(format!("{file}: it holds deployment `{}`, not `{id}`", record.deployment.id));
    }
    Ok(record)
}

/// Moves a record that cannot be loaded to `<name>.corrupt-<unix time>` (a free name),
/// synced like a journal write, and logs it.
fn quarantine(path: &Path, problem: String) -> Result<Quarantined, JournalError> {
    let now = crate::unix_now();
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{now}"));
    let mut aside = PathBuf::from(&name);
    let mut n = 1;
    while aside.symlink_metadata().is_ok() {
        aside = PathBuf::from(format!("{}-{n}", name.to_string_lossy()));
        n += 1;
    }
    let moved = fs::rename(path, &aside).and_then(|()| sync_parent(path));
    if let Err(source) = moved {
        let (file, aside) = (path.display().to_string(), aside.display().to_string());
        return Err(JournalError::Quarantine { file, problem, aside, source });
    }
    tracing::error!(
        file = %path.display(),
        moved_to = %aside.display(),
        "journal record cannot be loaded ({problem}); moved aside and kept, the agent goes on without it \
         (the host keeps running its current system; that deployment is not resumed or rolled back)"
    );
    Ok(Quarantined { file: path.to_path_buf(), moved_to: aside, problem })
}

/// Removes a `.json.tmp` left by a write that was cut short: its rename never happened, so
/// it was never the record (the `.json` beside it, if any, is the last complete version).
fn discard_interrupted_write(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::warn!(file = %path.display(), "discarded an interrupted journal write"),
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot remove an interrupted journal write"),
    }
}

fn sync_parent(file: &Path) -> std::io::Result<()> {
    File::open(file.parent().unwrap_or_else(|| Path::new(".")))?.sync_all()
}

/// Writes `bytes` to `file` so that a crash leaves either the old or the new content. A
/// failed write (e.g. no space left) removes its temporary file again.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, file));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself lives in the directory: sync it so it survives a power cut.
    sync_parent(file)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hostctl_schemas::api::deployments::{DeploymentRequest, DeploymentState};
    use hostctl_schemas::inventory::Mode;

    use crate::transition::Ending;

    pub(crate) fn deployment(id: &str) -> Deployment {
        let request = DeploymentRequest {
            id: id.to_owned(),
            toplevel: "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-nixos-system-web1".parse().unwrap(),
            rev: Some("abc".into()),
            lock: None,
            mode: Mode::Switch,
            confirm_timeout: hostctl_schemas::duration::Duration::from_secs(0),
            health: Vec::new(),
            cache: None,
            commit_signature: None,
            retention: None,
            reboot: false,
        };
        Deployment::queued(&request, None, 1_800_000_000)
    }

    #[test]
    fn records_survive_a_reload_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("state/deployments");
        let mut journal = Journal::open(&jdir).unwrap();
        let mode = fs::metadata(&jdir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        journal.insert(deployment("b"), Duration::from_secs(0)).unwrap();
        journal.insert(deployment("a"), Duration::from_secs(30)).unwrap();
        let confirmed = |r: &mut Record| r.deployment.state = DeploymentState::Confirmed;
        assert!(matches!(journal.update("b", confirmed), Err(JournalError::NotATransition(_))), "only by a transition");
        journal.update("b", |r| r.deployment.rev = Some("def".into())).unwrap();
        let end = Ending { state: DeploymentState::Failed, reason: EndReason::AgentRestarted, error: "x".into() };
        journal.transition("b", Transition::End(end)).unwrap();
        assert!(matches!(journal.update("zz", |_| {}), Err(JournalError::Unknown(_))));

        let loaded = Journal::open(&jdir).unwrap();
        let ids: Vec<_> = loaded.records().iter().map(|r| r.deployment.id.clone()).collect();
        assert_eq!(ids, ["b", "a"]);
        let b = &loaded.get("b").unwrap().deployment;
        assert_eq!(
            (b.state, b.end_reason, b.rev.as_deref()),
            (DeploymentState::Failed, Some(EndReason::AgentRestarted), Some("def"))
        );
        assert_eq!(loaded.get("a").unwrap().confirm_timeout, Duration::from_secs(30));
        assert_eq!(loaded.next_seq, 2);
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod damaged;
