//! Unit tests of the trace reader, on lines as strace 6.1 prints them for Nix 2.8 and 2.26
//! (`-f -q -y`), and of the tracer's argv. The whole path (strace around a real `nix eval`)
//! is tested end to end in `tests/tests/incremental.rs`.

use super::*;

const SRC: &str = "/nix/store/dz03myap4kl7dpw3hrwqw4r7013nw1fc-source";

/// A trace of the root process `31805` (and a git child `31806`), with `body` in between.
fn trace(body: &str) -> String {
    format!(
        "31805 execve(\"/usr/bin/nix\", [\"nix\", \"eval\", \"--json\", \"/tmp/f#nixosConfigura\"...], 0x7ffd47d2d078 /* 36 vars */) = 0\n\
         31805 access(\"/etc/ld.so.preload\", R_OK) = -1 ENOENT (No such file or directory)\n\
         31806 execve(\"/usr/local/bin/git\", [\"git\", \"-C\", \"/tmp/f\", \"rev-parse\"], 0x5586aa81aac0 /* 37 vars */) = 0\n\
         31806 newfstatat(AT_FDCWD</tmp/f>, \".git\", {{st_mode=S_IFDIR|0755, st_size=4096, ...}}, 0) = 0\n\
         31806 +++ exited with 0 +++\n\
         {body}\
         31805 +++ exited with 0 +++\n"
    )
}

