//! Nix's `builders` setting as `hostctl --builders` takes it: machine specifications
//! separated by `;` or newlines, each `URI [SYSTEMS [SSH-KEY [MAX-JOBS [SPEED [FEATURES
//! [MANDATORY [PUBKEY]]]]]]]` with `-` for a field left empty, or `@FILE` naming a
//! machines file. Checked here so that what reaches `nix build --builders` is what the
//! user meant: Nix drops text after `#`, ignores fields beyond the eighth and hands the
//! host to ssh, so those are refused instead of misread.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::ids::System;

/// The store URI schemes of remote builders.
pub const BUILDER_SCHEMES: [&str; 2] = ["ssh://", "ssh-ng://"];

/// The most fields a machine specification has.
const MAX_FIELDS: usize = 8;

/// The longest value accepted.
const MAX_LEN: usize = 16 * 1024;

/// A validated `builders` value, passed to Nix as one argv element. The empty value
/// means "build locally only".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builders(String);

/// A `builders` value Nix would misread or refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct BuildersError {
    /// What was wrong, naming the machine specification and field.
    pub problem: String,
}

impl Builders {
    /// The value as given (and as Nix gets it).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Builders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Builders {
    type Err = BuildersError;

    fn from_str(s: &str) -> Result<Self, BuildersError> {
        check(s).map_err(|problem| BuildersError { problem })?;
        Ok(Self(s.to_owned()))
    }
}

fn check(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} bytes"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(format!("it contains the control character {c:?}"));
    }
    if s.contains('#') {
        return Err("it contains `#`, which Nix reads as the start of a comment".into());
    }
    for (i, spec) in s.split(['\n', ';']).enumerate() {
        let spec = spec.trim_matches([' ', '\t']);
        let which = i + 1;
        if spec.is_empty() {
            return Err(format!(
                "machine specification {which} is empty (separate machines with one `;` or newline; \
                 pass --builders '' to build locally only)"
            ));
        }
        check_spec(spec).map_err(|problem| format!("machine specification {which} `{spec}`: {problem}"))?;
    }
    Ok(())
}

/// One machine specification (or `@FILE`), without the separators around it.
fn check_spec(spec: &str) -> Result<(), String> {
    if let Some(file) = spec.strip_prefix('@') {
        let file = file.trim_matches([' ', '\t']);
        if !file.starts_with('/') {
            return Err("`@` must be followed by the absolute path of a machines file".into());
        }
        return Ok(());
    }
    let fields: Vec<&str> = spec.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    if fields.len() > MAX_FIELDS {
        return Err(format!(
            "{} fields, Nix reads at most {MAX_FIELDS} (URI SYSTEMS SSH-KEY MAX-JOBS SPEED FEATURES MANDATORY PUBKEY)",
            fields.len()
        ));
    }
    let mut fields = fields.into_iter();
    check_uri(fields.next().unwrap_or_default())?;
    let checks: [(&str, FieldCheck); 7] = [
        ("systems", check_systems),
        ("ssh key", check_absolute),
        ("max jobs", check_number),
        ("speed factor", check_number),
        ("supported features", check_features),
        ("mandatory features", check_features),
        ("public host key", check_base64),
    ];
    for ((name, check), field) in checks.iter().zip(fields) {
        if field != "-" {
            check(field).map_err(|problem| format!("{name} `{field}`: {problem} (or `-` for none)"))?;
        }
    }
    Ok(())
}

/// Checks one field's text; the error says what was expected.
type FieldCheck = fn(&str) -> Result<(), String>;

/// `ssh://[user@]host[:port][?params]` or the same with `ssh-ng://`.
fn check_uri(uri: &str) -> Result<(), String> {
    let Some(scheme) = BUILDER_SCHEMES.iter().find(|scheme| uri.starts_with(**scheme)) else {
        return Err(format!(
            "the store URI must start with {} (or the spec with `@` for a file)",
            BUILDER_SCHEMES.join(" or ")
        ));
    };
    let rest = &uri[scheme.len()..];
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (user, host) = authority.rsplit_once('@').map_or((None, authority), |(u, h)| (Some(u), h));
    if let Some(user) = user {
        if user.is_empty()
            || user.starts_with('-')
            || !user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("`{user}` is not a user name (letters, digits, `.`, `_`, `-`; not first `-`)"));
        }
    }
    let (name, port) = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => (addr, ""),
            Some((addr, port)) => (addr, port.strip_prefix(':').filter(|p| !p.is_empty()).unwrap_or("not a port")),
            None => (v6, "not a port"),
        },
        None => match host.split_once(':') {
            Some((name, "")) => (name, "not a port"),
            Some(split) => split,
            None => (host, ""),
        },
    };
    let name_ok = !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    let port_ok = port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0);
    if !name_ok || !port_ok {
        return Err(format!("`{authority}` is not [user@]host[:port] (a host name must not start with `-`)"));
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let key = param.split_once('=').map_or(param, |(key, _)| key);
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("`{key}` is not a store parameter name"));
        }
    }
    Ok(())
}

