//! Random argument vectors for every command (CHECK, QUOTA, REFUND, MCHECK, RESET), pipelined,
//! against a key pool of every type.
//!
//! Each call is classified by an oracle of the contract's grammar (`fuzz/oracle.rs`) and its
//! reply checked: bad arguments answer an error and write nothing (such calls mostly go to new
//! keys, which must still be absent afterwards); valid ones answer a well-formed reply of their
//! command's shape (exact on new keys), or the error their key calls for (WRONGTYPE, another
//! algorithm's limiter, a string that is no limiter). A valid call that cannot write (a dry
//! run, QUOTA, a refund of nothing, an MCHECK policy that spends nothing or a request that can
//! never be admitted) leaves its new keys absent too. At the end the server still answers, and
//! the pool's non-limiter keys are unchanged.
//!
//! `FUZZ_CASES` sets the number of calls (default 100000), `FUZZ_SEED` replays a run.

mod common;
#[path = "fuzz/generate.rs"]
mod generate;
#[path = "fuzz/oracle.rs"]
mod oracle;

use common::*;
use generate::{generate, mismatch_key, Case, Target, JUNK, TYPED};
use oracle::{Algorithm, Call, Command, Expect, Multi, Policy, MAX_PERIOD_MS};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Calls sent at once, then checked, then their keys checked.
const BATCH: usize = 1000;

/// The server's clock during a batch, read on this machine before it was sent and after its
/// replies came back, in milliseconds since the epoch: every call of the batch ran in between.
#[derive(Debug, Clone, Copy)]
struct During {
    from_ms: u64,
    to_ms: u64,
}

/// Checks one reply against the case; returns a description of what is wrong, if anything.
fn verify(case: &Case, reply: &Reply, during: During) -> Result<(), String> {
    let error = reply.error();
    let err = |what: &str| match &error {
        Some(e) if e.starts_with("ERR") => Ok(()),
        _ => Err(format!("expected an ERR error{what}")),
    };
    match (&case.expect, case.target) {
        (Expect::Error, Target::Typed) => match error {
            Some(e) if e.starts_with("ERR") || e.starts_with("WRONGTYPE") => Ok(()),
            _ => Err("expected an error".into()),
        },
        (Expect::Error, _) => err(""),
        (Expect::Either, _) => match error {
            Some(_) => err(" or a well-formed reply"),
            None => well_shaped(case.command, reply),
        },
        (_, Target::Typed) => match error {
            Some(e) if e.starts_with("WRONGTYPE") => Ok(()),
            _ => Err("expected WRONGTYPE".into()),
        },
        (_, Target::Junk) => err(" for a string that is no limiter"),
        (Expect::Reset, Target::Absent) => expect_int(reply, &[0]),
        (Expect::Reset, _) => expect_int(reply, &[0, 1]),
        (_, Target::OtherAlgorithm { stored, requested }) => match error {
            Some(e)
                if e.starts_with("ERR")
                    && e.to_ascii_uppercase().contains(stored.name())
                    && e.to_ascii_uppercase().contains(requested.name()) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "expected an ERR naming {} and {}",
                stored.name(),
                requested.name()
            )),
        },
        (Expect::Valid(call), target) => {
            let fresh = matches!(target, Target::Absent | Target::Fresh);
            single_reply(call, reply, fresh, during)
        }
        (Expect::Multi(multi), target) => {
            multi_reply(multi, reply, target == Target::Fresh, during)
        }
    }
}

fn expect_int(reply: &Reply, allowed: &[i64]) -> Result<(), String> {
    match reply.int() {
        Some(n) if allowed.contains(&n) => Ok(()),
        _ => Err(format!("expected an integer in {allowed:?}")),
    }
}

/// The integers of a flat array reply.
fn ints(reply: &Reply) -> Option<Vec<i64>> {
    match reply {
        Reply::Array(Some(items)) => items.iter().map(Reply::int).collect(),
        _ => None,
    }
}

/// A flat array of `len` integers.
fn ints_of(reply: &Reply, len: usize) -> Result<Vec<i64>, String> {
    match ints(reply) {
        Some(values) if values.len() == len => Ok(values),
        _ => Err(format!("expected an array of {len} integers")),
    }
}

