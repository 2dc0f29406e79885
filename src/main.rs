//! `dishcam`: the command line. Wiring only: the work happens in `dishcam-models` and
//! `dishcam-runtime`. Logs go to stderr, results to stdout.

mod bench;
mod board;
mod calibrate;
mod classify;
mod embed;
mod eval;
mod features;
mod models;
mod recipes;
#[cfg(feature = "web")]
mod serve;
mod teach;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dishcam_models::{Home, Pack, Precision};
use dishcam_runtime::backend::{self, BackendChoice, SessionOptions};
use dishcam_runtime::image_io::{DecodeOptions, DEFAULT_MAX_PIXELS};
use dishcam_runtime::LoadOptions;

#[derive(Parser)]
#[command(
    name = "dishcam",
    version,
    about = "Edge inference runtime for smart kitchen cameras: names the dish, measures every stage"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Name what is in each photo (top-N classes of the pack's head).
    Classify(classify::ClassifyArgs),
    /// Print the embedding of a photo or a text.
    Embed {
        #[command(subcommand)]
        what: embed::EmbedWhat,
    },
    /// Fit a dish head from folder-per-class photos and save it in the pack's user overlay.
    Teach(teach::TeachArgs),
    /// Evaluate a head: accuracy, per-class accuracy, confusion matrix, calibration.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Import, index, search and show recipes.
    Recipes {
        #[command(subcommand)]
        command: recipes::RecipesCommand,
    },
    /// Make INT8 variants of a pack's encoders from real photos (Q/DQ ONNX for onnxruntime and
    /// TensorRT, a TensorRT calibration cache, and a report of agreement with fp32).
    Calibrate(calibrate::CalibrateArgs),
    /// Install, check and describe model packs.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Watch a camera, video, folder or test pattern: settled-dish events, fps, dropped frames,
    /// per-stage latency.
    Watch(watch::WatchArgs),
    /// Benchmark scenarios (single-stream, multi-stream, offline) over backends, precisions and
    /// threads, interleaved, with a naive baseline and the bare session; JSON, Markdown, SVG.
    Bench(bench::BenchArgs),
    /// Describe the board: platform, telemetry, what cannot be read and why.
    Board {
        #[command(subcommand)]
        command: board::BoardCommand,
    },
    /// Serve the web page and HTTP API (docs/api.md): live view, dish, recipes, uploads,
    /// teaching, latency; Prometheus metrics at /metrics.
    #[cfg(feature = "web")]
    Serve(serve::ServeArgs),
    /// Serve the web page and HTTP API (not in this build: it was made without feature `web`).
    #[cfg(not(feature = "web"))]
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Options shared by every command that runs a model.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Model pack: an installed pack's name or a pack directory.
    #[arg(long, default_value = "lite", env = "DISHCAM_PACK")]
    pub pack: String,
    /// Inference backend: auto (onnxruntime when its library loads, else tract), onnxruntime
    /// or tract.
    #[arg(long, default_value = "auto", env = "DISHCAM_BACKEND")]
    pub backend: String,
    /// Model precision variant (fp32, fp16, int8).
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Intra-op threads (backend default when unset: onnxruntime uses one per physical core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// onnxruntime graph optimisation: disable, basic, extended, all.
    #[arg(long, default_value = "all")]
    pub optimization: String,
    /// onnxruntime execution providers in order of preference (cpu, cuda, tensorrt); the CUDA
    /// and TensorRT ones need an onnxruntime GPU build at ORT_DYLIB_PATH.
    #[arg(long, value_delimiter = ',')]
    pub provider: Vec<String>,
    /// Largest photo accepted, in pixels; larger ones are refused from their header.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

impl EngineArgs {
    pub fn open_pack(&self) -> anyhow::Result<Pack> {
        let home = Home::from_env()?;
        Ok(Pack::open(&self.pack, &home)?)
    }

    /// Opens the backend; `auto` says on stderr, in one line, why it fell back to tract.
    pub fn backend(&self) -> anyhow::Result<Box<dyn backend::Backend>> {
        let choice: BackendChoice = self.backend.parse()?;
        let (backend, notice) = backend::open(choice)?;
        if let Some(notice) = notice {
            eprintln!("note: {notice}");
        }
        Ok(backend)
    }

    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let precision: Precision = self.precision.parse().map_err(anyhow::Error::msg)?;
        Ok(LoadOptions {
            precision,
            session: SessionOptions {
                threads: self.threads,
                optimization: self.optimization.parse().map_err(anyhow::Error::msg)?,
                providers: self
                    .provider
                    .iter()
                    .map(|p| p.parse())
                    .collect::<Result<_, String>>()
                    .map_err(anyhow::Error::msg)?,
                spinning: false,
            },
        })
    }

    /// For commands that encode many inputs: one single-threaded encoder per worker, as many
    /// workers as --threads (default: every core).
    pub fn embedder<'a>(
        &self,
        pack: &'a Pack,
        backend: &'a dyn backend::Backend,
        quiet: bool,
        no_cache: bool,
    ) -> anyhow::Result<features::Embedder<'a>> {
        let mut opts = self.load_options()?;
        opts.session.threads = Some(1);
        Ok(features::Embedder {
            pack,
            backend,
            opts,
            workers: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            quiet,
            cache: if no_cache {
                None
            } else {
                Some(features::default_cache_dir()?)
            },
        })
    }

    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            max_pixels: self.max_pixels,
        }
    }
}

/// Writes a JSON value as one line on stdout.
pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string(v).expect("JSON values serialise")
    );
}

/// A path argument shown as given.
pub fn show(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("DISHCAM_LOG")
        .init();
    let result = match cli.command {
        Command::Calibrate(args) => calibrate::run(&args, cli.quiet),
        Command::Classify(args) => classify::run(&args),
        Command::Embed { what } => embed::run(&what),
        Command::Models { command } => models::run(&command, cli.quiet),
        Command::Teach(args) => teach::run(&args, cli.quiet),
        Command::Eval { command } => eval::run(&command, cli.quiet),
        Command::Recipes { command } => recipes::run(&command, cli.quiet),
        Command::Board { command } => board::run(&command),
        Command::Watch(args) => watch::run(&args, cli.quiet),
        Command::Bench(args) => bench::run(&args, cli.quiet),
        #[cfg(feature = "web")]
        Command::Serve(args) => serve::run(&args),
        #[cfg(not(feature = "web"))]
        Command::Serve { .. } => Err(anyhow::anyhow!(
            "this dishcam was built without the `web` feature; rebuild with `cargo build --features web`"
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause the message already contains.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out.replace('\n', " ")
}

/// Paths given on the command line, kept as given.
pub type Inputs = Vec<PathBuf>;
