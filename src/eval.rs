//! `dishcam eval classify`: accuracy, per-class accuracy, confusion matrix and calibration of a
//! pack's head on folder-per-class photos, on labelled texts, or on both paired by class.
//!
//! With photos and texts together, each photo is paired with a title of its class (the
//! class-paired proxy of [`dishcam_runtime::dataset::title_pool`]; held-out photos only meet
//! held-out titles), and any head can be scored on the same pairs: an image head sees the photo,
//! a text head the title, a fusion head both. That is how image-only, text-only and fused
//! accuracy are compared on the same validation photos.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use dishcam_models::manifest::HeadKind;
use dishcam_models::pack::write_atomic;
use dishcam_models::HeadInput;
use dishcam_runtime::dataset::{
    is_holdout, list_class_folders, pick_title, read_text_csv, title_pool, LabelledText, PairPool,
};
use dishcam_runtime::eval::{report_markdown, Metrics};
use dishcam_runtime::head::read_labels;
use dishcam_runtime::{DishClassifier, DishOptions};
use serde_json::json;

use crate::cli::{print_json, show, Bar, EngineArgs};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Evaluate a head on folder-per-class photos, labelled texts, or both paired by class.
    Classify(EvalClassifyArgs),
    /// Image <-> recipe retrieval (medR, R@1/5/10 over bags of 1k and 10k pairs, H-T's
    /// protocol) for packs whose image and recipe embeddings share a space.
    Retrieval(EvalRetrievalArgs),
}

#[derive(Args)]
pub struct EvalRetrievalArgs {
    /// Recipe1M folder with layer1.json and layer2.json.
    #[arg(long)]
    pairs: PathBuf,
    /// Image root, in Recipe1M's layout ROOT/<partition>/a/b/c/d/<image id> (default:
    /// PAIRS/images).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Only recipes of this partition (train, val, test).
    #[arg(long)]
    partition: Option<String>,
    /// Seed of the bag sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    /// Every example.
    All,
    /// Examples whose id falls in the hold-out split (`teach --holdout`).
    Holdout,
    /// Examples outside the hold-out split.
    Train,
}

