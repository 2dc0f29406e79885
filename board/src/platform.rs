//! Which board this is: a Jetson (model, L4T release, JetPack major) or any other Linux box
//! (architecture, CPU model, kernel release).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The board dishcam runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Platform {
    /// An NVIDIA Jetson module.
    Jetson {
        /// From the device tree, e.g. "NVIDIA Jetson Orin Nano Developer Kit".
        model: String,
        /// L4T release from `/etc/nv_tegra_release`, e.g. "35.4.1".
        l4t: Option<String>,
        /// JetPack major release for that L4T major, e.g. "5.x".
        jetpack: Option<String>,
    },
    /// Anything else running Linux.
    Other {
        /// Machine architecture, e.g. "x86_64".
        arch: String,
        /// `model name` from `/proc/cpuinfo`.
        cpu_model: Option<String>,
        /// Kernel release from `/proc/sys/kernel/osrelease`.
        kernel: Option<String>,
    },
}

impl Platform {
    /// Whether this is a Jetson.
    pub fn is_jetson(&self) -> bool {
        matches!(self, Platform::Jetson { .. })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Platform::Jetson {
                model,
                l4t,
                jetpack,
            } => {
                write!(f, "{model}")?;
                if let Some(l4t) = l4t {
                    write!(f, ", L4T {l4t}")?;
                }
                if let Some(jetpack) = jetpack {
                    write!(f, " (JetPack {jetpack})")?;
                }
                Ok(())
            }
            Platform::Other {
                arch,
                cpu_model,
                kernel,
            } => {
                write!(f, "{arch}")?;
                if let Some(cpu) = cpu_model {
                    write!(f, ", {cpu}")?;
                }
                if let Some(kernel) = kernel {
                    write!(f, ", Linux {kernel}")?;
                }
                Ok(())
            }
        }
    }
}

/// Detects the platform from the files under `root` (`/` in production). Never fails: a
/// missing file leaves the matching field unset.
///
/// A board is a Jetson when its device-tree model names a Jetson or `/etc/nv_tegra_release`
/// exists.
pub fn detect_platform(root: &Path) -> Platform {
    let model = fs::read(root.join("proc/device-tree/model"))
        .ok()
        .map(|bytes| device_tree_string(&bytes));
    let release = fs::read_to_string(root.join("etc/nv_tegra_release")).ok();
    let is_jetson = model.as_deref().is_some_and(|m| m.contains("Jetson")) || release.is_some();
    if is_jetson {
        let l4t = release.as_deref().and_then(parse_nv_tegra_release);
        let jetpack = l4t.as_deref().and_then(jetpack_for_l4t).map(String::from);
        return Platform::Jetson {
            model: model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "NVIDIA Jetson (model unknown)".to_string()),
            l4t,
            jetpack,
        };
    }
    let arch = fs::read_to_string(root.join("proc/sys/kernel/arch"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cpu_model = fs::read_to_string(root.join("proc/cpuinfo"))
        .ok()
        .and_then(|text| cpuinfo_model(&text));
    let kernel = fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Platform::Other {
        arch,
        cpu_model,
        kernel,
    }
}

/// A device-tree string property: NUL-terminated, sometimes with trailing whitespace.
pub fn device_tree_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

/// The L4T release from the first line of `/etc/nv_tegra_release`:
/// `# R35 (release), REVISION: 4.1, ...` gives "35.4.1".
pub fn parse_nv_tegra_release(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let after_r = line
        .trim_start_matches('#')
        .trim_start()
        .strip_prefix('R')?;
    let major: String = after_r.chars().take_while(char::is_ascii_digit).collect();
    if major.is_empty() {
        return None;
    }
    let revision = line
        .split(',')
        .find_map(|field| field.trim().strip_prefix("REVISION:"))
        .map(str::trim)
        .filter(|r| !r.is_empty());
    Some(match revision {
        Some(revision) => format!("{major}.{revision}"),
        None => major,
    })
}

/// The JetPack major release that ships an L4T release ("35.4.1" -> "5.x").
pub fn jetpack_for_l4t(l4t: &str) -> Option<&'static str> {
    let major: u32 = l4t.split('.').next()?.parse().ok()?;
    match major {
        32 => Some("4.x"),
        34 | 35 => Some("5.x"),
        36 => Some("6.x"),
        _ => None,
    }
}

/// `model name` from `/proc/cpuinfo`, or the `Model` line some ARM kernels write instead.
pub fn cpuinfo_model(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key)
                .then(|| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
    };
    field("model name").or_else(|| field("Model"))
}
