//! `dishcam eval classify|retrieval`: the options, the library call (`dishcam_eval`) and the
//! printed report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use dishcam_eval::{evaluate_head, evaluate_retrieval, HeadEval, RetrievalEval, Split};

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Every example.
    All,
    /// Examples whose id falls in the hold-out split (`teach --holdout`).
    Holdout,
    /// Examples outside the hold-out split.
    Train,
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

pub fn run(cmd: &EvalCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        EvalCommand::Classify(args) => args,
        EvalCommand::Retrieval(args) => return retrieval(args, quiet),
    };
    let req = HeadEval {
        data: args.data.clone(),
        text_csv: args.text_csv.clone(),
        head: args.head.clone(),
        split: match args.split {
            SplitArg::All => Split::All,
            SplitArg::Holdout => Split::Holdout,
            SplitArg::Train => Split::Train,
        },
        holdout: args.holdout,
        degrade: args.degrade,
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
        if let Some(out) = &args.out {
            println!("  report written to {}", show(out));
        }
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
