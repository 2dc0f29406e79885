//! Teaching dish heads on the device with the same photo path that serves predictions
//! ([`dishcam_runtime::PhotoEncoder`], through the cached [`Embedder`]), and saving them in the
//! pack's user overlay (or a directory).
//!
//! Four modes, by the inputs given:
//! - photos (`images`): an image head over folder-per-class photos;
//! - a text CSV (`text_csv`): a text head over UPMC-style `id,title,label` rows;
//! - both: image+text fusion heads (early and late) on the class-paired proxy (see
//!   [`dishcam_runtime::dataset::title_pool`]);
//! - `add_to` a head, with photos: new dishes added to an existing head, refitting the whole
//!   head on its shipped exemplars plus the new photos.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dishcam_capture::decode::DecodeOptions;
use dishcam_eval::Metrics;
use dishcam_models::manifest::{
    Head, HeadKind, LateFusion, PackFile, PhotoPreparation, Precision, Variant,
};
use dishcam_models::onnx::encode;
use dishcam_models::pack::{write_atomic, write_pack_file, OverlayManifest, OVERLAY_MANIFEST};
use dishcam_models::{HeadInput, Pack};
use dishcam_runtime::classify::{softmax_in_place, top_k};
use dishcam_runtime::dataset::{
    is_holdout, list_class_folders, pick_title, read_text_csv, title_pool, LabelledImage, PairPool,
};
use dishcam_runtime::embedder::Embedder;
use dishcam_runtime::fusion::{early_features, late_scores};
use dishcam_runtime::head::{read_labels, HeadModel};
use dishcam_runtime::LoadOptions;
use serde_json::{json, Value};

use crate::error::TeachError;
use crate::exemplars::Exemplars;
use crate::fit::{balanced_weights, fit_logistic, fit_temperature, Dataset, FitConfig, LinearHead};

/// Refuses the request with a message that names the input and the fix.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(TeachError::Invalid(format!($($arg)*)))
    };
}

/// An I/O error on `path`, for `map_err`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TeachError + '_ {
    move |source| TeachError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// What to teach: the inputs (which decide the mode, see the module documentation) and how to
/// fit and save the heads.
#[derive(Debug, Clone)]
pub struct TeachRequest {
    /// Folder-per-class photo sets (`DIR/<class>/<photo>`).
    pub images: Vec<PathBuf>,
    /// A headerless `id,text,label` CSV (UPMC Food-101's titles).
    pub text_csv: Option<PathBuf>,
    /// Add the dishes in `images` to this head: the whole head is refitted on its exemplars and
    /// the new photos (all of them train; the head keeps its temperature).
    pub add_to: Option<String>,
    /// Name of the head to create or replace (default: "dishes"; with `add_to`, that head; with
    /// fusion, "fusion", plus "<name>-late").
    pub name: Option<String>,
    /// Class ids, one per line, fixing the head's class order (default: sorted folder names).
    pub classes: Option<PathBuf>,
    /// Fraction of ids held out for validation and temperature scaling (by a hash of the id).
    pub holdout: f64,
    /// Prepare every photo so first (recorded in the head, which then prepares every photo it
    /// reads the same way). A fusion head or `add_to` takes its image head's.
    pub prepare: Option<PhotoPreparation>,
    /// L2 penalty on standardised weights (with `add_to`: on the distance from the old head).
    pub l2: Option<f64>,
    pub max_iters: u64,
    /// Exemplars kept per class with the head, for later `add_to` refits (0: none).
    pub exemplars: usize,
    /// Fusion: the image head and text head to late-fuse and compare (default: the pack's).
    pub image_head: Option<String>,
    pub text_head: Option<String>,
    /// Fusion: weight of the text head's log-probabilities in the late-fusion head.
    pub text_weight: f32,
    /// Fusion: which of the two fusion heads `default` makes the pack's fusion head.
    pub fusion_mode: FusionMode,
    /// Write each head to `DIR/<name>/` instead of the pack's overlay.
    pub out: Option<PathBuf>,
    /// Make the new head the pack's default (image head, text head or fusion head).
    pub default: bool,
    /// How photos are decoded.
    pub decode: DecodeOptions,
    /// How the pack's existing heads are loaded (fusion compares against them).
    pub load: LoadOptions,
}

impl Default for TeachRequest {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            text_csv: None,
            add_to: None,
            name: None,
            classes: None,
            holdout: 0.2,
            prepare: None,
            l2: None,
            max_iters: 300,
            exemplars: 10,
            image_head: None,
            text_head: None,
            text_weight: 0.5,
            fusion_mode: FusionMode::Early,
            out: None,
            default: false,
            decode: DecodeOptions::default(),
            load: LoadOptions::default(),
        }
    }
}

