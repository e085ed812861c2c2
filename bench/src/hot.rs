//! Hot keys: one key checked again and again by one process, through `RedisStore::check` with
//! and without a local batch, and through the in-process `LocalLimiter` for the cost of a check
//! that never leaves the process.
//!
//! Every check is admitted (the limit is 10^15 per 3650 days), so that the figures are those of
//! the check path, not of denials. Redis's command counts come from `INFO commandstats`
//! (`ratelimit.check` and `ratelimit.refund`) around each run.

use crate::Server;
use ratelimit_client::{Config, Limit, LocalLimiter, RedisStore};
use std::time::{Duration, Instant};

/// The batch of the batched line.
pub const BATCH: u64 = 100;

/// One way of checking the hot key.
#[derive(Debug, Clone, Copy)]
pub struct HotLine {
    /// Checks per second, one task checking in turn.
    pub checks_per_second: f64,
    /// Nanoseconds per check.
    pub ns_per_check: f64,
    /// Redis commands per admitted check.
    pub commands_per_check: f64,
}

/// The three lines.
#[derive(Debug, Clone, Copy)]
pub struct HotKey {
    /// `RedisStore::check`, every check a round trip.
    pub unbatched: HotLine,
    /// `RedisStore::check` of the limit `with_local_batch(BATCH)`.
    pub batched: HotLine,
    /// `RedisStore::check` served from the share alone: a batch larger than the run and an
    /// hour's hold, so no check of the run leaves the process.
    pub share_only: HotLine,
    /// `LocalLimiter::check` of the same key and limit, no Redis at all.
    pub local: HotLine,
    /// Checks per run.
    pub checks: u64,
}

fn commands(server: &Server) -> u64 {
    let mut conn = server.connect();
    let stats = conn
        .command(&["INFO", "commandstats"])
        .ok()
        .and_then(|reply| reply.text())
        .unwrap_or_default();
    ["ratelimit.check", "ratelimit.refund"]
        .iter()
        .map(|name| {
            stats
                .lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn line(started: Instant, checks: u64, commands: u64) -> HotLine {
    let seconds = started.elapsed().as_secs_f64();
    HotLine {
        checks_per_second: checks as f64 / seconds,
        ns_per_check: seconds * 1e9 / checks as f64,
        commands_per_check: commands as f64 / checks as f64,
    }
}

/// Measures `checks` checks of each line against `server` (the unbatched line with a tenth of
/// them: each is a round trip).
pub fn measure(server: &Server, checks: u64) -> HotKey {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let limit = Limit::fixed(1_000_000_000_000_000, Duration::from_secs(3650 * 86_400))
        .expect("a valid limit");
    let batched_limit = limit.with_local_batch(BATCH).expect("a valid batch");
    runtime.block_on(async {
        let store = RedisStore::new(Config::new(server.url())).expect("a store");
        store.ping().await.expect("Redis answers");
        let holding =
            RedisStore::new(Config::new(server.url()).share_hold(Duration::from_secs(3600)))
                .expect("a store");
        holding.ping().await.expect("Redis answers");
        let run = |store: &RedisStore, limit: Limit, checks: u64| {
            let store = store.clone();
            async move {
                // Warm up: the connection, the backend, the key's share.
                for _ in 0..1_000 {
                    store
                        .check("bench:hot", &limit, 1)
                        .await
                        .expect("a decision");
                }
                let before = commands(server);
                let started = Instant::now();
                for _ in 0..checks {
                    let decision = store
                        .check("bench:hot", &limit, 1)
                        .await
                        .expect("a decision");
                    assert!(decision.is_admitted());
                }
                let elapsed = line(started, checks, 0);
                let after = commands(server);
                HotLine {
                    commands_per_check: (after - before) as f64 / checks as f64,
                    ..elapsed
                }
            }
        };
        let unbatched = run(&store, limit, checks / 10).await;
        let batched = run(&store, batched_limit, checks).await;
        let whole_run = limit
            .with_local_batch(checks + 1_000)
            .expect("a valid batch");
        let share_only = run(&holding, whole_run, checks).await;
        let local = {
            let limiter = LocalLimiter::new(1000);
            for _ in 0..1_000 {
                limiter.check("bench:hot", &limit, 1).expect("a decision");
            }
            let started = Instant::now();
            for _ in 0..checks {
                let decision = limiter.check("bench:hot", &limit, 1).expect("a decision");
                assert!(decision.is_admitted());
            }
            line(started, checks, 0)
        };
        HotKey {
            unbatched,
            batched,
            share_only,
            local,
            checks,
        }
    })
}
