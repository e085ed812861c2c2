//! `RATELIMIT.RESET key`

use super::{guarded, reply_integer};
use crate::args::{self, Command};
use crate::stats;
use crate::store::{Access, Key};
use redis_module::{Context, RedisResult, RedisString};

/// Deletes the limiter's state, of any algorithm, and replicates a `DEL`. Replies 1 if there was
/// state and 0 if the key was absent. A key of another type, or a string that is no limiter
/// state, is an error and is left alone.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Reset, || {
        args::parse_reset(args)?;
        let deleted = Key::open(ctx, Command::Reset, &args[1], Access::Write).delete_state()?;
        stats::record_reset();
        reply_integer(ctx, i64::from(deleted));
        Ok(())
    })
}
