//! The NixOS module `services.hostctl-agent` (agent/nixos/module.nix), evaluated in a
//! real NixOS configuration. No nixpkgs is installable here, so those tests need
//! `NIXPKGS=/path/to/nixpkgs` (tested with 20.09); without it each says on stderr that
//! it skips (written past libtest's capture, so the skip shows in every run). What needs
//! no nixpkgs always runs: the module parses, and evaluated with a stand-in `lib` it
//! declares exactly agent.yaml's keys and writes an agent.yaml the agent accepts.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::ffi::OsStr;
use std::process::{Command, Output};

use hostctl_tests::{binary, workspace_root, NIX_CONFIG};
use serde_json::Value;

/// `nix-instantiate --eval --strict --json FILE --argstr module agent/nixos/module.nix EXTRA...`.
fn eval_module(file: &str, extra: &[&OsStr]) -> Output {
    let root = workspace_root();
    Command::new("nix-instantiate")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["--eval", "--strict", "--json"])
        .arg(root.join(file))
        .arg("--argstr")
        .arg("module")
        .arg(root.join("agent/nixos/module.nix"))
        .args(extra)
        .output()
        .unwrap()
}

/// `hostctl-agent check-config --json` on an agent.yaml the module wrote: it must pass
/// with what the evaluations set. Returns the configuration as the agent read it.
fn checked_agent_yaml(yaml: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, yaml).unwrap();
    let check =
        Command::new(binary("hostctl-agent")).args(["check-config", "--json", "--config"]).arg(&file).output().unwrap();
    assert!(check.status.success(), "{yaml}\n{}", String::from_utf8_lossy(&check.stderr));
    let config: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!((config["hostname"].as_str(), config["confirm_timeout"].as_str()), (Some("web1"), Some("45s")));
    assert_eq!(config["binfmt"]["emulated_systems"], serde_json::json!(["aarch64-linux"]));
    assert_eq!(config["service_manager"], "systemd");
    config
}

#[test]
fn without_nixpkgs_the_module_parses_declares_agent_yaml_keys_and_writes_a_valid_agent_yaml() {
    let root = workspace_root();
    let module = root.join("agent/nixos/module.nix");
    let parse = Command::new("nix-instantiate").arg("--parse").arg(&module).output().unwrap();
    assert!(parse.status.success(), "{}", String::from_utf8_lossy(&parse.stderr));
    let source = std::fs::read_to_string(&module).unwrap();
    assert!(!source.contains("lib.literalExample ''"), "literalExample is used only as the 20.09 fallback");

    let out = eval_module("tests/nix/stub-eval-agent-module.nix", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failedAssertions"], serde_json::json!([]));
    // Every top-level key of agent.yaml is an option of `settings`, and nothing else is,
    // so a misspelt key fails when the host configuration is evaluated.
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("schemas/json/agent.schema.json")).unwrap()).unwrap();
    let mut keys: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let declared: Vec<&str> = v["settingsKeys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(declared, keys);

    let yaml = v["agentYaml"].as_str().unwrap();
    let config = checked_agent_yaml(yaml);
    assert!(config.get("store").is_none_or(Value::is_null), "unset settings are left out: {yaml}");
}

#[test]
fn the_agent_module_evaluates_to_a_hardened_unit_and_a_valid_agent_yaml() {
    let Some(nixpkgs) = std::env::var_os("NIXPKGS").filter(|p| !p.is_empty()) else {
        hostctl_tests::skip("NIXPKGS is not set: set NIXPKGS=/path/to/nixpkgs (e.g. a nixpkgs 20.09 checkout) to evaluate the NixOS module");
        return;
    };
    let out = eval_module("tests/nix/eval-agent-module.nix", &["--argstr".as_ref(), "nixpkgs".as_ref(), &nixpkgs]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failedAssertions"], serde_json::json!([]));
    assert_eq!((v["restartIfChanged"].as_bool(), v["stopIfChanged"].as_bool()), (Some(false), Some(false)));
    assert!(v["execStart"].as_str().unwrap().ends_with("/bin/hostctl-agent serve --config /etc/hostctl/agent.yaml"));
    assert_eq!(v["stateDirectory"], "hostctl-agent");
    // The agent's public identity, published world-readable before each start.
    assert_eq!(v["identityFile"], "/run/hostctl-agent/identity.pub");
    assert_eq!(v["runtimeDirectory"], "hostctl-agent");
    assert!(v["execStartPre"].as_str().unwrap().contains("hostctl-agent-publish-identity"), "{}", v["execStartPre"]);
    assert_eq!(v["ports"], serde_json::json!([7420]));
    assert!(v["dbusPackages"].as_array().unwrap().iter().any(|p| p == "hostctl-agent-dbus-policy"));
    assert_eq!(v["nixExtraOptions"], "!include /etc/nix/hostctl-binfmt.conf\n");
    // What the module writes is an agent.yaml the real agent accepts.
    checked_agent_yaml(v["agentYaml"].as_str().unwrap());
}

#[test]
fn a_key_agent_yaml_does_not_have_fails_the_host_evaluation() {
    let Some(nixpkgs) = std::env::var_os("NIXPKGS").filter(|p| !p.is_empty()) else {
        hostctl_tests::skip("NIXPKGS is not set: set NIXPKGS=/path/to/nixpkgs to evaluate the NixOS module");
        return;
    };
    let args: [&OsStr; 6] =
        ["--argstr".as_ref(), "nixpkgs".as_ref(), &nixpkgs, "--arg".as_ref(), "wrongKey".as_ref(), "true".as_ref()];
    let out = eval_module("tests/nix/eval-agent-module.nix", &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misspelt settings key evaluated");
    assert!(stderr.contains("services.hostctl-agent.settings.colour") && stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn the_flake_exposes_both_packages_per_system_the_module_and_an_overlay() {
    let Some(nixpkgs) = std::env::var_os("NIXPKGS").filter(|p| !p.is_empty()) else {
        hostctl_tests::skip(
            "NIXPKGS is not set: set NIXPKGS=/path/to/nixpkgs to evaluate this repository's flake offline",
        );
        return;
    };
    // The nix-systems pattern: a `systems` input that is a list of systems, overridden here.
    let systems = tempfile::tempdir().unwrap();
    std::fs::write(systems.path().join("default.nix"), "[ \"x86_64-linux\" \"aarch64-linux\" ]\n").unwrap();
    std::fs::write(systems.path().join("flake.nix"), "{ outputs = _: { }; }\n").unwrap();
    let eval = |attr: &str, apply: &str| -> Value {
        let out = Command::new("nix")
            .current_dir(workspace_root())
            .env("NIX_CONFIG", NIX_CONFIG)
            .args(["eval", "--json", "--no-write-lock-file", "--override-input", "nixpkgs"])
            .arg(format!("path:{}", std::path::Path::new(&nixpkgs).display()))
            .args(["--override-input", "systems"])
            .arg(format!("path:{}", systems.path().display()))
            .arg(format!(".#{attr}"))
            .args(["--apply", apply])
            .output()
            .unwrap();
        assert!(out.status.success(), "{attr}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let packages = eval("packages", "p: builtins.mapAttrs (system: builtins.attrNames) p");
    let each = serde_json::json!(["default", "hostctl", "hostctl-agent"]);
    assert_eq!(packages, serde_json::json!({"aarch64-linux": each, "x86_64-linux": each}));
    assert_eq!(eval("nixosModules", "builtins.attrNames"), serde_json::json!(["agent", "default"]));
    assert_eq!(eval("overlays.default", "builtins.isFunction"), serde_json::json!(true));
}
