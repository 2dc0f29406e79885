//! Writing `recipes.idx`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

use super::kernels::{dot_f32, normalise, quantise_i8};
use super::kmeans::{assign, spherical_kmeans};
use super::{
    BuildParams, IndexHeader, RecipeMeta, SectionInfo, ALIGN, MAGIC, SECTIONS, TRAILER_MAGIC,
    VERSION,
};
use crate::atomic::AtomicFile;
use crate::error::{RecipeError, Result};
use crate::model::Recipe;
use crate::normalize::normalise_ingredient;

/// What the index stores about one recipe besides its embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexItem {
    /// Recipe id (unique in the index).
    pub id: String,
    /// Title.
    pub title: String,
    /// Normalised ingredient names.
    pub ingredients: Vec<String>,
    /// Food-101 class, if any.
    pub food101_class: Option<String>,
    /// Index into [`IndexInput::stores`] of the JSONL store holding the recipe.
    pub store: Option<u32>,
    /// Byte offset of its line in that store (from [`crate::model::for_each_jsonl`]).
    pub offset: u64,
}

impl IndexItem {
    /// The item for `r`, located at `offset` in store number `store`.
    pub fn from_recipe(r: &Recipe, store: Option<u32>, offset: u64) -> Self {
        IndexItem {
            id: r.id.clone(),
            title: r.title.clone(),
            ingredients: r
                .ingredients
                .iter()
                .map(|i| normalise_ingredient(i))
                .collect(),
            food101_class: r.food101_class.clone(),
            store,
            offset,
        }
    }
}

/// Everything an index is built from.
#[derive(Debug, Clone, Copy)]
pub struct IndexInput<'a> {
    /// Identity of the text encoder that made the embeddings; [`super::RecipeIndex::open`] refuses
    /// callers with another one. Use something that changes when the weights change (pack name +
    /// encoder file sha256).
    pub encoder: &'a str,
    /// Embedding dimension.
    pub dim: usize,
    /// `items.len()` rows of `dim` values (normalised on the way in).
    pub embeddings: &'a [f32],
    /// One per embedding row.
    pub items: &'a [IndexItem],
    /// JSONL store paths the items point into (relative to the index's directory, or absolute).
    pub stores: &'a [String],
    /// Per Food-101 class, the embedding of its dish-name query (e.g. the text "apple pie"): the
    /// class's top recipes are precomputed from it (recipes tagged with the class first, then the
    /// exact nearest others).
    pub dish_queries: &'a [(String, Vec<f32>)],
}

/// Where a build is; passed to the progress callback.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BuildStage {
    /// k-means on a sample.
    Training {
        /// Rows in the training sample.
        sample: usize,
        /// Lists.
        nlist: usize,
    },
    /// Assigning every row to a list.
    Assigning,
    /// Writing the temp file; bytes so far.
    Writing {
        /// Bytes written.
        bytes: u64,
    },
    /// The temp file is complete and synced to disk is next, then the rename.
    Written {
        /// The temp file.
        temp: PathBuf,
    },
    /// The new index is in place.
    Committed,
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildStats {
    /// Recipes.
    pub count: usize,
    /// IVF lists.
    pub nlist: usize,
    /// File size.
    pub bytes: u64,
    /// Wall time of the build (embedding not included).
    pub seconds: f64,
}

struct CrcWriter<'a> {
    file: &'a mut AtomicFile,
    pos: u64,
    crc: crc32fast::Hasher,
    path: &'a Path,
}

impl CrcWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.file
            .write_all(b)
            .map_err(|e| RecipeError::io(self.path, e))?;
        self.crc.update(b);
        self.pos += b.len() as u64;
        Ok(())
    }
    fn pad(&mut self) -> Result<()> {
        let pad = (ALIGN - self.pos % ALIGN) % ALIGN;
        self.file
            .write_all(&vec![0u8; pad as usize])
            .map_err(|e| RecipeError::io(self.path, e))?;
        self.pos += pad;
        Ok(())
    }
    fn start(&mut self) -> Result<u64> {
        self.pad()?;
        self.crc = crc32fast::Hasher::new();
        Ok(self.pos)
    }
}

