//! Per-stage latency samples and their percentiles.

use std::time::Duration;

/// Latency samples of one stage.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<Duration>,
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
    pub fn push(&mut self, d: Duration) {
        self.values.push(d);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
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
        let n = self.values.len();
        Some(Summary {
            count: n,
            median_ms: ms(self.percentile(50.0)?),
            p90_ms: ms(self.percentile(90.0)?),
            p99_ms: ms(self.percentile(99.0)?),
            min_ms: ms(*self.values.iter().min()?),
            max_ms: ms(*self.values.iter().max()?),
            mean_ms: self.values.iter().map(|d| ms(*d)).sum::<f64>() / n as f64,
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
}
