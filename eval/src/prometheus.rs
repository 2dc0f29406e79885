//! Prometheus text exposition (format 0.0.4) of the server's numbers: per-stage latency
//! histograms of live frames and uploaded photos, frame counters, fps, HTTP responses, and board
//! telemetry where the board exposes it.

use std::collections::BTreeMap;
use std::fmt::Write;

use dishcam_board::Sample;
use dishcam_runtime::pipeline::Counts;

/// Histogram bucket upper bounds, seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`] (not yet cumulative).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Every number `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (path "live" or "upload", stage) -> histogram.
    pub latency: BTreeMap<(&'static str, &'static str), Histogram>,
    /// HTTP responses by status code.
    pub responses: BTreeMap<u16, u64>,
}

impl Metrics {
    pub fn observe(&mut self, path: &'static str, stage: &'static str, ms: f64) {
        self.latency
            .entry((path, stage))
            .or_default()
            .observe(ms / 1e3);
    }
}

/// The live pipeline's numbers at the time of a scrape.
pub struct LiveNumbers {
    pub counts: Counts,
    pub fps_in: f64,
    pub fps_out: f64,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the exposition text.
pub fn render(m: &Metrics, live: Option<&LiveNumbers>, board: Option<&Sample>) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# HELP dishcam_stage_latency_seconds Latency of each stage: live frames (since capture, per stage) and uploaded photos."
    );
    let _ = writeln!(w, "# TYPE dishcam_stage_latency_seconds histogram");
    for ((path, stage), h) in &m.latency {
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(h.counts) {
            cumulative += c;
            let _ = writeln!(
                w,
                "dishcam_stage_latency_seconds_bucket{{path=\"{path}\",stage=\"{stage}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            w,
            "dishcam_stage_latency_seconds_bucket{{path=\"{path}\",stage=\"{stage}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            w,
            "dishcam_stage_latency_seconds_sum{{path=\"{path}\",stage=\"{stage}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            w,
            "dishcam_stage_latency_seconds_count{{path=\"{path}\",stage=\"{stage}\"}} {}",
            h.count
        );
    }
    let _ = writeln!(
        w,
        "# HELP dishcam_frames_total Live frames by what happened to them: captured, then dropped (replaced before inference read them), gated (encoder skipped, scene unchanged) or classified (the encoder ran); no_dish counts the classified frames that showed no dish; source_error counts frames the source could not give."
    );
    let _ = writeln!(w, "# TYPE dishcam_frames_total counter");
    let c = live.map(|l| l.counts).unwrap_or_default();
    for (kind, n) in [
        ("captured", c.captured),
        ("dropped", c.dropped),
        ("gated", c.gated),
        ("classified", c.classified),
        ("no_dish", c.no_dish),
        ("source_error", c.source_errors),
    ] {
        let _ = writeln!(w, "dishcam_frames_total{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        w,
        "# HELP dishcam_dropped_frames_total Live frames replaced before inference read them."
    );
    let _ = writeln!(w, "# TYPE dishcam_dropped_frames_total counter");
    let _ = writeln!(w, "dishcam_dropped_frames_total {}", c.dropped);
    let _ = writeln!(
        w,
        "# HELP dishcam_fps Live frames per second over the last few seconds: captured (in) and through inference, classified or gated (out)."
    );
    let _ = writeln!(w, "# TYPE dishcam_fps gauge");
    let (fi, fo) = live.map_or((0.0, 0.0), |l| (l.fps_in, l.fps_out));
    let _ = writeln!(w, "dishcam_fps{{direction=\"in\"}} {fi}");
    let _ = writeln!(w, "dishcam_fps{{direction=\"out\"}} {fo}");
    let _ = writeln!(
        w,
        "# HELP dishcam_http_responses_total HTTP responses by status code."
    );
    let _ = writeln!(w, "# TYPE dishcam_http_responses_total counter");
    for (code, n) in &m.responses {
        let _ = writeln!(w, "dishcam_http_responses_total{{code=\"{code}\"}} {n}");
    }
    if let Some(s) = board {
        if !s.temperatures_c.is_empty() {
            let _ = writeln!(
                w,
                "# HELP dishcam_temperature_celsius Board temperature sensors."
            );
            let _ = writeln!(w, "# TYPE dishcam_temperature_celsius gauge");
            for (sensor, t) in &s.temperatures_c {
                let _ = writeln!(
                    w,
                    "dishcam_temperature_celsius{{sensor=\"{}\"}} {t}",
                    label(sensor)
                );
            }
        }
        if s.power_mw.is_some() || !s.power_rails_mw.is_empty() {
            let _ = writeln!(
                w,
                "# HELP dishcam_power_watts Board power, whole board and per rail."
            );
            let _ = writeln!(w, "# TYPE dishcam_power_watts gauge");
            if let Some(p) = s.power_mw {
                let _ = writeln!(w, "dishcam_power_watts{{rail=\"total\"}} {}", p / 1e3);
            }
            for (rail, p) in &s.power_rails_mw {
                let _ = writeln!(
                    w,
                    "dishcam_power_watts{{rail=\"{}\"}} {}",
                    label(rail),
                    p / 1e3
                );
            }
        }
        if let Some(u) = s.cpu_util {
            let _ = writeln!(
                w,
                "# HELP dishcam_cpu_utilisation Busy fraction of all CPU cores."
            );
            let _ = writeln!(w, "# TYPE dishcam_cpu_utilisation gauge");
            let _ = writeln!(w, "dishcam_cpu_utilisation {u}");
        }
        if let Some(r) = s.rss_mb {
            let _ = writeln!(
                w,
                "# HELP dishcam_resident_memory_bytes Resident memory of this process."
            );
            let _ = writeln!(w, "# TYPE dishcam_resident_memory_bytes gauge");
            let _ = writeln!(
                w,
                "dishcam_resident_memory_bytes {}",
                (r * 1048576.0).round()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_count_everything() {
        let mut m = Metrics::default();
        for ms in [0.5, 4.0, 4.0, 2000.0] {
            m.observe("upload", "encode", ms);
        }
        let text = render(&m, None, None);
        assert!(text.contains(
            "dishcam_stage_latency_seconds_bucket{path=\"upload\",stage=\"encode\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains(
            "dishcam_stage_latency_seconds_bucket{path=\"upload\",stage=\"encode\",le=\"0.005\"} 3\n"
        ));
        assert!(text.contains(
            "dishcam_stage_latency_seconds_bucket{path=\"upload\",stage=\"encode\",le=\"1\"} 3\n"
        ));
        assert!(text.contains(
            "dishcam_stage_latency_seconds_bucket{path=\"upload\",stage=\"encode\",le=\"+Inf\"} 4\n"
        ));
        assert!(text
            .contains("dishcam_stage_latency_seconds_count{path=\"upload\",stage=\"encode\"} 4\n"));
    }

    #[test]
    fn frame_counters_say_what_happened_to_each_frame() {
        let live = LiveNumbers {
            counts: Counts {
                captured: 100,
                dropped: 7,
                gated: 60,
                classified: 33,
                no_dish: 12,
                source_errors: 2,
            },
            fps_in: 30.0,
            fps_out: 29.5,
        };
        let text = render(&Metrics::default(), Some(&live), None);
        let frames: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dishcam_frames_total{"))
            .collect();
        assert_eq!(
            frames,
            [
                "dishcam_frames_total{kind=\"captured\"} 100",
                "dishcam_frames_total{kind=\"dropped\"} 7",
                "dishcam_frames_total{kind=\"gated\"} 60",
                "dishcam_frames_total{kind=\"classified\"} 33",
                "dishcam_frames_total{kind=\"no_dish\"} 12",
                "dishcam_frames_total{kind=\"source_error\"} 2",
            ],
            "{text}"
        );
        assert!(
            text.contains("# TYPE dishcam_frames_total counter\n"),
            "{text}"
        );
        assert!(text.contains("dishcam_dropped_frames_total 7\n"), "{text}");
        assert!(
            text.contains("dishcam_fps{direction=\"in\"} 30\n"),
            "{text}"
        );
        assert!(
            text.contains("dishcam_fps{direction=\"out\"} 29.5\n"),
            "{text}"
        );
        // Without a live pipeline every counter is there, at zero.
        let idle = render(&Metrics::default(), None, None);
        for kind in ["classified", "gated", "dropped", "no_dish"] {
            assert!(
                idle.contains(&format!("dishcam_frames_total{{kind=\"{kind}\"}} 0\n")),
                "{idle}"
            );
        }
    }

    #[test]
    fn sensor_names_are_escaped() {
        let s = Sample {
            temperatures_c: vec![("cpu \"a\"\\".into(), 41.5)],
            ..Sample::default()
        };
        let text = render(&Metrics::default(), None, Some(&s));
        assert!(
            text.contains("dishcam_temperature_celsius{sensor=\"cpu \\\"a\\\"\\\\\"} 41.5\n"),
            "{text}"
        );
    }
}
