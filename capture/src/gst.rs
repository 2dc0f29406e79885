//! GStreamer sources (feature `camera-gst`): `csi://N` (Jetson CSI sensors through
//! `nvarguscamerasrc`), `gst://PIPELINE` (any pipeline ending in an appsink) and video files
//! (`file://clip.mp4`, decoded by `uridecodebin`).
//!
//! Every pipeline ends in `videoconvert ! video/x-raw,format=RGB ! appsink`, so frames arrive as
//! RGB8 rows (padded to 4 bytes, which [`pack_rgb`] removes) and are shaped like every other
//! source. Bus errors become [`SourceError::Capture`] with GStreamer's message (or
//! [`SourceError::Disconnected`] for a live source's resource error after frames have flowed),
//! end of stream is [`Next::End`], and a pull that waits past the timeout is [`Next::Timeout`].

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::pace::Pacer;
use super::pixfmt::pack_rgb;
use super::shape::{check_options, Shaper};
use super::uri::CsiConfig;
use super::{Flip, Frame, FrameSource, Next, SourceError, SourceOptions};

/// The name given to the appsink we read from, unless the pipeline names its own.
const SINK: &str = "dishcam_sink";
/// How long opening waits for the pipeline to start (files preroll, cameras start streaming).
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// Pulls wait in slices this long so that a bus error ends the wait early.
const PULL_SLICE: Duration = Duration::from_millis(100);

/// What kind of pipeline a source runs; decides the hints and whether errors mean disconnection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csi,
    Pipeline,
    Video,
}

/// A running GStreamer pipeline whose appsink delivers RGB frames.
pub(super) struct GstSource {
    uri: String,
    kind: Kind,
    description: String,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    shaper: Shaper,
    pacer: Pacer,
    fps: Option<f32>,
    loop_: bool,
    /// Packed camera pixels when the output is resized or flipped.
    rgb: Vec<u8>,
    frame: Frame,
    produced: u64,
    produced_this_pass: u64,
    skipped: u64,
    ended: bool,
    /// A pipeline error (and whether it was a disconnection), returned again by later calls.
    failed: Option<(bool, String)>,
}

/// `nvvidconv flip-method` for a flip: 0 none, 2 rotate 180, 4 mirror left-right, 6 top-bottom.
pub(super) fn nvvidconv_flip(flip: Flip) -> u32 {
    match flip {
        Flip::None => 0,
        Flip::Both => 2,
        Flip::Horizontal => 4,
        Flip::Vertical => 6,
    }
}

/// The pipeline for a Jetson CSI sensor: NVMM capture at the sensor mode, flipped by the VIC.
pub(super) fn csi_pipeline(cfg: &CsiConfig, flip: Flip) -> String {
    format!(
        "nvarguscamerasrc sensor-id={} ! video/x-raw(memory:NVMM),width={},height={},framerate={}/1 ! \
         nvvidconv flip-method={} ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name={SINK} drop=true max-buffers=1 sync=false",
        cfg.sensor,
        cfg.width,
        cfg.height,
        cfg.fps,
        nvvidconv_flip(flip)
    )
}

/// The byte offset of the last `!` outside double quotes, if any.
fn last_link(desc: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    let mut last = None;
    for (i, c) in desc.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '!' if !quoted => last = Some(i),
            _ => {}
        }
    }
    last
}

