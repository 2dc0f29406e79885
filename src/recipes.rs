//! `dishcam recipes`: import recipes into the pack's overlay, build the recipe index with the
//! pack's text encoder, search it, show a recipe. `classify` uses [`RecipeIndexes::open`] to list
//! recipes for the predicted dish.
//!
//! Where things are: the bundled Food-101 recipes are a file of the base pack
//! (`recipes/food101.jsonl`, listed in `pack.toml`); imported recipes go to
//! `<overlay>/recipes/imported.jsonl`; the index over both is `<overlay>/recipes/recipes.idx`
//! (derived data: `models pull` builds it, `recipes index build` rebuilds it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use dishcam_models::{Pack, Precision};
use dishcam_recipes::index::BuildStage;
use dishcam_recipes::{ExcludeFilter, Format, RecipeIndex, SearchParams};
use dishcam_runtime::{Backend, LoadOptions, TextEncoder};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{print_json, show, EngineArgs};

#[derive(Subcommand)]
pub enum RecipesCommand {
    /// Import Recipe1M layer1.json, RecipeNLG CSV or schema.org JSON-LD (.json/.html/dirs) into
    /// the pack's overlay, then rebuild the index.
    Import(ImportArgs),
    /// Build or rebuild the recipe index with the pack's text encoder.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Recipes nearest to a text query.
    Search(SearchArgs),
    /// One recipe in full.
    Show(ShowArgs),
}

