//! The keyspace side of the module: the server clock, and reading, writing, expiring and
//! deleting one limiter's key.
//!
//! Every write is replicated as its effect (`SET key value PXAT abs`, `PEXPIREAT key abs`,
//! `DEL key`, with absolute times from the master's clock), signalled as a change of the key
//! (`WATCH`, client-side caching) and announced with the keyspace events the equivalent core
//! command sends (`set` and `expire`, `expire`, `del`). Nothing else is: the module runs with
//! `REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED` (see [`init`]), so opening a key for writing
//! and reading it, as a denial or a dry run does, signals nothing.
//!
//! Everything that touches a key goes through here, so that the hot path can be measured and
//! optimised in one place. Optional server APIs are detected by the presence of their function
//! pointers, never by version number.

use crate::args::Command;
use crate::error::Error;
use ratelimit_core::{Change, Encoded, State, Update};
use redis_module::{raw, Context, RedisString};
use std::cell::Cell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_longlong};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

/// The keyspace event class of `expire` and `del`.
const GENERIC: c_int = raw::REDISMODULE_NOTIFY_GENERIC;

/// One reading of the server's wall clock, taken once per command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Microseconds since the Unix epoch.
    pub now_us: u64,
    /// Milliseconds since the Unix epoch: `now_us / 1000`.
    pub now_ms: u64,
}

/// Reads the server's wall clock: `RedisModule_CachedMicroseconds` (Redis 7.2+, the instant the
/// command started) when the server has it, else `RedisModule_Milliseconds`. Never a monotonic
/// clock: the time is compared with absolute key expiries and shared with other nodes.
pub(crate) fn now() -> Clock {
    // SAFETY: the pointers are filled in by RedisModule_Init and called with no arguments.
    let now_us = unsafe {
        match raw::RedisModule_CachedMicroseconds {
            Some(cached_microseconds) => u64::try_from(cached_microseconds()).unwrap_or(0),
            None => {
                let milliseconds =
                    raw::RedisModule_Milliseconds.expect("RedisModule_Milliseconds")();
                u64::try_from(milliseconds)
                    .unwrap_or(0)
                    .saturating_mul(1000)
            }
        }
    };
    Clock {
        now_us,
        now_ms: now_us / 1000,
    }
}

/// A readable line saying which optional server APIs the module found and will use.
pub(crate) fn describe_apis() -> String {
    // SAFETY: copies the function pointers (filled in by RedisModule_Init) to test them.
    let (cached_clock, get_abs, set_abs) = unsafe {
        (
            { raw::RedisModule_CachedMicroseconds }.is_some(),
            { raw::RedisModule_GetAbsExpire }.is_some(),
            { raw::RedisModule_SetAbsExpire }.is_some(),
        )
    };
    let clock = if cached_clock {
        "clock from RedisModule_CachedMicroseconds (microseconds)"
    } else {
        "clock from RedisModule_Milliseconds (milliseconds; RedisModule_CachedMicroseconds not found)"
    };
    let read = if get_abs {
        "expiry read with RedisModule_GetAbsExpire"
    } else {
        "expiry read with RedisModule_GetExpire (RedisModule_GetAbsExpire not found)"
    };
    let write = if set_abs {
        "written with RedisModule_SetAbsExpire"
    } else {
        "written with RedisModule_SetExpire (RedisModule_SetAbsExpire not found)"
    };
    format!("redis-ratelimit loaded: {clock}; {read}, {write}")
}

/// The `PXAT` argument of every replicated `SET`, as a string object made once at load
/// ([`prepare`]): the server takes a reference to a string object where it would allocate and
/// free a copy of a C string. Null before [`prepare`], when the C string is used. It lives as
/// long as the server: the module is never unloaded.
static PXAT: AtomicPtr<raw::RedisModuleString> = AtomicPtr::new(ptr::null_mut());

/// Takes over the signalling of changed keys from the server (see the module documentation),
/// and makes the string objects the commands reuse. Called at load.
pub(crate) fn init(ctx: &Context) {
    // SAFETY: called from OnLoad with its context; the option exists since Redis 6.0.
    unsafe {
        if let Some(set_options) = raw::RedisModule_SetModuleOptions {
            set_options(
                ctx.ctx,
                raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as c_int,
            );
        }
    }
    prepare();
}

/// Makes the string objects the commands reuse.
fn prepare() {
    // SAFETY: a string made without a context is owned here until `release` frees it.
    let pxat = unsafe {
        raw::RedisModule_CreateString.expect("RedisModule_CreateString")(
            ptr::null_mut(),
            c"PXAT".as_ptr(),
            4,
        )
    };
    free_string(PXAT.swap(pxat, Relaxed));
}

