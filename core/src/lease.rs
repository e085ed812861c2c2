//! Concurrency leases: at most `limit` holders at once, each holding a lease that expires unless
//! it is released or renewed, so that a holder that crashes never leaks its slot.
//!
//! The leases live in a sorted set: member = lease ID, score = its absolute expiry in Unix ms.
//! A lease is live while its expiry is after now (`expiry > now_ms`); every command first removes
//! the others. The set's key expires with its latest lease.
//!
//! The functions here decide on a summary of the live leases ([`Live`]), so that a caller never
//! has to copy a set of up to 10^6 members to ask.

use crate::Decision;
use std::collections::BTreeMap;

/// The largest `limit` of leases: 10^6.
pub const MAX_LEASES: u64 = 1_000_000;

/// The longest lease ID, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// The live leases of one key, after the expired ones were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Live {
    /// How many there are.
    pub count: u64,
    /// The earliest expiry among them, in ms.
    pub earliest_ms: Option<u64>,
    /// The latest expiry among them, in ms.
    pub latest_ms: Option<u64>,
    /// The lease the request names, when it is live.
    pub holder: Option<Holder>,
}

/// The live lease a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Its expiry, in ms.
    pub expire_at_ms: u64,
    /// The latest expiry among the other live leases, in ms.
    pub others_latest_ms: Option<u64>,
}

/// What an acquire grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A new lease.
    New,
    /// The named lease, already live, renewed.
    Renewed,
}

/// The answer to an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The first five integers of the reply: `allowed`, `limit`, `remaining` (free slots after
    /// this decision), `reset_after_ms` (until every live lease has expired) and
    /// `retry_after_ms` (0 when granted, else until the earliest lease expires).
    pub decision: Decision,
    /// The lease granted, `None` when denied.
    pub grant: Option<Grant>,
    /// The granted lease's expiry, in ms: now + lease.
    pub expire_at_ms: u64,
    /// The latest expiry among the live leases afterwards, in ms: the key's expiry.
    pub latest_ms: Option<u64>,
}

/// Decides an acquire of one of `limit` slots, for `lease_ms`, at `now_ms`, given the `live`
/// leases. The lease named by the request is renewed when it is live (it takes no second slot,
/// even if the limit was lowered meanwhile); otherwise a new lease is granted when fewer than
/// `limit` are live. A denial changes nothing.
pub fn acquire(limit: u64, lease_ms: u64, now_ms: u64, live: Live) -> Acquired {
    let expire_at_ms = now_ms.saturating_add(lease_ms);
    let (grant, count, others_latest) = match live.holder {
        Some(holder) => (Some(Grant::Renewed), live.count, holder.others_latest_ms),
        None if live.count < limit => (Some(Grant::New), live.count + 1, live.latest_ms),
        None => (None, live.count, live.latest_ms),
    };
    let latest_ms = match grant {
        Some(_) => Some(others_latest.map_or(expire_at_ms, |latest| latest.max(expire_at_ms))),
        None => live.latest_ms,
    };
    let until = |at_ms: u64| at_ms.saturating_sub(now_ms);
    let decision = Decision {
        allowed: grant.is_some(),
        limit,
        remaining: limit.saturating_sub(count),
        reset_after_ms: latest_ms.map_or(0, until),
        retry_after_ms: match (grant, live.earliest_ms) {
            (Some(_), _) => 0,
            (None, Some(earliest)) => i64::try_from(until(earliest)).unwrap_or(i64::MAX),
            // Denied with no live lease: only a limit of 0, which cannot be built.
            (None, None) => Decision::NEVER,
        },
    };
    Acquired {
        decision,
        grant,
        expire_at_ms,
        latest_ms,
    }
}

/// A lease ID for a request that names none: `now_us` in decimal, or `now_us-n` with the smallest
/// `n` from 2 that no live lease holds (`is_live` says). IDs of expired leases are never handed
/// out again, since the clock moves on: a late release by a crashed holder cannot free another's
/// slot.
pub fn auto_id(now_us: u64, is_live: impl Fn(&str) -> bool) -> String {
    auto_id_after(now_us, 0, is_live)
}

/// [`auto_id`] among the IDs of `now_us` past the `after`-th (the bare clock is the first,
/// `now_us-n` the n-th): for a node that has already handed out the first `after` while its clock
/// stood still. It starts there rather than testing those again, so that handing out many IDs at
/// one clock reading (a whole `MULTI` or script on servers whose clock is cached) costs the same
/// for each.
pub fn auto_id_after(now_us: u64, after: u64, is_live: impl Fn(&str) -> bool) -> String {
    let base = now_us.to_string();
    if after == 0 && !is_live(&base) {
        return base;
    }
    (after.max(1).saturating_add(1)..=u64::MAX)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !is_live(id))
        .unwrap_or(base)
}

