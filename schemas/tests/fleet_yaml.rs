//! fleet.yaml: the DESIGN.md example parses, and every bad input is reported with
//! file, line, column, key path and what was expected.

use std::path::Path;

use hostctl_schemas::inventory::{load_fleet, parse_fleet, Batch, Fleet, HealthKind, InventoryError, Mode};
use hostctl_schemas::{Duration, HostName};

/// The fleet.yaml example from DESIGN.md, verbatim.
const DESIGN_EXAMPLE: &str = r#"
flake: .                      # path or flake reference; default: this file's directory
signing_key: keys/fleet.sec   # Nix-format ed25519 secret key that signs agent requests
defaults:
  port: 7420                  # agent port
  mode: switch                # switch | boot | test | dry-activate
  confirm_timeout: 30s        # magic rollback window
hosts:
  web1:
    address: 192.0.2.10       # where its agent listens (IP or DNS name)
    tags: [web, eu]
    configuration: web1       # nixosConfigurations attribute; default = host name
    system: x86_64-linux      # optional, checked against the evaluated config
    health:
      - http: http://192.0.2.10/healthz
        timeout: 5s
rollout:
  batch: 25%                  # hosts per batch: a count or a percentage
  max_failures: 0             # failures tolerated before the rollout stops
"#;

fn parse(text: &str) -> Result<Fleet, InventoryError> {
    parse_fleet(text, Path::new("examples/fleet/fleet.yaml"))
}

/// Asserts the error text exactly and returns the error for further checks.
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn fails_with(text: &str, expected: &str) -> InventoryError {
    let err = parse(text).unwrap_err();
    assert_eq!(err.to_string(), expected, "for input:\n{text}");
    err
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn host(name: &str) -> HostName {
    name.parse().unwrap()
}

#[test]
fn design_example_parses() {
    let fleet = parse(DESIGN_EXAMPLE).unwrap();
    assert_eq!(fleet.flake.as_deref(), Some("."));
    assert_eq!(fleet.signing_key.as_deref(), Some(Path::new("keys/fleet.sec")));
    assert_eq!(fleet.defaults.port, 7420);
    assert_eq!(fleet.defaults.mode, Mode::Switch);
    assert_eq!(fleet.defaults.confirm_timeout, Duration::from_secs(30));
    let web1 = &fleet.hosts[&host("web1")];
    assert_eq!(web1.address.as_str(), "192.0.2.10");
    let tags: Vec<&str> = web1.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["web", "eu"]);
    assert_eq!(web1.configuration_attr(&host("web1")).as_str(), "web1");
    assert_eq!(web1.system.as_ref().map(|s| s.as_str()), Some("x86_64-linux"));
    assert_eq!(web1.health.len(), 1);
    let check = &web1.health[0];
    assert_eq!(check.kind, HealthKind::Http("http://192.0.2.10/healthz".into()));
    assert_eq!(check.timeout, Duration::from_secs(5));
    assert_eq!(check.retries, 3);
    assert_eq!(check.interval, Duration::from_secs(2));
    assert_eq!(fleet.rollout.batch, Batch::Percent(25));
    assert_eq!(fleet.rollout.max_failures, 0);
}

#[test]
fn defaults_are_filled_in() {
    let fleet = parse("hosts:\n  db1:\n    address: db1.example.com\n").unwrap();
    assert_eq!(fleet.defaults.port, 7420);
    assert_eq!(fleet.defaults.mode, Mode::Switch);
    assert_eq!(fleet.defaults.confirm_timeout.to_string(), "30s");
    assert_eq!(fleet.rollout.batch, Batch::Percent(100));
    assert_eq!(fleet.rollout.max_failures, 0);
    let db1 = &fleet.hosts[&host("db1")];
    assert!(db1.tags.is_empty());
    assert!(db1.health.is_empty());
    assert_eq!(db1.configuration, None);
    assert_eq!(db1.system, None);
}

