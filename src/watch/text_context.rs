//! `watch --text-from FILE|-`: a thread reads lines (following a file as it grows, or stdin),
//! encodes each with the text encoder, and hands the embedding to the inference thread, which
//! fuses it with every frame that follows. An empty line clears the context.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use anyhow::Context;
use dishcam_capture::Frame;
use dishcam_runtime::pipeline::FrameClassifier;
use dishcam_runtime::{DishClassifier, RuntimeError, TextEncoder};
use serde_json::json;

use crate::cli::print_json;

/// How often a followed file is checked for new lines after its end.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A context update: the embedding of a new line, or `None` to clear.
pub type Update = Option<Vec<f32>>;

/// Starts the reader thread for `from` (`-` is stdin). Encoding errors are reported and the
/// line skipped; the thread ends with its input (stdin) and runs until exit for a file.
pub fn follow(
    from: &str,
    mut encoder: TextEncoder,
    as_json: bool,
) -> anyhow::Result<Receiver<Update>> {
    let input: Box<dyn Read + Send> = if from == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(from)
                .with_context(|| format!("--text-from {from}: cannot open the file"))?,
        )
    };
    let follow_file = from != "-";
    let name = from.to_string();
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("dishcam-text".into())
        .spawn(move || {
            let mut reader = BufReader::new(input);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) if follow_file => {
                        std::thread::sleep(FOLLOW_POLL);
                        continue;
                    }
                    Ok(0) => return,
                    Ok(_) if !line.ends_with('\n') && follow_file => {
                        // A line still being written: wait for the rest of it.
                        let mut rest = String::new();
                        while !rest.ends_with('\n') {
                            std::thread::sleep(FOLLOW_POLL);
                            if reader.read_line(&mut rest).is_err() {
                                return;
                            }
                        }
                        line.push_str(&rest);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!(
                            "warning: --text-from {name}: {e}; the text context stays as it is"
                        );
                        return;
                    }
                }
                let text = line.trim();
                let update = if text.is_empty() {
                    None
                } else {
                    match encoder.encode(text) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            eprintln!("warning: --text-from {name}: {e}; line skipped");
                            continue;
                        }
                    }
                };
                if as_json {
                    print_json(&json!({
                        "schema": "dishcam.watch/1",
                        "type": "context",
                        "text": (!text.is_empty()).then_some(text),
                    }));
                } else {
                    eprintln!(
                        "text context: {}",
                        if text.is_empty() { "(cleared)" } else { text }
                    );
                }
                if tx.send(update).is_err() {
                    return;
                }
            }
        })
        .context("starting the text thread")?;
    Ok(rx)
}

/// The image head until a text arrives, then the fusion head on the image and the text.
pub struct LiveText {
    pub inner: DishClassifier,
    pub updates: Receiver<Update>,
}

impl FrameClassifier for LiveText {
    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn preprocess(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        FrameClassifier::preprocess(&mut self.inner, frame)
    }

    fn classify(&mut self, probs: &mut [f32]) -> Result<dishcam_runtime::Verdict, RuntimeError> {
        while let Ok(update) = self.updates.try_recv() {
            self.inner.set_text_embedding(update);
        }
        FrameClassifier::classify(&mut self.inner, probs)
    }
}
