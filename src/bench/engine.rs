//! One benchmark configuration, loaded: our per-frame path (with and without text), the naive
//! loop an application would write, and the bare onnxruntime session, each timed per stage.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dishcam_models::manifest::{Layout, Preprocess};
use dishcam_models::Pack;
use dishcam_recipes::normalize::ExcludeFilter;
use dishcam_recipes::RecipeIndex;
use dishcam_runtime::backend::onnxruntime::{BareSession, OrtBackend};
use dishcam_runtime::backend::{Backend, BackendKind, ModelSpec, Session, SessionOptions};
use dishcam_runtime::classify::softmax_in_place;
use dishcam_runtime::head::{read_labels, Classifier};
use dishcam_runtime::image_io::{decode_bytes, DecodeOptions};
use dishcam_runtime::pipeline::FrameClassifier;
use dishcam_runtime::source::{Frame, FrameSource, Next, SourceError};
use dishcam_runtime::tensor::TensorRef;
use dishcam_runtime::{ImageEncoder, LoadOptions, TextEncoder};

use super::Config;

/// What a query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Column {
    /// Our per-frame path: decode -> preprocess -> image encoder -> head -> dish recipes -> output.
    Pipeline,
    /// The same with a text encoded per query and a fusion head.
    PipelineText,
    /// The onnxruntime session alone, in a minimal loop, on a prepared input.
    Bare,
    /// decode -> resize (allocating) -> normalise (allocating) -> encoder -> head -> argmax.
    Naive,
}

impl Column {
    pub const ALL: [Column; 4] = [
        Column::Pipeline,
        Column::PipelineText,
        Column::Bare,
        Column::Naive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Column::Pipeline => "pipeline",
            Column::PipelineText => "pipeline+text",
            Column::Bare => "bare",
            Column::Naive => "naive",
        }
    }

    /// The stages a query of this column is timed in, in order.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            Column::Pipeline => &[
                "decode",
                "preprocess",
                "image_encoder",
                "head",
                "recipes",
                "output",
            ],
            Column::PipelineText => &[
                "decode",
                "preprocess",
                "image_encoder",
                "text_encoder",
                "head",
                "recipes",
                "output",
            ],
            Column::Bare => &["image_encoder"],
            Column::Naive => &["decode", "resize", "image_encoder", "head"],
        }
    }
}

/// Stage timings of one sample; only the first `Column::stages().len()` entries are used.
pub type StageTimes = [Duration; 7];

/// A photo held in memory, so that decoding is timed but disk reads are not.
pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
}

struct TextPath {
    encoder: TextEncoder,
    head: Classifier,
    temperature: f32,
}

struct Naive {
    encoder: Box<dyn Session>,
    head: Classifier,
    reads_output: bool,
    preprocess: Preprocess,
    layout: Layout,
}

/// One configuration's loaded models and reusable buffers.
pub struct Engine {
    encoder: ImageEncoder,
    head: Classifier,
    reads_output: bool,
    temperature: f32,
    labels: Arc<Vec<String>>,
    recipes: Option<Arc<RecipeIndex>>,
    no_exclusions: ExcludeFilter,
    text: Option<TextPath>,
    /// Why there is no with-text path, when there is none.
    pub text_missing: Option<String>,
    bare: Option<BareSession>,
    /// The bare session's input: the first photo, preprocessed by our pipeline.
    bare_input: Vec<f32>,
    input_shape: Vec<usize>,
    naive: Naive,
    decode: DecodeOptions,
    out: String,
    pub load_ms: f64,
    /// The GPU split of the last image-encoder run (TensorRT).
    pub last_device: Option<dishcam_runtime::backend::DeviceTimings>,
}

/// Everything shared by the configurations of one run.
pub struct Shared<'a> {
    pub pack: &'a Pack,
    pub labels: Arc<Vec<String>>,
    pub recipes: Option<Arc<RecipeIndex>>,
    pub decode: DecodeOptions,
    pub optimization: dishcam_runtime::backend::GraphOptimization,
    pub spinning: bool,
    pub first_photo: &'a Photo,
}

