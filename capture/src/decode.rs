//! Decoding photos: by content (never by extension), EXIF orientation applied, and a pixel limit
//! enforced from the header before any pixel buffer is allocated.

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

/// Default limit on decoded pixels: 64 megapixels (a 9248x6936 phone photo is 64 MP).
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// Errors decoding a photo. Messages start with the file name and end with the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("{name}: cannot read ({source})")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: not a supported image (content is not JPEG, PNG, WebP, GIF, BMP or TIFF); pass a photo file")]
    UnknownFormat { name: String },
    #[error("{name}: {width}x{height} is {mp:.1} megapixels, over the limit of {limit_mp:.1}; downscale the photo or raise --max-pixels")]
    TooLarge {
        name: String,
        width: u32,
        height: u32,
        mp: f64,
        limit_mp: f64,
    },
    #[error("{name}: image has no pixels ({width}x{height}); pass a real photo")]
    Empty {
        name: String,
        width: u32,
        height: u32,
    },
    #[error("{name}: corrupt or truncated {format} ({reason}); re-export or re-capture the photo")]
    Corrupt {
        name: String,
        format: String,
        reason: String,
    },
}

/// Decoding settings.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Reads and decodes the photo at `path` into 8-bit RGB, upright.
pub fn decode_file(path: &Path, opts: &DecodeOptions) -> Result<RgbImage, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        name: name.clone(),
        source,
    })?;
    decode_bytes(&bytes, &name, opts)
}

/// Decodes a photo held in memory; `name` is used in errors.
pub fn decode_bytes(
    bytes: &[u8],
    name: &str,
    opts: &DecodeOptions,
) -> Result<RgbImage, ImageError> {
    if jpeg_is_cut_short(bytes) {
        return Err(ImageError::Corrupt {
            name: name.to_string(),
            format: "JPEG".into(),
            reason: "the file ends before its end-of-image marker: it is cut short".into(),
        });
    }
    decode_reader(Cursor::new(bytes), name, opts)
}

/// Whether `bytes` is a JPEG whose image data stops before the end-of-image marker (an
/// interrupted copy or upload). The JPEG decoder conceals this (it fills the missing rows with
/// grey and reports success), which would classify half a photo without a word; no decoder
/// option reports it, hence this check. It walks the top-level segments to the first
/// start-of-scan (so an EXIF thumbnail's own markers are skipped) and looks for EOI after it;
/// entropy-coded data cannot contain FF D9, since a data FF byte is always followed by 00.
fn jpeg_is_cut_short(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut pos = 2;
    let sos = loop {
        // Markers may be preceded by fill bytes (FF).
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        match (bytes.get(pos), bytes.get(pos + 1)) {
            (Some(0xFF), Some(0xDA)) => break pos,
            (Some(0xFF), Some(0x01 | 0xD0..=0xD7)) => pos += 2,
            (Some(0xFF), Some(_)) => match bytes.get(pos + 2..pos + 4) {
                Some(len) => pos += 2 + u16::from_be_bytes([len[0], len[1]]) as usize,
                None => return true,
            },
            // Headers cut short, or not a marker where one must be: the decoder reports these.
            (None, _) | (Some(_), None) => return true,
            _ => return false,
        }
    };
    !bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

fn decode_reader<R: BufRead + Seek>(
    r: R,
    name: &str,
    opts: &DecodeOptions,
) -> Result<RgbImage, ImageError> {
    let reader = ImageReader::new(r)
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            name: name.to_string(),
            source,
        })?;
    let format = reader.format().ok_or_else(|| ImageError::UnknownFormat {
        name: name.to_string(),
    })?;
    let fmt_name = format!("{format:?}").to_uppercase();
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Unsupported(_) => ImageError::UnknownFormat {
            name: name.to_string(),
        },
        other => ImageError::Corrupt {
            name: name.to_string(),
            format: fmt_name.clone(),
            reason: other.to_string(),
        },
    };
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels == 0 {
        return Err(ImageError::Empty {
            name: name.to_string(),
            width,
            height,
        });
    }
    if pixels > opts.max_pixels {
        return Err(ImageError::TooLarge {
            name: name.to_string(),
            width,
            height,
            mp: pixels as f64 / 1e6,
            limit_mp: opts.max_pixels as f64 / 1e6,
        });
    }
    let mut limits = Limits::default();
    // 16-bit RGBA is the widest colour type the decoders produce: 8 bytes a pixel, plus slack
    // for a decoder's own row buffers.
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(limits).map_err(corrupt)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn jpegs_cut_short_are_refused_and_whole_ones_pass() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([x as u8 * 6, y as u8 * 8, 90])
        }));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let opts = DecodeOptions::default();
        assert!(!jpeg_is_cut_short(&jpeg));
        assert!(decode_bytes(&jpeg, "whole.jpg", &opts).is_ok());
        // Trailing bytes after EOI (some cameras append data) are fine.
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"\0\0vendor data");
        assert!(decode_bytes(&trailing, "trailing.jpg", &opts).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() * 9 / 10, jpeg.len() / 2, 3] {
            let err = decode_bytes(&jpeg[..cut], "cut.jpg", &opts).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("cut.jpg: corrupt or truncated JPEG"),
                "{err}"
            );
        }
        // An APP1 segment holding a whole thumbnail (with its own SOS and EOI) before a main
        // image that is cut short: still refused.
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((jpeg.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(&jpeg);
        let mut with_thumb = jpeg[..2].to_vec();
        with_thumb.extend_from_slice(&app1);
        with_thumb.extend_from_slice(&jpeg[2..jpeg.len() / 2]);
        assert!(jpeg_is_cut_short(&with_thumb));
        let mut whole_with_thumb = jpeg[..2].to_vec();
        whole_with_thumb.extend_from_slice(&app1);
        whole_with_thumb.extend_from_slice(&jpeg[2..]);
        assert!(!jpeg_is_cut_short(&whole_with_thumb));
    }

    #[test]
    fn decodes_by_content_not_name() {
        let img = decode_bytes(&png(5, 3), "photo.jpg", &DecodeOptions::default()).unwrap();
        assert_eq!(img.dimensions(), (5, 3));
        assert_eq!(img.get_pixel(4, 2).0, [4, 2, 7]);
    }

    #[test]
    fn refuses_oversized_images_from_the_header() {
        let opts = DecodeOptions { max_pixels: 10 };
        let err = decode_bytes(&png(4, 3), "big.png", &opts).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    width: 4,
                    height: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("big.png: 4x3"), "{err}");
    }

    #[test]
    fn non_images_and_truncated_images_are_clear_errors() {
        let err =
            decode_bytes(b"hello, I am text", "notes.jpg", &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
        let full = png(40, 40);
        let err = decode_bytes(
            &full[..full.len() / 2],
            "cut.png",
            &DecodeOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
        let err = decode_bytes(&[], "empty.png", &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
    }
}
