//! What the server benchmarks measure, as tables of cases: the throughput lines, the memory
//! lines and the instruction counts all come from here.
//!
//! A case names the commands it needs. When the server lacks one (`COMMAND INFO` answers nil),
//! the case is reported as "not available in this build" instead of failing, so that lines for
//! commands still being written (`RATELIMIT.MCHECK`, `REFUND`, `ACQUIRE` and `RELEASE`) stand in
//! the tables now and measure themselves once the module has them. To add a line, add a case.

use crate::driver::{Template, KEY};
use crate::resp::{Connection, Reply};

/// Distinct keys: each run's keys are numbered `0..KEYSPACE` (`redis-benchmark -r`).
pub const KEYSPACE: u64 = 100_000;
/// Every limiter is configured so that every request is admitted and writes, and no key expires
/// during the run: the module's most expensive path, and the one `INCR` compares with.
pub const LIMIT: &str = "1000000";
/// The limiters' period.
pub const PERIOD: &str = "3650d";
/// The same period in milliseconds, for `PEXPIRE`, `SET ... PX`, `FLOOR.INCR` and the scripts.
pub const PERIOD_MS: &str = "315360000000";

/// How a case's load is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// `redis-benchmark`, whose `__rand_int__` stands for the key: one command naming one key.
    Benchmark,
    /// Our driver (`crate::driver`), for requests of several commands or keys.
    Driver,
}

/// One throughput line, and one column of the instruction counts.
#[derive(Debug, Clone)]
pub struct Case {
    /// A stable name, used by the report and by `--cases`.
    pub id: &'static str,
    /// What the table calls it.
    pub label: String,
    /// Who sends it.
    pub sender: Sender,
    /// One request: its commands, where `KEY` stands for the request's key number.
    pub request: Vec<String>,
    /// What makes each key before a run, in the same form: by default, the request itself.
    pub fill: Vec<String>,
    /// The commands whose `INFO commandstats` time is the request's time inside commands.
    pub stats: Vec<String>,
    /// Commands the server must have for this case to run.
    pub requires: Vec<String>,
    /// The share of a run's default number of requests this case sends: slow lines send fewer.
    pub weight: f64,
    /// Another case (by id) this one is compared with, in the same round.
    pub against: Option<&'static str>,
    /// Commands run once before the case's runs (and before its fill), e.g. a `CONFIG SET`;
    /// when one fails, the case is not available on this server.
    pub setup: Vec<String>,
    /// Commands run after the case's runs, to put back what `setup` changed.
    pub teardown: Vec<String>,
}

impl Case {
    fn new(id: &'static str, label: &str, sender: Sender, request: &[&str]) -> Case {
        let request: Vec<String> = request.iter().map(|c| c.to_string()).collect();
        let mut stats: Vec<String> = request
            .iter()
            .filter_map(|c| c.split_whitespace().next())
            .map(str::to_lowercase)
            .collect();
        stats.dedup();
        let requires = stats
            .iter()
            .filter(|c| c.starts_with("ratelimit.") || c.starts_with("floor."))
            .cloned()
            .collect();
        Case {
            id,
            label: label.into(),
            sender,
            fill: request.clone(),
            request,
            stats,
            requires,
            weight: 1.0,
            against: None,
            setup: Vec::new(),
            teardown: Vec::new(),
        }
    }

    fn setup(mut self, setup: &[&str], teardown: &[&str]) -> Case {
        self.setup = setup.iter().map(|c| c.to_string()).collect();
        self.teardown = teardown.iter().map(|c| c.to_string()).collect();
        self
    }

    fn fill(mut self, commands: &[&str]) -> Case {
        self.fill = commands.iter().map(|c| c.to_string()).collect();
        self
    }

    fn weight(mut self, weight: f64) -> Case {
        self.weight = weight;
        self
    }

    fn against(mut self, id: &'static str) -> Case {
        self.against = Some(id);
        self
    }

    fn stats(mut self, stats: &[&str]) -> Case {
        self.stats = stats.iter().map(|c| c.to_string()).collect();
        self
    }

    /// The cluster figures' request: `RATELIMIT.CHECK FIXED`, admitted and writing, on keys
    /// that are the bare 12-digit numbers (so that a key's slot is that of its number).
    pub fn cluster_check() -> Case {
        Case::new(
            "cluster-check",
            "RATELIMIT.CHECK FIXED",
            Sender::Driver,
            &[&format!("RATELIMIT.CHECK KEY {LIMIT} {PERIOD}")],
        )
    }

