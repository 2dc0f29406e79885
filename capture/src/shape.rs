//! Output shaping: resize to the requested size and flip, into a frame's reused buffer.

use fast_image_resize as fr;

use super::{uri, Flip, Frame, SourceError, SourceOptions};

/// Validates the options every source shares.
pub(super) fn check_options(opts: &SourceOptions) -> Result<(), SourceError> {
    if let Some(f) = opts.fps.filter(|f| !uri::valid_fps(*f)) {
        return Err(SourceError::BadOption {
            option: "fps",
            value: f.to_string(),
            expected: "frames per second in 0.01..=1000",
        });
    }
    for (option, v) in [("width", opts.width), ("height", opts.height)] {
        if v == Some(0) {
            return Err(SourceError::BadOption {
                option,
                value: "0".to_string(),
                expected: "a size of at least 1 pixel, or unset to keep the source size",
            });
        }
    }
    Ok(())
}

/// The output size for a `width` x `height` input: both requested dimensions, or one with the
/// other scaled to keep the aspect ratio (at least 1), or the input size.
pub fn output_size(
    width: u32,
    height: u32,
    want_w: Option<u32>,
    want_h: Option<u32>,
) -> (u32, u32) {
    let scaled = |num: u32, a: u32, b: u32| -> u32 {
        ((num as u64 * a as u64 + b as u64 / 2) / b.max(1) as u64).clamp(1, u32::MAX as u64) as u32
    };
    match (want_w, want_h) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, scaled(height, w, width)),
        (None, Some(h)) => (scaled(width, h, height), h),
        (None, None) => (width, height),
    }
}

/// Mirrors packed RGB8 pixels of a `width` x `height` image in place.
pub fn flip_in_place(rgb: &mut [u8], width: u32, height: u32, flip: Flip) {
    let row = width as usize * 3;
    let rows = height as usize;
    debug_assert_eq!(rgb.len(), row * rows);
    if matches!(flip, Flip::Horizontal | Flip::Both) {
        for r in rgb.chunks_exact_mut(row) {
            let w = width as usize;
            for x in 0..w / 2 {
                let (a, b) = (x * 3, (w - 1 - x) * 3);
                for c in 0..3 {
                    r.swap(a + c, b + c);
                }
            }
        }
    }
    if matches!(flip, Flip::Vertical | Flip::Both) {
        for y in 0..rows / 2 {
            let (top, bottom) = rgb.split_at_mut((rows - 1 - y) * row);
            top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
        }
    }
}

/// Resizes and flips source pixels into a frame, keeping the resizer's scratch between frames.
pub(super) struct Shaper {
    want: (Option<u32>, Option<u32>),
    flip: Flip,
    max_pixels: u64,
    resizer: fr::Resizer,
}

impl Shaper {
    pub(super) fn new(opts: &SourceOptions) -> Self {
        Self {
            want: (opts.width, opts.height),
            flip: opts.flip,
            max_pixels: opts.max_pixels,
            resizer: fr::Resizer::new(),
        }
    }

    /// The output size for a `width` x `height` input, checked against the pixel limit.
    pub(super) fn size_for(&self, width: u32, height: u32) -> Result<(u32, u32), SourceError> {
        let (w, h) = output_size(width, height, self.want.0, self.want.1);
        if w as u64 * h as u64 > self.max_pixels {
            return Err(SourceError::TooLarge {
                what: "output frame (width/height options)".to_string(),
                width: w,
                height: h,
                max_pixels: self.max_pixels,
            });
        }
        Ok((w, h))
    }

    /// Whether frames need resizing or flipping at all.
    pub(super) fn is_identity(&self, width: u32, height: u32) -> bool {
        self.flip == Flip::None
            && output_size(width, height, self.want.0, self.want.1) == (width, height)
    }

    /// Writes `src` (`width` x `height` packed RGB8) into `frame`, resized and flipped. Sets the
    /// frame's size; does not touch `seq` or `captured`.
    pub(super) fn emit(
        &mut self,
        src: &[u8],
        width: u32,
        height: u32,
        frame: &mut Frame,
    ) -> Result<(), SourceError> {
        let (ow, oh) = self.size_for(width, height)?;
        frame.rgb.resize(ow as usize * oh as usize * 3, 0);
        if (ow, oh) == (width, height) {
            frame.rgb.copy_from_slice(src);
        } else {
            let err = |e: &dyn std::fmt::Display| SourceError::Resize {
                from: (width, height),
                to: (ow, oh),
                reason: e.to_string(),
            };
            let src_img = fr::images::ImageRef::new(width, height, src, fr::PixelType::U8x3)
                .map_err(|e| err(&e))?;
            let mut dst_img =
                fr::images::Image::from_slice_u8(ow, oh, &mut frame.rgb, fr::PixelType::U8x3)
                    .map_err(|e| err(&e))?;
            let options = fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
            self.resizer
                .resize(&src_img, &mut dst_img, &options)
                .map_err(|e| err(&e))?;
        }
        frame.width = ow;
        frame.height = oh;
        flip_in_place(&mut frame.rgb, ow, oh, self.flip);
        Ok(())
    }
}
