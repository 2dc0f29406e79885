//! Temporal smoothing of per-frame class probabilities, with "dish settled" events.
//!
//! A camera classifies 15-60 frames a second and single frames flicker. [`Smoother`] folds each
//! frame's probability vector into an exponential moving average (EMA) and turns the smoothed
//! belief into a few events ([`DishEvent`]). It is pure (no I/O, no clock) and allocates only in
//! [`Smoother::new`]: [`Smoother::update`] never touches the heap, so it can sit in the per-frame
//! path of the live pipeline.
//!
//! # Rules
//!
//! Each call to [`Smoother::update`] with a frame of the right length does, in order:
//!
//! 1. **Sanitise.** NaN entries count as 0; other entries are clamped to [0, 1] (so +inf counts
//!    as 1, negative values as 0). The input is not renormalised.
//! 2. **Average.** The first frame (after [`Smoother::new`] or [`Smoother::reset`]) initialises
//!    the average to that frame, so there is no bias towards zero. Later frames do
//!    `ema = ema + alpha * (p - ema)`, i.e. `(1 - alpha) * ema + alpha * p`.
//! 3. **Leader and streak.** The leader is the class with the highest smoothed probability
//!    (ties go to the lowest index). If the leader's smoothed probability is
//!    `>= settle_threshold`, its streak grows by one if the same class also led above the
//!    threshold on the previous frame, and restarts at 1 otherwise. If the leader is below the
//!    threshold, the streak is 0. A class *qualifies* when its streak is `>= settle_frames`.
//! 4. **Release.** A settled class stays settled while its smoothed probability is
//!    `>= release_threshold` and is released on the first frame it falls below. It is never
//!    displaced by another class while it is held above `release_threshold`, however strongly
//!    that class leads: the other class's streak keeps counting in the meantime.
//! 5. **Settle.** At most one event per frame:
//!    - nothing settled and a class qualifies: it becomes settled, [`DishEvent::Settled`];
//!    - the settled class is released on this frame and another class qualifies *on this same
//!      frame* (possibly after having qualified for a while, blocked by step 4): the new class
//!      takes over directly, [`DishEvent::Changed`];
//!    - the settled class is released and no class qualifies on this frame:
//!      [`DishEvent::Cleared`]; a class that qualifies later gets a [`DishEvent::Settled`].
//!
//! So `Changed` means "there was no frame on which nothing was settled". When the inputs are
//! probability distributions (entries sum to 1) and `settle_threshold + release_threshold >= 1`,
//! which includes the defaults, a new class cannot lead above `settle_threshold` while the old
//! one is still held (except for exact ties at the thresholds), so swapping one dish for
//! another produces `Cleared` and then, `settle_frames - 1` or more frames later, `Settled`.
//! `Changed` occurs when the thresholds leave room (`settle_threshold + release_threshold < 1`)
//! or the scores are not a distribution (e.g. independent per-class sigmoids).
//!
//! Events carry the 0-based index of the frame that produced them (the first frame is 0). Frames
//! refused for their length do not count.

use std::fmt;

/// Parameters of a [`Smoother`]; see the [module documentation](self) for the rules.
///
/// Deserialising fills missing fields from [`SmoothingConfig::default`]; call
/// [`SmoothingConfig::validate`] (or [`Smoother::new`], which does) on the result.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SmoothingConfig {
    /// Weight of the newest frame in the exponential moving average, in (0, 1]; 1 = no smoothing.
    pub alpha: f32,
    /// A class becomes "settled" when its smoothed probability is >= this (in (0, 1])...
    pub settle_threshold: f32,
    /// ...for this many consecutive frames (>= 1).
    pub settle_frames: u32,
    /// A settled class is released only when its smoothed probability falls below this
    /// (hysteresis; in [0, settle_threshold)).
    pub release_threshold: f32,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            settle_threshold: 0.6,
            settle_frames: 5,
            release_threshold: 0.4,
        }
    }
}

impl SmoothingConfig {
    /// Checks every field; the error names the first bad field, its allowed range and its value.
    pub fn validate(&self) -> Result<(), SmoothingError> {
        self.check().map_err(SmoothingError::Config)
    }

