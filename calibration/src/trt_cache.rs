//! TensorRT implicit-quantisation calibration caches, as `IInt8EntropyCalibrator2` reads and writes
//! them (TensorRT 8.5 to 10.x):
//!
//! ```text
//! TRT-8601-EntropyCalibration2
//! input: 3caa54fc
//! (Unnamed Layer* 3) [Convolution]_output: 3d1b5e0e
//! ```
//!
//! The header carries the TensorRT version as an integer (8601 for 8.6.1, 100300 for 10.3.0).
//! Each further line is `<tensor name>: <scale>`, the scale (`amax / 127`) written as the 8
//! lowercase hex digits of its big-endian `f32` bit pattern. Tensor names may themselves contain
//! `": "`; the scale follows the last one.

use std::collections::HashMap;
use std::fmt;

use crate::amax::scale;

const HEADER_PREFIX: &str = "TRT-";
const HEADER_SUFFIX: &str = "-EntropyCalibration2";

/// A TensorRT `EntropyCalibration2` cache: per-tensor INT8 scales, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationCache {
    /// TensorRT version in the header, e.g. 8601 or 100300.
    pub version: u32,
    /// `(tensor name, scale)` with `scale = amax / 127`. Names must be non-empty, unique and free
    /// of line breaks, and scales finite and not negative, for [`CalibrationCache::parse`] to read
    /// back what [`CalibrationCache::to_text`] writes.
    pub entries: Vec<(String, f32)>,
}

/// What is wrong with one line of a calibration cache.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LineProblem {
    /// No `": "` separates a name from the scale.
    MissingSeparator,
    /// Nothing before the separator.
    EmptyName,
    /// The scale is not exactly 8 hex digits.
    BadHex,
    /// The scale is NaN or infinite.
    NonFiniteScale(f32),
    /// The scale is negative (or -0).
    NegativeScale(f32),
    /// The tensor already has a scale on an earlier line.
    Duplicate {
        /// 1-based line of the first entry.
        first_line: usize,
    },
    /// An empty line before the end of the file.
    Blank,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::MissingSeparator => {
                f.write_str("expected `<tensor name>: <8 hex digits>`, found no `: `")
            }
            LineProblem::EmptyName => f.write_str("the tensor name is empty"),
            LineProblem::BadHex => f.write_str(
                "the scale must be exactly 8 hex digits (the f32 bit pattern), e.g. 3caa54fc",
            ),
            LineProblem::NonFiniteScale(s) => write!(f, "the scale {s} is not finite"),
            LineProblem::NegativeScale(s) => write!(f, "the scale {s} is negative"),
            LineProblem::Duplicate { first_line } => {
                write!(f, "this tensor already has a scale on line {first_line}")
            }
            LineProblem::Blank => f.write_str("blank line inside the cache"),
        }
    }
}

/// A calibration cache that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The text is empty.
    #[error(
        "calibration cache is empty; expected a first line like `TRT-8601-EntropyCalibration2`"
    )]
    Empty,
    /// Line 1 is not `TRT-<version>-EntropyCalibration2`.
    #[error(
        "calibration cache line 1: expected `TRT-<version>-EntropyCalibration2` \
         (e.g. `TRT-8601-EntropyCalibration2`), found `{found}`; only IInt8EntropyCalibrator2 \
         caches are supported, regenerate the cache with that calibrator"
    )]
    BadHeader {
        /// The first line as found.
        found: String,
    },
    /// A tensor line is malformed.
    #[error("calibration cache line {line}: `{content}`: {problem}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line as found (without its line ending).
        content: String,
        /// What is wrong with it.
        problem: LineProblem,
    },
}

impl CalibrationCache {
    /// An empty cache for TensorRT `version` (e.g. 8601).
    pub fn new(version: u32) -> Self {
        Self {
            version,
            entries: Vec::new(),
        }
    }

    /// Appends `name` with the scale of `amax` ([`scale`]: `amax / 127`).
    pub fn push_amax(&mut self, name: impl Into<String>, amax: f32) {
        self.entries.push((name.into(), scale(amax)));
    }