impl Engine {
    pub fn load(
        config: Config,
        backend: &dyn Backend,
        shared: &Shared<'_>,
    ) -> anyhow::Result<Engine> {
        let t = Instant::now();
        let pack = shared.pack;
        let opts = LoadOptions {
            precision: config.precision,
            session: SessionOptions {
                threads: Some(config.threads),
                optimization: shared.optimization,
                providers: Vec::new(),
                spinning: shared.spinning,
            },
        };
        let m = &pack.manifest;
        let head_meta = crate::classify::pick_head(pack, None, false)?;
        let extra: Vec<&str> = head_meta.encoder_output.as_deref().into_iter().collect();
        let mut encoder = ImageEncoder::load(pack, backend, &opts, &extra)?;
        let head = Classifier::load(pack, head_meta, backend, &opts)?;
        let enc = m
            .image_encoder
            .as_ref()
            .context("the pack has no image encoder")?;

        // The with-text path: the pack's text encoder and fusion head.
        let (text, text_missing) = match crate::classify::pick_head(pack, None, true) {
            Ok(fusion) if fusion.classes == head_meta.classes => {
                let encoder = TextEncoder::load(pack, backend, &opts)?;
                let head = Classifier::load(pack, fusion, backend, &opts)?;
                (
                    Some(TextPath {
                        encoder,
                        head,
                        temperature: fusion.temperature,
                    }),
                    None,
                )
            }
            Ok(fusion) => (
                None,
                Some(format!(
                    "fusion head '{}' has {} classes, the image head {}",
                    fusion.name, fusion.classes, head_meta.classes
                )),
            ),
            Err(e) => (None, Some(e.to_string())),
        };

        // The naive loop's own encoder session and head, so no state is shared with ours.
        let file = &enc
            .variants
            .get(&config.precision)
            .context("checked before loading")?
            .onnx;
        let bytes = pack.read_verified(
            &format!("image_encoder.variants.{}", config.precision),
            file,
        )?;
        let path = pack.path(file);
        let wanted: Vec<_> = std::iter::once(enc.embedding_output.as_str())
            .chain(extra.iter().copied())
            .map(|name| {
                enc.outputs
                    .iter()
                    .find(|o| o.name == name)
                    .cloned()
                    .context("the pack names an output its encoder lacks")
            })
            .collect::<anyhow::Result<_>>()?;
        let spec = ModelSpec {
            path: &path,
            bytes: &bytes,
            precision: config.precision,
            inputs: std::slice::from_ref(&enc.input),
            outputs: &wanted,
            fixed_dims: &[("batch", 1)],
        };
        let naive = Naive {
            encoder: backend.load(&spec, &opts.session)?,
            head: Classifier::load(pack, head_meta, backend, &opts)?,
            reads_output: head_meta.encoder_output.is_some(),
            preprocess: enc.preprocess.clone(),
            layout: enc.layout,
        };
        let bare = match config.backend {
            BackendKind::Onnxruntime => {
                // The same library and options, without dishcam's session wrapper.
                let ort = OrtBackend::new(dishcam_models::Home::from_env().ok().as_ref())?;
                Some(ort.bare(&spec, &opts.session)?)
            }
            _ => None,
        };
        let input_shape = encoder.input_shape().to_vec();
        let first = decode_bytes(
            &shared.first_photo.bytes,
            &shared.first_photo.name,
            &shared.decode,
        )?;
        encoder.preprocess(&first)?;
        let bare_input = encoder.input().to_vec();
        Ok(Engine {
            encoder,
            head,
            reads_output: head_meta.encoder_output.is_some(),
            temperature: head_meta.temperature,
            labels: shared.labels.clone(),
            recipes: shared.recipes.clone(),
            no_exclusions: ExcludeFilter::new::<&str>(&[]),
            text,
            text_missing,
            bare,
            bare_input,
            input_shape,
            naive,
            decode: shared.decode,
            out: String::with_capacity(512),
            load_ms: t.elapsed().as_secs_f64() * 1e3,
            last_device: None,
        })
    }

    pub fn has(&self, column: Column) -> bool {
        match column {
            Column::PipelineText => self.text.is_some(),
            Column::Bare => self.bare.is_some(),
            _ => true,
        }
    }

