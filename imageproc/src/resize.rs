//! Separable resize of packed RGB8 images whose coefficient tables are computed once per
//! geometry and kept, so that resizing frame after frame of one camera does not allocate.
//!
//! This exists because no resize crate caches its coefficients: `fast_image_resize` (which this
//! reproduces) recomputes them on every call, with one heap allocation per output pixel, and
//! offers no way to keep them. The arithmetic is the same as `fast_image_resize`'s (and Pillow's)
//! for `U8x3`: f64 filter weights normalised to sum to one, with the kernel widened by the scale
//! when downscaling (antialiasing); weights rounded to i16 at the largest precision that keeps
//! them in range; a vertical pass into an intermediate image, then a horizontal pass, each
//! accumulating in i32 and rounding to u8.

use crate::preprocess::CropBox;

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The source pixel under each output pixel's centre (no interpolation).
    Nearest,
    /// Triangle filter, support 1 (PIL's `BILINEAR`).
    Bilinear,
    /// Catmull-Rom cubic, a = -0.5, support 2 (PIL's `BICUBIC`).
    CatmullRom,
}

impl Filter {
    /// The kernel and its support (radius in source pixels at scale 1).
    fn kernel(self) -> (fn(f64) -> f64, f64) {
        match self {
            Filter::Nearest => unreachable!("nearest has no convolution kernel"),
            Filter::Bilinear => (triangle, 1.0),
            Filter::CatmullRom => (catmull_rom, 2.0),
        }
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn catmull_rom(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Errors from [`Resizer::resize`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResizeError {
    #[error("the source buffer holds {len} bytes, fewer than {width}x{height} RGB8 pixels")]
    SourceTooSmall { len: usize, width: u32, height: u32 },
    #[error("the destination buffer holds {len} bytes, fewer than {width}x{height} RGB8 pixels")]
    DestinationTooSmall { len: usize, width: u32, height: u32 },
    #[error("crop box {crop:?} is not inside the {width}x{height} source image")]
    CropOutOfBounds {
        crop: CropBox,
        width: u32,
        height: u32,
    },
}

/// The filter weights along one axis: for output pixel `i`, `len[i]` source pixels starting at
/// `start[i]`, weighted by `weights[i * window..][..len[i]]`, fixed point with `precision`
/// fractional bits.
#[derive(Debug, Clone, Default, PartialEq)]
struct Axis {
    start: Vec<u32>,
    len: Vec<u32>,
    window: usize,
    weights: Vec<i16>,
    precision: u8,
}

impl Axis {
    /// Weights mapping source pixels `[in0, in1)` of an axis of `in_size` pixels onto `out_size`
    /// pixels.
    fn new(in_size: u32, in0: f64, in1: f64, out_size: u32, filter: Filter) -> Self {
        let (kernel, support) = filter.kernel();
        let scale = (in1 - in0) / out_size as f64;
        let filter_scale = scale.max(1.0);
        let radius = support * filter_scale;
        let window = radius.ceil() as usize * 2 + 1;
        let mut weights = vec![0f64; window * out_size as usize];
        let mut start = Vec::with_capacity(out_size as usize);
        let mut len = Vec::with_capacity(out_size as usize);
        for (i, w) in weights.chunks_exact_mut(window).enumerate() {
            let in_center = in0 + (i as f64 + 0.5) * scale;
            let x_min = (in_center - radius).floor().max(0.0) as u32;
            let x_max = (in_center + radius).ceil().min(in_size as f64) as u32;
            let center = in_center - 0.5;
            // Zero weights at either end are dropped (fast_image_resize does the same, and
            // the fixed-point rounding then matches it exactly).
            let (mut first, mut n, mut sum) = (x_min, 0usize, 0.0);
            for x in x_min..x_max {
                let v = kernel((x as f64 - center) / filter_scale);
                if x == first && v == 0.0 {
                    first += 1;
                } else {
                    w[n] = v;
                    n += 1;
                    sum += v;
                }
            }
            while n > 0 && w[n - 1] == 0.0 {
                n -= 1;
            }
            if sum != 0.0 {
                w[..n].iter_mut().for_each(|v| *v /= sum);
            }
            start.push(first);
            len.push(n as u32);
        }
        let max = weights.iter().copied().fold(0.0, f64::max);
        let precision = fixed_point_precision(max);
        let one = (1i32 << precision) as f64;
        Axis {
            start,
            len,
            window,
            weights: weights.iter().map(|v| (v * one).round() as i16).collect(),
            precision,
        }
    }

    /// The source pixels `[first, end)` that any output pixel reads.
    fn span(&self) -> (u32, u32) {
        let last = self.start.len() - 1;
        (self.start[0], self.start[last] + self.len[last])
    }

    /// The taps of output pixel `i`: its first source pixel and its weights.
    #[inline(always)]
    fn taps(&self, i: usize) -> (usize, &[i16]) {
        let w = &self.weights[i * self.window..][..self.len[i] as usize];
        (self.start[i] as usize, w)
    }
}

/// The number of fractional bits for i16 weights whose largest is `max_weight`: as many as
/// keep the largest below 2^15, at most 21, so that sums of u8 x i16 products (which may
/// overshoot [0, 255] with negative lobes) fit an i32 with the 8 integer bits and 2 bits spare.
fn fixed_point_precision(max_weight: f64) -> u8 {
    const MAX_PRECISION: u8 = 32 - 8 - 2;
    let mut precision = 0;
    for p in 0..MAX_PRECISION {
        precision = p;
        if (max_weight * (1i64 << (p + 1)) as f64).round() as i64 >= 1 << 15 {
            break;
        }
    }
    precision
}

/// Everything a resize computes from the geometry alone.
#[derive(Debug, Clone, PartialEq)]
struct Geometry {
    src: (u32, u32),
    crop: [f64; 4],
    dst: (u32, u32),
    filter: Filter,
}

#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// Integer crop of the output size: a plain copy from (`left`, `top`).
    Copy { left: usize, top: usize },
    /// Source column and row of each output pixel.
    Nearest { xs: Vec<u32>, ys: Vec<u32> },
    /// Vertical pass only, over source columns from `left`.
    Vertical { left: usize, vert: Axis },
    /// Horizontal pass only, over source rows from `top`.
    Horizontal { top: usize, horiz: Axis },
    /// Vertical pass over source columns `[left, left + temp_width)` into the intermediate
    /// image, then a horizontal pass whose starts are relative to `left`. The horizontal pass
    /// runs as a vertical one on the transposed intermediate, and its output is transposed back.
    Both {
        left: usize,
        temp_width: usize,
        vert: Axis,
        horiz: Axis,
    },
}

/// Resizes packed RGB8 images, keeping the coefficient tables and the intermediate image of the
/// last geometry (source size, crop box, output size, filter). A call with the same geometry as
/// the previous one does not allocate.
#[derive(Debug, Default)]
pub struct Resizer {
    cached: Option<(Geometry, Plan)>,
    /// The vertical pass's output, row-major.
    temp: Vec<u8>,
    /// `temp` transposed, input of the horizontal pass.
    temp_t: Vec<u8>,
    /// The horizontal pass's output, transposed.
    out_t: Vec<u8>,
}

impl Resizer {
    /// A resizer with nothing cached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resamples the `crop` region of the `width` x `height` packed RGB8 image `src` to
    /// `dst_width` x `dst_height` pixels in `dst` with `filter`. The crop box may have
    /// fractional edges and must lie inside the image. Buffers may be longer than the image;
    /// the extra bytes are neither read nor written. An empty crop or output writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn resize(
        &mut self,
        src: &[u8],
        width: u32,
        height: u32,
        crop: CropBox,
        dst: &mut [u8],
        dst_width: u32,
        dst_height: u32,
        filter: Filter,
    ) -> Result<(), ResizeError> {
        let (w, h) = (width as f64, height as f64);
        if src.len() < width as usize * height as usize * 3 {
            return Err(ResizeError::SourceTooSmall {
                len: src.len(),
                width,
                height,
            });
        }
        if dst.len() < dst_width as usize * dst_height as usize * 3 {
            return Err(ResizeError::DestinationTooSmall {
                len: dst.len(),
                width: dst_width,
                height: dst_height,
            });
        }
        let inside = crop.width >= 0.0
            && crop.height >= 0.0
            && crop.left >= 0.0
            && crop.top >= 0.0
            && crop.left < w
            && crop.top < h
            && crop.left + crop.width <= w
            && crop.top + crop.height <= h;
        if !inside {
            return Err(ResizeError::CropOutOfBounds {
                crop,
                width,
                height,
            });
        }
        if crop.width == 0.0 || crop.height == 0.0 || dst_width == 0 || dst_height == 0 {
            return Ok(());
        }
        let geometry = Geometry {
            src: (width, height),
            crop: [crop.left, crop.top, crop.width, crop.height],
            dst: (dst_width, dst_height),
            filter,
        };
        if self.cached.as_ref().map(|(g, _)| g) != Some(&geometry) {
            let plan = Plan::new(&geometry);
            if let Plan::Both { temp_width, .. } = plan {
                let temp_len = temp_width * dst_height as usize * 3;
                self.temp.resize(temp_len, 0);
                self.temp_t.resize(temp_len, 0);
                self.out_t
                    .resize(dst_width as usize * dst_height as usize * 3, 0);
            }
            self.cached = Some((geometry, plan));
        }
        let Some((_, plan)) = &self.cached else {
            unreachable!("the plan was just cached")
        };
        let stride = width as usize * 3;
        let src = &src[..stride * height as usize];
        let dst_stride = dst_width as usize * 3;
        let dst = &mut dst[..dst_stride * dst_height as usize];
        match plan {
            Plan::Copy { left, top } => {
                for (y, out) in dst.chunks_exact_mut(dst_stride).enumerate() {
                    out.copy_from_slice(&src[(top + y) * stride + left * 3..][..dst_stride]);
                }
            }
            Plan::Nearest { xs, ys } => {
                for (&y, out) in ys.iter().zip(dst.chunks_exact_mut(dst_stride)) {
                    let row = &src[y as usize * stride..][..stride];
                    for (&x, px) in xs.iter().zip(out.chunks_exact_mut(3)) {
                        px.copy_from_slice(&row[x as usize * 3..][..3]);
                    }
                }
            }
            Plan::Vertical { left, vert } => vertical(src, stride, left * 3, vert, dst),
            Plan::Horizontal { top, horiz } => horizontal(&src[top * stride..], stride, horiz, dst),
            Plan::Both {
                left,
                temp_width,
                vert,
                horiz,
            } => {
                let (dw, dh) = (dst_width as usize, dst_height as usize);
                vertical(src, stride, left * 3, vert, &mut self.temp);
                transpose(&self.temp, *temp_width, dh, &mut self.temp_t);
                vertical(&self.temp_t, dh * 3, 0, horiz, &mut self.out_t);
                transpose(&self.out_t, dh, dw, dst);
            }
        }
        Ok(())
    }
}

impl Plan {
    /// The tables for `g`, whose crop box is inside the source and non-empty, and whose output
    /// is non-empty.
    fn new(g: &Geometry) -> Self {
        let [left, top, cw, ch] = g.crop;
        let (dw, dh) = g.dst;
        if g.filter == Filter::Nearest {
            // Positions step by repeated addition, as fast_image_resize does (rows) and
            // multiplication (columns), so that both pick the same pixels.
            let (sx, sy) = (cw / dw as f64, ch / dh as f64);
            let xs = (0..dw)
                .map(|x| ((left + sx * 0.5 + sx * x as f64) as u32).min(g.src.0 - 1))
                .collect();
            let mut y = top + sy * 0.5;
            let ys = (0..dh)
                .map(|_| {
                    let row = (y as u32).min(g.src.1 - 1);
                    y += sy;
                    row
                })
                .collect();
            return Plan::Nearest { xs, ys };
        }
        let need_h = dw as f64 != cw || left != left.round();
        let need_v = dh as f64 != ch || top != top.round();
        let horiz = need_h.then(|| Axis::new(g.src.0, left, left + cw, dw, g.filter));
        let vert = need_v.then(|| Axis::new(g.src.1, top, top + ch, dh, g.filter));
        match (horiz, vert) {
            (None, None) => Plan::Copy {
                left: left as usize,
                top: top as usize,
            },
            (None, Some(vert)) => Plan::Vertical {
                left: left as usize,
                vert,
            },
            (Some(horiz), None) => Plan::Horizontal {
                top: top as usize,
                horiz,
            },
            (Some(mut horiz), Some(vert)) => {
                let (first, end) = horiz.span();
                horiz.start.iter_mut().for_each(|s| *s -= first);
                Plan::Both {
                    left: first as usize,
                    temp_width: (end - first) as usize,
                    vert,
                    horiz,
                }
            }
        }
    }
}

// The kernels accumulate with `wrapping_add` and shift with `wrapping_shr`: the sums cannot
// overflow (see `fixed_point_precision`) and the precision is below 32, and overflow checks (on in
// the dev profile) would stop the loops from being vectorised.

#[inline(always)]
fn to_u8(acc: i32, precision: u8) -> u8 {
    acc.wrapping_shr(precision as u32).clamp(0, 255) as u8
}

/// One output row per vertical output pixel: bytes `[x0, x0 + out_row.len())` of the source rows
/// weighted by that pixel's taps. `dst` holds whole output rows.
fn vertical(src: &[u8], stride: usize, x0: usize, vert: &Axis, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // Safety: the CPU has AVX2 (checked just above).
        return unsafe { vertical_avx2(src, stride, x0, vert, dst) };
    }
    vertical_any(src, stride, x0, vert, dst)
}

/// [`vertical_any`] compiled for AVX2 (twice the vector width of the x86-64 baseline).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_avx2(src: &[u8], stride: usize, x0: usize, vert: &Axis, dst: &mut [u8]) {
    vertical_any(src, stride, x0, vert, dst)
}

