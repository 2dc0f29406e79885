//! The runtime's error type: every variant names the pack, file or input and the fix.

use dishcam_models::Precision;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(transparent)]
    Pack(#[from] dishcam_models::PackError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Image(#[from] dishcam_capture::decode::ImageError),
    #[error(transparent)]
    Preprocess(#[from] dishcam_imageproc::preprocess::PreprocessError),
    #[error(transparent)]
    Prepare(#[from] dishcam_imageproc::PrepareError),
    #[error("fusion head '{fusion}' was fitted on photos prepared as {fusion_prepare}, image head '{head}' on {head_prepare}; refit one so that both read the same photos")]
    PreparationMismatch {
        head: String,
        head_prepare: String,
        fusion: String,
        fusion_prepare: String,
    },
    #[error(transparent)]
    Tokenize(#[from] crate::tokenize::TokenizeError),
    #[error("pack '{pack}' has no {part}; use a pack that has one")]
    NoEncoder { pack: String, part: &'static str },
    #[error(
        "pack '{pack}' has no {precision} variant of the {part} (it has: {available}); {hint}"
    )]
    MissingVariant {
        pack: String,
        part: &'static str,
        precision: Precision,
        available: String,
        hint: String,
    },
    #[error("pack '{pack}' has no head '{head}' (heads: {available})")]
    UnknownHead {
        pack: String,
        head: String,
        available: String,
    },
    #[error(transparent)]
    HeadLookup(#[from] dishcam_models::manifest::HeadLookupError),
    #[error("head '{head}' reads {input}")]
    NeedsInput { head: String, input: &'static str },
    #[error("head model: {0}")]
    HeadModel(String),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Recipes(#[from] dishcam_recipes::RecipeError),
    #[error("pack '{pack}' has no recipes: import some with `dishcam recipes import FILE`")]
    NoRecipes { pack: String },
    #[error("{}: no recipe index yet; build it with `dishcam recipes index build`", path.display())]
    NoRecipeIndex { path: std::path::PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{model}: output '{output}' has {got} values, expected {want}")]
    OutputSize {
        model: String,
        output: String,
        got: usize,
        want: usize,
    },
}
