//! Local shares of a hot key ([`Limit::with_local_batch`]) against a real server: the global
//! bound holds across processes, leftovers go back to their window, and an outage leaves a
//! process only what it holds.

mod common;

use common::{command_calls, connected, wait_until, Server};
use ratelimit_client::{Backend, Config, FailurePolicy, Limit, Outcome};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "hot";

/// The FIXED count stored under the store's key, 0 when absent.
async fn stored_count(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let value: Option<u64> = redis::cmd("GET")
        .arg(format!("ratelimit:{KEY}"))
        .query_async(con)
        .await
        .unwrap();
    value.unwrap_or(0)
}

/// Four stores, each with its own connection, hammer one key of 10,000 per second with
/// batches of 100 for `seconds`. Each window's admissions, attributed to the window by the
/// decision's `reset_after`, never exceed the limit, and while demand exceeds supply they fall
/// short of it by at most 4 × 99. Redis sees at least 20 times fewer commands than admissions.
async fn four_stores_on_one_hot_key(module: bool, seconds: u64) {
    const LIMIT: u64 = 10_000;
    const BATCH: u64 = 100;
    const STORES: u64 = 4;
    let server = Server::start(module);
    let limit = Limit::fixed(LIMIT, Duration::from_secs(1))
        .unwrap()
        .with_local_batch(BATCH)
        .unwrap();
    let mut stores = Vec::new();
    for _ in 0..STORES {
        stores.push(connected(Config::new(server.url())).await);
    }
    let backend = if module {
        Backend::Module
    } else {
        Backend::Script
    };
    assert_eq!(stores[0].backend(), Some(backend));
    let mut con = server.con().await;
    let before =
        command_calls(&mut con, "ratelimit.check").await + command_calls(&mut con, "evalsha").await;

    // Admissions by the instant their window ends, in ms since `origin`.
    let origin = Instant::now();
    let windows: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..4 {
            let (store, windows, stop) = (store.clone(), windows.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine: Vec<u64> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let decision = store.check(KEY, &limit, 1).await.unwrap();
                    assert_eq!(decision.backend, backend, "{decision:?}");
                    if decision.is_admitted() {
                        let ends = Instant::now() + decision.reset_after;
                        mine.push(ends.duration_since(origin).as_millis() as u64);
                    } else {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    tokio::task::yield_now().await;
                }
                let mut windows = windows.lock().unwrap();
                for ends in mine {
                    *windows.entry(ends).or_default() += 1;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let after = command_calls(&mut con, "ratelimit.check").await
        + command_calls(&mut con, "ratelimit.refund").await
        + command_calls(&mut con, "evalsha").await;

    // Group the window ends: those of one window lie within a few ms of each other, and
    // windows are 1 s apart.
    let ends = windows.lock().unwrap().clone();
    let mut groups: Vec<(u64, u64)> = Vec::new();
    for (end, count) in ends {
        match groups.last_mut() {
            Some((first, total)) if end - *first < 500 => *total += count,
            _ => groups.push((end, count)),
        }
    }
    let admitted: u64 = groups.iter().map(|(_, n)| n).sum();
    println!(
        "{backend}: {} windows, admissions {:?}; {} Redis commands for {admitted} admissions ({:.0} admissions per command)",
        groups.len(),
        groups.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        after - before,
        admitted as f64 / (after - before).max(1) as f64
    );
    for (i, (_, count)) in groups.iter().enumerate() {
        assert!(*count <= LIMIT, "window {i} admitted {count}: {groups:?}");
    }
    // The first window opened with the load, the last was cut by the end of the test; those
    // between had demand above supply all through.
    assert!(groups.len() >= 3, "{groups:?}");
    for (i, (_, count)) in groups.iter().enumerate().skip(1).take(groups.len() - 2) {
        assert!(
            *count >= LIMIT - STORES * (BATCH - 1),
            "window {i} admitted only {count}: {groups:?}"
        );
    }
    assert!(
        (after - before) * 20 <= admitted,
        "{} Redis commands for {admitted} admissions",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stores_never_exceed_a_hot_limit_and_ask_redis_once_per_batch() {
    four_stores_on_one_hot_key(true, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stores_share_a_hot_key_through_the_script_too() {
    four_stores_on_one_hot_key(false, 3).await;
}

/// Two stores drain a limit of 50 with batches of 8: together they admit exactly 50, since
/// each hands out what it holds before it is denied; for every algorithm.
#[tokio::test]
async fn together_the_stores_admit_exactly_the_limit() {
    let server = Server::start(true);
    for limit in [
        Limit::fixed(50, Duration::from_secs(3600)).unwrap(),
        Limit::sliding(50, Duration::from_secs(3600)).unwrap(),
        Limit::gcra(50, Duration::from_secs(3600)).unwrap(),
    ] {
        let limit = limit.with_local_batch(8).unwrap();
        let a = connected(Config::new(server.url())).await;
        let b = connected(Config::new(server.url())).await;
        let key = format!("drain:{}", limit.algorithm());
        let mut admitted = 0;
        for _ in 0..100 {
            for store in [&a, &b] {
                if store
                    .check(key.as_str(), &limit, 1)
                    .await
                    .unwrap()
                    .is_admitted()
                {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 50, "{limit}");
        let last = a.check(key.as_str(), &limit, 1).await.unwrap();
        assert!(
            matches!(last.outcome, Outcome::RetryAfter(_)),
            "{limit}: {last:?}"
        );
    }
}

/// Units a store holds but does not use go back to their window after the hold time, and when
/// the store is dropped.
#[tokio::test]
async fn unused_units_go_back_after_the_hold_time_and_when_the_store_is_dropped() {
    let server = Server::start(true);
    let mut con = server.con().await;
    let limit = Limit::fixed(100, Duration::from_secs(3600))
        .unwrap()
        .with_local_batch(10)
        .unwrap();
    let store = connected(Config::new(server.url()).share_hold(Duration::from_millis(50))).await;
    let decision = store.check(KEY, &limit, 1).await.unwrap();
    assert!(decision.is_admitted());
    assert_eq!(decision.remaining, 99, "90 in Redis and 9 held");
    assert_eq!(stored_count(&mut con).await, 10, "a batch is spent at once");
    assert!(store.check(KEY, &limit, 1).await.unwrap().is_admitted());
    assert_eq!(
        stored_count(&mut con).await,
        10,
        "the second from the share"
    );
    wait_until("the 8 unused units are back", || {
        let mut con = con.clone();
        async move { stored_count(&mut con).await == 2 }
    })
    .await;

    // Dropped while holding units.
    let store = connected(Config::new(server.url())).await;
    assert!(store.check(KEY, &limit, 1).await.unwrap().is_admitted());
    assert_eq!(stored_count(&mut con).await, 12);
    drop(store);
    wait_until("the dropped store gave its 9 units back", || {
        let mut con = con.clone();
        async move { stored_count(&mut con).await == 3 }
    })
    .await;
}

/// While Redis is out, a store with the `Local` policy admits only what its share holds, then
/// denies; with `Allow` it lets everything through, as the policy says.
#[tokio::test]
async fn during_an_outage_a_share_is_all_a_process_may_use() {
    let mut server = Server::start(true);
    let limit = Limit::fixed(1000, Duration::from_secs(3600))
        .unwrap()
        .with_local_batch(10)
        .unwrap();
    let local = connected(Config::new(server.url()).on_failure(FailurePolicy::Local)).await;
    let allow = connected(Config::new(server.url()).on_failure(FailurePolicy::Allow)).await;
    assert!(local.check("a", &limit, 1).await.unwrap().is_admitted());
    assert!(allow.check("b", &limit, 1).await.unwrap().is_admitted());
    server.kill();
    // Past the hold time: the units could not go back, so they are still this process's.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..9 {
        let decision = local.check("a", &limit, 1).await.unwrap();
        assert!(
            decision.is_admitted(),
            "unit {i} of the share: {decision:?}"
        );
    }
    let denied = local.check("a", &limit, 1).await.unwrap();
    assert!(!denied.is_admitted(), "{denied:?}");
    assert_eq!(denied.backend, Backend::Local);
    for _ in 0..20 {
        let decision = allow.check("b", &limit, 1).await.unwrap();
        assert!(decision.is_admitted());
    }
    let last = allow.check("b", &limit, 1).await.unwrap();
    assert_eq!(last.backend, Backend::Allow, "{last:?}");
}

#[test]
fn a_batch_is_one_to_the_capacity() {
    let limit = Limit::gcra(10, Duration::from_secs(1))
        .unwrap()
        .with_burst(5)
        .unwrap();
    assert_eq!(limit.with_local_batch(5).unwrap().local_batch(), 5);
    assert!(limit.with_local_batch(6).unwrap_err().is_invalid_limit());
    assert!(limit.with_local_batch(0).unwrap_err().is_invalid_limit());
    assert_eq!(limit.local_batch(), 1);
    let batched = limit.with_local_batch(4).unwrap();
    assert_eq!(
        batched.to_string(),
        "10 per 1s GCRA, burst 5, local batch 4"
    );
}

/// `check_all` with a batched limit takes it from the share and the others in one MCHECK; when
/// another limit denies, the units taken go back into the share, and nothing else is spent.
#[tokio::test]
async fn check_all_takes_batched_limits_from_their_shares() {
    use ratelimit_client::{Key, LimitCheck};
    let server = Server::start(true);
    let mut con = server.con().await;
    let hot = Limit::fixed(100, Duration::from_secs(3600))
        .unwrap()
        .with_local_batch(10)
        .unwrap();
    let plain = Limit::fixed(3, Duration::from_secs(3600)).unwrap();
    let store = connected(Config::new(server.url())).await;
    let checks = [
        LimitCheck::new(KEY, &hot, 1),
        LimitCheck::new(Key::new("plain", "u"), &plain, 1),
    ];
    for i in 0..3 {
        let all = store.check_all(&checks).await.unwrap();
        assert!(all.is_admitted(), "request {i}: {all:?}");
    }
    let denied = store.check_all(&checks).await.unwrap();
    assert!(!denied.is_admitted());
    assert_eq!(denied.violated().collect::<Vec<_>>(), vec![1]);
    assert_eq!(stored_count(&mut con).await, 10, "one batch spent in Redis");
    // 3 handed out; the denied request's unit went back: 7 remain in the share.
    for i in 0..7 {
        let decision = store.check(KEY, &hot, 1).await.unwrap();
        assert!(decision.is_admitted(), "unit {i}: {decision:?}");
    }
    assert_eq!(stored_count(&mut con).await, 10, "all from the share");
    assert!(store.check(KEY, &hot, 1).await.unwrap().is_admitted());
    assert_eq!(stored_count(&mut con).await, 20, "then a new batch");
}
