//! `--backend auto`: the fastest engine on this machine for this pack, by measurement.
//!
//! Each CPU engine whose library opens (onnxruntime, OpenVINO) runs the pack's image encoder, the
//! per-frame cost that dominates every command, a few times on a grey frame; the lowest median
//! wins. The result is cached in `$DISHCAM_HOME/cache/auto-backend.json` under a key of the pack
//! manifest's hash, the precision, the thread count, both pinned library versions (and any
//! override path), and the CPU model, so it is measured once per machine and configuration.
//! When neither library opens, tract (always built) runs, and the note says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dishcam_models::pack::{write_atomic, Home, Pack};
use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend, BackendChoice, BackendError, BackendKind};
use crate::encoder::{ImageEncoder, LoadOptions};

/// The engines `auto` measures, in the order it prefers on a tie.
pub const CANDIDATES: [BackendKind; 2] = [BackendKind::Onnxruntime, BackendKind::Openvino];

/// Timed runs per engine after [`WARMUP`] untimed ones (a median of 15 runs of a ~5-20 ms
/// encoder: well under a second per engine).
const RUNS: usize = 15;
const WARMUP: usize = 3;

/// What `auto` chose, and the measurements behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub backend: String,
    /// Median image-encoder time per engine, in ms; an engine that failed to open or run has
    /// `None` and its reason in `unavailable`.
    pub median_ms: BTreeMap<String, f64>,
    #[serde(default)]
    pub unavailable: BTreeMap<String, String>,
    /// Time to load (and, for OpenVINO, compile) the image encoder per engine, in ms: what a
    /// one-photo command pays before its first answer.
    #[serde(default)]
    pub load_ms: BTreeMap<String, f64>,
    /// When it was measured (an HTTP date, UTC).
    pub measured: String,
    /// The configuration the measurement was made under (see [`cache_key`]).
    pub key: String,
}

impl Choice {
    /// One line for the user: what was chosen and why.
    pub fn note(&self, cached: bool) -> String {
        let mut others: Vec<String> = self
            .median_ms
            .iter()
            .filter(|(k, _)| **k != self.backend)
            .map(|(k, v)| format!("{k} {v:.2} ms{}", self.load_of(k)))
            .collect();
        others.extend(self.unavailable.keys().map(|k| format!("{k} unavailable")));
        let mine = self
            .median_ms
            .get(&self.backend)
            .map_or(String::new(), |v| {
                format!(" {v:.2} ms{}", self.load_of(&self.backend))
            });
        let rest = if others.is_empty() {
            String::new()
        } else {
            format!(" vs {}", others.join(", "))
        };
        format!(
            "backend auto: {}{mine}{rest} (median image-encoder run, {}; {} {})",
            self.backend,
            self.key_summary(),
            if cached { "measured" } else { "measured now," },
            if cached {
                format!("{}, cached", self.measured)
            } else {
                "cached for next time".to_string()
            }
        )
    }

    fn load_of(&self, backend: &str) -> String {
        self.load_ms
            .get(backend)
            .map_or(String::new(), |l| format!(" (load {l:.0} ms)"))
    }

