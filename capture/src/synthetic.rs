//! `synthetic://`: a moving, deterministic test pattern paced to a frame rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pace::Pacer;
use super::shape::Shaper;
use super::{Frame, FrameSource, Next, SourceError, SourceOptions};

/// Number of distinct scenes `scene_every` cycles through.
pub const SCENES: u64 = 3;

/// Parameters of a synthetic stream (the URI's query).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Pacing rate; `None` falls back to [`SourceOptions::fps`], then 30.
    pub fps: Option<f32>,
    pub width: u32,
    pub height: u32,
    /// End after this many frames (restart the pattern instead when looping).
    pub frames: Option<u64>,
    /// Switch to the next scene every this many frames.
    pub scene_every: Option<u64>,
    /// Simulate a camera that drops off: after this many frames the source fails with
    /// [`SourceError::Disconnected`] (again every this many frames after each reconnect).
    pub fail_after: Option<u64>,
    /// How long a simulated disconnect lasts: reopening fails until it has passed.
    pub down: Duration,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            fps: None,
            width: 640,
            height: 480,
            frames: None,
            scene_every: None,
            fail_after: None,
            down: Duration::from_secs(1),
        }
    }
}

/// Renders pattern frame `seq` of scene `scene % SCENES` into `out` (`width * height * 3` bytes).
///
/// Scene 0 is scrolling colour bars, 1 a scrolling checkerboard, 2 a diagonal gradient; each has a
/// square moving across it; both move one pixel a frame, so a scene change differs from
/// frame-to-frame motion by far more. The pixels depend only on the arguments.
pub fn render_pattern(seq: u64, scene: u64, width: u32, height: u32, out: &mut [u8]) {
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
        [16, 16, 16],
    ];
    let (w, h) = (width as u64, height as u64);
    debug_assert_eq!(out.len() as u64, w * h * 3);
    // Reduced so the sums below cannot overflow for any `seq`.
    let shift = seq % (w * h);
    let side = (w.min(h) / 4).max(1);
    let sq_x = seq % (w - side + 1);
    let sq_y = seq % (h - side + 1);
    let square = match scene % SCENES {
        0 => [255, 255, 255],
        1 => [255, 64, 0],
        _ => [0, 0, 0],
    };
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        let (x, y) = (i as u64 % w, i as u64 / w);
        let colour = if (sq_x..sq_x + side).contains(&x) && (sq_y..sq_y + side).contains(&y) {
            square
        } else {
            match scene % SCENES {
                0 => BARS[(((x + shift) % w) * 8 / w) as usize],
                1 => {
                    let cell = (w / 8).max(1);
                    if ((x + shift) / cell + y / cell).is_multiple_of(2) {
                        [200, 200, 40]
                    } else {
                        [40, 40, 160]
                    }
                }
                _ => {
                    let v = ((x + y + shift) % (w + h) * 255 / (w + h)) as u8;
                    [v, 255 - v, 128]
                }
            }
        };
        px.copy_from_slice(&colour);
    }
}

/// A paced synthetic test pattern.
pub struct SyntheticSource {
    cfg: SyntheticConfig,
    fps: f32,
    loop_: bool,
    pacer: Pacer,
    shaper: Shaper,
    scratch: Vec<u8>,
    frame: Frame,
    produced: u64,
    /// Until when the simulated camera is gone (shared by the reopenings of one stream).
    outage: Arc<Mutex<Option<Instant>>>,
}

impl SyntheticSource {
    /// Checks the size against `opts.max_pixels` and prepares the buffers.
    pub fn new(cfg: SyntheticConfig, opts: &SourceOptions) -> Result<Self, SourceError> {
        super::shape::check_options(opts)?;
        if cfg.width == 0
            || cfg.height == 0
            || cfg.width as u64 * cfg.height as u64 > opts.max_pixels
        {
            return Err(SourceError::TooLarge {
                what: "synthetic size".to_string(),
                width: cfg.width,
                height: cfg.height,
                max_pixels: opts.max_pixels,
            });
        }
        let fps = cfg.fps.or(opts.fps).unwrap_or(30.0);
        let shaper = Shaper::new(opts);
        shaper.size_for(cfg.width, cfg.height)?;
        Ok(Self {
            fps,
            loop_: opts.loop_,
            pacer: Pacer::new(Some(fps)),
            shaper,
            scratch: Vec::new(),
            frame: Frame::empty(),
            produced: 0,
            outage: Arc::default(),
            cfg,
        })
    }

    /// As [`SyntheticSource::new`], for a reopening within one stream: fails with
    /// [`SourceError::Disconnected`] while the simulated outage recorded in `outage` lasts.
    pub(super) fn reopen(
        cfg: SyntheticConfig,
        opts: &SourceOptions,
        outage: Arc<Mutex<Option<Instant>>>,
    ) -> Result<Self, SourceError> {
        if let Some(until) = *outage.lock().expect("outage lock") {
            let now = Instant::now();
            if now < until {
                return Err(SourceError::Disconnected {
                    uri: "synthetic".into(),
                    reason: format!("simulated outage, back in {} ms", (until - now).as_millis()),
                });
            }
        }
        let mut s = Self::new(cfg, opts)?;
        s.outage = outage;
        Ok(s)
    }

    /// The outage record this source writes when its simulated camera drops off.
    pub(super) fn outage(&self) -> Arc<Mutex<Option<Instant>>> {
        self.outage.clone()
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError> {
        let mut pattern_seq = self.produced;
        if let Some(n) = self.cfg.frames {
            if self.produced >= n && (!self.loop_ || n == 0) {
                return Ok(Next::End);
            }
            pattern_seq %= n.max(1);
        }
        if !self.pacer.wait(timeout) {
            return Ok(Next::Timeout);
        }
        if self.cfg.fail_after.is_some_and(|n| self.produced >= n) {
            *self.outage.lock().expect("outage lock") = Some(Instant::now() + self.cfg.down);
            return Err(SourceError::Disconnected {
                uri: "synthetic".into(),
                reason: format!("simulated disconnect after {} frames", self.produced),
            });
        }
        let scene = self.cfg.scene_every.map_or(0, |k| pattern_seq / k);
        let (w, h) = (self.cfg.width, self.cfg.height);
        if self.shaper.is_identity(w, h) {
            self.frame.rgb.resize(w as usize * h as usize * 3, 0);
            render_pattern(pattern_seq, scene, w, h, &mut self.frame.rgb);
            self.frame.width = w;
            self.frame.height = h;
        } else {
            self.scratch.resize(w as usize * h as usize * 3, 0);
            render_pattern(pattern_seq, scene, w, h, &mut self.scratch);
            self.shaper.emit(&self.scratch, w, h, &mut self.frame)?;
        }
        self.frame.seq = self.produced;
        self.frame.captured = Instant::now();
        self.produced += 1;
        Ok(Next::Frame(&self.frame))
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "synthetic {}x{} @ {} fps",
            self.cfg.width, self.cfg.height, self.fps
        );
        if let Some(n) = self.cfg.frames {
            s += &format!(", {n} frames");
        }
        if let Some(k) = self.cfg.scene_every {
            s += &format!(", scene every {k}");
        }
        if let Some(n) = self.cfg.fail_after {
            s += &format!(
                ", drops off every {n} frames for {} ms",
                self.cfg.down.as_millis()
            );
        }
        s
    }

    fn fps_hint(&self) -> Option<f32> {
        Some(self.fps)
    }
}
