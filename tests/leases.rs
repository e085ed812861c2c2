//! Issue 11, the module's side: concurrency leases (`RATELIMIT.ACQUIRE key limit lease [ID id]`
//! and `RATELIMIT.RELEASE key id`) against the contract of docs/commands.md, on a real server.
//!
//! - Fifty connections never hold more than the limit at once: counted from the sorted set
//!   itself under load, and from what the holders were told.
//! - A lease ends by itself, a renewal keeps it, a late release frees nobody else's slot, and
//!   automatic IDs are the clock, distinct, and never handed out twice.
//! - The reply's six elements, in RESP2 and RESP3; the key's expiry is always its latest
//!   lease's; other types answer WRONGTYPE and bad input an exact error, writing nothing.
//! - A replica, an AOF restart and a promoted replica (FAILOVER, and CLUSTER FAILOVER) hold the
//!   same members, scores and expiry; denials propagate nothing; a cluster routes both commands.
//! - RATELIMIT.TOP counts denied ACQUIREs.
//!
//! The change signals and keyspace events of the lease commands are in `signals.rs`, their INFO
//! counters in `info.rs`, their ACL key patterns in `acl.rs`.

mod common;

use common::cluster::*;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// A far future, in Unix ms (the year 2286): the score of a hand-made lease that outlives any
/// test.
const FAR: u64 = 9_999_999_999_999;

/// `ZADD key score member ...` and, with `expire_at`, `PEXPIREAT key expire_at`: a hand-made
/// lease set, as an application or a restore could leave one.
fn hand_made(
    con: &mut redis::Connection,
    key: &str,
    leases: &[(u64, &str)],
    expire_at: Option<u64>,
) {
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(key);
    for (score, member) in leases {
        zadd.arg(*score).arg(*member);
    }
    let _: i64 = zadd.query(con).unwrap();
    if let Some(at) = expire_at {
        let _: i64 = redis::cmd("PEXPIREAT").arg(key).arg(at).query(con).unwrap();
    }
}

/// The IDs of a lease set, in its order.
fn ids(set: &[(String, u64)]) -> Vec<&str> {
    set.iter().map(|(id, _)| id.as_str()).collect()
}

/// The score of `id` in `key`'s set; panics when it is no member.
fn score_of(con: &mut redis::Connection, key: &str, id: &str) -> u64 {
    lease_set(con, key)
        .into_iter()
        .find(|(member, _)| member == id)
        .unwrap_or_else(|| panic!("{id:?} is no lease of {key}"))
        .1
}

/// Asserts that `key` expires at `at` (exactly with PEXPIRETIME; within a few ms from PTTL).
fn assert_expires_at(con: &mut redis::Connection, key: &str, at: u64, has_pet: bool, when: &str) {
    let found =
        expire_at_ms(con, key, has_pet).unwrap_or_else(|| panic!("{when}: {key} has no expiry"));
    assert!(
        found.abs_diff(at) <= expiry_tolerance_ms(has_pet),
        "{when}: {key} expires at {found}, its latest lease at {at}"
    );
}

/// Whether `id` is an automatic lease ID: a decimal clock in microseconds, or
/// `<clock>-<n>` with `n` from 2. Returns the clock and `n` (1 for the plain clock).
fn parse_auto_id(id: &str) -> Option<(u64, u64)> {
    let (clock, n) = match id.split_once('-') {
        Some((clock, n)) => (clock, n.parse::<u64>().ok().filter(|&n| n >= 2)?),
        None => (id, 1),
    };
    let canonical =
        |s: &str| !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    if !canonical(clock) || (n > 1 && !canonical(id.split_once('-')?.1)) {
        return None;
    }
    Some((clock.parse().ok()?, n))
}

// ------------------------------------------------------------------------------------------
// Fifty connections on one key.

const HOLDERS: usize = 50;
const LIMIT: usize = 5;
const LEASE_MS: u64 = 250;
/// Leases each holder takes (renewals not counted).
const GRANTS_PER_HOLDER: usize = 4;
/// How long before `sent + lease` a holder stops counting on its lease: the server's clock is
/// read to the millisecond (and a lease's expiry floored to it), so a lease may end up to 1 ms
/// before `sent + lease` by this machine's monotonic clock; 2 ms leaves room for rounding.
const MARGIN: Duration = Duration::from_millis(2);
const POOL: &str = "pool";

/// What one holder saw of one lease.
#[derive(Debug)]
struct Held {
    id: String,
    automatic: bool,
    /// When the holder could count on the lease, since the test's start: from each granting
    /// reply's arrival to `sent + lease - margin` of that request, cut at the release's sending.
    belief: Vec<(Duration, Duration)>,
    /// RELEASE's answer, `None` for a holder that never released.
    released: Option<i64>,
}