/// Rewrites a `gst://` pipeline so its appsink receives RGB: when the last element is an
/// `appsink`, `videoconvert ! video/x-raw,format=RGB` goes in front of it (and it gets a name,
/// `max-buffers=2` and `sync=false` unless it sets them); otherwise that chain and an appsink are
/// appended. Returns the description and the appsink's name.
pub(super) fn rgb_pipeline(desc: &str) -> (String, String) {
    let desc = desc.trim();
    let (head, last) = match last_link(desc) {
        Some(i) => (desc[..i].trim_end(), desc[i + 1..].trim()),
        None => ("", desc),
    };
    let is_appsink = last == "appsink" || last.starts_with("appsink ");
    if !is_appsink {
        return (
            format!(
                "{desc} ! videoconvert ! video/x-raw,format=RGB ! appsink name={SINK} max-buffers=2 sync=false"
            ),
            SINK.to_string(),
        );
    }
    let props: Vec<&str> = last["appsink".len()..].split_whitespace().collect();
    let mut extra = Vec::new();
    let name = match props.iter().find_map(|p| p.strip_prefix("name=")) {
        Some(n) => n.trim_matches('"').to_string(),
        None => {
            extra.push(format!("name={SINK}"));
            SINK.to_string()
        }
    };
    if !props.iter().any(|p| p.starts_with("max-buffers=")) {
        extra.push("max-buffers=2".to_string());
    }
    if !props.iter().any(|p| p.starts_with("sync=")) {
        extra.push("sync=false".to_string());
    }
    let sink = ["appsink".to_string()]
        .into_iter()
        .chain(props.iter().map(|p| p.to_string()))
        .chain(extra)
        .collect::<Vec<_>>()
        .join(" ");
    let chain = "videoconvert ! video/x-raw,format=RGB";
    let desc = if head.is_empty() {
        format!("{chain} ! {sink}")
    } else {
        format!("{head} ! {chain} ! {sink}")
    };
    (desc, name)
}

/// The pipeline decoding a video file at `uri` (a `file://` URI, percent-encoded).
pub(super) fn video_pipeline(file_uri: &str) -> String {
    format!(
        "uridecodebin uri=\"{file_uri}\" ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name={SINK} max-buffers=4 sync=false"
    )
}

/// A hint for a GStreamer error, by its domain.
fn hint(e: &gst::glib::Error, kind: Kind) -> &'static str {
    if e.matches(gst::CoreError::MissingPlugin)
        || e.matches(gst::StreamError::CodecNotFound)
        || e.matches(gst::StreamError::TypeNotFound)
        || e.matches(gst::StreamError::WrongType)
    {
        return match kind {
            Kind::Video => "; not a video, or its codec needs GStreamer plugins that are not installed (gstreamer1.0-plugins-good/-bad/-ugly, gstreamer1.0-libav)",
            _ => "; install the GStreamer plugins it needs (gstreamer1.0-plugins-good/-bad/-ugly, gstreamer1.0-libav)",
        };
    }
    if e.matches(gst::ResourceError::NotFound)
        || e.matches(gst::ResourceError::OpenRead)
        || e.matches(gst::ResourceError::OpenReadWrite)
        || e.matches(gst::ResourceError::Busy)
    {
        return match kind {
            Kind::Csi => "; check the sensor id and that nvargus-daemon is running (`sudo systemctl restart nvargus-daemon`)",
            Kind::Video => "; check the path and its permissions",
            Kind::Pipeline => "; check the device or file the pipeline reads, and that no other program holds it",
        };
    }
    ""
}

/// GStreamer's message for a bus error or warning: the element, the error, the debug detail.
fn describe_message(
    src: Option<&gst::Object>,
    e: &gst::glib::Error,
    debug: Option<gst::glib::GString>,
) -> String {
    let mut s = match src {
        Some(o) => format!("{}: {}", o.path_string(), e.message()),
        None => e.message().to_string(),
    };
    if let Some(d) = debug {
        let d = d.trim();
        if !d.is_empty() {
            s += &format!(" ({d})");
        }
    }
    s
}

impl GstSource {
    /// `csi://N`: `nvarguscamerasrc`, which exists only on Jetson boards.
    pub(super) fn csi(
        uri: &str,
        cfg: &CsiConfig,
        opts: &SourceOptions,
    ) -> Result<Self, SourceError> {
        // The VIC flips for free; the shaper must not flip again.
        let desc = csi_pipeline(cfg, opts.flip);
        let opts = SourceOptions {
            flip: Flip::None,
            ..opts.clone()
        };
        Self::start(
            uri,
            Kind::Csi,
            desc,
            SINK.to_string(),
            Some(cfg.fps as f32),
            &opts,
        )
    }

