//! Process start to first answer, and resident memory, measured in child processes running
//! `dishcam classify` on one photo: once with the file cache cold for every file it reads
//! (a copy of the executable, the onnxruntime library, the pack and the photo are evicted with
//! `posix_fadvise(DONTNEED)`), then warm.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use dishcam_models::{Home, Pack};
use dishcam_runtime::backend::BackendKind;

use crate::error::{invalid, Context, Result};
use crate::run::Config;

/// Warm runs per configuration; the median is reported.
const WARM_RUNS: usize = 3;

/// Start-up of one backend and precision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Startup {
    pub config: String,
    /// Milliseconds from spawning the process to its first line of output, cold file cache.
    pub cold_ms: Option<f64>,
    /// The same with a warm file cache, median of the warm runs.
    pub warm_ms: Option<f64>,
    pub warm_runs_ms: Vec<f64>,
    /// Peak resident memory of the process (the largest of all runs), MiB.
    pub peak_rss_mb: Option<f64>,
    /// Files whose cached pages were dropped before the cold run.
    pub evicted_files: usize,
    /// Why the measurement failed, when it did.
    pub error: Option<String>,
}

struct Child {
    first_answer_ms: f64,
    max_rss_mb: f64,
}

/// Runs `exe classify photo` with `config`'s backend, precision and threads.
fn run_child(exe: &Path, pack: &str, config: &Config, photo: &str) -> Result<Child> {
    let stderr = tempfile::tempfile()?;
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args(["classify", photo, "--pack", pack, "--top", "1"])
        .args(["--backend", config.backend.as_str()])
        .args(["--precision", config.precision.as_str()])
        .args(["--threads", &config.threads.to_string()])
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("{}: cannot start", exe.display()))?;
    let mut first = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let _ = line?;
            first.get_or_insert_with(|| t0.elapsed());
        }
    }
    let (status, rss_kb) = wait_with_rusage(child.id() as i32)?;
    if status != 0 {
        use std::io::{Read, Seek};
        let mut err = String::new();
        let mut f = stderr;
        f.rewind()?;
        f.read_to_string(&mut err)?;
        invalid!(
            "`dishcam classify` exited with status {status}: {}",
            err.lines().last().unwrap_or("no message")
        );
    }
    let first = first.context("`dishcam classify` printed nothing")?;
    Ok(Child {
        first_answer_ms: first.as_secs_f64() * 1e3,
        max_rss_mb: rss_kb as f64 / 1024.0,
    })
}

/// Waits for `pid` and returns its exit status and peak resident set (KiB) from `wait4`:
/// `std::process::Child::wait` does not return the child's resource usage.
fn wait_with_rusage(pid: i32) -> Result<(i32, i64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for the child we spawned
    // and have not waited for yet.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        invalid!("waiting for the child: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, usage.ru_maxrss))
}

/// Drops the cached pages of `path` (after flushing it); false when the file cannot be opened.
fn evict(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let _ = f.sync_all();
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) == 0 }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Measures every distinct backend and precision of `configs` (at the first thread count).
pub fn measure(
    pack: &Pack,
    pack_arg: &str,
    configs: &[Config],
    photo: &str,
    home: &Home,
    progress: impl Fn(&str),
) -> Result<Vec<Startup>> {
    // A private copy of the executable, so that its pages can be evicted too (this process
    // keeps its own executable mapped).
    let scratch = tempfile::tempdir()?;
    let exe = scratch.path().join("dishcam");
    std::fs::copy(std::env::current_exe()?, &exe).context("copying the executable")?;
    let mut files = vec![exe.clone(), PathBuf::from(photo)];
    files_under(&pack.dir, &mut files);
    files_under(&pack.overlay_dir, &mut files);
    files.extend(
        dishcam_runtime::backend::onnxruntime::library_candidates(Some(home))
            .into_iter()
            .filter(|p| p.is_file()),
    );
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for c in configs {
        if seen.contains(&(c.backend, c.precision)) {
            continue;
        }
        seen.push((c.backend, c.precision));
        progress(&format!("start-up: {}", c.id()));
        let evicted = files.iter().filter(|f| evict(f)).count();
        let mut s = Startup {
            config: c.id(),
            cold_ms: None,
            warm_ms: None,
            warm_runs_ms: Vec::new(),
            peak_rss_mb: None,
            evicted_files: evicted,
            error: None,
        };
        let mut rss: f64 = 0.0;
        let result = (|| -> Result<()> {
            let cold = run_child(&exe, pack_arg, c, photo)?;
            s.cold_ms = Some(cold.first_answer_ms);
            rss = rss.max(cold.max_rss_mb);
            for _ in 0..WARM_RUNS {
                let warm = run_child(&exe, pack_arg, c, photo)?;
                s.warm_runs_ms.push(warm.first_answer_ms);
                rss = rss.max(warm.max_rss_mb);
            }
            Ok(())
        })();
        if let Err(e) = result {
            s.error = Some(format!("{e:#}"));
        }
        let mut warm = s.warm_runs_ms.clone();
        warm.sort_by(f64::total_cmp);
        s.warm_ms = warm.get(warm.len() / 2).copied();
        s.peak_rss_mb = (rss > 0.0).then_some(rss);
        if c.backend == BackendKind::Tract && s.error.is_none() {
            log::debug!("tract start-up includes its graph optimisation");
        }
        out.push(s);
    }
    Ok(out)
}

/// CPU time of this process so far.
pub struct Usage {
    pub cpu_seconds: f64,
}

pub fn self_usage() -> Usage {
    // SAFETY: getrusage fills the zeroed struct for this process.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Usage {
        cpu_seconds: secs(u.ru_utime) + secs(u.ru_stime),
    }
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
