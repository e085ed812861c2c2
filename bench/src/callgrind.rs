//! Instructions per call, counted by `valgrind --tool=callgrind` on a `redis-server` under load.
//!
//! Unlike times, instruction counts do not move with the machine's load, so they compare the
//! module's commands with `INCR` and with the floor (`FLOOR.INCR`) exactly, on any machine. For
//! each case:
//!
//! 1. the server starts under callgrind with instrumentation off (`--instr-atstart=no`), so that
//!    it runs fast while each of the case's `KEYSPACE` keys is written once;
//! 2. once Redis has finished growing its hash tables in the background, the statistics are
//!    reset and `callgrind_control -i on` switches instrumentation on;
//! 3. our driver sends the measured requests (50 connections, 16 pipelined, keys drawn from the
//!    filled ones, in the same order on every run), and `callgrind_control -d` dumps the counts;
//! 4. `callgrind_annotate --inclusive=yes` gives each function's inclusive count, which is
//!    divided by the number of requests. `INFO commandstats` confirms how many commands ran.
//!
//! "Inside `call()`" is the inclusive count of Redis's `call()`, which runs a command from its
//! arguments to its reply: what `--toggle-collect=call` counts, without toggling off inside a
//! nested `call()`. The whole request adds reading and parsing it, writing the reply and the event
//! loop: everything the server ran while instrumented, over the requests.

use crate::cases::{Case, KEYSPACE};
use crate::driver::{self, Load};
use crate::{progress, Launch, Server};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where a row of the breakdown comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Everything the server ran while instrumented.
    Total,
    /// The sum of these functions' inclusive counts.
    Functions(&'static [&'static str]),
    /// `call()` less the command it runs (the module's dispatcher, or `incrCommand`).
    AroundCommand,
    /// The instructions of some Rust code itself, inlined or not, not counting what it calls:
    /// those of functions whose path starts with one of `functions`, and those whose source file
    /// ends with one of `files` (code inlined into other functions). Each instruction counts in
    /// the first such row that claims it.
    Own {
        /// Function path prefixes.
        functions: &'static [&'static str],
        /// Source file suffixes (the standard library's files never match).
        files: &'static [&'static str],
    },
    /// The module command less the rows of its parts above.
    ModuleRest,
    /// Like `Functions`, but part of rows above: not taken from the rest.
    AlsoCounted(&'static [&'static str]),
}

