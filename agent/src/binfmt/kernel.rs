//! The kernel's binfmt_misc file system: reading entries (`<mount>/<name>`), the
//! registration line written to `<mount>/register`, and removing an entry (`-1`).
//!
//! Only [`super`] calls the writing functions, and only for names it manages.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Files of the mount that are not entries.
const CONTROL_FILES: [&str; 2] = ["register", "status"];

/// What an entry matches binaries by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Bytes at `offset`, compared under `mask` (`None`: all bits).
    Magic { offset: u32, magic: Vec<u8>, mask: Option<Vec<u8>> },
    /// A file name extension (without the dot).
    Extension(String),
}

/// One entry as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub enabled: bool,
    pub interpreter: PathBuf,
    /// Flag letters in the kernel's order (`P`, `O`, `C`, `F`).
    pub flags: String,
    pub matcher: Matcher,
}

/// An entry file the agent could not make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse the binfmt_misc entry: {0}")]
pub struct ParseError(String);

/// Parses the text of `<mount>/<name>`:
///
/// ```text
/// enabled
/// interpreter /usr/bin/qemu-aarch64-static
/// flags: PF
/// offset 0
/// magic 7f454c46...
/// mask ffffffff...
/// ```
///
/// (an extension entry has `extension .foo` instead of offset/magic/mask).
pub fn parse_entry(text: &str) -> Result<Entry, ParseError> {
    let mut lines = text.lines();
    let enabled = match lines.next() {
        Some("enabled") => true,
        Some("disabled") => false,
        other => return Err(ParseError(format!("expected `enabled` or `disabled`, found {other:?}"))),
    };
    let (mut interpreter, mut flags, mut offset, mut magic, mut mask, mut extension) =
        (None, None, None, None, None, None);
    for line in lines {
        if let Some(v) = line.strip_prefix("interpreter ") {
            interpreter = Some(PathBuf::from(v));
        } else if let Some(v) = line.strip_prefix("flags:") {
            flags = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("offset ") {
            offset = Some(v.parse::<u32>().map_err(|_| ParseError(format!("bad offset {v:?}")))?);
        } else if let Some(v) = line.strip_prefix("magic ") {
            magic = Some(hex::decode(v).map_err(|_| ParseError(format!("bad magic {v:?}")))?);
        } else if let Some(v) = line.strip_prefix("mask ") {
            mask = Some(hex::decode(v).map_err(|_| ParseError(format!("bad mask {v:?}")))?);
        } else if let Some(v) = line.strip_prefix("extension .") {
            extension = Some(v.to_owned());
        }
        // Other lines (none today) belong to a newer kernel: ignored, not an error.
    }
    let interpreter = interpreter.ok_or_else(|| ParseError("no `interpreter` line".into()))?;
    let flags = flags.ok_or_else(|| ParseError("no `flags:` line".into()))?;
    let matcher = match (magic, extension) {
        (Some(magic), None) => Matcher::Magic { offset: offset.unwrap_or(0), magic, mask },
        (None, Some(ext)) => Matcher::Extension(ext),
        _ => return Err(ParseError("expected exactly one of `magic` and `extension`".into())),
    };
    Ok(Entry { enabled, interpreter, flags, matcher })
}

/// The line that registers a magic entry at offset 0: `:name:M::magic:mask:interpreter:flags`,
/// every magic and mask byte as `\xHH` (so no byte can be taken for a `:` separator).
/// `name` and `interpreter` must have been validated (no `:`, `/` in name, no newline).
pub fn register_line(name: &str, magic: &[u8], mask: &[u8], interpreter: &Path, flags: &str) -> String {
    let escape = |bytes: &[u8]| {
        bytes.iter().fold(String::with_capacity(bytes.len() * 4), |mut s, b| {
            let _ = write!(s, "\\x{b:02x}");
            s
        })
    };
    format!(":{name}:M::{}:{}:{}:{flags}", escape(magic), escape(mask), interpreter.display())
}

/// Why a read or write of binfmt_misc failed; names the file.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "binfmt_misc is not mounted at {0} (no `register` file); mount it (`mount -t binfmt_misc binfmt_misc {0}`) or set binfmt.mount_point"
    )]
    NotMounted(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing `{what}` to {path} failed: {source}")]
    Write {
        path: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The entries under `mount` whose name `keep` accepts, parsed (a file that does not parse
/// is kept as its error, so the caller can replace it).
pub fn read_entries(
    mount: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Result<Entry, ParseError>>, KernelError> {
    if !mount.join("register").exists() {
        return Err(KernelError::NotMounted(mount.display().to_string()));
    }
    let read_err = |path: &Path, source| KernelError::Read { path: path.display().to_string(), source };
    let mut entries = BTreeMap::new();
    for dirent in std::fs::read_dir(mount).map_err(|e| read_err(mount, e))? {
        let dirent = dirent.map_err(|e| read_err(mount, e))?;
        let Ok(name) = dirent.file_name().into_string() else { continue };
        if CONTROL_FILES.contains(&name.as_str()) || !keep(&name) {
            continue;
        }
        let path = dirent.path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                entries.insert(name, parse_entry(&text));
            }
            // Removed between listing and reading: not there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(&path, e)),
        }
    }
    Ok(entries)
}

/// Writes `line` to `<mount>/register` in one `write` (binfmt_misc parses each write as a
/// whole registration).
pub fn register(mount: &Path, line: &str) -> Result<(), KernelError> {
    write_once(&mount.join("register"), line)
}

/// Removes the entry `name` (`-1` to `<mount>/<name>`).
pub fn remove(mount: &Path, name: &str) -> Result<(), KernelError> {
    write_once(&mount.join(name), "-1")
}

fn write_once(path: &Path, what: &str) -> Result<(), KernelError> {
    let err = |source| KernelError::Write { path: path.display().to_string(), what: what.to_owned(), source };
    // No create, no truncate: these are control files of the kernel.
    let mut file = std::fs::OpenOptions::new().write(true).open(path).map_err(err)?;
    let written = file.write(what.as_bytes()).map_err(err)?;
    if written != what.len() {
        return Err(err(std::io::Error::other(format!("the kernel took {written} of {} bytes", what.len()))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim from a 6.18 kernel after registering aarch64 with qemu-aarch64-static.
    const AARCH64: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: PF\noffset 0\n\
        magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00ffffffffffff00fffeffffff\n";

    #[test]
    fn parses_a_magic_entry() {
        let e = parse_entry(AARCH64).unwrap();
        assert!(e.enabled);
        assert_eq!(e.interpreter, Path::new("/usr/bin/qemu-aarch64-static"));
        assert_eq!(e.flags, "PF");
        let Matcher::Magic { offset, magic, mask } = e.matcher else { panic!("not magic") };
        assert_eq!(offset, 0);
        assert_eq!(magic[..4], *b"\x7fELF");
        assert_eq!(magic[18], 0xb7);
        assert_eq!(mask.unwrap()[16], 0xfe);
    }

    #[test]
    fn parses_disabled_extension_and_maskless_entries() {
        let e = parse_entry("disabled\ninterpreter /bin/true\nflags: \nextension .foo\n").unwrap();
        assert!(!e.enabled);
        assert_eq!(e.flags, "");
        assert_eq!(e.matcher, Matcher::Extension("foo".into()));
        let e = parse_entry("enabled\ninterpreter /bin/true\nflags: OC\noffset 2\nmagic 6162\n").unwrap();
        assert_eq!(e.flags, "OC");
        assert_eq!(e.matcher, Matcher::Magic { offset: 2, magic: b"ab".to_vec(), mask: None });
    }

    #[test]
    fn rejects_what_is_not_an_entry() {
        for (text, why) in [
            ("", "expected `enabled`"),
            ("enabled\nflags: F\nmagic 00\n", "no `interpreter`"),
            ("enabled\ninterpreter /x\nmagic 00\n", "no `flags:`"),
            ("enabled\ninterpreter /x\nflags: \noffset 0\nmagic zz\n", "bad magic"),
            ("enabled\ninterpreter /x\nflags: \noffset -1\nmagic 00\n", "bad offset"),
            ("enabled\ninterpreter /x\nflags: \n", "exactly one of"),
        ] {
            let err = parse_entry(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn register_line_escapes_every_byte() {
        let line = register_line("hostctl-x", b"\x7fE:", &[0xff, 0xfe, 0x00], Path::new("/usr/bin/q"), "PF");
        assert_eq!(line, r":hostctl-x:M::\x7f\x45\x3a:\xff\xfe\x00:/usr/bin/q:PF");
    }

    #[test]
    fn reads_only_wanted_entries_and_reports_an_unmounted_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_entries(dir.path(), |_| true).unwrap_err().to_string();
        assert!(err.contains("binfmt_misc is not mounted at") && err.contains("binfmt.mount_point"), "{err}");
        for (name, text) in [("register", ""), ("status", "enabled\n"), ("hostctl-a", AARCH64), ("qemu-arm", AARCH64)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("hostctl-bad"), "garbage").unwrap();
        let entries = read_entries(dir.path(), |n| n.starts_with("hostctl-")).unwrap();
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["hostctl-a", "hostctl-bad"]);
        assert!(entries["hostctl-a"].is_ok());
        assert!(entries["hostctl-bad"].is_err());
    }
}
