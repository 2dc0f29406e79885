//! Fitting classifier heads on embeddings, on the device: multinomial logistic regression with
//! L2 regularisation and per-sample weights (class balancing), optimised with argmin's L-BFGS,
//! plus temperature scaling. Features are standardised for conditioning; the standardisation
//! is folded into the exported weights, so the head is a single Gemm.

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use dishcam_models::manifest::{DType, Dim, TensorSpec};
use dishcam_models::onnx::{Attr, GraphBuilder};

/// A linear classifier `logits = W x + b` over `dim`-d inputs, `W` row-major [classes, dim].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    pub classes: usize,
    pub dim: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// Logits of one input into `out` (len = classes).
    pub fn logits_into(&self, x: &[f32], out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate() {
            *o = self.bias[c] + dot(&self.weight[c * self.dim..(c + 1) * self.dim], x);
        }
    }

    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.classes];
        self.logits_into(x, &mut out);
        out
    }

    /// The head as an ONNX graph: `input` [batch, dim] -> `logits` [batch, classes].
    pub fn to_onnx(&self, input: &str, doc: &str) -> tract_onnx::pb::ModelProto {
        let (inp, out) = self.io(input);
        let mut g = GraphBuilder::new("linear_head");
        let x = g.input(&inp);
        let w = g.f32_tensor("head.weight", &[self.classes, self.dim], &self.weight);
        let b = g.f32_tensor("head.bias", &[self.classes], &self.bias);
        let y = g.node("Gemm", "head", &[&x, &w, &b], &[("transB", Attr::Int(1))]);
        g.output(&y, &out);
        g.finish(doc)
    }

    /// Reads back a head written by [`LinearHead::to_onnx`] (to extend it with new classes).
    pub fn from_onnx(bytes: &[u8], name: &str) -> Result<Self, dishcam_models::onnx::OnnxError> {
        use dishcam_models::onnx::{f32_initialiser, OnnxError};
        let (wd, weight) = f32_initialiser(bytes, name, "head.weight")?;
        let (bd, bias) = f32_initialiser(bytes, name, "head.bias")?;
        match (wd.as_slice(), bd.as_slice()) {
            (&[classes, dim], &[b]) if b == classes => Ok(LinearHead {
                classes,
                dim,
                weight,
                bias,
            }),
            _ => Err(OnnxError::Decode {
                path: name.to_string(),
                reason: format!("head.weight {wd:?} and head.bias {bd:?} are not a linear head"),
            }),
        }
    }

    /// Input and output specs of [`LinearHead::to_onnx`].
    pub fn io(&self, input: &str) -> (TensorSpec, TensorSpec) {
        (
            TensorSpec::new(
                input,
                DType::F32,
                vec![Dim::named("batch"), Dim::Fixed(self.dim as u64)],
            ),
            TensorSpec::new(
                "logits",
                DType::F32,
                vec![Dim::named("batch"), Dim::Fixed(self.classes as u64)],
            ),
        )
    }
}

/// Training data: `n` rows of `dim` features, a class per row, a weight per row.
#[derive(Debug, Clone, Copy)]
pub struct Dataset<'a> {
    pub features: &'a [f32],
    pub labels: &'a [usize],
    pub weights: &'a [f32],
    pub dim: usize,
    pub classes: usize,
}

/// Settings of [`fit_logistic`].
#[derive(Debug, Clone, Copy)]
pub struct FitConfig {
    /// L2 penalty on the (standardised) weights, added to the weighted mean cross-entropy.
    pub l2: f64,
    pub max_iters: u64,
    /// Worker threads for the cost/gradient (1 = this thread only).
    pub threads: usize,
    /// Centre the L2 penalty on the warm start (`init`) instead of zero, so a refit on few
    /// examples (exemplars plus a new class) stays close to the head it extends (L2-SP).
    pub anchor: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            max_iters: 300,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            anchor: false,
        }
    }
}

/// What a fit reports.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub iterations: u64,
    pub final_cost: f64,
}

