//! /proc parsing, thermal zones, RAPL and `LinuxTelemetry` on fixture trees, and once on the
//! real `/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dishcam_board::procfs::{parse_cpu_times, parse_meminfo, parse_status, CpuTimes};
use dishcam_board::rapl::{energy_delta_uj, energy_reason, Rapl};
use dishcam_board::thermal::read_thermal_zones;
use dishcam_board::{detect_platform, LinuxTelemetry, Platform, Telemetry, Unavailable};

fn x86() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x86")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn detects_an_x86_tree() {
    assert_eq!(
        detect_platform(&x86()),
        Platform::Other {
            arch: "x86_64".into(),
            cpu_model: Some("11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz".into()),
            kernel: Some("6.8.0-48-generic".into()),
        }
    );
}

#[test]
fn cpu_utilisation_from_two_stat_readings() {
    let before = parse_cpu_times(&fs::read_to_string(x86().join("proc/stat")).unwrap()).unwrap();
    assert_eq!(
        before,
        CpuTimes {
            idle: 8500,
            total: 10000
        }
    );
    // 300 busy ticks and 100 idle (50 of them iowait) later.
    let after = parse_cpu_times("cpu  1200 0 600 8050 550 0 0 0 0 0\n").unwrap();
    assert_eq!(after.utilisation_since(&before), Some(0.75));
    assert_eq!(before.utilisation_since(&before), None);
    assert_eq!(before.utilisation_since(&after), None);
    assert_eq!(parse_cpu_times("intr 1 2 3"), None);
}

#[test]
fn meminfo_and_status() {
    let memory = parse_meminfo(&fs::read_to_string(x86().join("proc/meminfo")).unwrap()).unwrap();
    assert_eq!(memory.total_mb, 16000.0);
    assert_eq!(memory.used_mb, 4000.0);
    assert_eq!(parse_meminfo("MemTotal: 100 kB\n"), None);

    let status = parse_status(&fs::read_to_string(x86().join("proc/self/status")).unwrap());
    assert_eq!(status.rss_mb, Some(100.0));
    assert_eq!(status.peak_rss_mb, Some(200.0));
    assert_eq!(parse_status("Name: kthreadd\n").rss_mb, None);
}

#[test]
fn thermal_zones_with_a_missing_temp_file() {
    let (temps, unavailable) = read_thermal_zones(&x86());
    assert_eq!(
        temps,
        vec![
            ("x86_pkg_temp".to_string(), 45.0),
            ("acpitz".to_string(), 27.8)
        ]
    );
    assert_eq!(
        unavailable,
        vec![Unavailable::new(
            "temperature iwlwifi_1 (thermal_zone2)",
            "not present on this system"
        )]
    );
}

#[test]
fn thermal_zones_duplicate_names_off_sensors_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("sys/class/thermal");
    for (n, kind, temp) in [
        (0, "acpitz", "30000"),
        (1, "acpitz", "31500"),
        (2, "cv0", "-256000"),
    ] {
        let zone = zones.join(format!("thermal_zone{n}"));
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("type"), format!("{kind}\n")).unwrap();
        fs::write(zone.join("temp"), format!("{temp}\n")).unwrap();
    }
    // A directory where the file should be: reading fails, as for a driver returning EIO.
    fs::create_dir_all(zones.join("thermal_zone3/temp")).unwrap();
    fs::write(zones.join("thermal_zone3/type"), "iwlwifi_1\n").unwrap();

    let (temps, unavailable) = read_thermal_zones(dir.path());
    assert_eq!(
        temps,
        vec![("acpitz".to_string(), 30.0), ("acpitz.1".to_string(), 31.5)]
    );
    let whats: Vec<&str> = unavailable.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "temperature cv0 (thermal_zone2)",
            "temperature iwlwifi_1 (thermal_zone3)"
        ]
    );
    assert_eq!(unavailable[0].why, "sensor is switched off");

    let (temps, unavailable) = read_thermal_zones(&dir.path().join("nowhere"));
    assert!(temps.is_empty());
    assert_eq!(unavailable.len(), 1);
    assert_eq!(unavailable[0].what, "temperatures");
}

