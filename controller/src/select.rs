//! Host selectors: a host name, a glob (`web*`, `db?`), `@tag` or a tag glob (`@web-*`);
//! a comma list (`web1,web2`) or repeated selectors are OR-ed. They are matched once, at
//! the command line's edge, into a [`Selection`] (`--on` of most commands, the HOST
//! arguments of `rollback` and `history`): what runs after that sees host names, never
//! selector strings. A selector that matches nothing says what it could have meant.

use std::collections::{BTreeMap, BTreeSet};

use hostctl_schemas::ids::HostName;
use hostctl_schemas::inventory::Host;

/// A selector that matched no host: bad input, so nothing runs.
#[derive(Debug, thiserror::Error)]
#[error("{label}{selector}: {reason}")]
pub struct SelectError {
    /// `--on ` for `--on`, empty for HOST arguments.
    pub label: &'static str,
    pub selector: String,
    /// What went wrong, a suggestion if one is close, and what the fleet has.
    pub reason: String,
}

/// The hosts a command runs on: inventory names, in inventory order, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    hosts: Vec<HostName>,
}

impl Selection {
    /// Matches `--on` selectors against the inventory (all hosts when there are none).
    pub fn parse(hosts: &BTreeMap<HostName, Host>, selectors: &[String], fleet: &str) -> Result<Self, SelectError> {
        Self::parse_labelled(hosts, selectors, fleet, "--on ")
    }

    /// Matches selectors given as HOST arguments (`rollback`, `history`); errors name
    /// the selector alone.
    pub fn parse_args(
        hosts: &BTreeMap<HostName, Host>,
        selectors: &[String],
        fleet: &str,
    ) -> Result<Self, SelectError> {
        Self::parse_labelled(hosts, selectors, fleet, "")
    }

    fn parse_labelled(
        hosts: &BTreeMap<HostName, Host>,
        selectors: &[String],
        fleet: &str,
        label: &'static str,
    ) -> Result<Self, SelectError> {
        let chosen =
            select(hosts, selectors, fleet).map_err(|(selector, reason)| SelectError { label, selector, reason })?;
        Ok(Self { hosts: chosen.into_iter().cloned().collect() })
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
/// The error is the selector and why (with the fleet's hosts or tags).
fn select<'a>(
    hosts: &'a BTreeMap<HostName, Host>,
    selectors: &[String],
    fleet: &str,
) -> Result<Vec<&'a HostName>, (String, String)> {
    if selectors.is_empty() {
        return Ok(hosts.keys().collect());
    }
    let mut chosen = vec![false; hosts.len()];
    for selector in selectors.iter().flat_map(|s| s.split(',')) {
        if selector.is_empty() {
            let whole = selectors.iter().find(|s| s.split(',').any(str::is_empty)).cloned().unwrap_or_default();
            return Err((whole, "an empty selector (a comma list needs a selector between commas)".to_owned()));
        }
        let mut any = false;
        for (i, (name, host)) in hosts.iter().enumerate() {
            let hit = match selector.strip_prefix('@') {
                Some(tag) => host.tags.iter().any(|t| glob_match(tag.as_bytes(), t.as_str().as_bytes())),
                None => glob_match(selector.as_bytes(), name.as_str().as_bytes()),
            };
            if hit {
                chosen[i] = true;
                any = true;
            }
        }
        if !any {
            return Err((selector.to_owned(), no_match(hosts, selector, fleet)));
        }
    }
    Ok(hosts.keys().zip(chosen).filter(|(_, c)| *c).map(|(n, _)| n).collect())
}

