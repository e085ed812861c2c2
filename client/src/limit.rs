//! A limiter's configuration, as callers write it.

use ratelimit_core::Algorithm;
use std::time::Duration;

/// `limit` units per `period` with one algorithm; `burst` applies to GCRA only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Units allowed per period, 1 to 10^15.
    pub limit: u64,
    /// The window, or for GCRA the time over which `limit` units drip back; whole
    /// milliseconds, 1 ms to 3650 days.
    pub period: Duration,
    /// FIXED, SLIDING or GCRA.
    pub algorithm: Algorithm,
    /// GCRA's burst; `None` means `limit`.
    pub burst: Option<u64>,
}

impl Limit {
    /// A FIXED limit of `limit` per `period`.
    pub fn new(limit: u64, period: Duration) -> Limit {
        Limit {
            limit,
            period,
            algorithm: Algorithm::Fixed,
            burst: None,
        }
    }

    /// The same limit with another algorithm.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Limit {
        self.algorithm = algorithm;
        self
    }

    /// The same limit with a GCRA burst.
    pub fn burst(mut self, burst: u64) -> Limit {
        self.burst = Some(burst);
        self
    }

    /// The period in whole milliseconds, as the commands take it.
    pub fn period_ms(&self) -> u64 {
        u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX)
    }

    /// The validated core configuration; fails on values outside the contract's ranges.
    pub fn to_core(&self) -> Result<ratelimit_core::Limit, ratelimit_core::LimitError> {
        ratelimit_core::Limit::new(self.algorithm, self.limit, self.period_ms(), self.burst)
    }
}
