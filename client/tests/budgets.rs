//! Several policies at once (`check_all`, RATELIMIT.MCHECK) and token budgets (`reserve` and
//! `settle`: CHECK WITHWINDOW, REFUND ... WINDOW, CHECK FORCE) through the client's three
//! backends: the module, the script and the in-process limiter answer the same; and 20 tasks
//! that reserve, use and settle never spend more than the limit plus the forced excess, and
//! never get a refund twice.

mod common;

use common::{closed_port, Server};
use ratelimit_client::{
    Backend, Config, Error, FailurePolicy, Key, Limit, LimitCheck, Outcome, RedisStore, Reserved,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// xorshift64*, seeded by `RATELIMIT_SEED` or the time; the seed is printed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("RATELIMIT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("RATELIMIT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn policies() -> Vec<Limit> {
    vec![
        Limit::fixed(400, HOUR).unwrap(),
        Limit::sliding(300, DAY).unwrap(),
        Limit::gcra(200, DAY).unwrap().with_burst(60).unwrap(),
    ]
}

const SCOPES: [&str; 3] = ["rph", "rpd", "tpd"];

/// The part of a decision every backend must agree on, with the times to compare loosely.
type Summary = (bool, i64, u64, u64, u64);

fn summary(decision: &ratelimit_client::Decision) -> Summary {
    (
        decision.is_admitted(),
        decision.outcome.retry_after_ms().signum(),
        decision.limit,
        decision.remaining,
        decision.reset_after_ms(),
    )
}

fn assert_close(a: &[Summary], b: &[Summary], context: &str) {
    assert_eq!(a.len(), b.len(), "{context}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.0, x.1, x.2, x.3), (y.0, y.1, y.2, y.3), "{context}");
        assert!(x.4.abs_diff(y.4) <= 1000, "{context}: {a:?} vs {b:?}");
    }
}

/// One random step on `store`: a check of every policy, a dry run, a single check, or a
/// reservation settled below, at or above its estimate. The summaries of what it answered.
async fn step(store: &RedisStore, op: u64, costs: [u64; 3], actual: u64) -> Vec<Summary> {
    let limits = policies();
    let checks: Vec<LimitCheck<'_>> = SCOPES
        .iter()
        .zip(&limits)
        .zip(costs)
        .map(|((scope, limit), cost)| LimitCheck::new(Key::new(scope, "{u42}"), limit, cost))
        .collect();
    match op {
        0..=3 => {
            let all = store.check_all(&checks).await.unwrap();
            assert_eq!(
                all.is_admitted(),
                all.decisions.iter().all(|d| d.is_admitted())
            );
            let mut out: Vec<Summary> = all.decisions.iter().map(summary).collect();
            out.push((
                all.is_admitted(),
                all.outcome.retry_after_ms().signum(),
                0,
                0,
                0,
            ));
            out
        }
        4 => {
            let all = store.check_all_dry_run(&checks).await.unwrap();
            all.decisions.iter().map(summary).collect()
        }
        5 => {
            let index = (costs[0] % 3) as usize;
            let decision = store
                .check(checks[index].key, &limits[index], costs[index])
                .await
                .unwrap();
            vec![summary(&decision)]
        }
        _ => {
            let index = (costs[1] % 3) as usize;
            let estimate = costs[index];
            match store
                .reserve(checks[index].key, &limits[index], estimate)
                .await
                .unwrap()
            {
                Reserved::Denied(decision) => vec![summary(&decision)],
                Reserved::Held(reservation) => {
                    let admitted = summary(reservation.decision());
                    let settled = reservation.settle(actual).await.unwrap();
                    assert_eq!(
                        settled.charged,
                        actual.saturating_sub(estimate),
                        "the excess is charged whole"
                    );
                    let quota = store
                        .quota(checks[index].key, &limits[index])
                        .await
                        .unwrap();
                    vec![
                        admitted,
                        (
                            settled.refunded > 0,
                            0,
                            settled.refunded,
                            settled.charged,
                            0,
                        ),
                        (
                            quota.next == Outcome::Admitted,
                            0,
                            quota.limit,
                            quota.remaining,
                            u64::try_from(quota.reset_after.as_millis()).unwrap(),
                        ),
                    ]
                }
            }
        }
    }
}

