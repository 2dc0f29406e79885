//! Pure parsers for `/proc/stat`, `/proc/meminfo` and `/proc/self/status`.

/// Cumulative CPU time of all cores from the first `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
    /// All ticks (guest time is already counted in user and nice, so it is left out).
    pub total: u64,
}

impl CpuTimes {
    /// The busy fraction (0..=1) of all cores between `earlier` and `self`, or `None` when no
    /// tick passed or the counters went backwards.
    pub fn utilisation_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        if total == 0 || idle > total {
            return None;
        }
        Some((total - idle) as f64 / total as f64)
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`
/// (`cpu user nice system idle iowait irq softirq steal guest guest_nice`).
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    let total = fields.iter().take(8).sum();
    Some(CpuTimes { idle, total })
}

/// System memory from `/proc/meminfo`, in MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    /// `MemTotal`.
    pub total_mb: f64,
    /// `MemTotal - MemAvailable`: memory that cannot be reclaimed without swapping.
    pub used_mb: f64,
}

/// Parses `MemTotal` and `MemAvailable` from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let total = kib_field(text, "MemTotal")?;
    let available = kib_field(text, "MemAvailable")?;
    Some(Memory {
        total_mb: total as f64 / 1024.0,
        used_mb: total.saturating_sub(available) as f64 / 1024.0,
    })
}

/// Resident memory of a process from `/proc/<pid>/status`, in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessMemory {
    /// `VmRSS`: resident now.
    pub rss_mb: Option<f64>,
    /// `VmHWM`: the peak resident size ("high water mark").
    pub peak_rss_mb: Option<f64>,
}

/// Parses `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> ProcessMemory {
    ProcessMemory {
        rss_mb: kib_field(text, "VmRSS").map(|k| k as f64 / 1024.0),
        peak_rss_mb: kib_field(text, "VmHWM").map(|k| k as f64 / 1024.0),
    }
}

/// A `Key:   1234 kB` line's number.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}