/// Which of the two fusion heads becomes the pack's fusion head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionMode {
    Early,
    Late,
}

/// A head about to be written.
pub struct NewHead<'a> {
    pub name: String,
    pub kind: HeadKind,
    pub model: Option<&'a LinearHead>,
    pub fuse: Option<LateFusion>,
    pub labels: &'a [String],
    pub temperature: f32,
    pub exemplars: Option<&'a Exemplars>,
    pub summary: Value,
    /// How the head's photos were prepared.
    pub prepare: Option<PhotoPreparation>,
}

/// One labelled example.
struct Example {
    id: String,
    label: usize,
    features: Vec<f32>,
}

/// Training and held-out rows.
#[derive(Default)]
struct Split {
    train_x: Vec<f32>,
    train_y: Vec<usize>,
    val_x: Vec<f32>,
    val_y: Vec<usize>,
}

impl Split {
    fn new(examples: &[Example], holdout: f64) -> Self {
        let mut s = Split::default();
        for e in examples {
            if is_holdout(&e.id, holdout) {
                s.val_x.extend_from_slice(&e.features);
                s.val_y.push(e.label);
            } else {
                s.train_x.extend_from_slice(&e.features);
                s.train_y.push(e.label);
            }
        }
        s
    }
}

/// What [`teach`] made: each head's summary (held-out statistics, sizes, timings) and the
/// directories it was written to.
#[derive(Debug, Clone)]
pub struct Taught {
    pub heads: Vec<Value>,
    pub written: Vec<PathBuf>,
}

/// Fits and saves the heads `req` asks for, embedding with `embedder` (the pack's encoders).
/// `dishcam teach` and the web page's teaching call this.
pub fn teach(req: &TeachRequest, pack: &Pack, embedder: &Embedder) -> Result<Taught, TeachError> {
    if !(0.0..1.0).contains(&req.holdout) {
        invalid!("--holdout must be in [0, 1), got {}", req.holdout);
    }
    let (heads, written) = match (&req.add_to, &req.text_csv) {
        (Some(base), _) => add_classes(req, pack, embedder, base),
        (None, Some(csv)) if !req.images.is_empty() => fit_fusion(req, pack, embedder, csv),
        (None, Some(csv)) => fit_text(req, pack, embedder, csv),
        (None, None) => fit_images(req, pack, embedder),
    }?;
    Ok(Taught { heads, written })
}

/// Photos of every class folder, deduplicated by (class, id): the 10-class full-size set and the
/// 64 px set share photos.
fn list_images(dirs: &[PathBuf]) -> Result<Vec<LabelledImage>, TeachError> {
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    for dir in dirs {
        for item in list_class_folders(dir)? {
            if seen.insert((item.class.clone(), item.id.clone())) {
                items.push(item);
            }
        }
    }
    Ok(items)
}

/// Reads a class list file (one id per line), or derives it from the examples' classes.
pub fn class_list<'a>(
    file: Option<&Path>,
    found: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, TeachError> {
    let classes: Vec<String> = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(io(f))?
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
        invalid!("a head needs at least 2 classes, found {}: {:?}; add folders of photos for more dishes", classes.len(), classes);
    }
    Ok(classes)
}

/// Maps class names to indices, failing on the first example whose class is not in the list.
fn class_index<'a>(
    classes: &'a [String],
    mut found: impl Iterator<Item = (&'a str, String)>,
) -> Result<HashMap<&'a str, usize>, TeachError> {
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    if let Some((class, place)) = found.find(|(c, _)| !index.contains_key(c)) {
        invalid!("{place}: class '{class}' is not in the class list; add it to --classes or remove those examples");
    }
    Ok(index)
}

/// The photo preparation of `base`, which a head fitted on top of it (a fusion head, or the same
/// head with dishes added) must read photos in; a different one asked for is an error.
fn inherited_preparation(
    args: &TeachRequest,
    pack: &Pack,
    base: &Head,
) -> Result<Option<PhotoPreparation>, TeachError> {
    let theirs = pack.manifest.preparation_of(base);
    match args.prepare {
        Some(asked) if Some(asked) != theirs => invalid!(
            "head '{}' reads photos prepared as {}; photos for a head fitted on it are prepared the same way, so leave out the preparation (e.g. --degrade) or make it match",
            base.name,
            theirs.map_or("they come".to_string(), |p| p.to_string())
        ),
        _ => Ok(theirs),
    }
}

