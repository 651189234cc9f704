//! Acknowledgements shared by many entries.
//!
//! Every entry queued between two turns of the writer task gets a slot in one [`AckChunk`]; its
//! [`AppendFuture`] holds the chunk and the slot number. The writer task takes the chunk's entries as
//! one [`AckRange`], splits it along block boundaries, and publishes a whole block's outcomes under one
//! lock when the block is durable (or fails). Compared with a channel per entry this saves an
//! allocation, a free and a few atomic operations per entry, which is most of the per-entry cost of
//! small writes.
//!
//! ```text
//!  write_async ─▶ slot i of the inbox's current chunk ─▶ AppendFuture { chunk, i }
//!  writer task:   drain ─▶ AckRange(chunk, 0..n) ─▶ split per block ─▶ publish(outcome of each entry)
//! ```
//!
//! A range dropped without being published (the writer task stopped) fails its entries, so no future
//! waits forever for a task that is gone.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use woodpecker_core::ids::LogMessageId;

use crate::error::{Result, WoodpeckerError};

/// The outcome slots of the entries queued between two drains of the writer's inbox.
#[derive(Debug)]
pub(crate) struct AckChunk {
    /// The log's name, for error messages.
    log: Arc<str>,
    /// No slot at or past this was published yet: lets `try_result` answer "not yet" without the lock.
    published_end: AtomicU32,
    state: Mutex<ChunkState>,
}

#[derive(Debug, Default)]
struct ChunkState {
    /// Slot `i` is entry `i` of the chunk; slots past the end are still waiting.
    slots: Vec<Slot>,
    /// Futures polled before their outcome was known.
    wakers: Vec<(u32, Waker)>,
    /// [`AckWatch`]es waiting for a slot to be resolved.
    watchers: Vec<(u32, Waker)>,
}

/// Memory of one entry's outcome slot.
pub(crate) const SLOT_SIZE: usize = size_of::<Slot>();

/// One entry's outcome, kept small (24 bytes): a chunk holds one per entry, written when its block is
/// done and read once by its future. An inline error would make every slot as large as the error type
/// (over 100 bytes) for the rare entry that fails.
#[derive(Debug)]
enum Slot {
    Waiting,
    Durable(LogMessageId),
    Failed(Box<WoodpeckerError>),
    Taken,
}

impl Slot {
    fn ready(outcome: Result<LogMessageId>) -> Self {
        match outcome {
            Ok(id) => Slot::Durable(id),
            Err(e) => Slot::Failed(Box::new(e)),
        }
    }
}

