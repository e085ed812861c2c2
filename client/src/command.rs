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
    /// `RATELIMIT.ACQUIRE key limit lease ID id`: takes one of `limit` concurrency slots for
    /// `lease_ms`, or renews the lease `id` when it is live. The client always names the
    /// lease (see [`crate::Permit`]), so the reply's ID is `id`: it answers a
    /// [`Reply::Decision`].
    Acquire {
        key: &'a str,
        limit: u64,
        lease_ms: u64,
        id: &'a str,
    },
    /// `RATELIMIT.RELEASE key id`: frees the lease `id`.
    Release { key: &'a str, id: &'a str },
}

impl Command<'_> {
    /// The Redis key the command is about.
    pub(crate) fn key(&self) -> &str {
        match self {
            Command::Check { key, .. } | Command::Quota { key, .. } | Command::Reset { key } => key,
            Command::Acquire { key, .. } | Command::Release { key, .. } => key,
        }
    }

    /// The limit of a command that decides; `None` for the others.
    pub(crate) fn limit(&self) -> Option<&Limit> {
        match self {
            Command::Check { limit, .. } | Command::Quota { limit, .. } => Some(limit),
            Command::Reset { .. } => None,
            // A concurrency limit is no rate [`Limit`]: the fallback answers leases apart.
            Command::Acquire { .. } | Command::Release { .. } => None,
        }
    }
}

/// A backend's answer to a [`Command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The five integers of `RATELIMIT.CHECK` and `RATELIMIT.QUOTA`.
    Decision(Decision),
    /// `RATELIMIT.RESET`: whether there was a state.
    Reset(bool),
    /// `RATELIMIT.RELEASE`: whether a live lease was released.
    Released(bool),
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
    /// The answer of a `Release`.
    pub(crate) fn released(self) -> Result<bool, Error> {
        match self {
            Reply::Released(released) => Ok(released),
            other => Err(mismatch(other)),
        }
    }
}

fn mismatch(reply: Reply) -> Error {
    Error::UnexpectedReply(format!("a backend answered {reply:?} to another command"))
}
