//! The scale benchmark: synthetic recipe sets of any size whose embeddings are drawn from a Gaussian
//! mixture fitted to real embeddings, queried with held-out real embeddings.
//!
//! # How the data is made
//! 1. The real rows (e.g. MiniLM embeddings of real recipe text) are L2-normalised and split with a
//!    seeded shuffle: `holdout` of them (20% by default, at most 1000) become the queries and are
//!    never used for fitting.
//! 2. The mixture has `K = max(1000, requested)` components with a tied diagonal covariance:
//!    - with at least `2K` fitting rows: spherical k-means with K clusters; each component's mean is
//!      its cluster's (unnormalised) mean, its weight the cluster's share, and the per-dimension
//!      variance is that of the residuals `x - mean(cluster(x))` over all rows;
//!    - with fewer rows (a few hundred real recipes): the variance comes from k-means with `n/4`
//!      clusters, and the K means are interpolations `a + t (b - a)`, `t ~ U(0, 0.5)`, between each
//!      real row `a` (in turn) and one of its 5 nearest real rows `b`, scaled to the average norm of
//!      the k-means cluster means; weights are equal.
//! 3. A recipe embedding is `mean_c + sigma * z` (c drawn by weight, z standard normal), normalised.
//!
//! Recall@10 is measured against exact brute force over the same synthetic set.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::error::{RecipeError, Result};
use crate::index::kernels::{dot_f32, gemm_abt, normalise};
use crate::index::kmeans::{assign, spherical_kmeans};
use crate::index::{build_index, BuildParams, IndexInput, IndexItem, RecipeIndex, SearchParams};

/// A Gaussian mixture over embedding space with a tied diagonal covariance.
#[derive(Debug, Clone)]
pub struct Mixture {
    /// Dimension.
    pub dim: usize,
    /// Component means, k x dim.
    pub means: Vec<f32>,
    /// Cumulative component weights (last = 1).
    pub cum_weights: Vec<f64>,
    /// Per-dimension standard deviation.
    pub sigma: Vec<f32>,
}

fn unit_rows(m: &[f32], dim: usize) -> Vec<f32> {
    let mut v = m.to_vec();
    v.chunks_exact_mut(dim).for_each(|r| {
        normalise(r);
    });
    v
}

fn residual_sigma(x: &[f32], dim: usize, labels: &[u32], means: &[f32]) -> Vec<f32> {
    let n = x.len() / dim;
    let mut var = vec![0f64; dim];
    for (i, &l) in labels.iter().enumerate() {
        let m = &means[l as usize * dim..(l as usize + 1) * dim];
        for ((v, a), b) in var.iter_mut().zip(&x[i * dim..(i + 1) * dim]).zip(m) {
            *v += ((a - b) as f64).powi(2);
        }
    }
    var.iter()
        .map(|v| (v / n.max(1) as f64).sqrt() as f32)
        .collect()
}

fn cluster_means(x: &[f32], dim: usize, labels: &[u32], k: usize) -> (Vec<f32>, Vec<usize>) {
    let mut sums = vec![0f32; k * dim];
    let mut counts = vec![0usize; k];
    for (i, &l) in labels.iter().enumerate() {
        counts[l as usize] += 1;
        for (s, v) in sums[l as usize * dim..(l as usize + 1) * dim]
            .iter_mut()
            .zip(&x[i * dim..(i + 1) * dim])
        {
            *s += v;
        }
    }
    for (j, &c) in counts.iter().enumerate() {
        sums[j * dim..(j + 1) * dim]
            .iter_mut()
            .for_each(|s| *s /= c.max(1) as f32);
    }
    (sums, counts)
}

