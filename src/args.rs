//! Parsing of the commands' argument vectors into requests.
//!
//! Pure: no Redis calls, so it is unit-tested and fuzzed without a server. Each parser takes the
//! whole argument vector as Redis passes it, command name first, as any slice of byte strings
//! (`&[&[u8]]`, `&[Vec<u8>]` or the module's `&[RedisString]`).
//!
//! Validation order: arity, then `limit`, then `period`, then the options left to right, then the
//! combinations (`BURST` without GCRA, `FORCE` with `DRYRUN`, REFUND without `COST`). The first
//! problem found is the one reported. `RATELIMIT.MCHECK` checks `numkeys` and the keys first,
//! then each policy in order.

use crate::error::{Echo, Error};
use ratelimit_core::lease::{MAX_ID_LEN, MAX_LEASES};
use ratelimit_core::parse::{integer_in, period_ms};
use ratelimit_core::{Algorithm, Limit, LimitError, MAX_COUNT};
use std::ops::Deref;

/// The most keys, and so policies, one `RATELIMIT.MCHECK` takes.
pub const MAX_KEYS: usize = 16;

/// The module's commands, for arity and internal errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `RATELIMIT.CHECK`
    Check,
    /// `RATELIMIT.QUOTA`
    Quota,
    /// `RATELIMIT.RESET`
    Reset,
    /// `RATELIMIT.MCHECK`
    MCheck,
    /// `RATELIMIT.REFUND`
    Refund,
    /// `RATELIMIT.ACQUIRE`
    Acquire,
    /// `RATELIMIT.RELEASE`
    Release,
    /// `RATELIMIT.TOP`
    Top,
}

impl Command {
    /// The name as Redis reports it in errors: `ratelimit.check`, `ratelimit.quota`, ...
    pub fn name(self) -> &'static str {
        match self {
            Command::Check => "ratelimit.check",
            Command::Quota => "ratelimit.quota",
            Command::Reset => "ratelimit.reset",
            Command::MCheck => "ratelimit.mcheck",
            Command::Refund => "ratelimit.refund",
            Command::Acquire => "ratelimit.acquire",
            Command::Release => "ratelimit.release",
            Command::Top => "ratelimit.top",
        }
    }

    /// The name as the docs write it: `RATELIMIT.CHECK`, ...
    pub fn title(self) -> &'static str {
        match self {
            Command::Check => "RATELIMIT.CHECK",
            Command::Quota => "RATELIMIT.QUOTA",
            Command::Reset => "RATELIMIT.RESET",
            Command::MCheck => "RATELIMIT.MCHECK",
            Command::Refund => "RATELIMIT.REFUND",
            Command::Acquire => "RATELIMIT.ACQUIRE",
            Command::Release => "RATELIMIT.RELEASE",
            Command::Top => "RATELIMIT.TOP",
        }
    }
}

/// One decision to take: a parsed `RATELIMIT.CHECK` or `RATELIMIT.QUOTA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The limiter's key, `args[1]`.
    pub key: &'a [u8],
    /// The validated configuration.
    pub limit: Limit,
    /// Units the request spends (QUOTA: asks about): 1 unless `COST` says otherwise.
    pub cost: u64,
    /// Whether nothing may be written: `DRYRUN`, and always for QUOTA.
    pub dry_run: bool,
    /// `FORCE`: spend the cost even when it does not fit.
    pub force: bool,
    /// `WITHWINDOW`: reply the window as a sixth integer.
    pub with_window: bool,
}

/// A parsed `RATELIMIT.REFUND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refund<'a> {
    /// The limiter's key, `args[1]`.
    pub key: &'a [u8],
    /// The validated configuration.
    pub limit: Limit,
    /// Units to give back (`COST`).
    pub amount: u64,
    /// `WINDOW w`: the window the units were spent in.
    pub window: Option<u64>,
}

/// A parsed `RATELIMIT.MCHECK`: one request under several policies, the i-th for the i-th key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRequest {
    /// The policies: each key's limit and the cost the request spends under it.
    pub policies: Vec<(Limit, u64)>,
    /// `DRYRUN`.
    pub dry_run: bool,
    /// `FORCE`.
    pub force: bool,
    /// `WITHWINDOW`.
    pub with_window: bool,
}

