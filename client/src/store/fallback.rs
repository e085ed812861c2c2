//! [`Fallback`]: what answers while Redis is out, and the record of each outage.

use crate::breaker::{Breaker, BreakerState};
use crate::command::{Command, Reply};
use crate::config::{Config, FailurePolicy};
use crate::decision::Backend;
use crate::error::Error;
use crate::local::LocalLimiter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The failure policy, the circuit breaker that decides when Redis is out, and the in-process
/// limiter of [`FailurePolicy::Local`].
///
/// An outage starts at the first call that fails with an outage error ([`Error::is_outage`]):
/// it is logged once, as a warning, and the breaker opens. Then every check is answered here
/// and counted, without touching Redis, while the store's probe ([`super::recovery`]) tries a
/// fresh connection at each of the breaker's deadlines. The first call that Redis answers ends
/// the outage, with one line at `INFO`: how long it lasted and how many decisions the policy
/// answered.
pub(crate) struct Fallback {
    policy: FailurePolicy,
    breaker: Breaker,
    /// The breaker's first backoff: a closed-policy denial's wait before the breaker opens.
    base_backoff: Duration,
    /// Replaced whole by `clear`.
    local: RwLock<Arc<LocalLimiter>>,
    local_max_entries: usize,
    /// When the current outage started; `None` while Redis answers.
    outage_since: Mutex<Option<Instant>>,
    /// Whether an outage is on: the fast path of every call that Redis answered.
    in_outage: AtomicBool,
    /// Decisions answered by the policy in the current outage.
    answered: AtomicU64,
    /// Whether Redis ever answered, to word the first warning.
    ever_answered: AtomicBool,
    /// Whether a probe task is running.
    probing: AtomicBool,
    /// Where Redis is, with passwords masked, for logs.
    target: String,
}

impl Fallback {
    pub(crate) fn new(config: &Config, target: String) -> Fallback {
        Fallback {
            policy: config.on_failure,
            breaker: Breaker::new(config.breaker),
            base_backoff: config.breaker.base_backoff,
            local: RwLock::new(Arc::new(LocalLimiter::new(config.local_max_entries))),
            local_max_entries: config.local_max_entries,
            outage_since: Mutex::new(None),
            in_outage: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            ever_answered: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            target,
        }
    }

    /// Whether calls go to Redis: no outage is on, or not enough failures yet to open the
    /// breaker.
    pub(crate) fn redis_in_service(&self) -> bool {
        self.breaker.is_closed()
    }

    /// Where the breaker is.
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Redis answered a call: the breaker closes, and an outage in progress ends.
    pub(crate) fn redis_answered(&self) {
        self.breaker.on_success();
        if !self.ever_answered.load(Ordering::Relaxed) {
            self.ever_answered.store(true, Ordering::Relaxed);
        }
        if !self.in_outage.load(Ordering::Acquire) {
            return;
        }
        let Some(since) = self
            .outage_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        self.in_outage.store(false, Ordering::Release);
        let outage = since.elapsed();
        let decisions = self.answered.swap(0, Ordering::AcqRel);
        info!(
            url = %self.target,
            outage_ms = u64::try_from(outage.as_millis()).unwrap_or(u64::MAX),
            decisions,
            policy = %self.policy,
            "Redis is back after {:.1} s; the failure policy answered {decisions} decisions",
            outage.as_secs_f64()
        );
    }

