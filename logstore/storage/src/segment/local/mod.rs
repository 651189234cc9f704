//! Local segment format: one `data.log` per segment, `write.fence` and `write.lock` beside it.
//!
//! ```text
//! <base>/<root>/<logId>/<segId>/data.log     [Header][BlockHeader b0][Data…]…[Index…][Footer]
//!                                write.lock   flock'ed around every append, fence and finalize
//!                                write.fence  present once the segment was fenced
//!                                data.durable how much of data.log is fsynced (ours; upstream ignores it)
//! ```
//!
//! Single-writer safety without upstream's 5 s sleep: `write_block` takes the exclusive flock, refuses to
//! append when `write.fence` exists, appends and fsyncs, then unlocks. `fence` creates `write.fence` first
//! and only then takes the same flock, which waits for an append already past its fence check; the scan it
//! does under the lock therefore sees every block that will ever be in the file. flock is per open file
//! description, so this also excludes a second writer or fencer in the same process.
//!
//! Readers see only fsynced blocks: after each fsync, still under the flock, the writer publishes the
//! file's durable length in `data.durable`, and lock-free readers stop there. A block whose fsync
//! failed is cut off again by the writer before anybody can have read it. The writer creates
//! `data.durable` before `data.log`, so a `data.log` without one was written by upstream (or an older
//! version) and is read up to its length as before. Across processes this works through the page
//! cache: the length is written after the data it covers.
//!
//! Readers never lock while a writer may append. Once they see `write.fence` they take a *shared* flock
//! for one rescan, which waits out an append that passed its fence check just before the flag appeared;
//! without it a reader could end the segment one block short of what `fence` returns.
//!
//! Recovery (`fence`, `finalize`) and readers share one rule for a damaged tail versus corruption, see
//! `format`: only the last write can be torn, so damage followed by intact data is corruption
//! ([`SegmentError::Corrupt`] with the file and offset), never skipped.
//!
//! Every file operation runs on the blocking pool; fsync never runs on a runtime thread.

mod format;
mod reader;
mod writer;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use woodpecker_core::ids::{EntryId, LogId};
use woodpecker_core::keys;

use self::format::ScanError;
pub use self::format::Scanned as DataLogScan;
pub use self::reader::LocalSegmentReader;
pub use self::writer::{LocalSegmentWriter, PIPELINE_DEPTH, release_cache_behind};
use super::{BufferPool, SegmentBackend, SegmentError, SegmentReader, SegmentRef, SegmentSummary, SegmentWriter};

/// Name of the segment file.
pub const DATA_FILE: &str = "data.log";
/// Name of the file flock'ed by writers and fencers.
pub const LOCK_FILE: &str = "write.lock";
/// Name of the flag file that ends a segment.
pub const FENCE_FILE: &str = "write.fence";
/// Name of the file holding the fsynced length of `data.log`.
pub const DURABLE_FILE: &str = "data.durable";

/// Segments stored as `data.log` files under a local directory, byte-compatible with upstream's local mode.
#[derive(Debug, Clone)]
pub struct LocalSegmentBackend {
    base_dir: PathBuf,
    root_path: String,
    /// Block buffers shared by this backend's writers, so a segment roll keeps them.
    pool: Arc<BufferPool>,
}

impl LocalSegmentBackend {
    /// A backend storing segment `s` of log `l` in `base_dir/<root_path>/<l>/<s>/`.
    pub fn new(base_dir: PathBuf, root_path: String) -> Self {
        Self { base_dir, root_path, pool: BufferPool::new(PIPELINE_DEPTH + 1) }
    }

    fn paths(&self, segment: SegmentRef) -> Arc<SegmentPaths> {
        let dir = self.base_dir.join(keys::local_segment_dir(&self.root_path, segment.log_id, segment.segment_id));
        Arc::new(SegmentPaths {
            segment,
            data: dir.join(DATA_FILE),
            lock: dir.join(LOCK_FILE),
            fence: dir.join(FENCE_FILE),
            durable: dir.join(DURABLE_FILE),
            dir,
        })
    }
}

