//! Taught heads through the real load path: a head written to ONNX and loaded by the tract
//! backend gives the fitted head's outputs, and every fusion mode gives hand-computed values.

use dishcam_heads::fit::LinearHead;
use dishcam_models::onnx::encode;
use dishcam_models::pack::write_pack_file;
use dishcam_models::{Home, Pack};
use dishcam_runtime::backend::{backend, BackendKind};
use dishcam_runtime::classify::softmax_in_place;
use dishcam_runtime::head::Classifier;
use dishcam_runtime::LoadOptions;

/// A pack with 4-d image and 3-d text embeddings (encoder files are never read here) and
/// image, text, early-fusion and late-fusion heads over 2 classes.
fn pack_with_heads(dir: &std::path::Path) -> (Pack, [LinearHead; 3]) {
    let image = LinearHead {
        classes: 2,
        dim: 4,
        weight: vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        bias: vec![0.0, 0.0],
    };
    let text = LinearHead {
        classes: 2,
        dim: 3,
        weight: vec![0.0, 0.0, 2.0, 1.0, 0.0, 0.0],
        bias: vec![0.5, 0.0],
    };
    let early = LinearHead {
        classes: 2,
        dim: 7,
        weight: (0..14).map(|i| (i as f32 - 7.0) * 0.25).collect(),
        bias: vec![0.1, -0.1],
    };
    let labels = write_pack_file(dir, "labels.txt", b"soup\nstew\n").unwrap();
    let mut heads = String::new();
    for (name, kind, h) in [
        ("img", "image", &image),
        ("txt", "text", &text),
        ("early", "early-fusion", &early),
    ] {
        let f = write_pack_file(
            dir,
            &format!("{name}.onnx"),
            &encode(&h.to_onnx("features", name)),
        )
        .unwrap();
        heads += &format!(
            "[[heads]]\nname = \"{name}\"\nkind = \"{kind}\"\nclasses = 2\ntemperature = {}\nlabels = {{ file = \"labels.txt\", sha256 = \"{}\", bytes = {} }}\n[heads.variants.fp32]\nfile = \"{}\"\nsha256 = \"{}\"\nbytes = {}\n\n",
            if name == "txt" { 2.0 } else { 1.0 },
            labels.sha256, labels.bytes, f.file, f.sha256, f.bytes
        );
    }
    heads += &format!(
        "[[heads]]\nname = \"late\"\nkind = \"late-fusion\"\nclasses = 2\nlabels = {{ file = \"labels.txt\", sha256 = \"{}\", bytes = {} }}\nfuse = {{ image_head = \"img\", text_head = \"txt\", text_weight = 0.25 }}\n",
        labels.sha256, labels.bytes
    );
    let fake = |f: &str| {
        format!(
            "{{ file = \"{f}\", sha256 = \"{}\", bytes = 1 }}",
            "0".repeat(64)
        )
    };
    let manifest = format!(
        r#"format_version = 1
name = "tiny"
version = "0"
default_head = "img"
text_head = "txt"
fusion_head = "late"

[image_encoder]
layout = "nchw"
embedding_output = "embedding"
embedding_dim = 4
input = {{ name = "pixels", dtype = "f32", shape = ["batch", 3, 8, 8] }}
outputs = [{{ name = "embedding", dtype = "f32", shape = ["batch", 4] }}]
[image_encoder.variants]
fp32 = {enc}
[image_encoder.preprocess]
width = 8
height = 8
interpolation = "bilinear"
colour_order = "rgb"
range = 255.0
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
crop = {{ mode = "center", fraction = 1.0 }}

[text_encoder]
max_length = 8
embedding_output = "sentence_embedding"
embedding_dim = 3
pooling = "mean"
normalize = true
pooled_in_graph = true
tokenizer = {tok}
inputs = [
    {{ name = "input_ids", dtype = "i64", shape = ["batch", "seq"] }},
    {{ name = "attention_mask", dtype = "i64", shape = ["batch", "seq"] }},
]
outputs = [{{ name = "sentence_embedding", dtype = "f32", shape = ["batch", 3] }}]
[text_encoder.variants]
fp32 = {enc2}

{heads}"#,
        enc = fake("image.onnx"),
        enc2 = fake("text.onnx"),
        tok = fake("tokenizer.json"),
    );
    std::fs::write(dir.join("pack.toml"), manifest).unwrap();
    let home = Home::at(dir.join("home"));
    let pack = Pack::open_dir(dir, &home).unwrap_or_else(|e| panic!("{e}"));
    (pack, [image, text, early])
}

fn probs(mut scores: Vec<f32>, t: f32) -> Vec<f32> {
    softmax_in_place(&mut scores, t);
    scores
}

#[test]
fn every_head_kind_scores_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (pack, [image, text, early]) = pack_with_heads(dir.path());
    let b = backend(BackendKind::Tract).unwrap();
    let opts = LoadOptions::default();
    let load = |name: &str| {
        Classifier::load(&pack, pack.manifest.head(name).unwrap(), b.as_ref(), &opts).unwrap()
    };
    let img = [3f32.ln(), 0.0, 0.5, -1.0];
    let txt = [0.0f32, 0.0, 3f32.ln() - 0.25];

    // Saved heads give the fitted heads' logits through tract.
    let got = load("img").scores(Some(&img), None).unwrap();
    let want = image.logits(&img);
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{got:?} vs {want:?}"
    );
    let got = load("txt").scores(None, Some(&txt)).unwrap();
    let want = text.logits(&txt);
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{got:?} vs {want:?}"
    );

    // Early fusion reads [img / |img|, txt / |txt|].
    let n_img: f32 = img.iter().map(|v| v * v).sum::<f32>().sqrt();
    let n_txt: f32 = txt.iter().map(|v| v * v).sum::<f32>().sqrt();
    let cat: Vec<f32> = img
        .iter()
        .map(|v| v / n_img)
        .chain(txt.iter().map(|v| v / n_txt))
        .collect();
    let got = load("early").scores(Some(&img), Some(&txt)).unwrap();
    let want = early.logits(&cat);
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
        "{got:?} vs {want:?}"
    );

    // Late fusion: image p = softmax(ln 3, 0) = (0.75, 0.25); text logits (0.5 + 2 (ln 3 -
    // 0.25), 0) = (2 ln 3, 0) at the text head's temperature 2 -> (0.75, 0.25). Mixed with
    // w = 0.25, both agree: p = (0.75, 0.25).
    let got = probs(load("late").scores(Some(&img), Some(&txt)).unwrap(), 1.0);
    assert!(
        (got[0] - 0.75).abs() < 1e-5 && (got[1] - 0.25).abs() < 1e-5,
        "{got:?}"
    );

    // A head given the wrong inputs says what it needs.
    let err = load("late")
        .scores(Some(&img), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a text"), "{err}");
    let err = load("img")
        .scores(Some(&img[..3]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head input"), "{err}");
}
