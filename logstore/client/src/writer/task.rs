//! The writer task: takes entries from the inbox, cuts blocks, uploads them in parallel, acknowledges
//! strictly in entry order, rolls and seals segments.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use woodpecker_core::ids::{EntryId, LogMessageId, SegmentId};
use woodpecker_meta::{Versioned, WriterEpoch, WriterLock};
use woodpecker_proto::meta::{QuorumInfo, SegmentMetadata};
use woodpecker_storage::segment::{BlockToWrite, SegmentError, SegmentWriter};

use super::inbox::{Inbox, Pending};
use super::pending::{BudgetHeld, PendingQueue};
use super::seal::{self, SealError};
use super::segment_meta;
use super::{Health, WoodpeckerErrorKind};
use crate::ack::{AckQueue, AckRange};
use crate::error::{Result, WoodpeckerError};
use crate::handle::LogHandle;

/// What a finished block upload reports: block id, first entry id, the entries' acknowledgements, result.
type BlockDone = (i64, EntryId, AckQueue, std::result::Result<(), SegmentError>);

type BlockFuture = Pin<Box<dyn Future<Output = BlockDone> + Send>>;

/// The replica set of the next segment being chosen (service mode), while the current one goes on.
type Placing = Pin<Box<dyn Future<Output = (SegmentId, std::result::Result<Option<QuorumInfo>, SegmentError>)> + Send>>;

/// How long a writer waits before choosing the next segment's replicas again after a choice failed.
const PLACEMENT_RETRY: Duration = Duration::from_secs(2);

/// A segment's seal running beside the next segment: its id and the outcome.
type Completion = Pin<Box<dyn Future<Output = (SegmentId, std::result::Result<(), SealError>)> + Send>>;

impl ActiveSegment {
    /// What sealing it needs, once every block is acknowledged.
    fn sealable(self) -> seal::Sealable {
        seal::Sealable { id: self.id, meta: self.meta, writer: self.writer, last_block: self.acked_block }
    }
}

struct ActiveSegment {
    id: SegmentId,
    meta: Versioned<SegmentMetadata>,
    writer: Arc<dyn SegmentWriter>,
    next_entry: EntryId,
    next_block: i64,
    /// Last block whose result was Ok and all before it too.
    acked_block: i64,
    acked_entry: EntryId,
    bytes: u64,
    created: Instant,
}

pub(super) struct WriterTask {
    handle: LogHandle,
    health: Arc<Health>,
    /// This writer's epoch: every segment it creates is created in it.
    epoch: WriterEpoch,
    /// The etcd writer lock, in lock mode (conditional writes off); `None` when storage fences by itself.
    lock: Option<WriterLock>,
    /// Lock mode: how long one block upload may take, retries included (`fencePolicy.lockUploadTimeout`).
    lock_upload_timeout: Duration,
    /// Cancelled when the writer closes (or the client shuts down): a seal still retrying then gives up.
    closing: CancellationToken,
    next_segment: SegmentId,
    seg: Option<ActiveSegment>,
    pending: PendingQueue,
    /// The outcome slots of `pending`, in the same order.
    pending_acks: AckQueue,
    /// The buffer budget of `pending`.
    pending_budget: BudgetHeld,
    /// The writer's buffer budget (`segmentSyncPolicy.maxBytes`).
    budget: Arc<Semaphore>,
    pending_bytes: u64,
    in_flight: FuturesOrdered<BlockFuture>,
    rolling: bool,
    roll_started: Instant,
    /// The rolled segment's completion (footer, then Completed in metadata), running while the next
    /// segment fills: its data is all durable, only its seal is outstanding.
    completing: Option<Completion>,
    flush_size: u64,
    flush_entries: usize,
    interval: Duration,
    last_cut: Instant,
    /// Metadata of the next segment, created by this writer, whose storage writer failed to start.
    created_unstarted: Option<Versioned<SegmentMetadata>>,
    /// Service mode: the next segment's replica set, chosen before the current segment rolls, so that a
    /// writer without a full ensemble available goes on with its current segment (degraded) instead of
    /// stopping.
    placing: Option<Placing>,
    next_placement: Option<(SegmentId, QuorumInfo)>,
    /// No new choice before this instant (the last one failed).
    placement_retry_at: Option<Instant>,
}

