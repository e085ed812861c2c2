//! [`Limit`]: a limiter's configuration, valid by construction.

use crate::error::Error;
use ratelimit_core::Algorithm;
use std::fmt;
use std::time::Duration;

/// `limit` units per `period` with one algorithm, and for GCRA a burst.
///
/// A `Limit` is checked when it is built, against the ranges of the command contract, so a
/// limit that exists is valid: no call ever fails or decides because of its limit.
///
/// ```
/// use ratelimit_client::Limit;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), ratelimit_client::Error> {
/// let per_minute = Limit::fixed(100, Duration::from_secs(60))?;
/// let smooth = Limit::sliding(100, Duration::from_secs(60))?;
/// // 10 per second, at most 3 at once.
/// let bucket = Limit::gcra(10, Duration::from_secs(1))?.with_burst(3)?;
/// assert_eq!(bucket.capacity(), 3);
/// assert!(Limit::fixed(0, Duration::from_secs(1)).unwrap_err().is_invalid_limit());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    core: ratelimit_core::Limit,
    /// The local batch: 1 when every check goes to Redis.
    batch: u64,
}

impl Limit {
    /// A FIXED window: at most `limit` units per window of `period`, the window opening at the
    /// first request. `limit` is 1 to 10^15; `period` a whole number of milliseconds, from
    /// 1 ms to 3650 days. Fails with [`Error::is_invalid_limit`] otherwise.
    pub fn fixed(limit: u64, period: Duration) -> Result<Limit, Error> {
        Limit::new(Algorithm::Fixed, limit, period)
    }

    /// A SLIDING window counter: a FIXED window smoothed by the previous window's count, so a
    /// window boundary never admits two bursts. Valid values as for [`Limit::fixed`].
    pub fn sliding(limit: u64, period: Duration) -> Result<Limit, Error> {
        Limit::new(Algorithm::Sliding, limit, period)
    }

    /// GCRA, a token bucket: `limit` units drip back over `period`, and at most the burst can be
    /// spent at once, `limit` unless set with [`Limit::with_burst`]. Valid values as for
    /// [`Limit::fixed`].
    pub fn gcra(limit: u64, period: Duration) -> Result<Limit, Error> {
        Limit::new(Algorithm::Gcra, limit, period)
    }

    /// A limit of `algorithm`; see [`Limit::fixed`], [`Limit::sliding`] and [`Limit::gcra`].
    pub fn new(algorithm: Algorithm, limit: u64, period: Duration) -> Result<Limit, Error> {
        Limit::build(algorithm, limit, period_ms(period)?, None)
    }

    /// This GCRA limit with a burst of `burst` units, 1 to 10^15. Fails for FIXED and SLIDING,
    /// which have no burst.
    pub fn with_burst(self, burst: u64) -> Result<Limit, Error> {
        Ok(Limit {
            batch: self.batch,
            ..Limit::build(
                self.algorithm(),
                self.limit(),
                self.core.period_ms(),
                Some(burst),
            )?
        })
    }

    /// This limit with local shares of `batch` units, for a hot key checked from many
    /// processes: [`RedisStore::check`](crate::RedisStore::check) spends up to `batch` units at
    /// once in Redis and hands them out in this process without a round trip, giving back what
    /// it does not use within [`Config::share_hold`](crate::Config::share_hold) (100 ms by
    /// default). All processes together never admit more than the limit; each may deny early
    /// by at most `batch - 1` units per window. See the guide's "Hot keys".
    ///
    /// `batch` is 1 (no batching, the default) up to the limit's capacity. Fails with
    /// [`Error::is_invalid_limit`] otherwise.
    pub fn with_local_batch(self, batch: u64) -> Result<Limit, Error> {
        if batch == 0 || batch > self.capacity() {
            return Err(Error::InvalidLimit(format!(
                "local batch {batch} is out of range: 1 to the limit's capacity, {}",
                self.capacity()
            )));
        }
        Ok(Limit { batch, ..self })
    }

    /// The local batch: 1 unless [`Limit::with_local_batch`] set it.
    pub fn local_batch(&self) -> u64 {
        self.batch
    }

    fn build(
        algorithm: Algorithm,
        limit: u64,
        period_ms: u64,
        burst: Option<u64>,
    ) -> Result<Limit, Error> {
        let core = ratelimit_core::Limit::new(algorithm, limit, period_ms, burst)
            .map_err(|reason| Error::InvalidLimit(reason.to_string()))?;
        Ok(Limit { core, batch: 1 })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.core.algorithm()
    }

