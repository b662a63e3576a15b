//! Target `request_signature`: `schemas::signing::verify_request` plus the body-hash
//! comparison the agent's `auth.rs` makes after it, on the agent of host [`HOST`]. Input:
//! nine lines (method, path, `x-hostctl-key`, `-timestamp`, `-nonce`, `-content-sha256`,
//! `-signature`, `-signature-version`, `-host`) and the body.
//!
//! Properties: (1) the request as given is accepted only if its signature is exactly the
//! fleet key's signature of it for [`HOST`] (a signature not made with the key, or made
//! for another host, is never accepted), the timestamp is in the window and the body
//! matches its hash; (2) the same method, path and body signed with the key for [`HOST`]
//! are accepted, and every copy with one byte changed (anywhere in method, path, headers
//! or body) or with a random signature is refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hostctl_schemas::ids::HostName;
use hostctl_schemas::signing::{
    body_sha256, canonical_request, verify_request, AuthError, RequestToSign, SecretKey, SignatureHeaders,
    SIGNATURE_VERSION, TIMESTAMP_WINDOW_SECS,
};
use sha2::{Digest, Sha256};

use super::{ensure, fleet_key, split_lines, Verdict};

/// The agent's clock in this target; the seeds are signed at this time.
pub const NOW: u64 = 1_700_000_000;

/// The agent's `hostname` in this target; the seeds are signed for it.
pub const HOST: &str = "web1";
/// The identity public key of [`HOST`]'s agent (scheme v3 signs for it).
pub const IDENTITY: [u8; 32] = [0x11; 32];

fn host() -> Result<HostName, String> {
    HOST.parse().map_err(|e| format!("{HOST}: {e}"))
}

/// Whether the agent accepts the request as given (signature and body) at [`NOW`].
pub fn accepts(data: &[u8]) -> bool {
    let Ok(key) = fleet_key() else { return false };
    Request::parse(data).and_then(|r| r.verify(&key)) == Some(Ok(()))
}

/// One request as the target reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Vec<u8>,
    pub path: Vec<u8>,
    /// key, timestamp, nonce, content_sha256, signature, version, host, identity (as
    /// `hostctl_schemas::api::headers::ALL`)
    pub headers: [Vec<u8>; 8],
    pub body: Vec<u8>,
}

impl Request {
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (f, body) = split_lines(data, 10)?;
        Some(Self {
            method: f[0].to_vec(),
            path: f[1].to_vec(),
            headers: [2, 3, 4, 5, 6, 7, 8, 9].map(|i| f[i].to_vec()),
            body: body.to_vec(),
        })
    }

    /// The input format (what [`Request::parse`] reads); seeds are written with it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [&self.method, &self.path].into_iter().chain(self.headers.iter()) {
            out.extend_from_slice(field);
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// `method`, `path` and `body` signed with `key` for `host` at `timestamp` with
    /// `nonce`, as the controller's client signs them.
    pub fn signed(
        key: &SecretKey,
        host: &HostName,
        (method, path, body): (&str, &str, &[u8]),
        timestamp: u64,
        nonce: &str,
    ) -> Self {
        let content_sha256 = body_sha256(body);
        let identity = &IDENTITY;
        let request = RequestToSign { host, identity, method, path, timestamp, nonce, content_sha256: &content_sha256 };
        let h = key.sign_request(&request);
        Self {
            method: method.as_bytes().to_vec(),
            path: path.as_bytes().to_vec(),
            headers: h.pairs().map(|(_, value)| value.as_bytes().to_vec()),
            body: body.to_vec(),
        }
    }

    /// What the agent decides: `Ok` only when the signature verifies and the body matches.
    /// `None` when a field is not text (an HTTP header that is not text is refused earlier).
    fn verify(&self, key: &SecretKey) -> Option<Result<(), AuthError>> {
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        let [k, t, n, c, s, v, h, i] = &self.headers;
        let headers = SignatureHeaders {
            version: text(v)?,
            host: text(h)?,
            identity: text(i)?,
            key: text(k)?,
            timestamp: text(t)?,
            nonce: text(n)?,
            content_sha256: text(c)?,
            signature: text(s)?,
        };
        let (method, path) = (text(&self.method)?, text(&self.path)?);
        let verdict = verify_request(&[key.public()], &headers, &host().ok()?, &IDENTITY, &method, &path, NOW)
            .and_then(|()| {
                let matches = body_sha256(&self.body).eq_ignore_ascii_case(&headers.content_sha256);
                if matches {
                    Ok(())
                } else {
                    Err(AuthError::BodyMismatch)
                }
            });
        Some(verdict)
    }
}

