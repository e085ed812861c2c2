//! The Lua fallback: `RATELIMIT.CHECK`, `QUOTA`, `RESET`, `ACQUIRE` and `RELEASE` as scripts, for servers without the
//! module.
//!
//! The scripts honour exactly the module's contract: the same decisions (bit-identical to
//! [`ratelimit_core::decide`], with exact bignum arithmetic where a double would round), the same
//! replies and error messages, and the same storage format and absolute expiries. A deployment
//! can therefore switch between the module and the scripts without resetting anyone's limits.
//! An admitted request writes `SET key value PXAT expire_at_ms`, which Redis replicates as an
//! effect, as the module does. They run on Redis 6.2, 7.x and Valkey 8.
//!
//! The commands are one script, `lua/ratelimit.lua`, whose `ARGV[1]` names the command and
//! whose header documents the arguments. It is sent with `EVALSHA`, and with `EVAL` (its whole
//! text) when the server answers `NOSCRIPT`: after a restart, a `SCRIPT FLUSH`, or a failover
//! to a replica that never ran it ([`Lua`]).
//!
//! The clock is the server's `TIME`, in whole milliseconds on servers older than Redis 7.2, as
//! the module reads it there, so that the module and the script see the same instants.

use crate::command::{Command, Reply};
use crate::module::{
    acquired_from_reply, decision_from_reply, multi_from_reply, refund_from_reply,
    windowed_from_reply,
};
use ratelimit_core::{Algorithm, Limit};
use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind, Value};

/// The Lua fallback, `client/lua/ratelimit.lua`: the `RATELIMIT.*` commands as one script for
/// servers without the module, with the module's decisions, replies, errors and storage
/// format. Its header documents its arguments. Other clients can load it too (see the
/// project's README): `SCRIPT LOAD` it once, then `EVALSHA <sha1> 1 <key> check FIXED 10
/// 60000 0 1 0`.
pub const LUA_SCRIPT: &str = include_str!("../lua/ratelimit.lua");

/// Runs the commands as the Lua script inside Redis, with the module's exact contract.
///
/// It holds the script (its SHA1 computed once); it is cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ScriptBackend {
    script: Lua,
}

/// A Lua script sent by its SHA1 (`EVALSHA`), and by its text (`EVAL`) to a server that
/// answers `NOSCRIPT`.
///
/// `EVAL` rather than redis-rs's `SCRIPT LOAD` then `EVALSHA` again: `EVAL` goes where the key
/// lives, as `EVALSHA` did, and caches the script there. In a cluster `SCRIPT LOAD` goes to the
/// nodes the client knows of; during a failover that can miss the replica just promoted, and
/// the second `EVALSHA` fails with `NOSCRIPT` again.
#[derive(Debug, Clone)]
pub(crate) struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    /// The script `code`; its SHA1 is computed here, once.
    pub(crate) fn new(code: &'static str) -> Lua {
        Lua {
            code,
            hash: Script::new(code).get_hash().to_string(),
        }
    }

    /// Runs the script on `keys` and `args`: `EVALSHA`, then `EVAL` after `NOSCRIPT`.
    pub(crate) async fn run<C, T>(
        &self,
        conn: &mut C,
        keys: &[&str],
        args: &[String],
    ) -> RedisResult<T>
    where
        C: ConnectionLike + Send,
        T: FromRedisValue,
    {
        let send = |word: &str, script: &str| {
            let mut cmd = redis::cmd(word);
            cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match send("EVALSHA", &self.hash).query_async(conn).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                send("EVAL", self.code).query_async(conn).await
            }
            answer => answer,
        }
    }
}

impl ScriptBackend {
    /// Prepares the script; nothing is sent to the server yet.
    pub(crate) fn new() -> ScriptBackend {
        ScriptBackend {
            script: Lua::new(LUA_SCRIPT),
        }
    }