/// Errors from fitting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    #[error("no training examples")]
    Empty,
    #[error("training data has {got} labels/weights for {rows} rows")]
    Mismatch { rows: usize, got: usize },
    #[error("label {label} is out of range for {classes} classes")]
    Label { label: usize, classes: usize },
    #[error("at least 2 classes are needed to fit a classifier, found {0}")]
    OneClass(usize),
    #[error("optimiser failed: {0}")]
    Optimiser(String),
}

/// Weights that give every class the same total weight (`n / (classes_present * count_c)`).
pub fn balanced_weights(labels: &[usize], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        if l < classes {
            counts[l] += 1;
        }
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let n = labels.len() as f32;
    labels
        .iter()
        .map(|&l| {
            if l < classes && counts[l] > 0 {
                n / (present as f32 * counts[l] as f32)
            } else {
                0.0
            }
        })
        .collect()
}

/// Per-feature mean and standard deviation (floored at 1e-6) over the rows.
pub fn standardisation(features: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (features.len() / dim).max(1) as f64;
    let mut mean = vec![0.0f64; dim];
    let mut sq = vec![0.0f64; dim];
    for row in features.chunks_exact(dim) {
        for j in 0..dim {
            mean[j] += row[j] as f64;
            sq[j] += (row[j] as f64).powi(2);
        }
    }
    let m: Vec<f32> = mean.iter().map(|s| (s / n) as f32).collect();
    let sd: Vec<f32> = sq
        .iter()
        .zip(&mean)
        .map(|(q, s)| ((q / n - (s / n).powi(2)).max(0.0).sqrt().max(1e-6)) as f32)
        .collect();
    (m, sd)
}

/// Fits multinomial logistic regression; `init` warm-starts from a head over the same classes
/// and features (e.g. when adding a class, the old rows and a zero row).
pub fn fit_logistic(
    data: &Dataset<'_>,
    cfg: &FitConfig,
    init: Option<&LinearHead>,
) -> Result<(LinearHead, FitReport), FitError> {
    let (d, k) = (data.dim, data.classes);
    let n = data.labels.len();
    if n == 0 {
        return Err(FitError::Empty);
    }
    if data.features.len() != n * d || data.weights.len() != n {
        return Err(FitError::Mismatch {
            rows: data.features.len() / d.max(1),
            got: n.min(data.weights.len()),
        });
    }
    if let Some(&label) = data.labels.iter().find(|&&l| l >= k) {
        return Err(FitError::Label { label, classes: k });
    }
    let mut present = vec![false; k];
    data.labels.iter().for_each(|&l| present[l] = true);
    let n_present = present.iter().filter(|p| **p).count();
    if n_present < 2 {
        return Err(FitError::OneClass(n_present));
    }
    let (mean, sd) = standardisation(data.features, d);
    let z: Vec<f32> = data
        .features
        .chunks_exact(d)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .zip(&sd)
                .map(|((x, m), s)| (x - m) / s)
        })
        .collect();
    let wsum: f64 = data
        .weights
        .iter()
        .map(|w| *w as f64)
        .sum::<f64>()
        .max(1e-12);
    let problem = Objective {
        z: &z,
        labels: data.labels,
        weights: data.weights,
        wsum,
        dim: d,
        classes: k,
        l2: cfg.l2,
        centre: Vec::new(),
        threads: cfg.threads.max(1),
        memo: Mutex::new(None),
    };
    let mut problem = problem;
    // Warm start: express the given head in standardised coordinates.
    let mut p0 = vec![0.0f64; k * d + k];
    if let Some(h) = init.filter(|h| h.dim == d && h.classes == k) {
        for c in 0..k {
            let mut b = h.bias[c] as f64;
            for j in 0..d {
                let w = h.weight[c * d + j] as f64;
                p0[c * d + j] = w * sd[j] as f64;
                b += w * mean[j] as f64;
            }
            p0[k * d + c] = b;
        }
    }
    if cfg.anchor {
        problem.centre = p0[..k * d].to_vec();
    }
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-6)
        .map_err(|e| FitError::Optimiser(e.to_string()))?;
    let result = Executor::new(problem, solver)
        .configure(|s| s.param(p0).max_iters(cfg.max_iters))
        .run()
        .map_err(|e| FitError::Optimiser(e.to_string()))?;
    let state = result.state();
    let p = state.get_best_param().cloned().unwrap_or_default();
    let report = FitReport {
        iterations: state.get_iter(),
        final_cost: state.get_best_cost(),
    };
    // Fold the standardisation back: W' = W / sd, b' = b - W' . mean.
    let mut weight = vec![0.0f32; k * d];
    let mut bias = vec![0.0f32; k];
    for c in 0..k {
        let mut b = p[k * d + c];
        for j in 0..d {
            let w = p[c * d + j] / sd[j] as f64;
            weight[c * d + j] = w as f32;
            b -= w * mean[j] as f64;
        }
        bias[c] = b as f32;
    }
    Ok((
        LinearHead {
            classes: k,
            dim: d,
            weight,
            bias,
        },
        report,
    ))
}

