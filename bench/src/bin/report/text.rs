//! `BENCHMARKS.md`: the machine, the targets, the tables, and the analysis of
//! `bench/analysis.md`.

use super::{Measured, MemoryCase, Profile, Throughput, PROFILE_ROWS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// What the benchmarks ran on.
pub struct Machine {
    /// `nproc`.
    pub cores: usize,
    /// The CPU model of `/proc/cpuinfo`.
    pub cpu: String,
    /// `redis-server --version`.
    pub server: String,
    /// The kernel, `uname -r`.
    pub kernel: String,
    /// When, in UTC.
    pub date: String,
}

impl Machine {
    /// Reads the machine's description.
    pub fn read() -> Machine {
        let run = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            server: run(&ratelimit_bench::server_binary(), &["--version"]),
            kernel: run("uname", &["-r"]),
            date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

/// The criterion estimates found, by benchmark id (`group/function`), in nanoseconds.
pub struct Criterion {
    estimates: BTreeMap<String, f64>,
}

impl Criterion {
    /// Reads every `<id>/new/benchmark.json` and its `estimates.json` under `dir`.
    pub fn read(dir: &Path) -> Criterion {
        let mut estimates = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.ends_with("new/benchmark.json") {
                    if let Some((id, ns)) = read_estimate(&path) {
                        estimates.insert(id, ns);
                    }
                }
            }
        }
        Criterion { estimates }
    }

    fn get(&self, id: &str) -> Option<f64> {
        self.estimates.get(id).copied()
    }
}

fn read_estimate(benchmark: &Path) -> Option<(String, f64)> {
    let read = |path: &Path| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let id = read(benchmark)?.get("full_id")?.as_str()?.to_string();
    let estimates = read(&benchmark.with_file_name("estimates.json"))?;
    // The slope of the linear sampling when there is one, the mean otherwise.
    let ns = ["slope", "mean"]
        .iter()
        .find_map(|name| estimates.get(name)?.get("point_estimate")?.as_f64())?;
    Some((id, ns))
}

/// Everything the report shows.
pub struct Results {
    pub machine: Machine,
    pub rounds: usize,
    pub requests: u64,
    pub requests_p1: u64,
    pub throughput: Throughput,
    pub memory: Vec<MemoryCase>,
    pub overhead: ratelimit_bench::overhead::Overhead,
    pub profile: Result<Profile, String>,
    pub criterion: Criterion,
    pub seconds: u64,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Measured {
    fn rate(&self, pipeline: usize) -> f64 {
        self.rates.get(&pipeline).map_or(f64::NAN, |v| median(v))
    }
    fn ratio(&self, pipeline: usize) -> f64 {
        self.ratios.get(&pipeline).map_or(f64::NAN, |v| median(v))
    }
    fn micros(&self, pipeline: usize) -> f64 {
        self.micros.get(&pipeline).map_or(f64::NAN, |v| median(v))
    }
}

/// Thousands separated by commas.
fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mark(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// The report in Markdown.
pub fn render(r: &Results) -> String {
    let mut out = String::new();
    let t = &r.throughput;
    let find = |label: &str| {
        t.cases
            .iter()
            .position(|c| c.label == label)
            .map(|i| &t.measured[i])
    };
    let fixed = find("RATELIMIT.CHECK FIXED");
    let sliding = find("RATELIMIT.CHECK SLIDING");
    let gcra = find("RATELIMIT.CHECK GCRA");
    let incr = find("INCR");
    let lua_gcra = find("Lua GCRA (EVALSHA)");
    let multi = find("MULTI INCRBY PEXPIRE NX PTTL EXEC, our driver");
    let get =
        |m: Option<&Measured>, f: fn(&Measured, usize) -> f64, p| m.map_or(f64::NAN, |m| f(m, p));
    let memory = |label: &str| {
        r.memory
            .iter()
            .find(|m| m.label.starts_with(label))
            .map_or(f64::NAN, |m| m.bytes.1)
    };
    let c = |id: &str| r.criterion.get(id).unwrap_or(f64::NAN);

    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `make bench` on {} in {} s of measurement (plus the build and the criterion \
         benches before it). Do not edit: `make bench` rewrites this file; the analysis at the \
         end comes from `bench/analysis.md`.\n",
        r.machine.date, r.seconds
    );

    let _ = writeln!(out, "## Headline\n");
    let _ = writeln!(
        out,
        "With 16 requests pipelined per connection, `RATELIMIT.CHECK` runs at **{:.2}× the rate \
         of a plain `INCR`** for FIXED, {:.2}× for SLIDING and {:.2}× for GCRA (the client's Lua \
         GCRA: {:.2}×; the seed's `MULTI` transaction: {:.2}× `INCR` through the same driver). \
         The server spends {:.2} µs per FIXED check and {:.2} µs per GCRA check, against {:.2} µs \
         per `INCR`. A FIXED limiter takes {:.0} bytes per key and a GCRA one {:.0}, against {:.0} \
         for an `INCR` counter with a TTL and {:.0} for a `SET` of an integer with a TTL. See the \
         analysis at the end for where the rest of the time and memory goes.\n",
        get(fixed, Measured::ratio, 16),
        get(sliding, Measured::ratio, 16),
        get(gcra, Measured::ratio, 16),
        get(lua_gcra, Measured::ratio, 16),
        get(multi, Measured::ratio, 16),
        get(fixed, Measured::micros, 16),
        get(gcra, Measured::micros, 16),
        get(incr, Measured::micros, 16),
        memory("RATELIMIT.CHECK FIXED"),
        memory("RATELIMIT.CHECK GCRA"),
        memory("INCR + PEXPIRE"),
        memory("SET of an integer"),
    );

    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| cores (`nproc`) | {} |", r.machine.cores);
    let _ = writeln!(out, "| CPU | {} |", r.machine.cpu);
    let _ = writeln!(out, "| server | {} |", r.machine.server);
    let _ = writeln!(out, "| kernel | {} |", r.machine.kernel);
    let _ = writeln!(out, "| date | {} |", r.machine.date);
    let _ = writeln!(
        out,
        "| load average before and after the throughput runs | {} / {} |\n",
        t.load.0, t.load.1
    );
    let _ = writeln!(
        out,
        "The server and the load generator share the machine's cores, and other work on the \
         machine shows as noise: hence interleaved rounds, medians, and ratios to `INCR` \
         measured in the same round, which cancel most of it.\n"
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n|---|---|---|");
    let fixed_ratio = get(fixed, Measured::ratio, 16);
    let gcra_ratio = get(gcra, Measured::ratio, 16);
    let _ = writeln!(
        out,
        "| RATELIMIT.CHECK FIXED at P16: at least 0.7× INCR | {fixed_ratio:.2}× | {} |",
        mark(fixed_ratio >= 0.7)
    );
    let _ = writeln!(
        out,
        "| RATELIMIT.CHECK GCRA at P16: at least 0.7× INCR | {gcra_ratio:.2}× | {} |",
        mark(gcra_ratio >= 0.7)
    );
    for (label, m) in [("FIXED", fixed), ("SLIDING", sliding), ("GCRA", gcra)] {
        let micros = get(m, Measured::micros, 16);
        let _ = writeln!(
            out,
            "| server time of CHECK {label}: at most 1.0 µs/call | {micros:.2} µs | {} |",
            mark(micros <= 1.0)
        );
    }
    let fixed_bytes = memory("RATELIMIT.CHECK FIXED");
    let gcra_bytes = memory("RATELIMIT.CHECK GCRA");
    let set_bytes = memory("SET of an integer");
    let _ = writeln!(
        out,
        "| FIXED: at most 120 bytes per key | {fixed_bytes:.0} | {} |",
        mark(fixed_bytes <= 120.0)
    );
    let _ = writeln!(
        out,
        "| GCRA: no more than a SET of an integer with a TTL ({set_bytes:.0}) | {gcra_bytes:.0} | {} |",
        mark(gcra_bytes <= set_bytes)
    );
    for (threads, label) in [
        ("1 thread", "single-threaded"),
        ("2 threads", "on 2 threads"),
    ] {
        let ours = c(&format!("local {threads}/LocalLimiter GCRA"));
        let theirs = c(&format!("local {threads}/governor keyed"));
        let _ = writeln!(
            out,
            "| local limiter {label}: no slower than governor | {ours:.0} ns vs {theirs:.0} ns | {} |",
            mark(ours <= theirs)
        );
    }
    let overhead = r.overhead.overhead_us;
    let _ = writeln!(
        out,
        "| client overhead over a raw redis-rs call: at most 5 µs | {overhead:.1} µs | {} |\n",
        mark(overhead <= 5.0)
    );

    let _ = writeln!(out, "## Server throughput\n");
    let _ = writeln!(
        out,
        "One `redis-server` with the module, persistence off, no replica. `redis-benchmark -c {} \
         -r {} -P 16 -n {}` and `-P 1 -n {}`, each key `__rand_int__`-numbered; {} interleaved \
         rounds, each running every line below at P16 then at P1. Each run has the server to \
         itself: `FLUSHALL`, then one request on each of its 100,000 keys, then the measured \
         requests. Every limiter is configured \
         `{} per {}` (Lua: the same in milliseconds), so that every request is admitted and \
         writes, and no key expires during the run: the module's most expensive path. The Lua \
         lines run the client's fallback script (`client/lua/*.lua`) through `EVALSHA`. The \
         last two lines come from our own driver (`bench/src/driver.rs`, one thread and 50 \
         connections like `redis-benchmark`), which sends the seed's transaction as one \
         pipelined request of five commands; its ratio is to `INCR` sent by the same driver.\n",
        super::CONNECTIONS,
        super::KEYSPACE,
        r.requests,
        r.requests_p1,
        r.rounds,
        super::LIMIT,
        super::PERIOD
    );
    let _ = writeln!(
        out,
        "Server µs per request is the `INFO commandstats` time of the command (for the \
         transaction, `MULTI` plus `EXEC`, whose time includes the commands it runs) over the \
         requests of the run: the time inside the command, without reading, parsing and \
         replying, which every command pays.\n"
    );
    for pipeline in [16, 1] {
        let _ = writeln!(out, "### -P {pipeline}\n");
        let _ = writeln!(
            out,
            "| | median requests/s | ratio to INCR (median) | server µs/request | rounds (requests/s) |\n|---|--:|--:|--:|---|"
        );
        for (case, m) in t.cases.iter().zip(&t.measured) {
            let rounds = m
                .rates
                .get(&pipeline)
                .map(|v| {
                    v.iter()
                        .map(|x| thousands(*x))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let reference = if case.reference == 0 { "" } else { " (driver)" };
            let _ = writeln!(
                out,
                "| {} | {} | {:.2}{reference} | {:.2} | {rounds} |",
                case.label,
                thousands(m.rate(pipeline)),
                m.ratio(pipeline),
                m.micros(pipeline),
            );
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Memory per key\n");
    let _ = writeln!(
        out,
        "`used_memory` before and after writing 100,000 distinct keys (`rl:xx:` and 12 digits) \
         on an empty server, divided by 100,000; then after a second request on each key. The \
         encoding is `OBJECT ENCODING` of one key. redis-cell's CL.THROTTLE takes about 165 \
         bytes per key.\n"
    );
    let _ = writeln!(
        out,
        "| | bytes/key, one request | after a second | encoding |\n|---|--:|--:|---|"
    );
    for m in &r.memory {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} |",
            m.label, m.bytes.0, m.bytes.1, m.encoding
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Where the instructions go\n");
    match &r.profile {
        Ok(profile) => {
            let _ = writeln!(
                out,
                "The server under `valgrind --tool=callgrind`, driven by `redis-benchmark -c 50 \
                 -r 10000 -P 16` (10,000 requests to create the keys, then 20,000): inclusive \
                 instructions per request of each part. Instructions are not time (a cache miss \
                 costs the same whatever the instruction count), but they are exact and do not \
                 depend on the machine's load.\n"
            );
            let _ = write!(out, "| instructions per request |");
            for (label, _) in &profile.columns {
                let _ = write!(out, " {label} |");
            }
            let _ = write!(out, "\n|---|");
            for _ in &profile.columns {
                let _ = write!(out, "--:|");
            }
            let _ = writeln!(out);
            for (row, _) in PROFILE_ROWS {
                let _ = write!(out, "| {row} |");
                for (_, values) in &profile.columns {
                    let value = values.get(*row).copied().unwrap_or(0.0);
                    if value < 0.5 {
                        let _ = write!(out, " |");
                    } else {
                        let _ = write!(out, " {} |", thousands(value));
                    }
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(out);
        }
        Err(reason) => {
            let _ = writeln!(out, "Not measured: {reason}.\n");
        }
    }

    let _ = writeln!(out, "## criterion\n");
    let _ = writeln!(
        out,
        "`cargo bench --manifest-path bench/Cargo.toml` (`bench/benches/*.rs`). Times are \
         criterion's estimate (the slope of its linear sampling) per call.\n"
    );
    let _ = writeln!(out, "### ratelimit-core: one `decide`\n");
    let _ = writeln!(out, "| | ns |\n|---|--:|");
    for (id, label) in [
        ("decide/FIXED", "FIXED, a stored window"),
        ("decide/SLIDING", "SLIDING, a stored window"),
        ("decide/GCRA", "GCRA, a stored arrival time"),
        (
            "decide/GCRA, no common factor",
            "GCRA, 999983 per 30 days (rational units)",
        ),
        (
            "limit/GCRA",
            "building a GCRA `Limit` (done once per command by the module)",
        ),
    ] {
        let _ = writeln!(out, "| {label} | {:.1} |", c(id));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "### The in-memory limiter against governor\n\n\
         `LocalLimiter::check` (GCRA and FIXED, with its wall clock) and governor's keyed \
         `RateLimiter::check_key` (GCRA, with its default clock), on 10,000 keys taken in \
         turn, every request admitted: both limiters get 100 per second with a burst of a \
         billion, so that every key stays stored. On 2 threads, each thread makes the same number of \
         checks on one shared limiter and the time is the wall time over the checks of one \
         thread: equal to the single-threaded figure if nothing contends.\n"
    );
    let _ = writeln!(
        out,
        "| ns per check | 1 thread | 2 threads |\n|---|--:|--:|"
    );
    for (name, label) in [
        ("LocalLimiter GCRA", "`LocalLimiter`, GCRA"),
        ("LocalLimiter FIXED", "`LocalLimiter`, FIXED"),
        (
            "LocalLimiter GCRA, given time",
            "`LocalLimiter::check_at`, GCRA, no clock read",
        ),
        ("governor keyed", "governor, keyed (DashMap)"),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.1} | {:.1} |",
            c(&format!("local 1 thread/{name}")),
            c(&format!("local 2 threads/{name}"))
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "The parts of a check, measured alone (the limiter uses the quanta clock, foldhash and \
         one `Mutex` per shard; governor uses the quanta clock, SipHash and a `DashMap` shard's \
         `RwLock` plus a compare-and-swap):\n"
    );
    let _ = writeln!(out, "| part | ns |\n|---|--:|");
    for name in [
        "SystemTime::now",
        "quanta clock",
        "SipHash of a key",
        "foldhash of a key",
        "Mutex lock and unlock",
    ] {
        let _ = writeln!(out, "| {name} | {:.1} |", c(&format!("local parts/{name}")));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "### The client's overhead\n\n\
         One `RATELIMIT.CHECK` round trip at a time to a local server with the module, on a \
         current-thread Tokio runtime: through `RedisStore::check` (key prefix, breaker, \
         backend choice, reply conversion), and as a raw redis-rs `cmd(...).query_async` on a \
         `MultiplexedConnection`. A loopback round trip on this virtual machine varies by tens \
         of microseconds with how deeply the cores sleep, more than the client adds: criterion \
         times each kind of call in its own run, so the report also times them alternating (and \
         their order alternating, `bench/src/overhead.rs`), and takes the mean of the \
         differences as the overhead.\n"
    );
    let _ = writeln!(
        out,
        "| | criterion, separate runs | alternating, {} pairs |\n|---|--:|--:|",
        r.overhead.pairs
    );
    let raw = c("client/raw redis-rs cmd") / 1000.0;
    let store = c("client/RedisStore::check") / 1000.0;
    let _ = writeln!(
        out,
        "| raw redis-rs `cmd`, µs | {raw:.1} | {:.1} |",
        r.overhead.raw_us
    );
    let _ = writeln!(
        out,
        "| `RedisStore::check`, µs | {store:.1} | {:.1} |",
        r.overhead.store_us
    );
    let _ = writeln!(
        out,
        "| overhead, µs | {:.1} | {:.2} ± {:.2} (95%) |\n",
        store - raw,
        r.overhead.overhead_us,
        r.overhead.margin_us
    );

    let analysis = Path::new(env!("CARGO_MANIFEST_DIR")).join("analysis.md");
    match std::fs::read_to_string(&analysis) {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "(bench/analysis.md could not be read: {e})");
        }
    }
    out
}
