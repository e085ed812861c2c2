//! Redis Cluster: three masters with one replica each, the module loaded on every node. Every
//! command but MCHECK has exactly one key, so a cluster client routes it like a `GET`: a
//! limiter's state lives only on the master that owns its slot (and on that master's replica),
//! and goes with the slot when the slot moves. MCHECK's keys must share a slot (a hash tag), as
//! a multi-key core command's do.

mod common;

use common::cluster::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How many checks the slot-spread test sends: one per key, each key in its own slot.
const CHECKS: usize = 10_000;

#[test]
fn ten_thousand_checks_across_the_slots_are_answered_and_stored_on_the_owning_master() {
    skip_if_external!("needs a cluster");
    let cluster = Cluster::start();
    let mut client = cluster.client();
    let tags = slot_tags("user:");
    // 10,000 distinct slots spread evenly over 0..=16383, so every master gets its share.
    let keys: BTreeMap<String, &str> = (0..CHECKS)
        .map(|i| {
            let slot = i * SLOTS as usize / CHECKS;
            let algorithm = ALGORITHMS[i % ALGORITHMS.len()];
            (format!("{{{}}}:search", tags[slot]), algorithm)
        })
        .collect();
    assert_eq!(keys.len(), CHECKS);
    let start = Instant::now();
    for (key, algorithm) in &keys {
        let d = check(&mut client, &[key, "2", "1h", "ALGORITHM", algorithm]);
        assert_eq!((d.allowed, d.limit, d.remaining), (1, 2, 1), "{key}: {d:?}");
    }
    let elapsed = start.elapsed();

    let mut stored = BTreeSet::new();
    let mut per_master = Vec::new();
    for shard in cluster.shards() {
        let mut master = cluster.node(shard.master).con();
        let here: Vec<String> = all_keys(&mut master)
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect();
        for key in &here {
            let slot = key_slot(key.as_bytes());
            assert!(
                shard.owns(slot),
                "{key} (slot {slot}) is stored on the master on port {}, which does not own it",
                shard.master
            );
            let value = get_text(&mut master, key);
            let well_formed = match keys[key] {
                "FIXED" => value == "1",
                "SLIDING" => value.starts_with("s:") && value.ends_with(":1"),
                _ => value.starts_with('-'),
            };
            assert!(well_formed, "{key} ({}) holds {value:?}", keys[key]);
            assert!(stored.insert(key.clone()), "{key} is stored on two masters");
        }
        // The master's replica comes to hold the same keys.
        let replica = cluster.node(shard.replicas[0]);
        let mut on_replica = replica.con();
        let deadline = Instant::now() + Duration::from_secs(10);
        while dbsize(&mut on_replica) != here.len() as i64 {
            assert!(
                Instant::now() < deadline,
                "the replica on port {} holds {} keys, its master {}:\n{}",
                replica.port(),
                dbsize(&mut on_replica),
                here.len(),
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut on_replica)
                    .unwrap()
            );
            thread::sleep(Duration::from_millis(10));
        }
        per_master.push((shard.master, here.len()));
    }
    let expected: BTreeSet<String> = keys.keys().cloned().collect();
    assert_eq!(stored, expected, "every key is stored, once");
    for (port, count) in &per_master {
        assert!(
            *count > CHECKS / 4,
            "the master on port {port} holds only {count} keys: {per_master:?}"
        );
    }
    println!(
        "{CHECKS} checks over {CHECKS} slots in {elapsed:?}; keys per master (port, keys): \
         {per_master:?}"
    );
}

/// Every leaf of a reply as text, depth first.
fn words(value: &redis::Value) -> Vec<String> {
    match value {
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().flat_map(words).collect()
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| words(k).into_iter().chain(words(v)))
            .collect(),
        redis::Value::BulkString(bytes) => vec![String::from_utf8_lossy(bytes).into_owned()],
        redis::Value::SimpleString(text) => vec![text.clone()],
        redis::Value::Int(n) => vec![n.to_string()],
        other => vec![format!("{other:?}")],
    }
}

