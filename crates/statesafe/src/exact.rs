//! Which JSON numbers a double (an `f64`) holds exactly.
//!
//! statesafe keeps every number's text (see [`crate::json`]); a program in a language
//! whose numbers are doubles (Python's `float`, JavaScript's `number`) is served a
//! number as a double only when the double keeps its value: when the double's shortest
//! representation (the digits a language writes back for it) denotes the same number
//! as the file's text. `0.1` and `1.5e-7` are held so; `9007199254740993.0`,
//! `1e-400`, `1e400` and `0.10000000000000001` are not. The bindings decide what such
//! a number becomes instead (a `Decimal` in Python, a `BigInt` or the kept text in
//! Node); this module only tells them which numbers need it, without allocating.
//!
//! # Examples
//! ```
//! use statesafe::exact::{Number, float_keeps};
//! assert_eq!(float_keeps(b"0.1"), Some(true));
//! assert_eq!(float_keeps(b"9007199254740993.0"), Some(false));
//! assert_eq!(float_keeps(b"1e-400"), Some(false));
//! assert_eq!(float_keeps(b"01"), None);
//! let n = Number::parse(b"-1200e-1").unwrap();
//! let s = n.significand();
//! assert_eq!((n.is_negative(), s.digit_count(), s.power()), (true, 2, 1));
//! assert!(s.digits().eq(*b"12"));
//! ```

/// A JSON number's text, split: its sign, its integer and fraction digits and its
/// exponent.
#[derive(Debug, Clone, Copy)]
pub struct Number<'t> {
    text: &'t [u8],
    negative: bool,
    int: &'t [u8],
    frac: &'t [u8],
    /// Clamped to ±10^15 (a larger one is far beyond any double either way).
    exp: i64,
}

const EXP_CLAMP: i64 = 1_000_000_000_000_000;

impl<'t> Number<'t> {
    /// Splits `text`; `None` when it is not a JSON number (`01`, `1.`, `.5`, `+1`, …).
    #[must_use]
    pub fn parse(text: &'t [u8]) -> Option<Self> {
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
        rest.is_empty().then_some(Number {
            text,
            negative,
            int,
            frac,
            exp,
        })
    }

    /// Whether the text starts with `-` (`-0.0` too).
    #[must_use]
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The number's significant digits and their power of ten.
    #[must_use]
    pub fn significand(&self) -> Significand<'t> {
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

    /// The double nearest to the number, if finite (what `JSON.parse` and Python's
    /// `float` make of the text).
    #[must_use]
    pub fn float(&self) -> Option<f64> {
        std::str::from_utf8(self.text)
            .ok()?
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
    }

    /// Whether the double nearest to the number holds it exactly, in the sense that
    /// the double's shortest representation denotes the same number (zero and `-0.0`
    /// included); `false` for a number beyond a double's range.
    #[must_use]
    pub fn float_keeps(&self) -> bool {
        let s = self.significand();
        if s.len == 0 {
            return true;
        }
        // At most 15 significant digits (DBL_DIG) within the normal range: the double
        // nearest to the number gives back exactly those digits, so its shortest
        // representation is the same number. The common case, without formatting.
        let leading = s.power + s.len as i64 - 1;
        if s.len <= 15 && (-307..=307).contains(&leading) {
            return true;
        }
        let Some(float) = self.float() else {
            return false;
        };
        // The shortest digits that read back as this double (zmij, serde_json's own
        // formatter, as Python's repr and JavaScript's String(number) choose them:
        // many times faster than `format!`, which matters for a document of 17-digit
        // doubles, every one of which comes here).
        let mut buffer = zmij::Buffer::new();
        Number::parse(buffer.format_finite(float).as_bytes())
            .is_some_and(|back| back.negative == self.negative && back.significand().same(&s))
    }
}

/// A number's significant digits: those of its integer then fraction part, less the
/// leading and trailing zeros (none are left for zero), and the power of ten of the
/// last one: the number is `±digits × 10^power`.
#[derive(Debug, Clone, Copy)]
pub struct Significand<'t> {
    int: &'t [u8],
    frac: &'t [u8],
    lead: usize,
    len: usize,
    power: i64,
}

impl<'t> Significand<'t> {
    /// The significant digits, as ASCII bytes (`b'1'`…).
    pub fn digits(&self) -> impl Iterator<Item = u8> + 't {
        self.int
            .iter()
            .chain(self.frac)
            .copied()
            .skip(self.lead)
            .take(self.len)
    }

    /// How many significant digits there are: 0 for zero.
    #[must_use]
    pub fn digit_count(&self) -> usize {
        self.len
    }

    /// The power of ten of the last significant digit (0 for zero).
    #[must_use]
    pub fn power(&self) -> i64 {
        if self.len == 0 { 0 } else { self.power }
    }

    /// Whether both are the same number (up to the sign).
    fn same(&self, other: &Significand<'_>) -> bool {
        self.len == other.len && self.power == other.power && self.digits().eq(other.digits())
    }
}

/// Whether `text` is a JSON number that the double nearest to it holds exactly
/// ([`Number::float_keeps`]): `Some(true)` for one, `Some(false)` for a number no
/// double holds (or beyond a double's range), `None` for text that is not a JSON
/// number.
#[must_use]
pub fn float_keeps(text: &[u8]) -> Option<bool> {
    Number::parse(text).map(|n| n.float_keeps())
}

