//! SVG plots of a bench report (plotters' SVG backend; text is left to the viewer's fonts):
//! latency CDFs and histograms per configuration and column, per-stage stacked bars, and
//! offline throughput bars.

use std::time::Duration;

use plotters::prelude::*;

use crate::engine::Column;
use crate::error::{BenchError, Result};
use crate::report::{cell_stats, Report};
use crate::run::{Cell, Measured, Scenario};

const WIDTH: u32 = 960;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Plot(e.to_string())
}

fn colour(i: usize) -> RGBColor {
    // Okabe-Ito: distinguishable for colour-blind readers.
    const C: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(240, 228, 66),
        RGBColor(0, 0, 0),
    ];
    C[i % C.len()]
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every plot of the report, as (file name, SVG text).
pub fn all(report: &Report<'_>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for run in report.runs {
        let name = run.scenario.as_str();
        match &run.measured {
            Measured::Latency { cells, .. } => {
                out.push((
                    format!("{name}-cdf.svg"),
                    latency_panels(report, run.scenario, cells, Kind::Cdf)?,
                ));
                out.push((
                    format!("{name}-histogram.svg"),
                    latency_panels(report, run.scenario, cells, Kind::Histogram)?,
                ));
                out.push((
                    format!("{name}-stages.svg"),
                    stages(report, run.scenario, cells)?,
                ));
            }
            Measured::Offline { cells, .. } => {
                let bars: Vec<(String, f64)> = cells
                    .iter()
                    .map(|c| {
                        let mut p = c.passes.clone();
                        p.sort_by(f64::total_cmp);
                        (
                            format!("{} {}", report.configs[c.engine].id(), c.column.as_str()),
                            p.get(p.len() / 2).copied().unwrap_or(0.0),
                        )
                    })
                    .collect();
                out.push((format!("{name}-throughput.svg"), throughput(&bars)?));
            }
        }
    }
    Ok(out)
}

/// Upper end of the latency axis: the largest p99 (so one outlier does not squash the rest).
fn x_max(cells: &[&Cell]) -> f64 {
    cells
        .iter()
        .map(|c| {
            let mut s = c.totals.clone();
            s.sort_unstable();
            dishcam_eval::loadgen::percentile(&s, 0.99).map_or(1.0, |d| ms(&d))
        })
        .fold(1e-3, f64::max)
        * 1.1
}

#[derive(Clone, Copy)]
enum Kind {
    Cdf,
    Histogram,
}

const BINS: usize = 40;

/// Points of one cell's curve: the empirical CDF, or a frequency polygon over `BINS` bins.
fn curve(c: &Cell, kind: Kind, xmax: f64) -> Vec<(f64, f64)> {
    let n = c.totals.len().max(1) as f64;
    match kind {
        Kind::Cdf => {
            let mut s: Vec<f64> = c.totals.iter().map(ms).collect();
            s.sort_by(f64::total_cmp);
            s.iter()
                .enumerate()
                .map(|(k, v)| (v.min(xmax), (k + 1) as f64 / n))
                .collect()
        }
        Kind::Histogram => {
            let width = xmax / BINS as f64;
            let mut bins = [0usize; BINS];
            for t in &c.totals {
                bins[((ms(t) / width) as usize).min(BINS - 1)] += 1;
            }
            bins.iter()
                .enumerate()
                .map(|(b, &k)| ((b as f64 + 0.5) * width, k as f64 / n))
                .collect()
        }
    }
}

