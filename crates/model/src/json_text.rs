//! JSON string literals written the way `serde_json` writes them, eight bytes at a time.
//!
//! Ingest writes each span's text twice over (an attribute value encoded as JSON, then that
//! JSON held as a string in the span dict), and `serde_json` looks at every byte of it one at a
//! time. Most of that text needs no escaping, so this looks at a word at a time and copies the
//! runs that need none whole. The output is byte for byte `serde_json`'s (tested against it).

/// Bytes 0x01 repeated: multiplied by a byte, that byte in every lane.
const LANES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` (little-endian) that need escaping, as the high bit of each: a quote, a
/// backslash or a control character (< 0x20). Exact per byte (no carry crosses bytes), so
/// each set bit is one escape. Bytes of multi-byte UTF-8 sequences (≥ 0x80) never are.
#[inline]
fn escape_mask(word: u64) -> u64 {
    const LOW_BITS: u64 = !HIGH_BITS;
    // high bit set where the byte is zero
    let zero = |v: u64| !(((v & LOW_BITS) + LOW_BITS) | v) & HIGH_BITS;
    // high bit set where the byte's low seven bits reach 0x20; with its own high bit clear too,
    // the byte is below 0x20
    let control = !(((word & LOW_BITS) + LANES * 0x60) | word) & HIGH_BITS;
    control | zero(word ^ (LANES * u64::from(b'"'))) | zero(word ^ (LANES * u64::from(b'\\')))
}

/// The escape of `byte`, or `None` when it is written as is.
#[inline]
fn escape_of(byte: u8) -> Option<&'static str> {
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b", "\\t",
        "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012", "\\u0013",
        "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c",
        "\\u001d", "\\u001e", "\\u001f",
    ];
    match byte {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        0..0x20 => Some(CONTROL[usize::from(byte)]),
        _ => None,
    }
}

/// Appends `text` as a JSON string literal, quotes included. Escapes are all ASCII, so the
/// text is cut only at character boundaries.
pub fn write_str(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut start = 0;
    let mut escape_at = |out: &mut String, at: usize| {
        if let Some(escape) = escape_of(bytes[at]) {
            out.push_str(&text[start..at]);
            out.push_str(escape);
            start = at + 1;
        }
    };
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for (n, word) in words.enumerate() {
        let mut mask = escape_mask(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        while mask != 0 {
            escape_at(out, n * 8 + (mask.trailing_zeros() / 8) as usize);
            mask &= mask - 1;
        }
    }
    for at in bytes.len() - tail.len()..bytes.len() {
        escape_at(out, at);
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, text);
        out
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "exactly8".into(),
            "a \"quoted\" word and a back\\slash".into(),
            "{\"prompt\": \"héllo wörld ✓ 🦀\", \"n\": [1, 2]}".into(),
            "line\nbreak\ttab\rreturn\u{8}bell\u{c}feed\u{0}nul\u{1f}unit\u{7f}del".into(),
            "ends with a quote\"".into(),
            "\"".repeat(17),
        ];
        // every byte below 0x80 at every position of a word, and multi-byte characters
        // straddling word boundaries
        for c in (0u8..0x80).map(char::from).chain(['é', '€', '🦀']) {
            for pad in 0..10 {
                cases.push(format!("{}{c}{}", "x".repeat(pad), "y".repeat(9 - pad)));
            }
        }
        // several escapes in one word, at every alignment
        let ascii: String = (0u8..0x80).map(char::from).collect();
        for pad in 0..8 {
            cases.push(format!("{}{ascii}é{ascii}\"\\\n", "x".repeat(pad)));
        }
        for case in &cases {
            assert_eq!(written(case), serde_json::to_string(case).unwrap(), "{case:?}");
        }
    }
}
