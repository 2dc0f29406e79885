//! Evaluation maths and report writers for `dishcam eval classify`.
//!
//! Pure functions over counts and probability vectors: a confusion matrix, top-1/top-5
//! accuracy, negative log-likelihood, expected calibration error, and writers that turn them
//! into CSV, SVG and Markdown strings. The CLI reads the data and writes the files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;

/// How many of the highest probabilities count as a top-5 hit.
const TOP_K: usize = 5;

/// Lower bound applied to the true-class probability before taking its logarithm.
const MIN_PROBABILITY: f64 = 1e-12;

/// Counts of (true class, predicted class) for a `classes`-way classifier.
///
/// Pairs naming a class outside `0..classes` are not entered in the matrix; they are tallied by
/// [`Confusion::rejected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    counts: Vec<u64>,
    rejected: u64,
}

/// Per-class figures derived from a [`Confusion`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassStats {
    /// Class index.
    pub class: usize,
    /// Examples whose true class is `class` (row sum).
    pub support: u64,
    /// Examples of `class` predicted as `class` (diagonal cell).
    pub correct: u64,
    /// Examples predicted as `class`, whatever their true class (column sum).
    pub predicted: u64,
    /// `correct / support`; `None` when `support` is 0.
    pub recall: Option<f64>,
    /// `correct / predicted`; `None` when `predicted` is 0.
    pub precision: Option<f64>,
}

