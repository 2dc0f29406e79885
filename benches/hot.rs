//! criterion benches of the per-frame hot pieces: preprocessing camera-sized frames to the
//! encoder input, tokenisation, the Food-101 head, top-k recipe search, and the int8 and f32
//! dot products under the recipe index.
//!
//! The pieces that need the `lite` pack (tokeniser, head, recipe index) read the installed one
//! (`dishcam models pull lite`) and print a SKIPPED line when it is absent.
//!
//! Run: `cargo bench --bench hot` (add `-- preprocess` to run one group).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dishcam_capture::render_pattern;
use dishcam_imageproc::preprocess::Preprocessor;
use dishcam_models::{Home, Pack};
use dishcam_recipes::index::kernels::{dot_f32, quantise_i8, scan_i8};
use dishcam_recipes::index::SearchParams;
use dishcam_recipes::normalize::ExcludeFilter;
use dishcam_runtime::backend::{self, BackendChoice};
use dishcam_runtime::head::HeadModel;
use dishcam_runtime::tokenize::TextTokenizer;
use dishcam_runtime::LoadOptions;

fn lite() -> Option<Pack> {
    let pack = Home::from_env()
        .ok()
        .and_then(|home| Pack::open("lite", &home).ok());
    if pack.is_none() {
        eprintln!("SKIPPED: the lite pack is not installed (run `dishcam models pull lite`)");
    }
    pack
}

/// A deterministic pseudo-random vector in [-1, 1).
fn vector(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn preprocess(c: &mut Criterion) {
    let Some(pack) = lite() else { return };
    let enc = pack
        .manifest
        .image_encoder
        .as_ref()
        .expect("an image encoder");
    let mut pre = Preprocessor::new(&enc.preprocess, enc.layout);
    let mut out = vec![0f32; pre.output_len()];
    let mut g = c.benchmark_group("preprocess");
    for (w, h) in [(640u32, 480u32), (1920, 1080)] {
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        render_pattern(3, 1, w, h, &mut rgb);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("rgb_to_224", format!("{w}x{h}")),
            &rgb,
            |b, rgb| b.iter(|| pre.run(black_box(rgb), w, h, &mut out).unwrap()),
        );
    }
    g.finish();
}

fn tokenise(c: &mut Criterion) {
    let Some(pack) = lite() else { return };
    let enc = pack.manifest.text_encoder.as_ref().expect("a text encoder");
    let bytes = pack
        .read_verified("text_encoder.tokenizer", &enc.tokenizer)
        .unwrap();
    let tok = TextTokenizer::from_bytes(&bytes, "tokenizer.json", enc.max_length).unwrap();
    let mut g = c.benchmark_group("tokenise");
    for text in [
        "pho",
        "grandma's slow-cooked beef pho with star anise, charred onion and fresh herbs",
    ] {
        g.bench_with_input(BenchmarkId::new("minilm", text.len()), text, |b, t| {
            b.iter(|| tok.encode(black_box(t)).unwrap())
        });
    }
    g.finish();
}

fn head(c: &mut Criterion) {
    let Some(pack) = lite() else { return };
    let head = pack.manifest.head("food101").expect("the food101 head");
    let (backend, note) = backend::open(BackendChoice::Auto).unwrap();
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let mut opts = LoadOptions::default();
    opts.session.threads = Some(1);
    let mut model = HeadModel::load(&pack, head, backend.as_ref(), &opts).unwrap();
    let x = vector(model.dim(), 7);
    c.bench_function(&format!("head/food101/{}", backend.kind()), |b| {
        b.iter(|| model.logits(black_box(&x)).unwrap())
    });
}

fn recipe_search(c: &mut Criterion) {
    let Some(pack) = lite() else { return };
    // Where `dishcam recipes index build` writes the index (the pack's overlay).
    let path = pack.overlay_dir.join("recipes").join("recipes.idx");
    let index = match dishcam_recipes::RecipeIndex::open(&path, None) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("SKIPPED recipe search: {e} (run `dishcam recipes index build`)");
            return;
        }
    };
    let mut q = vector(index.dim(), 11);
    dishcam_recipes::index::kernels::normalise(&mut q);
    let none = ExcludeFilter::new::<&str>(&[]);
    let excl = ExcludeFilter::new(&["peanut", "shellfish"]);
    let mut g = c.benchmark_group("recipe_search");
    g.bench_function(format!("top10/ivf-int8/{}", index.len()), |b| {
        b.iter(|| index.search(black_box(&q), 10, &none, &SearchParams::default()))
    });
    g.bench_function(format!("top10/exclude2/{}", index.len()), |b| {
        b.iter(|| index.search(black_box(&q), 10, &excl, &SearchParams::default()))
    });
    g.bench_function(format!("top10/exact/{}", index.len()), |b| {
        b.iter(|| index.search_exact(black_box(&q), 10, &none))
    });
    g.bench_function("dish_recipes/pho", |b| {
        b.iter(|| index.dish_recipes(black_box("pho"), 3, &none))
    });
    g.finish();
}

fn dot_products(c: &mut Criterion) {
    const DIM: usize = 384;
    const ROWS: usize = 10_000;
    let q = vector(DIM, 1);
    let rows = vector(DIM * ROWS, 2);
    let mut qi = vec![0i8; DIM];
    quantise_i8(&q, &mut qi);
    let mut codes = vec![0i8; DIM * ROWS];
    for (r, c) in rows.chunks(DIM).zip(codes.chunks_mut(DIM)) {
        quantise_i8(r, c);
    }
    let mut out = vec![0i32; ROWS];
    let mut g = c.benchmark_group("dot");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("scan_i8/384x10k", |b| {
        b.iter(|| scan_i8(black_box(&qi), black_box(&codes), &mut out))
    });
    g.bench_function("dot_f32/384x10k", |b| {
        b.iter(|| {
            rows.chunks(DIM)
                .map(|r| dot_f32(black_box(&q), r))
                .sum::<f32>()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    preprocess,
    tokenise,
    head,
    recipe_search,
    dot_products
);
criterion_main!(benches);