/// What one segment's local files hold, as staged storage asks before it serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSegmentState {
    /// `data.log` exists.
    pub has_data_file: bool,
    /// `write.fence` exists: no writer may append again, across restarts.
    pub fenced: bool,
    /// The footer's LAC once the segment is finalized.
    pub footer_lac: Option<EntryId>,
    /// Last entry of the complete, fsynced blocks (-1 when none).
    pub last_entry_id: EntryId,
    /// Number of those blocks.
    pub blocks: u64,
}

impl LocalSegmentBackend {
    /// The directory holding the segment's files.
    pub fn segment_dir(&self, segment: SegmentRef) -> PathBuf {
        self.paths(segment).dir.clone()
    }

    /// Looks at the segment's files without taking the writer's lock: the footer when there is one,
    /// else the blocks up to the length the writer published as fsynced.
    pub async fn inspect(&self, segment: SegmentRef) -> Result<LocalSegmentState, SegmentError> {
        let paths = self.paths(segment);
        blocking(segment, move || paths.inspect_blocking()).await
    }

    /// Fences the segment and writes index and footer, with `lac` as the footer's LAC (staged storage: the
    /// LAC the writer computed from the quorum's fence answers). Idempotent: a finalized segment keeps its
    /// footer, and the summary reports the LAC stored there.
    pub async fn finalize_with_lac(&self, segment: SegmentRef, lac: EntryId) -> Result<SegmentSummary, SegmentError> {
        let paths = self.paths(segment);
        blocking(segment, move || paths.finalize_blocking(Some(lac))).await
    }

    /// The segment's durable blocks and footer, as [`Self::inspect`] sees them (for compaction).
    pub(crate) async fn scan(&self, segment: SegmentRef) -> Result<Option<(DataLogScan, Arc<File>)>, SegmentError> {
        let paths = self.paths(segment);
        blocking(segment, move || {
            let Some(file) = paths.open_data()? else { return Ok(None) };
            let scanned = paths.scan_visible(&file)?;
            Ok(Some((scanned, Arc::new(file))))
        })
        .await
    }

    /// Reads and verifies one block of a [`Self::scan`] result.
    pub(crate) async fn read_block(
        &self,
        segment: SegmentRef,
        file: Arc<File>,
        index: woodpecker_core::codec::IndexRecord,
    ) -> Result<woodpecker_core::codec::DecodedBlock, SegmentError> {
        let paths = self.paths(segment);
        blocking(segment, move || format::read_indexed_block(&file, &index).map_err(|e| paths.scan_err(e))).await
    }
}

/// `data.durable` holds the length and its bitwise complement (16 bytes, little endian), so a read that
/// races the 16-byte rewrite is recognised instead of trusted.
const DURABLE_RECORD_LEN: usize = 16;

/// Writes `len` into `data.durable` (not fsynced: after a crash the next writer's fence decides).
pub(crate) fn publish_durable_length(f: &File, len: u64) -> io::Result<()> {
    let mut buf = [0u8; DURABLE_RECORD_LEN];
    buf[..8].copy_from_slice(&len.to_le_bytes());
    buf[8..].copy_from_slice(&(!len).to_le_bytes());
    f.write_all_at(&buf, 0)
}

/// The length in a `data.durable` record, `None` when its two halves disagree.
fn decode_durable_length(buf: &[u8; DURABLE_RECORD_LEN]) -> Option<u64> {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&buf[..8]);
    b.copy_from_slice(&buf[8..]);
    let (len, check) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
    (len == !check).then_some(len)
}

/// The files of one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    segment: SegmentRef,
    dir: PathBuf,
    data: PathBuf,
    lock: PathBuf,
    fence: PathBuf,
    durable: PathBuf,
}

