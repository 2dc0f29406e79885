//! Photo (and optional text) -> ranked dishes: the one chain every front end runs.
//!
//! ```text
//! pixels ─> no-dish check (the encoder on the photo as it comes: food score) ─> "no dish"
//!        └─> the head's photo preparation ─> PhotoEncoder (preprocess into reused buffers,
//!            image encoder, the output the head reads) ─┐
//! text ─> TextEncoder ─> text context (optional) ───────┴─> head or fusion head
//!        ─> calibrated probabilities (softmax at the head's temperature) ─> top-k
//! ```
//!
//! The check runs when the pack has one (`[no_dish]`); the preparation when the head records
//! one (`prepare`, e.g. the 64 px domain of a head fitted on thumbnails). A head with neither
//! runs the encoder once per photo, and a head with a preparation but no check likewise; the
//! check and a preparation together cost a second encoder run on photos that show food.
//!
//! `classify`, `watch`, `serve`, `bench` (its pipeline column), `eval` and `teach` (its
//! embeddings, through [`PhotoEncoder`]) all go through this module, so a change to how a photo
//! becomes a dish is made here once. Every stage is timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use dishcam_models::manifest::{Head, HeadInput, HeadKind, NoDishCheck, PhotoPreparation};
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
    /// Index of the output the no-dish check reads, when it is loaded.
    check: Option<usize>,
    /// The head's photo preparation, applied by [`PhotoEncoder::embed`].
    prepare: Option<PhotoPreparation>,
}

impl PhotoEncoder {
    /// Loads the pack's image encoder; `output` names the encoder output to read instead of the
    /// embedding (a head's `encoder_output`); `prepare` is the head's photo preparation, which
    /// [`PhotoEncoder::embed`] applies.
    pub fn load(
        pack: &Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
        output: Option<&str>,
        prepare: Option<PhotoPreparation>,
    ) -> Result<Self, RuntimeError> {
        Self::load_reading(pack, backend, opts, output, None, prepare)
    }

    /// As [`PhotoEncoder::load`], also reading `check_output` (the no-dish check's).
    fn load_reading<'n>(
        pack: &'n Pack,
        backend: &dyn Backend,
        opts: &LoadOptions,
        output: Option<&'n str>,
        check_output: Option<&'n str>,
        prepare: Option<PhotoPreparation>,
    ) -> Result<Self, RuntimeError> {
        let embedding = pack
            .manifest
            .image_encoder
            .as_ref()
            .map(|e| e.embedding_output.as_str());
        let mut extra: Vec<&'n str> = Vec::new();
        let mut index_of = |name: Option<&'n str>| -> Option<usize> {
            let name = name?;
            if Some(name) == embedding {
                return Some(0);
            }
            match extra.iter().position(|&e| e == name) {
                Some(i) => Some(i + 1),
                None => {
                    extra.push(name);
                    Some(extra.len())
                }
            }
        };
        let output_index = index_of(output).unwrap_or(0);
        let check = index_of(check_output);
        Ok(Self {
            encoder: ImageEncoder::load(pack, backend, opts, &extra)?,
            output: output_index,
            check,
            prepare,
        })
    }

    /// The photo preparation [`PhotoEncoder::embed`] applies, if any.
    pub fn preparation(&self) -> Option<&PhotoPreparation> {
        self.prepare.as_ref()
    }

    /// `img` as the head's photos were prepared (itself when the head records no preparation).
    pub fn prepare<'i>(&self, img: &'i RgbImage) -> Result<Cow<'i, RgbImage>, RuntimeError> {
        Ok(match &self.prepare {
            Some(p) => Cow::Owned(dishcam_imageproc::prepare(img, p)?),
            None => Cow::Borrowed(img),
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

    /// Prepares (as the head's photos were), preprocesses and encodes one photo; returns a copy
    /// of the output the head reads.
    pub fn embed(&mut self, img: &RgbImage) -> Result<Vec<f32>, RuntimeError> {
        let img = self.prepare(img)?;
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
    /// Run the pack's no-dish check, when it has one, before the head.
    pub no_dish_check: bool,
}

impl Default for DishOptions<'_> {
    fn default() -> Self {
        Self {
            head: None,
            input: HeadInput::Photo,
            fusion: FusionHead::No,
            no_dish_check: true,
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
    /// The no-dish check's own encoder run, when the head's photo preparation needs a second
    /// one (else the check reads the same run and this is zero).
    pub check: Duration,
    /// Head (or fusion), softmax and top-k.
    pub head: Duration,
}

/// Why a photo was answered "no dish".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoDishReason {
    /// The photo's shorter side is under the check's `min_side`.
    TooSmall { side: u32, min_side: u32 },
    /// The photo's food score is under the threshold.
    NotFood,
}

impl NoDishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            NoDishReason::TooSmall { .. } => "too-small",
            NoDishReason::NotFood => "not-food",
        }
    }
}

