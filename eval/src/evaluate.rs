//! Scoring a pack on labelled data: a head's accuracy, per-class accuracy, confusion matrix and
//! calibration on folder-per-class photos, labelled texts, or both paired by class
//! (`dishcam eval classify`); and image <-> recipe retrieval in H-T's protocol
//! (`dishcam eval retrieval`).
//!
//! With photos and texts together, each photo is paired with a title of its class (the
//! class-paired proxy of [`dishcam_runtime::dataset::title_pool`]; held-out photos only meet
//! held-out titles), and any head can be scored on the same pairs: an image head sees the photo,
//! a text head the title, a fusion head both. That is how image-only, text-only and fused
//! accuracy are compared on the same validation photos. The head step is the dish chain's own
//! ([`DishClassifier::probabilities_of`]) on embeddings from the cached [`Embedder`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dishcam_capture::decode::DecodeOptions;
use dishcam_models::manifest::HeadKind;
use dishcam_models::pack::write_atomic;
use dishcam_models::{HeadInput, HeadLookupError, Pack, PackError};
use dishcam_recipes::{RecipeError, RetrievalReport};
use dishcam_runtime::backend::Backend;
use dishcam_runtime::dataset::{
    is_holdout, list_class_folders, pick_title, read_text_csv, title_pool, DatasetError,
    LabelledImage, LabelledText, PairPool,
};
use dishcam_runtime::embedder::Embedder;
use dishcam_runtime::head::read_labels;
use dishcam_runtime::{DishClassifier, DishOptions, LoadOptions, RuntimeError};
use serde_json::{json, Value};

use crate::metrics::{report_markdown, Metrics, Report};

/// Refuses the request with a message that names the input and the fix.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(EvalError::Invalid(format!($($arg)*)))
    };
}

/// What can stop an evaluation: each names the input and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Head(#[from] HeadLookupError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Recipes(#[from] RecipeError),
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Which examples to score, by the hash split `teach` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Every example.
    All,
    /// Examples whose id falls in the hold-out split.
    Holdout,
    /// Examples outside the hold-out split.
    Train,
}

impl Split {
    /// Whether an example with `id` is in this split, with `holdout` the hold-out fraction.
    pub fn keeps(self, id: &str, holdout: f64) -> bool {
        match self {
            Split::All => true,
            Split::Holdout => is_holdout(id, holdout),
            Split::Train => !is_holdout(id, holdout),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Split::All => "all",
            Split::Holdout => "holdout",
            Split::Train => "train",
        }
    }
}

/// What `dishcam eval classify` scores.
#[derive(Debug, Clone)]
pub struct HeadEval {
    /// Folder-per-class photos (folders named by class id).
    pub data: Option<PathBuf>,
    /// Headerless `image_name,title,label` CSV.
    pub text_csv: Option<PathBuf>,
    /// The head (default: the pack's image, text or fusion head, by the inputs given).
    pub head: Option<String>,
    pub split: Split,
    /// Hold-out fraction used by `teach`.
    pub holdout: f64,
    /// Override the head's softmax temperature.
    pub temperature: Option<f32>,
    pub decode: DecodeOptions,
}

/// The share of top-1 answers that name one of the classes the evaluated data has, against the
/// share a uniform guess would give (`data_classes / head_classes`). On a subset of a head's
/// classes, a share far above what the top-1 accuracy explains shows a head that keys on what
/// the subset's photos have in common (how they were made) rather than on the dishes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AnswerShare {
    pub data_classes: usize,
    pub head_classes: usize,
    pub share: f64,
    pub chance: f64,
}

/// A head's scores: the report, its JSON (schema `dishcam.eval.classify/1`) and the files
/// [`HeadEvaluation::write`] writes.
pub struct HeadEvaluation {
    /// Where the top-1 answers fall: inside the classes the data has photos of, against chance.
    pub answers_inside: AnswerShare,
    pub report: Report,
    pub json: Value,
    pub title: String,
    pub temperature: f32,
    metrics: Metrics,
    labels: Vec<String>,
}

impl HeadEvaluation {
    /// Writes report.json, report.md, confusion.csv and confusion.svg into `out`.
    pub fn write(&self, out: &Path) -> Result<(), EvalError> {
        let io = |path: PathBuf| move |source| EvalError::Io { path, source };
        std::fs::create_dir_all(out).map_err(io(out.to_path_buf()))?;
        let files = [
            (
                "report.json",
                serde_json::to_string_pretty(&self.json).expect("JSON values serialise"),
            ),
            ("report.md", report_markdown(&self.report, &self.title)),
            (
                "confusion.csv",
                self.metrics.confusion().to_csv(&self.labels, true),
            ),
            (
                "confusion.svg",
                self.metrics
                    .confusion()
                    .to_svg(&self.labels, true, &self.title),
            ),
        ];
        for (name, text) in files {
            let path = out.join(name);
            write_atomic(&path, text.as_bytes()).map_err(io(path.clone()))?;
        }
        Ok(())
    }
}

