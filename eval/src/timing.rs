//! Per-stage latency samples and their percentiles.

use std::time::Duration;

/// Latency samples of one stage.
///
/// Unbounded by default (benchmarks need every value). [`Samples::bounded`] keeps at most `cap`
/// values for the percentiles, as a uniform reservoir of everything pushed (Vitter's Algorithm
/// R), so a stream that runs for months summarises in fixed memory; count, min, max and mean
/// stay exact.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<Duration>,
    cap: Option<usize>,
    seen: u64,
    min: Duration,
    max: Duration,
    sum_ns: u128,
    /// xorshift64 state for the reservoir (no dependency needed for one random index).
    rng: u64,
}

/// Summary statistics of a stage, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Samples {
    /// Samples whose percentiles come from at most `cap` values (a uniform reservoir).
    pub fn bounded(cap: usize) -> Self {
        Self {
            cap: Some(cap.max(1)),
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Self::default()
        }
    }

    pub fn push(&mut self, d: Duration) {
        if self.seen == 0 || d < self.min {
            self.min = d;
        }
        if d > self.max {
            self.max = d;
        }
        self.seen += 1;
        self.sum_ns += d.as_nanos();
        match self.cap {
            Some(cap) if self.values.len() >= cap => {
                // Algorithm R: the n-th value replaces a random kept one with probability cap/n.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let j = self.rng % self.seen;
                if (j as usize) < cap {
                    self.values[j as usize] = d;
                }
            }
            _ => self.values.push(d),
        }
    }

    /// Values pushed (all of them, also those a bounded reservoir no longer holds).
    pub fn len(&self) -> usize {
        self.seen as usize
    }

    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// Percentile `p` in [0, 100] by the nearest-rank method (the value at rank ceil(p/100 * n)).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.values.is_empty() {
            return None;
        }
        let mut v = self.values.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }

    pub fn summary(&self) -> Option<Summary> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Some(Summary {
            count: self.len(),
            median_ms: ms(self.percentile(50.0)?),
            p90_ms: ms(self.percentile(90.0)?),
            p99_ms: ms(self.percentile(99.0)?),
            min_ms: ms(self.min),
            max_ms: ms(self.max),
            mean_ms: self.sum_ns as f64 / 1e6 / self.seen as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ms in [5, 1, 4, 2, 3, 6, 7, 8, 9, 10] {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.percentile(50.0), Some(Duration::from_millis(5)));
        assert_eq!(s.percentile(90.0), Some(Duration::from_millis(9)));
        assert_eq!(s.percentile(100.0), Some(Duration::from_millis(10)));
        assert_eq!(s.percentile(0.0), Some(Duration::from_millis(1)));
        let sum = s.summary().unwrap();
        assert_eq!(sum.count, 10);
        assert!((sum.mean_ms - 5.5).abs() < 1e-9);
        assert_eq!(Samples::default().summary(), None);
    }

    #[test]
    fn a_bounded_reservoir_keeps_its_size_and_the_distribution() {
        let mut s = Samples::bounded(1000);
        // 100k values, 0..100 ms uniformly (in a shuffled order), then a 5 s outlier.
        for i in 0..100_000u64 {
            s.push(Duration::from_micros((i * 7919) % 100_000));
        }
        s.push(Duration::from_secs(5));
        assert_eq!(s.values.len(), 1000, "memory stays bounded");
        let sum = s.summary().unwrap();
        assert_eq!(sum.count, 100_001);
        assert_eq!(sum.min_ms, 0.0);
        assert_eq!(
            sum.max_ms, 5000.0,
            "exact, though the reservoir may not hold it"
        );
        assert!((sum.mean_ms - 50.0).abs() < 0.1, "{sum:?}");
        // 1000 uniform draws: the median and p90 land within a few ms of 50 and 90.
        assert!((sum.median_ms - 50.0).abs() < 6.0, "{sum:?}");
        assert!((sum.p90_ms - 90.0).abs() < 4.0, "{sum:?}");
    }
}
