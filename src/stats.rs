//! The module's counters, reported by `INFO ratelimit`.
//!
//! What counts where (the README's "Operating the module" documents the same):
//! - A `RATELIMIT.CHECK` answered with a decision counts once in `checks` and once in
//!   `checks_<algorithm>`, and then in exactly one of `allowed`, `denied` (the request was
//!   decided for real) or `dry_runs` (`DRYRUN`: nothing was spent or refused). So
//!   `checks = allowed + denied + dry_runs`, and the per-algorithm `allowed_<a>` and `denied_<a>`
//!   add up to `allowed` and `denied`.
//! - A `RATELIMIT.QUOTA` answered with a decision counts only in `quota_calls`: it asks, it is no
//!   request.
//! - A `RATELIMIT.RESET` answered with 0 or 1 counts in `resets`.
//! - Every error reply of the three commands counts in `errors`, and nowhere else. Errors the
//!   server answers before the module runs (`NOPERM`, `OOM`, unknown command) are not the
//!   module's: they are in the server's own `errorstats`.
//!
//! The counters are `AtomicU64`s bumped by a relaxed load and store, not `fetch_add`: module
//! commands only run while holding the server's global lock, so there is one writer at a time and
//! the lock orders them. A relaxed load and store compile to the plain `mov`/`add`/`mov` a
//! `Cell<u64>` would, with no `lock` prefix, and without the `unsafe impl Sync` a `static Cell`
//! would need; a reader (INFO, a crash report) never sees a torn value. No lock, no allocation.

use ratelimit_core::Algorithm;
use redis_module::{InfoContext, RedisResult};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One counter with a single writer at a time (see the module documentation).
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    #[inline]
    fn increment(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    fn clear(&self) {
        self.0.store(0, Relaxed);
    }
}

/// The counters of one algorithm.
struct AlgorithmCounters {
    checks: Counter,
    allowed: Counter,
    denied: Counter,
}

impl AlgorithmCounters {
    const fn new() -> AlgorithmCounters {
        AlgorithmCounters {
            checks: Counter::new(),
            allowed: Counter::new(),
            denied: Counter::new(),
        }
    }
}

struct Counters {
    checks: Counter,
    allowed: Counter,
    denied: Counter,
    dry_runs: Counter,
    mchecks: Counter,
    mcheck_allowed: Counter,
    mcheck_denied: Counter,
    mcheck_dry_runs: Counter,
    refunds: Counter,
    refunded_units: Counter,
    acquired: Counter,
    acquire_denied: Counter,
    releases: Counter,
    released: Counter,
    quota_calls: Counter,
    resets: Counter,
    errors: Counter,
    /// Indexed by [`index`].
    by_algorithm: [AlgorithmCounters; 3],
}

static COUNTERS: Counters = Counters {
    checks: Counter::new(),
    allowed: Counter::new(),
    denied: Counter::new(),
    dry_runs: Counter::new(),
    mchecks: Counter::new(),
    mcheck_allowed: Counter::new(),
    mcheck_denied: Counter::new(),
    mcheck_dry_runs: Counter::new(),
    refunds: Counter::new(),
    refunded_units: Counter::new(),
    acquired: Counter::new(),
    acquire_denied: Counter::new(),
    releases: Counter::new(),
    released: Counter::new(),
    quota_calls: Counter::new(),
    resets: Counter::new(),
    errors: Counter::new(),
    by_algorithm: [
        AlgorithmCounters::new(),
        AlgorithmCounters::new(),
        AlgorithmCounters::new(),
    ],
};

/// The algorithms in the order of [`Counters::by_algorithm`] and of the INFO fields.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::Fixed, Algorithm::Sliding, Algorithm::Gcra];

#[inline]
fn index(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Fixed => 0,
        Algorithm::Sliding => 1,
        Algorithm::Gcra => 2,
    }
}

/// Counts a `RATELIMIT.CHECK` answered with a decision.
#[inline]
pub(crate) fn record_check(algorithm: Algorithm, dry_run: bool, allowed: bool) {
    let per_algorithm = &COUNTERS.by_algorithm[index(algorithm)];
    COUNTERS.checks.increment();
    per_algorithm.checks.increment();
    if dry_run {
        COUNTERS.dry_runs.increment();
    } else if allowed {
        COUNTERS.allowed.increment();
        per_algorithm.allowed.increment();
    } else {
        COUNTERS.denied.increment();
        per_algorithm.denied.increment();
    }
}

