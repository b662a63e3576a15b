//! Import streams (400 naming the header, the path or the byte offset) and bundles
//! (400/401 naming what is wrong, also through `hostctl-agent import FILE`): nothing is
//! registered in the host's store, nothing deployed.

use std::process::Command;

use hostctl_schemas::api::bundles::{header, Manifest};
use hostctl_schemas::signing::SecretKey;
use hostctl_tests::http::{now, Request};
use hostctl_tests::{binary, run};

use super::support::{
    compressed_export, dir_names, expect_api, fake_system, host_state, import_request, key_from_seed, local_path,
    replace_all, start, text, HOST,
};

#[test]
fn bad_import_streams_register_nothing_and_name_the_path() {
    let live = start();
    let addr = live.agent_addr(HOST);
    let key = live.secret_key();
    let a = local_path("bad-input-import-a", &[("a", "first\n", false)]);
    let b = local_path("bad-input-import-b", &[("b", "second\n", false)]);
    let stream = compressed_export(&[&a]);
    let plain = zstd::decode_all(stream.as_slice()).unwrap();
    // The stream with the path it carries spelled with a hash Nix never writes (`e` is
    // not in Nix's base32 alphabet).
    let bad_hash = "e".repeat(32);
    let renamed = replace_all(&plain, &a.as_bytes()["/nix/store/".len()..][..32], bad_hash.as_bytes());
    assert_ne!(renamed, plain);
    let renamed = zstd::encode_all(renamed.as_slice(), 3).unwrap();
    let both = format!("{a} {b}");
    let bad_path = format!("/nix/store/{bad_hash}-x");
    let cases: Vec<(&str, Request, Vec<String>)> = vec![
        (
            "no x-hostctl-paths",
            Request::new("POST", "/v1/paths/import", &stream).signed(&key, HOST),
            vec!["missing header x-hostctl-paths".into()],
        ),
        (
            "a bad hash in x-hostctl-paths",
            import_request(&stream, &bad_path, &key),
            vec![format!("x-hostctl-paths: "), bad_path.clone()],
        ),
        (
            "a bad name in x-hostctl-paths",
            import_request(&stream, &format!("{}-a$b", &a[..43]), &key),
            vec!["x-hostctl-paths: ".into(), "a$b".into()],
        ),
        (
            "garbage bytes",
            import_request(b"this is not zstd at all", &a, &key),
            vec!["the import body is not a valid zstd stream".into()],
        ),
        (
            "zstd of garbage",
            import_request(&zstd::encode_all(&b"garbage, not an export"[..], 3).unwrap(), &a, &key),
            vec!["the import stream is ".into(), "at byte".into()],
        ),
        (
            "truncated",
            import_request(&zstd::encode_all(&plain[..plain.len() / 2], 3).unwrap(), &a, &key),
            vec!["the import stream is truncated (it ends at byte".into()],
        ),
        (
            "another path than requested",
            import_request(&stream, &b, &key),
            vec![format!("the stream carries {a}, which x-hostctl-paths does not list")],
        ),
        (
            "fewer paths than requested",
            import_request(&stream, &both, &key),
            vec![format!("x-hostctl-paths lists {b}, which the stream does not carry")],
        ),
        (
            "a bad store path inside the stream",
            import_request(&renamed, &a, &key),
            vec!["the import stream is malformed at byte".into(), bad_hash.clone()],
        ),
    ];
    let before = host_state(live.host(HOST));
    for (what, request, expected) in cases {
        let r = request.send(&addr).unwrap();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        expect_api(&r, what, 400, &expected);
        let h = live.host(HOST);
        assert!(!h.is_valid(&a) && !h.is_valid(&b), "{what}: a path was registered");
        assert_eq!(host_state(h), before, "{what}: the host changed");
        assert!(dir_names(&h.root.join("state/agent/tmp")).is_empty(), "{what}: temporary files left");
    }
    // The same stream, as it should be, imports (and the host's state shows it).
    let r = import_request(&stream, &a, &key).send(&addr).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(live.host(HOST).is_valid(&a));
    assert_ne!(host_state(live.host(HOST)), before, "the store is part of the state compared");
}

