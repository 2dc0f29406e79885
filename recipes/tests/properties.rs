//! Property tests: quantisation error bound, top-k against a sort, and no panics on arbitrary text.

use std::io::Read;

use dishcam_recipes::import::{extract_jsonld_blocks, parse_iso8601_minutes, Utf8RepairReader};
use dishcam_recipes::index::kernels::{dot_f32, quantise_i8, scan_i8};
use dishcam_recipes::index::{RecipeIndex, SearchParams};
use dishcam_recipes::{
    build_index, normalise_ingredient, BuildParams, ExcludeFilter, IndexInput, IndexItem,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn int8_round_trip_within_half_a_step(x in prop::collection::vec(-10.0f32..10.0, 1..200)) {
        let mut q = vec![0i8; x.len()];
        let s = quantise_i8(&x, &mut q);
        for (v, c) in x.iter().zip(&q) {
            prop_assert!((v - *c as f32 * s).abs() <= s * 0.5 + 1e-6);
        }
        let mut dot = [0i32];
        scan_i8(&q, &q, &mut dot);
        let naive: i32 = q.iter().map(|&c| c as i32 * c as i32).sum();
        prop_assert_eq!(dot[0], naive);
    }

    #[test]
    fn full_probe_search_equals_sorting(seed in 0u64..1000, n in 1usize..300, k in 1usize..12) {
        let d = 8;
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5 };
        let emb: Vec<f32> = (0..n * d).map(|_| rnd()).collect();
        let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
        let items: Vec<IndexItem> = (0..n).map(|i| IndexItem { id: format!("r{i}"), title: String::new(), ingredients: vec![], food101_class: None, store: None, offset: 0 }).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.idx");
        let input = IndexInput { encoder: "e", dim: d, embeddings: &emb, items: &items, stores: &[], dish_queries: &[] };
        build_index(&p, &input, &BuildParams { nlist: 4.min(n), ..Default::default() }, &mut |_| {}).unwrap();
        let idx = RecipeIndex::open(&p, Some("e")).unwrap();
        let qn = dot_f32(&q, &q).sqrt();
        let mut want: Vec<(f32, u32)> = emb.chunks_exact(d).enumerate().map(|(i, r)| (dot_f32(r, &q) / qn / dot_f32(r, r).sqrt(), i as u32)).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got = idx.search(&q, k, &ExcludeFilter::default(), &SearchParams { nprobe: Some(4), rerank: Some(n) }).unwrap();
        prop_assert_eq!(got.len(), k.min(n));
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g.score - w.0).abs() < 1e-4, "{} vs {}", g.score, w.0);
        }
    }

    #[test]
    fn text_helpers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = normalise_ingredient(&s);
        let _ = parse_iso8601_minutes(&s);
        let _ = extract_jsonld_blocks(&s);
        let _ = ExcludeFilter::new(&[s.as_ref(), "dairy"]).excluded_by(&[normalise_ingredient(&s)]);
        let mut out = String::new();
        Utf8RepairReader::new(&bytes[..]).read_to_string(&mut out).unwrap();
        if let Ok(valid) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(out.as_str(), valid);
        }
    }
}