fn free_string(string: *mut raw::RedisModuleString) {
    if !string.is_null() {
        // SAFETY: the string was made without a context by `prepare`, and is no longer shared
        // (a previous load's, replaced).
        unsafe {
            raw::RedisModule_FreeString.expect("RedisModule_FreeString")(ptr::null_mut(), string)
        };
    }
}

/// Whether a key is opened to be read only or also written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only: usable on replicas. Opening an absent key yields no handle at all.
    Read,
    /// Read and write.
    Write,
}

/// An open key, closed on drop (also when a panic unwinds through it).
pub(crate) struct Key<'a> {
    ctx: &'a Context,
    command: Command,
    name: &'a RedisString,
    /// Null when a key opened for reading does not exist.
    handle: *mut raw::RedisModuleKey,
    /// What [`Key::read_state`] found, so that [`Key::write`] can update the value in place and
    /// leave an unchanged expiry alone.
    found: Cell<Found>,
}

/// What the last read of a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Not read yet.
    Unknown,
    /// No key.
    Absent,
    /// A string value of `len` bytes, now RAW-encoded (reading it made it so), with the
    /// absolute expiry `expire_at_ms` when the server reports it exactly
    /// (`RedisModule_GetAbsExpire`), else `None`.
    String {
        len: usize,
        expire_at_ms: Option<u64>,
    },
}

