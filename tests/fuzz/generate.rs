//! The fuzz run's argument vectors: random tokens at and beyond every bound, options well-formed
//! or not, and the key each call goes to, chosen by what the oracle expects of the call.

use crate::oracle::{classify, Algorithm, Command, Expect, MAX_COUNT};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

pub const LIMITER_POOL: usize = 8;

/// Keys of other types, created before the run.
pub const TYPED: [(&str, &[&str]); 5] = [
    ("ty:list", &["RPUSH", "ty:list", "a", "b", "c"]),
    ("ty:hash", &["HSET", "ty:hash", "f", "1", "g", "2"]),
    ("ty:set", &["SADD", "ty:set", "m1", "m2"]),
    ("ty:zset", &["ZADD", "ty:zset", "1", "m1", "2", "m2"]),
    ("ty:stream", &["XADD", "ty:stream", "1-1", "f", "v"]),
];

/// Strings that are no limiter's state.
pub const JUNK: [&[u8]; 6] = [
    b"hello",
    b"\x00\xff\xfe\x80junk",
    b"1.5",
    b"",
    b"s:x:y",
    b"-",
];

pub fn mismatch_key(algorithm: Algorithm) -> String {
    format!("mm:{}", algorithm.name())
}

pub fn pool_key(algorithm: Algorithm, i: usize) -> String {
    format!("pool:{}:{i}", algorithm.name())
}

/// Random bytes, mostly not UTF-8.
pub fn junk_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(0..12);
    (0..len).map(|_| rng.gen()).collect()
}

pub fn random_case(rng: &mut StdRng, word: &str) -> Vec<u8> {
    word.bytes()
        .map(|b| {
            if rng.gen_bool(0.5) {
                b.to_ascii_lowercase()
            } else {
                b.to_ascii_uppercase()
            }
        })
        .collect()
}

pub fn count_token(rng: &mut StdRng) -> Vec<u8> {
    let boundaries: [&str; 16] = [
        "0",
        "1",
        "2",
        "999999999999999",
        "1000000000000000",
        "1000000000000001",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-1",
        "-5",
        "100",
        "4294967296",
        "99999999999999999999999",
    ];
    let junk: [&str; 12] = [
        "", "abc", "1.5", " 3", "3 ", "0x10", "1e3", "+5", "007", "-0", "3\r\n", "٣",
    ];
    match rng.gen_range(0..100) {
        0..=49 => rng.gen_range(1..=20u64).to_string().into_bytes(),
        50..=74 => boundaries.choose(rng).unwrap().as_bytes().to_vec(),
        75..=84 => rng.gen_range(1..=MAX_COUNT).to_string().into_bytes(),
        85..=94 => junk.choose(rng).unwrap().as_bytes().to_vec(),
        _ => junk_bytes(rng),
    }
}

pub fn period_token(rng: &mut StdRng) -> Vec<u8> {
    let number = match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(1..=100u64).to_string(),
        60..=84 => [
            "0",
            "1",
            "3650",
            "3651",
            "315360000",
            "315360001",
            "86400000",
            "18446744073709551615",
            "0001",
            "+7",
            "",
        ]
        .choose(rng)
        .unwrap()
        .to_string(),
        _ => rng.gen_range(1..=u64::MAX).to_string(),
    };
    let unit = match rng.gen_range(0..100) {
        0..=79 => ["", "ms", "s", "m", "h", "d"]
            .choose(rng)
            .unwrap()
            .to_string(),
        80..=87 => ["MS", "S", "M", "H", "D", "Ms"]
            .choose(rng)
            .unwrap()
            .to_string(),
        _ => ["x", "sec", "min", " s", "us", ".5s", "-", "dd", "s\0"]
            .choose(rng)
            .unwrap()
            .to_string(),
    };
    match rng.gen_range(0..100) {
        0..=94 => format!("{number}{unit}").into_bytes(),
        95..=97 => ["", "-5s", "1.5s", "ms", "5x", "1 d", "1e3ms"]
            .choose(rng)
            .unwrap()
            .as_bytes()
            .to_vec(),
        _ => junk_bytes(rng),
    }
}

