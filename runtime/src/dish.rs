//! Photo (and optional text) -> ranked dishes: the one chain every front end runs.
//!
//! ```text
//! pixels ─> PhotoEncoder (preprocess into reused buffers, image encoder, the output the head
//!           reads) ─┐
//! text ─> TextEncoder ─> text context (optional) ────────┴─> head or fusion head
//!        ─> calibrated probabilities (softmax at the head's temperature) ─> top-k
//! ```
//!
//! `classify`, `watch`, `serve`, `bench` (its pipeline column), `eval` and `teach` (its
//! embeddings, through [`PhotoEncoder`]) all go through this module, so a change to how a photo
//! becomes a dish is made here once. Every stage is timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dishcam_models::manifest::{Head, HeadInput, HeadKind};
use dishcam_models::{Pack, Precision};
use image::RgbImage;

use crate::backend::{Backend, BackendKind, DeviceTimings};
use crate::classify::{softmax_in_place, top_k, Scored};
use crate::encoder::{ImageEncoder, LoadOptions, TextEncoder};
use crate::error::RuntimeError;
use crate::head::{read_labels, Classifier};
use crate::pipeline::FrameClassifier;
use dishcam_capture::Frame;

/// Pixels -> the vector a head reads: the image encoder's preprocessing into a reused buffer,
/// the encoder, and the output the head reads (the embedding, or an output such as ImageNet
/// logits that a head names).
pub struct PhotoEncoder {
    encoder: ImageEncoder,
    /// Index of the output read among the encoder's buffers (0 = the embedding).
    output: usize,
}

impl PhotoEncoder {
    /// Loads the pack's image encoder; `output` names the encoder output to read instead of the
    /// embedding (a head's `encoder_output`).
    pub fn load(
        pack: &Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
        output: Option<&str>,
    ) -> Result<Self, RuntimeError> {
        let extra: Vec<&str> = output.into_iter().collect();
        Ok(Self {
            encoder: ImageEncoder::load(pack, backend, opts, &extra)?,
            output: extra.len(),
        })
    }

    /// Preprocesses packed RGB8 pixels (a decoded photo or a camera frame) into the encoder's
    /// input buffer.
    pub fn preprocess(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<(), RuntimeError> {
        self.encoder.preprocess_rgb(rgb, width, height)
    }

    /// Runs the encoder on the preprocessed input; returns the output the head reads, from a
    /// buffer the encoder keeps (no allocation per call on onnxruntime once warm).
    pub fn run(&mut self) -> Result<&[f32], RuntimeError> {
        let output = self.output;
        let out = self.encoder.run_buffered()?;
        Ok(out[output].as_slice())
    }

    /// Preprocesses and encodes one photo; returns a copy of the output the head reads.
    pub fn embed(&mut self, img: &RgbImage) -> Result<Vec<f32>, RuntimeError> {
        let (w, h) = img.dimensions();
        self.preprocess(img.as_raw(), w, h)?;
        Ok(self.run()?.to_vec())
    }

    /// The preprocessed input tensor and its shape (batch 1).
    pub fn input(&self) -> (&[f32], &[usize]) {
        (self.encoder.input(), self.encoder.input_shape())
    }

    /// Host-to-device, compute and device-to-host times of the last run, on GPU backends.
    pub fn device_timings(&self) -> Option<DeviceTimings> {
        self.encoder.device_timings()
    }
}

/// A head of the pack, loaded, with its labels.
struct LoadedHead {
    head: Head,
    labels: Vec<String>,
    scorer: Classifier,
}

impl LoadedHead {
    fn load(
        pack: &Pack,
        head: &Head,
        backend: &dyn Backend,
        opts: &LoadOptions,
    ) -> Result<Self, RuntimeError> {
        Ok(Self {
            labels: read_labels(pack, head)?,
            scorer: Classifier::load(pack, head, backend, opts)?,
            head: head.clone(),
        })
    }
}

/// Whether the classifier also loads the pack's fusion head, for photos that come with a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FusionHead<'a> {
    /// Photos are classified by the head alone.
    #[default]
    No,
    /// The pack's fusion head when it has one ([`DishClassifier::fusion_missing`] says why
    /// not otherwise).
    IfAny,
    /// This fusion head, or the pack's default one: loading fails without it.
    Required(Option<&'a str>),
}

/// What [`DishClassifier::load`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DishOptions<'a> {
    /// The head, by name; `None`: the pack's default head for `input`.
    pub head: Option<&'a str>,
    /// What the head reads: photos, a text, or photos with a text.
    pub input: HeadInput,
    /// Also load the pack's fusion head for photos with a text context (an image head only).
    pub fusion: FusionHead<'a>,
}

