//! Embedding many photos or texts for `teach`, `eval` and the recipe index: one encoder per
//! worker thread (each single-threaded, which is faster than one multi-threaded encoder at batch
//! 1), progress reported to the caller, and an on-disk cache so a second run over the same files
//! skips the encoder. Photos go through [`crate::PhotoEncoder`], the photo half of the dish chain.
//!
//! One cache file per encoder configuration (the encoder section of the merged manifest, with
//! file hashes and preprocessing; backend; precision; the requested output; the photo preparation)
//! holds embeddings by input (16 bytes of sha256 of path, size and modification time, or of the
//! text): safetensors `keys` U8 [n, 16], `embeddings` F32 [n, dim], `present` U8 [n] (0 for a
//! photo that did not decode). New inputs are added and the file is rewritten atomically; a
//! damaged file is ignored and rebuilt.

use std::collections::HashMap;
use std::path::PathBuf;

use dishcam_models::pack::write_atomic;
use dishcam_models::{Home, Pack, PackError};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::dataset::LabelledImage;
use crate::dish::PhotoEncoder;
use crate::error::RuntimeError;
use crate::{Backend, LoadOptions, TextEncoder};
use dishcam_capture::decode::{decode_file, DecodeOptions};
use dishcam_models::manifest::PhotoPreparation;

/// Progress of a long job, reported by the library and shown by the caller (the CLI draws a
/// bar; tests and servers ignore it).
pub trait Progress: Sync {
    /// A job of `total` items called `what` starts.
    fn start(&self, _total: u64, _what: &str) {}
    /// `n` more items are done.
    fn advance(&self, _n: u64) {}
    /// The job is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// Embeds inputs with the pack's encoders.
pub struct Embedder<'a> {
    pub pack: &'a Pack,
    pub backend: &'a dyn Backend,
    /// Options for each worker's encoder (single-threaded).
    pub opts: LoadOptions,
    pub workers: usize,
    pub progress: &'a dyn Progress,
    /// Cache directory; `None` disables the cache.
    pub cache: Option<PathBuf>,
}

/// The default cache directory: `$DISHCAM_HOME/cache/embeddings`.
pub fn default_cache_dir() -> Result<PathBuf, PackError> {
    Ok(Home::from_env()?.cache().join("embeddings"))
}

