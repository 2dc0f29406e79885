//! The index file: search against brute force, filters, show, dish lists, encoder check, corruption
//! detection, and a crash during a build leaving the previous index intact.

use std::path::{Path, PathBuf};
use std::process::Command;

use dishcam_recipes::index::{BuildStage, RecipeIndex, SearchParams};
use dishcam_recipes::model::{for_each_jsonl, write_jsonl, Recipe};
use dishcam_recipes::{
    build_index, BuildParams, ExcludeFilter, IndexInput, IndexItem, RecipeError,
};

const ENC: &str = "lite/all-minilm-l6-v2@sha256:abc";

/// Deterministic clustered unit vectors (xorshift; no dependency needed for test data).
fn vectors(n: usize, d: usize, centres: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let cs: Vec<f32> = (0..centres * d).map(|_| rnd()).collect();
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n {
        let c = &cs[(i % centres) * d..(i % centres + 1) * d];
        let v: Vec<f32> = c.iter().map(|x| x + 0.35 * rnd()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(v.iter().map(|x| x / norm));
    }
    out
}

fn recipes(n: usize) -> Vec<Recipe> {
    (0..n)
        .map(|i| Recipe {
            id: format!("t-{i:05}"),
            title: format!("Recipe {i}"),
            ingredients: vec![
                if i % 3 == 0 {
                    "200 g Prawns".into()
                } else {
                    "2 Tomatoes".into()
                },
                "1 tsp salt".into(),
            ],
            instructions: vec!["Cook.".into()],
            food101_class: (i % 50 == 7).then(|| "pad_thai".to_string()),
            ..Default::default()
        })
        .collect()
}

struct Built {
    _dir: tempfile::TempDir,
    idx: PathBuf,
    emb: Vec<f32>,
}

fn build(n: usize, d: usize, params: &BuildParams) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("recipes.jsonl");
    write_jsonl(&store, &recipes(n)).unwrap();
    let mut items = Vec::new();
    for_each_jsonl(&store, |off, r| {
        items.push(IndexItem::from_recipe(&r, Some(0), off));
        Ok(())
    })
    .unwrap();
    let emb = vectors(n, d, 40, 7);
    let dish = vec![("pad_thai".to_string(), emb[3 * d..4 * d].to_vec())];
    let idx = dir.path().join("recipes.idx");
    let input = IndexInput {
        encoder: ENC,
        dim: d,
        embeddings: &emb,
        items: &items,
        stores: &["recipes.jsonl".into()],
        dish_queries: &dish,
    };
    let stats = build_index(&idx, &input, params, &mut |_| {}).unwrap();
    assert_eq!(stats.bytes, std::fs::metadata(&idx).unwrap().len());
    Built {
        _dir: dir,
        idx,
        emb,
    }
}

fn brute(emb: &[f32], d: usize, q: &[f32], k: usize) -> Vec<u32> {
    let mut s: Vec<(f32, u32)> = emb
        .chunks_exact(d)
        .enumerate()
        .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| a * b).sum(), i as u32))
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter().take(k).map(|x| x.1).collect()
}

#[test]
fn ivf_search_matches_brute_force() {
    let d = 48;
    let b = build(
        6000,
        d,
        &BuildParams {
            nlist: 32,
            ..Default::default()
        },
    );
    let idx = RecipeIndex::open(&b.idx, Some(ENC)).unwrap();
    assert_eq!((idx.len(), idx.dim(), idx.header().nlist), (6000, d, 32));
    idx.verify().unwrap();
    let queries = vectors(50, d, 40, 99);
    let mut found = 0;
    for q in queries.chunks_exact(d) {
        let exact: Vec<u32> = idx
            .exact_ordinals(q, 10)
            .unwrap()
            .iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(exact, brute(&b.emb, d, q, 10));
        // Queries come from other centres than the data (the hard case for IVF): probe half the lists.
        let approx = idx
            .search_ordinals(
                q,
                10,
                &SearchParams {
                    nprobe: Some(16),
                    rerank: None,
                },
            )
            .unwrap();
        found += approx.iter().filter(|h| exact.contains(&h.0)).count();
        // Probing every list with a full re-rank is exact.
        let all = idx
            .search_ordinals(
                q,
                10,
                &SearchParams {
                    nprobe: Some(32),
                    rerank: Some(6000),
                },
            )
            .unwrap();
        assert_eq!(all.iter().map(|h| h.0).collect::<Vec<_>>(), exact);
    }
    let recall = found as f64 / 500.0;
    assert!(recall >= 0.98, "recall@10 {recall}");
}

