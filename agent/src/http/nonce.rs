//! Replay protection for signed requests: [`NonceCache`], the nonces seen within the
//! timestamp window, and [`NonceClaim`], a nonce held while a streamed body is checked.
//!
//! Invariant: a nonce is recorded only for a request whose signature AND body hash
//! verified, so a body altered in transit cannot burn the genuine request's nonce; while
//! a streamed body is being checked its nonce is claimed (in flight), so a replay of it
//! cannot be received a second time alongside.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use hostctl_schemas::signing::TIMESTAMP_WINDOW_SECS;

/// How many nonces the agent remembers at once: at most this many signed requests per
/// timestamp window (2 × 120 s). Beyond it requests are refused rather than a nonce being
/// forgotten early, which would reopen the replay window.
pub const NONCE_CAPACITY: usize = 100_000;

/// How often expired nonces are swept out even when the cache is not full, in seconds.
const SWEEP_INTERVAL_SECS: u64 = 30;

/// What the cache keeps of a nonce: the first 128 bits of its SHA-256, 16 bytes inline
/// (an entry of 24 bytes instead of 32 plus a heap string: under load the cache holds
/// every nonce of the last two minutes, and 10,000 requests grew a string map by ~1 MiB,
/// 8% of the agent). The same nonce always gives the same key, so a replay is always
/// caught; two different nonces sharing a key (chance ~2^-128 per pair) would only refuse
/// the second request.
type NonceKey = [u8; 16];

fn nonce_key(nonce: &str) -> NonceKey {
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
    #[error("a request with this nonce is being received (replayed request)")]
    InFlight,
    #[error("too many signed requests within the timestamp window ({0} nonces remembered); retry later")]
    Full(usize),
}

/// Nonces seen within the timestamp window, each remembered until a request carrying it
/// would be stale anyway, and those claimed by requests whose body is still arriving. The
/// table keeps the size of the busiest window (at most [`NONCE_CAPACITY`] entries, ~3 MiB):
/// handing it back after a burst only fragments the heap when the next burst grows it again.
#[derive(Debug)]
pub struct NonceCache {
    /// Nonce -> last Unix second at which a request with it could still be accepted.
    seen: HashMap<NonceKey, u64>,
    /// Claimed by a request in flight ([`NonceClaim`]); counted against the capacity.
    claimed: HashSet<NonceKey>,
    capacity: usize,
    last_sweep: u64,
}

impl NonceCache {
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashMap::new(), claimed: HashSet::new(), capacity, last_sweep: 0 }
    }

    /// Records `nonce` of a request signed at `timestamp`, or refuses it.
    pub fn check_and_remember(&mut self, nonce: &str, timestamp: u64, now: u64) -> Result<(), NonceError> {
        let key = nonce_key(nonce);
        self.check_new(&key, now)?;
        self.seen.insert(key, timestamp.saturating_add(TIMESTAMP_WINDOW_SECS));
        Ok(())
    }

    /// Refuses `nonce` if it was seen or is claimed (or would not fit); records nothing.
    pub fn check_unused(&mut self, nonce: &str, now: u64) -> Result<(), NonceError> {
        self.check_new(&nonce_key(nonce), now)
    }

    /// Refuses a nonce seen or claimed, or one that would not fit.
    fn check_new(&mut self, key: &NonceKey, now: u64) -> Result<(), NonceError> {
        if self.seen.get(key).is_some_and(|until| *until >= now) {
            return Err(NonceError::Replayed);
        }
        if self.claimed.contains(key) {
            return Err(NonceError::InFlight);
        }
        if self.len() >= self.capacity || now.saturating_sub(self.last_sweep) >= SWEEP_INTERVAL_SECS {
            self.seen.retain(|_, until| *until >= now);
            self.last_sweep = now;
        }
        if self.len() >= self.capacity {
            return Err(NonceError::Full(self.capacity));
        }
        Ok(())
    }

    /// Nonces remembered or claimed.
    pub fn len(&self) -> usize {
        self.seen.len() + self.claimed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cache shared by every route; claims hold it to commit or release themselves.
#[derive(Debug, Clone)]
pub struct SharedNonces(Arc<Mutex<NonceCache>>);

impl SharedNonces {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(NonceCache::new(capacity))))
    }

    /// A poisoned lock only means another request panicked mid-insert; the map is fine.
    pub fn lock(&self) -> MutexGuard<'_, NonceCache> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `nonce` for a request whose body is still to be checked.
    pub fn claim(&self, nonce: &str, timestamp: u64, now: u64) -> Result<NonceClaim, NonceError> {
        let key = nonce_key(nonce);
        let mut cache = self.lock();
        cache.check_new(&key, now)?;
        cache.claimed.insert(key);
        Ok(NonceClaim { nonces: self.clone(), key, until: timestamp.saturating_add(TIMESTAMP_WINDOW_SECS) })
    }
}

/// A nonce held while its request's body arrives: [`NonceClaim::commit`] records it once
/// the body verified; dropped uncommitted (bad body, broken connection, refused request),
/// it is released and the genuine request can still use it.
#[derive(Debug)]
pub struct NonceClaim {
    nonces: SharedNonces,
    key: NonceKey,
    until: u64,
}

impl NonceClaim {
    /// Records the nonce as used.
    pub fn commit(self) {
        let mut cache = self.nonces.lock();
        cache.claimed.remove(&self.key);
        cache.seen.insert(self.key, self.until);
        drop(cache);
        // Already moved to `seen`: the release in `drop` finds nothing to do.
    }
}

impl Drop for NonceClaim {
    fn drop(&mut self) {
        self.nonces.lock().claimed.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "00112233445566778899aabbccddeeff";

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

    #[test]
    fn a_claim_blocks_its_nonce_until_released_or_committed() {
        let nonces = SharedNonces::new(10);
        let claim = nonces.claim(NONCE, 1000, 1000).unwrap();
        assert_eq!(nonces.claim(NONCE, 1000, 1000).unwrap_err(), NonceError::InFlight);
        assert_eq!(nonces.lock().check_and_remember(NONCE, 1000, 1000), Err(NonceError::InFlight));
        // Released (the body did not verify): the genuine request can use the nonce.
        drop(claim);
        assert!(nonces.lock().is_empty());
        let claim = nonces.claim(NONCE, 1000, 1000).unwrap();
        claim.commit();
        assert_eq!(nonces.claim(NONCE, 1000, 1001).unwrap_err(), NonceError::Replayed);
        assert_eq!(nonces.lock().len(), 1);
    }

    #[test]
    fn claims_count_against_the_capacity() {
        let nonces = SharedNonces::new(1);
        let _claim = nonces.claim("a", 1000, 1000).unwrap();
        assert_eq!(nonces.claim("b", 1000, 1000).unwrap_err(), NonceError::Full(1));
    }
}