    /// `gst://PIPELINE`.
    pub(super) fn pipeline(
        uri: &str,
        desc: &str,
        opts: &SourceOptions,
    ) -> Result<Self, SourceError> {
        let (desc, name) = rgb_pipeline(desc);
        Self::start(uri, Kind::Pipeline, desc, name, opts.fps, opts)
    }

    /// A video file.
    pub(super) fn video(uri: &str, path: &Path, opts: &SourceOptions) -> Result<Self, SourceError> {
        if !path.exists() {
            return Err(SourceError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let abs = std::fs::canonicalize(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        init(uri)?;
        let file_uri =
            gst::glib::filename_to_uri(&abs, None).map_err(|e| SourceError::Capture {
                uri: uri.to_string(),
                reason: format!("{}: cannot make a file URI ({e})", path.display()),
            })?;
        Self::start(
            uri,
            Kind::Video,
            video_pipeline(&file_uri),
            SINK.to_string(),
            opts.fps,
            opts,
        )
    }

    fn start(
        uri: &str,
        kind: Kind,
        desc: String,
        sink_name: String,
        fps: Option<f32>,
        opts: &SourceOptions,
    ) -> Result<Self, SourceError> {
        check_options(opts)?;
        init(uri)?;
        let capture = |reason: String| SourceError::Capture {
            uri: uri.to_string(),
            reason,
        };
        let element = gst::parse::launch(&desc).map_err(|e| {
            let fix = match kind {
                Kind::Csi if e.matches(gst::ParseError::NoSuchElement) => {
                    "; nvarguscamerasrc and nvvidconv come with NVIDIA's JetPack GStreamer plugins, so csi:// works only on a Jetson (use v4l2:// for USB cameras)"
                }
                Kind::Video => "; install the GStreamer base plugins (gstreamer1.0-plugins-base)",
                _ => "; check the pipeline with `gst-launch-1.0` and that its elements' plugins are installed",
            };
            capture(format!("cannot build pipeline `{desc}`: {e}{fix}"))
        })?;
        let pipeline = match element.downcast::<gst::Pipeline>() {
            Ok(p) => p,
            Err(_) => {
                return Err(capture(format!(
                    "`{desc}` is a single element, not a pipeline ending in appsink"
                )))
            }
        };
        let sink = pipeline
            .by_name(&sink_name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| capture(format!("`{desc}` has no appsink named {sink_name}")))?;
        let bus = pipeline
            .bus()
            .ok_or_else(|| capture("the pipeline has no bus".to_string()))?;
        let mut src = Self {
            uri: uri.to_string(),
            kind,
            description: desc,
            pipeline,
            sink,
            bus,
            shaper: Shaper::new(opts),
            pacer: Pacer::new(if kind == Kind::Csi { None } else { opts.fps }),
            fps,
            loop_: opts.loop_ && kind == Kind::Video,
            rgb: Vec::new(),
            frame: Frame::empty(),
            produced: 0,
            produced_this_pass: 0,
            skipped: 0,
            ended: false,
            failed: None,
        };
        let started = src.pipeline.set_state(gst::State::Playing);
        let (settled, _, _) = src
            .pipeline
            .state(gst::ClockTime::from_nseconds(OPEN_WAIT.as_nanos() as u64));
        if started.is_err() || settled.is_err() {
            // The error may reach the bus just after the state change reports the failure.
            let reason = src
                .bus_error_within(Duration::from_secs(2))
                .map(|(r, _)| r)
                .unwrap_or_else(|| "the pipeline failed to start and posted no error".to_string());
            return Err(capture(reason));
        }
        // A video that ends before its first frame still opens; it then yields End.
        if let Some((reason, _)) = src.bus_error() {
            return Err(capture(reason));
        }
        Ok(src)
    }

    /// The first error waiting on the bus, described with its hint, and whether it is a resource
    /// (device) error; warnings from decoders are counted as skipped frames and logged on the way.
    fn bus_error(&mut self) -> Option<(String, bool)> {
        self.bus_error_within(Duration::ZERO)
    }

    /// [`Self::bus_error`], waiting up to `wait` for a message when none is queued.
    fn bus_error_within(&mut self, wait: Duration) -> Option<(String, bool)> {
        let types = [gst::MessageType::Error, gst::MessageType::Warning];
        let mut wait = gst::ClockTime::from_nseconds(wait.as_nanos() as u64);
        loop {
            // gstreamer-rs's timed_pop_filtered pops nothing when the timeout is zero.
            let msg = if wait.is_zero() {
                self.bus.pop_filtered(&types)
            } else {
                self.bus.timed_pop_filtered(wait, &types)
            }?;
            wait = gst::ClockTime::ZERO;
            match msg.view() {
                gst::MessageView::Error(err) => {
                    let e = err.error();
                    let resource = [
                        gst::ResourceError::Read,
                        gst::ResourceError::NotFound,
                        gst::ResourceError::OpenRead,
                        gst::ResourceError::Failed,
                    ]
                    .into_iter()
                    .any(|r| e.matches(r));
                    let reason = format!(
                        "{}{}",
                        describe_message(msg.src(), &e, err.debug()),
                        hint(&e, self.kind)
                    );
                    return Some((reason, resource));
                }
                gst::MessageView::Warning(w) => {
                    let e = w.error();
                    if e.matches(gst::StreamError::Decode) {
                        self.skipped += 1;
                    }
                    log::warn!(
                        "{}: {}",
                        self.uri,
                        describe_message(msg.src(), &e, w.debug())
                    );
                }
                _ => {}
            }
        }
    }

    /// Turns a pending bus error into the error to return (and keep returning). A resource error
    /// of a live source after frames have flowed is a disconnection.
    fn check_bus(&mut self) -> Result<(), SourceError> {
        if self.failed.is_none() {
            let Some((reason, resource)) = self.bus_error() else {
                return Ok(());
            };
            let live = self.kind != Kind::Video;
            self.failed = Some((live && resource && self.produced > 0, reason));
            let _ = self.pipeline.set_state(gst::State::Null);
        }
        let (disconnected, reason) = self.failed.clone().unwrap_or_default();
        let uri = self.uri.clone();
        Err(if disconnected {
            SourceError::Disconnected { uri, reason }
        } else {
            SourceError::Capture { uri, reason }
        })
    }

    /// Copies a sample into the frame.
    fn take(&mut self, sample: &gst::Sample) -> Result<(), SourceError> {
        let bad = |reason: String| SourceError::Capture {
            uri: self.uri.clone(),
            reason,
        };
        let caps = sample
            .caps()
            .ok_or_else(|| bad("a sample arrived without caps".to_string()))?;
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| bad(format!("unreadable caps {caps} ({e})")))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| bad("a sample arrived without a buffer".to_string()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| bad(format!("cannot map a buffer ({e})")))?;
        let (w, h) = (info.width(), info.height());
        let stride = info.stride()[0].max(0) as usize;
        let offset = info.offset()[0];
        let data = map.as_slice().get(offset..).unwrap_or(&[]);
        if self.shaper.is_identity(w, h) {
            pack_rgb(data, w, h, stride, &mut self.frame.rgb).map_err(|e| bad(e.to_string()))?;
            self.shaper.size_for(w, h)?;
            self.frame.width = w;
            self.frame.height = h;
        } else {
            pack_rgb(data, w, h, stride, &mut self.rgb).map_err(|e| bad(e.to_string()))?;
            self.shaper.emit(&self.rgb, w, h, &mut self.frame)?;
        }
        Ok(())
    }
}

fn init(uri: &str) -> Result<(), SourceError> {
    gst::init().map_err(|e| SourceError::Capture {
        uri: uri.to_string(),
        reason: format!("cannot initialise GStreamer ({e}); check the GStreamer installation (scripts/setup.sh)"),
    })
}

impl Drop for GstSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl FrameSource for GstSource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError> {
        if self.ended {
            return Ok(Next::End);
        }
        self.check_bus()?;
        if !self.pacer.wait(timeout) {
            return Ok(Next::Timeout);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(PULL_SLICE);
            let wait = gst::ClockTime::from_nseconds(slice.as_nanos() as u64);
            if let Some(sample) = self.sink.try_pull_sample(wait) {
                self.take(&sample)?;
                self.frame.seq = self.produced;
                self.frame.captured = Instant::now();
                self.produced += 1;
                self.produced_this_pass += 1;
                return Ok(Next::Frame(&self.frame));
            }
            self.check_bus()?;
            if self.sink.is_eos() {
                if self.loop_ && self.produced_this_pass > 0 {
                    self.produced_this_pass = 0;
                    self.pipeline
                        .seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        )
                        .map_err(|e| SourceError::Capture {
                            uri: self.uri.clone(),
                            reason: format!("cannot rewind the video to loop it ({e})"),
                        })?;
                    continue;
                }
                self.ended = true;
                let _ = self.pipeline.set_state(gst::State::Null);
                return Ok(Next::End);
            }
            if left.is_zero() {
                return Ok(Next::Timeout);
            }
        }
    }