#[test]
fn filters_show_and_dish_lists() {
    let d = 32;
    let b = build(300, d, &BuildParams::default());
    let idx = RecipeIndex::open(&b.idx, Some(ENC)).unwrap();
    assert_eq!(idx.header().nlist, 1);
    let q = &b.emb[..d];
    let none = ExcludeFilter::default();
    let hits = idx.search(q, 5, &none, &SearchParams::default()).unwrap();
    assert_eq!(hits[0].id, "t-00000");
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    assert_eq!(hits, idx.search_exact(q, 5, &none).unwrap());
    // Every third recipe has prawns: excluding shellfish still returns 5, none with prawns.
    let f = ExcludeFilter::new(&["shellfish"]);
    let hits = idx
        .search(
            q,
            5,
            &f,
            &SearchParams {
                nprobe: None,
                rerank: Some(5),
            },
        )
        .unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.ordinal % 3 != 0), "{hits:?}");
    assert_eq!(hits, idx.search_exact(q, 5, &f).unwrap());
    // Excluding everything returns nothing rather than looping.
    assert!(idx
        .search(
            q,
            5,
            &ExcludeFilter::new(&["salt"]),
            &SearchParams::default()
        )
        .unwrap()
        .is_empty());

    let r = idx.show("t-00123").unwrap();
    assert_eq!(r.title, "Recipe 123");
    assert!(matches!(idx.show("nope"), Err(RecipeError::NotFound(_))));
    assert_eq!(idx.meta(5).unwrap().ingredients, vec!["tomato", "salt"]);

    let dish = idx.dish_ordinals("pad_thai").unwrap();
    assert_eq!(dish.len(), 20);
    assert_eq!(
        &dish[..6],
        &[7, 57, 107, 157, 207, 257],
        "tagged recipes first"
    );
    assert_eq!(dish[6], 3, "then the nearest to the dish query");
    assert_eq!(idx.dish_recipes("pad_thai", 3, &none).unwrap().len(), 3);
    assert!(idx.dish_ordinals("sushi").is_none());
}

#[test]
fn encoder_mismatch_is_refused_naming_both() {
    let b = build(50, 16, &BuildParams::default());
    let err = RecipeIndex::open(&b.idx, Some("other-encoder"))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(ENC)
            && msg.contains("other-encoder")
            && msg.contains("dishcam recipes index build"),
        "{msg}"
    );
    assert!(RecipeIndex::open(&b.idx, None).is_ok());
}

fn expect_corrupt(r: Result<(), RecipeError>, what: &str) {
    match r {
        Err(e @ RecipeError::CorruptIndex { .. }) => {
            assert!(e.to_string().contains("dishcam recipes index build"), "{e}")
        }
        other => panic!("{what}: expected a corrupt-index error, got {other:?}"),
    }
}

/// Opens and reads everything the way a user would.
fn use_index(p: &Path, d: usize) -> Result<(), RecipeError> {
    let idx = RecipeIndex::open(p, Some(ENC))?;
    let q = vec![0.1f32; d];
    for o in 0..idx.len() as u32 {
        idx.meta(o)?;
    }
    idx.search_ordinals(
        &q,
        10,
        &SearchParams {
            nprobe: Some(usize::MAX),
            rerank: Some(idx.len()),
        },
    )?;
    idx.verify()
}

