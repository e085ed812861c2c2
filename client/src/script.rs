//! The Lua fallback: `RATELIMIT.CHECK`, `QUOTA` and `RESET` as scripts, for servers without the
//! module.
//!
//! The scripts honour exactly the module's contract: the same decisions (bit-identical to
//! [`ratelimit_core::decide`], with exact bignum arithmetic where a double would round), the same
//! replies and error messages, and the same storage format and absolute expiries. A deployment
//! can therefore switch between the module and the scripts without resetting anyone's limits.
//! An admitted request writes `SET key value PXAT expire_at_ms`, which Redis replicates as an
//! effect, as the module does. They run on Redis 6.2, 7.x and Valkey 8.
//!
//! The commands are one script, `lua/ratelimit.lua`, whose `ARGV[1]` names the command and
//! whose header documents the arguments. It is sent with `EVALSHA`, and loaded again by
//! [`redis::Script`] when the server answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//!
//! The clock is the server's `TIME`, in whole milliseconds on servers older than Redis 7.2, as
//! the module reads it there, so that the module and the script see the same instants.

use ratelimit_core::{Algorithm, Decision, Limit, MAX_COUNT};
use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, Script};

use crate::module::decision_from_reply;

/// The script: the parts of `lua/bundle.txt`, concatenated by `make lua`. Public only for
/// tests, which run it with extra arguments.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("../lua/ratelimit.lua");

/// The latest clock the scripts accept, 2^53 - 1 microseconds (the year 2255): Lua numbers are
/// exact integers only below 2^53.
const MAX_NOW_US: u64 = (1 << 53) - 1;

/// Runs the rate limiter as Lua scripts inside Redis, with the module's exact contract.
///
/// It holds the script; it is cheap to clone and can be shared by every connection.
#[derive(Debug, Clone)]
pub struct ScriptBackend {
    script: Script,
}

impl Default for ScriptBackend {
    fn default() -> ScriptBackend {
        ScriptBackend::new()
    }
}

impl ScriptBackend {
    /// Prepares the script (computes its SHA1); nothing is sent to the server yet.
    pub fn new() -> ScriptBackend {
        ScriptBackend {
            script: Script::new(SOURCE),
        }
    }

    /// Decides one request of `cost` units on `key`, at the server's clock (`TIME`), as
    /// `RATELIMIT.CHECK` does; with `dry_run`, or when the request is denied or costs 0, nothing
    /// is written. `RATELIMIT.QUOTA` is this call with cost 1 and `dry_run`.
    ///
    /// Fails with the server's error when the key holds another type (`WRONGTYPE`), another
    /// algorithm's state or a value that is no limiter state (the module's `ERR` messages), when
    /// `cost` exceeds 10^15, and on any connection error.
    pub async fn check<C>(
        &self,
        conn: &mut C,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
    ) -> RedisResult<Decision>
    where
        C: ConnectionLike + Send,
    {
        self.run_check(conn, key, limit, cost, dry_run, None).await
    }

    /// For tests only: [`ScriptBackend::check`] at the clock `now_us` (microseconds since the
    /// epoch, at most 2^53 - 1) instead of the server's `TIME`. Redis still expires keys by its
    /// own clock.
    #[doc(hidden)]
    pub async fn check_at<C>(
        &self,
        conn: &mut C,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
        now_us: u64,
    ) -> RedisResult<Decision>
    where
        C: ConnectionLike + Send,
    {
        if now_us > MAX_NOW_US {
            return Err(RedisError::from((
                ErrorKind::Client,
                "the script's clock must be below 2^53 microseconds",
            )));
        }
        self.run_check(conn, key, limit, cost, dry_run, Some(now_us))
            .await
    }

    /// The standing now on `key`, as `RATELIMIT.QUOTA` answers it: what is left with nothing
    /// spent, and whether a request of `cost` would be admitted. Writes nothing. Fails as
    /// [`ScriptBackend::check`] does.
    pub async fn quota<C>(
        &self,
        conn: &mut C,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> RedisResult<Decision>
    where
        C: ConnectionLike + Send,
    {
        let burst = match limit.algorithm() {
            Algorithm::Gcra => limit.burst(),
            _ => 0,
        };
        let reply: Vec<i64> = self
            .script
            .key(key)
            .arg("quota")
            .arg(limit.algorithm().name())
            .arg(limit.limit())
            .arg(limit.period_ms())
            .arg(burst)
            .arg(cost.min(MAX_COUNT))
            .arg(0)
            .invoke_async(conn)
            .await?;
        decision_from_reply(&reply)
    }

    /// Deletes the limiter's state on `key`, of any algorithm, as `RATELIMIT.RESET` does.
    /// Answers whether there was one.
    ///
    /// Fails, deleting nothing, when the key holds another type (`WRONGTYPE`) or a string that is
    /// no limiter state, and on any connection error.
    pub async fn reset<C>(&self, conn: &mut C, key: &str) -> RedisResult<bool>
    where
        C: ConnectionLike + Send,
    {
        let deleted: i64 = self.script.key(key).arg("reset").invoke_async(conn).await?;
        Ok(deleted == 1)
    }

    async fn run_check<C>(
        &self,
        conn: &mut C,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
        now_us: Option<u64>,
    ) -> RedisResult<Decision>
    where
        C: ConnectionLike + Send,
    {
        if cost > MAX_COUNT {
            return Err(RedisError::from((
                ErrorKind::Client,
                "invalid cost: expected an integer from 0 to 1000000000000000",
            )));
        }
        let burst = match limit.algorithm() {
            Algorithm::Gcra => limit.burst(),
            _ => 0,
        };
        let mut invocation = self.script.key(key);
        invocation
            .arg("check")
            .arg(limit.algorithm().name())
            .arg(limit.limit())
            .arg(limit.period_ms())
            .arg(burst)
            .arg(cost)
            .arg(u8::from(dry_run));
        if let Some(now_us) = now_us {
            invocation.arg(now_us);
        }
        let reply: Vec<i64> = invocation.invoke_async(conn).await?;
        decision_from_reply(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    /// `lua/ratelimit.lua` is exactly the parts of `lua/bundle.txt`, in order: edit the parts and
    /// run `make lua`.
    #[test]
    fn the_script_is_its_parts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let list = std::fs::read_to_string(dir.join("bundle.txt")).unwrap();
        let parts: String = list
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|name| {
                std::fs::read_to_string(dir.join(name.trim()))
                    .unwrap_or_else(|e| panic!("lua/{name}: {e}"))
            })
            .collect();
        assert!(
            parts == SOURCE,
            "lua/ratelimit.lua is not the concatenation of the parts in lua/bundle.txt: run `make lua`"
        );
        assert!(SOURCE.contains("local function bn_divmod"));
        assert!(SOURCE.contains("redis.call('SET', key, change[2], 'PXAT'"));
    }
}
