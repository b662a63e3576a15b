//! Which accepted connections the API keeps: [`Admission`] counts open connections, in
//! all and per peer address, and refuses one over either cap; the [`Slot`] it hands out
//! frees its place when the connection ends.
//!
//! Invariant: at most `max` connections are open at once, at most `per_peer` of them
//! from one address; one over a cap is closed at once, before a byte of it is read, so
//! its file descriptor is freed and a crowd of half-open connections from one address
//! cannot starve anyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} connections are open (max_connections)")]
    Full(usize),
    #[error("{0} connections from this address are open (max_connections_per_peer)")]
    PeerFull(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// The open connections' counts and caps; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Admission {
    counts: Arc<Mutex<Counts>>,
    max: usize,
    per_peer: usize,
}

impl Admission {
    pub fn new(max: usize, per_peer: usize) -> Self {
        Self { counts: Arc::default(), max, per_peer }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Counting cannot panic half-way; a poisoned lock holds consistent counts.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `peer`, or why there is none.
    pub fn admit(&self, peer: IpAddr) -> Result<Slot, Refused> {
        let mut counts = self.lock();
        if counts.total >= self.max {
            return Err(Refused::Full(counts.total));
        }
        let from_peer = counts.per_peer.entry(peer).or_insert(0);
        if *from_peer >= self.per_peer {
            return Err(Refused::PeerFull(*from_peer));
        }
        *from_peer += 1;
        counts.total += 1;
        Ok(Slot { admission: self.clone(), peer })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// One admitted connection's place; freed on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Admission,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forgotten once closed: the map holds only addresses with open connections.
                counts.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_peer_and_frees_on_drop() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refused::PeerFull(2));
        let _b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refused::Full(3));
        drop(a1);
        assert_eq!(admission.open(), 2);
        let _b2 = admission.admit(b).unwrap();
        drop(_b2);
        drop(_b1);
        drop(_a2);
        assert_eq!(admission.open(), 0);
        assert!(admission.lock().per_peer.is_empty(), "closed peers are forgotten");
    }
}
