//! `dishcam calibrate`: INT8 variants of a pack's encoders from real photos. The work is
//! `dishcam_calibration::calibrate`; this module parses the options and prints the report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dishcam_calibration::calibrate::{calibrate, report_markdown, CalibrateRequest, KeepFp32};
use dishcam_calibration::Method;

use crate::cli::{print_json, Bar, EngineArgs};

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam calibrate --images kitchen_frames/            # int8 variants into the pack's overlay
  dishcam calibrate --images photos/ --compare max,mse  # compare calibrators in the report
  dishcam classify dish.jpg --precision int8            # then use them")]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Calibration photos: directories searched recursively (Food-101 class folders, or frames
    /// captured on the device). A hash of each file name splits them into calibration and
    /// validation photos.
    #[arg(long, required = true, num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Calibrator: entropy, percentile[:P] (default 99.99), max or mse.
    #[arg(long, default_value = "entropy")]
    pub method: String,
    /// Other calibrators to measure in the report (comma separated); only --method is written.
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<String>,
    /// Calibration photos to use (at most).
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Held-out photos for the agreement check (at most).
    #[arg(long, default_value_t = 200)]
    pub validate: usize,
    /// Fraction of photos held out for validation, by hash of the file name.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// TensorRT version in the calibration cache header (8601 = 8.6.1, 100300 = 10.3.0).
    #[arg(long, default_value_t = 8601)]
    pub trt_version: u32,
    /// Texts for the text encoder's check: a headerless `id,text,label` CSV (UPMC Food-101
    /// titles). Default: the head's class names.
    #[arg(long)]
    pub text_csv: Option<PathBuf>,
    /// Layers to leave in fp32 (no Q/DQ on their weights or inputs). `auto` ranks the
    /// quantisable layers by sensitivity on calibration photos (each layer alone left in fp32)
    /// and keeps the fewest most sensitive ones whose fp32 copy lifts the calibration photos'
    /// embedding cosine to --keep-fp32-cosine (at most --keep-fp32-max); `auto:K` keeps the K
    /// most sensitive; or layer names (comma separated; the report lists them); or `none`.
    #[arg(long, default_value = "auto")]
    pub keep_fp32: String,
    /// Mean embedding cosine with fp32, on the sensitivity photos (calibration photos), that
    /// `--keep-fp32 auto` aims for.
    #[arg(long, default_value_t = 0.999)]
    pub keep_fp32_cosine: f64,
    /// Most layers `--keep-fp32 auto` may leave in fp32.
    #[arg(long, default_value_t = 4)]
    pub keep_fp32_max: usize,
    /// Also check these numbers of most sensitive layers in fp32 on the validation photos
    /// (comma separated), for the report; needs a sensitivity ranking (`auto`, `auto:K`).
    #[arg(long, value_delimiter = ',')]
    pub compare_keep: Vec<usize>,
    /// Learned weight rounding for the image encoder, as `scripts/adaround_lite.py` writes it
    /// (`{"model_sha256": ..., "weights": {name: positions}}`). Every method's int8 model uses
    /// it, and the written table carries it.
    #[arg(long)]
    pub rounding: Option<PathBuf>,
    /// Write the artefacts to DIR instead of the pack's overlay.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl CalibrateArgs {
    fn request(&self) -> anyhow::Result<CalibrateRequest> {
        Ok(CalibrateRequest {
            images: self.images.clone(),
            method: self.method.parse()?,
            compare: self
                .compare
                .iter()
                .map(|m| m.parse())
                .collect::<Result<Vec<Method>, _>>()?,
            samples: self.samples,
            validate: self.validate,
            holdout: self.holdout,
            trt_version: self.trt_version,
            text_csv: self.text_csv.clone(),
            keep_fp32: self.keep_fp32.parse::<KeepFp32>()?,
            keep_fp32_cosine: self.keep_fp32_cosine,
            keep_fp32_max: self.keep_fp32_max,
            compare_keep: self.compare_keep.clone(),
            rounding: self.rounding.clone(),
            out: self.out.clone(),
            decode: self.engine.decode_options(),
            session: self.engine.load_options()?.session,
        })
    }
}

pub fn run(args: &CalibrateArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let req = args.request()?;
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let done = calibrate(&pack, backend.as_ref(), &req, &Bar::new(quiet))?;
    for n in &done.notes {
        eprintln!("note: {n}");
    }
    if args.json {
        print_json(&serde_json::to_value(&done.report)?);
    } else {
        print!("{}", report_markdown(&done.report));
        println!("Written to {}", done.report.written_to);
    }
    Ok(ExitCode::SUCCESS)
}
