//! `dishcam calibrate` through the binary: INT8 variants land in the pack's overlay, verify, and
//! serve `classify --precision int8`; bad input fails with one clear line and leaves nothing
//! half-written.

mod common;

use std::path::{Path, PathBuf};

use common::*;

type Env = CliEnv;

trait Overlay {
    fn overlay_toml(&self) -> Option<String>;
}

impl Overlay for CliEnv {
    fn overlay_toml(&self) -> Option<String> {
        let overlays = self.home.path().join("overlays");
        let dir = std::fs::read_dir(&overlays).ok()?.flatten().next()?.path();
        std::fs::read_to_string(dir.join("overlay.toml")).ok()
    }
}

/// `n` small photos of varied colour and texture (a calibration set needs no labels).
fn photos(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let (r, g, b) = (
            (i * 37 % 256) as u8,
            (i * 91 % 256) as u8,
            (i * 53 % 256) as u8,
        );
        let period = 3 + i % 7;
        let img = image::RgbImage::from_fn(80, 64, |x, y| {
            let s = if (x / period + y / (period + 1)) % 2 == 0 {
                40
            } else {
                0
            };
            image::Rgb([r.saturating_add(s), g, b.saturating_sub(s)])
        });
        img.save(dir.join(format!("frame_{i:03}.png"))).unwrap();
    }
}

