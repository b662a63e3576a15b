//! docs/TUTORIAL.md, run as far as this machine allows: step 1's shell block verbatim in
//! a fresh `$HOME` (real `nix key`, no `nix.conf` enabling `nix-command`), step 2's flake
//! parses, step 3's inventory loads, and the text keeps what a newcomer needs (the
//! `follows` line in effect, what `--to-lock REV` means, an install line naming a package
//! the flake builds, where the webhook secret comes from). Hosts, flake inputs and the
//! network it needs are not here.

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use hostctl_schemas::PublicKey;
use hostctl_tests::workspace_root;

fn tutorial() -> String {
    std::fs::read_to_string(workspace_root().join("docs/TUTORIAL.md")).unwrap()
}

/// The fenced blocks of `lang` under the heading starting with `heading`.
fn blocks(text: &str, heading: &str, lang: &str) -> Vec<String> {
    let start = text.find(&format!("\n## {heading}")).unwrap_or_else(|| panic!("no section {heading}"));
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let fence = format!("```{lang}\n");
    section.split(&fence).skip(1).map(|rest| rest[..rest.find("```").unwrap()].to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn step_1_makes_a_private_key_and_prints_its_public_half() {
    let script = blocks(&tutorial(), "1.", "sh").concat();
    assert!(script.contains("--extra-experimental-features nix-command key"), "{script}");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-ec", &script])
        .env("HOME", home.path())
        .env_remove("NIX_CONFIG")
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let public: PublicKey = stdout.trim().parse().unwrap();
    assert_eq!(public.name, "fleet-1");
    let dir = home.path().join(".config/hostctl");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("fleet-1.sec")), 0o600);
    let secret = std::fs::read_to_string(dir.join("fleet-1.sec")).unwrap();
    let err = secret.trim().parse::<PublicKey>().unwrap_err();
    assert!(err.problem.contains("this looks like a Nix secret key"), "{err}");
}

#[test]
fn step_2_flake_parses_with_the_follows_line_in_effect() {
    let flake = blocks(&tutorial(), "2.", "nix").concat();
    assert!(
        flake.lines().any(|l| l.trim() == "inputs.hostctl.inputs.nixpkgs.follows = \"nixpkgs\";"),
        "the follows line is not commented out:\n{flake}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flake.nix");
    std::fs::write(&file, &flake).unwrap();
    let out = Command::new("nix-instantiate").arg("--parse").arg(&file).output().unwrap();
    assert!(out.status.success(), "{flake}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn step_3_inventory_loads() {
    let yaml = blocks(&tutorial(), "3.", "yaml").concat();
    let fleet = hostctl_schemas::parse_fleet(&yaml, Path::new("fleet.yaml")).unwrap();
    assert_eq!(fleet.hosts.len(), 2);
}

#[test]
fn to_lock_is_explained_as_a_revisions_lock() {
    let text = tutorial();
    assert!(text.contains("A revision stands for\n*its `flake.lock`*, not for its whole system"), "{text}");
}

/// Step 0's install line names a package this repository's flake builds (`packagesFor` in
/// flake.nix, evaluated for real by nixos_module.rs when NIXPKGS is set), with the flag a
/// fresh Nix needs for `nix profile`; the checkout alternative names the controller crate.
#[test]
fn step_0_installs_a_package_the_flake_builds() {
    let text = tutorial();
    let block = blocks(&text, "0.", "sh").concat();
    let line = block.lines().find(|l| l.contains(" profile install ")).unwrap_or_else(|| panic!("{block}"));
    assert!(line.starts_with("nix --extra-experimental-features 'nix-command flakes' profile install "), "{line}");
    let attr = line.rsplit('#').next().unwrap();
    let flake = std::fs::read_to_string(workspace_root().join("flake.nix")).unwrap();
    assert!(flake.contains(&format!("{attr} = crate pkgs \"{attr}\"")), "flake.nix builds no package `{attr}`");
    let controller = std::fs::read_to_string(workspace_root().join("controller/Cargo.toml")).unwrap();
    assert!(text.contains("`cargo install --path controller`") && controller.contains("name = \"hostctl\""));
}

/// The webhook secret: what makes one, and that it reaches the host outside the store.
#[test]
fn the_webhook_secret_comes_from_outside_the_store() {
    let text = tutorial();
    assert!(text.contains("webhook_secret_file = \"/run/keys/"), "a path outside the store");
    for words in ["`openssl rand -hex 32`", "out of the Nix store", "agenix or sops-nix"] {
        assert!(text.contains(words), "TUTORIAL.md lacks {words:?}");
    }
}