fn contains_run(haystack: &[String], needle: &[&str]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `COMMAND INFO` gives each command one key, the first argument: as first/last/step 1/1/1 on
/// every server, and as a key spec where the server has key specs (Redis 7.0+, Valkey), found by
/// the reply's shape, not the version.
fn assert_key_positions(con: &mut redis::Connection) {
    for name in [
        "ratelimit.check",
        "ratelimit.quota",
        "ratelimit.refund",
        "ratelimit.reset",
    ] {
        let reply = call(con, &["COMMAND", "INFO", name]);
        let redis::Value::Array(mut entries) = reply else {
            panic!("COMMAND INFO {name}: {reply:?}");
        };
        let redis::Value::Array(fields) = entries.remove(0) else {
            panic!("COMMAND INFO {name}: no entry");
        };
        let positions: Vec<String> = fields[3..6].iter().flat_map(words).collect();
        assert_eq!(positions, ["1", "1", "1"], "{name}: first, last, step");
        if let Some(specs) = fields.get(8) {
            let specs = words(specs);
            assert!(
                contains_run(
                    &specs,
                    &["begin_search", "type", "index", "spec", "index", "1"]
                ) && contains_run(
                    &specs,
                    &["find_keys", "type", "range", "spec", "lastkey", "0"]
                ),
                "{name}: the key spec is the one argument at index 1: {specs:?}"
            );
        }
    }
}

/// Every command names its keys where a cluster looks for them (COMMAND INFO, COMMAND GETKEYS,
/// MCHECK's every key), `redis-cli -c` on a master that does not own the key follows the
/// redirection for each command, a cluster client runs MCHECK and REFUND on one user's keys
/// (issue 10), and MCHECK's keys of two slots are refused with CROSSSLOT.
#[test]
fn every_command_names_its_keys_and_redis_cli_c_drives_every_command() {
    skip_if_external!("needs a cluster");
    let cluster = Cluster::start();
    let commands: [&[&str]; 4] = [
        &[
            "RATELIMIT.CHECK",
            "{user:42}:search",
            "3",
            "10s",
            "ALGORITHM",
            "GCRA",
            "BURST",
            "2",
            "COST",
            "1",
            "DRYRUN",
        ],
        &["RATELIMIT.QUOTA", "{user:42}:search", "3", "10s"],
        &[
            "RATELIMIT.REFUND",
            "{user:42}:search",
            "3",
            "10s",
            "COST",
            "1",
            "WINDOW",
            "7",
        ],
        &["RATELIMIT.RESET", "{user:42}:search"],
    ];
    for node in cluster.nodes() {
        let mut con = node.con();
        assert_key_positions(&mut con);
        for command in commands {
            let mut getkeys = vec!["COMMAND", "GETKEYS"];
            getkeys.extend_from_slice(command);
            let keys: Vec<String> = redis::cmd("COMMAND")
                .arg(&getkeys[1..])
                .query(&mut con)
                .unwrap_or_else(|e| panic!("{} on {}: {e}", getkeys.join(" "), node.port()));
            assert_eq!(keys, ["{user:42}:search"], "{}", getkeys.join(" "));
        }
        // MCHECK names every one of its keys, and only them.
        for (mcheck, expected) in [
            (
                &[
                    "2", "{u}a", "{u}b", "LIMIT", "5", "1h", "LIMIT", "9", "1m", "DRYRUN",
                ][..],
                &["{u}a", "{u}b"][..],
            ),
            // A key may be named LIMIT: keys are found by position.
            (
                &[
                    "3", "{u}a", "LIMIT", "{u}c", "LIMIT", "1", "1s", "LIMIT", "1", "1s", "LIMIT",
                    "1", "1s",
                ][..],
                &["{u}a", "LIMIT", "{u}c"][..],
            ),
        ] {
            let keys: Vec<String> = redis::cmd("COMMAND")
                .arg("GETKEYS")
                .arg("RATELIMIT.MCHECK")
                .arg(mcheck)
                .query(&mut con)
                .unwrap_or_else(|e| panic!("GETKEYS MCHECK {mcheck:?} on {}: {e}", node.port()));
            assert_eq!(
                keys, expected,
                "COMMAND GETKEYS RATELIMIT.MCHECK {mcheck:?}"
            );
        }
    }

    // redis-cli -c, connected to a master that does not own the key, follows the redirection.
    let key = "{user:42}:search";
    let owner = cluster.shard_of(key);
    let elsewhere = cluster
        .shards()
        .into_iter()
        .find(|s| s.master != owner.master)
        .unwrap();
    let port = elsewhere.master.to_string();
    let cli = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["-c", "-h", "127.0.0.1", "-p", port.as_str()];
        full.extend_from_slice(args);
        let out = run_cli(&full);
        assert!(out.success, "redis-cli {}: {out:?}", full.join(" "));
        out.stdout.lines().map(|l| l.trim().to_string()).collect()
    };
    let ints = |lines: Vec<String>| -> Vec<i64> {
        lines
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse()
                    .unwrap_or_else(|_| panic!("not an integer: {lines:?}"))
            })
            .collect()
    };
    let limiter = [key, "2", "1h"];
    let with = |name: &'static str| -> Vec<&str> {
        let mut args = vec![name];
        args.extend_from_slice(&limiter);
        args
    };
    for expected in [[1, 2, 1], [1, 2, 0], [0, 2, 0]] {
        let reply = ints(cli(&with("RATELIMIT.CHECK")));
        assert_eq!(reply.len(), 5, "{reply:?}");
        assert_eq!(
            reply[..3],
            expected,
            "RATELIMIT.CHECK through redis-cli -c: {reply:?}"
        );
        Decision::from_array(reply.try_into().unwrap());
    }
    let reply = ints(cli(&with("RATELIMIT.QUOTA")));
    assert_eq!(reply[..3], [0, 2, 0], "RATELIMIT.QUOTA: {reply:?}");
    let mut on_owner = cluster.node(owner.master).con();
    assert_eq!(
        get_text(&mut on_owner, key),
        "2",
        "the state is on the owning master"
    );
    let errors = cli(&["RATELIMIT.CHECK", key, "x", "1h"]).join("\n");
    assert!(errors.contains("ERR invalid limit 'x'"), "{errors}");
    assert_eq!(ints(cli(&["RATELIMIT.RESET", key])), [1]);
    assert_eq!(ints(cli(&["RATELIMIT.RESET", key])), [0]);
    assert!(!exists(&mut on_owner, key), "RESET deleted the state");
    let reply = ints(cli(&["RATELIMIT.MCHECK", "1", key, "LIMIT", "2", "1h"]));
    assert_eq!(
        reply,
        [1, 0, 1, 2, 1, HOUR_MS, 0],
        "RATELIMIT.MCHECK: {reply:?}"
    );
    let reply = ints(cli(&["RATELIMIT.REFUND", key, "2", "1h", "COST", "1"]));
    assert_eq!(reply, [1, 2, 2, 0, 0], "RATELIMIT.REFUND: {reply:?}");
    assert!(
        !exists(&mut on_owner, key),
        "the refund emptied the limiter"
    );

    // One user's keys share a slot through their hash tag: a cluster client MCHECKs them on
    // the master that owns it, and REFUNDs there too.
    let mut client = cluster.client();
    let user = ["{user:7}:rps", "{user:7}:tpm"];
    let policies = [
        "2",
        user[0],
        user[1],
        "LIMIT",
        "2",
        "1h",
        "LIMIT",
        "100",
        "1h",
        "ALGORITHM",
        "GCRA",
        "COST",
        "30",
    ];
    for expected in [1, 1, 0] {
        let m = mcheck(&mut client, &policies);
        assert_eq!(
            m.allowed, expected,
            "MCHECK through a cluster client: {m:?}"
        );
    }
    let mut on_owner = cluster.node(cluster.shard_of(user[0]).master).con();
    assert_eq!(get_text(&mut on_owner, user[0]), "2");
    assert!(get_text(&mut on_owner, user[1]).starts_with('-'));
    let back = refund(&mut client, &[user[0], "2", "1h", "COST", "1"]);
    assert_eq!(
        back[..3],
        [1, 2, 1],
        "REFUND through a cluster client: {back:?}"
    );
    assert_eq!(get_text(&mut on_owner, user[0]), "1");

    // Without a common hash tag, every master refuses the keys of two slots.
    for shard in cluster.shards() {
        let mut con = cluster.node(shard.master).con();
        let error = expect_error(
            &mut con,
            &[
                "RATELIMIT.MCHECK",
                "2",
                "{a}x",
                "{b}y",
                "LIMIT",
                "1",
                "1h",
                "LIMIT",
                "1",
                "1h",
            ],
        );
        assert!(error.starts_with("CROSSSLOT"), "{error}");
    }
}

