//! The command handlers, one file per command.
//!
//! Each handler parses its arguments, takes the decision through `ratelimit_core`, stores and
//! replicates through [`crate::store`], and replies. It always replies by itself and returns
//! [`RedisValue::NoReply`] to `redis_module`, so replies keep the same shape in RESP2 and RESP3.

pub(crate) mod acquire;
pub(crate) mod check;
pub(crate) mod mcheck;
pub(crate) mod quota;
pub(crate) mod refund;
pub(crate) mod release;
pub(crate) mod reset;
pub(crate) mod top;

use crate::args::Command;
use crate::error::Error;
use crate::{log, stats};
use ratelimit_core::Decision;
use redis_module::{raw, Context, RedisResult, RedisString, RedisValue};
use std::ffi::{CStr, CString};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// A command to create at load: see `COMMANDS` in the crate root.
pub(crate) struct Registration {
    /// The command's name.
    pub name: &'static CStr,
    /// Its flags, as `RedisModule_CreateCommand` reads them.
    pub flags: &'static CStr,
    /// Its first key, last key and key step.
    pub keys: (c_int, c_int, c_int),
    /// The raw callback, which calls the handler through [`dispatch`].
    pub callback: unsafe extern "C" fn(
        *mut raw::RedisModuleCtx,
        *mut *mut raw::RedisModuleString,
        c_int,
    ) -> c_int,
}

