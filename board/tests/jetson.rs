//! tegrastats lines of JetPack 4, 5 and 6, nvpmodel output, and Jetson platform detection.

use std::path::{Path, PathBuf};

use dishcam_board::nvpmodel::{parse_query, PowerMode};
use dishcam_board::platform::{jetpack_for_l4t, parse_nv_tegra_release};
use dishcam_board::tegrastats::{parse_line, CpuCore, Rail};
use dishcam_board::{detect_platform, Platform};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

fn on(load_pct: f64, freq: u32) -> CpuCore {
    CpuCore::On {
        load_pct,
        freq_mhz: Some(freq),
    }
}

fn rail(name: &str, current_mw: f64, average_mw: f64) -> Rail {
    Rail {
        name: name.to_string(),
        current_mw,
        average_mw,
    }
}

fn temps(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[test]
fn jetpack4_nano_line() {
    let line = parse_line(fixture("tegrastats/jetpack4-nano.txt").trim());
    assert_eq!(line.timestamp, None);
    assert_eq!(
        (line.ram_used_mb, line.ram_total_mb),
        (Some(2204), Some(3956))
    );
    assert_eq!(
        (line.swap_used_mb, line.swap_total_mb),
        (Some(0), Some(1978))
    );
    assert_eq!(
        line.cpus,
        vec![on(12.0, 1479), on(8.0, 1479), on(4.0, 1479), on(3.0, 1479)]
    );
    assert_eq!(
        (line.emc_load_pct, line.emc_freq_mhz),
        (Some(4.0), Some(1600))
    );
    assert_eq!(line.gpu_load_pct, Some(0.0));
    assert_eq!(line.gpu_freq_mhz, vec![921]);
    assert_eq!(
        line.temperatures_c,
        temps(&[
            ("PLL", 31.0),
            ("CPU", 33.5),
            ("PMIC", 100.0),
            ("GPU", 31.5),
            ("AO", 39.5),
            ("thermal", 32.25)
        ])
    );
    assert_eq!(
        line.rails,
        vec![
            rail("POM_5V_IN", 2451.0, 2451.0),
            rail("POM_5V_GPU", 41.0, 41.0),
            rail("POM_5V_CPU", 367.0, 367.0)
        ]
    );
    assert_eq!(line.power_mw(), Some(2451.0));
    assert_eq!(line.cpu_util(), Some(0.0675));

    let sample = line.to_sample();
    assert_eq!(sample.ram_used_mb, Some(2204.0));
    assert_eq!(sample.gpu_util, Some(0.0));
    assert_eq!(sample.gpu_freq_mhz, Some(921));
    assert_eq!(sample.power_mw, Some(2451.0));
    assert_eq!(sample.power_rails_mw.len(), 3);
}

#[test]
fn jetpack5_orin_line_skips_off_sensors_and_reads_offline_cores() {
    let line = parse_line(fixture("tegrastats/jetpack5-orin.txt").trim());
    assert_eq!(
        (line.ram_used_mb, line.ram_total_mb),
        (Some(3383), Some(6480))
    );
    assert_eq!(
        line.cpus,
        vec![
            on(2.0, 1510),
            on(1.0, 1510),
            on(0.0, 1510),
            on(0.0, 1510),
            CpuCore::Off,
            CpuCore::Off
        ]
    );
    assert_eq!(
        (line.emc_load_pct, line.emc_freq_mhz),
        (Some(0.0), Some(2133))
    );
    assert_eq!(line.gpu_load_pct, Some(0.0));
    assert_eq!(line.gpu_freq_mhz, vec![305, 305]);
    assert_eq!(
        line.temperatures_c,
        temps(&[
            ("CPU", 47.718),
            ("SOC2", 44.468),
            ("SOC0", 45.375),
            ("tj", 47.718),
            ("SOC1", 45.25)
        ])
    );
    assert_eq!(
        line.rails,
        vec![
            rail("VDD_IN", 4752.0, 4752.0),
            rail("VDD_CPU_GPU_CV", 557.0, 557.0),
            rail("VDD_SOC", 1434.0, 1434.0)
        ]
    );
    assert_eq!(line.power_mw(), Some(4752.0));
    // Offline cores do not count: (2 + 1 + 0 + 0) / 4 cores.
    assert_eq!(line.cpu_util(), Some(0.0075));
    assert_eq!(line.to_sample().gpu_freq_mhz, Some(305));
}

#[test]
fn jetpack6_orin_line_with_timestamp_and_bare_gpu_load() {
    let line = parse_line(fixture("tegrastats/jetpack6-orin.txt").trim());
    assert_eq!(line.timestamp.as_deref(), Some("11-22-2026 15:04:05"));
    assert_eq!(
        (line.ram_used_mb, line.ram_total_mb),
        (Some(2785), Some(7620))
    );
    assert_eq!(
        line.cpus,
        vec![
            on(1.0, 729),
            on(0.0, 729),
            on(0.0, 729),
            on(0.0, 729),
            on(0.0, 729),
            on(0.0, 729)
        ]
    );
    assert_eq!(line.emc_load_pct, None);
    assert_eq!(line.gpu_load_pct, Some(0.0));
    assert!(line.gpu_freq_mhz.is_empty());
    assert_eq!(
        line.temperatures_c,
        temps(&[
            ("cpu", 46.437),
            ("soc2", 45.5),
            ("soc0", 45.093),
            ("gpu", 45.187),
            ("tj", 46.437),
            ("soc1", 44.937)
        ])
    );
    assert_eq!(
        line.rails,
        vec![
            rail("VDD_IN", 4410.0, 4410.0),
            rail("VDD_CPU_GPU_CV", 478.0, 478.0),
            rail("VDD_SOC", 1358.0, 1358.0)
        ]
    );
    let sample = line.to_sample();
    assert_eq!(sample.gpu_freq_mhz, None);
    assert_eq!(sample.power_mw, Some(4410.0));
}

#[test]
fn tegrastats_skips_unknown_tokens_and_sums_rails_without_an_input_rail() {
    let line =
        parse_line("FOO 12 RAM 10/20MB NVENC 115 MTS fg 0% bg 0% GPU 100/120 CPU 300/310 BAR@x");
    assert_eq!((line.ram_used_mb, line.ram_total_mb), (Some(10), Some(20)));
    assert!(line.cpus.is_empty());
    assert!(line.temperatures_c.is_empty());
    assert_eq!(
        line.rails,
        vec![rail("GPU", 100.0, 120.0), rail("CPU", 300.0, 310.0)]
    );
    assert_eq!(line.power_mw(), Some(400.0));
    assert_eq!(parse_line(""), Default::default());
    assert_eq!(parse_line("garbage ][ @@ / %"), Default::default());
}

#[test]
fn nvpmodel_query_output() {
    assert_eq!(
        parse_query(&fixture("nvpmodel/maxn.txt")).unwrap(),
        PowerMode {
            name: "MAXN".into(),
            id: Some(0)
        }
    );
    assert_eq!(
        parse_query(&fixture("nvpmodel/fan-then-15w.txt")).unwrap(),
        PowerMode {
            name: "15W".into(),
            id: Some(2)
        }
    );
    let err = parse_query("NVPM ERROR: failed to read PARAM").unwrap_err();
    assert!(err.to_string().contains("NV Power Mode"), "{err}");
}

#[test]
fn l4t_release_and_jetpack() {
    let release = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64";
    assert_eq!(parse_nv_tegra_release(release).as_deref(), Some("36.3.0"));
    assert_eq!(
        parse_nv_tegra_release("# R32 (release)").as_deref(),
        Some("32")
    );
    assert_eq!(parse_nv_tegra_release("something else"), None);
    assert_eq!(jetpack_for_l4t("32.7.1"), Some("4.x"));
    assert_eq!(jetpack_for_l4t("34.1.0"), Some("5.x"));
    assert_eq!(jetpack_for_l4t("35.4.1"), Some("5.x"));
    assert_eq!(jetpack_for_l4t("36.3.0"), Some("6.x"));
    assert_eq!(jetpack_for_l4t("28.2"), None);
}

#[test]
fn detects_jetson_orin_and_nano_trees() {
    assert_eq!(
        detect_platform(&fixtures().join("jetson-orin")),
        Platform::Jetson {
            model: "NVIDIA Jetson Orin Nano Developer Kit".into(),
            l4t: Some("35.4.1".into()),
            jetpack: Some("5.x".into()),
        }
    );
    let nano = detect_platform(&fixtures().join("jetson-nano"));
    assert_eq!(
        nano,
        Platform::Jetson {
            model: "NVIDIA Jetson Nano Developer Kit".into(),
            l4t: Some("32.7.1".into()),
            jetpack: Some("4.x".into()),
        }
    );
    assert_eq!(
        nano.to_string(),
        "NVIDIA Jetson Nano Developer Kit, L4T 32.7.1 (JetPack 4.x)"
    );
}
