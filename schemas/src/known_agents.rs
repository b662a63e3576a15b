//! `known_agents`: the agent identity pins `hostctl enroll` records, in a file beside
//! fleet.yaml. One `HOST KEY` per line (`KEY` in Nix's `name:base64` format, as
//! `hostctl-agent identity` prints it), `#` comments and blank lines allowed; a bad line
//! is named `file:line`. A host pinned in fleet.yaml (`agent_key`) is looked up there
//! first; this file holds the rest.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ids::HostName;
use crate::key::PublicKey;

/// The file name, in the fleet file's directory.
pub const FILE_NAME: &str = "known_agents";

/// A `known_agents` line that is not `HOST KEY`, or a file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnownAgentsError {
    #[error("{file}: cannot read: {problem}")]
    Read { file: String, problem: String },
    #[error("{file}:{line}: {problem}")]
    Line { file: String, line: usize, problem: String },
}

/// The pins of one `known_agents` file, by host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownAgents {
    pub pins: BTreeMap<HostName, PublicKey>,
}

impl KnownAgents {
    /// Reads `path`; a file that does not exist holds no pins.
    pub fn load(path: &Path) -> Result<Self, KnownAgentsError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(KnownAgentsError::Read { file, problem: e.to_string() }),
        }
    }

    /// Parses the text of a file named `file` (for messages).
    pub fn parse(text: &str, file: &str) -> Result<Self, KnownAgentsError> {
        let mut pins = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let fail = |problem: String| KnownAgentsError::Line { file: file.to_owned(), line: index + 1, problem };
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(host), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(fail(format!("expected `HOST KEY` (two fields), got {line:?}")));
            };
            let host: HostName = host.parse().map_err(|e| fail(format!("host {host:?}: {e}")))?;
            let key: PublicKey = key.parse().map_err(|e: crate::key::PublicKeyError| fail(e.to_string()))?;
            if pins.insert(host.clone(), key).is_some() {
                return Err(fail(format!("host `{host}` is pinned twice")));
            }
        }
        Ok(Self { pins })
    }

    /// The file's text: a header comment and one sorted `HOST KEY` line per pin.
    pub fn render(&self) -> String {
        let mut text = String::from("# Agent identity pins, written by `hostctl enroll`: HOST KEY\n");
        for (host, key) in &self.pins {
            text.push_str(&format!("{host} {key}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "web1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=";

    #[test]
    fn parses_pins_comments_and_blank_lines_and_renders_them_back() {
        let text = format!("# pins\n\nweb1 {KEY}  # enrolled 2026-12-07\n   \n");
        let known = KnownAgents::parse(&text, "known_agents").unwrap();
        assert_eq!(known.pins.len(), 1);
        let web1: HostName = "web1".parse().unwrap();
        assert_eq!(known.pins[&web1].to_string(), KEY);
        assert_eq!(KnownAgents::parse(&known.render(), "known_agents").unwrap(), known);
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        for (text, want) in [
            ("web1\n".to_owned(), "f:1: expected `HOST KEY` (two fields), got \"web1\""),
            (format!("# ok\nweb1 {KEY} extra\n"), "f:2: expected `HOST KEY`"),
            (format!("\nWeb_1! {KEY}\n"), "f:2: host \"Web_1!\""),
            ("web1 web1:AAAA\n".to_owned(), "f:1: invalid public key `web1:AAAA`"),
            (format!("web1 {KEY}\nweb1 {KEY}\n"), "f:2: host `web1` is pinned twice"),
        ] {
            let err = KnownAgents::parse(&text, "f").unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_missing_file_holds_no_pins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KnownAgents::load(&dir.path().join(FILE_NAME)).unwrap(), KnownAgents::default());
    }
}
