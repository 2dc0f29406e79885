//! No heap allocation per frame in steady state: the real `lite` pack (EfficientNet-Lite0 and
//! its heads) on onnxruntime and on OpenVINO (SKIPPED, loudly, without its library), in the live
//! pipeline, counted by a global allocator.
//!
//! Two paths: the Food-101 head with the pack's no-dish check on frames that show no dish (the
//! check's encoder run, the verdict, smoothing), and a head without a photo preparation with the
//! check off (encoder, head, softmax, smoothing). A frame that shows a dish to a head with a
//! photo preparation allocates for that preparation (a 64 px copy and a JPEG round trip).
//!
//! The allocator sees Rust allocations only: onnxruntime's and OpenVINO's own (C++) heaps are not counted here
//! (its arena is planned once per session; watch RSS in the soak run for the native side).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use dishcam_capture::{self as source, SourceOptions};
use dishcam_models::{Home, Pack, Precision};
use dishcam_runtime::backend::{self, BackendKind, SessionOptions};
use dishcam_runtime::pipeline::{Pipeline, PipelineConfig};
use dishcam_runtime::{DishClassifier, DishOptions, LoadOptions};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The dish chain every front end runs on `kind`, with `head`, and the no-dish check when `check`.
fn lite_classifier(
    kind: BackendKind,
    precision: Precision,
    head: &str,
    check: bool,
) -> DishClassifier {
    let home = Home::from_env().expect("a home directory");
    let pack = Pack::open("lite", &home)
        .unwrap_or_else(|e| panic!("{e}\nthis test needs the lite pack: run ./scripts/test.sh"));
    let backend = backend::backend(kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let opts = LoadOptions {
        precision,
        session: SessionOptions {
            threads: Some(1),
            ..Default::default()
        },
    };
    DishClassifier::load(
        &pack,
        backend.into(),
        &opts,
        &DishOptions {
            head: Some(head),
            no_dish_check: check,
            ..DishOptions::default()
        },
    )
    .unwrap()
}

/// Allocations made while the pipeline classifies `frames` frames after `warmup` frames.
fn allocations_per_frames(
    dish: DishClassifier,
    warmup: usize,
    frames: usize,
) -> (u64, dishcam_runtime::pipeline::Counts) {
    let src = source::open(
        "synthetic://?fps=1000&size=640x480",
        &SourceOptions::default(),
    )
    .unwrap();
    let config = PipelineConfig {
        backpressure: true,
        ..Default::default()
    };
    let p = Pipeline::start(src, Box::new(dish), config).unwrap();
    for _ in 0..warmup {
        p.recv().expect("a frame");
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..frames {
        p.recv().expect("a frame");
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    let counts = p.stop().unwrap();
    (after - before, counts)
}

#[test]
fn steady_state_frames_allocate_nothing_fp32_and_int8() {
    for kind in [BackendKind::Onnxruntime, BackendKind::Openvino] {
        if kind == BackendKind::Openvino {
            if let Err(e) = backend::backend(kind) {
                eprintln!("SKIPPED (openvino): {e}");
                continue;
            }
        }
        for precision in [Precision::Fp32, Precision::Int8] {
            // Test bars show no dish: every frame goes through the check and stops there.
            let (n, counts) =
                allocations_per_frames(lite_classifier(kind, precision, "food101", true), 20, 100);
            assert_eq!(
                n, 0,
                "{kind} {precision}, food101 + check: {n} allocations in 100 frames"
            );
            assert!(counts.no_dish >= 100, "{counts:?}");
            // The head path: encoder, head, softmax, smoothing.
            let (n, counts) = allocations_per_frames(
                lite_classifier(kind, precision, "imagenet", false),
                20,
                100,
            );
            assert_eq!(
                n, 0,
                "{kind} {precision}, imagenet head: {n} allocations in 100 frames"
            );
            assert_eq!(counts.no_dish, 0, "{counts:?}");
        }
    }
}
