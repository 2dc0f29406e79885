//! The recipe index file (`recipes.idx`) and search over it.
//!
//! # Layout (version 1, little-endian)
//! ```text
//! [0..16)        prefix: magic "DCRECIDX", version u32, reserved u32
//! sections       each at a 64-byte aligned offset (see SECTIONS), zero padding between them
//! header JSON    IndexHeader: dim, count, nlist, text encoder identity, build parameters, store
//!                files, and for every section its offset, length and crc32
//! trailer (32 B) header offset u64, header length u64, header crc32 u32, version u32, "DCRECEND"
//! ```
//! The header sits at the end so the file is written in one streaming pass; the trailer makes a
//! truncated file fail at once. Sections, in file order:
//!
//! | name | content | checked |
//! |---|---|---|
//! | `centroids` | nlist x dim f32, unit rows (coarse quantiser) | crc at open |
//! | `list_offsets` | nlist+1 u64: first row of each list (rows are stored list by list) | crc at open |
//! | `list_crcs` | nlist u32: crc32 of each list's codes | crc at open |
//! | `scales` | count f32: int8 scale of each row | crc at open |
//! | `perm` | count u32: row -> recipe ordinal | crc at open |
//! | `row_crcs` | count u32: crc32 of each row's f32 vector | crc at open |
//! | `meta_index` | count x (u64 offset, u32 len, u32 crc32) by ordinal into `meta` | crc at open |
//! | `ids_sorted` | count u32: ordinals sorted by recipe id (for `show ID`) | crc at open |
//! | `dish_top` | JSON: Food-101 class -> ordinals of its top recipes | crc at open |
//! | `codes` | count x dim i8, list by list | a list's crc the first time it is probed |
//! | `vectors` | count x dim f32 unit rows, list by list (exact re-ranking, exact search) | a row's crc on every read |
//! | `meta` | per recipe a JSON [`RecipeMeta`] (id, title, normalised ingredients, store location) | its crc on every read |
//!
//! [`RecipeIndex::verify`] checks every section in full.
//!
//! # Search
//! IVF: the query (normalised) is compared with all centroids, the `nprobe` best lists are scanned
//! with int8 dot products (query and rows quantised per vector), the `rerank` best rows by that
//! approximate score are re-scored exactly from their f32 vectors, and the top k returned. Only the
//! probed lists' codes and the re-ranked rows' vectors are read. The small sections are used in place
//! from the memory map; the big ones (codes, vectors) are read with positioned reads into reused
//! buffers, so they live in the kernel's page cache and not in the process's resident set, which stays
//! at the small sections plus one list's buffer however many queries run.
//!
//! Why not an ANN crate: hnsw_rs and instant-distance keep the graph and the f32 vectors on the heap
//! (1M x 384 f32 alone is 1.5 GB resident, against a 100 MB budget), and usearch can memory-map its
//! own file format but is a C++ build with its own layout, so the one checksummed file with our
//! header, encoder identity and per-dish lists would become two files. An IVF with int8 scanning is
//! a few hundred lines here and touches only the lists it probes.

mod build;
mod int8_scan;
pub mod kernels;
pub mod kmeans;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{RecipeError, Result};
use crate::model::{for_each_jsonl, read_jsonl_at, Recipe};
use crate::normalize::ExcludeFilter;

pub use build::{
    build_from_stores, build_index, dish_query_text, BuildStage, BuildStats, IndexInput, IndexItem,
};

#[cfg(target_endian = "big")]
compile_error!("the recipe index format is little-endian; big-endian targets are not supported");

/// Magic bytes at the start of the file.
pub const MAGIC: &[u8; 8] = b"DCRECIDX";
/// Magic bytes at the very end of the file.
pub const TRAILER_MAGIC: &[u8; 8] = b"DCRECEND";
/// Layout version this build writes and reads.
pub const VERSION: u32 = 1;
/// Section alignment in bytes.
pub const ALIGN: u64 = 64;
const PREFIX_LEN: u64 = 16;
const TRAILER_LEN: u64 = 32;
/// Sections, in file order.
pub const SECTIONS: [&str; 12] = [
    "centroids",
    "list_offsets",
    "list_crcs",
    "scales",
    "perm",
    "row_crcs",
    "meta_index",
    "ids_sorted",
    "dish_top",
    "codes",
    "vectors",
    "meta",
];
/// Sections that are too big to check at open; they are checked piecewise when read.
const LAZY_SECTIONS: [&str; 3] = ["codes", "vectors", "meta"];