impl Default for DishOptions<'_> {
    fn default() -> Self {
        Self {
            head: None,
            input: HeadInput::Photo,
            fusion: FusionHead::No,
        }
    }
}

/// Where the time of one answer went. `encode` is the image encoder's; a text encoded for
/// this answer alone is in `text_encode`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub preprocess: Duration,
    pub encode: Duration,
    pub text_encode: Option<Duration>,
    /// Head (or fusion), softmax and top-k.
    pub head: Duration,
}

/// A ranked answer: the head that gave it, its labels, the top classes with calibrated
/// probabilities, and the time of each stage.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub head: &'a Head,
    pub labels: &'a [String],
    pub top: Vec<Scored>,
    pub timings: StageTimes,
}

impl Answer<'_> {
    /// The label of class `class` (`class N` when the label list is short).
    pub fn label(&self, class: usize) -> String {
        label_of(self.labels, class)
    }

    /// The most likely dish.
    pub fn dish(&self) -> Option<&str> {
        self.top
            .first()
            .and_then(|s| self.labels.get(s.class))
            .map(String::as_str)
    }
}

/// The label of class `class` in `labels`, or `class N`.
pub fn label_of(labels: &[String], class: usize) -> String {
    labels
        .get(class)
        .cloned()
        .unwrap_or_else(|| format!("class {class}"))
}

/// Decoded pixels (and an optional text) -> ranked dishes with stage timings. See the module
/// documentation.
pub struct DishClassifier {
    pack: Pack,
    opts: LoadOptions,
    backend: Arc<dyn Backend>,
    photo: Option<PhotoEncoder>,
    text: Option<TextEncoder>,
    main: LoadedHead,
    fusion: Option<LoadedHead>,
    fusion_missing: Option<String>,
    /// The text embedding fused with the photos that follow, if any.
    context: Option<Vec<f32>>,
    temperature: Option<f32>,
    /// Scores, then probabilities, of the last answer; sized once per head.
    probs: Vec<f32>,
}

impl DishClassifier {
    /// Resolves the head (by name or the pack's default for the input), loads it, the encoders
    /// it reads and, when asked, the pack's fusion head. An image head loads the text encoder on
    /// the first text it is given; a text or fusion head loads it now.
    pub fn load(
        pack: &Pack,
        backend: Arc<dyn Backend>,
        opts: &LoadOptions,
        options: &DishOptions<'_>,
    ) -> Result<Self, RuntimeError> {
        let m = &pack.manifest;
        let backend_ref = backend.as_ref();
        let head = m.resolve_head(options.head, options.input)?;
        let main = LoadedHead::load(pack, head, backend_ref, opts)?;
        let (fusion, fusion_missing) = match (options.fusion, head.kind) {
            (FusionHead::No, _) => (None, Some("no fusion head was asked for".to_string())),
            (_, HeadKind::Image) => {
                let wanted = match options.fusion {
                    FusionHead::Required(name) => name,
                    _ => None,
                };
                match m.resolve_head(wanted, HeadInput::PhotoAndText) {
                    Ok(f) => (Some(LoadedHead::load(pack, f, backend_ref, opts)?), None),
                    Err(e) if options.fusion == FusionHead::IfAny => (None, Some(e.to_string())),
                    Err(e) => return Err(e.into()),
                }
            }
            (_, kind) => (
                None,
                Some(format!(
                    "head '{}' is a {} head; only an image head is combined with a fusion head",
                    head.name,
                    kind.as_str()
                )),
            ),
        };
        let reads_photo = head.kind != HeadKind::Text;
        let photo = if reads_photo {
            Some(PhotoEncoder::load(
                pack,
                backend_ref,
                opts,
                head.encoder_output.as_deref(),
            )?)
        } else {
            None
        };
        let text = if head.kind != HeadKind::Image {
            Some(TextEncoder::load(pack, backend_ref, opts)?)
        } else {
            None
        };
        Ok(Self {
            pack: pack.clone(),
            opts: opts.clone(),
            backend,
            photo,
            text,
            probs: vec![0.0; main.labels.len()],
            main,
            fusion,
            fusion_missing,
            context: None,
            temperature: None,
        })
    }

    /// The text encoder, loaded on first use.
    fn text_encoder(&mut self) -> Result<&mut TextEncoder, RuntimeError> {
        if self.text.is_none() {
            self.text = Some(TextEncoder::load(
                &self.pack,
                self.backend.as_ref(),
                &self.opts,
            )?);
        }
        Ok(self.text.as_mut().expect("loaded above"))
    }

