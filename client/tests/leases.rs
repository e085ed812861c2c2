//! Concurrency permits (`RedisStore::acquire`, `RATELIMIT.ACQUIRE`/`RELEASE`) through the
//! client's three backends:
//!
//! - `script_and_local_agree_on_a_fake_clock`: random ACQUIRE/RELEASE sequences, with
//!   expiries, against the Lua script on its test clock and `LocalLimiter::acquire_at`/
//!   `release_at` at the same instants: identical replies.
//! - `module_and_script_permits_agree`: the same sequence of permits (acquire, renew, release,
//!   drop, and leases made to expire by moving their score into the past) through a store on
//!   the module and a store on the script: identical outcomes.
//! - `a_permit_dropped_in_a_panicking_task_is_released`, `a_kept_alive_permit_outlives_its_lease`
//!   (Tokio's paused clock), and what each failure policy answers when Redis is killed mid-way.

mod common;

use common::{wait_until, Server};
use ratelimit_client::{
    Acquire, Backend, BreakerConfig, Config, FailurePolicy, LocalLimiter, Permit, RedisStore,
};
use redis::aio::MultiplexedConnection;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SplitMix64, seeded from `RATELIMIT_SEED` or the clock (printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("RATELIMIT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("RATELIMIT_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

async fn server_now_us(conn: &mut MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1_000_000 + micros
}

async fn live_leases(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

fn config(server: &Server) -> Config {
    Config::new(server.url()).response_timeout(Duration::from_secs(5))
}

/// The script's replies on its test clock equal the local limiter's at the same instants, for
/// random sequences of acquires (new, renewals, after expiries) and releases.
#[tokio::test]
async fn script_and_local_agree_on_a_fake_clock() {
    let server = Server::start(false);
    let mut conn = server.con().await;
    let script = redis::Script::new(ratelimit_client::LUA_SCRIPT);
    let mut rng = Rng::seeded();
    let (mut granted, mut denied, mut released, mut steps) = (0, 0, 0, 0);
    for sequence in 0..40 {
        let key = format!("fake:{sequence}");
        let local = LocalLimiter::new(100);
        let limit = 1 + rng.below(4);
        // The script writes absolute expiries from the test clock: ahead of the server's, so
        // that the server never expires the key first, and only moving forward.
        let mut now_us = server_now_us(&mut conn).await + 10_000_000;
        let mut log = vec![format!("limit {limit}")];
        for _ in 0..30 {
            let (short, long) = (rng.below(300_000), rng.below(3_000_000));
            now_us += rng.pick(&[0, 1, 999, 1000, short, long]);
            let at = UNIX_EPOCH + Duration::from_micros(now_us);
            let id = format!("h{}", rng.below(6));
            steps += 1;
            if rng.below(10) < 7 {
                let lease_ms = rng.pick(&[1, 50, 300, 1000, 5000]);
                let reply: redis::Value = script
                    .key(&key)
                    .arg("acquire")
                    .arg(limit)
                    .arg(lease_ms)
                    .arg(&id)
                    .arg(now_us)
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
                let redis::Value::Array(items) = reply else {
                    panic!("{reply:?}")
                };
                let numbers: Vec<i64> = items[..5]
                    .iter()
                    .map(|v| redis::from_redis_value_ref(v).unwrap())
                    .collect();
                let decision = local
                    .acquire_at(&key, limit, Duration::from_millis(lease_ms), &id, at)
                    .unwrap();
                log.push(format!(
                    "@{now_us} ACQUIRE {id} {lease_ms}ms -> {numbers:?}"
                ));
                let expected = vec![
                    i64::from(decision.is_admitted()),
                    decision.limit as i64,
                    decision.remaining as i64,
                    decision.reset_after_ms() as i64,
                    decision.outcome.retry_after_ms(),
                ];
                assert_eq!(numbers, expected, "{}", log.join("\n"));
                assert_eq!(decision.backend, Backend::Local);
                if decision.is_admitted() {
                    assert_eq!(items[5], redis::Value::BulkString(id.into_bytes()));
                    granted += 1;
                } else {
                    assert_eq!(items[5], redis::Value::Nil);
                    denied += 1;
                }
            } else {
                let reply: i64 = script
                    .key(&key)
                    .arg("release")
                    .arg(&id)
                    .arg(now_us)
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
                let expected = local.release_at(&key, &id, at);
                log.push(format!("@{now_us} RELEASE {id} -> {reply}"));
                assert_eq!(reply == 1, expected, "{}", log.join("\n"));
                released += i32::from(expected);
            }
        }
    }
    println!("{steps} steps: {granted} granted, {denied} denied, {released} released");
    assert!(granted > 100 && denied > 20 && released > 10);
}

/// One side of `module_and_script_permits_agree`: a store and its server.
struct Side {
    store: RedisStore,
    conn: MultiplexedConnection,
    permits: Vec<Option<Permit>>,
}

impl Side {
    async fn new(server: &Server, backend: Backend) -> Side {
        let store = common::connected(config(server)).await;
        assert_eq!(store.backend(), Some(backend));
        Side {
            store,
            conn: server.con().await,
            permits: Vec::new(),
        }
    }
}

/// What one step answered, without the times (the two servers' clocks differ by the time
/// between the two calls).
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Granted { remaining: u64 },
    Denied { limit: u64 },
    Renewed(bool),
    Released(bool),
    Dropped,
    Expired,
}

/// The same permits through the module and the script: every outcome equal, and the same
/// number of live leases in each sorted set after every step. Leases end by having their
/// score moved into the past, which both must then remove.
#[tokio::test]
async fn module_and_script_permits_agree() {
    let (with_module, without) = (Server::start(true), Server::start(false));
    let mut sides = [
        Side::new(&with_module, Backend::Module).await,
        Side::new(&without, Backend::Script).await,
    ];
    let mut rng = Rng::seeded();
    let lease = Duration::from_secs(60);
    let mut log = Vec::new();
    let mut outcomes = [0usize; 6];
    for round in 0..8 {
        let key = format!("permits:{round}");
        let redis_key = format!("ratelimit:{key}");
        let limit = 1 + rng.below(4);
        for side in &mut sides {
            side.permits.clear();
        }
        for _ in 0..40 {
            let held = sides[0].permits.len() as u64;
            let action = rng.below(6);
            let index = rng.below(held.max(1)) as usize;
            let mut answers = Vec::new();
            for side in &mut sides {
                let slot = side.permits.get_mut(index);
                let answer = match (action, slot) {
                    (0 | 1, _) | (_, None) => {
                        match side.store.acquire(&key, limit, lease).await.unwrap() {
                            Acquire::Granted(permit) => {
                                let remaining = permit.remaining();
                                side.permits.push(Some(permit));
                                Answer::Granted { remaining }
                            }
                            Acquire::Denied(denial) => {
                                assert!(denial.retry_after <= lease);
                                side.permits.push(None);
                                Answer::Denied {
                                    limit: denial.limit,
                                }
                            }
                        }
                    }
                    (_, Some(None)) => Answer::Dropped,
                    (2, Some(Some(permit))) => Answer::Renewed(permit.renew().await.unwrap()),
                    (3, Some(slot)) => {
                        Answer::Released(slot.take().unwrap().release().await.unwrap())
                    }
                    (4, Some(slot)) => {
                        let id = slot.take().unwrap().id().to_string();
                        let conn = &mut side.conn;
                        wait_until("a dropped permit is released", || {
                            let mut conn = conn.clone();
                            let (key, id) = (redis_key.clone(), id.clone());
                            async move {
                                let score: Option<f64> = redis::cmd("ZSCORE")
                                    .arg(&key)
                                    .arg(&id)
                                    .query_async(&mut conn)
                                    .await
                                    .unwrap();
                                score.is_none()
                            }
                        })
                        .await;
                        Answer::Dropped
                    }
                    (_, Some(Some(permit))) => {
                        // The lease ends: its score is now in the past.
                        let _: i64 = redis::cmd("ZADD")
                            .arg(&redis_key)
                            .arg("XX")
                            .arg(1)
                            .arg(permit.id())
                            .query_async(&mut side.conn)
                            .await
                            .unwrap();
                        Answer::Expired
                    }
                };
                answers.push(answer);
            }
            log.push(format!("action {action} on {index}: {answers:?}"));
            assert_eq!(answers[0], answers[1], "{}", log.join("\n"));
            let kind = match answers[0] {
                Answer::Granted { .. } => 0,
                Answer::Denied { .. } => 1,
                Answer::Renewed(_) => 2,
                Answer::Released(_) => 3,
                Answer::Dropped => 4,
                Answer::Expired => 5,
            };
            outcomes[kind] += 1;
            let module_count = live_leases(&mut sides[0].conn, &redis_key).await;
            let script_count = live_leases(&mut sides[1].conn, &redis_key).await;
            assert_eq!(module_count, script_count, "{}", log.join("\n"));
            assert!(module_count <= limit, "{}", log.join("\n"));
        }
    }
    println!("granted, denied, renewed, released, dropped, expired: {outcomes:?}");
    assert!(outcomes.iter().all(|&n| n > 3), "{outcomes:?}");
}

/// A task panics while it holds a permit: the permit's drop releases the slot.
#[tokio::test]
async fn a_permit_dropped_in_a_panicking_task_is_released() {
    let server = Server::start(true);
    let store = common::connected(config(&server)).await;
    let mut conn = server.con().await;
    let lease = Duration::from_secs(600);
    let holder = store.clone();
    let task = tokio::spawn(async move {
        let permit = holder.acquire("jobs", 1, lease).await.unwrap().permit();
        assert!(permit.is_some());
        panic!("the job failed while it held its permit");
    });
    assert!(task.await.unwrap_err().is_panic());
    wait_until("the panicking task's permit is released", || {
        let mut conn = conn.clone();
        async move { live_leases(&mut conn, "ratelimit:jobs").await == 0 }
    })
    .await;
    let permit = store.acquire("jobs", 1, lease).await.unwrap().permit();
    assert!(permit.is_some(), "the slot is free again");
    assert_eq!(live_leases(&mut conn, "ratelimit:jobs").await, 1);
}

/// On Tokio's paused clock with the local limiter (Redis is never reachable): a permit that is
/// kept alive is renewed before each lease ends, so it outlives many leases; once dropped, its
/// renewals stop and its slot frees.
#[tokio::test(start_paused = true)]
async fn a_kept_alive_permit_outlives_its_lease() {
    let port = common::closed_port();
    let store = RedisStore::new(Config::new(format!("redis://127.0.0.1:{port}")).breaker(
        BreakerConfig {
            failure_threshold: 1,
            base_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
        },
    ))
    .unwrap();
    let lease = Duration::from_secs(3);
    let mut permit = store
        .acquire("job", 1, lease)
        .await
        .unwrap()
        .permit()
        .unwrap();
    assert_eq!(permit.backend(), Backend::Local);
    let first_expiry = permit.expires_at();
    permit.keep_alive();
    // Ten leases later, the permit is still held: a second holder is refused.
    tokio::time::sleep(10 * lease).await;
    assert!(permit.expires_at() > first_expiry + 8 * lease);
    assert!(!store.acquire("job", 1, lease).await.unwrap().is_granted());
    drop(permit);
    // The keep-alive task releases the slot once it sees the permit dropped.
    let mut second = None;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if let Some(permit) = store.acquire("job", 1, lease).await.unwrap().permit() {
            second = Some(permit);
            break;
        }
    }
    assert!(second.is_some(), "the dropped permit's slot is free");
}

/// Redis is killed while permits are held: under each failure policy, the acquires that follow
/// get that policy's answer, and never an error.
async fn acquire_through_an_outage(policy: FailurePolicy) -> Vec<Acquire> {
    let mut server = Server::start(true);
    let store = common::connected(config(&server).on_failure(policy).breaker(BreakerConfig {
        failure_threshold: 1,
        base_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
    }))
    .await;
    let lease = Duration::from_secs(600);
    // Held through the outage: its lease is in Redis, which the policy cannot see.
    let held = store.acquire("reports", 2, lease).await.unwrap().permit();
    assert_eq!(held.as_ref().map(Permit::backend), Some(Backend::Module));
    server.kill();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(store.acquire("reports", 2, lease).await.unwrap());
    }
    answers
}

