//! The module's configuration: the `default-algorithm` module argument, the config
//! `ratelimit.default-algorithm` where the server has module configurations, and the refusal to
//! load with bad arguments.
//!
//! Features are detected by asking the server (`CONFIG GET ratelimit.*`, `CONFIG GET
//! enable-module-command`), never by its version; a test that cannot run says so on stderr.

mod common;

use common::server::{module_path, server_binary};
use common::*;
use redis::Value;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const CONFIG: &str = "ratelimit.default-algorithm";

/// `CONFIG GET name`: the value, `None` when the server does not know the parameter.
fn config_get(con: &mut redis::Connection, name: &str) -> Option<String> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(con)
        .unwrap();
    match reply.as_slice() {
        [] => None,
        [key, value] if key.eq_ignore_ascii_case(name) => Some(value.clone()),
        other => panic!("CONFIG GET {name} answered {other:?}"),
    }
}

fn config_set(con: &mut redis::Connection, name: &str, value: &str) -> Value {
    call(con, &["CONFIG", "SET", name, value])
}

fn default_in_info(con: &mut redis::Connection) -> String {
    info_value(
        con,
        &["INFO", "ratelimit_config"],
        "ratelimit_default_algorithm",
    )
    .expect("ratelimit_default_algorithm in INFO ratelimit_config")
}

/// Asserts that requests without ALGORITHM use `algorithm` (`fixed`, `sliding`, `gcra`): the
/// state they write is that algorithm's, BURST is accepted only for GCRA, and an explicit
/// ALGORITHM still wins.
fn assert_default_is(con: &mut redis::Connection, algorithm: &str, context: &str) {
    assert_eq!(default_in_info(con), algorithm, "{context}");
    let key = format!("default:{algorithm}:{}", local_time_ms());
    let decision = check(con, &[key.as_str(), "10", "1h"]);
    assert!(decision.is_allowed(), "{context}");
    let value = get_text(con, &key);
    let written = if value.starts_with("s:") {
        "sliding"
    } else if value.starts_with('-') {
        "gcra"
    } else {
        "fixed"
    };
    assert_eq!(written, algorithm, "{context}: CHECK wrote {value:?}");
    assert!(
        quota(con, &[key.as_str(), "10", "1h"]).is_allowed(),
        "{context}"
    );

    let burst = call(con, &["RATELIMIT.CHECK", "burst", "10", "1s", "BURST", "3"]);
    if algorithm == "gcra" {
        let d = decision_of(&burst, context);
        assert_eq!((d.allowed, d.limit), (1, 3), "{context}");
    } else {
        assert_eq!(
            error_text(&burst).as_deref(),
            Some("ERR BURST applies only to ALGORITHM GCRA"),
            "{context}"
        );
    }
    let explicit = format!("explicit:{key}");
    check(con, &[explicit.as_str(), "10", "1h", "ALGORITHM", "FIXED"]);
    assert_eq!(get_text(con, &explicit), "1", "{context}: ALGORITHM FIXED");
    let _: () = redis::cmd("DEL")
        .arg(&[key, explicit, "burst".to_string()])
        .query(con)
        .unwrap();
}

fn decision_of(reply: &Value, context: &str) -> Decision {
    if let Some(error) = error_text(reply) {
        panic!("{context}: {error}");
    }
    decision(reply)
}

#[test]
fn without_arguments_the_default_is_fixed() {
    let server = Server::start();
    let mut con = server.con();
    assert_default_is(&mut con, "fixed", "no module arguments");
    match config_get(&mut con, CONFIG) {
        Some(value) => assert_eq!(value, "fixed"),
        None => note("this server has no module configurations; CONFIG not tested"),
    }
}

#[test]
fn the_module_argument_sets_the_default_in_any_letter_case() {
    skip_if_external!("starts servers with module arguments");
    for (argument, algorithm) in [("gcra", "gcra"), ("Sliding", "sliding"), ("FIXED", "fixed")] {
        for name in ["default-algorithm", "DEFAULT-ALGORITHM"] {
            let server = start_with_module_args(&[name, argument], &[]);
            let mut con = server.con();
            let context = format!("loadmodule ... {name} {argument}");
            assert_default_is(&mut con, algorithm, &context);
            if let Some(value) = config_get(&mut con, CONFIG) {
                assert_eq!(value, algorithm, "{context}: CONFIG GET {CONFIG}");
            }
        }
    }
}

