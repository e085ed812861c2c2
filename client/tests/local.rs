//! The in-memory limiter: its decisions (tables on a fake clock, and equality with a plain
//! reference store on random sequences), its memory bounds, its atomicity and reset.

use proptest::prelude::*;
use ratelimit_client::{Algorithm, Decision, Error, Limit, LocalLimiter, Outcome};
use ratelimit_core::{decide, Change, State};
use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A day boundary, so that every period divides it and SLIDING's windows start at 0.
const T0_MS: u64 = 19_676 * 86_400_000;

fn limit(algorithm: Algorithm, limit: u64, period_ms: u64, burst: Option<u64>) -> Limit {
    let limit = Limit::new(algorithm, limit, Duration::from_millis(period_ms)).unwrap();
    match burst {
        Some(burst) => limit.with_burst(burst).unwrap(),
        None => limit,
    }
}

/// The instant `now_us` microseconds after the epoch.
fn at(now_us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(now_us)
}

/// The contract's five numbers: `(allowed, limit, remaining, reset_after_ms, retry_after_ms)`.
fn five(d: &Decision) -> (bool, u64, u64, u64, i64) {
    (
        d.is_admitted(),
        d.limit,
        d.remaining,
        d.reset_after_ms(),
        d.outcome.retry_after_ms(),
    )
}

/// `limiter.check_at` at `now_us`.
fn check(
    limiter: &LocalLimiter,
    key: &str,
    limit: &Limit,
    cost: u64,
    dry_run: bool,
    now_us: u64,
) -> Result<Decision, Error> {
    limiter.check_at(key, limit, cost, dry_run, at(now_us))
}

/// Whether `limiter` admits a request at `now_us`.
fn admits(limiter: &LocalLimiter, key: &str, limit: &Limit, dry_run: bool, now_us: u64) -> bool {
    check(limiter, key, limit, 1, dry_run, now_us)
        .unwrap()
        .is_admitted()
}

/// One row: at `t` ms after [`T0_MS`], a request of `cost` (a dry run if `dry`) gets
/// `(allowed, limit, remaining, reset_after_ms, retry_after_ms)`.
type Row = (u64, u64, bool, (bool, u64, u64, u64, i64));

fn run_table(limit: &Limit, rows: &[Row]) {
    let limiter = LocalLimiter::new(100);
    for &(t, cost, dry, expected) in rows {
        let d = check(&limiter, "key", limit, cost, dry, (T0_MS + t) * 1000).unwrap();
        assert_eq!(five(&d), expected, "at {t} ms, cost {cost}, dry run {dry}");
    }
}

#[test]
fn fixed_table() {
    // 3 per 10 s: the window opens at the first request and ends 10 s later.
    run_table(
        &limit(Algorithm::Fixed, 3, 10_000, None),
        &[
            (0, 1, false, (true, 3, 2, 10_000, 0)),
            (1_000, 1, false, (true, 3, 1, 9_000, 0)),
            (2_000, 1, true, (true, 3, 0, 8_000, 0)),
            (2_000, 1, false, (true, 3, 0, 8_000, 0)),
            (2_500, 1, false, (false, 3, 0, 7_500, 7_500)),
            (3_000, 4, false, (false, 3, 0, 7_000, -1)),
            (3_000, 0, false, (true, 3, 0, 7_000, 0)),
            (9_999, 1, false, (false, 3, 0, 1, 1)),
            // The window's end: a new window opens.
            (10_000, 1, false, (true, 3, 2, 10_000, 0)),
            (10_000, 2, true, (true, 3, 0, 10_000, 0)),
            (10_001, 1, false, (true, 3, 1, 9_999, 0)),
            // Long after: the key has expired.
            (60_000, 0, false, (true, 3, 3, 0, 0)),
        ],
    );
}

#[test]
fn sliding_table() {
    // 10 per second; the estimate is previous * (1 - elapsed / period) + current.
    run_table(
        &limit(Algorithm::Sliding, 10, 1_000, None),
        &[
            (0, 5, false, (true, 10, 5, 2_000, 0)),
            (500, 5, false, (true, 10, 0, 1_500, 0)),
            // 11 > 10 until the next window, where 10 * (1 - e) + 1 <= 10 at e = 100 ms.
            (600, 1, false, (false, 10, 0, 1_400, 500)),
            (1_100, 1, false, (true, 10, 0, 1_900, 0)),
            // 10 * (1 - e) + 1 + 1 <= 10 at e = 200 ms.
            (1_100, 1, false, (false, 10, 0, 1_900, 100)),
            (1_200, 1, false, (true, 10, 0, 1_800, 0)),
            // Window 2: 2 * 1/1000 left of window 1, rounded up to 1.
            (2_999, 0, false, (true, 10, 9, 1, 0)),
            (3_000, 0, false, (true, 10, 10, 0, 0)),
            (3_000, 11, false, (false, 10, 10, 0, -1)),
        ],
    );
}