    fn check(&self) -> Result<(), String> {
        // Written as `!(in range)` so that NaN is refused too.
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!(
                "alpha must be in (0, 1] (1 = no smoothing), got {}",
                self.alpha
            ));
        }
        if !(self.settle_threshold > 0.0 && self.settle_threshold <= 1.0) {
            return Err(format!(
                "settle_threshold must be in (0, 1], got {}",
                self.settle_threshold
            ));
        }
        if self.settle_frames < 1 {
            return Err(format!(
                "settle_frames must be >= 1, got {}",
                self.settle_frames
            ));
        }
        if !(self.release_threshold >= 0.0 && self.release_threshold < self.settle_threshold) {
            return Err(format!(
                "release_threshold must be in [0, settle_threshold) = [0, {}), got {}",
                self.settle_threshold, self.release_threshold
            ));
        }
        Ok(())
    }
}

/// What changed on a frame; see the [module documentation](self) for when each is emitted.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DishEvent {
    /// Nothing was settled and `class` became settled.
    Settled {
        class: usize,
        probability: f32,
        frame: u64,
    },
    /// `from` was settled and `to` became settled directly (without a gap): `from` was released
    /// on the same frame on which `to` qualified.
    Changed {
        from: usize,
        to: usize,
        probability: f32,
        frame: u64,
    },
    /// `class` was released and nothing is settled now (e.g. the plate was taken away).
    Cleared { class: usize, frame: u64 },
}

impl DishEvent {
    /// The 0-based index of the frame that produced the event.
    pub fn frame(&self) -> u64 {
        match *self {
            DishEvent::Settled { frame, .. }
            | DishEvent::Changed { frame, .. }
            | DishEvent::Cleared { frame, .. } => frame,
        }
    }

    /// The event's name (`settled`, `changed`, `cleared`), the dish it is now about and that
    /// dish's smoothed probability (none after `cleared`).
    pub fn outcome(&self) -> (&'static str, Option<usize>, Option<f32>) {
        match *self {
            DishEvent::Settled {
                class, probability, ..
            } => ("settled", Some(class), Some(probability)),
            DishEvent::Changed {
                to, probability, ..
            } => ("changed", Some(to), Some(probability)),
            DishEvent::Cleared { .. } => ("cleared", None, None),
        }
    }
}

/// Errors from [`Smoother::new`] (a bad setting) and [`Smoother::update`] (a frame of the wrong
/// length, which carries no heap data, so returning it does not allocate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmoothingError {
    /// The frame's probability vector has the wrong number of classes; the frame was ignored.
    #[error(
        "frame has {got} class probabilities, the smoother was built for {want}; frame ignored"
    )]
    WrongLength { got: usize, want: usize },
    /// A setting is out of range: the field, its allowed range and the value given.
    #[error("smoothing: {0}")]
    Config(String),
}

/// Exponential moving average of class probabilities with hysteresis-based settling.
///
/// All buffers are allocated in [`Smoother::new`]; [`Smoother::update`] and
/// [`Smoother::reset`] do not allocate.
#[derive(Clone)]
pub struct Smoother {
    config: SmoothingConfig,
    /// Smoothed probabilities, one per class; sized once in `new`.
    ema: Vec<f32>,
    /// Frames folded in since `new`/`reset`.
    frames: u64,
    /// The class that led above `settle_threshold` on the previous frame, if any.
    candidate: Option<usize>,
    /// Consecutive frames `candidate` has led above `settle_threshold` (0 when `None`).
    streak: u32,
    settled: Option<usize>,
}

