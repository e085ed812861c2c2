//! The configuration of one limiter: algorithm, limit, period and burst.

use std::fmt;

/// The largest `limit`, `burst` and `cost`: 10^15.
pub const MAX_COUNT: u64 = 1_000_000_000_000_000;

/// The longest `period`: 3650 days, in milliseconds.
pub const MAX_PERIOD_MS: u64 = 3650 * 86_400_000;

/// The three algorithms of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A window that opens at the first admitted request and lasts `period`.
    Fixed,
    /// The sliding-window counter over epoch-aligned windows.
    Sliding,
    /// The generic cell rate algorithm, equivalent to a token bucket.
    Gcra,
}

impl Algorithm {
    /// Parses `FIXED`, `SLIDING` or `GCRA` in any letter case.
    pub fn parse(name: &[u8]) -> Option<Algorithm> {
        if name.eq_ignore_ascii_case(b"FIXED") {
            Some(Algorithm::Fixed)
        } else if name.eq_ignore_ascii_case(b"SLIDING") {
            Some(Algorithm::Sliding)
        } else if name.eq_ignore_ascii_case(b"GCRA") {
            Some(Algorithm::Gcra)
        } else {
            None
        }
    }

    /// The name as the contract writes it: `FIXED`, `SLIDING` or `GCRA`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Fixed => "FIXED",
            Algorithm::Sliding => "SLIDING",
            Algorithm::Gcra => "GCRA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`Limit`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// `limit` is outside 1 to [`MAX_COUNT`].
    Limit,
    /// `period` is outside 1 ms to [`MAX_PERIOD_MS`].
    Period,
    /// `burst` is outside 1 to [`MAX_COUNT`].
    Burst,
    /// `burst` was given for an algorithm other than GCRA.
    BurstWithoutGcra,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitError::Limit => "limit must be an integer from 1 to 1000000000000000",
            LimitError::Period => "period must be from 1 ms to 3650 days",
            LimitError::Burst => "burst must be an integer from 1 to 1000000000000000",
            LimitError::BurstWithoutGcra => "BURST applies only to ALGORITHM GCRA",
        })
    }
}

impl std::error::Error for LimitError {}

/// A valid limiter configuration. It cannot be built with values outside the contract's ranges,
/// so the algorithms never see a zero limit or period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    algorithm: Algorithm,
    limit: u64,
    period_ms: u64,
    burst: u64,
    /// GCRA's units per emission interval (see the `gcra` module); 0 for other algorithms.
    gcra_k: u64,
    /// GCRA's units per microsecond when that is a whole number, else 0 (see the `gcra`
    /// module); 0 for other algorithms.
    gcra_per_us: u64,
}

impl Limit {
    /// Builds a limit of `limit` units per `period_ms`. `burst` is GCRA's capacity (default
    /// `limit`); giving it for another algorithm is an error.
    pub fn new(
        algorithm: Algorithm,
        limit: u64,
        period_ms: u64,
        burst: Option<u64>,
    ) -> Result<Limit, LimitError> {
        if !(1..=MAX_COUNT).contains(&limit) {
            return Err(LimitError::Limit);
        }
        if !(1..=MAX_PERIOD_MS).contains(&period_ms) {
            return Err(LimitError::Period);
        }
        let burst = match burst {
            None => limit,
            Some(_) if algorithm != Algorithm::Gcra => return Err(LimitError::BurstWithoutGcra),
            Some(b) if (1..=MAX_COUNT).contains(&b) => b,
            Some(_) => return Err(LimitError::Burst),
        };
        let (gcra_k, gcra_per_us) = match algorithm {
            Algorithm::Gcra => {
                let period_us = period_ms * 1000;
                let k = crate::gcra::Units::per_interval(limit, period_us, burst);
                (k, crate::gcra::Units::whole_per_us(limit, period_us, k))
            }
            _ => (0, 0),
        };
        Ok(Limit {
            algorithm,
            limit,
            period_ms,
            burst,
            gcra_k,
            gcra_per_us,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Units allowed per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// The period in microseconds.
    pub fn period_us(&self) -> u64 {
        self.period_ms * 1000
    }

    /// GCRA's burst; equal to `limit` unless set, and for the other algorithms.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// GCRA's units per emission interval, computed once here rather than on every decision.
    pub(crate) fn gcra_units_per_interval(&self) -> u64 {
        self.gcra_k
    }

    /// GCRA's units per microsecond when a whole number, else 0; computed once here.
    pub(crate) fn gcra_units_per_us(&self) -> u64 {
        self.gcra_per_us
    }

    /// The capacity reported in decisions: `burst` for GCRA, `limit` otherwise.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst,
            _ => self.limit,
        }
    }
}