/// A "no dish" answer: the photo's food score, the threshold it fell under, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoDish {
    /// Share of the check's softmax on food classes (0 when the photo was too small to run).
    pub score: f32,
    pub threshold: f32,
    pub reason: NoDishReason,
}

impl std::fmt::Display for NoDish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            NoDishReason::TooSmall { side, min_side } => write!(
                f,
                "no dish: the photo is {side} px on its shorter side, under the {min_side} px a dish needs"
            ),
            NoDishReason::NotFood => write!(
                f,
                "no dish in view (food score {:.3}, under the threshold {:.3})",
                self.score, self.threshold
            ),
        }
    }
}

/// What a photo or frame showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// A dish: the head ranked it.
    Dish,
    NoDish(NoDish),
}

/// The check's food score: the share of `softmax(logits)` on `classes` (0 for non-finite
/// logits). Allocates nothing.
pub fn food_score(logits: &[f32], classes: &[usize]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0.0;
    }
    let total: f32 = logits.iter().map(|&x| (x - max).exp()).sum();
    let food: f32 = classes
        .iter()
        .filter_map(|&c| logits.get(c))
        .map(|&x| (x - max).exp())
        .sum();
    if total > 0.0 && total.is_finite() {
        food / total
    } else {
        0.0
    }
}

/// The check's verdict for a photo of `width` x `height` whose check output is `logits`
/// (`None`: not run, for a photo under `min_side`).
pub fn no_dish_verdict(
    check: &NoDishCheck,
    logits: Option<&[f32]>,
    width: u32,
    height: u32,
) -> Verdict {
    let side = width.min(height);
    if side < check.min_side {
        return Verdict::NoDish(NoDish {
            score: 0.0,
            threshold: check.threshold,
            reason: NoDishReason::TooSmall {
                side,
                min_side: check.min_side,
            },
        });
    }
    let threshold = if side < check.thumbnail_below {
        check.thumbnail_threshold
    } else {
        check.threshold
    };
    let score = logits.map_or(0.0, |l| food_score(l, &check.classes));
    if score < threshold {
        Verdict::NoDish(NoDish {
            score,
            threshold,
            reason: NoDishReason::NotFood,
        })
    } else {
        Verdict::Dish
    }
}

/// A ranked answer: the head that gave it, its labels, the top classes with calibrated
/// probabilities, and the time of each stage.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub head: &'a Head,
    pub labels: &'a [String],
    /// Empty when the photo shows no dish.
    pub top: Vec<Scored>,
    /// Set when the no-dish check found no dish in the photo.
    pub no_dish: Option<NoDish>,
    pub timings: StageTimes,
}

