//! Linux thermal zones: `/sys/class/thermal/thermal_zone*/{type,temp}`.

use std::fs;
use std::path::Path;

use crate::telemetry::{io_reason, Unavailable};

/// Readings at or below this are sensors that are switched off (Jetson reports -256 °C).
const SENSOR_OFF_C: f64 = -200.0;

/// Reads every thermal zone under `root`: `(zone type, °C)` for the readable ones, sorted by
/// zone number, and the unreadable ones as unavailable. A zone type seen twice is suffixed with
/// its zone number.
pub fn read_thermal_zones(root: &Path) -> (Vec<(String, f64)>, Vec<Unavailable>) {
    let dir = root.join("sys/class/thermal");
    let mut zones: Vec<(u32, std::path::PathBuf)> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("thermal_zone")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect(),
        Err(e) => {
            return (
                Vec::new(),
                vec![Unavailable::new(
                    "temperatures",
                    format!("{}: {}", dir.display(), io_reason(&e)),
                )],
            )
        }
    };
    zones.sort();
    let mut temps: Vec<(String, f64)> = Vec::new();
    let mut unavailable = Vec::new();
    if zones.is_empty() {
        unavailable.push(Unavailable::new(
            "temperatures",
            format!("no thermal zones under {}", dir.display()),
        ));
    }
    for (n, path) in &zones {
        let kind = fs::read_to_string(path.join("type"))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| format!("thermal_zone{n}"));
        let what = format!("temperature {kind} (thermal_zone{n})");
        match fs::read_to_string(path.join("temp")) {
            Ok(text) => match text.trim().parse::<i64>() {
                Ok(milli) if (milli as f64 / 1000.0) > SENSOR_OFF_C => {
                    let name = if temps.iter().any(|(k, _)| *k == kind) {
                        format!("{kind}.{n}")
                    } else {
                        kind
                    };
                    temps.push((name, milli as f64 / 1000.0));
                }
                Ok(_) => unavailable.push(Unavailable::new(what, "sensor is switched off")),
                Err(_) => unavailable.push(Unavailable::new(
                    what,
                    format!("temp holds {:?}, not millidegrees", text.trim()),
                )),
            },
            Err(e) => unavailable.push(Unavailable::new(what, io_reason(&e))),
        }
    }
    (temps, unavailable)
}
