//! `redis-ratelimit`: rate limiting inside Redis, as a loadable module.
//!
//! Registers the `RATELIMIT.*` commands, whose contract is `docs/commands.md`. The decisions are
//! taken by the pure `ratelimit_core` crate; this crate parses arguments ([`args`]), reads the
//! server clock and the keys, stores and replicates the effects, and replies. Each handler below
//! is one line.
#![warn(missing_docs)]

mod acl;
pub mod args;
mod commands;
pub mod config;
mod docs;
pub mod error;
mod leases;
mod log;
mod stats;
mod store;
pub mod top;

use redis_module::{Context, InfoContext, RedisResult, RedisString, Status};

/// RATELIMIT.CHECK key limit period [ALGORITHM a] [BURST n] [COST n] [DRYRUN | FORCE]
/// [WITHWINDOW]
fn ratelimit_check(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::check::run(ctx, args)
}

/// RATELIMIT.MCHECK numkeys key [key ...] LIMIT limit period [ALGORITHM a] [BURST n] [COST n]
/// [LIMIT ...] [DRYRUN | FORCE] [WITHWINDOW]
fn ratelimit_mcheck(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::mcheck::run(ctx, args)
}

/// RATELIMIT.QUOTA key limit period [ALGORITHM a] [BURST n] [COST n]
fn ratelimit_quota(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::quota::run(ctx, args)
}

/// RATELIMIT.REFUND key limit period [ALGORITHM a] [BURST n] COST n [WINDOW w]
fn ratelimit_refund(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::refund::run(ctx, args)
}

/// RATELIMIT.ACQUIRE key limit lease [ID id]
fn ratelimit_acquire(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::acquire::run(ctx, args)
}

/// RATELIMIT.RELEASE key id
fn ratelimit_release(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::release::run(ctx, args)
}

/// RATELIMIT.TOP [count] | RATELIMIT.TOP RESET
fn ratelimit_top(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::top::run(ctx, args)
}

/// RATELIMIT.RESET key
fn ratelimit_reset(ctx: &Context, args: &[RedisString]) -> RedisResult {
    commands::reset::run(ctx, args)
}

/// The raw `RedisModule_CreateCommand` callback of a handler: it passes the server's arguments
/// to the handler as borrowed strings ([`commands::dispatch`]).
macro_rules! callback {
    ($handler:ident) => {{
        extern "C" fn callback(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::os::raw::c_int,
        ) -> std::os::raw::c_int {
            commands::dispatch(ctx, argv, argc, $handler)
        }
        callback
    }};
}

/// The commands, created by [`init`] with raw callbacks ([`commands::register`]): name, flags,
/// key positions (first, last, step) and handler. Not through `redis_module!`'s command table,
/// whose callback builds a `Vec` of retained arguments on every call, nor `#[command]`, whose
/// registration aborts Redis 7.0 at load.
///
/// ACL: the key positions 1,1,1 make key patterns apply (as key specs on 7.0+, where `docs`
/// replaces them with precise ones). MCHECK's keys are found by the module itself
/// (`getkeys-api`), so that 6.2, ACL key patterns and cluster routing see every one. The flags
/// do not put module commands in any ACL category; `init` does where the server allows it (see
/// `acl`).
const COMMANDS: &[commands::Registration] = &[
    commands::Registration {
        name: c"ratelimit.check",
        flags: c"write deny-oom fast",
        keys: (1, 1, 1),
        callback: callback!(ratelimit_check),
    },
    commands::Registration {
        name: c"ratelimit.mcheck",
        flags: c"write deny-oom fast getkeys-api",
        keys: (2, 2, 1),
        callback: callback!(ratelimit_mcheck),
    },
    commands::Registration {
        name: c"ratelimit.quota",
        flags: c"readonly fast",
        keys: (1, 1, 1),
        callback: callback!(ratelimit_quota),
    },
    commands::Registration {
        name: c"ratelimit.refund",
        flags: c"write deny-oom fast",
        keys: (1, 1, 1),
        callback: callback!(ratelimit_refund),
    },
    commands::Registration {
        name: c"ratelimit.reset",
        flags: c"write fast",
        keys: (1, 1, 1),
        callback: callback!(ratelimit_reset),
    },
    commands::Registration {
        name: c"ratelimit.acquire",
        flags: c"write deny-oom fast",
        keys: (1, 1, 1),
        callback: callback!(ratelimit_acquire),
    },
    commands::Registration {
        name: c"ratelimit.release",
        flags: c"write deny-oom fast",
        keys: (1, 1, 1),
        callback: callback!(ratelimit_release),
    },
    commands::Registration {
        name: c"ratelimit.top",
        // Not `fast`: a reply is linear in the summary's size (up to 100,000 keys).
        flags: c"admin",
        keys: (0, 0, 0),
        callback: callback!(ratelimit_top),
    },
];

