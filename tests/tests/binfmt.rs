//! binfmt emulation on a real kernel: every test that registers anything does it in a
//! private binfmt_misc instance of its own user namespace ([`PrivateBinfmt`]), never in
//! the host's `/proc/sys/fs/binfmt_misc`.
//!
//! - `hostctl-agent binfmt` registers aarch64 with Debian's `qemu-aarch64-static`, a real
//!   static aarch64 program then runs; a second run writes nothing; a changed
//!   configuration replaces and removes entries; entries it does not manage stay.
//! - The NixOS use case (`boot.binfmt.emulatedSystems`): Nix 2.8 on this x86_64 machine
//!   builds an `aarch64-linux` derivation through the registered emulation, accepted
//!   because of the Nix config file the agent wrote.
//! - `hostctl-agent serve` registers at start and reports what the kernel really has;
//!   an unmounted binfmt_misc does not stop it.
//! - Configuration errors: exit 2 from `check-config`, `serve` and `binfmt`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hostctl_schemas::signing::SecretKey;
use hostctl_tests::cross::aarch64_program;
use hostctl_tests::http::Request;
use hostctl_tests::userns::PrivateBinfmt;
use hostctl_tests::{binary, StoreRoot};
use serde_json::Value;

/// The derivation: system aarch64-linux, the program (copied into the store from the path
/// given with --argstr) as builder. Constant code; the path is an argument.
const DERIVATION: &str = r#"{ builderPath }:
derivation {
  name = "hostctl-emulated";
  system = "aarch64-linux";
  builder = builtins.path { path = /. + builderPath; name = "hostctl-emulated-builder"; };
}
"#;

/// A key the agent trusts in these tests (fixed seed: test material only).
const KEY_SEED: [u8; 32] = [7; 32];

const AARCH64_EMULATOR: &str = "/usr/bin/qemu-aarch64-static";

fn q(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

fn public_key() -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&KEY_SEED);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.verifying_key().to_bytes());
    format!("hostctl-binfmt-test:{b64}")
}

fn secret_key(dir: &Path) -> SecretKey {
    let key = ed25519_dalek::SigningKey::from_bytes(&KEY_SEED);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.to_keypair_bytes());
    let file = dir.join("test.sec");
    hostctl_tests::write_secret(&file, &format!("hostctl-binfmt-test:{b64}"));
    SecretKey::load(&file).unwrap()
}

/// An agent configuration under `dir` with the given `binfmt:` body (indented lines).
fn agent_config(dir: &Path, name: &str, listen: &str, binfmt: &str) -> PathBuf {
    let state = dir.join(format!("{name}-state"));
    // Pre-provisioned: the test's requests are signed for this identity.
    let identity = dir.join(format!("{name}-identity.key"));
    hostctl_tests::identity::write_identity(&identity, "binfmt-test");
    let yaml = format!(
        "hostname: binfmt-test\nlisten: {}\ntrusted_keys: [{}]\nstate_dir: {}\nprofile: {}\n\
         bus: {}\nservice_manager: detached\nidentity_key_file: {}\nbinfmt:\n{binfmt}",
        q(listen),
        q(public_key()),
        q(state.display().to_string()),
        q(dir.join(format!("{name}-profiles/system")).display().to_string()),
        // No bus there: the agent must never publish on a real bus from a test.
        q(format!("unix:path={}", dir.join("no-bus").display())),
        q(identity.display().to_string()),
    );
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    file
}

/// `binfmt:` lines: systems, mount point, Nix config file, interpreters.
fn binfmt_section(systems: &[&str], mount: &Path, nix_conf: &Path, interpreters: &[(&str, &str)]) -> String {
    let list: Vec<String> = systems.iter().map(q).collect();
    let mut s = format!(
        "  emulated_systems: [{}]\n  mount_point: {}\n  nix_conf: {}\n",
        list.join(", "),
        q(mount.display().to_string()),
        q(nix_conf.display().to_string())
    );
    if !interpreters.is_empty() {
        s.push_str("  interpreters:\n");
        for (system, path) in interpreters {
            s.push_str(&format!("    {system}: {}\n", q(path)));
        }
    }
    s
}

