//! The commands' ACL categories, where the server lets a module set them.
//!
//! - Key patterns need nothing here: the key positions (1, 1, 1) given at creation make `~rl:*`
//!   apply to the key argument on every server (as a key spec on 7.0+).
//! - The command flags (`write`, `readonly`, `fast`) do **not** put a module's commands in
//!   `@write`, `@read` or `@fast`: only `RedisModule_SetCommandACLCategories` (Redis 7.2+,
//!   Valkey) does. Where it exists, the writing commands join `@write @fast` and QUOTA
//!   `@read @fast`.
//! - Where the server also has `RedisModule_AddACLCategory` (Redis 7.4+, Valkey 8), they all
//!   join the new category `@ratelimit`, so `+@ratelimit ~rl:*` grants exactly them.
//! - Elsewhere (6.2, 7.0) the commands are in no category: grant them by name. There,
//!   `+@all -@write` still allows every one of them, writes included.
//!
//! This is done here rather than by `redis_module!`: its mandatory categories fail the load on
//! servers without `SetCommandACLCategories`, and its `acl_categories` fails the load when the
//! category already exists, which it does after `MODULE UNLOAD` (a category is never removed),
//! so the module could never be loaded again into the same server process.

use redis_module::{raw, Context};
use std::ffi::CStr;
use std::os::raw::c_int;

/// The module's own category, as `ACL CAT` lists it.
pub const CATEGORY: &CStr = c"ratelimit";

/// Each command with the existing categories its flags stand for.
const COMMANDS: [(&CStr, &str); 8] = [
    (c"ratelimit.acquire", "write fast"),
    (c"ratelimit.check", "write fast"),
    (c"ratelimit.mcheck", "write fast"),
    (c"ratelimit.quota", "read fast"),
    (c"ratelimit.refund", "write fast"),
    (c"ratelimit.release", "write fast"),
    (c"ratelimit.reset", "write fast"),
    (c"ratelimit.top", "admin dangerous"),
];

/// A line for the log. The load goes on either way: categories are a convenience, and the
/// commands can always be granted by name.
pub(crate) enum Outcome {
    /// The commands are in every category the server supports.
    Done(String),
    /// The server refused a category it should have accepted.
    Warning(String),
}

/// Puts the commands in their categories. Must run in `RedisModule_OnLoad`, after the commands
/// were created.
pub(crate) fn register(ctx: &Context) -> Outcome {
    // SAFETY: copies function pointers filled in by RedisModule_Init, to test them.
    let (add_category, get_command, set_categories) = unsafe {
        (
            raw::RedisModule_AddACLCategory,
            raw::RedisModule_GetCommand,
            raw::RedisModule_SetCommandACLCategories,
        )
    };
    let (Some(get_command), Some(set_categories)) = (get_command, set_categories) else {
        return Outcome::Done(
            "commands in no ACL category (RedisModule_SetCommandACLCategories not found): grant \
             +ratelimit.check +ratelimit.mcheck +ratelimit.quota +ratelimit.refund \
             +ratelimit.reset +ratelimit.acquire +ratelimit.release (and +ratelimit.top for \
             administrators) by name"
                .to_string(),
        );
    };
    // It fails when the category exists already, from an earlier load of this module into the
    // same process; the commands then join it all the same.
    let with_own_category = match add_category {
        // SAFETY: in OnLoad, with its context and a NUL-terminated name.
        Some(add_category) => {
            unsafe { add_category(ctx.ctx, CATEGORY.as_ptr()) };
            true
        }
        None => false,
    };
    let own = CATEGORY.to_string_lossy();
    let mut not_in_own = Vec::new();
    let mut in_none = Vec::new();
    for (name, implied) in COMMANDS {
        // SAFETY: in OnLoad, with its context; the command was created before, and the names are
        // NUL-terminated.
        let command = unsafe { get_command(ctx.ctx, name.as_ptr()) };
        let set = |categories: String| {
            let Ok(categories) = std::ffi::CString::new(categories) else {
                return false;
            };
            // SAFETY: a command of this module, during OnLoad; the string outlives the call.
            !command.is_null()
                && unsafe { set_categories(command, categories.as_ptr()) }
                    == raw::REDISMODULE_OK as c_int
        };
        // RATELIMIT.TOP reveals key names: an administrator's command, not an application's.
        let joins_own = with_own_category && !implied.contains("admin");
        if joins_own && set(format!("{implied} {own}")) {
            continue;
        }
        if joins_own {
            not_in_own.push(name.to_string_lossy());
        }
        if !set(implied.to_string()) {
            in_none.push(name.to_string_lossy());
        }
    }
    if !in_none.is_empty() || !not_in_own.is_empty() {
        return Outcome::Warning(format!(
            "the server refused ACL categories: not in @{own}: [{}]; in no category: [{}]; \
             grant those by name",
            not_in_own.join(", "),
            in_none.join(", ")
        ));
    }
    Outcome::Done(if with_own_category {
        format!("commands in ACL categories @{own}, @write or @read, and @fast")
    } else {
        format!(
            "commands in ACL categories @write or @read, and @fast; no @{own} \
             (RedisModule_AddACLCategory not found)"
        )
    })
}
