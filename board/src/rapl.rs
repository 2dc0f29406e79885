//! Intel/AMD RAPL energy counters through powercap:
//! `/sys/class/powercap/intel-rapl:*/{name,energy_uj,max_energy_range_uj}`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::telemetry::{io_reason, Unavailable};

/// One powercap zone being polled.
#[derive(Debug)]
struct Domain {
    /// "package-0", or "package-0/core" for a subzone.
    name: String,
    /// Counts towards the total (psys when present, else every top-level zone).
    in_total: bool,
    energy_file: PathBuf,
    max_range_uj: Option<u64>,
    last_uj: u64,
}

/// What one [`Rapl::read_at`] measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaplReading {
    /// Mean power of each zone since the previous read, mW.
    pub rails_mw: Vec<(String, f64)>,
    /// Mean power of the whole package (or platform, with psys) since the previous read, mW.
    pub power_mw: Option<f64>,
    /// Energy of the total zones since discovery, µJ, corrected for counter wrap-around.
    pub energy_uj: Option<u64>,
    /// Zones that could not be read this time.
    pub unavailable: Vec<Unavailable>,
}

/// The RAPL zones of a machine and the energy they have counted since discovery.
#[derive(Debug)]
pub struct Rapl {
    domains: Vec<Domain>,
    last_read: Instant,
    energy_uj: u64,
    problems: Vec<Unavailable>,
}

impl Rapl {
    /// Finds the zones under `root` and reads each counter once as the baseline. Zones that
    /// cannot be read are left out and listed by [`Rapl::unavailable`].
    pub fn discover(root: &Path) -> Rapl {
        Rapl::discover_at(root, Instant::now())
    }

    /// [`Rapl::discover`] with the baseline taken at `now`.
    pub fn discover_at(root: &Path, now: Instant) -> Rapl {
        let dir = root.join("sys/class/powercap");
        let mut problems = Vec::new();
        let mut zones: Vec<(String, PathBuf)> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .filter(|(name, _)| name.starts_with("intel-rapl:"))
                .collect(),
            Err(e) => {
                problems.push(Unavailable::new(
                    "power (RAPL)",
                    format!("{}: {}", dir.display(), io_reason(&e)),
                ));
                Vec::new()
            }
        };
        zones.sort();
        if zones.is_empty() && problems.is_empty() {
            problems.push(Unavailable::new(
                "power (RAPL)",
                format!("no intel-rapl zones under {}", dir.display()),
            ));
        }
        let zone_name = |path: &Path, id: &str| {
            fs::read_to_string(path.join("name"))
                .map(|n| n.trim().to_string())
                .unwrap_or_else(|_| id.to_string())
        };
        let has_psys = zones.iter().any(|(_, p)| zone_name(p, "") == "psys");
        let mut domains = Vec::new();
        for (id, path) in &zones {
            let top_level = id.matches(':').count() == 1;
            let own = zone_name(path, id);
            let name = if top_level {
                own.clone()
            } else {
                let parent = id.rsplit_once(':').map_or(id.as_str(), |(p, _)| p);
                format!("{}/{own}", zone_name(&dir.join(parent), parent))
            };
            let energy_file = path.join("energy_uj");
            match read_u64(&energy_file) {
                Ok(uj) => domains.push(Domain {
                    in_total: if has_psys { own == "psys" } else { top_level },
                    max_range_uj: read_u64(&path.join("max_energy_range_uj")).ok(),
                    name,
                    energy_file,
                    last_uj: uj,
                }),
                Err(e) => problems.push(Unavailable::new(
                    format!("power {name} (RAPL {id})"),
                    energy_reason(&e),
                )),
            }
        }
        Rapl {
            domains,
            last_read: now,
            energy_uj: 0,
            problems,
        }
    }

    /// Zones found but not readable, or no zones at all, with the reason.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.problems
    }

    /// Whether any zone is being polled.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Reads every zone now: mean power since the previous read and the energy counted so far.
    pub fn read(&mut self) -> RaplReading {
        self.read_at(Instant::now())
    }

    /// [`Rapl::read`] with the time of the read given, so tests control the elapsed time.
    pub fn read_at(&mut self, now: Instant) -> RaplReading {
        let mut reading = RaplReading::default();
        if self.domains.is_empty() {
            return reading;
        }
        let seconds = now.saturating_duration_since(self.last_read).as_secs_f64();
        self.last_read = now;
        let mut total_mw = 0.0;
        let mut total_read = false;
        for domain in &mut self.domains {
            let now_uj = match read_u64(&domain.energy_file) {
                Ok(uj) => uj,
                Err(e) => {
                    reading.unavailable.push(Unavailable::new(
                        format!("power {}", domain.name),
                        energy_reason(&e),
                    ));
                    continue;
                }
            };
            let delta = energy_delta_uj(domain.last_uj, now_uj, domain.max_range_uj);
            domain.last_uj = now_uj;
            let Some(delta) = delta else {
                reading.unavailable.push(Unavailable::new(
                    format!("power {}", domain.name),
                    "energy_uj went backwards and max_energy_range_uj is unknown",
                ));
                continue;
            };
            if domain.in_total {
                self.energy_uj += delta;
                total_read = true;
            }
            if seconds > 0.0 {
                let mw = delta as f64 / seconds / 1000.0;
                reading.rails_mw.push((domain.name.clone(), mw));
                if domain.in_total {
                    total_mw += mw;
                }
            }
        }
        if total_read {
            reading.energy_uj = Some(self.energy_uj);
            if seconds > 0.0 {
                reading.power_mw = Some(total_mw);
            }
        }
        reading
    }
}

/// Energy counted between two reads of `energy_uj`. The counter wraps to zero after
/// `max_energy_range_uj`; without that range a counter that went backwards gives `None`.
pub fn energy_delta_uj(previous: u64, now: u64, max_range_uj: Option<u64>) -> Option<u64> {
    if now >= previous {
        return Some(now - previous);
    }
    let range = max_range_uj?;
    if previous > range {
        return None;
    }
    Some(range - previous + now)
}

/// Why `energy_uj` could not be read, in words a user can act on.
pub fn energy_reason(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::PermissionDenied {
        "energy_uj is readable only by root on this kernel".to_string()
    } else {
        io_reason(e)
    }
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds {:?}, not a number", path.display(), text.trim()),
        )
    })
}
