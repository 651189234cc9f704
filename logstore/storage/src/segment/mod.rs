//! Segment formats: how one segment's entries are laid out in a backend, written, fenced, finalized, read.
//!
//! Two backends implement [`SegmentBackend`] with upstream Woodpecker's exact bytes:
//! - [`object`]: one object per block (`<n>.blk`), `footer.blk`, fence objects, merged `m_<n>.blk` after compaction;
//! - [`local`]: one `data.log` file per segment, a `write.fence` flag file and a `write.lock` file.
//!
//! ```text
//!   client pipeline ──write_block(b0)──▶ ┌──────────┐  blocks may be in flight in parallel (object storage),
//!                  ──write_block(b1)──▶ │  writer  │  but a block is *visible* to readers only when every
//!                  ──write_block(b2)──▶ └──────────┘  earlier block is: readers stop at the first gap.
//!   new writer ──fence()──▶ segment ends at the last block of the contiguous prefix; the old writer's
//!                           next write_block fails with `SegmentError::Fenced`.
//! ```
//!
//! Invariants every backend keeps:
//! - `write_block` returns `Ok` only once the block is durable (fsync / object PUT acknowledged).
//! - After `fence` returns `last`, no entry beyond `last` ever becomes visible, and no writer can add any.
//! - `fence` and `finalize` are idempotent and may run in another process than the writer.
//! - Readers never return an entry beyond the contiguous durable prefix, and never skip one: a corrupt or
//!   truncated block is an error naming the object (or file) and the offset.

pub mod local;
pub mod object;
pub mod staged;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;
use tokio::time::Instant;
use woodpecker_core::codec::CodecError;
pub use woodpecker_core::entry::EntryBytes;
use woodpecker_core::ids::{EntryId, LogId, SegmentId};
use woodpecker_proto::meta::{QuorumInfo, SegmentMetadata};

use crate::object::ObjectError;

/// Buffers of blocks already written, kept to encode later blocks into: a reused buffer is mapped
/// already, so encoding takes no page faults and zeroing (measured 7-10% of the client's CPU with a fresh
/// 2 MB buffer per block), and it may still be in cache.
///
/// A backend's writers share one pool, so a segment roll does not start over with fresh buffers (it
/// used to, for the first `maxFlushThreads` blocks of every segment). It keeps at most `keep` buffers:
/// blocks in flight come back in bursts, so a handful of spares (8 measured, against 32 in flight) still
/// left page faults. Buffers unused for [`BufferPool::IDLE`] are freed (checked every `IDLE` while a writer is open),
/// and all of them once no [`PoolLease`] is left, so an idle client holds none.
#[derive(Debug)]
pub(crate) struct BufferPool {
    keep: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Oldest returned first; each with the time it came back.
    buffers: Vec<(Vec<u8>, Instant)>,
    leases: usize,
    /// A trimming task is running.
    trimming: bool,
}

/// Keeps a [`BufferPool`]'s buffers while it lives (held by each open writer).
#[derive(Debug)]
pub(crate) struct PoolLease(Arc<BufferPool>);

impl std::ops::Deref for PoolLease {
    type Target = BufferPool;

    fn deref(&self) -> &BufferPool {
        &self.0
    }
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.leases -= 1;
        if st.leases == 0 {
            st.buffers = Vec::new();
        }
    }
}

impl BufferPool {
    /// Largest buffer kept (an oversized entry's block is let go).
    const MAX_CAPACITY: usize = 16 << 20;

    /// How long a buffer may sit unused before it is freed.
    pub(crate) const IDLE: Duration = Duration::from_secs(5);

