//! agent.yaml: the DESIGN.md example parses (with a real key in place of the
//! placeholder), defaults are filled in, and bad input is located and explained.

use std::net::SocketAddr;
use std::path::Path;

use hostctl_schemas::agent_config::{
    load_agent_config, parse_agent_config, AgentConfig, AgentConfigError, Bus, LockPolicy,
};
use hostctl_schemas::{Duration, HealthKind};

const KEY: &str = "fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=";
const CACHE_KEY: &str = "cache-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// The agent.yaml example from DESIGN.md; only the key placeholders are replaced.
fn design_example() -> String {
    r#"
hostname: web1
listen: 0.0.0.0:7420
trusted_keys: ["fleet-1:<base64 ed25519 public key>"]   # refuses to start without one
state_dir: /var/lib/hostctl-agent
profile: /nix/var/nix/profiles/system
confirm_timeout: 30s
bus: system                   # system | session | unix:path=...
health:
  - command: [systemctl, is-system-running, --wait]
    timeout: 60s
pull:                         # optional: GitOps mode
  url: https://git.example.com/infra.git
  branch: main
  interval: 60s
  webhook_secret_file: /run/keys/hostctl-webhook
  lock: pinned                # pinned | follow
  substituters: [https://cache.example.com]
  trusted_public_keys: ["cache-1:<base64>"]
binfmt:                       # optional
  emulated_systems: [aarch64-linux, riscv64-linux]
"#
    .replace("fleet-1:<base64 ed25519 public key>", KEY)
    .replace("cache-1:<base64>", CACHE_KEY)
}

fn parse(text: &str) -> Result<AgentConfig, AgentConfigError> {
    parse_agent_config(text, Path::new("/etc/hostctl/agent.yaml"))
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn fails_with(text: &str, expected: &str) -> AgentConfigError {
    let err = parse(text).unwrap_err();
    assert_eq!(err.to_string(), expected, "for input:\n{text}");
    err
}

const MINIMAL: &str = "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\n";

#[test]
fn design_example_parses() {
    let config = parse(&design_example()).unwrap();
    assert_eq!(config.hostname.as_str(), "web1");
    assert_eq!(config.listen, "0.0.0.0:7420".parse::<SocketAddr>().unwrap());
    assert_eq!(config.trusted_keys.len(), 1);
    assert_eq!(config.trusted_keys[0].to_string(), KEY);
    assert_eq!(config.trusted_keys[0].name, "fleet-1");
    assert_eq!(config.state_dir, Path::new("/var/lib/hostctl-agent"));
    assert_eq!(config.profile, Path::new("/nix/var/nix/profiles/system"));
    assert_eq!(config.store, None);
    assert_eq!(config.confirm_timeout, Duration::from_secs(30));
    assert_eq!(config.bus, Bus::System);
    assert_eq!(config.health.len(), 1);
    assert_eq!(
        config.health[0].kind,
        HealthKind::Command(vec!["systemctl".into(), "is-system-running".into(), "--wait".into()])
    );
    assert_eq!(config.health[0].timeout, Duration::from_secs(60));
    let pull = config.pull.as_ref().unwrap();
    assert_eq!(pull.url, "https://git.example.com/infra.git");
    assert_eq!(pull.branch, "main");
    assert_eq!(pull.interval, Duration::from_secs(60));
    assert_eq!(pull.webhook_secret_file.as_deref(), Some(Path::new("/run/keys/hostctl-webhook")));
    assert_eq!(pull.lock, LockPolicy::Pinned);
    let substituters: Vec<&str> = pull.substituters.iter().map(|u| u.as_str()).collect();
    assert_eq!(substituters, ["https://cache.example.com"]);
    assert_eq!(pull.trusted_public_keys[0].to_string(), CACHE_KEY);
    let systems: Vec<&str> = config.binfmt.as_ref().unwrap().emulated_systems.iter().map(|s| s.as_str()).collect();
    assert_eq!(systems, ["aarch64-linux", "riscv64-linux"]);
}

#[test]
fn design_example_placeholder_key_is_rejected() {
    let text = design_example().replace(KEY, "fleet-1:<base64 ed25519 public key>");
    let err = parse(&text).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "/etc/hostctl/agent.yaml:4:16: trusted_keys[0]: invalid public key `fleet-1:<base64 ed25519 public key>`: the part after ':' is not valid base64"
        ),
        "{err}"
    );
}

