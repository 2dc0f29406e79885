//! `dishcam board info`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use dishcam_board::nvpmodel::{self, PowerMode};
use dishcam_board::{detect, detect_platform, Platform, Sample, Unavailable};
use serde_json::json;

use crate::cli::print_json;

/// Time between the two samples, so CPU utilisation and RAPL power have a delta.
const SAMPLE_GAP: Duration = Duration::from_millis(200);

#[derive(Subcommand)]
pub enum BoardCommand {
    /// Print the platform, one reading of every telemetry field, and what cannot be read and why.
    Info {
        /// Print one JSON object (schema `dishcam.board/1`) instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &BoardCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BoardCommand::Info { json } => info(*json),
    }
}

fn info(json: bool) -> anyhow::Result<ExitCode> {
    let root = Path::new("/");
    let platform = detect_platform(root);
    let mut telemetry = detect(root);
    telemetry.sample();
    std::thread::sleep(SAMPLE_GAP);
    let sample = telemetry.sample();
    let mut unavailable = telemetry.unavailable();
    let power_mode = if platform.is_jetson() {
        match nvpmodel::query(root) {
            Ok(mode) => Some(mode),
            Err(e) => {
                unavailable.push(Unavailable::new("power mode (nvpmodel)", e.to_string()));
                None
            }
        }
    } else {
        None
    };
    if json {
        print_json(&json!({
            "schema": "dishcam.board/1",
            "platform": platform,
            "telemetry": telemetry.name(),
            "power_mode": power_mode,
            "sample": sample,
            "unavailable": unavailable,
        }));
    } else {
        print_text(
            &platform,
            telemetry.name(),
            power_mode.as_ref(),
            &sample,
            &unavailable,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(
    platform: &Platform,
    source: &str,
    power_mode: Option<&PowerMode>,
    s: &Sample,
    unavailable: &[Unavailable],
) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    println!("platform      {platform}");
    if let Some(mode) = power_mode {
        match mode.id {
            Some(id) => println!("power mode    {} ({id})", mode.name),
            None => println!("power mode    {}", mode.name),
        }
    }
    println!("telemetry     {source}");
    println!(
        "cpu           {}",
        or_dash(s.cpu_util.map(|u| format!("{:.1} %", u * 100.0)))
    );
    println!(
        "ram           {}",
        or_dash(
            s.ram_used_mb
                .zip(s.ram_total_mb)
                .map(|(used, total)| format!("{used:.0} / {total:.0} MiB used"))
        )
    );
    println!(
        "process rss   {}",
        or_dash(s.rss_mb.map(|rss| match s.rss_peak_mb {
            Some(peak) => format!("{rss:.1} MiB (peak {peak:.1} MiB)"),
            None => format!("{rss:.1} MiB"),
        }))
    );
    println!(
        "gpu           {}",
        or_dash(s.gpu_util.map(|u| match s.gpu_freq_mhz {
            Some(f) => format!("{:.0} % at {f} MHz", u * 100.0),
            None => format!("{:.0} %", u * 100.0),
        }))
    );
    println!(
        "power         {}",
        or_dash(s.power_mw.map(|mw| format!("{mw:.0} mW")))
    );
    for (rail, mw) in &s.power_rails_mw {
        println!("  {rail:<20} {mw:.0} mW");
    }
    println!(
        "energy        {}",
        or_dash(s.energy_uj.map(|uj| format!("{uj} µJ since start")))
    );
    if s.temperatures_c.is_empty() {
        println!("temperatures  -");
    } else {
        println!("temperatures");
        for (sensor, c) in &s.temperatures_c {
            println!("  {sensor:<20} {c:.1} °C");
        }
    }
    if !unavailable.is_empty() {
        println!("unavailable");
        for u in unavailable {
            println!("  {}: {}", u.what, u.why);
        }
    }
}
