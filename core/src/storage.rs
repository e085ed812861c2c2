//! The storage format: one Redis string per limiter, shared by every implementation.
//!
//! | algorithm | value | example |
//! |---|---|---|
//! | FIXED | the count, a non-negative decimal integer; the key's expiry is the window's end | `7` |
//! | SLIDING | `s:<window>:<previous>:<current>`: the index of the current window (`now / period`) and the counts of the previous and current windows | `s:28881234:17:4` |
//! | GCRA | `-(1 + tat)`, a negative integer from `-2^62` to `-1`; `tat` is the theoretical arrival time in GCRA units, modulo 2^62 (see the `gcra` module) | `-1732893840123457` |
//!
//! The three shapes cannot be mistaken for each other, and FIXED and GCRA values are integers,
//! which Redis can keep int-encoded. Numbers are canonical, as `INCR` reads them: no sign (but
//! GCRA's minus), no leading zero, no spaces. Anything else is no limiter's state.
//!
//! The key's expiry is part of the state: FIXED's window end, GCRA's arrival time to the
//! millisecond, and SLIDING's `(window + 2) * period`, which tells whether the value was written
//! under the same period.

use crate::limit::Algorithm;
use std::fmt;

/// The modulus of GCRA's stored theoretical arrival time: 2^62.
pub(crate) const GCRA_MODULUS: u64 = 1 << 62;

/// The state of a FIXED limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedState {
    /// Units spent in the current window.
    pub count: u64,
    /// When the window ends, in milliseconds since the epoch: the key's absolute expiry. `None`
    /// for a key without expiry (written by hand), whose window is taken to start now.
    pub window_end_ms: Option<u64>,
}

/// The state of a SLIDING limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingState {
    /// The index of the window that `current` counts: `floor(time / period)`.
    pub window: u64,
    /// Units spent in the window before `window`.
    pub previous: u64,
    /// Units spent in `window`.
    pub current: u64,
    /// The key's absolute expiry in milliseconds since the epoch, `(window + 2) * period` when
    /// written under the period in use; `None` for a key without expiry.
    pub expire_at_ms: Option<u64>,
}

/// The state of a GCRA limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraState {
    /// The theoretical arrival time in GCRA units, modulo 2^62.
    pub tat: u64,
    /// The key's absolute expiry in milliseconds since the epoch: the arrival time rounded up
    /// to the millisecond, in a unit that does not depend on the configuration. `decide` uses
    /// it to detect a value written under another limit or period (see the `gcra` module).
    pub expire_at_ms: Option<u64>,
}

/// A limiter's stored state, of one of the three algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A FIXED window.
    Fixed(FixedState),
    /// A SLIDING window.
    Sliding(SlidingState),
    /// A GCRA bucket.
    Gcra(GcraState),
}

/// A stored value that is no limiter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the value is not a rate limiter state")
    }
}

impl std::error::Error for DecodeError {}

/// An encoded value on the stack, so that encoding never allocates.
#[derive(Clone, Copy)]
pub struct Encoded {
    buf: [u8; 64],
    len: usize,
}

