//! `RATELIMIT.CHECK key limit period [ALGORITHM a] [BURST n] [COST n] [DRYRUN | FORCE]
//! [WITHWINDOW]`

use super::{guarded, refuse_verbatim_script, reply_decision};
use crate::args::{self, Command};
use crate::store::{self, Access, Key};
use crate::{config, stats};
use redis_module::{Context, RedisResult, RedisString};

/// Decides one request and, unless it is a dry run, makes the change the decision calls for:
/// an admitted (or forced) cost is stored with its absolute expiry and replicated as
/// `SET key value PXAT expire_at_ms`; a key found without expiry gets the one its state implies
/// (`PEXPIREAT`). Replies `[allowed, limit, remaining, reset_after_ms, retry_after_ms]`, with
/// `window` sixth under `WITHWINDOW`, or an error, with nothing written.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Check, || {
        let request = args::parse_check(args, config::default_algorithm())?;
        if !request.dry_run {
            refuse_verbatim_script(ctx, Command::Check)?;
        }
        let clock = store::now();
        let key = Key::open(ctx, Command::Check, &args[1], Access::Write);
        let state = key.read_state(clock.now_ms)?;
        let outcome = ratelimit_core::decide(
            &request.limit,
            state.as_ref(),
            clock.now_us,
            request.cost,
            request.force,
        )?;
        if !request.dry_run {
            key.apply(&outcome.change, clock.now_ms)?;
            if !outcome.decision.allowed && !request.force {
                crate::top::record(request.key);
            }
        }
        stats::record_check(
            request.limit.algorithm(),
            request.dry_run,
            outcome.decision.allowed,
        );
        reply_decision(
            ctx,
            &outcome.decision,
            request.with_window.then_some(outcome.window),
        );
        Ok(())
    })
}
