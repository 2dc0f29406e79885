//! Camera pixel formats to packed RGB8: pure functions over byte slices, compiled in every build.
//!
//! YUV conversions use ITU-R BT.601 with limited ("studio", "TV") range, which is what UVC
//! webcams and V4L2 drivers deliver unless they say otherwise: Y in 16..=235 and U, V in 16..=240
//! map to full-range RGB, in 8.8 fixed point:
//!
//! ```text
//! R = 1.164 (Y - 16)                     + 1.596 (V - 128)
//! G = 1.164 (Y - 16) - 0.392 (U - 128)   - 0.813 (V - 128)
//! B = 1.164 (Y - 16) + 2.017 (U - 128)
//! ```
//!
//! Values outside the nominal range are clamped. Every converter writes into a caller's `Vec<u8>`
//! and resizes it only when the frame size changes, so steady-state capture does not allocate
//! (MJPEG decoding does: the JPEG decoder keeps its own copy of the input).

use std::io::Cursor;

use image::{ColorType, ImageDecoder};

/// A pixel layout a camera delivers and [`to_rgb`] converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, `Y0 U Y1 V` per two pixels (V4L2 `YUYV`, GStreamer `YUY2`).
    Yuyv,
    /// Packed 4:2:2, `U Y0 V Y1` per two pixels.
    Uyvy,
    /// Planar 4:2:0: a Y plane, then one plane of interleaved `U V` at half resolution.
    Nv12,
    /// 8-bit luma only (limited range, like the Y of the YUV formats).
    Grey,
    /// Motion JPEG: each frame is a JPEG image.
    Mjpeg,
}

impl PixelFormat {
    /// Every format, in the order [`choose_format`] prefers them when the caller has no wish.
    pub const PREFERENCE: [PixelFormat; 5] = [
        PixelFormat::Mjpeg,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Uyvy,
        PixelFormat::Grey,
    ];

    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Uyvy => *b"UYVY",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The format with V4L2 code `fourcc` (`JPEG` counts as MJPEG, `YUY2` as YUYV).
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        match &fourcc {
            b"YUYV" | b"YUY2" => Some(PixelFormat::Yuyv),
            b"UYVY" => Some(PixelFormat::Uyvy),
            b"NV12" => Some(PixelFormat::Nv12),
            b"GREY" | b"Y800" => Some(PixelFormat::Grey),
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            _ => None,
        }
    }

    /// The name used in URIs (`format=`).
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Uyvy => "uyvy",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Grey => "grey",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }

    /// Bytes of one row of the first plane, without padding (`None` for MJPEG).
    pub fn min_stride(self, width: u32) -> Option<usize> {
        let w = width as usize;
        match self {
            PixelFormat::Yuyv | PixelFormat::Uyvy => Some(w * 2),
            PixelFormat::Nv12 | PixelFormat::Grey => Some(w),
            PixelFormat::Mjpeg => None,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PixelFormat {
    type Err = dishcam_models::ParseError;
    fn from_str(s: &str) -> Result<Self, dishcam_models::ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "yuyv" | "yuy2" => Ok(PixelFormat::Yuyv),
            "uyvy" => Ok(PixelFormat::Uyvy),
            "nv12" => Ok(PixelFormat::Nv12),
            "grey" | "gray" => Ok(PixelFormat::Grey),
            "mjpeg" | "mjpg" | "jpeg" => Ok(PixelFormat::Mjpeg),
            other => Err(dishcam_models::ParseError(format!(
                "unknown pixel format '{other}' (expected {})",
                FORMAT_NAMES
            ))),
        }
    }
}

/// The accepted `format=` values, for messages.
pub const FORMAT_NAMES: &str = "yuyv, mjpeg, nv12, uyvy or grey";

