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

/// The text JavaScript writes for the double `d` (finite): `JSON.stringify`'s (the
/// shortest digits that read back as `d`, in exponent form below 1e-6 and from 1e21
/// up; `0` for both zeros), made the exact integer for an integral double of 2^53 or
/// more as `convert.rs` makes it (`1e+22` is written `10000000000000000000000`).
pub(crate) fn js_text(d: f64) -> String {
    if d == 0.0 {
        return "0".into();
    }
    if d.fract() == 0.0 && d.abs() >= 9_007_199_254_740_992.0 {
        return format!("{d:.0}");
    }
    // `{:e}` prints the shortest digits that read back as `d`: `1.5e300`, `1e-7`.
    let sci = format!("{:e}", d.abs());
    let (mantissa, exp) = sci.split_once('e').expect("invariant: `{:e}` has an `e`");
    let exp: i64 = exp.parse().expect("invariant: `{:e}` has an integer exponent");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i64;
    // Number::prototype.toString (ECMA-262, Number::toString): the value is
    // 0.digits × 10^n.
    let n = exp + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if d < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

/// Whether the number `text`, which a double holds ([`Served::Double`]), would be
/// written with another text by a commit that leaves it as it is (`1.0` as `1`, `1e22`
/// as its digits, `-0.0` as `0`, `1e-07` as `1e-7`): its text is then written back
/// while its place still holds its double (see `convert.rs`).
pub(crate) fn retexted(text: &str) -> bool {
    text.parse::<f64>().is_ok_and(|d| js_text(d) != text)
}

/// Whether the run's text is certainly what JavaScript writes for its double (the
/// common case, decided without parsing): an integer of 15 digits or fewer (not
/// `-0`), or a decimal of 15 digits or fewer without an exponent, a trailing `0` in
/// its fraction or 6 leading zeros after `0.` (a double holds 15 significant digits,
/// so no shorter text reads back as it; JavaScript prints exponents below 1e-6 only).
fn surely_js_text(run: &exact::Run<'_>) -> bool {
    if run.exponent || run.digits > 15 {
        return false;
    }
    let t = run.text.strip_prefix(b"-").unwrap_or(run.text);
    if !run.fraction {
        return t != b"0";
    }
    t.last().is_some_and(|&b| b != b'0' && b != b'.') && !t.starts_with(b"0.000000")
}

/// Whether `text` (a JSON document) may hold a number that needs care on the way to
/// JavaScript and back: one not served as the double `JSON.parse` makes of it
/// ([`may_hold_inexact`]), or one whose text JavaScript would write otherwise
/// ([`retexted`]). A false alarm (such a run inside a string) costs only a parse.
pub(crate) fn may_need_care(text: &[u8]) -> bool {
    exact::runs(text).any(|run| {
        !surely_js_text(&run)
            && (run.text[0] == b'-' || run.text[0].is_ascii_digit())
            && match classify(run.text) {
                None => false,
                Some(Served::Double) => std::str::from_utf8(run.text).is_ok_and(retexted),
                Some(_) => true,
            }
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

    #[test]
    fn javascript_texts_of_doubles() {
        // JSON.stringify's (then the exact integer from 2^53 up).
        for (d, t) in [
            (1.0, "1"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (100.0, "100"),
            (1.5e-7, "1.5e-7"),
            (1e-7, "1e-7"),
            (1e-6, "0.000001"),
            (1.25e-5, "0.0000125"),
            (123.456, "123.456"),
            (1e21, "1000000000000000000000"),
            (1e22, "10000000000000000000000"),
            (1e16, "10000000000000000"),
            (-2.5, "-2.5"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, &format!("{:.0}", f64::MAX)),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5e300, &format!("{:.0}", 1.5e300)),
            (123456789.125, "123456789.125"),
        ] {
            assert_eq!(js_text(d), t, "{d:e}");
        }
    }

    #[test]
    fn texts_javascript_would_change_are_found() {
        for t in [
            "1.0", "-0.0", "-0", "0.0", "100.0", "1e22", "1e+22", "1e+16", "1.5e300", "1e-07",
            "1E5", "2.50", "0.0000001", "1e2",
        ] {
            assert!(retexted(t), "{t}");
            assert!(may_need_care(format!("[{t}]").as_bytes()), "{t}");
        }
        for t in [
            "1", "0", "0.5", "1e-7", "1.5e-7", "-2.5", "0.000001", "1000000000000000000000",
            "0.30000000000000004", "123.456",
        ] {
            assert!(!retexted(t), "{t}");
            assert!(!may_need_care(format!("[{t}]").as_bytes()), "{t}");
        }
    }
}
