//! Service mode (`woodpecker.storage.type: service`): segments live on a cluster of LogStore servers,
//! each replicated to an ensemble of nodes chosen per segment and acknowledged at the ack quorum.
//!
//! ```text
//!   writer ─ place(): SelectNodes on a seed ─▶ es nodes, recorded in the segment's metadata
//!          ─ write_block ─▶ AddEntries to every live replica; durable once aq synced it   (writer.rs)
//!          ─ roll / close ─▶ CompleteSegment(LAC) on the live replicas                   (recovery.rs)
//!   next writer ─ fence ─▶ FenceSegment on all; es−aq+1 answers; end = their maximum      (recovery.rs)
//!   reader ─ GetBatchEntriesAdv on the replicas (own zone first, sticky); Sealed → objects (reader.rs)
//!   auditor ─ CompactSegment on one replica after another (uploads m_<n>.blk + footer)
//! ```
//!
//! The backend learns each segment's replica set from its metadata through [`SegmentBackend::locate`];
//! a call about a segment it was not told of fails with `Unplaced` rather than guess.

mod nodes;
mod placement;
mod reader;
mod recovery;
mod repair;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use woodpecker_core::config::Config;
use woodpecker_core::ids::{EntryId, LogId};
use woodpecker_proto::logstore::{
    CleanSegmentRequest, CompactSegmentRequest, GetSegmentLastAddConfirmedRequest, MarkLogDeletedRequest,
};
use woodpecker_proto::meta::{QuorumInfo, SegmentMetadata, SegmentState};
use woodpecker_storage::segment::{
    SegmentBackend, SegmentError, SegmentReader, SegmentRef, SegmentSummary, SegmentWriter,
};

use self::nodes::{NodeFailure, Nodes};
use self::writer::{ReplicaLimits, ServiceSegmentWriter};

/// What every part of the backend shares: connections, the request's bucket and root path, limits.
#[derive(Debug)]
pub(crate) struct Context {
    nodes: Nodes,
    bucket: String,
    root_path: String,
    limits: ReplicaLimits,
    /// Bound of one fence, completion, read, compaction or cleanup call.
    call_timeout: Duration,
    /// The client's own region and zone (`REGION`, `AVAILABILITY_ZONE`), for reading nearby replicas.
    region: String,
    zone: String,
    /// The compacted objects of Sealed segments, read directly.
    direct: Arc<dyn SegmentBackend>,
    /// Every pool's seeds.
    seeds: Vec<String>,
}

/// What the metadata says of a segment.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    quorum: QuorumInfo,
    state: SegmentState,
    last_entry_id: EntryId,
}

impl Located {
    fn aq(&self) -> usize {
        (self.quorum.aq.max(1) as usize).min(self.quorum.nodes.len().max(1))
    }
}

/// What the backend knows of one segment, shared with the segment's readers.
pub(crate) type LocatedSlot = Arc<Mutex<Option<Arc<Located>>>>;

/// Segments on a LogStore cluster.
#[derive(Debug)]
pub struct ServiceSegmentBackend {
    ctx: Arc<Context>,
    quorum: woodpecker_core::config::QuorumConfig,
    select_timeout: Duration,
    /// Per segment, what its metadata says, shared with its readers so they see it become Sealed.
    segments: Mutex<HashMap<SegmentRef, LocatedSlot>>,
    /// The end each fence found, for the completion that follows it.
    fenced: Mutex<HashMap<SegmentRef, recovery::Fenced>>,
    /// Since when each replica node has not answered, for repair.
    silence: repair::Silence,
    repair_grace: Duration,
}

