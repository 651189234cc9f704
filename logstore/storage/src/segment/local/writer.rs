//! The `data.log` writer: one block per append, fsynced under the segment's flock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::oneshot;
use woodpecker_core::codec::{self, HEADER_RECORD_LEN, IndexRecord, RECORD_HEADER_LEN};
use woodpecker_core::ids::EntryId;

use super::format;
use super::{Flock, SegmentPaths, blocking, create_dir_durable, fsync_dir, publish_durable_length};
use crate::segment::{BlockToWrite, PoolLease, SegmentError, SegmentSummary, SegmentWriter};

/// Writes one local segment. Blocks are appended strictly in order, each followed by an fsync.
///
/// ```text
///  write_block(n)   ─▶ blocking pool: encode n ─▶ queue ─┐
///  write_block(n+1) ─▶ blocking pool: encode n+1 ─▶ queue ┤   one appender at a time takes the queue in
///                                                         └▶ block order: append + fsync n, n+1, … back to back
/// ```
///
/// Whichever pool thread queues the next block while no appender runs becomes the appender, and keeps
/// appending as long as the next block is queued: the disk does not wait for the async side (an
/// acknowledgement, a task wake-up) between blocks. Each call learns its own block's outcome.
#[derive(Debug)]
pub struct LocalSegmentWriter {
    shared: Arc<Shared>,
}

/// Blocks a caller may have in flight: one appending, one being encoded behind it.
pub const PIPELINE_DEPTH: usize = 2;

#[derive(Debug)]
struct Shared {
    paths: Arc<SegmentPaths>,
    data: File,
    lock: File,
    /// `data.durable`: the fsynced length of `data`, for readers.
    durable: File,
    state: Mutex<WriterState>,
    /// Woken whenever the file is released (an appender or a finalize stops holding it).
    released: tokio::sync::Notify,
    /// Buffers of appended blocks, encoded into again (the backend's pool, shared across segments).
    spare: PoolLease,
}

#[derive(Debug)]
struct WriterState {
    /// Bytes of `data.log` that are durable and acknowledged.
    end: u64,
    next_block: i64,
    next_entry: EntryId,
    index: Vec<IndexRecord>,
    /// Why the writer takes no more blocks, once it does not.
    done: Option<Done>,
    /// Blocks being encoded.
    encoding: BTreeSet<i64>,
    /// Encoded blocks waiting for their turn.
    queued: BTreeMap<i64, Encoded>,
    /// An appender (or a finalize) holds the file.
    busy: bool,
    /// Block `next_block` is being appended (taken off the queue, not yet accounted for).
    appending: bool,
    /// `data.log` up to here was released from the page cache (see [`release_cache_behind`]).
    released: u64,
}

impl WriterState {
    /// The first block id not yet appended or being appended.
    fn first_open(&self) -> i64 {
        self.next_block + i64::from(self.appending)
    }
}

/// Where a block's outcome goes.
type Reply = oneshot::Sender<Result<(), SegmentError>>;

/// A block ready to append, and where its outcome goes.
struct Encoded {
    bytes: Vec<u8>,
    /// Bytes before the block (the file header, with block 0).
    prefix: u64,
    block_number: i32,
    first_entry_id: EntryId,
    last_entry_id: EntryId,
    reply: Reply,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded").field("block", &self.block_number).field("len", &self.bytes.len()).finish()
    }
}

#[derive(Debug, Clone)]
enum Done {
    Finalized(SegmentSummary),
    Fenced,
    Closed,
    /// An append failed and the file could not be put back to its acknowledged length, or a file task
    /// died.
    Broken(String),
}

/// How an append under the lock failed.
enum AppendError {
    Fenced,
    /// The file is back at its acknowledged length; the writer may go on.
    Io(Box<SegmentError>),
    /// The file may hold a partial block; the writer must stop.
    Broken(Box<SegmentError>, String),
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse(&self, done: &Done) -> SegmentError {
        let segment = self.paths.segment;
        match done {
            Done::Finalized(_) => SegmentError::Finalized { segment },
            Done::Fenced => SegmentError::Fenced { segment },
            Done::Closed => SegmentError::Io {
                segment,
                op: "write",
                path: self.paths.data.display().to_string(),
                source: io::Error::other("the writer is closed"),
            },
            Done::Broken(why) => SegmentError::Io {
                segment,
                op: "write",
                path: self.paths.data.display().to_string(),
                source: io::Error::other(format!("the writer stopped after a failed append: {why}")),
            },
        }
    }

