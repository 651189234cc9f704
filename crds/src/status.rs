//! `WoodpeckerCluster.status`, written only by the operator (operator-design §5.4).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: in every pool at least ES active members see each other.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: a roll, scale or decommission is under way.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: a pod is not Ready, pods disagree on membership, a log is stalled or a disk is full.
pub const CONDITION_DEGRADED: &str = "Degraded";
/// Condition type: the roll is waiting on a gate for longer than the ready timeout.
pub const CONDITION_ROLLOUT_BLOCKED: &str = "RolloutBlocked";
/// Condition type: zones present, distinct and sufficient for the strategy.
pub const CONDITION_TOPOLOGY_VALID: &str = "TopologyValid";
/// Condition type: the spec passes the operator's checks and every referenced Secret/ConfigMap exists.
pub const CONDITION_CONFIG_VALID: &str = "ConfigValid";
/// Condition type: a scale-down victim has been draining for longer than the decommission timeout.
pub const CONDITION_DECOMMISSION_STALLED: &str = "DecommissionStalled";
/// Condition type: the last reconcile pass failed on an API error (a quota, a missing permission
/// or resource); the message carries the API server's words. Retried with backoff.
pub const CONDITION_RECONCILE_FAILED: &str = "ReconcileFailed";
/// Condition type: a requested monitoring object (PodMonitor) could not be applied, for example
/// because the Prometheus operator's CRD is not installed; everything else is still reconciled.
pub const CONDITION_MONITORING_UNAVAILABLE: &str = "MonitoringUnavailable";

/// Observed state of a WoodpeckerCluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WoodpeckerClusterStatus {
    /// Coarse lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Generation of the spec the last completed reconcile pass acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, keyed by type (see the `CONDITION_*` constants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Desired pods over all node groups.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods over all node groups.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/replicas`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Observed and target server versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionStatus>,
    /// Current and target pod-template hash (server config + credentials overlay + restart token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<HashStatus>,
    /// Ensemble size in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_size: Option<i32>,
    /// Per buffer pool: seeds and gossip membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buffer_pools: Vec<BufferPoolStatus>,
    /// Per node group: StatefulSet and ready counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<NodeGroupStatus>,
    /// Per pod: what its admin API reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// State of the operator-paced roll (informational; rebuilt from pods every pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Scale-down victims being drained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decommission: Vec<DecommissionStatus>,
    /// Name of the ConfigMap holding the client bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_config_map: Option<String>,
}

/// Coarse lifecycle phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Nothing observed yet.
    Pending,
    /// Pods are being created for the first time.
    Creating,
    /// All pods ready, nothing in progress.
    Running,
    /// A roll is in progress.
    Upgrading,
    /// Replicas are being added.
    ScalingUp,
    /// Replicas are being decommissioned and removed.
    ScalingDown,
    /// The spec cannot be acted on (see ConfigValid).
    Failed,
}

/// Observed and target image versions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// Version most pods run (from their image or admin status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Version the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Current and target hashes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HashStatus {
    /// Hash most pods carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Hash of the latest render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A buffer pool as clients see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BufferPoolStatus {
    /// Pool name.
    pub name: String,
    /// Seeds published to clients (`host:servicePort`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<String>,
    /// Smallest member count any pod of the pool reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_members: Option<i32>,
}

/// Counts of one node group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupStatus {
    /// Pool name.
    pub pool: String,
    /// Group name.
    pub name: String,
    /// StatefulSet name.
    pub stateful_set: String,
    /// Pinned zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Desired pods.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods.
    #[serde(default)]
    pub ready: i32,
    /// Pods at the target revision and hash.
    #[serde(default)]
    pub updated: i32,
}

/// One server pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod name (also the node id).
    pub pod: String,
    /// Pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group: Option<String>,
    /// Kubernetes node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_node: Option<String>,
    /// Zone the server advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Region the server advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Resource group the server advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// `active`, `decommissioning` or `decommissioned`; absent when the admin API did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Members the server sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i32>,
    /// Server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Pod Ready condition.
    #[serde(default)]
    pub ready: bool,
    /// Whether the pod runs the target revision, config hash and restart token.
    #[serde(default)]
    pub updated: bool,
}

/// The roll, as last decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Idle, Rolling or Blocked.
    pub state: RolloutState,
    /// Pod being replaced or blocking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Why the roll waits or is blocked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Pods still outdated.
    #[serde(default)]
    pub outdated: i32,
}

/// Roll state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RolloutState {
    /// No pod is outdated.
    #[default]
    Idle,
    /// Pods are being replaced one by one.
    Rolling,
    /// A gate has failed for longer than the ready timeout.
    Blocked,
}

/// A scale-down victim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecommissionStatus {
    /// Pod name.
    pub pod: String,
    /// State reported by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Segments (processors) still on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_segments: Option<i64>,
    /// Whether local data remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_local_data: Option<bool>,
    /// When the decommission was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}
