//! `TegrastatsTelemetry`, `nvpmodel::query` and `detect` against stand-in scripts in a
//! fixture root, so the child-process plumbing runs without a Jetson.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dishcam_board::nvpmodel;
use dishcam_board::tegrastats::TegrastatsTelemetry;
use dishcam_board::{detect, BoardError, Telemetry};

/// Writing an executable while another test forks can make exec fail with ETXTBSY (the forked
/// child briefly holds the write descriptor), so these tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn fixture(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn install(root: &Path, program: &str, script: &str) {
    let bin = root.join("usr/bin");
    fs::create_dir_all(&bin).unwrap();
    let path = bin.join(program);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn jetson_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("proc/device-tree")).unwrap();
    fs::write(
        dir.path().join("proc/device-tree/model"),
        "NVIDIA Jetson Orin Nano Developer Kit\0",
    )
    .unwrap();
    let line = fixture("tegrastats/jetpack6-orin.txt");
    install(
        dir.path(),
        "tegrastats",
        &format!(
            "#!/bin/sh\nwhile true; do echo '{}'; sleep 0.02; done\n",
            line.trim()
        ),
    );
    dir
}

#[test]
fn tegrastats_child_lines_become_samples() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let root = jetson_root();
    let mut telemetry = TegrastatsTelemetry::start(root.path(), Duration::from_millis(20)).unwrap();
    let first = telemetry.sample();
    assert_eq!(first.power_mw, Some(4410.0));
    assert_eq!(first.ram_total_mb, Some(7620.0));
    assert_eq!(first.gpu_util, Some(0.0));
    assert_eq!(first.temperatures_c.len(), 6);
    let start_energy = first.energy_uj.unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let later = telemetry.sample();
    // About 4410 mW for ~150 ms is ~660_000 µJ; the script's lines are not evenly spaced.
    assert!(later.energy_uj.unwrap() > start_energy, "{later:?}");
    let started = Instant::now();
    drop(telemetry);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn detect_picks_tegrastats_on_a_jetson_and_linux_elsewhere() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let root = jetson_root();
    assert_eq!(detect(root.path()).name(), "tegrastats");

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(detect(empty.path()).name(), "linux");

    let no_tool = tempfile::tempdir().unwrap();
    fs::create_dir_all(no_tool.path().join("etc")).unwrap();
    fs::write(
        no_tool.path().join("etc/nv_tegra_release"),
        "# R36 (release), REVISION: 4.0\n",
    )
    .unwrap();
    let linux = detect(no_tool.path());
    assert_eq!(linux.name(), "linux");
    if !Path::new("/usr/bin/tegrastats").exists() {
        let whats: Vec<String> = linux.unavailable().into_iter().map(|u| u.what).collect();
        assert!(
            whats.contains(&"Jetson rails and GPU (tegrastats)".to_string()),
            "{whats:?}"
        );
    }
}

#[test]
fn nvpmodel_query_runs_the_tool() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "nvpmodel",
        "#!/bin/sh\necho 'NV Fan Mode:quiet'\necho 'NV Power Mode: 15W'\necho 2\n",
    );
    let mode = nvpmodel::query(root.path()).unwrap();
    assert_eq!((mode.name.as_str(), mode.id), ("15W", Some(2)));

    install(
        root.path(),
        "nvpmodel",
        "#!/bin/sh\necho 'NVPM ERROR: no permission' >&2\nexit 1\n",
    );
    let err = nvpmodel::query(root.path()).unwrap_err();
    assert!(matches!(err, BoardError::CommandFailed { .. }), "{err}");
    assert!(err.to_string().contains("no permission"), "{err}");
}