    fn key_summary(&self) -> String {
        // The key reads "pack=…;precision=…;threads=…;…": show precision and threads.
        self.key
            .split(';')
            .filter(|p| p.starts_with("precision=") || p.starts_with("threads="))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The cache key: everything that changes which engine is faster.
pub fn cache_key(pack: &Pack, opts: &LoadOptions) -> String {
    let env = |v: &str| std::env::var(v).unwrap_or_default();
    format!(
        "{};precision={};threads={};onnxruntime={}{};openvino={}{};cpu={}",
        pack_key(pack),
        opts.precision,
        opts.session
            .threads
            .map_or("default".to_string(), |t| t.to_string()),
        backend::onnxruntime::ORT_VERSION,
        override_suffix(&env("ORT_DYLIB_PATH")),
        backend::openvino::OPENVINO_VERSION,
        override_suffix(&env("DISHCAM_OPENVINO_LIB")),
        cpu_model(),
    )
}

fn override_suffix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("@{path}")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn cache_file(home: &Home) -> PathBuf {
    home.cache().join("auto-backend.json")
}

/// The cached choice for `key`, if one was measured.
pub fn cached(home: &Home, key: &str) -> Option<Choice> {
    read_cache(&cache_file(home)).remove(key)
}

/// Every cached choice for this pack (any precision or thread count), for `models info`.
pub fn cached_for_pack(home: &Home, pack: &Pack) -> Vec<Choice> {
    let prefix = pack_key(pack);
    read_cache(&cache_file(home))
        .into_values()
        .filter(|c| c.key.split(';').next() == Some(prefix.as_str()))
        .collect()
}

fn pack_key(pack: &Pack) -> String {
    format!(
        "pack={}@{}",
        pack.manifest.name,
        &pack.manifest_sha256[..pack.manifest_sha256.len().min(16)]
    )
}

fn read_cache(path: &Path) -> BTreeMap<String, Choice> {
    // A missing or unreadable cache is measured again, never an error: it is derived data.
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn store(home: &Home, choice: &Choice) -> std::io::Result<()> {
    let path = cache_file(home);
    let mut all = read_cache(&path);
    all.insert(choice.key.clone(), choice.clone());
    let json = serde_json::to_vec_pretty(&all).expect("the cache serialises");
    write_atomic(&path, &json)
}

/// Decides among `candidates` given each one's measurement (`Err` = unavailable): the lowest
/// median wins, ties go to the earlier candidate; `None` when none could be measured.
pub fn decide(
    key: String,
    measured: Vec<(BackendKind, Result<Timing, String>)>,
    date: String,
) -> Option<Choice> {
    let mut median_ms = BTreeMap::new();
    let mut load_ms = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    let mut best: Option<(BackendKind, Duration)> = None;
    for (kind, m) in measured {
        match m {
            Ok(Timing { load, median: d }) => {
                median_ms.insert(kind.to_string(), d.as_secs_f64() * 1e3);
                load_ms.insert(kind.to_string(), load.as_secs_f64() * 1e3);
                if best.is_none_or(|(_, b)| d < b) {
                    best = Some((kind, d));
                }
            }
            Err(why) => {
                unavailable.insert(kind.to_string(), why);
            }
        }
    }
    best.map(|(kind, _)| Choice {
        backend: kind.to_string(),
        median_ms,
        unavailable,
        load_ms,
        measured: date,
        key,
    })
}

/// One engine's measurement: the image encoder's load time and median run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub load: Duration,
    pub median: Duration,
}

/// Load time and median run of the pack's image encoder on `backend` (see [`RUNS`]).
pub fn time_image_encoder(
    pack: &Pack,
    backend: &dyn Backend,
    opts: &LoadOptions,
) -> Result<Timing, String> {
    let t = Instant::now();
    let mut enc = ImageEncoder::load(pack, backend, opts, &[]).map_err(|e| e.to_string())?;
    let load = t.elapsed();
    enc.input_mut().fill(0.0);
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let t = Instant::now();
        enc.run_buffered().map_err(|e| e.to_string())?;
        if i >= WARMUP {
            times.push(t.elapsed());
        }
    }
    times.sort();
    Ok(Timing {
        load,
        median: times[times.len() / 2],
    })
}

/// Opens the engine `auto` picks for `pack` under `opts`: the cached choice when there is one
/// (and it still opens), else a fresh measurement, stored in `home`'s cache. Returns the backend
/// and the one-line note for the user.
pub fn open_auto(
    pack: &Pack,
    home: Option<&Home>,
    opts: &LoadOptions,
) -> Result<(Box<dyn Backend>, String), BackendError> {
    let key = cache_key(pack, opts);
    if let Some(choice) = home.and_then(|h| cached(h, &key)) {
        if let Ok(kind) = choice.backend.parse::<BackendKind>() {
            if let Ok(b) = backend::backend(kind) {
                return Ok((b, choice.note(true)));
            }
        }
    }
    let mut opened: Vec<(BackendKind, Box<dyn Backend>)> = Vec::new();
    let mut measured = Vec::new();
    for kind in CANDIDATES {
        match backend::backend(kind) {
            Ok(b) => {
                let t = time_image_encoder(pack, b.as_ref(), opts);
                if t.is_ok() {
                    opened.push((kind, b));
                }
                measured.push((kind, t));
            }
            Err(e) => measured.push((kind, Err(e.to_string()))),
        }
    }
    let why: Vec<String> = measured
        .iter()
        .filter_map(|(k, m)| m.as_ref().err().map(|e| format!("{k}: {e}")))
        .collect();
    let Some(choice) = decide(key, measured, now()) else {
        return Ok((
            Box::new(backend::tract::TractBackend),
            format!("backend auto: tract ({})", why.join("; ")),
        ));
    };
    // A cache that cannot be written costs a re-measurement next time, not the run.
    let stored = home.map(|h| store(h, &choice));
    let mut note = choice.note(false);
    if let Some(Err(e)) = stored {
        note.push_str(&format!(" (not cached: {e})"));
    }
    let b = opened
        .into_iter()
        .find(|(k, _)| k.as_str() == choice.backend)
        .map(|(_, b)| b)
        .expect("the chosen engine was opened and measured");
    Ok((b, note))
}

/// Opens what the user chose: `auto` with a pack measures (or recalls) the faster engine for it
/// and always returns a note; `auto` without one (`pack` is `Err`: nothing to time) takes
/// onnxruntime, else tract, with a note only when it fell back; a named backend opens as is.
pub fn open_choice<E>(
    choice: BackendChoice,
    pack: Result<Pack, E>,
    home: Option<&Home>,
    opts: &LoadOptions,
) -> Result<(Box<dyn Backend>, Option<String>), BackendError> {
    match (choice, pack) {
        (BackendChoice::Auto, Ok(pack)) => {
            open_auto(&pack, home, opts).map(|(b, note)| (b, Some(note)))
        }
        (choice, _) => backend::open(choice),
    }
}

/// `models info`'s lines on `auto`: one per cached choice for this pack, or why there is none.
pub fn describe_cached(home: &Home, pack: &Pack) -> Vec<String> {
    let choices = cached_for_pack(home, pack);
    if choices.is_empty() {
        return vec![
            "backend auto: not measured yet (the first command run with --backend auto measures it)"
                .into(),
        ];
    }
    choices.iter().map(|c| c.note(true)).collect()
}

/// Now, as an HTTP date (UTC), e.g. "Mon, 07 Dec 2026 14:40:00 GMT".
fn now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Result<Timing, String> {
        Ok(Timing {
            load: Duration::from_millis(100 * v),
            median: Duration::from_millis(v),
        })
    }

