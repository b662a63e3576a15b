//! git's SSH `allowed_signers` file (`gpg.ssh.allowedSignersFile`, ssh-keygen(1) "ALLOWED
//! SIGNERS"): one key per line, `principals [options] keytype base64-key [comment]`.
//! This is configuration parsing only; keys are parsed, and signatures checked, by
//! `ssh-key`. Times (`valid-after`, `valid-before`) are read as UTC, with or without the
//! `Z` suffix: ssh-keygen would read a time without `Z` in the local zone, and an agent's
//! zone is not the operator's.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use ssh_key::PublicKey;

/// One line of the file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// The principals as written (comma-separated patterns): the signer's name.
    pub principals: String,
    /// `namespaces="..."`: the namespaces the key may sign for; `None`: any.
    pub namespaces: Option<Vec<String>>,
    /// Unix seconds: the key signs nothing before / from then on.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub key: PublicKey,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

impl AllowedSigner {
    /// Whether the line allows signing for `namespace` (patterns `*` and `?` as ssh's).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|list| list.iter().any(|pattern| glob(pattern, namespace)))
    }
}

/// The parsed file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    pub file: PathBuf,
    pub entries: Vec<AllowedSigner>,
}

/// A line that could not be read: `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct SignersError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl AllowedSigners {
    /// Parses the text of `file`. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str, file: &Path) -> Result<Self, SignersError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message: String| SignersError { file: file.to_owned(), line: index + 1, message };
            entries.push(parse_line(line, index + 1).map_err(fail)?);
        }
        Ok(Self { file: file.to_owned(), entries })
    }
}

fn parse_line(line: &str, number: usize) -> Result<AllowedSigner, String> {
    let (principals, rest) = next_field(line);
    let principals = principals.trim_matches('"').to_owned();
    if principals.is_empty() {
        return Err("no principals before the key".into());
    }
    let (field, mut rest) = next_field(rest);
    let mut signer_options = Options::default();
    let key_type = if is_key_type(field) {
        field
    } else {
        signer_options = parse_options(field)?;
        let (key_type, after) = next_field(rest);
        rest = after;
        key_type
    };
    if !is_key_type(key_type) {
        return Err(format!(
            "expected a key type such as ssh-ed25519 after the principals and options, found `{key_type}`"
        ));
    }
    let (base64, _comment) = next_field(rest);
    if base64.is_empty() {
        return Err(format!("no key after `{key_type}`"));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(|e| format!("cannot read the {key_type} key: {e}"))?;
    Ok(AllowedSigner {
        principals,
        namespaces: signer_options.namespaces,
        valid_after: signer_options.valid_after,
        valid_before: signer_options.valid_before,
        key,
        line: number,
    })
}

fn is_key_type(field: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"].iter().any(|p| field.starts_with(p))
}

/// The next whitespace-separated field (double quotes group), and the rest.
fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

#[derive(Debug, Default)]
struct Options {
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

fn parse_options(field: &str) -> Result<Options, String> {
    let mut options = Options::default();
    for option in split_outside_quotes(field) {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value.trim_matches('"'))),
            None => (option, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", _) => {
                return Err("`cert-authority` lines are not supported: list each signing key itself".into())
            }
            ("namespaces", Some(v)) => options.namespaces = Some(v.split(',').map(str::to_owned).collect()),
            ("valid-after", Some(v)) => options.valid_after = Some(parse_time(v)?),
            ("valid-before", Some(v)) => options.valid_before = Some(parse_time(v)?),
            ("namespaces" | "valid-after" | "valid-before", None) => {
                return Err(format!("option `{name}` needs a value"))
            }
            _ => {
                return Err(format!(
                    "unknown option `{name}`: expected namespaces=, valid-after= or valid-before= (or a key type)"
                ))
            }
        }
    }
    Ok(options)
}

fn split_outside_quotes(field: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in field.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&field[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&field[start..]);
    parts
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally followed by `Z`; UTC.
fn parse_time(value: &str) -> Result<i64, String> {
    let digits = value.strip_suffix(['Z', 'z']).unwrap_or(value);
    let bad = || format!("`{value}` is not a time: expected YYYYMMDD[HHMM[SS]][Z]");
    let time = match digits.len() {
        8 => NaiveDate::parse_from_str(digits, "%Y%m%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)),
        12 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M").ok(),
        14 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S").ok(),
        _ => None,
    };
    time.filter(|_| digits.bytes().all(|b| b.is_ascii_digit())).map(|t| t.and_utc().timestamp()).ok_or_else(bad)
}

/// ssh's pattern match: `*` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn at(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => at(&p[1..], t) || (!t.is_empty() && at(p, &t[1..])),
            (Some(b'?'), Some(_)) => at(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => at(&p[1..], &t[1..]),
            _ => false,
        }
    }
    at(pattern.as_bytes(), text.as_bytes())
}

impl fmt::Display for AllowedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (line {})", self.principals, self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn parse(text: &str) -> Result<AllowedSigners, SignersError> {
        AllowedSigners::parse(text, Path::new("signers"))
    }

    #[test]
    fn lines_with_and_without_options() {
        let text = format!(
            "# team\n\nalice@example.com {KEY} alice's laptop\n\"bob@x,carol@x\" namespaces=\"git,file\",valid-after=20240101,valid-before=\"202501021530Z\" {KEY}\n"
        );
        let signers = parse(&text).unwrap();
        let [alice, bob] = &signers.entries[..] else { panic!("{signers:?}") };
        assert_eq!((alice.principals.as_str(), alice.line, alice.namespaces.as_ref()), ("alice@example.com", 3, None));
        assert!(alice.allows_namespace("git"));
        assert_eq!(bob.principals, "bob@x,carol@x");
        assert_eq!(bob.namespaces, Some(vec!["git".to_owned(), "file".to_owned()]));
        assert_eq!((bob.valid_after, bob.valid_before), (Some(1_704_067_200), Some(1_735_831_800)));
        assert!(bob.allows_namespace("git") && !bob.allows_namespace("email"));
    }

    #[test]
    fn bad_lines_name_file_line_and_problem() {
        for (text, want) in [
            (format!("a@x cert-authority {KEY}"), "signers:1: `cert-authority` lines are not supported"),
            (format!("\na@x valid-before=2024 {KEY}"), "signers:2: `2024` is not a time"),
            (format!("a@x restrict {KEY}"), "signers:1: unknown option `restrict`"),
            ("a@x ssh-ed25519".to_owned(), "signers:1: no key after `ssh-ed25519`"),
            ("a@x ssh-ed25519 AAAAnotakey".to_owned(), "signers:1: cannot read the ssh-ed25519 key"),
            (format!("a@x namespaces {KEY}"), "signers:1: option `namespaces` needs a value"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }

    #[test]
    fn namespace_patterns() {
        assert!(glob("g*", "git") && glob("g?t", "git") && glob("*", "") && !glob("file", "git"));
    }
}