/// Build parameters, stored in the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildParams {
    /// Number of IVF lists; 0 picks `clamp(2^round(log2(2*sqrt(n))), 1, 4096)`, and 1 below 4096 recipes.
    pub nlist: usize,
    /// Lloyd iterations of the coarse k-means.
    pub kmeans_iters: usize,
    /// Training sample for k-means, per list (the sample is capped at n).
    pub train_per_list: usize,
    /// Seed of the k-means sampling.
    pub seed: u64,
    /// Default number of lists probed per query; 0 picks it with [`BuildParams::effective_nprobe`].
    pub nprobe: usize,
    /// With `nprobe` 0: probe enough lists to scan at least this many rows per query.
    pub min_scan_rows: usize,
    /// Default number of candidates re-ranked exactly.
    pub rerank: usize,
    /// Recipes kept per dish in `dish_top`.
    pub dish_top_k: usize,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            nlist: 0,
            kmeans_iters: 10,
            train_per_list: 48,
            seed: 0x5eed,
            nprobe: 0,
            min_scan_rows: 20_000,
            rerank: 100,
            dish_top_k: 20,
        }
    }
}

impl BuildParams {
    /// The number of lists used for `n` recipes.
    pub fn effective_nlist(&self, n: usize) -> usize {
        if self.nlist > 0 {
            return self.nlist.min(n.max(1));
        }
        if n < 4096 {
            return 1;
        }
        let target = 2.0 * (n as f64).sqrt();
        (1usize << target.log2().round() as u32).clamp(1, 4096)
    }
    /// The default nprobe for `n` recipes in `nlist` lists: enough lists to scan about
    /// [`BuildParams::min_scan_rows`] rows, at least `max(8, nlist / 64)`, at most all.
    pub fn effective_nprobe(&self, n: usize, nlist: usize) -> usize {
        if self.nprobe > 0 {
            return self.nprobe.min(nlist).max(1);
        }
        let per_list = (n as f64 / nlist.max(1) as f64).max(1.0);
        let by_rows = (self.min_scan_rows as f64 / per_list).ceil() as usize;
        by_rows.max(nlist / 64).max(8).min(nlist).max(1)
    }
}

/// One section's place and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionInfo {
    /// Section name (see [`SECTIONS`]).
    pub name: String,
    /// Byte offset in the file (64-aligned).
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// crc32 of the whole section.
    pub crc32: u32,
}

/// The index header (JSON, near the end of the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexHeader {
    /// Always `dishcam-recipe-index`.
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// Embedding dimension.
    pub dim: u32,
    /// Number of recipes.
    pub count: u64,
    /// Number of IVF lists.
    pub nlist: u32,
    /// Identity of the text encoder that made the embeddings (e.g. pack name + encoder sha256).
    pub encoder: String,
    /// Build parameters, with `nprobe` resolved.
    pub params: BuildParams,
    /// JSONL recipe stores the `meta` locations point into, relative to the index's directory when
    /// not absolute.
    pub stores: Vec<String>,
    /// Sections.
    pub sections: Vec<SectionInfo>,
    /// Total file length.
    pub file_len: u64,
    /// Crate and version that wrote it.
    pub writer: String,
}

/// What the index keeps per recipe (section `meta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeMeta {
    /// Recipe id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Normalised ingredients ([`crate::normalize::normalise_ingredient`]), for `--exclude`.
    pub ingredients: Vec<String>,
    /// Food-101 class, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub food101_class: Option<String>,
    /// Index into [`IndexHeader::stores`], if the recipe is in a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<u32>,
    /// Byte offset of the recipe's line in that store.
    #[serde(default)]
    pub offset: u64,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Recipe ordinal in the index (build order).
    pub ordinal: u32,
    /// Recipe id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Cosine similarity to the query (exact, from the f32 vector).
    pub score: f32,
}

/// Per-query knobs; `None` uses the defaults stored in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchParams {
    /// Lists probed.
    pub nprobe: Option<usize>,
    /// Candidates re-ranked exactly.
    pub rerank: Option<usize>,
}

