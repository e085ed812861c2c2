//! The module's backend: the `RATELIMIT.*` commands, and the detection of whether the module
//! is loaded.

use crate::command::{Charge, Command, MultiReply, Reply, Spend};
use ratelimit_core::{Algorithm, Decision, Limit};
use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

/// Whether the server has the module's commands: `COMMAND INFO ratelimit.check` answers a nil
/// entry for an unknown command (Redis 6.2, 7.x and Valkey alike).
pub(crate) async fn detect<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<bool> {
    let reply: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("ratelimit.check")
        .query_async(conn)
        .await?;
    Ok(match reply {
        Value::Array(entries) => entries.first().is_some_and(|e| *e != Value::Nil),
        _ => false,
    })
}

/// Runs `command` as the module's command of the same name.
///
/// Fails with the server's error when the key holds another type (`WRONGTYPE`), another
/// algorithm's state or a value that is no limiter state, when the module is not loaded
/// (`ERR unknown command`), and on any connection error.
pub(crate) async fn run<C: ConnectionLike + Send>(
    conn: &mut C,
    command: &Command<'_>,
) -> RedisResult<Reply> {
    match *command {
        Command::Check {
            key,
            limit,
            cost,
            dry_run,
        } => {
            let mut cmd = limit_command("RATELIMIT.CHECK", key, limit);
            cmd.arg("COST").arg(cost);
            if dry_run {
                cmd.arg("DRYRUN");
            }
            decide(conn, cmd).await
        }
        Command::Quota { key, limit } => {
            decide(conn, limit_command("RATELIMIT.QUOTA", key, limit)).await
        }
        Command::Reset { key } => {
            let deleted: i64 = redis::cmd("RATELIMIT.RESET")
                .arg(key)
                .query_async(conn)
                .await?;
            Ok(Reply::Reset(deleted == 1))
        }
        Command::Charge {
            key,
            limit,
            cost,
            force,
        } => {
            let mut cmd = limit_command("RATELIMIT.CHECK", key, limit);
            cmd.arg("COST").arg(cost).arg("WITHWINDOW");
            if force {
                cmd.arg("FORCE");
            }
            let reply: Vec<i64> = cmd.query_async(conn).await?;
            let (decision, window) = windowed_from_reply(&reply)?;
            Ok(Reply::Charged(decision, window))
        }
        Command::MultiCheck { charges, spend } => {
            let reply: Value = multi_command(charges, spend).query_async(conn).await?;
            Ok(Reply::MultiCheck(multi_from_reply(reply)?))
        }
        Command::Refund {
            key,
            limit,
            units,
            window,
        } => {
            let mut cmd = limit_command("RATELIMIT.REFUND", key, limit);
            cmd.arg("COST").arg(units);
            if let Some(window) = window {
                cmd.arg("WINDOW").arg(window);
            }
            let reply: Vec<i64> = cmd.query_async(conn).await?;
            let (refunded, standing) = refund_from_reply(&reply)?;
            Ok(Reply::Refunded(refunded, standing))
        }
    }
}

/// `RATELIMIT.MCHECK n key... LIMIT limit <period>ms ALGORITHM a [BURST n] COST c ...
/// [DRYRUN | FORCE] WITHWINDOW`.
fn multi_command(charges: &[Charge<'_>], spend: Spend) -> Cmd {
    let mut cmd = redis::cmd("RATELIMIT.MCHECK");
    cmd.arg(charges.len());
    for charge in charges {
        cmd.arg(charge.key);
    }
    for charge in charges {
        let limit = charge.limit;
        cmd.arg("LIMIT")
            .arg(limit.limit())
            .arg(format!("{}ms", limit.period_ms()))
            .arg("ALGORITHM")
            .arg(limit.algorithm().name());
        if limit.algorithm() == Algorithm::Gcra {
            cmd.arg("BURST").arg(limit.burst());
        }
        cmd.arg("COST").arg(charge.cost);
    }
    match spend {
        Spend::Decided => {}
        Spend::DryRun => {
            cmd.arg("DRYRUN");
        }
        Spend::Force => {
            cmd.arg("FORCE");
        }
    }
    cmd.arg("WITHWINDOW");
    cmd
}

fn unexpected(what: &str, reply: impl std::fmt::Debug) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "the rate limiter replied something else than expected",
        format!("{what}: {reply:?}"),
    ))
}

/// Reads the six integers of `RATELIMIT.CHECK ... WITHWINDOW`: the decision and its window.
pub(crate) fn windowed_from_reply(reply: &[i64]) -> RedisResult<(Decision, u64)> {
    let [five @ .., window] = reply else {
        return Err(unexpected("six integers", reply));
    };
    let window = u64::try_from(*window).map_err(|_| unexpected("a window", reply))?;
    Ok((decision_from_reply(five)?, window))
}

