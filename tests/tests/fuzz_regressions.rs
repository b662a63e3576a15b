//! The fuzz targets' seeds and kept crashes in CI: every file of `fuzz/seeds/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same property checks the cargo-fuzz
//! target runs (`fuzz/src`, included below), and every seed must be accepted by hostctl
//! (they are real, valid inputs). The targets themselves run in `bench/fuzz.sh`.
#![expect(clippy::unwrap_used, reason = "test code throughout (helpers too): a failed step must fail the test")]

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod checks;

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the directory does not exist.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `name`'s checks on its seeds and kept crashes.
fn run(name: &str) {
    let target = checks::TARGETS.iter().find(|t| t.name == name).unwrap();
    let seeds = files("seeds", name);
    assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ has no seeds");
    let regressions = files("regressions", name);
    let mut broken = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap();
        if let Err(why) = (target.check)(&data) {
            broken.push(format!("{}: {why}", file.display()));
        }
    }
    for seed in &seeds {
        if !(target.accepts)(&std::fs::read(seed).unwrap()) {
            broken.push(format!("{}: the seed is refused", seed.display()));
        }
    }
    assert!(broken.is_empty(), "{name}:\n{}", broken.join("\n"));
}

#[test]
fn inventory() {
    run("inventory");
}

#[test]
fn agent_config() {
    run("agent_config");
}

#[test]
fn flake_lock() {
    run("flake_lock");
}

#[test]
fn request_signature() {
    run("request_signature");
}

#[test]
fn webhook() {
    run("webhook");
}

#[test]
fn store_path() {
    run("store_path");
}

#[test]
fn export_stream() {
    run("export_stream");
}

#[test]
fn bundle_header() {
    run("bundle_header");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = checks::TARGETS.iter().map(|t| t.name).collect();
    let listed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml")).unwrap();
    for name in &names {
        assert!(listed.contains(&format!("name = \"{name}\"")), "{name} is not a cargo-fuzz target");
        assert!(include_str!("fuzz_regressions.rs").contains(&format!("fn {name}()")), "no test for {name}");
    }
    assert_eq!(listed.matches("[[bin]]").count(), names.len(), "a cargo-fuzz target without checks here");
}