    /// The pack the models came from.
    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    pub fn precision(&self) -> Precision {
        self.opts.precision
    }

    /// The head photos (or a text) alone go through.
    pub fn head(&self) -> &Head {
        &self.main.head
    }

    /// The labels of [`DishClassifier::head`], in class order.
    pub fn labels(&self) -> &[String] {
        &self.main.labels
    }

    /// The fusion head used for photos with a text context, when one was loaded.
    pub fn fusion_head(&self) -> Option<(&Head, &[String])> {
        self.fusion.as_ref().map(|f| (&f.head, f.labels.as_slice()))
    }

    /// The head the next photo goes through (the fusion head when a text context is set and one
    /// was loaded, else [`DishClassifier::head`]) and its labels.
    pub fn answering(&self) -> (&Head, &[String]) {
        let loaded = self.active();
        (&loaded.head, &loaded.labels)
    }

    /// Why no fusion head was loaded, when none was.
    pub fn fusion_missing(&self) -> Option<&str> {
        self.fusion_missing.as_deref()
    }

    /// The image-encoder half of the chain, for tools that time or feed it directly.
    pub fn photo_encoder(&self) -> Option<&PhotoEncoder> {
        self.photo.as_ref()
    }

    /// Replaces every head's softmax temperature with `t` (`None`: each head's own).
    pub fn set_temperature(&mut self, t: Option<f32>) {
        self.temperature = t;
    }

    /// Encodes `text` with the pack's text encoder (loading it on first use).
    pub fn encode_text(&mut self, text: &str) -> Result<Vec<f32>, RuntimeError> {
        self.text_encoder()?.encode(text)
    }

    /// Sets the text fused with the photos that follow (`None` clears it: photos alone);
    /// returns how long encoding it took.
    pub fn set_text(&mut self, text: Option<&str>) -> Result<Duration, RuntimeError> {
        let t = Instant::now();
        let embedding = match text {
            Some(text) => Some(self.encode_text(text)?),
            None => None,
        };
        self.set_text_embedding(embedding);
        Ok(t.elapsed())
    }

    /// Sets the text context from an embedding made elsewhere (e.g. a reader thread).
    pub fn set_text_embedding(&mut self, embedding: Option<Vec<f32>>) {
        self.context = embedding;
    }

    /// Whether a text context is set.
    pub fn has_text(&self) -> bool {
        self.context.is_some()
    }

    /// Preprocesses pixels for [`DishClassifier::classify_preprocessed`].
    pub fn preprocess(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<(), RuntimeError> {
        self.photo_mut()?.preprocess(rgb, width, height)
    }

    /// Classifies one photo (with the text context, if one is set): every stage, timed.
    pub fn classify(&mut self, img: &RgbImage, k: usize) -> Result<Answer<'_>, RuntimeError> {
        let t0 = Instant::now();
        let (w, h) = img.dimensions();
        self.preprocess(img.as_raw(), w, h)?;
        let preprocess = t0.elapsed();
        let mut answer = self.classify_preprocessed(k)?;
        answer.timings.preprocess = preprocess;
        Ok(answer)
    }

