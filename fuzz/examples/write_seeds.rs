//! Writes the generated seeds of `fuzz/seeds/` (requests signed with the fleet key,
//! webhook deliveries with their HMAC): `cargo run --example write_seeds` in `fuzz/`.
//! The other seeds are real files (the example fleet's, `nix-store --export` output,
//! a `hostctl bundle` header); docs/RELIABILITY.md says where each comes from.

use std::path::Path;

use hostctl_fuzz::request_signature::{Request, HOST, NOW};
use hostctl_fuzz::webhook::signature_header;

fn main() -> Result<(), String> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let key = hostctl_fuzz::fleet_key()?;
    let host = HOST.parse().map_err(|e| format!("{HOST}: {e}"))?;
    let requests: [(&str, &str, &str, &[u8]); 4] = [
        ("get-status", "GET", "/v1/status", b""),
        ("post-paths-missing", "POST", "/v1/paths/missing", br#"{"paths":["/nix/store/3xc0nknfzcmg7grd2n1crdfbaw5cwbyg-file.txt"]}"#),
        ("post-deployment", "POST", "/v1/deployments", br#"{"id":"d1","toplevel":"/nix/store/005ihswkbihw8ya65k6sy6h9mcfj76dd-etc","mode":"switch","confirm_timeout":"30s"}"#),
        ("get-deployment-query", "GET", "/v1/deployments/d1?wait=1", b""),
    ];
    for (i, (name, method, path, body)) in requests.into_iter().enumerate() {
        let nonce = format!("{:032x}", 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff_u128 + i as u128);
        let request = Request::signed(&key, &host, (method, path, body), NOW - 30 + 20 * i as u64, &nonce);
        write(&seeds.join("request_signature").join(format!("{name}.req")), &request.encode())?;
    }
    let deliveries: [(&str, &[u8]); 4] = [
        ("github-push-main", br#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"76ae82c7b1a177c8d03f9e96e0adf2466113728f","repository":{"full_name":"example/fleet"},"pusher":{"name":"alice"},"commits":[{"id":"76ae82c7b1a177c8d03f9e96e0adf2466113728f","message":"web1: nginx 1.26"}]}"#),
        ("gitea-push-other-branch", br#"{"ref":"refs/heads/dev","before":"0000000000000000000000000000000000000000","after":"1111111111111111111111111111111111111111","total_commits":1}"#),
        ("push-tag", br#"{"ref":"refs/tags/v1.0","after":"2222222222222222222222222222222222222222"}"#),
        ("not-a-push", br#"{"zen":"Keep it logically awesome.","hook_id":1}"#),
    ];
    for (name, body) in deliveries {
        let mut seed = signature_header(body)?.into_bytes();
        seed.push(b'\n');
        seed.extend_from_slice(body);
        write(&seeds.join("webhook").join(format!("{name}.hook")), &seed)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
