//! Which JSON numbers a float (a double) holds exactly.
//!
//! A number in a file is served as a `float` only when the float keeps its value: the
//! float's shortest representation (its `repr`, the digits written back) denotes the
//! same number as the file's text (`0.1` and `1.5e-7` do; `9007199254740993.0`,
//! `1e-400`, `1e400` and `0.10000000000000001` do not, and are served as `Decimal`).
//! Integer literals are `int`s of any size and never need this.

/// A JSON number's text, split: its sign, its integer and fraction digits and its
/// exponent. `None` when `text` is not a JSON number.
struct Parts<'t> {
    negative: bool,
    int: &'t [u8],
    frac: &'t [u8],
    /// Clamped to ±10^15 (a larger one is far beyond any double either way).
    exp: i64,
}

const EXP_CLAMP: i64 = 1_000_000_000_000_000;

fn parts(text: &[u8]) -> Option<Parts<'_>> {
    let (negative, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, mut rest) = rest.split_at(int_len);
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    let mut frac: &[u8] = &[];
    if let Some((b'.', after)) = rest.split_first() {
        let len = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        (frac, rest) = after.split_at(len);
    }
    let mut exp = 0i64;
    if let Some((b'e' | b'E', after)) = rest.split_first() {
        let (exp_negative, digits) = match after.split_first() {
            Some((b'-', d)) => (true, d),
            Some((b'+', d)) => (false, d),
            _ => (false, after),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for d in digits {
            exp = (exp * 10 + i64::from(d - b'0')).min(EXP_CLAMP);
        }
        if exp_negative {
            exp = -exp;
        }
        rest = &[];
    }
    rest.is_empty().then_some(Parts {
        negative,
        int,
        frac,
        exp,
    })
}

impl Parts<'_> {
    /// The significant digits (no leading or trailing zeros; empty for zero) and the
    /// power of ten of the last one: the number is `±digits × 10^power`.
    fn significand(&self) -> (Vec<u8>, i64) {
        let all: Vec<u8> = self.int.iter().chain(self.frac).copied().collect();
        let lead = all.iter().take_while(|&&b| b == b'0').count();
        let trail = all[lead..].iter().rev().take_while(|&&b| b == b'0').count();
        let digits = all[lead..all.len() - trail].to_vec();
        // The fraction is at most the text's length: no overflow.
        let power = self.exp - self.frac.len() as i64 + trail as i64;
        (digits, power)
    }
}

/// Whether `text` is a JSON number a float (a double) holds exactly, in the sense that
/// serving it as a `float` and writing that float back keeps its value: `Some(true)`
/// for one, `Some(false)` for a number no double holds (or beyond a double's range),
/// `None` for text that is not a JSON number.
pub fn float_keeps(text: &[u8]) -> Option<bool> {
    let p = parts(text)?;
    let (digits, power) = p.significand();
    if digits.is_empty() {
        // Zero (and -0.0, which a float keeps too).
        return Some(true);
    }
    // At most 15 significant digits (DBL_DIG) within the normal range: the double
    // nearest to the number gives back exactly those digits, so its shortest
    // representation is the same number. The common case, without formatting.
    let leading = power + digits.len() as i64 - 1;
    if digits.len() <= 15 && (-307..=307).contains(&leading) {
        return Some(true);
    }
    // The text is ASCII (checked by `parts`).
    let text = std::str::from_utf8(text).ok()?;
    let Ok(float) = text.parse::<f64>() else {
        return Some(false);
    };
    if !float.is_finite() {
        return Some(false);
    }
    // `{:e}`: the shortest digits that read back as this double (as Python's repr).
    let shortest = format!("{float:e}");
    let back = parts(shortest.as_bytes())?;
    let (back_digits, back_power) = back.significand();
    Some(back.negative == p.negative && back_digits == digits && back_power == power)
}

/// Whether `text` (a JSON document) may hold a number with a fraction or exponent
/// part that no float holds exactly: every such number is found (a number's text is a
/// maximal run of `0-9 + - . e E` outside strings); a run inside a string that happens
/// to be one is a false alarm, which costs only the slower exact parse.
pub fn may_hold_inexact_float(text: &[u8]) -> bool {
    let mut i = 0;
    while i < text.len() {
        if !NUMBER_BYTE[usize::from(text[i])] {
            i += 1;
            continue;
        }
        let start = i;
        let mut fraction_or_exponent = false;
        while i < text.len() && NUMBER_BYTE[usize::from(text[i])] {
            fraction_or_exponent |= matches!(text[i], b'.' | b'e' | b'E');
            i += 1;
        }
        if fraction_or_exponent && float_keeps(&text[start..i]) == Some(false) {
            return true;
        }
    }
    false
}

/// The bytes of a JSON number's text.
static NUMBER_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = true;
        b += 1;
    }
    t[b'+' as usize] = true;
    t[b'-' as usize] = true;
    t[b'.' as usize] = true;
    t[b'e' as usize] = true;
    t[b'E' as usize] = true;
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_that_keep_their_value() {
        for t in [
            "0.1",
            "1.5",
            "-2.25",
            "1e5",
            "1E+5",
            "1.5e-7",
            "0.0",
            "-0.0",
            "0e10",
            "1e300",
            "1e+300",
            "5e-324",
            "1.7976931348623157e308",
            "9007199254740992.0",
            "0.30000000000000004",
            "100.0",
            "1.000",
        ] {
            assert_eq!(float_keeps(t.as_bytes()), Some(true), "{t}");
        }
    }

    #[test]
    fn numbers_no_float_holds() {
        for t in [
            "1e400",
            "-1e400",
            "1e-400",
            "9007199254740993.0",
            "12345678901234567890e0",
            "1234567890.123456789e10",
            "0.10000000000000001",
            "1.7976931348623159e308",
            "1e99999999999999999999999",
            "2e-324",
            "12345678901234567e0",
        ] {
            assert_eq!(float_keeps(t.as_bytes()), Some(false), "{t}");
        }
    }

    #[test]
    fn text_that_is_not_a_number() {
        for t in [
            "", "-", "01.5", "1.", ".5", "1e", "1e+", "1.2.3", "e5", "1-2", "+1",
        ] {
            assert_eq!(float_keeps(t.as_bytes()), None, "{t:?}");
        }
    }

    #[test]
    fn documents_are_scanned_for_them() {
        assert!(!may_hold_inexact_float(
            br#"{"a": 0.1, "b": [1e5, -2.5], "c": "x-1.e"}"#
        ));
        assert!(may_hold_inexact_float(br#"{"a": 0.1, "b": [1e400]}"#));
        assert!(may_hold_inexact_float(br#"[9007199254740993.0]"#));
        // A false alarm in a string, and no alarm for integer literals.
        assert!(may_hold_inexact_float(br#"["v 1e-400"]"#));
        assert!(!may_hold_inexact_float(
            br#"[123456789012345678901234567890]"#
        ));
    }
}
