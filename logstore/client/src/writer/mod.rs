//! The log writer: assigns positions, groups entries into blocks, uploads blocks in parallel and
//! acknowledges strictly in entry order.
//!
//! ```text
//!  write_async ──(byte budget: waits when maxBytes are buffered)──▶ channel ──▶ writer task
//!
//!  writer task:  pending entries ──cut (below)──▶ block n   ──▶ upload ┐ up to
//!                                                block n+1 ─▶ upload ├ maxFlushThreads
//!                                                block n+2 ─▶ upload ┘ in flight
//!                results are taken in block order: block n is acknowledged (every entry's future resolves
//!                with its id) only after blocks 0..n-1 were; a failed block fails itself and every later one.
//!
//!  cut:          a full block (maxFlushSize / maxEntries) as soon as it is full;
//!                a short block when no block is in flight (group commit: a lone write waits for one
//!                upload or one write+fsync, and what arrives during it goes in the next block);
//!                a short block when none was cut for maxInterval (an upper bound, not the usual wait).
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

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, TryAcquireError, oneshot};
use tokio::task::JoinHandle;
use woodpecker_core::ids::LogMessageId;
use woodpecker_meta::MetaError;

use self::inbox::{Inbox, Pending};
use self::task::WriterTask;
pub use crate::ack::AppendFuture;
use crate::error::{Result, WoodpeckerError};
use crate::handle::{LogHandle, now_ms};
use crate::message::WriteMessage;

mod inbox;
mod pending;
mod seal;
mod segment_meta;
mod task;

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
    pub(super) fn set(&self, kind: WoodpeckerErrorKind) {
        if let Ok(mut g) = self.lost.lock()
            && g.is_none()
        {
            *g = Some(kind);
            self.is_lost.store(true, Ordering::Release);
        }
    }

    pub(super) fn error(&self, log: &str) -> Option<WoodpeckerError> {
        if !self.is_lost.load(Ordering::Acquire) {
            return None;
        }
        let g = self.lost.lock().ok()?;
        g.as_ref().map(|k| to_error(k, log))
    }

    /// Why the writer was lost, unless it was simply closed by the application (or is still healthy).
    pub(super) fn loss(&self, log: &str) -> Option<WoodpeckerError> {
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

/// What an entry costs the writer besides its bytes while the writer holds it: its queue slot, its
/// outcome slot and the allocation of its buffer. Counted into the write buffer budget, so that
/// `maxBytes` bounds the memory of many tiny entries too (without it, 1-byte entries took ~40x
/// maxBytes).
pub(crate) const ENTRY_OVERHEAD: u64 = (size_of::<Pending>() + crate::ack::SLOT_SIZE + ALLOCATION_HEADER) as u64;

/// What the allocator keeps per allocation (glibc: 16 bytes on 64-bit).
const ALLOCATION_HEADER: usize = 16;

/// Budget permits an entry of `size` encoded bytes takes from a budget of `budget_bytes`: its bytes and
/// its overhead, at most the whole budget (an entry larger than the budget still goes through alone).
fn budget_for(size: u64, budget_bytes: u64) -> u32 {
    size.saturating_add(ENTRY_OVERHEAD).min(budget_bytes).min(Semaphore::MAX_PERMITS as u64) as u32
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
        let want = budget_for(size, self.budget_bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_costs_its_bytes_and_its_bookkeeping_up_to_the_whole_budget() {
        assert!((100..=160).contains(&ENTRY_OVERHEAD), "overhead {ENTRY_OVERHEAD} B per entry");
        assert_eq!(u64::from(budget_for(1, 1 << 20)), 1 + ENTRY_OVERHEAD);
        assert_eq!(u64::from(budget_for(1000, 1 << 20)), 1000 + ENTRY_OVERHEAD);
        assert_eq!(budget_for(10 << 20, 1 << 20), 1 << 20, "a large entry takes the whole budget, no more");
        assert_eq!(budget_for(u64::MAX, u64::MAX), Semaphore::MAX_PERMITS as u32);
    }
}
