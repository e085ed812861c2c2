//! RATELIMIT.TOP: the keys a node denied most often, in a bounded summary.
//!
//! - Under a skewed (Zipf) load over 100,000 keys, the summary's top 10 is the true top 10 by
//!   count, in order.
//! - Its memory stays flat from 10^3 to 10^6 distinct denied keys.
//! - Only real denials count (not dry runs, QUOTA, admissions or forced spends); `RESET`,
//!   `top-keys 0` and `CONFIG SET ratelimit.top-keys` behave as documented; it is per node.
mod common;
use common::*;
use std::collections::HashMap;

/// `count` denials, pipelined: a cost above the capacity is always denied and writes nothing.
fn deny(raw: &mut RawConn, keys: impl Iterator<Item = String>) {
    let commands: Vec<Vec<String>> = keys
        .map(|key| {
            ["RATELIMIT.CHECK", &key, "1", "1h", "COST", "2"]
                .map(String::from)
                .to_vec()
        })
        .collect();
    for chunk in commands.chunks(10_000) {
        for reply in raw.pipeline(chunk) {
            assert_eq!(
                reply.five().map(|d| (d[0], d[4])),
                Some((0, -1)),
                "{reply:?}"
            );
        }
    }
}

fn top(con: &mut redis::Connection, count: usize) -> Vec<(String, i64)> {
    let reply: Vec<redis::Value> = redis::cmd("RATELIMIT.TOP").arg(count).query(con).unwrap();
    reply
        .chunks(2)
        .map(|pair| match pair {
            [redis::Value::BulkString(key), redis::Value::Int(n)] => {
                (String::from_utf8(key.clone()).unwrap(), *n)
            }
            other => panic!("not a key and a count: {other:?}"),
        })
        .collect()
}

/// A xorshift generator: the tests' load is reproducible.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A Zipf-like index in 0..n: density about 1/(i + 1).
    fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64
    }
}

#[test]
fn the_top_ten_of_a_zipf_load_is_the_true_top_ten() {
    let server = Server::start();
    let mut raw = server.raw();
    let mut con = server.con();
    // In REDIS_URL mode the server is shared and its summary holds earlier tests' denials.
    call(&mut con, &["RATELIMIT.TOP", "RESET"]);
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut exact: HashMap<String, i64> = HashMap::new();
    let keys: Vec<String> = (0..300_000)
        .map(|_| {
            let key = format!("zipf:{}", rng.zipf(100_000));
            *exact.entry(key.clone()).or_default() += 1;
            key
        })
        .collect();
    deny(&mut raw, keys.into_iter());
    let mut truth: Vec<(String, i64)> = exact.into_iter().collect();
    truth.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let found = top(&mut con, 10);
    let names: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<&str> = truth.iter().take(10).map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, expected, "found {found:?}, truth {:?}", &truth[..10]);
    // Counts are at least the true ones (Space-Saving overestimates, never under).
    for (key, count) in &found {
        let real = truth.iter().find(|(k, _)| k == key).unwrap().1;
        assert!(*count >= real, "{key}: {count} < {real}");
    }
    assert_eq!(dbsize(&mut con), 0, "denials write nothing");
}

#[test]
fn memory_stays_flat_from_a_thousand_to_a_million_denied_keys() {
    let server = Server::start();
    let mut raw = server.raw();
    let mut con = server.con();
    let used = |con: &mut redis::Connection| -> i64 {
        info_value(con, &["INFO", "memory"], "used_memory")
            .unwrap()
            .parse()
            .unwrap()
    };
    deny(&mut raw, (0..1_000).map(|i| format!("flat:{i}")));
    let after_thousand = used(&mut con);
    deny(&mut raw, (1_000..1_000_000).map(|i| format!("flat:{i}")));
    let after_million = used(&mut con);
    // The summary holds its 128 keys from the first thousand on; what moves is the server's own
    // (client buffers, statistics). A summary that kept every key would take tens of megabytes.
    let growth = after_million - after_thousand;
    note(&format!(
        "used_memory after 10^3 denied keys {after_thousand}, after 10^6 {after_million} \
         ({growth:+} bytes)"
    ));
    assert!(growth < 256 * 1024, "memory grew by {growth} bytes");
    assert_eq!(top(&mut con, 200).len(), 128);
}

