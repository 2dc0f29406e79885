//! The onnxruntime shared library the runtime loads: which wheel it comes from (pinned by version,
//! platform tag and sha256, so the result does not depend on the local Python), where it is
//! extracted, and fetching it with pip.
//!
//! The wheels are CPU builds. On a Jetson, point `ORT_DYLIB_PATH` at a CUDA/TensorRT build of
//! onnxruntime (e.g. from JetPack's onnxruntime-gpu wheel) instead.

use std::fs;
use std::path::{Path, PathBuf};

use dishcam_models::pack::{sha256_file, write_atomic, Home};
pub use dishcam_runtime::backend::onnxruntime::{library_path, ORT_VERSION};

use crate::pull::{fetch_wheels, zip_member, Pin, Progress, PullError, PullOptions};

/// Pinned wheels: (target arch, pip platform tag, sha256 of the wheel). Python tag cp311.
pub const ORT_WHEELS: &[(&str, &str, &str)] = &[
    (
        "x86_64",
        "manylinux_2_28_x86_64",
        "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    ),
    (
        "aarch64",
        "manylinux_2_28_aarch64",
        "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3",
    ),
];

/// The wheel's Python tag; pip is told this version so any local Python fetches the same file.
const PYTHON_VERSION: &str = "3.11";

/// The pinned wheel for this machine, if there is one.
pub fn host_wheel() -> Option<(Pin, &'static str)> {
    host_pin("onnxruntime", ORT_VERSION, ORT_WHEELS)
}

/// The pin of `package` `version` among `wheels` (architecture, platform tag, sha256) for this
/// machine, with its platform tag; `None` off Linux or on an architecture without a wheel.
pub(crate) fn host_pin(
    package: &str,
    version: &str,
    wheels: &[(&str, &'static str, &str)],
) -> Option<(Pin, &'static str)> {
    if std::env::consts::OS != "linux" {
        return None;
    }
    wheels
        .iter()
        .find(|(arch, _, _)| *arch == std::env::consts::ARCH)
        .map(|(_, platform, sha)| {
            (
                Pin {
                    package: package.into(),
                    version: version.into(),
                    sha256: sha.to_string(),
                },
                *platform,
            )
        })
}

/// Fetches (unless already extracted and intact) the pinned onnxruntime wheel for this machine
/// and extracts its shared library into the cache. Returns the library path.
pub fn pull_library(
    home: &Home,
    opts: &PullOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf, PullError> {
    let dest = library_path(home);
    let stamp = dest.with_extension(format!("{ORT_VERSION}.sha256"));
    if !opts.force && library_is_intact(&dest, &stamp) {
        return Ok(dest);
    }
    let (pin, platform) = host_wheel().ok_or_else(|| PullError::NoRuntimeWheel {
        platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    })?;
    let wheels = fetch_wheels(
        "onnxruntime",
        std::slice::from_ref(&pin),
        home,
        opts,
        Some((platform, PYTHON_VERSION)),
        progress,
    )?;
    let wheel = &wheels[0];
    progress.step("extracting the onnxruntime library");
    let archive = fs::read(wheel).map_err(|source| PullError::Io {
        path: wheel.display().to_string(),
        source,
    })?;
    let dir = dest.parent().expect("library path has a parent");
    fs::create_dir_all(dir).map_err(|source| PullError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for member in [
        format!("libonnxruntime.so.{ORT_VERSION}"),
        "libonnxruntime_providers_shared.so".into(),
    ] {
        let bytes = zip_member(&archive, &format!("onnxruntime/capi/{member}"), wheel)?;
        let to = dir.join(&member);
        write_atomic(&to, &bytes).map_err(|source| PullError::Io {
            path: to.display().to_string(),
            source,
        })?;
    }
    let sum = sha256_file(&dest).map_err(|source| PullError::Io {
        path: dest.display().to_string(),
        source,
    })?;
    write_atomic(&stamp, sum.as_bytes()).map_err(|source| PullError::Io {
        path: stamp.display().to_string(),
        source,
    })?;
    Ok(dest)
}

/// The extracted library exists and still has the hash recorded when it was extracted.
fn library_is_intact(lib: &Path, stamp: &Path) -> bool {
    let Ok(want) = fs::read_to_string(stamp) else {
        return false;
    };
    sha256_file(lib).is_ok_and(|got| got == want.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_a_sha256_and_a_manylinux_tag() {
        for (arch, platform, sha) in ORT_WHEELS {
            assert_eq!(sha.len(), 64, "{arch}");
            assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()), "{arch}");
            assert!(platform.starts_with("manylinux_") && platform.ends_with(arch));
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
        assert!(err.contains("onnxruntime==1.31.1"), "{err}");
        assert!(err.contains("--platform manylinux_2_28_"), "{err}");
    }
}
