//! Calibrators: choose the amax (the |x| mapped to ±127) of a tensor from its [`AbsHistogram`].
//!
//! Each method gives the amax NVIDIA pytorch-quantization gives for `num_bits = 8`,
//! `unsigned = false` (`_compute_amax_percentile`, `_compute_amax_entropy` and `_compute_amax_mse`
//! with `stride = 1`, `start_bin = 128`); `tests/amax_parity.rs` checks this against a numpy
//! re-implementation. Where pytorch-quantization would produce NaN, fail, or run out of candidates,
//! these functions return an error or fall back as their docs say.

use std::fmt;
use std::str::FromStr;

use crate::histogram::AbsHistogram;

/// The first candidate bin of the entropy and MSE searches (pytorch-quantization's `start_bin`).
pub const START_BIN: usize = 128;

/// The percentile used by `"percentile"` without a value.
pub const DEFAULT_PERCENTILE: f64 = 99.99;

/// Quantised levels on one side of zero for signed INT8 (`1 << (num_bits - 1)`).
const NUM_LEVELS: usize = 128;

/// Largest signed INT8 magnitude with a narrow range (`2^(num_bits - 1) - 1`).
const MAX_BOUND: f64 = 127.0;

/// How a tensor's amax is chosen from its histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The largest |x| seen.
    Max,
    /// The histogram edge where the cumulative share of values first reaches this percentile
    /// (in (0, 100]).
    Percentile(f64),
    /// The bin edge minimising the KL divergence between the histogram and its 128-level
    /// quantisation (TensorRT's entropy calibration, as pytorch-quantization does it).
    Entropy,
    /// The bin centre minimising the mean squared error of fake-quantised bin centres.
    Mse,
}

impl fmt::Display for Method {
    /// `max`, `percentile:<p>`, `entropy` or `mse`; [`Method::from_str`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Max => f.write_str("max"),
            Method::Percentile(p) => write!(f, "percentile:{p}"),
            Method::Entropy => f.write_str("entropy"),
            Method::Mse => f.write_str("mse"),
        }
    }
}

/// A calibration method name that [`Method::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseMethodError {
    /// Not one of the method names.
    #[error(
        "unknown calibration method `{0}`; valid methods: max, \
         percentile (= percentile:{DEFAULT_PERCENTILE}), percentile:<p> with 0 < p <= 100, \
         entropy, mse"
    )]
    Unknown(String),
    /// `percentile:<p>` with a `p` that is not a number in (0, 100].
    #[error("`{0}`: the percentile must be a number with 0 < p <= 100, e.g. percentile:99.99")]
    BadPercentile(String),
}

impl FromStr for Method {
    type Err = ParseMethodError;

    /// Reads `max`, `percentile` (99.99), `percentile:<p>`, `entropy` or `mse`, ignoring ASCII case
    /// and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, ParseMethodError> {
        let name = s.trim().to_ascii_lowercase();
        match name.as_str() {
            "max" => return Ok(Method::Max),
            "percentile" => return Ok(Method::Percentile(DEFAULT_PERCENTILE)),
            "entropy" => return Ok(Method::Entropy),
            "mse" => return Ok(Method::Mse),
            _ => {}
        }
        match name.strip_prefix("percentile:") {
            Some(value) => match value.trim().parse::<f64>() {
                Ok(p) if valid_percentile(p) => Ok(Method::Percentile(p)),
                _ => Err(ParseMethodError::BadPercentile(s.to_owned())),
            },
            None => Err(ParseMethodError::Unknown(s.to_owned())),
        }
    }
}

fn valid_percentile(p: f64) -> bool {
    p > 0.0 && p <= 100.0
}

/// Why no amax could be computed. The caller knows, and should name, the tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CalibError {
    /// The histogram saw no non-zero finite value.
    #[error(
        "no non-zero finite values were collected, so there is no range to calibrate; \
         check that calibration data reaches this tensor"
    )]
    Empty,
    /// A percentile outside (0, 100].
    #[error("percentile {0} is out of range; it must satisfy 0 < p <= 100, e.g. 99.99")]
    InvalidPercentile(f64),
    /// The method chose 0 (for a percentile: nearly every value lies in the first bin).
    #[error(
        "{method} calibration gives amax 0 because nearly all values lie in the first \
         histogram bin (width {bin_width:e}); no INT8 scale can use that, so use a higher \
         percentile or `max`"
    )]
    ZeroAmax {
        /// The method that chose 0.
        method: Method,
        /// Width of the first bin.
        bin_width: f64,
    },
}

