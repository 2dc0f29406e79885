//! Source URIs to source specifications (no I/O beyond checking whether a bare path is a
//! directory).

use std::path::{Path, PathBuf};

use super::synthetic::SyntheticConfig;
use super::SourceError;

/// The accepted source forms, for error messages.
pub const ACCEPTED_URIS: &str = "synthetic://?fps=30&size=640x480, file://PHOTO, dir://DIR, \
     dir://DIR/*.jpg, v4l2:///dev/video0, csi://0, gst://PIPELINE, or a bare file or directory path";

const SYNTHETIC_PARAMS: &str = "fps, size, frames, scene_every, fail_after, down_ms";
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
    Camera {
        scheme: &'static str,
        feature: &'static str,
    },
}

pub(super) fn parse(uri: &str) -> Result<Spec, SourceError> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(path_spec(Path::new(uri), false));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "synthetic" => parse_synthetic(uri, rest).map(Spec::Synthetic),
        "file" => Ok(path_spec(Path::new(rest), false)),
        "dir" => Ok(path_spec(Path::new(rest), true)),
        "v4l2" => {
            require_target(
                uri,
                rest,
                "device",
                "a device path such as v4l2:///dev/video0",
            )?;
            Ok(Spec::Camera {
                scheme: "v4l2",
                feature: "camera-v4l",
            })
        }
        "csi" => {
            if rest.parse::<u32>().is_err() {
                return Err(bad(
                    uri,
                    "sensor id",
                    rest,
                    "a sensor number such as csi://0",
                ));
            }
            // Jetson CSI sensors are read through GStreamer (nvarguscamerasrc).
            Ok(Spec::Camera {
                scheme: "csi",
                feature: "camera-gst",
            })
        }
        "gst" => {
            require_target(
                uri,
                rest,
                "pipeline",
                "a GStreamer pipeline ending in appsink",
            )?;
            Ok(Spec::Camera {
                scheme: "gst",
                feature: "camera-gst",
            })
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

fn parse_synthetic(uri: &str, rest: &str) -> Result<SyntheticConfig, SourceError> {
    let query = match rest.split_once('?') {
        Some((_, q)) => q,
        None => "",
    };
    let mut cfg = SyntheticConfig::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
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
                let ms: u64 = value.parse().ok().filter(|ms| *ms <= 3_600_000).ok_or_else(|| {
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
