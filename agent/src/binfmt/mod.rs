//! binfmt_misc emulation (`binfmt:` in agent.yaml): registers a kernel entry per emulated
//! system, keeps it registered, reports what is registered, and writes the Nix config file
//! that makes Nix build for those systems.
//!
//! - [`table`]: the magic/mask table; [`config`]: `binfmt:` checked into a [`Plan`] (a
//!   refusal is a configuration error: exit 2); [`kernel`]: entries read, registered,
//!   removed; [`nixconf`]: the agent's Nix config file.
//! - [`reconcile`] makes the kernel match the plan: an entry that is right is left alone,
//!   a wrong one (other interpreter, flags, magic, mask, disabled, unreadable) is removed
//!   and registered again, a managed one no longer configured is removed. Only entries
//!   named `hostctl-<system>` are managed; others are never read for decisions nor written.
//! - The agent reconciles at start, then every [`KEEP_INTERVAL`] and after each deployment
//!   event (a switch may restart systemd-binfmt, which flushes every entry). Failures (not
//!   mounted, a write refused) are logged and reported, never fatal.
//! - Status (`emulated_systems`, D-Bus `EmulatedSystems`) is [`emulated_systems`]: the
//!   systems of the managed entries the kernel has enabled, read at each snapshot, so it
//!   shows what is really registered even when a reconcile failed. Entries the agent does
//!   not manage (a distribution's `qemu-aarch64`) are not reported.

pub mod config;
pub mod kernel;
pub mod nixconf;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

pub use config::{plan, ConfigError, Plan, Wanted};
use kernel::{Entry, Matcher, ParseError};

use crate::events::{AgentEvent, Events};

/// How often the running agent checks that its entries are still registered.
pub const KEEP_INTERVAL: Duration = Duration::from_secs(60);

/// What one reconcile found and did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub mount_point: PathBuf,
    pub nix_conf: PathBuf,
    /// The managed entries enabled in the kernel afterwards.
    pub registered: Vec<Registered>,
    /// Systems whose entry was already right.
    pub unchanged: Vec<String>,
    pub added: Vec<String>,
    pub replaced: Vec<Replaced>,
    /// Managed entries removed because their system is no longer configured (entry names).
    pub removed: Vec<String>,
    /// Whether the Nix config file was (or would be) rewritten.
    pub nix_conf_changed: bool,
    pub errors: Vec<String>,
}

/// A registered entry as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    pub system: String,
    pub interpreter: PathBuf,
    pub flags: String,
}

/// A system whose entry was wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaced {
    pub system: String,
    pub reason: String,
}

impl Report {
    /// Whether anything was written (to the kernel or the Nix config file).
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.replaced.is_empty() || !self.removed.is_empty() || self.nix_conf_changed
    }

    /// One line per fact, for `hostctl-agent binfmt` and the log.
    pub fn lines(&self) -> Vec<String> {
        let would = if self.dry_run { "would be " } else { "" };
        let mut lines = Vec::new();
        lines.extend(self.added.iter().map(|s| format!("{s}: {would}added")));
        lines.extend(self.replaced.iter().map(|r| format!("{}: {would}replaced ({})", r.system, r.reason)));
        lines.extend(self.removed.iter().map(|n| format!("{n}: {would}removed (not in binfmt.emulated_systems)")));
        lines.extend(self.unchanged.iter().map(|s| format!("{s}: unchanged")));
        for r in &self.registered {
            lines.push(format!("{}: registered: {} (flags {})", r.system, r.interpreter.display(), r.flags));
        }
        let conf = if self.nix_conf_changed { format!("{would}written") } else { "unchanged".to_owned() };
        lines.push(format!("{}: {conf}", self.nix_conf.display()));
        lines.extend(self.errors.iter().map(|e| format!("error: {e}")));
        lines
    }
}

