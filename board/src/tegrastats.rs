//! Jetson `tegrastats`: a pure parser for its lines (JetPack 4, 5 and 6 formats) and a
//! [`Telemetry`] that runs it as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::BoardError;
use crate::telemetry::{find_program, ProcReader, Sample, Telemetry, Unavailable};

/// Readings at or below this are sensors that are switched off (tegrastats prints -256C).
const SENSOR_OFF_C: f64 = -200.0;

/// Input rails: the whole board's power where the board has one.
const INPUT_RAILS: [&str; 3] = ["VDD_IN", "POM_5V_IN", "VDD_5V_IN"];

/// One CPU core of a tegrastats line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuCore {
    /// The core is offline (`off`).
    Off,
    /// Load in percent and clock in MHz, when printed.
    On {
        load_pct: f64,
        freq_mhz: Option<u32>,
    },
}

/// A power rail: `NAME cur/avg`, both mW.
#[derive(Debug, Clone, PartialEq)]
pub struct Rail {
    pub name: String,
    pub current_mw: f64,
    pub average_mw: f64,
}

/// Everything recognised in one tegrastats line. Unknown tokens are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TegraLine {
    /// The leading `MM-DD-YYYY HH:MM:SS` of JetPack 6, as printed.
    pub timestamp: Option<String>,
    pub ram_used_mb: Option<u64>,
    pub ram_total_mb: Option<u64>,
    pub swap_used_mb: Option<u64>,
    pub swap_total_mb: Option<u64>,
    pub cpus: Vec<CpuCore>,
    /// External memory controller load, percent.
    pub emc_load_pct: Option<f64>,
    pub emc_freq_mhz: Option<u32>,
    /// `GR3D_FREQ` load, percent.
    pub gpu_load_pct: Option<f64>,
    /// GPU clocks; Orin prints one per GPC (`0%@[305,305]`).
    pub gpu_freq_mhz: Vec<u32>,
    /// `(sensor, °C)`, switched-off sensors (-256C) left out.
    pub temperatures_c: Vec<(String, f64)>,
    pub rails: Vec<Rail>,
}

impl TegraLine {
    /// Mean load of the online cores, 0..=1.
    pub fn cpu_util(&self) -> Option<f64> {
        let loads: Vec<f64> = self
            .cpus
            .iter()
            .filter_map(|c| match c {
                CpuCore::On { load_pct, .. } => Some(*load_pct),
                CpuCore::Off => None,
            })
            .collect();
        (!loads.is_empty()).then(|| loads.iter().sum::<f64>() / loads.len() as f64 / 100.0)
    }

    /// The board's power, mW: the input rail when there is one, else the sum of the rails.
    pub fn power_mw(&self) -> Option<f64> {
        if let Some(input) = self
            .rails
            .iter()
            .find(|r| INPUT_RAILS.contains(&r.name.as_str()))
        {
            return Some(input.current_mw);
        }
        (!self.rails.is_empty()).then(|| self.rails.iter().map(|r| r.current_mw).sum())
    }

    /// The fields of a [`Sample`] this line provides.
    pub fn to_sample(&self) -> Sample {
        Sample {
            cpu_util: self.cpu_util(),
            ram_used_mb: self.ram_used_mb.map(|v| v as f64),
            ram_total_mb: self.ram_total_mb.map(|v| v as f64),
            temperatures_c: self.temperatures_c.clone(),
            power_rails_mw: self
                .rails
                .iter()
                .map(|r| (r.name.clone(), r.current_mw))
                .collect(),
            power_mw: self.power_mw(),
            gpu_util: self.gpu_load_pct.map(|p| p / 100.0),
            gpu_freq_mhz: self.gpu_freq_mhz.iter().copied().max(),
            ..Sample::default()
        }
    }
}

