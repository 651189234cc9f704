//! The writer epoch: which writer of a log may create its next segment.
//!
//! ```text
//! P/writer-epoch/<logId>     value: who opened it (host, pid, writer id); epoch = the key's mod revision
//!
//!  writer A opens ──put──▶ epoch 17 ─┐
//!                                    │ A creates segment 4:  txn{ mod_rev(epoch key) == 17, seg 4 absent }
//!  writer B opens ──put──▶ epoch 23 ─┤ then B lists the segments and fences every Active one (4)
//!                                    │ A creates segment 5:  txn{ mod_rev(epoch key) == 17 } fails: fenced
//!                                    └ B creates segment 5:  txn{ mod_rev(epoch key) == 23 } succeeds
//! ```
//!
//! Opening a writer is one plain put, so it always wins and never waits; its revision (etcd's, or
//! the embedded store's, both totally ordered) is the new epoch. Every segment a writer creates is
//! created in a transaction that compares the epoch key's mod revision with the writer's epoch, so
//! once a later writer's put is applied no earlier writer can create a segment. The later writer
//! lists the segments only after its put, so it sees every segment an earlier writer could still
//! create and fences it. Together: after `open_writer` returns, an earlier writer can neither add a
//! segment nor extend an existing one. This holds with conditional object writes, with the etcd
//! writer lock, and on local files alike, because it lives in the metadata transaction; the
//! storage-level fence only covers the segments that exist.
//!
//! The key lives outside `P/logs/` on purpose: upstream lists logs by the first path component of
//! every key under `P/logs/`, and its delete removes only the keys it knows, so a key there would
//! bring a deleted log back into its listings. Log ids are never reused, so a key left behind by an
//! upstream delete is inert. Upstream writers do not take part: between an upstream writer and ours,
//! the fence is upstream's (the storage fence of Active segments).

use crate::kv::Compare;

/// One writer's epoch on one log: proof, checked by every segment creation, that no later writer
/// opened the log since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterEpoch {
    pub(crate) log: String,
    pub(crate) key: String,
    pub(crate) revision: i64,
}

impl WriterEpoch {
    /// The epoch number: the revision at which this writer opened; later writers have larger ones.
    pub fn number(&self) -> i64 {
        self.revision
    }

    /// The log it belongs to.
    pub fn log_name(&self) -> &str {
        &self.log
    }

    /// The guard that holds while no later writer has opened.
    pub(crate) fn still_current(&self) -> Compare {
        Compare::mod_revision_eq(&self.key, self.revision)
    }
}