#[test]
fn energy_counter_wraps_at_its_range() {
    assert_eq!(energy_delta_uj(100, 350, None), Some(250));
    assert_eq!(energy_delta_uj(900, 100, Some(1000)), Some(200));
    assert_eq!(energy_delta_uj(900, 100, None), None);
    assert_eq!(energy_delta_uj(2000, 100, Some(1000)), None);
}

#[test]
fn permission_denied_on_energy_uj_says_root_only() {
    let denied = io::Error::from(io::ErrorKind::PermissionDenied);
    assert_eq!(
        energy_reason(&denied),
        "energy_uj is readable only by root on this kernel"
    );
    let missing = io::Error::from(io::ErrorKind::NotFound);
    assert_eq!(energy_reason(&missing), "not present on this system");
}

#[test]
fn rapl_fixture_tree_lists_the_unreadable_zone() {
    let rapl = Rapl::discover(&x86());
    assert!(!rapl.is_empty());
    assert_eq!(
        rapl.unavailable(),
        [Unavailable::new(
            "power dram (RAPL intel-rapl:1)",
            "not present on this system"
        )]
    );
}

fn write_zone(root: &Path, id: &str, name: &str, energy: u64, range: u64) {
    let zone = root.join("sys/class/powercap").join(id);
    fs::create_dir_all(&zone).unwrap();
    fs::write(zone.join("name"), format!("{name}\n")).unwrap();
    fs::write(zone.join("energy_uj"), format!("{energy}\n")).unwrap();
    fs::write(zone.join("max_energy_range_uj"), format!("{range}\n")).unwrap();
}

fn set_energy(root: &Path, id: &str, energy: u64) {
    let file = root.join("sys/class/powercap").join(id).join("energy_uj");
    fs::write(file, format!("{energy}\n")).unwrap();
}

#[test]
fn rapl_power_and_energy_across_a_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_zone(root, "intel-rapl:0", "package-0", 900_000, 1_000_000);
    write_zone(root, "intel-rapl:0:0", "core", 10_000, 1_000_000);
    let t0 = Instant::now();
    let mut rapl = Rapl::discover_at(root, t0);
    assert!(rapl.unavailable().is_empty());

    set_energy(root, "intel-rapl:0", 950_000);
    set_energy(root, "intel-rapl:0:0", 30_000);
    let first = rapl.read_at(t0 + Duration::from_secs(1));
    assert_eq!(
        first.rails_mw,
        vec![
            ("package-0".to_string(), 50.0),
            ("package-0/core".to_string(), 20.0)
        ]
    );
    assert_eq!(first.power_mw, Some(50.0));
    assert_eq!(first.energy_uj, Some(50_000));

    // The package counter wraps: 950_000 -> 1_000_000 -> 0 -> 150_000 is 200_000 µJ.
    set_energy(root, "intel-rapl:0", 150_000);
    set_energy(root, "intel-rapl:0:0", 40_000);
    let second = rapl.read_at(t0 + Duration::from_secs(3));
    assert!(close(second.power_mw.unwrap(), 100.0));
    assert_eq!(second.energy_uj, Some(250_000));
    assert!(second.unavailable.is_empty());

    // An unreadable counter: that zone is reported, the others still read.
    fs::remove_file(root.join("sys/class/powercap/intel-rapl:0:0/energy_uj")).unwrap();
    fs::create_dir(root.join("sys/class/powercap/intel-rapl:0:0/energy_uj")).unwrap();
    set_energy(root, "intel-rapl:0", 160_000);
    let third = rapl.read_at(t0 + Duration::from_secs(4));
    assert_eq!(third.energy_uj, Some(260_000));
    assert_eq!(third.rails_mw, vec![("package-0".to_string(), 10.0)]);
    assert_eq!(third.unavailable.len(), 1);
    assert_eq!(third.unavailable[0].what, "power package-0/core");
}