#[tokio::test]
async fn local_policy_counts_permits_in_process_during_an_outage() {
    let mut answers = acquire_through_an_outage(FailurePolicy::Local).await;
    let outcomes: Vec<(bool, Backend)> = answers
        .iter()
        .map(|a| match a {
            Acquire::Granted(p) => (true, p.backend()),
            Acquire::Denied(d) => (false, d.backend),
        })
        .collect();
    // Two slots in this process; the one held in Redis is not known here.
    assert_eq!(
        outcomes,
        [
            (true, Backend::Local),
            (true, Backend::Local),
            (false, Backend::Local)
        ]
    );
    // A local permit is released locally: its slot frees for the next.
    let first = answers.remove(0).permit().unwrap();
    assert!(first.release().await.unwrap());
}

#[tokio::test]
async fn allow_policy_grants_permits_that_hold_nothing_during_an_outage() {
    let answers = acquire_through_an_outage(FailurePolicy::Allow).await;
    for answer in answers {
        let permit = answer.permit().expect("granted");
        assert_eq!(permit.backend(), Backend::Allow);
        assert!(!permit.release().await.unwrap(), "nothing was held");
    }
}

#[tokio::test]
async fn deny_policy_refuses_permits_during_an_outage() {
    let answers = acquire_through_an_outage(FailurePolicy::Deny).await;
    for answer in answers {
        let denial = answer.denial().copied().expect("denied");
        assert_eq!((denial.backend, denial.limit), (Backend::Deny, 2));
        // Retry when Redis is next tried, within the breaker's hour.
        assert!(denial.retry_after > Duration::ZERO);
        assert!(denial.retry_after <= Duration::from_secs(3600));
    }
}

