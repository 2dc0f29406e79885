//! Image preprocessing as pure functions over pixel slices: choose the crop, resize the crop
//! straight to the input size (no intermediate image larger than the output), and normalise
//! into a caller-owned NCHW/NHWC f32 buffer.

use dishcam_models::manifest::{ColourOrder, Crop, Interpolation, Layout, Preprocess};

use crate::resize::{Filter, Resizer};

/// A region of the source image in pixel coordinates (fractional, as PIL's `box`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// The region of a `width` x `height` image that `crop` selects.
pub fn crop_box(width: u32, height: u32, crop: &Crop) -> CropBox {
    let (w, h) = (width as f64, height as f64);
    match *crop {
        Crop::Center { fraction } => {
            let side = w.min(h) * fraction as f64;
            CropBox {
                left: (w - side) / 2.0,
                top: (h - side) / 2.0,
                width: side,
                height: side,
            }
        }
        Crop::None => CropBox {
            left: 0.0,
            top: 0.0,
            width: w,
            height: h,
        },
    }
}

/// Per-channel lookup tables mapping a u8 pixel to its normalised value.
#[derive(Debug, Clone)]
pub struct NormTable {
    lut: [[f32; 256]; 3],
}

impl NormTable {
    pub fn new(spec: &Preprocess) -> Self {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (p, v) in table.iter_mut().enumerate() {
                *v = ((p as f32 * spec.range / 255.0) - spec.mean[c]) / spec.std[c];
            }
        }
        Self { lut }
    }
}

/// Normalises packed RGB8 pixels into `dst` in `layout`, applying `order`. `dst` must hold
/// exactly `rgb.len()` values.
pub fn normalise_into(
    rgb: &[u8],
    table: &NormTable,
    order: ColourOrder,
    layout: Layout,
    dst: &mut [f32],
) {
    assert_eq!(
        rgb.len(),
        dst.len(),
        "normalise_into: dst must hold one f32 per channel value"
    );
    let plane = rgb.len() / 3;
    let map = match order {
        ColourOrder::Rgb => [0, 1, 2],
        ColourOrder::Bgr => [2, 1, 0],
    };
    match layout {
        Layout::Nchw => {
            let (d0, rest) = dst.split_at_mut(plane);
            let (d1, d2) = rest.split_at_mut(plane);
            let planes: [&mut [f32]; 3] = [d0, d1, d2];
            let [p0, p1, p2] = planes;
            let (l0, l1, l2) = (&table.lut[map[0]], &table.lut[map[1]], &table.lut[map[2]]);
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                p0[i] = l0[px[map[0]] as usize];
                p1[i] = l1[px[map[1]] as usize];
                p2[i] = l2[px[map[2]] as usize];
            }
        }
        Layout::Nhwc => {
            for (px, out) in rgb.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
                for c in 0..3 {
                    out[c] = table.lut[map[c]][px[map[c]] as usize];
                }
            }
        }
    }
}

/// Errors from preprocessing.
#[derive(Debug, thiserror::Error)]
#[error("preprocessing a {width}x{height} image failed: {reason}")]
pub struct PreprocessError {
    pub width: u32,
    pub height: u32,
    pub reason: String,
}

/// Holds the resizer (with its coefficient tables for the last frame size) and the
/// resized-pixel buffer, so that preprocessing frames of one size does not allocate after the
/// first.
pub struct Preprocessor {
    spec: Preprocess,
    layout: Layout,
    table: NormTable,
    resizer: Resizer,
    resized: Vec<u8>,
}

impl Preprocessor {
    pub fn new(spec: &Preprocess, layout: Layout) -> Self {
        Self {
            spec: spec.clone(),
            layout,
            table: NormTable::new(spec),
            resizer: Resizer::new(),
            resized: vec![0; spec.width as usize * spec.height as usize * 3],
        }
    }

    /// Number of f32 values one image occupies in the input tensor.
    pub fn output_len(&self) -> usize {
        self.resized.len()
    }