#[test]
fn config_set_changes_the_default_at_once() {
    skip_if_external!("changes the module's configuration");
    let server = Server::start();
    let mut con = server.con();
    if config_get(&mut con, CONFIG).is_none() {
        note(&format!(
            "skipped CONFIG SET {CONFIG}: this server has no module configurations \
             (CONFIG GET {CONFIG} is empty); only the module argument sets the default"
        ));
        let reply = config_set(&mut con, CONFIG, "gcra");
        assert!(error_text(&reply).is_some(), "{reply:?}");
        assert_default_is(&mut con, "fixed", "after a refused CONFIG SET");
        return;
    }
    // A limiter written under the old default keeps its algorithm: a request without ALGORITHM
    // under the new default is told the key belongs to another algorithm.
    check(&mut con, &["old", "10", "1h"]);

    assert_eq!(config_set(&mut con, CONFIG, "GCRA"), Value::Okay);
    assert_eq!(config_get(&mut con, CONFIG).as_deref(), Some("gcra"));
    assert_default_is(&mut con, "gcra", "CONFIG SET GCRA");
    assert_eq!(
        expect_error(&mut con, &["RATELIMIT.CHECK", "old", "10", "1h"]),
        "ERR the key holds a FIXED limiter, not GCRA"
    );

    let refused = config_set(&mut con, CONFIG, "token-bucket");
    let error = error_text(&refused).unwrap_or_else(|| panic!("accepted: {refused:?}"));
    assert!(error.contains("fixed, sliding, gcra"), "{error}");
    assert_eq!(config_get(&mut con, CONFIG).as_deref(), Some("gcra"));

    assert_eq!(config_set(&mut con, CONFIG, "sliding"), Value::Okay);
    assert_default_is(&mut con, "sliding", "CONFIG SET sliding");
    // The server lists configs in no particular order.
    let all: std::collections::BTreeMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("ratelimit.*")
        .query(&mut con)
        .unwrap();
    let expected = [("ratelimit.top-keys", "128"), (CONFIG, "sliding")];
    assert_eq!(
        all,
        expected
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into_iter()
            .collect()
    );
}

