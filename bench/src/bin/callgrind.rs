//! `make bench-callgrind`: instructions per call of `INCR`, the floor and the module's commands,
//! counted by callgrind (see `ratelimit_bench::callgrind`), written as JSON for `make bench` to
//! put in `BENCHMARKS.md`, and printed.
//!
//! Options: `--out PATH` (default `callgrind.json` in the bench target directory), `--requests N`
//! measured per run (20,000), `--keys N` written first (100,000), `--repeat N` runs of each
//! case (3: the report shows their median and how far they differ), `--cases id,id` (default:
//! `cases::CALLGRIND`).

use ratelimit_bench::callgrind::{self, INSIDE_CALL, WHOLE_REQUEST};
use ratelimit_bench::{cases, progress};
use std::path::PathBuf;

fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    let mut out = target.join("callgrind.json");
    let mut requests = 20_000;
    let mut keys = callgrind::KEYS;
    let mut repeat = 3;
    let mut ids: Vec<String> = cases::CALLGRIND.iter().map(|s| s.to_string()).collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => out = value().into(),
            "--requests" => requests = value().parse().expect("--requests N"),
            "--keys" => keys = value().parse().expect("--keys N"),
            "--repeat" => repeat = value().parse().expect("--repeat N"),
            "--cases" => ids = value().split(',').map(str::to_string).collect(),
            other => panic!("unknown option {other}: see the top of bench/src/bin/callgrind.rs"),
        }
    }
    // The Lua lines are not counted, so the script's SHA1 does not matter here.
    let all = cases::throughput("0");
    let selected: Vec<cases::Case> = ids
        .iter()
        .map(|id| {
            all.iter()
                .find(|case| case.id == id)
                .unwrap_or_else(|| panic!("no case {id}"))
                .clone()
        })
        .collect();
    let results = callgrind::measure_all(&selected, requests, keys, repeat)
        .unwrap_or_else(|e| panic!("callgrind: {e}"));
    results
        .write(&out)
        .unwrap_or_else(|e| panic!("cannot write the results: {e}"));
    let floor = results.case("floor").and_then(|f| f.row(INSIDE_CALL));
    println!(
        "{:<48} {:>12} {:>12} {:>10} {:>8}",
        "instructions per request", "inside call", "whole", "floor/ours", "spread"
    );
    for case in &results.cases {
        if !case.missing.is_empty() {
            println!("{:<48} not available in this build", case.id);
            continue;
        }
        let inside = case.row(INSIDE_CALL).unwrap_or(f64::NAN);
        println!(
            "{:<48} {:>12.0} {:>12.0} {:>10} {:>7.2}%",
            case.id,
            inside,
            case.row(WHOLE_REQUEST).unwrap_or(f64::NAN),
            floor.map_or("".into(), |floor| format!("{:.2}", floor / inside)),
            case.spread().unwrap_or(0.0) * 100.0
        );
    }
    progress(&format!("wrote {}", out.display()));
}
