//! ratelimit-core: nanoseconds per `decide`, for each algorithm, on a stored state.

use criterion::{criterion_group, criterion_main, Criterion};
use ratelimit_core::{decide, Algorithm, Change, Limit, State};
use std::hint::black_box;

/// An instant in 2026, in microseconds since the epoch.
const NOW_US: u64 = 1_795_965_551_084_123;

/// The state one admitted request leaves, `offset_us` before `NOW_US`.
fn stored(limit: &Limit, offset_us: u64) -> State {
    let outcome = decide(limit, None, NOW_US - offset_us, 1, false).expect("no state yet");
    match outcome.change {
        Change::Store(update) => update.state,
        other => panic!("the first request is admitted and stored, not {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let cases = [
        (
            "FIXED",
            Limit::new(Algorithm::Fixed, 1_000_000, 60_000, None),
        ),
        (
            "SLIDING",
            Limit::new(Algorithm::Sliding, 1_000_000, 60_000, None),
        ),
        ("GCRA", Limit::new(Algorithm::Gcra, 1_000_000, 60_000, None)),
        (
            "GCRA, no common factor",
            Limit::new(Algorithm::Gcra, 999_983, 30 * 86_400_000, Some(1_000_000)),
        ),
    ];
    for (name, limit) in cases {
        let limit = limit.expect("a valid limit");
        let state = stored(&limit, 10_000);
        group.bench_function(name, |b| {
            b.iter(|| {
                decide(
                    black_box(&limit),
                    black_box(Some(&state)),
                    black_box(NOW_US),
                    black_box(1),
                    black_box(false),
                )
            })
        });
    }
    group.finish();

    // The module builds a `Limit` from the arguments of every command.
    c.bench_function("limit/GCRA", |b| {
        b.iter(|| {
            Limit::new(
                black_box(Algorithm::Gcra),
                black_box(100),
                black_box(60_000),
                black_box(None),
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_millis(1500));
    targets = bench
}
criterion_main!(benches);