impl fmt::Debug for Smoother {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smoother")
            .field("classes", &self.ema.len())
            .field("frames", &self.frames)
            .field("settled", &self.settled)
            .field("candidate", &self.candidate)
            .field("streak", &self.streak)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Smoother {
    /// A smoother for `classes` classes (>= 1). Refuses an invalid `config` with the field name.
    pub fn new(classes: usize, config: SmoothingConfig) -> Result<Self, SmoothingError> {
        if classes == 0 {
            return Err(SmoothingError::Config("classes must be >= 1, got 0".into()));
        }
        config.validate()?;
        Ok(Self {
            config,
            ema: vec![0.0; classes],
            frames: 0,
            candidate: None,
            streak: 0,
            settled: None,
        })
    }

    /// Folds one frame's probabilities into the moving average and returns at most one event.
    ///
    /// `probs.len()` must equal the number of classes; otherwise the frame is ignored (no state
    /// changes) and `Err` is returned. NaN entries count as 0 and other entries are clamped to
    /// [0, 1]. Does not allocate.
    pub fn update(&mut self, probs: &[f32]) -> Result<Option<DishEvent>, SmoothingError> {
        if probs.len() != self.ema.len() {
            return Err(SmoothingError::WrongLength {
                got: probs.len(),
                want: self.ema.len(),
            });
        }
        let frame = self.frames;
        self.fold(probs);
        self.frames += 1;

        // Leader and streak.
        let (leader, p) = self.best();
        if p >= self.config.settle_threshold {
            if self.candidate == Some(leader) {
                self.streak = self.streak.saturating_add(1);
            } else {
                self.candidate = Some(leader);
                self.streak = 1;
            }
        } else {
            self.candidate = None;
            self.streak = 0;
        }
        let qualified = self
            .candidate
            .filter(|_| self.streak >= self.config.settle_frames);

        // Release, then settle.
        let event = match self.settled {
            None => qualified.map(|class| {
                self.settled = Some(class);
                DishEvent::Settled {
                    class,
                    probability: self.ema[class],
                    frame,
                }
            }),
            Some(old) if self.ema[old] < self.config.release_threshold => {
                // `old` is below release_threshold < settle_threshold, so it cannot qualify.
                match qualified.filter(|&c| c != old) {
                    Some(to) => {
                        self.settled = Some(to);
                        Some(DishEvent::Changed {
                            from: old,
                            to,
                            probability: self.ema[to],
                            frame,
                        })
                    }
                    None => {
                        self.settled = None;
                        Some(DishEvent::Cleared { class: old, frame })
                    }
                }
            }
            Some(_) => None,
        };
        Ok(event)
    }

    /// The smoothed probabilities, one per class (all 0 before the first frame).
    pub fn smoothed(&self) -> &[f32] {
        &self.ema
    }

    /// The settled class and its smoothed probability, if any.
    pub fn settled(&self) -> Option<(usize, f32)> {
        self.settled.map(|c| (c, self.ema[c]))
    }

    /// The current best class of the smoothed distribution (settled or not) and its smoothed
    /// probability; ties go to the lowest index. `None` before the first frame.
    pub fn leader(&self) -> Option<(usize, f32)> {
        (self.frames > 0).then(|| self.best())
    }

    /// The class currently leading above `settle_threshold` and its streak (consecutive frames,
    /// including the latest), e.g. to show "settling 3/5". It may already be settled.
    pub fn streak(&self) -> Option<(usize, u32)> {
        self.candidate.map(|c| (c, self.streak))
    }

    /// Frames folded in since [`Smoother::new`] or [`Smoother::reset`].
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.ema.len()
    }

    pub fn config(&self) -> &SmoothingConfig {
        &self.config
    }

    /// Forgets everything (e.g. after a scene cut); keeps the buffers. Emits no event: a settled
    /// class is dropped silently, and the next frame initialises the average and counts as
    /// frame 0.
    pub fn reset(&mut self) {
        self.ema.fill(0.0);
        self.frames = 0;
        self.candidate = None;
        self.streak = 0;
        self.settled = None;
    }

    fn fold(&mut self, probs: &[f32]) {
        let sanitise = |x: f32| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        if self.frames == 0 {
            for (e, &x) in self.ema.iter_mut().zip(probs) {
                *e = sanitise(x);
            }
        } else {
            let alpha = self.config.alpha;
            for (e, &x) in self.ema.iter_mut().zip(probs) {
                // A convex combination of values in [0, 1]; the clamp only absorbs rounding.
                *e = (*e + alpha * (sanitise(x) - *e)).clamp(0.0, 1.0);
            }
        }
    }

    /// Argmax of the average, lowest index on ties. The average never holds NaN.
    fn best(&self) -> (usize, f32) {
        let mut best = (0, self.ema[0]);
        for (i, &v) in self.ema.iter().enumerate().skip(1) {
            if v > best.1 {
                best = (i, v);
            }
        }
        best
    }