/// Fits the mixture described in the module docs to `real` (rows of `dim`).
pub fn fit_mixture(real: &[f32], dim: usize, components: usize, seed: u64) -> Result<Mixture> {
    if dim == 0 || !real.len().is_multiple_of(dim) || real.len() < 2 * dim {
        return Err(RecipeError::Shape(format!(
            "need at least 2 rows of dim {dim} to fit a mixture, got {} values",
            real.len()
        )));
    }
    let x = unit_rows(real, dim);
    let n = x.len() / dim;
    let k = components.max(1000);
    let mut rng = SmallRng::seed_from_u64(seed);
    if n >= 2 * k {
        let c = spherical_kmeans(&x, dim, k, 15, &mut rng);
        let (labels, _) = assign(&x, &c, dim);
        let (means, counts) = cluster_means(&x, dim, &labels, k);
        let sigma = residual_sigma(&x, dim, &labels, &means);
        let mut cum = Vec::with_capacity(k);
        let mut acc = 0f64;
        for c in counts {
            acc += c as f64 / n as f64;
            cum.push(acc);
        }
        return Ok(Mixture {
            dim,
            means,
            cum_weights: cum,
            sigma,
        });
    }
    let k0 = (n / 4).max(1);
    let c0 = spherical_kmeans(&x, dim, k0, 15, &mut rng);
    let (labels, _) = assign(&x, &c0, dim);
    let (m0, counts0) = cluster_means(&x, dim, &labels, k0);
    let sigma = residual_sigma(&x, dim, &labels, &m0);
    let used: Vec<usize> = (0..k0).filter(|&j| counts0[j] > 0).collect();
    let mean_norm = used
        .iter()
        .map(|&j| dot_f32(&m0[j * dim..(j + 1) * dim], &m0[j * dim..(j + 1) * dim]).sqrt())
        .sum::<f32>()
        / used.len().max(1) as f32;
    let mut sims = vec![0f32; n * n];
    gemm_abt(&x, &x, dim, &mut sims);
    let mut means = Vec::with_capacity(k * dim);
    for c in 0..k {
        let a = c % n;
        let mut nn: Vec<usize> = (0..n).filter(|&j| j != a).collect();
        nn.sort_unstable_by(|&p, &q| sims[a * n + q].total_cmp(&sims[a * n + p]));
        let b = nn[rng.random_range(0..nn.len().min(5))];
        let t: f32 = rng.random_range(0.0..0.5);
        let mut m: Vec<f32> = x[a * dim..(a + 1) * dim]
            .iter()
            .zip(&x[b * dim..(b + 1) * dim])
            .map(|(p, q)| p + t * (q - p))
            .collect();
        normalise(&mut m);
        means.extend(m.iter().map(|v| v * mean_norm));
    }
    let cum_weights = (1..=k).map(|i| i as f64 / k as f64).collect();
    Ok(Mixture {
        dim,
        means,
        cum_weights,
        sigma,
    })
}

impl Mixture {
    /// Number of components.
    pub fn components(&self) -> usize {
        self.cum_weights.len()
    }

    /// `n` unit embeddings drawn from the mixture (seeded).
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let d = self.dim;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut out = vec![0f32; n * d];
        for row in out.chunks_exact_mut(d) {
            let u: f64 = rng.random();
            let c = self
                .cum_weights
                .partition_point(|&w| w < u)
                .min(self.components() - 1);
            let m = &self.means[c * d..(c + 1) * d];
            for ((o, mu), s) in row.iter_mut().zip(m).zip(&self.sigma) {
                let z: f32 = rng.sample(StandardNormal);
                *o = mu + s * z;
            }
            normalise(row);
        }
        out
    }
}

/// Splits real rows into (fitting rows, query rows) with a seeded shuffle: `min(1000, max(1, n/5))`
/// query rows.
pub fn split_holdout(real: &[f32], dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let n = real.len() / dim;
    let hold = (n / 5).clamp(1, 1000);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x401d);
    let q = rand::seq::index::sample(&mut rng, n, hold).into_vec();
    let mut is_q = vec![false; n];
    q.iter().for_each(|&i| is_q[i] = true);
    let (mut fit, mut queries) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = &real[i * dim..(i + 1) * dim];
        if is_q[i] {
            queries.extend_from_slice(r)
        } else {
            fit.extend_from_slice(r)
        }
    }
    (fit, queries)
}

