//! Learned weight rounding (AdaRound): which int8 weights round the other way.
//!
//! Rounding every weight to the nearest integer is not the best rounding for a layer: what
//! matters is the layer's output, and rounding some weights the other way cancels the errors of
//! others. `scripts/adaround_lite.py` learns, per weight, up or down on calibration photos
//! (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"). The
//! result is stored as the positions (row-major, in the weight initialiser) whose rounding
//! differs from round-to-nearest-even, so the table stays small and the scales do not change.
//! Which way such a weight goes follows from its value: if nearest rounded it up, it now
//! rounds down, and the other way round ([`reround`]).
//!
//! Encoding: the gaps between positions (`position - previous - 1`, the first from -1) as
//! LEB128 varints, zlib-compressed (its checksum catches a damaged table), in standard base64,
//! one string per weight. About one weight in ten is re-rounded, so a gap mostly fits one byte;
//! zlib then takes a third off. Written by hand because the format is this small; flate2 and
//! base64 do the compression and the text.

use std::io::{Read, Write};

use base64::Engine;

/// Why a rounding entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoundingError {
    #[error("not base64 ({0})")]
    Base64(String),
    #[error("not zlib data, or damaged ({0})")]
    Zlib(String),
    #[error("a varint is cut off at the end")]
    Truncated,
    #[error("position {position} is past the weight's {len} values; the table was made for another model")]
    OutOfRange { position: u64, len: usize },
}

/// Encodes ascending, distinct positions.
///
/// # Panics
/// If `positions` is not strictly ascending (a caller bug, not an input problem).
pub fn encode(positions: &[usize]) -> String {
    let mut raw = Vec::with_capacity(positions.len());
    let mut next = 0usize;
    for &p in positions {
        assert!(p >= next, "rounding positions must be strictly ascending");
        let mut gap = (p - next) as u64;
        loop {
            let byte = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                raw.push(byte);
                break;
            }
            raw.push(byte | 0x80);
        }
        next = p + 1;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).expect("writing to a Vec cannot fail");
    let bytes = z.finish().expect("writing to a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes the positions of a weight with `len` values. Rejects positions past `len`, and
/// never inflates more than a table for `len` values can hold.
pub fn decode(text: &str, len: usize) -> Result<Vec<usize>, RoundingError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| RoundingError::Base64(e.to_string()))?;
    // Each position takes at most 10 varint bytes; a table can list each value at most once.
    let limit = (len as u64).saturating_mul(10).saturating_add(1);
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(bytes.as_slice())
        .take(limit)
        .read_to_end(&mut raw)
        .map_err(|e| RoundingError::Zlib(e.to_string()))?;
    let mut out = Vec::new();
    let (mut next, mut gap, mut shift, mut partial) = (0u64, 0u64, 0u32, false);
    for b in raw {
        if shift >= 64 {
            return Err(RoundingError::OutOfRange {
                position: u64::MAX,
                len,
            });
        }
        gap |= u64::from(b & 0x7f) << shift;
        shift += 7;
        partial = true;
        if b & 0x80 == 0 {
            let position = next.saturating_add(gap);
            if position >= len as u64 {
                return Err(RoundingError::OutOfRange { position, len });
            }
            out.push(position as usize);
            next = position + 1;
            (gap, shift, partial) = (0, 0, false);
        }
    }
    if partial {
        return Err(RoundingError::Truncated);
    }
    Ok(out)
}

/// The other rounding of `x / scale` from round-to-nearest-even: down where nearest went up,
/// up otherwise (also when `x / scale` is a whole number), within the int8 range.
pub fn reround(x: f32, scale: f32) -> i8 {
    let v = x / scale;
    let nearest = v.round_ties_even();
    let other = if nearest > v {
        nearest - 1.0
    } else {
        nearest + 1.0
    };
    other.clamp(-127.0, 127.0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positions_round_trip_and_gaps_of_any_size_fit() {
        let p = vec![0, 1, 2, 130, 131, 20_000, 3_000_000];
        assert_eq!(decode(&encode(&p), 3_000_001).unwrap(), p);
        assert_eq!(decode(&encode(&[]), 0).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn a_position_past_the_weight_is_refused() {
        let e = decode(&encode(&[3, 10]), 10).unwrap_err();
        assert_eq!(
            e,
            RoundingError::OutOfRange {
                position: 10,
                len: 10
            }
        );
        assert!(e.to_string().contains("another model"), "{e}");
    }

    #[test]
    fn damaged_text_is_refused_not_misread() {
        let good = encode(&[5, 6, 7, 900]);
        assert!(matches!(
            decode("not base64!", 1000),
            Err(RoundingError::Base64(_))
        ));
        // Flip one bit in the compressed stream: zlib's checksum (or its structure) catches it.
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&good)
            .unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        let bad = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(decode(&bad, 1000).is_err());
        // A varint whose continuation bit runs off the end.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&[3, 0x85]).unwrap();
        let cut = base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap());
        assert_eq!(decode(&cut, 1000), Err(RoundingError::Truncated));
    }

    #[test]
    fn rerounding_goes_the_other_way_from_nearest() {
        assert_eq!(reround(2.3, 1.0), 3); // nearest 2 went down, so up
        assert_eq!(reround(2.7, 1.0), 2); // nearest 3 went up, so down
        assert_eq!(reround(-2.3, 1.0), -3);
        assert_eq!(reround(-2.7, 1.0), -2);
        assert_eq!(reround(4.0, 1.0), 5); // a whole number: up
        assert_eq!(reround(2.5, 1.0), 3); // ties-even took 2
        assert_eq!(reround(3.5, 1.0), 3); // ties-even took 4
        assert_eq!(reround(127.0, 1.0), 127); // clamped to the int8 range
        assert_eq!(reround(-126.6, 1.0), -126);
    }

    proptest! {
        #[test]
        fn any_ascending_positions_round_trip(mut p in proptest::collection::vec(0usize..1_000_000, 0..300)) {
            p.sort_unstable();
            p.dedup();
            prop_assert_eq!(decode(&encode(&p), 1_000_000).unwrap(), p);
        }

        #[test]
        fn decoding_junk_never_panics(s in "[A-Za-z0-9+/=]{0,64}", len in 0usize..1000) {
            let _ = decode(&s, len);
        }
    }
}
