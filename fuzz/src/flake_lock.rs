//! Target `flake_lock`: `hostctl_nix::flake::FlakeLock::parse` (what `hostctl check`,
//! `status` and rollbacks read) and the questions asked of a parsed lock: input
//! resolution through `follows` and the duplicate-nixpkgs lint.
//!
//! Properties: a refusal names `flake.lock` (with line and column for syntax errors); an
//! accepted lock has the id of its exact bytes and a root among its nodes, every input
//! path resolves (or not) without unbounded recursion to a node that exists, and each
//! duplicate nixpkgs names an existing node other than the root's and a `follows` line.

use std::path::Path;

use hostctl_nix::flake::{lock_id, FlakeLock, InputTarget, LockError};

use super::{ensure, Verdict};

/// The file name the errors must name.
pub const ORIGIN: &str = "flake.lock";

/// Whether `FlakeLock::parse` accepts the input.
pub fn accepts(data: &[u8]) -> bool {
    FlakeLock::parse(data, Path::new(ORIGIN)).is_ok()
}

pub fn check(data: &[u8]) -> Verdict {
    match FlakeLock::parse(data, Path::new(ORIGIN)) {
        Err(err) => refusal(&err),
        Ok(lock) => accepted(&lock, data),
    }
}

fn refusal(err: &LockError) -> Verdict {
    let shown = err.to_string();
    ensure(shown.starts_with(ORIGIN), || format!("error does not name {ORIGIN}: {shown}"))?;
    if let LockError::Syntax { line, .. } = err {
        ensure(*line >= 1 && shown.starts_with(&format!("{ORIGIN}:{line}:")), || format!("no position: {shown}"))?;
    }
    Ok(())
}

fn accepted(lock: &FlakeLock, data: &[u8]) -> Verdict {
    ensure(lock.id == lock_id(data), || "the lock id is not the hash of the bytes".to_owned())?;
    ensure(lock.nodes.contains_key(&lock.root), || format!("root `{}` is not a node", lock.root))?;
    ensure(lock.resolve(&[]) == Some(lock.root.as_str()), || "the empty path does not resolve to the root".to_owned())?;
    let exists = |n: Option<&str>| n.is_none_or(|n| lock.nodes.contains_key(n));
    for name in lock.root_inputs().keys() {
        let to = lock.resolve(std::slice::from_ref(name));
        ensure(exists(to), || format!("input `{name}` resolves to a missing node {to:?}"))?;
    }
    for node in lock.nodes.values() {
        for target in node.inputs.values() {
            if let InputTarget::Follows(path) = target {
                let to = lock.resolve(path);
                ensure(exists(to), || format!("follows {path:?} resolves to a missing node {to:?}"))?;
            }
        }
    }
    let primary = lock.resolve(&["nixpkgs".to_owned()]);
    for dup in lock.nixpkgs_duplicates() {
        ensure(lock.nodes.contains_key(&dup.node) && Some(dup.node.as_str()) != primary, || {
            format!("duplicate {dup:?} is not another existing nixpkgs node (primary {primary:?})")
        })?;
        let line = dup.follows_line(primary.unwrap_or("nixpkgs"));
        ensure(line.starts_with("inputs.") && line.contains(".follows = \"") && line.ends_with("\";"), || {
            format!("follows line `{line}`")
        })?;
    }
    Ok(())
}
