//! `make bench`'s second half: the server benchmarks, then `BENCHMARKS.md`.
//!
//! 1. Throughput: `redis-benchmark -c 50 -r 100000` at `-P 1` and `-P 16` against one
//!    `redis-server` carrying the module, for `INCR`, `RATELIMIT.CHECK` (FIXED, SLIDING, GCRA)
//!    and the client's Lua fallback through `EVALSHA`; the seed's
//!    `MULTI; INCRBY; PEXPIRE NX; PTTL; EXEC` and a plain `INCR` through our own driver. Five
//!    interleaved rounds; medians, the ratio to `INCR` in the same round, and the server's
//!    microseconds per call from `INFO commandstats`.
//! 2. Memory: `used_memory` before and after 100,000 distinct limiters of each kind.
//! 3. Where the instructions go: the server under `valgrind --tool=callgrind`, when valgrind is
//!    installed.
//! 4. The client's overhead over a raw redis-rs call, the two calls alternating.
//! 5. The criterion results of `cargo bench` (run before this), read from their JSON.
//!
//! Options: `--out PATH` (default `BENCHMARKS.md` in the repository), `--rounds N` (5),
//! `--requests N` (requests at P16, 1,000,000), `--requests-p1 N` (100,000), `--criterion DIR`,
//! `--no-profile`, `--quick` (one round of 100,000 requests, for trying the harness out).

use ratelimit_bench::driver::{self, Load, Template};
use ratelimit_bench::{progress, resp, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod text;

/// Concurrent connections (`-c`).
const CONNECTIONS: usize = 50;
/// Distinct keys (`-r`).
const KEYSPACE: u64 = 100_000;
/// Every limiter is configured so that every request is admitted and writes, and no key
/// expires during the run: the module's most expensive path, and the one `INCR` compares with.
const LIMIT: &str = "1000000";
const PERIOD: &str = "3650d";
const PERIOD_MS: &str = "315360000000";

struct Options {
    out: PathBuf,
    rounds: usize,
    requests: u64,
    requests_p1: u64,
    criterion: PathBuf,
    profile: bool,
}

fn options() -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut options = Options {
        out: root.join("BENCHMARKS.md"),
        rounds: 5,
        requests: 1_000_000,
        requests_p1: 100_000,
        criterion: target.join("criterion"),
        profile: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => options.out = value().into(),
            "--rounds" => options.rounds = value().parse().expect("--rounds N"),
            "--requests" => options.requests = value().parse().expect("--requests N"),
            "--requests-p1" => options.requests_p1 = value().parse().expect("--requests-p1 N"),
            "--criterion" => options.criterion = value().into(),
            "--no-profile" => options.profile = false,
            "--quick" => {
                options.rounds = 1;
                options.requests = 100_000;
                options.requests_p1 = 20_000;
            }
            other => panic!("unknown option {other}: see the top of bench/src/bin/report.rs"),
        }
    }
    options
}

fn main() {
    let options = options();
    let started = Instant::now();
    let machine = text::Machine::read();
    progress(&format!(
        "{} cores, {}, {}",
        machine.cores, machine.cpu, machine.server
    ));
    let throughput = throughput(&options);
    let memory = memory();
    let overhead = {
        let server = Server::start();
        let overhead = ratelimit_bench::overhead::measure(&server, 20_000);
        server.stop();
        progress(&format!("client overhead: {overhead:?}"));
        overhead
    };
    let profile = if options.profile {
        profile()
    } else {
        Err("skipped (--no-profile)".into())
    };
    let criterion = text::Criterion::read(&options.criterion);
    let report = text::render(&text::Results {
        machine,
        rounds: options.rounds,
        requests: options.requests,
        requests_p1: options.requests_p1,
        throughput,
        memory,
        overhead,
        profile,
        criterion,
        seconds: started.elapsed().as_secs(),
    });
    std::fs::write(&options.out, report)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", options.out.display()));
    progress(&format!(
        "wrote {} in {} s",
        options.out.display(),
        started.elapsed().as_secs()
    ));
}