    /// A call to Redis failed with the outage error `error`. The first failure of an outage is
    /// logged; the breaker counts it. Answers whether a probe should start now: the breaker is
    /// open and no probe is running.
    pub(crate) fn redis_failed(&self, error: &Error) -> bool {
        self.breaker.on_failure();
        let started = {
            let mut since = self
                .outage_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let first = since.is_none();
            if first {
                *since = Some(Instant::now());
            }
            first
        };
        if started {
            self.in_outage.store(true, Ordering::Release);
            let when = if self.ever_answered.load(Ordering::Relaxed) {
                ""
            } else {
                " at start"
            };
            warn!(
                url = %self.target,
                error = %error,
                policy = %self.policy,
                "Redis cannot be reached{when}: the failure policy '{}' answers until it is back",
                self.policy
            );
        }
        !self.breaker.is_closed() && !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The failure policy's answer to a check or a quota: [`Backend::Local`],
    /// [`Backend::Allow`] or [`Backend::Deny`]. Counted for the outage's log line.
    ///
    /// Fails only with [`FailurePolicy::Local`], when the in-process limiter holds another
    /// algorithm's state for the key.
    pub(crate) fn answer(&self, command: &Command<'_>) -> Result<(Reply, Backend), Error> {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if command.limit().is_none() {
            return Err(Error::CircuitOpen);
        }
        let (reply, backend) = match self.policy {
            FailurePolicy::Local => (self.local().run(command)?, Backend::Local),
            // Nothing is counted while failing open: the limiter is reported full.
            FailurePolicy::Allow => (
                policy_reply(command, |limit| ratelimit_core::Decision {
                    allowed: true,
                    limit: limit.capacity(),
                    remaining: limit.capacity(),
                    reset_after_ms: 0,
                    retry_after_ms: 0,
                }),
                Backend::Allow,
            ),
            // Retry when Redis is next probed.
            FailurePolicy::Deny => {
                let wait_ms = ceil_ms(self.until_next_probe()).max(1);
                (
                    policy_reply(command, |limit| ratelimit_core::Decision {
                        allowed: false,
                        limit: limit.capacity(),
                        remaining: 0,
                        reset_after_ms: wait_ms,
                        retry_after_ms: i64::try_from(wait_ms).unwrap_or(i64::MAX),
                    }),
                    Backend::Deny,
                )
            }
        };
        Ok((reply, backend))
    }

    /// Runs `command` on the in-process limiter, whatever the policy and whether Redis is out:
    /// to settle units that it counted.
    pub(crate) fn run_locally(&self, command: &Command<'_>) -> Result<Reply, Error> {
        self.local().run(command)
    }

    /// Deletes `key`'s state in the in-process limiter; answers whether it had one.
    pub(crate) fn forget(&self, key: &str) -> bool {
        self.local().reset(key)
    }

    /// Empties the in-process limiter.
    pub(crate) fn clear(&self) {
        *self.local.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(LocalLimiter::new(self.local_max_entries));
    }

    /// How long until the next probe; `None` once the breaker is closed, when no probe is
    /// needed.
    pub(crate) fn next_probe(&self) -> Option<Duration> {
        match self.breaker.state() {
            BreakerState::Closed => None,
            BreakerState::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            // A probe that never reported: the breaker lets another one through after the
            // backoff.
            BreakerState::HalfOpen => Some(self.base_backoff),
        }
    }

    /// Takes the probe's turn, if it is due.
    pub(crate) fn take_probe_turn(&self) -> bool {
        self.breaker.allow()
    }

    /// The probe failed: the breaker opens for longer.
    pub(crate) fn probe_failed(&self, error: &Error) {
        self.breaker.on_failure();
        debug!(url = %self.target, error = %error, "Redis is still out");
    }

    /// The probe task ends.
    pub(crate) fn probe_ended(&self) {
        self.probing.store(false, Ordering::Release);
    }

