//! The floor: a benchmark-only Redis module whose one command, `FLOOR.INCR key period_ms`, does
//! the least any module command shaped like `RATELIMIT.CHECK` can do. `make bench` loads it next
//! to the module and measures it as a reference line: an algorithm's cost over the floor's is
//! what the algorithm itself adds, since no module can do less for a command of this shape.
//!
//! For each call it:
//!
//! - opens the key for reading and writing;
//! - reads its integer value through `RedisModule_StringDMA` (an absent key counts as 0);
//! - adds 1 and writes the result back through DMA, in place when the length is unchanged; a new
//!   key, or a value whose length changed, is first made with `RedisModule_StringTruncate`, at
//!   exactly its length (a RAW string, as the module stores its values);
//! - sets an absolute expiry (`RedisModule_SetAbsExpire`) only when it creates the key;
//! - replicates the effect as `SET key value PXAT expiry` with the cheapest format, `"sbsb"`: the
//!   key and a `PXAT` string object made once at load, the value and the expiry as buffers;
//! - replies an array of five integers: 1, the count, the period, the milliseconds to the
//!   window's end, and 0.
//!
//! Its windows are aligned on multiples of the period since the epoch, so the window's end, and
//! with it the replicated expiry, is computed from the clock and never read from the key
//! (`RATELIMIT.CHECK`'s FIXED windows open at the first request and must read the key's expiry:
//! `make bench`'s instruction table shows what `RedisModule_GetAbsExpire` costs it). This assumes
//! that only `FLOOR.INCR` writes its keys.
//!
//! The command is registered with `RedisModule_CreateCommand` and a raw C callback, not through
//! `redis_module!`'s command table, whose wrapper builds a `Vec<RedisString>` of the arguments on
//! every call. There is no `catch_unwind`: nothing below can panic. Every server API it calls is
//! checked at load, and the command answers an error for a wrong number of arguments, a bad
//! period, a key of another type, a value that is not an integer and an overflow.

use redis_module::raw;
use std::os::raw::{c_char, c_int, c_longlong};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

/// The `PXAT` argument of every replicated `SET`, made once at load; null before and after.
static PXAT: AtomicPtr<raw::RedisModuleString> = AtomicPtr::new(ptr::null_mut());

/// The longest decimal `i64`: a sign and 19 digits.
const MAX_DIGITS: usize = 20;

/// Parses a decimal `i64` as Redis's `string2ll` does: an optional `-`, then digits without a
/// leading zero (except `0` itself), with no sign on zero and no overflow.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(byte - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// Writes `value` in decimal at the end of `buf` and answers where it starts.
pub fn format_i64(value: i64, buf: &mut [u8; MAX_DIGITS]) -> usize {
    let mut at = buf.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    at
}

/// The end of the window holding `now_ms`: the next multiple of `period_ms` after it, saturated.
pub fn window_end(now_ms: i64, period_ms: i64) -> i64 {
    let start = now_ms - now_ms.rem_euclid(period_ms);
    start.saturating_add(period_ms)
}

/// The server APIs the command calls, copied from the bindings' function pointers once they are
/// all known to be there.
#[derive(Clone, Copy)]
struct Api {
    open_key: unsafe extern "C" fn(
        *mut raw::RedisModuleCtx,
        *mut raw::RedisModuleString,
        c_int,
    ) -> *mut raw::RedisModuleKey,
    close_key: unsafe extern "C" fn(*mut raw::RedisModuleKey),
    key_type: unsafe extern "C" fn(*mut raw::RedisModuleKey) -> c_int,
    string_dma: unsafe extern "C" fn(*mut raw::RedisModuleKey, *mut usize, c_int) -> *mut c_char,
    string_truncate: unsafe extern "C" fn(*mut raw::RedisModuleKey, usize) -> c_int,
    delete_key: unsafe extern "C" fn(*mut raw::RedisModuleKey) -> c_int,
    set_abs_expire: unsafe extern "C" fn(*mut raw::RedisModuleKey, raw::mstime_t) -> c_int,
    milliseconds: unsafe extern "C" fn() -> raw::mstime_t,
    string_to_long_long:
        unsafe extern "C" fn(*const raw::RedisModuleString, *mut c_longlong) -> c_int,
    replicate:
        unsafe extern "C" fn(*mut raw::RedisModuleCtx, *const c_char, *const c_char, ...) -> c_int,
    reply_with_array: unsafe extern "C" fn(*mut raw::RedisModuleCtx, std::os::raw::c_long) -> c_int,
    reply_with_long_long: unsafe extern "C" fn(*mut raw::RedisModuleCtx, c_longlong) -> c_int,
    reply_with_error: unsafe extern "C" fn(*mut raw::RedisModuleCtx, *const c_char) -> c_int,
    wrong_arity: unsafe extern "C" fn(*mut raw::RedisModuleCtx) -> c_int,
}

