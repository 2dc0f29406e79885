//! Streaming importers: Recipe1M `layer1.json` (+ `layer2.json`), RecipeNLG CSV, schema.org `Recipe`
//! JSON-LD (`.json`, `.html`, directories) and this crate's own JSONL.
//!
//! Every importer streams its input (constant memory apart from the set of ids seen, used to drop
//! duplicates, and Recipe1M's layer2 image map), skips and counts bad records and carries on, decodes
//! non-UTF-8 text as Latin-1, and reports bytes read through a progress callback.

mod jsonld;
mod recipe1m;
mod recipenlg;
mod utf8;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{RecipeError, Result};
use crate::model::{for_each_jsonl, JsonlWriter, Recipe, SkipReason};

pub use jsonld::{extract_jsonld_blocks, parse_iso8601_minutes, recipes_from_jsonld};
pub use utf8::Utf8RepairReader;

/// Input formats. `Auto` picks one per file with [`detect_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// Detect per file.
    Auto,
    /// Recipe1M `layer1.json` (one JSON array of recipes).
    Recipe1m,
    /// Recipe1M `layer2.json` (image links by recipe id); only used together with a layer1 file.
    Recipe1mLayer2,
    /// RecipeNLG CSV (`,title,ingredients,directions,link,source,NER`).
    RecipeNlg,
    /// schema.org `Recipe` JSON-LD in a `.json`/`.jsonld` file or embedded in `.html` pages.
    JsonLd,
    /// This crate's JSONL store (one [`Recipe`] per line).
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Format::Auto,
            "recipe1m" => Format::Recipe1m,
            "recipe1m-layer2" | "layer2" => Format::Recipe1mLayer2,
            "recipenlg" | "csv" => Format::RecipeNlg,
            "jsonld" | "json-ld" | "schema.org" => Format::JsonLd,
            "jsonl" => Format::Jsonl,
            other => {
                return Err(RecipeError::Invalid(format!(
                    "unknown format `{other}` (expected auto, recipe1m, recipenlg, jsonld or jsonl)"
                )))
            }
        })
    }
}

/// Picks the format of `path` from its extension and first bytes: a directory or `.html`/`.htm`/
/// `.jsonld` is JSON-LD, `.csv` is RecipeNLG, `.jsonl` is the JSONL store; a `.json` file is looked
/// at: `@context`/`@type` means JSON-LD, an array whose records have `"images"` and no `"title"` is
/// Recipe1M layer2, an array with `"ingredients"`/`"instructions"` of `{"text": ...}` is Recipe1M layer1.
pub fn detect_format(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return Ok(Format::JsonLd);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => return Ok(Format::RecipeNlg),
        "html" | "htm" | "jsonld" => return Ok(Format::JsonLd),
        "jsonl" => return Ok(Format::Jsonl),
        _ => {}
    }
    let mut head = Vec::with_capacity(8192);
    File::open(path)
        .map_err(|e| RecipeError::io(path, e))?
        .take(8192)
        .read_to_end(&mut head)
        .map_err(|e| RecipeError::io(path, e))?;
    let text = crate::text::decode_text(&head);
    let t = text.trim_start();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("<!doctype")
        || lower.starts_with("<html")
        || lower.contains("application/ld+json")
    {
        return Ok(Format::JsonLd);
    }
    if t.contains("\"@context\"") || t.contains("\"@type\"") {
        return Ok(Format::JsonLd);
    }
    if t.starts_with('[') {
        if t.contains("\"images\"") && !t.contains("\"title\"") {
            return Ok(Format::Recipe1mLayer2);
        }
        if t.contains("\"ingredients\"")
            || t.contains("\"instructions\"")
            || t.contains("\"partition\"")
        {
            return Ok(Format::Recipe1m);
        }
    }
    if t.starts_with('{')
        && t.lines()
            .next()
            .is_some_and(|l| l.contains("\"ingredients\"") && l.trim_end().ends_with('}'))
    {
        return Ok(Format::Jsonl);
    }
    let first_line = t.lines().next().unwrap_or("").to_ascii_lowercase();
    if first_line.contains("title")
        && first_line.contains("ingredients")
        && first_line.contains(',')
    {
        return Ok(Format::RecipeNlg);
    }
    Err(RecipeError::Format {
        path: path.to_path_buf(),
        message: "cannot tell the recipe format from the name or the first bytes; pass --format recipe1m|recipenlg|jsonld|jsonl".into(),
    })
}

/// Progress of an import, as passed to the progress callback after every chunk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes read so far over all input files.
    pub bytes_read: u64,
    /// Total size of all input files (0 if unknown).
    pub total_bytes: u64,
}

/// One record that was skipped, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// Input file.
    pub file: PathBuf,
    /// 1-based record number in that file (array element, CSV data row, JSON-LD recipe, JSONL line).
    pub record: u64,
    /// Why it was skipped.
    pub reason: SkipReason,
    /// Details.
    pub message: String,
}

/// How many records the report keeps in [`ImportReport::errors`].
pub const MAX_REPORTED_ERRORS: usize = 10;

