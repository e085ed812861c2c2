//! The in-process limiter's `RATELIMIT.MCHECK` (atomic across its keys) and
//! `RATELIMIT.REFUND`.

use super::{lock, micros_since_epoch, Entry, Key, LocalLimiter, Shard};
use crate::command::{Charge, Command, MultiReply, Spend};
use crate::decision::{Backend, Quota};
use crate::error::Error;
use crate::limit::Limit;
use crate::local::valid_cost;
use crate::multi::{valid_checks, AllDecision, Hold, LimitCheck};
use crate::reservation::Settlement;
use ratelimit_core::{decide_all, refund, Algorithm, Change, Policy, State, WrongAlgorithm};
use std::hash::BuildHasher;
use std::sync::MutexGuard;
use std::time::SystemTime;

impl LocalLimiter {
    /// Decides one request against several policies at once, all or nothing, as
    /// `RATELIMIT.MCHECK` does: admitted only if every policy admits it, and then every policy
    /// spends its cost; if any denies it, nothing is spent anywhere. Keys have no prefix.
    ///
    /// Fails when there are no checks or more than 16, a key is given twice, a cost is above
    /// 10^15, or a key's live state belongs to another algorithm; nothing changes then.
    pub fn check_all(&self, checks: &[LimitCheck<'_>]) -> Result<AllDecision, Error> {
        self.check_all_now(checks, None)
    }

    /// [`LocalLimiter::check_all`] at the instant `now` instead of the limiter's clock, as
    /// [`LocalLimiter::check_at`] takes it: for tests and simulations.
    pub fn check_all_at(
        &self,
        checks: &[LimitCheck<'_>],
        now: SystemTime,
    ) -> Result<AllDecision, Error> {
        self.check_all_now(checks, Some(micros_since_epoch(now)))
    }

    fn check_all_now(
        &self,
        checks: &[LimitCheck<'_>],
        now_us: Option<u64>,
    ) -> Result<AllDecision, Error> {
        let keys = valid_checks(checks, "")?;
        let charges: Vec<Charge<'_>> = checks
            .iter()
            .zip(&keys)
            .map(|(check, key)| Charge {
                key,
                limit: check.limit.core(),
                cost: check.cost,
            })
            .collect();
        let reply = self.multi_check(&charges, Spend::Decided, now_us)?;
        Ok(AllDecision::from_reply(reply, Backend::Local))
    }

    /// Settles `hold`, spent on `key` (no prefix) under `limit` by
    /// [`LocalLimiter::check_all`], at its real cost `actual`: below the hold, the difference
    /// goes back to the window it was spent in; above, the excess is charged, into debt if need
    /// be. A hold that another limiter counted settles with nothing. Fails when `actual` is
    /// above 10^15, or the key holds another algorithm's state.
    pub fn settle(
        &self,
        key: &str,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> Result<Settlement, Error> {
        valid_cost(actual)?;
        let mut settlement = Settlement {
            refunded: 0,
            charged: 0,
            quota: None,
        };
        if hold.backend != Backend::Local || actual == hold.units {
            return Ok(settlement);
        }
        let standing = if actual < hold.units {
            let window = (limit.algorithm() != Algorithm::Gcra).then_some(hold.window);
            let (refunded, standing) =
                self.refund_at(key, limit.core(), hold.units - actual, window, None)?;
            settlement.refunded = refunded;
            standing
        } else {
            settlement.charged = actual - hold.units;
            let command = Command::Charge {
                key,
                limit: limit.core(),
                cost: settlement.charged,
                force: true,
            };
            self.run(&command)?.charged()?.0
        };
        settlement.quota = Some(Quota::from_core(standing, Backend::Local));
        Ok(settlement)
    }

    /// `RATELIMIT.MCHECK` on this process's state, at `now_us` or by the limiter's clock. The
    /// shards of every key are locked together, in their order (so two calls never wait for
    /// each other in a cycle), for the decision to be atomic across keys.
    pub(crate) fn multi_check(
        &self,
        charges: &[Charge<'_>],
        spend: Spend,
        now_us: Option<u64>,
    ) -> Result<MultiReply, WrongAlgorithm> {
        let located: Vec<(u64, usize)> = charges
            .iter()
            .map(|charge| {
                let hash = self.hasher.hash_one(charge.key);
                (hash, self.shard_index(hash))
            })
            .collect();
        let mut indices: Vec<usize> = located.iter().map(|&(_, index)| index).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> = indices
            .iter()
            .map(|&index| lock(&self.shards[index]))
            .collect();
        let guard_of = |shard: usize| indices.binary_search(&shard).unwrap_or(0);
        let now_us = now_us.unwrap_or_else(|| self.clock.now_us());
        let now_ms = now_us / 1000;
        let states: Vec<Option<State>> = charges
            .iter()
            .zip(&located)
            .map(|(charge, &(hash, shard))| {
                guards[guard_of(shard)].live_state(Key(hash, charge.key), now_ms)
            })
            .collect();
        let policies: Vec<Policy<'_>> = charges
            .iter()
            .zip(&states)
            .map(|(charge, state)| Policy {
                limit: charge.limit,
                state: state.as_ref(),
                cost: charge.cost,
            })
            .collect();
        let all = decide_all(&policies, now_us, spend == Spend::Force)?;
        if spend != Spend::DryRun {
            for ((charge, &(hash, shard)), outcome) in
                charges.iter().zip(&located).zip(&all.outcomes)
            {
                guards[guard_of(shard)].apply(Key(hash, charge.key), outcome.change, now_ms);
            }
        }
        Ok(MultiReply {
            allowed: all.allowed,
            retry_after_ms: all.retry_after_ms,
            decisions: all
                .outcomes
                .iter()
                .map(|outcome| (outcome.decision, outcome.window))
                .collect(),
        })
    }

    /// `RATELIMIT.REFUND` on this process's state: the units given back and the standing
    /// afterwards.
    pub(crate) fn refund_at(
        &self,
        key: &str,
        limit: &ratelimit_core::Limit,
        units: u64,
        window: Option<u64>,
        now_us: Option<u64>,
    ) -> Result<(u64, ratelimit_core::Decision), WrongAlgorithm> {
        let (hash, mut shard) = self.shard(key);
        let now = || now_us.unwrap_or_else(|| self.clock.now_us());
        shard.with_state(Key(hash, key), now, |state, now_us| {
            let refunded = refund(limit, state, now_us, units, window)?;
            Ok(((refunded.refunded, refunded.standing), refunded.change))
        })
    }
}

impl Shard {
    /// `key`'s live state, as the module reads it; an expired entry is removed.
    fn live_state(&mut self, key: Key<&str>, now_ms: u64) -> Option<State> {
        let found = self.entries.find(key.0, |slot| slot.is(key))?;
        if found.entry.is_live(now_ms) {
            return Some(found.entry.state());
        }
        self.remove(key);
        None
    }

    /// Makes `change` to `key`, whose live state (if any) was just read.
    fn apply(&mut self, key: Key<&str>, change: Change, now_ms: u64) {
        match change {
            Change::Store(update) => {
                let entry = Entry::from_update(update);
                match self.entries.find_mut(key.0, |slot| slot.is(key)) {
                    Some(slot) => slot.entry = entry,
                    None => self.insert(key, entry, now_ms),
                }
            }
            Change::Delete => {
                self.remove(key);
            }
            // Every entry here has an expiry: there is nothing to repair.
            Change::Keep | Change::Expire(_) => {}
        }
    }
}
