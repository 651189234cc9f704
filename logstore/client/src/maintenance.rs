//! Background maintenance of a log while a writer has it open (upstream's "auditor"): truncation marking,
//! compaction of completed segments, and cleanup of truncated segments past the retention TTL.

use tokio::task::JoinHandle;
use woodpecker_core::ids::SegmentId;
use woodpecker_meta::MetaError;
use woodpecker_proto::meta::SegmentState;

use crate::error::Result;
use crate::handle::{LogHandle, now_ms};

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Segments newly marked Truncated.
    pub marked_truncated: Vec<SegmentId>,
    /// Segments compacted (Completed → Sealed).
    pub compacted: Vec<SegmentId>,
    /// Segments whose lost replicas were made again on other nodes (service mode).
    pub repaired: Vec<SegmentId>,
    /// Segments whose data and metadata were deleted.
    pub deleted: Vec<SegmentId>,
}

/// One pass over the log's segments.
pub(crate) async fn run_once(handle: &LogHandle) -> Result<MaintenanceReport> {
    let shared = &handle.shared;
    let mut report = MaintenanceReport::default();
    let log_meta = shared.meta.get_log(&handle.name).await?.value;
    let truncated_seg = log_meta.truncated_segment_id;
    let segments = shared.meta.list_segments(&handle.name).await?;

    for seg in &segments {
        let m = &seg.value;
        if m.seg_no < truncated_seg && m.state() != SegmentState::Truncated && m.state() != SegmentState::Active {
            let mut updated = m.clone();
            updated.set_state(SegmentState::Truncated);
            match shared.meta.update_segment(&handle.name, &updated, seg.revision).await {
                Ok(_) => report.marked_truncated.push(m.seg_no),
                Err(MetaError::RevisionConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    if shared.compacts {
        for seg in &segments {
            let m = &seg.value;
            if m.state() != SegmentState::Completed || report.marked_truncated.contains(&m.seg_no) {
                continue;
            }
            let sref = handle.located(m);
            let mut revision = seg.revision;
            let mut m = m.clone();
            // Lost copies come back first (service mode), so that the segment has all of them again even
            // when compaction cannot run now (object storage unavailable).
            match shared.backend.repair(sref).await {
                Ok(Some(quorum)) => {
                    let mut updated = m.clone();
                    updated.quorum = Some(quorum);
                    match shared.meta.update_segment(&handle.name, &updated, revision).await {
                        Ok(r) => {
                            report.repaired.push(m.seg_no);
                            revision = r;
                            m = updated;
                            handle.located(&m);
                        }
                        Err(MetaError::RevisionConflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(log = %handle.name, segment = m.seg_no, error = %e, "replica repair failed; retried next pass")
                }
            }
            let size = shared.backend.compact(sref).await?;
            let mut updated = m.clone();
            updated.set_state(SegmentState::Sealed);
            updated.sealed_time = now_ms();
            updated.size = size as i64;
            match shared.meta.update_segment(&handle.name, &updated, revision).await {
                Ok(_) => report.compacted.push(m.seg_no),
                Err(MetaError::RevisionConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    if truncated_seg > 0 {
        let readers = shared.meta.list_readers(handle.log_id).await?;
        let min_in_use =
            readers.iter().map(|r| r.recent_read_segment_id).filter(|s| *s >= 0).fold(truncated_seg, i64::min);
        let ttl_ms = shared.cfg.woodpecker.logstore.retention_policy.ttl.as_millis() as i64;
        let now = now_ms();
        let segments = shared.meta.list_segments(&handle.name).await?;
        for seg in segments {
            let m = &seg.value;
            if m.state() != SegmentState::Truncated || m.seg_no >= min_in_use {
                continue;
            }
            let age_base = m.create_time.max(m.completion_time).max(m.sealed_time);
            if age_base + ttl_ms > now {
                continue;
            }
            shared.backend.delete_segment(handle.located(m)).await?;
            match shared.meta.delete_segment(&handle.name, m.seg_no).await {
                Ok(()) | Err(MetaError::SegmentNotFound { .. }) => report.deleted.push(m.seg_no),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(report)
}

/// Runs [`run_once`] every `woodpecker.client.auditor.maxInterval` until the client shuts down or the
/// returned task is aborted (the writer aborts it on close).
pub(crate) fn spawn_auditor(handle: LogHandle) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = handle.shared.cfg.woodpecker.client.auditor.max_interval;
        let shutdown = handle.shared.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match run_once(&handle).await {
                Ok(r) if r != MaintenanceReport::default() => {
                    tracing::info!(log = %handle.name, ?r, "maintenance pass");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(log = %handle.name, error = %e, "maintenance pass failed"),
            }
        }
    })
}
