//! The OpenVINO libraries the runtime loads: which wheel they come from (the PyPI `openvino`
//! wheel, pinned by version, platform tag and sha256, so the result does not depend on the local
//! Python), which of its libraries are extracted, where, and fetching it with pip.
//!
//! Of the wheel's `openvino/libs/`, only what the CPU backend loads is kept: the C library and
//! `libopenvino` it links, the CPU plugin (`intel_cpu` on x86-64, `arm_cpu` on aarch64), the ONNX
//! front end (the pack's models are ONNX; the IR front end is not needed for them), TBB
//! (`libtbb`, and `libtbbbind` with `libhwloc`, which TBB opens for the CPU's topology). The
//! wheel has no `plugins.xml`: its `libopenvino` knows its plugins and front ends by file name
//! and looks for them next to itself. GPU/NPU plugins, the other front ends and Python are left.

use std::fs;
use std::path::{Path, PathBuf};

use dishcam_models::pack::{sha256_file, write_atomic, Home};
pub use dishcam_runtime::backend::openvino::{
    library_dir, library_path, C_LIBRARY, OPENVINO_VERSION,
};

use crate::pull::{fetch_wheels, Pin, Progress, PullError, PullOptions};

/// Pinned wheels: (target arch, pip platform tag, sha256 of the wheel). Python tag cp311.
/// The aarch64 wheel needs glibc 2.35 (Ubuntu 22.04, JetPack 6).
pub const OPENVINO_WHEELS: &[(&str, &str, &str)] = &[
    (
        "x86_64",
        "manylinux_2_28_x86_64",
        "2d22b1da03f7caf74df30e9f6417d0ab2f637e4a38e08e1dcd294d2c37407aaf",
    ),
    (
        "aarch64",
        "manylinux_2_35_aarch64",
        "bea1eb3733c34ef331adc945da0ccda5937865031139073663be84c517ffda22",
    ),
];

/// The wheel's Python tag; pip is told this version so any local Python fetches the same file.
const PYTHON_VERSION: &str = "3.11";

/// Where the libraries sit in the wheel.
const WHEEL_DIR: &str = "openvino/libs/";

/// The name of the file, in the extraction directory, that records each extracted library's
/// sha256 (written last, so its presence means the extraction finished).
const STAMP: &str = "extracted.sha256";

/// Whether the wheel member `name` (a file name in `openvino/libs/`) is one the CPU backend
/// loads.
pub fn is_needed(name: &str) -> bool {
    let versioned = |stem: &str| {
        name.strip_prefix(stem)
            .is_some_and(|rest| rest.strip_prefix(".so.").is_some_and(|v| !v.is_empty()))
    };
    versioned("libopenvino_c")
        || versioned("libopenvino")
        || versioned("libopenvino_onnx_frontend")
        || name == "libopenvino_intel_cpu_plugin.so"
        || name == "libopenvino_arm_cpu_plugin.so"
        || name == "libtbb.so.12"
        || name == "libtbbbind_2_5.so.3"
        || name == "libhwloc.so.15"
}

/// The pinned wheel for this machine, if there is one.
pub fn host_wheel() -> Option<(Pin, &'static str)> {
    crate::runtime_lib::host_pin("openvino", OPENVINO_VERSION, OPENVINO_WHEELS)
}