    /// Address and capacity of the average's buffer, to check that it is never reallocated.
    #[cfg(test)]
    fn buffer_identity(&self) -> (*const f32, usize) {
        (self.ema.as_ptr(), self.ema.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn smoother(classes: usize, config: SmoothingConfig) -> Smoother {
        Smoother::new(classes, config).unwrap()
    }

    /// Feeds `frame` `n` times and returns the events.
    fn feed(s: &mut Smoother, frame: &[f32], n: usize) -> Vec<DishEvent> {
        (0..n).filter_map(|_| s.update(frame).unwrap()).collect()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn clean_stream_settles_after_the_computed_number_of_frames() {
        // Defaults: alpha 0.3, settle 0.6 for 5 frames, release 0.4. Two classes.
        // Frame 0 is [0, 1] and initialises the average to it; frames n >= 1 are [1, 0], so
        // ema0(n) = 1 - 0.7^n: 0, 0.3, 0.51, 0.657, ... Class 1 leads above 0.6 on frames 0-1
        // (0.7 on frame 1; streak 2, not enough), nobody on frame 2 (0.51/0.49), class 0 from
        // frame 3 (0.657). Its streak reaches 5 on frame 7: Settled at frame 7 with
        // ema0 = 1 - 0.7^7 = 0.9176457.
        let mut s = smoother(2, SmoothingConfig::default());
        assert_eq!(s.update(&[0.0, 1.0]).unwrap(), None);
        let mut events = Vec::new();
        for n in 1..100u64 {
            if let Some(e) = s.update(&[1.0, 0.0]).unwrap() {
                events.push((n, e));
            }
            if n == 2 {
                assert!(close(s.smoothed()[0], 0.51));
                assert_eq!(s.streak(), None);
            }
            if n == 3 {
                assert!(close(s.smoothed()[0], 0.657));
                assert_eq!(s.streak(), Some((0, 1)));
            }
        }
        assert_eq!(events.len(), 1, "{events:?}");
        let (n, e) = events[0];
        assert_eq!(n, 7);
        match e {
            DishEvent::Settled {
                class: 0,
                probability,
                frame: 7,
            } => assert!(close(probability, 0.917_645_7), "{probability}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.settled().map(|x| x.0), Some(0));
        assert_eq!(s.frames(), 100);
    }

    #[test]
    fn first_frame_initialises_the_average() {
        let mut s = smoother(3, SmoothingConfig::default());
        assert_eq!(s.smoothed(), &[0.0, 0.0, 0.0]);
        assert_eq!(s.leader(), None);
        s.update(&[0.2, 0.7, 0.1]).unwrap();
        assert_eq!(s.smoothed(), &[0.2, 0.7, 0.1]);
        assert_eq!(s.leader(), Some((1, 0.7)));
        // A steady input above the threshold settles on frame settle_frames - 1 = 4.
        let events = feed(&mut s, &[0.2, 0.7, 0.1], 10);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].frame(), 4);
    }

    #[test]
    fn alpha_one_means_no_smoothing() {
        let config = SmoothingConfig {
            alpha: 1.0,
            ..SmoothingConfig::default()
        };
        let mut s = smoother(2, config);
        s.update(&[0.9, 0.1]).unwrap();
        s.update(&[0.25, 0.75]).unwrap();
        assert_eq!(s.smoothed(), &[0.25, 0.75]);
    }

    #[test]
    fn flicker_between_two_classes_never_settles() {
        let mut s = smoother(2, SmoothingConfig::default());
        for i in 0..1000 {
            let f = if i % 2 == 0 {
                [0.55, 0.45]
            } else {
                [0.45, 0.55]
            };
            assert_eq!(s.update(&f).unwrap(), None);
            assert!(s.smoothed().iter().all(|&v| v < 0.6));
        }
        assert_eq!(s.settled(), None);

        // Harder flicker, 0.9/0.1: ema0 = 0.9, 0.66, 0.732, 0.5424, 0.64968, 0.48478, ...
        // The streak never exceeds 3 and the oscillation then stays within 0.5 +- 0.071.
        let mut s = smoother(2, SmoothingConfig::default());
        for i in 0..1000 {
            let f = if i % 2 == 0 { [0.9, 0.1] } else { [0.1, 0.9] };
            assert_eq!(s.update(&f).unwrap(), None);
            assert!(s.streak().is_none_or(|(_, n)| n <= 3));
        }
    }

    #[test]
    fn outliers_in_a_settled_stream_do_not_release_it() {
        // [0.9, 0.1] from frame 0 keeps ema0 at 0.9 and settles on frame 4. Two outlier frames
        // [0, 1] take ema0 to 0.63, then 0.441: below settle_threshold (and class 1 leads with
        // 0.559) but above release_threshold, so class 0 stays settled (hysteresis).
        let mut s = smoother(2, SmoothingConfig::default());
        let events = feed(&mut s, &[0.9, 0.1], 10);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].frame(), 4);
        assert_eq!(s.update(&[0.0, 1.0]).unwrap(), None);
        assert!(close(s.smoothed()[0], 0.63));
        assert_eq!(s.update(&[0.0, 1.0]).unwrap(), None);
        assert!(close(s.smoothed()[0], 0.441));
        assert_eq!(s.leader().map(|x| x.0), Some(1));
        assert_eq!(s.settled().map(|x| x.0), Some(0));
        assert_eq!(feed(&mut s, &[0.9, 0.1], 100), vec![]);
        assert_eq!(s.settled().map(|x| x.0), Some(0));

        // A third outlier (0.441 * 0.7 = 0.3087 after two more) would release it.
        let mut s = smoother(2, SmoothingConfig::default());
        feed(&mut s, &[0.9, 0.1], 10);
        let events = feed(&mut s, &[0.0, 1.0], 3);
        assert_eq!(
            events,
            vec![DishEvent::Cleared {
                class: 0,
                frame: 12
            }]
        );
    }

    #[test]
    fn switching_dishes_with_defaults_clears_then_settles() {
        // Defaults. Frames 0-9 are [0.9, 0.1] (settled on frame 4, ema0 = 0.9). From frame 10
        // the input is [0.1, 0.9], so on frame 10 + k: ema0 = 0.1 + 0.8 * 0.7^(k+1) =
        // 0.66, 0.492, 0.3744 and ema1 = 1 - ema0 = 0.34, 0.508, 0.6256.
        // Frame 12: class 0 falls below 0.4 and is released; class 1 first leads above 0.6 on
        // this frame (streak 1 < 5), so nothing qualifies: Cleared at 12. Class 1's streak
        // reaches 5 on frame 16: Settled with ema1 = 0.9 - 0.8 * 0.7^7 = 0.8341166.
        let mut s = smoother(2, SmoothingConfig::default());
        feed(&mut s, &[0.9, 0.1], 10);
        let mut events = Vec::new();
        for _ in 0..30 {
            if let Some(e) = s.update(&[0.1, 0.9]).unwrap() {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            DishEvent::Cleared {
                class: 0,
                frame: 12
            }
        );
        match events[1] {
            DishEvent::Settled {
                class: 1,
                probability,
                frame: 16,
            } => assert!(close(probability, 0.834_116_6), "{probability}"),
            other => panic!("{other:?}"),
        }
    }

    /// alpha 0.4, settle 0.5, release 0.3 (settle + release < 1 leaves room for Changed).
    fn roomy(settle_frames: u32) -> SmoothingConfig {
        SmoothingConfig {
            alpha: 0.4,
            settle_threshold: 0.5,
            settle_frames,
            release_threshold: 0.3,
        }
    }

    #[test]
    fn switching_dishes_changes_when_the_new_class_qualifies_on_the_release_frame() {
        // Frames 0-3 are [1, 0] (settled on frame 1). From frame 4 the input is [0, 1]:
        // ema0 = 0.6^(k+1) = 0.6, 0.36, 0.216 and ema1 = 0.4, 0.64, 0.784 on frames 4, 5, 6.
        // Class 1 leads above 0.5 from frame 5 (streak 1; class 0 is held at 0.36 >= 0.3), and
        // on frame 6 class 0 is released (0.216) while class 1 reaches streak 2: Changed.
        let mut s = smoother(2, roomy(2));
        let events = feed(&mut s, &[1.0, 0.0], 4);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].frame(), 1);
        let events = feed(&mut s, &[0.0, 1.0], 20);
        assert_eq!(events.len(), 1, "{events:?}");
        match events[0] {
            DishEvent::Changed {
                from: 0,
                to: 1,
                probability,
                frame: 6,
            } => assert!(close(probability, 0.784), "{probability}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.settled().map(|x| x.0), Some(1));

        // The same switch with settle_frames 1: class 1 qualifies on frame 5 but class 0 is
        // still held, so it waits; the hand-over still happens on frame 6.
        let mut s = smoother(2, roomy(1));
        feed(&mut s, &[1.0, 0.0], 4);
        assert_eq!(s.update(&[0.0, 1.0]).unwrap(), None);
        assert_eq!(s.update(&[0.0, 1.0]).unwrap(), None);
        assert_eq!(s.streak(), Some((1, 1)));
        assert_eq!(s.settled().map(|x| x.0), Some(0));
        assert!(matches!(
            s.update(&[0.0, 1.0]).unwrap(),
            Some(DishEvent::Changed {
                from: 0,
                to: 1,
                frame: 6,
                ..
            })
        ));

        // With settle_frames 3, class 1 has streak 2 on the release frame: Cleared at 6, then
        // Settled at 7.
        let mut s = smoother(2, roomy(3));
        feed(&mut s, &[1.0, 0.0], 4);
        let events = feed(&mut s, &[0.0, 1.0], 20);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], DishEvent::Cleared { class: 0, frame: 6 });
        assert!(matches!(
            events[1],
            DishEvent::Settled {
                class: 1,
                frame: 7,
                ..
            }
        ));
    }

