//! The harness: parse the matrix, load every configuration, run the scenarios interleaved, and
//! assemble the report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dishcam_capture::decode::{decode_bytes, DecodeOptions};
use dishcam_eval::evaluate::Split;
use dishcam_eval::loadgen::Minimums;
use dishcam_models::{Home, Pack, Precision};
use dishcam_runtime::backend::{self, Backend, BackendError, BackendKind};
use dishcam_runtime::pack_recipes::open_index;
use dishcam_runtime::pipeline::{Pipeline, PipelineConfig};

use crate::engine::{self, Column, Engine, Photo, SharedEngine, StageTimes};
use crate::error::{invalid, BenchError, Context, Result};
use crate::{plot, report, startup};

/// What to benchmark: the same choices as `dishcam bench`'s options.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// An installed pack's name or a pack directory.
    pub pack: String,
    /// Scenarios: single-stream, multi-stream, offline.
    pub scenario: Vec<String>,
    /// Backends to compare: onnxruntime, openvino, tract (tensorrt where built).
    pub backend: Vec<String>,
    /// Precisions to compare: fp32, int8.
    pub precision: Vec<String>,
    /// Intra-op thread counts to compare (empty: every core).
    pub threads: Vec<usize>,
    /// Folder of photos to feed (subfolders included); `None`: generated ones.
    pub images: Option<PathBuf>,
    /// Use at most this many photos of `images`, evenly spaced over their sorted paths.
    pub samples: usize,
    /// Which photos of `images` (by file stem, the split `teach` uses), with its fraction.
    pub split: Split,
    pub holdout: f64,
    /// Minimum queries per configuration and column (single-stream default 1024, multi-stream
    /// 459).
    pub min_queries: Option<usize>,
    /// Minimum offline passes over the photos per configuration and column (default 3).
    pub min_passes: Option<usize>,
    /// Minimum run duration per scenario, seconds (default 60; LoadGen's is 600).
    pub min_duration: Option<f64>,
    /// A quick run: too short to be valid, and the report says so.
    pub quick: bool,
    /// Queries per configuration and column run before timing starts.
    pub warmup: Option<usize>,
    /// Configuration the ratios are taken against (e.g. onnxruntime/fp32/2t; default: the
    /// first).
    pub baseline: Option<String>,
    /// Skip the start-up and resident-memory measurements (child processes).
    pub no_startup: bool,
    /// Let onnxruntime's worker threads spin between runs.
    pub spinning: bool,
    /// onnxruntime graph optimisation: disable, basic, extended, all.
    pub optimization: String,
    /// Largest photo accepted, in pixels.
    pub max_pixels: u64,
    /// Draw the SVG plots.
    pub plots: bool,
    /// Server scenario: mean arrival rate of the Poisson query stream, queries per second.
    pub server_qps: f64,
    /// Server scenario: the p99 latency bound (arrival to answer, queueing included), ms.
    pub server_latency_ms: f64,
}

/// A finished run: the report as JSON (schema `dishcam.bench/1`) and Markdown, and the SVG
/// plots (file name, content) when asked for.
pub struct BenchOutput {
    pub json: serde_json::Value,
    pub markdown: String,
    pub plots: Vec<(String, String)>,
}

/// The scenarios, with LoadGen's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scenario {
    /// One sample per query, the next when the previous completes; the p90 matters.
    SingleStream,
    /// Eight samples per query; the p99 matters.
    MultiStream,
    /// Every sample at once; throughput matters.
    Offline,
    /// One sample per query, queries arriving at random (Poisson) at a target rate; the p99 of
    /// arrival-to-answer latency, queueing included, must stay under a bound.
    Server,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::SingleStream => "single-stream",
            Scenario::MultiStream => "multi-stream",
            Scenario::Offline => "offline",
            Scenario::Server => "server",
        }
    }

    /// A scenario by name (LoadGen's, with or without the dash).
    pub fn parse(s: &str) -> Result<Scenario> {
        match s {
            "single-stream" | "singlestream" => Ok(Scenario::SingleStream),
            "multi-stream" | "multistream" => Ok(Scenario::MultiStream),
            "offline" => Ok(Scenario::Offline),
            "server" => Ok(Scenario::Server),
            other => invalid!("unknown scenario '{other}'; available: single-stream, multi-stream, offline, server"),
        }
    }

    /// Samples per query.
    pub fn samples_per_query(self) -> usize {
        match self {
            Scenario::MultiStream => 8,
            _ => 1,
        }
    }

    /// The percentile the scenario reports.
    pub fn tail(self) -> Option<f64> {
        match self {
            Scenario::SingleStream => Some(0.9),
            Scenario::MultiStream | Scenario::Server => Some(0.99),
            Scenario::Offline => None,
        }
    }
}

