//! The seed's operations against real servers, with and without the module: `increment`, `get`,
//! `get_with_expiry`, `check_rate_limit`, `get_quota`, `reset` and `clear_all`.

mod common;

use common::Server;
use ratelimit_client::{Backend, Config, Outcome, RedisStore};
use redis::aio::MultiplexedConnection;
use std::time::Duration;

async fn store(server: &Server, prefix: &str) -> RedisStore {
    common::connected(Config::new(server.url()).prefix(prefix)).await
}

async fn pttl(con: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(con).await.unwrap()
}

async fn raw_get(con: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(con).await.unwrap()
}

#[tokio::test]
async fn increment_sets_the_expiry_once_and_never_extends_it() {
    let server = Server::start(false);
    let store = store(&server, "ratelimit:").await;
    let mut con = server.con().await;

    assert_eq!(
        store
            .increment("hits", Duration::from_secs(10), 1)
            .await
            .unwrap(),
        1
    );
    let first = pttl(&mut con, "ratelimit:hits").await;
    assert!((1..=10_000).contains(&first), "{first}");
    // A later increment with a longer expiry keeps the first one.
    assert_eq!(
        store
            .increment("hits", Duration::from_secs(1000), 5)
            .await
            .unwrap(),
        6
    );
    let second = pttl(&mut con, "ratelimit:hits").await;
    assert!((1..=first).contains(&second), "{second} > {first}");
    assert_eq!(store.get("hits").await.unwrap(), 6);
    let (value, ttl) = store.get_with_expiry("hits").await.unwrap();
    assert_eq!(value, 6);
    assert!(ttl.is_some_and(|ttl| ttl <= Duration::from_millis(first as u64)));

    assert_eq!(store.get("absent").await.unwrap(), 0);
    assert_eq!(store.get_with_expiry("absent").await.unwrap(), (0, None));

    // A counter written by hand without an expiry gets one at its next increment.
    let () = redis::cmd("SET")
        .arg("ratelimit:manual")
        .arg(41)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(store.get_with_expiry("manual").await.unwrap(), (41, None));
    assert_eq!(
        store
            .increment("manual", Duration::from_secs(5), 1)
            .await
            .unwrap(),
        42
    );
    assert!((1..=5_000).contains(&pttl(&mut con, "ratelimit:manual").await));

    // Not a counter: an error, not a panic nor a zero.
    let () = redis::cmd("SET")
        .arg("ratelimit:text")
        .arg("hello")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(store.get("text").await.is_err());
    let error = store
        .increment("text", Duration::from_secs(5), 1)
        .await
        .unwrap_err();
    assert!(error.is_server_error() && !error.is_outage(), "{error}");
    assert!(store
        .increment("hits", Duration::from_secs(5), u64::MAX)
        .await
        .unwrap_err()
        .is_invalid_argument());
    // An increment counter is a FIXED state, so `reset` deletes it.
    assert!(store.reset("hits").await.unwrap());
    assert_eq!(store.get("hits").await.unwrap(), 0);
}

