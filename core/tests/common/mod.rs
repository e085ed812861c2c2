//! A fake clock and a fake key store, so that the algorithms run exactly as the module runs
//! them: decode the stored value, decide, encode the update, expire the key by its PXAT.
#![allow(dead_code)]

use ratelimit_core::{decide, Decision, GcraState, Limit, State};

/// One limiter's key in a pretend Redis: the encoded value and its absolute expiry.
pub struct Sim {
    pub limit: Limit,
    /// Set when a test changes `limit` under a live key.
    pub limit_changed: bool,
    pub now_us: u64,
    value: Option<(Vec<u8>, u64)>,
}

impl Sim {
    pub fn new(limit: Limit, now_us: u64) -> Sim {
        Sim {
            limit,
            limit_changed: false,
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
        if self.now_us / 1000 > *expire_at_ms {
            return None;
        }
        Some(State::decode(bytes, Some(*expire_at_ms)).expect("stored value decodes"))
    }

    /// Puts back a value taken with [`Sim::stored`].
    pub fn restore(&mut self, value: Option<(Vec<u8>, u64)>) {
        self.value = value;
    }

    /// The raw stored value and expiry.
    pub fn stored(&self) -> Option<(Vec<u8>, u64)> {
        self.value.clone()
    }

    /// Decides one request now and stores the update unless it is a dry run.
    pub fn check(&mut self, cost: u64, dry_run: bool) -> Decision {
        let state = self.state();
        let (decision, update) =
            decide(&self.limit, state.as_ref(), self.now_us, cost).expect("same algorithm");
        if let (Some(State::Gcra(gcra)), false) = (state, self.limit_changed) {
            // The expiry only guards against values written under another configuration: for
            // the limiter's own values it must change nothing.
            let without_expiry = State::Gcra(GcraState {
                expire_at_ms: None,
                ..gcra
            });
            let again = decide(&self.limit, Some(&without_expiry), self.now_us, cost);
            assert_eq!(
                again,
                Ok((decision, update)),
                "the expiry agrees with the value"
            );
        }
        assert!(decision.remaining <= decision.limit);
        if !decision.allowed || cost == 0 {
            assert_eq!(update, None, "a denied or free request writes nothing");
        }
        if let (Some(update), false) = (update, dry_run) {
            assert!(
                update.expire_at_ms.saturating_mul(1000) > self.now_us,
                "expiry in the future"
            );
            self.value = Some((
                update.state.encode().as_bytes().to_vec(),
                update.expire_at_ms,
            ));
        }
        decision
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
