//! The `data.log` writer: one block per append, fsynced under the segment's flock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use woodpecker_core::codec::{self, HEADER_RECORD_LEN, IndexRecord, RECORD_HEADER_LEN};
use woodpecker_core::ids::EntryId;

use super::format;
use super::{Flock, SegmentPaths, blocking, create_dir_durable, fsync_dir};
use crate::segment::{BlockToWrite, SegmentError, SegmentSummary, SegmentWriter};

/// Writes one local segment. Blocks are appended strictly in order; up to [`PIPELINE_DEPTH`] calls may be
/// in flight so that the next block is encoded (CPU) while the previous one is written and synced (disk).
#[derive(Debug)]
pub struct LocalSegmentWriter {
    paths: Arc<SegmentPaths>,
    data: Arc<File>,
    lock: Arc<File>,
    state: tokio::sync::Mutex<WriterState>,
    /// Woken whenever `next_block` or `done` changes, for blocks waiting for their turn to append.
    turn: tokio::sync::Notify,
}

/// Blocks a caller may have in flight: one appending, one being encoded behind it.
pub const PIPELINE_DEPTH: usize = 2;

#[derive(Debug)]
struct WriterState {
    /// Bytes of `data.log` that are durable and acknowledged.
    end: u64,
    next_block: i64,
    next_entry: EntryId,
    index: Vec<IndexRecord>,
    /// Why the writer takes no more blocks, once it does not.
    done: Option<Done>,
    /// Block ids whose `write_block` call is under way (encoding or waiting for its turn).
    claimed: std::collections::BTreeSet<i64>,
}

#[derive(Debug, Clone)]
enum Done {
    Finalized(SegmentSummary),
    Fenced,
    Closed,
    /// An append failed and the file could not be put back to its acknowledged length.
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

impl LocalSegmentWriter {
    /// Encodes and appends a block whose id this call has claimed.
    async fn write_claimed(&self, block: BlockToWrite) -> Result<(), SegmentError> {
        let data_len: u64 = block.entries.iter().map(|e| (e.len() + RECORD_HEADER_LEN) as u64).sum();
        let Ok(block_number) = i32::try_from(block.block_id) else {
            return Err(self.out_of_order(&block));
        };
        if data_len > u64::from(u32::MAX) {
            return Err(SegmentError::Io {
                segment: self.paths.segment,
                op: "encode block",
                path: self.paths.data.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, format!("block of {data_len} bytes exceeds 4 GiB")),
            });
        }
        // Encode before taking the state lock: this is the CPU half that overlaps the previous block's sync.
        // It runs on the blocking pool so that the caller's task stays free to start that previous block's
        // successor the moment it may append (a 2 MB block of 1 KiB entries takes about a millisecond).
        let (block_id, first_entry_id) = (block.block_id, block.first_entry_id);
        // The buffer is allocated on this thread rather than in the pool thread's own malloc arena.
        let mut bytes = Vec::with_capacity(HEADER_RECORD_LEN + codec::BLOCK_HEADER_RECORD_LEN + data_len as usize);
        let (bytes, prefix, header) = blocking(self.paths.segment, move || {
            if block.block_id == 0 {
                // Like upstream, the file header goes out with the first block.
                codec::encode_header(&mut bytes, &format::new_header());
            }
            let prefix = bytes.len() as u64;
            let header = codec::encode_block(&mut bytes, block_number, block.first_entry_id, &block.entries);
            Ok((bytes, prefix, header))
        })
        .await?;
        let mut st = self.wait_turn(block_id).await;
        if let Some(done) = &st.done {
            return Err(self.refuse(done));
        }
        if block_id != st.next_block || first_entry_id != st.next_entry || (st.end == 0) != (prefix > 0) {
            return Err(self.out_of_order_at(block_id, first_entry_id));
        }
        let block_offset = st.end + prefix;
        let block_size = (bytes.len() as u64 - prefix) as u32;
        let end = st.end;
        let (paths, data, lock) = (self.paths.clone(), self.data.clone(), self.lock.clone());
        let segment = self.paths.segment;
        let result =
            match blocking(
                segment,
                move || Ok(append_blocking(&paths, &data, &lock, end, &bytes).map(|()| bytes.len())),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    st.done = Some(Done::Broken(format!("append of block {block_id} did not complete: {e}")));
                    return Err(e);
                }
            };
        let outcome = match result {
            Ok(n) => {
                st.end += n as u64;
                st.index.push(IndexRecord {
                    block_number,
                    start_offset: block_offset as i64,
                    block_size,
                    first_entry_id: header.first_entry_id,
                    last_entry_id: header.last_entry_id,
                });
                st.next_block += 1;
                st.next_entry = header.last_entry_id + 1;
                Ok(())
            }
            Err(AppendError::Fenced) => {
                st.done = Some(Done::Fenced);
                Err(SegmentError::Fenced { segment })
            }
            Err(AppendError::Io(e)) => {
                // Blocks queued behind this one can never follow it: stop the writer so they fail too.
                st.done = Some(Done::Broken(format!("append of block {block_id} failed: {e}")));
                Err(*e)
            }
            Err(AppendError::Broken(e, why)) => {
                tracing::error!(%segment, error = %e, "local segment writer stops: {why}");
                st.done = Some(Done::Broken(why));
                Err(*e)
            }
        };
        drop(st);
        outcome
    }

    /// Waits until `block_id` is the next block to append (or the writer stopped), returning the state lock.
    async fn wait_turn(&self, block_id: i64) -> tokio::sync::MutexGuard<'_, WriterState> {
        loop {
            let notified = self.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let st = self.state.lock().await;
            // Wait only while every block before this one is under way; a missing predecessor never comes.
            if st.done.is_some()
                || st.next_block >= block_id
                || (st.next_block..block_id).any(|b| !st.claimed.contains(&b))
            {
                return st;
            }
            drop(st);
            notified.await;
        }
    }

    /// Creates the segment directory and an empty `data.log` (blocking). Fails when the file exists.
    pub(super) fn create_blocking(paths: Arc<SegmentPaths>) -> Result<Self, SegmentError> {
        create_dir_durable(&paths.dir).map_err(paths.io("create directory", &paths.dir))?;
        if paths.is_fenced()? {
            return Err(SegmentError::Fenced { segment: paths.segment });
        }
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
        Ok(Self {
            paths,
            data: Arc::new(data),
            lock: Arc::new(lock),
            state: tokio::sync::Mutex::new(WriterState {
                end: 0,
                next_block: 0,
                next_entry: 0,
                index: Vec::new(),
                done: None,
                claimed: Default::default(),
            }),
            turn: tokio::sync::Notify::new(),
        })
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

    fn out_of_order(&self, block: &BlockToWrite) -> SegmentError {
        self.out_of_order_at(block.block_id, block.first_entry_id)
    }

    fn out_of_order_at(&self, block_id: i64, first_entry_id: EntryId) -> SegmentError {
        SegmentError::OutOfOrder { segment: self.paths.segment, block_id, first_entry_id }
    }
}

