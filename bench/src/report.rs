//! The bench report: statistics per configuration and column, the goals as ratios from the
//! same run, as JSON (schema `dishcam.bench/1`) and Markdown.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use dishcam_board::{Summary, Unavailable};
use dishcam_eval::loadgen::{early_stopping_estimate, percentile, Verdict};
use dishcam_models::Pack;
use dishcam_runtime::backend::BackendKind;
use serde_json::{json, Value};

use crate::engine::{Column, Engine};
use crate::run::{Cell, Config, Measured, Scenario, ScenarioRun, Skipped, Throughput};
use crate::startup::Startup;

pub struct Report<'a> {
    pub started: SystemTime,
    pub pack: &'a Pack,
    pub photo_source: String,
    pub photos: usize,
    pub configs: &'a [Config],
    pub skipped: &'a [Skipped],
    pub engines: &'a [Engine],
    pub baseline: usize,
    pub runs: &'a [ScenarioRun],
    pub startup: &'a [Startup],
    pub wall: Duration,
    pub cpu_seconds: f64,
    pub peak_rss_mb: Option<f64>,
    pub board: &'a Summary,
    pub board_unavailable: &'a [Unavailable],
    pub inferences: u64,
    pub quick: bool,
    /// Per configuration: top-1 on the photos whose folder names a class (`None`: no labels).
    pub accuracy: &'a [Option<TopOne>],
    /// The server scenario's p99 bound and arrival rate.
    pub server_latency_ms: f64,
    pub server_qps: f64,
}

/// Top-1 of one configuration's per-frame path on the labelled photos, each photo once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopOne {
    pub photos: usize,
    pub correct: usize,
    /// Photos the no-dish check answered "no dish" (counted wrong).
    pub no_dish: usize,
}

impl TopOne {
    pub fn rate(&self) -> f64 {
        self.correct as f64 / self.photos.max(1) as f64
    }
}

