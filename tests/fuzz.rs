//! Random argument vectors for the three commands, pipelined, against a key pool of every type.
//!
//! Each call is classified by an oracle of the contract's grammar (`fuzz/oracle.rs`) and its
//! reply checked: bad arguments answer an error and write nothing (such calls mostly go to fresh
//! keys, which must still be absent afterwards); valid ones answer five well-formed integers, or
//! the error their key calls for (WRONGTYPE, another algorithm's limiter, a non-limiter string).
//! At the end the server still answers, and the pool's non-limiter keys are unchanged.
//!
//! `FUZZ_CASES` sets the number of calls (default 100000), `FUZZ_SEED` replays a run.

mod common;
#[path = "fuzz/generate.rs"]
mod generate;
#[path = "fuzz/oracle.rs"]
mod oracle;

use common::*;
use generate::{generate, mismatch_key, Case, Target, JUNK, TYPED};
use oracle::{Algorithm, Call, Command, Expect};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Calls sent at once, then checked, then their keys checked.
const BATCH: usize = 1000;

/// Checks one reply against the case; returns a description of what is wrong, if anything.
fn verify(case: &Case, reply: &Reply) -> Result<(), String> {
    let error = reply.error();
    match (case.expect, case.target) {
        (Expect::Error, Target::Typed) => match error {
            Some(e) if e.starts_with("ERR") || e.starts_with("WRONGTYPE") => Ok(()),
            _ => Err("expected an error".into()),
        },
        (Expect::Error, _) => match error {
            Some(e) if e.starts_with("ERR") => Ok(()),
            _ => Err("expected an ERR error".into()),
        },
        (Expect::Either, _) => match (error, reply.five()) {
            (Some(e), _) if e.starts_with("ERR") => Ok(()),
            (None, Some(five)) => well_formed(five),
            _ => Err("expected an ERR error or five integers".into()),
        },
        (_, Target::Typed) => match error {
            Some(e) if e.starts_with("WRONGTYPE") => Ok(()),
            _ => Err("expected WRONGTYPE".into()),
        },
        (_, Target::Junk) => match error {
            Some(e) if e.starts_with("ERR") => Ok(()),
            _ => Err("expected an ERR error for a string that is no limiter".into()),
        },
        (Expect::Reset, Target::Absent) => expect_int(reply, &[0]),
        (Expect::Reset, _) => expect_int(reply, &[0, 1]),
        (Expect::Valid(call), Target::OtherAlgorithm(stored)) => match error {
            Some(e)
                if e.starts_with("ERR")
                    && e.to_ascii_uppercase().contains(stored.name())
                    && e.to_ascii_uppercase().contains(call.algorithm.name()) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "expected an ERR naming {} and {}",
                stored.name(),
                call.algorithm.name()
            )),
        },
        (Expect::Valid(call), target) => {
            let five = reply.five().ok_or("expected five integers")?;
            well_formed(five)?;
            valid_reply(
                &call,
                five,
                matches!(target, Target::Absent | Target::Fresh),
            )
        }
    }
}

fn expect_int(reply: &Reply, allowed: &[i64]) -> Result<(), String> {
    match reply.int() {
        Some(n) if allowed.contains(&n) => Ok(()),
        _ => Err(format!("expected an integer in {allowed:?}")),
    }
}

fn well_formed(five: [i64; 5]) -> Result<(), String> {
    let [allowed, capacity, remaining, reset_after, retry_after] = five;
    let ok = (allowed == 0 || allowed == 1)
        && capacity >= 1
        && (0..=capacity).contains(&remaining)
        && reset_after >= 0
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

/// What a valid CHECK or QUOTA must answer; `fresh` when the key held no state.
fn valid_reply(call: &Call, five: [i64; 5], fresh: bool) -> Result<(), String> {
    let [allowed, capacity, remaining, reset_after, retry_after] = five;
    let cap = call.capacity() as i64;
    let cost = if call.command == Command::Quota {
        1
    } else {
        call.cost as i64
    };
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
    if !fresh {
        return Ok(());
    }
    if cost > cap {
        return if five == [0, cap, cap, 0, -1] {
            Ok(())
        } else {
            Err(format!("expected [0, {cap}, {cap}, 0, -1] on a fresh key"))
        };
    }
    if allowed != 1 {
        return Err("a fresh limiter admits any cost within its capacity".into());
    }
    // Rounding may err toward denial by one unit.
    let exact = cap - cost;
    let slack = if call.algorithm == Algorithm::Fixed {
        0
    } else {
        1
    };
    if !(exact - slack..=exact).contains(&remaining) {
        return Err(format!("remaining should be {exact}"));
    }
    let period = call.period_ms as i128;
    let longest = match call.algorithm {
        Algorithm::Fixed => period,
        Algorithm::Sliding => 2 * period,
        Algorithm::Gcra => (cost as i128 * period).div_euclid(call.limit as i128) + 1,
    };
    let longest = longest.min(i64::MAX as i128) as i64;
    match (cost, reset_after) {
        (0, 0) => Ok(()),
        (0, _) => Err("nothing spent on a fresh key: reset_after is 0".into()),
        (_, r) if r >= 1 && r <= longest => Ok(()),
        _ => Err(format!("reset_after should be within 1..={longest}")),
    }
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

    let mut tally = [0u64; 4];
    let mut number = 0u64;
    while number < cases {
        let size = BATCH.min((cases - number) as usize);
        let batch: Vec<Case> = (0..size)
            .map(|i| generate(&mut rng, number + i as u64))
            .collect();
        number += size as u64;
        let commands: Vec<Vec<Vec<u8>>> = batch.iter().map(|c| c.args.clone()).collect();
        let replies = raw.try_pipeline(&commands).unwrap_or_else(|e| {
            panic!(
                "the connection failed in the batch of cases {}..{number} (FUZZ_SEED={seed}): {e}\n\
                 did the server crash? log:\n{}",
                number - size as u64,
                server.log()
            )
        });
        for (case, reply) in batch.iter().zip(&replies) {
            tally[match case.expect {
                Expect::Error => 0,
                Expect::Valid(_) => 1,
                Expect::Reset => 2,
                Expect::Either => 3,
            }] += 1;
            if let Err(why) = verify(case, reply) {
                fail(seed, case, reply, &why);
            }
        }
        // No call may have written a key meant to stay absent.
        let absent: Vec<&Case> = batch
            .iter()
            .filter(|c| matches!(c.target, Target::Absent))
            .collect();
        let mut exists = vec![b"EXISTS".to_vec()];
        exists.extend(absent.iter().map(|c| c.key.clone()));
        if absent.is_empty() {
            continue;
        }
        if raw.call(&exists) != Reply::Int(0) {
            for case in absent {
                let reply = raw.call(&[b"EXISTS".as_slice(), &case.key]);
                if reply != Reply::Int(0) {
                    fail(
                        seed,
                        case,
                        &reply,
                        "this call wrote a key it must not write",
                    );
                }
            }
        }
    }
    println!(
        "fuzz: {} bad-argument calls, {} valid CHECK/QUOTA, {} valid RESET, {} ambiguous",
        tally[0], tally[1], tally[2], tally[3]
    );

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
