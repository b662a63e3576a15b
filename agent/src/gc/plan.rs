//! Which generations a retention policy deletes: a pure decision over the profile's
//! generations and the systems that must stay, so it is tested without Nix.

use std::collections::BTreeSet;

use hostctl_schemas::api::gc::{GcGeneration, KeepReason};
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::retention::Retention;

/// The systems no policy may delete, by why.
#[derive(Debug, Default, Clone)]
pub struct Protected {
    pub running: Option<StorePath>,
    pub booted: Option<StorePath>,
    /// Systems of deployments in flight and of the newest confirmed deployment.
    pub deployments: BTreeSet<StorePath>,
    /// The profile's current generation number.
    pub current: Option<u64>,
}

impl Protected {
    fn reasons(&self, generation: &GcGeneration) -> Vec<KeepReason> {
        let mut reasons = Vec::new();
        if self.current == Some(generation.number) {
            reasons.push(KeepReason::Current);
        }
        if self.running.as_ref() == Some(&generation.toplevel) {
            reasons.push(KeepReason::Running);
        }
        if self.booted.as_ref() == Some(&generation.toplevel) {
            reasons.push(KeepReason::Booted);
        }
        if self.deployments.contains(&generation.toplevel) {
            reasons.push(KeepReason::Deployment);
        }
        reasons
    }
}

/// Splits `generations` (any order) into (deleted, kept), each oldest first; kept ones
/// say why. A protected system keeps every generation pointing at it (they cost nothing
/// more). `now` is Unix seconds; without a policy nothing is deleted.
pub fn plan(
    generations: Vec<GcGeneration>,
    policy: Option<&Retention>,
    protected: &Protected,
    now: u64,
) -> (Vec<GcGeneration>, Vec<GcGeneration>) {
    let mut generations = generations;
    generations.sort_by_key(|g| g.number);
    let newest: BTreeSet<u64> = match policy.and_then(|p| p.keep_last) {
        Some(n) => generations.iter().rev().take(n as usize).map(|g| g.number).collect(),
        None => BTreeSet::new(),
    };
    let min_time = policy.and_then(|p| p.keep_younger_than).map(|d| now.saturating_sub(d.as_std().as_secs()));
    let (mut deleted, mut kept) = (Vec::new(), Vec::new());
    for mut generation in generations {
        let mut reasons = protected.reasons(&generation);
        if policy.is_none() {
            reasons.push(KeepReason::NoPolicy);
        }
        if newest.contains(&generation.number) {
            reasons.push(KeepReason::KeepLast);
        }
        if min_time.is_some_and(|t| generation.time > t) {
            reasons.push(KeepReason::Young);
        }
        generation.kept_because = reasons;
        if generation.kept_because.is_empty() {
            deleted.push(generation);
        } else {
            kept.push(generation);
        }
    }
    (deleted, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::duration::Duration;

    fn system(n: u64) -> StorePath {
        format!("/nix/store/{}-system-{n}", char::from(b'0' + n as u8).to_string().repeat(32)).parse().unwrap()
    }

    fn generations(times: &[u64]) -> Vec<GcGeneration> {
        let g = |(i, time): (usize, &u64)| GcGeneration {
            number: i as u64 + 1,
            toplevel: system(i as u64 + 1),
            time: *time,
            kept_because: vec![],
        };
        times.iter().enumerate().map(g).collect()
    }

    fn numbers(gs: &[GcGeneration]) -> Vec<u64> {
        gs.iter().map(|g| g.number).collect()
    }

    #[test]
    fn keeps_the_newest_and_the_protected() {
        let policy = Retention::new(Some(2), None).unwrap();
        let protected = Protected {
            running: Some(system(6)),
            booted: Some(system(1)),
            deployments: BTreeSet::from([system(6)]),
            current: Some(6),
        };
        let (deleted, kept) = plan(generations(&[10; 6]), Some(&policy), &protected, 100);
        assert_eq!(numbers(&deleted), [2, 3, 4]);
        assert_eq!(numbers(&kept), [1, 5, 6]);
        assert_eq!(kept[0].kept_because, [KeepReason::Booted]);
        assert_eq!(
            kept[2].kept_because,
            [KeepReason::Current, KeepReason::Running, KeepReason::Deployment, KeepReason::KeepLast]
        );
    }

    #[test]
    fn age_and_count_keep_the_union() {
        let policy = Retention::new(Some(1), Some(Duration::from_secs(50))).unwrap();
        let (deleted, kept) = plan(generations(&[0, 10, 60, 90]), Some(&policy), &Protected::default(), 100);
        assert_eq!(numbers(&deleted), [1, 2]);
        assert_eq!(numbers(&kept), [3, 4]);
        let (deleted, kept) = plan(generations(&[0, 10]), None, &Protected::default(), 100);
        assert!(deleted.is_empty());
        assert_eq!(kept[0].kept_because, [KeepReason::NoPolicy]);
    }
}