#[test]
fn gcra_table() {
    // 10 per second with a burst of 3: one unit drips back every 100 ms, 300 ms of tolerance.
    run_table(
        &limit(Algorithm::Gcra, 10, 1_000, Some(3)),
        &[
            (0, 1, false, (true, 3, 2, 100, 0)),
            (0, 2, false, (true, 3, 0, 300, 0)),
            (0, 1, false, (false, 3, 0, 300, 100)),
            (50, 1, false, (false, 3, 0, 250, 50)),
            (100, 1, false, (true, 3, 0, 300, 0)),
            (250, 4, false, (false, 3, 1, 150, -1)),
            (250, 1, true, (true, 3, 0, 250, 0)),
            (250, 1, false, (true, 3, 0, 250, 0)),
            (1_000, 0, false, (true, 3, 3, 0, 0)),
        ],
    );
    // 3 per second: T = 333.3 ms, and times round up to the millisecond.
    run_table(
        &limit(Algorithm::Gcra, 3, 1_000, None),
        &[
            (0, 1, false, (true, 3, 2, 334, 0)),
            (0, 3, false, (false, 3, 2, 334, 334)),
            (0, 2, false, (true, 3, 0, 1_000, 0)),
        ],
    );
}

#[test]
fn sub_millisecond_instants_round_like_the_module() {
    let fixed = limit(Algorithm::Fixed, 1, 1_000, None);
    let limiter = LocalLimiter::new(10);
    let t0 = T0_MS * 1000;
    assert!(admits(&limiter, "k", &fixed, false, t0 + 999));
    let denied = check(&limiter, "k", &fixed, 1, false, t0 + 999_999).unwrap();
    assert_eq!(
        denied.outcome,
        Outcome::RetryAfter(Duration::from_millis(1))
    );
    assert!(admits(&limiter, "k", &fixed, false, t0 + 1_000_000));
}

#[test]
fn a_key_of_another_algorithm_is_an_error_until_it_expires() {
    let limiter = LocalLimiter::new(10);
    let fixed = limit(Algorithm::Fixed, 5, 1_000, None);
    let gcra = limit(Algorithm::Gcra, 5, 1_000, None);
    let t0 = T0_MS * 1000;
    check(&limiter, "k", &fixed, 1, false, t0).unwrap();
    let error = check(&limiter, "k", &gcra, 1, false, t0).unwrap_err();
    assert!(error.is_wrong_algorithm() && error.is_data_error() && !error.is_outage());
    assert_eq!(error.to_string(), "the key holds a FIXED limiter, not GCRA");
    assert!(check(&limiter, "k", &gcra, 1, false, t0 + 1_001_000).is_ok());
}

#[test]
fn the_wall_clock_check_spends() {
    let limiter = LocalLimiter::default();
    let hourly = limit(Algorithm::Fixed, 1, 3_600_000, None);
    let peek = limiter.check_dry_run("k", &hourly, 1).unwrap();
    assert!(peek.is_admitted());
    let first = limiter.check("k", &hourly, 1).unwrap();
    assert!(first.is_admitted() && first.enforced);
    let second = limiter.check("k", &hourly, 1).unwrap();
    assert!(!second.allowed());
    assert!(second.retry_after().unwrap() > Duration::from_secs(3_590));
    assert!(limiter
        .check("k", &hourly, u64::MAX)
        .unwrap_err()
        .is_invalid_limit());
}

/// The module's store, written plainly: a map of state and absolute expiry, where an entry
/// whose expiry has passed is absent.
#[derive(Default)]
struct Reference(HashMap<String, (State, u64)>);

