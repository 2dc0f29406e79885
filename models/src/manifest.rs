//! `pack.toml`: the contract between the trainer, calibration and the runtime.
//!
//! A manifest names every file of a pack with its sha256, and records how each encoder is fed
//! (input names, shapes, dtypes, layout, preprocessing, tokeniser) and what it produces. Parsing
//! is strict (unknown fields are errors) so that a typo is reported instead of ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The manifest format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// A whole `pack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// Where the weights came from (package, version, hash), for reproducibility.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<Provenance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_encoder: Option<ImageEncoder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoder>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<Head>,
    /// The head `classify` uses for photos when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_head: Option<String>,
    /// Bundled recipes (JSONL, one recipe per line) that `dishcam recipes` indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipes: Option<PackFile>,
    /// The head `classify --text` uses when none is named (a `text` head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_head: Option<String>,
    /// The head `classify PHOTO --text ...` uses (an `early-fusion` or `late-fusion` head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion_head: Option<String>,
    /// How the pack tells a photo with no dish in it (see [`NoDishCheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_dish: Option<NoDishCheck>,
}

/// One source the pack was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub package: String,
    pub version: String,
    pub sha256: String,
    #[serde(default)]
    pub note: String,
}

/// A file inside the pack directory, with its checksum and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    /// Path relative to the pack directory; may not leave it.
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Numeric precision of a model variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Int8];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                ParseError(format!(
                    "unknown precision '{s}' (expected fp32, fp16 or int8)"
                ))
            })
    }
}

/// One precision variant of a model: the ONNX file, and for quantised variants, how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    #[serde(flatten)]
    pub onnx: PackFile,
    /// Free text: calibration method and data for int8 variants.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Files made with the variant, by role: for int8, `table` (per-tensor amax, JSON),
    /// `tensorrt_onnx` (int8 symmetric Q/DQ, TensorRT's explicit quantisation), `tensorrt_cache`
    /// (implicit calibration cache for TensorRT 8.5-10.0) and `report` (agreement with fp32).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artefacts: BTreeMap<String, PackFile>,
}

/// Element type of a tensor at a model boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    I64,
    I32,
    U8,
    I8,
}

impl DType {
    /// Maps an ONNX `TensorProto.DataType` code.
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            6 => DType::I32,
            7 => DType::I64,
            10 => DType::F16,
            _ => return None,
        })
    }

    pub fn to_onnx(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::F16 => 10,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::I8 => "i8",
        })
    }
}

/// One dimension: fixed, or a named symbol such as `batch` or `sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(u64),
    Named(String),
}

impl Dim {
    pub fn fixed(v: u64) -> Dim {
        Dim::Fixed(v)
    }
    pub fn named(s: &str) -> Dim {
        Dim::Named(s.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Named(n) => f.write_str(n),
        }
    }
}

/// Name, dtype and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    pub fn new(name: &str, dtype: DType, shape: Vec<Dim>) -> Self {
        Self {
            name: name.to_string(),
            dtype,
            shape,
        }
    }

    /// The shape as text, e.g. `[batch, 3, 224, 224]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// Memory layout of an image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Channel order of an image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColourOrder {
    Rgb,
    Bgr,
}

/// Resampling filter used to resize the crop to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
}

/// How the region fed to the encoder is chosen from the photo.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Crop {
    /// A centred square whose side is `fraction` of the shorter image side.
    Center { fraction: f32 },
    /// The whole image, stretched to the input size.
    None,
}

/// Image preprocessing, applied as: orient (EXIF) -> crop -> resize -> scale -> normalise.
///
/// A pixel value `p` in 0..=255 becomes `(p * range / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    pub crop: Crop,
    pub interpolation: Interpolation,
    pub colour_order: ColourOrder,
    /// 255.0 when mean/std are in pixel units, 1.0 when they are in 0..1 units.
    pub range: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// An image encoder: photo in, embedding (and optionally logits) out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoder {
    pub variants: BTreeMap<Precision, Variant>,
    pub input: TensorSpec,
    pub layout: Layout,
    pub preprocess: Preprocess,
    pub outputs: Vec<TensorSpec>,
    /// Which output holds the embedding.
    pub embedding_output: String,
    pub embedding_dim: usize,
}

/// Pooling of token states into a sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
}

