//! Redis dies while checks run: every call still gets a decision from the failure policy, the
//! breaker keeps the calls off the dead server, and the client is back on Redis once the
//! server is back on the same port.

mod common;

use common::{closed_port, wait_until, Server};
use ratelimit_client::{
    Backend, BreakerConfig, Config, Decision, FailurePolicy, Limit, RedisStore,
};
use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

fn fast_breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 1,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

/// Checks in a loop on two tasks while the test kills and restarts the server.
async fn survive_an_outage(policy: FailurePolicy, expected: Backend) {
    let mut server = Server::start(true);
    let config = Config::new(server.url())
        .on_failure(policy)
        .breaker(fast_breaker());
    let store = RedisStore::try_connect(config).await.unwrap();
    let limit = Limit::new(1_000_000, Duration::from_secs(60));
    let decisions: Arc<Mutex<Vec<Decision>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (store, decisions, stop) = (store.clone(), decisions.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // `try_check` returns only errors that are not outages: none here.
                    let decision = store.try_check("loop", &limit, 1).await.unwrap();
                    decisions.lock().unwrap().push(decision);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    let count = |backend: Backend| {
        let decisions = decisions.clone();
        move || {
            let found = decisions
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d.backend == backend)
                .count();
            async move { found }
        }
    };
    let module_count = count(Backend::Module);
    let policy_count = count(expected);
    wait_until("checks go to the module", || async {
        module_count().await >= 10
    })
    .await;

    server.kill();
    wait_until("the policy answers", || async {
        policy_count().await >= 10
    })
    .await;
    let before_restart = module_count().await;

    server.restart();
    wait_until("the checks are back on Redis", || async {
        module_count().await > before_restart
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("no check panicked");
    }

    let decisions = decisions.lock().unwrap();
    for decision in decisions.iter() {
        match decision.backend {
            Backend::Module => assert!(decision.allowed),
            backend => {
                assert_eq!(backend, expected, "{decision:?}");
                assert_eq!(
                    decision.allowed,
                    policy != FailurePolicy::Deny,
                    "{decision:?}"
                );
                assert_eq!(decision.limit, 1_000_000);
            }
        }
    }
    if policy == FailurePolicy::Local {
        // The local limiter counts the requests it admitted, from a full allowance.
        let local: Vec<u64> = decisions
            .iter()
            .filter(|d| d.backend == Backend::Local)
            .map(|d| d.remaining)
            .collect();
        assert!(local.windows(2).all(|w| w[1] < w[0]), "{local:?}");
        assert_eq!(local[0], 999_999);
    }
    if policy == FailurePolicy::Deny {
        let denial = decisions
            .iter()
            .find(|d| d.backend == Backend::Deny)
            .unwrap();
        assert!(denial.retry_after.is_some_and(|wait| wait > Duration::ZERO));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_limiter_answers_while_redis_is_down() {
    survive_an_outage(FailurePolicy::Local, Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_admits_while_redis_is_down() {
    survive_an_outage(FailurePolicy::Allow, Backend::Allow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_closed_denies_while_redis_is_down() {
    survive_an_outage(FailurePolicy::Deny, Backend::Deny).await;
}

/// A server that accepts connections and never answers: the worst kind of dead Redis. The
/// first call times out; while the breaker is open, the next calls do not touch the network.
#[tokio::test]
async fn the_breaker_keeps_calls_off_a_server_that_does_not_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            // Hold the connection open and read whatever comes, answering nothing.
            thread::spawn(move || {
                let mut stream = stream.unwrap();
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let config = Config::new(format!("redis://127.0.0.1:{port}/"))
        .connect_timeout(Duration::from_millis(100))
        .response_timeout(Duration::from_millis(100))
        .on_failure(FailurePolicy::Allow)
        .breaker(BreakerConfig {
            failure_threshold: 1,
            base_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
        });
    let store = RedisStore::open(config).unwrap();
    let limit = Limit::new(5, Duration::from_secs(60));
    let first = store.try_check("k", &limit, 1).await.unwrap();
    assert_eq!(first.backend, Backend::Allow);
    // The connection manager may start one reconnection in the background after the failure.
    let after_first = accepted.load(Ordering::SeqCst);
    assert!((1..=2).contains(&after_first), "{after_first} connections");
    for _ in 0..50 {
        let decision = store.check("k", &limit, 1).await;
        assert_eq!((decision.backend, decision.allowed), (Backend::Allow, true));
    }
    let error = store.ping().await.unwrap_err();
    assert!(error.is_unreachable() && !error.is_timeout());
    assert!(accepted.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn a_store_opened_without_redis_answers_from_the_policy() {
    let url = format!("redis://127.0.0.1:{}/", closed_port());
    for (policy, backend, allowed) in [
        (FailurePolicy::Local, Backend::Local, [true, true, false]),
        (FailurePolicy::Allow, Backend::Allow, [true, true, true]),
        (FailurePolicy::Deny, Backend::Deny, [false, false, false]),
    ] {
        let store = RedisStore::open(Config::new(&url).on_failure(policy)).unwrap();
        let limit = Limit::new(2, Duration::from_secs(60));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let decision = store.check("k", &limit, 1).await;
            assert_eq!(decision.backend, backend);
            seen.push(decision.allowed);
        }
        assert_eq!(seen, allowed, "{policy}");
        assert!(store
            .increment("n", Duration::from_secs(1), 1)
            .await
            .unwrap_err()
            .is_unreachable());
        assert!(store.get("n").await.unwrap_err().is_unreachable());
        assert!(!store.clear_all().await);
        assert_eq!(store.backend(), None);
    }
}
