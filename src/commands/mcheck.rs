//! `RATELIMIT.MCHECK numkeys key [key ...] LIMIT limit period [ALGORITHM a] [BURST n] [COST n]
//! [LIMIT ...] [DRYRUN | FORCE] [WITHWINDOW]`

use super::{decision_fields, guarded, refuse_verbatim_script};
use crate::args::{self, Command};
use crate::error::Error;
use crate::store::{self, Access, Key};
use crate::{config, stats};
use ratelimit_core::{Policy, State};
use redis_module::{raw, Context, RedisResult, RedisString, RedisValue};
use std::os::raw::{c_int, c_long};

/// Decides one request under several policies at once, all or nothing: admitted only if every
/// policy admits it, and then every policy spends its cost; otherwise nothing is spent
/// anywhere (with `FORCE`, every policy spends regardless). The writes of one call replicate as
/// one `MULTI`/`EXEC`. Replies `[allowed, retry_after_ms, [five integers], ...]`, one array per
/// policy as `RATELIMIT.CHECK` of that policy alone would answer it (as a dry run when the
/// request is denied), each with the window sixth under `WITHWINDOW`.
///
/// Also answers the server's question of where the keys are (`COMMAND GETKEYS`, ACL key
/// patterns and cluster routing on servers without key specs).
pub(crate) fn run(ctx: &Context, args: &[RedisString]) -> RedisResult {
    if report_keys(ctx, args) {
        return Ok(RedisValue::NoReply);
    }
    guarded(ctx, Command::MCheck, || {
        let request = args::parse_mcheck(args, config::default_algorithm())?;
        if !request.dry_run {
            refuse_verbatim_script(ctx, Command::MCheck)?;
        }
        let clock = store::now();
        let names = &args[2..2 + request.policies.len()];
        let keys: Vec<Key<'_>> = names
            .iter()
            .map(|name| Key::open(ctx, Command::MCheck, name, Access::Write))
            .collect();
        let states = keys
            .iter()
            .map(|key| key.read_state(clock.now_ms))
            .collect::<Result<Vec<Option<State>>, Error>>()?;
        let policies: Vec<Policy<'_>> = request
            .policies
            .iter()
            .zip(&states)
            .map(|((limit, cost), state)| Policy {
                limit,
                state: state.as_ref(),
                cost: *cost,
            })
            .collect();
        let all = ratelimit_core::decide_all(&policies, clock.now_us, request.force)?;
        if !request.dry_run {
            for ((key, name), outcome) in keys.iter().zip(names).zip(&all.outcomes) {
                key.apply(&outcome.change, clock.now_ms)?;
                if !outcome.decision.allowed && !request.force {
                    crate::top::record(name);
                }
            }
        }
        stats::record_mcheck(request.dry_run, all.allowed);
        raw::reply_with_array(ctx.ctx, (2 + all.outcomes.len()) as c_long);
        raw::reply_with_long_long(ctx.ctx, i64::from(all.allowed));
        raw::reply_with_long_long(ctx.ctx, all.retry_after_ms);
        for outcome in &all.outcomes {
            let fields = decision_fields(&outcome.decision);
            let window = request.with_window.then_some(outcome.window);
            raw::reply_with_array(
                ctx.ctx,
                (fields.len() + usize::from(window.is_some())) as c_long,
            );
            for field in fields {
                raw::reply_with_long_long(ctx.ctx, field);
            }
            if let Some(window) = window {
                raw::reply_with_long_long(ctx.ctx, super::saturate(window));
            }
        }
        Ok(())
    })
}

/// When the server only asks where the keys are (`getkeys-api`), reports them and answers
/// true. A malformed `numkeys` reports none; the command itself then answers the error.
fn report_keys(ctx: &Context, args: &[RedisString]) -> bool {
    // SAFETY: the context is the command's; both functions exist since Redis 4.
    unsafe {
        let Some(is_request) = raw::RedisModule_IsKeysPositionRequest else {
            return false;
        };
        if is_request(ctx.ctx) == 0 {
            return false;
        }
        if let (Some(count), Some(key_at)) = (args::keys_of(args), raw::RedisModule_KeyAtPos) {
            for position in 2..2 + count {
                key_at(ctx.ctx, position as c_int);
            }
        }
    }
    true
}