    fn out_of_order(&self, block_id: i64, first_entry_id: EntryId) -> SegmentError {
        SegmentError::OutOfOrder { segment: self.paths.segment, block_id, first_entry_id }
    }

    /// Fails every queued block that can no longer be appended: all of them once the writer is done,
    /// otherwise those behind a block that is neither encoding nor queued (it will never come).
    fn fail_stranded(&self, st: &mut WriterState) {
        if let Some(done) = st.done.clone() {
            for (_, e) in std::mem::take(&mut st.queued) {
                let _ = e.reply.send(Err(self.refuse(&done)));
            }
            return;
        }
        let mut expect = st.first_open();
        let ids: Vec<i64> = st.queued.keys().copied().collect();
        for id in ids {
            let gap = id < expect || (expect..id).any(|b| !st.encoding.contains(&b));
            if gap && let Some(e) = st.queued.remove(&id) {
                let _ = e.reply.send(Err(self.out_of_order(id, e.first_entry_id)));
                continue;
            }
            expect = id + 1;
        }
    }

    /// Releases the durable part of `data.log` more than [`CACHED_TAIL`] behind its end from the page
    /// cache, if the last call did not already (blocking).
    fn release_cache(&self) {
        let range = {
            let mut st = self.state();
            let to = st.end.saturating_sub(CACHED_TAIL);
            let from = st.released;
            st.released = to.max(from);
            (to > from).then_some((from, to))
        };
        if let Some((from, to)) = range {
            release_cache(&self.data, from, to);
        }
    }

    /// Queues an encoded block (blocking-pool thread), then appends queued blocks in order unless
    /// another thread already does.
    fn queue_and_append(self: &Arc<Self>, block_id: i64, block: Encoded) {
        {
            let mut st = self.state();
            st.encoding.remove(&block_id);
            st.queued.insert(block_id, block);
            self.fail_stranded(&mut st);
            if st.busy || !st.queued.contains_key(&st.next_block) {
                return;
            }
            st.busy = true;
        }
        let _unwind = ReleaseOnUnwind(self);
        self.append_queued();
    }

    /// The appender: appends the next block while it is queued, then releases the file.
    fn append_queued(&self) {
        // The previous block's outcome, sent once the next block's bytes are on their way to the disk:
        // waking the caller's task can get this thread preempted for ~100 us on a busy machine
        // (measured), which would otherwise leave the disk idle.
        let mut held: Option<(Reply, Result<(), SegmentError>)> = None;
        let reply = |held: &mut Option<_>| {
            if let Some((tx, outcome)) = held.take() {
                let _ = oneshot::Sender::send(tx, outcome);
            }
        };
        let mut st = self.state();
        loop {
            self.fail_stranded(&mut st);
            let next = st.next_block;
            let Some(block) = st.queued.remove(&next) else { break };
            if block.first_entry_id != st.next_entry || (st.end == 0) != (block.prefix > 0) {
                let _ = block.reply.send(Err(self.out_of_order(next, block.first_entry_id)));
                continue;
            }
            let end = st.end;
            st.appending = true;
            drop(st);
            let files = SegmentFiles { paths: &self.paths, data: &self.data, lock: &self.lock, durable: &self.durable };
            let result = append_blocking(&files, end, &block.bytes, || reply(&mut held));
            reply(&mut held);
            st = self.state();
            st.appending = false;
            let outcome = match result {
                Ok(()) => {
                    st.end += block.bytes.len() as u64;
                    st.index.push(IndexRecord {
                        block_number: block.block_number,
                        start_offset: (end + block.prefix) as i64,
                        block_size: (block.bytes.len() as u64 - block.prefix) as u32,
                        first_entry_id: block.first_entry_id,
                        last_entry_id: block.last_entry_id,
                    });
                    st.next_block += 1;
                    st.next_entry = block.last_entry_id + 1;
                    Ok(())
                }
                Err(AppendError::Fenced) => {
                    st.done = Some(Done::Fenced);
                    Err(SegmentError::Fenced { segment: self.paths.segment })
                }
                Err(AppendError::Io(e)) => {
                    // Blocks queued behind this one can never follow it: stop the writer so they fail too.
                    st.done = Some(Done::Broken(format!("append of block {next} failed: {e}")));
                    Err(*e)
                }
                Err(AppendError::Broken(e, why)) => {
                    tracing::error!(segment = %self.paths.segment, error = %e, "local segment writer stops: {why}");
                    st.done = Some(Done::Broken(why));
                    Err(*e)
                }
            };
            // Reply and recycle without the lock: waking the caller's task is a system call, and the
            // writer task and the encoding threads take this lock too.
            drop(st);
            held = Some((block.reply, outcome));
            self.spare.put(block.bytes);
            st = self.state();
        }
        st.busy = false;
        drop(st);
        reply(&mut held);
        self.released.notify_waiters();
    }
}