/// Reads `[refunded, limit, remaining, reset_after_ms, retry_after_ms]` of
/// `RATELIMIT.REFUND`: the units given back, and the standing for a request of cost 1.
pub(crate) fn refund_from_reply(reply: &[i64]) -> RedisResult<(u64, Decision)> {
    let &[refunded, limit, remaining, reset_after_ms, retry_after_ms] = reply else {
        return Err(unexpected("five integers", reply));
    };
    let refunded = u64::try_from(refunded).map_err(|_| unexpected("a refund", reply))?;
    let allowed = i64::from(retry_after_ms == 0);
    let standing =
        decision_from_reply(&[allowed, limit, remaining, reset_after_ms, retry_after_ms])?;
    Ok((refunded, standing))
}

/// Reads `[allowed, retry_after_ms, [six integers]...]` of `RATELIMIT.MCHECK ... WITHWINDOW`
/// (the Lua script replies the same).
pub(crate) fn multi_from_reply(reply: Value) -> RedisResult<MultiReply> {
    let Value::Array(items) = reply else {
        return Err(unexpected("an array", reply));
    };
    let integer = |value: &Value| match value {
        Value::Int(n) => Ok(*n),
        other => Err(unexpected("an integer", other)),
    };
    let [allowed, retry_after_ms, policies @ ..] = items.as_slice() else {
        return Err(unexpected("at least two elements", items));
    };
    let (allowed, retry_after_ms) = (integer(allowed)?, integer(retry_after_ms)?);
    if !(0..=1).contains(&allowed) || retry_after_ms < Decision::NEVER || policies.is_empty() {
        return Err(unexpected("allowed and retry_after_ms", items));
    }
    let mut decisions = Vec::with_capacity(policies.len());
    for policy in policies {
        let Value::Array(numbers) = policy else {
            return Err(unexpected("an array per policy", policy));
        };
        let numbers: Vec<i64> = numbers.iter().map(integer).collect::<RedisResult<_>>()?;
        decisions.push(windowed_from_reply(&numbers)?);
    }
    Ok(MultiReply {
        allowed: allowed == 1,
        retry_after_ms,
        decisions,
    })
}

async fn decide<C: ConnectionLike + Send>(conn: &mut C, command: Cmd) -> RedisResult<Reply> {
    let reply: Vec<i64> = command.query_async(conn).await?;
    Ok(Reply::Decision(decision_from_reply(&reply)?))
}

/// `name key limit <period>ms ALGORITHM a [BURST n]`.
fn limit_command(name: &str, key: &str, limit: &Limit) -> Cmd {
    let mut command = redis::cmd(name);
    command
        .arg(key)
        .arg(limit.limit())
        .arg(format!("{}ms", limit.period_ms()))
        .arg("ALGORITHM")
        .arg(limit.algorithm().name());
    if limit.algorithm() == Algorithm::Gcra {
        command.arg("BURST").arg(limit.burst());
    }
    command
}

/// Reads the reply `[allowed, limit, remaining, reset_after_ms, retry_after_ms]` of
/// `RATELIMIT.CHECK`/`QUOTA`, and of the Lua script, which replies the same.
pub(crate) fn decision_from_reply(reply: &[i64]) -> RedisResult<Decision> {
    let unexpected = || {
        RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "the rate limiter replied something else than five integers",
            format!("{reply:?}"),
        ))
    };
    let &[allowed, limit, remaining, reset_after_ms, retry_after_ms] = reply else {
        return Err(unexpected());
    };
    let unsigned = |value: i64| u64::try_from(value).map_err(|_| unexpected());
    if !(0..=1).contains(&allowed) || retry_after_ms < Decision::NEVER {
        return Err(unexpected());
    }
    Ok(Decision {
        allowed: allowed == 1,
        limit: unsigned(limit)?,
        remaining: unsigned(remaining)?,
        reset_after_ms: unsigned(reset_after_ms)?,
        retry_after_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_five_integers() {
        assert_eq!(
            decision_from_reply(&[0, 3, 0, 9984, 9984]).unwrap(),
            Decision {
                allowed: false,
                limit: 3,
                remaining: 0,
                reset_after_ms: 9984,
                retry_after_ms: 9984,
            }
        );
        assert_eq!(
            decision_from_reply(&[0, 3, 0, 5, -1])
                .unwrap()
                .retry_after_ms,
            Decision::NEVER
        );
        for bad in [
            &[1, 2, 3][..],
            &[2, 3, 0, 0, 0],
            &[1, -3, 0, 0, 0],
            &[0, 3, 0, 0, -2],
        ] {
            assert!(decision_from_reply(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builds_the_commands() {
        let gcra = Limit::new(Algorithm::Gcra, 10, 1000, Some(3)).unwrap();
        let packed = limit_command("RATELIMIT.QUOTA", "k", &gcra).get_packed_command();
        let text = String::from_utf8(packed).unwrap();
        let args: Vec<&str> = text
            .split("\r\n")
            .filter(|s| !s.starts_with(['*', '$']))
            .collect();
        assert_eq!(
            args,
            [
                "RATELIMIT.QUOTA",
                "k",
                "10",
                "1000ms",
                "ALGORITHM",
                "GCRA",
                "BURST",
                "3",
                ""
            ]
        );
        let fixed = Limit::new(Algorithm::Fixed, 10, 60_000, None).unwrap();
        let packed = limit_command("RATELIMIT.CHECK", "k", &fixed).get_packed_command();
        assert!(!String::from_utf8(packed).unwrap().contains("BURST"));
    }
}
