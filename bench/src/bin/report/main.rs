//! `make bench`'s second half: the server benchmarks, then `BENCHMARKS.md`.
//!
//! 1. Throughput: the lines of `cases::throughput` against one `redis-server` carrying the
//!    module and the floor (`bench/floor`), at `-P 16` and `-P 1`: `redis-benchmark -c 50 -r
//!    100000` for single commands, our driver for requests of several commands or keys. The
//!    server and the load generator are pinned to different cores when the machine has 2. Five
//!    interleaved rounds; each run starts from `FLUSHALL` and its own 100,000 keys. Per run: the
//!    rate, the server's CPU time per request (`/proc/<pid>/stat`), its time inside the command
//!    (`INFO commandstats`), and the CPU other processes took meanwhile; a run that other load
//!    disturbed is repeated (`--retries`), and the least disturbed attempt kept.
//! 2. Memory: `used_memory` before and after the keys of each line of `cases::memory`.
//! 3. The client's overhead over a raw redis-rs call, the two calls alternating; and a hot key
//!    checked through local shares, without them, and by the in-process limiter.
//! 4. Instructions per call: the results of `make bench-callgrind` (`--callgrind PATH`), when
//!    present, with the date they were measured and whether they are of the current build.
//! 5. The criterion results of `cargo bench` (run before this), read from their JSON.
//!
//! Options: `--out PATH` (default `BENCHMARKS.md` in the repository), `--rounds N` (5),
//! `--requests N` (requests per run at P16, 1,000,000), `--requests-p1 N` (300,000),
//! `--criterion DIR`, `--callgrind PATH`, `--retries N` (2), `--disturbed SHARE` (0.1 of a core),
//! `--retry-budget SECONDS` (90), `--cases id,id` (only those lines), `--quick` (one round of
//! 100,000 and 20,000 requests, for trying the harness out), `--sections a,b` (only those of
//! `throughput`, `memory`, `cluster`; default all; the client's overhead always runs).
//!
//! 6. The cluster: Redis Clusters of 1, 2 and 3 masters (no replica, every master pinned to
//!    the server's core), the same load (`RATELIMIT.CHECK FIXED` from our driver, 50
//!    connections at P16, keys drawn over the whole keyspace and each sent to its slot's
//!    master), interleaved over the rounds: the rate, and the masters' CPU time per check.

use ratelimit_bench::cases::{self, Case, Sender, KEYSPACE};
use ratelimit_bench::driver::{self, Load};
use ratelimit_bench::noise::{self, Pinning, Snapshot, Usage};
use ratelimit_bench::{callgrind, progress, resp, Launch, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod text;

/// Concurrent connections (`-c`).
const CONNECTIONS: usize = 50;

struct Options {
    out: PathBuf,
    rounds: usize,
    requests: u64,
    requests_p1: u64,
    criterion: PathBuf,
    callgrind: PathBuf,
    retries: usize,
    disturbed: f64,
    retry_budget: Duration,
    only: Option<Vec<String>>,
    sections: Vec<String>,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

fn options() -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench"));
    let mut options = Options {
        out: root.join("BENCHMARKS.md"),
        rounds: 5,
        requests: 1_000_000,
        requests_p1: 300_000,
        criterion: target.join("criterion"),
        callgrind: target.join("callgrind.json"),
        retries: 2,
        disturbed: 0.1,
        retry_budget: Duration::from_secs(90),
        only: None,
        sections: ["throughput", "memory", "cluster"]
            .map(String::from)
            .to_vec(),
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
            "--callgrind" => options.callgrind = value().into(),
            "--retries" => options.retries = value().parse().expect("--retries N"),
            "--disturbed" => options.disturbed = value().parse().expect("--disturbed SHARE"),
            "--retry-budget" => {
                options.retry_budget =
                    Duration::from_secs(value().parse().expect("--retry-budget SECONDS"))
            }
            "--cases" => {
                options.only = Some(value().split(',').map(str::to_string).collect());
            }
            "--sections" => {
                options.sections = value().split(',').map(str::to_string).collect();
            }
            "--quick" => {
                options.rounds = 1;
                options.requests = 100_000;
                options.requests_p1 = 20_000;
            }
            other => panic!("unknown option {other}: see the top of bench/src/bin/report/main.rs"),
        }
    }
    options
}