    fn describe(&self) -> String {
        let what = match self.kind {
            Kind::Csi => "csi",
            Kind::Pipeline => "gst",
            Kind::Video => "video",
        };
        let mut s = format!("{what} {} (`{}`", self.uri, self.description);
        if self.loop_ {
            s += ", looping";
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

    #[test]
    fn csi_pipeline_asks_for_the_mode_and_flips_on_the_vic() {
        let cfg = CsiConfig {
            sensor: 1,
            width: 1920,
            height: 1080,
            fps: 30,
        };
        let p = csi_pipeline(&cfg, Flip::Both);
        assert!(p.starts_with("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! nvvidconv flip-method=2 !"), "{p}");
        assert!(p.ends_with("video/x-raw,format=RGB ! appsink name=dishcam_sink drop=true max-buffers=1 sync=false"), "{p}");
        assert_eq!(nvvidconv_flip(Flip::Horizontal), 4);
        assert_eq!(nvvidconv_flip(Flip::Vertical), 6);
        assert_eq!(nvvidconv_flip(Flip::None), 0);
    }

    #[test]
    fn pipelines_get_rgb_caps_and_a_named_appsink() {
        let (p, name) = rgb_pipeline("videotestsrc ! video/x-raw,width=320 ! appsink");
        assert_eq!(
            p,
            "videotestsrc ! video/x-raw,width=320 ! videoconvert ! video/x-raw,format=RGB ! appsink name=dishcam_sink max-buffers=2 sync=false"
        );
        assert_eq!(name, SINK);
        let (p, name) = rgb_pipeline("v4l2src ! appsink name=cam drop=true sync=true");
        assert_eq!(
            p,
            "v4l2src ! videoconvert ! video/x-raw,format=RGB ! appsink name=cam drop=true sync=true max-buffers=2"
        );
        assert_eq!(name, "cam");
        let (p, _) = rgb_pipeline("videotestsrc pattern=ball");
        assert!(p.starts_with("videotestsrc pattern=ball ! videoconvert ! video/x-raw,format=RGB ! appsink name=dishcam_sink"), "{p}");
        // A `!` inside quotes is not a link.
        let (p, _) = rgb_pipeline("filesrc location=\"a!b.avi\" ! decodebin");
        assert!(
            p.starts_with("filesrc location=\"a!b.avi\" ! decodebin ! videoconvert"),
            "{p}"
        );
        assert_eq!(last_link("a \"!\" b"), None);
    }

    #[test]
    fn video_pipeline_quotes_the_uri() {
        let p = video_pipeline("file:///tmp/my%20clip.avi");
        assert!(
            p.starts_with("uridecodebin uri=\"file:///tmp/my%20clip.avi\" ! videoconvert"),
            "{p}"
        );
    }
}
