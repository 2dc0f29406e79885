//! Jetson power mode from `nvpmodel -q`.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::BoardError;
use crate::telemetry::find_program;

/// The active nvpmodel power mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerMode {
    /// e.g. "MAXN", "15W".
    pub name: String,
    /// The mode's number, printed on the line after its name.
    pub id: Option<u32>,
}

/// Parses `nvpmodel -q` output: an `NV Power Mode: NAME` line followed by the mode id; other
/// lines (e.g. `NV Fan Mode:quiet`) are skipped.
pub fn parse_query(text: &str) -> Result<PowerMode, BoardError> {
    let mut lines = text.lines().map(str::trim);
    let name = lines
        .by_ref()
        .find_map(|line| line.strip_prefix("NV Power Mode:"))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| BoardError::Parse {
            what: "the power mode (an `NV Power Mode:` line)",
            text: text.to_string(),
        })?;
    let id = lines.find(|l| !l.is_empty()).and_then(|l| l.parse().ok());
    Ok(PowerMode {
        name: name.to_string(),
        id,
    })
}

/// Runs `nvpmodel -q` from the `PATH` under `root` and parses its output.
pub fn query(root: &Path) -> Result<PowerMode, BoardError> {
    let path = find_program(root, "nvpmodel").ok_or(BoardError::ProgramNotFound {
        program: "nvpmodel",
    })?;
    let output = Command::new(&path)
        .arg("-q")
        .output()
        .map_err(|source| BoardError::Spawn {
            path: path.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(BoardError::CommandFailed {
            command: format!("{} -q", path.display()),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    parse_query(&String::from_utf8_lossy(&output.stdout))
}
