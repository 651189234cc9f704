//! Object-storage segment format: `<n>.blk` blocks, `footer.blk`, fence objects, merged blocks.
//!
//! ```text
//!  R/<log>/<seg>/0.blk        [Header v6][BlockHeader b0][Data…]      put_if_absent
//!  R/<log>/<seg>/1.blk …      [BlockHeader bn][Data…]                 put_if_absent
//!  R/<log>/<seg>/<k>.blk      "F" + fenced metadata: the segment ends before block k
//!  R/<log>/<seg>/footer.blk   [Index…][Footer v6]  (startOffset = block id, blockSize = object size)
//!  R/<log>/<seg>/m_<n>.blk    merged blocks after compaction (m_0 starts with a compacted Header)
//!  R/<log>/<seg>/write.lock   text lock of a new writer (informational, as upstream)
//! ```
//!
//! Visibility rule: a reader sees block `n` only when `0..n` all exist; it stops at the first missing key and at a
//! fence object. A footer, when present, is authoritative and bounds every read by its LAC.
//!
//! Fencing puts a fence object at the first absent block key; against a writer that is still landing blocks it
//! leaps ahead and sweeps back (see `Inner::place_fence`), so extra fence objects past the end may exist — readers
//! and recovery stop at the first one. `SegmentSummary::size` is the sum of the data objects' sizes (the footer's
//! `totalSize`; after compaction, of the merged objects).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use woodpecker_core::codec::{
    self, BLOCK_HEADER_RECORD_LEN, CodecError, DecodedBlock, FLAG_COMPACTED, FORMAT_VERSION, FooterRecord,
    HEADER_RECORD_LEN, HeaderRecord, INDEX_RECORD_LEN, IndexRecord, Record,
};
use woodpecker_core::entry::EntryData;
use woodpecker_core::ids::{EntryId, LogId};
use woodpecker_core::keys::{self, SegmentObject};
use woodpecker_core::retry::RetryPolicy;

use super::{
    BlockToWrite, BufferPool, PoolLease, ReadBatch, SegmentBackend, SegmentError, SegmentReader, SegmentRef,
    SegmentSummary, SegmentWriter,
};
use crate::object::{ObjectError, ObjectInfo, ObjectStorage};

/// Tuning of the object-storage segment format (upstream `logstore.segment*Policy` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSegmentOptions {
    /// Blocks one writer uploads in parallel (`segmentSyncPolicy.maxFlushThreads`).
    pub max_flush_threads: usize,
    /// Attempts per block upload on transient failures (`segmentSyncPolicy.maxFlushRetries`).
    pub max_flush_retries: u32,
    /// Ceiling of the sleep between upload attempts (`segmentSyncPolicy.retryInterval`).
    pub retry_interval: Duration,
    /// Target size of a merged block (`segmentCompactionPolicy.maxBytes`).
    pub compaction_max_bytes: u64,
    /// Merged blocks built and uploaded at once (`segmentCompactionPolicy.maxParallelUploads`).
    pub compaction_max_parallel_uploads: usize,
    /// Source blocks read at once per merged block (`segmentCompactionPolicy.maxParallelReads`).
    pub compaction_max_parallel_reads: usize,
    /// Blocks a reader fetches at once (`segmentReadPolicy.maxFetchThreads`).
    pub read_max_fetch_threads: usize,
    /// Whether a new writer creates (and a clean close removes) the `write.lock` object, as upstream does.
    pub write_lock_object: bool,
}

impl Default for ObjectSegmentOptions {
    fn default() -> Self {
        Self {
            max_flush_threads: 32,
            max_flush_retries: 5,
            retry_interval: Duration::from_millis(1000),
            compaction_max_bytes: 2_000_000,
            compaction_max_parallel_uploads: 4,
            compaction_max_parallel_reads: 8,
            read_max_fetch_threads: 32,
            write_lock_object: true,
        }
    }
}

/// Attempts a fencer makes when the old writer keeps landing blocks at the fence key.
const FENCE_ATTEMPTS: u32 = 10;
/// Fence puts a fencer tries ahead of a live writer before re-listing.
const FENCE_FORWARD_PROBES: u32 = 64;
/// Largest leap of a fencer ahead of a live writer (in blocks; the writer has at most its flush threads in flight).
const FENCE_MAX_STEP: i64 = 256;
/// First sleep between fence attempts; doubles up to [`FENCE_MAX_DELAY`].
const FENCE_BASE_DELAY: Duration = Duration::from_millis(20);
/// Longest sleep between fence attempts.
const FENCE_MAX_DELAY: Duration = Duration::from_secs(1);
/// First sleep after a failed block upload (upstream: 100 ms, capped by `retryInterval`).
const UPLOAD_BASE_DELAY: Duration = Duration::from_millis(100);
/// An open-segment reader looks for a footer on this many consecutive empty polls (the first included).
const FOOTER_CHECK_EVERY: u32 = 8;
/// Bytes that hold block 0's header record plus a block header record: enough to learn a block's entry range.
const BLOCK_PREFIX_LEN: u64 = (HEADER_RECORD_LEN + BLOCK_HEADER_RECORD_LEN) as u64;

/// Segments stored as objects, byte-compatible with upstream's embedded MinIO backend.
#[derive(Clone)]
pub struct ObjectSegmentBackend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStorage>,
    root: String,
    opts: ObjectSegmentOptions,
    /// Buffers of uploaded blocks, shared by this backend's writers so that a segment roll keeps them.
    pool: Arc<BufferPool>,
    /// Blocks being encoded at once: one per CPU. A burst of cut blocks (after a roll, every block of the
    /// next segment at once) is then encoded a few at a time, in cut order, and each upload starts as soon
    /// as its block is ready, instead of every block being time-sliced against the others and all of them
    /// finishing late together.
    encoders: Arc<Semaphore>,
}

/// Uploaded blocks' buffers a backend keeps for reuse beyond the `maxFlushThreads` blocks in flight
/// (one being encoded, one cut behind it).
const SPARE_BUFFERS: usize = 2;

impl fmt::Debug for ObjectSegmentBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSegmentBackend")
            .field("store", &self.inner.store.describe())
            .field("root", &self.inner.root)
            .field("opts", &self.inner.opts)
            .finish()
    }
}

impl ObjectSegmentBackend {
    /// A backend storing segments under `root_path` (upstream `minio.rootPath`) in `store`.
    pub fn new(store: Arc<dyn ObjectStorage>, root_path: String, opts: ObjectSegmentOptions) -> Self {
        let opts = ObjectSegmentOptions {
            // Zero would deadlock buffered streams and make the writer unusable; treat it as "sequential".
            max_flush_threads: opts.max_flush_threads.max(1),
            max_flush_retries: opts.max_flush_retries.max(1),
            compaction_max_parallel_uploads: opts.compaction_max_parallel_uploads.max(1),
            compaction_max_parallel_reads: opts.compaction_max_parallel_reads.max(1),
            read_max_fetch_threads: opts.read_max_fetch_threads.max(1),
            compaction_max_bytes: opts.compaction_max_bytes.max(1),
            ..opts
        };
        Self {
            inner: Arc::new(Inner {
                store,
                root: root_path,
                opts,
                pool: BufferPool::new(opts.max_flush_threads + SPARE_BUFFERS),
                encoders: Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))),
            }),
        }
    }
}

/// The footer of a segment and its decoded index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// The footer record.
    pub record: FooterRecord,
    /// One record per data object, in entry order.
    pub index: Vec<IndexRecord>,
}

