//! dishcam capture: frame sources and where pixels come from before preprocessing. Owns photo
//! decoding ([`decode`]: by content, EXIF orientation, a pixel limit), the sources and their URIs,
//! camera capture (V4L2, GStreamer/CSI) and reconnecting. May import `dishcam-imageproc` (pixel
//! formats, resizing); imported by the runtime and everything above it.
//!
//! A source is opened from a URI ([`open`]) and yields [`Frame`]s through [`FrameSource::next_frame`],
//! which tells a frame, a timeout and the end of the stream apart. Every source owns one `Frame` and
//! overwrites it in place, so steady-state capture does not allocate.
//!
//! Accepted URIs:
//! - `synthetic://?fps=30&size=640x480[&frames=N][&scene_every=K][&fail_after=N&down_ms=MS]`: a
//!   moving test pattern (`fail_after` simulates a camera that drops off for `down_ms`);
//! - `file://photo.jpg` or a bare image path: one frame (repeated when looping);
//! - `dir://DIR`, `dir://DIR/*.jpg` or a bare directory path: each image file in name order;
//! - `file://clip.mp4` (also .avi, .mkv, .webm, .mov; feature `camera-gst`): a video file;
//! - `v4l2:///dev/video0?width=&height=&fps=&format=yuyv|mjpeg|nv12` (feature `camera-v4l`): a
//!   USB/UVC camera;
//! - `csi://0?width=&height=&fps=` and `gst://PIPELINE` (feature `camera-gst`): a Jetson CSI
//!   camera through `nvarguscamerasrc`, or any GStreamer pipeline.

mod camera;
pub mod decode;
mod glob;
#[cfg(feature = "camera-gst")]
mod gst;
mod pace;
pub use dishcam_imageproc::pixfmt;
mod reconnect;
mod shape;
mod still;
mod synthetic;
mod uri;
#[cfg(feature = "camera-v4l")]
mod v4l2;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decode::{ImageError, DEFAULT_MAX_PIXELS};

pub use glob::glob_match;
pub use pixfmt::{choose_format, PixelError, PixelFormat};
pub use reconnect::{Backoff, Outage, Reconnecting, SourceHealth};
pub use shape::{flip_in_place, output_size};
pub use still::{DirSource, FileSource};
pub use synthetic::{render_pattern, SyntheticConfig, SyntheticSource, SCENES};
pub use uri::ACCEPTED_URIS;

/// One captured image: packed 8-bit RGB, row-major, `width * height * 3` bytes.
///
/// Sources reuse the `rgb` buffer from frame to frame; copy it out to keep a frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number within the stream, starting at 0 and increasing by one per frame returned.
    pub seq: u64,
    /// When the frame was produced (decoded, rendered or captured).
    pub captured: Instant,
    pub width: u32,
    pub height: u32,
    /// Packed RGB8 pixels, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

impl Frame {
    pub(crate) fn empty() -> Self {
        Self {
            seq: 0,
            captured: Instant::now(),
            width: 0,
            height: 0,
            rgb: Vec::new(),
        }
    }

    /// The pixel at column `x`, row `y`, or `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.rgb.get(i..i + 3).map(|p| [p[0], p[1], p[2]])
    }
}

/// What [`FrameSource::next_frame`] produced.
#[derive(Debug)]
pub enum Next<'a> {
    /// A new frame, borrowed from the source until the next call.
    Frame(&'a Frame),
    /// No frame was due before the timeout elapsed; call again.
    Timeout,
    /// The stream has ended; later calls keep returning `End`.
    End,
}

/// A stream of frames.
pub trait FrameSource: Send {
    /// Returns the next frame, waiting at most `timeout` for it to be due.
    ///
    /// Paced sources sleep until the next frame is due; if that is later than `timeout`, they
    /// sleep for `timeout` and return [`Next::Timeout`]. The returned frame reuses the source's
    /// buffer.
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError>;

    /// A one-line human description (kind, location, size, rate).
    fn describe(&self) -> String;

    /// The rate the source is paced at, if any.
    fn fps_hint(&self) -> Option<f32>;

    /// How many inputs failed to decode and were skipped so far (directory sources).
    fn skipped(&self) -> u64 {
        0
    }

    /// Disconnects and reconnections, for sources that reopen a lost camera ([`Reconnecting`]).
    fn health(&self) -> Option<Arc<SourceHealth>> {
        None
    }
}

/// Mirroring applied to every frame, after resizing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flip {
    #[default]
    None,
    /// Mirror left-right.
    Horizontal,
    /// Mirror top-bottom.
    Vertical,
    /// Both, i.e. a 180 degree rotation.
    Both,
}

impl std::str::FromStr for Flip {
    type Err = dishcam_imageproc::ParseError;
    fn from_str(s: &str) -> Result<Self, dishcam_imageproc::ParseError> {
        match s {
            "none" => Ok(Flip::None),
            "h" | "horizontal" => Ok(Flip::Horizontal),
            "v" | "vertical" => Ok(Flip::Vertical),
            "both" | "180" => Ok(Flip::Both),
            other => Err(dishcam_imageproc::ParseError(format!(
                "unknown flip '{other}' (expected none, h, v or both)"
            ))),
        }
    }
}

