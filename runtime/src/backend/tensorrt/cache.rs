//! The TensorRT engine cache: what an engine was built for ([`EngineKey`]), the file name that
//! holds it, and the header that lets a stale or foreign engine be recognised and rebuilt
//! instead of loaded. Pure functions over bytes; [`lookup`] and [`store`] are the only I/O.
//!
//! A cached file is `MAGIC`, the format version (u32 LE), the header length (u32 LE), the
//! header (JSON: the key plus the engine's size and sha256), then the serialised engine.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First bytes of every cached engine file.
pub const MAGIC: &[u8; 8] = b"DCTRTENG";
/// Version of the file layout above.
pub const FORMAT_VERSION: u32 = 1;

/// How the engine computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnginePrecision {
    Fp32,
    /// fp32 ONNX built with FP16 kernels allowed.
    Fp16,
    /// Explicit INT8 from a Q/DQ ONNX (every TensorRT version).
    Int8Qdq,
    /// Implicit INT8 from the fp32 ONNX plus a calibration cache (TensorRT < 10.1).
    #[serde(rename = "int8-calib")]
    Int8Calibrated,
}

impl EnginePrecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EnginePrecision::Fp32 => "fp32",
            EnginePrecision::Fp16 => "fp16",
            EnginePrecision::Int8Qdq => "int8-qdq",
            EnginePrecision::Int8Calibrated => "int8-calib",
        }
    }
}

impl fmt::Display for EnginePrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineDevice {
    /// CUDA device index.
    Gpu(u32),
    /// DLA core (with GPU fallback) on CUDA device 0.
    Dla(u32),
}

impl fmt::Display for EngineDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineDevice::Gpu(i) => write!(f, "gpu{i}"),
            EngineDevice::Dla(i) => write!(f, "dla{i}"),
        }
    }
}

/// Everything that changes an engine. Two engines with equal keys are interchangeable; an
/// engine whose key differs from the wanted one is never loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineKey {
    /// Short model name for humans (e.g. `image_encoder`).
    pub model: String,
    /// sha256 of the ONNX the engine was built from.
    pub model_sha256: String,
    pub precision: EnginePrecision,
    /// sha256 of the calibration cache, for [`EnginePrecision::Int8Calibrated`].
    pub calibration_sha256: Option<String>,
    pub device: EngineDevice,
    /// TensorRT version, `major.minor.patch`.
    pub tensorrt: String,
    /// GPU or SoC name with its compute capability (e.g. `Orin sm87`).
    pub gpu: String,
    /// Largest batch the engine's profile accepts.
    pub batch: usize,
    /// The optimisation profile of its dynamic inputs (`name:min/opt/max;...`, empty when
    /// every input is fixed).
    pub profile: String,
    /// Bridge ABI version.
    pub abi: u32,
}

/// Lowercase ASCII letters, digits and single dashes; at most `max` characters.
fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if c == '.' && out.chars().last().is_some_and(|l| l.is_ascii_digit()) {
            out.push('.');
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_end_matches(['-', '.']).chars().take(max).collect();
    while out.ends_with('-') || out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

impl EngineKey {
    /// The cache file name: model, model hash, precision (and calibration hash), device,
    /// TensorRT version, GPU, batch, ABI, e.g.
    /// `image_encoder-63af656181e34cb6-int8-qdq-gpu0-trt8.5.2-orin-sm87-b1-p1e2d3c4b-abi1.engine`
    /// (`p`: the first hex digits of the profile's sha256).
    /// Every field of the key is in it (hashes shortened), so different keys do not share a
    /// file; the header catches the rest.
    pub fn file_name(&self) -> String {
        let model = slug(&self.model, 40).replace('-', "_");
        let sha = &self.model_sha256[..self.model_sha256.len().min(16)];
        let precision = match &self.calibration_sha256 {
            Some(c) => format!("{}-{}", self.precision, &c[..c.len().min(8)]),
            None => self.precision.to_string(),
        };
        let profile = hex::encode(Sha256::digest(self.profile.as_bytes()));
        format!(
            "{model}-{sha}-{precision}-{}-trt{}-{}-b{}-p{}-abi{}.engine",
            self.device,
            slug(&self.tensorrt, 20),
            slug(&self.gpu, 40),
            self.batch,
            &profile[..8],
            self.abi
        )
    }

    /// What differs between an engine built for `self` and the wanted key, in words.
    pub fn differences(&self, want: &EngineKey) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, found: String, wanted: String| {
            if found != wanted {
                out.push(format!("{what}: built for {found}, wanted {wanted}"));
            }
        };
        diff(
            "model",
            self.model_sha256.clone(),
            want.model_sha256.clone(),
        );
        diff(
            "precision",
            self.precision.to_string(),
            want.precision.to_string(),
        );
        diff(
            "calibration cache",
            format!("{:?}", self.calibration_sha256),
            format!("{:?}", want.calibration_sha256),
        );
        diff("device", self.device.to_string(), want.device.to_string());
        diff("TensorRT", self.tensorrt.clone(), want.tensorrt.clone());
        diff("GPU", self.gpu.clone(), want.gpu.clone());
        diff("batch", self.batch.to_string(), want.batch.to_string());
        diff("profile", self.profile.clone(), want.profile.clone());
        diff("bridge ABI", self.abi.to_string(), want.abi.to_string());
        out
    }
}

