//! Replays the fuzz regression corpus on the stable toolchain: every file of
//! `tests/corpus/fuzz/<target>/` (the minimised inputs the fuzzers found, and a few seeds) goes
//! through the calls its fuzz target makes (`fuzz/src/harness.rs`, included here as is) and must
//! give `Ok` or a clean error, never a panic. The `multipart` inputs replay through the real
//! `read_form` in a unit test of src/serve/api.rs. `scripts/fuzz.sh` runs the fuzzers themselves.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/harness.rs"]
mod harness;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
}

fn replay(target: &str, run: fn(&[u8]) -> Result<(), String>) {
    let mut panicked = Vec::new();
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => assert!(!e.trim().is_empty(), "{}: empty error", path.display()),
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    assert!(panicked.is_empty(), "{target}: panicked on {panicked:#?}");
}

#[test]
fn image_preprocess_corpus() {
    replay("image_preprocess", harness::image_preprocess);
}

#[test]
fn pack_manifest_corpus() {
    replay("pack_manifest", harness::pack_manifest);
}

#[test]
fn recipe1m_corpus() {
    replay("recipe1m", harness::recipe1m);
}

#[test]
fn recipenlg_corpus() {
    replay("recipenlg", harness::recipenlg);
}

#[test]
fn jsonld_corpus() {
    replay("jsonld", harness::jsonld);
}

#[test]
fn jsonl_corpus() {
    replay("jsonl", harness::jsonl);
}

/// The seeds exercise what they are named for (a corpus that only ever errors would prove little).
#[test]
fn seeds_reach_the_success_paths() {
    let ok = |target: &str, name: &str, run: fn(&[u8]) -> Result<(), String>| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/fuzz")
            .join(target)
            .join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    ok(
        "image_preprocess",
        "seed-tiny-jpg",
        harness::image_preprocess,
    );
    ok(
        "image_preprocess",
        "seed-tiny-webp",
        harness::image_preprocess,
    );
    ok(
        "pack_manifest",
        "seed-image-only.toml",
        harness::pack_manifest,
    );
    ok(
        "pack_manifest",
        "seed-two-encoders.toml",
        harness::pack_manifest,
    );
    ok("recipe1m", "seed-layer1.json", harness::recipe1m);
    ok("recipenlg", "seed-recipes.csv", harness::recipenlg);
    ok("jsonld", "seed-page.html", harness::jsonld);
    ok("jsonl", "seed-store.jsonl", harness::jsonl);
}