    /// A pool keeping up to `keep` buffers.
    pub(crate) fn new(keep: usize) -> Arc<Self> {
        Arc::new(Self { keep, state: Mutex::default() })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // Every critical section is a push, a pop or a drain; a poisoned lock still holds a consistent list.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the pool's buffers until the lease is dropped. Starts the idle trimming unless it runs (on the
    /// current Tokio runtime; without one, buffers are only freed with the last lease).
    pub(crate) fn lease(self: &Arc<Self>) -> PoolLease {
        let mut st = self.state();
        st.leases += 1;
        if !st.trimming
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            st.trimming = true;
            let pool = Arc::downgrade(self);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Self::IDLE).await;
                    let Some(pool) = pool.upgrade() else { return };
                    if !pool.trim(Instant::now()) {
                        return;
                    }
                }
            });
        }
        drop(st);
        PoolLease(Arc::clone(self))
    }

    /// Frees the buffers unused for [`Self::IDLE`] at `now`; false once no lease is left: trimming stops
    /// (the next lease starts it again).
    fn trim(&self, now: Instant) -> bool {
        let mut st = self.state();
        let idle = st.buffers.iter().take_while(|(_, at)| now.saturating_duration_since(*at) >= Self::IDLE).count();
        st.buffers.drain(..idle);
        st.trimming = st.leases > 0;
        st.trimming
    }

    /// An empty buffer with room for `len` bytes: a spare one when there is one large enough.
    ///
    /// A new buffer gets 1/8 more room than asked, so the next blocks (cut at the same flush size, but
    /// each a few entries longer or shorter) fit in it without growing it, which would copy it.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        // The most recently returned one: the likeliest to be in cache.
        let spare = self.state().buffers.pop();
        match spare {
            Some((mut buf, _)) if buf.capacity() >= len => {
                buf.clear();
                buf
            }
            // Too small: dropped rather than grown (growing copies its old capacity).
            _ => Vec::with_capacity(len.saturating_add(len / 8)),
        }
    }

    /// Keeps `buf` for reuse if there is room and a writer still holds a lease.
    pub(crate) fn put(&self, buf: Vec<u8>) {
        if buf.capacity() > Self::MAX_CAPACITY {
            return;
        }
        let mut st = self.state();
        if st.leases > 0 && st.buffers.len() < self.keep {
            st.buffers.push((buf, Instant::now()));
        }
    }

    /// Keeps the buffer behind `bytes` if nothing else holds it (a store may keep the bytes it was given).
    pub(crate) fn put_bytes(&self, bytes: Bytes) {
        if let Ok(buf) = bytes.try_into_mut() {
            self.put(Vec::from(buf));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state().buffers.len()
    }
}

/// Identifies one segment of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentRef {
    /// The log.
    pub log_id: LogId,
    /// The segment inside it.
    pub segment_id: SegmentId,
}

impl fmt::Display for SegmentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log {} segment {}", self.log_id, self.segment_id)
    }
}

/// One block handed to a writer: consecutive entries starting at `first_entry_id`.
#[derive(Debug, Clone)]
pub struct BlockToWrite {
    /// Block number; dense from 0 within the segment.
    pub block_id: i64,
    /// Id of `entries[0]`.
    pub first_entry_id: EntryId,
    /// Entries (the `LogMessageLayout` bytes, in pieces), never empty.
    pub entries: Vec<EntryBytes>,
}

impl BlockToWrite {
    /// A block of `entries` starting at `first_entry_id`.
    pub fn new(
        block_id: i64,
        first_entry_id: EntryId,
        entries: impl IntoIterator<Item = impl Into<EntryBytes>>,
    ) -> Self {
        Self { block_id, first_entry_id, entries: entries.into_iter().map(Into::into).collect() }
    }

    /// Id of the last entry in the block.
    pub fn last_entry_id(&self) -> EntryId {
        self.first_entry_id + self.entries.len() as i64 - 1
    }
}

/// What a finalized (or fenced) segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Last entry id, -1 when the segment is empty.
    pub last_entry_id: EntryId,
    /// Stored bytes of the segment's data.
    pub size: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// One batch returned by a reader.
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    /// Entries in id order, each with its own id; the first has the id that was asked for.
    pub entries: Vec<(EntryId, Bytes)>,
    /// The segment has ended (finalized or fenced) and holds nothing at or after the next id.
    pub end_of_segment: bool,
}

