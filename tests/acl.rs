//! ACLs: key patterns apply to the key of every RATELIMIT.* command on every server (the lease
//! commands of issue 11 included); the commands are in `@write`/`@read` and `@fast`, and in
//! `@ratelimit`, where the server lets a module set categories. Features are detected by asking
//! the server (`ACL CAT`), never by its version; a test that cannot run on this server says so
//! on stderr.

mod common;

use common::*;
use redis::Value;

/// The application's commands, sorted (RATELIMIT.TOP, an administrator's, is not among them).
const COMMANDS: [&str; 7] = [
    "ratelimit.acquire",
    "ratelimit.check",
    "ratelimit.mcheck",
    "ratelimit.quota",
    "ratelimit.refund",
    "ratelimit.release",
    "ratelimit.reset",
];

/// The commands of the module in `ACL CAT category`, sorted; `None` when the server does not
/// know the category.
fn ours_in_category(con: &mut redis::Connection, category: &str) -> Option<Vec<String>> {
    match call(con, &["ACL", "CAT", category]) {
        Value::Array(items) => {
            let mut names: Vec<String> = items
                .iter()
                .filter_map(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .filter(|name| name.starts_with("ratelimit."))
                .collect();
            names.sort();
            Some(names)
        }
        Value::ServerError(_) => None,
        other => panic!("ACL CAT {category} answered {other:?}"),
    }
}

fn categories(con: &mut redis::Connection) -> Vec<String> {
    redis::cmd("ACL").arg("CAT").query(con).unwrap()
}

/// `ACL SETUSER name on >pw rules...`, which must succeed.
fn set_user(con: &mut redis::Connection, name: &str, rules: &[&str]) {
    let mut command = vec!["ACL", "SETUSER", name, "on", ">pw"];
    command.extend_from_slice(rules);
    assert_eq!(call(con, &command), Value::Okay, "{}", command.join(" "));
}

/// A new connection authenticated as `name`.
fn login(server: &Server, name: &str) -> redis::Connection {
    let mut con = server.con();
    assert_eq!(call(&mut con, &["AUTH", name, "pw"]), Value::Okay);
    con
}

fn is_noperm(reply: &Value) -> bool {
    error_text(reply).is_some_and(|e| e.starts_with("NOPERM"))
}

/// Each command once, in the order of [`COMMANDS`]: the replies of ACQUIRE, CHECK, MCHECK,
/// QUOTA, REFUND, RELEASE and RESET. The limiter commands use `key`, the lease commands
/// `<key>:lease` (a sorted set, which a limiter command would refuse with WRONGTYPE).
fn each_command(con: &mut redis::Connection, key: &str) -> [Value; 7] {
    let lease = format!("{key}:lease");
    [
        call(con, &["RATELIMIT.ACQUIRE", &lease, "5", "1h", "ID", "a"]),
        call(con, &["RATELIMIT.CHECK", key, "5", "1h"]),
        call(con, &["RATELIMIT.MCHECK", "1", key, "LIMIT", "5", "1h"]),
        call(con, &["RATELIMIT.QUOTA", key, "5", "1h"]),
        call(con, &["RATELIMIT.REFUND", key, "5", "1h", "COST", "1"]),
        call(con, &["RATELIMIT.RELEASE", &lease, "a"]),
        call(con, &["RATELIMIT.RESET", key]),
    ]
}

/// Asserts that `con` may run every command on `allowed_key` and gets NOPERM on `other_key`
/// from each of them.
fn assert_key_pattern_applies(con: &mut redis::Connection, allowed_key: &str, other_key: &str) {
    for (reply, command) in each_command(con, allowed_key).iter().zip(COMMANDS) {
        assert!(
            error_text(reply).is_none(),
            "{command} {allowed_key}: {reply:?}"
        );
    }
    for (reply, command) in each_command(con, other_key).iter().zip(COMMANDS) {
        assert!(is_noperm(reply), "{command} {other_key}: {reply:?}");
    }
}

#[test]
fn key_patterns_apply_to_every_command() {
    skip_if_external!("reads the module's INFO counters, which count from its load");
    let server = Server::start();
    let mut admin = server.con();
    // The README's recipe, which works on every server.
    set_user(
        &mut admin,
        "limiter",
        &[
            "+ratelimit.acquire",
            "+ratelimit.check",
            "+ratelimit.mcheck",
            "+ratelimit.quota",
            "+ratelimit.refund",
            "+ratelimit.release",
            "+ratelimit.reset",
            "~rl:*",
        ],
    );
    let mut con = login(&server, "limiter");
    assert_key_pattern_applies(&mut con, "rl:user:1", "other:user:1");
    assert!(is_noperm(&call(&mut con, &["GET", "rl:user:1"])));
    assert!(is_noperm(&call(&mut con, &["SET", "rl:user:1", "9"])));

    // The server refused those before the module ran: they are not the module's errors.
    let info = info_fields(&mut admin, &["ratelimit"]);
    assert_eq!(info["ratelimit_errors"], "0", "{info:?}");
    assert_eq!(info["ratelimit_checks"], "1", "{info:?}");
    assert_eq!(info["ratelimit_mchecks"], "1", "{info:?}");
    assert_eq!(info["ratelimit_quota_calls"], "1", "{info:?}");
    assert_eq!(info["ratelimit_refunds"], "1", "{info:?}");
    assert_eq!(info["ratelimit_resets"], "1", "{info:?}");
    assert_eq!(info["ratelimit_acquired"], "1", "{info:?}");
    assert_eq!(info["ratelimit_acquire_denied"], "0", "{info:?}");
    assert_eq!(info["ratelimit_releases"], "1", "{info:?}");
    assert_eq!(info["ratelimit_released"], "1", "{info:?}");
    assert!(
        !exists(&mut admin, "other:user:1:lease"),
        "a refused ACQUIRE wrote nothing"
    );
}

#[test]
fn the_commands_join_the_categories_their_flags_stand_for() {
    let server = Server::start();
    let mut admin = server.con();
    let write = ours_in_category(&mut admin, "write").unwrap();
    let read = ours_in_category(&mut admin, "read").unwrap();
    let fast = ours_in_category(&mut admin, "fast").unwrap();
    let has_own = categories(&mut admin).iter().any(|c| c == "ratelimit");
    set_user(&mut admin, "no-writes", &["+@all", "-@write", "~*"]);
    let mut con = login(&server, "no-writes");

    if write.is_empty() && read.is_empty() && fast.is_empty() {
        note(
            "this server puts module commands in no ACL category (no \
             RedisModule_SetCommandACLCategories): -@write does not cover RATELIMIT.CHECK, so \
             grant and deny the commands by name",
        );
        assert!(!has_own, "@ratelimit exists, so categories can be set");
        for reply in each_command(&mut con, "k") {
            assert!(error_text(&reply).is_none(), "{reply:?}");
        }
        return;
    }
    assert_eq!(
        write,
        [
            "ratelimit.acquire",
            "ratelimit.check",
            "ratelimit.mcheck",
            "ratelimit.refund",
            "ratelimit.release",
            "ratelimit.reset"
        ]
    );
    assert_eq!(read, ["ratelimit.quota"]);
    assert_eq!(fast, COMMANDS);
    for (reply, command) in each_command(&mut con, "k").iter().zip(COMMANDS) {
        if command == "ratelimit.quota" {
            assert!(error_text(reply).is_none(), "-@write, {command}: {reply:?}");
        } else {
            assert!(is_noperm(reply), "-@write, {command}: {reply:?}");
        }
    }
}

#[test]
fn the_ratelimit_category_grants_exactly_the_modules_commands() {
    let server = Server::start();
    let mut admin = server.con();
    if !categories(&mut admin).iter().any(|c| c == "ratelimit") {
        note(
            "skipped: ACL CAT does not list ratelimit (no RedisModule_AddACLCategory on \
             this server); grant the commands by name",
        );
        let reply = call(
            &mut admin,
            &["ACL", "SETUSER", "u", "on", ">pw", "+@ratelimit", "~rl:*"],
        );
        assert!(error_text(&reply).is_some(), "{reply:?}");
        return;
    }
    assert_eq!(ours_in_category(&mut admin, "ratelimit").unwrap(), COMMANDS);
    let all: Vec<String> = redis::cmd("ACL")
        .arg("CAT")
        .arg("ratelimit")
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        all.len(),
        COMMANDS.len(),
        "only the module's commands: {all:?}"
    );

    set_user(&mut admin, "u", &["+@ratelimit", "~rl:*"]);
    let mut con = login(&server, "u");
    assert_key_pattern_applies(&mut con, "rl:a", "b");
    assert!(is_noperm(&call(&mut con, &["GET", "rl:a"])));

    set_user(&mut admin, "v", &["+@all", "-@ratelimit", "~*"]);
    let mut con = login(&server, "v");
    for (reply, command) in each_command(&mut con, "rl:a").iter().zip(COMMANDS) {
        assert!(is_noperm(reply), "-@ratelimit, {command}: {reply:?}");
    }
    assert_eq!(call(&mut con, &["GET", "rl:a"]), Value::Nil);
}

