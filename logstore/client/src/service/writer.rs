//! Writing one segment to its replicas: every block goes to every live replica as one `AddEntries`
//! stream, and is durable once the ack quorum has synced all of it.
//!
//! ```text
//!  write_block(b) ──▶ replica A: AddEntries(b) ─ Buffered ─ Synced… ─┐
//!                 ──▶ replica B: AddEntries(b) ─ Buffered ─ Synced… ─┼─ aq of them synced every entry ─▶ Ok
//!                 ──▶ replica C: AddEntries(b) ─ (black-holed) ──────┘   (C goes on in the background until
//!                                                                         its deadline, then is dropped)
//! ```
//!
//! Each replica's send runs in its own task, so a slow or silent replica never holds up a block that the
//! others made durable: it has `ackTimeout` to sync each block, after which it is dropped from the segment
//! and the segment asks to roll (see [`SegmentWriter::roll_reason`]). Later blocks go only to the replicas
//! still live; once fewer than `aq` are, blocks fail at once (the writer then seals the segment at its
//! durable end). A replica that answers "fenced" or "finalized" means another writer took the segment.
//! After every block the contiguous acknowledged end (LAC) is pushed to the replicas in the background,
//! newest value only, so that replicas serve readers up to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use woodpecker_core::ids::EntryId;
use woodpecker_proto::logstore::{AddEntriesRequest, AddEntryState, LogEntry, UpdateLastAddConfirmedRequest};
use woodpecker_storage::segment::{BlockToWrite, SegmentError, SegmentRef, SegmentSummary, SegmentWriter};

use super::nodes::{self, NodeFailure};
use super::{Context, recovery};

/// How long a replica may take to sync one block, and to answer its first frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaLimits {
    pub first_response: Duration,
    pub ack: Duration,
}

/// Blocks a replica may have unfinished at once. One further behind is dropped from the segment: each
/// unfinished block holds its bytes, so a stopped replica would otherwise hold up to ackTimeout's worth of
/// the write rate in memory (1.25 GB measured at 60 MB/s before this bound).
const MAX_REPLICA_BACKLOG: usize = 16;

#[derive(Debug)]
struct Replica {
    endpoint: String,
    /// Why it was dropped from the segment, once it was.
    lost: Mutex<Option<String>>,
    /// Blocks sent to it and not finished (synced or failed).
    backlog: std::sync::atomic::AtomicUsize,
}

impl Replica {
    fn is_live(&self) -> bool {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    fn drop_with(&self, why: String) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.is_none() {
            tracing::warn!(node = %self.endpoint, %why, "replica dropped from the segment");
            *lost = Some(why);
        }
    }
}

/// Blocks acknowledged so far, to find the contiguous end among blocks that finish out of order.
#[derive(Debug)]
struct Acked {
    lac: EntryId,
    /// First entry → last entry of blocks acknowledged beyond `lac`.
    ahead: BTreeMap<EntryId, EntryId>,
    bytes: u64,
}

/// The writer of one segment in service mode.
#[derive(Debug)]
pub(crate) struct ServiceSegmentWriter {
    segment: SegmentRef,
    ctx: Arc<Context>,
    replicas: Vec<Arc<Replica>>,
    aq: usize,
    acked: Mutex<Acked>,
    lac: watch::Sender<EntryId>,
}

impl ServiceSegmentWriter {
    pub(crate) fn new(ctx: Arc<Context>, segment: SegmentRef, endpoints: Vec<String>, aq: usize) -> Self {
        let replicas: Vec<Arc<Replica>> = endpoints
            .into_iter()
            .map(|endpoint| Arc::new(Replica { endpoint, lost: Mutex::new(None), backlog: Default::default() }))
            .collect();
        let (lac, rx) = watch::channel(-1);
        tokio::spawn(push_lac(ctx.clone(), segment, replicas.clone(), rx));
        Self { segment, ctx, replicas, aq, acked: Mutex::new(Acked { lac: -1, ahead: BTreeMap::new(), bytes: 0 }), lac }
    }

    fn live(&self) -> Vec<Arc<Replica>> {
        self.replicas.iter().filter(|r| r.is_live()).cloned().collect()
    }

    fn record_ack(&self, first: EntryId, last: EntryId, bytes: u64) {
        let mut a = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        a.bytes += bytes;
        a.ahead.insert(first, last);
        loop {
            let next = a.lac + 1;
            match a.ahead.remove(&next) {
                Some(end) => a.lac = end,
                None => break,
            }
        }
        let lac = a.lac;
        drop(a);
        self.lac.send_if_modified(|v| {
            let newer = lac > *v;
            if newer {
                *v = lac;
            }
            newer
        });
    }
}