/// The traffic of the resharding test: it checks, through a cluster client, limiters that are
/// full (each must be denied, remaining 0), a busy limiter in the same slot (always admitted,
/// so the slot sees writes while it moves) and limiters in other slots, until `stop`.
fn traffic(
    urls: Vec<String>,
    full: Vec<Vec<String>>,
    others: Vec<Vec<String>>,
    ops: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut client = cluster_client(&urls);
    while !stop.load(Ordering::Relaxed) {
        for (args, must_be_full) in full
            .iter()
            .map(|a| (a, true))
            .chain(others.iter().map(|a| (a, false)))
        {
            let reply: Result<Vec<i64>, _> =
                redis::cmd("RATELIMIT.CHECK").arg(args).query(&mut client);
            let d = match reply {
                Ok(reply) if reply.len() == 5 => Decision::from_array(reply.try_into().unwrap()),
                Ok(reply) => return Err(format!("CHECK {args:?} answered {reply:?}")),
                Err(e) => return Err(format!("CHECK {args:?} failed: {e}")),
            };
            ops.fetch_add(1, Ordering::Relaxed);
            if must_be_full && (d.allowed, d.remaining) != (0, 0) {
                return Err(format!("{args:?} is no longer at its limit: {d:?}"));
            }
            if !must_be_full && !d.is_allowed() {
                return Err(format!("{args:?} was denied: {d:?}"));
            }
        }
    }
    Ok(())
}