    #[test]
    fn a_held_class_is_not_displaced_by_a_stronger_one() {
        // Independent scores (not a distribution): class 0 stays at 0.5 >= release while
        // class 1 leads at 0.9 for many frames; class 0 keeps the slot until it drops.
        let mut s = smoother(2, SmoothingConfig::default());
        feed(&mut s, &[0.9, 0.0], 10);
        assert_eq!(feed(&mut s, &[0.5, 0.9], 50), vec![]);
        assert_eq!(s.settled().map(|x| x.0), Some(0));
        assert_eq!(s.streak().map(|x| x.0), Some(1));
        // Dropping class 0 to 0: ema0 = 0.5 * 0.7^(k+1) = 0.35 < 0.4 on the first frame, and
        // class 1 has qualified for 50 frames: Changed at frame 60.
        assert!(matches!(
            s.update(&[0.0, 0.9]).unwrap(),
            Some(DishEvent::Changed {
                from: 0,
                to: 1,
                frame: 60,
                ..
            })
        ));
    }

    #[test]
    fn removing_the_dish_clears() {
        // Defaults, four classes. Frames 0-9 are [0.85, 0.05, 0.05, 0.05] (settled on frame 4);
        // then the counter is empty, uniform 0.25: ema0 = 0.25 + 0.6 * 0.7^(k+1) on frame
        // 10 + k = 0.67, 0.544, 0.4558, 0.39406: released on frame 13 and nothing else
        // reaches 0.6, so Cleared and then silence.
        let mut s = smoother(4, SmoothingConfig::default());
        let events = feed(&mut s, &[0.85, 0.05, 0.05, 0.05], 10);
        assert_eq!(events.len(), 1);
        let events = feed(&mut s, &[0.25; 4], 200);
        assert_eq!(
            events,
            vec![DishEvent::Cleared {
                class: 0,
                frame: 13
            }]
        );
        assert_eq!(s.settled(), None);
        assert_eq!(s.leader().map(|x| x.0), Some(0)); // all equal at 0.25: lowest index
    }

