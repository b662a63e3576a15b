//! A fleet with real agents: a [`TestFleet`] copy of the example, a fresh Nix signing
//! key, and one [`SimHost`] per host running `hostctl-agent serve` that trusts it.

use std::path::PathBuf;
use std::process::Command;

use hostctl_schemas::signing::SecretKey;

use serde_json::Value;

use crate::http::{Request, Response};
use crate::simhost::{agent_config, SimHost};
use crate::{fail, run, HostctlChild, HostctlRun, TestFleet};

/// Hosts, key and fleet; everything is torn down on drop (hosts first).
#[derive(Debug)]
pub struct LiveFleet {
    pub hosts: Vec<SimHost>,
    pub fleet: TestFleet,
    pub key_file: PathBuf,
    pub public_key: String,
}

impl LiveFleet {
    /// Starts an agent for each of `names` (hosts of the example fleet) and rewrites
    /// `fleet.yaml` to list exactly those hosts at their simulated addresses.
    pub fn start(names: &[&str]) -> Self {
        Self::start_with(names, |_| {})
    }

    /// Like [`LiveFleet::start`], letting `prepare` change the fleet first (e.g. add
    /// `hosts/<name>.nix` files for hosts the example does not have).
    pub fn start_with(names: &[&str], prepare: impl FnOnce(&TestFleet)) -> Self {
        let fleet = TestFleet::new();
        prepare(&fleet);
        let key_file = fleet.tmp.path().join("fleet.sec");
        let public_key = generate_key(&fleet, "hostctl-test", &key_file);
        let mut hosts = Vec::new();
        for name in names {
            let mut host = SimHost::create(name);
            host.start_agent(&agent_config(&host, &public_key));
            hosts.push(host);
        }
        let live = Self { hosts, fleet, key_file, public_key };
        live.write_inventory("");
        live.fleet.commit("inventory for the simulated hosts");
        live
    }

    /// Writes `fleet.yaml` for the running hosts; `extra` is appended (e.g. a rollout).
    pub fn write_inventory(&self, extra: &str) {
        self.write_inventory_with("30s", |_| String::new(), extra);
    }

