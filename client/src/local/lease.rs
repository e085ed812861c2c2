//! [`LeaseTable`]: the in-process limiter's concurrency leases, one core [`LeaseSet`] per key,
//! with the module's exact semantics (`RATELIMIT.ACQUIRE` and `RELEASE`).

use ratelimit_core::lease::LeaseSet;
use ratelimit_core::Decision;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Every key's leases. One lock: a lease is taken once per request held, not per check, and
/// each operation is a few map lookups.
///
/// Memory is bounded by `max_keys`: a key whose leases have all ended is removed when it is
/// next touched, and every key with no live lease when the table is full; if every key still
/// holds a live lease, an arbitrary one is forgotten (its holders' slots free early), as the
/// rate limits' cap forgets the oldest key. It is a guard against floods of distinct keys.
#[derive(Debug)]
pub(crate) struct LeaseTable {
    sets: Mutex<HashMap<String, LeaseSet>>,
    max_keys: usize,
}

impl LeaseTable {
    pub(crate) fn new(max_keys: usize) -> LeaseTable {
        LeaseTable {
            sets: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// `RATELIMIT.ACQUIRE key limit lease ID id` at `now_us`.
    pub(crate) fn acquire(
        &self,
        key: &str,
        limit: u64,
        lease_ms: u64,
        id: &str,
        now_us: u64,
    ) -> Decision {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if !sets.contains_key(key) && sets.len() >= self.max_keys {
            let now_ms = now_us / 1000;
            sets.retain(|_, set| set.leases(now_ms).next().is_some());
            if sets.len() >= self.max_keys {
                if let Some(victim) = sets.keys().next().cloned() {
                    sets.remove(&victim);
                }
            }
        }
        let set = sets.entry(key.to_string()).or_default();
        let (decision, _) = set.acquire(limit, lease_ms, now_us, Some(id.as_bytes()));
        if set.is_empty() {
            sets.remove(key);
        }
        decision
    }

    /// `RATELIMIT.RELEASE key id` at `now_us`: whether `id` was live.
    pub(crate) fn release(&self, key: &str, id: &str, now_us: u64) -> bool {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(set) = sets.get_mut(key) else {
            return false;
        };
        let released = set.release(id.as_bytes(), now_us / 1000);
        if set.is_empty() {
            sets.remove(key);
        }
        released
    }

    /// The number of keys held, including those whose leases ended and are not yet removed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_releases_and_heals() {
        let table = LeaseTable::new(10);
        let at = |ms: u64| ms * 1000;
        assert!(table.acquire("k", 2, 100, "a", at(1000)).allowed);
        assert!(table.acquire("k", 2, 100, "b", at(1000)).allowed);
        let denied = table.acquire("k", 2, 100, "c", at(1050));
        assert_eq!((denied.allowed, denied.retry_after_ms), (false, 50));
        assert!(table.release("k", "a", at(1060)));
        assert!(!table.release("k", "a", at(1060)));
        assert!(table.acquire("k", 2, 100, "c", at(1060)).allowed);
        // Both leases end: the key goes with them.
        assert!(!table.release("k", "b", at(1200)));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_full_table_forgets_ended_keys_first() {
        let table = LeaseTable::new(2);
        assert!(table.acquire("a", 1, 10, "x", 0).allowed);
        assert!(table.acquire("b", 1, 1000, "x", 0).allowed);
        // "a" has ended at 20 ms: it makes room, and "b" keeps its lease.
        assert!(table.acquire("c", 1, 1000, "x", 20_000).allowed);
        assert!(!table.acquire("b", 1, 1000, "y", 20_000).allowed);
        assert_eq!(table.len(), 2);
    }
}