/// INT8 scale for an amax: `amax / 127`.
pub fn scale(amax: f32) -> f32 {
    amax / 127.0
}

/// The amax `method` picks for the |x| collected in `hist`.
///
/// - [`Method::Max`] gives `hist.max()`.
/// - [`Method::Percentile`] gives `edges[searchsorted(cumsum(counts / total), p / 100)]`, where the
///   cumulative sum is accumulated in order as `np.cumsum` does; that is the lower edge of the bin
///   where the share first reaches `p`, or the last edge if rounding keeps the sum below it.
/// - [`Method::Entropy`] gives `edges[i]` for the candidate `i` with the smallest
///   [`kl_divergences`] value, the largest such `i` on ties. With fewer than [`START_BIN`] bins
///   there is no candidate and the result is `hist.max()`.
/// - [`Method::Mse`] gives the bin centre `i` with the smallest [`mse_curve`] value, the first on
///   ties. With [`START_BIN`] bins or fewer there is no candidate and the result is `hist.max()`.
///
/// Errors: [`CalibError::Empty`] if `hist` has no non-zero finite value,
/// [`CalibError::InvalidPercentile`] outside (0, 100], [`CalibError::ZeroAmax`] if the choice
/// rounds to 0. The result is never NaN, infinite, or 0.
pub fn compute_amax(hist: &AbsHistogram, method: Method) -> Result<f32, CalibError> {
    if let Method::Percentile(p) = method {
        if !valid_percentile(p) {
            return Err(CalibError::InvalidPercentile(p));
        }
    }
    let (counts, edges) = (hist.counts(), hist.edges());
    if hist.max() == 0.0 || counts.iter().all(|&c| c == 0) {
        return Err(CalibError::Empty);
    }
    let max = f64::from(hist.max());
    let amax = match method {
        Method::Max => max,
        Method::Percentile(p) => edges[percentile_bin(counts, p)],
        Method::Entropy => entropy_bin(counts).map_or(max, |i| edges[i]),
        Method::Mse => mse_bin(counts, edges).map_or(max, |i| (edges[i] + edges[i + 1]) / 2.0),
    } as f32;
    if amax > 0.0 {
        Ok(amax)
    } else {
        Err(CalibError::ZeroAmax {
            method,
            bin_width: edges[1] - edges[0],
        })
    }
}

/// Share of the collected finite values with |x| > `amax`, estimated from `hist` as if values were
/// spread evenly inside each bin. 0 for an empty histogram or `amax` at or past the last edge; a
/// negative or NaN `amax` counts as 0.
pub fn saturation(hist: &AbsHistogram, amax: f32) -> f64 {
    let total = hist.total();
    if total == 0 {
        return 0.0;
    }
    let amax = f64::from(amax).max(0.0);
    let above: f64 = hist
        .counts()
        .iter()
        .zip(hist.edges().windows(2))
        .map(|(&count, bin)| {
            let (lo, hi) = (bin[0], bin[1]);
            if lo >= amax {
                count as f64
            } else if hi <= amax {
                0.0
            } else {
                count as f64 * (hi - amax) / (hi - lo)
            }
        })
        .sum();
    above / total as f64
}

/// Index of the edge `np.searchsorted(np.cumsum(counts / total), p / 100)` picks, in `0..=len`.
fn percentile_bin(counts: &[u64], percentile: f64) -> usize {
    let total = counts.iter().sum::<u64>() as f64;
    let target = percentile / 100.0;
    let mut cdf = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        cdf += c as f64 / total;
        if cdf >= target {
            return i;
        }
    }
    counts.len()
}