impl Embedder<'_> {
    /// Embeddings of photos (`None` where a photo could not be decoded), each prepared as
    /// `prepare` says first (a head's photo preparation). With `output`, that image-encoder
    /// output (e.g. a head's logits) instead of the embedding.
    pub fn images(
        &self,
        items: &[LabelledImage],
        output: Option<&str>,
        prepare: Option<PhotoPreparation>,
        decode: &DecodeOptions,
    ) -> Result<Vec<Option<Vec<f32>>>, RuntimeError> {
        // `v2`: the resampling of `dishcam_imageproc::prepare` (Pillow's arithmetic since v2);
        // bump it whenever the preparation's pixels change, so cached embeddings are redone.
        let prepared = prepare.map_or("none".to_string(), |p| format!("v2:{p:?}"));
        let base = self.key_base(
            "image",
            output,
            &format!("prepare={prepared};max_pixels={}", decode.max_pixels),
        )?;
        let keys: Vec<ItemKey> = items
            .iter()
            .map(|item| {
                let meta = std::fs::metadata(&item.path).ok();
                let mtime = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                // The real path: a photo reached through a symlinked folder is the same photo.
                let path = std::fs::canonicalize(&item.path).unwrap_or_else(|_| item.path.clone());
                item_key(format!(
                    "{}\0{}\0{mtime}",
                    path.display(),
                    meta.map_or(0, |m| m.len())
                ))
            })
            .collect();
        self.cached(&base, &keys, |todo: &[usize]| {
            let todo: Vec<&LabelledImage> = todo.iter().map(|&i| &items[i]).collect();
            parallel_map(
                &todo,
                self.workers,
                self.progress,
                "photos",
                || PhotoEncoder::load(self.pack, self.backend, &self.opts, output, prepare),
                |enc, item| match decode_file(&item.path, decode) {
                    Ok(img) => Ok(Some(enc.embed(&img)?)),
                    Err(e) => {
                        log::warn!("skipped: {e}");
                        Ok(None)
                    }
                },
            )
        })
    }

    /// Sentence embeddings of texts.
    pub fn texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let base = self.key_base("text", None, "")?;
        let keys: Vec<ItemKey> = texts.iter().map(|t| item_key(t.to_string())).collect();
        let out = self.cached(&base, &keys, |todo: &[usize]| {
            let todo: Vec<&str> = todo.iter().map(|&i| texts[i]).collect();
            parallel_map(
                &todo,
                self.workers,
                self.progress,
                "texts",
                || TextEncoder::load(self.pack, self.backend, &self.opts),
                |enc, text| Ok(Some(enc.encode(text)?)),
            )
        })?;
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The cache file for one encoder configuration.
    fn key_base(
        &self,
        what: &str,
        output: Option<&str>,
        extra: &str,
    ) -> Result<String, RuntimeError> {
        let m = &self.pack.manifest;
        let encoder = match what {
            "image" => serde_json::to_string(&m.image_encoder),
            _ => serde_json::to_string(&m.text_encoder),
        }
        .expect("a manifest always serialises");
        let mut h = Sha256::new();
        h.update(format!(
            "dishcam-embeddings/2;{what};{encoder};{};{};{output:?};{extra}",
            self.backend.kind(),
            self.opts.precision
        ));
        Ok(format!("{what}-{}", &hex::encode(h.finalize())[..24]))
    }

    /// Embeddings of every key: from the cache file of this configuration where present, the
    /// rest computed by `compute` (given the positions to compute) and added to the file.
    fn cached(
        &self,
        base: &str,
        keys: &[ItemKey],
        compute: impl FnOnce(&[usize]) -> Result<Vec<Option<Vec<f32>>>, RuntimeError>,
    ) -> Result<Vec<Option<Vec<f32>>>, RuntimeError> {
        let Some(dir) = &self.cache else {
            return compute(&(0..keys.len()).collect::<Vec<_>>());
        };
        let path = dir.join(format!("{base}.safetensors"));
        let mut known: HashMap<ItemKey, Option<Vec<f32>>> = match std::fs::read(&path) {
            Ok(bytes) => read_cache(&bytes).unwrap_or_else(|| {
                log::warn!("{}: damaged cache file, recomputing", path.display());
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        let todo: Vec<usize> = (0..keys.len())
            .filter(|&i| !known.contains_key(&keys[i]))
            .collect();
        log::info!(
            "{} of {} embeddings from cache {}",
            keys.len() - todo.len(),
            keys.len(),
            path.display()
        );
        if !todo.is_empty() {
            let fresh = compute(&todo)?;
            for (&i, e) in todo.iter().zip(fresh) {
                known.insert(keys[i], e);
            }
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| write_atomic(&path, &write_cache(&known)));
            if let Err(e) = written {
                log::warn!("{}: cannot write the embedding cache: {e}", path.display());
            }
        }
        Ok(keys
            .iter()
            .map(|k| known.get(k).cloned().flatten())
            .collect())
    }
}

/// 16 bytes of sha256 of an input's identity (path, size and mtime; or the text).
type ItemKey = [u8; 16];

fn item_key(identity: String) -> ItemKey {
    let d = Sha256::digest(identity.as_bytes());
    d[..16].try_into().expect("16 bytes")
}

/// Maps `f` over `items` on `workers` threads, each with its own state from `init` (an
/// encoder); results keep the input order. `progress` hears of each item done.
pub fn parallel_map<T: Sync, S, R: Send, E: Send>(
    items: &[T],
    workers: usize,
    progress: &dyn Progress,
    what: &str,
    init: impl Fn() -> Result<S, E> + Sync,
    f: impl Fn(&mut S, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let workers = workers.max(1).min(items.len().max(1));
    let chunk = items.len().div_ceil(workers).max(1);
    progress.start(items.len() as u64, what);
    let results: Vec<Result<Vec<R>, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let (init, f) = (&init, &f);
                s.spawn(move || -> Result<Vec<R>, E> {
                    let mut state = init()?;
                    part.iter()
                        .map(|item| {
                            let r = f(&mut state, item);
                            progress.advance(1);
                            r
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect()
    });
    progress.finish();
    let mut all = Vec::with_capacity(items.len());
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

fn write_cache(known: &HashMap<ItemKey, Option<Vec<f32>>>) -> Vec<u8> {
    let dim = known.values().flatten().map(Vec::len).next().unwrap_or(0);
    let mut entries: Vec<(&ItemKey, &Option<Vec<f32>>)> = known.iter().collect();
    entries.sort_by_key(|(k, _)| **k);
    let n = entries.len();
    let mut keys = Vec::with_capacity(n * 16);
    let mut data = Vec::with_capacity(n * dim * 4);
    let mut present = Vec::with_capacity(n);
    for (k, e) in entries {
        keys.extend_from_slice(k);
        match e {
            Some(e) if e.len() == dim => {
                data.extend(e.iter().flat_map(|x| x.to_le_bytes()));
                present.push(1u8);
            }
            _ => {
                data.extend(std::iter::repeat_n(0u8, dim * 4));
                present.push(0);
            }
        }
    }
    let tensors = [
        (
            "keys",
            TensorView::new(Dtype::U8, vec![n, 16], &keys).expect("shape fits"),
        ),
        (
            "embeddings",
            TensorView::new(Dtype::F32, vec![n, dim], &data).expect("shape fits"),
        ),
        (
            "present",
            TensorView::new(Dtype::U8, vec![n], &present).expect("shape fits"),
        ),
    ];
    safetensors::serialize(tensors, None).expect("in-memory serialisation")
}

fn read_cache(bytes: &[u8]) -> Option<HashMap<ItemKey, Option<Vec<f32>>>> {
    let st = SafeTensors::deserialize(bytes).ok()?;
    let k = st.tensor("keys").ok()?;
    let e = st.tensor("embeddings").ok()?;
    let p = st.tensor("present").ok()?;
    let n = *k.shape().first()?;
    let dim = *e.shape().get(1)?;
    if e.dtype() != Dtype::F32 || k.shape() != [n, 16] || e.shape() != [n, dim] || p.shape() != [n]
    {
        return None;
    }
    let rows = e.data().chunks_exact((dim * 4).max(1));
    Some(
        k.data()
            .chunks_exact(16)
            .zip(p.data())
            .zip(rows.chain(std::iter::repeat(&[][..])))
            .map(|((key, ok), row)| {
                let v = (*ok == 1).then(|| {
                    row.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .collect()
                });
                (key.try_into().expect("16 bytes"), v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_keeps_gaps() {
        let v: HashMap<ItemKey, Option<Vec<f32>>> = [
            (item_key("a".into()), Some(vec![1.0, 2.0])),
            (item_key("b".into()), None),
            (item_key("c".into()), Some(vec![-3.5, 0.25])),
        ]
        .into_iter()
        .collect();
        assert_eq!(read_cache(&write_cache(&v)), Some(v));
        assert_eq!(read_cache(b"not a cache"), None);
    }

    #[test]
    fn parallel_map_keeps_order_and_reports_errors() {
        let items: Vec<usize> = (0..10).collect();
        let out = parallel_map(
            &items,
            3,
            &Silent,
            "items",
            || Ok::<_, String>(100),
            |s, i| Ok(*s + i),
        )
        .unwrap();
        assert_eq!(out, (100..110).collect::<Vec<_>>());
        let err = parallel_map(
            &items,
            2,
            &Silent,
            "items",
            || Ok(()),
            |_, i| {
                if *i == 7 {
                    return Err(format!("item {i} failed"));
                }
                Ok(*i)
            },
        )
        .unwrap_err();
        assert!(err.contains("item 7"));
    }
}
