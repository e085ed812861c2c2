//! The client's overhead: `RedisStore::check` against a raw redis-rs `cmd` call of the same
//! `RATELIMIT.CHECK`, one round trip at a time, to a local server with the module. (The report
//! also measures the difference with the two calls alternating, which cancels the round trip's
//! drift: `bench/src/overhead.rs`.)

use criterion::{criterion_group, criterion_main, Criterion};
use ratelimit_bench::overhead::raw_check;
use ratelimit_bench::Server;
use ratelimit_client::{Algorithm, Config, Limit, RedisStore};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let server = Server::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    // Never reached: every check is admitted and writes.
    let limit = Limit::new(
        Algorithm::Fixed,
        1_000_000_000_000_000,
        Duration::from_secs(3650 * 86_400),
    )
    .expect("a valid limit");
    let (store, raw) = runtime.block_on(async {
        let store = RedisStore::new(Config::new(server.url())).expect("a store");
        store.ping().await.expect("Redis answers");
        let client = redis::Client::open(server.url()).expect("a redis-rs client");
        let raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("a redis-rs connection");
        (store, raw)
    });

    let mut group = c.benchmark_group("client");
    group.bench_function("raw redis-rs cmd", |b| {
        b.to_async(&runtime).iter(|| {
            let mut conn = raw.clone();
            async move { raw_check(&mut conn).await }
        })
    });
    group.bench_function("RedisStore::check", |b| {
        b.to_async(&runtime).iter(|| async {
            let decision = store
                .check("bench:store", &limit, 1)
                .await
                .expect("a decision");
            assert!(decision.allowed());
            assert_eq!(decision.backend, ratelimit_client::Backend::Module);
        })
    });
    group.finish();
    drop(raw);
    drop(store);
    server.stop();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