/// Embeds photos; returns the examples that decoded and the number skipped.
fn embed_photos(
    args: &TeachRequest,
    embedder: &Embedder,
    items: &[LabelledImage],
    index: &HashMap<&str, usize>,
    prepare: Option<PhotoPreparation>,
) -> Result<(Vec<Example>, usize), TeachError> {
    let embeddings = embedder.images(items, None, prepare, &args.decode)?;
    let skipped = embeddings.iter().filter(|e| e.is_none()).count();
    if skipped > 0 {
        log::warn!("{skipped} photo(s) could not be read and were skipped");
    }
    let examples: Vec<Example> = items
        .iter()
        .zip(embeddings)
        .filter_map(|(i, e)| {
            Some(Example {
                id: i.id.clone(),
                label: index[i.class.as_str()],
                features: e?,
            })
        })
        .collect();
    if examples.is_empty() {
        invalid!("none of the {} photos could be read", items.len());
    }
    Ok((examples, skipped))
}

fn fit_config(args: &TeachRequest, default_l2: f64, anchor: bool) -> FitConfig {
    FitConfig {
        l2: args.l2.unwrap_or(default_l2),
        max_iters: args.max_iters,
        anchor,
        ..FitConfig::default()
    }
}

/// A fitted head with its temperature and held-out statistics.
struct Fitted {
    head: LinearHead,
    temperature: f32,
    summary: Value,
}

/// Fits a head on the split's training rows; temperature and statistics on its held-out rows.
fn fit_split(
    split: &Split,
    dim: usize,
    classes: usize,
    cfg: &FitConfig,
    init: Option<&LinearHead>,
) -> Result<Fitted, TeachError> {
    let weights = balanced_weights(&split.train_y, classes);
    let t = Instant::now();
    let (head, report) = fit_logistic(
        &Dataset {
            features: &split.train_x,
            labels: &split.train_y,
            weights: &weights,
            dim,
            classes,
        },
        cfg,
        init,
    )?;
    let fit_s = t.elapsed().as_secs_f64();
    let val_logits: Vec<f32> = split
        .val_x
        .chunks_exact(dim)
        .flat_map(|r| head.logits(r))
        .collect();
    let temperature = if split.val_y.is_empty() {
        1.0
    } else {
        fit_temperature(&val_logits, &split.val_y, classes)
    };
    let mut summary = holdout_stats(&val_logits, &split.val_y, classes, temperature);
    summary["classes"] = json!(classes);
    summary["train"] = json!(split.train_y.len());
    summary["holdout"] = json!(split.val_y.len());
    summary["iterations"] = json!(report.iterations);
    summary["fit_seconds"] = json!(fit_s);
    summary["l2"] = json!(cfg.l2);
    Ok(Fitted {
        head,
        temperature,
        summary,
    })
}

/// Top-1/top-5 of held-out logits, and NLL and ECE before and after temperature scaling.
pub fn holdout_stats(logits: &[f32], labels: &[usize], classes: usize, temperature: f32) -> Value {
    let at = |t: f32| {
        let mut m = Metrics::new(classes, 15);
        for (row, &y) in logits.chunks_exact(classes).zip(labels) {
            let mut p = row.to_vec();
            softmax_in_place(&mut p, t);
            m.add(y, &p);
        }
        m.report(&[])
    };
    let raw = at(1.0);
    let scaled = at(temperature);
    json!({
        "holdout_top1": raw.top1,
        "holdout_top5": raw.top5,
        "holdout_nll": raw.nll,
        "holdout_ece": raw.ece,
        "holdout_nll_scaled": scaled.nll,
        "holdout_ece_scaled": scaled.ece,
        "temperature": temperature,
    })
}

fn fit_images(
    args: &TeachRequest,
    pack: &Pack,
    embedder: &Embedder,
) -> Result<(Vec<Value>, Vec<PathBuf>), TeachError> {
    let items = list_images(&args.images)?;
    let classes = class_list(
        args.classes.as_deref(),
        items.iter().map(|i| i.class.as_str()),
    )?;
    let index = class_index(
        &classes,
        items.iter().map(|i| (i.class.as_str(), show(&i.path))),
    )?;
    let t = Instant::now();
    let (examples, skipped) = embed_photos(args, embedder, &items, &index, args.prepare)?;
    let embed_s = t.elapsed().as_secs_f64();
    let mut extra = json!({"skipped": skipped, "embed_seconds": embed_s, "prepare": args.prepare});
    fit_and_save(
        args,
        pack,
        HeadKind::Image,
        "dishes",
        &classes,
        &examples,
        &mut extra,
    )
}

