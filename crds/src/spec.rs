//! `WoodpeckerCluster.spec`: upstream's v1alpha1 fields plus buffer pools, quorum, storage wiring and
//! the rollout, scale-down and deletion policies of our design (operator-design §5.2).
//!
//! Invariants the API server can check are CEL rules (`x-kubernetes-validations`) on the types below;
//! the ones CEL cannot express live in the operator's `render::validate`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::WoodpeckerClusterStatus;

/// Written once, for both consts below (`concat!` takes literals only).
macro_rules! image_repository {
    () => {
        "zilliztech/woodpecker-rs"
    };
}
/// Repository of this project's image, which holds both binaries (`/usr/local/bin/woodpecker` and
/// `/usr/local/bin/woodpecker-operator`); the Helm chart's `image.repository` names it too.
pub const IMAGE_REPOSITORY: &str = image_repository!();
/// Tag of this project's image: the workspace version, so the operator defaults to the server it
/// was released with (the chart's `appVersion` is the same, checked by `operator/tests/render_chart.rs`).
pub const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");
/// Image used when `spec.image` is not set: this project's image at the operator's own version
/// (upstream's Go images lack `/readyz`, so their pods would never turn Ready under this operator).
pub const DEFAULT_IMAGE: &str = concat!(image_repository!(), ":", env!("CARGO_PKG_VERSION"));
/// Name of the implicit buffer pool rendered for upstream manifests without `bufferPools`.
pub const DEFAULT_POOL_NAME: &str = "default-region-pool";
/// Name of the implicit node group inside the implicit pool.
pub const DEFAULT_GROUP_NAME: &str = "default";
/// Replicas of the implicit node group when `spec.replicas` is not set (upstream's default).
pub const DEFAULT_REPLICAS: i32 = 3;
/// PVC size when neither the group nor `spec.storageSize` names one (upstream's default).
pub const DEFAULT_STORAGE_SIZE: &str = "10Gi";
/// Resource group advertised when a node group names none.
pub const DEFAULT_RESOURCE_GROUP: &str = "default";