/// One step of a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    Keep(&'a Wanted),
    Add(&'a Wanted),
    /// Remove, then register again; the string says what was wrong.
    Replace(&'a Wanted, String),
    /// A managed entry (by name) no longer wanted.
    Remove(String),
}

/// What to do to go from the managed entries `present` to `wanted`: removals first, then
/// the wanted systems in order.
pub fn decide<'a>(wanted: &'a [Wanted], present: &BTreeMap<String, Result<Entry, ParseError>>) -> Vec<Action<'a>> {
    let mut actions: Vec<Action<'a>> = present
        .keys()
        .filter(|name| !wanted.iter().any(|w| w.name() == **name))
        .map(|name| Action::Remove(name.clone()))
        .collect();
    for w in wanted {
        actions.push(match present.get(&w.name()) {
            None => Action::Add(w),
            Some(entry) => match mismatch(w, entry) {
                None => Action::Keep(w),
                Some(why) => Action::Replace(w, why),
            },
        });
    }
    actions
}

/// How the kernel's `entry` differs from `w`, if it does.
fn mismatch(w: &Wanted, entry: &Result<Entry, ParseError>) -> Option<String> {
    let entry = match entry {
        Ok(entry) => entry,
        Err(e) => return Some(e.to_string()),
    };
    if !entry.enabled {
        return Some("disabled".into());
    }
    if entry.interpreter != w.interpreter {
        return Some(format!("interpreter {}, want {}", entry.interpreter.display(), w.interpreter.display()));
    }
    let sorted = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        c.sort_unstable();
        c
    };
    if sorted(&entry.flags) != sorted(w.flags) {
        return Some(format!("flags `{}`, want `{}`", entry.flags, w.flags));
    }
    let want = Matcher::Magic { offset: 0, magic: w.magic.clone(), mask: Some(w.mask.clone()) };
    if entry.matcher != want {
        return Some("magic or mask differ from the table".into());
    }
    None
}

fn is_managed(name: &str) -> bool {
    name.starts_with(config::NAME_PREFIX)
}

