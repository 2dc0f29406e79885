//! Atomic file replacement: write a temp file in the same directory, fsync it, rename it over the
//! target, fsync the directory. A crash at any point leaves either the old or the new file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{RecipeError, Result};

/// A file being written next to `target`; nothing is visible at `target` until [`AtomicFile::commit`].
/// Dropping it without committing removes the temp file and leaves `target` untouched.
pub struct AtomicFile {
    target: PathBuf,
    writer: BufWriter<tempfile::NamedTempFile>,
}

impl AtomicFile {
    /// Starts writing a replacement for `target` (its directory must exist).
    pub fn create(target: &Path) -> Result<Self> {
        let dir = parent_dir(target);
        let mut builder = tempfile::Builder::new();
        // Temp files are created 0600; the result should have the old file's mode, or 0644 (less the
        // umask) like any new file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(target)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            builder.permissions(std::fs::Permissions::from_mode(mode));
        }
        let tmp = builder
            .prefix(&format!(
                ".{}.",
                target.file_name().and_then(|n| n.to_str()).unwrap_or("tmp")
            ))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| RecipeError::io(&dir, e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 20, tmp),
        })
    }

    /// The buffered writer over the temp file.
    pub fn writer(&mut self) -> &mut BufWriter<tempfile::NamedTempFile> {
        &mut self.writer
    }

    /// Path of the temp file (for tests that simulate a crash before the rename).
    pub fn temp_path(&self) -> &Path {
        self.writer.get_ref().path()
    }

    /// Flushes, fsyncs, renames over the target and fsyncs the directory.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| RecipeError::io(&target, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| RecipeError::io(tmp.path(), e))?;
        tmp.persist(&target)
            .map_err(|e| RecipeError::io(&target, e.error))?;
        sync_dir(&parent_dir(&target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes).map_err(|e| RecipeError::io(target, e))?;
    f.commit()
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere the rename is as durable as the OS makes it.
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(|e| RecipeError::io(dir, e))?;
        d.sync_all().map_err(|e| RecipeError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