/// Desired state of a Woodpecker LogStore cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "woodpecker.zilliz.io",
    version = "v1alpha1",
    kind = "WoodpeckerCluster",
    plural = "woodpeckerclusters",
    singular = "woodpeckercluster",
    shortname = "wpc",
    category = "woodpecker",
    namespaced,
    status = "WoodpeckerClusterStatus",
    derive = "PartialEq",
    doc = "A Woodpecker LogStore cluster: buffer pools of per-zone StatefulSets, rolled and scaled safely by the operator.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Progressing",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Progressing\")].status"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version.current"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message(
        "metadata.name must be at most 40 characters so that generated object names stay readable"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.servicePort != self.gossipPort && self.servicePort != self.metricsPort && self.gossipPort != self.metricsPort")
        .message("servicePort, gossipPort and metricsPort must be distinct"),
    validation = Rule::new("self.rolloutPolicy.maxUnavailable <= self.quorum.ensembleSize - (self.quorum.ensembleSize / 2 + 1)")
        .message("rolloutPolicy.maxUnavailable must be at most ensembleSize - ackQuorum (1 for ensembleSize 3, 2 for 5)"),
    validation = Rule::new("self.quorum.strategy != 'custom' || (has(self.quorum.customPlacement) && size(self.quorum.customPlacement) == self.quorum.ensembleSize)")
        .message("strategy custom needs exactly ensembleSize entries in quorum.customPlacement"),
    validation = Rule::new("!has(self.quorum.customPlacement) || self.quorum.customPlacement.all(p, has(self.bufferPools) ? self.bufferPools.exists(b, b.name == p.region) : p.region == 'default-region-pool')")
        .message("every quorum.customPlacement entry must name an existing buffer pool in its region field"),
    validation = Rule::new("self.quorum.strategy != 'cross-region' || (has(self.bufferPools) && size(self.bufferPools) >= 2)")
        .message("strategy cross-region needs at least 2 buffer pools"),
    validation = Rule::new("self.clusterDomain == oldSelf.clusterDomain")
        .message("clusterDomain is immutable: segment metadata stores pod FQDNs"),
    validation = Rule::new("!has(oldSelf.bufferPools) || oldSelf.bufferPools.all(o, o.nodeGroups.all(g, g.replicas == 0) || (has(self.bufferPools) && self.bufferPools.exists(n, n.name == o.name)))")
        .message("a buffer pool can only be removed after all its node groups are scaled to 0 replicas"),
    validation = Rule::new("has(oldSelf.bufferPools) == has(self.bufferPools)")
        .message("switching between the implicit pool (spec.replicas) and spec.bufferPools would rename every pod; it is not allowed"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("storageClassName is immutable: the StatefulSets' volumeClaimTemplates cannot change")
)]
pub struct WoodpeckerClusterSpec {
    /// Server image (upstream field); defaults to this project's image at the operator's version.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Image pull policy (upstream field).
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Secrets used to pull the image; applied to every pod (upstream declared but never applied them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Existing ServiceAccount for the pods (for IRSA / workload identity); none is created when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Replicas of the implicit node group, used only when `bufferPools` is empty (upstream field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Default container resources for every node group (upstream field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Default StorageClass of the data PVCs (upstream field). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Default size of the data PVCs, a Kubernetes quantity (upstream field; 10Gi when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storageSize must be a Kubernetes quantity such as 10Gi"))]
    #[schemars(length(max = 32))]
    pub storage_size: Option<String>,

    /// gRPC LogStore service port (`--service-port`).
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: i32,

    /// Gossip port, TCP and UDP (`--gossip-port`).
    #[serde(default = "default_gossip_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub gossip_port: i32,

    /// Admin HTTP port: health, admin API and `/metrics` (`METRICS_PORT`).
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,

    /// A ConfigMap whose `woodpecker.yaml` is merged over the generated server config (upstream field).
    /// Credential keys found in it are moved into the credentials overlay Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ConfigRef>,

    /// Default affinity for every node group (upstream field); the group's zone pin is added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Default tolerations for every node group (upstream field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Default node selector for every node group (upstream field).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Default topology spread constraints for every node group (upstream field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Extra pod annotations (upstream field).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra pod labels (upstream field); they never override the operator's selector labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Stop reconciling this cluster entirely (upstream field).
    #[serde(default)]
    pub paused: bool,

    /// Kubernetes cluster DNS domain used in advertised pod FQDNs. Immutable.
    #[serde(default = "default_cluster_domain")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster_domain: String,

    /// Region advertised by every node group that names none (`--region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub region: Option<String>,

    /// Quorum settings rendered into the server config and published to clients.
    #[serde(default)]
    pub quorum: QuorumSpec,

    /// Buffer pools; each is one gossip cluster with one seed Service. Empty means one implicit pool
    /// `default-region-pool` with one group `default` of `spec.replicas` pods (upstream's shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 8))]
    pub buffer_pools: Vec<BufferPool>,

    /// Object storage the servers upload compacted segments to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<ObjectStorageSpec>,

    /// etcd wiring for clients; servers never talk to etcd, it is published in the client bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSpec>,

    /// Typed server settings and a raw YAML escape hatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ServerConfigSpec>,

    /// How the operator rolls pods when the image, config or restart token changes.
    #[serde(default)]
    pub rollout_policy: RolloutPolicy,

    /// How replicas are removed.
    #[serde(default)]
    pub scale_down: ScaleDownPolicy,

    /// What happens to data when the cluster is deleted.
    #[serde(default)]
    pub deletion: DeletionPolicy,

    /// PodDisruptionBudget settings.
    #[serde(default)]
    pub pdb: PdbSpec,

    /// Prometheus integration.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Timings of the server container's probes: startup on `/healthz`, liveness on `/livez`
    /// (process only, so a partitioned pod is not restarted), readiness on `/readyz`.
    #[serde(default, skip_serializing_if = "ProbesSpec::is_default")]
    pub probes: ProbesSpec,
}

/// Timings of the server container's probes; an unset field keeps the operator's default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbesSpec {
    /// Startup probe (`/healthz`): default every 5 s, 60 failures (5 minutes) before a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeTiming>,
    /// Liveness probe (`/livez`): default every 10 s, 3 failures before a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeTiming>,
    /// Readiness probe (`/readyz`): default every 5 s, 3 failures before NotReady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeTiming>,
}

impl ProbesSpec {
    /// True when nothing is set (the field is then left out of the serialized spec).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// One probe's timings; an unset field keeps the default of that probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTiming {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub period_seconds: Option<i32>,
    /// Seconds a probe may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<i32>,
    /// Consecutive failures before the probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: Option<i32>,
}

/// Image pull policy of the server container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling of this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Reference to a ConfigMap holding a `woodpecker.yaml` key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRef {
    /// ConfigMap name, in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the ConfigMap (default `woodpecker.yaml`).
    #[serde(default = "default_config_key")]
    pub key: String,
}

/// Ensemble size and placement strategy of new segments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuorumSpec {
    /// Replicas per segment (ES); ack quorum is ES/2+1. Only 3 and 5 are supported by the server.
    #[serde(default = "default_ensemble_size")]
    #[x_kube(validation = Rule::new("self == 3 || self == 5").message("ensembleSize must be 3 or 5"))]
    pub ensemble_size: i32,
    /// Node selection strategy.
    #[serde(default)]
    pub strategy: QuorumStrategy,
    /// Whether a placement shortfall fails segment creation (hard) or is relaxed (soft).
    #[serde(default)]
    pub affinity_mode: AffinityMode,
    /// Explicit placements, required iff `strategy: custom` (exactly ensembleSize entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub custom_placement: Vec<CustomPlacement>,
}

impl Default for QuorumSpec {
    fn default() -> Self {
        Self {
            ensemble_size: default_ensemble_size(),
            strategy: QuorumStrategy::default(),
            affinity_mode: AffinityMode::default(),
            custom_placement: Vec::new(),
        }
    }
}

impl QuorumSpec {
    /// Ack quorum for this ensemble size (ES/2+1).
    pub fn ack_quorum(&self) -> i32 {
        self.ensemble_size / 2 + 1
    }
}

/// Server node selection strategy (upstream's names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum QuorumStrategy {
    /// Any nodes of a random pool.
    #[default]
    #[serde(rename = "random")]
    Random,
    /// Consecutive groups of nodes, limiting replica-set overlap.
    #[serde(rename = "random-group")]
    RandomGroup,
    /// All replicas in one zone and one resource group.
    #[serde(rename = "single-az-single-rg")]
    SingleAzSingleRg,
    /// One zone, one node per resource group.
    #[serde(rename = "single-az-multi-rg")]
    SingleAzMultiRg,
    /// One node per zone within one resource group.
    #[serde(rename = "multi-az-single-rg")]
    MultiAzSingleRg,
    /// One node per zone, any resource group.
    #[serde(rename = "multi-az-multi-rg")]
    MultiAzMultiRg,
    /// Split the ensemble over pools (regions).
    #[serde(rename = "cross-region")]
    CrossRegion,
    /// Explicit placements from `customPlacement`.
    #[serde(rename = "custom")]
    Custom,
}

