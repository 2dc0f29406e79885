//! Parity with pytorch-quantization, through the numpy re-implementation in
//! `fixtures/make_amax_fixtures.py` that wrote `fixtures/amax_fixtures.json`.
//!
//! Tolerances: counts exactly; edges to 1e-15 relative (serde_json may parse a float an ulp off);
//! every amax to 1e-6 relative, which only the same bin edge or centre meets; the divergence and
//! MSE curves to 1e-9 relative (the Rust entropy sums in a different order than scipy).

use dishcam_calibration::amax::{kl_divergences, mse_curve};
use dishcam_calibration::{compute_amax, AbsHistogram, Method};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    start_bin: usize,
    large: Vec<LargeCase>,
    collect: CollectCase,
}

/// A histogram of 600k values: the edges are rebuilt from the batch maxima, which fix them.
#[derive(Deserialize)]
struct LargeCase {
    name: String,
    num_bins: usize,
    batch_maxes: Vec<f32>,
    counts: Vec<u64>,
    edges_len: usize,
    edge_samples: Vec<(usize, f64)>,
    expected: Expected,
}

/// A small case with its raw values, so the collect path is compared too.
#[derive(Deserialize)]
struct CollectCase {
    name: String,
    num_bins: usize,
    batches: Vec<Vec<f32>>,
    counts: Vec<u64>,
    edges: Vec<f64>,
    expected: Expected,
    curves: Curves,
}

#[derive(Deserialize)]
struct Expected {
    max: f32,
    percentile: Vec<(f64, f64)>,
    entropy: f64,
    mse: f64,
}

#[derive(Deserialize)]
struct Curves {
    /// `None` where scipy's divergence is infinite.
    divergences: Vec<Option<f64>>,
    mses: Vec<f64>,
}

fn fixtures() -> Fixtures {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/amax_fixtures.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}; run make_amax_fixtures.py beside it"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: got {got}, reference {want} (relative tolerance {rel})"
    );
}

fn assert_amax_matches(case: &str, hist: &AbsHistogram, expected: &Expected) {
    let amax =
        |m: Method| f64::from(compute_amax(hist, m).unwrap_or_else(|e| panic!("{case} {m}: {e}")));
    assert_eq!(amax(Method::Max) as f32, expected.max, "{case} max");
    for &(p, want) in &expected.percentile {
        assert_close(
            &format!("{case} percentile {p}"),
            amax(Method::Percentile(p)),
            want,
            1e-6,
        );
    }
    assert_close(
        &format!("{case} entropy"),
        amax(Method::Entropy),
        expected.entropy,
        1e-6,
    );
    assert_close(
        &format!("{case} mse"),
        amax(Method::Mse),
        expected.mse,
        1e-6,
    );
}

#[test]
fn fixture_uses_the_crate_start_bin() {
    assert_eq!(fixtures().start_bin, dishcam_calibration::amax::START_BIN);
}

#[test]
fn collect_matches_numpy_histogram_with_bin_extension() {
    let case = fixtures().collect;
    let mut hist = AbsHistogram::new(case.num_bins);
    for batch in &case.batches {
        hist.collect(batch);
    }
    assert!(
        hist.counts().len() > case.num_bins,
        "{}: no extension",
        case.name
    );
    assert_eq!(hist.counts(), &case.counts[..], "{} counts", case.name);
    assert_eq!(hist.edges().len(), case.edges.len(), "{} edges", case.name);
    for (k, (&got, &want)) in hist.edges().iter().zip(&case.edges).enumerate() {
        assert_close(&format!("{} edge {k}", case.name), got, want, 1e-15);
    }
    assert_eq!(hist.max(), case.expected.max);
    assert_eq!(
        hist.total(),
        case.batches.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    assert_amax_matches(&case.name, &hist, &case.expected);
}

#[test]
fn divergence_and_mse_curves_match_scipy_and_numpy() {
    let case = fixtures().collect;
    let divergences = kl_divergences(&case.counts);
    assert_eq!(divergences.len(), case.curves.divergences.len());
    for (j, (&got, want)) in divergences.iter().zip(&case.curves.divergences).enumerate() {
        match want {
            None => assert!(
                got.is_infinite(),
                "divergence {j}: got {got}, scipy gives inf"
            ),
            Some(want) => assert_close(&format!("divergence {j}"), got, *want, 1e-9),
        }
    }
    let mses = mse_curve(&case.counts, &case.edges);
    assert_eq!(mses.len(), case.curves.mses.len());
    for (j, (&got, &want)) in mses.iter().zip(&case.curves.mses).enumerate() {
        assert_close(&format!("mse {j}"), got, want, 1e-9);
    }
}

#[test]
fn amax_matches_pytorch_quantization_on_large_histograms() {
    for case in fixtures().large {
        let mut edges_from_maxes = AbsHistogram::new(case.num_bins);
        for &m in &case.batch_maxes {
            edges_from_maxes.collect(&[m]);
        }
        let edges = edges_from_maxes.edges().to_vec();
        assert_eq!(edges.len(), case.edges_len, "{}: edge count", case.name);
        assert!(
            edges.len() > case.num_bins + 1,
            "{}: no extension",
            case.name
        );
        for &(k, want) in &case.edge_samples {
            assert_close(&format!("{} edge {k}", case.name), edges[k], want, 1e-15);
        }
        let hist = AbsHistogram::from_parts(case.counts, edges, case.expected.max, 0)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_amax_matches(&case.name, &hist, &case.expected);
    }
}
