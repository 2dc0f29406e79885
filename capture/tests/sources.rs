//! Frame sources: synthetic pattern, still files, directories and globs, URI errors, shaping.

use std::path::Path;
use std::time::{Duration, Instant};

use dishcam_capture::{open, Flip, Frame, FrameSource, Next, SourceError, SourceOptions};
use image::{Rgb, RgbImage};

const WAIT: Duration = Duration::from_secs(2);

fn opts() -> SourceOptions {
    SourceOptions::default()
}

/// The next frame, copied out; panics on Timeout/End so tests read linearly.
fn frame(src: &mut dyn FrameSource) -> Frame {
    match src.next_frame(WAIT).unwrap() {
        Next::Frame(f) => f.clone(),
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn is_end(src: &mut dyn FrameSource) -> bool {
    matches!(src.next_frame(WAIT).unwrap(), Next::End)
}

fn err(uri: &str, o: &SourceOptions) -> SourceError {
    match open(uri, o) {
        Ok(s) => panic!("{uri} opened as {}", s.describe()),
        Err(e) => e,
    }
}

/// A `w` x `h` PNG whose pixel (x, y) is (x, y, tag).
fn write_png(path: &Path, w: u32, h: u32, tag: u8) {
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, tag]))
        .save(path)
        .unwrap();
}

#[test]
fn synthetic_sizes_seq_and_end() {
    let mut src = open("synthetic://?fps=1000&size=32x24&frames=3", &opts()).unwrap();
    assert_eq!(src.fps_hint(), Some(1000.0));
    assert!(src.describe().contains("32x24"), "{}", src.describe());
    for seq in 0..3 {
        let f = frame(src.as_mut());
        assert_eq!((f.width, f.height, f.seq), (32, 24, seq));
        assert_eq!(f.rgb.len(), 32 * 24 * 3);
    }
    assert!(is_end(src.as_mut()));
    assert!(is_end(src.as_mut()));
}

#[test]
fn synthetic_is_deterministic_moves_and_reuses_its_buffer() {
    let uri = "synthetic://?fps=1000&size=40x30&frames=4";
    let mut a = open(uri, &opts()).unwrap();
    let mut b = open(uri, &opts()).unwrap();
    let mut ptr = None;
    let mut previous: Option<Vec<u8>> = None;
    for _ in 0..4 {
        let (fa_rgb, fa_ptr) = match a.next_frame(WAIT).unwrap() {
            Next::Frame(f) => (f.rgb.clone(), f.rgb.as_ptr() as usize),
            other => panic!("{other:?}"),
        };
        assert_eq!(fa_rgb, frame(b.as_mut()).rgb, "same seq, same pixels");
        assert_eq!(
            *ptr.get_or_insert(fa_ptr),
            fa_ptr,
            "frame buffer reallocated"
        );
        if let Some(p) = &previous {
            assert_ne!(p, &fa_rgb, "pattern does not move");
        }
        previous = Some(fa_rgb);
    }
}

#[test]
fn synthetic_scenes_switch_every_k_frames() {
    let mut src = open(
        "synthetic://?fps=1000&size=64x48&frames=6&scene_every=2",
        &opts(),
    )
    .unwrap();
    let frames: Vec<Frame> = (0..6).map(|_| frame(src.as_mut())).collect();
    let diff = |a: &Frame, b: &Frame| {
        a.rgb
            .iter()
            .zip(&b.rgb)
            .map(|(x, y)| x.abs_diff(*y) as u64)
            .sum::<u64>()
    };
    let within = diff(&frames[0], &frames[1]);
    let across = diff(&frames[1], &frames[2]);
    assert!(
        across > 4 * within,
        "within scene {within}, across {across}"
    );
    assert!(diff(&frames[3], &frames[4]) > 4 * diff(&frames[2], &frames[3]));
    assert_ne!(frames[0].rgb, frames[4].rgb);
}

#[test]
fn synthetic_pacing_and_timeout() {
    let mut src = open("synthetic://?fps=100&size=16x16&frames=10", &opts()).unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        frame(src.as_mut());
    }
    assert!(
        start.elapsed() >= Duration::from_millis(80),
        "{:?}",
        start.elapsed()
    );

    let mut slow = open("synthetic://?fps=2&size=16x16", &opts()).unwrap();
    frame(slow.as_mut());
    assert!(matches!(
        slow.next_frame(Duration::from_millis(10)).unwrap(),
        Next::Timeout
    ));
}

