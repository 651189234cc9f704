//! Replica repair: a Completed segment whose ensemble lost a copy gets it back before compaction.
//!
//! A replica is lost when its node answers that it holds less than the segment's last entry (it was
//! wiped, or missed the tail), or when it has not answered for `repairGracePeriod`. A lost copy is
//! written again from a replica that holds every entry: to the same node when it takes the entries (a
//! wiped node starts the segment afresh), otherwise to a node outside the ensemble, chosen like any
//! placement; the caller then records the new replica set in the segment's metadata. Each copy is the
//! segment's entries `0..=last` sent as appends and completed at `last`, exactly what the writer did, so
//! the copy reads, completes and compacts like any other.
//!
//! ```text
//!   probe every replica (last durable entry) ─▶ healthy | short (same node) | silent past the grace
//!   source = a healthy replica ─▶ read 0..=last ─▶ AddEntries to the target ─▶ CompleteSegment(last)
//!   silent ones replaced ─▶ new QuorumInfo, recorded by compare-and-swap by the caller
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use woodpecker_core::ids::EntryId;
use woodpecker_proto::logstore::{
    AddEntriesRequest, GetBatchEntriesAdvRequest, GetSegmentLastAddConfirmedRequest, LogEntry, NodeFilter,
    SelectNodesRequest,
};
use woodpecker_proto::meta::QuorumInfo;
use woodpecker_storage::segment::{SegmentError, SegmentRef};

use super::nodes::{self, NodeFailure};
use super::{Context, Located, recovery};

/// Entries per append and per read while copying.
const COPY_BATCH: usize = 1000;

/// When each silent node was first found silent (reset when it answers).
#[derive(Debug, Default)]
pub(crate) struct Silence {
    since: Mutex<HashMap<String, Instant>>,
}

impl Silence {
    fn silent_for(&self, endpoint: &str) -> Duration {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        since.entry(endpoint.to_owned()).or_insert_with(Instant::now).elapsed()
    }

    fn answered(&self, endpoint: &str) {
        self.since.lock().unwrap_or_else(|p| p.into_inner()).remove(endpoint);
    }
}

enum Health {
    Whole,
    /// Answers, but holds less than the segment (wiped, or missed the tail).
    Short,
    /// Has not answered for at least the grace period.
    Gone,
    /// Not answering, but not for long enough to give up on it.
    Waiting,
}

/// Restores every lost copy of a Completed segment ending at `l.last_entry_id`. Returns the new replica
/// set when a node was replaced, `None` when the set is unchanged (nothing lost, or copied in place).
pub(crate) async fn repair(
    ctx: &Context,
    silence: &Silence,
    grace: Duration,
    segment: SegmentRef,
    l: &Located,
) -> Result<Option<QuorumInfo>, SegmentError> {
    let last = l.last_entry_id;
    if last < 0 {
        return Ok(None);
    }
    let mut health = Vec::new();
    for endpoint in &l.quorum.nodes {
        let h = match last_durable(ctx, segment, endpoint).await {
            Ok(end) => {
                silence.answered(endpoint);
                if end >= last { Health::Whole } else { Health::Short }
            }
            Err(f) if f.code == 0 => {
                if silence.silent_for(endpoint) >= grace {
                    Health::Gone
                } else {
                    Health::Waiting
                }
            }
            Err(_) => {
                silence.answered(endpoint);
                Health::Short
            }
        };
        health.push(h);
    }
    let source = l.quorum.nodes.iter().zip(&health).find(|(_, h)| matches!(h, Health::Whole)).map(|(e, _)| e.clone());
    let lost: Vec<usize> =
        health.iter().enumerate().filter(|(_, h)| matches!(h, Health::Short | Health::Gone)).map(|(i, _)| i).collect();
    if lost.is_empty() {
        return Ok(None);
    }
    let Some(source) = source else {
        tracing::warn!(%segment, "no replica holds the whole segment; nothing to repair from");
        return Ok(None);
    };
    let mut quorum = l.quorum.clone();
    let mut replaced = false;
    for i in lost {
        let endpoint = quorum.nodes[i].clone();
        // In place first: a wiped node takes the segment afresh. A node that refuses (it keeps a partial or
        // finalized copy) or is gone is replaced by one outside the ensemble.
        if matches!(health[i], Health::Short) && copy(ctx, segment, &source, &endpoint, last).await.is_ok() {
            tracing::info!(%segment, node = %endpoint, last, "replica copied again in place");
            continue;
        }
        let Some(target) = replacement(ctx, &quorum.nodes).await else {
            tracing::warn!(%segment, node = %endpoint, "a lost replica has no replacement node; the segment stays short of a copy");
            continue;
        };
        copy(ctx, segment, &source, &target.endpoint, last).await?;
        tracing::info!(%segment, lost = %endpoint, new = %target.endpoint, last, "replica replaced");
        quorum.nodes[i] = target.endpoint.clone();
        if let Some(r) = quorum.replicas.iter_mut().find(|r| r.endpoint == endpoint) {
            *r = woodpecker_proto::meta::QuorumNode {
                endpoint: target.endpoint,
                node_id: target.node_id,
                cluster_name: target.cluster_name,
                region: target.region,
                az: target.az,
                resource_group: target.resource_group,
                tags: target.tags,
            };
        }
        replaced = true;
    }
    Ok(replaced.then_some(quorum))
}

