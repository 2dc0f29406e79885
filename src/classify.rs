//! `dishcam classify`: photo -> top-N classes, with per-stage timings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use dishcam_models::manifest::HeadKind;
use dishcam_runtime::classify::{softmax_in_place, top_k};
use dishcam_runtime::head::{read_labels, HeadModel};
use dishcam_runtime::image_io::decode_file;
use dishcam_runtime::timing::Samples;
use dishcam_runtime::ImageEncoder;
use serde_json::json;

use crate::{print_json, show, EngineArgs};

#[derive(Args)]
pub struct ClassifyArgs {
    /// Photos to classify (JPEG, PNG, WebP, GIF, BMP, TIFF; recognised by content, not name).
    #[arg(required_unless_present = "text")]
    images: Vec<PathBuf>,
    /// Classify a text (e.g. a recipe title) with the pack's text head instead of photos.
    #[arg(long, conflicts_with = "images")]
    text: Option<String>,
    /// How many classes to print per photo.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per photo on stdout (schema `dishcam.classify/1`, see docs/cli-json.md).
    #[arg(long)]
    json: bool,
    /// Head to classify with (default: the pack's default head).
    #[arg(long)]
    head: Option<String>,
    /// Run decode -> preprocess -> encode -> head this many times per photo and report
    /// per-stage latency (median, p90).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

const STAGES: [&str; 5] = ["decode", "preprocess", "encode", "head", "total"];

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let pack = args.engine.open_pack()?;
    if let Some(text) = &args.text {
        return classify_text(args, &pack, text);
    }
    let m = &pack.manifest;
    let head_name = args
        .head
        .clone()
        .or_else(|| m.default_head.clone())
        .or_else(|| {
            m.heads
                .iter()
                .find(|h| h.kind == HeadKind::Image)
                .map(|h| h.name.clone())
        })
        .with_context(|| format!("pack '{}' has no image head", m.name))?;
    let head = m.head(&head_name).with_context(|| {
        let names: Vec<&str> = m.heads.iter().map(|h| h.name.as_str()).collect();
        format!(
            "pack '{}' has no head '{head_name}' (heads: {})",
            m.name,
            names.join(", ")
        )
    })?;
    if head.kind != HeadKind::Image {
        bail!(
            "head '{head_name}' of pack '{}' is a {:?} head; classify photos with an image head",
            m.name,
            head.kind
        );
    }
    let labels = read_labels(&pack, head)?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let t_load = Instant::now();
    let extra: Vec<&str> = head.encoder_output.as_deref().into_iter().collect();
    let mut encoder = ImageEncoder::load(&pack, backend.as_ref(), &opts, &extra)?;
    let mut head_model = match head.encoder_output {
        Some(_) => None,
        None => Some(HeadModel::load(&pack, head, backend.as_ref(), &opts)?),
    };
    log::info!(
        "loaded {} on {} in {:.1} ms",
        m.name,
        backend.kind(),
        t_load.elapsed().as_secs_f64() * 1e3
    );
    let decode = args.engine.decode_options();