/// `hostctl-agent binfmt --config FILE --json EXTRA...` inside the namespace: (exit code,
/// report).
fn agent_binfmt(ns: &PrivateBinfmt, config: &Path, extra: &[&str]) -> (i32, Value) {
    let agent = binary("hostctl-agent").display().to_string();
    let config = config.display().to_string();
    let mut argv = vec![agent.as_str(), "binfmt", "--config", &config, "--json"];
    argv.extend_from_slice(extra);
    let out = ns.run(&argv);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: stdout {} stderr {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), report)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn registered_systems(report: &Value) -> Vec<String> {
    report["registered"].as_array().unwrap().iter().map(|r| r["system"].as_str().unwrap().to_owned()).collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The registration line `hostctl-agent` would write for aarch64 but with `interpreter`:
/// magic and mask as `\x` escapes, from the kernel's view of a real entry.
fn aarch64_line(name: &str, interpreter: &str, flags: &str) -> String {
    let magic = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00";
    let mask = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\x00\xff\xfe\xff\xff\xff";
    format!(":{name}:M::{magic}:{mask}:{interpreter}:{flags}")
}

/// The kernel refuses to execute `program` (ENOEXEC: nsenter's execvp then hands it to
/// /bin/sh, which fails on the ELF bytes).
fn assert_cannot_run(ns: &PrivateBinfmt, program: &str) {
    let out = ns.run(&[program]);
    assert!(!out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("aarch64"), "ran: {}", text(&out));
}

/// One private binfmt_misc with the aarch64 program and the agent's Nix config file path.
struct Kernel {
    ns: PrivateBinfmt,
    program: String,
    nix_conf: PathBuf,
}

impl Kernel {
    fn new() -> Self {
        let ns = PrivateBinfmt::new();
        let program = aarch64_program(ns.dir()).display().to_string();
        let nix_conf = ns.dir().join("etc/nix/hostctl-binfmt.conf");
        Self { ns, program, nix_conf }
    }

    /// An agent configuration `name` with these systems and interpreters.
    fn config(&self, name: &str, systems: &[&str], interpreters: &[(&str, &str)]) -> PathBuf {
        let section = binfmt_section(systems, &self.ns.mount, &self.nix_conf, interpreters);
        agent_config(self.ns.dir(), name, "127.0.0.1:0", &section)
    }

    /// `hostctl-agent binfmt`, which must succeed.
    fn reconcile(&self, config: &Path, extra: &[&str]) -> Value {
        let (code, report) = agent_binfmt(&self.ns, config, extra);
        assert_eq!(code, 0, "{report}");
        report
    }

    fn nix_conf(&self) -> String {
        std::fs::read_to_string(&self.nix_conf).unwrap()
    }

    /// Every entry's name and text.
    fn snapshot(&self) -> Vec<(String, Option<String>)> {
        self.ns.entries().into_iter().map(|n| (n.clone(), self.ns.entry(&n))).collect()
    }
}

#[test]
fn register_run_keep_replace_and_remove_in_a_private_kernel_instance() {
    let k = Kernel::new();
    // Without an entry, the kernel cannot run it.
    assert_cannot_run(&k.ns, &k.program);
    // An entry the agent does not manage (as a distribution's qemu-user-binfmt adds),
    // disabled so the agent's entry must do the work.
    assert!(k.ns.write("register", &aarch64_line("qemu-aarch64", AARCH64_EMULATOR, "F")).status.success());
    assert!(k.ns.write("qemu-aarch64", "0").status.success());
    let first = k.config("a", &["aarch64-linux", "riscv64-linux"], &[]);

    registers_and_runs(&k, &first);
    a_second_run_writes_nothing(&k, &first);
    wrong_entries_are_replaced(&k, &first);
    a_changed_configuration_replaces_and_removes(&k);

    // Nothing configured: every managed entry goes; Nix is told of no platform.
    let empty = k.reconcile(&k.config("c", &[], &[]), &[]);
    assert_eq!(strings(&empty["removed"]), ["hostctl-riscv64-linux"]);
    assert_eq!(k.ns.entries(), ["qemu-aarch64"]);
    assert!(!k.nix_conf().contains("extra-platforms"));
}

fn registers_and_runs(k: &Kernel, config: &Path) {
    let report = k.reconcile(config, &[]);
    assert_eq!(strings(&report["added"]), ["aarch64-linux", "riscv64-linux"], "{report}");
    assert_eq!(report["nix_conf_changed"], true);
    assert_eq!(registered_systems(&report), ["aarch64-linux", "riscv64-linux"]);
    assert_eq!(k.ns.entries(), ["hostctl-aarch64-linux", "hostctl-riscv64-linux", "qemu-aarch64"]);
    assert_eq!(
        k.ns.entry("hostctl-aarch64-linux").unwrap(),
        format!(
            "enabled\ninterpreter {AARCH64_EMULATOR}\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
             mask ffffffffffffff00ffffffffffff00fffeffffff\n"
        )
    );
    let conf = k.nix_conf();
    assert!(conf.contains("\nextra-platforms = aarch64-linux riscv64-linux\n"), "{conf}");
    assert!(
        conf.contains("\nextra-sandbox-paths = /usr/bin/qemu-aarch64-static /usr/bin/qemu-riscv64-static\n"),
        "{conf}"
    );
    // The real static aarch64 program runs, through qemu.
    assert_eq!(k.ns.ok(&[&k.program]), "aarch64\n");
}

fn a_second_run_writes_nothing(k: &Kernel, config: &Path) {
    let conf_before = std::fs::metadata(&k.nix_conf).unwrap();
    let entries_before = k.snapshot();
    let again = k.reconcile(config, &[]);
    assert_eq!(strings(&again["unchanged"]), ["aarch64-linux", "riscv64-linux"], "{again}");
    for key in ["added", "replaced", "removed", "errors"] {
        assert_eq!(again[key], serde_json::json!([]), "{key}: {again}");
    }
    assert_eq!(again["nix_conf_changed"], false);
    let conf_after = std::fs::metadata(&k.nix_conf).unwrap();
    assert_eq!((conf_before.ino(), conf_before.mtime_nsec()), (conf_after.ino(), conf_after.mtime_nsec()));
    assert_eq!(k.snapshot(), entries_before);
}

/// Someone else changed a managed entry, and disabled another: both are replaced.
fn wrong_entries_are_replaced(k: &Kernel, config: &Path) {
    let riscv_other = "/usr/bin/qemu-riscv32-static";
    assert!(k.ns.write("hostctl-riscv64-linux", "-1").status.success());
    assert!(k.ns.write("register", &aarch64_line("hostctl-riscv64-linux", riscv_other, "")).status.success());
    assert!(k.ns.write("hostctl-aarch64-linux", "0").status.success());
    let fixed = k.reconcile(config, &[]);
    let reasons: Vec<(&str, &str)> = fixed["replaced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["system"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons[0], ("aarch64-linux", "disabled"), "{fixed}");
    assert_eq!(reasons[1].0, "riscv64-linux", "{fixed}");
    assert!(reasons[1].1.contains(&format!("interpreter {riscv_other}")), "{fixed}");
    assert!(k.ns.entry("hostctl-riscv64-linux").unwrap().contains("interpreter /usr/bin/qemu-riscv64-static\n"));
    assert_eq!(k.ns.ok(&[&k.program]), "aarch64\n");
}

/// aarch64 no longer configured, riscv64 with its own interpreter: removed, replaced; a
/// dry run first changes nothing.
fn a_changed_configuration_replaces_and_removes(k: &Kernel) {
    let own = k.ns.dir().join("my-qemu-riscv64");
    std::fs::copy("/usr/bin/qemu-riscv64-static", &own).unwrap();
    let own = own.display().to_string();
    let second = k.config("b", &["riscv64-linux"], &[("riscv64-linux", &own)]);
    let before = k.snapshot();
    let dry = k.reconcile(&second, &["--dry-run"]);
    assert_eq!(
        (dry["dry_run"].clone(), strings(&dry["removed"])),
        (Value::Bool(true), vec!["hostctl-aarch64-linux".to_owned()])
    );
    assert_eq!(k.snapshot(), before, "a dry run changes nothing");
    assert!(k.nix_conf().contains("aarch64-linux"));

    let changed = k.reconcile(&second, &[]);
    assert_eq!(strings(&changed["removed"]), ["hostctl-aarch64-linux"], "{changed}");
    assert_eq!(changed["replaced"][0]["system"], "riscv64-linux", "{changed}");
    assert_eq!(registered_systems(&changed), ["riscv64-linux"]);
    assert!(k.ns.entry("hostctl-riscv64-linux").unwrap().contains(&format!("interpreter {own}\nflags: PF\n")));
    assert_eq!(k.ns.entries(), ["hostctl-riscv64-linux", "qemu-aarch64"], "the foreign entry stays");
    assert_eq!(k.ns.entry("qemu-aarch64").unwrap().lines().next(), Some("disabled"), "and is not modified");
    assert_cannot_run(&k.ns, &k.program);
    let conf = k.nix_conf();
    assert!(conf.contains(&format!("\nextra-platforms = riscv64-linux\nextra-sandbox-paths = {own}\n")), "{conf}");
}

#[test]
fn nix_builds_an_aarch64_derivation_through_the_registered_emulation() {
    let ns = PrivateBinfmt::new();
    let dir = ns.dir().to_path_buf();
    let program = aarch64_program(&dir);
    let store = StoreRoot::new();
    let agent_nix_conf = dir.join("etc/nix/hostctl-binfmt.conf");
    // The host's nix.conf, as an operator writes it once: it includes the agent's file
    // (`!include`: a missing file is no error, as before the agent first runs).
    let conf_dir = dir.join("nix-conf-dir");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(
        conf_dir.join("nix.conf"),
        format!("build-users-group =\nsubstituters =\nsandbox = true\n!include {}\n", agent_nix_conf.display()),
    )
    .unwrap();
    let expr = dir.join("emulated.nix");
    std::fs::write(&expr, DERIVATION).unwrap();
    let nix_build = || {
        let mut cmd = ns.command(&[
            "nix-build",
            &expr.display().to_string(),
            "--argstr",
            "builderPath",
            &program.display().to_string(),
            "--store",
            &store.url(),
            "--no-out-link",
        ]);
        cmd.env("NIX_CONF_DIR", &conf_dir)
            .env("NIX_USER_CONF_FILES", dir.join("no-user-nix.conf"))
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_REMOTE");
        hostctl_tests::run(&mut cmd)
    };

    let refused = nix_build();
    assert!(!refused.status.success(), "built without emulation: {}", text(&refused));
    assert!(
        text(&refused).contains("aarch64-linux") && text(&refused).contains("x86_64-linux"),
        "expected Nix's platform refusal: {}",
        text(&refused)
    );

    let config =
        agent_config(&dir, "a", "127.0.0.1:0", &binfmt_section(&["aarch64-linux"], &ns.mount, &agent_nix_conf, &[]));
    let (code, report) = agent_binfmt(&ns, &config, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(registered_systems(&report), ["aarch64-linux"]);

    let built = nix_build();
    assert!(built.status.success(), "nix-build failed: {}", text(&built));
    let out_path = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    assert!(out_path.starts_with("/nix/store/") && out_path.ends_with("-hostctl-emulated"), "{out_path}");
    // The builder ran as aarch64 code: it saw an aarch64 machine.
    assert_eq!(std::fs::read_to_string(store.physical(&out_path)).unwrap(), "aarch64\n");
}

/// `hostctl-agent serve`, SIGTERMed and reaped on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `serve` (through `command`) with `config`, logging to `log`; waits for its status.
fn serve(mut command: Command, config: &Path, log: &Path) -> Served {
    let log = std::fs::File::create(log).unwrap();
    command.args(["serve", "--config", &config.display().to_string()]);
    command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    Served(command.spawn().unwrap())
}

fn get_status(addr: &str, key: &SecretKey) -> Option<Value> {
    let response = Request::new("GET", "/v1/status", b"").signed(key, "binfmt-test").send(addr).ok()?;
    (response.status == 200).then(|| serde_json::from_str(&response.body).unwrap())
}

fn wait_status(addr: &str, key: &SecretKey, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = get_status(addr, key) {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent did not answer within 30 s: {}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn serve_registers_at_start_and_reports_what_the_kernel_has() {
    let ns = PrivateBinfmt::new();
    let dir = ns.dir().to_path_buf();
    let program = aarch64_program(&dir).display().to_string();
    let key = secret_key(&dir);
    let nix_conf = dir.join("etc/nix/hostctl-binfmt.conf");
    // A managed entry left wrong by an earlier run: the agent replaces it at start.
    assert!(ns
        .write("register", &aarch64_line("hostctl-aarch64-linux", "/usr/bin/qemu-arm-static", ""))
        .status
        .success());
    let addr = format!("127.0.0.1:{}", free_port());
    let config = agent_config(&dir, "a", &addr, &binfmt_section(&["aarch64-linux"], &ns.mount, &nix_conf, &[]));
    let log = dir.join("agent.log");
    let _agent = serve(ns.command(&[&binary("hostctl-agent").display().to_string()]), &config, &log);

    let status = wait_status(&addr, &key, &log);
    assert_eq!(status["emulated_systems"], serde_json::json!(["aarch64-linux"]), "{status}");
    assert!(ns.entry("hostctl-aarch64-linux").unwrap().contains(&format!("interpreter {AARCH64_EMULATOR}\n")));
    assert_eq!(ns.ok(&[&program]), "aarch64\n");
    assert!(std::fs::read_to_string(&nix_conf).unwrap().contains("extra-platforms = aarch64-linux"));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("aarch64-linux: replaced (interpreter /usr/bin/qemu-arm-static"), "{logged}");

    // Status reads the kernel, not the agent's memory: an entry removed behind its back
    // is no longer reported (the agent puts it back on its next round).
    assert!(ns.write("hostctl-aarch64-linux", "-1").status.success());
    let status = get_status(&addr, &key).unwrap();
    assert_eq!(status["emulated_systems"], serde_json::json!([]), "{status}");
}

#[test]
fn an_unmounted_binfmt_misc_does_not_stop_the_agent() {
    // No namespace needed: nothing is mounted at the configured point, so nothing is written.
    let dir = tempfile::Builder::new().prefix("hostctl-binfmt-").tempdir().unwrap();
    let mount = dir.path().join("not-mounted");
    std::fs::create_dir(&mount).unwrap();
    let nix_conf = dir.path().join("etc/nix/hostctl-binfmt.conf");
    let key = secret_key(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let config = agent_config(dir.path(), "a", &addr, &binfmt_section(&["aarch64-linux"], &mount, &nix_conf, &[]));
    let log = dir.path().join("agent.log");
    let agent = serve(Command::new(binary("hostctl-agent")), &config, &log);

    let status = wait_status(&addr, &key, &log);
    assert_eq!(status["emulated_systems"], serde_json::json!([]), "{status}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&format!("binfmt_misc is not mounted at {}", mount.display())), "{logged}");
    let conf = std::fs::read_to_string(&nix_conf).unwrap();
    assert!(!conf.contains("extra-platforms"), "Nix must not be told about a system it cannot run: {conf}");
    assert_eq!(std::fs::read_dir(&mount).unwrap().count(), 0);
    drop(agent);
}

#[test]
fn bad_binfmt_configurations_exit_2_naming_the_key() {
    let dir = tempfile::Builder::new().prefix("hostctl-binfmt-").tempdir().unwrap();
    let mount = dir.path().join("binfmt_misc");
    let nix_conf = dir.path().join("etc/nix/hostctl-binfmt.conf");
    let missing = dir.path().join("no-such-qemu").display().to_string();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            binfmt_section(&["aarch64-linux", "x86_64-linux"], &mount, &nix_conf, &[]),
            vec!["binfmt.emulated_systems[1]".into(), "`x86_64-linux` runs natively".into()],
        ),
        (
            binfmt_section(&["vax-linux"], &mount, &nix_conf, &[]),
            vec!["binfmt.emulated_systems[0]".into(), "unknown system `vax-linux`".into()],
        ),
        (
            binfmt_section(&["aarch64-linux"], &mount, &nix_conf, &[("aarch64-linux", &missing)]),
            vec!["binfmt.interpreters.aarch64-linux".into(), format!("{missing} does not exist")],
        ),
        (
            binfmt_section(&["aarch64-linux"], &mount, &nix_conf, &[("riscv64-linux", AARCH64_EMULATOR)]),
            vec!["binfmt.interpreters.riscv64-linux".into(), "not in binfmt.emulated_systems".into()],
        ),
    ];
    let agent = binary("hostctl-agent");
    for (i, (section, expected)) in cases.iter().enumerate() {
        let config = agent_config(dir.path(), &format!("bad{i}"), "127.0.0.1:0", section);
        let file = config.display().to_string();
        for command in ["check-config", "serve", "binfmt"] {
            let out = Command::new(&agent).args([command, "--config", &file]).stdin(Stdio::null()).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {section}: {stderr}");
            assert!(stderr.starts_with(&format!("error: {file}: ")), "{command}: {stderr}");
            for needle in expected {
                assert!(stderr.contains(needle.as_str()), "{command}: {needle:?} not in {stderr}");
            }
        }
    }
    assert!(!nix_conf.exists(), "nothing may be written for a refused configuration");
    assert!(!dir.path().join("bad0-state").exists(), "serve must refuse before preparing anything");

    // `binfmt` without a `binfmt:` section is bad input too.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, format!("hostname: binfmt-test\ntrusted_keys: [{}]\n", q(public_key()))).unwrap();
    let out = Command::new(&agent).args(["binfmt", "--config", &plain.display().to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `binfmt:` section"));
}
