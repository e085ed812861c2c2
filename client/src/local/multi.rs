//! The in-process limiter's `RATELIMIT.MCHECK` (atomic across its keys) and
//! `RATELIMIT.REFUND`.

use super::{lock, Entry, Key, LocalLimiter, Shard};
use crate::command::{Charge, MultiReply, Spend};
use crate::decision::Backend;
use crate::error::Error;
use crate::multi::{valid_checks, AllDecision, LimitCheck};
use ratelimit_core::{decide_all, refund, Change, Policy, State, WrongAlgorithm};
use std::hash::BuildHasher;
use std::sync::MutexGuard;

impl LocalLimiter {
    /// Decides one request against several policies at once, all or nothing, as
    /// `RATELIMIT.MCHECK` does: admitted only if every policy admits it, and then every policy
    /// spends its cost; if any denies it, nothing is spent anywhere. Keys have no prefix.
    ///
    /// Fails when there are no checks or more than 16, a key is given twice, a cost is above
    /// 10^15, or a key's live state belongs to another algorithm; nothing changes then.
    pub fn check_all(&self, checks: &[LimitCheck<'_>]) -> Result<AllDecision, Error> {
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
        let reply = self.multi_check(&charges, Spend::Decided, None)?;
        Ok(AllDecision::from_reply(reply, Backend::Local))
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