/// The header stored before the engine bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineHeader {
    pub key: EngineKey,
    pub engine_bytes: u64,
    pub engine_sha256: String,
}

/// The cached file for `key` and `engine`.
pub fn encode(key: &EngineKey, engine: &[u8]) -> Vec<u8> {
    let header = EngineHeader {
        key: key.clone(),
        engine_bytes: engine.len() as u64,
        engine_sha256: hex::encode(Sha256::digest(engine)),
    };
    let json = serde_json::to_vec(&header).expect("headers serialise");
    let mut out = Vec::with_capacity(16 + json.len() + engine.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(engine);
    out
}

/// Splits a cached file into its header and engine, checking the magic, the layout version,
/// the engine's size and its sha256 (a truncated or altered file is refused).
pub fn decode(bytes: &[u8]) -> Result<(EngineHeader, &[u8]), super::BridgeError> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not a dishcam engine file (no DCTRTENG header)".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(
            format!("engine file layout {version}, this build reads {FORMAT_VERSION}").into(),
        );
    }
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let json = bytes.get(16..16 + len).ok_or("the header is truncated")?;
    let header: EngineHeader =
        serde_json::from_slice(json).map_err(|e| format!("unreadable header ({e})"))?;
    let engine = &bytes[16 + len..];
    if engine.len() as u64 != header.engine_bytes {
        return Err(format!(
            "the engine has {} bytes, the header says {} (truncated?)",
            engine.len(),
            header.engine_bytes
        )
        .into());
    }
    if hex::encode(Sha256::digest(engine)) != header.engine_sha256 {
        return Err("the engine's sha256 does not match its header (file altered)".into());
    }
    Ok((header, engine))
}

/// What the cache holds for a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A valid engine built for exactly this key.
    Fresh(Vec<u8>),
    /// No file under the key's name.
    Missing,
    /// A file that must be rebuilt, and why.
    Stale(String),
}

/// Checks a cached file's bytes against the wanted key (see [`Lookup`]).
pub fn check(bytes: &[u8], want: &EngineKey) -> Lookup {
    match decode(bytes) {
        Err(why) => Lookup::Stale(why.0),
        Ok((header, engine)) => {
            let diffs = header.key.differences(want);
            if diffs.is_empty() {
                Lookup::Fresh(engine.to_vec())
            } else {
                Lookup::Stale(diffs.join("; "))
            }
        }
    }
}

/// Looks `want` up in `dir`.
pub fn lookup(dir: &Path, want: &EngineKey) -> Lookup {
    match std::fs::read(dir.join(want.file_name())) {
        Ok(bytes) => check(&bytes, want),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lookup::Missing,
        Err(e) => Lookup::Stale(format!("unreadable ({e})")),
    }
}