/// Fits one image or text head on `examples` (hash hold-out split), picks its exemplars, and
/// saves it; `extra` fields join the summary.
fn fit_and_save(
    args: &TeachRequest,
    pack: &Pack,
    kind: HeadKind,
    default_name: &str,
    classes: &[String],
    examples: &[Example],
    extra: &mut Value,
) -> Result<(Vec<Value>, Vec<PathBuf>), TeachError> {
    let dim = examples.first().map_or(0, |e| e.features.len());
    let split = Split::new(examples, args.holdout);
    let fitted = fit_split(
        &split,
        dim,
        classes.len(),
        &fit_config(args, 1e-3, false),
        None,
    )?;
    let exemplars = Exemplars::select(&split.train_x, &split.train_y, dim, args.exemplars);
    let name = args.name.clone().unwrap_or_else(|| default_name.into());
    let mut summary = fitted.summary;
    summary["head"] = json!(name);
    summary["kind"] = json!(kind.as_str());
    summary["exemplars"] = json!(exemplars.len());
    if let Some(fields) = extra.as_object_mut() {
        for (k, v) in std::mem::take(fields) {
            summary[k] = v;
        }
    }
    let head = NewHead {
        name,
        kind,
        model: Some(&fitted.head),
        fuse: None,
        labels: classes,
        temperature: fitted.temperature,
        exemplars: (args.exemplars > 0).then_some(&exemplars),
        summary: summary.clone(),
        prepare: args.prepare,
    };
    let written = save_heads(pack, args.out.as_deref(), &[head], args.default)?;
    Ok((vec![summary], written))
}

fn fit_text(
    args: &TeachRequest,
    pack: &Pack,
    embedder: &Embedder,
    csv: &Path,
) -> Result<(Vec<Value>, Vec<PathBuf>), TeachError> {
    let (rows, bad) = read_text_csv(csv)?;
    if bad > 0 {
        log::warn!("{}: {bad} malformed row(s) skipped", show(csv));
    }
    let classes = class_list(
        args.classes.as_deref(),
        rows.iter().map(|r| r.class.as_str()),
    )?;
    let index = class_index(
        &classes,
        rows.iter()
            .map(|r| (r.class.as_str(), format!("{}: row '{}'", show(csv), r.id))),
    )?;
    let t = Instant::now();
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let embeddings = embedder.texts(&texts)?;
    let embed_s = t.elapsed().as_secs_f64();
    let examples: Vec<Example> = rows
        .iter()
        .zip(embeddings)
        .map(|(r, e)| Example {
            id: r.id.clone(),
            label: index[r.class.as_str()],
            features: e,
        })
        .collect();
    let mut extra = json!({"skipped": bad, "embed_seconds": embed_s});
    fit_and_save(
        args,
        pack,
        HeadKind::Text,
        "dishes-text",
        &classes,
        &examples,
        &mut extra,
    )
}