/// A frame that cannot be converted. Messages say what the buffer held and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PixelError {
    #[error(
        "{format} needs an even {what}, got {width}x{height}; ask the camera for an even size"
    )]
    OddSize {
        format: PixelFormat,
        what: &'static str,
        width: u32,
        height: u32,
    },
    #[error("{format} frame {width}x{height} has no pixels")]
    Empty {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
    #[error("{format} row stride {stride} is shorter than a {width}-pixel row ({min} bytes)")]
    Stride {
        format: PixelFormat,
        width: u32,
        stride: usize,
        min: usize,
    },
    #[error("{format} frame {width}x{height} (stride {stride}) needs {needed} bytes, the buffer has {got} (truncated or wrong format)")]
    Short {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        got: usize,
    },
    #[error(
        "RGB frame {width}x{height} (stride {stride}) needs {needed} bytes, the buffer has {got}"
    )]
    RgbShort {
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        got: usize,
    },
    #[error("MJPEG frame: {reason}")]
    Jpeg { reason: String },
    #[error("MJPEG frame {width}x{height} is over the limit of {max_pixels} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
}

/// Converts one frame of `format` to packed RGB8 in `out` (resized to `width * height * 3`).
///
/// `width`, `height` and `stride` (bytes per row of the first plane; NV12's chroma plane follows
/// the luma plane with the same stride, as V4L2 lays it out) describe raw formats; for MJPEG they
/// are ignored and the size comes from the JPEG header, checked against `max_pixels`. Returns the
/// size written.
pub fn to_rgb(
    format: PixelFormat,
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    max_pixels: u64,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), PixelError> {
    match format {
        PixelFormat::Yuyv => yuyv_to_rgb(src, width, height, stride, out),
        PixelFormat::Uyvy => uyvy_to_rgb(src, width, height, stride, out),
        PixelFormat::Nv12 => nv12_to_rgb(src, width, height, stride, out),
        PixelFormat::Grey => grey_to_rgb(src, width, height, stride, out),
        PixelFormat::Mjpeg => return mjpeg_to_rgb(src, max_pixels, out),
    }
    .map(|()| (width, height))
}

/// BT.601 limited-range YUV to RGB for one pixel.
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

/// Checks the size, stride and buffer length of a raw frame whose planes take `rows` rows of
/// `stride` bytes (the last row needs only `min_stride` bytes).
fn check(
    format: PixelFormat,
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    rows: usize,
) -> Result<(), PixelError> {
    if width == 0 || height == 0 {
        return Err(PixelError::Empty {
            format,
            width,
            height,
        });
    }
    let min = format.min_stride(width).unwrap_or(0);
    if stride < min {
        return Err(PixelError::Stride {
            format,
            width,
            stride,
            min,
        });
    }
    let needed = stride
        .checked_mul(rows - 1)
        .and_then(|n| n.checked_add(min))
        .unwrap_or(usize::MAX);
    if src.len() < needed {
        return Err(PixelError::Short {
            format,
            width,
            height,
            stride,
            needed,
            got: src.len(),
        });
    }
    Ok(())
}

fn even(format: PixelFormat, width: u32, height: u32, need_h: bool) -> Result<(), PixelError> {
    let what = if !width.is_multiple_of(2) {
        "width"
    } else if need_h && !height.is_multiple_of(2) {
        "height"
    } else {
        return Ok(());
    };
    Err(PixelError::OddSize {
        format,
        what,
        width,
        height,
    })
}

fn prepare(out: &mut Vec<u8>, width: u32, height: u32) {
    out.resize(width as usize * height as usize * 3, 0);
}

/// YUYV (YUY2) 4:2:2 to RGB8; `width` must be even.
pub fn yuyv_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    packed_422(
        PixelFormat::Yuyv,
        [0, 1, 2, 3],
        src,
        width,
        height,
        stride,
        out,
    )
}

/// UYVY 4:2:2 to RGB8; `width` must be even.
pub fn uyvy_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    packed_422(
        PixelFormat::Uyvy,
        [1, 0, 3, 2],
        src,
        width,
        height,
        stride,
        out,
    )
}

