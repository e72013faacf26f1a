//! Which JSON numbers JavaScript can be served exactly, and how the others are.
//!
//! A JavaScript number is a double. A number in a file (any spelling) is one of
//! (see [`classify`]):
//!
//! - held by a double: served as that `number` (`0.1`, `1.5e-7`, `1e21`, `2.0`);
//! - an integer no double holds (beyond 2^53: `12345678901234567890`,
//!   `9007199254740993.0`, `1e300`, `1e400`): served as a `BigInt` of its exact value;
//! - a non-integer no double holds (`0.10000000000000001`, `1e-400`): served as the
//!   nearest double, as `JSON.parse` reads it, and its text is written back as it was
//!   where that number is after the program ran (`index.js` follows it when it moves,
//!   and refuses the commit when where it went cannot be told);
//! - refused, loudly (an integer of more than [`MAX_BIG_DIGITS`] digits, a
//!   non-integer beyond a double's range): never served as something else.

use statesafe::exact::{self, Number};

/// An integer spelled with an exponent (`1e400`) of more digits than this is refused
/// rather than served as a `BigInt` of that many digits (`1e999999999` would be a
/// gigabyte).
pub(crate) const MAX_BIG_DIGITS: i64 = 10_000;

/// How a number of the file is served to JavaScript (see the module's comment).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// As the double `JSON.parse` makes, which is its value.
    Double,
    /// As a `BigInt` of these exact digits (with a `-` sign when negative).
    Big(String),
    /// As the double `JSON.parse` makes, which is not its value: its text is kept.
    Nearest,
    /// Not at all: why.
    Refused(String),
}

/// How the number `text` (with a fraction or exponent part, or an integer literal of
/// 16 digits or more) is served; `None` when it is not a JSON number.
pub(crate) fn classify(text: &[u8]) -> Option<Served> {
    let p = Number::parse(text)?;
    let s = p.significand();
    if s.digit_count() == 0 {
        return Some(Served::Double);
    }
    if s.power() >= 0 {
        // An integer: exact below 2^53 (16 digits may be beyond it), else exact only
        // when its double is exactly it.
        let len = s.digit_count() as i64 + s.power();
        if len <= 15 {
            return Some(Served::Double);
        }
        if p.float().is_some_and(|f| {
            let exact = format!("{:.0}", f.abs());
            exact.len() as i64 == len
                && exact.bytes().take(s.digit_count()).eq(s.digits())
                && exact.bytes().skip(s.digit_count()).all(|b| b == b'0')
        }) {
            return Some(Served::Double);
        }
        if len > MAX_BIG_DIGITS {
            return Some(Served::Refused(format!(
                "an integer of {len} digits, more than the {MAX_BIG_DIGITS} statesafe serves as a BigInt"
            )));
        }
        let mut big = String::with_capacity(len as usize + 1);
        if p.is_negative() {
            big.push('-');
        }
        big.extend(s.digits().map(char::from));
        big.extend(std::iter::repeat_n('0', len as usize - s.digit_count()));
        return Some(Served::Big(big));
    }
    Some(match p.float_keeps() {
        true => Served::Double,
        false if p.float().is_some() => Served::Nearest,
        false => Served::Refused(
            "a number with a fraction part beyond a double's range (a double would make it Infinity)".into(),
        ),
    })
}

/// Whether `text` (a JSON document) may hold a number that is not served as the
/// double `JSON.parse` makes of it ([`classify`]): every such number is found (a
/// number's text is a maximal run of `0-9 + - . e E` outside strings); a run inside a
/// string that happens to be one is a false alarm, which costs only a parse.
pub(crate) fn may_hold_inexact(text: &[u8]) -> bool {
    // Without an exponent, 15 digits or fewer: an integer below 2^53, or 15
    // significant digits of magnitude 1e-15 to 1e15, which a double holds (the
    // common case, decided here).
    exact::runs(text).any(|run| {
        (run.exponent || run.digits > 15)
            && (run.text[0] == b'-' || run.text[0].is_ascii_digit())
            && classify(run.text).is_some_and(|s| s != Served::Double)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(t: &str) -> Served {
        classify(t.as_bytes()).unwrap_or_else(|| panic!("{t} is a number"))
    }

    #[test]
    fn numbers_a_double_holds() {
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
            "1e21",
            "5e-324",
            "9007199254740992.0",
            "2.0",
            "0.30000000000000004",
            "1180591620717411303424e0",
            "9007199254740991",
        ] {
            assert_eq!(served(t), Served::Double, "{t}");
        }
    }

    #[test]
    fn integers_no_double_holds_are_big() {
        for (t, digits) in [
            ("9007199254740993.0", "9007199254740993"),
            ("12345678901234567890e0", "12345678901234567890"),
            ("1234567890.123456789e10", "12345678901234567890"),
            ("-1e23", "-100000000000000000000000"),
            ("12345678901234567890", "12345678901234567890"),
        ] {
            assert_eq!(served(t), Served::Big(digits.into()), "{t}");
        }
        assert_eq!(
            served("1e400"),
            Served::Big(format!("1{}", "0".repeat(400)))
        );
        assert!(matches!(served("1e99999999999"), Served::Refused(_)));
        // The largest double is an integer, but not this one: its shortest text is.
        assert!(matches!(served("1.7976931348623157e308"), Served::Big(_)));
    }

    #[test]
    fn non_integers_no_double_holds_keep_their_text() {
        for t in [
            "1e-400",
            "0.10000000000000001",
            "2e-324",
            "-1.00000000000000000001",
        ] {
            assert_eq!(served(t), Served::Nearest, "{t}");
        }
        let huge = format!("{}.5", "9".repeat(400));
        assert!(matches!(served(&huge), Served::Refused(_)));
    }

    #[test]
    fn documents_are_scanned_for_them() {
        assert!(!may_hold_inexact(
            br#"{"a": 0.1, "b": [1e5, -2.5, 1e21], "c": "x-1.e"}"#
        ));
        assert!(may_hold_inexact(br#"{"a": 0.1, "b": [1e400]}"#));
        assert!(may_hold_inexact(br#"[9007199254740993.0]"#));
        assert!(may_hold_inexact(br#"[12345678901234567890]"#));
        assert!(may_hold_inexact(br#"["v 1e-400"]"#));
        assert!(!may_hold_inexact(br#"[9007199254740992, 1e21, -0.5e-3]"#));
    }
}