impl Answer<'_> {
    /// The label of class `class` (`class N` when the label list is short).
    pub fn label(&self, class: usize) -> String {
        label_of(self.labels, class)
    }

    /// The most likely dish; `None` when the photo shows no dish.
    pub fn dish(&self) -> Option<&str> {
        if self.no_dish.is_some() {
            return None;
        }
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
    /// The pack's no-dish check, when it runs.
    check: Option<NoDishCheck>,
    /// Size of the last preprocessed photo.
    frame: (u32, u32),
    /// The last photo's pixels, kept (in a reused buffer) until the check has passed, when a
    /// head's preparation needs them: the encoder input holds the photo as it came, which the
    /// check reads. A frame with no dish is never prepared.
    pending: Vec<u8>,
    has_pending: bool,
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
        let prepare = m.preparation_of(head);
        if let Some(f) = &fusion {
            let fusion_prepare = m.preparation_of(&f.head);
            if fusion_prepare != prepare {
                let show = |p: Option<PhotoPreparation>| {
                    p.map_or("they come (no preparation)".to_string(), |p| p.to_string())
                };
                return Err(RuntimeError::PreparationMismatch {
                    head: head.name.clone(),
                    head_prepare: show(prepare),
                    fusion: f.head.name.clone(),
                    fusion_prepare: show(fusion_prepare),
                });
            }
        }
        let check = m
            .no_dish
            .clone()
            .filter(|_| reads_photo && options.no_dish_check);
        let photo = if reads_photo {
            Some(PhotoEncoder::load_reading(
                pack,
                backend_ref,
                opts,
                head.encoder_output.as_deref(),
                check.as_ref().map(|c| c.encoder_output.as_str()),
                prepare,
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
            check,
            frame: (0, 0),
            pending: Vec::new(),
            has_pending: false,
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

    /// The pack's no-dish check, when it runs before the head.
    pub fn no_dish_check(&self) -> Option<&NoDishCheck> {
        self.check.as_ref()
    }

    /// The photo preparation of the head (and of its fusion head), if any.
    pub fn preparation(&self) -> Option<&PhotoPreparation> {
        self.photo.as_ref().and_then(PhotoEncoder::preparation)
    }

    /// Preprocesses pixels for [`DishClassifier::classify_preprocessed`]: prepared as the head's
    /// photos were, or, when the no-dish check reads the photo as it comes, that now and the
    /// prepared photo once the check has passed.
    pub fn preprocess(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<(), RuntimeError> {
        self.frame = (width, height);
        self.has_pending = false;
        let checked = self.check.is_some();
        let photo = self.photo_mut()?;
        if photo.preparation().is_none() {
            return photo.preprocess(rgb, width, height);
        }
        if checked {
            photo.preprocess(rgb, width, height)?;
            self.pending.clear();
            self.pending.extend_from_slice(rgb);
            self.has_pending = true;
            Ok(())
        } else {
            let img = image_of(rgb.to_vec(), width, height)?;
            let prepared = photo.prepare(&img)?;
            let (w, h) = prepared.dimensions();
            photo.preprocess(prepared.as_raw(), w, h)
        }
    }

    /// Runs the encoder for the photo [`DishClassifier::preprocess`] prepared: the no-dish check
    /// first (when it runs), then, for a photo with a dish and a head with a preparation, the
    /// prepared photo. Returns the verdict and the time of the check's own run.
    fn encode_checked(&mut self) -> Result<(Verdict, Duration), RuntimeError> {
        let (w, h) = self.frame;
        let Some(check) = &self.check else {
            self.run_photo()?;
            return Ok((Verdict::Dish, Duration::ZERO));
        };
        if w.min(h) < check.min_side {
            self.has_pending = false;
            return Ok((no_dish_verdict(check, None, w, h), Duration::ZERO));
        }
        let t0 = Instant::now();
        let photo = self
            .photo
            .as_mut()
            .expect("a check is only loaded with a photo encoder");
        photo.run()?;
        let verdict = no_dish_verdict(check, Some(photo.last_check_output()), w, h);
        // Without a preparation the head reads this same run: it is the head's encode.
        let separate = self.has_pending;
        if verdict != Verdict::Dish || !separate {
            self.has_pending = false;
            let checked = if separate {
                t0.elapsed()
            } else {
                Duration::ZERO
            };
            return Ok((verdict, checked));
        }
        let checked = t0.elapsed();
        self.has_pending = false;
        let img = image_of(std::mem::take(&mut self.pending), w, h)?;
        let prepared = photo.prepare(&img);
        let encoded = prepared.and_then(|p| {
            let (pw, ph) = p.dimensions();
            photo.preprocess(p.as_raw(), pw, ph)?;
            photo.run().map(|_| ())
        });
        // The buffer goes back for the next frame, whatever happened.
        self.pending = img.into_raw();
        encoded?;
        Ok((Verdict::Dish, checked))
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
        let (verdict, check) = self.encode_checked()?;
        let t1 = Instant::now();
        if let Verdict::NoDish(no_dish) = verdict {
            let loaded = self.active();
            return Ok(Answer {
                head: &loaded.head,
                labels: &loaded.labels,
                top: Vec::new(),
                no_dish: Some(no_dish),
                timings: StageTimes {
                    encode: t1 - t0 - check,
                    check,
                    ..StageTimes::default()
                },
            });
        }
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
            no_dish: None,
            timings: StageTimes {
                preprocess: Duration::ZERO,
                encode: t1 - t0 - check,
                text_encode: None,
                check,
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
            no_dish: None,
            timings: StageTimes {
                preprocess: Duration::ZERO,
                encode: Duration::ZERO,
                text_encode: Some(t1 - t0),
                check: Duration::ZERO,
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

/// Packed RGB8 pixels as an image (the buffer is moved, not copied).
fn image_of(rgb: Vec<u8>, width: u32, height: u32) -> Result<RgbImage, RuntimeError> {
    let len = rgb.len();
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| {
        dishcam_imageproc::PrepareError {
            width,
            height,
            problem: format!("{len} bytes is not {width}x{height} RGB8"),
        }
        .into()
    })
}

impl PhotoEncoder {
    /// Of the last run: the output the head reads, or with `embedding` the embedding (what a
    /// fusion head reads, whatever output the image head reads).
    fn last_output(&self, embedding: bool) -> &[f32] {
        let i = if embedding { 0 } else { self.output };
        self.encoder.last_outputs()[i].as_slice()
    }

    /// Of the last run: the output the no-dish check reads.
    fn last_check_output(&self) -> &[f32] {
        let i = self.check.expect("loaded with the check's output");
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
    /// allocated per frame for image and text heads on onnxruntime once warm (a head with a
    /// photo preparation allocates for it: a resize and a JPEG round trip). A frame with no
    /// dish leaves `probs` all zero.
    fn classify(&mut self, probs: &mut [f32]) -> Result<Verdict, RuntimeError> {
        let (verdict, _) = self.encode_checked()?;
        match verdict {
            Verdict::Dish => self.rank_photo_into(probs)?,
            Verdict::NoDish(_) => probs.fill(0.0),
        }
        Ok(verdict)
    }
}
