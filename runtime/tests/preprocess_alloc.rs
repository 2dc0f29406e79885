//! Steady-state preprocessing does not allocate: a counting global allocator watches
//! `Preprocessor::run` on repeated frames of one size, then after a size change.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dishcam_imageproc::preprocess::Preprocessor;
use dishcam_models::manifest::{ColourOrder, Crop, Interpolation, Layout, Preprocess};

/// Counts allocations made by the thread that has `COUNTING` set, so that the test harness's
/// other threads do not disturb the count.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: AtomicBool = const { AtomicBool::new(false) };
}

fn note_allocation() {
    // `try_with` because the allocator also runs while thread-locals are torn down.
    let counting = COUNTING
        .try_with(|c| c.load(Ordering::Relaxed))
        .unwrap_or(false);
    if counting {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// Safety: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note_allocation();
        // Safety: forwarded with the caller's (valid, non-zero-size) layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        note_allocation();
        // Safety: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        note_allocation();
        // Safety: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // Safety: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    COUNTING.with(|c| c.store(true, Ordering::Relaxed));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.store(false, Ordering::Relaxed));
    after - before
}

fn spec(interpolation: Interpolation) -> Preprocess {
    Preprocess {
        width: 224,
        height: 224,
        crop: Crop::Center { fraction: 0.875 },
        interpolation,
        colour_order: ColourOrder::Rgb,
        range: 255.0,
        mean: [127.0; 3],
        std: [128.0; 3],
    }
}

fn frame(w: u32, h: u32) -> Vec<u8> {
    (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn preprocess_allocates_nothing_after_the_first_frame_of_a_size() {
    for interpolation in [
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::Nearest,
    ] {
        let mut p = Preprocessor::new(&spec(interpolation), Layout::Nchw);
        let mut out = vec![0.0; p.output_len()];
        let small = frame(640, 480);
        let large = frame(1920, 1080);
        let odd = frame(333, 101);
        for (rgb, w, h) in [(&small, 640, 480), (&large, 1920, 1080), (&odd, 333, 101)] {
            p.run(rgb, w, h, &mut out).unwrap();
            let first = out.clone();
            let n = allocations_in(|| {
                for _ in 0..5 {
                    p.run(rgb, w, h, &mut out).unwrap();
                }
            });
            assert_eq!(n, 0, "{interpolation:?} {w}x{h}: {n} allocations in 5 runs");
            assert_eq!(
                out, first,
                "{interpolation:?} {w}x{h}: same frame, same output"
            );
        }
        // Back to the first size: new tables, right output, then allocation-free again.
        let mut again = vec![0.0; p.output_len()];
        Preprocessor::new(&spec(interpolation), Layout::Nchw)
            .run(&small, 640, 480, &mut again)
            .unwrap();
        p.run(&small, 640, 480, &mut out).unwrap();
        assert_eq!(out, again, "{interpolation:?}: output after a size change");
        let n = allocations_in(|| p.run(&small, 640, 480, &mut out).unwrap());
        assert_eq!(
            n, 0,
            "{interpolation:?}: allocations after returning to 640x480"
        );
    }
}