/// Parses one line of tegrastats output. Never fails: what is not recognised is skipped.
pub fn parse_line(line: &str) -> TegraLine {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let mut out = TegraLine::default();
    let mut i = 0;
    if tokens.len() >= 2 && is_date(tokens[0]) && is_time(tokens[1]) {
        out.timestamp = Some(format!("{} {}", tokens[0], tokens[1]));
        i = 2;
    }
    while i < tokens.len() {
        let token = tokens[i];
        let next = tokens.get(i + 1).copied();
        let mut consumed_next = false;
        match (token, next) {
            ("RAM", Some(value)) => {
                if let Some((used, total)) = used_total(value, "MB") {
                    out.ram_used_mb = Some(used);
                    out.ram_total_mb = Some(total);
                    consumed_next = true;
                }
            }
            ("SWAP", Some(value)) => {
                if let Some((used, total)) = used_total(value, "MB") {
                    out.swap_used_mb = Some(used);
                    out.swap_total_mb = Some(total);
                    consumed_next = true;
                }
            }
            ("CPU", Some(value)) if value.starts_with('[') => {
                out.cpus = parse_cores(value);
                consumed_next = true;
            }
            ("EMC_FREQ", Some(value)) => {
                if let Some((load, freqs)) = load_at_freq(value) {
                    out.emc_load_pct = Some(load);
                    out.emc_freq_mhz = freqs.first().copied();
                    consumed_next = true;
                }
            }
            ("GR3D_FREQ", Some(value)) => {
                if let Some((load, freqs)) = load_at_freq(value) {
                    out.gpu_load_pct = Some(load);
                    out.gpu_freq_mhz = freqs;
                    consumed_next = true;
                }
            }
            _ => {
                if let Some((name, celsius)) = temperature(token) {
                    if celsius > SENSOR_OFF_C {
                        out.temperatures_c.push((name.to_string(), celsius));
                    }
                } else if let Some((current, average)) = next.and_then(rail_value) {
                    if is_rail_name(token) {
                        out.rails.push(Rail {
                            name: token.to_string(),
                            current_mw: current,
                            average_mw: average,
                        });
                        consumed_next = true;
                    }
                }
            }
        }
        i += if consumed_next { 2 } else { 1 };
    }
    out
}

/// `MM-DD-YYYY`.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `HH:MM:SS`.
fn is_time(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `2204/3956MB` with `unit` = "MB".
fn used_total(s: &str, unit: &str) -> Option<(u64, u64)> {
    let (used, total) = s.strip_suffix(unit)?.split_once('/')?;
    Some((used.parse().ok()?, total.parse().ok()?))
}

/// `[12%@1479,8%@1479,off]`.
fn parse_cores(s: &str) -> Vec<CpuCore> {
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter_map(|core| {
            if core == "off" {
                return Some(CpuCore::Off);
            }
            let (load, freq) = match core.split_once('@') {
                Some((load, freq)) => (load, Some(freq.parse().ok()?)),
                None => (core, None),
            };
            Some(CpuCore::On {
                load_pct: load.strip_suffix('%')?.parse().ok()?,
                freq_mhz: freq,
            })
        })
        .collect()
}

/// `4%@1600`, `0%@[305,305]` or `0%`: load in percent and the clocks printed.
fn load_at_freq(s: &str) -> Option<(f64, Vec<u32>)> {
    let (load, freq) = match s.split_once('@') {
        Some((load, freq)) => (load, Some(freq)),
        None => (s, None),
    };
    let load = load.strip_suffix('%')?.parse().ok()?;
    let freqs = match freq {
        None => Vec::new(),
        Some(f) => f
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?,
    };
    Some((load, freqs))
}

/// `CPU@47.718C` or `cv0@-256C`.
fn temperature(s: &str) -> Option<(&str, f64)> {
    let (name, value) = s.split_once('@')?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some((name, value.strip_suffix('C')?.parse().ok()?))
}

/// `4752mW/4752mW` (JetPack 5 and 6) or `2451/2451` (JetPack 4), both mW.
fn rail_value(s: &str) -> Option<(f64, f64)> {
    let (current, average) = s.split_once('/')?;
    let mw = |v: &str| -> Option<f64> {
        let v = v.strip_suffix("mW").unwrap_or(v);
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse().ok())
            .flatten()
    };
    Some((mw(current)?, mw(average)?))
}

/// Rail names are upper-case identifiers such as `VDD_CPU_GPU_CV` or `POM_5V_IN`.
fn is_rail_name(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_uppercase())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The latest line from the reader thread, and the energy integrated from the power it read.
#[derive(Debug, Default)]
struct Latest {
    line: Option<TegraLine>,
    energy_uj: u64,
    at: Option<Instant>,
    ended: Option<String>,
}

/// Runs `tegrastats --interval MS` and reports its latest line, plus this process's memory
/// from `/proc`. The energy counter is integrated by dishcam from the board power of each line.
pub struct TegrastatsTelemetry {
    child: Child,
    reader: Option<JoinHandle<()>>,
    shared: Arc<(Mutex<Latest>, Condvar)>,
    interval: Duration,
    proc: ProcReader,
    latest_problems: Vec<Unavailable>,
}

