//! One benchmark configuration, loaded: our per-frame path (with and without text), the naive
//! loop an application would write, and the bare onnxruntime session, each timed per stage.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dishcam_capture::decode::{decode_bytes, DecodeOptions};
use dishcam_capture::{Frame, FrameSource, Next, SourceError};
use dishcam_models::manifest::{Layout, NoDishCheck, PhotoPreparation, Preprocess};
use dishcam_models::{HeadInput, Pack};
use dishcam_recipes::normalize::ExcludeFilter;
use dishcam_recipes::RecipeIndex;
use dishcam_runtime::backend::onnxruntime::{BareSession, OrtBackend};
use dishcam_runtime::backend::{Backend, BackendKind, ModelSpec, Session, SessionOptions};
use dishcam_runtime::dish::no_dish_verdict;
use dishcam_runtime::head::{read_labels, Classifier};
use dishcam_runtime::pipeline::FrameClassifier;
use dishcam_runtime::tensor::TensorRef;
use dishcam_runtime::{
    DishClassifier, DishOptions, FusionHead, LoadOptions, RuntimeError, Verdict,
};

use crate::error::{invalid, Context, Result};
use crate::run::Config;

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
                "no_dish_check",
                "image_encoder",
                "head",
                "recipes",
                "output",
            ],
            Column::PipelineText => &[
                "decode",
                "preprocess",
                "no_dish_check",
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
pub type StageTimes = [Duration; 8];

/// A photo held in memory, so that decoding is timed but disk reads are not.
pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The head class this photo shows, when it sits in a folder named after one (the
    /// folder-per-class layout of Food-101 and ImageNet): the summary's top-1 counts it.
    pub label: Option<usize>,
}

struct Naive {
    encoder: Box<dyn Session>,
    head: Classifier,
    reads_output: bool,
    preprocess: Preprocess,
    layout: Layout,
    /// The pack's no-dish check and the index of its output among the session's outputs: the
    /// naive loop does the same job as ours, check included.
    check: Option<(NoDishCheck, usize)>,
    /// The head's photo preparation (a second encoder run on the prepared photo).
    preparation: Option<PhotoPreparation>,
}

/// One configuration's loaded models and reusable buffers.
pub struct Engine {
    /// Our per-frame path: the default image head, and the fusion head for the with-text path.
    dish: DishClassifier,
    labels: Arc<Vec<String>>,
    recipes: Option<Arc<RecipeIndex>>,
    no_exclusions: ExcludeFilter,
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
    /// The class the last pipeline query answered (`None`: no dish in view).
    pub last_top1: Option<usize>,
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
    pub fn load(config: Config, backend: &Arc<dyn Backend>, shared: &Shared<'_>) -> Result<Engine> {
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
        let mut dish = DishClassifier::load(
            pack,
            backend.clone(),
            &opts,
            &DishOptions {
                fusion: FusionHead::IfAny,
                ..DishOptions::default()
            },
        )?;
        let head_meta = m.resolve_head(None, HeadInput::Photo)?;
        let extra: Vec<&str> = head_meta.encoder_output.as_deref().into_iter().collect();
        let enc = m
            .image_encoder
            .as_ref()
            .context("the pack has no image encoder")?;

        // The with-text path: the pack's text encoder and fusion head, loaded now so that the
        // first timed query does not load it.
        let text_missing = match dish.fusion_head() {
            Some((fusion, _)) if fusion.classes == head_meta.classes => {
                dish.encode_text("warm-up")?;
                None
            }
            Some((fusion, _)) => Some(format!(
                "fusion head '{}' has {} classes, the image head {}",
                fusion.name, fusion.classes, head_meta.classes
            )),
            None => Some(
                dish.fusion_missing()
                    .unwrap_or("the pack has no fusion head")
                    .to_string(),
            ),
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
        let check = m.no_dish.clone();
        let mut names: Vec<&str> = std::iter::once(enc.embedding_output.as_str())
            .chain(extra.iter().copied())
            .collect();
        let check_index = check.as_ref().map(|c| {
            names
                .iter()
                .position(|n| *n == c.encoder_output)
                .unwrap_or_else(|| {
                    names.push(&c.encoder_output);
                    names.len() - 1
                })
        });
        let wanted: Vec<_> = names
            .iter()
            .copied()
            .map(|name| {
                enc.outputs
                    .iter()
                    .find(|o| o.name == name)
                    .cloned()
                    .context("the pack names an output its encoder lacks")
            })
            .collect::<Result<_>>()?;
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
            head: Classifier::load(pack, head_meta, backend.as_ref(), &opts)?,
            reads_output: head_meta.encoder_output.is_some(),
            preprocess: enc.preprocess.clone(),
            layout: enc.layout,
            check: check.zip(check_index),
            preparation: m.preparation_of(head_meta),
        };
        let bare = match config.backend {
            BackendKind::Onnxruntime => {
                // The same library and options, without dishcam's session wrapper.
                let ort = OrtBackend::new(dishcam_models::Home::from_env().ok().as_ref())?;
                Some(ort.bare(&spec, &opts.session)?)
            }
            _ => None,
        };
        let first = decode_bytes(
            &shared.first_photo.bytes,
            &shared.first_photo.name,
            &shared.decode,
        )?;
        dish.preprocess(first.as_raw(), first.width(), first.height())?;
        let (bare_input, input_shape) = dish
            .photo_encoder()
            .map(|p| (p.input().0.to_vec(), p.input().1.to_vec()))
            .context("the default head reads no photo")?;
        Ok(Engine {
            dish,
            labels: shared.labels.clone(),
            recipes: shared.recipes.clone(),
            no_exclusions: ExcludeFilter::new::<&str>(&[]),
            text_missing,
            bare,
            bare_input,
            input_shape,
            naive,
            decode: shared.decode,
            out: String::with_capacity(512),
            load_ms: t.elapsed().as_secs_f64() * 1e3,
            last_device: None,
            last_top1: None,
        })
    }

    pub fn has(&self, column: Column) -> bool {
        match column {
            Column::PipelineText => self.text_missing.is_none(),
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
    ) -> Result<()> {
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
    ) -> Result<()> {
        let t0 = Instant::now();
        let img = decode_bytes(&photo.bytes, &photo.name, &self.decode)?;
        let decoded = t0.elapsed();
        let text_encode = match text {
            Some(_) if self.text_missing.is_some() => {
                invalid!("this configuration has no with-text path")
            }
            Some(text) => Some(self.dish.set_text(Some(text))?),
            None => None,
        };
        let answer = self.dish.classify(&img, 1).map(|a| {
            let best = a.top.first().copied();
            let label = best.and_then(|b| a.labels.get(b.class)).cloned();
            (a.timings, best, label)
        });
        if text.is_some() {
            self.dish.set_text_embedding(None);
        }
        let (stages, best, label) = answer?;
        self.last_top1 = best.map(|b| b.class);
        let dish = label.as_deref().unwrap_or("");
        let t_recipes = Instant::now();
        let hits = match &self.recipes {
            Some(idx) => idx
                .dish_recipes(dish, 3, &self.no_exclusions)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let recipes = t_recipes.elapsed();
        let t_output = Instant::now();
        self.out.clear();
        let _ = write!(
            self.out,
            "{{\"seq\":{seq},\"dish\":\"{dish}\",\"p\":{:.4},\"recipes\":[",
            best.map_or(0.0, |b| b.probability)
        );
        for (i, h) in hits.iter().enumerate() {
            let _ = write!(self.out, "{}\"{}\"", if i > 0 { "," } else { "" }, h.id);
        }
        self.out.push_str("]}");
        std::hint::black_box(&self.out);
        let output = t_output.elapsed();
        self.last_device = self.dish.device_timings();
        // Two image-encoder runs per photo with a dish: the no-dish check's on the photo as it
        // comes, then the head's on the prepared photo (`image_encoder`; exactly zero when the
        // check found no dish and the head's run did not happen, so that reports can tell).
        let encode = if best.is_some() {
            stages.encode
        } else {
            Duration::ZERO
        };
        let row: &[Duration] = match text_encode {
            Some(t) => &[
                decoded,
                stages.preprocess,
                stages.check,
                encode,
                t,
                stages.head,
                recipes,
                output,
            ],
            None => &[
                decoded,
                stages.preprocess,
                stages.check,
                encode,
                stages.head,
                recipes,
                output,
            ],
        };
        times[..row.len()].copy_from_slice(row);
        Ok(())
    }

    fn naive(&mut self, photo: &Photo, times: &mut StageTimes) -> Result<()> {
        let t0 = Instant::now();
        // What most applications write: decode with the image crate's defaults...
        let img = image::load_from_memory(&photo.bytes)
            .with_context(|| format!("{}: cannot decode", photo.name))?
            .to_rgb8();
        let t1 = Instant::now();
        // ... resize straight to the input size into a new image, normalise into a new buffer,
        // run the session...
        let input = self.naive_input(&img);
        let mut resize = t1.elapsed();
        let t = Instant::now();
        let mut out = self.naive_run(&input)?;
        let mut encoder = t.elapsed();
        // ... the same job as ours: the no-dish check on that run, then the head's own run on
        // the prepared photo...
        let n = &self.naive;
        if let Some((check, i)) = &n.check {
            let logits = out[*i].as_slice();
            if let Verdict::NoDish(_) =
                no_dish_verdict(check, Some(logits), img.width(), img.height())
            {
                times[..4].copy_from_slice(&[t1 - t0, resize, encoder, Duration::ZERO]);
                return Ok(());
            }
            if let Some(prep) = &n.preparation {
                let t = Instant::now();
                let prepared = match dishcam_imageproc::prepare::prepare(&img, prep) {
                    Ok(p) => p,
                    Err(e) => invalid!("{}: cannot prepare the photo: {e}", photo.name),
                };
                let input = self.naive_input(&prepared);
                resize += t.elapsed();
                let t = Instant::now();
                out = self.naive_run(&input)?;
                encoder += t.elapsed();
            }
        }
        // ... and take the argmax of the head.
        let n = &mut self.naive;
        let features = if n.reads_output { &out[1] } else { &out[0] };
        let t3 = Instant::now();
        let scores = n.head.scores(Some(features), None)?;
        std::hint::black_box(argmax(&scores));
        times[..4].copy_from_slice(&[t1 - t0, resize, encoder, t3.elapsed()]);
        Ok(())
    }

    /// The naive resize and normalisation, into new buffers.
    fn naive_input(&self, img: &image::RgbImage) -> Vec<f32> {
        let n = &self.naive;
        let (w, h) = (n.preprocess.width, n.preprocess.height);
        let small = image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
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
        input
    }

    /// The naive session run: every output as a new f32 vector.
    fn naive_run(&mut self, input: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.naive
            .encoder
            .run(&[TensorRef::F32 {
                shape: &self.input_shape,
                data: input,
            }])?
            .into_iter()
            .map(|t| {
                t.into_f32()
                    .context("the encoder returned a non-f32 output")
            })
            .collect()
    }

    /// Encoder-only runs on the prepared input (the throughput ceiling of this configuration).
    pub fn bare_runs(&mut self, n: usize) -> Result<()> {
        let bare = self.bare.as_mut().context("no bare session")?;
        for _ in 0..n {
            std::hint::black_box(bare.run(&self.input_shape, &self.bare_input)?);
        }
        Ok(())
    }
}

/// The naive loop's answer: the first class with the highest score.
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

    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        let mut e = self.0.lock().unwrap_or_else(|p| p.into_inner());
        FrameClassifier::preprocess(&mut e.dish, frame)
    }

    fn classify(&mut self, probs: &mut [f32]) -> Result<Verdict, RuntimeError> {
        let mut e = self.0.lock().unwrap_or_else(|p| p.into_inner());
        FrameClassifier::classify(&mut e.dish, probs)
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
pub fn head_labels(pack: &Pack) -> Result<Vec<String>> {
    let head = pack.manifest.resolve_head(None, HeadInput::Photo)?;
    Ok(read_labels(pack, head)?)
}
