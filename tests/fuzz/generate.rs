//! The fuzz run's argument vectors: random tokens at and beyond every bound, options well-formed
//! or not, and the keys each call goes to, chosen by what the oracle expects of the call.
//!
//! Arguments are generated with placeholder keys (`KEY0`, `KEY1`, ...; a repeated placeholder is
//! a repeated key), classified by the oracle, and only then given real key names, one distinct
//! name per placeholder, so that the oracle sees exactly the repetitions the server sees.

use crate::oracle::{classify, Algorithm, Command, Expect, MAX_COUNT, MAX_KEYS};
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

/// Strings that are no limiter's state, non-canonical integers among them.
pub const JUNK: [&[u8]; 10] = [
    b"hello",
    b"\x00\xff\xfe\x80junk",
    b"1.5",
    b"",
    b"s:x:y",
    b"-",
    b"05",
    b"+5",
    b" 5",
    b"s:01:2:3",
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

/// A `WINDOW` value: mostly a plausible one, sometimes at or beyond the bounds.
pub fn window_token(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(0..=u64::MAX).to_string().into_bytes(),
        60..=79 => (crate::common::local_time_ms() / rng.gen_range(1..=60_000))
            .to_string()
            .into_bytes(),
        _ => count_token(rng),
    }
}

/// Options after the period: mostly well-formed, sometimes repeated, unknown, of another
/// command, or cut short. `limits` adds MCHECK's `LIMIT limit period`.
pub fn options(rng: &mut StdRng, limits: bool) -> Vec<Vec<u8>> {
    let count = match rng.gen_range(0..100) {
        0..=29 => 0,
        30..=79 => rng.gen_range(1..=2),
        _ => rng.gen_range(3..=6),
    };
    let mut out = Vec::new();
    for _ in 0..count {
        match rng.gen_range(0..110) {
            0..=29 => {
                out.push(random_case(rng, "ALGORITHM"));
                out.push(algorithm_token(rng));
            }
            30..=42 => {
                out.push(random_case(rng, "BURST"));
                out.push(count_token(rng));
            }
            43..=64 => {
                out.push(random_case(rng, "COST"));
                out.push(count_token(rng));
            }
            65..=76 => out.push(random_case(rng, "DRYRUN")),
            77..=84 => out.push(random_case(rng, "FORCE")),
            85..=90 => out.push(random_case(rng, "WITHWINDOW")),
            91..=95 => {
                out.push(random_case(rng, "WINDOW"));
                out.push(window_token(rng));
            }
            96..=99 => out.push(match rng.gen_range(0..4) {
                0 => b"FOO".to_vec(),
                1 => b"".to_vec(),
                2 => b"BURSTY".to_vec(),
                _ => junk_bytes(rng),
            }),
            _ if limits => {
                out.push(random_case(rng, "LIMIT"));
                out.push(count_token(rng));
                out.push(period_token(rng));
            }
            _ => {
                out.push(random_case(rng, "LIMIT"));
                out.push(count_token(rng));
            }
        }
    }
    if !out.is_empty() && rng.gen_bool(0.05) {
        out.pop();
    }
    out
}

/// A count for a clean call: mostly small, sometimes at the bounds.
fn clean_count(rng: &mut StdRng, min: u64) -> Vec<u8> {
    match rng.gen_range(0..100) {
        0..=69 => rng.gen_range(min..=20),
        70..=84 => *[min, 1, MAX_COUNT, MAX_COUNT - 1].choose(rng).unwrap(),
        _ => rng.gen_range(min..=MAX_COUNT),
    }
    .to_string()
    .into_bytes()
}

fn clean_period(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..100) {
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
    }
    .into_bytes()
}

/// A valid policy after `limit period`, as option groups to shuffle: ALGORITHM, BURST with GCRA,
/// and COST when `cost` says so (always for REFUND).
fn clean_policy_options(rng: &mut StdRng, cost: Option<f64>) -> Vec<Vec<Vec<u8>>> {
    let algorithm = *["FIXED", "SLIDING", "GCRA", ""].choose(rng).unwrap();
    let mut options: Vec<Vec<Vec<u8>>> = Vec::new();
    if !algorithm.is_empty() {
        options.push(vec![
            random_case(rng, "ALGORITHM"),
            random_case(rng, algorithm),
        ]);
    }
    if algorithm == "GCRA" && rng.gen_bool(0.5) {
        options.push(vec![random_case(rng, "BURST"), clean_count(rng, 1)]);
    }
    if let Some(p) = cost {
        if rng.gen_bool(p) {
            options.push(vec![random_case(rng, "COST"), clean_count(rng, 0)]);
        }
    }
    options
}