/// One row of the summary table (Ultralytics' benchmark layout).
pub struct SummaryRow {
    pub config: String,
    pub backend: &'static str,
    pub precision: &'static str,
    pub threads: usize,
    /// Size of the image encoder file this configuration runs.
    pub file_mb: Option<f64>,
    pub top1: Option<TopOne>,
    /// Single-stream per-frame path (the `pipeline` column).
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Statistics of one latency cell.
pub struct CellStats {
    pub queries: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// The scenario's percentile and its early-stopping estimate.
    pub tail: f64,
    pub tail_ms: f64,
    pub early_stopping_ms: Option<f64>,
    pub stages: Vec<StageStats>,
}

pub struct StageStats {
    pub name: &'static str,
    pub p50: f64,
    pub p90: f64,
    pub mean: f64,
    /// Mean share of the stage in the queries around the p90 (nearest ranks 87.5-92.5 %).
    pub share_of_p90: f64,
}

pub fn cell_stats(cell: &Cell, scenario: Scenario) -> CellStats {
    let mut sorted = cell.totals.clone();
    sorted.sort_unstable();
    let pct = |p: f64| percentile(&sorted, p).map_or(0.0, ms);
    let tail = scenario.tail().unwrap_or(0.9);
    let n = sorted.len();
    // The queries whose total ranks around the p90: their mean stage split is the p90's.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| cell.totals[i]);
    let lo = ((0.875 * n as f64).floor() as usize).min(n.saturating_sub(1));
    let hi = ((0.925 * n as f64).ceil() as usize).clamp(lo + 1, n.max(1));
    let around: &[usize] = if n == 0 { &[] } else { &order[lo..hi] };
    let around_total: f64 = around.iter().map(|&i| cell.totals[i].as_secs_f64()).sum();
    let stages = cell
        .column
        .stages()
        .iter()
        .zip(&cell.stages)
        .map(|(name, v)| {
            let mut s = v.clone();
            s.sort_unstable();
            let part: f64 = around.iter().map(|&i| v[i].as_secs_f64()).sum();
            StageStats {
                name,
                p50: percentile(&s, 0.5).map_or(0.0, ms),
                p90: percentile(&s, 0.9).map_or(0.0, ms),
                mean: if s.is_empty() {
                    0.0
                } else {
                    ms(s.iter().sum::<Duration>() / s.len() as u32)
                },
                share_of_p90: if around_total > 0.0 {
                    part / around_total
                } else {
                    0.0
                },
            }
        })
        .collect();
    CellStats {
        queries: n,
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        max: sorted.last().map_or(0.0, |d| ms(*d)),
        mean: if n == 0 {
            0.0
        } else {
            ms(sorted.iter().sum::<Duration>() / n as u32)
        },
        tail,
        tail_ms: pct(tail),
        early_stopping_ms: early_stopping_estimate(&sorted, tail, 0.99).map(ms),
        stages,
    }
}

/// Medians of the image encoder's host-to-device, compute and device-to-host times, when the
/// backend reports them (TensorRT, timed with CUDA events); null otherwise.
fn device_split(cell: &Cell) -> Value {
    if cell.device.is_empty() {
        return Value::Null;
    }
    let part = |i: usize| {
        let mut v: Vec<Duration> = cell.device.iter().map(|d| d[i]).collect();
        v.sort_unstable();
        percentile(&v, 0.5).map_or(0.0, ms)
    };
    json!({"h2d_p50": part(0), "compute_p50": part(1), "d2h_p50": part(2)})
}

/// The per-frame path of a pipeline query: everything after decoding (the frame is in memory).
/// Per query whose photo ran the head's encoder, the per-frame path around that run: the total
/// less decoding and less the no-dish check's own encoder run (a second run by design, reported
/// as its own stage).
fn per_frame(cell: &Cell) -> Vec<Duration> {
    let ran = stage_unsorted(cell, "image_encoder");
    let excluded: Vec<&Vec<Duration>> = cell
        .column
        .stages()
        .iter()
        .zip(&cell.stages)
        .filter(|(n, _)| matches!(**n, "decode" | "no_dish_check"))
        .map(|(_, v)| v)
        .collect();
    let mut v: Vec<Duration> = cell
        .totals
        .iter()
        .enumerate()
        .filter(|(i, _)| ran.get(*i).is_none_or(|d| !d.is_zero()))
        .map(|(i, t)| excluded.iter().fold(*t, |t, s| t.saturating_sub(s[i])))
        .collect();
    v.sort_unstable();
    v
}

/// The samples of the stage `name` of `cell`, in query order (empty if it has no such stage).
fn stage_unsorted<'c>(cell: &'c Cell, name: &str) -> &'c [Duration] {
    cell.column
        .stages()
        .iter()
        .position(|n| *n == name)
        .map_or(&[][..], |i| cell.stages[i].as_slice())
}