/// One holder: its own connection, `GRANTS_PER_HOLDER` leases on `POOL`, each held 0 to 2 ms,
/// some renewed once, one in ten never released. Denied requests wait 1 ms and try again.
fn run_holder(
    server_url: String,
    holder: usize,
    start: Instant,
    barrier: Arc<Barrier>,
) -> (Vec<Held>, usize) {
    let client = redis::Client::open(server_url).unwrap();
    let mut con = client.get_connection().unwrap();
    let lease = format!("{LEASE_MS}ms");
    let limit = LIMIT.to_string();
    let automatic = holder.is_multiple_of(3);
    let mut held = Vec::new();
    let mut denied = 0;
    barrier.wait();
    for n in 0..GRANTS_PER_HOLDER {
        let own_id = format!("h{holder}:{n}");
        let mut args = vec![POOL, limit.as_str(), lease.as_str()];
        if !automatic {
            args.extend(["ID", own_id.as_str()]);
        }
        let mut attempts = 0;
        let (reply, sent, received) = loop {
            attempts += 1;
            assert!(attempts < 20_000, "holder {holder} never got lease {n}");
            let sent = start.elapsed();
            let reply = acquire(&mut con, &args);
            let received = start.elapsed();
            if reply.is_allowed() {
                break (reply, sent, received);
            }
            denied += 1;
            assert_eq!(
                reply.decision.remaining, 0,
                "denied with free slots: {reply:?}"
            );
            assert!(
                (1..=LEASE_MS as i64).contains(&reply.decision.retry_after),
                "a denial waits at most one lease: {reply:?}"
            );
            thread::sleep(Duration::from_millis(1));
        };
        let id = reply.id().to_string();
        if !automatic {
            assert_eq!(id, own_id);
        }
        let lease_len = Duration::from_millis(LEASE_MS);
        let mut belief = vec![(received, sent + lease_len - MARGIN)];
        let mut last_sent = sent;
        thread::sleep(Duration::from_millis(((holder + n) % 3) as u64));
        if (holder + n).is_multiple_of(5) {
            // A renewal: the same ID, taking no second slot.
            let sent = start.elapsed();
            let renewed = acquire(&mut con, &[POOL, limit.as_str(), lease.as_str(), "ID", &id]);
            let received = start.elapsed();
            if renewed.is_allowed() {
                assert_eq!(renewed.id(), id);
                belief.push((received, sent + lease_len - MARGIN));
                last_sent = sent;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let released = if holder % 10 == 9 && n == 1 {
            None
        } else {
            let sent = start.elapsed();
            let answer = release(&mut con, POOL, &id);
            let received = start.elapsed();
            for interval in &mut belief {
                interval.1 = interval.1.min(sent);
            }
            if answer == 0 {
                assert!(
                    received + MARGIN >= last_sent + lease_len,
                    "holder {holder}: RELEASE of a lease that had not expired answered 0 \
                     (acquired at {last_sent:?}, released at {sent:?})"
                );
            }
            Some(answer)
        };
        belief.retain(|(from, to)| from < to);
        held.push(Held {
            id,
            automatic,
            belief,
            released,
        });
    }
    (held, denied)
}

/// What the watcher saw: how many snapshots, the most live leases in one, and every snapshot
/// that broke a rule.
#[derive(Debug, Default)]
struct Watched {
    snapshots: usize,
    max_live: usize,
    violations: Vec<String>,
}

/// Reads the set, its expiry and the server's clock in one transaction, until `stop`: no
/// snapshot may hold more than `LIMIT` leases whose score is after the server's now, and the
/// key's expiry is always its latest member's score.
fn watcher(url: String, has_pet: bool, stop: Arc<AtomicBool>) -> Watched {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut seen = Watched::default();
    let tolerance = expiry_tolerance_ms(has_pet);
    while !stop.load(Ordering::Relaxed) {
        let expiry = if has_pet { "PEXPIRETIME" } else { "PTTL" };
        let (members, at, (seconds, micros)): (Vec<(String, f64)>, i64, (u64, u64)) = redis::pipe()
            .atomic()
            .cmd("ZRANGE")
            .arg(POOL)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd(expiry)
            .arg(POOL)
            .cmd("TIME")
            .query(&mut con)
            .unwrap();
        let now_ms = seconds * 1000 + micros / 1000;
        seen.snapshots += 1;
        let live = members.iter().filter(|(_, s)| *s as u64 > now_ms).count();
        seen.max_live = seen.max_live.max(live);
        if live > LIMIT {
            seen.violations
                .push(format!("{live} live leases at {now_ms}: {members:?}"));
        }
        if let Some(latest) = members.iter().map(|(_, s)| *s as u64).max() {
            let at = if has_pet { at } else { now_ms as i64 + at };
            if at < 0 || (at as u64).abs_diff(latest) > tolerance {
                seen.violations.push(format!(
                    "the key expires at {at}, its latest lease at {latest}: {members:?}"
                ));
            }
        }
    }
    seen
}

/// Issue 11: fifty connections (a third with automatic IDs) take and release leases on one key
/// with a limit of 5 and 250 ms leases; some renew, one in ten holders leaves a lease to
/// expire. Meanwhile a watcher reads the sorted set, its expiry and `TIME` atomically, again and
/// again: no snapshot holds more than 5 members scored after the server's now, and the key
/// always expires with its latest member. From the replies: at no instant do more than 5
/// holders count on a live lease (each counts on it from the granting reply to `sent + lease`,
/// or to its RELEASE), a RELEASE answers 0 only once the lease has expired, and no automatic ID
/// is handed out twice.
#[test]
fn fifty_connections_never_hold_more_than_the_limit() {
    let (server, mut con, has_pet) = setup();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let watching = {
        let (url, stop) = (server.url(), stop.clone());
        thread::spawn(move || watcher(url, has_pet, stop))
    };
    let barrier = Arc::new(Barrier::new(HOLDERS));
    let holders: Vec<_> = (0..HOLDERS)
        .map(|h| {
            let (url, barrier) = (server.url(), barrier.clone());
            thread::spawn(move || run_holder(url, h, start, barrier))
        })
        .collect();
    let results: Vec<(Vec<Held>, usize)> = holders
        .into_iter()
        .map(|h| h.join().expect("a holder panicked"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let watched = watching.join().expect("the watcher panicked");
    let elapsed = start.elapsed();

    assert!(
        watched.violations.is_empty(),
        "the sorted set broke the limit or the expiry rule in {} of {} snapshots: {:?}",
        watched.violations.len(),
        watched.snapshots,
        &watched.violations[..watched.violations.len().min(5)]
    );
    assert!(
        watched.snapshots > 0 && watched.max_live >= 1,
        "{watched:?}"
    );

    // The holders' beliefs: merged per holder, then swept in time order.
    let mut events: Vec<(Duration, i32)> = Vec::new();
    for (held, _) in &results {
        let mut intervals: Vec<(Duration, Duration)> =
            held.iter().flat_map(|h| h.belief.iter().copied()).collect();
        intervals.sort();
        let mut merged: Vec<(Duration, Duration)> = Vec::new();
        for (from, to) in intervals {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        for (from, to) in merged {
            events.push((from, 1));
            events.push((to, -1));
        }
    }
    // An end sorts before a start at the same instant: intervals are half-open.
    events.sort();
    let (mut current, mut most) = (0, 0);
    for (_, step) in &events {
        current += step;
        most = most.max(current);
    }
    assert!(
        most <= LIMIT as i32,
        "{most} holders counted on a live lease at once, with a limit of {LIMIT}"
    );

    let all: Vec<&Held> = results.iter().flat_map(|(held, _)| held).collect();
    let automatic: Vec<&str> = all
        .iter()
        .filter(|h| h.automatic)
        .map(|h| h.id.as_str())
        .collect();
    for id in &automatic {
        assert!(parse_auto_id(id).is_some(), "not an automatic ID: {id:?}");
    }
    let distinct: BTreeSet<&str> = automatic.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        automatic.len(),
        "an automatic ID was handed out twice: {:?}",
        {
            let mut seen = BTreeSet::new();
            automatic
                .iter()
                .filter(|id| !seen.insert(**id))
                .collect::<Vec<_>>()
        }
    );
    let kept = all.iter().filter(|h| h.released.is_none()).count();
    let late = all.iter().filter(|h| h.released == Some(0)).count();
    let denied: usize = results.iter().map(|(_, d)| d).sum();
    let live_now = lease_set(&mut con, POOL)
        .iter()
        .filter(|(_, s)| *s > server_time_ms(&mut con))
        .count();
    assert!(live_now <= LIMIT);
    println!(
        "{} leases in {elapsed:?} ({} with automatic IDs, {kept} never released, {late} released \
         after they expired), {denied} denials; the watcher took {} snapshots, at most {} live \
         leases; at most {most} holders counted on one at once",
        all.len(),
        automatic.len(),
        watched.snapshots,
        watched.max_live
    );
}

// ------------------------------------------------------------------------------------------
// One lease's life.

/// Issue 11: a holder that never releases frees its slot once its lease ends (the next holder,
/// denied until then, gets it within a bounded wait), and its late RELEASE answers 0 and frees
/// nobody else's slot. A renewal (ACQUIRE with the same ID) keeps the slot past the original
/// expiry and takes no second slot, even after the limit was lowered.
#[test]
fn a_lease_ends_by_itself_and_a_renewal_keeps_it() {
    let (_server, mut con, _) = setup();

    // A crashed holder, with an automatic ID, and a 300 ms lease.
    let crashed = acquire(&mut con, &["slot", "1", "300ms"]);
    let crashed_id = crashed.id().to_string();
    let crashed_until = score_of(&mut con, "slot", &crashed_id);
    let waiting = acquire(&mut con, &["slot", "1", "300ms"]);
    assert!(!waiting.is_allowed(), "{waiting:?}");
    assert!(
        (1..=300).contains(&waiting.decision.retry_after),
        "{waiting:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let reply = acquire(&mut con, &["slot", "1", "1h"]);
        if reply.is_allowed() {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was not freed within 10 s"
        );
        thread::sleep(Duration::from_millis(
            reply.decision.retry_after.clamp(1, 20) as u64,
        ));
    };
    assert!(server_time_ms(&mut con) >= crashed_until);
    let next_id = next.id().to_string();
    assert_ne!(next_id, crashed_id, "the clock moved on: a new ID");
    assert_eq!(ids(&lease_set(&mut con, "slot")), [next_id.as_str()]);
    assert_eq!(release(&mut con, "slot", &crashed_id), 0, "a late release");
    assert_eq!(ids(&lease_set(&mut con, "slot")), [next_id.as_str()]);
    assert!(
        !acquire(&mut con, &["slot", "1", "1h"]).is_allowed(),
        "the slot is still held"
    );

    // A renewal keeps the slot past the original expiry.
    let first = acquire(&mut con, &["job", "1", "500ms", "ID", "job"]);
    assert!(first.is_allowed());
    let original = score_of(&mut con, "job", "job");
    thread::sleep(Duration::from_millis(50));
    let renewed = acquire(&mut con, &["job", "1", "500ms", "ID", "job"]);
    assert_eq!(
        (
            renewed.decision.allowed,
            renewed.decision.remaining,
            renewed.id()
        ),
        (1, 0, "job")
    );
    let renewed_until = score_of(&mut con, "job", "job");
    assert!(renewed_until > original, "{original} -> {renewed_until}");
    assert!(
        renewed_until - 500 < original,
        "the renewal came after the lease had ended (the machine stalled 450 ms): {original}, \
         renewed at {}",
        renewed_until - 500
    );
    let now = server_time_ms(&mut con);
    thread::sleep(Duration::from_millis(original + 20 - now.min(original)));
    let other = acquire(&mut con, &["job", "1", "500ms", "ID", "other"]);
    let now = server_time_ms(&mut con);
    assert!(now > original);
    if now < renewed_until {
        assert!(
            !other.is_allowed(),
            "the renewed lease still holds the slot: {other:?}"
        );
        assert_eq!(
            lease_set(&mut con, "job"),
            [("job".to_string(), renewed_until)]
        );
    } else {
        note("the machine stalled past the renewed lease too: its slot was free again");
    }

    // Renewals take no second slot, even when the limit was lowered meanwhile.
    for (limit, id, remaining) in [("2", "a", 1), ("2", "a", 1), ("2", "b", 0), ("1", "a", 0)] {
        let reply = acquire(&mut con, &["two", limit, "1h", "ID", id]);
        assert_eq!(
            (reply.decision.allowed, reply.decision.remaining, reply.id()),
            (1, remaining, id),
            "ACQUIRE two {limit} 1h ID {id}"
        );
    }
    assert_eq!(ids(&lease_set(&mut con, "two")).len(), 2);
    let newcomer = acquire(&mut con, &["two", "2", "1h", "ID", "c"]);
    assert!(!newcomer.is_allowed(), "{newcomer:?}");
}

/// Issue 11: an automatic ID is the server's clock in microseconds (or `<clock>-<n>`, with the
/// smallest free `n` from 2, when the clock has not moved since the last one), and no ID is ever
/// handed out twice on a node: not in one pipeline, not across quick ACQUIRE/RELEASE cycles, not
/// within one script, where the server's clock stands still. A late RELEASE by a crashed holder
/// can then never free another's slot.
#[test]
fn automatic_ids_are_the_clock_and_never_handed_out_twice() {
    let (server, mut con, _) = setup();
    let before = server_time_us(&mut con);
    let first = acquire(&mut con, &["auto", "1000000", "1h"]);
    let after = server_time_us(&mut con);
    let (clock, n) = parse_auto_id(first.id())
        .unwrap_or_else(|| panic!("not an automatic ID: {:?}", first.id()));
    assert_eq!(n, 1, "the first ID of a key is the bare clock: {first:?}");
    // On servers whose module clock is in milliseconds (before 7.2), the ID is the millisecond
    // times 1000.
    assert!(
        before / 1000 * 1000 <= clock && clock <= after,
        "the ID {clock} is the server's clock, between {before} and {after}"
    );

    // One pipeline: distinct IDs, the clock's with suffixes 2, 3, ... while it stands still.
    let mut raw = server.raw();
    let commands: Vec<Vec<&str>> = (0..300)
        .map(|_| vec!["RATELIMIT.ACQUIRE", "auto", "1000000", "1h"])
        .collect();
    let mut handed: Vec<String> = vec![first.id().to_string()];
    let mut next_suffix: BTreeMap<u64, u64> = BTreeMap::from([(clock, 2)]);
    for reply in raw.pipeline(&commands) {
        let Reply::Array(Some(items)) = &reply else {
            panic!("{reply:?}")
        };
        let id = String::from_utf8(items[5].bytes().expect("an ID").to_vec()).unwrap();
        let (clock, n) = parse_auto_id(&id).unwrap_or_else(|| panic!("{id:?}"));
        let expected = next_suffix.entry(clock).or_insert(1);
        assert_eq!(n, *expected, "{id} after {handed:?}");
        *expected = n.max(1) + 1;
        handed.push(id);
    }
    let pipelined: BTreeSet<&String> = handed.iter().collect();
    assert_eq!(pipelined.len(), handed.len());

    // Quick cycles, as holders that release at once make them: never an ID seen before.
    let mut cycled: Vec<String> = Vec::new();
    for _ in 0..200 {
        let lease = acquire(&mut con, &["cycle", "1", "1h"]);
        assert_eq!(release(&mut con, "cycle", lease.id()), 1);
        cycled.push(lease.id().to_string());
    }
    let mut seen = BTreeSet::new();
    let again: Vec<&String> = cycled.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(
        again.is_empty(),
        "{} of 200 acquire/release cycles were handed an ID of an earlier cycle: {:?}",
        again.len(),
        &again[..again.len().min(5)]
    );

    // Within one script the clock stands still: a released ID is still not handed out again.
    let script = "local a = redis.call('RATELIMIT.ACQUIRE', KEYS[1], 1, '1h') \
                  redis.call('RATELIMIT.RELEASE', KEYS[1], a[6]) \
                  local b = redis.call('RATELIMIT.ACQUIRE', KEYS[1], 1, '1h') \
                  return {a[6], b[6]}";
    let (a, b): (String, String) = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("scripted")
        .query(&mut con)
        .unwrap();
    assert!(
        parse_auto_id(&a).is_some() && parse_auto_id(&b).is_some(),
        "{a} {b}"
    );
    assert_ne!(a, b, "the script's second lease got the first one's ID");
    // The late release of the first frees nothing.
    assert_eq!(release(&mut con, "scripted", &a), 0);
    assert_eq!(ids(&lease_set(&mut con, "scripted")), [b.as_str()]);
}

// ------------------------------------------------------------------------------------------
// Replies.

/// `RATELIMIT.ACQUIRE args` with the server's clock read (in ms) before and after it.
fn timed_acquire(con: &mut redis::Connection, args: &[&str]) -> (LeaseReply, u64, u64) {
    let before = server_time_ms(con);
    let reply = acquire(con, args);
    let after = server_time_ms(con);
    (reply, before, after)
}

/// Asserts that `value`, a time measured from the command's now (between `before` and `after`)
/// to the instant `at`, is `at - now`.
fn assert_until(value: i64, at: u64, before: u64, after: u64, what: &str) {
    assert_between(
        value,
        at.saturating_sub(after) as i64,
        at.saturating_sub(before) as i64,
        what,
    );
}

/// The same lease history on `key`, on `con`: each reply's six elements, their values (the
/// clock-dependent ones within the instants around the call), and the ID a bulk string when
/// granted, a nil when denied. Returns the replies, to compare across protocols.
fn lease_history(con: &mut redis::Connection, key: &str) -> Vec<LeaseReply> {
    let mut replies = Vec::new();
    let mut step =
        |con: &mut redis::Connection,
         args: &[&str],
         check: &dyn Fn(&LeaseReply, u64, u64, &mut redis::Connection)| {
            let mut full = vec![key];
            full.extend_from_slice(args);
            let (reply, before, after) = timed_acquire(con, &full);
            check(&reply, before, after, con);
            replies.push(reply);
        };
    let exact = |limit: i64, remaining: i64, reset: i64, id: &'static str| {
        move |r: &LeaseReply, _: u64, _: u64, _: &mut redis::Connection| {
            assert_eq!(
                r.decision.as_array(),
                [1, limit, remaining, reset, 0],
                "{r:?}"
            );
            assert_eq!(r.id(), id);
        }
    };
    // The first lease: reset_after is the lease itself.
    step(con, &["3", "1h", "ID", "a"], &exact(3, 2, HOUR_MS, "a"));
    step(con, &["3", "2h", "ID", "b"], &exact(3, 1, 2 * HOUR_MS, "b"));
    // A shorter one: reset_after is the time until b, the latest, ends.
    step(con, &["3", "30m"], &|r, before, after, con| {
        let b = score_of(con, key, "b");
        assert_eq!(r.decision.as_array()[..3], [1, 3, 0], "{r:?}");
        assert_until(r.decision.reset_after, b, before, after, "reset_after_ms");
        assert!(parse_auto_id(r.id()).is_some(), "{r:?}");
    });
    // Full: denied, retry_after_ms until the earliest (the 30 min one) ends, reset_after_ms
    // until the latest does.
    step(con, &["3", "1h", "ID", "d"], &|r, before, after, con| {
        let set = lease_set(con, key);
        let (earliest, latest) = (set[0].1, set[set.len() - 1].1);
        assert_eq!(r.decision.as_array()[..3], [0, 3, 0], "{r:?}");
        assert_until(
            r.decision.reset_after,
            latest,
            before,
            after,
            "reset_after_ms",
        );
        assert_until(
            r.decision.retry_after,
            earliest,
            before,
            after,
            "retry_after_ms",
        );
        assert_eq!(r.id, None);
    });
    // A renewal while full: granted, with its own ID.
    step(con, &["3", "10m", "ID", "a"], &|r, before, after, con| {
        let b = score_of(con, key, "b");
        assert_eq!(r.decision.as_array()[..3], [1, 3, 0], "{r:?}");
        assert_until(r.decision.reset_after, b, before, after, "reset_after_ms");
        assert_eq!(r.id(), "a");
    });
    assert_eq!(release(con, key, "b"), 1);
    assert_eq!(release(con, key, "b"), 0);
    // The latest is now the new lease itself: reset_after is its whole length.
    step(con, &["3", "1h", "ID", "d"], &exact(3, 0, HOUR_MS, "d"));
    // A lower limit, with more leases live than it allows: denied until the earliest (a, 10
    // minutes) ends.
    step(con, &["1", "1h", "ID", "e"], &|r, before, after, con| {
        let a = score_of(con, key, "a");
        let d = score_of(con, key, "d");
        assert_eq!(r.decision.as_array()[..3], [0, 1, 0], "{r:?}");
        assert_until(r.decision.retry_after, a, before, after, "retry_after_ms");
        assert_until(r.decision.reset_after, d, before, after, "reset_after_ms");
    });
    replies
}

/// Issue 11: ACQUIRE answers six elements, `[allowed, limit, remaining, reset_after_ms,
/// retry_after_ms, id]`, the ID a bulk string or a nil, in RESP2 and RESP3 alike; `remaining` is
/// the free slots after the decision, `reset_after_ms` the time until every live lease has
/// expired, `retry_after_ms` 0 when granted and otherwise the time until the earliest lease
/// expires. RELEASE answers an integer in both; errors are the same text.
#[test]
fn replies_have_six_elements_in_resp2_and_resp3() {
    let server = Server::start();
    let mut resp2 = server.con();
    let mut resp3 = server.con_resp3();
    let _: () = redis::cmd("HSET")
        .arg("proto")
        .arg("f")
        .arg("v")
        .query(&mut resp2)
        .unwrap();
    assert!(
        matches!(call(&mut resp3, &["HGETALL", "proto"]), Value::Map(_)),
        "not RESP3"
    );

    let in_resp2 = lease_history(&mut resp2, "l2");
    let in_resp3 = lease_history(&mut resp3, "l3");
    for (r2, r3) in in_resp2.iter().zip(&in_resp3) {
        assert_eq!(r2.decision.as_array()[..3], r3.decision.as_array()[..3]);
        assert_eq!(r2.id.is_some(), r3.id.is_some());
    }
    // The raw replies: a bulk string or a nil as the sixth element, whatever the protocol.
    for con in [&mut resp2, &mut resp3] {
        let granted = call(con, &["RATELIMIT.ACQUIRE", "shape", "1", "1h", "ID", "x"]);
        assert_eq!(
            granted,
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(0),
                Value::Int(HOUR_MS),
                Value::Int(0),
                Value::BulkString(b"x".to_vec()),
            ])
        );
        let denied = call(con, &["RATELIMIT.ACQUIRE", "shape", "1", "1h", "ID", "y"]);
        let Value::Array(items) = &denied else {
            panic!("{denied:?}")
        };
        assert_eq!((items.len(), &items[5]), (6, &Value::Nil), "{denied:?}");
        assert_eq!(
            call(con, &["RATELIMIT.RELEASE", "shape", "x"]),
            Value::Int(1)
        );
        assert_eq!(
            call(con, &["RATELIMIT.RELEASE", "shape", "x"]),
            Value::Int(0)
        );
    }
    for args in [
        &["RATELIMIT.ACQUIRE", "e", "0", "1h"][..],
        &["RATELIMIT.ACQUIRE", "e", "1", "1h", "ID", ""],
        &["RATELIMIT.RELEASE", "e"],
        &["RATELIMIT.ACQUIRE", "proto", "1", "1h"],
    ] {
        let e2 = error_text(&call(&mut resp2, args));
        assert!(e2.is_some(), "{args:?} should fail");
        assert_eq!(e2, error_text(&call(&mut resp3, args)), "{args:?}");
    }
}

// ------------------------------------------------------------------------------------------
// The key's expiry.

/// Issue 11: the key always expires at its latest lease's score: when a longer lease comes,
/// not when a shorter one does, when a renewal shortens the latest lease, when the latest lease
/// is released; and the key is gone with its last lease, released or expired. A hand-made set
/// without TTL gets the expiry of its latest lease on the first ACQUIRE (even a denied one),
/// and its scores are read rounded up to the millisecond.
#[test]
fn the_key_expires_with_its_latest_lease() {
    let (_server, mut con, has_pet) = setup();
    let k = "exp";
    let steps: [(&[&str], &str); 6] = [
        (&["5", "1h", "ID", "a"], "a"),
        (&["5", "2h", "ID", "b"], "b"),
        // Shorter than the latest: the expiry stays b's.
        (&["5", "30m", "ID", "c"], "b"),
        // The latest lease renewed shorter: the key follows a, now the latest.
        (&["5", "10m", "ID", "b"], "a"),
        (&["5", "3h", "ID", "b"], "b"),
        (&["5", "1m", "ID", "d"], "b"),
    ];
    for (args, latest) in steps {
        let mut full = vec![k];
        full.extend_from_slice(args);
        assert!(acquire(&mut con, &full).is_allowed());
        let at = score_of(&mut con, k, latest);
        let set = lease_set(&mut con, k);
        assert_eq!(set.iter().map(|(_, s)| *s).max(), Some(at), "{set:?}");
        assert_expires_at(&mut con, k, at, has_pet, &format!("after ACQUIRE {args:?}"));
    }
    for (id, latest) in [
        ("b", Some("a")),
        ("d", Some("a")),
        ("a", Some("c")),
        ("c", None),
    ] {
        assert_eq!(release(&mut con, k, id), 1);
        match latest {
            Some(latest) => {
                let at = score_of(&mut con, k, latest);
                assert_expires_at(&mut con, k, at, has_pet, &format!("after RELEASE {id}"));
            }
            None => assert!(!exists(&mut con, k), "the key is gone with its last lease"),
        }
    }

    // Expired: the key goes with its latest lease, by itself.
    acquire(&mut con, &["short", "2", "300ms", "ID", "x"]);
    acquire(&mut con, &["short", "2", "200ms", "ID", "y"]);
    let at = score_of(&mut con, "short", "x");
    assert_expires_at(&mut con, "short", at, has_pet, "two short leases");
    let deadline = Instant::now() + Duration::from_secs(10);
    while exists(&mut con, "short") {
        assert!(
            Instant::now() < deadline,
            "the key outlived its leases by 10 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        server_time_ms(&mut con) >= at,
        "the key went before its latest lease"
    );

    // A hand-made set without TTL.
    let now = server_time_ms(&mut con);
    hand_made(
        &mut con,
        "made",
        &[(now + HOUR_MS as u64, "a"), (now + 2 * HOUR_MS as u64, "b")],
        None,
    );
    assert_eq!(pttl(&mut con, "made"), -1);
    assert!(acquire(&mut con, &["made", "5", "10m", "ID", "c"]).is_allowed());
    assert_expires_at(
        &mut con,
        "made",
        now + 2 * HOUR_MS as u64,
        has_pet,
        "a hand-made set",
    );
    // Denied, it gets its expiry all the same: the one write a denial makes.
    hand_made(&mut con, "full", &[(now + HOUR_MS as u64, "a")], None);
    assert!(!acquire(&mut con, &["full", "1", "10m", "ID", "c"]).is_allowed());
    assert_expires_at(
        &mut con,
        "full",
        now + HOUR_MS as u64,
        has_pet,
        "a denied ACQUIRE",
    );
    // A fractional score counts up to the next millisecond.
    let _: i64 = redis::cmd("ZADD")
        .arg("frac")
        .arg(format!("{}.25", now + HOUR_MS as u64))
        .arg("a")
        .query(&mut con)
        .unwrap();
    let reply = acquire(&mut con, &["frac", "5", "1m", "ID", "b"]);
    assert!(reply.is_allowed());
    assert_expires_at(
        &mut con,
        "frac",
        now + HOUR_MS as u64 + 1,
        has_pet,
        "a fractional score",
    );
}

// ------------------------------------------------------------------------------------------
// Errors.

/// Everything a failed call could have changed about `key`: its type, its serialized value
/// (`DUMP`, members and scores for a set) and its absolute expiry.
#[derive(Debug)]
struct KeyState {
    kind: String,
    dump: Option<Vec<u8>>,
    expire_at: Option<u64>,
}

fn key_state(con: &mut redis::Connection, key: &str, has_pet: bool) -> KeyState {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query(con).unwrap();
    let expire_at = if kind == "none" {
        None
    } else {
        expire_at_ms(con, key, has_pet)
    };
    KeyState {
        kind,
        dump,
        expire_at,
    }
}

/// Asserts that `key` is still as `before` found it (its expiry within the few ms that
/// `TIME` + `PTTL` may be off by, where the server has no PEXPIRETIME).
fn assert_key_unchanged(con: &mut redis::Connection, key: &str, before: &KeyState, has_pet: bool) {
    let after = key_state(con, key, has_pet);
    let same_expiry = match (before.expire_at, after.expire_at) {
        (Some(a), Some(b)) => a.abs_diff(b) <= expiry_tolerance_ms(has_pet),
        (a, b) => a == b,
    };
    assert!(
        after.kind == before.kind && after.dump == before.dump && same_expiry,
        "{key} changed: {before:?} -> {after:?}"
    );
}

/// Issue 11: a string limiter (FIXED or GCRA), a list, a hash and a set answer WRONGTYPE to
/// both commands; bad input answers the exact error of the contract: a limit of 0 or 10^6 + 1,
/// a bad lease (`5x`, `0`, `3651d`), an empty or 129-byte ID, `ID` twice or without a value, an
/// unknown option, and the wrong number of arguments. None of them writes anything, neither on
/// a missing key nor on a live lease set; the bounds themselves (10^6, 3650d, 128 bytes) work.
#[test]
fn other_types_and_bad_input_are_refused_and_write_nothing() {
    let (_server, mut con, has_pet) = setup();
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    check(&mut con, &["fixed", "5", "1h"]);
    check(&mut con, &["gcra", "5", "1h", "ALGORITHM", "GCRA"]);
    let _: () = redis::cmd("RPUSH")
        .arg("list")
        .arg("a")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("hash")
        .arg("a")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("set")
        .arg("a")
        .query(&mut con)
        .unwrap();
    for key in ["fixed", "gcra", "list", "hash", "set"] {
        let before = key_state(&mut con, key, has_pet);
        for args in [
            &["RATELIMIT.ACQUIRE", key, "5", "1h"][..],
            &["RATELIMIT.ACQUIRE", key, "5", "1h", "ID", "a"],
            &["RATELIMIT.RELEASE", key, "a"],
        ] {
            assert_eq!(expect_error(&mut con, args), wrongtype, "{args:?}");
        }
        assert_key_unchanged(&mut con, key, &before, has_pet);
    }

    let long_id = "x".repeat(129);
    let echoed = format!("{}...", "x".repeat(64));
    let limit = |v: &str| format!("ERR invalid limit '{v}': expected an integer from 1 to 1000000");
    let syntax = |v: &str| {
        format!("ERR invalid lease '{v}': expected an integer with optional unit ms, s, m, h or d")
    };
    let range = |v: &str| format!("ERR invalid lease '{v}': expected from 1ms to 3650d");
    let id = |v: &str| format!("ERR invalid lease ID '{v}': expected 1 to 128 bytes");
    let arity = |c: &str| format!("ERR wrong number of arguments for 'ratelimit.{c}' command");
    // (arguments after the key, or the whole command with `{k}` for the key; the error)
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["ACQUIRE", "{k}", "0", "1h"], limit("0")),
        (vec!["ACQUIRE", "{k}", "1000001", "1h"], limit("1000001")),
        (vec!["ACQUIRE", "{k}", "-1", "1h"], limit("-1")),
        (vec!["ACQUIRE", "{k}", "abc", "1h"], limit("abc")),
        (vec!["ACQUIRE", "{k}", "5", "5x"], syntax("5x")),
        (vec!["ACQUIRE", "{k}", "5", "0"], range("0")),
        (vec!["ACQUIRE", "{k}", "5", "3651d"], range("3651d")),
        (vec!["ACQUIRE", "{k}", "5", "1h", "ID", ""], id("")),
        (
            vec!["ACQUIRE", "{k}", "5", "1h", "ID", &long_id],
            id(&echoed),
        ),
        (
            vec!["ACQUIRE", "{k}", "5", "1h", "ID", "a", "ID", "b"],
            "ERR option 'ID' given more than once".to_string(),
        ),
        (
            vec!["ACQUIRE", "{k}", "5", "1h", "ID"],
            "ERR option 'ID' needs a value".to_string(),
        ),
        (
            vec!["ACQUIRE", "{k}", "5", "1h", "FOO"],
            "ERR unknown option 'FOO'".to_string(),
        ),
        (
            vec!["ACQUIRE", "{k}", "5", "1h", "COST", "1"],
            "ERR unknown option 'COST'".to_string(),
        ),
        (vec!["RELEASE", "{k}", ""], id("")),
        (vec!["RELEASE", "{k}", &long_id], id(&echoed)),
        (vec!["ACQUIRE"], arity("acquire")),
        (vec!["ACQUIRE", "{k}"], arity("acquire")),
        (vec!["ACQUIRE", "{k}", "5"], arity("acquire")),
        (vec!["RELEASE"], arity("release")),
        (vec!["RELEASE", "{k}"], arity("release")),
        (vec!["RELEASE", "{k}", "a", "b"], arity("release")),
    ];
    // On a live lease set, and on a missing key.
    acquire(&mut con, &["live", "3", "1h", "ID", "a"]);
    for key in ["live", "missing"] {
        let before = key_state(&mut con, key, has_pet);
        for (words, expected) in &cases {
            let mut args = vec![format!("RATELIMIT.{}", words[0])];
            args.extend(words[1..].iter().map(|w| w.replace("{k}", key)));
            assert_eq!(&expect_error(&mut con, &args), expected, "{args:?}");
        }
        assert_key_unchanged(&mut con, key, &before, has_pet);
    }

    // The bounds themselves are accepted.
    let id_128 = "y".repeat(128);
    for args in [
        &["bounds:1", "1000000", "3650d", "ID", id_128.as_str()][..],
        &["bounds:2", "1", "1ms"][..],
        &["bounds:3", "1000000", "1h", "id", "lower-case-option"][..],
    ] {
        assert!(acquire(&mut con, args).is_allowed(), "{args:?}");
    }
    assert_eq!(release(&mut con, "bounds:1", &id_128), 1);
}