impl AckChunk {
    pub(crate) fn new(log: Arc<str>) -> Arc<Self> {
        Arc::new(Self { log, published_end: AtomicU32::new(0), state: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, ChunkState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes room for the outcomes of all `len` entries the chunk ended up with, so that publishing block
    /// after block does not regrow the slots.
    pub(crate) fn reserve(&self, len: usize) {
        let mut st = self.lock();
        let more = len.saturating_sub(st.slots.len());
        st.slots.reserve_exact(more);
    }

    fn stopped(&self) -> WoodpeckerError {
        WoodpeckerError::WriterClosed { log: self.log.to_string(), reason: "the writer task stopped".into() }
    }
}

/// Entries `start..end` of a chunk, held by the writer task until their outcomes are published.
#[derive(Debug)]
pub(crate) struct AckRange {
    chunk: Arc<AckChunk>,
    start: u32,
    end: u32,
}

impl AckRange {
    pub(crate) fn new(chunk: Arc<AckChunk>, len: u32) -> Self {
        Self { chunk, start: 0, end: len }
    }

    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Splits off the first `n` entries (at most all of them).
    fn split_front(&mut self, n: usize) -> AckRange {
        let mid = self.start + (n.min(self.len()) as u32);
        let front = AckRange { chunk: self.chunk.clone(), start: self.start, end: mid };
        self.start = mid;
        front
    }

    /// Publishes the outcome of each entry, `outcome(i)` for the range's `i`-th entry, and wakes the
    /// futures waiting for them.
    fn publish(mut self, mut outcome: impl FnMut(usize) -> Result<LogMessageId>) {
        let (start, end) = (self.start as usize, self.end as usize);
        // Nothing is left for Drop to fail.
        self.start = self.end;
        let mut guard = self.chunk.lock();
        let st = &mut *guard;
        if st.slots.len() == start {
            // The usual case: blocks are published in order, each right after the one before.
            st.slots.extend((0..end - start).map(|i| Slot::ready(outcome(i))));
        } else {
            if st.slots.len() < end {
                st.slots.resize_with(end, || Slot::Waiting);
            }
            for (i, slot) in st.slots[start..end].iter_mut().enumerate() {
                *slot = Slot::ready(outcome(i));
            }
        }
        let mut wake = Vec::new();
        for list in [&mut st.wakers, &mut st.watchers] {
            if !list.is_empty() {
                list.retain_mut(|(idx, w)| {
                    let due = (start..end).contains(&(*idx as usize));
                    if due {
                        wake.push(std::mem::replace(w, Waker::noop().clone()));
                    }
                    !due
                });
            }
        }
        self.chunk.published_end.fetch_max(end as u32, Ordering::Release);
        drop(guard);
        for w in wake {
            w.wake();
        }
    }
}

impl Drop for AckRange {
    fn drop(&mut self) {
        if self.start < self.end {
            let chunk = self.chunk.clone();
            let rest = AckRange { chunk: chunk.clone(), start: self.start, end: self.end };
            self.start = self.end;
            rest.publish(|_| Err(chunk.stopped()));
        }
    }
}

/// Entries in order, as ranges of chunks: what the writer task holds for its pending entries and
/// for each block in flight.
#[derive(Debug, Default)]
pub(crate) struct AckQueue {
    ranges: VecDeque<AckRange>,
    len: usize,
}

impl AckQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, range: AckRange) {
        if range.len() == 0 {
            return;
        }
        self.len += range.len();
        if let Some(back) = self.ranges.back_mut()
            && Arc::ptr_eq(&back.chunk, &range.chunk)
            && back.end == range.start
        {
            back.end = range.end;
            let mut merged = range;
            merged.start = merged.end;
            return;
        }
        self.ranges.push_back(range);
    }

    /// Takes the first `n` entries (at most all of them).
    pub(crate) fn take_front(&mut self, n: usize) -> AckQueue {
        let mut out = AckQueue::default();
        let mut want = n.min(self.len);
        while want > 0 {
            let Some(front) = self.ranges.front_mut() else { break };
            let piece = if front.len() <= want {
                self.ranges.pop_front().expect("front exists")
            } else {
                front.split_front(want)
            };
            want -= piece.len();
            self.len -= piece.len();
            out.len += piece.len();
            out.ranges.push_back(piece);
        }
        out
    }

    /// Publishes the outcome of every entry in order: `outcome(i)` for the queue's `i`-th entry.
    pub(crate) fn publish(self, mut outcome: impl FnMut(usize) -> Result<LogMessageId>) {
        let mut offset = 0;
        for range in self.ranges {
            let base = offset;
            offset += range.len();
            range.publish(|i| outcome(base + i));
        }
    }

    /// Fails every entry with `error()`.
    pub(crate) fn fail(self, mut error: impl FnMut() -> WoodpeckerError) {
        self.publish(|_| Err(error()));
    }
}

/// Resolves once a slot's outcome is published, without taking it (the entry's own future still
/// gets it). Outcomes are published in entry order, so this also means every earlier entry's is.
#[derive(Debug)]
pub(crate) struct AckWatch {
    chunk: Arc<AckChunk>,
    slot: u32,
}

impl AckWatch {
    pub(crate) fn new(chunk: Arc<AckChunk>, slot: u32) -> Self {
        Self { chunk, slot }
    }
}

impl Future for AckWatch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.chunk.lock();
        if st.slots.get(self.slot as usize).is_some_and(|s| !matches!(s, Slot::Waiting)) {
            return Poll::Ready(());
        }
        let slot = self.slot;
        if !st.watchers.iter().any(|(i, w)| *i == slot && w.will_wake(cx.waker())) {
            st.watchers.push((slot, cx.waker().clone()));
        }
        Poll::Pending
    }
}

