//! Target `bundle_header`: `schemas::api::bundles::verify_header`, which the agent runs on
//! the first bytes of `POST /v1/bundles` before anything reaches the disk.
//!
//! Properties: (1) the input as a bundle is accepted only with the fleet key's own
//! signature over its first two lines (nothing else), the export starting right after
//! the signature line, and the accepted manifest serializes and reads back unchanged and
//! names its deployment; (2) the input's first line as the manifest of a header signed by
//! the fleet key (as `hostctl bundle` writes it) is accepted exactly when it is a valid
//! manifest, and every copy with one header byte changed is refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hostctl_schemas::api::bundles::{verify_header, Manifest, MAGIC, MAX_MANIFEST};
use hostctl_schemas::signing::SecretKey;
use sha2::{Digest, Sha256};

use super::{ensure, fleet_key, Verdict};

/// Whether the header verifies against the fleet key.
pub fn accepts(data: &[u8]) -> bool {
    fleet_key().is_ok_and(|key| verify_header(data, &[key.public()]).is_ok())
}

pub fn check(data: &[u8]) -> Verdict {
    let key = fleet_key()?;
    as_given(&key, data)?;
    let manifest = data.split(|b| *b == b'\n').next().unwrap_or_default();
    signed_here(&key, manifest, data)
}

/// (1)
fn as_given(key: &SecretKey, data: &[u8]) -> Verdict {
    let Ok((manifest, start)) = verify_header(data, &[key.public()]) else { return Ok(()) };
    let magic_end = MAGIC.len();
    let manifest_end = start_of_line_after(data, magic_end + 1).ok_or("accepted without a manifest line")?;
    let signed = &data[..manifest_end];
    let own = format!("{}:{}\n", key.name, key.sign_bytes(signed));
    ensure(data.get(manifest_end..start) == Some(own.as_bytes()), || {
        format!(
            "accepted a signature line the key did not write: {:?}",
            String::from_utf8_lossy(&data[manifest_end..start.min(data.len())])
        )
    })?;
    accepted_manifest(&manifest)
}

/// The offset after the `\n` that ends the line starting at `from`.
fn start_of_line_after(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.iter().position(|b| *b == b'\n').map(|i| from + i + 1)
}

fn accepted_manifest(manifest: &Manifest) -> Verdict {
    let json = serde_json::to_vec(manifest).map_err(|e| format!("accepted manifest does not serialize: {e}"))?;
    let back: Manifest = serde_json::from_slice(&json).map_err(|e| format!("manifest JSON does not read back: {e}"))?;
    ensure(&back == manifest, || format!("manifest round trip changed {manifest:?}"))?;
    let id = manifest.deployment_id();
    ensure(id.starts_with("bundle-"), || format!("deployment id {id}"))
}

/// (2)
fn signed_here(key: &SecretKey, manifest: &[u8], data: &[u8]) -> Verdict {
    let mut file = format!("{MAGIC}\n").into_bytes();
    file.extend_from_slice(manifest);
    file.push(b'\n');
    let signature = format!("{}:{}\n", key.name, key.sign_bytes(&file));
    file.extend_from_slice(signature.as_bytes());
    let header_len = file.len();
    file.extend_from_slice(b"(the export)");
    let valid = serde_json::from_slice::<Manifest>(manifest).ok().filter(|_| manifest.len() <= MAX_MANIFEST);
    let verdict = verify_header(&file, &[key.public()]);
    match (&valid, &verdict) {
        (Some(m), Ok((got, start))) => {
            ensure(got == m && *start == header_len, || format!("signed header read as {got:?} at {start}"))?;
            accepted_manifest(got)?;
        }
        (None, Err(_)) => {}
        _ => {
            return Err(format!(
                "manifest {:?}: valid {valid:?}, verified {verdict:?}",
                String::from_utf8_lossy(manifest)
            ))
        }
    }
    let digest = Sha256::digest(data);
    for step in 0..8usize {
        let at = (usize::from(u16::from_le_bytes([digest[2 * step], digest[2 * step + 1]])) + step) % header_len;
        let mut changed = file.clone();
        changed[at] ^= digest[16 + step] | 1;
        if let Ok((got, _)) = verify_header(&changed, &[key.public()]) {
            return Err(format!("header byte {at} changed is accepted: {got:?}"));
        }
    }
    let forged = format!("{}:{}\n", key.name, STANDARD.encode([digest.as_slice(), digest.as_slice()].concat()));
    let mut changed = file[..header_len - signature.len()].to_vec();
    changed.extend_from_slice(forged.as_bytes());
    ensure(verify_header(&changed, &[key.public()]).is_err(), || "a random signature is accepted".to_owned())
}
