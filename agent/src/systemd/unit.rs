//! What a transient activation unit is: its name, its command and the properties
//! `StartTransientUnit` is given. Pure (no bus), so the D-Bus encoding is tested here.
//!
//! The unit runs the same kind of wrapper as [`crate::activation::DetachedChild`], minus
//! the stdin gate (nothing runs before `StartTransientUnit`, which is the launch): output
//! to the log, the exit status to the exit file by write-then-rename. The exit file, not
//! the unit, is the result: with `CollectMode=inactive-or-failed` systemd forgets the unit
//! as soon as it ends, and the file also survives agent restarts and reboots. The wrapper
//! then exits with switch-to-configuration's status, so `systemctl status` and the unit's
//! `ExecMainStatus` say the same.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use zbus::zvariant::Value;

use crate::activation::ActivationSpec;

/// Every activation unit's name starts with this.
pub const UNIT_PREFIX: &str = "hostctl-activate-";

/// The shell that runs [`WRAPPER`] (NixOS keeps `/bin/sh`).
pub const SHELL: &str = "/bin/sh";

/// `$1` program, `$2` mode, `$3` log, `$4` exit file; arguments stay positional, never
/// spliced into the script. The log exists from the moment the unit's command runs,
/// before `switch-to-configuration` starts: [`super::decide`] relies on that.
pub const WRAPPER: &str = r#""$1" "$2" </dev/null >"$3" 2>&1
code=$?
printf '%s\n' "$code" >"$4.tmp" && mv -f "$4.tmp" "$4"
exit "$code""#;

/// Longest part of a unit name taken from the activation's files (systemd allows 255
/// characters in all).
const MAX_STEM: usize = 160;

/// A unit name no other activation of this agent had: `hostctl-activate-<stem>-<ms>.service`
/// where `<stem>` is the exit file's name without `.exit` (the deployment id, or
/// `<id>+rollback`) with characters systemd does not take in unit names replaced by `-`,
/// and `<ms>` a Unix time in milliseconds made unique within this process (a rollback
/// re-runs its step under the same files, and a name cannot be reused while systemd
/// still knows the previous unit).
pub fn unit_name(spec: &ActivationSpec) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::unix_now_ms();
    let previous = LAST.fetch_max(now, Ordering::SeqCst);
    let stamp = if previous >= now { LAST.fetch_add(1, Ordering::SeqCst) + 1 } else { now };
    unit_name_at(&spec.exit_file, stamp)
}

/// [`unit_name`] with the time given.
pub fn unit_name_at(exit_file: &Path, stamp: u64) -> String {
    let stem = exit_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' { c } else { '-' })
        .take(MAX_STEM)
        .collect();
    let stem = if stem.is_empty() { "activation".to_owned() } else { stem };
    format!("{UNIT_PREFIX}{stem}-{stamp}.service")
}

/// The unit's environment: what nixos-rebuild passes to `switch-to-configuration` when it
/// runs it with `systemd-run`: `NIXOS_INSTALL_BOOTLOADER` (empty: hostctl never asks for
/// `--install-bootloader`) and the agent's `LOCALE_ARCHIVE`, if it has one.
pub fn environment(locale_archive: Option<&str>) -> Vec<String> {
    let mut env = vec!["NIXOS_INSTALL_BOOTLOADER=".to_owned()];
    if let Some(archive) = locale_archive {
        env.push(format!("LOCALE_ARCHIVE={archive}"));
    }
    env
}

/// The argv of the unit's command: the shell, [`WRAPPER`], then its four arguments.
pub fn command(spec: &ActivationSpec) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        SHELL.to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        "hostctl-activation".to_owned(),
        path(&spec.program),
        spec.mode.as_str().to_owned(),
        path(&spec.log),
        path(&spec.exit_file),
    ]
}

