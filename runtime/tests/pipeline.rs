//! The live pipeline with stand-in classifiers on synthetic sources: a slow encoder drops frames
//! instead of queueing them, backpressure classifies every frame, the gate skips unchanged
//! scenes, and smoothing turns per-frame answers into settled events.

use std::time::{Duration, Instant};

use dishcam_capture::{self as source, Frame, SourceOptions};
use dishcam_runtime::pipeline::{FrameClassifier, FrameResult, Pipeline, PipelineConfig};
use dishcam_runtime::smoothing::{DishEvent, SmoothingConfig};
use dishcam_runtime::{NoDish, NoDishReason, RuntimeError, Verdict};

/// Answers class `seq / period % 2` with certainty, after sleeping `work`; with `no_dish`,
/// answers "no dish" instead.
struct StandIn {
    work: Duration,
    period: u64,
    seq: u64,
    no_dish: bool,
}

impl FrameClassifier for StandIn {
    fn classes(&self) -> usize {
        2
    }
    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        self.seq = frame.seq;
        Ok(())
    }
    fn classify(&mut self, probs: &mut [f32]) -> Result<Verdict, RuntimeError> {
        std::thread::sleep(self.work);
        probs.fill(0.0);
        if self.no_dish {
            return Ok(Verdict::NoDish(NoDish {
                score: 0.01,
                threshold: 0.3,
                reason: NoDishReason::NotFood,
            }));
        }
        let c = (self.seq / self.period % 2) as usize;
        probs[c] = 1.0;
        Ok(Verdict::Dish)
    }
}

fn run(uri: &str, work: Duration, config: PipelineConfig) -> (Vec<FrameResult>, Vec<Duration>) {
    let (results, ages, _) = run_counted(uri, work, false, config);
    (results, ages)
}

fn run_counted(
    uri: &str,
    work: Duration,
    no_dish: bool,
    config: PipelineConfig,
) -> (
    Vec<FrameResult>,
    Vec<Duration>,
    dishcam_runtime::pipeline::Counts,
) {
    let src = source::open(uri, &SourceOptions::default()).unwrap();
    let p = Pipeline::start(
        src,
        Box::new(StandIn {
            work,
            period: 30,
            seq: 0,
            no_dish,
        }),
        config,
    )
    .unwrap();
    let mut results = Vec::new();
    let mut ages = Vec::new();
    while let Some(r) = p.recv() {
        ages.push(Instant::now() - r.stamps.captured);
        results.push(r);
    }
    let counts = p.stop().unwrap();
    (results, ages, counts)
}

/// A 25 ms encoder behind a 200 fps source: most frames are dropped, and the age of each
/// result stays near one encode instead of growing with the stream (an unbounded queue would
/// reach ~4 s by the last of 200 frames).
#[test]
fn a_slow_encoder_drops_frames_and_latency_stays_bounded() {
    let src = source::open(
        "synthetic://?fps=200&size=64x48&frames=200",
        &SourceOptions::default(),
    )
    .unwrap();
    let p = Pipeline::start(
        src,
        Box::new(StandIn {
            work: Duration::from_millis(25),
            period: 30,
            seq: 0,
            no_dish: false,
        }),
        PipelineConfig::default(),
    )
    .unwrap();
    let mut ages = Vec::new();
    let mut seqs = Vec::new();
    while let Some(r) = p.recv() {
        ages.push(r.stamps.classified - r.stamps.captured);
        seqs.push(r.seq);
    }
    let counts = p.stop().unwrap();
    assert_eq!(counts.captured, 200);
    assert!(counts.dropped > 100, "{counts:?}");
    assert_eq!(
        counts.classified + counts.dropped,
        counts.captured,
        "{counts:?}"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "frames stay in order");
    let worst = ages.iter().max().unwrap();
    assert!(*worst < Duration::from_millis(1000), "worst age {worst:?}");
}

#[test]
fn backpressure_classifies_every_frame_in_order() {
    let (results, _) = run(
        "synthetic://?fps=500&size=32x24&frames=60",
        Duration::from_millis(2),
        PipelineConfig {
            backpressure: true,
            ..Default::default()
        },
    );
    let seqs: Vec<u64> = results.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..60).collect::<Vec<u64>>());
}

#[test]
fn the_gate_skips_unchanged_scenes_and_sees_a_new_one() {
    // Three scenes, 40 frames each; the pattern drifts 1 px per frame within a scene.
    let (results, _, counts) = run_counted(
        "synthetic://?fps=1000&size=640x480&frames=120&scene_every=40",
        Duration::ZERO,
        false,
        PipelineConfig {
            gate: Some(6.0),
            backpressure: true,
            ..Default::default()
        },
    );
    let gated = results.iter().filter(|r| r.gated).count();
    assert!(gated > 60, "{gated} of {} gated", results.len());
    // "classified" counts encoder runs only; the counters add up to the frames captured.
    assert_eq!(counts.gated as usize, gated, "{counts:?}");
    assert_eq!(
        counts.classified as usize,
        results.len() - gated,
        "{counts:?}"
    );
    assert_eq!(
        counts.classified + counts.gated + counts.dropped,
        counts.captured,
        "{counts:?}"
    );
    // The first frame of each scene is encoded.
    for first in [0, 40, 80] {
        let r = results.iter().find(|r| r.seq == first).unwrap();
        assert!(!r.gated, "frame {first} was gated");
    }
}

#[test]
fn smoothing_turns_answers_into_settled_events() {
    let (results, _) = run(
        "synthetic://?fps=1000&size=32x24&frames=90",
        Duration::ZERO,
        PipelineConfig {
            smoothing: SmoothingConfig::default(),
            backpressure: true,
            ..Default::default()
        },
    );
    let events: Vec<DishEvent> = results.iter().filter_map(|r| r.event).collect();
    let settled: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            DishEvent::Settled { class, .. } | DishEvent::Changed { to: class, .. } => Some(*class),
            _ => None,
        })
        .collect();
    // Class 0 for frames 0-29, 1 for 30-59, 0 again for 60-89.
    assert_eq!(settled, [0, 1, 0], "{events:?}");
    let top = results.last().unwrap();
    assert_eq!(top.top[0].0, 0);
    assert_eq!(top.top_len, 2);
}

#[test]
fn stop_ends_a_never_ending_source() {
    let src = source::open("synthetic://?fps=50&size=32x24", &SourceOptions::default()).unwrap();
    let p = Pipeline::start(
        src,
        Box::new(StandIn {
            work: Duration::ZERO,
            period: 30,
            seq: 0,
            no_dish: false,
        }),
        PipelineConfig::default(),
    )
    .unwrap();
    let first = p.recv();
    assert!(first.is_some());
    let counts = p.stop().unwrap();
    assert!(counts.captured >= 1);
}

/// Frames with no dish in view are counted as such, carry the verdict, and never settle.
#[test]
fn frames_with_no_dish_never_settle() {
    let (results, _, counts) = run_counted(
        "synthetic://?fps=1000&size=32x24&frames=90",
        Duration::ZERO,
        true,
        PipelineConfig {
            backpressure: true,
            ..Default::default()
        },
    );
    assert_eq!(results.len(), 90);
    assert!(results
        .iter()
        .all(|r| r.no_dish.is_some() && r.event.is_none()));
    assert!(results
        .iter()
        .all(|r| r.top[..r.top_len].iter().all(|&(_, p)| p == 0.0)));
    assert_eq!((counts.classified, counts.no_dish), (90, 90), "{counts:?}");
}