/// One key's leases in memory, as the in-process limiter keeps them and the tests model them:
/// ID -> absolute expiry in ms. It makes exactly the changes the module makes to its sorted set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseSet {
    leases: BTreeMap<Vec<u8>, u64>,
}

impl LeaseSet {
    /// An empty set.
    pub fn new() -> LeaseSet {
        LeaseSet::default()
    }

    /// A set holding `leases` (ID, expiry in ms), as read from a store.
    pub fn from_leases(leases: impl IntoIterator<Item = (Vec<u8>, u64)>) -> LeaseSet {
        LeaseSet {
            leases: leases.into_iter().collect(),
        }
    }

    /// `RATELIMIT.ACQUIRE` at `now_us`: removes the expired leases, then grants or renews one
    /// (see [`acquire`]). Returns the decision and the lease ID, `None` when denied.
    pub fn acquire(
        &mut self,
        limit: u64,
        lease_ms: u64,
        now_us: u64,
        id: Option<&[u8]>,
    ) -> (Decision, Option<Vec<u8>>) {
        let now_ms = now_us / 1000;
        self.remove_expired(now_ms);
        let acquired = acquire(limit, lease_ms, now_ms, self.live(id));
        let Some(_) = acquired.grant else {
            return (acquired.decision, None);
        };
        let id = match id {
            Some(id) => id.to_vec(),
            None => auto_id(now_us, |candidate| {
                self.leases.contains_key(candidate.as_bytes())
            })
            .into_bytes(),
        };
        self.leases.insert(id.clone(), acquired.expire_at_ms);
        (acquired.decision, Some(id))
    }

    /// `RATELIMIT.RELEASE` at `now_ms`: removes the expired leases, then `id`. Answers whether
    /// it was live.
    pub fn release(&mut self, id: &[u8], now_ms: u64) -> bool {
        self.remove_expired(now_ms);
        self.leases.remove(id).is_some()
    }

    /// The live leases at `now_ms`, in ID order, without removing the expired ones.
    pub fn leases(&self, now_ms: u64) -> impl Iterator<Item = (&[u8], u64)> {
        self.leases
            .iter()
            .filter(move |(_, &expiry)| expiry > now_ms)
            .map(|(id, &expiry)| (id.as_slice(), expiry))
    }

    /// The latest expiry: the key's.
    pub fn expire_at_ms(&self) -> Option<u64> {
        self.leases.values().copied().max()
    }

    /// Whether no lease is held (expired ones included until a command removes them).
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    fn remove_expired(&mut self, now_ms: u64) {
        self.leases.retain(|_, expiry| *expiry > now_ms);
    }

