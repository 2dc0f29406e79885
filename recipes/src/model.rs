//! The recipe model, stable ids, the text that gets embedded, and the JSONL recipe store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::AtomicFile;
use crate::error::{RecipeError, Result};
use crate::text::{clean_ws, decode_text};

/// One recipe. This is also the line format of the JSONL store (one JSON object per line), and it
/// reads the bundled `recipes/assets/food101.jsonl` as it is. Unknown fields are ignored on
/// read; empty optional fields are left out on write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Recipe {
    /// Stable id: `<source prefix>-<source id>` (e.g. `recipe1m-000018c8a5`, `recipenlg-17`,
    /// `food101-apple_pie`), else `recipe-<16 hex of sha256(title + ingredients)>`; see [`content_id`].
    pub id: String,
    /// Title as published.
    pub title: String,
    /// Ingredient lines as published, quantities included.
    pub ingredients: Vec<String>,
    /// Steps in order.
    #[serde(default)]
    pub instructions: Vec<String>,
    /// Free tags (course, diet, keywords).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Cuisine, e.g. `Italian`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuisine: Option<String>,
    /// Number of servings where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servings: Option<u32>,
    /// The published yield text when it is not a plain number of servings (e.g. `24 cookies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yield_text: Option<String>,
    /// Total time in minutes where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time_minutes: Option<u32>,
    /// Where it came from (data set or site name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Original URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Licence / terms note of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// Food-101 class name (`apple_pie`) when the recipe is for one of the 101 dishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub food101_class: Option<String>,
    /// Image ids or URLs (Recipe1M layer2, schema.org `image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// Why a record was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The record has no (non-blank) title.
    NoTitle,
    /// The record has no (non-blank) ingredient.
    NoIngredients,
    /// The record could not be parsed (bad JSON / CSV / list column).
    Malformed,
    /// A record with the same id was already imported from this input.
    Duplicate,
}

impl SkipReason {
    /// Stable snake_case name, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoTitle => "no_title",
            SkipReason::NoIngredients => "no_ingredients",
            SkipReason::Malformed => "malformed",
            SkipReason::Duplicate => "duplicate",
        }
    }
}

impl Recipe {
    /// Trims every text field, drops blank list entries, and checks there is a title and at least one
    /// ingredient.
    pub fn normalise_and_validate(&mut self) -> std::result::Result<(), SkipReason> {
        self.title = clean_ws(&self.title);
        for list in [
            &mut self.ingredients,
            &mut self.instructions,
            &mut self.tags,
        ] {
            list.iter_mut().for_each(|s| *s = clean_ws(s));
            list.retain(|s| !s.is_empty());
        }
        if self.title.is_empty() {
            return Err(SkipReason::NoTitle);
        }
        if self.ingredients.is_empty() {
            return Err(SkipReason::NoIngredients);
        }
        Ok(())
    }
}

/// `<prefix>-<source_id>`, with characters other than ASCII letters, digits, `-`, `_`, `.` in the source
/// id replaced by `_` so ids are safe on a command line.
pub fn source_id(prefix: &str, source_id: &str) -> String {
    let clean: String = source_id
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{clean}")
}

/// Content id for recipes without a source id: `recipe-` + the first 16 hex digits of
/// sha256(lowercased, whitespace-collapsed title, then each ingredient line the same way, joined by
/// `\n`). The same recipe imported twice gets the same id.
pub fn content_id(title: &str, ingredients: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(clean_ws(title).to_lowercase().as_bytes());
    for i in ingredients {
        h.update(b"\n");
        h.update(clean_ws(i).to_lowercase().as_bytes());
    }
    format!("recipe-{}", &hex::encode(h.finalize())[..16])
}

/// Maximum number of characters of [`embedding_text`] (MiniLM-class encoders read 256 tokens at most).
pub const EMBEDDING_TEXT_MAX_CHARS: usize = 1000;

