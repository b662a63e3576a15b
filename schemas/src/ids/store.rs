//! Nix store paths and flake lock ids: the two identities a deployment is pinned by.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::InvalidId;

/// The store directory used when none is given.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Nix's base32 alphabet: digits and lowercase letters without e, o, u and t.
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;
const MAX_NAME_LEN: usize = 211;

/// A path directly under a store directory: `<store>/<32 base32 chars>-<name>`.
///
/// No `..`, nothing below the store object, no trailing slash: validated before any
/// use, since these paths end up in commands run as root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    path: String,
    store_dir_len: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-._?=".contains(c)
}

fn check_store_dir(dir: &str) -> Result<(), String> {
    let valid = dir.starts_with('/')
        && dir.len() > 1
        && !dir.ends_with('/')
        && dir[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if valid {
        Ok(())
    } else {
        Err(format!("store dir `{dir}` must be an absolute, normalised path"))
    }
}

fn check_base_name(base: &str) -> Result<(), String> {
    let Some(dash) = base.find('-') else {
        return Err("expected `<32-character hash>-<name>` after the store dir".into());
    };
    let hash = &base[..dash];
    if let Some(c) = hash.chars().find(|c| !NIX_BASE32.contains(*c)) {
        return Err(format!("`{c}` is not in Nix's base32 alphabet ({NIX_BASE32}) in the hash part"));
    }
    if hash.len() != HASH_LEN {
        return Err(format!("the hash part must be {HASH_LEN} characters, got {}", hash.len()));
    }
    let name = &base[dash + 1..];
    if name.is_empty() {
        return Err("the name after the hash is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('.') {
        return Err("the name must not start with '.'".into());
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!("`{c}` is not allowed in a store path name (letters, digits and +-._?=)"));
    }
    Ok(())
}

impl StorePath {
    /// Parses `s` as a path directly under `store_dir` (e.g. `/nix/store`).
    pub fn parse_in(store_dir: &str, s: &str) -> Result<Self, InvalidId> {
        let err = |reason: String| InvalidId::new("store path", s, reason);
        check_store_dir(store_dir).map_err(err)?;
        if s.split('/').any(|c| c == "..") {
            return Err(err("`..` is not allowed in a store path".into()));
        }
        let base = s
            .strip_prefix(store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| err(format!("expected an absolute path directly under {store_dir}")))?;
        if let Some((_, below)) = base.split_once('/') {
            return Err(err(if below.is_empty() {
                "expected no trailing slash".into()
            } else {
                format!("expected the store object itself, not `/{below}` inside it")
            }));
        }
        check_base_name(base).map_err(err)?;
        Ok(Self { path: s.to_owned(), store_dir_len: store_dir.len() })
    }

    /// The full path as text.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The full path.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.path)
    }

    /// The store directory this path lives in, e.g. `/nix/store`.
    pub fn store_dir(&self) -> &str {
        &self.path[..self.store_dir_len]
    }

    /// `<hash>-<name>`, the last path component.
    pub fn base_name(&self) -> &str {
        &self.path[self.store_dir_len + 1..]
    }

    /// The 32-character base32 hash part.
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..HASH_LEN]
    }

    /// The name after the hash, e.g. `nixos-system-web1-24.11`.
    pub fn name(&self) -> &str {
        &self.base_name()[HASH_LEN + 1..]
    }

    /// Whether this is a derivation (`.drv`) rather than a build output.
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

impl FromStr for StorePath {
    type Err = InvalidId;
    /// Parses a path under [`DEFAULT_STORE_DIR`].
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse_in(DEFAULT_STORE_DIR, s)
    }
}

impl TryFrom<String> for StorePath {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        s.parse()
    }
}

impl From<StorePath> for String {
    fn from(p: StorePath) -> String {
        p.path
    }
}

impl AsRef<Path> for StorePath {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.path, f)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// The lock id: SHA-256 over the exact bytes of `flake.lock`, always printed as 64
/// lowercase hex characters; the short form is the first 12.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockId(String);

const LOCK_HEX_LEN: usize = 64;
const LOCK_SHORT_LEN: usize = 12;

impl LockId {
    /// Wraps a SHA-256 digest computed elsewhere (the nix crate hashes the file).
    pub fn from_bytes_digest(digest: [u8; 32]) -> Self {
        use fmt::Write as _;
        let mut hex = String::with_capacity(LOCK_HEX_LEN);
        for b in digest {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        Self(hex)
    }

    /// The 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex characters, for humans.
    pub fn short(&self) -> &str {
        &self.0[..LOCK_SHORT_LEN]
    }
}

impl FromStr for LockId {
    type Err = InvalidId;
    /// Accepts 64 hex characters in either case and normalises them to lowercase.
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let err = |reason: String| InvalidId::new("lock id", s, reason);
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(err(format!("`{c}` is not a hex digit; expected the 64-character SHA-256 of flake.lock")));
        }
        if s.len() != LOCK_HEX_LEN {
            return Err(err(format!("expected the 64-character SHA-256 of flake.lock, got {} characters", s.len())));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

impl TryFrom<String> for LockId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        s.parse()
    }
}

impl From<LockId> for String {
    fn from(l: LockId) -> String {
        l.0
    }
}

