//! `INFO ratelimit`: every call of the module's commands counts exactly once, in the fields the
//! README documents, and the module's sections appear where the server's INFO shows module
//! sections, on every supported server.

mod common;

use common::*;
use redis::Value;
use std::collections::BTreeMap;

/// The counters, in the order INFO reports them.
const COUNTERS: [&str; 26] = [
    "ratelimit_checks",
    "ratelimit_allowed",
    "ratelimit_denied",
    "ratelimit_dry_runs",
    "ratelimit_quota_calls",
    "ratelimit_resets",
    "ratelimit_errors",
    "ratelimit_checks_fixed",
    "ratelimit_allowed_fixed",
    "ratelimit_denied_fixed",
    "ratelimit_checks_sliding",
    "ratelimit_allowed_sliding",
    "ratelimit_denied_sliding",
    "ratelimit_checks_gcra",
    "ratelimit_allowed_gcra",
    "ratelimit_denied_gcra",
    "ratelimit_mchecks",
    "ratelimit_mcheck_allowed",
    "ratelimit_mcheck_denied",
    "ratelimit_mcheck_dry_runs",
    "ratelimit_refunds",
    "ratelimit_refunded_units",
    "ratelimit_acquired",
    "ratelimit_acquire_denied",
    "ratelimit_releases",
    "ratelimit_released",
];

