//! `dishcam classify`: photo -> top-N classes, with per-stage timings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use dishcam_models::manifest::{Head, HeadKind};
use dishcam_models::Pack;
use dishcam_runtime::classify::{softmax_in_place, top_k, Scored};
use dishcam_runtime::head::{read_labels, Classifier, HeadModel};
use dishcam_runtime::image_io::decode_file;
use dishcam_runtime::timing::Samples;
use dishcam_runtime::{ImageEncoder, TextEncoder};
use serde_json::json;

use crate::{print_json, show, EngineArgs};

#[derive(Args)]
pub struct ClassifyArgs {
    /// Photos to classify (JPEG, PNG, WebP, GIF, BMP, TIFF; recognised by content, not name).
    #[arg(required_unless_present = "text")]
    images: Vec<PathBuf>,
    /// A text (e.g. a recipe title). Alone: classified with the pack's text head. With photos:
    /// fused with each photo by the pack's fusion head (early or late fusion).
    #[arg(long)]
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

/// The head to classify photos with: `head` if given, else the pack's default image head (or,
/// with a text to fuse, its fusion head); refused with the reason when it is of the wrong kind.
pub fn pick_head<'a>(pack: &'a Pack, head: Option<&str>, fused: bool) -> anyhow::Result<&'a Head> {
    let m = &pack.manifest;
    let (wanted, default): (&[HeadKind], _) = if fused {
        (
            &[HeadKind::EarlyFusion, HeadKind::LateFusion],
            m.fusion_head.clone(),
        )
    } else {
        (&[HeadKind::Image], m.default_head.clone())
    };
    let head_name = head
        .map(str::to_string)
        .or(default)
        .or_else(|| {
            m.heads
                .iter()
                .find(|h| wanted.contains(&h.kind))
                .map(|h| h.name.clone())
        })
        .with_context(|| {
            if fused {
                format!("pack '{}' has no fusion head; fit one with `dishcam teach --images DIR --text-csv FILE`, or leave out --text", m.name)
            } else {
                format!("pack '{}' has no image head", m.name)
            }
        })?;
    let head = m.head(&head_name).with_context(|| {
        let names: Vec<&str> = m.heads.iter().map(|h| h.name.as_str()).collect();
        format!(
            "pack '{}' has no head '{head_name}' (heads: {})",
            m.name,
            names.join(", ")
        )
    })?;
    if !wanted.contains(&head.kind) {
        bail!(
            "head '{head_name}' of pack '{}' is a {} head; {}",
            m.name,
            head.kind.as_str(),
            if fused {
                "photos with --text need a fusion head"
            } else {
                "classify photos with an image head"
            }
        );
    }
    Ok(head)
}

const STAGES: [&str; 5] = ["decode", "preprocess", "encode", "head", "total"];

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let pack = args.engine.open_pack()?;
    if args.images.is_empty() {
        let text = args
            .text
            .as_deref()
            .expect("clap requires photos or --text");
        return classify_text(args, &pack, text);
    }
    let m = &pack.manifest;
    let head = pick_head(&pack, args.head.as_deref(), args.text.is_some())?;
    let head_name = head.name.clone();
    let labels = read_labels(&pack, head)?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let t_load = Instant::now();
    let extra: Vec<&str> = head.encoder_output.as_deref().into_iter().collect();
    let mut encoder = ImageEncoder::load(&pack, backend.as_ref(), &opts, &extra)?;
    let mut classifier = Classifier::load(&pack, head, backend.as_ref(), &opts)?;
    // With --text, the text is encoded once and fused with every photo.
    let text_embedding = match &args.text {
        Some(text) => {
            let mut enc = TextEncoder::load(&pack, backend.as_ref(), &opts)?;
            let t = Instant::now();
            let e = enc.encode(text)?;
            Some((e, t.elapsed()))
        }
        None => None,
    };
    // Recipes for the predicted dish come from the pack's recipe index, when it has one.
    let recipe_index = match crate::recipes::open_index(&pack, &opts) {
        Ok(idx) => Some(idx),
        Err(e) => {
            log::info!("no recipe suggestions: {e}");
            None
        }
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
            let image = match head.encoder_output {
                Some(_) => out.pop().expect("the head output was requested"),
                None => out.swap_remove(0),
            };
            let text = text_embedding.as_ref().map(|(e, _)| e.as_slice());
            let mut probs = classifier.scores(Some(&image), text)?;
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
                        "top": top_json(&top, &labels),
                        "recipes": recipes_for(recipe_index.as_ref(), &top, &labels),
                        "timings_ms": timings,
                    });
                    if let (Some(text), Some((_, took))) = (&args.text, &text_embedding) {
                        v["text"] = json!(text);
                        v["kind"] = json!(head.kind.as_str());
                        v["timings_ms"]["text_encode"] = json!(round3(took.as_secs_f64() * 1e3));
                    }
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
                    let recipes = recipes_for(recipe_index.as_ref(), &top, &labels);
                    if let Some(first) = recipes.first() {
                        println!(
                            "  recipe: {} ({}){}",
                            first["title"].as_str().unwrap_or(""),
                            first["id"].as_str().unwrap_or(""),
                            if recipes.len() > 1 {
                                format!(", {} more with --json", recipes.len() - 1)
                            } else {
                                String::new()
                            }
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

/// Up to 3 recipes for the most likely dish.
fn recipes_for(
    idx: Option<&dishcam_recipes::RecipeIndex>,
    top: &[Scored],
    labels: &[String],
) -> Vec<serde_json::Value> {
    match top.first().and_then(|s| labels.get(s.class)) {
        Some(class) => crate::recipes::for_dish(idx, class, 3),
        None => Vec::new(),
    }
}

/// The `top` array of `dishcam.classify/1` (also the web API's): rank, class, label,
/// probability.
pub fn top_json(top: &[Scored], labels: &[String]) -> serde_json::Value {
    top.iter()
        .enumerate()
        .map(|(r, s)| {
            json!({
                "rank": r + 1,
                "class": s.class,
                "label": labels.get(s.class).cloned().unwrap_or_else(|| format!("class {}", s.class)),
                "probability": s.probability,
            })
        })
        .collect()
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
            .text_head
            .as_deref()
            .and_then(|n| m.head(n))
            .or_else(|| m.heads.iter().find(|h| h.kind == HeadKind::Text))
            .with_context(|| {
                format!(
                    "pack '{}' has no text head; fit one with `dishcam teach --text-csv FILE`",
                    m.name
                )
            })?,
    };
    if head.kind != HeadKind::Text {
        bail!(
            "head '{}' is a {} head; --text alone needs a text head (give photos too for a fusion head)",
            head.name,
            head.kind.as_str()
        );
    }
    let labels = read_labels(pack, head)?;
    let backend = args.engine.backend()?;
    let opts = args.engine.load_options()?;
    let mut encoder = TextEncoder::load(pack, backend.as_ref(), &opts)?;
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
            "top": top_json(&top, &labels),
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
