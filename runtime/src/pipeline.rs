//! The live pipeline: capture, inference and output on their own threads, joined so that
//! inference never falls behind the camera.
//!
//! ```text
//! capture thread ──(latest-frame slot: a newer frame replaces an unread one, counted as
//!                   dropped)──> inference thread ──(bounded channel)──> caller (output)
//! ```
//!
//! Three frame buffers rotate between the capture thread, the slot and the inference thread, so
//! frames are moved by swapping, never copied into fresh memory. Results are fixed-size (top-5
//! in an array), so the channel carries them without allocating. The inference side skips the
//! encoder when the scene has not changed (frame-difference gating on a 32x24 grey thumbnail)
//! and folds probabilities into a [`Smoother`] that emits "dish settled" events.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dish::{NoDish, Verdict};
use crate::error::RuntimeError;
use crate::smoothing::{DishEvent, Smoother, SmoothingConfig, SmoothingError};
use dishcam_capture::{Frame, FrameSource, Next, SourceError};

/// Classes reported per frame.
pub const TOP: usize = 5;
/// Size of the gating thumbnail.
const THUMB_W: usize = 32;
const THUMB_H: usize = 24;

/// Turns a frame into class probabilities ([`crate::DishClassifier`], or a stand-in in
/// tests). Writes into `probs`, which has one entry per class.
pub trait FrameClassifier: Send {
    fn classes(&self) -> usize;
    /// Preprocesses the frame; then [`FrameClassifier::classify`] runs the model on it.
    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError>;
    /// Fills `probs`; a frame with no dish in view leaves them all zero.
    fn classify(&mut self, probs: &mut [f32]) -> Result<Verdict, RuntimeError>;
}

impl<C: FrameClassifier + ?Sized> FrameClassifier for Box<C> {
    fn classes(&self) -> usize {
        (**self).classes()
    }
    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        (**self).preprocess(frame)
    }
    fn classify(&mut self, probs: &mut [f32]) -> Result<Verdict, RuntimeError> {
        (**self).classify(probs)
    }
}

/// Why the pipeline could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Classifier(#[from] RuntimeError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Smoothing(#[from] SmoothingError),
    #[error("cannot start the {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        source: std::io::Error,
    },
    #[error("a pipeline thread panicked")]
    Panicked,
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub smoothing: SmoothingConfig,
    /// Skip the encoder when the mean absolute difference of the grey thumbnail from the last
    /// encoded frame is below this (0-255 scale); `None` encodes every frame.
    pub gate: Option<f32>,
    /// Stop after this many frames have been classified or gated.
    pub max_frames: Option<u64>,
    /// How long the capture thread waits for a frame before checking for a stop request.
    pub poll: Duration,
    /// Every frame is classified: capture waits for inference instead of replacing an unread
    /// frame. For files and folders read as fast as possible; a live camera drops instead.
    pub backpressure: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            smoothing: SmoothingConfig::default(),
            gate: None,
            max_frames: None,
            poll: Duration::from_millis(100),
            backpressure: false,
        }
    }
}

/// When each stage of one frame finished.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    pub captured: Instant,
    pub preprocessed: Instant,
    pub encoded: Instant,
    pub classified: Instant,
}

/// The result of one frame: fixed size, so sending it does not allocate.
#[derive(Debug, Clone, Copy)]
pub struct FrameResult {
    pub seq: u64,
    pub stamps: Stamps,
    /// The encoder was skipped: the scene had not changed since the last encoded frame.
    pub gated: bool,
    /// This frame (or, when gated, the last encoded one) shows no dish; `top` then decays.
    pub no_dish: Option<NoDish>,
    /// Top classes by smoothed probability: (class, probability), best first.
    pub top: [(usize, f32); TOP],
    pub top_len: usize,
    pub event: Option<DishEvent>,
}

/// Counters shared by the threads.
#[derive(Debug, Default)]
pub struct Counters {
    pub captured: AtomicU64,
    /// Frames replaced in the slot before inference read them.
    pub dropped: AtomicU64,
    /// Frames whose encoder run was skipped by the gate.
    pub gated: AtomicU64,
    /// Frames the encoder ran on (whatever it found): `captured = classified + gated + dropped`
    /// once the pipeline has stopped, plus a frame it was stopped with.
    pub classified: AtomicU64,
    /// Of the classified frames, those that showed no dish.
    pub no_dish: AtomicU64,
    /// Source errors (e.g. undecodable files), skipped.
    pub source_errors: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub captured: u64,
    pub dropped: u64,
    pub gated: u64,
    pub classified: u64,
    pub no_dish: u64,
    pub source_errors: u64,
}

