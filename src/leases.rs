//! The keyspace side of concurrency leases: one sorted set per key, member = lease ID, score =
//! its absolute expiry in Unix ms (`ratelimit_core::lease`).
//!
//! Every change is replicated as its effect, with absolute scores and expiry (`ZREM key id ...`,
//! `ZADD key expiry id`, `PEXPIREAT key latest`), signalled as a change of the key, and announced
//! with the keyspace events of those core commands (`zrem`, `zadd`, `expire`, and `del` when the
//! last member goes). Opening and reading a set signals nothing (see `store`).

use crate::args::Command;
use crate::error::Error;
use ratelimit_core::lease::{Holder, Live};
use ratelimit_core::{Encoded, MAX_TIME_MS};
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_longlong};
use std::ptr;

/// A lease set's key, open for writing, closed on drop.
pub(crate) struct LeaseKey<'a> {
    ctx: &'a Context,
    command: Command,
    name: &'a RedisString,
    handle: *mut raw::RedisModuleKey,
    /// Whether the key held a set when opened (absent otherwise).
    exists: bool,
}

/// A string made by the module for one command, freed on drop.
struct Owned(*mut raw::RedisModuleString);

impl Owned {
    fn new(bytes: &[u8]) -> Owned {
        // SAFETY: a string made without a context, owned until dropped.
        Owned(unsafe {
            raw::RedisModule_CreateString.expect("RedisModule_CreateString")(
                ptr::null_mut(),
                bytes.as_ptr().cast::<c_char>(),
                bytes.len(),
            )
        })
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: made without a context by this module, freed once.
            unsafe {
                raw::RedisModule_FreeString.expect("RedisModule_FreeString")(
                    ptr::null_mut(),
                    self.0,
                )
            };
        }
    }
}

const ZSET: c_int = raw::REDISMODULE_NOTIFY_ZSET;
const GENERIC: c_int = raw::REDISMODULE_NOTIFY_GENERIC;