fn fit_fusion(
    args: &TeachRequest,
    pack: &Pack,
    embedder: &Embedder,
    csv: &Path,
) -> Result<(Vec<Value>, Vec<PathBuf>), TeachError> {
    if !(0.0..=1.0).contains(&args.text_weight) {
        invalid!("--text-weight must be in [0, 1], got {}", args.text_weight);
    }
    let m = &pack.manifest;
    let image_head = m.resolve_head(args.image_head.as_deref(), HeadInput::Photo)?;
    let text_head = m.resolve_head(args.text_head.as_deref(), HeadInput::Text)?;
    let classes = read_labels(pack, image_head)?;
    if read_labels(pack, text_head)? != classes {
        invalid!(
            "heads '{}' and '{}' have different classes; fusion needs the same classes in the same order",
            image_head.name,
            text_head.name
        );
    }
    let items = list_images(&args.images)?;
    let index = class_index(
        &classes,
        items.iter().map(|i| (i.class.as_str(), show(&i.path))),
    )?;
    let (rows, bad) = read_text_csv(csv)?;
    if bad > 0 {
        log::warn!("{}: {bad} malformed row(s) skipped", show(csv));
    }
    let pools = PairedTitles::new(&rows, args.holdout, &index);
    let prepare = inherited_preparation(args, pack, image_head)?;
    let photos = embed_photos(args, embedder, &items, &index, prepare)?.0;
    let titles = embedder.texts(&pools.texts)?;
    let backend = embedder.backend;
    let mut image_model = HeadModel::load(pack, image_head, backend, &args.load)?;
    let mut text_model = HeadModel::load(pack, text_head, backend, &args.load)?;
    let k = classes.len();

    // Pair every photo with a title of its class from its split's pool.
    let mut early = Vec::new();
    let (mut img_logits, mut txt_logits) = (Vec::new(), Vec::new());
    let mut unpaired = 0;
    for p in &photos {
        let pool = if is_holdout(&p.id, args.holdout) {
            PairPool::Holdout
        } else {
            PairPool::Train
        };
        let Some(&t) = pick_title(&p.id, pools.of(pool, p.label)) else {
            unpaired += 1;
            continue;
        };
        img_logits.push(image_model.logits(&p.features)?);
        txt_logits.push(text_model.logits(&titles[t])?);
        early.push(Example {
            id: p.id.clone(),
            label: p.label,
            features: early_features(&p.features, &titles[t]),
        });
    }
    if unpaired > 0 {
        log::warn!(
            "{unpaired} photo(s) had no title of their class in their pool and were left out"
        );
    }
    let dim = early.first().map_or(0, |e| e.features.len());
    let split = Split::new(&early, args.holdout);
    let fitted = fit_split(&split, dim, k, &fit_config(args, 1e-3, false), None)?;

    // Late fusion mixes the two temperature-calibrated heads with a fixed weight (0.5: the
    // product of the two experts, renormalised). It is not tuned on the training pairs: the
    // image head has seen those photos, so a tuned weight leans towards the image (measured:
    // 0.1, and worse held-out accuracy).
    let weight = args.text_weight;
    let is_val: Vec<bool> = early
        .iter()
        .map(|e| is_holdout(&e.id, args.holdout))
        .collect();
    let mut va = Vec::new();
    let mut vb = Vec::new();
    let mut vy = Vec::new();
    let mut train_pairs = 0;
    for (i, e) in early.iter().enumerate() {
        if is_val[i] {
            va.extend_from_slice(&img_logits[i]);
            vb.extend_from_slice(&txt_logits[i]);
            vy.push(e.label);
        } else {
            train_pairs += 1;
        }
    }
    let late_val: Vec<f32> = va
        .chunks_exact(k)
        .zip(vb.chunks_exact(k))
        .flat_map(|(x, y)| late_scores(x, image_head.temperature, y, text_head.temperature, weight))
        .collect();
    // The mix of two calibrated heads is not calibrated itself (a weighted geometric mean is
    // flatter): it gets its own temperature, fitted on the held-out pairs as every head's is.
    let late_t = if vy.is_empty() {
        1.0
    } else {
        fit_temperature(&late_val, &vy, k)
    };
    let scaled = |logits: &[f32], t: f32| -> Vec<f32> { logits.iter().map(|l| l / t).collect() };
    let comparison = json!({
        "note": "class-paired proxy: each photo is paired with a random title of its class, so the fused numbers leak the label and are not comparable to real UPMC pairs",
        "holdout_pairs": vy.len(),
        "image_only_top1": accuracy(&va, &vy, k, 1),
        "text_only_top1": accuracy(&vb, &vy, k, 1),
        "early_fusion_top1": fitted.summary["holdout_top1"],
        "late_fusion_top1": accuracy(&late_val, &vy, k, 1),
        "late_fusion_text_weight": weight,
        "image_only": holdout_stats(&scaled(&va, image_head.temperature), &vy, k, 1.0),
        "text_only": holdout_stats(&scaled(&vb, text_head.temperature), &vy, k, 1.0),
        "late_fusion": holdout_stats(&late_val, &vy, k, late_t),
    });
    let name = args.name.clone().unwrap_or_else(|| "fusion".into());
    let late_name = format!("{name}-late");
    let mut summary = fitted.summary;
    summary["head"] = json!(name);
    summary["kind"] = json!("early-fusion");
    summary["image_head"] = json!(image_head.name);
    summary["text_head"] = json!(text_head.name);
    summary["unpaired"] = json!(unpaired);
    summary["proxy"] = comparison;
    let mut late_summary = json!({
        "head": late_name,
        "kind": "late-fusion",
        "classes": k,
        "train": train_pairs,
        "holdout": vy.len(),
        "text_weight": weight,
        "temperature": late_t,
    });
    late_summary["holdout_top1"] = summary["proxy"]["late_fusion_top1"].clone();
    let fuse_spec = LateFusion {
        image_head: image_head.name.clone(),
        text_head: text_head.name.clone(),
        text_weight: weight,
    };
    let mut heads = vec![
        NewHead {
            name: name.clone(),
            kind: HeadKind::EarlyFusion,
            model: Some(&fitted.head),
            fuse: None,
            labels: &classes,
            temperature: fitted.temperature,
            exemplars: None,
            summary: summary.clone(),
            prepare,
        },
        NewHead {
            name: late_name,
            kind: HeadKind::LateFusion,
            model: None,
            fuse: Some(fuse_spec),
            labels: &classes,
            temperature: late_t,
            exemplars: None,
            summary: late_summary.clone(),
            // Its image head's, by reference.
            prepare: None,
        },
    ];
    if args.fusion_mode == FusionMode::Late {
        heads.swap(0, 1);
    }
    let written = save_heads(pack, args.out.as_deref(), &heads, args.default)?;
    Ok((vec![summary, late_summary], written))
}

