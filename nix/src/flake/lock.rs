//! `flake.lock` (version 7): its nodes, its lock id (SHA-256 of the exact bytes), and the
//! lock-hygiene questions hostctl asks of it (duplicate nixpkgs).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use hostctl_schemas::ids::LockId;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The lock file versions this code understands (Nix 2.8 through current write 7).
pub const SUPPORTED_VERSION: u64 = 7;

/// Most input lookups one [`FlakeLock::resolve`] makes, `follows` included (real locks
/// need a handful).
pub const MAX_RESOLVE_STEPS: usize = 1024;

/// Why a `flake.lock` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: not a valid flake.lock: {message}", file.display())]
    Syntax { file: PathBuf, line: usize, column: usize, message: String },
    #[error(
        "{}{}: unsupported flake.lock version {version} (hostctl reads version {SUPPORTED_VERSION})",
        file.display(),
        at_text(*at)
    )]
    Version { file: PathBuf, at: Option<(usize, usize)>, version: u64 },
    /// A well-formed JSON document that is not a lock graph; `at` is the line and column
    /// of the offending value when it can be found in the text.
    #[error("{}{}: {message}", file.display(), at_text(*at))]
    Graph { file: PathBuf, at: Option<(usize, usize)>, message: String },
}

/// `:line:column`, or nothing when the position is unknown.
fn at_text(at: Option<(usize, usize)>) -> String {
    at.map(|(line, column)| format!(":{line}:{column}")).unwrap_or_default()
}

/// Where an input points: a node name, or a `follows` path from the root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum InputTarget {
    Node(String),
    Follows(Vec<String>),
}

/// One node of the lock graph.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockNode {
    #[serde(default)]
    pub inputs: BTreeMap<String, InputTarget>,
    pub locked: Option<Value>,
    pub original: Option<Value>,
    #[serde(default = "yes")]
    pub flake: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct RawLock {
    version: u64,
    root: String,
    nodes: BTreeMap<String, LockNode>,
}

/// A parsed `flake.lock` with its id.
#[derive(Debug, Clone)]
pub struct FlakeLock {
    pub id: LockId,
    pub root: String,
    pub nodes: BTreeMap<String, LockNode>,
}

/// An input that brings its own nixpkgs instead of following the root's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixpkgsDuplicate {
    /// The extra lock node (e.g. `nixpkgs_2`).
    pub node: String,
    /// Input names from the root to the input that declares this nixpkgs, e.g. `["fleetlib"]`.
    pub via: Vec<String>,
    /// The input name under which it is declared (usually `nixpkgs`).
    pub input: String,
}

impl NixpkgsDuplicate {
    /// The flake.nix line that makes this input follow the root's nixpkgs.
    pub fn follows_line(&self, root_nixpkgs: &str) -> String {
        let mut attr = String::from("inputs");
        for name in self.via.iter().chain(std::iter::once(&self.input)) {
            attr.push('.');
            attr.push_str(name);
            attr.push_str(".inputs");
        }
        let attr = attr.trim_end_matches(".inputs");
        format!("{attr}.follows = \"{root_nixpkgs}\";")
    }
}

/// SHA-256 over the exact bytes of a lock file.
pub fn lock_id(bytes: &[u8]) -> LockId {
    LockId::from_bytes_digest(Sha256::digest(bytes).into())
}

impl FlakeLock {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, LockError> {
        let bytes = std::fs::read(path).map_err(|source| LockError::Io { file: path.to_path_buf(), source })?;
        Self::parse(&bytes, path)
    }