/// A store whose Redis is never there: the failure policy `Local` answers everything.
fn local_store() -> RedisStore {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    RedisStore::new(Config::new(url).on_failure(FailurePolicy::Local)).unwrap()
}

#[tokio::test]
async fn module_script_and_local_agree_on_mcheck_refund_and_force() {
    let (with, without) = (Server::start(true), Server::start(false));
    let module = common::connected(Config::new(with.url())).await;
    let script = common::connected(Config::new(without.url())).await;
    let local = local_store();
    assert_eq!(
        (module.backend(), script.backend()),
        (Some(Backend::Module), Some(Backend::Script))
    );
    let mut rng = Rng::new();
    let mut denied = 0;
    let mut settled = 0;
    for index in 0..300 {
        let op = rng.below(9);
        let costs = [rng.below(12), rng.below(9), rng.below(3)];
        let actual = rng.below(14);
        let context = format!("step {index}: op {op}, costs {costs:?}, actual {actual}");
        let answers = [
            step(&module, op, costs, actual).await,
            step(&script, op, costs, actual).await,
            step(&local, op, costs, actual).await,
        ];
        assert_close(
            &answers[0],
            &answers[1],
            &format!("module vs script, {context}"),
        );
        assert_close(
            &answers[0],
            &answers[2],
            &format!("module vs local, {context}"),
        );
        denied += usize::from(!answers[0][0].0);
        settled += usize::from(op >= 6 && answers[0].len() == 3);
    }
    println!("{denied} denials, {settled} settlements compared");
    assert!(
        denied > 10 && settled > 10,
        "the sequence explores denials and settlements"
    );

    // The same keys hold the same states in Redis.
    let (mut a, mut b) = (with.con().await, without.con().await);
    for scope in SCOPES {
        let key = format!("ratelimit:{scope}:{{u42}}");
        let get = |value: Option<Vec<u8>>| value.map(|v| v.len());
        let x: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut a)
            .await
            .unwrap();
        let y: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut b)
            .await
            .unwrap();
        assert_eq!(get(x), get(y), "{key}");
    }
}

#[tokio::test]
async fn check_all_is_all_or_nothing_and_validates_its_checks() {
    let server = Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let small = Limit::fixed(2, HOUR).unwrap();
    let large = Limit::fixed(100, HOUR).unwrap();
    let checks = [
        LimitCheck::new(Key::new("small", "{u}"), &small, 1),
        LimitCheck::new(Key::new("large", "{u}"), &large, 10),
    ];
    for _ in 0..2 {
        assert!(store.check_all(&checks).await.unwrap().is_admitted());
    }
    let denied = store.check_all(&checks).await.unwrap();
    assert!(!denied.allowed() && denied.retry_after().is_some());
    assert_eq!(denied.violated().collect::<Vec<_>>(), [0]);
    assert_eq!(denied.decisions[1].remaining, 70, "a dry run's standing");
    let mut con = server.con().await;
    let large_count: String = redis::cmd("GET")
        .arg("ratelimit:large:{u}")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        large_count, "20",
        "the denial spent nothing on the other policy"
    );

    let twice = [checks[0], checks[0]];
    assert!(store
        .check_all(&twice)
        .await
        .unwrap_err()
        .is_invalid_argument());
    assert!(store
        .check_all(&[])
        .await
        .unwrap_err()
        .is_invalid_argument());
    let too_many: Vec<String> = (0..17).map(|i| format!("k{i}")).collect();
    let too_many: Vec<LimitCheck<'_>> = too_many
        .iter()
        .map(|k| LimitCheck::new(k, &small, 1))
        .collect();
    assert!(store
        .check_all(&too_many)
        .await
        .unwrap_err()
        .is_invalid_argument());
    let costly = [LimitCheck::new("k", &small, 2_000_000_000_000_000)];
    assert!(matches!(
        store.check_all(&costly).await.unwrap_err(),
        Error::InvalidCost(_)
    ));
}

