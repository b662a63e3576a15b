//! Which Nix we are talking to, and what that changes in argv and JSON.
//!
//! Detected once per [`crate::Nix`] handle from `nix --version`; every version-dependent
//! decision in this crate is a method here so the differences live in one place.

use std::fmt;

/// A parsed `nix --version`. Lix and Determinate Nix report a Nix-compatible version last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NixVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl NixVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Parses the output of `nix --version`, e.g. `nix (Nix) 2.8.0`,
    /// `nix (Nix) 2.26.3`, `nix (Lix, like Nix) 2.91.1`, `nix (Nix) 2.19.0pre20231003_dirty`.
    pub fn parse(output: &str) -> Option<Self> {
        let line = output.lines().next()?;
        let token = line.split_whitespace().rev().find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut parts = token.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }

    /// Nix 2.13 introduced `DRV^outputs`; 2.15 stopped treating a bare `.drv` installable
    /// as "its outputs". Before 2.13 the bare path is the only spelling.
    pub fn has_caret_outputs(self) -> bool {
        self >= Self::new(2, 13, 0)
    }

    /// Nix 2.19 changed `nix path-info --json` from an array of objects with a `path` key
    /// to an object keyed by store path. The parser accepts both; this is for tests and logs.
    pub fn path_info_is_object(self) -> bool {
        self >= Self::new(2, 19, 0)
    }

    /// `nix show-derivation` became `nix derivation show` in 2.15 (the old name lingers as
    /// a deprecated alias in some releases; we never rely on it).
    pub fn derivation_show_argv(self) -> &'static [&'static str] {
        if self >= Self::new(2, 15, 0) {
            &["derivation", "show"]
        } else {
            &["show-derivation"]
        }
    }
}

impl fmt::Display for NixVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_version_strings() {
        let cases = [
            ("nix (Nix) 2.8.0\n", NixVersion::new(2, 8, 0)),
            ("nix (Nix) 2.26.3", NixVersion::new(2, 26, 3)),
            ("nix (Lix, like Nix) 2.91.1", NixVersion::new(2, 91, 1)),
            ("nix (Nix) 2.19.0pre20231003_dirty", NixVersion::new(2, 19, 0)),
            ("nix (Determinate Nix 3.6.2) 2.29.0", NixVersion::new(2, 29, 0)),
            ("nix (Nix) 2.4", NixVersion::new(2, 4, 0)),
        ];
        for (text, want) in cases {
            assert_eq!(NixVersion::parse(text), Some(want), "{text}");
        }
        assert_eq!(NixVersion::parse("nix"), None);
        assert_eq!(NixVersion::parse(""), None);
    }

    #[test]
    fn version_switches() {
        let old = NixVersion::new(2, 8, 0);
        let new = NixVersion::new(2, 26, 3);
        assert!(!old.has_caret_outputs());
        assert!(new.has_caret_outputs());
        assert!(!old.path_info_is_object());
        assert!(new.path_info_is_object());
        assert_eq!(old.derivation_show_argv(), ["show-derivation"]);
        assert_eq!(new.derivation_show_argv(), ["derivation", "show"]);
    }
}
