//! Crash safety: `recipes import` (which appends to the recipe store and rebuilds the index) and
//! `teach --add-to` (which refits a head into the overlay) are killed with SIGKILL at random points;
//! afterwards the previous state (or the complete new one) must be there and load.
//!
//! Each trial starts from a copy of one prepared home, so every trial does the same work; the
//! kill times are spread over the length of an uninterrupted run, from a seeded generator
//! (`DISHCAM_CRASH_SEED` to replay a failure; the seed is printed).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::*;

const TRIALS: usize = 6;

/// xorshift64*: reproducible kill points without a dependency.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("DISHCAM_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("crash test seed: {seed} (DISHCAM_CRASH_SEED={seed} replays it)");
        Rng(seed | 1)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// `dishcam ARGS` on the lite pack with `home` as DISHCAM_HOME.
fn command(env: &CliEnv, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dishcam"));
    c.args(args)
        .args(["--pack", env.pack.to_str().unwrap()])
        .env("DISHCAM_HOME", home)
        .env("ORT_DYLIB_PATH", ort_library())
        .env("DISHCAM_LOG", "error");
    c
}

fn json(env: &CliEnv, home: &Path, args: &[&str]) -> serde_json::Value {
    let o = command(env, home, args).output().unwrap();
    assert!(
        o.status.success(),
        "dishcam {args:?} failed after a kill: {}",
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Runs `args` on copies of `prepared`: once to the end (timed), then `TRIALS` times killed at a
/// random point of that time, calling `check` on each killed home. Returns how many kills hit a
/// running process.
fn kill_trials(
    env: &CliEnv,
    prepared: &Path,
    args: &[&str],
    rng: &mut Rng,
    check: &dyn Fn(&Path, &str),
) -> usize {
    let scratch = tempfile::tempdir().unwrap();
    let full_home = scratch.path().join("full");
    copy_dir(prepared, &full_home);
    let t = Instant::now();
    let o = command(env, &full_home, args).output().unwrap();
    let full = t.elapsed();
    assert!(o.status.success(), "uninterrupted {args:?}: {}", stderr(&o));
    check(&full_home, "uninterrupted run");
    // A kill that comes after the process finished still checks the new state, but does not
    // count; later kill points are drawn from a shorter window (start-up varies from run to run).
    let mut hit = 0;
    let mut window = full;
    for trial in 0..TRIALS * 4 {
        if hit == TRIALS {
            break;
        }
        let home = scratch.path().join(format!("trial-{trial}"));
        copy_dir(prepared, &home);
        let at = window.mul_f64(0.05 + 0.9 * rng.next());
        let mut child: Child = command(env, &home, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if running {
            hit += 1;
        } else {
            window = window.mul_f64(0.7);
        }
        check(
            &home,
            &format!("trial {trial}: killed at {at:?} of {full:?} (running: {running})"),
        );
        std::fs::remove_dir_all(&home).unwrap();
    }
    hit
}

#[test]
fn killed_recipe_imports_leave_a_loadable_index() {
    let env = CliEnv::new();
    let prepared = env.home.path();
    // The previous state: the bundled recipes plus 60 imported ones, indexed.
    let recipes = |from: usize, n: usize| -> String {
        let items: Vec<String> = (from..from + n)
            .map(|i| {
                format!(
                    r#"{{"@type": "Recipe", "name": "Test stew number {i}",
                     "recipeIngredient": ["{i} g lentils", "1 onion", "{} carrots"],
                     "recipeInstructions": ["Simmer batch {i} for {} minutes."]}}"#,
                    i % 7 + 1,
                    i % 50 + 10
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    let first = env.dir("first.jsonld");
    std::fs::write(&first, recipes(0, 60)).unwrap();
    let v = json(
        &env,
        prepared,
        &["recipes", "import", first.to_str().unwrap(), "--json"],
    );
    assert_eq!(v["indexed"], 161, "{v}");
    let more = env.dir("more.jsonld");
    std::fs::write(&more, recipes(1000, 400)).unwrap();

    let check = |home: &Path, what: &str| {
        // The index opens (its checksums verify) and finds a recipe of the first import.
        let v = json(
            &env,
            home,
            &[
                "recipes",
                "search",
                "Test stew number 17",
                "--top",
                "40",
                "--json",
            ],
        );
        let hits = v["hits"].as_array().unwrap();
        assert!(
            hits.iter().any(|h| h["title"] == "Test stew number 17"),
            "{what}: {v}"
        );
        // The store holds the old records or all of the new ones, never a torn line.
        let store = std::fs::read_dir(home.join("overlays"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("recipes/imported.jsonl");
        let text = std::fs::read_to_string(&store).unwrap();
        let lines = text.lines().count();
        assert!(lines == 60 || lines == 460, "{what}: {lines} records");
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("{what}: torn record {e}: {l}"));
        }
        // And a rebuild from that state completes.
        let v = json(&env, home, &["recipes", "index", "build", "--json"]);
        assert_eq!(
            v["recipes"].as_u64().unwrap() as usize,
            lines + 101,
            "{what}"
        );
    };
    let mut rng = Rng::from_env();
    let hit = kill_trials(
        &env,
        prepared,
        &["recipes", "import", more.to_str().unwrap()],
        &mut rng,
        &check,
    );
    assert!(
        hit * 2 >= TRIALS,
        "only {hit} of {TRIALS} kills hit a running import"
    );
}

#[test]
fn killed_teaching_leaves_the_previous_head() {
    let env = CliEnv::new();
    let prepared = env.home.path();
    let train = env.dir("train");
    photos(&train, &DISHES[..3], 10, 0);
    let more = env.dir("more");
    photos(&more, &DISHES[3..], 10, 0);
    let probe = env.dir("probe");
    photos(&probe, &DISHES[..1], 1, 200);
    let probe = probe.join("tomato_soup/tomato_soup_200.png");
    let v = json(
        &env,
        prepared,
        &[
            "teach",
            "--images",
            train.to_str().unwrap(),
            "--name",
            "soups",
            "--default",
            "--json",
        ],
    );
    assert_eq!(v["heads"][0]["classes"], 3);

    let check = |home: &Path, what: &str| {
        // The overlay loads (its files' hashes verify) and the head answers, with 3 classes
        // (before) or 4 (after), never a mix.
        let c = json(
            &env,
            home,
            &["classify", probe.to_str().unwrap(), "--json", "--top", "5"],
        );
        assert_eq!(c["head"], "soups", "{what}: {c}");
        assert_eq!(c["top"][0]["label"], "tomato_soup", "{what}: {c}");
        let labels: Vec<&str> = c["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap())
            .collect();
        assert!(labels.len() == 3 || labels.len() == 4, "{what}: {labels:?}");
    };
    let mut rng = Rng::from_env();
    let hit = kill_trials(
        &env,
        prepared,
        &[
            "teach",
            "--add-to",
            "soups",
            "--images",
            more.to_str().unwrap(),
        ],
        &mut rng,
        &check,
    );
    assert!(
        hit * 2 >= TRIALS,
        "only {hit} of {TRIALS} kills hit a running teach"
    );
}
