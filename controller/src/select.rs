//! `--on` selectors: a host name, a glob (`web*`, `db?`), or `@tag`; several are OR-ed.
//! They are matched once, at the command line's edge, into a [`Selection`]: what runs
//! after that sees host names, never selector strings.

use std::collections::BTreeMap;

use hostctl_schemas::ids::HostName;
use hostctl_schemas::inventory::Host;

/// A selector that matched no host: bad input, so nothing runs.
#[derive(Debug, thiserror::Error)]
#[error("--on {selector}: {reason}; hosts in {fleet}: {known}")]
pub struct SelectError {
    pub selector: String,
    pub reason: String,
    pub fleet: String,
    pub known: String,
}

/// The hosts a command runs on: inventory names, in inventory order, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    hosts: Vec<HostName>,
}

impl Selection {
    /// Matches `--on` selectors against the inventory (all hosts when there are none).
    pub fn parse(hosts: &BTreeMap<HostName, Host>, selectors: &[String], fleet: &str) -> Result<Self, SelectError> {
        Ok(Self { hosts: select(hosts, selectors, fleet)?.into_iter().cloned().collect() })
    }

    /// Exactly one host, already known to be in the inventory.
    pub fn one(host: HostName) -> Self {
        Self { hosts: vec![host] }
    }

    pub fn hosts(&self) -> &[HostName] {
        &self.hosts
    }
}

/// The hosts matched by `selectors` (all hosts when empty), in inventory order.
/// Every selector must match at least one host: a typo must not silently deploy nothing.
fn select<'a>(
    hosts: &'a BTreeMap<HostName, Host>,
    selectors: &[String],
    fleet: &str,
) -> Result<Vec<&'a HostName>, SelectError> {
    if selectors.is_empty() {
        return Ok(hosts.keys().collect());
    }
    let known = || hosts.keys().map(HostName::as_str).collect::<Vec<_>>().join(", ");
    let mut chosen = vec![false; hosts.len()];
    for selector in selectors {
        let fail = |reason: &str| SelectError {
            selector: selector.clone(),
            reason: reason.to_owned(),
            fleet: fleet.to_owned(),
            known: known(),
        };
        if selector.is_empty() {
            return Err(fail("an empty selector"));
        }
        let mut any = false;
        for (i, (name, host)) in hosts.iter().enumerate() {
            let hit = match selector.strip_prefix('@') {
                Some(tag) => host.tags.iter().any(|t| t.as_str() == tag),
                None => glob_match(selector.as_bytes(), name.as_str().as_bytes()),
            };
            if hit {
                chosen[i] = true;
                any = true;
            }
        }
        if !any {
            let reason = if selector.starts_with('@') { "no host has this tag" } else { "matches no host" };
            return Err(fail(reason));
        }
    }
    Ok(hosts.keys().zip(chosen).filter(|(_, c)| *c).map(|(n, _)| n).collect())
}

/// Shell-style glob with `*` (any run) and `?` (one character); everything else literal.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::inventory::parse_fleet;
    use std::path::Path;

    const FLEET: &str = "hosts:
  web1: {address: 192.0.2.11, tags: [web, eu]}
  web2: {address: 192.0.2.12, tags: [web, us]}
  db1: {address: 192.0.2.21, tags: [db, eu]}
";

    fn names(sel: &[&str]) -> Result<Vec<String>, SelectError> {
        let fleet = parse_fleet(FLEET, Path::new("fleet.yaml")).unwrap();
        let sel: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
        select(&fleet.hosts, &sel, "fleet.yaml").map(|v| v.iter().map(|h| h.to_string()).collect())
    }

    #[test]
    fn selectors_are_ored() {
        assert_eq!(names(&[]).unwrap(), ["db1", "web1", "web2"]);
        assert_eq!(names(&["web1"]).unwrap(), ["web1"]);
        assert_eq!(names(&["web*"]).unwrap(), ["web1", "web2"]);
        assert_eq!(names(&["@eu"]).unwrap(), ["db1", "web1"]);
        assert_eq!(names(&["@us", "db?"]).unwrap(), ["db1", "web2"]);
        assert_eq!(names(&["*1"]).unwrap(), ["db1", "web1"]);
    }

    #[test]
    fn a_selector_matching_nothing_is_an_error() {
        let err = names(&["web1", "wbe*"]).unwrap_err();
        assert_eq!(err.to_string(), "--on wbe*: matches no host; hosts in fleet.yaml: db1, web1, web2");
        let err = names(&["@asia"]).unwrap_err();
        assert!(err.to_string().contains("no host has this tag"));
        assert!(names(&[""]).is_err());
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"?", b""));
        assert!(glob_match(b"web?", b"web1"));
    }
}
