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
        (
            "ratelimit.refund",
            &[&[][..], &["k"][..], &["k", "3"][..]][..],
        ),
        (
            "ratelimit.mcheck",
            &[
                &[][..],
                &["1"][..],
                &["1", "k"][..],
                &["1", "k", "LIMIT", "5"][..],
            ][..],
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

/// QUOTA takes `COST n` (it asks about a request of that cost), validated as CHECK validates
/// it, but none of the flags: it never writes, so `DRYRUN`, `FORCE` and `WITHWINDOW` are errors
/// that name the flag. Nothing is written either way.
#[test]
fn quota_takes_cost_but_no_flags() {
    let server = Server::start();
    let mut con = server.con();
    let refused: [(&[&str], &str); 6] = [
        (&["DRYRUN"], "ERR RATELIMIT.QUOTA does not accept 'DRYRUN'"),
        (
            &["ALGORITHM", "GCRA", "dryrun"],
            "ERR RATELIMIT.QUOTA does not accept 'DRYRUN'",
        ),
        (
            &["COST", "1", "FORCE"],
            "ERR RATELIMIT.QUOTA does not accept 'FORCE'",
        ),
        (
            &["WithWindow"],
            "ERR RATELIMIT.QUOTA does not accept 'WITHWINDOW'",
        ),
        (&["WINDOW", "5"], "ERR unknown option 'WINDOW'"),
        (&["LIMIT", "5", "1s"], "ERR unknown option 'LIMIT'"),
    ];
    for (options, expected) in refused {
        let mut rest = vec!["3", "10s"];
        rest.extend_from_slice(options);
        let error = assert_rejected(&mut con, "RATELIMIT.QUOTA", &rest, &[], None);
        assert_eq!(error, expected, "QUOTA {options:?}");
    }
    for bad in ["-1", MAX_PLUS_ONE, "abc", "", "1.0", "18446744073709551616"] {
        assert_rejected(
            &mut con,
            "RATELIMIT.QUOTA",
            &["3", "10s", "COST", bad],
            &["cost"],
            Some(bad),
        );
    }
    let malformed: [(&[&str], &str); 3] = [
        (&["COST"], "ERR option 'COST' needs a value"),
        (
            &["COST", "1", "cost", "2"],
            "ERR option 'COST' given more than once",
        ),
        (
            &["ALGORITHM", "SLIDING", "COST"],
            "ERR option 'COST' needs a value",
        ),
    ];
    for (options, expected) in malformed {
        let mut rest = vec!["3", "10s"];
        rest.extend_from_slice(options);
        let error = assert_rejected(&mut con, "RATELIMIT.QUOTA", &rest, &[], None);
        assert_eq!(error, expected, "QUOTA {options:?}");
    }
    // The control: a valid COST is answered, and writes nothing either.
    for cost in ["0", "1", "3", "4", "1000000000000000"] {
        let d = quota(&mut con, &["q", "3", "10s", "cost", cost]);
        let fits = cost.parse::<u64>().unwrap() <= 3;
        let retry = if fits { 0 } else { -1 };
        assert_eq!(
            d.as_array(),
            [i64::from(fits), 3, 3, 0, retry],
            "COST {cost}"
        );
    }
    assert_eq!(dbsize(&mut con), 0);
}

/// The flags of version 2: `FORCE` with `DRYRUN` is an error, in any order and letter case, and
/// CHECK knows neither `WINDOW` (REFUND's) nor `LIMIT` (MCHECK's). Nothing is written.
#[test]
fn check_refuses_force_with_dryrun_and_the_options_of_other_commands() {
    let server = Server::start();
    let mut con = server.con();
    let cases: [(&[&str], &str); 8] = [
        (
            &["FORCE", "DRYRUN"],
            "ERR FORCE and DRYRUN cannot be combined",
        ),
        (
            &["dryrun", "COST", "2", "force"],
            "ERR FORCE and DRYRUN cannot be combined",
        ),
        (
            &["Force", "WITHWINDOW", "DryRun"],
            "ERR FORCE and DRYRUN cannot be combined",
        ),
        (
            &["FORCE", "FORCE"],
            "ERR option 'FORCE' given more than once",
        ),
        (
            &["WITHWINDOW", "withwindow"],
            "ERR option 'WITHWINDOW' given more than once",
        ),
        (&["WINDOW", "5"], "ERR unknown option 'WINDOW'"),
        (&["LIMIT", "5", "1s"], "ERR unknown option 'LIMIT'"),
        (
            &["FORCE", "COST", "x"],
            "ERR invalid cost 'x': expected an integer from 0 to 1000000000000000",
        ),
    ];
    for (options, expected) in cases {
        let mut rest = vec!["3", "10s"];
        rest.extend_from_slice(options);
        let error = assert_rejected(&mut con, "RATELIMIT.CHECK", &rest, &[], None);
        assert_eq!(error, expected, "CHECK {options:?}");
    }
    assert_eq!(dbsize(&mut con), 0);
}

/// REFUND's own errors: it needs `COST`, takes a non-negative `WINDOW`, and refuses the flags
/// of CHECK and MCHECK's `LIMIT`; every message is exact, and nothing is written.
#[test]
fn refund_errors_are_exact() {
    let server = Server::start();
    let mut con = server.con();
    let cases: [(&[&str], &str); 11] = [
        (
            &["3", "10s", "WINDOW", "5"],
            "ERR RATELIMIT.REFUND needs COST n",
        ),
        (
            &["3", "10s", "COST", "1", "WINDOW", "-1"],
            "ERR invalid window '-1': expected a non-negative integer",
        ),
        (
            &["3", "10s", "COST", "1", "WINDOW", "18446744073709551616"],
            "ERR invalid window '18446744073709551616': expected a non-negative integer",
        ),
        (
            &["3", "10s", "COST", "1", "WINDOW"],
            "ERR option 'WINDOW' needs a value",
        ),
        (
            &["3", "10s", "COST", "1", "WINDOW", "1", "window", "2"],
            "ERR option 'WINDOW' given more than once",
        ),
        (
            &["3", "10s", "COST", "1", "DRYRUN"],
            "ERR RATELIMIT.REFUND does not accept 'DRYRUN'",
        ),
        (
            &["3", "10s", "COST", "1", "force"],
            "ERR RATELIMIT.REFUND does not accept 'FORCE'",
        ),
        (
            &["3", "10s", "COST", "1", "WITHWINDOW"],
            "ERR RATELIMIT.REFUND does not accept 'WITHWINDOW'",
        ),
        (
            &["3", "10s", "COST", "1", "LIMIT", "3", "10s"],
            "ERR RATELIMIT.REFUND does not accept 'LIMIT'",
        ),
        (
            &["3", "10s", "COST", "-2"],
            "ERR invalid cost '-2': expected an integer from 0 to 1000000000000000",
        ),
        (
            &["3", "10s", "COST", "1", "BURST", "2"],
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
    ];
    for (rest, expected) in cases {
        let error = assert_rejected(&mut con, "RATELIMIT.REFUND", rest, &[], None);
        assert_eq!(error, expected, "REFUND {rest:?}");
    }
    // `REFUND key limit period` lacks COST. The module applies the arity its command docs
    // declare (-6), so every server answers the same, whether it checks the arity itself (7.0+)
    // or leaves it to the module (6.2).
    let error = assert_rejected(&mut con, "RATELIMIT.REFUND", &["3", "10s"], &[], None);
    assert_eq!(
        error,
        "ERR wrong number of arguments for 'ratelimit.refund' command"
    );
    assert_eq!(dbsize(&mut con), 0);
}

/// MCHECK's own errors: `numkeys` from 1 to 16 with that many distinct keys, exactly one
/// `LIMIT limit period ...` policy per key with its options after its `LIMIT`, the flags once
/// each and `FORCE` without `DRYRUN`, and each policy validated as CHECK validates it. Every
/// message is exact, and none of the keys is written.
#[test]
fn mcheck_errors_are_exact_and_write_no_key() {
    let server = Server::start();
    let mut con = server.con();
    let numkeys = |n: &str| {
        format!(
            "ERR invalid numkeys '{n}': expected an integer from 1 to 16, followed by that many \
             keys"
        )
    };
    let sixteen_too_many = {
        let mut args: Vec<String> = vec!["17".into()];
        args.extend((0..17).map(|i| format!("m:{i}")));
        for _ in 0..17 {
            args.extend(["LIMIT", "1", "1s"].map(String::from));
        }
        args
    };
    let cases: Vec<(Vec<String>, String)> =
        vec![
        (words("0 m:a LIMIT 5 5s"), numkeys("0")),
        (words("-1 m:a LIMIT 5 5s"), numkeys("-1")),
        (words("x m:a LIMIT 5 5s"), numkeys("x")),
        (words("5 m:a m:b LIMIT 5"), numkeys("5")),
        (sixteen_too_many, numkeys("17")),
        (
            words("2 m:a m:a LIMIT 5 5s LIMIT 5 5s"),
            "ERR key 'm:a' given more than once".into(),
        ),
        (
            words("2 m:a m:b LIMIT 5 5s"),
            "ERR expected 2 policies (one LIMIT limit period ... per key), got 1".into(),
        ),
        (
            words("1 m:a LIMIT 5 5s LIMIT 5 5s"),
            "ERR expected 1 policies (one LIMIT limit period ... per key), got 2".into(),
        ),
        (
            words("1 m:a COST 2 LIMIT 5 5s"),
            "ERR expected LIMIT limit period before 'COST'".into(),
        ),
        (
            words("1 m:a DRYRUN algorithm gcra LIMIT 5 5s"),
            "ERR expected LIMIT limit period before 'algorithm'".into(),
        ),
        (
            words("1 m:a LIMIT 5 5s COST 2 COST 3"),
            "ERR option 'COST' given more than once".into(),
        ),
        (
            words("1 m:a LIMIT 5 5s DRYRUN FORCE"),
            "ERR FORCE and DRYRUN cannot be combined".into(),
        ),
        (
            words("2 m:a m:b FORCE LIMIT 5 5s LIMIT 5 5s dryrun"),
            "ERR FORCE and DRYRUN cannot be combined".into(),
        ),
        (
            words("1 m:a WITHWINDOW LIMIT 5 5s WITHWINDOW"),
            "ERR option 'WITHWINDOW' given more than once".into(),
        ),
        (
            words("1 m:a LIMIT 5 5s WINDOW 3"),
            "ERR RATELIMIT.MCHECK does not accept 'WINDOW'".into(),
        ),
        (words("1 m:a LIMIT 5 5s FOO"), "ERR unknown option 'FOO'".into()),
        (
            words("1 m:a LIMIT 0 5s"),
            "ERR invalid limit '0': expected an integer from 1 to 1000000000000000".into(),
        ),
        (
            words("2 m:a m:b LIMIT 5 5s LIMIT 5 5x"),
            "ERR invalid period '5x': expected an integer with optional unit ms, s, m, h or d"
                .into(),
        ),
        (
            words("2 m:a m:b LIMIT 5 5s ALGORITHM GCRA LIMIT 5 5s BURST 3"),
            "ERR BURST applies only to ALGORITHM GCRA".into(),
        ),
        (
            words("1 m:a LIMIT 5 5s COST"),
            "ERR option 'COST' needs a value".into(),
        ),
        (
            words("1 m:a LIMIT 5 5s COST 1000000000000001"),
            "ERR invalid cost '1000000000000001': expected an integer from 0 to 1000000000000000"
                .into(),
        ),
    ];
    for (rest, expected) in cases {
        let mut full = vec!["RATELIMIT.MCHECK".to_string()];
        full.extend(rest);
        let error = expect_error(&mut con, &full);
        assert_eq!(error, expected, "{}", full.join(" "));
    }
    // Too few arguments: the module, or the server where it knows the arity (7.0+), answers
    // the same message.
    let arity = "ERR wrong number of arguments for 'ratelimit.mcheck' command";
    for rest in ["", "1", "2 m:a m:b", "1 m:a LIMIT 5"] {
        let mut full = vec!["RATELIMIT.MCHECK".to_string()];
        full.extend(words(rest));
        assert_eq!(expect_error(&mut con, &full), arity, "{}", full.join(" "));
    }
    assert_eq!(dbsize(&mut con), 0);
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
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
        let bad_calls: [&[&str]; 19] = [
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
                "DRYRUN",
            ],
            &[
                "RATELIMIT.QUOTA",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "-1",
            ],
            &["RATELIMIT.RESET", "KEY", "extra"],
            // Version 2: FORCE with DRYRUN, and REFUND and MCHECK refused.
            &[
                "RATELIMIT.CHECK",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "9",
                "FORCE",
                "DRYRUN",
            ],
            &[
                "RATELIMIT.REFUND",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "WINDOW",
                "0",
            ],
            &[
                "RATELIMIT.REFUND",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "1",
                "FORCE",
            ],
            &[
                "RATELIMIT.REFUND",
                "KEY",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "1",
                "WINDOW",
                "x",
            ],
            &[
                "RATELIMIT.MCHECK",
                "1",
                "KEY",
                "LIMIT",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "FORCE",
                "DRYRUN",
            ],
            &[
                "RATELIMIT.MCHECK",
                "2",
                "KEY",
                "KEY",
                "LIMIT",
                "5",
                "1h",
                "LIMIT",
                "5",
                "1h",
            ],
            &[
                "RATELIMIT.MCHECK",
                "2",
                "KEY",
                "other",
                "LIMIT",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
            ],
            &[
                "RATELIMIT.MCHECK",
                "1",
                "KEY",
                "LIMIT",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
                "COST",
                "x",
            ],
            &[
                "RATELIMIT.MCHECK",
                "1",
                "KEY",
                "COST",
                "9",
                "LIMIT",
                "5",
                "1h",
                "ALGORITHM",
                "ALG",
            ],
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
        assert!(
            !exists(&mut con, "other"),
            "{algorithm}: MCHECK wrote nothing"
        );
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}
