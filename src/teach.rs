//! `dishcam teach`: fit a dish head on the device from folder-per-class photos, with the same
//! encoder code path that serves predictions, and save it in the pack's user overlay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use dishcam_models::manifest::{Head, HeadKind, Precision, Variant};
use dishcam_models::onnx::encode;
use dishcam_models::pack::{write_atomic, write_pack_file, OverlayManifest, OVERLAY_MANIFEST};
use dishcam_models::Pack;
use dishcam_runtime::classify::{softmax_in_place, top_k};
use dishcam_runtime::dataset::{
    degrade, is_holdout, list_class_folders, read_text_csv, LabelledImage, LabelledText,
};
use dishcam_runtime::fit::{
    balanced_weights, fit_logistic, fit_temperature, nll_at_temperature, Dataset, FitConfig,
    LinearHead,
};
use dishcam_runtime::image_io::{decode_file, DecodeOptions};
use dishcam_runtime::{Backend, ImageEncoder, LoadOptions, TextEncoder};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{print_json, show, EngineArgs};

#[derive(Args)]
pub struct TeachArgs {
    /// Folder-per-class photo sets (DIR/<class>/<photo>); may be given several times.
    #[arg(
        long = "images",
        required_unless_present = "text_csv",
        conflicts_with = "text_csv"
    )]
    images: Vec<PathBuf>,
    /// Fit a text head instead, on a headerless `id,text,label` CSV (UPMC Food-101's titles).
    #[arg(long)]
    text_csv: Option<PathBuf>,
    /// Name of the head to create or replace.
    #[arg(long, default_value = "dishes")]
    name: String,
    /// Class ids, one per line, fixing the head's class order (default: sorted folder names).
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Fraction of photo ids held out for validation (by a hash of the id).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Degrade every training photo to a centred PX x PX square first (Food-101's 64 px set was
    /// made this way; train all classes at one degradation so sharpness does not leak the class).
    #[arg(long)]
    degrade: Option<u32>,
    /// L2 penalty on standardised weights.
    #[arg(long, default_value_t = 1e-3)]
    l2: f64,
    #[arg(long, default_value_t = 300)]
    max_iters: u64,
    /// Write head.onnx, labels.txt and head.json to DIR instead of the pack's overlay.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Make the new head the pack's default head.
    #[arg(long)]
    default: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Embeds `items` with one encoder per worker thread; `None` where a photo failed to decode.
/// With `output`, returns that encoder output (e.g. a head's logits) instead of the embedding.
#[allow(clippy::too_many_arguments)]
pub fn embed_images(
    pack: &Pack,
    backend: &dyn Backend,
    opts: &LoadOptions,
    items: &[LabelledImage],
    output: Option<&str>,
    degrade_px: Option<u32>,
    decode: &DecodeOptions,
    workers: usize,
    quiet: bool,
) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(items.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} photos {elapsed} (eta {eta})")
            .expect("valid template"),
    );
    let workers = workers.max(1).min(items.len().max(1));
    let chunk = items.len().div_ceil(workers).max(1);
    let results: Vec<anyhow::Result<Vec<Option<Vec<f32>>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let bar = bar.clone();
                s.spawn(move || -> anyhow::Result<Vec<Option<Vec<f32>>>> {
                    let extra: Vec<&str> = output.into_iter().collect();
                    let mut enc = ImageEncoder::load(pack, backend, opts, &extra)?;
                    let mut out = Vec::with_capacity(part.len());
                    for item in part {
                        match decode_file(&item.path, decode) {
                            Ok(img) => {
                                let img = match degrade_px {
                                    Some(px) => degrade(&img, px),
                                    None => img,
                                };
                                enc.preprocess(&img)?;
                                let mut outs = enc.run()?;
                                out.push(outs.pop());
                            }
                            Err(e) => {
                                log::warn!("skipped: {e}");
                                out.push(None);
                            }
                        }
                        bar.inc(1);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("embedding worker"))
            .collect()
    });
    bar.finish_and_clear();
    let mut all = Vec::with_capacity(items.len());
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Reads a class list file (one id per line), or derives it from the examples' classes.
pub fn class_list<'a>(
    file: Option<&Path>,
    found: impl Iterator<Item = &'a str>,
) -> anyhow::Result<Vec<String>> {
    let classes: Vec<String> = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("{}: cannot read the class list", show(f)))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => {
            let mut v: Vec<String> = found.map(str::to_string).collect();
            v.sort();
            v.dedup();
            v
        }
    };
    if classes.len() < 2 {
        bail!("a head needs at least 2 classes, found {}: {:?}; add folders of photos for more dishes", classes.len(), classes);
    }
    Ok(classes)
}

