//! Redis dies while checks run: every call still gets a decision from the failure policy, the
//! breaker keeps the calls off the dead server, and the client is back on Redis once the
//! server is back on the same port, at the first probe after it answers, with a line in the
//! logs. A store made while Redis is down says so.

mod common;

use common::{closed_port, wait_until, Server};
use ratelimit_client::{
    Backend, BreakerConfig, Config, Decision, FailurePolicy, Limit, Outcome, RedisStore,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Every log line of this test binary, in memory: the tests run in parallel, so each looks
/// only at the lines that name its own server's URL.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// The logs, installed as the global subscriber at the first call.
    fn get() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .init();
            logs
        })
    }

    /// The bytes logged so far: a mark for [`Logs::lines_since`].
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The lines logged since `mark` that contain `needle`.
    fn lines_since(&self, mark: usize, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap()[mark..].to_vec();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(needle))
            .map(String::from)
            .collect()
    }
}

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
    let store = common::connected(config).await;
    let limit = Limit::fixed(1_000_000, Duration::from_secs(60)).unwrap();
    let decisions: Arc<Mutex<Vec<Decision>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (store, decisions, stop) = (store.clone(), decisions.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // An outage is never an error: the failure policy answers.
                    let decision = store.check("loop", &limit, 1).await.unwrap();
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
            Backend::Module => assert!(decision.is_admitted()),
            backend => {
                assert_eq!(backend, expected, "{decision:?}");
                assert_eq!(
                    decision.is_admitted(),
                    policy != FailurePolicy::Deny,
                    "{decision:?}"
                );
                assert_eq!(decision.limit, 1_000_000);
            }
        }
    }
    if policy == FailurePolicy::Local {
        // The local limiter counts the requests it admitted, from a full allowance: each
        // admission leaves one unit fewer. (The two tasks record their decisions in the order
        // they get the lock, not the order they were decided: compare them sorted.)
        let mut local: Vec<u64> = decisions
            .iter()
            .filter(|d| d.backend == Backend::Local)
            .map(|d| d.remaining)
            .collect();
        local.sort_unstable_by(|a, b| b.cmp(a));
        assert!(local.windows(2).all(|w| w[1] + 1 == w[0]), "{local:?}");
        assert_eq!(local[0], 999_999);
    }
    if policy == FailurePolicy::Deny {
        let denial = decisions
            .iter()
            .find(|d| d.backend == Backend::Deny)
            .unwrap();
        assert!(denial
            .retry_after()
            .is_some_and(|wait| wait > Duration::ZERO));
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
    let store = RedisStore::new(config).unwrap();
    let limit = Limit::fixed(5, Duration::from_secs(60)).unwrap();
    let first = store.check("k", &limit, 1).await.unwrap();
    assert_eq!(first.backend, Backend::Allow);
    // The store's first ping and the first check share one connection attempt; the connection
    // manager may start one reconnection in the background after the failure.
    let after_first = accepted.load(Ordering::SeqCst);
    assert!((1..=2).contains(&after_first), "{after_first} connections");
    for _ in 0..50 {
        let decision = store.check("k", &limit, 1).await.unwrap();
        assert_eq!(
            (decision.backend, decision.allowed()),
            (Backend::Allow, true)
        );
    }
    let error = store.get("n").await.unwrap_err();
    assert!(error.is_unreachable() && !error.is_timeout(), "{error}");
    assert!(accepted.load(Ordering::SeqCst) <= 2);
}