#[test]
fn synthetic_fps_falls_back_to_options() {
    let o = SourceOptions {
        fps: Some(12.5),
        ..opts()
    };
    let src = open("synthetic://?size=8x8", &o).unwrap();
    assert_eq!(src.fps_hint(), Some(12.5));
    assert_eq!(
        open("synthetic://", &opts()).unwrap().fps_hint(),
        Some(30.0)
    );
}

#[test]
fn file_gives_one_frame_then_end_or_loops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.png");
    write_png(&path, 7, 5, 9);
    let uri = format!("file://{}", path.display());
    let mut src = open(&uri, &opts()).unwrap();
    let f = frame(src.as_mut());
    assert_eq!((f.width, f.height, f.seq), (7, 5, 0));
    assert_eq!(f.pixel(3, 2), Some([3, 2, 9]));
    assert!(is_end(src.as_mut()));

    let looping = SourceOptions {
        loop_: true,
        ..opts()
    };
    let mut src = open(path.to_str().unwrap(), &looping).unwrap();
    for seq in 0..3 {
        let f = frame(src.as_mut());
        assert_eq!((f.seq, f.pixel(6, 4)), (seq, Some([6, 4, 9])));
    }
}

#[test]
fn dir_reads_sorted_skips_junk_and_globs() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("b.png"), 4, 4, 2);
    write_png(&dir.path().join("a.png"), 4, 4, 1);
    write_png(&dir.path().join("c.jpg.png"), 4, 4, 3);
    std::fs::write(dir.path().join("bb.png"), b"not an image").unwrap();
    std::fs::write(dir.path().join(".hidden.png"), b"ignored").unwrap();

    let mut src = open(&format!("dir://{}", dir.path().display()), &opts()).unwrap();
    let tags: Vec<u8> = std::iter::from_fn(|| match src.next_frame(WAIT).unwrap() {
        Next::Frame(f) => Some(f.pixel(0, 0).unwrap()[2]),
        _ => None,
    })
    .collect();
    assert_eq!(tags, [1, 2, 3]);
    assert_eq!(src.skipped(), 1);
    assert!(is_end(src.as_mut()));

    let glob = format!("dir://{}/?.png", dir.path().display());
    let mut src = open(&glob, &opts()).unwrap();
    assert_eq!(frame(src.as_mut()).pixel(0, 0).unwrap()[2], 1);
    assert_eq!(frame(src.as_mut()).pixel(0, 0).unwrap()[2], 2);
    assert!(is_end(src.as_mut()));
    assert_eq!(src.skipped(), 0);

    let looping = SourceOptions {
        loop_: true,
        ..opts()
    };
    let bare_glob = format!("{}/c*", dir.path().display());
    let mut src = open(&bare_glob, &looping).unwrap();
    assert_eq!(frame(src.as_mut()).seq, 0);
    assert_eq!(frame(src.as_mut()).seq, 1);

    let e = err(&format!("dir://{}/*.jpg", dir.path().display()), &opts());
    assert!(matches!(e, SourceError::NoFiles { .. }), "{e}");
}

#[test]
fn dir_of_only_junk_ends_even_when_looping() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.jpg"), b"junk").unwrap();
    let looping = SourceOptions {
        loop_: true,
        ..opts()
    };
    let mut src = open(dir.path().to_str().unwrap(), &looping).unwrap();
    assert!(is_end(src.as_mut()));
    assert_eq!(src.skipped(), 1);
}

