//! A streaming histogram of |x|, built the way NVIDIA pytorch-quantization's `HistogramCalibrator`
//! builds it (`num_bits = 8`, `unsigned = false`, `skip_zeros = false`), so that the calibrators in
//! [`crate::amax`] pick the same amax as pytorch-quantization does on the same activations.
//!
//! - The first batch with a non-zero value fixes the bin width: its edges are
//!   `linspace(0, m, num_bins + 1)` where `m` is the batch's largest |x|.
//! - A later batch whose largest |x| lies past the last edge appends bins of the same width
//!   (`np.arange(last + width, batch_max + width, width)`), so the histogram grows; old counts keep
//!   their bins.
//! - A bin `k` holds `edges[k] <= |x| < edges[k + 1]`; the last bin also holds `|x| == edges[last]`
//!   (`np.histogram`).
//!
//! Edges are `f64` (values are `f32`, so every |x| compares exactly against them).
//!
//! Where this differs from pytorch-quantization, on inputs it does not handle:
//! - Values that are NaN or infinite are counted in [`AbsHistogram::non_finite`] and left out of
//!   the bins and of the maximum.
//! - While every value seen is zero there is no range to choose; zeros are counted and put in the
//!   first bin once a non-zero value fixes the range. pytorch-quantization would build a histogram
//!   over a zero-width range.
//! - If rounding in the `arange` extension leaves the last edge below the batch maximum, one more
//!   edge is appended; pytorch-quantization would silently drop those values.
//! - The histogram never grows past [`MAX_GROWTH`] × `num_bins` bins: before an extension would
//!   pass that, pairs of adjacent bins are merged (the width doubles). pytorch-quantization grows
//!   without bound, so one huge outlier after a narrow first batch runs it out of memory.

use serde::{Deserialize, Serialize};

/// pytorch-quantization's default number of bins for the first batch.
pub const DEFAULT_NUM_BINS: usize = 2048;

/// A histogram grows to at most this many times its configured `num_bins` bins; past that, adjacent
/// bins are merged pairwise.
pub const MAX_GROWTH: usize = 16;

/// An [`AbsHistogram`] that cannot be valid: from [`AbsHistogram::from_parts`] or deserialisation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HistogramError {
    /// `num_bins` was 0.
    #[error("a histogram needs at least 1 bin, got num_bins = 0")]
    NoBins,
    /// The edges are not one more than the counts.
    #[error("histogram has {counts} counts but {edges} edges; expected counts + 1 edges")]
    EdgeCount {
        /// Number of counts.
        counts: usize,
        /// Number of edges.
        edges: usize,
    },
    /// The edges do not start at 0 or do not increase strictly through finite values.
    #[error(
        "histogram edges must start at 0 and increase strictly through finite values; \
         edge {index} is {value} after {previous}"
    )]
    Edges {
        /// Index of the offending edge.
        index: usize,
        /// Its value.
        value: f64,
        /// The edge before it (0 for the first edge).
        previous: f64,
    },
    /// The recorded maximum is negative or not finite, or non-zero with no edges.
    #[error("histogram max {max} must be finite and at least 0, and 0 while there are no edges")]
    Max {
        /// The recorded maximum |x|.
        max: f32,
    },
    /// Zeros waiting for a range while the histogram already has one.
    #[error(
        "histogram has bins and also {0} zeros waiting for a range; zeros belong in bin 0 then"
    )]
    PendingZeros(u64),
}

/// Streaming histogram of |x| over `f32` values; see the [module docs](self) for its exact rules.
///
/// Serialises as `{num_bins, counts, edges, max, non_finite, zeros_before_range}`; deserialising
/// checks the same invariants as [`AbsHistogram::from_parts`]. Edges round-trip exactly through a
/// format whose float parsing is exact (serde_json needs its `float_roundtrip` feature for that;
/// without it an edge may move by an ulp, which moves an amax taken from it by as much).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HistogramParts")]
pub struct AbsHistogram {
    num_bins: usize,
    counts: Vec<u64>,
    edges: Vec<f64>,
    max: f32,
    non_finite: u64,
    zeros_before_range: u64,
}