/// The rows of the breakdown, in table order.
pub const ROWS: &[(&str, Source)] = &[
    (WHOLE_REQUEST, Source::Total),
    (INSIDE_CALL, Source::Functions(&["call"])),
    (
        "`call()` around the command: statistics, propagation, notifications",
        Source::AroundCommand,
    ),
    (
        MODULE_COMMAND,
        Source::Functions(&["RedisModuleCommandDispatcher"]),
    ),
    (
        "RedisModule_Replicate (SET key value PXAT ms)",
        Source::Functions(&["RM_Replicate"]),
    ),
    (
        "RedisModule_OpenKey (key and expiry lookup)",
        Source::Functions(&["RM_OpenKey"]),
    ),
    (
        "reply: an array of integers",
        Source::Functions(&["RM_ReplyWithArray", "RM_ReplyWithLongLong"]),
    ),
    (
        "RedisModule_GetAbsExpire",
        Source::Functions(&["RM_GetAbsExpire"]),
    ),
    (
        "RedisModule_SetAbsExpire",
        Source::Functions(&["RM_SetAbsExpire"]),
    ),
    (
        "RedisModule_StringDMA (read and in-place write)",
        Source::Functions(&["RM_StringDMA"]),
    ),
    (
        "RedisModule_StringTruncate and DeleteKey (new keys and lengths)",
        Source::Functions(&["RM_StringTruncate", "RM_DeleteKey"]),
    ),
    ("RedisModule_CloseKey", Source::Functions(&["RM_CloseKey"])),
    (
        "RedisModule_NotifyKeyspaceEvent and SignalModifiedKey",
        Source::Functions(&["RM_NotifyKeyspaceEvent", "RM_SignalModifiedKey"]),
    ),
    (
        "RedisModule_GetContextFlags",
        Source::Functions(&["RM_GetContextFlags"]),
    ),
    (
        "the clock (RedisModule_Milliseconds, CachedMicroseconds)",
        Source::Functions(&["RM_Milliseconds", "RM_CachedMicroseconds"]),
    ),
    (
        "argument vector (redis-module's Vec<RedisString>)",
        Source::Functions(&["redis_module::redismodule::decode_args"]),
    ),
    (
        "argument parsing (the module's parsing code itself, inlined or not)",
        Source::Own {
            functions: &["redis_ratelimit::args::", "ratelimit_core::parse::"],
            files: &["src/args.rs", "core/src/parse.rs"],
        },
    ),
    (
        "the decision and the state's encoding (ratelimit-core's code itself)",
        Source::Own {
            functions: &["ratelimit_core::"],
            files: &[
                "core/src/lib.rs",
                "core/src/fixed.rs",
                "core/src/sliding.rs",
                "core/src/gcra.rs",
                "core/src/storage.rs",
                "core/src/limit.rs",
            ],
        },
    ),
    (
        "the rest of the module command: statistics, allocations, glue",
        Source::ModuleRest,
    ),
    (
        "of the rows above: the Rust code's allocations (RedisModule_Alloc, Realloc, Free)",
        Source::AlsoCounted(&["RM_Alloc", "RM_Realloc", "RM_Free"]),
    ),
    (
        "INCR's own work (incrCommand)",
        Source::Functions(&["incrCommand"]),
    ),
];

/// The row of the whole module command.
pub const MODULE_COMMAND: &str = "the module command, in all";
/// The row of instructions inside `call()`.
pub const INSIDE_CALL: &str = "inside `call()`";
/// The row of everything the server ran, per request.
pub const WHOLE_REQUEST: &str = "whole request: read, parse, execute, reply, event loop";

/// One measurement of one case: instructions per request, by row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Requests sent while instrumented.
    pub requests: u64,
    /// Commands the server ran meanwhile (`INFO commandstats`).
    pub commands: u64,
    /// Instructions per request, by row label.
    pub rows: BTreeMap<String, f64>,
}

/// Every measurement of one case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// The case's id (`cases::throughput`).
    pub id: String,
    /// Its label.
    pub label: String,
    /// Commands per request.
    pub commands_per_request: usize,
    /// The commands the server lacked: when not empty, the case was not measured.
    pub missing: Vec<String>,
    /// One per repetition.
    pub runs: Vec<Run>,
}

impl Measured {
    /// The median over the runs of `row`, per request; `None` when never measured or zero.
    pub fn row(&self, row: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|run| run.rows.get(row).copied())
            .collect();
        let value = crate::median(&values);
        (value.is_finite() && value >= 0.5).then_some(value)
    }

    /// The largest relative difference between runs of the instructions inside `call()`.
    pub fn spread(&self) -> Option<f64> {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|run| run.rows.get(INSIDE_CALL).copied())
            .collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (values.len() >= 2 && min > 0.0).then(|| (max - min) / min)
    }
}

/// What `make bench-callgrind` writes and `make bench` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// When, in UTC.
    pub measured_at: String,
    /// `redis-server --version`.
    pub server: String,
    /// `valgrind --version`.
    pub valgrind: String,
    /// A hash of the module's file, to tell whether the counts are of the current build.
    pub module_hash: String,
    /// The same for the floor.
    pub floor_hash: String,
    /// Keys written before each measurement.
    pub keys: u64,
    /// Requests measured in each run (heavy lines count fewer: see each run's).
    pub requests: u64,
    /// The cases, in table order.
    pub cases: Vec<Measured>,
}

