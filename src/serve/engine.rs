//! The models behind the API: a photo (and an optional text) to top-5 dishes with recipes,
//! recipe search and show. Everything here blocks (model inference, index reads): the handlers
//! call it from `spawn_blocking`, never on the async executor.

use std::time::Instant;

use dishcam_capture::decode::{decode_bytes, DecodeOptions, ImageError};
use dishcam_models::HeadInput;
use dishcam_recipes::{ExcludeFilter, Recipe, RecipeIndex, SearchParams};
use dishcam_runtime::pack_recipes::{dish_recipes, open_index, SUGGESTED};
use dishcam_runtime::{DishClassifier, DishOptions, FusionHead};
use serde_json::{json, Value};

use crate::cli::{ms, no_dish_json, round3, top_json, EngineArgs};

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

/// The pack's models for one request at a time (the server holds it in a mutex).
pub struct Engine {
    /// The default image head, and the pack's fusion head for a photo with a text.
    dish: DishClassifier,
    decode: DecodeOptions,
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
        let dish = args.dish_classifier(&DishOptions {
            input: HeadInput::Photo,
            fusion: FusionHead::IfAny,
            ..DishOptions::default()
        })?;
        let recipes = open_index(dish.pack(), &args.load_options()?).map_err(|e| {
            log::warn!("no recipe suggestions: {e}");
            e.to_string()
        });
        Ok(Engine {
            dish,
            decode: args.decode_options(),
            recipes,
        })
    }

    /// Backend, precision and head names, for `/api/state`.
    pub fn describe(&self) -> Value {
        json!({
            "pack": self.dish.pack().manifest.name,
            "backend": self.dish.backend().as_str(),
            "precision": self.dish.precision().as_str(),
            "head": self.dish.head().name,
            "fusion_head": self.dish.fusion_head().map(|(h, _)| h.name.clone()),
            "classes": self.dish.labels().len(),
            "recipes": self.recipes.is_ok(),
        })
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
        let decoded = t0.elapsed();
        let text_took = match text {
            Some(t) => {
                if self.dish.fusion_head().is_none() {
                    return Err(EngineError::BadRequest(format!(
                        "pack '{}' has no fusion head to combine a photo with a text; leave out the text field",
                        self.dish.pack().manifest.name
                    )));
                }
                Some(self.dish.set_text(Some(t))?)
            }
            None => None,
        };
        let answer = self.dish.classify(&img, TOP).map(|a| {
            (
                a.head.name.clone(),
                top_json(&a.top, a.labels),
                a.dish().map(str::to_string),
                a.top.first().map(|s| s.probability),
                a.no_dish,
                a.timings,
            )
        });
        // The text belongs to this request alone.
        self.dish.set_text_embedding(None);
        // A photo with no dish has a null dish and probability, an empty top and no recipes.
        let (head_name, top, dish, probability, no_dish, stages) = answer?;
        let recipes = match &dish {
            Some(d) => self.recipes_for(d),
            None => Vec::new(),
        };
        let mut timings = vec![
            ("decode", ms(decoded)),
            ("preprocess", ms(stages.preprocess)),
            ("encode", ms(stages.encode)),
            ("check", ms(stages.check)),
            ("head", ms(stages.head)),
            ("total", ms(t0.elapsed())),
        ];
        if let Some(took) = text_took {
            timings.push(("text_encode", ms(took)));
        }
        let (w, h) = img.dimensions();
        let mut v = json!({
            "schema": "dishcam.serve.classify/1",
            "image": name,
            "width": w,
            "height": h,
            "pack": self.dish.pack().manifest.name,
            "head": head_name,
            "backend": self.dish.backend().as_str(),
            "precision": self.dish.precision().as_str(),
            "dish": dish,
            "probability": probability,
            "no_dish": no_dish_json(no_dish.as_ref()),
            "top": top,
            "recipes": recipes,
            "timings_ms": timings.iter().map(|(k, v)| (k.to_string(), json!(round3(*v)))).collect::<serde_json::Map<_, _>>(),
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
        dish_recipes(Some(idx), dish, SUGGESTED)
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
        let q = self.dish.encode_text(query)?;
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
        let root = self.dish.pack().overlay_dir.join("serve-teach");
        (root.join("inbox"), root.join("taught"))
    }

    /// The name of the default image head (the one teaching extends).
    pub fn head_name(&self) -> &str {
        &self.dish.head().name
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
