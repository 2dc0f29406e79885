//! Import -> store -> index -> search, with a toy bag-of-words encoder standing in for the pack's
//! text encoder (the crate is encoder-agnostic; the real encoder lives in the runtime).

use std::path::{Path, PathBuf};

use dishcam_recipes::index::{build_from_stores, BuildStage, RecipeIndex, SearchParams};
use dishcam_recipes::{import_into_store, BuildParams, ExcludeFilter, Format};

// A prime, so FNV-1a buckets do not collide the way they do modulo a power of two ("apple" and "tuna"
// share a bucket modulo 1024).
const DIM: usize = 1021;

/// Hashing bag of words: each lower-case word of 3+ letters adds 1 to one of DIM buckets.
fn toy_embed(texts: &[String]) -> dishcam_recipes::Result<Vec<f32>> {
    let mut out = vec![0f32; texts.len() * DIM];
    for (t, row) in texts.iter().zip(out.chunks_exact_mut(DIM)) {
        for w in t
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
        {
            let h = w.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
            row[(h % DIM as u64) as usize] += 1.0;
        }
    }
    Ok(out)
}

fn bundled() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/food101.jsonl");
    if p.exists() {
        Some(p)
    } else {
        println!("SKIPPED: {} is absent", p.display());
        None
    }
}

#[test]
fn bundled_set_search_and_dish_lists() {
    let Some(base) = bundled() else { return };
    let dir = tempfile::tempdir().unwrap();
    let idx_path = dir.path().join("recipes.idx");
    let classes: Vec<String> = ["apple_pie", "pad_thai", "sushi"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut stages = Vec::new();
    let stats = build_from_stores(
        &idx_path,
        std::slice::from_ref(&base),
        "toy-bow-1021",
        DIM,
        32,
        &mut toy_embed,
        &classes,
        &BuildParams::default(),
        &mut |s| stages.push(s.clone()),
    )
    .unwrap();
    assert_eq!(stats.count, 101);
    assert!(matches!(stages.last(), Some(BuildStage::Committed)));
    let idx = RecipeIndex::open(&idx_path, Some("toy-bow-1021")).unwrap();
    idx.verify().unwrap();
    let q = toy_embed(&["apple pie".to_string()]).unwrap();
    let hits = idx
        .search(&q, 5, &ExcludeFilter::default(), &SearchParams::default())
        .unwrap();
    assert_eq!(hits[0].id, "food101-apple_pie", "{hits:#?}");
    assert_eq!(
        hits,
        idx.search_exact(&q, 5, &ExcludeFilter::default()).unwrap()
    );
    let r = idx.show("food101-apple_pie").unwrap();
    assert_eq!(r.food101_class.as_deref(), Some("apple_pie"));
    // The dish list starts with the recipe tagged with the class.
    for c in &classes {
        let top = idx.dish_recipes(c, 3, &ExcludeFilter::default()).unwrap();
        assert_eq!(top[0].id, format!("food101-{c}"));
    }
    // Pad thai has peanuts and shrimp or fish sauce; excluding peanuts drops it.
    let q = toy_embed(&["pad thai".to_string()]).unwrap();
    let hits = idx
        .search(
            &q,
            3,
            &ExcludeFilter::new(&["peanut"]),
            &SearchParams::default(),
        )
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.id != "food101-pad_thai"), "{hits:#?}");
}

#[test]
fn overlay_imports_are_indexed_and_shown() {
    let Some(base) = bundled() else { return };
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/recipenlg-sample/RecipeNLG_dataset.csv");
    if !sample.exists() {
        println!("SKIPPED: {} is absent", sample.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("user-recipes.jsonl");
    let rep = import_into_store(&[sample], Format::Auto, &overlay, &mut |_| {}).unwrap();
    assert_eq!(rep.imported, 49);
    let idx_path = dir.path().join("recipes.idx");
    build_from_stores(
        &idx_path,
        &[base, overlay],
        "toy",
        DIM,
        16,
        &mut toy_embed,
        &[],
        &BuildParams::default(),
        &mut |_| {},
    )
    .unwrap();
    let idx = RecipeIndex::open(&idx_path, Some("toy")).unwrap();
    assert_eq!(idx.len(), 150);
    assert_eq!(idx.header().stores[1], "user-recipes.jsonl");
    assert_eq!(
        idx.show("recipenlg-0").unwrap().title,
        "No-Bake Nut Cookies"
    );
    let q = toy_embed(&["No-Bake Nut Cookies brown sugar evaporated milk".to_string()]).unwrap();
    let hits = idx
        .search(&q, 3, &ExcludeFilter::default(), &SearchParams::default())
        .unwrap();
    assert_eq!(hits[0].id, "recipenlg-0");
    let hits = idx
        .search(
            &q,
            3,
            &ExcludeFilter::new(&["tree nuts"]),
            &SearchParams::default(),
        )
        .unwrap();
    assert!(hits.iter().all(|h| h.id != "recipenlg-0"));
}
