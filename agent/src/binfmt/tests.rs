//! Unit tests of the reconcile: keep/add/replace/remove decisions, the kernel entry
//! parser, registration lines and the Nix config file, on a fake mount point.

use super::*;

fn wanted(system: &str, interpreter: &str, flags: &'static str) -> Wanted {
    let arch = table::arch(system).unwrap();
    Wanted {
        system: system.parse().unwrap(),
        interpreter: interpreter.into(),
        flags,
        magic: arch.masked_magic(),
        mask: arch.mask.to_vec(),
    }
}

/// The kernel's view of `w` (as it reads back after registering it).
fn entry_of(w: &Wanted) -> Entry {
    Entry {
        enabled: true,
        interpreter: w.interpreter.clone(),
        flags: w.flags.into(),
        matcher: Matcher::Magic { offset: 0, magic: w.magic.clone(), mask: Some(w.mask.clone()) },
    }
}

fn present(entries: Vec<(&str, Result<Entry, ParseError>)>) -> BTreeMap<String, Result<Entry, ParseError>> {
    entries.into_iter().map(|(n, e)| (n.to_owned(), e)).collect()
}

#[test]
fn a_right_entry_is_kept_a_missing_one_added_an_unwanted_one_removed() {
    let a = wanted("aarch64-linux", "/usr/bin/qemu-aarch64-static", "PF");
    let r = wanted("riscv64-linux", "/usr/bin/qemu-riscv64-static", "PF");
    let old = wanted("s390x-linux", "/usr/bin/qemu-s390x-static", "PF");
    let want = [a.clone(), r.clone()];
    let now = present(vec![("hostctl-aarch64-linux", Ok(entry_of(&a))), ("hostctl-s390x-linux", Ok(entry_of(&old)))]);
    assert_eq!(
        decide(&want, &now),
        [Action::Remove("hostctl-s390x-linux".into()), Action::Keep(&want[0]), Action::Add(&want[1])]
    );
    // Once applied, the next decision changes nothing.
    let after = present(vec![("hostctl-aarch64-linux", Ok(entry_of(&a))), ("hostctl-riscv64-linux", Ok(entry_of(&r)))]);
    assert_eq!(decide(&want, &after), [Action::Keep(&want[0]), Action::Keep(&want[1])]);
    // Nothing wanted: every managed entry goes.
    assert_eq!(decide(&[], &after).len(), 2);
    assert!(decide(&[], &after).iter().all(|a| matches!(a, Action::Remove(_))));
}

#[test]
fn flag_order_does_not_matter() {
    let a = wanted("aarch64-linux", "/q", "PF");
    let mut e = entry_of(&a);
    e.flags = "FP".into();
    let want = [a];
    assert_eq!(decide(&want, &present(vec![("hostctl-aarch64-linux", Ok(e))])), [Action::Keep(&want[0])]);
}

#[test]
fn every_difference_replaces_the_entry_and_says_why() {
    let a = wanted("aarch64-linux", "/usr/bin/qemu-aarch64-static", "PF");
    let base = entry_of(&a);
    let mut cases: Vec<(Result<Entry, ParseError>, &str)> = vec![
        (Ok(Entry { enabled: false, ..base.clone() }), "disabled"),
        (
            Ok(Entry { interpreter: "/other".into(), ..base.clone() }),
            "interpreter /other, want /usr/bin/qemu-aarch64-static",
        ),
        (Ok(Entry { flags: "P".into(), ..base.clone() }), "flags `P`, want `PF`"),
        (Ok(Entry { flags: "POCF".into(), ..base.clone() }), "flags `POCF`"),
    ];
    let mut other_mask = a.mask.clone();
    other_mask[14] = 0xff;
    for matcher in [
        Matcher::Magic { offset: 0, magic: a.magic.clone(), mask: Some(other_mask) },
        Matcher::Magic { offset: 0, magic: a.magic.clone(), mask: None },
        Matcher::Magic { offset: 1, magic: a.magic.clone(), mask: Some(a.mask.clone()) },
        Matcher::Magic {
            offset: 0,
            magic: table::arch("riscv64-linux").unwrap().masked_magic(),
            mask: Some(a.mask.clone()),
        },
        Matcher::Extension("bin".into()),
    ] {
        cases.push((Ok(Entry { matcher, ..base.clone() }), "magic or mask differ"));
    }
    cases.push((kernel::parse_entry("garbage"), "cannot parse the binfmt_misc entry"));
    let want = [a];
    for (entry, why) in cases {
        let actions = decide(&want, &present(vec![("hostctl-aarch64-linux", entry)]));
        let [Action::Replace(w, reason)] = actions.as_slice() else { panic!("{why}: {actions:?}") };
        assert_eq!(w.system.as_str(), "aarch64-linux");
        assert!(reason.contains(why), "{reason} vs {why}");
    }
}