/// A parsed `RATELIMIT.ACQUIRE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquire<'a> {
    /// The lease set's key, `args[1]`.
    pub key: &'a [u8],
    /// Leases allowed at once, 1 to 10^6.
    pub limit: u64,
    /// How long a lease lives unless released or renewed, in ms.
    pub lease_ms: u64,
    /// `ID id`: the lease to take or renew; `None` to have one made.
    pub id: Option<&'a [u8]>,
}

/// Parses `RATELIMIT.ACQUIRE key limit lease [ID id]`: `limit` from 1 to 10^6, `lease` with
/// CHECK's period syntax, `id` from 1 to 128 bytes.
pub fn parse_acquire<A: Deref<Target = [u8]>>(args: &[A]) -> Result<Acquire<'_>, Error> {
    let [_, key, limit, lease, options @ ..] = args else {
        return Err(Error::WrongArity(Command::Acquire));
    };
    let limit_value = integer_in(limit, 1, MAX_LEASES)
        .ok_or_else(|| Error::InvalidLeaseLimit(Echo::new(limit)))?;
    let lease_ms = parse_period(lease).map_err(|e| match e {
        Error::PeriodOutOfRange(text) => Error::LeaseOutOfRange(text),
        _ => Error::InvalidLease(Echo::new(lease)),
    })?;
    let mut id = None;
    let mut rest = options.iter();
    while let Some(word) = rest.next() {
        if !word.eq_ignore_ascii_case(b"ID") {
            return Err(Error::UnknownOption(Echo::new(word)));
        }
        if id.is_some() {
            return Err(Error::RepeatedOption("ID"));
        }
        let value: &[u8] = rest.next().ok_or(Error::MissingValue("ID"))?;
        id = Some(parse_id(value)?);
    }
    Ok(Acquire {
        key,
        limit: limit_value,
        lease_ms,
        id,
    })
}

/// Parses `RATELIMIT.RELEASE key id` and returns the key and the lease ID.
pub fn parse_release<A: Deref<Target = [u8]>>(args: &[A]) -> Result<(&[u8], &[u8]), Error> {
    match args {
        [_, key, id] => Ok((key, parse_id(id)?)),
        _ => Err(Error::WrongArity(Command::Release)),
    }
}

/// What `RATELIMIT.TOP` is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Top {
    /// The `count` most denied keys.
    Keys(usize),
    /// Forget them all.
    Reset,
}

/// Parses `RATELIMIT.TOP [count]` (count from 1 to 100,000, default 10) or
/// `RATELIMIT.TOP RESET`.
pub fn parse_top<A: Deref<Target = [u8]>>(args: &[A]) -> Result<Top, Error> {
    match args {
        [_] => Ok(Top::Keys(10)),
        [_, word] if word.eq_ignore_ascii_case(b"RESET") => Ok(Top::Reset),
        [_, count] => integer_in(count, 1, crate::top::MAX_CAPACITY as u64)
            .map(|count| Top::Keys(count as usize))
            .ok_or_else(|| Error::InvalidTopCount(Echo::new(count))),
        _ => Err(Error::WrongArity(Command::Top)),
    }
}

/// A lease ID: 1 to 128 bytes, any bytes.
fn parse_id(id: &[u8]) -> Result<&[u8], Error> {
    if (1..=MAX_ID_LEN).contains(&id.len()) {
        Ok(id)
    } else {
        Err(Error::InvalidId(Echo::new(id)))
    }
}

/// Parses `RATELIMIT.CHECK key limit period [ALGORITHM a] [BURST n] [COST n] [DRYRUN | FORCE]
/// [WITHWINDOW]`, with `default_algorithm` when there is no `ALGORITHM` (so `BURST` alone is
/// valid when it is GCRA).
///
/// Fails with the first invalid argument, in the order described in the module documentation.
pub fn parse_check<A: Deref<Target = [u8]>>(
    args: &[A],
    default_algorithm: Algorithm,
) -> Result<Request<'_>, Error> {
    parse_single(Command::Check, args, default_algorithm)
}

/// Parses `RATELIMIT.QUOTA key limit period [ALGORITHM a] [BURST n] [COST n]`: never a write,
/// with `default_algorithm` when there is no `ALGORITHM`.
///
/// Fails like [`parse_check`], and also on `DRYRUN`, `FORCE` or `WITHWINDOW`.
pub fn parse_quota<A: Deref<Target = [u8]>>(
    args: &[A],
    default_algorithm: Algorithm,
) -> Result<Request<'_>, Error> {
    parse_single(Command::Quota, args, default_algorithm)
}

