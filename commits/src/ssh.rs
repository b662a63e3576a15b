//! SSH commit signatures (`gpg.format = ssh`): the SSHSIG in the commit's `gpgsig`
//! header, checked by `ssh-key` for the `git` namespace against `allowed_signers`.

use hostctl_schemas::commits::{RefusalReason, SignatureKind, Signer};
use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::allowed_signers::{AllowedSigner, AllowedSigners};
use crate::Failure;

/// The namespace git signs commits in.
const NAMESPACE: &str = "git";

/// The signer of `payload` (the commit without its signature), if `armored` is a good
/// SSH signature by a key `signers` allows at `commit_time` and still allows `now`.
pub(crate) fn verify(
    signers: Option<&AllowedSigners>,
    armored: &[u8],
    payload: &[u8],
    commit_time: i64,
    now: i64,
) -> Result<Signer, Failure> {
    let sig = SshSig::from_pem(armored)
        .map_err(|e| Failure::new(RefusalReason::BadSignature, format!("cannot read its SSH signature: {e}")))?;
    let key = PublicKey::from(sig.public_key().clone());
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let Some(signers) = signers else {
        return Err(Failure::new(
            RefusalReason::UnknownSigner,
            format!("it is signed with the SSH key {fingerprint}, but no `allowed_signers` file is configured"),
        ));
    };
    let lines: Vec<&AllowedSigner> = signers.entries.iter().filter(|e| e.key.key_data() == key.key_data()).collect();
    if lines.is_empty() {
        return Err(Failure::new(
            RefusalReason::UnknownSigner,
            format!("its SSH key {fingerprint} is not in {}", signers.file.display()),
        ));
    }
    let lines: Vec<&AllowedSigner> = lines.into_iter().filter(|e| e.allows_namespace(NAMESPACE)).collect();
    if lines.is_empty() {
        return Err(Failure::new(
            RefusalReason::UnknownSigner,
            format!(
                "its SSH key {fingerprint} is allowed in {} only for other namespaces than `git`",
                signers.file.display()
            ),
        ));
    }
    key.verify(NAMESPACE, payload, &sig).map_err(|e| {
        Failure::new(
            RefusalReason::BadSignature,
            format!("its SSH signature by {fingerprint} does not match the commit ({e}): changed after signing?"),
        )
    })?;
    let valid = |e: &&&AllowedSigner| {
        e.valid_after.is_none_or(|after| commit_time >= after)
            && e.valid_before.is_none_or(|before| commit_time < before && now < before)
    };
    match lines.iter().find(valid) {
        Some(line) => Ok(Signer { kind: SignatureKind::Ssh, name: line.principals.clone(), fingerprint }),
        None => Err(out_of_window(lines[0], &fingerprint, commit_time, &signers.file)),
    }
}

/// Why no line's `valid-after`/`valid-before` window holds the commit (the first line's).
fn out_of_window(line: &AllowedSigner, fingerprint: &str, commit_time: i64, file: &std::path::Path) -> Failure {
    let place = format!("{}:{}", file.display(), line.line);
    match line.valid_after {
        Some(after) if commit_time < after => Failure::new(
            RefusalReason::NotYetValid,
            format!("its SSH key {fingerprint} ({}) is valid only after {} ({place})", line.principals, utc(after)),
        ),
        _ => Failure::new(
            RefusalReason::Expired,
            format!(
                "its SSH key {fingerprint} ({}) is valid only before {} ({place})",
                line.principals,
                line.valid_before.map_or_else(String::new, utc)
            ),
        ),
    }
}

/// Unix seconds as ISO 8601 UTC.
pub(crate) fn utc(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map_or_else(|| seconds.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}
