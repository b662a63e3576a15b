//! Agent identities in the test harness: each simulated host's identity key is
//! pre-provisioned (`identity_key_file`), derived from its name so the fleet file can pin
//! it before the agent starts, and the raw clients ([`crate::http`]) pin the identity of
//! the agent listening at an address ([`register`], done by `SimHost::start_agent`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use hostctl_schemas::key::PublicKey;
use hostctl_schemas::signing::SecretKey;
use sha2::{Digest, Sha256};

/// The identity key of the test agent of host `name` (fixed per name).
pub fn test_identity(name: &str) -> SecretKey {
    let seed: [u8; 32] = Sha256::digest(format!("hostctl-test-identity\n{name}")).into();
    SecretKey::from_seed(name, seed)
}

/// Its public key as the controller pins it, `<name>:<base64>`.
pub fn test_identity_public(name: &str) -> PublicKey {
    PublicKey { name: name.to_owned(), key: test_identity(name).public().key }
}

/// Writes [`test_identity`] of `name` to `path`, mode 0600.
pub fn write_identity(path: &std::path::Path, name: &str) {
    let _ = std::fs::remove_file(path);
    crate::write_secret(path, &test_identity(name).to_nix_text());
}

static PINS: Mutex<Option<HashMap<String, [u8; 32]>>> = Mutex::new(None);

/// Records that the agent at `addr` (`ip:port`) has identity `key`.
pub fn register(addr: &str, key: [u8; 32]) {
    PINS.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(HashMap::new).insert(addr.to_owned(), key);
}

/// The identity registered for `addr`, if any.
pub fn pin_for(addr: &str) -> Option<[u8; 32]> {
    PINS.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(|pins| pins.get(addr).copied())
}
