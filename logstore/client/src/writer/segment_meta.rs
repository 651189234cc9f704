//! The writer's segment metadata transitions: create a segment in its epoch, mark one Completed.
//!
//! Both are conditional writes that may apply and still fail to answer (a timeout, a lost reply).
//! They are retried a bounded number of times on transient errors, and each recognises its own
//! earlier write (the metadata store compares the stored bytes with what it was asked to write), so a
//! lost reply is never mistaken for another writer: only a later epoch or someone else's bytes fence.

use woodpecker_core::ids::{EntryId, SegmentId};
use woodpecker_core::retry::RetryPolicy;
use woodpecker_meta::{MetaError, Versioned, WriterEpoch};
use woodpecker_proto::meta::{QuorumInfo, SegmentMetadata, SegmentState};

use crate::error::{Result, WoodpeckerError};
use crate::handle::{LogHandle, now_ms};

/// How metadata writes of the writer are retried on transient failures (etcd unreachable or slow).
const META_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    base_delay: std::time::Duration::from_millis(50),
    max_delay: std::time::Duration::from_secs(1),
};

/// Runs `op` until it succeeds, fails for good, or the attempts run out.
async fn retry_transient<T, F, Fut>(what: &str, mut op: F) -> std::result::Result<T, MetaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, MetaError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && attempt < META_RETRY.max_attempts => {
                tracing::debug!(what, attempt, error = %e, "metadata write failed transiently; retrying");
                tokio::time::sleep(META_RETRY.delay(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The metadata of a new Active segment on `quorum` (the backend's placement), or on the embedded
/// single-node pseudo-quorum upstream records when there is none.
pub(crate) fn new_segment(id: SegmentId, quorum: Option<QuorumInfo>) -> SegmentMetadata {
    let quorum = quorum.unwrap_or_else(|| QuorumInfo {
        id: -1,
        es: 1,
        wq: 1,
        aq: 1,
        nodes: vec!["127.0.0.1:59456".to_owned()],
        replicas: vec![],
    });
    SegmentMetadata {
        seg_no: id,
        create_time: now_ms(),
        state: SegmentState::Active as i32,
        last_entry_id: -1,
        quorum: Some(quorum),
        ..Default::default()
    }
}

/// Creates segment `meta` for the writer holding `epoch`. `WriterFenced` when a later writer opened the
/// log or another writer created the segment.
pub(crate) async fn create_segment(
    handle: &LogHandle,
    meta: &SegmentMetadata,
    epoch: &WriterEpoch,
) -> Result<Versioned<SegmentMetadata>> {
    let store = &handle.shared.meta;
    let res = retry_transient("create segment", || store.create_segment_in_epoch(&handle.name, meta, epoch)).await;
    match res {
        Ok(v) => Ok(v),
        Err(MetaError::EpochSuperseded { current, .. }) => Err(WoodpeckerError::WriterFenced {
            log: handle.name.clone(),
            reason: format!(
                "a later writer opened the log (epoch {current} after this writer's {}) before segment {} was created",
                epoch.number(),
                meta.seg_no
            ),
        }),
        Err(MetaError::SegmentAlreadyExists { segment, .. }) => Err(WoodpeckerError::WriterFenced {
            log: handle.name.clone(),
            reason: format!("segment {segment} was created by another writer"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Marks a segment Completed at `last_entry_id` (compare-and-swap, retried on transient failures and
/// on conflicts after a re-read).
///
/// `owner` is the writer that wrote the segment: for it, a segment found completed by someone else
/// means it was fenced. A recovering writer (not the owner) accepts a completion by anybody.
pub(crate) async fn complete_segment(
    handle: &LogHandle,
    mut seg: Versioned<SegmentMetadata>,
    last_entry_id: EntryId,
    size: u64,
    owner: bool,
) -> Result<()> {
    let store = &handle.shared.meta;
    for _ in 0..5 {
        if seg.value.state() != SegmentState::Active {
            if owner {
                return Err(WoodpeckerError::WriterFenced {
                    log: handle.name.clone(),
                    reason: format!("segment {} was completed by another writer", seg.value.seg_no),
                });
            }
            return Ok(());
        }
        let mut m = seg.value.clone();
        m.set_state(SegmentState::Completed);
        m.last_entry_id = last_entry_id;
        m.size = size as i64;
        m.completion_time = now_ms();
        match retry_transient("complete segment", || store.update_segment(&handle.name, &m, seg.revision)).await {
            Ok(_) => return Ok(()),
            Err(MetaError::RevisionConflict { .. }) => {
                seg = store.get_segment(&handle.name, m.seg_no).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(WoodpeckerError::Meta(MetaError::RevisionConflict {
        key: format!("logs/{}/segments/{}", handle.name, seg.value.seg_no),
    }))
}
