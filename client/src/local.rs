//! The in-process limiter: the contract's algorithms with an in-process store. The store
//! answers with it while Redis is out and the failure policy is `Local`; it is also a limiter
//! of its own for a single process (it implements the tower layer's `Limiter`).
//!
//! It gives exactly the decisions the module gives for the same requests at the same instants:
//! each key keeps the core [`State`] and the absolute expiry that the module would write with
//! `PXAT`, and an entry whose expiry has passed (`now_ms > expire_at_ms`, as Redis decides) is
//! absent. What it cannot share with Redis is the state itself: each process limits on its own.
//!
//! # Speed
//! Keys are spread over a power-of-two number of shards (up to 64), each a `Mutex` around a
//! hash table and the queue of its keys in insertion order, so that threads on different keys
//! rarely wait for each other. A check hashes its key once, and that hash picks the shard and
//! indexes its table. A check of a stored key does not allocate, and reads the time from the
//! CPU's counter rather than the system's clock (see [`LocalLimiter::check`]).
//!
//! The hash is foldhash's, seeded at random for each limiter, as hashbrown's maps are by
//! default: several times faster than the standard library's SipHash on short keys. It resists
//! collision floods from keys chosen blindly; a client able to study the process's timing at
//! length could in principle learn enough of the seed to build colliding keys. That would only
//! slow the shard they fall in (a shard holds at most `max_entries / 64` keys beyond 16,384
//! entries), and never change a decision.
//!
//! # Memory
//! Memory is bounded two ways:
//! - **Expiry.** Every insert inspects the next two keys of the queue, round robin, and removes
//!   them if they have expired, so an expired entry is gone after at most about as many inserts
//!   as the shard holds entries. A lookup of an expired key removes it too.
//! - **A cap.** A shard that holds its share of `max_entries` evicts its **oldest key by
//!   insertion** (the one whose state was created first since it was last absent) before taking
//!   a new one. With fewer than 512 entries there is one shard and the order is exact; beyond,
//!   it is exact within a shard, which approximates the global order. The cap is split evenly
//!   among the shards, so one can fill a little before the whole does: give `max_entries`
//!   headroom over the keys expected to be active at once. Evicting a key forgets what it
//!   spent: the cap is a memory guard against floods of distinct keys, not a cache.

mod multi;

use crate::command::{Command, Reply};
use crate::decision::{Backend, Decision};
use crate::error::Error;
use crate::limit::Limit;
use foldhash::quality::RandomState;
use hashbrown::HashTable;
use ratelimit_core::{decide, quota, Change, State, Update, WrongAlgorithm, MAX_COUNT};
use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most shards a limiter uses.
const MAX_SHARDS: usize = 64;
/// The fewest entries a shard is made for: small limiters get one shard and an exact order.
const MIN_SHARD_ENTRIES: usize = 256;
/// Keys inspected for expiry on each insert.
const SWEEP_STEPS: usize = 2;

/// An in-process rate limiter with the module's exact semantics, for any number of keys.
///
/// It is `Send + Sync`; share it in an `Arc`. Checks on different keys rarely contend.
pub struct LocalLimiter {
    shards: Box<[Padded]>,
    /// The seeded hash of every key, computed once per check for the shard and its table.
    /// foldhash's quality variant: the shard is picked by high bits of the hash.
    hasher: RandomState,
    clock: Clock,
}

/// The clock of [`LocalLimiter::check`]: the wall clock, read once when the limiter is made,
/// then carried forward by a monotonic clock that reads the CPU's time-stamp counter (quanta's,
/// as governor's limiters use; the system's monotonic clock where there is no usable counter).
/// It reads in about half the time of the system's wall clock (see `bench/`), and never steps
/// back when the wall clock is set: the limiter's state lives in this process only, so it needs
/// its time to be steady, not to agree with another machine's. The first limiter of a process
/// calibrates the counter, which takes about a millisecond.
struct Clock {
    clock: quanta::Clock,
    /// The counter's reading when the limiter was made.
    origin: u64,
    origin_us: u64,
}

impl Clock {
    fn new() -> Clock {
        let clock = quanta::Clock::new();
        Clock {
            origin: clock.raw(),
            origin_us: wall_clock_us(),
            clock,
        }
    }

