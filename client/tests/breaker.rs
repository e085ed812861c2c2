//! The circuit breaker, on explicit instants: no test sleeps.

use ratelimit_client::breaker::{Breaker, BreakerConfig, BreakerState};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn breaker(failure_threshold: u32, base_ms: u64, max_ms: u64) -> Breaker {
    Breaker::new(BreakerConfig {
        failure_threshold,
        base_backoff: ms(base_ms),
        max_backoff: ms(max_ms),
    })
}

/// The deadline of an open breaker.
fn until(breaker: &Breaker) -> Instant {
    match breaker.state() {
        BreakerState::Open { until } => until,
        other => panic!("expected an open breaker, found {other:?}"),
    }
}

/// Asserts that the breaker opened at `at` for a time in `[backoff / 2, backoff]`.
fn assert_open_for(breaker: &Breaker, at: Instant, backoff: Duration) -> Instant {
    let until = until(breaker);
    let wait = until - at;
    assert!(
        wait >= backoff / 2 && wait <= backoff,
        "open for {wait:?}, expected [{:?}, {backoff:?}]",
        backoff / 2
    );
    until
}

#[test]
fn a_closed_breaker_lets_every_call_through() {
    let breaker = Breaker::default();
    let t0 = Instant::now();
    assert_eq!(breaker.state(), BreakerState::Closed);
    for i in 0..10 {
        assert!(breaker.allow_at(t0 + ms(i)));
        breaker.on_success();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn it_opens_at_the_threshold_of_consecutive_failures() {
    let breaker = breaker(3, 100, 10_000);
    let t0 = Instant::now();
    breaker.on_failure_at(t0);
    breaker.on_failure_at(t0);
    // A success in between starts the count over.
    breaker.on_success();
    breaker.on_failure_at(t0);
    breaker.on_failure_at(t0);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.allow_at(t0));
    breaker.on_failure_at(t0);
    assert_open_for(&breaker, t0, ms(100));
    assert!(!breaker.allow_at(t0));
}

#[test]
fn it_stays_open_until_the_backoff_then_lets_exactly_one_probe_through() {
    let breaker = breaker(1, 100, 10_000);
    let t0 = Instant::now();
    breaker.on_failure_at(t0);
    let until = assert_open_for(&breaker, t0, ms(100));
    assert!(!breaker.allow_at(t0 + ms(1)));
    assert!(!breaker.allow_at(until - Duration::from_nanos(1)));
    // Late failures of calls made before it opened change nothing.
    breaker.on_failure_at(until - Duration::from_nanos(1));
    assert_eq!(breaker.state(), BreakerState::Open { until });

    assert!(breaker.allow_at(until), "the probe");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    for i in 0..10 {
        assert!(!breaker.allow_at(until + ms(i)), "only one probe");
    }
}

#[test]
fn a_successful_probe_closes_it_and_resets_the_backoff() {
    let breaker = breaker(1, 100, 10_000);
    let t0 = Instant::now();
    breaker.on_failure_at(t0);
    let until = until(&breaker);
    assert!(breaker.allow_at(until));
    breaker.on_success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.allow_at(until));
    assert!(breaker.allow_at(until));

    // The next opening starts from the base backoff again.
    let t1 = until + ms(5);
    breaker.on_failure_at(t1);
    assert_open_for(&breaker, t1, ms(100));
}

#[test]
fn a_failed_probe_reopens_it_with_a_doubled_backoff_up_to_the_maximum() {
    let breaker = breaker(1, 100, 1_000);
    let mut now = Instant::now();
    breaker.on_failure_at(now);
    let mut backoff = ms(100);
    for _ in 0..10 {
        let until = assert_open_for(&breaker, now, backoff);
        now = until;
        assert!(breaker.allow_at(now), "the probe");
        now += ms(1);
        breaker.on_failure_at(now);
        backoff = (backoff * 2).min(ms(1_000));
    }
    assert_eq!(backoff, ms(1_000));
}

#[test]
fn the_jitter_spreads_openings_over_the_documented_range() {
    // Many breakers opened at the same instant do not all probe at the same instant.
    let t0 = Instant::now();
    let waits: Vec<Duration> = (0..200)
        .map(|_| {
            let breaker = breaker(1, 1_000, 10_000);
            breaker.on_failure_at(t0);
            assert_open_for(&breaker, t0, ms(1_000)) - t0
        })
        .collect();
    let low = waits.iter().filter(|w| **w < ms(750)).count();
    assert!((40..=160).contains(&low), "{low} of 200 in the lower half");
}

#[test]
fn a_lost_probe_is_retried_after_the_backoff() {
    let breaker = breaker(1, 100, 10_000);
    let t0 = Instant::now();
    breaker.on_failure_at(t0);
    let until = until(&breaker);
    assert!(breaker.allow_at(until), "a probe that never reports back");
    // The backoff has doubled to 200 ms with the opening.
    assert!(!breaker.allow_at(until + ms(199)));
    assert!(breaker.allow_at(until + ms(200)), "a second probe");
    assert!(!breaker.allow_at(until + ms(201)));
    breaker.on_success();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn the_base_backoff_is_never_zero() {
    let breaker = breaker(0, 0, 0);
    let t0 = Instant::now();
    breaker.on_failure_at(t0);
    let until = assert_open_for(&breaker, t0, ms(1));
    assert!(until > t0);
    assert!(!breaker.allow_at(t0));
}

#[test]
fn concurrent_callers_at_the_reopening_get_exactly_one_probe() {
    const THREADS: usize = 8;
    for _ in 0..50 {
        let breaker = Arc::new(breaker(1, 100, 10_000));
        let t0 = Instant::now();
        breaker.on_failure_at(t0);
        let until = until(&breaker);
        let barrier = Arc::new(Barrier::new(THREADS));
        let probes: usize = (0..THREADS)
            .map(|_| {
                let (breaker, barrier) = (Arc::clone(&breaker), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    (0..100).filter(|_| breaker.allow_at(until)).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .sum();
        assert_eq!(probes, 1);
    }
}

#[test]
fn breaker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Breaker>();
}