impl Footer {
    fn summary(&self) -> SegmentSummary {
        SegmentSummary { last_entry_id: self.record.lac, size: self.record.total_size, blocks: self.index.len() as u64 }
    }
}

/// Entry range and stored size of one block, as tracked by writers and recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockMeta {
    pub(crate) first_entry_id: EntryId,
    pub(crate) last_entry_id: EntryId,
    pub(crate) size: u64,
}

/// Encodes `[Index…][Footer v6]` for blocks `0..n` (object layout: startOffset = block id, blockSize = object size).
pub(crate) fn encode_footer_object(
    blocks: &[BlockMeta],
    flags: u16,
    total_records: Option<u32>,
    lac: EntryId,
) -> Bytes {
    let mut out = Vec::with_capacity(blocks.len() * INDEX_RECORD_LEN + codec::FOOTER_V6_RECORD_LEN);
    for (i, b) in blocks.iter().enumerate() {
        codec::encode_index(
            &mut out,
            &IndexRecord {
                block_number: i as i32,
                start_offset: i as i64,
                block_size: b.size as u32,
                first_entry_id: b.first_entry_id,
                last_entry_id: b.last_entry_id,
            },
        );
    }
    let index_length = out.len() as u32;
    codec::encode_footer(
        &mut out,
        &FooterRecord {
            total_blocks: blocks.len() as i32,
            total_records: total_records.unwrap_or(blocks.len() as u32),
            total_size: blocks.iter().map(|b| b.size).sum(),
            index_offset: 0,
            index_length,
            version: FORMAT_VERSION,
            flags,
            lac,
        },
    );
    Bytes::from(out)
}

/// Encodes a block object: block 0 (and merged block 0) start with a header record.
pub(crate) fn encode_block_object<E: EntryData>(
    block_number: i64,
    first_entry_id: EntryId,
    entries: &[E],
    flags: u16,
) -> Bytes {
    encode_block_object_into(
        Vec::with_capacity(block_object_len(entries)),
        block_number,
        first_entry_id,
        entries,
        flags,
    )
}

/// Encoded size of a block object holding `entries` (header record included, as block 0 has one).
fn block_object_len<E: EntryData>(entries: &[E]) -> usize {
    let payload: usize = entries.iter().map(|e| e.data_len() + codec::RECORD_HEADER_LEN).sum();
    HEADER_RECORD_LEN + BLOCK_HEADER_RECORD_LEN + payload
}

/// [`encode_block_object`] into a buffer allocated by the caller.
fn encode_block_object_into<E: EntryData>(
    mut out: Vec<u8>,
    block_number: i64,
    first_entry_id: EntryId,
    entries: &[E],
    flags: u16,
) -> Bytes {
    // Callers size `out` with block_object_len.
    out.clear();
    if block_number == 0 {
        codec::encode_header(&mut out, &HeaderRecord { version: FORMAT_VERSION, flags, first_entry_id });
    }
    codec::encode_block(&mut out, block_number as i32, first_entry_id, entries);
    Bytes::from(out)
}

fn corrupt(key: &str, source: CodecError) -> SegmentError {
    SegmentError::Corrupt { location: key.to_owned(), offset: source.offset(), source }
}

fn malformed(key: &str, offset: u64, reason: String) -> SegmentError {
    corrupt(key, CodecError::Malformed { offset, reason })
}

/// Decodes and verifies a whole block object `key` (CRC of every record and of the block data), as readers and
/// compaction take it.
///
/// A leading header record (block 0, merged block 0) is skipped after its own CRC check; the block number must be
/// `block_number` and the object must end exactly where the block does.
pub fn decode_block_object(key: &str, block_number: i64, body: &Bytes) -> Result<DecodedBlock, SegmentError> {
    let start = block_data_offset(key, body)?;
    let block = codec::decode_block(body, start).map_err(|e| corrupt(key, e))?;
    if i64::from(block.header.block_number) != block_number {
        return Err(malformed(
            key,
            start as u64,
            format!("block header says block {}, expected {block_number}", block.header.block_number),
        ));
    }
    if start + block.encoded_len != body.len() {
        return Err(malformed(
            key,
            (start + block.encoded_len) as u64,
            format!("{} unexpected bytes after the block", body.len() - start - block.encoded_len),
        ));
    }
    Ok(block)
}

/// Offset of the block header record: after the header record if the object starts with one.
fn block_data_offset(key: &str, body: &Bytes) -> Result<usize, SegmentError> {
    // The type byte sits right after the 4-byte CRC; peeking it avoids decoding the header record twice.
    if body.len() > 4 && body[4] == codec::RecordType::Header as u8 {
        match codec::decode_record(body, 0).map_err(|e| corrupt(key, e))? {
            (Record::Header(_), n) => Ok(n),
            _ => Err(malformed(key, 0, "expected a header record".into())),
        }
    } else {
        Ok(0)
    }
}

/// Entry range of a block from the first bytes of its object (header record CRCs are checked, data is not,
/// but the range must be one the block's declared length can hold).
fn decode_block_prefix(key: &str, prefix: &Bytes) -> Result<codec::BlockHeaderRecord, SegmentError> {
    let start = block_data_offset(key, prefix)?;
    match codec::decode_record(prefix, start).map_err(|e| corrupt(key, e))? {
        (Record::BlockHeader(h), _) if codec::block_entry_count(&h).is_some() => Ok(h),
        (Record::BlockHeader(h), _) => Err(corrupt(
            key,
            CodecError::ImpossibleEntryRange {
                block: h.block_number,
                offset: start as u64,
                first_entry_id: h.first_entry_id,
                last_entry_id: h.last_entry_id,
                block_length: h.block_length,
            },
        )),
        _ => Err(malformed(key, start as u64, "expected a block header record".into())),
    }
}

/// Parses and checks `footer.blk` (object `key`): index records followed by a v6 (or v5) footer.
pub fn decode_footer_object(key: &str, body: &Bytes) -> Result<Footer, SegmentError> {
    let Some((record, at)) = codec::decode_footer_at_end(body) else {
        return Err(malformed(key, body.len() as u64, "no valid footer record at the end".into()));
    };
    // The object is its index records and the footer, nothing else (indexOffset = 0 in every writer's layout):
    // bytes the index does not cover are not data a reader may pass over.
    let index_end = record.index_offset.saturating_add(u64::from(record.index_length));
    if record.index_offset != 0 || index_end != at as u64 {
        return Err(malformed(
            key,
            record.index_offset,
            format!("index region {}..{index_end} is not the {at} bytes before the footer", record.index_offset),
        ));
    }
    // Both lie below `at`, a position in `body`, so they fit in usize.
    let index = codec::decode_index(body, record.index_offset as usize, record.index_length as usize)
        .map_err(|e| corrupt(key, e))?;
    if usize::try_from(record.total_blocks).ok() != Some(index.len()) {
        return Err(malformed(
            key,
            record.index_offset,
            format!("footer says {} blocks, index holds {}", record.total_blocks, index.len()),
        ));
    }
    check_index_entries(key, &record, &index)?;
    let record = with_v5_lac(record, &index);
    Ok(Footer { record, index })
}

/// A v5 footer (upstream before the LAC field) decodes with LAC -1; it finalized exactly the entries its
/// index lists, and upstream's readers of that version read all of them, so its LAC is the index's last
/// entry. Without this a v5 segment would read as empty.
pub(crate) fn with_v5_lac(mut record: FooterRecord, index: &[IndexRecord]) -> FooterRecord {
    if record.version < 6 {
        record.lac = index.last().map_or(-1, |r| r.last_entry_id);
    }
    record
}

