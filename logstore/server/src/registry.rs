//! The segment processors of this node, created lazily on the first request for a segment.
//!
//! Keyed by scope (bucket, root path), log and segment, as upstream's process-wide map. Creating a
//! processor reads the segment's local files once to learn its state (see `processor`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use woodpecker_core::ids::{LogId, SegmentId};
use woodpecker_proto::logstore::Status;
use woodpecker_storage::segment::SegmentRef;
use woodpecker_storage::segment::staged::{StagedScope, StagedStorage};

use crate::processor::{AppendLimits, SegmentProcessor};

type Key = (StagedScope, LogId, SegmentId);

/// Every processor of this node.
#[derive(Debug)]
pub struct Processors {
    staged: Arc<StagedStorage>,
    limits: AppendLimits,
    map: Mutex<HashMap<Key, Arc<OnceCell<Arc<SegmentProcessor>>>>>,
    cancel: CancellationToken,
}

impl Processors {
    /// Processors over `staged`, each with `limits`; `cancel` stops their flushers.
    pub fn new(staged: Arc<StagedStorage>, limits: AppendLimits, cancel: CancellationToken) -> Self {
        Self { staged, limits, map: Mutex::new(HashMap::new()), cancel }
    }

    /// The staged storage under them.
    pub fn staged(&self) -> &Arc<StagedStorage> {
        &self.staged
    }

    /// The processor of one segment, created on first use.
    pub async fn get(
        &self,
        scope: &StagedScope,
        log_id: LogId,
        segment_id: SegmentId,
    ) -> Result<Arc<SegmentProcessor>, Status> {
        let cell = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry((scope.clone(), log_id, segment_id)).or_default().clone()
        };
        let processor = cell
            .get_or_try_init(|| {
                let local = self.staged.scope(scope);
                SegmentProcessor::open(SegmentRef { log_id, segment_id }, local, self.limits, self.cancel.child_token())
            })
            .await?;
        Ok(Arc::clone(processor))
    }

    /// The processors created so far (for shutdown, decommission progress and metrics).
    pub fn all(&self) -> Vec<Arc<SegmentProcessor>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().filter_map(|c| c.get().cloned()).collect()
    }

    /// Forgets every processor of `log_id` in `scope` after shutting it with `why`.
    pub fn remove_log(&self, scope: &StagedScope, log_id: LogId, why: &Status) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|(s, l, _), cell| {
            let keep = !(s == scope && *l == log_id);
            if !keep && let Some(p) = cell.get() {
                p.shut(why.clone());
            }
            keep
        });
    }

    /// Forgets one segment's processor after shutting it with `why`.
    pub fn remove_segment(&self, scope: &StagedScope, log_id: LogId, segment_id: SegmentId, why: &Status) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = map.remove(&(scope.clone(), log_id, segment_id))
            && let Some(p) = cell.get()
        {
            p.shut(why.clone());
        }
    }
}
