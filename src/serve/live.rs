//! The live pipeline behind the page: `dishcam_runtime::pipeline::Pipeline` on the source, on
//! its own threads, with a thread here that reads its results into the shared [`LiveView`],
//! the metrics and the event channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use dishcam_capture::{self as source, Frame, SourceOptions};
use dishcam_runtime::pack_recipes::{dish_recipes, open_index, SUGGESTED};
use dishcam_runtime::pipeline::{FrameClassifier, Pipeline, PipelineConfig, Received};
use dishcam_runtime::{DishOptions, RuntimeError};
use serde_json::json;

use super::state::{lock, AppState, Snapshot, HISTORY};
use crate::cli::{no_dish_json, recipes_json, EngineArgs};

/// Shortest time between two frames kept for the live view.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(150);

/// How the live pipeline is set up.
#[derive(Clone)]
pub struct LiveConfig {
    /// A frame source URI, as `dishcam watch` takes.
    pub source: String,
    pub engine: EngineArgs,
    /// Gate threshold (0 disables), frame rate, and looping, as `watch --gate/--fps/--loop`.
    pub gate: f32,
    pub fps: Option<f32>,
    pub loop_: bool,
}

/// A running live pipeline; [`LiveRunner::stop`] ends it.
pub struct LiveRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveRunner {
    /// Loads the models and starts the pipeline; errors (bad source, model) are returned
    /// before anything runs.
    pub fn start(cfg: &LiveConfig, state: &Arc<AppState>) -> anyhow::Result<LiveRunner> {
        let args = &cfg.engine;
        let dish = args.dish_classifier(&DishOptions::default())?;
        let labels = dish.labels().to_vec();
        let recipes = open_index(dish.pack(), &args.load_options()?).ok();
        let source_opts = SourceOptions {
            fps: cfg.fps,
            loop_: cfg.loop_,
            max_pixels: args.max_pixels,
            ..SourceOptions::default()
        };
        let src = source::open(&cfg.source, &source_opts)
            .with_context(|| format!("cannot open {}", cfg.source))?;
        let backpressure = src.fps_hint().is_none();
        let health = src.health();
        let frame_classifier = Snapshotting {
            inner: dish,
            state: Arc::downgrade(state),
            last: None,
        };
        let config = PipelineConfig {
            gate: (cfg.gate > 0.0).then_some(cfg.gate),
            backpressure,
            ..Default::default()
        };
        let pipeline = Pipeline::start(src, Box::new(frame_classifier), config)?;
        {
            let mut live = lock(&state.live);
            live.status = "running".into();
            live.source = Some(cfg.source.clone());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let state = state.clone();
            std::thread::Builder::new()
                .name("dishcam-serve-live".into())
                .spawn(move || {
                    let status = read_results(
                        pipeline,
                        &state,
                        &stop,
                        &labels,
                        recipes.as_ref(),
                        health.as_deref(),
                    );
                    lock(&state.live).status = status;
                })
                .context("cannot start the live thread")?
        };
        Ok(LiveRunner {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the pipeline and waits for its threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads results until the stream ends or `stop`; returns the final status.
fn read_results(
    pipeline: Pipeline,
    state: &AppState,
    stop: &AtomicBool,
    labels: &[String],
    recipes: Option<&dishcam_recipes::RecipeIndex>,
    health: Option<&source::SourceHealth>,
) -> String {
    let label = |c: usize| labels.get(c).cloned().unwrap_or_else(|| c.to_string());
    let mut window_start = Instant::now();
    let mut window_counts = pipeline.counts();
    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break false;
        }
        let r = match pipeline.recv_timeout(Duration::from_millis(200)) {
            Received::Result(r) => Some(r),
            Received::Timeout => None,
            Received::Ended => break true,
        };
        let now = pipeline.counts();
        let mut live = lock(&state.live);
        live.counts = now;
        if let Some(h) = health {
            // A camera that dropped off shows in /api/state until it is back.
            let lost = h.disconnects.load(Ordering::Relaxed);
            let back = h.reconnects.load(Ordering::Relaxed);
            live.status = match h.last_outage() {
                Some(o) if lost > back => format!("source lost ({}); reconnecting", o.reason),
                _ => "running".into(),
            };
        }
        if window_start.elapsed() >= Duration::from_secs(1) {
            let secs = window_start.elapsed().as_secs_f64();
            live.fps_in = (now.captured - window_counts.captured) as f64 / secs;
            live.fps_out =
                (now.through_inference() - window_counts.through_inference()) as f64 / secs;
            window_start = Instant::now();
            window_counts = now;
        }
        let Some(r) = r else { continue };
        let emitted = Instant::now();
        let s = r.stamps;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let row = [
            ms(s.preprocessed - s.captured),
            ms(s.encoded - s.preprocessed),
            ms(s.classified - s.encoded),
            ms(emitted - s.classified),
            ms(emitted - s.captured),
        ];
        if !r.gated {
            if live.history.len() == HISTORY {
                live.history.pop_front();
            }
            live.history.push_back(row);
        }
        live.seq = r.seq;
        live.no_dish = r.no_dish;
        live.top = r.top[..r.top_len]
            .iter()
            .map(|(c, p)| (label(*c), *p))
            .collect();
        let event = r.event.map(|ev| {
            let (kind, class, p) = ev.outcome();
            let dish = class.map(label);
            let suggestions = match &dish {
                Some(d) => recipes_json(&dish_recipes(recipes, d, SUGGESTED)),
                None => Vec::new(),
            };
            live.dish = dish.clone();
            live.probability = p;
            live.recipes = suggestions.clone();
            json!({
                "event": kind,
                "dish": dish,
                "probability": p,
                "frame": ev.frame(),
                "recipes": suggestions,
                "no_dish": no_dish_json(r.no_dish.as_ref()),
            })
        });
        // The settled dish's probability follows its smoothed probability frame by frame, as
        // its bar in `top` does (the event gave it at the frame it settled on).
        if let Some(p) = live
            .dish
            .as_ref()
            .and_then(|d| live.top.iter().find(|(l, _)| l == d))
            .map(|(_, p)| *p)
        {
            live.probability = Some(p);
        }
        drop(live);
        {
            let mut m = lock(&state.metrics);
            if !r.gated {
                for (stage, v) in ["preprocess", "encode", "head"].iter().zip(row) {
                    m.observe("live", stage, v);
                }
            }
            m.observe("live", "emit", row[3]);
            m.observe("live", "total", row[4]);
        }
        if let Some(ev) = event {
            // No subscriber is not an error.
            let _ = state.events.send(ev.to_string());
        }
    };
    match pipeline.stop() {
        Err(e) => format!("error: {e}"),
        Ok(_) if ended => "ended".into(),
        Ok(_) => "stopped".into(),
    }
}

/// Wraps the frame classifier and keeps a copy of a frame at most every [`SNAPSHOT_EVERY`] for
/// the live view (the JPEG is encoded only when a client asks for it).
struct Snapshotting<C> {
    inner: C,
    state: Weak<AppState>,
    last: Option<Instant>,
}

impl<C: FrameClassifier> FrameClassifier for Snapshotting<C> {
    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        if self.last.is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY) {
            if let Some(state) = self.state.upgrade() {
                self.last = Some(Instant::now());
                let mut live = lock(&state.live);
                let mut snap = live.frame.take().unwrap_or(Snapshot {
                    seq: 0,
                    width: 0,
                    height: 0,
                    rgb: Vec::new(),
                });
                snap.seq = frame.seq;
                snap.width = frame.width;
                snap.height = frame.height;
                snap.rgb.clear();
                snap.rgb.extend_from_slice(&frame.rgb);
                live.frame = Some(snap);
            }
        }
        self.inner.preprocess(frame)
    }

    fn classify(&mut self, probs: &mut [f32]) -> Result<dishcam_runtime::Verdict, RuntimeError> {
        self.inner.classify(probs)
    }
}