/// Filled in by `init`, before the command is registered; read by every call.
static mut API: Option<Api> = None;

impl Api {
    /// The function pointers, or `None` when the server lacks any of them (`SetAbsExpire` needs
    /// Redis 7.0).
    ///
    /// # Safety
    ///
    /// Only after `RedisModule_Init`, which fills in the pointers.
    unsafe fn load() -> Option<Api> {
        Some(Api {
            open_key: raw::RedisModule_OpenKey?,
            close_key: raw::RedisModule_CloseKey?,
            key_type: raw::RedisModule_KeyType?,
            string_dma: raw::RedisModule_StringDMA?,
            string_truncate: raw::RedisModule_StringTruncate?,
            delete_key: raw::RedisModule_DeleteKey?,
            set_abs_expire: raw::RedisModule_SetAbsExpire?,
            milliseconds: raw::RedisModule_Milliseconds?,
            string_to_long_long: raw::RedisModule_StringToLongLong?,
            replicate: raw::RedisModule_Replicate?,
            reply_with_array: raw::RedisModule_ReplyWithArray?,
            reply_with_long_long: raw::RedisModule_ReplyWithLongLong?,
            reply_with_error: raw::RedisModule_ReplyWithError?,
            wrong_arity: raw::RedisModule_WrongArity?,
        })
    }
}

const OK: c_int = raw::REDISMODULE_OK as c_int;

