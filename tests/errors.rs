//! Every error class of the contract: each answers an error that starts with `ERR` and names the
//! offending argument, and writes nothing.

mod common;

use common::*;
use std::sync::atomic::{AtomicU32, Ordering};

const MAX_PLUS_ONE: &str = "1000000000000001";

fn fresh_key() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("err:{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Sends `command key rest...` on a fresh key and checks that it fails with an `ERR` error that
/// mentions each of `names` (in any letter case: argument and option names) and `offending`
/// (exactly: the bad argument, quoted when it is empty), and that the key was not written.
fn assert_rejected(
    con: &mut redis::Connection,
    command: &str,
    rest: &[&str],
    names: &[&str],
    offending: Option<&str>,
) -> String {
    let key = fresh_key();
    let mut full = vec![command, key.as_str()];
    full.extend_from_slice(rest);
    let error = expect_error(con, &full);
    let shown = full.join(" ");
    assert!(
        error.starts_with("ERR "),
        "{shown}: the error should start with ERR: {error}"
    );
    for name in names {
        assert!(
            error
                .to_ascii_lowercase()
                .contains(&name.to_ascii_lowercase()),
            "{shown}: the error should name {name:?}: {error}"
        );
    }
    if let Some(text) = offending {
        let needle = if text.is_empty() {
            "''".to_string()
        } else {
            text.to_string()
        };
        assert!(
            error.contains(&needle),
            "{shown}: the error should quote {needle:?}: {error}"
        );
    }
    assert!(!exists(con, &key), "{shown}: an error must write nothing");
    error
}

#[test]
fn the_contract_examples_are_exact() {
    let server = Server::start();
    let mut con = server.con();
    let cases: [(&[&str], &str); 6] = [
        (
            &["ratelimit.check"],
            "ERR wrong number of arguments for 'ratelimit.check' command",
        ),
        (
            &["ratelimit.check", "k", "3"],
            "ERR wrong number of arguments for 'ratelimit.check' command",
        ),
        (
            &["RATELIMIT.CHECK", "k", "abc", "10s"],
            "ERR invalid limit 'abc': expected an integer from 1 to 1000000000000000",
        ),
        (
            &["RATELIMIT.CHECK", "k", "3", "5x"],
            "ERR invalid period '5x': expected an integer with optional unit ms, s, m, h or d",
        ),
        (
            &["RATELIMIT.CHECK", "k", "3", "10s", "FOO"],
            "ERR unknown option 'FOO'",
        ),
        (
            &[
                "RATELIMIT.CHECK",
                "k",
                "3",
                "10s",
                "ALGORITHM",
                "FIXED",
                "BURST",
                "2",
            ],
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(expect_error(&mut con, args), expected, "{args:?}");
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn wrong_arity_for_each_command() {
    let server = Server::start();
    let mut con = server.con();
    for (command, bad) in [
        (
            "ratelimit.check",
            &[&[][..], &["k"][..], &["k", "3"][..]][..],
        ),
        (
            "ratelimit.quota",
            &[&[][..], &["k"][..], &["k", "3"][..]][..],
        ),
        (
            "ratelimit.reset",
            &[&[][..], &["k", "k2"][..], &["k", "3", "1s"][..]][..],
        ),
    ] {
        for rest in bad {
            let mut full = vec![command];
            full.extend_from_slice(rest);
            let error = expect_error(&mut con, &full);
            assert_eq!(
                error,
                format!("ERR wrong number of arguments for '{command}' command"),
                "{full:?}"
            );
        }
        // The name as typed does not matter.
        let upper = command.to_ascii_uppercase();
        let error = expect_error(&mut con, &[upper.as_str()]);
        assert!(
            error.starts_with("ERR wrong number of arguments"),
            "{error}"
        );
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn bad_limits_periods_algorithms_bursts_and_costs() {
    let server = Server::start();
    let mut con = server.con();
    for command in ["RATELIMIT.CHECK", "RATELIMIT.QUOTA"] {
        for bad in [
            "abc",
            "0",
            "-1",
            MAX_PLUS_ONE,
            "",
            "1.5",
            " 3",
            "18446744073709551616",
        ] {
            assert_rejected(&mut con, command, &[bad, "10s"], &["limit"], Some(bad));
        }
        for bad in [
            "5x",
            "0",
            "0ms",
            "-5s",
            "3651d",
            "315360001",
            "1.5s",
            "",
            "s",
            "5 s",
            "99999999999999999999d",
        ] {
            assert_rejected(&mut con, command, &["3", bad], &["period"], Some(bad));
        }
        for bad in ["LEAKY", "FIXEDX", "GCR", ""] {
            assert_rejected(
                &mut con,
                command,
                &["3", "10s", "ALGORITHM", bad],
                &[],
                Some(bad),
            );
        }
        for bad in ["0", "-1", "abc", MAX_PLUS_ONE, ""] {
            let rest = ["3", "10s", "ALGORITHM", "GCRA", "BURST", bad];
            assert_rejected(&mut con, command, &rest, &["burst"], Some(bad));
        }
    }
    for bad in ["-1", MAX_PLUS_ONE, "abc", "", "1.0", "18446744073709551616"] {
        assert_rejected(
            &mut con,
            "RATELIMIT.CHECK",
            &["3", "10s", "COST", bad],
            &["cost"],
            Some(bad),
        );
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn burst_applies_only_to_gcra() {
    let server = Server::start();
    let mut con = server.con();
    let expected = "ERR BURST applies only to ALGORITHM GCRA";
    for command in ["RATELIMIT.CHECK", "RATELIMIT.QUOTA"] {
        for rest in [
            &["3", "10s", "BURST", "2"][..],
            &["3", "10s", "ALGORITHM", "FIXED", "BURST", "2"][..],
            &["3", "10s", "BURST", "2", "ALGORITHM", "FIXED"][..],
            &["3", "10s", "ALGORITHM", "SLIDING", "BURST", "2"][..],
            &["3", "10s", "burst", "5", "algorithm", "sliding"][..],
        ] {
            let error = assert_rejected(&mut con, command, rest, &[], None);
            assert_eq!(error, expected, "{command} {rest:?}");
        }
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn unknown_repeated_and_incomplete_options() {
    let server = Server::start();
    let mut con = server.con();
    for command in ["RATELIMIT.CHECK", "RATELIMIT.QUOTA"] {
        for bad in ["FOO", "BURSTY", "COSTS", "--dryrun", "", "ALGO"] {
            assert_rejected(&mut con, command, &["3", "10s", bad], &[], Some(bad));
        }
        let repeated: [(&[&str], &str); 4] = [
            (&["ALGORITHM", "GCRA", "ALGORITHM", "GCRA"], "algorithm"),
            (&["algorithm", "fixed", "ALGORITHM", "SLIDING"], "algorithm"),
            (&["ALGORITHM", "GCRA", "BURST", "2", "BURST", "2"], "burst"),
            (&["BURST", "2", "ALGORITHM", "GCRA", "burst", "3"], "burst"),
        ];
        for (options, name) in repeated {
            let mut rest = vec!["3", "10s"];
            rest.extend_from_slice(options);
            assert_rejected(&mut con, command, &rest, &[name], None);
        }
        let missing: [(&[&str], &str); 3] = [
            (&["ALGORITHM"], "algorithm"),
            (&["ALGORITHM", "GCRA", "BURST"], "burst"),
            (&["BURST", "2", "ALGORITHM"], "algorithm"),
        ];
        for (options, name) in missing {
            let mut rest = vec!["3", "10s"];
            rest.extend_from_slice(options);
            assert_rejected(&mut con, command, &rest, &[name], None);
        }
    }
    let check_only: [(&[&str], &str); 6] = [
        (&["COST", "1", "COST", "1"], "cost"),
        (&["cost", "1", "COST", "2"], "cost"),
        (&["DRYRUN", "DRYRUN"], "dryrun"),
        (&["dryrun", "COST", "1", "DryRun"], "dryrun"),
        (&["COST"], "cost"),
        (&["DRYRUN", "COST"], "cost"),
    ];
    for (options, name) in check_only {
        let mut rest = vec!["3", "10s"];
        rest.extend_from_slice(options);
        assert_rejected(&mut con, "RATELIMIT.CHECK", &rest, &[name], None);
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn quota_takes_neither_cost_nor_dryrun() {
    let server = Server::start();
    let mut con = server.con();
    let cases: [(&[&str], &str); 5] = [
        (&["COST", "1"], "cost"),
        (&["COST", "0"], "cost"),
        (&["DRYRUN"], "dryrun"),
        (&["ALGORITHM", "GCRA", "dryrun"], "dryrun"),
        (&["cost", "2", "ALGORITHM", "SLIDING"], "cost"),
    ];
    for (options, name) in cases {
        let mut rest = vec!["3", "10s"];
        rest.extend_from_slice(options);
        assert_rejected(&mut con, "RATELIMIT.QUOTA", &rest, &[name], None);
    }
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn errors_leave_an_existing_limiter_unchanged() {
    let server = Server::start();
    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    for algorithm in ALGORITHMS {
        let key = format!("live:{algorithm}");
        check(&mut con, &[key.as_str(), "5", "1h", "ALGORITHM", algorithm]);
        let before = snapshot(&mut con, &key, has_pexpiretime);
        let bad_calls: [&[&str]; 9] = [
            &[
                "RATELIMIT.CHECK",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "-1",
            ],
            &["RATELIMIT.CHECK", "KEY", "0", "1h", "ALGORITHM", "ALG"],
            &["RATELIMIT.CHECK", "KEY", "5", "0", "ALGORITHM", "ALG"],
            &[
                "RATELIMIT.CHECK",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "FOO",
            ],
            &[
                "RATELIMIT.CHECK",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "1",
                "COST",
                "1",
            ],
            &[
                "RATELIMIT.CHECK",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
            ],
            &[
                "RATELIMIT.CHECK",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "BURST",
                "0",
            ],
            &[
                "RATELIMIT.QUOTA",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "1",
            ],
            &["RATELIMIT.RESET", "KEY", "extra"],
        ];
        for call_args in bad_calls {
            let full: Vec<&str> = call_args
                .iter()
                .map(|a| match *a {
                    "KEY" => key.as_str(),
                    "ALG" => algorithm,
                    other => other,
                })
                .collect();
            let error = expect_error(&mut con, &full);
            assert!(error.starts_with("ERR "), "{full:?}: {error}");
            assert_unchanged(&mut con, &key, &before, has_pexpiretime, &full.join(" "));
        }
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}
