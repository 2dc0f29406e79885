//! `dishcam eval classify|no-dish|probe|retrieval`: the options, the library call (`dishcam_eval`) and the
//! printed report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dishcam_eval::{
    calibrate_no_dish, evaluate_head, evaluate_no_dish, evaluate_retrieval, HeadEval, NoDishEval,
    RetrievalEval,
};
use dishcam_models::HeadInput;
use dishcam_runtime::dataset::list_class_folders;
use serde_json::json;

use crate::cli::{print_json, show, Bar, EngineArgs, SplitArg};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Evaluate a head on folder-per-class photos, labelled texts, or both paired by class.
    Classify(EvalClassifyArgs),
    /// "No dish": the share of food photos that keep a dish and of photos without one that are
    /// answered "no dish", through the serving path; or calibrate the check's thresholds.
    NoDish(EvalNoDishArgs),
    /// The shortcut probe: how well a linear probe on encoder embeddings tells two sources of
    /// the same photos apart (50 % = indistinguishable), both prepared as the head prepares them.
    Probe(EvalProbeArgs),
    /// Image <-> recipe retrieval (medR, R@1/5/10 over bags of 1k and 10k pairs, H-T's
    /// protocol) for packs whose image and recipe embeddings share a space.
    Retrieval(EvalRetrievalArgs),
}

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam eval retrieval --pairs recipe1m/ --partition test --pack my-retrieval-pack")]
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

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam eval no-dish --food data/food101-64px/train --food data/food101-10class/train \\
      --split holdout --non-food skimage-data/ --generated
  dishcam eval no-dish --food data/food101-10class/train --split train --calibrate 0.97 \\
      --write install/assets/lite/no_dish.json")]
