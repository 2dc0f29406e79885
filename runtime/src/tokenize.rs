//! Text to token ids with a Hugging Face `tokenizer.json`, truncation set by the pack.

use tokenizers::{Tokenizer, TruncationParams};

/// Token ids and masks for one text, as the encoder's i64 inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoding {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// Errors loading a tokenizer or tokenising.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct TokenizeError {
    pub name: String,
    pub reason: String,
}

/// A tokenizer with the pack's truncation and no padding (one text per call).
pub struct TextTokenizer {
    inner: Tokenizer,
    name: String,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` bytes; `max_length` overrides the file's truncation, padding is off.
    pub fn from_bytes(bytes: &[u8], name: &str, max_length: usize) -> Result<Self, TokenizeError> {
        let err = |reason: String| TokenizeError {
            name: name.to_string(),
            reason,
        };
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| {
            err(format!(
                "not a valid tokenizer.json ({e}); re-pull the pack"
            ))
        })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            name: name.to_string(),
        })
    }

    /// Tokenises `text` with the special tokens the model expects.
    pub fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        let e = self.inner.encode(text, true).map_err(|e| TokenizeError {
            name: self.name.clone(),
            reason: format!("cannot tokenise the text ({e})"),
        })?;
        let widen = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        Ok(Encoding {
            input_ids: widen(e.get_ids()),
            attention_mask: widen(e.get_attention_mask()),
            token_type_ids: widen(e.get_type_ids()),
        })
    }
}