impl SegmentPaths {
    /// The files of `segment` beside the `data.log` at `data`.
    fn of_data_file(segment: SegmentRef, data: &Path) -> Self {
        let dir = data.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        Self {
            segment,
            lock: dir.join(LOCK_FILE),
            fence: dir.join(FENCE_FILE),
            durable: dir.join(DURABLE_FILE),
            data: data.to_path_buf(),
            dir,
        }
    }

    /// Maps an OS error on `path` to a segment error.
    fn io(&self, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SegmentError + use<> {
        let segment = self.segment;
        let path = path.display().to_string();
        move |source| SegmentError::Io { segment, op, path, source }
    }

    /// Maps a scan failure of `data.log` to a segment error naming the file and offset.
    fn scan_err(&self, e: ScanError) -> SegmentError {
        match e {
            ScanError::Io(source) => self.io("read", &self.data)(source),
            ScanError::Corrupt(source) => {
                SegmentError::Corrupt { location: self.data.display().to_string(), offset: source.offset(), source }
            }
        }
    }

    /// Creates `data.durable` saying nothing is durable yet (before `data.log` exists).
    fn create_durable_length(&self) -> Result<File, SegmentError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&self.durable)
            .map_err(self.io("create", &self.durable))?;
        publish_durable_length(&f, 0).map_err(self.io("write", &self.durable))?;
        Ok(f)
    }

    /// The fsynced length of `data.log` its writer published; `None` when it publishes none (an upstream
    /// or older writer: the whole file counts). A record caught mid-rewrite reads as 0: nothing new
    /// this time, the next read sees the new value.
    fn durable_length(&self) -> Result<Option<u64>, SegmentError> {
        let f = match File::open(&self.durable) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("open", &self.durable)(e)),
        };
        let mut buf = [0u8; DURABLE_RECORD_LEN];
        match f.read_exact_at(&mut buf, 0) {
            Ok(()) => Ok(Some(decode_durable_length(&buf).unwrap_or(0))),
            // Shorter than a record: created an instant ago, nothing durable yet.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(0)),
            Err(e) => Err(self.io("read", &self.durable)(e)),
        }
    }

    /// Whether `write.fence` exists.
    fn is_fenced(&self) -> Result<bool, SegmentError> {
        self.fence.try_exists().map_err(self.io("stat", &self.fence))
    }

    /// Opens (creating if needed) the lock file without truncating it.
    fn open_lock(&self) -> Result<File, SegmentError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
            .map_err(self.io("open", &self.lock))
    }

    /// Creates `write.fence` durably if it does not exist yet.
    fn mark_fenced(&self) -> Result<(), SegmentError> {
        create_dir_durable(&self.dir).map_err(self.io("create directory", &self.dir))?;
        if self.is_fenced()? {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.fence)
            .map_err(self.io("create", &self.fence))?;
        // Text content as upstream's flag file; only its existence matters.
        let text = format!("fenced=true\npid={}\n", std::process::id());
        f.write_all(text.as_bytes()).map_err(self.io("write", &self.fence))?;
        f.sync_all().map_err(self.io("fsync", &self.fence))?;
        fsync_dir(&self.dir).map_err(self.io("fsync directory", &self.dir))
    }

    /// Opens `data.log` for reading; `None` when it does not exist.
    fn open_data(&self) -> Result<Option<File>, SegmentError> {
        match File::open(&self.data) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("open", &self.data)(e)),
        }
    }

    /// Scans `file` up to the length its writer published as fsynced (the whole file without one).
    fn scan_visible(&self, file: &File) -> Result<DataLogScan, SegmentError> {
        let len = file.metadata().map_err(self.io("stat", &self.data))?.len();
        let visible = self.durable_length()?.map_or(len, |d| d.min(len));
        // A footer lies beyond the published length only for an instant; look at the whole file for it.
        if let Some(f) = format::read_footer(file, len).map_err(|e| self.scan_err(e))? {
            return Ok(DataLogScan {
                end: f.record.index_offset,
                header: true,
                footer: Some(f.record),
                index: f.index,
            });
        }
        format::scan(file, visible).map_err(|e| self.scan_err(e))
    }

    /// See [`LocalSegmentBackend::inspect`] (blocking).
    fn inspect_blocking(&self) -> Result<LocalSegmentState, SegmentError> {
        let fenced = self.is_fenced()?;
        let Some(file) = self.open_data()? else {
            return Ok(LocalSegmentState {
                has_data_file: false,
                fenced,
                footer_lac: None,
                last_entry_id: -1,
                blocks: 0,
            });
        };
        let scanned = self.scan_visible(&file)?;
        Ok(LocalSegmentState {
            has_data_file: true,
            fenced,
            footer_lac: scanned.footer.map(|f| f.lac),
            last_entry_id: scanned.last_entry_id(),
            blocks: scanned.index.len() as u64,
        })
    }

    /// Fences the segment and returns its last durable entry (blocking).
    fn fence_blocking(&self) -> Result<EntryId, SegmentError> {
        self.mark_fenced()?;
        let lock = self.open_lock()?;
        let _guard = Flock::exclusive(&lock).map_err(self.io("lock", &self.lock))?;
        let file = match File::open(&self.data) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(-1),
            Err(e) => return Err(self.io("open", &self.data)(e)),
        };
        let len = file.metadata().map_err(self.io("stat", &self.data))?.len();
        let scanned = format::scan(&file, len).map_err(|e| self.scan_err(e))?;
        Ok(scanned.last_entry_id())
    }

    /// Fences the segment, then writes index and footer over its durable blocks unless present (blocking).
    /// The footer's LAC is `lac` when given (staged storage), else the last durable entry.
    fn finalize_blocking(&self, lac: Option<EntryId>) -> Result<SegmentSummary, SegmentError> {
        self.mark_fenced()?;
        let lock = self.open_lock()?;
        // Held across scan, truncate and append so concurrent finalizers (other processes) serialize.
        let _guard = Flock::exclusive(&lock).map_err(self.io("lock", &self.lock))?;
        let existed = self.data.try_exists().map_err(self.io("stat", &self.data))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.data)
            .map_err(self.io("open", &self.data))?;
        if !existed {
            fsync_dir(&self.dir).map_err(self.io("fsync directory", &self.dir))?;
        }
        let len = file.metadata().map_err(self.io("stat", &self.data))?.len();
        let scanned = format::scan(&file, len).map_err(|e| self.scan_err(e))?;
        let blocks = scanned.index.len() as u64;
        if let Some(footer) = &scanned.footer {
            let last_entry_id = if lac.is_some() { footer.lac } else { scanned.last_entry_id() };
            return Ok(SegmentSummary { last_entry_id, size: len, blocks });
        }
        if len > scanned.end {
            // A torn tail (or an interrupted finalize): never acknowledged, never visible to readers.
            tracing::warn!(
                segment = %self.segment,
                path = %self.data.display(),
                valid = scanned.end,
                len,
                "dropping torn tail of data.log before finalizing"
            );
            file.set_len(scanned.end).map_err(self.io("truncate", &self.data))?;
        }
        let tail = format::encode_tail(&scanned.index, scanned.end, !scanned.header, lac);
        file.write_all_at(&tail, scanned.end).map_err(self.io("write", &self.data))?;
        file.sync_all().map_err(self.io("fsync", &self.data))?;
        let last_entry_id = lac.unwrap_or_else(|| scanned.last_entry_id());
        Ok(SegmentSummary { last_entry_id, size: scanned.end + tail.len() as u64, blocks })
    }
}