/// Counts a `RATELIMIT.QUOTA` answered with a decision.
#[inline]
pub(crate) fn record_quota() {
    COUNTERS.quota_calls.increment();
}

/// Counts a `RATELIMIT.MCHECK` answered with a decision.
#[inline]
pub(crate) fn record_mcheck(dry_run: bool, allowed: bool) {
    COUNTERS.mchecks.increment();
    if dry_run {
        COUNTERS.mcheck_dry_runs.increment();
    } else if allowed {
        COUNTERS.mcheck_allowed.increment();
    } else {
        COUNTERS.mcheck_denied.increment();
    }
}

/// Counts a `RATELIMIT.REFUND` answered, and the units it gave back.
#[inline]
pub(crate) fn record_refund(refunded: u64) {
    COUNTERS.refunds.increment();
    COUNTERS.refunded_units.0.store(
        COUNTERS.refunded_units.get().wrapping_add(refunded),
        Relaxed,
    );
}

/// Counts a `RATELIMIT.ACQUIRE` answered.
#[inline]
pub(crate) fn record_acquire(granted: bool) {
    if granted {
        COUNTERS.acquired.increment();
    } else {
        COUNTERS.acquire_denied.increment();
    }
}

/// Counts a `RATELIMIT.RELEASE` answered.
#[inline]
pub(crate) fn record_release(released: bool) {
    COUNTERS.releases.increment();
    if released {
        COUNTERS.released.increment();
    }
}

/// Counts a `RATELIMIT.RESET` answered with 0 or 1.
#[inline]
pub(crate) fn record_reset() {
    COUNTERS.resets.increment();
}

/// Counts an error reply of any of the commands.
#[inline]
pub(crate) fn record_error() {
    COUNTERS.errors.increment();
}

/// Sets every counter to 0. Called at load: a module unloaded and loaded again may find its
/// statics as it left them, if the shared object stayed mapped.
pub(crate) fn clear() {
    let c = &COUNTERS;
    for counter in [
        &c.checks,
        &c.allowed,
        &c.denied,
        &c.dry_runs,
        &c.mchecks,
        &c.mcheck_allowed,
        &c.mcheck_denied,
        &c.mcheck_dry_runs,
        &c.refunds,
        &c.refunded_units,
        &c.acquired,
        &c.acquire_denied,
        &c.releases,
        &c.released,
        &c.quota_calls,
        &c.resets,
        &c.errors,
    ] {
        counter.clear();
    }
    for a in &c.by_algorithm {
        a.checks.clear();
        a.allowed.clear();
        a.denied.clear();
    }
}

/// The counters of one algorithm at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgorithmSnapshot {
    /// `RATELIMIT.CHECK` decisions with this algorithm, dry runs included.
    pub checks: u64,
    /// Those that admitted a request (dry runs excluded).
    pub allowed: u64,
    /// Those that refused a request (dry runs excluded).
    pub denied: u64,
}

/// Every counter at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `RATELIMIT.CHECK` calls answered with a decision: `allowed + denied + dry_runs`.
    pub checks: u64,
    /// Checks that admitted a request (and spent its cost), dry runs excluded.
    pub allowed: u64,
    /// Checks that refused a request, dry runs excluded.
    pub denied: u64,
    /// Checks with `DRYRUN`, whatever their outcome.
    pub dry_runs: u64,
    /// `RATELIMIT.QUOTA` calls answered with a decision.
    pub quota_calls: u64,
    /// `RATELIMIT.RESET` calls answered with 0 or 1.
    pub resets: u64,
    /// Error replies of every command.
    pub errors: u64,
    /// `RATELIMIT.MCHECK` calls answered with a decision:
    /// `mcheck_allowed + mcheck_denied + mcheck_dry_runs`.
    pub mchecks: u64,
    /// MCHECKs that admitted a request under every policy, dry runs excluded.
    pub mcheck_allowed: u64,
    /// MCHECKs refused by some policy, dry runs excluded.
    pub mcheck_denied: u64,
    /// MCHECKs with `DRYRUN`.
    pub mcheck_dry_runs: u64,
    /// `RATELIMIT.REFUND` calls answered.
    pub refunds: u64,
    /// The units those refunds gave back.
    pub refunded_units: u64,
    /// `RATELIMIT.ACQUIRE` calls that granted or renewed a lease.
    pub acquired: u64,
    /// `RATELIMIT.ACQUIRE` calls denied: every slot taken.
    pub acquire_denied: u64,
    /// `RATELIMIT.RELEASE` calls answered.
    pub releases: u64,
    /// Those that released a live lease.
    pub released: u64,
    /// Per algorithm: FIXED, SLIDING, GCRA.
    pub by_algorithm: [AlgorithmSnapshot; 3],
}