/// One point of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub backend: BackendKind,
    pub precision: Precision,
    pub threads: usize,
}

impl Config {
    pub fn id(&self) -> String {
        format!("{}/{}/{}t", self.backend, self.precision, self.threads)
    }
}

/// A configuration the matrix names but cannot run, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub config: String,
    pub why: String,
}

/// Latencies of one configuration and column in one scenario.
pub struct Cell {
    pub engine: usize,
    pub column: Column,
    /// Per query: the total, then each stage (summed over the query's samples).
    pub totals: Vec<Duration>,
    pub stages: Vec<Vec<Duration>>,
    /// Host-to-device, compute, device-to-host of the image encoder per query (GPU backends).
    pub device: Vec<[Duration; 3]>,
}

/// Offline throughput of one configuration and column: samples per second of each pass.
pub struct Throughput {
    pub engine: usize,
    pub column: Column,
    pub passes: Vec<f64>,
}

pub enum Measured {
    Latency {
        cells: Vec<Cell>,
        duration: Duration,
    },
    Offline {
        cells: Vec<Throughput>,
        samples: usize,
        duration: Duration,
    },
}

pub struct ScenarioRun {
    pub scenario: Scenario,
    /// What the run was asked for.
    pub minimums: Minimums,
    /// What the scenario needs for a VALID verdict.
    pub official: Minimums,
    pub measured: Measured,
}

fn parse_backends(names: &[String]) -> Result<Vec<BackendKind>> {
    let mut out = Vec::new();
    for name in names {
        match name.parse::<BackendKind>() {
            Ok(k) if !out.contains(&k) => out.push(k),
            Ok(_) => {}
            Err(BackendError::NotCompiled { backend, hint }) => invalid!(
                "backend '{backend}' is not compiled in ({hint}); available: {}",
                available_backends()
            ),
            Err(_) => invalid!(
                "unknown backend '{name}'; available: {}",
                available_backends()
            ),
        }
    }
    if out.is_empty() {
        invalid!("no backend given; available: {}", available_backends());
    }
    Ok(out)
}

