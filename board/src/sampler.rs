//! A thread that samples a [`Telemetry`] every period into a bounded ring, and summaries of
//! the ring (peak memory, mean CPU, power and energy over the window).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::telemetry::{Sample, Telemetry, Unavailable};

/// Samples kept by [`Sampler::start`]: ten minutes at one sample a second.
pub const DEFAULT_CAPACITY: usize = 600;

/// What a window of samples shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples in the window.
    pub samples: usize,
    /// Time from the first to the last sample, seconds.
    pub seconds: f64,
    /// Highest peak resident memory of this process seen, MiB.
    pub peak_rss_mb: Option<f64>,
    /// Mean CPU utilisation over the samples that had it, 0..=1.
    pub mean_cpu_util: Option<f64>,
    /// Mean board power over the samples that had it, mW.
    pub mean_power_mw: Option<f64>,
    /// Highest board power, mW.
    pub peak_power_mw: Option<f64>,
    /// Energy from the first to the last sample, mJ: the difference of the energy counter
    /// when both ends have it, else power integrated over time (trapezoids).
    pub energy_mj: Option<f64>,
}

impl Summary {
    /// Summarises samples taken at the given instants, oldest first.
    pub fn of(samples: &[(Instant, Sample)]) -> Summary {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Summary::default();
        };
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let max = |values: Vec<f64>| values.into_iter().reduce(f64::max);
        let powers: Vec<f64> = samples.iter().filter_map(|(_, s)| s.power_mw).collect();
        let energy_mj = match (first.1.energy_uj, last.1.energy_uj) {
            (Some(a), Some(b)) if samples.len() > 1 && b >= a => Some((b - a) as f64 / 1000.0),
            _ => integrate_power_mj(samples),
        };
        Summary {
            samples: samples.len(),
            seconds: last.0.duration_since(first.0).as_secs_f64(),
            peak_rss_mb: max(samples
                .iter()
                .filter_map(|(_, s)| s.rss_peak_mb.or(s.rss_mb))
                .collect()),
            mean_cpu_util: mean(samples.iter().filter_map(|(_, s)| s.cpu_util).collect()),
            mean_power_mw: mean(powers.clone()),
            peak_power_mw: max(powers),
            energy_mj,
        }
    }

    /// Energy per processed item (e.g. per frame), mJ; `None` when no energy was measured or
    /// no item was processed.
    pub fn energy_per_item(&self, items: u64) -> Option<f64> {
        (items > 0).then_some(self.energy_mj? / items as f64)
    }
}

/// Trapezoid integral of power over consecutive samples that both have it; mW times s is mJ.
fn integrate_power_mj(samples: &[(Instant, Sample)]) -> Option<f64> {
    let mut total = None;
    for pair in samples.windows(2) {
        let (t0, s0) = &pair[0];
        let (t1, s1) = &pair[1];
        if let (Some(p0), Some(p1)) = (s0.power_mw, s1.power_mw) {
            let seconds = t1.duration_since(*t0).as_secs_f64();
            *total.get_or_insert(0.0) += (p0 + p1) / 2.0 * seconds;
        }
    }
    total
}

struct Ring {
    samples: VecDeque<(Instant, Sample)>,
    capacity: usize,
    unavailable: Vec<Unavailable>,
    stop: bool,
}

type Shared = Arc<(Mutex<Ring>, Condvar)>;

/// Samples a [`Telemetry`] on its own thread every period, keeping the latest samples in a
/// ring of fixed capacity. Dropping it stops and joins the thread.
pub struct Sampler {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling now and then every `period`, keeping [`DEFAULT_CAPACITY`] samples.
    pub fn start(telemetry: Box<dyn Telemetry>, period: Duration) -> Sampler {
        Sampler::with_capacity(telemetry, period, DEFAULT_CAPACITY)
    }

    /// Like [`Sampler::start`], keeping the latest `capacity` samples (at least one).
    pub fn with_capacity(
        mut telemetry: Box<dyn Telemetry>,
        period: Duration,
        capacity: usize,
    ) -> Sampler {
        let capacity = capacity.max(1);
        let shared: Shared = Arc::new((
            Mutex::new(Ring {
                samples: VecDeque::with_capacity(capacity),
                capacity,
                unavailable: Vec::new(),
                stop: false,
            }),
            Condvar::new(),
        ));
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("board-sampler".into())
                .spawn(move || {
                    let (ring, wake) = &*shared;
                    let mut next = Instant::now();
                    loop {
                        let sample = telemetry.sample();
                        let unavailable = telemetry.unavailable();
                        let mut guard = lock(ring);
                        if guard.stop {
                            break;
                        }
                        if guard.samples.len() == guard.capacity {
                            guard.samples.pop_front();
                        }
                        guard.samples.push_back((Instant::now(), sample));
                        guard.unavailable = unavailable;
                        next += period;
                        let wait = next.saturating_duration_since(Instant::now());
                        let (guard, _) = wake
                            .wait_timeout_while(guard, wait, |r| !r.stop)
                            .unwrap_or_else(|p| p.into_inner());
                        if guard.stop {
                            break;
                        }
                    }
                })
                .ok()
        };
        if thread.is_none() {
            log::warn!("could not start the telemetry sampler thread; no samples will be taken");
        }
        Sampler { shared, thread }
    }

    /// The most recent sample, if one was taken.
    pub fn latest(&self) -> Option<Sample> {
        lock(&self.shared.0).samples.back().map(|(_, s)| s.clone())
    }

    /// The samples in the ring, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.shared.0)
            .samples
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// What the telemetry could not read in its latest sample, and why.
    pub fn unavailable(&self) -> Vec<Unavailable> {
        lock(&self.shared.0).unavailable.clone()
    }

    /// Summary of the samples in the ring.
    pub fn summary(&self) -> Summary {
        let mut ring = lock(&self.shared.0);
        Summary::of(ring.samples.make_contiguous())
    }

    /// Energy per item over the ring's window, mJ (see [`Summary::energy_per_item`]).
    pub fn energy_per_item(&self, items: u64) -> Option<f64> {
        self.summary().energy_per_item(items)
    }

    /// Stops the thread, waits for it, and returns the summary of the final window.
    pub fn stop(mut self) -> Summary {
        self.halt();
        self.summary()
    }

    fn halt(&mut self) {
        lock(&self.shared.0).stop = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::warn!("the telemetry sampler thread panicked");
            }
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(|p| p.into_inner())
}
