//! JSON written by hand where serde's machinery cost more than the bytes (a
//! commit's lock record, a journal record's metadata, pointers into a document):
//! numbers and strings exactly as serde_json writes them.

/// `s` as a JSON string, appended to `out` exactly as serde_json writes it: as it
/// is between quotes when it holds nothing to escape, else by serde_json itself.
pub(crate) fn push_string(out: &mut Vec<u8>, s: &str) {
    if has_escapes(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("invariant: writing to a Vec succeeds");
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `n` in decimal, appended to `out` (as `format!("{n}")` writes it).
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// `n`'s ASCII digits in decimal (as `format!("{n}")` writes it), written into the
/// end of `buf`.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Whether `bytes` hold a byte serde_json escapes: `"`, `\` or a control character.
/// Looked for 16 bytes at a time, in blocks the compiler turns into vector compares
/// (a byte at a time cost more than the rest of `measure.rs`'s walk); a string
/// shorter than a
/// block is copied into one padded with spaces, and the last block of a longer
/// one overlaps the one before.
pub(crate) fn has_escapes(bytes: &[u8]) -> bool {
    const BLOCK: usize = 16;
    let any = |block: &[u8; BLOCK]| {
        block.iter().fold(0u8, |found, &b| {
            found | u8::from(b < 0x20 || b == b'"' || b == b'\\')
        }) != 0
    };
    let block = |at: usize| -> &[u8; BLOCK] {
        bytes[at..at + BLOCK]
            .try_into()
            .expect("invariant: a block's length")
    };
    if bytes.len() < BLOCK {
        let mut padded = [b' '; BLOCK];
        padded[..bytes.len()].copy_from_slice(bytes);
        return any(&padded);
    }
    (0..bytes.len() / BLOCK).any(|i| any(block(i * BLOCK))) || any(block(bytes.len() - BLOCK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_escaped_byte_is_found_at_every_place_in_strings_of_every_length() {
        let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for n in 0..=48 {
            assert!(!has_escapes(&vec![b'a'; n]), "{n}");
            for at in 0..n {
                for b in 0..=u8::MAX {
                    let mut bytes = vec![b'a'; n];
                    bytes[at] = b;
                    assert_eq!(has_escapes(&bytes), escaped(b), "{n} {at} {b:#x}");
                }
            }
        }
    }

    #[test]
    fn decimals_are_the_ones_format_writes() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    proptest! {
        #[test]
        fn strings_are_the_ones_serde_json_writes(s in "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}])*") {
            let mut out = b"x".to_vec();
            push_string(&mut out, &s);
            let mut expected = b"x".to_vec();
            serde_json::to_writer(&mut expected, &s).unwrap();
            prop_assert_eq!(out, expected);
        }
    }
}
