//! `RATELIMIT.QUOTA key limit period [ALGORITHM a] [BURST n] [COST n]`

use super::{guarded, reply_decision};
use crate::args::{self, Command};
use crate::store::{self, Access, Key};
use crate::{config, stats};
use redis_module::{Context, RedisResult, RedisString};

/// Answers the standing now without writing anything: `remaining` and `reset_after_ms` with
/// nothing spent, `allowed` and `retry_after_ms` for a request of `COST` (default 1). The key
/// is opened read-only, so it also runs on replicas. Replies the same five integers as CHECK,
/// or an error.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Quota, || {
        let request = args::parse_quota(args, config::default_algorithm())?;
        let clock = store::now();
        let key = Key::open(ctx, Command::Quota, &args[1], Access::Read);
        let state = key.read_state(clock.now_ms)?;
        let decision =
            ratelimit_core::quota(&request.limit, state.as_ref(), clock.now_us, request.cost)?;
        stats::record_quota();
        reply_decision(ctx, &decision, None);
        Ok(())
    })
}