/// Titles outside the text head's training split, by pool and class.
struct PairedTitles<'a> {
    texts: Vec<&'a str>,
    /// (pool, class) -> indices into `texts`.
    by: HashMap<(PairPool, usize), Vec<usize>>,
}

impl<'a> PairedTitles<'a> {
    fn new(
        rows: &'a [dishcam_runtime::dataset::LabelledText],
        holdout: f64,
        index: &HashMap<&str, usize>,
    ) -> Self {
        let mut texts = Vec::new();
        let mut by: HashMap<(PairPool, usize), Vec<usize>> = HashMap::new();
        for r in rows {
            let (Some(pool), Some(&c)) = (title_pool(&r.id, holdout), index.get(r.class.as_str()))
            else {
                continue;
            };
            by.entry((pool, c)).or_default().push(texts.len());
            texts.push(r.text.as_str());
        }
        Self { texts, by }
    }

    fn of(&self, pool: PairPool, class: usize) -> &[usize] {
        self.by.get(&(pool, class)).map_or(&[], Vec::as_slice)
    }
}

/// `--add-to`: refit an existing head with new dishes from a few photos each.
fn add_classes(
    args: &TeachRequest,
    pack: &Pack,
    embedder: &Embedder,
    base: &str,
) -> Result<(Vec<Value>, Vec<PathBuf>), TeachError> {
    let m = &pack.manifest;
    let head = m.resolve_head(Some(base), HeadInput::Photo)?;
    let exemplar_file = head.exemplars.as_ref().ok_or_else(|| {
        TeachError::Invalid(format!("head '{base}' ships no exemplars, so it cannot be extended; refit it from all its photos with `dishcam teach --images DIR...`"))
    })?;
    let variant = head
        .variants
        .get(&Precision::Fp32)
        .ok_or_else(|| TeachError::Invalid(format!("head '{base}' has no fp32 model to extend")))?;
    let bytes = pack.read_verified(&format!("heads.{base}.variants.fp32"), &variant.onnx)?;
    let old = LinearHead::from_onnx(&bytes, &show(&pack.path(&variant.onnx)))?;
    let old_labels = read_labels(pack, head)?;
    let exemplar_bytes = pack.read_verified(&format!("heads.{base}.exemplars"), exemplar_file)?;
    let old_exemplars = Exemplars::from_bytes(&exemplar_bytes, old.dim, old.classes)
        .map_err(|e| TeachError::Invalid(format!("{}: {e}", show(&pack.path(exemplar_file)))))?;

    let items = list_images(&args.images)?;
    let mut classes = old_labels.clone();
    for i in &items {
        if !classes.contains(&i.class) {
            classes.push(i.class.clone());
        }
    }
    let index = class_index(
        &classes,
        items.iter().map(|i| (i.class.as_str(), show(&i.path))),
    )?;
    let t = Instant::now();
    let prepare = inherited_preparation(args, pack, head)?;
    let (examples, skipped) = embed_photos(args, embedder, &items, &index, prepare)?;
    let embed_s = t.elapsed().as_secs_f64();
    if examples[0].features.len() != old.dim {
        invalid!(
            "head '{base}' takes {}-d features but the pack's image encoder gives {}",
            old.dim,
            examples[0].features.len()
        );
    }
    let k = classes.len();
    // Old rows as they were, a zero row per new class; the refit is penalised by its distance
    // from this head, so the old decisions move only as much as the new classes need.
    let mut init = old.clone();
    init.classes = k;
    init.weight.resize(k * old.dim, 0.0);
    init.bias.resize(k, 0.0);
    let mut split = Split {
        train_x: old_exemplars.features.clone(),
        train_y: old_exemplars.labels.clone(),
        ..Split::default()
    };
    let (mut new_x, mut new_y) = (Vec::new(), Vec::new());
    for e in &examples {
        new_x.extend_from_slice(&e.features);
        new_y.push(e.label);
    }
    split.train_x.extend_from_slice(&new_x);
    split.train_y.extend_from_slice(&new_y);
    let t = Instant::now();
    let fitted = fit_split(
        &split,
        old.dim,
        k,
        &fit_config(args, 1e-2, true),
        Some(&init),
    )?;
    let fit_s = t.elapsed().as_secs_f64();
    let mut exemplars = old_exemplars;
    let fresh = Exemplars::select(&new_x, &new_y, old.dim, args.exemplars.max(1));
    exemplars.features.extend_from_slice(&fresh.features);
    exemplars.labels.extend_from_slice(&fresh.labels);

    let name = args.name.clone().unwrap_or_else(|| base.to_string());
    let added: Vec<&String> = classes[old_labels.len()..].iter().collect();
    let mut summary = fitted.summary;
    summary["head"] = json!(name);
    summary["kind"] = json!("image");
    summary["extended"] = json!(base);
    summary["added_classes"] = json!(added);
    summary["new_photos"] = json!(examples.len());
    summary["skipped"] = json!(skipped);
    summary["embed_seconds"] = json!(embed_s);
    summary["refit_seconds"] = json!(fit_s);
    summary["temperature"] = json!(head.temperature);
    summary["exemplars"] = json!(exemplars.len());
    let new = NewHead {
        name,
        kind: HeadKind::Image,
        model: Some(&fitted.head),
        fuse: None,
        labels: &classes,
        temperature: head.temperature,
        exemplars: Some(&exemplars),
        summary: summary.clone(),
        prepare,
    };
    let default = args.default || m.default_head.as_deref() == Some(base);
    let written = save_heads(pack, args.out.as_deref(), &[new], default)?;
    Ok((vec![summary], written))
}

