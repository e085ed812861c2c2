//! Logging to the Redis log.
//!
//! `redis_module`'s own logging passes the message as the printf format string, so a `%` in it
//! (say, in a panic message) would be read as a conversion. Here the message is always an
//! argument of a constant `"%s"` format, with any NUL byte replaced.

use redis_module::{raw, Context};
use std::ffi::{CStr, CString};

/// Logs `message` at notice level.
pub(crate) fn notice(ctx: &Context, message: &str) {
    log(ctx, c"notice", message);
}

/// Logs `message` at warning level.
pub(crate) fn warning(ctx: &Context, message: &str) {
    log(ctx, c"warning", message);
}

fn log(ctx: &Context, level: &CStr, message: &str) {
    let text = CString::new(message.replace('\0', "?")).unwrap_or_default();
    // SAFETY: all three strings are NUL-terminated and outlive the call; "%s" consumes exactly
    // the one argument given.
    unsafe {
        if let Some(log) = raw::RedisModule_Log {
            log(ctx.ctx, level.as_ptr(), c"%s".as_ptr(), text.as_ptr());
        }
    }
}
