//! The sampler thread: ring capacity, clean stop, and summaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dishcam_board::{Sample, Sampler, Summary, Telemetry, Unavailable};

/// Counts its samples: power 1000 mW, energy 1000 µJ more each sample, RSS growing.
struct Counter(Arc<AtomicU64>);

impl Telemetry for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn sample(&mut self) -> Sample {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Sample {
            cpu_util: Some(0.5),
            rss_mb: Some(n as f64),
            power_mw: Some(1000.0),
            energy_uj: Some(n * 1000),
            ..Sample::default()
        }
    }

    fn unavailable(&self) -> Vec<Unavailable> {
        vec![Unavailable::new("gpu_util", "no GPU here")]
    }
}

#[test]
fn ring_keeps_the_latest_samples_and_stops_cleanly() {
    let count = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::with_capacity(
        Box::new(Counter(Arc::clone(&count))),
        Duration::from_millis(5),
        4,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while count.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let samples = sampler.samples();
    assert_eq!(samples.len(), 4);
    let rss: Vec<f64> = samples.iter().map(|s| s.rss_mb.unwrap()).collect();
    assert!(rss.windows(2).all(|w| w[1] == w[0] + 1.0), "{rss:?}");
    assert!(sampler.latest().is_some());
    assert_eq!(
        sampler.unavailable(),
        [Unavailable::new("gpu_util", "no GPU here")]
    );

    let summary = sampler.stop();
    let taken = count.load(Ordering::SeqCst);
    assert!(taken >= 10);
    assert_eq!(summary.samples, 4);
    assert_eq!(summary.mean_cpu_util, Some(0.5));
    assert_eq!(summary.peak_power_mw, Some(1000.0));
    // Three steps of 1000 µJ between the first and last sample in the ring.
    assert_eq!(summary.energy_mj, Some(3.0));
    assert_eq!(summary.energy_per_item(3), Some(1.0));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        count.load(Ordering::SeqCst),
        taken,
        "sampling went on after stop"
    );
}

#[test]
fn dropping_the_sampler_stops_the_thread_promptly() {
    let count = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::start(
        Box::new(Counter(Arc::clone(&count))),
        Duration::from_secs(60),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sampler.latest().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    drop(sampler);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop waited for the period"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn summary_integrates_power_when_there_is_no_energy_counter() {
    let t0 = Instant::now();
    let at = |ms: u64, mw: Option<f64>, rss: f64| {
        (
            t0 + Duration::from_millis(ms),
            Sample {
                power_mw: mw,
                rss_mb: Some(rss),
                rss_peak_mb: Some(rss + 1.0),
                ..Sample::default()
            },
        )
    };
    let samples = [
        at(0, Some(1000.0), 10.0),
        at(1000, Some(3000.0), 30.0),
        at(2000, None, 20.0),
    ];
    let summary = Summary::of(&samples);
    assert_eq!(summary.samples, 3);
    assert_eq!(summary.seconds, 2.0);
    assert_eq!(summary.peak_rss_mb, Some(31.0));
    assert_eq!(summary.mean_power_mw, Some(2000.0));
    assert_eq!(summary.peak_power_mw, Some(3000.0));
    // (1000 + 3000) / 2 mW over 1 s; the second interval has no reading at its end.
    assert_eq!(summary.energy_mj, Some(2000.0));
    assert_eq!(summary.energy_per_item(4), Some(500.0));
    assert_eq!(summary.energy_per_item(0), None);

    let no_power = Summary::of(&[at(0, None, 1.0), at(10, None, 1.0)]);
    assert_eq!(no_power.energy_mj, None);
    assert_eq!(no_power.energy_per_item(10), None);
    assert_eq!(Summary::of(&[]), Summary::default());
}
