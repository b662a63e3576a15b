//! Whether an ssh server's host key is the one a `known_hosts` file (OpenSSH format,
//! `sshd(8)` "SSH_KNOWN_HOSTS FILE FORMAT") lists for it. Pure: the caller reads the file.
//!
//! Understood: comma-separated host patterns with `*`/`?` wildcards and `!` negation,
//! `[host]:port` names, hashed names (`|1|salt|hmac-sha1`), the `@revoked` marker (a
//! listed key is refused). `@cert-authority` lines are skipped: the agent does not
//! verify host certificates, so a host known only through a CA is unknown here.
//! Anything else that does not parse is skipped, as OpenSSH does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// What the file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Listed for this host.
    Known,
    /// No key is listed for this host.
    Unknown,
    /// Other keys are listed for this host (their types); this one is not.
    Mismatch(Vec<String>),
    /// Listed as `@revoked`.
    Revoked,
}

/// One usable line.
struct Entry<'a> {
    revoked: bool,
    patterns: &'a str,
    key_type: &'a str,
    key: Vec<u8>,
}

fn entry(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        first = fields.next()?;
    }
    let key_type = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    Some(Entry { revoked, patterns: first, key_type, key })
}

/// Checks `key` (the server's public key blob, as the wire and `known_hosts` carry it)
/// for the server named `name` (`host`, or `[host]:port` for a port other than 22).
pub fn check(known_hosts: &str, name: &str, key: &[u8]) -> Verdict {
    let mut other_types = Vec::new();
    let mut known = false;
    for entry in known_hosts.lines().filter_map(entry) {
        if !matches_host(entry.patterns, name) {
            continue;
        }
        if entry.key == key {
            if entry.revoked {
                return Verdict::Revoked;
            }
            known = true;
        } else if !entry.revoked {
            other_types.push(entry.key_type.to_owned());
        }
    }
    match (known, other_types.is_empty()) {
        (true, _) => Verdict::Known,
        (false, true) => Verdict::Unknown,
        (false, false) => Verdict::Mismatch(other_types),
    }
}

/// Whether a line's host field names `name`: a hashed name, or patterns where any
/// negated match excludes the line.
fn matches_host(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated, name) => return false,
            Some(_) => {}
            None => matched |= glob(pattern, name),
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed with the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else { return false };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` (any run) and `?` (one character) wildcards, case-insensitive as host names are.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) =
        (pattern.to_lowercase().chars().collect(), name.to_lowercase().chars().collect());
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"\x00\x00\x00\x0bssh-ed25519 key a";
    const B: &[u8] = b"\x00\x00\x00\x0bssh-ed25519 key b";

    fn line(hosts: &str, key: &[u8]) -> String {
        format!("{hosts} ssh-ed25519 {}\n", STANDARD.encode(key))
    }

    #[test]
    fn plain_names_ports_and_mismatches() {
        let file = format!("# comment\n\n{}{}garbage line\n", line("git.example.com,10.0.0.1", A), line("[h]:2222", A));
        assert_eq!(check(&file, "git.example.com", A), Verdict::Known);
        assert_eq!(check(&file, "GIT.example.com", A), Verdict::Known);
        assert_eq!(check(&file, "10.0.0.1", A), Verdict::Known);
        assert_eq!(check(&file, "[h]:2222", A), Verdict::Known);
        assert_eq!(check(&file, "h", A), Verdict::Unknown, "port 22 is another name");
        assert_eq!(check(&file, "[h]:2200", A), Verdict::Unknown);
        assert_eq!(check(&file, "git.example.com", B), Verdict::Mismatch(vec!["ssh-ed25519".into()]));
        assert_eq!(check("", "h", A), Verdict::Unknown);
    }

    #[test]
    fn wildcards_and_negation() {
        let file = line("*.example.com,!bad.example.com,10.0.0.?", A);
        assert_eq!(check(&file, "git.example.com", A), Verdict::Known);
        assert_eq!(check(&file, "bad.example.com", A), Verdict::Unknown);
        assert_eq!(check(&file, "10.0.0.7", A), Verdict::Known);
        assert_eq!(check(&file, "10.0.0.77", A), Verdict::Unknown);
        assert!(glob("a*b*c", "aXXbYc") && !glob("a*b", "ab c") && glob("*", ""));
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` output for "[127.0.0.1]:2222" with this salt.
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hashed = format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()));
        let file = line(&hashed, A);
        assert_eq!(check(&file, "[127.0.0.1]:2222", A), Verdict::Known);
        assert_eq!(check(&file, "127.0.0.1", A), Verdict::Unknown);
        assert_eq!(check(&file, "[127.0.0.1]:2222", B), Verdict::Mismatch(vec!["ssh-ed25519".into()]));
        assert_eq!(check(&line("|1|not|base64!", A), "h", A), Verdict::Unknown);
    }

    #[test]
    fn markers() {
        let revoked = format!("@revoked {}{}", line("h", A), line("h", A));
        assert_eq!(check(&revoked, "h", A), Verdict::Revoked, "revoked wins over a plain entry");
        let ca = format!("@cert-authority {}", line("h", A));
        assert_eq!(check(&ca, "h", A), Verdict::Unknown, "CA lines are not host keys");
    }
}
