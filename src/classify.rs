//! `dishcam classify`: photo -> top-N classes, with per-stage timings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use dishcam_capture::decode::decode_file;
use dishcam_eval::timing::Samples;
use dishcam_models::HeadInput;
use dishcam_runtime::classify::Scored;
use dishcam_runtime::dish::label_of;
use dishcam_runtime::pack_recipes::{dish_recipes, open_index, SUGGESTED};
use dishcam_runtime::{DishOptions, NoDish};
use serde_json::{json, Value};

use crate::cli::{ms, no_dish_json, print_json, recipes_json, round3, show, top_json, EngineArgs};

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam classify dish.jpg                          # top 5 dishes and a recipe
  dishcam classify dish.jpg --precision int8 --json  # int8 encoder, one JSON line
  dishcam classify dish.jpg --text \"pad thai\"       # fused with a text (fusion head)
  dishcam classify --text \"grandma's apple pie\"     # a text alone (text head)")]
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

/// Timed stages, in `timings_ms` and the latency table; `check` is the no-dish check's own
/// encoder run (zero when the check reads the head's run, or the pack has no check).
const STAGES: [&str; 6] = ["decode", "preprocess", "encode", "check", "head", "total"];
/// Index of `check` in [`STAGES`], and of `total`.
const CHECK: usize = 3;
const TOTAL: usize = 5;

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let Some(text) = args.text.as_deref().filter(|_| args.images.is_empty()) else {
        return classify_photos(args);
    };
    classify_text(args, text)
}