    /// Microseconds since the Unix epoch.
    fn now_us(&self) -> u64 {
        let elapsed_ns = self.clock.delta_as_nanos(self.origin, self.clock.raw());
        self.origin_us.saturating_add(elapsed_ns / 1000)
    }
}

/// One shard on its own cache lines, so that threads on different shards do not share them.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

struct Shard {
    entries: HashTable<Slot>,
    /// Every stored key in insertion order. A key removed from `entries` leaves a stale record
    /// here, recognisable because the queue then holds its only reference.
    order: VecDeque<Key<Arc<str>>>,
    /// The position of the expiry sweep in `order`.
    hand: usize,
    /// The most entries this shard holds.
    capacity: usize,
}

#[derive(Clone, Copy)]
struct Entry {
    state: State,
    expire_at_ms: u64,
}

/// One stored key: its hash (to grow the table without hashing again), its name (shared with
/// the queue) and its state.
struct Slot {
    hash: u64,
    key: Arc<str>,
    entry: Entry,
}

impl LocalLimiter {
    /// A limiter that holds at most `max_entries` keys (at least 1), evicting the oldest first.
    pub fn new(max_entries: usize) -> LocalLimiter {
        let max_entries = max_entries.max(1);
        let wanted = (max_entries / MIN_SHARD_ENTRIES).clamp(1, MAX_SHARDS);
        // The largest power of two not above `wanted`.
        let count: usize = 1 << wanted.ilog2();
        let shards = (0..count)
            .map(|index| {
                // Shares that add up to exactly `max_entries`.
                let capacity = max_entries / count + usize::from(index < max_entries % count);
                Padded(Mutex::new(Shard {
                    entries: HashTable::new(),
                    order: VecDeque::new(),
                    hand: 0,
                    capacity,
                }))
            })
            .collect();
        LocalLimiter {
            shards,
            hasher: RandomState::default(),
            clock: Clock::new(),
        }
    }