/// The backends this build has, each with why it cannot run here when it cannot.
fn available_backends() -> String {
    BackendKind::ALL
        .iter()
        .map(|&k| match backend::backend(k) {
            Ok(_) => k.as_str().to_string(),
            Err(e) => format!("{k} (not usable here: {e})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_precisions(pack: &Pack, names: &[String]) -> Result<Vec<Precision>> {
    let enc = pack
        .manifest
        .image_encoder
        .as_ref()
        .with_context(|| format!("pack '{}' has no image encoder", pack.manifest.name))?;
    let have: Vec<&str> = enc.variants.keys().map(|p| p.as_str()).collect();
    let mut out = Vec::new();
    for name in names {
        let p: Precision = name.parse().map_err(|e: dishcam_models::ParseError| {
            BenchError::Invalid(format!(
                "{e}; the pack '{}' has: {}",
                pack.manifest.name,
                have.join(", ")
            ))
        })?;
        if !enc.variants.contains_key(&p) {
            if p == Precision::Int8 {
                invalid!(
                    "pack '{}' has no int8 variant (it has: {}); make one with `dishcam calibrate --pack {} --images DIR`",
                    pack.manifest.name,
                    have.join(", "),
                    pack.manifest.name
                );
            }
            invalid!(
                "pack '{}' has no {p} variant; it has: {}",
                pack.manifest.name,
                have.join(", ")
            );
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        invalid!("no precision given; the pack has: {}", have.join(", "));
    }
    Ok(out)
}

/// Photos from `dir` (sorted by name, at most `limit`), checked to decode; or, without a
/// folder, a few generated ones written to `scratch`.
fn photos(
    dir: Option<&Path>,
    (limit, split, holdout): (usize, Split, f64),
    decode: &DecodeOptions,
    scratch: &Path,
    labels: &[String],
) -> Result<(Vec<Photo>, String)> {
    let dir_given = dir.is_some();
    let (dir, what) = match dir {
        Some(d) => (
            d.to_path_buf(),
            match split {
                Split::All => format!("{} (up to {limit}, evenly spaced by path)", d.display()),
                _ => format!(
                    "{} (its {} split at {holdout}, by file name as `teach` splits; up to {limit}, evenly spaced by path)",
                    d.display(),
                    split.as_str()
                ),
            },
        ),
        None => {
            generate_photos(scratch)?;
            (
                scratch.to_path_buf(),
                "8 generated 640x480 JPEG test patterns (not food; pass --images DIR for real photos)".into(),
            )
        }
    };
    let mut files = Vec::new();
    list_files(&dir, &mut files).with_context(|| {
        format!(
            "{}: cannot list the photo folder; check --images",
            dir.display()
        )
    })?;
    files.sort();
    if dir_given {
        files.retain(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            split.keeps(stem, holdout)
        });
    }
    // Evenly spaced over the sorted list, so that folder-per-class data sets give every class.
    if files.len() > limit {
        let n = files.len();
        files = (0..limit).map(|i| files[i * n / limit].clone()).collect();
    }
    let mut out = Vec::new();
    let mut bad = 0;
    for path in files {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).with_context(|| format!("{name}: cannot read"))?;
        // Generated photos are not food: only --images folders carry labels.
        let label = match dir_given {
            true => path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| labels.iter().position(|l| l == n)),
            false => None,
        };
        match decode_bytes(&bytes, &name, decode) {
            Ok(_) => out.push(Photo { name, bytes, label }),
            Err(e) => {
                bad += 1;
                log::warn!("skipped: {e}");
            }
        }
    }
    if out.is_empty() {
        invalid!(
            "{}: no photo there decodes ({bad} files skipped); give --images a folder of JPEG/PNG photos",
            dir.display()
        );
    }
    Ok((out, what))
}

/// Files under `dir` and its subfolders, skipping hidden ones.
fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            list_files(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Eight 640x480 JPEGs of the synthetic scenes (decode cost is real; the content is not food).
fn generate_photos(dir: &Path) -> Result<()> {
    use dishcam_capture::{render_pattern, SCENES};
    std::fs::create_dir_all(dir)?;
    for i in 0..8u32 {
        let (w, h) = (640u32, 480u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        render_pattern(i as u64 * 7, i as u64 % SCENES, w, h, &mut rgb);
        let img = image::RgbImage::from_raw(w, h, rgb).context("pattern size")?;
        img.save(dir.join(format!("pattern-{i}.jpg")))
            .context("writing a generated photo")?;
    }
    Ok(())
}

/// Texts for the with-text path: the dish names, as someone would type them.
fn texts(labels: &[String]) -> Vec<String> {
    labels
        .iter()
        .map(|l| format!("{} for dinner", l.replace('_', " ")))
        .collect()
}

/// Runs the benchmark `req` describes; `say` hears of each step (loading a configuration,
/// starting a scenario) for the caller to show.
pub fn run(req: &BenchRequest, say: &dyn Fn(&str)) -> Result<BenchOutput> {
    let args = req;
    let started = std::time::SystemTime::now();
    let scenarios = args
        .scenario
        .iter()
        .map(|s| Scenario::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let kinds = parse_backends(&args.backend)?;
    let home = Home::from_env()?;
    let pack = Pack::open(&args.pack, &home)?;
    let precisions = parse_precisions(&pack, &args.precision)?;
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        invalid!("--threads: thread counts must be at least 1");
    }
    let optimization = args
        .optimization
        .parse()
        .map_err(|e: dishcam_models::ParseError| BenchError::Invalid(e.0))?;
    let decode = DecodeOptions {
        max_pixels: args.max_pixels,
    };
    let scratch = tempfile::tempdir()?;
    let labels = Arc::new(engine::head_labels(&pack)?);
    let (photos, photo_source) = photos(
        args.images.as_deref(),
        (args.samples.max(1), args.split, args.holdout),
        &decode,
        &scratch.path().join("photos"),
        &labels,
    )?;
    let photos = Arc::new(photos);
    let texts = texts(&labels);

    // The matrix, with what cannot run named and explained.
    let mut configs = Vec::new();
    let mut skipped = Vec::new();
    for &backend in &kinds {
        for &precision in &precisions {
            for &t in &threads {
                let config = Config {
                    backend,
                    precision,
                    threads: t,
                };
                if backend == BackendKind::Tract && precision == Precision::Int8 {
                    skipped.push(Skipped {
                        config: config.id(),
                        why: "tract reads only the first scale of per-channel Q/DQ and would compute wrong numbers; int8 runs on onnxruntime".into(),
                    });
                } else {
                    configs.push(config);
                }
            }
        }
    }
    if configs.is_empty() {
        invalid!(
            "nothing to run: {}",
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.config, s.why))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    // Start-up and resident memory in fresh processes, before this one maps the libraries.
    let startup = if args.no_startup {
        Vec::new()
    } else {
        let progress = |m: &str| say(m);
        startup::measure(
            &pack,
            &args.pack,
            &configs,
            &photos[0].name,
            &home,
            progress,
        )?
    };

    // Backends, each opened once; an unavailable one is an error that says why.
    let mut backends: Vec<(BackendKind, Arc<dyn Backend>)> = Vec::new();
    for &k in &kinds {
        if configs.iter().any(|c| c.backend == k) {
            let b = backend::backend(k).with_context(|| {
                format!("cannot benchmark {k}; available: {}", available_backends())
            })?;
            backends.push((k, Arc::from(b)));
        }
    }
    let recipes = match open_index(&pack, &dishcam_runtime::LoadOptions::default()) {
        Ok(idx) => Some(Arc::new(idx)),
        Err(e) => {
            log::warn!("no recipe lookups timed: {e}");
            None
        }
    };
    let shared = engine::Shared {
        pack: &pack,
        labels: labels.clone(),
        recipes: recipes.clone(),
        decode,
        optimization,
        spinning: args.spinning,
        first_photo: &photos[0],
    };
    let mut engines = Vec::new();
    for c in &configs {
        say(&format!("loading {}", c.id()));
        let b = &backends
            .iter()
            .find(|(k, _)| *k == c.backend)
            .expect("opened above")
            .1;
        let e = Engine::load(c.clone(), b, &shared)
            .with_context(|| format!("loading configuration {}", c.id()))?;
        engines.push(Arc::new(Mutex::new(e)));
    }

    let baseline = match &args.baseline {
        Some(b) => configs.iter().position(|c| &c.id() == b).with_context(|| {
            format!(
                "--baseline {b}: no such configuration; the matrix has {}",
                configs
                    .iter()
                    .map(Config::id)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => 0,
    };

    let sampler = dishcam_board::Sampler::start(
        dishcam_board::detect(Path::new("/")),
        Duration::from_millis(500),
    );
    let usage_before = startup::self_usage();
    let t_run = Instant::now();
    let mut runs = Vec::new();
    let mut inferences = 0u64;
    for &scenario in &scenarios {
        let minimums = minimums(args, scenario);
        say(&format!(
            "{}: {} configurations, at least {} {} and {:.0} s",
            scenario.as_str(),
            configs.len(),
            minimums.queries,
            if scenario == Scenario::Offline {
                "passes"
            } else {
                "queries each"
            },
            minimums.duration.as_secs_f64()
        ));
        let warmup = args.warmup.unwrap_or(if args.quick { 2 } else { 10 });
        let measured = match scenario {
            Scenario::Offline => offline(&engines, &photos, decode, &minimums)?,
            Scenario::Server => server(&engines, &photos, &minimums, warmup, args.server_qps)?,
            _ => latency(scenario, &engines, &photos, &texts, &minimums, warmup)?,
        };
        inferences += match &measured {
            Measured::Latency { cells, .. } => cells
                .iter()
                .map(|c| (c.totals.len() * scenario.samples_per_query()) as u64)
                .sum::<u64>(),
            Measured::Offline { cells, samples, .. } => cells
                .iter()
                .map(|c| (c.passes.len() * samples) as u64)
                .sum::<u64>(),
        };
        runs.push(ScenarioRun {
            scenario,
            minimums,
            official: official_minimums(scenario),
            measured,
        });
    }
    let wall = t_run.elapsed();
    let usage_after = startup::self_usage();
    let board_unavailable = sampler.unavailable();
    let board = sampler.stop();

    // Top-1 on the labelled photos, each once per configuration (outside the timed run).
    let accuracy = engines
        .iter()
        .map(|e| top_one(e, &photos))
        .collect::<Result<Vec<_>>>()?;

    let engines: Vec<Engine> = engines
        .into_iter()
        .map(|e| {
            Arc::try_unwrap(e)
                .ok()
                .and_then(|m| m.into_inner().ok())
                .expect("the pipelines have stopped")
        })
        .collect();
    let report = report::Report {
        started,
        pack: &pack,
        photo_source,
        photos: photos.len(),
        configs: &configs,
        skipped: &skipped,
        engines: &engines,
        baseline,
        runs: &runs,
        startup: &startup,
        wall,
        cpu_seconds: usage_after.cpu_seconds - usage_before.cpu_seconds,
        peak_rss_mb: startup::peak_rss_mb(),
        board: &board,
        board_unavailable: &board_unavailable,
        inferences,
        quick: args.quick,
        accuracy: &accuracy,
        server_latency_ms: args.server_latency_ms,
        server_qps: args.server_qps,
    };
    let json = report.json();
    let markdown = report.markdown();
    let plots = if args.plots {
        plot::all(&report)?
    } else {
        Vec::new()
    };
    Ok(BenchOutput {
        json,
        markdown,
        plots,
    })
}

/// Top-1 of `engine`'s per-frame path over the photos that carry a label; `None` when none do.
fn top_one(engine: &Mutex<Engine>, photos: &[Photo]) -> Result<Option<report::TopOne>> {
    let mut e = engine.lock().expect("not poisoned");
    let mut times: StageTimes = Default::default();
    let mut t = report::TopOne::default();
    for (i, p) in photos.iter().enumerate() {
        let Some(label) = p.label else { continue };
        e.run(Column::Pipeline, p, "", i as u64, &mut times)?;
        t.photos += 1;
        match e.last_top1 {
            None => t.no_dish += 1,
            Some(c) if c == label => t.correct += 1,
            Some(_) => {}
        }
    }
    Ok((t.photos > 0).then_some(t))
}

/// The minimums the run is asked for: the scenario's (LoadGen's), lowered by `--quick`, and
/// `--min-*` in place of either.
fn minimums(args: &BenchRequest, scenario: Scenario) -> Minimums {
    let (queries, secs) = match (scenario, args.quick) {
        (Scenario::Offline, true) => (1, 0.0),
        (Scenario::MultiStream, true) => (16, 2.0),
        (Scenario::SingleStream | Scenario::Server, true) => (64, 2.0),
        (_, false) => {
            let official = official_minimums(scenario);
            (official.queries, official.duration.as_secs_f64())
        }
    };
    let wanted = match scenario {
        Scenario::Offline => args.min_passes,
        _ => args.min_queries,
    };
    Minimums {
        queries: wanted.unwrap_or(queries).max(1),
        duration: Duration::from_secs_f64(args.min_duration.unwrap_or(secs).max(0.0)),
        tail: scenario.tail(),
        confidence: 0.99,
    }
}

/// What a scenario needs for a VALID verdict (LoadGen's minimums, scaled to an edge device as
/// docs/benchmarking.md says); a run that asked for less is INDICATIVE at best.
pub fn official_minimums(scenario: Scenario) -> Minimums {
    let (queries, secs) = match scenario {
        Scenario::Offline => (3, 60.0),
        // LoadGen's server minimum is 270,336 queries over 600 s, for data-centre racks; an
        // edge device gets the single-stream minimums, with the p99 bounded as LoadGen does.
        Scenario::SingleStream | Scenario::Server => (1024, 60.0),
        // 459, not 270: fewer queries cannot bound a p99 at 99 % confidence, so a run at 270
        // could never be VALID (docs/benchmarks.md of 2026-12-07 has such rows).
        Scenario::MultiStream => (459, 60.0),
    };
    Minimums {
        queries,
        duration: Duration::from_secs_f64(secs),
        tail: scenario.tail(),
        confidence: 0.99,
    }
}

/// Single- and multi-stream: one query per configuration and column in turn, until every one
/// has its minimum queries and the run its minimum duration.
fn latency(
    scenario: Scenario,
    engines: &[Arc<Mutex<Engine>>],
    photos: &[Photo],
    texts: &[String],
    min: &Minimums,
    warmup: usize,
) -> Result<Measured> {
    let mut cells = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        let e = e.lock().expect("not poisoned");
        for column in Column::ALL {
            if e.has(column) {
                cells.push(Cell {
                    engine: i,
                    column,
                    totals: Vec::new(),
                    stages: vec![Vec::new(); column.stages().len()],
                    device: Vec::new(),
                });
            }
        }
    }
    let per_query = scenario.samples_per_query();
    let mut times: StageTimes = Default::default();
    let mut query = |cell: &mut Cell, first: usize, record: bool| -> Result<()> {
        let mut e = engines[cell.engine].lock().expect("not poisoned");
        let mut sums: StageTimes = Default::default();
        let mut device = [Duration::ZERO; 3];
        let mut on_device = false;
        let t0 = Instant::now();
        for k in 0..per_query {
            let n = first + k;
            e.run(
                cell.column,
                &photos[n % photos.len()],
                &texts[n % texts.len()],
                n as u64,
                &mut times,
            )?;
            for (s, t) in sums.iter_mut().zip(&times) {
                *s += *t;
            }
            if let Some(d) = e.last_device.take() {
                on_device = true;
                for (s, t) in device.iter_mut().zip([d.h2d, d.compute, d.d2h]) {
                    *s += t;
                }
            }
        }
        let total = t0.elapsed();
        if record {
            cell.totals.push(total);
            if on_device {
                cell.device.push(device);
            }
            for (v, t) in cell.stages.iter_mut().zip(&sums) {
                v.push(*t);
            }
        }
        Ok(())
    };
    for w in 0..warmup {
        for cell in cells.iter_mut() {
            query(cell, w * per_query, false)?;
        }
    }
    let start = Instant::now();
    let mut n = 0;
    loop {
        for cell in cells.iter_mut() {
            query(cell, n, true)?;
        }
        n += per_query;
        if start.elapsed() >= min.duration && cells.iter().all(|c| c.totals.len() >= min.queries) {
            break;
        }
    }
    Ok(Measured::Latency {
        cells,
        duration: start.elapsed(),
    })
}

/// Server: for each configuration in turn (arrivals are timed, so configurations cannot
/// interleave), queries arrive as a Poisson process at `qps` (seeded, the same arrival times for
/// every configuration) and are answered one at a time by the per-frame path; a query's latency
/// runs from its scheduled arrival to its answer, so time spent queued behind earlier queries
/// counts, as in LoadGen's server scenario.
fn server(
    engines: &[Arc<Mutex<Engine>>],
    photos: &[Photo],
    min: &Minimums,
    warmup: usize,
    qps: f64,
) -> Result<Measured> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    if !(qps.is_finite() && qps > 0.0) {
        invalid!("--server-qps: the arrival rate must be a positive number of queries per second, not {qps}");
    }
    let gaps = rand_distr::Exp::new(qps).expect("a positive rate");
    let mut cells = Vec::new();
    let mut times: StageTimes = Default::default();
    let mut shortest = Duration::MAX;
    for (i, engine) in engines.iter().enumerate() {
        let mut e = engine.lock().expect("not poisoned");
        for w in 0..warmup {
            e.run(
                Column::Pipeline,
                &photos[w % photos.len()],
                "",
                w as u64,
                &mut times,
            )?;
        }
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5e_47e7);
        let column = Column::Pipeline;
        let mut cell = Cell {
            engine: i,
            column,
            totals: Vec::new(),
            stages: vec![Vec::new(); column.stages().len()],
            device: Vec::new(),
        };
        let t0 = Instant::now();
        let mut arrival = Duration::ZERO;
        let mut n = 0usize;
        while n < min.queries || arrival < min.duration {
            arrival += Duration::from_secs_f64(gaps.sample(&mut rng));
            if let Some(wait) = arrival.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            e.run(column, &photos[n % photos.len()], "", n as u64, &mut times)?;
            cell.totals.push(t0.elapsed().saturating_sub(arrival));
            for (v, t) in cell.stages.iter_mut().zip(&times) {
                v.push(*t);
            }
            n += 1;
        }
        shortest = shortest.min(t0.elapsed());
        cells.push(cell);
    }
    Ok(Measured::Latency {
        cells,
        // Each configuration ran its own stream: the shortest is what every cell had at least.
        duration: if shortest == Duration::MAX {
            Duration::ZERO
        } else {
            shortest
        },
    })
}

/// Offline: every photo, as fast as it goes, per configuration: through the pipelined runtime
/// (decode on the capture thread while the encoder runs), through the naive sequential loop,
/// and the bare encoder alone (the ceiling). Passes interleave configurations.
fn offline(
    engines: &[Arc<Mutex<Engine>>],
    photos: &Arc<Vec<Photo>>,
    decode: DecodeOptions,
    min: &Minimums,
) -> Result<Measured> {
    let mut cells = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        let e = e.lock().expect("not poisoned");
        for column in [Column::Pipeline, Column::Naive, Column::Bare] {
            if e.has(column) {
                cells.push(Throughput {
                    engine: i,
                    column,
                    passes: Vec::new(),
                });
            }
        }
    }
    let n = photos.len();
    let start = Instant::now();
    let mut times: StageTimes = Default::default();
    loop {
        for cell in cells.iter_mut() {
            let engine = &engines[cell.engine];
            let t0 = Instant::now();
            match cell.column {
                Column::Pipeline => {
                    let source = Box::new(engine::MemorySource::new(photos.clone(), decode));
                    let config = PipelineConfig {
                        backpressure: true,
                        ..PipelineConfig::default()
                    };
                    let p =
                        Pipeline::start(source, Box::new(SharedEngine(engine.clone())), config)?;
                    let mut done = 0;
                    while p.recv().is_some() {
                        done += 1;
                    }
                    let counts = p.stop()?;
                    if done != n || counts.source_errors > 0 {
                        invalid!(
                            "offline pipeline classified {done} of {n} photos ({} source errors)",
                            counts.source_errors
                        );
                    }
                }
                Column::Naive => {
                    let mut e = engine.lock().expect("not poisoned");
                    for (i, photo) in photos.iter().enumerate() {
                        e.run(Column::Naive, photo, "", i as u64, &mut times)?;
                    }
                }
                Column::Bare => engine.lock().expect("not poisoned").bare_runs(n)?,
                Column::PipelineText => unreachable!("not an offline column"),
            }
            cell.passes.push(n as f64 / t0.elapsed().as_secs_f64());
        }
        if start.elapsed() >= min.duration && cells.iter().all(|c| c.passes.len() >= min.queries) {
            break;
        }
    }
    Ok(Measured::Offline {
        cells,
        samples: n,
        duration: start.elapsed(),
    })
}
