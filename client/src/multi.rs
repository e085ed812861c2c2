//! Several limits in one call: a [`LimitCheck`] per policy, and the [`AllDecision`] that
//! [`crate::RedisStore::check_all`] answers for them, all or nothing.

use crate::decision::{Backend, Decision, Outcome};
use crate::error::Error;
use crate::key::Key;
use crate::limit::Limit;
use crate::local::valid_cost;
use std::time::Duration;

/// The most policies one [`crate::RedisStore::check_all`] takes, as `RATELIMIT.MCHECK` does.
pub const MAX_POLICIES: usize = 16;

/// One policy of a request checked against several: its key, its limit and the request's
/// cost under it.
///
/// In a Redis Cluster, every key of one check must hash to one slot: give them one hash tag,
/// `Key::new("rps", "{user:42}")`, `Key::new("tpm", "{user:42}")`.
#[derive(Debug, Clone, Copy)]
pub struct LimitCheck<'a> {
    /// The limiter's key, under the store's prefix.
    pub key: Key<'a>,
    /// The limit.
    pub limit: &'a Limit,
    /// The units the request spends under this policy (0 to 10^15).
    pub cost: u64,
}

impl<'a> LimitCheck<'a> {
    /// The policy `limit` on `key`, for a request of `cost` units.
    pub fn new(key: impl Into<Key<'a>>, limit: &'a Limit, cost: u64) -> LimitCheck<'a> {
        LimitCheck {
            key: key.into(),
            limit,
            cost,
        }
    }
}

/// Checks that `checks` can go in one `RATELIMIT.MCHECK`: 1 to 16 policies on distinct keys
/// (under `prefix`), each cost within the contract. Answers the Redis keys, in order.
pub(crate) fn valid_checks(checks: &[LimitCheck<'_>], prefix: &str) -> Result<Vec<String>, Error> {
    if checks.is_empty() || checks.len() > MAX_POLICIES {
        return Err(Error::InvalidArgument(format!(
            "{} policies: expected 1 to {MAX_POLICIES}",
            checks.len()
        )));
    }
    let mut keys: Vec<String> = Vec::with_capacity(checks.len());
    for check in checks {
        valid_cost(check.cost)?;
        let key = check.key.redis_key(prefix);
        if keys.contains(&key) {
            return Err(Error::InvalidArgument(format!(
                "the key {} is given more than once",
                check.key.masked(prefix)
            )));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The answer to a request checked against several policies at once
/// ([`crate::RedisStore::check_all`]): admitted only if every policy admits it, and then every
/// policy spent its cost; denied if any policy denies it, and then nothing was spent anywhere.
///
/// Let the request through when [`AllDecision::allowed`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllDecision {
    /// The overall outcome: [`Outcome::Admitted`] when every policy admitted the request;
    /// [`Outcome::CannotFit`] when some policy never can; otherwise the longest wait among the
    /// policies that denied it.
    pub outcome: Outcome,
    /// Each policy's decision, in the order of the checks. When the request is denied, each is
    /// what that policy alone would answer a dry run (nothing was spent): the policies that
    /// denied it are those whose decision is not admitted ([`AllDecision::violated`]).
    pub decisions: Vec<Decision>,
    /// Which backend or failure policy answered.
    pub backend: Backend,
    /// `false` in shadow mode: a denial is only reported.
    pub enforced: bool,
    /// The window each cost was spent in (`WITHWINDOW`), for a refund.
    pub(crate) windows: Vec<u64>,
}

impl AllDecision {
    /// Whether to let the request through: every policy admitted it, or it is in shadow mode.
    pub fn allowed(&self) -> bool {
        self.is_admitted() || !self.enforced
    }

    /// Whether every policy admitted the request (and spent its cost).
    pub fn is_admitted(&self) -> bool {
        self.outcome == Outcome::Admitted
    }

    /// The wait before a retry, when the request was denied for now.
    pub fn retry_after(&self) -> Option<Duration> {
        self.outcome.retry_after()
    }

    /// The indices of the policies that denied the request (none when it was admitted).
    pub fn violated(&self) -> impl Iterator<Item = usize> + '_ {
        self.decisions
            .iter()
            .enumerate()
            .filter(|(_, decision)| !decision.is_admitted())
            .map(|(index, _)| index)
    }

    /// What the request holds under policy `index`, to settle later
    /// ([`crate::RedisStore::settle`]): its cost and the window it was spent in. `None` when
    /// the request was not admitted, or `index` is out of range.
    pub fn hold(&self, index: usize, cost: u64) -> Option<Hold> {
        if !self.is_admitted() {
            return None;
        }
        Some(Hold {
            units: cost,
            window: *self.windows.get(index)?,
            backend: self.backend,
        })
    }

    /// Combines decisions taken one policy at a time (by a limiter that has no
    /// `RATELIMIT.MCHECK`). Their windows are unknown: a hold of FIXED or SLIDING units then
    /// gets nothing back when it is settled (it errs on the side of counting).
    pub(crate) fn from_decisions(decisions: Vec<Decision>) -> AllDecision {
        let denied = decisions.iter().filter(|d| !d.is_admitted());
        let outcome = if denied.clone().any(|d| d.outcome == Outcome::CannotFit) {
            Outcome::CannotFit
        } else {
            denied
                .map(|d| d.outcome)
                .max_by_key(|o| o.retry_after())
                .unwrap_or(Outcome::Admitted)
        };
        AllDecision {
            outcome,
            backend: decisions.first().map_or(Backend::Local, |d| d.backend),
            enforced: decisions.iter().all(|d| d.enforced),
            windows: vec![u64::MAX; decisions.len()],
            decisions,
        }
    }

    /// Builds the answer from the contract's reply, every decision by `backend`.
    pub(crate) fn from_reply(reply: crate::command::MultiReply, backend: Backend) -> AllDecision {
        let (decisions, windows) = reply
            .decisions
            .into_iter()
            .map(|(decision, window)| (Decision::from_core(decision, backend), window))
            .unzip();
        AllDecision {
            outcome: Outcome::from_reply(reply.allowed, reply.retry_after_ms),
            decisions,
            backend,
            enforced: true,
            windows,
        }
    }
}

/// Units spent under one limit that may be settled later: given back in part if the request
/// used less, or completed if it used more. See [`crate::Reservation`], which owns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The units spent.
    pub units: u64,
    /// The window they were spent in: FIXED's window end, SLIDING's window index, 0 for GCRA.
    pub(crate) window: u64,
    /// Who counted them. Units counted by the failure policy `Allow` (or `Deny`) were never
    /// counted anywhere, and are settled with nothing.
    pub backend: Backend,
}