/// What recovery (`fence`, `finalize`) finds in the `data.log` at `path` of `segment`: its footer, or else its
/// complete verified blocks up to a torn tail, or the corruption that stops the scan. Takes no lock: for a file
/// no writer appends to (tools, fuzzing); the backend runs the same scan under the segment's lock.
pub fn scan_data_log(segment: SegmentRef, path: &Path) -> Result<DataLogScan, SegmentError> {
    let paths = SegmentPaths::of_data_file(segment, path);
    let file = File::open(path).map_err(paths.io("open", path))?;
    let len = file.metadata().map_err(paths.io("stat", path))?.len();
    format::scan(&file, len).map_err(|e| paths.scan_err(e))
}

/// Reads and verifies the block that `index`, a record of a [`scan_data_log`] result, locates in `path`.
pub fn read_data_log_block(
    segment: SegmentRef,
    path: &Path,
    index: &woodpecker_core::codec::IndexRecord,
) -> Result<woodpecker_core::codec::DecodedBlock, SegmentError> {
    let paths = SegmentPaths::of_data_file(segment, path);
    let file = File::open(path).map_err(paths.io("open", path))?;
    format::read_indexed_block(&file, index).map_err(|e| paths.scan_err(e))
}

/// An exclusive or shared flock released on drop (also released when the file is closed).
pub(crate) struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    /// Blocks until the exclusive lock is held.
    fn exclusive(f: &'a File) -> io::Result<Self> {
        f.lock()?;
        Ok(Self(f))
    }

    /// Blocks until a shared lock is held.
    fn shared(f: &'a File) -> io::Result<Self> {
        f.lock_shared()?;
        Ok(Self(f))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; an unlock error leaves nothing to repair.
        let _ = self.0.unlock();
    }
}

