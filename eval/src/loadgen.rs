//! Benchmark statistics in the manner of MLPerf Inference's LoadGen: tail-latency estimates with
//! early stopping, and the run-validity verdict. Pure functions; `dishcam bench` does the timing.
//!
//! Early stopping (LoadGen's idea, our implementation): with `n` latencies measured, we want a
//! latency `L` such that, at confidence `c`, the true `p`-th percentile is at most `L`. If the
//! true share of queries slower than `L` were `1 - p` or more, seeing at most `t` of them among
//! `n` would have probability `P[Binomial(n, 1 - p) <= t]`. The largest `t` for which that
//! probability is at most `1 - c` gives the estimate: the latency with exactly `t` queries
//! above it. Too few queries leave no such `t`: the run cannot bound the percentile at all.

use std::time::Duration;

/// `ln P[Binomial(n, q) <= t]`, summed in log space (n up to millions without underflow).
fn ln_binomial_cdf(t: usize, n: usize, q: f64) -> f64 {
    if t >= n {
        return 0.0;
    }
    let (lq, lp) = (q.ln(), (1.0 - q).ln());
    // ln pmf(0) = n ln(1-q); pmf(k+1) = pmf(k) * (n-k)/(k+1) * q/(1-q).
    let mut ln_pmf = n as f64 * lp;
    let mut acc = ln_pmf;
    for k in 0..t {
        ln_pmf += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + lq - lp;
        let (hi, lo) = if acc > ln_pmf {
            (acc, ln_pmf)
        } else {
            (ln_pmf, acc)
        };
        acc = hi + (lo - hi).exp().ln_1p();
    }
    acc
}

