//! Backend selection against real servers: the module when it is loaded, the script when it is
//! not, the switch when the module is unloaded mid-run and back when it is loaded again; and
//! the classification of the errors that are not outages.

mod common;

use common::{Options, Server};
use ratelimit_client::{Algorithm, Backend, Config, Limit, RedisStore};
use std::time::{Duration, Instant};

fn limit(n: u64) -> Limit {
    Limit::new(n, Duration::from_secs(60))
}

async fn connect(config: Config) -> RedisStore {
    RedisStore::try_connect(config)
        .await
        .expect("connect to the test server")
}

#[tokio::test]
async fn a_server_with_the_module_gets_the_module() {
    let server = Server::start(true);
    let store = connect(Config::new(server.url())).await;
    assert_eq!(store.backend(), Some(Backend::Module));
    for (remaining, algorithm) in [(2, Algorithm::Fixed), (2, Algorithm::Sliding)] {
        let key = format!("k-{algorithm}");
        let decision = store.check(&key, &limit(3).algorithm(algorithm), 1).await;
        assert_eq!(decision.backend, Backend::Module);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, remaining);
    }
    let gcra = limit(10).algorithm(Algorithm::Gcra).burst(3);
    let decision = store.check("k-gcra", &gcra, 1).await;
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
        store.check("k", &limit, 1).await,
        store.check_dry_run("k", &limit, 1).await,
        store.quota("k", &limit).await,
        store.check("k", &limit, 1).await,
        store.check("k", &limit, 1).await,
        store.check("k", &limit, 5).await,
    ];
    let summary: Vec<(bool, u64, i64)> = decisions
        .iter()
        .map(|d| {
            assert_eq!(d.backend, Backend::Script);
            (d.allowed, d.remaining, d.retry_after_ms().signum())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (true, 1, 0),
            (true, 0, 0),
            // QUOTA: the standing now, one unit left (a dry run shows what a request leaves).
            (true, 1, 0),
            (true, 0, 0),
            (false, 0, 1),
            (false, 0, -1)
        ]
    );
    assert!(store.reset("k").await);
    assert!(!store.reset("k").await);
    assert!(store.check("k", &limit, 1).await.allowed);
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
    let first = store.check("k", &limit, 1).await;
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
        let decision = store.check("k", &limit, 1).await;
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
    assert!(store.try_reset("other").await.is_ok());

    server.restart_with(Options {
        module: true,
        ..without
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = store.check("k", &limit, 1).await;
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
        store.check("k", &limit(5), 1).await.backend,
        Backend::Module
    );
    server.restart_with(Options::default());
    // The first call after the restart meets the dropped connection; the breaker's probe
    // reconnects and detects the backend again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = store.check("k", &limit(5), 1).await;
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

#[tokio::test]
async fn errors_that_are_not_outages_are_returned_or_decided_by_the_policy() {
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

        let error = store.try_check("list", &limit(5), 1).await.unwrap_err();
        assert!(error.is_wrong_type() && !error.is_outage(), "{error}");
        assert_eq!(error.code(), Some("WRONGTYPE"));
        // `check` answers from the failure policy (Local by default), and Redis stays in use.
        let decision = store.check("list", &limit(5), 1).await;
        assert_eq!((decision.backend, decision.allowed), (Backend::Local, true));
        assert!(store.check("fine", &limit(5), 1).await.backend != Backend::Local);

        store
            .check("gcra", &limit(5).algorithm(Algorithm::Gcra), 1)
            .await;
        let error = store.try_check("gcra", &limit(5), 1).await.unwrap_err();
        assert!(
            error.is_wrong_algorithm() && error.is_server_error(),
            "{error}"
        );

        let () = redis::cmd("SET")
            .arg("ratelimit:text")
            .arg("hello")
            .query_async(&mut con)
            .await
            .unwrap();
        let error = store.try_reset("text").await.unwrap_err();
        assert!(error.is_not_a_limiter(), "{error}");
        assert!(!store.reset("text").await);

        let invalid = Limit::new(0, Duration::from_secs(1));
        let error = store.try_check("k", &invalid, 1).await.unwrap_err();
        assert!(error.is_invalid_limit());
        let error = store.try_check("k", &limit(5), u64::MAX).await.unwrap_err();
        assert!(error.is_invalid_limit());
        let decision = store.check("k", &invalid, 1).await;
        assert!(!decision.allowed);
        assert_eq!(
            (decision.backend, decision.retry_after),
            (Backend::Deny, None)
        );
        let burst_without_gcra = limit(5).burst(2);
        assert!(store
            .try_check("k", &burst_without_gcra, 1)
            .await
            .unwrap_err()
            .is_invalid_limit());
    }
}

#[tokio::test]
async fn connecting_reports_what_went_wrong() {
    let error = RedisStore::try_connect(Config::default())
        .await
        .unwrap_err();
    assert!(error.is_invalid_config());
    let error = RedisStore::try_connect(Config::new("http://nowhere"))
        .await
        .unwrap_err();
    assert!(error.is_invalid_config(), "{error}");
    let closed = format!("redis://127.0.0.1:{}/", common::closed_port());
    let error = RedisStore::try_connect(Config::new(&closed))
        .await
        .unwrap_err();
    assert!(error.is_unreachable(), "{error}");
    assert!(RedisStore::connect(Config::new(&closed)).await.is_none());
    // TLS: a crypto provider is installed, so a TLS handshake with a plain server fails with an
    // error instead of a panic.
    let server = Server::start(false);
    let tls = format!("rediss://127.0.0.1:{}/", server.port());
    let error = RedisStore::try_connect(Config::new(tls)).await.unwrap_err();
    assert!(error.is_outage(), "{error}");
    // A server that wants a password and did not get it.
    let secured = Server::start_with(Options {
        password: Some("pw".into()),
        ..Options::default()
    });
    let without = format!("redis://127.0.0.1:{}/", secured.port());
    let error = RedisStore::try_connect(Config::new(without))
        .await
        .unwrap_err();
    assert!(error.is_outage(), "{error}");
    assert!(RedisStore::connect(Config::new(secured.url()))
        .await
        .is_some());
}
