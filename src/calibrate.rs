//! `dishcam calibrate`: INT8 variants of a pack's encoders from real photos.
//!
//! The fp32 image encoder runs on calibration photos with every activation to be quantised
//! exposed; their |x| histograms give each tensor's amax (entropy, percentile, max or MSE). From
//! that table come an onnxruntime Q/DQ model (the pack's `int8` variant), a TensorRT explicit Q/DQ
//! model, a TensorRT implicit calibration cache, and a report of agreement with fp32 on held-out
//! photos that never took part in calibration. The text encoder gets dynamic int8 (weights int8,
//! activations quantised at run time), checked on texts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use dishcam_calibration::artefacts::{write_image_int8, write_text_int8};
use dishcam_calibration::collect::{CalibrationTable, Collector, Statistics};
use dishcam_calibration::qdq::{self, ActivationFormat};
use dishcam_calibration::Method;
use dishcam_models::manifest::PackFile;
use dishcam_models::pack::{sha256_file, write_atomic, write_pack_file, OverlayManifest};
use dishcam_models::{Pack, Precision};
use dishcam_runtime::backend::{self, Backend, BackendKind};
use dishcam_runtime::dataset::{is_holdout, stable_hash};
use dishcam_runtime::head::Classifier;
use dishcam_runtime::image_io::decode_file;
use dishcam_runtime::{ImageEncoder, LoadOptions, TextEncoder};
use image::RgbImage;
use serde::Serialize;

use crate::features::progress_bar;
use crate::{print_json, show, EngineArgs};

/// Fewest decoded calibration photos accepted.
pub const MIN_SAMPLES: usize = 32;
/// Calibration photos the sensitivity search measures on.
const SENSITIVITY_PHOTOS: usize = 32;
/// Embedding cosine a tensor must win, kept in fp32, to be kept.
const SENSITIVITY_MIN_GAIN: f64 = 5e-4;

#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Calibration photos: directories searched recursively (Food-101 class folders, or frames
    /// captured on the device). A hash of each file name splits them into calibration and
    /// validation photos.
    #[arg(long, required = true, num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Calibrator: entropy, percentile[:P] (default 99.99), max or mse.
    #[arg(long, default_value = "entropy")]
    pub method: String,
    /// Other calibrators to measure in the report (comma separated); only --method is written.
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<String>,
    /// Calibration photos to use (at most).
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Held-out photos for the agreement check (at most).
    #[arg(long, default_value_t = 200)]
    pub validate: usize,
    /// Fraction of photos held out for validation, by hash of the file name.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// TensorRT version in the calibration cache header (8601 = 8.6.1, 100300 = 10.3.0).
    #[arg(long, default_value_t = 8601)]
    pub trt_version: u32,
    /// Texts for the text encoder's check: a headerless `id,text,label` CSV (UPMC Food-101
    /// titles). Default: the head's class names.
    #[arg(long)]
    pub text_csv: Option<PathBuf>,
    /// Activations to leave in fp32: `auto` picks them by sensitivity (each tensor quantised
    /// alone, measured on calibration photos), up to --keep-fp32-max; or tensor names; or none.
    #[arg(long, default_value = "auto")]
    pub keep_fp32: String,
    /// Most activations `--keep-fp32 auto` may leave in fp32.
    #[arg(long, default_value_t = 2)]
    pub keep_fp32_max: usize,
    /// Write the artefacts to DIR instead of the pack's overlay.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One photo to calibrate or validate with.
struct Photo {
    path: PathBuf,
    key: String,
}

