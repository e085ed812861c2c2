//! The keys this node denied most often, for `RATELIMIT.TOP`: a Space-Saving summary (Metwally,
//! Agrawal and El Abbadi, 2005) of at most `capacity` keys.
//!
//! A denial of a tracked key adds one to its count. A denial of another key, once the summary is
//! full, takes the place of the key with the smallest count, starting from that count plus one.
//! So memory is fixed, whatever the number of distinct keys, and every key denied more than
//! `total / capacity` times is in the summary, with a count that overestimates by at most the
//! count it inherited (reported as its `error`).
//!
//! The entries are a binary min-heap by count, indexed by a hash table from key to heap slot: a
//! denial costs a lookup and a few swaps. Keys longer than [`MAX_KEY_LEN`] are tracked by their
//! first bytes, so that a flood of huge key names cannot grow the summary.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The longest key prefix the summary keeps, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The default capacity: the `top-keys` configuration.
pub const DEFAULT_CAPACITY: usize = 128;

/// The largest capacity `top-keys` accepts.
pub const MAX_CAPACITY: usize = 100_000;

/// One tracked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, or its first [`MAX_KEY_LEN`] bytes.
    pub key: Box<[u8]>,
    /// Denials counted, an overestimate by at most `error`.
    pub count: u64,
    /// The count inherited from the key it replaced.
    pub error: u64,
}

/// A Space-Saving summary of at most `capacity` keys.
#[derive(Debug, Default)]
pub struct TopKeys {
    capacity: usize,
    /// A min-heap by count.
    heap: Vec<Entry>,
    /// Key -> its slot in `heap`.
    index: HashMap<Box<[u8]>, usize>,
}

impl TopKeys {
    /// An empty summary of at most `capacity` keys; 0 counts nothing.
    pub fn new(capacity: usize) -> TopKeys {
        TopKeys {
            capacity: capacity.min(MAX_CAPACITY),
            heap: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The most keys it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counts one denial of `key`.
    pub fn record(&mut self, key: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let key = &key[..key.len().min(MAX_KEY_LEN)];
        if let Some(&slot) = self.index.get(key) {
            self.heap[slot].count = self.heap[slot].count.saturating_add(1);
            self.sift_down(slot);
            return;
        }
        let key: Box<[u8]> = key.into();
        if self.heap.len() < self.capacity {
            self.index.insert(key.clone(), self.heap.len());
            self.heap.push(Entry {
                key,
                count: 1,
                error: 0,
            });
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // Full: the smallest count is at the root; the newcomer takes its place.
        let floor = self.heap[0].count;
        let old = std::mem::replace(
            &mut self.heap[0],
            Entry {
                key: key.clone(),
                count: floor.saturating_add(1),
                error: floor,
            },
        );
        self.index.remove(&old.key);
        self.index.insert(key, 0);
        self.sift_down(0);
    }

    /// The `count` most denied keys, largest count first (ties by key). It selects them among
    /// references to the entries, in time linear in the summary's size, then sorts and copies
    /// only those `count`: `RATELIMIT.TOP 10` of a summary of 100,000 keys stays cheap.
    pub fn top(&self, count: usize) -> Vec<Entry> {
        if count == 0 {
            return Vec::new();
        }
        let order = |a: &&Entry, b: &&Entry| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key));
        let mut entries: Vec<&Entry> = self.heap.iter().collect();
        if count < entries.len() {
            entries.select_nth_unstable_by(count - 1, order);
            entries.truncate(count);
        }
        entries.sort_unstable_by(order);
        entries.into_iter().cloned().collect()
    }

    /// Forgets every key, keeping the capacity.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.index.clear();
    }

    /// The same summary with another capacity: the largest counts are kept.
    pub fn resized(&self, capacity: usize) -> TopKeys {
        let mut resized = TopKeys::new(capacity);
        for entry in self.top(resized.capacity) {
            resized.index.insert(entry.key.clone(), resized.heap.len());
            resized.heap.push(entry);
        }
        // Sorted by count descending: make it a min-heap again.
        for slot in (0..resized.heap.len() / 2).rev() {
            resized.sift_down(slot);
        }
        resized
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for slot in [a, b] {
            if let Some(position) = self.index.get_mut(&self.heap[slot].key) {
                *position = slot;
            }
        }
    }

    fn sift_up(&mut self, mut slot: usize) {
        while slot > 0 {
            let parent = (slot - 1) / 2;
            if self.heap[parent].count <= self.heap[slot].count {
                break;
            }
            self.swap(parent, slot);
            slot = parent;
        }
    }

    fn sift_down(&mut self, mut slot: usize) {
        loop {
            let (left, right) = (2 * slot + 1, 2 * slot + 2);
            let mut smallest = slot;
            if left < self.heap.len() && self.heap[left].count < self.heap[smallest].count {
                smallest = left;
            }
            if right < self.heap.len() && self.heap[right].count < self.heap[smallest].count {
                smallest = right;
            }
            if smallest == slot {
                return;
            }
            self.swap(slot, smallest);
            slot = smallest;
        }
    }
}

/// The node's summary. Module commands run one at a time under the server's lock, so the
/// mutex is never contended; it makes the static safe to share.
static TOP: Mutex<Option<TopKeys>> = Mutex::new(None);

