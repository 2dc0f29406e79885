//! GStreamer sources for real (feature `camera-gst`): `gst://` pipelines from `videotestsrc` and
//! video files written here by a GStreamer pipeline. Needs gstreamer1.0-plugins-base and -good
//! (scripts/setup.sh). CSI capture needs a Jetson and is not run here.
#![cfg(feature = "camera-gst")]

use std::path::Path;
use std::time::{Duration, Instant};

use dishcam_capture::{open, Flip, FrameSource, Next, SourceError, SourceOptions};
use gstreamer as gst;
use gstreamer::prelude::*;

const WAIT: Duration = Duration::from_secs(10);

/// Reads frames until End, checking each one's size and number; returns the count.
fn count_frames(src: &mut dyn FrameSource, size: (u32, u32)) -> u64 {
    let mut n = 0;
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stream did not end"
        );
        match src.next_frame(WAIT).unwrap() {
            Next::Frame(f) => {
                assert_eq!((f.width, f.height), size);
                assert_eq!(f.rgb.len(), (size.0 * size.1 * 3) as usize);
                assert_eq!(f.seq, n);
                n += 1;
            }
            Next::Timeout => panic!("timeout after {n} frames"),
            Next::End => return n,
        }
    }
}

/// Runs a GStreamer pipeline to the end (used to write test videos).
fn run(pipeline: &str) {
    gst::init().unwrap();
    let p = gst::parse::launch(pipeline).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline did not finish");
    p.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{pipeline}: {}", e.error());
    }
}

/// A 20-frame 160x120 MJPEG AVI.
fn write_avi(path: &Path, frames: u32) {
    run(&format!(
        "videotestsrc num-buffers={frames} pattern=smpte ! video/x-raw,width=160,height=120,framerate=10/1 ! \
         jpegenc ! avimux ! filesink location=\"{}\"",
        path.display()
    ));
}

#[test]
fn videotestsrc_pipeline_gives_30_frames_then_end() {
    let mut src = open(
        "gst://videotestsrc num-buffers=30 ! video/x-raw,width=320,height=240 ! appsink",
        &SourceOptions::default(),
    )
    .unwrap();
    assert_eq!(count_frames(src.as_mut(), (320, 240)), 30);
    assert!(matches!(src.next_frame(WAIT).unwrap(), Next::End));
    assert!(
        src.describe().contains("videoconvert"),
        "{}",
        src.describe()
    );
}

#[test]
fn pixels_are_rgb_and_shaping_applies() {
    // videotestsrc pattern=red is pure red; the output is resized and mirrored.
    let o = SourceOptions {
        width: Some(40),
        flip: Flip::Horizontal,
        ..SourceOptions::default()
    };
    let mut src = open(
        "gst://videotestsrc num-buffers=2 pattern=red ! video/x-raw,width=321,height=99",
        &o,
    )
    .unwrap();
    let Next::Frame(f) = src.next_frame(WAIT).unwrap() else {
        panic!("no frame")
    };
    // 321 wide RGB rows are padded to 964 bytes by GStreamer; the frame must not be sheared.
    assert_eq!((f.width, f.height), (40, 12));
    for y in [0, 6, 11] {
        for x in [0, 20, 39] {
            let p = f.pixel(x, y).unwrap();
            assert!(p[0] > 240 && p[1] < 15 && p[2] < 15, "({x},{y}) = {p:?}");
        }
    }
}

#[test]
fn video_file_reads_back_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.avi");
    write_avi(&clip, 20);
    let uri = format!("file://{}", clip.display());
    let mut src = open(&uri, &SourceOptions::default()).unwrap();
    assert_eq!(count_frames(src.as_mut(), (160, 120)), 20);
    assert_eq!(src.skipped(), 0);

    // Looping rewinds at the end.
    let looping = SourceOptions {
        loop_: true,
        ..SourceOptions::default()
    };
    let mut src = open(&uri, &looping).unwrap();
    for i in 0..45 {
        match src.next_frame(WAIT).unwrap() {
            Next::Frame(f) => assert_eq!(f.seq, i),
            other => panic!("frame {i}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_frames_in_a_video_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("broken.avi");
    write_avi(&clip, 20);
    // Wipe the JPEG headers of a few frames in the middle (each frame starts with FF D8 FF).
    let mut bytes = std::fs::read(&clip).unwrap();
    let starts: Vec<usize> = bytes
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 20);
    for &s in &starts[8..11] {
        bytes[s..s + 200].fill(0);
    }
    std::fs::write(&clip, bytes).unwrap();
    let mut src = open(
        &format!("file://{}", clip.display()),
        &SourceOptions::default(),
    )
    .unwrap();
    let n = count_frames(src.as_mut(), (160, 120));
    assert!(
        n + src.skipped() >= 17 && n < 20,
        "{n} frames, {} skipped",
        src.skipped()
    );
}

#[test]
fn live_source_times_out_between_frames() {
    let mut src = open(
        "gst://videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=2/1 ! appsink",
        &SourceOptions::default(),
    )
    .unwrap();
    assert!(matches!(src.next_frame(WAIT).unwrap(), Next::Frame(_)));
    let t = Instant::now();
    assert!(matches!(
        src.next_frame(Duration::from_millis(50)).unwrap(),
        Next::Timeout
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let o = SourceOptions::default();
    let err = |uri: &str| match open(uri, &o) {
        Ok(s) => panic!("{uri} opened as {}", s.describe()),
        Err(e) => e,
    };
    let e = err("gst://nosuchelement ! appsink");
    assert!(matches!(e, SourceError::Capture { .. }), "{e}");
    assert!(e.to_string().contains("nosuchelement"), "{e}");
    assert!(e.to_string().contains("gst-launch-1.0"), "{e}");

    let e = err("file://no/such/clip.mp4");
    assert!(matches!(e, SourceError::NotFound { .. }), "{e}");

    // A file named like a video that is not one fails at open, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let t = Instant::now();
    let e = err(&format!("file://{}", junk.display()));
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(matches!(e, SourceError::Capture { .. }), "{e}");
    assert!(e.to_string().contains("junk.mp4"), "{e}");
    assert!(e.to_string().contains("not a video"), "{e}");

    // A pipeline that fails while running: the error is GStreamer's, and it is returned again.
    let mut src = open(
        "gst://videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48 ! identity error-after=5 ! appsink",
        &o,
    )
    .unwrap();
    let mut frames = 0;
    let e = loop {
        match src.next_frame(WAIT) {
            Ok(Next::Frame(_)) => frames += 1,
            Ok(other) => panic!("expected an error, got {other:?} after {frames} frames"),
            Err(e) => break e,
        }
    };
    assert!(frames <= 5, "{frames}");
    assert!(matches!(e, SourceError::Capture { .. }), "{e}");
    assert!(e.to_string().contains("identity"), "{e}");
    assert_eq!(src.next_frame(WAIT).unwrap_err().to_string(), e.to_string());
}
