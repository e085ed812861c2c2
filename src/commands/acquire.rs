//! `RATELIMIT.ACQUIRE key limit lease [ID id]`

use super::{decision_fields, guarded, refuse_verbatim_script};
use crate::args::{self, Command};
use crate::leases::LeaseKey;
use crate::{stats, store};
use ratelimit_core::lease::{self, Grant};
use redis_module::{raw, Context, RedisResult, RedisString};
use std::os::raw::{c_char, c_long};

/// Takes one of `limit` concurrent leases for `lease`, or renews the lease `id` when it is live.
/// Expired leases are removed first; the key expires with its latest lease. Replies `[allowed,
/// limit, remaining, reset_after_ms, retry_after_ms, id]`, the ID as a bulk string, or nil when
/// denied.
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    guarded(ctx, Command::Acquire, || {
        let request = args::parse_acquire(args)?;
        refuse_verbatim_script(ctx, Command::Acquire)?;
        let clock = store::now();
        let mut key = LeaseKey::open(ctx, Command::Acquire, &args[1])?;
        key.remove_expired(clock.now_ms)?;
        let live = key.live(request.id);
        let acquired = lease::acquire(request.limit, request.lease_ms, clock.now_ms, live);
        let id = match acquired.grant {
            None => {
                crate::top::record(request.key);
                None
            }
            Some(grant) => {
                let id = match (grant, request.id) {
                    (Grant::Renewed, Some(id)) | (Grant::New, Some(id)) => id.to_vec(),
                    (_, None) => {
                        lease::auto_id(clock.now_us, |id| key.holds(id.as_bytes())).into_bytes()
                    }
                };
                key.put(&id, acquired.expire_at_ms)?;
                Some(id)
            }
        };
        key.expire_with_latest(clock.now_ms)?;
        stats::record_acquire(acquired.grant.is_some());
        let fields = decision_fields(&acquired.decision);
        raw::reply_with_array(ctx.ctx, (fields.len() + 1) as c_long);
        for field in fields {
            raw::reply_with_long_long(ctx.ctx, field);
        }
        // SAFETY: the context is the command's; the buffer outlives the call.
        unsafe {
            match &id {
                Some(id) => {
                    raw::RedisModule_ReplyWithStringBuffer.expect("ReplyWithStringBuffer")(
                        ctx.ctx,
                        id.as_ptr().cast::<c_char>(),
                        id.len(),
                    );
                }
                None => {
                    raw::RedisModule_ReplyWithNull.expect("RedisModule_ReplyWithNull")(ctx.ctx);
                }
            }
        }
        Ok(())
    })
}
