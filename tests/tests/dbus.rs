//! The agent on D-Bus (issue 6): real agents on simulated hosts connected to a private,
//! system-like dbus-daemon (its default policy plus the shipped
//! `agent/dbus/org.hostctl.Agent1.conf`), read with an independent zbus client, with
//! `dbus-send` (as root and as `nobody` through `setpriv`) and with `hostctl-agent status`.
//!
//! `HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-tests --test dbus introspection`
//! rewrites the interface in `schemas/dbus/org.hostctl.Agent1.xml` from the live object.

#![expect(clippy::unwrap_used, reason = "test code throughout (helpers too): a failed step must fail the test")]

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostctl_tests::dbus::{restart_on_bus, Policy, TestBus, NAME, NOBODY, PATH};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::{binary, workspace_root};
use serde_json::Value;
use tokio::runtime::Runtime;
use zbus::export::futures_core::Stream;
use zbus::message::Type;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedValue, Value as Variant};
use zbus::{Connection, MatchRule, MessageStream};

const HOST: &str = "web1";

/// How long an agent may take to own its name once the bus is there (the retry backoff
/// reaches 4 s after a few seconds without a bus).
const OWNER_TIMEOUT: Duration = Duration::from_secs(40);

/// A deployment's end, as the signals tell it.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(60);