/// A bundle file for `host` carrying `export`, signed by `key`.
fn bundle_bytes(host: &str, toplevel: &str, export: &[u8], key: &SecretKey) -> Vec<u8> {
    use sha2::Digest as _;
    let manifest = Manifest {
        host: host.parse().unwrap(),
        toplevel: toplevel.parse().unwrap(),
        rev: None,
        lock: None,
        mode: hostctl_schemas::inventory::Mode::Switch,
        created: now(),
        paths: vec![toplevel.parse().unwrap()],
        export_sha256: hex::encode(sha2::Sha256::digest(export)),
        export_len: export.len() as u64,
    };
    let mut bytes = header(&manifest, key).unwrap();
    bytes.extend_from_slice(export);
    bytes
}

#[test]
fn bad_bundles_are_refused_before_anything_is_imported() {
    let live = start();
    let addr = live.agent_addr(HOST);
    let key = live.secret_key();
    let system = fake_system("bundle");
    let export = compressed_export(&[&system]);
    let good = bundle_bytes(HOST, &system, &export, &key);
    let first_line = good.iter().position(|b| *b == b'\n').unwrap();
    let second_line = first_line + 1 + good[first_line + 1..].iter().position(|b| *b == b'\n').unwrap();
    let mut bad_signature_line = good[..=second_line].to_vec();
    bad_signature_line.extend_from_slice(b"no signature here\n");
    bad_signature_line.extend_from_slice(&export);
    // A manifest that is not JSON, correctly signed: refused for what it says, not its signature.
    let mut not_json = b"hostctl-bundle-v1\n{\"host\": web1}\n".to_vec();
    let signature = key.sign_bytes(&not_json);
    not_json.extend(format!("{}:{signature}\n", key.public().name).into_bytes());
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not a bundle", b"PK\x03\x04 a zip file\n".to_vec(), 400, "not a hostctl bundle"),
        ("empty", Vec::new(), 400, "the bundle's first line is missing"),
        ("truncated header", good[..first_line + 40].to_vec(), 400, "the bundle's manifest line is missing"),
        ("malformed signature line", bad_signature_line, 400, "the bundle's signature line is malformed"),
        ("malformed manifest", not_json, 400, "the bundle's manifest is malformed"),
        (
            "signed by an unknown key",
            bundle_bytes(HOST, &system, &export, &key_from_seed("intruder", 9)),
            401,
            "signed by `intruder`, which is not among the host's trusted keys",
        ),
        (
            "trusted name, other key",
            bundle_bytes(HOST, &system, &export, &key_from_seed(&key.public().name, 9)),
            401,
            "the bundle's signature does not verify",
        ),
        (
            "for another host",
            bundle_bytes("db1", &system, &export, &key),
            400,
            "the bundle is for host `db1`, this is `web1`",
        ),
        (
            "export truncated",
            good[..good.len() - export.len() / 2].to_vec(),
            400,
            "the file is truncated or was changed",
        ),
        (
            "export longer than signed",
            [good.as_slice(), b"more"].concat(),
            400,
            "the bundle's export is longer than its signed manifest says",
        ),
    ];
    let before = host_state(live.host(HOST));
    let dir = tempfile::Builder::new().prefix("hostctl-bad-bundles-").tempdir().unwrap();
    let config = live.host(HOST).root.join("etc/agent.yaml").display().to_string();
    for (i, (what, bytes, status, expected)) in cases.into_iter().enumerate() {
        let r = Request::new("POST", "/v1/bundles", &bytes).send(&addr).unwrap();
        expect_api(&r, what, status, &[expected]);
        // The same file through `hostctl-agent import FILE`: exit 2 naming the file.
        let file = dir.path().join(format!("case-{i}.bundle"));
        std::fs::write(&file, &bytes).unwrap();
        let out = run(Command::new(binary("hostctl-agent")).arg("import").arg(&file).args(["--config", &config]));
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let refused = format!("the agent refused {}: ", file.display());
        assert!(text(&out).contains(&refused) && text(&out).contains(expected), "{what}: {}", text(&out));
        assert!(!live.host(HOST).is_valid(&system), "{what}: the system was imported");
        assert_eq!(host_state(live.host(HOST)), before, "{what}: the host changed");
    }
    let out = run(Command::new(binary("hostctl-agent")).args(["import", "/nonexistent.bundle", "--config", &config]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot read /nonexistent.bundle"), "{}", text(&out));
    assert!(live.deployments(HOST).is_empty());
}