fn main() {
    let options = options();
    let started = Instant::now();
    let machine = text::Machine::read();
    let (pinning, pinning_note) = Pinning::detect();
    if let Some(pinning) = pinning {
        pinning.pin_generator_here().unwrap_or_else(|e| {
            panic!("cannot pin this process to core {}: {e}", pinning.generator)
        });
    }
    progress(&format!(
        "{} cores, {}, {}; {pinning_note}",
        machine.cores, machine.cpu, machine.server
    ));
    let load_before = noise::load_average();
    let throughput = throughput(&options, pinning);
    let memory = if options.runs("memory") {
        memory(pinning)
    } else {
        Vec::new()
    };
    let cluster = if options.runs("cluster") {
        cluster(&options, pinning)
    } else {
        Vec::new()
    };
    let overhead = {
        // Pinned like the throughput runs: this process is on the generator's core now, and a
        // server started without a core would inherit it.
        let server = Server::launch(&Launch {
            cpu: pinning.map(|p| p.server),
            ..Launch::default()
        });
        let overhead = ratelimit_bench::overhead::measure(&server, 20_000);
        server.stop();
        progress(&format!("client overhead: {overhead:?}"));
        overhead
    };
    let hot = {
        let server = Server::launch(&Launch {
            cpu: pinning.map(|p| p.server),
            ..Launch::default()
        });
        let hot = ratelimit_bench::hot::measure(&server, options.requests * 2);
        server.stop();
        progress(&format!("hot key: {hot:?}"));
        hot
    };
    let load_after = noise::load_average();
    let callgrind = callgrind::Results::read(&options.callgrind);
    if let Err(e) = &callgrind {
        progress(&format!(
            "no instruction counts ({e}): run `make bench-callgrind` first to include them"
        ));
    }
    let criterion = text::Criterion::read(&options.criterion);
    let report = text::render(&text::Results {
        machine,
        pinning,
        pinning_note,
        load: (load_before, load_after),
        rounds: options.rounds,
        requests: options.requests,
        requests_p1: options.requests_p1,
        disturbed: options.disturbed,
        retries: options.retries,
        throughput,
        memory,
        cluster,
        overhead,
        hot,
        callgrind,
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

/// One measured run of one line.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Requests per second.
    pub rate: f64,
    /// The server's CPU time per request, µs (`/proc/<pid>/stat`).
    pub cpu_us: f64,
    /// The `commandstats` time of the line's commands per request, µs.
    pub command_us: f64,
    /// What the machine did meanwhile.
    pub usage: Usage,
    /// How many times it was run: more than 1 when other load disturbed it.
    pub attempts: usize,
}

/// One line of the throughput tables and its runs.
pub struct Line {
    /// What it sends.
    pub case: Case,
    /// The commands the server lacks; not run when not empty.
    pub missing: Vec<String>,
    /// Requests per run, by pipeline depth.
    pub requests: BTreeMap<usize, u64>,
    /// The kept run of each round, by pipeline depth.
    pub runs: BTreeMap<usize, Vec<Run>>,
}

/// Every line, and what the machine did.
pub struct Throughput {
    /// The lines, in table order.
    pub lines: Vec<Line>,
    /// The load average at the start of each round.
    pub round_loads: Vec<String>,
    /// Seconds each round took, fills included.
    pub round_seconds: Vec<u64>,
    /// Runs made in all, and runs repeated because other load disturbed them.
    pub attempts: (usize, usize),
    /// Seconds spent.
    pub seconds: u64,
}

/// The SHA1 of the client's Lua fallback (`client/lua/ratelimit.lua`), loaded into the server.
fn load_script(conn: &mut resp::Connection) -> String {
    let source = ratelimit_client::LUA_SCRIPT;
    conn.command_bytes(&[b"SCRIPT", b"LOAD", source.as_bytes()])
        .expect("SCRIPT LOAD of the Lua fallback")
        .text()
        .expect("a SHA1")
}

/// Waits until Redis has finished growing its hash tables (see
/// [`ratelimit_bench::wait_for_rehash`]), then answers `used_memory`.
fn settle(conn: &mut resp::Connection) -> f64 {
    if !ratelimit_bench::wait_for_rehash(conn) {
        progress("the hash tables were still growing after 10 s: measuring anyway");
    }
    used_memory(conn)
}

fn throughput(options: &Options, pinning: Option<Pinning>) -> Throughput {
    let started = Instant::now();
    let server = Server::launch(&Launch {
        cpu: pinning.map(|p| p.server),
        floor: true,
        ..Launch::default()
    });
    let mut conn = server.connect();
    let sha = load_script(&mut conn);
    let mut lines: Vec<Line> = cases::throughput(&sha)
        .into_iter()
        .filter(|case| {
            options.runs("throughput")
                && options
                    .only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|id| id == case.id))
        })
        .map(|case| {
            let missing = case.missing(&mut conn);
            if !missing.is_empty() {
                progress(&format!(
                    "{}: not available in this build (no {})",
                    case.label,
                    missing.join(", ")
                ));
            }
            let requests = [(16, options.requests), (1, options.requests_p1)]
                .into_iter()
                .map(|(pipeline, n)| (pipeline, ((n as f64 * case.weight) as u64).max(1000)))
                .collect();
            Line {
                case,
                missing,
                requests,
                runs: BTreeMap::new(),
            }
        })
        .collect();
    let mut round_loads = Vec::new();
    let mut round_seconds = Vec::new();
    let mut attempts = (0, 0);
    let mut retry_spent = Duration::ZERO;
    for round in 1..=options.rounds {
        round_loads.push(noise::load_average());
        let round_started = Instant::now();
        for line in lines.iter_mut().filter(|line| line.missing.is_empty()) {
            line.case
                .run_setup(&mut conn)
                .unwrap_or_else(|c| panic!("{}: the server refused {c}", line.case.label));
            conn.command(&["FLUSHALL", "SYNC"]).expect("FLUSHALL");
            driver::fill(&mut conn, &line.case.fill_template(), 0..KEYSPACE)
                .unwrap_or_else(|e| panic!("{}: filling its keys: {e}", line.case.label));
            settle(&mut conn);
            for pipeline in [16, 1] {
                let requests = line.requests[&pipeline];
                let mut kept: Option<Run> = None;
                for attempt in 1..=options.retries + 1 {
                    let attempt_started = Instant::now();
                    let run = measure(&server, &mut conn, pinning, &line.case, pipeline, requests);
                    attempts.0 += 1;
                    if attempt > 1 {
                        attempts.1 += 1;
                        retry_spent += attempt_started.elapsed();
                    }
                    let disturbed = run.usage.disturbed(options.disturbed);
                    progress(&format!(
                        "round {round}/{} P{pipeline:<2} {:<44} {:>9.0}/s {:>5.2} µs CPU, others {:>3.0}%{}",
                        options.rounds,
                        line.case.label,
                        run.rate,
                        run.cpu_us,
                        (run.usage.others + run.usage.steal) * 100.0,
                        if disturbed { " (disturbed)" } else { "" }
                    ));
                    let better = kept.is_none_or(|k| {
                        run.usage.others + run.usage.steal < k.usage.others + k.usage.steal
                    });
                    if better {
                        kept = Some(Run {
                            attempts: attempt,
                            ..run
                        });
                    }
                    if !disturbed || retry_spent >= options.retry_budget {
                        break;
                    }
                }
                if let Some(mut run) = kept {
                    run.attempts = run.attempts.max(1);
                    line.runs.entry(pipeline).or_default().push(run);
                }
            }
            line.case
                .run_teardown(&mut conn)
                .unwrap_or_else(|c| panic!("{}: the server refused {c}", line.case.label));
        }
        round_seconds.push(round_started.elapsed().as_secs());
    }
    server.stop();
    Throughput {
        lines,
        round_loads,
        round_seconds,
        attempts,
        seconds: started.elapsed().as_secs(),
    }
}

