//! The bad-input corpus (tests/corpus/, written by scripts/make_corpus.py) walked through the CLI:
//! photos through `classify`, packs through `classify --pack`, recipe files through `recipes
//! import`. tests/corpus/expected.json says what each must do: valid-but-unusual inputs work;
//! broken ones exit 1 with exactly one `error:` line naming the problem. Nothing may panic, and
//! nothing may hang (each run is killed after a generous limit and reported).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn corpus() -> PathBuf {
    repo().join("tests/corpus")
}

fn expected() -> serde_json::Map<String, Value> {
    let v: Value = read_json("tests/corpus/expected.json");
    v.as_object().expect("an object").clone()
}

/// Runs `cmd`, killing it after [`LIMIT`]: a hang is a failure with the command named.
fn run(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dishcam");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).map(|_| b)
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).map(|_| b)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("{what}: still running after {LIMIT:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

/// Checks `o` against one expectation; returns a description of the mismatch.
fn judge(rel: &str, expect: &Value, o: &Output) -> Result<(), String> {
    let err = stderr(o);
    if err.contains("panicked") || o.status.code().is_none_or(|c| c > 1) {
        return Err(format!("{rel}: crashed ({:?}): {err}", o.status));
    }
    match expect["expect"].as_str() {
        Some("ok") => {
            if !o.status.success() {
                return Err(format!("{rel}: expected to work, failed: {err}"));
            }
            Ok(())
        }
        Some("error") => {
            if o.status.code() != Some(1) {
                return Err(format!("{rel}: expected exit 1, got {:?}", o.status));
            }
            let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
            if lines.len() != 1 {
                return Err(format!("{rel}: expected one error line, got: {err}"));
            }
            for n in expect["contains"].as_array().unwrap() {
                let n = n.as_str().unwrap();
                if !lines[0].contains(n) {
                    return Err(format!("{rel}: error line lacks {n:?}: {}", lines[0]));
                }
            }
            Ok(())
        }
        other => Err(format!("{rel}: unknown expectation {other:?}")),
    }
}

/// Every file under the corpus has an expectation (so a new input cannot be silently unchecked).
#[test]
fn every_corpus_input_has_an_expectation() {
    let exp = expected();
    let mut missing = Vec::new();
    for kind in ["images", "recipes"] {
        for verdict in ["ok", "bad"] {
            for e in std::fs::read_dir(corpus().join(kind).join(verdict)).unwrap() {
                let rel = format!(
                    "{kind}/{verdict}/{}",
                    e.unwrap().file_name().to_string_lossy()
                );
                if !exp.contains_key(&rel) {
                    missing.push(rel);
                }
            }
        }
    }
    for e in std::fs::read_dir(corpus().join("packs")).unwrap() {
        let rel = format!("packs/{}", e.unwrap().file_name().to_string_lossy());
        if !exp.contains_key(&rel) {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "no expectation for {missing:?}: rerun scripts/make_corpus.py"
    );
    assert!(
        exp.len() >= 50,
        "the corpus shrank to {} entries",
        exp.len()
    );
}

#[test]
fn photos_through_classify() {
    let env = CliEnv::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (rel, expect) in expected().iter().filter(|(k, _)| k.starts_with("images/")) {
        let path = corpus().join(rel);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dishcam"));
        cmd.args(["classify", "--json", "--pack", env.pack.to_str().unwrap()])
            .arg(&path)
            .env("DISHCAM_HOME", env.home.path())
            .env("ORT_DYLIB_PATH", ort_library())
            .env("DISHCAM_LOG", "error");
        let o = run(cmd, rel);
        let mut verdict = judge(rel, expect, &o);
        if verdict.is_ok() && o.status.success() {
            // A photo that works is classified: a full top-5 of probabilities.
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            let top = v["top"].as_array().map_or(0, Vec::len);
            if top != 5 {
                verdict = Err(format!("{rel}: no top-5 in {v}"));
            }
        }
        checked += 1;
        if let Err(e) = verdict {
            failures.push(e);
        }
    }
    assert!(checked >= 30, "only {checked} photos");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A pack whose image encoder is the first 64 KiB of the real one (hash updated to match, so
/// the failure is the model's, not the hash check's).
fn truncated_model_pack(dir: &Path) {
    use sha2::Digest;
    let template = corpus().join("packs/random_onnx");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(template.join("labels.txt"), dir.join("labels.txt")).unwrap();
    let real = std::fs::read(lite_pack().dir.join("image_encoder.onnx")).unwrap();
    let cut = &real[..64 << 10];
    std::fs::write(dir.join("image_encoder.onnx"), cut).unwrap();
    let old = std::fs::read(template.join("image_encoder.onnx")).unwrap();
    let manifest = std::fs::read_to_string(template.join("pack.toml"))
        .unwrap()
        .replace(
            &hex::encode(sha2::Sha256::digest(&old)),
            &hex::encode(sha2::Sha256::digest(cut)),
        )
        .replace(
            &format!("bytes = {}", old.len()),
            &format!("bytes = {}", cut.len()),
        );
    std::fs::write(dir.join("pack.toml"), manifest).unwrap();
}

#[test]
fn packs_through_classify() {
    let env = CliEnv::new();
    let photo = corpus().join("images/ok/plain.bmp");
    let truncated = env.dir("truncated_model");
    truncated_model_pack(&truncated);
    let mut cases: Vec<(String, PathBuf, Value)> = expected()
        .into_iter()
        .filter(|(k, _)| k.starts_with("packs/"))
        .map(|(k, v)| (k.clone(), corpus().join(&k), v))
        .collect();
    cases.push((
        "truncated_model (generated)".into(),
        truncated,
        serde_json::json!({"expect": "error", "contains": ["image_encoder.onnx"]}),
    ));
    let mut failures = Vec::new();
    for (rel, dir, expect) in &cases {
        for backend in ["onnxruntime", "tract"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_dishcam"));
            cmd.args(["classify", "--backend", backend, "--pack"])
                .arg(dir)
                .arg(&photo)
                .env("DISHCAM_HOME", env.home.path())
                .env("ORT_DYLIB_PATH", ort_library())
                .env("DISHCAM_LOG", "error");
            let what = format!("{rel} ({backend})");
            if let Err(e) = judge(&what, expect, &run(cmd, &what)) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn recipe_files_through_import() {
    let mut failures = Vec::new();
    for (rel, expect) in expected().iter().filter(|(k, _)| k.starts_with("recipes/")) {
        // A fresh overlay each, so counts are the file's own.
        let env = CliEnv::new();
        let o = run(
            {
                let mut c = Command::new(env!("CARGO_BIN_EXE_dishcam"));
                c.args(["recipes", "import", "--json"])
                    .arg(corpus().join(rel))
                    .args(["--pack", env.pack.to_str().unwrap()])
                    .env("DISHCAM_HOME", env.home.path())
                    .env("ORT_DYLIB_PATH", ort_library())
                    .env("DISHCAM_LOG", "error");
                c
            },
            rel,
        );
        let mut verdict = judge(rel, expect, &o);
        if verdict.is_ok() && o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            for key in ["imported", "skipped"] {
                if let Some(n) = expect.get(key) {
                    if v[key] != *n {
                        verdict = Err(format!("{rel}: {key} {} != expected {n}: {v}", v[key]));
                    }
                }
            }
        }
        if let Err(e) = verdict {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
