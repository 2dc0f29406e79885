//! Scores to answers: softmax with temperature and top-k.

/// A class index with its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub class: usize,
    pub probability: f32,
}

/// Softmax of `logits / temperature`, computed stably (max subtracted) in place.
pub fn softmax_in_place(logits: &mut [f32], temperature: f32) {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in logits.iter_mut() {
        *v = ((*v - max) / t).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in logits.iter_mut() {
        *v *= inv;
    }
}

/// The `k` highest scores, best first; ties keep the lower class index first. NaN ranks last.
pub fn top_k(scores: &[f32], k: usize) -> Vec<Scored> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let cmp = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    let k = k.min(scores.len());
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter()
        .map(|class| Scored {
            class,
            probability: scores[class],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn softmax_sums_to_one_and_matches_by_hand() {
        let mut v = [1.0f32, 2.0, 3.0];
        softmax_in_place(&mut v, 1.0);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let s: f64 = e.iter().sum();
        for (a, b) in v.iter().zip(&e) {
            assert!((*a as f64 - b / s).abs() < 1e-6);
        }
        let mut w = [1000.0f32, 1000.0];
        softmax_in_place(&mut w, 2.0);
        assert_eq!(w, [0.5, 0.5]);
    }

    proptest! {
        #[test]
        fn top_k_agrees_with_a_full_sort(v in proptest::collection::vec(-100.0f32..100.0, 0..200), k in 0usize..20) {
            let got: Vec<usize> = top_k(&v, k).iter().map(|s| s.class).collect();
            let mut all: Vec<usize> = (0..v.len()).collect();
            all.sort_by(|a, b| v[*b].total_cmp(&v[*a]).then(a.cmp(b)));
            all.truncate(k.min(v.len()));
            prop_assert_eq!(got, all);
        }
    }
}