#[test]
fn other_values_parse() {
    let fleet = parse(
        "defaults:\n  mode: dry-activate\n  confirm_timeout: 1h30m\nrollout:\n  batch: 3\n\
         hosts:\n  web-2:\n    address: \"2001:db8::2\"\n    configuration: \"web'2\"\n    health:\n\
         \x20     - command: [systemctl, is-system-running, --wait]\n        retries: 0\n        interval: 500ms\n",
    )
    .unwrap();
    assert_eq!(fleet.defaults.mode, Mode::DryActivate);
    assert_eq!(fleet.defaults.confirm_timeout, Duration::from_secs(5400));
    assert_eq!(fleet.rollout.batch, Batch::Count(3));
    let web2 = &fleet.hosts[&host("web-2")];
    assert_eq!(web2.configuration_attr(&host("web-2")).as_str(), "web'2");
    let check = &web2.health[0];
    assert_eq!(check.kind, HealthKind::Command(vec!["systemctl".into(), "is-system-running".into(), "--wait".into()]));
    assert_eq!((check.retries, check.interval), (0, Duration::from_millis(500)));
    assert_eq!(
        parse("rollout:\n  batch: \"25%\"\nhosts:\n  a:\n    address: a\n").unwrap().rollout.batch,
        Batch::Percent(25)
    );
}

#[test]
fn yaml_syntax_error() {
    let err = fails_with(
        "hosts:\n  web1:\n    address: [192.0.2.10\n",
        "examples/fleet/fleet.yaml:4:1: YAML syntax error: did not find expected ',' or ']', while parsing a flow sequence at line 3 column 14",
    );
    assert_eq!(err.location(), Some((4, 1)));
    fails_with(
        "hosts:\n  web1:\n    address: a\n   tags: []\n",
        "examples/fleet/fleet.yaml:4:4: YAML syntax error: did not find expected key, while parsing a block mapping at line 2 column 3",
    );
    fails_with(
        "hosts:\n\tweb1: {}\n",
        "examples/fleet/fleet.yaml:2:1: YAML syntax error: found character that cannot start any token, while scanning for the next token",
    );
}

#[test]
fn unknown_top_level_key() {
    let err = fails_with(
        "flake: .\nfleet: x\nhosts:\n  web1:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:1: fleet: unknown field `fleet`, expected one of `flake`, `signing_key`, `defaults`, `hosts`, `rollout`, `cache`, `commits`, `tag_commits`, `tag_retention`, `tag_reboot`",
    );
    assert_eq!(err.location(), Some((2, 1)));
    assert_eq!(err.key_path(), Some("fleet"));
}

#[test]
fn unknown_key_in_host() {
    let err = fails_with(
        "flake: .\n\n\ndefaults: {}\nhosts:\n  web1:\n    adress: 192.0.2.10\n",
        "examples/fleet/fleet.yaml:7:5: hosts.web1.adress: unknown field `adress`, expected one of `address`, `tags`, `configuration`, `system`, `health`, `port`, `commits`, `agent_key`, `retention`, `reboot`",
    );
    assert_eq!(err.location(), Some((7, 5)));
}

#[test]
fn unknown_key_in_defaults_rollout_and_health() {
    fails_with(
        "defaults:\n  prot: 1\nhosts:\n  a:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:3: defaults.prot: unknown field `prot`, expected one of `port`, `mode`, `confirm_timeout`, `retention`, `reboot`",
    );
    fails_with(
        "rollout:\n  max_failure: 1\nhosts:\n  a:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:3: rollout.max_failure: unknown field `max_failure`, expected `batch` or `max_failures`",
    );
    fails_with(
        "hosts:\n  a:\n    address: a\n    health:\n      - http: http://a\n        tiemout: 5s\n",
        "examples/fleet/fleet.yaml:6:9: hosts.a.health[0].tiemout: unknown field `tiemout`, expected one of `http`, `command`, `timeout`, `retries`, `interval`",
    );
}

#[test]
fn bad_host_name() {
    let err = fails_with(
        "hosts:\n  Web_1:\n    address: 192.0.2.1\n",
        "examples/fleet/fleet.yaml:2:3: hosts.Web_1: invalid host name `Web_1`: expected 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'",
    );
    assert_eq!(err.key_path(), Some("hosts.Web_1"));
    let long = "a".repeat(64);
    let err = parse(&format!("hosts:\n  {long}:\n    address: a\n")).unwrap_err();
    assert!(err.to_string().contains(&format!("invalid host name `{long}`")), "{err}");
}