impl Encoded {
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The value as an integer, for FIXED and GCRA; `None` for SLIDING.
    pub fn as_integer(&self) -> Option<i64> {
        parse_i64(self.as_bytes())
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends `value` in decimal, two digits per division: this runs on every write.
    fn push_u64(&mut self, mut value: u64) {
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
            2021222324252627282930313233343536373839\
            4041424344454647484950515253545556575859\
            6061626364656667686970717273747576777879\
            8081828384858687888990919293949596979899";
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        while value >= 100 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if value >= 10 {
            let pair = value as usize * 2;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            start -= 1;
            digits[start] = b'0' + value as u8;
        }
        self.push(&digits[start..]);
    }

    /// A bare decimal number, as the module writes the expiry of the `SET … PXAT` it
    /// replicates.
    pub fn decimal(value: u64) -> Encoded {
        let mut out = Encoded {
            buf: [0; 64],
            len: 0,
        };
        out.push_u64(value);
        out
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl State {
    /// The algorithm this state belongs to.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            State::Fixed(_) => Algorithm::Fixed,
            State::Sliding(_) => Algorithm::Sliding,
            State::Gcra(_) => Algorithm::Gcra,
        }
    }

    /// The same state as read from a key whose absolute expiry is `expire_at_ms`.
    pub fn with_expiry(self, expire_at_ms: u64) -> State {
        match self {
            State::Fixed(s) => State::Fixed(FixedState {
                window_end_ms: Some(expire_at_ms),
                ..s
            }),
            State::Sliding(s) => State::Sliding(SlidingState {
                expire_at_ms: Some(expire_at_ms),
                ..s
            }),
            State::Gcra(s) => State::Gcra(GcraState {
                expire_at_ms: Some(expire_at_ms),
                ..s
            }),
        }
    }

    /// Whether the key this state was read from has an expiry.
    pub fn has_expiry(&self) -> bool {
        match self {
            State::Fixed(s) => s.window_end_ms.is_some(),
            State::Sliding(s) => s.expire_at_ms.is_some(),
            State::Gcra(s) => s.expire_at_ms.is_some(),
        }
    }

    /// Reads a stored value. `expire_at_ms` is the key's absolute expiry (see the module
    /// documentation). Fails on anything that is not one of the three shapes.
    pub fn decode(value: &[u8], expire_at_ms: Option<u64>) -> Result<State, DecodeError> {
        if let Some(rest) = value.strip_prefix(b"s:") {
            let mut fields = rest.split(|&b| b == b':');
            let mut next = || fields.next().and_then(parse_u64).ok_or(DecodeError);
            let state = SlidingState {
                window: next()?,
                previous: next()?,
                current: next()?,
                expire_at_ms,
            };
            return match fields.next() {
                None => Ok(State::Sliding(state)),
                Some(_) => Err(DecodeError),
            };
        }
        let number = parse_i64(value).ok_or(DecodeError)?;
        if number >= 0 {
            Ok(State::Fixed(FixedState {
                count: number as u64,
                window_end_ms: expire_at_ms,
            }))
        } else {
            let tat = number.unsigned_abs() - 1;
            if tat < GCRA_MODULUS {
                Ok(State::Gcra(GcraState { tat, expire_at_ms }))
            } else {
                Err(DecodeError)
            }
        }
    }

    /// The value to store. FIXED's window end is not part of it: it is the key's expiry.
    pub fn encode(&self) -> Encoded {
        let mut out = Encoded {
            buf: [0; 64],
            len: 0,
        };
        match self {
            State::Fixed(s) => out.push_u64(s.count.min(i64::MAX as u64)),
            State::Sliding(s) => {
                out.push(b"s:");
                out.push_u64(s.window);
                out.push(b":");
                out.push_u64(s.previous);
                out.push(b":");
                out.push_u64(s.current);
            }
            State::Gcra(s) => {
                out.push(b"-");
                out.push_u64((s.tat % GCRA_MODULUS) + 1);
            }
        }
        out
    }
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    crate::parse::canonical_u64(text)
}

/// A canonical decimal `i64`: `0`, digits without a leading zero, or `-` and such digits.
fn parse_i64(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => {
            let magnitude =
                parse_u64(digits).filter(|&m| (1..=i64::MAX as u64 + 1).contains(&m))?;
            Some((magnitude as i64).wrapping_neg())
        }
        None => i64::try_from(parse_u64(text)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_shape() {
        type Case<'a> = (&'a [u8], Option<u64>, Result<State, DecodeError>);
        let cases: &[Case] = &[
            (
                b"7",
                Some(99),
                Ok(State::Fixed(FixedState {
                    count: 7,
                    window_end_ms: Some(99),
                })),
            ),
            (
                b"0",
                None,
                Ok(State::Fixed(FixedState {
                    count: 0,
                    window_end_ms: None,
                })),
            ),
            (
                b"-1",
                Some(7),
                Ok(State::Gcra(GcraState {
                    tat: 0,
                    expire_at_ms: Some(7),
                })),
            ),
            (
                b"-4611686018427387904",
                None,
                Ok(State::Gcra(GcraState {
                    tat: GCRA_MODULUS - 1,
                    expire_at_ms: None,
                })),
            ),
            (b"-4611686018427387905", None, Err(DecodeError)),
            (b"-9223372036854775808", None, Err(DecodeError)),
            (b"9223372036854775808", None, Err(DecodeError)),
            (
                b"s:12:3:4",
                Some(14),
                Ok(State::Sliding(SlidingState {
                    window: 12,
                    previous: 3,
                    current: 4,
                    expire_at_ms: Some(14),
                })),
            ),
            (b"s:012:3:4", None, Err(DecodeError)),
            (b"s:12:03:4", None, Err(DecodeError)),
            (b"05", None, Err(DecodeError)),
            (b"00", None, Err(DecodeError)),
            (b"-05", None, Err(DecodeError)),
            (b"+5", None, Err(DecodeError)),
            (b" 5", None, Err(DecodeError)),
            (b"s:12:3", None, Err(DecodeError)),
            (b"s:12:3:4:5", None, Err(DecodeError)),
            (b"s:12:-3:4", None, Err(DecodeError)),
            (b"s:", None, Err(DecodeError)),
            (b"", None, Err(DecodeError)),
            (b"-", None, Err(DecodeError)),
            (b"-0", None, Err(DecodeError)),
            (b"hello", None, Err(DecodeError)),
            (b"1.5", None, Err(DecodeError)),
            (b"\x00\xff", None, Err(DecodeError)),
        ];
        for (value, expiry, expected) in cases {
            assert_eq!(
                State::decode(value, *expiry),
                *expected,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn encodes_each_shape() {
        let fixed = State::Fixed(FixedState {
            count: 42,
            window_end_ms: Some(5),
        });
        assert_eq!(fixed.encode().as_bytes(), b"42");
        assert_eq!(fixed.encode().as_integer(), Some(42));
        let sliding = State::Sliding(SlidingState {
            window: u64::MAX,
            previous: u64::MAX,
            current: 0,
            expire_at_ms: None,
        });
        assert_eq!(
            sliding.encode().as_bytes(),
            b"s:18446744073709551615:18446744073709551615:0"
        );
        assert_eq!(sliding.encode().as_integer(), None);
        let gcra = State::Gcra(GcraState {
            tat: 1_732_893_840,
            expire_at_ms: Some(1),
        });
        assert_eq!(gcra.encode().as_bytes(), b"-1732893841");
        assert_eq!(gcra.encode().as_integer(), Some(-1_732_893_841));
    }

    #[test]
    fn writes_decimals() {
        let mut value = 1u64;
        let mut cases = vec![0, 9, 10, 99, 100, 101, 999, 1000, u64::MAX, u64::MAX - 1];
        while let Some(next) = value.checked_mul(10) {
            cases.extend([value - 1, value, value + 1, value * 5]);
            value = next;
        }
        for value in cases {
            assert_eq!(
                Encoded::decimal(value).as_bytes(),
                value.to_string().as_bytes(),
                "{value}"
            );
        }
    }
}
