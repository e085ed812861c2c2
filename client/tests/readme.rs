//! The client's guide, `client/README.md`, holds `examples/quickstart.rs` and `examples/http.rs`
//! verbatim (it is the crate's front page, so rustdoc compiles them too), and they do what the
//! guide says: the quickstart checks a limit, and the HTTP server answers a client without an
//! API key 200, then 429.

mod common;

use common::http::Running;
use common::Server;
use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_guide_holds_the_examples_verbatim() {
    let guide = read("README.md");
    for example in ["examples/quickstart.rs", "examples/http.rs"] {
        let block = format!("```rust,no_run\n{}```\n", read(example));
        assert!(
            guide.contains(&block),
            "client/README.md does not hold {example} verbatim: copy it in a ```rust,no_run block"
        );
    }
}

#[test]
fn the_quickstart_checks_a_limit() {
    let server = Server::start(true);
    let output = Command::new(common::example("quickstart", &[]))
        .env("REDIS_URL", server.url())
        .env_remove("RATELIMIT_PREFIX")
        .env_remove("RATELIMIT_ON_FAILURE")
        .env_remove("RATELIMIT_SHADOW")
        .output()
        .expect("run the quickstart");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        ["admitted: 2 left", "admitted: 1 left", "admitted: 0 left"],
        "{stdout}"
    );
    assert!(lines[3].starts_with("denied: retry in "), "{stdout}");
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(log.contains("connected to Redis"), "{log}");
}

#[test]
fn the_http_example_answers_200_then_429() {
    let server = Server::start(true);
    let binary = common::example("http", &["tower"]);
    let http = Running::start(binary, &server.url(), |command, port| {
        command.env("ADDRESS", format!("127.0.0.1:{port}"));
    });
    let first = http.get("/hello", &[]);
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, "Hello!\n");
    assert_eq!(first.header("ratelimit-policy"), Some("\"hello\";q=5;w=10"));
    let mut statuses = vec![first.status];
    while statuses.len() < 6 {
        statuses.push(http.get("/hello", &[]).status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    let denied = http.get("/hello", &[]);
    assert_eq!(denied.status, 429, "{denied:?}");
    assert!(denied.number("retry-after") >= 1);
    assert!(
        http.log().contains("HTTP rate limits: GET /hello"),
        "{}",
        http.log()
    );
}
