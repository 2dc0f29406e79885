//! Writing INT8 variants into a pack or overlay directory from a calibration table: the
//! onnxruntime Q/DQ model, the TensorRT Q/DQ model, the TensorRT calibration cache and the
//! table itself; and the text encoder's dynamic int8 model. `dishcam calibrate` and
//! `dishcam models pull lite` (from the committed table) both go through here.

use std::collections::BTreeMap;
use std::path::Path;

use dishcam_models::manifest::{Manifest, PackFile, Precision, Variant};
use dishcam_models::pack::{sha256_file, write_pack_file};
use tract_onnx::pb::ModelProto;

use crate::collect::CalibrationTable;
use crate::qdq::{self, ActivationFormat, QdqError};
use crate::trt_cache::CalibrationCache;

/// TensorRT version written in calibration caches by default (8.6.1, JetPack 6.0).
pub const DEFAULT_TRT_VERSION: u32 = 8601;

/// Errors writing artefacts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtefactError {
    #[error(transparent)]
    Graph(#[from] QdqError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Table(String),
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) -> Result<PackFile, ArtefactError> {
    write_pack_file(dir, rel, bytes).map_err(|source| ArtefactError::Io {
        path: dir.join(rel).display().to_string(),
        source,
    })
}

/// Writes the image encoder's int8 files under `dir/prefix` and returns the variant (file
/// names relative to `dir`). `extra` adds more artefacts (e.g. a report) by role.
pub fn write_image_int8(
    dir: &Path,
    prefix: &str,
    fp32: &ModelProto,
    table: &CalibrationTable,
    trt_version: u32,
    extra: BTreeMap<String, PackFile>,
) -> Result<Variant, ArtefactError> {
    let amax = table.amax();
    let means = &table.channel_means;
    let ort = qdq::encode(&qdq::quantise_static(
        fp32,
        &amax,
        means,
        &table.keep_fp32,
        &table.weight_rounding,
        ActivationFormat::OrtU8,
    )?);
    let trt = qdq::encode(&qdq::quantise_static(
        fp32,
        &amax,
        means,
        &table.keep_fp32,
        &table.weight_rounding,
        ActivationFormat::Int8Symmetric,
    )?);
    // Layers kept in fp32 get no Q/DQ in the TensorRT model either, and their inputs no cache
    // entry: TensorRT runs a layer without a range in higher precision.
    let mut cache = CalibrationCache::new(trt_version);
    for name in qdq::quantised_tensors(fp32, &table.keep_fp32)? {
        let a = table
            .tensors
            .get(&name)
            .ok_or_else(|| QdqError::MissingAmax(name.clone()))?;
        cache.push_amax(name, a.amax);
    }
    let table_json = serde_json::to_string_pretty(table).expect("tables serialise");
    let mut artefacts = extra;
    artefacts.insert(
        "table".into(),
        write(
            dir,
            &format!("{prefix}image_encoder.calibration.json"),
            table_json.as_bytes(),
        )?,
    );
    artefacts.insert(
        "tensorrt_onnx".into(),
        write(dir, &format!("{prefix}image_encoder.int8-trt.onnx"), &trt)?,
    );
    artefacts.insert(
        "tensorrt_cache".into(),
        write(
            dir,
            &format!("{prefix}image_encoder.trt-{trt_version}.calib"),
            cache.to_text().as_bytes(),
        )?,
    );
    Ok(Variant {
        onnx: write(dir, &format!("{prefix}image_encoder.int8.onnx"), &ort)?,
        note: format!(
            "{} calibration on {}; onnxruntime Q/DQ (uint8 activations, int8 per-channel weights)",
            table.method, table.data
        ),
        artefacts,
    })
}

/// Writes the text encoder's dynamic int8 model under `dir/prefix`.
pub fn write_text_int8(dir: &Path, prefix: &str, fp32: &[u8]) -> Result<Variant, ArtefactError> {
    let q = qdq::encode(&qdq::quantise_dynamic(&qdq::decode(fp32)?)?);
    Ok(Variant {
        onnx: write(dir, &format!("{prefix}text_encoder.int8.onnx"), &q)?,
        note: "dynamic int8: weights int8 per output column, activations quantised at run time"
            .into(),
        artefacts: BTreeMap::new(),
    })
}

/// The int8 variants of both encoders of a freshly built pack in `dir` (its manifest `m`), from
/// a committed calibration table (`table`, JSON), which must have been computed on this exact
/// fp32 image encoder. `models pull lite` calls it with the table it ships.
pub fn add_int8_from_table(dir: &Path, m: &mut Manifest, table: &str) -> Result<(), ArtefactError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ArtefactError::Io { path, source }
    };
    let table: CalibrationTable = serde_json::from_str(table)
        .map_err(|e| ArtefactError::Table(format!("not a calibration table ({e})")))?;
    if let Some(enc) = m.image_encoder.as_mut() {
        let file = enc
            .variants
            .get(&Precision::Fp32)
            .ok_or_else(|| ArtefactError::Table("the image encoder has no fp32 variant".into()))?
            .onnx
            .clone();
        let path = dir.join(&file.file);
        let sha = sha256_file(&path).map_err(io(&path))?;
        if sha != table.model_sha256 {
            return Err(ArtefactError::Table(format!(
                "the table was computed on an image encoder with sha256 {}, this one is {sha}; recompute it with scripts/calibrate_lite.sh",
                table.model_sha256
            )));
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let model = qdq::decode(&bytes)?;
        let v = write_image_int8(
            dir,
            "",
            &model,
            &table,
            DEFAULT_TRT_VERSION,
            BTreeMap::new(),
        )?;
        enc.variants.insert(Precision::Int8, v);
    }
    if let Some(enc) = m.text_encoder.as_mut() {
        if let Some(v) = enc.variants.get(&Precision::Fp32) {
            let path = dir.join(&v.onnx.file);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let v = write_text_int8(dir, "", &bytes)?;
            enc.variants.insert(Precision::Int8, v);
        }
    }
    Ok(())
}