#[test]
fn defaults_are_filled_in() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 7420)));
    assert_eq!(config.state_dir, Path::new("/var/lib/hostctl-agent"));
    assert_eq!(config.profile, Path::new("/nix/var/nix/profiles/system"));
    assert_eq!(config.store, None);
    assert_eq!(config.confirm_timeout, Duration::from_secs(30));
    assert_eq!(config.bus, Bus::System);
    assert!(config.health.is_empty());
    assert_eq!(config.pull, None);
    assert_eq!(config.binfmt, None);

    let config = parse(&format!(
        "{MINIMAL}pull:\n  url: /srv/infra.git\nbinfmt: {{}}\nbus: unix:path=/tmp/bus\nstore: local?root=/tmp/root\n"
    ))
    .unwrap();
    let pull = config.pull.unwrap();
    assert_eq!((pull.branch.as_str(), pull.interval, pull.lock), ("main", Duration::from_secs(60), LockPolicy::Pinned));
    assert!(pull.substituters.is_empty() && pull.trusted_public_keys.is_empty());
    assert_eq!(pull.webhook_secret_file, None);
    assert!(config.binfmt.unwrap().emulated_systems.is_empty());
    assert_eq!(config.bus, Bus::Address("unix:path=/tmp/bus".into()));
    assert_eq!(config.store.as_deref(), Some("local?root=/tmp/root"));
}

#[test]
fn round_trips_through_yaml() {
    let config = parse(&design_example()).unwrap();
    let text = serde_yaml::to_string(&config).unwrap();
    assert_eq!(parse(&text).unwrap(), config);
}

#[test]
fn no_trusted_keys() {
    let err = fails_with(
        "hostname: web1\ntrusted_keys: []\n",
        "/etc/hostctl/agent.yaml:2:15: trusted_keys: at least one trusted key is required: the agent refuses to start without a trusted key",
    );
    assert_eq!(err.location(), Some((2, 15)));
    fails_with(
        "hostname: web1\ntrusted_keys:\n",
        "/etc/hostctl/agent.yaml:2:14: trusted_keys: at least one trusted key is required: the agent refuses to start without a trusted key",
    );
    fails_with("hostname: web1\n", "/etc/hostctl/agent.yaml:1:1: missing field `trusted_keys`");
}

#[test]
fn bad_trusted_keys() {
    for (key, problem) in [
        ("fleet-1:not*base64", "the part after ':' is not valid base64"),
        ("fleet-1:AAAA", "an ed25519 public key is 32 bytes, this decodes to 3"),
        ("11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=", "expected `name:base64`"),
        (
            ":11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=",
            "expected `name:base64`; the name before ':' must be non-empty",
        ),
    ] {
        let err = parse(&format!("hostname: web1\ntrusted_keys:\n  - \"{key}\"\n")).unwrap_err();
        let prefix = format!("/etc/hostctl/agent.yaml:3:5: trusted_keys[0]: invalid public key `{key}`: {problem}");
        assert!(err.to_string().starts_with(&prefix), "{err}\nwanted: {prefix}");
    }
    let err = parse(&format!("{MINIMAL}pull:\n  url: x\n  trusted_public_keys: [nope]\n")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/etc/hostctl/agent.yaml:5:25: pull.trusted_public_keys[0]: invalid public key `nope`"),
        "{err}"
    );
}

#[test]
fn unknown_keys() {
    fails_with(
        &format!("{MINIMAL}listen_on: 1\n"),
        "/etc/hostctl/agent.yaml:3:1: listen_on: unknown field `listen_on`, expected one of `hostname`, `listen`, `max_connections`, `max_connections_per_peer`, `trusted_keys`, `state_dir`, `profile`, `store`, `confirm_timeout`, `activation_timeout`, `bus`, `service_manager`, `health`, `pull`, `binfmt`, `caches`, `identity_key_file`, `metrics_listen`, `webhook_listen`, `retention`, `boot`",
    );
    fails_with(
        &format!("{MINIMAL}pull:\n  url: x\n  brnach: main\n"),
        "/etc/hostctl/agent.yaml:5:3: pull.brnach: unknown field `brnach`, expected one of `url`, `branch`, `interval`, `webhook_secret_file`, `lock`, `substituters`, `trusted_public_keys`, `allow_force_push`, `ssh_key_file`, `ssh_known_hosts_file`, `commits`",
    );
    fails_with(
        &format!("{MINIMAL}binfmt:\n  systems: []\n"),
        "/etc/hostctl/agent.yaml:4:3: binfmt.systems: unknown field `systems`, expected one of `emulated_systems`, `interpreters`, `mount_point`, `nix_conf`",
    );
}

