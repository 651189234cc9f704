//! The gRPC `LogStore` service: each RPC checked, scoped and handed to its segment's processor.
//!
//! Frames of an append stream (what the Go client depends on, service-mode.md §2.2):
//! ```text
//!  AddEntries(ids a..b) ─▶ Failed{[a], status}                 admission refused: the whole batch fails here
//!                      └─▶ Buffered{a..b} ─▶ Synced{a..k} ─▶ Synced{k+1..} … ─▶ end
//!                                                        └─▶ Failed{[j], status} ─▶ end   (j and later fail)
//! ```
//! Synced frames carry runs of consecutive durable ids in order; a frame is sent as soon as the run
//! that is durable has been collected, so a lone entry costs one fsync and one frame.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response};
use woodpecker_core::ids::EntryId;
use woodpecker_proto::logstore::log_store_server::LogStore;
use woodpecker_proto::logstore::{
    AddEntriesRequest, AddEntriesResponse, AddEntryRequest, AddEntryResponse, AddEntryState, BatchReadResult,
    CleanSegmentRequest, CleanSegmentResponse, CompactSegmentRequest, CompactSegmentResponse, CompleteSegmentRequest,
    CompleteSegmentResponse, FenceSegmentRequest, FenceSegmentResponse, GetBatchEntriesAdvRequest,
    GetBatchEntriesAdvResponse, GetSegmentBlockCountRequest, GetSegmentBlockCountResponse,
    GetSegmentLastAddConfirmedRequest, GetSegmentLastAddConfirmedResponse, LastReadState, LogEntry,
    MarkInstanceDeletedRequest, MarkInstanceDeletedResponse, MarkLogDeletedRequest, MarkLogDeletedResponse,
    NotifySegmentCompactedRequest, NotifySegmentCompactedResponse, SelectNodesRequest, SelectNodesResponse, Status,
    UpdateLastAddConfirmedRequest, UpdateLastAddConfirmedResponse,
};
use woodpecker_proto::meta::{SegmentMetadata, SegmentState};
use woodpecker_storage::segment::staged::StagedScope;

use crate::node::Node;
use crate::node_state::now_ms;
use crate::processor::SegmentProcessor;
use crate::status;

/// The service over one node.
#[derive(Debug, Clone)]
pub struct LogStoreService {
    node: Arc<Node>,
}

impl LogStoreService {
    /// The service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Checks scope and log and returns the segment's processor.
    async fn processor(
        &self,
        bucket: &str,
        root_path: &str,
        log_id: i64,
        segment_id: i64,
    ) -> Result<(StagedScope, Arc<SegmentProcessor>), Status> {
        let scope = scope(bucket, root_path)?;
        if log_id < 0 || segment_id < 0 {
            return Err(
                status::INVALID_ENTRY_ID.status(format!("log {log_id} segment {segment_id}: ids are never negative"))
            );
        }
        if self.node.markers.is_deleted(&scope, log_id) {
            return Err(status::LOG_BEING_DELETED.status(format!("log {log_id} is deleted on this node")));
        }
        let p = self.node.processors.get(&scope, log_id, segment_id).await?;
        Ok((scope, p))
    }
}

fn scope(bucket: &str, root_path: &str) -> Result<StagedScope, Status> {
    StagedScope::new(bucket, root_path).map_err(|e| status::INVALID_ROOT_PATH.status(e.to_string()))
}

/// A server-stream of frames sent by a task (the task stops when the client goes away).
type FrameStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

fn frame_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> FrameStream<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (Ok(f), rx)) }))
}

/// One append stream's frames, whatever its message type.
trait Frame: Send + 'static {
    fn new(ids: Vec<EntryId>, state: AddEntryState, status: Status) -> Self;
}

impl Frame for AddEntriesResponse {
    fn new(ids: Vec<EntryId>, state: AddEntryState, status: Status) -> Self {
        Self { status: Some(status), entry_id: ids, state: state as i32 }
    }
}

