//! A forge's push webhook (served as `POST /v1/hooks/git` by `crate::http::hooks`),
//! authenticated with the agent's webhook secret, not by a controller signature, in each
//! forge's way ([`Proof`]: GitHub's `X-Hub-Signature-256`, Gitea's and Forgejo's hex
//! HMAC-SHA256 of the raw body, GitLab's `X-Gitlab-Token`): [`HookAuth::receive`] checks a
//! delivery and says whether to fetch. A verified push to the tracked branch only wakes
//! the pull task, which fetches by itself: the payload's revision is never trusted.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How many delivery ids are remembered. A replayed delivery can at most trigger one more
/// fetch (which finds nothing new), so forgetting the oldest when full is harmless,
/// unlike the controller nonce cache, which must refuse instead.
const DELIVERY_MEMORY: usize = 4096;

/// The secret and the delivery ids seen.
#[derive(Debug)]
pub struct HookAuth {
    secret: Vec<u8>,
    seen: Mutex<Deliveries>,
}

#[derive(Debug, Default)]
struct Deliveries {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl HookAuth {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret, seen: Mutex::new(Deliveries::default()) }
    }

    /// Reads the secret file; a trailing newline (as editors and `echo` leave) is not
    /// part of the secret.
    /// [`HookAuth::from_file`] with the error as `serve` and `check-config` report it.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        Self::from_file(path).map_err(|e| format!("pull.webhook_secret_file: cannot read {}: {e}", path.display()))
    }

    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        let end = text.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
        Ok(Self::new(text[..end].to_vec()))
    }

    /// Checks `X-Hub-Signature-256: sha256=<hex>` against the body, in constant time.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
        let header = header.ok_or("missing X-Hub-Signature-256 header")?;
        let hex_sig = header.trim().strip_prefix("sha256=").ok_or("X-Hub-Signature-256 must start with `sha256=`")?;
        let signature = hex::decode(hex_sig).map_err(|_| "X-Hub-Signature-256 is not hex")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| "unusable webhook secret")?;
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).map_err(|_| "bad webhook signature")
    }

    /// Checks a hex HMAC-SHA256 of the body without prefix (`X-Gitea-Signature`,
    /// `X-Forgejo-Signature`), in constant time.
    fn verify_hex(&self, hex_sig: &str, body: &[u8]) -> Result<(), &'static str> {
        let signature = hex::decode(hex_sig.trim()).map_err(|_| "X-Gitea-Signature is not hex")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| "unusable webhook secret")?;
        mac.update(body);
        mac.verify_slice(&signature).map_err(|_| "bad webhook signature")
    }

    /// Checks GitLab's `X-Gitlab-Token` (the secret itself) in constant time: both sides
    /// are hashed with a key of their own first, so the comparison takes as long whatever
    /// the token's length or its first differing byte.
    fn verify_token(&self, token: &str) -> Result<(), &'static str> {
        let digest = |bytes: &[u8]| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(b"hostctl gitlab token").map_err(|_| "unusable webhook secret")?;
            mac.update(bytes);
            Ok::<_, &'static str>(mac)
        };
        let expected = digest(&self.secret)?.finalize().into_bytes();
        digest(token.as_bytes())?.verify_slice(&expected).map_err(|_| "bad X-Gitlab-Token")
    }

    /// Checks a delivery's proof of the secret, whichever forge sent it.
    pub fn verify_proof(&self, proof: Option<Proof<'_>>, body: &[u8]) -> Result<(), &'static str> {
        match proof {
            None => Err("missing X-Hub-Signature-256 header (or X-Gitea-Signature, X-Forgejo-Signature, \
                         X-Gitlab-Token)"),
            Some(Proof::HubSignature(header)) => self.verify(Some(header), body),
            Some(Proof::HexSignature(hex_sig)) => self.verify_hex(hex_sig, body),
            Some(Proof::Token(token)) => self.verify_token(token),
        }
    }

    /// Remembers a delivery id; `false` if it was seen before.
    fn first_delivery(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.set.contains(id) {
            return false;
        }
        if seen.order.len() >= DELIVERY_MEMORY {
            if let Some(oldest) = seen.order.pop_front() {
                seen.set.remove(&oldest);
            }
        }
        seen.order.push_back(id.to_owned());
        seen.set.insert(id.to_owned());
        true
    }
}