pub struct EvalNoDishArgs {
    /// Folder-per-class food photos (repeatable): each should keep its dish.
    #[arg(long, required = true)]
    food: Vec<PathBuf>,
    /// Folders of photos that show no dish (repeatable, searched recursively).
    #[arg(long)]
    non_food: Vec<PathBuf>,
    /// Also generated frames with no dish: uniform colours, noise, gradients, colour bars, 1x1
    /// and 1x4000.
    #[arg(long)]
    generated: bool,
    /// Which food photos (by the hash split `teach --holdout` uses).
    #[arg(long, value_enum, default_value = "all")]
    split: SplitArg,
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Image head (default: the pack's).
    #[arg(long)]
    head: Option<String>,
    /// Calibrate instead: set the check's thresholds so that this share of the food photos
    /// keeps its dish, and print (or --write) the check.
    #[arg(long)]
    calibrate: Option<f32>,
    /// With --calibrate: write the calibrated check (JSON) here.
    #[arg(long, requires = "calibrate")]
    write: Option<PathBuf>,
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam eval probe --a data/food101-64px/train --b data/food101-10class/train")]
pub struct EvalProbeArgs {
    /// Folder-per-class photos of source A.
    #[arg(long)]
    a: PathBuf,
    /// Folder-per-class photos of source B; photos with the same class and id as in A are paired.
    #[arg(long)]
    b: PathBuf,
    /// Prepare photos as this head does (default: the pack's image head).
    #[arg(long)]
    head: Option<String>,
    /// Prepare no photo (the sources as they come), to see the shortcut a head without a
    /// preparation could learn.
    #[arg(long)]
    as_they_come: bool,
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam eval classify --data food101/images --split holdout --out report/
  dishcam eval classify --text-csv titles.csv --head food101-text
  dishcam eval classify --data photos/ --text-csv titles.csv   # fusion head on class-paired pairs")]
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
    split: SplitArg,
    /// Hold-out fraction used by `teach` (only with --split holdout|train).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
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

pub fn run(cmd: &EvalCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        EvalCommand::Classify(args) => args,
        EvalCommand::NoDish(args) => return no_dish(args, quiet),
        EvalCommand::Probe(args) => return probe(args, quiet),
        EvalCommand::Retrieval(args) => return retrieval(args, quiet),
    };
    let req = HeadEval {
        data: args.data.clone(),
        text_csv: args.text_csv.clone(),
        head: args.head.clone(),
        split: args.split.split(),
        holdout: args.holdout,
        temperature: args.temperature,
        decode: args.engine.decode_options(),
    };
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let bar = Bar::new(quiet);
    let embedder = args
        .engine
        .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
    let ev = evaluate_head(&pack, backend.clone(), &opts, &embedder, &req)?;
    if let Some(out) = &args.out {
        ev.write(out)?;
    }
    if args.json {
        print_json(&ev.json);
    } else {
        let report = &ev.report;
        let pct = |x: Option<f64>| x.map_or("n/a".into(), |a| format!("{:.2}%", a * 100.0));
        println!("{}", ev.title);
        println!(
            "  examples {}, top-1 {}, top-5 {}, ECE {}, NLL {} (temperature {:.2})",
            report.examples,
            pct(report.top1),
            pct(report.top5),
            report.ece.map_or("n/a".into(), |e| format!("{e:.4}")),
            report.nll.map_or("n/a".into(), |e| format!("{e:.4}")),
            ev.temperature
        );
        let a = &ev.answers_inside;
        println!(
            "  answers inside the data's {} of {} classes: {:.1}% (chance {:.1}%)",
            a.data_classes,
            a.head_classes,
            a.share * 100.0,
            a.chance * 100.0
        );
        if let Some(out) = &args.out {
            println!("  report written to {}", show(out));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn no_dish(args: &EvalNoDishArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let decode = args.engine.decode_options();
    let req = NoDishEval {
        food: args.food.clone(),
        non_food: args.non_food.clone(),
        generated: args.generated,
        split: args.split.split(),
        holdout: args.holdout,
        head: args.head.clone(),
        decode,
    };
    if let Some(recall) = args.calibrate {
        let base = pack.manifest.no_dish.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "pack '{}' has no [no_dish] check to calibrate; add one to its manifest first",
                pack.manifest.name
            )
        })?;
        let bar = Bar::new(quiet);
        let embedder = args
            .engine
            .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
        let check = calibrate_no_dish(&embedder, &req, &base, recall)?;
        let text = serde_json::to_string_pretty(&check)? + "\n";
        match &args.write {
            Some(path) => {
                dishcam_models::pack::write_atomic(path, text.as_bytes())?;
                println!(
                    "thresholds {:.4} (full size), {:.4} (thumbnails) written to {}: {}",
                    check.threshold,
                    check.thumbnail_threshold,
                    show(path),
                    check.note
                );
            }
            None => print!("{text}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ev = evaluate_no_dish(&pack, backend, &opts, &req)?;
    if args.json {
        let mut v = serde_json::to_value(&ev)?;
        v["schema"] = "dishcam.eval.no-dish/1".into();
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    match &ev.check {
        Some(c) => println!(
            "no-dish check: food score under {:.4} (photos {} px and up on the shorter side) or {:.4} (thumbnails), or under {} px: no dish",
            c.threshold, c.thumbnail_below, c.thumbnail_threshold, c.min_side
        ),
        None => println!("pack '{}' has no no-dish check: every photo is answered with a dish", pack.manifest.name),
    }
    if let Some(p) = &ev.prepare {
        println!("photo preparation: {p}");
    }
    for s in &ev.sets {
        let what = if s.kind == "food" {
            "kept a dish"
        } else {
            "answered no dish"
        };
        println!(
            "  {:<9} {:>5} photos, {what}: {}  ({})",
            s.kind,
            s.photos,
            pct(s.share),
            s.set
        );
        for w in &s.wrong {
            println!("            dish named: {w}");
        }
    }
    if let Some(r) = ev.food_recall {
        println!("food photos that kept a dish: {}", pct(r));
    }
    if let Some(r) = ev.non_food_rejection {
        println!("photos without a dish answered \"no dish\": {}", pct(r));
    }
    println!(
        "classify latency per photo: median {:.1} ms, p90 {:.1} ms",
        ev.latency_ms_median, ev.latency_ms_p90
    );
    Ok(ExitCode::SUCCESS)
}

fn probe(args: &EvalProbeArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let prepare = if args.as_they_come {
        None
    } else {
        let head = pack
            .manifest
            .resolve_head(args.head.as_deref(), HeadInput::Photo)?;
        pack.manifest.preparation_of(head)
    };
    let bar = Bar::new(quiet);
    let embedder = args
        .engine
        .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
    let a = list_class_folders(&args.a)?;
    let b = list_class_folders(&args.b)?;
    let r = dishcam_heads::probe::source_probe(
        &embedder,
        &a,
        &b,
        prepare,
        &args.engine.decode_options(),
        args.folds,
    )?;
    let prep = r
        .prepare
        .clone()
        .unwrap_or_else(|| "none (photos as they come)".into());
    if args.json {
        print_json(&json!({
            "schema": "dishcam.eval.probe/1",
            "a": show(&args.a),
            "b": show(&args.b),
            "pairs": r.pairs,
            "folds": r.folds,
            "accuracy": r.accuracy,
            "fold_accuracy": r.fold_accuracy,
            "prepare": r.prepare,
        }));
    } else {
        println!(
            "source probe: {} photo ids in both sets, prepared as {prep}",
            r.pairs
        );
        println!(
            "  held-out accuracy telling {} from {}: {:.1}% ({} folds by id; 50% = indistinguishable)",
            show(&args.a),
            show(&args.b),
            r.accuracy * 100.0,
            r.folds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn retrieval(args: &EvalRetrievalArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let bar = Bar::new(quiet);
    let embedder = args
        .engine
        .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
    let req = RetrievalEval {
        pairs: args.pairs.clone(),
        images: args.images.clone(),
        partition: args.partition.clone(),
        seed: args.seed,
        decode: args.engine.decode_options(),
    };
    let ev = evaluate_retrieval(&pack, &embedder, &req)?;
    if args.json {
        print_json(&ev.json);
    } else {
        println!(
            "{}: {} pairs ({} recipes without an image skipped)",
            pack.manifest.name, ev.pairs, ev.no_image
        );
        for r in &ev.results {
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