/// Every example's class must be in the class list.
fn check_classes<'a>(
    classes: &[String],
    mut found: impl Iterator<Item = (&'a str, String)>,
) -> anyhow::Result<()> {
    if let Some((class, place)) = found.find(|(c, _)| !classes.iter().any(|k| k == c)) {
        bail!("{place}: class '{class}' is not in the class list; add it to --classes or remove those examples");
    }
    Ok(())
}

/// Embeds texts with one text encoder per worker thread.
fn embed_texts(
    pack: &Pack,
    backend: &dyn Backend,
    opts: &LoadOptions,
    rows: &[LabelledText],
    workers: usize,
    quiet: bool,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(rows.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} texts {elapsed} (eta {eta})")
            .expect("valid template"),
    );
    let chunk = rows.len().div_ceil(workers.max(1)).max(1);
    let results: Vec<anyhow::Result<Vec<Vec<f32>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| {
                let bar = bar.clone();
                s.spawn(move || -> anyhow::Result<Vec<Vec<f32>>> {
                    let mut enc = TextEncoder::load(pack, backend, opts)?;
                    part.iter()
                        .map(|r| {
                            bar.inc(1);
                            Ok(enc.encode(&r.text)?)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("embedding worker"))
            .collect()
    });
    bar.finish_and_clear();
    let mut all = Vec::with_capacity(rows.len());
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

pub fn run(args: &TeachArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if !(0.0..1.0).contains(&args.holdout) {
        bail!("--holdout must be in [0, 1), got {}", args.holdout);
    }
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let workers = args
        .engine
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let single = LoadOptions {
        session: dishcam_runtime::backend::SessionOptions { threads: Some(1) },
        ..opts.clone()
    };
    let t0 = Instant::now();
    // (id, class, embedding) of every example, from photos or from texts.
    let (kind, classes, examples, skipped) = match &args.text_csv {
        None => {
            let mut items = Vec::new();
            for dir in &args.images {
                items.extend(list_class_folders(dir)?);
            }
            let classes = class_list(
                args.classes.as_deref(),
                items.iter().map(|i| i.class.as_str()),
            )?;
            check_classes(
                &classes,
                items.iter().map(|i| (i.class.as_str(), show(&i.path))),
            )?;
            let embeddings = embed_images(
                &pack,
                backend.as_ref(),
                &single,
                &items,
                None,
                args.degrade,
                &args.engine.decode_options(),
                workers,
                quiet,
            )?;
            let skipped = embeddings.iter().filter(|e| e.is_none()).count();
            let ex: Vec<_> = items
                .into_iter()
                .zip(embeddings)
                .map(|(i, e)| (i.id, i.class, e))
                .collect();
            (HeadKind::Image, classes, ex, skipped)
        }
        Some(csv) => {
            let (rows, bad) = read_text_csv(csv)?;
            if bad > 0 {
                log::warn!("{}: {bad} malformed row(s) skipped", show(csv));
            }
            let classes = class_list(
                args.classes.as_deref(),
                rows.iter().map(|r| r.class.as_str()),
            )?;
            check_classes(
                &classes,
                rows.iter()
                    .map(|r| (r.class.as_str(), format!("{}: row '{}'", show(csv), r.id))),
            )?;
            let embeddings = embed_texts(&pack, backend.as_ref(), &single, &rows, workers, quiet)?;
            let ex: Vec<_> = rows
                .into_iter()
                .zip(embeddings)
                .map(|(r, e)| (r.id, r.class, Some(e)))
                .collect();
            (HeadKind::Text, classes, ex, bad)
        }
    };
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let embed_s = t0.elapsed().as_secs_f64();
    if skipped > 0 {
        log::warn!("{skipped} example(s) could not be read and were skipped");
    }
    let dim = examples
        .iter()
        .filter_map(|e| e.2.as_ref())
        .next()
        .map(Vec::len)
        .context("no example could be read")?;
    let (mut train_x, mut train_y, mut val_x, mut val_y) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, class, e) in &examples {
        let Some(e) = e else { continue };
        let y = index[class.as_str()];
        if is_holdout(id, args.holdout) {
            val_x.extend_from_slice(e);
            val_y.push(y);
        } else {
            train_x.extend_from_slice(e);
            train_y.push(y);
        }
    }
    let weights = balanced_weights(&train_y, classes.len());
    let t1 = Instant::now();
    let (head, report) = fit_logistic(
        &Dataset {
            features: &train_x,
            labels: &train_y,
            weights: &weights,
            dim,
            classes: classes.len(),
        },
        &FitConfig {
            l2: args.l2,
            max_iters: args.max_iters,
            ..FitConfig::default()
        },
        None,
    )?;
    let fit_s = t1.elapsed().as_secs_f64();
    let val_logits: Vec<f32> = val_x
        .chunks_exact(dim)
        .flat_map(|r| head.logits(r))
        .collect();
    let temperature = if val_y.is_empty() {
        1.0
    } else {
        fit_temperature(&val_logits, &val_y, classes.len())
    };
    let top1 = accuracy(&val_logits, &val_y, classes.len(), 1);
    let summary = json!({
        "schema": "dishcam.teach/1",
        "head": args.name,
        "classes": classes.len(),
        "train": train_y.len(),
        "holdout": val_y.len(),
        "skipped": skipped,
        "holdout_top1": top1,
        "holdout_top5": accuracy(&val_logits, &val_y, classes.len(), 5),
        "holdout_nll": if val_y.is_empty() { None } else { Some(nll_at_temperature(&val_logits, &val_y, classes.len(), 1.0)) },
        "holdout_nll_scaled": if val_y.is_empty() { None } else { Some(nll_at_temperature(&val_logits, &val_y, classes.len(), temperature as f64)) },
        "temperature": temperature,
        "iterations": report.iterations,
        "embed_seconds": embed_s,
        "fit_seconds": fit_s,
    });
    let written = save_head(&pack, args, kind, &head, &classes, temperature, &summary)?;
    if args.json {
        let mut s = summary;
        s["written"] = json!(show(&written));
        print_json(&s);
    } else {
        println!(
            "head '{}': {} classes, {} training / {} held-out photos, held-out top-1 {}, temperature {:.2}; embedding {:.1} s, fit {:.1} s",
            args.name,
            classes.len(),
            train_y.len(),
            val_y.len(),
            top1.map_or("n/a".into(), |a| format!("{:.1}%", a * 100.0)),
            temperature,
            embed_s,
            fit_s
        );
        println!("written to {}", show(&written));
    }
    Ok(ExitCode::SUCCESS)
}

/// Fraction of rows whose label is among the top `k` logits.
pub fn accuracy(logits: &[f32], labels: &[usize], classes: usize, k: usize) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    let hits = logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, y)| {
            let mut p = row.to_vec();
            softmax_in_place(&mut p, 1.0);
            top_k(&p, k).iter().any(|s| s.class == **y)
        })
        .count();
    Some(hits as f64 / labels.len() as f64)
}