#[test]
fn a_config_directive_overrides_the_module_argument() {
    skip_if_external!("starts a server with a config directive");
    let probe = Server::start();
    if config_get(&mut probe.con(), CONFIG).is_none() {
        note("skipped: this server has no module configurations");
        return;
    }
    drop(probe);
    let directive = format!("--{CONFIG}");
    let server = start_with_module_args(&["default-algorithm", "sliding"], &[&directive, "gcra"]);
    let mut con = server.con();
    assert_eq!(config_get(&mut con, CONFIG).as_deref(), Some("gcra"));
    assert_default_is(&mut con, "gcra", "argument sliding, directive gcra");
    drop(server);

    // An invalid directive stops the load like an invalid module argument.
    let (status, log) = run_to_exit(&[&directive, "bogus"], Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{log}");
    let line = format!(
        "redis-ratelimit not loaded: invalid {CONFIG} or ratelimit.top-keys in the server's \
         configuration: expected fixed, sliding or gcra, and an integer from 0 to 100000"
    );
    assert!(log.contains(&line), "the log lacks {line:?}:\n{log}");
}

/// Runs the server with `--loadmodule <module>` followed by `after_module` (the module's
/// arguments, then any further `--option`s), listening on a Unix socket only (no port to collide
/// with), and answers its exit status (`None` if it was still running after `patience`, then
/// killed) and its output.
fn run_to_exit(
    after_module: &[&str],
    patience: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rl-config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(server_binary())
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .arg("--unixsocket")
        .arg(dir.join("s.sock"))
        .arg("--loadmodule")
        .arg(module_path())
        .args(after_module)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the server binary");
    let deadline = Instant::now() + patience;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (status, text)
}

/// The bad module arguments, and the message the server's log must show for each.
const BAD_ARGUMENTS: [(&[&str], &str); 5] = [
    (
        &["default-algorithm", "token-bucket"],
        "invalid value 'token-bucket' for module argument 'default-algorithm': expected fixed, \
         sliding or gcra",
    ),
    (
        &["default-algorithm"],
        "module argument 'default-algorithm' needs a value: fixed, sliding or gcra",
    ),
    (
        &["default-algo", "gcra"],
        "unknown module argument 'default-algo': the arguments are \
         'default-algorithm <fixed|sliding|gcra>' and 'top-keys <0 to 100000>'",
    ),
    (
        &["default-algorithm", "gcra", "default-algorithm", "fixed"],
        "module argument 'default-algorithm' given more than once",
    ),
    (
        &["default-algorithm", "gcra", "extra"],
        "unknown module argument 'extra'",
    ),
];

#[test]
fn bad_module_arguments_stop_the_server_from_starting() {
    skip_if_external!("starts servers with bad module arguments");
    for (args, message) in BAD_ARGUMENTS {
        let (status, log) = run_to_exit(args, Duration::from_secs(20));
        let status = status.unwrap_or_else(|| {
            panic!("the server started with the module arguments {args:?}:\n{log}")
        });
        assert!(!status.success(), "{args:?}: exited with {status}\n{log}");
        let line = format!("redis-ratelimit not loaded: {message}");
        assert!(
            log.contains(&line),
            "{args:?}: the log lacks {line:?}:\n{log}"
        );
    }
    // The control: with good arguments the same command line starts a server.
    let (status, log) = run_to_exit(&["default-algorithm", "gcra"], Duration::from_secs(2));
    assert!(
        status.is_none() && log.contains("redis-ratelimit: default algorithm gcra"),
        "the server should have started with good arguments: {status:?}\n{log}"
    );
}

/// `MODULE LOAD` with bad arguments fails with the reason in the log and leaves no command
/// behind; then a good `MODULE LOAD` works, with its counters at zero and its arguments
/// applied. Once loaded, the module refuses `MODULE UNLOAD` (its commands would crash the
/// server if they ran after it), with the reason in the log, and keeps working.
#[test]
fn module_load_fails_with_bad_arguments_and_then_loads_with_good_ones() {
    skip_if_external!("loads the module into a server of its own");
    let server = Server::start_without_module(Server::module_command_options());
    let mut con = server.con();
    assert!(!has_command(&mut con, "ratelimit.check"));
    let module = module_path().to_string_lossy().into_owned();

    for (args, message) in BAD_ARGUMENTS {
        let mut load = vec!["MODULE", "LOAD", module.as_str()];
        load.extend_from_slice(args);
        let error = expect_error(&mut con, &load);
        assert!(error.starts_with("ERR"), "{args:?}: {error}");
        let line = format!("redis-ratelimit not loaded: {message}");
        assert!(
            server.log().contains(&line),
            "{args:?}: the log lacks {line:?}:\n{}",
            server.log()
        );
        assert!(!has_command(&mut con, "ratelimit.check"), "{args:?}");
    }

    let load = [
        "MODULE",
        "LOAD",
        module.as_str(),
        "Default-Algorithm",
        "Gcra",
    ];
    assert_eq!(call(&mut con, &load), Value::Okay);
    // A fresh load starts its counters at zero.
    let counters = info_fields(&mut con, &["ratelimit"]);
    assert_eq!(counters["ratelimit_checks"], "0", "{counters:?}");
    assert_eq!(counters["ratelimit_errors"], "0", "{counters:?}");
    assert_default_is(&mut con, "gcra", "MODULE LOAD ... Default-Algorithm Gcra");
    if let Some(value) = config_get(&mut con, CONFIG) {
        assert_eq!(value, "gcra");
    }

    // MODULE UNLOAD is refused, with the reason in the log, and the module stays.
    check(&mut con, &["before", "1", "1h", "ALGORITHM", "FIXED"]);
    let refused = expect_error(&mut con, &["MODULE", "UNLOAD", "ratelimit"]);
    assert!(refused.starts_with("ERR"), "{refused}");
    let reason = "redis-ratelimit: MODULE UNLOAD refused";
    assert!(
        server.log().contains(reason),
        "the log lacks {reason:?}:\n{}",
        server.log()
    );
    assert!(has_command(&mut con, "ratelimit.check"));
    let d = check(&mut con, &["before", "1", "1h", "ALGORITHM", "FIXED"]);
    assert_eq!(d.allowed, 0, "the limiter kept its state: {d:?}");
}