/// `idx` gives the positions of Y0, U, Y1, V within each 4-byte group.
fn packed_422(
    format: PixelFormat,
    idx: [usize; 4],
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    even(format, width, height, false)?;
    check(format, src, width, height, stride, height as usize)?;
    prepare(out, width, height);
    let row_in = width as usize * 2;
    let row_out = width as usize * 3;
    for (y, dst) in out.chunks_exact_mut(row_out).enumerate() {
        let row = &src[y * stride..y * stride + row_in];
        for (g, px) in row.chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
            let (u, v) = (g[idx[1]], g[idx[3]]);
            px[..3].copy_from_slice(&yuv_to_rgb(g[idx[0]], u, v));
            px[3..].copy_from_slice(&yuv_to_rgb(g[idx[2]], u, v));
        }
    }
    Ok(())
}

/// NV12 4:2:0 to RGB8; `width` and `height` must be even. The interleaved `U V` plane starts
/// right after `height` rows of `stride` bytes and has the same stride.
pub fn nv12_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    let format = PixelFormat::Nv12;
    even(format, width, height, true)?;
    let h = height as usize;
    check(format, src, width, height, stride, h + h / 2)?;
    prepare(out, width, height);
    let w = width as usize;
    let uv_plane = stride * h;
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let luma = &src[y * stride..y * stride + w];
        let uv_start = uv_plane + (y / 2) * stride;
        let uv = &src[uv_start..uv_start + w];
        for ((l, c), px) in luma
            .chunks_exact(2)
            .zip(uv.chunks_exact(2))
            .zip(dst.chunks_exact_mut(6))
        {
            px[..3].copy_from_slice(&yuv_to_rgb(l[0], c[0], c[1]));
            px[3..].copy_from_slice(&yuv_to_rgb(l[1], c[0], c[1]));
        }
    }
    Ok(())
}

/// 8-bit limited-range luma to grey RGB8.
pub fn grey_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    check(
        PixelFormat::Grey,
        src,
        width,
        height,
        stride,
        height as usize,
    )?;
    prepare(out, width, height);
    let w = width as usize;
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        for (&l, px) in src[y * stride..y * stride + w]
            .iter()
            .zip(dst.chunks_exact_mut(3))
        {
            px.copy_from_slice(&yuv_to_rgb(l, 128, 128));
        }
    }
    Ok(())
}

/// Copies rows of packed RGB8 with `stride` bytes each (GStreamer pads rows to 4 bytes) into a
/// tightly packed `out`.
pub fn pack_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    let row = width as usize * 3;
    let needed = stride
        .saturating_mul((height as usize).saturating_sub(1))
        .saturating_add(row);
    if width == 0 || height == 0 || stride < row || src.len() < needed {
        return Err(PixelError::RgbShort {
            width,
            height,
            stride,
            needed,
            got: src.len(),
        });
    }
    prepare(out, width, height);
    if stride == row {
        out.copy_from_slice(&src[..row * height as usize]);
    } else {
        for (y, dst) in out.chunks_exact_mut(row).enumerate() {
            dst.copy_from_slice(&src[y * stride..y * stride + row]);
        }
    }
    Ok(())
}

