//! The `check` example, run as a user would: against a server with the module, a plain server
//! and a closed port, printing one JSON object per request in the exact shape.

mod common;

use common::{closed_port, Server};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The example's binary, `target/<profile>/examples/check` for the profile of this test.
/// `cargo test` builds it along with the tests; when it is missing or older than the sources
/// (e.g. with `cargo test --test example`), it is built with `cargo build --example check`.
fn example() -> PathBuf {
    common::example("check", &[])
}

fn run(args: &[&str]) -> Output {
    Command::new(example())
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RATELIMIT_PREFIX")
        .output()
        .expect("run the example")
}

/// The fields of one line, read back from the exact shape
/// `{"allowed":B,"limit":N,"remaining":N,"reset_after_ms":N,"retry_after_ms":N,"backend":"S"}`.
#[derive(Debug, PartialEq)]
struct Line {
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_after_ms: u64,
    retry_after_ms: i64,
    backend: String,
}

fn parse_line(line: &str) -> Line {
    let fail = || -> ! { panic!("not the exact JSON shape: {line}") };
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| fail());
    let fields: Vec<(&str, &str)> = body
        .split(',')
        .map(|field| field.split_once(':').unwrap_or_else(|| fail()))
        .collect();
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "\"allowed\"",
            "\"limit\"",
            "\"remaining\"",
            "\"reset_after_ms\"",
            "\"retry_after_ms\"",
            "\"backend\""
        ],
        "{line}"
    );
    let number = |i: usize| -> i64 { fields[i].1.parse().unwrap_or_else(|_| fail()) };
    let backend = fields[5].1;
    assert!(backend.starts_with('"') && backend.ends_with('"'), "{line}");
    Line {
        allowed: match fields[0].1 {
            "true" => true,
            "false" => false,
            _ => fail(),
        },
        limit: number(1) as u64,
        remaining: number(2) as u64,
        reset_after_ms: number(3) as u64,
        retry_after_ms: number(4),
        backend: backend.trim_matches('"').to_string(),
    }
}

fn parse_output(output: &Output) -> Vec<Line> {
    assert!(
        output.status.success(),
        "the example failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(parse_line)
        .collect()
}

fn summary(lines: &[Line]) -> Vec<(bool, u64, &str)> {
    lines
        .iter()
        .map(|l| (l.allowed, l.remaining, l.backend.as_str()))
        .collect()
}

#[test]
fn against_the_module() {
    let server = Server::start(true);
    let url = server.url();
    let output = run(&[
        "--url", &url, "--limit", "2", "--period", "10s", "--repeat", "3", "k",
    ]);
    let lines = parse_output(&output);
    assert_eq!(
        summary(&lines),
        [
            (true, 1, "module"),
            (true, 0, "module"),
            (false, 0, "module")
        ]
    );
    assert_eq!(lines[0].limit, 2);
    assert!(lines[0].reset_after_ms <= 10_000 && lines[0].reset_after_ms > 9_000);
    assert_eq!(lines[0].retry_after_ms, 0);
    assert!(lines[2].retry_after_ms > 0);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("{\"allowed\":true,\"limit\":2,\"remaining\":1,\"reset_after_ms\":"));

    // GCRA with a burst, a cost and a dry run.
    let output = run(&[
        "--url",
        &url,
        "--limit",
        "10",
        "--period",
        "1s",
        "--algorithm",
        "gcra",
        "--burst",
        "3",
        "--cost",
        "2",
        "--check-only",
        "--repeat",
        "2",
        "g",
    ]);
    let lines = parse_output(&output);
    assert_eq!(summary(&lines), [(true, 1, "module"), (true, 1, "module")]);
    assert_eq!(lines[0].limit, 3);
    // A cost that can never fit.
    let output = run(&[
        "--url", &url, "--limit", "2", "--period", "1m", "--cost", "3", "x",
    ]);
    assert_eq!(parse_output(&output)[0].retry_after_ms, -1);
}

#[test]
fn against_a_plain_server() {
    let server = Server::start(false);
    let output = run(&[
        "--url",
        &server.url(),
        "--limit",
        "3",
        "--period",
        "1m",
        "--algorithm",
        "SLIDING",
        "--repeat",
        "2",
        "k",
    ]);
    assert_eq!(
        summary(&parse_output(&output)),
        [(true, 2, "script"), (true, 1, "script")]
    );
}

#[test]
fn against_a_closed_port() {
    let url = format!("redis://127.0.0.1:{}/", closed_port());
    let args = [
        "--url",
        url.as_str(),
        "--limit",
        "2",
        "--period",
        "5m",
        "--repeat",
        "3",
        "k",
    ];
    let output = run(&args);
    assert_eq!(
        summary(&parse_output(&output)),
        [(true, 1, "local"), (true, 0, "local"), (false, 0, "local")]
    );
    for (policy, allowed) in [("allow", true), ("deny", false)] {
        let mut with_policy = args.to_vec();
        with_policy.splice(0..0, ["--on-failure", policy]);
        let lines = parse_output(&run(&with_policy));
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| l.allowed == allowed && l.backend == policy));
    }
}

#[test]
fn rejects_bad_arguments() {
    for args in [
        &["--limit", "2", "k"][..],
        &["--limit", "2", "--period", "5x", "k"],
        &["--limit", "x", "--period", "5s", "k"],
        &["--limit", "2", "--period", "5s"],
        &["--limit", "2", "--period", "5s", "--burst", "3", "k"],
        &[
            "--limit",
            "2",
            "--period",
            "5s",
            "--on-failure",
            "maybe",
            "k",
        ],
        &["--limit", "2", "--period", "5s", "--frobnicate", "k"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage: check"));
        assert!(output.stdout.is_empty());
    }
}
