//! The contract's argument grammar, written independently of the module: given an argument
//! vector, says whether the call must fail, must succeed (and with what configuration), or may
//! do either because the contract leaves the spelling open (leading zeros, `+5`, `10S`).
//!
//! The grammar, version 2:
//! - `CHECK key limit period [ALGORITHM a] [BURST n] [COST n] [DRYRUN | FORCE] [WITHWINDOW]`
//! - `QUOTA key limit period [ALGORITHM a] [BURST n] [COST n]`
//! - `REFUND key limit period [ALGORITHM a] [BURST n] COST n [WINDOW w]`
//! - `MCHECK numkeys key [key ...] policy [policy ...] [DRYRUN | FORCE] [WITHWINDOW]`, with
//!   `policy = LIMIT limit period [ALGORITHM a] [BURST n] [COST n]`: `numkeys` from 1 to 16,
//!   distinct keys, exactly `numkeys` policies, each option belonging to the latest `LIMIT`, the
//!   flags anywhere after the keys.
//! - `RESET key`
//!
//! Every option at most once (per policy, for MCHECK's), keywords in any letter case, `BURST`
//! only with `ALGORITHM GCRA`, `FORCE` never with `DRYRUN`.

/// The largest limit, burst and cost: 10^15.
pub const MAX_COUNT: u64 = 1_000_000_000_000_000;
/// The longest period: 3650 days.
pub const MAX_PERIOD_MS: u64 = 3650 * 86_400_000;
/// The most keys of one MCHECK.
pub const MAX_KEYS: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Check,
    Quota,
    Refund,
    MCheck,
    Reset,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Check => "RATELIMIT.CHECK",
            Command::Quota => "RATELIMIT.QUOTA",
            Command::Refund => "RATELIMIT.REFUND",
            Command::MCheck => "RATELIMIT.MCHECK",
            Command::Reset => "RATELIMIT.RESET",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Fixed,
    Sliding,
    Gcra,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Fixed, Algorithm::Sliding, Algorithm::Gcra];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Fixed => "FIXED",
            Algorithm::Sliding => "SLIDING",
            Algorithm::Gcra => "GCRA",
        }
    }
}

/// One limit and what a request spends under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub algorithm: Algorithm,
    pub limit: u64,
    pub period_ms: u64,
    pub burst: Option<u64>,
    /// `COST`, 1 when absent (REFUND's is required).
    pub cost: u64,
}

impl Policy {
    /// `burst` for GCRA (default `limit`), `limit` otherwise.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst.unwrap_or(self.limit),
            _ => self.limit,
        }
    }
}

/// A CHECK, QUOTA or REFUND call whose arguments are all valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub command: Command,
    pub policy: Policy,
    pub dry_run: bool,
    pub force: bool,
    pub with_window: bool,
    /// REFUND's `WINDOW`.
    pub window: Option<u64>,
}

impl Call {
    /// Whether this call, made on a fresh key, writes it: an admitted or forced CHECK that
    /// spends something. QUOTA never writes, and a REFUND finds nothing to give back.
    pub fn writes_when_fresh(&self) -> bool {
        let p = &self.policy;
        self.command == Command::Check
            && !self.dry_run
            && p.cost > 0
            && (p.cost <= p.capacity() || self.force)
    }
}

/// An MCHECK call whose arguments are all valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multi {
    pub policies: Vec<Policy>,
    pub dry_run: bool,
    pub force: bool,
    pub with_window: bool,
}

impl Multi {
    /// Whether the i-th key, if new, is never written, whatever the other keys hold: the call
    /// is a dry run, or the i-th policy spends nothing, or some policy can never admit the
    /// request and there is no FORCE. When every key is new, the others are written.
    pub fn never_writes(&self, i: usize) -> bool {
        let hopeless = !self.force && self.policies.iter().any(|p| p.cost > p.capacity());
        self.dry_run || self.policies[i].cost == 0 || hopeless
    }
}

/// What the contract says of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Bad arguments: an error, and nothing written.
    Error,
    /// Valid CHECK, QUOTA or REFUND arguments.
    Valid(Call),
    /// Valid MCHECK arguments.
    Multi(Multi),
    /// A valid RESET.
    Reset,
    /// The contract does not settle it: either an error or a well-formed reply.
    Either,
}

