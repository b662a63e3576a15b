//! Request authentication: every API route goes through [`signed`], which checks the
//! ed25519 signature against the configured trusted keys and the clock
//! ([`hostctl_schemas::signing::verify_request`]), refuses replayed nonces ([`NonceCache`]),
//! and checks the body against its signed SHA-256. Every failure is a 401.
//!
//! Invariant: a handler only ever runs for a request signed by a trusted key whose nonce
//! was new; buffered bodies are checked before the handler sees them, streamed bodies
//! (imports) by the handler through [`Authenticated::check_body`] before any use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hostctl_schemas::agent_config::PublicKey;
use hostctl_schemas::api::headers;
use hostctl_schemas::signing::{verify_request, AuthError, SignatureHeaders, TIMESTAMP_WINDOW_SECS};

use super::body::{check_declared_length, read_limited};
use super::error::ApiFailure;

/// How many nonces the agent remembers at once: at most this many signed requests per
/// timestamp window (2 × 120 s). Beyond it requests are refused rather than a nonce being
/// forgotten early, which would reopen the replay window.
pub const NONCE_CAPACITY: usize = 100_000;

/// How often expired nonces are swept out even when the cache is not full, in seconds.
const SWEEP_INTERVAL_SECS: u64 = 30;

/// Nonces seen within the timestamp window, each remembered until a request carrying it
/// would be stale anyway. The table keeps the size of the busiest window (at most
/// [`NONCE_CAPACITY`] entries, ~3 MiB): handing it back after a burst only fragments the
/// heap when the next burst grows it again.
#[derive(Debug)]
pub struct NonceCache {
    /// Nonce ([`nonce_key`]) -> last Unix second at which a request with it could still be
    /// accepted.
    seen: HashMap<[u8; 16], u64>,
    capacity: usize,
    last_sweep: u64,
}

/// What the cache keeps of a nonce: the first 128 bits of its SHA-256, 16 bytes inline
/// (an entry of 24 bytes instead of 32 plus a heap string: under load the cache holds
/// every nonce of the last two minutes, and 10,000 requests grew a string map by ~1 MiB,
/// 8% of the agent). The same nonce always gives the same key, so a replay is always
/// caught; two different nonces sharing a key (chance ~2^-128 per pair) would only refuse
/// the second request.
fn nonce_key(nonce: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(nonce.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("nonce was already used (replayed request)")]
    Replayed,
    #[error("too many signed requests within the timestamp window ({0} nonces remembered); retry later")]
    Full(usize),
}

impl NonceCache {
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashMap::new(), capacity, last_sweep: 0 }
    }

    /// Records `nonce` of a request signed at `timestamp`, or refuses it.
    pub fn check_and_remember(&mut self, nonce: &str, timestamp: u64, now: u64) -> Result<(), NonceError> {
        let key = nonce_key(nonce);
        if self.seen.get(&key).is_some_and(|until| *until >= now) {
            return Err(NonceError::Replayed);
        }
        if self.seen.len() >= self.capacity || now.saturating_sub(self.last_sweep) >= SWEEP_INTERVAL_SECS {
            self.seen.retain(|_, until| *until >= now);
            self.last_sweep = now;
        }
        if self.seen.len() >= self.capacity {
            return Err(NonceError::Full(self.capacity));
        }
        self.seen.insert(key, timestamp.saturating_add(TIMESTAMP_WINDOW_SECS));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Why a request was not authenticated (always a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("{0}")]
    Signature(#[from] AuthError),
    #[error("{0}")]
    Nonce(#[from] NonceError),
}

impl From<AuthFailure> for ApiFailure {
    fn from(e: AuthFailure) -> Self {
        ApiFailure::unauthorized(e.to_string())
    }
}

/// What a handler learns about an authenticated request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Name of the trusted key that signed.
    pub key: String,
    /// The signed SHA-256 of the body.
    pub content_sha256: String,
}

impl Authenticated {
    /// Checks a body's SHA-256 (hex) against the signed one.
    pub fn check_body(&self, sha256: &str) -> Result<(), ApiFailure> {
        if sha256.eq_ignore_ascii_case(&self.content_sha256) {
            Ok(())
        } else {
            Err(AuthFailure::Signature(AuthError::BodyMismatch).into())
        }
    }
}

/// The trusted keys and the nonces seen: shared by every route.
#[derive(Debug)]
pub struct Authenticator {
    trusted: Vec<PublicKey>,
    nonces: Mutex<NonceCache>,
}

impl Authenticator {
    pub fn new(trusted: Vec<PublicKey>) -> Self {
        Self::with_capacity(trusted, NONCE_CAPACITY)
    }

    pub fn with_capacity(trusted: Vec<PublicKey>, capacity: usize) -> Self {
        Self { trusted, nonces: Mutex::new(NonceCache::new(capacity)) }
    }

    /// Checks the signature headers of a request to `path` (path and query as sent). The
    /// nonce is remembered only once the signature verifies, so unsigned traffic cannot
    /// fill the cache.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        now: u64,
    ) -> Result<Authenticated, AuthFailure> {
        let signature = signature_headers(headers)?;
        verify_request(&self.trusted, &signature, method, path, now)?;
        let timestamp: u64 = signature.timestamp.parse().map_err(|_| AuthError::Malformed(headers::TIMESTAMP))?;
        // A poisoned lock only means another request panicked mid-insert; the map is fine.
        let mut nonces = self.nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        nonces.check_and_remember(&signature.nonce, timestamp, now)?;
        Ok(Authenticated { key: signature.key, content_sha256: signature.content_sha256 })
    }
}