impl QuorumStrategy {
    /// Upstream's spelling, as written into `woodpecker.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuorumStrategy::Random => "random",
            QuorumStrategy::RandomGroup => "random-group",
            QuorumStrategy::SingleAzSingleRg => "single-az-single-rg",
            QuorumStrategy::SingleAzMultiRg => "single-az-multi-rg",
            QuorumStrategy::MultiAzSingleRg => "multi-az-single-rg",
            QuorumStrategy::MultiAzMultiRg => "multi-az-multi-rg",
            QuorumStrategy::CrossRegion => "cross-region",
            QuorumStrategy::Custom => "custom",
        }
    }

    /// Whether the strategy places one replica per zone.
    pub fn is_multi_az(self) -> bool {
        matches!(self, QuorumStrategy::MultiAzSingleRg | QuorumStrategy::MultiAzMultiRg)
    }
}

/// Strictness of placement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AffinityMode {
    /// Relax the placement when it cannot be met.
    #[default]
    #[serde(rename = "soft")]
    Soft,
    /// Fail segment creation when the placement cannot be met.
    #[serde(rename = "hard")]
    Hard,
}

impl AffinityMode {
    /// Upstream's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityMode::Soft => "soft",
            AffinityMode::Hard => "hard",
        }
    }
}

/// One replica placement of the `custom` strategy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomPlacement {
    /// Label of this placement.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Buffer pool to ask (upstream calls the pool a region).
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// Zone filter (exact, or an anchored regex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub az: String,
    /// Resource group filter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_group: String,
}