/// The flags of CHECK and MCHECK, each at most once, never DRYRUN with FORCE.
fn clean_flags(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let mut flags = Vec::new();
    match rng.gen_range(0..100) {
        0..=24 => flags.push(random_case(rng, "DRYRUN")),
        25..=44 => flags.push(random_case(rng, "FORCE")),
        _ => {}
    }
    if rng.gen_bool(0.3) {
        flags.push(random_case(rng, "WITHWINDOW"));
    }
    flags
}

/// Arguments of CHECK, QUOTA or REFUND that are all valid, in any order and letter case, with
/// values at the bounds too.
pub fn clean_arguments(rng: &mut StdRng, command: Command) -> Vec<Vec<u8>> {
    let limit = clean_count(rng, 1);
    let period = clean_period(rng);
    let cost = match command {
        Command::Refund => Some(1.0),
        _ => Some(0.5),
    };
    let mut options = clean_policy_options(rng, cost);
    match command {
        Command::Check => options.extend(clean_flags(rng).into_iter().map(|f| vec![f])),
        Command::Refund if rng.gen_bool(0.5) => {
            options.push(vec![random_case(rng, "WINDOW"), window_token(rng)])
        }
        _ => {}
    }
    options.shuffle(rng);
    let mut out = vec![b"KEY0".to_vec(), limit, period];
    out.extend(options.into_iter().flatten());
    out
}

/// How many keys an MCHECK gets: mostly a few, sometimes up to the most.
fn key_count(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..100) {
        0..=79 => rng.gen_range(1..=4),
        _ => rng.gen_range(5..=MAX_KEYS as usize),
    }
}

fn placeholder(i: usize) -> Vec<u8> {
    format!("KEY{i}").into_bytes()
}

/// Valid MCHECK arguments: `numkeys`, distinct keys, one clean policy per key, and the flags
/// placed anywhere after the keys.
pub fn clean_mcheck(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = key_count(rng);
    let mut out = vec![count.to_string().into_bytes()];
    out.extend((0..count).map(placeholder));
    let mut groups: Vec<Vec<Vec<u8>>> = (0..count)
        .map(|_| {
            let mut group = vec![
                random_case(rng, "LIMIT"),
                clean_count(rng, 1),
                clean_period(rng),
            ];
            let mut options = clean_policy_options(rng, Some(0.6));
            options.shuffle(rng);
            group.extend(options.into_iter().flatten());
            group
        })
        .collect();
    for flag in clean_flags(rng) {
        let at = rng.gen_range(0..=groups.len());
        groups.insert(at, vec![flag]);
    }
    out.extend(groups.into_iter().flatten());
    out
}

/// MCHECK arguments that are mostly well-formed: a `numkeys` that is sometimes wrong, keys that
/// are sometimes repeated, and policies and flags from [`options`].
pub fn messy_mcheck(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let count = key_count(rng);
    let numkeys = match rng.gen_range(0..100) {
        0..=79 => count.to_string().into_bytes(),
        80..=89 => (count + 1).to_string().into_bytes(),
        _ => count_token(rng),
    };
    let mut out = vec![numkeys];
    for i in 0..count {
        let repeated = i > 0 && rng.gen_bool(0.03);
        out.push(placeholder(if repeated { rng.gen_range(0..i) } else { i }));
    }
    let policies = match rng.gen_range(0..100) {
        0..=79 => count,
        _ => rng.gen_range(0..=count + 1),
    };
    for _ in 0..policies {
        out.push(random_case(rng, "LIMIT"));
        out.push(count_token(rng));
        out.push(period_token(rng));
        out.extend(options(rng, false));
    }
    if rng.gen_bool(0.1) {
        out.extend(options(rng, true));
    }
    out
}

/// Where a call goes, and so what its reply must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Keys that must not exist after the call.
    Absent,
    /// Fresh keys that a valid call may create.
    Fresh,
    /// Limiters of the pool, of the call's own algorithm (or any, for RESET), perhaps with
    /// fresh keys besides (MCHECK).
    Limiter,
    /// A limiter of `stored`, another algorithm than `requested`, the one its call or policy
    /// names.
    OtherAlgorithm {
        stored: Algorithm,
        requested: Algorithm,
    },
    /// A key of another type.
    Typed,
    /// A string that is no limiter.
    Junk,
}