/// Runs one line once and reads what it cost.
fn measure(
    server: &Server,
    conn: &mut resp::Connection,
    pinning: Option<Pinning>,
    case: &Case,
    pipeline: usize,
    requests: u64,
) -> Run {
    conn.command(&["CONFIG", "RESETSTAT"])
        .expect("CONFIG RESETSTAT");
    let before = Snapshot::take(server.pid());
    let rate = send(server, pinning, case, pipeline, requests);
    let after = Snapshot::take(server.pid());
    let usage = Usage::between(&before, &after, pinning);
    Run {
        rate,
        cpu_us: usage.server_seconds * 1e6 / requests as f64,
        command_us: command_micros(conn, &case.stats, requests),
        usage,
        attempts: 1,
    }
}

/// Sends the line's requests and answers the rate.
fn send(
    server: &Server,
    pinning: Option<Pinning>,
    case: &Case,
    pipeline: usize,
    requests: u64,
) -> f64 {
    match case.sender {
        Sender::Benchmark => {
            let binary =
                std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into());
            let args = case
                .benchmark_args()
                .unwrap_or_else(|| panic!("{}: not a redis-benchmark command", case.id));
            let mut command = match pinning {
                Some(p) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", &p.generator.to_string(), &binary]);
                    c
                }
                None => Command::new(&binary),
            };
            let output = command
                .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
                .args(["-c", &CONNECTIONS.to_string(), "-r", &KEYSPACE.to_string()])
                .args(["-P", &pipeline.to_string(), "-n", &requests.to_string()])
                .arg("--csv")
                .args(&args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (run `make deps`)"));
            let stdout = String::from_utf8_lossy(&output.stdout);
            let line = stdout.lines().last().unwrap_or_default();
            line.split(',')
                .nth(1)
                .and_then(|field| field.trim_matches('"').parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "redis-benchmark printed no rate for {}: {stdout}{}",
                        case.label,
                        String::from_utf8_lossy(&output.stderr)
                    )
                })
        }
        Sender::Driver => {
            let load = Load {
                connections: CONNECTIONS,
                pipeline,
                requests,
                keyspace: KEYSPACE,
            };
            driver::run(server.port(), &case.template(), load)
                .unwrap_or_else(|e| panic!("{}: {e}", case.label))
                .per_second
        }
    }
}

