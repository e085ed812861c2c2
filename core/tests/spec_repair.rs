//! Keys without expiry (after `PERSIST`, `RESTORE key 0` or a hand-written `SET`) never lock
//! anyone out: any check that finds one gives it the expiry its state implies, even when it
//! denies; dry runs and QUOTA answer as if that expiry were there, and write nothing.
mod common;
use common::Op::*;
use common::*;
use ratelimit_core::{decide_all, Algorithm, Change, Limit, Policy, State};

const START: u64 = EPOCH_ALIGNED_US + 123_456;

#[test]
fn a_full_fixed_key_without_expiry_opens_a_window_now() {
    let limit = Limit::new(Algorithm::Fixed, 3, 300, None).unwrap();
    let mut sim = Sim::new(limit, START);
    sim.write(b"5", None);
    #[rustfmt::skip]
    let steps = [
        step(0,   Dry,   1, (0, 0, 300, 300)),
        step(0,   Quota, 1, (0, 0, 300, 300)),
    ];
    run_steps(&mut sim, START, &steps);
    assert_eq!(
        sim.stored(),
        Some((b"5".to_vec(), None)),
        "dry runs and QUOTA write nothing"
    );
    #[rustfmt::skip]
    let steps = [
        step(0,   Check, 1, (0, 0, 300, 300)), // denied, and given the expiry now + 300 ms
        step(299, Check, 1, (0, 0,   1, 1)),
        step(300, Check, 1, (1, 2, 300, 0)),
    ];
    run_steps(&mut sim, START, &steps);
}

#[test]
fn a_gcra_key_without_expiry_gets_its_arrival_time_or_goes() {
    let limit = Limit::new(Algorithm::Gcra, 10, 10_000, None).unwrap();
    // One unit per microsecond: the stored time is now + 5 s.
    let ahead = format!("-{}", 1 + START + 5_000_000);
    let mut sim = Sim::new(limit, START);
    sim.write(ahead.as_bytes(), None);
    let d = sim.check(10, false);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_ms),
        (false, 5, 5_000)
    );
    // The arrival time, rounded up to the millisecond.
    assert_eq!(
        sim.stored().unwrap().1,
        Some((START + 5_000_000).div_ceil(1000))
    );

    // A time in the past holds nothing: a denied request deletes the key.
    let past = format!("-{}", 1 + START - 1_000_000);
    sim.write(past.as_bytes(), None);
    let d = sim.check(11, false);
    assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (false, 10, -1));
    assert_eq!(sim.stored(), None);
}

#[test]
fn a_sliding_key_without_expiry_gets_its_window_or_goes() {
    let limit = Limit::new(Algorithm::Sliding, 10, 10_000, None).unwrap();
    let w0 = EPOCH_ALIGNED_US / 10_000_000;
    let mut sim = Sim::new(limit, EPOCH_ALIGNED_US);
    sim.write(format!("s:{w0}:0:10").as_bytes(), None);
    let d = sim.check(1, false);
    assert_eq!((d.allowed, d.remaining), (false, 0));
    assert_eq!(sim.stored().unwrap().1, Some((w0 + 2) * 10_000));

    sim.write(format!("s:{}:3:3", w0 - 5).as_bytes(), None);
    let d = sim.check(11, false);
    assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (false, 10, -1));
    assert_eq!(sim.stored(), None, "nothing in it counts any more");
}

/// A GCRA value without expiry wraps around its 2^62 range after 2.3 s at 10^15 per
/// millisecond, and then cannot be told from a debt. Whatever it holds, it is read as at most a
/// full bucket spent, and the check gives it the expiry of that reading: the key heals within
/// one tolerance (here a millisecond), never later.
#[test]
fn a_wrapped_gcra_value_without_expiry_heals_within_one_tolerance() {
    let max = 1_000_000_000_000_000;
    let limit = Limit::new(Algorithm::Gcra, max, 1, None).unwrap();
    for stored in [
        1u64,
        1 << 40,
        1 << 61,
        (1 << 62) - 1,
        4_611_686_018_427_387_904,
    ] {
        let mut sim = Sim::new(limit, START);
        // A value no limiter wrote: it may disagree with the expiry it is then given.
        sim.limit_changed = true;
        sim.write(format!("-{stored}").as_bytes(), None);
        let d = sim.check(1, false);
        assert!(d.reset_after_ms <= 2, "{stored}: {d:?}");
        assert!(d.allowed || d.retry_after_ms <= 2, "{stored}: {d:?}");
        match sim.stored() {
            None => {}
            Some((_, expiry)) => {
                let at = expiry.expect("given an expiry");
                assert!(at <= START / 1000 + 2, "{stored}: expires at {at}");
            }
        }
        sim.advance_us(2_000);
        assert!(sim.check(max, false).allowed, "{stored}: healed");
    }
}

/// A denied MCHECK spends nothing, but every key without expiry among its policies gets the
/// repair a denied request would give it alone: also the keys whose own policy admitted it.
#[test]
fn a_denied_mcheck_repairs_every_key_without_expiry() {
    let full = Limit::new(Algorithm::Fixed, 2, 60_000, None).unwrap();
    let roomy = Limit::new(Algorithm::Fixed, 5, 60_000, None).unwrap();
    let gcra = Limit::new(Algorithm::Gcra, 5, 60_000, None).unwrap();
    let over = State::decode(b"5", None).unwrap();
    let under = State::decode(b"1", None).unwrap();
    let spent_long_ago = State::decode(b"-1", None).unwrap();
    let with_expiry = State::decode(b"1", Some(START / 1000 + 1_000)).unwrap();
    let policies = [
        Policy {
            limit: &full,
            state: Some(&over),
            cost: 1,
        },
        Policy {
            limit: &roomy,
            state: Some(&under),
            cost: 1,
        },
        Policy {
            limit: &gcra,
            state: Some(&spent_long_ago),
            cost: 1,
        },
        Policy {
            limit: &roomy,
            state: Some(&with_expiry),
            cost: 1,
        },
    ];
    let all = decide_all(&policies, START, false).unwrap();
    assert!(!all.allowed);
    let window_end = START / 1000 + 60_000;
    let changes: Vec<Change> = all.outcomes.iter().map(|o| o.change).collect();
    assert_eq!(
        changes,
        [
            Change::Expire(window_end),
            Change::Expire(window_end),
            Change::Delete,
            Change::Keep,
        ]
    );
    // Each policy's decision is still the one it gave: the second and third admitted alone.
    let allowed: Vec<bool> = all.outcomes.iter().map(|o| o.decision.allowed).collect();
    assert_eq!(allowed, [false, true, true, true]);
}
