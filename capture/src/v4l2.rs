//! `v4l2:///dev/videoN`: USB/UVC cameras through V4L2 memory-mapped streaming (feature
//! `camera-v4l`).
//!
//! Opening negotiates the pixel format ([`choose_format`]: the requested one if offered, else
//! MJPEG, YUYV, NV12, UYVY, GREY), the size and the rate; each frame is converted to RGB
//! ([`super::pixfmt`]) and shaped like every other source. Only the negotiation, the conversions
//! and the error paths are tested on the development machines (they have no camera); capture
//! itself runs only where a camera is plugged in.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Fraction};

use super::pixfmt::{choose_format, fourcc_list, to_rgb, PixelFormat, FORMAT_NAMES};
use super::shape::{check_options, Shaper};
use super::uri::V4l2Config;
use super::{Frame, FrameSource, Next, SourceError, SourceOptions};

/// Driver buffers in the mmap ring: enough to keep capturing while one frame is converted.
const BUFFERS: u32 = 4;
/// Frames in a row that may fail to convert (corrupt MJPEG, short buffers) before capture fails.
const MAX_BAD_IN_ROW: u32 = 30;

/// A V4L2 capture device streaming through mmap buffers.
pub(super) struct V4l2Source {
    uri: String,
    device: PathBuf,
    card: String,
    /// `None` once the device is gone; dropped before `_dev`, which only keeps the fd open.
    stream: Option<Stream<'static>>,
    _dev: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    fps: Option<f32>,
    max_pixels: u64,
    shaper: Shaper,
    /// Converted camera pixels when the output is resized or flipped.
    rgb: Vec<u8>,
    frame: Frame,
    produced: u64,
    skipped: u64,
    bad_in_row: u32,
    /// Why the stream stopped, returned again by later calls.
    gone: Option<String>,
}

/// Whether a read error means the device went away (unplugged, USB reset) rather than a bad
/// frame: `ENODEV`, `ENXIO`, `ESHUTDOWN`, and `EIO` (videobuf2 puts its queue in an error state when
/// the device disconnects).
pub(super) fn is_disconnect(e: &io::Error) -> bool {
    const EIO: i32 = 5;
    const ENXIO: i32 = 6;
    const ENODEV: i32 = 19;
    const ESHUTDOWN: i32 = 108;
    matches!(e.raw_os_error(), Some(EIO | ENXIO | ENODEV | ESHUTDOWN))
}

/// The error for a device path that cannot be opened.
fn open_error(uri: &str, device: &Path, e: &io::Error) -> SourceError {
    let fix = match e.kind() {
        io::ErrorKind::NotFound => "no such device; list the cameras with `ls /dev/video*`".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied; add the user to the `video` group (`sudo usermod -aG video $USER`, then log in again)"
                .to_string()
        }
        _ => format!("cannot open ({e}); check that it is a camera with `ls /dev/video*`"),
    };
    SourceError::Capture {
        uri: uri.to_string(),
        reason: format!("{}: {fix}", device.display()),
    }
}