/// How a case sends its load.
enum Runner {
    /// `redis-benchmark` with this command.
    Benchmark(String),
    /// Our driver with this request.
    Driver(Template),
}

/// One line of the throughput table.
pub struct Case {
    /// What is measured.
    pub label: String,
    runner: Runner,
    /// The commands whose `commandstats` time is the server's time for one request.
    stats: &'static [&'static str],
    /// The case whose rate in the same round is this one's reference, by index.
    pub reference: usize,
}

/// The measurements of one case: per pipeline depth (1, 16), the rates of each round, the
/// ratios to the reference in each round, and the server's µs per request.
#[derive(Default)]
pub struct Measured {
    /// Requests per second, one per round.
    pub rates: BTreeMap<usize, Vec<f64>>,
    /// Rate over the reference's rate in the same round.
    pub ratios: BTreeMap<usize, Vec<f64>>,
    /// Server µs per request from `INFO commandstats`, one per round.
    pub micros: BTreeMap<usize, Vec<f64>>,
}

/// Every case and its measurements.
pub struct Throughput {
    /// The cases, in table order.
    pub cases: Vec<Case>,
    /// Their measurements, in the same order.
    pub measured: Vec<Measured>,
    /// Load average before and after.
    pub load: (String, String),
}

fn cases(sha: &str) -> Vec<Case> {
    let check = |key: &str, extra: &str| {
        format!("RATELIMIT.CHECK {key}__rand_int__ {LIMIT} {PERIOD}{extra}")
    };
    let lua = |key: &str, algorithm: &str| {
        format!("EVALSHA {sha} 1 {key}__rand_int__ {algorithm} {LIMIT} {PERIOD_MS} 0 1 0")
    };
    let bench = |label: &str, command: String, stats| Case {
        label: label.into(),
        runner: Runner::Benchmark(command),
        stats,
        reference: 0,
    };
    vec![
        bench("INCR", "INCR rl:in:__rand_int__".into(), &["incr"]),
        // Every key of this one was given a TTL first (see `throughput`): the same INCR, plus
        // the expiry lookup that any key with a TTL costs, as a limiter's key always has one.
        bench(
            "INCR, keys with a TTL",
            "INCR rl:it:__rand_int__".into(),
            &["incr"],
        ),
        bench(
            "RATELIMIT.CHECK FIXED",
            check("rl:fx:", ""),
            &["ratelimit.check"],
        ),
        bench(
            "RATELIMIT.CHECK SLIDING",
            check("rl:sl:", " ALGORITHM SLIDING"),
            &["ratelimit.check"],
        ),
        bench(
            "RATELIMIT.CHECK GCRA",
            check("rl:gc:", " ALGORITHM GCRA"),
            &["ratelimit.check"],
        ),
        bench("Lua FIXED (EVALSHA)", lua("rl:lf:", "FIXED"), &["evalsha"]),
        bench(
            "Lua SLIDING (EVALSHA)",
            lua("rl:ls:", "SLIDING"),
            &["evalsha"],
        ),
        bench("Lua GCRA (EVALSHA)", lua("rl:lg:", "GCRA"), &["evalsha"]),
        Case {
            label: "INCR, our driver".into(),
            runner: Runner::Driver(Template::command("rl:di:", "INCR KEY")),
            stats: &["incr"],
            reference: 8,
        },
        Case {
            label: "MULTI INCRBY PEXPIRE NX PTTL EXEC, our driver".into(),
            runner: Runner::Driver(Template::commands(
                "rl:mu:",
                &[
                    "MULTI",
                    "INCRBY KEY 1",
                    &format!("PEXPIRE KEY {PERIOD_MS} NX"),
                    "PTTL KEY",
                    "EXEC",
                ],
            )),
            // EXEC's time includes the commands it runs (checked on 7.0: EXEC's µs/call is more
            // than the sum of INCRBY's, PEXPIRE's and PTTL's).
            stats: &["multi", "exec"],
            reference: 8,
        },
    ]
}