/// Makes the kernel's managed entries and the Nix config file match `plan` (with
/// `dry_run`, only says what it would do). Never fails: problems go to `errors`.
pub fn reconcile(plan: &Plan, dry_run: bool) -> Report {
    let mut report =
        Report { dry_run, mount_point: plan.mount_point.clone(), nix_conf: plan.nix_conf.clone(), ..Report::default() };
    let mut present = match kernel::read_entries(&plan.mount_point, is_managed) {
        Ok(present) => present,
        Err(e) => {
            report.errors.push(e.to_string());
            BTreeMap::new()
        }
    };
    if report.errors.is_empty() {
        for action in decide(&plan.wanted, &present) {
            apply(plan, action, dry_run, &mut report);
        }
        if !dry_run {
            match kernel::read_entries(&plan.mount_point, is_managed) {
                Ok(now) => present = now,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }
    report.registered = registered(&present);
    // Nix is told only about systems the kernel can run now (in a dry run: those it
    // would after the changes).
    let ready: Vec<(&str, &Path)> = plan
        .wanted
        .iter()
        .filter(|w| dry_run || present.get(&w.name()).is_some_and(|e| mismatch(w, e).is_none()))
        .map(|w| (w.system.as_str(), w.interpreter.as_path()))
        .collect();
    let text = nixconf::render(&ready);
    if dry_run {
        report.nix_conf_changed = std::fs::read_to_string(&plan.nix_conf).map_or(true, |t| t != text);
    } else {
        match nixconf::write_if_changed(&plan.nix_conf, &text) {
            Ok(written) => report.nix_conf_changed = written,
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
}

fn apply(plan: &Plan, action: Action<'_>, dry_run: bool, report: &mut Report) {
    let mount = &plan.mount_point;
    // In a dry run every write "succeeds" without being made.
    let write = |f: &dyn Fn() -> Result<(), kernel::KernelError>| if dry_run { Ok(()) } else { f() };
    match action {
        Action::Keep(w) => report.unchanged.push(w.system.to_string()),
        Action::Add(w) => match write(&|| kernel::register(mount, &w.register_line())) {
            Ok(()) => report.added.push(w.system.to_string()),
            Err(e) => report.errors.push(format!("{}: {e}", w.system)),
        },
        Action::Replace(w, reason) => {
            match write(&|| kernel::remove(mount, &w.name()).and_then(|()| kernel::register(mount, &w.register_line())))
            {
                Ok(()) => report.replaced.push(Replaced { system: w.system.to_string(), reason }),
                Err(e) => report.errors.push(format!("{} ({reason}): {e}", w.system)),
            }
        }
        Action::Remove(name) => match write(&|| kernel::remove(mount, &name)) {
            Ok(()) => report.removed.push(name),
            Err(e) => report.errors.push(format!("{name}: {e}")),
        },
    }
}

/// The enabled managed entries among `present`, by system.
fn registered(present: &BTreeMap<String, Result<Entry, ParseError>>) -> Vec<Registered> {
    present
        .iter()
        .filter_map(|(name, entry)| {
            let entry = entry.as_ref().ok().filter(|e| e.enabled)?;
            let system = config::system_of(name)?;
            Some(Registered {
                system: system.into(),
                interpreter: entry.interpreter.clone(),
                flags: entry.flags.clone(),
            })
        })
        .collect()
}

/// The systems whose managed entry the kernel has enabled at `mount` (empty when it cannot
/// be read: nothing is known to be registered).
pub fn emulated_systems(mount: &Path) -> Vec<String> {
    match kernel::read_entries(mount, is_managed) {
        Ok(present) => registered(&present).into_iter().map(|r| r.system).collect(),
        Err(_) => Vec::new(),
    }
}

/// At agent start: reconciles once (before the agent serves, so its first status is
/// current), then keeps the entries registered in a background task.
pub async fn start(plan: Plan, events: Events) {
    let plan = std::sync::Arc::new(plan);
    // Subscribed before the first reconcile, so no deployment event in between is missed.
    let rx = events.subscribe();
    let report = reconcile_blocking(&plan).await;
    let mut errors = log(&report, &[]);
    if report.changed() {
        events.changed();
    }
    tokio::spawn(async move {
        let mut rx = Some(rx);
        let mut tick = tokio::time::interval(KEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            next_trigger(&mut tick, &mut rx).await;
            let report = reconcile_blocking(&plan).await;
            errors = log(&report, &errors);
            if report.changed() {
                events.changed();
            }
        }
    });
}

/// Waits for the interval or a deployment event (the agent's own `Changed` events, sent
/// after a reconcile, are not triggers).
async fn next_trigger(tick: &mut tokio::time::Interval, rx: &mut Option<tokio::sync::broadcast::Receiver<AgentEvent>>) {
    loop {
        let Some(receiver) = rx.as_mut() else {
            tick.tick().await;
            return;
        };
        tokio::select! {
            _ = tick.tick() => return,
            event = receiver.recv() => match event {
                Ok(AgentEvent::Deployment { .. }) | Err(RecvError::Lagged(_)) => return,
                Ok(AgentEvent::Changed) => {}
                Err(RecvError::Closed) => *rx = None,
            },
        }
    }
}

async fn reconcile_blocking(plan: &std::sync::Arc<Plan>) -> Report {
    let plan = std::sync::Arc::clone(plan);
    let fallback = Report { errors: vec!["the binfmt reconcile task panicked".into()], ..Report::default() };
    tokio::task::spawn_blocking(move || reconcile(&plan, false)).await.unwrap_or(fallback)
}

/// Logs what `report` changed, and its errors unless they are the same as last time
/// (an unmounted binfmt_misc would otherwise warn every minute); returns its errors.
fn log(report: &Report, previous_errors: &[String]) -> Vec<String> {
    if report.changed() {
        let changes = report.lines().into_iter().filter(|l| !l.starts_with("error: ") && !l.contains(": unchanged"));
        for line in changes {
            tracing::info!("binfmt: {line}");
        }
    }
    if report.errors != previous_errors {
        for error in &report.errors {
            tracing::warn!("binfmt: {error}");
        }
    }
    let systems: Vec<&str> = report.registered.iter().map(|r| r.system.as_str()).collect();
    tracing::debug!(registered = ?systems, "binfmt reconciled");
    report.errors.clone()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