#[test]
fn bad_values() {
    let cases = [
        ("hostname: Web1\n", "1:11: hostname: invalid host name `Web1`"),
        (
            "listen: 7420\n",
            "3:9: listen: \"7420\" is not a socket address; expected IP:PORT such as 0.0.0.0:7420 or [::]:7420",
        ),
        (
            "listen: 0.0.0.0\n",
            "3:9: listen: \"0.0.0.0\" is not a socket address; expected IP:PORT such as 0.0.0.0:7420 or [::]:7420",
        ),
        (
            "listen: \"::1:7420\"\n",
            "3:9: listen: \"::1:7420\" is not a socket address; expected IP:PORT such as 0.0.0.0:7420 or [::]:7420",
        ),
        ("bus: /run/bus\n", "3:6: bus: invalid bus `/run/bus`: `/run/bus` has no `transport:` prefix"),
        ("confirm_timeout: 1m30\n", "3:18: confirm_timeout: invalid duration `1m30`"),
        (
            "pull:\n  url: x\n  lock: strict\n",
            "5:9: pull.lock: unknown variant `strict`, expected `pinned` or `follow`",
        ),
        ("pull:\n  url: x\n  branch: -main\n", "5:11: pull.branch: invalid branch `-main`"),
        ("pull:\n  url: --upload-pack=x\n", "4:8: pull.url: invalid git URL `--upload-pack=x`"),
        ("pull:\n  branch: main\n", "4:3: pull: missing field `url`"),
        (
            "pull:\n  url: x\n  substituters: [\"https://c.example.com https://evil\"]\n",
            "5:18: pull.substituters[0]: invalid cache URL `https://c.example.com https://evil`: it must not contain whitespace",
        ),
        (
            "pull:\n  url: x\n  substituters:\n    - https://c.example.com\n    - ssh://b\n",
            "7:7: pull.substituters[1]: invalid cache URL `ssh://b`: expected a binary cache URL",
        ),
        ("binfmt:\n  emulated_systems: [aarch64]\n", "4:22: binfmt.emulated_systems[0]: invalid system `aarch64`"),
        (
            "health:\n  - command: [true]\n    http: http://x\n",
            "4:5: health[0]: a health check has either `http` or `command`, not both",
        ),
    ];
    for (extra, want) in cases {
        let text = if extra.starts_with("hostname") {
            format!("{extra}trusted_keys: [\"{KEY}\"]\n")
        } else {
            format!("{MINIMAL}{extra}")
        };
        let err = parse(&text).unwrap_err();
        let want = format!("/etc/hostctl/agent.yaml:{want}");
        assert!(err.to_string().starts_with(&want), "{err}\nwanted: {want}");
    }
}

#[test]
fn ssh_urls_need_a_key_file() {
    let file = Path::new("/etc/hostctl/agent.yaml");
    for url in ["ssh://git@git.example.com:2222/infra.git", "git@git.example.com:infra.git"] {
        let config = parse(&format!("{MINIMAL}pull:\n  url: {url}\n")).unwrap();
        let pull = config.pull.unwrap();
        let err = pull.check(file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("/etc/hostctl/agent.yaml: pull.ssh_key_file: required with the ssh URL `{url}`")),
            "{err}"
        );
        assert_eq!(pull.known_hosts_file(), Path::new("/etc/ssh/ssh_known_hosts"));
    }
    let text = format!(
        "{MINIMAL}pull:\n  url: git@h:x.git\n  ssh_key_file: /run/keys/pull\n  ssh_known_hosts_file: /etc/hostctl/known_hosts\n"
    );
    let pull = parse(&text).unwrap().pull.unwrap();
    assert!(pull.check(file).is_ok());
    assert_eq!(pull.ssh_key_file.as_deref(), Some(Path::new("/run/keys/pull")));
    assert_eq!(pull.known_hosts_file(), Path::new("/etc/hostctl/known_hosts"));
    // Not ssh: no key needed.
    for url in ["https://git.example.com/infra.git", "/srv/infra.git"] {
        assert!(parse(&format!("{MINIMAL}pull:\n  url: {url}\n")).unwrap().pull.unwrap().check(file).is_ok());
    }
    // A malformed ssh URL is refused at its position.
    let err = parse(&format!("{MINIMAL}pull:\n  url: ssh://git.example.com/infra.git\n")).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "/etc/hostctl/agent.yaml:4:8: pull.url: invalid git URL `ssh://git.example.com/infra.git`: an ssh URL must name the user"
        ),
        "{err}"
    );
}