/// The time inside commands per request: the `commandstats` time of `commands` over `requests`.
fn command_micros(conn: &mut resp::Connection, commands: &[String], requests: u64) -> f64 {
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

/// The cluster runs of one number of masters.
pub struct ClusterLine {
    /// How many masters.
    pub masters: usize,
    /// Requests per run.
    pub requests: u64,
    /// Each round's run: checks per second, and the masters' CPU µs per check, summed.
    pub runs: Vec<(f64, f64)>,
}

/// The cluster figures: 1, 2 and 3 masters under the same load, interleaved over the rounds.
fn cluster(options: &Options, pinning: Option<Pinning>) -> Vec<ClusterLine> {
    let cpu = pinning.map(|p| p.server);
    let request = cases::Case::cluster_check();
    let template = request.template();
    let fill = request.fill_template();
    let clusters: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|masters| {
            let cluster = ratelimit_bench::cluster::Cluster::start(masters, cpu);
            let keys = cluster.split(KEYSPACE);
            cluster.fill(&fill, &keys);
            progress(&format!(
                "cluster of {masters}: keys per master {:?}",
                keys.iter().map(Vec::len).collect::<Vec<_>>()
            ));
            (cluster, keys)
        })
        .collect();
    let mut lines: Vec<ClusterLine> = clusters
        .iter()
        .map(|(cluster, _)| ClusterLine {
            masters: cluster.masters.len(),
            requests: options.requests,
            runs: Vec::new(),
        })
        .collect();
    let load = Load {
        connections: CONNECTIONS,
        pipeline: 16,
        requests: options.requests,
        keyspace: KEYSPACE,
    };
    for round in 1..=options.rounds {
        for ((cluster, keys), line) in clusters.iter().zip(lines.iter_mut()) {
            let (rate, cpu_us) = cluster.run(&template, keys, load);
            progress(&format!(
                "cluster round {round}/{} {} master(s): {rate:>9.0} checks/s, {cpu_us:.2} µs CPU/check",
                options.rounds, line.masters
            ));
            line.runs.push((rate, cpu_us));
        }
    }
    for (cluster, _) in clusters {
        cluster.stop();
    }
    lines
}

