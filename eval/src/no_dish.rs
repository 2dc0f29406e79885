//! "No dish": how often the serving path keeps the dish on food photos and answers "no dish"
//! on photos and frames that show none, and the calibration of the pack's check.
//!
//! The evaluation runs each photo through [`DishClassifier::classify`], the path `classify`,
//! `watch` and `serve` take (the check, the head's photo preparation, the head), so its numbers
//! are the tool's. The calibration sets each threshold to the food score that the wanted share
//! of the given food photos reach (one threshold for photos at camera resolution, one for
//! thumbnails), from the check's encoder output on the photos as they come.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dishcam_capture::decode::{decode_file, DecodeOptions};
use dishcam_models::manifest::NoDishCheck;
use dishcam_models::Pack;
use dishcam_runtime::backend::Backend;
use dishcam_runtime::dataset::{list_class_folders, LabelledImage};
use dishcam_runtime::dish::food_score;
use dishcam_runtime::embedder::Embedder;
use dishcam_runtime::{DishClassifier, DishOptions, LoadOptions};
use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::evaluate::{EvalError, Split};

/// What [`evaluate_no_dish`] scores.
#[derive(Debug, Clone)]
pub struct NoDishEval {
    /// Folder-per-class food photos (each must keep a dish).
    pub food: Vec<PathBuf>,
    /// Folders of photos that show no dish (searched recursively).
    pub non_food: Vec<PathBuf>,
    /// Also the generated frames of [`generated_frames`].
    pub generated: bool,
    /// Which food photos, by the hash split `teach` uses.
    pub split: Split,
    pub holdout: f64,
    pub head: Option<String>,
    pub decode: DecodeOptions,
}

/// One photo set's result.
#[derive(Debug, Clone, Serialize)]
pub struct SetResult {
    pub set: String,
    /// "food" or "non-food".
    pub kind: &'static str,
    pub photos: usize,
    /// Answered with a dish.
    pub dish: usize,
    /// Food: share answered with a dish (recall); non-food: share answered "no dish".
    pub share: f64,
    /// Non-food photos answered with a dish (`name -> dish (probability)`); at most 40.
    pub wrong: Vec<String>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct NoDishEvaluation {
    pub sets: Vec<SetResult>,
    /// Food photos, all sets: share answered with a dish.
    pub food_recall: Option<f64>,
    /// Non-food photos and frames, all sets: share answered "no dish".
    pub non_food_rejection: Option<f64>,
    /// Whole `classify` call per photo (check, preparation, encoder, head), milliseconds.
    pub latency_ms_median: f64,
    pub latency_ms_p90: f64,
    pub check: Option<NoDishCheck>,
    pub prepare: Option<String>,
}

/// Frames that show no dish, made here: uniform colours (black as a camera with its lens
/// covered), noise, gradients, the synthetic camera's test patterns, and degenerate sizes (1x1,
/// 1x4000).
pub fn generated_frames() -> Vec<(String, RgbImage)> {
    let mut out = Vec::new();
    for (name, c) in [
        ("black", [0, 0, 0]),
        ("white", [255, 255, 255]),
        ("grey", [128, 128, 128]),
        ("red", [255, 0, 0]),
        ("green", [0, 255, 0]),
        ("blue", [0, 0, 255]),
        ("beige", [200, 180, 150]),
    ] {
        out.push((
            format!("uniform-{name}"),
            RgbImage::from_pixel(640, 480, Rgb(c)),
        ));
    }
    // A fixed xorshift stream: the same noise on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let noise = RgbImage::from_fn(640, 480, |_, _| {
        let v = next();
        Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    out.push(("noise-colour".into(), noise));
    let grey = RgbImage::from_fn(640, 480, |_, _| {
        let v = 96 + (next() % 64) as u8;
        Rgb([v, v, v])
    });
    out.push(("noise-grey".into(), grey));
    out.push((
        "gradient-horizontal".into(),
        RgbImage::from_fn(640, 480, |x, _| {
            let v = (x * 255 / 639) as u8;
            Rgb([v, v, v])
        }),
    ));
    out.push((
        "gradient-colour".into(),
        RgbImage::from_fn(640, 480, |x, y| {
            Rgb([(x * 255 / 639) as u8, (y * 255 / 479) as u8, 128])
        }),
    ));
    // The synthetic camera's test patterns (`watch synthetic://`): colour bars, checkerboard
    // and gradient, each with its moving square.
    for (scene, name) in ["bars", "checkerboard", "gradient"].into_iter().enumerate() {
        let mut frame = RgbImage::new(640, 480);
        dishcam_capture::render_pattern(40, scene as u64, 640, 480, &mut frame);
        out.push((format!("test-pattern-{name}"), frame));
    }
    out.push(("1x1".into(), RgbImage::from_pixel(1, 1, Rgb([120, 80, 40]))));
    out.push((
        "1x4000".into(),
        RgbImage::from_fn(4000, 1, |_, _| {
            let v = next();
            Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        }),
    ));
    out
}

/// Every photo under `dir` (recursively) with an image file extension, sorted.
fn photos_under(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| EvalError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]
                    .contains(&x.to_ascii_lowercase().as_str())
            }) {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: no photos (jpg, png, ...) found; give a folder of photos that show no dish",
            dir.display()
        )));
    }
    Ok(out)
}

fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs every photo of `req` through the serving path of `pack`'s image head.
pub fn evaluate_no_dish(
    pack: &Pack,
    backend: Arc<dyn Backend>,
    opts: &LoadOptions,
    req: &NoDishEval,
) -> Result<NoDishEvaluation, EvalError> {
    let mut dish = DishClassifier::load(
        pack,
        backend,
        opts,
        &DishOptions {
            head: req.head.as_deref(),
            ..DishOptions::default()
        },
    )?;
    let mut times = Vec::new();
    let mut sets = Vec::new();
    let answer = |dish: &mut DishClassifier,
                  img: &RgbImage,
                  times: &mut Vec<Duration>|
     -> Result<Option<String>, EvalError> {
        let t = std::time::Instant::now();
        let a = dish.classify(img, 1)?;
        times.push(t.elapsed());
        Ok(a.dish().map(|d| {
            let p = a.top.first().map_or(0.0, |s| s.probability);
            format!("{d} ({:.0}%)", p * 100.0)
        }))
    };
    for dir in &req.food {
        let items = food_photos(dir, req)?;
        let (mut photos, mut with_dish) = (0, 0);
        for item in &items {
            let Ok(img) = decode_file(&item.path, &req.decode) else {
                continue;
            };
            photos += 1;
            with_dish += usize::from(answer(&mut dish, &img, &mut times)?.is_some());
        }
        sets.push(SetResult {
            set: dir.display().to_string(),
            kind: "food",
            photos,
            dish: with_dish,
            share: with_dish as f64 / photos.max(1) as f64,
            wrong: Vec::new(),
        });
    }
    let mut non_food: Vec<(String, Vec<(String, RgbImage)>)> = Vec::new();
    for dir in &req.non_food {
        let mut imgs = Vec::new();
        for p in photos_under(dir)? {
            match decode_file(&p, &req.decode) {
                Ok(img) => imgs.push((
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    img,
                )),
                Err(e) => log::warn!("skipped: {e}"),
            }
        }
        non_food.push((dir.display().to_string(), imgs));
    }
    if req.generated {
        non_food.push(("generated frames".into(), generated_frames()));
    }
    for (set, imgs) in non_food {
        let mut wrong = Vec::new();
        for (name, img) in &imgs {
            let mut t = Vec::new();
            if let Some(d) = answer(&mut dish, img, &mut t)? {
                wrong.push(format!("{name} -> {d}"));
            }
        }
        let with_dish = wrong.len();
        wrong.truncate(40);
        sets.push(SetResult {
            set,
            kind: "non-food",
            photos: imgs.len(),
            dish: with_dish,
            share: 1.0 - with_dish as f64 / imgs.len().max(1) as f64,
            wrong,
        });
    }
    let pooled = |kind: &str| {
        let (n, d) = sets
            .iter()
            .filter(|s| s.kind == kind)
            .fold((0, 0), |(n, d), s| (n + s.photos, d + s.dish));
        (n > 0).then(|| match kind {
            "food" => d as f64 / n as f64,
            _ => 1.0 - d as f64 / n as f64,
        })
    };
    times.sort();
    Ok(NoDishEvaluation {
        food_recall: pooled("food"),
        non_food_rejection: pooled("non-food"),
        latency_ms_median: quantile_ms(&times, 0.5),
        latency_ms_p90: quantile_ms(&times, 0.9),
        check: dish.no_dish_check().cloned(),
        prepare: dish.preparation().map(|p| p.to_string()),
        sets,
    })
}

/// The photos of the folder-per-class `dir` in `req`'s split.
fn food_photos(dir: &Path, req: &NoDishEval) -> Result<Vec<LabelledImage>, EvalError> {
    Ok(list_class_folders(dir)?
        .into_iter()
        .filter(|i| req.split.keeps(&i.id, req.holdout))
        .collect())
}

/// Sets `base`'s two thresholds so that a share `recall` of `req`'s food photos (in its split)
/// keeps its dish in each regime (camera resolution, thumbnail), from the check's output on
/// each photo as it comes (cached by `embedder`). The calibrated check's `note` says how it was
/// made.
pub fn calibrate_no_dish(
    embedder: &Embedder,
    req: &NoDishEval,
    base: &NoDishCheck,
    recall: f32,
) -> Result<NoDishCheck, EvalError> {
    if !(0.5..1.0).contains(&recall) {
        return Err(EvalError::Invalid(format!(
            "recall {recall} must be in [0.5, 1)"
        )));
    }
    let mut food = Vec::new();
    for dir in &req.food {
        food.extend(food_photos(dir, req)?);
    }
    let logits = embedder.images(&food, Some(&base.encoder_output), None, &req.decode)?;
    let (mut full, mut thumb) = (Vec::new(), Vec::new());
    for (item, l) in food.iter().zip(&logits) {
        let Some(l) = l else { continue };
        let Ok((w, h)) = image::image_dimensions(&item.path) else {
            continue;
        };
        if w.min(h) < base.min_side {
            continue;
        }
        let score = food_score(l, &base.classes);
        if w.min(h) < base.thumbnail_below {
            thumb.push(score);
        } else {
            full.push(score);
        }
    }
    let at_recall = |scores: &mut Vec<f32>, fallback: f32| -> f32 {
        if scores.is_empty() {
            return fallback;
        }
        scores.sort_by(f32::total_cmp);
        // The largest threshold that keeps at least `recall` of the scores at or above it.
        let keep = (scores.len() as f64 * recall as f64).ceil() as usize;
        scores[scores.len() - keep.clamp(1, scores.len())]
    };
    let mut check = base.clone();
    check.threshold = at_recall(&mut full, base.threshold);
    check.thumbnail_threshold = at_recall(&mut thumb, base.thumbnail_threshold);
    check.food_recall = recall;
    check.note = format!(
        "thresholds keep {:.0}% of {} full-size and {} thumbnail food photos ({} split of {}) by `dishcam eval no-dish --calibrate {recall}`",
        recall * 100.0,
        full.len(),
        thumb.len(),
        req.split.as_str(),
        req.food
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(check)
}
