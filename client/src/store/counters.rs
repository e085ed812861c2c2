//! The seed's counters: `increment`, `get` and `get_with_expiry`.
//!
//! They have no failure policy: while Redis is unreachable (or the breaker is open) they fail
//! with an error for which [`Error::is_unreachable`] holds.

use super::RedisStore;
use crate::error::Error;
use redis::Script;
use std::sync::OnceLock;
use std::time::Duration;

/// The increment script, loaded once per process.
fn increment_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("increment.lua")))
}

impl RedisStore {
    /// Adds `amount` to the counter `key` (under the prefix) and answers its new value. A new
    /// counter expires after `expiry` (at least 1 ms); an existing counter keeps its expiry,
    /// which is never extended. Atomic: one script runs `INCRBY` and `PEXPIRE`.
    ///
    /// The counter is stored as a decimal integer, the FIXED format, so [`RedisStore::reset`]
    /// deletes it. Fails when `amount` exceeds 2^63 - 1, the key holds something else than an
    /// integer (a server error), or Redis is unreachable.
    pub async fn increment(&self, key: &str, expiry: Duration, amount: u64) -> Result<u64, Error> {
        let amount = i64::try_from(amount).map_err(|_| {
            Error::InvalidArgument(format!("increment amount {amount} is above 2^63 - 1"))
        })?;
        let expiry_ms = u64::try_from(expiry.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, i64::MAX as u64);
        let full_key = self.redis_key(key);
        let mut conn = self.inner.conn.clone();
        let deadline = Some(self.inner.config.call_deadline());
        let value: i64 = self
            .guarded(deadline, async {
                let mut invocation = increment_script().key(&full_key);
                invocation.arg(amount).arg(expiry_ms);
                Ok(invocation.invoke_async(&mut conn).await?)
            })
            .await?;
        counter_value(value)
    }

    /// The counter `key` (under the prefix): its value, or 0 when it does not exist. Fails when
    /// the key holds something else than a non-negative integer, or Redis is unreachable.
    pub async fn get(&self, key: &str) -> Result<u64, Error> {
        Ok(self.get_with_expiry(key).await?.0)
    }

    /// The counter `key` (under the prefix) and the time until it expires: `(0, None)` when it
    /// does not exist, `(value, None)` when it has no expiry. Read atomically (`MULTI`). Fails
    /// as [`RedisStore::get`] does.
    pub async fn get_with_expiry(&self, key: &str) -> Result<(u64, Option<Duration>), Error> {
        let full_key = self.redis_key(key);
        let mut conn = self.inner.conn.clone();
        let deadline = Some(self.inner.config.call_deadline());
        let (value, ttl_ms): (Option<String>, i64) = self
            .guarded(deadline, async {
                Ok(redis::pipe()
                    .atomic()
                    .get(&full_key)
                    .pttl(&full_key)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let Some(value) = value else {
            return Ok((0, None));
        };
        let value = value
            .parse::<i64>()
            .map_err(|_| Error::UnexpectedReply("the key holds no counter".into()))?;
        let ttl = u64::try_from(ttl_ms).ok().map(Duration::from_millis);
        Ok((counter_value(value)?, ttl))
    }
}

fn counter_value(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::UnexpectedReply(format!("negative counter {value}")))
}