/// Photos (with `--text`, fused with it by the pack's fusion head), one answer each.
fn classify_photos(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let t_load = Instant::now();
    let input = match args.text {
        Some(_) => HeadInput::PhotoAndText,
        None => HeadInput::Photo,
    };
    let mut dish = args.engine.dish_classifier(&DishOptions {
        head: args.head.as_deref(),
        input,
        ..DishOptions::default()
    })?;
    // With --text, the text is encoded once and fused with every photo.
    let text_took = match &args.text {
        Some(text) => Some(dish.set_text(Some(text))?),
        None => None,
    };
    // Recipes for the predicted dish come from the pack's recipe index, when it has one.
    let opts = args.engine.load_options()?;
    let recipe_index = match open_index(dish.pack(), &opts) {
        Ok(idx) => Some(idx),
        Err(e) => {
            log::info!("no recipe suggestions: {e}");
            None
        }
    };
    log::info!(
        "loaded {} on {} in {:.1} ms",
        dish.pack().manifest.name,
        dish.backend(),
        ms(t_load.elapsed())
    );
    let decode = args.engine.decode_options();
    // The text output shows the check's time only when the pack runs one.
    let checked = dish.no_dish_check().is_some();
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
            let decoded = t0.elapsed();
            let answer = dish.classify(&img, args.top)?;
            let t = answer.timings;
            for (s, d) in samples.iter_mut().zip([
                decoded,
                t.preprocess,
                t.encode,
                t.check,
                t.head,
                t0.elapsed(),
            ]) {
                s.push(d);
            }
            result = Some(Ok((img.dimensions(), answer.top, answer.no_dish)));
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
            Ok(((w, h), top, no_dish)) => {
                let (head, labels) = dish.answering();
                let last = |i: usize| {
                    samples[i].summary().map_or(0.0, |s| {
                        if args.repeat == 1 {
                            s.max_ms
                        } else {
                            s.median_ms
                        }
                    })
                };
                // A photo with no dish suggests no recipe.
                let recipes = match (top.first(), &no_dish) {
                    (Some(best), None) => recipes_json(&dish_recipes(
                        recipe_index.as_ref(),
                        &label_of(labels, best.class),
                        SUGGESTED,
                    )),
                    _ => Vec::new(),
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
                        "pack": dish.pack().manifest.name,
                        "head": head.name,
                        "backend": dish.backend().as_str(),
                        "precision": dish.precision().as_str(),
                        "timings_ms": timings,
                    });
                    if let Value::Object(v) = &mut v {
                        v.extend(answer_json(&top, labels, no_dish.as_ref(), &recipes));
                    }
                    if let (Some(text), Some(took)) = (&args.text, text_took) {
                        v["text"] = json!(text);
                        v["kind"] = json!(head.kind.as_str());
                        v["timings_ms"]["text_encode"] = json!(round3(ms(took)));
                    }
                    if args.repeat > 1 {
                        v["latency_ms"] = json!({"runs": args.repeat, "stages": latency});
                    }
                    print_json(&v);
                } else {
                    println!("{} ({w}x{h})", show(path));
                    if let Some(n) = &no_dish {
                        println!("  {n}");
                    }
                    for (r, s) in top.iter().enumerate() {
                        println!(
                            "  {:>2}. {:<40} {:>6.2}%",
                            r + 1,
                            label_of(labels, s.class),
                            s.probability * 100.0
                        );
                    }
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
                            dish.backend(),
                            dish.precision()
                        );
                        println!(
                            "    {:<11} {:>9} {:>9} {:>9}",
                            "stage", "median", "p90", "max"
                        );
                        for (i, stage) in STAGES.iter().enumerate() {
                            if i == CHECK && !checked {
                                continue;
                            }
                            if let Some(s) = samples[i].summary() {
                                println!(
                                    "    {:<11} {:>6.2} ms {:>6.2} ms {:>6.2} ms",
                                    stage, s.median_ms, s.p90_ms, s.max_ms
                                );
                            }
                        }
                    } else {
                        let check = if checked {
                            format!(", check {:.1} ms", last(CHECK))
                        } else {
                            String::new()
                        };
                        println!(
                            "  decode {:.1} ms, preprocess {:.1} ms, encode {:.1} ms{check}, total {:.1} ms",
                            last(0),
                            last(1),
                            last(2),
                            last(TOTAL)
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

/// What a photo shows, as `dishcam.classify/1` gives it: `dish` (the best class's label, null
/// when the photo shows no dish), `no_dish` (null, or the check's score, threshold and reason),
/// `top` and `recipes` (both empty when the photo shows no dish).
fn answer_json(
    top: &[Scored],
    labels: &[String],
    no_dish: Option<&NoDish>,
    recipes: &[Value],
) -> serde_json::Map<String, Value> {
    let (top, recipes) = match no_dish {
        Some(_) => (&[][..], &[][..]),
        None => (top, recipes),
    };
    serde_json::Map::from_iter([
        (
            "dish".to_string(),
            json!(top.first().map(|s| label_of(labels, s.class))),
        ),
        ("no_dish".to_string(), no_dish_json(no_dish)),
        ("top".to_string(), top_json(top, labels)),
        ("recipes".to_string(), json!(recipes)),
    ])
}

/// `classify --text`: text -> text encoder -> text head.
fn classify_text(args: &ClassifyArgs, text: &str) -> anyhow::Result<ExitCode> {
    let mut dish = args.engine.dish_classifier(&DishOptions {
        head: args.head.as_deref(),
        input: HeadInput::Text,
        ..DishOptions::default()
    })?;
    let (pack, backend, precision) = (
        dish.pack().manifest.name.clone(),
        dish.backend(),
        dish.precision(),
    );
    let answer = dish.classify_text(text, args.top)?;
    let t = answer.timings;
    let encode = t.text_encode.unwrap_or_default();
    if args.json {
        print_json(&json!({
            "schema": "dishcam.classify/1",
            "text": text,
            "pack": pack,
            "head": answer.head.name,
            "backend": backend.as_str(),
            "precision": precision.as_str(),
            "dish": answer.dish(),
            "no_dish": no_dish_json(answer.no_dish.as_ref()),
            "top": top_json(&answer.top, answer.labels),
            "timings_ms": {"encode": round3(ms(encode)), "head": round3(ms(t.head)), "total": round3(ms(encode + t.head))},
        }));
    } else {
        println!("{text:?}");
        for (r, s) in answer.top.iter().enumerate() {
            println!(
                "  {:>2}. {:<40} {:>6.2}%",
                r + 1,
                answer.label(s.class),
                s.probability * 100.0
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use dishcam_runtime::NoDishReason;

    use super::*;

    fn labels() -> Vec<String> {
        ["pho", "ramen", "sushi"].map(String::from).to_vec()
    }

    fn top() -> Vec<Scored> {
        vec![
            Scored {
                class: 1,
                probability: 0.75,
            },
            Scored {
                class: 0,
                probability: 0.25,
            },
        ]
    }

    #[test]
    fn a_photo_with_no_dish_has_a_null_dish_the_check_and_no_recipes() {
        let recipes = [json!({"id": "r1", "title": "Tonkotsu ramen"})];
        let not_food = NoDish {
            score: 0.125,
            threshold: 0.5,
            reason: NoDishReason::NotFood,
        };
        // A top and recipes handed in by mistake are not shown beside "no dish".
        let v = Value::Object(answer_json(&top(), &labels(), Some(&not_food), &recipes));
        assert_eq!(
            v,
            json!({
                "dish": null,
                "no_dish": {"score": 0.125, "threshold": 0.5, "reason": "not-food"},
                "top": [],
                "recipes": [],
            })
        );
        let too_small = NoDish {
            score: 0.0,
            threshold: 0.25,
            reason: NoDishReason::TooSmall {
                side: 1,
                min_side: 32,
            },
        };
        let v = Value::Object(answer_json(&[], &labels(), Some(&too_small), &[]));
        assert_eq!(
            v["no_dish"],
            json!({"score": 0.0, "threshold": 0.25, "reason": "too-small"})
        );
        assert_eq!(v["dish"], Value::Null);
        assert_eq!(v["recipes"], json!([]));
    }

    #[test]
    fn a_photo_with_a_dish_names_it_with_a_null_no_dish() {
        let recipes = [json!({"id": "r1", "title": "Tonkotsu ramen"})];
        let v = Value::Object(answer_json(&top(), &labels(), None, &recipes));
        assert_eq!(
            v,
            json!({
                "dish": "ramen",
                "no_dish": null,
                "top": [
                    {"rank": 1, "class": 1, "label": "ramen", "probability": 0.75},
                    {"rank": 2, "class": 0, "label": "pho", "probability": 0.25},
                ],
                "recipes": [{"id": "r1", "title": "Tonkotsu ramen"}],
            })
        );
    }
}