/// Issue 10: MCHECK has several keys, and an ACL key pattern applies to each of them, on every
/// server (6.2 finds them through the module's getkeys-api, 7.0+ through its key specs): a user
/// with `~rl:*` may MCHECK `rl:a rl:b` but not `rl:a other:b`, whichever position the foreign
/// key has, dry run or not; and a refused MCHECK spends nothing under its allowed keys.
#[test]
fn key_patterns_apply_to_each_key_of_mcheck() {
    let server = Server::start();
    let mut admin = server.con();
    set_user(&mut admin, "multi", &["+ratelimit.mcheck", "~rl:*"]);
    let mut con = login(&server, "multi");
    let mcheck = |con: &mut redis::Connection, keys: &[&str], extra: &[&str]| -> Value {
        let count = keys.len().to_string();
        let mut args = vec!["RATELIMIT.MCHECK", count.as_str()];
        args.extend_from_slice(keys);
        for _ in keys {
            args.extend(["LIMIT", "5", "1h"]);
        }
        args.extend_from_slice(extra);
        call(con, &args)
    };
    let allowed = mcheck(&mut con, &["rl:a", "rl:b"], &[]);
    assert!(error_text(&allowed).is_none(), "{allowed:?}");
    for keys in [
        &["rl:a", "other:b"][..],
        &["other:a", "rl:b"],
        &["rl:a", "rl:b", "other:c"],
        &["rl:a", "rl:b", "other:c", "rl:d"],
    ] {
        for extra in [&[][..], &["DRYRUN"], &["FORCE", "WITHWINDOW"]] {
            let reply = mcheck(&mut con, keys, extra);
            assert!(is_noperm(&reply), "MCHECK {keys:?} {extra:?}: {reply:?}");
        }
    }
    for key in ["rl:a", "rl:b"] {
        assert_eq!(
            get_text(&mut admin, key),
            "1",
            "{key}: only the allowed MCHECK spent"
        );
    }
    for key in ["other:a", "other:b", "other:c", "rl:d"] {
        assert!(!exists(&mut admin, key), "{key} was written");
    }
}