/// Errors of the segment layer. Each names the segment and, for corruption, the object or file and offset.
#[derive(Debug, Error)]
pub enum SegmentError {
    /// Another writer fenced the segment; this writer must stop.
    #[error("{segment} is fenced by a newer writer")]
    Fenced {
        /// The segment.
        segment: SegmentRef,
    },
    /// The segment was finalized; it takes no more blocks.
    #[error("{segment} is finalized")]
    Finalized {
        /// The segment.
        segment: SegmentRef,
    },
    /// Stored bytes fail verification.
    #[error("corrupt data in {location} at offset {offset}: {source}")]
    Corrupt {
        /// Object key or file path.
        location: String,
        /// Byte offset inside it.
        offset: u64,
        /// What the codec found.
        #[source]
        source: CodecError,
    },
    /// The segment's data was expected but is missing (e.g. a block the footer lists).
    #[error("{segment}: {what} is missing")]
    Missing {
        /// The segment.
        segment: SegmentRef,
        /// What is missing.
        what: String,
    },
    /// A block handed to the writer does not follow the previous one.
    #[error("{segment}: block {block_id} starting at entry {first_entry_id} does not follow the segment's end")]
    OutOfOrder {
        /// The segment.
        segment: SegmentRef,
        /// The block.
        block_id: i64,
        /// Its first entry.
        first_entry_id: EntryId,
    },
    /// The object store failed.
    #[error("{segment}: object storage: {source}")]
    Object {
        /// The segment.
        segment: SegmentRef,
        /// The store's error.
        #[source]
        source: ObjectError,
    },
    /// An operation did not finish in the time it is allowed (and was abandoned).
    #[error("{segment}: {what} did not finish within {after:?}")]
    TimedOut {
        /// The segment.
        segment: SegmentRef,
        /// What was abandoned.
        what: String,
        /// The time it was allowed.
        after: Duration,
    },
    /// A LogStore node refused an operation (its status code and reason) or could not be reached.
    #[error("{segment}: node {node}: {what}: {reason}")]
    Node {
        /// The segment.
        segment: SegmentRef,
        /// The node's service address.
        node: String,
        /// What was asked of it.
        what: &'static str,
        /// Upstream's status code (0 for a transport failure or a timeout).
        code: i32,
        /// Whether the node says retrying may succeed.
        retriable: bool,
        /// The node's reason, or the transport error.
        reason: String,
    },
    /// Too few replicas of a segment answered for an operation to be safe.
    #[error("{segment}: {what} needs {needed} of its {ensemble} replicas, only {got} could answer ({errors})")]
    Quorum {
        /// The segment.
        segment: SegmentRef,
        /// What was attempted.
        what: &'static str,
        /// Answers needed.
        needed: usize,
        /// Replicas that answered, or could still have answered when the operation was given up.
        got: usize,
        /// Ensemble size.
        ensemble: usize,
        /// What the other replicas said.
        errors: String,
    },
    /// No set of LogStore nodes can be chosen for a new segment.
    #[error("{segment}: no replica set can be chosen: {reason}")]
    Placement {
        /// The segment.
        segment: SegmentRef,
        /// Why (the shortfall and what each seed answered).
        reason: String,
    },
    /// The backend does not know where the segment's replicas are (its metadata was not given to it).
    #[error("{segment}: the replica set is unknown to this client")]
    Unplaced {
        /// The segment.
        segment: SegmentRef,
    },
    /// A local file operation failed.
    #[error("{segment}: {op} {path}: {source}")]
    Io {
        /// The segment.
        segment: SegmentRef,
        /// What was done.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl SegmentError {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Object { source, .. } => source.is_retryable(),
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            Self::Node { retriable, .. } => *retriable,
            Self::Quorum { .. } | Self::Placement { .. } => true,
            _ => false,
        }
    }

    /// Whether the error means this writer lost the segment (fenced or finalized by someone else).
    pub fn is_not_writable(&self) -> bool {
        matches!(self, Self::Fenced { .. } | Self::Finalized { .. })
    }
}