#[derive(Deserialize)]
struct HistogramParts {
    num_bins: usize,
    counts: Vec<u64>,
    edges: Vec<f64>,
    max: f32,
    non_finite: u64,
    zeros_before_range: u64,
}

impl TryFrom<HistogramParts> for AbsHistogram {
    type Error = HistogramError;

    fn try_from(p: HistogramParts) -> Result<Self, HistogramError> {
        if p.num_bins == 0 {
            return Err(HistogramError::NoBins);
        }
        if p.counts.is_empty() && p.edges.is_empty() {
            if p.max != 0.0 {
                return Err(HistogramError::Max { max: p.max });
            }
        } else {
            validate(&p.counts, &p.edges, p.max)?;
            if p.zeros_before_range != 0 {
                return Err(HistogramError::PendingZeros(p.zeros_before_range));
            }
        }
        Ok(Self {
            num_bins: p.num_bins,
            counts: p.counts,
            edges: p.edges,
            max: p.max,
            non_finite: p.non_finite,
            zeros_before_range: p.zeros_before_range,
        })
    }
}

fn validate(counts: &[u64], edges: &[f64], max: f32) -> Result<(), HistogramError> {
    if counts.is_empty() {
        return Err(HistogramError::NoBins);
    }
    if edges.len() != counts.len() + 1 {
        return Err(HistogramError::EdgeCount {
            counts: counts.len(),
            edges: edges.len(),
        });
    }
    if edges[0] != 0.0 {
        return Err(HistogramError::Edges {
            index: 0,
            value: edges[0],
            previous: 0.0,
        });
    }
    for (index, pair) in edges.windows(2).enumerate() {
        if !(pair[1] > pair[0] && pair[1].is_finite()) {
            return Err(HistogramError::Edges {
                index: index + 1,
                value: pair[1],
                previous: pair[0],
            });
        }
    }
    // Not checked against the last edge: a text format may move edges by an ulp.
    if !(max.is_finite() && max >= 0.0) {
        return Err(HistogramError::Max { max });
    }
    Ok(())
}

impl Default for AbsHistogram {
    /// An empty histogram with [`DEFAULT_NUM_BINS`] bins.
    fn default() -> Self {
        Self::new(DEFAULT_NUM_BINS)
    }
}

impl AbsHistogram {
    /// An empty histogram whose first non-zero batch is spread over `num_bins` bins.
    ///
    /// # Panics
    /// If `num_bins` is 0.
    pub fn new(num_bins: usize) -> Self {
        assert!(
            num_bins > 0,
            "AbsHistogram::new: num_bins must be at least 1"
        );
        Self {
            num_bins,
            counts: Vec::new(),
            edges: Vec::new(),
            max: 0.0,
            non_finite: 0,
            zeros_before_range: 0,
        }
    }

    /// A histogram from counts and edges made elsewhere (for example by the Python reference),
    /// with `max` the largest |x| seen and `non_finite` the NaN/infinite values left out.
    ///
    /// Needs `edges.len() == counts.len() + 1`, at least one bin, `edges[0] == 0`, strictly
    /// increasing finite edges, and a finite `max >= 0`. `num_bins` becomes `counts.len()`.
    pub fn from_parts(
        counts: Vec<u64>,
        edges: Vec<f64>,
        max: f32,
        non_finite: u64,
    ) -> Result<Self, HistogramError> {
        validate(&counts, &edges, max)?;
        Ok(Self {
            num_bins: counts.len(),
            counts,
            edges,
            max,
            non_finite,
            zeros_before_range: 0,
        })
    }

