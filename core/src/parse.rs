//! Parsing of the contract's numbers and periods, shared by the module and the client.
//!
//! These return `None` on anything invalid; the caller words the error, since only it knows
//! which argument was wrong.

use crate::limit::MAX_PERIOD_MS;

/// Parses a plain decimal integer (ASCII digits only: no sign, no spaces) within `min..=max`.
pub fn integer_in(text: &[u8], min: u64, max: u64) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    (min..=max).contains(&value).then_some(value)
}

/// Parses a stored count as `INCR` reads a value: canonical decimal digits, `0` or a first digit
/// from 1 to 9 (no sign, no leading zero, no spaces), up to `u64::MAX`.
pub fn canonical_u64(text: &[u8]) -> Option<u64> {
    match text {
        [b'0'] => Some(0),
        [b'1'..=b'9', ..] => integer_in(text, 0, u64::MAX),
        _ => None,
    }
}

/// Parses a period: an integer of seconds (`60`) or an integer with a unit `ms`, `s`, `m`, `h`
/// or `d` in any letter case (`1500ms`, `10s`, `5m`, `2h`, `1d`). Returns milliseconds, from 1 to
/// 3650 days.
pub fn period_ms(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = text.split_at(digits);
    // Compared without lowering a copy: this runs on every command, and must not allocate.
    const UNITS: [(&[u8], u64); 6] = [
        (b"", 1000),
        (b"s", 1000),
        (b"ms", 1),
        (b"m", 60_000),
        (b"h", 3_600_000),
        (b"d", 86_400_000),
    ];
    let (_, scale) = UNITS
        .iter()
        .find(|(name, _)| unit.eq_ignore_ascii_case(name))?;
    let ms = integer_in(number, 1, u64::MAX)?.checked_mul(*scale)?;
    (1..=MAX_PERIOD_MS).contains(&ms).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"1", Some(1)),
            (b"007", Some(7)),
            (b"1000000000000000", Some(1_000_000_000_000_000)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"99999999999999999999999", None),
            (b"", None),
            (b"-1", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"1.0", None),
            (b"1e3", None),
            (b"abc", None),
            (b"\xff", None),
        ];
        for (text, expected) in cases {
            assert_eq!(integer_in(text, 0, u64::MAX), *expected, "{text:?}");
        }
        assert_eq!(integer_in(b"5", 1, 4), None);
        assert_eq!(integer_in(b"0", 1, 4), None);
        assert_eq!(integer_in(b"4", 1, 4), Some(4));
    }

    #[test]
    fn canonical_integers() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"5", Some(5)),
            (b"12345", Some(12_345)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"05", None),
            (b"00", None),
            (b"007", None),
            (b"", None),
            (b"-1", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"1.0", None),
        ];
        for (text, expected) in cases {
            assert_eq!(canonical_u64(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn periods() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"60", Some(60_000)),
            (b"1", Some(1000)),
            (b"1ms", Some(1)),
            (b"1500ms", Some(1500)),
            (b"1500MS", Some(1500)),
            (b"10s", Some(10_000)),
            (b"10S", Some(10_000)),
            (b"5m", Some(300_000)),
            (b"2h", Some(7_200_000)),
            (b"1d", Some(86_400_000)),
            (b"3650d", Some(MAX_PERIOD_MS)),
            (b"3651d", None),
            (b"315360000", Some(MAX_PERIOD_MS)),
            (b"315360001", None),
            (b"0", None),
            (b"0ms", None),
            (b"", None),
            (b"ms", None),
            (b"5x", None),
            (b"5 s", None),
            (b"-5s", None),
            (b"1.5s", None),
            (b"99999999999999999999d", None),
            (b"18446744073709551615d", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                period_ms(text),
                *expected,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
