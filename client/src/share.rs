//! Local shares of a global limit, for hot keys: units spent in Redis `batch` at a time and
//! handed out in process.
//!
//! A [`Limit`](crate::Limit) given a local batch ([`Limit::with_local_batch`](crate::Limit::with_local_batch))
//! makes [`RedisStore::check`](crate::RedisStore::check) spend up to `batch` units at once in
//! Redis (`RATELIMIT.CHECK ... COST batch WITHWINDOW`, or the units that remain when fewer do)
//! and hand them out in process, one check at a time, without a round trip. Units a process
//! holds but does not use go back to the window they were spent in (`RATELIMIT.REFUND ...
//! WINDOW w`) when the hold time passes, and when the store is dropped.
//!
//! This file holds the share of one key as plain state on an explicit clock, so that its rules
//! are tested without Redis or time passing; `store/share.rs` runs it against Redis.
//!
//! # Invariants
//! - **Never more admissions than the global limit.** Units are spent in Redis before they are
//!   handed out, so all processes together admit at most what Redis admitted.
//! - **Units stay in their window.** A unit is handed out only before its window ends (FIXED
//!   and SLIDING), so the requests a window admits are those it spent. A unit left over when
//!   its window ends is lost: a process denies early by at most `batch - 1` units per window
//!   (fewer when its units go back on time).
//! - **Bounded without Redis.** While Redis is out, a process can use only what it holds.

#[cfg(test)]
use crate::decision::Backend;
use crate::decision::{Decision, Outcome};
use quanta::Instant;
use std::time::Duration;

/// The default time a process holds units before it gives the unused ones back.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(100);

/// Units spent in Redis and not handed out yet, and what to answer with them.
///
/// Its instants are quanta's, read from the CPU's counter as the in-process limiter's are: on
/// a virtual machine the system's clock can take 100 ns to read, as long as the rest of a check
/// from the share.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    /// Units held: spent in Redis, not handed out.
    held: u64,
    /// The window they were spent in, as `WITHWINDOW` names it.
    window: u64,
    /// Handed out only before this instant: the hold time, or the window's end if sooner.
    usable_until: Instant,
    /// When their window ends; `None` when the algorithm has no windows (GCRA).
    window_ends: Option<Instant>,
    /// The decision Redis gave the batch: its limit, its remaining units, its backend.
    granted: Option<Decision>,
    /// A denial from Redis, repeated without a round trip until it can change.
    denied: Option<(Decision, Instant)>,
}

/// Units to give back to Redis: `units` spent in `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leftover {
    pub(crate) units: u64,
    pub(crate) window: u64,
}

impl Default for Share {
    fn default() -> Share {
        Share::new()
    }
}

impl Share {
    /// A share that holds nothing.
    pub(crate) fn new() -> Share {
        Share {
            held: 0,
            window: 0,
            usable_until: Instant::now(),
            window_ends: None,
            granted: None,
            denied: None,
        }
    }

    /// Units held now.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Hands out `cost` units at `now` if the share holds them and they are still usable: the
    /// admission, with `remaining` the units Redis had left after the batch plus those still
    /// held. Otherwise, while a denial from Redis still stands, that denial with its wait
    /// shortened by the time that passed. `None` when Redis must be asked.
    pub(crate) fn take(&mut self, cost: u64, now: Instant) -> Option<Decision> {
        if let Some(granted) = self.granted {
            if now < self.usable_until && self.held >= cost {
                self.held -= cost;
                return Some(Decision {
                    outcome: Outcome::Admitted,
                    remaining: granted.remaining.saturating_add(self.held),
                    reset_after: self.window_ends.map_or(granted.reset_after, |end| {
                        end.saturating_duration_since(now)
                    }),
                    ..granted
                });
            }
        }
        match self.denied {
            Some((denial, until)) if now < until && self.held < cost => {
                let wait = until.saturating_duration_since(now);
                Some(Decision {
                    outcome: match denial.outcome {
                        Outcome::RetryAfter(_) => Outcome::RetryAfter(wait),
                        other => other,
                    },
                    reset_after: denial.reset_after.saturating_sub(
                        denial
                            .outcome
                            .retry_after()
                            .unwrap_or_default()
                            .saturating_sub(wait),
                    ),
                    ..denial
                })
            }
            _ => None,
        }
    }

    /// Takes the units held, to give back to their window: `None` when none are held, or when
    /// their window has ended at `now` (a refund could not credit it; the units are lost).
    pub(crate) fn leftover(&mut self, now: Instant) -> Option<Leftover> {
        let units = std::mem::take(&mut self.held);
        let ended = self.window_ends.is_some_and(|end| now >= end);
        (units > 0 && !ended).then_some(Leftover {
            units,
            window: self.window,
        })
    }

