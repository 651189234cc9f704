//! Everything one LogStore node holds: its processors, delete markers, lifecycle state, object stores and
//! membership, and the node-level operations the service delegates to (cleanup, deletion, selection).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use woodpecker_core::ids::LogId;
use woodpecker_core::keys;
use woodpecker_proto::logstore::{NodeMeta, SelectNodesRequest, Status};
use woodpecker_storage::object::ObjectError;
use woodpecker_storage::segment::staged::StagedScope;
use woodpecker_storage::segment::staged::compact::CompactOptions;
use woodpecker_storage::segment::{SegmentBackend, SegmentRef};

use woodpecker_membership::quorum_select::{self, LoadPolicy};

use crate::delete_marker::DeleteMarkers;
use crate::disk::DiskWatermark;
use crate::node_state::{Lifecycle, NodeState, now_ms};
use crate::object_stores::ObjectStores;
use crate::registry::Processors;
use crate::status;

/// One LogStore node.
#[derive(Debug)]
pub struct Node {
    /// Node name (gossip id), also reported in read states.
    pub name: String,
    /// Segment processors.
    pub processors: Processors,
    /// Deleted logs.
    pub markers: DeleteMarkers,
    /// Lifecycle (active / decommissioning / decommissioned), persisted.
    pub lifecycle: NodeState,
    /// Buckets of compaction and cleanup.
    pub stores: ObjectStores,
    /// Merged block size and upload parallelism of compaction.
    pub compact: CompactOptions,
    /// Soft byte limit of one read batch (`segmentReadPolicy.maxBatchSize`).
    pub read_max_bytes: u64,
    /// The data disk's watermarks.
    pub disk: DiskWatermark,
    /// Set once shutdown began: appends are refused.
    pub stopping: AtomicBool,
    /// Who is in the cluster, for SelectNodes.
    pub members: Arc<dyn Members>,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Load-aware weighting of SelectNodes.
    pub select_policy: LoadPolicy,
}

/// The cluster as this node sees it (gossip, behind the membership crate's trait).
#[async_trait::async_trait]
pub trait Members: Send + Sync + std::fmt::Debug {
    /// What this node advertises.
    fn local(&self) -> NodeMeta;
    /// Live members, this node included: what SelectNodes picks from.
    fn live_nodes(&self) -> Vec<NodeMeta>;
    /// Joined a seed (or alone by configuration).
    fn joined(&self) -> bool;
    /// Every known member as `/admin/memberlist` lists it.
    fn members_json(&self) -> Vec<serde_json::Value>;
    /// Advertises `status` (`active`, `decommissioning`, `decommissioned`) in the node's tags.
    async fn set_status(&self, status: &str) -> Result<(), String>;
    /// Publishes this node's load factor (0..=1) for load-aware selection.
    fn report_load(&self, load: f64);
    /// Leaves the cluster gracefully (bounded by `timeout`).
    async fn leave(&self, timeout: std::time::Duration);
}

/// How far a decommission got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecommissionProgress {
    /// Segments with local data on this node.
    pub remaining_segments: usize,
    /// Decommissioning and no data left.
    pub safe_to_terminate: bool,
}