impl WriterTask {
    /// The writer can no longer write: every later write fails with `kind`, and callers waiting for
    /// buffer room are woken to be told so (no release they wait for may ever come).
    fn lose(&self, kind: WoodpeckerErrorKind) {
        self.health.set(kind);
        self.budget.close();
    }

    pub(super) fn new(
        handle: LogHandle,
        next_segment: SegmentId,
        epoch: WriterEpoch,
        lock: Option<WriterLock>,
        health: Arc<Health>,
        budget: Arc<Semaphore>,
    ) -> Self {
        let cfg = &handle.shared.cfg.woodpecker;
        let sync = &cfg.logstore.segment_sync_policy;
        let interval = if cfg.storage.storage_type == woodpecker_core::config::StorageType::Local {
            sync.max_interval_for_local_storage
        } else {
            sync.max_interval
        };
        Self {
            flush_size: sync.max_flush_size.max(1),
            flush_entries: sync.max_entries.max(1) as usize,
            interval: interval.max(Duration::from_millis(1)),
            lock_upload_timeout: cfg.logstore.fence_policy.lock_upload_timeout,
            closing: handle.shared.shutdown.child_token(),
            handle,
            health,
            epoch,
            lock,
            next_segment,
            seg: None,
            pending: Default::default(),
            pending_acks: AckQueue::default(),
            pending_budget: BudgetHeld::new(budget.clone(), 0),
            budget,
            pending_bytes: 0,
            in_flight: FuturesOrdered::new(),
            rolling: false,
            roll_started: Instant::now(),
            completing: None,
            last_cut: Instant::now(),
            created_unstarted: None,
            placing: None,
            next_placement: None,
            placement_retry_at: None,
        }
    }

    fn log(&self) -> &str {
        &self.handle.name
    }

    /// Lock mode: whether this writer may still act as the lock holder now (before the lock's local
    /// deadline). Always true when storage fences by itself.
    fn holds_lock_now(&self) -> bool {
        self.lock.as_ref().is_none_or(|l| l.holds_at(tokio::time::Instant::now()))
    }

    /// The lock is (or may be) lost: nothing more is acknowledged or cut. Every entry this writer holds
    /// fails with `LockLost`; the segment is left for the next writer, which fences it after waiting out
    /// this writer's uploads.
    async fn lose_lock(&mut self, waiters: Option<AckQueue>) {
        tracing::warn!(log = %self.log(), "writer lock lost or past its deadline; failing every entry not acknowledged");
        self.lose(WoodpeckerErrorKind::LockLost);
        let log = self.handle.name.clone();
        let err = || WoodpeckerError::LockLost { log: log.clone() };
        if let Some(w) = waiters {
            w.fail(err);
        }
        while let Some((_, _, w, _)) = self.in_flight.next().await {
            w.fail(err);
        }
        self.fail_pending();
        if let Some(seg) = self.seg.take() {
            let _ = seg.writer.close().await;
        }
    }

