//! The cluster's shape after defaults: pools, node groups, names, seeds. Both the renderer and the
//! controller's decisions (expected membership per pool) work from this plan.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use std::collections::BTreeMap;
use woodpecker_crds::{
    DEFAULT_GROUP_NAME, DEFAULT_POOL_NAME, DEFAULT_RESOURCE_GROUP, DEFAULT_STORAGE_SIZE, WoodpeckerCluster,
};

use super::RenderError;
use super::names::Names;

/// Most gossip seeds handed to a server.
pub const MAX_GOSSIP_SEEDS: usize = 5;
/// Gossip seeds wanted per pool, taken round-robin over groups by ordinal.
pub const WANTED_GOSSIP_SEEDS: usize = 3;

/// The defaulted shape of a cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPlan {
    /// Cluster (CR) name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Object names.
    pub names: Names,
    /// Pools in spec order (the implicit `default-region-pool` when the spec has none).
    pub pools: Vec<PoolPlan>,
}

/// One buffer pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolPlan {
    /// Pool name.
    pub name: String,
    /// Headless Service name (pod FQDNs live under it); `None` for a remote pool.
    pub headless_service: Option<String>,
    /// Seed Service name; `None` for a remote pool.
    pub seed_service: Option<String>,
    /// `host:servicePort` seeds published to clients and written into `quorumBufferPools`.
    pub client_seeds: Vec<String>,
    /// `host:gossipPort` seeds passed to servers with `--seeds` (pod FQDNs, from spec only).
    pub gossip_seeds: Vec<String>,
    /// Local node groups (empty for a remote pool).
    pub groups: Vec<GroupPlan>,
}

impl PoolPlan {
    /// Pod names the pool should have at the given replicas per group (the expected gossip membership).
    pub fn expected_pods(&self) -> Vec<String> {
        self.groups.iter().flat_map(|g| g.pod_names()).collect()
    }

    /// Sum of desired replicas over the pool's groups.
    pub fn replicas(&self) -> i32 {
        self.groups.iter().map(|g| g.replicas).sum()
    }
}

/// One node group (one StatefulSet).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlan {
    /// Pool name.
    pub pool: String,
    /// Group name.
    pub name: String,
    /// StatefulSet name.
    pub stateful_set: String,
    /// Headless Service of the pool.
    pub headless_service: String,
    /// Pinned zone.
    pub zone: Option<String>,
    /// Advertised region.
    pub region: Option<String>,
    /// Advertised resource group.
    pub resource_group: String,
    /// Desired replicas.
    pub replicas: i32,
    /// PVC size (quantity string).
    pub storage_size: String,
    /// PVC StorageClass.
    pub storage_class_name: Option<String>,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// Node selector (cluster-wide merged with group).
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations (cluster-wide then group).
    pub tolerations: Vec<Toleration>,
    /// Affinity before the zone pin is added (group's, else cluster-wide).
    pub affinity: Option<Affinity>,
    /// Spread constraints (cluster-wide then group) before the defaults are added.
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

impl GroupPlan {
    /// Names of the pods `0..replicas`.
    pub fn pod_names(&self) -> Vec<String> {
        (0..self.replicas.max(0)).map(|i| Names::pod(&self.stateful_set, i)).collect()
    }
}

/// Fully qualified name of pod `pod` under headless Service `headless`.
pub fn pod_fqdn(pod: &str, headless: &str, namespace: &str, domain: &str) -> String {
    format!("{pod}.{headless}.{namespace}.svc.{domain}")
}