async fn last_durable(ctx: &Context, segment: SegmentRef, endpoint: &str) -> Result<EntryId, NodeFailure> {
    let req = GetSegmentLastAddConfirmedRequest {
        bucket_name: ctx.bucket.clone(),
        root_path: ctx.root_path.clone(),
        log_id: segment.log_id,
        segment_id: segment.segment_id,
    };
    let mut c = ctx.nodes.client(endpoint).map_err(NodeFailure::transport)?;
    let r = nodes::bounded(&ctx.nodes, endpoint, ctx.call_timeout, c.get_segment_last_add_confirmed(req)).await?;
    nodes::check(r.status.as_ref())?;
    Ok(r.last_entry_id)
}

/// A live node outside `ensemble`, as the cluster's own selection picks it.
async fn replacement(ctx: &Context, ensemble: &[String]) -> Option<woodpecker_proto::logstore::NodeMeta> {
    let req = SelectNodesRequest {
        filters: vec![NodeFilter { limit: (ensemble.len() + 1) as i32, ..Default::default() }],
        ..Default::default()
    };
    for seed in ensemble.iter().chain(ctx.seeds.iter()) {
        let Ok(mut c) = ctx.nodes.client(seed) else { continue };
        let Ok(r) = nodes::bounded(&ctx.nodes, seed, ctx.call_timeout, c.select_nodes(req.clone())).await else {
            continue;
        };
        if nodes::check(r.status.as_ref()).is_err() {
            continue;
        }
        if let Some(n) =
            r.nodes.into_iter().find(|n| !ensemble.contains(&n.endpoint) && !ctx.nodes.is_suspect(&n.endpoint))
        {
            return Some(n);
        }
    }
    None
}

/// Copies entries `0..=last` from `source` to `target` and completes the segment there at `last`.
async fn copy(
    ctx: &Context,
    segment: SegmentRef,
    source: &str,
    target: &str,
    last: EntryId,
) -> Result<(), SegmentError> {
    let read_failed = |f: NodeFailure| f.into_error(segment, source, "read for repair");
    let mut from = 0;
    while from <= last {
        let mut src = ctx.nodes.client(source).map_err(|e| read_failed(NodeFailure::transport(e)))?;
        let req = GetBatchEntriesAdvRequest {
            bucket_name: ctx.bucket.clone(),
            root_path: ctx.root_path.clone(),
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            from_entry_id: from,
            max_entries: COPY_BATCH as i64,
            last_read_state: None,
        };
        let r = nodes::bounded(&ctx.nodes, source, ctx.call_timeout, src.get_batch_entries_adv(req))
            .await
            .and_then(|r| nodes::check(r.status.as_ref()).map(|()| r.result))
            .map_err(read_failed)?;
        let entries: Vec<LogEntry> = r
            .map(|b| b.entries)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.entry_id >= from && e.entry_id <= last)
            .collect();
        let Some(next) = entries.last().map(|e| e.entry_id + 1) else {
            return Err(SegmentError::Missing { segment, what: format!("entry {from} on {source}, a whole replica") });
        };
        if entries.iter().enumerate().any(|(i, e)| e.entry_id != from + i as i64) {
            return Err(SegmentError::Missing { segment, what: format!("a gap after entry {from} on {source}") });
        }
        append(ctx, segment, target, entries).await?;
        from = next;
    }
    recovery::complete(ctx, segment, &[target.to_owned()], 1, last).await
}

/// One append of consecutive entries to `target`, sent and waited on as the writer sends a block.
async fn append(ctx: &Context, segment: SegmentRef, target: &str, entries: Vec<LogEntry>) -> Result<(), SegmentError> {
    let (first, last) = (entries[0].entry_id, entries[entries.len() - 1].entry_id);
    let req = AddEntriesRequest {
        bucket_name: ctx.bucket.clone(),
        root_path: ctx.root_path.clone(),
        log_id: segment.log_id,
        entries,
    };
    super::writer::send_block(ctx, target, req, first, last)
        .await
        .map_err(|f| f.into_error(segment, target, "append for repair"))
}
