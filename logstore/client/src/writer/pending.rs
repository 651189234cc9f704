//! Entries the writer task holds but has not cut into blocks, and the write-buffer budget they hold.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::Semaphore;
use woodpecker_core::entry::EntryBytes;

use super::inbox::Pending;

/// Entries the writer task took from the inbox and has not cut into blocks yet, kept as the batches the
/// inbox handed over instead of being copied into one queue. A backlog is a few batches of about a block
/// each, and emptied batches go back to the inbox as its next queue (started from the beginning of their
/// buffer), so the same few hundred KB are written and read again, not a ring as large as the largest
/// backlog ever seen (megabytes, cycled through out of cache, entry by entry).
#[derive(Default)]
pub(super) struct PendingQueue {
    batches: VecDeque<VecDeque<Pending>>,
    len: usize,
    /// Emptied batches, for the inbox.
    spares: Vec<VecDeque<Pending>>,
}

/// Emptied batches kept for reuse.
const SPARE_BATCHES: usize = 4;

impl PendingQueue {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn push(&mut self, batch: VecDeque<Pending>) {
        if batch.is_empty() {
            self.recycle(batch);
            return;
        }
        self.len += batch.len();
        self.batches.push_back(batch);
    }

    /// An empty queue for the inbox: an emptied batch when there is one.
    pub(super) fn spare(&mut self) -> VecDeque<Pending> {
        self.spares.pop().unwrap_or_default()
    }

    pub(super) fn recycle(&mut self, mut batch: VecDeque<Pending>) {
        // `clear` also moves the queue's start back to the beginning of its buffer.
        batch.clear();
        if self.spares.len() < SPARE_BATCHES {
            self.spares.push(batch);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.batches.iter().flatten()
    }

    /// Removes the first `n` entries (at most all of them) and returns their data.
    pub(super) fn take_front(&mut self, n: usize) -> Vec<EntryBytes> {
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

    pub(super) fn clear(&mut self) {
        while let Some(batch) = self.batches.pop_front() {
            self.recycle(batch);
        }
        self.len = 0;
    }
}

/// Buffer budget the writer task holds for entries it has not written yet; given back to the
/// semaphore when dropped (a block's part when its upload ends, the rest when entries fail).
#[derive(Debug)]
pub(super) struct BudgetHeld {
    semaphore: Arc<Semaphore>,
    pub(super) permits: usize,
}

impl BudgetHeld {
    pub(super) fn new(semaphore: Arc<Semaphore>, permits: usize) -> Self {
        Self { semaphore, permits }
    }

    /// Takes over what `other` holds.
    pub(super) fn absorb(&mut self, mut other: BudgetHeld) {
        self.permits += std::mem::take(&mut other.permits);
    }

    /// Splits off `permits` of what is held.
    pub(super) fn split(&mut self, permits: usize) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::inbox::tests::pending;

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
}
