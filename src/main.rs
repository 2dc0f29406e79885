//! `dishcam`: the command line. Each command parses its arguments, makes its library calls and
//! renders the result; shared options and output helpers are in [`cli`]. Logs go to stderr,
//! results to stdout.

mod bench;
mod board;
mod calibrate;
mod classify;
mod cli;
mod embed;
mod eval;
mod models;
mod recipes;
#[cfg(feature = "web")]
mod serve;
mod teach;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    #[command(after_help = "Examples:
  dishcam embed image dish.jpg --json
  dishcam embed text \"a bowl of pho\"")]
    Embed {
        #[command(subcommand)]
        what: embed::EmbedWhat,
    },
    /// Fit a dish head from folder-per-class photos and save it in the pack's user overlay.
    Teach(teach::TeachArgs),
    /// Evaluate a head: accuracy, per-class accuracy, confusion matrix, calibration.
    #[command(after_help = "Examples:
  dishcam eval classify --data food101/images --split holdout --out report/")]
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Import, index, search and show recipes.
    #[command(after_help = "Examples:
  dishcam recipes search \"spicy noodle soup\" --exclude peanut
  dishcam recipes show food101-pho
  dishcam recipes import layer1.json")]
    Recipes {
        #[command(subcommand)]
        command: recipes::RecipesCommand,
    },
    /// Make INT8 variants of a pack's encoders from real photos (Q/DQ ONNX for onnxruntime and
    /// TensorRT, a TensorRT calibration cache, and a report of agreement with fp32).
    Calibrate(calibrate::CalibrateArgs),
    /// Install, check and describe model packs.
    #[command(after_help = "Examples:
  dishcam models pull lite          # build and install the default pack (idempotent)
  dishcam models info lite          # encoders, preprocessing, heads, files
  dishcam models verify lite        # every file and hash against pack.toml")]
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
    #[command(after_help = "Examples:
  dishcam board info
  dishcam board info --json")]
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(all(unix, feature = "web"))]
    let serving = matches!(cli.command, Command::Serve(_));
    #[cfg(not(all(unix, feature = "web")))]
    let serving = false;
    if !serving {
        quiet_on_closed_pipe();
    }
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
            eprintln!("error: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Output into a closed pipe (`dishcam models info | head`) ends the process quietly, as it does
/// for other Unix tools, instead of a panic in `println!`: Rust ignores SIGPIPE, so every write
/// would fail with EPIPE. Not for `serve`, where a client that hangs up must not end the server.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // Safety: called at the start of main, before any thread is started; it only restores the
    // default action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