/// One panel per column (pipeline, pipeline+text, bare, naive), one curve per configuration,
/// each configuration in the same colour in every panel; one latency axis for all panels.
fn latency_panels(
    report: &Report<'_>,
    scenario: Scenario,
    cells: &[Cell],
    kind: Kind,
) -> Result<String> {
    let columns: Vec<Column> = Column::ALL
        .into_iter()
        .filter(|col| cells.iter().any(|c| c.column == *col))
        .collect();
    let all: Vec<&Cell> = cells.iter().collect();
    let xmax = x_max(&all);
    let rows = columns.len().div_ceil(2) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 60 + 330 * rows)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = match kind {
            Kind::Cdf => format!(
                "{}: latency CDF per query, by column (axis cut at 1.1 x the largest p99)",
                scenario.as_str()
            ),
            Kind::Histogram => format!(
                "{}: latency histogram by column ({BINS} bins of {:.2} ms; the last bin holds the tail)",
                scenario.as_str(),
                xmax / BINS as f64
            ),
        };
        let root = root.titled(&title, ("sans-serif", 18)).map_err(err)?;
        let panels = root.split_evenly((rows as usize, 2));
        for (panel, column) in panels.iter().zip(&columns) {
            let mine: Vec<&Cell> = cells.iter().filter(|c| c.column == *column).collect();
            let curves: Vec<(usize, Vec<(f64, f64)>)> = mine
                .iter()
                .map(|c| (c.engine, curve(c, kind, xmax)))
                .collect();
            let ymax = match kind {
                Kind::Cdf => 1.0,
                Kind::Histogram => {
                    curves
                        .iter()
                        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
                        .fold(0.01, f64::max)
                        * 1.15
                }
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(column.as_str(), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(46)
                .build_cartesian_2d(0f64..xmax, 0f64..ymax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("latency (ms)")
                .y_desc(match kind {
                    Kind::Cdf => "fraction of queries",
                    Kind::Histogram => "share of queries",
                })
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(err)?;
            for (engine, pts) in curves {
                let col = colour(engine);
                chart
                    .draw_series(LineSeries::new(pts, col.stroke_width(2)))
                    .map_err(err)?
                    .label(report.configs[engine].id())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(match kind {
                    Kind::Cdf => SeriesLabelPosition::LowerRight,
                    Kind::Histogram => SeriesLabelPosition::UpperRight,
                })
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn label(report: &Report<'_>, c: &Cell) -> String {
    format!("{} {}", report.configs[c.engine].id(), c.column.as_str())
}

/// Horizontal stacked bars: each row a configuration's pipeline column, each segment a stage's
/// median.
fn stages(report: &Report<'_>, scenario: Scenario, cells: &[Cell]) -> Result<String> {
    let rows: Vec<&Cell> = cells
        .iter()
        .filter(|c| matches!(c.column, Column::Pipeline | Column::PipelineText))
        .collect();
    let stage_names: Vec<&str> = Column::PipelineText.stages().to_vec();
    let mut svg = String::new();
    let height = 120 + 46 * rows.len() as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let stats: Vec<_> = rows.iter().map(|c| cell_stats(c, scenario)).collect();
        let xmax = stats
            .iter()
            .map(|s| s.stages.iter().map(|st| st.p50).sum::<f64>())
            .fold(1e-3, f64::max)
            * 1.3;
        let n = rows.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: per-stage median latency, pipeline columns",
                    scenario.as_str()
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..xmax, 0f64..n)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds (stage medians, stacked)")
            .disable_y_mesh()
            .y_labels(0)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (r, (c, s)) in rows.iter().zip(&stats).enumerate() {
            let y = n - r as f64 - 1.0;
            let mut x = 0.0;
            for st in &s.stages {
                let k = stage_names.iter().position(|n| *n == st.name).unwrap_or(0);
                let col = colour(k);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y + 0.15), (x + st.p50, y + 0.6)],
                        col.filled(),
                    )))
                    .map_err(err)?;
                x += st.p50;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}  ({x:.2} ms)", label(report, c)),
                    (0.0, y + 0.92),
                    ("sans-serif", 14),
                )))
                .map_err(err)?;
        }
        // The legend: one entry per stage, drawn as an empty series.
        for (k, name) in stage_names.iter().enumerate() {
            let col = colour(k);
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn throughput(bars: &[(String, f64)]) -> Result<String> {
    let mut svg = String::new();
    let height = 110 + 40 * bars.len() as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xmax = bars.iter().map(|b| b.1).fold(1e-3, f64::max) * 1.15;
        let n = bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "offline: samples per second (median pass)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..xmax, 0f64..n)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("samples per second")
            .disable_y_mesh()
            .y_labels(0)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (r, (name, v)) in bars.iter().enumerate() {
            let y = n - r as f64 - 1.0;
            let col = if name.ends_with("pipeline") {
                colour(0)
            } else if name.ends_with("naive") {
                colour(1)
            } else {
                colour(2)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.1), (*v, y + 0.55)],
                    col.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{name}: {v:.1}/s"),
                    (0.0, y + 0.92),
                    ("sans-serif", 14),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}
