//! Request authentication: every API route goes through [`signed`], which checks the
//! ed25519 signature against the configured trusted keys, the clock and this host's
//! `hostname` ([`hostctl_schemas::signing::verify_request`]), refuses replayed nonces
//! ([`NonceCache`]), and checks the body against its signed SHA-256. Every failure is a 401.
//!
//! Invariant: a handler only ever runs for a request signed by a trusted key for this
//! host whose nonce was new (a request signed for another host records nothing);
//! buffered bodies are checked before the handler sees them and only then is the nonce
//! recorded; streamed bodies (imports) hold their nonce claimed while they arrive and are
//! checked by the handler through [`Authenticated::check_body`] (which records the nonce)
//! before any use, so a streamed route must call it before it changes anything.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hostctl_schemas::agent_config::{PublicKey, PUBLIC_KEY_LEN};
use hostctl_schemas::api::headers;
use hostctl_schemas::ids::HostName;
use hostctl_schemas::signing::{verify_request, AuthError, SignatureHeaders, SIGNATURE_VERSION};

use super::body::{check_declared_length, read_limited};
use super::error::ApiFailure;
use super::nonce::SharedNonces;
pub use super::nonce::{NonceCache, NonceClaim, NonceError, NONCE_CAPACITY};

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

/// A request whose signature and clock verified; its nonce is not recorded yet: that
/// waits until its body matched the signed hash too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Name of the trusted key that signed.
    pub key: String,
    /// The signed SHA-256 of the body.
    pub content_sha256: String,
    nonce: String,
    timestamp: u64,
}

impl Verified {
    /// Checks a body's SHA-256 (hex) against the signed one.
    pub fn check_body(&self, sha256: &str) -> Result<(), AuthFailure> {
        body_matches(&self.content_sha256, sha256)
    }
}

/// A body's SHA-256 (hex, either case) against the signed one.
fn body_matches(signed: &str, sha256: &str) -> Result<(), AuthFailure> {
    if sha256.eq_ignore_ascii_case(signed) {
        Ok(())
    } else {
        Err(AuthFailure::Signature(AuthError::BodyMismatch))
    }
}

/// What a handler learns about an authenticated request (a request extension). For a
/// streamed body its nonce is only claimed: [`Authenticated::check_body`] records it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Name of the trusted key that signed.
    pub key: String,
    /// The signed SHA-256 of the body.
    pub content_sha256: String,
    /// The claimed nonce of a streamed body, taken by `check_body`.
    claim: Arc<Mutex<Option<NonceClaim>>>,
}

impl Authenticated {
    fn new(verified: Verified, claim: Option<NonceClaim>) -> Self {
        Self { key: verified.key, content_sha256: verified.content_sha256, claim: Arc::new(Mutex::new(claim)) }
    }

    /// Checks a body's SHA-256 (hex) against the signed one; a match records the
    /// request's nonce as used, a mismatch releases it for the genuine request.
    pub fn check_body(&self, sha256: &str) -> Result<(), ApiFailure> {
        let claim = self.claim.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        body_matches(&self.content_sha256, sha256)?;
        if let Some(claim) = claim {
            claim.commit();
        }
        Ok(())
    }
}

/// This host's name, the trusted keys and the nonces seen: shared by every route.
#[derive(Debug)]
pub struct Authenticator {
    /// Requests must be signed for this host (agent.yaml `hostname`).
    host: HostName,
    /// ... and for this agent's identity public key (the one its TLS certificate shows).
    identity: [u8; PUBLIC_KEY_LEN],
    trusted: Vec<PublicKey>,
    nonces: SharedNonces,
}

impl Authenticator {
    pub fn new(host: HostName, identity: [u8; PUBLIC_KEY_LEN], trusted: Vec<PublicKey>) -> Self {
        Self::with_capacity(host, identity, trusted, NONCE_CAPACITY)
    }

    pub fn with_capacity(
        host: HostName,
        identity: [u8; PUBLIC_KEY_LEN],
        trusted: Vec<PublicKey>,
        capacity: usize,
    ) -> Self {
        Self { host, identity, trusted, nonces: SharedNonces::new(capacity) }
    }

    /// Checks the signature headers of a request to `path` (path and query as sent) and
    /// that its nonce is unused; records nothing ([`Authenticator::remember`] and
    /// [`Authenticator::claim`] do, once the signature verified, so unsigned traffic
    /// cannot fill the cache).
    pub fn verify(&self, headers: &HeaderMap, method: &str, path: &str, now: u64) -> Result<Verified, AuthFailure> {
        let signature = signature_headers(headers)?;
        verify_request(&self.trusted, &signature, &self.host, &self.identity, method, path, now)?;
        let timestamp: u64 = signature.timestamp.parse().map_err(|_| AuthError::Malformed(headers::TIMESTAMP))?;
        // Refused before the body is read: a replay costs no transfer.
        self.nonces.lock().check_unused(&signature.nonce, now)?;
        Ok(Verified { key: signature.key, content_sha256: signature.content_sha256, nonce: signature.nonce, timestamp })
    }

