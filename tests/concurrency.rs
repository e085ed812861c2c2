//! Many clients hammering one key, or one user's several keys through MCHECK: no window ever
//! admits more than its capacity, and the stored state accounts for exactly what was admitted.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

const CLIENTS: usize = 50;
const CALLS_PER_CLIENT: usize = 6;

/// Runs `CLIENTS` connections at once, each sending `CALLS_PER_CLIENT` CHECKs of the cost that
/// `cost_of(client, call)` gives, and returns the units admitted.
fn hammer(server: &Server, args: &[&str], cost_of: fn(usize, usize) -> u64) -> u64 {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let barrier = Arc::clone(&barrier);
            let mut con = server.con();
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            thread::spawn(move || {
                barrier.wait();
                let mut admitted = 0;
                for i in 0..CALLS_PER_CLIENT {
                    let cost = cost_of(client, i);
                    let mut full = args.clone();
                    full.extend(["COST".to_string(), cost.to_string()]);
                    let d = check(&mut con, &full);
                    if d.is_allowed() {
                        admitted += cost;
                    }
                }
                admitted
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a client thread panicked"))
        .sum()
}

#[test]
fn fifty_clients_get_exactly_the_limit() {
    let server = Server::start();
    let mut con = server.con();
    for algorithm in ALGORITHMS {
        let key = format!("hot:{algorithm}");
        // A day-long period: nothing refills or rolls over while the test runs (GCRA drips one
        // unit back every 864 s).
        let args = [key.as_str(), "100", "1d", "ALGORITHM", algorithm];
        let admitted = hammer(&server, &args, |_, _| 1);
        assert_eq!(
            admitted,
            100,
            "{algorithm}: {} requests for a limit of 100",
            CLIENTS * CALLS_PER_CLIENT
        );
        let after = check(
            &mut con,
            &[
                key.as_str(),
                "100",
                "1d",
                "ALGORITHM",
                algorithm,
                "COST",
                "0",
            ],
        );
        assert_eq!(after.remaining, 0, "{algorithm}: {after:?}");
        let next = quota(&mut con, &args);
        assert_eq!(next.allowed, 0, "{algorithm}: {next:?}");
    }
    assert_eq!(get_text(&mut con, "hot:FIXED"), "100");
    let sliding = get_text(&mut con, "hot:SLIDING");
    assert!(sliding.ends_with(":0:100"), "{sliding:?}");
}

#[test]
fn mixed_costs_never_exceed_the_limit_and_are_all_recorded() {
    let server = Server::start();
    let mut con = server.con();
    for algorithm in ALGORITHMS {
        let key = format!("mixed:{algorithm}");
        let args = [key.as_str(), "100", "1d", "ALGORITHM", algorithm];
        let admitted = hammer(&server, &args, |client, call| ((client + call) % 4) as u64);
        assert!(
            admitted <= 100,
            "{algorithm}: admitted {admitted} units for a limit of 100"
        );
        // Below 98 units every request (cost 3 at most) fits, and the clients ask for far more
        // than 100 in total: so the limiter must end between 98 and 100.
        assert!(
            admitted >= 98,
            "{algorithm}: admitted only {admitted} units of 100"
        );
        let state = check(
            &mut con,
            &[
                key.as_str(),
                "100",
                "1d",
                "ALGORITHM",
                algorithm,
                "COST",
                "0",
            ],
        );
        assert_eq!(
            state.remaining as u64,
            100 - admitted,
            "{algorithm}: the state records exactly the admitted units: {state:?}"
        );
        if algorithm == "FIXED" {
            assert_eq!(get_text(&mut con, &key), admitted.to_string());
        }
    }
}

/// The MCHECK test's policies on one user: requests per second and per minute, and tokens per
/// minute, whose cost varies. In a run shorter than a second, the tokens policy denies the
/// costlier requests as it fills, and the per-minute one then denies everything. All FIXED, so that what each key holds is exactly the sum of the
/// costs admitted in its window, which WITHWINDOW names.
const USER_KEYS: [&str; 3] = ["rl:{u1}:a", "rl:{u1}:b", "rl:{u1}:c"];
const USER_LIMITS: [u64; 3] = [40, 30, 100];

/// Issue 10: 50 connections, each MCHECKing the three policies of one user ten times with
/// token costs from 1 to 7. No policy ever admits more than its limit in a window, a denial
/// spends nothing anywhere, and each key ends up holding exactly the sum of the costs admitted
/// in its current window: an oracle built from the admitted replies (their WITHWINDOW windows
/// and costs) agrees with the server.
#[test]
fn fifty_clients_mcheck_three_policies_and_every_count_matches_the_admitted_costs() {
    let server = Server::start();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let barrier = Arc::clone(&barrier);
            let mut con = server.con();
            thread::spawn(move || {
                barrier.wait();
                // (cost under c, window of each policy) of every admitted request.
                let mut admitted: Vec<(u64, [i64; 3])> = Vec::new();
                for i in 0..10 {
                    let cost = ((client * 7 + i * 3) % 7 + 1) as u64;
                    let cost_text = cost.to_string();
                    let m = mcheck(
                        &mut con,
                        &[
                            "3",
                            USER_KEYS[0],
                            USER_KEYS[1],
                            USER_KEYS[2],
                            "LIMIT",
                            "40",
                            "1s",
                            "LIMIT",
                            "30",
                            "1m",
                            "LIMIT",
                            "100",
                            "1m",
                            "COST",
                            &cost_text,
                            "WITHWINDOW",
                        ],
                    );
                    let each_admits = (0..3).all(|p| m.decision(p).is_allowed());
                    assert_eq!(m.is_allowed(), each_admits, "{m:?}");
                    if m.is_allowed() {
                        let windows = [m.policies[0][5], m.policies[1][5], m.policies[2][5]];
                        admitted.push((cost, windows));
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: Vec<(u64, [i64; 3])> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("a client thread panicked"))
        .collect();
    assert!(!admitted.is_empty());

    // The oracle: units admitted in each window of each policy.
    let mut spent: [BTreeMap<i64, u64>; 3] = Default::default();
    for (cost, windows) in &admitted {
        for policy in 0..3 {
            let units = if policy == 2 { *cost } else { 1 };
            *spent[policy].entry(windows[policy]).or_default() += units;
        }
    }
    for policy in 0..3 {
        for (window, units) in &spent[policy] {
            assert!(
                *units <= USER_LIMITS[policy],
                "{}: {units} units admitted in the window ending at {window}, limit {}",
                USER_KEYS[policy],
                USER_LIMITS[policy]
            );
        }
    }

    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    for policy in 0..3 {
        let key = USER_KEYS[policy];
        // Value and expiry read at once, so that the key cannot expire in between.
        let state = read_atomically(&mut con, key, has_pexpiretime);
        let Some((value, expire_at)) = state else {
            continue; // The 1 s window ended before it was read.
        };
        let tolerance = expiry_tolerance_ms(has_pexpiretime) as i64;
        let (window, units) = spent[policy]
            .iter()
            .find(|(window, _)| (**window - expire_at).abs() <= tolerance)
            .unwrap_or_else(|| {
                panic!("{key} expires at {expire_at}, in no window an admitted reply named")
            });
        assert_eq!(
            value, *units,
            "{key}: the stored count vs the units admitted in the window ending at {window}"
        );
    }
    println!(
        "{} of {} MCHECKs admitted; units per window: {spent:?}",
        admitted.len(),
        CLIENTS * 10
    );
}

/// `GET key` and its absolute expiry in one transaction: `None` when the key is gone.
fn read_atomically(
    con: &mut redis::Connection,
    key: &str,
    has_pexpiretime: bool,
) -> Option<(u64, i64)> {
    let expiry = if has_pexpiretime {
        "PEXPIRETIME"
    } else {
        "PTTL"
    };
    let (value, at, time): (Option<u64>, i64, (u64, u64)) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(key)
        .cmd(expiry)
        .arg(key)
        .cmd("TIME")
        .query(con)
        .unwrap();
    let value = value?;
    let at = if has_pexpiretime {
        at
    } else {
        (time.0 * 1000 + time.1 / 1000) as i64 + at
    };
    Some((value, at))
}
