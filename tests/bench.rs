//! `dishcam bench` end to end on the installed lite pack: the matrix, the columns, the report
//! files, and refusals of bad input. Short runs (`--quick` with a handful of queries): these
//! tests check what is reported and how, never how fast anything is.

mod common;

use std::path::Path;

use common::{assert_fails_with, lite_pack, CliEnv};
use serde_json::Value;

fn cells<'a>(report: &'a Value, scenario: &str) -> &'a Vec<Value> {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no {scenario} in {report}"))["cells"]
        .as_array()
        .unwrap()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn bench_matrix_reports_every_configuration_column_and_stage() {
    let env = CliEnv::new();
    let out = env.dir("report");
    let report = env.json(&[
        "bench",
        "--quick",
        "--scenario",
        "single-stream,offline",
        "--backend",
        "tract,onnxruntime",
        "--precision",
        "fp32,int8",
        "--threads",
        "1",
        "--min-queries",
        "3",
        "--warmup",
        "1",
        "--no-startup",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(report["schema"], "dishcam.bench/1");
    assert_eq!(report["quick"], true);
    // tract cannot run int8: skipped, with the reason, and the rest still runs.
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["config"], "tract/int8/1t");
    assert!(skipped[0]["why"].as_str().unwrap().contains("onnxruntime"));
    let ids: Vec<&str> = report["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "tract/fp32/1t",
            "onnxruntime/fp32/1t",
            "onnxruntime/int8/1t"
        ]
    );
    assert_eq!(report["baseline"], "tract/fp32/1t");

    let single = cells(&report, "single-stream");
    let find = |config: &str, column: &str| {
        single
            .iter()
            .find(|c| c["config"] == config && c["column"] == column)
            .unwrap_or_else(|| panic!("no {config} {column}"))
    };
    // The bare session is onnxruntime's; every other column runs on every configuration.
    assert!(single
        .iter()
        .all(|c| c["config"] != "tract/fp32/1t" || c["column"] != "bare"));
    for config in ids {
        for column in ["pipeline", "pipeline+text", "naive"] {
            let c = find(config, column);
            assert!(num(&c["queries"]) >= 3.0, "{c}");
            let l = &c["latency_ms"];
            assert!(num(&l["p50"]) > 0.0, "{c}");
            assert!(num(&l["p50"]) <= num(&l["p90"]) && num(&l["p90"]) <= num(&l["max"]));
            // Three queries cannot bound a p90: the verdict says so and why.
            assert_eq!(c["verdict"]["valid"], false);
            assert_eq!(c["verdict"]["label"], "INVALID", "{c}");
            let unmet = c["verdict"]["unmet"].to_string();
            assert!(unmet.contains("needs 44"), "{unmet}");
            assert!(c["tail"]["early_stopping_ms"].is_null());
        }
    }
    // A quick run that met what it asked for is INDICATIVE, never VALID, in JSON and Markdown.
    for c in cells(&report, "offline") {
        assert_eq!(c["verdict"]["label"], "INDICATIVE", "{c}");
        assert_eq!(c["verdict"]["valid"], false, "{c}");
    }
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    assert!(md.contains("INDICATIVE"), "{md}");
    assert!(
        !md.replace("INVALID", "").contains("VALID"),
        "a quick run says VALID: {md}"
    );
    let p = find("onnxruntime/int8/1t", "pipeline");
    let stages: Vec<&str> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "decode",
            "preprocess",
            "no_dish_check",
            "image_encoder",
            "head",
            "recipes",
            "output"
        ]
    );
    let share: f64 = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| num(&s["share_of_p90"]))
        .sum();
    // Stage times are taken back to back, so they account for nearly all of each query.
    assert!((0.9..=1.0001).contains(&share), "shares sum to {share}");
    let text = find("onnxruntime/int8/1t", "pipeline+text");
    assert!(text["stages"].to_string().contains("text_encoder"));
    assert!(
        find("onnxruntime/int8/1t", "bare")["queries"]
            .as_u64()
            .unwrap()
            >= 3
    );

    // Offline: pipelined runtime, naive loop and bare session, with the naive ratio.
    let offline = cells(&report, "offline");
    let pipe = offline
        .iter()
        .find(|c| c["config"] == "onnxruntime/int8/1t" && c["column"] == "pipeline")
        .unwrap();
    assert!(num(&pipe["samples_per_s"]) > 0.0);
    assert!(num(&pipe["ratio_to_naive"]) > 0.0);

    // The goals are computed from the same run, for the onnxruntime configurations. The
    // generated photos show no dish, so no query ran the head's encoder: the goals against the
    // bare session have nothing to compare and are left out rather than read as 0.
    let goals = report["goals"].as_array().unwrap();
    for goal in [
        "per-frame path p90 (less decoding and the no-dish check's run) / bare encoder session p90",
        "our encoder call p50 / bare session p50",
    ] {
        assert!(
            !goals.iter().any(|g| g["goal"] == goal),
            "{goal}: {goals:?}"
        );
    }
    let goal = "offline throughput: pipeline / naive loop";
    let g = goals
        .iter()
        .find(|g| g["goal"] == goal && g["config"] == "onnxruntime/int8/1t")
        .unwrap_or_else(|| panic!("no goal {goal}: {goals:?}"));
    assert!(num(&g["measured"]) > 0.0);
    assert_eq!(g["at_most"], false);
    assert_eq!(
        g["met"].as_bool().unwrap(),
        num(&g["measured"]) >= num(&g["target"])
    );

    // The files: the same JSON, the Markdown summary, and SVG plots naming the configurations.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(on_disk["configs"], report["configs"]);
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    assert!(md.contains("## single-stream") && md.contains("## offline"));
    assert!(md.contains("| onnxruntime/int8/1t | pipeline |"), "{md}");
    assert!(md.contains("skipped `tract/int8/1t`"));
    for (name, needle) in [
        ("single-stream-cdf.svg", "onnxruntime/int8/1t"),
        ("single-stream-histogram.svg", "tract/fp32/1t"),
        ("single-stream-stages.svg", "image_encoder"),
        ("offline-throughput.svg", "naive"),
    ] {
        let svg = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{name}");
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains(needle), "{name} lacks {needle}");
    }
}