    /// Adds the |x| of one batch of values; NaN and infinite values are only counted in
    /// [`non_finite`](Self::non_finite). Runs in O(`values.len()`) for evenly spaced edges (all
    /// that `collect` makes), plus O(bins) when the range grows.
    pub fn collect(&mut self, values: &[f32]) {
        let mut batch_max = 0.0f32;
        let mut non_finite = 0u64;
        for &v in values {
            if v.is_finite() {
                batch_max = batch_max.max(v.abs());
            } else {
                non_finite += 1;
            }
        }
        self.non_finite += non_finite;
        let finite = values.len() as u64 - non_finite;

        if self.edges.is_empty() {
            if batch_max == 0.0 {
                self.zeros_before_range += finite;
                return;
            }
            self.edges = linspace_edges(f64::from(batch_max), self.num_bins);
            self.counts = vec![0; self.num_bins];
            self.counts[0] = std::mem::take(&mut self.zeros_before_range);
        } else if f64::from(batch_max) > self.last_edge() {
            self.extend_to(f64::from(batch_max));
        }
        self.max = self.max.max(batch_max);

        let edges = &self.edges;
        let last_bin = self.counts.len() - 1;
        let inv_width = 1.0 / edges[1];
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let x = f64::from(v.abs());
            // The division only guesses the bin; the edges decide, exactly as np.histogram does.
            // A wrong guess (rounding, or uneven edges from `from_parts`) falls back to a search.
            let mut bin = ((x * inv_width) as usize).min(last_bin);
            let fits = edges[bin] <= x && (bin == last_bin || x < edges[bin + 1]);
            if !fits {
                bin = edges[1..=last_bin].partition_point(|&e| e <= x);
            }
            self.counts[bin] += 1;
        }
    }

    /// Count per bin. Empty while no non-zero finite value has been seen.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Bin edges, `counts().len() + 1` of them starting at 0; empty while `counts()` is.
    pub fn edges(&self) -> &[f64] {
        &self.edges
    }

    /// Largest finite |x| seen; 0 before any non-zero value.
    pub fn max(&self) -> f32 {
        self.max
    }

    /// Number of finite values seen, zeros included (also those not yet in a bin).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.zeros_before_range
    }

    /// Number of NaN or infinite values seen; they are in no bin.
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// The number of bins the first non-zero batch is spread over.
    pub fn num_bins(&self) -> usize {
        self.num_bins
    }

    fn last_edge(&self) -> f64 {
        self.edges[self.edges.len() - 1]
    }

    fn width(&self) -> f64 {
        self.edges[1] - self.edges[0]
    }

    /// Appends edges up to `target` (> last edge) the way pytorch-quantization does.
    fn extend_to(&mut self, target: f64) {
        let cap = self.num_bins.saturating_mul(MAX_GROWTH).max(2);
        while self.counts.len() as f64 + ((target - self.last_edge()) / self.width()).ceil() + 1.0
            > cap as f64
        {
            self.merge_bin_pairs();
        }

        let (width, last) = (self.width(), self.last_edge());
        append_arange(&mut self.edges, last + width, target + width, width);
        if self.last_edge() < target {
            let next = self.last_edge() + width;
            self.edges.push(next);
        }
        self.counts.resize(self.edges.len() - 1, 0);
    }

    /// Halves the number of bins by merging neighbours; the edges kept are a subset of the old.
    fn merge_bin_pairs(&mut self) {
        if self.counts.len() % 2 == 1 {
            let next = self.last_edge() + self.width();
            self.edges.push(next);
            self.counts.push(0);
        }
        self.counts = self
            .counts
            .chunks(2)
            .map(|pair| pair[0] + pair[1])
            .collect();
        self.edges = self.edges.iter().copied().step_by(2).collect();
    }
}

/// `np.linspace(0, max, num_bins + 1)`: `k * (max / num_bins)`, with the last edge exactly `max`.
fn linspace_edges(max: f64, num_bins: usize) -> Vec<f64> {
    let step = max / num_bins as f64;
    let mut edges: Vec<f64> = (0..=num_bins).map(|k| k as f64 * step).collect();
    edges[num_bins] = max;
    edges
}

