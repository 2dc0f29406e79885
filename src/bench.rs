//! `dishcam bench`: the options, the run (`dishcam_bench::run`) and its report: Markdown on
//! stdout (or JSON), and with `--out` bench.json, bench.md and the SVG plots.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use dishcam_bench::BenchRequest;
use dishcam_capture::decode::DEFAULT_MAX_PIXELS;

use crate::cli::{print_json, SplitArg};

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam bench --quick                                    # a short, indicative run
  dishcam bench --precision fp32,int8 --threads 1,2 --out report/
  dishcam bench --images food/ --scenario single-stream --backend onnxruntime,tract")]
pub struct BenchArgs {
    /// Model pack: an installed pack's name or a pack directory.
    #[arg(long, default_value = "lite", env = "DISHCAM_PACK")]
    pack: String,
    /// Scenarios: single-stream, multi-stream, offline, server (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "single-stream,offline")]
    scenario: Vec<String>,
    /// Backends to compare (comma-separated): onnxruntime, openvino, tract (tensorrt where
    /// built).
    #[arg(long, value_delimiter = ',', default_value = "onnxruntime")]
    backend: Vec<String>,
    /// Precisions to compare (comma-separated): fp32, int8.
    #[arg(long, value_delimiter = ',', default_value = "fp32,int8")]
    precision: Vec<String>,
    /// Intra-op thread counts to compare (default: every core).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Folder of photos to feed, subfolders included (decoded from memory each query); default:
    /// generated ones.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Use at most this many photos of --images, evenly spaced over their sorted paths.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Which photos of --images, by the hash split `teach --holdout` uses: `holdout` for a
    /// summary top-1 on photos no shipped head was fitted on.
    #[arg(long, value_enum, default_value = "all")]
    split: SplitArg,
    /// Hold-out fraction of that split (only with --split holdout|train).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Minimum queries per configuration and column (single-stream default 1024, multi-stream
    /// 459).
    #[arg(long)]
    min_queries: Option<usize>,
    /// Minimum offline passes over the photos per configuration and column (default 3).
    #[arg(long)]
    min_passes: Option<usize>,
    /// Minimum run duration per scenario, seconds (default 60; LoadGen's is 600).
    #[arg(long)]
    min_duration: Option<f64>,
    /// Quick run for CI: 64 single-stream or 16 multi-stream queries, 2 s, 1 offline pass, 2
    /// warm-up queries. Too short to be a valid run, and the report says so.
    #[arg(long)]
    quick: bool,
    /// Queries per configuration and column run before timing starts.
    #[arg(long)]
    warmup: Option<usize>,
    /// Configuration the ratios are taken against (e.g. onnxruntime/fp32/2t; default: the first).
    #[arg(long)]
    baseline: Option<String>,
    /// Skip the start-to-first-answer and resident-memory measurements (child processes).
    #[arg(long)]
    no_startup: bool,
    /// Write bench.json, bench.md and SVG plots here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON (schema dishcam.bench/1) instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Let onnxruntime's worker threads spin between runs (its own default; dishcam turns it
    /// off so that one session's idle workers do not take the cores the next session needs).
    #[arg(long)]
    spinning: bool,
    /// onnxruntime graph optimisation: disable, basic, extended, all.
    #[arg(long, default_value = "all")]
    optimization: String,
    /// Largest photo accepted, in pixels.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Server scenario: mean rate of the Poisson query arrivals, queries per second (a camera
    /// at 10 frames per second by default).
    #[arg(long, default_value_t = 10.0)]
    server_qps: f64,
    /// Server scenario: the p99 latency bound, arrival to answer, in ms.
    #[arg(long, default_value_t = 100.0)]
    server_latency_ms: f64,
}

pub fn run(args: &BenchArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let req = BenchRequest {
        pack: args.pack.clone(),
        scenario: args.scenario.clone(),
        backend: args.backend.clone(),
        precision: args.precision.clone(),
        threads: args.threads.clone(),
        images: args.images.clone(),
        samples: args.samples,
        split: args.split.split(),
        holdout: args.holdout,
        min_queries: args.min_queries,
        min_passes: args.min_passes,
        min_duration: args.min_duration,
        quick: args.quick,
        warmup: args.warmup,
        baseline: args.baseline.clone(),
        no_startup: args.no_startup,
        spinning: args.spinning,
        optimization: args.optimization.clone(),
        max_pixels: args.max_pixels,
        plots: args.out.is_some(),
        server_qps: args.server_qps,
        server_latency_ms: args.server_latency_ms,
    };
    let say = |m: &str| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    let out = dishcam_bench::run(&req, &say)?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the report folder", dir.display()))?;
        let mut text = serde_json::to_string_pretty(&out.json)?;
        text.push('\n');
        write_atomic(&dir.join("bench.json"), text.as_bytes())?;
        write_atomic(&dir.join("bench.md"), out.markdown.as_bytes())?;
        for (name, svg) in &out.plots {
            write_atomic(&dir.join(name), svg.as_bytes())?;
        }
        say(&format!("wrote {}", dir.display()));
    }
    if args.json {
        print_json(&out.json);
    } else {
        print!("{}", out.markdown);
    }
    Ok(ExitCode::SUCCESS)
}

/// [`dishcam_models::pack::write_atomic`], with the file named in the error.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    dishcam_models::pack::write_atomic(path, bytes)
        .with_context(|| format!("{}: cannot write", path.display()))
}