    fn local(&self) -> Arc<LocalLimiter> {
        Arc::clone(&self.local.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn until_next_probe(&self) -> Duration {
        match self.breaker.state() {
            BreakerState::Open { until } => until.saturating_duration_since(Instant::now()),
            BreakerState::Closed | BreakerState::HalfOpen => self.base_backoff,
        }
    }
}

/// The answer of the failure policy `Allow` or `Deny` to `command`, each limit answered
/// `decision(limit)`. Nothing is counted, so a refund gives nothing back, and every window is
/// 0.
fn policy_reply(
    command: &Command<'_>,
    decision: impl Fn(&ratelimit_core::Limit) -> ratelimit_core::Decision,
) -> Reply {
    match *command {
        Command::Check { limit, .. } | Command::Quota { limit, .. } => {
            Reply::Decision(decision(limit))
        }
        // Answered by the caller, which needs no limit to refuse it.
        Command::Reset { .. } => Reply::Reset(false),
        Command::Charge { limit, .. } => Reply::Charged(decision(limit), 0),
        Command::MultiCheck { charges, .. } => {
            let decisions: Vec<_> = charges.iter().map(|c| (decision(c.limit), 0)).collect();
            let allowed = decisions.iter().all(|(d, _)| d.allowed);
            let retry_after_ms = decisions
                .iter()
                .map(|(d, _)| d.retry_after_ms)
                .max()
                .unwrap_or(0);
            Reply::MultiCheck(crate::command::MultiReply {
                allowed,
                retry_after_ms,
                decisions,
            })
        }
        Command::Refund { limit, .. } => Reply::Refunded(0, decision(limit)),
    }
}

/// `duration` in milliseconds, rounded up, as the contract rounds times.
fn ceil_ms(duration: Duration) -> u64 {
    let ms = duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;
    use crate::limit::Limit;

    #[test]
    fn rounds_up_to_milliseconds() {
        assert_eq!(ceil_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ceil_ms(Duration::from_millis(7)), 7);
        assert_eq!(ceil_ms(Duration::ZERO), 0);
    }

    fn fallback(policy: FailurePolicy) -> Fallback {
        let config = Config::default().on_failure(policy).breaker(BreakerConfig {
            failure_threshold: 1,
            base_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        });
        Fallback::new(&config, "redis://test".into())
    }

    #[test]
    fn an_outage_opens_the_breaker_once_and_redis_ends_it() {
        let fallback = fallback(FailurePolicy::Deny);
        assert!(fallback.redis_in_service());
        let refused =
            Error::Redis(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
        assert!(
            fallback.redis_failed(&refused),
            "the first failure starts a probe"
        );
        assert!(!fallback.redis_in_service());
        assert!(!fallback.redis_failed(&refused), "one probe at a time");
        let limit = Limit::fixed(5, Duration::from_secs(1)).unwrap();
        let check = Command::Check {
            key: "k",
            limit: limit.core(),
            cost: 1,
            dry_run: false,
        };
        let (reply, backend) = fallback.answer(&check).unwrap();
        let decision = reply.decision().unwrap();
        assert_eq!(
            (backend, decision.allowed, decision.limit),
            (Backend::Deny, false, 5)
        );
        // Retry when the breaker lets the next probe through, within its minute.
        assert!((1..=60_000).contains(&decision.retry_after_ms));
        assert_eq!(fallback.answered.load(Ordering::Relaxed), 1);
        assert!(fallback.next_probe().is_some());

        fallback.redis_answered();
        assert!(fallback.redis_in_service() && fallback.next_probe().is_none());
        assert_eq!(fallback.answered.load(Ordering::Relaxed), 0);
        fallback.probe_ended();
        assert!(
            fallback.redis_failed(&refused),
            "a new outage starts a new probe"
        );
    }

    #[test]
    fn each_policy_answers() {
        let limit = Limit::gcra(10, Duration::from_secs(1))
            .unwrap()
            .with_burst(3)
            .unwrap();
        let check = Command::Check {
            key: "k",
            limit: limit.core(),
            cost: 1,
            dry_run: false,
        };
        let (reply, backend) = fallback(FailurePolicy::Allow).answer(&check).unwrap();
        let decision = reply.decision().unwrap();
        assert_eq!(
            (backend, decision.allowed, decision.remaining),
            (Backend::Allow, true, 3)
        );
        let local = fallback(FailurePolicy::Local);
        let (reply, backend) = local.answer(&check).unwrap();
        assert_eq!(
            (backend, reply.decision().unwrap().remaining),
            (Backend::Local, 2)
        );
        assert!(local.forget("k"));
        local.clear();
        assert!(!local.forget("k"));
    }
}