/// Readers locate entries in the index by binary search and trust it to cover the segment up to the LAC:
/// each block must hold ids in `0..i64::MAX`, at least one, each starting where the previous one ended, and
/// the LAC must lie in what the blocks hold. Otherwise a read would skip entries or overflow an id.
fn check_index_entries(key: &str, record: &FooterRecord, index: &[IndexRecord]) -> Result<(), SegmentError> {
    let mut prev_last: Option<EntryId> = None;
    for (i, r) in index.iter().enumerate() {
        let follows = prev_last.is_none_or(|p| p.checked_add(1) == Some(r.first_entry_id));
        if r.first_entry_id < 0 || r.last_entry_id < r.first_entry_id || r.last_entry_id == EntryId::MAX || !follows {
            return Err(malformed(
                key,
                record.index_offset + (i * INDEX_RECORD_LEN) as u64,
                format!(
                    "index record {i} lists entries {}..={} after a block ending at {}",
                    r.first_entry_id,
                    r.last_entry_id,
                    prev_last.map_or_else(|| "nothing".to_owned(), |p| p.to_string())
                ),
            ));
        }
        prev_last = Some(r.last_entry_id);
    }
    let last = prev_last.unwrap_or(-1);
    if record.lac < -1 || record.lac > last {
        return Err(malformed(
            key,
            record.index_offset + u64::from(record.index_length),
            format!("footer LAC {} lies outside the entries its index lists (up to {last})", record.lac),
        ));
    }
    Ok(())
}

/// Sleeps before attempt `attempt + 1`: doubling from `base` up to `cap`, jittered in the upper half so
/// racing writers and fencers do not retry in lock step (the workspace's one policy).
fn sleep_backoff(base: Duration, cap: Duration, attempt: u32) -> tokio::time::Sleep {
    let policy = RetryPolicy { max_attempts: u32::MAX, base_delay: base, max_delay: cap.max(base) };
    tokio::time::sleep(policy.delay(attempt))
}

impl Inner {
    fn obj(&self, segment: SegmentRef, source: ObjectError) -> SegmentError {
        SegmentError::Object { segment, source }
    }

    fn block_key(&self, segment: SegmentRef, block_id: i64) -> String {
        keys::block_key(&self.root, segment.log_id, segment.segment_id, block_id)
    }

    fn merged_key(&self, segment: SegmentRef, merged_id: i64) -> String {
        keys::merged_block_key(&self.root, segment.log_id, segment.segment_id, merged_id)
    }

    fn footer_key(&self, segment: SegmentRef) -> String {
        keys::footer_key(&self.root, segment.log_id, segment.segment_id)
    }

    fn lock_key(&self, segment: SegmentRef) -> String {
        keys::write_lock_key(&self.root, segment.log_id, segment.segment_id)
    }

    fn prefix(&self, segment: SegmentRef) -> String {
        keys::segment_prefix(&self.root, segment.log_id, segment.segment_id)
    }

    /// Key of the `i`-th data object listed by a footer (merged objects once compacted).
    fn indexed_key(&self, segment: SegmentRef, footer: &Footer, rec: &IndexRecord) -> String {
        if footer.record.is_compacted() {
            self.merged_key(segment, rec.start_offset)
        } else {
            self.block_key(segment, rec.start_offset)
        }
    }