/// The issue's scenario: 20 tasks reserve estimates, use random amounts and settle them; one
/// in five drops its reservation unsettled. The limiter's count is then exactly the sum of the
/// amounts used by the settled reservations: every unused unit came back once, and never twice.
/// And that sum never exceeds the limit plus the excess that was forced.
async fn reserve_and_settle_scenario(module: bool) {
    let server = Server::start(module);
    let store = common::connected(Config::new(server.url())).await;
    let limit = Limit::fixed(2000, HOUR).unwrap();
    let used = Arc::new(AtomicU64::new(0));
    let forced = Arc::new(AtomicU64::new(0));
    let seed = Rng::new().below(u64::MAX);
    let mut tasks = Vec::new();
    for task in 0..20u64 {
        let store = store.clone();
        let (used, forced) = (Arc::clone(&used), Arc::clone(&forced));
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (task + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for _ in 0..40 {
                let estimate = 10 + rng.below(40);
                let reservation = match store.reserve("tokens", &limit, estimate).await.unwrap() {
                    Reserved::Held(reservation) => reservation,
                    Reserved::Denied(decision) => {
                        assert!(decision.retry_after().is_some());
                        continue;
                    }
                };
                let actual = rng.below(2 * estimate);
                if rng.below(5) == 0 {
                    drop(reservation);
                    continue;
                }
                let settled = reservation.settle(actual).await.unwrap();
                assert_eq!(settled.refunded, estimate.saturating_sub(actual));
                assert_eq!(settled.charged, actual.saturating_sub(estimate));
                used.fetch_add(actual, Ordering::Relaxed);
                forced.fetch_add(settled.charged, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (used, forced) = (used.load(Ordering::Relaxed), forced.load(Ordering::Relaxed));
    assert!(used <= 2000 + forced, "used {used}, forced {forced}");
    assert!(used > 1000, "the tasks filled the budget: {used}");
    // The dropped reservations are given back by spawned tasks: a bounded wait for them.
    let mut con = server.con().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count: Option<u64> = redis::cmd("GET")
            .arg("ratelimit:tokens")
            .query_async(&mut con)
            .await
            .unwrap();
        if count.unwrap_or(0) == used || Instant::now() > deadline {
            assert_eq!(count.unwrap_or(0), used, "the count is what was used");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("used {used} units of 2000, {forced} forced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_budgets_settle_exactly_with_the_module() {
    reserve_and_settle_scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_budgets_settle_exactly_with_the_script() {
    reserve_and_settle_scenario(false).await;
}

#[tokio::test]
async fn a_refund_after_its_window_gives_nothing_back() {
    let server = Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let limit = Limit::fixed(10, Duration::from_millis(300)).unwrap();
    let Reserved::Held(reservation) = store.reserve("w", &limit, 8).await.unwrap() else {
        panic!("a fresh key admits the reservation");
    };
    // The window ends, and a new one starts with a request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.check("w", &limit, 1).await.unwrap().remaining != 9 {
        assert!(Instant::now() < deadline, "a new window starts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = reservation.settle(0).await.unwrap();
    assert_eq!(
        settled.refunded, 0,
        "units of an ended window never credit the next"
    );
    assert_eq!(store.quota("w", &limit).await.unwrap().remaining, 9);
}

#[tokio::test]
async fn the_failure_policy_settles_sensibly() {
    let limit = Limit::fixed(10, HOUR).unwrap();
    // Local: reserved and settled in this process.
    let local = local_store();
    let Reserved::Held(reservation) = local.reserve("k", &limit, 6).await.unwrap() else {
        panic!("admitted");
    };
    assert_eq!(reservation.decision().backend, Backend::Local);
    let settled = reservation.settle(2).await.unwrap();
    assert_eq!((settled.refunded, settled.quota.unwrap().remaining), (4, 8));
    let Reserved::Held(reservation) = local.reserve("k", &limit, 8).await.unwrap() else {
        panic!("admitted");
    };
    let settled = reservation.settle(12).await.unwrap();
    assert_eq!((settled.charged, settled.quota.unwrap().remaining), (4, 0));
    assert!(matches!(
        local.reserve("k", &limit, 1).await.unwrap(),
        Reserved::Denied(_)
    ));
    // Allow: nothing is counted, so nothing is settled.
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let allow = RedisStore::new(Config::new(url).on_failure(FailurePolicy::Allow)).unwrap();
    let Reserved::Held(reservation) = allow.reserve("k", &limit, 6).await.unwrap() else {
        panic!("admitted");
    };
    let settled = reservation.settle(20).await.unwrap();
    assert_eq!((settled.refunded, settled.charged), (0, 0));
    // Deny: denied, nothing held.
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let deny = RedisStore::new(Config::new(url).on_failure(FailurePolicy::Deny)).unwrap();
    let Reserved::Denied(decision) = deny.reserve("k", &limit, 1).await.unwrap() else {
        panic!("denied");
    };
    assert_eq!(decision.backend, Backend::Deny);
    let all = deny
        .check_all(&[
            LimitCheck::new("a", &limit, 1),
            LimitCheck::new("b", &limit, 1),
        ])
        .await
        .unwrap();
    assert!(!all.allowed() && all.backend == Backend::Deny && all.decisions.len() == 2);
}

/// A metered policy beside a batched one (a hot-key share): `check_all` takes the batched limit
/// from its share and the other in one MCHECK, and the hold of the other names the window its
/// cost was spent in, so a settlement below the estimate gives the rest back. It used to name
/// no window, and FIXED and SLIDING refunds then gave nothing back.
#[tokio::test]
async fn a_metered_policy_beside_a_batched_one_settles_in_its_window() {
    let server = Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let requests = Limit::fixed(1_000, HOUR)
        .unwrap()
        .with_local_batch(10)
        .unwrap();
    for tokens in [
        Limit::fixed(2_000, HOUR).unwrap(),
        Limit::sliding(2_000, HOUR).unwrap(),
    ] {
        let key = Key::new(tokens.algorithm().name(), "{m}");
        let checks = [
            LimitCheck::new(Key::new("requests", "{m}"), &requests, 1),
            LimitCheck::new(key, &tokens, 500),
        ];
        let all = store.check_all(&checks).await.unwrap();
        assert!(all.is_admitted(), "{all:?}");
        let hold = all.hold(1, 500).unwrap();
        let settled = store.settle(key, &tokens, hold, 100).await.unwrap();
        assert_eq!(settled.refunded, 400, "{:?}", tokens.algorithm());
        let left = store.quota(key, &tokens).await.unwrap().remaining;
        assert_eq!(left, 1_900, "{:?}", tokens.algorithm());
    }
}

/// Calls dropped while Redis holds their command (a caller's timeout shorter than the store's
/// deadline, around a `CLIENT PAUSE WRITE` shorter than that deadline) run to their end on a
/// task of their own, and give back what the command spent once Redis runs it: the estimate of
/// a reservation, the slot of a permit, and the units a hot key's batch handed to nobody (back
/// to the share, which returns them to Redis after `share_hold`). Dropped with their caller,
/// they left 7 units spent, a lease held for an hour, and a batch of 100 spent.
#[tokio::test]
async fn calls_dropped_midway_give_back_what_they_spent() {
    let server = Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let mut con = server.con().await;
    let limit = Limit::fixed(10, HOUR).unwrap();
    let batched = Limit::fixed(1_000, HOUR)
        .unwrap()
        .with_local_batch(100)
        .unwrap();
    store.quota("warm", &limit).await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(150)
        .arg("WRITE")
        .query_async(&mut con)
        .await
        .unwrap();
    let caller = Duration::from_millis(30);
    let reserve = tokio::time::timeout(caller, store.reserve("r", &limit, 7));
    let acquire = tokio::time::timeout(caller, store.acquire("a", 1, HOUR));
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let store = store.clone();
        checks.spawn(async move {
            tokio::time::timeout(caller, store.check("h", &batched, 1))
                .await
                .is_err()
        });
    }
    let (reserved, acquired) = tokio::join!(reserve, acquire);
    assert!(
        reserved.is_err() && acquired.is_err(),
        "the callers timed out"
    );
    assert!(
        checks
            .join_all()
            .await
            .into_iter()
            .all(|timed_out| timed_out),
        "the checks timed out"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reserve_left = store.quota("r", &limit).await.unwrap().remaining;
        let leases: u64 = redis::cmd("ZCARD")
            .arg("ratelimit:a")
            .query_async(&mut con)
            .await
            .unwrap();
        let batch_left = store.quota("h", &batched).await.unwrap().remaining;
        if (reserve_left, leases, batch_left) == (10, 0, 1_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 5 s: {reserve_left} of 10 left, {leases} leases, {batch_left} of 1000 left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