/// Creates the commands. Must run in `RedisModule_OnLoad`. Fails with the name of the first
/// command the server refused.
pub(crate) fn register(ctx: &Context, commands: &[Registration]) -> Result<(), String> {
    // SAFETY: copies the function pointer filled in by RedisModule_Init.
    let create = unsafe { raw::RedisModule_CreateCommand };
    let Some(create) = create else {
        return Err("RedisModule_CreateCommand not found".into());
    };
    for command in commands {
        let (first, last, step) = command.keys;
        // SAFETY: in OnLoad, with its context; the strings are NUL-terminated and static.
        let status = unsafe {
            create(
                ctx.ctx,
                command.name.as_ptr(),
                Some(command.callback),
                command.flags.as_ptr(),
                first,
                last,
                step,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(command.name.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// How many arguments [`dispatch`] passes on the stack; more take an allocation.
const ARGS_ON_STACK: usize = 16;

/// Runs `handler` on the command's arguments, borrowed from the server for the duration of the
/// call: no retain, no free and, up to [`ARGS_ON_STACK`] arguments, no allocation, where
/// `redis_module`'s command table builds a `Vec` of retained strings on every call. Replies what
/// the handler returns unless it replied itself ([`RedisValue::NoReply`]).
pub(crate) fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: fn(&Context, &[RedisString]) -> RedisResult,
) -> c_int {
    let context = Context::new(ctx);
    let argv: &[*mut raw::RedisModuleString] = match usize::try_from(argc) {
        // SAFETY: the server passes argc valid string pointers in argv for the whole call.
        Ok(len) if !argv.is_null() => unsafe { std::slice::from_raw_parts(argv, len) },
        _ => &[],
    };
    // Never dropped (`ManuallyDrop`): the server owns the strings, the module only borrows them.
    let borrow = |arg: &*mut raw::RedisModuleString| {
        ManuallyDrop::new(RedisString::from_redis_module_string(ctx, *arg))
    };
    let result = if argv.len() <= ARGS_ON_STACK {
        let mut slots =
            [const { MaybeUninit::<ManuallyDrop<RedisString>>::uninit() }; ARGS_ON_STACK];
        for (slot, arg) in slots.iter_mut().zip(argv) {
            slot.write(borrow(arg));
        }
        // SAFETY: the first argv.len() slots are initialised, and `MaybeUninit` and
        // `ManuallyDrop` have the layout of the `RedisString` they hold.
        let args =
            unsafe { std::slice::from_raw_parts(slots.as_ptr().cast::<RedisString>(), argv.len()) };
        handler(&context, args)
    } else {
        let slots: Vec<ManuallyDrop<RedisString>> = argv.iter().map(borrow).collect();
        // SAFETY: `ManuallyDrop` has the layout of the `RedisString` it holds.
        let args = unsafe {
            std::slice::from_raw_parts(slots.as_ptr().cast::<RedisString>(), slots.len())
        };
        handler(&context, args)
    };
    match result {
        Ok(RedisValue::NoReply) => raw::REDISMODULE_OK as c_int,
        result => context.reply(result) as c_int,
    }
}

/// Runs `body`, which replies on success, and replies the error it returns. A panic in `body` is
/// caught, logged at warning level and answered with the internal error, so a bug never takes the
/// server down. Every error reply, the internal one included, is counted here in the statistics;
/// `body` counts its successes.
///
/// `body` must reply only as its last step: a panic caught after a reply has started would leave
/// a broken reply.
pub(crate) fn guarded(
    ctx: &Context,
    command: Command,
    body: impl FnOnce() -> Result<(), Error>,
) -> RedisResult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {}
        Ok(Err(error)) => reply_error(ctx, &error),
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic without a message");
            log::warning(
                ctx,
                &format!("{} failed with an internal error: {reason}", command.name()),
            );
            reply_error(ctx, &Error::Internal(command));
        }
    }
    Ok(RedisValue::NoReply)
}

/// Replies the error's message, which already starts with its code, and counts it.
fn reply_error(ctx: &Context, error: &Error) {
    stats::record_error();
    // The message is printable ASCII (see `Echo`), so it has no NUL; the fallback is for safety.
    let message =
        CString::new(error.to_string()).unwrap_or_else(|_| c"ERR internal error".to_owned());
    // SAFETY: the message is NUL-terminated and outlives the call.
    unsafe {
        raw::RedisModule_ReplyWithError.expect("RedisModule_ReplyWithError")(
            ctx.ctx,
            message.as_ptr(),
        );
    }
}

/// Whether the server can replicate a script verbatim: whether it has the config
/// `lua-replicate-commands` (Redis 6.2 and older; 7.0 removed it with verbatim replication).
/// Checked once at load ([`detect_verbatim_scripts`]); until then, and when the check fails,
/// assumed, so that [`refuse_verbatim_script`] asks for the context's flags.
static VERBATIM_SCRIPTS: AtomicBool = AtomicBool::new(true);

/// Checks at load whether the server has the config `lua-replicate-commands`: without it, no
/// script is replicated verbatim, and the commands skip `RedisModule_GetContextFlags` (131
/// instructions a call on Redis 7.0). Answers whether it has.
pub(crate) fn detect_verbatim_scripts(ctx: &Context) -> bool {
    let has = !matches!(
        ctx.call("CONFIG", &["GET", "lua-replicate-commands"]),
        Ok(RedisValue::Array(pair)) if pair.is_empty()
    );
    VERBATIM_SCRIPTS.store(has, Relaxed);
    has
}

/// Fails with [`Error::VerbatimScript`] when the command runs inside a script that the server
/// replicates verbatim: only Redis 6.2 and older do, with `lua-replicate-commands no`, and
/// there a replica or an AOF replay would run the script, and so decide again, on its own
/// clock. The config is read only when the command runs in a script, which is rare. A script
/// that switched itself to effects with `redis.replicate_commands()` is refused too: the module
/// cannot tell.
pub(crate) fn refuse_verbatim_script(ctx: &Context, command: Command) -> Result<(), Error> {
    if !VERBATIM_SCRIPTS.load(Relaxed) {
        return Ok(());
    }
    // SAFETY: the context is the command's; GetContextFlags exists since Redis 5.
    let flags =
        unsafe { raw::RedisModule_GetContextFlags.map_or(0, |get_flags| get_flags(ctx.ctx)) };
    if flags & raw::REDISMODULE_CTX_FLAGS_LUA as i32 == 0 {
        return Ok(());
    }
    let verbatim = match ctx.call("CONFIG", &["GET", "lua-replicate-commands"]) {
        Ok(RedisValue::Array(pair)) => matches!(
            pair.get(1),
            Some(RedisValue::SimpleString(value) | RedisValue::BulkString(value))
                if value.eq_ignore_ascii_case("no")
        ),
        _ => false,
    };
    if verbatim {
        Err(Error::VerbatimScript(command))
    } else {
        Ok(())
    }
}

/// A reply field: counts and times are below 2^63, but saturate rather than wrap.
pub(crate) fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The contract's five integers of a decision:
/// `[allowed, limit, remaining, reset_after_ms, retry_after_ms]`.
pub(crate) fn decision_fields(decision: &Decision) -> [i64; 5] {
    [
        i64::from(decision.allowed),
        saturate(decision.limit),
        saturate(decision.remaining),
        saturate(decision.reset_after_ms),
        decision.retry_after_ms,
    ]
}

/// Replies a decision as the contract's array of five integers, with `window` as a sixth when
/// given (`WITHWINDOW`).
pub(crate) fn reply_decision(ctx: &Context, decision: &Decision, window: Option<u64>) {
    let fields = decision_fields(decision);
    match window {
        None => reply_integers(ctx, &fields),
        Some(window) => {
            let [a, b, c, d, e] = fields;
            reply_integers(ctx, &[a, b, c, d, e, saturate(window)]);
        }
    }
}

/// Replies an array of integers.
pub(crate) fn reply_integers(ctx: &Context, fields: &[i64]) {
    raw::reply_with_array(ctx.ctx, fields.len() as std::os::raw::c_long);
    for &field in fields {
        raw::reply_with_long_long(ctx.ctx, field);
    }
}

/// Replies one integer.
pub(crate) fn reply_integer(ctx: &Context, value: i64) {
    raw::reply_with_long_long(ctx.ctx, value);
}
