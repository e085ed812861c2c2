//! `RATELIMIT.REFUND key limit period [ALGORITHM a] [BURST n] COST n [WINDOW w]`

use super::{guarded, refuse_verbatim_script, reply_integers};
use crate::args::{self, Command};
use crate::store::{self, Access, Key};
use crate::{config, stats};
use redis_module::{Context, RedisResult, RedisString};

/// Gives back up to `COST` units spent earlier, only to the window they were spent in (see
/// `ratelimit_core::refund`), and replicates the change as `SET ... PXAT`, or `DEL` when the
/// limiter is back to full capacity. Replies `[refunded, limit, remaining, reset_after_ms,
/// retry_after_ms]`: the units given back, then the standing afterwards as QUOTA gives it.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Refund, || {
        let request = args::parse_refund(args, config::default_algorithm())?;
        refuse_verbatim_script(ctx, Command::Refund)?;
        let clock = store::now();
        let key = Key::open(ctx, Command::Refund, &args[1], Access::Write);
        let state = key.read_state(clock.now_ms)?;
        let refund = ratelimit_core::refund(
            &request.limit,
            state.as_ref(),
            clock.now_us,
            request.amount,
            request.window,
        )?;
        key.apply(&refund.change, clock.now_ms)?;
        stats::record_refund(refund.refunded);
        let standing = &refund.standing;
        reply_integers(
            ctx,
            &[
                super::saturate(refund.refunded),
                super::saturate(standing.limit),
                super::saturate(standing.remaining),
                super::saturate(standing.reset_after_ms),
                standing.retry_after_ms,
            ],
        );
        Ok(())
    })
}