/// A memory-mapped recipe index. Opening checks the structure, the encoder identity and the small
/// sections; big sections are checked piecewise as they are read. Cheap to share across threads.
pub struct RecipeIndex {
    path: PathBuf,
    file: File,
    map: memmap2::Mmap,
    header: IndexHeader,
    ranges: BTreeMap<String, Range<usize>>,
    list_state: Vec<AtomicU8>,
    dish_top: BTreeMap<String, Vec<u32>>,
}

const LIST_UNCHECKED: u8 = 0;
const LIST_OK: u8 = 1;
const LIST_BAD: u8 = 2;

/// Aligned-ish view of a byte range as `T`; misalignment or a bad length is reported as corruption.
fn cast<'a, T: bytemuck::Pod>(path: &Path, name: &str, bytes: &'a [u8]) -> Result<&'a [T]> {
    bytemuck::try_cast_slice(bytes)
        .map_err(|e| RecipeError::corrupt(path, format!("section {name}: {e:?}")))
}

impl RecipeIndex {
    /// Opens `path` for a caller whose text encoder is `encoder`; refuses an index built with another
    /// encoder (the error names both). Pass `None` to skip the check (tools that only inspect).
    pub fn open(path: &Path, encoder: Option<&str>) -> Result<Self> {
        let file = File::open(path).map_err(|e| RecipeError::io(path, e))?;
        // Safety: the mapping is read-only, and index files are only ever replaced by rename (never
        // written in place) by this crate, so the mapped inode does not change under us. A file
        // truncated by someone else would fault on access; that is outside what we can defend.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| RecipeError::io(path, e))?;
        let len = map.len() as u64;
        let corrupt = |m: String| RecipeError::corrupt(path, m);
        if len < PREFIX_LEN || &map[..8] != MAGIC {
            return Err(corrupt("not a dishcam recipe index (bad magic)".into()));
        }
        let prefix_version = u32::from_le_bytes(map[8..12].try_into().unwrap());
        if prefix_version != VERSION {
            return Err(RecipeError::IndexVersion {
                path: path.into(),
                found: prefix_version,
                expected: VERSION,
            });
        }
        if len < PREFIX_LEN + TRAILER_LEN || &map[map.len() - 8..] != TRAILER_MAGIC {
            return Err(corrupt(format!(
                "truncated: the end-of-file marker is missing ({len} bytes)"
            )));
        }
        let t = &map[map.len() - TRAILER_LEN as usize..];
        let h_off = u64::from_le_bytes(t[0..8].try_into().unwrap());
        let h_len = u64::from_le_bytes(t[8..16].try_into().unwrap());
        let h_crc = u32::from_le_bytes(t[16..20].try_into().unwrap());
        if h_off
            .checked_add(h_len)
            .is_none_or(|e| e > len - TRAILER_LEN)
        {
            return Err(corrupt("header pointer out of range".into()));
        }
        let hbytes = &map[h_off as usize..(h_off + h_len) as usize];
        if crc32fast::hash(hbytes) != h_crc {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let header: IndexHeader =
            serde_json::from_slice(hbytes).map_err(|e| corrupt(format!("header: {e}")))?;
        if header.version != VERSION {
            return Err(RecipeError::IndexVersion {
                path: path.into(),
                found: header.version,
                expected: VERSION,
            });
        }
        if header.file_len != len {
            return Err(corrupt(format!(
                "file is {len} bytes, header says {}",
                header.file_len
            )));
        }
        if let Some(enc) = encoder {
            if enc != header.encoder {
                return Err(RecipeError::EncoderMismatch {
                    path: path.into(),
                    index_encoder: header.encoder.clone(),
                    pack_encoder: enc.into(),
                });
            }
        }
        let (d, n, nl) = (header.dim as u64, header.count, header.nlist as u64);
        let expect: BTreeMap<&str, Option<u64>> = [
            ("centroids", Some(nl * d * 4)),
            ("list_offsets", Some((nl + 1) * 8)),
            ("list_crcs", Some(nl * 4)),
            ("scales", Some(n * 4)),
            ("perm", Some(n * 4)),
            ("row_crcs", Some(n * 4)),
            ("meta_index", Some(n * 16)),
            ("ids_sorted", Some(n * 4)),
            ("dish_top", None),
            ("codes", Some(n * d)),
            ("vectors", Some(n * d * 4)),
            ("meta", None),
        ]
        .into_iter()
        .collect();
        let mut ranges = BTreeMap::new();
        for s in &header.sections {
            let Some(want) = expect.get(s.name.as_str()) else {
                return Err(corrupt(format!("unknown section {}", s.name)));
            };
            if want.is_some_and(|w| w != s.len)
                || s.offset % ALIGN != 0
                || s.offset.checked_add(s.len).is_none_or(|e| e > h_off)
            {
                return Err(corrupt(format!(
                    "section {} has a bad size or place",
                    s.name
                )));
            }
            let r = s.offset as usize..(s.offset + s.len) as usize;
            if !LAZY_SECTIONS.contains(&s.name.as_str())
                && crc32fast::hash(&map[r.clone()]) != s.crc32
            {
                return Err(corrupt(format!("section {} checksum mismatch", s.name)));
            }
            ranges.insert(s.name.clone(), r);
        }
        if let Some(missing) = SECTIONS.iter().find(|s| !ranges.contains_key(**s)) {
            return Err(corrupt(format!("section {missing} missing")));
        }
        let dish_top: BTreeMap<String, Vec<u32>> =
            serde_json::from_slice(&map[ranges["dish_top"].clone()])
                .map_err(|e| corrupt(format!("dish_top: {e}")))?;
        let idx = RecipeIndex {
            path: path.to_path_buf(),
            file,
            list_state: (0..header.nlist)
                .map(|_| AtomicU8::new(LIST_UNCHECKED))
                .collect(),
            map,
            header,
            ranges,
            dish_top,
        };
        let offs = idx.list_offsets()?;
        if offs.first() != Some(&0)
            || offs.last() != Some(&n)
            || offs.windows(2).any(|w| w[0] > w[1])
        {
            return Err(corrupt("list offsets are inconsistent".into()));
        }
        if idx.dish_top.values().flatten().any(|&o| o as u64 >= n)
            || idx.perm()?.iter().any(|&o| o as u64 >= n)
        {
            return Err(corrupt("recipe ordinal out of range".into()));
        }
        Ok(idx)
    }

    fn bytes(&self, name: &str) -> &[u8] {
        &self.map[self.ranges[name].clone()]
    }
    fn section<T: bytemuck::Pod>(&self, name: &str) -> Result<&[T]> {
        cast(&self.path, name, self.bytes(name))
    }
    fn list_offsets(&self) -> Result<&[u64]> {
        self.section("list_offsets")
    }
    fn perm(&self) -> Result<&[u32]> {
        self.section("perm")
    }

    /// The header.
    pub fn header(&self) -> &IndexHeader {
        &self.header
    }
    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Number of recipes.
    pub fn len(&self) -> usize {
        self.header.count as usize
    }
    /// True when the index holds no recipe.
    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }
    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.header.dim as usize
    }
    /// Text encoder identity the index was built with.
    pub fn encoder(&self) -> &str {
        &self.header.encoder
    }

    fn check_query(&self, q: &[f32]) -> Result<Vec<f32>> {
        if q.len() != self.dim() {
            return Err(RecipeError::Shape(format!(
                "query has {} values, index {} has dim {}",
                q.len(),
                self.path.display(),
                self.dim()
            )));
        }
        if q.iter().any(|v| !v.is_finite()) {
            return Err(RecipeError::Invalid(
                "query embedding contains NaN or infinity".into(),
            ));
        }
        let mut q = q.to_vec();
        kernels::normalise(&mut q);
        Ok(q)
    }

    /// Reads `buf.len()` bytes of the file at `offset`: a positioned read on Unix, so the big sections
    /// (codes, vectors) pass through the kernel's page cache without staying mapped into this process
    /// (its resident size stays bounded however many lists the queries touch); a copy from the map
    /// elsewhere.
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file
                .read_exact_at(buf, offset as u64)
                .map_err(|e| RecipeError::io(&self.path, e))
        }
        #[cfg(not(unix))]
        {
            buf.copy_from_slice(&self.map[offset..offset + buf.len()]);
            Ok(())
        }
    }

    /// Reads the codes of `list` into `buf` (resized); returns the list's first row. The list's crc is
    /// checked the first time it is read in this process.
    fn read_list(&self, list: usize, buf: &mut Vec<i8>) -> Result<usize> {
        let offs = self.list_offsets()?;
        let (a, b) = (offs[list] as usize, offs[list + 1] as usize);
        let d = self.dim();
        buf.resize((b - a) * d, 0);
        let base = self.ranges["codes"].start;
        self.read_at(base + a * d, bytemuck::cast_slice_mut(buf.as_mut_slice()))?;
        match self.list_state[list].load(Ordering::Relaxed) {
            LIST_OK => {}
            LIST_BAD => {
                return Err(RecipeError::corrupt(
                    &self.path,
                    format!("codes of list {list} checksum mismatch"),
                ))
            }
            _ => {
                let want = self.section::<u32>("list_crcs")?[list];
                let ok = crc32fast::hash(bytemuck::cast_slice(buf.as_slice())) == want;
                self.list_state[list].store(if ok { LIST_OK } else { LIST_BAD }, Ordering::Relaxed);
                if !ok {
                    return Err(RecipeError::corrupt(
                        &self.path,
                        format!("codes of list {list} checksum mismatch"),
                    ));
                }
            }
        }
        Ok(a)
    }

    /// Reads rows `rows.start..rows.end` of the f32 vectors into `buf`, checking each row's crc.
    fn read_vectors(&self, rows: Range<usize>, buf: &mut Vec<f32>) -> Result<()> {
        let d = self.dim();
        buf.resize(rows.len() * d, 0.0);
        self.read_at(
            self.ranges["vectors"].start + rows.start * d * 4,
            bytemuck::cast_slice_mut(buf.as_mut_slice()),
        )?;
        let crcs: &[u32] = self.section("row_crcs")?;
        for (i, row) in buf.chunks_exact(d.max(1)).enumerate() {
            if crc32fast::hash(bytemuck::cast_slice(row)) != crcs[rows.start + i] {
                return Err(RecipeError::corrupt(
                    &self.path,
                    format!("vector row {} checksum mismatch", rows.start + i),
                ));
            }
        }
        Ok(())
    }

    /// Approximate nearest recipes: `(ordinal, exact cosine)` best first, `k` at most, no filtering.
    /// This is the fast path (see the module docs).
    pub fn search_ordinals(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Result<Vec<(u32, f32)>> {
        let q = self.check_query(query)?;
        let nl = self.header.nlist as usize;
        let nprobe = params
            .nprobe
            .unwrap_or(self.header.params.nprobe)
            .clamp(1, nl.max(1));
        let rerank = params.rerank.unwrap_or(self.header.params.rerank).max(k);
        let d = self.dim();
        let mut qi8 = vec![0i8; d];
        kernels::quantise_i8(&q, &mut qi8);

        let cents: &[f32] = self.section("centroids")?;
        let mut lists: Vec<(f32, usize)> = cents
            .chunks_exact(d)
            .map(|c| kernels::dot_f32(&q, c))
            .zip(0..)
            .collect();
        if nprobe < lists.len() {
            lists.select_nth_unstable_by(nprobe - 1, |a, b| b.0.total_cmp(&a.0));
            lists.truncate(nprobe);
        }
        let scales: &[f32] = self.section("scales")?;
        let mut heap: BinaryHeap<Reverse<(OrdF32, u32)>> = BinaryHeap::with_capacity(rerank + 1);
        let mut dots: Vec<i32> = Vec::new();
        let mut codes: Vec<i8> = Vec::new();
        for &(_, list) in &lists {
            let first = self.read_list(list, &mut codes)?;
            dots.resize(codes.len() / d.max(1), 0);
            kernels::scan_i8(&qi8, &codes, &mut dots);
            for (i, &dot) in dots.iter().enumerate() {
                let row = first + i;
                let s = dot as f32 * scales[row];
                if heap.len() < rerank {
                    heap.push(Reverse((OrdF32(s), row as u32)));
                } else if s > heap.peek().map_or(f32::NEG_INFINITY, |m| m.0 .0 .0) {
                    heap.pop();
                    heap.push(Reverse((OrdF32(s), row as u32)));
                }
            }
        }
        let perm = self.perm()?;
        let mut rows: Vec<u32> = heap.into_iter().map(|Reverse((_, row))| row).collect();
        rows.sort_unstable();
        let mut out = Vec::with_capacity(rows.len());
        let mut v = Vec::with_capacity(d);
        for row in rows {
            let row = row as usize;
            self.read_vectors(row..row + 1, &mut v)?;
            out.push((perm[row], kernels::dot_f32(&q, &v)));
        }
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        Ok(out)
    }

    /// Exact nearest recipes by brute force over every f32 vector: the reference for recall.
    pub fn exact_ordinals(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>> {
        let q = self.check_query(query)?;
        let perm = self.perm()?;
        let mut heap: BinaryHeap<Reverse<(OrdF32, u32)>> = BinaryHeap::with_capacity(k + 1);
        let d = self.dim();
        let mut buf = Vec::new();
        for start in (0..self.len()).step_by(4096) {
            let end = (start + 4096).min(self.len());
            self.read_vectors(start..end, &mut buf)?;
            for (i, v) in buf.chunks_exact(d).enumerate() {
                let s = kernels::dot_f32(&q, v);
                if heap.len() < k {
                    heap.push(Reverse((OrdF32(s), perm[start + i])));
                } else if s > heap.peek().map_or(f32::NEG_INFINITY, |m| m.0 .0 .0) {
                    heap.pop();
                    heap.push(Reverse((OrdF32(s), perm[start + i])));
                }
            }
        }
        let mut out: Vec<(u32, f32)> = heap.into_iter().map(|Reverse((s, o))| (o, s.0)).collect();
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Top `k` recipes for a query embedding, skipping recipes the filter excludes. Over-fetches: when
    /// filtering leaves fewer than `k`, the probe and re-rank counts double until `k` survive or the
    /// whole index has been searched.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        exclude: &ExcludeFilter,
        params: &SearchParams,
    ) -> Result<Vec<Hit>> {
        let nl = self.header.nlist as usize;
        let mut nprobe = params
            .nprobe
            .unwrap_or(self.header.params.nprobe)
            .clamp(1, nl.max(1));
        let mut rerank = params.rerank.unwrap_or(self.header.params.rerank).max(k);
        if !exclude.is_empty() {
            rerank = rerank.max(4 * k);
        }
        loop {
            let cands = self.search_ordinals(
                query,
                rerank,
                &SearchParams {
                    nprobe: Some(nprobe),
                    rerank: Some(rerank),
                },
            )?;
            let hits = self.filter_hits(&cands, k, exclude)?;
            if hits.len() >= k || (nprobe >= nl && rerank >= self.len()) {
                return Ok(hits);
            }
            nprobe = (nprobe * 2).min(nl);
            rerank = (rerank * 2).min(self.len().max(1));
        }
    }

    /// Like [`RecipeIndex::search`] but exact (brute force), for reference and tests.
    pub fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        exclude: &ExcludeFilter,
    ) -> Result<Vec<Hit>> {
        let cands = self.exact_ordinals(query, if exclude.is_empty() { k } else { self.len() })?;
        self.filter_hits(&cands, k, exclude)
    }

    fn filter_hits(
        &self,
        cands: &[(u32, f32)],
        k: usize,
        exclude: &ExcludeFilter,
    ) -> Result<Vec<Hit>> {
        let mut hits = Vec::with_capacity(k);
        for &(o, s) in cands {
            if hits.len() == k {
                break;
            }
            let m = self.meta(o)?;
            if exclude.excluded_by(&m.ingredients).is_none() {
                hits.push(Hit {
                    ordinal: o,
                    id: m.id,
                    title: m.title,
                    score: s,
                });
            }
        }
        Ok(hits)
    }

    /// What the index keeps about recipe `ordinal`.
    pub fn meta(&self, ordinal: u32) -> Result<RecipeMeta> {
        let idx: &[u64] = self.section("meta_index")?;
        let i = ordinal as usize * 2;
        let e = *idx.get(i + 1).ok_or_else(|| {
            RecipeError::Invalid(format!("recipe ordinal {ordinal} out of range"))
        })?;
        let (off, len, crc) = (
            idx[i] as usize,
            (e & 0xffff_ffff) as usize,
            (e >> 32) as u32,
        );
        let r = self.ranges["meta"].clone();
        if off.checked_add(len).is_none_or(|e| e > r.len()) {
            return Err(RecipeError::corrupt(
                &self.path,
                format!("meta of recipe {ordinal} out of range"),
            ));
        }
        let mut bytes = vec![0u8; len];
        self.read_at(r.start + off, &mut bytes)?;
        let bytes = bytes.as_slice();
        if crc32fast::hash(bytes) != crc {
            return Err(RecipeError::corrupt(
                &self.path,
                format!("meta of recipe {ordinal} checksum mismatch"),
            ));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| RecipeError::corrupt(&self.path, format!("meta of recipe {ordinal}: {e}")))
    }

    /// The ordinal of the recipe with this id (binary search over `ids_sorted`).
    pub fn ordinal_of(&self, id: &str) -> Result<Option<u32>> {
        let sorted: &[u32] = self.section("ids_sorted")?;
        let (mut lo, mut hi) = (0usize, sorted.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let m = self.meta(sorted[mid])?;
            match m.id.as_str().cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(sorted[mid])),
            }
        }
        Ok(None)
    }

    /// The store files, resolved against the index's directory.
    pub fn store_paths(&self) -> Vec<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        self.header.stores.iter().map(|s| dir.join(s)).collect()
    }

    /// The full recipe with this id, read from its JSONL store at the offset the index recorded (the
    /// store is scanned if it changed since the build).
    pub fn show(&self, id: &str) -> Result<Recipe> {
        let o = self
            .ordinal_of(id)?
            .ok_or_else(|| RecipeError::NotFound(id.into()))?;
        let m = self.meta(o)?;
        let Some(store) = m.store else {
            return Err(RecipeError::Invalid(format!(
                "recipe {id} is indexed but was not built from a recipe store"
            )));
        };
        let path = self
            .store_paths()
            .get(store as usize)
            .cloned()
            .ok_or_else(|| {
                RecipeError::corrupt(
                    &self.path,
                    format!("store {store} of recipe {id} not listed"),
                )
            })?;
        if let Ok(r) = read_jsonl_at(&path, m.offset) {
            if r.id == id {
                return Ok(r);
            }
        }
        let mut found = None;
        for_each_jsonl(&path, |_, r| {
            if found.is_none() && r.id == id {
                found = Some(r);
            }
            Ok(())
        })?;
        found.ok_or_else(|| {
            RecipeError::NotFound(format!(
                "{id} (not in {} any more; rebuild the index with `{}`)",
                path.display(),
                crate::REBUILD_COMMAND
            ))
        })
    }

    /// Precomputed top recipes for a Food-101 class (`apple_pie`), as ordinals, best first.
    pub fn dish_ordinals(&self, class: &str) -> Option<&[u32]> {
        self.dish_top.get(class).map(Vec::as_slice)
    }

    /// Precomputed top recipes for a Food-101 class, skipping excluded ones; `k` at most. Scores are
    /// 0 (the list is precomputed).
    pub fn dish_recipes(&self, class: &str, k: usize, exclude: &ExcludeFilter) -> Result<Vec<Hit>> {
        let cands: Vec<(u32, f32)> = self
            .dish_ordinals(class)
            .unwrap_or(&[])
            .iter()
            .map(|&o| (o, 0.0))
            .collect();
        self.filter_hits(&cands, k, exclude)
    }

    /// Checks every section in full (a few seconds for a million recipes), reading in chunks.
    pub fn verify(&self) -> Result<()> {
        let mut buf = vec![0u8; 8 << 20];
        for s in &self.header.sections {
            let mut h = crc32fast::Hasher::new();
            let r = self.ranges[&s.name].clone();
            for start in r.clone().step_by(buf.len()) {
                let chunk = &mut buf[..(r.end - start).min(8 << 20)];
                self.read_at(start, chunk)?;
                h.update(chunk);
            }
            if h.finalize() != s.crc32 {
                return Err(RecipeError::corrupt(
                    &self.path,
                    format!("section {} checksum mismatch", s.name),
                ));
            }
        }
        let mut codes = Vec::new();
        for l in 0..self.header.nlist as usize {
            self.read_list(l, &mut codes)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}