    /// Why this configuration has no `column`, if it has none.
    pub fn missing(&self, column: Column) -> Option<String> {
        match column {
            Column::PipelineText => self.text_missing.clone(),
            Column::Bare if self.bare.is_none() => {
                Some("the bare session column is onnxruntime's".into())
            }
            _ => None,
        }
    }

    /// Runs one sample through `column`, writing its stage times into `times`.
    pub fn run(
        &mut self,
        column: Column,
        photo: &Photo,
        text: &str,
        seq: u64,
        times: &mut StageTimes,
    ) -> anyhow::Result<()> {
        match column {
            Column::Pipeline => self.pipeline(photo, None, seq, times),
            Column::PipelineText => self.pipeline(photo, Some(text), seq, times),
            Column::Bare => {
                let bare = self.bare.as_mut().context("no bare session")?;
                let t0 = Instant::now();
                let v = bare.run(&self.input_shape, &self.bare_input)?;
                times[0] = t0.elapsed();
                std::hint::black_box(v);
                Ok(())
            }
            Column::Naive => self.naive(photo, times),
        }
    }

    fn pipeline(
        &mut self,
        photo: &Photo,
        text: Option<&str>,
        seq: u64,
        times: &mut StageTimes,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let img = decode_bytes(&photo.bytes, &photo.name, &self.decode)?;
        let t1 = Instant::now();
        self.encoder.preprocess(&img)?;
        let t2 = Instant::now();
        let mut out = self.encoder.run()?;
        self.last_device = self.encoder.device_timings();
        let image = if self.reads_output {
            out.pop().unwrap_or_default()
        } else {
            out.swap_remove(0)
        };
        let t3 = Instant::now();
        let mut stamps = vec![t0, t1, t2, t3];
        let mut probs = match (text, self.text.as_mut()) {
            (Some(text), Some(tp)) => {
                let e = tp.encoder.encode(text)?;
                stamps.push(Instant::now());
                let mut s = tp.head.scores(Some(&image), Some(&e))?;
                softmax_in_place(&mut s, tp.temperature);
                s
            }
            (Some(_), None) => anyhow::bail!("this configuration has no with-text path"),
            (None, _) => {
                let mut s = self.head.scores(Some(&image), None)?;
                softmax_in_place(&mut s, self.temperature);
                s
            }
        };
        let best = argmax(&probs);
        stamps.push(Instant::now());
        let dish = self.labels.get(best).map_or("", String::as_str);
        let hits = match &self.recipes {
            Some(idx) => idx
                .dish_recipes(dish, 3, &self.no_exclusions)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        stamps.push(Instant::now());
        self.out.clear();
        let _ = write!(
            self.out,
            "{{\"seq\":{seq},\"dish\":\"{dish}\",\"p\":{:.4},\"recipes\":[",
            probs[best]
        );
        for (i, h) in hits.iter().enumerate() {
            let _ = write!(self.out, "{}\"{}\"", if i > 0 { "," } else { "" }, h.id);
        }
        self.out.push_str("]}");
        std::hint::black_box(&self.out);
        stamps.push(Instant::now());
        for (slot, w) in times.iter_mut().zip(stamps.windows(2)) {
            *slot = w[1] - w[0];
        }
        probs.clear();
        Ok(())
    }

    fn naive(&mut self, photo: &Photo, times: &mut StageTimes) -> anyhow::Result<()> {
        let n = &mut self.naive;
        let t0 = Instant::now();
        // What most applications write: decode with the image crate's defaults...
        let img = image::load_from_memory(&photo.bytes)
            .with_context(|| format!("{}: cannot decode", photo.name))?
            .to_rgb8();
        let t1 = Instant::now();
        // ... resize straight to the input size into a new image, normalise into a new buffer...
        let (w, h) = (n.preprocess.width, n.preprocess.height);
        let small = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
        let plane = (w * h) as usize;
        let mut input = vec![0f32; plane * 3];
        for (i, px) in small.pixels().enumerate() {
            for c in 0..3 {
                let v = (px.0[c] as f32 / 255.0 * n.preprocess.range - n.preprocess.mean[c])
                    / n.preprocess.std[c];
                match n.layout {
                    Layout::Nchw => input[c * plane + i] = v,
                    Layout::Nhwc => input[i * 3 + c] = v,
                }
            }
        }
        let t2 = Instant::now();
        // ... run the session and take the argmax of the head.
        let mut out = n.encoder.run(&[TensorRef::F32 {
            shape: &self.input_shape,
            data: &input,
        }])?;
        let features = if n.reads_output {
            out.pop()
        } else {
            out.into_iter().next()
        }
        .and_then(|t| t.into_f32())
        .context("the encoder returned no f32 output")?;
        let t3 = Instant::now();
        let scores = n.head.scores(Some(&features), None)?;
        std::hint::black_box(argmax(&scores));
        let t4 = Instant::now();
        times[..4].copy_from_slice(&[t1 - t0, t2 - t1, t3 - t2, t4 - t3]);
        Ok(())
    }

    /// Encoder-only runs on the prepared input (the throughput ceiling of this configuration).
    pub fn bare_runs(&mut self, n: usize) -> anyhow::Result<()> {
        let bare = self.bare.as_mut().context("no bare session")?;
        for _ in 0..n {
            std::hint::black_box(bare.run(&self.input_shape, &self.bare_input)?);
        }
        Ok(())
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// An [`Engine`] shared with the pipeline's inference thread (offline scenario).
pub struct SharedEngine(pub Arc<Mutex<Engine>>);

impl FrameClassifier for SharedEngine {
    fn classes(&self) -> usize {
        self.0.lock().map_or(0, |e| e.labels.len())
    }

    fn preprocess(&mut self, frame: &Frame) -> Result<(), String> {
        let mut e = self.0.lock().map_err(|_| "engine poisoned".to_string())?;
        e.encoder
            .preprocess_rgb(&frame.rgb, frame.width, frame.height)
            .map_err(|e| e.to_string())
    }

    fn classify(&mut self, probs: &mut [f32]) -> Result<(), String> {
        let mut guard = self.0.lock().map_err(|_| "engine poisoned".to_string())?;
        let e = &mut *guard;
        let mut out = e.encoder.run().map_err(|e| e.to_string())?;
        let image = if e.reads_output {
            out.pop().unwrap_or_default()
        } else {
            out.swap_remove(0)
        };
        let mut s = e
            .head
            .scores(Some(&image), None)
            .map_err(|e| e.to_string())?;
        softmax_in_place(&mut s, e.temperature);
        if s.len() != probs.len() {
            return Err(format!("{} scores for {} classes", s.len(), probs.len()));
        }
        probs.copy_from_slice(&s);
        Ok(())
    }
}

/// Photos decoded on the pipeline's capture thread, from memory, once each.
pub struct MemorySource {
    photos: Arc<Vec<Photo>>,
    next: usize,
    frame: Frame,
    decode: DecodeOptions,
}

impl MemorySource {
    pub fn new(photos: Arc<Vec<Photo>>, decode: DecodeOptions) -> Self {
        Self {
            photos,
            next: 0,
            frame: Frame {
                seq: 0,
                captured: Instant::now(),
                width: 0,
                height: 0,
                rgb: Vec::new(),
            },
            decode,
        }
    }
}

impl FrameSource for MemorySource {
    fn next_frame(&mut self, _timeout: Duration) -> Result<Next<'_>, SourceError> {
        let Some(photo) = self.photos.get(self.next) else {
            return Ok(Next::End);
        };
        let img = decode_bytes(&photo.bytes, &photo.name, &self.decode).map_err(|error| {
            SourceError::Decode {
                path: photo.name.clone().into(),
                error,
            }
        })?;
        self.frame.seq = self.next as u64;
        self.next += 1;
        self.frame.width = img.width();
        self.frame.height = img.height();
        self.frame.rgb.clear();
        self.frame.rgb.extend_from_slice(img.as_raw());
        self.frame.captured = Instant::now();
        Ok(Next::Frame(&self.frame))
    }

    fn describe(&self) -> String {
        format!("{} photos in memory", self.photos.len())
    }

    fn fps_hint(&self) -> Option<f32> {
        None
    }
}

/// The labels of the pack's default image head.
pub fn head_labels(pack: &Pack) -> anyhow::Result<Vec<String>> {
    let head = crate::classify::pick_head(pack, None, false)?;
    Ok(read_labels(pack, head)?)
}