pub fn algorithm_token(rng: &mut StdRng) -> Vec<u8> {
    if rng.gen_bool(0.85) {
        let name = *["FIXED", "SLIDING", "GCRA"].choose(rng).unwrap();
        random_case(rng, name)
    } else {
        match rng.gen_range(0..5) {
            0 => b"LEAKY".to_vec(),
            1 => b"".to_vec(),
            2 => b"GCRA ".to_vec(),
            3 => b"FIXEDX".to_vec(),
            _ => junk_bytes(rng),
        }
    }
}

/// Options after the period: mostly well-formed, sometimes repeated, unknown or cut short.
pub fn options(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = match rng.gen_range(0..100) {
        0..=29 => 0,
        30..=79 => rng.gen_range(1..=2),
        _ => rng.gen_range(3..=6),
    };
    let mut out = Vec::new();
    for _ in 0..count {
        match rng.gen_range(0..100) {
            0..=34 => {
                out.push(random_case(rng, "ALGORITHM"));
                out.push(algorithm_token(rng));
            }
            35..=49 => {
                out.push(random_case(rng, "BURST"));
                out.push(count_token(rng));
            }
            50..=74 => {
                out.push(random_case(rng, "COST"));
                out.push(count_token(rng));
            }
            75..=92 => out.push(random_case(rng, "DRYRUN")),
            _ => out.push(match rng.gen_range(0..4) {
                0 => b"FOO".to_vec(),
                1 => b"".to_vec(),
                2 => b"BURSTY".to_vec(),
                _ => junk_bytes(rng),
            }),
        }
    }
    if !out.is_empty() && rng.gen_bool(0.05) {
        out.pop();
    }
    out
}

/// Arguments that are all valid, in any order and letter case, with values at the bounds too.
pub fn clean_arguments(rng: &mut StdRng, command: Command) -> Vec<Vec<u8>> {
    let count = |rng: &mut StdRng, min: u64| -> Vec<u8> {
        match rng.gen_range(0..100) {
            0..=69 => rng.gen_range(min..=20),
            70..=84 => *[min, 1, MAX_COUNT, MAX_COUNT - 1].choose(rng).unwrap(),
            _ => rng.gen_range(min..=MAX_COUNT),
        }
        .to_string()
        .into_bytes()
    };
    let limit = count(rng, 1);
    let period = match rng.gen_range(0..100) {
        0..=84 => {
            let unit = *["", "ms", "s", "m", "h", "d"].choose(rng).unwrap();
            format!("{}{unit}", rng.gen_range(1..=100))
        }
        _ => [
            "1ms",
            "3650d",
            "315360000",
            "87600h",
            "5256000m",
            "315360000000ms",
        ]
        .choose(rng)
        .unwrap()
        .to_string(),
    };
    let algorithm = *["FIXED", "SLIDING", "GCRA", ""].choose(rng).unwrap();
    let mut options: Vec<Vec<Vec<u8>>> = Vec::new();
    if !algorithm.is_empty() {
        options.push(vec![
            random_case(rng, "ALGORITHM"),
            random_case(rng, algorithm),
        ]);
    }
    if algorithm == "GCRA" && rng.gen_bool(0.5) {
        options.push(vec![random_case(rng, "BURST"), count(rng, 1)]);
    }
    if command == Command::Check {
        if rng.gen_bool(0.5) {
            options.push(vec![random_case(rng, "COST"), count(rng, 0)]);
        }
        if rng.gen_bool(0.3) {
            options.push(vec![random_case(rng, "DRYRUN")]);
        }
    }
    options.shuffle(rng);
    let mut out = vec![b"KEY".to_vec(), limit, period.into_bytes()];
    out.extend(options.into_iter().flatten());
    out
}

/// Where a call goes, and so what its reply must be.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// A key that must not exist after the call.
    Absent,
    /// A fresh key that a valid call may create.
    Fresh,
    /// A limiter of the pool, of the call's own algorithm (or any, for RESET).
    Limiter,
    /// A limiter of another algorithm than the call's.
    OtherAlgorithm(Algorithm),
    /// A key of another type.
    Typed,
    /// A string that is no limiter.
    Junk,
}

pub struct Case {
    pub number: u64,
    pub args: Vec<Vec<u8>>,
    pub expect: Expect,
    pub target: Target,
    pub key: Vec<u8>,
}