    /// Records the nonce of a request whose body verified; refuses it if another request
    /// with the same nonce got there first.
    pub fn remember(&self, verified: &Verified, now: u64) -> Result<(), AuthFailure> {
        Ok(self.nonces.lock().check_and_remember(&verified.nonce, verified.timestamp, now)?)
    }

    /// Claims the nonce of a request whose body is streamed to the handler.
    pub fn claim(&self, verified: &Verified, now: u64) -> Result<NonceClaim, AuthFailure> {
        Ok(self.nonces.claim(&verified.nonce, verified.timestamp, now)?)
    }

    /// [`Authenticator::verify`] and [`Authenticator::remember`] for a request whose body
    /// is already known to match (tests, bodiless checks).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        now: u64,
    ) -> Result<Verified, AuthFailure> {
        let verified = self.verify(headers, method, path, now)?;
        self.remember(&verified, now)?;
        Ok(verified)
    }
}

/// Reads the signature headers (names in [`headers`]), in the order that explains a
/// refusal best: an unsigned request lacks `x-hostctl-key`; one signed by a controller
/// from before the scheme had a version has the five v1 headers and no version, which
/// [`verify_request`] refuses as v1 (so the missing host header is not what it is told).
fn signature_headers(map: &HeaderMap) -> Result<SignatureHeaders, AuthError> {
    let optional = |name: &'static str| -> Result<Option<String>, AuthError> {
        map.get(name).map(|value| value.to_str().map(str::to_owned).map_err(|_| AuthError::Malformed(name))).transpose()
    };
    let get = |name: &'static str| optional(name)?.ok_or(AuthError::MissingHeader(name));
    let (key, timestamp, nonce) = (get(headers::KEY)?, get(headers::TIMESTAMP)?, get(headers::NONCE)?);
    let (content_sha256, signature) = (get(headers::CONTENT_SHA256)?, get(headers::SIGNATURE)?);
    let version = optional(headers::VERSION)?.unwrap_or_else(|| "1".to_owned());
    // Required by this scheme; an older one is refused for its version, not for these.
    let required = |name: &'static str| -> Result<String, AuthError> {
        match optional(name)? {
            Some(value) => Ok(value),
            None if version == SIGNATURE_VERSION.to_string() => Err(AuthError::MissingHeader(name)),
            None => Ok(String::new()),
        }
    };
    let (host, identity) = (required(headers::HOST)?, required(headers::IDENTITY)?);
    Ok(SignatureHeaders { version, key, host, identity, timestamp, nonce, content_sha256, signature })
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
/// A refusal is logged with the peer's address (a request signed for another host,
/// replayed from a compromised one, shows where it came from).
pub async fn signed(State(route): State<SignedRoute>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<super::peer::Peer>().map(|super::peer::Peer(addr)| *addr);
    match authenticate_request(&route, request).await {
        Ok(request) => next.run(request).await,
        Err(failure) => {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
            tracing::info!(%peer, code = ?failure.code, reason = %failure.message, "request refused before its handler");
            failure.into_response()
        }
    }
}