/// Reads the five signature headers (names in [`headers`]).
fn signature_headers(map: &HeaderMap) -> Result<SignatureHeaders, AuthError> {
    let get = |name: &'static str| -> Result<String, AuthError> {
        let value = map.get(name).ok_or(AuthError::MissingHeader(name))?;
        value.to_str().map(str::to_owned).map_err(|_| AuthError::Malformed(name))
    };
    Ok(SignatureHeaders {
        key: get(headers::KEY)?,
        timestamp: get(headers::TIMESTAMP)?,
        nonce: get(headers::NONCE)?,
        content_sha256: get(headers::CONTENT_SHA256)?,
        signature: get(headers::SIGNATURE)?,
    })
}

/// How a route's body is handled once the request is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPolicy {
    /// Read into memory up to this many bytes (413 beyond) and checked against the hash
    /// before the handler runs.
    Buffered(u64),
    /// Left to the handler, which streams it and must call [`Authenticated::check_body`].
    Streamed,
}

/// The state of [`signed`] for one route.
#[derive(Debug, Clone)]
pub struct SignedRoute {
    pub auth: Arc<Authenticator>,
    pub body: BodyPolicy,
}

/// Middleware in front of every API route: authenticates, then handles the body as the
/// route's [`BodyPolicy`] says; adds [`Authenticated`] to the request's extensions.
pub async fn signed(State(route): State<SignedRoute>, request: Request, next: Next) -> Response {
    match authenticate_request(&route, request).await {
        Ok(request) => next.run(request).await,
        Err(failure) => failure.into_response(),
    }
}

