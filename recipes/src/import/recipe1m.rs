//! Recipe1M `layer1.json` / `layer2.json`. layer1 is one JSON array (1.3 GB in the full set): it is
//! streamed element by element through serde_json's `Deserializer` and a `SeqAccess` visitor, so memory
//! stays constant whatever the file size.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer as _, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::Ctx;
use crate::error::{RecipeError, Result};
use crate::model::{source_id, Recipe};

/// Licence note attached to Recipe1M recipes.
pub const RECIPE1M_LICENCE: &str =
    "Recipe1M: research use only under its terms of use; text belongs to the original site";

#[derive(Deserialize)]
struct TextItem {
    text: String,
}

#[derive(Deserialize)]
struct Layer1Record {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    ingredients: Vec<TextItem>,
    #[serde(default)]
    instructions: Vec<TextItem>,
    #[serde(default)]
    partition: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct Layer2Image {
    id: String,
}

#[derive(Deserialize)]
struct Layer2Record {
    id: String,
    #[serde(default)]
    images: Vec<Layer2Image>,
}

/// Visits the top-level array, one element at a time. Each element is read as a `Value` first so
/// that a record of the wrong shape is skipped and counted without ending the stream.
struct ArrayVisitor<F: FnMut(u64, Value) -> bool>(F);

impl<'de, F: FnMut(u64, Value) -> bool> Visitor<'de> for ArrayVisitor<F> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> std::result::Result<u64, A::Error> {
        let mut n = 0u64;
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            n += 1;
            if !(self.0)(n, v) {
                return Err(serde::de::Error::custom(
                    "import stopped by the output sink",
                ));
            }
        }
        Ok(n)
    }
}

struct ValueSeed;
impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }
}

/// Streams a layer1 array into `ctx`. A JSON syntax error (e.g. a truncated file) cannot be resumed in
/// one array: it is counted as one malformed record with the position, and the records before it stay
/// imported.
pub(crate) fn import_layer1<R: Read>(
    rd: R,
    images: &HashMap<String, Vec<String>>,
    ctx: &mut Ctx,
) -> Result<()> {
    let mut de = serde_json::Deserializer::from_reader(rd);
    let mut last = 0u64;
    let res = de.deserialize_seq(ArrayVisitor(|n, v| {
        last = n;
        match serde_json::from_value::<Layer1Record>(v) {
            Ok(rec) => {
                let r = Recipe {
                    id: source_id("recipe1m", &rec.id),
                    images: images.get(&rec.id).cloned().unwrap_or_default(),
                    title: rec.title,
                    ingredients: rec.ingredients.into_iter().map(|t| t.text).collect(),
                    instructions: rec.instructions.into_iter().map(|t| t.text).collect(),
                    tags: rec
                        .partition
                        .map(|p| vec![format!("recipe1m:{p}")])
                        .unwrap_or_default(),
                    source: Some("Recipe1M".into()),
                    url: rec.url.filter(|u| !u.is_empty()),
                    licence: Some(RECIPE1M_LICENCE.into()),
                    ..Default::default()
                };
                ctx.accept(n, r)
            }
            Err(e) => {
                ctx.malformed(n, format!("record {n}: {e}"));
                true
            }
        }
    }));
    if let Err(e) = res {
        if ctx.fatal.is_some() {
            return Ok(());
        }
        if let Some(io) = io_error(&e) {
            return Err(RecipeError::io(&ctx.file, io));
        }
        ctx.malformed(
            last + 1,
            format!("JSON syntax error after record {last}, rest of file not read: {e}"),
        );
    }
    Ok(())
}

fn io_error(e: &serde_json::Error) -> Option<std::io::Error> {
    if e.is_io() {
        Some(std::io::Error::other(e.to_string()))
    } else {
        None
    }
}

/// Reads a layer2 file into `images` (recipe id -> image file ids such as `3e233001e2.jpg`; the URLs
/// are not kept). Bad records are ignored: image links are optional.
pub(crate) fn read_layer2<R: Read>(
    path: &Path,
    rd: R,
    images: &mut HashMap<String, Vec<String>>,
) -> Result<()> {
    let mut de = serde_json::Deserializer::from_reader(rd);
    let res = de.deserialize_seq(ArrayVisitor(|_, v| {
        if let Ok(rec) = serde_json::from_value::<Layer2Record>(v) {
            if !rec.images.is_empty() {
                images
                    .entry(rec.id)
                    .or_default()
                    .extend(rec.images.into_iter().map(|i| i.id));
            }
        }
        true
    }));
    match res {
        Err(e) if e.is_io() => Err(RecipeError::io(path, std::io::Error::other(e.to_string()))),
        _ => Ok(()),
    }
}