/// The sorted samples of the stage `name` of `cell`.
fn stage(cell: &Cell, name: &str) -> Vec<Duration> {
    let mut v = cell
        .column
        .stages()
        .iter()
        .position(|n| *n == name)
        .map_or_else(Vec::new, |i| cell.stages[i].clone());
    v.sort_unstable();
    v
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// One goal, measured.
pub struct Goal {
    pub goal: &'static str,
    pub config: String,
    pub measured: f64,
    pub unit: &'static str,
    pub target: f64,
    /// True when lower is better.
    pub at_most: bool,
    pub detail: String,
}

impl Goal {
    pub fn met(&self) -> bool {
        if self.at_most {
            self.measured <= self.target
        } else {
            self.measured >= self.target
        }
    }
}

impl Report<'_> {
    fn latency_cells(&self, scenario: Scenario) -> Option<&[Cell]> {
        self.runs.iter().find_map(|r| match &r.measured {
            Measured::Latency { cells, .. } if r.scenario == scenario => Some(cells.as_slice()),
            _ => None,
        })
    }

    fn offline_cells(&self) -> Option<&[Throughput]> {
        self.runs.iter().find_map(|r| match &r.measured {
            Measured::Offline { cells, .. } => Some(cells.as_slice()),
            _ => None,
        })
    }

    /// The verdict on one latency cell: the scenario's minimums, and for the server scenario
    /// the p99 bound (on the early-stopping estimate where there is one, as LoadGen does).
    fn latency_verdict(&self, s: &CellStats, duration: Duration, run: &ScenarioRun) -> Verdict {
        let v = Verdict::of(s.queries, duration, &run.official, &run.minimums);
        match run.scenario {
            Scenario::Server => v.within_latency_bound(
                s.early_stopping_ms.unwrap_or(s.tail_ms),
                self.server_latency_ms,
            ),
            _ => v,
        }
    }

    /// One row per configuration: what it is, its file size, top-1 on labelled photos and its
    /// single-stream per-frame latency.
    pub fn summary(&self) -> Vec<SummaryRow> {
        let cells = self.latency_cells(Scenario::SingleStream);
        let enc = self.pack.manifest.image_encoder.as_ref();
        self.configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let stats = cells
                    .and_then(|cs| {
                        cs.iter()
                            .find(|x| x.engine == i && x.column == Column::Pipeline)
                    })
                    .map(|x| cell_stats(x, Scenario::SingleStream));
                SummaryRow {
                    config: c.id(),
                    backend: c.backend.as_str(),
                    precision: c.precision.as_str(),
                    threads: c.threads,
                    file_mb: enc
                        .and_then(|e| e.variants.get(&c.precision))
                        .map(|v| v.onnx.bytes as f64 / 1e6),
                    top1: self.accuracy.get(i).copied().flatten(),
                    p50_ms: stats.as_ref().map(|s| s.p50),
                    p90_ms: stats.as_ref().map(|s| s.p90),
                }
            })
            .collect()
    }

    fn summary_markdown(&self, md: &mut String) {
        let rows = self.summary();
        let _ = writeln!(md, "\n## Summary\n");
        let _ = writeln!(
            md,
            "Per configuration: the image encoder file, top-1 of the per-frame path on the photos whose folder names a head class (each once; \"no dish\" counts wrong), and the single-stream per-frame latency.\n"
        );
        let _ = writeln!(
            md,
            "| backend | precision | threads | encoder file MB | top-1 | p50 ms | p90 ms |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
        };
        for r in rows {
            let top1 = r.top1.map_or("– (no labelled photos)".to_string(), |t| {
                format!("{:.1} % ({}/{})", 100.0 * t.rate(), t.correct, t.photos)
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {top1} | {} | {} |",
                r.backend,
                r.precision,
                r.threads,
                opt(r.file_mb, 1),
                opt(r.p50_ms, 2),
                opt(r.p90_ms, 2),
            );
        }
    }

    /// The goals of the benchmark issues, for every onnxruntime and OpenVINO configuration
    /// measured (the bare-session goals where there is a bare column: onnxruntime's).
    pub fn goals(&self) -> Vec<Goal> {
        let mut out = Vec::new();
        for (i, c) in self.configs.iter().enumerate() {
            if !matches!(c.backend, BackendKind::Onnxruntime | BackendKind::Openvino) {
                continue;
            }
            let id = c.id();
            if let Some(cells) = self.latency_cells(Scenario::SingleStream) {
                let find = |col| cells.iter().find(|x| x.engine == i && x.column == col);
                // Only queries whose photo passed the no-dish check ran the head's encoder run,
                // the one the bare session is compared with; without any there is no goal.
                let headed = find(Column::Pipeline)
                    .filter(|p| !stage(p, "image_encoder").iter().all(|d| d.is_zero()));
                if let (Some(p), Some(b)) = (headed, find(Column::Bare)) {
                    let mut bare = b.totals.clone();
                    bare.sort_unstable();
                    let (frame90, bare90) = (
                        percentile(&per_frame(p), 0.9).map_or(0.0, ms),
                        percentile(&bare, 0.9).map_or(0.0, ms),
                    );
                    out.push(Goal {
                        goal: "per-frame path p90 (less decoding and the no-dish check's run) / bare encoder session p90",
                        config: id.clone(),
                        measured: frame90 / bare90,
                        unit: "x",
                        target: 1.15,
                        at_most: true,
                        detail: format!("{frame90:.2} ms / {bare90:.2} ms"),
                    });
                    let enc: Vec<Duration> = stage(p, "image_encoder")
                        .into_iter()
                        .filter(|d| !d.is_zero())
                        .collect();
                    let (enc50, bare50) = (
                        percentile(&enc, 0.5).map_or(0.0, ms),
                        percentile(&bare, 0.5).map_or(0.0, ms),
                    );
                    out.push(Goal {
                        goal: "our encoder call p50 / bare session p50",
                        config: id.clone(),
                        measured: enc50 / bare50,
                        unit: "x",
                        target: 1.05,
                        at_most: true,
                        detail: format!("{enc50:.2} ms / {bare50:.2} ms"),
                    });
                }
            }
            if let Some(cells) = self.offline_cells() {
                let find = |col| {
                    cells
                        .iter()
                        .find(|x| x.engine == i && x.column == col)
                        .map(|x| median(&x.passes))
                };
                if let (Some(p), Some(n)) = (find(Column::Pipeline), find(Column::Naive)) {
                    out.push(Goal {
                        goal: "offline throughput: pipeline / naive loop",
                        config: id.clone(),
                        measured: p / n,
                        unit: "x",
                        target: 1.5,
                        at_most: false,
                        detail: format!("{p:.1} / {n:.1} samples/s"),
                    });
                }
            }
            if let Some(s) = self
                .startup
                .iter()
                .find(|s| s.config == id && s.error.is_none())
            {
                if let Some(rss) = s.peak_rss_mb {
                    out.push(Goal {
                        goal: "resident memory, `dishcam classify` with the pack loaded",
                        config: id.clone(),
                        measured: rss,
                        unit: "MiB",
                        target: 150.0,
                        at_most: true,
                        detail: "peak RSS of the child process".into(),
                    });
                }
                for (what, v) in [("cold", s.cold_ms), ("warm", s.warm_ms)] {
                    if let Some(v) = v {
                        out.push(Goal {
                            goal: if what == "cold" {
                                "process start to first answer, cold file cache"
                            } else {
                                "process start to first answer, warm file cache"
                            },
                            config: id.clone(),
                            measured: v,
                            unit: "ms",
                            target: 500.0,
                            at_most: true,
                            detail: format!("`dishcam classify`, {what}"),
                        });
                    }
                }
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let mut scenarios = Vec::new();
        for run in self.runs {
            let mut v = json!({
                "scenario": run.scenario.as_str(),
                "minimums": {
                    "queries": run.minimums.queries,
                    "duration_s": run.minimums.duration.as_secs_f64(),
                    "confidence": run.minimums.confidence,
                },
                "valid_minimums": {
                    "queries": run.official.queries,
                    "duration_s": run.official.duration.as_secs_f64(),
                    "confidence": run.official.confidence,
                },
            });
            match &run.measured {
                Measured::Latency { cells, duration } => {
                    v["duration_s"] = json!(duration.as_secs_f64());
                    v["samples_per_query"] = json!(run.scenario.samples_per_query());
                    v["cells"] = cells
                        .iter()
                        .map(|c| self.cell_json(c, run, *duration, cells))
                        .collect();
                }
                Measured::Offline {
                    cells,
                    samples,
                    duration,
                } => {
                    v["duration_s"] = json!(duration.as_secs_f64());
                    v["samples"] = json!(samples);
                    let base = |col| {
                        cells
                            .iter()
                            .find(|x| x.engine == self.baseline && x.column == col)
                            .map(|x| median(&x.passes))
                    };
                    v["cells"] = cells
                        .iter()
                        .map(|c| {
                            let m = median(&c.passes);
                            let naive = cells
                                .iter()
                                .find(|x| x.engine == c.engine && x.column == Column::Naive)
                                .map(|x| median(&x.passes));
                            json!({
                                "config": self.configs[c.engine].id(),
                                "column": c.column.as_str(),
                                "passes": c.passes.len(),
                                "samples_per_s": m,
                                "passes_samples_per_s": c.passes,
                                "ratio_to_naive": naive.map(|n| m / n),
                                "ratio_to_baseline": base(c.column).map(|b| m / b),
                                "verdict": Verdict::of(c.passes.len(), *duration, &run.official, &run.minimums),
                            })
                        })
                        .collect();
                }
            }
            scenarios.push(v);
        }
        let goals: Vec<Value> = self
            .goals()
            .iter()
            .map(|g| {
                json!({
                    "goal": g.goal, "config": g.config, "measured": g.measured, "unit": g.unit,
                    "target": g.target, "at_most": g.at_most, "met": g.met(), "detail": g.detail,
                })
            })
            .collect();
        json!({
            "schema": "dishcam.bench/1",
            "started_unix_s": self.started.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "dishcam_version": env!("CARGO_PKG_VERSION"),
            "quick": self.quick,
            "machine": machine(),
            "pack": {"name": self.pack.manifest.name, "manifest_sha256": self.pack.manifest_sha256},
            "photos": {"source": self.photo_source, "count": self.photos},
            "configs": self.configs.iter().zip(self.engines).map(|(c, e)| json!({
                "id": c.id(), "backend": c.backend.as_str(), "precision": c.precision.as_str(),
                "threads": c.threads, "load_ms": e.load_ms,
                "missing_columns": Column::ALL.iter().filter_map(|&col| e.missing(col).map(|why| json!({"column": col.as_str(), "why": why}))).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "skipped": self.skipped,
            "baseline": self.configs[self.baseline].id(),
            "scenarios": scenarios,
            "summary": self.summary().iter().map(|r| json!({
                "config": r.config, "backend": r.backend, "precision": r.precision,
                "threads": r.threads, "encoder_file_mb": r.file_mb, "top1": r.top1.map(|t| json!({
                    "photos": t.photos, "correct": t.correct, "no_dish": t.no_dish, "rate": t.rate(),
                })), "p50_ms": r.p50_ms, "p90_ms": r.p90_ms,
            })).collect::<Vec<_>>(),
            "goals": goals,
            "startup": self.startup,
            "telemetry": {
                "wall_s": self.wall.as_secs_f64(),
                "cpu_utilisation": self.cpu_utilisation(),
                "peak_rss_mb_all_configs_loaded": self.peak_rss_mb,
                "inferences": self.inferences,
                "board": self.board,
                "energy_per_inference_mj": self.board.energy_mj.map(|e| e / self.inferences.max(1) as f64),
                "unavailable": self.board_unavailable,
            },
        })
    }

    fn cell_json(&self, c: &Cell, run: &ScenarioRun, duration: Duration, cells: &[Cell]) -> Value {
        let s = cell_stats(c, run.scenario);
        let base = cells
            .iter()
            .find(|x| x.engine == self.baseline && x.column == c.column)
            .map(|x| cell_stats(x, run.scenario).tail_ms);
        json!({
            "config": self.configs[c.engine].id(),
            "column": c.column.as_str(),
            "queries": s.queries,
            "latency_ms": {"p50": s.p50, "p90": s.p90, "p99": s.p99, "max": s.max, "mean": s.mean},
            "tail": {"percentile": s.tail, "ms": s.tail_ms, "early_stopping_ms": s.early_stopping_ms},
            "ratio_to_baseline": base.map(|b| s.tail_ms / b),
            "stages": s.stages.iter().map(|st| json!({
                "name": st.name, "p50_ms": st.p50, "p90_ms": st.p90, "mean_ms": st.mean,
                "share_of_p90": st.share_of_p90,
            })).collect::<Vec<_>>(),
            "verdict": self.latency_verdict(&s, duration, run),
            "device_ms": device_split(c),
        })
    }

    fn cpu_utilisation(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        self.cpu_seconds / self.wall.as_secs_f64().max(1e-9) / cores
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = machine();
        let _ = writeln!(md, "# dishcam bench\n");
        let _ = writeln!(
            md,
            "- machine: {} ({} cores), {}",
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["os"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            md,
            "- pack `{}` (manifest {}), {} photos: {}",
            self.pack.manifest.name,
            &self.pack.manifest_sha256[..12.min(self.pack.manifest_sha256.len())],
            self.photos,
            self.photo_source
        );
        let _ = writeln!(
            md,
            "- ratios are against `{}`; every configuration and column ran interleaved, one query each in turn",
            self.configs[self.baseline].id()
        );
        if self.quick {
            let _ = writeln!(
                md,
                "- **quick run** (`--quick`): too few queries for valid tail estimates; every verdict is INDICATIVE at best"
            );
        }
        for s in self.skipped {
            let _ = writeln!(md, "- skipped `{}`: {}", s.config, s.why);
        }
        for (c, e) in self.configs.iter().zip(self.engines) {
            for col in Column::ALL {
                if let Some(why) = e.missing(col) {
                    let _ = writeln!(md, "- `{}` has no {} column: {why}", c.id(), col.as_str());
                }
            }
        }

        self.summary_markdown(&mut md);

        let goals = self.goals();
        if !goals.is_empty() {
            let _ = writeln!(md, "\n## Goals (same run)\n");
            let _ = writeln!(
                md,
                "| goal | configuration | measured | target | met | detail |"
            );
            let _ = writeln!(md, "|---|---|---:|---:|:---:|---|");
            for g in &goals {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.2} {} | {} {} {} | {} | {} |",
                    g.goal,
                    g.config,
                    g.measured,
                    g.unit,
                    if g.at_most { "<=" } else { ">=" },
                    g.target,
                    g.unit,
                    if g.met() { "yes" } else { "**no**" },
                    g.detail
                );
            }
        }

        for run in self.runs {
            let _ = writeln!(md, "\n## {}\n", run.scenario.as_str());
            match &run.measured {
                Measured::Latency { cells, duration } => {
                    let tail = run.scenario.tail().unwrap_or(0.9) * 100.0;
                    let _ = writeln!(
                        md,
                        "{} samples per query; {:.1} s; minimums asked: {} queries, {:.0} s (a valid run needs {}, {:.0} s).\n",
                        run.scenario.samples_per_query(),
                        duration.as_secs_f64(),
                        run.minimums.queries,
                        run.minimums.duration.as_secs_f64(),
                        run.official.queries,
                        run.official.duration.as_secs_f64()
                    );
                    if run.scenario == Scenario::Server {
                        let _ = writeln!(
                            md,
                            "Poisson arrivals at {} queries/s (the same seeded arrival times for every configuration, run one after another); latency from arrival to answer, queueing included; VALID needs the p99 (its early-stopping estimate) within {} ms.\n",
                            self.server_qps, self.server_latency_ms
                        );
                    }
                    let _ = writeln!(
                        md,
                        "| configuration | column | queries | p50 ms | p90 ms | p99 ms | max ms | p{tail:.0} early-stop ms | p{tail:.0} vs baseline | verdict |"
                    );
                    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
                    for c in cells.iter() {
                        let s = cell_stats(c, run.scenario);
                        let base = cells
                            .iter()
                            .find(|x| x.engine == self.baseline && x.column == c.column)
                            .map(|x| cell_stats(x, run.scenario).tail_ms);
                        let v = self.latency_verdict(&s, *duration, run);
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {}{} |",
                            self.configs[c.engine].id(),
                            c.column.as_str(),
                            s.queries,
                            s.p50,
                            s.p90,
                            s.p99,
                            s.max,
                            s.early_stopping_ms
                                .map_or("-".into(), |v| format!("{v:.2}")),
                            base.map_or("-".into(), |b| format!("{:.2}x", s.tail_ms / b)),
                            v.label(),
                            if v.valid {
                                String::new()
                            } else {
                                format!(": {}", v.unmet.join("; "))
                            }
                        );
                    }
                    for c in cells.iter().filter(|c| !c.device.is_empty()) {
                        let d = device_split(c);
                        let _ = writeln!(
                            md,
                            "\n{} {}: image encoder on the device, medians: H2D {:.3} ms, compute {:.3} ms, D2H {:.3} ms",
                            self.configs[c.engine].id(),
                            c.column.as_str(),
                            num(&d["h2d_p50"]),
                            num(&d["compute_p50"]),
                            num(&d["d2h_p50"])
                        );
                    }
                    let _ = writeln!(
                        md,
                        "\nStage shares of the p{tail:.0} (mean split of the queries ranked around it), ms are stage medians:\n"
                    );
                    for column in [Column::Pipeline, Column::PipelineText, Column::Naive] {
                        let rows: Vec<&Cell> =
                            cells.iter().filter(|c| c.column == column).collect();
                        if rows.is_empty() {
                            continue;
                        }
                        let names = column.stages();
                        let _ = writeln!(md, "| {} | {} |", column.as_str(), names.join(" | "));
                        let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
                        for c in rows {
                            let s = cell_stats(c, run.scenario);
                            let parts: Vec<String> = s
                                .stages
                                .iter()
                                .map(|st| {
                                    format!("{:.0} % ({:.2})", st.share_of_p90 * 100.0, st.p50)
                                })
                                .collect();
                            let _ = writeln!(
                                md,
                                "| {} | {} |",
                                self.configs[c.engine].id(),
                                parts.join(" | ")
                            );
                        }
                        md.push('\n');
                    }
                }
                Measured::Offline {
                    cells,
                    samples,
                    duration,
                } => {
                    let _ = writeln!(
                        md,
                        "{samples} photos per pass, decoded from memory; {:.1} s. pipeline = the pipelined runtime (decode on the capture thread while the encoder runs); naive = the sequential loop; bare = the encoder alone on a prepared input (the ceiling).\n",
                        duration.as_secs_f64()
                    );
                    let _ = writeln!(
                        md,
                        "| configuration | column | passes | samples/s (median) | vs naive | vs baseline | verdict |"
                    );
                    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---|");
                    for c in cells.iter() {
                        let m = median(&c.passes);
                        let naive = cells
                            .iter()
                            .find(|x| x.engine == c.engine && x.column == Column::Naive)
                            .map(|x| median(&x.passes));
                        let base = cells
                            .iter()
                            .find(|x| x.engine == self.baseline && x.column == c.column)
                            .map(|x| median(&x.passes));
                        let v =
                            Verdict::of(c.passes.len(), *duration, &run.official, &run.minimums);
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} | {:.1} | {} | {} | {}{} |",
                            self.configs[c.engine].id(),
                            c.column.as_str(),
                            c.passes.len(),
                            m,
                            naive.map_or("-".into(), |n| format!("{:.2}x", m / n)),
                            base.map_or("-".into(), |b| format!("{:.2}x", m / b)),
                            v.label(),
                            if v.valid {
                                String::new()
                            } else {
                                format!(": {}", v.unmet.join("; "))
                            }
                        );
                    }
                }
            }
        }

        if !self.startup.is_empty() {
            let _ = writeln!(md, "\n## Start-up and memory\n");
            let _ = writeln!(
                md,
                "`dishcam classify PHOTO` in a child process, spawn to first line of output; cold = the executable (a copy), the onnxruntime library, the pack and the photo evicted from the file cache first; warm = median of 3.\n"
            );
            let _ = writeln!(
                md,
                "| configuration | cold ms | warm ms | peak RSS MiB | note |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---|");
            for s in self.startup {
                let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    s.config,
                    f(s.cold_ms),
                    f(s.warm_ms),
                    s.peak_rss_mb.map_or("-".into(), |v| format!("{v:.1}")),
                    s.error
                        .clone()
                        .unwrap_or_else(|| format!("{} files evicted", s.evicted_files))
                );
            }
        }

        let _ = writeln!(md, "\n## Telemetry\n");
        let _ = writeln!(
            md,
            "- run: {:.1} s wall, CPU utilisation {:.0} % of all cores, {} inferences",
            self.wall.as_secs_f64(),
            self.cpu_utilisation() * 100.0,
            self.inferences
        );
        if let Some(rss) = self.peak_rss_mb {
            let _ = writeln!(
                md,
                "- peak RSS of the bench process (every configuration loaded at once): {rss:.0} MiB"
            );
        }
        match (self.board.mean_power_mw, self.board.energy_mj) {
            (Some(p), Some(e)) => {
                let _ = writeln!(
                    md,
                    "- board power {:.0} mW mean, energy {:.1} mJ per inference (all configurations together)",
                    p,
                    e / self.inferences.max(1) as f64
                );
            }
            _ => {
                let _ = writeln!(md, "- power and energy: not readable here");
            }
        }
        for u in self.board_unavailable {
            let _ = writeln!(md, "- not read: {}: {}", u.what, u.why);
        }
        md
    }
}

/// CPU model, cores and kernel of this machine.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "os": os,
        "arch": std::env::consts::ARCH,
    })
}