/// `FLOOR.INCR key period_ms`: see the crate's documentation.
///
/// # Safety
///
/// Called by the server only, with a valid context and `argc` arguments.
unsafe extern "C" fn floor_incr(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: written once by `init` before the command exists, only read from then on.
    let Some(api) = (unsafe { API }) else {
        return ERR;
    };
    if argc != 3 {
        return (api.wrong_arity)(ctx);
    }
    let name = *argv.add(1);
    let mut period: c_longlong = 0;
    if (api.string_to_long_long)(*argv.add(2), &mut period) != OK || period <= 0 {
        return (api.reply_with_error)(ctx, c"ERR period_ms must be a positive integer".as_ptr());
    }
    let key = (api.open_key)(
        ctx,
        name,
        (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int,
    );
    let reply = incr(api, ctx, key, name, period);
    (api.close_key)(key);
    reply
}

const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// The body of [`floor_incr`] on the open `key`, which the caller closes.
unsafe fn incr(
    api: Api,
    ctx: *mut raw::RedisModuleCtx,
    key: *mut raw::RedisModuleKey,
    name: *mut raw::RedisModuleString,
    period: i64,
) -> c_int {
    let error = |message: &std::ffi::CStr| (api.reply_with_error)(ctx, message.as_ptr());
    // Compared as numbers: a type newer than the bindings has no `KeyType` variant.
    let key_type = (api.key_type)(key) as isize;
    let old = if key_type == raw::REDISMODULE_KEYTYPE_EMPTY {
        None
    } else if key_type != raw::REDISMODULE_KEYTYPE_STRING {
        return error(c"WRONGTYPE Operation against a key holding the wrong kind of value");
    } else {
        let mut len = 0usize;
        let data = (api.string_dma)(key, &mut len, raw::REDISMODULE_READ as c_int);
        if data.is_null() {
            return error(c"ERR the value could not be read");
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>().cast_const(), len);
        match parse_i64(bytes) {
            Some(value) => Some((value, len)),
            None => return error(c"ERR value is not an integer or out of range"),
        }
    };
    let Some(count) = old.map_or(0, |(value, _)| value).checked_add(1) else {
        return error(c"ERR increment or decrement would overflow");
    };
    let mut digits = [0u8; MAX_DIGITS];
    let start = format_i64(count, &mut digits);
    let value = &digits[start..];
    let now = (api.milliseconds)();
    let end = window_end(now, period);

    // A new key, or a new length: made afresh at exactly its length, with the window's expiry.
    // Otherwise the value is overwritten in place and the expiry left alone.
    let created = match old {
        Some((_, len)) if len == value.len() => false,
        _ => {
            let emptied = old.is_none() || (api.delete_key)(key) == OK;
            if !emptied || (api.string_truncate)(key, value.len()) != OK {
                return error(c"ERR the key could not be written");
            }
            true
        }
    };
    let mut len = 0usize;
    let data = (api.string_dma)(key, &mut len, raw::REDISMODULE_WRITE as c_int);
    if data.is_null() || len != value.len() {
        return error(c"ERR the key could not be written");
    }
    ptr::copy_nonoverlapping(value.as_ptr(), data.cast::<u8>(), len);
    if created && (api.set_abs_expire)(key, end) != OK {
        return error(c"ERR the expiry could not be set");
    }

    let mut expiry = [0u8; MAX_DIGITS];
    let expiry_start = format_i64(end, &mut expiry);
    let expiry = &expiry[expiry_start..];
    (api.replicate)(
        ctx,
        c"SET".as_ptr(),
        c"sbsb".as_ptr(),
        name,
        value.as_ptr().cast::<c_char>(),
        value.len(),
        PXAT.load(Relaxed),
        expiry.as_ptr().cast::<c_char>(),
        expiry.len(),
    );

    (api.reply_with_array)(ctx, 5);
    for field in [1, count, period, end.saturating_sub(now), 0] {
        (api.reply_with_long_long)(ctx, field);
    }
    OK
}

/// Checks the server's APIs, makes the `PXAT` string and registers `FLOOR.INCR`.
fn init(ctx: &redis_module::Context, _args: &[redis_module::RedisString]) -> redis_module::Status {
    // SAFETY: RedisModule_Init has run; nothing calls the command before it is registered below.
    unsafe {
        let Some(api) = Api::load() else {
            ctx.log_warning("floor not loaded: the server lacks RedisModule_SetAbsExpire (7.0+)");
            return redis_module::Status::Err;
        };
        API = Some(api);
        let Some(create_string) = raw::RedisModule_CreateString else {
            return redis_module::Status::Err;
        };
        let pxat = create_string(ptr::null_mut(), c"PXAT".as_ptr(), 4);
        free(PXAT.swap(pxat, Relaxed));
        let Some(create_command) = raw::RedisModule_CreateCommand else {
            return redis_module::Status::Err;
        };
        let status = create_command(
            ctx.ctx,
            c"floor.incr".as_ptr(),
            Some(floor_incr),
            c"write deny-oom fast".as_ptr(),
            1,
            1,
            1,
        );
        if status != OK {
            return redis_module::Status::Err;
        }
    }
    redis_module::Status::Ok
}

/// Frees the `PXAT` string at `MODULE UNLOAD`.
fn deinit(_ctx: &redis_module::Context) -> redis_module::Status {
    free(PXAT.swap(ptr::null_mut(), Relaxed));
    redis_module::Status::Ok
}

fn free(string: *mut raw::RedisModuleString) {
    if !string.is_null() {
        // SAFETY: made without a context by `init`, and no longer shared.
        unsafe {
            if let Some(free_string) = raw::RedisModule_FreeString {
                free_string(ptr::null_mut(), string);
            }
        }
    }
}

/// `RedisModule_OnLoad` and the global allocator: Redis's in the module, the system's in unit
/// tests, which run without a server (`RedisAlloc` aborts there). No command table: `init`
/// registers the raw command.
mod entry {
    use super::{deinit, init};
    use redis_module::redis_module;

    #[cfg(not(test))]
    type Allocator = redis_module::alloc::RedisAlloc;
    #[cfg(not(test))]
    const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
    #[cfg(test)]
    type Allocator = std::alloc::System;
    #[cfg(test)]
    const ALLOCATOR: Allocator = std::alloc::System;

    redis_module! {
        name: "floor",
        version: 1,
        allocator: (Allocator, ALLOCATOR),
        data_types: [],
        init: init,
        deinit: deinit,
        commands: [],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_as_redis_does() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn formats_what_it_parses() {
        for value in [0, 1, 9, 10, 99, 100, -1, -10, 1_000_000, i64::MAX, i64::MIN] {
            let mut buf = [0u8; MAX_DIGITS];
            let start = format_i64(value, &mut buf);
            assert_eq!(&buf[start..], value.to_string().as_bytes());
            assert_eq!(parse_i64(&buf[start..]), Some(value));
        }
    }

    #[test]
    fn windows_are_aligned_on_the_period() {
        assert_eq!(window_end(0, 1000), 1000);
        assert_eq!(window_end(999, 1000), 1000);
        assert_eq!(window_end(1000, 1000), 2000);
        assert_eq!(window_end(1_764_000_000_123, 60_000), 1_764_000_060_000);
        assert_eq!(window_end(i64::MAX - 1, i64::MAX), i64::MAX);
        assert_eq!(window_end(5, i64::MAX), i64::MAX);
    }
}