#[test]
fn bench_measures_start_up_and_memory_in_child_processes() {
    let env = CliEnv::new();
    let report = env.json(&[
        "bench",
        "--quick",
        "--scenario",
        "single-stream",
        "--backend",
        "onnxruntime",
        "--precision",
        "int8",
        "--threads",
        "1",
        "--min-queries",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    let startup = report["startup"].as_array().unwrap();
    assert_eq!(startup.len(), 1, "{startup:?}");
    let s = &startup[0];
    assert!(s["error"].is_null(), "{s}");
    assert_eq!(s["config"], "onnxruntime/int8/1t");
    assert!(num(&s["cold_ms"]) > 0.0 && num(&s["warm_ms"]) > 0.0);
    assert_eq!(s["warm_runs_ms"].as_array().unwrap().len(), 3);
    // A process that loaded onnxruntime and the pack holds more than a few MiB.
    assert!(num(&s["peak_rss_mb"]) > 20.0, "{s}");
    assert!(num(&s["evicted_files"]) >= 3.0, "{s}");
}

#[test]
fn bench_refuses_bad_matrices_with_the_fix() {
    let env = CliEnv::new();
    let quick = ["bench", "--quick", "--no-startup", "--min-queries", "1"];
    let run = |extra: &[&str]| {
        let mut args = quick.to_vec();
        args.extend_from_slice(extra);
        env.run(&args)
    };
    assert_fails_with(
        &run(&["--backend", "coreml"]),
        &[
            "unknown backend 'coreml'",
            "available: onnxruntime, openvino",
            "tract",
        ],
    );
    assert_fails_with(
        &run(&["--precision", "int4"]),
        &["int4", "the pack 'lite' has: fp32, int8"],
    );
    assert_fails_with(
        &run(&["--scenario", "datacentre"]),
        &[
            "unknown scenario 'datacentre'",
            "single-stream, multi-stream, offline, server",
        ],
    );
    assert_fails_with(
        &run(&["--scenario", "server", "--server-qps", "0"]),
        &["--server-qps", "positive"],
    );
    assert_fails_with(&run(&["--threads", "0"]), &["--threads", "at least 1"]);
    let empty = env.dir("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not a photo").unwrap();
    assert_fails_with(
        &run(&["--images", empty.to_str().unwrap()]),
        &["no photo there decodes", "--images"],
    );
    assert_fails_with(
        &run(&["--baseline", "tract/fp16/9t"]),
        &["--baseline tract/fp16/9t", "onnxruntime/fp32/"],
    );
}

/// A copy of the lite pack without its int8 variants, as a pack nobody has calibrated.
fn pack_without_int8(dest: &Path) {
    let pack = lite_pack();
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(&pack.dir).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
    let manifest = std::fs::read_to_string(dest.join("pack.toml")).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            skipping = line.contains(".variants.int8");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.len() < manifest.len(),
        "the lite pack has int8 variants"
    );
    std::fs::write(dest.join("pack.toml"), out).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn bench_on_a_pack_without_int8_suggests_calibrating() {
    let mut env = CliEnv::new();
    let dest = env.dir("uncalibrated");
    pack_without_int8(&dest);
    env.pack = dest;
    assert_fails_with(
        &env.run(&["bench", "--quick", "--precision", "int8", "--no-startup"]),
        &["has no int8 variant", "dishcam calibrate --pack"],
    );
}

/// The server scenario (Poisson arrivals, a p99 bound) and the summary table: top-1 counts the
/// photos whose folder names a head class, each once, and a p99 over the bound is INVALID.
#[test]
fn bench_server_scenario_and_summary_table() {
    let env = CliEnv::new();
    // Two photos in a folder named after a head class, one in a folder that names none.
    let images = env.dir("images");
    let fixtures = common::repo().join("tests/fixtures/images");
    for (dir, file) in [
        ("steak", "cmyk_128x96.jpg"),
        ("steak", "pattern_640x480.jpg"),
        ("not_a_class", "gradient_320x240.png"),
    ] {
        std::fs::create_dir_all(images.join(dir)).unwrap();
        std::fs::copy(fixtures.join(file), images.join(dir).join(file)).unwrap();
    }
    let run = |bound: &str| {
        env.json(&[
            "bench",
            "--quick",
            "--scenario",
            "single-stream,server",
            "--backend",
            "onnxruntime",
            "--precision",
            "int8",
            "--threads",
            "1",
            "--min-queries",
            "3",
            "--warmup",
            "1",
            "--server-qps",
            "50",
            "--server-latency-ms",
            bound,
            "--images",
            images.to_str().unwrap(),
            "--no-startup",
            "--json",
        ])
    };
    let report = run("0.001");
    let server = cells(&report, "server");
    assert_eq!(
        server.len(),
        1,
        "one pipeline cell per configuration: {server:?}"
    );
    let c = &server[0];
    assert_eq!(c["column"], "pipeline");
    assert!(num(&c["queries"]) >= 3.0);
    assert_eq!(c["verdict"]["label"], "INVALID", "{c}");
    assert!(
        c["verdict"]["unmet"]
            .to_string()
            .contains("over the 0 ms bound"),
        "{c}"
    );

    let summary = report["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 1);
    let row = &summary[0];
    assert_eq!(row["backend"], "onnxruntime");
    assert_eq!(row["precision"], "int8");
    assert!(num(&row["encoder_file_mb"]) > 1.0, "{row}");
    let top1 = &row["top1"];
    assert_eq!(
        top1["photos"], 2,
        "only the photos under a class folder count: {row}"
    );
    let (correct, no_dish) = (num(&top1["correct"]), num(&top1["no_dish"]));
    assert!(correct + no_dish <= 2.0);
    assert!((num(&top1["rate"]) - correct / 2.0).abs() < 1e-9);
    let single = cells(&report, "single-stream");
    let pipe = single.iter().find(|c| c["column"] == "pipeline").unwrap();
    assert_eq!(row["p90_ms"], pipe["latency_ms"]["p90"]);

    // A bound no query can miss: the bound is not among the unmet minimums.
    let report = run("100000");
    let c = &cells(&report, "server")[0];
    assert!(
        !c["verdict"]["unmet"].to_string().contains("ms bound"),
        "{c}"
    );
}