/// Stops the writer if the thread holding the file unwinds (a panic): blocks queued behind it fail instead of
/// waiting forever.
struct ReleaseOnUnwind<'a>(&'a Shared);

impl Drop for ReleaseOnUnwind<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut st = self.0.state();
        st.busy = false;
        st.appending = false;
        if st.done.is_none() {
            st.done = Some(Done::Broken("a file task panicked".into()));
        }
        self.0.fail_stranded(&mut st);
        drop(st);
        self.0.released.notify_waiters();
    }
}

/// Marks a block that will never be queued (its encoding task did not run to the end) and stops the
/// writer, so that it and the blocks behind it fail instead of waiting.
struct EncodingGuard {
    shared: Arc<Shared>,
    block_id: i64,
    queued: bool,
}

impl EncodingGuard {
    /// Hands the encoded block on (see [`Shared::queue_and_append`]).
    fn queue(mut self, block: Encoded) {
        self.queued = true;
        self.shared.queue_and_append(self.block_id, block);
    }
}

impl Drop for EncodingGuard {
    fn drop(&mut self) {
        if self.queued {
            return;
        }
        let mut st = self.shared.state();
        if st.encoding.remove(&self.block_id) && st.done.is_none() {
            st.done = Some(Done::Broken(format!("encoding block {} did not complete", self.block_id)));
        }
        self.shared.fail_stranded(&mut st);
    }
}

impl LocalSegmentWriter {
    /// Creates the segment directory and an empty `data.log` (blocking). Fails when the file exists.
    pub(super) fn create_blocking(paths: Arc<SegmentPaths>, spare: PoolLease) -> Result<Self, SegmentError> {
        create_dir_durable(&paths.dir).map_err(paths.io("create directory", &paths.dir))?;
        if paths.is_fenced()? {
            return Err(SegmentError::Fenced { segment: paths.segment });
        }
        // Before data.log: a data.log without it is an upstream (or older) writer's, read to its length.
        let durable = paths.create_durable_length()?;
        // create_new: a new writer never appends to a file another writer (or a crashed one) left behind.
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&paths.data)
            .map_err(paths.io("create", &paths.data))?;
        fsync_dir(&paths.dir).map_err(paths.io("fsync directory", &paths.dir))?;
        let mut lock = paths.open_lock()?;
        // Informational, as upstream's lock file; exclusion comes from the flock, not the content.
        let text = format!(
            "logId={}\nsegmentId={}\npid={}\n",
            paths.segment.log_id,
            paths.segment.segment_id,
            std::process::id()
        );
        lock.set_len(0).and_then(|()| lock.write_all(text.as_bytes())).map_err(paths.io("write", &paths.lock))?;
        let state = WriterState {
            end: 0,
            next_block: 0,
            next_entry: 0,
            index: Vec::new(),
            done: None,
            encoding: BTreeSet::new(),
            queued: BTreeMap::new(),
            busy: false,
            appending: false,
            released: 0,
        };
        let shared = Shared {
            paths,
            data,
            lock,
            durable,
            state: Mutex::new(state),
            released: tokio::sync::Notify::new(),
            spare,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Waits until no appender holds the file and takes it; or returns the writer's end state.
    async fn hold_file(&self) -> Result<MutexGuard<'_, WriterState>, Done> {
        loop {
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let st = self.shared.state();
                if let Some(done) = &st.done {
                    return Err(done.clone());
                }
                if !st.busy {
                    return Ok(st);
                }
            }
            released.await;
        }
    }
}