impl fmt::Debug for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serde and JSON Schema for the two types above, which share the same shape.
macro_rules! serde_as_str {
    ($name:ident, $what:literal, $pattern:expr, $description:literal) => {
        super::serde_via_str!($name, $what);

        impl schemars::JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description
                })
            }
        }
    };
}

serde_as_str!(
    StorePath,
    "store path",
    "^/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]{0,210}$",
    "A path directly under /nix/store."
);
serde_as_str!(LockId, "lock id", "^[0-9a-fA-F]{64}$", "SHA-256 of flake.lock as 64 hex characters.");

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0c7bn3hyq1sjx4vm0l5vk0prz2zb4rcj";

    #[test]
    fn parses_store_paths() {
        let s = format!("/nix/store/{HASH}-nixos-system-web1-24.11");
        let p: StorePath = s.parse().unwrap();
        assert_eq!(p.as_str(), s);
        assert_eq!(p.store_dir(), "/nix/store");
        assert_eq!(p.hash_part(), HASH);
        assert_eq!(p.name(), "nixos-system-web1-24.11");
        assert!(!p.is_derivation());
        let drv: StorePath = format!("/nix/store/{HASH}-foo.drv").parse().unwrap();
        assert!(drv.is_derivation());
        let other = StorePath::parse_in("/tmp/store", &format!("/tmp/store/{HASH}-x")).unwrap();
        assert_eq!(other.store_dir(), "/tmp/store");
        assert_eq!(other.name(), "x");
        let long = format!("/nix/store/{HASH}-{}", "a".repeat(211));
        assert!(long.parse::<StorePath>().is_ok());
    }

    #[test]
    fn rejects_bad_store_paths() {
        let cases = [
            (format!("nix/store/{HASH}-foo"), "directly under /nix/store"),
            (format!("/nix/store/../{HASH}-foo"), "`..` is not allowed"),
            (format!("/nix/store/{HASH}-foo/.."), "`..` is not allowed"),
            (format!("/nix/store/{HASH}-foo/../../etc"), "`..` is not allowed"),
            (format!("/nix/store/{HASH}-foo/bin"), "not `/bin` inside"),
            (format!("/nix/store/{HASH}-foo/"), "trailing slash"),
            ("/nix/store/abc-foo".into(), "must be 32 characters, got 3"),
            (format!("/nix/store/{HASH}a-foo"), "must be 32 characters, got 33"),
            (format!("/nix/store/{}e-foo", &HASH[..31]), "`e` is not in Nix's base32"),
            (format!("/nix/store/{}o-foo", &HASH[..31]), "`o` is not in"),
            (format!("/nix/store/{}u-foo", &HASH[..31]), "`u` is not in"),
            (format!("/nix/store/{}t-foo", &HASH[..31]), "`t` is not in"),
            (format!("/nix/store/{}A-foo", &HASH[..31]), "`A` is not in"),
            (format!("/nix/store/{HASH}-"), "name after the hash is empty"),
            (format!("/nix/store/{HASH}"), "expected `<32-character hash>-<name>`"),
            (format!("/nix/store/{HASH}-.foo"), "must not start with '.'"),
            (format!("/nix/store/{HASH}-a b"), "` ` is not allowed"),
            (format!("/nix/store/{HASH}-{}", "a".repeat(212)), "longer than 211"),
            ("/nix/store".into(), "directly under"),
            ("/nix/store/".into(), "expected `<32"),
            (format!("/nix/storex/{HASH}-foo"), "directly under"),
            (String::new(), "directly under"),
        ];
        for (input, want) in cases {
            let err = input.parse::<StorePath>().unwrap_err();
            assert_eq!(err.what, "store path");
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
        let err = StorePath::parse_in("nix/store", &format!("nix/store/{HASH}-x")).unwrap_err();
        assert!(err.reason.contains("absolute"), "{err}");
        let err = StorePath::parse_in("/nix/store/", &format!("/nix/store/{HASH}-x")).unwrap_err();
        assert!(err.reason.contains("normalised"), "{err}");
    }

    #[test]
    fn store_path_serde() {
        let s = format!("\"/nix/store/{HASH}-foo\"");
        let p: StorePath = serde_json::from_str(&s).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), s);
        assert!(serde_json::from_str::<StorePath>("\"/etc/passwd\"").is_err());
    }

    #[test]
    fn lock_ids() {
        let digest = [0xab; 32];
        let id = LockId::from_bytes_digest(digest);
        assert_eq!(id.as_str(), "ab".repeat(32));
        assert_eq!(id.short(), "abababababab");
        assert_eq!(id.to_string(), "ab".repeat(32));
        let upper: LockId = "AB".repeat(32).parse().unwrap();
        assert_eq!(upper, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<LockId>(&json).unwrap(), id);

        let err = "ab".repeat(31).parse::<LockId>().unwrap_err();
        assert!(err.to_string().contains("got 62 characters"), "{err}");
        let err = format!("{}g", "a".repeat(63)).parse::<LockId>().unwrap_err();
        assert!(err.to_string().contains("`g` is not a hex digit"), "{err}");
        assert!("".parse::<LockId>().is_err());
        assert!(format!("sha256-{}", "a".repeat(58)).parse::<LockId>().is_err());
    }
}