/// Lists files under `dirs` (recursively, hidden ones skipped), sorted.
fn list_photos(dirs: &[PathBuf]) -> anyhow::Result<Vec<Photo>> {
    let mut out = Vec::new();
    for dir in dirs {
        if dir.is_file() {
            out.push(dir.clone());
            continue;
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d)
                .with_context(|| format!("{}: cannot read the photo directory", show(&d)))?;
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.is_file() {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out
        .into_iter()
        .map(|path| {
            // Folder + file name: the same photo splits the same way wherever the set lives.
            let key = path
                .iter()
                .rev()
                .take(2)
                .map(|c| c.to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join("/");
            Photo { path, key }
        })
        .collect())
}

/// Agreement of one int8 variant with fp32 on the validation photos.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub method: String,
    pub photos: usize,
    /// Same top-1 class as fp32 (Food-101 head), fraction.
    pub top1: f64,
    /// Overlap of the top-5 classes with fp32's top-5, fraction (1 = the same five).
    pub top5: f64,
    pub cosine_mean: f64,
    pub cosine_min: f64,
    /// Tensors whose amax clips more than 0.1 % of calibration values.
    pub saturated_tensors: usize,
}

/// Median encode time in ms of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    pub backend: String,
    pub precision: String,
    pub threads: usize,
    pub median_ms: f64,
    pub runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextAgreement {
    pub texts: usize,
    pub cosine_mean: f64,
    pub cosine_min: f64,
    pub fp32_ms: f64,
    pub int8_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `dishcam.calibrate/1`.
    pub schema: &'static str,
    pub pack: String,
    pub method: String,
    pub calibration_photos: usize,
    pub skipped_photos: usize,
    pub validation_photos: usize,
    pub head: Option<String>,
    pub tensors: usize,
    /// Activations left in fp32 (see --keep-fp32).
    pub kept_fp32: Vec<String>,
    pub agreement: Vec<Agreement>,
    pub speed: Vec<Speed>,
    pub text: Option<TextAgreement>,
    pub written_to: String,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += (*x as f64) * (*y as f64);
        aa += (*x as f64).powi(2);
        bb += (*y as f64).powi(2);
    }
    if aa == 0.0 || bb == 0.0 {
        return if aa == bb { 1.0 } else { 0.0 };
    }
    ab / (aa.sqrt() * bb.sqrt())
}