/// An ACQUIRE that times out is answered by the failure policy, but Redis may run it once it
/// answers again (here a server stopped with SIGSTOP past the client's deadline, which reads the
/// command when it resumes): a lease nobody holds. The client releases that ID in Redis as soon
/// as Redis answers; it used to hold a slot for the whole lease (an hour here).
#[tokio::test]
async fn a_lease_granted_after_the_client_gave_up_is_released() {
    let server = Server::start(true);
    let store = common::connected(
        Config::new(server.url())
            .on_failure(FailurePolicy::Deny)
            .response_timeout(Duration::from_millis(100)),
    )
    .await;
    let mut con = server.con().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .unwrap();
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .expect("process_id in INFO server")
        .trim()
        .to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let answer = store.acquire("phantom", 1, Duration::from_secs(3600)).await;
    signal("-CONT");
    assert!(
        answer.unwrap().permit().is_none(),
        "Deny answered the timed-out acquire"
    );
    let calls = |stats: &str| {
        stats
            .lines()
            .find(|line| line.starts_with("cmdstat_ratelimit.acquire:"))
            .is_some()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut con)
            .await
            .unwrap();
        let leases: u64 = redis::cmd("ZCARD")
            .arg("ratelimit:phantom")
            .query_async(&mut con)
            .await
            .unwrap();
        if calls(&stats) && leases == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 10 s: ACQUIRE ran: {}, leases held: {leases}",
            calls(&stats)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