impl ServiceSegmentBackend {
    /// A backend for the cluster `cfg.woodpecker.client.quorum` names; `direct` reads Sealed segments
    /// from the object storage the servers compact into (`minio.bucketName`, `minio.rootPath`).
    pub fn new(cfg: &Config, direct: Arc<dyn SegmentBackend>) -> Self {
        let client = &cfg.woodpecker.client;
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let ctx = Context {
            nodes: Nodes::new(
                Duration::from_secs(5)
                    .min(client.segment_append.first_response_timeout.max(Duration::from_millis(100))),
            ),
            bucket: cfg.minio.bucket_name.clone(),
            root_path: cfg.minio.root_path.clone(),
            limits: ReplicaLimits {
                first_response: client.segment_append.first_response_timeout.max(Duration::from_millis(10)),
                ack: client.segment_append.ack_timeout.max(Duration::from_millis(10)),
            },
            call_timeout: recovery::DEFAULT_CALL_TIMEOUT
                .min(client.segment_append.ack_timeout.max(Duration::from_secs(1))),
            region: env("REGION"),
            zone: env("AVAILABILITY_ZONE"),
            direct,
            seeds: client.quorum.quorum_buffer_pools.iter().flat_map(|p| p.seeds.iter().cloned()).collect(),
        };
        let quorum = client.quorum.clone();
        let select_timeout = quorum.select_timeout;
        let repair_grace = quorum.repair_grace_period;
        Self {
            ctx: Arc::new(ctx),
            quorum,
            select_timeout,
            segments: Mutex::new(HashMap::new()),
            fenced: Mutex::new(HashMap::new()),
            silence: repair::Silence::default(),
            repair_grace,
        }
    }

    fn slot(&self, segment: SegmentRef) -> LocatedSlot {
        self.segments.lock().unwrap_or_else(|p| p.into_inner()).entry(segment).or_default().clone()
    }

    fn located(&self, segment: SegmentRef) -> Result<Arc<Located>, SegmentError> {
        let slot = self.slot(segment);
        let current = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match current {
            Some(l) if !l.quorum.nodes.is_empty() && l.quorum.id > 0 => Ok(l),
            _ => Err(SegmentError::Unplaced { segment }),
        }
    }

    /// Sends `call` to every replica at once; returns how many succeeded and what the others said.
    async fn on_all<F, Fut>(&self, replicas: &[String], call: F) -> (usize, Vec<String>)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<(), NodeFailure>>,
    {
        let results = futures::future::join_all(replicas.iter().map(|e| {
            let fut = call(e.clone());
            async move { (e.clone(), fut.await) }
        }))
        .await;
        let mut ok = 0;
        let mut errors = Vec::new();
        for (e, r) in results {
            match r {
                Ok(()) => ok += 1,
                Err(f) => errors.push(format!("{e}: {f}")),
            }
        }
        (ok, errors)
    }
}

#[async_trait]
impl SegmentBackend for ServiceSegmentBackend {
    fn describe(&self) -> String {
        let seeds: Vec<&str> =
            self.quorum.quorum_buffer_pools.iter().flat_map(|p| p.seeds.iter().map(String::as_str)).collect();
        format!("service:[{}]", seeds.join(","))
    }

    fn active_reads_are_complete(&self) -> bool {
        false
    }

    async fn place(&self, segment: SegmentRef) -> Result<Option<QuorumInfo>, SegmentError> {
        placement::choose(&self.ctx.nodes, &self.quorum, self.ctx.call_timeout, self.select_timeout, segment)
            .await
            .map(Some)
    }