    /// Decides one request of `cost` units on `key` and, if it is admitted, spends its cost.
    /// The time is the wall clock as it was when the limiter was made, carried forward by a
    /// monotonic clock.
    ///
    /// Fails when `cost` is above 10^15, or when the key's live state belongs to another
    /// algorithm than `limit`'s ([`Error::is_wrong_algorithm`]); nothing changes then.
    pub fn check(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, Error> {
        let decision = self.decide(key, limit.core(), valid_cost(cost)?, false, None)?;
        Ok(Decision::from_core(decision, Backend::Local))
    }

    /// The decision a request of `cost` would get now, spending nothing. Fails as
    /// [`LocalLimiter::check`] does.
    pub fn check_dry_run(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, Error> {
        let decision = self.decide(key, limit.core(), valid_cost(cost)?, true, None)?;
        Ok(Decision::from_core(decision, Backend::Local))
    }

    /// [`LocalLimiter::check`] (or with `dry_run`, [`LocalLimiter::check_dry_run`]) at the
    /// instant `now` instead of the limiter's clock: for tests and simulations that drive the
    /// time themselves. Instants are counted in microseconds since the Unix epoch.
    pub fn check_at(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<Decision, Error> {
        let now_us = micros_since_epoch(now);
        let decision = self.decide(key, limit.core(), valid_cost(cost)?, dry_run, Some(now_us))?;
        Ok(Decision::from_core(decision, Backend::Local))
    }

    /// Deletes `key`'s state, as `RATELIMIT.RESET` does. Returns whether there was live
    /// (unexpired) state.
    pub fn reset(&self, key: &str) -> bool {
        self.reset_at_us(key, self.clock.now_us())
    }

    /// [`LocalLimiter::reset`] at the instant `now`, as [`LocalLimiter::check_at`] takes it.
    pub fn reset_at(&self, key: &str, now: SystemTime) -> bool {
        self.reset_at_us(key, micros_since_epoch(now))
    }

    /// Answers `command` as the module would, on this process's state: the failure policy
    /// `Local`. The command's arguments are valid (the store checks them).
    pub(crate) fn run(&self, command: &Command<'_>) -> Result<Reply, Error> {
        let decision = match *command {
            Command::Check {
                key,
                limit,
                cost,
                dry_run,
            } => self.decide(key, limit, cost, dry_run, None)?,
            // As RATELIMIT.QUOTA answers: the standing now, for a request of cost 1.
            Command::Quota { key, limit } => {
                let (hash, mut shard) = self.shard(key);
                shard.with_state(
                    Key(hash, key),
                    || self.clock.now_us(),
                    |state, now_us| Ok((quota(limit, state, now_us, 1)?, Change::Keep)),
                )?
            }
            Command::Reset { key } => return Ok(Reply::Reset(self.reset(key))),
            Command::Charge {
                key,
                limit,
                cost,
                force,
            } => {
                let (hash, mut shard) = self.shard(key);
                let (decision, window) = shard.with_state(
                    Key(hash, key),
                    || self.clock.now_us(),
                    |state, now_us| {
                        let outcome = decide(limit, state, now_us, cost, force)?;
                        Ok(((outcome.decision, outcome.window), outcome.change))
                    },
                )?;
                return Ok(Reply::Charged(decision, window));
            }
            Command::MultiCheck { charges, spend } => {
                return Ok(Reply::MultiCheck(self.multi_check(charges, spend, None)?));
            }
            Command::Refund {
                key,
                limit,
                units,
                window,
            } => {
                let (refunded, standing) = self.refund_at(key, limit, units, window, None)?;
                return Ok(Reply::Refunded(refunded, standing));
            }
        };
        Ok(Reply::Decision(decision))
    }

    /// Decides on the contract's terms, at `now_us` or by the limiter's clock.
    fn decide(
        &self,
        key: &str,
        limit: &ratelimit_core::Limit,
        cost: u64,
        dry_run: bool,
        now_us: Option<u64>,
    ) -> Result<ratelimit_core::Decision, WrongAlgorithm> {
        let (hash, mut shard) = self.shard(key);
        let decide = |state: Option<&State>, now_us: u64| {
            let outcome = decide(limit, state, now_us, cost, false)?;
            let change = if dry_run {
                Change::Keep
            } else {
                outcome.change
            };
            Ok((outcome.decision, change))
        };
        match now_us {
            Some(now_us) => shard.with_state(Key(hash, key), || now_us, decide),
            // The clock is read once the key's entry is found: reading the CPU's counter waits
            // for the instructions before it, so it costs least after the table's cache misses.
            None => shard.with_state(Key(hash, key), || self.clock.now_us(), decide),
        }
    }

    fn reset_at_us(&self, key: &str, now_us: u64) -> bool {
        let (hash, mut shard) = self.shard(key);
        let entry = shard.remove(Key(hash, key));
        entry.is_some_and(|entry| entry.is_live(now_us / 1000))
    }

    /// The number of stored entries, including expired ones that are not yet evicted. Never
    /// more than `max_entries`.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).entries.len())
            .sum()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes `key` and locks its shard.
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(key);
        (hash, lock(&self.shards[self.shard_index(hash)]))
    }

    /// The shard of a key's hash.
    fn shard_index(&self, hash: u64) -> usize {
        // Bits that the shard's table uses neither for its index (the low ones) nor for its
        // tags (the top seven).
        (hash >> 32) as usize & (self.shards.len() - 1)
    }
}

impl fmt::Debug for LocalLimiter {
    /// The shard count and the number of entries, not the entries themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .finish()
    }
}

impl Default for LocalLimiter {
    /// A limiter of 100,000 entries.
    fn default() -> LocalLimiter {
        LocalLimiter::new(100_000)
    }
}

/// Locks a shard. A panic while it was held cannot leave it inconsistent (nothing in a shard's
/// methods panics between two related writes), so a poisoned lock is used as is.
fn lock(shard: &Padded) -> MutexGuard<'_, Shard> {
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The wall clock in microseconds since the Unix epoch; 0 before it.
fn wall_clock_us() -> u64 {
    micros_since_epoch(SystemTime::now())
}

/// `time` in microseconds since the Unix epoch; 0 before it.
fn micros_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    })
}

/// `cost` if it is within the contract's range.
pub(crate) fn valid_cost(cost: u64) -> Result<u64, Error> {
    if cost > MAX_COUNT {
        return Err(Error::InvalidCost(cost));
    }
    Ok(cost)
}

impl Entry {
    fn from_update(update: Update) -> Entry {
        Entry {
            state: update.state,
            expire_at_ms: update.expire_at_ms,
        }
    }

    fn is_live(&self, now_ms: u64) -> bool {
        now_ms <= self.expire_at_ms
    }

