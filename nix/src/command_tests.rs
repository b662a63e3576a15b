//! Tests of the Nix argv builders (`command.rs`).

use super::*;

fn attr(s: &str) -> AttrName {
    s.parse().unwrap()
}

fn sp(s: &str) -> StorePath {
    s.parse().unwrap()
}

const DRV: &str = "/nix/store/mh3rz2qzm0lrcxk22g2b1kifak7q2nj9-x.drv";

#[test]
fn eval_toplevel_argv() {
    let flake = FlakeRef::new("/srv/fleet").unwrap();
    let cmd = NixCommand::eval_toplevel(&flake, &attr("web1"));
    assert_eq!(
        cmd.argv(),
        [
            "nix",
            "eval",
            "--json",
            "--no-update-lock-file",
            "/srv/fleet#nixosConfigurations.web1.config.system.build.toplevel",
            "--apply",
            TOPLEVEL_FN,
        ]
    );
}

#[test]
fn flake_metadata_argv() {
    let flake = FlakeRef::new("/srv/fleet").unwrap();
    assert_eq!(
        NixCommand::flake_metadata(&flake).argv(),
        ["nix", "flake", "metadata", "--json", "--no-update-lock-file", "/srv/fleet"]
    );
}

#[test]
fn build_argv_depends_on_version() {
    let drvs = [sp(DRV)];
    let old = NixCommand::build_outputs(NixVersion::new(2, 8, 0), &drvs);
    assert_eq!(old.argv(), ["nix", "build", "--json", "--no-link", "--keep-going", DRV]);
    let new = NixCommand::build_outputs(NixVersion::new(2, 26, 3), &drvs);
    assert_eq!(new.args().last().map(String::as_str), Some(format!("{DRV}^*").as_str()));
}

#[test]
fn builders_are_one_argv_element() {
    let drvs = [sp(DRV)];
    let builders = "ssh://builder@192.0.2.7 x86_64-linux - 4; @/etc/nix/machines";
    let cmd = NixCommand::build_outputs_on(NixVersion::new(2, 8, 0), &drvs, Some(&builders.parse().unwrap()));
    assert_eq!(cmd.argv(), ["nix", "build", "--json", "--no-link", "--keep-going", "--builders", builders, DRV]);
    let none = NixCommand::build_outputs_on(NixVersion::new(2, 8, 0), &drvs, None);
    assert_eq!(none, NixCommand::build_outputs(NixVersion::new(2, 8, 0), &drvs));
    let empty = NixCommand::build_outputs_on(NixVersion::new(2, 8, 0), &drvs, Some(&"".parse().unwrap()));
    assert_eq!(empty.args()[4..6], ["--builders", ""], "an empty value means: build locally only");
}

#[test]
fn copy_argv() {
    let p = sp(DRV);
    let url = "file:///tmp/my cache?compression=zstd&secret-key=/k%20s";
    assert_eq!(NixCommand::copy_to(url, std::slice::from_ref(&p)).argv(), ["nix", "copy", "--to", url, DRV]);
    let keys: Vec<PublicKey> =
        ["a-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=", "b:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg="]
            .iter()
            .map(|k| k.parse().unwrap())
            .collect();
    assert_eq!(
        NixCommand::copy_from("https://c.example.com", &[p], &keys).argv(),
        [
            "nix",
            "copy",
            "--from",
            "https://c.example.com",
            "--option",
            "trusted-public-keys",
            "a-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg= b:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=",
            "--option",
            "require-sigs",
            "true",
            DRV
        ]
    );
}

#[test]
fn show_derivation_argv_depends_on_version() {
    let drv = sp(DRV);
    assert_eq!(NixCommand::show_derivation(NixVersion::new(2, 8, 0), &drv).argv(), ["nix", "show-derivation", DRV]);
    assert_eq!(NixCommand::show_derivation(NixVersion::new(2, 26, 0), &drv).argv(), ["nix", "derivation", "show", DRV]);
}

#[test]
fn path_info_argv() {
    let cmd = NixCommand::path_info(&[sp(DRV)], true);
    assert_eq!(cmd.argv(), ["nix", "path-info", "--json", "--recursive", DRV]);
}

#[test]
fn flake_update_argv_depends_on_version() {
    let old = NixCommand::flake_update(NixVersion::new(2, 8, 0), "/tmp/x");
    assert_eq!(old.argv(), ["nix", "flake", "update", "/tmp/x"]);
    let new = NixCommand::flake_update(NixVersion::new(2, 26, 3), "/tmp/x");
    assert_eq!(new.argv(), ["nix", "flake", "update", "--flake", "/tmp/x"]);
}