/// Resolves when the entry is durable, with its position; or with the error that made it fail.
#[derive(Debug)]
pub struct AppendFuture {
    chunk: Arc<AckChunk>,
    slot: u32,
    /// The outcome was handed out already (by `try_result` or `poll`).
    taken: bool,
}

impl AppendFuture {
    pub(crate) fn new(chunk: Arc<AckChunk>, slot: u32) -> Self {
        Self { chunk, slot, taken: false }
    }

    /// The outcome if it is known already, without waiting (and without registering for a wake-up):
    /// `None` while the entry is neither durable nor failed yet. The outcome is handed out once; asking
    /// again (or awaiting the future afterwards) gives an error.
    pub fn try_result(&mut self) -> Option<Result<LogMessageId>> {
        if self.taken {
            return Some(Err(self.spent()));
        }
        if self.slot >= self.chunk.published_end.load(Ordering::Acquire) {
            return None;
        }
        let r = take(&mut self.chunk.lock(), self.slot)?;
        self.taken = true;
        Some(r)
    }

    fn spent(&self) -> WoodpeckerError {
        WoodpeckerError::WriterClosed {
            log: self.chunk.log.to_string(),
            reason: "this write's outcome was already taken".into(),
        }
    }
}

/// Takes the outcome in `slot` if it is there.
fn take(st: &mut ChunkState, slot: u32) -> Option<Result<LogMessageId>> {
    let s = st.slots.get_mut(slot as usize)?;
    match std::mem::replace(s, Slot::Taken) {
        Slot::Durable(id) => Some(Ok(id)),
        Slot::Failed(e) => Some(Err(*e)),
        other => {
            *s = other;
            None
        }
    }
}

