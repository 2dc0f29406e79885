//! Shared helpers of the integration tests: where the `lite` pack and the shared data are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../runtime/tests/support/mod.rs"]
mod support;
pub use support::*;

/// The binary run with a private `DISHCAM_HOME` (overlays, caches) on the installed lite pack,
/// with the onnxruntime library of the real home, and a scratch data directory.
pub struct CliEnv {
    pub home: tempfile::TempDir,
    pub data: tempfile::TempDir,
    pub pack: PathBuf,
}

impl CliEnv {
    pub fn new() -> CliEnv {
        let pack = lite_pack().dir;
        CliEnv {
            home: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
            pack,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let pack = ["--pack", self.pack.to_str().unwrap()];
        let pack: &[&str] = if args[0] == "models" { &[] } else { &pack };
        Command::new(env!("CARGO_BIN_EXE_dishcam"))
            .args(args)
            .args(pack)
            .env("DISHCAM_HOME", self.home.path())
            .env("ORT_DYLIB_PATH", ort_library())
            .env("DISHCAM_LOG", "error")
            .output()
            .expect("run dishcam")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "dishcam {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&o.stdout));
        })
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.data.path().join(name)
    }
}

/// A photo of a "dish": a base colour with a stripe texture whose period depends on the seed.
pub fn photo(path: &Path, rgb: [u8; 3], seed: u32) {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 41) as i32 - 20
    };
    let period = 6 + seed % 5;
    let img = image::RgbImage::from_fn(96, 96, |x, y| {
        let stripe = if ((x + y) / period).is_multiple_of(2) {
            25
        } else {
            -25
        };
        let n = rnd();
        image::Rgb(rgb.map(|c| (c as i32 + stripe + n).clamp(0, 255) as u8))
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

pub const DISHES: [(&str, [u8; 3]); 4] = [
    ("tomato_soup", [200, 40, 30]),
    ("pea_soup", [60, 170, 50]),
    ("blueberry_pie", [40, 50, 180]),
    ("corn_chowder", [230, 210, 60]),
];

/// `n` photos per dish of `dishes` under DIR/<dish>/<dish>_<i>.png.
pub fn photos(dir: &Path, dishes: &[(&str, [u8; 3])], n: u32, offset: u32) {
    for (name, rgb) in dishes {
        for i in offset..offset + n {
            photo(&dir.join(name).join(format!("{name}_{i}.png")), *rgb, i);
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts a clean failure: exit code 1, no panic, and an `error:` line containing every needle.
pub fn assert_fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in: {err}"));
    for n in needles {
        assert!(line.contains(n), "error line lacks {n:?}: {line}");
    }
}
