//! Cameras and videos: `v4l2://` (feature `camera-v4l`), `csi://`, `gst://` and video files
//! (feature `camera-gst`). Without the feature each opens to a `NotBuilt` error naming it.

use std::path::Path;

use super::uri::{CsiConfig, V4l2Config};
use super::{FrameSource, SourceError, SourceOptions};

#[cfg(not(all(feature = "camera-v4l", feature = "camera-gst")))]
fn not_built(uri: &str, scheme: &str, feature: &'static str, extra: &str) -> SourceError {
    SourceError::NotBuilt {
        uri: uri.to_string(),
        scheme: scheme.to_string(),
        feature,
        hint: format!("rebuild with --features {feature}{extra}"),
    }
}

#[cfg(not(feature = "camera-gst"))]
const GST_NEEDS: &str = " (needs the GStreamer development packages: scripts/setup.sh)";

/// `v4l2:///dev/videoN`: a USB/UVC camera.
pub(super) fn open_v4l2(
    uri: &str,
    cfg: V4l2Config,
    opts: &SourceOptions,
) -> Result<Box<dyn FrameSource>, SourceError> {
    #[cfg(feature = "camera-v4l")]
    {
        Ok(Box::new(super::v4l2::V4l2Source::open(uri, cfg, opts)?))
    }
    #[cfg(not(feature = "camera-v4l"))]
    {
        let _ = (cfg, opts);
        Err(not_built(uri, "v4l2", "camera-v4l", ""))
    }
}

/// `csi://N`: a Jetson CSI sensor through `nvarguscamerasrc`.
pub(super) fn open_csi(
    uri: &str,
    cfg: CsiConfig,
    opts: &SourceOptions,
) -> Result<Box<dyn FrameSource>, SourceError> {
    #[cfg(feature = "camera-gst")]
    {
        Ok(Box::new(super::gst::GstSource::csi(uri, &cfg, opts)?))
    }
    #[cfg(not(feature = "camera-gst"))]
    {
        let _ = (cfg, opts);
        Err(not_built(uri, "csi", "camera-gst", GST_NEEDS))
    }
}

/// `gst://PIPELINE`: any GStreamer pipeline, its appsink fed RGB.
pub(super) fn open_gst(
    uri: &str,
    pipeline: &str,
    opts: &SourceOptions,
) -> Result<Box<dyn FrameSource>, SourceError> {
    #[cfg(feature = "camera-gst")]
    {
        Ok(Box::new(super::gst::GstSource::pipeline(
            uri, pipeline, opts,
        )?))
    }
    #[cfg(not(feature = "camera-gst"))]
    {
        let _ = (pipeline, opts);
        Err(not_built(uri, "gst", "camera-gst", GST_NEEDS))
    }
}

/// `file://clip.mp4` (.avi, .mkv, .webm, .mov): a video file, decoded by GStreamer.
pub(super) fn open_video(
    uri: &str,
    path: &Path,
    opts: &SourceOptions,
) -> Result<Box<dyn FrameSource>, SourceError> {
    #[cfg(feature = "camera-gst")]
    {
        Ok(Box::new(super::gst::GstSource::video(uri, path, opts)?))
    }
    #[cfg(not(feature = "camera-gst"))]
    {
        let _ = opts;
        Err(not_built(
            uri,
            "file",
            "camera-gst",
            &format!(
                "{GST_NEEDS}, or extract frames (e.g. `ffmpeg -i {} frames/%05d.jpg`) and pass dir://frames",
                path.display()
            ),
        ))
    }
}