pub struct Case {
    pub number: u64,
    pub command: Command,
    pub args: Vec<Vec<u8>>,
    pub expect: Expect,
    /// What the keys are; for MCHECK, its one special key if it has one (every other key is a
    /// pool limiter or fresh), else `Fresh` or `Absent` when all of its keys are new.
    pub target: Target,
    /// The keys that must not exist after the call.
    pub absent: Vec<Vec<u8>>,
}

pub fn generate(rng: &mut StdRng, number: u64) -> Case {
    let command = match rng.gen_range(0..100) {
        0..=34 => Command::Check,
        35..=49 => Command::Quota,
        50..=64 => Command::Refund,
        65..=89 => Command::MCheck,
        _ => Command::Reset,
    };
    let rest: Vec<Vec<u8>> = match command {
        Command::Reset => {
            let arity = if rng.gen_bool(0.85) {
                1
            } else {
                *[0usize, 2, 3].choose(rng).unwrap()
            };
            (0..arity).map(|_| placeholder(0)).collect()
        }
        Command::MCheck if rng.gen_bool(0.03) => {
            let mut short = vec![count_token(rng), placeholder(0), b"LIMIT".to_vec()];
            short.truncate(rng.gen_range(0..3));
            short
        }
        Command::MCheck if rng.gen_bool(0.5) => clean_mcheck(rng),
        Command::MCheck => messy_mcheck(rng),
        _ if rng.gen_bool(0.05) => {
            let arity = rng.gen_range(0..3);
            let mut short = vec![placeholder(0), count_token(rng)];
            short.truncate(arity);
            short
        }
        _ if rng.gen_bool(0.5) => clean_arguments(rng, command),
        _ => {
            let mut full = vec![placeholder(0), count_token(rng), period_token(rng)];
            full.extend(options(rng, false));
            full
        }
    };
    let expect = classify(command, &rest);
    let placeholders = distinct_placeholders(&rest);
    let (target, names) = keys_for(rng, number, &expect, placeholders.len());
    let absent = match (&expect, target) {
        // A new key of an MCHECK that cannot write it, whatever the pool limiters hold.
        (Expect::Multi(multi), Target::Fresh | Target::Limiter) => names
            .iter()
            .enumerate()
            .filter(|(i, name)| name.starts_with(b"fz:new:") && multi.never_writes(*i))
            .map(|(_, name)| name.clone())
            .collect(),
        (_, Target::Absent) => names.clone(),
        _ => names
            .iter()
            .filter(|name| name.starts_with(b"fz:nx:"))
            .cloned()
            .collect(),
    };
    let args = std::iter::once(random_case(rng, command.name()))
        .chain(
            rest.into_iter()
                .map(|arg| match placeholders.iter().position(|p| *p == arg) {
                    Some(i) => names[i].clone(),
                    None => arg,
                }),
        )
        .collect();
    Case {
        number,
        command,
        args,
        expect,
        target,
        absent,
    }
}

/// The placeholders `KEY<i>` among `args`, in order of `i`.
fn distinct_placeholders(args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut found: Vec<Vec<u8>> = (0..=MAX_KEYS as usize + 1)
        .map(placeholder)
        .filter(|p| args.contains(p))
        .collect();
    found.dedup();
    found
}