    /// `GET`, with `NotFound` as `None`.
    async fn get_opt(&self, segment: SegmentRef, key: &str) -> Result<Option<Bytes>, SegmentError> {
        match self.store.get(key, None).await {
            Ok(b) => Ok(Some(b)),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.obj(segment, e)),
        }
    }

    async fn read_footer(&self, segment: SegmentRef) -> Result<Option<Footer>, SegmentError> {
        let key = self.footer_key(segment);
        match self.get_opt(segment, &key).await? {
            Some(body) => decode_footer_object(&key, &body).map(Some),
            None => Ok(None),
        }
    }

    /// Block objects `0..k` present without gap, and whether key `k` holds a fence object.
    async fn contiguous_prefix(&self, segment: SegmentRef) -> Result<(Vec<ObjectInfo>, bool), SegmentError> {
        let listed = self.store.list(&self.prefix(segment)).await.map_err(|e| self.obj(segment, e))?;
        let mut blocks: BTreeMap<i64, ObjectInfo> = BTreeMap::new();
        for info in listed {
            if let Some(SegmentObject::Block(n)) = keys::parse_segment_object(&info.key) {
                // Only direct children of the segment prefix count (a key like `<prefix>x/3.blk` is not ours).
                if info.key == self.block_key(segment, n) {
                    blocks.insert(n, info);
                }
            }
        }
        let mut prefix = Vec::new();
        for (expect, (n, info)) in blocks.into_iter().enumerate() {
            if n != expect as i64 {
                break;
            }
            if info.fenced {
                return Ok((prefix, true));
            }
            prefix.push(info);
        }
        Ok((prefix, false))
    }

    /// Entry range of block `block_id` from a ranged GET of its first bytes.
    async fn block_range(&self, segment: SegmentRef, block_id: i64) -> Result<(EntryId, EntryId), SegmentError> {
        let key = self.block_key(segment, block_id);
        let prefix = self.store.get(&key, Some(0..BLOCK_PREFIX_LEN)).await.map_err(|e| self.obj(segment, e))?;
        let h = decode_block_prefix(&key, &prefix)?;
        if i64::from(h.block_number) != block_id {
            return Err(malformed(&key, 0, format!("block header says block {}, expected {block_id}", h.block_number)));
        }
        Ok((h.first_entry_id, h.last_entry_id))
    }

    async fn fence(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(footer) = self.read_footer(segment).await? {
                return Ok(footer.record.lac);
            }
            let (prefix, fenced) = self.contiguous_prefix(segment).await?;
            let k = prefix.len() as i64;
            if fenced {
                return self.last_entry_before(segment, k).await;
            }
            match self.place_fence(segment, k).await {
                Ok(end) => {
                    let last = self.last_entry_before(segment, end).await?;
                    tracing::info!(%segment, fence_block = end, last, "segment fenced");
                    return Ok(last);
                }
                Err(ObjectError::AlreadyExists { .. }) if attempt < FENCE_ATTEMPTS => {}
                Err(e) if e.is_retryable() && attempt < FENCE_ATTEMPTS => {}
                Err(e) => return Err(self.obj(segment, e)),
            }
            sleep_backoff(FENCE_BASE_DELAY, FENCE_MAX_DELAY, attempt).await;
        }
    }

    /// Puts the segment's fence at the first absent block key from `k` on (blocks `0..k` exist); returns its id.
    ///
    /// A writer still landing blocks wins a plain "fence at the next key" race forever when it is as fast as the
    /// fencer (seen against MinIO), so on `AlreadyExists` the fencer leaps ahead with growing steps until a fence
    /// lands at some `j` the writer cannot pass, then sweeps `known..j` with fences: the first one that lands (or
    /// `j`) is the end, and every key below it is a block that `AlreadyExists` proved present.
    async fn place_fence(&self, segment: SegmentRef, k: i64) -> Result<i64, ObjectError> {
        let mut known = k;
        let mut j = k;
        let mut step = 1i64;
        let mut probes = 0;
        loop {
            match self.store.put_fence(&self.block_key(segment, j)).await {
                Ok(()) => break,
                Err(ObjectError::AlreadyExists { key }) => {
                    probes += 1;
                    if probes >= FENCE_FORWARD_PROBES {
                        return Err(ObjectError::AlreadyExists { key });
                    }
                    if j == known {
                        known += 1;
                    }
                    j += step;
                    step = (step * 2).min(FENCE_MAX_STEP);
                }
                Err(e) => return Err(e),
            }
        }
        for i in known..j {
            match self.store.put_fence(&self.block_key(segment, i)).await {
                Ok(()) => return Ok(i),
                Err(ObjectError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(j)
    }

    /// Last entry of block `k - 1` (-1 when `k == 0`), from its header.
    async fn last_entry_before(&self, segment: SegmentRef, k: i64) -> Result<EntryId, SegmentError> {
        if k == 0 { Ok(-1) } else { Ok(self.block_range(segment, k - 1).await?.1) }
    }

    /// Fetches and verifies whole blocks `0..n` of the contiguous prefix, in order, `read_max_fetch_threads` at once.
    async fn verified_blocks(&self, segment: SegmentRef, n: i64) -> Result<Vec<BlockMeta>, SegmentError> {
        let metas: Vec<BlockMeta> = stream::iter(0..n)
            .map(|id| async move {
                let key = self.block_key(segment, id);
                let body = self.store.get(&key, None).await.map_err(|e| self.obj(segment, e))?;
                let block = decode_block_object(&key, id, &body)?;
                Ok::<_, SegmentError>(BlockMeta {
                    first_entry_id: block.header.first_entry_id,
                    last_entry_id: block.header.last_entry_id,
                    size: body.len() as u64,
                })
            })
            .buffered(self.opts.read_max_fetch_threads)
            .try_collect()
            .await?;
        for (i, pair) in metas.windows(2).enumerate() {
            if pair[1].first_entry_id != pair[0].last_entry_id + 1 {
                return Err(malformed(
                    &self.block_key(segment, i as i64 + 1),
                    0,
                    format!(
                        "block starts at entry {}, previous block ends at {}",
                        pair[1].first_entry_id, pair[0].last_entry_id
                    ),
                ));
            }
        }
        Ok(metas)
    }

    /// Writes `footer.blk` if absent; when one exists already, returns it instead (the first finalizer wins).
    async fn put_footer(&self, segment: SegmentRef, body: Bytes) -> Result<Result<(), Footer>, SegmentError> {
        let key = self.footer_key(segment);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.put_if_absent(&key, body.clone()).await {
                Ok(()) => return Ok(Ok(())),
                Err(ObjectError::AlreadyExists { .. }) => {
                    let existing = self.get_opt(segment, &key).await?.ok_or_else(|| SegmentError::Missing {
                        segment,
                        what: format!("{key} (reported as existing)"),
                    })?;
                    return decode_footer_object(&key, &existing).map(Err);
                }
                Err(e) if e.is_retryable() && attempt < self.opts.max_flush_retries => {
                    sleep_backoff(UPLOAD_BASE_DELAY, self.opts.retry_interval, attempt).await;
                }
                Err(e) => return Err(self.obj(segment, e)),
            }
        }
    }

    async fn finalize_fenced(&self, segment: SegmentRef) -> Result<SegmentSummary, SegmentError> {
        let last = self.fence(segment).await?;
        if let Some(footer) = self.read_footer(segment).await? {
            return Ok(footer.summary());
        }
        let (prefix, _) = self.contiguous_prefix(segment).await?;
        let metas = self.verified_blocks(segment, prefix.len() as i64).await?;
        let lac = metas.last().map_or(-1, |m| m.last_entry_id);
        if lac != last {
            // The fence fixed the segment's end; blocks changing under it means someone rewrote objects.
            return Err(SegmentError::Missing {
                segment,
                what: format!("blocks up to entry {last} (fence) but the verified prefix ends at {lac}"),
            });
        }
        let body = encode_footer_object(&metas, 0, None, lac);
        match self.put_footer(segment, body).await? {
            Ok(()) => Ok(SegmentSummary {
                last_entry_id: lac,
                size: metas.iter().map(|m| m.size).sum(),
                blocks: metas.len() as u64,
            }),
            Err(existing) => Ok(existing.summary()),
        }
    }

    async fn compact(&self, segment: SegmentRef) -> Result<u64, SegmentError> {
        let footer_key = self.footer_key(segment);
        let Some(footer) = self.read_footer(segment).await? else {
            return Err(SegmentError::Missing { segment, what: format!("{footer_key} (segment is not finalized)") });
        };
        if footer.record.is_compacted() {
            self.cleanup_original_blocks(segment).await;
            return Ok(footer.record.total_size);
        }
        let lac = footer.record.lac;
        // Upstream's plan: close a group when adding the next block would reach the target size.
        let mut groups: Vec<Vec<IndexRecord>> = Vec::new();
        let mut size = 0u64;
        for rec in footer.index.iter().filter(|r| r.first_entry_id <= lac) {
            if let Some(g) = groups.last_mut()
                && !g.is_empty()
                && size + u64::from(rec.block_size) < self.opts.compaction_max_bytes
            {
                g.push(*rec);
                size += u64::from(rec.block_size);
                continue;
            }
            groups.push(vec![*rec]);
            size = u64::from(rec.block_size);
        }
        let first_entry = footer.index.first().map_or(0, |r| r.first_entry_id);
        let footer_ref = &footer;
        let merged: Vec<BlockMeta> = stream::iter(groups.into_iter().enumerate())
            .map(|(i, group)| async move {
                let blocks: Vec<DecodedBlock> = stream::iter(group)
                    .map(|rec| async move {
                        let key = self.indexed_key(segment, footer_ref, &rec);
                        let body = self
                            .get_opt(segment, &key)
                            .await?
                            .ok_or_else(|| SegmentError::Missing { segment, what: key.clone() })?;
                        // Never launder corruption into a fresh CRC (§14.4): verify before copying.
                        let block = decode_block_object(&key, rec.start_offset, &body)?;
                        if (block.header.first_entry_id, block.header.last_entry_id)
                            != (rec.first_entry_id, rec.last_entry_id)
                        {
                            return Err(malformed(&key, 0, "block entries differ from the footer index".into()));
                        }
                        Ok(block)
                    })
                    .buffered(self.opts.compaction_max_parallel_reads)
                    .try_collect()
                    .await?;
                let first = blocks.first().map_or(first_entry, |b| b.header.first_entry_id);
                // Entries past the LAC were never acknowledged; merged data stops there (§14.2).
                let entries: Vec<Bytes> = blocks
                    .into_iter()
                    .flat_map(|b| {
                        let f = b.header.first_entry_id;
                        b.entries.into_iter().enumerate().map(move |(j, e)| (f + j as i64, e))
                    })
                    .filter(|(id, _)| *id <= lac)
                    .map(|(_, e)| e)
                    .collect();
                // m_0 alone starts with a header record (flags compacted), as upstream writes it.
                let body = encode_block_object(i as i64, first, &entries, FLAG_COMPACTED);
                let meta = BlockMeta {
                    first_entry_id: first,
                    last_entry_id: first + entries.len() as i64 - 1,
                    size: body.len() as u64,
                };
                let key = self.merged_key(segment, i as i64);
                // Plain put: a merged object left by an interrupted compaction is rebuilt from the same sources.
                self.store.put(&key, body).await.map_err(|e| self.obj(segment, e))?;
                Ok::<_, SegmentError>(meta)
            })
            .buffered(self.opts.compaction_max_parallel_uploads)
            .try_collect()
            .await?;
        let body = encode_footer_object(&merged, FLAG_COMPACTED, Some(footer.record.total_records), lac);
        // The footer switch is the commit point: readers re-read it when an original block disappears.
        self.store.put(&footer_key, body).await.map_err(|e| self.obj(segment, e))?;
        self.cleanup_original_blocks(segment).await;
        Ok(merged.iter().map(|m| m.size).sum())
    }

    /// Best effort: removes original `<n>.blk` data objects of a compacted segment (fence objects stay, as upstream).
    async fn cleanup_original_blocks(&self, segment: SegmentRef) {
        let listed = match self.store.list(&self.prefix(segment)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%segment, error = %e, "listing for compaction cleanup failed; a later run retries");
                return;
            }
        };
        for info in listed {
            if matches!(keys::parse_segment_object(&info.key), Some(SegmentObject::Block(_)))
                && !info.fenced
                && let Err(e) = self.store.remove(&info.key).await
            {
                tracing::warn!(%segment, key = %info.key, error = %e, "removing a compacted block failed");
            }
        }
    }
}

