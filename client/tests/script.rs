//! The Lua fallback against real servers, driven as any client would drive it: the one script,
//! `LUA_SCRIPT` (`client/lua/ratelimit.lua`), with the arguments its header documents.
//!
//! - `script_matches_core_exactly`: with the test clock, thousands of random request sequences
//!   over all three algorithms, huge and tiny configurations and arbitrary stored states; every
//!   reply must equal `ratelimit_core::decide`'s, and every stored value and absolute expiry
//!   `Update`'s, bit for bit.
//! - `module_and_script_agree_on_the_real_clock`: the same sequence against `RATELIMIT.CHECK` and
//!   the script on one server.
//! - `handover_keeps_state`: a key written by the module continues under the script, and back.
//! - `errors_match_the_module`: other-algorithm, not-a-limiter and `WRONGTYPE` replies, with
//!   nothing written.
//!
//! Environment: `REDIS_SERVER` (default `redis-server`), `RATELIMIT_MODULE` (default the release
//! build of this workspace, needed by all but the first test: run `cargo build --release`),
//! `RATELIMIT_SEED` to replay a random run and `RATELIMIT_SCRIPT_SEQUENCES` (sequences per worker,
//! 160 by default) for a longer soak of the first test.

mod common;

use common::Server;
use ratelimit_core::{
    decide, decide_all, quota, refund, Algorithm, Change, Decision, Limit, Policy, State,
    MAX_COUNT, MAX_PERIOD_MS,
};
use redis::aio::MultiplexedConnection;
use redis::RedisResult;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// The latest test clock: Lua numbers are exact below 2^53.
const MAX_NOW_US: u64 = (1 << 53) - 1;
const GCRA_MODULUS: u64 = 1 << 62;

// Helpers ---------------------------------------------------------------------------------------