/// Fetches (unless already extracted and intact) the pinned openvino wheel for this machine and
/// extracts the libraries the CPU backend needs into [`library_dir`]. Returns the C library's
/// path.
pub fn pull_library(
    home: &Home,
    opts: &PullOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf, PullError> {
    let dir = library_dir(home);
    let dest = library_path(home);
    if !opts.force && library_is_intact(&dir) {
        return Ok(dest);
    }
    let (pin, platform) = host_wheel().ok_or_else(|| PullError::NoOpenvinoWheel {
        platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    })?;
    let wheels = fetch_wheels(
        "openvino",
        std::slice::from_ref(&pin),
        home,
        opts,
        Some((platform, PYTHON_VERSION)),
        progress,
    )?;
    let wheel = &wheels[0];
    progress.step("extracting the OpenVINO libraries");
    extract(wheel, &dir)?;
    if !dest.is_file() {
        return Err(PullError::Archive {
            path: wheel.display().to_string(),
            message: format!("has no member '{WHEEL_DIR}{C_LIBRARY}'"),
        });
    }
    Ok(dest)
}

/// Extracts the needed members of `wheel` into `dir` and writes the stamp.
fn extract(wheel: &Path, dir: &Path) -> Result<(), PullError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| PullError::Io { path, source }
    };
    let archive_err = |message: String| PullError::Archive {
        path: wheel.display().to_string(),
        message,
    };
    let file = fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| archive_err(format!("not a zip archive ({e})")))?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    let _ = fs::remove_file(dir.join(STAMP));
    let mut stamp = String::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| archive_err(format!("member {i} is unreadable ({e})")))?;
        let Some(name) = member.name().strip_prefix(WHEEL_DIR).map(str::to_string) else {
            continue;
        };
        if name.contains('/') || !is_needed(&name) {
            continue;
        }
        let mut bytes = Vec::with_capacity(member.size() as usize);
        std::io::Read::read_to_end(&mut member, &mut bytes)
            .map_err(|e| archive_err(format!("member '{name}' is corrupt ({e})")))?;
        let to = dir.join(&name);
        write_atomic(&to, &bytes).map_err(io(&to))?;
        stamp.push_str(&format!("{}  {name}\n", sha256_hex(&bytes)));
    }
    let to = dir.join(STAMP);
    write_atomic(&to, stamp.as_bytes()).map_err(io(&to))?;
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Every library the stamp lists exists and still has the hash recorded at extraction, and the
/// C library is among them.
fn library_is_intact(dir: &Path) -> bool {
    let Ok(stamp) = fs::read_to_string(dir.join(STAMP)) else {
        return false;
    };
    let mut has_c = false;
    for line in stamp.lines() {
        let Some((sum, name)) = line.split_once("  ") else {
            return false;
        };
        has_c |= name == C_LIBRARY;
        if !sha256_file(&dir.join(name)).is_ok_and(|got| got == sum) {
            return false;
        }
    }
    has_c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_a_sha256_and_a_manylinux_tag() {
        for (arch, platform, sha) in OPENVINO_WHEELS {
            assert_eq!(sha.len(), 64, "{arch}");
            assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()), "{arch}");
            assert!(platform.starts_with("manylinux_") && platform.ends_with(arch));
        }
    }

    #[test]
    fn only_the_cpu_backends_libraries_are_needed() {
        for keep in [
            C_LIBRARY,
            "libopenvino.so.2641",
            "libopenvino_onnx_frontend.so.2641",
            "libopenvino_intel_cpu_plugin.so",
            "libopenvino_arm_cpu_plugin.so",
            "libtbb.so.12",
            "libtbbbind_2_5.so.3",
            "libhwloc.so.15",
        ] {
            assert!(is_needed(keep), "{keep}");
        }
        for drop in [
            "libopenvino_intel_gpu_plugin.so",
            "libopenvino_intel_npu_plugin.so",
            "libopenvino_auto_plugin.so",
            "libopenvino_pytorch_frontend.so.2641",
            "libopenvino_ir_frontend.so.2641",
            "libtbbmalloc.so.2",
            "cache.json",
            "libopenvino.so",
        ] {
            assert!(!is_needed(drop), "{drop}");
        }
    }

    #[test]
    fn a_missing_wheel_in_a_given_dir_names_the_platform() {
        if host_wheel().is_none() {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let wheels = tempfile::tempdir().unwrap();
        let err = pull_library(
            &Home::at(home.path()),
            &PullOptions {
                wheels: Some(wheels.path().to_path_buf()),
                ..Default::default()
            },
            &mut |_: &str| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("openvino==2026.4.1"), "{err}");
        assert!(err.contains("--platform manylinux_2_"), "{err}");
    }

    #[test]
    fn a_damaged_extraction_is_not_intact() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!library_is_intact(dir.path()));
        fs::write(dir.path().join(C_LIBRARY), b"lib").unwrap();
        fs::write(
            dir.path().join(STAMP),
            format!("{}  {C_LIBRARY}\n", sha256_hex(b"lib")),
        )
        .unwrap();
        assert!(library_is_intact(dir.path()));
        fs::write(dir.path().join(C_LIBRARY), b"changed").unwrap();
        assert!(!library_is_intact(dir.path()));
    }
}