#[test]
fn uri_errors_name_the_input_and_the_fix() {
    let e = err("synthetc://?fps=30", &opts());
    assert!(matches!(e, SourceError::UnknownScheme { .. }), "{e}");
    let msg = e.to_string();
    for scheme in [
        "synthetic://",
        "file://",
        "dir://",
        "v4l2://",
        "csi://",
        "gst://",
    ] {
        assert!(msg.contains(scheme), "{msg}");
    }

    #[cfg(not(feature = "camera-v4l"))]
    {
        let e = err("v4l2:///dev/video0", &opts());
        assert!(
            matches!(
                e,
                SourceError::NotBuilt {
                    feature: "camera-v4l",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("built without camera-v4l; rebuild with --features camera-v4l"),
            "{e}"
        );
    }
    #[cfg(not(feature = "camera-gst"))]
    for uri in ["csi://0", "gst://videotestsrc ! appsink"] {
        let e = err(uri, &opts());
        assert!(
            e.to_string()
                .contains("built without camera-gst; rebuild with --features camera-gst"),
            "{e}"
        );
    }
    #[cfg(feature = "camera-v4l")]
    {
        let e = err("v4l2:///dev/video-missing", &opts());
        assert!(matches!(e, SourceError::Capture { .. }), "{e}");
        assert!(e.to_string().contains("ls /dev/video*"), "{e}");
    }
    #[cfg(feature = "camera-gst")]
    {
        // No Jetson here: nvarguscamerasrc is missing, and the error says where csi:// works.
        let e = err("csi://0", &opts());
        assert!(matches!(e, SourceError::Capture { .. }), "{e}");
        assert!(e.to_string().contains("only on a Jetson"), "{e}");
    }
    let e = err("csi://front", &opts());
    assert!(matches!(e, SourceError::BadParam { .. }), "{e}");

    let e = err("file://clip.mp4", &opts());
    #[cfg(not(feature = "camera-gst"))]
    {
        assert!(
            matches!(
                e,
                SourceError::NotBuilt {
                    feature: "camera-gst",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("--features camera-gst"), "{e}");
        assert!(e.to_string().contains("dir://frames"), "{e}");
    }
    #[cfg(feature = "camera-gst")]
    assert!(matches!(e, SourceError::NotFound { .. }), "{e}");

    let e = err("synthetic://?fps=abc", &opts());
    assert!(e.to_string().contains("fps=`abc`"), "{e}");
    assert!(e.to_string().contains("frames per second"), "{e}");
    let e = err("synthetic://?size=10", &opts());
    assert!(e.to_string().contains("size=`10`"), "{e}");
    assert!(e.to_string().contains("WIDTHxHEIGHT"), "{e}");
    let e = err("synthetic://?colour=red", &opts());
    assert!(e.to_string().contains("fps, size"), "{e}");

    let e = err("file://no/such/photo.jpg", &opts());
    assert!(matches!(e, SourceError::NotFound { .. }), "{e}");
    assert!(
        e.to_string().starts_with("no/such/photo.jpg: no such file"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let e = err(bad.to_str().unwrap(), &opts());
    assert!(matches!(e, SourceError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("bad.jpg"), "{e}");

    let tiny = SourceOptions {
        max_pixels: 100,
        ..opts()
    };
    let e = err("synthetic://?size=20x20", &tiny);
    assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");
    let zero_fps = SourceOptions {
        fps: Some(0.0),
        ..opts()
    };
    assert!(matches!(
        err("synthetic://", &zero_fps),
        SourceError::BadOption { option: "fps", .. }
    ));
}

#[test]
fn resize_and_flip() {
    let o = SourceOptions {
        width: Some(20),
        ..opts()
    };
    let mut src = open("synthetic://?fps=1000&size=40x30&frames=2", &o).unwrap();
    let p0 = match src.next_frame(WAIT).unwrap() {
        Next::Frame(f) => {
            assert_eq!((f.width, f.height), (20, 15));
            assert_eq!(f.rgb.len(), 20 * 15 * 3);
            f.rgb.as_ptr() as usize
        }
        other => panic!("{other:?}"),
    };
    match src.next_frame(WAIT).unwrap() {
        Next::Frame(f) => assert_eq!(f.rgb.as_ptr() as usize, p0, "resized buffer reallocated"),
        other => panic!("{other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.png");
    write_png(&path, 6, 4, 5);
    let file = path.to_str().unwrap();
    let with = |flip, width, height| SourceOptions {
        flip,
        width,
        height,
        ..opts()
    };
    let f = frame(
        open(file, &with(Flip::Horizontal, None, None))
            .unwrap()
            .as_mut(),
    );
    assert_eq!(f.pixel(0, 1), Some([5, 1, 5]));
    let f = frame(
        open(file, &with(Flip::Vertical, None, None))
            .unwrap()
            .as_mut(),
    );
    assert_eq!(f.pixel(2, 0), Some([2, 3, 5]));
    let f = frame(open(file, &with(Flip::Both, None, None)).unwrap().as_mut());
    assert_eq!(f.pixel(0, 0), Some([5, 3, 5]));
    let f = frame(
        open(file, &with(Flip::None, None, Some(8)))
            .unwrap()
            .as_mut(),
    );
    assert_eq!((f.width, f.height), (12, 8));
    let f = frame(
        open(file, &with(Flip::Horizontal, Some(3), Some(2)))
            .unwrap()
            .as_mut(),
    );
    assert_eq!((f.width, f.height), (3, 2));
    // Mirrored: the right column (large x) is now on the left.
    assert!(
        f.pixel(0, 0).unwrap()[0] > f.pixel(2, 0).unwrap()[0],
        "{:?}",
        f.rgb
    );
}
