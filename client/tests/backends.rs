//! Backend selection against real servers: the module when it is loaded, the script when it is
//! not, the switch when the server restarts without the module and back with it; and
//! the classification of the errors that are not outages.

mod common;

use common::{command_calls, Options, Server};
use ratelimit_client::{Algorithm, Backend, Config, Limit, Outcome, RedisStore};
use std::time::{Duration, Instant};

fn limit(n: u64) -> Limit {
    Limit::fixed(n, Duration::from_secs(60)).unwrap()
}

fn limit_of(algorithm: Algorithm, n: u64) -> Limit {
    Limit::new(algorithm, n, Duration::from_secs(60)).unwrap()
}

async fn connect(config: Config) -> RedisStore {
    common::connected(config).await
}

#[tokio::test]
async fn a_server_with_the_module_gets_the_module() {
    let server = Server::start(true);
    let store = connect(Config::new(server.url())).await;
    assert_eq!(store.backend(), Some(Backend::Module));
    for (remaining, algorithm) in [(2, Algorithm::Fixed), (2, Algorithm::Sliding)] {
        let key = format!("k-{algorithm}");
        let decision = store.check(&key, &limit_of(algorithm, 3), 1).await.unwrap();
        assert_eq!(decision.backend, Backend::Module);
        assert!(decision.is_admitted() && decision.allowed() && decision.enforced);
        assert_eq!(decision.remaining, remaining);
    }
    let gcra = limit_of(Algorithm::Gcra, 10).with_burst(3).unwrap();
    let decision = store.check("k-gcra", &gcra, 1).await.unwrap();
    assert_eq!(
        (decision.backend, decision.limit, decision.remaining),
        (Backend::Module, 3, 2)
    );
    // The FIXED count is stored under the prefix, as the module stores it.
    let mut con = server.con().await;
    let stored: String = redis::cmd("GET")
        .arg("ratelimit:k-FIXED")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored, "1");
}