impl TegrastatsTelemetry {
    /// The interval passed to tegrastats.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

    /// Starts tegrastats from the `PATH` under `root`; fails when it is not installed or
    /// does not start.
    pub fn start(root: &Path, interval: Duration) -> Result<TegrastatsTelemetry, BoardError> {
        let path = find_program(root, "tegrastats").ok_or(BoardError::ProgramNotFound {
            program: "tegrastats",
        })?;
        let mut child = Command::new(&path)
            .arg("--interval")
            .arg(interval.as_millis().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BoardError::Spawn {
                path: path.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let shared = Arc::new((Mutex::new(Latest::default()), Condvar::new()));
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tegrastats".into())
                .spawn(move || read_lines(BufReader::new(stdout), &shared))
                .map_err(|source| BoardError::Spawn { path, source })?
        };
        Ok(TegrastatsTelemetry {
            child,
            reader: Some(reader),
            shared,
            interval,
            proc: ProcReader::new(root),
            latest_problems: Vec::new(),
        })
    }
}

/// How long the first sample waits at most for tegrastats' first line.
fn first_line_timeout(interval: Duration) -> Duration {
    interval * 2 + Duration::from_millis(500)
}

fn read_lines(lines: impl BufRead, shared: &(Mutex<Latest>, Condvar)) {
    let (latest, changed) = shared;
    let mut end = "tegrastats closed its output".to_string();
    for line in lines.lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                end = format!("reading tegrastats output: {e}");
                break;
            }
        };
        let parsed = parse_line(&line);
        let now = Instant::now();
        let mut latest = latest.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(at), Some(mw)) = (latest.at, parsed.power_mw()) {
            // mW times ms is µJ.
            latest.energy_uj += (mw * now.duration_since(at).as_secs_f64() * 1000.0) as u64;
        }
        latest.at = Some(now);
        latest.line = Some(parsed);
        changed.notify_all();
    }
    let mut latest = latest.lock().unwrap_or_else(|p| p.into_inner());
    latest.ended = Some(end);
    changed.notify_all();
}

impl Telemetry for TegrastatsTelemetry {
    fn name(&self) -> &'static str {
        "tegrastats"
    }

    /// Waits for tegrastats' first line (at most twice the interval plus 0.5 s), then returns
    /// the latest one without waiting.
    fn sample(&mut self) -> Sample {
        let mut problems = Vec::new();
        let from_proc = self.proc.sample(&mut problems);
        let (latest, changed) = &*self.shared;
        let guard = latest.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = changed
            .wait_timeout_while(guard, first_line_timeout(self.interval), |l| {
                l.line.is_none() && l.ended.is_none()
            })
            .unwrap_or_else(|p| p.into_inner());
        let mut sample = match &guard.line {
            Some(line) => {
                let mut sample = line.to_sample();
                if line.power_mw().is_some() {
                    sample.energy_uj = Some(guard.energy_uj);
                } else {
                    problems.push(Unavailable::new(
                        "power",
                        "tegrastats printed no power rails",
                    ));
                }
                if line.gpu_load_pct.is_none() {
                    problems.push(Unavailable::new(
                        "gpu_util",
                        "tegrastats printed no GR3D_FREQ",
                    ));
                }
                sample
            }
            None => {
                problems.push(Unavailable::new(
                    "Jetson rails, temperatures and GPU (tegrastats)",
                    guard
                        .ended
                        .clone()
                        .unwrap_or_else(|| "tegrastats printed no line yet".to_string()),
                ));
                Sample::default()
            }
        };
        if let Some(ended) = &guard.ended {
            if guard.line.is_some() {
                problems.push(Unavailable::new("fresh tegrastats readings", ended.clone()));
            }
        }
        drop(guard);
        sample.timestamp_unix_ms = from_proc.timestamp_unix_ms;
        sample.rss_mb = from_proc.rss_mb;
        sample.rss_peak_mb = from_proc.rss_peak_mb;
        sample.cpu_util = from_proc.cpu_util.or(sample.cpu_util);
        if sample.ram_total_mb.is_none() {
            sample.ram_used_mb = from_proc.ram_used_mb;
            sample.ram_total_mb = from_proc.ram_total_mb;
        }
        self.latest_problems = problems;
        sample
    }

    fn unavailable(&self) -> Vec<Unavailable> {
        self.latest_problems.clone()
    }
}

impl Drop for TegrastatsTelemetry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