impl Results {
    /// Reads the results written by [`Results::write`].
    pub fn read(path: &Path) -> Result<Results, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes them as JSON.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The case `id`.
    pub fn case(&self, id: &str) -> Option<&Measured> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// Whether the module and the floor are the builds measured.
    pub fn current(&self) -> bool {
        self.module_hash == file_hash(&crate::module_path())
            && self.floor_hash
                == crate::floor_module_path().map_or("none".into(), |p| file_hash(&p))
    }
}

/// A hash of a file's bytes (the standard library's SipHash with fixed keys), in hex; "none"
/// when it cannot be read.
pub fn file_hash(path: &Path) -> String {
    use std::hash::{Hash, Hasher};
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        }
        Err(_) => "none".into(),
    }
}

/// Whether valgrind, callgrind_control and callgrind_annotate are installed.
pub fn available() -> Result<String, String> {
    let version = Command::new("valgrind")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok_or("valgrind is not installed (`apt-get install valgrind`)")?;
    for tool in ["callgrind_control", "callgrind_annotate"] {
        Command::new(tool)
            .arg("--help")
            .output()
            .map_err(|e| format!("{tool}: {e} (it comes with valgrind)"))?;
    }
    Ok(version)
}

/// Counts the instructions of `requests` requests of `case` on a server holding `keys` keys.
pub fn measure(case: &Case, requests: u64, keys: u64, scratch: &Path) -> Result<Run, String> {
    let out = scratch.join(format!("callgrind-{}.out", case.id));
    let dump = PathBuf::from(format!("{}.1", out.display()));
    for path in [&out, &dump] {
        let _ = std::fs::remove_file(path);
    }
    let server = Server::launch(&Launch {
        wrapper: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--quiet".into(),
            "--instr-atstart=no".into(),
            format!("--callgrind-out-file={}", out.display()),
        ],
        cpu: None,
        floor: true,
        cluster: false,
    });
    let mut conn = server.connect();
    driver::fill(&mut conn, &case.fill_template(), 0..keys).map_err(|e| format!("fill: {e}"))?;
    // Counted in the middle of a table's growth, every lookup would also move a bucket.
    crate::wait_for_rehash(&mut conn);
    conn.command(&["CONFIG", "RESETSTAT"])
        .map_err(|e| format!("CONFIG RESETSTAT: {e}"))?;
    control(server.pid(), &["-i", "on"])?;
    let load = Load {
        connections: 50,
        pipeline: 16,
        requests,
        keyspace: keys,
    };
    driver::run(server.port(), &case.template(), load).map_err(|e| format!("{}: {e}", case.id))?;
    control(server.pid(), &["-d"])?;
    wait_for_dump(&dump)?;
    control(server.pid(), &["-i", "off"])?;
    let commands = conn
        .info("commandstats")
        .map_err(|e| format!("INFO commandstats: {e}"))?
        .iter()
        // Not the CONFIG RESETSTAT before instrumentation, which counts itself.
        .filter(|(name, _)| name != "cmdstat_config|resetstat")
        .filter_map(|(_, value)| {
            value
                .split(',')
                .find_map(|part| part.strip_prefix("calls="))
                .and_then(|calls| calls.parse::<u64>().ok())
        })
        .sum();
    server.stop();
    let annotate = |inclusive: bool| -> Result<Vec<Entry>, String> {
        let output = Command::new("callgrind_annotate")
            .arg(format!(
                "--inclusive={}",
                if inclusive { "yes" } else { "no" }
            ))
            .args(["--threshold=100", "--auto=no"])
            .arg(&dump)
            .output()
            .map_err(|e| format!("callgrind_annotate: {e}"))?;
        Ok(entries(&String::from_utf8_lossy(&output.stdout)))
    };
    let inclusive = annotate(true)?;
    let own = annotate(false)?;
    let total = totals(&std::fs::read_to_string(&dump).unwrap_or_default())
        .ok_or_else(|| format!("no totals in {}", dump.display()))?;
    // CALLGRIND_KEEP=<dir> keeps each dump there, for `callgrind_annotate` by hand.
    if let Some(dir) = std::env::var_os("CALLGRIND_KEEP") {
        let kept = Path::new(&dir).join(format!("callgrind-{}.out", case.id));
        let _ = std::fs::copy(&dump, kept);
    }
    for path in [&out, &dump] {
        let _ = std::fs::remove_file(path);
    }
    // A function's inclusive count is that of its line naming the object: the function's home
    // file. Its lines for files inlined into it each count most of it again (a call from
    // inlined code is charged to both), so they are not added.
    let count = |functions: &[&str]| -> f64 {
        functions
            .iter()
            .filter_map(|function| {
                let lines = inclusive.iter().filter(|e| e.function == *function);
                let home = lines.clone().find(|e| e.object);
                home.or_else(|| lines.max_by(|a, b| a.count.total_cmp(&b.count)))
                    .map(|e| e.count)
            })
            .sum()
    };
    let module = count(&["RedisModuleCommandDispatcher"]);
    let mut claimed = vec![false; own.len()];
    let mut values: Vec<f64> = Vec::new();
    for (_, source) in ROWS {
        values.push(match source {
            Source::Total => total,
            Source::Functions(functions) | Source::AlsoCounted(functions) => count(functions),
            Source::AroundCommand => count(&["call"]) - module - count(&["incrCommand"]),
            Source::Own { functions, files } => {
                let mut sum = 0.0;
                for (entry, claimed) in own.iter().zip(claimed.iter_mut()) {
                    let function = functions.iter().any(|f| entry.function.starts_with(f));
                    let file = !entry.file.contains("/library/")
                        && files.iter().any(|f| entry.file.ends_with(f));
                    if !*claimed && (function || file) {
                        *claimed = true;
                        sum += entry.count;
                    }
                }
                sum
            }
            Source::ModuleRest => 0.0,
        });
    }
    // The module command's parts: every row after it, but INCR's.
    let parts: f64 = ROWS
        .iter()
        .zip(&values)
        .skip_while(|((row, _), _)| *row != MODULE_COMMAND)
        .skip(1)
        .filter(|((_, source), _)| match source {
            Source::Functions(functions) => !functions.contains(&"incrCommand"),
            Source::Own { .. } => true,
            _ => false,
        })
        .map(|(_, value)| value)
        .sum();
    let mut rows = BTreeMap::new();
    for ((row, source), value) in ROWS.iter().zip(values) {
        let value = match source {
            Source::ModuleRest if module > 0.0 => module - parts,
            _ => value,
        };
        rows.insert(row.to_string(), value / requests as f64);
    }
    Ok(Run {
        requests,
        commands,
        rows,
    })
}