/// Appends `np.arange(start, stop, step)` for float64: `ceil((stop - start) / step)` values, the
/// first two `start` and `start + step`, then `start + j * delta` with
/// `delta = (start + step) - start` (numpy's fill rule; it can differ from `step` in the last bit).
fn append_arange(out: &mut Vec<f64>, start: f64, stop: f64, step: f64) {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len < 1.0 {
        return;
    }
    let len = len as usize;
    out.push(start);
    if len == 1 {
        return;
    }
    let second = start + step;
    out.push(second);
    let delta = second - start;
    out.extend((2..len).map(|j| start + j as f64 * delta));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bin np.histogram gives `x` for these edges, by search.
    fn bin_by_search(edges: &[f64], x: f64) -> Option<usize> {
        let last = edges.len() - 2;
        if x < edges[0] || x > edges[last + 1] {
            return None;
        }
        if x == edges[last + 1] {
            return Some(last);
        }
        Some(edges.partition_point(|&e| e <= x) - 1)
    }

    fn histogram_by_search(edges: &[f64], batches: &[Vec<f32>]) -> Vec<u64> {
        let mut counts = vec![0; edges.len() - 1];
        for v in batches.iter().flatten().filter(|v| v.is_finite()) {
            counts[bin_by_search(edges, f64::from(v.abs())).expect("value outside the edges")] += 1;
        }
        counts
    }

    #[test]
    fn first_batch_spans_zero_to_max_and_max_goes_in_last_bin() {
        let mut h = AbsHistogram::new(4);
        h.collect(&[0.0, -1.0, 2.0, -4.0, 3.0, 0.999]);
        assert_eq!(h.edges(), &[0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(h.counts(), &[2, 1, 1, 2]);
        assert_eq!(h.max(), 4.0);
        assert_eq!(h.total(), 6);
    }

    #[test]
    fn later_batch_past_last_edge_appends_bins_of_same_width() {
        let mut h = AbsHistogram::new(4);
        h.collect(&[4.0, 0.5]);
        h.collect(&[5.5, -1.5]);
        // np.arange(5, 6.5, 1) = [5, 6]: the bin holding 5.5 ends at 6.
        assert_eq!(h.edges(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(h.counts(), &[1, 1, 0, 1, 0, 1]);
        assert_eq!(h.max(), 5.5);

        // A batch max exactly on the new last edge needs no extension.
        h.collect(&[6.0]);
        assert_eq!(h.edges().len(), 7);
        assert_eq!(h.counts(), &[1, 1, 0, 1, 0, 2]);
    }

    #[test]
    fn old_last_bin_keeps_its_closed_right_edge_after_extension() {
        let mut h = AbsHistogram::new(4);
        h.collect(&[4.0]);
        // np.arange(5, 6, 1) = [5]: 5.0 lands in the new last bin [4, 5]; the 4.0 counted while
        // [3, 4] was the last bin stays there, as pytorch-quantization keeps old counts in place.
        h.collect(&[5.0]);
        assert_eq!(h.edges(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(h.counts(), &[0, 0, 0, 1, 1]);
        h.collect(&[4.0]);
        assert_eq!(h.counts(), &[0, 0, 0, 1, 2]);
    }

    #[test]
    fn zeros_before_any_range_are_kept_for_bin_zero() {
        let mut h = AbsHistogram::new(8);
        h.collect(&[0.0, -0.0, 0.0]);
        assert!(h.counts().is_empty() && h.edges().is_empty());
        assert_eq!((h.total(), h.max()), (3, 0.0));

        h.collect(&[2.0, 0.0]);
        assert_eq!(h.counts().len(), 8);
        assert_eq!(h.counts()[0], 4);
        assert_eq!(h.counts()[7], 1);
        assert_eq!(h.total(), 5);
    }

    #[test]
    fn non_finite_values_are_counted_apart() {
        let mut h = AbsHistogram::new(4);
        h.collect(&[f32::NAN, f32::INFINITY, 1.0, f32::NEG_INFINITY, 0.25]);
        assert_eq!(h.non_finite(), 3);
        assert_eq!(h.total(), 2);
        assert_eq!(h.max(), 1.0);
        assert_eq!(h.counts(), &[0, 1, 0, 1]);
        assert!(h.edges().iter().all(|e| e.is_finite()));

        h.collect(&[f32::NAN]);
        assert_eq!((h.non_finite(), h.total()), (4, 2));
    }

    #[test]
    fn huge_outlier_merges_bins_instead_of_growing_without_bound() {
        let mut h = AbsHistogram::new(16);
        h.collect(&[1.0, 0.5, 0.01]);
        h.collect(&[1.0e30, 0.75]);
        assert!(h.counts().len() <= 16 * MAX_GROWTH);
        assert!(*h.edges().last().unwrap() >= 1.0e30);
        assert_eq!(h.total(), 5);
        assert_eq!(h.counts().last(), Some(&1));
        assert_eq!(
            histogram_by_search(h.edges(), &[vec![1.0, 0.5, 0.01], vec![1.0e30, 0.75]]),
            h.counts()
        );
    }

    #[test]
    fn uneven_edges_from_parts_are_binned_by_search() {
        let mut h =
            AbsHistogram::from_parts(vec![0; 4], vec![0.0, 0.1, 0.2, 3.0, 4.0], 4.0, 0).unwrap();
        h.collect(&[0.05, 0.1, 1.0, 2.99, 3.0, 4.0, -3.5]);
        assert_eq!(h.counts(), &[1, 1, 2, 3]);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut h = AbsHistogram::new(16);
        h.collect(&[0.3, -2.7, 1.1, f32::NAN]);
        h.collect(&[3.3]);
        let json = serde_json::to_string(&h).unwrap();
        let back: AbsHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (
                back.counts(),
                back.max(),
                back.non_finite(),
                back.num_bins()
            ),
            (h.counts(), h.max(), h.non_finite(), h.num_bins())
        );
        // serde_json parses floats to within an ulp unless its `float_roundtrip` feature is on.
        for (a, b) in back.edges().iter().zip(h.edges()) {
            assert!((a - b).abs() <= 1e-15 * b.abs(), "{a} vs {b}");
        }

        let bad = r#"{"num_bins":2,"counts":[1,1],"edges":[0.0,2.0,1.0],"max":1.0,
                      "non_finite":0,"zeros_before_range":0}"#;
        let err = serde_json::from_str::<AbsHistogram>(bad).unwrap_err();
        assert!(err.to_string().contains("edge 2 is 1 after 2"), "{err}");
    }

    #[test]
    fn from_parts_rejects_inconsistent_parts() {
        assert_eq!(
            AbsHistogram::from_parts(vec![1, 2], vec![0.0, 1.0], 1.0, 0),
            Err(HistogramError::EdgeCount {
                counts: 2,
                edges: 2
            })
        );
        for max in [f32::NAN, -1.0, f32::INFINITY] {
            assert!(matches!(
                AbsHistogram::from_parts(vec![1], vec![0.0, 1.0], max, 0),
                Err(HistogramError::Max { .. })
            ));
        }
        assert!(matches!(
            AbsHistogram::from_parts(vec![1, 1], vec![0.5, 1.0, 2.0], 1.0, 0),
            Err(HistogramError::Edges { index: 0, .. })
        ));
        assert!(AbsHistogram::from_parts(vec![1, 2], vec![0.0, 1.0, 2.0], 2.0, 0).is_ok());
    }

    proptest! {
        #[test]
        fn binning_matches_search_over_edges(
            batches in prop::collection::vec(
                (0.0f32..50.0, prop::collection::vec(-1.0f32..1.0, 1..200)),
                1..5,
            ),
            num_bins in 1usize..300,
        ) {
            let batches: Vec<Vec<f32>> = batches
                .into_iter()
                .map(|(scale, unit)| unit.into_iter().map(|u| u * scale).collect())
                .collect();
            let mut h = AbsHistogram::new(num_bins);
            for b in &batches {
                let (before, before_edges, before_total) =
                    (h.counts().to_vec(), h.edges().to_vec(), h.total());
                h.collect(b);
                if h.edges().is_empty() {
                    continue;
                }
                prop_assert_eq!(h.edges().len(), h.counts().len() + 1);
                prop_assert!(h.edges().windows(2).all(|w| w[0] < w[1]));
                prop_assert!(f64::from(h.max()) <= *h.edges().last().unwrap());
                // Each batch is binned over the edges of its time and added to the old counts;
                // zeros seen before there were edges go to bin 0. Merged bins are tested apart.
                if h.edges().starts_with(&before_edges) {
                    let mut expected = histogram_by_search(h.edges(), std::slice::from_ref(b));
                    for (e, c) in expected.iter_mut().zip(&before) {
                        *e += c;
                    }
                    if before_edges.is_empty() {
                        expected[0] += before_total;
                    }
                    prop_assert_eq!(h.counts(), &expected[..]);
                }
            }
            let n: u64 = batches.iter().map(|b| b.len() as u64).sum();
            prop_assert_eq!(h.total(), n);
        }
    }
}