/// The number of fields of [`Snapshot::fields`].
pub const FIELD_COUNT: usize = 26;

impl Snapshot {
    /// Reads every counter.
    pub(crate) fn take() -> Snapshot {
        let c = &COUNTERS;
        let by_algorithm = |i: usize| AlgorithmSnapshot {
            checks: c.by_algorithm[i].checks.get(),
            allowed: c.by_algorithm[i].allowed.get(),
            denied: c.by_algorithm[i].denied.get(),
        };
        Snapshot {
            checks: c.checks.get(),
            allowed: c.allowed.get(),
            denied: c.denied.get(),
            dry_runs: c.dry_runs.get(),
            quota_calls: c.quota_calls.get(),
            resets: c.resets.get(),
            errors: c.errors.get(),
            mchecks: c.mchecks.get(),
            mcheck_allowed: c.mcheck_allowed.get(),
            mcheck_denied: c.mcheck_denied.get(),
            mcheck_dry_runs: c.mcheck_dry_runs.get(),
            refunds: c.refunds.get(),
            refunded_units: c.refunded_units.get(),
            acquired: c.acquired.get(),
            acquire_denied: c.acquire_denied.get(),
            releases: c.releases.get(),
            released: c.released.get(),
            by_algorithm: [by_algorithm(0), by_algorithm(1), by_algorithm(2)],
        }
    }

