//! Byte-to-text decoding for importers: UTF-8, falling back to Latin-1 (Windows-1252 printable range is
//! not special-cased). Written by hand because the fallback is one line per byte and a full encoding
//! crate would add tables for encodings the data sets never use.

use std::borrow::Cow;

/// Decodes `bytes` as UTF-8 if valid, else as Latin-1 (every byte maps to the code point of the same
/// value), so any input yields text and never panics. Strips a UTF-8 byte-order mark.
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
    }
}

/// Collapses runs of whitespace to one space and trims.
pub fn clean_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_fallback() {
        assert_eq!(decode_text(b"cr\xe8me br\xfbl\xe9e"), "crème brûlée");
        assert_eq!(decode_text("crème".as_bytes()), "crème");
        assert_eq!(decode_text(b"\xEF\xBB\xBFabc"), "abc");
        assert_eq!(clean_ws("  a \n\t b  "), "a b");
    }
}
