//! The inbox: where `write_async` leaves entries for the writer task, and how the task is woken.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use woodpecker_core::entry::EntryBytes;

use crate::ack::{AckChunk, AckRange, AckWatch, AppendFuture};
use crate::error::Result;

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) data: EntryBytes,
    /// Buffer budget taken for it (permits of the writer's semaphore, forgotten by `write_async`).
    pub(super) budget: u32,
}

/// Where `write_async` leaves entries for the writer task. The task is woken only when a block's worth
/// has accumulated (or to close): it drains the inbox whole on every turn of its loop and on its timer,
/// so waking it per entry would cost a cross-thread wake-up per entry for nothing.
#[derive(Debug)]
pub(super) struct Inbox {
    state: Mutex<InboxState>,
    pub(super) wake: Notify,
    /// The log's name, for the acknowledgement chunks' error messages.
    log: Arc<str>,
}

#[derive(Debug)]
pub(super) struct InboxState {
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
    pub(super) fn new(log: &Arc<str>) -> Self {
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
    pub(super) fn take_acks(&mut self, log: &Arc<str>) -> AckRange {
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
pub(super) struct Drained {
    pub(super) entries: VecDeque<Pending>,
    pub(super) acks: AckRange,
    pub(super) budget: usize,
    pub(super) flush: bool,
    pub(super) bytes: u64,
    pub(super) close: Option<Option<oneshot::Sender<Result<()>>>>,
}

impl Inbox {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn new(log: Arc<str>) -> Self {
        Self { state: Mutex::new(InboxState::new(&log)), wake: Notify::new(), log }
    }

    /// Queues an entry and returns the future of its outcome; gives the entry back when the writer task
    /// has stopped.
    pub(super) fn push(&self, entry: Pending) -> std::result::Result<AppendFuture, Pending> {
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

    pub(super) fn wake_if_needed(&self, mut st: std::sync::MutexGuard<'_, InboxState>) {
        let wake = !st.signaled && (st.bytes >= st.need_bytes || st.entries.len() >= st.need_entries);
        st.signaled |= wake;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Sets how much the task waits for before it is woken (and wakes it if that is queued already).
    pub(super) fn rearm(&self, need_bytes: u64, need_entries: usize) {
        let mut st = self.lock();
        st.need_bytes = need_bytes.max(1);
        st.need_entries = need_entries.max(1);
        self.wake_if_needed(st);
    }

    /// Asks the task to cut everything queued into blocks now; returns a watch on the last entry queued
    /// so far (`None` when there never was one).
    pub(super) fn flush(&self) -> Option<AckWatch> {
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
    pub(super) fn close(&self, reply: Option<oneshot::Sender<Result<()>>>) -> bool {
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
    pub(super) fn drain(&self, spare: VecDeque<Pending>) -> Drained {
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
    pub(super) fn stop(&self) -> (AckRange, usize) {
        let mut st = self.lock();
        st.stopped = true;
        st.bytes = 0;
        let acks = st.take_acks(&self.log);
        st.entries.clear();
        (acks, std::mem::take(&mut st.budget))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use futures::FutureExt;
    use tokio::sync::Semaphore;

    use super::*;

    pub(crate) fn pending(budget: &Arc<Semaphore>, len: usize) -> Pending {
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