/// Parameters with their cost and gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

struct Objective<'a> {
    z: &'a [f32],
    labels: &'a [usize],
    weights: &'a [f32],
    wsum: f64,
    dim: usize,
    classes: usize,
    l2: f64,
    /// Where the L2 penalty is centred (empty = zero).
    centre: Vec<f64>,
    threads: usize,
    /// L-BFGS asks for cost and gradient at the same point: both are computed once.
    memo: Mutex<Option<Evaluation>>,
}

impl Objective<'_> {
    fn evaluate(&self, p: &[f64]) -> (f64, Vec<f64>) {
        if let Some((q, c, g)) = self.memo.lock().expect("memo lock").as_ref() {
            if q.as_slice() == p {
                return (*c, g.clone());
            }
        }
        let (d, k) = (self.dim, self.classes);
        let w: Vec<f32> = p[..k * d].iter().map(|v| *v as f32).collect();
        let b: Vec<f32> = p[k * d..].iter().map(|v| *v as f32).collect();
        let n = self.labels.len();
        let chunk = n.div_ceil(self.threads);
        let partials: Vec<(f64, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.threads)
                .map(|t| {
                    let (w, b) = (&w, &b);
                    s.spawn(move || self.partial(w, b, t * chunk, ((t + 1) * chunk).min(n)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker"))
                .collect()
        });
        let mut cost = 0.0;
        let mut grad = vec![0.0f64; k * d + k];
        for (c, g) in partials {
            cost += c;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        cost /= self.wsum;
        grad.iter_mut().for_each(|g| *g /= self.wsum);
        for i in 0..k * d {
            let delta = p[i] - self.centre.get(i).copied().unwrap_or(0.0);
            cost += 0.5 * self.l2 * delta * delta;
            grad[i] += self.l2 * delta;
        }
        *self.memo.lock().expect("memo lock") = Some((p.to_vec(), cost, grad.clone()));
        (cost, grad)
    }

    /// Weighted cross-entropy sum and gradient sum over rows `lo..hi`, in blocks of rows so
    /// both products (logits = Z W^T, gradient = R^T Z) run as matrix multiplications.
    fn partial(&self, w: &[f32], b: &[f32], lo: usize, hi: usize) -> (f64, Vec<f64>) {
        const BLOCK: usize = 256;
        let (d, k) = (self.dim, self.classes);
        let mut grad = vec![0.0f64; k * d + k];
        let mut gw = vec![0.0f32; k * d];
        let mut cost = 0.0f64;
        let mut logits = vec![0.0f32; BLOCK * k];
        let mut start = lo;
        while start < hi {
            let m = BLOCK.min(hi - start);
            let z = &self.z[start * d..(start + m) * d];
            for row in logits[..m * k].chunks_exact_mut(k) {
                row.copy_from_slice(b);
            }
            // logits[m, k] += z[m, d] . w[k, d]^T
            // SAFETY: the slices hold m*d, k*d and m*k elements with the strides given.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    d,
                    k,
                    1.0,
                    z.as_ptr(),
                    d as isize,
                    1,
                    w.as_ptr(),
                    1,
                    d as isize,
                    1.0,
                    logits.as_mut_ptr(),
                    k as isize,
                    1,
                );
            }
            // Residuals (p - onehot) * weight, in place of the logits.
            for (r, row) in logits[..m * k].chunks_exact_mut(k).enumerate() {
                let i = start + r;
                let sw = self.weights[i] as f64;
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|l| ((l - max) as f64).exp()).sum();
                let lse = max as f64 + sum.ln();
                let y = self.labels[i];
                cost += sw * (lse - row[y] as f64);
                for (c, v) in row.iter_mut().enumerate() {
                    let pc = ((*v as f64) - lse).exp();
                    let res = (pc - if c == y { 1.0 } else { 0.0 }) * sw;
                    grad[k * d + c] += res;
                    *v = res as f32;
                }
            }
            // gw[k, d] += residuals[m, k]^T . z[m, d]
            // SAFETY: as above.
            unsafe {
                matrixmultiply::sgemm(
                    k,
                    m,
                    d,
                    1.0,
                    logits.as_ptr(),
                    1,
                    k as isize,
                    z.as_ptr(),
                    d as isize,
                    1,
                    1.0,
                    gw.as_mut_ptr(),
                    d as isize,
                    1,
                );
            }
            start += m;
        }
        grad.iter_mut().zip(&gw).for_each(|(g, v)| *g += *v as f64);
        (cost, grad)
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.evaluate(p).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(p).1)
    }
}

