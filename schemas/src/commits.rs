//! The commit-signature policy (`commits:` under `pull:` in agent.yaml, and at the top
//! of fleet.yaml and per host) and the typed outcome of checking a commit against it:
//! its signer, or why it was refused. The checking itself is `hostctl-commits`.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::yaml::YamlError;

/// Which commits may be deployed (DESIGN.md, "Commit signatures").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a commits mapping (`require_signature`, `allowed_signers`, ...)")]
pub struct CommitPolicy {
    /// Refuse a commit unless it, and every first-parent ancestor after `since`, is
    /// signed by a key of `allowed_signers` or `openpgp_keyring`. Off: commits are still
    /// checked when keys are configured, and their signer recorded, but nothing is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signature: bool,
    /// git's SSH `allowed_signers` file (`gpg.ssh.allowedSignersFile`): `principals
    /// [options] keytype base64-key`; options `namespaces="git"`, `valid-after`,
    /// `valid-before` (`YYYYMMDD[HHMM[SS]]`, read as UTC) are honoured, `cert-authority`
    /// is refused. In fleet.yaml relative to that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<PathBuf>,
    /// Armored OpenPGP public keys (`gpg --export --armor`) whose signatures are trusted;
    /// an expired or revoked key signs nothing. In fleet.yaml relative to that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp_keyring: Option<PathBuf>,
    /// A full commit id (40 or 64 hex digits): only commits after it are checked, so a
    /// repository adopts the policy without re-signing its history. It must be a
    /// first-parent ancestor of the deployed commit. Default: the whole first-parent history.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "deserialize_since")]
    #[schemars(regex(pattern = r"^([0-9a-f]{40}|[0-9a-f]{64})$"))]
    pub since: Option<String>,
}

impl CommitPolicy {
    /// Whether anything is checked at all.
    pub fn is_active(&self) -> bool {
        self.require_signature || self.allowed_signers.is_some() || self.openpgp_keyring.is_some()
    }

    /// The policy with its key files relative to `base` (the fleet file's directory).
    pub fn relative_to(&self, base: &Path) -> Self {
        let join = |p: &Option<PathBuf>| p.as_ref().map(|p| base.join(p));
        Self {
            allowed_signers: join(&self.allowed_signers),
            openpgp_keyring: join(&self.openpgp_keyring),
            ..self.clone()
        }
    }

    /// What one field cannot check alone: a required signature needs a key to trust.
    /// `key` is the policy's key path in `file` (e.g. `pull.commits`).
    pub fn check(&self, file: &Path, key: &str) -> Result<(), YamlError> {
        if self.require_signature && self.allowed_signers.is_none() && self.openpgp_keyring.is_none() {
            return Err(YamlError::invalid(
                file,
                key,
                "require_signature needs `allowed_signers` or `openpgp_keyring`: no key could sign an acceptable commit",
            ));
        }
        Ok(())
    }
}

/// Host `name`'s policy in `fleet` with its key path (for messages): its own `commits`,
/// else that of its tags in `tag_commits`, else the fleet's `commits`. Two of its tags
/// naming different policies is an error (`file: hosts.<name>: ...`).
pub fn host_policy<'a>(
    fleet: &'a crate::inventory::Fleet,
    name: &crate::ids::HostName,
    file: &Path,
) -> Result<Option<(&'a CommitPolicy, String)>, YamlError> {
    let own = fleet.hosts.get(name).and_then(|h| h.commits.as_ref());
    let fallback = fleet.commits.as_ref().map(|p| (p, "commits"));
    crate::inventory::host_setting(fleet, name, file, (own, "commits"), (&fleet.tag_commits, "tag_commits"), fallback)
}

/// A commit id as git prints it: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks inside the visitor, so an error is located at the value.
fn deserialize_since<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct SinceVisitor;

    impl serde::de::Visitor<'_> for SinceVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a full commit id")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if is_commit_id(s) {
                return Ok(Some(s.to_owned()));
            }
            Err(E::custom(format!(
                "`{s}` is not a full commit id (40 or 64 lowercase hex digits, `git rev-parse REV`): tags and branches move"
            )))
        }
    }

    d.deserialize_str(SinceVisitor)
}

/// How a commit was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureKind {
    /// An SSH signature (`gpg.format = ssh`), checked against `allowed_signers`.
    Ssh,
    /// An OpenPGP signature, checked against `openpgp_keyring`.
    Openpgp,
}

/// Who signed a deployed commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Signer {
    pub kind: SignatureKind,
    /// SSH: the principals of the `allowed_signers` line (comma-separated); OpenPGP: the
    /// key's primary user id.
    pub name: String,
    /// The key's fingerprint: `SHA256:...` for SSH, hex for OpenPGP.
    pub fingerprint: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.fingerprint)
    }
}

/// Why a commit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// The commit carries no signature.
    Unsigned,
    /// The signature does not match the commit (changed after signing) or cannot be read.
    BadSignature,
    /// Signed by a key in neither `allowed_signers` nor `openpgp_keyring` (or not for
    /// the `git` namespace).
    UnknownSigner,
    /// The key expired, or the commit lies after its `valid-before`.
    Expired,
    /// The commit lies before the key's `valid-after` (or the key's creation).
    NotYetValid,
    /// The OpenPGP key (or its signing subkey) is revoked.
    Revoked,
    /// An earlier commit on the first-parent chain since `since` fails the policy.
    ChainBroken,
    /// `since` is not a first-parent ancestor of the commit.
    SinceNotFound,
    /// The working tree has uncommitted changes (push mode, signature required).
    DirtyTree,
    /// Newer than this program.
    #[serde(other)]
    Other,
}

