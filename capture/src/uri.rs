//! Source URIs to source specifications (no I/O beyond checking whether a bare path is a
//! directory).

use std::path::{Path, PathBuf};

use super::pixfmt::{PixelFormat, FORMAT_NAMES};
use super::synthetic::SyntheticConfig;
use super::SourceError;

/// The accepted source forms, for error messages.
pub const ACCEPTED_URIS: &str = "synthetic://?fps=30&size=640x480, file://PHOTO, file://CLIP.mp4, \
     dir://DIR, dir://DIR/*.jpg, v4l2:///dev/video0, csi://0, gst://PIPELINE, or a bare file or directory path";

const SYNTHETIC_PARAMS: &str = "fps, size, frames, scene_every, fail_after, down_ms";
const V4L2_PARAMS: &str = "width, height, fps, format";
const CSI_PARAMS: &str = "width, height, fps";
const VIDEO_EXTENSIONS: [&str; 5] = ["mp4", "mkv", "avi", "mov", "webm"];

/// What a URI names.
#[derive(Debug)]
pub(super) enum Spec {
    Synthetic(SyntheticConfig),
    File(PathBuf),
    Video(PathBuf),
    Dir {
        dir: PathBuf,
        pattern: Option<String>,
    },
    V4l2(V4l2Config),
    Csi(CsiConfig),
    /// A GStreamer pipeline description (`gst://` stripped).
    Gst(String),
}

/// `v4l2:///dev/videoN?width=..&height=..&fps=..&format=..`: what to ask the camera for. Unset
/// values keep the driver's current setting.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct V4l2Config {
    pub device: PathBuf,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f32>,
    pub format: Option<PixelFormat>,
}

/// `csi://N?width=..&height=..&fps=..`: a Jetson CSI sensor through `nvarguscamerasrc`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CsiConfig {
    pub sensor: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

pub(super) fn parse(uri: &str) -> Result<Spec, SourceError> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(path_spec(Path::new(uri), false));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "synthetic" => parse_synthetic(uri, rest).map(Spec::Synthetic),
        "file" => Ok(path_spec(Path::new(rest), false)),
        "dir" => Ok(path_spec(Path::new(rest), true)),
        "v4l2" => parse_v4l2(uri, rest).map(Spec::V4l2),
        "csi" => parse_csi(uri, rest).map(Spec::Csi),
        "gst" => {
            require_target(
                uri,
                rest,
                "pipeline",
                "a GStreamer pipeline ending in appsink",
            )?;
            Ok(Spec::Gst(rest.trim().to_string()))
        }
        _ => Err(SourceError::UnknownScheme {
            uri: uri.to_string(),
            scheme: scheme.to_string(),
        }),
    }
}

fn require_target(uri: &str, rest: &str, what: &str, expected: &str) -> Result<(), SourceError> {
    if rest.trim().is_empty() {
        return Err(bad(uri, what, rest, expected));
    }
    Ok(())
}

fn bad(uri: &str, param: &str, value: &str, expected: &str) -> SourceError {
    SourceError::BadParam {
        uri: uri.to_string(),
        param: param.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// A path is a glob when its last component has `*` or `?`; otherwise a directory when it is one
/// (or `dir://` said so), a video by extension, else an image file.
fn path_spec(path: &Path, is_dir_uri: bool) -> Spec {
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        if name.contains(['*', '?']) {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            return Spec::Dir {
                dir,
                pattern: Some(name.to_string()),
            };
        }
    }
    if is_dir_uri || path.is_dir() {
        return Spec::Dir {
            dir: path.to_path_buf(),
            pattern: None,
        };
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext.is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str())) {
        return Spec::Video(path.to_path_buf());
    }
    Spec::File(path.to_path_buf())
}

/// Splits `key=value&key=value` pairs (an empty query gives none).
fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn parse_dim(uri: &str, key: &str, value: &str) -> Result<u32, SourceError> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|v| (1..=65_535).contains(v))
        .ok_or_else(|| bad(uri, key, value, "a size in pixels, 1..=65535"))
}

/// `v4l2:///dev/video0?...`; `v4l2://0` is short for `/dev/video0`.
fn parse_v4l2(uri: &str, rest: &str) -> Result<V4l2Config, SourceError> {
    let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
    require_target(
        uri,
        target,
        "device",
        "a device path such as v4l2:///dev/video0",
    )?;
    let device = match target.parse::<u32>() {
        Ok(n) => PathBuf::from(format!("/dev/video{n}")),
        Err(_) => PathBuf::from(target),
    };
    let mut cfg = V4l2Config {
        device,
        width: None,
        height: None,
        fps: None,
        format: None,
    };
    for (key, value) in pairs(query) {
        match key {
            "width" => cfg.width = Some(parse_dim(uri, key, value)?),
            "height" => cfg.height = Some(parse_dim(uri, key, value)?),
            "fps" => {
                cfg.fps = Some(parse_fps(value).ok_or_else(|| {
                    bad(
                        uri,
                        key,
                        value,
                        "frames per second, a number in 0.01..=1000",
                    )
                })?)
            }
            "format" => {
                cfg.format = Some(
                    value
                        .parse()
                        .map_err(|_| bad(uri, key, value, FORMAT_NAMES))?,
                )
            }
            _ => {
                return Err(SourceError::UnknownParam {
                    uri: uri.to_string(),
                    param: key.to_string(),
                    accepted: V4L2_PARAMS,
                })
            }
        }
    }
    Ok(cfg)
}