fn top_indices(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx.truncate(k);
    idx
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Embeddings (and per-photo encode times) of `photos` with the encoder in `bytes`.
fn embed_with(
    pack: &Pack,
    backend: &dyn Backend,
    precision: Precision,
    threads: usize,
    bytes: &[u8],
    photos: &[RgbImage],
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<f64>)> {
    let opts = LoadOptions {
        precision,
        session: dishcam_runtime::backend::SessionOptions {
            threads: Some(threads),
            ..Default::default()
        },
    };
    let mut enc = ImageEncoder::load_model(
        pack,
        backend,
        &opts,
        &[],
        bytes,
        PathBuf::from(format!("image_encoder.{precision}.onnx")),
    )?;
    let mut out = Vec::with_capacity(photos.len());
    let mut times = Vec::with_capacity(photos.len());
    // One warm-up run: the first run allocates and (onnxruntime) finalises kernels.
    if let Some(p) = photos.first() {
        enc.preprocess(p)?;
        enc.run()?;
    }
    for p in photos {
        enc.preprocess(p)?;
        let t = Instant::now();
        let mut o = enc.run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        out.push(o.swap_remove(0));
    }
    Ok((out, times))
}

pub fn run(args: &CalibrateArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let method: Method = args.method.parse()?;
    let compare: Vec<Method> = args
        .compare
        .iter()
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    let pack = args.engine.open_pack()?;
    let enc = pack.manifest.image_encoder.clone().with_context(|| {
        format!(
            "pack '{}' has no image encoder to calibrate",
            pack.manifest.name
        )
    })?;
    let fp32_file = enc
        .variants
        .get(&Precision::Fp32)
        .map(|v| v.onnx.clone())
        .with_context(|| {
            format!(
                "pack '{}' has no fp32 image encoder; calibration starts from fp32 (re-export the pack with one)",
                pack.manifest.name
            )
        })?;
    let fp32 = pack.read_verified("image_encoder.variants.fp32", &fp32_file)?;
    let fp32_sha = sha256_file(&pack.path(&fp32_file))?;

    // Output directory first: a read-only destination fails before minutes of work.
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => pack.overlay_dir.clone(),
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("{}: cannot create the output directory", show(&out_dir)))?;
    let probe = out_dir.join(".dishcam-write-probe");
    std::fs::write(&probe, b"")
        .with_context(|| format!("{}: cannot write here; choose --out DIR", show(&out_dir)))?;
    let _ = std::fs::remove_file(&probe);

    // Inputs are read before minutes of work, so a wrong path fails at once.
    let texts = check_texts(&pack, args.text_csv.as_deref())?;
    let photos = list_photos(&args.images)?;
    let (mut calib, mut valid): (Vec<&Photo>, Vec<&Photo>) = photos
        .iter()
        .partition(|p| !is_holdout(&p.key, args.holdout));
    // Hash order mixes classes, so the first N are a fair sample.
    calib.sort_by_key(|p| stable_hash(&p.key));
    valid.sort_by_key(|p| stable_hash(&p.key));
    valid.truncate(args.validate);
    if calib.len() < MIN_SAMPLES.min(args.samples) || args.samples < MIN_SAMPLES {
        bail!(
            "{}: {} calibration photos found (after holding out {} for validation); calibration needs at least {MIN_SAMPLES}: add photos or point --images at a larger set",
            args.images.iter().map(|p| show(p)).collect::<Vec<_>>().join(", "),
            calib.len(),
            valid.len()
        );
    }

    let (backend, notice) = backend::open(args.engine.backend.parse()?)?;
    if let Some(n) = notice {
        eprintln!("note: {n}");
    }
    let decode = args.engine.decode_options();
    let mut collector = Collector::new(
        &enc,
        &fp32,
        &pack.path(&fp32_file),
        backend.as_ref(),
        &args.engine.load_options()?.session,
    )?;
    let b = progress_bar(quiet, args.samples.min(calib.len()), "calibration photos");
    let mut skipped = Vec::new();
    let mut sens_imgs: Vec<RgbImage> = Vec::new();
    for p in &calib {
        if collector.samples() >= args.samples {
            break;
        }
        match decode_file(&p.path, &decode) {
            Ok(img) => {
                collector.add(&img)?;
                if sens_imgs.len() < SENSITIVITY_PHOTOS {
                    sens_imgs.push(img);
                }
                b.inc(1);
            }
            Err(e) => skipped.push(e.to_string()),
        }
    }
    b.finish_and_clear();
    for s in skipped.iter().take(3) {
        log::warn!("skipped: {s}");
    }
    if collector.samples() < MIN_SAMPLES {
        bail!(
            "only {} calibration photos decoded ({} failed, e.g. {}); calibration needs at least {MIN_SAMPLES}",
            collector.samples(),
            skipped.len(),
            skipped.first().map_or("none", String::as_str)
        );
    }
    let stats: Statistics = collector.finish();
    let data = format!(
        "{} photos from {}",
        stats.samples,
        args.images
            .iter()
            .map(|p| show(p))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut methods = vec![method];
    methods.extend(compare.into_iter().filter(|m| *m != method));
    let mut tables: Vec<CalibrationTable> = methods
        .iter()
        .map(|m| CalibrationTable::compute(&stats, *m, &data, &fp32_sha))
        .collect::<Result<_, _>>()?;
    let model = qdq::decode(&fp32)?;
    let keep: BTreeSet<String> = match args.keep_fp32.as_str() {
        "none" => BTreeSet::new(),
        "auto" => match backend::backend(BackendKind::Onnxruntime) {
            Ok(ort) => sensitive_tensors(
                &pack,
                ort.as_ref(),
                &model,
                &fp32,
                &tables[0],
                &sens_imgs,
                args.keep_fp32_max,
                quiet,
            )?,
            Err(_) => BTreeSet::new(),
        },
        names => {
            let keep: BTreeSet<String> = names.split(',').map(str::to_string).collect();
            if let Some(bad) = keep.iter().find(|k| !tables[0].tensors.contains_key(*k)) {
                bail!("--keep-fp32: '{bad}' is not a calibrated tensor of this model; the report's table lists them");
            }
            keep
        }
    };
    for t in &mut tables {
        t.keep_float = keep.clone();
    }

    // Validation photos, decoded once.
    let mut val_imgs = Vec::new();
    for p in &valid {
        if let Ok(img) = decode_file(&p.path, &decode) {
            val_imgs.push(img);
        }
    }

    // Agreement and speed need onnxruntime (tract refuses int8).
    let ort = backend::backend(BackendKind::Onnxruntime).ok();
    let mut agreement = Vec::new();
    let mut speed = Vec::new();
    let head_name = pack.manifest.default_head.clone();
    let mut int8_bytes: Vec<Vec<u8>> = Vec::new();
    for t in &tables {
        int8_bytes.push(qdq::encode(&qdq::quantise_static(
            &model,
            &t.amax(),
            &t.channel_means,
            &t.keep_float,
            ActivationFormat::OrtU8,
        )?));
    }
    if let Some(ort) = ort.as_deref() {
        let b = progress_bar(quiet, tables.len() + 1, "agreement checks");
        let (ref_emb, _) = embed_with(&pack, ort, Precision::Fp32, 1, &fp32, &val_imgs)?;
        let head = head_name.as_deref().and_then(|h| pack.manifest.head(h));
        let mut classifier = match head {
            Some(h) => Some(Classifier::load(&pack, h, ort, &LoadOptions::default())?),
            None => None,
        };
        let mut scores = |e: &[f32]| -> anyhow::Result<Option<Vec<f32>>> {
            Ok(match classifier.as_mut() {
                Some(Classifier::EncoderOutput) | None => None,
                Some(c) => Some(c.scores(Some(e), None)?),
            })
        };
        let ref_scores: Vec<Option<Vec<f32>>> = ref_emb
            .iter()
            .map(|e| scores(e))
            .collect::<Result<_, _>>()?;
        b.inc(1);
        for (t, bytes) in tables.iter().zip(&int8_bytes) {
            let (emb, _) = embed_with(&pack, ort, Precision::Int8, 1, bytes, &val_imgs)?;
            let cos: Vec<f64> = emb
                .iter()
                .zip(&ref_emb)
                .map(|(a, b)| cosine(a, b))
                .collect();
            let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
            for (e, r) in emb.iter().zip(&ref_scores) {
                if let (Some(s), Some(r)) = (scores(e)?, r) {
                    n += 1;
                    let (a, b) = (top_indices(&s, 5), top_indices(r, 5));
                    top1 += usize::from(a[0] == b[0]);
                    top5 += a.iter().filter(|c| b.contains(c)).count();
                }
            }
            agreement.push(Agreement {
                method: t.method.clone(),
                photos: emb.len(),
                top1: top1 as f64 / n.max(1) as f64,
                top5: top5 as f64 / (5 * n).max(1) as f64,
                cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
                cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
                saturated_tensors: t.tensors.values().filter(|a| a.saturation > 1e-3).count(),
            });
            b.inc(1);
        }
        b.finish_and_clear();
        // Speed: fp32 and int8 on onnxruntime at 1 and 2 threads, fp32 on tract; runs
        // interleaved per configuration on the same photos.
        let timing: Vec<RgbImage> = val_imgs.iter().take(50).cloned().collect();
        let b = progress_bar(quiet, 5, "speed runs");
        for threads in [1, 2] {
            for (precision, bytes) in [(Precision::Fp32, &fp32), (Precision::Int8, &int8_bytes[0])]
            {
                let (_, times) = embed_with(&pack, ort, precision, threads, bytes, &timing)?;
                speed.push(Speed {
                    backend: "onnxruntime".into(),
                    precision: precision.to_string(),
                    threads,
                    runs: times.len(),
                    median_ms: median(times),
                });
                b.inc(1);
            }
        }
        let tract = backend::backend(BackendKind::Tract)?;
        let (_, times) = embed_with(&pack, tract.as_ref(), Precision::Fp32, 1, &fp32, &timing)?;
        speed.push(Speed {
            backend: "tract".into(),
            precision: "fp32".into(),
            threads: 1,
            runs: times.len(),
            median_ms: median(times),
        });
        b.finish_and_clear();
    } else {
        eprintln!("note: onnxruntime is not available, so the int8 variants were not checked against fp32; run `dishcam models pull lite` or set ORT_DYLIB_PATH");
    }

    // The text encoder: dynamic int8.
    let mut text_fp32: Option<Vec<u8>> = None;
    let mut text_report = None;
    if let Some(te) = &pack.manifest.text_encoder {
        if let Some(v) = te.variants.get(&Precision::Fp32) {
            let bytes = pack.read_verified("text_encoder.variants.fp32", &v.onnx)?;
            if let Some(ort) = ort.as_deref() {
                let q = qdq::encode(&qdq::quantise_dynamic(&qdq::decode(&bytes)?)?);
                text_report = Some(text_agreement(&pack, ort, &bytes, &q, &texts)?);
            }
            text_fp32 = Some(bytes);
        }
    }

    // Write the artefacts: files first, then one atomic manifest update.
    // A fresh directory per run: the overlay keeps naming the previous files, intact, until
    // its manifest is replaced.
    let primary = &tables[0];
    let tag = primary.method.replace([':', '.'], "_");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rel = format!("calibration/{tag}-{stamp}");
    let dir = out_dir.join(&rel);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", show(&dir)))?;
    let report = Report {
        schema: "dishcam.calibrate/1",
        pack: pack.manifest.name.clone(),
        method: primary.method.clone(),
        calibration_photos: stats.samples,
        skipped_photos: skipped.len(),
        validation_photos: val_imgs.len(),
        head: head_name,
        tensors: primary.tensors.len(),
        kept_fp32: primary.keep_float.iter().cloned().collect(),
        agreement,
        speed,
        text: text_report,
        written_to: show(&dir),
    };
    let w = |name: &str, bytes: &[u8]| -> anyhow::Result<PackFile> {
        write_pack_file(&out_dir, &format!("{rel}/{name}"), bytes)
            .with_context(|| format!("{}: cannot write {name}", show(&dir)))
    };
    let report_md = w("report.md", report_markdown(&report).as_bytes())?;
    w(
        "report.json",
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let image_variant = write_image_int8(
        &out_dir,
        &format!("{rel}/"),
        &model,
        primary,
        args.trt_version,
        BTreeMap::from([("report".to_string(), report_md)]),
    )?;
    let text_variant = match &text_fp32 {
        Some(bytes) => Some(write_text_int8(&out_dir, &format!("{rel}/"), bytes)?),
        None => None,
    };
    if args.out.is_none() {
        let opath = pack
            .overlay_dir
            .join(dishcam_models::pack::OVERLAY_MANIFEST);
        let mut overlay: OverlayManifest = match std::fs::read_to_string(&opath) {
            Ok(t) => toml::from_str(&t)
                .with_context(|| format!("{}: not a valid overlay", show(&opath)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OverlayManifest::default(),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", show(&opath))),
        };
        overlay
            .image_encoder_variants
            .insert(Precision::Int8, image_variant);
        if let Some(v) = text_variant {
            overlay.text_encoder_variants.insert(Precision::Int8, v);
        }
        let problems = pack.with_overlay(overlay.clone()).validate();
        if !problems.is_empty() {
            bail!(
                "the calibrated pack would not validate: {}",
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let previous: Vec<String> = overlay_calibration_dirs(&opath);
        write_atomic(&opath, toml::to_string_pretty(&overlay)?.as_bytes())
            .with_context(|| format!("{}: cannot write", show(&opath)))?;
        // Earlier calibrations the overlay no longer names.
        for old in previous.into_iter().filter(|d| *d != rel) {
            let _ = std::fs::remove_dir_all(pack.overlay_dir.join(old));
        }
    }
    if args.json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        print!("{}", report_markdown(&report));
        println!("Written to {}", report.written_to);
    }
    Ok(ExitCode::SUCCESS)
}

/// The activations whose quantisation costs the most: each is left in fp32 alone (every other
/// tensor int8) and the embedding cosine with fp32 measured on calibration photos; the ones that
/// gain at least SENSITIVITY_MIN_GAIN, best first, up to `max`.
#[allow(clippy::too_many_arguments)]
fn sensitive_tensors(
    pack: &Pack,
    ort: &dyn Backend,
    model: &dishcam_calibration::qdq::ModelProto,
    fp32: &[u8],
    table: &CalibrationTable,
    photos: &[RgbImage],
    max: usize,
    quiet: bool,
) -> anyhow::Result<BTreeSet<String>> {
    if max == 0 || photos.is_empty() {
        return Ok(BTreeSet::new());
    }
    let (reference, _) = embed_with(pack, ort, Precision::Fp32, 1, fp32, photos)?;
    let amax = table.amax();
    let mean_cosine = |keep: &BTreeSet<String>| -> anyhow::Result<f64> {
        let bytes = qdq::encode(&qdq::quantise_static(
            model,
            &amax,
            &table.channel_means,
            keep,
            ActivationFormat::OrtU8,
        )?);
        let (emb, _) = embed_with(pack, ort, Precision::Int8, 1, &bytes, photos)?;
        Ok(emb
            .iter()
            .zip(&reference)
            .map(|(a, b)| cosine(a, b))
            .sum::<f64>()
            / emb.len() as f64)
    };
    let base = mean_cosine(&BTreeSet::new())?;
    let b = progress_bar(quiet, table.tensors.len(), "sensitivity");
    let mut gains = Vec::new();
    for t in table.tensors.keys() {
        let keep = BTreeSet::from([t.clone()]);
        gains.push((mean_cosine(&keep)? - base, t.clone()));
        b.inc(1);
    }
    b.finish_and_clear();
    gains.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (g, t) in gains.iter().take(5) {
        log::info!("sensitivity: {t} in fp32 gains {g:.5} cosine");
    }
    Ok(gains
        .into_iter()
        .take(max)
        .filter(|(g, _)| *g >= SENSITIVITY_MIN_GAIN)
        .map(|(_, t)| t)
        .collect())
}

/// The `calibration/<run>` directories an overlay manifest names now.
fn overlay_calibration_dirs(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let Ok(o) = toml::from_str::<OverlayManifest>(&text) else {
        return vec![];
    };
    o.image_encoder_variants
        .values()
        .chain(o.text_encoder_variants.values())
        .filter_map(|v| {
            let mut parts = v.onnx.file.split('/');
            match (parts.next(), parts.next()) {
                (Some("calibration"), Some(run)) => Some(format!("calibration/{run}")),
                _ => None,
            }
        })
        .collect()
}

/// Texts for the text encoder check: the CSV's texts, or the default head's class names.
fn check_texts(pack: &Pack, csv: Option<&Path>) -> anyhow::Result<Vec<String>> {
    if let Some(csv) = csv {
        let (rows, _) = dishcam_runtime::dataset::read_text_csv(csv)?;
        let mut rows: Vec<_> = rows.into_iter().map(|r| r.text).collect();
        rows.sort_by_key(|t| stable_hash(t));
        rows.truncate(500);
        return Ok(rows);
    }
    let head = pack
        .manifest
        .default_head
        .as_deref()
        .and_then(|h| pack.manifest.head(h));
    Ok(match head {
        Some(h) => dishcam_runtime::head::read_labels(pack, h)?
            .into_iter()
            .map(|l| l.replace('_', " "))
            .collect(),
        None => vec!["a plate of food".into()],
    })
}

fn text_agreement(
    pack: &Pack,
    ort: &dyn Backend,
    fp32: &[u8],
    int8: &[u8],
    texts: &[String],
) -> anyhow::Result<TextAgreement> {
    let one = LoadOptions {
        session: dishcam_runtime::backend::SessionOptions {
            threads: Some(1),
            ..Default::default()
        },
        ..LoadOptions::default()
    };
    let mut a = TextEncoder::load_model(pack, ort, &one, fp32, "text_encoder.fp32.onnx".into())?;
    let int8_opts = LoadOptions {
        precision: Precision::Int8,
        ..one.clone()
    };
    let mut b =
        TextEncoder::load_model(pack, ort, &int8_opts, int8, "text_encoder.int8.onnx".into())?;
    let (mut cos, mut ta, mut tb) = (Vec::new(), Vec::new(), Vec::new());
    for t in texts {
        let enc = a.tokenize(t)?;
        let s = Instant::now();
        let x = a.run(&enc)?;
        ta.push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        let y = b.run(&enc)?;
        tb.push(s.elapsed().as_secs_f64() * 1e3);
        cos.push(cosine(&x, &y));
    }
    Ok(TextAgreement {
        texts: texts.len(),
        cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        fp32_ms: median(ta),
        int8_ms: median(tb),
    })
}

/// The report as Markdown.
pub fn report_markdown(r: &Report) -> String {
    let mut s = format!(
        "# INT8 calibration of pack `{}`\n\nMethod **{}** on {} photos ({} skipped); {} tensors. Agreement with fp32 on {} held-out photos (head: {}).\n\n",
        r.pack,
        r.method,
        r.calibration_photos,
        r.skipped_photos,
        r.tensors,
        r.validation_photos,
        r.head.as_deref().unwrap_or("none")
    );
    if !r.kept_fp32.is_empty() {
        s.push_str(&format!(
            "Left in fp32 (most sensitive): {}.\n\n",
            r.kept_fp32.join(", ")
        ));
    }
    if !r.agreement.is_empty() {
        s.push_str("| method | top-1 agreement | top-5 overlap | cosine mean | cosine min | tensors >0.1% clipped |\n|---|---|---|---|---|---|\n");
        for a in &r.agreement {
            s.push_str(&format!(
                "| {} | {:.2} % | {:.2} % | {:.4} | {:.4} | {} |\n",
                a.method,
                a.top1 * 100.0,
                a.top5 * 100.0,
                a.cosine_mean,
                a.cosine_min,
                a.saturated_tensors
            ));
        }
        s.push('\n');
    }
    if !r.speed.is_empty() {
        s.push_str("| backend | precision | threads | median encode (ms) | runs |\n|---|---|---|---|---|\n");
        for v in &r.speed {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {} |\n",
                v.backend, v.precision, v.threads, v.median_ms, v.runs
            ));
        }
        s.push('\n');
    }
    if let Some(t) = &r.text {
        s.push_str(&format!(
            "Text encoder, dynamic int8: cosine with fp32 mean {:.4}, min {:.4} on {} texts; median {:.2} ms fp32, {:.2} ms int8 (1 thread).\n\n",
            t.cosine_mean, t.cosine_min, t.texts, t.fp32_ms, t.int8_ms
        ));
    }
    s
}