    /// The state as the module reads it back, with the key's expiry.
    fn state(&self) -> State {
        self.state.with_expiry(self.expire_at_ms)
    }
}

impl Shard {
    /// Runs `f` on `key`'s live state (`None` when absent or expired) at the time `now` gives,
    /// in microseconds since the epoch, and makes the change it returns, as the module makes it
    /// to the key. Every entry has an expiry, so only a store or a deletion can come back.
    fn with_state<T>(
        &mut self,
        key: Key<&str>,
        now: impl FnOnce() -> u64,
        f: impl FnOnce(Option<&State>, u64) -> Result<(T, Change), WrongAlgorithm>,
    ) -> Result<T, WrongAlgorithm> {
        let found = self.entries.find_mut(key.0, |slot| slot.is(key));
        let now_us = now();
        let now_ms = now_us / 1000;
        if let Some(slot) = found {
            let entry = &mut slot.entry;
            if entry.is_live(now_ms) {
                let (answer, change) = f(Some(&entry.state()), now_us)?;
                match change {
                    Change::Store(update) => *entry = Entry::from_update(update),
                    Change::Delete => {
                        self.remove(key);
                    }
                    Change::Keep | Change::Expire(_) => {}
                }
                return Ok(answer);
            }
            // Expired: absent, and a new state must take a new place in the insertion order.
            self.remove(key);
        }
        let (answer, change) = f(None, now_us)?;
        if let Change::Store(update) = change {
            self.insert(key, Entry::from_update(update), now_ms);
        }
        Ok(answer)
    }

    fn insert(&mut self, key: Key<&str>, entry: Entry, now_ms: u64) {
        self.sweep(now_ms);
        while self.entries.len() >= self.capacity && self.evict_oldest() {}
        let name: Arc<str> = Arc::from(key.1);
        self.order.push_back(Key(key.0, Arc::clone(&name)));
        let slot = Slot {
            hash: key.0,
            key: name,
            entry,
        };
        self.entries.insert_unique(key.0, slot, |slot| slot.hash);
        if self.order.len() > 2 * self.entries.len() + 32 {
            self.compact();
        }
    }

    /// Removes the next [`SWEEP_STEPS`] keys of the queue, round robin, if they have expired.
    fn sweep(&mut self, now_ms: u64) {
        for _ in 0..SWEEP_STEPS {
            if self.hand >= self.order.len() {
                self.hand = 0;
            }
            let Some(key) = self.order.get(self.hand) else {
                return;
            };
            if key.is_stored() {
                let key = Key(key.0, &*key.1);
                let expired = self.entries.find_entry(key.0, |slot| slot.is(key)).ok();
                if let Some(found) = expired.filter(|found| !found.get().entry.is_live(now_ms)) {
                    found.remove();
                }
            }
            self.hand += 1;
        }
    }

    /// Removes the key inserted first; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some(key) = self.order.pop_front() {
            self.hand = self.hand.saturating_sub(1);
            if key.is_stored() {
                self.remove(Key(key.0, &*key.1));
                return true;
            }
        }
        false
    }

    /// Removes `key`'s entry, if any, and returns it.
    fn remove(&mut self, key: Key<&str>) -> Option<Entry> {
        let found = self.entries.find_entry(key.0, |slot| slot.is(key)).ok()?;
        Some(found.remove().0.entry)
    }

    /// Drops the stale records of the queue, keeping the sweep's place; amortized O(1), as it
    /// runs only once stale records outnumber the entries.
    fn compact(&mut self) {
        let (mut index, mut hand) = (0, 0);
        self.order.retain(|key| {
            let keep = key.is_stored();
            hand += usize::from(keep && index < self.hand);
            index += 1;
            keep
        });
        self.hand = hand;
    }
}

/// A key with its hash, so that the table never hashes a key again: `Key<&str>` to look up,
/// `Key<Arc<str>>` in the queue (which shares the name with the table).
#[derive(Clone, Copy)]
struct Key<T>(u64, T);

impl Key<Arc<str>> {
    /// Whether a queued key is still in the table, which holds the only other reference to it.
    fn is_stored(&self) -> bool {
        Arc::strong_count(&self.1) > 1
    }
}

impl Slot {
    /// Whether this slot holds `key`.
    fn is(&self, key: Key<&str>) -> bool {
        self.hash == key.0 && *self.key == *key.1
    }
}
