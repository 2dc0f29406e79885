//! Packs on disk: where they live, opening one by name or path, the user overlay, verification.
//!
//! Layout under `$DISHCAM_HOME` (default: the platform data dir, e.g. `~/.local/share/dishcam`):
//! ```text
//! packs/<name>/pack.toml ...         immutable base packs, rebuilt bit for bit by `models pull`
//! overlays/<name>-<hash16>/          what the user made for that exact base pack (taught heads,
//!     overlay.toml ...               own calibrations, recipe index); `pull` never touches it
//! cache/                             downloads; may be wiped without losing anything
//! ```
//! Lookups of a file go to the overlay first, then to the base pack.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{Dim, Head, HeadKind, Manifest, PackFile, Precision, TensorSpec, Variant};
use crate::onnx;

/// The manifest file name inside a pack directory.
pub const MANIFEST: &str = "pack.toml";
/// The overlay manifest file name inside an overlay directory.
pub const OVERLAY_MANIFEST: &str = "overlay.toml";

/// Errors opening or verifying a pack. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    #[error("pack '{name}' is not installed in {home} (installed: {installed}); run `dishcam models pull {name}` or pass a pack directory")]
    NotFound {
        name: String,
        home: String,
        installed: String,
    },
    #[error("{path}: cannot read ({source})")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("{path}: {problems}")]
    Invalid { path: String, problems: String },
    #[error("cannot find a home directory for dishcam; set DISHCAM_HOME")]
    NoHome,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The dishcam data directory.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$DISHCAM_HOME`, or the platform data dir + `dishcam`.
    pub fn from_env() -> Result<Home, PackError> {
        if let Some(p) = std::env::var_os("DISHCAM_HOME").filter(|p| !p.is_empty()) {
            return Ok(Home {
                root: PathBuf::from(p),
            });
        }
        dirs::data_dir()
            .map(|d| Home {
                root: d.join("dishcam"),
            })
            .ok_or(PackError::NoHome)
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn packs(&self) -> PathBuf {
        self.root.join("packs")
    }
    pub fn overlays(&self) -> PathBuf {
        self.root.join("overlays")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Names of the installed base packs.
    pub fn installed(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.packs())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(MANIFEST).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }
}

/// What a user added on top of one base pack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayManifest {
    /// Heads added or replacing base heads of the same name; files live in the overlay dir.
    #[serde(default)]
    pub heads: Vec<Head>,
    /// Extra precision variants of the image encoder (e.g. int8 calibrated on the user's frames).
    #[serde(default)]
    pub image_encoder_variants: BTreeMap<Precision, Variant>,
    #[serde(default)]
    pub text_encoder_variants: BTreeMap<Precision, Variant>,
    #[serde(default)]
    pub default_head: Option<String>,
    #[serde(default)]
    pub text_head: Option<String>,
    #[serde(default)]
    pub fusion_head: Option<String>,
}

/// An opened pack: the base manifest merged with its overlay.
#[derive(Debug, Clone)]
pub struct Pack {
    /// The base pack directory.
    pub dir: PathBuf,
    /// The overlay directory for this base pack (may not exist yet).
    pub overlay_dir: PathBuf,
    /// Base manifest with the overlay applied.
    pub manifest: Manifest,
    /// sha256 of the base `pack.toml`, which pins every base file through its hashes.
    pub manifest_sha256: String,
    /// The base manifest, before the overlay.
    base: Manifest,
    overlay_files: HashSet<String>,
}

/// Parses and validates the bytes of a `pack.toml` (everything [`Pack::open_dir`] checks before
/// it looks at overlays or files); `path` names the manifest in errors.
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest, PackError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PackError::Manifest {
        path: path.display().to_string(),
        message: "is not UTF-8 text".into(),
    })?;
    let manifest = Manifest::from_toml(text).map_err(|e| PackError::Manifest {
        path: path.display().to_string(),
        message: format!(
            "{}; fix the field or re-create the pack",
            e.message().trim()
        ) + &line_hint(text, e.span()),
    })?;
    let problems = manifest.validate();
    if !problems.is_empty() {
        return Err(PackError::Invalid {
            path: path.display().to_string(),
            problems: join_problems(&problems),
        });
    }
    Ok(manifest)
}

impl Pack {
    /// Opens `spec`: a pack directory, a `pack.toml` path, or the name of an installed pack.
    pub fn open(spec: &str, home: &Home) -> Result<Pack, PackError> {
        let p = Path::new(spec);
        let dir = if p.is_dir() && p.join(MANIFEST).is_file() {
            p.to_path_buf()
        } else if p.is_file() && p.file_name().is_some_and(|n| n == MANIFEST) {
            p.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else if p.is_dir() {
            return Err(PackError::Manifest {
                path: p.join(MANIFEST).display().to_string(),
                message: "missing: this directory is not a pack".into(),
            });
        } else {
            let dir = home.packs().join(spec);
            if spec.contains('/') || !dir.join(MANIFEST).is_file() {
                let installed = home.installed();
                return Err(PackError::NotFound {
                    name: spec.to_string(),
                    home: home.packs().display().to_string(),
                    installed: if installed.is_empty() {
                        "none".into()
                    } else {
                        installed.join(", ")
                    },
                });
            }
            dir
        };
        Self::open_dir(&dir, home)
    }

    /// Opens the pack in `dir`, applying its overlay from `home`.
    pub fn open_dir(dir: &Path, home: &Home) -> Result<Pack, PackError> {
        let mpath = dir.join(MANIFEST);
        let text = fs::read(&mpath).map_err(io_err(&mpath))?;
        let manifest_sha256 = hex::encode(Sha256::digest(&text));
        let mut manifest = parse_manifest(&mpath, &text)?;
        let overlay_dir =
            home.overlays()
                .join(format!("{}-{}", manifest.name, &manifest_sha256[..16]));
        let mut overlay_files = HashSet::new();
        let base = manifest.clone();
        let opath = overlay_dir.join(OVERLAY_MANIFEST);
        if opath.is_file() {
            let text = fs::read_to_string(&opath).map_err(io_err(&opath))?;
            let overlay: OverlayManifest =
                toml::from_str(&text).map_err(|e| PackError::Manifest {
                    path: opath.display().to_string(),
                    message: e.message().trim().to_string(),
                })?;
            apply_overlay(&mut manifest, overlay, &mut overlay_files);
            let problems = manifest.validate();
            if !problems.is_empty() {
                return Err(PackError::Invalid {
                    path: opath.display().to_string(),
                    problems: join_problems(&problems),
                });
            }
        }
        Ok(Pack {
            dir: dir.to_path_buf(),
            overlay_dir,
            manifest,
            manifest_sha256,
            base,
            overlay_files,
        })
    }

    /// The base manifest with `overlay` applied instead of the current overlay: what the pack
    /// would be after writing it (validate it before you do).
    pub fn with_overlay(&self, overlay: OverlayManifest) -> Manifest {
        let mut m = self.base.clone();
        apply_overlay(&mut m, overlay, &mut HashSet::new());
        m
    }

    /// Where `file` lives: in the overlay if the overlay named it, else in the base pack.
    pub fn path(&self, file: &PackFile) -> PathBuf {
        if self.overlay_files.contains(&file.file) {
            self.overlay_dir.join(&file.file)
        } else {
            self.dir.join(&file.file)
        }
    }

    /// Reads `file`, checking size and sha256, and that it does not leave its directory through
    /// a symlink. `field` names the manifest field in errors.
    pub fn read_verified(&self, field: &str, file: &PackFile) -> Result<Vec<u8>, PackError> {
        let path = self.checked_path(field, file)?;
        let mut bytes = Vec::with_capacity(file.bytes as usize);
        fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(&path))?;
        self.check_contents(field, file, &path, &bytes)?;
        Ok(bytes)
    }

    /// Checks `file`'s size and sha256 without keeping its bytes.
    pub fn verify_file(&self, field: &str, file: &PackFile) -> Result<PathBuf, PackError> {
        let path = self.checked_path(field, file)?;
        let digest = sha256_file(&path).map_err(io_err(&path))?;
        let len = fs::metadata(&path).map_err(io_err(&path))?.len();
        if len != file.bytes || digest != file.sha256 {
            return Err(self.mismatch(field, file, &path, len));
        }
        Ok(path)
    }

    fn check_contents(
        &self,
        field: &str,
        file: &PackFile,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), PackError> {
        if bytes.len() as u64 != file.bytes || hex::encode(Sha256::digest(bytes)) != file.sha256 {
            return Err(self.mismatch(field, file, path, bytes.len() as u64));
        }
        Ok(())
    }

    fn mismatch(&self, field: &str, file: &PackFile, path: &Path, len: u64) -> PackError {
        let what = if len != file.bytes {
            format!(
                "is {len} bytes, the manifest says {} (file truncated or changed)",
                file.bytes
            )
        } else {
            "sha256 does not match the manifest (file changed or corrupt)".to_string()
        };
        PackError::Invalid {
            path: path.display().to_string(),
            problems: format!("{field}: {what}; {}", self.fix_hint()),
        }
    }

    fn checked_path(&self, field: &str, file: &PackFile) -> Result<PathBuf, PackError> {
        let path = self.path(file);
        let root = if self.overlay_files.contains(&file.file) {
            &self.overlay_dir
        } else {
            &self.dir
        };
        let (canon, root) = match (path.canonicalize(), root.canonicalize()) {
            (Ok(c), Ok(r)) => (c, r),
            _ => {
                return Err(PackError::Invalid {
                    path: path.display().to_string(),
                    problems: format!("{field}: file is missing; {}", self.fix_hint()),
                })
            }
        };
        if !canon.starts_with(&root) {
            return Err(PackError::Invalid {
                path: path.display().to_string(),
                problems: format!("{field}: resolves to {} outside the pack directory; packs may only use their own files", canon.display()),
            });
        }
        Ok(path)
    }

    fn fix_hint(&self) -> String {
        format!(
            "run `dishcam models pull {}` to rebuild the pack",
            self.manifest.name
        )
    }

    /// Checks every file (existence, size, sha256), that each ONNX file's inputs and outputs
    /// match the manifest, that label files have one line per class, and that the tokenizer is
    /// JSON. Returns every problem found (empty when the pack is sound).
    pub fn verify(&self, mut progress: impl FnMut(&str)) -> Vec<String> {
        let mut problems = Vec::new();
        let m = &self.manifest;
        for (field, file) in m.files() {
            progress(&file.file);
            if let Err(e) = self.verify_file(&field, file) {
                problems.push(e.to_string());
            }
        }
        if !problems.is_empty() {
            return problems;
        }
        let mut check_io = |field: &str,
                            file: &PackFile,
                            inputs: &[TensorSpec],
                            outputs: &[TensorSpec]| {
            let path = self.path(file);
            match onnx::read_signature(&path) {
                Err(e) => problems.push(e.to_string()),
                Ok(sig) => {
                    problems.extend(compare_specs(&path, field, "input", inputs, &sig.inputs));
                    problems.extend(compare_specs(&path, field, "output", outputs, &sig.outputs));
                }
            }
        };
        if let Some(e) = &m.image_encoder {
            for (p, v) in &e.variants {
                check_io(
                    &format!("image_encoder.variants.{p}"),
                    &v.onnx,
                    std::slice::from_ref(&e.input),
                    &e.outputs,
                );
            }
        }
        if let Some(t) = &m.text_encoder {
            for (p, v) in &t.variants {
                check_io(
                    &format!("text_encoder.variants.{p}"),
                    &v.onnx,
                    &t.inputs,
                    &t.outputs,
                );
            }
            let path = self.path(&t.tokenizer);
            if let Err(e) = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            }) {
                problems.push(format!(
                    "{}: text_encoder.tokenizer is not a tokenizer.json ({e})",
                    path.display()
                ));
            }
        }
        for (i, h) in m.heads.iter().enumerate() {
            let image_dim = m.image_encoder.as_ref().map_or(0, |e| e.embedding_dim);
            let text_dim = m.text_encoder.as_ref().map_or(0, |t| t.embedding_dim);
            let dim = match h.kind {
                HeadKind::Image => image_dim,
                HeadKind::Text => text_dim,
                HeadKind::EarlyFusion => image_dim + text_dim,
                HeadKind::LateFusion => 0,
            };
            for (p, v) in &h.variants {
                let field = format!("heads[{i}].variants.{p}");
                let path = self.path(&v.onnx);
                match onnx::read_signature(&path) {
                    Err(e) => problems.push(e.to_string()),
                    Ok(sig) => {
                        let want = |d: usize| vec![Dim::named("batch"), Dim::Fixed(d as u64)];
                        let ok_in = sig.inputs.len() == 1
                            && (dim == 0 || dims_match(&sig.inputs[0].shape, &want(dim)));
                        let ok_out = sig.outputs.len() == 1
                            && dims_match(&sig.outputs[0].shape, &want(h.classes));
                        if !ok_in || !ok_out {
                            let text = |v: &[TensorSpec]| {
                                v.iter()
                                    .map(|s| format!("{} {}", s.name, s.shape_text()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            };
                            problems.push(format!(
                                "{}: {field}: head model maps ({}) to ({}), but a {:?} head of this pack maps [batch, {dim}] to [batch, {}]",
                                path.display(),
                                text(&sig.inputs),
                                text(&sig.outputs),
                                h.kind,
                                h.classes
                            ));
                        }
                    }
                }
            }
            let path = self.path(&h.labels);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let n = text.lines().count();
                    if n != h.classes {
                        problems.push(format!(
                            "{}: heads[{i}].labels has {n} lines but the head has {} classes",
                            path.display(),
                            h.classes
                        ));
                    }
                }
                Err(e) => problems.push(format!("{}: heads[{i}].labels: {e}", path.display())),
            }
        }
        problems
    }
}

/// Compares the manifest's tensor specs with the ONNX file's, by name.
fn compare_specs(
    path: &Path,
    field: &str,
    kind: &str,
    want: &[TensorSpec],
    got: &[TensorSpec],
) -> Vec<String> {
    let mut out = Vec::new();
    for w in want {
        match got.iter().find(|g| g.name == w.name) {
            None => out.push(format!(
                "{}: {field}: the model has no {kind} '{}' (it has: {})",
                path.display(),
                w.name,
                got.iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(g) => {
                let dims_ok = dims_match(&g.shape, &w.shape);
                if g.dtype != w.dtype || !dims_ok {
                    out.push(format!(
                        "{}: {field}: {kind} '{}' is {} {} in the model but {} {} in the manifest",
                        path.display(),
                        w.name,
                        g.dtype,
                        g.shape_text(),
                        w.dtype,
                        w.shape_text()
                    ));
                }
            }
        }
    }
    if kind == "input" {
        for g in got {
            if !want.iter().any(|w| w.name == g.name) {
                out.push(format!(
                    "{}: {field}: the model has an input '{}' the manifest does not describe",
                    path.display(),
                    g.name
                ));
            }
        }
    }
    out
}

/// Same rank, and equal wherever both dimensions are fixed.
fn dims_match(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Dim::Fixed(p), Dim::Fixed(q)) => p == q,
            _ => true,
        })
}

fn apply_overlay(m: &mut Manifest, o: OverlayManifest, files: &mut HashSet<String>) {
    for h in o.heads {
        files.insert(h.labels.file.clone());
        files.extend(h.variants.values().map(|v| v.onnx.file.clone()));
        files.extend(h.exemplars.iter().map(|e| e.file.clone()));
        m.heads.retain(|b| b.name != h.name);
        m.heads.push(h);
    }
    if let Some(e) = m.image_encoder.as_mut() {
        for (p, v) in o.image_encoder_variants {
            files.insert(v.onnx.file.clone());
            files.extend(v.artefacts.values().map(|f| f.file.clone()));
            e.variants.insert(p, v);
        }
    }
    if let Some(t) = m.text_encoder.as_mut() {
        for (p, v) in o.text_encoder_variants {
            files.insert(v.onnx.file.clone());
            files.extend(v.artefacts.values().map(|f| f.file.clone()));
            t.variants.insert(p, v);
        }
    }
    if o.default_head.is_some() {
        m.default_head = o.default_head;
    }
    if o.text_head.is_some() {
        m.text_head = o.text_head;
    }
    if o.fusion_head.is_some() {
        m.fusion_head = o.fusion_head;
    }
}

fn join_problems(p: &[crate::manifest::FieldError]) -> String {
    p.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn line_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) if s.start <= text.len() => {
            let line = text[..s.start].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        _ => String::new(),
    }
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to `dir/name` and returns its [`PackFile`] record.
pub fn write_pack_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PackFile> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut f = fs::File::create(&path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(PackFile {
        file: name.to_string(),
        sha256: hex::encode(Sha256::digest(bytes)),
        bytes: bytes.len() as u64,
    })
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. A crash leaves either the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    // Temp files are created 0600; the result keeps the old file's mode, or gets 0644 (less the
    // umask) like any new file, so a pack written by root stays readable by the camera's user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    let mut tmp = builder.prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// Replaces directory `dest` by the fully written directory `staged` (same filesystem): the old
/// one is moved aside, the new one renamed in, then the old one removed. At every instant `dest`
/// is either absent, the old pack or the new pack.
pub fn install_dir(staged: &Path, dest: &Path) -> std::io::Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    sync_dir(staged);
    let old = parent.join(format!(
        ".old-{}-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("pack"),
        std::process::id()
    ));
    let had_old = dest.exists();
    if had_old {
        fs::rename(dest, &old)?;
    }
    if let Err(e) = fs::rename(staged, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        return Err(e);
    }
    sync_dir(parent);
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What [`migrate_overlay`] did with the previous version's overlay.
#[derive(Debug, Clone, PartialEq)]
pub enum OverlayMigration {
    /// Moved to the new version: taught heads, recipes and calibrations carry over.
    Moved { from: PathBuf, to: PathBuf },
    /// Left where it was, with the reason (its heads or calibrations were made with encoders
    /// the new version changed, or it does not apply cleanly).
    Kept { dir: PathBuf, reason: String },
}

/// The fp32 file hashes of a manifest's encoders: what taught heads and calibrations depend on.
fn encoder_hashes(m: &Manifest) -> (Option<String>, Option<String>) {
    let fp32 =
        |v: &BTreeMap<Precision, Variant>| v.get(&Precision::Fp32).map(|v| v.onnx.sha256.clone());
    (
        m.image_encoder.as_ref().and_then(|e| fp32(&e.variants)),
        m.text_encoder.as_ref().and_then(|e| fp32(&e.variants)),
    )
}

/// Overlays are keyed by the base manifest's hash, so a new version of a base pack would not
/// see what the user made for the old one. After a pull replaced the pack in `dir` (whose old
/// manifest was `old_manifest`), the old overlay moves to the new key, atomically (one rename),
/// when both encoders are unchanged and the overlay applies to the new pack; otherwise it stays
/// where it is and the reason is returned. Nothing is deleted.
pub fn migrate_overlay(
    home: &Home,
    old_manifest: &[u8],
    dir: &Path,
) -> Result<Option<OverlayMigration>, PackError> {
    let Ok(old) = std::str::from_utf8(old_manifest)
        .map_err(|e| e.to_string())
        .and_then(|t| Manifest::from_toml(t).map_err(|e| e.to_string()))
    else {
        return Ok(None);
    };
    let old_sha = hex::encode(Sha256::digest(old_manifest));
    let from = home
        .overlays()
        .join(format!("{}-{}", old.name, &old_sha[..16]));
    let new = match Pack::open_dir(dir, home) {
        Ok(p) => p,
        Err(_) => return Ok(None),
    };
    if from == new.overlay_dir || !from.is_dir() {
        return Ok(None);
    }
    let to = new.overlay_dir.clone();
    if to.exists() {
        return Ok(Some(OverlayMigration::Kept {
            dir: from,
            reason: format!("{} already has an overlay", to.display()),
        }));
    }
    if encoder_hashes(&old) != encoder_hashes(&new.manifest) {
        return Ok(Some(OverlayMigration::Kept {
            dir: from,
            reason: "the new version changed an encoder, so heads taught and calibrations made with the old one do not apply; teach and calibrate again".into(),
        }));
    }
    std::fs::rename(&from, &to).map_err(io_err(&to))?;
    if let Err(e) = Pack::open_dir(dir, home) {
        // It does not apply cleanly: put it back.
        std::fs::rename(&to, &from).map_err(io_err(&from))?;
        return Ok(Some(OverlayMigration::Kept {
            dir: from,
            reason: format!("it does not apply to the new version ({e})"),
        }));
    }
    Ok(Some(OverlayMigration::Moved { from, to }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::*;

    /// A tiny valid pack on disk: a fake ONNX file (never loaded here) and a labels file.
    fn write_pack(dir: &Path) -> Manifest {
        let onnx = write_pack_file(dir, "img.onnx", b"not really onnx").unwrap();
        let labels = write_pack_file(dir, "labels.txt", b"a\nb\n").unwrap();
        let m = Manifest {
            format_version: FORMAT_VERSION,
            name: "tiny".into(),
            version: "1".into(),
            description: String::new(),
            provenance: vec![],
            image_encoder: Some(ImageEncoder {
                variants: BTreeMap::from([(
                    Precision::Fp32,
                    Variant {
                        onnx,
                        note: String::new(),
                        artefacts: BTreeMap::new(),
                    },
                )]),
                input: TensorSpec::new(
                    "pixels",
                    DType::F32,
                    vec![
                        Dim::named("batch"),
                        Dim::Fixed(3),
                        Dim::Fixed(8),
                        Dim::Fixed(8),
                    ],
                ),
                layout: Layout::Nchw,
                preprocess: Preprocess {
                    width: 8,
                    height: 8,
                    crop: Crop::None,
                    interpolation: Interpolation::Bilinear,
                    colour_order: ColourOrder::Rgb,
                    range: 255.0,
                    mean: [0.0; 3],
                    std: [1.0; 3],
                },
                outputs: vec![TensorSpec::new(
                    "logits",
                    DType::F32,
                    vec![Dim::named("batch"), Dim::Fixed(2)],
                )],
                embedding_output: "logits".into(),
                embedding_dim: 2,
            }),
            text_encoder: None,
            heads: vec![Head {
                name: "base".into(),
                kind: HeadKind::Image,
                encoder_output: Some("logits".into()),
                variants: BTreeMap::new(),
                labels,
                classes: 2,
                temperature: 1.0,
                exemplars: None,
                fuse: None,
                prepare: None,
            }],
            default_head: Some("base".into()),
            recipes: None,
            text_head: None,
            fusion_head: None,
            no_dish: None,
        };
        write_atomic(&dir.join(MANIFEST), m.to_toml().as_bytes()).unwrap();
        m
    }

    #[test]
    fn overlay_heads_are_found_first_and_base_files_stay_in_the_base() {
        let home = tempfile::tempdir().unwrap();
        let home = Home::at(home.path());
        let dir = home.packs().join("tiny");
        let base = write_pack(&dir);
        let pack = Pack::open("tiny", &home).unwrap();
        assert_eq!(pack.manifest, base);
        assert!(pack.overlay_dir.starts_with(home.overlays()));

        // The user teaches a head that replaces "base" and adds labels of its own.
        fs::create_dir_all(&pack.overlay_dir).unwrap();
        let labels = write_pack_file(&pack.overlay_dir, "labels.txt", b"soup\nstew\n").unwrap();
        let overlay = OverlayManifest {
            heads: vec![Head {
                name: "base".into(),
                kind: HeadKind::Image,
                encoder_output: Some("logits".into()),
                variants: BTreeMap::new(),
                labels,
                classes: 2,
                temperature: 2.0,
                exemplars: None,
                fuse: None,
                prepare: None,
            }],
            default_head: Some("base".into()),
            ..Default::default()
        };
        write_atomic(
            &pack.overlay_dir.join(OVERLAY_MANIFEST),
            toml::to_string(&overlay).unwrap().as_bytes(),
        )
        .unwrap();

        let pack = Pack::open("tiny", &home).unwrap();
        let head = pack.manifest.head("base").unwrap();
        assert_eq!(head.temperature, 2.0);
        assert_eq!(pack.manifest.heads.len(), 1);
        // Same file name in both places: the overlay's head reads the overlay's copy...
        assert_eq!(
            pack.read_verified("labels", &head.labels).unwrap(),
            b"soup\nstew\n"
        );
        // ...while the encoder, which the overlay did not name, still comes from the base.
        let onnx = &pack.manifest.image_encoder.as_ref().unwrap().variants[&Precision::Fp32].onnx;
        assert_eq!(pack.path(onnx), dir.join("img.onnx"));
        // The overlay is keyed by the base manifest's hash: a rebuilt base gets a fresh overlay.
        let mut changed = base.clone();
        changed.version = "2".into();
        write_atomic(&dir.join(MANIFEST), changed.to_toml().as_bytes()).unwrap();
        let rebuilt = Pack::open("tiny", &home).unwrap();
        assert_ne!(rebuilt.overlay_dir, pack.overlay_dir);
        assert_eq!(rebuilt.manifest.head("base").unwrap().temperature, 1.0);
    }

    /// A user overlay with one taught head, for `tiny`.
    fn teach_tiny(pack: &Pack) {
        fs::create_dir_all(&pack.overlay_dir).unwrap();
        let labels = write_pack_file(&pack.overlay_dir, "soup.txt", b"soup\nstew\n").unwrap();
        let overlay = OverlayManifest {
            heads: vec![Head {
                name: "soups".into(),
                kind: HeadKind::Image,
                encoder_output: Some("logits".into()),
                variants: BTreeMap::new(),
                labels,
                classes: 2,
                temperature: 1.5,
                exemplars: None,
                fuse: None,
                prepare: None,
            }],
            ..Default::default()
        };
        write_atomic(
            &pack.overlay_dir.join(OVERLAY_MANIFEST),
            toml::to_string(&overlay).unwrap().as_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn a_new_version_with_the_same_encoders_takes_the_overlay_along() {
        let home = tempfile::tempdir().unwrap();
        let home = Home::at(home.path());
        let dir = home.packs().join("tiny");
        let base = write_pack(&dir);
        let old_text = fs::read(dir.join(MANIFEST)).unwrap();
        teach_tiny(&Pack::open("tiny", &home).unwrap());

        let mut v2 = base.clone();
        v2.version = "2".into();
        write_atomic(&dir.join(MANIFEST), v2.to_toml().as_bytes()).unwrap();
        let moved = migrate_overlay(&home, &old_text, &dir).unwrap();
        assert!(
            matches!(moved, Some(OverlayMigration::Moved { .. })),
            "{moved:?}"
        );
        let pack = Pack::open("tiny", &home).unwrap();
        let head = pack.manifest.head("soups").unwrap();
        assert_eq!(head.temperature, 1.5);
        assert_eq!(
            pack.read_verified("labels", &head.labels).unwrap(),
            b"soup\nstew\n"
        );
    }

    #[test]
    fn a_new_encoder_leaves_the_overlay_where_it_was_and_says_why() {
        let home = tempfile::tempdir().unwrap();
        let home = Home::at(home.path());
        let dir = home.packs().join("tiny");
        let base = write_pack(&dir);
        let old_text = fs::read(dir.join(MANIFEST)).unwrap();
        let old = Pack::open("tiny", &home).unwrap();
        teach_tiny(&old);

        let mut v2 = base.clone();
        v2.version = "2".into();
        let enc = v2.image_encoder.as_mut().unwrap();
        enc.variants.get_mut(&Precision::Fp32).unwrap().onnx =
            write_pack_file(&dir, "img.onnx", b"another encoder").unwrap();
        write_atomic(&dir.join(MANIFEST), v2.to_toml().as_bytes()).unwrap();
        let kept = migrate_overlay(&home, &old_text, &dir).unwrap();
        match kept {
            Some(OverlayMigration::Kept { dir, reason }) => {
                assert_eq!(dir, old.overlay_dir);
                assert!(reason.contains("encoder"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            old.overlay_dir.join(OVERLAY_MANIFEST).is_file(),
            "nothing deleted"
        );
        assert!(Pack::open("tiny", &home)
            .unwrap()
            .manifest
            .head("soups")
            .is_none());
    }

    #[test]
    fn a_broken_overlay_names_its_file() {
        let home = tempfile::tempdir().unwrap();
        let home = Home::at(home.path());
        write_pack(&home.packs().join("tiny"));
        let pack = Pack::open("tiny", &home).unwrap();
        fs::create_dir_all(&pack.overlay_dir).unwrap();
        fs::write(pack.overlay_dir.join(OVERLAY_MANIFEST), "heads = 3").unwrap();
        let err = Pack::open("tiny", &home).unwrap_err().to_string();
        assert!(err.contains(OVERLAY_MANIFEST), "{err}");
    }

    #[test]
    fn install_dir_replaces_a_pack_whole() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("p");
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("old.txt"), "old").unwrap();
        let staged = root.path().join(".staging");
        fs::create_dir_all(&staged).unwrap();
        fs::write(staged.join("new.txt"), "new").unwrap();
        install_dir(&staged, &dest).unwrap();
        assert!(dest.join("new.txt").is_file() && !dest.join("old.txt").exists());
        assert!(!staged.exists());
        let leftovers: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn missing_packs_list_what_is_installed() {
        let home = tempfile::tempdir().unwrap();
        let home = Home::at(home.path());
        write_pack(&home.packs().join("tiny"));
        let err = Pack::open("lite", &home).unwrap_err().to_string();
        assert!(
            err.contains("installed: tiny") && err.contains("dishcam models pull lite"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_get_a_new_files_mode_or_keep_the_old_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // A plain new file (0666 less the umask) is what an atomic write of a new file should match.
        let plain = dir.path().join("plain");
        fs::File::create(&plain).unwrap();
        let new = dir.path().join("new.toml");
        write_atomic(&new, b"a = 1").unwrap();
        assert_eq!(mode(&new), mode(&plain) & 0o644, "not the tempfile's 0600");
        fs::set_permissions(&new, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&new, b"a = 2").unwrap();
        assert_eq!(mode(&new), 0o640);
        assert_eq!(fs::read(&new).unwrap(), b"a = 2");
    }
}