#[test]
fn only_real_denials_count_and_reset_forgets() {
    let server = Server::start();
    let mut con = server.con();
    // In REDIS_URL mode the server is shared and its summary holds earlier tests' denials.
    call(&mut con, &["RATELIMIT.TOP", "RESET"]);
    let mut call_ok = |args: &[&str]| call(&mut con, args);
    call_ok(&["RATELIMIT.CHECK", "spent", "1", "1h"]);
    for _ in 0..3 {
        call_ok(&["RATELIMIT.CHECK", "spent", "1", "1h"]); // denied
        call_ok(&["RATELIMIT.CHECK", "spent", "1", "1h", "DRYRUN"]);
        call_ok(&["RATELIMIT.QUOTA", "spent", "1", "1h"]);
        call_ok(&["RATELIMIT.CHECK", "forced", "1", "1h", "COST", "5", "FORCE"]);
    }
    call_ok(&[
        "RATELIMIT.MCHECK",
        "2",
        "{m}a",
        "{m}b",
        "LIMIT",
        "1",
        "1h",
        "LIMIT",
        "9",
        "1h",
        "COST",
        "1",
    ]);
    call_ok(&[
        "RATELIMIT.MCHECK",
        "2",
        "{m}a",
        "{m}b",
        "LIMIT",
        "1",
        "1h",
        "LIMIT",
        "9",
        "1h",
    ]);
    call_ok(&["RATELIMIT.ACQUIRE", "lease", "1", "1h", "ID", "x"]);
    call_ok(&["RATELIMIT.ACQUIRE", "lease", "1", "1h", "ID", "y"]);
    let got = top(&mut con, 10);
    assert_eq!(
        got,
        [
            ("spent".to_string(), 3),
            ("lease".to_string(), 1),
            ("{m}a".to_string(), 1)
        ],
        "a denied MCHECK counts the policy that denied, not the one that admitted"
    );
    assert_eq!(
        call(&mut con, &["RATELIMIT.TOP", "RESET"]),
        redis::Value::Okay
    );
    assert!(top(&mut con, 10).is_empty());
    assert_eq!(
        error_text(&call(&mut con, &["RATELIMIT.TOP", "x"])).unwrap(),
        "ERR invalid count 'x': expected an integer from 1 to 100000, or RESET"
    );
    assert!(error_text(&call(&mut con, &["RATELIMIT.TOP", "1", "2"]))
        .unwrap()
        .starts_with("ERR wrong number of arguments"));
}

#[test]
fn the_summary_size_is_a_setting() {
    skip_if_external!("starts servers with module arguments");
    let server = start_with_module_args(&["top-keys", "2"], &[]);
    let mut con = server.con();
    for (key, times) in [("a", 3), ("b", 2), ("c", 1)] {
        for _ in 0..times {
            call(&mut con, &["RATELIMIT.CHECK", key, "1", "1h", "COST", "2"]);
        }
    }
    assert_eq!(top(&mut con, 10).len(), 2);
    assert_eq!(
        info_value(
            &mut con,
            &["INFO", "ratelimit_config"],
            "ratelimit_top_keys"
        )
        .as_deref(),
        Some("2")
    );
    // CONFIG SET resizes it where the server has module configs (7.0+).
    if call(&mut con, &["CONFIG", "SET", "ratelimit.top-keys", "1"]) == redis::Value::Okay {
        assert_eq!(top(&mut con, 10), [("a".to_string(), 3)]);
        call(&mut con, &["CONFIG", "SET", "ratelimit.top-keys", "0"]);
        call(&mut con, &["RATELIMIT.CHECK", "d", "1", "1h", "COST", "2"]);
        assert!(top(&mut con, 10).is_empty(), "0 turns it off");
    }
    drop(server);
    let off = start_with_module_args(&["top-keys", "0"], &[]);
    let mut con = off.con();
    call(&mut con, &["RATELIMIT.CHECK", "a", "1", "1h", "COST", "2"]);
    assert!(top(&mut con, 10).is_empty());
}
