//! Replication: a replica holds exactly the master's state, because the module replicates its
//! effects (`SET ... PXAT` from the master's clock, `DEL`), never the command; denied requests
//! and dry runs replicate nothing; QUOTA runs on a replica.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One limiter of the pool: its key and configuration.
struct Limiter {
    key: String,
    config: Vec<String>,
    capacity: u64,
}

fn pool() -> Vec<Limiter> {
    let periods = ["1h", "2h", "90m", "1d"];
    let mut out = Vec::new();
    for algorithm in ALGORITHMS {
        for i in 0..20u64 {
            let limit = 3 + i % 7;
            let key = format!("{}:{i}", algorithm.to_ascii_lowercase());
            let mut config = vec![
                key.clone(),
                limit.to_string(),
                periods[i as usize % periods.len()].to_string(),
                "ALGORITHM".to_string(),
                algorithm.to_string(),
            ];
            let mut capacity = limit;
            if algorithm == "GCRA" && i % 3 == 0 {
                capacity = limit + 2;
                config.extend(["BURST".to_string(), capacity.to_string()]);
            }
            out.push(Limiter {
                key,
                config,
                capacity,
            });
        }
    }
    out
}

fn seed() -> u64 {
    let seed = std::env::var("REPLICATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(local_time_ms);
    println!("replication traffic seed: {seed} (set REPLICATION_SEED to replay)");
    seed
}

#[test]
fn the_replica_holds_identical_state_after_mixed_traffic() {
    skip_if_external!("needs a replica");
    let (master, replica) = quiet_master_and_replica(&[]);
    let mut raw = master.raw();
    let mut rng = StdRng::seed_from_u64(seed());
    let limiters = pool();
    let mut commands: Vec<Vec<String>> = Vec::new();
    for _ in 0..3000 {
        let limiter = &limiters[rng.gen_range(0..limiters.len())];
        let roll = rng.gen_range(0..100);
        let mut command = vec![if roll < 80 {
            "RATELIMIT.CHECK"
        } else {
            "RATELIMIT.QUOTA"
        }
        .to_string()];
        if roll >= 97 {
            command = vec!["RATELIMIT.RESET".to_string(), limiter.key.clone()];
        } else {
            command.extend(limiter.config.iter().cloned());
            if roll < 80 {
                if rng.gen_bool(0.3) {
                    let cost = rng.gen_range(0..=limiter.capacity + 1);
                    command.extend(["COST".to_string(), cost.to_string()]);
                }
                if rng.gen_bool(0.15) {
                    command.push("DRYRUN".to_string());
                }
            }
        }
        commands.push(command);
    }
    for batch in commands.chunks(250) {
        for (command, reply) in batch.iter().zip(raw.pipeline(batch)) {
            let ok = match command[0].as_str() {
                "RATELIMIT.RESET" => matches!(reply, Reply::Int(0 | 1)),
                _ => reply.five().is_some(),
            };
            assert!(ok, "{} answered {reply:?}", show_args(command));
        }
    }

    let mut on_master = master.con();
    let mut on_replica = replica.con();
    // Values and expiries at the edges: the largest GCRA debt (an expiry beyond what a
    // millisecond clock reaches in an i64), and the largest counts.
    let max = "1000000000000000";
    for args in [
        &[
            "edge:debt",
            "1",
            "3650d",
            "ALGORITHM",
            "GCRA",
            "BURST",
            max,
            "COST",
            max,
        ][..],
        &["edge:fixed", max, "3650d", "COST", max][..],
        &[
            "edge:sliding",
            max,
            "3650d",
            "ALGORITHM",
            "SLIDING",
            "COST",
            max,
        ][..],
        &[
            "edge:gcra",
            max,
            "1h",
            "ALGORITHM",
            "GCRA",
            "BURST",
            max,
            "COST",
            max,
        ][..],
    ] {
        assert!(check(&mut on_master, args).is_allowed(), "{args:?}");
    }
    wait_for_replica(&mut on_master);
    let keys = all_keys(&mut on_master);
    assert_eq!(
        keys,
        all_keys(&mut on_replica),
        "the replica has the master's keys"
    );
    for prefix in ["fixed:", "sliding:", "gcra:"] {
        assert!(
            keys.iter().any(|k| k.starts_with(prefix.as_bytes())),
            "the traffic should leave {prefix}* keys: {keys:?}"
        );
    }
    let master_pet = has_command(&mut on_master, "pexpiretime");
    let replica_pet = has_command(&mut on_replica, "pexpiretime");
    let tolerance = expiry_tolerance_ms(master_pet) + expiry_tolerance_ms(replica_pet);
    for key in &keys {
        let key = String::from_utf8(key.clone()).unwrap();
        let m = snapshot(&mut on_master, &key, master_pet);
        let r = snapshot(&mut on_replica, &key, replica_pet);
        assert_eq!(
            m.value, r.value,
            "{key}: the same value on master and replica"
        );
        let (m_at, r_at) = (
            m.expire_at.expect("an expiry"),
            r.expire_at.expect("an expiry"),
        );
        assert!(
            m_at.abs_diff(r_at) <= tolerance,
            "{key}: the same absolute expiry on master ({m_at}) and replica ({r_at})"
        );
    }

    // Effects are replicated, never the command: the replica ran SETs and DELs, no RATELIMIT.*.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut on_replica)
        .unwrap();
    let module_calls: Vec<&str> = stats.lines().filter(|l| l.contains("ratelimit")).collect();
    assert!(
        module_calls.is_empty(),
        "the replica executed module commands: {module_calls:?}"
    );
    assert!(
        stats.contains("cmdstat_set:"),
        "the replica should have executed SETs:\n{stats}"
    );
}

#[test]
fn denied_requests_and_dry_runs_replicate_nothing() {
    skip_if_external!("needs a replica");
    let (master, replica) = quiet_master_and_replica(&[]);
    let mut con = master.con();
    for algorithm in ALGORITHMS {
        let key = format!("full:{algorithm}");
        for _ in 0..2 {
            let d = check(&mut con, &[key.as_str(), "2", "1h", "ALGORITHM", algorithm]);
            assert!(d.is_allowed());
        }
    }
    wait_for_replica(&mut con);
    let before = master_offset(&mut con);
    let mut raw = master.raw();
    let mut commands: Vec<Vec<String>> = Vec::new();
    for algorithm in ALGORITHMS {
        for key in [format!("full:{algorithm}"), format!("fresh:{algorithm}")] {
            let base = [
                "RATELIMIT.CHECK",
                key.as_str(),
                "2",
                "1h",
                "ALGORITHM",
                algorithm,
            ];
            let quota_call = [
                "RATELIMIT.QUOTA",
                key.as_str(),
                "2",
                "1h",
                "ALGORITHM",
                algorithm,
            ];
            let extras: [&[&str]; 6] = [
                &[],
                &["DRYRUN"],
                &["COST", "0"],
                &["COST", "3"],
                &["COST", "2", "DRYRUN"],
                &["COST", "x"],
            ];
            for extra in extras {
                // Plain CHECKs are denied only on the full key.
                if extra.is_empty() && key.starts_with("fresh") {
                    continue;
                }
                let command: Vec<String> =
                    base.iter().chain(extra).map(|s| s.to_string()).collect();
                commands.push(command);
            }
            commands.push(quota_call.iter().map(|s| s.to_string()).collect());
        }
    }
    let commands: Vec<Vec<String>> = commands
        .iter()
        .cycle()
        .take(commands.len() * 5)
        .cloned()
        .collect();
    for (command, reply) in commands.iter().zip(raw.pipeline(&commands)) {
        let admitted = reply
            .five()
            .map(|d| d[0] == 1 && !command.contains(&"DRYRUN".to_string()));
        let cost_zero = command.windows(2).any(|w| w[0] == "COST" && w[1] == "0");
        assert!(
            reply.error().is_some()
                || admitted == Some(false)
                || cost_zero
                || command[0] == "RATELIMIT.QUOTA",
            "{} was expected to be denied, a dry run or free, got {reply:?}",
            show_args(command)
        );
    }
    assert_eq!(
        master_offset(&mut con),
        before,
        "denied requests, dry runs, COST 0, QUOTA and errors must replicate nothing"
    );
    assert_eq!(dbsize(&mut con), 3);

    // The measure works: one admitted request moves the offset and reaches the replica.
    check(&mut con, &["fresh:FIXED", "2", "1h", "ALGORITHM", "FIXED"]);
    assert!(
        master_offset(&mut con) > before,
        "an admitted request is replicated"
    );
    wait_for_replica(&mut con);
    let mut on_replica = replica.con();
    assert_eq!(get(&mut on_replica, "fresh:FIXED"), Some(b"1".to_vec()));

    // RESET is replicated as a DEL; a RESET that found nothing has nothing to replicate.
    assert_eq!(reset(&mut con, "full:GCRA"), 1);
    wait_for_replica(&mut con);
    assert!(
        !exists(&mut on_replica, "full:GCRA"),
        "RESET reached the replica"
    );
    let before = master_offset(&mut con);
    assert_eq!(reset(&mut con, "never-existed"), 0);
    assert_eq!(
        master_offset(&mut con),
        before,
        "RESET of a missing key replicates nothing"
    );
}

/// QUOTA, read-only, answers on a replica what it answers on the master: the standing, with
/// nothing spent, and for a request of COST n. Every command that may write (DRYRUN ones
/// included: the flag is the command's, not the call's) is refused there with READONLY.
#[test]
fn quota_runs_on_a_replica_and_writes_are_refused_there() {
    skip_if_external!("needs a replica");
    let (master, replica) = quiet_master_and_replica(&[]);
    let mut on_master = master.con();
    let mut on_replica = replica.con();
    for algorithm in ALGORITHMS {
        let key = format!("r:{algorithm}");
        let args = [key.as_str(), "5", "1h", "ALGORITHM", algorithm];
        check(&mut on_master, &args);
        check(&mut on_master, &args);
        wait_for_replica(&mut on_master);
        let start = std::time::Instant::now();
        let from_master = quota(&mut on_master, &args);
        let from_replica = quota(&mut on_replica, &args);
        assert_same_decision(&from_master, &from_replica, elapsed_ms(start), algorithm);
        // The standing: 5 - 2 spent, nothing spent by asking.
        assert_eq!(
            (
                from_replica.allowed,
                from_replica.limit,
                from_replica.remaining
            ),
            (1, 5, 3),
            "{from_replica:?}"
        );
        assert!(from_replica.reset_after > 0, "{from_replica:?}");
        let mut with_cost = args.to_vec();
        with_cost.extend(["COST", "3"]);
        let fits = quota(&mut on_replica, &with_cost);
        assert_eq!((fits.allowed, fits.remaining), (1, 3), "{fits:?}");
        with_cost[6] = "4";
        let too_much = quota(&mut on_replica, &with_cost);
        assert_eq!(
            (too_much.allowed, too_much.remaining),
            (0, 3),
            "{too_much:?}"
        );
        assert!(too_much.retry_after > 0, "{too_much:?}");

        let mut dry = vec!["RATELIMIT.CHECK"];
        dry.extend_from_slice(&args);
        dry.push("DRYRUN");
        for command in [
            dry,
            vec![
                "RATELIMIT.CHECK",
                key.as_str(),
                "5",
                "1h",
                "ALGORITHM",
                algorithm,
            ],
            vec!["RATELIMIT.RESET", key.as_str()],
            vec![
                "RATELIMIT.REFUND",
                key.as_str(),
                "5",
                "1h",
                "ALGORITHM",
                algorithm,
                "COST",
                "1",
            ],
            vec![
                "RATELIMIT.MCHECK",
                "1",
                key.as_str(),
                "LIMIT",
                "5",
                "1h",
                "ALGORITHM",
                algorithm,
                "DRYRUN",
            ],
        ] {
            let error = expect_error(&mut on_replica, &command);
            assert!(
                error.starts_with("READONLY"),
                "{command:?} on a replica: {error}"
            );
        }
    }
}

/// One key of the budget traffic: its policy, which every call on it uses.
struct Budget {
    key: String,
    policy: Vec<String>,
    capacity: u64,
}

fn budgets() -> Vec<Budget> {
    let periods = ["1h", "2h", "1d"];
    let mut out = Vec::new();
    for algorithm in ALGORITHMS {
        for i in 0..8u64 {
            let limit = 3 + i % 5;
            let mut policy = vec![
                limit.to_string(),
                periods[i as usize % periods.len()].to_string(),
                "ALGORITHM".to_string(),
                algorithm.to_string(),
            ];
            let mut capacity = limit;
            if algorithm == "GCRA" && i % 2 == 0 {
                capacity = limit + 2;
                policy.extend(["BURST".to_string(), capacity.to_string()]);
            }
            out.push(Budget {
                key: format!("b:{}:{i}", algorithm.to_ascii_lowercase()),
                policy,
                capacity,
            });
        }
    }
    out
}

/// Random CHECK (with FORCE and WITHWINDOW), MCHECK (of 1 to 4 keys, with DRYRUN or FORCE, and
/// WITHWINDOW), REFUND (with a window seen in an earlier reply, a made-up one, or none), QUOTA
/// and RESET calls over the budgets. `windows` holds the last window each key's replies named.
fn budget_call(rng: &mut StdRng, budgets: &[Budget], windows: &[Option<i64>]) -> Vec<String> {
    let cost = |rng: &mut StdRng, b: &Budget| rng.gen_range(0..=b.capacity + 1).to_string();
    let pick = |rng: &mut StdRng| rng.gen_range(0..budgets.len());
    let roll = rng.gen_range(0..100);
    let mut call: Vec<String> = Vec::new();
    match roll {
        0..=39 => {
            let count = rng.gen_range(1..=4);
            let mut chosen: Vec<usize> = Vec::new();
            while chosen.len() < count {
                let i = pick(rng);
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            call.push("RATELIMIT.MCHECK".into());
            call.push(count.to_string());
            call.extend(chosen.iter().map(|&i| budgets[i].key.clone()));
            for &i in &chosen {
                call.push("LIMIT".into());
                call.extend(budgets[i].policy.iter().cloned());
                call.extend(["COST".into(), cost(rng, &budgets[i])]);
            }
            match rng.gen_range(0..10) {
                0..=1 => call.push("FORCE".into()),
                2 => call.push("DRYRUN".into()),
                _ => {}
            }
        }
        40..=64 => {
            let b = &budgets[pick(rng)];
            call.push("RATELIMIT.CHECK".into());
            call.push(b.key.clone());
            call.extend(b.policy.iter().cloned());
            call.extend(["COST".into(), cost(rng, b)]);
            if rng.gen_bool(0.2) {
                call.push("FORCE".into());
            }
        }
        65..=89 => {
            let i = pick(rng);
            let b = &budgets[i];
            call.push("RATELIMIT.REFUND".into());
            call.push(b.key.clone());
            call.extend(b.policy.iter().cloned());
            call.extend(["COST".into(), rng.gen_range(0..=b.capacity).to_string()]);
            match (rng.gen_range(0..10), windows[i]) {
                (0..=4, Some(window)) => call.extend(["WINDOW".into(), window.to_string()]),
                (5, _) => call.extend(["WINDOW".into(), rng.gen_range(0..u32::MAX).to_string()]),
                _ => {}
            }
            return call;
        }
        90..=94 => {
            let b = &budgets[pick(rng)];
            call.push("RATELIMIT.QUOTA".into());
            call.push(b.key.clone());
            call.extend(b.policy.iter().cloned());
            return call;
        }
        _ => {
            return vec!["RATELIMIT.RESET".into(), budgets[pick(rng)].key.clone()];
        }
    }
    if rng.gen_bool(0.3) {
        call.push("WITHWINDOW".into());
    }
    call
}

/// The windows a reply names (WITHWINDOW's sixth integers), by budget index.
fn remember_windows(
    call: &[String],
    reply: &Reply,
    budgets: &[Budget],
    windows: &mut [Option<i64>],
) {
    let index = |key: &String| budgets.iter().position(|b| &b.key == key);
    match (call[0].as_str(), reply) {
        ("RATELIMIT.CHECK", Reply::Array(Some(items))) if items.len() == 6 => {
            if let Some(i) = index(&call[1]) {
                windows[i] = items[5].int();
            }
        }
        ("RATELIMIT.MCHECK", Reply::Array(Some(items))) => {
            let count: usize = call[1].parse().unwrap();
            for (key, item) in call[2..2 + count].iter().zip(&items[2..]) {
                if let (Some(i), Reply::Array(Some(values))) = (index(key), item) {
                    if values.len() == 6 {
                        windows[i] = values[5].int();
                    }
                }
            }
        }
        _ => {}
    }
}

/// Every key's value and absolute expiry on `con`.
fn all_states(con: &mut redis::Connection, has_pexpiretime: bool) -> Vec<(String, Snapshot)> {
    all_keys(con)
        .into_iter()
        .map(|k| {
            let key = String::from_utf8(k).unwrap();
            let state = snapshot(con, &key, has_pexpiretime);
            (key, state)
        })
        .collect()
}

/// Asserts that two servers' states agree: the same keys and values, and absolute expiries
/// within `tolerance` ms.
fn assert_same_states(
    a: &[(String, Snapshot)],
    b: &[(String, Snapshot)],
    tolerance: u64,
    what: &str,
) {
    let keys = |s: &[(String, Snapshot)]| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(a), keys(b), "{what}: the same keys");
    for ((key, x), (_, y)) in a.iter().zip(b) {
        assert_eq!(x.value, y.value, "{what}: {key}'s value");
        let (p, q) = (
            x.expire_at.expect("an expiry"),
            y.expire_at.expect("an expiry"),
        );
        assert!(
            p.abs_diff(q) <= tolerance,
            "{what}: {key} expires at {p} and {q}"
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

/// Issue 10: after mixed MCHECK, REFUND (with and without WINDOW) and FORCE traffic, the replica
/// and the master restarted from its AOF hold every key with the same value and absolute
/// expiry. An admitted MCHECK reaches the replica and the AOF as one MULTI/EXEC holding each
/// key's SET; a denied one propagates nothing.
#[test]
fn budget_traffic_leaves_identical_state_on_a_replica_and_after_an_aof_restart() {
    skip_if_external!("needs a replica and restarts the server from its AOF");
    let (mut master, replica) =
        quiet_master_and_replica(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut raw = master.raw();
    let mut rng = StdRng::seed_from_u64(seed());
    let budgets = budgets();
    let mut windows = vec![None; budgets.len()];
    let mut spent = 0;
    for _ in 0..8 {
        let batch: Vec<Vec<String>> = (0..250)
            .map(|_| budget_call(&mut rng, &budgets, &windows))
            .collect();
        for (call, reply) in batch.iter().zip(raw.pipeline(&batch)) {
            assert!(
                reply.error().is_none(),
                "{} answered {reply:?}",
                show_args(call)
            );
            if call.iter().any(|w| w == "FORCE") {
                spent += 1;
            }
            remember_windows(call, &reply, &budgets, &mut windows);
        }
    }
    assert!(spent > 0 && windows.iter().any(Option::is_some));

    let mut on_master = master.con();
    let mut on_replica = replica.con();
    wait_for_replica(&mut on_master);
    let m_pet = has_command(&mut on_master, "pexpiretime");
    let r_pet = has_command(&mut on_replica, "pexpiretime");
    let on_the_master = all_states(&mut on_master, m_pet);
    assert!(on_the_master.len() > budgets.len() / 2, "{on_the_master:?}");
    let tolerance = expiry_tolerance_ms(m_pet) + expiry_tolerance_ms(r_pet);
    assert_same_states(
        &on_the_master,
        &all_states(&mut on_replica, r_pet),
        tolerance,
        "replica",
    );

    // An admitted MCHECK: one MULTI/EXEC, on the replica and in the AOF.
    let before = commandstats(&mut on_replica);
    let tx = mcheck(
        &mut on_master,
        &[
            "2",
            "tx:a",
            "tx:b",
            "LIMIT",
            "5",
            "1h",
            "LIMIT",
            "5",
            "1h",
            "ALGORITHM",
            "GCRA",
        ],
    );
    assert!(tx.is_allowed(), "{tx:?}");
    wait_for_replica(&mut on_master);
    let after = commandstats(&mut on_replica);
    for (name, more) in [("multi", 1), ("exec", 1), ("set", 2)] {
        assert_eq!(
            calls_of(&after, name) - calls_of(&before, name),
            more,
            "the replica's {name} calls for one admitted MCHECK of two keys"
        );
    }
    let aof = read_dir_bytes(&master.data_dir());
    let find = |needle: &[u8], from: usize| {
        aof[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let a = find(b"$4\r\ntx:a\r\n", 0).expect("tx:a in the AOF");
    let b = find(b"$4\r\ntx:b\r\n", a).expect("tx:b after tx:a in the AOF");
    let multi = aof[..a]
        .windows(5)
        .rposition(|w| w.eq_ignore_ascii_case(b"MULTI"))
        .expect("a MULTI before tx:a");
    let exec = find(b"EXEC", a).expect("an EXEC after tx:a");
    assert!(b < exec, "tx:a and tx:b in one MULTI/EXEC");
    assert!(
        find(b"EXEC", multi).is_some_and(|e| e > a),
        "no EXEC between MULTI and tx:a"
    );

    // A denied MCHECK propagates nothing.
    let offset = master_offset(&mut on_master);
    let denied = mcheck(
        &mut on_master,
        &[
            "2", "tx:a", "tx:c", "LIMIT", "5", "1h", "LIMIT", "1", "1h", "COST", "2",
        ],
    );
    assert_eq!(denied.allowed, 0, "{denied:?}");
    assert_eq!(
        master_offset(&mut on_master),
        offset,
        "a denied MCHECK replicates nothing"
    );

    let on_the_master = all_states(&mut on_master, m_pet);
    drop((on_master, raw));
    master.restart();
    let mut on_master = master.con();
    assert_same_states(
        &on_the_master,
        &all_states(&mut on_master, m_pet),
        expiry_tolerance_ms(m_pet),
        "AOF restart",
    );
}