/// Writes the engine for `key` into `dir` atomically (temp file, fsync, rename); returns the
/// path.
pub fn store(dir: &Path, key: &EngineKey, engine: &[u8]) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join(key.file_name());
    dishcam_models::pack::write_atomic(&path, &encode(key, engine))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EngineKey {
        EngineKey {
            model: "image_encoder".into(),
            model_sha256: "63af656181e34cb6109fc04cc0d7bf981a81b84765c48c5dcc8d2611af2a2342".into(),
            precision: EnginePrecision::Int8Qdq,
            calibration_sha256: None,
            device: EngineDevice::Gpu(0),
            tensorrt: "8.5.2".into(),
            gpu: "Orin sm87".into(),
            batch: 1,
            profile: "pixels:1x3x224x224/1x3x224x224/1x3x224x224".into(),
            abi: 1,
        }
    }

    #[test]
    fn tensorrt_engine_names_hold_every_part_of_the_key() {
        assert_eq!(
            key().file_name(),
            format!(
                "image_encoder-63af656181e34cb6-int8-qdq-gpu0-trt8.5.2-orin-sm87-b1-p{}-abi1.engine",
                &hex::encode(Sha256::digest(key().profile.as_bytes()))[..8]
            )
        );
        let mut calib = key();
        calib.precision = EnginePrecision::Int8Calibrated;
        calib.calibration_sha256 = Some("310ed1b9da092c41".into());
        calib.device = EngineDevice::Dla(1);
        assert!(
            calib.file_name().starts_with(
                "image_encoder-63af656181e34cb6-int8-calib-310ed1b9-dla1-trt8.5.2-orin-sm87-b1-p"
            ),
            "{}",
            calib.file_name()
        );
    }

    #[test]
    fn tensorrt_engine_names_differ_when_any_field_differs() {
        let base = key();
        let variants: Vec<fn(&mut EngineKey)> = vec![
            |k| k.model_sha256.replace_range(0..1, "7"),
            |k| k.precision = EnginePrecision::Fp16,
            |k| k.calibration_sha256 = Some("ab".into()),
            |k| k.device = EngineDevice::Dla(0),
            |k| k.device = EngineDevice::Gpu(1),
            |k| k.tensorrt = "10.3.0".into(),
            |k| k.gpu = "Xavier sm72".into(),
            |k| k.batch = 8,
            |k| k.profile = "pixels:1x3x224x224/4x3x224x224/8x3x224x224".into(),
            |k| k.abi = 2,
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut k = base.clone();
            change(&mut k);
            assert_ne!(k.file_name(), base.file_name(), "variant {i}");
            assert!(!k.differences(&base).is_empty(), "variant {i}");
        }
    }

    #[test]
    fn tensorrt_engine_names_are_safe_file_names() {
        let mut k = key();
        k.model = "../../etc/passwd".into();
        k.gpu = "NVIDIA Jetson/AGX Orin (64GB)  sm87".into();
        k.tensorrt = "10.3.0.26".into();
        let name = k.file_name();
        assert!(!name.contains('/') && !name.contains(' '), "{name}");
        assert!(name.contains("nvidia-jetson-agx-orin-64gb-sm87"), "{name}");
        assert!(name.contains("trt10.3.0.26"), "{name}");
    }

    #[test]
    fn a_tensorrt_engine_file_round_trips_and_a_foreign_one_is_stale() {
        let engine = b"serialised engine".to_vec();
        let file = encode(&key(), &engine);
        assert_eq!(check(&file, &key()), Lookup::Fresh(engine.clone()));
        let mut other = key();
        other.tensorrt = "8.6.2".into();
        match check(&file, &other) {
            Lookup::Stale(why) => assert!(
                why.contains("TensorRT: built for 8.5.2, wanted 8.6.2"),
                "{why}"
            ),
            l => panic!("{l:?}"),
        }
    }

    #[test]
    fn truncated_altered_or_foreign_tensorrt_engine_files_are_stale() {
        let file = encode(&key(), b"serialised engine");
        let truncated = &file[..file.len() - 3];
        let mut altered = file.clone();
        *altered.last_mut().unwrap() ^= 1;
        let mut layout = file.clone();
        layout[8] = 9;
        for (bytes, needle) in [
            (truncated, "truncated"),
            (&altered[..], "sha256"),
            (&layout[..], "layout 9"),
            (b"raw TensorRT plan".as_slice(), "no DCTRTENG header"),
            (&file[..20], "header is truncated"),
        ] {
            match check(bytes, &key()) {
                Lookup::Stale(why) => assert!(why.contains(needle), "{why} lacks {needle}"),
                l => panic!("{needle}: {l:?}"),
            }
        }
    }

    #[test]
    fn tensorrt_engine_store_and_lookup_go_through_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lookup(dir.path(), &key()), Lookup::Missing);
        let path = store(dir.path(), &key(), b"plan").unwrap();
        assert_eq!(path, dir.path().join(key().file_name()));
        assert_eq!(lookup(dir.path(), &key()), Lookup::Fresh(b"plan".to_vec()));
        // A foreign engine copied under this key's name is refused, not loaded.
        let mut foreign = key();
        foreign.gpu = "Xavier sm72".into();
        std::fs::write(&path, encode(&foreign, b"plan")).unwrap();
        assert!(matches!(lookup(dir.path(), &key()), Lookup::Stale(w) if w.contains("GPU")));
        // No temp files are left next to it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
