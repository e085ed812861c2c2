//! Checks a rate limit from the command line and prints one JSON object per request:
//!
//! ```console
//! $ cargo run -p ratelimit-client --example check -- --limit 10 --period 1m user:42
//! {"allowed":true,"limit":10,"remaining":9,"reset_after_ms":60000,"retry_after_ms":0,"backend":"module"}
//! ```
//!
//! The key is stored under the prefix (`RATELIMIT_PREFIX`, default `ratelimit:`). With Redis
//! unreachable, the failure policy answers; warnings go to stderr. A key that holds other data
//! (a list, another algorithm's state) is an error, on stderr, with exit status 1.

use ratelimit_client::{
    parse_period, Algorithm, Config, Decision, FailurePolicy, Limit, RedisStore,
};
use std::process::ExitCode;

const USAGE: &str = "usage: check [--url URL] --limit N --period P [--algorithm A] [--burst N] \
[--cost N] [--check-only] [--repeat N] [--on-failure local|allow|deny] KEY

  --url URL          Redis URL (default: REDIS_URL, then redis://127.0.0.1:6379)
  --limit N          requests (or cost units) per period
  --period P         seconds (60) or with a unit: 1500ms, 10s, 5m, 2h, 1d
  --algorithm A      FIXED (default), SLIDING or GCRA
  --burst N          GCRA's burst (default: the limit)
  --cost N           units each request spends (default 1)
  --check-only       ask without spending (a dry run)
  --repeat N         send N requests (default 1)
  --on-failure P     what answers while Redis is unreachable: local (default), allow or deny";

struct Args {
    url: String,
    limit: Limit,
    cost: u64,
    check_only: bool,
    repeat: u64,
    on_failure: Option<FailurePolicy>,
    key: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut url = None;
    let mut limit = None;
    let mut period = None;
    let mut algorithm = Algorithm::Fixed;
    let mut burst = None;
    let mut cost = 1;
    let mut check_only = false;
    let mut repeat = 1;
    let mut on_failure = None;
    let mut key = None;
    let number = |name: &str, value: String| -> Result<u64, String> {
        value
            .parse()
            .map_err(|_| format!("{name} expects an integer, not '{value}'"))
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => url = Some(value("--url")?),
            "--limit" => limit = Some(number("--limit", value("--limit")?)?),
            "--period" => {
                period = Some(parse_period(&value("--period")?).map_err(|e| e.to_string())?)
            }
            "--algorithm" => {
                let text = value("--algorithm")?;
                algorithm = Algorithm::parse(text.as_bytes()).ok_or(format!(
                    "unknown algorithm '{text}': expected FIXED, SLIDING or GCRA"
                ))?;
            }
            "--burst" => burst = Some(number("--burst", value("--burst")?)?),
            "--cost" => cost = number("--cost", value("--cost")?)?,
            "--check-only" => check_only = true,
            "--repeat" => repeat = number("--repeat", value("--repeat")?)?,
            "--on-failure" => {
                on_failure = Some(value("--on-failure")?.parse().map_err(|e| format!("{e}"))?)
            }
            "-h" | "--help" => return Err(String::new()),
            option if option.starts_with("--") => return Err(format!("unknown option '{option}'")),
            _ if key.is_none() => key = Some(arg),
            _ => return Err(format!("unexpected argument '{arg}'")),
        }
    }
    let mut limit = Limit::new(
        algorithm,
        limit.ok_or("--limit is required")?,
        period.ok_or("--period is required")?,
    )
    .map_err(|error| error.to_string())?;
    if let Some(burst) = burst {
        limit = limit.with_burst(burst).map_err(|error| error.to_string())?;
    }
    let url = url
        .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    Ok(Args {
        url,
        limit,
        cost,
        check_only,
        repeat,
        on_failure,
        key: key.ok_or("KEY is required")?,
    })
}

/// The decision as one JSON object, with exactly the fields of the `RATELIMIT.CHECK` reply and
/// the backend.
fn to_json(decision: &Decision) -> String {
    format!(
        "{{\"allowed\":{},\"limit\":{},\"remaining\":{},\"reset_after_ms\":{},\"retry_after_ms\":{},\"backend\":\"{}\"}}",
        decision.is_admitted(),
        decision.limit,
        decision.remaining,
        decision.reset_after_ms(),
        decision.outcome.retry_after_ms(),
        decision.backend
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("error: {error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The prefix and the timeouts may come from the environment; the URL and the policy from
    // the arguments.
    let mut config = match Config::from_env() {
        Ok(config) => config.url(args.url),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(policy) = args.on_failure {
        config = config.on_failure(policy);
    }
    // With Redis down, the store still answers, from the failure policy.
    let store = match RedisStore::new(config) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    for _ in 0..args.repeat {
        let decision = if args.check_only {
            store.check_dry_run(&args.key, &args.limit, args.cost).await
        } else {
            store.check(&args.key, &args.limit, args.cost).await
        };
        match decision {
            Ok(decision) => println!("{}", to_json(&decision)),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