#[test]
fn rapl_total_is_psys_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_zone(root, "intel-rapl:0", "package-0", 0, 1_000_000);
    write_zone(root, "intel-rapl:1", "psys", 0, 1_000_000);
    let t0 = Instant::now();
    let mut rapl = Rapl::discover_at(root, t0);
    set_energy(root, "intel-rapl:0", 5_000);
    set_energy(root, "intel-rapl:1", 8_000);
    let reading = rapl.read_at(t0 + Duration::from_secs(1));
    assert_eq!(reading.power_mw, Some(8.0));
    assert_eq!(reading.energy_uj, Some(8_000));
}

#[test]
fn rapl_without_powercap_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut rapl = Rapl::discover(dir.path());
    assert!(rapl.is_empty());
    assert_eq!(rapl.unavailable().len(), 1);
    assert_eq!(rapl.unavailable()[0].what, "power (RAPL)");
    assert_eq!(rapl.read().power_mw, None);
}

#[test]
fn linux_telemetry_on_the_x86_tree() {
    let mut telemetry = LinuxTelemetry::new(&x86());
    let sample = telemetry.sample();
    assert!(sample.timestamp_unix_ms.is_some());
    // The fixture /proc/stat does not move: no tick, no utilisation.
    assert_eq!(sample.cpu_util, None);
    assert_eq!(sample.ram_total_mb, Some(16000.0));
    assert_eq!(sample.ram_used_mb, Some(4000.0));
    assert_eq!(sample.rss_mb, Some(100.0));
    assert_eq!(sample.rss_peak_mb, Some(200.0));
    assert_eq!(sample.temperatures_c.len(), 2);
    assert_eq!(sample.gpu_util, None);
    // The package counter did not move either: zero power, zero energy.
    assert_eq!(sample.energy_uj, Some(0));
    assert_eq!(sample.power_mw, Some(0.0));
    let whats: Vec<String> = telemetry
        .unavailable()
        .into_iter()
        .map(|u| u.what)
        .collect();
    assert!(
        whats.contains(&"power dram (RAPL intel-rapl:1)".to_string()),
        "{whats:?}"
    );
    assert!(
        whats.contains(&"temperature iwlwifi_1 (thermal_zone2)".to_string()),
        "{whats:?}"
    );
    assert!(
        whats.contains(&"gpu_util, gpu_freq_mhz".to_string()),
        "{whats:?}"
    );
}

#[test]
fn linux_telemetry_on_an_empty_root_reports_everything_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut telemetry = LinuxTelemetry::new(dir.path());
    let sample = telemetry.sample();
    assert_eq!(sample.rss_mb, None);
    assert_eq!(sample.ram_total_mb, None);
    assert_eq!(sample.power_mw, None);
    let whats: Vec<String> = telemetry
        .unavailable()
        .into_iter()
        .map(|u| u.what)
        .collect();
    for what in [
        "cpu_util",
        "ram_used_mb, ram_total_mb",
        "rss_mb, rss_peak_mb",
        "temperatures",
        "power (RAPL)",
    ] {
        assert!(
            whats.contains(&what.to_string()),
            "{what} missing from {whats:?}"
        );
    }
}

#[test]
fn linux_telemetry_on_this_machine() {
    let mut telemetry = dishcam_board::detect(Path::new("/"));
    let first = telemetry.sample();
    std::thread::sleep(Duration::from_millis(50));
    let second = telemetry.sample();
    assert!(second.rss_mb.is_some_and(|mb| mb > 0.0), "{second:?}");
    assert!(second.rss_peak_mb >= second.rss_mb);
    assert!(second.ram_total_mb.is_some());
    assert!(second.timestamp_unix_ms >= first.timestamp_unix_ms);
    if let Some(util) = second.cpu_util {
        assert!((0.0..=1.0).contains(&util));
    }
    for u in telemetry.unavailable() {
        assert!(!u.what.is_empty() && !u.why.is_empty(), "{u:?}");
    }
}