impl Reference {
    fn check(
        &mut self,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
        now_us: u64,
    ) -> Result<(bool, u64, u64, u64, i64), String> {
        let burst = (limit.algorithm() == Algorithm::Gcra).then_some(limit.burst());
        let period_ms = limit.period().as_millis() as u64;
        let limit =
            ratelimit_core::Limit::new(limit.algorithm(), limit.limit(), period_ms, burst).unwrap();
        let now_ms = now_us / 1000;
        self.0
            .retain(|_, (_, expire_at_ms)| now_ms <= *expire_at_ms);
        let state = self
            .0
            .get(key)
            .map(|(state, expire_at_ms)| state.with_expiry(*expire_at_ms));
        let outcome = decide(&limit, state.as_ref(), now_us, cost, false).map_err(|wrong| {
            format!(
                "the key holds a {} limiter, not {}",
                wrong.found, wrong.requested
            )
        })?;
        if let (Change::Store(update), false) = (outcome.change, dry_run) {
            self.0
                .insert(key.to_owned(), (update.state, update.expire_at_ms));
        }
        let d = outcome.decision;
        Ok((
            d.allowed,
            d.limit,
            d.remaining,
            d.reset_after_ms,
            d.retry_after_ms,
        ))
    }

    fn reset(&mut self, key: &str, now_us: u64) -> bool {
        let removed = self.0.remove(key);
        removed.is_some_and(|(_, expire_at_ms)| now_us / 1000 <= expire_at_ms)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Check {
        key: usize,
        limit: usize,
        cost: u64,
        dry_run: bool,
    },
    Reset {
        key: usize,
    },
}

fn limits() -> Vec<Limit> {
    vec![
        limit(Algorithm::Fixed, 5, 1_000, None),
        limit(Algorithm::Fixed, 3, 7, None),
        limit(Algorithm::Sliding, 5, 1_000, None),
        limit(Algorithm::Sliding, 7, 3, None),
        limit(Algorithm::Gcra, 5, 1_000, None),
        limit(Algorithm::Gcra, 3, 10, Some(4)),
        limit(Algorithm::Gcra, 7, 1_000, Some(1)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..4usize, 0..7usize, prop_oneof![4 => 0..4u64, 1 => 0..10u64], any::<bool>())
            .prop_map(|(key, limit, cost, dry_run)| Op::Check { key, limit, cost, dry_run }),
        1 => (0..4usize).prop_map(|key| Op::Reset { key }),
    ]
}

proptest! {
    #[test]
    fn it_decides_as_core_with_a_plain_store(
        steps in prop::collection::vec((op(), prop_oneof![0..2_000u64, 0..2_000_000u64]), 1..200),
    ) {
        let limits = limits();
        let local = LocalLimiter::new(1_000);
        let mut reference = Reference::default();
        let mut now_us = T0_MS * 1000 + 123;
        for (op, advance_us) in steps {
            now_us += advance_us;
            match op {
                Op::Check { key, limit, cost, dry_run } => {
                    let key = format!("key{key}");
                    let limit = &limits[limit];
                    let got = check(&local, &key, limit, cost, dry_run, now_us);
                    prop_assert_eq!(
                        got.map(|d| five(&d)).map_err(|e| e.to_string()),
                        reference.check(&key, limit, cost, dry_run, now_us)
                    );
                }
                Op::Reset { key } => {
                    let key = format!("key{key}");
                    prop_assert_eq!(local.reset_at(&key, at(now_us)), reference.reset(&key, now_us));
                }
            }
        }
    }
}

proptest! {
    /// With no expiry, the stored keys are exactly the last `cap` inserted and not reset.
    #[test]
    fn the_cap_evicts_in_insertion_order(
        ops in prop::collection::vec((0..12usize, prop::bool::weighted(0.2)), 1..300),
    ) {
        const CAP: usize = 5;
        let hourly = limit(Algorithm::Fixed, 1, 3_600_000, None);
        let limiter = LocalLimiter::new(CAP);
        let mut model: Vec<usize> = Vec::new();
        let now_us = T0_MS * 1000;
        for (key, reset) in ops {
            let name = format!("key{key}");
            let stored = model.contains(&key);
            if reset {
                prop_assert_eq!(limiter.reset_at(&name, at(now_us)), stored);
                model.retain(|&k| k != key);
            } else {
                // A stored key is spent and denied; an absent one is stored.
                prop_assert_eq!(admits(&limiter, &name, &hourly, false, now_us), !stored);
                if !stored {
                    if model.len() == CAP {
                        model.remove(0);
                    }
                    model.push(key);
                }
            }
            prop_assert_eq!(limiter.len(), model.len());
        }
        for key in 0..12 {
            let spent = !admits(&limiter, &format!("key{key}"), &hourly, true, now_us);
            prop_assert_eq!(spent, model.contains(&key), "key{}", key);
        }
    }
}

#[test]
fn expired_entries_are_evicted() {
    let limiter = LocalLimiter::new(400);
    let second = limit(Algorithm::Fixed, 10, 1_000, None);
    let t0 = T0_MS * 1000;
    for i in 0..100 {
        check(&limiter, &format!("old{i}"), &second, 1, false, t0).unwrap();
    }
    assert_eq!(limiter.len(), 100);
    // Inserts sweep the expired entries away, with no lookup of theirs.
    for i in 0..100 {
        check(
            &limiter,
            &format!("new{i}"),
            &second,
            1,
            false,
            t0 + 2_000_000,
        )
        .unwrap();
    }
    assert_eq!(limiter.len(), 100);
}

#[test]
fn the_cap_holds_and_the_oldest_insert_goes_first() {
    let limiter = LocalLimiter::new(10);
    let hourly = limit(Algorithm::Fixed, 1, 3_600_000, None);
    let t0 = T0_MS * 1000;
    let spent = |key: &str| !admits(&limiter, key, &hourly, true, t0);
    for i in 0..10 {
        check(&limiter, &format!("k{i}"), &hourly, 1, false, t0).unwrap();
    }
    assert_eq!(limiter.len(), 10);
    // Writing to k0 again does not make it younger: the order is by insertion.
    check(&limiter, "k0", &hourly, 0, false, t0).unwrap();
    check(&limiter, "k10", &hourly, 1, false, t0).unwrap();
    assert_eq!(limiter.len(), 10);
    assert!(!spent("k0"), "k0 was evicted");
    assert!((1..=10).all(|i| spent(&format!("k{i}"))));
    for i in 11..1_000 {
        check(&limiter, &format!("k{i}"), &hourly, 1, false, t0).unwrap();
        assert!(limiter.len() <= 10);
    }
    assert!((990..1_000).all(|i| spent(&format!("k{i}"))));
}

#[test]
fn a_key_created_again_after_expiry_is_young_again() {
    let limiter = LocalLimiter::new(2);
    let second = limit(Algorithm::Fixed, 1, 1_000, None);
    let hourly = limit(Algorithm::Fixed, 1, 3_600_000, None);
    let t0 = T0_MS * 1000;
    check(&limiter, "short", &second, 1, false, t0).unwrap();
    check(&limiter, "long", &hourly, 1, false, t0).unwrap();
    let t1 = t0 + 2_000_000;
    check(&limiter, "short", &second, 1, false, t1).unwrap();
    check(&limiter, "third", &hourly, 1, false, t1).unwrap();
    assert!(admits(&limiter, "long", &hourly, true, t1));
    assert!(!admits(&limiter, "short", &second, true, t1));
}

#[test]
fn a_sharded_limiter_holds_its_cap() {
    let limiter = LocalLimiter::new(5_000);
    let hourly = limit(Algorithm::Gcra, 1, 3_600_000, None);
    let t0 = T0_MS * 1000;
    for i in 0..50_000 {
        check(&limiter, &i.to_string(), &hourly, 1, false, t0).unwrap();
        if i % 1_000 == 0 {
            assert!(limiter.len() <= 5_000);
        }
    }
    assert_eq!(limiter.len(), 5_000);
}

#[test]
fn concurrent_checks_on_one_key_admit_exactly_the_limit() {
    const THREADS: usize = 8;
    for algorithm in [Algorithm::Fixed, Algorithm::Sliding, Algorithm::Gcra] {
        let limiter = Arc::new(LocalLimiter::default());
        let hundred = limit(algorithm, 100, 3_600_000, None);
        let barrier = Arc::new(Barrier::new(THREADS));
        let now_us = T0_MS * 1000 + 1;
        let admitted: usize = (0..THREADS)
            .map(|_| {
                let (limiter, barrier) = (Arc::clone(&limiter), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    (0..1_000)
                        .filter(|_| admits(&limiter, "hot", &hundred, false, now_us))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .sum();
        assert_eq!(admitted, 100, "{algorithm}");
    }
}

#[test]
fn reset_forgets_live_state_only() {
    let limiter = LocalLimiter::new(10);
    let second = limit(Algorithm::Fixed, 1, 1_000, None);
    let t0 = T0_MS * 1000;
    assert!(!limiter.reset_at("k", at(t0)), "nothing to reset");
    check(&limiter, "k", &second, 1, false, t0).unwrap();
    assert!(!admits(&limiter, "k", &second, false, t0));
    assert!(limiter.reset_at("k", at(t0)));
    assert!(limiter.is_empty());
    assert!(admits(&limiter, "k", &second, false, t0));
    assert!(
        !limiter.reset_at("k", at(t0 + 1_001_000)),
        "expired state is no state"
    );
    assert!(!limiter.reset("k"));
}

#[test]
fn local_limiter_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LocalLimiter>();
}
