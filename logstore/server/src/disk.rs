//! Disk watermarks of the data directory: appends are refused with DiskPressure (2007, retriable) before
//! the disk fills, so a full disk never turns into a torn or failed fsync.
//!
//! `sample()` runs `statvfs` on the data directory (a background task calls it every
//! `diskWatermarkPolicy.sampleInterval`); `admit()` only reads the last sample.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use woodpecker_proto::logstore::Status;

use crate::status;

/// The data disk's usage and the limits appends stop at.
#[derive(Debug)]
pub struct DiskWatermark {
    dir: PathBuf,
    enabled: bool,
    hard_ratio: f64,
    min_free_bytes: u64,
    total: AtomicU64,
    free: AtomicU64,
    over: AtomicBool,
}

/// One `statvfs` reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of the file system.
    pub total: u64,
    /// Bytes available to this (non-root) process.
    pub free: u64,
}

impl DiskWatermark {
    /// Watermarks of the file system holding `dir`: refuse once used/total ≥ `hard_ratio` or free <
    /// `min_free_bytes` (when `enabled`).
    pub fn new(dir: PathBuf, enabled: bool, hard_ratio: f64, min_free_bytes: u64) -> Self {
        Self {
            dir,
            enabled,
            hard_ratio,
            min_free_bytes,
            total: AtomicU64::new(0),
            free: AtomicU64::new(0),
            over: AtomicBool::new(false),
        }
    }

    /// Reads the disk usage now and updates the refusal state.
    pub fn sample(&self) -> std::io::Result<DiskUsage> {
        let usage = statvfs(&self.dir)?;
        self.total.store(usage.total, Ordering::Relaxed);
        self.free.store(usage.free, Ordering::Relaxed);
        self.over.store(self.enabled && self.is_over(usage), Ordering::Release);
        Ok(usage)
    }

    fn is_over(&self, u: DiskUsage) -> bool {
        if u.total == 0 {
            return false;
        }
        let used = u.total.saturating_sub(u.free) as f64 / u.total as f64;
        used >= self.hard_ratio || u.free < self.min_free_bytes
    }

    /// The last sample.
    pub fn usage(&self) -> DiskUsage {
        DiskUsage { total: self.total.load(Ordering::Relaxed), free: self.free.load(Ordering::Relaxed) }
    }

    /// Whether the last sample is above the hard watermark.
    pub fn over_watermark(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// `Err(DiskPressure)` while above the hard watermark.
    pub fn admit(&self) -> Result<(), Status> {
        if !self.over_watermark() {
            return Ok(());
        }
        let u = self.usage();
        Err(status::DISK_PRESSURE.status(format!(
            "data disk {} is above its watermark: {} of {} bytes free (limit: {:.0}% used or {} bytes free)",
            self.dir.display(),
            u.free,
            u.total,
            self.hard_ratio * 100.0,
            self.min_free_bytes
        )))
    }
}

fn statvfs(dir: &Path) -> std::io::Result<DiskUsage> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "data dir path contains NUL"))?;
    // SAFETY: `path` is a valid NUL-terminated string and `st` a plain output struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statvfs only writes into `st`.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(DiskUsage { total: st.f_blocks as u64 * frsize, free: st.f_bavail as u64 * frsize })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_refused_above_the_hard_watermark_only() {
        let dir = tempfile::tempdir().unwrap();
        let relaxed = DiskWatermark::new(dir.path().into(), true, 1.01, 0);
        relaxed.sample().unwrap();
        assert!(relaxed.admit().is_ok());
        let strict = DiskWatermark::new(dir.path().into(), true, 0.0, 0);
        let usage = strict.sample().unwrap();
        assert!(usage.total > 0);
        let refused = strict.admit().unwrap_err();
        assert_eq!((refused.code, refused.retriable), (2007, true));
        let off = DiskWatermark::new(dir.path().into(), false, 0.0, u64::MAX);
        off.sample().unwrap();
        assert!(off.admit().is_ok(), "disabled by config");
    }
}