#[test]
fn duplicate_host() {
    fails_with(
        "hosts:\n  web1:\n    address: a\n  web1:\n    address: b\n",
        "examples/fleet/fleet.yaml:2:3: hosts: host `web1` is listed twice",
    );
}

#[test]
fn bad_durations() {
    let expected = "expected a duration like 30s, 5m or 1h30m (units: d, h, m, s, ms)";
    for (value, problem) in [
        ("30x", "unknown unit"),
        ("30", "a number needs a unit"),
        ("s", "each unit needs an integer amount before it"),
        ("\"\"", "it is empty"),
    ] {
        let shown = value.trim_matches('"');
        fails_with(
            &format!("defaults:\n  confirm_timeout: {value}\nhosts:\n  a:\n    address: a\n"),
            &format!("examples/fleet/fleet.yaml:2:20: defaults.confirm_timeout: invalid duration `{shown}`: {problem}; {expected}"),
        );
    }
    fails_with(
        "hosts:\n  a:\n    address: a\n    health:\n      - http: http://a\n        timeout: 5\n",
        &format!("examples/fleet/fleet.yaml:6:18: hosts.a.health[0].timeout: invalid duration `5`: a number needs a unit; {expected}"),
    );
}

#[test]
fn bad_batches() {
    let expected = "expected a host count of at least 1 (like 3) or a percentage (like 25%)";
    for (value, message) in [
        ("0", format!("invalid batch `0`: {expected}")),
        ("150%", "invalid batch `150%`: a percentage must be between 1% and 100%".to_owned()),
        ("abc", format!("invalid batch `abc`: {expected}")),
        ("-3", format!("invalid batch `-3`: {expected}")),
    ] {
        fails_with(
            &format!("rollout:\n  batch: {value}\nhosts:\n  a:\n    address: a\n"),
            &format!("examples/fleet/fleet.yaml:2:10: rollout.batch: {message}"),
        );
    }
}

#[test]
fn empty_hosts() {
    let err =
        fails_with("flake: .\nhosts: {}\n", "examples/fleet/fleet.yaml:2:8: hosts: a fleet needs at least one host");
    assert_eq!(err.key_path(), Some("hosts"));
    fails_with("hosts:\n", "examples/fleet/fleet.yaml:1:7: hosts: a fleet needs at least one host");
}

#[test]
fn missing_hosts() {
    let err = fails_with("flake: .\n", "examples/fleet/fleet.yaml:1:1: missing field `hosts`");
    assert_eq!(err.location(), Some((1, 1)));
    fails_with("", "examples/fleet/fleet.yaml:1:1: missing field `hosts`");
    fails_with(
        "just text\n",
        "examples/fleet/fleet.yaml:1:1: invalid type: string \"just text\", expected a fleet inventory mapping with `hosts`",
    );
}

#[test]
fn missing_address_and_wrong_shapes() {
    fails_with(
        "hosts:\n  web1:\n    tags: [web]\n",
        "examples/fleet/fleet.yaml:3:5: hosts.web1: missing field `address`",
    );
    fails_with(
        "hosts:\n  web1: 3\n",
        "examples/fleet/fleet.yaml:2:9: hosts.web1: invalid type: integer `3`, expected a host mapping with `address`",
    );
    fails_with(
        "defaults:\n  port: 70000\nhosts:\n  a:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:9: defaults.port: port 70000 is out of range: expected a port number from 1 to 65535",
    );
    fails_with(
        "defaults:\n  mode: reboot\nhosts:\n  a:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:9: defaults.mode: unknown variant `reboot`, expected one of `switch`, `boot`, `test`, `dry-activate`",
    );
}

#[test]
fn bad_address() {
    fails_with(
        "hosts:\n  web1:\n    address: 192.0.2.300\n",
        "examples/fleet/fleet.yaml:3:14: hosts.web1.address: invalid address `192.0.2.300`: expected an IP address or a DNS name; this is not a valid IPv4 address",
    );
    let err = parse("hosts:\n  web1:\n    address: web_1.example.com\n").unwrap_err();
    assert!(err.to_string().starts_with("examples/fleet/fleet.yaml:3:14: hosts.web1.address: invalid address `web_1.example.com`: expected an IP address or a DNS name; label `web_1`"), "{err}");
}