/// How a delivery proves it knows the webhook secret, by forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof<'a> {
    /// GitHub (Gitea and Forgejo send it too): `X-Hub-Signature-256: sha256=<hex HMAC>`.
    HubSignature(&'a str),
    /// Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature: <hex HMAC>`.
    HexSignature(&'a str),
    /// GitLab: `X-Gitlab-Token: <the secret>`.
    Token(&'a str),
}

/// Why a delivery's event (`X-GitHub-Event`, `X-Gitea-Event`, `X-Forgejo-Event`,
/// `X-Gitlab-Event`) is answered without a fetch; `None` for a push, and without an
/// event header the body is taken as a push.
fn ignored_event(event: Option<&str>) -> Option<String> {
    match event?.trim() {
        "push" | "Push Hook" => None,
        // GitHub's first delivery to a new hook: answered 200 so the forge shows it as
        // working; nothing to fetch.
        "ping" => Some("ping: the webhook works; pushes will trigger a fetch".into()),
        other => Some(format!("event `{other}` is not a push")),
    }
}

#[derive(serde::Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
}

/// What a verified payload asks for: `Ok(None)` to fetch `branch`, `Ok(Some(reason))` when
/// it pushed another ref, `Err` (a 400 message) when it is not a push payload. Public for
/// the fuzz target and its regression test.
pub fn push_for_branch(body: &[u8], branch: &str) -> Result<Option<String>, String> {
    let not_push = |e: serde_json::Error| format!("not a push payload: {e}");
    // Through `Value` first: a struct read straight from the bytes would take a JSON array
    // as its fields in order and skip unread strings unchecked (invalid UTF-8).
    let value: serde_json::Value = serde_json::from_slice(body).map_err(not_push)?;
    if !value.is_object() {
        return Err("not a push payload: expected a JSON object with `ref`".to_owned());
    }
    let payload: PushPayload = serde_json::from_value(value).map_err(not_push)?;
    if payload.git_ref != format!("refs/heads/{branch}") {
        return Ok(Some(format!("`{}` is not the tracked branch `{branch}`", payload.git_ref)));
    }
    Ok(None)
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The signature is missing or wrong.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Signed, but not a push payload.
    #[error("{0}")]
    NotAPush(String),
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A new push to the tracked branch: fetch now.
    Fetch,
    /// Nothing to do (a replayed delivery, another branch); the reason is for the forge.
    Ignored(String),
}

impl HookAuth {
    /// Checks a delivery: the proof of the secret first, then the event and the payload;
    /// a delivery id (`delivery`) is remembered only once the proof verified, so strangers
    /// cannot make the agent ignore a real delivery. A `ping` or another event than a push
    /// is answered without a fetch.
    pub fn receive(
        &self,
        proof: Option<Proof<'_>>,
        event: Option<&str>,
        delivery: Option<&str>,
        body: &[u8],
        branch: &str,
    ) -> Result<Delivery, HookError> {
        self.verify_proof(proof, body).map_err(HookError::Unauthorized)?;
        if let Some(reason) = ignored_event(event) {
            return Ok(Delivery::Ignored(reason));
        }
        let other_ref = push_for_branch(body, branch).map_err(HookError::NotAPush)?;
        if let Some(id) = delivery {
            if !self.first_delivery(id) {
                return Ok(Delivery::Ignored(format!("delivery `{id}` was already received")));
            }
        }
        Ok(other_ref.map_or(Delivery::Fetch, Delivery::Ignored))
    }
}
