//! Validated identifiers: host names, attribute names, tags, systems, addresses,
//! store paths and lock ids.
//!
//! Each type can only hold a valid value: it is checked in `FromStr`, `TryFrom<String>`
//! and `Deserialize`, so code holding one never re-validates. Deserialization validates
//! inside the string visitor, which lets serde_yaml attach the location of the scalar
//! itself (not of the enclosing mapping) to the error.

mod address;
mod store;

use std::fmt;

pub use address::Address;
pub use store::{LockId, StorePath, DEFAULT_STORE_DIR};

/// A value that failed validation as one of the identifier types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {reason}")]
pub struct InvalidId {
    /// What was being parsed, e.g. "host name".
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// Which rule it broke, phrased as what was expected.
    pub reason: String,
}

impl InvalidId {
    pub(crate) fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self { what, value: value.to_owned(), reason: reason.into() }
    }
}

/// Defines a `String` newtype whose only constructor runs `$check`, with `Display`,
/// `FromStr`, `TryFrom<String>`, serde as a plain string and a JSON Schema carrying
/// `$pattern`.
macro_rules! string_id {
    (
        $(#[$meta:meta])*
        $name:ident, what = $what:literal, pattern = $pattern:expr, check = $check:path,
        description = $description:literal
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Regular expression (ECMA-262, anchored) that valid values match.
            pub const PATTERN: &'static str = $pattern;
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ids::InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $check(s).map_err(|reason| $crate::ids::InvalidId::new($what, s, reason))?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::ids::InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $check(&s).map_err(|reason| $crate::ids::InvalidId::new($what, &s, reason))?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        $crate::ids::serde_via_str!($name, $what);

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description
                })
            }
        }
    };
}

/// Serde for a type whose string form is its `Display` and which parses with `FromStr`:
/// serialize as that string, deserialize through [`FromStrVisitor`] so a parse error is
/// reported at the value's own YAML position. `$what` names the value in messages.
macro_rules! serde_via_str {
    ($name:ty, $what:literal) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::ids::FromStrVisitor::<Self>::new($what))
            }
        }
    };
}
pub(crate) use serde_via_str;

/// Deserializes any `FromStr` type from a string scalar, turning its parse error into
/// a serde error raised inside the visitor (so the format can locate it).
pub(crate) struct FromStrVisitor<T> {
    what: &'static str,
    marker: std::marker::PhantomData<fn() -> T>,
}

impl<T> FromStrVisitor<T> {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, marker: std::marker::PhantomData }
    }
}

impl<T> serde::de::Visitor<'_> for FromStrVisitor<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} (a string)", self.what)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

const HOST_NAME_RULE: &str = "expected 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'";

fn check_host_name(s: &str) -> Result<(), &'static str> {
    let valid = (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(HOST_NAME_RULE)
    }
}

fn check_attr_name(s: &str) -> Result<(), &'static str> {
    let valid = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'\'' | b'-'));
    if valid {
        Ok(())
    } else {
        Err("expected one attribute name made of letters, digits, '_', '-' or \"'\" (no dots, double quotes, spaces or '#')")
    }
}

fn check_tag(s: &str) -> Result<(), &'static str> {
    let valid = (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !s.starts_with(['-', '_']);
    if valid {
        Ok(())
    } else {
        Err("expected 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter or digit")
    }
}

fn check_system(s: &str) -> Result<(), &'static str> {
    let part_ok =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match s.split_once('-') {
        Some((arch, os)) if part_ok(arch) && part_ok(os) => Ok(()),
        _ => Err("expected `<arch>-<os>` in lowercase, like x86_64-linux or aarch64-darwin"),
    }
}

string_id! {
    /// A fleet host name: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`; also the default
    /// `nixosConfigurations` attribute of the host.
    HostName, what = "host name",
    pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    check = check_host_name,
    description = "A host name: lowercase letters, digits and '-', at most 63 characters."
}

string_id! {
    /// A `nixosConfigurations` attribute name: one attribute-path element that is safe
    /// to splice unquoted into a flake installable (`[A-Za-z0-9_'-]+`).
    AttrName, what = "attribute name",
    pattern = "^[A-Za-z0-9_'-]+$",
    check = check_attr_name,
    description = "A nixosConfigurations attribute name."
}

string_id! {
    /// A host tag used in `@tag` selectors: `[a-z0-9][a-z0-9_-]*`, at most 63 chars.
    Tag, what = "tag",
    pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
    check = check_tag,
    description = "A host tag, used in @tag selectors."
}

string_id! {
    /// A Nix system double such as `x86_64-linux` or `aarch64-darwin`.
    System, what = "system",
    pattern = "^[a-z0-9_]+-[a-z0-9_]+$",
    check = check_system,
    description = "A Nix system such as x86_64-linux or aarch64-darwin."
}

impl From<&HostName> for AttrName {
    /// Every host name is a valid attribute name, which makes it the default.
    fn from(name: &HostName) -> Self {
        Self(name.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for ok in ["web1", "a", "0", "web-1", &"a".repeat(63)] {
            assert_eq!(ok.parse::<HostName>().unwrap().as_str(), ok);
        }
        for bad in ["", "-web", "web-", "Web1", "web_1", "web.1", &"a".repeat(64)] {
            let err = bad.parse::<HostName>().unwrap_err();
            assert_eq!(err.what, "host name");
            assert!(err.to_string().contains("1 to 63 lowercase"), "{err}");
        }
    }

    #[test]
    fn attr_names() {
        for ok in ["web1", "Web_1", "it's", "a-b"] {
            assert!(ok.parse::<AttrName>().is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a\"b", "a b", "a#b", "${x}"] {
            assert!(bad.parse::<AttrName>().is_err(), "{bad}");
        }
        let host: HostName = "web1".parse().unwrap();
        assert_eq!(AttrName::from(&host).as_str(), "web1");
    }

    #[test]
    fn tags() {
        for ok in ["web", "eu", "a_b-c", "1"] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", "_a", "-a", "Web", "a.b", "@web", &"a".repeat(64)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn systems() {
        for ok in ["x86_64-linux", "aarch64-darwin", "riscv64-linux", "armv7l-linux"] {
            assert!(ok.parse::<System>().is_ok(), "{ok}");
        }
        for bad in ["", "linux", "x86_64-", "-linux", "X86_64-linux", "x86_64-unknown-linux"] {
            assert!(bad.parse::<System>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_round_trip_and_errors() {
        let name: HostName = serde_json::from_str("\"web1\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"web1\"");
        let err = serde_json::from_str::<HostName>("\"Web1\"").unwrap_err();
        assert!(err.to_string().contains("invalid host name `Web1`"), "{err}");
    }
}