#[test]
fn load_from_file() {
    let dir = std::env::temp_dir().join(format!("hostctl-schemas-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent.yaml");
    std::fs::write(&file, design_example()).unwrap();
    assert_eq!(load_agent_config(&file).unwrap(), parse(&design_example()).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    let err = load_agent_config(Path::new("/nonexistent/agent.yaml")).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/agent.yaml: cannot read: "), "{err}");
}

#[test]
fn caches_allow_list() {
    let config =
        parse(&format!("{MINIMAL}caches: [\"file:///var/cache/fleet\", \"https://cache.example.com\"]\n")).unwrap();
    let caches: Vec<&str> = config.caches.iter().map(|c| c.as_str()).collect();
    assert_eq!(caches, ["file:///var/cache/fleet", "https://cache.example.com"]);
    assert!(parse(MINIMAL).unwrap().caches.is_empty(), "no cache unless listed");
    fails_with(
        &format!("{MINIMAL}caches:\n  - https://ok.example.com\n  - ftp://cache\n"),
        "/etc/hostctl/agent.yaml:5:5: caches[1]: invalid cache URL `ftp://cache`: expected a binary cache URL starting with file://, http://, https://, s3://",
    );
    fails_with(
        &format!("{MINIMAL}caches: [\"https://c.example.com?trusted=1\"]\n"),
        "/etc/hostctl/agent.yaml:3:10: caches[0]: invalid cache URL `https://c.example.com?trusted=1`: the store parameter `trusted` is not allowed here (hostctl signs with the fleet key; agents accept only paths signed by keys they trust)",
    );
}

#[test]
fn listen_names_the_value_and_the_expected_form() {
    fails_with(
        &format!("{MINIMAL}listen: 0.0.0.0\n"),
        "/etc/hostctl/agent.yaml:3:9: listen: \"0.0.0.0\" is not a socket address; expected IP:PORT such as 0.0.0.0:7420 or [::]:7420",
    );
    fails_with(
        &format!("{MINIMAL}listen: [1]\n"),
        "/etc/hostctl/agent.yaml:3:9: listen: invalid type: sequence, expected IP:PORT such as 0.0.0.0:7420 or [::]:7420",
    );
}

#[test]
fn a_secret_key_where_a_public_key_belongs_says_how_to_get_the_public_one() {
    let secret = "fleet-1:gNgRQcyOORWnF62sCLtUIoxHv5xXeguYEpSH0Ai3dwxfjgECXDsHw1sCnxKdNqQunX+UH417SB8kiSkwld1g6A==";
    let problem = "an ed25519 public key is 32 bytes, this decodes to 64: this looks like a Nix secret key \
                   (64 bytes, 88 base64 characters), which must stay on the controller; its public key is printed \
                   by `nix --extra-experimental-features nix-command key convert-secret-to-public < SECRET_KEY_FILE`";
    fails_with(
        &format!("hostname: web1\ntrusted_keys:\n  - \"{secret}\"\n"),
        &format!("/etc/hostctl/agent.yaml:3:5: trusted_keys[0]: invalid public key `{secret}`: {problem}"),
    );
    fails_with(
        &format!("{MINIMAL}pull:\n  url: x\n  trusted_public_keys: [\"{secret}\"]\n"),
        &format!("/etc/hostctl/agent.yaml:5:25: pull.trusted_public_keys[0]: invalid public key `{secret}`: {problem}"),
    );
}