#[test]
fn bad_tag_configuration_and_system() {
    fails_with(
        "hosts:\n  web1:\n    address: a\n    tags: [web, Bad]\n",
        "examples/fleet/fleet.yaml:4:17: hosts.web1.tags[1]: invalid tag `Bad`: expected 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter or digit",
    );
    let err = parse("hosts:\n  web1:\n    address: a\n    configuration: web.one\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("examples/fleet/fleet.yaml:4:20: hosts.web1.configuration: invalid attribute name `web.one`"),
        "{err}"
    );
    let err = parse("hosts:\n  web1:\n    address: a\n    system: x86_64\n").unwrap_err();
    assert!(
        err.to_string().starts_with(
            "examples/fleet/fleet.yaml:4:13: hosts.web1.system: invalid system `x86_64`: expected `<arch>-<os>`"
        ),
        "{err}"
    );
}

#[test]
fn health_check_with_both_or_neither() {
    fails_with(
        "hosts:\n  web1:\n    address: a\n    health:\n      - http: http://a/\n        command: [true]\n",
        "examples/fleet/fleet.yaml:5:9: hosts.web1.health[0]: a health check has either `http` or `command`, not both",
    );
    fails_with(
        "hosts:\n  web1:\n    address: a\n    health:\n      - timeout: 5s\n",
        "examples/fleet/fleet.yaml:5:9: hosts.web1.health[0]: a health check needs `http: URL` or `command: [argv...]`",
    );
    fails_with(
        "hosts:\n  web1:\n    address: a\n    health:\n      - http: a/healthz\n",
        "examples/fleet/fleet.yaml:5:9: hosts.web1.health[0]: `http` must be a URL starting with http:// or https://",
    );
    fails_with(
        "hosts:\n  web1:\n    address: a\n    health:\n      - command: []\n",
        "examples/fleet/fleet.yaml:5:9: hosts.web1.health[0]: `command` must be a non-empty list: the program, then its arguments",
    );
}

