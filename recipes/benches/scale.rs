//! Scale benchmark of the recipe index: 10k / 100k / 1M synthetic recipes drawn from a mixture fitted to
//! real embeddings, queried with held-out real rows (see `dishcam_recipes::scale`).
//!
//! Environment:
//! - `DISHCAM_REAL_EMBEDDINGS`: `.npy` (2-D f32/f64) or raw f32 file of real recipe embeddings. Without
//!   it a STAND-IN matrix (unit vectors around random centres, not real data) is used and said so.
//! - `DISHCAM_REAL_EMBEDDINGS_DIM`: dimension of a raw f32 file (default 384).
//! - `DISHCAM_STANDIN_COS`: cosine of stand-in rows to their centre (default 0.5).
//! - `DISHCAM_SCALE_SIZES`: comma-separated sizes (default `10000,100000,1000000`).
//! - `DISHCAM_SCALE_NPROBES`: comma-separated nprobe values to sweep (default: the index default).
//! - `DISHCAM_SCALE_DIR`: where the index files and `scale-results.json` go (default
//!   `$CARGO_TARGET_DIR/recipes-scale` or `target/recipes-scale`).
//!
//! Prints the table (build s, bytes, resident MiB, p50/p99 ms, recall@10), then runs criterion's
//! per-query timing on each index.

use std::path::PathBuf;

use criterion::Criterion;
use dishcam_recipes::index::{RecipeIndex, SearchParams};
use dishcam_recipes::scale::{
    format_row, read_embeddings, run_scale, split_holdout, standin_embeddings, ScaleConfig,
};
use dishcam_recipes::BuildParams;

fn list(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect()
}

fn main() {
    let (real, dim, source) = match std::env::var_os("DISHCAM_REAL_EMBEDDINGS") {
        Some(p) => {
            let raw_dim = std::env::var("DISHCAM_REAL_EMBEDDINGS_DIM")
                .ok()
                .and_then(|s| s.parse().ok())
                .or(Some(384));
            let (v, d) = read_embeddings(PathBuf::from(&p).as_path(), raw_dim)
                .unwrap_or_else(|e| panic!("{e}"));
            (
                v,
                d,
                format!("real embeddings from {}", PathBuf::from(p).display()),
            )
        }
        None => {
            let cos: f32 = std::env::var("DISHCAM_STANDIN_COS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.5);
            (
                standin_embeddings(5000, 384, 400, cos, 1),
                384,
                format!("STAND-IN embeddings (5000 unit vectors around 400 random centres at cosine {cos}; NOT real data, numbers are not the real ones)"),
            )
        }
    };
    println!("scale benchmark input: {source}");
    let dir = std::env::var_os("DISHCAM_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"))
                .join("recipes-scale")
        });
    let cfg = ScaleConfig {
        sizes: list("DISHCAM_SCALE_SIZES", "10000,100000,1000000"),
        components: 1000,
        nprobes: list("DISHCAM_SCALE_NPROBES", ""),
        rerank: None,
        timed_searches: 2000,
        dir: dir.clone(),
        seed: 42,
        build: BuildParams::default(),
    };
    let rows =
        run_scale(&real, dim, &cfg, &mut |l| eprintln!("{l}")).unwrap_or_else(|e| panic!("{e}"));
    println!("\n# recipe index scale results ({source})");
    for r in &rows {
        println!("{}", format_row(r));
    }
    let json = serde_json::json!({ "input": source, "rows": rows });
    let out = dir.join("scale-results.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    println!("results written to {}", out.display());

    // The same held-out rows run_scale queried with (never used to fit the mixture).
    let (_, held_out) = split_holdout(&real, dim, cfg.seed);
    let queries: Vec<f32> = held_out.iter().take(dim * 64).copied().collect();
    let nq = queries.len() / dim;
    let mut c = Criterion::default().sample_size(20).configure_from_args();
    let mut seen = std::collections::HashSet::new();
    for r in &rows {
        if !seen.insert(r.n) {
            continue;
        }
        let idx = RecipeIndex::open(&r.index, Some("scale-benchmark")).unwrap();
        let mut i = 0;
        c.bench_function(&format!("recipes_query_top10/{}", r.n), |b| {
            b.iter(|| {
                let q = &queries[(i % nq) * dim..(i % nq + 1) * dim];
                i += 1;
                idx.search_ordinals(q, 10, &SearchParams::default())
                    .unwrap()
            })
        });
    }
    c.final_summary();
}