    pub fn host(&self, name: &str) -> &SimHost {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| fail(&format!("no host {name}")))
    }

    pub fn host_mut(&mut self, name: &str) -> &mut SimHost {
        match self.hosts.iter_mut().find(|h| h.name == name) {
            Some(h) => h,
            None => fail(&format!("no host {name}")),
        }
    }

    /// The signing key, for tests that sign requests themselves.
    pub fn secret_key(&self) -> SecretKey {
        load_key(&self.key_file)
    }

    /// A new fleet key named `name` (`nix key generate-secret`), its secret written 0600 to
    /// `<fleet tmp>/<name>.sec`: the file and the public key (`name:base64`).
    pub fn new_key(&self, name: &str) -> (PathBuf, String) {
        let file = self.fleet.tmp.path().join(format!("{name}.sec"));
        let public = generate_key(&self.fleet, name, &file);
        (file, public)
    }

    /// `hostctl --key <key> ARGS...` against this fleet.
    pub fn hostctl(&self, args: &[&str]) -> HostctlRun {
        HostctlRun::from(run(&mut self.hostctl_command(args)))
    }

    /// The command [`LiveFleet::hostctl`] runs, for tests that change its environment.
    pub fn hostctl_command(&self, args: &[&str]) -> Command {
        let key = self.key_file.display().to_string();
        let mut all = vec!["--key", key.as_str()];
        all.extend_from_slice(args);
        self.fleet.hostctl_command(&all, &[])
    }

    /// Changes a host's configuration (its motd) so it builds a new toplevel; commits.
    pub fn change_host(&self, name: &str, motd: &str) {
        self.set_motd(name, motd);
        self.fleet.commit(&format!("{name}: {motd}"));
    }

    /// Sets host `name`'s kernel version and kernel parameters in `hosts/<name>.nix` and
    /// commits.
    pub fn set_kernel(&self, name: &str, version: &str, params: &str) {
        let file = format!("hosts/{name}.nix");
        let text = self.fleet.read(&file);
        let kept: Vec<&str> = text.lines().filter(|l| !l.contains("kernel")).collect();
        let body = kept.join("\n");
        let end = body.rfind('}').unwrap_or_else(|| fail(&format!("{file}: no closing brace")));
        let params: Vec<String> = params.split_whitespace().map(|p| format!("\"{p}\"")).collect();
        let attrs = format!("  kernel = \"{version}\";\n  kernelParams = [ {} ];\n", params.join(" "));
        self.fleet.write(&file, &format!("{}{attrs}{}\n", &body[..end], &body[end..]));
        self.fleet.commit(&format!("{name}: kernel {version}"));
    }

    /// Sets host `name`'s motd in `hosts/<name>.nix` without committing.
    pub fn set_motd(&self, name: &str, motd: &str) {
        let file = format!("hosts/{name}.nix");
        let text = self.fleet.read(&file);
        let start = text.find("motd = \"").map(|i| i + 8).unwrap_or_else(|| fail("no motd"));
        let end = text[start..].find('"').map(|i| start + i).unwrap_or_else(|| fail("no motd end"));
        self.fleet.write(&file, &format!("{}{motd}{}", &text[..start], &text[end..]));
    }

    /// The paths of `toplevel`'s closure (in this machine's store) that host `name`
    /// lacks, as its agent answers `POST /v1/paths/missing`, and their zstd-compressed
    /// `nix-store --export`: the import body hostctl would push. Fails if none is missing.
    pub fn export_missing(&self, name: &str, toplevel: &str) -> (Vec<String>, Vec<u8>) {
        let closure = run(Command::new("nix-store").args(["--query", "--requisites", toplevel]));
        if !closure.status.success() {
            fail(&format!("nix-store --query --requisites {toplevel}: {}", String::from_utf8_lossy(&closure.stderr)));
        }
        let all: Vec<&str> = std::str::from_utf8(&closure.stdout).unwrap_or_default().lines().collect();
        let body = serde_json::json!({ "paths": all }).to_string();
        let answer = self.agent_json(name, "POST", "/v1/paths/missing", body.as_bytes());
        let missing: Vec<String> = answer["missing"]
            .as_array()
            .map(|paths| paths.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if missing.is_empty() {
            fail(&format!("{toplevel} is not new to {name}: {answer}"));
        }
        let compressed = compressed_export(&missing);
        (missing, compressed)
    }

    /// Imports `toplevel`'s missing closure into host `name` through the agent API, as
    /// hostctl pushes it; fails the test unless the agent answers 200.
    pub fn import_closure(&self, name: &str, toplevel: &str) {
        let (missing, compressed) = self.export_missing(name, toplevel);
        let r = Request::new("POST", "/v1/paths/import", &compressed)
            .header("x-hostctl-paths", &missing.join(" "))
            .signed(&self.secret_key(), name)
            .send(&self.agent_addr(name));
        match r {
            Ok(r) if r.status == 200 => {}
            Ok(r) => fail(&format!("import of {toplevel} into {name}: {} {}", r.status, r.body)),
            Err(e) => fail(&format!("import of {toplevel} into {name}: {e}")),
        }
    }

    /// What the example's `switch-to-configuration` recorded on a host.
    pub fn switch_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.host(name).root.join("state/switch.log")).unwrap_or_default()
    }
}

/// The fleet's signing key from `file`; fails the test if it cannot be read.
pub fn load_key(file: &std::path::Path) -> SecretKey {
    SecretKey::load(file).unwrap_or_else(|e| fail(&e.to_string()))
}

/// `nix key generate-secret --key-name NAME` into `secret_file` (0600); the public key.
pub fn generate_key(fleet: &TestFleet, name: &str, secret_file: &std::path::Path) -> String {
    let secret = nix_stdout(fleet, &["key", "generate-secret", "--key-name", name], None);
    crate::write_secret(secret_file, &secret);
    nix_stdout(fleet, &["key", "convert-secret-to-public"], Some(&secret)).trim().to_owned()
}