/// Fraction of rows whose label is among the top `k` scores.
pub fn accuracy(logits: &[f32], labels: &[usize], classes: usize, k: usize) -> Option<f64> {
    if labels.is_empty() {
        return None;
    }
    let hits = logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, y)| top_k(row, k).iter().any(|s| s.class == **y))
        .count();
    Some(hits as f64 / labels.len() as f64)
}

/// Writes heads to `out/<name>/`, or into the pack's overlay in one atomic manifest update.
/// With `default`, the first head becomes the pack's default head of its kind.
pub fn save_heads(
    pack: &Pack,
    out: Option<&Path>,
    heads: &[NewHead],
    default: bool,
) -> Result<Vec<PathBuf>, TeachError> {
    let files = |h: &NewHead| -> Vec<(&'static str, Vec<u8>)> {
        let mut v = vec![("labels.txt", (h.labels.join("\n") + "\n").into_bytes())];
        if let Some(model) = h.model {
            let doc = format!("dishcam teach head '{}'", h.name);
            v.push(("head.onnx", encode(&model.to_onnx("features", &doc))));
        }
        if let Some(e) = h.exemplars {
            v.push(("exemplars.safetensors", e.to_bytes()));
        }
        v
    };
    if let Some(out) = out {
        let mut written = Vec::new();
        for h in heads {
            let dir = out.join(&h.name);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            for (name, bytes) in files(h) {
                let path = dir.join(name);
                write_atomic(&path, &bytes).map_err(io(&path))?;
            }
            let mut meta = h.summary.clone();
            meta["temperature"] = json!(h.temperature);
            meta["prepare"] = json!(h.prepare);
            if let Some(f) = &h.fuse {
                meta["fuse"] = json!({"image_head": f.image_head, "text_head": f.text_head, "text_weight": f.text_weight});
            }
            let path = dir.join("head.json");
            let text = serde_json::to_string_pretty(&meta).expect("JSON values serialise") + "\n";
            write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
            written.push(dir);
        }
        return Ok(written);
    }
    // The overlay: files go to fresh directories, then overlay.toml is replaced atomically, so a
    // crash leaves the previous overlay intact.
    let opath = pack.overlay_dir.join(OVERLAY_MANIFEST);
    let mut overlay: OverlayManifest = match std::fs::read_to_string(&opath) {
        Ok(t) => toml::from_str(&t).map_err(|e| {
            TeachError::Invalid(format!(
                "{}: cannot parse ({e}); fix or remove the overlay file",
                show(&opath)
            ))
        })?,
        Err(_) => OverlayManifest::default(),
    };
    let previous = overlay.clone();
    let mut written = Vec::new();
    for h in heads {
        // A fresh directory on every save: `serve` teaches many times in one process, and
        // rewriting the files the committed overlay.toml points at would leave a head that fails
        // its hash check if the process died mid-write.
        let rel = format!(
            "heads/{}-{}-{:x}",
            h.name,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let dir = pack.overlay_dir.join(&rel);
        let mut stored: BTreeMap<&str, PackFile> = BTreeMap::new();
        for (name, bytes) in files(h) {
            let mut f = write_pack_file(&dir, name, &bytes).map_err(io(&dir.join(name)))?;
            f.file = format!("{rel}/{}", f.file);
            stored.insert(name, f);
        }
        overlay.heads.retain(|o| o.name != h.name);
        overlay.heads.push(Head {
            name: h.name.clone(),
            kind: h.kind,
            encoder_output: None,
            variants: stored
                .remove("head.onnx")
                .map(|onnx| {
                    BTreeMap::from([(
                        Precision::Fp32,
                        Variant {
                            onnx,
                            note: "dishcam teach".into(),
                            artefacts: BTreeMap::new(),
                        },
                    )])
                })
                .unwrap_or_default(),
            labels: stored
                .remove("labels.txt")
                .expect("labels are always written"),
            classes: h.labels.len(),
            temperature: h.temperature,
            exemplars: stored.remove("exemplars.safetensors"),
            fuse: h.fuse.clone(),
            prepare: h.prepare,
        });
        written.push(dir);
    }
    if default {
        let first = &heads[0];
        match first.kind {
            HeadKind::Image => overlay.default_head = Some(first.name.clone()),
            HeadKind::Text => overlay.text_head = Some(first.name.clone()),
            HeadKind::EarlyFusion | HeadKind::LateFusion => {
                overlay.fusion_head = Some(first.name.clone())
            }
        }
    }
    // The merged manifest must still be valid (e.g. a late-fusion head's parts exist).
    let merged = pack.with_overlay(overlay.clone());
    let problems = merged.validate();
    if !problems.is_empty() {
        invalid!(
            "the new heads would make pack '{}' invalid: {}",
            pack.manifest.name,
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let text = toml::to_string_pretty(&overlay).expect("an overlay always serialises");
    write_atomic(&opath, text.as_bytes()).map_err(io(&opath))?;
    remove_stale_head_dirs(&pack.overlay_dir, &previous, &overlay, STALE_AFTER);
    Ok(written)
}

/// How old a head directory that no overlay.toml refers to must be before it is removed: other
/// `teach` runs write their directory a moment before committing overlay.toml.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The `heads/<dir>` directories an overlay's heads read their files from.
fn head_dirs(overlay: &OverlayManifest) -> HashSet<String> {
    overlay
        .heads
        .iter()
        .flat_map(|h| {
            h.variants
                .values()
                .map(|v| &v.onnx)
                .chain([&h.labels])
                .chain(h.exemplars.as_ref())
        })
        .filter_map(|f| {
            let mut parts = f.file.split('/');
            match (parts.next(), parts.next()) {
                (Some("heads"), Some(dir)) => Some(dir.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Removes head directories the committed overlay no longer refers to, so that a camera taught
/// every day does not fill its disk: at once those the previous overlay used (replaced just
/// now), and any other one older than `stale_after` (left by a teach that was killed before
/// committing). Best effort: a directory that cannot be removed is logged and left.
fn remove_stale_head_dirs(
    overlay_dir: &Path,
    previous: &OverlayManifest,
    committed: &OverlayManifest,
    stale_after: std::time::Duration,
) {
    let live = head_dirs(committed);
    let replaced = head_dirs(previous);
    let root = overlay_dir.join("heads");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if live.contains(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= stale_after);
        if replaced.contains(&name) || old {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                log::warn!(
                    "{}: cannot remove an unused head directory: {err}",
                    show(&e.path())
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn overlay_with(dirs: &[&str]) -> OverlayManifest {
        let mut t = String::new();
        for d in dirs {
            t += &format!(
                "[[heads]]\nname = \"{d}\"\nkind = \"image\"\nclasses = 1\n\
                 [heads.labels]\nfile = \"heads/{d}/labels.txt\"\nsha256 = \"00\"\nbytes = 2\n"
            );
        }
        toml::from_str(&t).unwrap()
    }

    #[test]
    fn replaced_and_abandoned_head_dirs_go_live_and_fresh_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let heads = tmp.path().join("heads");
        for d in ["new", "replaced", "abandoned", "fresh"] {
            std::fs::create_dir_all(heads.join(d)).unwrap();
            std::fs::write(heads.join(d).join("labels.txt"), "a\n").unwrap();
        }
        // `abandoned` was written an hour ago by a teach that never committed; `fresh` may be
        // another teach about to commit.
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(heads.join("abandoned"))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        remove_stale_head_dirs(
            tmp.path(),
            &overlay_with(&["replaced"]),
            &overlay_with(&["new"]),
            STALE_AFTER,
        );
        let mut left: Vec<String> = std::fs::read_dir(&heads)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh", "new"]);
    }

    #[test]
    fn head_dirs_come_from_every_file_of_a_head() {
        let o = overlay_with(&["a-1-ff", "b-2-ee"]);
        assert_eq!(
            head_dirs(&o),
            HashSet::from(["a-1-ff".to_string(), "b-2-ee".to_string()])
        );
        assert!(head_dirs(&OverlayManifest::default()).is_empty());
    }
}