pub fn generate(rng: &mut StdRng, number: u64) -> Case {
    let command = match rng.gen_range(0..100) {
        0..=54 => Command::Check,
        55..=84 => Command::Quota,
        _ => Command::Reset,
    };
    let name = match command {
        Command::Check => "RATELIMIT.CHECK",
        Command::Quota => "RATELIMIT.QUOTA",
        Command::Reset => "RATELIMIT.RESET",
    };
    let mut rest: Vec<Vec<u8>> = match command {
        Command::Reset => {
            let arity = if rng.gen_bool(0.85) {
                1
            } else {
                *[0usize, 2, 3].choose(rng).unwrap()
            };
            (0..arity).map(|_| b"KEY".to_vec()).collect()
        }
        _ if rng.gen_bool(0.05) => {
            let arity = rng.gen_range(0..3);
            let mut short = vec![b"KEY".to_vec(), count_token(rng)];
            short.truncate(arity);
            short
        }
        _ if rng.gen_bool(0.5) => clean_arguments(rng, command),
        _ => {
            let mut full = vec![b"KEY".to_vec(), count_token(rng), period_token(rng)];
            full.extend(options(rng));
            full
        }
    };
    let expect = classify(command, &rest);
    let (target, key): (Target, Vec<u8>) = match expect {
        Expect::Valid(call) => match rng.gen_range(0..100) {
            0..=29 if call.writes_when_fresh() => {
                (Target::Fresh, format!("fz:new:{number}").into_bytes())
            }
            0..=29 => (Target::Absent, absent_key(rng, number)),
            30..=74 => (
                Target::Limiter,
                pool_key(call.algorithm, rng.gen_range(0..LIMITER_POOL)).into_bytes(),
            ),
            75..=84 => {
                let other = *Algorithm::ALL
                    .iter()
                    .filter(|a| **a != call.algorithm)
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .unwrap();
                (
                    Target::OtherAlgorithm(*other),
                    mismatch_key(*other).into_bytes(),
                )
            }
            85..=94 => (Target::Typed, typed_key(rng)),
            _ => (
                Target::Junk,
                format!("junk:{}", rng.gen_range(0..JUNK.len())).into_bytes(),
            ),
        },
        Expect::Reset => match rng.gen_range(0..100) {
            0..=49 => {
                let algorithm = *Algorithm::ALL.choose(rng).unwrap();
                (
                    Target::Limiter,
                    pool_key(algorithm, rng.gen_range(0..LIMITER_POOL)).into_bytes(),
                )
            }
            50..=69 => (Target::Absent, absent_key(rng, number)),
            70..=89 => (Target::Typed, typed_key(rng)),
            _ => (
                Target::Junk,
                format!("junk:{}", rng.gen_range(0..JUNK.len())).into_bytes(),
            ),
        },
        Expect::Error => match rng.gen_range(0..100) {
            0..=69 => (Target::Absent, absent_key(rng, number)),
            70..=79 => (Target::Typed, typed_key(rng)),
            80..=84 => (
                Target::Junk,
                format!("junk:{}", rng.gen_range(0..JUNK.len())).into_bytes(),
            ),
            85..=92 => {
                let algorithm = *Algorithm::ALL.choose(rng).unwrap();
                (
                    Target::OtherAlgorithm(algorithm),
                    mismatch_key(algorithm).into_bytes(),
                )
            }
            _ => {
                let algorithm = *Algorithm::ALL.choose(rng).unwrap();
                (
                    Target::Limiter,
                    pool_key(algorithm, rng.gen_range(0..LIMITER_POOL)).into_bytes(),
                )
            }
        },
        Expect::Either => (Target::Fresh, format!("fz:amb:{number}").into_bytes()),
    };
    for arg in rest.iter_mut() {
        if arg == b"KEY" {
            *arg = key.clone();
        }
    }
    let mut args = vec![random_case(rng, name)];
    args.extend(rest);
    Case {
        number,
        args,
        expect,
        target,
        key,
    }
}

pub fn typed_key(rng: &mut StdRng) -> Vec<u8> {
    TYPED.choose(rng).unwrap().0.as_bytes().to_vec()
}

/// A key no call ever writes, sometimes with binary bytes in its name.
pub fn absent_key(rng: &mut StdRng, number: u64) -> Vec<u8> {
    let mut key = format!("fz:nx:{number}").into_bytes();
    if rng.gen_bool(0.2) {
        key.push(b':');
        key.extend(junk_bytes(rng));
    }
    key
}
