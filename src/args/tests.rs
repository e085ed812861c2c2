use super::*;
use ratelimit_core::MAX_PERIOD_MS;

fn words(line: &str) -> Vec<&[u8]> {
    line.split_whitespace().map(str::as_bytes).collect()
}

fn check(line: &str) -> Result<Request<'_>, Error> {
    parse_check(&words(line), Algorithm::Fixed).map(|r| Request { key: b"k", ..r })
}

fn quota(line: &str) -> Result<Request<'_>, Error> {
    parse_quota(&words(line), Algorithm::Fixed).map(|r| Request { key: b"k", ..r })
}

fn request(
    algorithm: Algorithm,
    limit: u64,
    period_ms: u64,
    burst: Option<u64>,
) -> Request<'static> {
    Request {
        key: b"k",
        limit: Limit::new(algorithm, limit, period_ms, burst).unwrap(),
        cost: 1,
        dry_run: false,
        force: false,
        with_window: false,
    }
}

#[test]
fn accepts_every_option() {
    use Algorithm::*;
    let base = request(Fixed, 3, 10_000, None);
    let cases: Vec<(&str, Request)> = vec![
        ("C k 3 10s", base),
        ("C k 3 10", base),
        ("C k 3 10000ms", base),
        ("C k 1 1ms", request(Fixed, 1, 1, None)),
        (
            "C k 1000000000000000 3650d",
            request(Fixed, MAX_COUNT, MAX_PERIOD_MS, None),
        ),
        ("C k 3 315360000", request(Fixed, 3, MAX_PERIOD_MS, None)),
        ("C k 3 5m", request(Fixed, 3, 300_000, None)),
        ("C k 3 2H", request(Fixed, 3, 7_200_000, None)),
        ("C k 3 1d", request(Fixed, 3, 86_400_000, None)),
        ("C k 3 10s ALGORITHM FIXED", base),
        ("C k 3 10s algorithm fixed", base),
        (
            "C k 3 10s ALGORITHM sliding",
            request(Sliding, 3, 10_000, None),
        ),
        ("C k 3 10s Algorithm GcRa", request(Gcra, 3, 10_000, None)),
        (
            "C k 3 10s ALGORITHM GCRA BURST 7",
            request(Gcra, 3, 10_000, Some(7)),
        ),
        (
            "C k 3 10s burst 1 algorithm gcra",
            request(Gcra, 3, 10_000, Some(1)),
        ),
        (
            "C k 3 10s ALGORITHM GCRA BURST 1000000000000000",
            request(Gcra, 3, 10_000, Some(MAX_COUNT)),
        ),
        ("C k 3 10s COST 0", Request { cost: 0, ..base }),
        ("C k 3 10s cost 5", Request { cost: 5, ..base }),
        (
            "C k 3 10s COST 1000000000000000",
            Request {
                cost: MAX_COUNT,
                ..base
            },
        ),
        (
            "C k 3 10s DRYRUN",
            Request {
                dry_run: true,
                ..base
            },
        ),
        (
            "C k 3 10s dryRun",
            Request {
                dry_run: true,
                ..base
            },
        ),
        (
            "C k 3 10s DRYRUN COST 2 BURST 4 ALGORITHM GCRA",
            Request {
                cost: 2,
                dry_run: true,
                ..request(Gcra, 3, 10_000, Some(4))
            },
        ),
        (
            "C k 3 10s FORCE",
            Request {
                force: true,
                ..base
            },
        ),
        (
            "C k 3 10s withwindow force COST 7",
            Request {
                force: true,
                with_window: true,
                cost: 7,
                ..base
            },
        ),
        (
            "C k 3 10s WITHWINDOW DRYRUN",
            Request {
                dry_run: true,
                with_window: true,
                ..base
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(check(line), Ok(expected), "{line}");
    }
}

#[test]
fn quota_never_writes_and_takes_a_cost() {
    assert_eq!(
        quota("Q k 3 10s COST 2"),
        Ok(Request {
            dry_run: true,
            cost: 2,
            ..request(Algorithm::Fixed, 3, 10_000, None)
        })
    );
    let base = Request {
        dry_run: true,
        ..request(Algorithm::Fixed, 3, 10_000, None)
    };
    assert_eq!(quota("Q k 3 10s"), Ok(base));
    assert_eq!(
        quota("Q k 3 10s BURST 9 ALGORITHM gcra"),
        Ok(Request {
            dry_run: true,
            ..request(Algorithm::Gcra, 3, 10_000, Some(9))
        })
    );
    assert_eq!(
        quota("Q k 3 10s ALGORITHM SLIDING"),
        Ok(Request {
            dry_run: true,
            ..request(Algorithm::Sliding, 3, 10_000, None)
        })
    );
}

#[test]
fn keeps_the_key_as_given() {
    let args: [&[u8]; 4] = [b"RATELIMIT.CHECK", b"\x00key\r\n\xff", b"1", b"1"];
    assert_eq!(
        parse_check(&args, Algorithm::Fixed).unwrap().key,
        b"\x00key\r\n\xff"
    );
    let owned: Vec<Vec<u8>> = vec![b"RATELIMIT.RESET".to_vec(), Vec::new()];
    assert_eq!(parse_reset(&owned), Ok(&b""[..]));
}

#[test]
fn reports_every_error() {
    let cases: &[(&str, &str)] = &[
        (
            "C",
            "ERR wrong number of arguments for 'ratelimit.check' command",
        ),
        (
            "C k",
            "ERR wrong number of arguments for 'ratelimit.check' command",
        ),
        (
            "C k 3",
            "ERR wrong number of arguments for 'ratelimit.check' command",
        ),
        (
            "C k abc 10s",
            "ERR invalid limit 'abc': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 0 10s",
            "ERR invalid limit '0': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k -1 10s",
            "ERR invalid limit '-1': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 1000000000000001 10s",
            "ERR invalid limit '1000000000000001': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 1.5 10s",
            "ERR invalid limit '1.5': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 3 5x",
            "ERR invalid period '5x': expected an integer with optional unit ms, s, m, h or d",
        ),
        (
            "C k 3 ms",
            "ERR invalid period 'ms': expected an integer with optional unit ms, s, m, h or d",
        ),
        (
            "C k 3 -5s",
            "ERR invalid period '-5s': expected an integer with optional unit ms, s, m, h or d",
        ),
        (
            "C k 3 1.5s",
            "ERR invalid period '1.5s': expected an integer with optional unit ms, s, m, h or d",
        ),
        (
            "C k 3 0",
            "ERR invalid period '0': expected from 1ms to 3650d",
        ),
        (
            "C k 3 0ms",
            "ERR invalid period '0ms': expected from 1ms to 3650d",
        ),
        (
            "C k 3 3651d",
            "ERR invalid period '3651d': expected from 1ms to 3650d",
        ),
        (
            "C k 3 315360001",
            "ERR invalid period '315360001': expected from 1ms to 3650d",
        ),
        (
            "C k 3 99999999999999999999999D",
            "ERR invalid period '99999999999999999999999D': expected from 1ms to 3650d",
        ),
        (
            "C k 3 10s ALGORITHM GCRA BURST x",
            "ERR invalid burst 'x': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 3 10s ALGORITHM GCRA BURST 0",
            "ERR invalid burst '0': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 3 10s ALGORITHM GCRA BURST 1000000000000001",
            "ERR invalid burst '1000000000000001': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 3 10s COST x",
            "ERR invalid cost 'x': expected an integer from 0 to 1000000000000000",
        ),
        (
            "C k 3 10s COST -1",
            "ERR invalid cost '-1': expected an integer from 0 to 1000000000000000",
        ),
        (
            "C k 3 10s COST 1000000000000001",
            "ERR invalid cost '1000000000000001': expected an integer from 0 to 1000000000000000",
        ),
        (
            "C k 3 10s ALGORITHM X",
            "ERR unknown algorithm 'X': expected FIXED, SLIDING or GCRA",
        ),
        (
            "C k 3 10s ALGORITHM DRYRUN",
            "ERR unknown algorithm 'DRYRUN': expected FIXED, SLIDING or GCRA",
        ),
        ("C k 3 10s FOO", "ERR unknown option 'FOO'"),
        ("C k 3 10s 7", "ERR unknown option '7'"),
        (
            "C k 3 10s COST 1 COST 2",
            "ERR option 'COST' given more than once",
        ),
        (
            "C k 3 10s cost 1 Cost 2",
            "ERR option 'COST' given more than once",
        ),
        (
            "C k 3 10s COST 1 COST",
            "ERR option 'COST' given more than once",
        ),
        (
            "C k 3 10s DRYRUN dryrun",
            "ERR option 'DRYRUN' given more than once",
        ),
        (
            "C k 3 10s ALGORITHM GCRA algorithm GCRA",
            "ERR option 'ALGORITHM' given more than once",
        ),
        (
            "C k 3 10s ALGORITHM GCRA BURST 1 BURST 1",
            "ERR option 'BURST' given more than once",
        ),
        ("C k 3 10s BURST", "ERR option 'BURST' needs a value"),
        (
            "C k 3 10s ALGORITHM",
            "ERR option 'ALGORITHM' needs a value",
        ),
        ("C k 3 10s DRYRUN cost", "ERR option 'COST' needs a value"),
        (
            "C k 3 10s BURST 5",
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
        (
            "C k 3 10s BURST 5 ALGORITHM FIXED",
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
        (
            "C k 3 10s ALGORITHM SLIDING BURST 5",
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
        // Order: limit before period, period before options, options left to right.
        (
            "C k x 5x FOO",
            "ERR invalid limit 'x': expected an integer from 1 to 1000000000000000",
        ),
        (
            "C k 3 5x FOO",
            "ERR invalid period '5x': expected an integer with optional unit ms, s, m, h or d",
        ),
        ("C k 3 10s FOO COST x", "ERR unknown option 'FOO'"),
        (
            "C k 3 10s COST x FOO",
            "ERR invalid cost 'x': expected an integer from 0 to 1000000000000000",
        ),
        (
            "C k 3 10s BURST 0",
            "ERR invalid burst '0': expected an integer from 1 to 1000000000000000",
        ),
        ("C k 3 10s BURST 5 FOO", "ERR unknown option 'FOO'"),
        (
            "C k 3 10s FORCE DRYRUN",
            "ERR FORCE and DRYRUN cannot be combined",
        ),
        (
            "C k 3 10s DRYRUN force",
            "ERR FORCE and DRYRUN cannot be combined",
        ),
        (
            "C k 3 10s FORCE FORCE",
            "ERR option 'FORCE' given more than once",
        ),
        (
            "C k 3 10s WITHWINDOW WITHWINDOW",
            "ERR option 'WITHWINDOW' given more than once",
        ),
        ("C k 3 10s WINDOW 5", "ERR unknown option 'WINDOW'"),
        ("C k 3 10s LIMIT 5 5s", "ERR unknown option 'LIMIT'"),
    ];
    for (line, expected) in cases {
        assert_eq!(check(line).unwrap_err().to_string(), *expected, "{line}");
    }
}

fn refund(line: &str) -> Result<Refund<'_>, Error> {
    parse_refund(&words(line), Algorithm::Fixed).map(|r| Refund { key: b"k", ..r })
}

#[test]
fn refund_needs_a_cost_and_takes_a_window() {
    let limit = Limit::new(Algorithm::Fixed, 3, 10_000, None).unwrap();
    assert_eq!(
        refund("R k 3 10s COST 2"),
        Ok(Refund {
            key: b"k",
            limit,
            amount: 2,
            window: None,
        })
    );
    assert_eq!(
        refund("R k 3 10s window 18446744073709551615 cost 0"),
        Ok(Refund {
            key: b"k",
            limit,
            amount: 0,
            window: Some(u64::MAX),
        })
    );
    let gcra = Limit::new(Algorithm::Gcra, 3, 10_000, Some(5)).unwrap();
    assert_eq!(
        refund("R k 3 10s ALGORITHM GCRA BURST 5 COST 1").map(|r| r.limit),
        Ok(gcra)
    );
    let cases: &[(&str, &str)] = &[
        (
            "R k 3",
            "ERR wrong number of arguments for 'ratelimit.refund' command",
        ),
        (
            "R k 3 10s",
            "ERR wrong number of arguments for 'ratelimit.refund' command",
        ),
        ("R k 3 10s WINDOW 5", "ERR RATELIMIT.REFUND needs COST n"),
        (
            "R k 3 10s COST 1 WINDOW -1",
            "ERR invalid window '-1': expected a non-negative integer",
        ),
        (
            "R k 3 10s COST 1 WINDOW 18446744073709551616",
            "ERR invalid window '18446744073709551616': expected a non-negative integer",
        ),
        (
            "R k 3 10s COST 1 WINDOW",
            "ERR option 'WINDOW' needs a value",
        ),
        (
            "R k 3 10s COST 1 WINDOW 1 WINDOW 2",
            "ERR option 'WINDOW' given more than once",
        ),
        (
            "R k 3 10s COST 1 DRYRUN",
            "ERR RATELIMIT.REFUND does not accept 'DRYRUN'",
        ),
        (
            "R k 3 10s COST 1 FORCE",
            "ERR RATELIMIT.REFUND does not accept 'FORCE'",
        ),
        (
            "R k 3 10s COST 1 WITHWINDOW",
            "ERR RATELIMIT.REFUND does not accept 'WITHWINDOW'",
        ),
        (
            "R k 3 10s COST x",
            "ERR invalid cost 'x': expected an integer from 0 to 1000000000000000",
        ),
        (
            "R k 0 10s COST 1",
            "ERR invalid limit '0': expected an integer from 1 to 1000000000000000",
        ),
        (
            "R k 3 10s COST 1 BURST 2",
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(refund(line).unwrap_err().to_string(), *expected, "{line}");
    }
}

fn mcheck(line: &str) -> Result<MultiRequest, Error> {
    parse_mcheck(&words(line), Algorithm::Fixed)
}

#[test]
fn mcheck_takes_one_policy_per_key() {
    use Algorithm::*;
    let limit = |a, l, p, b| Limit::new(a, l, p, b).unwrap();
    assert_eq!(
        mcheck("M 3 a b c LIMIT 10 1s LIMIT 600 1m LIMIT 90000 1m ALGORITHM GCRA COST 1200"),
        Ok(MultiRequest {
            policies: vec![
                (limit(Fixed, 10, 1_000, None), 1),
                (limit(Fixed, 600, 60_000, None), 1),
                (limit(Gcra, 90_000, 60_000, None), 1_200),
            ],
            dry_run: false,
            force: false,
            with_window: false,
        })
    );
    // Flags anywhere; a policy's options in any order, up to the next LIMIT.
    assert_eq!(
        mcheck("M 2 a b WITHWINDOW limit 5 5s cost 2 force algorithm sliding LIMIT 7 1h"),
        Ok(MultiRequest {
            policies: vec![
                (limit(Sliding, 5, 5_000, None), 2),
                (limit(Fixed, 7, 3_600_000, None), 1),
            ],
            dry_run: false,
            force: true,
            with_window: true,
        })
    );
    assert_eq!(
        mcheck("M 1 a LIMIT 1 1ms DRYRUN").map(|r| (r.dry_run, r.policies.len())),
        Ok((true, 1))
    );
    let sixteen: String = (0..16).map(|i| format!(" k{i}")).collect();
    let policies = " LIMIT 1 1s".repeat(16);
    assert_eq!(
        mcheck(&format!("M 16{sixteen}{policies}")).map(|r| r.policies.len()),
        Ok(16)
    );
    let arity = "ERR wrong number of arguments for 'ratelimit.mcheck' command";
    let cases: Vec<(String, &str)> = vec![
        ("M".into(), arity),
        ("M 1".into(), arity),
        ("M 2 a b".into(), arity),
        ("M 1 a LIMIT 5".into(), arity),
        (
            "M 0 a LIMIT 5 5s".into(),
            "ERR invalid numkeys '0': expected an integer from 1 to 16, followed by that many keys",
        ),
        (
            "M 17 a LIMIT 5 5s".into(),
            "ERR invalid numkeys '17': expected an integer from 1 to 16, followed by that many keys",
        ),
        ("M 3 a b".into(), arity),
        (
            "M 5 a b c d".into(),
            "ERR invalid numkeys '5': expected an integer from 1 to 16, followed by that many keys",
        ),
        (
            "M x a LIMIT 5 5s".into(),
            "ERR invalid numkeys 'x': expected an integer from 1 to 16, followed by that many keys",
        ),
        (
            "M 2 a a LIMIT 5 5s LIMIT 5 5s".into(),
            "ERR key 'a' given more than once",
        ),
        (
            "M 2 a b LIMIT 5 5s".into(),
            "ERR expected 2 policies (one LIMIT limit period ... per key), got 1",
        ),
        (
            "M 1 a LIMIT 5 5s LIMIT 5 5s".into(),
            "ERR expected 1 policies (one LIMIT limit period ... per key), got 2",
        ),
        (
            "M 1 a COST 2 LIMIT 5 5s".into(),
            "ERR expected LIMIT limit period before 'COST'",
        ),
        (
            "M 1 a DRYRUN algorithm gcra LIMIT 5 5s".into(),
            "ERR expected LIMIT limit period before 'algorithm'",
        ),
        (
            "M 1 a LIMIT 5 5s COST 2 COST 3".into(),
            "ERR option 'COST' given more than once",
        ),
        (
            "M 1 a LIMIT 5 5s DRYRUN FORCE".into(),
            "ERR FORCE and DRYRUN cannot be combined",
        ),
        (
            "M 1 a LIMIT 5 5s WINDOW 3".into(),
            "ERR RATELIMIT.MCHECK does not accept 'WINDOW'",
        ),
        ("M 1 a LIMIT 5 5s FOO".into(), "ERR unknown option 'FOO'"),
        (
            "M 1 a LIMIT 0 5s".into(),
            "ERR invalid limit '0': expected an integer from 1 to 1000000000000000",
        ),
        (
            "M 2 a b LIMIT 5 5s LIMIT 5 5x".into(),
            "ERR invalid period '5x': expected an integer with optional unit ms, s, m, h or d",
        ),
        (
            "M 1 a LIMIT 5 5s BURST 3".into(),
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
        (
            "M 1 a LIMIT 5 5s COST".into(),
            "ERR option 'COST' needs a value",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(mcheck(&line).unwrap_err().to_string(), expected, "{line}");
    }
}

#[test]
fn mcheck_keys_for_the_server() {
    assert_eq!(keys_of(&words("M 2 a b LIMIT 5 5s")), Some(2));
    assert_eq!(keys_of(&words("M 2 a b")), Some(2));
    assert_eq!(keys_of(&words("M 3 a b")), None);
    assert_eq!(keys_of(&words("M 0 a")), None);
    assert_eq!(keys_of(&words("M 17 a")), None);
    assert_eq!(keys_of(&words("M")), None);
}

#[test]
fn reports_quota_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "Q k 3",
            "ERR wrong number of arguments for 'ratelimit.quota' command",
        ),
        ("Q k 3 10s cost", "ERR option 'COST' needs a value"),
        (
            "Q k 3 10s DRYRUN",
            "ERR RATELIMIT.QUOTA does not accept 'DRYRUN'",
        ),
        (
            "Q k 3 10s FORCE",
            "ERR RATELIMIT.QUOTA does not accept 'FORCE'",
        ),
        (
            "Q k 3 10s WITHWINDOW",
            "ERR RATELIMIT.QUOTA does not accept 'WITHWINDOW'",
        ),
        ("Q k 3 10s FOO DRYRUN", "ERR unknown option 'FOO'"),
        (
            "Q k 3 10s BURST 2",
            "ERR BURST applies only to ALGORITHM GCRA",
        ),
        (
            "Q k 3 10s ALGORITHM GCRA ALGORITHM GCRA",
            "ERR option 'ALGORITHM' given more than once",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(quota(line).unwrap_err().to_string(), *expected, "{line}");
    }
}

#[test]
fn reset_takes_exactly_a_key() {
    assert_eq!(parse_reset(&words("R k")), Ok(&b"k"[..]));
    let arity = "ERR wrong number of arguments for 'ratelimit.reset' command";
    for line in ["", "R", "R k extra"] {
        assert_eq!(
            parse_reset(&words(line)).unwrap_err().to_string(),
            arity,
            "{line}"
        );
    }
}

#[test]
fn empty_and_binary_arguments() {
    let arity = "ERR wrong number of arguments for 'ratelimit.check' command";
    let none: [&[u8]; 0] = [];
    assert_eq!(
        parse_check(&none, Algorithm::Fixed)
            .unwrap_err()
            .to_string(),
        arity
    );
    let cases: &[(&[&[u8]], &str)] = &[
        (
            &[b"C", b"", b"", b"1"],
            "ERR invalid limit '': expected an integer from 1 to 1000000000000000",
        ),
        (
            &[b"C", b"k", b"1", b""],
            "ERR invalid period '': expected an integer with optional unit ms, s, m, h or d",
        ),
        (&[b"C", b"k", b"1", b"1", b""], "ERR unknown option ''"),
        (
            &[b"C", b"k", b"1", b"1", b"COST\r\n", b"1"],
            "ERR unknown option 'COST??'",
        ),
        (
            &[b"C", b"k", b"1\r\n", b"1"],
            "ERR invalid limit '1??': expected an integer from 1 to 1000000000000000",
        ),
        (
            &[b"C", b"k", b"1", b"1", b"ALGORITHM", b"\xffGCRA\x00"],
            "ERR unknown algorithm '?GCRA?': expected FIXED, SLIDING or GCRA",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(
            parse_check(args, Algorithm::Fixed).unwrap_err().to_string(),
            *expected
        );
    }
    let long = vec![b'z'; 1000];
    let args: [&[u8]; 5] = [b"C", b"k", b"1", b"1", &long];
    assert_eq!(
        parse_check(&args, Algorithm::Fixed)
            .unwrap_err()
            .to_string(),
        format!("ERR unknown option '{}...'", "z".repeat(64))
    );
}

/// A small deterministic generator (SplitMix64), so that a failing case can be replayed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn random_case(rng: &mut SplitMix, word: &[u8]) -> Vec<u8> {
    word.iter()
        .map(|b| {
            if rng.below(2) == 0 {
                b.to_ascii_lowercase()
            } else {
                b.to_ascii_uppercase()
            }
        })
        .collect()
}

fn random_number(rng: &mut SplitMix) -> Vec<u8> {
    let numbers: &[&str] = &[
        "0",
        "1",
        "2",
        "00",
        "-0",
        "-1",
        "+1",
        "999999999999999",
        "1000000000000000",
        "1000000000000001",
        "4611686018427387904",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "1e3",
        "1.5",
        " 1",
    ];
    match rng.below(3) {
        0 => rng.pick(numbers).as_bytes().to_vec(),
        1 => {
            let bits = rng.below(64);
            rng.below(1 << bits).to_string().into_bytes()
        }
        _ => rng.below(20).to_string().into_bytes(),
    }
}

fn random_period(rng: &mut SplitMix) -> Vec<u8> {
    let mut text = random_number(rng);
    let units: &[&str] = &["", "ms", "s", "m", "h", "d", "MS", "x", "sec", " s"];
    text.extend_from_slice(rng.pick(units).as_bytes());
    if rng.below(10) == 0 {
        text = rng
            .pick(&["3650d", "3651d", "315360000", "315360001", "0ms", "1ms"])
            .as_bytes()
            .to_vec();
    }
    text
}

fn random_junk(rng: &mut SplitMix) -> Vec<u8> {
    let max = if rng.below(20) == 0 { 200 } else { 8 };
    let len = rng.below(max);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn random_argument(rng: &mut SplitMix) -> Vec<u8> {
    let keywords: &[&[u8]] = &[
        b"ALGORITHM",
        b"BURST",
        b"COST",
        b"DRYRUN",
        b"FIXED",
        b"SLIDING",
        b"GCRA",
        b"FOO",
        b"ALGO",
        b"DRY",
    ];
    match rng.below(6) {
        0 | 1 => {
            let word = *rng.pick(keywords);
            random_case(rng, word)
        }
        2 => random_number(rng),
        3 => random_period(rng),
        4 => Vec::new(),
        _ => random_junk(rng),
    }
}

fn random_vector(rng: &mut SplitMix) -> Vec<Vec<u8>> {
    let mut args = vec![b"RATELIMIT.CHECK".to_vec()];
    let arity = rng.below(12);
    for position in 1..arity {
        let arg = match (position, rng.below(4)) {
            (1, _) => random_junk(rng),
            (2, 0..=2) => random_number(rng),
            (3, 0..=2) => random_period(rng),
            _ => random_argument(rng),
        };
        args.push(arg);
    }
    // Bias toward well-formed option pairs, so that deep paths are reached often.
    if args.len() >= 4 && rng.below(2) == 0 {
        args.truncate(4);
        if rng.below(2) == 0 {
            args[2] = (1 + rng.below(MAX_COUNT)).to_string().into_bytes();
            let unit = *rng.pick(&["", "ms", "s", "m", "h", "d"]);
            args[3] = format!("{}{unit}", 1 + rng.below(3650)).into_bytes();
        }
        for _ in 0..rng.below(5) {
            match rng.below(5) {
                0 => {
                    args.push(random_case(rng, b"ALGORITHM"));
                    let name = rng
                        .pick(&[&b"FIXED"[..], b"SLIDING", b"GCRA", b"gcra", b"X"])
                        .to_vec();
                    args.push(name);
                }
                1 => {
                    args.push(random_case(rng, b"BURST"));
                    args.push(random_number(rng));
                }
                2 => {
                    args.push(random_case(rng, b"COST"));
                    args.push(random_number(rng));
                }
                3 => args.push(random_case(rng, b"DRYRUN")),
                _ => args.push(random_argument(rng)),
            }
        }
    }
    args
}

fn assert_safe_error(error: &Error, args: &[Vec<u8>]) {
    let message = error.to_string();
    assert!(
        message.starts_with("ERR ") || message.starts_with("WRONGTYPE "),
        "{message} for {args:?}"
    );
    assert!(
        message.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{message:?} for {args:?}"
    );
    assert!(message.len() < 200, "{message} for {args:?}");
}

#[test]
fn fuzz_never_panics_and_respects_the_contract() {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    let mut rng = SplitMix(0x5eed_2024);
    let (mut accepted, mut rejected) = (0u32, 0u32);
    for round in 0..120_000u32 {
        let seed = rng.0;
        let args = random_vector(&mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (
                parse_check(&args, Algorithm::Fixed),
                parse_quota(&args, Algorithm::Fixed),
                parse_reset(&args),
                parse_refund(&args, Algorithm::Fixed).map(|r| (r.amount, r.window)),
                parse_mcheck(&args, Algorithm::Fixed).map(|m| m.policies.len()),
                keys_of(&args),
            )
        }));
        let Ok((check, quota, reset, refund, mcheck, keys)) = outcome else {
            panic!("round {round} (seed {seed:#x}) panicked on {args:?}");
        };
        for error in [refund.err(), mcheck.as_ref().err().cloned()]
            .into_iter()
            .flatten()
        {
            assert!(error.is_invalid_request(), "{error} for {args:?}");
            assert_safe_error(&error, &args);
        }
        if let Ok(count) = mcheck {
            assert_eq!(keys, Some(count), "{args:?}");
        }
        for (result, is_quota) in [(check, false), (quota, true)] {
            match result {
                Ok(request) => {
                    accepted += 1;
                    let limit = request.limit;
                    assert_eq!(request.key, &args[1][..]);
                    assert!((1..=MAX_COUNT).contains(&limit.limit()), "{args:?}");
                    assert!((1..=MAX_PERIOD_MS).contains(&limit.period_ms()), "{args:?}");
                    assert!((1..=MAX_COUNT).contains(&limit.burst()), "{args:?}");
                    assert!(request.cost <= MAX_COUNT, "{args:?}");
                    if limit.algorithm() != Algorithm::Gcra {
                        assert_eq!(limit.burst(), limit.limit(), "{args:?}");
                    }
                    if is_quota {
                        assert!(request.dry_run && !request.force && !request.with_window);
                    }
                    assert!(!(request.dry_run && request.force) || is_quota, "{args:?}");
                }
                Err(error) => {
                    rejected += 1;
                    assert!(error.is_invalid_request(), "{error} for {args:?}");
                    assert_safe_error(&error, &args);
                }
            }
        }
        match reset {
            Ok(key) => assert_eq!(args.len(), 2, "{key:?}"),
            Err(error) => assert_safe_error(&error, &args),
        }
    }
    // Both paths must be exercised for the test to mean anything.
    assert!(accepted > 10_000, "only {accepted} accepted");
    assert!(rejected > 10_000, "only {rejected} rejected");
}

#[test]
fn the_default_algorithm_applies_without_algorithm() {
    use Algorithm::*;
    let parse = |line: &str, default: Algorithm| {
        parse_check(&words(line), default).map(|r| Request { key: b"k", ..r })
    };
    assert_eq!(parse("C k 3 10s", Gcra), Ok(request(Gcra, 3, 10_000, None)));
    assert_eq!(
        parse("C k 3 10s", Sliding),
        Ok(request(Sliding, 3, 10_000, None))
    );
    assert_eq!(
        parse("C k 10 1s BURST 3", Gcra),
        Ok(request(Gcra, 10, 1_000, Some(3)))
    );
    assert_eq!(
        parse("C k 10 1s BURST 3", Fixed).unwrap_err(),
        Error::BurstWithoutGcra
    );
    assert_eq!(
        parse("C k 10 1s BURST 3", Sliding).unwrap_err(),
        Error::BurstWithoutGcra
    );
    // An explicit ALGORITHM wins over the default, in both directions.
    assert_eq!(
        parse("C k 3 10s ALGORITHM FIXED", Gcra),
        Ok(request(Fixed, 3, 10_000, None))
    );
    assert_eq!(
        parse("C k 10 1s ALGORITHM fixed BURST 3", Gcra).unwrap_err(),
        Error::BurstWithoutGcra
    );
    assert_eq!(
        parse("C k 10 1s BURST 3 ALGORITHM GCRA", Fixed),
        Ok(request(Gcra, 10, 1_000, Some(3)))
    );
    let line = words("Q k 10 1s BURST 3");
    let quota = parse_quota(&line, Gcra).unwrap();
    assert_eq!(quota.limit.algorithm(), Gcra);
    assert!(quota.dry_run);
}
