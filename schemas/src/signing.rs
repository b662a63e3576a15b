//! Request signing for agent API v1: ed25519 keys in Nix's `name:base64` format (so
//! `nix key generate-secret` keys work), over the scheme version, the target host, the
//! target agent's identity key, the method, path, timestamp, nonce and body hash. Pure computation: the agent adds the
//! replay check (nonces seen), the controller adds the clock and the randomness.
//!
//! Scheme versions (the first line of the signed string, and `x-hostctl-signature-version`):
//! - v1 (before issue 14) named no host, so a request captured on its way to one host
//!   was accepted by every host trusting the fleet key. Refused now, with a message that
//!   the controller must be upgraded.
//! - v2 added the target host name, but a host that kept its name and got another
//!   identity (reinstalled, or an impostor the controller was not talking to) still
//!   accepted it. Refused now like v1, with an upgrade message.
//! - v3 (this one) adds the target agent's identity public key, the key its TLS
//!   certificate is made from and the controller pinned: an agent accepts only requests
//!   signed for its own `hostname` and its own identity ([`verify_request`]), so a
//!   request captured on its way to one agent, or forwarded by a compromised host, is
//!   refused by every other.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::ids::HostName;
use crate::key::PublicKey;

/// How far a request's timestamp may be from the agent's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECS: u64 = 120;

/// The signing scheme this build signs with and the only one it accepts.
pub const SIGNATURE_VERSION: u32 = 3;

/// A Nix-format ed25519 secret key: `name:base64(seed ‖ public key)` (64 bytes).
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "SecretKey({})", self.name)
    }
}

/// Why a secret key could not be read. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("{file}: cannot read the signing key: {problem}")]
    Read { file: String, problem: String },
    #[error("{file}: not a Nix ed25519 secret key (`name:base64` of 64 bytes, as `nix key generate-secret` writes): {problem}")]
    Format { file: String, problem: &'static str },
    /// Other users could read or replace the key: refused before it is read.
    #[error("signing key {0}")]
    Permissions(crate::perms::PermError),
}

impl SecretKey {
    /// Reads a key file as written by `nix key generate-secret`.
    /// Refused if other users could read or change it (see [`crate::perms`]); its `stat`
    /// is the one file-system access here besides reading it.
    pub fn load(path: &Path) -> Result<Self, SecretKeyError> {
        let euid = nix::unistd::geteuid().as_raw();
        crate::perms::judge(path, "file", crate::perms::Private::File, std::fs::metadata(path), euid)
            .map_err(SecretKeyError::Permissions)?;
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretKeyError::Read { file: file.clone(), problem: e.to_string() })?;
        Self::parse(text.trim()).map_err(|problem| SecretKeyError::Format { file, problem })
    }

    fn parse(text: &str) -> Result<Self, &'static str> {
        let (name, encoded) = text.split_once(':').ok_or("no ':' between name and key")?;
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err("the name before ':' must be non-empty, without spaces");
        }
        let bytes = STANDARD.decode(encoded).map_err(|_| "the part after ':' is not base64")?;
        if bytes.len() == crate::key::PUBLIC_KEY_LEN {
            return Err(
                "this is a public key (32 bytes); the secret key file is the one `nix key generate-secret` wrote",
            );
        }
        let pair = <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| "the key is not 64 bytes")?;
        let key = SigningKey::from_keypair_bytes(&pair).map_err(|_| "the public half does not match the secret")?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// The matching public key, as agents list it in `trusted_keys`.
    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key().to_bytes() }
    }

    /// The key pair of a 32-byte seed (the caller brings the randomness), under `name`.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Self {
        Self { name: name.to_owned(), key: SigningKey::from_bytes(&seed) }
    }

    /// The key file's text, as `nix key generate-secret` writes it: `name:base64(seed ‖ public)`.
    pub fn to_nix_text(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.to_keypair_bytes()))
    }

    /// The key as PKCS#8 v1 DER (RFC 8410), for TLS libraries: a fixed prefix and the seed.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        const PREFIX: [u8; 16] =
            [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(&self.key.to_bytes());
        der
    }

    /// Base64 of the ed25519 signature of `message` (bundles sign their header with it).
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        STANDARD.encode(self.key.sign(message).to_bytes())
    }

    /// Signs the headers of one request.
    pub fn sign_request(&self, request: &RequestToSign<'_>) -> SignatureHeaders {
        let signature = self.key.sign(canonical_request(request).as_bytes());
        SignatureHeaders {
            version: SIGNATURE_VERSION.to_string(),
            key: self.name.clone(),
            host: request.host.to_string(),
            identity: STANDARD.encode(request.identity),
            timestamp: request.timestamp.to_string(),
            nonce: request.nonce.to_owned(),
            content_sha256: request.content_sha256.to_owned(),
            signature: STANDARD.encode(signature.to_bytes()),
        }
    }
}