/// Reads an embedding matrix: a `.npy` file (2-D, little-endian `<f4` or `<f8`, C order), or raw
/// little-endian f32 with the dimension given. Returns `(values, dim)`.
///
/// The `.npy` header is parsed by hand: the subset needed is a dozen lines, and a `.npy` crate would
/// be a dependency of the library for one benchmark input.
pub fn read_embeddings(path: &Path, raw_dim: Option<usize>) -> Result<(Vec<f32>, usize)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| RecipeError::io(path, e))?;
    let bad = |m: &str| RecipeError::Format {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    if bytes.starts_with(b"\x93NUMPY") {
        let (hlen, start) = match bytes.get(6) {
            Some(1) => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            Some(2 | 3) => (
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
                12,
            ),
            _ => return Err(bad("unknown .npy version")),
        };
        let header = std::str::from_utf8(
            bytes
                .get(start..start + hlen)
                .ok_or_else(|| bad("truncated .npy header"))?,
        )
        .map_err(|_| bad("bad .npy header"))?;
        if header.contains("'fortran_order': True") {
            return Err(bad(
                ".npy in Fortran order; save it with np.ascontiguousarray",
            ));
        }
        let shape = header
            .split("'shape':")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| bad("no shape in .npy header"))?;
        let dims: Vec<usize> = shape
            .trim()
            .trim_start_matches('(')
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let [rows, dim] = dims[..] else {
            return Err(bad("expected a 2-D array"));
        };
        let data = &bytes[start + hlen..];
        let vals: Vec<f32> = if header.contains("'<f4'") {
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        } else if header.contains("'<f8'") {
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect()
        } else {
            return Err(bad("expected dtype <f4 or <f8"));
        };
        if vals.len() != rows * dim {
            return Err(bad("data length does not match the shape"));
        }
        return Ok((vals, dim));
    }
    let dim = raw_dim.ok_or_else(|| bad("raw f32 file: the dimension must be given"))?;
    if bytes.len() % (4 * dim) != 0 {
        return Err(bad("raw f32 file length is not a multiple of 4 * dim"));
    }
    Ok((
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        dim,
    ))
}

/// A stand-in for real embeddings during development (NOT real data): `n` unit vectors around
/// `centres` random unit centres, each at cosine about `cos_to_centre` from its centre (lower is
/// more diffuse and harder for an IVF).
pub fn standin_embeddings(
    n: usize,
    dim: usize,
    centres: usize,
    cos_to_centre: f32,
    seed: u64,
) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cs = vec![0f32; centres * dim];
    for c in cs.chunks_exact_mut(dim) {
        c.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
        normalise(c);
    }
    let c2 = cos_to_centre.clamp(0.05, 0.999).powi(2);
    let s = ((1.0 / c2 - 1.0) / dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    for row in out.chunks_exact_mut(dim) {
        let c = rng.random_range(0..centres);
        for (o, m) in row.iter_mut().zip(&cs[c * dim..(c + 1) * dim]) {
            let z: f32 = rng.sample(StandardNormal);
            *o = m + s * z;
        }
        normalise(row);
    }
    out
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Synthetic set sizes (e.g. 10k, 100k, 1M).
    pub sizes: Vec<usize>,
    /// Mixture components (at least 1000 are used).
    pub components: usize,
    /// nprobe values to measure (empty or 0: the index default).
    pub nprobes: Vec<usize>,
    /// Re-rank count (`None`: the index default).
    pub rerank: Option<usize>,
    /// Timed searches per setting (queries are cycled).
    pub timed_searches: usize,
    /// Where the index files go (kept for reuse, e.g. by the criterion bench).
    pub dir: PathBuf,
    /// Seed of everything random.
    pub seed: u64,
    /// Index build parameters.
    pub build: BuildParams,
}

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Recipes.
    pub n: usize,
    /// IVF lists.
    pub nlist: usize,
    /// Lists probed.
    pub nprobe: usize,
    /// Candidates re-ranked.
    pub rerank: usize,
    /// Index build time in seconds (k-means, assignment, writing; no embedding).
    pub build_s: f64,
    /// Index file size.
    pub bytes: u64,
    /// Resident memory the open index added after the timed searches, MiB: anonymous (heap) growth
    /// plus file-backed pages of the map that were touched.
    pub resident_mib: f64,
    /// Of which file-backed (page cache mapped into the process; the kernel can drop it).
    pub resident_file_mib: f64,
    /// Median query latency, ms (one thread, warm page cache).
    pub p50_ms: f64,
    /// 99th percentile query latency, ms.
    pub p99_ms: f64,
    /// Median CPU time of the searching thread per query, ms ([`thread_cpu_ns`]; 0 where
    /// unavailable). Unlike wall-clock it does not count time the core spent on other processes.
    pub cpu_p50_ms: f64,
    /// 99th percentile of the per-query CPU time, ms.
    pub cpu_p99_ms: f64,
    /// Mean recall@10 of the fast path against exact search.
    pub recall_at_10: f64,
    /// Distinct queries.
    pub queries: usize,
    /// Timed searches.
    pub timed: usize,
    /// Path of the index file.
    pub index: PathBuf,
}