    let mut failures = 0;
    for path in &args.images {
        let mut samples: Vec<Samples> = vec![Samples::default(); STAGES.len()];
        let mut result = None;
        for _ in 0..args.repeat {
            let t0 = Instant::now();
            let img = match decode_file(path, &decode) {
                Ok(img) => img,
                Err(e) => {
                    result = Some(Err(anyhow::Error::from(e)));
                    break;
                }
            };
            let t1 = Instant::now();
            encoder.preprocess(&img)?;
            let t2 = Instant::now();
            let mut out = encoder.run()?;
            let t3 = Instant::now();
            let mut probs = match head_model.as_mut() {
                Some(h) => h.logits(&out[0])?,
                None => out.pop().expect("the head output was requested"),
            };
            softmax_in_place(&mut probs, head.temperature);
            let top = top_k(&probs, args.top);
            let t4 = Instant::now();
            for (s, d) in samples
                .iter_mut()
                .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0])
            {
                s.push(d);
            }
            result = Some(Ok((img.dimensions(), top)));
        }
        match result.expect("repeat >= 1") {
            Err(e) => {
                failures += 1;
                if args.json {
                    print_json(
                        &json!({"schema": "dishcam.classify/1", "image": show(path), "error": e.to_string()}),
                    );
                }
                eprintln!("error: {e}");
            }
            Ok(((w, h), top)) => {
                let label = |c: usize| {
                    labels
                        .get(c)
                        .cloned()
                        .unwrap_or_else(|| format!("class {c}"))
                };
                let last = |i: usize| {
                    samples[i].summary().map_or(0.0, |s| {
                        if args.repeat == 1 {
                            s.max_ms
                        } else {
                            s.median_ms
                        }
                    })
                };
                if args.json {
                    let mut latency = serde_json::Map::new();
                    let mut timings = serde_json::Map::new();
                    for (i, stage) in STAGES.iter().enumerate() {
                        timings.insert(stage.to_string(), json!(round3(last(i))));
                        if args.repeat > 1 {
                            latency.insert(stage.to_string(), json!(samples[i].summary()));
                        }
                    }
                    let mut v = json!({
                        "schema": "dishcam.classify/1",
                        "image": show(path),
                        "width": w,
                        "height": h,
                        "pack": m.name,
                        "head": head_name,
                        "backend": backend.kind().as_str(),
                        "precision": opts.precision.as_str(),
                        "top": top.iter().enumerate().map(|(r, s)| json!({
                            "rank": r + 1, "class": s.class, "label": label(s.class), "probability": s.probability,
                        })).collect::<Vec<_>>(),
                        "timings_ms": timings,
                    });
                    if args.repeat > 1 {
                        v["latency_ms"] = json!({"runs": args.repeat, "stages": latency});
                    }
                    print_json(&v);
                } else {
                    println!("{} ({w}x{h})", show(path));
                    for (r, s) in top.iter().enumerate() {
                        println!(
                            "  {:>2}. {:<40} {:>6.2}%",
                            r + 1,
                            label(s.class),
                            s.probability * 100.0
                        );
                    }
                    if args.repeat > 1 {
                        println!(
                            "  latency over {} runs ({}, {}):",
                            args.repeat,
                            backend.kind(),
                            opts.precision
                        );
                        println!(
                            "    {:<11} {:>9} {:>9} {:>9}",
                            "stage", "median", "p90", "max"
                        );
                        for (i, stage) in STAGES.iter().enumerate() {
                            if let Some(s) = samples[i].summary() {
                                println!(
                                    "    {:<11} {:>6.2} ms {:>6.2} ms {:>6.2} ms",
                                    stage, s.median_ms, s.p90_ms, s.max_ms
                                );
                            }
                        }
                    } else {
                        println!(
                            "  decode {:.1} ms, preprocess {:.1} ms, encode {:.1} ms, total {:.1} ms",
                            last(0),
                            last(1),
                            last(2),
                            last(4)
                        );
                    }
                }
            }
        }
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `classify --text`: text -> text encoder -> text head.
fn classify_text(
    args: &ClassifyArgs,
    pack: &dishcam_models::Pack,
    text: &str,
) -> anyhow::Result<ExitCode> {
    let m = &pack.manifest;
    let head = match &args.head {
        Some(name) => m
            .head(name)
            .with_context(|| format!("pack '{}' has no head '{name}'", m.name))?,
        None => m
            .heads
            .iter()
            .find(|h| h.kind == HeadKind::Text)
            .with_context(|| {
                format!(
                    "pack '{}' has no text head; fit one with `dishcam teach --text-csv FILE`",
                    m.name
                )
            })?,
    };
    if head.kind != HeadKind::Text {
        bail!(
            "head '{}' is a {:?} head; --text needs a text head",
            head.name,
            head.kind
        );
    }
    let labels = read_labels(pack, head)?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let mut encoder = dishcam_runtime::TextEncoder::load(pack, backend.as_ref(), &opts)?;
    let mut model = HeadModel::load(pack, head, backend.as_ref(), &opts)?;
    let t0 = Instant::now();
    let embedding = encoder.encode(text)?;
    let t1 = Instant::now();
    let mut probs = model.logits(&embedding)?;
    softmax_in_place(&mut probs, head.temperature);
    let top = top_k(&probs, args.top);
    let t2 = Instant::now();
    let label = |c: usize| {
        labels
            .get(c)
            .cloned()
            .unwrap_or_else(|| format!("class {c}"))
    };
    if args.json {
        print_json(&json!({
            "schema": "dishcam.classify/1",
            "text": text,
            "pack": m.name,
            "head": head.name,
            "backend": backend.kind().as_str(),
            "precision": opts.precision.as_str(),
            "top": top.iter().enumerate().map(|(r, s)| json!({"rank": r + 1, "class": s.class, "label": label(s.class), "probability": s.probability})).collect::<Vec<_>>(),
            "timings_ms": {"encode": round3((t1 - t0).as_secs_f64() * 1e3), "head": round3((t2 - t1).as_secs_f64() * 1e3), "total": round3((t2 - t0).as_secs_f64() * 1e3)},
        }));
    } else {
        println!("{text:?}");
        for (r, s) in top.iter().enumerate() {
            println!(
                "  {:>2}. {:<40} {:>6.2}%",
                r + 1,
                label(s.class),
                s.probability * 100.0
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