/// Decodes one MJPEG frame to RGB8 in `out`, refusing frames over `max_pixels` before decoding
/// them. Frames without Huffman tables (many UVC cameras leave out the standard ones, as the AVI
/// MJPEG convention allows) are decoded with the standard tables.
pub fn mjpeg_to_rgb(
    src: &[u8],
    max_pixels: u64,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), PixelError> {
    let jpeg = |e: &dyn std::fmt::Display| PixelError::Jpeg {
        reason: e.to_string(),
    };
    if src.len() < 4 || src[..2] != [0xFF, 0xD8] {
        return Err(PixelError::Jpeg {
            reason: format!(
                "{} bytes without a JPEG start-of-image marker (truncated or not MJPEG)",
                src.len()
            ),
        });
    }
    let patched;
    let data = if has_huffman_tables(src) {
        src
    } else {
        patched = with_avi1_marker(src);
        &patched[..]
    };
    let mut decoder =
        image::codecs::jpeg::JpegDecoder::new(Cursor::new(data)).map_err(|e| jpeg(&e))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PixelError::Jpeg {
            reason: format!("image has no pixels ({width}x{height})"),
        });
    }
    if width as u64 * height as u64 > max_pixels {
        return Err(PixelError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(limits).map_err(|e| jpeg(&e))?;
    let color = decoder.color_type();
    let pixels = width as usize * height as usize;
    match color {
        ColorType::Rgb8 => {
            prepare(out, width, height);
            decoder.read_image(out).map_err(|e| jpeg(&e))?;
        }
        ColorType::L8 => {
            // Decode the luma into the first third, then expand in place from the back.
            out.resize(pixels * 3, 0);
            decoder
                .read_image(&mut out[..pixels])
                .map_err(|e| jpeg(&e))?;
            for i in (0..pixels).rev() {
                let l = out[i];
                out[i * 3..i * 3 + 3].fill(l);
            }
        }
        other => {
            return Err(PixelError::Jpeg {
                reason: format!("unsupported JPEG colour type {other:?}"),
            })
        }
    }
    Ok((width, height))
}

/// Whether a DHT (define Huffman table) segment comes before the start of scan.
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return false;
        }
        let marker = jpeg[i + 1];
        match marker {
            0xC4 => return true,
            0xDA | 0xD9 => return false,
            // Fill bytes before a marker.
            0xFF => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        i += 2 + len;
    }
    false
}

/// `jpeg` with an `APP0 "AVI1"` segment after the start-of-image marker: the decoder then fills in
/// the standard Huffman tables the MJPEG convention leaves out.
fn with_avi1_marker(jpeg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(jpeg.len() + 9);
    v.extend_from_slice(&jpeg[..2]);
    v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00]);
    v.extend_from_slice(&jpeg[2..]);
    v
}

/// Picks the capture format: the `requested` one when the camera offers it, otherwise the first of
/// [`PixelFormat::PREFERENCE`] (MJPEG, YUYV, NV12, UYVY, GREY) that it offers.
///
/// `offered` are the camera's four-character codes in its own order. Returns the choice and whether
/// it fell back from the request; the error lists what the camera offers.
pub fn choose_format(
    offered: &[[u8; 4]],
    requested: Option<PixelFormat>,
) -> Result<(PixelFormat, bool), String> {
    let has = |f: PixelFormat| {
        offered
            .iter()
            .any(|c| PixelFormat::from_fourcc(*c) == Some(f))
    };
    if let Some(r) = requested.filter(|r| has(*r)) {
        return Ok((r, false));
    }
    match PixelFormat::PREFERENCE.into_iter().find(|f| has(*f)) {
        Some(f) => Ok((f, requested.is_some())),
        None => Err(format!(
            "the camera offers {} and none of them can be converted (supported: {})",
            fourcc_list(offered),
            FORMAT_NAMES
        )),
    }
}

