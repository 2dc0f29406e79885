//! Spherical k-means (cosine) for the coarse quantiser and for fitting the benchmark mixture.

use rand::rngs::SmallRng;
use rand::seq::index::sample;

use super::kernels::{gemm_abt, normalise};

/// Rows per gemm block when assigning.
const BLOCK: usize = 512;

/// For every row of `x` (n x d, unit rows) the index of the most similar centroid (k x d, unit rows)
/// and that similarity. Blocked through sgemm.
pub fn assign(x: &[f32], centroids: &[f32], d: usize) -> (Vec<u32>, Vec<f32>) {
    let n = x.len() / d;
    let k = centroids.len() / d;
    let mut labels = vec![0u32; n];
    let mut best = vec![f32::NEG_INFINITY; n];
    let mut scores = vec![0f32; BLOCK.min(n.max(1)) * k];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let s = &mut scores[..(end - start) * k];
        gemm_abt(&x[start * d..end * d], centroids, d, s);
        for (r, row) in s.chunks_exact(k).enumerate() {
            let (mut bi, mut bv) = (0usize, f32::NEG_INFINITY);
            for (j, &v) in row.iter().enumerate() {
                if v > bv {
                    bv = v;
                    bi = j;
                }
            }
            labels[start + r] = bi as u32;
            best[start + r] = bv;
        }
    }
    (labels, best)
}

/// Spherical k-means on unit rows `x` (n x d): `k` unit centroids after `iters` Lloyd iterations,
/// initialised from distinct random rows; an emptied cluster is re-seeded with the row that fits its
/// centroid worst. `k` is capped at n.
pub fn spherical_kmeans(
    x: &[f32],
    d: usize,
    k: usize,
    iters: usize,
    rng: &mut SmallRng,
) -> Vec<f32> {
    let n = x.len() / d;
    let k = k.min(n).max(1);
    let mut c: Vec<f32> = Vec::with_capacity(k * d);
    for i in sample(rng, n, k) {
        c.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    for _ in 0..iters {
        let (labels, best) = assign(x, &c, d);
        let mut sums = vec![0f32; k * d];
        let mut counts = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            let l = l as usize;
            counts[l] += 1;
            for (s, v) in sums[l * d..(l + 1) * d]
                .iter_mut()
                .zip(&x[i * d..(i + 1) * d])
            {
                *s += v;
            }
        }
        let mut worst: Vec<usize> = (0..n).collect();
        worst.sort_unstable_by(|&a, &b| best[a].total_cmp(&best[b]));
        let mut next_worst = worst.into_iter();
        for j in 0..k {
            let cj = &mut sums[j * d..(j + 1) * d];
            if counts[j] == 0 {
                if let Some(w) = next_worst.next() {
                    cj.copy_from_slice(&x[w * d..(w + 1) * d]);
                }
            }
            normalise(cj);
        }
        c = sums;
    }
    c
}