/// Build the plan; fails only when the object has no name or namespace.
pub fn plan(cluster: &WoodpeckerCluster) -> Result<ClusterPlan, RenderError> {
    let name = cluster.metadata.name.clone().ok_or(RenderError::MissingMetadata("metadata.name"))?;
    let namespace = cluster.metadata.namespace.clone().ok_or(RenderError::MissingMetadata("metadata.namespace"))?;
    let spec = &cluster.spec;
    let names = Names::new(&name);
    let domain = spec.cluster_domain.as_str();

    let implicit;
    let pools: &[woodpecker_crds::BufferPool] = if spec.buffer_pools.is_empty() {
        implicit = [woodpecker_crds::BufferPool {
            name: DEFAULT_POOL_NAME.to_string(),
            node_groups: vec![woodpecker_crds::NodeGroup {
                name: DEFAULT_GROUP_NAME.to_string(),
                zone: None,
                region: None,
                resource_group: None,
                replicas: cluster.implicit_replicas(),
                storage: None,
                resources: None,
                scheduling: None,
            }],
            external_seeds: Vec::new(),
        }];
        &implicit
    } else {
        &spec.buffer_pools
    };

    let mut out = Vec::with_capacity(pools.len());
    for pool in pools {
        if pool.node_groups.is_empty() {
            out.push(PoolPlan {
                name: pool.name.clone(),
                headless_service: None,
                seed_service: None,
                client_seeds: pool.external_seeds.clone(),
                gossip_seeds: Vec::new(),
                groups: Vec::new(),
            });
            continue;
        }
        let headless = names.headless_service(&pool.name);
        let seed_service = names.seed_service(&pool.name);
        let groups: Vec<GroupPlan> = pool
            .node_groups
            .iter()
            .map(|g| {
                let scheduling = g.scheduling.clone().unwrap_or_default();
                let mut node_selector = spec.node_selector.clone();
                node_selector.extend(scheduling.node_selector);
                let mut tolerations = spec.tolerations.clone();
                tolerations.extend(scheduling.tolerations);
                let mut spread = spec.topology_spread_constraints.clone();
                spread.extend(scheduling.topology_spread_constraints);
                let storage = g.storage.clone();
                GroupPlan {
                    pool: pool.name.clone(),
                    name: g.name.clone(),
                    stateful_set: names.stateful_set(&pool.name, &g.name),
                    headless_service: headless.clone(),
                    zone: g.zone.clone(),
                    region: g.region.clone().or_else(|| spec.region.clone()),
                    resource_group: g.resource_group.clone().unwrap_or_else(|| DEFAULT_RESOURCE_GROUP.to_string()),
                    replicas: g.replicas,
                    storage_size: storage
                        .as_ref()
                        .and_then(|s| s.size.clone())
                        .or_else(|| spec.storage_size.clone())
                        .unwrap_or_else(|| DEFAULT_STORAGE_SIZE.to_string()),
                    storage_class_name: storage
                        .as_ref()
                        .and_then(|s| s.storage_class_name.clone())
                        .or_else(|| spec.storage_class_name.clone()),
                    resources: g.resources.clone().or_else(|| spec.resources.clone()),
                    node_selector,
                    tolerations,
                    affinity: scheduling.affinity.or_else(|| spec.affinity.clone()),
                    topology_spread_constraints: spread,
                }
            })
            .collect();
        let gossip_seeds = gossip_seeds(&groups, &namespace, domain, spec.gossip_port);
        let mut client_seeds = vec![format!("{seed_service}.{namespace}.svc.{domain}:{}", spec.service_port)];
        client_seeds.extend(pool.external_seeds.iter().cloned());
        out.push(PoolPlan {
            name: pool.name.clone(),
            headless_service: Some(headless),
            seed_service: Some(seed_service),
            client_seeds,
            gossip_seeds,
            groups,
        });
    }
    Ok(ClusterPlan { name, namespace, names, pools: out })
}

/// Gossip seeds of a pool: ordinal 0 of every group, then ordinal 1, … until [`WANTED_GOSSIP_SEEDS`]
/// (at most [`MAX_GOSSIP_SEEDS`]). Derived from group names only, never from replicas, so scaling
/// never changes a pod template; a seed that does not exist yet is skipped by the join.
fn gossip_seeds(groups: &[GroupPlan], namespace: &str, domain: &str, port: i32) -> Vec<String> {
    let mut seeds = Vec::new();
    let mut ordinal = 0;
    while seeds.len() < WANTED_GOSSIP_SEEDS.max(groups.len()).min(MAX_GOSSIP_SEEDS) && ordinal < MAX_GOSSIP_SEEDS as i32
    {
        for g in groups {
            if seeds.len() >= MAX_GOSSIP_SEEDS || (ordinal > 0 && seeds.len() >= WANTED_GOSSIP_SEEDS) {
                break;
            }
            let pod = Names::pod(&g.stateful_set, ordinal);
            seeds.push(format!("{}:{port}", pod_fqdn(&pod, &g.headless_service, namespace, domain)));
        }
        ordinal += 1;
    }
    seeds
}
