//! Several policies at once, and token budgets: [`RedisStore::check_all`],
//! [`RedisStore::reserve`] and [`RedisStore::settle`].

use super::RedisStore;
use crate::command::{Charge, Command, Reply, Spend};
use crate::decision::{Backend, Decision, Quota};
use crate::error::Error;
use crate::key::Key;
use crate::limit::Limit;
use crate::local::valid_cost;
use crate::multi::{valid_checks, AllDecision, Hold, LimitCheck};
use crate::reservation::{Reservation, Reserved, Settlement};
use ratelimit_core::Algorithm;
use tracing::debug;

impl RedisStore {
    /// Decides one request against several policies at once, all or nothing
    /// (`RATELIMIT.MCHECK`): it is admitted only if every policy admits it, and then every
    /// policy spends its cost; if any policy denies it, nothing is spent anywhere. One round
    /// trip, atomic in Redis: no other request runs between the policies.
    ///
    /// Per second and per day, or requests and tokens per minute:
    ///
    /// ```no_run
    /// # async fn f(store: ratelimit_client::RedisStore) -> Result<(), ratelimit_client::Error> {
    /// use ratelimit_client::{Key, Limit, LimitCheck};
    /// use std::time::Duration;
    /// let per_second = Limit::gcra(10, Duration::from_secs(1))?;
    /// let tokens = Limit::fixed(90_000, Duration::from_secs(60))?;
    /// let all = store
    ///     .check_all(&[
    ///         LimitCheck::new(Key::new("rps", "{user:42}"), &per_second, 1),
    ///         LimitCheck::new(Key::new("tpm", "{user:42}"), &tokens, 1200),
    ///     ])
    ///     .await?;
    /// if !all.allowed() {
    ///     let denied_by: Vec<usize> = all.violated().collect();
    ///     println!("denied by {denied_by:?}, retry after {:?}", all.retry_after());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// **In a Redis Cluster**, every key must hash to one slot: give them one hash tag, as
    /// `{user:42}` above; the server answers `CROSSSLOT` otherwise.
    ///
    /// While Redis is out, the failure policy answers: `Local` decides the same way, atomically,
    /// in this process; `Allow` admits under every policy; `Deny` denies under every policy.
    ///
    /// Fails, spending nothing, when there are no checks or more than 16, a key is given twice
    /// or a cost is above 10^15 ([`Error::is_invalid_argument`], [`Error::is_invalid_limit`]),
    /// when a key holds other data ([`Error::is_data_error`]), and on `CROSSSLOT`.
    pub async fn check_all(&self, checks: &[LimitCheck<'_>]) -> Result<AllDecision, Error> {
        if checks.iter().any(|check| check.limit.local_batch() > 1) {
            return self.check_all_shared(checks).await;
        }
        self.decide_all(checks, Spend::Decided).await
    }

    /// [`RedisStore::check_all`] without spending: the decision such a request would get now.
    pub async fn check_all_dry_run(&self, checks: &[LimitCheck<'_>]) -> Result<AllDecision, Error> {
        self.decide_all(checks, Spend::DryRun).await
    }

    /// Reserves an `estimate` of units on `key` for work whose real cost is known only
    /// afterwards (model tokens, bytes): the estimate is checked and spent now, as
    /// [`RedisStore::check`] spends a cost, and the [`Reservation`] settles the real cost later
    /// ([`Reservation::settle`]): it gives back what was not used to the window it was spent
    /// in, or charges the excess, which cannot be refused since it was already used. Dropping
    /// the reservation unsettled gives it all back.
    ///
    /// ```no_run
    /// # async fn f(store: ratelimit_client::RedisStore) -> Result<(), ratelimit_client::Error> {
    /// use ratelimit_client::{Limit, Reserved};
    /// use std::time::Duration;
    /// let tokens = Limit::fixed(90_000, Duration::from_secs(60))?;
    /// match store.reserve("tpm:user:42", &tokens, 4000).await? {
    ///     Reserved::Held(reservation) => {
    ///         let used = 1200; // ... the work, which used 1200 tokens
    ///         reservation.settle(used).await?; // 2800 given back
    ///     }
    ///     Reserved::Denied(decision) => println!("retry after {:?}", decision.retry_after()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A denied reservation holds nothing. In shadow mode a denial is still
    /// [`Reserved::Denied`] (with `decision.allowed()` true): serve the request if you wish,
    /// but nothing is held nor settled, as an enforced denial spends nothing.
    ///
    /// While Redis is out, the failure policy answers: `Local` reserves in this process (and
    /// the reservation settles there, even once Redis is back); `Allow` holds nothing (its
    /// reservation settles with nothing); `Deny` denies. Fails as [`RedisStore::check`] does.
    pub async fn reserve<'k>(
        &self,
        key: impl Into<Key<'k>>,
        limit: &Limit,
        estimate: u64,
    ) -> Result<Reserved, Error> {
        let key = key.into();
        let estimate = valid_cost(estimate)?;
        let (store, limit) = (self.clone(), *limit);
        let (redis_key, masked) = (self.redis_key(key), key.masked(&self.config.prefix));
        // To the end even if this future is dropped: the reservation is then given back.
        Self::to_the_end(async move {
            store
                .reserve_owned(redis_key, masked, limit, estimate)
                .await
        })
        .await
    }

    async fn reserve_owned(
        self,
        redis_key: String,
        masked: String,
        limit: Limit,
        estimate: u64,
    ) -> Result<Reserved, Error> {
        let command = Command::Charge {
            key: &redis_key,
            limit: limit.core(),
            cost: estimate,
            force: false,
        };
        let key = Key::from(redis_key.as_str());
        let (reply, backend) = self.answer(&command, key).await?;
        let (decision, window) = reply.charged()?;
        let decision = self.enforce(Decision::from_core(decision, backend), key);
        if !decision.is_admitted() {
            return Ok(Reserved::Denied(decision));
        }
        let hold = Hold {
            units: estimate,
            window,
            backend,
        };
        Ok(Reserved::Held(Reservation::new(
            self, redis_key, masked, limit, hold, decision,
        )))
    }

    /// Settles units held on `key` under `limit` (from [`AllDecision::hold`]) at their real
    /// cost `actual`: below the hold, the difference goes back to the window it was spent in
    /// (`RATELIMIT.REFUND ... WINDOW w`: nothing, once that window has ended); above, the
    /// excess is charged with `FORCE`, into debt if need be. [`Reservation::settle`] does the
    /// same, and owns its hold so that it can be settled only once; with this method, settling
    /// a hold once is the caller's duty.
    ///
    /// Units held by the failure policy `Local` settle in this process; by `Allow`, with
    /// nothing. A refund of units held in Redis while Redis is out is dropped (the units stay
    /// spent: the budget errs on the safe side), and an excess is charged to the failure
    /// policy. Fails when `actual` is above 10^15, or Redis refuses the call for this key.
    pub async fn settle<'k>(
        &self,
        key: impl Into<Key<'k>>,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> Result<Settlement, Error> {
        let key = key.into();
        let (redis_key, masked) = (self.redis_key(key), key.masked(&self.config.prefix));
        self.settle_hold(&redis_key, &masked, limit, hold, actual)
            .await
    }