/// Applies the module arguments (`default-algorithm gcra`) and registers the config, or refuses
/// to load with a warning that names the bad argument, having allocated nothing that outlives
/// the failed load. Then takes over the signalling of changed keys ([`store::init`]), registers
/// the commands' docs and key specs where the server has them ([`docs`]), and puts the commands
/// in their ACL categories where the server lets a module set them ([`acl`]). Logs what it found
/// and did, so an operator can tell the clock, expiry, docs, config and ACL support apart
/// without reading the code.
fn init(ctx: &Context, args: &[RedisString]) -> Status {
    stats::clear();
    let configured = match config::load(ctx, args) {
        Ok(configured) => configured,
        Err(reason) => {
            log::warning(ctx, &format!("redis-ratelimit not loaded: {reason}"));
            release_detached_context();
            return Status::Err;
        }
    };
    if let Err(name) = commands::register(ctx, COMMANDS) {
        log::warning(
            ctx,
            &format!("redis-ratelimit not loaded: could not create the command {name}"),
        );
        return Status::Err;
    }
    store::init(ctx);
    log::notice(ctx, &store::describe_apis());
    if !commands::detect_verbatim_scripts(ctx) {
        log::notice(
            ctx,
            "redis-ratelimit: no lua-replicate-commands: scripts are replicated by their effects",
        );
    }
    log::notice(ctx, &format!("redis-ratelimit: {configured}"));
    match docs::register(ctx) {
        Ok(line) => log::notice(ctx, &format!("redis-ratelimit: {line}")),
        Err(line) => log::warning(ctx, &format!("redis-ratelimit: {line}")),
    }
    match acl::register(ctx) {
        acl::Outcome::Done(line) => log::notice(ctx, &format!("redis-ratelimit: {line}")),
        acl::Outcome::Warning(line) => log::warning(ctx, &format!("redis-ratelimit: {line}")),
    }
    Status::Ok
}

/// Frees the thread-safe context that `redis_module!` detached before calling [`init`]
/// (`MODULE_CONTEXT`, a context with a client of its own: about 17 KB). The module never uses
/// it, and after a failed load the server unloads the module's code, so nothing could ever free
/// it: each failed `MODULE LOAD` would leak it.
fn release_detached_context() {
    use redis_module::{raw, DetachedContext, MODULE_CONTEXT};
    use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};
    // `DetachedContext`'s one field, the context pointer, is private to redis_module (pinned at
    // 2.0.8). It is read in place: the struct has no other field and is that field's size, so
    // the field is at offset 0.
    const _: () = assert!(
        std::mem::size_of::<DetachedContext>()
            == std::mem::size_of::<AtomicPtr<raw::RedisModuleCtx>>()
    );
    // SAFETY: see above; the static lives as long as the module's code.
    let slot =
        unsafe { &*std::ptr::from_ref(&MODULE_CONTEXT).cast::<AtomicPtr<raw::RedisModuleCtx>>() };
    let detached = slot.swap(std::ptr::null_mut(), Relaxed);
    // SAFETY: a context from RedisModule_GetDetachedThreadSafeContext, freed once (swapped out).
    unsafe {
        if let (false, Some(free)) = (detached.is_null(), raw::RedisModule_FreeThreadSafeContext) {
            free(detached);
        }
    }
}

/// Refuses `MODULE UNLOAD`, with the reason in the log. A server runs a module's command after
/// an unload in some paths (a `MULTI` that queued one, a client paused in one) and crashes
/// there; and the limiters' state is plain strings and sorted sets, which survive a restart in
/// RDB and AOF. So an upgrade is a restart.
fn deinit(ctx: &Context) -> Status {
    log::warning(
        ctx,
        "redis-ratelimit: MODULE UNLOAD refused: a command queued before the unload (in MULTI, \
         or paused by CLIENT PAUSE) would crash the server. To upgrade the module, restart the \
         server with the new one: the limiters are plain keys and survive in RDB and AOF",
    );
    Status::Err
}

/// INFO ratelimit: the counters and the configuration.
fn info(ctx: &InfoContext, _for_crash_report: bool) {
    // Fails only on a duplicate field name, which the unit tests of `stats` rule out.
    let _ = stats::report(
        ctx,
        config::value_name(config::default_algorithm()),
        config::top_keys(),
    );
}

/// The entry points `RedisModule_OnLoad` and `RedisModule_OnUnload` and the global allocator,
/// generated by `redis_module!`. Its generated functions carry no docs, hence the `allow`.
#[allow(missing_docs)]
mod entry {
    use super::{deinit, info, init};
    // `info:`'s expansion names these two unqualified.
    use redis_module::{redis_module, InfoContext, RedisResult};

    // Redis's allocator in the module; the system one in unit tests, which run without a server
    // (RedisAlloc aborts there).
    #[cfg(not(test))]
    type Allocator = redis_module::alloc::RedisAlloc;
    #[cfg(not(test))]
    const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
    #[cfg(test)]
    type Allocator = std::alloc::System;
    #[cfg(test)]
    const ALLOCATOR: Allocator = std::alloc::System;

    // The commands are created by `init` from `COMMANDS`, with raw callbacks.
    redis_module! {
        name: "ratelimit",
        version: 1,
        allocator: (Allocator, ALLOCATOR),
        data_types: [],
        init: init,
        deinit: deinit,
        info: info,
        commands: [],
    }
}
