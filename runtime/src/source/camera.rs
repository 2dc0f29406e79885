//! Camera URIs (`v4l2://`, `csi://`, `gst://`): parsed, but no backend is implemented yet.

use super::SourceError;

/// The error for a camera URI: `NotBuilt` without the backend's feature, `Unsupported` with it
/// (the feature exists so builds can already select it; the capture code comes later).
pub(super) fn unavailable(uri: &str, scheme: &'static str, feature: &'static str) -> SourceError {
    let built = match feature {
        "camera-v4l" => cfg!(feature = "camera-v4l"),
        "camera-gst" => cfg!(feature = "camera-gst"),
        _ => false,
    };
    if built {
        SourceError::Unsupported {
            uri: uri.to_string(),
            reason: format!(
                "the {scheme} capture backend is not implemented yet (feature {feature} is on but empty); \
                 use file://, dir:// or synthetic:// for now"
            ),
        }
    } else {
        SourceError::NotBuilt {
            uri: uri.to_string(),
            scheme: scheme.to_string(),
            feature,
            hint: format!("rebuild with --features {feature}"),
        }
    }
}
