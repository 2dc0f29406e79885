//! What the handlers share: the models, the live view, the metrics, the event channel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Instant;

use dishcam_runtime::pipeline::Counts;
use dishcam_runtime::NoDish;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, Semaphore};

use super::engine::Engine;
use super::live::LiveRunner;
use crate::cli::no_dish_json;
use dishcam_eval::prometheus::Metrics;

/// Latency samples kept for the page's chart.
pub const HISTORY: usize = 120;
/// Live stages, in the order of [`LiveView::history`] rows.
pub const LIVE_STAGES: [&str; 5] = ["wait+preprocess", "encode", "head", "emit", "total"];

/// A raw live frame, kept for the live view and for teaching.
#[derive(Clone)]
pub struct Snapshot {
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// The live pipeline as the page sees it.
#[derive(Default)]
pub struct LiveView {
    /// idle (no source), starting, running, ended, or the error that stopped it.
    pub status: String,
    pub source: Option<String>,
    /// The settled dish and its smoothed probability (as of the latest frame, the same number
    /// as its entry in `top`).
    pub dish: Option<String>,
    pub probability: Option<f32>,
    pub recipes: Vec<Value>,
    /// Smoothed top-5 of the latest frame: (label, probability).
    pub top: Vec<(String, f32)>,
    /// Set when the latest frame (or, when it was gated, the last one encoded) shows no dish.
    pub no_dish: Option<NoDish>,
    pub seq: u64,
    pub counts: Counts,
    pub fps_in: f64,
    pub fps_out: f64,
    /// Per-frame stage latencies, ms, in the order of [`LIVE_STAGES`]; oldest first.
    pub history: VecDeque<[f64; 5]>,
    pub frame: Option<Snapshot>,
    /// The latest frame as JPEG, encoded on request: (seq, bytes).
    pub jpeg: Option<(u64, Arc<Vec<u8>>)>,
}

/// The server's shared state.
pub struct AppState {
    /// The models for uploads, recipe search and teaching; locked only inside `spawn_blocking`.
    pub engine: Mutex<Engine>,
    /// Requests waiting for the engine; a full queue is answered 503 instead of piling up.
    pub queue: Semaphore,
    pub live: Mutex<LiveView>,
    pub runner: Mutex<Option<LiveRunner>>,
    pub metrics: Mutex<Metrics>,
    /// SHA-256 of the token, when one is required.
    pub token: Option<[u8; 32]>,
    /// Dish events as JSON, for `/api/events`.
    pub events: broadcast::Sender<String>,
    pub sampler: dishcam_board::Sampler,
    /// Latencies of uploaded photos, ms, as (decode, preprocess, encode, head, total).
    pub uploads: Mutex<VecDeque<[f64; 5]>>,
    pub info: Mutex<Value>,
    pub started: Instant,
    /// The engine options the server was started with (teaching reloads with them).
    pub engine_args: crate::cli::EngineArgs,
    /// The live source, when there is one (teaching restarts it).
    pub live_config: Option<super::live::LiveConfig>,
    /// One teach at a time.
    pub teaching: Mutex<()>,
    /// This state itself, for restarting the live pipeline from a handler.
    pub me: std::sync::Weak<AppState>,
    /// Turns true when the server is asked to stop: open event streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Locks a mutex; a panic in another request while holding it does not wedge the server.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares a presented token with the expected digest in time independent of where they
/// differ (both are hashed first, so the length does not show either).
pub fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    let got = digest(presented);
    expected
        .iter()
        .zip(got.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

impl LiveView {
    /// `/api/state`'s `live`: the settled dish, the smoothed top, `no_dish` (null while the
    /// latest frame shows a dish), the frame counters and rates.
    pub fn json(&self) -> Value {
        json!({
            "status": self.status,
            "source": self.source,
            "dish": self.dish,
            "probability": self.probability,
            "top": self.top.iter().map(|(l, p)| json!({"label": l, "probability": p})).collect::<Vec<_>>(),
            "recipes": self.recipes,
            "no_dish": no_dish_json(self.no_dish.as_ref()),
            "seq": self.seq,
            "frame": self.frame.as_ref().map(|f| json!({"seq": f.seq, "width": f.width, "height": f.height})),
            "counts": self.counts,
            "fps_in": self.fps_in,
            "fps_out": self.fps_out,
        })
    }
}

impl AppState {
    /// `/api/state`: the live dish, stats, latency history, the models.
    pub fn state_json(&self) -> Value {
        let live = lock(&self.live);
        let uploads = lock(&self.uploads);
        json!({
            "schema": "dishcam.serve.state/1",
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "models": *lock(&self.info),
            "auth": self.token.is_some(),
            "live": live.json(),
            "latency": {
                "live": {"stages": LIVE_STAGES, "ms": live.history},
                "upload": {"stages": ["decode", "preprocess", "encode", "head", "total"], "ms": *uploads},
            },
            "telemetry": self.sampler.latest(),
        })
    }
}

/// Shared state handle.
pub type Shared = Arc<AppState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_view_reports_no_dish_and_every_counter() {
        let mut live = LiveView {
            status: "running".into(),
            top: vec![("ramen".into(), 0.25)],
            no_dish: Some(NoDish {
                score: 0.125,
                threshold: 0.5,
                reason: dishcam_runtime::NoDishReason::NotFood,
            }),
            counts: Counts {
                captured: 50,
                dropped: 4,
                gated: 30,
                classified: 16,
                no_dish: 9,
                source_errors: 1,
            },
            ..LiveView::default()
        };
        let v = live.json();
        assert_eq!(v["dish"], Value::Null);
        assert_eq!(
            v["no_dish"],
            json!({"score": 0.125, "threshold": 0.5, "reason": "not-food"})
        );
        assert_eq!(
            v["counts"],
            json!({"captured": 50, "dropped": 4, "gated": 30, "classified": 16, "no_dish": 9, "source_errors": 1})
        );
        assert_eq!(v["top"], json!([{"label": "ramen", "probability": 0.25}]));
        live.no_dish = None;
        live.dish = Some("ramen".into());
        live.probability = Some(0.25);
        let v = live.json();
        assert_eq!(v["no_dish"], Value::Null);
        assert_eq!(v["dish"], "ramen");
        assert_eq!(v["probability"], v["top"][0]["probability"]);
    }

    #[test]
    fn tokens_match_only_exactly() {
        let d = digest("s3cret-token");
        assert!(token_matches(&d, "s3cret-token"));
        for wrong in ["", "s3cret-toke", "s3cret-token ", "S3cret-token"] {
            assert!(!token_matches(&d, wrong), "{wrong:?}");
        }
    }
}
