//! What the store asks a backend, and what a backend answers: one [`Command`] per command of
//! the contract.
//!
//! Three backends answer every command: the module ([`crate::module`]), the Lua script
//! ([`crate::script`]) and the in-process limiter ([`crate::local`], for the failure policy).
//! A new command of the contract (`RATELIMIT.MCHECK`, `REFUND`, `ACQUIRE`, ...) is a new
//! variant here, a variant of [`Reply`] if it answers something new, one arm in each backend's
//! `run`, and one method of [`crate::RedisStore`] that builds it.

use crate::error::Error;
use ratelimit_core::{Decision, Limit};

/// One command for a backend, with its key already under the store's prefix and its
/// arguments already valid (a [`Limit`] is valid by construction, and the store checks costs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command<'a> {
    /// `RATELIMIT.CHECK`: decides one request of `cost` units and, unless it is denied or a
    /// dry run, spends them.
    Check {
        key: &'a str,
        limit: &'a Limit,
        cost: u64,
        dry_run: bool,
    },
    /// `RATELIMIT.QUOTA`: the standing now, writing nothing.
    Quota { key: &'a str, limit: &'a Limit },
    /// `RATELIMIT.RESET`: deletes the limiter's state.
    Reset { key: &'a str },
    /// `RATELIMIT.CHECK ... WITHWINDOW [FORCE]`: as `Check`, and answers the window the cost
    /// was spent in. With `force`, the cost is spent even when it does not fit (debt).
    Charge {
        key: &'a str,
        limit: &'a Limit,
        cost: u64,
        force: bool,
    },
    /// `RATELIMIT.MCHECK n key... policy... [DRYRUN | FORCE] WITHWINDOW`: one request against
    /// several limiters, all or nothing. The keys are distinct (1 to 16 of them).
    MultiCheck {
        charges: &'a [Charge<'a>],
        spend: Spend,
    },
    /// `RATELIMIT.REFUND key ... COST units [WINDOW w]`: gives back up to `units` spent in
    /// `window` (the current one when `None`).
    Refund {
        key: &'a str,
        limit: &'a Limit,
        units: u64,
        window: Option<u64>,
    },
}

/// One policy of a [`Command::MultiCheck`]: its key (under the prefix), its limit, and the
/// request's cost under it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charge<'a> {
    pub(crate) key: &'a str,
    pub(crate) limit: &'a Limit,
    pub(crate) cost: u64,
}

/// Whether a [`Command::MultiCheck`] spends: as decided, not at all (`DRYRUN`), or whatever
/// is decided (`FORCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Spends only when every policy admits the request.
    Decided,
    /// `DRYRUN`: never spends.
    DryRun,
    /// `FORCE`: spends on every policy, into debt if need be.
    Force,
}

impl Spend {
    /// The flags of the Lua script: 1 DRYRUN, 2 FORCE, plus 4 for WITHWINDOW, always asked.
    pub(crate) fn script_flags(self) -> u8 {
        4 + match self {
            Spend::Decided => 0,
            Spend::DryRun => 1,
            Spend::Force => 2,
        }
    }
}

/// The answer to a [`Command::MultiCheck`], as `RATELIMIT.MCHECK ... WITHWINDOW` replies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MultiReply {
    /// Whether every policy admitted the request.
    pub(crate) allowed: bool,
    /// 0 when allowed, -1 when some policy can never admit it, else the longest wait.
    pub(crate) retry_after_ms: i64,
    /// Each policy's decision and window, in order.
    pub(crate) decisions: Vec<(Decision, u64)>,
}

impl Command<'_> {
    /// The Redis key the command is about.
    pub(crate) fn key(&self) -> &str {
        match self {
            Command::Check { key, .. } | Command::Quota { key, .. } | Command::Reset { key } => key,
            Command::Charge { key, .. } | Command::Refund { key, .. } => key,
            Command::MultiCheck { charges, .. } => charges.first().map_or("", |c| c.key),
        }
    }

    /// The limit of a command that decides; `None` for the others.
    pub(crate) fn limit(&self) -> Option<&Limit> {
        match self {
            Command::Check { limit, .. } | Command::Quota { limit, .. } => Some(limit),
            Command::Reset { .. } => None,
            Command::Charge { limit, .. } | Command::Refund { limit, .. } => Some(limit),
            Command::MultiCheck { charges, .. } => charges.first().map(|c| c.limit),
        }
    }

    /// Every key of the command, in order: one, or each key of a `MultiCheck`.
    pub(crate) fn keys(&self) -> Vec<&str> {
        match self {
            Command::MultiCheck { charges, .. } => charges.iter().map(|c| c.key).collect(),
            _ => vec![self.key()],
        }
    }
}

/// A backend's answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The five integers of `RATELIMIT.CHECK` and `RATELIMIT.QUOTA`.
    Decision(Decision),
    /// `RATELIMIT.RESET`: whether there was a state.
    Reset(bool),
    /// `RATELIMIT.CHECK ... WITHWINDOW`: the decision and the window the cost was spent in.
    Charged(Decision, u64),
    /// `RATELIMIT.MCHECK ... WITHWINDOW`.
    MultiCheck(MultiReply),
    /// `RATELIMIT.REFUND`: the units given back, and the standing afterwards (as QUOTA).
    Refunded(u64, Decision),
}

impl Reply {
    /// The decision of a `Check` or `Quota`.
    pub(crate) fn decision(self) -> Result<Decision, Error> {
        match self {
            Reply::Decision(decision) => Ok(decision),
            other => Err(mismatch(other)),
        }
    }

    /// The answer of a `Reset`.
    pub(crate) fn reset(self) -> Result<bool, Error> {
        match self {
            Reply::Reset(deleted) => Ok(deleted),
            other => Err(mismatch(other)),
        }
    }
}

impl Reply {
    /// The answer of a `Charge`.
    pub(crate) fn charged(self) -> Result<(Decision, u64), Error> {
        match self {
            Reply::Charged(decision, window) => Ok((decision, window)),
            other => Err(mismatch(other)),
        }
    }

    /// The answer of a `MultiCheck`.
    pub(crate) fn multi_check(self) -> Result<MultiReply, Error> {
        match self {
            Reply::MultiCheck(reply) => Ok(reply),
            other => Err(mismatch(other)),
        }
    }
}

fn mismatch(reply: Reply) -> Error {
    Error::UnexpectedReply(format!("a backend answered {reply:?} to another command"))
}
