//! OpenPGP commit signatures: the armored signature in the commit's `gpgsig` header,
//! checked by `pgp` (rpgp) against the keys of `openpgp_keyring`. A key that is expired
//! now, or revoked (primary key or signing subkey), signs nothing: a signature's own
//! creation time is the signer's claim, so a retired key could still claim an old one.

use std::path::{Path, PathBuf};

use hostctl_schemas::commits::{RefusalReason, SignatureKind, Signer};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, PublicKeyTrait};

use crate::ssh::utc;
use crate::Failure;

/// The trusted OpenPGP keys.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub file: PathBuf,
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Reads armored public keys (one or more blocks); each key's self-signatures must verify.
    pub fn parse(text: &str, file: &Path) -> Result<Self, String> {
        let (keys, _) =
            SignedPublicKey::from_string_many(text).map_err(|e| format!("not armored OpenPGP public keys: {e}"))?;
        let keys: Vec<SignedPublicKey> =
            keys.collect::<Result<_, _>>().map_err(|e| format!("cannot read a key: {e}"))?;
        if keys.is_empty() {
            return Err("no OpenPGP public key in it".into());
        }
        for key in &keys {
            key.verify().map_err(|e| format!("key {}: its self-signatures do not verify: {e}", hex(key)))?;
        }
        Ok(Self { file: file.to_owned(), keys })
    }
}

fn hex(key: &SignedPublicKey) -> String {
    format!("{:X}", key.primary_key.fingerprint())
}

/// The signer of `payload`, if `armored` is a good signature by a valid key of `keyring`.
pub(crate) fn verify(keyring: Option<&Keyring>, armored: &[u8], payload: &[u8], now: i64) -> Result<Signer, Failure> {
    let text = std::str::from_utf8(armored)
        .map_err(|_| Failure::new(RefusalReason::BadSignature, "its OpenPGP signature is not text".into()))?;
    let (sig, _) = DetachedSignature::from_string(text)
        .map_err(|e| Failure::new(RefusalReason::BadSignature, format!("cannot read its OpenPGP signature: {e}")))?;
    let sig = sig.signature;
    let issuer = issuer(&sig);
    let Some(keyring) = keyring else {
        return Err(Failure::new(
            RefusalReason::UnknownSigner,
            format!("it is signed with the OpenPGP key {issuer}, but no `openpgp_keyring` is configured"),
        ));
    };
    let Some((key, subkey)) = find(keyring, &sig) else {
        return Err(Failure::new(
            RefusalReason::UnknownSigner,
            format!("its OpenPGP key {issuer} is not in {}", keyring.file.display()),
        ));
    };
    let fingerprint = hex(key);
    let checked = match subkey {
        Some(sub) => sig.verify(&sub.key, payload),
        None => sig.verify(&key.primary_key, payload),
    };
    checked.map_err(|e| {
        Failure::new(
            RefusalReason::BadSignature,
            format!("its OpenPGP signature by {fingerprint} does not match the commit ({e}): changed after signing?"),
        )
    })?;
    let revoked = !key.details.revocation_signatures.is_empty()
        || subkey.is_some_and(|s| s.signatures.iter().any(|s| s.typ() == Some(SignatureType::SubkeyRevocation)));
    if revoked {
        return Err(Failure::new(RefusalReason::Revoked, format!("its OpenPGP key {fingerprint} is revoked")));
    }
    if let Some(expired) = expiry(key, subkey).filter(|at| *at <= now) {
        return Err(Failure::new(
            RefusalReason::Expired,
            format!("its OpenPGP key {fingerprint} expired at {}", utc(expired)),
        ));
    }
    let created = key.primary_key.created_at().timestamp();
    if sig.created().is_some_and(|t| t.timestamp() < created) {
        return Err(Failure::new(
            RefusalReason::NotYetValid,
            format!("its OpenPGP signature predates the key {fingerprint} ({})", utc(created)),
        ));
    }
    Ok(Signer { kind: SignatureKind::Openpgp, name: user_id(key), fingerprint })
}

/// What the signature names as its issuer, for messages.
fn issuer(sig: &Signature) -> String {
    match (sig.issuer_fingerprint().first(), sig.issuer().first()) {
        (Some(fp), _) => format!("{fp:X}"),
        (None, Some(id)) => hex::encode_upper(id),
        (None, None) => "(no issuer)".into(),
    }
}

/// The key (and signing subkey, when not the primary) the signature names.
fn find<'a>(
    keyring: &'a Keyring,
    sig: &Signature,
) -> Option<(&'a SignedPublicKey, Option<&'a pgp::composed::SignedPublicSubKey>)> {
    let (fingerprints, ids) = (sig.issuer_fingerprint(), sig.issuer());
    let names = |fp: pgp::types::Fingerprint, id: pgp::types::KeyId| fingerprints.contains(&&fp) || ids.contains(&&id);
    keyring.keys.iter().find_map(|key| {
        if names(key.primary_key.fingerprint(), key.primary_key.key_id()) {
            return Some((key, None));
        }
        key.public_subkeys.iter().find(|s| names(s.key.fingerprint(), s.key.key_id())).map(|s| (key, Some(s)))
    })
}

/// When the key (or the subkey) stops being valid: the newest self-signature decides.
fn expiry(key: &SignedPublicKey, subkey: Option<&pgp::composed::SignedPublicSubKey>) -> Option<i64> {
    let newest = |sigs: &mut dyn Iterator<Item = &Signature>| -> Option<Signature> {
        sigs.max_by_key(|s| s.created().map(|t| t.timestamp())).cloned()
    };
    let primary = newest(&mut key.details.users.iter().flat_map(|u| u.signatures.iter()))
        .and_then(|s| s.key_expiration_time().map(|d| key.primary_key.created_at().timestamp() + secs(d)));
    let sub = subkey.and_then(|s| {
        newest(&mut s.signatures.iter().filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)))
            .and_then(|b| b.key_expiration_time().map(|d| s.key.created_at().timestamp() + secs(d)))
    });
    match (primary, sub) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn secs(d: &chrono::Duration) -> i64 {
    d.num_seconds()
}

/// The key's first user id, as text.
fn user_id(key: &SignedPublicKey) -> String {
    key.details.users.first().map_or_else(|| hex(key), |u| String::from_utf8_lossy(u.id.id()).into_owned())
}
