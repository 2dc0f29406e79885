//! The models behind the API: a photo (and an optional text) to top-5 dishes with recipes,
//! recipe search and show. Everything here blocks (model inference, index reads): the handlers
//! call it from `spawn_blocking`, never on the async executor.

use std::time::Instant;

use dishcam_models::manifest::Head;
use dishcam_models::Pack;
use dishcam_recipes::{ExcludeFilter, Recipe, RecipeIndex, SearchParams};
use dishcam_runtime::classify::{softmax_in_place, top_k};
use dishcam_runtime::head::{read_labels, Classifier};
use dishcam_runtime::image_io::{decode_bytes, DecodeOptions, ImageError};
use dishcam_runtime::{Backend, ImageEncoder, LoadOptions, TextEncoder};
use serde_json::{json, Value};

use crate::EngineArgs;

/// Recipes suggested for a dish.
pub const SUGGESTED: usize = 3;
/// Classes reported per photo.
pub const TOP: usize = 5;

/// Why a request could not be served: the client's input, or the server.
#[derive(Debug)]
pub enum EngineError {
    /// The photo was refused (not an image, corrupt, too many pixels): the client's fault.
    Image(ImageError),
    /// A bad argument (unknown recipe, empty query, no fusion head for a text).
    BadRequest(String),
    NotFound(String),
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for EngineError {
    fn from(e: anyhow::Error) -> Self {
        EngineError::Internal(e)
    }
}

impl From<dishcam_runtime::RuntimeError> for EngineError {
    fn from(e: dishcam_runtime::RuntimeError) -> Self {
        EngineError::Internal(e.into())
    }
}

/// One head with its labels and loaded model.
struct LoadedHead {
    head: Head,
    labels: Vec<String>,
    classifier: Classifier,
}

/// The pack's models for one request at a time (the server holds it in a mutex).
pub struct Engine {
    pub pack: Pack,
    backend: Box<dyn Backend>,
    opts: LoadOptions,
    decode: DecodeOptions,
    encoder: ImageEncoder,
    image: LoadedHead,
    /// The pack's fusion head, for a photo with a text; `None` when the pack has none.
    fusion: Option<LoadedHead>,
    /// Loaded on the first text query (recipe search or fusion).
    text: Option<TextEncoder>,
    /// The recipe index, or why it could not be opened (shown by the recipe endpoints).
    recipes: Result<RecipeIndex, String>,
}

/// A classified photo.
pub struct Classified {
    /// The response, schema `dishcam.serve.classify/1`.
    pub json: Value,
    /// (stage, milliseconds), for the metrics.
    pub timings: Vec<(&'static str, f64)>,
}

impl Engine {
    /// Opens the pack and loads the image encoder, the default image head, the fusion head when
    /// the pack has one, and the recipe index when it has been built.
    pub fn load(args: &EngineArgs) -> anyhow::Result<Engine> {
        let pack = args.open_pack()?;
        let backend = args.backend()?;
        let opts = args.load_options()?;
        let head = crate::classify::pick_head(&pack, None, false)?.clone();
        let extra: Vec<&str> = head.encoder_output.as_deref().into_iter().collect();
        let encoder = ImageEncoder::load(&pack, backend.as_ref(), &opts, &extra)?;
        let image = LoadedHead {
            labels: read_labels(&pack, &head)?,
            classifier: Classifier::load(&pack, &head, backend.as_ref(), &opts)?,
            head,
        };
        let fusion = match crate::classify::pick_head(&pack, None, true) {
            Ok(h) if h.encoder_output.is_none() => Some(LoadedHead {
                head: h.clone(),
                labels: read_labels(&pack, h)?,
                classifier: Classifier::load(&pack, h, backend.as_ref(), &opts)?,
            }),
            _ => None,
        };
        let recipes = crate::recipes::open_index(&pack, &opts).map_err(|e| {
            log::warn!("no recipe suggestions: {e:#}");
            format!("{e:#}")
        });
        Ok(Engine {
            pack,
            backend,
            opts,
            decode: args.decode_options(),
            encoder,
            image,
            fusion,
            text: None,
            recipes,
        })
    }

