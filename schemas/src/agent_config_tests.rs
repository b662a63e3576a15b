//! Tests of `agent.yaml` loading (`agent_config.rs`).

use super::*;

#[test]
fn buses() {
    assert_eq!("system".parse::<Bus>().unwrap(), Bus::System);
    assert_eq!("session".parse::<Bus>().unwrap(), Bus::Session);
    for ok in [
        "unix:path=/run/dbus/system_bus_socket",
        "unix:abstract=/tmp/dbus-x,guid=0123abcd",
        "tcp:host=localhost,port=1234",
        "unix:path=/tmp/a%20b;tcp:host=127.0.0.1,port=1",
        "autolaunch:",
    ] {
        let bus: Bus = ok.parse().unwrap();
        assert_eq!(bus, Bus::Address(ok.into()));
        assert_eq!(bus.to_string(), ok);
    }
    for (bad, want) in [
        ("", "it is empty"),
        ("System", "has no `transport:` prefix"),
        ("/run/dbus/socket", "has no `transport:` prefix"),
        ("Unix:path=/x", "is not a transport name"),
        ("unix:path", "is not `key=value`"),
        ("unix:=x", "is not a key name"),
        ("unix:path=/a b", "must be %-escaped"),
    ] {
        let err = bad.parse::<Bus>().unwrap_err();
        assert!(err.to_string().contains(want), "{bad}: {err}");
        assert!(err.to_string().contains("expected `system`, `session`"), "{err}");
    }
}

#[test]
fn branches_and_urls() {
    for ok in ["main", "release/24.11", "feature-x"] {
        assert!(check_branch(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-main", "a..b", "a b", "main.lock", "/main", "main/", "a:b", "a~1"] {
        assert!(check_branch(bad).is_err(), "{bad}");
    }
    assert!(check_git_url("https://git.example.com/infra.git").is_ok());
    assert!(check_git_url("--upload-pack=x").is_err());
    assert!(check_git_url("").is_err());
}

#[test]
fn connection_caps_default_and_refuse_zero() {
    let base = "hostname: web1\ntrusted_keys: [\"k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n";
    let config = parse_agent_config(base, Path::new("agent.yaml")).unwrap();
    assert_eq!(
        (config.max_connections, config.max_connections_per_peer),
        (DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_PEER)
    );
    let set = format!("{base}max_connections: 10\nmax_connections_per_peer: 2\n");
    let config = parse_agent_config(&set, Path::new("agent.yaml")).unwrap();
    assert_eq!((config.max_connections.get(), config.max_connections_per_peer.get()), (10, 2));
    let err = parse_agent_config(&format!("{base}max_connections: 0\n"), Path::new("agent.yaml")).unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}

#[test]
fn lock_policy_names() {
    for p in [LockPolicy::Pinned, LockPolicy::Follow] {
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
    }
}