/// Why `selector` matched nothing: a close name or tag if there is one, then the fleet's
/// hosts (or, for a tag, its tags).
fn no_match(hosts: &BTreeMap<HostName, Host>, selector: &str, fleet: &str) -> String {
    match selector.strip_prefix('@') {
        Some(tag) => {
            let tags: BTreeSet<&str> = hosts.values().flat_map(|h| h.tags.iter().map(|t| t.as_str())).collect();
            let hint =
                did_you_mean(tag, tags.iter().copied()).map_or_else(String::new, |t| format!(" (did you mean @{t}?)"));
            let known =
                if tags.is_empty() { "none".to_owned() } else { tags.into_iter().collect::<Vec<_>>().join(", ") };
            format!("no host has this tag{hint}; tags in {fleet}: {known}")
        }
        None => {
            let names = hosts.keys().map(HostName::as_str);
            let hint =
                did_you_mean(selector, names.clone()).map_or_else(String::new, |n| format!(" (did you mean {n}?)"));
            format!("matches no host{hint}; hosts in {fleet}: {}", names.collect::<Vec<_>>().join(", "))
        }
    }
}

/// The candidate closest to `typed` if it is close enough to be a typo (edit distance at
/// most 2, and less than half its length); none for globs.
pub fn did_you_mean<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    if typed.contains(['*', '?']) {
        return None;
    }
    let limit = 2.min(typed.chars().count().saturating_sub(1) / 2 + 1);
    candidates
        .map(|c| (edit_distance(typed, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
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
        Selection::parse(&fleet.hosts, &sel, "fleet.yaml").map(|v| v.hosts().iter().map(|h| h.to_string()).collect())
    }

    #[test]
    fn selectors_are_ored() {
        assert_eq!(names(&[]).unwrap(), ["db1", "web1", "web2"]);
        assert_eq!(names(&["web1"]).unwrap(), ["web1"]);
        assert_eq!(names(&["web*"]).unwrap(), ["web1", "web2"]);
        assert_eq!(names(&["@eu"]).unwrap(), ["db1", "web1"]);
        assert_eq!(names(&["@us", "db?"]).unwrap(), ["db1", "web2"]);
        assert_eq!(names(&["*1"]).unwrap(), ["db1", "web1"]);
        assert_eq!(names(&["web1,db1"]).unwrap(), ["db1", "web1"]);
        assert_eq!(names(&["@u*", "db1,web1"]).unwrap(), ["db1", "web1", "web2"]);
        assert_eq!(names(&["@e?"]).unwrap(), ["db1", "web1"]);
    }

    #[test]
    fn a_selector_matching_nothing_is_an_error() {
        let err = names(&["web1", "wbe*"]).unwrap_err();
        assert_eq!(err.to_string(), "--on wbe*: matches no host; hosts in fleet.yaml: db1, web1, web2");
        let err = names(&["@asia"]).unwrap_err();
        assert_eq!(err.to_string(), "--on @asia: no host has this tag; tags in fleet.yaml: db, eu, us, web");
        let err = names(&["web1,wbe2"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--on wbe2: matches no host (did you mean web2?); hosts in fleet.yaml: db1, web1, web2"
        );
        let err = names(&["@ue"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--on @ue: no host has this tag (did you mean @eu?); tags in fleet.yaml: db, eu, us, web"
        );
        let err = names(&["@db-*"]).unwrap_err();
        assert_eq!(err.to_string(), "--on @db-*: no host has this tag; tags in fleet.yaml: db, eu, us, web");
        let err = names(&["web1,,db1"]).unwrap_err();
        assert_eq!(err.to_string(), "--on web1,,db1: an empty selector (a comma list needs a selector between commas)");
        assert!(names(&[""]).is_err());
        let fleet = parse_fleet(FLEET, Path::new("fleet.yaml")).unwrap();
        let err = Selection::parse_args(&fleet.hosts, &["db2".to_owned()], "fleet.yaml").unwrap_err();
        assert_eq!(err.to_string(), "db2: matches no host (did you mean db1?); hosts in fleet.yaml: db1, web1, web2");
    }

    #[test]
    fn suggestions_are_typos_only() {
        let names = ["web1", "web2", "db1", "monitoring"];
        assert_eq!(did_you_mean("wbe1", names.into_iter()), Some("web1"));
        assert_eq!(did_you_mean("monitorign", names.into_iter()), Some("monitoring"));
        assert_eq!(did_you_mean("mail", names.into_iter()), None);
        assert_eq!(did_you_mean("x", names.into_iter()), None);
        assert_eq!(did_you_mean("web*", names.into_iter()), None);
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
