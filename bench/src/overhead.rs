//! The client's overhead over a raw redis-rs call, measured with the two calls alternating.
//!
//! A loopback round trip on a virtual machine varies by tens of microseconds with how deeply
//! the cores sleep between requests, far more than the client adds. Timing the two kinds of call
//! in separate runs (as criterion does) compares two different round trips; alternating them,
//! and alternating their order, compares the same ones.

use crate::Server;
use ratelimit_client::{Algorithm, Backend, Config, Limit, RedisStore};
use std::time::{Duration, Instant};

/// Microseconds per call, from `pairs` alternating pairs.
#[derive(Debug, Clone, Copy)]
pub struct Overhead {
    /// A raw redis-rs `cmd(...).query_async` of `RATELIMIT.CHECK`.
    pub raw_us: f64,
    /// `RedisStore::check` of the same limit.
    pub store_us: f64,
    /// The mean of the per-pair differences.
    pub overhead_us: f64,
    /// Half the width of its 95% confidence interval.
    pub margin_us: f64,
    /// The pairs measured.
    pub pairs: usize,
}

/// Measures `pairs` alternating pairs against `server`, after 1,000 to warm up.
pub fn measure(server: &Server, pairs: usize) -> Overhead {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let store = RedisStore::new(Config::new(server.url())).expect("a store");
        store.ping().await.expect("Redis answers");
        let client = redis::Client::open(server.url()).expect("a redis-rs client");
        let mut raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("a redis-rs connection");
        // Never reached: every check is admitted and writes.
        let limit = Limit::new(
            Algorithm::Fixed,
            1_000_000_000_000_000,
            Duration::from_secs(3650 * 86_400),
        )
        .expect("a valid limit");
        let mut differences = Vec::with_capacity(pairs);
        let (mut raw_total, mut store_total) = (0.0, 0.0);
        for i in 0..pairs + 1000 {
            let mut raw_us = 0.0;
            let mut store_us = 0.0;
            for raw_first in [i % 2 == 0, i % 2 == 1] {
                let started = Instant::now();
                if raw_first {
                    raw_check(&mut raw).await;
                    raw_us = started.elapsed().as_secs_f64() * 1e6;
                } else {
                    let decision = store
                        .check("bench:store", &limit, 1)
                        .await
                        .expect("a decision");
                    assert!(decision.allowed() && decision.backend == Backend::Module);
                    store_us = started.elapsed().as_secs_f64() * 1e6;
                }
            }
            if i >= 1000 {
                differences.push(store_us - raw_us);
                raw_total += raw_us;
                store_total += store_us;
            }
        }
        let n = differences.len() as f64;
        let mean = differences.iter().sum::<f64>() / n;
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Overhead {
            raw_us: raw_total / n,
            store_us: store_total / n,
            overhead_us: mean,
            margin_us: 1.96 * (variance / n).sqrt(),
            pairs,
        }
    })
}

/// Exactly what the store sends for the benchmark's limit (`module::check`), through redis-rs;
/// also used by the criterion bench `benches/client.rs`.
pub async fn raw_check(conn: &mut redis::aio::MultiplexedConnection) {
    let reply: Vec<i64> = redis::cmd("RATELIMIT.CHECK")
        .arg("ratelimit:bench:raw")
        .arg(1_000_000_000_000_000u64)
        .arg("315360000000ms")
        .arg("ALGORITHM")
        .arg("FIXED")
        .arg("COST")
        .arg(1)
        .query_async(conn)
        .await
        .expect("a reply");
    assert_eq!(reply[0], 1);
}