/// A parsed token: valid with its value, invalid, or spelled in a way the contract leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Valid(u64),
    Invalid,
    Ambiguous,
}

/// A decimal integer in `min..=max`. Only plain digits are valid; leading zeros and a `+` sign
/// are integers too in some readings, so they are ambiguous when the value is in range.
fn integer(text: &[u8], min: u64, max: u64) -> Token {
    let (digits, ambiguous) = match text {
        [b'+', rest @ ..] => (rest, true),
        [b'0', _, ..] => (text, true),
        _ => (text, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        // "-0" is zero in some readings.
        if text.len() > 1 && text[0] == b'-' && text[1..].iter().all(|&b| b == b'0') && min == 0 {
            return Token::Ambiguous;
        }
        return Token::Invalid;
    }
    let trimmed = {
        let start = digits
            .iter()
            .position(|&b| b != b'0')
            .unwrap_or(digits.len());
        &digits[start..]
    };
    // u64::MAX has 20 digits; more never fit, and parse() rejects an overflow of 20.
    let value = if trimmed.is_empty() {
        Some(0)
    } else if trimmed.len() > 20 {
        None
    } else {
        std::str::from_utf8(trimmed).unwrap().parse::<u64>().ok()
    };
    match value {
        Some(v) if (min..=max).contains(&v) => {
            if ambiguous {
                Token::Ambiguous
            } else {
                Token::Valid(v)
            }
        }
        _ => Token::Invalid,
    }
}

/// A period: an integer of seconds, or an integer with a unit `ms`, `s`, `m`, `h` or `d`.
/// An upper-case unit is ambiguous (the contract spells units in lower case only).
fn period(text: &[u8]) -> Token {
    let split = text
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (scale, unit_ambiguous) = match unit {
        b"" | b"s" => (1000u64, false),
        b"ms" => (1, false),
        b"m" => (60_000, false),
        b"h" => (3_600_000, false),
        b"d" => (86_400_000, false),
        b"S" => (1000, true),
        b"MS" | b"Ms" | b"mS" => (1, true),
        b"M" => (60_000, true),
        b"H" => (3_600_000, true),
        b"D" => (86_400_000, true),
        _ => return Token::Invalid,
    };
    let count = match integer(number, 1, u64::MAX) {
        Token::Invalid => return Token::Invalid,
        other => other,
    };
    let ms = match count {
        Token::Valid(n) => n.checked_mul(scale),
        // Ambiguous spelling of a number: judge its range by the digits alone.
        _ => {
            let digits: Vec<u8> = number.iter().copied().filter(u8::is_ascii_digit).collect();
            match integer(trim_zeros(&digits), 1, u64::MAX) {
                Token::Valid(n) => n.checked_mul(scale),
                _ => None,
            }
        }
    };
    match ms {
        Some(ms) if (1..=MAX_PERIOD_MS).contains(&ms) => {
            if unit_ambiguous || count == Token::Ambiguous {
                Token::Ambiguous
            } else {
                Token::Valid(ms)
            }
        }
        _ => Token::Invalid,
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(digits.len());
    if start == digits.len() {
        b"0"
    } else {
        &digits[start..]
    }
}

fn algorithm(text: &[u8]) -> Option<Algorithm> {
    Algorithm::ALL
        .into_iter()
        .find(|a| text.eq_ignore_ascii_case(a.name().as_bytes()))
}

/// Why a classification stopped: the call is an error.
struct Bad;

/// Reads tokens, remembering whether any was spelled ambiguously.
#[derive(Default)]
struct Reader {
    ambiguous: bool,
}

impl Reader {
    fn take(&mut self, token: Token) -> Result<u64, Bad> {
        match token {
            Token::Valid(v) => Ok(v),
            Token::Ambiguous => {
                self.ambiguous = true;
                Ok(0)
            }
            Token::Invalid => Err(Bad),
        }
    }
}

/// A policy being read: `limit period` and its options, each at most once.
struct PolicyBuilder {
    limit: u64,
    period_ms: u64,
    algorithm: Option<Algorithm>,
    burst: Option<u64>,
    cost: Option<u64>,
}

impl PolicyBuilder {
    fn new(reader: &mut Reader, limit: &[u8], period_text: &[u8]) -> Result<Self, Bad> {
        Ok(PolicyBuilder {
            limit: reader.take(integer(limit, 1, MAX_COUNT))?,
            period_ms: reader.take(period(period_text))?,
            algorithm: None,
            burst: None,
            cost: None,
        })
    }

    /// Reads the value of ALGORITHM, BURST or COST (`keyword`, upper case) from `value`.
    /// Answers `Ok(false)` when `keyword` is none of them.
    fn option(
        &mut self,
        reader: &mut Reader,
        keyword: &[u8],
        value: Option<&Vec<u8>>,
    ) -> Result<bool, Bad> {
        match keyword {
            b"ALGORITHM" => {
                let found = value.and_then(|v| algorithm(v)).ok_or(Bad)?;
                once(&mut self.algorithm, found)?;
            }
            b"BURST" => {
                let n = reader.take(integer(value.ok_or(Bad)?, 1, MAX_COUNT))?;
                once(&mut self.burst, n)?;
            }
            b"COST" => {
                let n = reader.take(integer(value.ok_or(Bad)?, 0, MAX_COUNT))?;
                once(&mut self.cost, n)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish(self) -> Result<Policy, Bad> {
        let algorithm = self.algorithm.unwrap_or(Algorithm::Fixed);
        if self.burst.is_some() && algorithm != Algorithm::Gcra {
            return Err(Bad);
        }
        Ok(Policy {
            algorithm,
            limit: self.limit,
            period_ms: self.period_ms,
            burst: self.burst,
            cost: self.cost.unwrap_or(1),
        })
    }
}

/// Sets `slot` to `value`, failing if it was set already (an option given twice).
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), Bad> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(Bad),
    }
}

/// The flags of CHECK and MCHECK.
#[derive(Default)]
struct Flags {
    dry_run: bool,
    force: bool,
    with_window: bool,
}

impl Flags {
    /// Takes `keyword` (upper case) if it is a flag; `Ok(false)` when it is none.
    fn take(&mut self, keyword: &[u8]) -> Result<bool, Bad> {
        let slot = match keyword {
            b"DRYRUN" => &mut self.dry_run,
            b"FORCE" => &mut self.force,
            b"WITHWINDOW" => &mut self.with_window,
            _ => return Ok(false),
        };
        if *slot {
            return Err(Bad);
        }
        *slot = true;
        Ok(true)
    }

    fn check(&self) -> Result<(), Bad> {
        if self.dry_run && self.force {
            Err(Bad)
        } else {
            Ok(())
        }
    }
}

/// Classifies `command` applied to `args` (the arguments after the command name).
pub fn classify(command: Command, args: &[Vec<u8>]) -> Expect {
    let mut reader = Reader::default();
    let outcome = match command {
        Command::Reset => {
            return if args.len() == 1 {
                Expect::Reset
            } else {
                Expect::Error
            }
        }
        Command::MCheck => multi(&mut reader, args),
        _ => single(&mut reader, command, args),
    };
    match outcome {
        Err(Bad) => Expect::Error,
        Ok(_) if reader.ambiguous => Expect::Either,
        Ok(expect) => expect,
    }
}

/// CHECK, QUOTA and REFUND.
fn single(reader: &mut Reader, command: Command, args: &[Vec<u8>]) -> Result<Expect, Bad> {
    let [_, limit, period_text, options @ ..] = args else {
        return Err(Bad);
    };
    let mut policy = PolicyBuilder::new(reader, limit, period_text)?;
    let mut flags = Flags::default();
    let mut window = None;
    let mut i = 0;
    while i < options.len() {
        let keyword = options[i].to_ascii_uppercase();
        let value = options.get(i + 1);
        if policy.option(reader, &keyword, value)? {
            i += 2;
        } else if command == Command::Check && flags.take(&keyword)? {
            i += 1;
        } else if command == Command::Refund && keyword == b"WINDOW" {
            let w = reader.take(integer(value.ok_or(Bad)?, 0, u64::MAX))?;
            once(&mut window, w)?;
            i += 2;
        } else {
            return Err(Bad);
        }
    }
    if command == Command::Refund && policy.cost.is_none() {
        return Err(Bad);
    }
    let policy = policy.finish()?;
    flags.check()?;
    Ok(Expect::Valid(Call {
        command,
        policy,
        dry_run: flags.dry_run,
        force: flags.force,
        with_window: flags.with_window,
        window,
    }))
}

/// MCHECK. An ambiguous `numkeys` ("02") leaves the rest unreadable, so the whole call is.
fn multi(reader: &mut Reader, args: &[Vec<u8>]) -> Result<Expect, Bad> {
    let [numkeys, rest @ ..] = args else {
        return Err(Bad);
    };
    let count = match integer(numkeys, 1, MAX_KEYS) {
        Token::Valid(n) => n as usize,
        Token::Ambiguous => {
            reader.ambiguous = true;
            return Ok(Expect::Either);
        }
        Token::Invalid => return Err(Bad),
    };
    if rest.len() <= count {
        return Err(Bad);
    }
    let (keys, words) = rest.split_at(count);
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].contains(key) {
            return Err(Bad);
        }
    }
    let mut policies = Vec::new();
    let mut current: Option<PolicyBuilder> = None;
    let mut flags = Flags::default();
    let mut i = 0;
    while i < words.len() {
        let keyword = words[i].to_ascii_uppercase();
        if flags.take(&keyword)? {
            i += 1;
        } else if keyword == b"LIMIT" {
            let (Some(limit), Some(period_text)) = (words.get(i + 1), words.get(i + 2)) else {
                return Err(Bad);
            };
            let next = PolicyBuilder::new(reader, limit, period_text)?;
            if let Some(done) = current.replace(next) {
                policies.push(done.finish()?);
            }
            i += 3;
        } else {
            let policy = current.as_mut().ok_or(Bad)?;
            if !policy.option(reader, &keyword, words.get(i + 1))? {
                return Err(Bad);
            }
            i += 2;
        }
    }
    if let Some(done) = current {
        policies.push(done.finish()?);
    }
    if policies.len() != count {
        return Err(Bad);
    }
    flags.check()?;
    Ok(Expect::Multi(Multi {
        policies,
        dry_run: flags.dry_run,
        force: flags.force,
        with_window: flags.with_window,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_oracle_reads_the_contract() {
        let valid = |c, a: &[&str]| matches!(classify(c, &args(a)), Expect::Valid(_));
        let multi = |a: &[&str]| match classify(Command::MCheck, &args(a)) {
            Expect::Multi(m) => Some(m),
            _ => None,
        };
        let error = |c, a: &[&str]| classify(c, &args(a)) == Expect::Error;
        let either = |c, a: &[&str]| classify(c, &args(a)) == Expect::Either;
        use Command::*;
        assert!(valid(Check, &["k", "3", "10s"]));
        assert!(valid(
            Check,
            &[
                "k",
                "3",
                "10",
                "dryrun",
                "cost",
                "0",
                "burst",
                "2",
                "algorithm",
                "gcra"
            ]
        ));
        assert!(valid(Check, &["k", "1000000000000000", "3650d"]));
        assert!(valid(
            Check,
            &["k", "3", "1s", "FORCE", "withwindow", "COST", "9"]
        ));
        assert!(valid(Quota, &["k", "1", "1ms", "ALGORITHM", "SLIDING"]));
        assert!(valid(Quota, &["k", "1", "1ms", "COST", "1"]));
        assert!(error(Quota, &["k", "1", "1ms", "DRYRUN"]));
        assert!(error(Quota, &["k", "1", "1ms", "FORCE"]));
        assert!(error(Quota, &["k", "1", "1ms", "WITHWINDOW"]));
        assert!(error(Check, &["k", "3"]));
        assert!(error(Check, &["k", "1000000000000001", "1s"]));
        assert!(error(Check, &["k", "3", "3651d"]));
        assert!(error(Check, &["k", "3", "315360001"]));
        assert!(error(Check, &["k", "3", "0ms"]));
        assert!(error(Check, &["k", "3", "1.5s"]));
        assert!(error(Check, &["k", "3", "-5s"]));
        assert!(error(Check, &["k", "3", "1s", "BURST", "2"]));
        assert!(error(Check, &["k", "3", "1s", "COST"]));
        assert!(error(Check, &["k", "3", "1s", "COST", "1", "cost", "1"]));
        assert!(error(Check, &["k", "3", "1s", "FOO"]));
        assert!(error(Check, &["k", "3", "1s", "COST", "-1"]));
        assert!(error(
            Check,
            &["k", "3", "1s", "COST", "18446744073709551615"]
        ));
        assert!(error(Check, &["k", "3", "1s", "FORCE", "DRYRUN"]));
        assert!(error(Check, &["k", "3", "1s", "FORCE", "force"]));
        assert!(error(Check, &["k", "3", "1s", "WINDOW", "1"]));
        assert!(error(Check, &["k", "3", "1s", "LIMIT", "3", "1s"]));
        assert!(either(Check, &["k", "007", "1s"]));
        assert!(either(Check, &["k", "3", "10S"]));
        assert!(either(Check, &["k", "3", "1s", "COST", "+2"]));
        assert!(error(Check, &["k", "007", "1s", "FOO"]));
        assert!(error(Check, &["k", "0", "10S"]));

        assert!(valid(Refund, &["k", "3", "1s", "COST", "2"]));
        assert!(valid(
            Refund,
            &[
                "k",
                "3",
                "1s",
                "window",
                "18446744073709551615",
                "cost",
                "0"
            ]
        ));
        assert!(error(Refund, &["k", "3", "1s"]));
        assert!(error(Refund, &["k", "3", "1s", "WINDOW", "5"]));
        assert!(error(
            Refund,
            &["k", "3", "1s", "COST", "1", "WINDOW", "-1"]
        ));
        assert!(error(
            Refund,
            &[
                "k",
                "3",
                "1s",
                "COST",
                "1",
                "WINDOW",
                "18446744073709551616"
            ]
        ));
        assert!(error(Refund, &["k", "3", "1s", "COST", "1", "DRYRUN"]));
        assert!(error(
            Refund,
            &["k", "3", "1s", "COST", "1", "WINDOW", "1", "WINDOW", "1"]
        ));
        assert!(either(
            Refund,
            &["k", "3", "1s", "COST", "1", "WINDOW", "01"]
        ));

        let m = multi(&[
            "2",
            "a",
            "b",
            "withwindow",
            "LIMIT",
            "5",
            "1s",
            "COST",
            "2",
            "force",
            "limit",
            "7",
            "1h",
            "ALGORITHM",
            "GCRA",
            "BURST",
            "9",
        ])
        .unwrap();
        assert_eq!(m.policies.len(), 2);
        assert!(m.force && m.with_window && !m.dry_run);
        assert_eq!(
            (m.policies[0].cost, m.policies[0].algorithm),
            (2, Algorithm::Fixed)
        );
        assert_eq!(m.policies[1].capacity(), 9);
        assert!(
            multi(&["1", "LIMIT", "LIMIT", "1", "1s"]).is_some(),
            "a key named LIMIT"
        );
        let sixteen: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
        let mut full = vec!["16".to_string()];
        full.extend(sixteen.iter().cloned());
        for _ in 0..16 {
            full.extend(["LIMIT", "1", "1s"].map(String::from));
        }
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        assert_eq!(multi(&full).map(|m| m.policies.len()), Some(16));
        for bad in [
            &["0", "a", "LIMIT", "1", "1s"][..],
            &["17", "a", "LIMIT", "1", "1s"],
            &["2", "a", "a", "LIMIT", "1", "1s", "LIMIT", "1", "1s"],
            &["2", "a", "b", "LIMIT", "1", "1s"],
            &["1", "a", "LIMIT", "1", "1s", "LIMIT", "1", "1s"],
            &["1", "a", "COST", "1", "LIMIT", "1", "1s"],
            &["1", "a", "LIMIT", "1", "1s", "COST", "1", "COST", "1"],
            &["1", "a", "LIMIT", "1", "1s", "DRYRUN", "FORCE"],
            &["1", "a", "LIMIT", "1", "1s", "WINDOW", "1"],
            &["1", "a", "LIMIT", "1"],
            &["1", "a", "LIMIT", "1", "1s", "BURST", "2"],
            &["1", "a"],
            &["1"],
        ] {
            assert!(error(MCheck, bad), "{bad:?}");
        }
        assert!(either(MCheck, &["01", "a", "LIMIT", "1", "1s"]));
        assert!(either(MCheck, &["1", "a", "LIMIT", "01", "1s"]));

        assert_eq!(classify(Reset, &args(&["k"])), Expect::Reset);
        assert!(error(Reset, &["k", "x"]));
        assert!(error(Reset, &[]));
    }
}
