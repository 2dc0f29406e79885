//! `dishcam embed image|text`: print an embedding.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use dishcam_capture::decode::decode_file;
use dishcam_runtime::{PhotoEncoder, TextEncoder};
use serde_json::json;

use crate::cli::{print_json, show, EngineArgs};

#[derive(Subcommand)]
pub enum EmbedWhat {
    /// Embedding of a photo from the pack's image encoder.
    Image {
        image: PathBuf,
        /// Print `dishcam.embedding/1` JSON (see docs/cli-json.md).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Embedding of a text from the pack's text encoder.
    Text {
        text: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

pub fn run(what: &EmbedWhat) -> anyhow::Result<ExitCode> {
    let (embedding, input, json_out, engine) = match what {
        EmbedWhat::Image {
            image,
            json,
            engine,
        } => {
            let pack = engine.open_pack()?;
            let backend = engine.backend()?;
            let mut enc =
                PhotoEncoder::load(&pack, backend.as_ref(), &engine.load_options()?, None, None)?;
            let img = decode_file(image, &engine.decode_options())?;
            let e = enc.embed(&img)?;
            (e, json!({"image": show(image)}), *json, engine)
        }
        EmbedWhat::Text { text, json, engine } => {
            let pack = engine.open_pack()?;
            let backend = engine.backend()?;
            let mut enc = TextEncoder::load(&pack, backend.as_ref(), &engine.load_options()?)?;
            let e = enc.encode(text)?;
            (e, json!({"text": text}), *json, engine)
        }
    };
    if json_out {
        print_json(&json!({
            "schema": "dishcam.embedding/1",
            "input": input,
            "pack": engine.pack,
            "backend": engine.backend,
            "precision": engine.precision,
            "dim": embedding.len(),
            "embedding": embedding,
        }));
    } else {
        let text: Vec<String> = embedding.iter().map(|v| format!("{v:.6}")).collect();
        println!("{}", text.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