/// Runs `callgrind_control ARGS pid`, which waits for the valgrind process to answer.
fn control(pid: u32, args: &[&str]) -> Result<(), String> {
    let output = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && !stdout.contains("Error") {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {} {pid}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Waits until callgrind has written the dump: its last line is `totals: N`.
fn wait_for_dump(dump: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(dump) {
            if totals(&text).is_some() {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("callgrind wrote no dump at {}", dump.display()))
}

/// The `totals:` line of a callgrind output file.
fn totals(text: &str) -> Option<f64> {
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|n| n.trim().parse().ok())
}

/// One line of `callgrind_annotate`'s function list.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    count: f64,
    file: String,
    function: String,
    /// Whether the line names the object (`[/path/lib.so]`): the function's home file.
    object: bool,
}

/// The function list of `callgrind_annotate --auto=no`: lines `count (share)  file:function
/// [object]`. callgrind splits a function's cost by the source file of each instruction, so a
/// function with code inlined from other files has a line per file: their own (exclusive)
/// counts add up to the function's.
fn entries(annotated: &str) -> Vec<Entry> {
    annotated
        .lines()
        .filter_map(|line| {
            let (count, rest) = line.trim_start().split_once(' ')?;
            let count: f64 = count.replace(',', "").parse().ok()?;
            let (_, rest) = rest.split_once("%)")?;
            let rest = rest.trim();
            // Source annotation's call lines (`=> file:function (3x)`), should there be any.
            if rest.starts_with("=>") {
                return None;
            }
            let (rest, object) = match rest.rfind(" [") {
                Some(at) if rest.ends_with(']') => (&rest[..at], true),
                _ => (rest, false),
            };
            let (file, function) = rest.split_once(':')?;
            Some(Entry {
                count,
                file: file.to_string(),
                function: function.to_string(),
                object,
            })
        })
        .collect()
}

/// Measures `cases`, `repeat` times each, and collects the results; cases whose commands the
/// server lacks are recorded as missing.
pub fn measure_all(
    cases: &[Case],
    requests: u64,
    keys: u64,
    repeat: usize,
) -> Result<Results, String> {
    let valgrind = available()?;
    let scratch = std::env::temp_dir().join(format!("ratelimit-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    // Which commands exist, asked of a server without valgrind: much faster to start.
    let probe = Server::launch(&Launch {
        floor: true,
        ..Launch::default()
    });
    let mut conn = probe.connect();
    let missing: Vec<Vec<String>> = cases.iter().map(|case| case.missing(&mut conn)).collect();
    drop(conn);
    probe.stop();
    let mut measured = Vec::new();
    for (case, missing) in cases.iter().zip(missing) {
        let mut runs = Vec::new();
        if missing.is_empty() {
            for round in 1..=repeat {
                let started = Instant::now();
                // The heavy lines count fewer requests: the counts per request are as exact.
                let requests = ((requests as f64 * case.weight) as u64).max(requests.min(5000));
                let run = measure(case, requests, keys, &scratch)?;
                progress(&format!(
                    "callgrind {} ({round}/{repeat}): {:.0} instructions per request inside call(), \
                     {} commands for {} requests, {:.0} s",
                    case.id,
                    run.rows.get(INSIDE_CALL).copied().unwrap_or(0.0),
                    run.commands,
                    run.requests,
                    started.elapsed().as_secs_f64()
                ));
                runs.push(run);
            }
        } else {
            progress(&format!(
                "callgrind {}: not available in this build (no {})",
                case.id,
                missing.join(", ")
            ));
        }
        measured.push(Measured {
            id: case.id.into(),
            label: case.label.clone(),
            commands_per_request: case.request.len(),
            missing,
            runs,
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    Ok(Results {
        measured_at: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        server: run(&crate::server_binary(), &["--version"]),
        valgrind,
        module_hash: file_hash(&crate::module_path()),
        floor_hash: crate::floor_module_path().map_or("none".into(), |p| file_hash(&p)),
        keys,
        requests,
        cases: measured,
    })
}

/// The default number of keys: the throughput runs' keyspace.
pub const KEYS: u64 = KEYSPACE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_function_list() {
        let text = "\
--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
42,134,374 (100.0%)  ???:call [/usr/bin/redis-check-rdb]
 4,010,248 ( 3.06%)  /work/src/args.rs:redis_ratelimit::args::parse_mcheck
 2,520,000 ( 1.92%)  src/args.rs:redis_ratelimit::args::parse_mcheck [/work/libredis_ratelimit.so]
   333,328 ( 0.25%)  /rustc/x/library/core/src/num/mod.rs:ratelimit_core::parse::period_ms
1,622,000 ( 1.24%)  => /work/src/args.rs:redis_ratelimit::args::parse_refund (2,000x)
";
        let entries = entries(text);
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[0],
            Entry {
                count: 42_134_374.0,
                file: "???".into(),
                function: "call".into(),
                object: true,
            }
        );
        assert!(!entries[1].object && entries[2].object);
        assert_eq!(entries[1].file, "/work/src/args.rs");
        assert_eq!(entries[2].function, "redis_ratelimit::args::parse_mcheck");
        assert_eq!(entries[3].count, 333_328.0);
    }
}
