//! The [`Telemetry`] trait, the [`Sample`] it returns, the Linux implementation, and
//! [`detect`], which picks tegrastats on a Jetson and Linux sources elsewhere.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::platform::detect_platform;
use crate::procfs::{self, CpuTimes};
use crate::rapl::Rapl;
use crate::tegrastats::TegrastatsTelemetry;
use crate::thermal::read_thermal_zones;

/// One reading of the board. A field is `None` (or empty) when the source cannot provide it;
/// [`Telemetry::unavailable`] says why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the sample was taken, milliseconds since the Unix epoch.
    pub timestamp_unix_ms: Option<u64>,
    /// Busy fraction of all CPU cores since the previous sample, 0..=1.
    pub cpu_util: Option<f64>,
    /// System memory in use (total minus available), MiB.
    pub ram_used_mb: Option<f64>,
    /// System memory, MiB.
    pub ram_total_mb: Option<f64>,
    /// Resident memory of this process, MiB.
    pub rss_mb: Option<f64>,
    /// Peak resident memory of this process so far, MiB.
    pub rss_peak_mb: Option<f64>,
    /// `(sensor, °C)`; switched-off sensors are left out.
    pub temperatures_c: Vec<(String, f64)>,
    /// `(rail or zone, mW)`: instantaneous on Jetson, the mean since the previous sample for RAPL.
    pub power_rails_mw: Vec<(String, f64)>,
    /// Power of the whole board or package, mW.
    pub power_mw: Option<f64>,
    /// Energy counted since the telemetry source started, µJ; monotonic, so the difference of
    /// two samples is the energy between them.
    pub energy_uj: Option<u64>,
    /// GPU busy fraction, 0..=1.
    pub gpu_util: Option<f64>,
    /// GPU clock, MHz.
    pub gpu_freq_mhz: Option<u32>,
}

/// A telemetry field that cannot be read here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    /// What is missing, e.g. "power package-0".
    pub what: String,
    /// Why, e.g. "energy_uj is readable only by root on this kernel".
    pub why: String,
}

impl Unavailable {
    /// An unavailable field with its reason.
    pub fn new(what: impl Into<String>, why: impl Into<String>) -> Unavailable {
        Unavailable {
            what: what.into(),
            why: why.into(),
        }
    }
}

/// A source of board telemetry. Reading never fails: what cannot be read is left out of the
/// sample and reported by [`Telemetry::unavailable`].
pub trait Telemetry: Send {
    /// Short name of the source, e.g. "linux" or "tegrastats".
    fn name(&self) -> &'static str;
    /// Reads everything the source can read now. Rates (CPU utilisation, RAPL power) are over
    /// the time since the previous call, or since the source was created for the first call.
    fn sample(&mut self) -> Sample;
    /// What the source could not read at creation or in the latest sample, and why.
    fn unavailable(&self) -> Vec<Unavailable>;
}

/// Picks the telemetry for the board under `root` (`/` in production): tegrastats on a Jetson
/// that has it, else [`LinuxTelemetry`]. When tegrastats was expected but could not start,
/// the Linux source says so in its unavailable list.
pub fn detect(root: &Path) -> Box<dyn Telemetry> {
    if detect_platform(root).is_jetson() {
        let why = match TegrastatsTelemetry::start(root, TegrastatsTelemetry::DEFAULT_INTERVAL) {
            Ok(t) => return Box::new(t),
            Err(e) => e.to_string(),
        };
        log::info!("tegrastats unavailable, using /proc and sysfs: {why}");
        let mut linux = LinuxTelemetry::new(root);
        linux
            .fixed
            .push(Unavailable::new("Jetson rails and GPU (tegrastats)", why));
        return Box::new(linux);
    }
    Box::new(LinuxTelemetry::new(root))
}

/// `/proc` (CPU, memory, this process), thermal zones and RAPL under a root directory.
#[derive(Debug)]
pub struct LinuxTelemetry {
    proc: ProcReader,
    rapl: Rapl,
    /// Found at creation and true for the life of the source.
    fixed: Vec<Unavailable>,
    /// Found by the latest sample.
    latest: Vec<Unavailable>,
}

