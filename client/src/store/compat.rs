//! The seed's operations: the API of the application this client was written for, kept with
//! its names so that it could switch to the client without rewriting its calls.
//!
//! - **Per user and endpoint**: [`crate::RedisStore::check_rate_limit`], `get_quota` and
//!   `reset_rate_limit` limit `user_id` on `endpoint` with a FIXED window, under the Redis key
//!   `prefix + user_id + ":" + endpoint`. They are the general operations (`check`,
//!   `check_dry_run`, `reset`) on that key, and take the failure policy as those do.
//! - **Counters**: `increment`, `get` and `get_with_expiry` count under `prefix + key`, with an
//!   expiry set once, at the counter's creation. They have no failure policy: while Redis is
//!   out they fail with an error whose [`Error::is_outage`] holds.
//! - **Housekeeping**: `clear_all` deletes every key under the prefix.
//!
//! New code should prefer the general operations, which take any [`crate::Limit`].
//!
//! The facade's methods hand their work to the functions here.

use super::connection::Connection;
use crate::decision::{Decision, Outcome, Quota};
use crate::error::Error;
use crate::script::Lua;
use redis::aio::ConnectionLike;
use std::sync::OnceLock;
use std::time::Duration;

/// Keys asked for per `SCAN` step, and so deleted per `UNLINK`.
const SCAN_COUNT: usize = 500;

/// The answer of `check_rate_limit`: whether the request may go ahead, and the standing after
/// it. A check-only call was a dry run of cost 1, which shows the unit it would spend as
/// spent: the standing has it back.
pub(crate) fn seed_answer(decision: &Decision, check_only: bool) -> (bool, Quota) {
    let spent_in_answer = u64::from(check_only && decision.is_admitted());
    let remaining = (decision.remaining + spent_in_answer).min(decision.limit);
    // A FIXED window: one more unit fits while one is left, else at the window's end.
    let next = if check_only {
        decision.outcome
    } else if remaining > 0 {
        Outcome::Admitted
    } else {
        Outcome::RetryAfter(decision.reset_after)
    };
    let quota = Quota {
        next,
        limit: decision.limit,
        remaining,
        reset_after: decision.reset_after,
        backend: decision.backend,
    };
    (decision.allowed(), quota)
}

/// The increment script, loaded once per process.
fn increment_script() -> &'static Lua {
    static SCRIPT: OnceLock<Lua> = OnceLock::new();
    SCRIPT.get_or_init(|| Lua::new(include_str!("increment.lua")))
}

/// Adds `amount` to the counter `key` and answers its new value; a new counter expires after
/// `expiry` (at least 1 ms), an existing one keeps its expiry. One script runs `INCRBY` and
/// `PEXPIRE`, so it is atomic, and it runs on Redis 6.2 (no `PEXPIRE NX` there).
///
/// Fails when `amount` exceeds 2^63 - 1, or the key holds something else than an integer.
pub(crate) async fn increment(
    conn: &mut Connection,
    key: &str,
    expiry: Duration,
    amount: u64,
) -> Result<u64, Error> {
    let amount = i64::try_from(amount).map_err(|_| {
        Error::InvalidArgument(format!("increment amount {amount} is above 2^63 - 1"))
    })?;
    let expiry_ms = u64::try_from(expiry.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64);
    let args = [amount.to_string(), expiry_ms.to_string()];
    let value: i64 = increment_script().run(conn, &[key], &args).await?;
    counter_value(value)
}

/// The counter `key` and the time until it expires: `(0, None)` when it does not exist,
/// `(value, None)` when it has no expiry. Read atomically (`MULTI`). Fails when the key holds
/// something else than a non-negative integer.
pub(crate) async fn get_with_expiry(
    conn: &mut Connection,
    key: &str,
) -> Result<(u64, Option<Duration>), Error> {
    let (value, ttl_ms): (Option<String>, i64) = redis::pipe()
        .atomic()
        .get(key)
        .pttl(key)
        .query_async(conn)
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

fn counter_value(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::UnexpectedReply(format!("negative counter {value}")))
}

/// Deletes every key that starts with `prefix` and answers how many: `SCAN MATCH prefix*` on
/// each master (one server, or every master of a cluster), and `UNLINK` of each batch, which
/// the cluster connection splits by slot. Keys written meanwhile may survive.
///
/// Refuses an empty prefix, which would mean the whole database.
pub(crate) async fn clear_all(conn: &mut Connection, prefix: &str) -> Result<u64, Error> {
    if prefix.is_empty() {
        return Err(Error::InvalidConfig(
            "clear_all refuses to run with an empty prefix".into(),
        ));
    }
    let pattern = format!("{}*", escape_glob(prefix));
    let mut deleted = 0;
    for mut node in conn.masters().await? {
        deleted += clear_node(&mut node, conn, &pattern).await?;
    }
    Ok(deleted)
}

/// Deletes the keys of one node that match `pattern`, one `SCAN` batch at a time: `SCAN` goes
/// to `node`, and `UNLINK` through `conn`.
async fn clear_node<N, C>(node: &mut N, conn: &mut C, pattern: &str) -> Result<u64, Error>
where
    N: ConnectionLike + Send,
    C: ConnectionLike + Send,
{
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(node)
            .await?;
        if !keys.is_empty() {
            let count: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += count;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `text` with the glob characters of `MATCH` (`*`, `?`, `[`, `]`, `\`) escaped, so that it
/// matches itself only.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Backend;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(escape_glob("ratelimit:"), "ratelimit:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn the_standing_after_a_check() {
        let decision = |outcome, remaining| Decision {
            outcome,
            limit: 3,
            remaining,
            reset_after: Duration::from_secs(7),
            backend: Backend::Module,
            enforced: true,
        };
        // A dry run that would spend the last unit: it is still there.
        let (allowed, quota) = seed_answer(&decision(Outcome::Admitted, 0), true);
        assert!(allowed);
        assert_eq!(
            (quota.remaining, quota.used(), quota.next),
            (1, 2, Outcome::Admitted)
        );
        // The check spent the last unit: the next request waits for the window's end.
        let (allowed, quota) = seed_answer(&decision(Outcome::Admitted, 0), false);
        assert!(allowed);
        assert_eq!(quota.next, Outcome::RetryAfter(Duration::from_secs(7)));
        let denied = decision(Outcome::RetryAfter(Duration::from_secs(7)), 0);
        let (allowed, quota) = seed_answer(&denied, true);
        assert!(!allowed);
        assert_eq!((quota.remaining, quota.used()), (0, 3));
    }
}