#[async_trait]
impl SegmentBackend for ObjectSegmentBackend {
    fn describe(&self) -> String {
        let root = self.inner.root.trim_matches('/');
        format!("{} root `{root}`", self.inner.store.describe())
    }

    async fn create_writer(&self, segment: SegmentRef) -> Result<Box<dyn SegmentWriter>, SegmentError> {
        let inner = &self.inner;
        let mut lock_held = false;
        if inner.opts.write_lock_object {
            let key = inner.lock_key(segment);
            match inner.store.put_if_absent(&key, Bytes::from(lock_body(segment))).await {
                Ok(()) => lock_held = true,
                // Informational only (fences are the guard, as upstream): a stale lock of a crashed writer stays.
                Err(ObjectError::AlreadyExists { .. }) => {
                    tracing::warn!(%segment, key, "write.lock exists already; proceeding (fencing guards the segment)");
                }
                Err(e) => return Err(inner.obj(segment, e)),
            }
        }
        Ok(Box::new(ObjectSegmentWriter {
            inner: Arc::clone(inner),
            segment,
            state: Mutex::new(WriterState { lock_held, ..WriterState::default() }),
            spare: inner.pool.lease(),
        }))
    }

    async fn fence(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        self.inner.fence(segment).await
    }

    async fn finalize(&self, segment: SegmentRef) -> Result<SegmentSummary, SegmentError> {
        self.inner.finalize_fenced(segment).await
    }

    async fn visible_end(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        let inner = &self.inner;
        if let Some(footer) = inner.read_footer(segment).await? {
            return Ok(footer.record.lac);
        }
        let (prefix, _) = inner.contiguous_prefix(segment).await?;
        inner.last_entry_before(segment, prefix.len() as i64).await
    }

    async fn open_reader(&self, segment: SegmentRef) -> Result<Box<dyn SegmentReader>, SegmentError> {
        let footer = self.inner.read_footer(segment).await?.map(Arc::new);
        Ok(Box::new(ObjectSegmentReader {
            inner: Arc::clone(&self.inner),
            segment,
            footer,
            discovered: Vec::new(),
            sizes: Vec::new(),
            fenced_at: None,
            at_tail: false,
            empty_polls: 0,
        }))
    }

    async fn compact(&self, segment: SegmentRef) -> Result<u64, SegmentError> {
        self.inner.compact(segment).await
    }

    async fn delete_segment(&self, segment: SegmentRef) -> Result<(), SegmentError> {
        let prefix = self.inner.prefix(segment);
        self.inner.store.remove_prefix(&prefix).await.map(|_| ()).map_err(|e| self.inner.obj(segment, e))
    }

    async fn delete_log(&self, log_id: LogId) -> Result<(), SegmentError> {
        let prefix = keys::log_prefix(&self.inner.root, log_id);
        self.inner
            .store
            .remove_prefix(&prefix)
            .await
            .map(|_| ())
            .map_err(|e| self.inner.obj(SegmentRef { log_id, segment_id: -1 }, e))
    }
}

/// Upstream's `write.lock` text.
fn lock_body(segment: SegmentRef) -> String {
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "logId={}\nsegmentId={}\npid={}\ntimestamp={timestamp}\nhostname={hostname}\n",
        segment.log_id,
        segment.segment_id,
        std::process::id()
    )
}

#[derive(Debug, Default)]
struct WriterState {
    /// Blocks handed to `write_block` (in flight or done): their entry ranges, to reject inconsistent blocks.
    submitted: BTreeMap<i64, (EntryId, EntryId)>,
    /// Blocks made durable by this writer.
    durable: BTreeMap<i64, BlockMeta>,
    /// Lowest block id at which this writer found a fence (or someone else's block).
    fenced_at: Option<i64>,
    /// Summary of a successful finalize, for idempotent repeats.
    finalized: Option<SegmentSummary>,
    lock_held: bool,
}

/// Writer of one segment: parallel `put_if_absent` uploads of immutable block objects.
struct ObjectSegmentWriter {
    inner: Arc<Inner>,
    segment: SegmentRef,
    state: Mutex<WriterState>,
    /// Buffers of uploaded blocks, encoded into again (the backend's pool, shared across segments).
    spare: PoolLease,
}

impl fmt::Debug for ObjectSegmentWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSegmentWriter").field("segment", &self.segment).finish_non_exhaustive()
    }
}

impl ObjectSegmentWriter {
    fn state(&self) -> MutexGuard<'_, WriterState> {
        // Every critical section is a few map operations; a poisoned lock still holds consistent maps.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fenced(&self, block_id: i64) -> SegmentError {
        let mut st = self.state();
        st.fenced_at = Some(st.fenced_at.map_or(block_id, |f| f.min(block_id)));
        SegmentError::Fenced { segment: self.segment }
    }

    /// Uploads with bounded retries; `AlreadyExists` is success only if the stored bytes are ours.
    async fn upload(&self, block_id: i64, body: Bytes, sha256: [u8; 32]) -> Result<(), SegmentError> {
        let key = self.inner.block_key(self.segment, block_id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.inner.store.put_if_absent_hashed(&key, body.clone(), sha256).await {
                Ok(()) => return Ok(()),
                Err(ObjectError::Fenced { .. }) => return Err(self.fenced(block_id)),
                Err(ObjectError::AlreadyExists { .. }) => {
                    // Our own earlier attempt whose reply was lost, or a resend: same bytes. Anything else at our
                    // key means another writer owns the segment now.
                    return match self.inner.store.get(&key, None).await {
                        Ok(existing) if existing == body => Ok(()),
                        Ok(_) | Err(ObjectError::NotFound { .. }) => Err(self.fenced(block_id)),
                        Err(e) => Err(self.inner.obj(self.segment, e)),
                    };
                }
                Err(e) if e.is_retryable() && attempt < self.inner.opts.max_flush_retries => {
                    tracing::debug!(segment = %self.segment, key, attempt, error = %e, "block upload retry");
                    sleep_backoff(UPLOAD_BASE_DELAY, self.inner.opts.retry_interval, attempt).await;
                }
                Err(e) => return Err(self.inner.obj(self.segment, e)),
            }
        }
    }

    fn check_order(&self, st: &WriterState, block: &BlockToWrite) -> Result<(), SegmentError> {
        let out_of_order = || SegmentError::OutOfOrder {
            segment: self.segment,
            block_id: block.block_id,
            first_entry_id: block.first_entry_id,
        };
        let last = block.last_entry_id();
        if block.block_id < 0 || block.entries.is_empty() {
            return Err(out_of_order());
        }
        if let Some(&(f, l)) = st.submitted.get(&block.block_id)
            && (f, l) != (block.first_entry_id, last)
        {
            return Err(out_of_order());
        }
        if let Some(&(_, prev_last)) = st.submitted.get(&(block.block_id - 1))
            && prev_last + 1 != block.first_entry_id
        {
            return Err(out_of_order());
        }
        if let Some(&(next_first, _)) = st.submitted.get(&(block.block_id + 1))
            && last + 1 != next_first
        {
            return Err(out_of_order());
        }
        Ok(())
    }
}