impl<'a> LeaseKey<'a> {
    /// Opens `name` for `command`. Fails with `WRONGTYPE` unless it is absent or a sorted set.
    pub(crate) fn open(
        ctx: &'a Context,
        command: Command,
        name: &'a RedisString,
    ) -> Result<LeaseKey<'a>, Error> {
        let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
        // SAFETY: ctx and name are valid for the duration of the command.
        let handle = unsafe {
            raw::RedisModule_OpenKey.expect("RedisModule_OpenKey")(ctx.ctx, name.inner, mode)
        };
        // Built once and mutated, never rebuilt with `..key`: the old value's drop would close
        // the handle the new one holds.
        let mut key = LeaseKey {
            ctx,
            command,
            name,
            handle,
            exists: false,
        };
        // SAFETY: the key is open (KeyType accepts any handle).
        let key_type =
            unsafe { raw::RedisModule_KeyType.expect("RedisModule_KeyType")(key.handle) } as isize;
        match key_type {
            raw::REDISMODULE_KEYTYPE_EMPTY => Ok(key),
            raw::REDISMODULE_KEYTYPE_ZSET => {
                key.exists = true;
                Ok(key)
            }
            _ => Err(Error::WrongType),
        }
    }

    /// Removes the leases that expired at `now_ms` (score `<= now_ms`), replicated as one
    /// `ZREM`. Answers how many there were.
    pub(crate) fn remove_expired(&self, now_ms: u64) -> Result<usize, Error> {
        if !self.exists {
            return Ok(0);
        }
        let expired = self.members_up_to(now_ms as f64);
        if expired.is_empty() {
            return Ok(0);
        }
        for member in &expired {
            // SAFETY: the key is an open sorted set; the member is a valid string.
            let removed = unsafe {
                let mut deleted: c_int = 0;
                raw::RedisModule_ZsetRem.expect("RedisModule_ZsetRem")(
                    self.handle,
                    member.0,
                    &mut deleted,
                )
            };
            if removed != raw::REDISMODULE_OK as c_int {
                return Err(Error::Internal(self.command));
            }
        }
        let pointers: Vec<*mut raw::RedisModuleString> = expired.iter().map(|m| m.0).collect();
        self.replicate_members(c"ZREM", &pointers);
        self.signal(&[(ZSET, c"zrem")]);
        if self.len() == 0 {
            self.signal(&[(GENERIC, c"del")]);
        }
        Ok(expired.len())
    }

    /// The live leases, after [`LeaseKey::remove_expired`]; `holder` is the lease ID the request
    /// names, if any.
    pub(crate) fn live(&self, holder: Option<&[u8]>) -> Live {
        let count = self.len();
        if count == 0 {
            return Live::default();
        }
        let (earliest, latest, second) = self.ends();
        let holder = holder.and_then(|id| {
            let expire_at_ms = self.score(id)?;
            let others_latest_ms = if Some(expire_at_ms) == latest {
                second
            } else {
                latest
            };
            Some(Holder {
                expire_at_ms,
                others_latest_ms,
            })
        });
        Live {
            count,
            earliest_ms: earliest,
            latest_ms: latest,
            holder,
        }
    }

    /// Whether `id` is a member (after the expired ones were removed: a live lease).
    pub(crate) fn holds(&self, id: &[u8]) -> bool {
        self.score(id).is_some()
    }

    /// Adds or renews the lease `id`, expiring at `expire_at_ms`; replicated as `ZADD`.
    pub(crate) fn put(&mut self, id: &[u8], expire_at_ms: u64) -> Result<(), Error> {
        let member = Owned::new(id);
        // SAFETY: the key is open for writing; the member is a valid string.
        let added = unsafe {
            let mut flags: c_int = 0;
            raw::RedisModule_ZsetAdd.expect("RedisModule_ZsetAdd")(
                self.handle,
                expire_at_ms as f64,
                member.0,
                &mut flags,
            )
        };
        if added != raw::REDISMODULE_OK as c_int {
            return Err(Error::Internal(self.command));
        }
        self.exists = true;
        let score = Encoded::decimal(expire_at_ms);
        let score = score.as_bytes();
        // SAFETY: "sbs" matches a RedisModuleString, a buffer and its length, a string.
        unsafe {
            raw::RedisModule_Replicate.expect("RedisModule_Replicate")(
                self.ctx.ctx,
                c"ZADD".as_ptr(),
                c"sbs".as_ptr(),
                self.name.inner,
                score.as_ptr().cast::<c_char>(),
                score.len(),
                member.0,
            );
        }
        self.signal(&[(ZSET, c"zadd")]);
        Ok(())
    }

    /// Removes the lease `id`; replicated as `ZREM`. Answers whether it was there.
    pub(crate) fn remove(&self, id: &[u8]) -> Result<bool, Error> {
        if !self.exists {
            return Ok(false);
        }
        let member = Owned::new(id);
        let mut deleted: c_int = 0;
        // SAFETY: the key is an open sorted set; the member is a valid string.
        let status = unsafe {
            raw::RedisModule_ZsetRem.expect("RedisModule_ZsetRem")(
                self.handle,
                member.0,
                &mut deleted,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(Error::Internal(self.command));
        }
        if deleted == 0 {
            return Ok(false);
        }
        self.replicate_members(c"ZREM", &[member.0]);
        self.signal(&[(ZSET, c"zrem")]);
        if self.len() == 0 {
            self.signal(&[(GENERIC, c"del")]);
        }
        Ok(true)
    }

    /// Gives the key the expiry of its latest lease, when it has another (or none), replicated
    /// as `PEXPIREAT`. Does nothing once the last lease is gone (the key is then deleted).
    pub(crate) fn expire_with_latest(&self, now_ms: u64) -> Result<(), Error> {
        if self.len() == 0 {
            return Ok(());
        }
        let Some(latest) = self.ends().1 else {
            return Ok(());
        };
        // SAFETY: the key is open; GetAbsExpire exists on every server this module supports
        // (6.2+), with GetExpire as the fallback.
        let current = unsafe {
            match raw::RedisModule_GetAbsExpire {
                Some(get) => get(self.handle),
                None => {
                    let ttl =
                        raw::RedisModule_GetExpire.expect("RedisModule_GetExpire")(self.handle);
                    if ttl < 0 {
                        ttl
                    } else {
                        ttl + now_ms as c_longlong
                    }
                }
            }
        };
        if current == latest as c_longlong {
            return Ok(());
        }
        let at = c_longlong::try_from(latest).unwrap_or(c_longlong::MAX);
        // SAFETY: the key is open for writing and holds a set.
        let set = unsafe {
            match raw::RedisModule_SetAbsExpire {
                Some(set) => set(self.handle, at),
                None => raw::RedisModule_SetExpire.expect("RedisModule_SetExpire")(
                    self.handle,
                    (at - now_ms as c_longlong).max(1),
                ),
            }
        };
        if set != raw::REDISMODULE_OK as c_int {
            return Err(Error::Internal(self.command));
        }
        let at = Encoded::decimal(latest);
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

    /// The number of members.
    fn len(&self) -> u64 {
        // SAFETY: ValueLength accepts any open key; 0 for an empty one.
        unsafe {
            raw::RedisModule_ValueLength.expect("RedisModule_ValueLength")(self.handle) as u64
        }
    }

    /// The score of `id`, `None` when it is no member.
    fn score(&self, id: &[u8]) -> Option<u64> {
        if !self.exists {
            return None;
        }
        let member = Owned::new(id);
        let mut score = 0f64;
        // SAFETY: the key is an open sorted set; the member is a valid string.
        let found = unsafe {
            raw::RedisModule_ZsetScore.expect("RedisModule_ZsetScore")(
                self.handle,
                member.0,
                &mut score,
            )
        };
        (found == raw::REDISMODULE_OK as c_int).then_some(score_ms(score))
    }

    /// The members with a score up to `max`.
    fn members_up_to(&self, max: f64) -> Vec<Owned> {
        let mut members = Vec::new();
        // SAFETY: the key is an open sorted set; the range is stopped before returning, and
        // each element returned is a new string owned by `members`.
        unsafe {
            let first =
                raw::RedisModule_ZsetFirstInScoreRange.expect("RedisModule_ZsetFirstInScoreRange");
            if first(self.handle, f64::NEG_INFINITY, max, 0, 0) != raw::REDISMODULE_OK as c_int {
                return members;
            }
            let ended = raw::RedisModule_ZsetRangeEndReached.expect("ZsetRangeEndReached");
            let current = raw::RedisModule_ZsetRangeCurrentElement.expect("ZsetRangeCurrent");
            let next = raw::RedisModule_ZsetRangeNext.expect("RedisModule_ZsetRangeNext");
            while ended(self.handle) == 0 {
                let element = current(self.handle, ptr::null_mut());
                if element.is_null() {
                    break;
                }
                members.push(Owned(element));
                if next(self.handle) == 0 {
                    break;
                }
            }
            raw::RedisModule_ZsetRangeStop.expect("RedisModule_ZsetRangeStop")(self.handle);
        }
        members
    }

    /// The earliest score, the latest, and the one before the latest (for a holder whose lease
    /// is the latest).
    fn ends(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        // SAFETY: the key is an open sorted set; each range is stopped before the next, and each
        // element returned is freed.
        unsafe {
            let stop = raw::RedisModule_ZsetRangeStop.expect("RedisModule_ZsetRangeStop");
            let current = raw::RedisModule_ZsetRangeCurrentElement.expect("ZsetRangeCurrent");
            let ended = raw::RedisModule_ZsetRangeEndReached.expect("ZsetRangeEndReached");
            let score_at = |handle| {
                if ended(handle) != 0 {
                    return None;
                }
                let mut score = 0f64;
                let element = current(handle, &mut score);
                if element.is_null() {
                    return None;
                }
                drop(Owned(element));
                Some(score_ms(score))
            };
            let (inf, ninf) = (f64::INFINITY, f64::NEG_INFINITY);
            let first = raw::RedisModule_ZsetFirstInScoreRange.expect("ZsetFirstInScoreRange");
            let earliest = if first(self.handle, ninf, inf, 0, 0) == raw::REDISMODULE_OK as c_int {
                score_at(self.handle)
            } else {
                None
            };
            stop(self.handle);
            let last = raw::RedisModule_ZsetLastInScoreRange.expect("ZsetLastInScoreRange");
            let (mut latest, mut second) = (None, None);
            if last(self.handle, ninf, inf, 0, 0) == raw::REDISMODULE_OK as c_int {
                latest = score_at(self.handle);
                let prev = raw::RedisModule_ZsetRangePrev.expect("RedisModule_ZsetRangePrev");
                if prev(self.handle) != 0 {
                    second = score_at(self.handle);
                }
            }
            stop(self.handle);
            (earliest, latest, second)
        }
    }

    /// Replicates `command key member ...`.
    fn replicate_members(&self, command: &CStr, members: &[*mut raw::RedisModuleString]) {
        // SAFETY: "sv" matches a RedisModuleString and an array of them with its length; the
        // members are valid strings for the duration of the call.
        unsafe {
            raw::RedisModule_Replicate.expect("RedisModule_Replicate")(
                self.ctx.ctx,
                command.as_ptr(),
                c"sv".as_ptr(),
                self.name.inner,
                members.as_ptr(),
                members.len(),
            );
        }
    }

    /// Tells the server the key changed (`WATCH`, client-side caching), with `events`.
    fn signal(&self, events: &[(c_int, &CStr)]) {
        // SAFETY: the context and the key name are valid for the whole command.
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
}

/// A score as whole milliseconds: scores the module writes are whole; another sorted set's are
/// rounded up (toward a later expiry), negative or non-numbers read as 0, and scores past
/// [`MAX_TIME_MS`] (2^53 - 1, about 285,000 years; `+inf` among them) as that: so the key's
/// expiry, set to its latest lease's, is one every server accepts in a replicated `PEXPIREAT`,
/// and reads back as set.
fn score_ms(score: f64) -> u64 {
    if score.is_nan() || score <= 0.0 {
        0
    } else if score >= MAX_TIME_MS as f64 {
        MAX_TIME_MS
    } else {
        score.ceil() as u64
    }
}

impl Drop for LeaseKey<'_> {
    fn drop(&mut self) {
        // SAFETY: RedisModule_CloseKey accepts a null key; the handle is closed only here. It
        // deletes the key when its set became empty.
        unsafe {
            if let Some(close_key) = raw::RedisModule_CloseKey {
                close_key(self.handle);
            }
        }
    }
}