#[derive(Subcommand)]
pub enum IndexCommand {
    Build(BuildArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// auto (by extension and content), recipe1m, recipenlg, jsonld, jsonl.
    #[arg(long, default_value = "auto")]
    format: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub struct BuildArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub struct SearchArgs {
    query: String,
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Ingredients or allergen groups to leave out, comma-separated (e.g. peanut,shellfish).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Exact (brute-force) search instead of the IVF index: the reference.
    #[arg(long)]
    exact: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub struct ShowArgs {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The recipe files of a pack.
pub struct RecipePaths {
    /// The bundled recipes of the base pack, if it has them.
    pub base: Option<PathBuf>,
    /// Recipes the user imported.
    pub imported: PathBuf,
    pub index: PathBuf,
}

impl RecipePaths {
    pub fn of(pack: &Pack) -> RecipePaths {
        let dir = pack.overlay_dir.join("recipes");
        RecipePaths {
            base: pack.manifest.recipes.as_ref().map(|f| pack.path(f)),
            imported: dir.join("imported.jsonl"),
            index: dir.join("recipes.idx"),
        }
    }

    fn stores(&self) -> Vec<PathBuf> {
        self.base
            .iter()
            .cloned()
            .chain(Some(self.imported.clone()).filter(|p| p.is_file()))
            .collect()
    }
}

/// The precision recipe indexes are built with: the text encoder's fp32 variant when the pack has
/// one, whatever `--precision` a command runs at. One index then serves every precision: dish
/// recipes are looked up by class, and an int8 query embedding is within ~0.99 cosine of the
/// fp32 one (README, INT8), so searching the fp32 index with it finds the same recipes.
pub fn index_precision(pack: &Pack, requested: Precision) -> Precision {
    match &pack.manifest.text_encoder {
        Some(t) if t.variants.contains_key(&Precision::Fp32) => Precision::Fp32,
        _ => requested,
    }
}

/// What an index was built with: the pack, its text encoder's file hash and the precision.
pub fn encoder_id(pack: &Pack, opts: &LoadOptions) -> anyhow::Result<String> {
    let t = pack
        .manifest
        .text_encoder
        .as_ref()
        .with_context(|| format!("pack '{}' has no text encoder", pack.manifest.name))?;
    let precision = index_precision(pack, opts.precision);
    let v = t.variants.get(&precision).with_context(|| {
        format!(
            "no {precision} text encoder in pack '{}'",
            pack.manifest.name
        )
    })?;
    Ok(format!(
        "{}/text_encoder/{precision}/{}",
        pack.manifest.name,
        &v.onnx.sha256[..16]
    ))
}

/// Builds the index over the pack's recipe stores; returns the number of recipes indexed.
pub fn build_index(
    pack: &Pack,
    backend: &dyn Backend,
    opts: &LoadOptions,
    quiet: bool,
) -> anyhow::Result<usize> {
    let paths = RecipePaths::of(pack);
    let stores = paths.stores();
    if stores.is_empty() {
        bail!(
            "pack '{}' has no recipes: import some with `dishcam recipes import FILE`",
            pack.manifest.name
        );
    }
    if let Some(dir) = paths.index.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let dim = pack
        .manifest
        .text_encoder
        .as_ref()
        .map_or(0, |t| t.embedding_dim);
    let classes = food101_classes(pack);
    // Recipe texts go through the embedding cache: a rebuild after an import embeds only the
    // new recipes. One single-threaded encoder per core.
    let embedder = crate::features::Embedder {
        pack,
        backend,
        opts: LoadOptions {
            session: dishcam_runtime::backend::SessionOptions {
                threads: Some(1),
                ..opts.session.clone()
            },
            precision: index_precision(pack, opts.precision),
        },
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quiet,
        cache: crate::features::default_cache_dir().ok(),
    };
    let mut embed = |texts: &[String]| -> dishcam_recipes::Result<Vec<f32>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows = embedder
            .texts(&refs)
            .map_err(|e| dishcam_recipes::RecipeError::Invalid(format!("{e:#}")))?;
        Ok(rows.concat())
    };
    let stats = dishcam_recipes::index::build_from_stores(
        &paths.index,
        &stores,
        &encoder_id(pack, opts)?,
        dim,
        usize::MAX,
        &mut embed,
        &classes,
        &dishcam_recipes::BuildParams::default(),
        &mut |_stage: &BuildStage| {},
    )?;
    Ok(stats.count)
}

/// The class ids of the pack's default image head (the dishes recipes are precomputed for).
fn food101_classes(pack: &Pack) -> Vec<String> {
    let m = &pack.manifest;
    m.default_head
        .as_deref()
        .and_then(|n| m.head(n))
        .and_then(|h| dishcam_runtime::head::read_labels(pack, h).ok())
        .unwrap_or_default()
}

/// Opens the pack's recipe index for the encoder in `opts`.
pub fn open_index(pack: &Pack, opts: &LoadOptions) -> anyhow::Result<RecipeIndex> {
    let paths = RecipePaths::of(pack);
    if !paths.index.is_file() {
        bail!(
            "{}: no recipe index yet; build it with `dishcam recipes index build`",
            paths.index.display()
        );
    }
    Ok(RecipeIndex::open(
        &paths.index,
        Some(&encoder_id(pack, opts)?),
    )?)
}

pub fn run(cmd: &RecipesCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        RecipesCommand::Import(a) => import(a, quiet),
        RecipesCommand::Index {
            command: IndexCommand::Build(a),
        } => {
            let pack = a.engine.open_pack()?;
            let backend = a.engine.backend()?;
            let opts = a.engine.load_options()?;
            let t = Instant::now();
            let n = build_index(&pack, backend.as_ref(), &opts, quiet)?;
            let path = RecipePaths::of(&pack).index;
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            if a.json {
                print_json(
                    &json!({"schema": "dishcam.recipes.index/1", "recipes": n, "index": show(&path), "bytes": bytes, "seconds": t.elapsed().as_secs_f64()}),
                );
            } else {
                println!(
                    "indexed {n} recipes in {:.1} s: {} ({bytes} bytes)",
                    t.elapsed().as_secs_f64(),
                    show(&path)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RecipesCommand::Search(a) => search(a),
        RecipesCommand::Show(a) => {
            let pack = a.engine.open_pack()?;
            let idx = open_index(&pack, &a.engine.load_options()?)?;
            let r = idx.show(&a.id)?;
            if a.json {
                print_json(&serde_json::to_value(&r)?);
            } else {
                print_recipe(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn import(a: &ImportArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let format: Format = a
        .format
        .parse()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let pack = a.engine.open_pack()?;
    let paths = RecipePaths::of(&pack);
    if let Some(dir) = paths.imported.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {elapsed} (eta {eta})")
            .expect("valid template"),
    );
    let report = dishcam_recipes::import_into_store(&a.files, format, &paths.imported, &mut |p| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.bytes_read);
    })?;
    bar.finish_and_clear();
    // Nothing usable in the input (not merely recipes already imported): an error, so scripts
    // notice, naming the first problem. The store was not changed.
    let unusable = report.skip_reasons.keys().any(|k| k != "duplicate");
    if report.imported == 0 && unusable {
        let first = report.errors.first().map_or(String::new(), |e| {
            format!(": {}#{}: {}", e.file.display(), e.record, e.message)
        });
        bail!(
            "no recipe imported, {} record(s) skipped{first}; check the file and its format (--format recipe1m|recipenlg|jsonld|jsonl)",
            report.skipped
        );
    }
    let backend = a.engine.backend()?;
    let opts = a.engine.load_options()?;
    let indexed = build_index(&pack, backend.as_ref(), &opts, quiet)?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["schema"] = json!("dishcam.recipes.import/1");
        v["store"] = json!(show(&paths.imported));
        v["indexed"] = json!(indexed);
        print_json(&v);
    } else {
        println!(
            "imported {} recipes, skipped {} ({}); index now holds {indexed}",
            report.imported,
            report.skipped,
            report
                .skip_reasons
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for e in &report.errors {
            eprintln!("  skipped {}#{}: {}", e.file.display(), e.record, e.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn search(a: &SearchArgs) -> anyhow::Result<ExitCode> {
    let pack = a.engine.open_pack()?;
    let backend = a.engine.backend()?;
    let opts = a.engine.load_options()?;
    let idx = open_index(&pack, &opts)?;
    let mut encoder = TextEncoder::load(&pack, backend.as_ref(), &opts)?;
    let t0 = Instant::now();
    let q = encoder.encode(&a.query)?;
    let t1 = Instant::now();
    let filter = ExcludeFilter::new(&a.exclude);
    let hits = if a.exact {
        idx.search_exact(&q, a.top, &filter)?
    } else {
        idx.search(&q, a.top, &filter, &SearchParams::default())?
    };
    let t2 = Instant::now();
    if a.json {
        print_json(&json!({
            "schema": "dishcam.recipes.search/1",
            "query": a.query,
            "exclude": a.exclude,
            "exact": a.exact,
            "hits": hits.iter().map(|h| json!({"id": h.id, "title": h.title, "score": h.score})).collect::<Vec<_>>(),
            "timings_ms": {"encode": (t1 - t0).as_secs_f64() * 1e3, "search": (t2 - t1).as_secs_f64() * 1e3},
        }));
    } else {
        for (i, h) in hits.iter().enumerate() {
            println!("{:>2}. {:<50} {:.3}  {}", i + 1, h.title, h.score, h.id);
        }
        if hits.is_empty() {
            println!("no recipes match");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_recipe(r: &dishcam_recipes::Recipe) {
    println!("{} ({})", r.title, r.id);
    if let Some(c) = &r.food101_class {
        println!("dish: {c}");
    }
    println!("ingredients:");
    for i in &r.ingredients {
        println!("  - {i}");
    }
    println!("steps:");
    for (n, s) in r.instructions.iter().enumerate() {
        println!("  {}. {s}", n + 1);
    }
    if let Some(u) = &r.url {
        println!("source: {u}");
    }
}

/// Recipes for a predicted dish, for `classify` output; `None` when the pack has no index.
pub fn for_dish(idx: Option<&RecipeIndex>, class: &str, k: usize) -> Vec<serde_json::Value> {
    let Some(idx) = idx else { return Vec::new() };
    idx.dish_recipes(class, k, &ExcludeFilter::new::<&str>(&[]))
        .unwrap_or_default()
        .into_iter()
        .map(|h| json!({"id": h.id, "title": h.title}))
        .collect()
}

/// Whether the index at `path` exists and can be opened for this encoder.
pub fn index_is_current(pack: &Pack, opts: &LoadOptions) -> bool {
    open_index(pack, opts).is_ok()
}
