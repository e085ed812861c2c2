//! `RATELIMIT.ACQUIRE key limit lease [ID id]`

use super::{decision_fields, guarded, refuse_verbatim_script};
use crate::args::{self, Command};
use crate::leases::LeaseKey;
use crate::{stats, store};
use ratelimit_core::lease::{self, Grant};
use redis_module::{raw, Context, RedisResult, RedisString};
use std::os::raw::{c_char, c_long};
use std::sync::{Mutex, PoisonError};

/// The last automatic ID this node handed out: its clock, and its `n` (1 for the bare clock).
static LAST_AUTOMATIC: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// A new automatic lease ID: [`lease::auto_id`] of the clock, past the IDs this node already
/// handed out at that clock ([`lease::auto_id_after`]). `auto_id` alone skips only the live
/// leases, so while the clock stands still (a millisecond before Redis 7.2, a whole script or
/// `MULTI` after) a released lease's ID would be handed out again, and a late RELEASE by its
/// first holder would free the second's slot. Should the clock go back, the IDs go on from the
/// last one's clock.
fn automatic_id(now_us: u64, key: &LeaseKey) -> Vec<u8> {
    let mut last = LAST_AUTOMATIC
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let (clock, handed) = if now_us > last.0 { (now_us, 0) } else { *last };
    let n_of = |id: &str| match id.split_once('-') {
        Some((_, n)) => n.parse().unwrap_or(u64::MAX),
        None => 1,
    };
    let id = lease::auto_id_after(clock, handed, |id| key.holds(id.as_bytes()));
    *last = (clock, n_of(&id));
    id.into_bytes()
}

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
                    (_, None) => automatic_id(clock.now_us, &key),
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