/// A store made while nothing listens: it is made all the same, every check is answered by the
/// failure policy, the operations without a policy fail, and a warning says why.
#[tokio::test]
async fn a_store_made_without_redis_answers_from_the_policy_and_says_so() {
    let logs = Logs::get();
    let url = format!("redis://127.0.0.1:{}/", closed_port());
    for (policy, backend, admitted) in [
        (FailurePolicy::Local, Backend::Local, [true, true, false]),
        (FailurePolicy::Allow, Backend::Allow, [true, true, true]),
        (FailurePolicy::Deny, Backend::Deny, [false, false, false]),
    ] {
        let mark = logs.len();
        let store = RedisStore::new(Config::new(&url).on_failure(policy)).unwrap();
        let limit = Limit::fixed(2, Duration::from_secs(60)).unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let decision = store.check("k", &limit, 1).await.unwrap();
            assert_eq!(decision.backend, backend);
            seen.push(decision.is_admitted());
        }
        assert_eq!(seen, admitted, "{policy}");
        assert!(store
            .increment("n", Duration::from_secs(1), 1)
            .await
            .unwrap_err()
            .is_unreachable());
        assert!(store.get("n").await.unwrap_err().is_unreachable());
        assert!(store.clear_all().await.unwrap_err().is_outage());
        assert!(store.reset("k").await.unwrap_err().is_outage());
        assert_eq!(store.backend(), None);
        wait_until("the store warns that Redis cannot be reached", || async {
            !logs.lines_since(mark, &url).is_empty()
        })
        .await;
        let warning = &logs.lines_since(mark, &url)[0];
        assert!(warning.contains("WARN"), "{warning}");
        assert!(
            warning.contains(&format!(
                "Redis cannot be reached at start: the failure policy '{policy}' answers until it is back"
            )),
            "{warning}"
        );
    }
}

/// Redis stops for a while and comes back on the same port. The checks are back on the module
/// at the first probe after Redis answers: no probe fails once it is up (a connection manager
/// that failed during the outage would answer its stale "connection refused" once more). One
/// warning marks the outage's start and one line at INFO its end, with its length and the
/// number of decisions the policy answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_back_at_the_first_probe_after_redis_and_says_so() {
    let logs = Logs::get();
    let mut server = Server::start(true);
    let url = server.url();
    // A bounded probe interval, longer than any connection attempt to a closed port.
    let breaker = BreakerConfig {
        failure_threshold: 1,
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    let start = logs.len();
    let store = common::connected(Config::new(&url).breaker(breaker)).await;
    let limit = Limit::fixed(1_000, Duration::from_secs(60)).unwrap();
    assert_eq!(
        store.check("k", &limit, 1).await.unwrap().backend,
        Backend::Module
    );

    server.kill();
    let mut answered_by_policy = 0;
    // Enough decisions for several probes to fail while the server is down.
    while answered_by_policy < 40 {
        let decision = store.check("k", &limit, 1).await.unwrap();
        if decision.backend == Backend::Local {
            answered_by_policy += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed_probes = logs.lines_since(start, "Redis is still out");
    assert!(failed_probes.iter().any(|line| line.contains(&url)));

    server.restart();
    // The server answers another client: from here on, every probe must succeed.
    drop(server.con().await);
    let up = logs.len();
    // A bounded wait, not a timing assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let back = loop {
        let decision = store.check("k", &limit, 1).await.unwrap();
        if decision.backend == Backend::Module {
            break decision;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the checks are not back on the module"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(back.outcome, Outcome::Admitted);
    assert_eq!(back.remaining, 999, "the restarted server has no data");

    let failed = logs.lines_since(up, "Redis is still out");
    let failed: Vec<&String> = failed.iter().filter(|l| l.contains(&url)).collect();
    assert!(
        failed.is_empty(),
        "a probe failed after Redis was up: {failed:?}"
    );
    let stale: Vec<String> = logs
        .lines_since(up, &url)
        .into_iter()
        .filter(|line| line.to_lowercase().contains("refused"))
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
    let warnings: Vec<String> = logs
        .lines_since(start, "Redis cannot be reached")
        .into_iter()
        .filter(|line| line.contains(&url))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let recovered: Vec<String> = logs
        .lines_since(start, "Redis is back after")
        .into_iter()
        .filter(|line| line.contains(&url))
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    let line = &recovered[0];
    println!("{line}");
    assert!(line.contains(" INFO "), "{line}");
    let decisions: u64 = line
        .split("the failure policy answered ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of decisions in {line}"));
    assert!(decisions >= 40, "{line}");
    assert!(line.contains("outage_ms="), "{line}");
}