    /// Backend, precision and head names, for `/api/state`.
    pub fn describe(&self) -> Value {
        json!({
            "pack": self.pack.manifest.name,
            "backend": self.backend.kind().as_str(),
            "precision": self.opts.precision.as_str(),
            "head": self.image.head.name,
            "fusion_head": self.fusion.as_ref().map(|f| f.head.name.clone()),
            "classes": self.image.labels.len(),
            "recipes": self.recipes.is_ok(),
        })
    }

    fn text_encoder(&mut self) -> anyhow::Result<&mut TextEncoder> {
        if self.text.is_none() {
            self.text = Some(TextEncoder::load(
                &self.pack,
                self.backend.as_ref(),
                &self.opts,
            )?);
        }
        Ok(self.text.as_mut().expect("loaded above"))
    }

    /// Classifies a photo held in memory; with `text`, through the pack's fusion head.
    pub fn classify(
        &mut self,
        bytes: &[u8],
        name: &str,
        text: Option<&str>,
    ) -> Result<Classified, EngineError> {
        let t0 = Instant::now();
        let img = decode_bytes(bytes, name, &self.decode).map_err(EngineError::Image)?;
        let t1 = Instant::now();
        self.encoder.preprocess(&img)?;
        let t2 = Instant::now();
        let mut out = self.encoder.run()?;
        let t3 = Instant::now();
        let text_embedding = match text {
            Some(t) => {
                if self.fusion.is_none() {
                    return Err(EngineError::BadRequest(format!(
                        "pack '{}' has no fusion head to combine a photo with a text; leave out the text field",
                        self.pack.manifest.name
                    )));
                }
                let started = Instant::now();
                let e = self.text_encoder()?.encode(t)?;
                Some((e, started.elapsed()))
            }
            None => None,
        };
        let t4 = Instant::now();
        let loaded = match (&text_embedding, self.fusion.as_mut()) {
            (Some(_), Some(f)) => f,
            _ => &mut self.image,
        };
        let image = match loaded.head.encoder_output {
            Some(_) => out.pop().expect("the head output was requested"),
            None => out.swap_remove(0),
        };
        let mut probs = loaded.classifier.scores(
            Some(&image),
            text_embedding.as_ref().map(|(e, _)| e.as_slice()),
        )?;
        softmax_in_place(&mut probs, loaded.head.temperature);
        let top = top_k(&probs, TOP);
        let t5 = Instant::now();
        let head_name = loaded.head.name.clone();
        let top_json = crate::classify::top_json(&top, &loaded.labels);
        let dish = top
            .first()
            .and_then(|s| loaded.labels.get(s.class))
            .cloned();
        let recipes = match &dish {
            Some(d) => self.recipes_for(d),
            None => Vec::new(),
        };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let mut timings = vec![
            ("decode", ms(t1 - t0)),
            ("preprocess", ms(t2 - t1)),
            ("encode", ms(t3 - t2)),
            ("head", ms(t5 - t4)),
            ("total", ms(t5 - t0)),
        ];
        if let Some((_, took)) = &text_embedding {
            timings.push(("text_encode", ms(*took)));
        }
        let (w, h) = img.dimensions();
        let mut v = json!({
            "schema": "dishcam.serve.classify/1",
            "image": name,
            "width": w,
            "height": h,
            "pack": self.pack.manifest.name,
            "head": head_name,
            "backend": self.backend.kind().as_str(),
            "precision": self.opts.precision.as_str(),
            "dish": dish,
            "probability": top.first().map(|s| s.probability),
            "top": top_json,
            "recipes": recipes,
            "timings_ms": timings.iter().map(|(k, v)| (k.to_string(), json!((v * 1000.0).round() / 1000.0))).collect::<serde_json::Map<_, _>>(),
        });
        if let Some(t) = text {
            v["text"] = json!(t);
        }
        Ok(Classified { json: v, timings })
    }