#[allow(clippy::too_many_arguments)]
fn save_head(
    pack: &Pack,
    args: &TeachArgs,
    kind: HeadKind,
    head: &LinearHead,
    classes: &[String],
    temperature: f32,
    summary: &serde_json::Value,
) -> anyhow::Result<PathBuf> {
    let onnx = encode(&head.to_onnx("features", &format!("dishcam teach head '{}'", args.name)));
    let labels = classes.join("\n") + "\n";
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", show(out)))?;
        write_atomic(&out.join("head.onnx"), &onnx)?;
        write_atomic(&out.join("labels.txt"), labels.as_bytes())?;
        let mut meta = summary.clone();
        meta["temperature"] = json!(temperature);
        write_atomic(
            &out.join("head.json"),
            serde_json::to_string_pretty(&meta)?.as_bytes(),
        )?;
        return Ok(out.clone());
    }
    // The overlay: files go to a fresh directory, then overlay.toml is replaced atomically, so a
    // crash leaves the previous overlay intact.
    let rel = format!("heads/{}-{}", args.name, std::process::id());
    let dir = pack.overlay_dir.join(&rel);
    let onnx_file = write_pack_file(&dir, "head.onnx", &onnx)?;
    let labels_file = write_pack_file(&dir, "labels.txt", labels.as_bytes())?;
    let prefix = |mut f: dishcam_models::manifest::PackFile| {
        f.file = format!("{rel}/{}", f.file);
        f
    };
    let opath = pack.overlay_dir.join(OVERLAY_MANIFEST);
    let mut overlay: OverlayManifest = match std::fs::read_to_string(&opath) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("{}: cannot parse", show(&opath)))?,
        Err(_) => OverlayManifest::default(),
    };
    overlay.heads.retain(|h| h.name != args.name);
    overlay.heads.push(Head {
        name: args.name.clone(),
        kind,
        encoder_output: None,
        variants: BTreeMap::from([(
            Precision::Fp32,
            Variant {
                onnx: prefix(onnx_file),
                note: "dishcam teach".into(),
            },
        )]),
        labels: prefix(labels_file),
        classes: classes.len(),
        temperature,
    });
    if args.default {
        overlay.default_head = Some(args.name.clone());
    }
    write_atomic(&opath, toml::to_string_pretty(&overlay)?.as_bytes())?;
    Ok(dir)
}
