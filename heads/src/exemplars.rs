//! Compact per-class exemplars shipped with a head, so that adding a dish refits the whole head
//! on the device without the original training set.
//!
//! Exemplars are chosen by herding (Welling 2009, as in iCaRL): for each class, greedily pick the
//! embeddings whose running mean stays closest to the class mean, so a few rows keep the class's
//! centre and spread. They are stored as a safetensors file with int8 rows and one f32 scale per
//! row (`x ~= scale * q`, symmetric), about 1.3 kB per 1280-d exemplar.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// Embeddings with class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplars {
    pub dim: usize,
    /// Row-major [n, dim].
    pub features: Vec<f32>,
    pub labels: Vec<usize>,
}

/// An exemplar file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("exemplar file: {0}")]
pub struct ExemplarError(String);

impl Exemplars {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Picks up to `per_class` exemplars of each class by herding.
    pub fn select(features: &[f32], labels: &[usize], dim: usize, per_class: usize) -> Self {
        let mut by_class: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, &l) in labels.iter().enumerate() {
            by_class.entry(l).or_default().push(i);
        }
        let mut classes: Vec<usize> = by_class.keys().copied().collect();
        classes.sort_unstable();
        let mut out = Exemplars {
            dim,
            features: Vec::new(),
            labels: Vec::new(),
        };
        for c in classes {
            let rows = &by_class[&c];
            let row = |i: usize| &features[i * dim..(i + 1) * dim];
            let mut mean = vec![0.0f64; dim];
            for &i in rows {
                mean.iter_mut()
                    .zip(row(i))
                    .for_each(|(m, x)| *m += *x as f64);
            }
            mean.iter_mut().for_each(|m| *m /= rows.len() as f64);
            let mut sum = vec![0.0f64; dim];
            let mut taken = vec![false; rows.len()];
            for k in 1..=per_class.min(rows.len()) {
                // The row that brings the mean of the chosen rows closest to the class mean.
                let best = (0..rows.len())
                    .filter(|&j| !taken[j])
                    .min_by(|&a, &b| {
                        let d = |j: usize| -> f64 {
                            row(rows[j])
                                .iter()
                                .zip(&sum)
                                .zip(&mean)
                                .map(|((x, s), m)| ((s + *x as f64) / k as f64 - m).powi(2))
                                .sum()
                        };
                        d(a).total_cmp(&d(b))
                    })
                    .expect("a row is left");
                taken[best] = true;
                sum.iter_mut()
                    .zip(row(rows[best]))
                    .for_each(|(s, x)| *s += *x as f64);
                out.features.extend_from_slice(row(rows[best]));
                out.labels.push(c);
            }
        }
        out
    }

    /// Serialises as safetensors: `features` I8 [n, dim], `scales` F32 [n], `labels` I32 [n].
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len();
        let mut q = Vec::with_capacity(n * self.dim);
        let mut scales = Vec::with_capacity(n * 4);
        for row in self.features.chunks_exact(self.dim.max(1)) {
            let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            q.extend(
                row.iter()
                    .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8),
            );
            scales.extend_from_slice(&scale.to_le_bytes());
        }
        let labels: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|&l| (l as i32).to_le_bytes())
            .collect();
        fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> TensorView<'_> {
            TensorView::new(dtype, shape, data).expect("shape matches the data")
        }
        let tensors = [
            ("features", view(Dtype::I8, vec![n, self.dim], &q)),
            ("scales", view(Dtype::F32, vec![n], &scales)),
            ("labels", view(Dtype::I32, vec![n], &labels)),
        ];
        safetensors::serialize(tensors, None).expect("in-memory serialisation")
    }

    /// Reads what [`Exemplars::to_bytes`] wrote, checking every shape against the head's
    /// `dim` and `classes`.
    pub fn from_bytes(bytes: &[u8], dim: usize, classes: usize) -> Result<Self, ExemplarError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| ExemplarError(e.to_string()))?;
        let get = |name: &str, dtype: Dtype| {
            let t = st
                .tensor(name)
                .map_err(|_| ExemplarError(format!("no '{name}' tensor")))?;
            if t.dtype() != dtype {
                return Err(ExemplarError(format!(
                    "'{name}' is {:?}, expected {dtype:?}",
                    t.dtype()
                )));
            }
            Ok(t)
        };
        let f = get("features", Dtype::I8)?;
        let s = get("scales", Dtype::F32)?;
        let l = get("labels", Dtype::I32)?;
        let n = s.shape().first().copied().unwrap_or(0);
        if f.shape() != [n, dim] || l.shape() != [n] {
            return Err(ExemplarError(format!(
                "shapes features {:?}, scales {:?}, labels {:?} do not fit {n} rows of {dim}",
                f.shape(),
                s.shape(),
                l.shape()
            )));
        }
        let scales: Vec<f32> = s
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let labels = l
            .data()
            .chunks_exact(4)
            .map(|b| {
                let v = i32::from_le_bytes(b.try_into().expect("4 bytes"));
                usize::try_from(v)
                    .ok()
                    .filter(|&c| c < classes)
                    .ok_or_else(|| ExemplarError(format!("label {v} is outside 0..{classes}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let features = f
            .data()
            .chunks_exact(dim.max(1))
            .zip(&scales)
            .flat_map(|(row, s)| row.iter().map(move |q| *q as i8 as f32 * s))
            .collect();
        Ok(Exemplars {
            dim,
            features,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herding_keeps_the_class_mean() {
        // Class 0: points at 0, 1, 2, 3, 10 (mean 3.2); herding's first pick is the one closest
        // to the mean (3), the second the one whose pair mean is closest to it.
        let x = [0.0, 1.0, 2.0, 3.0, 10.0, 50.0, 52.0];
        let y = [0, 0, 0, 0, 0, 1, 1];
        let e = Exemplars::select(&x, &y, 1, 2);
        assert_eq!(e.labels, vec![0, 0, 1, 1]);
        assert_eq!(e.features[0], 3.0);
        // Mean 3.2 with two rows: 3 + 2 -> 2.5 (|0.7|), 3 + 1 -> 2 (1.2), 3 + 10 -> 6.5 (3.3).
        assert_eq!(e.features[1], 2.0);
        assert_eq!(&e.features[2..], &[50.0, 52.0]);
    }

    #[test]
    fn round_trip_is_within_int8_precision() {
        let x: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let e = Exemplars {
            dim: 10,
            features: x.clone(),
            labels: vec![0, 2, 1],
        };
        let back = Exemplars::from_bytes(&e.to_bytes(), 10, 3).unwrap();
        assert_eq!(back.labels, e.labels);
        for (row, orig) in back.features.chunks(10).zip(x.chunks(10)) {
            let max = orig.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in row.iter().zip(orig) {
                assert!((a - b).abs() <= max / 254.0 + 1e-6, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn files_that_do_not_fit_the_head_are_refused() {
        let e = Exemplars {
            dim: 4,
            features: vec![1.0; 8],
            labels: vec![0, 5],
        };
        let bytes = e.to_bytes();
        let err = Exemplars::from_bytes(&bytes, 4, 3).unwrap_err().to_string();
        assert!(err.contains("label 5"), "{err}");
        let err = Exemplars::from_bytes(&bytes, 8, 6).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        assert!(Exemplars::from_bytes(b"junk", 4, 6).is_err());
    }
}