/// A text encoder: tokenised text in, sentence embedding out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoder {
    pub variants: BTreeMap<Precision, Variant>,
    /// A Hugging Face `tokenizer.json`.
    pub tokenizer: PackFile,
    /// Tokens per text after truncation; overrides what the tokenizer file says.
    pub max_length: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub embedding_output: String,
    pub embedding_dim: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Pooling and normalisation are part of the ONNX graph (otherwise the runtime applies them).
    pub pooled_in_graph: bool,
    /// UAE-style retrieval prompt for queries; `{text}` marks where the text goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_prompt: Option<String>,
    /// Prompt for documents (recipes); `{text}` marks where the text goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_prompt: Option<String>,
}

/// What a head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// Image embedding -> classes.
    Image,
    /// Text embedding -> classes.
    Text,
    /// Concatenated image and text embeddings -> classes.
    EarlyFusion,
    /// Weighted sum of an image head's and a text head's log-probabilities.
    LateFusion,
}

impl HeadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HeadKind::Image => "image",
            HeadKind::Text => "text",
            HeadKind::EarlyFusion => "early-fusion",
            HeadKind::LateFusion => "late-fusion",
        }
    }
}

/// A classifier over an encoder's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub name: String,
    pub kind: HeadKind,
    /// The head is an output of the image encoder itself (e.g. ImageNet logits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_output: Option<String>,
    /// Or the head is its own ONNX model over the embedding(s).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<Precision, Variant>,
    /// One label per line, in class-index order.
    pub labels: PackFile,
    pub classes: usize,
    /// Softmax temperature from calibration (1.0 = none).
    #[serde(default = "one")]
    pub temperature: f32,
    /// Compact per-class exemplar embeddings (safetensors, int8 rows with per-row scales) that
    /// let `dishcam teach --add-to` refit the whole head when a dish is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemplars: Option<PackFile>,
    /// A `late-fusion` head combines two other heads of the pack; it has no model file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse: Option<LateFusion>,
    /// How the head's training photos were prepared before the encoder's own preprocessing;
    /// every photo and frame it classifies is prepared the same way. `None`: photos as they come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<PhotoPreparation>,
}

/// A photo's preparation before the image encoder's preprocessing: the centred square, resized
/// to `size` x `size`, then (with `jpeg_quality`) JPEG-encoded and decoded again. A head fitted
/// on a low-resolution photo set records how that set was made, so that the photos it serves
/// look the same and no class can be told apart by how its photos were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotoPreparation {
    /// Side of the square, in pixels (8..=1024).
    pub size: u32,
    pub resize: Interpolation,
    /// JPEG quality (1..=100, libjpeg's scale, 4:2:0 chroma) of the round trip; `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_quality: Option<u8>,
}

impl PhotoPreparation {
    /// Problems with the values, as `(field, problem)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(8..=1024).contains(&self.size) {
            out.push(("size", format!("{} must be within 8..=1024", self.size)));
        }
        if let Some(q) = self.jpeg_quality {
            if !(1..=100).contains(&q) {
                out.push(("jpeg_quality", format!("{q} must be within 1..=100")));
            }
        }
        out
    }
}

impl fmt::Display for PhotoPreparation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filter = match self.resize {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        };
        write!(f, "centred square -> {0}x{0} px ({filter})", self.size)?;
        if let Some(q) = self.jpeg_quality {
            write!(f, " -> JPEG q{q}")?;
        }
        Ok(())
    }
}

/// "No dish": the share of the image encoder's output `encoder_output` (softmax over, e.g., the
/// ImageNet-1k logits) that falls on `classes` (its food, dish and tableware classes) is the
/// photo's food score; a photo scoring under the threshold shows no dish. The check reads the
/// photo as it comes, before a head's [`PhotoPreparation`]: a 64 px thumbnail carries too little
/// for the encoder to tell food from anything else, a camera frame does not. Photos whose
/// shorter side is under `thumbnail_below` are themselves thumbnails and are held to
/// `thumbnail_threshold`; under `min_side` a photo is too small to show a dish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoDishCheck {
    pub encoder_output: String,
    pub classes: Vec<usize>,
    pub threshold: f32,
    pub thumbnail_threshold: f32,
    pub thumbnail_below: u32,
    pub min_side: u32,
    /// The share of validation food photos that keep their dish at these thresholds.
    pub food_recall: f32,
    #[serde(default)]
    pub note: String,
}

/// `log p = (1 - text_weight) * log p_image + text_weight * log p_text`, renormalised, where each
/// head's probabilities use its own temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateFusion {
    pub image_head: String,
    pub text_head: String,
    pub text_weight: f32,
}