/// Builds the index for `input` and writes it to `path` atomically (temp file in the same directory,
/// fsync, rename, fsync of the directory): a crash leaves the previous index as it was.
pub fn build_index(
    path: &Path,
    input: &IndexInput,
    params: &BuildParams,
    progress: &mut dyn FnMut(&BuildStage),
) -> Result<BuildStats> {
    let t0 = Instant::now();
    let (d, n) = (input.dim, input.items.len());
    if d == 0 || input.embeddings.len() != n * d {
        return Err(RecipeError::Shape(format!(
            "{} embedding values for {n} recipes of dim {d}",
            input.embeddings.len()
        )));
    }
    if input.embeddings.iter().any(|v| !v.is_finite()) {
        return Err(RecipeError::Invalid(
            "embeddings contain NaN or infinity".into(),
        ));
    }
    let mut ids = HashSet::with_capacity(n);
    if let Some(dup) = input.items.iter().find(|it| !ids.insert(it.id.as_str())) {
        return Err(RecipeError::Invalid(format!(
            "recipe id {} appears twice",
            dup.id
        )));
    }
    if let Some(bad) = input
        .items
        .iter()
        .find(|it| it.store.is_some_and(|s| s as usize >= input.stores.len()))
    {
        return Err(RecipeError::Invalid(format!(
            "recipe {} points to store {:?}, only {} given",
            bad.id,
            bad.store,
            input.stores.len()
        )));
    }
    for (class, q) in input.dish_queries {
        if q.len() != d {
            return Err(RecipeError::Shape(format!(
                "dish query {class} has {} values, dim is {d}",
                q.len()
            )));
        }
    }
    let row = |i: usize, buf: &mut Vec<f32>| {
        buf.clear();
        buf.extend_from_slice(&input.embeddings[i * d..(i + 1) * d]);
        normalise(buf);
    };

    // Coarse quantiser.
    let nlist = params.effective_nlist(n);
    let mut rng = SmallRng::seed_from_u64(params.seed);
    let centroids = if nlist <= 1 {
        let mut c = vec![0f32; d];
        let mut buf = Vec::new();
        for i in 0..n {
            row(i, &mut buf);
            c.iter_mut().zip(&buf).for_each(|(a, b)| *a += b);
        }
        normalise(&mut c);
        c
    } else {
        let m = (nlist * params.train_per_list).min(n);
        progress(&BuildStage::Training { sample: m, nlist });
        let mut sample = Vec::with_capacity(m * d);
        let mut buf = Vec::new();
        for i in rand::seq::index::sample(&mut rng, n, m) {
            row(i, &mut buf);
            sample.extend_from_slice(&buf);
        }
        spherical_kmeans(&sample, d, nlist, params.kmeans_iters, &mut rng)
    };
    let nlist = centroids.len() / d;

    progress(&BuildStage::Assigning);
    let mut labels = Vec::with_capacity(n);
    if nlist == 1 {
        labels.resize(n, 0u32);
    } else {
        let mut chunk = Vec::with_capacity(4096 * d);
        let mut buf = Vec::new();
        for start in (0..n).step_by(4096) {
            chunk.clear();
            for i in start..(start + 4096).min(n) {
                row(i, &mut buf);
                chunk.extend_from_slice(&buf);
            }
            labels.extend(assign(&chunk, &centroids, d).0);
        }
    }
    // Rows list by list (stable within a list).
    let mut list_offsets = vec![0u64; nlist + 1];
    for &l in &labels {
        list_offsets[l as usize + 1] += 1;
    }
    for i in 0..nlist {
        list_offsets[i + 1] += list_offsets[i];
    }
    let mut next: Vec<u64> = list_offsets[..nlist].to_vec();
    let mut perm = vec![0u32; n];
    for (ord, &l) in labels.iter().enumerate() {
        perm[next[l as usize] as usize] = ord as u32;
        next[l as usize] += 1;
    }

    // Pre-pass in row order: scales, per-list code crcs, per-row vector crcs.
    let mut scales = vec![0f32; n];
    let mut row_crcs = vec![0u32; n];
    let mut list_crcs = vec![0u32; nlist];
    {
        let mut buf = Vec::new();
        let mut code = vec![0i8; d];
        for l in 0..nlist {
            let mut h = crc32fast::Hasher::new();
            for r in list_offsets[l] as usize..list_offsets[l + 1] as usize {
                row(perm[r] as usize, &mut buf);
                scales[r] = quantise_i8(&buf, &mut code);
                h.update(bytemuck::cast_slice(&code));
                row_crcs[r] = crc32fast::hash(bytemuck::cast_slice(&buf));
            }
            list_crcs[l] = h.finalize();
        }
    }

    // Per-dish top recipes.
    let mut dish_top: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    if !input.dish_queries.is_empty() {
        let norms: Vec<f32> = (0..n)
            .map(|i| {
                dot_f32(
                    &input.embeddings[i * d..(i + 1) * d],
                    &input.embeddings[i * d..(i + 1) * d],
                )
                .sqrt()
                .max(1e-30)
            })
            .collect();
        for (class, q) in input.dish_queries {
            let mut q = q.clone();
            normalise(&mut q);
            let mut list: Vec<u32> = (0..n as u32)
                .filter(|&o| {
                    input.items[o as usize].food101_class.as_deref() == Some(class.as_str())
                })
                .take(params.dish_top_k)
                .collect();
            let mut scored: Vec<(f32, u32)> = (0..n)
                .map(|i| {
                    (
                        dot_f32(&q, &input.embeddings[i * d..(i + 1) * d]) / norms[i],
                        i as u32,
                    )
                })
                .collect();
            scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            for (_, o) in scored {
                if list.len() >= params.dish_top_k {
                    break;
                }
                if !list.contains(&o) {
                    list.push(o);
                }
            }
            dish_top.insert(class.clone(), list);
        }
    }

    // Meta and id order.
    let mut meta = Vec::new();
    let mut meta_index = Vec::with_capacity(2 * n);
    for it in input.items {
        let m = RecipeMeta {
            id: it.id.clone(),
            title: it.title.clone(),
            ingredients: it.ingredients.clone(),
            food101_class: it.food101_class.clone(),
            store: it.store,
            offset: it.offset,
        };
        let bytes = serde_json::to_vec(&m).map_err(|e| RecipeError::Invalid(e.to_string()))?;
        meta_index.push(meta.len() as u64);
        meta_index.push(bytes.len() as u64 | (crc32fast::hash(&bytes) as u64) << 32);
        meta.extend_from_slice(&bytes);
    }
    let mut ids_sorted: Vec<u32> = (0..n as u32).collect();
    ids_sorted
        .sort_unstable_by(|&a, &b| input.items[a as usize].id.cmp(&input.items[b as usize].id));
    let dish_json =
        serde_json::to_vec(&dish_top).map_err(|e| RecipeError::Invalid(e.to_string()))?;

    // Write.
    let mut file = AtomicFile::create(path)?;
    let mut w = CrcWriter {
        file: &mut file,
        pos: 0,
        crc: crc32fast::Hasher::new(),
        path,
    };
    let mut prefix = Vec::with_capacity(16);
    prefix.extend_from_slice(MAGIC);
    prefix.extend_from_slice(&VERSION.to_le_bytes());
    prefix.extend_from_slice(&0u32.to_le_bytes());
    w.put(&prefix)?;
    let mut sections = Vec::new();
    let mut buf = Vec::new();
    let mut code = vec![0i8; d];
    for name in SECTIONS {
        let offset = w.start()?;
        match name {
            "centroids" => w.put(bytemuck::cast_slice(&centroids))?,
            "list_offsets" => w.put(bytemuck::cast_slice(&list_offsets))?,
            "list_crcs" => w.put(bytemuck::cast_slice(&list_crcs))?,
            "scales" => w.put(bytemuck::cast_slice(&scales))?,
            "perm" => w.put(bytemuck::cast_slice(&perm))?,
            "row_crcs" => w.put(bytemuck::cast_slice(&row_crcs))?,
            "meta_index" => w.put(bytemuck::cast_slice(&meta_index))?,
            "ids_sorted" => w.put(bytemuck::cast_slice(&ids_sorted))?,
            "dish_top" => w.put(&dish_json)?,
            "codes" | "vectors" => {
                for (r, &ord) in perm.iter().enumerate() {
                    row(ord as usize, &mut buf);
                    if name == "codes" {
                        quantise_i8(&buf, &mut code);
                        w.put(bytemuck::cast_slice(&code))?;
                    } else {
                        w.put(bytemuck::cast_slice(&buf))?;
                    }
                    if r % 65536 == 0 {
                        progress(&BuildStage::Writing { bytes: w.pos });
                    }
                }
            }
            "meta" => w.put(&meta)?,
            other => unreachable!("section {other}"),
        }
        sections.push(SectionInfo {
            name: name.to_string(),
            offset,
            len: w.pos - offset,
            crc32: w.crc.clone().finalize(),
        });
    }
    let header_offset = w.pos;
    let mut header = IndexHeader {
        format: "dishcam-recipe-index".into(),
        version: VERSION,
        dim: d as u32,
        count: n as u64,
        nlist: nlist as u32,
        encoder: input.encoder.to_string(),
        params: BuildParams {
            nlist,
            nprobe: params.effective_nprobe(n, nlist),
            ..params.clone()
        },
        stores: input.stores.to_vec(),
        sections,
        file_len: 0,
        writer: concat!("dishcam-recipes ", env!("CARGO_PKG_VERSION")).into(),
    };
    let mut hjson = Vec::new();
    for _ in 0..4 {
        hjson = serde_json::to_vec(&header).map_err(|e| RecipeError::Invalid(e.to_string()))?;
        let want = header_offset + hjson.len() as u64 + 32;
        if header.file_len == want {
            break;
        }
        header.file_len = want;
    }
    w.put(&hjson)?;
    let mut trailer = Vec::with_capacity(32);
    trailer.extend_from_slice(&header_offset.to_le_bytes());
    trailer.extend_from_slice(&(hjson.len() as u64).to_le_bytes());
    trailer.extend_from_slice(&crc32fast::hash(&hjson).to_le_bytes());
    trailer.extend_from_slice(&VERSION.to_le_bytes());
    trailer.extend_from_slice(TRAILER_MAGIC);
    w.put(&trailer)?;
    let bytes = w.pos;
    debug_assert_eq!(bytes, header.file_len);
    file.flush().map_err(|e| RecipeError::io(path, e))?;
    progress(&BuildStage::Written {
        temp: file.temp_path().to_path_buf(),
    });
    file.commit()?;
    progress(&BuildStage::Committed);
    Ok(BuildStats {
        count: n,
        nlist,
        bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The text a Food-101 class is embedded from for its precomputed recipe list: the class name with
/// underscores as spaces (`apple_pie` -> `apple pie`).
pub fn dish_query_text(class: &str) -> String {
    class.replace('_', " ")
}

/// How a store path is recorded in the header: relative to the index's directory when the store is
/// inside it, else absolute.
fn store_ref(index: &Path, store: &Path) -> String {
    let dir = index
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (d, s) = (abs(dir), abs(store));
    match s.strip_prefix(&d) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => s.to_string_lossy().into_owned(),
    }
}

/// Builds the index at `path` from JSONL stores (later stores override earlier ones with the same
/// id, so pass the base set first and the user overlay last). `embed` turns a batch of
/// [`crate::model::embedding_text`]s into `batch.len() * dim` values; it is called with at most
/// `batch` texts at a time. `dish_classes` are the Food-101 classes to precompute (their query
/// embeddings come from `embed` on [`dish_query_text`]).
#[allow(clippy::too_many_arguments)]
pub fn build_from_stores(
    path: &Path,
    stores: &[PathBuf],
    encoder: &str,
    dim: usize,
    batch: usize,
    embed: &mut dyn FnMut(&[String]) -> Result<Vec<f32>>,
    dish_classes: &[String],
    params: &BuildParams,
    progress: &mut dyn FnMut(&BuildStage),
) -> Result<BuildStats> {
    let mut by_id: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut items: Vec<IndexItem> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for (si, store) in stores.iter().enumerate() {
        crate::model::for_each_jsonl(store, |off, r| {
            let item = IndexItem::from_recipe(&r, Some(si as u32), off);
            let text = crate::model::embedding_text(&r);
            match by_id.get(&r.id) {
                Some(&i) => {
                    items[i] = item;
                    texts[i] = text;
                }
                None => {
                    by_id.insert(r.id.clone(), items.len());
                    items.push(item);
                    texts.push(text);
                }
            }
            Ok(())
        })?;
    }
    let mut run = |t: &[String]| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(t.len() * dim);
        for chunk in t.chunks(batch.max(1)) {
            let e = embed(chunk)?;
            if e.len() != chunk.len() * dim {
                return Err(RecipeError::Shape(format!(
                    "encoder returned {} values for {} texts of dim {dim}",
                    e.len(),
                    chunk.len()
                )));
            }
            out.extend_from_slice(&e);
        }
        Ok(out)
    };
    let embeddings = run(&texts)?;
    drop(texts);
    let dish_texts: Vec<String> = dish_classes.iter().map(|c| dish_query_text(c)).collect();
    let dish_emb = run(&dish_texts)?;
    let dish_queries: Vec<(String, Vec<f32>)> = dish_classes
        .iter()
        .cloned()
        .zip(dish_emb.chunks_exact(dim.max(1)).map(<[f32]>::to_vec))
        .collect();
    let store_refs: Vec<String> = stores.iter().map(|s| store_ref(path, s)).collect();
    let input = IndexInput {
        encoder,
        dim,
        embeddings: &embeddings,
        items: &items,
        stores: &store_refs,
        dish_queries: &dish_queries,
    };
    build_index(path, &input, params, progress)
}