impl Node {
    /// Refuses appends while stopping, decommissioning or short of disk.
    pub fn admit_appends(&self) -> Result<(), Status> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(status::SHUTDOWN.status(format!("node {} is shutting down", self.name)));
        }
        let state = self.lifecycle.get();
        if state != Lifecycle::Active {
            return Err(status::SHUTDOWN.status(format!(
                "node {} is {}: it takes no appends",
                self.name,
                state.as_str()
            )));
        }
        self.disk.admit()
    }

    /// Removes a segment's local files and its objects (`<root>/<log>/<seg>/…`). Idempotent.
    pub async fn clean_segment(
        &self,
        bucket: &str,
        root_path: &str,
        log_id: LogId,
        segment_id: i64,
    ) -> Result<(), Status> {
        let scope = StagedScope::new(bucket, root_path).map_err(|e| status::INVALID_ROOT_PATH.status(e.to_string()))?;
        if self.markers.is_deleted(&scope, log_id) {
            return Err(status::LOG_BEING_DELETED.status(format!("log {log_id} is being deleted on this node")));
        }
        let segment = SegmentRef { log_id, segment_id };
        let why = status::ALREADY_CLOSED.status(format!("{segment} was cleaned"));
        self.processors.remove_segment(&scope, log_id, segment_id, &why);
        self.processors
            .staged()
            .scope(&scope)
            .delete_segment(segment)
            .await
            .map_err(|e| status::UNKNOWN.status(e.to_string()))?;
        let store = self.stores.get(scope.bucket()).await.map_err(object_status)?;
        let prefix = keys::segment_prefix(scope.root_path(), log_id, segment_id);
        store.remove_prefix(&prefix).await.map_err(object_status)?;
        Ok(())
    }

    /// Persists a delete marker, then stops serving the log (or every log of the scope for
    /// [`crate::delete_marker::INSTANCE`]). Local data is reclaimed after the grace period.
    pub fn mark_deleted(&self, bucket: &str, root_path: &str, log_id: LogId) -> Result<(), Status> {
        let scope = StagedScope::new(bucket, root_path).map_err(|e| status::INVALID_ROOT_PATH.status(e.to_string()))?;
        self.markers.mark(&scope, log_id).map_err(|e| {
            status::MARK_DELETE_FAILED.status(format!("persisting the delete marker of log {log_id}: {e}"))
        })?;
        let why = status::LOG_BEING_DELETED.status(format!("log {log_id} is deleted on this node"));
        self.processors.remove_log(&scope, log_id, &why);
        Ok(())
    }

    /// Records that a segment's compaction is confirmed (`data.compacted`, durable) once a compacted
    /// footer exists in object storage, then reclaims the local copy (`data.log`); reads go to object
    /// storage from then on (clients read sealed segments directly).
    pub async fn note_compacted(
        &self,
        bucket: &str,
        root_path: &str,
        log_id: LogId,
        segment_id: i64,
    ) -> Result<(), Status> {
        let scope = StagedScope::new(bucket, root_path).map_err(|e| status::INVALID_ROOT_PATH.status(e.to_string()))?;
        let store = self.stores.get(scope.bucket()).await.map_err(object_status)?;
        let footer = keys::footer_key(scope.root_path(), log_id, segment_id);
        let body = match store.get(&footer, None).await {
            Ok(b) => b,
            Err(ObjectError::NotFound { .. }) => {
                return Err(status::SEGMENT_NOT_FOUND.status(format!("{footer} does not exist: not compacted")));
            }
            Err(e) => return Err(object_status(e)),
        };
        let compacted = woodpecker_storage::segment::object::decode_footer_object(&footer, &body)
            .map_err(|e| status::UNKNOWN.status(e.to_string()))?
            .record
            .is_compacted();
        if !compacted {
            return Err(status::SEGMENT_NOT_FOUND.status(format!("{footer} is not a compacted footer")));
        }
        let segment = SegmentRef { log_id, segment_id };
        let dir = self.processors.staged().scope(&scope).segment_dir(segment);
        let why = status::ALREADY_CLOSED.status(format!("{segment} was compacted; its local copy is reclaimed"));
        self.processors.remove_segment(&scope, log_id, segment_id, &why);
        // The tombstone is durable before the local copy goes; write.fence stays, so appends stay refused.
        tokio::task::spawn_blocking(move || {
            crate::node_state::write_durably(&dir.join("data.compacted"), b"")?;
            for f in ["data.log", "data.durable"] {
                match std::fs::remove_file(dir.join(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| status::UNKNOWN.status(e.to_string()))?
        .map_err(|e| status::UNKNOWN.status(format!("reclaiming the compacted local copy: {e}")))
    }

    /// Persists a lifecycle change, then advertises it. Returns the state now in force.
    pub async fn set_lifecycle(&self, state: Lifecycle) -> Result<Lifecycle, String> {
        let current = self.lifecycle.get();
        // A decommissioned node stays so until an operator cancels (back to active).
        if current == Lifecycle::Decommissioned && state == Lifecycle::Decommissioning {
            return Ok(current);
        }
        self.lifecycle.set(state).map_err(|e| format!("persisting node_state.json: {e}"))?;
        self.members.set_status(state.as_str()).await?;
        Ok(state)
    }

    /// Counts segments that still have local data (a `data.log` not yet cleaned); a decommissioning node
    /// with none left is safe to terminate.
    pub async fn decommission_progress(&self) -> Result<DecommissionProgress, String> {
        let dir = self.processors.staged().data_dir().to_path_buf();
        let remaining = tokio::task::spawn_blocking(move || count_data_logs(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("scanning the data directory: {e}"))?;
        let safe = self.lifecycle.get() != Lifecycle::Active && remaining == 0;
        Ok(DecommissionProgress { remaining_segments: remaining, safe_to_terminate: safe })
    }

    /// Answers SelectNodes from the live view: exactly `limit` distinct live, active nodes per filter, or
    /// a status saying why not (4000 no filter, 4002 not enough nodes, 8001 a malformed filter).
    pub fn select_nodes(&self, request: &SelectNodesRequest) -> Result<(Vec<NodeMeta>, i32), Status> {
        if !self.members.joined() {
            return Err(
                status::INSUFFICIENT_QUORUM.status(format!("node {} has not joined its cluster yet", self.name))
            );
        }
        let live = self.members.live_nodes();
        let mut rng = rand::rng();
        match quorum_select::select_nodes(&live, request, &self.select_policy, now_ms(), &mut rng) {
            Ok(nodes) => {
                let n = nodes.len() as i32;
                Ok((nodes, n))
            }
            Err(e) => {
                Err(Status { code: e.code(), retriable: e.retriable(), reason: e.to_string(), ..Status::default() })
            }
        }
    }
}

/// Counts `data.log` files under `dir`, skipping the delete markers.
fn count_data_logs(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type()?.is_dir() {
                if name != ".deleted" {
                    stack.push(entry.path());
                }
            } else if name == "data.log" {
                count += 1;
            }
        }
    }
    Ok(count)
}

fn object_status(e: ObjectError) -> Status {
    status::UNKNOWN.status(e.to_string())
}
