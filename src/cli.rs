//! What every command shares: the engine options (pack, backend, precision, threads), output
//! helpers (JSON lines, paths as given, progress bars) and the rendering of answers that
//! several commands print. Commands import this module, never `main.rs` or each other.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use dishcam_capture::decode::{DecodeOptions, DEFAULT_MAX_PIXELS};
use dishcam_models::{Home, Pack, Precision};
use dishcam_recipes::Hit;
use dishcam_runtime::autoselect;
use dishcam_runtime::backend::{Backend, BackendChoice, SessionOptions};
use dishcam_runtime::classify::Scored;
use dishcam_runtime::embedder::{default_cache_dir, Embedder, Progress};
use dishcam_runtime::{DishClassifier, DishOptions, LoadOptions, NoDish};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Options shared by every command that runs a model.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Model pack: an installed pack's name or a pack directory.
    #[arg(long, default_value = "lite", env = "DISHCAM_PACK")]
    pub pack: String,
    /// Inference backend: auto (the fastest of onnxruntime and openvino for this pack on this
    /// machine, measured once and cached; tract when neither loads), onnxruntime, openvino or
    /// tract.
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
    /// Name a dish for every photo: skip the pack's no-dish check (for a camera that only ever
    /// sees food, or a head taught on photos the check does not take for food).
    #[arg(long)]
    pub no_dish_check: bool,
}

impl EngineArgs {
    pub fn open_pack(&self) -> anyhow::Result<Pack> {
        let home = Home::from_env()?;
        Ok(Pack::open(&self.pack, &home)?)
    }

    /// Opens the backend. `auto` takes the engine that ran this pack's image encoder fastest
    /// on this machine at this precision and thread count (measured once, then cached; see
    /// [`autoselect`]) and says on stderr, in one line, what it chose and why.
    pub fn backend(&self) -> anyhow::Result<Arc<dyn Backend>> {
        let choice: BackendChoice = self.backend.parse()?;
        let home = Home::from_env().ok();
        let (backend, notice) = autoselect::open_choice(
            choice,
            self.open_pack(),
            home.as_ref(),
            &self.load_options()?,
        )?;
        if let Some(notice) = notice {
            eprintln!("note: {notice}");
        }
        Ok(Arc::from(backend))
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
                    .collect::<Result<_, dishcam_models::ParseError>>()
                    .map_err(anyhow::Error::msg)?,
                spinning: false,
            },
        })
    }

    /// Opens the pack and the backend and loads the dish chain `options` describe.
    pub fn dish_classifier(&self, options: &DishOptions<'_>) -> anyhow::Result<DishClassifier> {
        let pack = self.open_pack()?;
        let backend = self.backend()?;
        let options = DishOptions {
            no_dish_check: options.no_dish_check && !self.no_dish_check,
            ..*options
        };
        Ok(DishClassifier::load(
            &pack,
            backend,
            &self.load_options()?,
            &options,
        )?)
    }

    /// For commands that encode many inputs: one single-threaded encoder per worker, as many
    /// workers as --threads (default: every core).
    pub fn embedder<'a>(
        &self,
        pack: &'a Pack,
        backend: &'a dyn Backend,
        progress: &'a dyn Progress,
        no_cache: bool,
    ) -> anyhow::Result<Embedder<'a>> {
        let mut opts = self.load_options()?;
        opts.session.threads = Some(1);
        Ok(Embedder {
            pack,
            backend,
            opts,
            workers: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            progress,
            cache: if no_cache {
                None
            } else {
                Some(default_cache_dir()?)
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
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Milliseconds rounded to 3 decimals, as the JSON schemas give them.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `top` array of `dishcam.classify/1` (also the web API's): rank, class, label,
/// probability.
pub fn top_json(top: &[Scored], labels: &[String]) -> serde_json::Value {
    top.iter()
        .enumerate()
        .map(|(r, s)| {
            json!({
                "rank": r + 1,
                "class": s.class,
                "label": dishcam_runtime::dish::label_of(labels, s.class),
                "probability": s.probability,
            })
        })
        .collect()
}

/// The `no_dish` object of `dishcam.classify/1` (also of `watch` events and the web API's):
/// the photo's food score, the threshold it fell under and why (`not-food`, `too-small`); null
/// when the photo shows a dish.
pub fn no_dish_json(no_dish: Option<&NoDish>) -> serde_json::Value {
    match no_dish {
        Some(n) => json!({
            "score": n.score,
            "threshold": n.threshold,
            "reason": n.reason.as_str(),
        }),
        None => serde_json::Value::Null,
    }
}

/// Recipes for a dish as `classify`, `watch` and the live page list them: id and title.
pub fn recipes_json(hits: &[Hit]) -> Vec<serde_json::Value> {
    hits.iter()
        .map(|h| json!({"id": h.id, "title": h.title}))
        .collect()
}

/// A progress bar on stderr for library jobs (hidden with `-q`); a new bar per job.
pub struct Bar {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        Bar {
            quiet,
            bar: Mutex::new(None),
        }
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bar.lock().expect("progress lock").as_ref() {
            f(b)
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64, what: &str) {
        let bar = progress_bar(self.quiet, total as usize, what);
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        self.with(|b| b.inc(n));
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}

/// A spinner with a message, for steps of unknown length (hidden when `quiet`).
pub fn spinner(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The error and its causes on one line, without repeating a cause the message already contains.
pub fn one_line(e: &anyhow::Error) -> String {
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

/// A progress bar over `len` items called `what` (hidden when `quiet`).
pub fn progress_bar(quiet: bool, len: usize, what: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {what} {{elapsed}} (eta {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

/// Which photos a command takes, by the hash split `teach --holdout` uses (the file stem's
/// FNV-1a): `eval` and `bench` share it.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// Every example.
    All,
    /// Examples whose id falls in the hold-out split (`teach --holdout`).
    Holdout,
    /// Examples outside the hold-out split.
    Train,
}

impl SplitArg {
    pub fn split(self) -> dishcam_eval::evaluate::Split {
        use dishcam_eval::evaluate::Split;
        match self {
            SplitArg::All => Split::All,
            SplitArg::Holdout => Split::Holdout,
            SplitArg::Train => Split::Train,
        }
    }
}