    #[test]
    fn wrong_length_is_refused_and_changes_nothing() {
        let mut s = smoother(3, SmoothingConfig::default());
        let f = [0.8, 0.1, 0.1];
        feed(&mut s, &f, 3);
        let before = (s.smoothed().to_vec(), s.frames(), s.streak(), s.settled());
        for bad in [&[][..], &[0.5, 0.5][..], &[0.25; 4][..]] {
            assert_eq!(
                s.update(bad),
                Err(SmoothingError::WrongLength {
                    got: bad.len(),
                    want: 3
                })
            );
        }
        let after = (s.smoothed().to_vec(), s.frames(), s.streak(), s.settled());
        assert_eq!(before, after);
        // The streak was not broken: two more good frames settle on frame 4 as usual.
        assert_eq!(s.update(&f).unwrap(), None);
        assert!(matches!(
            s.update(&f).unwrap(),
            Some(DishEvent::Settled {
                class: 0,
                frame: 4,
                ..
            })
        ));
        let msg = SmoothingError::WrongLength { got: 2, want: 3 }.to_string();
        assert!(msg.contains('2') && msg.contains('3'), "{msg}");
    }

    #[test]
    fn nan_counts_as_zero_and_out_of_range_is_clamped() {
        let mut s = smoother(3, SmoothingConfig::default());
        s.update(&[f32::NAN, 0.5, 0.5]).unwrap();
        assert_eq!(s.smoothed(), &[0.0, 0.5, 0.5]);
        s.update(&[f32::INFINITY, f32::NEG_INFINITY, -3.0]).unwrap();
        // ema = ema + 0.3 * (p - ema) with p = [1, 0, 0].
        assert!(close(s.smoothed()[0], 0.3));
        assert!(close(s.smoothed()[1], 0.35));
        assert!(close(s.smoothed()[2], 0.35));

        // A settled class whose scores turn into NaN decays like a 0 and is released.
        let mut s = smoother(2, SmoothingConfig::default());
        feed(&mut s, &[0.9, 0.1], 10);
        let events = feed(&mut s, &[f32::NAN, f32::NAN], 10);
        // ema0 = 0.9 * 0.7^(k+1) = 0.63, 0.441, 0.3087: released on frame 12.
        assert_eq!(
            events,
            vec![DishEvent::Cleared {
                class: 0,
                frame: 12
            }]
        );
        assert!(s.smoothed().iter().all(|v| !v.is_nan()));
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_name() {
        let d = SmoothingConfig::default();
        assert_eq!(d.validate(), Ok(()));
        let cases = [
            (SmoothingConfig { alpha: 0.0, ..d }, "alpha"),
            (SmoothingConfig { alpha: 1.5, ..d }, "alpha"),
            (SmoothingConfig { alpha: -0.1, ..d }, "alpha"),
            (
                SmoothingConfig {
                    alpha: f32::NAN,
                    ..d
                },
                "alpha",
            ),
            (
                SmoothingConfig {
                    settle_threshold: 0.0,
                    release_threshold: 0.0,
                    ..d
                },
                "settle_threshold",
            ),
            (
                SmoothingConfig {
                    settle_threshold: 1.01,
                    ..d
                },
                "settle_threshold",
            ),
            (
                SmoothingConfig {
                    settle_threshold: f32::NAN,
                    ..d
                },
                "settle_threshold",
            ),
            (
                SmoothingConfig {
                    settle_frames: 0,
                    ..d
                },
                "settle_frames",
            ),
            (
                SmoothingConfig {
                    release_threshold: 0.6,
                    ..d
                },
                "release_threshold",
            ),
            (
                SmoothingConfig {
                    release_threshold: 0.7,
                    ..d
                },
                "release_threshold",
            ),
            (
                SmoothingConfig {
                    release_threshold: -0.1,
                    ..d
                },
                "release_threshold",
            ),
            (
                SmoothingConfig {
                    release_threshold: f32::NAN,
                    ..d
                },
                "release_threshold",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("smoothing: {field}")),
                "{config:?}: {text}"
            );
            assert_eq!(Smoother::new(2, config).unwrap_err(), err);
        }
        // The edges of the ranges are accepted.
        let edges = SmoothingConfig {
            alpha: 1.0,
            settle_threshold: 1.0,
            settle_frames: 1,
            release_threshold: 0.0,
        };
        assert_eq!(edges.validate(), Ok(()));
        assert!(Smoother::new(0, d)
            .unwrap_err()
            .to_string()
            .contains("classes"));
    }

