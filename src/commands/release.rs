//! `RATELIMIT.RELEASE key id`

use super::{guarded, refuse_verbatim_script, reply_integer};
use crate::args::{self, Command};
use crate::leases::LeaseKey;
use crate::{stats, store};
use redis_module::{Context, RedisResult, RedisString};

/// Releases the lease `id`, removing the expired ones on the way. Replies 1 if it released a
/// live lease, 0 if the lease was unknown or had already expired.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Release, || {
        let (_, id) = args::parse_release(args)?;
        refuse_verbatim_script(ctx, Command::Release)?;
        let clock = store::now();
        let key = LeaseKey::open(ctx, Command::Release, &args[1])?;
        key.remove_expired(clock.now_ms)?;
        let released = key.remove(id)?;
        key.expire_with_latest(clock.now_ms)?;
        stats::record_release(released);
        reply_integer(ctx, i64::from(released));
        Ok(())
    })
}