/// The counters as `INFO ratelimit` reports them; panics if one is missing or not an integer.
fn counters(con: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info = info_fields(con, &["ratelimit"]);
    COUNTERS
        .iter()
        .map(|&name| {
            let value = info
                .get(name)
                .unwrap_or_else(|| panic!("INFO ratelimit has no {name}: {info:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("{name}:{value} is not a counter"));
            (name.to_string(), value)
        })
        .collect()
}

/// What the counters should be, bumped by the test as it makes each call.
struct Expected(BTreeMap<String, u64>);

impl Expected {
    fn zero() -> Expected {
        Expected(COUNTERS.iter().map(|n| (n.to_string(), 0)).collect())
    }

    fn bump(&mut self, field: &str) {
        *self
            .0
            .get_mut(&format!("ratelimit_{field}"))
            .unwrap_or_else(|| panic!("no counter {field}")) += 1;
    }

    /// A CHECK answered with `decision`, under `algorithm` (`fixed`, `sliding`, `gcra`).
    fn check(&mut self, algorithm: &str, dry_run: bool, decision: &Decision) {
        self.bump("checks");
        self.bump(&format!("checks_{algorithm}"));
        if dry_run {
            self.bump("dry_runs");
        } else if decision.is_allowed() {
            self.bump("allowed");
            self.bump(&format!("allowed_{algorithm}"));
        } else {
            self.bump("denied");
            self.bump(&format!("denied_{algorithm}"));
        }
    }

    /// An MCHECK answered with `allowed` (with FORCE: whether every cost fitted).
    fn mcheck(&mut self, dry_run: bool, allowed: bool) {
        self.bump("mchecks");
        self.bump(if dry_run {
            "mcheck_dry_runs"
        } else if allowed {
            "mcheck_allowed"
        } else {
            "mcheck_denied"
        });
    }

    /// A REFUND that gave back `units`.
    fn refund(&mut self, units: u64) {
        self.bump("refunds");
        *self.0.get_mut("ratelimit_refunded_units").unwrap() += units;
    }

    fn assert_matches(&self, con: &mut redis::Connection, after: &str) {
        assert_eq!(counters(con), self.0, "INFO ratelimit after {after}");
    }
}

/// CHECK `args` under `algorithm`, which must answer `allowed`, counted in `expected`.
fn check_counted(
    con: &mut redis::Connection,
    expected: &mut Expected,
    algorithm: &str,
    args: &[&str],
    allowed: bool,
) {
    let decision = check(con, args);
    assert_eq!(
        decision.is_allowed(),
        allowed,
        "CHECK {args:?}: {decision:?}"
    );
    let dry_run = args.iter().any(|a| a.eq_ignore_ascii_case("DRYRUN"));
    expected.check(algorithm, dry_run, &decision);
}

/// Each call of each command counts once, in the fields that describe it, and errors count in
/// `errors` alone (only those the module answers: not the server's arity errors).
#[test]
fn every_call_counts_exactly_once() {
    skip_if_external!("reads the module's INFO counters, which count from its load");
    let server = Server::start();
    let mut con = server.con();
    let mut expected = Expected::zero();
    expected.assert_matches(&mut con, "the start");

    // FIXED, 3 per hour: 3 allowed, 2 denied, a dry run, and a COST 0 request (allowed: it fits).
    for allowed in [true, true, true, false, false] {
        check_counted(&mut con, &mut expected, "fixed", &["f", "3", "1h"], allowed);
    }
    check_counted(
        &mut con,
        &mut expected,
        "fixed",
        &["f", "3", "1h", "DRYRUN"],
        false,
    );
    check_counted(
        &mut con,
        &mut expected,
        "fixed",
        &["f", "3", "1h", "COST", "0"],
        true,
    );
    expected.assert_matches(&mut con, "FIXED checks");

    // SLIDING, 2 per hour: 2 allowed, 1 denied, 2 dry runs (one would pass, one would not).
    let sliding = |extra: &[&str]| limiter_args("s", "2", "1h", "SLIDING", extra);
    for (extra, allowed) in [
        (&[][..], true),
        (&["DRYRUN"][..], true),
        (&[][..], true),
        (&[][..], false),
        (&["DRYRUN"][..], false),
    ] {
        let args = sliding(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check_counted(&mut con, &mut expected, "sliding", &args, allowed);
    }
    expected.assert_matches(&mut con, "SLIDING checks");

    // GCRA, 2 per hour with a burst of 2: a unit drips back every 30 minutes, so the third
    // request is denied however slow the machine.
    let gcra = |extra: &[&str]| limiter_args("g", "2", "1h", "gcra", extra);
    for (extra, allowed) in [
        (&["BURST", "2"][..], true),
        (&["BURST", "2"][..], true),
        (&["BURST", "2"][..], false),
        (&["BURST", "2", "DRYRUN"][..], false),
        (&["BURST", "2", "COST", "5"][..], false),
    ] {
        let args = gcra(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check_counted(&mut con, &mut expected, "gcra", &args, allowed);
    }
    expected.assert_matches(&mut con, "GCRA checks");

    // Without ALGORITHM, the default (FIXED) is the one counted.
    check_counted(&mut con, &mut expected, "fixed", &["d", "1", "1h"], true);

    // QUOTA counts only in quota_calls, whatever the algorithm and the answer.
    assert!(!quota(&mut con, &["f", "3", "1h"]).is_allowed());
    assert!(!quota(&mut con, &limiter_args("s", "2", "1h", "SLIDING", &[])).is_allowed());
    assert!(quota(&mut con, &["absent", "3", "1h", "ALGORITHM", "GCRA"]).is_allowed());
    assert!(quota(&mut con, &["f", "3", "1h", "COST", "0"]).is_allowed());
    for _ in 0..4 {
        expected.bump("quota_calls");
    }
    expected.assert_matches(&mut con, "QUOTA calls");

    // MCHECK counts in mchecks and exactly one of mcheck_allowed, mcheck_denied (FORCE that did
    // not fit included) and mcheck_dry_runs, never in the CHECK counters.
    let mcheck = |con: &mut redis::Connection, extra: &[&str]| -> bool {
        let mut args = vec![
            "RATELIMIT.MCHECK",
            "2",
            "ma",
            "mb",
            "LIMIT",
            "2",
            "1h",
            "LIMIT",
            "1",
            "1h",
            "ALGORITHM",
            "GCRA",
        ];
        args.extend_from_slice(extra);
        match call(con, &args) {
            Value::Array(items) => items[0] == Value::Int(1),
            other => panic!("{args:?}: {other:?}"),
        }
    };
    for (extra, allowed) in [
        (&["DRYRUN"][..], true),
        (&[][..], true),
        (&[][..], false),
        (&["DRYRUN", "WITHWINDOW"][..], false),
        (&["FORCE"][..], false),
    ] {
        assert_eq!(mcheck(&mut con, extra), allowed, "MCHECK {extra:?}");
        expected.mcheck(extra.contains(&"DRYRUN"), allowed);
    }
    expected.assert_matches(&mut con, "MCHECK calls");

    // REFUND counts in refunds, and the units it gave back in refunded_units.
    let refund = |con: &mut redis::Connection, args: &[&str]| -> i64 {
        let mut full = vec!["RATELIMIT.REFUND"];
        full.extend_from_slice(args);
        match call(con, &full) {
            Value::Array(items) => match items[0] {
                Value::Int(n) => n,
                ref other => panic!("{full:?}: {other:?}"),
            },
            other => panic!("{full:?}: {other:?}"),
        }
    };
    for (args, units) in [
        // ma holds 2: one admitted MCHECK and one forced.
        (&["ma", "2", "1h", "COST", "5"][..], 2),
        (&["ma", "2", "1h", "COST", "5"][..], 0),
        (&["absent", "2", "1h", "COST", "5"][..], 0),
        (&["f", "3", "1h", "COST", "2"][..], 2),
    ] {
        assert_eq!(refund(&mut con, args), units as i64, "REFUND {args:?}");
        expected.refund(units);
    }
    expected.assert_matches(&mut con, "REFUND calls");

    // RESET counts whether there was a limiter (1) or not (0).
    assert_eq!(reset(&mut con, "f"), 1);
    assert_eq!(reset(&mut con, "absent"), 0);
    assert_eq!(reset(&mut con, "s"), 1);
    for _ in 0..3 {
        expected.bump("resets");
    }
    expected.assert_matches(&mut con, "RESET calls");

    // Issue 11: ACQUIRE counts in acquired when it grants or renews a lease, in acquire_denied
    // when every slot is taken; RELEASE counts in releases, and in released when it released a
    // live lease.
    for (args, granted) in [
        (&["l", "2", "1h", "ID", "a"][..], true),
        (&["l", "2", "1h"][..], true),
        (&["l", "2", "1h", "ID", "b"][..], false),
        (&["l", "2", "1h"][..], false),
        (&["l", "2", "2h", "ID", "a"][..], true),
        (&["l", "1", "2h", "ID", "a"][..], true),
    ] {
        let lease = acquire(&mut con, args);
        assert_eq!(lease.is_allowed(), granted, "ACQUIRE {args:?}: {lease:?}");
        expected.bump(if granted {
            "acquired"
        } else {
            "acquire_denied"
        });
    }
    for (key, id, released) in [
        ("l", "a", 1),
        ("l", "a", 0),
        ("l", "b", 0),
        ("absent", "a", 0),
    ] {
        assert_eq!(release(&mut con, key, id), released, "RELEASE {key} {id}");
        expected.bump("releases");
        if released == 1 {
            expected.bump("released");
        }
    }
    expected.assert_matches(&mut con, "ACQUIRE and RELEASE calls");

    // Every error reply counts in errors, and nowhere else.
    let _: () = redis::cmd("LPUSH")
        .arg("list")
        .arg("x")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("text")
        .arg("hello")
        .query(&mut con)
        .unwrap();
    let long_id = "x".repeat(129);
    let errors: [&[&str]; 23] = [
        &["RATELIMIT.ACQUIRE", "e", "0", "1h"],
        &["RATELIMIT.ACQUIRE", "e", "1", "5x"],
        &["RATELIMIT.ACQUIRE", "e", "1", "1h", "ID", ""],
        &["RATELIMIT.ACQUIRE", "e", "1", "1h", "FOO"],
        &["RATELIMIT.ACQUIRE", "text", "1", "1h"],
        &["RATELIMIT.RELEASE", "list", "a"],
        &["RATELIMIT.RELEASE", "e", &long_id],
        &["RATELIMIT.CHECK", "e", "0", "1s"],
        &["RATELIMIT.CHECK", "e", "1", "1s", "FOO"],
        &["RATELIMIT.CHECK", "e", "1", "1s", "BURST", "2"],
        &["RATELIMIT.CHECK", "e", "1", "1s", "FORCE", "DRYRUN"],
        &["RATELIMIT.QUOTA", "e", "1", "1s", "DRYRUN"],
        &["RATELIMIT.CHECK", "list", "1", "1s"],
        &["RATELIMIT.QUOTA", "list", "1", "1s"],
        &["RATELIMIT.CHECK", "g", "2", "1h"],
        &["RATELIMIT.RESET", "text"],
        &[
            "RATELIMIT.MCHECK",
            "2",
            "e",
            "e",
            "LIMIT",
            "1",
            "1s",
            "LIMIT",
            "1",
            "1s",
        ],
        &[
            "RATELIMIT.MCHECK",
            "1",
            "e",
            "LIMIT",
            "1",
            "1s",
            "FORCE",
            "DRYRUN",
        ],
        &[
            "RATELIMIT.MCHECK",
            "2",
            "e",
            "list",
            "LIMIT",
            "1",
            "1s",
            "LIMIT",
            "1",
            "1s",
        ],
        &["RATELIMIT.MCHECK", "1", "g", "LIMIT", "2", "1h"],
        &["RATELIMIT.REFUND", "e", "1", "1s", "WINDOW", "1"],
        &["RATELIMIT.REFUND", "text", "1", "1s", "COST", "1"],
        &["RATELIMIT.REFUND", "g", "2", "1h", "COST", "1"],
    ];
    for args in errors {
        expect_error(&mut con, args);
        expected.bump("errors");
    }
    expected.assert_matches(&mut con, "errors");

    // Too few arguments: the module's error where it checks the arity itself, the server's
    // (not counted) where the server knows the arity from the command docs (7.0+, found by
    // asking COMMAND INFO).
    for args in [
        &["RATELIMIT.CHECK"][..],
        &["RATELIMIT.QUOTA", "e", "1"],
        &["RATELIMIT.RESET"],
        &["RATELIMIT.MCHECK", "1", "e", "LIMIT", "1"],
        &["RATELIMIT.REFUND", "e", "1", "1s"],
        &["RATELIMIT.ACQUIRE", "e", "1"],
        &["RATELIMIT.RELEASE", "e"],
    ] {
        let error = expect_error(&mut con, args);
        assert!(error.starts_with("ERR"), "{args:?}: {error}");
        if command_arity(&mut con, args[0]) == -1 {
            expected.bump("errors");
        }
    }
    expected.assert_matches(&mut con, "too few arguments");

    // Calls from a transaction and from a script count like any other.
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("RATELIMIT.CHECK")
        .arg(&["m", "1", "1h"])
        .cmd("RATELIMIT.CHECK")
        .arg(&["m", "1", "1h"])
        .query(&mut con)
        .unwrap();
    for (reply, allowed) in replies.iter().zip([true, false]) {
        let d = decision(reply);
        assert_eq!(d.is_allowed(), allowed, "MULTI: {d:?}");
        expected.check("fixed", false, &d);
    }
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("RATELIMIT.ACQUIRE")
        .arg(&["ml", "1", "1h", "ID", "a"])
        .cmd("RATELIMIT.ACQUIRE")
        .arg(&["ml", "1", "1h", "ID", "b"])
        .cmd("RATELIMIT.RELEASE")
        .arg(&["ml", "a"])
        .query(&mut con)
        .unwrap();
    assert!(lease_reply(&replies[0]).is_allowed());
    assert!(!lease_reply(&replies[1]).is_allowed());
    assert_eq!(replies[2], Value::Int(1));
    for field in ["acquired", "acquire_denied", "releases", "released"] {
        expected.bump(field);
    }
    let script = "return redis.call('RATELIMIT.CHECK', KEYS[1], '1', '1h', 'ALGORITHM', 'SLIDING')";
    let reply = call(&mut con, &["EVAL", script, "1", "lua"]);
    expected.check("sliding", false, &decision(&reply));
    let script = "return redis.pcall('RATELIMIT.CHECK', KEYS[1], 'x', '1h')";
    assert!(error_text(&call(&mut con, &["EVAL", script, "1", "lua"])).is_some());
    expected.bump("errors");
    expected.assert_matches(&mut con, "MULTI/EXEC and EVAL");

    let c = counters(&mut con);
    assert!(c["ratelimit_releases"] >= c["ratelimit_released"], "{c:?}");
    assert_eq!(
        c["ratelimit_checks"],
        c["ratelimit_allowed"] + c["ratelimit_denied"] + c["ratelimit_dry_runs"]
    );
    assert_eq!(
        c["ratelimit_mchecks"],
        c["ratelimit_mcheck_allowed"]
            + c["ratelimit_mcheck_denied"]
            + c["ratelimit_mcheck_dry_runs"]
    );
    for outcome in ["checks", "allowed", "denied"] {
        let per_algorithm: u64 = ["fixed", "sliding", "gcra"]
            .iter()
            .map(|a| c[&format!("ratelimit_{outcome}_{a}")])
            .sum();
        let total = if outcome == "checks" {
            c["ratelimit_checks"]
        } else {
            c[&format!("ratelimit_{outcome}")]
        };
        assert_eq!(per_algorithm, total, "{outcome} per algorithm: {c:?}");
    }
}

#[test]
fn errors_of_the_server_are_not_the_modules() {
    skip_if_external!("reads the module's INFO counters, which count from its load");
    let server = Server::start();
    let mut con = server.con();
    // The server answers these itself, before the module runs.
    expect_error(&mut con, &["RATELIMIT.NOSUCH", "k"]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let oom = expect_error(&mut con, &["RATELIMIT.CHECK", "k", "1", "1s"]);
    assert!(oom.starts_with("OOM"), "deny-oom: {oom}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut con)
        .unwrap();
    let c = counters(&mut con);
    assert!(c.values().all(|&v| v == 0), "{c:?}");
}

#[test]
fn sections_appear_wherever_info_shows_modules() {
    skip_if_external!("reads the module's INFO counters, which count from its load");
    let server = Server::start();
    let mut con = server.con();
    check(&mut con, &["k", "1", "1s"]);

    let ours = |fields: &BTreeMap<String, String>| {
        fields
            .keys()
            .filter(|k| k.starts_with("ratelimit_"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut all_fields: Vec<String> = COUNTERS.iter().map(|s| s.to_string()).collect();
    all_fields.push("ratelimit_default_algorithm".to_string());
    all_fields.push("ratelimit_top_keys".to_string());
    all_fields.sort();

    // The module's name selects both of its sections, in any letter case.
    for section in ["ratelimit", "RATELIMIT"] {
        let fields = info_fields(&mut con, &[section]);
        let mut names: Vec<String> = fields.keys().cloned().collect();
        names.sort();
        assert_eq!(names, all_fields, "INFO {section}");
        assert_eq!(fields["ratelimit_checks"], "1");
        assert_eq!(fields["ratelimit_default_algorithm"], "fixed");
    }
    let config = info_fields(&mut con, &["ratelimit_config"]);
    assert_eq!(
        config.into_iter().collect::<Vec<_>>(),
        [
            (
                "ratelimit_default_algorithm".to_string(),
                "fixed".to_string()
            ),
            ("ratelimit_top_keys".to_string(), "128".to_string())
        ]
    );
    for sections in [&["everything"][..], &["modules"][..]] {
        let fields = info_fields(&mut con, sections);
        let mut names = ours(&fields);
        names.sort();
        assert_eq!(names, all_fields, "INFO {sections:?}");
        if sections == ["modules"] {
            let module = fields.get("module").cloned().unwrap_or_default();
            assert!(module.starts_with("name=ratelimit,"), "{fields:?}");
        }
    }
    // These answer whether or not they include the module's sections (servers differ); they
    // must not fail because of the module.
    for sections in [&[][..], &["all"][..], &["default"][..], &["server"][..]] {
        let fields = info_fields(&mut con, sections);
        assert!(fields.contains_key("redis_version"), "INFO {sections:?}");
    }
    assert!(ours(&info_fields(&mut con, &["server"])).is_empty());
}

/// The arity `COMMAND INFO` reports for `command`: -1 where the module checks it (no command
/// docs), the real one where the server knows it.
fn command_arity(con: &mut redis::Connection, command: &str) -> i64 {
    match call(con, &["COMMAND", "INFO", command]) {
        Value::Array(entries) => match entries.first() {
            Some(Value::Array(fields)) => match fields.get(1) {
                Some(Value::Int(arity)) => *arity,
                other => panic!("COMMAND INFO {command}: arity {other:?}"),
            },
            other => panic!("COMMAND INFO {command}: {other:?}"),
        },
        other => panic!("COMMAND INFO {command}: {other:?}"),
    }
}
