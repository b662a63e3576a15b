//! Target `store_path`: the validated identifiers of `schemas::ids` (store paths first;
//! also lock ids, host names, attribute names, tags, systems and addresses). The whole
//! input is tried as each of them; with two lines, also `StorePath::parse_in(line 1,
//! line 2)`.
//!
//! Properties: parse -> display -> parse gives the same value (and display is the input,
//! lowercased for lock ids), JSON serialization round-trips, the JSON Schema pattern the
//! docs publish accepts exactly what the parser accepts, a store path's parts are where
//! they should be, and a refusal names the kind of value and the value.

use std::fmt::{Debug, Display};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use hostctl_schemas::ids::{Address, AttrName, HostName, InvalidId, LockId, StorePath, System, Tag};
use regex::Regex;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ensure, split_lines, Verdict};

/// Whether the input is one of the identifiers, or `<store dir>\n<path in it>`.
pub fn accepts(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let in_dir = text.split_once('\n').is_some_and(|(dir, path)| StorePath::parse_in(dir, path).is_ok());
    in_dir
        || text.parse::<StorePath>().is_ok()
        || text.parse::<LockId>().is_ok()
        || text.parse::<HostName>().is_ok()
        || text.parse::<AttrName>().is_ok()
        || text.parse::<Tag>().is_ok()
        || text.parse::<System>().is_ok()
        || text.parse::<Address>().is_ok()
}

pub fn check(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else { return Ok(()) };
    if let Some(path) = one::<StorePath>(text, "store path", str::to_owned)? {
        parts(&path)?;
    }
    one::<LockId>(text, "lock id", str::to_ascii_lowercase)?;
    one::<HostName>(text, "host name", str::to_owned)?;
    one::<AttrName>(text, "attribute name", str::to_owned)?;
    one::<Tag>(text, "tag", str::to_owned)?;
    one::<System>(text, "system", str::to_owned)?;
    if let Some(address) = one::<Address>(text, "address", str::to_owned)? {
        if let Some(ip) = address.ip() {
            let authority = address.authority(7420);
            ensure(authority.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip() == ip), || {
                format!("authority `{authority}` of {address} is not a socket address")
            })?;
        }
    }
    if let Some((fields, _)) = split_lines(data, 2) {
        if let (Ok(dir), Ok(path)) = (std::str::from_utf8(fields[0]), std::str::from_utf8(fields[1])) {
            in_store_dir(dir, path)?;
        }
    }
    Ok(())
}

/// One identifier type: returns the value when `text` parses.
fn one<T>(text: &str, what: &str, display: fn(&str) -> String) -> Result<Option<T>, String>
where
    T: FromStr<Err = InvalidId> + Display + Debug + PartialEq + Serialize + DeserializeOwned + JsonSchema,
{
    let parsed = text.parse::<T>();
    if let Some(re) = schema_pattern::<T>()? {
        ensure(re.is_match(text) == parsed.is_ok(), || {
            format!("the schema pattern of {what} says {} for {text:?}, the parser {parsed:?}", re.is_match(text))
        })?;
    }
    let value = match parsed {
        Err(e) => {
            let shown = e.to_string();
            ensure(e.what == what && e.value == text && shown.starts_with(&format!("invalid {what} `")), || {
                format!("refusal does not name the {what} and the value: {shown}")
            })?;
            return Ok(None);
        }
        Ok(value) => value,
    };
    let shown = value.to_string();
    ensure(shown == display(text), || format!("{what} {text:?} displays as {shown:?}"))?;
    ensure(shown.parse::<T>().as_ref() == Ok(&value), || format!("{what} {shown:?} does not parse back"))?;
    let json = serde_json::to_string(&value).map_err(|e| format!("{what} does not serialize: {e}"))?;
    let back = serde_json::from_str::<T>(&json).map_err(|e| format!("{what} JSON {json} does not read back: {e}"))?;
    ensure(back == value, || format!("{what} JSON round trip gave {back:?} for {value:?}"))?;
    Ok(Some(value))
}

fn parts(path: &StorePath) -> Verdict {
    let (hash, name) = (path.hash_part(), path.name());
    ensure(path.store_dir() == "/nix/store", || format!("store dir of {path} is {}", path.store_dir()))?;
    ensure(path.base_name() == format!("{hash}-{name}"), || format!("base name of {path}"))?;
    ensure(hash.len() == 32 && !name.is_empty() && name.len() <= 211 && !name.starts_with('.'), || {
        format!("hash part {hash:?} or name {name:?} of {path} out of bounds")
    })?;
    ensure(path.is_derivation() == name.ends_with(".drv"), || format!("is_derivation of {path}"))?;
    ensure(path.as_path().components().count() == 4, || format!("{path} is not directly under /nix/store"))
}

fn in_store_dir(dir: &str, text: &str) -> Verdict {
    match StorePath::parse_in(dir, text) {
        Err(e) => ensure(e.what == "store path" && e.value == text, || format!("refusal does not name the path: {e}")),
        Ok(path) => {
            ensure(path.store_dir() == dir && path.as_str() == text, || format!("{text:?} in {dir:?} gave {path:?}"))?;
            ensure(StorePath::parse_in(path.store_dir(), path.as_str()).as_ref() == Ok(&path), || {
                format!("{path} does not parse back in {dir}")
            })?;
            // No `..` or empty component can let a store path escape its directory.
            let below = text.strip_prefix(dir).and_then(|r| r.strip_prefix('/')).unwrap_or("");
            ensure(!below.is_empty() && !below.contains('/') && below != "." && below != "..", || {
                format!("{text:?} is not one component below {dir:?}")
            })
        }
    }
}

/// The `pattern` of `T`'s JSON Schema (what `schemas/json/` and docs/CONFIG.md publish),
/// compiled once per type; `None` for a type whose schema has none (addresses).
fn schema_pattern<T: JsonSchema>() -> Result<Option<&'static Regex>, String> {
    type Cache = Mutex<Vec<(&'static str, Option<&'static Regex>)>>;
    static COMPILED: OnceLock<Cache> = OnceLock::new();
    let mut cache = COMPILED.get_or_init(Cache::default).lock().map_err(|_| "pattern cache poisoned".to_owned())?;
    let name = std::any::type_name::<T>();
    if let Some((_, re)) = cache.iter().find(|(n, _)| *n == name) {
        return Ok(*re);
    }
    let schema = schemars::schema_for!(T);
    let re = match schema.get("pattern").and_then(serde_json::Value::as_str) {
        Some(pattern) => {
            let re = Regex::new(pattern).map_err(|e| format!("pattern of {name}: {e}"))?;
            Some(&*Box::leak(Box::new(re)))
        }
        None => None,
    };
    cache.push((name, re));
    Ok(re)
}