    #[test]
    fn reset_forgets_everything_and_keeps_the_buffer() {
        let mut s = smoother(2, SmoothingConfig::default());
        feed(&mut s, &[0.9, 0.1], 10);
        let id = s.buffer_identity();
        s.reset();
        assert_eq!(s.buffer_identity(), id);
        assert_eq!(
            (s.frames(), s.settled(), s.leader(), s.streak()),
            (0, None, None, None)
        );
        assert_eq!(s.smoothed(), &[0.0, 0.0]);
        // The next frame initialises the average again and counts as frame 0.
        s.update(&[0.2, 0.8]).unwrap();
        assert_eq!(s.smoothed(), &[0.2, 0.8]);
        let events = feed(&mut s, &[0.2, 0.8], 10);
        assert_eq!(events.len(), 1);
        assert!(matches!(
            events[0],
            DishEvent::Settled {
                class: 1,
                frame: 4,
                ..
            }
        ));
    }

    #[test]
    fn update_does_not_reallocate_the_buffer() {
        // Stand-in until the pipeline adds a counting-allocator test: the average's buffer
        // keeps its address and capacity across 1,000 updates, errors and resets.
        let mut s = smoother(5, SmoothingConfig::default());
        let id = s.buffer_identity();
        for i in 0..1000usize {
            let mut f = [0.05f32; 5];
            f[(i / 50) % 5] = 0.8;
            if i % 97 == 0 {
                f[1] = f32::NAN;
            }
            s.update(&f).unwrap();
            if i % 101 == 0 {
                assert!(s.update(&f[..3]).is_err());
            }
            if i == 500 {
                s.reset();
            }
            assert_eq!(s.buffer_identity(), id, "frame {i}");
        }
    }

