//! One segment on this node: the append pipeline, fence, completion, the pushed LAC and reads.
//!
//! ```text
//!  AddEntries(ids a..b) ─▶ admit ─▶ pending {id → payload} ─▶ flusher: cut the contiguous run from
//!        │                  (window)                          `next_cut` into a block ─▶ write + fsync
//!        └─ Buffered, then waits on `progress` ◀──────────────── durable = last id of each fsynced block
//! ```
//!
//! Invariants:
//! - **Synced means fsynced**: `progress.durable` only moves when the local writer returned `Ok` for a
//!   block, which it does after fsync. Entries are cut strictly in id order from entry 0, so a node that
//!   misses entry k never acknowledges anything after k.
//! - **Acknowledgements form a prefix**: once a block fails, `progress.failed` covers its first entry
//!   and everything after it, and the processor takes no more appends.
//! - **No append after a fence, across restarts**: `fence` refuses new appends first, then persists
//!   `write.fence` and waits (under the segment's flock) for an append already past its fence check. A
//!   processor opened on a segment that is fenced, finalized or already has data refuses appends for good
//!   (8104, 2216, 2218): a restarted node never takes the old writer's appends.
//! - **Readers see only what the quorum confirmed**: reads stop at max(pushed LAC, footer LAC); end of
//!   segment is reported only once finalized here and past the footer's LAC.
//! - A resend of an entry that is durable is answered at once; one still in flight waits for the same
//!   block's outcome (upstream drops such a waiter and lets it time out).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use woodpecker_core::ids::EntryId;
use woodpecker_proto::logstore::Status;
use woodpecker_storage::object::ObjectStorage;
use woodpecker_storage::segment::local::LocalSegmentBackend;
use woodpecker_storage::segment::staged::compact::{self, CompactError, CompactOptions, Compacted};
use woodpecker_storage::segment::{
    BlockToWrite, SegmentBackend, SegmentError, SegmentReader, SegmentRef, SegmentWriter,
};

use crate::status::{self, Code};

/// How much one segment buffers and how it cuts blocks.
#[derive(Debug, Clone, Copy)]
pub struct AppendLimits {
    /// A block closes once it holds this many payload bytes (`segmentSyncPolicy.maxFlushSize`).
    pub max_block_bytes: u64,
    /// Entries buffered ahead of the durable end (`segmentSyncPolicy.maxEntries`); beyond it: 2200.
    pub window_entries: u64,
    /// Payload bytes buffered ahead of the durable end (`segmentSyncPolicy.maxBytes`); beyond it: 2200.
    pub window_bytes: u64,
    /// Longest an append waits for its entry to become durable before it is answered with a failure.
    pub max_wait: Duration,
}

impl Default for AppendLimits {
    fn default() -> Self {
        Self {
            max_block_bytes: 2_000_000,
            window_entries: 10_000,
            window_bytes: 256_000_000,
            max_wait: Duration::from_secs(35),
        }
    }
}

/// How far appends got: what is durable, and from where on nothing will be.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Every entry up to here is durable on this node (-1: none).
    pub durable: EntryId,
    /// Entries from `.0` on will never be durable here, for the reason `.1`.
    pub failed: Option<(EntryId, Status)>,
}