impl Frame for AddEntryResponse {
    fn new(ids: Vec<EntryId>, state: AddEntryState, status: Status) -> Self {
        Self { status: Some(status), entry_id: ids.first().copied().unwrap_or(-1), state: state as i32 }
    }
}

impl LogStoreService {
    /// Admits the entries, then streams Buffered and the Synced / Failed frames (`single`: one id per frame,
    /// as AddEntry's frames carry one).
    async fn append<F: Frame>(
        &self,
        bucket: String,
        root_path: String,
        log_id: i64,
        entries: Vec<LogEntry>,
        single: bool,
    ) -> FrameStream<F> {
        let (tx, rx) = mpsc::channel::<F>(8);
        let refused = |id: EntryId, why: Status| {
            let _ = tx.try_send(F::new(vec![id], AddEntryState::Failed, why));
        };
        let first_id = entries.first().map_or(-1, |e| e.entry_id);
        let admitted = async {
            let Some(first) = entries.first() else {
                return Err(status::EMPTY_PAYLOAD.status("an append without entries"));
            };
            let segment_id = first.seg_id;
            for (i, e) in entries.iter().enumerate() {
                if e.values.is_empty() {
                    return Err(status::EMPTY_PAYLOAD.status(format!("entry {} has no payload", e.entry_id)));
                }
                if e.seg_id != segment_id || e.entry_id != first.entry_id + i as i64 {
                    return Err(status::INVALID_ENTRY_ID.status(format!(
                        "entries of one append must be consecutive ids of one segment: entry {} of segment {} \
                         follows entry {} of segment {segment_id}",
                        e.entry_id, e.seg_id, first.entry_id
                    )));
                }
            }
            self.node.admit_appends()?;
            let (_, p) = self.processor(&bucket, &root_path, log_id, segment_id).await?;
            let batch: Vec<_> = entries.iter().map(|e| (e.entry_id, e.values.clone())).collect();
            p.admit(&batch).await?;
            Ok(p)
        }
        .await;
        let p = match admitted {
            Ok(p) => p,
            Err(why) => {
                refused(first_id, why);
                return frame_stream(rx);
            }
        };
        let ids: Vec<EntryId> = entries.iter().map(|e| e.entry_id).collect();
        tokio::spawn(async move {
            if tx.send(F::new(ids.clone(), AddEntryState::Buffered, status::ok())).await.is_err() {
                return;
            }
            let mut i = 0;
            while i < ids.len() {
                let outcome = tokio::select! {
                    o = p.outcome(ids[i]) => o,
                    () = tx.closed() => return,
                };
                if let Err(why) = outcome {
                    let _ = tx.send(F::new(vec![ids[i]], AddEntryState::Failed, why)).await;
                    return;
                }
                // The run of ids durable already goes in one frame.
                let mut run = vec![ids[i]];
                i += 1;
                while i < ids.len() && !single && matches!(p.outcome_now(ids[i]), Some(Ok(()))) {
                    run.push(ids[i]);
                    i += 1;
                }
                if tx.send(F::new(run, AddEntryState::Synced, status::ok())).await.is_err() {
                    return;
                }
            }
        });
        frame_stream(rx)
    }
}

/// Longest a fence or completion may take here: the Go client waits for every replica's answer without
/// a deadline, so a stuck disk must turn into an error it can act on, not a hang.
pub const FENCE_BOUND: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs `op`, answering a retriable error if it does not finish within [`FENCE_BOUND`].
async fn bounded<T>(what: &str, op: impl std::future::Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(FENCE_BOUND, op).await {
        Ok(r) => r,
        Err(_) => Err(status::UNKNOWN.status(format!("{what} did not finish within {FENCE_BOUND:?} on this node"))),
    }
}

fn code_status(r: &Result<(), Status>) -> Option<Status> {
    Some(match r {
        Ok(()) => status::ok(),
        Err(s) => s.clone(),
    })
}

#[tonic::async_trait]
impl LogStore for LogStoreService {
    type AddEntryStream = FrameStream<AddEntryResponse>;
    type AddEntriesStream = FrameStream<AddEntriesResponse>;

