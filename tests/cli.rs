//! The `dishcam` binary on good and bad input: results on stdout, one-line errors that name the
//! input and the fix on stderr, non-zero exit, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn dishcam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dishcam"))
        .args(args)
        .env("DISHCAM_LOG", "error")
        .output()
        .expect("run dishcam")
}

fn image(name: &str) -> String {
    repo()
        .join("tests/fixtures/images")
        .join(name)
        .display()
        .to_string()
}

/// A test pattern is not food: the no-dish check answers, with its score under its threshold,
/// a null dish, no classes and no recipe.
#[test]
fn classify_json_follows_the_documented_schema() {
    lite_pack();
    let o = dishcam(&[
        "classify",
        &image("pattern_640x480.jpg"),
        "--json",
        "--top",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "dishcam.classify/1");
    assert_eq!(v["dish"], serde_json::Value::Null, "{v}");
    let no_dish = &v["no_dish"];
    assert_eq!(no_dish["reason"], "not-food", "{v}");
    let (score, threshold) = (
        no_dish["score"].as_f64().unwrap(),
        no_dish["threshold"].as_f64().unwrap(),
    );
    assert!(
        (0.0..threshold).contains(&score) && threshold <= 1.0,
        "{no_dish}"
    );
    assert_eq!(v["top"], serde_json::json!([]), "{v}");
    assert_eq!(v["recipes"], serde_json::json!([]), "{v}");
    assert_eq!(v["pack"], "lite");
    assert_eq!(
        v["head"], "food101",
        "the lite pack names Food-101 dishes by default"
    );
    // `auto` takes whichever engine ran the encoder faster here (tests of its choice:
    // backend_auto_measures_once_takes_the_faster_engine_and_models_info_shows_it).
    assert!(
        v["backend"] == "onnxruntime" || v["backend"] == "openvino",
        "auto takes a measured engine: {v}"
    );
    assert_eq!(v["precision"], "fp32");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(480))
    );
    for stage in ["decode", "preprocess", "encode", "check", "head", "total"] {
        assert!(
            v["timings_ms"][stage].as_f64().is_some(),
            "timings_ms.{stage}"
        );
    }
    // The text output says why instead of listing dishes, and suggests no recipe.
    let o = dishcam(&["classify", &image("pattern_640x480.jpg")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("no dish in view (food score"), "{text}");
    assert!(
        !text.contains("recipe:") && !text.contains(" 1. "),
        "{text}"
    );
}

/// A photo of a dish: the dish, its classes best first, its recipes, and a null `no_dish`.
#[test]
fn classify_json_of_a_dish_names_it() {
    lite_pack();
    let Some(shared) = shared_data("classify_json_of_a_dish_names_it") else {
        return;
    };
    let photo = shared.join("food101-10class/train/bibimbap/1002297.jpg");
    let o = dishcam(&["classify", photo.to_str().unwrap(), "--json", "--top", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "dishcam.classify/1");
    assert_eq!(v["no_dish"], serde_json::Value::Null, "{v}");
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let p: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] >= w[1]) && p.iter().sum::<f64>() <= 1.0 + 1e-6,
        "{p:?}"
    );
    assert_eq!(top[0]["rank"], 1);
    assert_eq!(top[0]["label"], "bibimbap", "{v}");
    assert_eq!(v["dish"], top[0]["label"]);
    let recipes = v["recipes"].as_array().unwrap();
    assert!(
        recipes
            .iter()
            .all(|r| r["id"].is_string() && r["title"].is_string()),
        "{v}"
    );
    for stage in ["decode", "preprocess", "encode", "check", "head", "total"] {
        assert!(
            v["timings_ms"][stage].as_f64().is_some(),
            "timings_ms.{stage}"
        );
    }
}

