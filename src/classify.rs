//! `dishcam classify`: photo -> top-N classes, with per-stage timings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use dishcam_models::manifest::HeadKind;
use dishcam_runtime::classify::{softmax_in_place, top_k};
use dishcam_runtime::image_io::decode_file;
use dishcam_runtime::timing::Samples;
use dishcam_runtime::ImageEncoder;
use serde_json::json;

use crate::{print_json, show, EngineArgs};

#[derive(Args)]
pub struct ClassifyArgs {
    /// Photos to classify (JPEG, PNG, WebP, GIF, BMP, TIFF; recognised by content, not name).
    #[arg(required = true)]
    images: Vec<PathBuf>,
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
    let Some(output) = head.encoder_output.as_deref() else {
        bail!(
            "head '{head_name}' of pack '{}' is a separate {:?} model; this dishcam classifies with heads that are image-encoder outputs (e.g. --head imagenet)",
            m.name,
            head.kind
        );
    };
    let labels_text = pack.read_verified("labels", &head.labels)?;
    let labels: Vec<String> = String::from_utf8_lossy(&labels_text)
        .lines()
        .map(str::to_string)
        .collect();
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let t_load = Instant::now();
    let mut encoder = ImageEncoder::load(&pack, backend.as_ref(), &opts, &[output])?;
    log::info!(
        "loaded {} image encoder on {} in {:.1} ms",
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
            let mut probs = out.pop().expect("the head output was requested");
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
