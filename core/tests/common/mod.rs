//! A fake clock and a fake key store, so that the algorithms run exactly as the module runs
//! them: decode the stored value, decide, encode the update, expire the key by its PXAT.
#![allow(dead_code)]

use ratelimit_core::{decide, quota, refund, Change, Decision, GcraState, Limit, Outcome, State};

/// One limiter's key in a pretend Redis: the encoded value and its absolute expiry (`None`
/// for a key without expiry).
pub struct Sim {
    pub limit: Limit,
    /// Set when a test changes `limit` under a live key.
    pub limit_changed: bool,
    /// Set once a forced spend may have put the key in debt: a GCRA value then reads
    /// differently without its expiry (see `most_ahead` in core/src/gcra.rs).
    pub in_debt: bool,
    pub now_us: u64,
    value: Option<(Vec<u8>, Option<u64>)>,
}

impl Sim {
    pub fn new(limit: Limit, now_us: u64) -> Sim {
        Sim {
            limit,
            limit_changed: false,
            in_debt: false,
            now_us,
            value: None,
        }
    }

    /// Moves the fake clock forward.
    pub fn advance_us(&mut self, us: u64) {
        self.now_us += us;
    }

    /// The decoded state, as the module would read it now. Redis drops a key once the clock is
    /// past its expiry.
    pub fn state(&self) -> Option<State> {
        let (bytes, expire_at_ms) = self.value.as_ref()?;
        if expire_at_ms.is_some_and(|at| self.now_us / 1000 > at) {
            return None;
        }
        Some(State::decode(bytes, *expire_at_ms).expect("stored value decodes"))
    }

    /// Puts back a value taken with [`Sim::stored`].
    pub fn restore(&mut self, value: Option<(Vec<u8>, Option<u64>)>) {
        self.value = value;
    }

    /// The raw stored value and expiry.
    pub fn stored(&self) -> Option<(Vec<u8>, Option<u64>)> {
        self.value.clone()
    }

    /// Writes a value by hand, as `SET` (and `PEXPIREAT` when `expire_at_ms` is given) would.
    pub fn write(&mut self, value: &[u8], expire_at_ms: Option<u64>) {
        self.value = Some((value.to_vec(), expire_at_ms));
    }

    /// Makes `change` to the key, as the module does.
    pub fn apply(&mut self, change: Change) {
        let now_ms = self.now_us / 1000;
        match change {
            Change::Keep => {}
            Change::Store(update) => {
                assert!(update.expire_at_ms > now_ms, "expiry in the future");
                assert_eq!(
                    State::decode(update.state.encode().as_bytes(), Some(update.expire_at_ms)),
                    Ok(update.state),
                    "the update reads back as itself"
                );
                self.value = Some((
                    update.state.encode().as_bytes().to_vec(),
                    Some(update.expire_at_ms),
                ));
            }
            Change::Expire(at_ms) => {
                assert!(at_ms > now_ms, "expiry in the future");
                let (value, expiry) = self.value.as_mut().expect("a key to expire");
                assert_eq!(*expiry, None, "only a key without expiry is given one");
                let _ = value;
                *expiry = Some(at_ms);
            }
            Change::Delete => self.value = None,
        }
    }

    /// Decides one request now and makes its change unless it is a dry run.
    pub fn check(&mut self, cost: u64, dry_run: bool) -> Decision {
        self.decide(cost, false, dry_run).decision
    }

    /// Decides one request with `FORCE` now and makes its change.
    pub fn force(&mut self, cost: u64) -> Decision {
        self.decide(cost, true, false).decision
    }

    /// `RATELIMIT.QUOTA` now: never writes.
    pub fn quota(&self, cost: u64) -> Decision {
        let state = self.state();
        let d = quota(&self.limit, state.as_ref(), self.now_us, cost).expect("same algorithm");
        assert!(d.remaining <= d.limit);
        d
    }

    /// `RATELIMIT.REFUND` now: returns the units given back and the standing, and makes the
    /// change.
    pub fn refund(&mut self, amount: u64, window: Option<u64>) -> (u64, Decision) {
        let state = self.state();
        let r = refund(&self.limit, state.as_ref(), self.now_us, amount, window)
            .expect("same algorithm");
        assert!(r.refunded <= amount);
        assert!(r.standing.remaining <= r.standing.limit);
        self.apply(r.change);
        assert_eq!(
            self.quota(1),
            r.standing,
            "the standing is QUOTA's afterwards"
        );
        (r.refunded, r.standing)
    }

    /// Decides one request now, with `force` when asked, and makes its change unless it is a
    /// dry run.
    pub fn decide(&mut self, cost: u64, force: bool, dry_run: bool) -> Outcome {
        let state = self.state();
        let outcome =
            decide(&self.limit, state.as_ref(), self.now_us, cost, force).expect("same algorithm");
        let Outcome {
            decision, change, ..
        } = outcome;
        if force {
            self.in_debt = true;
        }
        if let (Some(State::Gcra(gcra)), false) = (state, self.limit_changed || self.in_debt) {
            // The expiry only guards against values written under another configuration: for
            // the limiter's own values it must change nothing.
            let without_expiry = State::Gcra(GcraState {
                expire_at_ms: None,
                ..gcra
            });
            if gcra.expire_at_ms.is_some() {
                let again =
                    decide(&self.limit, Some(&without_expiry), self.now_us, cost, force).unwrap();
                assert_eq!(again.decision, decision, "the expiry agrees with the value");
            }
        }
        assert!(decision.remaining <= decision.limit);
        let has_expiry = state.as_ref().is_none_or(State::has_expiry);
        match change {
            Change::Store(_) => assert!(cost > 0 && (decision.allowed || force)),
            Change::Expire(_) | Change::Delete => {
                assert!(!has_expiry, "only a key without expiry is repaired")
            }
            Change::Keep => assert!(
                has_expiry && (cost == 0 || !(decision.allowed || force)),
                "a key without expiry is repaired, and a spent cost is stored"
            ),
        }
        if !dry_run {
            self.apply(change);
        }
        outcome
    }
}