/// `[YUYV, H264]` as `YUYV, H264` (non-printable codes in hex), or `no formats`.
pub fn fourcc_list(codes: &[[u8; 4]]) -> String {
    if codes.is_empty() {
        return "no formats".to_string();
    }
    codes
        .iter()
        .map(|c| {
            if c.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                String::from_utf8_lossy(c).trim_end().to_string()
            } else {
                format!("0x{:08x}", u32::from_le_bytes(*c))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// BT.601 limited-range RGB -> YUV, the inverse of the conversion under test.
    fn rgb_to_yuv(r: f64, g: f64, b: f64) -> (u8, u8, u8) {
        let y = 16.0 + 65.481 * r / 255.0 + 128.553 * g / 255.0 + 24.966 * b / 255.0;
        let u = 128.0 - 37.797 * r / 255.0 - 74.203 * g / 255.0 + 112.0 * b / 255.0;
        let v = 128.0 + 112.0 * r / 255.0 - 93.786 * g / 255.0 - 18.214 * b / 255.0;
        (y.round() as u8, u.round() as u8, v.round() as u8)
    }

    fn close(got: [u8; 3], want: [u8; 3]) -> bool {
        got.iter()
            .zip(want)
            .all(|(g, w)| (*g as i32 - w as i32).abs() <= 2)
    }

    #[test]
    fn white_black_and_primaries() {
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        for want in [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 0],
            [128, 128, 128],
        ] {
            let (y, u, v) = rgb_to_yuv(want[0] as f64, want[1] as f64, want[2] as f64);
            let got = yuv_to_rgb(y, u, v);
            assert!(
                close(got, want),
                "YUV {y},{u},{v}: got {got:?}, want {want:?}"
            );
        }
        // The textbook triplets for pure red, green and blue.
        assert!(close(yuv_to_rgb(81, 90, 240), [255, 0, 0]));
        assert!(close(yuv_to_rgb(145, 54, 34), [0, 255, 0]));
        assert!(close(yuv_to_rgb(41, 240, 110), [0, 0, 255]));
        // Out-of-range input clamps instead of wrapping.
        assert_eq!(yuv_to_rgb(255, 255, 255)[0], 255);
        assert_eq!(yuv_to_rgb(0, 0, 0)[0], 0);
    }

    #[test]
    fn yuyv_and_uyvy_two_pixels() {
        let red = rgb_to_yuv(255.0, 0.0, 0.0);
        // One macropixel: white then black luma sharing red's chroma is not a real image; use
        // two rows instead: row 0 white|black (neutral chroma), row 1 red|red.
        let yuyv = [235, 128, 16, 128, red.0, red.1, red.0, red.2];
        let mut out = Vec::new();
        yuyv_to_rgb(&yuyv, 2, 2, 4, &mut out).unwrap();
        assert_eq!(&out[..6], &[255, 255, 255, 0, 0, 0]);
        assert!(close([out[6], out[7], out[8]], [255, 0, 0]));
        assert!(close([out[9], out[10], out[11]], [255, 0, 0]));
        let uyvy = [128, 235, 128, 16, red.1, red.0, red.2, red.0];
        let mut out2 = Vec::new();
        uyvy_to_rgb(&uyvy, 2, 2, 4, &mut out2).unwrap();
        assert_eq!(out, out2);
    }

    #[test]
    fn nv12_chroma_is_shared_by_2x2_blocks() {
        let blue = rgb_to_yuv(0.0, 0.0, 255.0);
        // 4x2: left block blue, right block white.
        let mut nv12 = vec![blue.0, blue.0, 235, 235, blue.0, blue.0, 235, 235];
        nv12.extend_from_slice(&[blue.1, blue.2, 128, 128]);
        let mut out = Vec::new();
        nv12_to_rgb(&nv12, 4, 2, 4, &mut out).unwrap();
        for y in 0..2 {
            for x in 0..4 {
                let i = (y * 4 + x) * 3;
                let want = if x < 2 { [0, 0, 255] } else { [255, 255, 255] };
                assert!(close([out[i], out[i + 1], out[i + 2]], want), "{x},{y}");
            }
        }
    }

    #[test]
    fn strides_skip_padding() {
        // YUYV 2x2 with 4 bytes of padding per row, NV12 2x2 with stride 8.
        let yuyv = [235, 128, 235, 128, 9, 9, 9, 9, 16, 128, 16, 128];
        let mut out = Vec::new();
        yuyv_to_rgb(&yuyv, 2, 2, 8, &mut out).unwrap();
        assert_eq!(out, [255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0]);
        let nv12 = [
            235, 16, 9, 9, 9, 9, 9, 9, 16, 235, 9, 9, 9, 9, 9, 9, 128, 128,
        ];
        nv12_to_rgb(&nv12, 2, 2, 8, &mut out).unwrap();
        assert_eq!(out, [255, 255, 255, 0, 0, 0, 0, 0, 0, 255, 255, 255]);
        let grey = [16, 235, 0, 126, 126, 0];
        grey_to_rgb(&grey, 2, 2, 3, &mut out).unwrap();
        assert_eq!(&out[..6], &[0, 0, 0, 255, 255, 255]);
        assert!(out[6..].iter().all(|&b| b == 128));
        let rgb = [1, 2, 3, 0, 4, 5, 6, 0];
        pack_rgb(&rgb, 1, 2, 4, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn bad_sizes_and_ragged_buffers_are_errors() {
        let mut out = Vec::new();
        let e = yuyv_to_rgb(&[0; 12], 3, 2, 6, &mut out).unwrap_err();
        assert!(
            matches!(e, PixelError::OddSize { what: "width", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("even width"), "{e}");
        let e = nv12_to_rgb(&[0; 64], 4, 3, 4, &mut out).unwrap_err();
        assert!(
            matches!(e, PixelError::OddSize { what: "height", .. }),
            "{e}"
        );
        let e = yuyv_to_rgb(&[0; 15], 4, 2, 8, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("needs 16 bytes, the buffer has 15"),
            "{e}"
        );
        let e = nv12_to_rgb(&[0; 11], 4, 2, 4, &mut out).unwrap_err();
        assert!(matches!(e, PixelError::Short { needed: 12, .. }), "{e}");
        let e = grey_to_rgb(&[0; 4], 4, 1, 2, &mut out).unwrap_err();
        assert!(matches!(e, PixelError::Stride { .. }), "{e}");
        let e = grey_to_rgb(&[], 0, 1, 0, &mut out).unwrap_err();
        assert!(matches!(e, PixelError::Empty { .. }), "{e}");
        let e = pack_rgb(&[0; 5], 2, 1, 6, &mut out).unwrap_err();
        assert!(e.to_string().contains("needs 6 bytes"), "{e}");
        let e = mjpeg_to_rgb(&[1, 2, 3], 100, &mut out).unwrap_err();
        assert!(e.to_string().contains("start-of-image"), "{e}");
        // A huge height must not overflow the size arithmetic.
        let e = grey_to_rgb(&[0; 4], 4, u32::MAX, usize::MAX / 2, &mut out).unwrap_err();
        assert!(matches!(e, PixelError::Short { .. }), "{e}");
    }

    #[test]
    fn output_buffer_is_reused() {
        let mut out = Vec::new();
        let frame = vec![128u8; 64 * 48 * 2];
        yuyv_to_rgb(&frame, 64, 48, 128, &mut out).unwrap();
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        for _ in 0..3 {
            yuyv_to_rgb(&frame, 64, 48, 128, &mut out).unwrap();
            assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
        }
        assert_eq!(out.len(), 64 * 48 * 3);
    }

    fn jpeg(w: u32, h: u32, grey: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                image::Rgb([250, 10, 10])
            } else {
                image::Rgb([10, 10, 250])
            }
        });
        let img = if grey {
            image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(img).to_luma8())
        } else {
            image::DynamicImage::ImageRgb8(img)
        };
        img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    /// Removes every DHT segment, as UVC cameras do.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while jpeg[i + 1] != 0xDA {
            let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
            if jpeg[i + 1] != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&jpeg[i..]);
        out
    }

    #[test]
    fn mjpeg_decodes_into_the_buffer() {
        let mut out = Vec::new();
        let data = jpeg(32, 16, false);
        assert_eq!(mjpeg_to_rgb(&data, 1000, &mut out).unwrap(), (32, 16));
        assert_eq!(out.len(), 32 * 16 * 3);
        assert!(close([out[0], out[1], out[2]], [250, 10, 10]) || out[0] > 200);
        let right = (8 * 32 + 30) * 3;
        assert!(
            out[right + 2] > 200 && out[right] < 60,
            "{:?}",
            &out[right..right + 3]
        );

        let stripped = strip_dht(&data);
        assert!(!has_huffman_tables(&stripped) && has_huffman_tables(&data));
        let mut out2 = Vec::new();
        // The encoder used the standard tables, so the default ones decode the same pixels.
        mjpeg_to_rgb(&stripped, 1000, &mut out2).unwrap();
        assert_eq!(out, out2);

        mjpeg_to_rgb(&jpeg(8, 8, true), 1000, &mut out).unwrap();
        assert_eq!(out.len(), 8 * 8 * 3);
        assert_eq!(out[0], out[1]);

        let e = mjpeg_to_rgb(&data, 100, &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                PixelError::TooLarge {
                    width: 32,
                    height: 16,
                    ..
                }
            ),
            "{e}"
        );
        let e = mjpeg_to_rgb(&data[..data.len() / 3], 1000, &mut out);
        // A truncated frame is an error or (decoders conceal) a full-size frame, never a panic.
        if let Ok(size) = e {
            assert_eq!(size, (32, 16));
        }
    }

    #[test]
    fn to_rgb_dispatches() {
        let mut out = Vec::new();
        let size = to_rgb(PixelFormat::Grey, &[235; 4], 2, 2, 2, 100, &mut out).unwrap();
        assert_eq!(size, (2, 2));
        assert!(out.iter().all(|&b| b == 255));
        let size = to_rgb(
            PixelFormat::Mjpeg,
            &jpeg(16, 8, false),
            0,
            0,
            0,
            1000,
            &mut out,
        )
        .unwrap();
        assert_eq!(size, (16, 8));
    }

    #[test]
    fn format_names_and_codes_round_trip() {
        for f in PixelFormat::PREFERENCE {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(f.name().parse::<PixelFormat>(), Ok(f));
        }
        assert_eq!("YUY2".parse::<PixelFormat>(), Ok(PixelFormat::Yuyv));
        let e = "h264".parse::<PixelFormat>().unwrap_err();
        assert!(e.0.contains("h264") && e.0.contains("mjpeg"), "{e}");
    }

    #[test]
    fn format_choice() {
        let cam = [*b"YUYV", *b"MJPG", *b"H264"];
        assert_eq!(choose_format(&cam, None), Ok((PixelFormat::Mjpeg, false)));
        assert_eq!(
            choose_format(&cam, Some(PixelFormat::Yuyv)),
            Ok((PixelFormat::Yuyv, false))
        );
        // Not offered: fall back to the preference order and say so.
        assert_eq!(
            choose_format(&cam, Some(PixelFormat::Nv12)),
            Ok((PixelFormat::Mjpeg, true))
        );
        assert_eq!(
            choose_format(&[*b"NV12", *b"YUYV"], None),
            Ok((PixelFormat::Yuyv, false))
        );
        assert_eq!(
            choose_format(&[*b"GREY"], None),
            Ok((PixelFormat::Grey, false))
        );
        let e = choose_format(&[*b"H264", *b"RGGB"], Some(PixelFormat::Yuyv)).unwrap_err();
        assert!(e.contains("offers H264, RGGB") && e.contains("yuyv"), "{e}");
        assert!(choose_format(&[], None).unwrap_err().contains("no formats"));
        assert_eq!(fourcc_list(&[[1, 2, 3, 4]]), "0x04030201");
    }

    proptest! {
        /// The fixed-point conversion stays within 1 of the floating-point BT.601 formula.
        #[test]
        fn fixed_point_matches_float(y in 0u8..=255, u in 0u8..=255, v in 0u8..=255) {
            let (c, d, e) = (y as f64 - 16.0, u as f64 - 128.0, v as f64 - 128.0);
            let f = |x: f64| x.round().clamp(0.0, 255.0) as i32;
            let want = [
                f(1.164383 * c + 1.596027 * e),
                f(1.164383 * c - 0.391762 * d - 0.812968 * e),
                f(1.164383 * c + 2.017232 * d),
            ];
            let got = yuv_to_rgb(y, u, v);
            for k in 0..3 {
                prop_assert!((got[k] as i32 - want[k]).abs() <= 1, "{y},{u},{v}: {got:?} vs {want:?}");
            }
        }

        /// Arbitrary buffers and sizes give a frame or an error, never a panic.
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), w in 0u32..12, h in 0u32..12, extra in 0usize..4, fmt in 0usize..5) {
            let format = PixelFormat::PREFERENCE[fmt];
            let stride = format.min_stride(w).unwrap_or(0) + extra;
            let mut out = Vec::new();
            if let Ok((ow, oh)) = to_rgb(format, &data, w, h, stride, 10_000, &mut out) {
                prop_assert_eq!(out.len(), ow as usize * oh as usize * 3);
            }
        }
    }
}
