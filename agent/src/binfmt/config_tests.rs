//! Unit tests of the `binfmt:` section turned into a plan: interpreter resolution, the
//! static-ELF check and every refusal (own system, missing or relative interpreter).

use std::collections::BTreeMap;

use super::*;

/// A fake emulator (a shell script: dynamic as far as `F` is concerned).
fn emulator(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config(systems: &[&str], interpreters: &[(&str, &Path)]) -> BinfmtConfig {
    BinfmtConfig {
        emulated_systems: systems.iter().map(|s| s.parse().unwrap()).collect(),
        interpreters: interpreters
            .iter()
            .map(|(s, p)| (s.parse().unwrap(), p.to_path_buf()))
            .collect::<BTreeMap<_, _>>(),
        mount_point: "/m".into(),
        nix_conf: "/n.conf".into(),
    }
}

fn host(qemu_dir: &Path, path: Option<&str>) -> HostFacts {
    HostFacts { system: "x86_64-linux".into(), qemu_dir: qemu_dir.to_path_buf(), path: path.map(Into::into) }
}

#[test]
fn resolves_default_emulators_debian_dir_first_then_path() {
    let debian = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let debian_aarch64 = emulator(debian.path(), "qemu-aarch64-static");
    emulator(bin.path(), "qemu-aarch64-static");
    let riscv_plain = emulator(bin.path(), "qemu-riscv64");
    let ppc_static = emulator(bin.path(), "qemu-ppc64le-static");
    emulator(bin.path(), "qemu-ppc64le");
    let path = format!("relative:{}", bin.path().display());
    let plan = plan_for(
        &config(&["aarch64-linux", "riscv64-linux", "powerpc64le-linux", "aarch64-linux"], &[]),
        &host(debian.path(), Some(&path)),
    )
    .unwrap();
    let got: Vec<(&str, &Path)> = plan.wanted.iter().map(|w| (w.system.as_str(), w.interpreter.as_path())).collect();
    assert_eq!(
        got,
        [
            ("aarch64-linux", debian_aarch64.as_path()),
            ("riscv64-linux", riscv_plain.as_path()),
            ("powerpc64le-linux", ppc_static.as_path())
        ]
    );
    let w = &plan.wanted[0];
    assert_eq!(w.name(), "hostctl-aarch64-linux");
    assert_eq!(w.flags, "P", "a script is not a static ELF");
    assert_eq!(w.magic, table::arch("aarch64-linux").unwrap().masked_magic());
    assert!(w.register_line().starts_with(r":hostctl-aarch64-linux:M::\x7f\x45\x4c\x46\x02"), "{}", w.register_line());
    assert!(w.register_line().ends_with(&format!(":{}:P", debian_aarch64.display())));
    assert_eq!((plan.mount_point.as_path(), plan.nix_conf.as_path()), (Path::new("/m"), Path::new("/n.conf")));
}

#[test]
fn configured_interpreters_win() {
    let dir = tempfile::tempdir().unwrap();
    let mine = emulator(dir.path(), "my-qemu");
    let plan =
        plan_for(&config(&["aarch64-linux"], &[("aarch64-linux", &mine)]), &host(Path::new("/nonexistent"), None))
            .unwrap();
    assert_eq!(plan.wanted[0].interpreter, mine);
}

#[test]
fn refusals_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ok = emulator(dir.path(), "qemu-aarch64-static");
    let not_exec = dir.path().join("plain");
    std::fs::write(&not_exec, "x").unwrap();
    let spaced = emulator(dir.path(), "with space");
    let coloned = emulator(dir.path(), "with:colon");
    let h = host(dir.path(), None);
    let cases: Vec<(BinfmtConfig, &str, &str)> = vec![
        (config(&["x86_64-linux"], &[]), "binfmt.emulated_systems[0]", "runs natively on this x86_64-linux host"),
        (config(&["aarch64-linux", "i686-linux"], &[]), "binfmt.emulated_systems[1]", "`i686-linux` runs natively"),
        (
            config(&["vax-linux"], &[]),
            "binfmt.emulated_systems[0]",
            "unknown system `vax-linux`: the agent can emulate aarch64-linux",
        ),
        (config(&["riscv64-linux"], &[]), "binfmt.emulated_systems[0]", "no emulator for `riscv64-linux`"),
        (
            config(&["aarch64-linux"], &[("aarch64-linux", Path::new("/nonexistent/qemu"))]),
            "binfmt.interpreters.aarch64-linux",
            "/nonexistent/qemu does not exist",
        ),
        (
            config(&["aarch64-linux"], &[("aarch64-linux", &not_exec)]),
            "binfmt.interpreters.aarch64-linux",
            "is not executable",
        ),
        (
            config(&["aarch64-linux"], &[("aarch64-linux", dir.path())]),
            "binfmt.interpreters.aarch64-linux",
            "is not a file",
        ),
        (
            config(&["aarch64-linux"], &[("aarch64-linux", Path::new("qemu"))]),
            "binfmt.interpreters.aarch64-linux",
            "absolute",
        ),
        (
            config(&["aarch64-linux"], &[("aarch64-linux", &spaced)]),
            "binfmt.interpreters.aarch64-linux",
            "must not contain ' '",
        ),
        (
            config(&["aarch64-linux"], &[("aarch64-linux", &coloned)]),
            "binfmt.interpreters.aarch64-linux",
            "must not contain ':'",
        ),
        (
            config(&["aarch64-linux"], &[("riscv64-linux", &ok)]),
            "binfmt.interpreters.riscv64-linux",
            "not in binfmt.emulated_systems",
        ),
    ];
    for (cfg, key, problem) in cases {
        let err = plan_for(&cfg, &h).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.problem.contains(problem), "{err}");
    }
    let err = plan_for(&config(&["riscv64-linux"], &[]), &h).unwrap_err().to_string();
    assert!(err.contains("install qemu-user-static or set binfmt.interpreters.riscv64-linux"), "{err}");
}