impl Counts {
    /// Frames that have been through inference: classified (the encoder ran) or gated
    /// (skipped, the scene unchanged); the "out" of a frame rate, so a static scene the gate
    /// skips still reads as keeping up.
    pub fn through_inference(&self) -> u64 {
        self.classified + self.gated
    }
}

impl Counters {
    pub fn snapshot(&self) -> Counts {
        Counts {
            captured: self.captured.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            gated: self.gated.load(Ordering::Relaxed),
            classified: self.classified.load(Ordering::Relaxed),
            no_dish: self.no_dish.load(Ordering::Relaxed),
            source_errors: self.source_errors.load(Ordering::Relaxed),
        }
    }
}

/// The latest-frame slot between capture and inference.
struct Slot {
    frame: Mutex<SlotState>,
    ready: Condvar,
}

struct SlotState {
    frame: Frame,
    full: bool,
    /// The source ended or failed: no more frames will come.
    ended: bool,
}

/// What [`Pipeline::recv_timeout`] got.
// A result is moved by value, once per frame: boxing it would allocate per frame, which the
// steady state must not (runtime/tests/alloc.rs).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum Received {
    Result(FrameResult),
    Timeout,
    /// End of stream, max frames, or stopped.
    Ended,
}

/// A running pipeline. Read results with [`Pipeline::recv`]; [`Pipeline::stop`] ends it.
pub struct Pipeline {
    results: Receiver<FrameResult>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    slot: Arc<Slot>,
    threads: Vec<JoinHandle<Result<(), PipelineError>>>,
    started: Instant,
}

fn empty_frame() -> Frame {
    Frame {
        seq: 0,
        captured: Instant::now(),
        width: 0,
        height: 0,
        rgb: Vec::new(),
    }
}

/// Copies `from` into `to`, reusing `to`'s buffer (no allocation once it is large enough).
fn copy_frame(from: &Frame, to: &mut Frame) {
    to.seq = from.seq;
    to.captured = from.captured;
    to.width = from.width;
    to.height = from.height;
    to.rgb.clear();
    to.rgb.extend_from_slice(&from.rgb);
}

/// Mean grey level of each cell of a THUMB_W x THUMB_H grid over the frame.
fn thumbnail(frame: &Frame, out: &mut [u8; THUMB_W * THUMB_H]) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    if w == 0 || h == 0 || frame.rgb.len() < w * h * 3 {
        out.fill(0);
        return;
    }
    for ty in 0..THUMB_H {
        for tx in 0..THUMB_W {
            // Sample a 2x2 pattern of pixels in the cell: cheap, and enough to see a change.
            let mut sum = 0u32;
            for (dx, dy) in [(1, 1), (3, 1), (1, 3), (3, 3)] {
                let x = ((tx * 4 + dx) * w / (THUMB_W * 4)).min(w - 1);
                let y = ((ty * 4 + dy) * h / (THUMB_H * 4)).min(h - 1);
                let p = (y * w + x) * 3;
                let rgb = &frame.rgb[p..p + 3];
                sum += (rgb[0] as u32 * 77 + rgb[1] as u32 * 150 + rgb[2] as u32 * 29) >> 8;
            }
            out[ty * THUMB_W + tx] = (sum / 4) as u8;
        }
    }
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f32 {
    let s: u32 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u32).sum();
    s as f32 / a.len().max(1) as f32
}

impl Pipeline {
    /// Starts the capture and inference threads.
    pub fn start(
        mut source: Box<dyn FrameSource + Send>,
        mut classifier: Box<dyn FrameClassifier>,
        config: PipelineConfig,
    ) -> Result<Pipeline, PipelineError> {
        let classes = classifier.classes();
        let mut smoother = Smoother::new(classes, config.smoothing)?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Slot {
            frame: Mutex::new(SlotState {
                frame: empty_frame(),
                full: false,
                ended: false,
            }),
            ready: Condvar::new(),
        });
        let (tx, results) = sync_channel::<FrameResult>(8);