/// How many queries may exceed the reported latency so that, at `confidence`, the true
/// `percentile` (in (0, 1)) is bounded by it; `None` when `n` is too small for any.
pub fn overlatency_allowed(n: usize, percentile: f64, confidence: f64) -> Option<usize> {
    let q = 1.0 - percentile;
    let limit = (1.0 - confidence).ln();
    if n == 0 || ln_binomial_cdf(0, n, q) > limit {
        return None;
    }
    // The CDF grows with t: binary search for the largest t with CDF <= 1 - confidence.
    let (mut lo, mut hi) = (0usize, n - 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ln_binomial_cdf(mid, n, q) <= limit {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// The smallest number of queries that can give an early-stopping estimate.
pub fn min_queries_for_estimate(percentile: f64, confidence: f64) -> usize {
    let q = 1.0 - percentile;
    // (1 - q)^n <= 1 - c  <=>  n >= ln(1 - c) / ln(1 - q)
    ((1.0 - confidence).ln() / (1.0 - q).ln()).ceil() as usize
}

/// The early-stopping estimate of the `percentile` latency from `sorted` (ascending) latencies.
pub fn early_stopping_estimate(
    sorted: &[Duration],
    percentile: f64,
    confidence: f64,
) -> Option<Duration> {
    let t = overlatency_allowed(sorted.len(), percentile, confidence)?;
    sorted.get(sorted.len() - 1 - t).copied()
}

/// The nearest-rank `percentile` (in [0, 1]) of `sorted` (ascending) latencies.
pub fn percentile(sorted: &[Duration], percentile: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percentile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What a run must reach to be valid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minimums {
    pub queries: usize,
    pub duration: Duration,
    /// The tail percentile the scenario reports (0.9 single-stream, 0.99 multi-stream), if
    /// it needs an early-stopping estimate.
    pub tail: Option<f64>,
    pub confidence: f64,
}

/// VALID, INDICATIVE or INVALID, with each of the scenario's minimums that was not met.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Met the scenario's own minimums (LoadGen's, not lowered).
    pub valid: bool,
    /// `VALID`; `INDICATIVE`: met only the minimums the run was asked for, lower than the
    /// scenario's (a `--quick` run, or lowered `--min-*`), so its numbers are a hint, not a
    /// result; `INVALID`: not even those.
    pub label: &'static str,
    /// The scenario's minimums that were not met.
    pub unmet: Vec<String>,
}

impl Verdict {
    /// The verdict on `queries` in `duration` against the scenario's minimums `official` and
    /// the (possibly lower) minimums `asked` the run was given.
    pub fn of(
        queries: usize,
        duration: Duration,
        official: &Minimums,
        asked: &Minimums,
    ) -> Verdict {
        let unmet = unmet(queries, duration, official);
        let label = if unmet.is_empty() {
            "VALID"
        } else if unmet_is_empty(queries, duration, asked) {
            "INDICATIVE"
        } else {
            "INVALID"
        };
        Verdict {
            valid: unmet.is_empty(),
            label,
            unmet,
        }
    }

    /// LoadGen's server rule on top of the minimums: the p99 latency (arrival to answer) must
    /// stay within `bound_ms`, or the run is INVALID whatever else it met.
    pub fn within_latency_bound(mut self, p99_ms: f64, bound_ms: f64) -> Verdict {
        if p99_ms > bound_ms {
            self.valid = false;
            self.label = "INVALID";
            self.unmet.push(format!(
                "p99 latency {p99_ms:.1} ms over the {bound_ms:.0} ms bound"
            ));
        }
        self
    }

    pub fn label(&self) -> &'static str {
        self.label
    }
}

fn unmet_is_empty(queries: usize, duration: Duration, min: &Minimums) -> bool {
    unmet(queries, duration, min).is_empty()
}

/// Each minimum of `min` that `queries` in `duration` do not meet, said as a sentence.
fn unmet(queries: usize, duration: Duration, min: &Minimums) -> Vec<String> {
    let mut unmet = Vec::new();
    if queries < min.queries {
        unmet.push(format!("{queries} queries < minimum {}", min.queries));
    }
    if duration < min.duration {
        unmet.push(format!(
            "{:.1} s < minimum duration {:.1} s",
            duration.as_secs_f64(),
            min.duration.as_secs_f64()
        ));
    }
    if let Some(p) = min.tail {
        let need = min_queries_for_estimate(p, min.confidence);
        if queries < need {
            unmet.push(format!(
                "{queries} queries cannot bound the p{} at {:.0} % confidence (needs {need})",
                p * 100.0,
                min.confidence * 100.0
            ));
        }
    }
    unmet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_p99_over_the_server_bound_is_invalid_whatever_else_was_met() {
        let min = Minimums {
            queries: 10,
            duration: ms(100),
            tail: None,
            confidence: 0.99,
        };
        let ok = Verdict::of(10, ms(100), &min, &min);
        assert_eq!(
            ok.clone().within_latency_bound(99.0, 100.0).label(),
            "VALID"
        );
        let over = ok.within_latency_bound(100.5, 100.0);
        assert_eq!(over.label(), "INVALID");
        assert!(!over.valid && over.unmet[0].contains("100.5 ms over the 100 ms bound"));
    }

    #[test]
    fn binomial_cdf_matches_direct_sums() {
        // P[Bin(10, 0.1) <= 1] = 0.9^10 + 10 * 0.1 * 0.9^9
        let direct = 0.9f64.powi(10) + 10.0 * 0.1 * 0.9f64.powi(9);
        assert!((ln_binomial_cdf(1, 10, 0.1).exp() - direct).abs() < 1e-12);
        // P[Bin(5, 0.5) <= 2] = (1 + 5 + 10) / 32
        assert!((ln_binomial_cdf(2, 5, 0.5).exp() - 0.5).abs() < 1e-12);
        assert_eq!(ln_binomial_cdf(5, 5, 0.3), 0.0);
        // Large n: finite, and increasing in t.
        let a = ln_binomial_cdf(9_000, 100_000, 0.1);
        let b = ln_binomial_cdf(9_500, 100_000, 0.1);
        assert!(a.is_finite() && a < b && b < 0.0);
    }

    #[test]
    fn minimum_queries_for_p90_and_p99_at_99_percent() {
        // 0.9^44 = 0.0097 <= 0.01 < 0.9^43 = 0.0108
        assert_eq!(min_queries_for_estimate(0.9, 0.99), 44);
        assert_eq!(min_queries_for_estimate(0.99, 0.99), 459);
        assert_eq!(overlatency_allowed(43, 0.9, 0.99), None);
        assert_eq!(overlatency_allowed(44, 0.9, 0.99), Some(0));
    }

    #[test]
    fn allowed_overlatency_is_the_largest_passing_count() {
        for n in [44, 100, 1024, 5000] {
            let t = overlatency_allowed(n, 0.9, 0.99).unwrap();
            let limit = 0.01f64.ln();
            assert!(ln_binomial_cdf(t, n, 0.1) <= limit);
            assert!(ln_binomial_cdf(t + 1, n, 0.1) > limit);
            // Below the plain 10 % of queries: the estimate is conservative.
            assert!(t < n / 10, "n={n} t={t}");
        }
    }

    #[test]
    fn estimate_is_at_or_above_the_plain_percentile() {
        let sorted: Vec<Duration> = (1..=1024).map(ms).collect();
        let p90 = percentile(&sorted, 0.9).unwrap();
        assert_eq!(p90, ms(922));
        let est = early_stopping_estimate(&sorted, 0.9, 0.99).unwrap();
        let t = overlatency_allowed(1024, 0.9, 0.99).unwrap();
        assert_eq!(est, ms(1024 - t as u64));
        assert!(est > p90);
        assert_eq!(early_stopping_estimate(&sorted[..10], 0.9, 0.99), None);
    }

    #[test]
    fn verdict_names_each_unmet_minimum() {
        let min = Minimums {
            queries: 1024,
            duration: Duration::from_secs(60),
            tail: Some(0.9),
            confidence: 0.99,
        };
        let v = Verdict::of(2000, Duration::from_secs(61), &min, &min);
        assert!(v.valid && v.unmet.is_empty());
        assert_eq!(v.label(), "VALID");
        let v = Verdict::of(30, Duration::from_secs(2), &min, &min);
        assert!(!v.valid);
        assert_eq!(v.unmet.len(), 3, "{:?}", v.unmet);
        assert!(v.unmet[0].contains("30 queries < minimum 1024"));
        assert!(v.unmet[1].contains("minimum duration 60.0 s"));
        assert!(v.unmet[2].contains("needs 44"));
        assert_eq!(v.label(), "INVALID");
    }

    /// A run asked for less than the scenario needs (`--quick`) and got it is INDICATIVE, never
    /// VALID, and still lists what the scenario's minimums would have needed.
    #[test]
    fn a_run_that_met_only_lowered_minimums_is_indicative() {
        let official = Minimums {
            queries: 1024,
            duration: Duration::from_secs(60),
            tail: Some(0.9),
            confidence: 0.99,
        };
        let quick = Minimums {
            queries: 64,
            duration: Duration::from_secs(2),
            ..official
        };
        let v = Verdict::of(100, Duration::from_secs(3), &official, &quick);
        assert!(!v.valid);
        assert_eq!(v.label(), "INDICATIVE");
        assert_eq!(v.unmet.len(), 2, "{:?}", v.unmet);
        let v = Verdict::of(10, Duration::from_secs(3), &official, &quick);
        assert_eq!(v.label(), "INVALID");
        let v = Verdict::of(2000, Duration::from_secs(61), &official, &quick);
        assert_eq!(v.label(), "VALID");
    }
}