impl FromStr for SecretKey {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    /// The host the request is for: the agent's `hostname`, the fleet's name for it.
    pub host: &'a HostName,
    /// The target agent's identity public key (the one pinned for the host).
    pub identity: &'a [u8; crate::key::PUBLIC_KEY_LEN],
    pub method: &'a str,
    /// Path and query as sent, e.g. `/v1/deployments/abc`.
    pub path: &'a str,
    pub timestamp: u64,
    pub nonce: &'a str,
    /// [`body_sha256`] of the body.
    pub content_sha256: &'a str,
}

/// The signature headers of a request (names in [`crate::api::headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// The scheme, [`SIGNATURE_VERSION`] when signed by this build.
    pub version: String,
    pub key: String,
    /// The host the request was signed for.
    pub host: String,
    /// Base64 of the identity key of the agent the request was signed for.
    pub identity: String,
    pub timestamp: String,
    pub nonce: String,
    pub content_sha256: String,
    pub signature: String,
}

impl SignatureHeaders {
    /// The headers to send, by name.
    pub fn pairs(&self) -> [(&'static str, &str); 8] {
        use crate::api::headers;
        [
            (headers::KEY, &self.key),
            (headers::TIMESTAMP, &self.timestamp),
            (headers::NONCE, &self.nonce),
            (headers::CONTENT_SHA256, &self.content_sha256),
            (headers::SIGNATURE, &self.signature),
            (headers::VERSION, &self.version),
            (headers::HOST, &self.host),
            (headers::IDENTITY, &self.identity),
        ]
    }
}

/// SHA-256 of a body, lowercase hex.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The exact bytes that are signed. A version prefix keeps signatures from ever being
/// valid under another scheme; no field can hold a newline (a host name cannot, HTTP
/// header values and request targets cannot), so the fields cannot be shifted.
pub fn canonical_request(r: &RequestToSign<'_>) -> String {
    format!(
        "hostctl-request-v{SIGNATURE_VERSION}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        r.host,
        STANDARD.encode(r.identity),
        r.method,
        r.path,
        r.timestamp,
        r.nonce,
        r.content_sha256
    )
}

/// Why a request's signature was refused (all answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Signed by a controller from before issue 14 (no version header, no host).
    #[error("request is signed with the old scheme v1, which does not name the host it is for; this agent accepts only v{SIGNATURE_VERSION}: upgrade hostctl on the controller")]
    SchemeV1,
    /// Signed by a controller that does not pin agent identities (no identity key).
    #[error("request is signed with the old scheme v2, which does not name the agent identity it is for; this agent accepts only v{SIGNATURE_VERSION}: upgrade hostctl on the controller")]
    SchemeV2,
    #[error("request is signed with scheme version `{0}`; this agent accepts only v{SIGNATURE_VERSION}: run the same hostctl version on the controller and the agent")]
    UnknownScheme(String),
    /// Signed for another host (the signature itself verified).
    #[error("request is for host \"{signed_for}\", this is \"{this}\"")]
    OtherHost { signed_for: String, this: String },
    /// Signed for another agent identity (the signature itself verified): the
    /// controller pinned another key for this host.
    #[error("request is for the agent with identity {signed_for}, this agent's identity is {this}")]
    OtherIdentity { signed_for: String, this: String },
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is malformed")]
    Malformed(&'static str),
    #[error("request timestamp is {skew}s away from the agent's clock (allowed: {TIMESTAMP_WINDOW_SECS}s)")]
    Stale { skew: u64 },
    #[error("key `{0}` is not among the agent's trusted keys")]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("nonce was already used (replayed request)")]
    Replayed,
    #[error("body does not match its x-hostctl-content-sha256")]
    BodyMismatch,
}

/// Checks a request's signature headers against the trusted keys, the clock, this
/// agent's host name `this_host` and its identity public key `this_identity`. The caller then checks the nonce against the ones seen
/// and the body against the hash.
///
/// The signature is checked over the host and identity the request names, then those
/// against this agent's: the outcome is the one of checking it over this agent's own,
/// but a genuine request for another host or identity is told which, and unsigned
/// traffic learns nothing.
pub fn verify_request(
    trusted: &[PublicKey],
    headers: &SignatureHeaders,
    this_host: &HostName,
    this_identity: &[u8; crate::key::PUBLIC_KEY_LEN],
    method: &str,
    path: &str,
    now: u64,
) -> Result<(), AuthError> {
    if headers.version != SIGNATURE_VERSION.to_string() {
        return Err(match headers.version.as_str() {
            "1" => AuthError::SchemeV1,
            "2" => AuthError::SchemeV2,
            other => AuthError::UnknownScheme(other.chars().take(20).collect()),
        });
    }
    let host: HostName = headers.host.parse().map_err(|_| AuthError::Malformed(crate::api::headers::HOST))?;
    let identity = STANDARD
        .decode(&headers.identity)
        .ok()
        .and_then(|bytes| <[u8; crate::key::PUBLIC_KEY_LEN]>::try_from(bytes.as_slice()).ok())
        .ok_or(AuthError::Malformed(crate::api::headers::IDENTITY))?;
    let timestamp: u64 = headers.timestamp.parse().map_err(|_| AuthError::Malformed("x-hostctl-timestamp"))?;
    let skew = now.abs_diff(timestamp);
    if skew > TIMESTAMP_WINDOW_SECS {
        return Err(AuthError::Stale { skew });
    }
    let nonce_ok = (16..=64).contains(&headers.nonce.len()) && headers.nonce.bytes().all(|b| b.is_ascii_hexdigit());
    if !nonce_ok {
        return Err(AuthError::Malformed("x-hostctl-nonce"));
    }
    let hash_ok = headers.content_sha256.len() == 64 && headers.content_sha256.bytes().all(|b| b.is_ascii_hexdigit());
    if !hash_ok {
        return Err(AuthError::Malformed("x-hostctl-content-sha256"));
    }
    let key =
        trusted.iter().find(|k| k.name == headers.key).ok_or_else(|| AuthError::UnknownKey(headers.key.clone()))?;
    let sig_bytes = STANDARD.decode(&headers.signature).map_err(|_| AuthError::Malformed("x-hostctl-signature"))?;
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| AuthError::Malformed("x-hostctl-signature"))?;
    let verifying = VerifyingKey::from_bytes(&key.key).map_err(|_| AuthError::BadSignature)?;
    let request = RequestToSign {
        host: &host,
        identity: &identity,
        method,
        path,
        timestamp,
        nonce: &headers.nonce,
        content_sha256: &headers.content_sha256,
    };
    verifying.verify_strict(canonical_request(&request).as_bytes(), &signature).map_err(|_| AuthError::BadSignature)?;
    if host != *this_host {
        return Err(AuthError::OtherHost { signed_for: host.to_string(), this: this_host.to_string() });
    }
    if identity != *this_identity {
        return Err(AuthError::OtherIdentity {
            signed_for: headers.identity.clone(),
            this: STANDARD.encode(this_identity),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key in the layout `nix key generate-secret` writes, from a fixed seed.
    fn key() -> SecretKey {
        let seed = [7u8; 32];
        let signing = SigningKey::from_bytes(&seed);
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&seed);
        pair[32..].copy_from_slice(&signing.verifying_key().to_bytes());
        format!("fleet-test:{}", STANDARD.encode(pair)).parse().unwrap()
    }

    const NIX_SECRET: &str = "KDMBMKAqiUJFbD3/iS4MPEYdsma2JqZ8GxXKR5OO2YCcbR9nUt4JMzyUabxepT0hySZ+UlrnUSHuxqIq00nETw==";
    const NIX_PUBLIC: &str = "fleet-1:nG0fZ1LeCTM8lGm8XqU9IckmflJa51Eh7saiKtNJxE8=";

    static WEB1: std::sync::LazyLock<HostName> = std::sync::LazyLock::new(|| "web1".parse().unwrap());
    static WEB2: std::sync::LazyLock<HostName> = std::sync::LazyLock::new(|| "web2".parse().unwrap());
    /// web1's agent identity key, and another agent's.
    const ID1: [u8; 32] = [1; 32];
    const ID2: [u8; 32] = [2; 32];

    fn request<'a>(method: &'a str, path: &'a str, timestamp: u64, body: &'a str) -> RequestToSign<'a> {
        let nonce = "00112233445566778899aabbccddeeff";
        RequestToSign { host: &WEB1, identity: &ID1, method, path, timestamp, nonce, content_sha256: body }
    }

