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
            // A photo that works is answered: a dish with a full top-5 of probabilities, or
            // "no dish" with its reason and nothing beside it.
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            let top = v["top"].as_array().map_or(0, Vec::len);
            let answered = match v["no_dish"]["reason"].as_str() {
                None => top == 5 && v["dish"] == v["top"][0]["label"],
                Some(reason) => {
                    ["not-food", "too-small"].contains(&reason)
                        && top == 0
                        && v["dish"].is_null()
                        && v["recipes"] == serde_json::json!([])
                }
            };
            if !answered {
                verdict = Err(format!("{rel}: neither a top-5 nor \"no dish\" in {v}"));
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

/// Writes a copy of the corpus' `random_onnx` pack into `dir` with `model` as its image
/// encoder, the manifest's hash and size updated to match, so that what fails is the model
/// itself, not the hash check.
fn pack_with_model(dir: &Path, model: &[u8]) {
    use sha2::Digest;
    let template = corpus().join("packs/random_onnx");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(template.join("labels.txt"), dir.join("labels.txt")).unwrap();
    std::fs::write(dir.join("image_encoder.onnx"), model).unwrap();
    let old = std::fs::read(template.join("image_encoder.onnx")).unwrap();
    let manifest = std::fs::read_to_string(template.join("pack.toml"))
        .unwrap()
        .replace(
            &hex::encode(sha2::Sha256::digest(&old)),
            &hex::encode(sha2::Sha256::digest(model)),
        )
        .replace(
            &format!("bytes = {}", old.len()),
            &format!("bytes = {}", model.len()),
        );
    std::fs::write(dir.join("pack.toml"), manifest).unwrap();
}

/// A well-formed ONNX model for the corpus pack's encoder contract (`pixels` [batch, 3, 8, 8]
/// in, `embedding` [batch, `dim`] out): global average pool, flatten, matmul, with `op` in place
/// of the pool and the default opset replaced by `opset` when given.
fn tiny_encoder(op: &str, dim: u64, opset: Option<i64>) -> Vec<u8> {
    use dishcam_models::manifest::{DType, Dim, TensorSpec};
    use dishcam_models::onnx::{encode, GraphBuilder};
    let mut b = GraphBuilder::new("corpus");
    let batch = || Dim::Named("batch".into());
    let x = b.input(&TensorSpec::new(
        "pixels",
        DType::F32,
        vec![batch(), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)],
    ));
    let pooled = b.node(op, "pool", &[&x], &[]);
    let flat = b.node("Flatten", "flatten", &[&pooled], &[]);
    let w = b.f32_tensor("w", &[3, dim as usize], &vec![0.5; 3 * dim as usize]);
    let e = b.node("MatMul", "project", &[&flat, &w], &[]);
    b.output(
        &e,
        &TensorSpec::new("embedding", DType::F32, vec![batch(), Dim::Fixed(dim)]),
    );
    let mut model = b.finish("dishcam bad-input corpus");
    if let Some(v) = opset {
        model.opset_import[0].version = v;
    }
    encode(&model)
}

#[test]
fn the_tiny_encoder_works_unbroken() {
    // The generated packs below differ from this one in one way each, so their failures are
    // that one thing's.
    let env = CliEnv::new();
    let dir = env.dir("tiny_ok");
    pack_with_model(&dir, &tiny_encoder("GlobalAveragePool", 2, None));
    for backend in ["onnxruntime", "tract"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dishcam"));
        cmd.args(["classify", "--json", "--backend", backend, "--pack"])
            .arg(&dir)
            .arg(corpus().join("images/ok/plain.bmp"))
            .env("DISHCAM_HOME", env.home.path())
            .env("ORT_DYLIB_PATH", ort_library())
            .env("DISHCAM_LOG", "error");
        let o = run(cmd, backend);
        assert!(
            o.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn packs_through_classify() {
    let env = CliEnv::new();
    let photo = corpus().join("images/ok/plain.bmp");
    let generated = |name: &str, model: &[u8]| {
        let dir = env.dir(name);
        pack_with_model(&dir, model);
        dir
    };
    let real = std::fs::read(lite_pack().dir.join("image_encoder.onnx")).unwrap();
    let generated_cases = [
        // The first 64 KiB of the real encoder.
        (
            "truncated_model",
            generated("truncated_model", &real[..64 << 10]),
        ),
        // An operator no runtime has (a custom op, or one from a newer ONNX).
        (
            "unknown_operator",
            generated(
                "unknown_operator",
                &tiny_encoder("DishcamNoSuchOp", 2, None),
            ),
        ),
        // A model from a far newer ONNX than the runtimes know.
        (
            "future_opset",
            generated(
                "future_opset",
                &tiny_encoder("GlobalAveragePool", 2, Some(99)),
            ),
        ),
        // A model whose output disagrees with the manifest (3 values, not 2).
        (
            "output_shape_mismatch",
            generated(
                "output_shape_mismatch",
                &tiny_encoder("GlobalAveragePool", 3, None),
            ),
        ),
    ];
    let mut cases: Vec<(String, PathBuf, Value)> = expected()
        .into_iter()
        .filter(|(k, _)| k.starts_with("packs/"))
        .map(|(k, v)| (k.clone(), corpus().join(&k), v))
        .collect();
    for (name, dir) in generated_cases {
        cases.push((
            format!("{name} (generated)"),
            dir,
            serde_json::json!({"expect": "error", "contains": ["image_encoder.onnx"]}),
        ));
    }
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