    #[test]
    fn the_lowest_median_wins_and_unavailable_engines_are_named() {
        let c = decide(
            "precision=int8;threads=1".into(),
            vec![
                (BackendKind::Onnxruntime, ms(14)),
                (BackendKind::Openvino, ms(11)),
            ],
            "2026-12-07".into(),
        )
        .unwrap();
        assert_eq!(c.backend, "openvino");
        let note = c.note(false);
        assert!(
            note.contains(
                "openvino 11.00 ms (load 1100 ms) vs onnxruntime 14.00 ms (load 1400 ms)"
            ),
            "{note}"
        );
        assert!(note.contains("precision=int8, threads=1"), "{note}");

        let c = decide(
            "k".into(),
            vec![
                (BackendKind::Onnxruntime, ms(9)),
                (BackendKind::Openvino, Err("library not found".into())),
            ],
            "d".into(),
        )
        .unwrap();
        assert_eq!(c.backend, "onnxruntime");
        assert!(c.note(true).contains("openvino unavailable"));
    }

    #[test]
    fn a_tie_goes_to_the_first_candidate_and_nothing_measured_is_none() {
        let c = decide(
            "k".into(),
            vec![
                (BackendKind::Onnxruntime, ms(10)),
                (BackendKind::Openvino, ms(10)),
            ],
            "d".into(),
        )
        .unwrap();
        assert_eq!(c.backend, "onnxruntime");
        assert!(decide(
            "k".into(),
            vec![(BackendKind::Onnxruntime, Err("x".into()))],
            "d".into()
        )
        .is_none());
    }

    #[test]
    fn the_cache_keeps_one_choice_per_key_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(home.cache()).unwrap();
        std::fs::write(cache_file(&home), b"not json").unwrap();
        assert!(cached(&home, "a").is_none());
        let a = decide("a".into(), vec![(BackendKind::Openvino, ms(3))], "d".into()).unwrap();
        let b = decide(
            "b".into(),
            vec![(BackendKind::Onnxruntime, ms(3))],
            "d".into(),
        )
        .unwrap();
        store(&home, &a).unwrap();
        store(&home, &b).unwrap();
        assert_eq!(cached(&home, "a").unwrap().backend, "openvino");
        assert_eq!(cached(&home, "b").unwrap().backend, "onnxruntime");
        assert!(cached(&home, "c").is_none());
    }

    #[test]
    fn auto_without_a_pack_opens_as_before_and_a_named_backend_opens_as_is() {
        let opts = LoadOptions::default();
        // tract is always built: a named backend opens with no note.
        let (b, note) = open_choice(
            BackendChoice::Only(BackendKind::Tract),
            Err::<Pack, ()>(()),
            None,
            &opts,
        )
        .unwrap();
        assert_eq!((b.kind(), note), (BackendKind::Tract, None));
        // No pack to time: onnxruntime when its library loads, else tract with the reason.
        let (b, note) = open_choice(BackendChoice::Auto, Err::<Pack, ()>(()), None, &opts).unwrap();
        match b.kind() {
            BackendKind::Onnxruntime => assert_eq!(note, None),
            kind => {
                assert_eq!(kind, BackendKind::Tract);
                assert!(note.unwrap().contains("using tract"));
            }
        }
    }
}