impl Confusion {
    /// An empty `classes` x `classes` matrix.
    ///
    /// The matrix is dense (`classes²` counters, 10,201 for a 101-class head), so `classes`
    /// should be a head size; with `classes == 0` every pair is rejected.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes.saturating_mul(classes)],
            rejected: 0,
        }
    }

    /// Counts one example. When `truth` or `predicted` is not below [`Confusion::classes`], the
    /// matrix is left unchanged and [`Confusion::rejected`] grows by one.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        match self
            .index(truth, predicted)
            .and_then(|i| self.counts.get_mut(i))
        {
            Some(cell) => *cell = cell.saturating_add(1),
            None => self.reject(),
        }
    }

    /// The count of examples of class `truth` predicted as `predicted`; 0 outside the matrix.
    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.index(truth, predicted)
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// The number of classes the matrix was created with.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The number of examples in the matrix (rejected ones excluded).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The number of examples left out because they named a class outside the matrix (or, via
    /// [`Metrics::add`], had a probability vector of the wrong length).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Diagonal sum over [`Confusion::total`]; `None` when the matrix is empty.
    pub fn accuracy(&self) -> Option<f64> {
        let correct: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        ratio(correct, self.total())
    }

    /// Support, correct count, recall and precision of every class, in class order.
    pub fn per_class(&self) -> Vec<ClassStats> {
        let predicted = self.column_totals();
        (0..self.classes)
            .zip(predicted)
            .map(|(class, predicted)| {
                let support = self.row_total(class);
                let correct = self.get(class, class);
                ClassStats {
                    class,
                    support,
                    correct,
                    predicted,
                    recall: ratio(correct, support),
                    precision: ratio(correct, predicted),
                }
            })
            .collect()
    }

    /// Classes that occur as a true class or as a prediction, ascending.
    pub fn present_classes(&self) -> Vec<usize> {
        let predicted = self.column_totals();
        (0..self.classes)
            .zip(predicted)
            .filter(|&(class, predicted)| predicted > 0 || self.row_total(class) > 0)
            .map(|(class, _)| class)
            .collect()
    }

    /// The matrix as CSV.
    ///
    /// The header is `truth\predicted` followed by one column per predicted class, then one
    /// row per true class starting with its label; lines end in `\n`, the last one included.
    /// A label containing a comma, a double quote, CR or LF is quoted per RFC 4180 (quotes
    /// doubled). Class `i` is named `labels[i]`, or `i` in decimal when `labels` is shorter.
    /// With `only_present`, rows and columns keep only [`Confusion::present_classes`] (e.g. a
    /// 10-class eval set scored by a 101-class head); an empty matrix then gives the header only.
    pub fn to_csv(&self, labels: &[String], only_present: bool) -> String {
        let kept = self.kept_classes(only_present);
        let mut out = String::from("truth\\predicted");
        for &p in &kept {
            out.push(',');
            out.push_str(&csv_field(&label_of(labels, p)));
        }
        out.push('\n');
        for &t in &kept {
            out.push_str(&csv_field(&label_of(labels, t)));
            for &p in &kept {
                out.push(',');
                out.push_str(&self.get(t, p).to_string());
            }
            out.push('\n');
        }
        out
    }

    /// The matrix as a standalone SVG 1.1 document (with XML declaration): a heat map of one
    /// `<rect class="cell">` per (true, predicted) pair, rows are true classes, columns are
    /// predictions.
    ///
    /// Cell colour goes from white (0) to dark blue (1) with the row-normalised rate
    /// `count / support` (a row without support is white), and a vertical scale is drawn at the
    /// right. Each non-empty cell carries a `<title>` tooltip with its labels, count and rate.
    /// Up to 30 shown classes, cells are 32 px and non-zero counts are printed in them; beyond
    /// that, cells shrink to 18 px (up to 60 classes) or 12 px, with small fonts, so a 101 x 101
    /// matrix stays legible. Column labels are rotated by -60°; labels longer than 40 characters
    /// are shortened with `…` on the axes (tooltips keep them whole). `title` is printed at the
    /// top. Labels follow the [`Confusion::to_csv`] naming and `only_present` rule; with no
    /// class to show, the document holds the title and a "no data" note. All text is
    /// XML-escaped and control characters become spaces, so the output is well-formed XML for
    /// any labels.
    pub fn to_svg(&self, labels: &[String], only_present: bool, title: &str) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_svg(&mut out, labels, only_present, title);
        out
    }

    fn index(&self, truth: usize, predicted: usize) -> Option<usize> {
        if truth < self.classes && predicted < self.classes {
            Some(truth * self.classes + predicted)
        } else {
            None
        }
    }

    fn reject(&mut self) {
        self.rejected = self.rejected.saturating_add(1);
    }

    fn row_total(&self, truth: usize) -> u64 {
        (0..self.classes).map(|p| self.get(truth, p)).sum()
    }

    fn column_totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.classes];
        if self.classes > 0 {
            for row in self.counts.chunks(self.classes) {
                for (total, count) in totals.iter_mut().zip(row) {
                    *total += count;
                }
            }
        }
        totals
    }

    fn kept_classes(&self, only_present: bool) -> Vec<usize> {
        if only_present {
            self.present_classes()
        } else {
            (0..self.classes).collect()
        }
    }

    fn write_svg(
        &self,
        out: &mut String,
        labels: &[String],
        only_present: bool,
        title: &str,
    ) -> fmt::Result {
        const PAD: f64 = 10.0;
        const TITLE_FONT: f64 = 14.0;
        const CAPTION_FONT: f64 = 11.0;
        const CHAR_WIDTH: f64 = 0.6;
        const LEGEND_WIDTH: f64 = 12.0;
        const LEGEND_SPACE: f64 = 60.0;
        const ROTATION_DEG: f64 = 60.0;
        const GRADIENT_ID: &str = "dishcam-confusion-scale";

        let kept = self.kept_classes(only_present);
        let n = kept.len();
        let (cell, font) = match n {
            0..=30 => (32.0, 11.0),
            31..=60 => (18.0, 10.0),
            _ => (12.0, 8.0),
        };
        let show_counts = n <= 30;
        let axis_labels: Vec<String> = kept
            .iter()
            .map(|&c| shorten(&label_of(labels, c), 40))
            .collect();
        let full_labels: Vec<String> = kept
            .iter()
            .map(|&c| xml_escape(&label_of(labels, c)))
            .collect();
        let longest = axis_labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let label_px = longest as f64 * font * CHAR_WIDTH;
        let (sin, cos) = ROTATION_DEG.to_radians().sin_cos();

        let grid = n as f64 * cell;
        let title_baseline = PAD + TITLE_FONT;
        let caption_baseline = title_baseline + 8.0 + CAPTION_FONT;
        let top = caption_baseline + 6.0 + label_px * sin + 6.0;
        let left = PAD + CAPTION_FONT + 8.0 + label_px + 6.0;
        let right = (LEGEND_SPACE + PAD).max(label_px * cos + PAD);
        let legend_height = grid.clamp(60.0, 200.0);
        let title_width = 2.0 * PAD + title.chars().count() as f64 * TITLE_FONT * CHAR_WIDTH;
        let width = (left + grid + right).max(title_width).ceil();
        let height = (top + grid.max(legend_height) + 2.0 * PAD).ceil();
        let title = xml_escape(title);

        writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#,
            w = px(width),
            h = px(height),
        )?;
        writeln!(out, "<title>{title}</title>")?;
        writeln!(
            out,
            r##"<rect class="background" x="0" y="0" width="{}" height="{}" fill="#ffffff"/>"##,
            px(width),
            px(height)
        )?;
        writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="{}" font-weight="bold">{title}</text>"#,
            px(PAD),
            px(title_baseline),
            px(TITLE_FONT)
        )?;
        if n == 0 {
            writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="{}">no data</text>"#,
                px(PAD),
                px(top),
                px(CAPTION_FONT)
            )?;
            return writeln!(out, "</svg>");
        }

        writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="{}" text-anchor="middle" fill="#444444">predicted</text>"##,
            px(left + grid / 2.0),
            px(caption_baseline),
            px(CAPTION_FONT)
        )?;
        let true_x = PAD + CAPTION_FONT;
        let true_y = top + grid / 2.0;
        writeln!(
            out,
            r##"<text x="{x}" y="{y}" font-size="{}" text-anchor="middle" fill="#444444" transform="rotate(-90 {x} {y})">true</text>"##,
            px(CAPTION_FONT),
            x = px(true_x),
            y = px(true_y),
        )?;

        writeln!(
            out,
            r#"<g font-size="{}" text-anchor="end" dominant-baseline="central">"#,
            px(font)
        )?;
        for (r, label) in axis_labels.iter().enumerate() {
            writeln!(
                out,
                r#"<text x="{}" y="{}">{}</text>"#,
                px(left - 6.0),
                px(top + (r as f64 + 0.5) * cell),
                xml_escape(label)
            )?;
        }
        writeln!(out, "</g>")?;

        writeln!(
            out,
            r#"<g font-size="{}" text-anchor="start" dominant-baseline="central">"#,
            px(font)
        )?;
        for (c, label) in axis_labels.iter().enumerate() {
            writeln!(
                out,
                r#"<text transform="translate({} {}) rotate(-{})">{}</text>"#,
                px(left + (c as f64 + 0.5) * cell),
                px(top - 6.0),
                px(ROTATION_DEG),
                xml_escape(label)
            )?;
        }
        writeln!(out, "</g>")?;

        let mut count_text = String::new();
        writeln!(out, r##"<g stroke="#d9d9d9" stroke-width="0.5">"##)?;
        for (r, &t) in kept.iter().enumerate() {
            let support = self.row_total(t);
            for (c, &p) in kept.iter().enumerate() {
                let count = self.get(t, p);
                let rate = ratio(count, support).unwrap_or(0.0);
                let x = left + c as f64 * cell;
                let y = top + r as f64 * cell;
                write!(
                    out,
                    r#"<rect class="cell" x="{}" y="{}" width="{}" height="{}" fill="{}""#,
                    px(x),
                    px(y),
                    px(cell),
                    px(cell),
                    heat_colour(rate)
                )?;
                if count == 0 {
                    writeln!(out, "/>")?;
                    continue;
                }
                writeln!(
                    out,
                    "><title>true {}, predicted {}: {count} ({:.1}% of row)</title></rect>",
                    full_labels[r],
                    full_labels[c],
                    rate * 100.0
                )?;
                if show_counts {
                    let digits = count.to_string().len() as f64;
                    let size = (1.5 * cell / digits).min(11.0);
                    let ink = if rate > 0.5 { "#ffffff" } else { "#1a1a1a" };
                    writeln!(
                        count_text,
                        r#"<text x="{}" y="{}" font-size="{}" fill="{ink}">{count}</text>"#,
                        px(x + cell / 2.0),
                        px(y + cell / 2.0),
                        px(size)
                    )?;
                }
            }
        }
        writeln!(out, "</g>")?;
        if !count_text.is_empty() {
            writeln!(
                out,
                r#"<g text-anchor="middle" dominant-baseline="central">"#
            )?;
            out.push_str(&count_text);
            writeln!(out, "</g>")?;
        }

        let legend_x = left + grid + 16.0;
        writeln!(
            out,
            r##"<defs><linearGradient id="{GRADIENT_ID}" x1="0" y1="1" x2="0" y2="0"><stop offset="0" stop-color="{}"/><stop offset="1" stop-color="{}"/></linearGradient></defs>"##,
            heat_colour(0.0),
            heat_colour(1.0)
        )?;
        writeln!(
            out,
            r##"<rect class="legend" x="{}" y="{}" width="{}" height="{}" fill="url(#{GRADIENT_ID})" stroke="#999999" stroke-width="0.5"/>"##,
            px(legend_x),
            px(top),
            px(LEGEND_WIDTH),
            px(legend_height)
        )?;
        writeln!(
            out,
            r#"<g font-size="9" dominant-baseline="central"><text x="{x}" y="{}">100%</text><text x="{x}" y="{}">0%</text></g>"#,
            px(top),
            px(top + legend_height),
            x = px(legend_x + LEGEND_WIDTH + 4.0),
        )?;
        writeln!(out, "</svg>")
    }
}