/// CPU time of the calling thread in ns (`CLOCK_THREAD_CPUTIME_ID`), used to time queries without
/// counting the time other processes hold the core, which on a shared machine dominates wall-clock
/// tails. `None` where unavailable.
pub fn thread_cpu_ns() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // Safety: `ts` is a valid, writable timespec; clock_gettime only writes it.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
    #[cfg(not(unix))]
    None
}

/// Resident memory of this process from `/proc/self/status`: `(anonymous KiB, file-backed KiB)`;
/// zeros where unavailable.
pub fn resident_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("RssAnon:"), get("RssFile:"))
}

fn exact_top(data: &[f32], queries: &[f32], dim: usize, k: usize) -> Vec<Vec<u32>> {
    let n = data.len() / dim;
    let mut out = Vec::new();
    let block = 8192;
    let nq = queries.len() / dim;
    let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::new(); nq];
    let mut s = vec![0f32; nq * block];
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        let sl = &mut s[..nq * (end - start)];
        gemm_abt(queries, &data[start * dim..end * dim], dim, sl);
        for (qi, row) in sl.chunks_exact(end - start).enumerate() {
            let b = &mut best[qi];
            b.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, &v)| (v, (start + j) as u32)),
            );
            b.sort_unstable_by(|a, c| c.0.total_cmp(&a.0));
            b.truncate(k);
        }
    }
    for b in best {
        out.push(b.into_iter().map(|x| x.1).collect());
    }
    out
}

