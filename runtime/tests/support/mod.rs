//! Helpers shared by the runtime's integration tests and the binary's (`tests/common` includes
//! this file): where the workspace, the `lite` pack, the fixtures and the shared data are, and
//! the comparisons the parity tests make.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dishcam_models::{Home, Pack};

pub mod backend_suite;
pub mod trt_mock;

/// The workspace root (where `Cargo.lock` is), whichever crate's tests include this file.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("Cargo.lock").is_file())
        .expect("the tests run inside the workspace")
        .to_path_buf()
}

/// The installed `lite` pack. Its absence is a failure, not a skip: `scripts/test.sh` (the
/// README's test command) installs it first.
pub fn lite_pack() -> Pack {
    let home = Home::from_env().expect("a home directory");
    Pack::open("lite", &home).unwrap_or_else(|e| {
        panic!("{e}\nthe parity and CLI tests need the lite pack: run ./scripts/test.sh, or `cargo run -- models pull lite` first")
    })
}

/// `../shared/data` (or `$DISHCAM_SHARED_DATA`), when present. When absent, says so loudly.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DISHCAM_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"));
    if dir.join("food101-10class").is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED ({test}): no shared data at {}; set DISHCAM_SHARED_DATA to run the real-photo cases", dir.display());
        None
    }
}

/// Resolves a fixture path: `shared:REL` under the shared data dir, else relative to the repo.
pub fn fixture_path(p: &str, shared: Option<&Path>) -> Option<PathBuf> {
    match p.strip_prefix("shared:") {
        Some(rel) => shared.map(|s| s.join(rel)),
        None => Some(repo().join(p)),
    }
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn top5(v: &[f32]) -> Vec<usize> {
    dishcam_runtime::classify::top_k(v, 5)
        .iter()
        .map(|s| s.class)
        .collect()
}

/// The onnxruntime library `dishcam models pull` put in the real home; CLI tests that run with a
/// temporary `DISHCAM_HOME` pass it as `ORT_DYLIB_PATH` so they use the default backend.
pub fn ort_library() -> PathBuf {
    let home = Home::from_env().expect("a home directory");
    dishcam_runtime::backend::onnxruntime::library_path(&home)
}
