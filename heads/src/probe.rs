//! The shortcut probe: can a linear model tell two sources of the same photos apart from the
//! encoder's embeddings alone?
//!
//! Food-101's 64 px set and our full-size copies share photo ids. Each shared photo is embedded
//! twice, once from each source, both through the serving path (the head's photo preparation).
//! A logistic probe is fitted to tell the sources apart and scored on ids it never saw (k folds
//! by a hash of the id, so both copies of a photo fall in the same fold). 50 % means the sources
//! look the same to anything fitted on the embeddings, including a dish head; near 100 % means a
//! head can learn "how the photo was made" in place of "which dish", which is what the 101-way
//! head did when only 10 classes had sharp photos.

use std::collections::HashMap;

use dishcam_models::manifest::PhotoPreparation;
use dishcam_runtime::dataset::{stable_hash, LabelledImage};
use dishcam_runtime::embedder::Embedder;

use crate::error::TeachError;
use crate::fit::{fit_logistic, Dataset, FitConfig};

/// What the probe measured.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Photo ids found in both sources (same class folder, same file stem) that decoded in both.
    pub pairs: usize,
    pub folds: usize,
    /// Held-out accuracy of telling source A from source B (0.5 = indistinguishable).
    pub accuracy: f64,
    /// Per fold.
    pub fold_accuracy: Vec<f64>,
    /// The preparation both sources went through, if any.
    pub prepare: Option<String>,
}

/// Embeds the photos `a` and `b` share (by class and id), each prepared as `prepare` says, and
/// reports how well a logistic probe tells the sources apart on held-out ids.
pub fn source_probe(
    embedder: &Embedder,
    a: &[LabelledImage],
    b: &[LabelledImage],
    prepare: Option<PhotoPreparation>,
    decode: &dishcam_capture::decode::DecodeOptions,
    folds: usize,
) -> Result<ProbeReport, TeachError> {
    let folds = folds.max(2);
    let in_b: HashMap<(&str, &str), &LabelledImage> = b
        .iter()
        .map(|i| ((i.class.as_str(), i.id.as_str()), i))
        .collect();
    let (left, right): (Vec<LabelledImage>, Vec<LabelledImage>) = a
        .iter()
        .filter_map(|i| {
            in_b.get(&(i.class.as_str(), i.id.as_str()))
                .map(|j| (i.clone(), (*j).clone()))
        })
        .unzip();
    if left.len() < 2 * folds {
        return Err(TeachError::Invalid(format!(
            "the two photo sets share {} photo ids (same class folder and file name); the probe needs at least {}",
            left.len(),
            2 * folds
        )));
    }
    let ea = embedder.images(&left, None, prepare, decode)?;
    let eb = embedder.images(&right, None, prepare, decode)?;
    let rows: Vec<(u64, &[f32], &[f32])> = left
        .iter()
        .zip(ea.iter().zip(&eb))
        .filter_map(|(item, (x, y))| {
            Some((
                stable_hash(&item.id) % folds as u64,
                x.as_deref()?,
                y.as_deref()?,
            ))
        })
        .collect();
    let dim = rows.first().map_or(0, |r| r.1.len());
    let mut fold_accuracy = Vec::new();
    let (mut hits, mut total) = (0usize, 0usize);
    for k in 0..folds as u64 {
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for (_, x, y) in rows.iter().filter(|r| r.0 != k) {
            features.extend_from_slice(x);
            features.extend_from_slice(y);
            labels.extend([0usize, 1]);
        }
        let weights = vec![1.0f32; labels.len()];
        let data = Dataset {
            features: &features,
            labels: &labels,
            weights: &weights,
            dim,
            classes: 2,
        };
        let cfg = FitConfig {
            max_iters: 200,
            ..FitConfig::default()
        };
        let (probe, _) = fit_logistic(&data, &cfg, None)?;
        let (mut fold_hits, mut fold_total) = (0usize, 0usize);
        let mut logits = [0f32; 2];
        for (_, x, y) in rows.iter().filter(|r| r.0 == k) {
            for (row, source) in [(x, 0usize), (y, 1)] {
                probe.logits_into(row, &mut logits);
                let said = usize::from(logits[1] > logits[0]);
                fold_hits += usize::from(said == source);
                fold_total += 1;
            }
        }
        hits += fold_hits;
        total += fold_total;
        fold_accuracy.push(fold_hits as f64 / fold_total.max(1) as f64);
    }
    Ok(ProbeReport {
        pairs: rows.len(),
        folds,
        accuracy: hits as f64 / total.max(1) as f64,
        fold_accuracy,
        prepare: prepare.map(|p| p.to_string()),
    })
}