#[tokio::test]
async fn a_server_without_the_module_gets_the_script() {
    let server = Server::start(false);
    let store = connect(Config::new(server.url()).prefix("rl:")).await;
    assert_eq!(store.backend(), Some(Backend::Script));
    let limit = limit(2);
    let decisions = [
        store.check("k", &limit, 1).await.unwrap(),
        store.check_dry_run("k", &limit, 1).await.unwrap(),
        store.check("k", &limit, 1).await.unwrap(),
        store.check("k", &limit, 1).await.unwrap(),
        store.check("k", &limit, 5).await.unwrap(),
    ];
    let summary: Vec<(bool, u64, i64)> = decisions
        .iter()
        .map(|d| {
            assert_eq!(d.backend, Backend::Script);
            (
                d.is_admitted(),
                d.remaining,
                d.outcome.retry_after_ms().signum(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (true, 1, 0),
            (true, 0, 0),
            (true, 0, 0),
            (false, 0, 1),
            (false, 0, -1)
        ]
    );
    assert_eq!(decisions[4].outcome, Outcome::CannotFit);
    let quota = store.quota("k", &limit).await.unwrap();
    assert_eq!((quota.backend, quota.limit), (Backend::Script, 2));
    assert!(matches!(quota.next, Outcome::RetryAfter(_)));
    assert!(store.reset("k").await.unwrap());
    assert!(!store.reset("k").await.unwrap());
    assert!(store.check("k", &limit, 1).await.unwrap().is_admitted());
}

/// A server that lost the script (`SCRIPT FLUSH`, a restart, a replica just promoted) gets it
/// whole with the command that met `NOSCRIPT` (`EVAL`, sent where the key lives), not through
/// `SCRIPT LOAD`, which a cluster client sends to the nodes it knows of and which, during a
/// failover, can miss the new master. The seed's counter script does the same.
#[tokio::test]
async fn a_server_that_lost_the_script_gets_it_with_the_command() {
    let server = Server::start(false);
    let store = connect(Config::new(server.url())).await;
    let mut con = server.con().await;
    assert!(store.check("k", &limit(5), 1).await.unwrap().is_admitted());
    assert_eq!(
        store
            .increment("n", Duration::from_secs(60), 2)
            .await
            .unwrap(),
        2
    );
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut con)
        .await
        .unwrap();

    let d = store.check("k", &limit(5), 1).await.unwrap();
    assert_eq!((d.backend, d.remaining), (Backend::Script, 3));
    assert_eq!(
        store
            .increment("n", Duration::from_secs(60), 2)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        command_calls(&mut con, "eval").await,
        2,
        "one EVAL per script"
    );
    // `script|load` on Redis 7+, `script` on 6.2.
    let loads =
        command_calls(&mut con, "script|load").await + command_calls(&mut con, "script").await;
    assert_eq!(loads, 0, "no SCRIPT LOAD");
    // Cached by EVAL: the next calls go by SHA1 again.
    assert_eq!(store.check("k", &limit(5), 1).await.unwrap().remaining, 2);
    assert_eq!(
        store
            .increment("n", Duration::from_secs(60), 1)
            .await
            .unwrap(),
        5
    );
    assert_eq!(command_calls(&mut con, "eval").await, 2);
}

/// The server restarts without the module (it cannot be unloaded), then with it again: the
/// store follows each time, and every backend counts the same key, kept by the AOF.
#[tokio::test]
async fn follows_the_module_when_the_server_restarts_without_it_and_with_it() {
    let mut server = Server::start_with(Options {
        module: true,
        persistent: true,
        ..Options::default()
    });
    let config = Config::new(server.url()).redetect_interval(Duration::from_millis(100));
    let store = connect(config).await;
    let limit = limit(100);
    let first = store.check("k", &limit, 1).await.unwrap();
    assert_eq!((first.backend, first.remaining), (Backend::Module, 99));

    // Until the store meets the new server, the failure policy (the local limiter) answers; then
    // the script reads the module's state: the count goes on. A bounded wait, not a timing
    // assertion.
    let without = Options {
        module: false,
        persistent: true,
        ..Options::default()
    };
    server.restart_with(without.clone());
    let mut remaining = 99;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = store.check("k", &limit, 1).await.unwrap();
        if decision.backend == Backend::Script {
            remaining -= 1;
            assert_eq!(
                decision.remaining, remaining,
                "the script goes on from the module"
            );
            break;
        }
        assert_eq!(decision.backend, Backend::Local, "{decision:?}");
        assert!(Instant::now() < deadline, "the script is not used");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.backend(), Some(Backend::Script));
    assert!(store.reset("other").await.is_ok());

    server.restart_with(Options {
        module: true,
        ..without
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = store.check("k", &limit, 1).await.unwrap();
        if decision.backend != Backend::Local {
            remaining -= 1;
            assert_eq!(
                decision.remaining, remaining,
                "every backend counts the same key"
            );
        }
        if decision.backend == Backend::Module {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the module is not detected again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_server_restarted_without_the_module_gets_the_script() {
    let mut server = Server::start(true);
    let store = connect(Config::new(server.url())).await;
    assert_eq!(
        store.check("k", &limit(5), 1).await.unwrap().backend,
        Backend::Module
    );
    server.restart_with(Options::default());
    // The first call after the restart meets the dropped connection; the store's probe
    // reconnects and detects the backend again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = store.check("k", &limit(5), 1).await.unwrap();
        if decision.backend == Backend::Script {
            assert_eq!(decision.remaining, 4, "the restarted server has no data");
            break;
        }
        assert_ne!(decision.backend, Backend::Module);
        assert!(Instant::now() < deadline, "the script is not used");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.backend(), Some(Backend::Script));
}

/// A key that holds other data is no outage: `check` returns the error, whatever the failure
/// policy, and Redis stays in use for the other keys. The errors read as the module writes
/// them, from the module and the script alike.
#[tokio::test]
async fn errors_that_are_not_outages_are_returned() {
    for module in [true, false] {
        let server = Server::start(module);
        let store = connect(Config::new(server.url())).await;
        let mut con = server.con().await;
        let () = redis::cmd("RPUSH")
            .arg("ratelimit:list")
            .arg("x")
            .query_async(&mut con)
            .await
            .unwrap();

        let error = store.check("list", &limit(5), 1).await.unwrap_err();
        assert!(
            error.is_wrong_type() && error.is_data_error() && !error.is_outage(),
            "{error}"
        );
        assert_eq!(error.code(), Some("WRONGTYPE"));
        assert_eq!(
            error.to_string(),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        assert!(store.check_dry_run("list", &limit(5), 1).await.is_err());
        assert!(store.quota("list", &limit(5)).await.is_err());
        let fine = store.check("fine", &limit(5), 1).await.unwrap();
        assert!(fine.backend.is_redis() && fine.is_admitted());

        store
            .check("gcra", &limit_of(Algorithm::Gcra, 5), 1)
            .await
            .unwrap();
        let error = store.check("gcra", &limit(5), 1).await.unwrap_err();
        assert!(
            error.is_wrong_algorithm() && error.is_server_error() && !error.is_outage(),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "ERR the key holds a GCRA limiter, not FIXED"
        );

        let () = redis::cmd("SET")
            .arg("ratelimit:text")
            .arg("hello")
            .query_async(&mut con)
            .await
            .unwrap();
        let error = store.reset("text").await.unwrap_err();
        assert!(error.is_not_a_limiter(), "{error}");
        assert_eq!(
            error.to_string(),
            "ERR the key holds a value that is not a rate limiter state"
        );
        let error = store.check("k", &limit(5), u64::MAX).await.unwrap_err();
        assert!(error.is_invalid_limit());
        // Redis is still in use.
        assert_eq!(store.backend().map(Backend::is_redis), Some(true));
    }
}

/// `new` fails only on an invalid configuration; `ping` tells what is wrong with Redis.
#[tokio::test]
async fn ping_reports_what_went_wrong() {
    let error = RedisStore::new(Config::default()).unwrap_err();
    assert!(error.is_invalid_config());
    let error = RedisStore::new(Config::new("http://nowhere")).unwrap_err();
    assert!(error.is_invalid_config(), "{error}");
    let closed = format!("redis://127.0.0.1:{}/", common::closed_port());
    let store = RedisStore::new(Config::new(&closed)).unwrap();
    let error = store.ping().await.unwrap_err();
    assert!(error.is_unreachable(), "{error}");
    // TLS: a crypto provider is installed, so a TLS handshake with a plain server fails with an
    // error instead of a panic.
    let server = Server::start(false);
    let tls = format!("rediss://127.0.0.1:{}/", server.port());
    let error = RedisStore::new(Config::new(tls))
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(error.is_outage(), "{error}");
    // A server that wants a password and did not get it.
    let secured = Server::start_with(Options {
        password: Some("pw".into()),
        ..Options::default()
    });
    let without = format!("redis://127.0.0.1:{}/", secured.port());
    let error = RedisStore::new(Config::new(without))
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(error.is_outage(), "{error}");
    let store = RedisStore::new(Config::new(secured.url())).unwrap();
    assert_eq!(store.ping().await.unwrap(), Backend::Script);
}

/// Outside a Tokio runtime there is nothing to run the store's background work.
#[test]
fn a_store_needs_a_runtime() {
    let error = RedisStore::new(Config::new("redis://127.0.0.1:1/")).unwrap_err();
    assert!(error.is_invalid_config(), "{error}");
}

/// Waiting instead of refusing: `check_or_wait` sleeps the decision's `retry_after` and
/// checks again, gives up when the wait would pass its maximum, and never waits for a request
/// that cannot fit.
#[tokio::test]
async fn check_or_wait_waits_for_an_admission() {
    let server = Server::start(true);
    let store = connect(Config::new(server.url())).await;
    let second = Limit::fixed(1, Duration::from_secs(1)).unwrap();
    assert!(store.check("job", &second, 1).await.unwrap().is_admitted());
    let waited = store
        .check_or_wait("job", &second, 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (waited.outcome, waited.backend),
        (Outcome::Admitted, Backend::Module)
    );

    let hour = Limit::fixed(1, Duration::from_secs(3600)).unwrap();
    assert!(store.check("slow", &hour, 1).await.unwrap().is_admitted());
    let gave_up = store
        .check_or_wait("slow", &hour, 1, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        matches!(gave_up.outcome, Outcome::RetryAfter(wait) if wait > Duration::from_secs(3000))
    );
    assert!(!gave_up.allowed());

    let never = store
        .check_or_wait("big", &hour, 2, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(never.outcome, Outcome::CannotFit);
}

/// Shadow mode: every decision is made and counted as usual, and reported, but none refuses.
#[tokio::test]
async fn shadow_mode_counts_but_never_refuses() {
    for module in [true, false] {
        let server = Server::start(module);
        let store = connect(Config::new(server.url()).shadow(true)).await;
        let two = limit(2);
        let decisions = [
            store.check("k", &two, 1).await.unwrap(),
            store.check("k", &two, 1).await.unwrap(),
            store.check("k", &two, 1).await.unwrap(),
        ];
        assert!(decisions.iter().all(|d| d.allowed() && !d.enforced));
        assert_eq!(
            decisions.map(|d| d.is_shadow_denial()),
            [false, false, true]
        );
        assert!(matches!(decisions[2].outcome, Outcome::RetryAfter(_)));
        // A shadow denial spends nothing, as an enforced one: the count is 2.
        let mut con = server.con().await;
        let count: u64 = redis::cmd("GET")
            .arg("ratelimit:k")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(count, 2);
        // It never waits.
        let at_once = store
            .check_or_wait("k", &two, 1, Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(at_once.allowed() && at_once.is_shadow_denial());
    }
}
