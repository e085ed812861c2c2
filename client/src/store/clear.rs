//! `clear_all`: every key under the prefix, deleted in batches, on every master of a cluster.

use super::RedisStore;
use crate::error::Error;
use crate::local::LocalLimiter;
use redis::aio::ConnectionLike;
use std::sync::{Arc, PoisonError};
use tracing::{info, warn};

/// Keys asked for per `SCAN` step, and so deleted per `UNLINK`.
const SCAN_COUNT: usize = 500;

impl RedisStore {
    /// Deletes every key under the prefix, and empties the local limiter. Answers `true` when
    /// it went through; `false`, with a log line, when Redis failed (some keys may be left) or
    /// the prefix is empty (it refuses to empty the whole database).
    ///
    /// Keys outside the prefix are never touched: glob characters in the prefix are escaped.
    /// It runs `SCAN MATCH prefix*` and `UNLINK`s each batch, so it does not block the server,
    /// and keys written meanwhile may survive. In a Redis Cluster it scans every master, and
    /// each batch's `UNLINK` is split by hash slot, as a multi-key command must be there.
    pub async fn clear_all(&self) -> bool {
        match self.try_clear_all().await {
            Ok(deleted) => {
                info!(prefix = %self.prefix(), deleted, "cleared every rate limit");
                true
            }
            Err(error) => {
                warn!(prefix = %self.prefix(), error = %error, "cannot clear the rate limits");
                false
            }
        }
    }

    /// [`RedisStore::clear_all`], answering the number of keys deleted, or the error.
    pub async fn try_clear_all(&self) -> Result<u64, Error> {
        let prefix = self.prefix();
        if prefix.is_empty() {
            return Err(Error::InvalidConfig(
                "clear_all refuses to run with an empty prefix".into(),
            ));
        }
        *self
            .inner
            .local
            .write()
            .unwrap_or_else(PoisonError::into_inner) =
            Arc::new(LocalLimiter::new(self.inner.config.local_max_entries));
        let pattern = format!("{}*", escape_glob(prefix));
        let mut conn = self.inner.conn.clone();
        let deadline = Some(self.inner.config.call_deadline());
        let masters = self.guarded(deadline, conn.masters()).await?;
        let mut deleted = 0;
        for mut node in masters {
            // No overall deadline: each command has the response timeout, and a large
            // keyspace takes many of them.
            deleted += self
                .guarded(None, clear_node(&mut node, &mut conn, &pattern))
                .await?;
        }
        Ok(deleted)
    }
}

/// Deletes the keys of one node that match `pattern`, one `SCAN` batch at a time: `SCAN` goes
/// to `node`, and `UNLINK` through `conn`, which splits it by slot in a cluster.
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
pub(crate) fn escape_glob(text: &str) -> String {
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

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(escape_glob("ratelimit:"), "ratelimit:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