/// SplitMix64: small, seedable and good enough to pick test cases.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        match (high - low).checked_add(1) {
            Some(n) => low + self.below(n),
            None => self.next(),
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn seed() -> u64 {
    std::env::var("RATELIMIT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn limit(algorithm: Algorithm, limit: u64, period_ms: u64, burst: Option<u64>) -> Limit {
    Limit::new(algorithm, limit, period_ms, burst).unwrap()
}

async fn server_now_us(conn: &mut MultiplexedConnection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    seconds * 1_000_000 + micros
}

/// The key's value and absolute expiry (-1 without one, -2 when absent), and whether the expiry
/// is exact: servers without PEXPIRETIME (Redis 6.2) give it as TIME + PTTL, which can be 1 ms
/// off.
async fn stored(conn: &mut MultiplexedConnection, key: &str) -> (Option<Vec<u8>>, i64, bool) {
    let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    let (at, exact) = expire_time(conn, key).await;
    (value, at, exact)
}

/// The key's absolute expiry in ms (-1 without one, -2 when absent), and whether it is exact.
async fn expire_time(conn: &mut MultiplexedConnection, key: &str) -> (i64, bool) {
    match redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async::<i64>(conn)
        .await
    {
        Ok(at) => (at, true),
        Err(e) if e.to_string().contains("unknown command") => {
            let (seconds, micros, ttl): (i64, i64, i64) = redis::Script::new(
                "local t = redis.call('TIME') \
                 return {tonumber(t[1]), tonumber(t[2]), redis.call('PTTL', KEYS[1])}",
            )
            .key(key)
            .invoke_async(conn)
            .await
            .unwrap();
            let at = if ttl < 0 {
                ttl
            } else {
                seconds * 1000 + micros / 1000 + ttl
            };
            (at, false)
        }
        Err(e) => panic!("PEXPIRETIME {key}: {e}"),
    }
}

/// Whether two absolute expiries agree: exactly, or within 50 ms when one was derived from
/// TIME + PTTL, which a loaded machine can separate by several milliseconds.
fn same_expiry(a: i64, b: i64, exact: bool) -> bool {
    a == b || (!exact && a >= 0 && b >= 0 && a.abs_diff(b) <= 50)
}

/// The module's `RATELIMIT.CHECK`, as five integers.
async fn module_check(
    conn: &mut MultiplexedConnection,
    key: &str,
    limit: &Limit,
    cost: u64,
    dry_run: bool,
) -> redis::RedisResult<Decision> {
    let mut command = redis::cmd("RATELIMIT.CHECK");
    command
        .arg(key)
        .arg(limit.limit())
        .arg(format!("{}ms", limit.period_ms()))
        .arg("ALGORITHM")
        .arg(limit.algorithm().name());
    if limit.algorithm() == Algorithm::Gcra {
        command.arg("BURST").arg(limit.burst());
    }
    command.arg("COST").arg(cost);
    if dry_run {
        command.arg("DRYRUN");
    }
    let [allowed, capacity, remaining, reset, retry]: [i64; 5] = command
        .query_async::<Vec<i64>>(conn)
        .await?
        .try_into()
        .unwrap();
    Ok(Decision {
        allowed: allowed == 1,
        limit: capacity as u64,
        remaining: remaining as u64,
        reset_after_ms: reset as u64,
        retry_after_ms: retry,
    })
}

/// The error's code and message, as the client sees them.
fn error_text(error: &redis::RedisError) -> (Option<String>, Option<String>) {
    (
        error.code().map(str::to_owned),
        error.detail().map(str::to_owned),
    )
}

// Script vs core, exact -------------------------------------------------------------------------
//
// The test clock can be far from the server's clock, while Redis expires keys by its own clock.
// Each sequence therefore starts its clock 10 s ahead of the server's (read with TIME; a sequence
// takes milliseconds) and only moves it forward: every expiry written is at or after the test
// clock, so it is in the server's future and the server never removes a key on its own while the
// sequence runs. Expiry at the test clock is simulated instead, exactly as the server would do
// it: before each request, a key whose expiry is before the test clock (`now_ms > expire_at_ms`)
// is deleted, in the reference and on the server. A key whose expiry equals the test clock stays,
// as on a real server. Other states a server could hold (older or newer windows, arbitrary
// counts and arrival times, keys without expiry or with an expiry that disagrees with the value)
// are injected with SET.

/// The script's source, invoked directly to force its bignum path (`ARGV[9]`).
fn exact_path_script() -> redis::Script {
    redis::Script::new(ratelimit_client::LUA_SCRIPT)
}

/// The script as its header documents it: `EVALSHA sha 1 key check ALGORITHM limit period_ms
/// burst cost flags [now_us]` and `EVALSHA sha 1 key reset`.
struct ScriptBackend(redis::Script);

impl ScriptBackend {
    fn new() -> ScriptBackend {
        ScriptBackend(redis::Script::new(ratelimit_client::LUA_SCRIPT))
    }

    /// `check` at the server's clock.
    async fn check(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
    ) -> RedisResult<Decision> {
        self.run_check(conn, key, limit, cost, dry_run, None).await
    }

    /// `check` at the test clock `now_us`: the script's decisions use it, while Redis still
    /// expires keys by its own clock.
    async fn check_at(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
        now_us: u64,
    ) -> RedisResult<Decision> {
        assert!(now_us <= MAX_NOW_US);
        self.run_check(conn, key, limit, cost, dry_run, Some(now_us))
            .await
    }

    async fn run_check(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
        now_us: Option<u64>,
    ) -> RedisResult<Decision> {
        // Burst 0 means the limit; FIXED and SLIDING take no burst.
        let burst = match limit.algorithm() {
            Algorithm::Gcra => limit.burst(),
            _ => 0,
        };
        let mut invocation = self.0.key(key);
        invocation
            .arg("check")
            .arg(limit.algorithm().name())
            .arg(limit.limit())
            .arg(limit.period_ms())
            .arg(burst)
            .arg(cost)
            .arg(u8::from(dry_run));
        if let Some(now_us) = now_us {
            invocation.arg(now_us);
        }
        let [allowed, capacity, remaining, reset, retry]: [i64; 5] = invocation
            .invoke_async::<Vec<i64>>(conn)
            .await?
            .try_into()
            .expect("five integers");
        Ok(Decision {
            allowed: allowed == 1,
            limit: capacity as u64,
            remaining: remaining as u64,
            reset_after_ms: reset as u64,
            retry_after_ms: retry,
        })
    }

    /// `reset`: whether there was a state.
    async fn reset(&self, conn: &mut MultiplexedConnection, key: &str) -> RedisResult<bool> {
        let deleted: i64 = self.0.key(key).arg("reset").invoke_async(conn).await?;
        Ok(deleted == 1)
    }
}

fn interesting_limits() -> Vec<Limit> {
    use Algorithm::*;
    let mut limits = Vec::new();
    for algorithm in [Fixed, Sliding, Gcra] {
        for (count, period_ms) in [
            (MAX_COUNT, 1),
            (MAX_COUNT, MAX_PERIOD_MS),
            (3, 10_000),
            (1, 1),
            (1, MAX_PERIOD_MS),
            (100, 60_000),
            (7, 60_000),
            (1_000_000, DAY_MS),
            (999_999_999_999_989, HOUR_MS),
            (999_983, 30 * DAY_MS),
        ] {
            limits.push(limit(algorithm, count, period_ms, None));
        }
    }
    for (count, period_ms, burst) in [
        (999_983, 30 * DAY_MS, MAX_COUNT),
        (MAX_COUNT, 1, 1),
        (1, MAX_PERIOD_MS, MAX_COUNT),
        (5, 1000, MAX_COUNT),
        (7, MAX_PERIOD_MS, MAX_COUNT),
        (100, 60_000, 1),
        (3, 10_000, 50),
        // (burst + 1) * K near 2^60, where K is lowered: exactly 2^60 (kept), and 2^60 + 24,
        // which a double rounds to 2^60 (lowered).
        (125, 137_438_953_472, (1 << 20) - 1),
        (1, 14_481_573_419, 79_612),
        (1, 14_481_573_419, 79_611),
    ] {
        limits.push(limit(Gcra, count, period_ms, Some(burst)));
    }
    limits
}

fn random_count(rng: &mut Rng) -> u64 {
    match rng.below(7) {
        0 => rng.between(1, 10),
        1 => rng.between(1, 1000),
        2 => rng.between(1, 1_000_000),
        3 => rng.between(1, MAX_COUNT),
        4 => MAX_COUNT,
        5 => rng.pick(&[999_983, 999_999_999_999_989, 7, 13, 1 << 40]),
        _ => rng.between(1, 100),
    }
}

fn random_limit(rng: &mut Rng, interesting: &[Limit]) -> Limit {
    if rng.chance(40) {
        return rng.pick(interesting);
    }
    let algorithm = rng.pick(&[Algorithm::Fixed, Algorithm::Sliding, Algorithm::Gcra]);
    let period_ms = match rng.below(7) {
        0 => rng.between(1, 1000),
        1 => 1000 * rng.between(1, 3600),
        2 => 60_000 * rng.between(1, 1440),
        3 => DAY_MS * rng.between(1, 3650),
        4 => MAX_PERIOD_MS,
        5 => rng.between(1, MAX_PERIOD_MS),
        _ => rng.pick(&[1, 1000, 60_000, HOUR_MS, DAY_MS, 30 * DAY_MS]),
    };
    let burst = (algorithm == Algorithm::Gcra && rng.chance(50)).then(|| random_count(rng));
    limit(algorithm, random_count(rng), period_ms, burst)
}

fn random_cost(rng: &mut Rng, capacity: u64, last_remaining: u64) -> u64 {
    let cost = match rng.below(20) {
        0 | 1 => 0,
        2..=8 => 1,
        9..=11 => rng.between(2, 10),
        12..=14 => capacity - 1 + rng.below(3),
        15 | 16 => (last_remaining + rng.below(3)).saturating_sub(1),
        17 | 18 => rng.between(0, capacity),
        _ => rng.between(0, MAX_COUNT),
    };
    cost.min(MAX_COUNT)
}

/// GCRA's `now` in units, as its floor modulo 2^62, and `K` (mirrors the core's unit system,
/// only to aim injected states near the present).
fn gcra_now_floor(limit: &Limit, now_us: u64) -> (u64, u128) {
    fn gcd(a: u128, b: u128) -> u128 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let p = u128::from(limit.period_us());
    let count = u128::from(limit.limit());
    let exact = p / gcd(count, p);
    let span = u128::from(limit.burst()) + 1;
    let k = if span * exact <= 1 << 60 {
        exact
    } else {
        (1 << 60) / span
    };
    let scaled = u128::from(now_us) * count;
    let (whole, rest) = (scaled / p, (scaled % p) * k);
    let m = u128::from(GCRA_MODULUS);
    ((((whole % m) * k + rest / p) % m) as u64, k)
}

/// Canonical digits: the only spelling of a stored number that every implementation reads.
fn digits(_rng: &mut Rng, value: u64) -> String {
    value.to_string()
}

/// A random valid state of `limit`'s algorithm, and an expiry at or after `now_us` (or none).
fn random_state(
    rng: &mut Rng,
    limit: &Limit,
    now_us: u64,
    previous: Option<&State>,
) -> (String, Option<u64>) {
    let now_ms = now_us / 1000;
    let capacity = limit.capacity();
    let count = |rng: &mut Rng| match rng.below(8) {
        0 => 0,
        1 => rng.between(0, capacity),
        2 => capacity,
        3 => capacity + 1,
        4 => rng.between(0, 2 * capacity),
        5 => rng.next() >> 1,
        6 => u64::MAX,
        _ => rng.between(0, 10),
    };
    // GCRA trusts a value only when it agrees with the key's expiry: keep the held expiry for
    // values near the held one, so that both branches of that check are exercised.
    let mut keep_expiry = None;
    let value = match limit.algorithm() {
        Algorithm::Fixed => {
            let c = count(rng).min(i64::MAX as u64);
            digits(rng, c)
        }
        Algorithm::Sliding => {
            let current = now_us / limit.period_us();
            let window = match rng.below(8) {
                0 | 1 => current,
                2 | 3 => current - 1,
                4 => current - 2,
                5 => current + 1 + rng.below(3),
                6 => rng.pick(&[0, u64::MAX, (1 << 53) + 1]),
                _ => rng.next(),
            };
            let (previous, current) = (count(rng), count(rng));
            format!(
                "s:{}:{}:{}",
                digits(rng, window),
                digits(rng, previous),
                digits(rng, current)
            )
        }
        Algorithm::Gcra => {
            let (now_floor, k) = gcra_now_floor(limit, now_us);
            let span = (u128::from(capacity) + 1) * k;
            let near = |offset: i128| {
                (i128::from(now_floor) + offset).rem_euclid(i128::from(GCRA_MODULUS)) as u64
            };
            let tat = match rng.below(8) {
                0 => near(rng.below(span as u64 + 2) as i128),
                1 => near(-(rng.below(span as u64 + 2) as i128)),
                2 => near(rng.pick(&[0, 1, -1, span as i128 - k as i128, span as i128])),
                3 => rng.next() % GCRA_MODULUS,
                4 => rng.pick(&[0, GCRA_MODULUS - 1, 1 << 53, (1 << 53) - 1]),
                5 => near(rng.pick(&[1 << 61, (1 << 61) - 1, -(1 << 61)])),
                _ => match previous {
                    Some(State::Gcra(s)) => {
                        keep_expiry = s.expire_at_ms;
                        let delta = rng.below(2 * k as u64 + 1) as i128 - k as i128;
                        (i128::from(s.tat) + delta).rem_euclid(i128::from(GCRA_MODULUS)) as u64
                    }
                    _ => near(rng.below(span as u64) as i128),
                },
            };
            format!("-{}", digits(rng, tat + 1))
        }
    };
    let expiry = match rng.below(4) {
        _ if keep_expiry.is_some() && rng.chance(80) => keep_expiry,
        0 => None,
        1 => Some(now_ms),
        _ => Some(now_ms + rng.below(3 * limit.period_ms() + 1)),
    };
    (value, expiry.map(|e| e.min(MAX_NOW_US / 1000)))
}

#[derive(Default)]
struct Counts {
    sequences: u64,
    checks: u64,
    allowed: u64,
    denied: u64,
    forced: u64,
    forced_exact: u64,
    repaired: u64,
    quotas: u64,
    refunds: u64,
    resets: u64,
    injected: u64,
    refused: u64,
    expired: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.sequences += other.sequences;
        self.checks += other.checks;
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.forced += other.forced;
        self.forced_exact += other.forced_exact;
        self.repaired += other.repaired;
        self.quotas += other.quotas;
        self.refunds += other.refunds;
        self.resets += other.resets;
        self.injected += other.injected;
        self.refused += other.refused;
        self.expired += other.expired;
    }
}

