//! Still images as sources: one file (`file://`), or every image in a directory (`dir://`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::decode::{decode_file, DecodeOptions};

use super::glob::glob_match;
use super::pace::Pacer;
use super::shape::{check_options, Shaper};
use super::{Frame, FrameSource, Next, SourceError, SourceOptions};

/// One photo: a single frame, then `End`; with `loop_`, the same frame again (paced at
/// `opts.fps` when set).
pub struct FileSource {
    path: PathBuf,
    source_size: (u32, u32),
    loop_: bool,
    fps: Option<f32>,
    pacer: Pacer,
    frame: Frame,
    produced: u64,
}

impl FileSource {
    /// Decodes the photo at once, so a missing or corrupt file fails here.
    pub fn open(path: &Path, opts: &SourceOptions) -> Result<Self, SourceError> {
        check_options(opts)?;
        if !path.exists() {
            return Err(SourceError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let decode = DecodeOptions {
            max_pixels: opts.max_pixels,
        };
        let img = decode_file(path, &decode).map_err(|error| SourceError::Decode {
            path: path.to_path_buf(),
            error,
        })?;
        let (w, h) = img.dimensions();
        let mut frame = Frame::empty();
        Shaper::new(opts).emit(img.as_raw(), w, h, &mut frame)?;
        Ok(Self {
            path: path.to_path_buf(),
            source_size: (w, h),
            loop_: opts.loop_,
            fps: opts.fps,
            pacer: Pacer::new(opts.fps),
            frame,
            produced: 0,
        })
    }
}

impl FrameSource for FileSource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError> {
        if self.produced > 0 && !self.loop_ {
            return Ok(Next::End);
        }
        if !self.pacer.wait(timeout) {
            return Ok(Next::Timeout);
        }
        // The pixels were shaped once at open; repeats only renumber the frame.
        self.frame.seq = self.produced;
        self.frame.captured = Instant::now();
        self.produced += 1;
        Ok(Next::Frame(&self.frame))
    }

    fn describe(&self) -> String {
        let (w, h) = self.source_size;
        let mut s = format!("file {} ({w}x{h})", self.path.display());
        if self.loop_ {
            s += ", looping";
        }
        s
    }

    fn fps_hint(&self) -> Option<f32> {
        self.fps.filter(|_| self.loop_)
    }
}

/// Every image file in a directory (optionally those whose names match a `*`/`?` pattern), in
/// file-name order, one frame each. Files that fail to decode are logged, counted in
/// [`FrameSource::skipped`] and passed over. Hidden files (names starting with `.`) are ignored.
pub struct DirSource {
    dir: PathBuf,
    pattern: Option<String>,
    files: Vec<PathBuf>,
    next: usize,
    frames_this_pass: u64,
    skipped: u64,
    loop_: bool,
    fps: Option<f32>,
    decode: DecodeOptions,
    pacer: Pacer,
    shaper: Shaper,
    frame: Frame,
    produced: u64,
}

impl DirSource {
    /// Lists the directory now (later additions are not seen); fails when nothing matches.
    pub fn open(
        dir: &Path,
        pattern: Option<&str>,
        opts: &SourceOptions,
    ) -> Result<Self, SourceError> {
        check_options(opts)?;
        if !dir.exists() {
            return Err(SourceError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        let io = |source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !pattern.is_none_or(|p| glob_match(p, &name)) {
                continue;
            }
            if entry.path().is_file() {
                files.push(entry.path());
            }
        }
        if files.is_empty() {
            return Err(SourceError::NoFiles {
                dir: dir.to_path_buf(),
                pattern: pattern.unwrap_or("*").to_string(),
            });
        }
        files.sort();
        Ok(Self {
            dir: dir.to_path_buf(),
            pattern: pattern.map(str::to_string),
            files,
            next: 0,
            frames_this_pass: 0,
            skipped: 0,
            loop_: opts.loop_,
            fps: opts.fps,
            decode: DecodeOptions {
                max_pixels: opts.max_pixels,
            },
            pacer: Pacer::new(opts.fps),
            shaper: Shaper::new(opts),
            frame: Frame::empty(),
            produced: 0,
        })
    }

    /// The files the source reads, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Moves to the start of the next pass when the list is used up; false at the end of the
    /// stream. A pass that decoded nothing ends the stream even when looping.
    fn ensure_next(&mut self) -> bool {
        if self.next < self.files.len() {
            return true;
        }
        if !self.loop_ || self.frames_this_pass == 0 {
            return false;
        }
        self.next = 0;
        self.frames_this_pass = 0;
        true
    }
}

impl FrameSource for DirSource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Next<'_>, SourceError> {
        if !self.ensure_next() {
            return Ok(Next::End);
        }
        if !self.pacer.wait(timeout) {
            return Ok(Next::Timeout);
        }
        while self.ensure_next() {
            let path = &self.files[self.next];
            self.next += 1;
            match decode_file(path, &self.decode) {
                Ok(img) => {
                    let (w, h) = img.dimensions();
                    self.shaper.emit(img.as_raw(), w, h, &mut self.frame)?;
                    self.frame.seq = self.produced;
                    self.frame.captured = Instant::now();
                    self.produced += 1;
                    self.frames_this_pass += 1;
                    return Ok(Next::Frame(&self.frame));
                }
                Err(e) => {
                    log::warn!("skipping {e}");
                    self.skipped += 1;
                }
            }
        }
        Ok(Next::End)
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "dir {} ({} files",
            self.dir
                .join(self.pattern.as_deref().unwrap_or(""))
                .display(),
            self.files.len()
        );
        if self.loop_ {
            s += ", looping";
        }
        s + ")"
    }

    fn fps_hint(&self) -> Option<f32> {
        self.fps
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
