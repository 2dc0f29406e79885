//! Cross-modal retrieval metrics as the Recipe1M papers report them (H-T, TNLBT): median rank and
//! recall at 1/5/10, image -> recipe and recipe -> image, cosine similarity, rank = 1 + number of items
//! strictly closer than the true pair, averaged over bags of pairs sampled from the test set.

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{RecipeError, Result};
use crate::index::kernels::{gemm_abt, normalise};

/// Scores of one retrieval direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct RetrievalScores {
    /// Median rank (the mean of the two middle ranks for an even count).
    pub med_r: f64,
    /// Fraction of queries whose pair ranks 1.
    pub r_at_1: f64,
    /// ... ranks 5 or better.
    pub r_at_5: f64,
    /// ... ranks 10 or better.
    pub r_at_10: f64,
}

impl RetrievalScores {
    /// Scores of a list of ranks (1-based).
    pub fn from_ranks(ranks: &[usize]) -> Self {
        if ranks.is_empty() {
            return Self::default();
        }
        let mut r = ranks.to_vec();
        r.sort_unstable();
        let n = r.len();
        let med_r = if n % 2 == 1 {
            r[n / 2] as f64
        } else {
            (r[n / 2 - 1] + r[n / 2]) as f64 / 2.0
        };
        let at = |k: usize| r.iter().filter(|&&x| x <= k).count() as f64 / n as f64;
        RetrievalScores {
            med_r,
            r_at_1: at(1),
            r_at_5: at(5),
            r_at_10: at(10),
        }
    }

    fn mean(all: &[RetrievalScores]) -> Self {
        let n = all.len().max(1) as f64;
        RetrievalScores {
            med_r: all.iter().map(|s| s.med_r).sum::<f64>() / n,
            r_at_1: all.iter().map(|s| s.r_at_1).sum::<f64>() / n,
            r_at_5: all.iter().map(|s| s.r_at_5).sum::<f64>() / n,
            r_at_10: all.iter().map(|s| s.r_at_10).sum::<f64>() / n,
        }
    }
}

/// Metrics for one bag size, averaged over the bags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalReport {
    /// Pairs per bag (the whole set when it is smaller than the requested size).
    pub bag_size: usize,
    /// Bags averaged (1 when the bag is the whole set: every bag would be the same).
    pub bags: usize,
    /// Pairs available.
    pub pairs: usize,
    /// Image query, recipe items.
    pub image_to_recipe: RetrievalScores,
    /// Recipe query, image items.
    pub recipe_to_image: RetrievalScores,
}

/// The bags: `bags` sets of `bag` distinct row indices out of `n` (seeded), or one bag of all rows
/// when `bag >= n`.
pub fn bag_indices(n: usize, bag: usize, bags: usize, seed: u64) -> Vec<Vec<usize>> {
    if bag >= n {
        return vec![(0..n).collect()];
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..bags)
        .map(|_| rand::seq::index::sample(&mut rng, n, bag).into_vec())
        .collect()
}

fn gather_unit(m: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        let start = out.len();
        out.extend_from_slice(&m[r * dim..(r + 1) * dim]);
        normalise(&mut out[start..]);
    }
    out
}

/// For each query row `i` of `queries` (unit rows), 1 + the number of `items` rows strictly more similar
/// to it than `items[i]`. Blocked through sgemm so 10k x 10k never materialises.
fn ranks_one_way(queries: &[f32], items: &[f32], dim: usize) -> Vec<usize> {
    let n = queries.len() / dim;
    let block = 256;
    let mut sims = vec![0f32; block.min(n.max(1)) * n];
    let mut ranks = Vec::with_capacity(n);
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        let s = &mut sims[..(end - start) * n];
        gemm_abt(&queries[start * dim..end * dim], items, dim, s);
        for (r, row) in s.chunks_exact(n).enumerate() {
            let own = row[start + r];
            ranks.push(1 + row.iter().filter(|&&v| v > own).count());
        }
    }
    ranks
}

/// Ranks of the true pairs within the rows `rows` of paired matrices (`images[i]` goes with
/// `recipes[i]`): `(image -> recipe ranks, recipe -> image ranks)`, in the order of `rows`.
pub fn pair_ranks(
    images: &[f32],
    recipes: &[f32],
    dim: usize,
    rows: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let im = gather_unit(images, dim, rows);
    let re = gather_unit(recipes, dim, rows);
    (ranks_one_way(&im, &re, dim), ranks_one_way(&re, &im, dim))
}

/// Metrics over `bags` bags of `bag_size` pairs (see [`bag_indices`]).
pub fn retrieval_metrics(
    images: &[f32],
    recipes: &[f32],
    dim: usize,
    bag_size: usize,
    bags: usize,
    seed: u64,
) -> Result<RetrievalReport> {
    if dim == 0
        || images.len() != recipes.len()
        || !images.len().is_multiple_of(dim)
        || images.is_empty()
    {
        return Err(RecipeError::Shape(format!(
            "paired embeddings: {} image values and {} recipe values for dim {dim} (need equal, non-empty multiples of dim)",
            images.len(),
            recipes.len()
        )));
    }
    if bag_size == 0 || bags == 0 {
        return Err(RecipeError::Invalid(
            "bag size and bag count must be at least 1".into(),
        ));
    }
    let n = images.len() / dim;
    let all = bag_indices(n, bag_size, bags, seed);
    let (mut i2r, mut r2i) = (Vec::new(), Vec::new());
    for rows in &all {
        let (a, b) = pair_ranks(images, recipes, dim, rows);
        i2r.push(RetrievalScores::from_ranks(&a));
        r2i.push(RetrievalScores::from_ranks(&b));
    }
    Ok(RetrievalReport {
        bag_size: bag_size.min(n),
        bags: all.len(),
        pairs: n,
        image_to_recipe: RetrievalScores::mean(&i2r),
        recipe_to_image: RetrievalScores::mean(&r2i),
    })
}