    /// The scale recorded for `name`, if any.
    pub fn scale_of(&self, name: &str) -> Option<f32> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, s)| s)
    }

    /// The cache file's text: the header, then `name: xxxxxxxx` per entry, every line ending in
    /// `\n`.
    pub fn to_text(&self) -> String {
        let mut text = format!("{HEADER_PREFIX}{}{HEADER_SUFFIX}\n", self.version);
        for (name, scale) in &self.entries {
            text.push_str(&format!("{name}: {:08x}\n", scale.to_bits()));
        }
        text
    }

    /// Reads a cache written by TensorRT or [`to_text`](Self::to_text). Accepts `\n` or `\r\n`
    /// line endings, with or without one after the last line; rejects anything else with the line
    /// number and content (see [`CacheError`] and [`LineProblem`]).
    pub fn parse(text: &str) -> Result<Self, CacheError> {
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(text);
        if text.is_empty() {
            return Err(CacheError::Empty);
        }
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let header = lines.next().unwrap_or_default();
        let version = header
            .strip_prefix(HEADER_PREFIX)
            .and_then(|h| h.strip_suffix(HEADER_SUFFIX))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| CacheError::BadHeader {
                found: header.to_owned(),
            })?;

        let mut entries = Vec::new();
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        for (index, content) in lines.enumerate() {
            let line = index + 2;
            let bad = |problem| CacheError::BadLine {
                line,
                content: content.to_owned(),
                problem,
            };
            let (name, hex) = parse_line(content).map_err(bad)?;
            if let Some(&first_line) = first_seen.get(name) {
                return Err(bad(LineProblem::Duplicate { first_line }));
            }
            first_seen.insert(name, line);
            entries.push((name.to_owned(), hex));
        }
        Ok(Self { version, entries })
    }
}

