//! Persistence: after a restart from the AOF (or an RDB snapshot) every limiter comes back with
//! the same value and the same absolute expiry, and goes on counting where it stopped.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Writes limiters of every algorithm (and a few keys that must not exist), and returns the
/// state of every key.
fn write_limiters(
    con: &mut redis::Connection,
    has_pexpiretime: bool,
) -> BTreeMap<String, Snapshot> {
    for algorithm in ALGORITHMS {
        for i in 0..5 {
            let key = format!("{}:{i}", algorithm.to_ascii_lowercase());
            let base = [
                key.as_str(),
                "10",
                ["1h", "2h", "1d", "90m", "3650d"][i],
                "ALGORITHM",
                algorithm,
            ];
            for _ in 0..=i {
                assert!(check(con, &base).is_allowed());
            }
            let mut with_cost = base.to_vec();
            with_cost.extend(["COST", "2"]);
            check(con, &with_cost);
        }
        // Dry runs, COST 0 and denied requests leave nothing to restore.
        let ghost = format!("ghost:{algorithm}");
        check(
            con,
            &[ghost.as_str(), "3", "1h", "ALGORITHM", algorithm, "DRYRUN"],
        );
        check(
            con,
            &[
                ghost.as_str(),
                "3",
                "1h",
                "ALGORITHM",
                algorithm,
                "COST",
                "0",
            ],
        );
        check(
            con,
            &[
                ghost.as_str(),
                "3",
                "1h",
                "ALGORITHM",
                algorithm,
                "COST",
                "4",
            ],
        );
        quota(con, &[ghost.as_str(), "3", "1h", "ALGORITHM", algorithm]);
        // A limiter that was reset stays deleted.
        let gone = format!("gone:{algorithm}");
        check(con, &[gone.as_str(), "3", "1h", "ALGORITHM", algorithm]);
        assert_eq!(reset(con, &gone), 1);
    }
    // The largest GCRA debt: an expiry beyond what a millisecond clock reaches in an i64.
    let max = "1000000000000000";
    check(
        con,
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
        ],
    );
    let keys = all_keys(con);
    assert_eq!(keys.len(), 16, "{keys:?}");
    keys.into_iter()
        .map(|k| {
            let key = String::from_utf8(k).unwrap();
            let state = snapshot(con, &key, has_pexpiretime);
            assert!(state.expire_at.is_some(), "{key} should have an expiry");
            (key, state)
        })
        .collect()
}

fn assert_restored(
    con: &mut redis::Connection,
    before: &BTreeMap<String, Snapshot>,
    has_pexpiretime: bool,
) {
    let keys: Vec<String> = all_keys(con)
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    let expected: Vec<String> = before.keys().cloned().collect();
    assert_eq!(keys, expected, "the same keys after the restart");
    for (key, state) in before {
        assert_unchanged(con, key, state, has_pexpiretime, "after the restart");
    }
}

/// Every file under `dir`, concatenated.
fn read_all(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(read_all(&path));
        } else {
            out.extend(fs::read(&path).unwrap());
        }
    }
    out
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[test]
fn aof_restores_every_limiter_with_its_absolute_expiry() {
    skip_if_external!("restarts the server from its AOF");
    let mut server = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    let before = write_limiters(&mut con, has_pexpiretime);

    let aof = read_all(&server.data_dir());
    assert!(
        !contains_ignore_case(&aof, b"ratelimit."),
        "the AOF must hold the effects (SET/DEL), never the module's commands"
    );
    assert!(
        contains_ignore_case(&aof, b"PXAT"),
        "writes carry an absolute expiry (SET ... PXAT)"
    );

    // Nothing that writes nothing reaches the AOF.
    let size = aof.len();
    for algorithm in ALGORITHMS {
        let key = format!("{}:0", algorithm.to_ascii_lowercase());
        for extra in [&["DRYRUN"][..], &["COST", "0"], &["COST", "11"]] {
            let mut args = vec![key.as_str(), "10", "1h", "ALGORITHM", algorithm];
            args.extend_from_slice(extra);
            check(&mut con, &args);
        }
        quota(
            &mut con,
            &[key.as_str(), "10", "1h", "ALGORITHM", algorithm],
        );
    }
    assert_eq!(
        read_all(&server.data_dir()).len(),
        size,
        "dry runs and denials append nothing"
    );

    drop(con);
    server.restart();
    let mut con = server.con();
    assert_restored(&mut con, &before, has_pexpiretime);

    // The restored limiters go on from their state.
    let d = check(&mut con, &["fixed:0", "10", "1h", "ALGORITHM", "FIXED"]);
    assert_eq!(d.remaining, 10 - 4, "{d:?}");
    assert_eq!(get_text(&mut con, "fixed:0"), "4");
    for algorithm in ["SLIDING", "GCRA"] {
        let key = format!("{}:4", algorithm.to_ascii_lowercase());
        let d = check(
            &mut con,
            &[key.as_str(), "10", "3650d", "ALGORITHM", algorithm],
        );
        assert_eq!((d.allowed, d.remaining), (1, 10 - 8), "{algorithm}: {d:?}");
    }
}

#[test]
fn rdb_snapshot_restores_every_limiter_with_its_absolute_expiry() {
    skip_if_external!("restarts the server from its RDB snapshot");
    let mut server = Server::start();
    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    let before = write_limiters(&mut con, has_pexpiretime);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    drop(con);
    server.restart();
    let mut con = server.con();
    assert_restored(&mut con, &before, has_pexpiretime);
}
