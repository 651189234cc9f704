//! The log writer: assigns positions, groups entries into blocks, uploads blocks in parallel and
//! acknowledges strictly in entry order.
//!
//! ```text
//!  write_async ──(byte budget: waits when maxBytes are buffered)──▶ channel ──▶ writer task
//!
//!  writer task:  pending entries ──cut at maxFlushSize / maxInterval──▶ block n ──▶ upload ┐ up to
//!                                                                       block n+1 ─▶ upload ├ maxFlushThreads
//!                                                                       block n+2 ─▶ upload ┘ in flight
//!                results are taken in block order: block n is acknowledged (every entry's future resolves
//!                with its id) only after blocks 0..n-1 were; a failed block fails itself and every later one.
//! ```
//!
//! Entry ids are given when a block is cut, so entries still pending when a segment rolls simply go to
//! the next segment. A segment rolls at `segmentRollingPolicy.maxSize` / `maxBlocks` / `maxInterval`,
//! checked on every acknowledgement and on a timer (idle segments roll too).
//!
//! When a block upload fails for a reason other than being fenced, the writer fences its own segment to
//! learn exactly which entries are durable: those are reported successful, every later entry fails, and
//! the writer is lost (`WriterClosed`, naming the failure). Acknowledgements therefore always form a
//! prefix of what was written: an application that retries the failed entries with a new writer puts
//! them after the last acknowledged one, never after later entries. (Upstream fails the whole writer
//! without telling which entries were durable.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{Notify, Semaphore, TryAcquireError, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use woodpecker_core::entry::EntryBytes;
use woodpecker_core::ids::{EntryId, LogMessageId, SegmentId};
use woodpecker_meta::{MetaError, Versioned, WriterEpoch, WriterLock};
use woodpecker_proto::meta::SegmentMetadata;
use woodpecker_storage::segment::{BlockToWrite, SegmentError, SegmentWriter};

pub use crate::ack::AppendFuture;
use crate::ack::{AckChunk, AckQueue, AckRange, AckWatch};
use crate::error::{Result, WoodpeckerError};
use crate::handle::{LogHandle, now_ms};
use crate::message::WriteMessage;
use crate::seal::{self, SealError};
use crate::segment_meta;

/// Where `write_async` leaves entries for the writer task. The task is woken only when a block's worth
/// has accumulated (or to close): it drains the inbox whole on every turn of its loop and on its timer,
/// so waking it per entry would cost a cross-thread wake-up per entry for nothing.
#[derive(Debug)]
struct Inbox {
    state: Mutex<InboxState>,
    wake: Notify,
    /// The log's name, for the acknowledgement chunks' error messages.
    log: Arc<str>,
}

#[derive(Debug)]
struct InboxState {
    entries: VecDeque<Pending>,
    /// The outcome slots of `entries`, in order.
    chunk: Arc<AckChunk>,
    /// Budget permits taken for `entries`.
    budget: usize,
    /// The slot of the last entry handed to the task, once one was.
    last_taken: Option<(Arc<AckChunk>, u32)>,
    /// `flush` asked the task to cut everything pending now.
    flush: bool,
    bytes: u64,
    /// The task was woken and has not drained since.
    signaled: bool,
    /// Wake the task once this many bytes or entries are queued: what its pending entries lack of a block.
    need_bytes: u64,
    need_entries: usize,
    /// Close requested: by `close` (with a reply), or because every `LogWriter` is gone (without).
    close: Option<Option<oneshot::Sender<Result<()>>>>,
    /// The task has stopped taking entries.
    stopped: bool,
}

impl InboxState {
    fn new(log: &Arc<str>) -> Self {
        Self {
            entries: VecDeque::new(),
            chunk: AckChunk::new(log.clone()),
            budget: 0,
            last_taken: None,
            flush: false,
            bytes: 0,
            signaled: false,
            need_bytes: 0,
            need_entries: 0,
            close: None,
            stopped: false,
        }
    }

    /// Hands the queued entries' outcome slots over and starts a new chunk for the next ones.
    fn take_acks(&mut self, log: &Arc<str>) -> AckRange {
        let len = self.entries.len() as u32;
        if len == 0 {
            return AckRange::new(self.chunk.clone(), 0);
        }
        let chunk = std::mem::replace(&mut self.chunk, AckChunk::new(log.clone()));
        chunk.reserve(len as usize);
        self.last_taken = Some((chunk.clone(), len - 1));
        AckRange::new(chunk, len)
    }
}