/// `csi://N?width=1280&height=720&fps=30` (those are the defaults).
fn parse_csi(uri: &str, rest: &str) -> Result<CsiConfig, SourceError> {
    let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
    let sensor = target
        .trim()
        .parse::<u32>()
        .map_err(|_| bad(uri, "sensor id", target, "a sensor number such as csi://0"))?;
    let mut cfg = CsiConfig {
        sensor,
        width: 1280,
        height: 720,
        fps: 30,
    };
    for (key, value) in pairs(query) {
        match key {
            "width" => cfg.width = parse_dim(uri, key, value)?,
            "height" => cfg.height = parse_dim(uri, key, value)?,
            "fps" => {
                cfg.fps = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f| (1..=1000).contains(f))
                    .ok_or_else(|| bad(uri, key, value, "whole frames per second, 1..=1000"))?
            }
            _ => {
                return Err(SourceError::UnknownParam {
                    uri: uri.to_string(),
                    param: key.to_string(),
                    accepted: CSI_PARAMS,
                })
            }
        }
    }
    Ok(cfg)
}

fn parse_synthetic(uri: &str, rest: &str) -> Result<SyntheticConfig, SourceError> {
    let query = match rest.split_once('?') {
        Some((_, q)) => q,
        None => "",
    };
    let mut cfg = SyntheticConfig::default();
    for (key, value) in pairs(query) {
        match key {
            "fps" => {
                cfg.fps = Some(parse_fps(value).ok_or_else(|| {
                    bad(
                        uri,
                        "fps",
                        value,
                        "frames per second, a number in 0.01..=1000",
                    )
                })?);
            }
            "size" => {
                let size = parse_size(value).ok_or_else(|| {
                    bad(
                        uri,
                        "size",
                        value,
                        "WIDTHxHEIGHT with both at least 1, e.g. 640x480",
                    )
                })?;
                cfg.width = size.0;
                cfg.height = size.1;
            }
            "frames" => {
                cfg.frames = Some(value.parse().map_err(|_| {
                    bad(uri, "frames", value, "a frame count, a whole number >= 0")
                })?);
            }
            "scene_every" => {
                let k: u64 = value.parse().ok().filter(|k| *k > 0).ok_or_else(|| {
                    bad(
                        uri,
                        "scene_every",
                        value,
                        "a frame count, a whole number >= 1",
                    )
                })?;
                cfg.scene_every = Some(k);
            }
            "fail_after" => {
                let n: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(
                        uri,
                        "fail_after",
                        value,
                        "a frame count, a whole number >= 1",
                    )
                })?;
                cfg.fail_after = Some(n);
            }
            "down_ms" => {
                let ms: u64 = value
                    .parse()
                    .ok()
                    .filter(|ms| *ms <= 3_600_000)
                    .ok_or_else(|| {
                        bad(
                            uri,
                            "down_ms",
                            value,
                            "milliseconds the simulated camera stays gone, 0..=3600000",
                        )
                    })?;
                cfg.down = std::time::Duration::from_millis(ms);
            }
            _ => {
                return Err(SourceError::UnknownParam {
                    uri: uri.to_string(),
                    param: key.to_string(),
                    accepted: SYNTHETIC_PARAMS,
                })
            }
        }
    }
    Ok(cfg)
}

/// Frames per second in `0.01..=1000` (wider values make no sense for pacing and overflow
/// `Duration`).
pub(super) fn parse_fps(s: &str) -> Option<f32> {
    s.trim().parse().ok().filter(|f| valid_fps(*f))
}

pub(super) fn valid_fps(f: f32) -> bool {
    (0.01..=1000.0).contains(&f)
}

fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_uris() {
        let Spec::V4l2(cfg) =
            parse("v4l2:///dev/video2?width=640&height=480&fps=15&format=YUY2").unwrap()
        else {
            panic!("not v4l2")
        };
        assert_eq!(
            cfg,
            V4l2Config {
                device: PathBuf::from("/dev/video2"),
                width: Some(640),
                height: Some(480),
                fps: Some(15.0),
                format: Some(PixelFormat::Yuyv),
            }
        );
        let Spec::V4l2(cfg) = parse("v4l2://1").unwrap() else {
            panic!("not v4l2")
        };
        assert_eq!(cfg.device, PathBuf::from("/dev/video1"));
        assert_eq!((cfg.width, cfg.format), (None, None));

        let e = parse("v4l2:///dev/video0?format=h264")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("format=`h264`") && e.contains("yuyv, mjpeg, nv12"),
            "{e}"
        );
        let e = parse("v4l2:///dev/video0?width=0").unwrap_err().to_string();
        assert!(e.contains("width=`0`"), "{e}");
        let e = parse("v4l2:///dev/video0?size=1").unwrap_err().to_string();
        assert!(e.contains("width, height, fps, format"), "{e}");
        assert!(parse("v4l2://?width=1").is_err());

        let Spec::Csi(cfg) = parse("csi://1?width=1920&height=1080&fps=60").unwrap() else {
            panic!("not csi")
        };
        assert_eq!(
            cfg,
            CsiConfig {
                sensor: 1,
                width: 1920,
                height: 1080,
                fps: 60
            }
        );
        let Spec::Csi(cfg) = parse("csi://0").unwrap() else {
            panic!("not csi")
        };
        assert_eq!((cfg.width, cfg.height, cfg.fps), (1280, 720, 30));
        assert!(parse("csi://0?fps=0").is_err());
        assert!(parse("csi://x").is_err());

        let Spec::Gst(p) = parse("gst:// videotestsrc ! appsink ").unwrap() else {
            panic!("not gst")
        };
        assert_eq!(p, "videotestsrc ! appsink");
        assert!(matches!(
            parse("file://a/clip.MKV").unwrap(),
            Spec::Video(_)
        ));
    }
}
