//! The contract's argument grammar, written independently of the module: given an argument
//! vector, says whether the call must fail, must succeed (and with what configuration), or may
//! do either because the contract leaves the spelling open (leading zeros, `+5`, `10S`).

/// The largest limit, burst and cost: 10^15.
pub const MAX_COUNT: u64 = 1_000_000_000_000_000;
/// The longest period: 3650 days.
pub const MAX_PERIOD_MS: u64 = 3650 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Check,
    Quota,
    Reset,
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

/// A CHECK or QUOTA call whose arguments are all valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub command: Command,
    pub algorithm: Algorithm,
    pub limit: u64,
    pub period_ms: u64,
    pub burst: Option<u64>,
    pub cost: u64,
    pub dry_run: bool,
}

impl Call {
    /// `burst` for GCRA (default `limit`), `limit` otherwise.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst.unwrap_or(self.limit),
            _ => self.limit,
        }
    }

    /// Whether this call, made on a fresh key, writes it.
    pub fn writes_when_fresh(&self) -> bool {
        self.command == Command::Check
            && !self.dry_run
            && self.cost > 0
            && self.cost <= self.capacity()
    }
}

/// What the contract says of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Bad arguments: an error, and nothing written.
    Error,
    /// Valid CHECK or QUOTA arguments.
    Valid(Call),
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
    let value = if trimmed.len() > 19 {
        None
    } else {
        std::str::from_utf8(trimmed)
            .unwrap()
            .parse::<u64>()
            .ok()
            .or(Some(0))
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

/// Classifies `command` applied to `args` (the arguments after the command name).
pub fn classify(command: Command, args: &[Vec<u8>]) -> Expect {
    if command == Command::Reset {
        return if args.len() == 1 {
            Expect::Reset
        } else {
            Expect::Error
        };
    }
    if args.len() < 3 {
        return Expect::Error;
    }
    let mut ambiguous = false;
    let mut take = |token: Token| -> Option<u64> {
        match token {
            Token::Valid(v) => Some(v),
            Token::Ambiguous => {
                ambiguous = true;
                Some(0)
            }
            Token::Invalid => None,
        }
    };
    let Some(limit) = take(integer(&args[1], 1, MAX_COUNT)) else {
        return Expect::Error;
    };
    let Some(period_ms) = take(period(&args[2])) else {
        return Expect::Error;
    };
    let mut chosen: Option<Algorithm> = None;
    let mut burst: Option<u64> = None;
    let mut cost: Option<u64> = None;
    let mut dry_run = false;
    let mut i = 3;
    while i < args.len() {
        let keyword = args[i].to_ascii_uppercase();
        let value = args.get(i + 1);
        match keyword.as_slice() {
            b"ALGORITHM" => {
                let Some(found) = value.and_then(|v| algorithm(v)) else {
                    return Expect::Error;
                };
                if chosen.replace(found).is_some() {
                    return Expect::Error;
                }
                i += 2;
            }
            b"BURST" => {
                let Some(Some(n)) = value.map(|v| take(integer(v, 1, MAX_COUNT))) else {
                    return Expect::Error;
                };
                if burst.replace(n).is_some() {
                    return Expect::Error;
                }
                i += 2;
            }
            b"COST" if command == Command::Check => {
                let Some(Some(n)) = value.map(|v| take(integer(v, 0, MAX_COUNT))) else {
                    return Expect::Error;
                };
                if cost.replace(n).is_some() {
                    return Expect::Error;
                }
                i += 2;
            }
            b"DRYRUN" if command == Command::Check => {
                if dry_run {
                    return Expect::Error;
                }
                dry_run = true;
                i += 1;
            }
            _ => return Expect::Error,
        }
    }
    let algorithm = chosen.unwrap_or(Algorithm::Fixed);
    if burst.is_some() && algorithm != Algorithm::Gcra {
        return Expect::Error;
    }
    if ambiguous {
        return Expect::Either;
    }
    Expect::Valid(Call {
        command,
        algorithm,
        limit,
        period_ms,
        burst,
        cost: cost.unwrap_or(1),
        dry_run,
    })
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
        let error = |c, a: &[&str]| classify(c, &args(a)) == Expect::Error;
        let either = |c, a: &[&str]| classify(c, &args(a)) == Expect::Either;
        assert!(valid(Command::Check, &["k", "3", "10s"]));
        assert!(valid(
            Command::Check,
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
        assert!(valid(Command::Check, &["k", "1000000000000000", "3650d"]));
        assert!(valid(
            Command::Quota,
            &["k", "1", "1ms", "ALGORITHM", "SLIDING"]
        ));
        assert!(error(Command::Quota, &["k", "1", "1ms", "COST", "1"]));
        assert!(error(Command::Quota, &["k", "1", "1ms", "DRYRUN"]));
        assert!(error(Command::Check, &["k", "3"]));
        assert!(error(Command::Check, &["k", "1000000000000001", "1s"]));
        assert!(error(Command::Check, &["k", "3", "3651d"]));
        assert!(error(Command::Check, &["k", "3", "315360001"]));
        assert!(error(Command::Check, &["k", "3", "0ms"]));
        assert!(error(Command::Check, &["k", "3", "1.5s"]));
        assert!(error(Command::Check, &["k", "3", "-5s"]));
        assert!(error(Command::Check, &["k", "3", "1s", "BURST", "2"]));
        assert!(error(Command::Check, &["k", "3", "1s", "COST"]));
        assert!(error(
            Command::Check,
            &["k", "3", "1s", "COST", "1", "cost", "1"]
        ));
        assert!(error(Command::Check, &["k", "3", "1s", "FOO"]));
        assert!(error(Command::Check, &["k", "3", "1s", "COST", "-1"]));
        assert!(error(
            Command::Check,
            &["k", "3", "1s", "COST", "18446744073709551615"]
        ));
        assert!(either(Command::Check, &["k", "007", "1s"]));
        assert!(either(Command::Check, &["k", "3", "10S"]));
        assert!(either(Command::Check, &["k", "3", "1s", "COST", "+2"]));
        assert!(error(Command::Check, &["k", "007", "1s", "FOO"]));
        assert!(error(Command::Check, &["k", "0", "10S"]));
        assert_eq!(classify(Command::Reset, &args(&["k"])), Expect::Reset);
        assert!(error(Command::Reset, &["k", "x"]));
        assert!(error(Command::Reset, &[]));
    }
}