/// What the writer task takes out of the inbox in one turn.
struct Drained {
    entries: VecDeque<Pending>,
    acks: AckRange,
    budget: usize,
    flush: bool,
    bytes: u64,
    close: Option<Option<oneshot::Sender<Result<()>>>>,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new(log: Arc<str>) -> Self {
        Self { state: Mutex::new(InboxState::new(&log)), wake: Notify::new(), log }
    }

    /// Queues an entry and returns the future of its outcome; gives the entry back when the writer task
    /// has stopped.
    fn push(&self, entry: Pending) -> std::result::Result<AppendFuture, Pending> {
        let mut st = self.lock();
        if st.stopped {
            return Err(entry);
        }
        st.bytes += entry.data.len() as u64;
        st.budget += entry.budget as usize;
        let future = AppendFuture::new(st.chunk.clone(), st.entries.len() as u32);
        st.entries.push_back(entry);
        self.wake_if_needed(st);
        Ok(future)
    }

    fn wake_if_needed(&self, mut st: std::sync::MutexGuard<'_, InboxState>) {
        let wake = !st.signaled && (st.bytes >= st.need_bytes || st.entries.len() >= st.need_entries);
        st.signaled |= wake;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Sets how much the task waits for before it is woken (and wakes it if that is queued already).
    fn rearm(&self, need_bytes: u64, need_entries: usize) {
        let mut st = self.lock();
        st.need_bytes = need_bytes.max(1);
        st.need_entries = need_entries.max(1);
        self.wake_if_needed(st);
    }

    /// Asks the task to cut everything queued into blocks now; returns a watch on the last entry queued
    /// so far (`None` when there never was one).
    fn flush(&self) -> Option<AckWatch> {
        let mut st = self.lock();
        let (chunk, slot) = match st.entries.len() {
            0 => st.last_taken.clone()?,
            n => (st.chunk.clone(), n as u32 - 1),
        };
        st.flush = true;
        drop(st);
        self.wake.notify_one();
        Some(AckWatch::new(chunk, slot))
    }

    /// Asks the task to flush and stop; false when it has stopped already.
    fn close(&self, reply: Option<oneshot::Sender<Result<()>>>) -> bool {
        let mut st = self.lock();
        if st.stopped {
            return false;
        }
        if st.close.as_ref().is_none_or(Option::is_none) {
            st.close = Some(reply);
        }
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Takes everything queued, leaving `spare` (empty, with its capacity) as the new queue.
    fn drain(&self, spare: VecDeque<Pending>) -> Drained {
        let mut st = self.lock();
        st.signaled = false;
        let bytes = std::mem::take(&mut st.bytes);
        let acks = st.take_acks(&self.log);
        let budget = std::mem::take(&mut st.budget);
        let flush = std::mem::take(&mut st.flush);
        let entries = std::mem::replace(&mut st.entries, spare);
        Drained { entries, acks, budget, flush, bytes, close: st.close.take() }
    }

    /// Stops taking entries; returns the outcome slots and budget permits of what was queued after the
    /// last drain.
    fn stop(&self) -> (AckRange, usize) {
        let mut st = self.lock();
        st.stopped = true;
        st.bytes = 0;
        let acks = st.take_acks(&self.log);
        st.entries.clear();
        (acks, std::mem::take(&mut st.budget))
    }
}

/// Why the writer can no longer write; set once, read on every call (a flag keeps the healthy path lock-free).
#[derive(Debug, Default)]
struct Health {
    is_lost: AtomicBool,
    lost: Mutex<Option<WoodpeckerErrorKind>>,
}

#[derive(Debug, Clone)]
enum WoodpeckerErrorKind {
    Fenced(String),
    LockLost,
    Closed(String),
    /// `close` was called: not a loss.
    ClosedByApplication,
}

impl Health {
    fn set(&self, kind: WoodpeckerErrorKind) {
        if let Ok(mut g) = self.lost.lock()
            && g.is_none()
        {
            *g = Some(kind);
            self.is_lost.store(true, Ordering::Release);
        }
    }

    fn error(&self, log: &str) -> Option<WoodpeckerError> {
        if !self.is_lost.load(Ordering::Acquire) {
            return None;
        }
        let g = self.lost.lock().ok()?;
        g.as_ref().map(|k| to_error(k, log))
    }

    /// Why the writer was lost, unless it was simply closed by the application (or is still healthy).
    fn loss(&self, log: &str) -> Option<WoodpeckerError> {
        if !self.is_lost.load(Ordering::Acquire) {
            return None;
        }
        let g = self.lost.lock().ok()?;
        g.as_ref().filter(|k| !matches!(k, WoodpeckerErrorKind::ClosedByApplication)).map(|k| to_error(k, log))
    }
}

fn to_error(kind: &WoodpeckerErrorKind, log: &str) -> WoodpeckerError {
    match kind {
        WoodpeckerErrorKind::Fenced(reason) => {
            WoodpeckerError::WriterFenced { log: log.to_owned(), reason: reason.clone() }
        }
        WoodpeckerErrorKind::LockLost => WoodpeckerError::LockLost { log: log.to_owned() },
        WoodpeckerErrorKind::Closed(reason) => {
            WoodpeckerError::WriterClosed { log: log.to_owned(), reason: reason.clone() }
        }
        WoodpeckerErrorKind::ClosedByApplication => {
            WoodpeckerError::WriterClosed { log: log.to_owned(), reason: "closed by the application".into() }
        }
    }
}

/// Writes to one log. At most one writer per log makes progress; see [`LogHandle::open_writer`].
#[derive(Debug)]
pub struct LogWriter {
    handle: LogHandle,
    inbox: Arc<Inbox>,
    budget: Arc<Semaphore>,
    budget_bytes: u64,
    health: Arc<Health>,
    task: Mutex<Option<JoinHandle<()>>>,
    auditor: Option<JoinHandle<()>>,
}

impl LogWriter {
    pub(crate) async fn open(handle: LogHandle) -> Result<Self> {
        let shared = handle.shared.clone();
        let lock = if shared.self_fencing {
            None
        } else {
            match shared.meta.acquire_writer_lock(&handle.name).await {
                Ok(l) => Some(l),
                Err(MetaError::LockHeld { .. }) => return Err(WoodpeckerError::LockHeld { log: handle.name.clone() }),
                Err(e) => return Err(e.into()),
            }
        };
        // The epoch is opened before the segments are listed: any segment an earlier writer can still
        // create is created before this put, so the listing below sees it and fences it.
        let holder = format!("pid {} at {} ms", std::process::id(), now_ms());
        let epoch = shared.meta.open_writer_epoch(&handle.name, handle.log_id, &holder).await?;
        // Lock mode: the previous holder may have acted as the holder until the lock's TTL after we took it,
        // and its uploads end at most lockUploadTimeout after that. A segment it left Active is fenced only
        // then, so that no upload of the old writer can land after the fence.
        let upload_timeout = shared.cfg.woodpecker.logstore.fence_policy.lock_upload_timeout;
        let takeover = lock.as_ref().map(|l| l.acquired_at() + l.session_ttl() + upload_timeout);
        let next_segment = seal::recover_active_segments(&handle, takeover).await?;
        let sync = &shared.cfg.woodpecker.logstore.segment_sync_policy;
        let budget_bytes = sync.max_bytes.max(1);
        let budget = Arc::new(Semaphore::new(budget_bytes.min(Semaphore::MAX_PERMITS as u64) as usize));
        let health = Arc::new(Health::default());
        let log: Arc<str> = Arc::from(handle.name.as_str());
        let inbox = Arc::new(Inbox::new(log));
        let task = WriterTask::new(handle.clone(), next_segment, epoch, lock, health.clone(), budget.clone());
        let task = tokio::spawn(task.run(inbox.clone()));
        let auditor = Some(crate::maintenance::spawn_auditor(handle.clone()));
        Ok(Self { handle, inbox, budget, budget_bytes, health, task: Mutex::new(Some(task)), auditor })
    }

    /// The log this writer writes to.
    pub fn log_name(&self) -> &str {
        &self.handle.name
    }

    fn check(&self) -> Result<()> {
        self.handle.shared.check_open()?;
        match self.health.error(&self.handle.name) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queues a message and returns a future that resolves once it is durable.
    ///
    /// Awaiting this call waits for room in the write buffer (`segmentSyncPolicy.maxBytes`), which is how
    /// a fast producer is slowed down instead of growing memory. Futures resolve in call order.
    pub async fn write_async(&self, msg: WriteMessage) -> Result<AppendFuture> {
        self.check()?;
        if msg.payload.is_empty() && msg.properties.is_empty() {
            return Err(WoodpeckerError::EmptyMessage);
        }
        let data = msg.into_entry();
        let max = self.handle.shared.cfg.woodpecker.client.max_entry_size;
        let size = data.len() as u64;
        if size > max {
            return Err(WoodpeckerError::EntryTooLarge { size, max });
        }
        // An entry larger than the whole budget still goes through alone (it takes the whole budget).
        let want = size.max(1).min(self.budget_bytes).min(Semaphore::MAX_PERMITS as u64) as u32;
        let closed = || WoodpeckerError::WriterClosed { log: self.handle.name.clone(), reason: "closed".into() };
        // The permits are forgotten here and owned by the writer task from the inbox on ([`BudgetHeld`]):
        // no reference-counted permit object per entry.
        // A closed budget means the writer was closed or lost: say which.
        let refused = || self.check().err().unwrap_or_else(closed);
        match self.budget.try_acquire_many(want) {
            Ok(p) => p.forget(),
            Err(TryAcquireError::Closed) => return Err(refused()),
            Err(TryAcquireError::NoPermits) => {
                self.budget.acquire_many(want).await.map_err(|_| refused())?.forget();
                // The wait may have been long: refuse here what the writer can no longer take. (Without a
                // wait, the check above is as fresh; an entry that still slips past a writer lost meanwhile
                // is failed by the writer task through its future.)
                if let Err(e) = self.check() {
                    self.budget.add_permits(want as usize);
                    return Err(e);
                }
            }
        }
        self.inbox.push(Pending { data, budget: want }).map_err(|_| {
            self.budget.add_permits(want as usize);
            WoodpeckerError::WriterClosed { log: self.handle.name.clone(), reason: "the writer task stopped".into() }
        })
    }

    /// Writes what is buffered now instead of waiting for a full block or `maxInterval`, and resolves
    /// once every entry written before the call is durable or has failed (each entry's own future says
    /// which). Fails when the writer can no longer write.
    pub async fn flush(&self) -> Result<()> {
        self.check()?;
        if let Some(last) = self.inbox.flush() {
            last.await;
        }
        self.check()
    }

    /// Writes a message and waits until it is durable; returns its position.
    pub async fn write(&self, msg: WriteMessage) -> Result<LogMessageId> {
        self.write_async(msg).await?.await
    }

    /// Flushes what is buffered, completes the current segment and releases the writer.
    ///
    /// Entries already queued are written (or fail) before this returns; later writes fail.
    ///
    /// Fails when the writer was lost before (fenced, lock lost, a failed upload: the error says which),
    /// or when its task ended without reporting; `Ok` when the segment was completed (or there was none)
    /// and every queued entry was decided, and for a writer closed already.
    pub async fn close(&self) -> Result<()> {
        let (done, rx) = oneshot::channel();
        let res = if self.inbox.close(Some(done)) {
            rx.await.unwrap_or_else(|_| {
                Err(WoodpeckerError::WriterClosed {
                    log: self.handle.name.clone(),
                    reason: "the writer task ended without completing the segment".into(),
                })
            })
        } else {
            self.health.loss(&self.handle.name).map_or(Ok(()), Err)
        };
        self.health.set(WoodpeckerErrorKind::ClosedByApplication);
        self.budget.close();
        let task = self.task.lock().ok().and_then(|mut g| g.take());
        let joined = match task {
            Some(t) => t.await,
            None => Ok(()),
        };
        if let Some(a) = &self.auditor {
            a.abort();
        }
        match joined {
            Err(e) => Err(WoodpeckerError::WriterClosed {
                log: self.handle.name.clone(),
                reason: format!("the writer task failed: {e}"),
            }),
            Ok(()) => res,
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Every handle is gone: the task flushes what was queued, then stops.
        self.inbox.close(None);
        if let Some(a) = &self.auditor {
            a.abort();
        }
    }
}

/// Entries the writer task took from the inbox and has not cut into blocks yet, kept as the batches the
/// inbox handed over instead of being copied into one queue. A backlog is a few batches of about a block
/// each, and emptied batches go back to the inbox as its next queue (started from the beginning of their
/// buffer), so the same few hundred KB are written and read again, not a ring as large as the largest
/// backlog ever seen (megabytes, cycled through out of cache, entry by entry).
#[derive(Default)]
struct PendingQueue {
    batches: VecDeque<VecDeque<Pending>>,
    len: usize,
    /// Emptied batches, for the inbox.
    spares: Vec<VecDeque<Pending>>,
}

/// Emptied batches kept for reuse.
const SPARE_BATCHES: usize = 4;

impl PendingQueue {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, batch: VecDeque<Pending>) {
        if batch.is_empty() {
            self.recycle(batch);
            return;
        }
        self.len += batch.len();
        self.batches.push_back(batch);
    }

    /// An empty queue for the inbox: an emptied batch when there is one.
    fn spare(&mut self) -> VecDeque<Pending> {
        self.spares.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut batch: VecDeque<Pending>) {
        // `clear` also moves the queue's start back to the beginning of its buffer.
        batch.clear();
        if self.spares.len() < SPARE_BATCHES {
            self.spares.push(batch);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.batches.iter().flatten()
    }

    /// Removes the first `n` entries (at most all of them) and returns their data.
    fn take_front(&mut self, n: usize) -> Vec<EntryBytes> {
        let n = n.min(self.len);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.batches.front_mut() else { break };
            let want = n - out.len();
            if front.len() <= want {
                out.extend(front.drain(..).map(|p| p.data));
                if let Some(batch) = self.batches.pop_front() {
                    self.recycle(batch);
                }
            } else {
                out.extend(front.drain(..want).map(|p| p.data));
            }
        }
        self.len -= out.len();
        out
    }

    fn clear(&mut self) {
        while let Some(batch) = self.batches.pop_front() {
            self.recycle(batch);
        }
        self.len = 0;
    }
}

#[derive(Debug)]
struct Pending {
    data: EntryBytes,
    /// Buffer budget taken for it (permits of the writer's semaphore, forgotten by `write_async`).
    budget: u32,
}

/// Buffer budget the writer task holds for entries it has not written yet; given back to the
/// semaphore when dropped (a block's part when its upload ends, the rest when entries fail).
#[derive(Debug)]
struct BudgetHeld {
    semaphore: Arc<Semaphore>,
    permits: usize,
}

impl BudgetHeld {
    fn new(semaphore: Arc<Semaphore>, permits: usize) -> Self {
        Self { semaphore, permits }
    }

    /// Takes over what `other` holds.
    fn absorb(&mut self, mut other: BudgetHeld) {
        self.permits += std::mem::take(&mut other.permits);
    }

    /// Splits off `permits` of what is held.
    fn split(&mut self, permits: usize) -> Self {
        let permits = permits.min(self.permits);
        self.permits -= permits;
        Self { semaphore: self.semaphore.clone(), permits }
    }
}

impl Drop for BudgetHeld {
    fn drop(&mut self) {
        if self.permits > 0 {
            self.semaphore.add_permits(self.permits);
        }
    }
}

/// What a finished block upload reports: block id, first entry id, the entries' acknowledgements, result.
type BlockDone = (i64, EntryId, AckQueue, std::result::Result<(), SegmentError>);

type BlockFuture = Pin<Box<dyn Future<Output = BlockDone> + Send>>;

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

struct WriterTask {
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
}

impl WriterTask {
    /// The writer can no longer write: every later write fails with `kind`, and callers waiting for
    /// buffer room are woken to be told so (no release they wait for may ever come).
    fn lose(&self, kind: WoodpeckerErrorKind) {
        self.health.set(kind);
        self.budget.close();
    }

    fn new(
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

    async fn run(mut self, inbox: Arc<Inbox>) {
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
            // A block is cut when full; a short one when the timer finds none cut for maxInterval, at a
            // flush (until what was pending then is cut) and at close.
            self.cut_blocks(closing || flush_due || flushing).await;
            flush_due = false;
            flushing &= !self.pending.is_empty();
            if closing && self.pending.is_empty() && self.in_flight.is_empty() {
                break;
            }
            // Wake for new entries only once they complete a block with what is pending; a full pending
            // queue waits for a block slot instead (a finished upload wakes the task).
            if self.pending_bytes >= self.flush_size || self.pending.len() >= self.flush_entries {
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
        let meta = segment_meta::new_segment(id);
        let created = match segment_meta::create_segment(&self.handle, &meta, &self.epoch).await {
            Ok(v) => v,
            Err(e @ WoodpeckerError::WriterFenced { .. }) => {
                if let WoodpeckerError::WriterFenced { reason, .. } = &e {
                    self.lose(WoodpeckerErrorKind::Fenced(reason.clone()));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let writer = self.handle.shared.backend.create_writer(self.handle.seg_ref(id)).await?;
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
                    "a block upload failed ({error}); segment {} was sealed at entry {last}, and no entry after                      it is written by this writer",
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
    }

    async fn maybe_roll(&mut self) {
        if !self.rolling && self.should_roll() {
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

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn pending(budget: &Arc<Semaphore>, len: usize) -> Pending {
        budget.try_acquire_many(1).unwrap().forget();
        Pending { data: EntryBytes::new(bytes::Bytes::from(vec![0u8; len])), budget: 1 }
    }

    fn inbox() -> Inbox {
        Inbox::new(Arc::from("log"))
    }

    fn woken(inbox: &Inbox) -> bool {
        inbox.wake.notified().now_or_never().is_some()
    }

    #[test]
    fn pending_batches_are_taken_in_order_across_batches_and_reused() {
        let budget = Arc::new(Semaphore::new(1000));
        let batch = |sizes: &[usize]| sizes.iter().map(|&n| pending(&budget, n)).collect::<VecDeque<_>>();
        let mut q = PendingQueue::default();
        q.push(batch(&[1, 2, 3]));
        q.push(VecDeque::new());
        q.push(batch(&[4, 5]));
        assert_eq!(q.len(), 5);
        assert_eq!(q.iter().map(|p| p.data.len()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let first = q.take_front(2);
        assert_eq!(first.iter().map(EntryBytes::len).collect::<Vec<_>>(), [1, 2]);
        // Across the batch boundary; the emptied batch is kept for the inbox, started from its beginning.
        let next = q.take_front(2);
        assert_eq!(next.iter().map(EntryBytes::len).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(q.len(), 1);
        let spare = q.spare();
        assert!(spare.is_empty() && spare.capacity() >= 3, "a used batch comes back: {}", spare.capacity());
        assert_eq!(q.take_front(10).len(), 1, "at most what is there");
        assert!(q.is_empty());
        q.push(batch(&[6]));
        q.clear();
        assert!(q.is_empty() && q.iter().next().is_none());
    }

    #[test]
    fn the_task_is_woken_once_queued_entries_complete_a_block() {
        let budget = Arc::new(Semaphore::new(1000));
        let inbox = inbox();
        inbox.rearm(100, 10);
        assert!(!woken(&inbox));
        inbox.push(pending(&budget, 60)).unwrap();
        assert!(!woken(&inbox), "60 of 100 bytes");
        inbox.push(pending(&budget, 60)).unwrap();
        assert!(woken(&inbox), "120 of 100 bytes");
        inbox.push(pending(&budget, 60)).unwrap();
        assert!(!woken(&inbox), "woken already and not drained since: no second wake-up");
        let drained = inbox.drain(VecDeque::new());
        assert_eq!((drained.entries.len(), drained.bytes), (3, 180));
        // The task keeps 70 bytes pending: 30 more complete a block.
        inbox.rearm(30, 10);
        inbox.push(pending(&budget, 40)).unwrap();
        assert!(woken(&inbox));
        inbox.drain(VecDeque::new());
        // Re-arming for less than is queued already wakes at once (here: one entry completes a block).
        inbox.push(pending(&budget, 5)).unwrap();
        assert!(!woken(&inbox));
        inbox.rearm(100, 1);
        assert!(woken(&inbox));
    }

    #[test]
    fn a_stopped_inbox_refuses_entries_and_hands_back_the_late_ones() {
        let budget = Arc::new(Semaphore::new(1000));
        let inbox = inbox();
        inbox.rearm(1_000_000, 1_000_000);
        inbox.push(pending(&budget, 1)).unwrap();
        assert_eq!(inbox.stop().0.len(), 1);
        assert!(inbox.push(pending(&budget, 1)).is_err());
        assert!(!inbox.close(None), "closing a stopped inbox reports that the task is gone");
    }

    #[test]
    fn close_wakes_the_task_and_keeps_the_first_reply() {
        let inbox = inbox();
        let (reply, _) = oneshot::channel();
        assert!(inbox.close(Some(reply)));
        assert!(woken(&inbox));
        assert!(inbox.close(None), "a later close (the last handle dropped) keeps the reply");
        assert!(matches!(inbox.drain(VecDeque::new()).close, Some(Some(_))));
        assert!(inbox.drain(VecDeque::new()).close.is_none());
    }
}