#[zbus::proxy(
    interface = "org.hostctl.Agent1",
    default_service = "org.hostctl.Agent1",
    default_path = "/org/hostctl/Agent1",
    gen_blocking = false
)]
trait Agent1 {
    fn status(&self) -> zbus::Result<String>;
    fn generations(&self) -> zbus::Result<String>;
    fn pull(&self) -> zbus::Result<()>;
    fn rollback(&self, target: &str) -> zbus::Result<String>;
    #[zbus(property)]
    fn hostname(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn current_generation(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn current_system(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn revision(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn lock_hash(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pinned_lock(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn emulated_systems(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn last_deployment(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pending_lock(&self) -> zbus::Result<String>;
}

/// A test's client side: a runtime, a connection to the bus as root, the proxy.
struct Client {
    rt: Runtime,
    connection: Connection,
    agent: Agent1Proxy<'static>,
}

impl Client {
    fn new(bus: &TestBus) -> Client {
        let rt = Runtime::new().unwrap();
        let (connection, agent) = rt.block_on(async {
            let connection = zbus::connection::Builder::address(bus.address()).unwrap().build().await.unwrap();
            let agent = Agent1Proxy::builder(&connection).cache_properties(CacheProperties::No).build().await.unwrap();
            (connection, agent)
        });
        Client { rt, connection, agent }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Every property, by its D-Bus name, rendered as text.
    fn properties(&self) -> HashMap<String, String> {
        let a = &self.agent;
        self.block_on(async {
            HashMap::from([
                ("Hostname".to_owned(), a.hostname().await.unwrap()),
                ("State".to_owned(), a.state().await.unwrap()),
                ("CurrentGeneration".to_owned(), a.current_generation().await.unwrap().to_string()),
                ("CurrentSystem".to_owned(), a.current_system().await.unwrap()),
                ("Revision".to_owned(), a.revision().await.unwrap()),
                ("LockHash".to_owned(), a.lock_hash().await.unwrap()),
                ("PinnedLock".to_owned(), a.pinned_lock().await.unwrap()),
                ("EmulatedSystems".to_owned(), a.emulated_systems().await.unwrap().join(",")),
                ("LastDeployment".to_owned(), a.last_deployment().await.unwrap()),
                ("PendingLock".to_owned(), a.pending_lock().await.unwrap()),
            ])
        })
    }

    /// Starts recording every signal of the agent's object.
    fn record_signals(&self) -> Recorder {
        let rule = MatchRule::builder().msg_type(Type::Signal).path(PATH).unwrap().build();
        let mut stream = self.block_on(MessageStream::for_match_rule(rule, &self.connection, Some(4096))).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&seen);
        self.rt.spawn(async move {
            while let Some(Ok(msg)) = next(&mut stream).await {
                if let Some(s) = Seen::of(&msg) {
                    out.lock().unwrap().push(s);
                }
            }
        });
        Recorder(seen)
    }
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// One signal of the agent.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// PropertiesChanged: the changed properties and their new values, rendered; and the
    /// invalidated ones.
    Changed(HashMap<String, String>, Vec<String>),
    /// DeploymentStarted(id, toplevel, rev, lock, mode).
    Started([String; 5]),
    /// DeploymentFinished(id, result, error).
    Finished([String; 3]),
}

impl Seen {
    fn of(msg: &zbus::Message) -> Option<Seen> {
        let header = msg.header();
        let body = msg.body();
        match header.member()?.as_str() {
            "PropertiesChanged" => {
                let (iface, changed, invalidated): (String, HashMap<String, OwnedValue>, Vec<String>) =
                    body.deserialize().unwrap();
                assert_eq!(iface, "org.hostctl.Agent1");
                Some(Seen::Changed(changed.into_iter().map(|(k, v)| (k, render(&v))).collect(), invalidated))
            }
            "DeploymentStarted" => {
                let (a, b, c, d, e): (String, String, String, String, String) = body.deserialize().unwrap();
                Some(Seen::Started([a, b, c, d, e]))
            }
            "DeploymentFinished" => {
                let (a, b, c): (String, String, String) = body.deserialize().unwrap();
                Some(Seen::Finished([a, b, c]))
            }
            _ => None,
        }
    }
}

fn render(v: &Variant<'_>) -> String {
    match v {
        Variant::Str(s) => s.to_string(),
        Variant::U64(n) => n.to_string(),
        Variant::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(","),
        other => format!("{other:?}"),
    }
}

/// The signals recorded so far.
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `DeploymentFinished` for `id` was seen; returns every signal so far.
    fn wait_finished(&self, id: &str) -> Vec<Seen> {
        let deadline = Instant::now() + SIGNAL_TIMEOUT;
        loop {
            let all = self.all();
            if all.iter().any(|s| matches!(s, Seen::Finished([i, ..]) if i == id)) {
                return all;
            }
            assert!(Instant::now() < deadline, "no DeploymentFinished for {id}; seen: {all:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A one-host live fleet whose agent serves on `bus`.
fn fleet_on(bus: &TestBus) -> LiveFleet {
    let mut live = LiveFleet::start(&[HOST]);
    restart_on_bus(live.host_mut(HOST), bus.address());
    if bus.is_running() {
        bus.wait_for_owner(NAME, OWNER_TIMEOUT);
    }
    live
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hostctl-agent status ARGS...`.
fn agent_status(args: &[&str]) -> Output {
    Command::new(binary("hostctl-agent")).arg("status").args(args).output().unwrap()
}

#[test]
fn properties_methods_and_status_command_show_the_agent() {
    let bus = TestBus::start(Policy::Shipped);
    let live = fleet_on(&bus);
    let client = Client::new(&bus);

    let props = client.properties();
    let expected = [
        ("Hostname", "web1"),
        ("State", "idle"),
        ("CurrentGeneration", "0"),
        ("CurrentSystem", ""),
        ("Revision", ""),
        ("LockHash", ""),
        ("PinnedLock", ""),
        ("EmulatedSystems", ""),
        ("LastDeployment", ""),
        ("PendingLock", ""),
    ];
    for (name, value) in expected {
        assert_eq!(props[name], value, "{name}: {props:?}");
    }
    let status = settled(serde_json::from_str(&client.block_on(client.agent.status()).unwrap()).unwrap());
    assert_eq!(status, settled(live.agent_status(HOST)), "Status() is GET /v1/status");
    let generations: Value = serde_json::from_str(&client.block_on(client.agent.generations()).unwrap()).unwrap();
    assert_eq!(generations, serde_json::json!({"generations": [], "deployments": []}));

    // Everyone may read; only root may change (the bus policy refuses before the agent).
    let iface = "string:org.hostctl.Agent1";
    for uid in [None, Some(NOBODY)] {
        let get = bus.call_agent(uid, "org.freedesktop.DBus.Properties.Get", &[iface, "string:Hostname"]);
        assert!(get.status.success() && String::from_utf8_lossy(&get.stdout).contains("\"web1\""), "{}", text(&get));
        let all = bus.call_agent(uid, "org.freedesktop.DBus.Properties.GetAll", &[iface]);
        assert!(String::from_utf8_lossy(&all.stdout).contains("CurrentGeneration"), "{}", text(&all));
        let s = bus.call_agent(uid, "org.hostctl.Agent1.Status", &[]);
        assert!(s.status.success() && String::from_utf8_lossy(&s.stdout).contains("\"hostname\""), "{}", text(&s));
        let g = bus.call_agent(uid, "org.hostctl.Agent1.Generations", &[]);
        assert!(g.status.success(), "{}", text(&g));
    }
    for (method, args) in [("Rollback", vec!["string:previous"]), ("Pull", vec![])] {
        let out = bus.call_agent(Some(NOBODY), &format!("org.hostctl.Agent1.{method}"), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{method} as nobody: {}", text(&out));
        assert!(
            err.contains("org.freedesktop.DBus.Error.AccessDenied") && err.contains("Rejected send message"),
            "{method}: refused by the bus policy: {}",
            text(&out)
        );
    }

    // hostctl-agent status: human, JSON, bus from the agent's configuration.
    let human = agent_status(&["--bus", bus.address()]);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(stdout.starts_with("web1: idle ("), "{stdout}");
    assert!(stdout.contains("\n  generation  -\n"), "{stdout}");
    let json = agent_status(&["--json", "--bus", bus.address()]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    assert_eq!(settled(serde_json::from_slice::<Value>(&json.stdout).unwrap()), status);
    let as_nobody = Command::new("setpriv")
        .args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups"])
        .arg(binary("hostctl-agent"))
        .args(["status", "--json", "--bus", bus.address()])
        .output()
        .unwrap();
    assert_eq!(as_nobody.status.code(), Some(0), "anyone may read the status: {}", text(&as_nobody));
    assert_eq!(settled(serde_json::from_slice::<Value>(&as_nobody.stdout).unwrap()), status);
    let config = live.host(HOST).root.join("etc/agent.yaml");
    let from_config = agent_status(&["--json", "--config", &config.to_string_lossy()]);
    assert_eq!(from_config.status.code(), Some(0), "{}", text(&from_config));
    assert_eq!(settled(serde_json::from_slice::<Value>(&from_config.stdout).unwrap()), status);
}

/// A status with its `store_free_bytes` checked and left out: each read is a moment
/// apart, on a file system other processes write to.
fn settled(mut status: Value) -> Value {
    assert!(status["store_free_bytes"].is_u64(), "{status}");
    status["store_free_bytes"] = Value::Null;
    status
}

#[test]
fn status_command_errors_name_the_bus_and_exit_1_or_2() {
    let missing = "unix:path=/tmp/hostctl-no-such-dir/bus";
    let out = agent_status(&["--bus", missing]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot connect to the bus ({missing})")),
        "{}",
        text(&out)
    );

    let empty = TestBus::start(Policy::Shipped);
    let out = agent_status(&["--bus", empty.address()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no hostctl agent on the bus (") && err.contains(empty.address()), "{}", text(&out));

    for bad in [vec!["--bus", "nonsense"], vec!["--bus", "unix:path=/a b"], vec!["--bus", "nosuch:x=1"]] {
        let out = agent_status(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("bus"), "{bad:?}: {}", text(&out));
    }
    let out = agent_status(&["--config", "/nonexistent/agent.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.yaml"), "{}", text(&out));
}

#[test]
fn apply_signals_changes_and_root_rolls_back_over_dbus() {
    let bus = TestBus::start(Policy::Shipped);
    let live = fleet_on(&bus);
    let client = Client::new(&bus);
    let signals = client.record_signals();

    let apply = live.hostctl(&["--json", "apply"]);
    apply.expect_code(0);
    let report = apply.json()["hosts"][HOST].clone();
    let id = report["deployment"].as_str().unwrap().to_owned();
    let toplevel = report["toplevel"].as_str().unwrap().to_owned();
    let (rev, lock) = (report["rev"].as_str().unwrap().to_owned(), report["lock"].as_str().unwrap().to_owned());
    let seen = signals.wait_finished(&id);

    let started: Vec<&Seen> = seen.iter().filter(|s| matches!(s, Seen::Started(_))).collect();
    assert_eq!(started, [&Seen::Started([id.clone(), toplevel.clone(), rev.clone(), lock.clone(), "switch".into()])]);
    let finished = seen.iter().position(|s| matches!(s, Seen::Finished(_))).unwrap();
    assert_eq!(seen[finished], Seen::Finished([id.clone(), "confirmed".into(), String::new()]));
    // Each PropertiesChanged carries changed values only, so one property never repeats
    // its previous value; and the state went through the deployment back to idle.
    let mut last: HashMap<String, String> = HashMap::new();
    let mut states = Vec::new();
    for s in &seen[..finished] {
        let Seen::Changed(changed, invalidated) = s else { continue };
        assert!(!changed.is_empty() && invalidated.is_empty(), "{s:?}");
        assert!(!changed.contains_key("Hostname"), "{s:?}");
        for (k, v) in changed {
            assert_ne!(last.get(k), Some(v), "{k} signalled unchanged: {seen:#?}");
            last.insert(k.clone(), v.clone());
        }
        states.extend(changed.get("State").cloned());
    }
    assert_eq!(states.first().map(String::as_str), Some("activating"), "{seen:#?}");
    assert_eq!(states.last().map(String::as_str), Some("idle"), "{seen:#?}");
    for (name, value) in [
        ("CurrentGeneration", "1"),
        ("CurrentSystem", toplevel.as_str()),
        ("Revision", rev.as_str()),
        ("LockHash", lock.as_str()),
        ("PinnedLock", lock.as_str()),
        ("LastDeployment", id.as_str()),
    ] {
        assert_eq!(last.get(name).map(String::as_str), Some(value), "{name} signalled: {seen:#?}");
    }
    assert_eq!(client.properties(), {
        let mut p = last.clone();
        p.insert("Hostname".into(), HOST.into());
        p.insert("EmulatedSystems".into(), String::new());
        p.insert("PendingLock".into(), String::new());
        p
    });

    // A second system, then back to the first: refused for nobody, done for root.
    live.change_host(HOST, "web1 second");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let refused = bus.call_agent(Some(NOBODY), "org.hostctl.Agent1.Rollback", &["string:previous"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("AccessDenied"), "{}", text(&refused));
    let bad = bus.call_agent(None, "org.hostctl.Agent1.Rollback", &["string:latest"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("org.freedesktop.DBus.Error.InvalidArgs"), "{}", text(&bad));
    assert_eq!(client.block_on(client.agent.current_generation()).unwrap(), 2);

    let rollback = client.block_on(client.agent.rollback("previous")).unwrap();
    let seen = signals.wait_finished(&rollback);
    assert!(seen.contains(&Seen::Finished([rollback.clone(), "confirmed".into(), String::new()])), "{seen:#?}");
    let props = client.properties();
    assert_eq!((props["CurrentGeneration"].as_str(), props["CurrentSystem"].as_str()), ("3", toplevel.as_str()));
    assert_eq!(props["LastDeployment"], rollback);
    let status = live.agent_status(HOST);
    assert_eq!((status["generation"].as_u64(), status["toplevel"].as_str()), (Some(3), Some(toplevel.as_str())));
    assert_eq!(live.host(HOST).current_system(), toplevel, "the first system runs again");
    // Who asked, journaled as for HTTP: root's uid and its connection's unique bus name.
    let by = live.deployment(HOST, &rollback)["requested_by"].clone();
    assert_eq!(by["key"], "uid 0", "{by}");
    assert!(by["address"].as_str().is_some_and(|a| a.starts_with(':')), "{by}");
}

#[test]
fn the_agent_itself_refuses_changes_from_non_root_callers() {
    // The permissive bus lets anyone's calls through: the agent's uid check must hold.
    let bus = TestBus::start(Policy::Permissive);
    let _live = fleet_on(&bus);
    for (method, args) in [("Rollback", vec!["string:previous"]), ("Pull", vec![])] {
        let out = bus.call_agent(Some(NOBODY), &format!("org.hostctl.Agent1.{method}"), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{method}: {}", text(&out));
        assert!(err.contains("org.freedesktop.DBus.Error.AccessDenied"), "{method}: {}", text(&out));
        assert!(
            err.contains(&format!("{method} changes the host: only root (uid 0) may call it"))
                && err.contains("is uid 65534"),
            "refused by the agent, not the bus: {}",
            text(&out)
        );
    }
    // Root gets through to the agent's own answers.
    let pull = bus.call_agent(None, "org.hostctl.Agent1.Pull", &[]);
    assert!(String::from_utf8_lossy(&pull.stderr).contains("org.hostctl.Agent1.Error.NotPullMode"), "{}", text(&pull));
    let unknown = bus.call_agent(None, "org.hostctl.Agent1.Rollback", &["string:7"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("org.hostctl.Agent1.Error.NotFound"),
        "{}",
        text(&unknown)
    );
    let g = bus.call_agent(None, "org.hostctl.Agent1.Generations", &[]);
    assert!(String::from_utf8_lossy(&g.stdout).contains(r#""deployments":[]"#), "nothing was deployed: {}", text(&g));
}

/// The log of the agent running now (the harness marks each start in the log).
fn this_agents_log(live: &LiveFleet) -> String {
    let log = live.host(HOST).agent_log();
    log.rfind("--- hostctl-tests: starting").map_or(log.clone(), |i| log[i..].to_owned())
}

#[test]
fn an_agent_started_without_a_bus_works_and_connects_when_it_appears() {
    let mut bus = TestBus::new(Policy::Shipped);
    let live = fleet_on(&bus);
    assert_eq!(live.agent_status(HOST)["hostname"], HOST, "HTTP works without the bus");
    std::thread::sleep(Duration::from_secs(3));
    let log = this_agents_log(&live);
    assert_eq!(log.matches("D-Bus: cannot serve").count(), 1, "one warning per failure streak:\n{log}");

    bus.run();
    bus.wait_for_owner(NAME, OWNER_TIMEOUT);
    let client = Client::new(&bus);
    assert_eq!(client.block_on(client.agent.hostname()).unwrap(), HOST);
    drop(client);

    // The daemon goes away and comes back: the agent reconnects.
    bus.stop();
    assert_eq!(live.agent_status(HOST)["state"], "idle");
    bus.run();
    bus.wait_for_owner(NAME, OWNER_TIMEOUT);
    let log = this_agents_log(&live);
    assert!(log.contains("D-Bus: the connection was lost; reconnecting"), "{log}");
    assert_eq!(log.matches("D-Bus: serving org.hostctl.Agent1").count(), 2, "{log}");
}

#[test]
fn pull_wakes_the_fetch_and_a_held_lock_change_shows_as_pending_lock() {
    let bus = TestBus::start(Policy::Shipped);
    let mut live = LiveFleet::start(&[HOST]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    live.fleet.init_bare_remote();
    live.enable_pull(HOST, "600s", "pinned");
    restart_on_bus(live.host_mut(HOST), bus.address());
    bus.wait_for_owner(NAME, OWNER_TIMEOUT);
    let head = live.fleet.head();
    live.wait_fetched_commit(HOST, &head, Duration::from_secs(20));
    let client = Client::new(&bus);
    let signals = client.record_signals();

    live.fleet.bump_nixpkgs("24.11-example");
    live.fleet.commit("nixpkgs: 24.11");
    live.fleet.push();
    let commit = live.fleet.head();
    // Nothing fetches before the interval (600 s) but Pull().
    client.block_on(client.agent.pull()).unwrap();
    let pull = live.wait_pending_commit(HOST, &commit, Duration::from_secs(20));
    let pending = pull["pending_lock"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.block_on(client.agent.pending_lock()).unwrap() != pending {
        assert!(Instant::now() < deadline, "PendingLock never became {pending}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = signals.all();
    assert!(
        seen.iter().any(|s| matches!(s, Seen::Changed(c, _) if c.get("PendingLock") == Some(&pending))),
        "{seen:#?}"
    );
    assert_ne!(client.block_on(client.agent.pinned_lock()).unwrap(), pending);
}

/// The `<interface name="org.hostctl.Agent1">` element of `xml`, whole lines.
fn interface_element(xml: &str) -> Option<&str> {
    let open = xml.find("<interface name=\"org.hostctl.Agent1\">")?;
    let start = xml[..open].rfind('\n').map_or(0, |i| i + 1);
    let close = open + xml[open..].find("</interface>")? + "</interface>".len();
    let end = xml[close..].find('\n').map_or(xml.len(), |i| close + i + 1);
    Some(&xml[start..end])
}

#[test]
fn introspection_matches_the_checked_in_xml() {
    let bus = TestBus::start(Policy::Shipped);
    let _live = fleet_on(&bus);
    let client = Client::new(&bus);
    let live_xml = client.block_on(async {
        let proxy = zbus::fdo::IntrospectableProxy::builder(&client.connection)
            .destination(NAME)
            .unwrap()
            .path(PATH)
            .unwrap()
            .build()
            .await
            .unwrap();
        proxy.introspect().await.unwrap()
    });
    let live = interface_element(&live_xml).unwrap_or_else(|| panic!("no interface in {live_xml}")).to_owned();
    let file = workspace_root().join("schemas/dbus/org.hostctl.Agent1.xml");
    let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
    if std::env::var_os("HOSTCTL_UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
        let updated = match interface_element(&checked_in) {
            Some(old) => checked_in.replacen(old, &live, 1),
            None if checked_in.contains("</node>") => checked_in.replacen("</node>", &format!("{live}</node>"), 1),
            None => format!("<node name=\"{PATH}\">\n{live}</node>\n"),
        };
        std::fs::write(&file, updated).unwrap();
        return;
    }
    assert_eq!(
        interface_element(&checked_in),
        Some(live.as_str()),
        "{} is stale; regenerate it with HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-tests --test dbus introspection",
        file.display()
    );
}