    #[tracing::instrument(level = "debug", skip_all, fields(log = request.get_ref().log_id))]
    async fn add_entry(
        &self,
        request: Request<AddEntryRequest>,
    ) -> Result<Response<Self::AddEntryStream>, tonic::Status> {
        let r = request.into_inner();
        let entries = r.entry.into_iter().collect();
        Ok(Response::new(self.append(r.bucket_name, r.root_path, r.log_id, entries, true).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(log = request.get_ref().log_id, n = request.get_ref().entries.len()))]
    async fn add_entries(
        &self,
        request: Request<AddEntriesRequest>,
    ) -> Result<Response<Self::AddEntriesStream>, tonic::Status> {
        let r = request.into_inner();
        Ok(Response::new(self.append(r.bucket_name, r.root_path, r.log_id, r.entries, false).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(log = request.get_ref().log_id, segment = request.get_ref().segment_id))]
    async fn get_batch_entries_adv(
        &self,
        request: Request<GetBatchEntriesAdvRequest>,
    ) -> Result<Response<GetBatchEntriesAdvResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (_, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            let max = if r.max_entries <= 0 { 200 } else { r.max_entries.min(100_000) as usize };
            p.read(r.from_entry_id, max, self.node.read_max_bytes).await
        }
        .await;
        Ok(Response::new(match result {
            Ok(entries) => GetBatchEntriesAdvResponse {
                status: Some(status::ok()),
                result: Some(BatchReadResult {
                    entries: entries
                        .into_iter()
                        .map(|(entry_id, values)| LogEntry { seg_id: r.segment_id, entry_id, values })
                        .collect(),
                    // Served from data.log: local provenance (flags bit 0 clear), format v6.
                    last_read_state: Some(LastReadState {
                        segment_id: r.segment_id,
                        flags: 0,
                        version: u32::from(woodpecker_core::codec::FORMAT_VERSION),
                        last_block_id: -1,
                        block_offset: -1,
                        block_size: 0,
                        node: self.node.name.clone(),
                    }),
                }),
            },
            Err(s) => GetBatchEntriesAdvResponse { status: Some(s), result: None },
        }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(log = request.get_ref().log_id, segment = request.get_ref().segment_id))]
    async fn fence_segment(
        &self,
        request: Request<FenceSegmentRequest>,
    ) -> Result<Response<FenceSegmentResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (_, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            bounded("FenceSegment", p.fence()).await
        }
        .await;
        Ok(Response::new(match result {
            Ok(last) => FenceSegmentResponse { status: Some(status::ok()), last_entry_id: last },
            Err(s) => FenceSegmentResponse { status: Some(s), last_entry_id: -1 },
        }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(log = request.get_ref().log_id, segment = request.get_ref().segment_id, lac = request.get_ref().last_add_confirmed))]
    async fn complete_segment(
        &self,
        request: Request<CompleteSegmentRequest>,
    ) -> Result<Response<CompleteSegmentResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (_, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            bounded("CompleteSegment", p.complete(r.last_add_confirmed)).await
        }
        .await;
        Ok(Response::new(match result {
            Ok(last) => CompleteSegmentResponse { status: Some(status::ok()), last_entry_id: last },
            Err(s) => CompleteSegmentResponse { status: Some(s), last_entry_id: -1 },
        }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(log = request.get_ref().log_id, segment = request.get_ref().segment_id))]
    async fn compact_segment(
        &self,
        request: Request<CompactSegmentRequest>,
    ) -> Result<Response<CompactSegmentResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (scope, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            let store =
                self.node.stores.get(scope.bucket()).await.map_err(|e| status::UNKNOWN.status(e.to_string()))?;
            p.compact(store.as_ref(), scope.root_path(), self.node.compact).await
        }
        .await;
        Ok(Response::new(match result {
            Ok(c) => CompactSegmentResponse {
                status: Some(status::ok()),
                metadata: Some(SegmentMetadata {
                    seg_no: r.segment_id,
                    state: SegmentState::Sealed as i32,
                    last_entry_id: c.lac,
                    size: c.size as i64,
                    sealed_time: now_ms(),
                    ..SegmentMetadata::default()
                }),
            },
            Err(s) => CompactSegmentResponse { status: Some(s), metadata: None },
        }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(log = request.get_ref().log_id, segment = request.get_ref().segment_id))]
    async fn notify_segment_compacted(
        &self,
        request: Request<NotifySegmentCompactedRequest>,
    ) -> Result<Response<NotifySegmentCompactedResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = self.node.note_compacted(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await;
        Ok(Response::new(NotifySegmentCompactedResponse { status: code_status(&result) }))
    }

    async fn get_segment_last_add_confirmed(
        &self,
        request: Request<GetSegmentLastAddConfirmedRequest>,
    ) -> Result<Response<GetSegmentLastAddConfirmedResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (_, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            match p.last_durable().await? {
                -1 => Err(status::NO_BLOCK_FOUND.status(format!("{} has no data on this node", p.segment()))),
                last => Ok(last),
            }
        }
        .await;
        Ok(Response::new(match result {
            Ok(last) => GetSegmentLastAddConfirmedResponse { status: Some(status::ok()), last_entry_id: last },
            Err(s) => GetSegmentLastAddConfirmedResponse { status: Some(s), last_entry_id: -1 },
        }))
    }

    async fn get_segment_block_count(
        &self,
        request: Request<GetSegmentBlockCountRequest>,
    ) -> Result<Response<GetSegmentBlockCountResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (_, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            p.block_count().await
        }
        .await;
        Ok(Response::new(match result {
            Ok(n) => GetSegmentBlockCountResponse { status: Some(status::ok()), block_count: n as i64 },
            Err(s) => GetSegmentBlockCountResponse { status: Some(s), block_count: 0 },
        }))
    }

