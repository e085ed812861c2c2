//! Failover: a replica holds its master's limiters exactly (value and absolute expiry), so when
//! it is promoted, a key at its limit stays at its limit and nothing resets. Both with `FAILOVER`
//! on a master with one replica, and with `CLUSTER FAILOVER` in a cluster.

mod common;

use common::cluster::*;
use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One limiter of the traffic before the failover, and what it spent.
struct Limiter {
    args: Vec<String>,
    limit: i64,
    spent: i64,
}

/// How many limiters of each algorithm the failover tests drive.
const PER_ALGORITHM: usize = 40;

/// `PER_ALGORITHM` limiters per algorithm, with limits 2 to 41; even ones are driven to their
/// limit (and one request past it), odd ones spend half. `key_of(n)` names the n-th limiter.
/// Returns them and the number of requests sent.
fn drive_limiters<C: redis::ConnectionLike>(
    con: &mut C,
    key_of: impl Fn(usize) -> String,
) -> (Vec<Limiter>, usize) {
    let mut limiters = Vec::new();
    let mut ops = 0;
    for (a, algorithm) in ALGORITHMS.iter().enumerate() {
        for i in 0..PER_ALGORITHM {
            let limit = 2 + i as i64;
            let key = format!(
                "{}:{}",
                key_of(a * PER_ALGORITHM + i),
                algorithm.to_lowercase()
            );
            let args = limiter_args(&key, &limit.to_string(), "1h", algorithm, &[]);
            let spent = if i % 2 == 0 { limit } else { limit / 2 };
            for n in 1..=spent {
                let d = check(con, &args);
                assert_eq!((d.allowed, d.remaining), (1, limit - n), "{args:?}: {d:?}");
            }
            ops += spent as usize;
            if spent == limit {
                let d = check(con, &args);
                assert_eq!((d.allowed, d.remaining), (0, 0), "{args:?}: {d:?}");
                ops += 1;
            }
            limiters.push(Limiter { args, limit, spent });
        }
    }
    (limiters, ops)
}

/// Every key's value and absolute expiry.
fn snapshot_all(con: &mut redis::Connection, has_pexpiretime: bool) -> BTreeMap<String, Snapshot> {
    all_keys(con)
        .into_iter()
        .map(|k| {
            let key = String::from_utf8(k).unwrap();
            let state = snapshot(con, &key, has_pexpiretime);
            (key, state)
        })
        .collect()
}

/// Asserts that `con` holds exactly the keys of `before`, with their values and expiries.
fn assert_same_state(
    con: &mut redis::Connection,
    before: &BTreeMap<String, Snapshot>,
    has_pexpiretime: bool,
) {
    let keys: Vec<String> = all_keys(con)
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(
        keys,
        before.keys().cloned().collect::<Vec<_>>(),
        "the new master has the old master's keys"
    );
    for (key, state) in before {
        assert_unchanged(con, key, state, has_pexpiretime, "after the failover");
    }
}

/// Every limiter goes on from where it stopped: a full one is denied with nothing remaining, a
/// partly spent one admits its next unit.
fn assert_limiters_continue<C: redis::ConnectionLike>(con: &mut C, limiters: &[Limiter]) {
    for limiter in limiters {
        let d = check(con, &limiter.args);
        let expected = if limiter.spent == limiter.limit {
            (0, 0)
        } else {
            (1, limiter.limit - limiter.spent - 1)
        };
        assert_eq!(
            (d.allowed, d.remaining),
            expected,
            "{:?} after the failover: {d:?}",
            limiter.args
        );
    }
}