// ------------------------------------------------------------------------------------------
// RATELIMIT.TOP.

/// Issue 11: a denied ACQUIRE counts its key in RATELIMIT.TOP, once per denial; a grant, a
/// renewal (even over a lowered limit), a RELEASE and an error count nothing.
#[test]
fn denied_acquires_count_in_top() {
    let server = Server::start();
    let mut con = server.con();
    assert_eq!(call(&mut con, &["RATELIMIT.TOP", "RESET"]), Value::Okay);
    let calls: [(&[&str], bool); 9] = [
        (&["busy", "1", "1h", "ID", "a"], true),
        (&["busy", "1", "1h", "ID", "b"], false),
        (&["busy", "1", "1h"], false),
        (&["busy", "1", "2h", "ID", "a"], true),
        (&["busy", "1", "1h", "ID", "c"], false),
        (&["quiet", "2", "1h", "ID", "a"], true),
        (&["quiet", "1", "1h", "ID", "a"], true),
        (&["other", "1", "1h", "ID", "a"], true),
        (&["other", "1", "1h", "ID", "b"], false),
    ];
    for (args, granted) in calls {
        assert_eq!(acquire(&mut con, args).is_allowed(), granted, "{args:?}");
    }
    release(&mut con, "quiet", "a");
    release(&mut con, "quiet", "nobody");
    expect_error(&mut con, &["RATELIMIT.ACQUIRE", "quiet", "0", "1h"]);
    let top = call(&mut con, &["RATELIMIT.TOP", "10"]);
    assert_eq!(
        leaves(&top),
        ["busy", "3", "other", "1"],
        "RATELIMIT.TOP after three denials of busy and one of other"
    );
}