/// The check script's SHA1, loaded into the server.
fn load_script(conn: &mut resp::Connection) -> String {
    let source = ratelimit_client::script::CHECK_SOURCE;
    conn.command_bytes(&[b"SCRIPT", b"LOAD", source.as_bytes()])
        .expect("SCRIPT LOAD of the check script")
        .text()
        .expect("a SHA1")
}

fn throughput(options: &Options) -> Throughput {
    let server = Server::start();
    let mut conn = server.connect();
    let sha = load_script(&mut conn);
    let with_ttl = Template::command("rl:it:", &format!("SET KEY 0 PX {PERIOD_MS}"));
    driver::fill(&mut conn, &with_ttl, 0..KEYSPACE).expect("keys with a TTL");
    let cases = cases(&sha);
    let mut measured: Vec<Measured> = cases.iter().map(|_| Measured::default()).collect();
    let load_before = load_average();
    for round in 1..=options.rounds {
        for pipeline in [16, 1] {
            let requests = if pipeline == 1 {
                options.requests_p1
            } else {
                options.requests
            };
            let mut rates = Vec::new();
            for case in &cases {
                conn.command(&["CONFIG", "RESETSTAT"])
                    .expect("CONFIG RESETSTAT");
                let rate = run_case(&server, case, pipeline, requests);
                let micros = server_micros(&mut conn, case.stats, requests);
                progress(&format!(
                    "round {round}/{} P{pipeline:<2} {:<48} {rate:>10.0} /s {micros:>6.2} µs",
                    options.rounds, case.label
                ));
                rates.push(rate);
                let m = &mut measured[rates.len() - 1];
                m.rates.entry(pipeline).or_default().push(rate);
                m.micros.entry(pipeline).or_default().push(micros);
            }
            for (index, case) in cases.iter().enumerate() {
                measured[index]
                    .ratios
                    .entry(pipeline)
                    .or_default()
                    .push(rates[index] / rates[case.reference]);
            }
        }
    }
    let load_after = load_average();
    server.stop();
    Throughput {
        cases,
        measured,
        load: (load_before, load_after),
    }
}

fn run_case(server: &Server, case: &Case, pipeline: usize, requests: u64) -> f64 {
    match &case.runner {
        Runner::Benchmark(command) => {
            let binary =
                std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into());
            let output = Command::new(&binary)
                .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
                .args(["-c", &CONNECTIONS.to_string(), "-r", &KEYSPACE.to_string()])
                .args(["-P", &pipeline.to_string(), "-n", &requests.to_string()])
                .arg("--csv")
                .args(command.split_whitespace())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (run `make deps`)"));
            let stdout = String::from_utf8_lossy(&output.stdout);
            let line = stdout.lines().last().unwrap_or_default();
            line.split(',')
                .nth(1)
                .and_then(|field| field.trim_matches('"').parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "redis-benchmark printed no rate for {command}: {stdout}{}",
                        String::from_utf8_lossy(&output.stderr)
                    )
                })
        }
        Runner::Driver(template) => {
            let load = Load {
                connections: CONNECTIONS,
                pipeline,
                requests,
                keyspace: KEYSPACE,
            };
            driver::run(server.port(), template, load)
                .unwrap_or_else(|e| panic!("{}: {e}", case.label))
                .per_second
        }
    }
}

