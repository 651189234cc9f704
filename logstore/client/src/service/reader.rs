//! Reading one segment from its replicas: sticky to the replica that served the last batch, replicas in
//! the client's own zone first, the next replica whenever one has nothing (or cannot be reached).
//!
//! A replica's "not found" or "end of file" is never taken as the segment's end: a replica may have
//! missed entries (it was down, or wiped and restarted empty) or not have learnt the newest LAC yet. The
//! segment's end comes from its metadata only (the client's reader checks it), so a read where no
//! replica has the next entry returns an empty batch and is polled again. A Sealed segment is read from
//! object storage directly, as is any Sealed segment whose replicas all fail.

use std::sync::Arc;

use async_trait::async_trait;
use woodpecker_core::ids::EntryId;
use woodpecker_proto::logstore::{GetBatchEntriesAdvRequest, LastReadState};
use woodpecker_proto::meta::SegmentState;
use woodpecker_storage::segment::{ReadBatch, SegmentError, SegmentReader, SegmentRef};

use super::nodes::{self, NodeFailure};
use super::{Context, Located, LocatedSlot};

/// Reads one segment in service mode.
#[derive(Debug)]
pub(crate) struct ServiceSegmentReader {
    segment: SegmentRef,
    ctx: Arc<Context>,
    located: LocatedSlot,
    /// Replicas in the order they are asked; `order[sticky]` first.
    order: Vec<String>,
    sticky: usize,
    /// The resume state the sticky replica gave with its last batch.
    resume: Option<LastReadState>,
    /// Reader over the compacted objects, once the segment is Sealed.
    direct: Option<Box<dyn SegmentReader>>,
}

impl ServiceSegmentReader {
    pub(crate) fn new(ctx: Arc<Context>, segment: SegmentRef, located: LocatedSlot, current: &Located) -> Self {
        let order = read_order(current, &ctx.region, &ctx.zone);
        Self { segment, ctx, located, order, sticky: 0, resume: None, direct: None }
    }

    fn current(&self) -> Option<Arc<Located>> {
        self.located.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn read_direct(
        &mut self,
        from: EntryId,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<ReadBatch, SegmentError> {
        if self.direct.is_none() {
            self.direct = Some(self.ctx.direct.open_reader(self.segment).await?);
        }
        match self.direct.as_mut() {
            Some(r) => r.read_batch(from, max_entries, max_bytes).await,
            None => Ok(ReadBatch::default()),
        }
    }
}

/// Replicas in the client's region and zone first (both must be set and match), otherwise as recorded.
fn read_order(located: &Located, region: &str, zone: &str) -> Vec<String> {
    let mut order: Vec<(bool, String)> = located
        .quorum
        .nodes
        .iter()
        .map(|endpoint| {
            let local = !zone.is_empty()
                && located
                    .quorum
                    .replicas
                    .iter()
                    .any(|r| &r.endpoint == endpoint && r.az == zone && (region.is_empty() || r.region == region));
            (!local, endpoint.clone())
        })
        .collect();
    order.sort_by_key(|(remote, _)| *remote);
    order.into_iter().map(|(_, e)| e).collect()
}

#[async_trait]
impl SegmentReader for ServiceSegmentReader {
    async fn read_batch(
        &mut self,
        from: EntryId,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<ReadBatch, SegmentError> {
        let located = self.current();
        if self.direct.is_some() || located.as_ref().is_some_and(|l| l.state == SegmentState::Sealed) {
            return self.read_direct(from, max_entries, max_bytes).await;
        }
        let mut failures = Vec::new();
        for step in 0..self.order.len() {
            let i = (self.sticky + step) % self.order.len();
            let endpoint = self.order[i].clone();
            let resume = if i == self.sticky { self.resume.clone() } else { None };
            let req = GetBatchEntriesAdvRequest {
                bucket_name: self.ctx.bucket.clone(),
                root_path: self.ctx.root_path.clone(),
                log_id: self.segment.log_id,
                segment_id: self.segment.segment_id,
                from_entry_id: from,
                max_entries: max_entries.max(1) as i64,
                last_read_state: resume.filter(|s| s.segment_id == self.segment.segment_id),
            };
            let res = match self.ctx.nodes.client(&endpoint) {
                Ok(mut c) => {
                    nodes::bounded(&self.ctx.nodes, &endpoint, self.ctx.call_timeout, c.get_batch_entries_adv(req))
                        .await
                        .and_then(|r| nodes::check(r.status.as_ref()).map(|()| r.result))
                }
                Err(e) => Err(NodeFailure::transport(e)),
            };
            match res {
                Ok(Some(result)) if !result.entries.is_empty() => {
                    self.sticky = i;
                    self.resume = result.last_read_state;
                    let entries: Vec<_> = result
                        .entries
                        .into_iter()
                        .filter(|e| e.entry_id >= from)
                        .map(|e| (e.entry_id, e.values))
                        .collect();
                    let _ = max_bytes;
                    return Ok(ReadBatch { entries, end_of_segment: false });
                }
                Ok(_) => failures.push(format!("{endpoint}: nothing from entry {from}")),
                Err(f) => failures.push(format!("{endpoint}: {f}")),
            }
        }
        // No replica has the entry. A Sealed segment (metadata may have moved on since this reader was
        // opened) is read from object storage.
        if self.current().is_some_and(|l| l.state == SegmentState::Sealed) {
            return self.read_direct(from, max_entries, max_bytes).await;
        }
        tracing::trace!(segment = %self.segment, from, failures = %failures.join("; "), "no replica has the entry yet");
        Ok(ReadBatch::default())
    }
}

#[cfg(test)]
mod tests {
    use woodpecker_proto::meta::{QuorumInfo, QuorumNode};

    use super::*;

    fn located(zones: &[(&str, &str)]) -> Located {
        Located {
            quorum: QuorumInfo {
                nodes: zones.iter().map(|(e, _)| (*e).to_owned()).collect(),
                replicas: zones
                    .iter()
                    .map(|(e, z)| QuorumNode {
                        endpoint: (*e).into(),
                        az: (*z).into(),
                        region: "r".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            state: SegmentState::Active,
            last_entry_id: -1,
        }
    }

    #[test]
    fn replicas_of_the_clients_zone_are_asked_first_and_the_rest_keep_their_order() {
        let l = located(&[("a:1", "z1"), ("b:1", "z2"), ("c:1", "z2")]);
        assert_eq!(read_order(&l, "r", "z2"), ["b:1", "c:1", "a:1"]);
        assert_eq!(read_order(&l, "", ""), ["a:1", "b:1", "c:1"], "no zone known: as recorded");
        assert_eq!(read_order(&l, "other", "z2"), ["a:1", "b:1", "c:1"], "another region is not local");
    }
}
