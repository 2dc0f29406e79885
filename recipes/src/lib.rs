//! Recipes for dishcam: the recipe model and JSONL store, streaming importers (Recipe1M, RecipeNLG,
//! schema.org JSON-LD), ingredient normalisation and allergen filters, a versioned, checksummed,
//! memory-mapped embedding index with exact and IVF-int8 search, retrieval metrics (medR, R@K) and a
//! scale benchmark.
//!
//! The crate is encoder-agnostic: embeddings come in as `&[f32]` rows and the text encoder is named by
//! an identity string stored in (and checked against) the index. It imports no other dishcam
//! crate; the runtime (a pack's recipe index), eval (retrieval) and the installer import it.

#![warn(missing_docs)]

pub mod atomic;
pub mod error;
pub mod import;
pub mod model;
pub mod normalize;
pub mod text;

pub use error::{RecipeError, Result, REBUILD_COMMAND};
pub use import::{
    detect_format, import_bytes, import_files, import_into_store, Format, ImportReport, Progress,
};
pub use model::{
    content_id, embedding_text, read_jsonl, source_id, write_jsonl, Recipe, RecipeStore,
};
pub use normalize::{normalise_ingredient, ExcludeFilter};
pub mod index;
pub use index::{build_index, BuildParams, Hit, IndexInput, IndexItem, RecipeIndex, SearchParams};
pub mod metrics;
pub use metrics::{retrieval_metrics, retrieval_protocol, RetrievalReport, RetrievalScores};
pub mod scale;

/// One original, cookable recipe per Food-101 dish, written for dishcam (see
/// `recipes/assets/README.md`); the `lite` pack ships it as its bundled recipes.
pub const FOOD101_RECIPES: &str = include_str!("../assets/food101.jsonl");
