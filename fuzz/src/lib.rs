//! The properties hostctl's fuzz targets check, one module per target. The targets in
//! `fuzz_targets/` panic when a check returns `Err`; `tests/tests/fuzz_regressions.rs`
//! includes this file and runs every seed and every kept crash through the same checks,
//! so a fixed finding stays fixed in CI. A check returns `Err` only for a broken
//! property; a panic inside hostctl's code is a finding too.

pub mod agent_config;
pub mod bundle_header;
pub mod export_stream;
pub mod flake_lock;
pub mod inventory;
pub mod request_signature;
pub mod store_path;
pub mod webhook;

use hostctl_schemas::signing::SecretKey;
use hostctl_schemas::yaml::YamlError;

/// `Err` names the property that does not hold.
pub type Verdict = Result<(), String>;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The cargo-fuzz target, and its directory under `fuzz/seeds/` and `fuzz/regressions/`.
    pub name: &'static str,
    /// The properties; the target panics when they do not hold.
    pub check: fn(&[u8]) -> Verdict,
    /// Whether hostctl accepts the input as given (every seed is a valid input).
    pub accepts: fn(&[u8]) -> bool,
}

/// Every target.
pub const TARGETS: [Target; 8] = [
    Target { name: "inventory", check: inventory::check, accepts: inventory::accepts },
    Target { name: "agent_config", check: agent_config::check, accepts: agent_config::accepts },
    Target { name: "flake_lock", check: flake_lock::check, accepts: flake_lock::accepts },
    Target { name: "request_signature", check: request_signature::check, accepts: request_signature::accepts },
    Target { name: "webhook", check: webhook::check, accepts: webhook::accepts },
    Target { name: "store_path", check: store_path::check, accepts: store_path::accepts },
    Target { name: "export_stream", check: export_stream::check, accepts: export_stream::accepts },
    Target { name: "bundle_header", check: bundle_header::check, accepts: bundle_header::accepts },
];

/// `Err(why())` unless `holds`.
pub fn ensure(holds: bool, why: impl FnOnce() -> String) -> Verdict {
    if holds {
        Ok(())
    } else {
        Err(why())
    }
}

/// The signing key of the request and bundle targets: written by Nix 2.8's
/// `nix key generate-secret --key-name fleet-1` (the same key `schemas/src/signing.rs`
/// tests with). Its public half is `fleet-1:nG0fZ1LeCTM8lGm8XqU9IckmflJa51Eh7saiKtNJxE8=`.
pub const FLEET_KEY: &str =
    "fleet-1:KDMBMKAqiUJFbD3/iS4MPEYdsma2JqZ8GxXKR5OO2YCcbR9nUt4JMzyUabxepT0hySZ+UlrnUSHuxqIq00nETw==";

/// [`FLEET_KEY`] parsed.
pub fn fleet_key() -> Result<SecretKey, String> {
    FLEET_KEY.parse::<SecretKey>().map_err(|e| format!("the built-in fleet key does not parse: {e}"))
}

/// The first `n` lines of `data` (without their `\n`) and the rest; `None` when it has
/// fewer lines. Structured targets take their fields this way, so seeds stay readable.
pub fn split_lines(data: &[u8], n: usize) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut fields = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        let end = rest.iter().position(|b| *b == b'\n')?;
        fields.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    Some((fields, rest))
}

/// A YAML loader's refusal must name the file, and a position inside the text when it
/// has one (1-based line and column), followed by a message.
pub fn yaml_error_names_place(err: &YamlError, origin: &str, text: &str) -> Verdict {
    let shown = err.to_string();
    ensure(shown.starts_with(origin) && err.file() == std::path::Path::new(origin), || {
        format!("error does not name {origin}: {shown}")
    })?;
    if let Some((line, column)) = err.location() {
        // YAML breaks lines at \n, \r\n, \r and (YAML 1.1, libyaml) NEL, LS and PS.
        let breaks = text.matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']).count();
        ensure(line >= 1 && column >= 1 && line <= breaks + 1, || {
            format!("position {line}:{column} is outside the {} line(s) of the text: {shown}", breaks + 1)
        })?;
        let prefix = format!("{origin}:{line}:{column}: ");
        ensure(shown.starts_with(&prefix) && shown.len() > prefix.len(), || {
            format!("not `{prefix}<message>`: {shown}")
        })?;
    }
    Ok(())
}