    // The path of the budget calls -----------------------------------------------------------

    pub(crate) async fn decide_all(
        &self,
        checks: &[LimitCheck<'_>],
        spend: Spend,
    ) -> Result<AllDecision, Error> {
        let keys = valid_checks(checks, &self.config.prefix)?;
        let charges: Vec<Charge<'_>> = checks
            .iter()
            .zip(&keys)
            .map(|(check, key)| Charge {
                key,
                limit: check.limit.core(),
                cost: check.cost,
            })
            .collect();
        let command = Command::MultiCheck {
            charges: &charges,
            spend,
        };
        let (reply, backend) = self.answer(&command, checks[0].key).await?;
        let mut all = AllDecision::from_reply(reply.multi_check()?, backend);
        if self.config.shadow {
            all.enforced = false;
            for (decision, check) in all.decisions.iter_mut().zip(checks) {
                *decision = self.enforce(*decision, check.key);
            }
        }
        Ok(all)
    }

    /// Settles `hold` on the Redis key `redis_key` (`masked` in logs) at `actual` units.
    pub(crate) async fn settle_hold(
        &self,
        redis_key: &str,
        masked: &str,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> Result<Settlement, Error> {
        valid_cost(actual)?;
        let nothing = Settlement {
            refunded: 0,
            charged: 0,
            quota: None,
        };
        if actual == hold.units
            || !matches!(
                hold.backend,
                Backend::Module | Backend::Script | Backend::Local
            )
        {
            return Ok(nothing);
        }
        let window = (limit.algorithm() != Algorithm::Gcra).then_some(hold.window);
        let command = if actual < hold.units {
            Command::Refund {
                key: redis_key,
                limit: limit.core(),
                units: hold.units - actual,
                window,
            }
        } else {
            Command::Charge {
                key: redis_key,
                limit: limit.core(),
                cost: actual - hold.units,
                force: true,
            }
        };
        let (reply, backend) = if hold.backend == Backend::Local {
            (self.fallback.run_locally(&command)?, Backend::Local)
        } else {
            match self.run_on_redis(&command).await {
                Err(error) if error.is_outage() => {
                    debug!(key = %masked, error = %error, "Redis is out: settling with the failure policy");
                    if actual < hold.units {
                        return Ok(nothing);
                    }
                    self.fallback.answer(&command)?
                }
                other => other?,
            }
        };
        let counted = backend.is_redis() || backend == Backend::Local;
        Ok(match reply {
            Reply::Refunded(refunded, standing) => Settlement {
                refunded,
                charged: 0,
                quota: Some(Quota::from_core(standing, backend)),
            },
            other => {
                let (decision, _) = other.charged()?;
                Settlement {
                    refunded: 0,
                    charged: if counted { actual - hold.units } else { 0 },
                    quota: Some(Quota::from_core(decision, backend)),
                }
            }
        })
    }
}