#[inline(always)]
fn vertical_any(src: &[u8], stride: usize, x0: usize, vert: &Axis, dst: &mut [u8]) {
    let row_len = dst.len() / vert.start.len();
    for (i, out) in dst.chunks_exact_mut(row_len).enumerate() {
        let (first, ks) = vert.taps(i);
        let rows = &src[first * stride + x0..];
        vertical_row(rows, stride, ks, vert.precision, out);
    }
}

/// Weights `ks` over rows `stride` apart starting at `rows[0]`, one output byte per column.
/// Runs in blocks of `BLOCK` columns whose accumulators stay in vector registers across taps.
#[inline(always)]
fn vertical_row(rows: &[u8], stride: usize, ks: &[i16], precision: u8, out: &mut [u8]) {
    const BLOCK: usize = 32;
    let initial = 1i32 << (precision - 1);
    let done = out.len() / BLOCK * BLOCK;
    let mut blocks = out.chunks_exact_mut(BLOCK);
    for (b, block) in (&mut blocks).enumerate() {
        let mut acc = [initial; BLOCK];
        for (t, &k) in ks.iter().enumerate() {
            let px: &[u8; BLOCK] = rows[t * stride + b * BLOCK..][..BLOCK].try_into().unwrap();
            for (a, &p) in acc.iter_mut().zip(px) {
                *a = a.wrapping_add(p as i32 * k as i32);
            }
        }
        for (o, a) in block.iter_mut().zip(acc) {
            *o = to_u8(a, precision);
        }
    }
    for (j, o) in blocks.into_remainder().iter_mut().enumerate() {
        let mut acc = initial;
        for (t, &k) in ks.iter().enumerate() {
            acc = acc.wrapping_add(rows[t * stride + done + j] as i32 * k as i32);
        }
        *o = to_u8(acc, precision);
    }
}