/// Settings shared by all sources.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Output width. With only one of `width`/`height` set, the other keeps the aspect ratio.
    pub width: Option<u32>,
    /// Output height.
    pub height: Option<u32>,
    /// Pacing rate. Synthetic sources use their `fps=` parameter first, then this, then 30;
    /// files and directories are paced only when this is set.
    pub fps: Option<f32>,
    pub flip: Flip,
    /// Repeat files and directories (and restart a synthetic `frames=N` pattern) instead of ending.
    pub loop_: bool,
    /// Largest accepted image (decoded, rendered or resized), in pixels.
    pub max_pixels: u64,
    /// How a camera that drops off is reopened.
    pub reconnect: Backoff,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            width: None,
            height: None,
            fps: None,
            flip: Flip::None,
            loop_: false,
            max_pixels: DEFAULT_MAX_PIXELS,
            reconnect: Backoff::default(),
        }
    }
}

/// Errors opening or reading a frame source. Messages name the input and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("{uri}: unknown source scheme `{scheme}://`; use one of: {accepted}", accepted = ACCEPTED_URIS)]
    UnknownScheme { uri: String, scheme: String },
    #[error("{uri}: bad {param}=`{value}`; expected {expected}")]
    BadParam {
        uri: String,
        param: String,
        value: String,
        expected: String,
    },
    #[error("{uri}: unknown parameter `{param}`; accepted parameters: {accepted}")]
    UnknownParam {
        uri: String,
        param: String,
        accepted: &'static str,
    },
    #[error("bad source option {option} = {value}; expected {expected}")]
    BadOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{}: no such file or directory; check the path, or pass a source URI ({accepted})", path.display(), accepted = ACCEPTED_URIS)]
    NotFound { path: PathBuf },
    #[error("{}: cannot list directory ({source}); check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no image files match `{pattern}`; check the directory and the pattern (hidden files are ignored)", dir.display())]
    NoFiles { dir: PathBuf, pattern: String },
    /// A photo failed to decode; the message starts with its file name.
    #[error("{error}")]
    Decode { path: PathBuf, error: ImageError },
    #[error("{what}: {width}x{height} is over the limit of {max_pixels} pixels; use a smaller size or raise max_pixels")]
    TooLarge {
        what: String,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// The source needs a cargo feature this build does not have.
    #[error("{uri}: built without {feature}; {hint}")]
    NotBuilt {
        uri: String,
        scheme: String,
        feature: &'static str,
        hint: String,
    },
    #[error("{uri}: {reason}")]
    Unsupported { uri: String, reason: String },
    /// The camera went away mid-stream (unplugged, driver reset); [`Reconnecting`] retries.
    #[error("{uri}: camera disconnected ({reason}); check the cable and the device, or keep `--on-disconnect retry` (the default) to reconnect when it returns")]
    Disconnected { uri: String, reason: String },
    /// Capture failed (a driver call, a GStreamer pipeline error); the reason says where.
    #[error("{uri}: {reason}")]
    Capture { uri: String, reason: String },
    #[error("cannot resize {from:?} to {to:?}: {reason}")]
    Resize {
        from: (u32, u32),
        to: (u32, u32),
        reason: String,
    },
}

/// Opens the source named by `uri` (see the module docs for the accepted forms).
pub fn open(uri: &str, opts: &SourceOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    shape::check_options(opts)?;
    match uri::parse(uri)? {
        uri::Spec::Synthetic(cfg) if cfg.fail_after.is_some() => {
            // A simulated disconnect is reopened like a camera; the outage outlives the source.
            let first = SyntheticSource::new(cfg.clone(), opts)?;
            let outage = first.outage();
            let mut first = Some(first);
            let opts = opts.clone();
            let backoff = opts.reconnect;
            let open = move || -> Result<Box<dyn FrameSource>, SourceError> {
                match first.take() {
                    Some(s) => Ok(Box::new(s)),
                    None => Ok(Box::new(SyntheticSource::reopen(
                        cfg.clone(),
                        &opts,
                        outage.clone(),
                    )?)),
                }
            };
            Ok(Box::new(Reconnecting::new(uri, Box::new(open), backoff)?))
        }
        uri::Spec::Synthetic(cfg) => Ok(Box::new(SyntheticSource::new(cfg, opts)?)),
        uri::Spec::File(path) => Ok(Box::new(FileSource::open(&path, opts)?)),
        uri::Spec::Dir { dir, pattern } => {
            Ok(Box::new(DirSource::open(&dir, pattern.as_deref(), opts)?))
        }
        uri::Spec::Video(path) => camera::open_video(uri, &path, opts),
        // Cameras are reopened when they drop off.
        uri::Spec::V4l2(cfg) => {
            reconnecting(uri, opts, move |u, o| camera::open_v4l2(u, cfg.clone(), o))
        }
        uri::Spec::Csi(cfg) => {
            reconnecting(uri, opts, move |u, o| camera::open_csi(u, cfg.clone(), o))
        }
        uri::Spec::Gst(pipeline) => {
            reconnecting(uri, opts, move |u, o| camera::open_gst(u, &pipeline, o))
        }
    }
}

/// `open` wrapped in a [`Reconnecting`] source with the options' backoff.
fn reconnecting(
    uri: &str,
    opts: &SourceOptions,
    open: impl Fn(&str, &SourceOptions) -> Result<Box<dyn FrameSource>, SourceError> + Send + 'static,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let (u, o) = (uri.to_string(), opts.clone());
    let opener: reconnect::Opener = Box::new(move || open(&u, &o));
    Ok(Box::new(Reconnecting::new(uri, opener, opts.reconnect)?))
}
