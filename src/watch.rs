//! `dishcam watch SOURCE`: the live pipeline on a camera, a video, a folder of photos or a
//! synthetic pattern. One JSON line per dish event and a periodic stats line; a summary at the
//! end of the stream (or after --max-frames).

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use dishcam_capture::{self as source, SourceOptions};
use dishcam_eval::timing::Samples;
use dishcam_models::HeadInput;
use dishcam_runtime::pack_recipes::{dish_recipes, open_index, SUGGESTED};
use dishcam_runtime::pipeline::{
    Counts, FrameClassifier, FrameResult, Pipeline, PipelineConfig, Received, SavingClassifier,
};
use dishcam_runtime::smoothing::{DishEvent, SmoothingConfig};
use dishcam_runtime::{DishOptions, FusionHead, TextEncoder};
use serde_json::json;

use crate::cli::{no_dish_json, print_json, recipes_json, EngineArgs};

mod text_context;

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam watch \"synthetic://?fps=30&size=640x480\" --max-frames 300
  dishcam watch v4l2:///dev/video0 --json              # a USB camera (feature camera-v4l)
  dishcam watch dir://photos/ --text-from notes.txt     # each new line is the text context")]
pub struct WatchArgs {
    /// Frame source: synthetic://?fps=30&size=640x480, file://photo.jpg, dir://DIR (or
    /// dir://DIR/*.jpg), v4l2:///dev/video0, csi://0, gst://PIPELINE, or a path.
    pub source: String,
    /// One JSON object per line (schema `dishcam.watch/1`, see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many frames have been through inference (classified, or gated: the
    /// encoder skipped for an unchanged scene).
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Skip the encoder when the scene changed less than this (mean absolute difference of a
    /// 32x24 grey thumbnail, 0-255); 0 disables the gate.
    #[arg(long, default_value_t = 2.0)]
    pub gate: f32,
    /// Seconds between stats lines (0: only the summary).
    #[arg(long, default_value_t = 2.0)]
    pub stats_every: f64,
    /// Text fused with every frame by the pack's fusion head (e.g. a meal plan).
    #[arg(long, conflicts_with = "text_from")]
    pub text: Option<String>,
    /// Read the text context from FILE (followed as it grows, like `tail -f`) or `-` (stdin):
    /// each new line replaces the context and is fused with the frames that follow; an empty
    /// line clears it (image only). Until the first line, frames are classified image only.
    #[arg(long, value_name = "FILE|-")]
    pub text_from: Option<String>,
    /// Head to classify with (default: the pack's default image head, or its fusion head
    /// with --text).
    #[arg(long)]
    pub head: Option<String>,
    /// Frame rate for sources that take one (synthetic, folders).
    #[arg(long)]
    pub fps: Option<f32>,
    /// Resize frames to this size before anything else.
    #[arg(long)]
    pub width: Option<u32>,
    #[arg(long)]
    pub height: Option<u32>,
    /// Mirror frames: h, v or both.
    #[arg(long)]
    pub flip: Option<String>,
    /// Start over at the end of a file or folder.
    #[arg(long = "loop")]
    pub loop_: bool,
    /// Smoothing: frames a dish must lead for before it is "settled".
    #[arg(long)]
    pub settle_frames: Option<u32>,
    /// Smoothing: the smoothed probability a dish must reach to settle (default 0.6); it is
    /// released below two thirds of this.
    #[arg(long)]
    pub settle_threshold: Option<f32>,
    /// Keep the frames the encoder runs on as PNG files in DIR (for `dishcam calibrate
    /// --images DIR` on this kitchen's light, or for teaching a dish).
    #[arg(long)]
    pub save_frames: Option<std::path::PathBuf>,
    /// Most frames --save-frames keeps.
    #[arg(long, default_value_t = 1000)]
    pub save_limit: usize,
    /// When a camera drops off mid-stream: `retry` reopens it with backoff (250 ms doubling to
    /// 8 s) and reports `source_lost` / `source_back`; `exit` ends with an error.
    #[arg(long, value_enum, default_value_t = OnDisconnect::Retry)]
    pub on_disconnect: OnDisconnect,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// What `watch` does when its camera drops off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDisconnect {
    Retry,
    Exit,
}

/// Per-stage latency since capture.
const STAGES: [&str; 4] = [
    "capture_to_preprocessed",
    "capture_to_encoded",
    "capture_to_classified",
    "capture_to_emitted",
];

pub fn run(args: &WatchArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let pack = args.engine.open_pack()?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    // --text: the fusion head, with the text fused with every frame; --text-from: the image
    // head, and the fusion head beside it for the frames that follow a line of text.
    let mut dish = dishcam_runtime::DishClassifier::load(
        &pack,
        backend.clone(),
        &opts,
        &DishOptions {
            head: args.head.as_deref(),
            input: match args.text {
                Some(_) => HeadInput::PhotoAndText,
                None => HeadInput::Photo,
            },
            fusion: match args.text_from {
                Some(_) => FusionHead::Required(None),
                None => FusionHead::No,
            },
            no_dish_check: !args.engine.no_dish_check,
        },
    )?;
    if let Some(t) = &args.text {
        dish.set_text(Some(t))?;
    }
    let labels = dish.labels().to_vec();
    let updates = match &args.text_from {
        Some(from) => {
            if let Some((fusion, fusion_labels)) = dish.fusion_head() {
                if fusion_labels != labels.as_slice() {
                    anyhow::bail!(
                        "--text-from: fusion head '{}' and image head '{}' name different classes; pick heads with the same labels (--head)",
                        fusion.name,
                        dish.head().name
                    );
                }
            }
            let encoder = TextEncoder::load(&pack, backend.as_ref(), &opts)?;
            Some(text_context::follow(from, encoder, args.json)?)
        }
        None => None,
    };
    let recipes = open_index(&pack, &opts).ok();
    let source_opts = SourceOptions {
        width: args.width,
        height: args.height,
        fps: args.fps,
        flip: match args.flip.as_deref() {
            None => source::Flip::None,
            Some(f) => f.parse().map_err(anyhow::Error::msg)?,
        },
        loop_: args.loop_,
        max_pixels: args.engine.max_pixels,
        reconnect: source::Backoff {
            max_attempts: (args.on_disconnect == OnDisconnect::Exit).then_some(0),
            ..Default::default()
        },
    };
    let src = source::open(&args.source, &source_opts)
        .with_context(|| format!("cannot open {}", args.source))?;
    let health = src.health();
    let mut seen_outages = (0, 0);
    // A paced source (camera, synthetic, --fps) is live: a frame inference cannot take in time
    // is dropped. Files and folders read unpaced are classified frame by frame.
    let backpressure = src.fps_hint().is_none();
    let mut smoothing = SmoothingConfig::default();
    if let Some(n) = args.settle_frames {
        smoothing.settle_frames = n;
    }
    if let Some(p) = args.settle_threshold {
        smoothing.settle_threshold = p;
        smoothing.release_threshold = p * 2.0 / 3.0;
    }
    let config = PipelineConfig {
        smoothing,
        gate: (args.gate > 0.0).then_some(args.gate),
        max_frames: args.max_frames,
        backpressure,
        ..Default::default()
    };
    let frame_classifier: Box<dyn FrameClassifier> = match updates {
        Some(updates) => Box::new(text_context::LiveText {
            inner: dish,
            updates,
        }),
        None => Box::new(dish),
    };
    let frame_classifier: Box<dyn FrameClassifier> = match &args.save_frames {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create the frame directory", dir.display()))?;
            Box::new(SavingClassifier {
                inner: frame_classifier,
                dir: dir.clone(),
                limit: args.save_limit,
                saved: 0,
            })
        }
        None => frame_classifier,
    };
    let pipeline = Pipeline::start(src, frame_classifier, config)?;
    // Board telemetry (CPU, memory, power and temperatures where readable) beside the stats.
    let sampler = dishcam_board::Sampler::start(
        dishcam_board::detect(Path::new("/")),
        Duration::from_millis(500),
    );
    // Ctrl-C ends the stream cleanly, with the summary.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
            log::warn!("Ctrl-C will not print a summary: {e}");
        }
    }

    // The whole run's summary keeps a bounded reservoir per stage: a camera runs for months.
    let mut samples: Vec<Samples> = vec![Samples::bounded(8192); STAGES.len()];
    let mut window: Vec<Samples> = vec![Samples::default(); STAGES.len()];
    let mut last_stats = Instant::now();
    let mut last_counts = pipeline.counts();
    let label = |c: usize| labels.get(c).cloned().unwrap_or_else(|| c.to_string());
    let top_json = |r: &FrameResult| -> Vec<serde_json::Value> {
        r.top[..r.top_len]
            .iter()
            .map(|(c, p)| json!({"class": c, "label": label(*c), "probability": p}))
            .collect()
    };
    loop {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let result = match pipeline.recv_timeout(Duration::from_millis(200)) {
            Received::Result(r) => Some(r),
            Received::Timeout => None,
            Received::Ended => break,
        };
        if let Some(r) = result {
            let emitted = Instant::now();
            let s = r.stamps;
            let since_capture = [
                s.preprocessed - s.captured,
                s.encoded - s.captured,
                s.classified - s.captured,
                emitted - s.captured,
            ];
            for (i, d) in since_capture.into_iter().enumerate() {
                // A gated frame was not preprocessed, encoded or classified: only its emit is
                // timed, so the model's stages are not flattered by the frames it skipped.
                if r.gated && i + 1 < STAGES.len() {
                    continue;
                }
                samples[i].push(d);
                // Without stats lines the window is never read or reset.
                if args.stats_every > 0.0 {
                    window[i].push(d);
                }
            }
            if let Some(ev) = r.event {
                emit_event(args.json, &ev, &r, &label, &top_json(&r), recipes.as_ref());
            }
        }
        if let Some(h) = &health {
            report_outages(args.json, h, &mut seen_outages, args.on_disconnect);
        }
        if args.stats_every > 0.0 && last_stats.elapsed().as_secs_f64() >= args.stats_every {
            let now = pipeline.counts();
            let secs = last_stats.elapsed().as_secs_f64();
            let fps_in = (now.captured - last_counts.captured) as f64 / secs;
            let fps_out = (now.through_inference() - last_counts.through_inference()) as f64 / secs;
            let telemetry = json!(sampler.latest());
            emit_stats(
                args.json, quiet, "stats", fps_in, fps_out, &now, &window, telemetry,
            );
            window = vec![Samples::default(); STAGES.len()];
            last_stats = Instant::now();
            last_counts = now;
        }
    }
    let elapsed = pipeline.elapsed().as_secs_f64();
    let stopped = pipeline.stop();
    if let Some(h) = &health {
        report_outages(args.json, h, &mut seen_outages, args.on_disconnect);
    }
    let counts = stopped?;
    let board = sampler.stop();
    let fps_in = counts.captured as f64 / elapsed.max(1e-9);
    let fps_out = counts.through_inference() as f64 / elapsed.max(1e-9);
    let telemetry = json!({
        "peak_rss_mb": board.peak_rss_mb,
        "mean_cpu_util": board.mean_cpu_util,
        "mean_power_mw": board.mean_power_mw,
        "energy_mj": board.energy_mj,
        "energy_per_frame_mj": board.energy_per_item(counts.classified),
    });
    emit_stats(
        args.json, false, "summary", fps_in, fps_out, &counts, &samples, telemetry,
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints `source_lost` and `source_back` for what the source went through since the last call;
/// `seen` is (disconnects, reconnects) already reported.
fn report_outages(
    as_json: bool,
    health: &source::SourceHealth,
    seen: &mut (u64, u64),
    then: OnDisconnect,
) {
    let lost = health.disconnects.load(Ordering::Relaxed);
    let back = health.reconnects.load(Ordering::Relaxed);
    if (lost, back) == *seen {
        return;
    }
    let Some(o) = health.last_outage() else {
        return;
    };
    if lost > seen.0 {
        if as_json {
            print_json(&json!({
                "schema": "dishcam.watch/1",
                "type": "event",
                "event": "source_lost",
                "reason": o.reason,
                "disconnects": lost,
                "reconnecting": then == OnDisconnect::Retry,
            }));
        } else {
            let next = match then {
                OnDisconnect::Retry => "reconnecting",
                OnDisconnect::Exit => "exiting (--on-disconnect exit)",
            };
            eprintln!("source lost: {}; {next}", o.reason);
        }
    }
    if back > seen.1 {
        let down_ms = o.back.map(|b| (b - o.lost).as_secs_f64() * 1e3);
        if as_json {
            print_json(&json!({
                "schema": "dishcam.watch/1",
                "type": "event",
                "event": "source_back",
                "down_ms": down_ms,
                "attempts": o.attempts,
                "reconnects": back,
            }));
        } else {
            eprintln!(
                "source back after {:.0} ms ({} attempts)",
                down_ms.unwrap_or(0.0),
                o.attempts
            );
        }
    }
    *seen = (lost, back);
}

fn emit_event(
    as_json: bool,
    ev: &DishEvent,
    r: &FrameResult,
    label: &dyn Fn(usize) -> String,
    top: &[serde_json::Value],
    recipes: Option<&dishcam_recipes::RecipeIndex>,
) {
    let (kind, class, probability) = ev.outcome();
    let dish = class.map(label);
    let suggestions = match &dish {
        Some(d) => recipes_json(&dish_recipes(recipes, d, SUGGESTED)),
        None => vec![],
    };
    if as_json {
        print_json(&json!({
            "schema": "dishcam.watch/1",
            "type": "event",
            "event": kind,
            "dish": dish,
            "class": class,
            "probability": probability,
            "frame": ev.frame(),
            "seq": r.seq,
            "top": top,
            "recipes": suggestions,
            "no_dish": no_dish_json(r.no_dish.as_ref()),
        }));
    } else {
        match (&dish, probability) {
            (Some(d), Some(p)) => println!(
                "frame {}: {kind} {d} ({:.1} %){}",
                ev.frame(),
                p * 100.0,
                suggestions
                    .first()
                    .and_then(|r| r["title"].as_str())
                    .map(|t| format!(", recipe: {t}"))
                    .unwrap_or_default()
            ),
            _ => match &r.no_dish {
                Some(n) => println!("frame {}: {kind}: {n}", ev.frame()),
                None => println!("frame {}: {kind}", ev.frame()),
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit_stats(
    as_json: bool,
    quiet: bool,
    kind: &str,
    fps_in: f64,
    fps_out: f64,
    counts: &Counts,
    samples: &[Samples],
    telemetry: serde_json::Value,
) {
    let latency: serde_json::Map<String, serde_json::Value> = STAGES
        .iter()
        .zip(samples)
        .map(|(name, s)| {
            let v = s.summary().map_or(
                serde_json::Value::Null,
                |m| json!({"p50_ms": m.median_ms, "p90_ms": m.p90_ms, "max_ms": m.max_ms}),
            );
            (name.to_string(), v)
        })
        .collect();
    if as_json {
        print_json(&json!({
            "schema": "dishcam.watch/1",
            "type": kind,
            "fps_in": fps_in,
            "fps_out": fps_out,
            "counts": counts,
            "latency": latency,
            "telemetry": telemetry,
        }));
    } else if !quiet || kind == "summary" {
        let p90 = samples
            .last()
            .and_then(|s| s.summary())
            .map_or("-".into(), |m| format!("{:.1} ms", m.p90_ms));
        let cpu = ["cpu_util", "mean_cpu_util"]
            .iter()
            .find_map(|k| telemetry[k].as_f64())
            .map_or(String::new(), |u| format!(", cpu {:.0} %", u * 100.0));
        let power = ["power_mw", "mean_power_mw"]
            .iter()
            .find_map(|k| telemetry[k].as_f64())
            .map_or(String::new(), |p| format!(", {:.1} W", p / 1e3));
        let errors = match counts.source_errors {
            0 => String::new(),
            n => format!(", {n} source errors"),
        };
        eprintln!(
            "{kind}: {fps_in:.1} fps in, {fps_out:.1} fps out, {} captured: {} classified ({} no dish), {} gated, {} dropped{errors}, capture->emit p90 {p90}{cpu}{power}",
            counts.captured, counts.classified, counts.no_dish, counts.gated, counts.dropped
        );
    }
}
