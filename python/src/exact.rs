//! Which JSON numbers a float (a double) holds exactly.
//!
//! A number in a file is served as a `float` only when the float keeps its value: the
//! float's shortest representation (its `repr`, the digits written back) denotes the
//! same number as the file's text (`0.1` and `1.5e-7` do; `9007199254740993.0`,
//! `1e-400`, `1e400` and `0.10000000000000001` do not, and are served as `Decimal`).
//! Integer literals are `int`s of any size and never need this. (The package's tests are
//! Python's: `test_values.py` checks this with hypothesis over every JSON spelling; the
//! same splitting is unit-tested in `node/src/exact.rs`.)

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

/// Whether `text` is a JSON number a float (a double) holds exactly, in the sense that
/// serving it as a `float` and writing that float back keeps its value: `Some(true)`
/// for one, `Some(false)` for a number no double holds (or beyond a double's range),
/// `None` for text that is not a JSON number.
pub fn float_keeps(text: &[u8]) -> Option<bool> {
    let p = parts(text)?;
    let s = p.significand();
    if s.len == 0 {
        // Zero (and -0.0, which a float keeps too).
        return Some(true);
    }
    // At most 15 significant digits (DBL_DIG) within the normal range: the double
    // nearest to the number gives back exactly those digits, so its shortest
    // representation is the same number. The common case, without formatting.
    let leading = s.power + s.len as i64 - 1;
    if s.len <= 15 && (-307..=307).contains(&leading) {
        return Some(true);
    }
    let Some(float) = p.float() else {
        return Some(false);
    };
    // The shortest digits that read back as this double (as Python's repr; zmij, the
    // formatter the package writes floats with).
    let mut buffer = zmij::Buffer::new();
    let back = parts(buffer.format_finite(float).as_bytes())?;
    Some(back.negative == p.negative && back.significand().same(&s))
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
        let (mut fraction, mut exponent, mut digits) = (false, false, 0);
        while i < text.len() && NUMBER_BYTE[usize::from(text[i])] {
            let b = text[i];
            fraction |= b == b'.';
            exponent |= b == b'e' || b == b'E';
            digits += usize::from(b.is_ascii_digit());
            i += 1;
        }
        let first = text[start];
        // Without an exponent, 15 digits or fewer: 15 significant digits at most, of
        // magnitude 1e-15 to 1e15 (the common case, decided here).
        if (exponent || (fraction && digits > 15))
            && (first == b'-' || first.is_ascii_digit())
            && float_keeps(&text[start..i]) == Some(false)
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