/// One line of the memory table.
pub struct MemoryLine {
    /// What it writes.
    pub case: cases::MemoryCase,
    /// The commands the server lacks; not measured when not empty.
    pub missing: Vec<String>,
    /// Bytes per key after one write of each key, and after a second when the case has one.
    pub bytes: (f64, Option<f64>),
    /// `DBSIZE` after the writes: the keys the bytes are divided by, unless it differs.
    pub dbsize: i64,
    /// `OBJECT ENCODING` of one key.
    pub encoding: String,
}

fn memory(pinning: Option<Pinning>) -> Vec<MemoryLine> {
    let server = Server::launch(&Launch {
        cpu: pinning.map(|p| p.server),
        floor: true,
        ..Launch::default()
    });
    let mut conn = server.connect();
    let sha = load_script(&mut conn);
    let mut out = Vec::new();
    for case in cases::memory(&sha) {
        let missing: Vec<String> = case
            .requires
            .iter()
            .filter(|c| !cases::has_command(&mut conn, c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            progress(&format!(
                "memory {}: not available in this build (no {})",
                case.label,
                missing.join(", ")
            ));
            out.push(MemoryLine {
                case,
                missing,
                bytes: (f64::NAN, None),
                dbsize: 0,
                encoding: String::new(),
            });
            continue;
        }
        conn.command(&["FLUSHALL", "SYNC"]).expect("FLUSHALL");
        let before = settle(&mut conn);
        let template = case.template();
        let keys = case.keys() as f64;
        driver::fill(&mut conn, &template, 0..case.numbers)
            .unwrap_or_else(|e| panic!("memory {}: {e}", case.label));
        let once = (settle(&mut conn) - before) / keys;
        let twice = case.twice.then(|| {
            driver::fill(&mut conn, &template, 0..case.numbers)
                .unwrap_or_else(|e| panic!("memory {}: {e}", case.label));
            (settle(&mut conn) - before) / keys
        });
        let dbsize = conn
            .command(&["DBSIZE"])
            .ok()
            .and_then(|r| r.integer())
            .unwrap_or(-1);
        let key = sample_key(&case);
        let encoding = conn
            .command(&["OBJECT", "ENCODING", &key])
            .ok()
            .and_then(|r| r.text())
            .unwrap_or_else(|| "?".into());
        progress(&format!(
            "memory {}: {once:.1} B/key, then {} ({encoding}, {dbsize} keys)",
            case.label,
            twice.map_or("-".into(), |b| format!("{b:.1}"))
        ));
        out.push(MemoryLine {
            case,
            missing,
            bytes: (once, twice),
            dbsize,
            encoding,
        });
    }
    server.stop();
    out
}

/// The first key that key number 7 of a memory line writes.
fn sample_key(case: &cases::MemoryCase) -> String {
    case.fill
        .iter()
        .flat_map(|command| command.split_whitespace().skip(1))
        .find(|word| word.contains(ratelimit_bench::driver::KEY))
        .map(|word| word.replace(ratelimit_bench::driver::KEY, "000000000007"))
        .unwrap_or_default()
}

fn used_memory(conn: &mut resp::Connection) -> f64 {
    conn.info_number("memory", "used_memory")
        .expect("INFO memory used_memory")
}