/// Each output row from the source row at the same index (`stride` bytes apart), each output
/// pixel weighting the pixels its taps name. Used only when there is no vertical pass; with one,
/// the horizontal pass runs as a vertical pass over the transposed intermediate image, which
/// vectorises far better than this per-pixel loop.
fn horizontal(src: &[u8], stride: usize, horiz: &Axis, dst: &mut [u8]) {
    let initial = 1i32 << (horiz.precision - 1);
    let out_stride = horiz.start.len() * 3;
    for (row, out) in src.chunks(stride).zip(dst.chunks_exact_mut(out_stride)) {
        for (i, px) in out.chunks_exact_mut(3).enumerate() {
            let (first, ks) = horiz.taps(i);
            let mut acc = [initial; 3];
            for (s, &k) in row[first * 3..][..ks.len() * 3].chunks_exact(3).zip(ks) {
                for c in 0..3 {
                    acc[c] = acc[c].wrapping_add(s[c] as i32 * k as i32);
                }
            }
            for c in 0..3 {
                px[c] = to_u8(acc[c], horiz.precision);
            }
        }
    }
}

/// Writes the `width` x `height` RGB8 image `src` transposed (`height` x `width`) into `dst`.
fn transpose(src: &[u8], width: usize, height: usize, dst: &mut [u8]) {
    for (y, row) in src.chunks_exact(width * 3).take(height).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            dst[(x * height + y) * 3..][..3].copy_from_slice(px);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fast_image_resize as fr;
    use proptest::prelude::*;

    /// Noise over a diagonal gradient: smooth areas and hard edges, different in each channel.
    fn image(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut px = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3u32 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let ramp = (x * 7 + y * 3 + c * 50) % 256;
                    px.push(if s.is_multiple_of(4) {
                        (s >> 56) as u8
                    } else {
                        ramp as u8
                    });
                }
            }
        }
        px
    }

    /// The same resize done by fast_image_resize.
    fn reference(
        src: &[u8],
        w: u32,
        h: u32,
        crop: CropBox,
        dw: u32,
        dh: u32,
        f: Filter,
    ) -> Vec<u8> {
        let src = fr::images::ImageRef::new(w, h, src, fr::PixelType::U8x3).unwrap();
        let mut dst = fr::images::Image::new(dw, dh, fr::PixelType::U8x3);
        let alg = match f {
            Filter::Nearest => fr::ResizeAlg::Nearest,
            Filter::Bilinear => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
            Filter::CatmullRom => fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom),
        };
        let options = fr::ResizeOptions::new().resize_alg(alg).crop(
            crop.left,
            crop.top,
            crop.width,
            crop.height,
        );
        fr::Resizer::new().resize(&src, &mut dst, &options).unwrap();
        dst.into_vec()
    }

    /// (largest absolute difference, number of equal bytes, number of bytes) between this
    /// resizer and fast_image_resize on one geometry.
    fn compare(
        r: &mut Resizer,
        (w, h): (u32, u32),
        crop: CropBox,
        (dw, dh): (u32, u32),
        f: Filter,
    ) -> (u8, usize, usize) {
        let src = image(w, h, (w * 31 + h) as u64);
        let mut ours = vec![0; (dw * dh * 3) as usize];
        r.resize(&src, w, h, crop, &mut ours, dw, dh, f).unwrap();
        let want = reference(&src, w, h, crop, dw, dh, f);
        let max = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let equal = ours.iter().zip(&want).filter(|(a, b)| a == b).count();
        (max, equal, ours.len())
    }

    #[test]
    fn matches_fast_image_resize_on_many_geometries() {
        let sources = [
            (1, 1),
            (1, 9),
            (9, 1),
            (2, 3),
            (5, 5),
            (13, 7),
            (64, 48),
            (101, 67),
            (640, 480),
            (37, 401),
        ];
        let outputs = [
            (1, 1),
            (1, 5),
            (6, 1),
            (3, 3),
            (7, 13),
            (31, 17),
            (64, 48),
            (224, 224),
        ];
        let mut r = Resizer::new();
        let (mut equal, mut total) = (0, 0);
        for (w, h) in sources {
            let (fw, fh) = (w as f64, h as f64);
            let crops = [
                full(w, h),
                crate::preprocess::crop_box(
                    w,
                    h,
                    &dishcam_models::manifest::Crop::Center { fraction: 0.875 },
                ),
                CropBox {
                    left: fw * 0.13,
                    top: fh * 0.29,
                    width: fw * 0.61,
                    height: fh * 0.57,
                },
            ];
            for crop in crops {
                for out in outputs {
                    for f in [Filter::Bilinear, Filter::CatmullRom, Filter::Nearest] {
                        let (max, eq, n) = compare(&mut r, (w, h), crop, out, f);
                        assert!(max <= 1, "{w}x{h} {crop:?} -> {out:?} {f:?}: off by {max}");
                        equal += eq;
                        total += n;
                    }
                }
            }
        }
        let share = equal as f64 / total as f64;
        assert!(
            share >= 0.99,
            "only {:.3} % of {total} bytes equal",
            share * 100.0
        );
    }

    proptest! {
        #[test]
        fn matches_fast_image_resize_on_random_geometries(
            w in 1u32..200, h in 1u32..200, dw in 1u32..120, dh in 1u32..120,
            l in 0.0..0.5f64, t in 0.0..0.5f64, cw in 0.01..0.5f64, ch in 0.01..0.5f64,
            cubic in any::<bool>(),
        ) {
            let crop = CropBox {
                left: l * w as f64,
                top: t * h as f64,
                width: cw * w as f64,
                height: ch * h as f64,
            };
            let f = if cubic { Filter::CatmullRom } else { Filter::Bilinear };
            let (max, _, _) = compare(&mut Resizer::new(), (w, h), crop, (dw, dh), f);
            prop_assert!(max <= 1, "off by {}", max);
        }
    }

    fn full(w: u32, h: u32) -> CropBox {
        CropBox {
            left: 0.0,
            top: 0.0,
            width: w as f64,
            height: h as f64,
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for filter in [Filter::Bilinear, Filter::CatmullRom] {
            for (n, out) in [(10, 3), (3, 10), (945, 224), (1, 7)] {
                let a = Axis::new(n, 0.0, n as f64, out, filter);
                let one = 1i32 << a.precision;
                for i in 0..out as usize {
                    let sum: i32 = a.taps(i).1.iter().map(|&k| k as i32).sum();
                    assert!(
                        (sum - one).abs() <= a.len[i] as i32,
                        "{filter:?} {n}->{out}"
                    );
                }
            }
        }
    }

    #[test]
    fn downscaling_widens_the_kernel() {
        let a = Axis::new(100, 0.0, 100.0, 10, Filter::Bilinear);
        assert_eq!(a.len[5], 20);
        let a = Axis::new(10, 0.0, 10.0, 100, Filter::Bilinear);
        assert!(a.len.iter().all(|&n| n <= 2));
    }

    #[test]
    fn same_size_integer_crop_is_a_copy() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| i as u8).collect();
        let mut dst = vec![0; 3 * 2 * 3];
        let crop = CropBox {
            left: 1.0,
            top: 2.0,
            width: 3.0,
            height: 2.0,
        };
        let mut r = Resizer::new();
        r.resize(&src, 5, 4, crop, &mut dst, 3, 2, Filter::CatmullRom)
            .unwrap();
        assert_eq!(&dst[..9], &src[(2 * 5 + 1) * 3..][..9]);
        assert_eq!(&dst[9..], &src[(3 * 5 + 1) * 3..][..9]);
    }

    #[test]
    fn rejects_crops_outside_the_image_and_short_buffers() {
        let src = vec![0; 4 * 4 * 3];
        let mut dst = vec![0; 2 * 2 * 3];
        let mut r = Resizer::new();
        let crop = CropBox {
            left: 1.5,
            ..full(3, 3)
        };
        let err = r.resize(&src, 4, 4, crop, &mut dst, 2, 2, Filter::Bilinear);
        assert!(matches!(err, Err(ResizeError::CropOutOfBounds { .. })));
        let err = r.resize(
            &src[1..],
            4,
            4,
            full(4, 4),
            &mut dst,
            2,
            2,
            Filter::Bilinear,
        );
        assert!(matches!(err, Err(ResizeError::SourceTooSmall { .. })));
        let err = r.resize(
            &src,
            4,
            4,
            full(4, 4),
            &mut dst[1..],
            2,
            2,
            Filter::Bilinear,
        );
        assert!(matches!(err, Err(ResizeError::DestinationTooSmall { .. })));
    }
}