/// Waits until the traffic has made `count` more calls, so that each step of the move happens
/// with traffic in flight; returns at once if the traffic has stopped on an error, which the
/// test reports when it joins the thread.
fn wait_for_traffic(
    ops: &AtomicUsize,
    count: usize,
    step: &str,
    worker: &thread::JoinHandle<Result<(), String>>,
) -> usize {
    let start = ops.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ops.load(Ordering::Relaxed) < start + count && !worker.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the traffic stalled during: {step}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    ops.load(Ordering::Relaxed)
}

fn ok(con: &mut redis::Connection, args: &[&str]) {
    let reply = call(con, args);
    assert!(
        matches!(reply, redis::Value::Okay),
        "{} answered {reply:?}",
        args.join(" ")
    );
}

#[test]
fn a_full_limiter_stays_full_while_its_slot_moves_under_traffic() {
    skip_if_external!("needs a cluster");
    let cluster = Cluster::start();
    let mut client = cluster.client();
    let shards = cluster.shards();
    let (source, target, third) = (&shards[0], &shards[1], &shards[2]);
    let slot = source.ranges[0].0 + 100;
    let tags = slot_tags("user:");
    let tag = &tags[slot as usize];
    let full: Vec<Vec<String>> = ALGORITHMS
        .iter()
        .map(|a| {
            limiter_args(
                &format!("{{{tag}}}:{}", a.to_lowercase()),
                "3",
                "1h",
                a,
                &[],
            )
        })
        .collect();
    for args in &full {
        for expected in [1, 1, 1, 0] {
            assert_eq!(check(&mut client, args).allowed, expected, "{args:?}");
        }
    }
    let busy = vec![format!("{{{tag}}}:busy"), "1000000000".into(), "1h".into()];
    let mut others = vec![busy.clone()];
    for shard in &shards {
        let other_slot = shard.ranges[0].1 - 5;
        others.push(limiter_args(
            &format!("{{{}}}:other", tags[other_slot as usize]),
            "1000000000",
            "1h",
            "GCRA",
            &[],
        ));
    }
    check(&mut client, &busy);

    let mut on_source = cluster.node(source.master).con();
    let mut on_target = cluster.node(target.master).con();
    let has_pexpiretime = has_command(&mut on_source, "pexpiretime");
    let before: Vec<Snapshot> = full
        .iter()
        .map(|args| snapshot(&mut on_source, &args[0], has_pexpiretime))
        .collect();
    let source_id = node_id(&mut on_source);
    let target_id = node_id(&mut on_target);
    let slot_text = slot.to_string();

    let ops = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let worker = {
        let (full, ops, stop) = (full.clone(), ops.clone(), stop.clone());
        thread::spawn(move || traffic(urls, full, others, ops, stop))
    };
    let mut marks = vec![(
        "before the move",
        wait_for_traffic(&ops, 200, "start", &worker),
    )];
    ok(
        &mut on_target,
        &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id],
    );
    ok(
        &mut on_source,
        &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id],
    );
    marks.push((
        "slot migrating",
        wait_for_traffic(&ops, 200, "migrating", &worker),
    ));
    // One key at a time, with traffic in between: for a while the slot's keys are split
    // between the two masters, and the client follows ASK for the keys already moved.
    let target_port = target.master.to_string();
    let mut moved = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg(&["GETKEYSINSLOT", &slot_text, "1"][..])
            .query(&mut on_source)
            .unwrap();
        let Some(key) = keys.first() else { break };
        ok(
            &mut on_source,
            &[
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                "",
                "0",
                "5000",
                "KEYS",
                key,
            ],
        );
        moved += 1;
        marks.push((
            "keys split",
            wait_for_traffic(&ops, 100, "keys split", &worker),
        ));
    }
    assert_eq!(
        moved, 4,
        "the slot held the three full limiters and the busy one"
    );
    for (con, name) in [
        (&mut on_target, "target"),
        (&mut on_source, "source"),
        (&mut cluster.node(third.master).con(), "third master"),
    ] {
        ok(con, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id]);
        marks.push((name, wait_for_traffic(&ops, 100, name, &worker)));
    }
    stop.store(true, Ordering::Relaxed);
    let result = worker.join().expect("the traffic thread panicked");
    let total = ops.load(Ordering::Relaxed);
    if let Err(error) = result {
        panic!("the caller saw an error after {total} calls: {error}");
    }
    cluster.wait_until_stable();
    assert!(cluster.shard_of(&full[0][0]).master == target.master);

    let count = |con: &mut redis::Connection| -> i64 {
        redis::cmd("CLUSTER")
            .arg(&["COUNTKEYSINSLOT", &slot_text][..])
            .query(con)
            .unwrap()
    };
    assert_eq!((count(&mut on_source), count(&mut on_target)), (0, 4));
    // MIGRATE carries a relative TTL, so the absolute expiry may move by the transfer's latency.
    let mut drift = 0;
    for (args, before) in full.iter().zip(&before) {
        let d = check(&mut client, args);
        assert_eq!(
            (d.allowed, d.remaining),
            (0, 0),
            "{args:?} after the move: {d:?}"
        );
        let after = snapshot(&mut on_target, &args[0], has_pexpiretime);
        assert_eq!(
            after.value, before.value,
            "{args:?}: the value moved unchanged"
        );
        let (a, b) = (before.expire_at.unwrap(), after.expire_at.unwrap());
        drift = drift.max(a.abs_diff(b));
    }
    assert!(
        drift <= 100 + expiry_tolerance_ms(has_pexpiretime),
        "the absolute expiries moved by up to {drift} ms"
    );
    println!(
        "slot {slot} moved from {} to {} under {total} checks without an error; calls at each \
         step: {marks:?}; largest expiry drift {drift} ms",
        source.master, target.master
    );
}
