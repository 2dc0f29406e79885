//! Riding out a camera that drops off: a source wrapper that, when its camera reports
//! [`SourceError::Disconnected`], closes it, reopens it with exponential backoff, and carries on
//! with the frame numbers where they were. What happened is published in a [`SourceHealth`] the
//! caller polls (`watch` turns it into `source_lost` / `source_back` events).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Frame, FrameSource, Next, SourceError};

/// How a lost source is reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first reopen attempt; doubles after each failed attempt.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Give up (the stream ends with the error) after this many failed attempts in a row;
    /// `Some(0)` gives up at once, `None` never does.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(8),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The wait after `failed` consecutive failed attempts (0: before the first attempt).
    pub fn delay(&self, failed: u32) -> Duration {
        let factor = 1u32.checked_shl(failed.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What a reconnecting source has been through, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct SourceHealth {
    /// Times the source was lost.
    pub disconnects: AtomicU64,
    /// Times it came back.
    pub reconnects: AtomicU64,
    /// Reopen attempts that failed.
    pub failed_attempts: AtomicU64,
    last: Mutex<Option<Outage>>,
}

/// The latest loss of the source.
#[derive(Debug, Clone)]
pub struct Outage {
    /// Why it was lost (the source's error).
    pub reason: String,
    /// When it was lost.
    pub lost: Instant,
    /// When it came back; `None` while it is still gone.
    pub back: Option<Instant>,
    /// Reopen attempts so far.
    pub attempts: u32,
    /// The latest reopen error.
    pub last_error: Option<String>,
}

impl SourceHealth {
    /// The latest outage, if the source has ever been lost.
    pub fn last_outage(&self) -> Option<Outage> {
        self.last.lock().expect("health lock").clone()
    }

    fn lost(&self, reason: String) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().expect("health lock") = Some(Outage {
            reason,
            lost: Instant::now(),
            back: None,
            attempts: 0,
            last_error: None,
        });
    }

    fn attempt_failed(&self, error: String) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = self.last.lock().expect("health lock").as_mut() {
            o.attempts += 1;
            o.last_error = Some(error);
        }
    }

    fn back(&self) {
        if let Some(o) = self.last.lock().expect("health lock").as_mut() {
            o.attempts += 1;
            o.back = Some(Instant::now());
        }
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens (or reopens) the wrapped source.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// A source that reopens its camera after a disconnect. See the module docs.
pub struct Reconnecting {
    uri: String,
    open: Opener,
    inner: Option<Box<dyn FrameSource>>,
    backoff: Backoff,
    /// Failed attempts since the source was lost.
    failed: u32,
    next_try: Instant,
    health: Arc<SourceHealth>,
    description: String,
    fps: Option<f32>,
    /// Frames are copied here so that numbering runs on across reopenings.
    frame: Frame,
    produced: u64,
}

impl Reconnecting {
    /// Opens the source once: an error here (a typo, a missing device at start-up) is returned
    /// as is, since retrying cannot fix it.
    pub fn new(uri: &str, mut open: Opener, backoff: Backoff) -> Result<Self, SourceError> {
        let inner = open()?;
        Ok(Self {
            uri: uri.to_string(),
            description: inner.describe(),
            fps: inner.fps_hint(),
            inner: Some(inner),
            open,
            backoff,
            failed: 0,
            next_try: Instant::now(),
            health: Arc::new(SourceHealth::default()),
            frame: Frame::empty(),
            produced: 0,
        })
    }

    fn give_up(&self, reason: String) -> SourceError {
        let reason = if self.failed == 0 {
            format!("{reason}; not reopened, as asked")
        } else {
            format!("{reason}; gave up after {} reopen attempt(s)", self.failed)
        };
        SourceError::Disconnected {
            uri: self.uri.clone(),
            reason,
        }
    }
}

impl FrameSource for Reconnecting {
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError> {
        let deadline = Instant::now() + timeout;
        if self.inner.is_none() {
            let now = Instant::now();
            if now < self.next_try {
                std::thread::sleep((self.next_try - now).min(timeout));
                return Ok(Next::Timeout);
            }
            match (self.open)() {
                Ok(s) => {
                    self.inner = Some(s);
                    self.failed = 0;
                    self.health.back();
                    log::info!("{}: source back", self.uri);
                }
                Err(e) => {
                    self.failed += 1;
                    self.health.attempt_failed(e.to_string());
                    if self.backoff.max_attempts.is_some_and(|m| self.failed >= m) {
                        return Err(self.give_up(e.to_string()));
                    }
                    self.next_try = Instant::now() + self.backoff.delay(self.failed);
                    return Ok(Next::Timeout);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // The inner frame borrows `self.inner`: copy it out (into a disjoint field) before the
        // source may be dropped below.
        let lost = match self.inner.as_mut().expect("opened above").next_frame(left) {
            Ok(Next::Frame(f)) => {
                let mine = &mut self.frame;
                mine.width = f.width;
                mine.height = f.height;
                mine.captured = f.captured;
                mine.rgb.clear();
                mine.rgb.extend_from_slice(&f.rgb);
                None
            }
            Ok(Next::Timeout) => return Ok(Next::Timeout),
            Ok(Next::End) => return Ok(Next::End),
            Err(SourceError::Disconnected { reason, .. }) => Some(reason),
            Err(e) => return Err(e),
        };
        match lost {
            None => {
                self.frame.seq = self.produced;
                self.produced += 1;
                Ok(Next::Frame(&self.frame))
            }
            Some(reason) => {
                self.inner = None;
                log::info!("{}: source lost ({reason})", self.uri);
                self.health.lost(reason.clone());
                if self.backoff.max_attempts == Some(0) {
                    return Err(self.give_up(reason));
                }
                self.next_try = Instant::now() + self.backoff.delay(0);
                Ok(Next::Timeout)
            }
        }
    }

    fn describe(&self) -> String {
        let on_loss = if self.backoff.max_attempts == Some(0) {
            "exits if lost"
        } else {
            "reconnects if lost"
        };
        format!("{}, {on_loss}", self.description)
    }

    fn fps_hint(&self) -> Option<f32> {
        self.fps
    }

    fn skipped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |s| s.skipped())
    }

    fn health(&self) -> Option<Arc<SourceHealth>> {
        Some(self.health.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open, SourceOptions};

    fn opts(max_attempts: Option<u32>) -> SourceOptions {
        SourceOptions {
            reconnect: Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(80),
                max_attempts,
            },
            ..SourceOptions::default()
        }
    }

    /// Reads until `n` frames or `limit`; the sequence numbers seen.
    fn read(src: &mut dyn FrameSource, n: usize, limit: Duration) -> Result<Vec<u64>, SourceError> {
        let start = Instant::now();
        let mut seqs = Vec::new();
        while seqs.len() < n && start.elapsed() < limit {
            match src.next_frame(Duration::from_millis(50))? {
                Next::Frame(f) => seqs.push(f.seq),
                Next::Timeout => {}
                Next::End => break,
            }
        }
        Ok(seqs)
    }

    #[test]
    fn a_dropped_camera_comes_back_and_numbering_runs_on() {
        let uri = "synthetic://?fps=500&size=32x24&fail_after=6&down_ms=150";
        let mut src = open(uri, &opts(None)).unwrap();
        let health = src.health().expect("a reconnecting source");
        let seqs = read(src.as_mut(), 20, Duration::from_secs(20)).unwrap();
        assert_eq!(seqs, (0..20).collect::<Vec<u64>>());
        // 20 frames at 6 per connection: lost 3 times, back 3 times.
        assert_eq!(health.disconnects.load(Ordering::Relaxed), 3);
        assert_eq!(health.reconnects.load(Ordering::Relaxed), 3);
        // Retries during each 150 ms outage fail (backoff 20, 40, 80 ms...).
        assert!(health.failed_attempts.load(Ordering::Relaxed) >= 3);
        let o = health.last_outage().unwrap();
        assert!(
            o.reason.contains("simulated disconnect after 6 frames"),
            "{o:?}"
        );
        let back = o.back.expect("back");
        assert!(back - o.lost >= Duration::from_millis(150), "{o:?}");
        assert!(o.last_error.unwrap().contains("simulated outage"));
        assert!(src.describe().contains("reconnects if lost"));
    }

    #[test]
    fn exit_mode_ends_the_stream_with_the_disconnect() {
        let uri = "synthetic://?fps=500&size=32x24&fail_after=4&down_ms=10";
        let mut src = open(uri, &opts(Some(0))).unwrap();
        let err = read(src.as_mut(), 10, Duration::from_secs(10)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SourceError::Disconnected { .. }), "{msg}");
        assert!(
            msg.contains("simulated disconnect after 4 frames") && msg.contains("not reopened"),
            "{msg}"
        );
    }

    #[test]
    fn retries_stop_after_the_attempt_limit() {
        let uri = "synthetic://?fps=500&size=32x24&fail_after=2&down_ms=60000";
        let mut src = open(uri, &opts(Some(3))).unwrap();
        let err = read(src.as_mut(), 10, Duration::from_secs(10)).unwrap_err();
        assert!(
            err.to_string()
                .contains("gave up after 3 reopen attempt(s)"),
            "{err}"
        );
        let h = src.health().unwrap();
        assert_eq!(h.failed_attempts.load(Ordering::Relaxed), 3);
        assert_eq!(h.reconnects.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_source_that_cannot_open_at_start_is_an_error_not_a_retry() {
        let mut calls = 0;
        let open: Opener = Box::new(move || {
            calls += 1;
            Err(SourceError::NotFound {
                path: format!("/dev/video{calls}").into(),
            })
        });
        let err = Reconnecting::new("v4l2:///dev/video9", open, Backoff::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/dev/video1"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: None,
        };
        let ms: Vec<u128> = (0..6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