    /// Runs `command` with the script, at the server's clock (`TIME`).
    ///
    /// Fails with the server's error when the key holds another type (`WRONGTYPE`), another
    /// algorithm's state or a value that is no limiter state (the module's `ERR` messages),
    /// and on any connection error.
    pub(crate) async fn run<C>(&self, conn: &mut C, command: &Command<'_>) -> RedisResult<Reply>
    where
        C: ConnectionLike + Send,
    {
        let (keys, args) = (command.keys(), arguments(command));
        let script = &self.script;
        match command {
            Command::Check { .. } | Command::Quota { .. } => {
                let reply: Vec<i64> = script.run(conn, &keys, &args).await?;
                Ok(Reply::Decision(decision_from_reply(&reply)?))
            }
            Command::Reset { .. } => {
                let deleted: i64 = script.run(conn, &keys, &args).await?;
                Ok(Reply::Reset(deleted == 1))
            }
            Command::Acquire { .. } => {
                let reply: Vec<Value> = script.run(conn, &keys, &args).await?;
                Ok(Reply::Decision(acquired_from_reply(&reply)?))
            }
            Command::Release { .. } => {
                let released: i64 = script.run(conn, &keys, &args).await?;
                Ok(Reply::Released(released == 1))
            }
            Command::Charge { .. } => {
                let reply: Vec<i64> = script.run(conn, &keys, &args).await?;
                let (decision, window) = windowed_from_reply(&reply)?;
                Ok(Reply::Charged(decision, window))
            }
            Command::MultiCheck { .. } => {
                let reply: redis::Value = script.run(conn, &keys, &args).await?;
                Ok(Reply::MultiCheck(multi_from_reply(reply)?))
            }
            Command::Refund { .. } => {
                let reply: Vec<i64> = script.run(conn, &keys, &args).await?;
                let (refunded, standing) = refund_from_reply(&reply)?;
                Ok(Reply::Refunded(refunded, standing))
            }
        }
    }
}

/// The script's `ARGV` for `command`: `check|quota algorithm limit period_ms burst cost flags`
/// (burst 0 for FIXED and SLIDING; flags 1 for a dry run), or `reset`.
fn arguments(command: &Command<'_>) -> Vec<String> {
    let decide = |word: &str, limit: &Limit, cost: u64, dry_run: bool| {
        let mut args = vec![word.to_string()];
        args.extend(policy(limit, cost));
        args.push(u8::from(dry_run).to_string());
        args
    };
    match *command {
        Command::Check {
            limit,
            cost,
            dry_run,
            ..
        } => decide("check", limit, cost, dry_run),
        // The request QUOTA answers for: one unit, as the module's QUOTA without COST.
        Command::Quota { limit, .. } => decide("quota", limit, 1, true),
        Command::Reset { .. } => vec!["reset".to_string()],
        Command::Acquire {
            limit,
            lease_ms,
            id,
            ..
        } => vec![
            "acquire".to_string(),
            limit.to_string(),
            lease_ms.to_string(),
            id.to_string(),
        ],
        Command::Release { id, .. } => vec!["release".to_string(), id.to_string()],
        // flags: 4 = WITHWINDOW, plus 2 = FORCE.
        Command::Charge {
            limit, cost, force, ..
        } => {
            let mut args = vec!["check".to_string()];
            args.extend(policy(limit, cost));
            args.push((4 + 2 * u8::from(force)).to_string());
            args
        }
        Command::MultiCheck { charges, spend } => {
            let mut args = vec!["mcheck".to_string(), spend.script_flags().to_string()];
            for charge in charges {
                args.extend(policy(charge.limit, charge.cost));
            }
            args
        }
        Command::Refund {
            limit,
            units,
            window,
            ..
        } => {
            let mut args = vec!["refund".to_string()];
            args.extend(policy(limit, units));
            args.push(window.map(|w| w.to_string()).unwrap_or_default());
            args
        }
    }
}

/// `algorithm limit period_ms burst cost`, the script's arguments for one policy (burst 0 for
/// FIXED and SLIDING).
fn policy(limit: &Limit, cost: u64) -> [String; 5] {
    let burst = match limit.algorithm() {
        Algorithm::Gcra => limit.burst(),
        _ => 0,
    };
    [
        limit.algorithm().name().to_string(),
        limit.limit().to_string(),
        limit.period_ms().to_string(),
        burst.to_string(),
        cost.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    /// `lua/ratelimit.lua` is exactly the parts of `lua/bundle.txt`, in order: edit the parts and
    /// run `make lua`.
    #[test]
    fn the_script_is_its_parts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let list = std::fs::read_to_string(dir.join("bundle.txt")).unwrap();
        let parts: String = list
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|name| {
                std::fs::read_to_string(dir.join(name.trim()))
                    .unwrap_or_else(|e| panic!("lua/{name}: {e}"))
            })
            .collect();
        assert!(
            parts == LUA_SCRIPT,
            "lua/ratelimit.lua is not the concatenation of the parts in lua/bundle.txt: run `make lua`"
        );
        assert!(LUA_SCRIPT.contains("local function bn_divmod"));
        assert!(LUA_SCRIPT.contains("redis.call('SET', key, change[2], 'PXAT'"));
    }

