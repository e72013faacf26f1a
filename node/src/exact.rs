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
//!   while the program's value at its place is still that double;
//! - refused, loudly (an integer of more than [`MAX_BIG_DIGITS`] digits, a
//!   non-integer beyond a double's range): never served as something else.

/// A JSON number's text, split: its sign, its integer and fraction digits and its
/// exponent. `None` when `text` is not a JSON number.
struct Parts<'t> {
    text: &'t [u8],
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
        text,
        negative,
        int,
        frac,
        exp,
    })
}

/// A number's significant digits: those of `int` then `frac`, less `lead` leading and
/// the trailing zeros (`len` of them are left; none for zero), and the power of ten of
/// the last one: the number is `±digits × 10^power`. No allocation.
struct Significand<'t> {
    int: &'t [u8],
    frac: &'t [u8],
    lead: usize,
    len: usize,
    power: i64,
}

impl Significand<'_> {
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.int
            .iter()
            .chain(self.frac)
            .copied()
            .skip(self.lead)
            .take(self.len)
    }

    /// Whether both are the same number (up to the sign).
    fn same(&self, other: &Significand<'_>) -> bool {
        self.len == other.len && self.power == other.power && self.digits().eq(other.digits())
    }
}

impl Parts<'_> {
    fn significand(&self) -> Significand<'_> {
        let total = self.int.len() + self.frac.len();
        let zero = |b: &&u8| **b == b'0';
        let lead = self.int.iter().chain(self.frac).take_while(zero).count();
        let trail = if lead == total {
            0
        } else {
            self.frac
                .iter()
                .rev()
                .chain(self.int.iter().rev())
                .take_while(zero)
                .count()
        };
        Significand {
            int: self.int,
            frac: self.frac,
            lead,
            len: total - lead - trail,
            // The fraction is at most the text's length: no overflow.
            power: self.exp - self.frac.len() as i64 + trail as i64,
        }
    }

    /// The double nearest to the number, if finite.
    fn float(&self) -> Option<f64> {
        std::str::from_utf8(self.text)
            .ok()?
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
    }
}

/// Whether `text` is a JSON number the double nearest to it holds exactly, in the
/// sense that the double's shortest representation denotes the same number:
/// `Some(true)` for one, `Some(false)` for a number no double holds (or beyond a
/// double's range), `None` for text that is not a JSON number.
fn float_keeps(p: &Parts<'_>, s: &Significand<'_>) -> Option<bool> {
    if s.len == 0 {
        return Some(true);
    }
    // At most 15 significant digits (DBL_DIG) within the normal range: the double
    // nearest to the number gives back exactly those digits. The common case.
    let leading = s.power + s.len as i64 - 1;
    if s.len <= 15 && (-307..=307).contains(&leading) {
        return Some(true);
    }
    let Some(float) = p.float() else {
        return Some(false);
    };
    // The shortest digits that read back as this double (zmij, serde_json's own
    // formatter: many times faster than `format!`, which matters for a document of
    // 17-digit doubles, every one of which comes here).
    let mut buffer = zmij::Buffer::new();
    let back = parts(buffer.format_finite(float).as_bytes())?;
    Some(back.negative == p.negative && back.significand().same(s))
}

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
    let p = parts(text)?;
    let s = p.significand();
    if s.len == 0 {
        return Some(Served::Double);
    }
    if s.power >= 0 {
        // An integer: exact below 2^53 (16 digits may be beyond it), else exact only
        // when its double is exactly it.
        let len = s.len as i64 + s.power;
        if len <= 15 {
            return Some(Served::Double);
        }
        if p.float().is_some_and(|f| {
            let exact = format!("{:.0}", f.abs());
            exact.len() as i64 == len
                && exact.bytes().take(s.len).eq(s.digits())
                && exact.bytes().skip(s.len).all(|b| b == b'0')
        }) {
            return Some(Served::Double);
        }
        if len > MAX_BIG_DIGITS {
            return Some(Served::Refused(format!(
                "an integer of {len} digits, more than the {MAX_BIG_DIGITS} statesafe serves as a BigInt"
            )));
        }
        let mut big = String::with_capacity(len as usize + 1);
        if p.negative {
            big.push('-');
        }
        big.extend(s.digits().map(char::from));
        big.extend(std::iter::repeat_n('0', len as usize - s.len));
        return Some(Served::Big(big));
    }
    Some(match float_keeps(&p, &s)? {
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
    let mut i = 0;
    while i < text.len() {
        if !NUMBER_BYTE[usize::from(text[i])] {
            i += 1;
            continue;
        }
        let start = i;
        let (mut exponent, mut digits) = (false, 0);
        while i < text.len() && NUMBER_BYTE[usize::from(text[i])] {
            let b = text[i];
            exponent |= b == b'e' || b == b'E';
            digits += usize::from(b.is_ascii_digit());
            i += 1;
        }
        let first = text[start];
        // Without an exponent, 15 digits or fewer: an integer below 2^53, or 15
        // significant digits of magnitude 1e-15 to 1e15, which a double holds (the
        // common case, decided here).
        if (exponent || digits > 15)
            && (first == b'-' || first.is_ascii_digit())
            && classify(&text[start..i]).is_some_and(|s| s != Served::Double)
        {
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
    fn text_that_is_not_a_number() {
        for t in [
            "", "-", "01.5", "1.", ".5", "1e", "1e+", "1.2.3", "e5", "1-2", "+1",
        ] {
            assert_eq!(classify(t.as_bytes()), None, "{t:?}");
        }
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