/// The text a recipe is embedded from: `"<title>. Ingredients: <i1>, <i2>, ... . <step 1> <step 2> ..."`,
/// the instructions cut so the whole stays under [`EMBEDDING_TEXT_MAX_CHARS`] characters (cut at a char
/// boundary). Title and ingredients come first so truncation by the tokenizer only loses steps.
pub fn embedding_text(r: &Recipe) -> String {
    let mut s = format!("{}. Ingredients: {}.", r.title, r.ingredients.join(", "));
    for step in &r.instructions {
        if s.chars().count() >= EMBEDDING_TEXT_MAX_CHARS {
            break;
        }
        s.push(' ');
        s.push_str(step);
    }
    if let Some((cut, _)) = s.char_indices().nth(EMBEDDING_TEXT_MAX_CHARS) {
        s.truncate(cut);
    }
    s
}

/// Reads every recipe of a JSONL store. Blank lines are ignored; any other line that is not a
/// recipe is an error naming the line (the store is written by this crate, so a bad line means damage).
pub fn read_jsonl(path: &Path) -> Result<Vec<Recipe>> {
    let mut out = Vec::new();
    for_each_jsonl(path, |_, r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// Streams a JSONL store, calling `f(byte_offset_of_line, recipe)` for each recipe. Non-UTF-8 lines are
/// decoded as Latin-1.
pub fn for_each_jsonl(path: &Path, mut f: impl FnMut(u64, Recipe) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| RecipeError::io(path, e))?;
    let mut rd = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = rd
            .read_until(b'\n', &mut buf)
            .map_err(|e| RecipeError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let text = decode_text(&buf);
        if !text.trim().is_empty() {
            let r: Recipe = serde_json::from_str(&text).map_err(|e| RecipeError::Format {
                path: path.to_path_buf(),
                message: format!("line {line_no}: not a recipe: {e}"),
            })?;
            f(offset, r)?;
        }
        offset += n as u64;
    }
}

/// Reads the one recipe whose line starts at `offset` (as passed to [`for_each_jsonl`]).
pub fn read_jsonl_at(path: &Path, offset: u64) -> Result<Recipe> {
    let mut file = File::open(path).map_err(|e| RecipeError::io(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| RecipeError::io(path, e))?;
    let mut rd = BufReader::new(file.take(64 << 20));
    let mut buf = Vec::new();
    rd.read_until(b'\n', &mut buf)
        .map_err(|e| RecipeError::io(path, e))?;
    serde_json::from_str(&decode_text(&buf)).map_err(|e| RecipeError::Format {
        path: path.to_path_buf(),
        message: format!("byte {offset}: not a recipe: {e}"),
    })
}

/// Writes recipes as JSONL to `path` atomically (temp file in the same directory, fsync, rename, fsync
/// of the directory): readers see the old store or the new one, never a mix.
pub fn write_jsonl<'a>(path: &Path, recipes: impl IntoIterator<Item = &'a Recipe>) -> Result<()> {
    let mut w = JsonlWriter::create(path)?;
    for r in recipes {
        w.push(r)?;
    }
    w.commit()
}

/// Streaming, atomic JSONL writer: nothing appears at the target until [`JsonlWriter::commit`].
pub struct JsonlWriter {
    path: PathBuf,
    file: AtomicFile,
    count: usize,
}

impl JsonlWriter {
    /// Starts a replacement for the store at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            file: AtomicFile::create(path)?,
            count: 0,
        })
    }
    /// Appends one recipe line.
    pub fn push(&mut self, r: &Recipe) -> Result<()> {
        let w = self.file.writer();
        serde_json::to_writer(&mut *w, r).map_err(|e| RecipeError::io(&self.path, e.into()))?;
        w.write_all(b"\n")
            .map_err(|e| RecipeError::io(&self.path, e))?;
        self.count += 1;
        Ok(())
    }
    /// Recipes pushed so far.
    pub fn count(&self) -> usize {
        self.count
    }
    /// Makes the new store visible (atomically replacing any old one).
    pub fn commit(self) -> Result<()> {
        self.file.commit()
    }
}