    /// Units allowed per period.
    pub fn limit(&self) -> u64 {
        self.core.limit()
    }

    /// The window, or for GCRA the time over which `limit` units drip back.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.core.period_ms())
    }

    /// GCRA's burst; equal to `limit` for the other algorithms.
    pub fn burst(&self) -> u64 {
        self.core.burst()
    }

    /// The most units available at once, as decisions report it in `limit`: the burst for
    /// GCRA, `limit` otherwise.
    pub fn capacity(&self) -> u64 {
        self.core.capacity()
    }

    /// The validated configuration the algorithms take.
    pub(crate) fn core(&self) -> &ratelimit_core::Limit {
        &self.core
    }
}

impl fmt::Debug for Limit {
    /// `Limit(10 per 1s GCRA, burst 3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Limit({self})")
    }
}

impl fmt::Display for Limit {
    /// `10 per 1s GCRA, burst 3`, `100 per 60s FIXED`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per {:?} {}",
            self.limit(),
            self.period(),
            self.algorithm()
        )?;
        if self.algorithm() == Algorithm::Gcra && self.burst() != self.limit() {
            write!(f, ", burst {}", self.burst())?;
        }
        if self.batch > 1 {
            write!(f, ", local batch {}", self.batch)?;
        }
        Ok(())
    }
}

/// Parses a period as the commands write it: an integer of seconds (`60`), or an integer with
/// a unit `ms`, `s`, `m`, `h` or `d` (`1500ms`, `10s`, `5m`, `2h`, `1d`); from 1 ms to 3650
/// days. For configuration files and command lines.
///
/// ```
/// use ratelimit_client::parse_period;
/// use std::time::Duration;
///
/// assert_eq!(parse_period("1500ms").unwrap(), Duration::from_millis(1500));
/// assert!(parse_period("5x").unwrap_err().is_invalid_limit());
/// ```
pub fn parse_period(text: &str) -> Result<Duration, Error> {
    ratelimit_core::parse::period_ms(text.trim().as_bytes())
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::InvalidLimit(format!(
                "invalid period '{text}': expected an integer with optional unit ms, s, m, h or d, \
                 from 1ms to 3650d"
            ))
        })
}

/// `period` in milliseconds; it must be a whole number of them.
fn period_ms(period: Duration) -> Result<u64, Error> {
    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    if !period.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(Error::InvalidLimit(format!(
            "period {period:?} is not a whole number of milliseconds"
        )));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_limits_can_be_built() {
        let second = Duration::from_secs(1);
        assert!(Limit::fixed(1, second).is_ok());
        assert!(Limit::fixed(1_000_000_000_000_000, second).is_ok());
        for invalid in [
            Limit::fixed(0, second),
            Limit::fixed(1_000_000_000_000_001, second),
            Limit::sliding(1, Duration::ZERO),
            Limit::sliding(1, Duration::from_micros(1500)),
            Limit::gcra(1, Duration::from_secs(3650 * 86_400 + 1)),
            Limit::gcra(5, second).and_then(|l| l.with_burst(0)),
            Limit::fixed(5, second).and_then(|l| l.with_burst(2)),
        ] {
            let error = invalid.unwrap_err();
            assert!(error.is_invalid_limit(), "{error}");
        }
        let gcra = Limit::gcra(10, second).unwrap().with_burst(3).unwrap();
        assert_eq!((gcra.limit(), gcra.burst(), gcra.capacity()), (10, 3, 3));
        assert_eq!(gcra.period(), second);
        assert_eq!(gcra.to_string(), "10 per 1s GCRA, burst 3");
        let fixed = Limit::fixed(100, Duration::from_secs(60)).unwrap();
        assert_eq!(fixed.to_string(), "100 per 60s FIXED");
        assert_eq!((fixed.burst(), fixed.capacity()), (100, 100));
    }

    #[test]
    fn parses_periods() {
        assert_eq!(parse_period("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_period("2h").unwrap(), Duration::from_secs(7200));
        for invalid in ["", "0", "5x", "-1s", "3651d"] {
            assert!(parse_period(invalid).is_err(), "{invalid}");
        }
    }
}