/// `nix ARGS` in the fleet directory with `stdin`; its stdout. Fails the caller on error.
pub fn nix_stdout(fleet: &TestFleet, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .current_dir(&fleet.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("nix {args:?}: {e}")));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap_or_else(|e| fail(&format!("nix {args:?}: {e}")));
    if !out.status.success() {
        fail(&format!("nix {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fleet.yaml: agents on port 7420, mode `switch`, `confirm_timeout`; each host as
/// `(name, address, lines)` with `lines` appended under its entry (indented by four
/// spaces); `extra` at the end. Every agent's identity is pinned (`agent_key`, the
/// pre-provisioned [`crate::identity::test_identity`] of its name). The simulated hosts'
/// and the VM lane's fleets both use it.
pub fn inventory_yaml(confirm_timeout: &str, hosts: &[(String, String, String)], extra: &str) -> String {
    let mut yaml =
        format!("flake: .\ndefaults:\n  port: 7420\n  mode: switch\n  confirm_timeout: {confirm_timeout}\nhosts:\n");
    for (name, addr, lines) in hosts {
        let pin = crate::identity::test_identity_public(name);
        yaml.push_str(&format!("  {name}:\n    address: {addr}\n    system: x86_64-linux\n    agent_key: {pin}\n"));
        yaml.push_str(lines);
    }
    yaml.push_str(extra);
    yaml
}

/// How long one request to an agent may take in the helpers below.
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl LiveFleet {
    /// Writes `fleet.yaml` for the running hosts with `confirm_timeout` as the fleet's
    /// confirmation window; `host_lines(host)` is appended under each host's entry
    /// (indented by four spaces, e.g. `    health:\n      - command: [\"false\"]\n`), and
    /// `extra` at the end (e.g. a `rollout:`). Does not commit.
    pub fn write_inventory_with(&self, confirm_timeout: &str, host_lines: impl Fn(&SimHost) -> String, extra: &str) {
        let hosts: Vec<(String, String, String)> =
            self.hosts.iter().map(|h| (h.name.clone(), h.addr.to_string(), host_lines(h))).collect();
        self.fleet.write("fleet.yaml", &inventory_yaml(confirm_timeout, &hosts, extra));
    }

    /// `hostctl --key <key> ARGS...` in the background.
    pub fn spawn_hostctl(&self, args: &[&str]) -> HostctlChild {
        let key = self.key_file.display().to_string();
        let mut all = vec!["--key", key.as_str()];
        all.extend_from_slice(args);
        self.fleet.spawn_hostctl(&all)
    }

    /// `hostctl --json apply` in the background with host `name`'s next switch held
    /// ([`crate::gates::SwitchGate`]); returns once it is held: the gate, the running apply
    /// and the id of the deployment being switched to.
    pub fn apply_held_at_switch(&self, name: &str) -> (crate::gates::SwitchGate, HostctlChild, String) {
        let known = self.deployment_ids(name);
        let gate = crate::gates::SwitchGate::arm(self.host(name));
        let apply = self.spawn_hostctl(&["--json", "apply"]);
        gate.wait_blocked();
        let deployment = self.wait_for_new_deployment(name, &known, std::time::Duration::from_secs(10));
        let id = deployment["id"].as_str().unwrap_or_else(|| fail(&format!("no id in {deployment}"))).to_owned();
        (gate, apply, id)
    }

    /// `ADDR:PORT` of a host's agent.
    pub fn agent_addr(&self, name: &str) -> String {
        let h = self.host(name);
        format!("{}:{}", h.addr, h.port)
    }

    /// `ADDR:PORT` of a host's agent's plain `metrics_listen`.
    pub fn metrics_addr(&self, name: &str) -> String {
        crate::loadgen::metrics_addr(&self.agent_addr(name))
    }

    /// A request to a host's agent signed with the fleet key, on a new connection.
    pub fn agent_request(&self, name: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
        Request::new(method, path, body)
            .signed(&self.secret_key(), name)
            .send_with_timeout(&self.agent_addr(name), AGENT_TIMEOUT)
    }

    /// A signed request whose answer must be 2xx JSON; fails the test otherwise.
    pub fn agent_json(&self, name: &str, method: &str, path: &str, body: &[u8]) -> Value {
        let r = self
            .agent_request(name, method, path, body)
            .unwrap_or_else(|e| fail(&format!("{method} {path} on {name}: {e}")));
        if !(200..300).contains(&r.status) {
            fail(&format!("{method} {path} on {name}: {} {}", r.status, r.body));
        }
        serde_json::from_str(&r.body).unwrap_or_else(|e| fail(&format!("{method} {path} on {name}: {e}: {}", r.body)))
    }

    /// `GET /v1/status`.
    pub fn agent_status(&self, name: &str) -> Value {
        self.agent_json(name, "GET", "/v1/status", b"")
    }

    /// The agent's deployments, newest first (`GET /v1/generations`, `deployments`).
    pub fn deployments(&self, name: &str) -> Vec<Value> {
        let v = self.agent_json(name, "GET", "/v1/generations", b"");
        v["deployments"].as_array().cloned().unwrap_or_default()
    }

    /// The agent's generations, newest first (`GET /v1/generations`, `generations`).
    pub fn generations(&self, name: &str) -> Vec<Value> {
        let v = self.agent_json(name, "GET", "/v1/generations", b"");
        v["generations"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /v1/deployments/{id}`.
    pub fn deployment(&self, name: &str, id: &str) -> Value {
        self.agent_json(name, "GET", &format!("/v1/deployments/{id}"), b"")
    }

    /// Ids of the agent's deployments.
    pub fn deployment_ids(&self, name: &str) -> Vec<String> {
        self.deployments(name).iter().filter_map(|d| d["id"].as_str().map(str::to_owned)).collect()
    }

    /// Polls the agent until it lists a deployment whose id is not in `known`; returns
    /// it. Fails after `timeout`.
    pub fn wait_for_new_deployment(&self, name: &str, known: &[String], timeout: std::time::Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let fresh = self.deployments(name).into_iter().find(|d| {
                let id = d["id"].as_str().unwrap_or_default();
                !known.iter().any(|k| k == id)
            });
            if let Some(d) = fresh {
                return d;
            }
            if std::time::Instant::now() > deadline {
                fail(&format!("no new deployment on {name} within {timeout:?}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Polls `GET /v1/deployments/{id}` until its `state` satisfies `done`; returns the
    /// deployment. Transport errors (an agent restarting) are retried. Fails after
    /// `timeout` with the last answer.
    pub fn wait_for_deployment(
        &self,
        name: &str,
        id: &str,
        timeout: std::time::Duration,
        done: impl Fn(&str) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        let path = format!("/v1/deployments/{id}");
        loop {
            let last = match self.agent_request(name, "GET", &path, b"") {
                Ok(r) if r.status == 200 => {
                    if let Ok(v) = serde_json::from_str::<Value>(&r.body) {
                        if done(v["state"].as_str().unwrap_or_default()) {
                            return v;
                        }
                    }
                    r.body
                }
                Ok(r) => format!("{} {}", r.status, r.body),
                Err(e) => e.to_string(),
            };
            if std::time::Instant::now() > deadline {
                fail(&format!("deployment {id} on {name}: no wanted state within {timeout:?}; last answer: {last}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// zstd of `nix-store --export PATHS` from this machine's store, as hostctl compresses
/// an import body.
pub fn compressed_export<P: AsRef<std::ffi::OsStr>>(paths: &[P]) -> Vec<u8> {
    let export = run(Command::new("nix-store").arg("--export").args(paths));
    if !export.status.success() {
        fail(&format!("nix-store --export: {}", String::from_utf8_lossy(&export.stderr)));
    }
    zstd::encode_all(export.stdout.as_slice(), 3).unwrap_or_else(|e| fail(&format!("zstd: {e}")))
}

/// Pull mode (GitOps): a bare remote, agents restarted with a `pull:` block, webhooks,
/// and waiting on `GET /v1/status`'s `pull` object.
impl LiveFleet {
    /// The webhook secret [`LiveFleet::enable_pull`] configures.
    pub const WEBHOOK_SECRET: &'static str = "hostctl-test-webhook-secret";

    /// Creates the bare remote (if needed) and pushes `main` to it, then restarts host
    /// `name`'s agent with `pull: {url: <bare remote>, branch: main, interval, lock,
    /// webhook_secret_file}` (secret: [`LiveFleet::WEBHOOK_SECRET`]). The agent keeps its
    /// state (journal, pinned lock) across the restart.
    pub fn enable_pull(&mut self, name: &str, interval: &str, lock: &str) {
        let remote = self.fleet.init_bare_remote();
        self.enable_pull_with(name, self.pull_settings(&remote.to_string_lossy(), interval, lock));
    }

    /// The settings [`LiveFleet::enable_pull`] uses, with another `url` (e.g. an ssh URL
    /// of the bare remote); no ssh key.
    pub fn pull_settings(&self, url: &str, interval: &str, lock: &str) -> crate::simhost::PullSettings {
        crate::simhost::PullSettings {
            url: url.to_owned(),
            branch: "main".to_owned(),
            interval: interval.to_owned(),
            webhook_secret: Some(Self::WEBHOOK_SECRET.to_owned()),
            lock: lock.to_owned(),
            ssh: None,
            commits: None,
        }
    }

    /// Restarts host `name`'s agent with a `pull:` block made of `settings` (state kept).
    pub fn enable_pull_with(&mut self, name: &str, settings: crate::simhost::PullSettings) {
        let key = self.public_key.clone();
        let host = self.host_mut(name);
        let yaml = crate::simhost::agent_config_with(host, &key, &host.pull_yaml(&settings));
        host.stop_agent();
        host.start_agent(&yaml);
    }

    /// Sends a webhook request to a host's agent (unsigned by the fleet key).
    pub fn send_webhook(&self, name: &str, request: &Request) -> Response {
        request
            .send_with_timeout(&self.agent_addr(name), AGENT_TIMEOUT)
            .unwrap_or_else(|e| fail(&format!("POST /v1/hooks/git on {name}: {e}")))
    }

    /// A correctly signed push webhook for `branch` naming `after`, with a fresh
    /// delivery id; returns the response.
    pub fn push_webhook(&self, name: &str, branch: &str, after: &str) -> Response {
        let body = crate::http::push_payload(branch, after);
        let delivery = format!("delivery-{}", crate::http::fresh_id());
        self.send_webhook(name, &Request::webhook(&body, Some(Self::WEBHOOK_SECRET.as_bytes()), Some(&delivery)))
    }

    /// `GET /v1/status`'s `pull` object (`null` in push mode).
    pub fn pull_status(&self, name: &str) -> Value {
        self.agent_status(name)["pull"].clone()
    }

    /// Polls `GET /v1/status` until `done(pull)` holds; returns that `pull` object.
    /// Transport errors are retried. Fails after `timeout` with the last answer and the
    /// agent log's tail.
    pub fn wait_pull(
        &self,
        name: &str,
        what: &str,
        timeout: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let last = match self.agent_request(name, "GET", "/v1/status", b"") {
                Ok(r) if r.status == 200 => match serde_json::from_str::<Value>(&r.body) {
                    Ok(v) if done(&v["pull"]) => return v["pull"].clone(),
                    _ => r.body,
                },
                Ok(r) => format!("{} {}", r.status, r.body),
                Err(e) => e.to_string(),
            };
            if std::time::Instant::now() > deadline {
                let log = self.host(name).agent_log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                fail(&format!("{name}: not {what} within {timeout:?}; last status: {last}\nagent log tail:\n{tail}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Waits until `pull.applied_commit == commit`.
    pub fn wait_applied_commit(&self, name: &str, commit: &str, timeout: std::time::Duration) -> Value {
        self.wait_pull(name, &format!("applied_commit = {commit}"), timeout, |p| p["applied_commit"] == commit)
    }

    /// Waits until `pull.pending_commit == commit`.
    pub fn wait_pending_commit(&self, name: &str, commit: &str, timeout: std::time::Duration) -> Value {
        self.wait_pull(name, &format!("pending_commit = {commit}"), timeout, |p| p["pending_commit"] == commit)
    }

    /// Waits until `pull.fetched_commit == commit`.
    pub fn wait_fetched_commit(&self, name: &str, commit: &str, timeout: std::time::Duration) -> Value {
        self.wait_pull(name, &format!("fetched_commit = {commit}"), timeout, |p| p["fetched_commit"] == commit)
    }
}

impl LiveFleet {
    /// Gives host `name` the fast lane's boot loader and reboot ([`SimHost::install_boot_loader`])
    /// and restarts its agent with the `boot:` settings added.
    pub fn enable_reboots(&mut self, name: &str) {
        let host = self.host_mut(name);
        let boot = host.install_boot_loader();
        host.stop_agent();
        let config = host.root.join("etc/agent.yaml");
        let yaml = std::fs::read_to_string(&config).unwrap_or_else(|e| fail(&format!("{}: {e}", config.display())));
        host.start_agent(&format!("{yaml}{boot}"));
    }

    /// `hostctl --key <key> ARGS...` while acting as the hosts' firmware: each reboot an
    /// agent asks for is carried out ([`SimHost::firmware_boot`]), except for the hosts in
    /// `never_back`, which go down and stay down. Returns the run and the boots, in order.
    pub fn hostctl_rebooting(
        &mut self,
        args: &[&str],
        never_back: &[&str],
    ) -> (HostctlRun, Vec<(String, crate::simhost::Boot)>) {
        let mut child = self.spawn_hostctl(args);
        let mut boots = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            for host in &mut self.hosts {
                if !host.take_reboot_request() {
                    continue;
                }
                if never_back.contains(&host.name.as_str()) {
                    host.shut_down();
                } else {
                    let boot = host.firmware_boot();
                    boots.push((host.name.clone(), boot));
                }
            }
            if let Some(run) = child.wait_timeout(std::time::Duration::from_millis(100)) {
                return (run, boots);
            }
            if std::time::Instant::now() > deadline {
                fail(&format!("hostctl {args:?} still runs after 600 s:\n{}", child.kill().stderr));
            }
        }
    }
}