async fn authenticate_request(route: &SignedRoute, request: Request) -> Result<Request, ApiFailure> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |pq| pq.as_str()).to_owned();
    let authenticated = route.auth.authenticate(&parts.headers, parts.method.as_str(), &path, crate::unix_now())?;
    let body = match route.body {
        BodyPolicy::Buffered(limit) => {
            check_declared_length(&parts.headers, limit)?;
            let (bytes, sha256) = read_limited(body, limit).await?;
            authenticated.check_body(&sha256)?;
            Body::from(bytes)
        }
        BodyPolicy::Streamed => body,
    };
    parts.extensions.insert(authenticated);
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::signing::{body_sha256, RequestToSign, SecretKey};

    /// Keys written by Nix 2.8's `nix key generate-secret --key-name fleet-1`: the trusted
    /// one and another with the same name (a wrong key must fail on the signature itself).
    pub(crate) const TRUSTED_SECRET: &str =
        "fleet-1:KDMBMKAqiUJFbD3/iS4MPEYdsma2JqZ8GxXKR5OO2YCcbR9nUt4JMzyUabxepT0hySZ+UlrnUSHuxqIq00nETw==";
    const OTHER_SECRET: &str =
        "fleet-1:W68wNAcoWErWuKCWtIdZzxcJnJHRW9lslBcgH5VveZsVb3XOttWAYlGNhywHs7SJXnZ2L+U4ShpLzf7KvFmLUQ==";
    const NOW: u64 = 1_800_000_000;
    const NONCE: &str = "00112233445566778899aabbccddeeff";

    fn auth() -> Authenticator {
        let key: SecretKey = TRUSTED_SECRET.parse().unwrap();
        Authenticator::new(vec![key.public()])
    }

    fn signed_headers(secret: &str, method: &str, path: &str, timestamp: u64, nonce: &str, body: &[u8]) -> HeaderMap {
        let key: SecretKey = secret.parse().unwrap();
        let sha = body_sha256(body);
        let h = key.sign_request(&RequestToSign { method, path, timestamp, nonce, content_sha256: &sha });
        let mut map = HeaderMap::new();
        for (name, value) in [
            (headers::KEY, h.key),
            (headers::TIMESTAMP, h.timestamp),
            (headers::NONCE, h.nonce),
            (headers::CONTENT_SHA256, h.content_sha256),
            (headers::SIGNATURE, h.signature),
        ] {
            map.insert(name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn good_request_passes_and_carries_the_body_hash() {
        let h = signed_headers(TRUSTED_SECRET, "POST", "/v1/paths/missing", NOW, NONCE, b"{}");
        let ok = auth().authenticate(&h, "POST", "/v1/paths/missing", NOW).unwrap();
        assert_eq!(ok.key, "fleet-1");
        ok.check_body(&body_sha256(b"{}")).unwrap();
        let err = ok.check_body(&body_sha256(b"{ }")).unwrap_err();
        assert_eq!(err.code, hostctl_schemas::api::ErrorCode::Unauthorized, "tampered body");
    }

    #[test]
    fn unsigned_wrong_key_stale_and_replayed_are_refused() {
        let a = auth();
        let err = a.authenticate(&HeaderMap::new(), "GET", "/v1/status", NOW).unwrap_err();
        assert_eq!(err, AuthFailure::Signature(AuthError::MissingHeader(headers::KEY)));

        let wrong = signed_headers(OTHER_SECRET, "GET", "/v1/status", NOW, NONCE, b"");
        assert_eq!(a.authenticate(&wrong, "GET", "/v1/status", NOW), Err(AuthError::BadSignature.into()));

        let stale = signed_headers(TRUSTED_SECRET, "GET", "/v1/status", NOW - 121, NONCE, b"");
        assert_eq!(a.authenticate(&stale, "GET", "/v1/status", NOW), Err(AuthError::Stale { skew: 121 }.into()));

        let other_path = signed_headers(TRUSTED_SECRET, "GET", "/v1/status", NOW, NONCE, b"");
        assert_eq!(a.authenticate(&other_path, "GET", "/v1/generations", NOW), Err(AuthError::BadSignature.into()));

        // Failed attempts did not burn the nonce; the first good use does.
        let good = signed_headers(TRUSTED_SECRET, "GET", "/v1/status", NOW, NONCE, b"");
        a.authenticate(&good, "GET", "/v1/status", NOW).unwrap();
        assert_eq!(a.authenticate(&good, "GET", "/v1/status", NOW + 5), Err(NonceError::Replayed.into()));
        let message = ApiFailure::from(AuthFailure::from(NonceError::Replayed)).message;
        assert!(message.contains("replayed"), "{message}");
    }

    #[test]
    fn nonce_cache_refuses_replays_and_forgets_expired() {
        let mut cache = NonceCache::new(2);
        cache.check_and_remember(NONCE, 1000, 1000).unwrap();
        assert_eq!(cache.check_and_remember(NONCE, 1000, 1001), Err(NonceError::Replayed));
        cache.check_and_remember("b", 1000, 1000).unwrap();
        assert_eq!(cache.check_and_remember("c", 1000, 1000), Err(NonceError::Full(2)), "refuses, forgets nothing");
        assert_eq!(cache.check_and_remember(NONCE, 1000, 1000 + TIMESTAMP_WINDOW_SECS), Err(NonceError::Replayed));
        // Once the window is over, the old entries go and new nonces fit again.
        let later = 1000 + TIMESTAMP_WINDOW_SECS + 1;
        cache.check_and_remember("c", later, later).unwrap();
        assert_eq!(cache.len(), 1);
    }
}
