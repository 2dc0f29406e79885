//! The Food-101 heads that `dishcam models pull lite` installs with the encoders. They were
//! fitted on `../shared/data` by `scripts/fit_lite_heads.sh` (the exact commands; numbers in each
//! `head.json`) and are compiled into the binary, so a fresh clone classifies Food-101 dishes.

use std::collections::BTreeMap;
use std::path::Path;

use dishcam_models::manifest::{Head, HeadKind, LateFusion, PhotoPreparation, Precision, Variant};
use dishcam_models::pack::write_pack_file;

/// One head's files as committed under `install/assets/lite/heads/<name>/`.
pub struct BundledHead {
    pub name: &'static str,
    pub kind: HeadKind,
    pub onnx: Option<&'static [u8]>,
    pub labels: &'static str,
    pub exemplars: Option<&'static [u8]>,
    /// `head.json`: what `dishcam teach` reported, with `temperature` (and `fuse`).
    pub meta: &'static str,
}

macro_rules! asset {
    ($name:literal, $file:literal) => {
        include_bytes!(concat!("../assets/lite/heads/", $name, "/", $file))
    };
}
macro_rules! asset_str {
    ($name:literal, $file:literal) => {
        include_str!(concat!("../assets/lite/heads/", $name, "/", $file))
    };
}

/// Every bundled head, image head first.
pub const LITE_HEADS: &[BundledHead] = &[
    BundledHead {
        name: "food101",
        kind: HeadKind::Image,
        onnx: Some(asset!("food101", "head.onnx")),
        labels: asset_str!("food101", "labels.txt"),
        exemplars: Some(asset!("food101", "exemplars.safetensors")),
        meta: asset_str!("food101", "head.json"),
    },
    BundledHead {
        name: "food101-text",
        kind: HeadKind::Text,
        onnx: Some(asset!("food101-text", "head.onnx")),
        labels: asset_str!("food101-text", "labels.txt"),
        exemplars: Some(asset!("food101-text", "exemplars.safetensors")),
        meta: asset_str!("food101-text", "head.json"),
    },
    BundledHead {
        name: "food101-fusion",
        kind: HeadKind::EarlyFusion,
        onnx: Some(asset!("food101-fusion", "head.onnx")),
        labels: asset_str!("food101-fusion", "labels.txt"),
        exemplars: None,
        meta: asset_str!("food101-fusion", "head.json"),
    },
    BundledHead {
        name: "food101-fusion-late",
        kind: HeadKind::LateFusion,
        onnx: None,
        labels: asset_str!("food101-fusion-late", "labels.txt"),
        exemplars: None,
        meta: asset_str!("food101-fusion-late", "head.json"),
    },
];

/// The pack's default image, text and fusion heads among [`LITE_HEADS`].
pub const DEFAULT_IMAGE_HEAD: &str = "food101";
pub const DEFAULT_TEXT_HEAD: &str = "food101-text";
/// Late fusion: 86.3 % vs early 84.2 % top-1 on the class-paired proxy (see `head.json`).
pub const DEFAULT_FUSION_HEAD: Option<&str> = Some("food101-fusion-late");

/// Writes the bundled heads into the pack directory `dir` and returns their manifest entries.
pub fn write_lite_heads(dir: &Path) -> std::io::Result<Vec<Head>> {
    let bad = |name: &str, what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bundled head '{name}': {what}"),
        )
    };
    let mut heads = Vec::new();
    for b in LITE_HEADS {
        let meta: serde_json::Value =
            serde_json::from_str(b.meta).map_err(|e| bad(b.name, format!("head.json: {e}")))?;
        let temperature = meta["temperature"].as_f64().unwrap_or(1.0) as f32;
        let fuse = match meta.get("fuse") {
            Some(f) => Some(
                serde_json::from_value::<LateFusion>(f.clone())
                    .map_err(|e| bad(b.name, format!("head.json fuse: {e}")))?,
            ),
            None => None,
        };
        let prepare = match meta.get("prepare") {
            Some(serde_json::Value::Null) | None => None,
            Some(p) => Some(
                serde_json::from_value::<PhotoPreparation>(p.clone())
                    .map_err(|e| bad(b.name, format!("head.json prepare: {e}")))?,
            ),
        };
        let file = |f: &str| format!("heads/{}/{f}", b.name);
        let variants = match b.onnx {
            Some(bytes) => BTreeMap::from([(
                Precision::Fp32,
                Variant {
                    onnx: write_pack_file(dir, &file("head.onnx"), bytes)?,
                    note: "fitted by scripts/fit_lite_heads.sh".into(),
                    artefacts: BTreeMap::new(),
                },
            )]),
            None => BTreeMap::new(),
        };
        let exemplars = match b.exemplars {
            Some(bytes) => Some(write_pack_file(dir, &file("exemplars.safetensors"), bytes)?),
            None => None,
        };
        heads.push(Head {
            name: b.name.into(),
            kind: b.kind,
            encoder_output: None,
            variants,
            labels: write_pack_file(dir, &file("labels.txt"), b.labels.as_bytes())?,
            classes: b.labels.lines().count(),
            temperature,
            exemplars,
            fuse,
            prepare,
        });
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_heads_are_complete_and_consistent() {
        let food101: Vec<&str> = LITE_HEADS[0].labels.lines().collect();
        assert_eq!(food101.len(), 101);
        assert_eq!(food101[0], "apple_pie");
        for b in LITE_HEADS {
            assert_eq!(
                b.labels.lines().collect::<Vec<_>>(),
                food101,
                "{} has the Food-101 classes in order",
                b.name
            );
            let sig = b
                .onnx
                .map(|o| dishcam_models::onnx::signature_of(o, b.name).expect("head.onnx decodes"));
            if let Some(sig) = sig {
                assert_eq!(sig.outputs[0].shape_text(), "[batch, 101]", "{}", b.name);
            }
            let meta: serde_json::Value = serde_json::from_str(b.meta).unwrap();
            let t = meta["temperature"].as_f64().unwrap();
            assert!(t > 0.0 && t.is_finite(), "{}: temperature {t}", b.name);
        }
    }
}
