//! A circuit breaker, so that the client stops sending commands to a Redis that does not answer.
//!
//! - **Closed**: every call goes through. `failure_threshold` consecutive failures open it.
//! - **Open** until a deadline: no call goes through; the caller applies its failure policy.
//! - **HalfOpen**: once the deadline has passed, exactly one caller is let through, the probe.
//!   Its success closes the breaker; its failure opens it again for twice as long, up to
//!   `max_backoff`. A probe that never reports back (its caller was dropped) does not wedge
//!   the breaker: after the current backoff another probe is let through.
//!
//! In a [`crate::RedisStore`], requests only ask [`Breaker::is_closed`]; the probe is the
//! store's own, sent in the background on a fresh connection, so no request waits on a Redis
//! that is down.
//!
//! Each opening lasts the current backoff with **equal jitter**: a uniformly random time in
//! `[backoff / 2, backoff]`, so it is never zero and never longer than `max_backoff`, and
//! clients that lost Redis together do not all probe it at the same instant.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest backoff a breaker uses, whatever its configuration: one day.
pub const BACKOFF_CAP: Duration = Duration::from_secs(86_400);

/// When a [`Breaker`] opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker; 0 counts as 1.
    pub failure_threshold: u32,
    /// The first backoff; at least 1 ms is used.
    pub base_backoff: Duration,
    /// The longest backoff, reached by doubling; at least `base_backoff` and at most
    /// [`BACKOFF_CAP`] is used.
    pub max_backoff: Duration,
}

impl Default for BreakerConfig {
    /// Opens at the first failure, for 100 ms at first, doubling up to 1 s: Redis is probed at
    /// least once a second while it is out, so the store is back on it within a second of its
    /// return.
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 1,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Where a [`Breaker`] is, as [`Breaker::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until `until`; the first caller after it is the probe.
    Open {
        /// When the next probe is let through.
        until: Instant,
    },
    /// A probe is out; other calls are refused until it reports or its backoff elapses.
    HalfOpen,
}

/// A circuit breaker shared by all the calls to one Redis. It is `Send + Sync`.
#[derive(Debug)]
pub struct Breaker {
    failure_threshold: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    /// Closed with no failure counted: the common case, answered without the lock.
    healthy: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// The backoff of the next opening, before jitter.
    backoff: Duration,
    /// The state of the SplitMix64 generator that draws the jitter.
    random: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { next_probe: Instant },
}

impl Breaker {
    /// A closed breaker with `config`, its values brought into range as [`BreakerConfig`] says.
    pub fn new(config: BreakerConfig) -> Breaker {
        let base_backoff = config
            .base_backoff
            .clamp(Duration::from_millis(1), BACKOFF_CAP);
        Breaker {
            failure_threshold: config.failure_threshold.max(1),
            base_backoff,
            max_backoff: config.max_backoff.clamp(base_backoff, BACKOFF_CAP),
            healthy: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                phase: Phase::Closed { failures: 0 },
                backoff: base_backoff,
                random: seed(),
            }),
        }
    }

    /// Whether a call may go to Redis at `now`: always when closed, never while open, and for
    /// exactly one caller (the probe) once the opening has passed or a probe has gone unanswered
    /// for the current backoff.
    pub fn allow_at(&self, now: Instant) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return true;
        }
        let mut inner = self.lock();
        let backoff = inner.backoff;
        match inner.phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } | Phase::HalfOpen { next_probe: until } if now >= until => {
                inner.phase = Phase::HalfOpen {
                    next_probe: now.checked_add(backoff).unwrap_or(now),
                };
                true
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => false,
        }
    }

    /// Whether the breaker is closed: calls go to Redis. Unlike [`Breaker::allow`], this never
    /// takes the probe's turn.
    pub fn is_closed(&self) -> bool {
        self.healthy.load(Ordering::Acquire) || matches!(self.lock().phase, Phase::Closed { .. })
    }

    /// [`Breaker::allow_at`] now.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// Reports a call that Redis answered, in any state (a late answer while open counts too):
    /// the breaker closes and its backoff starts over.
    pub fn on_success(&self) {
        if self.healthy.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        inner.phase = Phase::Closed { failures: 0 };
        inner.backoff = self.base_backoff;
        self.healthy.store(true, Ordering::Release);
    }

    /// Reports a call that failed at `now`. A closed breaker opens at the threshold, and a
    /// half-open one (a failed probe) at once, each for the current backoff with jitter; the
    /// next backoff is twice as long, up to the maximum. An open breaker ignores late failures.
    pub fn on_failure_at(&self, now: Instant) {
        let mut inner = self.lock();
        self.healthy.store(false, Ordering::Release);
        match inner.phase {
            Phase::Closed { failures } if failures + 1 < self.failure_threshold => {
                inner.phase = Phase::Closed {
                    failures: failures + 1,
                };
            }
            Phase::Closed { .. } | Phase::HalfOpen { .. } => {
                let wait = inner.jittered();
                inner.phase = Phase::Open {
                    until: now.checked_add(wait).unwrap_or(now),
                };
                inner.backoff = inner.backoff.saturating_mul(2).min(self.max_backoff);
            }
            Phase::Open { .. } => {}
        }
    }

    /// [`Breaker::on_failure_at`] now.
    pub fn on_failure(&self) {
        self.on_failure_at(Instant::now())
    }

    /// Where the breaker is.
    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } => BreakerState::Open { until },
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held, so a poisoned one is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Breaker {
    /// A breaker with [`BreakerConfig::default`].
    fn default() -> Breaker {
        Breaker::new(BreakerConfig::default())
    }
}

impl Inner {
    /// The current backoff with equal jitter: uniform in `[backoff / 2, backoff]`.
    fn jittered(&mut self) -> Duration {
        let half = self.backoff / 2;
        let span = (self.backoff - half).as_nanos() as u64;
        half + Duration::from_nanos(self.next_random() % (span + 1))
    }

    /// SplitMix64: tiny, and good enough to spread retries.
    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A seed that differs between processes (the time) and between breakers of one process (a
/// counter), so that their jitter does not line up.
fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let local = 0u8;
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32) ^ (&local as *const u8 as u64)
}