/// `sum a_i b_i` with independent accumulators so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Mean negative log-likelihood of `labels` under softmax(`logits` / t); logits row-major.
pub fn nll_at_temperature(logits: &[f32], labels: &[usize], classes: usize, t: f64) -> f64 {
    let mut total = 0.0;
    for (row, &y) in logits.chunks_exact(classes).zip(labels) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max / t
            + row
                .iter()
                .map(|l| (*l as f64 / t - max / t).exp())
                .sum::<f64>()
                .ln();
        total += lse - row[y] as f64 / t;
    }
    total / labels.len().max(1) as f64
}

/// The temperature in [0.05, 20] that minimises validation NLL (golden-section search on log t;
/// the NLL is unimodal in t for a fixed set of logits).
pub fn fit_temperature(logits: &[f32], labels: &[usize], classes: usize) -> f32 {
    if labels.is_empty() {
        return 1.0;
    }
    let f = |lt: f64| nll_at_temperature(logits, labels, classes, lt.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - r * (b - a), a + r * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points drawn around class centres that a known linear rule separates.
    fn blobs(
        n_per: usize,
        classes: usize,
        dim: usize,
        spread: f32,
        seed: u64,
    ) -> (Vec<f32>, Vec<usize>) {
        let mut s = seed;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<f32> = (0..classes * dim).map(|_| rnd() * 4.0).collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for c in 0..classes {
            for _ in 0..n_per {
                for j in 0..dim {
                    x.push(centres[c * dim + j] + spread * rnd());
                }
                y.push(c);
            }
        }
        (x, y)
    }

    fn accuracy(h: &LinearHead, x: &[f32], y: &[usize]) -> f64 {
        let ok = x
            .chunks_exact(h.dim)
            .zip(y)
            .filter(|(row, &t)| {
                let l = h.logits(row);
                l.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
                    == Some(t)
            })
            .count();
        ok as f64 / y.len() as f64
    }

    #[test]
    fn recovers_a_known_linear_rule() {
        // Labels come from a fixed linear rule on random points: y = argmax(R x).
        let (dim, classes, n) = (6, 4, 600);
        let mut s = 7u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let rule: Vec<f32> = (0..classes * dim).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..n * dim).map(|_| rnd() * 3.0).collect();
        let truth = LinearHead {
            classes,
            dim,
            weight: rule,
            bias: vec![0.0; classes],
        };
        let y: Vec<usize> = x
            .chunks_exact(dim)
            .map(|r| {
                truth
                    .logits(r)
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0
            })
            .collect();
        let w = vec![1.0; n];
        let data = Dataset {
            features: &x,
            labels: &y,
            weights: &w,
            dim,
            classes,
        };
        let (head, report) = fit_logistic(
            &data,
            &FitConfig {
                l2: 1e-6,
                max_iters: 500,
                threads: 2,
                anchor: false,
            },
            None,
        )
        .unwrap();
        assert!(
            accuracy(&head, &x, &y) >= 0.98,
            "train accuracy {}",
            accuracy(&head, &x, &y)
        );
        assert!(report.final_cost < 0.1, "{report:?}");
        // Fresh points from the same rule are classified by the fitted head too.
        let x2: Vec<f32> = (0..300 * dim).map(|_| rnd() * 3.0).collect();
        let y2: Vec<usize> = x2
            .chunks_exact(dim)
            .map(|r| {
                truth
                    .logits(r)
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0
            })
            .collect();
        assert!(
            accuracy(&head, &x2, &y2) >= 0.95,
            "held-out accuracy {}",
            accuracy(&head, &x2, &y2)
        );
    }

    #[test]
    fn threads_do_not_change_the_result() {
        let (x, y) = blobs(30, 3, 5, 2.0, 1);
        let w = balanced_weights(&y, 3);
        let data = Dataset {
            features: &x,
            labels: &y,
            weights: &w,
            dim: 5,
            classes: 3,
        };
        let cfg = |t| FitConfig {
            l2: 1e-2,
            max_iters: 50,
            threads: t,
            anchor: false,
        };
        let (a, _) = fit_logistic(&data, &cfg(1), None).unwrap();
        let (b, _) = fit_logistic(&data, &cfg(3), None).unwrap();
        for (p, q) in a.weight.iter().zip(&b.weight) {
            assert!((p - q).abs() < 1e-3, "{p} vs {q}");
        }
    }

    #[test]
    fn balanced_weights_equalise_class_totals() {
        let w = balanced_weights(&[0, 0, 0, 1], 3);
        assert_eq!(w, vec![4.0 / 6.0, 4.0 / 6.0, 4.0 / 6.0, 2.0]);
        let total0: f32 = w[..3].iter().sum();
        assert!((total0 - w[3]).abs() < 1e-6);
    }

    #[test]
    fn bad_training_data_is_refused() {
        let x = [0.0f32; 4];
        let one = Dataset {
            features: &x,
            labels: &[0, 0],
            weights: &[1.0, 1.0],
            dim: 2,
            classes: 2,
        };
        assert!(matches!(
            fit_logistic(&one, &FitConfig::default(), None),
            Err(FitError::OneClass(1))
        ));
        let oob = Dataset {
            labels: &[0, 5],
            ..one
        };
        assert!(matches!(
            fit_logistic(&oob, &FitConfig::default(), None),
            Err(FitError::Label { label: 5, .. })
        ));
        let empty = Dataset {
            features: &[],
            labels: &[],
            weights: &[],
            dim: 2,
            classes: 2,
        };
        assert!(matches!(
            fit_logistic(&empty, &FitConfig::default(), None),
            Err(FitError::Empty)
        ));
    }

    #[test]
    fn temperature_scaling_undoes_a_known_scale() {
        // Logits of a well-calibrated model, then multiplied by 3 (over-confident): the fitted
        // temperature brings the NLL back near the calibrated one, at t close to 3.
        let (x, y) = blobs(200, 3, 4, 6.0, 3);
        let w = vec![1.0; y.len()];
        let data = Dataset {
            features: &x,
            labels: &y,
            weights: &w,
            dim: 4,
            classes: 3,
        };
        let (head, _) = fit_logistic(
            &data,
            &FitConfig {
                l2: 1e-3,
                max_iters: 200,
                threads: 1,
                anchor: false,
            },
            None,
        )
        .unwrap();
        let logits: Vec<f32> = x.chunks_exact(4).flat_map(|r| head.logits(r)).collect();
        let hot: Vec<f32> = logits.iter().map(|l| l * 3.0).collect();
        let t = fit_temperature(&hot, &y, 3);
        assert!((2.0..4.5).contains(&t), "t = {t}");
        let before = nll_at_temperature(&hot, &y, 3, 1.0);
        let after = nll_at_temperature(&hot, &y, 3, t as f64);
        assert!(after < before, "{after} >= {before}");
    }

    #[test]
    fn anchored_refit_adds_a_class_and_keeps_the_old_decisions() {
        // A head over 4 classes from plenty of data; then class 4 arrives with 10 examples,
        // and the refit sees only 5 exemplars per old class.
        let (x, y) = blobs(200, 5, 6, 1.5, 7);
        let d = 6;
        let old_rows: Vec<usize> = (0..x.len() / d).filter(|&i| y[i] < 4).collect();
        let ox: Vec<f32> = old_rows
            .iter()
            .flat_map(|&i| x[i * d..(i + 1) * d].to_vec())
            .collect();
        let oy: Vec<usize> = old_rows.iter().map(|&i| y[i]).collect();
        let cfg = FitConfig {
            l2: 1e-3,
            max_iters: 200,
            threads: 1,
            anchor: false,
        };
        let w = vec![1.0; oy.len()];
        let data = Dataset {
            features: &ox,
            labels: &oy,
            weights: &w,
            dim: d,
            classes: 4,
        };
        let (old, _) = fit_logistic(&data, &cfg, None).unwrap();
        let predict = |h: &LinearHead, r: &[f32]| {
            let l = h.logits(r);
            (0..l.len()).max_by(|a, b| l[*a].total_cmp(&l[*b])).unwrap()
        };
        // Exemplars: the first 5 of each old class; new class: its first 10 examples.
        let mut rx = Vec::new();
        let mut ry = Vec::new();
        for c in 0..5 {
            let take = if c < 4 { 5 } else { 10 };
            for i in (0..y.len()).filter(|&i| y[i] == c).take(take) {
                rx.extend_from_slice(&x[i * d..(i + 1) * d]);
                ry.push(c);
            }
        }
        let mut init = old.clone();
        init.classes = 5;
        init.weight.resize(5 * d, 0.0);
        init.bias.resize(5, 0.0);
        let rw = balanced_weights(&ry, 5);
        let refit = |anchor: bool, l2: f64| {
            let data = Dataset {
                features: &rx,
                labels: &ry,
                weights: &rw,
                dim: d,
                classes: 5,
            };
            let cfg = FitConfig {
                l2,
                max_iters: 100,
                threads: 1,
                anchor,
            };
            fit_logistic(&data, &cfg, Some(&init)).unwrap().0
        };
        let new = refit(true, 1e-2);
        // On old-class points the refit agrees with the old head unless it now says class 4
        // (the new class overlaps old ones); and it recognises the new class on the examples
        // it did not see.
        let mut agree = 0;
        for &i in &old_rows {
            let r = &x[i * d..(i + 1) * d];
            let p = predict(&new, r);
            if p == predict(&old, r) || p == 4 {
                agree += 1;
            }
        }
        assert!(
            agree as f64 >= 0.97 * old_rows.len() as f64,
            "{agree} of {}",
            old_rows.len()
        );
        let unseen: Vec<usize> = (0..y.len()).filter(|&i| y[i] == 4).skip(10).collect();
        let hits = unseen
            .iter()
            .filter(|&&i| predict(&new, &x[i * d..(i + 1) * d]) == 4)
            .count();
        assert!(
            hits as f64 >= 0.9 * unseen.len() as f64,
            "{hits} of {}",
            unseen.len()
        );
        // The anchor is what keeps the head near the old one: its weights move less than an
        // unanchored refit's at the same penalty.
        let drift = |h: &LinearHead| -> f32 {
            h.weight[..4 * d]
                .iter()
                .zip(&old.weight)
                .map(|(a, b)| (a - b).powi(2))
                .sum()
        };
        assert!(drift(&new) < drift(&refit(false, 1e-2)));
    }

    #[test]
    fn onnx_round_trip_gives_the_same_head() {
        let (x, y) = blobs(20, 3, 4, 1.0, 11);
        let w = vec![1.0; y.len()];
        let data = Dataset {
            features: &x,
            labels: &y,
            weights: &w,
            dim: 4,
            classes: 3,
        };
        let (head, _) = fit_logistic(&data, &FitConfig::default(), None).unwrap();
        let bytes = dishcam_models::onnx::encode(&head.to_onnx("features", "test"));
        let back = LinearHead::from_onnx(&bytes, "test.onnx").unwrap();
        assert_eq!(back, head);
        assert!(LinearHead::from_onnx(b"junk", "junk.onnx").is_err());
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