/// Durable bytes of a segment kept in the page cache behind its end, for tail readers (a few blocks).
const CACHED_TAIL: u64 = 8 << 20;

/// Tells the kernel that the synced part of `data.log` more than `CACHED_TAIL` behind the end (after
/// this append, which spans `start..end`) is not needed in memory. A WAL writes gigabytes it seldom
/// reads back. Left cached, they filled the page cache until 2 MB appends slowed from ~0.5 ms to ~5 ms;
/// even 64 MB left behind per segment slowed the copy into the page cache ~4x once a few gigabytes had
/// gone through (measured on this project's VMs), while a small tail keeps recycling the same pages.
/// Advice only: failures are ignored.
///
/// Public so that a benchmark's raw-disk ceiling can write under the same page-cache policy.
pub fn release_cache_behind(data: &File, start: u64, end: u64) {
    if let Some((from, to)) = range_behind_tail(start, end) {
        release_cache(data, from, to);
    }
}

/// Starts writing `offset..offset + len` of `data` to the device without waiting (the fsync that
/// follows waits). Advice only: failures are left to the fsync.
fn start_writeback(data: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else { return };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for `data`'s lifetime.
    unsafe {
        libc::sync_file_range(data.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Advises the kernel that `from..to` of a synced file is not needed in memory.
fn release_cache(data: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to.saturating_sub(from))) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open for `data`'s lifetime.
    unsafe {
        libc::posix_fadvise(data.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
    }
}

/// The part of `0..end` that an append spanning `start..end` moved more than [`CACHED_TAIL`] behind the
/// end (each byte is in exactly one append's range, so every byte is released once).
fn range_behind_tail(start: u64, end: u64) -> Option<(u64, u64)> {
    let (from, to) = (start.saturating_sub(CACHED_TAIL), end.saturating_sub(CACHED_TAIL));
    (to > from).then_some((from, to))
}

/// Appends `bytes` at `end` under the flock unless the segment is fenced (blocking).
/// Appends `bytes` at `end` under the flock unless the segment is fenced (blocking). `while_flushing` runs
/// once the bytes are written and their writeback started, before waiting for them to be durable.
/// The open files of a segment being written.
struct SegmentFiles<'a> {
    paths: &'a SegmentPaths,
    data: &'a File,
    lock: &'a File,
    durable: &'a File,
}

fn append_blocking(
    files: &SegmentFiles<'_>,
    end: u64,
    bytes: &[u8],
    while_flushing: impl FnOnce(),
) -> Result<(), AppendError> {
    let SegmentFiles { paths, data, lock, durable } = *files;
    let _guard = Flock::exclusive(lock).map_err(|e| AppendError::Io(Box::new(paths.io("lock", &paths.lock)(e))))?;
    if paths.is_fenced().map_err(|e| AppendError::Io(Box::new(e)))? {
        return Err(AppendError::Fenced);
    }
    let len = data.metadata().map_err(|e| AppendError::Io(Box::new(paths.io("stat", &paths.data)(e))))?.len();
    if len != end {
        let why = format!("data.log is {len} bytes, the writer expected {end}");
        let err = paths.io("append", &paths.data)(io::Error::other(why.clone()));
        return Err(AppendError::Broken(Box::new(err), why));
    }
    let written = data.write_all_at(bytes, end).and_then(|()| {
        start_writeback(data, end, bytes.len() as u64);
        while_flushing();
        data.sync_data()
    });
    match written {
        // Only now may readers see the block.
        Ok(()) => publish_durable_length(durable, end + bytes.len() as u64).map_err(|e| {
            let err = paths.io("write", &paths.durable)(e);
            AppendError::Broken(Box::new(err), "cannot publish the durable length".into())
        }),
        Err(e) => {
            let err = paths.io("append", &paths.data)(e);
            // Put the file back to the acknowledged length so no partial block stays behind.
            match data.set_len(end).and_then(|()| data.sync_data()) {
                Ok(()) => Err(AppendError::Io(Box::new(err))),
                Err(t) => Err(AppendError::Broken(Box::new(err), format!("truncating back to {end} failed: {t}"))),
            }
        }
    }
}

#[async_trait]
impl SegmentWriter for LocalSegmentWriter {
    fn max_parallel_blocks(&self) -> usize {
        PIPELINE_DEPTH
    }

    async fn write_block(&self, block: BlockToWrite) -> Result<(), SegmentError> {
        let shared = &self.shared;
        let (block_id, first_entry_id) = (block.block_id, block.first_entry_id);
        let Ok(block_number) = i32::try_from(block_id) else {
            return Err(shared.out_of_order(block_id, first_entry_id));
        };
        if block.entries.is_empty() || block_id < 0 {
            return Err(shared.out_of_order(block_id, first_entry_id));
        }
        let data_len: u64 = block.entries.iter().map(|e| (e.len() + RECORD_HEADER_LEN) as u64).sum();
        // Its index record sizes the block (header records included) in a u32.
        if data_len > codec::MAX_BLOCK_DATA_LEN as u64 {
            return Err(SegmentError::Io {
                segment: shared.paths.segment,
                op: "encode block",
                path: shared.paths.data.display().to_string(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "block of {data_len} data bytes exceeds {} (4 GiB with its headers)",
                        codec::MAX_BLOCK_DATA_LEN
                    ),
                ),
            });
        }
        {
            let mut st = shared.state();
            if let Some(done) = &st.done {
                return Err(shared.refuse(done));
            }
            if block_id < st.first_open() || st.queued.contains_key(&block_id) || !st.encoding.insert(block_id) {
                return Err(shared.out_of_order(block_id, first_entry_id));
            }
        }
        let (reply, outcome) = oneshot::channel();
        // A spare buffer, or one allocated on this thread rather than in the pool thread's own malloc arena.
        let mut bytes = shared.spare.take(HEADER_RECORD_LEN + codec::BLOCK_HEADER_RECORD_LEN + data_len as usize);
        let guard = EncodingGuard { shared: shared.clone(), block_id, queued: false };
        // Encoding is the CPU half that overlaps the previous block's append; the thread that encodes the
        // next block to append goes on to append it (and whatever is queued behind it).
        let task = tokio::task::spawn_blocking(move || {
            if block_id == 0 {
                // Like upstream, the file header goes out with the first block.
                codec::encode_header(&mut bytes, &format::new_header());
            }
            let prefix = bytes.len() as u64;
            let header = codec::encode_block(&mut bytes, block_number, first_entry_id, &block.entries);
            // Off the appender's path: dropping cached pages costs ~60 µs per 2 MB, which the appender
            // would otherwise spend between two appends.
            guard.shared.release_cache();
            // The payloads are copied into the block: release them before the disk is waited for.
            drop(block);
            let encoded =
                Encoded { bytes, prefix, block_number, first_entry_id, last_entry_id: header.last_entry_id, reply };
            guard.queue(encoded);
        });
        drop(task);
        match outcome.await {
            Ok(result) => result,
            Err(_) => {
                let st = shared.state();
                Err(match &st.done {
                    Some(done) => shared.refuse(done),
                    None => shared.refuse(&Done::Broken(format!("the file task of block {block_id} stopped"))),
                })
            }
        }
    }

    async fn finalize(&self, last_block_id: i64) -> Result<SegmentSummary, SegmentError> {
        let shared = &self.shared;
        let segment = shared.paths.segment;
        let (keep, end, acknowledged) = {
            let mut st = match self.hold_file().await {
                Ok(st) => st,
                Err(Done::Finalized(s)) => return Ok(s),
                Err(done) => return Err(shared.refuse(&done)),
            };
            if last_block_id < -1 || last_block_id >= st.next_block {
                return Err(SegmentError::OutOfOrder {
                    segment,
                    block_id: last_block_id,
                    first_entry_id: st.next_entry,
                });
            }
            let keep: Vec<IndexRecord> = st.index[..(last_block_id + 1) as usize].to_vec();
            let end = match keep.last() {
                Some(r) => r.start_offset as u64 + u64::from(r.block_size),
                None if st.end == 0 => 0,
                None => HEADER_RECORD_LEN as u64,
            };
            // Blocks queued meanwhile wait; once the segment is finalized they fail.
            st.busy = true;
            (keep, end, st.end)
        };
        let tail = format::encode_tail(&keep, end, end == 0, None);
        let summary = SegmentSummary {
            last_entry_id: keep.last().map_or(-1, |r| r.last_entry_id),
            size: end + tail.len() as u64,
            blocks: keep.len() as u64,
        };
        let file = shared.clone();
        let result = blocking(segment, move || {
            let paths = &file.paths;
            let _guard = Flock::exclusive(&file.lock).map_err(paths.io("lock", &paths.lock))?;
            if paths.is_fenced()? {
                // The fencer finalizes; writing here could race its scan.
                return Ok(Err(()));
            }
            if end < acknowledged {
                file.data.set_len(end).map_err(paths.io("truncate", &paths.data))?;
            }
            file.data.write_all_at(&tail, end).map_err(paths.io("write", &paths.data))?;
            file.data.sync_data().map_err(paths.io("fsync", &paths.data))?;
            // A completed segment is read back by lagging readers at most: none of it stays cached.
            release_cache(&file.data, 0, end + tail.len() as u64);
            Ok(Ok(()))
        })
        .await;
        let outcome = {
            let mut st = shared.state();
            st.busy = false;
            let outcome = match result {
                Ok(Ok(())) => {
                    st.done = Some(Done::Finalized(summary));
                    Ok(summary)
                }
                Ok(Err(())) => {
                    st.done = Some(Done::Fenced);
                    Err(SegmentError::Fenced { segment })
                }
                Err(e) => Err(e),
            };
            shared.fail_stranded(&mut st);
            if st.queued.contains_key(&st.next_block) {
                // A block queued while the file was held (finalize failed, the writer goes on).
                st.busy = true;
                let appender = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let _unwind = ReleaseOnUnwind(&appender);
                    appender.append_queued();
                });
            }
            outcome
        };
        shared.released.notify_waiters();
        outcome
    }

    async fn close(&self) -> Result<(), SegmentError> {
        // The flock is held only during appends, so there is nothing to release on disk.
        let mut st = self.shared.state();
        if st.done.is_none() {
            st.done = Some(Done::Closed);
        }
        self.shared.fail_stranded(&mut st);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentRef;

    /// Nothing keeps a writer's shared state (its open files, its spare buffers) once the writer and its
    /// blocks are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let backend = super::super::LocalSegmentBackend::new(dir.path().to_path_buf(), "files".into());
        let paths = backend.paths(SegmentRef { log_id: 1, segment_id: 0 });
        let pool = backend.pool.lease();
        let w = blocking(paths.segment, move || LocalSegmentWriter::create_blocking(paths, pool)).await.unwrap();
        for b in 0..6i64 {
            let entries = (0..3).map(|i| bytes::Bytes::from(vec![b as u8; 100 + i]).into()).collect();
            w.write_block(BlockToWrite { block_id: b, first_entry_id: b * 3, entries }).await.unwrap();
        }
        w.finalize(5).await.unwrap();
        let shared = Arc::downgrade(&w.shared);
        drop(w);
        // The pool thread that appended the last block lets go of it right after replying.
        for _ in 0..500 {
            if shared.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the writer's state is still referenced {} time(s)", shared.strong_count());
    }

    #[test]
    fn appends_release_the_cache_behind_the_tail_exactly_once() {
        const MB: u64 = 1 << 20;
        assert_eq!(range_behind_tail(0, 2 * MB), None);
        assert_eq!(range_behind_tail(6 * MB, 8 * MB), None);
        assert_eq!(range_behind_tail(8 * MB, 10 * MB), Some((0, 2 * MB)));
        assert_eq!(range_behind_tail(7 * MB, 9 * MB), Some((0, MB)));
        // Consecutive appends release adjacent, non-overlapping ranges.
        let mut released = 0;
        let mut at = 0;
        for len in [3 * MB, 5 * MB, MB / 3, 70 * MB, 2 * MB, 7] {
            if let Some((from, to)) = range_behind_tail(at, at + len) {
                assert_eq!(from, released);
                released = to;
            }
            at += len;
        }
        assert_eq!(released, at - CACHED_TAIL);
    }
}
