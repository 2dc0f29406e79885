//! `dishcam eval classify`: accuracy, per-class accuracy, confusion matrix and calibration of a
//! pack's head on a folder-per-class photo set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use dishcam_models::manifest::HeadKind;
use dishcam_models::pack::write_atomic;
use dishcam_runtime::classify::softmax_in_place;
use dishcam_runtime::dataset::{is_holdout, list_class_folders};
use dishcam_runtime::eval::{report_markdown, Metrics};
use dishcam_runtime::head::{read_labels, HeadModel};

use crate::teach::embed_images;
use crate::{print_json, show, EngineArgs};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Evaluate a head on folder-per-class photos (folders named by class id).
    Classify(EvalClassifyArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    /// Every photo.
    All,
    /// Photos whose id falls in the hold-out split (`teach --holdout`).
    Holdout,
    /// Photos outside the hold-out split.
    Train,
}

#[derive(Args)]
pub struct EvalClassifyArgs {
    /// Folder-per-class photos; may hold fewer classes than the head predicts over.
    #[arg(long)]
    data: PathBuf,
    /// Head to evaluate (default: the pack's default head).
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
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(cmd: &EvalCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    let EvalCommand::Classify(args) = cmd;
    let pack = args.engine.open_pack()?;
    let m = &pack.manifest;
    let head_name = args
        .head
        .clone()
        .or_else(|| m.default_head.clone())
        .with_context(|| format!("pack '{}' has no default head; pass --head", m.name))?;
    let head = m
        .head(&head_name)
        .with_context(|| format!("pack '{}' has no head '{head_name}'", m.name))?;
    if head.kind != HeadKind::Image {
        bail!(
            "head '{head_name}' is a {:?} head; `eval classify --data` evaluates image heads",
            head.kind
        );
    }
    let labels = read_labels(&pack, head)?;
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let items: Vec<_> = list_class_folders(&args.data)?
        .into_iter()
        .filter(|i| match args.split {
            Split::All => true,
            Split::Holdout => is_holdout(&i.id, args.holdout),
            Split::Train => !is_holdout(&i.id, args.holdout),
        })
        .collect();
    if items.is_empty() {
        bail!(
            "{}: no photos in the {} split",
            show(&args.data),
            split_name(args.split)
        );
    }
    if let Some(i) = items.iter().find(|i| !index.contains_key(i.class.as_str())) {
        bail!(
            "{}: class folder '{}' is not a class of head '{head_name}' (its classes are e.g. {})",
            show(&args.data),
            i.class,
            labels
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let workers = args
        .engine
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let single = dishcam_runtime::LoadOptions {
        session: dishcam_runtime::backend::SessionOptions { threads: Some(1) },
        ..opts.clone()
    };
    let features = embed_images(
        &pack,
        backend.as_ref(),
        &single,
        &items,
        head.encoder_output.as_deref(),
        args.degrade,
        &args.engine.decode_options(),
        workers,
        quiet,
    )?;
    let mut model = match head.encoder_output {
        Some(_) => None,
        None => Some(HeadModel::load(&pack, head, backend.as_ref(), &opts)?),
    };
    let temperature = args.temperature.unwrap_or(head.temperature);
    let mut metrics = Metrics::new(labels.len(), 15);
    let mut skipped = 0;
    for (item, f) in items.iter().zip(&features) {
        let Some(f) = f else {
            skipped += 1;
            continue;
        };
        let mut probs = match model.as_mut() {
            Some(h) => h.logits(f)?,
            None => f.clone(),
        };
        softmax_in_place(&mut probs, temperature);
        metrics.add(index[item.class.as_str()], &probs);
    }
    let title = format!(
        "{} / head {} on {} ({} split)",
        m.name,
        head_name,
        show(&args.data),
        split_name(args.split)
    );
    let report = metrics.report(&labels);
    let mut v = serde_json::to_value(&report)?;
    v["schema"] = serde_json::json!("dishcam.eval.classify/1");
    v["pack"] = serde_json::json!(m.name);
    v["head"] = serde_json::json!(head_name);
    v["data"] = serde_json::json!(show(&args.data));
    v["split"] = serde_json::json!(split_name(args.split));
    v["temperature"] = serde_json::json!(temperature);
    v["skipped"] = serde_json::json!(skipped);
    v["backend"] = serde_json::json!(backend.kind().as_str());
    v["precision"] = serde_json::json!(opts.precision.as_str());
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
            "  photos {}, top-1 {}, top-5 {}, ECE {}, NLL {} (temperature {temperature:.2})",
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