fn one() -> f32 {
    1.0
}

/// A name that is not one of the values an option takes; the message lists them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// What a command classifies, which decides the kinds of head it can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadInput {
    /// Photos alone: an `image` head.
    Photo,
    /// A text alone: a `text` head.
    Text,
    /// Photos with a text: an `early-fusion` or `late-fusion` head.
    PhotoAndText,
}

impl HeadInput {
    /// The head kinds that read this input.
    pub fn kinds(self) -> &'static [HeadKind] {
        match self {
            HeadInput::Photo => &[HeadKind::Image],
            HeadInput::Text => &[HeadKind::Text],
            HeadInput::PhotoAndText => &[HeadKind::EarlyFusion, HeadKind::LateFusion],
        }
    }

    /// The input a head of `kind` reads.
    pub fn of(kind: HeadKind) -> HeadInput {
        match kind {
            HeadKind::Image => HeadInput::Photo,
            HeadKind::Text => HeadInput::Text,
            HeadKind::EarlyFusion | HeadKind::LateFusion => HeadInput::PhotoAndText,
        }
    }

    fn head_name(self) -> &'static str {
        match self {
            HeadInput::Photo => "image",
            HeadInput::Text => "text",
            HeadInput::PhotoAndText => "fusion",
        }
    }

    fn how_to_fit(self) -> &'static str {
        match self {
            HeadInput::Photo => "fit one with `dishcam teach --images DIR`",
            HeadInput::Text => "fit one with `dishcam teach --text-csv FILE`",
            HeadInput::PhotoAndText => {
                "fit one with `dishcam teach --images DIR --text-csv FILE`, or leave out the text"
            }
        }
    }

    fn what_reads_it(self) -> &'static str {
        match self {
            HeadInput::Photo => "photos alone need an image head",
            HeadInput::Text => "a text alone needs a text head (give photos too for a fusion head)",
            HeadInput::PhotoAndText => "photos with a text need a fusion head",
        }
    }
}

/// Why [`Manifest::resolve_head`] found no head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadLookupError {
    #[error("pack '{pack}' has no {} head; {}", input.head_name(), input.how_to_fit())]
    NoHead { pack: String, input: HeadInput },
    #[error("pack '{pack}' has no head '{head}' (heads: {available})")]
    UnknownHead {
        pack: String,
        head: String,
        available: String,
    },
    #[error("head '{head}' of pack '{pack}' is a {} head; {}", kind.as_str(), input.what_reads_it())]
    WrongKind {
        pack: String,
        head: String,
        kind: HeadKind,
        input: HeadInput,
    },
}