/// Runs the benchmark: for each size, sample the set, compute exact top-10 of every query, build the
/// index (timed), drop the in-memory data, open the index, and time `timed_searches` searches per
/// nprobe. `log` gets progress lines.
pub fn run_scale(
    real: &[f32],
    dim: usize,
    cfg: &ScaleConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ScaleRow>> {
    let (fit, queries) = split_holdout(real, dim, cfg.seed);
    let queries = unit_rows(&queries, dim);
    let nq = queries.len() / dim;
    log(&format!(
        "real rows: {} ({} for fitting, {nq} held out as queries), dim {dim}",
        real.len() / dim,
        fit.len() / dim
    ));
    let t = Instant::now();
    let mix = fit_mixture(&fit, dim, cfg.components, cfg.seed)?;
    log(&format!(
        "mixture: {} components fitted in {:.1} s",
        mix.components(),
        t.elapsed().as_secs_f64()
    ));
    std::fs::create_dir_all(&cfg.dir).map_err(|e| RecipeError::io(&cfg.dir, e))?;
    let mut rows = Vec::new();
    for &n in &cfg.sizes {
        let path = cfg.dir.join(format!("scale-{n}.idx"));
        let (truth, stats) = {
            let data = mix.sample(n, cfg.seed.wrapping_add(n as u64));
            let truth = exact_top(&data, &queries, dim, 10);
            let items: Vec<IndexItem> = (0..n)
                .map(|i| IndexItem {
                    id: format!("syn-{i:07}"),
                    title: String::new(),
                    ingredients: Vec::new(),
                    food101_class: None,
                    store: None,
                    offset: 0,
                })
                .collect();
            let input = IndexInput {
                encoder: "scale-benchmark",
                dim,
                embeddings: &data,
                items: &items,
                stores: &[],
                dish_queries: &[],
            };
            log(&format!("n = {n}: building {}", path.display()));
            let stats = build_index(&path, &input, &cfg.build, &mut |_| {})?;
            (truth, stats)
        };
        log(&format!(
            "n = {n}: built in {:.1} s, {} bytes, {} lists",
            stats.seconds, stats.bytes, stats.nlist
        ));
        let (anon0, file0) = resident_kib();
        let idx = RecipeIndex::open(&path, Some("scale-benchmark"))?;
        let default_nprobe = idx.header().params.nprobe;
        let nprobes: Vec<usize> = if cfg.nprobes.is_empty() {
            vec![default_nprobe]
        } else {
            cfg.nprobes
                .iter()
                .map(|&p| if p == 0 { default_nprobe } else { p })
                .collect()
        };
        for &nprobe in &nprobes {
            let params = SearchParams {
                nprobe: Some(nprobe),
                rerank: cfg.rerank,
            };
            let mut hit = 0usize;
            for (qi, q) in queries.chunks_exact(dim).enumerate() {
                let got = idx.search_ordinals(q, 10, &params)?;
                hit += got.iter().filter(|h| truth[qi].contains(&h.0)).count();
            }
            let mut lat = Vec::with_capacity(cfg.timed_searches);
            let mut cpu_lat = Vec::with_capacity(cfg.timed_searches);
            for i in 0..cfg.timed_searches {
                let q = &queries[(i % nq) * dim..(i % nq + 1) * dim];
                let c0 = thread_cpu_ns();
                let t = Instant::now();
                std::hint::black_box(idx.search_ordinals(q, 10, &params)?);
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                if let (Some(a), Some(b)) = (c0, thread_cpu_ns()) {
                    cpu_lat.push((b - a) as f64 / 1e6);
                }
            }
            lat.sort_by(f64::total_cmp);
            cpu_lat.sort_by(f64::total_cmp);
            let pct_of = |v: &[f64], p: f64| {
                v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
                    .copied()
                    .unwrap_or(0.0)
            };
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
                    .copied()
                    .unwrap_or(0.0)
            };
            let (anon1, file1) = resident_kib();
            let row = ScaleRow {
                n,
                nlist: stats.nlist,
                nprobe: nprobe.min(stats.nlist),
                rerank: cfg.rerank.unwrap_or(idx.header().params.rerank),
                build_s: stats.seconds,
                bytes: stats.bytes,
                resident_mib: (anon1.saturating_sub(anon0) + file1.saturating_sub(file0)) as f64
                    / 1024.0,
                resident_file_mib: file1.saturating_sub(file0) as f64 / 1024.0,
                p50_ms: pct(0.5),
                p99_ms: pct(0.99),
                cpu_p50_ms: pct_of(&cpu_lat, 0.5),
                cpu_p99_ms: pct_of(&cpu_lat, 0.99),
                recall_at_10: hit as f64 / (10 * nq) as f64,
                queries: nq,
                timed: lat.len(),
                index: path.clone(),
            };
            log(&format_row(&row));
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One line of the results table.
pub fn format_row(r: &ScaleRow) -> String {
    format!(
        "n={:>8} nlist={:>5} nprobe={:>4} rerank={:>4} build={:>7.1}s bytes={:>11} resident={:>7.1}MiB (file {:>6.1}) p50={:>6.3}ms p99={:>6.3}ms cpu p50={:>6.3}ms p99={:>6.3}ms recall@10={:.4} ({} queries, {} timed)",
        r.n, r.nlist, r.nprobe, r.rerank, r.build_s, r.bytes, r.resident_mib, r.resident_file_mib, r.p50_ms, r.p99_ms, r.cpu_p50_ms,
        r.cpu_p99_ms, r.recall_at_10, r.queries, r.timed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_fit_and_sample_small_and_large() {
        let d = 16;
        for n in [60, 2400] {
            let real = standin_embeddings(n, d, 12, 0.7, 3);
            let (fit, q) = split_holdout(&real, d, 1);
            assert_eq!(q.len() / d, n / 5);
            assert_eq!(fit.len() + q.len(), real.len());
            let m = fit_mixture(&fit, d, 1000, 2).unwrap();
            assert_eq!(m.components(), 1000);
            assert!((m.cum_weights.last().unwrap() - 1.0).abs() < 1e-9);
            let s = m.sample(500, 4);
            for r in s.chunks_exact(d) {
                assert!((dot_f32(r, r) - 1.0).abs() < 1e-4);
            }
            // Synthetic rows sit about as close to the real data as real rows do to each other.
            let nearest = |x: &[f32]| {
                fit.chunks_exact(d)
                    .map(|r| dot_f32(x, r) / dot_f32(r, r).sqrt())
                    .fold(f32::MIN, f32::max)
            };
            let syn: f32 = s.chunks_exact(d).take(50).map(nearest).sum::<f32>() / 50.0;
            assert!(syn > 0.5, "mean best cosine to real rows {syn}");
        }
    }

    #[test]
    fn npy_and_raw_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in [1f32, 2., 3., 4., 5., 6.] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&p, &b).unwrap();
        assert_eq!(
            read_embeddings(&p, None).unwrap(),
            (vec![1., 2., 3., 4., 5., 6.], 3)
        );
        let raw = dir.path().join("e.f32");
        std::fs::write(&raw, &b[10 + h.len()..]).unwrap();
        assert_eq!(read_embeddings(&raw, Some(2)).unwrap().0.len(), 6);
        assert!(read_embeddings(&raw, Some(4)).is_err());
    }
}
