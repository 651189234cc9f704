//! Ending a segment on its replicas: fence (no replica takes another append from any writer) and
//! complete (each replica writes its footer at the agreed end).
//!
//! The fence needs `es − aq + 1` answers: any set that large shares a replica with every ack quorum, so
//! the largest last-entry among the answers covers every acknowledged entry. The end is that maximum,
//! not upstream's `sorted[len − (es − aq + 1)]`, which can fall below an acknowledged entry when a replica
//! that held it answers "empty" after being wiped (upstream bug, spec woodpecker-core.md §14 item 1).

use std::time::Duration;

use futures::future::join_all;
use woodpecker_core::ids::EntryId;
use woodpecker_proto::logstore::{CompleteSegmentRequest, FenceSegmentRequest};
use woodpecker_storage::segment::{SegmentError, SegmentRef};

use super::Context;
use super::nodes::{self, NodeFailure};

/// What the fence learnt: the segment's end and which replicas answered.
#[derive(Debug, Clone)]
pub(crate) struct Fenced {
    pub last_entry_id: EntryId,
    pub answered: Vec<String>,
}

/// Fences the segment on every replica at once; needs `es − aq + 1` answers within the call limit.
pub(crate) async fn fence(
    ctx: &Context,
    segment: SegmentRef,
    replicas: &[String],
    aq: usize,
) -> Result<Fenced, SegmentError> {
    let calls = replicas.iter().map(|endpoint| async move {
        let req = FenceSegmentRequest {
            bucket_name: ctx.bucket.clone(),
            root_path: ctx.root_path.clone(),
            log_id: segment.log_id,
            segment_id: segment.segment_id,
        };
        let res = match ctx.nodes.client(endpoint) {
            Ok(mut c) => nodes::bounded(&ctx.nodes, endpoint, ctx.call_timeout, c.fence_segment(req))
                .await
                .and_then(|r| nodes::check(r.status.as_ref()).map(|()| r.last_entry_id)),
            Err(e) => Err(NodeFailure::transport(e)),
        };
        (endpoint.clone(), res)
    });
    let needed = (replicas.len() + 1).saturating_sub(aq).max(1);
    let mut answered = Vec::new();
    let mut last = -1;
    let mut errors = Vec::new();
    for (endpoint, res) in join_all(calls).await {
        match res {
            Ok(id) => {
                last = last.max(id);
                answered.push(endpoint);
            }
            Err(f) => errors.push(format!("{endpoint}: {f}")),
        }
    }
    if answered.len() < needed {
        return Err(SegmentError::Quorum {
            segment,
            what: "a fence",
            needed,
            got: answered.len(),
            ensemble: replicas.len(),
            errors: errors.join("; "),
        });
    }
    if !errors.is_empty() {
        tracing::warn!(%segment, last, errors = %errors.join("; "), "fenced without every replica");
    }
    Ok(Fenced { last_entry_id: last, answered })
}

/// Completes the segment at `last_entry_id` on `replicas`; needs `needed` of them to succeed.
pub(crate) async fn complete(
    ctx: &Context,
    segment: SegmentRef,
    replicas: &[String],
    needed: usize,
    last_entry_id: EntryId,
) -> Result<(), SegmentError> {
    let calls = replicas.iter().map(|endpoint| async move {
        let req = CompleteSegmentRequest {
            bucket_name: ctx.bucket.clone(),
            root_path: ctx.root_path.clone(),
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            last_add_confirmed: last_entry_id,
        };
        let res = match ctx.nodes.client(endpoint) {
            Ok(mut c) => nodes::bounded(&ctx.nodes, endpoint, ctx.call_timeout, c.complete_segment(req))
                .await
                .and_then(|r| nodes::check(r.status.as_ref())),
            Err(e) => Err(NodeFailure::transport(e)),
        };
        (endpoint.clone(), res)
    });
    let mut ok = 0;
    let mut errors = Vec::new();
    for (endpoint, res) in join_all(calls).await {
        match res {
            Ok(()) => ok += 1,
            Err(f) => errors.push(format!("{endpoint}: {f}")),
        }
    }
    if ok < needed {
        return Err(SegmentError::Quorum {
            segment,
            what: "a completion",
            needed,
            got: ok,
            ensemble: replicas.len(),
            errors: errors.join("; "),
        });
    }
    Ok(())
}

/// The default bound of one fence, completion, compaction or read call.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
