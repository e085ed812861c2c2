//! The client's in-memory limiter against governor's keyed limiter: nanoseconds per check,
//! single-threaded and on 2 threads sharing one limiter.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ratelimit_client::{Algorithm, Limit, LocalLimiter};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Keys taken in turn: more than fit a CPU's first-level cache in either map.
const KEYS: usize = 10_000;
/// GCRA's burst, for both limiters.
const BURST: u32 = 1_000_000_000;

/// One limiter under benchmark: makes its check number `i`, on key number `i % KEYS`, and
/// must admit it.
trait Subject: Send + Sync + 'static {
    fn check(&self, i: usize);
}

struct Ours {
    limiter: LocalLimiter,
    keys: Vec<String>,
    limit: Limit,
}

impl Subject for Ours {
    fn check(&self, i: usize) {
        let decision = self
            .limiter
            .check(black_box(&self.keys[i % KEYS]), &self.limit, 1)
            .expect("one algorithm per key");
        assert!(decision.allowed());
    }
}

/// `LocalLimiter::check_at` with a given instant: the limiter without its clock.
struct OursGivenTime(Ours);

impl Subject for OursGivenTime {
    fn check(&self, i: usize) {
        // 50 ns later on every check, about as the clock moves between two checks.
        let now =
            std::time::UNIX_EPOCH + Duration::from_micros(1_795_965_551_084_123 + (i / 20) as u64);
        let decision = self
            .0
            .limiter
            .check_at(
                black_box(&self.0.keys[i % KEYS]),
                &self.0.limit,
                1,
                false,
                now,
            )
            .expect("one algorithm per key");
        assert!(decision.allowed());
    }
}

struct Governor {
    limiter: DefaultKeyedRateLimiter<String>,
    keys: Vec<String>,
}

impl Subject for Governor {
    fn check(&self, i: usize) {
        assert!(self
            .limiter
            .check_key(black_box(&self.keys[i % KEYS]))
            .is_ok());
    }
}

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("ratelimit:user:{i}:/search"))
        .collect()
}

fn ours(algorithm: Algorithm) -> Ours {
    // A limit no check reaches: every request is admitted and writes.
    let limit = match algorithm {
        // The same quota as governor's below: 100 per second with a burst of a billion, so
        // that every key stays stored (its arrival time runs ahead of the clock) and every
        // request is admitted.
        Algorithm::Gcra => {
            Limit::gcra(100, Duration::from_secs(1)).and_then(|l| l.with_burst(BURST.into()))
        }
        _ => Limit::new(
            algorithm,
            1_000_000_000_000,
            Duration::from_secs(3650 * 86_400),
        ),
    };
    Ours {
        limiter: LocalLimiter::new(100_000),
        keys: keys(),
        limit: limit.expect("a valid limit"),
    }
}

fn governor() -> Governor {
    Governor {
        limiter: RateLimiter::keyed(
            Quota::per_second(NonZeroU32::new(100).unwrap())
                .allow_burst(NonZeroU32::new(BURST).unwrap()),
        ),
        keys: keys(),
    }
}

fn single<S: Subject>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, subject: S) {
    let mut i = 0usize;
    // Every key stored before the measurement: a check of a stored key is the common case.
    for key in 0..KEYS {
        subject.check(key);
    }
    group.bench_function(name, |b| {
        b.iter(|| {
            i += 1;
            subject.check(i);
        })
    });
}

/// The wall time of 2 threads each making `iters` checks on `subject`, from a common start.
fn two_threads<S: Subject>(subject: &Arc<S>, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let subject = Arc::clone(subject);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                // The two threads walk the keys from opposite halves.
                let offset = t * KEYS / 2;
                for i in 0..iters as usize {
                    subject.check(offset + i);
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for thread in threads {
        thread.join().expect("a benchmark thread");
    }
    started.elapsed()
}

fn double<S: Subject>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, subject: S) {
    for key in 0..KEYS {
        subject.check(key);
    }
    let subject = Arc::new(subject);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| two_threads(&subject, iters))
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("local 1 thread");
    single(&mut group, "LocalLimiter GCRA", ours(Algorithm::Gcra));
    single(&mut group, "LocalLimiter FIXED", ours(Algorithm::Fixed));
    single(
        &mut group,
        "LocalLimiter GCRA, given time",
        OursGivenTime(ours(Algorithm::Gcra)),
    );
    single(&mut group, "governor keyed", governor());
    group.finish();

    // The parts of a check, to tell where its time goes.
    let mut group = c.benchmark_group("local parts");
    group.bench_function("SystemTime::now", |b| {
        b.iter(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
    });
    let clock = quanta::Clock::new();
    let origin = clock.raw();
    group.bench_function("quanta clock", |b| {
        b.iter(|| clock.delta_as_nanos(origin, clock.raw()) / 1000)
    });
    let key = "ratelimit:user:4242:/search";
    let siphash = std::collections::hash_map::RandomState::new();
    group.bench_function("SipHash of a key", |b| {
        b.iter(|| std::hash::BuildHasher::hash_one(&siphash, black_box(key)))
    });
    let foldhash = foldhash::quality::RandomState::default();
    group.bench_function("foldhash of a key", |b| {
        b.iter(|| std::hash::BuildHasher::hash_one(&foldhash, black_box(key)))
    });
    let mutex = std::sync::Mutex::new(0u64);
    group.bench_function("Mutex lock and unlock", |b| {
        b.iter(|| *mutex.lock().unwrap() += 1)
    });
    group.finish();

    let mut group = c.benchmark_group("local 2 threads");
    double(&mut group, "LocalLimiter GCRA", ours(Algorithm::Gcra));
    double(&mut group, "LocalLimiter FIXED", ours(Algorithm::Fixed));
    double(
        &mut group,
        "LocalLimiter GCRA, given time",
        OursGivenTime(ours(Algorithm::Gcra)),
    );
    double(&mut group, "governor keyed", governor());
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    targets = bench
}
criterion_main!(benches);