#[async_trait]
impl SegmentWriter for ServiceSegmentWriter {
    fn max_parallel_blocks(&self) -> usize {
        4
    }

    fn roll_reason(&self) -> Option<String> {
        let lost: Vec<String> = self
            .replicas
            .iter()
            .filter_map(|r| {
                r.lost.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|w| format!("{}: {w}", r.endpoint))
            })
            .collect();
        (!lost.is_empty()).then(|| format!("replicas lost: {}", lost.join("; ")))
    }

    async fn write_block(&self, block: BlockToWrite) -> Result<(), SegmentError> {
        use std::sync::atomic::Ordering;
        for r in self.live() {
            let behind = r.backlog.load(Ordering::Acquire);
            if behind >= MAX_REPLICA_BACKLOG {
                r.drop_with(format!("{behind} blocks behind the others"));
                self.ctx.nodes.suspect(&r.endpoint);
            }
        }
        let live = self.live();
        let ensemble = self.replicas.len();
        if live.len() < self.aq {
            return Err(SegmentError::Quorum {
                segment: self.segment,
                what: "an append",
                needed: self.aq,
                got: live.len(),
                ensemble,
                errors: self.roll_reason().unwrap_or_else(|| "no replica left".into()),
            });
        }
        let (first, last) = (block.first_entry_id, block.last_entry_id());
        let bytes: u64 = block.entries.iter().map(|e| e.len() as u64).sum();
        let entries: Vec<LogEntry> = block
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| LogEntry {
                seg_id: self.segment.segment_id,
                entry_id: first + i as i64,
                values: e.to_bytes(),
            })
            .collect();
        let req = AddEntriesRequest {
            bucket_name: self.ctx.bucket.clone(),
            root_path: self.ctx.root_path.clone(),
            log_id: self.segment.log_id,
            entries,
        };
        let mut sends: FuturesUnordered<_> = live
            .iter()
            .map(|r| {
                let (ctx, r, req) = (self.ctx.clone(), r.clone(), req.clone());
                r.backlog.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let res = send_block(&ctx, &r.endpoint, req, first, last).await;
                    r.backlog.fetch_sub(1, Ordering::AcqRel);
                    if let Err(f) = &res
                        && !f.is_not_writable()
                    {
                        r.drop_with(format!("block at entry {first}: {f}"));
                        ctx.nodes.suspect(&r.endpoint);
                    }
                    (r, res)
                })
            })
            .collect();
        let mut synced = 0usize;
        let mut failures: Vec<(String, NodeFailure)> = Vec::new();
        let tolerable = live.len() - self.aq;
        while let Some(joined) = sends.next().await {
            let (r, res) = match joined {
                Ok(v) => v,
                Err(e) => {
                    return Err(SegmentError::Quorum {
                        segment: self.segment,
                        what: "an append",
                        needed: self.aq,
                        got: synced,
                        ensemble,
                        errors: format!("a replica send panicked: {e}"),
                    });
                }
            };
            match res {
                Ok(()) => {
                    synced += 1;
                    if synced >= self.aq {
                        self.record_ack(first, last, bytes);
                        return Ok(());
                    }
                }
                Err(f) => {
                    if f.is_not_writable() {
                        return Err(f.into_error(self.segment, &r.endpoint, "append"));
                    }
                    failures.push((r.endpoint.clone(), f));
                    if failures.len() > tolerable {
                        break;
                    }
                }
            }
        }
        Err(SegmentError::Quorum {
            segment: self.segment,
            what: "an append",
            needed: self.aq,
            // Those that synced it or had not answered yet when the quorum became impossible.
            got: live.len() - failures.len(),
            ensemble,
            errors: failures.iter().map(|(n, f)| format!("{n}: {f}")).collect::<Vec<_>>().join("; "),
        })
    }

    async fn finalize(&self, last_block_id: i64) -> Result<SegmentSummary, SegmentError> {
        let (lac, bytes) = {
            let a = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            (a.lac, a.bytes)
        };
        let live: Vec<String> = self.live().iter().map(|r| r.endpoint.clone()).collect();
        recovery::complete(&self.ctx, self.segment, &live, self.aq, lac).await?;
        Ok(SegmentSummary { last_entry_id: lac, size: bytes, blocks: (last_block_id + 1).max(0) as u64 })
    }

    async fn close(&self) -> Result<(), SegmentError> {
        Ok(())
    }
}