    /// The INFO fields in the order they are reported, named without the `ratelimit_` prefix
    /// that the server adds to every field of a module: `checks`, ..., `errors`, then
    /// `checks_fixed`, `allowed_fixed`, `denied_fixed`, and the same for `sliding` and `gcra`,
    /// then `mchecks`, ..., `refunded_units`, `acquired`, ..., `released`.
    /// These names are a stable interface: scrapers and dashboards depend on them.
    pub fn fields(&self) -> [(&'static str, u64); FIELD_COUNT] {
        const PER_ALGORITHM: [[&str; 3]; 3] = [
            ["checks_fixed", "allowed_fixed", "denied_fixed"],
            ["checks_sliding", "allowed_sliding", "denied_sliding"],
            ["checks_gcra", "allowed_gcra", "denied_gcra"],
        ];
        let mut out = [("", 0); FIELD_COUNT];
        let global = [
            ("checks", self.checks),
            ("allowed", self.allowed),
            ("denied", self.denied),
            ("dry_runs", self.dry_runs),
            ("quota_calls", self.quota_calls),
            ("resets", self.resets),
            ("errors", self.errors),
        ];
        let per_algorithm = ALGORITHMS.iter().flat_map(|&algorithm| {
            let i = index(algorithm);
            let [checks, allowed, denied] = PER_ALGORITHM[i];
            let a = self.by_algorithm[i];
            [(checks, a.checks), (allowed, a.allowed), (denied, a.denied)]
        });
        let version_2 = [
            ("mchecks", self.mchecks),
            ("mcheck_allowed", self.mcheck_allowed),
            ("mcheck_denied", self.mcheck_denied),
            ("mcheck_dry_runs", self.mcheck_dry_runs),
            ("refunds", self.refunds),
            ("refunded_units", self.refunded_units),
            ("acquired", self.acquired),
            ("acquire_denied", self.acquire_denied),
            ("releases", self.releases),
            ("released", self.released),
        ];
        let fields = global.into_iter().chain(per_algorithm).chain(version_2);
        for (slot, field) in out.iter_mut().zip(fields) {
            *slot = field;
        }
        out
    }
}

/// Adds the module's INFO sections: `# ratelimit`, the counters (see [`Snapshot::fields`]), and
/// `# ratelimit_config`, the fields `default_algorithm` (`fixed`, `sliding` or `gcra`) and
/// `top_keys` (the size of `RATELIMIT.TOP`'s summary). The
/// server prefixes every field with `ratelimit_` and leaves out the sections not asked for.
/// Fails only on a duplicate field name, which the unit tests rule out.
pub(crate) fn report(
    ctx: &InfoContext,
    default_algorithm: &str,
    top_keys: usize,
) -> RedisResult<()> {
    let mut counters = ctx.builder().add_section("");
    for (name, value) in Snapshot::take().fields() {
        counters = counters.field(name, value)?;
    }
    counters
        .build_section()?
        .add_section("config")
        .field("default_algorithm", default_algorithm)?
        .field("top_keys", top_keys.to_string())?
        .build_section()?
        .build_info()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test that touches the process-wide counters.
    #[test]
    fn every_call_counts_in_its_own_fields() {
        clear();
        assert_eq!(Snapshot::take(), Snapshot::default());

        for _ in 0..5 {
            record_check(Algorithm::Fixed, false, true);
        }
        for _ in 0..3 {
            record_check(Algorithm::Gcra, false, false);
        }
        record_check(Algorithm::Sliding, true, true);
        record_check(Algorithm::Sliding, true, false);
        record_check(Algorithm::Sliding, false, true);
        record_quota();
        record_quota();
        record_reset();
        for _ in 0..4 {
            record_error();
        }
        record_mcheck(false, true);
        record_mcheck(false, false);
        record_mcheck(false, false);
        record_mcheck(true, true);
        record_refund(3);
        record_refund(0);
        record_acquire(true);
        record_acquire(false);
        record_acquire(true);
        record_release(true);
        record_release(false);

        let s = Snapshot::take();
        let expected = Snapshot {
            checks: 11,
            allowed: 6,
            denied: 3,
            dry_runs: 2,
            quota_calls: 2,
            resets: 1,
            errors: 4,
            mchecks: 4,
            mcheck_allowed: 1,
            mcheck_denied: 2,
            mcheck_dry_runs: 1,
            refunds: 2,
            refunded_units: 3,
            acquired: 2,
            acquire_denied: 1,
            releases: 2,
            released: 1,
            by_algorithm: [
                AlgorithmSnapshot {
                    checks: 5,
                    allowed: 5,
                    denied: 0,
                },
                AlgorithmSnapshot {
                    checks: 3,
                    allowed: 1,
                    denied: 0,
                },
                AlgorithmSnapshot {
                    checks: 3,
                    allowed: 0,
                    denied: 3,
                },
            ],
        };
        assert_eq!(s, expected);
        assert_eq!(s.checks, s.allowed + s.denied + s.dry_runs);
        assert_eq!(
            s.mchecks,
            s.mcheck_allowed + s.mcheck_denied + s.mcheck_dry_runs
        );

        clear();
        assert_eq!(Snapshot::take(), Snapshot::default());
    }

    #[test]
    fn fields_have_stable_unique_names() {
        let s = Snapshot {
            checks: 1,
            allowed: 2,
            denied: 3,
            dry_runs: 4,
            quota_calls: 5,
            resets: 6,
            errors: 7,
            mchecks: 17,
            mcheck_allowed: 18,
            mcheck_denied: 19,
            mcheck_dry_runs: 20,
            refunds: 21,
            refunded_units: 22,
            acquired: 23,
            acquire_denied: 24,
            releases: 25,
            released: 26,
            by_algorithm: [
                AlgorithmSnapshot {
                    checks: 8,
                    allowed: 9,
                    denied: 10,
                },
                AlgorithmSnapshot {
                    checks: 11,
                    allowed: 12,
                    denied: 13,
                },
                AlgorithmSnapshot {
                    checks: 14,
                    allowed: 15,
                    denied: 16,
                },
            ],
        };
        let expected = [
            ("checks", 1),
            ("allowed", 2),
            ("denied", 3),
            ("dry_runs", 4),
            ("quota_calls", 5),
            ("resets", 6),
            ("errors", 7),
            ("checks_fixed", 8),
            ("allowed_fixed", 9),
            ("denied_fixed", 10),
            ("checks_sliding", 11),
            ("allowed_sliding", 12),
            ("denied_sliding", 13),
            ("checks_gcra", 14),
            ("allowed_gcra", 15),
            ("denied_gcra", 16),
            ("mchecks", 17),
            ("mcheck_allowed", 18),
            ("mcheck_denied", 19),
            ("mcheck_dry_runs", 20),
            ("refunds", 21),
            ("refunded_units", 22),
            ("acquired", 23),
            ("acquire_denied", 24),
            ("releases", 25),
            ("released", 26),
        ];
        assert_eq!(s.fields(), expected);
        for (name, _) in expected {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }
}