#[tokio::test]
async fn check_rate_limit_counts_per_user_and_endpoint() {
    for module in [true, false] {
        let server = Server::start(module);
        let store = store(&server, "ratelimit:").await;
        let expected = if module {
            Backend::Module
        } else {
            Backend::Script
        };
        let mut con = server.con().await;
        let period = Duration::from_secs(10);

        let quota = store.get_quota("u1", "/search", 3, period).await.unwrap();
        assert_eq!((quota.limit, quota.remaining, quota.used()), (3, 3, 0));
        assert_eq!((quota.backend, quota.next), (expected, Outcome::Admitted));
        let (allowed, quota) = store
            .check_rate_limit("u1", "/search", 3, period, true)
            .await
            .unwrap();
        assert!(allowed);
        assert_eq!(quota.remaining, 3, "check_only spends nothing");

        for remaining in [2, 1, 0] {
            let (allowed, quota) = store
                .check_rate_limit("u1", "/search", 3, period, false)
                .await
                .unwrap();
            assert!(allowed);
            assert_eq!((quota.remaining, quota.used()), (remaining, 3 - remaining));
            assert!(quota.reset_after <= period, "{quota:?}");
            let next_fits = quota.next == Outcome::Admitted;
            assert_eq!(next_fits, remaining > 0, "{quota:?}");
        }
        let (allowed, quota) = store
            .check_rate_limit("u1", "/search", 3, period, false)
            .await
            .unwrap();
        assert!(!allowed);
        assert_eq!((quota.remaining, quota.used()), (0, 3));
        assert!(quota
            .next
            .retry_after()
            .is_some_and(|wait| wait > Duration::ZERO && wait <= period));
        let (allowed, _) = store
            .check_rate_limit("u1", "/search", 3, period, true)
            .await
            .unwrap();
        assert!(!allowed);
        let quota = store.get_quota("u1", "/search", 3, period).await.unwrap();
        assert_eq!((quota.remaining, quota.used()), (0, 3));

        // The key is prefix + user + ":" + endpoint, a FIXED count that expires with the window.
        assert_eq!(store.key_for("u1", "/search"), "ratelimit:u1:/search");
        assert_eq!(
            raw_get(&mut con, "ratelimit:u1:/search").await.as_deref(),
            Some("3")
        );
        assert!((1..=10_000).contains(&pttl(&mut con, "ratelimit:u1:/search").await));
        // Other users and endpoints have their own counts.
        for (user, endpoint) in [("u2", "/search"), ("u1", "/other")] {
            let (allowed, _) = store
                .check_rate_limit(user, endpoint, 3, period, false)
                .await
                .unwrap();
            assert!(allowed);
        }

        assert!(store.reset_rate_limit("u1", "/search").await.unwrap());
        let (allowed, _) = store
            .check_rate_limit("u1", "/search", 3, period, false)
            .await
            .unwrap();
        assert!(allowed);

        // A limit of zero is a configuration that cannot be built.
        let error = store
            .check_rate_limit("u1", "/x", 0, period, false)
            .await
            .unwrap_err();
        assert!(error.is_invalid_limit(), "{error}");
    }
}

#[tokio::test]
async fn clear_all_deletes_the_prefix_and_nothing_else() {
    let server = Server::start(true);
    // Glob characters in the prefix match only themselves.
    let prefix = "t*[x]?:";
    let store = store(&server, prefix).await;
    let mut con = server.con().await;
    let mut pipe = redis::pipe();
    for i in 0..1200 {
        pipe.cmd("SET")
            .arg(format!("{prefix}bulk:{i}"))
            .arg(i)
            .ignore();
    }
    // Keys that the unescaped pattern `t*[x]?:*` would match, and others.
    let outside = ["tABxy:k", "t*[x]:k", "other", "ratelimit:k"];
    for key in outside {
        pipe.cmd("SET").arg(key).arg(1).ignore();
    }
    let () = pipe.query_async(&mut con).await.unwrap();
    store
        .check_rate_limit("u1", "/a", 5, Duration::from_secs(60), false)
        .await
        .unwrap();
    store
        .increment("counter", Duration::from_secs(60), 1)
        .await
        .unwrap();

    assert_eq!(store.clear_all().await.unwrap(), 1202);
    for key in outside {
        assert_eq!(raw_get(&mut con, key).await.as_deref(), Some("1"), "{key}");
    }
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, outside.len() as u64);
    assert_eq!(store.clear_all().await.unwrap(), 0);

    // An empty prefix would mean the whole database: refused.
    let unprefixed = self::store(&server, "").await;
    assert!(unprefixed
        .clear_all()
        .await
        .unwrap_err()
        .is_invalid_config());
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, outside.len() as u64);
}

/// The increment script returns the count as `INCRBY` stored it: a Lua number would round it
/// past 2^53, and turn 2^63 - 1 into a negative count.
#[tokio::test]
async fn counters_are_exact_past_2_to_the_53() {
    let server = Server::start(false);
    let store = store(&server, "ratelimit:").await;
    let minute = Duration::from_secs(60);
    let big = (1u64 << 53) + 1;
    assert_eq!(store.increment("big", minute, big).await.unwrap(), big);
    assert_eq!(store.increment("big", minute, 2).await.unwrap(), big + 2);
    assert_eq!(store.get("big").await.unwrap(), big + 2);
    let max = i64::MAX as u64;
    assert_eq!(store.increment("max", minute, max).await.unwrap(), max);
}