/// Running classification metrics over examples given as probability vectors.
///
/// Each accepted example updates a [`Confusion`] (prediction = highest probability), top-5
/// hits, the summed negative log-likelihood and the calibration bins; nothing per example is
/// kept.
#[derive(Debug, Clone)]
pub struct Metrics {
    confusion: Confusion,
    top5: u64,
    nll_sum: f64,
    calibration: Calibration,
}

/// Summary of a [`Metrics`] run, ready for JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Examples scored (rejected ones excluded).
    pub examples: u64,
    /// Examples left out: true class out of range or probability vector of the wrong length.
    pub rejected: u64,
    /// Share of examples whose highest probability is the true class; `None` without examples.
    pub top1: Option<f64>,
    /// Share of examples whose true class is among the 5 highest probabilities (ties go to the
    /// lower class index, NaN ranks last); `None` without examples.
    pub top5: Option<f64>,
    /// Mean of `-ln p(true class)`, with `p` clamped to `[1e-12, 1]` and NaN read as 0;
    /// `None` without examples.
    pub nll: Option<f64>,
    /// Expected calibration error of the top-1 confidence, as [`expected_calibration_error`];
    /// `None` without examples, with 0 bins, or when every confidence was NaN.
    pub ece: Option<f64>,
    /// Classes with support > 0, ascending.
    pub per_class: Vec<ClassReport>,
    /// Non-empty calibration bins, ascending.
    pub reliability: Vec<Bin>,
}

/// Top-1 accuracy of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    /// Class index.
    pub class: usize,
    /// `labels[class]`, or the index in decimal when no label was given.
    pub label: String,
    /// Examples of this class.
    pub support: u64,
    /// Share of them predicted as this class (the class recall); `None` when `support` is 0.
    pub top1: Option<f64>,
}

/// One bin of a reliability diagram: examples whose confidence lies in `(lower, upper]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge (exclusive, except 0 for the first bin).
    pub lower: f64,
    /// Upper edge (inclusive).
    pub upper: f64,
    /// Examples in the bin.
    pub count: u64,
    /// Their mean confidence (clamped to [0, 1]).
    pub mean_confidence: f64,
    /// Share of them predicted correctly.
    pub accuracy: f64,
}

impl Metrics {
    /// Metrics for a `classes`-way head, with `calibration_bins` equal-width bins for ECE (15
    /// is the usual setting; 0 turns ECE and the reliability bins off).
    pub fn new(classes: usize, calibration_bins: usize) -> Self {
        Self {
            confusion: Confusion::new(classes),
            top5: 0,
            nll_sum: 0.0,
            calibration: Calibration::new(calibration_bins),
        }
    }

    /// Scores one example: `probs` is the head's probability vector (softmax output) and
    /// `truth` its class.
    ///
    /// The prediction is the highest probability (ties to the lower index, NaN last). When
    /// `probs.len()` differs from the class count or `truth` is out of range, the example is
    /// only counted in [`Confusion::rejected`].
    pub fn add(&mut self, truth: usize, probs: &[f32]) {
        if probs.len() != self.confusion.classes() || truth >= probs.len() {
            self.confusion.reject();
            return;
        }
        let predicted =
            (1..probs.len()).fold(
                0,
                |best, j| {
                    if ranks_above(probs, j, best) {
                        j
                    } else {
                        best
                    }
                },
            );
        let rank = (0..probs.len())
            .filter(|&j| ranks_above(probs, j, truth))
            .count();
        self.confusion.add(truth, predicted);
        if rank < TOP_K {
            self.top5 += 1;
        }
        let p = f64::from(probs[truth]);
        let p = if p.is_nan() {
            MIN_PROBABILITY
        } else {
            p.clamp(MIN_PROBABILITY, 1.0)
        };
        self.nll_sum -= p.ln();
        self.calibration.add(probs[predicted], predicted == truth);
    }