fn check_systems(field: &str) -> Result<(), String> {
    for system in field.split(',') {
        system.parse::<System>().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn check_absolute(field: &str) -> Result<(), String> {
    if !field.starts_with('/') {
        return Err("not an absolute path".into());
    }
    Ok(())
}

fn check_number(field: &str) -> Result<(), String> {
    if !field.bytes().all(|b| b.is_ascii_digit()) || field.parse::<u32>().is_err() {
        return Err("not a whole number".into());
    }
    Ok(())
}

fn check_features(field: &str) -> Result<(), String> {
    let ok = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !field.split(',').all(ok) {
        return Err("not a comma-separated list of feature names".into());
    }
    Ok(())
}

fn check_base64(field: &str) -> Result<(), String> {
    STANDARD.decode(field).map(|_| ()).map_err(|_| "not base64".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_nix_reads() {
        for ok in [
            "",
            "ssh://builder x86_64-linux",
            "ssh://hostctl-test@192.0.2.1 aarch64-linux",
            "ssh://builder@192.0.2.7 x86_64-linux - 4; @/etc/nix/machines",
            "ssh-ng://nix@b.example.com:2222 x86_64-linux,aarch64-linux /root/.ssh/id_ed25519 8 2 kvm,big-parallel kvm c3NoLWVkMjU1MTk=",
            "ssh://[2001:db8::1] - - - - - - -",
            "ssh://[2001:db8::1]:22 x86_64-linux",
            "ssh-ng://b:22",
            "ssh://a?remote-store=local&max-connections=1\nssh://b\t\taarch64-linux",
            "@/etc/nix/machines",
            " ssh://a ; ssh://b ",
        ] {
            let b: Builders = ok.parse().unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(b.as_str(), ok, "kept as given");
        }
    }

    #[test]
    fn refuses_what_nix_would_misread() {
        for (bad, want) in [
            (" ", "machine specification 1 is empty"),
            ("ssh://a;;ssh://b", "machine specification 2 is empty"),
            ("ssh://a;", "machine specification 2 is empty"),
            ("ssh://a\r", "control character '\\r'"),
            ("ssh://a\0", "control character"),
            ("ssh://a # the big one", "`#`"),
            ("builder x86_64-linux", "must start with ssh:// or ssh-ng://"),
            ("https://b", "must start with ssh://"),
            ("ssh://", "is not [user@]host[:port]"),
            ("ssh://-oProxyCommand=x", "must not start with `-`"),
            ("ssh://-x@b", "is not a user name"),
            ("ssh://b/path", "is not [user@]host[:port]"),
            ("ssh://b:0", "is not [user@]host[:port]"),
            ("ssh://[::1]22", "is not [user@]host[:port]"),
            ("ssh://[::1]:", "is not [user@]host[:port]"),
            ("ssh://b:", "is not [user@]host[:port]"),
            ("ssh://b?x=1&=2", "`` is not a store parameter name"),
            ("ssh://b?a;b=1 x", "machine specification 2 `b=1 x`"),
            ("ssh://b x86_64", "systems `x86_64`"),
            ("ssh://b x86_64-linux key", "ssh key `key`: not an absolute path"),
            ("ssh://b - - four", "max jobs `four`: not a whole number"),
            ("ssh://b - - 1 -2", "speed factor `-2`"),
            ("ssh://b - - - - kvm,,big", "supported features"),
            ("ssh://b - - - - - k$m", "mandatory features"),
            ("ssh://b - - - - - - not!base64", "public host key"),
            ("ssh://b - - - - - - - extra", "9 fields, Nix reads at most 8"),
            ("@machines", "absolute path of a machines file"),
            ("@", "absolute path"),
        ] {
            let err = bad.parse::<Builders>().unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        assert!("ssh://b ".repeat(3000).parse::<Builders>().is_err());
    }
}