/// A buffer pool: one gossip cluster, one seed Service, one or more node groups.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.nodeGroups) || has(self.externalSeeds)")
        .message("a buffer pool needs nodeGroups or externalSeeds"),
    validation = Rule::new("!has(oldSelf.nodeGroups) || oldSelf.nodeGroups.all(o, o.replicas == 0 || (has(self.nodeGroups) && self.nodeGroups.exists(n, n.name == o.name)))")
        .message("a node group can only be removed after it is scaled to 0 replicas")
)]
pub struct BufferPool {
    /// Pool name, DNS-1123 label. Immutable (it is the key of this list).
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("buffer pool name is immutable"),
        validation = Rule::new("self != 'admin'").message("a buffer pool cannot be named admin: its seed Service would be the admin Service")
    )]
    pub name: String,
    /// Node groups; each renders one StatefulSet, usually one per zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 16))]
    pub node_groups: Vec<NodeGroup>,
    /// Seeds of a remote pool (`host:servicePort`) served by another cluster; published to clients only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub external_seeds: Vec<String>,
}

/// A set of identical pods in one zone and resource group, rendered as one StatefulSet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.zone) == has(oldSelf.zone) && (!has(self.zone) || self.zone == oldSelf.zone)")
        .message("zone is immutable: pods and their data are pinned to it"),
    validation = Rule::new("has(self.resourceGroup) == has(oldSelf.resourceGroup) && (!has(self.resourceGroup) || self.resourceGroup == oldSelf.resourceGroup)")
        .message("resourceGroup is immutable")
)]
pub struct NodeGroup {
    /// Group name, DNS-1123 label. Immutable (it is the key of this list).
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("node group name is immutable"))]
    pub name: String,
    /// Zone the pods are pinned to (required node affinity, `AVAILABILITY_ZONE`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub zone: Option<String>,
    /// Region advertised by these pods; defaults to `spec.region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub region: Option<String>,
    /// Resource group advertised by these pods (`--resource-group`; `default` when unset). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$"))]
    pub resource_group: Option<String>,
    /// Number of pods.
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Data PVC; defaults to `spec.storageClassName` / `spec.storageSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Container resources; defaults to `spec.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduling constraints added to the cluster-wide ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

/// Data PVC of a node group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.size) || (has(self.size) && quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0)")
        .message("storage.size may only grow"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("storage.storageClassName is immutable")
)]
pub struct StorageSpec {
    /// PVC size, a Kubernetes quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storage.size must be a Kubernetes quantity such as 50Gi"))]
    pub size: Option<String>,
    /// StorageClass name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

/// Per-group scheduling constraints, merged with the cluster-wide ones (group entries win).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node selector entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity; replaces the cluster-wide affinity for this group (the zone pin is always added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// S3-family object storage used by the servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageSpec {
    /// Where the object store listens.
    pub endpoint: ObjectStorageEndpoint,
    /// Cloud provider flavour (`minio.cloudProvider`); MinIO and other S3-compatible stores use `aws`.
    #[serde(default)]
    pub provider: CloudProvider,
    /// Bucket; published to clients (service mode sends the bucket with each request).
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket: empty or a clean relative path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.endsWith('/') && !self.contains('//') && !self.split('/').exists(s, s == '.' || s == '..')").message("rootPath must be a clean relative path without leading, trailing or double slashes, '.' or '..'"))]
    #[schemars(length(max = 512))]
    pub root_path: String,
    /// How servers authenticate; absent means anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ObjectStorageCredentials>,
    /// Secret holding the CA bundle that signs the endpoint's certificate (`minio.ssl.tlsCACert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// Address of the object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageEndpoint {
    /// Host name or IP.
    #[schemars(length(min = 1, max = 253))]
    pub address: String,
    /// Port.
    #[serde(default = "default_object_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Use TLS.
    #[serde(default, rename = "useSSL")]
    pub use_ssl: bool,
    /// Signing region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Virtual-host bucket addressing instead of path style.
    #[serde(default)]
    pub use_virtual_host: bool,
}