impl LinuxTelemetry {
    /// Opens the sources under `root` and takes the baselines for rates, so the first
    /// [`Telemetry::sample`] already has CPU utilisation and power when time has passed.
    pub fn new(root: &Path) -> LinuxTelemetry {
        let proc = ProcReader::new(root);
        let rapl = Rapl::discover(root);
        let mut fixed = rapl.unavailable().to_vec();
        fixed.push(Unavailable::new(
            "gpu_util, gpu_freq_mhz",
            "GPU load is read from tegrastats, on Jetson boards only",
        ));
        let mut telemetry = LinuxTelemetry {
            proc,
            rapl,
            fixed,
            latest: Vec::new(),
        };
        let (_, zones) = read_thermal_zones(root);
        telemetry.latest = zones;
        telemetry
    }
}

impl Telemetry for LinuxTelemetry {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn sample(&mut self) -> Sample {
        let mut problems = Vec::new();
        let mut sample = self.proc.sample(&mut problems);
        let (temps, zones) = read_thermal_zones(&self.proc.root);
        sample.temperatures_c = temps;
        problems.extend(zones);
        if !self.rapl.is_empty() {
            let rapl = self.rapl.read();
            sample.power_rails_mw = rapl.rails_mw;
            sample.power_mw = rapl.power_mw;
            sample.energy_uj = rapl.energy_uj;
            problems.extend(rapl.unavailable);
        }
        self.latest = problems;
        sample
    }

    fn unavailable(&self) -> Vec<Unavailable> {
        self.fixed.iter().chain(&self.latest).cloned().collect()
    }
}

/// Reads `/proc/stat`, `/proc/meminfo` and `/proc/self/status` under a root, keeping the
/// previous CPU times for utilisation.
#[derive(Debug)]
pub(crate) struct ProcReader {
    pub(crate) root: PathBuf,
    previous_cpu: Option<CpuTimes>,
}

impl ProcReader {
    pub(crate) fn new(root: &Path) -> ProcReader {
        let previous_cpu = fs::read_to_string(root.join("proc/stat"))
            .ok()
            .and_then(|s| procfs::parse_cpu_times(&s));
        ProcReader {
            root: root.to_path_buf(),
            previous_cpu,
        }
    }

    /// A sample with the `/proc` fields filled in; what failed is pushed to `problems`.
    pub(crate) fn sample(&mut self, problems: &mut Vec<Unavailable>) -> Sample {
        let mut sample = Sample {
            timestamp_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            ..Sample::default()
        };
        match read_parsed(&self.root.join("proc/stat"), procfs::parse_cpu_times) {
            Ok(now) => {
                if let Some(previous) = self.previous_cpu {
                    sample.cpu_util = now.utilisation_since(&previous);
                }
                self.previous_cpu = Some(now);
            }
            Err(why) => problems.push(Unavailable::new("cpu_util", why)),
        }
        match read_parsed(&self.root.join("proc/meminfo"), procfs::parse_meminfo) {
            Ok(memory) => {
                sample.ram_used_mb = Some(memory.used_mb);
                sample.ram_total_mb = Some(memory.total_mb);
            }
            Err(why) => problems.push(Unavailable::new("ram_used_mb, ram_total_mb", why)),
        }
        match fs::read_to_string(self.root.join("proc/self/status")) {
            Ok(text) => {
                let memory = procfs::parse_status(&text);
                sample.rss_mb = memory.rss_mb;
                sample.rss_peak_mb = memory.peak_rss_mb;
                if memory.rss_mb.is_none() {
                    problems.push(Unavailable::new("rss_mb", "no VmRSS in /proc/self/status"));
                }
            }
            Err(e) => problems.push(Unavailable::new(
                "rss_mb, rss_peak_mb",
                format!("/proc/self/status: {}", io_reason(&e)),
            )),
        }
        sample
    }
}

/// Reads a file and parses it; the error says which file and what went wrong.
fn read_parsed<T>(path: &Path, parse: impl Fn(&str) -> Option<T>) -> Result<T, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?;
    parse(&text).ok_or_else(|| format!("{}: unexpected format", path.display()))
}

/// A short reason for an I/O error on a telemetry file.
pub(crate) fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "not present on this system".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// The path of `program` in the directories of `PATH` (and the usual system ones), each taken
/// under `root`.
pub(crate) fn find_program(root: &Path, program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from));
    dirs.map(|dir| {
        root.join(dir.strip_prefix("/").unwrap_or(&dir))
            .join(program)
    })
    .find(|candidate| candidate.is_file())
}