/// Sends one block to one replica and waits until it synced every entry, retrying the whole block on
/// statuses the node marks retriable (a full buffer window, disk pressure) until the deadline.
pub(crate) async fn send_block(
    ctx: &Context,
    endpoint: &str,
    req: AddEntriesRequest,
    first: EntryId,
    last: EntryId,
) -> Result<(), NodeFailure> {
    let limits = ctx.limits;
    // The node's last refusal, so that a deadline passed while it kept refusing says why (disk pressure,
    // a full buffer) instead of only that time ran out.
    let refused: Mutex<Option<NodeFailure>> = Mutex::new(None);
    let attempt = async {
        let mut backoff = Duration::from_millis(20);
        loop {
            match send_once(ctx, endpoint, req.clone(), first, last).await {
                Err(f) if f.code != 0 && f.retriable => {
                    tracing::debug!(node = endpoint, first, failure = %f, "append refused for now; resending");
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(limits.ack, attempt).await {
        Ok(r) => r,
        Err(_) => {
            ctx.nodes.forget(endpoint);
            let why = match refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(f) => format!("; the node kept refusing them: {f}"),
                None => String::new(),
            };
            Err(NodeFailure::transport(format!("entries {first}..={last} not synced within {:?}{why}", limits.ack)))
        }
    }
}

async fn send_once(
    ctx: &Context,
    endpoint: &str,
    req: AddEntriesRequest,
    first: EntryId,
    last: EntryId,
) -> Result<(), NodeFailure> {
    let mut client = ctx.nodes.client(endpoint).map_err(NodeFailure::transport)?;
    let opened = tokio::time::timeout(ctx.limits.first_response, client.add_entries(req)).await;
    let mut stream = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => {
            ctx.nodes.forget(endpoint);
            return Err(NodeFailure::from_grpc(&s));
        }
        Err(_) => {
            ctx.nodes.forget(endpoint);
            return Err(NodeFailure::transport(format!("no answer within {:?}", ctx.limits.first_response)));
        }
    };
    let count = (last - first + 1) as usize;
    let mut done = vec![false; count];
    let mut remaining = count;
    loop {
        let frame = match stream.message().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(NodeFailure::transport(format!(
                    "the append stream ended with {remaining} of entries {first}..={last} not synced"
                )));
            }
            Err(s) => return Err(NodeFailure::from_grpc(&s)),
        };
        match AddEntryState::try_from(frame.state).unwrap_or(AddEntryState::Failed) {
            AddEntryState::Buffered => {}
            AddEntryState::Synced => {
                for id in frame.entry_id {
                    if (first..=last).contains(&id) && !std::mem::replace(&mut done[(id - first) as usize], true) {
                        remaining -= 1;
                    }
                }
                if remaining == 0 {
                    finish_stream(&mut stream).await;
                    return Ok(());
                }
            }
            AddEntryState::Failed => {
                nodes::check(frame.status.as_ref())?;
                return Err(NodeFailure {
                    code: 1,
                    retriable: true,
                    reason: "the node failed the append without a status".into(),
                });
            }
        }
    }
}

/// Reads a stream whose answer is complete to its end (briefly), instead of dropping it open: a dropped
/// open stream is reset (RST_STREAM), and a node that sees thousands of resets from one connection may
/// refuse it as abusive (HTTP/2 "rapid reset" protection).
async fn finish_stream<T>(stream: &mut tonic::Streaming<T>) {
    let _ =
        tokio::time::timeout(Duration::from_secs(1), async { while let Ok(Some(_)) = stream.message().await {} }).await;
}

/// Pushes the newest acknowledged end to every live replica, one fan-out at a time, until the writer is
/// dropped. Best effort: a replica that misses a push serves readers up to an older end until the next.
async fn push_lac(
    ctx: Arc<Context>,
    segment: SegmentRef,
    replicas: Vec<Arc<Replica>>,
    mut rx: watch::Receiver<EntryId>,
) {
    while rx.changed().await.is_ok() {
        let lac = *rx.borrow_and_update();
        let pushes = replicas.iter().filter(|r| r.is_live()).map(|r| {
            let ctx = ctx.clone();
            let endpoint = r.endpoint.clone();
            async move {
                let Ok(mut client) = ctx.nodes.client(&endpoint) else { return };
                let req = UpdateLastAddConfirmedRequest {
                    bucket_name: ctx.bucket.clone(),
                    root_path: ctx.root_path.clone(),
                    log_id: segment.log_id,
                    segment_id: segment.segment_id,
                    last_add_confirmed: lac,
                };
                let res =
                    nodes::bounded(&ctx.nodes, &endpoint, ctx.limits.ack, client.update_last_add_confirmed(req)).await;
                if let Err(f) = res.and_then(|r| nodes::check(r.status.as_ref())) {
                    tracing::debug!(node = %endpoint, %segment, lac, failure = %f, "LAC push failed");
                }
            }
        });
        futures::future::join_all(pushes).await;
    }
}