    /// Whether the share holds units that it may no longer hand out at `now` (the hold time
    /// passed) but that can still go back to their window.
    pub(crate) fn is_stale(&self, now: Instant) -> bool {
        self.held > 0 && now >= self.usable_until
    }

    /// Holds `units` that Redis granted at `now` in `window`, with `decision` the reply to the
    /// batch. They are usable for `hold`, or until `until_window_end` when sooner.
    pub(crate) fn hold(
        &mut self,
        units: u64,
        window: u64,
        decision: Decision,
        now: Instant,
        hold: Duration,
        until_window_end: Option<Duration>,
    ) {
        let window_ends = until_window_end.map(|d| now + d);
        let held_until = now + hold;
        self.held = units;
        self.window = window;
        self.window_ends = window_ends;
        self.usable_until = window_ends.map_or(held_until, |end| end.min(held_until));
        self.granted = Some(decision);
        self.denied = None;
    }

    /// Remembers a denial from Redis at `now`, to repeat it until its wait has passed (or, for
    /// a request that can never fit, for `hold`).
    pub(crate) fn deny(&mut self, denial: Decision, now: Instant, hold: Duration) {
        let wait = match denial.outcome {
            Outcome::RetryAfter(wait) => wait,
            Outcome::CannotFit => hold,
            Outcome::Admitted => return,
        };
        self.denied = Some((denial, now + wait));
    }

    /// Keeps the units held usable until their window ends, ignoring the hold time: while Redis
    /// is out they cannot go back, and they are this process's whole allowance.
    /// Without windows (GCRA), they stay usable for another `hold` from `now`.
    pub(crate) fn keep_through_outage(&mut self, now: Instant, hold: Duration) {
        let until = self.window_ends.unwrap_or(now + hold);
        self.usable_until = self.usable_until.max(until);
    }

    /// Holds again units that [`Share::leftover`] took but that could not go back (Redis is
    /// out), usable until their window ends.
    pub(crate) fn restore(&mut self, leftover: Leftover, now: Instant, hold: Duration) {
        self.held = self.held.saturating_add(leftover.units);
        self.window = leftover.window;
        self.keep_through_outage(now, hold);
    }

    /// Takes back `units` handed out by [`Share::take`] for a request that another limit then
    /// denied: they stay this process's, usable as before.
    pub(crate) fn put_back(&mut self, units: u64) {
        self.held = self.held.saturating_add(units);
    }

    /// Whether a denial from Redis still stands at `now`.
    pub(crate) fn is_denying(&self, now: Instant) -> bool {
        self.denied.is_some_and(|(_, until)| now < until)
    }