    /// The live summary, once the expired leases are gone.
    fn live(&self, holder: Option<&[u8]>) -> Live {
        let mut expiries: Vec<u64> = self.leases.values().copied().collect();
        expiries.sort_unstable();
        let holder = holder.and_then(|id| {
            let expire_at_ms = *self.leases.get(id)?;
            // The latest among the others: drop one occurrence of the holder's expiry.
            let mut others = expiries.clone();
            let at = others.iter().rposition(|&e| e == expire_at_ms)?;
            others.remove(at);
            Some(Holder {
                expire_at_ms,
                others_latest_ms: others.last().copied(),
            })
        });
        Live {
            count: expiries.len() as u64,
            earliest_ms: expiries.first().copied(),
            latest_ms: expiries.last().copied(),
            holder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(count: u64, earliest: u64, latest: u64, holder: Option<Holder>) -> Live {
        Live {
            count,
            earliest_ms: (count > 0).then_some(earliest),
            latest_ms: (count > 0).then_some(latest),
            holder,
        }
    }

    fn holder(expire_at_ms: u64, others_latest_ms: Option<u64>) -> Option<Holder> {
        Some(Holder {
            expire_at_ms,
            others_latest_ms,
        })
    }

    /// A table at now = 1000, with a lease of 500 ms and a limit of 3: the live leases, then
    /// (allowed, remaining, reset_after_ms, retry_after_ms), the grant, and the latest expiry
    /// afterwards (the key's).
    #[test]
    fn grants_renews_and_denies() {
        type Case = (Live, (bool, u64, u64, i64), Option<Grant>, Option<u64>);
        let cases: &[Case] = &[
            // The first lease: the key expires with it.
            (
                Live::default(),
                (true, 2, 500, 0),
                Some(Grant::New),
                Some(1500),
            ),
            // Two live, ending at 1200 and 1800: a third fits; the key keeps 1800.
            (
                live(2, 1200, 1800, None),
                (true, 0, 800, 0),
                Some(Grant::New),
                Some(1800),
            ),
            // Full: the earliest ends in 100 ms.
            (
                live(3, 1100, 1900, None),
                (false, 0, 900, 100),
                None,
                Some(1900),
            ),
            // Full, but the request holds one: renewed, no second slot.
            (
                live(3, 1100, 1400, holder(1100, Some(1400))),
                (true, 0, 500, 0),
                Some(Grant::Renewed),
                Some(1500),
            ),
            // The holder's lease was the latest: renewed shorter, the others' latest counts.
            (
                live(2, 1200, 3000, holder(3000, Some(1200))),
                (true, 1, 500, 0),
                Some(Grant::Renewed),
                Some(1500),
            ),
            (
                live(3, 1200, 3000, holder(3000, Some(2500))),
                (true, 0, 1500, 0),
                Some(Grant::Renewed),
                Some(2500),
            ),
            // More live than the limit (it was lowered): a holder still renews.
            (
                live(5, 1100, 1400, holder(1200, Some(1400))),
                (true, 0, 500, 0),
                Some(Grant::Renewed),
                Some(1500),
            ),
            // ... and a newcomer waits for the earliest.
            (
                live(5, 1100, 1400, None),
                (false, 0, 400, 100),
                None,
                Some(1400),
            ),
        ];
        for (live, (allowed, remaining, reset, retry), grant, latest) in cases {
            let a = acquire(3, 500, 1000, *live);
            assert_eq!(
                (
                    a.decision.allowed,
                    a.decision.remaining,
                    a.decision.reset_after_ms,
                    a.decision.retry_after_ms
                ),
                (*allowed, *remaining, *reset, *retry),
                "{live:?}"
            );
            assert_eq!(a.decision.limit, 3);
            assert_eq!(a.grant, *grant, "{live:?}");
            assert_eq!(a.latest_ms, *latest, "{live:?}");
            assert_eq!(a.expire_at_ms, 1500);
        }
    }

    #[test]
    fn a_set_grants_renews_releases_and_heals() {
        let mut set = LeaseSet::new();
        let (d, a) = set.acquire(2, 100, 1_000_000, None);
        assert_eq!(
            (d.allowed, d.remaining, a.as_deref()),
            (true, 1, Some(&b"1000000"[..]))
        );
        let (d, b) = set.acquire(2, 100, 1_000_000, None);
        assert_eq!((d.allowed, d.remaining), (true, 0));
        assert_eq!(b.as_deref(), Some(&b"1000000-2"[..]));
        let (d, none) = set.acquire(2, 100, 1_050_000, Some(b"late"));
        assert_eq!((d.allowed, d.retry_after_ms, none), (false, 50, None));
        // A renewal takes no second slot.
        let (d, _) = set.acquire(2, 500, 1_050_000, Some(b"1000000"));
        assert_eq!((d.allowed, d.remaining, d.reset_after_ms), (true, 0, 500));
        assert_eq!(set.expire_at_ms(), Some(1_550));
        // A holder that never releases frees its slot when its lease ends.
        let (d, _) = set.acquire(2, 100, 1_100_000, Some(b"late"));
        assert!(d.allowed);
        assert!(set.release(b"late", 1_150));
        assert!(!set.release(b"late", 1_150));
        assert!(!set.release(b"1000000", 1_600), "expired: not live");
        assert!(set.is_empty());
    }

    #[test]
    fn automatic_ids_skip_live_ones() {
        assert_eq!(auto_id(1234, |_| false), "1234");
        assert_eq!(auto_id(1234, |id| id == "1234"), "1234-2");
        assert_eq!(auto_id(1234, |id| id == "1234" || id == "1234-2"), "1234-3");
    }

    #[test]
    fn automatic_ids_go_on_past_the_ones_handed_out() {
        assert_eq!(auto_id_after(1234, 1, |_| false), "1234-2");
        assert_eq!(auto_id_after(1234, 7, |_| false), "1234-8");
        assert_eq!(auto_id_after(1234, 7, |id| id == "1234-8"), "1234-9");
        // Each is tested once: the IDs handed out before are not tested again.
        let tested = std::cell::Cell::new(0);
        let id = auto_id_after(1234, 1_000_000, |_| {
            tested.set(tested.get() + 1);
            false
        });
        assert_eq!((id.as_str(), tested.get()), ("1234-1000001", 1));
    }
}
