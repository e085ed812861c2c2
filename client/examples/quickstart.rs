use ratelimit_client::{Limit, Outcome, RedisStore};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), ratelimit_client::Error> {
    // The store reports through `tracing` (Redis unreachable, Redis back): without a
    // subscriber, nothing is printed. Here, to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // REDIS_URL, e.g. redis://127.0.0.1:6379. It starts even while Redis is down, and the
    // failure policy (RATELIMIT_ON_FAILURE, `local` by default) answers until Redis is back.
    let store = RedisStore::from_env()?;

    // 3 requests per 10 seconds, sliding window.
    let limit = Limit::sliding(3, Duration::from_secs(10))?;
    for _ in 0..4 {
        let decision = store.check("user:42", &limit, 1).await?;
        match decision.outcome {
            Outcome::Admitted => println!("admitted: {} left", decision.remaining),
            Outcome::RetryAfter(wait) => println!("denied: retry in {wait:?}"),
            Outcome::CannotFit => println!("denied: the request is larger than the limit"),
        }
    }
    Ok(())
}