#[derive(Args)]
pub struct EvalClassifyArgs {
    /// Folder-per-class photos (folders named by class id); may hold fewer classes than the head.
    #[arg(long, required_unless_present = "text_csv")]
    data: Option<PathBuf>,
    /// Headerless `image_name,title,label` CSV (UPMC Food-101's titles).
    #[arg(long)]
    text_csv: Option<PathBuf>,
    /// Head to evaluate (default: the pack's image, text or fusion head, by the inputs given).
    #[arg(long)]
    head: Option<String>,
    #[arg(long, value_enum, default_value = "all")]
    split: Split,
    /// Hold-out fraction used by `teach` (only with --split holdout|train).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Degrade photos to a centred PX x PX square before encoding (as `teach --degrade`).
    #[arg(long)]
    degrade: Option<u32>,
    /// Override the head's softmax temperature (e.g. 1 to see calibration before scaling).
    #[arg(long)]
    temperature: Option<f32>,
    /// Write report.json, report.md, confusion.csv and confusion.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// One evaluation example: a photo, a text, or both, with its class index.
struct Example {
    photo: Option<usize>,
    text: Option<usize>,
    label: usize,
}

pub fn run(cmd: &EvalCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        EvalCommand::Classify(args) => args,
        EvalCommand::Retrieval(args) => return retrieval(args, quiet),
    };
    let pack = args.engine.open_pack()?;
    let m = &pack.manifest;
    // A named head of any kind is scored on the inputs given (an image head on photos that
    // have titles too, say); unnamed, the pack's default head for those inputs.
    let head = match &args.head {
        Some(name) => m.head(name).with_context(|| {
            format!(
                "pack '{}' has no head '{name}' (heads: {})",
                m.name,
                m.heads
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
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
        bail!(
            "head '{head_name}' is a {} head: give photos with --data",
            head.kind.as_str()
        );
    }
    if needs_text && args.text_csv.is_none() {
        bail!(
            "head '{head_name}' is a {} head: give texts with --text-csv",
            head.kind.as_str()
        );
    }
    let labels = read_labels(&pack, head)?;
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let in_split = |id: &str| match args.split {
        Split::All => true,
        Split::Holdout => is_holdout(id, args.holdout),
        Split::Train => !is_holdout(id, args.holdout),
    };

    let photos = match &args.data {
        Some(dir) => {
            let items: Vec<_> = list_class_folders(dir)?
                .into_iter()
                .filter(|i| in_split(&i.id))
                .collect();
            if let Some(i) = items.iter().find(|i| !index.contains_key(i.class.as_str())) {
                bail!(
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
        bail!(
            "no examples in the {} split of the given data",
            split_name(args.split)
        );
    }

    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let bar = Bar::new(quiet);
    let embedder = args
        .engine
        .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
    let photo_features = if needs_image {
        embedder.images(
            &photos,
            head.encoder_output.as_deref(),
            args.degrade,
            &args.engine.decode_options(),
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
        &pack,
        backend.clone(),
        &opts,
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
        metrics.add(e.label, dish.probabilities_of(image, text)?);
    }
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
        split_name(args.split)
    );
    let report = metrics.report(&labels);
    let mut v = serde_json::to_value(&report)?;
    v["schema"] = json!("dishcam.eval.classify/1");
    v["pack"] = json!(m.name);
    v["head"] = json!(head_name);
    v["kind"] = json!(head.kind.as_str());
    v["data"] = json!(args.data.as_ref().map(|d| show(d)));
    v["text_csv"] = json!(args.text_csv.as_ref().map(|d| show(d)));
    v["paired_by_class"] = json!(args.data.is_some() && args.text_csv.is_some());
    v["split"] = json!(split_name(args.split));
    v["temperature"] = json!(temperature);
    v["skipped"] = json!(skipped);
    v["unpaired"] = json!(unpaired);
    v["backend"] = json!(backend.kind().as_str());
    v["precision"] = json!(opts.precision.as_str());
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", show(out)))?;
        write_atomic(
            &out.join("report.json"),
            serde_json::to_string_pretty(&v)?.as_bytes(),
        )?;
        write_atomic(
            &out.join("report.md"),
            report_markdown(&report, &title).as_bytes(),
        )?;
        write_atomic(
            &out.join("confusion.csv"),
            metrics.confusion().to_csv(&labels, true).as_bytes(),
        )?;
        write_atomic(
            &out.join("confusion.svg"),
            metrics.confusion().to_svg(&labels, true, &title).as_bytes(),
        )?;
    }
    if skipped > 0 {
        log::warn!("{skipped} photo(s) could not be decoded and were skipped");
    }
    if args.json {
        print_json(&v);
    } else {
        let pct = |x: Option<f64>| x.map_or("n/a".into(), |a| format!("{:.2}%", a * 100.0));
        println!("{title}");
        println!(
            "  examples {}, top-1 {}, top-5 {}, ECE {}, NLL {} (temperature {temperature:.2})",
            report.examples,
            pct(report.top1),
            pct(report.top5),
            report.ece.map_or("n/a".into(), |e| format!("{e:.4}")),
            report.nll.map_or("n/a".into(), |e| format!("{e:.4}"))
        );
        if let Some(out) = &args.out {
            println!("  report written to {}", show(out));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::All => "all",
        Split::Holdout => "holdout",
        Split::Train => "train",
    }
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

fn retrieval(args: &EvalRetrievalArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let pack = args.engine.open_pack()?;
    let m = &pack.manifest;
    let (Some(ie), Some(te)) = (&m.image_encoder, &m.text_encoder) else {
        bail!(
            "pack '{}' needs an image and a text encoder for retrieval",
            m.name
        );
    };
    if ie.embedding_dim != te.embedding_dim {
        bail!(
            "pack '{}' has no shared image/recipe space (image embeddings are {}-d, text {}-d); packs made by `dishcam-train retrieval` have one",
            m.name,
            ie.embedding_dim,
            te.embedding_dim
        );
    }
    let layer1 = args.pairs.join("layer1.json");
    if !layer1.is_file() {
        bail!(
            "{}: missing; --pairs is a Recipe1M folder with layer1.json and layer2.json",
            show(&layer1)
        );
    }
    let mut recipes = Vec::new();
    let layer2 = args.pairs.join("layer2.json");
    if !layer2.is_file() {
        bail!(
            "{}: missing; retrieval pairs each recipe with its images from layer2.json",
            show(&layer2)
        );
    }
    let report = dishcam_recipes::import_files(
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
                items.push(dishcam_runtime::dataset::LabelledImage {
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
        bail!(
            "{}: {} recipe(s) with an image under {}; retrieval needs at least 2 pairs",
            show(&args.pairs),
            items.len(),
            show(&root)
        );
    }
    let backend = args.engine.backend()?;
    let bar = Bar::new(quiet);
    let embedder = args
        .engine
        .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
    let image_emb = embedder.images(&items, None, None, &args.engine.decode_options())?;
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
        "skipped_records": report.skipped,
        "no_image": no_image,
        "undecodable": undecodable,
        "partition": args.partition,
        "backend": backend.kind().as_str(),
        "precision": args.engine.precision,
        "protocol": "cosine; rank = 1 + items strictly closer; 10 bags of each size (one bag when the set is smaller)",
        "results": reports,
    });
    if args.json {
        print_json(&v);
    } else {
        println!(
            "{}: {} pairs ({} recipes without an image skipped)",
            m.name,
            img.len() / dim,
            no_image
        );
        for r in &reports {
            for (dir, s) in [
                ("image->recipe", &r.image_to_recipe),
                ("recipe->image", &r.recipe_to_image),
            ] {
                println!(
                    "  bag {:>5} x {:>2}  {dir}: medR {:.1}  R@1 {:.3}  R@5 {:.3}  R@10 {:.3}",
                    r.bag_size, r.bags, s.med_r, s.r_at_1, s.r_at_5, s.r_at_10
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