    /// Up to [`SUGGESTED`] recipes for a dish, each in full (ingredients and steps).
    pub fn recipes_for(&self, dish: &str) -> Vec<Value> {
        let Ok(idx) = &self.recipes else {
            return Vec::new();
        };
        idx.dish_recipes(dish, SUGGESTED, &ExcludeFilter::new::<&str>(&[]))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| idx.show(&h.id).ok())
            .map(|r| recipe_json(&r))
            .collect()
    }

    fn index(&self) -> Result<&RecipeIndex, EngineError> {
        self.recipes
            .as_ref()
            .map_err(|e| EngineError::NotFound(format!("no recipe index: {e}")))
    }

    /// Recipes nearest to a text query, leaving out recipes with the excluded ingredients.
    pub fn search(
        &mut self,
        query: &str,
        exclude: &[String],
        k: usize,
    ) -> Result<Value, EngineError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(EngineError::BadRequest(
                "the query `q` is empty; pass a dish or ingredients, e.g. ?q=noodle+soup".into(),
            ));
        }
        self.index()?;
        let t0 = Instant::now();
        let q = self.text_encoder()?.encode(query)?;
        let filter = ExcludeFilter::new(exclude);
        let idx = self.index()?;
        let hits = idx
            .search(&q, k, &filter, &SearchParams::default())
            .map_err(|e| EngineError::Internal(e.into()))?;
        let hits: Vec<Value> = hits
            .iter()
            .map(|h| {
                let mut v = json!({"id": h.id, "title": h.title, "score": h.score});
                if let Ok(r) = idx.show(&h.id) {
                    v["ingredients"] = json!(r.ingredients);
                    v["dish"] = json!(r.food101_class);
                }
                v
            })
            .collect();
        Ok(json!({
            "schema": "dishcam.serve.recipes/1",
            "query": query,
            "exclude": exclude,
            "hits": hits,
            "took_ms": t0.elapsed().as_secs_f64() * 1e3,
        }))
    }

    /// One recipe in full.
    pub fn show(&self, id: &str) -> Result<Value, EngineError> {
        let idx = self.index()?;
        match idx.show(id) {
            Ok(r) => Ok(recipe_json(&r)),
            Err(dishcam_recipes::RecipeError::NotFound(_)) => Err(EngineError::NotFound(format!(
                "no recipe '{id}'; search with GET /api/recipes?q=..."
            ))),
            Err(e) => Err(EngineError::Internal(
                anyhow::Error::from(e).context(format!("recipe '{id}'")),
            )),
        }
    }

    /// Where taught photos wait for the next refit, and where they go after it.
    pub fn teach_dirs(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let root = self.pack.overlay_dir.join("serve-teach");
        (root.join("inbox"), root.join("taught"))
    }

    /// The name of the default image head (the one teaching extends).
    pub fn head_name(&self) -> &str {
        &self.image.head.name
    }
}

/// A recipe as the API shows it.
pub fn recipe_json(r: &Recipe) -> Value {
    json!({
        "id": r.id,
        "title": r.title,
        "dish": r.food101_class,
        "ingredients": r.ingredients,
        "steps": r.instructions,
        "cuisine": r.cuisine,
        "servings": r.servings,
        "total_time_minutes": r.total_time_minutes,
        "url": r.url,
    })
}

/// Checks a dish name given to teach: it becomes a folder name and a class id.
pub fn valid_dish(name: &str) -> Result<String, String> {
    let n = name.trim().to_lowercase().replace([' ', '-'], "_");
    if n.is_empty() || n.len() > 64 {
        return Err("the dish name must be 1 to 64 characters".into());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "dish name '{name}' may use only letters, digits, spaces, '-' and '_' (e.g. 'apple_pie')"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dish_names_become_safe_class_ids() {
        assert_eq!(valid_dish("Apple Pie").unwrap(), "apple_pie");
        assert_eq!(valid_dish("pad-thai").unwrap(), "pad_thai");
        for bad in ["", "../etc", "a/b", "x".repeat(65).as_str(), "caf\u{e9}"] {
            assert!(valid_dish(bad).is_err(), "{bad:?} accepted");
        }
    }
}