#[test]
fn calibrate_adds_int8_variants_that_verify_and_classify() {
    let env = Env::new();
    let frames = env.data.path().join("frames");
    photos(&frames, 60);
    // Two files that are not images: skipped and counted, not fatal.
    std::fs::write(frames.join("notes.txt"), "not a photo").unwrap();
    std::fs::write(frames.join("broken.jpg"), [0xff, 0xd8, 0xff, 0x00]).unwrap();
    let o = env.run(&[
        "calibrate",
        "--images",
        frames.to_str().unwrap(),
        "--samples",
        "40",
        "--validate",
        "10",
        "--keep-fp32",
        "none",
        "--compare",
        "max",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["method"], "entropy");
    assert_eq!(r["calibration_photos"], 40);
    let agreement = r["agreement"].as_array().unwrap();
    assert_eq!(agreement.len(), 2, "entropy and max: {r}");
    for a in agreement {
        let cos = a["cosine_mean"].as_f64().unwrap();
        assert!(cos > 0.9 && cos <= 1.0 + 1e-9, "cosine {cos}: {a}");
        assert!(a["photos"].as_u64().unwrap() > 0);
        // The lite pack's Food-101 head scores every photo, and each falls in exactly one band
        // of fp32's margin.
        assert_eq!(r["head"], "food101", "{r}");
        let bands = a["by_margin"].as_array().unwrap();
        assert_eq!(bands.len(), 4, "{a}");
        let banded: u64 = bands.iter().map(|b| b["photos"].as_u64().unwrap()).sum();
        assert_eq!(banded, a["photos"].as_u64().unwrap(), "{a}");
    }
    let speeds = r["speed"].as_array().unwrap();
    assert!(speeds.iter().any(|s| s["precision"] == "int8"), "{r}");
    let text = &r["text"];
    assert!(text["cosine_mean"].as_f64().unwrap() > 0.98, "{text}");

    // The overlay names the int8 variants and their artefacts, and they verify.
    let overlay = env.overlay_toml().expect("an overlay was written");
    assert!(overlay.contains("image_encoder.int8.onnx"), "{overlay}");
    assert!(overlay.contains("text_encoder.int8.onnx"), "{overlay}");
    assert!(overlay.contains("tensorrt_cache"), "{overlay}");
    let v = env.run(&["models", "verify", env.pack.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("ok:"));

    // The TensorRT cache has its header and one line per tensor, and parses back.
    let cache = walk(env.home.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".calib"))
        .expect("a calibration cache");
    let text = std::fs::read_to_string(&cache).unwrap();
    let parsed = dishcam_calibration::CalibrationCache::parse(&text).unwrap();
    assert_eq!(parsed.version, 8601);
    assert!(text.starts_with("TRT-8601-EntropyCalibration2\n"), "{text}");
    assert!(
        parsed.entries.len() > 20,
        "{} entries",
        parsed.entries.len()
    );

    // classify picks the calibrated int8 variant on onnxruntime.
    let photo = frames.join("frame_001.png");
    let c = env.run(&[
        "classify",
        "--precision",
        "int8",
        "--backend",
        "onnxruntime",
        "--json",
        photo.to_str().unwrap(),
    ]);
    assert!(c.status.success(), "{}", stderr(&c));

    // A second calibration replaces the first; the first run's files are removed.
    let first_dirs = calibration_dirs(env.home.path());
    assert_eq!(first_dirs.len(), 1, "{first_dirs:?}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = env.run(&[
        "calibrate",
        "--images",
        frames.to_str().unwrap(),
        "--samples",
        "32",
        "--validate",
        "4",
        "--keep-fp32",
        "none",
        "--method",
        "percentile:99.9",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dirs = calibration_dirs(env.home.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_ne!(dirs, first_dirs);
    assert!(env.overlay_toml().unwrap().contains("percentile"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn calibration_dirs(home: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(home)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/calibration/"))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn too_few_photos_is_a_clear_error_and_writes_nothing() {
    let env = Env::new();
    let frames = env.data.path().join("few");
    photos(&frames, 12);
    let o = env.run(&["calibrate", "--images", frames.to_str().unwrap()]);
    assert_fails_with(&o, &["at least 32", "few"]);
    assert!(env.overlay_toml().is_none(), "nothing may be written");
}

#[test]
fn photos_that_do_not_decode_are_counted_and_too_many_fail() {
    let env = Env::new();
    let frames = env.data.path().join("junk");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..80 {
        std::fs::write(frames.join(format!("{i}.jpg")), b"not a jpeg").unwrap();
    }
    let o = env.run(&["calibrate", "--images", frames.to_str().unwrap()]);
    assert_fails_with(&o, &["decoded", "failed"]);
}

#[test]
fn an_unknown_method_lists_the_valid_ones() {
    let env = Env::new();
    let o = env.run(&["calibrate", "--images", "/nonexistent", "--method", "kl"]);
    assert_fails_with(&o, &["kl", "entropy"]);
}

#[test]
fn a_missing_photo_directory_names_it() {
    let env = Env::new();
    let o = env.run(&["calibrate", "--images", "/nonexistent/frames"]);
    assert_fails_with(&o, &["/nonexistent/frames"]);
}

/// An output directory that cannot be created fails before any work. (Tests run as root here,
/// so a read-only directory would still be writable; a path under a regular file is not.)
#[test]
fn an_unwritable_output_fails_first() {
    let env = Env::new();
    let frames = env.data.path().join("frames");
    photos(&frames, 40);
    let file = env.data.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("out");
    let o = env.run(&[
        "calibrate",
        "--images",
        frames.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, &["a-file/out", "output directory"]);
}

#[test]
fn int8_on_tract_names_the_backend_that_runs_it() {
    let env = Env::new();
    let o = env.run(&[
        "classify",
        "--precision",
        "int8",
        "--backend",
        "tract",
        repo()
            .join("tests/fixtures/images/grey_200x300.png")
            .to_str()
            .unwrap(),
    ]);
    assert_fails_with(&o, &["tract", "--backend onnxruntime"]);
}

/// The loop a board runs in its own kitchen: `watch --save-frames` keeps frames, and
/// `calibrate --images` makes an int8 variant from them.
#[test]
fn frames_saved_by_watch_calibrate_the_pack() {
    let env = Env::new();
    let frames = env.data.path().join("kitchen");
    let o = env.run(&[
        "watch",
        "synthetic://?fps=200&size=320x240&scene_every=15",
        "--gate",
        "0",
        "--max-frames",
        "60",
        "--save-frames",
        frames.to_str().unwrap(),
        "--stats-every",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let saved = std::fs::read_dir(&frames).unwrap().count();
    assert!((40..=60).contains(&saved), "{saved} frames saved");
    let out = env.data.path().join("cal");
    let o = env.run(&[
        "calibrate",
        "--images",
        frames.to_str().unwrap(),
        "--samples",
        "32",
        "--validate",
        "4",
        "--holdout",
        "0.1",
        "--keep-fp32",
        "_conv_stem#1,_conv_head#90",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["calibration_photos"], 32);
    assert_eq!(
        r["kept_fp32"],
        serde_json::json!(["_conv_head#90", "_conv_stem#1"])
    );
    let files = walk(&out);
    assert!(files.iter().any(|p| p.ends_with("image_encoder.int8.onnx")));

    // The table records the layers kept in fp32 (so `models pull` rebuilds the same variant),
    // and the TensorRT cache has no range for the inputs only they read.
    let find = |suffix: &str| {
        let p = files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {files:?}"));
        std::fs::read_to_string(p).unwrap()
    };
    let table: serde_json::Value =
        serde_json::from_str(&find("image_encoder.calibration.json")).unwrap();
    assert_eq!(table["keep_fp32"], r["kept_fp32"]);
    let cache = dishcam_calibration::CalibrationCache::parse(&find(".calib")).unwrap();
    assert!(cache.scale_of("pixels").is_none());
    assert!(cache.scale_of("_blocks.15._project_conv:89").is_none());
    assert!(cache.scale_of("stem_relu6:2").is_some());
}

#[test]
fn an_unknown_fp32_layer_names_it_before_any_work() {
    let env = Env::new();
    let o = env.run(&[
        "calibrate",
        "--images",
        "/nonexistent",
        "--keep-fp32",
        "stem_relu6:2",
    ]);
    assert_fails_with(&o, &["stem_relu6:2", "not a quantisable layer"]);
}

/// `--rounding`: a file that is not a rounding table, one learned for another model, one naming
/// a weight the model lacks, and one with a position past a weight each fail with one clear
/// line, before any photo is read (the photo directory does not exist).
#[test]
fn a_bad_rounding_file_is_refused_before_any_work() {
    let env = Env::new();
    let table: serde_json::Value =
        serde_json::from_str(dishcam_install::pull::LITE_CALIBRATION).unwrap();
    let sha = table["model_sha256"].as_str().unwrap();
    let file = |name: &str, text: String| {
        let p = env.dir(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let rounding = |weights: serde_json::Value| {
        serde_json::json!({ "model_sha256": sha, "weights": weights }).to_string()
    };
    let at = |p: usize| dishcam_calibration::rounding::encode(&[p]);
    let cases = [
        (
            file("junk.json", r#"{"weights": 3}"#.into()),
            vec!["junk.json", "not a rounding table"],
        ),
        (
            file(
                "other.json",
                serde_json::json!({ "model_sha256": "0".repeat(64), "weights": {} }).to_string(),
            ),
            vec!["other.json", "another image encoder"],
        ),
        (
            file(
                "unknown.json",
                rounding(serde_json::json!({ "no_such.weight": at(0) })),
            ),
            vec!["unknown.json", "no_such.weight", "another model"],
        ),
        (
            file(
                "past.json",
                rounding(serde_json::json!({ "_conv_head.weight": at(409_600) })),
            ),
            vec![
                "past.json",
                "_conv_head.weight",
                "past the weight's 409600 values",
            ],
        ),
    ];
    for (path, needles) in cases {
        let o = env.run(&[
            "calibrate",
            "--images",
            "/nonexistent/frames",
            "--rounding",
            &path,
        ]);
        assert_fails_with(&o, &needles);
    }
}
