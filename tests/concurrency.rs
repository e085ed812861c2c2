//! Many clients hammering one key: no window ever admits more than its capacity, and the stored
//! state accounts for exactly what was admitted.

mod common;

use common::*;
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