        let capture = {
            let (slot, stop, counters) = (slot.clone(), stop.clone(), counters.clone());
            let poll = config.poll;
            let backpressure = config.backpressure;
            std::thread::Builder::new()
                .name("dishcam-capture".into())
                .spawn(move || {
                    let mut mine = empty_frame();
                    let outcome = loop {
                        if stop.load(Ordering::Relaxed) {
                            break Ok(());
                        }
                        counters
                            .source_errors
                            .store(source.skipped(), Ordering::Relaxed);
                        match source.next_frame(poll) {
                            Ok(Next::Frame(f)) => {
                                counters.captured.fetch_add(1, Ordering::Relaxed);
                                copy_frame(f, &mut mine);
                                let mut s = slot.frame.lock().expect("slot lock");
                                while backpressure && s.full && !stop.load(Ordering::Relaxed) {
                                    s = slot
                                        .ready
                                        .wait_timeout(s, Duration::from_millis(50))
                                        .expect("slot lock")
                                        .0;
                                }
                                if s.full {
                                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                std::mem::swap(&mut s.frame, &mut mine);
                                s.full = true;
                                drop(s);
                                slot.ready.notify_one();
                            }
                            Ok(Next::Timeout) => {}
                            Ok(Next::End) => break Ok(()),
                            Err(e) => break Err(PipelineError::from(e)),
                        }
                    };
                    let mut s = slot.frame.lock().expect("slot lock");
                    s.ended = true;
                    drop(s);
                    slot.ready.notify_all();
                    outcome
                })
                .map_err(|source| PipelineError::Thread {
                    thread: "capture",
                    source,
                })?
        };

        let inference = {
            let (slot, stop, counters) = (slot.clone(), stop.clone(), counters.clone());
            let gate = config.gate;
            let max_frames = config.max_frames;
            std::thread::Builder::new()
                .name("dishcam-inference".into())
                .spawn(move || {
                    let mut work = empty_frame();
                    let mut probs = vec![0f32; classes];
                    let mut verdict = Verdict::Dish;
                    let mut thumb = [0u8; THUMB_W * THUMB_H];
                    let mut last_thumb = [0u8; THUMB_W * THUMB_H];
                    let mut have_last = false;
                    let mut done = 0u64;
                    loop {
                        if stop.load(Ordering::Relaxed) || max_frames.is_some_and(|m| done >= m) {
                            return Ok(());
                        }
                        {
                            let mut s = slot.frame.lock().expect("slot lock");
                            while !s.full && !s.ended && !stop.load(Ordering::Relaxed) {
                                s = slot
                                    .ready
                                    .wait_timeout(s, Duration::from_millis(50))
                                    .expect("slot lock")
                                    .0;
                            }
                            if !s.full {
                                return Ok(());
                            }
                            std::mem::swap(&mut s.frame, &mut work);
                            s.full = false;
                        }
                        slot.ready.notify_all();
                        let skip = match gate {
                            Some(t) => {
                                thumbnail(&work, &mut thumb);
                                let same = have_last && mean_abs_diff(&thumb, &last_thumb) < t;
                                if !same {
                                    last_thumb = thumb;
                                    have_last = true;
                                }
                                same
                            }
                            None => false,
                        };
                        let (preprocessed, encoded) = if skip {
                            counters.gated.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            (now, now)
                        } else {
                            classifier.preprocess(&work)?;
                            let pre = Instant::now();
                            verdict = classifier.classify(&mut probs)?;
                            counters.classified.fetch_add(1, Ordering::Relaxed);
                            if verdict != Verdict::Dish {
                                counters.no_dish.fetch_add(1, Ordering::Relaxed);
                            }
                            (pre, Instant::now())
                        };
                        // A frame with no dish folds in all-zero probabilities: the belief
                        // decays, nothing settles, and a settled dish is released.
                        let event = smoother.update(&probs)?;
                        let mut top = [(0usize, 0f32); TOP];
                        let top_len = top_into(smoother.smoothed(), &mut top);
                        done += 1;
                        let result = FrameResult {
                            seq: work.seq,
                            stamps: Stamps {
                                captured: work.captured,
                                preprocessed,
                                encoded,
                                classified: Instant::now(),
                            },
                            gated: skip,
                            no_dish: match verdict {
                                Verdict::NoDish(n) => Some(n),
                                Verdict::Dish => None,
                            },
                            top,
                            top_len,
                            event,
                        };
                        if tx.send(result).is_err() {
                            return Ok(());
                        }
                    }
                })
                .map_err(|source| PipelineError::Thread {
                    thread: "inference",
                    source,
                })?
        };

        Ok(Pipeline {
            results,
            counters,
            stop,
            slot,
            threads: vec![capture, inference],
            started: Instant::now(),
        })
    }