#[async_trait]
impl SegmentWriter for ObjectSegmentWriter {
    fn max_parallel_blocks(&self) -> usize {
        self.inner.opts.max_flush_threads
    }

    async fn write_block(&self, block: BlockToWrite) -> Result<(), SegmentError> {
        // The footer's index sizes the block object (header records included) in a u32.
        let data_len: u64 = block.entries.iter().map(|e| (e.len() + codec::RECORD_HEADER_LEN) as u64).sum();
        if data_len > codec::MAX_BLOCK_DATA_LEN as u64 {
            return Err(SegmentError::Io {
                segment: self.segment,
                op: "encode block",
                path: self.inner.block_key(self.segment, block.block_id),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "block of {data_len} data bytes exceeds {} (4 GiB with its headers)",
                        codec::MAX_BLOCK_DATA_LEN
                    ),
                ),
            });
        }
        {
            let mut st = self.state();
            if st.finalized.is_some() {
                return Err(SegmentError::Finalized { segment: self.segment });
            }
            // Blocks below a fence we hit exist already (the fencer proved it), so only later ones are refused here.
            if st.fenced_at.is_some_and(|f| block.block_id >= f) {
                return Err(SegmentError::Fenced { segment: self.segment });
            }
            self.check_order(&st, &block)?;
            st.submitted.insert(block.block_id, (block.first_entry_id, block.last_entry_id()));
        }
        let (block_id, first_entry_id, last_entry_id) = (block.block_id, block.first_entry_id, block.last_entry_id());
        // Encoding (a copy and CRCs of maxFlushSize bytes) runs on the blocking pool, off the caller's task,
        // which meanwhile acknowledges and cuts other blocks. The entries' buffers go once encoded. The buffer
        // is allocated here, not on the pool thread: glibc gives every thread its own arena, and blocks
        // allocated across many pool threads' arenas were measured holding ~100 MB more resident memory.
        // The SHA-256 an S3 request signature needs is taken right after encoding, on the same core, while
        // the block is in cache (measured ~1.7 GB/s there against ~1.1 GB/s when the SDK hashed it later).
        // Never closed, so a permit always comes; encoding without one would only lose the ordering.
        let encoding = self.inner.encoders.clone().acquire_owned().await.ok();
        let buf = self.spare.take(block_object_len(&block.entries));
        let (body, sha256) = tokio::task::spawn_blocking(move || {
            let _encoding = encoding;
            let body = encode_block_object_into(buf, block_id, first_entry_id, &block.entries, 0);
            let sha256: [u8; 32] = Sha256::digest(&body).into();
            (body, sha256)
        })
        .await
        .map_err(|e| SegmentError::Io {
            segment: self.segment,
            op: "encode block",
            path: self.inner.block_key(self.segment, block_id),
            source: std::io::Error::other(e.to_string()),
        })?;
        let size = body.len() as u64;
        self.upload(block_id, body.clone(), sha256).await?;
        // The request is done with the body; its buffer is reused unless the store still holds it.
        self.spare.put_bytes(body);
        let mut st = self.state();
        // A fence below this block makes it invisible forever: report it as fenced, not durable-and-useful.
        if st.fenced_at.is_some_and(|f| f < block_id) {
            return Err(SegmentError::Fenced { segment: self.segment });
        }
        st.durable.insert(block_id, BlockMeta { first_entry_id, last_entry_id, size });
        Ok(())
    }

    async fn finalize(&self, last_block_id: i64) -> Result<SegmentSummary, SegmentError> {
        let metas = {
            let st = self.state();
            if let Some(s) = st.finalized {
                return Ok(s);
            }
            if st.fenced_at.is_some_and(|f| f <= last_block_id + 1) {
                return Err(SegmentError::Fenced { segment: self.segment });
            }
            let mut metas = Vec::new();
            for id in 0..=last_block_id {
                match st.durable.get(&id) {
                    Some(m) => metas.push(*m),
                    None => {
                        return Err(SegmentError::Missing {
                            segment: self.segment,
                            what: format!("block {id} (never acknowledged by this writer)"),
                        });
                    }
                }
            }
            metas
        };
        // Upstream fences its own segment on close; the fence also hides any later block that landed. A block
        // that landed at the fence key was excluded by the caller (never acknowledged): replace it by the fence so
        // that tail readers without the footer never show its entries.
        let fence_key = self.inner.block_key(self.segment, last_block_id + 1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.inner.store.put_fence(&fence_key).await {
                Ok(()) => break,
                Err(ObjectError::AlreadyExists { .. }) if attempts < 3 => {
                    // Only while nobody fenced us: a fencer may have counted that block into its segment.
                    let listed = self
                        .inner
                        .store
                        .list(&self.inner.prefix(self.segment))
                        .await
                        .map_err(|e| self.inner.obj(self.segment, e))?;
                    if listed.iter().any(|o| o.fenced) {
                        return Err(self.fenced(last_block_id + 1));
                    }
                    self.inner.store.remove(&fence_key).await.map_err(|e| self.inner.obj(self.segment, e))?;
                }
                Err(ObjectError::AlreadyExists { .. }) => {
                    tracing::warn!(segment = %self.segment, key = fence_key, "excluded block keeps reappearing; the footer bounds reads");
                    break;
                }
                Err(e) => return Err(self.inner.obj(self.segment, e)),
            }
        }
        let lac = metas.last().map_or(-1, |m| m.last_entry_id);
        let body = encode_footer_object(&metas, 0, None, lac);
        let summary =
            SegmentSummary { last_entry_id: lac, size: metas.iter().map(|m| m.size).sum(), blocks: metas.len() as u64 };
        match self.inner.put_footer(self.segment, body).await? {
            Ok(()) => {}
            // Idempotent finalize: an equivalent footer (ours, or a recovery's over the same blocks) is fine.
            Err(existing) if existing.summary() == summary && !existing.record.is_compacted() => {}
            Err(existing) if existing.record.is_compacted() && existing.record.lac == lac => {}
            Err(_) => return Err(SegmentError::Fenced { segment: self.segment }),
        }
        self.state().finalized = Some(summary);
        // The footer is the commit; a lock object that fails to go away is only cosmetic (recovery ignores it).
        if let Err(e) = self.close().await {
            tracing::warn!(segment = %self.segment, error = %e, "write.lock not removed after finalize");
        }
        Ok(summary)
    }

    async fn close(&self) -> Result<(), SegmentError> {
        let held = std::mem::take(&mut self.state().lock_held);
        if held {
            let key = self.inner.lock_key(self.segment);
            if let Err(e) = self.inner.store.remove(&key).await {
                self.state().lock_held = true;
                return Err(self.inner.obj(self.segment, e));
            }
        }
        Ok(())
    }
}