/// fsyncs a directory so entries created in it survive a crash.
fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for m in missing.iter().rev() {
        if let Some(parent) = m.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T, F>(segment: SegmentRef, f: F) -> Result<T, SegmentError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SegmentError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SegmentError::Io {
            segment,
            op: "run file task",
            path: String::new(),
            source: io::Error::other(e.to_string()),
        }),
    }
}

#[async_trait]
impl SegmentBackend for LocalSegmentBackend {
    fn describe(&self) -> String {
        format!("local:{}", self.base_dir.join(self.root_path.trim_matches('/')).display())
    }

    async fn create_writer(&self, segment: SegmentRef) -> Result<Box<dyn SegmentWriter>, SegmentError> {
        let paths = self.paths(segment);
        let pool = self.pool.lease();
        let w = blocking(segment, move || LocalSegmentWriter::create_blocking(paths, pool)).await?;
        Ok(Box::new(w))
    }

    async fn fence(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        let paths = self.paths(segment);
        blocking(segment, move || paths.fence_blocking()).await
    }

    async fn finalize(&self, segment: SegmentRef) -> Result<SegmentSummary, SegmentError> {
        let paths = self.paths(segment);
        blocking(segment, move || paths.finalize_blocking(None)).await
    }

    async fn visible_end(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        Ok(self.inspect(segment).await?.last_entry_id)
    }

    async fn open_reader(&self, segment: SegmentRef) -> Result<Box<dyn SegmentReader>, SegmentError> {
        Ok(Box::new(LocalSegmentReader::new(self.paths(segment))))
    }

    async fn compact(&self, segment: SegmentRef) -> Result<u64, SegmentError> {
        // Upstream never compacts local segments; the file stays as it is.
        let paths = self.paths(segment);
        match tokio::fs::metadata(&paths.data).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SegmentError::Missing { segment, what: paths.data.display().to_string() })
            }
            Err(e) => Err(paths.io("stat", &paths.data)(e)),
        }
    }

    async fn delete_segment(&self, segment: SegmentRef) -> Result<(), SegmentError> {
        let paths = self.paths(segment);
        remove_dir_idempotent(&paths.dir).await.map_err(paths.io("remove", &paths.dir))
    }

    async fn delete_log(&self, log_id: LogId) -> Result<(), SegmentError> {
        let dir = self.base_dir.join(keys::log_prefix(&self.root_path, log_id));
        remove_dir_idempotent(&dir).await.map_err(|source| SegmentError::Io {
            // The error type names a segment; -1 stands for "every segment of the log".
            segment: SegmentRef { log_id, segment_id: -1 },
            op: "remove",
            path: dir.display().to_string(),
            source,
        })
    }
}

async fn remove_dir_idempotent(dir: &Path) -> io::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
