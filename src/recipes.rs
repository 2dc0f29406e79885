//! `dishcam recipes`: import recipes into the pack's overlay, build the recipe index with the
//! pack's text encoder, search it, show a recipe. Where the files live and how the index is
//! built: `dishcam_runtime::pack_recipes`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use dishcam_recipes::{ExcludeFilter, Format, SearchParams};
use dishcam_runtime::pack_recipes::{build_index, open_index, RecipePaths};
use dishcam_runtime::TextEncoder;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::cli::{print_json, show, Bar, EngineArgs};

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
#[command(after_help = "Examples:
  dishcam recipes import layer1.json                # Recipe1M
  dishcam recipes import RecipeNLG_dataset.csv       # RecipeNLG
  dishcam recipes import saved_pages/               # schema.org JSON-LD in .html/.json files")]
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
#[command(after_help = "Examples:
  dishcam recipes search \"spicy noodle soup\"
  dishcam recipes search \"cake\" --exclude peanut,gluten --top 10 --json")]
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
#[command(after_help = "Examples:
  dishcam recipes show food101-pho")]
pub struct ShowArgs {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
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
            let n = build_index(&pack, backend.as_ref(), &opts, &Bar::new(quiet))?;
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
    let indexed = build_index(&pack, backend.as_ref(), &opts, &Bar::new(quiet))?;
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
    if a.query.trim().is_empty() {
        bail!("the search query is empty; give a dish or ingredients, e.g. `dishcam recipes search \"spicy noodle soup\"`");
    }
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