    /// The next result; `None` when the pipeline has ended (end of stream, max frames, stop).
    pub fn recv(&self) -> Option<FrameResult> {
        self.results.recv().ok()
    }

    /// The next result within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Received {
        use std::sync::mpsc::RecvTimeoutError;
        match self.results.recv_timeout(timeout) {
            Ok(r) => Received::Result(r),
            Err(RecvTimeoutError::Timeout) => Received::Timeout,
            Err(RecvTimeoutError::Disconnected) => Received::Ended,
        }
    }

    pub fn counts(&self) -> Counts {
        self.counters.snapshot()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks the threads to stop and waits for them; returns the first error either reported.
    pub fn stop(mut self) -> Result<Counts, PipelineError> {
        self.stop.store(true, Ordering::Relaxed);
        self.slot.ready.notify_all();
        // Unblock an inference thread waiting to send.
        while self.results.try_recv().is_ok() {}
        let mut first_err = None;
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(PipelineError::Panicked);
                }
            }
            while self.results.try_recv().is_ok() {}
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(self.counters.snapshot()),
        }
    }
}

/// Wraps a classifier and keeps the frames it encodes as PNG files (`frame_<seq>.png`), up to
/// `limit`: frames a board captured in its own kitchen, for `dishcam calibrate --images DIR` and
/// for teaching a dish. Gated frames (an unchanged scene) are not kept. A frame that cannot be
/// written is logged and skipped: saving never stops the stream.
pub struct SavingClassifier<C> {
    pub inner: C,
    pub dir: std::path::PathBuf,
    pub limit: usize,
    pub saved: usize,
}

impl<C: FrameClassifier> FrameClassifier for SavingClassifier<C> {
    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        if self.saved < self.limit {
            let path = self.dir.join(format!("frame_{:08}.png", frame.seq));
            match image::save_buffer(
                &path,
                &frame.rgb,
                frame.width,
                frame.height,
                image::ExtendedColorType::Rgb8,
            ) {
                Ok(()) => self.saved += 1,
                Err(e) => log::warn!("{}: frame not saved ({e})", path.display()),
            }
        }
        self.inner.preprocess(frame)
    }

    fn classify(&mut self, probs: &mut [f32]) -> Result<Verdict, RuntimeError> {
        self.inner.classify(probs)
    }
}

/// Writes the best `TOP` entries of `probs` into `out` (best first); returns how many.
fn top_into(probs: &[f32], out: &mut [(usize, f32); TOP]) -> usize {
    let mut n = 0;
    for (i, &p) in probs.iter().enumerate() {
        let mut pos = n;
        while pos > 0 && out[pos - 1].1 < p {
            pos -= 1;
        }
        if pos >= TOP {
            continue;
        }
        let end = n.min(TOP - 1);
        for j in (pos..end).rev() {
            out[j + 1] = out[j];
        }
        out[pos] = (i, p);
        n = (n + 1).min(TOP);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_into_keeps_the_best_five_in_order() {
        let probs = [0.1, 0.5, 0.05, 0.2, 0.9, 0.0, 0.3, 0.25];
        let mut out = [(0, 0.0); TOP];
        assert_eq!(top_into(&probs, &mut out), 5);
        let classes: Vec<usize> = out.iter().map(|(c, _)| *c).collect();
        assert_eq!(classes, [4, 1, 6, 7, 3]);
        let mut out = [(0, 0.0); TOP];
        assert_eq!(top_into(&[0.2, 0.8], &mut out), 2);
        assert_eq!(&out[..2], &[(1, 0.8), (0, 0.2)]);
    }

    #[test]
    fn the_gate_sees_a_changed_scene_and_not_noise() {
        let mk = |v: u8| Frame {
            seq: 0,
            captured: Instant::now(),
            width: 64,
            height: 48,
            rgb: vec![v; 64 * 48 * 3],
        };
        let (mut a, mut b) = ([0u8; THUMB_W * THUMB_H], [0u8; THUMB_W * THUMB_H]);
        thumbnail(&mk(100), &mut a);
        thumbnail(&mk(101), &mut b);
        assert!(mean_abs_diff(&a, &b) < 2.0);
        thumbnail(&mk(180), &mut b);
        assert!(mean_abs_diff(&a, &b) > 50.0);
    }
}