impl Progress {
    /// The outcome of entry `id`, once it has one.
    pub fn outcome(&self, id: EntryId) -> Option<Result<(), Status>> {
        if id <= self.durable {
            return Some(Ok(()));
        }
        match &self.failed {
            Some((from, why)) if id >= *from => Some(Err(why.clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// No writer yet: the first append opens one.
    Unopened,
    /// Appends are taken.
    Writing,
    /// No appends, ever again, for this reason.
    Closed(Status),
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    /// First entry not yet cut into a block.
    next_cut: EntryId,
    /// Admitted entries not yet cut.
    pending: BTreeMap<EntryId, Bytes>,
    pending_bytes: u64,
    next_block: i64,
    /// The footer's LAC, once finalized.
    footer_lac: Option<EntryId>,
    /// Blocks written by this process (for GetSegmentBlockCount).
    blocks_written: u64,
    /// Last time an append was admitted into an idle pipeline or a block became durable.
    last_progress: std::time::Instant,
}

/// What `/admin/log-health` reports of one segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentHealth {
    /// Log id.
    pub log_id: i64,
    /// Segment id.
    pub segment_id: i64,
    /// The segment takes appends.
    pub writing: bool,
    /// Last durable entry.
    pub durable: EntryId,
    /// Entries admitted and not yet durable.
    pub unsynced_entries: u64,
    /// Seconds since the pipeline last moved, when entries wait.
    pub stalled_seconds: Option<f64>,
}

/// One segment of one log in one scope, on this node.
#[derive(Debug)]
pub struct SegmentProcessor {
    segment: SegmentRef,
    local: Arc<LocalSegmentBackend>,
    limits: AppendLimits,
    inner: Mutex<Inner>,
    progress: watch::Sender<Progress>,
    /// Wakes the flusher: entries were admitted, or the processor closed.
    wake: Notify,
    /// Serializes opening the writer.
    opening: tokio::sync::Mutex<()>,
    /// The highest LAC a client pushed (monotone, memory only).
    pushed_lac: AtomicI64,
    reader: tokio::sync::Mutex<Option<Box<dyn SegmentReader>>>,
    compacting: AtomicBool,
    /// Last time a request used the processor.
    last_used: Mutex<std::time::Instant>,
    cancel: CancellationToken,
}

impl SegmentProcessor {
    /// The processor of `segment`, in the state its local files say (fenced, finalized, holding data from
    /// an earlier writer, or new).
    pub async fn open(
        segment: SegmentRef,
        local: Arc<LocalSegmentBackend>,
        limits: AppendLimits,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, Status> {
        let state = local.inspect(segment).await.map_err(|e| segment_status(&e))?;
        let mode = if let Some(lac) = state.footer_lac {
            let _ = lac;
            Mode::Closed(status::FINALIZED.status(format!("{segment} is finalized")))
        } else if state.fenced {
            Mode::Closed(status::SEGMENT_FENCED.status(format!("{segment} is fenced")))
        } else if state.has_data_file {
            Mode::Closed(status::IN_RECOVERY_MODE.status(format!(
                "{segment} already holds data from an earlier writer (recovery mode): it takes no new appends"
            )))
        } else {
            Mode::Unopened
        };
        let inner = Inner {
            mode,
            next_cut: state.last_entry_id + 1,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            next_block: state.blocks as i64,
            footer_lac: state.footer_lac,
            blocks_written: 0,
            last_progress: std::time::Instant::now(),
        };
        let (progress, _) = watch::channel(Progress { durable: state.last_entry_id, failed: None });
        Ok(Arc::new(Self {
            segment,
            local,
            limits,
            inner: Mutex::new(inner),
            progress,
            wake: Notify::new(),
            opening: tokio::sync::Mutex::new(()),
            pushed_lac: AtomicI64::new(-1),
            reader: tokio::sync::Mutex::new(None),
            compacting: AtomicBool::new(false),
            last_used: Mutex::new(std::time::Instant::now()),
            cancel,
        }))
    }

    /// The segment.
    pub fn segment(&self) -> SegmentRef {
        self.segment
    }

    /// Records a use (every request that reaches the processor).
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
    }

    /// How long no request used the processor.
    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits `entries` (id, payload) into the buffer; all or none. Entries already admitted are
    /// resends and keep their first payload. Fails with the status the whole batch gets.
    pub async fn admit(self: &Arc<Self>, entries: &[(EntryId, Bytes)]) -> Result<(), Status> {
        self.ensure_open().await?;
        let mut inner = self.inner();
        if let Mode::Closed(why) = &inner.mode {
            return Err(why.clone());
        }
        let mut added_bytes = 0u64;
        let mut furthest = inner.next_cut - 1;
        for (id, payload) in entries {
            if *id < 0 {
                return Err(status::INVALID_ENTRY_ID.status(format!("entry id {id} is negative")));
            }
            if *id < inner.next_cut || inner.pending.contains_key(id) {
                continue;
            }
            added_bytes += payload.len() as u64;
            furthest = furthest.max(*id);
        }
        let ahead = (furthest - inner.next_cut + 1).max(0) as u64;
        if ahead > self.limits.window_entries || inner.pending_bytes + added_bytes > self.limits.window_bytes {
            return Err(status::BUFFER_FULL.status(format!(
                "{}: entry {furthest} is {ahead} entries ahead of the next one to sync ({}); the buffer takes {} \
                 entries and {} bytes",
                self.segment, inner.next_cut, self.limits.window_entries, self.limits.window_bytes
            )));
        }
        let durable = self.progress.borrow().durable;
        if inner.pending.is_empty() && inner.next_cut - 1 <= durable {
            inner.last_progress = std::time::Instant::now();
        }
        for (id, payload) in entries {
            if *id >= inner.next_cut && !inner.pending.contains_key(id) {
                inner.pending_bytes += payload.len() as u64;
                inner.pending.insert(*id, payload.clone());
            }
        }
        drop(inner);
        self.wake.notify_one();
        Ok(())
    }

    /// Waits until entry `id` is durable here or known to fail (bounded by `AppendLimits::max_wait`).
    pub async fn outcome(&self, id: EntryId) -> Result<(), Status> {
        let mut rx = self.progress.subscribe();
        let wait = rx.wait_for(|p| p.outcome(id).is_some());
        match tokio::time::timeout(self.limits.max_wait, wait).await {
            Ok(Ok(p)) => p.outcome(id).unwrap_or(Ok(())),
            Ok(Err(_)) => Err(status::ALREADY_CLOSED.status(format!("{}: the processor was closed", self.segment))),
            Err(_) => Err(status::SYNC_FAILED.status(format!(
                "{}: entry {id} did not become durable within {:?} (an earlier entry never arrived?)",
                self.segment, self.limits.max_wait
            ))),
        }
    }

    /// The outcome of `id` if it has one already (no waiting).
    pub fn outcome_now(&self, id: EntryId) -> Option<Result<(), Status>> {
        self.progress.borrow().outcome(id)
    }

    /// Opens the writer on the first append of a new segment.
    async fn ensure_open(self: &Arc<Self>) -> Result<(), Status> {
        match &self.inner().mode {
            Mode::Writing => return Ok(()),
            Mode::Closed(why) => return Err(why.clone()),
            Mode::Unopened => {}
        }
        let _opening = self.opening.lock().await;
        if !matches!(self.inner().mode, Mode::Unopened) {
            return Ok(());
        }
        let writer: Arc<dyn SegmentWriter> = match self.local.create_writer(self.segment).await {
            Ok(w) => Arc::from(w),
            Err(e) => {
                let why = match &e {
                    SegmentError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                        status::IN_RECOVERY_MODE.status(format!("{}: data from an earlier writer exists", self.segment))
                    }
                    other => segment_status(other),
                };
                if !why.retriable {
                    self.inner().mode = Mode::Closed(why.clone());
                }
                return Err(why);
            }
        };
        let fenced_meanwhile = {
            let mut inner = self.inner();
            match &inner.mode {
                Mode::Closed(why) => Some(why.clone()),
                _ => {
                    inner.mode = Mode::Writing;
                    None
                }
            }
        };
        if let Some(why) = fenced_meanwhile {
            // Fenced while the writer was being created.
            let _ = writer.close().await;
            return Err(why);
        }
        let me = Arc::clone(self);
        tokio::spawn(async move { me.flush_loop(writer).await });
        Ok(())
    }

    /// Takes the next block: the contiguous run of pending entries from `next_cut`, up to the block size.
    fn cut_block(&self) -> Option<BlockToWrite> {
        let mut inner = self.inner();
        if !matches!(inner.mode, Mode::Writing) {
            return None;
        }
        let first = inner.next_cut;
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        while let Some(payload) = inner.pending.remove(&(first + entries.len() as i64)) {
            bytes += payload.len() as u64;
            entries.push(payload);
            if bytes >= self.limits.max_block_bytes {
                break;
            }
        }
        if entries.is_empty() {
            return None;
        }
        inner.pending_bytes -= bytes;
        inner.next_cut = first + entries.len() as i64;
        let block_id = inner.next_block;
        inner.next_block += 1;
        Some(BlockToWrite::new(block_id, first, entries))
    }

    /// The flusher: cuts blocks as entries arrive, keeps up to the writer's pipeline depth in flight, and
    /// publishes each outcome in block order. Ends when the processor closes and nothing is in flight.
    async fn flush_loop(self: Arc<Self>, writer: Arc<dyn SegmentWriter>) {
        let depth = writer.max_parallel_blocks().max(1);
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < depth {
                let Some(block) = self.cut_block() else { break };
                let (first, last) = (block.first_entry_id, block.last_entry_id());
                let bytes: usize = block.entries.iter().map(|e| e.len()).sum();
                // One span per block, from the cut to the end of its write and fsync.
                let span = tracing::debug_span!("flush_block", segment = %self.segment, block = block.block_id, first, last, bytes);
                let w = Arc::clone(&writer);
                in_flight.push_back(async move { (first, last, w.write_block(block).await) }.instrument(span));
            }
            if in_flight.is_empty() {
                if matches!(self.inner().mode, Mode::Closed(_)) {
                    break;
                }
                tokio::select! {
                    () = self.wake.notified() => continue,
                    () = self.cancel.cancelled() => break,
                }
            }
            tokio::select! {
                Some((first, last, result)) = in_flight.next() => self.block_done(first, last, result),
                () = self.wake.notified() => {}
            }
        }
        // Blocks still queued in the writer fail with it; the file stays open for recovery by `fence`.
        let _ = writer.close().await;
    }

    fn block_done(&self, first: EntryId, last: EntryId, result: Result<(), SegmentError>) {
        match result {
            Ok(()) => {
                {
                    let mut inner = self.inner();
                    inner.blocks_written += 1;
                    inner.last_progress = std::time::Instant::now();
                }
                self.progress.send_modify(|p| {
                    // A block after a failed one is never acknowledged: acks form a prefix.
                    if p.failed.as_ref().is_none_or(|(from, _)| last < *from) {
                        p.durable = p.durable.max(last);
                    }
                });
            }
            Err(e) => {
                let why = segment_status(&e);
                tracing::warn!(segment = %self.segment, first, last, error = %e, "block append failed; the segment takes no more appends");
                self.close_appends(why.clone());
                self.fail_from(first, why);
            }
        }
    }

    /// Refuses appends from now on and drops what was buffered.
    fn close_appends(&self, why: Status) {
        let mut inner = self.inner();
        if !matches!(inner.mode, Mode::Closed(_)) {
            inner.mode = Mode::Closed(why);
        }
        inner.pending.clear();
        inner.pending_bytes = 0;
        drop(inner);
        self.wake.notify_one();
    }

    /// Entries from `from` on will not become durable here.
    fn fail_from(&self, from: EntryId, why: Status) {
        self.progress.send_modify(|p| match &p.failed {
            Some((f, _)) if *f <= from => {}
            _ => p.failed = Some((from, why)),
        });
    }

    /// Fences the segment: no append is taken from now on, here or after a restart. Returns the last
    /// durable entry (-1 when none); a finalized segment answers its footer's LAC. Idempotent.
    pub async fn fence(&self) -> Result<EntryId, Status> {
        if let Some(lac) = self.inner().footer_lac {
            return Ok(lac);
        }
        self.close_appends(status::SEGMENT_FENCED.status(format!("{} is fenced", self.segment)));
        let last = self.local.fence(self.segment).await.map_err(|e| segment_status(&e))?;
        self.fail_from(last + 1, status::SEGMENT_FENCED.status(format!("{} was fenced at entry {last}", self.segment)));
        // What the fence found under the lock is durable, whether or not its append reported back yet.
        self.progress.send_modify(|p| p.durable = p.durable.max(last));
        Ok(last)
    }

    /// Finalizes the segment with `lac` as its footer's LAC (the quorum's, from the client), fencing it
    /// first if this node missed the fence. Idempotent: a finalized segment answers its stored LAC.
    pub async fn complete(&self, lac: EntryId) -> Result<EntryId, Status> {
        if let Some(stored) = self.inner().footer_lac {
            return Ok(stored);
        }
        self.fence().await?;
        let summary = self.local.finalize_with_lac(self.segment, lac).await.map_err(|e| segment_status(&e))?;
        let mut inner = self.inner();
        inner.footer_lac = Some(summary.last_entry_id);
        inner.mode = Mode::Closed(status::FINALIZED.status(format!("{} is finalized", self.segment)));
        Ok(summary.last_entry_id)
    }

    /// Raises the LAC readers may see (monotone; memory only, as upstream).
    pub fn push_lac(&self, lac: EntryId) {
        self.pushed_lac.fetch_max(lac, Ordering::AcqRel);
    }

    /// The last entry durable on this node (-1 when none): not the quorum's LAC.
    pub async fn last_durable(&self) -> Result<EntryId, Status> {
        if matches!(self.inner().mode, Mode::Writing) {
            return Ok(self.progress.borrow().durable);
        }
        let state = self.local.inspect(self.segment).await.map_err(|e| segment_status(&e))?;
        Ok(state.last_entry_id.max(self.progress.borrow().durable))
    }

    /// Blocks of the segment on this node.
    pub async fn block_count(&self) -> Result<u64, Status> {
        let state = self.local.inspect(self.segment).await.map_err(|e| segment_status(&e))?;
        Ok(state.blocks.max(self.inner().blocks_written))
    }

    /// Entries from `from` on, up to what the quorum confirmed: at most about `max_entries` / `max_bytes`
    /// and never empty. `ENTRY_NOT_FOUND` when nothing is readable here yet; `END_OF_FILE` once the segment
    /// is finalized here and `from` is past its LAC.
    pub async fn read(
        &self,
        from: EntryId,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Vec<(EntryId, Bytes)>, Status> {
        let footer_lac = self.inner().footer_lac;
        if let Some(lac) = footer_lac
            && from > lac
        {
            return Err(status::END_OF_FILE.status(format!("{} ends at entry {lac}", self.segment)));
        }
        let cap = self.pushed_lac.load(Ordering::Acquire).max(footer_lac.unwrap_or(-1));
        let not_found = || {
            status::ENTRY_NOT_FOUND.status(format!("{}: entry {from} is not readable on this node yet", self.segment))
        };
        if from > cap || from < 0 {
            return Err(not_found());
        }
        let mut reader = self.reader.lock().await;
        if reader.is_none() {
            *reader = Some(self.local.open_reader(self.segment).await.map_err(|e| segment_status(&e))?);
        }
        let Some(r) = reader.as_mut() else { return Err(not_found()) };
        let wanted = max_entries.clamp(1, (cap - from + 1).min(i64::from(u32::MAX)) as usize);
        let batch = r.read_batch(from, wanted, max_bytes).await.map_err(|e| segment_status(&e))?;
        let entries: Vec<_> = batch.entries.into_iter().take_while(|(id, _)| *id <= cap).collect();
        if entries.is_empty() {
            return Err(not_found());
        }
        Ok(entries)
    }

    /// Compacts the finalized local copy into `store` (one compaction of a segment at a time).
    pub async fn compact(
        &self,
        store: &dyn ObjectStorage,
        root_path: &str,
        opts: CompactOptions,
    ) -> Result<Compacted, Status> {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Err(status::ALREADY_COMPACTING.status(format!("{} is being compacted", self.segment)));
        }
        let result = compact::compact_segment(&self.local, self.segment, store, root_path, opts).await;
        self.compacting.store(false, Ordering::Release);
        result.map_err(|e| compact_status(&e))
    }

    /// Stops the processor: no more appends, waiting appends fail with `why`.
    pub fn shut(&self, why: Status) {
        self.close_appends(why.clone());
        let next = self.inner().next_cut;
        self.fail_from(next, why);
    }

    /// The segment's append health: a pipeline with entries waiting that has not moved for a while is
    /// stalled.
    pub fn health(&self) -> SegmentHealth {
        let durable = self.progress.borrow().durable;
        let inner = self.inner();
        let cut_unsynced = (inner.next_cut - 1 - durable).max(0) as u64;
        let unsynced = cut_unsynced + inner.pending.len() as u64;
        let writing = matches!(inner.mode, Mode::Writing);
        SegmentHealth {
            log_id: self.segment.log_id,
            segment_id: self.segment.segment_id,
            writing,
            durable,
            unsynced_entries: unsynced,
            stalled_seconds: (writing && unsynced > 0).then(|| inner.last_progress.elapsed().as_secs_f64()),
        }
    }

    /// Whether the processor holds a writer or buffered entries.
    pub fn is_writing(&self) -> bool {
        matches!(self.inner().mode, Mode::Writing)
    }
}

/// The status a segment error answers with.
pub fn segment_status(e: &SegmentError) -> Status {
    let code: Code = match e {
        SegmentError::Fenced { .. } => status::SEGMENT_FENCED,
        SegmentError::Finalized { .. } => status::FINALIZED,
        SegmentError::Io { .. } | SegmentError::TimedOut { .. } => status::SYNC_FAILED,
        SegmentError::Missing { .. } => status::SEGMENT_NOT_FOUND,
        SegmentError::OutOfOrder { .. } => status::INVALID_ENTRY_ID,
        SegmentError::Corrupt { .. }
        | SegmentError::Object { .. }
        | SegmentError::Node { .. }
        | SegmentError::Quorum { .. }
        | SegmentError::Placement { .. }
        | SegmentError::Unplaced { .. } => status::UNKNOWN,
    };
    code.status(e.to_string())
}

fn compact_status(e: &CompactError) -> Status {
    let code = match e {
        CompactError::MissingEntries { .. } => status::INVALID_LAC_ALIGNMENT,
        CompactError::NoLocalCopy { .. } => status::SEGMENT_NOT_FOUND,
        CompactError::NotFinalized { .. } => status::PROCESSOR_NO_WRITER,
        CompactError::Local(_) | CompactError::Upload { .. } => status::UNKNOWN,
    };
    code.status(e.to_string())
}