    #[test]
    fn passes_the_documented_arguments() {
        let gcra = Limit::new(Algorithm::Gcra, 10, 1000, Some(3)).unwrap();
        let fixed = Limit::new(Algorithm::Fixed, 10, 60_000, None).unwrap();
        let check = Command::Check {
            key: "k",
            limit: &gcra,
            cost: 2,
            dry_run: true,
        };
        assert_eq!(
            arguments(&check),
            ["check", "GCRA", "10", "1000", "3", "2", "1"]
        );
        let quota = Command::Quota {
            key: "k",
            limit: &fixed,
        };
        assert_eq!(
            arguments(&quota),
            ["quota", "FIXED", "10", "60000", "0", "1", "1"]
        );
        assert_eq!(arguments(&Command::Reset { key: "k" }), ["reset"]);
        let acquire = Command::Acquire {
            key: "k",
            limit: 3,
            lease_ms: 30_000,
            id: "a1",
        };
        assert_eq!(arguments(&acquire), ["acquire", "3", "30000", "a1"]);
        let release = Command::Release { key: "k", id: "a1" };
        assert_eq!(arguments(&release), ["release", "a1"]);
    }

    #[test]
    fn passes_the_budget_arguments() {
        use crate::command::{Charge, Spend};
        let gcra = Limit::new(Algorithm::Gcra, 10, 1000, Some(3)).unwrap();
        let fixed = Limit::new(Algorithm::Fixed, 5, 60_000, None).unwrap();
        let charges = [
            Charge {
                key: "a",
                limit: &gcra,
                cost: 1,
            },
            Charge {
                key: "b",
                limit: &fixed,
                cost: 4,
            },
        ];
        let mcheck = Command::MultiCheck {
            charges: &charges,
            spend: Spend::DryRun,
        };
        assert_eq!(
            arguments(&mcheck),
            ["mcheck", "5", "GCRA", "10", "1000", "3", "1", "FIXED", "5", "60000", "0", "4"]
        );
        assert_eq!(mcheck.keys(), ["a", "b"]);
        let charge = Command::Charge {
            key: "k",
            limit: &fixed,
            cost: 7,
            force: true,
        };
        assert_eq!(
            arguments(&charge),
            ["check", "FIXED", "5", "60000", "0", "7", "6"]
        );
        let refund = Command::Refund {
            key: "k",
            limit: &fixed,
            units: 3,
            window: Some(99),
        };
        assert_eq!(
            arguments(&refund),
            ["refund", "FIXED", "5", "60000", "0", "3", "99"]
        );
        let current = Command::Refund {
            key: "k",
            limit: &fixed,
            units: 3,
            window: None,
        };
        assert_eq!(arguments(&current)[6], "");
    }
}