/// Parses `RATELIMIT.REFUND key limit period [ALGORITHM a] [BURST n] COST n [WINDOW w]`.
///
/// Fails like [`parse_check`], on `DRYRUN`, `FORCE` or `WITHWINDOW`, on an invalid window, and
/// without `COST`.
pub fn parse_refund<A: Deref<Target = [u8]>>(
    args: &[A],
    default_algorithm: Algorithm,
) -> Result<Refund<'_>, Error> {
    // COST n is required: six arguments at least, the arity the command docs declare.
    let ([_, key, limit, period, options @ ..], true) = (args, args.len() >= 6) else {
        return Err(Error::WrongArity(Command::Refund));
    };
    let mut policy = Policy::new(limit, period)?;
    let mut flags = Flags::default();
    let mut window = None;
    let mut rest = options.iter();
    while let Some(word) = rest.next() {
        let keyword = Keyword::parse(word).ok_or_else(|| Error::UnknownOption(Echo::new(word)))?;
        match keyword {
            Keyword::Window => {
                flags.see(keyword)?;
                let value: &[u8] = rest.next().ok_or(Error::MissingValue(keyword.name()))?;
                window = Some(
                    integer_in(value, 0, u64::MAX)
                        .ok_or_else(|| Error::InvalidWindow(Echo::new(value)))?,
                );
            }
            Keyword::DryRun | Keyword::Force | Keyword::WithWindow | Keyword::Limit => {
                return Err(Error::NotAccepted(Command::Refund, keyword.name()))
            }
            _ => policy.option(keyword, &mut rest)?,
        }
    }
    let (limit, amount) = policy.finish(default_algorithm)?;
    let amount = amount.ok_or(Error::MissingCost)?;
    Ok(Refund {
        key,
        limit,
        amount,
        window,
    })
}

/// Parses `RATELIMIT.RESET key` and returns the key. Fails unless there is exactly one argument.
pub fn parse_reset<A: Deref<Target = [u8]>>(args: &[A]) -> Result<&[u8], Error> {
    match args {
        [_, key] => Ok(key),
        _ => Err(Error::WrongArity(Command::Reset)),
    }
}

/// Parses `RATELIMIT.MCHECK numkeys key [key ...] LIMIT limit period [ALGORITHM a] [BURST n]
/// [COST n] [LIMIT ...] [DRYRUN | FORCE] [WITHWINDOW]`: exactly `numkeys` policies, from 1 to
/// [`MAX_KEYS`], for distinct keys. `ALGORITHM`, `BURST` and `COST` belong to the latest
/// `LIMIT`; the flags may appear anywhere after the keys.
pub fn parse_mcheck<A: Deref<Target = [u8]>>(
    args: &[A],
    default_algorithm: Algorithm,
) -> Result<MultiRequest, Error> {
    // `numkeys key LIMIT limit period` at least: the arity the command docs declare.
    let (numkeys, rest) = match args {
        [_, numkeys, rest @ ..] if args.len() >= 6 => (numkeys, rest),
        _ => return Err(Error::WrongArity(Command::MCheck)),
    };
    let count = keys_of(args).ok_or_else(|| Error::InvalidNumKeys(Echo::new(numkeys)))?;
    if rest.len() <= count {
        return Err(Error::WrongArity(Command::MCheck));
    }
    let (keys, words) = rest.split_at(count);
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|other| **other == **key) {
            return Err(Error::RepeatedKey(Echo::new(key)));
        }
    }
    let mut policies = Vec::with_capacity(count);
    let mut flags = Flags::default();
    // The policy being read: ALGORITHM, BURST and COST belong to the latest LIMIT.
    let mut current: Option<Policy<'_>> = None;
    let mut rest = words.iter();
    while let Some(word) = rest.next() {
        let keyword = Keyword::parse(word).ok_or_else(|| Error::UnknownOption(Echo::new(word)))?;
        match keyword {
            Keyword::DryRun | Keyword::Force | Keyword::WithWindow => flags.see(keyword)?,
            Keyword::Limit => {
                let (Some(limit), Some(period)) = (rest.next(), rest.next()) else {
                    return Err(Error::WrongArity(Command::MCheck));
                };
                if let Some(policy) = current.replace(Policy::new(limit, period)?) {
                    policies.push(policy.finish(default_algorithm)?);
                }
            }
            Keyword::Window => return Err(Error::NotAccepted(Command::MCheck, keyword.name())),
            Keyword::Algorithm | Keyword::Burst | Keyword::Cost => match current.as_mut() {
                Some(policy) => policy.option(keyword, &mut rest)?,
                None => return Err(Error::ExpectedLimit(Echo::new(word))),
            },
        }
    }
    if let Some(policy) = current {
        policies.push(policy.finish(default_algorithm)?);
    }
    let policies: Vec<(Limit, u64)> = policies
        .into_iter()
        .map(|(limit, cost)| (limit, cost.unwrap_or(1)))
        .collect();
    if policies.len() != count {
        return Err(Error::PolicyCount {
            keys: count,
            policies: policies.len(),
        });
    }
    flags.combination()?;
    Ok(MultiRequest {
        policies,
        dry_run: flags.has(Keyword::DryRun),
        force: flags.has(Keyword::Force),
        with_window: flags.has(Keyword::WithWindow),
    })
}