/// Recipes held in memory with lookup by id; for the bundled set and a household's own collection.
/// (A million-recipe store is searched through the index, which reads single lines by offset.)
#[derive(Debug, Default, Clone)]
pub struct RecipeStore {
    recipes: Vec<Recipe>,
    by_id: HashMap<String, usize>,
}

impl RecipeStore {
    /// Loads the stores in order; a later store's recipe replaces an earlier one with the same id
    /// (so a user overlay given after the base set wins).
    pub fn load(paths: &[&Path]) -> Result<Self> {
        let mut s = RecipeStore::default();
        for p in paths {
            for r in read_jsonl(p)? {
                s.insert(r);
            }
        }
        Ok(s)
    }
    /// Inserts or replaces by id.
    pub fn insert(&mut self, r: Recipe) {
        match self.by_id.get(&r.id) {
            Some(&i) => self.recipes[i] = r,
            None => {
                self.by_id.insert(r.id.clone(), self.recipes.len());
                self.recipes.push(r);
            }
        }
    }
    /// The recipe with this id.
    pub fn get(&self, id: &str) -> Option<&Recipe> {
        self.by_id.get(id).map(|&i| &self.recipes[i])
    }
    /// All recipes in load order.
    pub fn recipes(&self) -> &[Recipe] {
        &self.recipes
    }
    /// Number of recipes.
    pub fn len(&self) -> usize {
        self.recipes.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.recipes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(title: &str) -> Recipe {
        Recipe {
            id: content_id(title, &["1 egg".into()]),
            title: title.into(),
            ingredients: vec!["1 egg".into()],
            instructions: vec!["Cook.".into()],
            servings: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn ids_are_stable_and_safe() {
        assert_eq!(source_id("recipe1m", "000018c8a5"), "recipe1m-000018c8a5");
        assert_eq!(source_id("web", "a b/c"), "web-a_b_c");
        let a = content_id("Apple  Pie", &["2 Apples".into()]);
        assert_eq!(a, content_id("apple pie", &["2 apples".into()]));
        assert_ne!(a, content_id("apple pie", &["3 apples".into()]));
        assert!(a.starts_with("recipe-") && a.len() == 7 + 16);
    }

    #[test]
    fn validate_skips_empty() {
        let mut r = sample("  ");
        assert_eq!(r.normalise_and_validate(), Err(SkipReason::NoTitle));
        let mut r = sample("x");
        r.ingredients = vec![" ".into()];
        assert_eq!(r.normalise_and_validate(), Err(SkipReason::NoIngredients));
    }

    #[test]
    fn jsonl_round_trip_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let rs = vec![sample("a"), sample("b"), sample("crème")];
        write_jsonl(&p, &rs).unwrap();
        assert_eq!(read_jsonl(&p).unwrap(), rs);
        let mut offs = vec![];
        for_each_jsonl(&p, |o, _| {
            offs.push(o);
            Ok(())
        })
        .unwrap();
        assert_eq!(read_jsonl_at(&p, offs[2]).unwrap(), rs[2]);
        let store = RecipeStore::load(&[&p]).unwrap();
        assert_eq!(store.get(&rs[1].id).unwrap().title, "b");
        // no stray temp files, and a normal file mode
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o044,
                0o044,
                "store should be readable by others: {mode:o}"
            );
        }
    }

    #[test]
    fn embedding_text_shape() {
        let mut r = sample("Soup");
        r.instructions = vec!["x".repeat(2000)];
        let t = embedding_text(&r);
        assert!(t.starts_with("Soup. Ingredients: 1 egg."));
        assert_eq!(t.chars().count(), EMBEDDING_TEXT_MAX_CHARS);
    }
}