async fn authenticate_request(route: &SignedRoute, request: Request) -> Result<Request, ApiFailure> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |pq| pq.as_str()).to_owned();
    let verified = route.auth.verify(&parts.headers, parts.method.as_str(), &path, crate::unix_now())?;
    let (body, claim) = match route.body {
        BodyPolicy::Buffered(limit) => {
            check_declared_length(&parts.headers, limit)?;
            let (bytes, sha256) = read_limited(body, limit).await?;
            verified.check_body(&sha256)?;
            // Only now: a body altered in transit must not burn the genuine nonce.
            route.auth.remember(&verified, crate::unix_now())?;
            (Body::from(bytes), None)
        }
        BodyPolicy::Streamed => (body, Some(route.auth.claim(&verified, crate::unix_now())?)),
    };
    parts.extensions.insert(Authenticated::new(verified, claim));
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
    /// web1's agent identity public key.
    const IDENTITY: [u8; PUBLIC_KEY_LEN] = [7; PUBLIC_KEY_LEN];

    /// The authenticator of host `web1`.
    fn auth() -> Authenticator {
        let key: SecretKey = TRUSTED_SECRET.parse().unwrap();
        Authenticator::new("web1".parse().unwrap(), IDENTITY, vec![key.public()])
    }

    fn signed_headers(secret: &str, method: &str, path: &str, timestamp: u64, nonce: &str, body: &[u8]) -> HeaderMap {
        signed_for("web1", secret, method, path, timestamp, nonce, body)
    }

    fn signed_for(
        host: &str,
        secret: &str,
        method: &str,
        path: &str,
        timestamp: u64,
        nonce: &str,
        body: &[u8],
    ) -> HeaderMap {
        let key: SecretKey = secret.parse().unwrap();
        let (host, sha) = (host.parse().unwrap(), body_sha256(body));
        let identity = &IDENTITY;
        let h = key.sign_request(&RequestToSign {
            host: &host,
            identity,
            method,
            path,
            timestamp,
            nonce,
            content_sha256: &sha,
        });
        let mut map = HeaderMap::new();
        for (name, value) in h.pairs() {
            map.insert(name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_request_for_another_host_is_refused_and_burns_no_nonce() {
        let a = auth();
        let path = "/v1/rollback";
        let for_web2 = signed_for("web2", TRUSTED_SECRET, "POST", path, NOW, NONCE, b"{}");
        let err = a.authenticate(&for_web2, "POST", path, NOW).unwrap_err();
        let message = ApiFailure::from(err).message;
        assert_eq!(message, r#"request is for host "web2", this is "web1""#);
        // Relabelled as for web1: the signature covers the host.
        let mut relabelled = for_web2.clone();
        relabelled.insert(headers::HOST, "web1".parse().unwrap());
        assert_eq!(a.authenticate(&relabelled, "POST", path, NOW), Err(AuthError::BadSignature.into()));
        // The same nonce in a request for web1 is still new.
        let for_web1 = signed_headers(TRUSTED_SECRET, "POST", path, NOW, NONCE, b"{}");
        a.authenticate(&for_web1, "POST", path, NOW).unwrap();
    }

    #[test]
    fn a_request_signed_with_scheme_v1_is_refused_with_what_to_do() {
        let mut v1 = signed_headers(TRUSTED_SECRET, "GET", "/v1/status", NOW, NONCE, b"");
        v1.remove(headers::VERSION);
        v1.remove(headers::HOST);
        let err = auth().authenticate(&v1, "GET", "/v1/status", NOW).unwrap_err();
        assert_eq!(err, AuthError::SchemeV1.into());
        assert!(ApiFailure::from(err).message.contains("upgrade hostctl on the controller"));
        let mut no_host = signed_headers(TRUSTED_SECRET, "GET", "/v1/status", NOW, NONCE, b"");
        no_host.remove(headers::HOST);
        let err = auth().authenticate(&no_host, "GET", "/v1/status", NOW).unwrap_err();
        assert_eq!(err, AuthError::MissingHeader(headers::HOST).into());
    }

    #[test]
    fn good_request_passes_and_carries_the_body_hash() {
        let h = signed_headers(TRUSTED_SECRET, "POST", "/v1/paths/missing", NOW, NONCE, b"{}");
        let ok = auth().authenticate(&h, "POST", "/v1/paths/missing", NOW).unwrap();
        assert_eq!(ok.key, "fleet-1");
        ok.check_body(&body_sha256(b"{}")).unwrap();
        let err = ApiFailure::from(ok.check_body(&body_sha256(b"{ }")).unwrap_err());
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

    fn request(headers: HeaderMap, method: &str, path: &str, body: &[u8]) -> Request {
        let mut request = Request::builder().method(method).uri(path).body(Body::from(body.to_vec())).unwrap();
        *request.headers_mut() = headers;
        request
    }

    #[tokio::test]
    async fn an_altered_body_does_not_burn_the_nonce() {
        let route = SignedRoute { auth: Arc::new(auth()), body: BodyPolicy::Buffered(1024) };
        let path = "/v1/paths/missing";
        let h = signed_headers(TRUSTED_SECRET, "POST", path, crate::unix_now(), NONCE, b"{\"paths\":[]}");
        let altered = authenticate_request(&route, request(h.clone(), "POST", path, b"{\"paths\":[1]}")).await;
        assert_eq!(altered.unwrap_err().code, hostctl_schemas::api::ErrorCode::Unauthorized);
        authenticate_request(&route, request(h.clone(), "POST", path, b"{\"paths\":[]}")).await.unwrap();
        let replayed = authenticate_request(&route, request(h, "POST", path, b"{\"paths\":[]}")).await.unwrap_err();
        assert!(replayed.message.contains("replayed"), "{}", replayed.message);
    }

    #[tokio::test]
    async fn a_streamed_body_claims_the_nonce_until_it_is_checked() {
        let route = SignedRoute { auth: Arc::new(auth()), body: BodyPolicy::Streamed };
        let path = "/v1/paths/import";
        let h = signed_headers(TRUSTED_SECRET, "POST", path, crate::unix_now(), NONCE, b"export");
        let first = authenticate_request(&route, request(h.clone(), "POST", path, b"altered")).await.unwrap();
        let claimed = first.extensions().get::<Authenticated>().unwrap().clone();
        // While the first copy streams, a second one is refused.
        let second = authenticate_request(&route, request(h.clone(), "POST", path, b"export")).await.unwrap_err();
        assert!(second.message.contains("being received"), "{}", second.message);
        // The altered body fails its check and releases the nonce...
        claimed.check_body(&body_sha256(b"altered")).unwrap_err();
        drop((first, claimed));
        // ...so the genuine request is accepted, and records it.
        let genuine = authenticate_request(&route, request(h.clone(), "POST", path, b"export")).await.unwrap();
        genuine.extensions().get::<Authenticated>().unwrap().check_body(&body_sha256(b"export")).unwrap();
        drop(genuine);
        let replayed = authenticate_request(&route, request(h, "POST", path, b"export")).await.unwrap_err();
        assert!(replayed.message.contains("already used"), "{}", replayed.message);
    }
}