impl V4l2Source {
    pub(super) fn open(
        uri: &str,
        cfg: V4l2Config,
        opts: &SourceOptions,
    ) -> Result<Self, SourceError> {
        check_options(opts)?;
        let device = cfg.device.clone();
        let capture = |reason: String| SourceError::Capture {
            uri: uri.to_string(),
            reason: format!("{}: {reason}", device.display()),
        };
        if !device.exists() {
            return Err(open_error(
                uri,
                &device,
                &io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let dev = Device::with_path(&device).map_err(|e| open_error(uri, &device, &e))?;
        let caps = dev.query_caps().map_err(|e| {
            capture(format!(
                "not a V4L2 device ({e}); pass a camera node from `ls /dev/video*`"
            ))
        })?;
        if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
            let hint = if caps.capabilities.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
                "it is a multi-planar device; read it through GStreamer instead (gst://v4l2src device=... ! appsink)"
            } else {
                "it may be the camera's metadata node; try the next /dev/video* (`v4l2-ctl --list-devices`)"
            };
            return Err(capture(format!(
                "{} ({}) has no single-planar video capture; {hint}",
                caps.card, caps.driver
            )));
        }
        if !caps.capabilities.contains(CapFlags::STREAMING) {
            return Err(capture(format!(
                "{} ({}) does not support streaming I/O, which this source needs",
                caps.card, caps.driver
            )));
        }

        let offered: Vec<[u8; 4]> = dev
            .enum_formats()
            .map_err(|e| capture(format!("cannot list pixel formats ({e})")))?
            .iter()
            .map(|d| d.fourcc.repr)
            .collect();
        let (format, fell_back) = choose_format(&offered, cfg.format)
            .map_err(|reason| capture(format!("{reason}; use a camera with {FORMAT_NAMES}")))?;
        if fell_back {
            log::warn!(
                "{uri}: the camera does not offer {}; using {format} (it offers {})",
                cfg.format.map(|f| f.name()).unwrap_or("?"),
                fourcc_list(&offered)
            );
        }

        let mut want = dev
            .format()
            .map_err(|e| capture(format!("cannot read the current format ({e})")))?;
        want.fourcc = v4l::FourCC::new(&format.fourcc());
        if let Some(w) = cfg.width {
            want.width = w;
        }
        if let Some(h) = cfg.height {
            want.height = h;
        }
        let got = dev.set_format(&want).map_err(|e| {
            capture(format!(
                "cannot set {format} {}x{} ({e})",
                want.width, want.height
            ))
        })?;
        if got.fourcc.repr != format.fourcc() {
            return Err(capture(format!(
                "the driver refused {format} and chose {}; pass format= one of {}",
                fourcc_list(&[got.fourcc.repr]),
                fourcc_list(&offered)
            )));
        }
        if cfg.width.is_some_and(|w| w != got.width) || cfg.height.is_some_and(|h| h != got.height)
        {
            log::warn!(
                "{uri}: asked for {}x{}, the camera gives {}x{}",
                cfg.width.unwrap_or(got.width),
                cfg.height.unwrap_or(got.height),
                got.width,
                got.height
            );
        }
        if got.width == 0 || got.height == 0 {
            return Err(capture(format!(
                "the driver reports a {}x{} frame",
                got.width, got.height
            )));
        }
        if got.width as u64 * got.height as u64 > opts.max_pixels {
            return Err(SourceError::TooLarge {
                what: format!("{} capture", device.display()),
                width: got.width,
                height: got.height,
                max_pixels: opts.max_pixels,
            });
        }
        let stride = match format.min_stride(got.width) {
            Some(min) => (got.stride as usize).max(min),
            None => 0,
        };

        let mut fps = None;
        if let Some(rate) = cfg.fps.or(opts.fps) {
            let params = v4l::video::capture::Parameters::new(Fraction::new(
                1000,
                (rate * 1000.0).round() as u32,
            ));
            match dev.set_params(&params) {
                Ok(p) if p.interval.numerator > 0 && p.interval.denominator > 0 => {
                    fps = Some(p.interval.denominator as f32 / p.interval.numerator as f32);
                }
                Ok(_) => {}
                Err(e) => log::warn!("{uri}: the camera did not take fps={rate} ({e})"),
            }
        } else if let Ok(p) = dev.params() {
            if p.interval.numerator > 0 && p.interval.denominator > 0 {
                fps = Some(p.interval.denominator as f32 / p.interval.numerator as f32);
            }
        }

        let stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS).map_err(|e| {
            capture(format!(
                "cannot map capture buffers ({e}); is another program using the camera?"
            ))
        })?;
        let shaper = Shaper::new(opts);
        shaper.size_for(got.width, got.height)?;
        Ok(Self {
            uri: uri.to_string(),
            device,
            card: caps.card,
            stream: Some(stream),
            _dev: dev,
            format,
            width: got.width,
            height: got.height,
            stride,
            fps,
            max_pixels: opts.max_pixels,
            shaper,
            rgb: Vec::new(),
            frame: Frame::empty(),
            produced: 0,
            skipped: 0,
            bad_in_row: 0,
            gone: None,
        })
    }