/// Checks every full limiter in turn through a cluster client until `stop`: each must be
/// answered, denied, with nothing remaining.
fn check_full_limiters(
    urls: &[String],
    full: &[Vec<String>],
    calls: &AtomicUsize,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut client = cluster_client(urls);
    while !stop.load(Ordering::Relaxed) {
        for args in full {
            let reply: Vec<i64> = redis::cmd("RATELIMIT.CHECK")
                .arg(args)
                .query(&mut client)
                .map_err(|e| format!("CHECK {args:?} failed: {e}"))?;
            let reply: [i64; 5] = reply
                .try_into()
                .map_err(|r| format!("CHECK {args:?} answered {r:?}"))?;
            let d = Decision::from_array(reply);
            if (d.allowed, d.remaining) != (0, 0) {
                return Err(format!("{args:?} is no longer at its limit: {d:?}"));
            }
            calls.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Waits until `calls` has grown by `count`, or the caller has stopped on an error (which the
/// test reports when it joins the thread).
fn wait_for_calls(
    calls: &AtomicUsize,
    count: usize,
    caller: &thread::JoinHandle<Result<(), String>>,
) {
    let target = calls.load(Ordering::Relaxed) + count;
    let deadline = Instant::now() + Duration::from_secs(20);
    while calls.load(Ordering::Relaxed) < target && !caller.is_finished() {
        assert!(Instant::now() < deadline, "the caller stalled");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_limited_key_stays_limited_after_failover_to_the_replica() {
    skip_if_external!("needs a replica");
    let master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let replica = Server::start_replica_of(&master, &[]);
    let mut on_master = master.con();
    if !has_command(&mut on_master, "failover") {
        eprintln!("skipped: this server has no FAILOVER command (Redis 6.2+)");
        return;
    }
    let has_pexpiretime = has_command(&mut on_master, "pexpiretime");
    let (limiters, ops) = drive_limiters(&mut on_master, |n| format!("user:{n}"));
    let before = snapshot_all(&mut on_master, has_pexpiretime);
    wait_for_replica(&mut on_master);

    let reply = call(&mut on_master, &["FAILOVER", "TIMEOUT", "10000"]);
    assert!(matches!(reply, redis::Value::Okay), "FAILOVER: {reply:?}");
    wait_for_role(&replica, "master");
    wait_for_role(&master, "slave");

    let mut on_new_master = replica.con();
    assert_same_state(&mut on_new_master, &before, has_pexpiretime);
    assert_limiters_continue(&mut on_new_master, &limiters);
    // The old master now replicates the new one, with the new master's decisions.
    wait_for_replica(&mut on_new_master);
    let mut on_old_master = master.con();
    for limiter in &limiters {
        let key = &limiter.args[0];
        assert_eq!(
            get(&mut on_old_master, key),
            get(&mut on_new_master, key),
            "{key} on the demoted master"
        );
    }
    println!(
        "FAILOVER: {ops} requests before, {} limiters compared after, {} at their limit",
        before.len(),
        limiters.iter().filter(|l| l.spent == l.limit).count()
    );
}

#[test]
fn a_limited_key_stays_limited_after_cluster_failover() {
    skip_if_external!("needs a cluster");
    let cluster = Cluster::start();
    let mut client = cluster.client();
    let tags = slot_tags("user:");
    // Keys spread over the slot space, so every master holds some.
    let spacing = SLOTS as usize / (ALGORITHMS.len() * PER_ALGORITHM);
    let (limiters, ops) = drive_limiters(&mut client, |n| format!("{{{}}}", tags[n * spacing]));
    let shard = cluster.shards().remove(0);
    let old_master = cluster.node(shard.master);
    let promoted = cluster.node(shard.replicas[0]);
    let mut on_master = old_master.con();
    let has_pexpiretime = has_command(&mut on_master, "pexpiretime");
    let before = snapshot_all(&mut on_master, has_pexpiretime);
    assert!(before.len() >= 5, "the shard holds limiters: {before:?}");
    wait_for_replica(&mut on_master);

    // Meanwhile, a caller keeps checking the full limiters: none may fail or be admitted.
    let full: Vec<Vec<String>> = limiters
        .iter()
        .filter(|l| l.spent == l.limit)
        .map(|l| l.args.clone())
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
        let (calls, stop) = (calls.clone(), stop.clone());
        thread::spawn(move || check_full_limiters(&urls, &full, &calls, &stop))
    };
    wait_for_calls(&calls, 100, &caller);
    let calls_before = calls.load(Ordering::Relaxed);

    let mut on_replica = promoted.con();
    let reply = call(&mut on_replica, &["CLUSTER", "FAILOVER"]);
    assert!(
        matches!(reply, redis::Value::Okay),
        "CLUSTER FAILOVER: {reply:?}"
    );
    wait_for_role(promoted, "master");
    cluster.wait_until_stable();
    wait_for_calls(&calls, 100, &caller);
    stop.store(true, Ordering::Relaxed);
    let calls_total = calls.load(Ordering::Relaxed);
    if let Err(error) = caller.join().expect("the caller thread panicked") {
        panic!("the caller saw, after {calls_total} checks: {error}");
    }
    let now = cluster.shards();
    let after = now.iter().find(|s| s.ranges == shard.ranges).unwrap();
    assert_eq!(
        (after.master, after.replicas.clone()),
        (promoted.port(), vec![old_master.port()]),
        "the replica was promoted and the old master follows it"
    );

    let mut on_new_master = promoted.con();
    assert_same_state(&mut on_new_master, &before, has_pexpiretime);
    // Through the cluster client, which follows the MOVED from the demoted master.
    assert_limiters_continue(&mut client, &limiters);
    println!(
        "CLUSTER FAILOVER: {ops} requests before over all shards, {} limiters compared on the \
         promoted node, {} at their limit; {calls_total} checks of full limiters meanwhile, \
         {} of them from the failover on, all denied, none failed",
        before.len(),
        limiters.iter().filter(|l| l.spent == l.limit).count(),
        calls_total - calls_before
    );
}
