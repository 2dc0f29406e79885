//! A pack's recipes: the bundled Food-101 recipes (a file of the base pack), the recipes a user
//! imported (`<overlay>/recipes/imported.jsonl`), and the index over both
//! (`<overlay>/recipes/recipes.idx`, derived data built with the pack's text encoder). The
//! dish chain's answers look up recipes here by dish name; search embeds the query with the
//! same text encoder the index was built with.

use std::path::PathBuf;

use dishcam_models::{Pack, Precision};
use dishcam_recipes::index::BuildStage;
use dishcam_recipes::{ExcludeFilter, Hit, RecipeIndex};

use crate::backend::{Backend, SessionOptions};
use crate::embedder::{default_cache_dir, Embedder, Progress};
use crate::error::RuntimeError;
use crate::head::read_labels;
use crate::LoadOptions;

/// Recipes suggested for a dish.
pub const SUGGESTED: usize = 3;

/// The recipe files of a pack.
#[derive(Debug, Clone)]
pub struct RecipePaths {
    /// The bundled recipes of the base pack, if it has them.
    pub base: Option<PathBuf>,
    /// Recipes the user imported.
    pub imported: PathBuf,
    pub index: PathBuf,
}

impl RecipePaths {
    pub fn of(pack: &Pack) -> RecipePaths {
        let dir = pack.overlay_dir.join("recipes");
        RecipePaths {
            base: pack.manifest.recipes.as_ref().map(|f| pack.path(f)),
            imported: dir.join("imported.jsonl"),
            index: dir.join("recipes.idx"),
        }
    }

    /// The recipe stores that exist: the base pack's, then the imported ones.
    pub fn stores(&self) -> Vec<PathBuf> {
        self.base
            .iter()
            .cloned()
            .chain(Some(self.imported.clone()).filter(|p| p.is_file()))
            .collect()
    }
}

/// The precision recipe indexes are built with: the text encoder's fp32 variant when the pack has
/// one, whatever `--precision` a command runs at. One index then serves every precision: dish
/// recipes are looked up by class, and an int8 query embedding is within ~0.99 cosine of the
/// fp32 one (docs/int8.md), so searching the fp32 index with it finds the same recipes.
pub fn index_precision(pack: &Pack, requested: Precision) -> Precision {
    match &pack.manifest.text_encoder {
        Some(t) if t.variants.contains_key(&Precision::Fp32) => Precision::Fp32,
        _ => requested,
    }
}

/// What an index was built with: the pack, its text encoder's file hash and the precision.
pub fn encoder_id(pack: &Pack, opts: &LoadOptions) -> Result<String, RuntimeError> {
    let name = &pack.manifest.name;
    let t = pack
        .manifest
        .text_encoder
        .as_ref()
        .ok_or_else(|| RuntimeError::NoEncoder {
            pack: name.clone(),
            part: "text encoder",
        })?;
    let precision = index_precision(pack, opts.precision);
    let v = t
        .variants
        .get(&precision)
        .ok_or_else(|| RuntimeError::MissingVariant {
            pack: name.clone(),
            part: "text encoder",
            precision,
            available: t
                .variants
                .keys()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            hint: "choose one of those with --precision".into(),
        })?;
    Ok(format!(
        "{name}/text_encoder/{precision}/{}",
        &v.onnx.sha256[..16]
    ))
}

/// Builds the index over the pack's recipe stores with its text encoder (one single-threaded
/// encoder per core, through the embedding cache, so a rebuild after an import embeds only the
/// new recipes); returns the number of recipes indexed.
pub fn build_index(
    pack: &Pack,
    backend: &dyn Backend,
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<usize, RuntimeError> {
    let paths = RecipePaths::of(pack);
    let stores = paths.stores();
    if stores.is_empty() {
        return Err(RuntimeError::NoRecipes {
            pack: pack.manifest.name.clone(),
        });
    }
    if let Some(dir) = paths.index.parent() {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let dim = pack
        .manifest
        .text_encoder
        .as_ref()
        .map_or(0, |t| t.embedding_dim);
    let classes = dish_classes(pack);
    let embedder = Embedder {
        pack,
        backend,
        opts: LoadOptions {
            session: SessionOptions {
                threads: Some(1),
                ..opts.session.clone()
            },
            precision: index_precision(pack, opts.precision),
        },
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        progress,
        cache: default_cache_dir().ok(),
    };
    let mut embed = |texts: &[String]| -> dishcam_recipes::Result<Vec<f32>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows = embedder
            .texts(&refs)
            .map_err(|e| dishcam_recipes::RecipeError::Invalid(e.to_string()))?;
        Ok(rows.concat())
    };
    let stats = dishcam_recipes::index::build_from_stores(
        &paths.index,
        &stores,
        &encoder_id(pack, opts)?,
        dim,
        usize::MAX,
        &mut embed,
        &classes,
        &dishcam_recipes::BuildParams::default(),
        &mut |_stage: &BuildStage| {},
    )?;
    Ok(stats.count)
}

/// The class ids of the pack's default image head (the dishes recipes are precomputed for).
fn dish_classes(pack: &Pack) -> Vec<String> {
    let m = &pack.manifest;
    m.default_head
        .as_deref()
        .and_then(|n| m.head(n))
        .and_then(|h| read_labels(pack, h).ok())
        .unwrap_or_default()
}

/// Opens the pack's recipe index for the text encoder in `opts`.
pub fn open_index(pack: &Pack, opts: &LoadOptions) -> Result<RecipeIndex, RuntimeError> {
    let paths = RecipePaths::of(pack);
    if !paths.index.is_file() {
        return Err(RuntimeError::NoRecipeIndex { path: paths.index });
    }
    Ok(RecipeIndex::open(
        &paths.index,
        Some(&encoder_id(pack, opts)?),
    )?)
}

/// Whether the pack's index exists and can be opened for this encoder.
pub fn index_is_current(pack: &Pack, opts: &LoadOptions) -> bool {
    open_index(pack, opts).is_ok()
}

/// Up to `k` recipes for a dish (by class id); none without an index.
pub fn dish_recipes(idx: Option<&RecipeIndex>, dish: &str, k: usize) -> Vec<Hit> {
    let Some(idx) = idx else { return Vec::new() };
    idx.dish_recipes(dish, k, &ExcludeFilter::new::<&str>(&[]))
        .unwrap_or_default()
}