impl<'a> Key<'a> {
    /// Opens the key `name` for `command`.
    pub(crate) fn open(
        ctx: &'a Context,
        command: Command,
        name: &'a RedisString,
        access: Access,
    ) -> Key<'a> {
        let mode = match access {
            Access::Read => raw::REDISMODULE_READ,
            Access::Write => raw::REDISMODULE_READ | raw::REDISMODULE_WRITE,
        };
        // SAFETY: ctx and name are valid for the duration of the command.
        let handle = unsafe {
            raw::RedisModule_OpenKey.expect("RedisModule_OpenKey")(
                ctx.ctx,
                name.inner,
                mode as c_int,
            )
        };
        Key {
            ctx,
            command,
            name,
            handle,
            found: Cell::new(Found::Unknown),
        }
    }

    /// The key's string value, `None` when the key is absent. Fails with `WRONGTYPE` when it holds
    /// another type.
    fn value(&self) -> Result<Option<&[u8]>, Error> {
        // SAFETY: RedisModule_KeyType accepts a null key (answers EMPTY).
        let key_type =
            unsafe { raw::RedisModule_KeyType.expect("RedisModule_KeyType")(self.handle) };
        // Compared as numbers: `raw::KeyType` has no variant for types newer than the bindings
        // and would panic on them.
        match key_type as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => return Ok(None),
            raw::REDISMODULE_KEYTYPE_STRING => {}
            _ => return Err(Error::WrongType),
        }
        let handle = NonNull::new(self.handle).ok_or(Error::WrongType)?;
        let mut len = 0usize;
        // DMA access to a value that is not RAW-encoded (an int or embstr, as a replica or a
        // hand-written SET stores it) makes Redis unshare and decode it to a RAW string in place,
        // even in read mode. The module keeps its values RAW on the master (see `write`), so this
        // happens at most once per key there.
        // SAFETY: the key is open and holds a string; the buffer stays valid until the key is
        // modified or closed, which `&self` prevents while the slice lives.
        let bytes = unsafe {
            let data = raw::RedisModule_StringDMA.expect("RedisModule_StringDMA")(
                handle.as_ptr(),
                &mut len,
                raw::REDISMODULE_READ as c_int,
            );
            if data.is_null() {
                return Err(Error::WrongType);
            }
            std::slice::from_raw_parts(data.cast::<u8>().cast_const(), len)
        };
        Ok(Some(bytes))
    }

    /// The key's absolute expiry in milliseconds since the epoch, `None` without one.
    fn expire_at_ms(&self, now_ms: u64) -> Option<u64> {
        // SAFETY: the key is open; both functions accept any open key.
        unsafe {
            match raw::RedisModule_GetAbsExpire {
                Some(get_abs_expire) => u64::try_from(get_abs_expire(self.handle)).ok(),
                None => {
                    let ttl =
                        raw::RedisModule_GetExpire.expect("RedisModule_GetExpire")(self.handle);
                    // REDISMODULE_NO_EXPIRE (-1) and any other negative mean no expiry.
                    u64::try_from(ttl)
                        .ok()
                        .map(|ttl| now_ms.saturating_add(ttl))
                }
            }
        }
    }

    /// Makes `change` to the key, which must have been opened with [`Access::Write`] and read
    /// with [`Key::read_state`].
    pub(crate) fn apply(&self, change: &Change, now_ms: u64) -> Result<(), Error> {
        match change {
            Change::Keep => Ok(()),
            Change::Store(update) => self.write(update, now_ms),
            Change::Expire(at_ms) => self.expire(*at_ms, now_ms),
            Change::Delete => self.delete_written(),
        }
    }

    /// The limiter state stored in the key, `None` when the key is absent. Fails with
    /// `WRONGTYPE` for another type and with the not-a-limiter error for any other string.
    pub(crate) fn read_state(&self, now_ms: u64) -> Result<Option<State>, Error> {
        let Some(bytes) = self.value()? else {
            self.found.set(Found::Absent);
            return Ok(None);
        };
        let expire_at_ms = self.expire_at_ms(now_ms);
        let state = State::decode(bytes, expire_at_ms)?;
        // SAFETY: copies the function pointer (filled in by RedisModule_Init) to test it.
        let exact = unsafe { raw::RedisModule_GetAbsExpire }.is_some();
        self.found.set(Found::String {
            len: bytes.len(),
            expire_at_ms: if exact { expire_at_ms } else { None },
        });
        Ok(Some(state))
    }

    /// Stores `update` (value and absolute expiry) and replicates the effect as
    /// `SET key value PXAT expire_at_ms`, so replicas and the AOF hold exactly the master's state.
    /// The key must have been opened with [`Access::Write`] and read with [`Key::read_state`].
    ///
    /// This is the hot path of every admitted request, so it writes as little as it can. A value
    /// of the same length as the one read (a count that keeps its number of digits, a GCRA
    /// arrival time) is overwritten in place through DMA: no allocation, no keyspace change. A
    /// new key, or a value whose length changed, is written as a fresh RAW string of exactly its
    /// length (`RedisModule_StringTruncate` on an empty key), the encoding the next read would
    /// give it anyway. The expiry is set only when it changes: once per window for FIXED and
    /// SLIDING, on every write for GCRA.
    fn write(&self, update: &Update, now_ms: u64) -> Result<(), Error> {
        let encoded = update.state.encode();
        let bytes = encoded.as_bytes();
        let expire_at = c_longlong::try_from(update.expire_at_ms).unwrap_or(c_longlong::MAX);
        // SAFETY: the key is open for writing; `found` says what it holds.
        let stored = unsafe {
            match self.found.get() {
                Found::String { len, expire_at_ms } if len == bytes.len() => {
                    self.overwrite(bytes)
                        && (expire_at_ms == Some(update.expire_at_ms)
                            || self.set_expire_at(expire_at, now_ms))
                }
                found => {
                    (found == Found::Absent || self.delete())
                        && self.create(bytes)
                        && self.set_expire_at(expire_at, now_ms)
                }
            }
        };
        if !stored {
            return Err(Error::Internal(self.command));
        }
        self.replicate_set(bytes, expire_at);
        self.signal(&[
            (raw::REDISMODULE_NOTIFY_STRING, c"set"),
            (GENERIC, c"expire"),
        ]);
        Ok(())
    }

    /// Gives the key, which has a value but no expiry, the absolute expiry `at_ms`, and
    /// replicates `PEXPIREAT key at_ms`.
    fn expire(&self, at_ms: u64, now_ms: u64) -> Result<(), Error> {
        let at = c_longlong::try_from(at_ms).unwrap_or(c_longlong::MAX);
        // SAFETY: the key is open for writing and holds a value.
        if !unsafe { self.set_expire_at(at, now_ms) } {
            return Err(Error::Internal(self.command));
        }
        let at = Encoded::decimal(at_ms);
        let at = at.as_bytes();
        // SAFETY: "sb" matches a RedisModuleString and a buffer with its length.
        unsafe {
            raw::RedisModule_Replicate.expect("RedisModule_Replicate")(
                self.ctx.ctx,
                c"PEXPIREAT".as_ptr(),
                c"sb".as_ptr(),
                self.name.inner,
                at.as_ptr().cast::<c_char>(),
                at.len(),
            );
        }
        self.signal(&[(GENERIC, c"expire")]);
        Ok(())
    }

    /// Deletes the key, replicating a `DEL`.
    fn delete_written(&self) -> Result<(), Error> {
        // SAFETY: the key is open for writing; the format "s" matches one RedisModuleString.
        unsafe {
            if !self.delete() {
                return Err(Error::Internal(self.command));
            }
            raw::RedisModule_Replicate.expect("RedisModule_Replicate")(
                self.ctx.ctx,
                c"DEL".as_ptr(),
                c"s".as_ptr(),
                self.name.inner,
            );
        }
        self.signal(&[(GENERIC, c"del")]);
        Ok(())
    }

    /// Tells the server the key changed: it invalidates `WATCH`es and client-side caches, and
    /// sends each keyspace event of `events` (class and name), as core commands do.
    fn signal(&self, events: &[(c_int, &CStr)]) {
        // SAFETY: the context and the key name are valid for the whole command; the event
        // names are NUL-terminated.
        unsafe {
            raw::RedisModule_SignalModifiedKey.expect("RedisModule_SignalModifiedKey")(
                self.ctx.ctx,
                self.name.inner,
            );
            let notify =
                raw::RedisModule_NotifyKeyspaceEvent.expect("RedisModule_NotifyKeyspaceEvent");
            for (class, event) in events {
                notify(self.ctx.ctx, *class, event.as_ptr(), self.name.inner);
            }
        }
    }

    /// Overwrites the string value with `bytes`, of the same length, in place. Answers whether
    /// it could.
    unsafe fn overwrite(&self, bytes: &[u8]) -> bool {
        let mut len = 0usize;
        // WRITE mode unshares the value first if anything else holds it.
        let data = raw::RedisModule_StringDMA.expect("RedisModule_StringDMA")(
            self.handle,
            &mut len,
            raw::REDISMODULE_WRITE as c_int,
        );
        if data.is_null() || len != bytes.len() {
            return false;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), len);
        true
    }

    /// Deletes the key's value and expiry. Answers whether it could.
    unsafe fn delete(&self) -> bool {
        raw::RedisModule_DeleteKey.expect("RedisModule_DeleteKey")(self.handle)
            == raw::REDISMODULE_OK as c_int
    }

    /// Writes `bytes` to the key, which must be empty (absent or just deleted), as a new RAW
    /// string of exactly that length, without expiry. Answers whether it could.
    unsafe fn create(&self, bytes: &[u8]) -> bool {
        let created = raw::RedisModule_StringTruncate.expect("RedisModule_StringTruncate")(
            self.handle,
            bytes.len(),
        );
        created == raw::REDISMODULE_OK as c_int && self.overwrite(bytes)
    }

    /// Replicates `SET key value PXAT expire_at_ms` to the replicas and the AOF.
    fn replicate_set(&self, value: &[u8], expire_at_ms: c_longlong) {
        // Formatted here and passed as a buffer: the server makes one string object of a
        // buffer, and two allocations of a long long.
        let expiry = Encoded::decimal(expire_at_ms.max(0) as u64);
        let expiry = expiry.as_bytes();
        let pxat = PXAT.load(Relaxed);
        // SAFETY: each format matches its arguments: "s" a RedisModuleString, "b" a buffer and
        // its length, "c" a C string.
        unsafe {
            let replicate = raw::RedisModule_Replicate.expect("RedisModule_Replicate");
            if pxat.is_null() {
                replicate(
                    self.ctx.ctx,
                    c"SET".as_ptr(),
                    c"sbcb".as_ptr(),
                    self.name.inner,
                    value.as_ptr().cast::<c_char>(),
                    value.len(),
                    c"PXAT".as_ptr(),
                    expiry.as_ptr().cast::<c_char>(),
                    expiry.len(),
                );
            } else {
                replicate(
                    self.ctx.ctx,
                    c"SET".as_ptr(),
                    c"sbsb".as_ptr(),
                    self.name.inner,
                    value.as_ptr().cast::<c_char>(),
                    value.len(),
                    pxat,
                    expiry.as_ptr().cast::<c_char>(),
                    expiry.len(),
                );
            }
        }
    }

    /// Sets the key's absolute expiry; with only the relative API, as the time left from
    /// `now_ms`, at least 1 ms.
    unsafe fn set_expire_at(&self, expire_at_ms: c_longlong, now_ms: u64) -> bool {
        let status = match raw::RedisModule_SetAbsExpire {
            Some(set_abs_expire) => set_abs_expire(self.handle, expire_at_ms),
            None => {
                let now_ms = c_longlong::try_from(now_ms).unwrap_or(c_longlong::MAX);
                let ttl = expire_at_ms.saturating_sub(now_ms).max(1);
                raw::RedisModule_SetExpire.expect("RedisModule_SetExpire")(self.handle, ttl)
            }
        };
        status == raw::REDISMODULE_OK as c_int
    }

    /// Deletes the key if it holds a limiter state of any algorithm, replicating a `DEL`.
    /// Answers whether there was one. Fails, deleting nothing, when the key holds another type
    /// or a string that is no limiter state. The key must have been opened with
    /// [`Access::Write`].
    pub(crate) fn delete_state(&self) -> Result<bool, Error> {
        let Some(bytes) = self.value()? else {
            return Ok(false);
        };
        State::decode(bytes, None)?;
        self.delete_written()?;
        Ok(true)
    }
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        // SAFETY: RedisModule_CloseKey accepts a null key; the handle is closed only here.
        unsafe {
            if let Some(close_key) = raw::RedisModule_CloseKey {
                close_key(self.handle);
            }
        }
    }
}