/// Runs `f` on the node's summary, made with `capacity` on first use.
pub(crate) fn with<T>(f: impl FnOnce(&mut TopKeys) -> T) -> T {
    let mut guard = TOP.lock().unwrap_or_else(PoisonError::into_inner);
    let top = guard.get_or_insert_with(|| TopKeys::new(crate::config::top_keys()));
    f(top)
}

/// Counts one denial of `key` on this node.
#[inline]
pub(crate) fn record(key: &[u8]) {
    if crate::config::top_keys() > 0 {
        with(|top| top.record(key));
    }
}

/// Applies a new capacity, keeping the largest counts.
pub(crate) fn resize(capacity: usize) {
    let mut guard = TOP.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(top) = guard.as_ref() {
        if top.capacity() != capacity {
            *guard = Some(top.resized(capacity));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(top: &TopKeys, n: usize) -> Vec<(String, u64)> {
        top.top(n)
            .into_iter()
            .map(|e| (String::from_utf8(e.key.into_vec()).unwrap(), e.count))
            .collect()
    }

    /// Checks the heap and the index agree.
    fn assert_consistent(top: &TopKeys) {
        assert!(top.heap.len() <= top.capacity);
        assert_eq!(top.index.len(), top.heap.len());
        for (slot, entry) in top.heap.iter().enumerate() {
            assert_eq!(top.index[&entry.key], slot);
            if slot > 0 {
                assert!(top.heap[(slot - 1) / 2].count <= entry.count);
            }
        }
    }

    #[test]
    fn counts_exactly_below_the_capacity() {
        let mut top = TopKeys::new(4);
        for key in ["a", "b", "a", "c", "a", "b"] {
            top.record(key.as_bytes());
            assert_consistent(&top);
        }
        assert_eq!(
            keys(&top, 10),
            [("a".into(), 3), ("b".into(), 2), ("c".into(), 1)]
        );
        assert_eq!(keys(&top, 1), [("a".into(), 3)]);
    }

    #[test]
    fn a_newcomer_takes_the_smallest_place() {
        let mut top = TopKeys::new(2);
        for key in ["a", "a", "a", "b", "c"] {
            top.record(key.as_bytes());
            assert_consistent(&top);
        }
        // "c" replaced "b" (count 1) and starts at 2, with an error of 1.
        let entries = top.top(10);
        assert_eq!(entries[0].key.as_ref(), b"a");
        assert_eq!(
            (entries[1].key.as_ref(), entries[1].count, entries[1].error),
            (&b"c"[..], 2, 1)
        );
    }

    #[test]
    fn heavy_hitters_are_found_in_a_skewed_stream() {
        // A Zipf-like stream over 100,000 keys: key i is denied about 10^6 / (i + 1) times.
        let mut exact = HashMap::new();
        let mut top = TopKeys::new(DEFAULT_CAPACITY);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..400_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Inverse transform of a 1/x density over [1, 100_000].
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            let i = (100_000f64.powf(u) - 1.0) as u64;
            let key = format!("k{i}");
            *exact.entry(key.clone()).or_insert(0u64) += 1;
            top.record(key.as_bytes());
        }
        assert_consistent(&top);
        let mut truth: Vec<(String, u64)> = exact.into_iter().collect();
        truth.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let found: Vec<String> = keys(&top, 10).into_iter().map(|(k, _)| k).collect();
        let expected: Vec<String> = truth.iter().take(10).map(|(k, _)| k.clone()).collect();
        assert_eq!(found, expected);
        for entry in top.top(10) {
            let key = String::from_utf8(entry.key.to_vec()).unwrap();
            let real = truth.iter().find(|(k, _)| *k == key).unwrap().1;
            assert!(
                entry.count >= real && entry.count - entry.error <= real,
                "{key}"
            );
        }
    }

    #[test]
    fn any_count_gives_the_head_of_the_full_order() {
        let mut top = TopKeys::new(300);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few distinct counts, so that ties (broken by key) are common.
            top.record(format!("k{}", state % 400 / (1 + state % 3)).as_bytes());
        }
        let mut all = top.heap.clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        for count in [0, 1, 2, 7, 150, all.len() - 1, all.len(), all.len() + 10] {
            assert_eq!(top.top(count), all[..count.min(all.len())], "count {count}");
        }
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let mut top = TopKeys::new(16);
        for i in 0..100_000u64 {
            top.record(format!("{i}").repeat(100).as_bytes());
        }
        assert_consistent(&top);
        assert_eq!(top.heap.len(), 16);
        assert!(top.heap.iter().all(|e| e.key.len() <= MAX_KEY_LEN));
    }

    #[test]
    fn resizing_keeps_the_largest_and_zero_counts_nothing() {
        let mut top = TopKeys::new(8);
        for (key, times) in [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)] {
            for _ in 0..times {
                top.record(key.as_bytes());
            }
        }
        let smaller = top.resized(2);
        assert_consistent(&smaller);
        assert_eq!(keys(&smaller, 10), [("a".into(), 5), ("b".into(), 4)]);
        let mut off = top.resized(0);
        off.record(b"x");
        assert!(off.top(10).is_empty());
        top.clear();
        assert!(top.top(10).is_empty());
    }
}
