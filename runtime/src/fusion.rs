//! Image + text fusion (Gallo et al. 2020's early fusion; late fusion of class scores).
//!
//! - Early fusion: one head over `[l2norm(image embedding), l2norm(text embedding)]`; normalising
//!   each part keeps one modality from dominating by scale alone.
//! - Late fusion: `log p = (1 - w) log p_image + w log p_text`, renormalised, where each head's
//!   probabilities use its own temperature.

/// `[x / |x|, y / |y|]` (a zero vector stays zero).
pub fn early_features(image: &[f32], text: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(image.len() + text.len());
    for part in [image, text] {
        let norm = part.iter().map(|v| v * v).sum::<f32>().sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        out.extend(part.iter().map(|v| v * inv));
    }
    out
}

/// `log softmax(logits / temperature)`.
pub fn log_softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits
        .iter()
        .map(|l| (((l - max) / t) as f64).exp())
        .sum::<f64>()
        .ln() as f32;
    logits.iter().map(|l| (l - max) / t - lse).collect()
}

/// Late-fused scores: `(1 - w) log_softmax(image / t_image) + w log_softmax(text / t_text)`.
/// Softmax of the result (temperature 1) gives the fused probabilities.
pub fn late_scores(
    image_logits: &[f32],
    image_temperature: f32,
    text_logits: &[f32],
    text_temperature: f32,
    text_weight: f32,
) -> Vec<f32> {
    let a = log_softmax(image_logits, image_temperature);
    let b = log_softmax(text_logits, text_temperature);
    a.iter()
        .zip(&b)
        .map(|(x, y)| (1.0 - text_weight) * x + text_weight * y)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::softmax_in_place;

    #[test]
    fn early_features_normalise_each_part() {
        let f = early_features(&[3.0, 4.0], &[0.0, 2.0, 0.0]);
        assert_eq!(f, vec![0.6, 0.8, 0.0, 1.0, 0.0]);
        assert_eq!(early_features(&[0.0], &[5.0]), vec![0.0, 1.0]);
    }

    #[test]
    fn late_fusion_matches_hand_computed_values() {
        // Image logits (ln 1, ln 3) -> p = (0.25, 0.75); text logits (ln 3, ln 1) ->
        // p = (0.75, 0.25). With w = 0.5 the fused log-probs are equal: p = (0.5, 0.5).
        let img = [0.0f32, 3f32.ln()];
        let txt = [3f32.ln(), 0.0];
        let mut p = late_scores(&img, 1.0, &txt, 1.0, 0.5);
        softmax_in_place(&mut p, 1.0);
        assert!(
            (p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6,
            "{p:?}"
        );

        // w = 0.25: log p ~ 0.75 * ln(0.25, 0.75) + 0.25 * ln(0.75, 0.25)
        //   -> unnormalised (0.25^0.75 * 0.75^0.25, 0.75^0.75 * 0.25^0.25)
        //    = (0.3290, 0.5699) -> (0.3660, 0.6340).
        let mut p = late_scores(&img, 1.0, &txt, 1.0, 0.25);
        softmax_in_place(&mut p, 1.0);
        assert!((p[0] - 0.3660).abs() < 1e-3, "{p:?}");
        assert!((p[1] - 0.6340).abs() < 1e-3, "{p:?}");

        // Each head's temperature applies before mixing: text logits (2 ln 3, 0) at t = 2 are
        // p = (0.75, 0.25), as above.
        let hot = [2.0 * 3f32.ln(), 0.0];
        let mut q = late_scores(&img, 1.0, &hot, 2.0, 0.25);
        softmax_in_place(&mut q, 1.0);
        assert!((q[0] - p[0]).abs() < 1e-6);

        // w = 0 and w = 1 give each head alone.
        let mut only_img = late_scores(&img, 1.0, &txt, 1.0, 0.0);
        softmax_in_place(&mut only_img, 1.0);
        assert!((only_img[1] - 0.75).abs() < 1e-6);
        let mut only_txt = late_scores(&img, 1.0, &txt, 1.0, 1.0);
        softmax_in_place(&mut only_txt, 1.0);
        assert!((only_txt[0] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn log_softmax_is_stable_for_large_logits() {
        let l = log_softmax(&[1000.0, 1000.0], 1.0);
        assert!((l[0] - 0.5f32.ln()).abs() < 1e-6);
    }
}