/// Reader of one segment; stateless about position (every call says where to start), caching what it learnt.
struct ObjectSegmentReader {
    inner: Arc<Inner>,
    segment: SegmentRef,
    /// The footer once seen; authoritative (index, LAC, compacted keys).
    footer: Option<Arc<Footer>>,
    /// Without a footer: entry ranges of blocks `0..len` already read and verified.
    discovered: Vec<(EntryId, EntryId)>,
    /// Object sizes of the discovered blocks (to size fetch windows).
    sizes: Vec<u64>,
    /// Without a footer: block id holding a fence object (the segment ends before it).
    fenced_at: Option<i64>,
    /// The last read stopped at a block that does not exist yet: probe one key before fetching a window.
    at_tail: bool,
    /// Consecutive polls that found nothing, to check for a footer only now and then.
    empty_polls: u32,
}

impl fmt::Debug for ObjectSegmentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSegmentReader")
            .field("segment", &self.segment)
            .field("footer", &self.footer.as_ref().map(|f| f.record))
            .field("discovered", &self.discovered.len())
            .field("fenced_at", &self.fenced_at)
            .finish_non_exhaustive()
    }
}

/// What fetching one block key found.
enum Fetched {
    Block(DecodedBlock, u64),
    NotYet,
    Fence,
}

/// Collects entries `>= from` (and `<= lac`) from whole blocks until the soft limits are reached.
struct Collector {
    from: EntryId,
    lac: EntryId,
    max_entries: usize,
    max_bytes: u64,
    bytes: u64,
    entries: Vec<(EntryId, Bytes)>,
}

impl Collector {
    fn full(&self) -> bool {
        !self.entries.is_empty() && (self.entries.len() >= self.max_entries || self.bytes >= self.max_bytes)
    }

    fn take(&mut self, block: DecodedBlock) {
        let first = block.header.first_entry_id;
        for (i, e) in block.entries.into_iter().enumerate() {
            let id = first + i as i64;
            if id >= self.from && id <= self.lac {
                self.bytes += e.len() as u64;
                self.entries.push((id, e));
            }
        }
    }
}

impl ObjectSegmentReader {
    async fn fetch(&self, key: String, block_number: i64) -> Result<Fetched, SegmentError> {
        let body = match self.inner.get_opt(self.segment, &key).await? {
            Some(b) => b,
            None => return Ok(Fetched::NotYet),
        };
        if body.len() == crate::object::FENCE_BODY.len() {
            // A 1-byte object can only be a fence (real blocks are larger); confirm with its metadata.
            let info = self.inner.store.stat(&key).await.map_err(|e| self.inner.obj(self.segment, e))?;
            if info.fenced {
                return Ok(Fetched::Fence);
            }
        }
        let size = body.len() as u64;
        decode_block_object(&key, block_number, &body).map(|b| Fetched::Block(b, size))
    }

    /// How many blocks to fetch at once, from what earlier blocks held on average.
    fn window(&self, c: &Collector, avg_entries: f64, avg_bytes: f64) -> usize {
        let max = self.inner.opts.read_max_fetch_threads;
        if avg_entries <= 0.0 {
            return 1;
        }
        let left_entries = c.max_entries.saturating_sub(c.entries.len()) as f64 / avg_entries;
        let left_bytes = c.max_bytes.saturating_sub(c.bytes) as f64 / avg_bytes.max(1.0);
        (left_entries.min(left_bytes).ceil() as usize).clamp(1, max)
    }

    /// Reads without a footer: dense block ids from the one holding `from`, stopping at a gap or a fence.
    async fn read_open(&mut self, c: &mut Collector) -> Result<bool, SegmentError> {
        let mut next = self.discovered.partition_point(|&(_, last)| last < c.from) as i64;
        loop {
            if self.fenced_at.is_some_and(|f| next >= f) {
                return Ok(true);
            }
            let (avg_e, avg_b) = self.averages();
            // A tail poll costs one GET, not a window of GETs that would all miss.
            let n = if self.at_tail { 1 } else { self.window(c, avg_e, avg_b) as i64 };
            let upto = self.fenced_at.map_or(next + n, |f| f.min(next + n));
            let this = &*self;
            let results: Vec<(i64, Result<Fetched, SegmentError>)> = stream::iter(next..upto)
                .map(|id| async move { (id, this.fetch(this.inner.block_key(this.segment, id), id).await) })
                .buffered(this.inner.opts.read_max_fetch_threads)
                .collect()
                .await;
            for (id, r) in results {
                match r? {
                    Fetched::Block(block, size) => {
                        let key = || self.inner.block_key(self.segment, id);
                        let (first, last) = (block.header.first_entry_id, block.header.last_entry_id);
                        if id > 0
                            && let Some(&(_, prev_last)) = self.discovered.get(id as usize - 1)
                            && prev_last + 1 != first
                        {
                            return Err(malformed(
                                &key(),
                                0,
                                format!("block starts at entry {first}, previous block ends at {prev_last}"),
                            ));
                        }
                        if (id as usize) == self.discovered.len() {
                            self.discovered.push((first, last));
                            self.sizes.push(size);
                        }
                        c.take(block);
                        next = id + 1;
                        self.at_tail = false;
                        if c.full() {
                            return Ok(false);
                        }
                    }
                    Fetched::NotYet => {
                        self.at_tail = true;
                        return Ok(false);
                    }
                    Fetched::Fence => {
                        self.fenced_at = Some(id);
                        return Ok(true);
                    }
                }
            }
        }
    }

    fn averages(&self) -> (f64, f64) {
        if self.discovered.is_empty() {
            return (0.0, 0.0);
        }
        let n = self.discovered.len() as f64;
        let entries: i64 = self.discovered.iter().map(|(f, l)| l - f + 1).sum();
        let bytes: u64 = self.sizes.iter().sum();
        (entries as f64 / n, bytes as f64 / n)
    }
}

/// How a read over a footer's index ended.
enum IndexedRead {
    /// Read what was there; `true` when nothing is left at or after the next id.
    Done(bool),
    /// A block the footer lists is gone (compaction may have replaced it).
    Missing(String),
}

impl ObjectSegmentReader {
    /// Reads blocks listed by the footer, from the one holding `from`, bounded by the footer's LAC.
    async fn read_indexed(&self, footer: &Footer, c: &mut Collector) -> Result<IndexedRead, SegmentError> {
        let index = &footer.index;
        let mut i = index.partition_point(|r| r.last_entry_id < c.from);
        while i < index.len() && index[i].first_entry_id <= c.lac {
            // Pick a window from the index's own sizes: enough blocks for the limits, at least one.
            let mut j = i;
            let (mut e, mut b) = (c.entries.len(), c.bytes);
            while j < index.len() && j - i < self.inner.opts.read_max_fetch_threads && index[j].first_entry_id <= c.lac
            {
                let r = &index[j];
                e += (r.last_entry_id - r.first_entry_id.max(c.from) + 1).max(0) as usize;
                b += u64::from(r.block_size);
                j += 1;
                if e >= c.max_entries || b >= c.max_bytes {
                    break;
                }
            }
            let this = self;
            let results: Vec<(String, IndexRecord, Result<Fetched, SegmentError>)> = stream::iter(index[i..j].to_vec())
                .map(|rec| async move {
                    let key = this.inner.indexed_key(this.segment, footer, &rec);
                    let r = this.fetch(key.clone(), rec.start_offset).await;
                    (key, rec, r)
                })
                .buffered(this.inner.opts.read_max_fetch_threads)
                .collect()
                .await;
            for (key, rec, r) in results {
                match r? {
                    Fetched::Block(block, _) => {
                        if (block.header.first_entry_id, block.header.last_entry_id)
                            != (rec.first_entry_id, rec.last_entry_id)
                        {
                            return Err(malformed(&key, 0, "block entries differ from the footer index".into()));
                        }
                        c.take(block);
                    }
                    Fetched::NotYet => return Ok(IndexedRead::Missing(key)),
                    Fetched::Fence => {
                        return Err(malformed(&key, 0, "the footer lists a fence object as a block".into()));
                    }
                }
                i += 1;
                if c.full() {
                    let next = c.entries.last().map_or(c.from, |(id, _)| id + 1);
                    return Ok(IndexedRead::Done(i >= index.len() || next > c.lac));
                }
            }
        }
        Ok(IndexedRead::Done(true))
    }
}