/// One evaluation example: a photo, a text, or both, with its class index.
struct Example {
    photo: Option<usize>,
    text: Option<usize>,
    label: usize,
}

/// Scores a head of `pack` on `req`'s data: embeddings from `embedder` (cached), the head step
/// of the dish chain on `backend`.
pub fn evaluate_head(
    pack: &Pack,
    backend: Arc<dyn Backend>,
    opts: &LoadOptions,
    embedder: &Embedder,
    req: &HeadEval,
) -> Result<HeadEvaluation, EvalError> {
    let args = req;
    let m = &pack.manifest;
    // A named head of any kind is scored on the inputs given (an image head on photos that
    // have titles too, say); unnamed, the pack's default head for those inputs.
    let head = match &args.head {
        Some(name) => m.head(name).ok_or_else(|| {
            EvalError::Invalid(format!(
                "pack '{}' has no head '{name}' (heads: {})",
                m.name,
                m.heads
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => m.resolve_head(
            None,
            match (&args.data, &args.text_csv) {
                (Some(_), Some(_)) => HeadInput::PhotoAndText,
                (None, Some(_)) => HeadInput::Text,
                _ => HeadInput::Photo,
            },
        )?,
    };
    let head_name = head.name.clone();
    let (needs_image, needs_text) = match head.kind {
        HeadKind::Image => (true, false),
        HeadKind::Text => (false, true),
        HeadKind::EarlyFusion | HeadKind::LateFusion => (true, true),
    };
    if needs_image && args.data.is_none() {
        invalid!(
            "head '{head_name}' is a {} head: give photos with --data",
            head.kind.as_str()
        );
    }
    if needs_text && args.text_csv.is_none() {
        invalid!(
            "head '{head_name}' is a {} head: give texts with --text-csv",
            head.kind.as_str()
        );
    }
    let labels = read_labels(pack, head)?;
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let in_split = |id: &str| args.split.keeps(id, args.holdout);

    let photos = match &args.data {
        Some(dir) => {
            let items: Vec<LabelledImage> = list_class_folders(dir)?
                .into_iter()
                .filter(|i| in_split(&i.id))
                .collect();
            if let Some(i) = items.iter().find(|i| !index.contains_key(i.class.as_str())) {
                invalid!(
                    "{}: class folder '{}' is not a class of head '{head_name}' (its classes are e.g. {})",
                    show(dir),
                    i.class,
                    labels.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            items
        }
        None => Vec::new(),
    };
    let titles: Vec<LabelledText> = match &args.text_csv {
        Some(csv) => {
            let (rows, bad) = read_text_csv(csv)?;
            if bad > 0 {
                log::warn!("{}: {bad} malformed row(s) skipped", show(csv));
            }
            let unknown = rows
                .iter()
                .filter(|r| !index.contains_key(r.class.as_str()))
                .count();
            if unknown > 0 {
                log::warn!(
                    "{}: {unknown} row(s) with labels that are not classes of head '{head_name}' skipped",
                    show(csv)
                );
            }
            rows.into_iter()
                .filter(|r| index.contains_key(r.class.as_str()))
                .collect()
        }
        None => Vec::new(),
    };

    // Which inputs each example uses.
    let mut examples = Vec::new();
    let mut unpaired = 0;
    if args.data.is_some() && args.text_csv.is_some() {
        let mut pools: HashMap<(PairPool, usize), Vec<usize>> = HashMap::new();
        for (i, t) in titles.iter().enumerate() {
            if let Some(pool) = title_pool(&t.id, args.holdout) {
                pools
                    .entry((pool, index[t.class.as_str()]))
                    .or_default()
                    .push(i);
            }
        }
        for (i, p) in photos.iter().enumerate() {
            let label = index[p.class.as_str()];
            let pool = if is_holdout(&p.id, args.holdout) {
                PairPool::Holdout
            } else {
                PairPool::Train
            };
            match pools.get(&(pool, label)).and_then(|c| pick_title(&p.id, c)) {
                Some(&t) => examples.push(Example {
                    photo: Some(i),
                    text: Some(t),
                    label,
                }),
                None => unpaired += 1,
            }
        }
    } else if args.data.is_some() {
        examples.extend(photos.iter().enumerate().map(|(i, p)| Example {
            photo: Some(i),
            text: None,
            label: index[p.class.as_str()],
        }));
    } else {
        examples.extend(
            titles
                .iter()
                .enumerate()
                .filter(|(_, t)| in_split(&t.id))
                .map(|(i, t)| Example {
                    photo: None,
                    text: Some(i),
                    label: index[t.class.as_str()],
                }),
        );
    }
    if unpaired > 0 {
        log::warn!(
            "{unpaired} photo(s) had no title of their class in their pool and were left out"
        );
    }
    if examples.is_empty() {
        invalid!(
            "no examples in the {} split of the given data",
            args.split.as_str()
        );
    }

    // Photos are prepared as the head's training photos were, as the serving path does.
    let prepare = m.preparation_of(head);
    let photo_features = if needs_image {
        embedder.images(
            &photos,
            head.encoder_output.as_deref(),
            prepare,
            &args.decode,
        )?
    } else {
        Vec::new()
    };
    let text_features = if needs_text {
        // Only the titles some example uses.
        let used: Vec<usize> = {
            let mut u: Vec<usize> = examples.iter().filter_map(|e| e.text).collect();
            u.sort_unstable();
            u.dedup();
            u
        };
        let texts: Vec<&str> = used.iter().map(|&i| titles[i].text.as_str()).collect();
        let emb = embedder.texts(&texts)?;
        let mut all = vec![Vec::new(); titles.len()];
        for (i, e) in used.into_iter().zip(emb) {
            all[i] = e;
        }
        all
    } else {
        Vec::new()
    };

    // The head step of the dish chain, on the embeddings computed (and cached) above.
    let mut dish = DishClassifier::load(
        pack,
        backend.clone(),
        opts,
        &DishOptions {
            head: Some(&head_name),
            input: HeadInput::of(head.kind),
            ..DishOptions::default()
        },
    )?;
    dish.set_temperature(args.temperature);
    let temperature = args.temperature.unwrap_or(head.temperature);
    let mut metrics = Metrics::new(labels.len(), 15);
    let mut skipped = 0;
    // Where the answers fall: inside the classes the data has, against chance.
    let mut present = vec![false; labels.len()];
    for e in &examples {
        present[e.label] = true;
    }
    let (mut answered, mut inside) = (0u64, 0u64);
    for e in &examples {
        let image = match e.photo {
            Some(i) if needs_image => match &photo_features[i] {
                Some(f) => Some(f.as_slice()),
                None => {
                    skipped += 1;
                    continue;
                }
            },
            _ => None,
        };
        let text = e
            .text
            .filter(|_| needs_text)
            .map(|i| text_features[i].as_slice());
        let probs = dish.probabilities_of(image, text)?;
        let top = (0..probs.len()).fold(0, |b, i| if probs[i] > probs[b] { i } else { b });
        answered += 1;
        inside += u64::from(present[top]);
        metrics.add(e.label, probs);
    }
    let data_classes = present.iter().filter(|&&p| p).count();
    let answers_inside = AnswerShare {
        data_classes,
        head_classes: labels.len(),
        share: inside as f64 / answered.max(1) as f64,
        chance: data_classes as f64 / labels.len().max(1) as f64,
    };
    let data = [
        args.data.as_ref().map(|d| show(d)),
        args.text_csv.as_ref().map(|d| show(d)),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" + ");
    let title = format!(
        "{} / head {} on {} ({} split)",
        m.name,
        head_name,
        data,
        args.split.as_str()
    );
    let report = metrics.report(&labels);
    let mut v = serde_json::to_value(&report).expect("a report serialises");
    v["schema"] = json!("dishcam.eval.classify/1");
    v["pack"] = json!(m.name);
    v["head"] = json!(head_name);
    v["kind"] = json!(head.kind.as_str());
    v["data"] = json!(args.data.as_ref().map(|d| show(d)));
    v["text_csv"] = json!(args.text_csv.as_ref().map(|d| show(d)));
    v["paired_by_class"] = json!(args.data.is_some() && args.text_csv.is_some());
    v["split"] = json!(args.split.as_str());
    v["temperature"] = json!(temperature);
    v["skipped"] = json!(skipped);
    v["unpaired"] = json!(unpaired);
    v["answers_in_data_classes"] = serde_json::to_value(answers_inside).expect("serialises");
    v["prepare"] = json!(prepare.map(|p| p.to_string()));
    v["backend"] = json!(backend.kind().as_str());
    v["precision"] = json!(opts.precision.as_str());
    if skipped > 0 {
        log::warn!("{skipped} photo(s) could not be decoded and were skipped");
    }
    Ok(HeadEvaluation {
        report,
        json: v,
        title,
        temperature,
        answers_inside,
        metrics,
        labels,
    })
}

/// The recipe text a retrieval pack's recipe tower reads (as `dishcam-train` trains it): title,
/// ingredients joined with ", ", instructions joined with " ", the three joined with ". ".
pub fn retrieval_text(r: &dishcam_recipes::Recipe) -> String {
    let parts = [
        r.title.trim().to_string(),
        r.ingredients
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        r.instructions
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    ];
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(". ")
}

/// What `dishcam eval retrieval` scores.
#[derive(Debug, Clone)]
pub struct RetrievalEval {
    /// Recipe1M folder with layer1.json and layer2.json.
    pub pairs: PathBuf,
    /// Image root, in Recipe1M's layout ROOT/<partition>/a/b/c/d/<image id> (default:
    /// PAIRS/images).
    pub images: Option<PathBuf>,
    /// Only recipes of this partition (train, val, test).
    pub partition: Option<String>,
    /// Seed of the bag sampling.
    pub seed: u64,
    pub decode: DecodeOptions,
}

/// Retrieval results: the per-bag-size reports and the whole JSON (schema
/// `dishcam.eval.retrieval/1`).
pub struct RetrievalEvaluation {
    pub pairs: usize,
    pub no_image: usize,
    pub results: Vec<RetrievalReport>,
    pub json: Value,
}

/// Image <-> recipe retrieval (medR, R@1/5/10 over bags of 1k and 10k pairs) with the pack's
/// image and text encoders, for packs whose embeddings share a space.
pub fn evaluate_retrieval(
    pack: &Pack,
    embedder: &Embedder,
    req: &RetrievalEval,
) -> Result<RetrievalEvaluation, EvalError> {
    let args = req;
    let m = &pack.manifest;
    let (Some(ie), Some(te)) = (&m.image_encoder, &m.text_encoder) else {
        invalid!(
            "pack '{}' needs an image and a text encoder for retrieval",
            m.name
        );
    };
    if ie.embedding_dim != te.embedding_dim {
        invalid!(
            "pack '{}' has no shared image/recipe space (image embeddings are {}-d, text {}-d); packs made by `dishcam-train retrieval` have one",
            m.name,
            ie.embedding_dim,
            te.embedding_dim
        );
    }
    let layer1 = args.pairs.join("layer1.json");
    if !layer1.is_file() {
        invalid!(
            "{}: missing; --pairs is a Recipe1M folder with layer1.json and layer2.json",
            show(&layer1)
        );
    }
    let mut recipes = Vec::new();
    let layer2 = args.pairs.join("layer2.json");
    if !layer2.is_file() {
        invalid!(
            "{}: missing; retrieval pairs each recipe with its images from layer2.json",
            show(&layer2)
        );
    }
    let imported = dishcam_recipes::import_files(
        &[layer2, layer1],
        dishcam_recipes::Format::Recipe1m,
        &mut |r| {
            recipes.push(r);
            Ok(())
        },
        &mut |_| {},
    )?;
    let root = args
        .images
        .clone()
        .unwrap_or_else(|| args.pairs.join("images"));
    // One pair per recipe: its first image that exists.
    let mut items = Vec::new();
    let mut texts = Vec::new();
    let mut no_image = 0;
    for r in &recipes {
        let part = r
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("recipe1m:"))
            .unwrap_or("");
        if args.partition.as_deref().is_some_and(|p| p != part) {
            continue;
        }
        let found = r.images.iter().find_map(|id| {
            let sub: std::path::PathBuf = id.chars().take(4).map(String::from).collect();
            let path = root.join(part).join(sub).join(id);
            path.is_file().then_some(path)
        });
        match found {
            Some(path) => {
                items.push(LabelledImage {
                    path,
                    class: String::new(),
                    id: r.id.clone(),
                });
                texts.push(retrieval_text(r));
            }
            None => no_image += 1,
        }
    }
    if items.len() < 2 {
        invalid!(
            "{}: {} recipe(s) with an image under {}; retrieval needs at least 2 pairs",
            show(&args.pairs),
            items.len(),
            show(&root)
        );
    }
    let image_emb = embedder.images(&items, None, None, &args.decode)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text_emb = embedder.texts(&refs)?;
    let (mut img, mut txt) = (Vec::new(), Vec::new());
    let mut undecodable = 0;
    for (i, t) in image_emb.into_iter().zip(text_emb) {
        match i {
            Some(i) => {
                img.extend(i);
                txt.extend(t);
            }
            None => undecodable += 1,
        }
    }
    let dim = ie.embedding_dim;
    let reports = dishcam_recipes::retrieval_protocol(&img, &txt, dim, args.seed)?;
    let v = json!({
        "schema": "dishcam.eval.retrieval/1",
        "pack": m.name,
        "pairs": img.len() / dim,
        "recipes": recipes.len(),
        "skipped_records": imported.skipped,
        "no_image": no_image,
        "undecodable": undecodable,
        "partition": args.partition,
        "backend": embedder.backend.kind().as_str(),
        "precision": embedder.opts.precision.as_str(),
        "protocol": "cosine; rank = 1 + items strictly closer; 10 bags of each size (one bag when the set is smaller)",
        "results": reports,
    });
    Ok(RetrievalEvaluation {
        pairs: img.len() / dim,
        no_image,
        results: reports,
        json: v,
    })
}