/// The number of keys of a `RATELIMIT.MCHECK` argument vector, from 1 to [`MAX_KEYS`], when
/// `numkeys` is valid and that many keys follow it: for `COMMAND GETKEYS` and cluster routing,
/// which ask before the command is parsed.
pub fn keys_of<A: Deref<Target = [u8]>>(args: &[A]) -> Option<usize> {
    let numkeys = args.get(1)?;
    let count = integer_in(numkeys, 1, MAX_KEYS as u64)? as usize;
    (args.len() >= 2 + count).then_some(count)
}

/// The options of the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Algorithm,
    Burst,
    Cost,
    DryRun,
    Force,
    WithWindow,
    Window,
    Limit,
}

impl Keyword {
    const ALL: [Keyword; 8] = [
        Keyword::Algorithm,
        Keyword::Burst,
        Keyword::Cost,
        Keyword::DryRun,
        Keyword::Force,
        Keyword::WithWindow,
        Keyword::Window,
        Keyword::Limit,
    ];

    fn parse(word: &[u8]) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|k| word.eq_ignore_ascii_case(k.name().as_bytes()))
    }

    fn name(self) -> &'static str {
        match self {
            Keyword::Algorithm => "ALGORITHM",
            Keyword::Burst => "BURST",
            Keyword::Cost => "COST",
            Keyword::DryRun => "DRYRUN",
            Keyword::Force => "FORCE",
            Keyword::WithWindow => "WITHWINDOW",
            Keyword::Window => "WINDOW",
            Keyword::Limit => "LIMIT",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The options seen so far, each allowed once.
#[derive(Debug, Default, Clone, Copy)]
struct Flags(u16);

impl Flags {
    fn see(&mut self, keyword: Keyword) -> Result<(), Error> {
        if self.has(keyword) {
            return Err(Error::RepeatedOption(keyword.name()));
        }
        self.0 |= keyword.bit();
        Ok(())
    }

    fn has(self, keyword: Keyword) -> bool {
        self.0 & keyword.bit() != 0
    }

    fn combination(self) -> Result<(), Error> {
        if self.has(Keyword::DryRun) && self.has(Keyword::Force) {
            return Err(Error::ForceWithDryRun);
        }
        Ok(())
    }
}

/// A policy being parsed: `limit period [ALGORITHM a] [BURST n] [COST n]`.
struct Policy<'a> {
    limit: u64,
    limit_text: &'a [u8],
    period: u64,
    period_text: &'a [u8],
    algorithm: Option<Algorithm>,
    burst: Option<u64>,
    burst_text: &'a [u8],
    cost: Option<u64>,
    seen: Flags,
}