#[test]
fn truncation_and_tampering_are_detected() {
    let d = 16;
    let b = build(
        5000,
        d,
        &BuildParams {
            nlist: 8,
            ..Default::default()
        },
    );
    let good = std::fs::read(&b.idx).unwrap();
    use_index(&b.idx, d).unwrap();
    let hdr = RecipeIndex::open(&b.idx, None).unwrap().header().clone();
    let p = b.idx.with_file_name("bad.idx");
    for cut in [0, 10, good.len() / 2, good.len() - 1] {
        std::fs::write(&p, &good[..cut]).unwrap();
        expect_corrupt(
            RecipeIndex::open(&p, Some(ENC)).map(|_| ()),
            &format!("truncated to {cut}"),
        );
    }
    // One flipped byte in the middle of every section, and in the header.
    let mut spots: Vec<(String, usize)> = hdr
        .sections
        .iter()
        .map(|s| (s.name.clone(), (s.offset + s.len / 2) as usize))
        .collect();
    spots.push(("header".into(), good.len() - 60));
    for (name, at) in spots {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        std::fs::write(&p, &bad).unwrap();
        expect_corrupt(use_index(&p, d), &name);
    }
    // Lazily checked sections fail on first use, not only in verify().
    let codes = hdr.sections.iter().find(|s| s.name == "codes").unwrap();
    let mut bad = good.clone();
    bad[codes.offset as usize + 3] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    let idx = RecipeIndex::open(&p, Some(ENC)).unwrap();
    expect_corrupt(
        idx.search_ordinals(
            &[0.1; 16],
            5,
            &SearchParams {
                nprobe: Some(8),
                rerank: None,
            },
        )
        .map(|_| ()),
        "codes",
    );
}

const CHILD_ENV: &str = "DISHCAM_RECIPES_CRASH_CHILD";

/// Run only as a child of `killed_build_leaves_previous_index`: builds over the index named in the
/// environment and dies at the stage named there.
#[test]
#[ignore = "helper process for killed_build_leaves_previous_index"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once(':').unwrap();
    let d = 16;
    let n = 20_000;
    let emb = vectors(n, d, 10, 3);
    let items: Vec<IndexItem> = recipes(n)
        .iter()
        .map(|r| IndexItem::from_recipe(r, None, 0))
        .collect();
    let input = IndexInput {
        encoder: "new-encoder",
        dim: d,
        embeddings: &emb,
        items: &items,
        stores: &[],
        dish_queries: &[],
    };
    build_index(
        Path::new(path),
        &input,
        &BuildParams::default(),
        &mut |st| match (mode, st) {
            ("abort", BuildStage::Written { .. }) => std::process::abort(),
            ("hang", BuildStage::Writing { .. }) => {
                println!("CHILD-WRITING");
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
            _ => {}
        },
    )
    .unwrap();
}

#[test]
fn killed_build_leaves_previous_index() {
    let b = build(200, 16, &BuildParams::default());
    let before = std::fs::read(&b.idx).unwrap();
    for mode in ["abort", "hang"] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{mode}:{}", b.idx.display()))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if mode == "hang" {
            // Wait until the child is writing the temp file, then kill it hard.
            use std::io::{BufRead, BufReader};
            let out = child.stdout.take().unwrap();
            let line = BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.contains("CHILD-WRITING"));
            assert!(line.is_some(), "child never started writing");
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "{mode}: child should have died");
        assert_eq!(
            std::fs::read(&b.idx).unwrap(),
            before,
            "{mode}: previous index changed"
        );
        let idx = RecipeIndex::open(&b.idx, Some(ENC)).unwrap();
        assert_eq!(idx.len(), 200);
        idx.verify().unwrap();
    }
    // A completed build does replace it.
    let emb = vectors(10, 16, 2, 5);
    let items: Vec<IndexItem> = recipes(10)
        .iter()
        .map(|r| IndexItem::from_recipe(r, None, 0))
        .collect();
    let input = IndexInput {
        encoder: ENC,
        dim: 16,
        embeddings: &emb,
        items: &items,
        stores: &[],
        dish_queries: &[],
    };
    build_index(&b.idx, &input, &BuildParams::default(), &mut |_| {}).unwrap();
    assert_eq!(RecipeIndex::open(&b.idx, Some(ENC)).unwrap().len(), 10);
}