#[test]
fn load_from_file_and_missing_file() {
    let dir = std::env::temp_dir().join(format!("hostctl-schemas-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fleet.yaml");
    std::fs::write(&file, DESIGN_EXAMPLE).unwrap();
    assert_eq!(load_fleet(&file).unwrap(), parse(DESIGN_EXAMPLE).unwrap());
    std::fs::write(&file, "hosts: {}\n").unwrap();
    let err = load_fleet(&file).unwrap_err();
    assert_eq!(err.to_string(), format!("{}:1:8: hosts: a fleet needs at least one host", file.display()));
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = Path::new("/nonexistent/fleet.yaml");
    let err = load_fleet(missing).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/fleet.yaml: cannot read: "), "{err}");
    assert_eq!(err.location(), None);
}

#[test]
fn cache_block() {
    let fleet = parse("cache:\n  url: s3://fleet-cache?region=eu-west-1\nhosts:\n  a:\n    address: a\n").unwrap();
    let cache = fleet.cache.unwrap();
    assert_eq!(cache.url.as_str(), "s3://fleet-cache?region=eu-west-1");
    assert_eq!(cache.substituter().as_str(), "s3://fleet-cache?region=eu-west-1");
    let fleet =
        parse("cache:\n  url: s3://c\n  substituter: https://c.example.com\nhosts:\n  a:\n    address: a\n").unwrap();
    assert_eq!(fleet.cache.unwrap().substituter().as_str(), "https://c.example.com");
    assert!(parse("hosts:\n  a:\n    address: a\n").unwrap().cache.is_none());
    fails_with(
        "hosts:\n  a:\n    address: a\ncache:\n  url: /var/cache/fleet\n",
        "examples/fleet/fleet.yaml:5:8: cache.url: invalid cache URL `/var/cache/fleet`: expected a binary cache URL starting with file://, http://, https://, s3://",
    );
    fails_with(
        "cache:\n  url: file:///c?secret-key=/k\nhosts:\n  a:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:8: cache.url: invalid cache URL `file:///c?secret-key=/k`: the store parameter `secret-key` is not allowed here (hostctl signs with the fleet key; agents accept only paths signed by keys they trust)",
    );
    fails_with(
        "cache:\n  uri: file:///c\nhosts:\n  a:\n    address: a\n",
        "examples/fleet/fleet.yaml:2:3: cache.uri: unknown field `uri`, expected `url` or `substituter`",
    );
}

#[test]
fn ports_are_1_to_65535_with_one_message_and_a_hosts_own_port_wins() {
    for (value, want) in [
        ("0", "port 0 is out of range: expected a port number from 1 to 65535"),
        ("-1", "port -1 is out of range: expected a port number from 1 to 65535"),
        ("\"7420\"", "invalid type: string \"7420\", expected a port number from 1 to 65535"),
    ] {
        fails_with(
            &format!("defaults:\n  port: {value}\nhosts:\n  a:\n    address: a\n"),
            &format!("examples/fleet/fleet.yaml:2:9: defaults.port: {want}"),
        );
    }
    for (value, want) in [
        ("0", "port 0 is out of range: expected a port number from 1 to 65535"),
        ("70000", "port 70000 is out of range: expected a port number from 1 to 65535"),
        ("web", "invalid type: string \"web\", expected a port number from 1 to 65535"),
    ] {
        fails_with(
            &format!("hosts:\n  a:\n    address: a\n    port: {value}\n"),
            &format!("examples/fleet/fleet.yaml:4:11: hosts.a.port: {want}"),
        );
    }
    let fleet =
        parse("defaults:\n  port: 8000\nhosts:\n  a:\n    address: a\n    port: 9000\n  b:\n    address: b\n").unwrap();
    let port = |h: &str| fleet.hosts[h].agent_port(&fleet.defaults);
    assert_eq!((port("a"), port("b")), (9000, 8000), "a host's port overrides defaults.port");
    let fleet = parse("defaults:\n  port: 65535\nhosts:\n  a:\n    address: a\n").unwrap();
    assert_eq!(fleet.defaults.port, 65535);
    assert_eq!(parse("defaults:\n  port: 1\nhosts:\n  a:\n    address: a\n").unwrap().defaults.port, 1);
}

#[test]
fn a_port_in_the_address_is_sent_to_defaults_port() {
    for (address, host) in [
        ("1.2.3.4:22", "1.2.3.4"),
        ("web1.example.com:7420", "web1.example.com"),
        ("\"[2001:db8::1]:22\"", "2001:db8::1"),
    ] {
        let shown = address.trim_matches('"');
        fails_with(
            &format!("hosts:\n  web1:\n    address: {address}\n"),
            &format!(
                "examples/fleet/fleet.yaml:3:14: hosts.web1.address: invalid address `{shown}`: the port does not belong \
                 in the address; write `address: {host}` and set the port as `port` (this host) or \
                 `defaults.port` (every host)"
            ),
        );
    }
    // An IPv6 address ending in digits is an address, not an address and a port.
    assert_eq!(parse("hosts:\n  web1:\n    address: \"2001:db8::22\"\n").unwrap().hosts.len(), 1);
}

#[test]
fn agent_key_pins_an_identity_and_a_bad_one_is_named() {
    let key = "web1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=";
    let fleet = parse(&format!("hosts:\n  web1:\n    address: a\n    agent_key: {key}\n")).unwrap();
    assert_eq!(fleet.hosts[&host("web1")].agent_key.as_ref().map(ToString::to_string).as_deref(), Some(key));
    assert_eq!(parse("hosts:\n  web1:\n    address: a\n").unwrap().hosts[&host("web1")].agent_key, None);
    let err = parse("hosts:\n  web1:\n    address: a\n    agent_key: web1:AAAA\n").unwrap_err();
    assert!(
        err.to_string().starts_with(
            "examples/fleet/fleet.yaml:4:16: hosts.web1.agent_key: invalid public key `web1:AAAA`: an ed25519 public key is 32 bytes"
        ),
        "{err}"
    );
}
