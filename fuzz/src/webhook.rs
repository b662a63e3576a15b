//! Target `webhook`: `POST /v1/hooks/git`'s own authentication and payload reading
//! (`agent/src/pull/webhook.rs`: `HookAuth::verify` of `X-Hub-Signature-256`, then
//! `push_for_branch`). Input: the header value on the first line, the body after it.
//!
//! Properties: a header is accepted only if it carries exactly the HMAC-SHA256 of the
//! body under the secret; the right header is accepted and stops being so when any
//! one byte of the body changes; a missing header is refused; a payload triggers a
//! fetch only when its `ref` is the tracked branch, and a refusal says why.

use hmac::{Hmac, Mac};
use hostctl_agent::pull::webhook::{push_for_branch, HookAuth};
use sha2::{Digest, Sha256};

use super::{ensure, split_lines, Verdict};

/// The webhook secret of this target (seeds are signed with it).
pub const SECRET: &[u8] = b"hostctl-fuzz-webhook-secret";
/// The tracked branch.
pub const BRANCH: &str = "main";

/// Whether the delivery is authentic: its first line is the signature of the body (what
/// the payload then asks for varies: push to the branch, another ref, not a push).
pub fn accepts(data: &[u8]) -> bool {
    let Some((fields, body)) = split_lines(data, 1) else { return false };
    HookAuth::new(SECRET.to_vec()).verify(std::str::from_utf8(fields[0]).ok(), body).is_ok()
}

/// `sha256=<hex>` of `body`, as a forge sends it.
pub fn signature_header(body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).map_err(|e| e.to_string())?;
    mac.update(body);
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

pub fn check(data: &[u8]) -> Verdict {
    let auth = HookAuth::new(SECRET.to_vec());
    let (header, body) = match split_lines(data, 1) {
        Some((fields, body)) => (Some(fields[0]), body),
        None => (None, data),
    };
    let right = signature_header(body)?;
    if let Some(header) = header.and_then(|h| std::str::from_utf8(h).ok()) {
        accepted_only_if_right(&auth, header, body, &right)?;
    }
    ensure(auth.verify(None, body).is_err(), || "a missing signature header is accepted".to_owned())?;
    ensure(auth.verify(Some(&right), body).is_ok(), || format!("the right signature {right} is refused"))?;
    if !body.is_empty() {
        let digest = Sha256::digest(data);
        let at = usize::from(u16::from_le_bytes([digest[0], digest[1]])) % body.len();
        let mut changed = body.to_vec();
        changed[at] ^= digest[2] | 1;
        ensure(auth.verify(Some(&right), &changed).is_err(), || format!("body byte {at} changed is still accepted"))?;
    }
    payload(body)
}

/// Acceptance means the header's hex decodes to the MAC (hex case and surrounding
/// whitespace do not matter).
fn accepted_only_if_right(auth: &HookAuth, header: &str, body: &[u8], right: &str) -> Verdict {
    let Ok(()) = auth.verify(Some(header), body) else { return Ok(()) };
    let given = header.trim().strip_prefix("sha256=").and_then(|h| hex::decode(h).ok());
    let wanted = right.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok());
    ensure(given.is_some() && given == wanted, || format!("header `{header}` is accepted for a body it did not sign"))
}

fn payload(body: &[u8]) -> Verdict {
    let tracked = format!("refs/heads/{BRANCH}");
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let git_ref = value.as_ref().and_then(|v| v.get("ref")).and_then(|r| r.as_str());
    match push_for_branch(body, BRANCH) {
        Err(e) => ensure(e.starts_with("not a push payload: "), || format!("400 message without its subject: {e}")),
        Ok(None) => ensure(git_ref == Some(tracked.as_str()), || format!("fetch triggered by ref {git_ref:?}")),
        Ok(Some(reason)) => {
            ensure(git_ref != Some(tracked.as_str()), || format!("the tracked branch is ignored: {reason}"))?;
            ensure(reason.ends_with(&format!("is not the tracked branch `{BRANCH}`")), || format!("reason: {reason}"))
        }
    }
}