impl RefusalReason {
    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad-signature",
            Self::UnknownSigner => "unknown-signer",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::Revoked => "revoked",
            Self::ChainBroken => "chain-broken",
            Self::SinceNotFound => "since-not-found",
            Self::DirtyTree => "dirty-tree",
            Self::Other => "other",
        }
    }
}

/// A commit the policy refused: the reason, the commit it is about (for `chain-broken`
/// the ancestor that failed) and a sentence naming both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommitRefusal {
    pub reason: RefusalReason,
    pub commit: String,
    pub message: String,
}

impl fmt::Display for CommitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A deployment made although its commit failed the policy (`hostctl apply
/// --allow-unsigned`): who asked and what the policy said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnsignedOverride {
    /// The name of the trusted key that signed the deployment request.
    pub key: String,
    /// What the policy said of the commit, as the controller found it.
    pub refusal: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_must_be_a_full_commit_id() {
        let ok: CommitPolicy = serde_yaml::from_str(&format!("since: {}", "a".repeat(40))).unwrap();
        assert_eq!(ok.since.as_deref().map(str::len), Some(40));
        for bad in ["main", "v1.0", "abc123", &"A".repeat(40), &"a".repeat(41)] {
            let err = serde_yaml::from_str::<CommitPolicy>(&format!("since: \"{bad}\"")).unwrap_err();
            assert!(err.to_string().contains("not a full commit id"), "{bad}: {err}");
        }
    }

    #[test]
    fn required_signature_needs_keys() {
        let policy = CommitPolicy { require_signature: true, ..CommitPolicy::default() };
        let err = policy.check(Path::new("agent.yaml"), "pull.commits").unwrap_err();
        assert!(err.to_string().starts_with("agent.yaml: pull.commits: require_signature needs"), "{err}");
        let keyed = CommitPolicy { allowed_signers: Some("s".into()), ..policy };
        assert!(keyed.check(Path::new("agent.yaml"), "pull.commits").is_ok());
        assert_eq!(keyed.relative_to(Path::new("/etc")).allowed_signers, Some(PathBuf::from("/etc/s")));
    }

    #[test]
    fn records_and_requests_without_signature_fields_still_load() {
        use crate::api::deployments::{CommitSignature, Deployment, DeploymentRequest, EndReason};
        let request = r#"{"id":"d1","toplevel":"/nix/store/22222222222222222222222222222222-nixos-system-web","rev":null,"lock":null,"mode":"switch","confirm_timeout":"30s"}"#;
        let request: DeploymentRequest = serde_json::from_str(request).unwrap();
        assert_eq!(request.commit_signature, None);
        assert!(!serde_json::to_string(&request).unwrap().contains("commit_signature"), "left out when unset");
        let old = Deployment::queued(&request, None, 1);
        let mut json = serde_json::to_value(&old).unwrap();
        for field in ["signer", "unsigned_override", "commit_refusal", "end_reason"] {
            json.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(serde_json::from_value::<Deployment>(json).unwrap(), old);
        let signer =
            Signer { kind: SignatureKind::Ssh, name: "alice@example.com".into(), fingerprint: "SHA256:x".into() };
        let signed = DeploymentRequest { commit_signature: Some(CommitSignature::Signed(signer.clone())), ..request };
        assert_eq!(Deployment::queued(&signed, None, 1).signer, Some(signer));
        assert_eq!(serde_json::from_str::<EndReason>("\"commit-refused\"").unwrap(), EndReason::CommitRefused);
    }

    #[test]
    fn a_hosts_policy_is_its_own_then_its_tags_then_the_fleets() {
        let yaml = "commits: {allowed_signers: fleet}\ntag_commits:\n  db: {allowed_signers: db}\n  eu: {allowed_signers: eu}\n\
                    hosts:\n  web1: {address: a}\n  db1: {address: b, tags: [db]}\n  db2: {address: c, tags: [db], commits: {allowed_signers: own}}\n\
                    \x20 db3: {address: d, tags: [db, eu]}\n";
        let fleet = crate::inventory::parse_fleet(yaml, Path::new("fleet.yaml")).unwrap();
        let of = |h: &str| {
            host_policy(&fleet, &h.parse().unwrap(), Path::new("fleet.yaml"))
                .map(|p| p.map(|(p, key)| (p.allowed_signers.clone().unwrap(), key)))
        };
        assert_eq!(of("web1").unwrap(), Some((PathBuf::from("fleet"), "commits".to_owned())));
        assert_eq!(of("db1").unwrap(), Some((PathBuf::from("db"), "tag_commits.db".to_owned())));
        assert_eq!(of("db2").unwrap(), Some((PathBuf::from("own"), "hosts.db2.commits".to_owned())));
        let err = of("db3").unwrap_err().to_string();
        assert!(err.starts_with("fleet.yaml: hosts.db3: its tags `db` and `eu` have different"), "{err}");
    }

    #[test]
    fn reasons_serialize_as_named() {
        for r in [RefusalReason::Unsigned, RefusalReason::ChainBroken, RefusalReason::NotYetValid] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        assert_eq!(serde_json::from_str::<RefusalReason>("\"new-thing\"").unwrap(), RefusalReason::Other);
    }
}