impl<'a> Policy<'a> {
    fn new(limit_text: &'a [u8], period_text: &'a [u8]) -> Result<Policy<'a>, Error> {
        let limit = integer_in(limit_text, 1, MAX_COUNT)
            .ok_or_else(|| Error::InvalidLimit(Echo::new(limit_text)))?;
        let period = parse_period(period_text)?;
        Ok(Policy {
            limit,
            limit_text,
            period,
            period_text,
            algorithm: None,
            burst: None,
            burst_text: b"",
            cost: None,
            seen: Flags::default(),
        })
    }

    /// Reads the value of `keyword` (ALGORITHM, BURST or COST) from `rest`.
    fn option<A: Deref<Target = [u8]> + 'a>(
        &mut self,
        keyword: Keyword,
        rest: &mut std::slice::Iter<'a, A>,
    ) -> Result<(), Error> {
        self.seen.see(keyword)?;
        let value: &[u8] = rest.next().ok_or(Error::MissingValue(keyword.name()))?;
        match keyword {
            Keyword::Algorithm => {
                self.algorithm = Some(
                    Algorithm::parse(value)
                        .ok_or_else(|| Error::UnknownAlgorithm(Echo::new(value)))?,
                );
            }
            Keyword::Burst => {
                self.burst_text = value;
                self.burst = Some(
                    integer_in(value, 1, MAX_COUNT)
                        .ok_or_else(|| Error::InvalidBurst(Echo::new(value)))?,
                );
            }
            Keyword::Cost => {
                self.cost = Some(
                    integer_in(value, 0, MAX_COUNT)
                        .ok_or_else(|| Error::InvalidCost(Echo::new(value)))?,
                );
            }
            _ => unreachable_option(keyword)?,
        }
        Ok(())
    }

    /// The validated limit and the cost, if one was given.
    fn finish(self, default_algorithm: Algorithm) -> Result<(Limit, Option<u64>), Error> {
        let algorithm = self.algorithm.unwrap_or(default_algorithm);
        let limit = Limit::new(algorithm, self.limit, self.period, self.burst).map_err(|e| {
            match e {
                LimitError::BurstWithoutGcra => Error::BurstWithoutGcra,
                // The three below were ruled out above; kept so a change in core cannot go
                // unreported.
                LimitError::Limit => Error::InvalidLimit(Echo::new(self.limit_text)),
                LimitError::Period => Error::PeriodOutOfRange(Echo::new(self.period_text)),
                LimitError::Burst => Error::InvalidBurst(Echo::new(self.burst_text)),
            }
        })?;
        Ok((limit, self.cost))
    }
}

/// Only ALGORITHM, BURST and COST reach [`Policy::option`]; anything else is a bug, reported as
/// an unknown option rather than a panic.
fn unreachable_option(keyword: Keyword) -> Result<(), Error> {
    Err(Error::UnknownOption(Echo::new(keyword.name().as_bytes())))
}

/// CHECK and QUOTA.
fn parse_single<A: Deref<Target = [u8]>>(
    command: Command,
    args: &[A],
    default_algorithm: Algorithm,
) -> Result<Request<'_>, Error> {
    let [_, key, limit, period, options @ ..] = args else {
        return Err(Error::WrongArity(command));
    };
    let mut policy = Policy::new(limit, period)?;
    let mut flags = Flags::default();
    let mut rest = options.iter();
    while let Some(word) = rest.next() {
        let keyword = Keyword::parse(word).ok_or_else(|| Error::UnknownOption(Echo::new(word)))?;
        match keyword {
            Keyword::Window | Keyword::Limit => return Err(Error::UnknownOption(Echo::new(word))),
            Keyword::DryRun | Keyword::Force | Keyword::WithWindow if command == Command::Quota => {
                return Err(Error::NotAccepted(command, keyword.name()))
            }
            Keyword::DryRun | Keyword::Force | Keyword::WithWindow => flags.see(keyword)?,
            _ => policy.option(keyword, &mut rest)?,
        }
    }
    let (limit, cost) = policy.finish(default_algorithm)?;
    flags.combination()?;
    Ok(Request {
        key,
        limit,
        cost: cost.unwrap_or(1),
        dry_run: command == Command::Quota || flags.has(Keyword::DryRun),
        force: flags.has(Keyword::Force),
        with_window: flags.has(Keyword::WithWindow),
    })
}

/// Parses a period, telling a malformed one (`5x`) from a well-formed one out of range (`0`,
/// `3651d`).
fn parse_period(text: &[u8]) -> Result<u64, Error> {
    if let Some(ms) = period_ms(text) {
        return Ok(ms);
    }
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let unit = &text[digits..];
    let well_formed = digits > 0
        && [&b""[..], b"ms", b"s", b"m", b"h", b"d"]
            .iter()
            .any(|u| unit.eq_ignore_ascii_case(u));
    Err(if well_formed {
        Error::PeriodOutOfRange(Echo::new(text))
    } else {
        Error::InvalidPeriod(Echo::new(text))
    })
}

#[cfg(test)]
mod tests;