/// The script invoked directly with `ARGV`, after the command word and before the test clock and
/// the flag that forces the bignum path.
async fn invoke(
    conn: &mut MultiplexedConnection,
    script: &redis::Script,
    keys: &[&str],
    command: &str,
    argv: &[String],
    now_us: u64,
    exact: bool,
) -> redis::RedisResult<redis::Value> {
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(*key);
    }
    invocation.arg(command);
    for arg in argv {
        invocation.arg(arg);
    }
    invocation.arg(now_us).arg(u8::from(exact));
    invocation.invoke_async(conn).await
}

/// A policy's four script arguments: algorithm, limit, period in ms, burst.
fn policy_args(limit: &Limit) -> Vec<String> {
    vec![
        limit.algorithm().name().to_string(),
        limit.limit().to_string(),
        limit.period_ms().to_string(),
        limit.burst().to_string(),
    ]
}

fn integers(value: &redis::Value) -> Vec<i64> {
    match value {
        redis::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                redis::Value::Int(n) => *n,
                other => panic!("not an integer: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn decision_array(d: &Decision) -> Vec<i64> {
    vec![
        i64::from(d.allowed),
        d.limit as i64,
        d.remaining as i64,
        d.reset_after_ms as i64,
        d.retry_after_ms,
    ]
}

/// Makes `change` to the reference copy of the key, as the server would.
fn apply(held: &mut Option<(Vec<u8>, Option<u64>)>, change: Change) {
    match change {
        Change::Keep => {}
        Change::Store(update) => {
            *held = Some((
                update.state.encode().as_bytes().to_vec(),
                Some(update.expire_at_ms),
            ))
        }
        Change::Expire(at) => {
            if let Some((_, expiry)) = held.as_mut() {
                *expiry = Some(at);
            }
        }
        Change::Delete => *held = None,
    }
}

/// A value that is no limiter's state although it looks like one: a non-canonical number.
fn non_canonical(rng: &mut Rng) -> String {
    let n = rng.between(0, 1_000_000);
    let spellings = [
        format!("0{n}"),
        format!("-0{}", n + 1),
        format!("+{n}"),
        format!(" {n}"),
        format!("{n} "),
        format!("s:0{n}:1:2"),
        format!("s:{n}:01:2"),
        format!("s:{n}:1:00"),
    ];
    spellings[rng.below(spellings.len() as u64) as usize].clone()
}

// The sequence's whole context is spelled out rather than bundled: each piece is used once.
#[allow(clippy::too_many_arguments)]
async fn exact_sequence(
    conn: &mut MultiplexedConnection,
    backend: &ScriptBackend,
    exact_path: &redis::Script,
    rng: &mut Rng,
    limit: Limit,
    key: &str,
    counts: &mut Counts,
) {
    let period_us = limit.period_us();
    let mut now = server_now_us(conn).await + 10_000_000 + rng.below(period_us.min(1 << 40));
    // The reference: what the server holds, and when it expires.
    let mut held: Option<(Vec<u8>, Option<u64>)> = None;
    let mut last: Option<Decision> = None;
    // The windows of earlier spends, for refunds that name one.
    let mut windows: Vec<u64> = Vec::new();
    let mut log = vec![format!("{limit:?}, key {key}")];
    let steps = rng.between(1, 24);
    for _ in 0..steps {
        let step = match rng.below(10) {
            0 | 1 => 0,
            2 => rng.between(1, 1000),
            3 => rng.below(period_us),
            4 => period_us - now % period_us + rng.below(3) - 1,
            5 => match &held {
                Some((_, Some(at))) => {
                    (at * 1000 + rng.pick(&[0, 1, 999, 1000, 1001])).saturating_sub(now)
                }
                _ => rng.below(1000),
            },
            6 => rng.below(3 * period_us),
            7 => rng.below(50 * period_us.min(1_000_000)),
            _ => match last {
                Some(d) if d.retry_after_ms > 0 && rng.chance(70) => d.retry_after_ms as u64 * 1000,
                Some(d) => d.reset_after_ms * 1000,
                None => rng.below(period_us),
            },
        };
        // Never beyond 2^53 µs, whatever the steps: leave headroom for the rest of the sequence.
        now += step.min((MAX_NOW_US - now) / 32);
        if let Some((_, Some(at))) = held {
            if now / 1000 > at {
                redis::cmd("DEL").arg(key).exec_async(conn).await.unwrap();
                held = None;
                counts.expired += 1;
            }
        }
        let state = held
            .as_ref()
            .map(|(value, at)| State::decode(value, *at).expect("a valid state"));
        let exact = rng.chance(30);
        let capacity = limit.capacity();
        match rng.below(100) {
            0..=3 => {
                let existed = backend.reset(conn, key).await.unwrap();
                log.push(format!("@{now} RESET -> {existed}"));
                assert_eq!(existed, held.is_some(), "{}", log.join("\n"));
                held = None;
                counts.resets += 1;
            }
            4..=11 => {
                let (value, at) = random_state(rng, &limit, now, state.as_ref());
                let mut set = redis::cmd("SET");
                set.arg(key).arg(&value);
                if let Some(at) = at {
                    set.arg("PXAT").arg(at);
                }
                set.exec_async(conn).await.unwrap();
                log.push(format!("@{now} SET {value} PXAT {at:?}"));
                held = Some((value.into_bytes(), at));
                counts.injected += 1;
            }
            12 => {
                // No limiter's state: refused, and left as it is.
                let value = non_canonical(rng);
                redis::cmd("SET")
                    .arg(key)
                    .arg(&value)
                    .exec_async(conn)
                    .await
                    .unwrap();
                let error = backend
                    .check_at(conn, key, &limit, 1, false, now)
                    .await
                    .expect_err("not a limiter");
                assert_eq!(
                    error_text(&error).1.as_deref(),
                    Some("the key holds a value that is not a rate limiter state"),
                    "{value:?}"
                );
                assert!(State::decode(value.as_bytes(), None).is_err(), "{value:?}");
                let (stored_value, _, _) = stored(conn, key).await;
                assert_eq!(stored_value, Some(value.into_bytes()));
                redis::cmd("DEL").arg(key).exec_async(conn).await.unwrap();
                held = None;
                counts.refused += 1;
            }
            13..=22 => {
                let cost = random_cost(rng, capacity, last.map_or(capacity, |d| d.remaining));
                let expected = quota(&limit, state.as_ref(), now, cost).unwrap();
                let mut argv = policy_args(&limit);
                argv.extend([cost.to_string(), "0".to_string()]);
                let reply = invoke(conn, exact_path, &[key], "quota", &argv, now, exact).await;
                let actual = integers(&reply.unwrap());
                log.push(format!("@{now} QUOTA cost {cost} -> {actual:?}"));
                assert_eq!(actual, decision_array(&expected), "{}", log.join("\n"));
                counts.quotas += 1;
            }
            23..=34 => {
                // A refund to no window, to the window of an earlier spend, or to any.
                let window = match rng.below(4) {
                    0 => None,
                    1 | 2 if !windows.is_empty() => {
                        Some(windows[rng.below(windows.len() as u64) as usize])
                    }
                    _ => {
                        let any = rng.next();
                        Some(rng.pick(&[0, u64::MAX, any, now / period_us]))
                    }
                };
                let amount = random_cost(rng, capacity, capacity);
                let expected = refund(&limit, state.as_ref(), now, amount, window).unwrap();
                let mut argv = policy_args(&limit);
                argv.extend([
                    amount.to_string(),
                    window.map_or(String::new(), |w| w.to_string()),
                ]);
                let reply = invoke(conn, exact_path, &[key], "refund", &argv, now, exact).await;
                let actual = integers(&reply.unwrap());
                log.push(format!(
                    "@{now} REFUND {amount} window {window:?} -> {actual:?}"
                ));
                let mut want = decision_array(&expected.standing);
                want[0] = expected.refunded as i64;
                assert_eq!(actual, want, "{}", log.join("\n"));
                apply(&mut held, expected.change);
                counts.refunds += 1;
            }
            _ => {
                let cost = random_cost(rng, capacity, last.map_or(capacity, |d| d.remaining));
                let dry_run = rng.chance(15);
                let force = !dry_run && rng.chance(15);
                let with_window = rng.chance(30);
                let outcome = decide(&limit, state.as_ref(), now, cost, force).unwrap();
                let expected = outcome.decision;
                let actual = if exact || force || with_window {
                    let flags = u8::from(dry_run) + 2 * u8::from(force) + 4 * u8::from(with_window);
                    let mut argv = policy_args(&limit);
                    argv.extend([cost.to_string(), flags.to_string()]);
                    let reply = invoke(conn, exact_path, &[key], "check", &argv, now, exact).await;
                    let mut reply = integers(&reply.unwrap());
                    if with_window {
                        let window = reply.pop().unwrap();
                        assert_eq!(window as u64, outcome.window, "{}", log.join("\n"));
                    }
                    if exact {
                        counts.forced_exact += 1;
                    }
                    Decision {
                        allowed: reply[0] == 1,
                        limit: reply[1] as u64,
                        remaining: reply[2] as u64,
                        reset_after_ms: reply[3] as u64,
                        retry_after_ms: reply[4],
                    }
                } else {
                    backend
                        .check_at(conn, key, &limit, cost, dry_run, now)
                        .await
                        .unwrap()
                };
                log.push(format!(
                    "@{now} CHECK cost {cost} dry {dry_run} force {force} exact-path {exact} -> {actual:?}"
                ));
                assert_eq!(actual, expected, "{}", log.join("\n"));
                counts.checks += 1;
                if expected.allowed {
                    counts.allowed += 1;
                } else {
                    counts.denied += 1;
                }
                if force {
                    counts.forced += 1;
                }
                if !dry_run {
                    if matches!(outcome.change, Change::Store(_)) {
                        windows.push(outcome.window);
                    }
                    if matches!(outcome.change, Change::Expire(_) | Change::Delete) {
                        counts.repaired += 1;
                    }
                    apply(&mut held, outcome.change);
                }
                last = Some(expected);
            }
        }
        let (value, at, exact) = stored(conn, key).await;
        let expected = match &held {
            None => (None, -2),
            Some((value, at)) => (Some(value.clone()), at.map_or(-1, |at| at as i64)),
        };
        assert_eq!(value, expected.0, "stored state\n{}", log.join("\n"));
        assert!(
            same_expiry(at, expected.1, exact),
            "stored expiry {at}, expected {}\n{}",
            expected.1,
            log.join("\n")
        );
    }
    counts.sequences += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_matches_core_exactly() {
    let server = Server::start(false);
    let seed = seed();
    println!("RATELIMIT_SEED={seed}");
    let interesting = interesting_limits();
    let workers = 16;
    // RATELIMIT_SCRIPT_SEQUENCES scales the run up for a longer soak.
    let sequences_per_worker: u64 = std::env::var("RATELIMIT_SCRIPT_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(160);
    // Without PEXPIRETIME (Redis 6.2) the script reads a key's expiry with PTTL read before and
    // after TIME, which is exact (limiter.lua): every algorithm is compared on every server.
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let mut conn = server.con().await;
        let interesting = interesting.clone();
        tasks.push(tokio::spawn(async move {
            let backend = ScriptBackend::new();
            let exact_path = exact_path_script();
            let mut rng = Rng(seed ^ (worker * 0x1234_5678_9abc_def1));
            let mut counts = Counts::default();
            for sequence in 0..sequences_per_worker {
                // Every interesting configuration at least once, then random ones.
                let index = (worker * sequences_per_worker + sequence) as usize;
                let limit = match interesting.get(index) {
                    Some(limit) => *limit,
                    None => random_limit(&mut rng, &interesting),
                };
                let key = format!("exact:{worker}:{sequence}");
                exact_sequence(
                    &mut conn,
                    &backend,
                    &exact_path,
                    &mut rng,
                    limit,
                    &key,
                    &mut counts,
                )
                .await;
            }
            counts
        }));
    }
    let mut total = Counts::default();
    for task in tasks {
        match task.await {
            Ok(counts) => total.add(&counts),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    println!(
        "{} sequences, {} checks ({} allowed, {} denied, {} forced, {} on the forced bignum \
         path, {} repairs of keys without expiry), {} quotas, {} refunds, {} resets, {} injected \
         states, {} non-canonical values refused, {} simulated expiries",
        total.sequences,
        total.checks,
        total.allowed,
        total.denied,
        total.forced,
        total.forced_exact,
        total.repaired,
        total.quotas,
        total.refunds,
        total.resets,
        total.injected,
        total.refused,
        total.expired
    );
    assert!(total.checks > 10_000 && total.allowed > 3000 && total.denied > 3000);
    assert!(total.forced > 500 && total.repaired > 100 && total.quotas > 3000);
    assert!(total.refunds > 3000 && total.refused > 100);
}

/// MCHECK: sequences over three keys with random limits and states, each request compared with
/// `ratelimit_core::decide_all` (reply, and every key's value and expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_mcheck_matches_core_exactly() {
    let server = Server::start(false);
    let seed = seed();
    println!("RATELIMIT_SEED={seed}");
    let interesting = interesting_limits();
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let mut conn = server.con().await;
        let interesting = interesting.clone();
        tasks.push(tokio::spawn(async move {
            let script = exact_path_script();
            let mut rng = Rng(seed ^ (worker * 0x0fed_cba9_8765_4321));
            let (mut requests, mut admitted) = (0u64, 0u64);
            for sequence in 0..40 {
                let n = rng.between(1, 3) as usize;
                let limits: Vec<Limit> = (0..n)
                    .map(|_| random_limit(&mut rng, &interesting))
                    .collect();
                let keys: Vec<String> = (0..n)
                    .map(|i| format!("{{m{worker}:{sequence}}}:{i}"))
                    .collect();
                let names: Vec<&str> = keys.iter().map(String::as_str).collect();
                let shortest = limits.iter().map(Limit::period_us).min().unwrap();
                let mut now = server_now_us(&mut conn).await + 10_000_000;
                let mut held: Vec<Option<(Vec<u8>, Option<u64>)>> = vec![None; n];
                let mut log = vec![format!("{limits:?}")];
                for _ in 0..rng.between(1, 16) {
                    now += match rng.below(4) {
                        0 => 0,
                        1 => rng.below(shortest),
                        2 => rng.below(3 * shortest),
                        _ => rng.below(1_000_000),
                    }
                    .min((MAX_NOW_US - now) / 32);
                    for (key, slot) in keys.iter().zip(held.iter_mut()) {
                        if let Some((_, Some(at))) = slot {
                            if now / 1000 > *at {
                                redis::cmd("DEL")
                                    .arg(key)
                                    .exec_async(&mut conn)
                                    .await
                                    .unwrap();
                                *slot = None;
                            }
                        }
                    }
                    // Sometimes a key holds a state written by hand, with or without expiry.
                    if rng.chance(20) {
                        let i = rng.below(n as u64) as usize;
                        let state = held[i]
                            .as_ref()
                            .map(|(v, at)| State::decode(v, *at).unwrap());
                        let (value, at) = random_state(&mut rng, &limits[i], now, state.as_ref());
                        let mut set = redis::cmd("SET");
                        set.arg(&keys[i]).arg(&value);
                        if let Some(at) = at {
                            set.arg("PXAT").arg(at);
                        }
                        set.exec_async(&mut conn).await.unwrap();
                        log.push(format!("@{now} SET {} {value} PXAT {at:?}", keys[i]));
                        held[i] = Some((value.into_bytes(), at));
                    }
                    let states: Vec<Option<State>> = held
                        .iter()
                        .map(|h| h.as_ref().map(|(v, at)| State::decode(v, *at).unwrap()))
                        .collect();
                    let costs: Vec<u64> = limits
                        .iter()
                        .map(|l| random_cost(&mut rng, l.capacity(), l.capacity() / 2))
                        .collect();
                    let dry_run = rng.chance(15);
                    let force = !dry_run && rng.chance(20);
                    let with_window = rng.chance(30);
                    let policies: Vec<Policy<'_>> = limits
                        .iter()
                        .zip(&states)
                        .zip(&costs)
                        .map(|((limit, state), cost)| Policy {
                            limit,
                            state: state.as_ref(),
                            cost: *cost,
                        })
                        .collect();
                    let expected = decide_all(&policies, now, force).unwrap();
                    let flags = u8::from(dry_run) + 2 * u8::from(force) + 4 * u8::from(with_window);
                    let mut argv = vec![flags.to_string()];
                    for (limit, cost) in limits.iter().zip(&costs) {
                        argv.extend(policy_args(limit));
                        argv.push(cost.to_string());
                    }
                    let exact = rng.chance(30);
                    let reply = invoke(&mut conn, &script, &names, "mcheck", &argv, now, exact)
                        .await
                        .unwrap();
                    let redis::Value::Array(items) = reply else {
                        panic!("not an array: {reply:?}");
                    };
                    log.push(format!(
                        "@{now} MCHECK {costs:?} dry {dry_run} force {force} -> {items:?}"
                    ));
                    let context = log.join("\n");
                    assert_eq!(items.len(), 2 + n, "{context}");
                    assert_eq!(
                        (&items[0], &items[1]),
                        (
                            &redis::Value::Int(i64::from(expected.allowed)),
                            &redis::Value::Int(expected.retry_after_ms)
                        ),
                        "{context}"
                    );
                    for (i, outcome) in expected.outcomes.iter().enumerate() {
                        let mut want = decision_array(&outcome.decision);
                        if with_window {
                            want.push(outcome.window as i64);
                        }
                        assert_eq!(integers(&items[2 + i]), want, "{context}: policy {i}");
                        if !dry_run {
                            apply(&mut held[i], outcome.change);
                        }
                    }
                    requests += 1;
                    admitted += u64::from(expected.allowed);
                    for (i, key) in keys.iter().enumerate() {
                        let (value, at, exact) = stored(&mut conn, key).await;
                        let want = match &held[i] {
                            None => (None, -2),
                            Some((v, at)) => (Some(v.clone()), at.map_or(-1, |at| at as i64)),
                        };
                        assert_eq!(value, want.0, "{context}: key {i}");
                        assert!(same_expiry(at, want.1, exact), "{context}: key {i} {at}");
                    }
                }
            }
            (requests, admitted)
        }));
    }
    let (mut requests, mut admitted) = (0, 0);
    for task in tasks {
        match task.await {
            Ok((r, a)) => {
                requests += r;
                admitted += a;
            }
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    println!("{requests} MCHECK requests compared, {admitted} admitted");
    assert!(requests > 1000 && admitted > 200 && requests - admitted > 200);
}

/// ACQUIRE and RELEASE: random sequences on the test clock, each reply compared with the
/// in-memory model `ratelimit_core::lease::LeaseSet` (the local limiter's), and the sorted set and
/// its expiry compared with the model's after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_leases_match_the_model_exactly() {
    let server = Server::start(false);
    let seed = seed();
    println!("RATELIMIT_SEED={seed}");
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        let mut conn = server.con().await;
        tasks.push(tokio::spawn(async move {
            let script = exact_path_script();
            let mut rng = Rng(seed ^ (worker * 0x1357_9bdf_2468_ace0));
            let (mut granted, mut denied, mut released) = (0u64, 0u64, 0u64);
            for sequence in 0..60 {
                let key = format!("lease:{worker}:{sequence}");
                let limit = rng.between(1, 4);
                let mut now = server_now_us(&mut conn).await + 10_000_000;
                let mut model = ratelimit_core::lease::LeaseSet::new();
                let mut log = vec![format!("limit {limit}")];
                for _ in 0..rng.between(1, 30) {
                    let (short, long) = (rng.below(300_000), rng.below(3_000_000));
                    now += rng.pick(&[0, 1, 999, 1000, short, long]);
                    let id: Option<Vec<u8>> = match rng.below(3) {
                        0 => None,
                        _ => Some(format!("h{}", rng.below(6)).into_bytes()),
                    };
                    // The expiries the script writes are absolute, from the test clock: the
                    // server must not expire them first, so the clock only moves forward.
                    if rng.chance(70) {
                        let lease_ms = rng.pick(&[1, 50, 300, 1000, 5000]);
                        let (expected, expected_id) =
                            model.acquire(limit, lease_ms, now, id.as_deref());
                        let argv = vec![
                            limit.to_string(),
                            lease_ms.to_string(),
                            id.as_ref()
                                .map_or(String::new(), |i| String::from_utf8_lossy(i).into()),
                        ];
                        let reply =
                            invoke_clock(&mut conn, &script, &key, "acquire", &argv, now).await;
                        let redis::Value::Array(items) = reply else {
                            panic!("not an array: {reply:?}")
                        };
                        log.push(format!("@{now} ACQUIRE {id:?} {lease_ms} -> {items:?}"));
                        let context = log.join("\n");
                        assert_eq!(
                            integers(&redis::Value::Array(items[..5].to_vec())),
                            decision_array(&expected),
                            "{context}"
                        );
                        match (&items[5], expected_id) {
                            (redis::Value::BulkString(got), Some(want)) => {
                                assert_eq!(got, &want, "{context}");
                                granted += 1;
                            }
                            (redis::Value::Nil, None) => denied += 1,
                            (got, want) => panic!("id {got:?}, expected {want:?}\n{context}"),
                        }
                    } else {
                        let id = id.unwrap_or_else(|| b"h0".to_vec());
                        let expected = model.release(&id, now / 1000);
                        let argv = vec![String::from_utf8_lossy(&id).into_owned()];
                        let reply =
                            invoke_clock(&mut conn, &script, &key, "release", &argv, now).await;
                        log.push(format!("@{now} RELEASE {id:?} -> {reply:?}"));
                        assert_eq!(
                            reply,
                            redis::Value::Int(i64::from(expected)),
                            "{}",
                            log.join("\n")
                        );
                        released += u64::from(expected);
                    }
                    // The set and the key's expiry, as the model holds them. Members expired at
                    // the test clock may still be in both until the next command removes them.
                    let stored: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let mut want: Vec<(Vec<u8>, f64)> = model
                        .leases(0)
                        .map(|(i, e)| (i.to_vec(), e as f64))
                        .collect();
                    let mut got = stored.clone();
                    got.sort_by(|a, b| a.0.cmp(&b.0));
                    want.sort_by(|a, b| a.0.cmp(&b.0));
                    assert_eq!(got, want, "{}", log.join("\n"));
                    let (at, exact) = expire_time(&mut conn, &key).await;
                    let want_at = model.expire_at_ms().map_or(-2, |e| e as i64);
                    assert!(
                        same_expiry(at, want_at, exact),
                        "expiry {at} vs {want_at}\n{}",
                        log.join("\n")
                    );
                }
            }
            (granted, denied, released)
        }));
    }
    let (mut granted, mut denied, mut released) = (0, 0, 0);
    for task in tasks {
        match task.await {
            Ok((g, d, r)) => {
                granted += g;
                denied += d;
                released += r;
            }
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    println!("{granted} leases granted or renewed, {denied} denied, {released} released");
    assert!(granted > 500 && denied > 100 && released > 50);
}

/// The script with `ARGV` after the command word, then the test clock only.
async fn invoke_clock(
    conn: &mut MultiplexedConnection,
    script: &redis::Script,
    key: &str,
    command: &str,
    argv: &[String],
    now_us: u64,
) -> redis::Value {
    let mut invocation = script.prepare_invoke();
    invocation.key(key).arg(command);
    for arg in argv {
        invocation.arg(arg);
    }
    invocation.arg(now_us);
    invocation.invoke_async(conn).await.unwrap()
}

/// ACQUIRE and RELEASE through the module and the script on one server, with long leases and
/// explicit IDs, so that their two clocks a few milliseconds apart cannot change a reply.
#[tokio::test]
async fn module_and_script_leases_agree_on_the_real_clock() {
    let server = Server::start(true);
    let mut conn = server.con().await;
    let script = exact_path_script();
    let mut rng = Rng(seed());
    let mut compared = 0;
    for round in 0..20 {
        let (module_key, script_key) = (format!("ml:{round}"), format!("sl:{round}"));
        let limit = rng.between(1, 4);
        for _ in 0..20 {
            let id = format!("h{}", rng.below(6));
            if rng.chance(70) {
                let module: redis::Value = redis::cmd("RATELIMIT.ACQUIRE")
                    .arg(&module_key)
                    .arg(limit)
                    .arg("1h")
                    .arg("ID")
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let script: redis::Value = script
                    .key(&script_key)
                    .arg("acquire")
                    .arg(limit)
                    .arg(3_600_000)
                    .arg(&id)
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
                let (redis::Value::Array(m), redis::Value::Array(s)) = (&module, &script) else {
                    panic!("{module:?} {script:?}")
                };
                // allowed, limit, remaining and the ID exactly; the times within 100 ms.
                assert_eq!((&m[0], &m[1], &m[2], &m[5]), (&s[0], &s[1], &s[2], &s[5]));
                for i in [3, 4] {
                    let (redis::Value::Int(a), redis::Value::Int(b)) = (&m[i], &s[i]) else {
                        panic!("{module:?} {script:?}")
                    };
                    assert!(a.abs_diff(*b) <= 100, "{module:?} {script:?}");
                }
            } else {
                let module: i64 = redis::cmd("RATELIMIT.RELEASE")
                    .arg(&module_key)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let script: i64 = script
                    .key(&script_key)
                    .arg("release")
                    .arg(&id)
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(module, script);
            }
            let members = |key: &str| redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).clone();
            // As sets: two clocks a few ms apart can order equal scores differently.
            let mut m: Vec<String> = members(&module_key).query_async(&mut conn).await.unwrap();
            let mut s: Vec<String> = members(&script_key).query_async(&mut conn).await.unwrap();
            m.sort();
            s.sort();
            assert_eq!(m, s);
            compared += 1;
        }
    }
    println!("{compared} lease requests compared");
}

// Module and script on the real clock -----------------------------------------------------------

/// Configurations where a few milliseconds between the module's and the script's instants cannot
/// change a decision: FIXED windows open at each key's first request, SLIDING's previous window is
/// empty or decays by less than one unit per hour, and GCRA gets back one unit per hour or more.
fn real_clock_limits() -> Vec<Limit> {
    use Algorithm::*;
    vec![
        limit(Fixed, 20, HOUR_MS, None),
        limit(Fixed, MAX_COUNT, HOUR_MS, None),
        limit(Sliding, 10, DAY_MS, None),
        limit(Sliding, 1_000_000, MAX_PERIOD_MS, None),
        limit(Gcra, 10, MAX_PERIOD_MS, None),
        limit(Gcra, 20, DAY_MS, Some(5)),
        limit(Gcra, 7, MAX_PERIOD_MS, Some(MAX_COUNT)),
        limit(Gcra, 1_000_000, MAX_PERIOD_MS, Some(300)),
    ]
}

#[tokio::test]
async fn module_and_script_agree_on_the_real_clock() {
    let server = Server::start(true);
    let mut conn = server.con().await;
    let backend = ScriptBackend::new();
    let seed = seed();
    println!("RATELIMIT_SEED={seed}");
    let mut rng = Rng(seed);
    let mut compared = 0;
    for (index, limit) in real_clock_limits().iter().enumerate() {
        let (module_key, script_key) = (format!("module:{index}"), format!("script:{index}"));
        let mut remaining = limit.capacity();
        for step in 0..80 {
            let context = format!("{limit:?}, step {step}");
            if rng.chance(5) {
                let module: i64 = redis::cmd("RATELIMIT.RESET")
                    .arg(&module_key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let script = backend.reset(&mut conn, &script_key).await.unwrap();
                assert_eq!(module == 1, script, "{context}");
                remaining = limit.capacity();
                continue;
            }
            let cost = random_cost(&mut rng, limit.capacity(), remaining);
            let dry_run = rng.chance(20);
            let module = module_check(&mut conn, &module_key, limit, cost, dry_run)
                .await
                .unwrap();
            let script = backend
                .check(&mut conn, &script_key, limit, cost, dry_run)
                .await
                .unwrap();
            let context = format!("{context}, cost {cost}: {module:?} vs {script:?}");
            assert_eq!(
                (module.allowed, module.limit, module.remaining),
                (script.allowed, script.limit, script.remaining),
                "{context}"
            );
            let close = |a: u64, b: u64| a.abs_diff(b) <= 100;
            assert!(
                close(module.reset_after_ms, script.reset_after_ms),
                "{context}"
            );
            assert!(
                (module.retry_after_ms < 0) == (script.retry_after_ms < 0)
                    && close(
                        module.retry_after_ms.max(0) as u64,
                        script.retry_after_ms.max(0) as u64
                    ),
                "{context}"
            );
            if module.allowed && !dry_run {
                remaining = module.remaining;
            }
            compared += 1;
        }
    }
    println!("{compared} requests compared");
}

// Handover ---------------------------------------------------------------------------------------

#[tokio::test]
async fn handover_keeps_state() {
    let server = Server::start(true);
    let mut conn = server.con().await;
    let backend = ScriptBackend::new();
    use Algorithm::*;
    let limits = [
        limit(Fixed, 10, HOUR_MS, None),
        limit(Fixed, MAX_COUNT, MAX_PERIOD_MS, None),
        limit(Sliding, 10, MAX_PERIOD_MS, None),
        limit(Sliding, MAX_COUNT, MAX_PERIOD_MS, None),
        limit(Gcra, 10, MAX_PERIOD_MS, None),
        limit(Gcra, 7, MAX_PERIOD_MS, Some(MAX_COUNT)),
        limit(Gcra, 100, MAX_PERIOD_MS, Some(100)),
    ];
    for (index, limit) in limits.iter().enumerate() {
        let key = format!("handover:{index}");
        let capacity = limit.capacity();
        let unit = (capacity / 10).max(1);
        let mut expected = capacity;
        let mut first_expiry = None;
        // Alternate: module, script, module, ... with different costs and a dry run each side.
        for step in 0..8u64 {
            let by_module = step % 2 == 0;
            let cost = unit * (step % 3);
            let dry_run = step % 4 == 3;
            let decision = if by_module {
                module_check(&mut conn, &key, limit, cost, dry_run).await
            } else {
                backend.check(&mut conn, &key, limit, cost, dry_run).await
            }
            .unwrap();
            let context = format!("{limit:?}, step {step}, module {by_module}: {decision:?}");
            assert!(decision.allowed, "{context}");
            // With GCRA's lowered K, the first stored arrival time is rounded up to a whole unit,
            // which the next reader sees as one unit less (toward denial).
            let slack = u64::from(limit.burst() == MAX_COUNT && limit.limit() == 7);
            assert!(
                decision.remaining <= expected - cost
                    && decision.remaining + slack >= expected - cost,
                "{context}, expected {}",
                expected - cost
            );
            if !dry_run {
                expected = decision.remaining;
            }
            let (value, at, exact) = stored(&mut conn, &key).await;
            if let Some(value) = value {
                let state = State::decode(&value, u64::try_from(at).ok()).unwrap();
                assert_eq!(state.algorithm(), limit.algorithm(), "{context}");
                // A FIXED window is never extended, whoever writes.
                if limit.algorithm() == Fixed {
                    let first = *first_expiry.get_or_insert(at);
                    assert!(
                        same_expiry(first, at, exact),
                        "{context}: {first} then {at}"
                    );
                }
            }
        }
        // Each side resets a key the other wrote.
        let script_reset = backend.reset(&mut conn, &key).await.unwrap();
        assert!(script_reset, "{limit:?}");
        backend
            .check(&mut conn, &key, limit, unit, false)
            .await
            .unwrap();
        let module_reset: i64 = redis::cmd("RATELIMIT.RESET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(module_reset, 1, "{limit:?}");
    }
}

// Errors -----------------------------------------------------------------------------------------

#[tokio::test]
async fn errors_match_the_module() {
    let server = Server::start(true);
    let mut conn = server.con().await;
    let backend = ScriptBackend::new();
    let limits = [
        limit(Algorithm::Fixed, 10, HOUR_MS, None),
        limit(Algorithm::Sliding, 10, HOUR_MS, None),
        limit(Algorithm::Gcra, 10, HOUR_MS, None),
    ];

    // Compares the module's and the script's errors for every algorithm on `key`, and checks
    // that neither wrote anything.
    async fn same_errors(
        conn: &mut MultiplexedConnection,
        backend: &ScriptBackend,
        key: &str,
        limits: &[Limit],
        skip: Option<Algorithm>,
    ) -> usize {
        let before: (String, Option<Vec<u8>>) = redis::pipe()
            .cmd("TYPE")
            .arg(key)
            .cmd("DUMP")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap();
        let before_expiry = expire_time(conn, key).await;
        let mut compared = 0;
        for limit in limits.iter().filter(|l| Some(l.algorithm()) != skip) {
            for (cost, dry_run) in [(1, false), (0, false), (1, true)] {
                let module = module_check(conn, key, limit, cost, dry_run)
                    .await
                    .expect_err("the module must refuse");
                let script = backend
                    .check(conn, key, limit, cost, dry_run)
                    .await
                    .expect_err("the script must refuse");
                assert_eq!(error_text(&module), error_text(&script), "{key} {limit:?}");
                compared += 1;
            }
        }
        if skip.is_none() {
            let module = redis::cmd("RATELIMIT.RESET")
                .arg(key)
                .query_async::<i64>(conn)
                .await
                .expect_err("the module must refuse");
            let script = backend
                .reset(conn, key)
                .await
                .expect_err("the script must refuse");
            assert_eq!(error_text(&module), error_text(&script), "{key} RESET");
            compared += 1;
        }
        let after: (String, Option<Vec<u8>>) = redis::pipe()
            .cmd("TYPE")
            .arg(key)
            .cmd("DUMP")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap();
        let after_expiry = expire_time(conn, key).await;
        assert_eq!(before, after, "{key} was modified");
        assert!(
            same_expiry(before_expiry.0, after_expiry.0, before_expiry.1),
            "{key}'s expiry was modified: {before_expiry:?} then {after_expiry:?}"
        );
        compared
    }

    let mut compared = 0;
    // Another algorithm's state, written by the module.
    for owner in &limits {
        let key = format!("owner:{}", owner.algorithm());
        module_check(&mut conn, &key, owner, 3, false)
            .await
            .unwrap();
        compared += same_errors(&mut conn, &backend, &key, &limits, Some(owner.algorithm())).await;
    }
    let message = backend
        .check(&mut conn, "owner:SLIDING", &limits[2], 1, false)
        .await
        .unwrap_err();
    assert_eq!(
        error_text(&message).1.as_deref(),
        Some("the key holds a SLIDING limiter, not GCRA")
    );
    // Strings that are no limiter state.
    for value in [
        "hello",
        "",
        "1.5",
        " 1",
        "+1",
        "-",
        "-0",
        "-00",
        "1e3",
        "0x10",
        "9223372036854775808",
        "000000000000000000001",
        "-4611686018427387905",
        "-9223372036854775808",
        "s:",
        "s:1:2",
        "s:1:2:3:4",
        "s:1:-2:3",
        "s:1::3",
        "s:18446744073709551616:0:0",
        "s:1:2:3 ",
        "S:1:2:3",
        "\u{0}",
    ] {
        let key = format!("junk:{value}");
        redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(HOUR_MS)
            .exec_async(&mut conn)
            .await
            .unwrap();
        compared += same_errors(&mut conn, &backend, &key, &limits, None).await;
        let error = backend.reset(&mut conn, &key).await.unwrap_err();
        assert_eq!(
            error_text(&error),
            (
                Some("ERR".to_owned()),
                Some("the key holds a value that is not a rate limiter state".to_owned())
            ),
            "{value:?}"
        );
    }
    // Other types.
    for (command, args) in [
        ("LPUSH", &["x"][..]),
        ("HSET", &["f", "v"][..]),
        ("SADD", &["m"][..]),
        ("ZADD", &["1", "m"][..]),
    ] {
        let key = format!("type:{command}");
        redis::cmd(command)
            .arg(&key)
            .arg(args)
            .exec_async(&mut conn)
            .await
            .unwrap();
        compared += same_errors(&mut conn, &backend, &key, &limits, None).await;
        let error = backend.reset(&mut conn, &key).await.unwrap_err();
        assert_eq!(error.code(), Some("WRONGTYPE"));
    }
    // Absent keys: both answer 0 to RESET.
    assert!(!backend.reset(&mut conn, "absent").await.unwrap());
    println!("{compared} error replies compared");
}

/// Inputs where the module and the script once answered differently (an outside differential
/// fuzz): an MCHECK whose keys hold several wrong things answers the module's error (every key is
/// read before any algorithm is checked); lease IDs of 0 or 129 bytes are refused with the
/// module's message; and a hand-made lease score past 2^53 - 1 ms (`1e19`, `+inf`) reads as that
/// on both sides, so the script no longer fails in its `PEXPIREAT` after having written.
#[tokio::test]
async fn module_and_script_agree_on_odd_inputs() {
    let server = Server::start(true);
    let mut conn = server.con().await;
    let script = redis::Script::new(ratelimit_client::LUA_SCRIPT);
    let error_of = |result: redis::RedisResult<redis::Value>| -> String {
        match result {
            Err(error) => format!("{error:?}"),
            Ok(value) => panic!("not an error: {value:?}"),
        }
    };

    // Two bad keys: a SLIDING state under a GCRA policy, then a value that is no limiter.
    for (a, b) in [("{o}m:a", "{o}m:b"), ("{o}s:a", "{o}s:b")] {
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(a)
            .arg("s:5:0:60")
            .arg("PX")
            .arg(100_000)
            .ignore()
            .cmd("SET")
            .arg(b)
            .arg(" 5")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let module = redis::cmd("RATELIMIT.MCHECK")
        .arg(2)
        .arg("{o}m:a")
        .arg("{o}m:b")
        .arg("LIMIT")
        .arg(10)
        .arg("1h")
        .arg("ALGORITHM")
        .arg("GCRA")
        .arg("LIMIT")
        .arg(2)
        .arg("1h")
        .query_async::<redis::Value>(&mut conn)
        .await;
    let argv: Vec<String> = [
        "0", "GCRA", "10", "3600000", "0", "1", "FIXED", "2", "3600000", "0", "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut invocation = script.prepare_invoke();
    invocation.key("{o}s:a").key("{o}s:b").arg("mcheck");
    for arg in &argv {
        invocation.arg(arg);
    }
    let from_script = invocation.invoke_async::<redis::Value>(&mut conn).await;
    let (module, from_script) = (error_of(module), error_of(from_script));
    assert!(module.contains("not a rate limiter state"), "{module}");
    assert_eq!(module, from_script);

    // Lease IDs out of bounds.
    let long = "x".repeat(129);
    for (command, module_args, script_args) in [
        ("RATELIMIT.RELEASE", vec!["ol:m", ""], vec!["release", ""]),
        (
            "RATELIMIT.ACQUIRE",
            vec!["ol:m", "5", "10s", "ID", long.as_str()],
            vec!["acquire", "5", "10000", long.as_str()],
        ),
    ] {
        let module = error_of(
            redis::cmd(command)
                .arg(&module_args)
                .query_async(&mut conn)
                .await,
        );
        let mut invocation = script.prepare_invoke();
        invocation.key("ol:s");
        for arg in &script_args {
            invocation.arg(*arg);
        }
        let from_script = error_of(invocation.invoke_async(&mut conn).await);
        assert!(module.contains("invalid lease ID"), "{module}");
        assert_eq!(module, from_script);
    }

    // Scores past the longest time.
    const LONGEST: i64 = (1 << 53) - 1;
    for score in ["1e19", "+inf"] {
        let (m, s) = (format!("oz:m:{score}"), format!("oz:s:{score}"));
        for key in [&m, &s] {
            let _: i64 = redis::cmd("ZADD")
                .arg(key)
                .arg(score)
                .arg("far")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let module: Vec<redis::Value> = redis::cmd("RATELIMIT.ACQUIRE")
            .arg(&m)
            .arg(5)
            .arg("1h")
            .arg("ID")
            .arg("a")
            .query_async(&mut conn)
            .await
            .unwrap();
        let from_script: Vec<redis::Value> = script
            .key(&s)
            .arg("acquire")
            .arg(5)
            .arg(3_600_000)
            .arg("a")
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(module[..3], from_script[..3], "{score}");
        assert_eq!(module[5], from_script[5], "{score}");
        for key in [&m, &s] {
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap_or(LONGEST);
            assert_eq!(at, LONGEST, "{key}");
        }
        let module: i64 = redis::cmd("RATELIMIT.RELEASE")
            .arg(&m)
            .arg("far")
            .query_async(&mut conn)
            .await
            .unwrap();
        let from_script: i64 = script
            .key(&s)
            .arg("release")
            .arg("far")
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!((module, from_script), (1, 1), "{score}");
    }
}
