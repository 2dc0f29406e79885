//! Pacing frames to a rate with the real clock.

use std::time::{Duration, Instant};

/// Schedules frames `1 / fps` apart; without a rate every frame is due at once.
#[derive(Debug)]
pub(super) struct Pacer {
    interval: Option<Duration>,
    next_due: Option<Instant>,
}

impl Pacer {
    /// `fps` must already be validated (`uri::valid_fps`).
    pub(super) fn new(fps: Option<f32>) -> Self {
        Self {
            interval: fps.map(|f| Duration::from_secs_f64(1.0 / f as f64)),
            next_due: None,
        }
    }

    /// Sleeps until the next frame is due and claims it, or sleeps `timeout` and returns false
    /// when the frame is due later than that. The first frame is due at once.
    pub(super) fn wait(&mut self, timeout: Duration) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        let now = Instant::now();
        let due = *self.next_due.get_or_insert(now);
        if due > now {
            let wait = due - now;
            if wait > timeout {
                std::thread::sleep(timeout);
                return false;
            }
            std::thread::sleep(wait);
        }
        // A consumer that fell more than a frame behind restarts the schedule from now rather
        // than receiving a burst of overdue frames.
        let now = Instant::now();
        let next = due + interval;
        self.next_due = Some(next.max(now));
        true
    }
}
