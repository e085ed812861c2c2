//! `RATELIMIT.QUOTA key limit period [ALGORITHM a] [BURST n]`

use super::{check, guarded, reply_decision};
use crate::args::{self, Command};
use crate::store::Access;
use crate::{config, stats};
use redis_module::{Context, RedisResult, RedisString};

/// Answers what `RATELIMIT.CHECK` would for a request of cost 1, without writing anything: the
/// key is opened read-only, so it also runs on replicas. Replies the same array as CHECK, or an
/// error.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Quota, || {
        let request = args::parse_quota(args, config::default_algorithm())?;
        let decision = check::decide(ctx, Command::Quota, &args[1], &request, Access::Read)?;
        stats::record_quota();
        reply_decision(ctx, &decision);
        Ok(())
    })
}