/// A maximal run of the bytes a JSON number is written with (`0-9 + - . e E`) in a
/// document, as [`runs`] finds it, with what a caller's quick test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run<'t> {
    /// The run's bytes: a number's whole text when the run is outside strings (and
    /// perhaps no number at all inside one: see [`Number::parse`]).
    pub text: &'t [u8],
    /// Whether it holds a `.`.
    pub fraction: bool,
    /// Whether it holds an `e` or `E`.
    pub exponent: bool,
    /// How many ASCII digits it holds.
    pub digits: usize,
}

/// The runs of number bytes in `text` (a JSON document), in order: every number of the
/// document is one of them, and a run inside a string may be one too, or not a number.
/// For a quick scan whether a document holds a number that needs care: a false alarm
/// from a string costs only the slower exact parse.
///
/// # Examples
/// ```
/// let runs: Vec<_> = statesafe::exact::runs(br#"{"a": [1.5, -2e3], "b": "x-1"}"#)
///     .map(|r| r.text)
///     .collect();
/// assert_eq!(runs, [&b"1.5"[..], b"-2e3", b"-1"]);
/// ```
pub fn runs(text: &[u8]) -> impl Iterator<Item = Run<'_>> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < text.len() && !NUMBER_BYTE[usize::from(text[i])] {
            i += 1;
        }
        if i == text.len() {
            return None;
        }
        let start = i;
        let (mut fraction, mut exponent, mut digits) = (false, false, 0);
        while i < text.len() && NUMBER_BYTE[usize::from(text[i])] {
            let b = text[i];
            fraction |= b == b'.';
            exponent |= b == b'e' || b == b'E';
            digits += usize::from(b.is_ascii_digit());
            i += 1;
        }
        Some(Run {
            text: &text[start..i],
            fraction,
            exponent,
            digits,
        })
    })
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
    fn numbers_a_double_holds() {
        // Zeros, short decimals and exponents, the extremes, and 17-digit shortest forms.
        let held = "0 -0 0.0 -0.0 0e10 0e999999999999999999 0.1 1.5 -2.25 1e5 1E+5 1.5e-7 \
                    1e21 5e-324 2.0 0.30000000000000004 9007199254740992.0 \
                    1.7976931348623157e308";
        for t in held.split_whitespace() {
            assert_eq!(float_keeps(t.as_bytes()), Some(true), "{t}");
        }
    }

    #[test]
    fn numbers_no_double_holds() {
        for t in [
            "9007199254740993.0",
            "1e-400",
            "1e400",
            "-1e400",
            "2e-324",
            "0.10000000000000001",
            "-1.00000000000000000001",
            "1e99999999999999999999",
            "123456789012345678",
        ] {
            assert_eq!(float_keeps(t.as_bytes()), Some(false), "{t}");
        }
    }

    #[test]
    fn text_that_is_not_a_number() {
        for t in [
            "", "-", "01.5", "1.", ".5", "1e", "1e+", "1.2.3", "e5", "1-2", "+1", "1e5e5", "0x1",
        ] {
            assert!(Number::parse(t.as_bytes()).is_none(), "{t:?}");
            assert_eq!(float_keeps(t.as_bytes()), None, "{t:?}");
        }
    }

    #[test]
    fn significand_digits_and_power() {
        for (t, negative, digits, power) in [
            ("0", false, "", 0),
            ("-0.000e5", true, "", 0),
            ("1200", false, "12", 2),
            ("-0.0012e1", true, "12", -3),
            ("1.5e-7", false, "15", -8),
            ("100.001", false, "100001", -3),
        ] {
            let n = Number::parse(t.as_bytes()).unwrap();
            let s = n.significand();
            assert_eq!(n.is_negative(), negative, "{t}");
            assert_eq!(
                s.digits().map(char::from).collect::<String>(),
                digits,
                "{t}"
            );
            assert_eq!(s.digit_count(), digits.len(), "{t}");
            assert_eq!(s.power(), power, "{t}");
        }
    }

    #[test]
    fn runs_find_every_number() {
        let doc = br#"{"a": 0.1, "b": [1e5, -2.5, 12345678901234567890], "c": "x-1.e", "d": 7}"#;
        let runs: Vec<Run<'_>> = runs(doc).collect();
        let texts: Vec<&[u8]> = runs.iter().map(|r| r.text).collect();
        assert_eq!(
            texts,
            [
                &b"0.1"[..],
                b"1e5",
                b"-2.5",
                b"12345678901234567890",
                b"-1.e",
                b"7"
            ]
        );
        assert_eq!(
            runs[2],
            Run {
                text: b"-2.5",
                fraction: true,
                exponent: false,
                digits: 2
            }
        );
        assert!(runs[1].exponent && !runs[1].fraction);
        assert_eq!(runs[3].digits, 20);
        assert_eq!(super::runs(b"").count(), 0);
        assert_eq!(
            super::runs(b"[1]").map(|r| r.text).collect::<Vec<_>>(),
            [b"1"]
        );
    }
}