#[async_trait]
impl SegmentReader for ObjectSegmentReader {
    async fn read_batch(
        &mut self,
        from: EntryId,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<ReadBatch, SegmentError> {
        let mut c = Collector { from, lac: EntryId::MAX, max_entries, max_bytes, bytes: 0, entries: Vec::new() };
        let mut footer_switches = 0;
        loop {
            if let Some(footer) = self.footer.clone() {
                c.lac = footer.record.lac;
                match self.read_indexed(&footer, &mut c).await? {
                    IndexedRead::Done(end) => {
                        return Ok(ReadBatch { entries: c.entries, end_of_segment: end });
                    }
                    IndexedRead::Missing(key) => {
                        // Compaction replaces `<n>.blk` by `m_<n>.blk` and rewrites the footer first (§7.3).
                        let fresh = self.inner.read_footer(self.segment).await?;
                        match fresh {
                            Some(f) if f != *footer && footer_switches < 3 => {
                                footer_switches += 1;
                                self.footer = Some(Arc::new(f));
                                c.entries.clear();
                                c.bytes = 0;
                            }
                            _ => return Err(SegmentError::Missing { segment: self.segment, what: key }),
                        }
                    }
                }
            } else {
                let end = self.read_open(&mut c).await?;
                if c.entries.is_empty() && !end {
                    // Nothing new: the segment may have been finalized and compacted since we opened it, removing
                    // the blocks we would read next (a plain finalize leaves a fence we would have hit instead).
                    // Checked on the first empty poll and then on every 8th, so tail polling stays ~one GET.
                    self.empty_polls = self.empty_polls.wrapping_add(1);
                    if self.empty_polls.wrapping_sub(1).is_multiple_of(FOOTER_CHECK_EVERY)
                        && let Some(f) = self.inner.read_footer(self.segment).await?
                    {
                        self.footer = Some(Arc::new(f));
                        continue;
                    }
                } else {
                    self.empty_polls = 0;
                }
                return Ok(ReadBatch { entries: c.entries, end_of_segment: end });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_buffers_nobody_else_holds_are_reused() {
        let pool = BufferPool::new(SPARE_BUFFERS);
        let spare = pool.lease();
        let body = encode_block_object_into(spare.take(64), 1, 0, &[b"abc"], 0);
        let held = body.clone();
        spare.put_bytes(body);
        assert_eq!(spare.len(), 0, "the bytes are still held (a store may keep them)");
        let ptr = held.as_ptr();
        spare.put_bytes(held);
        assert_eq!(spare.len(), 1);
        let again = spare.take(64);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0), "the same buffer, emptied");
        for _ in 0..SPARE_BUFFERS + 2 {
            spare.put_bytes(Bytes::from(vec![0u8; 8]));
        }
        assert_eq!(spare.len(), SPARE_BUFFERS);
    }

    #[test]
    fn footer_object_layout_matches_upstream() {
        let metas = [
            BlockMeta { first_entry_id: 0, last_entry_id: 9, size: 100 },
            BlockMeta { first_entry_id: 10, last_entry_id: 19, size: 90 },
        ];
        let body = encode_footer_object(&metas, 0, None, 19);
        assert_eq!(body.len(), 2 * INDEX_RECORD_LEN + codec::FOOTER_V6_RECORD_LEN);
        let f = decode_footer_object("k", &body).unwrap();
        assert_eq!(f.record.total_blocks, 2);
        assert_eq!(f.record.total_records, 2);
        assert_eq!(f.record.total_size, 190);
        assert_eq!(f.record.index_offset, 0);
        assert_eq!(f.record.index_length, 2 * INDEX_RECORD_LEN as u32);
        assert_eq!(f.record.lac, 19);
        assert_eq!(f.index[1].start_offset, 1);
        assert_eq!(f.index[1].block_size, 90);
    }

    #[test]
    fn a_v5_footer_object_covers_every_entry_its_index_lists() {
        let metas = [
            BlockMeta { first_entry_id: 0, last_entry_id: 9, size: 100 },
            BlockMeta { first_entry_id: 10, last_entry_id: 19, size: 90 },
        ];
        let v6 = encode_footer_object(&metas, 0, None, 19);
        let record = decode_footer_object("k", &v6).unwrap().record;
        let mut v5 = v6[..2 * INDEX_RECORD_LEN].to_vec();
        codec::encode_footer(&mut v5, &FooterRecord { version: 5, ..record });
        assert_eq!(v5.len(), 2 * INDEX_RECORD_LEN + codec::FOOTER_V5_RECORD_LEN);
        let f = decode_footer_object("k", &Bytes::from(v5)).unwrap();
        assert_eq!((f.record.version, f.record.lac), (5, 19), "a v5 footer's LAC is its index's last entry");
        assert_eq!(f.summary().last_entry_id, 19);
    }

    #[test]
    fn footer_object_with_bytes_its_index_does_not_cover_is_corrupt() {
        let metas = [BlockMeta { first_entry_id: 0, last_entry_id: 9, size: 100 }];
        let body = encode_footer_object(&metas, 0, None, 9);
        let (index, footer) = body.split_at(INDEX_RECORD_LEN);
        let empty = encode_footer_object(&[], 0, None, -1);
        // Junk before an empty index, an index record the footer does not count, and a gap between them.
        let crafted =
            [[b"junk".as_slice(), &empty].concat(), [index, &empty].concat(), [index, b"gap", footer].concat()];
        for body in crafted {
            match decode_footer_object("seg/footer.blk", &Bytes::from(body.clone())) {
                Err(SegmentError::Corrupt { location, .. }) => assert_eq!(location, "seg/footer.blk"),
                other => panic!("{} bytes: expected corruption, got {other:?}", body.len()),
            }
        }
    }

    #[test]
    fn block_objects_decode_with_and_without_header() {
        let entries = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        let b0 = encode_block_object(0, 5, &entries, 0);
        let d = decode_block_object("k0", 0, &b0).unwrap();
        assert_eq!((d.header.first_entry_id, d.header.last_entry_id), (5, 6));
        let b1 = encode_block_object(1, 7, &entries, 0);
        assert_eq!(b1.len() + HEADER_RECORD_LEN, b0.len());
        assert!(decode_block_object("k1", 1, &b1).is_ok());
        assert!(matches!(decode_block_object("k1", 2, &b1), Err(SegmentError::Corrupt { .. })));
        let h = decode_block_prefix("k0", &b0.slice(..BLOCK_PREFIX_LEN as usize)).unwrap();
        assert_eq!(h.last_entry_id, 6);
        let mut bad = b1.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        match decode_block_object("x/1.blk", 1, &Bytes::from(bad)) {
            Err(SegmentError::Corrupt { location, .. }) => assert_eq!(location, "x/1.blk"),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }
}