    /// The backend that granted the units held.
    #[cfg(test)]
    fn backend(&self) -> Option<Backend> {
        self.granted.map(|d| d.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(remaining: u64, reset_ms: u64) -> Decision {
        Decision {
            outcome: Outcome::Admitted,
            limit: 1000,
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            backend: Backend::Module,
            enforced: true,
        }
    }

    fn denied(retry_ms: u64, reset_ms: u64) -> Decision {
        Decision {
            outcome: Outcome::RetryAfter(Duration::from_millis(retry_ms)),
            remaining: 0,
            ..granted(0, reset_ms)
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_empty_share_asks_redis() {
        let mut share = Share::new();
        assert_eq!(share.take(1, Instant::now()), None);
        assert_eq!(share.leftover(Instant::now()), None);
    }

    #[test]
    fn units_are_handed_out_until_none_is_left() {
        let t = Instant::now();
        let mut share = Share::new();
        share.hold(3, 7, granted(500, 800), t, 100 * MS, Some(800 * MS));
        let first = share.take(2, t + MS).unwrap();
        assert_eq!(first.outcome, Outcome::Admitted);
        assert_eq!(first.remaining, 501, "Redis's 500 and the 1 still held");
        assert_eq!(first.reset_after, 799 * MS, "until the window ends");
        assert_eq!(
            share.take(2, t + MS),
            None,
            "1 held, 2 asked: Redis decides"
        );
        assert_eq!(share.take(1, t + MS).unwrap().remaining, 500);
        assert_eq!(share.take(1, t + MS), None);
        assert_eq!(share.backend(), Some(Backend::Module));
    }

    #[test]
    fn units_are_not_handed_out_after_the_hold_time_and_go_back_to_their_window() {
        let t = Instant::now();
        let mut share = Share::new();
        share.hold(10, 42, granted(0, 800), t, 100 * MS, Some(800 * MS));
        assert!(!share.is_stale(t + 99 * MS));
        assert!(share.take(1, t + 99 * MS).is_some());
        assert!(share.is_stale(t + 100 * MS));
        assert_eq!(share.take(1, t + 100 * MS), None);
        assert_eq!(
            share.leftover(t + 100 * MS),
            Some(Leftover {
                units: 9,
                window: 42
            })
        );
        assert_eq!(share.held(), 0);
        assert_eq!(share.leftover(t + 100 * MS), None, "given back once");
    }

    #[test]
    fn units_are_never_handed_out_after_their_window_ends_and_are_then_lost() {
        let t = Instant::now();
        let mut share = Share::new();
        // The window ends in 30 ms, before the hold time.
        share.hold(10, 1, granted(0, 30), t, 100 * MS, Some(30 * MS));
        assert!(share.take(1, t + 29 * MS).is_some());
        assert_eq!(share.take(1, t + 30 * MS), None);
        assert_eq!(
            share.leftover(t + 30 * MS),
            None,
            "a refund cannot credit it"
        );
        assert_eq!(share.held(), 0);
    }

    #[test]
    fn without_windows_only_the_hold_time_bounds_a_share() {
        let t = Instant::now();
        let mut share = Share::new();
        share.hold(5, 0, granted(0, 10), t, 100 * MS, None);
        let d = share.take(1, t + 50 * MS).unwrap();
        assert_eq!(d.reset_after, 10 * MS, "GCRA's reset from Redis");
        assert_eq!(share.take(1, t + 100 * MS), None);
        assert_eq!(
            share.leftover(t + 1000 * MS),
            Some(Leftover {
                units: 4,
                window: 0
            })
        );
    }

    #[test]
    fn a_denial_is_repeated_until_its_wait_passes() {
        let t = Instant::now();
        let mut share = Share::new();
        share.deny(denied(250, 400), t, 100 * MS);
        let again = share.take(1, t + 100 * MS).unwrap();
        assert_eq!(again.outcome, Outcome::RetryAfter(150 * MS));
        assert_eq!(again.reset_after, 300 * MS);
        assert_eq!(share.take(1, t + 250 * MS), None, "then Redis is asked");
        assert!(!share.is_denying(t + 250 * MS));
    }

    #[test]
    fn a_request_that_can_never_fit_is_denied_for_the_hold_time() {
        let t = Instant::now();
        let mut share = Share::new();
        let never = Decision {
            outcome: Outcome::CannotFit,
            ..denied(0, 0)
        };
        share.deny(never, t, 100 * MS);
        assert_eq!(
            share.take(5, t + 99 * MS).unwrap().outcome,
            Outcome::CannotFit
        );
        assert_eq!(share.take(5, t + 100 * MS), None);
    }

    #[test]
    fn new_units_end_a_denial() {
        let t = Instant::now();
        let mut share = Share::new();
        share.deny(denied(500, 500), t, 100 * MS);
        share.hold(2, 3, granted(0, 500), t, 100 * MS, Some(500 * MS));
        assert_eq!(share.take(1, t).unwrap().outcome, Outcome::Admitted);
    }

    #[test]
    fn an_outage_keeps_units_usable_until_their_window_ends() {
        let t = Instant::now();
        let mut share = Share::new();
        share.hold(10, 1, granted(0, 800), t, 100 * MS, Some(800 * MS));
        share.keep_through_outage(t, 100 * MS);
        assert!(share.take(1, t + 500 * MS).is_some());
        assert_eq!(share.take(1, t + 800 * MS), None);
    }

    #[test]
    fn units_put_back_are_handed_out_again() {
        let t = Instant::now();
        let mut share = Share::new();
        share.hold(1, 9, granted(0, 800), t, 100 * MS, Some(800 * MS));
        assert!(share.take(1, t).is_some());
        assert_eq!(share.take(1, t), None);
        share.put_back(1);
        assert!(share.take(1, t + 50 * MS).is_some());
    }

    #[test]
    fn units_that_could_not_go_back_are_held_again() {
        let t = Instant::now();
        let mut share = Share::new();
        share.hold(10, 4, granted(0, 800), t, 100 * MS, Some(800 * MS));
        let leftover = share.leftover(t + 200 * MS).unwrap();
        assert_eq!(share.take(1, t + 200 * MS), None);
        share.restore(leftover, t + 200 * MS, 100 * MS);
        assert_eq!(share.take(10, t + 700 * MS).unwrap().remaining, 0);
        // Without windows, for another hold time.
        share.hold(3, 0, granted(0, 5), t, 100 * MS, None);
        let leftover = share.leftover(t + 150 * MS).unwrap();
        share.restore(leftover, t + 150 * MS, 100 * MS);
        assert!(share.take(1, t + 249 * MS).is_some());
        assert_eq!(share.take(1, t + 250 * MS), None);
    }
}
