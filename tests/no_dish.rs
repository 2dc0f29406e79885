//! "No dish" on real photos: the sample photos inside the pinned scikit-image wheel (astronaut,
//! camera, chelsea, coffee, coins, rocket, ...; `scripts/fetch_nonfood.sh`, which
//! `scripts/test.sh` runs) and generated frames must be answered "no dish", and held-out food
//! photos from `../shared/data` must keep their dish, through the serving path of the lite pack.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The extracted scikit-image photos: `$DISHCAM_NONFOOD` or the fetch script's default.
fn nonfood(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DISHCAM_NONFOOD")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/dishcam-test/skimage-data"))
        })?;
    if dir.join(".complete").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED ({test}): no non-food photos at {}; run ./scripts/fetch_nonfood.sh (./scripts/test.sh does)",
            dir.display()
        );
        None
    }
}

#[test]
fn photos_without_a_dish_are_answered_no_dish_and_food_keeps_its_dish() {
    let test = "photos_without_a_dish_are_answered_no_dish_and_food_keeps_its_dish";
    let (Some(data), Some(nonfood)) = (shared_data(test), nonfood(test)) else {
        return;
    };
    lite_pack();
    let o = Command::new(env!("CARGO_BIN_EXE_dishcam"))
        .args([
            "eval",
            "no-dish",
            "--pack",
            "lite",
            "--json",
            "--generated",
            "--split",
            "holdout",
        ])
        .arg("--food")
        .arg(data.join("food101-10class/train"))
        .arg("--non-food")
        .arg(&nonfood)
        .env("DISHCAM_LOG", "error")
        .output()
        .expect("run dishcam");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "dishcam.eval.no-dish/1");
    let sets = v["sets"].as_array().unwrap();
    let photos = |kind: &str| -> u64 {
        sets.iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| s["photos"].as_u64().unwrap())
            .sum()
    };
    assert!(photos("non-food") >= 26 + 16, "{v}");
    assert!(photos("food") >= 700, "{v}");
    let rejection = v["non_food_rejection"].as_f64().unwrap();
    let recall = v["food_recall"].as_f64().unwrap();
    assert!(
        rejection >= 0.90,
        "only {rejection} of non-food answered no dish: {v}"
    );
    assert!(
        recall >= 0.95,
        "only {recall} of held-out food photos kept a dish: {v}"
    );
}