    fn locate(&self, segment: SegmentRef, meta: &SegmentMetadata) {
        let Some(quorum) = meta.quorum.clone() else { return };
        let located = Located { quorum, state: meta.state(), last_entry_id: meta.last_entry_id };
        *self.slot(segment).lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(located));
    }

    async fn create_writer(&self, segment: SegmentRef) -> Result<Box<dyn SegmentWriter>, SegmentError> {
        let l = self.located(segment)?;
        Ok(Box::new(ServiceSegmentWriter::new(self.ctx.clone(), segment, l.quorum.nodes.clone(), l.aq())))
    }

    async fn fence(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        let l = self.located(segment)?;
        let fenced = recovery::fence(&self.ctx, segment, &l.quorum.nodes, l.aq()).await?;
        let last = fenced.last_entry_id;
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).insert(segment, fenced);
        Ok(last)
    }

    async fn finalize(&self, segment: SegmentRef) -> Result<SegmentSummary, SegmentError> {
        let l = self.located(segment)?;
        let fenced = self.fenced.lock().unwrap_or_else(|p| p.into_inner()).get(&segment).cloned();
        let fenced = match fenced {
            Some(f) => f,
            None => recovery::fence(&self.ctx, segment, &l.quorum.nodes, l.aq()).await?,
        };
        recovery::complete(
            &self.ctx,
            segment,
            &fenced.answered,
            l.aq().min(fenced.answered.len()),
            fenced.last_entry_id,
        )
        .await?;
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).remove(&segment);
        Ok(SegmentSummary { last_entry_id: fenced.last_entry_id, size: 0, blocks: 0 })
    }

    async fn visible_end(&self, segment: SegmentRef) -> Result<EntryId, SegmentError> {
        let l = self.located(segment)?;
        if l.state != SegmentState::Active {
            return Ok(l.last_entry_id);
        }
        let ctx = &self.ctx;
        let answers = futures::future::join_all(l.quorum.nodes.iter().map(|endpoint| async move {
            let req = GetSegmentLastAddConfirmedRequest {
                bucket_name: ctx.bucket.clone(),
                root_path: ctx.root_path.clone(),
                log_id: segment.log_id,
                segment_id: segment.segment_id,
            };
            match ctx.nodes.client(endpoint) {
                Ok(mut c) => {
                    nodes::bounded(&ctx.nodes, endpoint, ctx.call_timeout, c.get_segment_last_add_confirmed(req))
                        .await
                        .and_then(|r| nodes::check(r.status.as_ref()).map(|()| r.last_entry_id))
                }
                Err(e) => Err(NodeFailure::transport(e)),
            }
        }))
        .await;
        let mut end = None;
        let mut errors = Vec::new();
        for (endpoint, a) in l.quorum.nodes.iter().zip(answers) {
            match a {
                Ok(id) => end = Some(end.unwrap_or(-1).max(id)),
                // Nothing written there yet.
                Err(f)
                    if f.code == woodpecker_proto::status::ENTRY_NOT_FOUND.code
                        || f.code == woodpecker_proto::status::NO_BLOCK_FOUND.code =>
                {
                    end = Some(end.unwrap_or(-1))
                }
                Err(f) => errors.push(format!("{endpoint}: {f}")),
            }
        }
        end.ok_or_else(|| SegmentError::Quorum {
            segment,
            what: "reading the acknowledged end",
            needed: 1,
            got: 0,
            ensemble: l.quorum.nodes.len(),
            errors: errors.join("; "),
        })
    }

    async fn open_reader(&self, segment: SegmentRef) -> Result<Box<dyn SegmentReader>, SegmentError> {
        let l = self.located(segment)?;
        Ok(Box::new(reader::ServiceSegmentReader::new(self.ctx.clone(), segment, self.slot(segment), &l)))
    }

    async fn repair(&self, segment: SegmentRef) -> Result<Option<QuorumInfo>, SegmentError> {
        let l = self.located(segment)?;
        if l.state != SegmentState::Completed {
            return Ok(None);
        }
        repair::repair(&self.ctx, &self.silence, self.repair_grace, segment, &l).await
    }

    async fn compact(&self, segment: SegmentRef) -> Result<u64, SegmentError> {
        let l = self.located(segment)?;
        let mut errors = Vec::new();
        for endpoint in &l.quorum.nodes {
            let req = CompactSegmentRequest {
                bucket_name: self.ctx.bucket.clone(),
                root_path: self.ctx.root_path.clone(),
                log_id: segment.log_id,
                segment_id: segment.segment_id,
            };
            let res = match self.ctx.nodes.client(endpoint) {
                // Compaction uploads the whole segment: allow it the ack timeout, not a short call.
                Ok(mut c) => nodes::bounded(
                    &self.ctx.nodes,
                    endpoint,
                    self.ctx.limits.ack.max(self.ctx.call_timeout),
                    c.compact_segment(req),
                )
                .await
                .and_then(|r| nodes::check(r.status.as_ref()).map(|()| r.metadata)),
                Err(e) => Err(NodeFailure::transport(e)),
            };
            match res {
                Ok(meta) => return Ok(meta.map(|m| m.size.max(0) as u64).unwrap_or(0)),
                Err(f) => errors.push(format!("{endpoint}: {f}")),
            }
        }
        Err(SegmentError::Quorum {
            segment,
            what: "a compaction",
            needed: 1,
            got: 0,
            ensemble: l.quorum.nodes.len(),
            errors: errors.join("; "),
        })
    }

    async fn delete_segment(&self, segment: SegmentRef) -> Result<(), SegmentError> {
        let l = self.located(segment)?;
        let ctx = self.ctx.clone();
        let (ok, errors) = self
            .on_all(&l.quorum.nodes, |endpoint| {
                let ctx = ctx.clone();
                async move {
                    let req = CleanSegmentRequest {
                        bucket_name: ctx.bucket.clone(),
                        root_path: ctx.root_path.clone(),
                        log_id: segment.log_id,
                        segment_id: segment.segment_id,
                        flag: 0,
                    };
                    let mut c = ctx.nodes.client(&endpoint).map_err(NodeFailure::transport)?;
                    let r = nodes::bounded(&ctx.nodes, &endpoint, ctx.call_timeout, c.clean_segment(req)).await?;
                    nodes::check(r.status.as_ref())
                }
            })
            .await;
        if ok < l.quorum.nodes.len() {
            return Err(SegmentError::Quorum {
                segment,
                what: "a cleanup",
                needed: l.quorum.nodes.len(),
                got: ok,
                ensemble: l.quorum.nodes.len(),
                errors: errors.join("; "),
            });
        }
        self.ctx.direct.delete_segment(segment).await?;
        self.segments.lock().unwrap_or_else(|p| p.into_inner()).remove(&segment);
        Ok(())
    }

    async fn delete_log(&self, log_id: LogId) -> Result<(), SegmentError> {
        let mut endpoints: Vec<String> = {
            let segments = self.segments.lock().unwrap_or_else(|p| p.into_inner());
            segments
                .iter()
                .filter(|(s, _)| s.log_id == log_id)
                .filter_map(|(_, slot)| slot.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .flat_map(|l| l.quorum.nodes.clone())
                .collect()
        };
        endpoints.sort();
        endpoints.dedup();
        // Upstream marks nodes one after the other and stops at the first failure; the same here, so a
        // failed delete is simply retried.
        for endpoint in &endpoints {
            let req = MarkLogDeletedRequest {
                bucket_name: self.ctx.bucket.clone(),
                root_path: self.ctx.root_path.clone(),
                log_id,
            };
            let any = SegmentRef { log_id, segment_id: 0 };
            let mut c = self
                .ctx
                .nodes
                .client(endpoint)
                .map_err(|e| NodeFailure::transport(e).into_error(any, endpoint, "mark log deleted"))?;
            nodes::bounded(&self.ctx.nodes, endpoint, self.ctx.call_timeout, c.mark_log_deleted(req))
                .await
                .and_then(|r| nodes::check(r.status.as_ref()))
                .map_err(|f| f.into_error(any, endpoint, "mark log deleted"))?;
        }
        self.ctx.direct.delete_log(log_id).await?;
        self.segments.lock().unwrap_or_else(|p| p.into_inner()).retain(|s, _| s.log_id != log_id);
        Ok(())
    }
}