    /// Classifies the photo [`DishClassifier::preprocess`] prepared.
    pub fn classify_preprocessed(&mut self, k: usize) -> Result<Answer<'_>, RuntimeError> {
        let t0 = Instant::now();
        self.run_photo()?;
        let t1 = Instant::now();
        // Moved out and back so that the head can borrow `self`; no allocation once sized.
        let mut probs = std::mem::take(&mut self.probs);
        probs.resize(self.active().labels.len(), 0.0);
        let ranked = self.rank_photo_into(&mut probs);
        self.probs = probs;
        ranked?;
        let top = top_k(&self.probs, k);
        let t2 = Instant::now();
        let loaded = self.active();
        Ok(Answer {
            head: &loaded.head,
            labels: &loaded.labels,
            top,
            timings: StageTimes {
                preprocess: Duration::ZERO,
                encode: t1 - t0,
                text_encode: None,
                head: t2 - t1,
            },
        })
    }

    /// Classifies a text alone with a text head.
    pub fn classify_text(&mut self, text: &str, k: usize) -> Result<Answer<'_>, RuntimeError> {
        let t0 = Instant::now();
        let embedding = self.encode_text(text)?;
        let t1 = Instant::now();
        self.probs.resize(self.main.labels.len(), 0.0);
        probabilities(
            &mut self.main,
            None,
            Some(&embedding),
            self.temperature,
            &mut self.probs,
        )?;
        let top = top_k(&self.probs, k);
        let t2 = Instant::now();
        Ok(Answer {
            head: &self.main.head,
            labels: &self.main.labels,
            top,
            timings: StageTimes {
                preprocess: Duration::ZERO,
                encode: Duration::ZERO,
                text_encode: Some(t1 - t0),
                head: t2 - t1,
            },
        })
    }

    /// The head's calibrated probabilities for features computed elsewhere (e.g. cached
    /// embeddings): the image encoder's output the head reads and/or a text embedding.
    pub fn probabilities_of(
        &mut self,
        image: Option<&[f32]>,
        text: Option<&[f32]>,
    ) -> Result<&[f32], RuntimeError> {
        self.probs.resize(self.main.labels.len(), 0.0);
        probabilities(
            &mut self.main,
            image,
            text,
            self.temperature,
            &mut self.probs,
        )?;
        Ok(&self.probs)
    }

    /// Device timings of the last image-encoder run, on GPU backends.
    pub fn device_timings(&self) -> Option<DeviceTimings> {
        self.photo.as_ref().and_then(PhotoEncoder::device_timings)
    }

    fn photo_mut(&mut self) -> Result<&mut PhotoEncoder, RuntimeError> {
        let head = &self.main.head.name;
        self.photo.as_mut().ok_or_else(|| RuntimeError::NeedsInput {
            head: head.clone(),
            input: "a text, not a photo",
        })
    }

    fn uses_fusion(&self) -> bool {
        self.context.is_some() && self.fusion.is_some()
    }

    /// The head the next photo goes through: the fusion head with a text context, else the head.
    fn active(&self) -> &LoadedHead {
        match &self.fusion {
            Some(f) if self.context.is_some() => f,
            _ => &self.main,
        }
    }

    /// Runs the image encoder on the preprocessed input.
    fn run_photo(&mut self) -> Result<(), RuntimeError> {
        self.photo_mut()?.run().map(|_| ())
    }

    /// The active head's probabilities for the last encoded photo, into `out` (one per class).
    fn rank_photo_into(&mut self, out: &mut [f32]) -> Result<(), RuntimeError> {
        let fused = self.uses_fusion();
        let photo = self.photo.as_ref().expect("run_photo checked it");
        let loaded = if fused {
            self.fusion.as_mut().expect("uses_fusion checked it")
        } else {
            &mut self.main
        };
        if loaded.labels.len() != out.len() {
            return Err(RuntimeError::OutputSize {
                model: format!("head '{}'", loaded.head.name),
                output: "probabilities".into(),
                got: loaded.labels.len(),
                want: out.len(),
            });
        }
        probabilities(
            loaded,
            Some(photo.last_output(fused)),
            self.context.as_deref(),
            self.temperature,
            out,
        )
    }
}

impl PhotoEncoder {
    /// Of the last run: the output the head reads, or with `embedding` the embedding (what a
    /// fusion head reads, whatever output the image head reads).
    fn last_output(&self, embedding: bool) -> &[f32] {
        let i = if embedding { 0 } else { self.output };
        self.encoder.last_outputs()[i].as_slice()
    }
}

/// The dish chain's last step, in one place: the head's scores for the inputs it reads, then
/// softmax at the head's temperature (or `temperature`), into `out` (one entry per class).
fn probabilities(
    loaded: &mut LoadedHead,
    image: Option<&[f32]>,
    text: Option<&[f32]>,
    temperature: Option<f32>,
    out: &mut [f32],
) -> Result<(), RuntimeError> {
    let kind = loaded.head.kind;
    let image = image.filter(|_| kind != HeadKind::Text);
    let text = text.filter(|_| kind != HeadKind::Image);
    loaded.scorer.scores_into(image, text, out)?;
    softmax_in_place(out, temperature.unwrap_or(loaded.head.temperature));
    Ok(())
}

impl FrameClassifier for DishClassifier {
    fn classes(&self) -> usize {
        self.main.labels.len()
    }

    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        DishClassifier::preprocess(self, &frame.rgb, frame.width, frame.height)
    }

    /// The per-frame path: encoder buffers, head, softmax into the caller's `probs`; nothing
    /// allocated per frame for image and text heads on onnxruntime once warm.
    fn classify(&mut self, probs: &mut [f32]) -> Result<(), RuntimeError> {
        self.run_photo()?;
        self.rank_photo_into(probs)
    }
}