/// The `a(sv)` properties of `StartTransientUnit`:
/// - `Type=exec`: the start job succeeds once the command was executed, so a start that
///   cannot even run the shell fails the call;
/// - `ExecStart` (`a(sasb)`: path, argv with argv\[0\], ignore-failure false);
/// - `KillMode=control-group`: `KillUnit`/stop reach everything the switch started;
/// - `CollectMode=inactive-or-failed`: no failed unit is left behind to block a name or
///   need `ResetFailedUnit` (the exit file keeps the result).
pub fn properties(spec: &ActivationSpec, env: Vec<String>) -> Vec<(&'static str, Value<'static>)> {
    let argv = command(spec);
    let description = format!("hostctl activation: switch-to-configuration {} ({})", spec.mode, spec.program.display());
    vec![
        ("Description", Value::from(description)),
        ("Type", Value::from("exec")),
        ("ExecStart", Value::from(vec![(SHELL.to_owned(), argv, false)])),
        ("Environment", Value::from(env)),
        ("KillMode", Value::from("control-group")),
        ("CollectMode", Value::from("inactive-or-failed")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::inventory::Mode;
    use std::path::PathBuf;

    fn spec(exit: &str) -> ActivationSpec {
        ActivationSpec {
            program: PathBuf::from("/nix/store/abc-nixos/bin/switch-to-configuration"),
            mode: Mode::Switch,
            log: PathBuf::from("/var/lib/hostctl-agent/deployments/d1.log"),
            exit_file: PathBuf::from(format!("/var/lib/hostctl-agent/deployments/{exit}")),
        }
    }

    #[test]
    fn unit_names_come_from_the_exit_file_and_are_unique() {
        assert_eq!(unit_name_at(Path::new("/x/d1.exit"), 7), "hostctl-activate-d1-7.service");
        assert_eq!(unit_name_at(Path::new("/x/d1+rollback.exit"), 7), "hostctl-activate-d1-rollback-7.service");
        assert_eq!(unit_name_at(Path::new("/x/pull-a.b_c.exit"), 1), "hostctl-activate-pull-a.b_c-1.service");
        assert_eq!(unit_name_at(Path::new("/"), 1), "hostctl-activate-activation-1.service");
        let long = format!("/x/{}.exit", "a".repeat(300));
        assert!(unit_name_at(Path::new(&long), u64::MAX).len() <= 255);
        let s = spec("d1.exit");
        let names: std::collections::HashSet<String> = (0..50).map(|_| unit_name(&s)).collect();
        assert_eq!(names.len(), 50, "one name per call");
    }

    #[test]
    fn properties_have_systemds_names_and_types() {
        let props = properties(&spec("d1.exit"), environment(Some("/nix/store/l/lib/locale/locale-archive")));
        let signatures: Vec<(&str, String)> =
            props.iter().map(|(name, value)| (*name, value.value_signature().to_string())).collect();
        assert_eq!(
            signatures,
            [
                ("Description", "s".to_owned()),
                ("Type", "s".to_owned()),
                ("ExecStart", "a(sasb)".to_owned()),
                ("Environment", "as".to_owned()),
                ("KillMode", "s".to_owned()),
                ("CollectMode", "s".to_owned()),
            ]
        );
        let get = |name: &str| props.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("Type"), Value::from("exec"));
        assert_eq!(get("CollectMode"), Value::from("inactive-or-failed"));
        let env: Vec<String> = get("Environment").try_into().unwrap();
        assert_eq!(env, ["NIXOS_INSTALL_BOOTLOADER=", "LOCALE_ARCHIVE=/nix/store/l/lib/locale/locale-archive"]);
        let exec: Vec<(String, Vec<String>, bool)> = get("ExecStart").try_into().unwrap();
        let [(path, argv, ignore_failure)] = exec.as_slice() else { panic!("one command: {exec:?}") };
        assert_eq!((path.as_str(), *ignore_failure), (SHELL, false));
        assert_eq!(argv[..2], [SHELL, "-c"]);
        assert_eq!(
            argv[3..],
            [
                "hostctl-activation",
                "/nix/store/abc-nixos/bin/switch-to-configuration",
                "switch",
                "/var/lib/hostctl-agent/deployments/d1.log",
                "/var/lib/hostctl-agent/deployments/d1.exit"
            ]
        );
        assert_eq!(environment(None), ["NIXOS_INSTALL_BOOTLOADER="]);
    }

    #[test]
    fn the_wrapper_records_the_exit_status_and_exits_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("switch");
        std::fs::write(&program, "#!/bin/sh\necho \"mode $1\"\nexit 4\n").unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let spec = ActivationSpec {
            program,
            mode: Mode::Test,
            log: dir.path().join("a.log"),
            exit_file: dir.path().join("a.exit"),
        };
        let argv = command(&spec);
        let status = std::process::Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
        assert_eq!(status.code(), Some(4));
        assert_eq!(std::fs::read_to_string(&spec.exit_file).unwrap(), "4\n");
        assert_eq!(std::fs::read_to_string(&spec.log).unwrap(), "mode test\n");
    }
}
