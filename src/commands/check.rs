//! `RATELIMIT.CHECK key limit period [ALGORITHM a] [BURST n] [COST n] [DRYRUN]`

use super::{guarded, reply_decision};
use crate::args::{self, Command, Request};
use crate::error::Error;
use crate::store::{self, Access, Key};
use crate::{config, stats};
use ratelimit_core::{Change, Decision};
use redis_module::{Context, RedisResult, RedisString};

/// Decides one request and, if it is admitted and not a dry run, spends its cost: the new state
/// is written with its absolute expiry and replicated as `SET key value PXAT expire_at_ms`.
/// Replies `[allowed, limit, remaining, reset_after_ms, retry_after_ms]`, or an error.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Check, || {
        let request = args::parse_check(args, config::default_algorithm())?;
        let decision = decide(ctx, Command::Check, &args[1], &request, Access::Write)?;
        stats::record_check(request.limit.algorithm(), request.dry_run, decision.allowed);
        reply_decision(ctx, &decision);
        Ok(())
    })
}

/// Takes the decision for `request` on the key `name` at the server's current time, and stores
/// it unless the request is a dry run (then `access` may be [`Access::Read`]). Fails when the key
/// holds another type, another algorithm's state or no limiter state at all; nothing is written
/// then.
pub(super) fn decide(
    ctx: &Context,
    command: Command,
    name: &RedisString,
    request: &Request<'_>,
    access: Access,
) -> Result<Decision, Error> {
    let clock = store::now();
    let key = Key::open(ctx, command, name, access);
    let state = key.read_state(clock.now_ms)?;
    let outcome = ratelimit_core::decide(
        &request.limit,
        state.as_ref(),
        clock.now_us,
        request.cost,
        false,
    )?;
    if let Change::Store(update) = outcome.change {
        if !request.dry_run {
            key.write(&update, clock.now_ms)?;
        }
    }
    Ok(outcome.decision)
}