/// The server's µs per request: the `commandstats` time of `commands` over `requests`.
fn server_micros(conn: &mut resp::Connection, commands: &[&str], requests: u64) -> f64 {
    let stats = conn.info("commandstats").expect("INFO commandstats");
    let mut micros = 0.0;
    for command in commands {
        let field = format!("cmdstat_{command}");
        let usec = stats
            .iter()
            .find(|(name, _)| *name == field)
            .and_then(|(_, value)| {
                value
                    .split(',')
                    .find_map(|part| part.strip_prefix("usec="))
                    .and_then(|usec| usec.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        micros += usec;
    }
    micros / requests as f64
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// One line of the memory table.
pub struct MemoryCase {
    /// What is stored.
    pub label: String,
    /// Bytes per key after one request per key, and after a second one.
    pub bytes: (f64, f64),
    /// `OBJECT ENCODING` of one of its keys.
    pub encoding: String,
}

fn memory() -> Vec<MemoryCase> {
    let server = Server::start();
    let mut conn = server.connect();
    let sha = load_script(&mut conn);
    let lua =
        |algorithm: &str| format!("EVALSHA {sha} 1 KEY {algorithm} {LIMIT} {PERIOD_MS} 0 1 0");
    let cases: Vec<(&str, Template)> = vec![
        (
            "INCR + PEXPIRE (the seed's counter with a TTL)",
            Template::commands("rl:mi:", &["INCR KEY", &format!("PEXPIRE KEY {PERIOD_MS}")]),
        ),
        (
            "SET of an integer with a TTL (a GCRA-sized value)",
            Template::command(
                "rl:ms:",
                &format!("SET KEY -1795965551084001 PX {PERIOD_MS}"),
            ),
        ),
        (
            "RATELIMIT.CHECK FIXED",
            Template::command("rl:mf:", &format!("RATELIMIT.CHECK KEY {LIMIT} {PERIOD}")),
        ),
        (
            "RATELIMIT.CHECK SLIDING",
            Template::command(
                "rl:ml:",
                &format!("RATELIMIT.CHECK KEY {LIMIT} {PERIOD} ALGORITHM SLIDING"),
            ),
        ),
        (
            "RATELIMIT.CHECK GCRA",
            Template::command(
                "rl:mg:",
                &format!("RATELIMIT.CHECK KEY {LIMIT} {PERIOD} ALGORITHM GCRA"),
            ),
        ),
        (
            "Lua FIXED (EVALSHA)",
            Template::command("rl:nf:", &lua("FIXED")),
        ),
        (
            "Lua SLIDING (EVALSHA)",
            Template::command("rl:nl:", &lua("SLIDING")),
        ),
        (
            "Lua GCRA (EVALSHA)",
            Template::command("rl:ng:", &lua("GCRA")),
        ),
    ];
    let mut out = Vec::new();
    for (label, template) in cases {
        conn.command(&["FLUSHALL", "SYNC"]).expect("FLUSHALL");
        let before = used_memory(&mut conn);
        driver::fill(&mut conn, &template, 0..KEYSPACE).expect(label);
        let once = used_memory(&mut conn);
        driver::fill(&mut conn, &template, 0..KEYSPACE).expect(label);
        let twice = used_memory(&mut conn);
        let keys = conn.command(&["DBSIZE"]).ok().and_then(|r| r.integer());
        assert_eq!(keys, Some(KEYSPACE as i64), "{label}: keys in the database");
        let key = sample_key(&template);
        let encoding = conn
            .command(&["OBJECT", "ENCODING", &key])
            .ok()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let per_key = |after: f64| (after - before) / KEYSPACE as f64;
        progress(&format!(
            "memory {label}: {:.1} B/key, then {:.1} ({encoding})",
            per_key(once),
            per_key(twice)
        ));
        out.push(MemoryCase {
            label: label.into(),
            bytes: (per_key(once), per_key(twice)),
            encoding,
        });
    }
    server.stop();
    out
}

/// The key of number 7 of a template, read back from its rendering.
fn sample_key(template: &Template) -> String {
    let mut out = Vec::new();
    template.render(&mut out, 7);
    let text = String::from_utf8_lossy(&out);
    text.split("\r\n")
        .find(|part| part.starts_with("rl:") && part.ends_with("000000000007"))
        .unwrap_or_default()
        .to_string()
}

fn used_memory(conn: &mut resp::Connection) -> f64 {
    conn.info_number("memory", "used_memory")
        .expect("INFO memory used_memory")
}

/// Instructions per command, and where they go, from callgrind.
pub struct Profile {
    /// One column per command profiled: (label, instructions of each row).
    pub columns: Vec<(String, BTreeMap<String, f64>)>,
}

/// The rows of the profile table: a label and the functions whose inclusive cost it sums.
pub const PROFILE_ROWS: &[(&str, &[&str])] = &[
    (
        "whole request: read, parse, execute, reply",
        &["processInputBuffer"],
    ),
    ("command execution (`call`)", &["call"]),
    ("module command, in all", &["RedisModuleCommandDispatcher"]),
    (
        "RedisModule_Replicate (SET key value PXAT ms)",
        &["RM_Replicate"],
    ),
    (
        "RedisModule_OpenKey (key and expiry lookup)",
        &["RM_OpenKey"],
    ),
    (
        "reply: five integers",
        &["RM_ReplyWithArray", "RM_ReplyWithLongLong"],
    ),
    ("RedisModule_GetAbsExpire", &["RM_GetAbsExpire"]),
    ("RedisModule_SetAbsExpire", &["RM_SetAbsExpire"]),
    (
        "RedisModule_StringDMA (read and in-place write)",
        &["RM_StringDMA"],
    ),
    ("RedisModule_CloseKey", &["RM_CloseKey"]),
    (
        "argument vector (redis-module's Vec<RedisString>)",
        &["redis_module::redismodule::decode_args"],
    ),
    (
        "argument parsing (args::parse_request)",
        &["redis_ratelimit::args::parse_request"],
    ),
    ("INCR's own work (incrCommand)", &["incrCommand"]),
];

fn profile() -> Result<Profile, String> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.map(|o| o.status.success()).unwrap_or(false) {
        return Err("valgrind is not installed (`apt-get install valgrind`)".into());
    }
    let commands = [
        ("INCR", "INCR rl:in:__rand_int__".to_string()),
        (
            "CHECK FIXED",
            format!("RATELIMIT.CHECK rl:fx:__rand_int__ {LIMIT} {PERIOD}"),
        ),
        (
            "CHECK SLIDING",
            format!("RATELIMIT.CHECK rl:sl:__rand_int__ {LIMIT} {PERIOD} ALGORITHM SLIDING"),
        ),
        (
            "CHECK GCRA",
            format!("RATELIMIT.CHECK rl:gc:__rand_int__ {LIMIT} {PERIOD} ALGORITHM GCRA"),
        ),
    ];
    let mut columns = Vec::new();
    for (label, command) in commands {
        progress(&format!("callgrind: {label}"));
        columns.push((label.to_string(), profile_one(&command)?));
    }
    Ok(Profile { columns })
}

/// Runs the server under callgrind with `WARM` requests to create the keys, then `MEASURED`
/// more, and divides each row's inclusive instruction count by the number of requests.
fn profile_one(command: &str) -> Result<BTreeMap<String, f64>, String> {
    const WARM: u64 = 10_000;
    const MEASURED: u64 = 20_000;
    let out =
        std::env::temp_dir().join(format!("ratelimit-bench-{}.callgrind", std::process::id()));
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let server = Server::start_with(
        &ratelimit_bench::server_binary(),
        &["valgrind", "--tool=callgrind", "--quiet", &out_arg],
    );
    let benchmark = |requests: u64| {
        Command::new(std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into()))
            .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
            .args([
                "-c",
                "50",
                "-r",
                "10000",
                "-P",
                "16",
                "-n",
                &requests.to_string(),
                "-q",
            ])
            .args(command.split_whitespace())
            .output()
            .map_err(|e| format!("redis-benchmark: {e}"))
    };
    benchmark(WARM)?;
    benchmark(MEASURED)?;
    server.stop();
    let annotated = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&out)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let _ = std::fs::remove_file(&out);
    let text = String::from_utf8_lossy(&annotated.stdout);
    let requests = (WARM + MEASURED) as f64;
    let mut row_values = BTreeMap::new();
    for (row, functions) in PROFILE_ROWS {
        let mut total = 0.0;
        for function in *functions {
            total += inclusive(&text, function);
        }
        row_values.insert(row.to_string(), total / requests);
    }
    Ok(row_values)
}

/// The inclusive instruction count of `function` in `callgrind_annotate --inclusive=yes`
/// output: the first line naming it as `file:function [object]`.
fn inclusive(annotated: &str, function: &str) -> f64 {
    let suffix = format!(":{function} [");
    annotated
        .lines()
        .find(|line| line.contains(&suffix))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|count| count.replace(',', "").parse().ok())
        .unwrap_or(0.0)
}