#[test]
fn empty_is_fine() {
    let plan = plan_for(&config(&[], &[]), &host(Path::new("/nonexistent"), None)).unwrap();
    assert!(plan.wanted.is_empty());
}

#[test]
fn entry_names_round_trip() {
    assert_eq!(system_of(&entry_name("aarch64-linux")).map(String::from).as_deref(), Some("aarch64-linux"));
    assert_eq!(system_of("qemu-aarch64"), None);
    assert_eq!(system_of("hostctl-"), None);
}

/// A minimal ELF image: header plus program headers of the given types.
fn elf(wide: bool, big: bool, types: &[u32]) -> Vec<u8> {
    let (ehsize, phentsize) = if wide { (64usize, 56usize) } else { (52, 32) };
    let mut b = vec![0u8; ehsize + phentsize * types.len()];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = if wide { 2 } else { 1 };
    b[5] = if big { 2 } else { 1 };
    let put16 = |b: &mut Vec<u8>, at: usize, v: u16| {
        b[at..at + 2].copy_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() })
    };
    let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
        b[at..at + 4].copy_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() })
    };
    if wide {
        let off = if big { 64u64.to_be_bytes() } else { 64u64.to_le_bytes() };
        b[32..40].copy_from_slice(&off);
        put16(&mut b, 54, 56);
        put16(&mut b, 56, types.len() as u16);
    } else {
        put32(&mut b, 28, 52);
        put16(&mut b, 42, 32);
        put16(&mut b, 44, types.len() as u16);
    }
    for (i, t) in types.iter().enumerate() {
        put32(&mut b, ehsize + i * phentsize, *t);
    }
    b
}

#[test]
fn static_elf_detection() {
    for wide in [false, true] {
        for big in [false, true] {
            assert_eq!(elf_has_no_interp(&elf(wide, big, &[6, 1, 1])), Some(true), "wide {wide} big {big}");
            assert_eq!(elf_has_no_interp(&elf(wide, big, &[6, 3, 1])), Some(false), "wide {wide} big {big}");
            // Cut inside the second program header's type.
            let keep = if wide { 64 + 56 + 2 } else { 52 + 32 + 2 };
            assert_eq!(elf_has_no_interp(&elf(wide, big, &[1, 1])[..keep]), None, "wide {wide} big {big}");
        }
    }
    assert_eq!(elf_has_no_interp(b"#!/bin/sh\n"), None);
    assert_eq!(elf_has_no_interp(&elf(true, false, &[])), None);
    // Real files: a dynamic shell, and Debian's static emulator where it is installed
    // (`tests/support/prereqs.sh --test` installs it; CI must have it).
    assert!(!is_static_elf(Path::new("/bin/sh")));
    let qemu = Path::new("/usr/bin/qemu-aarch64-static");
    if qemu.exists() {
        assert!(is_static_elf(qemu));
    } else {
        assert!(std::env::var_os("CI").is_none(), "{} is missing: .ci/run installs qemu-user-static", qemu.display());
        // Straight to stderr: libtest captures `eprintln!` of passing tests, and a skip
        // must be seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipping part of static_elf_detection: {} is missing (tests/support/prereqs.sh --test installs \
             qemu-user-static)",
            qemu.display()
        );
    }
    assert!(!is_static_elf(Path::new("/nonexistent")));
}
