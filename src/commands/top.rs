//! `RATELIMIT.TOP [count] | RATELIMIT.TOP RESET`

use super::guarded;
use crate::args::{self, Command, Top};
use crate::top;
use redis_module::{raw, Context, RedisResult, RedisString};
use std::os::raw::{c_char, c_long};

/// Replies the keys this node denied most often, as a flat array `key, denied_count, ...`, largest
/// first; or, with `RESET`, forgets them and replies `OK`. Per node, never replicated.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Top, || {
        match args::parse_top(args)? {
            Top::Reset => {
                top::with(top::TopKeys::clear);
                raw::reply_with_simple_string(ctx.ctx, c"OK".as_ptr());
            }
            Top::Keys(count) => {
                let entries = top::with(|summary| summary.top(count));
                raw::reply_with_array(ctx.ctx, (2 * entries.len()) as c_long);
                for entry in &entries {
                    // SAFETY: the context is the command's; the buffer outlives the call.
                    unsafe {
                        raw::RedisModule_ReplyWithStringBuffer.expect("ReplyWithStringBuffer")(
                            ctx.ctx,
                            entry.key.as_ptr().cast::<c_char>(),
                            entry.key.len(),
                        );
                    }
                    raw::reply_with_long_long(ctx.ctx, super::saturate(entry.count));
                }
            }
        }
        Ok(())
    })
}