/// A reply of the command's shape, whatever the arguments were: for the calls the contract
/// leaves open.
fn well_shaped(command: Command, reply: &Reply) -> Result<(), String> {
    match command {
        Command::Check | Command::Quota => match ints(reply) {
            Some(v) if v.len() == 5 || (v.len() == 6 && command == Command::Check) => {
                well_formed(&v[..5])
            }
            _ => Err("expected five integers (six with WITHWINDOW)".into()),
        },
        Command::Refund => refund_well_formed(&ints_of(reply, 5)?),
        Command::MCheck => {
            let (allowed, retry, decisions) = mcheck_parts(reply)?;
            for d in &decisions {
                if d.len() != 5 && d.len() != 6 {
                    return Err("expected five or six integers per policy".into());
                }
                well_formed(&d[..5])?;
            }
            let first: Vec<[i64; 5]> = decisions.iter().map(|d| first_five(d)).collect();
            combined(allowed, retry, &first)
        }
        Command::Reset => expect_int(reply, &[0, 1]),
    }
}

fn first_five(values: &[i64]) -> [i64; 5] {
    values[..5].try_into().unwrap()
}

/// The rules every decision obeys, whatever the state and the algorithm.
fn well_formed(five: &[i64]) -> Result<(), String> {
    let [allowed, capacity, remaining, reset_after, retry_after] = five[..5] else {
        return Err("expected five integers".into());
    };
    let ok = (allowed == 0 || allowed == 1)
        && capacity >= 1
        && (0..=capacity).contains(&remaining)
        && reset_after >= 0
        // Back to full capacity exactly when nothing is outstanding.
        && (remaining == capacity) == (reset_after == 0)
        && if allowed == 1 {
            retry_after == 0
        } else {
            retry_after == -1 || retry_after > 0
        };
    if ok {
        Ok(())
    } else {
        Err("a malformed decision".into())
    }
}

/// `[refunded, limit, remaining, reset_after_ms, retry_after_ms]`, the standing after a
/// refund: as QUOTA's for a request of cost 1, which is always within the capacity.
fn refund_well_formed(five: &[i64]) -> Result<(), String> {
    let [refunded, capacity, remaining, reset_after, retry_after] = five[..5] else {
        return Err("expected five integers".into());
    };
    let ok = refunded >= 0
        && capacity >= 1
        && (0..=capacity).contains(&remaining)
        && reset_after >= 0
        && (remaining == capacity) == (reset_after == 0)
        && retry_after >= 0
        && (retry_after == 0) == (remaining >= 1);
    if ok {
        Ok(())
    } else {
        Err("a malformed refund reply".into())
    }
}

/// What a valid CHECK, QUOTA or REFUND must answer; `fresh` when the key held no state.
fn single_reply(call: &Call, reply: &Reply, fresh: bool, during: During) -> Result<(), String> {
    let p = &call.policy;
    let cap = p.capacity() as i64;
    match call.command {
        Command::Check => {
            let values = ints_of(reply, 5 + usize::from(call.with_window))?;
            let five = first_five(&values);
            well_formed(&five)?;
            decision(p, call.force, five, fresh)?;
            match values.get(5) {
                Some(&window) => window_of(p, window, fresh, during),
                None => Ok(()),
            }
        }
        Command::Quota => {
            let five = first_five(&ints_of(reply, 5)?);
            well_formed(&five)?;
            let [allowed, capacity, remaining, _, retry_after] = five;
            let cost = p.cost as i64;
            if capacity != cap {
                return Err(format!("the capacity should be {cap}"));
            }
            if cost > cap {
                if allowed != 0 || retry_after != -1 {
                    return Err("a cost above the capacity is denied with retry_after -1".into());
                }
            } else if allowed == 0 && retry_after <= 0 {
                return Err("a cost within the capacity can be retried later".into());
            }
            // What is left now decides: a request fits exactly when its cost does not exceed
            // it (COST 0 fits unless the limiter is in debt, which leaves nothing).
            let fits = if cost == 0 {
                allowed == 1 || remaining == 0
            } else {
                (allowed == 1) == (remaining >= cost)
            };
            if !fits {
                return Err("allowed disagrees with remaining".into());
            }
            if fresh {
                let fits = i64::from(cost <= cap);
                let expected = [fits, cap, cap, 0, fits - 1];
                if five != expected {
                    return Err(format!("expected {expected:?} on a fresh key"));
                }
            }
            Ok(())
        }
        Command::Refund => {
            let five = first_five(&ints_of(reply, 5)?);
            refund_well_formed(&five)?;
            if five[1] != cap {
                return Err(format!("the capacity should be {cap}"));
            }
            if five[0] > p.cost as i64 {
                return Err(format!("refunded more than the {} asked", p.cost));
            }
            if fresh && five != [0, cap, cap, 0, 0] {
                return Err(format!("expected [0, {cap}, {cap}, 0, 0] on a fresh key"));
            }
            Ok(())
        }
        Command::MCheck | Command::Reset => Err("not a single-key call".into()),
    }
}