    /// The confusion matrix of the examples scored so far.
    pub fn confusion(&self) -> &Confusion {
        &self.confusion
    }

    /// The metrics so far; `labels[i]` names class `i` in [`Report::per_class`].
    pub fn report(&self, labels: &[String]) -> Report {
        let examples = self.confusion.total();
        let per_class = self
            .confusion
            .per_class()
            .into_iter()
            .filter(|s| s.support > 0)
            .map(|s| ClassReport {
                class: s.class,
                label: label_of(labels, s.class).into_owned(),
                support: s.support,
                top1: s.recall,
            })
            .collect();
        Report {
            examples,
            rejected: self.confusion.rejected(),
            top1: self.confusion.accuracy(),
            top5: ratio(self.top5, examples),
            nll: (examples > 0).then(|| self.nll_sum / examples as f64),
            ece: self.calibration.ece(),
            per_class,
            reliability: self.calibration.bins(),
        }
    }
}

/// Expected calibration error of `(confidence, correct)` samples over `bins` equal-width bins:
/// `Σ_b (n_b / N) · |accuracy_b − mean confidence_b|`.
///
/// Bin `i` covers `(i/B, (i+1)/B]` (edges compared in `f32`, so a confidence of exactly `0.3`
/// falls in `(0.2, 0.3]`) and a confidence of 0 goes to bin 0. Confidences are clamped to
/// [0, 1]; NaN confidences are ignored. The result lies in [0, 1]; `None` when `bins` is 0 or
/// no sample is left. [`Metrics`] uses the same binning.
pub fn expected_calibration_error(samples: &[(f32, bool)], bins: usize) -> Option<f64> {
    let mut calibration = Calibration::new(bins);
    for &(confidence, correct) in samples {
        calibration.add(confidence, correct);
    }
    calibration.ece()
}

/// A Markdown summary of `report`: a `## title` heading (omitted when `title` is blank), a
/// metric table (examples, rejected, top-1, top-5, NLL, ECE), then a per-class top-1 table
/// sorted by class index. Rates are percentages with 2 decimals, NLL and ECE have 4 decimals,
/// missing values read `n/a`. Labels are escaped for table cells.
pub fn report_markdown(report: &Report, title: &str) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_markdown(&mut out, report, title);
    out
}

fn write_markdown(out: &mut String, report: &Report, title: &str) -> fmt::Result {
    let title = single_line(title);
    if !title.trim().is_empty() {
        writeln!(out, "## {}\n", title.trim())?;
    }
    writeln!(out, "| metric | value |")?;
    writeln!(out, "| --- | ---: |")?;
    writeln!(out, "| examples | {} |", report.examples)?;
    writeln!(out, "| rejected | {} |", report.rejected)?;
    writeln!(out, "| top-1 | {} |", percent(report.top1))?;
    writeln!(out, "| top-5 | {} |", percent(report.top5))?;
    writeln!(out, "| NLL | {} |", decimal(report.nll))?;
    writeln!(out, "| ECE | {} |", decimal(report.ece))?;
    writeln!(out)?;
    if report.per_class.is_empty() {
        return writeln!(out, "No per-class results.");
    }
    let mut rows: Vec<&ClassReport> = report.per_class.iter().collect();
    rows.sort_by_key(|r| r.class);
    writeln!(out, "| class | label | support | top-1 |")?;
    writeln!(out, "| ---: | --- | ---: | ---: |")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.class,
            markdown_cell(&r.label),
            r.support,
            percent(r.top1)
        )?;
    }
    Ok(())
}

/// Calibration bins, kept sparse so any bin count costs nothing until filled.
#[derive(Debug, Clone)]
struct Calibration {
    bins: usize,
    filled: BTreeMap<usize, BinSums>,
}

#[derive(Debug, Clone, Copy, Default)]
struct BinSums {
    count: u64,
    confidence: f64,
    correct: u64,
}

impl Calibration {
    fn new(bins: usize) -> Self {
        Self {
            bins,
            filled: BTreeMap::new(),
        }
    }

    fn add(&mut self, confidence: f32, correct: bool) {
        if self.bins == 0 || confidence.is_nan() {
            return;
        }
        let confidence = confidence.clamp(0.0, 1.0);
        let sums = self
            .filled
            .entry(bin_index(confidence, self.bins))
            .or_default();
        sums.count += 1;
        sums.confidence += f64::from(confidence);
        sums.correct += u64::from(correct);
    }

    fn ece(&self) -> Option<f64> {
        let total: u64 = self.filled.values().map(|b| b.count).sum();
        if total == 0 {
            return None;
        }
        let gap: f64 = self
            .filled
            .values()
            .map(|b| (b.correct as f64 - b.confidence).abs())
            .sum();
        Some((gap / total as f64).clamp(0.0, 1.0))
    }

    fn bins(&self) -> Vec<Bin> {
        let b = self.bins as f64;
        self.filled
            .iter()
            .map(|(&i, sums)| Bin {
                lower: i as f64 / b,
                upper: (i + 1) as f64 / b,
                count: sums.count,
                mean_confidence: sums.confidence / sums.count as f64,
                accuracy: sums.correct as f64 / sums.count as f64,
            })
            .collect()
    }
}