/// The target of a call and a name for each of its `count` distinct keys.
fn keys_for(
    rng: &mut StdRng,
    number: u64,
    expect: &Expect,
    count: usize,
) -> (Target, Vec<Vec<u8>>) {
    let fresh = |i: usize| format!("fz:new:{number}:{i}").into_bytes();
    let absent = |rng: &mut StdRng, i: usize| absent_key(rng, number, i);
    match expect {
        Expect::Valid(call) => {
            let algorithm = call.policy.algorithm;
            let target = match rng.gen_range(0..100) {
                0..=29 if call.writes_when_fresh() => Target::Fresh,
                0..=29 => Target::Absent,
                30..=74 => Target::Limiter,
                75..=84 => Target::OtherAlgorithm {
                    stored: other_algorithm(rng, algorithm),
                    requested: algorithm,
                },
                85..=94 => Target::Typed,
                _ => Target::Junk,
            };
            let name = match target {
                Target::Fresh => fresh(0),
                Target::Absent => absent(rng, 0),
                Target::Limiter => pool_key(algorithm, rng.gen_range(0..LIMITER_POOL)).into_bytes(),
                other => special_key(rng, other),
            };
            (target, vec![name])
        }
        Expect::Multi(multi) => {
            let special = rng.gen_bool(0.25).then(|| {
                let at = rng.gen_range(0..count);
                let requested = multi.policies[at].algorithm;
                let target = match rng.gen_range(0..3) {
                    0 => Target::OtherAlgorithm {
                        stored: other_algorithm(rng, requested),
                        requested,
                    },
                    1 => Target::Typed,
                    _ => Target::Junk,
                };
                (at, target)
            });
            let mut used = Vec::new();
            let mut pooled = false;
            let names = (0..count)
                .map(|i| match special {
                    Some((at, target)) if at == i => special_key(rng, target),
                    // The call fails on the special key: nothing may be written.
                    Some(_) => absent(rng, i),
                    None if rng.gen_bool(0.5) => {
                        let algorithm = multi.policies[i].algorithm;
                        let slot = rng.gen_range(0..LIMITER_POOL);
                        if used.contains(&(algorithm, slot)) {
                            fresh(i)
                        } else {
                            used.push((algorithm, slot));
                            pooled = true;
                            pool_key(algorithm, slot).into_bytes()
                        }
                    }
                    None => fresh(i),
                })
                .collect();
            let target = match special {
                Some((_, target)) => target,
                None if pooled => Target::Limiter,
                None => Target::Fresh,
            };
            (target, names)
        }
        Expect::Reset => {
            let target = match rng.gen_range(0..100) {
                0..=49 => Target::Limiter,
                50..=69 => Target::Absent,
                70..=89 => Target::Typed,
                _ => Target::Junk,
            };
            let name = match target {
                Target::Limiter => {
                    let algorithm = *Algorithm::ALL.choose(rng).unwrap();
                    pool_key(algorithm, rng.gen_range(0..LIMITER_POOL)).into_bytes()
                }
                Target::Absent => absent(rng, 0),
                other => special_key(rng, other),
            };
            (target, vec![name])
        }
        Expect::Error => {
            // Mostly absent keys; sometimes one key of another kind, whose error may come
            // first (WRONGTYPE), or a pool limiter, which an error must leave alone.
            let roll = rng.gen_range(0..100);
            let special = match roll {
                0..=69 => None,
                70..=79 => Some(Target::Typed),
                80..=84 => Some(Target::Junk),
                85..=92 => {
                    let stored = *Algorithm::ALL.choose(rng).unwrap();
                    Some(Target::OtherAlgorithm {
                        stored,
                        requested: stored,
                    })
                }
                _ => Some(Target::Limiter),
            };
            let at = rng.gen_range(0..count.max(1));
            let names = (0..count)
                .map(|i| match special {
                    Some(Target::Limiter) if i == at => {
                        let algorithm = *Algorithm::ALL.choose(rng).unwrap();
                        pool_key(algorithm, rng.gen_range(0..LIMITER_POOL)).into_bytes()
                    }
                    Some(target) if i == at => special_key(rng, target),
                    _ => absent(rng, i),
                })
                .collect();
            (special.unwrap_or(Target::Absent), names)
        }
        Expect::Either => {
            let names = (0..count)
                .map(|i| format!("fz:amb:{number}:{i}").into_bytes())
                .collect();
            (Target::Fresh, names)
        }
    }
}

fn other_algorithm(rng: &mut StdRng, algorithm: Algorithm) -> Algorithm {
    let others: Vec<Algorithm> = Algorithm::ALL
        .into_iter()
        .filter(|a| *a != algorithm)
        .collect();
    *others.choose(rng).unwrap()
}

/// The name of a key of another type, a junk string, or a limiter of another algorithm.
fn special_key(rng: &mut StdRng, target: Target) -> Vec<u8> {
    match target {
        Target::Typed => TYPED.choose(rng).unwrap().0.as_bytes().to_vec(),
        Target::Junk => format!("junk:{}", rng.gen_range(0..JUNK.len())).into_bytes(),
        Target::OtherAlgorithm { stored, .. } => mismatch_key(stored).into_bytes(),
        other => unreachable!("no special key for {other:?}"),
    }
}

/// A key no call ever writes, sometimes with binary bytes in its name.
pub fn absent_key(rng: &mut StdRng, number: u64, i: usize) -> Vec<u8> {
    let mut key = format!("fz:nx:{number}:{i}").into_bytes();
    if rng.gen_bool(0.2) {
        key.push(b':');
        key.extend(junk_bytes(rng));
    }
    key
}