    /// [`verify_request`] on the agent of host `web1`.
    fn check(trusted: &[PublicKey], h: &SignatureHeaders, method: &str, path: &str, now: u64) -> Result<(), AuthError> {
        verify_request(trusted, h, &WEB1, &ID1, method, path, now)
    }

    #[test]
    fn the_signed_string_names_the_scheme_the_host_and_the_identity_first() {
        let sha = body_sha256(b"");
        let r = request("GET", "/v1/status", 5, &sha);
        let id = STANDARD.encode(ID1);
        assert_eq!(
            canonical_request(&r),
            format!("hostctl-request-v3\nweb1\n{id}\nGET\n/v1/status\n5\n00112233445566778899aabbccddeeff\n{sha}")
        );
        let h = key().sign_request(&r);
        assert_eq!((h.version.as_str(), h.host.as_str(), h.identity.as_str()), ("3", "web1", id.as_str()));
        let names: Vec<&str> = h.pairs().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, crate::api::headers::ALL);
    }

    #[test]
    fn a_request_signed_for_one_host_is_refused_by_another() {
        let k = key();
        let trusted = [k.public()];
        let h = k.sign_request(&request("POST", "/v1/rollback", 5, &body_sha256(b"{}")));
        assert_eq!(verify_request(&trusted, &h, &WEB1, &ID1, "POST", "/v1/rollback", 5), Ok(()));
        // Sent as is to web2: the signature is genuine, the host is not web2.
        assert_eq!(
            verify_request(&trusted, &h, &WEB2, &ID2, "POST", "/v1/rollback", 5),
            Err(AuthError::OtherHost { signed_for: "web1".into(), this: "web2".into() })
        );
        let message = AuthError::OtherHost { signed_for: "web1".into(), this: "web2".into() }.to_string();
        assert_eq!(message, r#"request is for host "web1", this is "web2""#);
        // Relabelled for web2: the signature was made over web1.
        let mut relabelled = h.clone();
        relabelled.host = "web2".into();
        assert_eq!(
            verify_request(&trusted, &relabelled, &WEB2, &ID1, "POST", "/v1/rollback", 5),
            Err(AuthError::BadSignature)
        );
        relabelled.host = "not a host".into();
        assert_eq!(
            check(&trusted, &relabelled, "POST", "/v1/rollback", 5),
            Err(AuthError::Malformed("x-hostctl-host"))
        );
    }

    #[test]
    fn a_request_signed_for_another_identity_is_refused() {
        let k = key();
        let trusted = [k.public()];
        let h = k.sign_request(&request("POST", "/v1/rollback", 5, &body_sha256(b"{}")));
        // Same host name, another agent identity (reinstalled, or an impostor).
        let err = verify_request(&trusted, &h, &WEB1, &ID2, "POST", "/v1/rollback", 5).unwrap_err();
        assert_eq!(err, AuthError::OtherIdentity { signed_for: STANDARD.encode(ID1), this: STANDARD.encode(ID2) });
        // Relabelled for the other identity: the signature was made over ID1.
        let mut relabelled = h.clone();
        relabelled.identity = STANDARD.encode(ID2);
        assert_eq!(
            verify_request(&trusted, &relabelled, &WEB1, &ID2, "POST", "/v1/rollback", 5),
            Err(AuthError::BadSignature)
        );
        relabelled.identity = "short".into();
        assert_eq!(
            check(&trusted, &relabelled, "POST", "/v1/rollback", 5),
            Err(AuthError::Malformed("x-hostctl-agent-identity"))
        );
    }

    #[test]
    fn the_v1_scheme_and_unknown_schemes_are_refused() {
        let k = key();
        let trusted = [k.public()];
        let sha = body_sha256(b"");
        let r = request("GET", "/v1/status", 5, &sha);
        // Exactly what a controller from before issue 14 sent: v1's string, no host.
        let v1 =
            format!("hostctl-request-v1\n{}\n{}\n{}\n{}\n{}", r.method, r.path, r.timestamp, r.nonce, r.content_sha256);
        let old = SignatureHeaders {
            version: "1".into(),
            key: k.name.clone(),
            host: String::new(),
            identity: String::new(),
            timestamp: "5".into(),
            nonce: r.nonce.into(),
            content_sha256: r.content_sha256.into(),
            signature: k.sign_bytes(v1.as_bytes()),
        };
        let err = check(&trusted, &old, "GET", "/v1/status", 5).unwrap_err();
        assert_eq!(err, AuthError::SchemeV1);
        assert!(err.to_string().contains("upgrade hostctl on the controller"), "{err}");
        // Exactly what a v2 controller sent: host, no identity.
        let v2 = format!(
            "hostctl-request-v2\nweb1\n{}\n{}\n{}\n{}\n{}",
            r.method, r.path, r.timestamp, r.nonce, r.content_sha256
        );
        let v2_headers = SignatureHeaders {
            version: "2".into(),
            host: "web1".into(),
            signature: k.sign_bytes(v2.as_bytes()),
            ..old.clone()
        };
        let err = check(&trusted, &v2_headers, "GET", "/v1/status", 5).unwrap_err();
        assert_eq!(err, AuthError::SchemeV2);
        assert!(err.to_string().contains("upgrade hostctl on the controller"), "{err}");
        // A v3 signature claiming another version, and a v1 one claiming v3.
        let mut h = k.sign_request(&r);
        h.version = "4".into();
        assert_eq!(check(&trusted, &h, "GET", "/v1/status", 5), Err(AuthError::UnknownScheme("4".into())));
        let mut relabelled = old;
        relabelled.version = "3".into();
        relabelled.host = "web1".into();
        relabelled.identity = STANDARD.encode(ID1);
        assert_eq!(check(&trusted, &relabelled, "GET", "/v1/status", 5), Err(AuthError::BadSignature));
    }

    #[test]
    fn sign_then_verify_and_every_tampering_fails() {
        let k = key();
        let trusted = [k.public()];
        let body = body_sha256(b"{}");
        let h = k.sign_request(&request("POST", "/v1/deployments", 1000, &body));
        assert_eq!(check(&trusted, &h, "POST", "/v1/deployments", 1000), Ok(()));
        assert_eq!(check(&trusted, &h, "POST", "/v1/deployments", 1000 + TIMESTAMP_WINDOW_SECS), Ok(()));
        assert_eq!(check(&trusted, &h, "GET", "/v1/deployments", 1000), Err(AuthError::BadSignature));
        assert_eq!(check(&trusted, &h, "POST", "/v1/status", 1000), Err(AuthError::BadSignature));
        assert_eq!(check(&trusted, &h, "POST", "/v1/deployments", 1200), Err(AuthError::Stale { skew: 200 }));
        let mut other = h.clone();
        other.content_sha256 = body_sha256(b"{ }");
        assert_eq!(check(&trusted, &other, "POST", "/v1/deployments", 1000), Err(AuthError::BadSignature));
        let mut other = h.clone();
        other.nonce = "ffffffffffffffffffffffffffffffff".into();
        assert_eq!(check(&trusted, &other, "POST", "/v1/deployments", 1000), Err(AuthError::BadSignature));
        let mut other = h.clone();
        other.key = "someone".into();
        assert_eq!(
            check(&trusted, &other, "POST", "/v1/deployments", 1000),
            Err(AuthError::UnknownKey("someone".into()))
        );
        let mut other = h;
        other.signature = "bm90IGEgc2lnbmF0dXJl".into();
        assert_eq!(
            check(&trusted, &other, "POST", "/v1/deployments", 1000),
            Err(AuthError::Malformed("x-hostctl-signature"))
        );
    }

    /// A second key pair, from another seed, under `name`.
    fn other_key(name: &str) -> SecretKey {
        let signing = SigningKey::from_bytes(&[9u8; 32]);
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&[9u8; 32]);
        pair[32..].copy_from_slice(&signing.verifying_key().to_bytes());
        format!("{name}:{}", STANDARD.encode(pair)).parse().unwrap()
    }

    #[test]
    fn a_key_from_another_name_is_refused() {
        let k = key();
        let h = k.sign_request(&request("GET", "/v1/status", 5, &body_sha256(b"")));
        // The signer's very key bytes, trusted under another name: the name is what is
        // trusted, so the signature's name is unknown.
        let renamed = PublicKey { name: "fleet-other".into(), key: k.public().key };
        assert_eq!(check(&[renamed], &h, "GET", "/v1/status", 5), Err(AuthError::UnknownKey("fleet-test".into())));
        // A signature claiming the trusted name of another key does not verify with it.
        let mut claimed = h.clone();
        claimed.key = "fleet-other".into();
        let trusted = [other_key("fleet-other").public()];
        assert_eq!(check(&trusted, &claimed, "GET", "/v1/status", 5), Err(AuthError::BadSignature));
        // Another key signing under the trusted name of this one.
        let impostor = other_key("fleet-test");
        let forged = impostor.sign_request(&request("GET", "/v1/status", 5, &body_sha256(b"")));
        assert_eq!(check(&[k.public()], &forged, "GET", "/v1/status", 5), Err(AuthError::BadSignature));
        // Both keys trusted, each under its own name: each verifies only as itself.
        let both = [k.public(), other_key("fleet-other").public()];
        assert_eq!(check(&both, &h, "GET", "/v1/status", 5), Ok(()));
        assert_eq!(check(&both, &claimed, "GET", "/v1/status", 5), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_trusted_name_with_other_key_bytes_is_refused() {
        let k = key();
        let mut public = k.public();
        public.key[0] ^= 1;
        let h = k.sign_request(&request("GET", "/v1/status", 5, &body_sha256(b"")));
        assert_eq!(check(&[public], &h, "GET", "/v1/status", 5), Err(AuthError::BadSignature));
    }

    #[test]
    fn reads_a_key_file_from_nix_key_generate_secret() {
        // Written by Nix 2.8's `nix key generate-secret --key-name fleet-1`; public half
        // from `nix key convert-secret-to-public`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.sec");
        std::fs::write(&path, "fleet-1:SECRET\n".replace("SECRET", NIX_SECRET)).unwrap();
        let mode = |m| std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        mode(0o644);
        let err = SecretKey::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("signing key file {}: mode 0644", path.display())), "{err}");
        assert!(!err.contains(NIX_SECRET), "{err}");
        mode(0o600);
        let k = SecretKey::load(&path).unwrap();
        assert_eq!(k.public().to_string(), NIX_PUBLIC);
        let err = SecretKey::load(&dir.path().join("missing.sec")).unwrap_err();
        assert!(err.to_string().contains("missing.sec: cannot read the signing key"), "{err}");
    }

    #[test]
    fn secret_key_format_errors() {
        assert!("nocolon".parse::<SecretKey>().is_err());
        assert!(":AAAA".parse::<SecretKey>().is_err());
        assert!("k:not base64!".parse::<SecretKey>().is_err());
        let public = format!("k:{}", STANDARD.encode([1u8; 32]));
        assert_eq!(
            SecretKey::parse(&public).err(),
            Some("this is a public key (32 bytes); the secret key file is the one `nix key generate-secret` wrote")
        );
        assert!(format!("k:{}", STANDARD.encode([1u8; 64])).parse::<SecretKey>().is_err(), "halves must match");
        assert_eq!(format!("{:?}", key()), "SecretKey(fleet-test)");
    }
}