/// What the decision of one policy must be, as CHECK (or MCHECK, for each policy) answers it;
/// `fresh` when the key held no state.
fn decision(p: &Policy, force: bool, five: [i64; 5], fresh: bool) -> Result<(), String> {
    let [allowed, capacity, remaining, reset_after, retry_after] = five;
    let cap = p.capacity() as i64;
    let cost = p.cost as i64;
    if capacity != cap {
        return Err(format!("the capacity should be {cap}"));
    }
    if force {
        // The wait is that of a request of cost 1, which always fits some day.
        if allowed == 0 && retry_after <= 0 {
            return Err("after FORCE, a request of cost 1 can be retried later".into());
        }
    } else if cost > cap {
        if allowed != 0 || retry_after != -1 {
            return Err("a cost above the capacity is denied with retry_after -1".into());
        }
    } else if allowed == 0 && retry_after <= 0 {
        return Err("a cost within the capacity can be retried later".into());
    }
    if !fresh {
        return Ok(());
    }
    if cost > cap && !force {
        return if five == [0, cap, cap, 0, -1] {
            Ok(())
        } else {
            Err(format!("expected [0, {cap}, {cap}, 0, -1] on a fresh key"))
        };
    }
    if cost > cap {
        // Forced beyond the capacity: in debt.
        if (allowed, remaining) != (0, 0) || reset_after < 1 {
            return Err("a forced cost above the capacity leaves the limiter in debt".into());
        }
        return reset_within(p, reset_after);
    }
    if allowed != 1 {
        return Err("a fresh limiter admits any cost within its capacity".into());
    }
    // Rounding may err toward denial by one unit.
    let exact = cap - cost;
    let slack = if p.algorithm == Algorithm::Fixed {
        0
    } else {
        1
    };
    if !(exact - slack..=exact).contains(&remaining) {
        return Err(format!("remaining should be {exact}"));
    }
    match (cost, reset_after) {
        (0, 0) => Ok(()),
        (0, _) => Err("nothing spent on a fresh key: reset_after is 0".into()),
        (_, r) => reset_within(p, r),
    }
}

/// `reset_after` of a fresh key once `p.cost` is spent: at least 1 ms, and no longer than
/// the algorithm takes to give back that cost.
fn reset_within(p: &Policy, reset_after: i64) -> Result<(), String> {
    let period = p.period_ms as i128;
    let longest = match p.algorithm {
        Algorithm::Fixed => period,
        Algorithm::Sliding => 2 * period,
        Algorithm::Gcra => (p.cost as i128 * period).div_euclid(p.limit as i128) + 1,
    };
    let longest = longest.min(i64::MAX as i128) as i64;
    if (1..=longest).contains(&reset_after) {
        Ok(())
    } else {
        Err(format!("reset_after should be within 1..={longest}"))
    }
}

/// WITHWINDOW's sixth integer: FIXED's window end in Unix ms (a period from now on a fresh
/// key), SLIDING's aligned window index `floor(now_ms / period_ms)`, GCRA's 0.
fn window_of(p: &Policy, window: i64, fresh: bool, during: During) -> Result<(), String> {
    let (from, to) = (during.from_ms as i64, during.to_ms as i64);
    let period = p.period_ms as i64;
    let (low, high) = match p.algorithm {
        Algorithm::Fixed if fresh => (from + period, to + period),
        // A live window, which a limit of another period may have opened.
        Algorithm::Fixed => (from + 1, to + MAX_PERIOD_MS as i64),
        Algorithm::Sliding => (from / period, to / period),
        Algorithm::Gcra => (0, 0),
    };
    if (low..=high).contains(&window) {
        Ok(())
    } else {
        Err(format!("the window should be within {low}..={high}"))
    }
}