/// Durable bytes of a segment kept in the page cache behind its end, for tail readers.
const CACHED_TAIL: u64 = 64 << 20;

/// Tells the kernel that the synced part of `data.log` more than [`CACHED_TAIL`] behind the end (after
/// this append, which spans `start..end`) is not needed in memory. A WAL writes gigabytes it seldom
/// reads back; left cached, they fill the page cache until every write pays for reclaiming it (2 MB
/// appends were measured slowing from ~0.5 ms to ~5 ms). Advice only: failures are ignored.
fn release_cache_behind(data: &File, start: u64, end: u64) {
    use std::os::fd::AsRawFd;
    let Some((from, to)) = range_behind_tail(start, end) else { return };
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to - from)) else { return };
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
fn append_blocking(paths: &SegmentPaths, data: &File, lock: &File, end: u64, bytes: &[u8]) -> Result<(), AppendError> {
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
    let written = data.write_all_at(bytes, end).and_then(|()| data.sync_data());
    match written {
        Ok(()) => {
            release_cache_behind(data, end, end + bytes.len() as u64);
            Ok(())
        }
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
        if block.entries.is_empty() || block.block_id < 0 {
            return Err(self.out_of_order(&block));
        }
        {
            let mut st = self.state.lock().await;
            if let Some(done) = &st.done {
                return Err(self.refuse(done));
            }
            if block.block_id < st.next_block || !st.claimed.insert(block.block_id) {
                return Err(self.out_of_order(&block));
            }
        }
        let block_id = block.block_id;
        let result = self.write_claimed(block).await;
        self.state.lock().await.claimed.remove(&block_id);
        self.turn.notify_waiters();
        result
    }

    async fn finalize(&self, last_block_id: i64) -> Result<SegmentSummary, SegmentError> {
        let mut st = self.state.lock().await;
        match &st.done {
            Some(Done::Finalized(s)) => return Ok(*s),
            Some(done) => return Err(self.refuse(done)),
            None => {}
        }
        let segment = self.paths.segment;
        if last_block_id < -1 || last_block_id >= st.next_block {
            return Err(SegmentError::OutOfOrder { segment, block_id: last_block_id, first_entry_id: st.next_entry });
        }
        let keep: Vec<IndexRecord> = st.index[..(last_block_id + 1) as usize].to_vec();
        let end = match keep.last() {
            Some(r) => r.start_offset as u64 + u64::from(r.block_size),
            None if st.end == 0 => 0,
            None => HEADER_RECORD_LEN as u64,
        };
        let tail = format::encode_tail(&keep, end, end == 0);
        let summary = SegmentSummary {
            last_entry_id: keep.last().map_or(-1, |r| r.last_entry_id),
            size: end + tail.len() as u64,
            blocks: keep.len() as u64,
        };
        let acknowledged = st.end;
        let (paths, data, lock) = (self.paths.clone(), self.data.clone(), self.lock.clone());
        let result = blocking(segment, move || {
            let _guard = Flock::exclusive(&lock).map_err(paths.io("lock", &paths.lock))?;
            if paths.is_fenced()? {
                // The fencer finalizes; writing here could race its scan.
                return Ok(Err(()));
            }
            if end < acknowledged {
                data.set_len(end).map_err(paths.io("truncate", &paths.data))?;
            }
            data.write_all_at(&tail, end).map_err(paths.io("write", &paths.data))?;
            data.sync_data().map_err(paths.io("fsync", &paths.data))?;
            Ok(Ok(()))
        })
        .await?;
        match result {
            Ok(()) => {
                st.done = Some(Done::Finalized(summary));
                Ok(summary)
            }
            Err(()) => {
                st.done = Some(Done::Fenced);
                Err(SegmentError::Fenced { segment })
            }
        }
    }

    async fn close(&self) -> Result<(), SegmentError> {
        // The flock is held only during appends, so there is nothing to release on disk.
        let mut st = self.state.lock().await;
        if st.done.is_none() {
            st.done = Some(Done::Closed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_release_the_cache_behind_the_tail_exactly_once() {
        const MB: u64 = 1 << 20;
        assert_eq!(range_behind_tail(0, 2 * MB), None);
        assert_eq!(range_behind_tail(62 * MB, 64 * MB), None);
        assert_eq!(range_behind_tail(64 * MB, 66 * MB), Some((0, 2 * MB)));
        assert_eq!(range_behind_tail(63 * MB, 65 * MB), Some((0, MB)));
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