    /// Parses lock bytes; `origin` names the file in errors.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<Self, LockError> {
        let file = origin.to_path_buf();
        // Check the version first, so a future format gets a version error, not a shape error.
        let value: Value = serde_json::from_slice(bytes).map_err(|e| LockError::Syntax {
            file: file.clone(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        match value.get("version").and_then(Value::as_u64) {
            Some(SUPPORTED_VERSION) => {}
            Some(version) => {
                let at = position_of(bytes, "version", &version.to_string());
                return Err(LockError::Version { file, at, version });
            }
            None => return Err(LockError::Graph { file, at: None, message: "missing numeric `version`".into() }),
        }
        // From the bytes again, not from `value`, so that shape errors keep their position.
        let raw: RawLock = serde_json::from_slice(bytes).map_err(|e| LockError::Graph {
            file: file.clone(),
            at: Some((e.line(), e.column())),
            message: strip_position(&e.to_string()),
        })?;
        let lock = Self { id: lock_id(bytes), root: raw.root, nodes: raw.nodes };
        lock.check_graph().map_err(|(message, key, value)| LockError::Graph {
            file,
            at: serde_json::to_string(&value).ok().and_then(|v| position_of(bytes, &key, &v)),
            message,
        })?;
        let _ = raw.version;
        Ok(lock)
    }

    /// The first dangling reference: the message, and the key and value naming it (to
    /// find its position in the text).
    fn check_graph(&self) -> Result<(), (String, String, String)> {
        if !self.nodes.contains_key(&self.root) {
            let message = format!("root node `{}` is not among the nodes", self.root);
            return Err((message, "root".to_owned(), self.root.clone()));
        }
        for (name, node) in &self.nodes {
            for (input, target) in &node.inputs {
                if let InputTarget::Node(to) = target {
                    if !self.nodes.contains_key(to) {
                        let message = format!("node `{name}` input `{input}` points at missing node `{to}`");
                        return Err((message, input.clone(), to.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The root node's inputs.
    pub fn root_inputs(&self) -> &BTreeMap<String, InputTarget> {
        static EMPTY: BTreeMap<String, InputTarget> = BTreeMap::new();
        self.nodes.get(&self.root).map_or(&EMPTY, |n| &n.inputs)
    }

    /// Resolves an input path from the root (following `follows`) to a node name; `None`
    /// when it leads nowhere or takes more than [`MAX_RESOLVE_STEPS`] steps.
    pub fn resolve(&self, path: &[String]) -> Option<&str> {
        let mut budget = MAX_RESOLVE_STEPS;
        self.resolve_within(path, &mut budget)
    }

    /// Every input looked up, here or in a `follows` path, costs one step of `budget`: a
    /// `follows` cycle (an input that follows itself) used to recurse until the stack
    /// overflowed, and nested `follows` lists could take exponential time (found while
    /// writing the fuzz target's properties).
    fn resolve_within(&self, path: &[String], budget: &mut usize) -> Option<&str> {
        let mut node = self.root.as_str();
        for name in path {
            *budget = budget.checked_sub(1)?;
            node = match self.nodes.get(node)?.inputs.get(name)? {
                InputTarget::Node(to) => to,
                // `follows` paths are absolute from the root.
                InputTarget::Follows(p) => self.resolve_within(p, budget)?,
            };
        }
        Some(node)
    }

    /// Every node that is a nixpkgs, by name (`nixpkgs`, `nixpkgs_2`, ...) or by origin.
    pub fn nixpkgs_nodes(&self) -> Vec<&str> {
        self.nodes.iter().filter(|(name, node)| is_nixpkgs(name, node)).map(|(n, _)| n.as_str()).collect()
    }

    /// The inputs that bring a nixpkgs other than the root's own `nixpkgs` input.
    /// Empty when the lock has at most one nixpkgs node.
    pub fn nixpkgs_duplicates(&self) -> Vec<NixpkgsDuplicate> {
        let nixpkgs = self.nixpkgs_nodes();
        if nixpkgs.len() < 2 {
            return Vec::new();
        }
        let primary = self.resolve(&["nixpkgs".to_owned()]);
        let paths = self.paths_from_root();
        let mut found = Vec::new();
        for (name, node) in &self.nodes {
            if name == &self.root {
                continue;
            }
            for (input, target) in &node.inputs {
                let InputTarget::Node(to) = target else { continue };
                if nixpkgs.contains(&to.as_str()) && Some(to.as_str()) != primary {
                    let via = paths.get(name.as_str()).cloned().unwrap_or_else(|| vec![name.clone()]);
                    found.push(NixpkgsDuplicate { node: to.clone(), via, input: input.clone() });
                }
            }
        }
        found
    }

    /// Shortest input-name path from the root to every reachable node (direct edges only).
    fn paths_from_root(&self) -> BTreeMap<&str, Vec<String>> {
        let mut paths: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        paths.insert(self.root.as_str(), Vec::new());
        let mut queue = VecDeque::from([self.root.as_str()]);
        while let Some(name) = queue.pop_front() {
            let Some(node) = self.nodes.get(name) else { continue };
            let here = paths.get(name).cloned().unwrap_or_default();
            for (input, target) in &node.inputs {
                if let InputTarget::Node(to) = target {
                    if !paths.contains_key(to.as_str()) {
                        let mut p = here.clone();
                        p.push(input.clone());
                        paths.insert(to.as_str(), p);
                        queue.push_back(to.as_str());
                    }
                }
            }
        }
        paths
    }
}

fn is_nixpkgs(name: &str, node: &LockNode) -> bool {
    let by_name = name == "nixpkgs"
        || name.strip_prefix("nixpkgs_").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let original = node.original.as_ref();
    let field = |k: &str| original.and_then(|o| o.get(k)).and_then(Value::as_str);
    let by_origin = (field("type") == Some("indirect") && field("id") == Some("nixpkgs"))
        || (field("repo") == Some("nixpkgs") && field("owner").is_some_and(|o| o.eq_ignore_ascii_case("nixos")));
    by_name || by_origin
}

/// Line and column (1-based, as serde_json counts them) of the first `"key": value` in
/// `bytes`, `value` being the value's JSON text. Text search, not a parse: only used to
/// point at a value the parse already found wrong, so a miss just leaves the position out.
fn position_of(bytes: &[u8], key: &str, value: &str) -> Option<(usize, usize)> {
    let key = serde_json::to_string(key).ok()?;
    let skip_space = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut from = 0;
    while let Some(found) = bytes.get(from..)?.windows(key.len()).position(|w| w == key.as_bytes()) {
        let start = from + found;
        let colon = skip_space(start + key.len());
        if bytes.get(colon) == Some(&b':') {
            let at = skip_space(colon + 1);
            if bytes.get(at..).is_some_and(|rest| rest.starts_with(value.as_bytes())) {
                let line_start = bytes[..at].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
                return Some((line, at - line_start + 1));
            }
        }
        from = start + 1;
    }
    None
}

/// serde_json appends " at line L column C"; the error type prints the position itself.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = r#"{
  "nodes": {
    "fleetlib": {
      "inputs": { "nixpkgs": ["nixpkgs"] },
      "locked": { "lastModified": 1, "narHash": "sha256-F91m", "path": "./lib", "type": "path" },
      "original": { "path": "./lib", "type": "path" }
    },
    "nixpkgs": {
      "locked": { "lastModified": 1, "narHash": "sha256-AAAA", "path": "./nixpkgs", "type": "path" },
      "original": { "path": "./nixpkgs", "type": "path" }
    },
    "root": { "inputs": { "fleetlib": "fleetlib", "nixpkgs": "nixpkgs" } }
  },
  "root": "root",
  "version": 7
}
"#;

    const DUPLICATE: &str = r#"{
  "nodes": {
    "fleetlib": {
      "inputs": { "nixpkgs": "nixpkgs_2", "utils": "utils" },
      "locked": { "type": "path", "path": "./lib", "narHash": "sha256-F91m" },
      "original": { "type": "path", "path": "./lib" }
    },
    "nixpkgs": { "locked": { "type": "path", "path": "./nixpkgs" }, "original": { "type": "path", "path": "./nixpkgs" } },
    "nixpkgs_2": { "locked": { "type": "path", "path": "./nixpkgs" }, "original": { "type": "path", "path": "./nixpkgs" } },
    "nixpkgs_3": { "locked": { "type": "github", "owner": "NixOS", "repo": "nixpkgs" }, "original": { "type": "github", "owner": "NixOS", "repo": "nixpkgs" } },
    "utils": { "inputs": { "nixpkgs": "nixpkgs_3" } },
    "root": { "inputs": { "fleetlib": "fleetlib", "nixpkgs": "nixpkgs" } }
  },
  "root": "root",
  "version": 7
}"#;

    fn parse(s: &str) -> Result<FlakeLock, LockError> {
        FlakeLock::parse(s.as_bytes(), Path::new("infra/flake.lock"))
    }

    #[test]
    fn lock_id_is_sha256_of_the_exact_bytes() {
        let lock = parse(CLEAN).unwrap();
        assert_eq!(lock.id, lock_id(CLEAN.as_bytes()));
        assert_eq!(lock_id(b"").to_string(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let other = parse(&CLEAN.replace("\n", "\r\n")).unwrap();
        assert_ne!(other.id, lock.id, "any byte change is a different lock");
    }

    #[test]
    fn follows_are_resolved_and_clean_lock_has_no_duplicates() {
        let lock = parse(CLEAN).unwrap();
        assert_eq!(lock.resolve(&["fleetlib".into(), "nixpkgs".into()]), Some("nixpkgs"));
        assert_eq!(lock.nixpkgs_nodes(), ["nixpkgs"]);
        assert!(lock.nixpkgs_duplicates().is_empty());
    }

    #[test]
    fn follows_cycles_and_blow_ups_resolve_to_nothing() {
        // Overflowed the stack before (fuzz/regressions/flake_lock/follows-itself).
        let lock = parse(r#"{"nodes":{"root":{"inputs":{"a":["a"],"b":["c"],"c":["b"]}}},"root":"root","version":7}"#)
            .unwrap();
        assert_eq!(lock.resolve(&["a".into()]), None);
        assert_eq!(lock.resolve(&["b".into()]), None);
        assert!(lock.nixpkgs_duplicates().is_empty());
        // a0 follows a1 31 times, ..., a5 follows a6 31 times, a6 follows the root: 31^6
        // lookups before; now given up after MAX_RESOLVE_STEPS.
        let follows = |k: usize| format!(r#""a{k}":[{}]"#, vec![format!(r#""a{}""#, k + 1); 31].join(","));
        let mut inputs: Vec<String> = (0..6).map(follows).collect();
        inputs.push(r#""a6":[]"#.into());
        let text = format!(r#"{{"nodes":{{"root":{{"inputs":{{{}}}}}}},"root":"root","version":7}}"#, inputs.join(","));
        let lock = parse(&text).unwrap();
        assert_eq!(lock.resolve(&["a5".into()]), Some("root"));
        assert_eq!(lock.resolve(&["a0".into()]), None);
    }

    #[test]
    fn duplicates_name_the_input_path() {
        let lock = parse(DUPLICATE).unwrap();
        let dups = lock.nixpkgs_duplicates();
        assert_eq!(dups.len(), 2, "{dups:?}");
        assert_eq!(
            dups[0],
            NixpkgsDuplicate { node: "nixpkgs_2".into(), via: vec!["fleetlib".into()], input: "nixpkgs".into() }
        );
        assert_eq!(dups[0].follows_line("nixpkgs"), r#"inputs.fleetlib.inputs.nixpkgs.follows = "nixpkgs";"#);
        assert_eq!(dups[1].via, ["fleetlib", "utils"]);
        assert_eq!(
            dups[1].follows_line("nixpkgs"),
            r#"inputs.fleetlib.inputs.utils.inputs.nixpkgs.follows = "nixpkgs";"#
        );
    }

    #[test]
    fn bad_locks_are_reported_with_position_or_reason() {
        let err = parse("{\n  \"nodes\": {,\n}").unwrap_err();
        assert!(matches!(err, LockError::Syntax { line: 2, .. }), "{err}");
        assert!(err.to_string().starts_with("infra/flake.lock:2:"), "{err}");
        let err = parse(r#"{"nodes":{"root":{}},"root":"root","version":6}"#).unwrap_err();
        assert!(err.to_string().starts_with("infra/flake.lock:1:46: unsupported flake.lock version 6"), "{err}");
        let err = parse("{\"nodes\":{\"root\":{\"inputs\":{\n  \"a\": \"b\"}}},\"root\":\"root\",\"version\":7}")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("infra/flake.lock:2:8: node `root` input `a` points at missing node `b`"),
            "{err}"
        );
        let err = parse(r#"{"nodes":{},"root":"root","version":7}"#).unwrap_err();
        assert!(err.to_string().starts_with("infra/flake.lock:1:20: root node `root` is not"), "{err}");
        let err = parse("{\"nodes\":{},\n\"version\":7}").unwrap_err();
        assert!(err.to_string().starts_with("infra/flake.lock:2:12: missing field `root`"), "{err}");
        let err = FlakeLock::read(Path::new("/nonexistent/flake.lock")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/flake.lock: cannot read"), "{err}");
    }
}
