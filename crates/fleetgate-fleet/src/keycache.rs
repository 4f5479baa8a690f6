//! The heartbeat endpoint's cache of node keys: node id → the enrolled public key, parsed.
//!
//! Verifying a heartbeat needs its node's key; reading it from the registry on every
//! heartbeat is a database round trip, and parsing it (a point decompression) costs a
//! third of the signature check. The cache holds the key of every node whose heartbeat
//! was verified, never a removed or unknown node. It can be stale — another process may
//! remove a node or enroll it again with a new key — so it is a hint, never the
//! authority: [`crate::Registry::store_heartbeats`] accepts a heartbeat only if, in the
//! same transaction, the node is still not removed and its stored key is still the one
//! the signature was verified with; a heartbeat refused there evicts its node, so the
//! next one reads the registry again, and a signature that does not verify with a cached
//! key is checked once more with the key read afresh (the node may have been enrolled
//! again with a new key by another process); only a key that verifies replaces the cached
//! one, so a forged heartbeat does not evict it. Bounded: when [`MAX_ENTRIES`] nodes are cached,
//! it starts over empty.

use std::collections::HashMap;
use std::sync::Mutex;

use fleetgate_trust::PublicKey;

/// Most nodes cached (about 200 bytes each).
pub(crate) const MAX_ENTRIES: usize = 1_000_000;

/// Node keys by node id (see the module docs).
#[derive(Default)]
pub(crate) struct KeyCache {
    keys: Mutex<HashMap<String, (String, PublicKey)>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, PublicKey)>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached key of `node` (hex as enrolled, parsed).
    pub fn get(&self, node: &str) -> Option<(String, PublicKey)> {
        self.lock().get(node).cloned()
    }

    /// Caches `node`'s key.
    pub fn put(&self, node: &str, hex: String, key: PublicKey) {
        let mut keys = self.lock();
        if keys.len() >= MAX_ENTRIES && !keys.contains_key(node) {
            keys.clear();
        }
        keys.insert(node.to_owned(), (hex, key));
    }

    /// Forgets `node` (it was removed, enrolled again, or a heartbeat verified with the
    /// cached key was refused when stored).
    pub fn evict(&self, node: &str) {
        self.lock().remove(node);
    }

    /// Nodes cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}