/// Where segments live. One value per storage backend, shared by all logs.
#[async_trait]
pub trait SegmentBackend: Send + Sync + fmt::Debug {
    /// Short description for logs and errors ("local:/data", "s3://bucket@endpoint").
    fn describe(&self) -> String;

    /// Chooses where a new segment's data goes, before its metadata is created (service mode: the replica
    /// set, recorded in the metadata so that any later client finds it). `None`: the backend has no
    /// placement, and the metadata records the embedded single-node quorum.
    async fn place(&self, segment: SegmentRef) -> Result<Option<QuorumInfo>, SegmentError> {
        let _ = segment;
        Ok(None)
    }

    /// Tells the backend what the metadata says of a segment (its replica set, state and end) before any
    /// other call names it. Backends that keep everything under a fixed layout ignore it.
    fn locate(&self, segment: SegmentRef, meta: &SegmentMetadata) {
        let _ = (segment, meta);
    }

    /// Whether a read of a segment that is still being written returns every entry acknowledged so far, so
    /// that an empty read at a segment whose successor exists is its end. Not so in service mode, where
    /// replicas learn the acknowledged end after the writer: there readers wait for the segment's
    /// completion.
    fn active_reads_are_complete(&self) -> bool {
        true
    }

    /// Opens a writer for a segment that has never been written.
    async fn create_writer(&self, segment: SegmentRef) -> Result<Box<dyn SegmentWriter>, SegmentError>;

    /// Ends the segment for every writer and returns its last durable entry (-1 when empty). Idempotent.
    ///
    /// After it returns, any `write_block` by an earlier writer fails with `Fenced`, and readers see
    /// exactly the entries up to the returned id.
    async fn fence(&self, segment: SegmentRef) -> Result<EntryId, SegmentError>;

    /// Writes the index and footer of a fenced segment if it has none (idempotent), and summarizes it.
    async fn finalize(&self, segment: SegmentRef) -> Result<SegmentSummary, SegmentError>;

    /// The last entry readers can see now (-1 when none), found without reading the segment's data: the
    /// footer when finalized, else the headers of the contiguous durable blocks (object storage: a LIST and
    /// one ranged GET; local files: the fsynced length). Where `LATEST` readers start, and how far
    /// `truncate` may go.
    async fn visible_end(&self, segment: SegmentRef) -> Result<EntryId, SegmentError>;

    /// Opens a reader. Opening a segment that has no data yet succeeds (reads return nothing until data lands).
    async fn open_reader(&self, segment: SegmentRef) -> Result<Box<dyn SegmentReader>, SegmentError>;

    /// Restores the copies a finalized segment lost (service mode: a replica wiped, or its node gone past a
    /// grace period), before it is compacted. Returns the segment's new placement when it changed, for the
    /// caller to record in the metadata; `None` when nothing was lost, or the copies were restored in place.
    async fn repair(&self, segment: SegmentRef) -> Result<Option<QuorumInfo>, SegmentError> {
        let _ = segment;
        Ok(None)
    }

    /// Merges a finalized segment's blocks into larger ones where the backend supports it; returns the new
    /// stored size. Idempotent; readers keep working during and after it.
    async fn compact(&self, segment: SegmentRef) -> Result<u64, SegmentError>;

    /// Removes every byte stored for the segment. Idempotent.
    async fn delete_segment(&self, segment: SegmentRef) -> Result<(), SegmentError>;

    /// Removes every byte stored for the log. Idempotent.
    async fn delete_log(&self, log_id: LogId) -> Result<(), SegmentError>;
}

/// Writes the blocks of one segment. Used by one pipeline; `write_block` may be called concurrently up to
/// [`SegmentWriter::max_parallel_blocks`] times, with block ids handed out densely and in order.
#[async_trait]
pub trait SegmentWriter: Send + Sync + fmt::Debug {
    /// How many `write_block` calls may be in flight at once (1 means strictly sequential).
    fn max_parallel_blocks(&self) -> usize;