/// The KL divergences pytorch-quantization's entropy calibration compares: element `j` is for the
/// candidate amax `edges[START_BIN + j]`, `j` in `0..=counts.len() - START_BIN`. Empty with fewer
/// than [`START_BIN`] bins.
///
/// For a candidate `i`, with `b = counts` except `b[0] = b[1]`: the reference distribution is
/// `b[..i]` with everything past `i` added to its last bin; the candidate spreads `b[..i]` over 128
/// equal groups of bins (numpy `digitize` of `0..i` against `linspace(0, i, 129)`) and gives each
/// non-empty bin its group's mean over non-empty bins. The value is `scipy.stats.entropy` of the
/// two: infinite when the reference has mass where the candidate has none. Where scipy would give
/// NaN (the first `i` bins all empty) this gives infinity.
///
/// Works in O(128) per candidate from prefix sums rather than pytorch-quantization's O(i), about
/// 2 ms for 2048 bins; the values differ from scipy's by rounding only (a few 1e-15 relative on
/// the parity fixture).
pub fn kl_divergences(counts: &[u64]) -> Vec<f64> {
    let n = counts.len();
    if n < START_BIN {
        return Vec::new();
    }
    let mut bins = counts.to_vec();
    bins[0] = bins[1];

    // Prefix sums over bins[..x]: counts, non-empty bins, and b ln b in double-double so that a
    // group's sum keeps its precision however large the prefix is.
    let mut sum = Vec::with_capacity(n + 1);
    let mut nonzero = Vec::with_capacity(n + 1);
    let mut plogp = Vec::with_capacity(n + 1);
    let (mut s, mut nz, mut acc) = (0u64, 0usize, DoubleDouble::ZERO);
    sum.push(s);
    nonzero.push(nz);
    plogp.push(acc);
    for &b in &bins {
        s += b;
        nz += usize::from(b > 0);
        if b > 1 {
            let b = b as f64;
            acc = acc.add(b * b.ln());
        }
        sum.push(s);
        nonzero.push(nz);
        plogp.push(acc);
    }
    let total = s;
    let total_f = total as f64;

    (START_BIN..=n)
        .map(|i| {
            let head = sum[i];
            let tail = total - head;
            let last = bins[i - 1];
            if head == 0 || (tail > 0 && last == 0) {
                return f64::INFINITY;
            }
            // sum over non-empty x < i of b ln(b / group mean); the last group's mean is kept for
            // the tail correction (the last group always holds bin i - 1).
            let mut within = 0.0;
            let mut ln_last_mean = 0.0;
            for k in 0..NUM_LEVELS {
                let lo = (k * i).div_ceil(NUM_LEVELS);
                let hi = ((k + 1) * i).div_ceil(NUM_LEVELS);
                let members = nonzero[hi] - nonzero[lo];
                if members == 0 {
                    continue;
                }
                let group = (sum[hi] - sum[lo]) as f64;
                ln_last_mean = (group / members as f64).ln();
                within += plogp[hi].sub(plogp[lo]) - group * ln_last_mean;
            }
            // KL = (within + T ln(S_i / T) + tail correction) / T, with S_i = head.
            let mut kl = within + total_f * (head as f64 / total_f).ln();
            if tail > 0 {
                let b = last as f64;
                let r = (last + tail) as f64;
                kl += r * (r.ln() - ln_last_mean) - b * (b.ln() - ln_last_mean);
            }
            kl / total_f
        })
        .collect()
}