#[test]
fn check_validity_uses_nix_store() {
    let cmd = NixCommand::check_validity(&[sp(DRV)]);
    assert_eq!(cmd.argv(), ["nix-store", "--check-validity", "--print-invalid", DRV]);
}

#[test]
fn export_argv() {
    let cmd = NixCommand::export(&[sp(DRV)]);
    assert_eq!(cmd.argv(), ["nix-store", "--export", DRV]);
}

#[test]
fn transfer_and_profile_argv() {
    let p = sp(DRV);
    assert_eq!(NixCommand::import().argv(), ["nix-store", "--import"]);
    assert_eq!(NixCommand::delete(std::slice::from_ref(&p)).argv(), ["nix-store", "--delete", DRV]);
    assert_eq!(NixCommand::add_to_store(std::path::Path::new("/tmp/x")).argv(), ["nix-store", "--add", "/tmp/x"]);
    assert_eq!(
        NixCommand::add_root(std::path::Path::new("/var/lib/a/root"), &p).argv(),
        ["nix-store", "--add-root", "/var/lib/a/root", "--indirect", "--realise", DRV]
    );
    let profile = Profile::new(std::path::Path::new("/nix/var/nix/profiles/system")).unwrap();
    assert_eq!(
        NixCommand::set_profile(&profile, &p).argv(),
        ["nix-env", "--profile", "/nix/var/nix/profiles/system", "--set", DRV]
    );
    assert_eq!(
        NixCommand::list_generations(&profile).argv(),
        ["nix-env", "--profile", "/nix/var/nix/profiles/system", "--list-generations"]
    );
}

#[test]
fn flake_refs_are_checked() {
    assert!(FlakeRef::new("/srv/fleet").is_ok());
    assert!(FlakeRef::new("git+file:///srv/fleet?ref=main").is_ok());
    assert!(FlakeRef::new("github:org/infra").is_ok());
    for bad in ["", "relative/dir", "/srv/fleet#x", "/srv/my fleet", "--impure"] {
        assert!(FlakeRef::new(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn git_file_flake_ref_at_a_commit() {
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let at_root = FlakeRef::git_file_at(Path::new("/srv/infra"), rev, Path::new("")).unwrap();
    assert_eq!(at_root.as_str(), format!("git+file:///srv/infra?rev={rev}"));
    let sub = FlakeRef::git_file_at(Path::new("/srv/infra/"), rev, Path::new("fleet/prod")).unwrap();
    assert_eq!(sub.as_str(), format!("git+file:///srv/infra?rev={rev}&dir=fleet/prod"));
    let cmd = NixCommand::eval_toplevel(&sub, &attr("web1"));
    assert_eq!(
        cmd.args()[3],
        format!("git+file:///srv/infra?rev={rev}&dir=fleet/prod#nixosConfigurations.web1.config.system.build.toplevel"),
        "the whole reference is one argv element"
    );
    assert_eq!(cmd.argv()[..4], ["nix", "eval", "--json", "--no-update-lock-file"]);

    let bad = |workdir: &str, rev: &str, dir: &str| {
        FlakeRef::git_file_at(Path::new(workdir), rev, Path::new(dir)).unwrap_err().reason
    };
    assert!(bad("/srv/infra", "HEAD", "").contains("full commit id"));
    assert!(bad("/srv/infra", &rev.to_uppercase(), "").contains("full commit id"));
    assert!(bad("/srv/infra", &rev[..12], "").contains("full commit id"));
    assert!(bad("relative", rev, "").contains("absolute"));
    for odd in ["/srv/my infra", "/srv/a?b", "/srv/a#b", "/srv/a&b", "/srv/100%", "/srv/a+b"] {
        assert!(bad(odd, rev, "").contains("may only contain"), "{odd}");
    }
    for odd in ["a&rev=0", "a=b", "x#y", "sp ace"] {
        assert!(bad("/srv/infra", rev, odd).contains("may only contain"), "{odd}");
    }
    assert!(bad("/srv/infra", rev, "../up").contains("without `.` or `..`"));
    let err = FlakeRef::git_file_at(Path::new("/srv/a b"), rev, Path::new("")).unwrap_err();
    assert!(err.to_string().starts_with("`git+file:///srv/a b?rev="), "{err}");
}

#[test]
fn render_quotes_only_what_needs_it() {
    let argv = vec!["nix".to_owned(), "eval".to_owned(), "t: t".to_owned(), "it's".to_owned()];
    assert_eq!(render_argv(&argv), r"nix eval 't: t' 'it'\''s'");
}