    /// Why the segment should roll now although its rolling policy does not say so (service mode: a
    /// replica was lost, so the next segment goes to a full ensemble). `None` when it need not.
    fn roll_reason(&self) -> Option<String> {
        None
    }

    /// Makes one block durable. `Ok` means durable; `Err(Fenced)` means another writer took the segment.
    ///
    /// When blocks run in parallel, a later block may be durable before an earlier one; the caller
    /// acknowledges entries only over the contiguous prefix of successful blocks.
    async fn write_block(&self, block: BlockToWrite) -> Result<(), SegmentError>;

    /// Writes index and footer over the blocks `0..=last_block_id` (all of which returned `Ok`), then
    /// releases the writer's lock. Later blocks that may have landed are excluded from the segment.
    async fn finalize(&self, last_block_id: i64) -> Result<SegmentSummary, SegmentError>;

    /// Releases the writer's lock without finalizing (the segment stays open for recovery by `fence`).
    async fn close(&self) -> Result<(), SegmentError>;
}

/// Reads one segment in entry order.
#[async_trait]
pub trait SegmentReader: Send + Sync + fmt::Debug {
    /// Entries from `from` on, at most about `max_entries` / `max_bytes` (soft: whole blocks are returned,
    /// at least one entry when one is available). An empty batch without `end_of_segment` means "nothing
    /// yet": the segment is still being written.
    async fn read_batch(
        &mut self,
        from: EntryId,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<ReadBatch, SegmentError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_outlives_one_writer_and_empties_with_the_last() {
        let pool = BufferPool::new(2);
        let first = pool.lease();
        let buf = first.take(1000);
        assert!(buf.capacity() >= 1125, "room for slightly longer blocks: {}", buf.capacity());
        let ptr = buf.as_ptr();
        // The next segment's writer leases the pool before the last one is gone, as a roll does.
        let second = pool.lease();
        first.put(buf);
        drop(first);
        let again = second.take(1100);
        assert_eq!(again.as_ptr(), ptr, "a roll reuses the previous segment's buffer");
        second.put(again);
        let fresh = second.take(4000);
        assert_ne!(fresh.as_ptr(), ptr, "a buffer too small is not grown (that would copy it)");
        assert_eq!(pool.len(), 0, "the small one was let go");
        for _ in 0..3 {
            second.put(vec![0; 8]);
        }
        assert_eq!(pool.len(), 2, "at most `keep` buffers");
        drop(second);
        assert_eq!(pool.len(), 0, "an idle backend holds no buffers");
        let late = pool.lease();
        drop(late);
        pool.put(fresh);
        assert_eq!(pool.len(), 0, "nothing is kept without a writer");
    }

    #[test]
    fn buffers_unused_for_a_while_are_freed() {
        let pool = BufferPool::new(4);
        let lease = pool.lease();
        lease.put(vec![0; 8]);
        let later = Instant::now() + BufferPool::IDLE / 2;
        lease.put(vec![0; 8]);
        assert!(pool.trim(later));
        assert_eq!(pool.len(), 2, "nothing is idle yet");
        assert!(pool.trim(Instant::now() + BufferPool::IDLE));
        assert_eq!(pool.len(), 0, "both sat unused for IDLE");
        lease.put(vec![0; 8]);
        drop(lease);
        assert!(!pool.trim(Instant::now()), "no writer left: trimming stops");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_idle_writer_lets_its_buffers_go() {
        let pool = BufferPool::new(4);
        let lease = pool.lease();
        lease.put(vec![0; 8]);
        tokio::time::sleep(BufferPool::IDLE / 2).await;
        assert_eq!(pool.len(), 1);
        tokio::time::sleep(BufferPool::IDLE * 2).await;
        assert_eq!(pool.len(), 0, "freed by the trimming task while the lease is held");
        drop(lease);
    }
}