/// Object storage flavour (upstream's `minio.cloudProvider`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CloudProvider {
    /// AWS S3 and any S3-compatible store (MinIO).
    #[default]
    #[serde(rename = "aws")]
    Aws,
    /// Google Cloud Storage XML API.
    #[serde(rename = "gcp")]
    Gcp,
    /// Google Cloud Storage native API.
    #[serde(rename = "gcpnative")]
    GcpNative,
    /// Aliyun OSS.
    #[serde(rename = "aliyun")]
    Aliyun,
    /// Tencent COS.
    #[serde(rename = "tencent")]
    Tencent,
    /// Azure Blob.
    #[serde(rename = "azure")]
    Azure,
}

impl CloudProvider {
    /// Upstream's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudProvider::Aws => "aws",
            CloudProvider::Gcp => "gcp",
            CloudProvider::GcpNative => "gcpnative",
            CloudProvider::Aliyun => "aliyun",
            CloudProvider::Tencent => "tencent",
            CloudProvider::Azure => "azure",
        }
    }
}

/// Object storage credentials: exactly one of the fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.secretRef) ? 1 : 0) + (has(self.iam) ? 1 : 0) + (has(self.gcpCredentialsSecretRef) ? 1 : 0) == 1")
    .message("set exactly one of credentials.secretRef, credentials.iam, credentials.gcpCredentialsSecretRef"))]
pub struct ObjectStorageCredentials {
    /// Static keys from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AccessKeySecretRef>,
    /// Cloud IAM (IRSA, GKE/Azure workload identity, RRSA): no keys at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<IamSpec>,
    /// GCS service-account JSON from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_credentials_secret_ref: Option<GcpCredentialsSecretRef>,
}

/// A Secret key holding a GCS service-account JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentialsSecretRef {
    /// Secret name, in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_gcp_key")]
    pub key: String,
}

/// A Secret with an access key id and a secret access key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeySecretRef {
    /// Secret name, in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

/// Cloud IAM settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IamSpec {
    /// Annotations for the ServiceAccount the operator creates (for example `eks.amazonaws.com/role-arn`).
    /// Ignored when `spec.serviceAccountName` names an existing ServiceAccount.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_account_annotations: BTreeMap<String, String>,
    /// Extra pod labels some clouds need (for example `azure.workload.identity/use: "true"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

/// One key of a Secret (the key defaults to `ca.crt`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name, in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_ca_key")]
    pub key: String,
}

/// A Secret by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretNameRef {
    /// Secret name, in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// etcd wiring published to clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// `host:port` endpoints.
    #[schemars(length(min = 1, max = 16))]
    pub endpoints: Vec<String>,
    /// Key prefix (upstream default `by-dev`).
    #[serde(default = "default_etcd_root_path")]
    pub root_path: String,
    /// Secret with `ca.crt`, `tls.crt`, `tls.key` for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<SecretNameRef>,
    /// Secret with `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretNameRef>,
}

/// Typed server settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfigSpec {
    /// Server log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// YAML merged last over the generated config (after `configRef`). Must not contain credentials;
    /// operator-owned keys (buffer pools, storage type) are re-imposed after the merge.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 65536))]
    pub raw_overrides: String,
}

/// Server log level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum LogLevel {
    /// debug
    #[serde(rename = "debug")]
    Debug,
    /// info
    #[default]
    #[serde(rename = "info")]
    Info,
    /// warn
    #[serde(rename = "warn")]
    Warn,
    /// error
    #[serde(rename = "error")]
    Error,
}

