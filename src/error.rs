//! The module's error replies.
//!
//! Every variant displays as the exact text of its Redis error reply, code first (`ERR ...`,
//! `WRONGTYPE ...`). Text echoed from the client is sanitized when the error is built, so a
//! message can never carry CR, LF or NUL into the protocol.

use crate::args::{Command, MAX_KEYS};
use ratelimit_core::lease::{MAX_ID_LEN, MAX_LEASES};
use ratelimit_core::{Algorithm, DecodeError, WrongAlgorithm, MAX_COUNT};
use std::fmt;

/// How many bytes of a client's argument an error message echoes before cutting it with `...`.
pub const MAX_ECHO: usize = 64;

/// A client's argument made safe to echo inside an error reply: every byte that is not printable
/// ASCII (including CR, LF and NUL) becomes `?`, and anything past [`MAX_ECHO`] bytes is cut and
/// marked with `...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo(String);

impl Echo {
    /// Sanitizes `text` for an error message.
    pub fn new(text: &[u8]) -> Echo {
        let mut out: String = text
            .iter()
            .take(MAX_ECHO)
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect();
        if text.len() > MAX_ECHO {
            out.push_str("...");
        }
        Echo(out)
    }

    /// The sanitized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a command can answer instead of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Too few or too many arguments for the command.
    WrongArity(Command),
    /// `limit` is not an integer from 1 to 10^15.
    InvalidLimit(Echo),
    /// `period` is not an integer with an optional unit.
    InvalidPeriod(Echo),
    /// `period` is well formed but outside 1 ms to 3650 days.
    PeriodOutOfRange(Echo),
    /// `BURST` is not an integer from 1 to 10^15.
    InvalidBurst(Echo),
    /// `COST` is not an integer from 0 to 10^15.
    InvalidCost(Echo),
    /// `ALGORITHM` names none of FIXED, SLIDING and GCRA.
    UnknownAlgorithm(Echo),
    /// An argument after `period` that is no option.
    UnknownOption(Echo),
    /// An option given twice; holds its keyword.
    RepeatedOption(&'static str),
    /// An option that takes a value came last; holds its keyword.
    MissingValue(&'static str),
    /// `BURST` with an algorithm other than GCRA.
    BurstWithoutGcra,
    /// A command was given an option that only another command takes; holds its keyword.
    NotAccepted(Command, &'static str),
    /// `FORCE` and `DRYRUN` together.
    ForceWithDryRun,
    /// `RATELIMIT.REFUND` without `COST`.
    MissingCost,
    /// `WINDOW` is not a non-negative integer.
    InvalidWindow(Echo),
    /// `numkeys` of `RATELIMIT.MCHECK` is not an integer from 1 to 16.
    InvalidNumKeys(Echo),
    /// A key given twice to `RATELIMIT.MCHECK`.
    RepeatedKey(Echo),
    /// `RATELIMIT.MCHECK` was given another number of policies than of keys.
    PolicyCount {
        /// `numkeys`.
        keys: usize,
        /// The `LIMIT` policies given.
        policies: usize,
    },
    /// An option of a policy where `RATELIMIT.MCHECK` expects `LIMIT`.
    ExpectedLimit(Echo),
    /// `limit` of `RATELIMIT.ACQUIRE` is not an integer from 1 to 10^6.
    InvalidLeaseLimit(Echo),
    /// `lease` is not an integer with an optional unit.
    InvalidLease(Echo),
    /// `lease` is well formed but outside 1 ms to 3650 days.
    LeaseOutOfRange(Echo),
    /// A lease ID that is empty or longer than 128 bytes.
    InvalidId(Echo),
    /// `count` of `RATELIMIT.TOP` is not an integer from 1 to 100,000.
    InvalidTopCount(Echo),
    /// A write called from a script that Redis 6.2 replicates verbatim
    /// (`lua-replicate-commands no`): replicas and the AOF would decide again on their own
    /// clocks.
    VerbatimScript(Command),
    /// The key holds another Redis type than a string.
    WrongType,
    /// The key holds the state of another algorithm than the one requested.
    WrongAlgorithm(WrongAlgorithm),
    /// The key holds a string that is no limiter state.
    NotALimiter,
    /// The command panicked; the panic was caught and logged.
    Internal(Command),
}

impl Error {
    /// The Redis error code the reply starts with: `ERR` or `WRONGTYPE`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::WrongType => "WRONGTYPE",
            _ => "ERR",
        }
    }

    /// Whether the request itself was malformed, as opposed to the key's contents or a bug.
    pub fn is_invalid_request(&self) -> bool {
        !matches!(
            self,
            Error::WrongType
                | Error::WrongAlgorithm(_)
                | Error::NotALimiter
                | Error::VerbatimScript(_)
                | Error::Internal(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongArity(command) => write!(
                f,
                "ERR wrong number of arguments for '{}' command",
                command.name()
            ),
            Error::InvalidLimit(text) => write!(
                f,
                "ERR invalid limit '{text}': expected an integer from 1 to {MAX_COUNT}"
            ),
            Error::InvalidPeriod(text) => write!(
                f,
                "ERR invalid period '{text}': expected an integer with optional unit ms, s, m, h or d"
            ),
            Error::PeriodOutOfRange(text) => write!(
                f,
                "ERR invalid period '{text}': expected from 1ms to 3650d"
            ),
            Error::InvalidBurst(text) => write!(
                f,
                "ERR invalid burst '{text}': expected an integer from 1 to {MAX_COUNT}"
            ),
            Error::InvalidCost(text) => write!(
                f,
                "ERR invalid cost '{text}': expected an integer from 0 to {MAX_COUNT}"
            ),
            Error::UnknownAlgorithm(text) => write!(
                f,
                "ERR unknown algorithm '{text}': expected {}, {} or {}",
                Algorithm::Fixed,
                Algorithm::Sliding,
                Algorithm::Gcra
            ),
            Error::UnknownOption(text) => write!(f, "ERR unknown option '{text}'"),
            Error::RepeatedOption(keyword) => {
                write!(f, "ERR option '{keyword}' given more than once")
            }
            Error::MissingValue(keyword) => write!(f, "ERR option '{keyword}' needs a value"),
            Error::BurstWithoutGcra => f.write_str("ERR BURST applies only to ALGORITHM GCRA"),
            Error::NotAccepted(command, keyword) => {
                write!(f, "ERR {} does not accept '{keyword}'", command.title())
            }
            Error::ForceWithDryRun => f.write_str("ERR FORCE and DRYRUN cannot be combined"),
            Error::MissingCost => f.write_str("ERR RATELIMIT.REFUND needs COST n"),
            Error::InvalidWindow(text) => write!(
                f,
                "ERR invalid window '{text}': expected a non-negative integer"
            ),
            Error::InvalidNumKeys(text) => write!(
                f,
                "ERR invalid numkeys '{text}': expected an integer from 1 to {MAX_KEYS}, followed by that many keys"
            ),
            Error::RepeatedKey(text) => write!(f, "ERR key '{text}' given more than once"),
            Error::PolicyCount { keys, policies } => write!(
                f,
                "ERR expected {keys} policies (one LIMIT limit period ... per key), got {policies}"
            ),
            Error::ExpectedLimit(text) => {
                write!(f, "ERR expected LIMIT limit period before '{text}'")
            }
            Error::InvalidLeaseLimit(text) => write!(
                f,
                "ERR invalid limit '{text}': expected an integer from 1 to {MAX_LEASES}"
            ),
            Error::InvalidLease(text) => write!(
                f,
                "ERR invalid lease '{text}': expected an integer with optional unit ms, s, m, h or d"
            ),
            Error::LeaseOutOfRange(text) => {
                write!(f, "ERR invalid lease '{text}': expected from 1ms to 3650d")
            }
            Error::InvalidId(text) => write!(
                f,
                "ERR invalid lease ID '{text}': expected 1 to {MAX_ID_LEN} bytes"
            ),
            Error::InvalidTopCount(text) => write!(
                f,
                "ERR invalid count '{text}': expected an integer from 1 to {}, or RESET",
                crate::top::MAX_CAPACITY
            ),
            Error::VerbatimScript(command) => write!(
                f,
                "ERR {} cannot write from a script that is replicated verbatim \
                 (lua-replicate-commands no): replicas and the AOF would decide again on their \
                 own clocks. Set lua-replicate-commands yes",
                command.title()
            ),
            Error::WrongType => {
                f.write_str("WRONGTYPE Operation against a key holding the wrong kind of value")
            }
            Error::WrongAlgorithm(w) => write!(
                f,
                "ERR the key holds a {} limiter, not {}",
                w.found, w.requested
            ),
            Error::NotALimiter => {
                f.write_str("ERR the key holds a value that is not a rate limiter state")
            }
            Error::Internal(command) => write!(f, "ERR internal error in {}", command.name()),
        }
    }
}

impl std::error::Error for Error {}

impl From<WrongAlgorithm> for Error {
    fn from(wrong: WrongAlgorithm) -> Error {
        Error::WrongAlgorithm(wrong)
    }
}

impl From<DecodeError> for Error {
    fn from(_: DecodeError) -> Error {
        Error::NotALimiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_message() {
        let e = |text: &[u8]| Echo::new(text);
        let cases = [
            (
                Error::WrongArity(Command::Check),
                "ERR wrong number of arguments for 'ratelimit.check' command",
            ),
            (
                Error::WrongArity(Command::Quota),
                "ERR wrong number of arguments for 'ratelimit.quota' command",
            ),
            (
                Error::WrongArity(Command::Reset),
                "ERR wrong number of arguments for 'ratelimit.reset' command",
            ),
            (
                Error::InvalidLimit(e(b"abc")),
                "ERR invalid limit 'abc': expected an integer from 1 to 1000000000000000",
            ),
            (
                Error::InvalidPeriod(e(b"5x")),
                "ERR invalid period '5x': expected an integer with optional unit ms, s, m, h or d",
            ),
            (
                Error::PeriodOutOfRange(e(b"0")),
                "ERR invalid period '0': expected from 1ms to 3650d",
            ),
            (
                Error::InvalidBurst(e(b"x")),
                "ERR invalid burst 'x': expected an integer from 1 to 1000000000000000",
            ),
            (
                Error::InvalidCost(e(b"x")),
                "ERR invalid cost 'x': expected an integer from 0 to 1000000000000000",
            ),
            (
                Error::UnknownAlgorithm(e(b"X")),
                "ERR unknown algorithm 'X': expected FIXED, SLIDING or GCRA",
            ),
            (Error::UnknownOption(e(b"FOO")), "ERR unknown option 'FOO'"),
            (
                Error::RepeatedOption("COST"),
                "ERR option 'COST' given more than once",
            ),
            (
                Error::MissingValue("BURST"),
                "ERR option 'BURST' needs a value",
            ),
            (
                Error::BurstWithoutGcra,
                "ERR BURST applies only to ALGORITHM GCRA",
            ),
            (
                Error::NotAccepted(Command::Quota, "DRYRUN"),
                "ERR RATELIMIT.QUOTA does not accept 'DRYRUN'",
            ),
            (
                Error::NotAccepted(Command::Refund, "FORCE"),
                "ERR RATELIMIT.REFUND does not accept 'FORCE'",
            ),
            (
                Error::ForceWithDryRun,
                "ERR FORCE and DRYRUN cannot be combined",
            ),
            (Error::MissingCost, "ERR RATELIMIT.REFUND needs COST n"),
            (
                Error::InvalidWindow(e(b"-1")),
                "ERR invalid window '-1': expected a non-negative integer",
            ),
            (
                Error::InvalidNumKeys(e(b"17")),
                "ERR invalid numkeys '17': expected an integer from 1 to 16, followed by that many keys",
            ),
            (
                Error::RepeatedKey(e(b"k")),
                "ERR key 'k' given more than once",
            ),
            (
                Error::PolicyCount {
                    keys: 3,
                    policies: 2,
                },
                "ERR expected 3 policies (one LIMIT limit period ... per key), got 2",
            ),
            (
                Error::ExpectedLimit(e(b"COST")),
                "ERR expected LIMIT limit period before 'COST'",
            ),
            (
                Error::InvalidLeaseLimit(e(b"0")),
                "ERR invalid limit '0': expected an integer from 1 to 1000000",
            ),
            (
                Error::InvalidLease(e(b"5x")),
                "ERR invalid lease '5x': expected an integer with optional unit ms, s, m, h or d",
            ),
            (
                Error::LeaseOutOfRange(e(b"0ms")),
                "ERR invalid lease '0ms': expected from 1ms to 3650d",
            ),
            (
                Error::InvalidId(e(b"")),
                "ERR invalid lease ID '': expected 1 to 128 bytes",
            ),
            (
                Error::WrongArity(Command::Acquire),
                "ERR wrong number of arguments for 'ratelimit.acquire' command",
            ),
            (
                Error::InvalidTopCount(e(b"0")),
                "ERR invalid count '0': expected an integer from 1 to 100000, or RESET",
            ),
            (
                Error::VerbatimScript(Command::Check),
                "ERR RATELIMIT.CHECK cannot write from a script that is replicated verbatim \
                 (lua-replicate-commands no): replicas and the AOF would decide again on their \
                 own clocks. Set lua-replicate-commands yes",
            ),
            (
                Error::WrongType,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (
                Error::WrongAlgorithm(WrongAlgorithm {
                    found: Algorithm::Sliding,
                    requested: Algorithm::Gcra,
                }),
                "ERR the key holds a SLIDING limiter, not GCRA",
            ),
            (
                Error::from(DecodeError),
                "ERR the key holds a value that is not a rate limiter state",
            ),
            (
                Error::Internal(Command::Check),
                "ERR internal error in ratelimit.check",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
            assert!(expected.starts_with(error.code()), "{expected}");
        }
    }

    #[test]
    fn echo_is_safe_for_the_protocol() {
        assert_eq!(Echo::new(b"abc").as_str(), "abc");
        assert_eq!(Echo::new(b"").as_str(), "");
        assert_eq!(Echo::new(b"a\r\nb\0c\x7f\xffd\t").as_str(), "a??b?c??d?");
        assert_eq!(Echo::new("é".as_bytes()).as_str(), "??");
        let long = [b'x'; 100];
        let echoed = Echo::new(&long);
        assert_eq!(echoed.as_str(), format!("{}...", "x".repeat(MAX_ECHO)));
        assert_eq!(Echo::new(&long[..MAX_ECHO]).as_str(), "x".repeat(MAX_ECHO));
        let message = Error::UnknownOption(Echo::new(b"\r\n-ERR injected\r\n")).to_string();
        assert_eq!(message, "ERR unknown option '??-ERR injected??'");
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(Error::WrongType.code(), "WRONGTYPE");
        assert_eq!(Error::NotALimiter.code(), "ERR");
        assert!(Error::BurstWithoutGcra.is_invalid_request());
        assert!(!Error::NotALimiter.is_invalid_request());
        assert!(!Error::Internal(Command::Reset).is_invalid_request());
    }
}