    /// The request, for our driver.
    pub fn template(&self) -> Template {
        Template::new(&self.request.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The request that makes each key, for our driver.
    pub fn fill_template(&self) -> Template {
        Template::new(&self.fill.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The request as `redis-benchmark`'s arguments, `KEY` written `__rand_int__`. `None` for a
    /// request of several commands or keys: `redis-benchmark` gives each `__rand_int__` its own
    /// number.
    pub fn benchmark_args(&self) -> Option<Vec<String>> {
        let [command] = self.request.as_slice() else {
            return None;
        };
        if command.matches(KEY).count() != 1 {
            return None;
        }
        Some(
            command
                .split_whitespace()
                .map(|word| word.replace(KEY, "__rand_int__"))
                .collect(),
        )
    }

    /// The commands of [`Case::requires`] the server lacks, and the setup commands it refuses
    /// (the setup is undone at once).
    pub fn missing(&self, conn: &mut Connection) -> Vec<String> {
        let mut missing: Vec<String> = self
            .requires
            .iter()
            .filter(|command| !has_command(conn, command))
            .cloned()
            .collect();
        if missing.is_empty() {
            missing.extend(self.run_setup(conn).err());
            let _ = self.run_teardown(conn);
        }
        missing
    }

    /// Runs [`Case::setup`]; fails with the first command the server refuses.
    pub fn run_setup(&self, conn: &mut Connection) -> Result<(), String> {
        run_all(conn, &self.setup)
    }

    /// Runs [`Case::teardown`]; fails with the first command the server refuses.
    pub fn run_teardown(&self, conn: &mut Connection) -> Result<(), String> {
        run_all(conn, &self.teardown)
    }
}

fn run_all(conn: &mut Connection, commands: &[String]) -> Result<(), String> {
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        match conn.command(&words) {
            Ok(Reply::Error(_)) | Err(_) => return Err(command.clone()),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Whether the server has `command`: `COMMAND INFO` answers nil for an unknown one.
pub fn has_command(conn: &mut Connection, command: &str) -> bool {
    match conn.command(&["COMMAND", "INFO", command]) {
        Ok(Reply::Array(Some(entries))) => {
            matches!(entries.first(), Some(Reply::Array(Some(_))))
        }
        _ => false,
    }
}

/// The throughput lines, in table order. `sha` is the SHA1 of the client's Lua script, loaded.
pub fn throughput(sha: &str) -> Vec<Case> {
    use Sender::{Benchmark, Driver};
    let check = |extra: &str| format!("RATELIMIT.CHECK KEY {LIMIT} {PERIOD}{extra}");
    let lua = |algorithm: &str| {
        format!("EVALSHA {sha} 1 KEY check {algorithm} {LIMIT} {PERIOD_MS} 0 1 0")
    };
    // Three and eight FIXED policies of one user: keys that share a hash tag, as MCHECK needs.
    let tagged = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("rl:{{u{KEY}}}:{}", (b'a' + i as u8) as char))
            .collect()
    };
    let mcheck = |n: usize| {
        let keys = tagged(n).join(" ");
        let policies = vec![format!("LIMIT {LIMIT} {PERIOD}"); n].join(" ");
        format!("RATELIMIT.MCHECK {n} {keys} {policies}")
    };
    let checks3: Vec<String> = tagged(3)
        .iter()
        .map(|key| format!("RATELIMIT.CHECK {key} {LIMIT} {PERIOD}"))
        .collect();
    let checks3: Vec<&str> = checks3.iter().map(String::as_str).collect();
    vec![
        Case::new("incr", "INCR", Benchmark, &["INCR KEY"]),
        // The same INCR on keys that were given a TTL first, as a limiter's key always has one:
        // the expiry lookup that any key with a TTL costs.
        Case::new(
            "incr-ttl",
            "INCR, keys with a TTL",
            Benchmark,
            &["INCR KEY"],
        )
        .fill(&[&format!("SET KEY 0 PX {PERIOD_MS}")]),
        Case::new(
            "floor",
            "FLOOR.INCR (the floor)",
            Benchmark,
            &[&format!("FLOOR.INCR KEY {PERIOD_MS}")],
        ),
        Case::new(
            "check-fixed",
            "RATELIMIT.CHECK FIXED",
            Benchmark,
            &[&check("")],
        ),
        Case::new(
            "check-sliding",
            "RATELIMIT.CHECK SLIDING",
            Benchmark,
            &[&check(" ALGORITHM SLIDING")],
        ),
        Case::new(
            "check-gcra",
            "RATELIMIT.CHECK GCRA",
            Benchmark,
            &[&check(" ALGORITHM GCRA")],
        ),
        Case::new(
            "lua-fixed",
            "Lua FIXED (EVALSHA)",
            Benchmark,
            &[&lua("FIXED")],
        )
        .weight(0.2),
        Case::new(
            "lua-sliding",
            "Lua SLIDING (EVALSHA)",
            Benchmark,
            &[&lua("SLIDING")],
        )
        .weight(0.2),
        Case::new("lua-gcra", "Lua GCRA (EVALSHA)", Benchmark, &[&lua("GCRA")]).weight(0.2),
        Case::new("driver-incr", "INCR", Driver, &["INCR KEY"]),
        Case::new(
            "driver-multi",
            "MULTI INCRBY PEXPIRE NX PTTL EXEC (the seed's transaction)",
            Driver,
            &[
                "MULTI",
                "INCRBY KEY 1",
                &format!("PEXPIRE KEY {PERIOD_MS} NX"),
                "PTTL KEY",
                "EXEC",
            ],
        )
        // EXEC's time includes the commands it runs (checked on 7.0: EXEC's µs/call is more
        // than the sum of INCRBY's, PEXPIRE's and PTTL's).
        .stats(&["multi", "exec"])
        .weight(0.5),
        Case::new(
            "driver-check",
            "RATELIMIT.CHECK FIXED",
            Driver,
            &[&check("")],
        ),
        Case::new(
            "driver-check3",
            "3 × RATELIMIT.CHECK FIXED, pipelined (3 keys of one user)",
            Driver,
            &checks3,
        )
        .weight(0.4),
        Case::new(
            "mcheck-1",
            "RATELIMIT.MCHECK, 1 FIXED policy",
            Driver,
            &[&mcheck(1)],
        )
        .against("driver-check"),
        Case::new(
            "mcheck-3",
            "RATELIMIT.MCHECK, 3 FIXED policies",
            Driver,
            &[&mcheck(3)],
        )
        .against("driver-check3")
        .weight(0.5),
        Case::new(
            "mcheck-8",
            "RATELIMIT.MCHECK, 8 FIXED policies",
            Driver,
            &[&mcheck(8)],
        )
        .weight(0.3),
        Case::new(
            "check-refund",
            "RATELIMIT.CHECK FIXED + RATELIMIT.REFUND COST 1",
            Driver,
            &[
                &check(""),
                &format!("RATELIMIT.REFUND KEY {LIMIT} {PERIOD} COST 1"),
            ],
        )
        // Filled by a CHECK alone, so that each key holds a count of 1 that the pairs move to 2
        // and back: a refund to 0 deletes the key, and the pairs would measure its creation.
        .fill(&[&check("")])
        .against("driver-check")
        .weight(0.5),
        // With an explicit ID, then the RELEASE of it: the key is created and deleted by each
        // pair (a release of the last lease removes the sorted set).
        Case::new(
            "acquire-release",
            "RATELIMIT.ACQUIRE ID + RATELIMIT.RELEASE",
            Driver,
            &[
                &format!("RATELIMIT.ACQUIRE KEY {LIMIT} 60s ID r1"),
                "RATELIMIT.RELEASE KEY r1",
            ],
        )
        .weight(0.5),
        // The same pair through the client's Lua fallback (its `acquire` and `release`).
        Case::new(
            "lua-acquire-release",
            "Lua acquire ID + release (EVALSHA)",
            Driver,
            &[
                &format!("EVALSHA {sha} 1 KEY acquire {LIMIT} 60000 r1"),
                &format!("EVALSHA {sha} 1 KEY release r1"),
            ],
        )
        .against("acquire-release")
        .weight(0.2),
        // Denied CHECKs: each key's one unit is spent by the fill, so every measured CHECK is
        // denied and writes nothing, with the heavy-hitters summary of RATELIMIT.TOP on (its
        // default size, 128) and then off. Every key is denied as often as any other, so the
        // summary churns: its most expensive case.
        Case::new(
            "denied-notop",
            "RATELIMIT.CHECK denied, RATELIMIT.TOP off (top-keys 0)",
            Driver,
            &[&format!("RATELIMIT.CHECK KEY 1 {PERIOD}")],
        )
        .setup(
            &["CONFIG SET ratelimit.top-keys 0"],
            &["CONFIG SET ratelimit.top-keys 128"],
        )
        .against("driver-check"),
        Case::new(
            "denied-top",
            "RATELIMIT.CHECK denied, RATELIMIT.TOP on (top-keys 128)",
            Driver,
            &[&format!("RATELIMIT.CHECK KEY 1 {PERIOD}")],
        )
        .setup(
            &["CONFIG SET ratelimit.top-keys 128", "RATELIMIT.TOP RESET"],
            &[],
        )
        .against("denied-notop"),
    ]
}

/// The lines of the instruction counts, all sent by our driver: ids of [`throughput`]'s cases.
pub const CALLGRIND: &[&str] = &[
    "incr",
    "floor",
    "check-fixed",
    "check-sliding",
    "check-gcra",
    "mcheck-1",
    "mcheck-3",
    "mcheck-8",
    "check-refund",
    "acquire-release",
];

/// One line of the memory table.
#[derive(Debug, Clone)]
pub struct MemoryCase {
    /// A stable name.
    pub id: &'static str,
    /// What the table calls it.
    pub label: String,
    /// What writes one key number's keys, `KEY` standing for the number.
    pub fill: Vec<String>,
    /// How many key numbers: `KEYSPACE`, or fewer for the heavy lines.
    pub numbers: u64,
    /// The keys each key number makes.
    pub keys_per_number: u64,
    /// Whether the fill is sent a second time, to see what a key's second write does to it.
    pub twice: bool,
    /// Commands the server must have for this line.
    pub requires: Vec<String>,
}

impl MemoryCase {
    fn new(id: &'static str, label: &str, fill: Vec<String>) -> MemoryCase {
        let requires = fill
            .iter()
            .filter_map(|c| c.split_whitespace().next())
            .map(str::to_lowercase)
            .filter(|c| c.starts_with("ratelimit.") || c.starts_with("floor."))
            .fold(Vec::new(), |mut all, c| {
                if !all.contains(&c) {
                    all.push(c);
                }
                all
            });
        MemoryCase {
            id,
            label: label.into(),
            fill,
            numbers: KEYSPACE,
            keys_per_number: 1,
            twice: true,
            requires,
        }
    }

    /// The fill, for our driver.
    pub fn template(&self) -> Template {
        Template::new(&self.fill.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The keys it makes in all.
    pub fn keys(&self) -> u64 {
        self.numbers * self.keys_per_number
    }
}

/// The memory lines, in table order. Keys are 12-digit numbers (`000000012345`), as
/// `redis-benchmark`'s `__rand_int__` writes them.
pub fn memory(sha: &str) -> Vec<MemoryCase> {
    let one = |command: String| vec![command];
    let lua = |algorithm: &str| {
        one(format!(
            "EVALSHA {sha} 1 KEY check {algorithm} {LIMIT} {PERIOD_MS} 0 1 0"
        ))
    };
    let check = |extra: &str| one(format!("RATELIMIT.CHECK KEY {LIMIT} {PERIOD}{extra}"));
    let leases = |n: u64| -> Vec<String> {
        (1..=n)
            .map(|id| format!("RATELIMIT.ACQUIRE KEY {LIMIT} {PERIOD} ID {id}"))
            .collect()
    };
    let mut lines = vec![
        MemoryCase::new(
            "incr-pexpire",
            "INCR + PEXPIRE (a counter with a TTL)",
            vec!["INCR KEY".into(), format!("PEXPIRE KEY {PERIOD_MS}")],
        ),
        MemoryCase::new(
            "set-1",
            "SET KEY 1 PX",
            one(format!("SET KEY 1 PX {PERIOD_MS}")),
        ),
        MemoryCase::new(
            "set-16",
            "SET KEY <16-digit integer> PX (a GCRA-sized value)",
            one(format!("SET KEY 1795965551084001 PX {PERIOD_MS}")),
        ),
        MemoryCase::new(
            "floor",
            "FLOOR.INCR (the floor)",
            one(format!("FLOOR.INCR KEY {PERIOD_MS}")),
        ),
        MemoryCase::new("check-fixed", "RATELIMIT.CHECK FIXED", check("")),
        MemoryCase::new(
            "check-sliding",
            "RATELIMIT.CHECK SLIDING",
            check(" ALGORITHM SLIDING"),
        ),
        MemoryCase::new(
            "check-gcra",
            "RATELIMIT.CHECK GCRA",
            check(" ALGORITHM GCRA"),
        ),
        MemoryCase::new("lua-fixed", "Lua FIXED (EVALSHA)", lua("FIXED")),
        MemoryCase::new("lua-sliding", "Lua SLIDING (EVALSHA)", lua("SLIDING")),
        MemoryCase::new("lua-gcra", "Lua GCRA (EVALSHA)", lua("GCRA")),
        MemoryCase {
            keys_per_number: 3,
            ..MemoryCase::new(
                "mcheck-3",
                "RATELIMIT.MCHECK, 3 FIXED policies, per key (20-character names `rl:{u<number>}:a`)",
                one(format!(
                    "RATELIMIT.MCHECK 3 rl:{{u{KEY}}}:a rl:{{u{KEY}}}:b rl:{{u{KEY}}}:c \
                     LIMIT {LIMIT} {PERIOD} LIMIT {LIMIT} {PERIOD} LIMIT {LIMIT} {PERIOD}"
                )),
            )
        },
    ];
    for (n, numbers) in [(1, KEYSPACE), (10, KEYSPACE), (100, KEYSPACE / 10)] {
        let id = match n {
            1 => "lease-1",
            10 => "lease-10",
            _ => "lease-100",
        };
        lines.push(MemoryCase {
            numbers,
            twice: false,
            ..MemoryCase::new(
                id,
                &format!(
                    "RATELIMIT.ACQUIRE: a lease key with {n} lease{}",
                    if n == 1 { "" } else { "s" }
                ),
                leases(n),
            )
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_well_formed() {
        let cases = throughput("0123");
        for case in &cases {
            if case.sender == Sender::Benchmark {
                assert!(case.benchmark_args().is_some(), "{}", case.id);
            }
            if let Some(against) = case.against {
                assert!(cases.iter().any(|c| c.id == against), "{}", case.id);
            }
            assert!(!case.stats.is_empty());
        }
        for id in CALLGRIND {
            assert!(cases.iter().any(|c| c.id == *id), "{id}");
        }
        let mcheck = cases.iter().find(|c| c.id == "mcheck-3").unwrap();
        assert_eq!(mcheck.requires, ["ratelimit.mcheck"]);
        assert_eq!(
            mcheck.request[0],
            "RATELIMIT.MCHECK 3 rl:{uKEY}:a rl:{uKEY}:b rl:{uKEY}:c LIMIT 1000000 3650d \
             LIMIT 1000000 3650d LIMIT 1000000 3650d"
        );
        let refund = cases.iter().find(|c| c.id == "check-refund").unwrap();
        assert_eq!(refund.requires, ["ratelimit.check", "ratelimit.refund"]);
        assert_eq!(
            cases
                .iter()
                .find(|c| c.id == "floor")
                .unwrap()
                .benchmark_args(),
            Some(vec![
                "FLOOR.INCR".to_string(),
                "__rand_int__".into(),
                PERIOD_MS.into()
            ])
        );
        // TOP on is compared with TOP off, which puts back the default size after its runs.
        let top = cases.iter().find(|c| c.id == "denied-top").unwrap();
        assert_eq!(top.against, Some("denied-notop"));
        let off = cases.iter().find(|c| c.id == "denied-notop").unwrap();
        assert_eq!(off.setup, ["CONFIG SET ratelimit.top-keys 0"]);
        assert_eq!(off.teardown, ["CONFIG SET ratelimit.top-keys 128"]);
        // The Lua pair is the module's pair, through the script.
        let lua = cases
            .iter()
            .find(|c| c.id == "lua-acquire-release")
            .unwrap();
        assert_eq!(lua.against, Some("acquire-release"));
        assert_eq!(
            lua.request[0],
            "EVALSHA 0123 1 KEY acquire 1000000 60000 r1"
        );
        assert_eq!(lua.request[1], "EVALSHA 0123 1 KEY release r1");
        assert!(lua.requires.is_empty());
        let memory = memory("0123");
        let leases = memory.iter().find(|m| m.id == "lease-100").unwrap();
        assert_eq!(leases.fill.len(), 100);
        assert_eq!(leases.requires, ["ratelimit.acquire"]);
    }
}