// ------------------------------------------------------------------------------------------
// Replication, persistence and failover.

/// Every lease key's members, scores and absolute expiry.
type LeaseState = BTreeMap<String, (Vec<(String, u64)>, u64)>;

fn lease_state(con: &mut redis::Connection, has_pet: bool) -> LeaseState {
    all_keys(con)
        .into_iter()
        .map(|k| {
            let key = String::from_utf8(k).unwrap();
            let set = lease_set(con, &key);
            let at =
                expire_at_ms(con, &key, has_pet).unwrap_or_else(|| panic!("{key} has no expiry"));
            (key, (set, at))
        })
        .collect()
}

/// Asserts that two nodes hold the same lease keys, members and scores, and absolute expiries
/// within `tolerance` ms.
fn assert_same_leases(a: &LeaseState, b: &LeaseState, tolerance: u64, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: the same keys"
    );
    for (key, (set, at)) in a {
        let (other_set, other_at) = &b[key];
        assert_eq!(set, other_set, "{what}: {key}'s members and scores");
        assert!(
            at.abs_diff(*other_at) <= tolerance,
            "{what}: {key} expires at {at} and at {other_at}"
        );
    }
}

/// The calls of `name` in `INFO commandstats`.
fn calls_of(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

fn seed() -> u64 {
    let seed = std::env::var("REPLICATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(local_time_ms);
    println!("lease traffic seed: {seed} (set REPLICATION_SEED to replay)");
    seed
}

/// Random lease traffic over 12 keys: ACQUIREs with limits 1 to 4, leases of 30 ms to 2 h,
/// named or automatic IDs (renewals among them), and RELEASEs of IDs held or not; in three
/// rounds 100 ms apart, so that the short leases expire and later calls remove them. Then one
/// long lease on every key, so that none expires while the nodes are compared.
fn lease_traffic(raw: &mut RawConn, rng: &mut StdRng) -> (usize, usize, usize) {
    let leases = ["30ms", "60ms", "500ms", "1h", "2h"];
    let (mut granted, mut denied, mut released) = (0, 0, 0);
    for round in 0..3 {
        let batch: Vec<Vec<String>> = (0..300)
            .map(|_| {
                let key = format!("lease:{}", rng.gen_range(0..12));
                let id = format!("h{}", rng.gen_range(0..8));
                if rng.gen_range(0..10) < 7 {
                    let mut call = vec![
                        "RATELIMIT.ACQUIRE".to_string(),
                        key,
                        rng.gen_range(1..=4).to_string(),
                        leases[rng.gen_range(0..leases.len())].to_string(),
                    ];
                    if rng.gen_bool(0.7) {
                        call.extend(["ID".to_string(), id]);
                    }
                    call
                } else {
                    vec!["RATELIMIT.RELEASE".to_string(), key, id]
                }
            })
            .collect();
        for (call, reply) in batch.iter().zip(raw.pipeline(&batch)) {
            match (call[0].as_str(), &reply) {
                ("RATELIMIT.RELEASE", Reply::Int(n @ (0 | 1))) => released += *n as usize,
                ("RATELIMIT.ACQUIRE", Reply::Array(Some(items))) if items.len() == 6 => {
                    match &items[5] {
                        Reply::Bulk(Some(_)) => granted += 1,
                        Reply::Bulk(None) => denied += 1,
                        other => panic!("{} answered {other:?}", show_args(call)),
                    }
                }
                _ => panic!("{} answered {reply:?}", show_args(call)),
            }
        }
        if round < 2 {
            thread::sleep(Duration::from_millis(100));
        }
    }
    let finals: Vec<Vec<String>> = (0..12)
        .map(|i| {
            let key = format!("lease:{i}");
            [
                "RATELIMIT.ACQUIRE",
                key.as_str(),
                "1000000",
                "3h",
                "ID",
                "final",
            ]
            .map(String::from)
            .to_vec()
        })
        .collect();
    for reply in raw.pipeline(&finals) {
        assert!(
            matches!(&reply, Reply::Array(Some(items)) if items[0] == Reply::Int(1)),
            "{reply:?}"
        );
    }
    (granted, denied, released)
}

/// Issue 11: after mixed ACQUIRE and RELEASE traffic, with expired leases removed along the way,
/// a replica and the master restarted from its AOF hold the same lease keys, members, scores
/// and absolute expiries. The replica ran `ZADD`, `ZREM` and `PEXPIREAT`, never a module
/// command, and more `ZREM`s than RELEASEs released: the removals of expired leases. A denied
/// ACQUIRE that removes nothing, a RELEASE of an unknown ID and an error propagate nothing
/// (`master_repl_offset` stays); a denied ACQUIRE that removes an expired lease propagates
/// exactly that `ZREM`, to the replica and to the AOF.
#[test]
fn lease_traffic_leaves_identical_sets_on_a_replica_and_after_an_aof_restart() {
    skip_if_external!("needs a replica and restarts the server from its AOF");
    let (mut master, replica) =
        quiet_master_and_replica(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut raw = master.raw();
    let mut rng = StdRng::seed_from_u64(seed());
    let (granted, denied, released) = lease_traffic(&mut raw, &mut rng);
    assert!(
        granted > 0 && denied > 0 && released > 0,
        "{granted} {denied} {released}"
    );

    let mut on_master = master.con();
    let mut on_replica = replica.con();
    wait_for_replica(&mut on_master);
    let m_pet = has_command(&mut on_master, "pexpiretime");
    let r_pet = has_command(&mut on_replica, "pexpiretime");
    let state = lease_state(&mut on_master, m_pet);
    assert_eq!(state.len(), 12, "{state:?}");
    let tolerance = expiry_tolerance_ms(m_pet) + expiry_tolerance_ms(r_pet);
    assert_same_leases(
        &state,
        &lease_state(&mut on_replica, r_pet),
        tolerance,
        "replica",
    );
    let stats = commandstats(&mut on_replica);
    let module_calls: Vec<&str> = stats.lines().filter(|l| l.contains("ratelimit")).collect();
    assert!(
        module_calls.is_empty(),
        "the replica ran module commands: {module_calls:?}"
    );
    for name in ["zadd", "zrem", "pexpireat"] {
        assert!(
            calls_of(&stats, name) > 0,
            "the replica ran no {name}:\n{stats}"
        );
    }
    assert!(
        calls_of(&stats, "zrem") > released as u64,
        "{} ZREMs for {released} releases: no expired lease was removed",
        calls_of(&stats, "zrem")
    );

    // Denials, unknown IDs and errors propagate nothing.
    acquire(&mut on_master, &["full", "1", "1h", "ID", "a"]);
    wait_for_replica(&mut on_master);
    let offset = master_offset(&mut on_master);
    assert!(!acquire(&mut on_master, &["full", "1", "1h", "ID", "b"]).is_allowed());
    assert!(!acquire(&mut on_master, &["full", "1", "1h"]).is_allowed());
    assert_eq!(release(&mut on_master, "full", "b"), 0);
    assert_eq!(release(&mut on_master, "missing", "b"), 0);
    expect_error(&mut on_master, &["RATELIMIT.ACQUIRE", "full", "0", "1h"]);
    expect_error(
        &mut on_master,
        &["RATELIMIT.ACQUIRE", "lease:0", "1", "1h", "ID", ""],
    );
    assert_eq!(
        master_offset(&mut on_master),
        offset,
        "a denial or an error replicated something"
    );

    // A denial that removes an expired lease propagates that ZREM, and only it.
    hand_made(
        &mut on_master,
        "stale",
        &[(1, "old"), (FAR, "a")],
        Some(FAR),
    );
    wait_for_replica(&mut on_master);
    let before = commandstats(&mut on_replica);
    assert!(!acquire(&mut on_master, &["stale", "1", "1h", "ID", "b"]).is_allowed());
    wait_for_replica(&mut on_master);
    let after = commandstats(&mut on_replica);
    for (name, more) in [("zrem", 1), ("zadd", 0), ("pexpireat", 0), ("del", 0)] {
        assert_eq!(
            calls_of(&after, name) - calls_of(&before, name),
            more,
            "the replica's {name} calls for a denial that removed one expired lease"
        );
    }
    assert_eq!(
        lease_set(&mut on_replica, "stale"),
        [("a".to_string(), FAR)]
    );
    let aof = read_dir_bytes(&master.data_dir());
    let zrem = b"$4\r\nZREM\r\n$5\r\nstale\r\n$3\r\nold\r\n";
    assert!(
        aof.windows(zrem.len())
            .any(|w| w.eq_ignore_ascii_case(zrem)),
        "the AOF holds ZREM stale old"
    );
    assert!(
        !aof.windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"ratelimit.")),
        "the AOF holds effects, never the module's commands"
    );

    let state = lease_state(&mut on_master, m_pet);
    drop((on_master, raw));
    master.restart();
    let mut on_master = master.con();
    assert_same_leases(
        &state,
        &lease_state(&mut on_master, m_pet),
        expiry_tolerance_ms(m_pet),
        "AOF restart",
    );
    println!(
        "{granted} leases granted, {denied} denied, {released} released before the comparison"
    );
}

/// Leases on a few keys: `jobs` full (three of three: two named, one automatic), `solo` renewed
/// to 2 h, `spare` with a free slot. Returns the holders' IDs of `jobs`.
fn take_leases<C: redis::ConnectionLike>(
    con: &mut C,
    key_of: impl Fn(&str) -> String,
) -> Vec<String> {
    let jobs = key_of("jobs");
    let mut held = Vec::new();
    for args in [
        &["3", "1h", "ID", "a"][..],
        &["3", "2h", "ID", "b"],
        &["3", "30m"],
    ] {
        let mut full = vec![jobs.as_str()];
        full.extend_from_slice(args);
        held.push(acquire(con, &full).id().to_string());
    }
    let solo = key_of("solo");
    acquire(con, &[solo.as_str(), "1", "1h", "ID", "x"]);
    assert!(acquire(con, &[solo.as_str(), "1", "2h", "ID", "x"]).is_allowed());
    let spare = key_of("spare");
    acquire(con, &[spare.as_str(), "2", "1h", "ID", "y"]);
    held
}

/// What must hold on a node promoted from the replica: the leases are live there (a new holder
/// of `jobs` and of `solo` is denied), and a holder's RELEASE answers 1 and frees its slot.
fn assert_leases_go_on<C: redis::ConnectionLike>(
    con: &mut C,
    key_of: impl Fn(&str) -> String,
    held: &[String],
) {
    let (jobs, solo, spare) = (key_of("jobs"), key_of("solo"), key_of("spare"));
    let denied = acquire(con, &[jobs.as_str(), "3", "1h", "ID", "new"]);
    assert!(
        !denied.is_allowed(),
        "jobs is full after the failover: {denied:?}"
    );
    assert!(
        !acquire(con, &[solo.as_str(), "1", "1h"]).is_allowed(),
        "solo is held"
    );
    assert!(acquire(con, &[spare.as_str(), "2", "1h", "ID", "z"]).is_allowed());
    for id in held {
        assert_eq!(
            release(con, &jobs, id),
            1,
            "{id}'s RELEASE on the promoted node"
        );
    }
    assert_eq!(release(con, &solo, "x"), 1);
    assert!(acquire(con, &[jobs.as_str(), "3", "1h", "ID", "new"]).is_allowed());
}

/// Issue 11: leases taken on a master are live on the replica that `FAILOVER` promotes, with
/// the same members, scores and expiry; there, a full key stays full and each holder's RELEASE
/// answers 1. The demoted master then replicates the new master's leases.
#[test]
fn leases_are_live_on_the_replica_promoted_by_failover() {
    skip_if_external!("needs a replica");
    let master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let replica = Server::start_replica_of(&master, &[]);
    let mut on_master = master.con();
    if !has_command(&mut on_master, "failover") {
        note("skipped: this server has no FAILOVER command");
        return;
    }
    let has_pet = has_command(&mut on_master, "pexpiretime");
    let held = take_leases(&mut on_master, |k| k.to_string());
    let before = lease_state(&mut on_master, has_pet);
    wait_for_replica(&mut on_master);
    let reply = call(&mut on_master, &["FAILOVER", "TIMEOUT", "10000"]);
    assert_eq!(reply, Value::Okay, "FAILOVER");
    wait_for_role(&replica, "master");
    wait_for_role(&master, "slave");
    let mut on_new = replica.con();
    assert_same_leases(
        &before,
        &lease_state(&mut on_new, has_pet),
        expiry_tolerance_ms(has_pet),
        "after FAILOVER",
    );
    assert_leases_go_on(&mut on_new, |k| k.to_string(), &held);
    wait_for_replica(&mut on_new);
    let mut on_old = master.con();
    assert_same_leases(
        &lease_state(&mut on_new, has_pet),
        &lease_state(&mut on_old, has_pet),
        2 * expiry_tolerance_ms(has_pet),
        "the demoted master",
    );
}

/// `redis-cli -c` run against the node on `port`: the lines it printed.
fn cli_lines(port: u16, args: &[&str]) -> Vec<String> {
    let port = port.to_string();
    let mut full = vec!["-c", "-h", "127.0.0.1", "-p", port.as_str()];
    full.extend_from_slice(args);
    let out = run_cli(&full);
    assert!(out.success, "redis-cli {}: {out:?}", full.join(" "));
    out.stdout.lines().map(|l| l.trim().to_string()).collect()
}

/// Issue 11 in a cluster: every node names the one key of ACQUIRE and RELEASE (COMMAND INFO
/// positions, COMMAND GETKEYS); `redis-cli -c` on a master that does not own the key follows
/// the redirection for both; a cluster client takes leases on keys of every shard. Then
/// `CLUSTER FAILOVER` promotes a replica: the leases of its shard are live there with the same
/// scores and expiry, a full key stays full, and each holder's RELEASE answers 1, through the
/// cluster client.
#[test]
fn leases_route_in_a_cluster_and_survive_cluster_failover() {
    skip_if_external!("needs a cluster");
    let cluster = Cluster::start();
    let key = "{user:42}:jobs";
    for node in cluster.nodes() {
        let mut con = node.con();
        for command in [
            &["RATELIMIT.ACQUIRE", key, "3", "1h", "ID", "a"][..],
            &["RATELIMIT.ACQUIRE", key, "3", "1h"],
            &["RATELIMIT.RELEASE", key, "a"],
        ] {
            let keys: Vec<String> = redis::cmd("COMMAND")
                .arg("GETKEYS")
                .arg(command)
                .query(&mut con)
                .unwrap_or_else(|e| panic!("COMMAND GETKEYS {command:?} on {}: {e}", node.port()));
            assert_eq!(keys, [key], "COMMAND GETKEYS {command:?}");
        }
        for name in ["ratelimit.acquire", "ratelimit.release"] {
            let reply = call(&mut con, &["COMMAND", "INFO", name]);
            let Value::Array(entries) = &reply else {
                panic!("COMMAND INFO {name}: {reply:?}")
            };
            let Some(Value::Array(fields)) = entries.first() else {
                panic!("COMMAND INFO {name}: {reply:?}")
            };
            assert_eq!(
                leaves(&Value::Array(fields[3..6].to_vec())),
                ["1", "1", "1"],
                "{name}"
            );
        }
    }

    // redis-cli -c from a master that does not own the key.
    let owner = cluster.shard_of(key);
    let elsewhere = cluster
        .shards()
        .into_iter()
        .find(|s| s.master != owner.master)
        .unwrap();
    let acquire_cli = |id: &str| {
        cli_lines(
            elsewhere.master,
            &["RATELIMIT.ACQUIRE", key, "2", "1h", "ID", id],
        )
    };
    let hour = HOUR_MS.to_string();
    assert_eq!(acquire_cli("a"), ["1", "2", "1", hour.as_str(), "0", "a"]);
    assert_eq!(acquire_cli("b")[..3], ["1", "2", "0"]);
    let denied = acquire_cli("c");
    assert_eq!(denied[..3], ["0", "2", "0"], "{denied:?}");
    assert!(
        denied.len() == 5 || denied[5].is_empty(),
        "a nil ID: {denied:?}"
    );
    assert_eq!(
        cli_lines(elsewhere.master, &["RATELIMIT.RELEASE", key, "a"]),
        ["1"]
    );
    assert_eq!(
        cli_lines(elsewhere.master, &["RATELIMIT.RELEASE", key, "a"]),
        ["0"]
    );
    let mut on_owner = cluster.node(owner.master).con();
    assert_eq!(
        ids(&lease_set(&mut on_owner, key)),
        ["b"],
        "the lease lives on the owner"
    );

    // Leases on keys of every shard, through a cluster client.
    let mut client = cluster.client();
    let tags = slot_tags("team:");
    let shards = cluster.shards();
    let tag_of = |shard: usize| -> &str {
        let slot = shards[shard].ranges[0].0 + 7;
        &tags[slot as usize]
    };
    let mut held = Vec::new();
    for shard in 0..3 {
        let tag = tag_of(shard).to_string();
        held.push(take_leases(&mut client, |k| format!("{{{tag}}}:{k}")));
    }
    let shard = &shards[0];
    let old_master = cluster.node(shard.master);
    let promoted = cluster.node(shard.replicas[0]);
    let mut on_master = old_master.con();
    let has_pet = has_command(&mut on_master, "pexpiretime");
    let before = lease_state(&mut on_master, has_pet);
    assert!(before.len() >= 3, "the shard holds leases: {before:?}");
    wait_for_replica(&mut on_master);
    let reply = call(&mut promoted.con(), &["CLUSTER", "FAILOVER"]);
    assert_eq!(reply, Value::Okay, "CLUSTER FAILOVER");
    wait_for_role(promoted, "master");
    cluster.wait_until_stable();
    assert_same_leases(
        &before,
        &lease_state(&mut promoted.con(), has_pet),
        expiry_tolerance_ms(has_pet),
        "after CLUSTER FAILOVER",
    );
    for (shard, held) in held.iter().enumerate() {
        let tag = tag_of(shard).to_string();
        assert_leases_go_on(&mut client, |k| format!("{{{tag}}}:{k}"), held);
    }
}

/// A hand-made lease set may hold scores no lease of the module has (`1e19`, `+inf`): they read
/// as the longest time the module reports, 2^53 - 1 ms, and the key's expiry is set to that,
/// which every server accepts in the replicated `PEXPIREAT`. The replica then holds the same
/// expiry, and a later denial finds it right and writes nothing (it used to rewrite it, and
/// replicate a `PEXPIREAT` past 2^63 that replicas refused, on every touch).
#[test]
fn scores_past_the_longest_time_read_as_it_everywhere() {
    skip_if_external!("needs a replica");
    const LONGEST: u64 = (1 << 53) - 1;
    let (master, replica) = quiet_master_and_replica(&[]);
    let mut con = master.con();
    let mut on_replica = replica.con();
    let has_pet = has_command(&mut con, "pexpiretime");
    for (key, score) in [
        ("big", "1e19"),
        ("inf", "+inf"),
        ("edge", "9007199254740993"),
    ] {
        let _: i64 = redis::cmd("ZADD")
            .arg(key)
            .arg(score)
            .arg("far")
            .query(&mut con)
            .unwrap();
        let reply = acquire(&mut con, &[key, "2", "10s", "ID", "a"]);
        assert!(reply.is_allowed(), "{key}: {reply:?}");
        if has_pet {
            assert_eq!(expire_at_ms(&mut con, key, true), Some(LONGEST), "{key}");
        }
        wait_for_replica(&mut con);
        let before = key_state(&mut con, key, has_pet);
        let offset = master_offset(&mut con);
        assert!(!acquire(&mut con, &[key, "2", "10s", "ID", "b"]).is_allowed());
        assert_eq!(release(&mut con, key, "nobody"), 0);
        assert_eq!(
            master_offset(&mut con),
            offset,
            "{key}: a denial propagated"
        );
        assert_key_unchanged(&mut con, key, &before, has_pet);
        let r_pet = has_command(&mut on_replica, "pexpiretime");
        let on_master = expire_at_ms(&mut con, key, has_pet).unwrap();
        let there = expire_at_ms(&mut on_replica, key, r_pet)
            .unwrap_or_else(|| panic!("{key}: no expiry on the replica"));
        assert!(
            there.abs_diff(on_master) <= expiry_tolerance_ms(has_pet) + expiry_tolerance_ms(r_pet),
            "{key}: replica {there}, master {on_master}"
        );
        let members = |con: &mut redis::Connection| -> Vec<String> {
            redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(con)
                .unwrap()
        };
        assert_eq!(members(&mut on_replica), members(&mut con), "{key}");
    }
}