fn parse_line(content: &str) -> Result<(&str, f32), LineProblem> {
    if content.is_empty() {
        return Err(LineProblem::Blank);
    }
    let (name, hex) = content
        .rsplit_once(": ")
        .ok_or(LineProblem::MissingSeparator)?;
    if name.is_empty() {
        return Err(LineProblem::EmptyName);
    }
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineProblem::BadHex);
    }
    let bits = u32::from_str_radix(hex, 16).map_err(|_| LineProblem::BadHex)?;
    let scale = f32::from_bits(bits);
    if !scale.is_finite() {
        return Err(LineProblem::NonFiniteScale(scale));
    }
    if scale.is_sign_negative() {
        return Err(LineProblem::NegativeScale(scale));
    }
    Ok((name, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOLDEN: &str = "TRT-8601-EntropyCalibration2\n\
                          input: 3caa54fc\n\
                          (Unnamed Layer* 3) [Convolution]_output: 3d1b5e0e\n\
                          /backbone/conv1/Conv_output_0: 3c8a1f45\n\
                          scope:with: colons: 3f800000\n";

    #[test]
    fn golden_scale_parses_to_its_exact_bits_and_writes_back() {
        let cache =
            CalibrationCache::parse("TRT-8601-EntropyCalibration2\ninput: 3caa54fc\n").unwrap();
        assert_eq!(cache.version, 8601);
        let scale = cache.scale_of("input").unwrap();
        assert_eq!(scale.to_bits(), 0x3caa_54fc);
        assert_eq!(scale, f32::from_bits(0x3caa54fc));
        assert!((scale - 0.020_792_5).abs() < 1e-7, "{scale}");
        assert!((scale * 127.0 - 2.640_64).abs() < 1e-5, "{}", scale * 127.0);

        let mut written = CalibrationCache::new(8601);
        written.entries.push(("input".into(), scale));
        assert_eq!(
            written.to_text(),
            "TRT-8601-EntropyCalibration2\ninput: 3caa54fc\n"
        );
    }

    #[test]
    fn whole_file_round_trips_bit_for_bit() {
        let cache = CalibrationCache::parse(GOLDEN).unwrap();
        assert_eq!(cache.entries.len(), 4);
        assert_eq!(cache.entries[3], ("scope:with: colons".to_owned(), 1.0));
        assert_eq!(
            cache.entries[1].0,
            "(Unnamed Layer* 3) [Convolution]_output"
        );
        assert_eq!(cache.to_text(), GOLDEN);
    }

    #[test]
    fn crlf_and_missing_final_newline_are_accepted() {
        let crlf = GOLDEN.replace('\n', "\r\n");
        assert_eq!(CalibrationCache::parse(&crlf).unwrap().to_text(), GOLDEN);
        let bare = GOLDEN.trim_end_matches('\n');
        assert_eq!(CalibrationCache::parse(bare).unwrap().to_text(), GOLDEN);
        let header_only = CalibrationCache::parse("TRT-100300-EntropyCalibration2").unwrap();
        assert_eq!(header_only, CalibrationCache::new(100300));
    }

    #[test]
    fn push_amax_stores_the_scale() {
        let mut cache = CalibrationCache::new(100300);
        cache.push_amax("x", 127.0);
        assert_eq!(
            cache.to_text(),
            "TRT-100300-EntropyCalibration2\nx: 3f800000\n"
        );
    }

    fn line_error(text: &str) -> (usize, String, LineProblem) {
        match CalibrationCache::parse(text) {
            Err(CacheError::BadLine {
                line,
                content,
                problem,
            }) => (line, content, problem),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn bad_lines_are_named_by_number_and_content() {
        let h = "TRT-8601-EntropyCalibration2\n";
        let cases = [
            (
                "a: 3caa54fc\nb 3caa54fc\n",
                3,
                "b 3caa54fc",
                LineProblem::MissingSeparator,
            ),
            (
                "a:3caa54fc\n",
                2,
                "a:3caa54fc",
                LineProblem::MissingSeparator,
            ),
            (": 3caa54fc\n", 2, ": 3caa54fc", LineProblem::EmptyName),
            ("a: 3caa54f\n", 2, "a: 3caa54f", LineProblem::BadHex),
            ("a: 3caa54fc0\n", 2, "a: 3caa54fc0", LineProblem::BadHex),
            ("a: +caa54fc\n", 2, "a: +caa54fc", LineProblem::BadHex),
            ("a: 3caa54fc \n", 2, "a: 3caa54fc ", LineProblem::BadHex),
            (
                "a: 7fc00000\n",
                2,
                "a: 7fc00000",
                LineProblem::NonFiniteScale(f32::NAN),
            ),
            (
                "a: bf800000\n",
                2,
                "a: bf800000",
                LineProblem::NegativeScale(-1.0),
            ),
            ("a: 3caa54fc\n\nb: 3caa54fc\n", 3, "", LineProblem::Blank),
            (
                "a: 3caa54fc\na: 3caa54fc\n",
                3,
                "a: 3caa54fc",
                LineProblem::Duplicate { first_line: 2 },
            ),
        ];
        for (body, line, content, problem) in cases {
            let (l, c, p) = line_error(&format!("{h}{body}"));
            assert_eq!((l, c.as_str()), (line, content), "{body:?}");
            match (&p, &problem) {
                (LineProblem::NonFiniteScale(a), LineProblem::NonFiniteScale(b)) => {
                    assert!(a.is_nan() && b.is_nan())
                }
                _ => assert_eq!(p, problem, "{body:?}"),
            }
        }
        let message = CalibrationCache::parse(&format!("{h}a: 3caa54f\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("calibration cache line 2: `a: 3caa54f`:"),
            "{message}"
        );
        assert!(message.contains("8 hex digits"), "{message}");
    }

    #[test]
    fn bad_headers_are_rejected() {
        assert_eq!(CalibrationCache::parse(""), Err(CacheError::Empty));
        for header in [
            "TRT-8601-MinMaxCalibration",
            "TRT--EntropyCalibration2",
            "TRT-86a1-EntropyCalibration2",
            "TRT-+8601-EntropyCalibration2",
            "input: 3caa54fc",
        ] {
            let err = CalibrationCache::parse(&format!("{header}\ninput: 3caa54fc\n")).unwrap_err();
            assert_eq!(
                err,
                CacheError::BadHeader {
                    found: header.into()
                }
            );
            assert!(err
                .to_string()
                .contains("TRT-<version>-EntropyCalibration2"));
        }
    }

    proptest! {
        #[test]
        fn any_valid_cache_round_trips(
            version in any::<u32>(),
            entries in prop::collection::vec(
                ("[a-zA-Z0-9_/:. ()*\\[\\]-]{1,24}", 0u32..0x7f80_0000),
                0..20,
            ),
        ) {
            let mut seen = std::collections::HashSet::new();
            let cache = CalibrationCache {
                version,
                entries: entries
                    .into_iter()
                    .filter(|(name, _)| seen.insert(name.clone()))
                    .map(|(name, bits)| (name, f32::from_bits(bits)))
                    .collect(),
            };
            let text = cache.to_text();
            let back = CalibrationCache::parse(&text).unwrap();
            prop_assert_eq!(back.to_text(), text);
            prop_assert_eq!(back, cache);
        }
    }
}