/// The smallest `i` in `0..bins` with `confidence <= (i + 1) / bins` (edge rounded to `f32`);
/// `confidence` is in [0, 1] and `bins > 0`.
fn bin_index(confidence: f32, bins: usize) -> usize {
    let upper = |i: usize| ((i + 1) as f64 / bins as f64) as f32;
    let (mut lo, mut hi) = (0, bins.saturating_sub(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if confidence <= upper(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Whether class `a` ranks above class `b` in `probs`: higher probability, then lower index,
/// NaN below every number.
fn ranks_above(probs: &[f32], a: usize, b: usize) -> bool {
    let (pa, pb) = (probs[a], probs[b]);
    match (pa.is_nan(), pb.is_nan()) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => a < b,
        (false, false) => pa > pb || (pa == pb && a < b),
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn label_of(labels: &[String], class: usize) -> Cow<'_, str> {
    match labels.get(class) {
        Some(label) => Cow::Borrowed(label.as_str()),
        None => Cow::Owned(class.to_string()),
    }
}

fn csv_field(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// Escapes XML markup characters; control characters become spaces and the non-characters
/// U+FFFE/U+FFFF become U+FFFD, so the text is valid XML 1.0 content or attribute value.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn shorten(label: &str, max_chars: usize) -> String {
    if label.chars().count() <= max_chars {
        return label.to_string();
    }
    let mut short: String = label.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Row-normalised rate in [0, 1] to a colour from white to dark blue (#08306b).
fn heat_colour(rate: f64) -> String {
    let t = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    let mix = |dark: f64| (255.0 + (dark - 255.0) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(8.0), mix(48.0), mix(107.0))
}

/// A coordinate with at most one decimal.
fn px(v: f64) -> String {
    let v = (v * 10.0).round() / 10.0;
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in single_line(text).chars() {
        match c {
            '\\' | '|' | '`' | '*' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            c => out.push(c),
        }
    }
    out
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{:.2}%", v * 100.0))
}

fn decimal(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// Minimal XML well-formedness check: balanced, properly nested tags with a single root,
    /// double-quoted unique attributes, and `&` only in entity references.
    fn assert_well_formed(xml: &str) {
        fn check_text(text: &str) {
            assert!(
                !text.contains('<') && !text.contains('>'),
                "raw markup in {text:?}"
            );
            let mut rest = text;
            while let Some(i) = rest.find('&') {
                rest = &rest[i + 1..];
                let end = rest.find(';').expect("unterminated entity");
                let entity = &rest[..end];
                let ok = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
                    || entity
                        .strip_prefix('#')
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                assert!(ok, "bad entity &{entity};");
            }
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')),
                "control character in {text:?}"
            );
        }
        fn check_name(name: &str) {
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '_')),
                "bad name {name:?}"
            );
        }
        fn check_attributes(mut s: &str) {
            let mut seen = Vec::new();
            loop {
                s = s.trim_start();
                if s.is_empty() {
                    return;
                }
                let eq = s.find('=').expect("attribute without value");
                let name = &s[..eq];
                check_name(name);
                assert!(!seen.contains(&name), "duplicate attribute {name}");
                seen.push(name);
                let value = s[eq + 1..].strip_prefix('"').expect("unquoted attribute");
                let close = value.find('"').expect("unterminated attribute");
                check_text(&value[..close]);
                s = &value[close + 1..];
                assert!(s.is_empty() || s.starts_with(char::is_whitespace));
            }
        }

        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            check_text(&rest[..start]);
            rest = &rest[start..];
            if let Some(pi) = rest.strip_prefix("<?") {
                let end = pi.find("?>").expect("unterminated declaration");
                rest = &pi[end + 2..];
                continue;
            }
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched closing tag");
                continue;
            }
            let (body, self_closing) = match tag.strip_suffix('/') {
                Some(body) => (body, true),
                None => (tag, false),
            };
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            check_name(&body[..name_end]);
            check_attributes(&body[name_end..]);
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(&body[..name_end]);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed tags {stack:?}");
        assert_eq!(roots, 1, "expected one root element");
    }

    fn svg_size(svg: &str) -> (f64, f64) {
        let attr = |name: &str| -> f64 {
            let key = format!(" {name}=\"");
            let start = svg.find(&key).expect("size attribute") + key.len();
            let len = svg[start..].find('"').expect("closing quote");
            svg[start..start + len].parse().expect("number")
        };
        (attr("width"), attr("height"))
    }

    /// 3 classes, 11 examples:
    /// ```text
    ///            pred 0  pred 1  pred 2 | support
    /// truth 0       3       1       0   |   4
    /// truth 1       0       2       1   |   3
    /// truth 2       2       0       2   |   4
    /// predicted     5       3       3
    /// ```
    /// accuracy (3+2+2)/11 = 7/11; recall 3/4, 2/3, 2/4; precision 3/5, 2/3, 2/3.
    fn three_class() -> Confusion {
        let mut c = Confusion::new(3);
        for (t, p, n) in [
            (0, 0, 3),
            (0, 1, 1),
            (1, 1, 2),
            (1, 2, 1),
            (2, 0, 2),
            (2, 2, 2),
        ] {
            for _ in 0..n {
                c.add(t, p);
            }
        }
        c
    }

    #[test]
    fn three_class_confusion_by_hand() {
        let c = three_class();
        assert_eq!(c.classes(), 3);
        assert_eq!(c.total(), 11);
        assert_eq!(c.rejected(), 0);
        assert_eq!(c.get(0, 0), 3);
        assert_eq!(c.get(2, 0), 2);
        assert_eq!(c.get(2, 1), 0);
        assert!(close(c.accuracy().unwrap(), 7.0 / 11.0));
        let stats = c.per_class();
        let support: Vec<u64> = stats.iter().map(|s| s.support).collect();
        let correct: Vec<u64> = stats.iter().map(|s| s.correct).collect();
        let predicted: Vec<u64> = stats.iter().map(|s| s.predicted).collect();
        assert_eq!(support, [4, 3, 4]);
        assert_eq!(correct, [3, 2, 2]);
        assert_eq!(predicted, [5, 3, 3]);
        let recall = [3.0 / 4.0, 2.0 / 3.0, 2.0 / 4.0];
        let precision = [3.0 / 5.0, 2.0 / 3.0, 2.0 / 3.0];
        for (s, (r, p)) in stats.iter().zip(recall.iter().zip(precision)) {
            assert!(close(s.recall.unwrap(), *r), "{s:?}");
            assert!(close(s.precision.unwrap(), p), "{s:?}");
        }
    }

    #[test]
    fn out_of_range_pairs_are_rejected_and_empty_rates_are_none() {
        let mut c = Confusion::new(2);
        assert_eq!(c.accuracy(), None);
        c.add(2, 0);
        c.add(0, 7);
        c.add(usize::MAX, usize::MAX);
        assert_eq!((c.total(), c.rejected()), (0, 3));
        assert_eq!(c.get(5, 5), 0);
        c.add(1, 0);
        let stats = c.per_class();
        assert_eq!(stats[0].recall, None);
        assert!(close(stats[0].precision.unwrap(), 0.0));
        assert!(close(stats[1].recall.unwrap(), 0.0));
        assert_eq!(stats[1].precision, None);

        let mut zero = Confusion::new(0);
        zero.add(0, 0);
        assert_eq!(
            (zero.total(), zero.rejected(), zero.accuracy()),
            (0, 1, None)
        );
        assert!(zero.per_class().is_empty());
        assert_eq!(zero.to_csv(&[], false), "truth\\predicted\n");
        assert_well_formed(&zero.to_svg(&[], false, "empty"));
    }

    /// 7 classes, 10 calibration bins, 4 examples:
    ///
    /// | # | truth | probs                                   | pred | rank of truth | p(truth) | conf |
    /// |---|-------|-----------------------------------------|------|---------------|----------|------|
    /// | 1 | 0     | .70 .10 .05 .05 .04 .03 .03             | 0 ✓  | 0             | .70      | .70  |
    /// | 2 | 4     | .30 .20 .15 .10 .10 .10 .05             | 0 ✗  | 4 (ties 3,5)  | .10      | .30  |
    /// | 3 | 6     | .30 .25 .15 .10 .10 .05 .05             | 0 ✗  | 6 (ties 5)    | .05      | .30  |
    /// | 4 | 2     | .10 .10 .60 .10 .05 .05 .00             | 2 ✓  | 0             | .60      | .60  |
    ///
    /// top-1 = 2/4 = 0.5. top-5: ranks 0, 4, 6, 0 -> 3 of 4 below 5 = 0.75 (in #2 class 3 ties
    /// with the truth and wins by index, class 5 loses; in #3 class 5 ties and wins).
    /// NLL = (-ln .7 - ln .1 - ln .05 - ln .6) / 4
    ///     = (0.356675 + 2.302585 + 2.995732 + 0.510826) / 4 = 1.541455.
    /// ECE bins: (0.2, 0.3] holds #2, #3: conf .3, acc 0 -> gap .3, weight 2/4;
    ///           (0.5, 0.6] holds #4: conf .6, acc 1 -> gap .4, weight 1/4;
    ///           (0.6, 0.7] holds #1: conf .7, acc 1 -> gap .3, weight 1/4;
    /// ECE = .15 + .1 + .075 = 0.325.
    #[test]
    fn metrics_four_examples_by_hand() {
        let mut m = Metrics::new(7, 10);
        m.add(0, &[0.70, 0.10, 0.05, 0.05, 0.04, 0.03, 0.03]);
        m.add(4, &[0.30, 0.20, 0.15, 0.10, 0.10, 0.10, 0.05]);
        m.add(6, &[0.30, 0.25, 0.15, 0.10, 0.10, 0.05, 0.05]);
        m.add(2, &[0.10, 0.10, 0.60, 0.10, 0.05, 0.05, 0.00]);
        let names = labels(&["a", "b", "c", "d", "e", "f", "g"]);
        let r = m.report(&names);
        assert_eq!((r.examples, r.rejected), (4, 0));
        assert!(close(r.top1.unwrap(), 0.5));
        assert!(close(r.top5.unwrap(), 0.75));
        assert!(close(r.nll.unwrap(), 1.541455), "{:?}", r.nll);
        assert!(close(r.ece.unwrap(), 0.325), "{:?}", r.ece);

        let per_class: Vec<(usize, &str, u64, Option<f64>)> = r
            .per_class
            .iter()
            .map(|c| (c.class, c.label.as_str(), c.support, c.top1))
            .collect();
        assert_eq!(
            per_class,
            [
                (0, "a", 1, Some(1.0)),
                (2, "c", 1, Some(1.0)),
                (4, "e", 1, Some(0.0)),
                (6, "g", 1, Some(0.0)),
            ]
        );
        let bins: Vec<(u64, bool, bool)> = r
            .reliability
            .iter()
            .map(|b| (b.count, b.accuracy == 0.0, close(b.upper - b.lower, 0.1)))
            .collect();
        assert_eq!(bins, [(2, true, true), (1, false, true), (1, false, true)]);
        assert!(close(r.reliability[0].lower, 0.2));
        assert!(close(r.reliability[0].mean_confidence, 0.3));
        assert_eq!(m.confusion().get(6, 0), 1);
        assert_eq!(m.confusion().get(2, 2), 1);
    }

    #[test]
    fn metrics_reject_bad_inputs_and_survive_nan() {
        let mut m = Metrics::new(3, 15);
        let empty = m.report(&[]);
        assert_eq!((empty.examples, empty.top1, empty.top5), (0, None, None));
        assert_eq!((empty.nll, empty.ece), (None, None));
        assert!(empty.per_class.is_empty() && empty.reliability.is_empty());

        m.add(0, &[0.5, 0.5]);
        m.add(0, &[0.2, 0.2, 0.2, 0.4]);
        m.add(3, &[0.2, 0.3, 0.5]);
        assert_eq!((m.report(&[]).examples, m.confusion().rejected()), (0, 3));

        m.add(1, &[f32::NAN, 0.0, f32::NAN]);
        let r = m.report(&labels(&["x"]));
        assert_eq!((r.examples, r.rejected), (1, 3));
        assert_eq!(m.confusion().get(1, 1), 1, "NaN ranks below 0");
        assert!(close(r.nll.unwrap(), -(1e-12f64).ln()));
        assert!(close(r.ece.unwrap(), 1.0), "confidence 0, correct");
        assert_eq!(
            r.per_class[0].label, "1",
            "missing label falls back to the index"
        );

        let mut all_nan = Metrics::new(2, 15);
        all_nan.add(1, &[f32::NAN, f32::NAN]);
        let r = all_nan.report(&[]);
        assert_eq!(all_nan.confusion().get(1, 0), 1, "all-NaN predicts class 0");
        assert_eq!((r.top1, r.top5, r.ece), (Some(0.0), Some(1.0), None));

        let mut no_bins = Metrics::new(2, 0);
        no_bins.add(0, &[0.9, 0.1]);
        let r = no_bins.report(&[]);
        assert_eq!((r.ece, r.reliability.len()), (None, 0));
    }

    #[test]
    fn perfectly_calibrated_bins_give_zero_ece() {
        let mut samples = Vec::new();
        for (confidence, n, hits) in [(0.1f32, 10, 1), (0.25, 4, 1), (0.5, 6, 3), (0.75, 8, 6)] {
            for i in 0..n {
                samples.push((confidence, i < hits));
            }
        }
        samples.extend([(1.0, true); 5]);
        let ece = expected_calibration_error(&samples, 15).unwrap();
        assert!(ece.abs() < 1e-7, "{ece}");
    }

    #[test]
    fn confident_and_always_wrong_gives_ece_near_one() {
        let samples = vec![(0.999f32, false); 50];
        assert!((expected_calibration_error(&samples, 15).unwrap() - 0.999).abs() < 1e-6);
        assert_eq!(expected_calibration_error(&[(1.0, false)], 15), Some(1.0));

        let mut m = Metrics::new(4, 15);
        for truth in 0..4 {
            let mut probs = [0.0f32; 4];
            probs[(truth + 1) % 4] = 1.0;
            m.add(truth, &probs);
        }
        let r = m.report(&[]);
        assert_eq!((r.top1, r.ece), (Some(0.0), Some(1.0)));
        assert!(close(r.nll.unwrap(), -(1e-12f64).ln()));
    }

    #[test]
    fn ece_binning_edges_and_degenerate_inputs() {
        assert_eq!(bin_index(0.0, 10), 0);
        assert_eq!(bin_index(0.1, 10), 0);
        assert_eq!(bin_index(0.3, 10), 2);
        assert_eq!(bin_index(0.300_001, 10), 3);
        assert_eq!(bin_index(1.0, 10), 9);
        assert_eq!(bin_index(0.5, 1), 0);
        assert!(bin_index(1.0, usize::MAX) < usize::MAX);
        assert_eq!(expected_calibration_error(&[], 15), None);
        assert_eq!(expected_calibration_error(&[(0.5, true)], 0), None);
        assert_eq!(expected_calibration_error(&[(f32::NAN, true)], 15), None);
        assert_eq!(expected_calibration_error(&[(2.0, true)], 15), Some(0.0));
        assert_eq!(expected_calibration_error(&[(-1.0, true)], 15), Some(1.0));
        assert_eq!(
            expected_calibration_error(&[(0.5, true), (0.5, false)], usize::MAX),
            Some(0.0)
        );
    }

    #[test]
    fn csv_quotes_labels_per_rfc_4180() {
        let c = three_class();
        let names = labels(&["fish, chips", "the \"best\" pie", "line\nbreak"]);
        let csv = c.to_csv(&names, false);
        let expected =
            "truth\\predicted,\"fish, chips\",\"the \"\"best\"\" pie\",\"line\nbreak\"\n\
                        \"fish, chips\",3,1,0\n\
                        \"the \"\"best\"\" pie\",0,2,1\n\
                        \"line\nbreak\",2,0,2\n";
        assert_eq!(csv, expected);
        let plain = c.to_csv(&labels(&["a"]), false);
        assert!(
            plain.starts_with("truth\\predicted,a,1,2\na,3,1,0\n"),
            "{plain}"
        );
    }

    #[test]
    fn csv_only_present_drops_unused_classes() {
        let mut c = Confusion::new(6);
        c.add(1, 1);
        c.add(1, 4);
        c.add(3, 1);
        let names = labels(&["c0", "c1", "c2", "c3", "c4", "c5"]);
        assert_eq!(c.present_classes(), [1, 3, 4]);
        assert_eq!(
            c.to_csv(&names, true),
            "truth\\predicted,c1,c3,c4\nc1,1,0,1\nc3,1,0,0\nc4,0,0,0\n"
        );
        let full = c.to_csv(&names, false);
        assert_eq!(full.lines().count(), 7);
        assert!(full.lines().all(|l| l.split(',').count() == 7));
        assert_eq!(Confusion::new(4).to_csv(&names, true), "truth\\predicted\n");
    }

    #[test]
    fn svg_is_well_formed_and_escapes_hostile_labels() {
        let c = three_class();
        let names = labels(&["fish & chips", "<script>", "it's \"quoted\"\n\u{1}"]);
        let svg = c.to_svg(&names, false, "Food <101> & \"friends\"");
        assert_well_formed(&svg);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("fish &amp; chips"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("it&apos;s &quot;quoted&quot;"));
        assert!(svg.contains("Food &lt;101&gt; &amp; &quot;friends&quot;"));
        assert!(!svg.contains("<script>"));
        assert_eq!(svg.matches("<rect class=\"cell\"").count(), 9);
        assert!(
            svg.contains(">3</text>"),
            "counts printed for a small matrix"
        );
        assert!(svg.contains("rotate(-60)"));
        assert!(svg.contains(&heat_colour(0.75)), "row 0: 3 of 4");
    }

    #[test]
    fn svg_cells_match_classes_and_size_grows() {
        let mut sizes = Vec::new();
        for n in [1usize, 3, 31, 101] {
            let mut c = Confusion::new(n);
            for t in 0..n {
                c.add(t, t);
                c.add(t, (t * 7 + 1) % n);
            }
            let names: Vec<String> = (0..n).map(|i| format!("dish_number_{i}")).collect();
            let svg = c.to_svg(&names, false, "eval");
            assert_well_formed(&svg);
            assert_eq!(svg.matches("<rect class=\"cell\"").count(), n * n);
            assert!(svg.contains("font-weight=\"bold\">eval</text>"));
            let has_counts = svg.contains("fill=\"#1a1a1a\">") || svg.contains("fill=\"#ffffff\">");
            assert_eq!(
                has_counts,
                n <= 30,
                "counts only up to 30 classes (n = {n})"
            );
            sizes.push(svg_size(&svg));
        }
        for pair in sizes.windows(2) {
            assert!(pair[1].0 > pair[0].0 && pair[1].1 > pair[0].1, "{sizes:?}");
        }
    }

    #[test]
    fn svg_only_present_and_empty_matrix() {
        let mut c = Confusion::new(101);
        c.add(3, 3);
        c.add(3, 50);
        c.add(7, 3);
        let svg = c.to_svg(&[], true, "subset");
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<rect class=\"cell\"").count(), 9);
        let long = vec!["x".repeat(200); 3];
        let svg = three_class().to_svg(&long, false, "");
        assert_well_formed(&svg);
        assert!(svg.contains(&format!(">{}…</text>", "x".repeat(39))));
        let empty = Confusion::new(101).to_svg(&[], true, "nothing");
        assert_well_formed(&empty);
        assert!(empty.contains("no data"));
        assert_eq!(empty.matches("<rect class=\"cell\"").count(), 0);
    }

    #[test]
    fn markdown_report_lists_metrics_then_classes_in_order() {
        let report = Report {
            examples: 4,
            rejected: 1,
            top1: Some(0.5),
            top5: Some(0.75),
            nll: Some(1.541455),
            ece: None,
            per_class: vec![
                ClassReport {
                    class: 9,
                    label: "pad|thai".to_string(),
                    support: 1,
                    top1: Some(0.0),
                },
                ClassReport {
                    class: 2,
                    label: "apple_pie".to_string(),
                    support: 3,
                    top1: Some(2.0 / 3.0),
                },
            ],
            reliability: Vec::new(),
        };
        let md = report_markdown(&report, "Food-101 val");
        let expected = "## Food-101 val\n\n\
                        | metric | value |\n\
                        | --- | ---: |\n\
                        | examples | 4 |\n\
                        | rejected | 1 |\n\
                        | top-1 | 50.00% |\n\
                        | top-5 | 75.00% |\n\
                        | NLL | 1.5415 |\n\
                        | ECE | n/a |\n\n\
                        | class | label | support | top-1 |\n\
                        | ---: | --- | ---: | ---: |\n\
                        | 2 | apple_pie | 3 | 66.67% |\n\
                        | 9 | pad\\|thai | 1 | 0.00% |\n";
        assert_eq!(md, expected);
        let empty = report_markdown(&Metrics::new(3, 15).report(&[]), "");
        assert!(empty.starts_with("| metric | value |"));
        assert!(empty.contains("| top-1 | n/a |"));
        assert!(empty.ends_with("No per-class results.\n"));
    }

    fn probs_strategy(classes: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(
            prop_oneof![
                4 => 0.0f32..=1.0,
                1 => Just(0.1f32),
                1 => proptest::num::f32::ANY,
            ],
            classes,
        )
    }

    proptest! {
        #[test]
        fn ece_lies_in_unit_interval(
            samples in proptest::collection::vec((proptest::num::f32::ANY, any::<bool>()), 0..200),
            bins in 0usize..40,
        ) {
            if let Some(ece) = expected_calibration_error(&samples, bins) {
                prop_assert!((0.0..=1.0).contains(&ece), "{}", ece);
            }
        }

        #[test]
        fn top5_is_at_least_top1(
            (classes, examples) in (1usize..12).prop_flat_map(|classes| {
                let example = (0..classes + 1, probs_strategy(classes));
                (Just(classes), proptest::collection::vec(example, 0..60))
            }),
        ) {
            let mut m = Metrics::new(classes, 15);
            for (truth, probs) in &examples {
                m.add(*truth, probs);
            }
            let r = m.report(&[]);
            prop_assert_eq!(r.examples + r.rejected, examples.len() as u64);
            match (r.top1, r.top5) {
                (Some(top1), Some(top5)) => prop_assert!(top5 >= top1),
                (None, None) => prop_assert_eq!(r.examples, 0),
                other => prop_assert!(false, "{:?}", other),
            }
            if classes <= TOP_K {
                prop_assert!(r.top5.is_none_or(|t| t == 1.0));
            }
            if let Some(ece) = r.ece {
                prop_assert!((0.0..=1.0).contains(&ece));
            }
            if let Some(nll) = r.nll {
                prop_assert!((0.0..=-(MIN_PROBABILITY.ln())).contains(&nll));
            }
        }
    }
}
