//! `POST /v1/bundles` — authenticated by the bundle itself (not by request signature
//! headers): an airgapped host's deployment as one file, written by `hostctl bundle`,
//! carried over by hand and handed to the agent by `hostctl-agent import FILE`.
//!
//! File layout (the request body is the file as is):
//!
//! ```text
//! hostctl-bundle-v1\n
//! <manifest JSON, one line>\n
//! <key name>:<base64 ed25519 signature of the two lines above, newlines included>\n
//! <the zstd-compressed `nix-store --export` of `manifest.paths`, `export_len` bytes>
//! ```
//!
//! The signature covers the manifest, which names the export's SHA-256 and length, so one
//! check covers every byte. The agent accepts it when a trusted key signed it, it names
//! this host, and it is newer than every deployment the host has journaled (an old bundle
//! cannot roll a host back). The answer is the deployment at its end (`200`); refusals are
//! `400` (malformed, wrong host), `401` (signature), `409` (older than the host's newest
//! deployment, or another deployment open).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{HostName, LockId, StorePath};
use crate::inventory::Mode;
use crate::key::PublicKey;
use crate::signing::SecretKey;

/// Path of this endpoint.
pub const PATH: &str = "/v1/bundles";
/// The first line of every bundle.
pub const MAGIC: &str = "hostctl-bundle-v1";
/// Longest manifest line accepted (a closure of ~100 000 paths).
pub const MAX_MANIFEST: usize = 16 * 1024 * 1024;
/// Longest signature line (`name:` + base64 of 64 bytes).
pub const MAX_SIGNATURE: usize = 512;

/// What the bundle deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The host it is for; any other refuses it.
    pub host: HostName,
    pub toplevel: StorePath,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    pub mode: Mode,
    /// Unix time it was written; orders bundles against the host's deployments.
    pub created: u64,
    /// The toplevel's closure, references first: exactly the paths in the export.
    pub paths: Vec<StorePath>,
    /// Lowercase hex SHA-256 and length of the compressed export that follows.
    pub export_sha256: String,
    pub export_len: u64,
}

impl Manifest {
    /// The deployment id a bundle gets: the same bundle imported twice is one deployment.
    pub fn deployment_id(&self) -> String {
        format!("bundle-{}-{}", self.created, &self.export_sha256[..12.min(self.export_sha256.len())])
    }
}

/// The header (magic, manifest and signature lines) of a bundle of `manifest` signed by
/// `key`; the export follows it.
pub fn header(manifest: &Manifest, key: &SecretKey) -> Result<Vec<u8>, serde_json::Error> {
    let mut signed = format!("{MAGIC}\n").into_bytes();
    signed.extend(serde_json::to_vec(manifest)?);
    signed.push(b'\n');
    let signature = key.sign_bytes(&signed);
    signed.extend(format!("{}:{signature}\n", key.name).into_bytes());
    Ok(signed)
}

/// Why a bundle's header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a hostctl bundle (the first line is not `{MAGIC}`)")]
    NotABundle,
    #[error("the bundle's {0} line is missing or too long")]
    Truncated(&'static str),
    #[error("the bundle's manifest is malformed: {0}")]
    Manifest(String),
    #[error("the bundle's signature line is malformed")]
    SignatureSyntax,
    #[error("the bundle is signed by `{0}`, which is not among the host's trusted keys")]
    UnknownKey(String),
    #[error("the bundle's signature does not verify (the file was changed after it was signed)")]
    BadSignature,
}

/// Splits `bytes` (at least the whole header) into the manifest, checked against
/// `trusted`, and the offset where the export starts.
pub fn verify_header(bytes: &[u8], trusted: &[PublicKey]) -> Result<(Manifest, usize), BundleError> {
    let line = |from: usize, max: usize, what: &'static str| -> Result<usize, BundleError> {
        let end = bytes[from..].iter().take(max + 1).position(|b| *b == b'\n').ok_or(BundleError::Truncated(what))?;
        Ok(from + end)
    };
    let magic_end = line(0, MAGIC.len(), "first")?;
    if &bytes[..magic_end] != MAGIC.as_bytes() {
        return Err(BundleError::NotABundle);
    }
    let manifest_end = line(magic_end + 1, MAX_MANIFEST, "manifest")?;
    let signature_end = line(manifest_end + 1, MAX_SIGNATURE, "signature")?;
    let signed = &bytes[..=manifest_end];
    let signature =
        std::str::from_utf8(&bytes[manifest_end + 1..signature_end]).map_err(|_| BundleError::SignatureSyntax)?;
    let (name, sig) = signature.split_once(':').ok_or(BundleError::SignatureSyntax)?;
    let key = trusted.iter().find(|k| k.name == name).ok_or_else(|| BundleError::UnknownKey(name.to_owned()))?;
    let sig = STANDARD.decode(sig).map_err(|_| BundleError::SignatureSyntax)?;
    let sig = Signature::from_slice(&sig).map_err(|_| BundleError::SignatureSyntax)?;
    let verifying = VerifyingKey::from_bytes(&key.key).map_err(|_| BundleError::BadSignature)?;
    verifying.verify_strict(signed, &sig).map_err(|_| BundleError::BadSignature)?;
    let manifest: Manifest = serde_json::from_slice(&bytes[magic_end + 1..manifest_end])
        .map_err(|e| BundleError::Manifest(e.to_string()))?;
    Ok((manifest, signature_end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8, name: &str) -> SecretKey {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&[seed; 32]);
        pair[32..].copy_from_slice(&signing.verifying_key().to_bytes());
        format!("{name}:{}", STANDARD.encode(pair)).parse().unwrap()
    }

    fn manifest() -> Manifest {
        Manifest {
            host: "web1".parse().unwrap(),
            toplevel: format!("/nix/store/{}-nixos-system-web1", "a".repeat(32)).parse().unwrap(),
            rev: Some("c".repeat(40)),
            lock: None,
            mode: Mode::Switch,
            created: 1_800_000_000,
            paths: vec![format!("/nix/store/{}-nixos-system-web1", "a".repeat(32)).parse().unwrap()],
            export_sha256: "e".repeat(64),
            export_len: 3,
        }
    }

    #[test]
    fn a_signed_header_verifies_and_every_change_is_refused() {
        let k = key(1, "fleet-1");
        let trusted = [k.public()];
        let mut file = header(&manifest(), &k).unwrap();
        file.extend(b"zst");
        let (m, start) = verify_header(&file, &trusted).unwrap();
        assert_eq!((m, &file[start..]), (manifest(), &b"zst"[..]));
        assert_eq!(manifest().deployment_id(), "bundle-1800000000-eeeeeeeeeeee");

        let tampered = String::from_utf8(file.clone()).unwrap().replace("\"export_len\":3", "\"export_len\":4");
        assert_eq!(verify_header(tampered.as_bytes(), &trusted), Err(BundleError::BadSignature));
        let other = key(2, "fleet-1");
        assert_eq!(verify_header(&file, &[other.public()]), Err(BundleError::BadSignature));
        assert_eq!(verify_header(&file, &[key(3, "other").public()]), Err(BundleError::UnknownKey("fleet-1".into())));
        assert_eq!(verify_header(b"PK\x03\x04 a zip file\n", &trusted), Err(BundleError::NotABundle));
        assert_eq!(verify_header(&file[..40], &trusted), Err(BundleError::Truncated("manifest")));
    }
}