impl LogLevel {
    /// Lower-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Operator-paced rolling restart policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// Pods allowed to be unavailable at once across all groups; at most ES − AQ.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 2))]
    pub max_unavailable: i32,
    /// After all gates pass, wait this long and check them again before the next pod.
    #[serde(default = "default_settle_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub settle_time_seconds: i32,
    /// A pod or gate not recovering within this time sets RolloutBlocked (the roll is never forced).
    #[serde(default = "default_ready_timeout_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub ready_timeout_seconds: i32,
    /// Change to any new value to request a safe rolling restart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63))]
    pub restart_token: String,
    /// Hold the roll: outdated pods stay as they are.
    #[serde(default)]
    pub paused: bool,
    /// Which health gates must pass between pods.
    #[serde(default)]
    pub gates: RolloutGates,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            max_unavailable: default_max_unavailable(),
            settle_time_seconds: default_settle_seconds(),
            ready_timeout_seconds: default_ready_timeout_seconds(),
            restart_token: String::new(),
            paused: false,
            gates: RolloutGates::default(),
        }
    }
}

/// Health gates of the roll.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutGates {
    /// Every peer's memberlist shows the full expected membership.
    #[serde(default = "default_true")]
    pub gossip: bool,
    /// No pod answers 503 on `/admin/log-health`.
    #[serde(default = "default_true")]
    pub log_health: bool,
    /// No pod is past the hard disk watermark.
    #[serde(default = "default_true")]
    pub disk_watermark: bool,
}

impl Default for RolloutGates {
    fn default() -> Self {
        Self { gossip: true, log_health: true, disk_watermark: true }
    }
}

/// Scale-down policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownPolicy {
    /// After this long a victim still draining sets DecommissionStalled (the operator keeps waiting).
    #[serde(default = "default_decommission_timeout")]
    #[schemars(range(min = 60))]
    pub decommission_timeout_seconds: i32,
    /// What happens to a removed pod's PVC once it is decommissioned and gone.
    #[serde(default)]
    pub pvc_policy: PvcPolicy,
}

impl Default for ScaleDownPolicy {
    fn default() -> Self {
        Self { decommission_timeout_seconds: default_decommission_timeout(), pvc_policy: PvcPolicy::default() }
    }
}

/// Fate of a scaled-down pod's PVC.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PvcPolicy {
    /// Delete it.
    #[default]
    Delete,
    /// Keep it.
    Retain,
}

/// Deletion policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionPolicy {
    /// What to do with data when the cluster is deleted.
    #[serde(default)]
    pub policy: DeletionMode,
}

/// What deleting the cluster does to its data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionMode {
    /// Workloads go, PVCs stay; never blocks.
    #[default]
    RetainData,
    /// Workloads and PVCs go (test environments).
    DeleteAll,
}

/// PodDisruptionBudget settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbSpec {
    /// Render a PDB with maxUnavailable = rolloutPolicy.maxUnavailable.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for PdbSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Prometheus integration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Render a `monitoring.coreos.com/v1` PodMonitor (needs the Prometheus operator CRDs).
    #[serde(default)]
    pub pod_monitor: bool,
    /// Extra labels on the PodMonitor (for a Prometheus `podMonitorSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_service_port() -> i32 {
    18080
}
fn default_gossip_port() -> i32 {
    17946
}
fn default_metrics_port() -> i32 {
    9091
}
fn default_cluster_domain() -> String {
    "cluster.local".to_string()
}
fn default_config_key() -> String {
    "woodpecker.yaml".to_string()
}
fn default_ensemble_size() -> i32 {
    3
}
fn default_object_port() -> i32 {
    443
}
fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_string()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_string()
}
fn default_ca_key() -> String {
    "ca.crt".to_string()
}
fn default_gcp_key() -> String {
    "credentials.json".to_string()
}
fn default_etcd_root_path() -> String {
    "by-dev".to_string()
}
fn default_max_unavailable() -> i32 {
    1
}
fn default_settle_seconds() -> i32 {
    30
}
fn default_ready_timeout_seconds() -> i32 {
    600
}
fn default_decommission_timeout() -> i32 {
    3600
}
fn default_true() -> bool {
    true
}