/// A manifest problem: the field, what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl Manifest {
    /// Parses `pack.toml` text. Errors carry the line and the offending key.
    pub fn from_toml(text: &str) -> Result<Manifest, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serialises")
    }

    /// Every file the manifest names, with the field that names it.
    pub fn files(&self) -> Vec<(String, &PackFile)> {
        let mut out = Vec::new();
        fn variants<'a>(
            prefix: &str,
            v: &'a BTreeMap<Precision, Variant>,
            out: &mut Vec<(String, &'a PackFile)>,
        ) {
            for (p, var) in v {
                out.push((format!("{prefix}.variants.{p}"), &var.onnx));
                for (role, f) in &var.artefacts {
                    out.push((format!("{prefix}.variants.{p}.artefacts.{role}"), f));
                }
            }
        }
        if let Some(e) = &self.image_encoder {
            variants("image_encoder", &e.variants, &mut out);
        }
        if let Some(e) = &self.text_encoder {
            variants("text_encoder", &e.variants, &mut out);
            out.push(("text_encoder.tokenizer".into(), &e.tokenizer));
        }
        if let Some(r) = &self.recipes {
            out.push(("recipes".into(), r));
        }
        for (i, h) in self.heads.iter().enumerate() {
            variants(&format!("heads[{i}]"), &h.variants, &mut out);
            out.push((format!("heads[{i}].labels"), &h.labels));
            if let Some(e) = &h.exemplars {
                out.push((format!("heads[{i}].exemplars"), e));
            }
        }
        out
    }

    pub fn head(&self, name: &str) -> Option<&Head> {
        self.heads.iter().find(|h| h.name == name)
    }

    /// The head a command uses for `input`: the one named, else the pack's default head for
    /// that input (`default_head`, `text_head` or `fusion_head`), else its first head of a kind
    /// that reads that input. Refused, with the fix, when there is none or the named head reads
    /// something else.
    pub fn resolve_head(
        &self,
        name: Option<&str>,
        input: HeadInput,
    ) -> Result<&Head, HeadLookupError> {
        let kinds = input.kinds();
        let default = match input {
            HeadInput::Photo => self.default_head.as_deref(),
            HeadInput::Text => self.text_head.as_deref(),
            HeadInput::PhotoAndText => self.fusion_head.as_deref(),
        };
        let name = match name.or(default) {
            Some(n) => n,
            None => {
                return self
                    .heads
                    .iter()
                    .find(|h| kinds.contains(&h.kind))
                    .ok_or_else(|| HeadLookupError::NoHead {
                        pack: self.name.clone(),
                        input,
                    })
            }
        };
        let head = self
            .head(name)
            .ok_or_else(|| HeadLookupError::UnknownHead {
                pack: self.name.clone(),
                head: name.to_string(),
                available: self
                    .heads
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if !kinds.contains(&head.kind) {
            return Err(HeadLookupError::WrongKind {
                pack: self.name.clone(),
                head: name.to_string(),
                kind: head.kind,
                input,
            });
        }
        Ok(head)
    }

    /// The photo preparation `head` reads photos in: its own, or for a late-fusion head, its
    /// image head's.
    pub fn preparation_of(&self, head: &Head) -> Option<PhotoPreparation> {
        match (&head.fuse, head.kind) {
            (Some(f), HeadKind::LateFusion) => self.head(&f.image_head).and_then(|h| h.prepare),
            _ => head.prepare,
        }
    }

    /// Checks everything that can be checked without touching files. Returns all problems.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut err = |field: &str, problem: String| {
            errs.push(FieldError {
                field: field.to_string(),
                problem,
            })
        };
        if self.format_version != FORMAT_VERSION {
            err(
                "format_version",
                format!(
                    "is {}, this dishcam reads {FORMAT_VERSION}; use a dishcam that matches the pack or re-export the pack",
                    self.format_version
                ),
            );
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            err(
                "name",
                format!(
                    "'{}' must be non-empty and use only letters, digits, '-', '_' and '.'",
                    self.name
                ),
            );
        }
        for (field, f) in self.files() {
            if let Err(p) = check_relative_path(&f.file) {
                err(&format!("{field}.file"), p.0);
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                err(
                    &format!("{field}.sha256"),
                    "must be 64 hex digits (the file's sha256)".into(),
                );
            }
        }
        if self.image_encoder.is_none() && self.text_encoder.is_none() {
            err(
                "image_encoder",
                "a pack needs an image_encoder or a text_encoder section".into(),
            );
        }
        if let Some(e) = &self.image_encoder {
            if !e.variants.contains_key(&Precision::Fp32) {
                err(
                    "image_encoder.variants",
                    "needs an fp32 variant (the reference for all others)".into(),
                );
            }
            if !e.outputs.iter().any(|o| o.name == e.embedding_output) {
                err(
                    "image_encoder.embedding_output",
                    format!(
                        "'{}' is not one of image_encoder.outputs",
                        e.embedding_output
                    ),
                );
            }
            let p = &e.preprocess;
            if p.width == 0 || p.height == 0 || p.width > 4096 || p.height > 4096 {
                err(
                    "image_encoder.preprocess.width",
                    format!("{}x{} must be within 1..=4096", p.width, p.height),
                );
            }
            if let Crop::Center { fraction } = p.crop {
                if !(fraction > 0.0 && fraction <= 1.0) {
                    err(
                        "image_encoder.preprocess.crop.fraction",
                        format!("{fraction} must be in (0, 1]"),
                    );
                }
            }
            if p.std.iter().any(|s| !s.is_finite() || *s == 0.0)
                || p.mean.iter().any(|m| !m.is_finite())
            {
                err(
                    "image_encoder.preprocess.std",
                    "mean must be finite and std finite and non-zero".into(),
                );
            }
            if !(p.range == 1.0 || p.range == 255.0) {
                err(
                    "image_encoder.preprocess.range",
                    format!("{} must be 1.0 or 255.0", p.range),
                );
            }
            let expect_rank4 = e.input.shape.len() == 4;
            if !expect_rank4 || e.input.dtype != DType::F32 {
                err(
                    "image_encoder.input",
                    format!(
                        "must be a rank-4 f32 tensor, is {} {}",
                        e.input.dtype,
                        e.input.shape_text()
                    ),
                );
            } else {
                let (h, w) = match e.layout {
                    Layout::Nchw => (&e.input.shape[2], &e.input.shape[3]),
                    Layout::Nhwc => (&e.input.shape[1], &e.input.shape[2]),
                };
                if *h != Dim::Fixed(p.height as u64) || *w != Dim::Fixed(p.width as u64) {
                    err(
                        "image_encoder.input.shape",
                        format!(
                            "{} does not match preprocess {}x{} (width x height)",
                            e.input.shape_text(),
                            p.width,
                            p.height
                        ),
                    );
                }
            }
        }
        if let Some(t) = &self.text_encoder {
            if !t.variants.contains_key(&Precision::Fp32) {
                err(
                    "text_encoder.variants",
                    "needs an fp32 variant (the reference for all others)".into(),
                );
            }
            if t.max_length == 0 || t.max_length > 8192 {
                err(
                    "text_encoder.max_length",
                    format!("{} must be within 1..=8192", t.max_length),
                );
            }
            if !t.outputs.iter().any(|o| o.name == t.embedding_output) {
                err(
                    "text_encoder.embedding_output",
                    format!(
                        "'{}' is not one of text_encoder.outputs",
                        t.embedding_output
                    ),
                );
            }
            for known in ["input_ids", "attention_mask"] {
                if !t.inputs.iter().any(|i| i.name == known) {
                    err(
                        "text_encoder.inputs",
                        format!("needs an input named '{known}'"),
                    );
                }
            }
            for i in &t.inputs {
                if !["input_ids", "attention_mask", "token_type_ids"].contains(&i.name.as_str()) {
                    err(
                        "text_encoder.inputs",
                        format!(
                            "'{}' is not one of input_ids, attention_mask, token_type_ids",
                            i.name
                        ),
                    );
                }
            }
            for (field, prompt) in [
                ("query_prompt", &t.query_prompt),
                ("document_prompt", &t.document_prompt),
            ] {
                if let Some(p) = prompt {
                    if !p.contains("{text}") {
                        err(
                            &format!("text_encoder.{field}"),
                            format!("'{p}' must contain {{text}} where the text goes"),
                        );
                    }
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, h) in self.heads.iter().enumerate() {
            let field = format!("heads[{i}]");
            if !names.insert(h.name.as_str()) {
                err(
                    &format!("{field}.name"),
                    format!("'{}' is used by two heads", h.name),
                );
            }
            if h.kind == HeadKind::LateFusion {
                self.validate_late_fusion(&field, h, &mut err);
                continue;
            }
            if h.fuse.is_some() {
                err(
                    &format!("{field}.fuse"),
                    "only late-fusion heads combine other heads; remove it or set kind = \"late-fusion\"".into(),
                );
            }
            match (&h.encoder_output, h.variants.is_empty()) {
                (Some(_), false) | (None, true) => err(
                    &field,
                    "needs exactly one of encoder_output or variants".into(),
                ),
                (Some(out), true) => {
                    let ok = h.kind == HeadKind::Image
                        && self
                            .image_encoder
                            .as_ref()
                            .is_some_and(|e| e.outputs.iter().any(|o| &o.name == out));
                    if !ok {
                        err(&format!("{field}.encoder_output"), format!("'{out}' is not an image_encoder output (only image heads can be encoder outputs)"));
                    }
                }
                (None, false) => {
                    if !h.variants.contains_key(&Precision::Fp32) {
                        err(&format!("{field}.variants"), "needs an fp32 variant".into());
                    }
                }
            }
            let needs_image = matches!(
                h.kind,
                HeadKind::Image | HeadKind::EarlyFusion | HeadKind::LateFusion
            );
            let needs_text = matches!(
                h.kind,
                HeadKind::Text | HeadKind::EarlyFusion | HeadKind::LateFusion
            );
            if needs_image && self.image_encoder.is_none() {
                err(
                    &format!("{field}.kind"),
                    "needs an image_encoder in the pack".into(),
                );
            }
            if needs_text && self.text_encoder.is_none() {
                err(
                    &format!("{field}.kind"),
                    "needs a text_encoder in the pack".into(),
                );
            }
            if h.classes == 0 {
                err(&format!("{field}.classes"), "must be at least 1".into());
            }
            if let Some(p) = &h.prepare {
                if h.kind == HeadKind::Text {
                    err(
                        &format!("{field}.prepare"),
                        "a text head reads no photos; remove prepare".into(),
                    );
                }
                for (part, problem) in p.problems() {
                    err(&format!("{field}.prepare.{part}"), problem);
                }
            }
            if !(h.temperature.is_finite() && h.temperature > 0.0) {
                err(
                    &format!("{field}.temperature"),
                    format!("{} must be finite and > 0", h.temperature),
                );
            }
        }
        if let Some(c) = &self.no_dish {
            self.validate_no_dish(c, &mut err);
        }
        for (field, name, kinds) in [
            ("default_head", &self.default_head, &[HeadKind::Image][..]),
            ("text_head", &self.text_head, &[HeadKind::Text][..]),
            (
                "fusion_head",
                &self.fusion_head,
                &[HeadKind::EarlyFusion, HeadKind::LateFusion][..],
            ),
        ] {
            let Some(name) = name else { continue };
            match self.head(name) {
                None => err(
                    field,
                    format!("'{name}' is not the name of a head in [[heads]]"),
                ),
                Some(h) if !kinds.contains(&h.kind) => err(
                    field,
                    format!(
                        "'{name}' is a {} head; {field} must name a {} head",
                        h.kind.as_str(),
                        kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ),
                Some(_) => {}
            }
        }
        errs
    }

    /// The no-dish check reads an image-encoder output that has more entries than its highest
    /// class, and its thresholds are shares in [0, 1].
    fn validate_no_dish(&self, c: &NoDishCheck, err: &mut impl FnMut(&str, String)) {
        let output = self
            .image_encoder
            .as_ref()
            .and_then(|e| e.outputs.iter().find(|o| o.name == c.encoder_output));
        match output {
            None => err(
                "no_dish.encoder_output",
                format!("'{}' is not an image_encoder output", c.encoder_output),
            ),
            Some(o) => {
                let width = match o.shape.last() {
                    Some(Dim::Fixed(n)) => Some(*n as usize),
                    _ => None,
                };
                match (width, c.classes.iter().max()) {
                    (_, None) => err("no_dish.classes", "must name at least one class".into()),
                    (Some(w), Some(&top)) if top >= w => err(
                        "no_dish.classes",
                        format!(
                            "class {top} is out of range for output '{}' ({w} entries)",
                            o.name
                        ),
                    ),
                    _ => {}
                }
            }
        }
        for (field, v) in [
            ("threshold", c.threshold),
            ("thumbnail_threshold", c.thumbnail_threshold),
            ("food_recall", c.food_recall),
        ] {
            if !(0.0..=1.0).contains(&v) {
                err(
                    &format!("no_dish.{field}"),
                    format!("{v} must be in [0, 1]"),
                );
            }
        }
        if c.min_side > c.thumbnail_below {
            err(
                "no_dish.min_side",
                format!(
                    "{} must not exceed thumbnail_below ({})",
                    c.min_side, c.thumbnail_below
                ),
            );
        }
    }

    /// A late-fusion head names an image head and a text head of the pack with the same classes,
    /// and has no model of its own.
    fn validate_late_fusion(&self, field: &str, h: &Head, err: &mut impl FnMut(&str, String)) {
        if h.encoder_output.is_some() || !h.variants.is_empty() {
            err(
                field,
                "a late-fusion head has no model: remove encoder_output and variants".into(),
            );
        }
        let Some(f) = &h.fuse else {
            err(
                &format!("{field}.fuse"),
                "is missing; a late-fusion head needs fuse = { image_head, text_head, text_weight }"
                    .into(),
            );
            return;
        };
        for (part, name, kind) in [
            ("image_head", &f.image_head, HeadKind::Image),
            ("text_head", &f.text_head, HeadKind::Text),
        ] {
            match self.head(name) {
                Some(o) if o.kind == kind && o.classes == h.classes => {}
                Some(o) => err(
                    &format!("{field}.fuse.{part}"),
                    format!(
                        "'{name}' is a {} head with {} classes; it must be a {} head with {} classes",
                        o.kind.as_str(),
                        o.classes,
                        kind.as_str(),
                        h.classes
                    ),
                ),
                None => err(
                    &format!("{field}.fuse.{part}"),
                    format!("'{name}' is not the name of a head in [[heads]]"),
                ),
            }
        }
        if !(0.0..=1.0).contains(&f.text_weight) {
            err(
                &format!("{field}.fuse.text_weight"),
                format!("{} must be in [0, 1]", f.text_weight),
            );
        }
    }
}

/// Why a pack-relative path was refused: the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathProblem(pub String);

/// A pack-relative path must stay inside the pack: no absolute paths, no `..`, no empty parts.
pub fn check_relative_path(p: &str) -> Result<(), PathProblem> {
    check_path(p).map_err(PathProblem)
}

fn check_path(p: &str) -> Result<(), String> {
    use std::path::Component;
    if p.is_empty() {
        return Err("is empty; name a file inside the pack directory".into());
    }
    let path = std::path::Path::new(p);
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                    "'{p}' leaves the pack directory; packs may only name files inside their own directory"
                ))
            }
        }
    }
    if p.contains('\\') {
        return Err(format!("'{p}' uses '\\'; use '/' as the separator"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_resolve_by_name_default_or_kind_and_say_why_not() {
        let mut m = sample();
        let image = m.heads[0].clone();
        let text = Head {
            name: "titles".into(),
            kind: HeadKind::Text,
            encoder_output: None,
            ..image.clone()
        };
        m.heads.push(text);
        // No default named: the first head of the kind.
        m.default_head = None;
        assert_eq!(
            m.resolve_head(None, HeadInput::Photo).unwrap().name,
            "imagenet"
        );
        assert_eq!(
            m.resolve_head(None, HeadInput::Text).unwrap().name,
            "titles"
        );
        m.text_head = Some("titles".into());
        assert_eq!(
            m.resolve_head(Some("titles"), HeadInput::Text)
                .unwrap()
                .name,
            "titles"
        );
        let e = m.resolve_head(None, HeadInput::PhotoAndText).unwrap_err();
        assert!(
            matches!(e, HeadLookupError::NoHead { .. }) && e.to_string().contains("no fusion head"),
            "{e}"
        );
        let e = m.resolve_head(Some("nope"), HeadInput::Photo).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pack 't' has no head 'nope' (heads: imagenet, titles)"
        );
        let e = m
            .resolve_head(Some("titles"), HeadInput::Photo)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("is a text head; photos alone need an image head"),
            "{e}"
        );
        // A default that names a head of the wrong kind is refused, not skipped.
        m.default_head = Some("titles".into());
        assert!(matches!(
            m.resolve_head(None, HeadInput::Photo),
            Err(HeadLookupError::WrongKind { .. })
        ));
    }

    pub(crate) fn sample() -> Manifest {
        let file = |f: &str| PackFile {
            file: f.into(),
            sha256: "a".repeat(64),
            bytes: 1,
        };
        let variant = |f: &str| {
            BTreeMap::from([(
                Precision::Fp32,
                Variant {
                    onnx: file(f),
                    note: String::new(),
                    artefacts: BTreeMap::new(),
                },
            )])
        };
        Manifest {
            format_version: FORMAT_VERSION,
            name: "t".into(),
            version: "1".into(),
            description: String::new(),
            provenance: vec![],
            image_encoder: Some(ImageEncoder {
                variants: variant("img.onnx"),
                input: TensorSpec::new(
                    "pixels",
                    DType::F32,
                    vec![
                        Dim::named("batch"),
                        Dim::Fixed(3),
                        Dim::Fixed(224),
                        Dim::Fixed(224),
                    ],
                ),
                layout: Layout::Nchw,
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
                outputs: vec![
                    TensorSpec::new(
                        "embedding",
                        DType::F32,
                        vec![Dim::named("batch"), Dim::Fixed(8)],
                    ),
                    TensorSpec::new(
                        "logits",
                        DType::F32,
                        vec![Dim::named("batch"), Dim::Fixed(2)],
                    ),
                ],
                embedding_output: "embedding".into(),
                embedding_dim: 8,
            }),
            text_encoder: None,
            heads: vec![Head {
                name: "imagenet".into(),
                kind: HeadKind::Image,
                encoder_output: Some("logits".into()),
                variants: BTreeMap::new(),
                labels: file("labels.txt"),
                classes: 2,
                temperature: 1.0,
                exemplars: None,
                fuse: None,
                prepare: None,
            }],
            default_head: Some("imagenet".into()),
            recipes: None,
            text_head: None,
            fusion_head: None,
            no_dish: None,
        }
    }

    #[test]
    fn sample_is_valid_and_round_trips_through_toml() {
        let m = sample();
        assert_eq!(m.validate(), vec![]);
        let text = m.to_toml();
        assert_eq!(Manifest::from_toml(&text).unwrap(), m);
    }

    fn with_preparation_and_check(mut m: Manifest) -> Manifest {
        m.heads[0].prepare = Some(PhotoPreparation {
            size: 64,
            resize: Interpolation::Bicubic,
            jpeg_quality: Some(75),
        });
        m.no_dish = Some(NoDishCheck {
            encoder_output: "logits".into(),
            classes: vec![1],
            threshold: 0.25,
            thumbnail_threshold: 0.02,
            thumbnail_below: 128,
            min_side: 32,
            food_recall: 0.97,
            note: "test".into(),
        });
        m
    }

    #[test]
    fn preparation_and_no_dish_check_round_trip_through_toml() {
        let m = with_preparation_and_check(sample());
        assert_eq!(m.validate(), vec![]);
        let text = m.to_toml();
        assert!(
            text.contains("[heads.prepare]") && text.contains("[no_dish]"),
            "{text}"
        );
        let back = Manifest::from_toml(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.preparation_of(&back.heads[0]), m.heads[0].prepare);
        assert_eq!(
            m.heads[0].prepare.unwrap().to_string(),
            "centred square -> 64x64 px (bicubic) -> JPEG q75"
        );
    }

    #[test]
    fn preparation_and_no_dish_check_are_validated_field_by_field() {
        let mut m = with_preparation_and_check(sample());
        m.heads[0].prepare = Some(PhotoPreparation {
            size: 4,
            resize: Interpolation::Bilinear,
            jpeg_quality: Some(0),
        });
        let c = m.no_dish.as_mut().unwrap();
        c.classes = vec![0, 2];
        c.threshold = 1.5;
        c.min_side = 500;
        let fields: Vec<String> = m.validate().into_iter().map(|e| e.field).collect();
        for want in [
            "heads[0].prepare.size",
            "heads[0].prepare.jpeg_quality",
            "no_dish.classes",
            "no_dish.threshold",
            "no_dish.min_side",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} not in {fields:?}");
        }
        m.no_dish.as_mut().unwrap().encoder_output = "nope".into();
        let fields: Vec<String> = m.validate().into_iter().map(|e| e.field).collect();
        assert!(
            fields.iter().any(|f| f == "no_dish.encoder_output"),
            "{fields:?}"
        );
        // A field the schema does not know is refused, not ignored.
        let text = with_preparation_and_check(sample())
            .to_toml()
            .replace("jpeg_quality = 75", "jpeg_quality = 75\nsharpen = true");
        let e = Manifest::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("sharpen"), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let text = sample()
            .to_toml()
            .replace("embedding_dim = 8", "embedding_dim = 8\nembeding_dims = 9");
        let e = Manifest::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("embeding_dims"), "{e}");
    }

    #[test]
    fn paths_that_escape_the_pack_are_refused() {
        for bad in ["../x.onnx", "/etc/passwd", "a/../../b", "", "a\\b"] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
        for good in ["x.onnx", "sub/x.onnx", "./x.onnx"] {
            assert!(check_relative_path(good).is_ok(), "{good}");
        }
        let mut m = sample();
        m.heads[0].labels.file = "../../labels.txt".into();
        let errs = m.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "heads[0].labels.file");
    }

    #[test]
    fn validation_names_each_broken_field() {
        let mut m = sample();
        m.format_version = 9;
        m.default_head = Some("nope".into());
        let e = m.image_encoder.as_mut().unwrap();
        e.embedding_output = "missing".into();
        e.preprocess.std = [1.0, 0.0, 1.0];
        e.variants.clear();
        m.heads[0].encoder_output = Some("nothing".into());
        m.heads[0].labels.sha256 = "xyz".into();
        let fields: Vec<String> = m.validate().into_iter().map(|e| e.field).collect();
        for f in [
            "format_version",
            "default_head",
            "image_encoder.embedding_output",
            "image_encoder.preprocess.std",
            "image_encoder.variants",
            "heads[0].encoder_output",
            "heads[0].labels.sha256",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
    }

    #[test]
    fn input_shape_must_match_preprocess_size() {
        let mut m = sample();
        m.image_encoder.as_mut().unwrap().preprocess.width = 240;
        let errs = m.validate();
        assert!(
            errs.iter().any(|e| e.field == "image_encoder.input.shape"),
            "{errs:?}"
        );
    }
}