/// One row of a specification table: at `at_ms` after the start (or `at_us` when finer),
/// a request of `cost` (a dry run when `dry`) gets `(allowed, remaining, reset_after_ms,
/// retry_after_ms)`.
pub struct Row {
    pub at_us: u64,
    pub cost: u64,
    pub dry: bool,
    pub expect: (bool, u64, u64, i64),
}

/// A row at whole milliseconds.
pub const fn row(at_ms: u64, cost: u64, expect: (u8, u64, u64, i64)) -> Row {
    Row {
        at_us: at_ms * 1000,
        cost,
        dry: false,
        expect: (expect.0 == 1, expect.1, expect.2, expect.3),
    }
}

/// A dry-run row at whole milliseconds.
pub const fn dry(at_ms: u64, cost: u64, expect: (u8, u64, u64, i64)) -> Row {
    Row {
        dry: true,
        ..row(at_ms, cost, expect)
    }
}

/// A row at microseconds.
pub const fn row_us(at_us: u64, cost: u64, expect: (u8, u64, u64, i64)) -> Row {
    Row {
        at_us,
        ..row(0, cost, expect)
    }
}

/// Runs a table from `start_us`; every row's expectation must hold, and `limit` must be the
/// capacity of every reply.
pub fn run_table(limit: Limit, start_us: u64, capacity: u64, rows: &[Row]) {
    let mut sim = Sim::new(limit, start_us);
    for (i, r) in rows.iter().enumerate() {
        sim.now_us = start_us + r.at_us;
        let d = sim.check(r.cost, r.dry);
        let got = (d.allowed, d.remaining, d.reset_after_ms, d.retry_after_ms);
        assert_eq!(
            got,
            r.expect,
            "row {} (t={}us cost={} dry={}): got (allowed, remaining, reset, retry) = {got:?}",
            i + 1,
            r.at_us,
            r.cost,
            r.dry
        );
        assert_eq!(d.limit, capacity, "row {}", i + 1);
    }
}

/// A start instant aligned to every period used in the tables (a multiple of 3650 days).
pub const EPOCH_ALIGNED_US: u64 = 5 * 315_360_000_000_000;

/// What a row of a mixed table does.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// `RATELIMIT.CHECK ... COST n`.
    Check,
    /// `RATELIMIT.CHECK ... COST n DRYRUN`.
    Dry,
    /// `RATELIMIT.CHECK ... COST n FORCE`.
    Force,
    /// `RATELIMIT.QUOTA ... COST n`.
    Quota,
    /// `RATELIMIT.REFUND ... COST n [WINDOW w]`: the first expected number is `refunded`.
    Refund(Option<u64>),
    /// The window a check of cost 0 would report (`WITHWINDOW`): the first expected number
    /// is the window, the others are not compared.
    Window,
}

/// One row of a mixed table: at `at_ms`, `op` with `n` units gets `(first, remaining,
/// reset_after_ms, retry_after_ms)`, where `first` is `allowed` (0 or 1), or `refunded` for a
/// refund, or the window.
pub struct Step {
    pub at_ms: u64,
    pub op: Op,
    pub n: u64,
    pub expect: (u64, u64, u64, i64),
}

pub const fn step(at_ms: u64, op: Op, n: u64, expect: (u64, u64, u64, i64)) -> Step {
    Step {
        at_ms,
        op,
        n,
        expect,
    }
}

/// Runs a mixed table on `sim` from `start_us`.
pub fn run_steps(sim: &mut Sim, start_us: u64, steps: &[Step]) {
    for (i, s) in steps.iter().enumerate() {
        sim.now_us = start_us + s.at_ms * 1000;
        let got = match s.op {
            Op::Check | Op::Dry | Op::Force => {
                let d = sim
                    .decide(s.n, matches!(s.op, Op::Force), matches!(s.op, Op::Dry))
                    .decision;
                (
                    u64::from(d.allowed),
                    d.remaining,
                    d.reset_after_ms,
                    d.retry_after_ms,
                )
            }
            Op::Quota => {
                let d = sim.quota(s.n);
                (
                    u64::from(d.allowed),
                    d.remaining,
                    d.reset_after_ms,
                    d.retry_after_ms,
                )
            }
            Op::Refund(window) => {
                let (refunded, d) = sim.refund(s.n, window);
                (refunded, d.remaining, d.reset_after_ms, d.retry_after_ms)
            }
            Op::Window => {
                let window = sim.decide(0, false, true).window;
                (window, s.expect.1, s.expect.2, s.expect.3)
            }
        };
        assert_eq!(
            got,
            s.expect,
            "row {} (t={}ms {:?} {}): got (first, remaining, reset, retry) = {got:?}",
            i + 1,
            s.at_ms,
            s.op,
            s.n
        );
    }
}