/// What an import did. Serialises to the `--json` report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Recipes imported.
    pub imported: u64,
    /// Records skipped (sum of `skip_reasons`).
    pub skipped: u64,
    /// Skipped records by reason (`no_title`, `no_ingredients`, `malformed`, `duplicate`).
    pub skip_reasons: BTreeMap<String, u64>,
    /// The first [`MAX_REPORTED_ERRORS`] skipped records.
    pub errors: Vec<RecordError>,
    /// Input bytes read.
    pub bytes_read: u64,
    /// Files read, with the format used for each.
    pub files: Vec<(PathBuf, Format)>,
}

impl ImportReport {
    fn skip(&mut self, file: &Path, record: u64, reason: SkipReason, message: String) {
        self.skipped += 1;
        *self
            .skip_reasons
            .entry(reason.as_str().to_string())
            .or_default() += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(RecordError {
                file: file.to_path_buf(),
                record,
                reason,
                message,
            });
        }
    }
}

/// Shared state of one import run: report, duplicate check, output sink and a sink error that aborts.
pub(crate) struct Ctx<'a> {
    pub report: ImportReport,
    seen: HashSet<String>,
    sink: &'a mut dyn FnMut(Recipe) -> Result<()>,
    pub file: PathBuf,
    pub fatal: Option<RecipeError>,
}

impl Ctx<'_> {
    /// Validates, de-duplicates and hands on one recipe; returns false if the sink failed (stop).
    pub fn accept(&mut self, record: u64, mut r: Recipe) -> bool {
        if let Err(reason) = r.normalise_and_validate() {
            let msg = format!(
                "record {record} ({}) has {}",
                if r.title.is_empty() {
                    "untitled"
                } else {
                    &r.title
                },
                match reason {
                    SkipReason::NoTitle => "no title",
                    _ => "no ingredients",
                }
            );
            self.report.skip(&self.file.clone(), record, reason, msg);
            return true;
        }
        if !self.seen.insert(r.id.clone()) {
            let msg = format!("record {record}: id {} already imported", r.id);
            self.report
                .skip(&self.file.clone(), record, SkipReason::Duplicate, msg);
            return true;
        }
        match (self.sink)(r) {
            Ok(()) => {
                self.report.imported += 1;
                true
            }
            Err(e) => {
                self.fatal = Some(e);
                false
            }
        }
    }

    /// Counts a malformed record.
    pub fn malformed(&mut self, record: u64, message: String) {
        let f = self.file.clone();
        self.report.skip(&f, record, SkipReason::Malformed, message);
    }
}

/// A reader that counts bytes and reports them.
pub(crate) struct ProgressReader<'p, R> {
    inner: R,
    base: u64,
    read: u64,
    total: u64,
    cb: &'p mut dyn FnMut(Progress),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.cb)(Progress {
            bytes_read: self.base + self.read,
            total_bytes: self.total,
        });
        Ok(n)
    }
}

fn open_counted<'p>(
    path: &Path,
    base: u64,
    total: u64,
    cb: &'p mut dyn FnMut(Progress),
) -> Result<ProgressReader<'p, File>> {
    let f = File::open(path).map_err(|e| RecipeError::io(path, e))?;
    Ok(ProgressReader {
        inner: f,
        base,
        read: 0,
        total,
        cb,
    })
}

/// Collects the `.json`, `.jsonld`, `.html`, `.htm` files under a directory, sorted, recursively.
fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RecipeError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_dir(&p, out)?;
        } else if matches!(
            p.extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_ascii_lowercase())
                .as_deref(),
            Some("json" | "jsonld" | "html" | "htm")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Imports every file of `paths` (directories are walked for JSON-LD files), handing each valid, new
/// recipe to `sink`. A Recipe1M layer2 file among the inputs (detected or with `format` = layer2 for
/// it) supplies image ids for the layer1 files. Bad records are skipped and counted; only I/O errors, an
/// undetectable format or a failing sink end the import with an error.
pub fn import_files(
    paths: &[PathBuf],
    format: Format,
    sink: &mut dyn FnMut(Recipe) -> Result<()>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let mut files: Vec<(PathBuf, Format)> = Vec::new();
    for p in paths {
        let f = if format == Format::Auto {
            detect_format(p)?
        } else {
            format
        };
        if p.is_dir() {
            let mut inner = Vec::new();
            walk_dir(p, &mut inner)?;
            files.extend(inner.into_iter().map(|q| (q, Format::JsonLd)));
        } else {
            let f =
                if f == Format::Recipe1m && detect_format(p).ok() == Some(Format::Recipe1mLayer2) {
                    Format::Recipe1mLayer2
                } else {
                    f
                };
            files.push((p.clone(), f));
        }
    }
    let total: u64 = files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let mut base = 0u64;

    let mut images: HashMap<String, Vec<String>> = HashMap::new();
    for (p, f) in &files {
        if *f == Format::Recipe1mLayer2 {
            let rd = open_counted(p, base, total, progress)?;
            recipe1m::read_layer2(
                p,
                BufReader::with_capacity(1 << 16, Utf8RepairReader::new(rd)),
                &mut images,
            )?;
            base += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        }
    }

    let mut ctx = Ctx {
        report: ImportReport::default(),
        seen: HashSet::new(),
        sink,
        file: PathBuf::new(),
        fatal: None,
    };
    for (p, f) in &files {
        ctx.file = p.clone();
        ctx.report.files.push((p.clone(), *f));
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        if *f == Format::Recipe1mLayer2 {
            continue;
        }
        import_one(
            p,
            *f,
            open_counted(p, base, total, progress)?,
            &images,
            &mut ctx,
        )?;
        base += size;
        ctx.report.bytes_read = base;
        if let Some(e) = ctx.fatal.take() {
            return Err(e);
        }
    }
    ctx.report.bytes_read = base;
    Ok(ctx.report)
}