#[test]
fn registered_reports_enabled_managed_entries_only() {
    let a = wanted("aarch64-linux", "/q", "PF");
    let now = present(vec![
        ("hostctl-aarch64-linux", Ok(entry_of(&a))),
        ("hostctl-riscv64-linux", Ok(Entry { enabled: false, ..entry_of(&a) })),
        ("hostctl-bad", kernel::parse_entry("x")),
        ("hostctl-", Ok(entry_of(&a))),
    ]);
    let got = registered(&now);
    assert_eq!(got, [Registered { system: "aarch64-linux".into(), interpreter: "/q".into(), flags: "PF".into() }]);
}

#[test]
fn an_unmounted_binfmt_misc_is_reported_and_nix_is_told_no_platform() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        mount_point: dir.path().join("binfmt_misc"),
        nix_conf: dir.path().join("nix/hostctl-binfmt.conf"),
        wanted: vec![wanted("aarch64-linux", "/usr/bin/qemu-aarch64-static", "PF")],
    };
    let dry = reconcile(&plan, true);
    assert!(dry.dry_run && dry.nix_conf_changed);
    assert!(!plan.nix_conf.exists(), "a dry run writes nothing");
    let report = reconcile(&plan, false);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("binfmt_misc is not mounted at"), "{report:?}");
    assert!(report.added.is_empty() && report.registered.is_empty());
    assert!(report.nix_conf_changed);
    let text = std::fs::read_to_string(&plan.nix_conf).unwrap();
    assert!(!text.contains("extra-platforms"), "{text}");
    assert!(report.lines().iter().any(|l| l.starts_with("error: binfmt_misc is not mounted")), "{:?}", report.lines());
    // Again: the file is right, nothing written; the error stays.
    let again = reconcile(&plan, false);
    assert!(!again.changed() && again.errors == report.errors, "{again:?}");
    assert!(emulated_systems(&plan.mount_point).is_empty());
}

#[test]
fn report_lines_and_changed() {
    let mut r = Report { nix_conf: "/etc/nix/x.conf".into(), ..Report::default() };
    assert!(!r.changed());
    assert_eq!(r.lines(), ["/etc/nix/x.conf: unchanged"]);
    r.dry_run = true;
    r.added.push("aarch64-linux".into());
    r.replaced.push(Replaced { system: "riscv64-linux".into(), reason: "disabled".into() });
    r.removed.push("hostctl-s390x-linux".into());
    r.nix_conf_changed = true;
    assert!(r.changed());
    assert_eq!(
        r.lines(),
        [
            "aarch64-linux: would be added",
            "riscv64-linux: would be replaced (disabled)",
            "hostctl-s390x-linux: would be removed (not in binfmt.emulated_systems)",
            "/etc/nix/x.conf: would be written"
        ]
    );
}

#[tokio::test]
async fn the_keeper_ignores_its_own_change_events_and_wakes_when_it_missed_some() {
    let events = Events::new();
    let mut rx = Some(events.subscribe());
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.tick().await;
    events.changed();
    let waited = tokio::time::timeout(Duration::from_millis(200), next_trigger(&mut tick, &mut rx)).await;
    assert!(waited.is_err(), "a Changed event must not trigger a reconcile");
    // Fell behind: it cannot know whether a deployment event was among the lost ones.
    for _ in 0..300 {
        events.changed();
    }
    let waited = tokio::time::timeout(Duration::from_secs(5), next_trigger(&mut tick, &mut rx)).await;
    assert!(waited.is_ok(), "a lagged receiver must trigger a reconcile");
}