/// Edge index of the entropy choice: the last minimum of [`kl_divergences`], if any is not NaN.
fn entropy_bin(counts: &[u64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (j, d) in kl_divergences(counts).into_iter().enumerate() {
        if best.is_none_or(|(_, b)| d <= b) && !d.is_nan() {
            best = Some((j, d));
        }
    }
    best.map(|(j, _)| j + START_BIN)
}

/// The mean squared error of fake-quantising every bin centre `c` with the candidate amax
/// `centers[i]`, weighted by the counts: element `j` is for `i = START_BIN + j`,
/// `i < counts.len()`. Each value is `sum((q - c)^2 * counts) / sum(counts)` with
/// `q = clamp(round_half_even(c * s), -127, 127) / s` and `s = 127 / centers[i]`, in `f64`
/// (pytorch-quantization does the same in `f32` and divides by the number of bins instead).
/// Empty with [`START_BIN`] bins or fewer. `edges.len()` must be `counts.len() + 1`.
pub fn mse_curve(counts: &[u64], edges: &[f64]) -> Vec<f64> {
    assert_eq!(
        edges.len(),
        counts.len() + 1,
        "mse_curve: counts and edges disagree"
    );
    let n = counts.len();
    if n <= START_BIN {
        return Vec::new();
    }
    let centers: Vec<f64> = edges.windows(2).map(|e| (e[1] + e[0]) / 2.0).collect();
    let total = counts.iter().sum::<u64>() as f64;
    // Empty bins add exactly 0 to every sum, so they are skipped.
    let weighted: Vec<(f64, f64)> = centers
        .iter()
        .zip(counts)
        .filter(|(_, &c)| c > 0)
        .map(|(&center, &c)| (center, c as f64))
        .collect();
    centers[START_BIN..]
        .iter()
        .map(|&amax| {
            let s = MAX_BOUND / amax;
            let sse: f64 = weighted
                .iter()
                .map(|&(c, w)| {
                    let q = (c * s).round_ties_even().clamp(-MAX_BOUND, MAX_BOUND) / s;
                    (q - c) * (q - c) * w
                })
                .sum();
            sse / total
        })
        .collect()
}

/// Bin index whose centre the MSE search picks: the first minimum of [`mse_curve`].
fn mse_bin(counts: &[u64], edges: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (j, e) in mse_curve(counts, edges).into_iter().enumerate() {
        if best.is_none_or(|(_, b)| e < b) && !e.is_nan() {
            best = Some((j, e));
        }
    }
    best.map(|(j, _)| j + START_BIN)
}

/// An unevaluated sum `hi + lo` with `|lo|` below half an ulp of `hi`: about 106 bits.
#[derive(Debug, Clone, Copy)]
struct DoubleDouble {
    hi: f64,
    lo: f64,
}

impl DoubleDouble {
    const ZERO: Self = Self { hi: 0.0, lo: 0.0 };

    fn add(self, x: f64) -> Self {
        // Knuth's TwoSum: s + err == hi + x exactly.
        let s = self.hi + x;
        let v = s - self.hi;
        let err = (self.hi - (s - v)) + (x - v);
        let lo = self.lo + err;
        let hi = s + lo;
        Self {
            hi,
            lo: lo - (hi - s),
        }
    }

    /// `self - other` rounded to `f64`.
    fn sub(self, other: Self) -> f64 {
        (self.hi - other.hi) + (self.lo - other.lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hist(counts: Vec<u64>) -> AbsHistogram {
        let n = counts.len();
        let edges = (0..=n).map(|k| k as f64 / n as f64).collect();
        AbsHistogram::from_parts(counts, edges, 1.0, 0).unwrap()
    }

    /// pytorch-quantization's entropy loop written out directly, O(i) per candidate.
    fn kl_divergences_naive(counts: &[u64]) -> Vec<f64> {
        let mut bins = counts.to_vec();
        bins[0] = bins[1];
        let mut out = Vec::new();
        for i in START_BIN..=bins.len() {
            let step = i as f64 / NUM_LEVELS as f64;
            let group = |x: usize| {
                (0..NUM_LEVELS)
                    .rfind(|&k| x as f64 >= k as f64 * step)
                    .unwrap()
            };
            let mut sums = [0.0f64; NUM_LEVELS];
            let mut members = [0usize; NUM_LEVELS];
            for x in 0..i {
                if bins[x] > 0 {
                    sums[group(x)] += bins[x] as f64;
                    members[group(x)] += 1;
                }
            }
            let q: Vec<f64> = (0..i)
                .map(|x| {
                    if bins[x] > 0 {
                        sums[group(x)] / members[group(x)] as f64
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut p: Vec<f64> = bins[..i].iter().map(|&b| b as f64).collect();
            p[i - 1] += bins[i..].iter().sum::<u64>() as f64;
            let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
            let kl = p
                .iter()
                .zip(&q)
                .map(|(&p, &q)| {
                    let (p, q) = (p / ps, q / qs);
                    match (p > 0.0, q > 0.0) {
                        (false, _) => 0.0,
                        (true, false) => f64::INFINITY,
                        (true, true) => p * (p / q).ln(),
                    }
                })
                .sum();
            out.push(if qs == 0.0 { f64::INFINITY } else { kl });
        }
        out
    }

    #[test]
    fn method_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for m in [
            Method::Max,
            Method::Percentile(99.9),
            Method::Percentile(DEFAULT_PERCENTILE),
            Method::Entropy,
            Method::Mse,
        ] {
            assert_eq!(m.to_string().parse::<Method>(), Ok(m));
        }
        assert_eq!(
            "percentile".parse::<Method>(),
            Ok(Method::Percentile(99.99))
        );
        assert_eq!(" Entropy ".parse::<Method>(), Ok(Method::Entropy));
        let err = "kl".parse::<Method>().unwrap_err();
        assert!(err.to_string().contains("max, percentile"), "{err}");
        assert!(err.to_string().contains("entropy, mse"), "{err}");
        for bad in [
            "percentile:0",
            "percentile:100.5",
            "percentile:nan",
            "percentile:x",
        ] {
            assert_eq!(
                bad.parse::<Method>(),
                Err(ParseMethodError::BadPercentile(bad.into()))
            );
        }
    }

    #[test]
    fn empty_or_all_zero_histogram_is_an_error_not_nan() {
        let mut h = AbsHistogram::new(256);
        for m in [
            Method::Max,
            Method::Entropy,
            Method::Mse,
            Method::Percentile(99.0),
        ] {
            assert_eq!(compute_amax(&h, m), Err(CalibError::Empty));
        }
        h.collect(&[0.0; 100]);
        assert_eq!(compute_amax(&h, Method::Entropy), Err(CalibError::Empty));
        assert_eq!(saturation(&h, 1.0), 0.0);
    }

    #[test]
    fn percentile_picks_lower_edge_of_crossing_bin() {
        let h = hist(vec![50, 30, 15, 5]);
        assert_eq!(compute_amax(&h, Method::Percentile(79.0)), Ok(0.25));
        assert_eq!(compute_amax(&h, Method::Percentile(81.0)), Ok(0.5));
        assert_eq!(compute_amax(&h, Method::Percentile(96.0)), Ok(0.75));
        assert_eq!(
            compute_amax(&h, Method::Percentile(101.0)),
            Err(CalibError::InvalidPercentile(101.0))
        );
    }

    #[test]
    fn percentile_in_first_bin_is_zero_amax_error() {
        let h = hist(vec![999_999, 0, 0, 1]);
        assert_eq!(
            compute_amax(&h, Method::Percentile(99.99)),
            Err(CalibError::ZeroAmax {
                method: Method::Percentile(99.99),
                bin_width: 0.25
            })
        );
    }

    #[test]
    fn too_few_bins_fall_back_to_max() {
        let mut h = AbsHistogram::new(64);
        h.collect(&[0.1, 0.5, 2.5]);
        assert_eq!(compute_amax(&h, Method::Entropy), Ok(2.5));
        assert_eq!(compute_amax(&h, Method::Mse), Ok(2.5));
        assert_eq!(compute_amax(&h, Method::Max), Ok(2.5));
    }

    #[test]
    fn uniform_data_keeps_nearly_the_whole_range() {
        let h = hist(vec![1000; 512]);
        let entropy = compute_amax(&h, Method::Entropy).unwrap();
        let mse = compute_amax(&h, Method::Mse).unwrap();
        assert!(entropy > 0.9, "{entropy}");
        assert!(mse > 0.9, "{mse}");
        assert!(saturation(&h, entropy) < 0.1);
    }

    #[test]
    fn outlier_is_clipped_by_entropy_and_mse() {
        // A Laplace-like body over the first 512 bins and one outlier at the very end.
        let mut counts: Vec<u64> = (0..2048)
            .map(|k| (1.0e6 * (-(k as f64) / 60.0).exp()) as u64)
            .collect();
        counts[2047] = 1;
        let h = hist(counts);
        let entropy = compute_amax(&h, Method::Entropy).unwrap();
        let mse = compute_amax(&h, Method::Mse).unwrap();
        assert!(entropy < 0.5, "{entropy}");
        assert!(mse < 0.5, "{mse}");
        assert_eq!(compute_amax(&h, Method::Max), Ok(1.0));
    }

    #[test]
    fn saturation_interpolates_inside_a_bin() {
        let h = hist(vec![10, 10, 10, 10]);
        assert_eq!(saturation(&h, 0.5), 0.5);
        assert_eq!(saturation(&h, 0.625), 0.375);
        assert_eq!(saturation(&h, 1.0), 0.0);
        assert_eq!(saturation(&h, f32::NAN), 1.0);
        assert_eq!(saturation(&h, f32::INFINITY), 0.0);
    }

    #[test]
    fn scale_is_amax_over_127() {
        assert_eq!(scale(127.0), 1.0);
        assert_eq!(scale(2.640_64), 2.640_64 / 127.0);
    }

    #[test]
    fn kl_divergence_handles_empty_heads_and_tails() {
        // All mass in the last bin: every shorter candidate has no mass where the reference does.
        let mut counts = vec![0u64; 200];
        counts[199] = 7;
        let d = kl_divergences(&counts);
        assert!(d[..d.len() - 1].iter().all(|d| d.is_infinite()));
        assert!(d[d.len() - 1].abs() < 1e-12);
        assert_eq!(entropy_bin(&counts), Some(200));
    }

    proptest! {
        #[test]
        fn kl_divergences_match_the_direct_loop(
            counts in prop::collection::vec(
                prop_oneof![3 => Just(0u64), 5 => 0u64..50, 2 => 0u64..5_000_000],
                START_BIN..400,
            ),
        ) {
            let fast = kl_divergences(&counts);
            let naive = kl_divergences_naive(&counts);
            prop_assert_eq!(fast.len(), naive.len());
            for (j, (f, n)) in fast.iter().zip(&naive).enumerate() {
                if n.is_infinite() {
                    prop_assert!(f.is_infinite(), "candidate {}: {} vs inf", j + START_BIN, f);
                } else {
                    prop_assert!(
                        (f - n).abs() <= 1e-12 + 1e-9 * n.abs(),
                        "candidate {}: {} vs {}", j + START_BIN, f, n
                    );
                }
            }
        }
    }
}