pub fn check(data: &[u8]) -> Verdict {
    let key = fleet_key()?;
    if let Some(request) = Request::parse(data) {
        as_given(&key, &request)?;
    }
    signed_and_mutated(&key, data)
}

/// (1): acceptance implies the key's own signature over exactly these fields.
fn as_given(key: &SecretKey, r: &Request) -> Verdict {
    let Some(verdict) = r.verify(key) else { return Ok(()) };
    if let Err(AuthError::Stale { skew }) = verdict {
        return ensure(skew > TIMESTAMP_WINDOW_SECS, || format!("refused as stale with skew {skew}"));
    }
    if verdict.is_err() {
        return Ok(());
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let timestamp: u64 = text(&r.headers[1]).parse().map_err(|_| "accepted an unparsable timestamp".to_owned())?;
    ensure(text(&r.headers[5]) == SIGNATURE_VERSION.to_string(), || "accepted another scheme".to_owned())?;
    ensure(text(&r.headers[6]) == HOST, || format!("accepted a request for host {:?}", text(&r.headers[6])))?;
    ensure(text(&r.headers[7]) == STANDARD.encode(IDENTITY), || "accepted a request for another identity".to_owned())?;
    let host = host()?;
    let request = RequestToSign {
        host: &host,
        identity: &IDENTITY,
        method: &text(&r.method),
        path: &text(&r.path),
        timestamp,
        nonce: &text(&r.headers[2]),
        content_sha256: &text(&r.headers[3]),
    };
    let own = STANDARD.decode(key.sign_bytes(canonical_request(&request).as_bytes())).map_err(|e| e.to_string())?;
    let given = STANDARD.decode(&r.headers[4]).map_err(|e| format!("accepted a signature that is not base64: {e}"))?;
    ensure(text(&r.headers[0]) == key.name, || "accepted another key's name".to_owned())?;
    ensure(given == own, || format!("accepted a signature the key did not make: {r:?}"))?;
    ensure(timestamp.abs_diff(NOW) <= TIMESTAMP_WINDOW_SECS, || format!("accepted timestamp {timestamp}"))
}

/// (2): a genuine request from the input's method, path and body, then one-byte changes.
fn signed_and_mutated(key: &SecretKey, data: &[u8]) -> Verdict {
    let digest = Sha256::digest(data);
    let (fields, body) = split_lines(data, 2).unwrap_or((vec![b"GET".as_slice(), b"/v1/status".as_slice()], data));
    let (method, path) = (String::from_utf8_lossy(fields[0]), String::from_utf8_lossy(fields[1]));
    let timestamp = NOW - TIMESTAMP_WINDOW_SECS + u64::from(digest[0]) % (2 * TIMESTAMP_WINDOW_SECS + 1);
    let nonce = hex::encode(&digest[..16]);
    let genuine = Request::signed(key, &host()?, (&method, &path, body), timestamp, &nonce);
    ensure(genuine.verify(key) == Some(Ok(())), || format!("a genuine request is refused: {genuine:?}"))?;

    // Every position of every field, walked in a data-dependent order with a non-zero flip.
    let wire = genuine.encode();
    let count = wire.len();
    let start = usize::from(u16::from_le_bytes([digest[1], digest[2]])) % count;
    for step in 0..count.min(16) {
        let at = (start + step * 7919) % count;
        let flip = digest[3 + step % 29] | 1;
        let mut bytes = wire.clone();
        bytes[at] ^= flip;
        if bytes[at] == b'\n' || wire[at] == b'\n' {
            continue; // that moves a field boundary rather than changing one byte of a field
        }
        let Some(mutated) = Request::parse(&bytes) else { continue };
        if let Some(Ok(())) = mutated.verify(key) {
            return Err(format!("a request with byte {at} changed (^{flip:#04x}) is accepted: {mutated:?}"));
        }
    }

    let mut forged = genuine.clone();
    let random: Vec<u8> = digest.iter().chain(Sha256::digest(digest).iter()).copied().collect();
    forged.headers[4] = STANDARD.encode(&random).into_bytes();
    ensure(forged.verify(key) != Some(Ok(())), || "a random signature is accepted".to_owned())
}