    /// Stops streaming and unmaps the buffers. The v4l crate panics when stopping fails with
    /// anything but `ENODEV`; a camera that vanished must not take the process with it.
    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)));
        }
    }

    fn disconnected(&mut self, reason: String) -> SourceError {
        self.close();
        self.gone = Some(reason.clone());
        SourceError::Disconnected {
            uri: self.uri.clone(),
            reason,
        }
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        self.close();
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError> {
        if let Some(reason) = &self.gone {
            return Err(SourceError::Disconnected {
                uri: self.uri.clone(),
                reason: reason.clone(),
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(stream) = self.stream.as_mut() else {
                return Ok(Next::End);
            };
            // poll() takes whole milliseconds in an i32; 0 would mean "do not wait".
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as u64;
            stream.set_timeout(Duration::from_millis(ms));
            let (buf, meta) = match CaptureStream::next(stream) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(Next::Timeout),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    if left.is_zero() {
                        return Ok(Next::Timeout);
                    }
                    continue;
                }
                Err(e) if is_disconnect(&e) => {
                    return Err(self.disconnected(format!("{}: {e}", self.device.display())))
                }
                Err(e) => {
                    return Err(SourceError::Capture {
                        uri: self.uri.clone(),
                        reason: format!("{}: reading a frame failed ({e})", self.device.display()),
                    })
                }
            };
            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            let converted = if meta.flags.contains(BufFlags::ERROR) {
                Err("the driver marked the frame as corrupt".to_string())
            } else {
                let identity = self.shaper.is_identity(self.width, self.height);
                let out = if identity {
                    &mut self.frame.rgb
                } else {
                    &mut self.rgb
                };
                to_rgb(
                    self.format,
                    &buf[..used],
                    self.width,
                    self.height,
                    self.stride,
                    self.max_pixels,
                    out,
                )
                .map(|size| (identity, size))
                .map_err(|e| e.to_string())
            };
            match converted {
                Ok((identity, (w, h))) => {
                    if identity && (w, h) == (self.width, self.height) {
                        self.frame.width = w;
                        self.frame.height = h;
                    } else if identity {
                        // An MJPEG frame whose size differs from the negotiated one.
                        std::mem::swap(&mut self.rgb, &mut self.frame.rgb);
                        self.shaper.emit(&self.rgb, w, h, &mut self.frame)?;
                    } else {
                        self.shaper.emit(&self.rgb, w, h, &mut self.frame)?;
                    }
                    self.bad_in_row = 0;
                    self.frame.seq = self.produced;
                    self.frame.captured = Instant::now();
                    self.produced += 1;
                    return Ok(Next::Frame(&self.frame));
                }
                Err(reason) => {
                    self.skipped += 1;
                    self.bad_in_row += 1;
                    log::warn!("{}: skipping a frame: {reason}", self.uri);
                    if self.bad_in_row >= MAX_BAD_IN_ROW {
                        return Err(SourceError::Capture {
                            uri: self.uri.clone(),
                            reason: format!(
                                "{MAX_BAD_IN_ROW} frames in a row could not be read as {} {}x{} (last: {reason}); try another format= or size",
                                self.format, self.width, self.height
                            ),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Ok(Next::Timeout);
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "v4l2 {} ({}, {}x{} {}",
            self.device.display(),
            self.card,
            self.width,
            self.height,
            self.format
        );
        if let Some(f) = self.fps {
            s += &format!(" at {f:.3} fps");
        }
        s + ")"
    }

    fn fps_hint(&self) -> Option<f32> {
        self.fps
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_err(uri: &str) -> String {
        let super::super::uri::Spec::V4l2(cfg) = super::super::uri::parse(uri).unwrap() else {
            panic!("{uri} is not v4l2")
        };
        match V4l2Source::open(uri, cfg, &SourceOptions::default()) {
            Ok(_) => panic!("{uri} opened"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_device_names_the_path_and_the_fix() {
        let e = open_err("v4l2:///dev/video-none-such");
        assert!(e.contains("/dev/video-none-such: no such device"), "{e}");
        assert!(e.contains("ls /dev/video*"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_camera_is_refused() {
        let e = open_err("v4l2:///dev/null");
        assert!(e.contains("/dev/null: not a V4L2 device"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = open_err(&format!("v4l2://{}", file.path().display()));
        assert!(e.contains("not a V4L2 device"), "{e}");
    }

    #[test]
    fn disconnect_errors_are_told_apart() {
        for errno in [5, 6, 19, 108] {
            assert!(
                is_disconnect(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [4, 11, 22] {
            assert!(
                !is_disconnect(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(!is_disconnect(&io::Error::from(io::ErrorKind::TimedOut)));
        let e = SourceError::Disconnected {
            uri: "v4l2:///dev/video0".into(),
            reason: "/dev/video0: No such device (os error 19)".into(),
        };
        assert!(e
            .to_string()
            .starts_with("v4l2:///dev/video0: camera disconnected"));
    }
}