/// The papers' protocol: 10 bags of 1k pairs and 10 bags of 10k pairs (each the whole set when it is
/// smaller; the 10k entry is left out when the set has no more than 1k pairs, as it would repeat).
pub fn retrieval_protocol(
    images: &[f32],
    recipes: &[f32],
    dim: usize,
    seed: u64,
) -> Result<Vec<RetrievalReport>> {
    let n = images.len() / dim.max(1);
    let mut out = vec![retrieval_metrics(images, recipes, dim, 1000, 10, seed)?];
    if n > 1000 {
        out.push(retrieval_metrics(images, recipes, dim, 10_000, 10, seed)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images are one-hot; recipe j's coordinates are row j of a Latin square of the values 1..=n, so
    /// every recipe has the same norm and sim(i, j) is proportional to L[j][i]. Then the true pair of
    /// image i ranks n + 1 - L[i][i] in both directions.
    fn latin(n: usize) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
        let mut images = vec![0f32; n * n];
        let mut recipes = vec![0f32; n * n];
        let mut ranks = Vec::new();
        for i in 0..n {
            images[i * n + i] = 1.0;
            for c in 0..n {
                recipes[i * n + c] = ((i + c) % n + 1) as f32;
            }
            ranks.push(n + 1 - ((2 * i) % n + 1));
        }
        (images, recipes, ranks)
    }

    #[test]
    fn known_ranks_small() {
        let (im, re, want) = latin(5);
        assert_eq!(want, vec![5, 3, 1, 4, 2]);
        let (a, b) = pair_ranks(&im, &re, 5, &[0, 1, 2, 3, 4]);
        assert_eq!(a, want);
        assert_eq!(b, want);
        let rep = retrieval_metrics(&im, &re, 5, 1000, 10, 1).unwrap();
        assert_eq!((rep.bag_size, rep.bags), (5, 1));
        let s = rep.image_to_recipe;
        assert_eq!(
            (s.med_r, s.r_at_1, s.r_at_5, s.r_at_10),
            (3.0, 0.2, 1.0, 1.0)
        );
        assert_eq!(rep.recipe_to_image, s);
    }

    #[test]
    fn known_ranks_bag_of_1000() {
        let (im, re, want) = latin(1000);
        let rep = retrieval_metrics(&im, &re, 1000, 1000, 10, 1).unwrap();
        let s = RetrievalScores::from_ranks(&want);
        // ranks are 1000, 998, ..., 2, each twice: R@1 = 0, R@5 = 4/1000 (ranks 2 and 4), R@10 = 10/1000
        assert_eq!(s.r_at_1, 0.0);
        assert_eq!(s.r_at_5, 4.0 / 1000.0);
        assert_eq!(s.r_at_10, 10.0 / 1000.0);
        assert_eq!(s.med_r, 501.0);
        assert_eq!(rep.image_to_recipe, s);
        assert_eq!(rep.recipe_to_image, s);
    }

    #[test]
    fn ties_do_not_count_and_identical_sets_rank_one() {
        // Two recipes identical to each other: the tie is not "strictly closer", both rank 1.
        let im = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let re = [1.0, 0.0, 2.0, 0.0, 0.0, 3.0];
        let (a, b) = pair_ranks(&im, &re, 2, &[0, 1, 2]);
        assert_eq!(a, vec![1, 1, 1]);
        assert_eq!(b, vec![1, 1, 1]);
    }

    #[test]
    fn bags_average_the_per_bag_metrics() {
        let n = 1500;
        let d = 8;
        let mut s = 12345u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let im: Vec<f32> = (0..n * d).map(|_| rnd()).collect();
        let re: Vec<f32> = im.iter().map(|v| v + 0.3 * rnd()).collect();
        let rep = retrieval_metrics(&im, &re, d, 1000, 10, 9).unwrap();
        assert_eq!((rep.bag_size, rep.bags, rep.pairs), (1000, 10, 1500));
        let bags = bag_indices(n, 1000, 10, 9);
        let mut med = 0.0;
        for rows in &bags {
            let mut distinct = rows.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 1000);
            // naive f64 reference
            let unit = |m: &[f32], r: usize| {
                let v = &m[r * d..(r + 1) * d];
                let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                v.iter().map(|x| *x as f64 / n).collect::<Vec<f64>>()
            };
            let ranks: Vec<usize> = rows
                .iter()
                .map(|&i| {
                    let q = unit(&im, i);
                    let sim =
                        |j: usize| unit(&re, j).iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
                    let own = sim(i);
                    1 + rows.iter().filter(|&&j| sim(j) > own + 1e-9).count()
                })
                .collect();
            med += RetrievalScores::from_ranks(&ranks).med_r / 10.0;
        }
        assert!(
            (rep.image_to_recipe.med_r - med).abs() < 0.5,
            "{} vs {med}",
            rep.image_to_recipe.med_r
        );
        let protocol = retrieval_protocol(&im, &re, d, 9).unwrap();
        assert_eq!(protocol.len(), 2);
        assert_eq!((protocol[1].bag_size, protocol[1].bags), (1500, 1));
    }
}