fn access(body: &str) -> Result<SourceAccess, Uncertain> {
    source_access(&trace(body), SRC)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn reads_and_listings_of_a_real_evaluation() {
    let body = format!(
        "31805 newfstatat(AT_FDCWD</tmp/f>, \"{SRC}\", {{st_mode=S_IFDIR|0555, st_size=4096, ...}}, AT_SYMLINK_NOFOLLOW) = 0\n\
         31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/flake.nix\", O_RDONLY|O_CLOEXEC) = 12<{SRC}/flake.nix>\n\
         31805 newfstatat(12<{SRC}/flake.nix>, \"\", {{st_mode=S_IFREG|0444, st_size=955, ...}}, AT_EMPTY_PATH) = 0\n\
         31805 openat(AT_FDCWD</tmp/f>, \"{SRC}//flake.lock\", O_RDONLY|O_CLOEXEC) = 12<{SRC}/flake.lock>\n\
         31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/hosts\", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 13<{SRC}/hosts>\n\
         31805 getdents64(13<{SRC}/hosts>, 0x5586aa85ce00 /* 6 entries */, 32768) = 176\n\
         31805 getdents64(13<{SRC}/hosts>, 0x5586aa85ce00 /* 0 entries */, 32768) = 0\n\
         31805 newfstatat(AT_FDCWD</tmp/f>, \"{SRC}/extra/nothere\", 0x7ffcc0df6050, AT_SYMLINK_NOFOLLOW) = -1 ENOENT (No such file or directory)\n\
         31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/hosts/gone.nix\", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)\n\
         31805 openat(AT_FDCWD</tmp/f>, \"/nix/store/m2dif7ddr2bpyg1hjcf07pcnis8zmkgj-source/lib/default.nix\", O_RDONLY|O_CLOEXEC) = 14</nix/store/m2dif7ddr2bpyg1hjcf07pcnis8zmkgj-source/lib/default.nix>\n"
    );
    let got = access(&body).unwrap();
    assert_eq!(got.root, PathBuf::from(SRC));
    assert_eq!(got.read, set(&["flake.lock", "flake.nix"]), "an input's files are not the flake's source");
    assert_eq!(got.listed, set(&["hosts"]), "lookups, failed opens and directory opens are no reads");
}

#[test]
fn unfinished_and_resumed_calls_are_joined_per_process() {
    let body = format!(
        "31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/motd.txt\", O_RDONLY|O_CLOEXEC <unfinished ...>\n\
         31807 openat(AT_FDCWD</tmp/f>, \"/etc/passwd\", O_RDONLY|O_CLOEXEC <unfinished ...>\n\
         31805 <... openat resumed>)             = 4<{SRC}/motd.txt>\n\
         31807 <... openat resumed>) = 5</etc/passwd>\n\
         31805 newfstatat(AT_FDCWD</tmp/f>, \"{SRC}/a\", <unfinished ...>\n\
         31805 <... newfstatat resumed>0x7ffcc0df6050, AT_SYMLINK_NOFOLLOW) = -1 ENOENT (No such file or directory)\n\
         31807 +++ exited with 0 +++\n"
    );
    let got = access(&body).unwrap();
    assert_eq!(got.read, set(&["motd.txt"]));

    // A call cut short by the process's end still counts, as a read.
    let cut = format!("31808 openat(AT_FDCWD</tmp/f>, \"{SRC}/late.nix\", O_RDONLY <unfinished ...>\n31808 +++ killed by SIGKILL +++\n");
    assert_eq!(access(&cut).unwrap().read, set(&["late.nix"]));
    let orphan = format!("31805 <... openat resumed>) = 4<{SRC}/x>\n");
    assert!(matches!(access(&orphan), Err(Uncertain::Unparsed { .. })));
}

#[test]
fn a_chroot_store_prefix_and_descriptor_relative_paths() {
    let root = "/tmp/t/store";
    let body = format!(
        "31940 newfstatat(14<{root}/nix/store>, \"dz03myap4kl7dpw3hrwqw4r7013nw1fc-source\", 0x55555a7b4910, AT_SYMLINK_NOFOLLOW) = -1 ENOENT (No such file or directory)\n\
         31940 openat(15<{root}{SRC}/hosts>, \"web1.nix\", O_RDONLY|O_CLOEXEC) = 16<{root}{SRC}/hosts/web1.nix>\n\
         31940 statx(AT_FDCWD</tmp/f>, \"{root}{SRC}/hosts\", AT_STATX_SYNC_AS_STAT, STATX_MODE, {{stx_mask=STATX_TYPE, stx_mode=S_IFDIR|0555, ...}}) = 0\n"
    );
    let got = source_access(&trace(&body).replace("31805", "31940"), SRC).unwrap();
    assert_eq!(got.root, PathBuf::from(format!("{root}{SRC}")));
    assert_eq!(got.read, set(&["hosts/web1.nix"]));

    let two = format!(
        "31805 openat(AT_FDCWD</tmp/f>, \"{root}{SRC}/a\", O_RDONLY) = 3<{root}{SRC}/a>\n\
         31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/b\", O_RDONLY) = 3<{SRC}/b>\n"
    );
    assert!(matches!(access(&two), Err(Uncertain::TwoRoots { .. })), "{:?}", access(&two));
}

#[test]
fn an_open_reads_the_path_it_names_and_the_file_it_returns() {
    let body = format!(
        "31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/link\", O_RDONLY|O_CLOEXEC) = 3<{SRC}/target>\n\
         31805 openat(AT_FDCWD</tmp/f>, \"/proc/self/fd/5\", O_RDONLY) = 6<{SRC}/hosts/web1.nix>\n\
         31805 open_by_handle_at(5</nix/store>, {{handle_bytes=8, handle_type=1}}, O_RDONLY) = 7<{SRC}/motd.txt>\n\
         31805 openat2(AT_FDCWD</tmp/f>, \"{SRC}/x\", {{flags=O_RDONLY|O_DIRECTORY, resolve=0}}, 24) = 8<{SRC}/x>\n"
    );
    assert_eq!(access(&body).unwrap().read, set(&["hosts/web1.nix", "link", "motd.txt", "target"]));
    let write = format!("31805 openat(AT_FDCWD</tmp/f>, \"/tmp/l\", O_WRONLY|O_TRUNC) = 3<{SRC}/motd.txt>\n");
    assert!(access(&write).unwrap_err().to_string().contains("writes"), "a write through a link");
}

#[test]
fn escaped_paths_are_decoded() {
    let body = format!(
        "31805 openat(AT_FDCWD</tmp/we,ird\\76na\\\"me>, \"{SRC}/we,ird>na\\\"me dir/f<1>\", O_RDONLY) = 3<{SRC}/we,ird\\76na\\\"me dir/f\\0741\\76>\n\
         31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/tab\\there\\x21\", O_RDONLY) = 3<{SRC}/tab\\there!>\n"
    );
    assert_eq!(access(&body).unwrap().read, set(&["tab\there!", "we,ird>na\"me dir/f<1>"]));
}

#[test]
fn anything_unaccounted_for_is_uncertain() {
    let cases = [
        (
            format!(
                "31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/x\", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0666) = 14<{SRC}/x>\n"
            ),
            "writes",
        ),
        (format!("31805 mkdir(\"{SRC}/d\", 0777) = 0\n"), "writes"),
        (
            format!(
                "31805 renameat2(AT_FDCWD</tmp/f>, \"/tmp/a\", AT_FDCWD</tmp/f>, \"{SRC}/b\", RENAME_NOREPLACE) = 0\n"
            ),
            "writes",
        ),
        (format!("31805 execve(\"{SRC}/bin/sh\", [\"sh\"], 0x1 /* 1 var */) = 0\n"), "executes"),
        (format!("31805 chdir(\"{SRC}/hosts\") = 0\n"), "changes directory"),
        (format!("31805 newfstatat(AT_FDCWD<{SRC}/hosts>, \"web1.nix\", 0x1, 0) = 0\n"), "working directory"),
        (format!("31805 newfstatat(AT_FDCWD</tmp/f>, \"{SRC}/../x\", 0x1, 0) = 0\n"), "cannot be resolved"),
        ("31805 stat(\"dz03myap4kl7dpw3hrwqw4r7013nw1fc-source/x\", 0x1) = 0\n".to_owned(), "cannot be resolved"),
        (format!("31805 frobnicate(\"{SRC}/x\") = 0\n"), "unknown call"),
        ("strace: Process 31805 attached\n".to_owned(), "cannot read"),
        ("31805 openat(AT_FDCWD</tmp/f>, \"/x\", O_RDONLY\n".to_owned(), "cannot read"),
    ];
    for (body, want) in cases {
        let err = access(&body).unwrap_err().to_string();
        assert!(err.contains(want), "{body}: {err}");
    }
    // Harmless: relative paths outside the source, unknown calls elsewhere.
    let fine = "31806 stat(\".git/HEAD\", 0x1) = 0\n31805 frobnicate(\"/etc/x\") = 0\n";
    assert_eq!(access(fine).unwrap().read, set(&[]));
}

#[test]
fn a_trace_without_the_evaluators_exit_is_truncated() {
    let full = trace(&format!("31805 openat(AT_FDCWD</tmp/f>, \"{SRC}/flake.nix\", O_RDONLY) = 3<{SRC}/flake.nix>\n"));
    let cut = full.trim_end().rsplit_once('\n').unwrap().0;
    assert_eq!(source_access(cut, SRC), Err(Uncertain::Truncated));
    let failed = full.replace("31805 +++ exited with 0 +++", "31805 +++ exited with 1 +++");
    assert_eq!(source_access(&failed, SRC), Err(Uncertain::Truncated));
    assert!(source_access("", SRC).is_err());
}

#[test]
fn argument_splitting_respects_quotes_structs_and_comments() {
    let (args, tail) = split_args("3</a,b>, \"x, y\", {a=1, b=[2, 3]}, 0x1 /* 2, entries */) = 0").unwrap();
    assert_eq!(args, ["3</a,b>", "\"x, y\"", "{a=1, b=[2, 3]}", "0x1 /* 2, entries */"]);
    assert_eq!(tail, " = 0");
    assert_eq!(split_args(") = 0").unwrap().0, Vec::<&str>::new());
    assert_eq!(unescape(r#"a\\b\"c\nd\101\x42"#).as_deref(), Some("a\\b\"c\ndAB"));
    assert_eq!(normalize("/a//b/./c/").as_deref(), Some("/a/b/c"));
    assert_eq!(normalize("/a/../b"), None);
    assert_eq!(find_component("/r/nix/store/x-source/y", "/nix/store/x-source"), Some(2));
    assert_eq!(find_component("/nix/store/x-sourcez", "/nix/store/x-source"), None);
}

#[test]
fn the_wrapper_ends_with_the_output_file_and_a_separator() {
    let argv = Tracer { seccomp: true }.wrapper(Path::new("/tmp/t.trace"));
    assert_eq!(argv[..3], ["strace", "-f", "--seccomp-bpf"]);
    assert_eq!(argv[argv.len() - 3..], ["-o", "/tmp/t.trace", "--"]);
    assert!(argv.contains(&"-y".to_owned()) && !argv.contains(&"-qq".to_owned()), "{argv:?}");
    let traced = argv.iter().find_map(|a| a.strip_prefix("trace=")).unwrap();
    for call in ["openat", "getdents64", "execve", "chdir", "fchdir", "unlinkat"] {
        assert!(traced.split(',').any(|c| c == call), "{call} is traced");
    }
    for lookup in ["%file", "newfstatat", "statx", "lstat", "access", "readlink"] {
        assert!(!traced.split(',').any(|c| c.trim_start_matches('?') == lookup), "{lookup} is not traced");
    }
    assert!(!Tracer { seccomp: false }.wrapper(Path::new("/t")).contains(&"--seccomp-bpf".to_owned()));
}
