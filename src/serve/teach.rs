//! Teaching a dish from the page: the photos wait in the overlay's inbox
//! (`<overlay>/serve-teach/inbox/<dish>/`); `dishcam teach --add-to <default head> --name
//! kitchen --default` fits the head `kitchen` on the default head's exemplars plus them (the
//! pack's own heads stay as they were) and makes it the default; the photos move to `taught/`.
//! Then the server reloads its models and restarts the live pipeline on the new head.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use dishcam_capture::decode::decode_bytes;
use dishcam_heads::TeachRequest;
use dishcam_runtime::embedder::Silent;
use serde_json::{json, Value};

use super::engine::{Engine, EngineError};
use super::live::LiveRunner;
use super::state::{lock, AppState};

/// The head the page's teaching writes: the default head plus the taught dishes.
pub const TAUGHT_HEAD: &str = "kitchen";

/// Saves `photos` as examples of `dish` and refits the default head; blocks for seconds.
pub fn teach(
    state: &AppState,
    dish: &str,
    photos: &[(String, Vec<u8>)],
) -> Result<Value, EngineError> {
    let _one_at_a_time = lock(&state.teaching);
    let t0 = Instant::now();
    let (inbox, taught, head, decode) = {
        let engine = lock(&state.engine);
        let (inbox, taught) = engine.teach_dirs();
        (
            inbox,
            taught,
            engine.head_name().to_string(),
            state.engine_args.decode_options(),
        )
    };
    // Every photo must decode before any is kept.
    let images = photos
        .iter()
        .map(|(name, bytes)| decode_bytes(bytes, name, &decode))
        .collect::<Result<Vec<_>, _>>()
        .map_err(EngineError::Image)?;
    let dir = inbox.join(dish);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for (i, img) in images.iter().enumerate() {
        let path = dir.join(format!("{stamp}-{i}.png"));
        img.save(&path)
            .with_context(|| format!("{}: cannot save the photo", path.display()))?;
    }
    let a = &state.engine_args;
    // The taught dishes go into their own head, made the default: the pack's heads (which its
    // fusion heads build on) stay as they were. Fitted at fp32 like `dishcam teach`.
    let req = TeachRequest {
        add_to: Some(head.clone()),
        name: Some(TAUGHT_HEAD.into()),
        default: true,
        images: vec![inbox.clone()],
        decode: a.decode_options(),
        ..TeachRequest::default()
    };
    let pack = a.open_pack()?;
    let backend = a.backend()?;
    let fp32 = crate::cli::EngineArgs {
        precision: "fp32".into(),
        ..a.clone()
    };
    let embedder = fp32.embedder(&pack, backend.as_ref(), &Silent, false)?;
    let heads = dishcam_heads::teach(&req, &pack, &embedder)
        .map_err(anyhow::Error::from)?
        .heads;
    move_all(&inbox, &taught)?;
    // The models and the live pipeline pick up the refitted head.
    let engine = Engine::load(a)?;
    *lock(&state.info) = engine.describe();
    *lock(&state.engine) = engine;
    restart_live(state)?;
    Ok(json!({
        "schema": "dishcam.serve.teach/1",
        "dish": dish,
        "photos": photos.len(),
        "extended": head,
        "head": TAUGHT_HEAD,
        "heads": heads,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

/// Moves `from/<dish>/<photo>` to `to/<dish>/<photo>`, leaving `from` empty.
fn move_all(from: &Path, to: &Path) -> anyhow::Result<()> {
    for class in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let class = class?;
        let dest = to.join(class.file_name());
        std::fs::create_dir_all(&dest)
            .with_context(|| format!("{}: cannot create", dest.display()))?;
        for photo in std::fs::read_dir(class.path())? {
            let photo = photo?;
            std::fs::rename(photo.path(), dest.join(photo.file_name()))
                .with_context(|| format!("{}: cannot move", photo.path().display()))?;
        }
        // `teach` refuses empty class folders.
        std::fs::remove_dir(class.path())
            .with_context(|| format!("{}: cannot remove", class.path().display()))?;
    }
    Ok(())
}

/// Restarts the live pipeline, when there is one, with the models as they are now.
fn restart_live(state: &AppState) -> anyhow::Result<()> {
    let Some(cfg) = &state.live_config else {
        return Ok(());
    };
    let mut runner = lock(&state.runner);
    if let Some(old) = runner.take() {
        old.stop();
    }
    let me = state.me.upgrade().context("the server is shutting down")?;
    *runner = Some(LiveRunner::start(cfg, &me)?);
    Ok(())
}
