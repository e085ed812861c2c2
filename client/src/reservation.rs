//! Token budgets: a [`Reservation`] of an estimate, settled at the real cost once it is known.

use crate::decision::{Decision, Quota};
use crate::error::Error;
use crate::limit::Limit;
use crate::multi::Hold;
use crate::store::RedisStore;
use std::fmt;
use tracing::{debug, warn};

/// The answer to [`RedisStore::reserve`]: the estimate is held, or the request is denied and
/// holds nothing.
#[derive(Debug)]
#[must_use = "dropping a held reservation gives it back at once"]
pub enum Reserved {
    /// Admitted: the estimate is spent, and the reservation settles the real cost.
    Held(Reservation),
    /// Denied: nothing is spent. The decision says when to retry.
    Denied(Decision),
}

/// An estimate of units spent ahead of work whose real cost is known only afterwards, from
/// [`RedisStore::reserve`].
///
/// Settle it with the real cost ([`Reservation::settle`]): the unused part goes back to the
/// window it was spent in, and an excess is charged (with `FORCE`: it was already used, so it
/// cannot be refused; the limiter goes into debt and denies later requests until time pays it
/// back). Over any window, the units spent are then the real costs: never more than the limit
/// plus the forced excess.
///
/// `settle` takes the reservation by value, so it settles at most once: a double refund is
/// impossible. **Dropping it unsettled gives back the whole estimate**, in a task spawned on the
/// current Tokio runtime (outside a runtime, nothing is given back, with a warning): a request
/// that failed before doing its work costs nothing.
#[must_use = "dropping a reservation gives it back at once: settle it with the real cost"]
pub struct Reservation {
    /// `None` once settled.
    held: Option<Held>,
    decision: Decision,
    units: u64,
}

struct Held {
    store: RedisStore,
    redis_key: String,
    /// The key as logs show it.
    masked: String,
    limit: Limit,
    hold: Hold,
}

/// What settling a reservation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Units given back (0 when the window they were spent in has ended, or nothing was used
    /// less than reserved).
    pub refunded: u64,
    /// Units charged beyond the reservation.
    pub charged: u64,
    /// The standing afterwards, when a call was made: units left and time to full capacity.
    pub quota: Option<Quota>,
}

impl Reservation {
    pub(crate) fn new(
        store: RedisStore,
        redis_key: String,
        masked: String,
        limit: Limit,
        hold: Hold,
        decision: Decision,
    ) -> Reservation {
        Reservation {
            units: hold.units,
            held: Some(Held {
                store,
                redis_key,
                masked,
                limit,
                hold,
            }),
            decision,
        }
    }

    /// The decision that admitted the estimate: the units left after it, and who answered.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The units reserved.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Settles the reservation at the real cost `actual`: below the reservation, the
    /// difference goes back to the window it was spent in (nothing, once that window has
    /// ended: units spent in a window are never credited to a later one); above it, the
    /// excess is charged with `FORCE`.
    ///
    /// See [`RedisStore::settle`] for the failure policy. Fails when `actual` is above 10^15
    /// or Redis refuses the call for this key; the reservation is settled either way (nothing
    /// is given back on drop after a failed settle).
    pub async fn settle(mut self, actual: u64) -> Result<Settlement, Error> {
        let Some(held) = self.held.take() else {
            return Ok(Settlement {
                refunded: 0,
                charged: 0,
                quota: None,
            });
        };
        held.settle(actual).await
    }

    /// Gives the whole reservation back now: [`Reservation::settle`] at 0, awaited rather than
    /// spawned as on drop.
    pub async fn cancel(self) -> Result<Settlement, Error> {
        self.settle(0).await
    }
}

impl Held {
    async fn settle(&self, actual: u64) -> Result<Settlement, Error> {
        self.store
            .settle_hold(
                &self.redis_key,
                &self.masked,
                &self.limit,
                self.hold,
                actual,
            )
            .await
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        if held.hold.units == 0 {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    match held.settle(0).await {
                        Ok(settled) => debug!(
                            key = %held.masked,
                            refunded = settled.refunded,
                            "an unsettled reservation was given back"
                        ),
                        Err(error) => warn!(
                            key = %held.masked,
                            error = %error,
                            "an unsettled reservation could not be given back"
                        ),
                    }
                });
            }
            Err(_) => warn!(
                key = %held.masked,
                units = held.hold.units,
                "a reservation dropped outside a Tokio runtime is not given back"
            ),
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("units", &self.units)
            .field("key", &self.held.as_ref().map(|held| held.masked.as_str()))
            .field("settled", &self.held.is_none())
            .field("decision", &self.decision)
            .finish()
    }
}
