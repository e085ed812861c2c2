//! Local shares against Redis: [`RedisStore::check`] of a [`Limit`] with a local batch. The
//! rules of a share are in `share.rs`; this file asks Redis for batches, gives leftovers back,
//! and sweeps shares whose hold time passed.
//!
//! Each key has a slot: its [`Share`] behind a `Mutex` (the fast path: a lookup and a
//! subtraction, no await), and an async lock that lets one task at a time refill it while the
//! others wait for the new units rather than asking Redis too.

use super::RedisStore;
use crate::command::Command;
use crate::command::Spend;
use crate::config::{Config, FailurePolicy};
use crate::decision::{Backend, Decision, Outcome};
use crate::error::Error;
use crate::key::Key;
use crate::limit::Limit;
use crate::multi::{valid_checks, AllDecision, LimitCheck};
use crate::share::{Leftover, Share};
use foldhash::quality::RandomState;
use quanta::Instant;
use ratelimit_core::Algorithm;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::debug;

/// The shares of one store, by Redis key.
pub(crate) struct Shares {
    slots: Mutex<HashMap<String, Arc<Slot>, RandomState>>,
    /// What gives units back when the store is gone: the store's connection and backends,
    /// without the shares (which would keep themselves alive).
    owner: Mutex<Option<RedisStore>>,
    sweeping: std::sync::atomic::AtomicBool,
}

struct Slot {
    /// The share, and the limit it was taken under.
    state: Mutex<(Limit, Share)>,
    refill: tokio::sync::Mutex<()>,
}

/// A decision of a share's slow path, until its caller takes it: dropped unclaimed (the
/// caller's future was dropped meanwhile), the units it handed out go back to the share.
struct Handed {
    decision: Decision,
    /// `None` once claimed.
    slot: Option<Arc<Slot>>,
    cost: u64,
}

impl Drop for Handed {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let from_redis = matches!(self.decision.backend, Backend::Module | Backend::Script);
        if self.decision.is_admitted() && from_redis && self.cost > 0 {
            slot.share().put_back(self.cost);
        }
    }
}

/// A slot's state, locked.
struct Locked<'a>(MutexGuard<'a, (Limit, Share)>);

impl std::ops::Deref for Locked<'_> {
    type Target = Share;
    fn deref(&self) -> &Share {
        &self.0 .1
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Share {
        &mut self.0 .1
    }
}

