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
        processor.touch();
        Ok(Arc::clone(processor))
    }

    /// Closes processors no request used for `max_idle`, except the newest segment of each log (its
    /// writer may just be quiet) and any with entries still waiting to sync. A closed processor's segment
    /// is reopened from its files on the next request, in recovery mode if it holds data. Returns how
    /// many were closed.
    pub fn close_idle(&self, max_idle: std::time::Duration) -> usize {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut newest: HashMap<(StagedScope, LogId), SegmentId> = HashMap::new();
        for (scope, log, seg) in map.keys() {
            let e = newest.entry((scope.clone(), *log)).or_insert(*seg);
            *e = (*e).max(*seg);
        }
        let before = map.len();
        map.retain(|(scope, log, seg), cell| {
            let Some(p) = cell.get() else { return true };
            let exempt = newest.get(&(scope.clone(), *log)) == Some(seg);
            let busy = p.health().unsynced_entries > 0;
            if exempt || busy || p.idle_for() < max_idle {
                return true;
            }
            p.shut(crate::status::ALREADY_CLOSED.status(format!("{} was closed after being idle", p.segment())));
            false
        });
        before - map.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_processors_close_except_the_newest_segment_of_each_log() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Arc::new(StagedStorage::new(dir.path().to_path_buf()));
        let procs = Processors::new(staged, AppendLimits::default(), CancellationToken::new());
        let scope = StagedScope::new("b", "r").unwrap();
        let old = procs.get(&scope, 1, 0).await.unwrap();
        let newest = procs.get(&scope, 1, 1).await.unwrap();
        let other_log = procs.get(&scope, 2, 0).await.unwrap();
        assert_eq!(procs.close_idle(std::time::Duration::from_secs(3600)), 0, "none idle long enough");
        assert_eq!(procs.close_idle(std::time::Duration::ZERO), 1, "only log 1's older segment");
        let reopened = procs.get(&scope, 1, 0).await.unwrap();
        assert!(!Arc::ptr_eq(&old, &reopened), "a closed processor is recreated from its files");
        assert!(Arc::ptr_eq(&newest, &procs.get(&scope, 1, 1).await.unwrap()));
        assert!(Arc::ptr_eq(&other_log, &procs.get(&scope, 2, 0).await.unwrap()));
        let refused = old.admit(&[(0, bytes::Bytes::from_static(b"x"))]).await.unwrap_err();
        assert_eq!(refused.code, crate::status::ALREADY_CLOSED.code, "a closed processor takes nothing");
    }
}