    pub(super) async fn run(mut self, inbox: Arc<Inbox>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lock_watch = self.lock.as_ref().map(|l| l.watch());
        let shutdown = self.handle.shared.shutdown.clone();
        let mut closing = false;
        let mut flush_due = false;
        let mut flushing = false;
        let mut close_waiter: Option<oneshot::Sender<Result<()>>> = None;
        loop {
            let drained = inbox.drain(self.pending.spare());
            if let Some(reply) = drained.close {
                closing = true;
                self.closing.cancel();
                if close_waiter.is_none() {
                    close_waiter = reply;
                }
            }
            let budget = BudgetHeld::new(self.budget.clone(), drained.budget);
            self.take(drained.entries, drained.acks, budget, drained.bytes);
            flushing |= drained.flush;
            // Group commit: a block is cut when full, and a short one whenever no block is in flight, so a
            // lone write waits for one backend round trip; entries that arrive while blocks are in flight
            // gather into the next block, cut when it is full or when those blocks are done. A short block
            // is also cut when the timer finds none cut for maxInterval (an upper bound, e.g. behind a slow
            // upload), at a flush (until what was pending then is cut) and at close.
            let idle = self.idle();
            self.cut_blocks(closing || flush_due || flushing || idle).await;
            flush_due = false;
            flushing &= !self.pending.is_empty();
            if closing && self.pending.is_empty() && self.in_flight.is_empty() {
                break;
            }
            // Wake for the first new entry when idle; otherwise only once new entries complete a block with
            // what is pending; a full pending queue waits for a block slot instead (a finished upload wakes
            // the task).
            if self.idle() {
                inbox.rearm(1, 1);
            } else if self.pending_bytes >= self.flush_size || self.pending.len() >= self.flush_entries {
                inbox.rearm(self.flush_size, self.flush_entries);
            } else {
                inbox.rearm(self.flush_size - self.pending_bytes, self.flush_entries - self.pending.len());
            }
            tokio::select! {
                _ = inbox.wake.notified(), if !closing => {}
                Some(result) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_block_done(result).await;
                    self.maybe_roll().await;
                }
                (id, result) = async { self.completing.as_mut().expect("guarded by the condition").await },
                    if self.completing.is_some() =>
                {
                    self.completing = None;
                    let _ = self.on_completed(id, result);
                }
                (id, result) = async { self.placing.as_mut().expect("guarded by the condition").await },
                    if self.placing.is_some() =>
                {
                    self.placing = None;
                    self.on_placed(id, result);
                    self.maybe_roll().await;
                }
                _ = tick.tick() => {
                    self.maybe_roll().await;
                    flush_due = self.last_cut.elapsed() >= self.interval;
                }
                lost = async {
                    match lock_watch.as_mut() {
                        // A closed channel means the keep-alive task ended: the lock is no longer held.
                        Some(w) => match w.changed().await {
                            Ok(()) => !*w.borrow(),
                            Err(_) => true,
                        },
                        None => std::future::pending().await,
                    }
                } => {
                    if lost {
                        self.lose_lock(None).await;
                        lock_watch = None;
                    }
                }
                _ = shutdown.cancelled(), if !closing => {
                    self.lose(WoodpeckerErrorKind::Closed("the client was closed".into()));
                    self.fail_pending();
                    closing = true;
                }
            }
        }
        // Entries queued after the last turn are not written.
        let mut late = AckQueue::default();
        let (acks, budget) = inbox.stop();
        drop(BudgetHeld::new(self.budget.clone(), budget));
        late.push(acks);
        late.fail(|| {
            self.health.error(self.log()).unwrap_or_else(|| WoodpeckerError::WriterClosed {
                log: self.handle.name.clone(),
                reason: "the writer was closed".into(),
            })
        });
        let res = self.finish().await;
        if let Some(done) = close_waiter {
            let _ = done.send(res);
        }
    }

    /// Completes the current segment and releases the lock at close.
    async fn finish(&mut self) -> Result<()> {
        self.await_completion().await;
        let res = if self.seg.is_some() && self.health.error(self.log()).is_none() {
            self.complete_current().await
        } else {
            if let Some(seg) = self.seg.take() {
                let _ = seg.writer.close().await;
            }
            // A lost writer says why at close: its segment was not completed by it.
            self.health.loss(self.log()).map_or(Ok(()), Err)
        };
        if let Some(lock) = self.lock.take() {
            let _ = lock.release().await;
        }
        res
    }

    fn fail_pending(&mut self) {
        let log = self.log().to_owned();
        let err = || {
            self.health
                .error(&log)
                .unwrap_or(WoodpeckerError::WriterClosed { log: log.clone(), reason: "failed".into() })
        };
        self.pending.clear();
        let all = self.pending_budget.permits;
        drop(self.pending_budget.split(all));
        std::mem::take(&mut self.pending_acks).fail(err);
        self.pending_bytes = 0;
    }

    /// Moves entries from the inbox to the pending queue (or fails them once the writer cannot write).
    fn take(&mut self, entries: VecDeque<Pending>, acks: AckRange, budget: BudgetHeld, bytes: u64) {
        if entries.is_empty() {
            self.pending.recycle(entries);
            return;
        }
        if self.health.error(self.log()).is_some() {
            let mut failed = AckQueue::default();
            failed.push(acks);
            failed.fail(|| self.health.error(self.log()).unwrap_or(WoodpeckerError::ClientClosed));
            self.pending.recycle(entries);
            return;
        }
        self.pending_acks.push(acks);
        self.pending_budget.absorb(budget);
        self.pending.push(entries);
        self.pending_bytes += bytes;
    }

    /// No block is in flight and none is held back by a roll: the next entry can be cut at once.
    fn idle(&self) -> bool {
        self.in_flight.is_empty() && !self.rolling
    }

    fn max_parallel(&self) -> usize {
        self.seg.as_ref().map(|s| s.writer.max_parallel_blocks().max(1)).unwrap_or(1)
    }

    /// Cuts pending entries into blocks while there is room in flight. `all` also cuts a final short block.
    async fn cut_blocks(&mut self, all: bool) {
        loop {
            if self.pending.is_empty() || self.rolling {
                return;
            }
            if let Some(e) = self.health.error(self.log()) {
                let _ = e;
                self.fail_pending();
                return;
            }
            let full = self.pending_bytes >= self.flush_size || self.pending.len() >= self.flush_entries;
            if !full && !all {
                return;
            }
            if self.seg.is_none()
                && let Err(e) = self.start_segment().await
            {
                tracing::warn!(log = %self.log(), error = %e, "cannot start a segment");
                let lost = matches!(&e, WoodpeckerError::WriterFenced { .. });
                let msg = e.to_string();
                let log = self.handle.name.clone();
                self.pending.clear();
                let all = self.pending_budget.permits;
                drop(self.pending_budget.split(all));
                std::mem::take(&mut self.pending_acks).fail(|| {
                    if lost {
                        WoodpeckerError::WriterFenced { log: log.clone(), reason: msg.clone() }
                    } else {
                        WoodpeckerError::WriterClosed { log: log.clone(), reason: msg.clone() }
                    }
                });
                self.pending_bytes = 0;
                return;
            }
            if self.in_flight.len() >= self.max_parallel() {
                return;
            }
            // Lock mode: no block is cut at or after the lock's local deadline.
            if !self.holds_lock_now() {
                self.lose_lock(None).await;
                return;
            }
            // Blocks are cut at maxFlushSize on every backend. Grouping everything queued behind a sync into
            // one larger block (up to 8x) was measured slower on local files: a multi-megabyte block falls
            // out of the CPU cache between encoding and the write, and the sync it saves is cheap.
            let (cap_bytes, cap_entries) = (self.flush_size, self.flush_entries);
            let Some(seg) = self.seg.as_mut() else { return };
            // The block's entries are counted first, so that they move into a vector of the exact size (a
            // growing one was reallocated a dozen times per block, and its last size is above glibc's mmap
            // threshold: fresh pages for every block).
            let mut bytes = 0u64;
            // The entries' buffer budget, released in one step when the upload ends (the block's buffers
            // are gone by then) instead of entry by entry.
            let mut permits = 0usize;
            let mut count = 0usize;
            for p in self.pending.iter() {
                if count > 0 && (bytes >= cap_bytes || count >= cap_entries) {
                    break;
                }
                bytes += p.data.len() as u64;
                permits += p.budget as usize;
                count += 1;
            }
            let entries = self.pending.take_front(count);
            self.pending_bytes -= bytes;
            let waiters = self.pending_acks.take_front(entries.len());
            let permit = self.pending_budget.split(permits);
            debug_assert_eq!(waiters.len(), entries.len(), "every pending entry has its outcome slot");
            tracing::trace!(block = seg.next_block, entries = entries.len(), bytes, all, "cut block");
            let block = BlockToWrite { block_id: seg.next_block, first_entry_id: seg.next_entry, entries };
            seg.next_block += 1;
            seg.next_entry += block.entries.len() as i64;
            seg.bytes += bytes;
            let writer = seg.writer.clone();
            let (block_id, first) = (block.block_id, block.first_entry_id);
            // Lock mode: an upload is abandoned after lockUploadTimeout, which bounds how late it can land.
            let limit = self.lock.as_ref().map(|_| (self.lock_upload_timeout, self.handle.seg_ref(seg.id)));
            self.in_flight.push_back(Box::pin(async move {
                let r = match limit {
                    None => writer.write_block(block).await,
                    Some((after, segment)) => {
                        tokio::time::timeout(after, writer.write_block(block)).await.unwrap_or_else(|_| {
                            Err(SegmentError::TimedOut { segment, what: format!("upload of block {block_id}"), after })
                        })
                    }
                };
                drop(permit);
                (block_id, first, waiters, r)
            }));
            self.last_cut = Instant::now();
        }
    }

    async fn start_segment(&mut self) -> Result<()> {
        if let Some(lock) = &self.lock
            && !lock.is_valid()
        {
            self.lose(WoodpeckerErrorKind::LockLost);
            return Err(WoodpeckerError::LockLost { log: self.log().to_owned() });
        }
        let id = self.next_segment;
        // A segment whose metadata this writer created but whose storage writer failed to start is taken
        // up again as it is: creating it anew would write other bytes (a new create time) at the same key,
        // which reads as another writer's segment, and the writer would fence itself.
        let created = match self.created_unstarted.take() {
            Some(created) if created.value.seg_no == id => created,
            _ => {
                let quorum = match self.next_placement.take() {
                    Some((placed, quorum)) if placed == id => Some(quorum),
                    _ => self.handle.shared.backend.place(self.handle.seg_ref(id)).await?,
                };
                let meta = segment_meta::new_segment(id, quorum);
                match segment_meta::create_segment(&self.handle, &meta, &self.epoch).await {
                    Ok(v) => v,
                    Err(e @ WoodpeckerError::WriterFenced { .. }) => {
                        if let WoodpeckerError::WriterFenced { reason, .. } = &e {
                            self.lose(WoodpeckerErrorKind::Fenced(reason.clone()));
                        }
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let sref = self.handle.located(&created.value);
        let writer = match self.handle.shared.backend.create_writer(sref).await {
            Ok(w) => w,
            Err(e) => {
                self.created_unstarted = Some(created);
                return Err(e.into());
            }
        };
        tracing::debug!(log = %self.log(), segment = id, since_roll = ?self.roll_started.elapsed(), "segment started");
        self.next_segment = id + 1;
        self.seg = Some(ActiveSegment {
            id,
            meta: created,
            writer: Arc::from(writer),
            next_entry: 0,
            next_block: 0,
            acked_block: -1,
            acked_entry: -1,
            bytes: 0,
            created: Instant::now(),
        });
        Ok(())
    }

    async fn on_block_done(&mut self, (block_id, first, waiters, result): BlockDone) {
        if self.seg.is_none() {
            // The segment was abandoned after an earlier failure; these results were already decided.
            return;
        }
        // Lock mode: no acknowledgement at or after the lock's local deadline; a later writer may own the
        // segment by now.
        if !self.holds_lock_now() {
            self.lose_lock(Some(waiters)).await;
            return;
        }
        let Some(seg) = self.seg.as_mut() else { return };
        match result {
            Ok(()) if block_id == seg.acked_block + 1 => {
                seg.acked_block = block_id;
                seg.acked_entry = first + waiters.len() as i64 - 1;
                let sid = seg.id;
                waiters.publish(|i| Ok(LogMessageId::new(sid, first + i as i64)));
            }
            Ok(()) => {
                // Cannot happen with ordered results; treat as a failure rather than acknowledge out of order.
                let segment = self.handle.seg_ref(seg.id);
                self.fail_segment(
                    first,
                    waiters,
                    SegmentError::OutOfOrder { segment, block_id, first_entry_id: first },
                )
                .await;
            }
            Err(e) => self.fail_segment(first, waiters, e).await,
        }
    }

    /// A block failed: decide the fate of it and of every later in-flight block, then move on.
    async fn fail_segment(&mut self, first: EntryId, waiters: AckQueue, error: SegmentError) {
        let Some(seg) = self.seg.take() else { return };
        // Every block from the failed one on, with its first entry id.
        let mut all: Vec<(EntryId, AckQueue)> = vec![(first, waiters)];
        while let Some((_, f, ws, _)) = self.in_flight.next().await {
            all.push((f, ws));
        }
        if !self.holds_lock_now() {
            // Lock mode, past the deadline: the segment is the next writer's to seal.
            self.seg = Some(seg);
            for (_, w) in all {
                w.fail(|| WoodpeckerError::LockLost { log: self.handle.name.clone() });
            }
            self.lose_lock(None).await;
            return;
        }
        let sref = self.handle.seg_ref(seg.id);
        if error.is_not_writable() {
            let reason = error.to_string();
            tracing::warn!(log = %self.log(), segment = seg.id, %reason, "writer fenced");
            self.lose(WoodpeckerErrorKind::Fenced(reason));
            for (_, w) in all {
                w.fail(|| {
                    self.health.error(&self.handle.name).unwrap_or(WoodpeckerError::WriterFenced {
                        log: self.handle.name.clone(),
                        reason: "fenced".into(),
                    })
                });
            }
            self.fail_pending();
            return;
        }
        tracing::warn!(log = %self.log(), segment = seg.id, %error, "block upload failed; sealing the segment at its durable end");
        // Fence our own segment: whatever is durable now is exactly what readers will ever see.
        let backend = self.handle.shared.backend.clone();
        let sealed = async {
            let last = backend.fence(sref).await?;
            let summary = backend.finalize(sref).await?;
            Ok::<_, SegmentError>((last, summary))
        }
        .await;
        match sealed {
            Ok((last, summary)) => {
                // Acknowledgements form a prefix: what is durable up to the seal succeeds, everything after
                // it fails (in the failed blocks, queued behind them, or still to come), and the writer is
                // lost, so that no later entry can succeed ahead of one that failed. A new writer goes on
                // after the sealed end.
                let reason = format!(
                    "a block upload failed ({error}); segment {} was sealed at entry {last}, and no entry after it is written by this writer",
                    seg.id
                );
                self.lose(WoodpeckerErrorKind::Closed(reason.clone()));
                let log = self.handle.name.clone();
                for (f, w) in all {
                    w.publish(|i| {
                        let id = f + i as i64;
                        if id <= last {
                            Ok(LogMessageId::new(seg.id, id))
                        } else {
                            Err(WoodpeckerError::WriterClosed { log: log.clone(), reason: reason.clone() })
                        }
                    });
                }
                self.fail_pending();
                if let Err(e) =
                    segment_meta::complete_segment(&self.handle, seg.meta, summary.last_entry_id, summary.size, true)
                        .await
                {
                    tracing::warn!(log = %self.log(), segment = seg.id, error = %e, "cannot complete the sealed segment; the next writer will");
                }
            }
            Err(fence_err) => {
                let reason = format!("block upload failed ({error}) and the segment could not be sealed ({fence_err})");
                self.lose(WoodpeckerErrorKind::Closed(reason));
                for (_, w) in all {
                    w.fail(|| self.health.error(&self.handle.name).unwrap_or(WoodpeckerError::ClientClosed));
                }
                self.fail_pending();
            }
        }
    }

    fn should_roll(&self) -> bool {
        let Some(seg) = &self.seg else { return false };
        let policy = &self.handle.shared.cfg.woodpecker.client.segment_rolling_policy;
        seg.bytes >= policy.max_size
            || seg.next_block as u64 >= policy.max_blocks
            || (seg.next_entry > 0 && seg.created.elapsed() >= policy.max_interval)
            || seg.writer.roll_reason().is_some()
    }

    /// Whether the next segment's placement is settled. Segments on replicas (service mode) roll only once
    /// the next replica set is chosen: until then the current segment goes on, degraded if it lost a
    /// replica, and a choice runs in the background (again after a pause when one fails).
    fn next_is_placed(&mut self) -> bool {
        let Some(seg) = &self.seg else { return true };
        let replicated = seg.meta.value.quorum.as_ref().is_some_and(|q| q.id > 0);
        if !replicated || self.next_placement.as_ref().is_some_and(|(id, _)| *id == self.next_segment) {
            return true;
        }
        if self.placing.is_some() || self.placement_retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        let (id, backend) = (self.next_segment, self.handle.shared.backend.clone());
        let sref = self.handle.seg_ref(id);
        self.placing = Some(Box::pin(async move { (id, backend.place(sref).await) }));
        false
    }

    fn on_placed(&mut self, id: SegmentId, result: std::result::Result<Option<QuorumInfo>, SegmentError>) {
        match result {
            Ok(Some(quorum)) => {
                self.placement_retry_at = None;
                self.next_placement = Some((id, quorum));
            }
            Ok(None) => self.placement_retry_at = None,
            Err(e) => {
                let why = self.seg.as_ref().and_then(|s| s.writer.roll_reason());
                tracing::warn!(
                    log = %self.log(),
                    segment = id,
                    error = %e,
                    degraded = why.as_deref().unwrap_or("no"),
                    "cannot choose the next segment's replicas; the current segment goes on"
                );
                self.placement_retry_at = Some(Instant::now() + PLACEMENT_RETRY);
            }
        }
    }

    async fn maybe_roll(&mut self) {
        if !self.rolling && self.should_roll() && self.next_is_placed() {
            self.rolling = true;
            self.roll_started = Instant::now();
        }
        if self.rolling && self.in_flight.is_empty() {
            // Every block of the segment is durable: the next segment may take data now, and the seal
            // (footer, metadata) runs beside it. A reader moves on only once the seal is done.
            tracing::debug!(log = %self.log(), drained = ?self.roll_started.elapsed(), "segment rolled");
            self.await_completion().await;
            if let Some(seg) = self.seg.take() {
                let sealing = seal::seal_rolled(self.handle.clone(), seg.sealable(), self.closing.clone());
                self.completing = Some(Box::pin(sealing));
            }
            self.rolling = false;
        }
    }

    /// Finalizes the current segment after its last block and marks it Completed.
    async fn complete_current(&mut self) -> Result<()> {
        self.await_completion().await;
        let Some(seg) = self.seg.take() else { return Ok(()) };
        let (id, result) = seal::seal_rolled(self.handle.clone(), seg.sealable(), self.closing.clone()).await;
        self.on_completed(id, result)
    }

    /// Waits for the previous segment's seal, if one is still running.
    async fn await_completion(&mut self) {
        if let Some(c) = self.completing.take() {
            let (id, result) = c.await;
            let _ = self.on_completed(id, result);
        }
    }

    /// A seal ended. A fenced footer or a metadata failure stops the writer (the next writer's recovery
    /// seals the segment); any other footer failure leaves the segment Active for recovery and goes on.
    fn on_completed(&mut self, id: SegmentId, result: std::result::Result<(), SealError>) -> Result<()> {
        let err = match result {
            Ok(()) => return Ok(()),
            Err(SealError::Fenced(e)) => {
                self.lose(WoodpeckerErrorKind::Fenced(e.to_string()));
                self.fail_pending();
                e
            }
            // Given up at close or client shutdown: the segment stays Active, and the next writer seals it.
            Err(SealError::GaveUp(e)) => e,
        };
        tracing::warn!(log = %self.log(), segment = id, error = %err, "segment completion failed");
        Err(err)
    }
}