impl Slot {
    fn share(&self) -> Locked<'_> {
        Locked(self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn limit(&self) -> Limit {
        self.share().0 .0
    }
}

thread_local! {
    /// The Redis key of the check in progress on this thread, written without an allocation.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl Shares {
    pub(crate) fn new() -> Shares {
        Shares {
            slots: Mutex::new(HashMap::with_hasher(RandomState::default())),
            owner: Mutex::new(None),
            sweeping: false.into(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>, RandomState>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fast path: `cost` units from the share of `key` if it holds them under `limit`, or
    /// its standing denial. No allocation, no await.
    fn take(&self, key: Key<'_>, prefix: &str, limit: &Limit, cost: u64) -> Option<Decision> {
        KEY.with(|buffer| {
            let mut buffer = buffer.try_borrow_mut().ok()?;
            key.write_redis_key(prefix, &mut buffer);
            let slots = self.slots();
            let mut state = slots.get(buffer.as_str())?.share();
            if state.0 .0 != *limit {
                return None;
            }
            state.take(cost, Instant::now())
        })
    }

    /// The slot of `key`, made for `limit`. A slot whose limit changed starts again: its
    /// units go back to Redis under the old limit first, when it is refilled.
    fn slot(&self, key: &str, limit: &Limit) -> Arc<Slot> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        let slot = Arc::new(Slot {
            state: Mutex::new((*limit, Share::new())),
            refill: tokio::sync::Mutex::new(()),
        });
        slots.insert(key.to_string(), slot.clone());
        slot
    }

    /// Units held for each key, for tests and the store's `Debug`.
    pub(crate) fn held(&self) -> u64 {
        self.slots().values().map(|slot| slot.share().held()).sum()
    }
}

impl Drop for Shares {
    /// Gives every unit held back to its window, in the background.
    fn drop(&mut self) {
        let owner = self.owner.get_mut().ok().and_then(Option::take);
        let now = Instant::now();
        let leftovers: Vec<(String, Limit, Leftover)> = self
            .slots
            .get_mut()
            .map(|slots| {
                slots
                    .drain()
                    .filter_map(|(key, slot)| {
                        let leftover = slot.share().leftover(now)?;
                        Some((key, slot.limit(), leftover))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (Some(owner), false) = (owner, leftovers.is_empty()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for (key, limit, leftover) in leftovers {
                    owner.give_back(&key, &limit, leftover).await;
                }
            });
        }
    }
}

impl RedisStore {
    /// The store's shares, and the store without them that gives their units back.
    pub(crate) fn new_shares(
        config: &Arc<Config>,
        connection: &Arc<super::SharedConnection>,
        selector: &Arc<super::BackendSelector>,
        fallback: &Arc<super::Fallback>,
    ) -> Arc<Shares> {
        let shares = Arc::new(Shares::new());
        let owner = RedisStore {
            config: config.clone(),
            connection: connection.clone(),
            selector: selector.clone(),
            fallback: fallback.clone(),
            shares: Arc::new(Shares::new()),
        };
        *shares.owner.lock().unwrap_or_else(PoisonError::into_inner) = Some(owner);
        shares
    }

    /// [`RedisStore::check`] of a limit with a local batch: from the key's share when it holds
    /// the units, otherwise from a new batch spent in Redis.
    pub(crate) async fn check_shared(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> Result<Decision, Error> {
        if let Some(decision) = self.shares.take(key, &self.config.prefix, limit, cost) {
            return Ok(self.enforce(decision, key));
        }
        let (store, redis_key, limit) = (self.clone(), self.redis_key(key), *limit);
        // To the end even if this future is dropped: the units it took then go back to the
        // share, rather than a whole batch being spent in Redis for nobody.
        let mut handed =
            Self::to_the_end(async move { store.refill_shared(redis_key, limit, cost).await })
                .await?;
        handed.slot = None;
        Ok(self.enforce(handed.decision, key))
    }

    /// The slow path of [`RedisStore::check_shared`]: under the slot's refill lock, the share
    /// again (another task may have refilled it), else a batch from Redis.
    async fn refill_shared(
        self,
        redis_key: String,
        limit: Limit,
        cost: u64,
    ) -> Result<Handed, Error> {
        let slot = self.shares.slot(&redis_key, &limit);
        self.start_sweeping();
        let _refilling = slot.refill.lock().await;
        let handed = |decision: Decision| Handed {
            decision,
            slot: Some(slot.clone()),
            cost,
        };
        let old_limit = slot.limit();
        if old_limit == limit {
            if let Some(decision) = slot.share().take(cost, Instant::now()) {
                return Ok(handed(decision));
            }
        }
        let leftover = slot.share().leftover(Instant::now());
        if let Some(leftover) = leftover {
            if old_limit != limit {
                self.give_back(&redis_key, &old_limit, leftover).await;
            } else if !self.give_back(&redis_key, &limit, leftover).await {
                // Redis is out: what the share held is all this process may use.
                let mut share = slot.share();
                share.restore(leftover, Instant::now(), self.config.share_hold);
                if let Some(decision) = share.take(cost, Instant::now()) {
                    drop(share);
                    return Ok(handed(decision));
                }
            }
        }
        if old_limit != limit {
            *slot.state.lock().unwrap_or_else(PoisonError::into_inner) = (limit, Share::new());
        }
        let decision = self.refill(&slot, &redis_key, &limit, cost).await?;
        Ok(handed(decision))
    }

    /// [`RedisStore::check_all`] when some limits have a local batch: those are taken from their
    /// shares first (no round trip while they hold units), then the others in one `MCHECK`.
    /// All or nothing still: when any limit denies, the units taken from the shares are put
    /// back in them and nothing is spent in Redis. Their windows are unknown to a
    /// [`crate::Hold`], so a batched limit is not settled ([`RedisStore::settle`] does nothing
    /// for it).
    pub(crate) async fn check_all_shared(
        &self,
        checks: &[LimitCheck<'_>],
    ) -> Result<AllDecision, Error> {
        valid_checks(checks, &self.config.prefix)?;
        let mut decisions: Vec<Option<Decision>> = vec![None; checks.len()];
        let mut taken: Vec<usize> = Vec::new();
        let mut denied = false;
        for (index, check) in checks.iter().enumerate() {
            if check.limit.local_batch() <= 1 || check.cost == 0 {
                continue;
            }
            let decision = self
                .check_shared(check.key, check.limit, check.cost)
                .await?;
            if decision.is_admitted() {
                taken.push(index);
            } else {
                denied = true;
            }
            decisions[index] = Some(decision);
            if denied {
                break;
            }
        }
        let rest: Vec<usize> = (0..checks.len())
            .filter(|&i| decisions[i].is_none() && checks[i].limit.local_batch() <= 1)
            .collect();
        // The windows the others' costs were spent in, so that a metered one settles there.
        let mut windows = vec![u64::MAX; checks.len()];
        if !rest.is_empty() {
            let others: Vec<LimitCheck<'_>> = rest.iter().map(|&i| checks[i]).collect();
            let spend = if denied {
                Spend::DryRun
            } else {
                Spend::Decided
            };
            let all = self.decide_all(&others, spend).await?;
            denied |= !all.is_admitted();
            for ((&i, decision), window) in rest.iter().zip(all.decisions).zip(all.windows) {
                decisions[i] = Some(decision);
                windows[i] = window;
            }
        }
        if denied {
            for &i in &taken {
                self.put_back(checks[i].key, checks[i].limit, checks[i].cost);
            }
        }
        // Batched limits after the one that denied were not asked: their standing is Redis's.
        for (index, check) in checks.iter().enumerate() {
            if decisions[index].is_none() {
                decisions[index] = Some(
                    self.check_dry_run(check.key, check.limit, check.cost)
                        .await?,
                );
            }
        }
        let mut all = AllDecision::from_decisions(decisions.into_iter().flatten().collect());
        all.windows = windows;
        if denied && all.is_admitted() {
            all.outcome = Outcome::RetryAfter(Duration::ZERO);
        }
        Ok(all)
    }

    /// Puts `units` back in the share of `key`.
    fn put_back(&self, key: Key<'_>, limit: &Limit, units: u64) {
        let redis_key = self.redis_key(key);
        let slot = self.shares.slot(&redis_key, limit);
        slot.share().put_back(units);
    }

    /// Spends a batch in Redis for `slot` and hands `cost` of it out: `batch` units, or those
    /// that remain when fewer do, or only `cost`. A denial is remembered until it can change.
    async fn refill(
        &self,
        slot: &Slot,
        redis_key: &str,
        limit: &Limit,
        cost: u64,
    ) -> Result<Decision, Error> {
        let batch = limit.local_batch().max(cost);
        let mut ask = batch;
        loop {
            let command = Command::Charge {
                key: redis_key,
                limit: limit.core(),
                cost: ask,
                force: false,
            };
            let (reply, backend) = match self.run_on_redis(&command).await {
                Ok(answer) => answer,
                Err(error) if error.is_outage() => return Ok(self.outage_answer(slot)),
                Err(error) => return Err(error),
            };
            let (core, window) = reply.charged()?;
            let decision = Decision::from_core(core, backend);
            let now = Instant::now();
            if decision.is_admitted() {
                let until_end = until_window_end(limit, &decision, window);
                slot.share().hold(
                    ask - cost,
                    window,
                    decision,
                    now,
                    self.config.share_hold,
                    until_end,
                );
                return Ok(Decision {
                    remaining: decision.remaining.saturating_add(ask - cost),
                    ..decision
                });
            }
            if ask == cost {
                slot.share().deny(decision, now, self.config.share_hold);
                return Ok(decision);
            }
            // Fewer than a batch remain: take them if the request fits, else ask for the
            // request alone, whose denial has the right wait.
            ask = if decision.remaining >= cost {
                decision.remaining.min(ask - 1)
            } else {
                cost
            };
        }
    }

    /// The answer while Redis is out and the share cannot serve: `Allow` and `Deny` as they
    /// say; `Local` denies, since a share's fallback is what it holds.
    fn outage_answer(&self, slot: &Slot) -> Decision {
        let limit = slot.limit();
        let hold = self.config.share_hold;
        let (outcome, backend) = match self.config.on_failure {
            FailurePolicy::Allow => (Outcome::Admitted, Backend::Allow),
            FailurePolicy::Deny => (Outcome::RetryAfter(hold), Backend::Deny),
            FailurePolicy::Local => (Outcome::RetryAfter(hold), Backend::Local),
        };
        let decision = Decision {
            outcome,
            limit: limit.limit(),
            remaining: 0,
            reset_after: hold,
            backend,
            enforced: true,
        };
        debug!(backend = %backend, "Redis is out: a local share answered from what it holds");
        decision
    }

    /// Gives `leftover` back to its window (`RATELIMIT.REFUND ... WINDOW w`). Answers false
    /// when Redis is out; a refusal is logged and counts as done (the units are then lost,
    /// which only denies early).
    async fn give_back(&self, redis_key: &str, limit: &Limit, leftover: Leftover) -> bool {
        let command = Command::Refund {
            key: redis_key,
            limit: limit.core(),
            units: leftover.units,
            window: (limit.algorithm() != Algorithm::Gcra).then_some(leftover.window),
        };
        match self.run_on_redis(&command).await {
            Ok(_) => true,
            Err(error) if error.is_outage() => false,
            Err(error) => {
                debug!(error = %error, units = leftover.units, "Redis refused to take back a share's units");
                true
            }
        }
    }

    /// Starts, once per store, the task that gives back the units of shares whose hold time
    /// has passed, and forgets idle shares. It ends when the store is dropped.
    fn start_sweeping(&self) {
        use std::sync::atomic::Ordering;
        if self.shares.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let shares: Weak<Shares> = Arc::downgrade(&self.shares);
        let every = (self.config.share_hold / 2).max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shares) = shares.upgrade() else {
                    return;
                };
                sweep(&shares).await;
            }
        });
    }
}

/// Gives back the units of every share whose hold time has passed, and drops the slots that
/// hold nothing and that no check is using.
async fn sweep(shares: &Shares) {
    let now = Instant::now();
    let stale: Vec<(String, Arc<Slot>)> = {
        let mut slots = shares.slots();
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || slot.share().held() > 0 || slot.share().is_denying(now)
        });
        slots
            .iter()
            .filter(|(_, slot)| slot.share().is_stale(now))
            .map(|(key, slot)| (key.clone(), slot.clone()))
            .collect()
    };
    let Some(owner) = shares
        .owner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    else {
        return;
    };
    for (key, slot) in stale {
        // A check refilling this share gives its leftover back itself.
        let Ok(_refilling) = slot.refill.try_lock() else {
            continue;
        };
        let leftover = slot.share().leftover(Instant::now());
        if let Some(leftover) = leftover {
            if !owner.give_back(&key, &slot.limit(), leftover).await {
                slot.share()
                    .restore(leftover, Instant::now(), owner.config.share_hold);
            }
        }
    }
}

/// How long the units of a batch spent in `window` may be handed out before the window ends:
/// FIXED's `reset_after` (the window's own end); SLIDING's aligned window's end by this
/// process's clock; none for GCRA, which has no windows.
fn until_window_end(limit: &Limit, decision: &Decision, window: u64) -> Option<Duration> {
    match limit.algorithm() {
        Algorithm::Fixed => Some(decision.reset_after),
        Algorithm::Sliding => {
            let period = u64::try_from(limit.period().as_millis()).unwrap_or(u64::MAX);
            let end_ms = window.saturating_add(1).saturating_mul(period);
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            Some(Duration::from_millis(end_ms.saturating_sub(now_ms)))
        }
        Algorithm::Gcra => None,
    }
}