    #[test]
    fn default_config_values() {
        let d = SmoothingConfig::default();
        assert_eq!(
            (
                d.alpha,
                d.settle_threshold,
                d.settle_frames,
                d.release_threshold
            ),
            (0.3, 0.6, 5, 0.4)
        );
    }

    fn valid_config() -> impl Strategy<Value = SmoothingConfig> {
        (0.01f32..=1.0, 0.05f32..=1.0, 1u32..8, 0.0f32..1.0).prop_map(
            |(alpha, settle_threshold, settle_frames, r)| SmoothingConfig {
                alpha,
                settle_threshold,
                settle_frames,
                // A fraction of settle_threshold, so always below it.
                release_threshold: settle_threshold * r * 0.99,
            },
        )
    }

    /// 1-6 classes and up to 300 frames of probability distributions. Frames repeat a few
    /// patterns so that classes actually settle, change and clear.
    fn distribution_stream() -> impl Strategy<Value = (usize, Vec<Vec<f32>>)> {
        (1usize..=6).prop_flat_map(|classes| {
            let frame = proptest::collection::vec(0.0f32..1.0, classes).prop_map(|w| {
                let sum: f32 = w.iter().sum();
                if sum > 0.0 {
                    w.iter().map(|x| x / sum).collect()
                } else {
                    vec![1.0 / w.len() as f32; w.len()]
                }
            });
            let run = (frame, 1usize..40);
            (
                Just(classes),
                proptest::collection::vec(run, 0..20).prop_map(|runs| {
                    runs.into_iter()
                        .flat_map(|(f, n)| std::iter::repeat_n(f, n))
                        .take(300)
                        .collect::<Vec<Vec<f32>>>()
                }),
            )
        })
    }

    /// Checks event order against the settled state and the frame counter.
    fn check_event(
        s: &Smoother,
        event: Option<DishEvent>,
        expected: &mut Option<usize>,
        frame: u64,
    ) -> Result<(), TestCaseError> {
        match event {
            None => {}
            Some(e) => {
                prop_assert_eq!(e.frame(), frame);
                match e {
                    DishEvent::Settled { class, .. } => {
                        prop_assert_eq!(*expected, None, "Settled while settled: {:?}", e);
                        *expected = Some(class);
                    }
                    DishEvent::Changed { from, to, .. } => {
                        prop_assert_eq!(*expected, Some(from), "Changed from wrong class: {:?}", e);
                        prop_assert_ne!(from, to);
                        *expected = Some(to);
                    }
                    DishEvent::Cleared { class, .. } => {
                        prop_assert_eq!(*expected, Some(class), "Cleared unsettled: {:?}", e);
                        *expected = None;
                    }
                }
            }
        }
        prop_assert_eq!(s.settled().map(|x| x.0), *expected);
        if let Some((_, p)) = s.settled() {
            prop_assert!(p >= s.config().release_threshold);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn distributions_stay_distributions_and_events_alternate(
            config in valid_config(),
            (classes, frames) in distribution_stream(),
        ) {
            let mut s = Smoother::new(classes, config).unwrap();
            let mut expected = None;
            for (i, f) in frames.iter().enumerate() {
                let event = s.update(f).unwrap();
                let sm = s.smoothed();
                prop_assert!(sm.iter().all(|&v| (0.0..=1.0).contains(&v)), "{:?}", sm);
                let sum: f32 = sm.iter().sum();
                prop_assert!((sum - 1.0).abs() < 1e-4, "sum {}", sum);
                check_event(&s, event, &mut expected, i as u64)?;
            }
            prop_assert_eq!(s.frames(), frames.len() as u64);
        }

        #[test]
        fn arbitrary_scores_stay_in_range_and_events_alternate(
            config in valid_config(),
            frames in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        4 => -0.5f32..1.5,
                        1 => Just(f32::NAN),
                        1 => Just(f32::INFINITY),
                        1 => Just(f32::NEG_INFINITY),
                    ],
                    3,
                ),
                0..200,
            ),
        ) {
            let mut s = Smoother::new(3, config).unwrap();
            let mut expected = None;
            for (i, f) in frames.iter().enumerate() {
                let event = s.update(f).unwrap();
                prop_assert!(s.smoothed().iter().all(|&v| (0.0..=1.0).contains(&v)));
                check_event(&s, event, &mut expected, i as u64)?;
            }
        }
    }
}