/// An MCHECK reply: `allowed`, `retry_after_ms`, and each policy's integers.
fn mcheck_parts(reply: &Reply) -> Result<(i64, i64, Vec<Vec<i64>>), String> {
    let Reply::Array(Some(items)) = reply else {
        return Err("expected an array".into());
    };
    let (Some(allowed), Some(retry)) = (
        items.first().and_then(Reply::int),
        items.get(1).and_then(Reply::int),
    ) else {
        return Err("expected allowed and retry_after_ms first".into());
    };
    let decisions = items[2..]
        .iter()
        .map(|item| ints(item).ok_or("expected an array of integers per policy".to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((allowed, retry, decisions))
}

/// MCHECK's `allowed` and `retry_after_ms` follow from its policies': allowed when every
/// policy admits; otherwise -1 if some denying policy never can, else the longest wait among
/// the denying policies.
fn combined(allowed: i64, retry: i64, decisions: &[[i64; 5]]) -> Result<(), String> {
    let all = decisions.iter().all(|d| d[0] == 1);
    let denying: Vec<i64> = decisions
        .iter()
        .filter(|d| d[0] == 0)
        .map(|d| d[4])
        .collect();
    let expected_retry = if all {
        0
    } else if denying.contains(&-1) {
        -1
    } else {
        denying.iter().copied().max().unwrap_or(0)
    };
    if allowed != i64::from(all) {
        return Err("allowed should say whether every policy admits".into());
    }
    if retry != expected_retry {
        return Err(format!("retry_after_ms should be {expected_retry}"));
    }
    Ok(())
}

/// What a valid MCHECK must answer; `fresh` when every key held no state.
fn multi_reply(multi: &Multi, reply: &Reply, fresh: bool, during: During) -> Result<(), String> {
    let (allowed, retry, decisions) = mcheck_parts(reply)?;
    if decisions.len() != multi.policies.len() {
        return Err(format!("expected {} policies", multi.policies.len()));
    }
    let width = 5 + usize::from(multi.with_window);
    let mut firsts = Vec::new();
    for (i, (p, values)) in multi.policies.iter().zip(&decisions).enumerate() {
        let context = |why: String| format!("policy {i}: {why}");
        if values.len() != width {
            return Err(context(format!("expected {width} integers")));
        }
        let five = first_five(values);
        well_formed(&five).map_err(context)?;
        decision(p, multi.force, five, fresh).map_err(context)?;
        if let Some(&window) = values.get(5) {
            window_of(p, window, fresh, during).map_err(context)?;
        }
        firsts.push(five);
    }
    combined(allowed, retry, &firsts)
}

fn fail(seed: u64, case: &Case, reply: &Reply, why: &str) -> ! {
    panic!(
        "fuzz case {} (FUZZ_SEED={seed}): {}\n  expected: {:?} on {:?}\n  reply: {reply:?}\n  {why}",
        case.number,
        show_args(&case.args),
        case.expect,
        case.target,
    );
}

fn setup_pool(raw: &mut RawConn) -> Vec<(Vec<u8>, Reply)> {
    for (_, command) in TYPED {
        let reply = raw.call(command);
        assert!(reply.error().is_none(), "{command:?}: {reply:?}");
    }
    for (i, value) in JUNK.iter().enumerate() {
        let key = format!("junk:{i}");
        assert_eq!(
            raw.call(&[b"SET".as_slice(), key.as_bytes(), value]),
            Reply::Status(b"OK".to_vec())
        );
    }
    for algorithm in Algorithm::ALL {
        let key = mismatch_key(algorithm);
        let reply = raw.call(&[
            "RATELIMIT.CHECK",
            key.as_str(),
            "10",
            "3650d",
            "ALGORITHM",
            algorithm.name(),
        ]);
        assert!(reply.five().is_some_and(|d| d[0] == 1), "{key}: {reply:?}");
    }
    // The exact serialized value of every key that no call may change.
    let mut fixed_keys: Vec<Vec<u8>> = TYPED.iter().map(|(k, _)| k.as_bytes().to_vec()).collect();
    fixed_keys.extend((0..JUNK.len()).map(|i| format!("junk:{i}").into_bytes()));
    fixed_keys.extend(Algorithm::ALL.map(|a| mismatch_key(a).into_bytes()));
    fixed_keys
        .into_iter()
        .map(|key| {
            let dump = raw.call(&[b"DUMP".as_slice(), &key]);
            (key, dump)
        })
        .collect()
}

#[test]
fn random_arguments_never_crash_or_write_on_error() {
    let cases: u64 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(local_time_ms);
    println!("fuzz: {cases} cases, FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = Server::start();
    let mut raw = server.raw();
    let untouchable = setup_pool(&mut raw);
    let mut expiries_before = Vec::new();
    for algorithm in Algorithm::ALL {
        let ttl = raw.call(&["PTTL", mismatch_key(algorithm).as_str()]);
        expiries_before.push(ttl.int().expect("PTTL"));
    }

    // Calls per command, and of those how many were errors, valid, or ambiguous.
    let mut tally: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    let mut number = 0u64;
    while number < cases {
        let size = BATCH.min((cases - number) as usize);
        let batch: Vec<Case> = (0..size)
            .map(|i| generate(&mut rng, number + i as u64))
            .collect();
        number += size as u64;
        let commands: Vec<Vec<Vec<u8>>> = batch.iter().map(|c| c.args.clone()).collect();
        let from_ms = local_time_ms();
        let replies = raw.try_pipeline(&commands).unwrap_or_else(|e| {
            panic!(
                "the connection failed in the batch of cases {}..{number} (FUZZ_SEED={seed}): {e}\n\
                 did the server crash? log:\n{}",
                number - size as u64,
                server.log()
            )
        });
        let during = During {
            from_ms,
            to_ms: local_time_ms(),
        };
        for (case, reply) in batch.iter().zip(&replies) {
            let kind = match case.expect {
                Expect::Error => "error",
                Expect::Either => "ambiguous",
                _ => "valid",
            };
            *tally.entry((case.command.name(), kind)).or_default() += 1;
            if let Err(why) = verify(case, reply, during) {
                fail(seed, case, reply, &why);
            }
        }
        // No call may have written a key meant to stay absent.
        let absent: Vec<(&Case, &Vec<u8>)> = batch
            .iter()
            .flat_map(|c| c.absent.iter().map(move |key| (c, key)))
            .collect();
        if absent.is_empty() {
            continue;
        }
        let mut exists = vec![b"EXISTS".to_vec()];
        exists.extend(absent.iter().map(|(_, key)| (*key).clone()));
        if raw.call(&exists) != Reply::Int(0) {
            for (case, key) in absent {
                let reply = raw.call(&[b"EXISTS".as_slice(), key]);
                if reply != Reply::Int(0) {
                    fail(
                        seed,
                        case,
                        &reply,
                        &format!(
                            "this call wrote {}, a key it must not write",
                            key.escape_ascii()
                        ),
                    );
                }
            }
        }
    }
    println!("fuzz: calls by command and kind: {tally:?}");

    assert_eq!(
        raw.call(&["PING"]),
        Reply::Status(b"PONG".to_vec()),
        "the server still answers"
    );
    for (key, dump) in &untouchable {
        assert_eq!(
            &raw.call(&[b"DUMP".as_slice(), key]),
            dump,
            "{} changed during the run",
            key.escape_ascii()
        );
    }
    for i in 0..JUNK.len() {
        let key = format!("junk:{i}");
        assert_eq!(
            raw.call(&["PTTL", key.as_str()]),
            Reply::Int(-1),
            "{key}: a string that is no limiter was given an expiry"
        );
    }
    for (algorithm, before) in Algorithm::ALL.iter().zip(expiries_before) {
        let ttl = raw
            .call(&["PTTL", mismatch_key(*algorithm).as_str()])
            .int()
            .unwrap();
        assert!(
            ttl > 0 && ttl <= before,
            "{}: the expiry moved: {before} -> {ttl}",
            algorithm.name()
        );
    }
    let leftovers = raw.call(&["KEYS", "fz:nx:*"]);
    assert_eq!(
        leftovers,
        Reply::Array(Some(vec![])),
        "keys that no call may write"
    );
}