/// Runs the importer of `format` (not `Auto` or `Recipe1mLayer2`) over `rd` into `ctx`.
fn import_one<R: Read>(
    path: &Path,
    format: Format,
    rd: R,
    images: &HashMap<String, Vec<String>>,
    ctx: &mut Ctx,
) -> Result<()> {
    match format {
        Format::Recipe1m => recipe1m::import_layer1(
            BufReader::with_capacity(1 << 16, Utf8RepairReader::new(rd)),
            images,
            ctx,
        ),
        Format::RecipeNlg => recipenlg::import_csv(rd, ctx),
        Format::JsonLd => {
            let mut rd = rd;
            let mut bytes = Vec::new();
            rd.read_to_end(&mut bytes)
                .map_err(|e| RecipeError::io(path, e))?;
            jsonld::import_jsonld_bytes(path, &bytes, ctx);
            Ok(())
        }
        Format::Jsonl => import_jsonl(path, rd, ctx),
        Format::Auto | Format::Recipe1mLayer2 => {
            unreachable!("auto and layer2 are resolved by the callers")
        }
    }
}

/// Imports one input held in memory (e.g. an upload), in `format`, handing each valid, new recipe
/// to `sink`; `name` stands for the input in the report and in errors. A Recipe1M layer2 input is
/// read and checked but yields no recipes (its image links need a layer1 file: use
/// [`import_files`]). Bad records are skipped and counted as in [`import_files`]; `Auto` is an
/// error (name the format), as is a failing sink.
pub fn import_bytes(
    name: &Path,
    bytes: &[u8],
    format: Format,
    sink: &mut dyn FnMut(Recipe) -> Result<()>,
) -> Result<ImportReport> {
    let mut ctx = Ctx {
        report: ImportReport::default(),
        seen: HashSet::new(),
        sink,
        file: name.to_path_buf(),
        fatal: None,
    };
    ctx.report.files.push((name.to_path_buf(), format));
    match format {
        Format::Auto => {
            return Err(RecipeError::Invalid(format!(
                "{}: importing from memory needs a format (recipe1m, recipenlg, jsonld or jsonl), not auto",
                name.display()
            )))
        }
        Format::Recipe1mLayer2 => recipe1m::read_layer2(
            name,
            BufReader::new(Utf8RepairReader::new(bytes)),
            &mut HashMap::new(),
        )?,
        f => import_one(name, f, bytes, &HashMap::new(), &mut ctx)?,
    }
    ctx.report.bytes_read = bytes.len() as u64;
    match ctx.fatal.take() {
        Some(e) => Err(e),
        None => Ok(ctx.report),
    }
}

fn import_jsonl<R: Read>(path: &Path, rd: R, ctx: &mut Ctx) -> Result<()> {
    let mut rd = BufReader::with_capacity(1 << 16, rd);
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if rd
            .read_until(b'\n', &mut buf)
            .map_err(|e| RecipeError::io(path, e))?
            == 0
        {
            return Ok(());
        }
        let text = crate::text::decode_text(&buf);
        if text.trim().is_empty() {
            continue;
        }
        n += 1;
        match serde_json::from_str::<Recipe>(&text) {
            Ok(mut r) => {
                if r.id.trim().is_empty() {
                    r.id = crate::model::content_id(&r.title, &r.ingredients);
                }
                if !ctx.accept(n, r) {
                    return Ok(());
                }
            }
            Err(e) => ctx.malformed(n, format!("line {n}: {e}")),
        }
    }
}

/// Imports `paths` into the JSONL store at `store` (the user overlay): new recipes first, then every
/// recipe already in the store whose id was not re-imported. The store is replaced atomically, so an
/// interrupted import leaves the old store as it was.
pub fn import_into_store(
    paths: &[PathBuf],
    format: Format,
    store: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let mut w = JsonlWriter::create(store)?;
    let mut new_ids = HashSet::new();
    let report = import_files(
        paths,
        format,
        &mut |r: Recipe| {
            new_ids.insert(r.id.clone());
            w.push(&r)
        },
        progress,
    )?;
    if store.exists() {
        for_each_jsonl(store, |_, r| {
            if new_ids.contains(&r.id) {
                Ok(())
            } else {
                w.push(&r)
            }
        })?;
    }
    w.commit()?;
    Ok(report)
}
