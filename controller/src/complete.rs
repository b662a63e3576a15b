//! Dynamic shell completion (clap_complete's `CompleteEnv`): the shell script that
//! `hostctl completions SHELL` prints calls `COMPLETE=SHELL hostctl -- WORDS...`, and the
//! values of `--on`, `history` and `rollback` are completed with the host names and `@tag`s
//! of the fleet file found as a command would find it. Never fails: no fleet, no candidates.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;

/// Candidates for a host selector being typed: after the last comma of a comma list
/// (`web1,we`), each host name and `@tag` that continues what is typed.
pub fn hosts(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else { return Vec::new() };
    let (done, typed) = current.split_at(current.rfind(',').map_or(0, |comma| comma + 1));
    let Some(fleet) = fleet_file(std::env::args_os()).and_then(|path| hostctl_schemas::load_fleet(&path).ok()) else {
        return Vec::new();
    };
    let tags: std::collections::BTreeSet<String> =
        fleet.hosts.values().flat_map(|h| h.tags.iter().map(|t| format!("@{t}"))).collect();
    fleet
        .hosts
        .keys()
        .map(ToString::to_string)
        .chain(tags)
        .filter(|word| word.starts_with(typed))
        .map(|word| CompletionCandidate::new(format!("{done}{word}")))
        .collect()
}

/// The fleet file of the command line being completed: its `--fleet` if typed, else what a
/// command would use (`HOSTCTL_FLEET`, else `fleet.yaml` upward from the working directory).
fn fleet_file(args: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    let args: Vec<OsString> = args.collect();
    let typed = args.iter().enumerate().rev().find_map(|(i, arg)| {
        let arg = arg.to_str()?;
        match arg.strip_prefix("--fleet=") {
            Some(value) => Some(PathBuf::from(value)),
            None if arg == "--fleet" => args.get(i + 1).map(PathBuf::from),
            None => None,
        }
    });
    typed
        .or_else(|| std::env::var_os("HOSTCTL_FLEET").filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| crate::context::find_fleet_file().ok())
}

#[cfg(test)]
mod tests {
    use super::fleet_file;

    #[test]
    fn a_typed_fleet_wins() {
        let args = |a: &[&str]| a.iter().map(Into::into).collect::<Vec<std::ffi::OsString>>().into_iter();
        assert_eq!(
            fleet_file(args(&["hostctl", "--", "hostctl", "--fleet", "a.yaml", "history", ""])),
            Some("a.yaml".into())
        );
        assert_eq!(
            fleet_file(args(&["hostctl", "--", "hostctl", "--fleet=b.yaml", "apply", "--on", ""])),
            Some("b.yaml".into())
        );
    }
}
