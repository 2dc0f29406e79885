//! `dishcam teach`: fit dish heads on the device with the same photo path that serves
//! predictions, and save them in the pack's user overlay (or a directory with `--out`). The work
//! is `dishcam_heads::teach`; this module parses and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use dishcam_heads::{FusionMode, TeachRequest};
use dishcam_models::manifest::{Interpolation, PhotoPreparation};
use serde_json::{json, Value};

use crate::cli::{print_json, show, Bar, EngineArgs};

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam teach --images photos/ --name dishes --default   # photos/<dish>/<photo>.jpg
  dishcam teach --add-to food101 --images my_dishes/       # add dishes to the Food-101 head
  dishcam teach --text-csv titles.csv --name titles         # id,text,label rows")]
pub struct TeachArgs {
    /// Folder-per-class photo sets (DIR/<class>/<photo>); may be given several times.
    #[arg(long = "images", required_unless_present = "text_csv")]
    images: Vec<PathBuf>,
    /// A headerless `id,text,label` CSV (UPMC Food-101's titles). Alone: fit a text head. With
    /// --images: fit fusion heads on photos paired with titles of their class (a proxy).
    #[arg(long)]
    text_csv: Option<PathBuf>,
    /// Add the dishes in --images to this head: the whole head is refitted on its exemplars and
    /// the new photos (all of them train; the head keeps its temperature).
    #[arg(long, conflicts_with_all = ["text_csv", "classes"])]
    add_to: Option<String>,
    /// Name of the head to create or replace (default: "dishes"; with --add-to, that head;
    /// with fusion, "fusion", plus "<name>-late").
    #[arg(long)]
    name: Option<String>,
    /// Class ids, one per line, fixing the head's class order (default: sorted folder names).
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Fraction of ids held out for validation and temperature scaling (by a hash of the id).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Prepare every photo as Food-101's 64 px set was made: the centred square, bicubic resize
    /// to PX x PX, a JPEG round trip at --degrade-jpeg. Recorded in the head: classify, watch,
    /// serve, bench and eval prepare every photo it reads the same way.
    #[arg(long)]
    degrade: Option<u32>,
    /// JPEG quality of --degrade's round trip (0: none).
    #[arg(long, default_value_t = 75, requires = "degrade")]
    degrade_jpeg: u8,
    /// L2 penalty on standardised weights (with --add-to: on the distance from the old head).
    #[arg(long)]
    l2: Option<f64>,
    #[arg(long, default_value_t = 300)]
    max_iters: u64,
    /// Exemplars kept per class with the head, for later --add-to refits (0: none).
    #[arg(long, default_value_t = 10)]
    exemplars: usize,
    /// Fusion: the image head and text head to late-fuse and compare (default: the pack's
    /// default_head and text_head).
    #[arg(long)]
    image_head: Option<String>,
    #[arg(long)]
    text_head: Option<String>,
    /// Fusion: weight of the text head's log-probabilities in the late-fusion head.
    #[arg(long, default_value_t = 0.5)]
    text_weight: f32,
    /// Fusion: which of the two fusion heads --default makes the pack's fusion head.
    #[arg(long, value_enum, default_value = "early")]
    fusion_mode: FusionArg,
    /// Write each head to DIR/<name>/ (head.onnx, labels.txt, head.json, exemplars) instead of
    /// the pack's overlay.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Make the new head the pack's default (image head, text head or fusion head).
    #[arg(long)]
    default: bool,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FusionArg {
    Early,
    Late,
}

impl TeachArgs {
    fn request(&self) -> anyhow::Result<TeachRequest> {
        Ok(TeachRequest {
            images: self.images.clone(),
            text_csv: self.text_csv.clone(),
            add_to: self.add_to.clone(),
            name: self.name.clone(),
            classes: self.classes.clone(),
            holdout: self.holdout,
            prepare: self.degrade.map(|size| PhotoPreparation {
                size,
                resize: Interpolation::Bicubic,
                jpeg_quality: (self.degrade_jpeg > 0).then_some(self.degrade_jpeg),
            }),
            l2: self.l2,
            max_iters: self.max_iters,
            exemplars: self.exemplars,
            image_head: self.image_head.clone(),
            text_head: self.text_head.clone(),
            text_weight: self.text_weight,
            fusion_mode: match self.fusion_mode {
                FusionArg::Early => FusionMode::Early,
                FusionArg::Late => FusionMode::Late,
            },
            out: self.out.clone(),
            default: self.default,
            decode: self.engine.decode_options(),
            load: self.engine.load_options()?,
        })
    }
}

pub fn run(args: &TeachArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let bar = Bar::new(quiet);
    let embedder = args
        .engine
        .embedder(&pack, backend.as_ref(), &bar, args.no_cache)?;
    let taught = dishcam_heads::teach(&args.request()?, &pack, &embedder)?;
    if args.json {
        print_json(&json!({
            "schema": "dishcam.teach/1",
            "heads": taught.heads,
            "written": taught.written.iter().map(|p| show(p)).collect::<Vec<_>>(),
            "seconds": t0.elapsed().as_secs_f64(),
        }));
    } else {
        for h in &taught.heads {
            print_summary(h);
        }
        for w in &taught.written {
            println!("written to {}", show(w));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(h: &Value) {
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("n/a".into(), |a| format!("{:.1}%", a * 100.0))
    };
    println!(
        "head '{}' ({}): {} classes, {} training / {} held-out examples, held-out top-1 {}, temperature {:.2}",
        h["head"].as_str().unwrap_or("?"),
        h["kind"].as_str().unwrap_or("?"),
        h["classes"],
        h["train"],
        h["holdout"],
        pct(&h["holdout_top1"]),
        h["temperature"].as_f64().unwrap_or(1.0),
    );
}