#[test]
fn unusual_but_valid_images_classify() {
    lite_pack();
    for name in [
        "tiny_1x1.png",
        "tall_1x4000.png",
        "grey_200x300.png",
        "grey16_64x48.png",
        "cmyk_128x96.jpg",
        "rgba_256x256.png",
        "png_named.jpg",
        "exif_rotated_6.jpg",
    ] {
        let o = dishcam(&["classify", &image(name), "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // Either a dish with a full top-5, or "no dish" with nothing beside it.
        let top = v["top"].as_array().unwrap();
        if v["no_dish"].is_null() {
            assert_eq!(top.len(), 5, "{name}: {v}");
            assert_eq!(v["dish"], top[0]["label"], "{name}: {v}");
        } else {
            assert!(top.is_empty() && v["dish"].is_null(), "{name}: {v}");
            assert_eq!(v["recipes"], serde_json::json!([]), "{name}: {v}");
        }
        // A photo under the check's smallest side is answered without running the encoder.
        if name.starts_with("tiny_") || name.starts_with("tall_") {
            assert_eq!(v["no_dish"]["reason"], "too-small", "{name}: {v}");
            assert_eq!(v["no_dish"]["score"], 0.0, "{name}: {v}");
        }
    }
    // EXIF orientation 6 rotates a landscape file to portrait.
    let o = dishcam(&["classify", &image("exif_rotated_6.jpg"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["height"].as_u64() > v["width"].as_u64(), "{v}");
}

#[test]
fn broken_images_give_one_clear_line() {
    lite_pack();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no such photo.jpg");
    assert_fails_with(
        &dishcam(&["classify", missing.to_str().unwrap()]),
        &["no such photo.jpg", "cannot read"],
    );

    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not a photo at all").unwrap();
    assert_fails_with(
        &dishcam(&["classify", text.to_str().unwrap()]),
        &["notes.jpg", "not a supported image"],
    );

    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    assert_fails_with(
        &dishcam(&["classify", empty.to_str().unwrap()]),
        &["empty.png", "not a supported image"],
    );

    let full = std::fs::read(image("pattern_640x480.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &full[..full.len() / 3]).unwrap();
    let o = dishcam(&["classify", cut.to_str().unwrap()]);
    // A JPEG cut mid-scan is either refused or decoded with the missing part grey, as libjpeg
    // does; it must never panic or hang.
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let cut = dir.path().join("cut.png");
    let png = std::fs::read(image("gradient_320x240.png")).unwrap();
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    assert_fails_with(
        &dishcam(&["classify", cut.to_str().unwrap()]),
        &["cut.png", "corrupt or truncated"],
    );
}

/// Minimal CRC-32 (IEEE) for hand-made PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // An empty zlib stream as the only IDAT (a decompression bomb would put more here), then IEND.
    for (kind, data) in [
        (
            &b"IDAT"[..],
            &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1][..],
        ),
        (b"IEND", &[]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn bmp_header(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    for v in [40i32, w, h] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

#[test]
fn images_claiming_huge_sizes_are_refused_before_decoding() {
    lite_pack();
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("huge.png", png_header(65500, 65500)),
        ("huge.bmp", bmp_header(60000, 60000)),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        assert_fails_with(
            &dishcam(&["classify", p.to_str().unwrap()]),
            &[name, "megapixels", "--max-pixels"],
        );
    }
}

/// A private copy of the installed lite pack that a test may damage.
fn pack_copy() -> (tempfile::TempDir, PathBuf) {
    let pack = lite_pack();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("lite");
    std::fs::create_dir_all(&dest).unwrap();
    copy_tree(&pack.dir, &dest);
    (dir, dest)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn installed_pack_verifies() {
    lite_pack();
    let o = dishcam(&["models", "verify", "lite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok: pack 'lite'"));
}

#[test]
fn damaged_packs_are_refused_with_the_field_and_the_fix() {
    let (_t, dir) = pack_copy();
    let img = image("pattern_640x480.jpg");

    let labels = dir.join("imagenet_labels.txt");
    let mut text = std::fs::read_to_string(&labels).unwrap();
    text = text.replacen("tench", "tenck", 1);
    std::fs::write(&labels, text).unwrap();
    let o = dishcam(&["models", "verify", s(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("heads[0].labels")
            && err.contains("sha256 does not match")
            && err.contains("dishcam models pull lite"),
        "{err}"
    );
    assert_fails_with(
        &dishcam(&["classify", &img, "--head", "imagenet", "--pack", s(&dir)]),
        &["imagenet_labels.txt", "sha256"],
    );

    let onnx = dir.join("image_encoder.onnx");
    let bytes = std::fs::read(&onnx).unwrap();
    std::fs::write(&onnx, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(
        &dishcam(&["embed", "image", &img, "--pack", s(&dir)]),
        &[
            "image_encoder.onnx",
            "bytes, the manifest says",
            "pull lite",
        ],
    );

    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert_fails_with(
        &dishcam(&["embed", "text", "soup", "--pack", s(&dir)]),
        &["tokenizer", "missing"],
    );
}

#[test]
fn packs_may_not_reach_outside_their_directory() {
    let (_t, dir) = pack_copy();
    let manifest = dir.join("pack.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "file = \"imagenet_labels.txt\"",
            "file = \"../imagenet_labels.txt\"",
        ),
    )
    .unwrap();
    assert_fails_with(
        &dishcam(&["models", "verify", s(&dir)]),
        &["heads[0].labels.file", "leaves the pack directory"],
    );

    // A symlink that points outside the pack is caught when the file is read.
    let (_t2, dir2) = pack_copy();
    let outside = dir2.parent().unwrap().join("labels-outside.txt");
    std::fs::rename(dir2.join("imagenet_labels.txt"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir2.join("imagenet_labels.txt")).unwrap();
    assert_fails_with(
        &dishcam(&[
            "classify",
            &image("tiny_1x1.png"),
            "--head",
            "imagenet",
            "--pack",
            s(&dir2),
        ]),
        &["outside the pack directory"],
    );
}

#[test]
fn verify_checks_a_single_onnx_file() {
    let pack = lite_pack();
    let onnx = pack.dir.join("image_encoder.onnx");
    let o = dishcam(&["models", "verify", s(&onnx)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("pixels") && out.contains("logits"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.onnx");
    let bytes = std::fs::read(&onnx).unwrap();
    std::fs::write(&cut, &bytes[..1000]).unwrap();
    assert_fails_with(
        &dishcam(&["models", "verify", s(&cut)]),
        &["cut.onnx", "not a valid ONNX model"],
    );
}

#[test]
fn unknown_names_list_what_exists() {
    lite_pack();
    let img = image("tiny_1x1.png");
    assert_fails_with(
        &dishcam(&["classify", &img, "--backend", "cuda"]),
        &["unknown backend 'cuda'", "tract"],
    );
    assert_fails_with(
        &dishcam(&["classify", &img, "--precision", "fp16"]),
        &["no fp16 variant", "fp32, int8"],
    );
    assert_fails_with(
        &dishcam(&["classify", &img, "--pack", "nosuchpack"]),
        &["nosuchpack", "lite", "models pull"],
    );
    assert_fails_with(
        &dishcam(&["classify", &img, "--head", "food"]),
        &["no head 'food'", "imagenet"],
    );
}

#[test]
fn embeddings_have_the_manifest_dims() {
    lite_pack();
    let o = dishcam(&["embed", "text", "miso ramen", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "dishcam.embedding/1");
    assert_eq!(v["dim"], 384);
    let e: Vec<f64> = v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    let o = dishcam(&["embed", "image", &image("gradient_320x240.png"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dim"], 1280);
}

fn watch_lines(args: &[&str]) -> Vec<serde_json::Value> {
    let o = dishcam(args);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn watch_a_synthetic_stream_reports_counts_and_latency() {
    lite_pack();
    let lines = watch_lines(&[
        "watch",
        "synthetic://?fps=60&size=160x120&frames=60",
        "--json",
        "--stats-every",
        "0",
    ]);
    let summary = lines.last().unwrap();
    assert_eq!(summary["schema"], "dishcam.watch/1");
    assert_eq!(summary["type"], "summary");
    let c = &summary["counts"];
    assert_eq!(c["captured"], 60);
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k}: {c}"));
    // Every frame is counted once: the encoder ran on it, the gate skipped it, or it was dropped.
    assert_eq!(n("classified") + n("gated") + n("dropped"), 60, "{c}");
    assert!(n("classified") > 0, "{c}");
    assert!(n("no_dish") <= n("classified"), "{c}");
    let p90 = summary["latency"]["capture_to_emitted"]["p90_ms"]
        .as_f64()
        .unwrap();
    assert!(p90 > 0.0);
}

/// A synthetic test pattern shows no dish: every frame the encoder runs on is "no dish", no dish
/// ever settles, and the summary's counters add up (one frame may be in flight at the stop).
#[test]
fn watch_a_scene_with_no_dish_never_settles() {
    lite_pack();
    let lines = watch_lines(&[
        "watch",
        "synthetic://?fps=30",
        "--max-frames",
        "300",
        "--json",
        "--stats-every",
        "0",
    ]);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let c = &summary["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k}: {c}"));
    assert_eq!(n("classified") + n("gated"), 300, "{c}");
    let settled = n("classified") + n("gated") + n("dropped");
    assert!(
        n("captured") >= settled && n("captured") <= settled + 1,
        "{c}"
    );
    assert!(n("classified") > 0, "{c}");
    assert_eq!(
        n("no_dish"),
        n("classified"),
        "the pattern is not food: {c}"
    );
    let events: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "event").collect();
    assert!(
        events
            .iter()
            .all(|e| e["event"] != "settled" && e["event"] != "changed"),
        "{events:?}"
    );
}

/// Held-out bibimbap photos (never used to fit the head), read as a folder: the pipeline
/// classifies every one and settles on bibimbap, and on nothing else. Unlike a camera's frames,
/// each photo is another plate with its own probability (bibimbap's averages 0.45 over these),
/// so the settle threshold is 0.4 rather than the default 0.6.
#[test]
fn watch_a_folder_of_unseen_bibimbap_settles_on_bibimbap() {
    lite_pack();
    let Some(shared) = shared_data("watch_a_folder_of_unseen_bibimbap_settles_on_bibimbap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared.join("food101-10class/train/bibimbap"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        if dishcam_runtime::dataset::is_holdout(&stem, 0.2) {
            std::os::unix::fs::symlink(&f, dir.path().join(f.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    assert!(n > 30, "{n} held-out photos");
    let uri = format!("dir://{}", dir.path().display());
    let lines = watch_lines(&[
        "watch",
        &uri,
        "--json",
        "--stats-every",
        "0",
        "--settle-threshold",
        "0.4",
    ]);
    let summary = lines.last().unwrap();
    assert_eq!(
        summary["counts"]["classified"], n,
        "every photo is classified"
    );
    assert!(
        summary["counts"]["no_dish"].as_u64().unwrap() <= n / 10,
        "food photos are mostly taken for food: {summary}"
    );
    assert_eq!(summary["counts"]["dropped"], 0);
    let settled: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "event" && l["event"] == "settled")
        .filter_map(|l| l["dish"].as_str())
        .collect();
    assert!(settled.contains(&"bibimbap"), "settled on {settled:?}");
    assert!(
        settled.iter().all(|d| *d == "bibimbap"),
        "settled on {settled:?}"
    );
}

#[test]
fn watch_names_the_accepted_sources_and_the_missing_features() {
    lite_pack();
    assert_fails_with(
        &dishcam(&["watch", "rtsp://camera/stream"]),
        &["synthetic://", "dir://"],
    );
    assert_fails_with(
        &dishcam(&["watch", "v4l2:///dev/video0"]),
        &["--features camera-v4l"],
    );
    assert_fails_with(
        &dishcam(&["watch", "synthetic://?fps=abc"]),
        &["fps", "abc"],
    );
}

/// Ctrl-C (SIGINT) ends an endless stream with the summary, including the process's memory.
#[test]
fn watch_ends_cleanly_on_ctrl_c_with_a_summary() {
    lite_pack();
    let child = Command::new(env!("CARGO_BIN_EXE_dishcam"))
        .args([
            "watch",
            "synthetic://?fps=30&size=160x120",
            "--json",
            "--stats-every",
            "0",
        ])
        .env("DISHCAM_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["type"], "summary");
    assert!(summary["counts"]["classified"].as_u64().unwrap() > 0);
    assert!(summary["telemetry"]["peak_rss_mb"].as_f64().unwrap() > 0.0);
}

/// `watch --text-from FILE` follows the file: each appended line replaces the text context, and
/// the frames after it are fused with it. A test pattern is not food: with the no-dish check on
/// no dish would ever settle, so it is off and the text decides.
#[test]
fn watch_text_from_a_growing_file_replaces_the_context() {
    use std::io::Write;
    lite_pack();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "ramen tonight\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dishcam"))
        .args([
            "watch",
            "synthetic://?fps=30&size=160x120",
            "--max-frames",
            "240",
            "--gate",
            "0",
            "--json",
            "--stats-every",
            "0",
            "--text-from",
            notes.to_str().unwrap(),
            "--no-dish-check",
        ])
        .env("DISHCAM_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3000));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&notes)
        .unwrap();
    // Written in two parts: the reader waits for the end of the line.
    f.write_all(b"apple ").unwrap();
    f.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    f.write_all(b"pie for dessert\n").unwrap();
    drop(f);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let contexts: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "context")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["ramen tonight", "apple pie for dessert"]);
    // The dish named by the last event after each context line.
    let after = |text: &str| {
        let start = lines.iter().position(|l| l["text"] == text).unwrap();
        lines[start..]
            .iter()
            .skip(1)
            .take_while(|l| l["type"] != "context")
            .filter(|l| l["type"] == "event" && !l["dish"].is_null())
            .last()
            .map(|l| l["dish"].as_str().unwrap().to_string())
    };
    assert_eq!(
        after("ramen tonight").as_deref(),
        Some("ramen"),
        "{lines:?}"
    );
    assert_eq!(
        after("apple pie for dessert").as_deref(),
        Some("apple_pie"),
        "{lines:?}"
    );
}

/// Output into a pipe whose reader has gone (`dishcam models info | head`) ends the process
/// quietly, as other Unix tools end, not with a panic in `println!`.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    lite_pack();
    for args in [
        &["models", "info", "lite"][..],
        &["recipes", "search", "noodle soup"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dishcam"))
            .args(args)
            .env("DISHCAM_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dishcam");
        // The reader goes before the command has loaded anything, so its first line meets a
        // closed pipe.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(13),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

/// `--backend auto` times the image encoder on each engine that opens, takes the faster, says so
/// in one line, caches the choice (the second run measures nothing), and `models info` shows it.
/// With OpenVINO's library absent it names it unavailable and takes onnxruntime.
#[test]
fn backend_auto_measures_once_takes_the_faster_engine_and_models_info_shows_it() {
    let env = CliEnv::new();
    let img = image("pattern_640x480.jpg");
    let run = |ov: Option<&Path>| {
        let pack = env.pack.to_str().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dishcam"));
        cmd.args([
            "classify",
            &img,
            "--json",
            "--precision",
            "int8",
            "--threads",
            "1",
        ])
        .args(["--pack", pack])
        .env("DISHCAM_HOME", env.home.path())
        .env("ORT_DYLIB_PATH", ort_library())
        .env("DISHCAM_LOG", "error")
        .env_remove("DISHCAM_BACKEND");
        match ov {
            Some(lib) => cmd.env("DISHCAM_OPENVINO_LIB", lib),
            None => cmd.env("DISHCAM_OPENVINO_LIB", "/nonexistent/libopenvino_c.so"),
        };
        let o = cmd.output().expect("run dishcam");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v, stderr(&o))
    };
    let real_ov = dishcam_runtime::backend::openvino::library_path(
        &dishcam_models::Home::from_env().unwrap(),
    );

    // OpenVINO missing: onnxruntime, and the note says why.
    let (v, err) = run(None);
    assert_eq!(v["backend"], "onnxruntime", "{err}");
    assert!(
        err.contains("backend auto: onnxruntime") && err.contains("openvino unavailable"),
        "{err}"
    );

    if !real_ov.exists() {
        eprintln!("SKIPPED (openvino): no library at {}", real_ov.display());
        return;
    }
    // Both engines: another key (the library path is in it), so it measures again.
    let (v, err) = run(Some(&real_ov));
    assert!(err.contains("measured now"), "{err}");
    let chosen = v["backend"].as_str().unwrap().to_string();
    let line = err.lines().find(|l| l.contains("backend auto")).unwrap();
    let time_of = |k: &str| -> f64 {
        let at = line.find(&format!("{k} ")).unwrap() + k.len() + 1;
        line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let (ort, ov) = (time_of("onnxruntime"), time_of("openvino"));
    let faster = if ov < ort { "openvino" } else { "onnxruntime" };
    assert_eq!(chosen, faster, "{line}");

    let (v, err) = run(Some(&real_ov));
    assert_eq!(v["backend"], chosen.as_str());
    assert!(err.contains("cached"), "{err}");

    let info = env.json(&["models", "info", env.pack.to_str().unwrap(), "--json"]);
    let rows = info["auto_backend"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{info:#}");
    assert!(rows.iter().any(|r| r["backend"] == chosen.as_str()));
}