    async fn update_last_add_confirmed(
        &self,
        request: Request<UpdateLastAddConfirmedRequest>,
    ) -> Result<Response<UpdateLastAddConfirmedResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = async {
            let (_, p) = self.processor(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await?;
            p.push_lac(r.last_add_confirmed);
            Ok(())
        }
        .await;
        Ok(Response::new(UpdateLastAddConfirmedResponse { status: code_status(&result) }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(log = request.get_ref().log_id, segment = request.get_ref().segment_id))]
    async fn clean_segment(
        &self,
        request: Request<CleanSegmentRequest>,
    ) -> Result<Response<CleanSegmentResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = self.node.clean_segment(&r.bucket_name, &r.root_path, r.log_id, r.segment_id).await;
        Ok(Response::new(CleanSegmentResponse { status: code_status(&result) }))
    }

    #[tracing::instrument(level = "info", skip_all, fields(log = request.get_ref().log_id))]
    async fn mark_log_deleted(
        &self,
        request: Request<MarkLogDeletedRequest>,
    ) -> Result<Response<MarkLogDeletedResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = self.node.mark_deleted(&r.bucket_name, &r.root_path, r.log_id);
        Ok(Response::new(MarkLogDeletedResponse { status: code_status(&result) }))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn mark_instance_deleted(
        &self,
        request: Request<MarkInstanceDeletedRequest>,
    ) -> Result<Response<MarkInstanceDeletedResponse>, tonic::Status> {
        let r = request.into_inner();
        let result = self.node.mark_deleted(&r.bucket_name, &r.root_path, crate::delete_marker::INSTANCE);
        Ok(Response::new(MarkInstanceDeletedResponse { status: code_status(&result) }))
    }

    async fn select_nodes(
        &self,
        request: Request<SelectNodesRequest>,
    ) -> Result<Response<SelectNodesResponse>, tonic::Status> {
        let r = request.into_inner();
        Ok(Response::new(match self.node.select_nodes(&r) {
            Ok((nodes, total)) => SelectNodesResponse { status: Some(status::ok()), nodes, total_count: total },
            Err(s) => SelectNodesResponse { status: Some(s), nodes: Vec::new(), total_count: 0 },
        }))
    }
}