    /// Crops, resizes and normalises packed RGB8 pixels of a `width` x `height` image into `dst`.
    pub fn run(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        dst: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let err = |reason: String| PreprocessError {
            width,
            height,
            reason,
        };
        let filter = match self.spec.interpolation {
            Interpolation::Nearest => Filter::Nearest,
            Interpolation::Bilinear => Filter::Bilinear,
            Interpolation::Bicubic => Filter::CatmullRom,
        };
        let crop = crop_box(width, height, &self.spec.crop);
        let (ow, oh) = (self.spec.width, self.spec.height);
        self.resizer
            .resize(rgb, width, height, crop, &mut self.resized, ow, oh, filter)
            .map_err(|e| err(e.to_string()))?;
        normalise_into(
            &self.resized,
            &self.table,
            self.spec.colour_order,
            self.layout,
            dst,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(crop: Crop) -> Preprocess {
        Preprocess {
            width: 4,
            height: 4,
            crop,
            interpolation: Interpolation::Bilinear,
            colour_order: ColourOrder::Rgb,
            range: 255.0,
            mean: [127.0; 3],
            std: [128.0; 3],
        }
    }

    #[test]
    fn centre_crop_is_a_centred_square_of_the_short_side() {
        let b = crop_box(400, 200, &Crop::Center { fraction: 0.5 });
        assert_eq!(
            b,
            CropBox {
                left: 150.0,
                top: 50.0,
                width: 100.0,
                height: 100.0
            }
        );
        let b = crop_box(1, 4000, &Crop::Center { fraction: 0.875 });
        assert_eq!((b.width, b.height), (0.875, 0.875));
        assert!((b.top - 1999.5625).abs() < 1e-9);
    }

    #[test]
    fn normalise_matches_the_formula_in_both_layouts() {
        let s = Preprocess {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            range: 1.0,
            ..spec(Crop::None)
        };
        let t = NormTable::new(&s);
        let rgb = [0u8, 128, 255, 10, 20, 30];
        let mut nchw = [0.0; 6];
        normalise_into(&rgb, &t, ColourOrder::Rgb, Layout::Nchw, &mut nchw);
        let f = |p: u8, c: usize| (p as f32 / 255.0 - s.mean[c]) / s.std[c];
        assert_eq!(
            nchw,
            [f(0, 0), f(10, 0), f(128, 1), f(20, 1), f(255, 2), f(30, 2)]
        );
        let mut nhwc = [0.0; 6];
        normalise_into(&rgb, &t, ColourOrder::Bgr, Layout::Nhwc, &mut nhwc);
        assert_eq!(
            nhwc,
            [f(255, 2), f(128, 1), f(0, 0), f(30, 2), f(20, 1), f(10, 0)]
        );
    }

    #[test]
    fn a_uniform_image_stays_uniform_through_any_crop() {
        let mut p = Preprocessor::new(&spec(Crop::Center { fraction: 0.875 }), Layout::Nchw);
        for (w, h) in [(1, 1), (1, 4000), (4000, 1), (7, 5), (640, 480)] {
            let rgb = vec![200u8; (w * h * 3) as usize];
            let mut out = vec![0.0; p.output_len()];
            p.run(&rgb, w, h, &mut out).unwrap();
            let want = (200.0 - 127.0) / 128.0;
            assert!(
                out.iter().all(|v| (v - want).abs() < 1e-6),
                "{w}x{h}: {:?}",
                &out[..4]
            );
        }
    }

    proptest! {
        // A horizontal gradient keeps its left-to-right order after crop and resize.
        #[test]
        fn resizing_preserves_monotone_gradients(w in 8u32..300, h in 8u32..300) {
            let mut p = Preprocessor::new(&spec(Crop::None), Layout::Nchw);
            let rgb: Vec<u8> = (0..h).flat_map(|_| (0..w).flat_map(move |x| {
                let v = (x * 255 / (w - 1)) as u8;
                [v, v, v]
            })).collect();
            let mut out = vec![0.0; p.output_len()];
            p.run(&rgb, w, h, &mut out).unwrap();
            for row in out[..16].chunks(4) {
                prop_assert!(row.windows(2).all(|x| x[0] <= x[1]), "{row:?}");
            }
        }
    }
}