impl Future for AppendFuture {
    type Output = Result<LogMessageId>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.taken {
            return Poll::Ready(Err(self.spent()));
        }
        let chunk = self.chunk.clone();
        let mut st = chunk.lock();
        if let Some(r) = take(&mut st, self.slot) {
            drop(st);
            self.taken = true;
            return Poll::Ready(r);
        }
        let slot = self.slot;
        match st.wakers.iter_mut().find(|(i, _)| *i == slot) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => st.wakers.push((slot, cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn chunk_of(n: u32) -> (Arc<AckChunk>, Vec<AppendFuture>, AckRange) {
        let chunk = AckChunk::new(Arc::from("log"));
        let futures = (0..n).map(|i| AppendFuture::new(chunk.clone(), i)).collect();
        let range = AckRange::new(chunk.clone(), n);
        (chunk, futures, range)
    }

    /// `n` futures of one chunk, their entries queued as the writer task holds them.
    fn queued(n: u32) -> (Vec<AppendFuture>, AckQueue) {
        let (_, futures, range) = chunk_of(n);
        let mut queue = AckQueue::default();
        queue.push(range);
        (futures, queue)
    }

    fn id(e: i64) -> LogMessageId {
        LogMessageId::new(7, e)
    }

    #[test]
    fn blocks_publish_their_own_entries_in_order() {
        let (mut futures, mut queue) = queued(5);
        let first = queue.take_front(2);
        assert_eq!((first.len(), queue.len()), (2, 3));
        assert!(futures[0].try_result().is_none(), "nothing is published yet");
        first.publish(|i| Ok(id(10 + i as i64)));
        assert_eq!(futures[0].try_result().unwrap().unwrap(), id(10));
        assert_eq!(futures[1].try_result().unwrap().unwrap(), id(11));
        assert!(futures[2].try_result().is_none(), "the next block is not published");
        queue.publish(|i| Ok(id(12 + i as i64)));
        for (k, f) in futures.iter_mut().enumerate().skip(2) {
            assert_eq!(f.try_result().unwrap().unwrap(), id(10 + k as i64));
        }
        assert!(futures[0].try_result().unwrap().is_err(), "an outcome is handed out once");
    }

    #[test]
    fn a_waiting_future_is_woken_by_its_block() {
        let (_, mut futures, range) = chunk_of(3);
        let mut last = futures.pop().unwrap();
        let waker_hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waker = futures::task::waker(Arc::new(Counter(waker_hits.clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut last).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut last).poll(&mut cx).is_pending(), "a second poll replaces, not adds, its waker");
        let mut queue = AckQueue::default();
        queue.push(range);
        queue.take_front(2).publish(|i| Ok(id(i as i64)));
        assert_eq!(waker_hits.load(std::sync::atomic::Ordering::SeqCst), 0, "not this future's block");
        queue.publish(|_| Err(WoodpeckerError::ClientClosed));
        assert_eq!(waker_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(last.now_or_never(), Some(Err(WoodpeckerError::ClientClosed))));
    }

    #[test]
    fn entries_never_published_fail_when_the_writer_lets_go() {
        let (futures, mut queue) = queued(4);
        let block = queue.take_front(1);
        block.publish(|_| Ok(id(0)));
        drop(queue);
        let outcomes: Vec<_> = futures.into_iter().map(|f| f.now_or_never().expect("resolved")).collect();
        assert!(outcomes[0].is_ok());
        for o in &outcomes[1..] {
            assert!(
                matches!(o, Err(WoodpeckerError::WriterClosed { reason, .. }) if reason.contains("stopped")),
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_later_range_published_first_leaves_the_earlier_waiting() {
        let (mut futures, mut queue) = queued(4);
        let early = queue.take_front(2);
        let late = queue.take_front(2);
        late.fail(|| WoodpeckerError::ClientClosed);
        assert!(futures[0].try_result().is_none() && futures[1].try_result().is_none());
        assert!(matches!(futures[3].try_result(), Some(Err(WoodpeckerError::ClientClosed))));
        early.publish(|i| Ok(id(i as i64)));
        assert_eq!(futures[1].try_result().map(|r| r.ok()), Some(Some(id(1))));
        assert!(matches!(futures[2].try_result(), Some(Err(WoodpeckerError::ClientClosed))));
        assert_eq!(futures[0].try_result().map(|r| r.ok()), Some(Some(id(0))));
    }

    #[test]
    fn ranges_of_one_chunk_merge_and_split_across_chunks() {
        let (a, _fa, _) = chunk_of(0);
        let (b, _fb, _) = chunk_of(0);
        let mut queue = AckQueue::default();
        queue.push(AckRange { chunk: a.clone(), start: 0, end: 3 });
        queue.push(AckRange { chunk: a.clone(), start: 3, end: 5 });
        queue.push(AckRange { chunk: b.clone(), start: 0, end: 4 });
        assert_eq!((queue.len(), queue.ranges.len()), (9, 2), "contiguous ranges of one chunk merge");
        let block = queue.take_front(6);
        assert_eq!((block.len(), block.ranges.len(), queue.len()), (6, 2, 3));
        let mut seen = Vec::new();
        block.publish(|i| {
            seen.push(i);
            Ok(id(i as i64))
        });
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
        assert!(matches!(a.lock().slots[4], Slot::Durable(_)));
        assert!(matches!(b.lock().slots[0], Slot::Durable(_)));
        assert_eq!(b.lock().slots.len(), 1, "b's entries 1..4 are still pending");
        queue.fail(|| WoodpeckerError::ClientClosed);
    }

    #[test]
    fn a_watch_resolves_with_its_slot_and_leaves_the_outcome_to_the_entry() {
        let (chunk, mut futures, range) = chunk_of(2);
        let mut watch = AckWatch::new(chunk.clone(), 1);
        assert!((&mut watch).now_or_never().is_none());
        let mut queue = AckQueue::default();
        queue.push(range);
        queue.take_front(1).publish(|_| Ok(id(0)));
        assert!((&mut watch).now_or_never().is_none(), "only entry 0 is published");
        queue.publish(|_| Ok(id(1)));
        assert!(watch.now_or_never().is_some());
        assert_eq!(futures[1].try_result().unwrap().unwrap(), id(1), "the watch took nothing");
        assert!(AckWatch::new(chunk, 1).now_or_never().is_some(), "a taken outcome still counts as published");
    }

    struct Counter(Arc<std::sync::atomic::AtomicUsize>);

    impl futures::task::ArcWake for Counter {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
