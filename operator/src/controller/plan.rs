//! Glue between the pure layers and the controller: render the desired objects, feed the
//! observed pods to the roll/scale planners, and build the status from the same observations.
//! Everything here is pure; `reconcile` executes what it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use woodpecker_crds::{
    BufferPoolStatus, CONDITION_AVAILABLE, CONDITION_DECOMMISSION_STALLED, CONDITION_DEGRADED, CONDITION_PROGRESSING,
    CONDITION_ROLLOUT_BLOCKED, CONDITION_TOPOLOGY_VALID, ClusterPhase, DecommissionStatus, HashStatus, NodeGroupStatus,
    NodeStatus, PvcPolicy, RolloutState, RolloutStatus, VersionStatus, WoodpeckerCluster, WoodpeckerClusterStatus,
};

use super::ClusterMemory;
use super::load::Resolved;
use super::observe::PodView;
use crate::decide::rollout::ExpectedGroup;
use crate::decide::{
    AdminView, GroupScaleInput, MemberView, NodeState, ObservedPod, PoolScaleInput, RollDecision, RollInput,
    RollMemory, ScaleAction, ScalePodView, decide_roll, plan_pool_scale,
};
use crate::render::names::{self, ANNOTATION_CONFIG_HASH, ANNOTATION_RESTART_TOKEN, LABEL_NODE_GROUP, LABEL_POOL};
use crate::render::statefulset::DATA_VOLUME;
use crate::render::{self, ClusterPlan, RenderInputs, Rendered};

/// Everything the cluster should consist of, grouped by kind for the typed caches.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The full render.
    pub rendered: Rendered,
    /// ServiceAccounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// Services.
    pub services: Vec<Service>,
    /// ConfigMaps (hashed server config, client bundle).
    pub config_maps: Vec<ConfigMap>,
    /// Secrets (hashed credentials overlay).
    pub secrets: Vec<Secret>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// The admin (metrics) port of every pod.
    pub admin_port: u16,
}

/// The admin port of the cluster's pods.
pub fn admin_port(cr: &WoodpeckerCluster) -> u16 {
    u16::try_from(cr.spec.metrics_port).unwrap_or(9091)
}

/// Validate and render. `Err` carries a message for `ConfigValid=False`.
pub fn render(cr: &WoodpeckerCluster, resolved: &Resolved) -> Result<Desired, String> {
    if let Err(errors) = render::validate_cluster(cr) {
        return Err(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    }
    let inputs = RenderInputs {
        secrets: resolved.secrets.clone(),
        config_maps: resolved.config_maps.clone(),
        stamp_key: resolved.stamp_key.clone(),
    };
    let rendered = render::render(cr, &inputs).map_err(|e| e.to_string())?;
    let mut services = rendered.headless_services.clone();
    services.extend(rendered.seed_services.iter().cloned());
    services.push(rendered.admin_service.clone());
    Ok(Desired {
        service_accounts: rendered.service_account.iter().cloned().collect(),
        services,
        config_maps: vec![
            rendered.server_config.clone(),
            rendered.client_bundle.clone(),
            rendered.gossip_seeds.clone(),
        ],
        secrets: rendered.credentials_overlay.iter().cloned().collect(),
        pdbs: rendered.pdb.iter().cloned().collect(),
        admin_port: admin_port(cr),
        rendered,
    })
}

/// One step of the roll, decided this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollStep {
    /// Nothing outdated.
    Idle,
    /// Outdated pods remain; waiting (budget, settle, gates) within the ready timeout.
    Wait {
        /// Why.
        reason: String,
        /// Pod concerned, if any.
        pod: Option<String>,
    },
    /// Waiting longer than the ready timeout: report, never force.
    Blocked {
        /// Why.
        reason: String,
        /// Pod concerned, if any.
        pod: Option<String>,
    },
    /// Restart this pod now (Eviction API).
    Evict {
        /// Victim.
        pod: String,
        /// Why it is outdated.
        reason: String,
    },
}

/// One scale-down/decommission action, decided this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// POST decommission to the victim.
    Decommission {
        /// Victim pod.
        pod: String,
    },
    /// POST decommission/cancel: the pod is no longer a victim.
    Cancel {
        /// Pod.
        pod: String,
    },
    /// The victim finished draining (reported once, the StatefulSet shrinks in this pass).
    Decommissioned {
        /// Pod.
        pod: String,
    },
    /// The victim drains for longer than the timeout (reported once).
    Stalled {
        /// Pod.
        pod: String,
        /// Details.
        reason: String,
    },
    /// Delete the PVC of a removed victim.
    DeletePvc {
        /// PVC name.
        name: String,
    },
    /// Delete the StatefulSet of a removed node group once its pods are drained, and these PVCs
    /// (`scaleDown.pvcPolicy: Delete`; the API server keeps each until its pod is gone).
    DeleteStatefulSet {
        /// StatefulSet name.
        name: String,
        /// PVCs to delete with it.
        pvcs: Vec<String>,
    },
    /// Grow a data PVC to the group's new storage size (the StatefulSet template is immutable).
    ExpandPvc {
        /// PVC name.
        name: String,
        /// New requested size.
        size: String,
    },
}

/// Requested storage of the `data` claim template.
fn claim_size(templates: Option<&[PersistentVolumeClaim]>) -> Option<String> {
    templates?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

fn set_claim_size(templates: Option<&mut [PersistentVolumeClaim]>, size: &str) {
    let Some(templates) = templates else { return };
    for t in templates.iter_mut().filter(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME)) {
        if let Some(req) = t.spec.as_mut().and_then(|s| s.resources.as_mut()).and_then(|r| r.requests.as_mut()) {
            req.insert("storage".to_string(), Quantity(size.to_string()));
        }
    }
}

/// Bytes of a storage quantity such as `50Gi`, `1.5T` or `1000`; `None` when unparsable.
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * mult)
}

/// A condition the plan wants set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedCondition {
    /// Condition type.
    pub type_: String,
    /// True/False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// What one pass should do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// StatefulSets to apply (replicas held while a scale-down drains).
    pub stateful_sets: Vec<StatefulSet>,
    /// Scale/decommission actions.
    pub scale: Vec<ScaleStep>,
    /// The roll step.
    pub roll: RollStep,
    /// New status (conditions are set from `conditions`).
    pub status: WoodpeckerClusterStatus,
    /// Conditions to set.
    pub conditions: Vec<WantedCondition>,
    /// Work is in progress: requeue soon.
    pub busy: bool,
    /// Roll memory for the next pass (kept only if the step was carried out).
    pub roll_memory: RollMemory,
    /// Victims whose decommission started, with the start time (Unix seconds).
    pub decommission_since: BTreeMap<String, i64>,
    /// Victims past the decommission timeout.
    pub stalled: Vec<String>,
}

/// Persist the plan's timers into the per-cluster memory (`evicted`: the eviction went through).
pub fn remember(m: &mut ClusterMemory, plan: &Plan, evicted: bool) {
    if evicted || !matches!(plan.roll, RollStep::Evict { .. }) {
        m.roll = plan.roll_memory.clone();
    }
    m.decommission_since = plan.decommission_since.clone();
    m.replicas_applied.retain(|name, _| plan.stateful_sets.iter().any(|s| s.metadata.name.as_deref() == Some(name)));
    m.stalled_reported = plan.stalled.iter().cloned().collect();
}

/// The replicas the StatefulSet `name` runs with: what this operator last applied, else what the
/// cache shows. The cache may still show the count from before our own shrink (the pod it drained is
/// terminating, so the planner holds nothing): rendering from it would write the old count back and
/// recreate the drained pod.
fn applied_replicas(memory: &ClusterMemory, name: &str, live: Option<&StatefulSet>) -> Option<i32> {
    memory.replicas_applied.get(name).copied().or_else(|| live.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas))
}

/// A pool as the scale planner sees it: name, ensemble size to keep (0: retired), and its
/// StatefulSets with the replicas wanted.
type PoolToScale = (String, i32, Vec<(String, i32)>);

/// Whether `obj` names the cluster `cr` as its controller.
pub fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    cr: &WoodpeckerCluster,
) -> bool {
    let Some(uid) = cr.metadata.uid.as_deref() else { return false };
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

/// Live StatefulSets the cluster controls that the render no longer contains (removed groups).
fn removed_stateful_sets<'a>(
    cr: &WoodpeckerCluster,
    rendered: &Rendered,
    live: &'a [Arc<StatefulSet>],
) -> Vec<&'a StatefulSet> {
    let wanted: BTreeSet<&str> = rendered.stateful_sets.iter().filter_map(|s| s.metadata.name.as_deref()).collect();
    live.iter()
        .map(|s| s.as_ref())
        .filter(|s| !s.metadata.name.as_deref().is_some_and(|n| wanted.contains(n)) && controlled_by(&s.metadata, cr))
        .collect()
}

/// Group key of a pod: (pool, node group) labels.
fn pod_group(pod: &Pod) -> (String, String) {
    let l = pod.labels();
    (l.get(LABEL_POOL).cloned().unwrap_or_default(), l.get(LABEL_NODE_GROUP).cloned().unwrap_or_default())
}

/// Whether the StatefulSet controller has yet to take up the target template of `sts`: the StatefulSet
/// seen (possibly from a cache behind our own apply) lacks the target config hash or restart token, or
/// its status was computed for an older generation.
fn template_pending(sts: &StatefulSet, target_hash: &str, token: &str) -> bool {
    let ann = sts.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.as_ref());
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str).unwrap_or("");
    let observed = sts.status.as_ref().and_then(|s| s.observed_generation);
    get(ANNOTATION_CONFIG_HASH) != target_hash
        || get(ANNOTATION_RESTART_TOKEN) != token
        || observed.is_none_or(|o| Some(o) < sts.metadata.generation)
}

/// Whether a pod runs the target revision, config hash and restart token; `Err` names what differs
/// ([`crate::decide::rollout::outdated_reason`], the roll's own definition).
pub fn pod_is_current(pod: &Pod, sts: Option<&StatefulSet>, target_hash: &str, token: &str) -> Result<(), String> {
    let ann = pod.annotations();
    let update_rev = sts.and_then(|s| s.status.as_ref()).and_then(|s| s.update_revision.as_deref());
    match crate::decide::rollout::outdated_reason(
        pod.labels().get("controller-revision-hash").map(String::as_str),
        ann.get(ANNOTATION_CONFIG_HASH).map(String::as_str),
        ann.get(ANNOTATION_RESTART_TOKEN).map(String::as_str).unwrap_or(""),
        update_rev,
        target_hash,
        token,
    ) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

fn most_common<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, c)| *c).map(|(v, _)| v.to_string())
}

/// Build the status and the availability conditions from what was observed.
pub fn observed_status(
    cr: &WoodpeckerCluster,
    plan: &ClusterPlan,
    rendered: &Rendered,
    sts_live: &[Arc<StatefulSet>],
    views: &[PodView],
) -> (WoodpeckerClusterStatus, Vec<WantedCondition>) {
    let spec = &cr.spec;
    let es = spec.quorum.ensemble_size;
    let token = spec.rollout_policy.restart_token.as_str();
    let sts_by_name: BTreeMap<String, &StatefulSet> = sts_live.iter().map(|s| (s.name_any(), s.as_ref())).collect();
    let live: Vec<&PodView> = views.iter().filter(|v| !v.terminating).collect();

    let mut nodes = Vec::new();
    let mut group_counts: BTreeMap<(String, String), (i32, i32)> = BTreeMap::new();
    for v in &live {
        let (pool, group) = pod_group(&v.pod);
        let sts_name = plan
            .pools
            .iter()
            .flat_map(|p| p.groups.iter())
            .find(|g| names::label_value(&g.pool) == pool && names::label_value(&g.name) == group)
            .map(|g| g.stateful_set.clone());
        let sts = sts_name.as_ref().and_then(|n| sts_by_name.get(n).copied());
        let updated = pod_is_current(&v.pod, sts, &rendered.template_hash, token).is_ok();
        let c = group_counts.entry((pool.clone(), group.clone())).or_default();
        if v.ready {
            c.0 += 1;
        }
        if updated {
            c.1 += 1;
        }
        nodes.push(NodeStatus {
            pod: v.name.clone(),
            pool: Some(pool),
            node_group: Some(group),
            k8s_node: v.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            zone: v.status.as_ref().map(|s| s.az.clone()).filter(|s| !s.is_empty()),
            region: v.status.as_ref().map(|s| s.region.clone()).filter(|s| !s.is_empty()),
            resource_group: v.status.as_ref().map(|s| s.resource_group.clone()).filter(|s| !s.is_empty()),
            state: v.status.as_ref().map(|s| s.state.clone()),
            member_count: v.status.as_ref().map(|s| i32::try_from(s.member_count).unwrap_or(i32::MAX)),
            version: v.status.as_ref().map(|s| s.version.clone()).filter(|s| !s.is_empty()),
            ready: v.ready,
            updated,
        });
    }

    let mut node_groups = Vec::new();
    let mut buffer_pools = Vec::new();
    let mut replicas = 0;
    let mut available_msgs = Vec::new();
    for pool in &plan.pools {
        let pool_label = names::label_value(&pool.name);
        let pool_views: Vec<&&PodView> = live.iter().filter(|v| pod_group(&v.pod).0 == pool_label).collect();
        let gossip_members = pool_views
            .iter()
            .filter_map(|v| v.status.as_ref().map(|s| i32::try_from(s.member_count).unwrap_or(i32::MAX)))
            .min();
        buffer_pools.push(BufferPoolStatus {
            name: pool.name.clone(),
            seeds: pool.client_seeds.clone(),
            gossip_members,
        });
        if pool.groups.is_empty() {
            continue;
        }
        let active_seeing = pool_views
            .iter()
            .filter(|v| v.ready)
            .filter(|v| {
                v.status.as_ref().is_some_and(|s| s.state == "active" && i64::from(s.member_count) >= i64::from(es))
            })
            .count();
        if (active_seeing as i32) < es {
            available_msgs.push(format!(
                "pool {}: {active_seeing} active members see at least {es} peers (need {es})",
                pool.name
            ));
        }
        for g in &pool.groups {
            replicas += g.replicas;
            let (ready, updated) =
                group_counts.get(&(pool_label.clone(), names::label_value(&g.name))).copied().unwrap_or((0, 0));
            node_groups.push(NodeGroupStatus {
                pool: pool.name.clone(),
                name: g.name.clone(),
                stateful_set: g.stateful_set.clone(),
                zone: g.zone.clone(),
                replicas: g.replicas,
                ready,
                updated,
            });
        }
    }
    let ready_replicas = live.iter().filter(|v| v.ready).count() as i32;
    let pod_versions = live
        .iter()
        .filter_map(|v| v.pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.as_deref()));
    let current_version = most_common(pod_versions).map(|img| names::image_version(&img));
    let current_hash =
        most_common(live.iter().filter_map(|v| v.pod.annotations().get(ANNOTATION_CONFIG_HASH).map(String::as_str)));

    let status = WoodpeckerClusterStatus {
        phase: None,
        observed_generation: None,
        conditions: Vec::new(),
        replicas,
        ready_replicas,
        ready: Some(format!("{ready_replicas}/{replicas}")),
        version: Some(VersionStatus { current: current_version, target: Some(names::image_version(&spec.image)) }),
        config_hash: Some(HashStatus { current: current_hash, target: Some(rendered.template_hash.clone()) }),
        ensemble_size: Some(es),
        buffer_pools,
        node_groups,
        nodes,
        rollout: None,
        decommission: Vec::new(),
        client_config_map: Some(rendered.client_config_map_name()),
    };

    let mut conds = Vec::new();
    conds.push(WantedCondition {
        type_: CONDITION_AVAILABLE.into(),
        status: available_msgs.is_empty(),
        reason: if available_msgs.is_empty() { "QuorumAvailable".into() } else { "QuorumUnavailable".into() },
        message: available_msgs.join("; "),
    });
    let mut degraded = Vec::new();
    let unready: Vec<&str> = live.iter().filter(|v| !v.ready).map(|v| v.name.as_str()).collect();
    if !unready.is_empty() {
        degraded.push(format!("pods not Ready: {}", unready.join(", ")));
    }
    let counts: std::collections::BTreeSet<u32> =
        live.iter().filter_map(|v| v.status.as_ref().map(|s| s.member_count)).collect();
    if counts.len() > 1 {
        degraded.push(format!("pods disagree on member counts: {counts:?}"));
    }
    // An admin API that does not answer would otherwise show only as "0 active members".
    let admin_errors: Vec<String> =
        live.iter().filter_map(|v| v.admin_error.as_ref().map(|e| format!("{}: {e}", v.name))).collect();
    if !admin_errors.is_empty() {
        degraded.push(format!("admin API failed on {}", admin_errors.join("; ")));
    }
    let unhealthy: Vec<&str> = live.iter().filter(|v| v.log_healthy == Some(false)).map(|v| v.name.as_str()).collect();
    if !unhealthy.is_empty() {
        degraded.push(format!("log-health 503 on {}", unhealthy.join(", ")));
    }
    let full: Vec<&str> = live
        .iter()
        .filter(|v| v.status.as_ref().is_some_and(|s| s.disk_over_hard_watermark))
        .map(|v| v.name.as_str())
        .collect();
    if !full.is_empty() {
        degraded.push(format!("disk past the hard watermark on {}", full.join(", ")));
    }
    conds.push(WantedCondition {
        type_: CONDITION_DEGRADED.into(),
        status: !degraded.is_empty(),
        reason: if degraded.is_empty() { "Healthy".into() } else { "Degraded".into() },
        message: degraded.join("; "),
    });
    let topo = render::check_topology(spec);
    conds.push(WantedCondition {
        type_: CONDITION_TOPOLOGY_VALID.into(),
        status: topo.is_empty(),
        reason: if topo.is_empty() { "Valid".into() } else { "TopologyShortfall".into() },
        message: topo.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
    });
    (status, conds)
}

/// The roll and scale decisions of a pass, as the status reports them.
pub struct Progress<'a> {
    /// The roll step.
    pub roll: &'a RollStep,
    /// Pods still outdated.
    pub outdated: i32,
    /// When the current roll step started.
    pub started_at: Option<Timestamp>,
    /// Scale-down victims.
    pub decommission: Vec<DecommissionStatus>,
    /// Victims past the decommission timeout.
    pub stalled: Vec<String>,
    /// A group is growing.
    pub scaling_up: bool,
}

/// Finish the status from the roll and scale decisions: phase, rollout, Progressing,
/// RolloutBlocked and DecommissionStalled.
pub fn finish_status(status: &mut WoodpeckerClusterStatus, conds: &mut Vec<WantedCondition>, progress: Progress<'_>) {
    let Progress { roll, outdated, started_at, decommission, stalled, scaling_up } = progress;
    let (state, pod, reason) = match roll {
        RollStep::Idle => (RolloutState::Idle, None, String::new()),
        RollStep::Wait { reason, pod } => (RolloutState::Rolling, pod.clone(), reason.clone()),
        RollStep::Evict { pod, reason } => (RolloutState::Rolling, Some(pod.clone()), reason.clone()),
        RollStep::Blocked { reason, pod } => (RolloutState::Blocked, pod.clone(), reason.clone()),
    };
    let rolling = state != RolloutState::Idle;
    let scaling_down = !decommission.is_empty();
    status.rollout = Some(RolloutStatus {
        state,
        pod: pod.clone(),
        started_at: if rolling { started_at.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) } else { None },
        reason: reason.clone(),
        outdated,
    });
    status.decommission = decommission;
    let all_ready = status.ready_replicas >= status.replicas;
    status.phase = Some(if rolling {
        ClusterPhase::Upgrading
    } else if scaling_down {
        ClusterPhase::ScalingDown
    } else if scaling_up {
        ClusterPhase::ScalingUp
    } else if all_ready {
        ClusterPhase::Running
    } else {
        ClusterPhase::Creating
    });
    let progressing = rolling || scaling_down || scaling_up || !all_ready;
    conds.push(WantedCondition {
        type_: CONDITION_PROGRESSING.into(),
        status: progressing,
        reason: if rolling {
            "Rolling".into()
        } else if scaling_down {
            "ScalingDown".into()
        } else if scaling_up || !all_ready {
            "PodsStarting".into()
        } else {
            "Stable".into()
        },
        message: if rolling { format!("{outdated} pod(s) outdated; {reason}") } else { String::new() },
    });
    let blocked = state == RolloutState::Blocked;
    conds.push(WantedCondition {
        type_: CONDITION_ROLLOUT_BLOCKED.into(),
        status: blocked,
        reason: if blocked { "GateFailed".into() } else { "NotBlocked".into() },
        message: if blocked {
            match &pod {
                Some(p) => format!("pod {p}: {reason}"),
                None => reason,
            }
        } else {
            String::new()
        },
    });
    conds.push(WantedCondition {
        type_: CONDITION_DECOMMISSION_STALLED.into(),
        status: !stalled.is_empty(),
        reason: if stalled.is_empty() { "NotStalled".into() } else { "DecommissionTimeout".into() },
        message: stalled.join("; "),
    });
}

/// Observed pod in the planners' terms.
fn observed_pod(v: &PodView, plan: &ClusterPlan) -> ObservedPod {
    let (pool_label, group_label) = pod_group(&v.pod);
    let group = plan.pools.iter().flat_map(|p| p.groups.iter()).find(|g| {
        v.name.strip_prefix(g.stateful_set.as_str()).is_some_and(|rest| {
            rest.strip_prefix('-').is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    let ordinal = v.name.rsplit_once('-').and_then(|(_, o)| o.parse::<i32>().ok()).unwrap_or(-1);
    let is_seed = group.is_some_and(|g| {
        plan.pools
            .iter()
            .filter(|p| p.name == g.pool)
            .any(|p| p.gossip_seeds.iter().any(|s| s.starts_with(&format!("{}.", v.name))))
    });
    let ann = v.pod.annotations();
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let admin = v.status.as_ref().map(|s| AdminView {
        state: NodeState::parse(&s.state),
        member_count: i32::try_from(s.member_count).unwrap_or(i32::MAX),
        members: v
            .members
            .as_ref()
            .map(|ms| ms.iter().map(|m| MemberView { name: m.name.clone(), alive: m.alive }).collect())
            .unwrap_or_default(),
        zone: nonempty(&s.az),
        region: nonempty(&s.region),
        resource_group: nonempty(&s.resource_group),
        log_health_ok: v.log_healthy,
        disk_over_hard_watermark: s.disk_over_hard_watermark,
    });
    ObservedPod {
        name: v.name.clone(),
        pool: group.map(|g| g.pool.clone()).unwrap_or(pool_label),
        group: group.map(|g| g.name.clone()).unwrap_or(group_label),
        zone: group.and_then(|g| g.zone.clone()),
        ordinal,
        is_seed,
        ready: v.ready,
        terminating: v.terminating,
        revision: v.pod.labels().get("controller-revision-hash").cloned(),
        config_hash: ann.get(ANNOTATION_CONFIG_HASH).cloned(),
        restart_token: ann.get(ANNOTATION_RESTART_TOKEN).cloned().unwrap_or_default(),
        admin,
    }
}

/// What a pass observed, besides the pods.
pub struct Observed<'a> {
    /// Live StatefulSets of the cluster.
    pub stateful_sets: &'a [Arc<StatefulSet>],
    /// Pods with their admin answers.
    pub pods: &'a [PodView],
    /// The cluster's existing PVCs: name → requested storage.
    pub pvcs: &'a BTreeMap<String, Option<String>>,
    /// The previous status (for decommission start times after an operator restart).
    pub previous: &'a WoodpeckerClusterStatus,
}

/// Decide this pass: StatefulSets to apply, scale steps, the roll step and the status.
pub fn plan(
    cr: &WoodpeckerCluster,
    desired: &Desired,
    obs: &Observed<'_>,
    memory: &ClusterMemory,
    now: Timestamp,
) -> Plan {
    let rendered = &desired.rendered;
    let cplan = &rendered.plan;
    let spec = &cr.spec;
    let secs = now.as_second();
    let (mut status, mut conds) = observed_status(cr, cplan, rendered, obs.stateful_sets, obs.pods);
    let live_sts: BTreeMap<String, &StatefulSet> =
        obs.stateful_sets.iter().map(|s| (s.name_any(), s.as_ref())).collect();
    let pods: BTreeMap<&str, &PodView> = obs.pods.iter().map(|v| (v.name.as_str(), v)).collect();

    // ---- scale, per pool
    let mut scale = Vec::new();
    let mut replicas_override: BTreeMap<String, i32> = BTreeMap::new();
    let mut victims = BTreeSet::new();
    let mut stalled = Vec::new();
    let mut scale_waiting = Vec::new();
    let mut refused = Vec::new();
    let mut decommission_since = BTreeMap::new();
    let mut scaling_up = false;
    let es = spec.quorum.ensemble_size;
    // Pools to scale: every rendered group, plus the StatefulSets this cluster owns that are no longer
    // rendered (a removed node group or pool). Those drain to zero like any victim and are deleted.
    let mut pools_to_scale: Vec<PoolToScale> = cplan
        .pools
        .iter()
        .filter(|p| !p.groups.is_empty())
        .map(|p| (p.name.clone(), es, p.groups.iter().map(|g| (g.stateful_set.clone(), g.replicas)).collect()))
        .collect();
    let mut removed_sts = BTreeSet::new();
    for s in removed_stateful_sets(cr, rendered, obs.stateful_sets) {
        let name = s.name_any();
        let pool_label = s.labels().get(LABEL_POOL).cloned().unwrap_or_default();
        removed_sts.insert(name.clone());
        match pools_to_scale.iter_mut().find(|(p, e, _)| *e > 0 && names::label_value(p) == pool_label) {
            Some((_, _, groups)) => groups.push((name, 0)),
            // A removed pool: none of it stays, so the ensemble-size refusal does not apply.
            None => match pools_to_scale.iter_mut().find(|(p, e, _)| *e == 0 && *p == pool_label) {
                Some((_, _, groups)) => groups.push((name, 0)),
                None => pools_to_scale.push((pool_label, 0, vec![(name, 0)])),
            },
        }
    }
    // One victim drains at a time per unit of maxUnavailable, across the whole cluster (the PDB is).
    let mut budget = spec.rollout_policy.max_unavailable;
    let hard_multi_az =
        spec.quorum.strategy.is_multi_az() && spec.quorum.affinity_mode == woodpecker_crds::AffinityMode::Hard;
    for (pool_name, pool_es, pool_groups) in &pools_to_scale {
        let mut groups = Vec::new();
        for (sts_name, wanted) in pool_groups {
            let live = live_sts.get(sts_name);
            let current = applied_replicas(memory, sts_name, live.copied());
            let prefix = format!("data-{sts_name}-");
            let pvc_max = obs
                .pvcs
                .keys()
                .filter_map(|n| n.strip_prefix(&prefix).and_then(|o| o.parse::<i32>().ok()))
                .max()
                .map_or(0, |m| m + 1);
            let slots = (*wanted).max(current.unwrap_or(0)).max(pvc_max);
            let views = (0..slots)
                .map(|ordinal| {
                    let name = format!("{sts_name}-{ordinal}");
                    let v = pods.get(name.as_str()).copied().filter(|v| !v.terminating);
                    let pvc_name = format!("data-{name}");
                    let since = memory.decommission_since.get(&name).copied().or_else(|| {
                        obs.previous
                            .decommission
                            .iter()
                            .find(|d| d.pod == name)
                            .and_then(|d| d.since.as_ref())
                            .map(|t| t.0.as_second())
                    });
                    ScalePodView {
                        exists: v.is_some(),
                        terminating: pods.get(name.as_str()).is_some_and(|v| v.terminating),
                        started: v.is_some_and(|v| v.started),
                        state: v.and_then(|v| v.status.as_ref()).map(|s| NodeState::parse(&s.state)),
                        safe_to_terminate: v.and_then(|v| v.decommission.as_ref()).is_some_and(|d| d.safe_to_terminate),
                        pvc_exists: obs.pvcs.contains_key(&pvc_name),
                        pvc_name,
                        decommission_since: since,
                        name,
                        ordinal,
                    }
                })
                .collect();
            if current.is_some_and(|c| *wanted > c) {
                scaling_up = true;
            }
            let zone = cplan
                .pools
                .iter()
                .flat_map(|p| p.groups.iter())
                .find(|g| &g.stateful_set == sts_name)
                .and_then(|g| g.zone.clone());
            groups.push(GroupScaleInput {
                stateful_set: sts_name.clone(),
                desired: *wanted,
                current,
                pods: views,
                zone,
            });
        }
        let input = PoolScaleInput {
            pool: pool_name.clone(),
            ensemble_size: *pool_es,
            delete_pvcs: spec.scale_down.pvc_policy == PvcPolicy::Delete,
            decommission_timeout_seconds: i64::from(spec.scale_down.decommission_timeout_seconds),
            budget: budget.max(0),
            min_zones: if hard_multi_az && *pool_es > 0 { es } else { 0 },
            now: secs,
            groups: groups.clone(),
        };
        let sp = plan_pool_scale(&input);
        budget -= sp.draining;
        for a in sp.actions {
            match a {
                // A removed group is drained: delete its StatefulSet (below).
                ScaleAction::SetReplicas { stateful_set, .. } if removed_sts.contains(&stateful_set) => {}
                ScaleAction::SetReplicas { stateful_set, replicas } => {
                    let shrink = groups
                        .iter()
                        .find(|g| g.stateful_set == stateful_set)
                        .and_then(|g| g.current)
                        .is_some_and(|c| replicas < c);
                    if shrink {
                        let gone: Vec<String> = groups
                            .iter()
                            .filter(|g| g.stateful_set == stateful_set)
                            .flat_map(|g| g.pods.iter().filter(|p| p.ordinal >= replicas && p.exists))
                            .map(|p| p.name.clone())
                            .collect();
                        scale.extend(gone.into_iter().map(|pod| ScaleStep::Decommissioned { pod }));
                    }
                    replicas_override.insert(stateful_set, replicas);
                }
                ScaleAction::Decommission { pod } => {
                    decommission_since.insert(pod.clone(), secs);
                    scale.push(ScaleStep::Decommission { pod });
                }
                ScaleAction::CancelDecommission { pod } => scale.push(ScaleStep::Cancel { pod }),
                ScaleAction::DeletePvc { pvc } => scale.push(ScaleStep::DeletePvc { name: pvc }),
            }
        }
        // A removed group whose pods are drained and gone: delete its StatefulSet (and, by policy, its PVCs).
        for g in groups.iter().filter(|g| removed_sts.contains(&g.stateful_set)) {
            let drained = !sp.victims.iter().any(|v| v.starts_with(&format!("{}-", g.stateful_set)))
                && !g.pods.iter().any(|p| p.exists && p.started);
            if drained {
                let prefix = format!("data-{}-", g.stateful_set);
                let pvcs = if spec.scale_down.pvc_policy == PvcPolicy::Delete {
                    obs.pvcs.keys().filter(|n| n.starts_with(&prefix)).cloned().collect()
                } else {
                    Vec::new()
                };
                scale.push(ScaleStep::DeleteStatefulSet { name: g.stateful_set.clone(), pvcs });
            }
        }
        for v in &sp.victims {
            victims.insert(v.clone());
            // A victim first seen in an unknown state starts its timeout now.
            let since = memory
                .decommission_since
                .get(v)
                .copied()
                .or_else(|| decommission_since.get(v).copied())
                .or_else(|| {
                    obs.previous
                        .decommission
                        .iter()
                        .find(|d| &d.pod == v)
                        .and_then(|d| d.since.as_ref())
                        .map(|t| t.0.as_second())
                })
                .unwrap_or(secs);
            decommission_since.insert(v.clone(), since);
        }
        for s in &sp.stalled {
            if !memory.stalled_reported.contains(s) {
                scale.push(ScaleStep::Stalled {
                    pod: s.clone(),
                    reason: format!("still draining after {}s", spec.scale_down.decommission_timeout_seconds),
                });
            }
        }
        stalled.extend(sp.stalled);
        scale_waiting.extend(sp.waiting);
        refused.extend(sp.refused);
    }

    // StatefulSets: spec replicas unless the scale plan holds them (drain pending).
    // volumeClaimTemplates are immutable: keep the live size and grow the PVCs themselves.
    let stateful_sets: Vec<StatefulSet> = rendered
        .stateful_sets
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let name = s.name_any();
            let live = live_sts.get(&name).and_then(|l| l.spec.as_ref());
            let replicas = replicas_override
                .get(&name)
                .copied()
                .or_else(|| applied_replicas(memory, &name, live_sts.get(&name).copied()));
            if let Some(spec) = s.spec.as_mut() {
                if let Some(r) = replicas {
                    spec.replicas = Some(r);
                }
                let live_size = live.and_then(|l| claim_size(l.volume_claim_templates.as_deref()));
                let wanted = claim_size(spec.volume_claim_templates.as_deref());
                if let (Some(live_size), Some(wanted)) = (live_size, wanted)
                    && live_size != wanted
                {
                    set_claim_size(spec.volume_claim_templates.as_deref_mut(), &live_size);
                    let prefix = format!("data-{name}-");
                    for (pvc, size) in obs.pvcs.iter().filter(|(n, _)| n.starts_with(&prefix)) {
                        let smaller = match (size.as_deref().and_then(quantity_bytes), quantity_bytes(&wanted)) {
                            (Some(have), Some(want)) => have < want,
                            _ => false,
                        };
                        if smaller && !memory.expand_refused.contains(&(pvc.clone(), wanted.clone())) {
                            scale.push(ScaleStep::ExpandPvc { name: pvc.clone(), size: wanted.clone() });
                        }
                    }
                }
            }
            s
        })
        .collect();

    // ---- roll
    let groups: Vec<ExpectedGroup> = cplan
        .pools
        .iter()
        .flat_map(|p| p.groups.iter())
        .map(|g| {
            let live = live_sts.get(&g.stateful_set);
            // While a scale-down drains, the victims still count as members of the group.
            let replicas = replicas_override
                .get(&g.stateful_set)
                .copied()
                .or_else(|| applied_replicas(memory, &g.stateful_set, live.copied()))
                .unwrap_or(g.replicas);
            ExpectedGroup {
                pool: g.pool.clone(),
                group: g.name.clone(),
                stateful_set: g.stateful_set.clone(),
                update_revision: live.and_then(|s| s.status.as_ref()).and_then(|s| s.update_revision.clone()),
                template_pending: live
                    .is_none_or(|s| template_pending(s, &rendered.template_hash, &spec.rollout_policy.restart_token)),
                replicas,
                zone: g.zone.clone(),
                region: g.region.clone(),
                resource_group: g.resource_group.clone(),
            }
        })
        .collect();
    let observed: Vec<ObservedPod> = obs.pods.iter().map(|v| observed_pod(v, cplan)).collect();
    let decommission_in_progress = !victims.is_empty() || !scale_waiting.is_empty();
    let outcome = decide_roll(
        &RollInput {
            groups: &groups,
            pods: &observed,
            target_hash: &rendered.template_hash,
            restart_token: &spec.rollout_policy.restart_token,
            max_unavailable: spec.rollout_policy.max_unavailable,
            settle_seconds: i64::from(spec.rollout_policy.settle_time_seconds),
            ready_timeout_seconds: i64::from(spec.rollout_policy.ready_timeout_seconds),
            gates: &spec.rollout_policy.gates,
            paused: spec.rollout_policy.paused || spec.paused,
            decommission_in_progress,
            decommission_victims: &victims,
            now: secs,
        },
        &memory.roll,
    );
    let outdated = outcome.outdated.len() as i32;
    let roll = match &outcome.decision {
        RollDecision::Done => RollStep::Idle,
        RollDecision::Wait { reason } => RollStep::Wait { reason: reason.clone(), pod: None },
        RollDecision::Block { pod, reason } => RollStep::Blocked { reason: reason.clone(), pod: pod.clone() },
        RollDecision::Evict { pod } => {
            let why = obs
                .pods
                .iter()
                .find(|v| &v.name == pod)
                .map(|v| {
                    let sts = groups
                        .iter()
                        .find(|g| v.name.starts_with(&format!("{}-", g.stateful_set)))
                        .and_then(|g| live_sts.get(&g.stateful_set).copied());
                    match pod_is_current(&v.pod, sts, &rendered.template_hash, &spec.rollout_policy.restart_token) {
                        Ok(()) => "outdated".to_string(),
                        Err(e) => e,
                    }
                })
                .unwrap_or_else(|| "outdated".to_string());
            RollStep::Evict { pod: pod.clone(), reason: why }
        }
    };
    let started_at = outcome
        .memory
        .last_evicted
        .as_ref()
        .map(|(_, t)| *t)
        .or(memory.roll.last_evicted.as_ref().map(|(_, t)| *t))
        .and_then(|t| Timestamp::from_second(t).ok());

    let decommission: Vec<DecommissionStatus> = victims
        .iter()
        .map(|v| {
            let view = pods.get(v.as_str());
            DecommissionStatus {
                pod: v.clone(),
                state: view.and_then(|p| p.status.as_ref()).map(|s| s.state.clone()),
                remaining_segments: view
                    .and_then(|p| p.decommission.as_ref())
                    .map(|d| i64::try_from(d.remaining_segments).unwrap_or(i64::MAX)),
                has_local_data: view.and_then(|p| p.decommission.as_ref()).map(|d| d.has_local_data),
                since: decommission_since
                    .get(v)
                    .and_then(|t| Timestamp::from_second(*t).ok())
                    .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            }
        })
        .collect();
    let scale_busy = !scale.is_empty() || !scale_waiting.is_empty() || !victims.is_empty();
    let progress = Progress { roll: &roll, outdated, started_at, decommission, stalled: stalled.clone(), scaling_up };
    finish_status(&mut status, &mut conds, progress);
    if !refused.is_empty()
        && let Some(c) = conds.iter_mut().find(|c| c.type_ == CONDITION_TOPOLOGY_VALID)
    {
        c.status = false;
        c.reason = "ScaleDownRefused".into();
        c.message =
            if c.message.is_empty() { refused.join("; ") } else { format!("{}; {}", c.message, refused.join("; ")) };
    }
    let busy = scale_busy || roll != RollStep::Idle || status.ready_replicas < status.replicas;
    Plan {
        stateful_sets,
        scale,
        roll,
        status,
        conditions: conds,
        busy,
        roll_memory: outcome.memory,
        decommission_since,
        stalled,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;
    use woodpecker_crds::{RolloutState, WoodpeckerCluster, WoodpeckerClusterStatus};

    use super::*;
    use crate::admin::{Member, NodeStatus as AdminStatus};
    use crate::controller::ClusterMemory;
    use crate::controller::load::Resolved;

    fn cluster(a: i32) -> WoodpeckerCluster {
        serde_json::from_value(json!({
            "apiVersion": "woodpecker.zilliz.io/v1alpha1",
            "kind": "WoodpeckerCluster",
            "metadata": {"name": "wal", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {
                "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
                "rolloutPolicy": {"settleTimeSeconds": 0},
                "bufferPools": [{"name": "pool", "nodeGroups": [
                    {"name": "az-a", "zone": "za", "replicas": a},
                    {"name": "az-b", "zone": "zb", "replicas": 1},
                    {"name": "az-c", "zone": "zc", "replicas": 1},
                ]}],
            },
        }))
        .unwrap()
    }

    /// The live StatefulSets as the API server would hold them after applying `desired`.
    fn live_sts(desired: &Desired, replicas: &[(&str, i32)]) -> Vec<Arc<StatefulSet>> {
        desired
            .rendered
            .stateful_sets
            .iter()
            .map(|s| {
                let mut s = s.clone();
                let name = s.metadata.name.clone().unwrap();
                if let Some(r) = replicas.iter().find(|(n, _)| *n == name) {
                    s.spec.as_mut().unwrap().replicas = Some(r.1);
                }
                // The StatefulSet controller has taken up this generation.
                s.metadata.generation = Some(1);
                s.status = Some(
                    serde_json::from_value(json!({"replicas": 0, "updateRevision": "rev1", "observedGeneration": 1}))
                        .unwrap(),
                );
                Arc::new(s)
            })
            .collect()
    }

    /// A Ready, current pod of `sts` whose admin API reports `state` and sees `members`.
    fn pod(desired: &Desired, sts: &str, ordinal: i32, state: &str, members: &[String]) -> PodView {
        let s = desired.rendered.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some(sts)).unwrap();
        let tmpl = s.spec.as_ref().unwrap().template.metadata.clone().unwrap();
        let name = format!("{sts}-{ordinal}");
        let mut labels = tmpl.labels.clone().unwrap();
        labels.insert("controller-revision-hash".into(), "rev1".into());
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": labels, "annotations": tmpl.annotations},
            "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        let az = labels.get("woodpecker.zilliz.io/zone").cloned().unwrap_or_default();
        PodView {
            pod: Arc::new(p),
            name: name.clone(),
            ready: true,
            terminating: false,
            started: true,
            status: Some(AdminStatus {
                node_name: name,
                state: state.into(),
                member_count: members.len() as u32,
                az,
                resource_group: "default".into(),
                ..Default::default()
            }),
            members: Some(
                members.iter().map(|m| Member { name: m.clone(), alive: true, ..Default::default() }).collect(),
            ),
            log_healthy: Some(true),
            decommission: (state != "active").then(|| crate::admin::DecommissionProgress {
                remaining_segments: 0,
                has_local_data: false,
                safe_to_terminate: state == "decommissioned",
            }),
            admin_error: None,
        }
    }

    fn run(cr: &WoodpeckerCluster, sts: &[Arc<StatefulSet>], pods: &[PodView], pvcs: &[&str]) -> Plan {
        let desired = render(cr, &Resolved::default()).expect("render");
        let pvcs: BTreeMap<String, Option<String>> =
            pvcs.iter().map(|n| (n.to_string(), Some("10Gi".to_string()))).collect();
        let previous = WoodpeckerClusterStatus::default();
        let obs = Observed { stateful_sets: sts, pods, pvcs: &pvcs, previous: &previous };
        plan(cr, &desired, &obs, &ClusterMemory::default(), Timestamp::now())
    }

    fn four_pod_names() -> [String; 4] {
        ["wal-pool-az-a-0", "wal-pool-az-a-1", "wal-pool-az-b-0", "wal-pool-az-c-0"].map(String::from)
    }

    /// Two pods in zone a, one in b and one in c, all active members of each other's gossip.
    fn four_active_pods(desired: &Desired) -> Vec<PodView> {
        let names = four_pod_names();
        [("wal-pool-az-a", 0), ("wal-pool-az-a", 1), ("wal-pool-az-b", 0), ("wal-pool-az-c", 0)]
            .iter()
            .map(|(s, o)| pod(desired, s, *o, "active", &names))
            .collect()
    }

    #[test]
    fn converged_cluster_is_idle_available_and_not_busy() {
        let cr = cluster(2);
        let desired = render(&cr, &Resolved::default()).unwrap();
        let sts = live_sts(&desired, &[]);
        let pods = four_active_pods(&desired);
        let p = run(&cr, &sts, &pods, &[]);
        assert_eq!(p.roll, RollStep::Idle);
        assert!(p.scale.is_empty(), "{:?}", p.scale);
        assert!(!p.busy);
        assert_eq!((p.status.replicas, p.status.ready_replicas), (4, 4));
        assert_eq!(p.status.rollout.as_ref().map(|r| r.state), Some(RolloutState::Idle));
        let available = p.conditions.iter().find(|c| c.type_ == "Available").unwrap();
        assert!(available.status, "{available:?}");
        assert_eq!(p.status.node_groups.iter().map(|g| g.updated).sum::<i32>(), 4);
    }

    #[test]
    fn scale_down_holds_replicas_and_decommissions_the_victim_first() {
        let cr = cluster(1);
        let desired = render(&cr, &Resolved::default()).unwrap();
        let sts = live_sts(&desired, &[("wal-pool-az-a", 2)]);
        let pods = four_active_pods(&desired);
        let p = run(&cr, &sts, &pods, &["data-wal-pool-az-a-0", "data-wal-pool-az-a-1"]);
        let a = p.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some("wal-pool-az-a")).unwrap();
        assert_eq!(a.spec.as_ref().unwrap().replicas, Some(2), "replicas held while the victim drains");
        assert_eq!(p.scale, vec![ScaleStep::Decommission { pod: "wal-pool-az-a-1".into() }]);
        assert!(p.busy);
        assert!(!matches!(p.roll, RollStep::Evict { .. }), "no roll during a decommission");

        // Once drained and safe: shrink, report it, and the PVC goes with the pod later.
        let mut pods = pods;
        pods[1] = pod(&desired, "wal-pool-az-a", 1, "decommissioned", &four_pod_names());
        let p = run(&cr, &sts, &pods, &["data-wal-pool-az-a-0", "data-wal-pool-az-a-1"]);
        let a = p.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some("wal-pool-az-a")).unwrap();
        assert_eq!(a.spec.as_ref().unwrap().replicas, Some(1));
        assert!(p.scale.contains(&ScaleStep::Decommissioned { pod: "wal-pool-az-a-1".into() }), "{:?}", p.scale);
        let sts = live_sts(&desired, &[("wal-pool-az-a", 1)]);
        pods.remove(1);
        let p = run(&cr, &sts, &pods, &["data-wal-pool-az-a-0", "data-wal-pool-az-a-1"]);
        assert_eq!(p.scale, vec![ScaleStep::DeletePvc { name: "data-wal-pool-az-a-1".into() }]);
    }

    #[test]
    fn outdated_pod_is_evicted_only_when_every_peer_sees_everyone() {
        let mut cr = cluster(1);
        cr.spec.rollout_policy.restart_token = "r1".into();
        let desired = render(&cr, &Resolved::default()).unwrap();
        let sts = live_sts(&desired, &[]);
        let all = ["wal-pool-az-a-0", "wal-pool-az-b-0", "wal-pool-az-c-0"].map(String::from);
        let mut stale = cluster(1);
        stale.spec.rollout_policy.restart_token = String::new();
        let old = render(&stale, &Resolved::default()).unwrap();
        let mk = |members: &[String]| -> Vec<PodView> {
            ["wal-pool-az-a", "wal-pool-az-b", "wal-pool-az-c"]
                .iter()
                .map(|s| pod(&old, s, 0, "active", members))
                .collect()
        };
        // One peer misses a member: wait, name the gate.
        let mut pods = mk(&all);
        pods[2] = pod(&old, "wal-pool-az-c", 0, "active", &all[..2]);
        let p = run(&cr, &sts, &pods, &[]);
        match &p.roll {
            RollStep::Wait { reason, .. } => {
                assert!(reason.contains("members") || reason.contains("memberlist"), "{reason}")
            }
            other => panic!("expected a gate wait, got {other:?}"),
        }
        assert_eq!(p.status.rollout.as_ref().map(|r| r.outdated), Some(3));
        // Converged: the first pass records the gates (settle), then a victim is chosen.
        let pods = mk(&all);
        let desired2 = render(&cr, &Resolved::default()).unwrap();
        let pvcs = BTreeMap::new();
        let previous = WoodpeckerClusterStatus::default();
        let obs = Observed { stateful_sets: &sts, pods: &pods, pvcs: &pvcs, previous: &previous };
        let mut memory = ClusterMemory::default();
        let first = plan(&cr, &desired2, &obs, &memory, Timestamp::now());
        assert!(matches!(first.roll, RollStep::Wait { .. }), "{:?}", first.roll);
        remember(&mut memory, &first, false);
        let second = plan(&cr, &desired2, &obs, &memory, Timestamp::now());
        match &second.roll {
            RollStep::Evict { pod, reason } => {
                assert_eq!(pod, "wal-pool-az-a-0");
                assert!(reason.contains("restart token"), "{reason}");
            }
            other => panic!("expected an eviction, got {other:?}"),
        }
    }

    #[test]
    fn replicas_are_not_rendered_from_a_cache_behind_our_own_shrink() {
        // Last pass shrank az-a 2 → 1; the cache still shows 2 and the drained pod terminating.
        let cr = cluster(1);
        let desired = render(&cr, &Resolved::default()).unwrap();
        let sts = live_sts(&desired, &[("wal-pool-az-a", 2)]);
        let mut pods = four_active_pods(&desired);
        pods[1].terminating = true;
        let pvcs: BTreeMap<String, Option<String>> = ["data-wal-pool-az-a-0", "data-wal-pool-az-a-1"]
            .iter()
            .map(|n| (n.to_string(), Some("10Gi".to_string())))
            .collect();
        let previous = WoodpeckerClusterStatus::default();
        let obs = Observed { stateful_sets: &sts, pods: &pods, pvcs: &pvcs, previous: &previous };
        let mut memory = ClusterMemory::default();
        memory.replicas_applied.insert("wal-pool-az-a".into(), 1);
        let p = plan(&cr, &desired, &obs, &memory, Timestamp::now());
        let a = p.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some("wal-pool-az-a")).unwrap();
        assert_eq!(a.spec.as_ref().unwrap().replicas, Some(1), "the old count would recreate the drained pod");
    }

    #[test]
    fn status_and_roll_agree_on_what_is_outdated() {
        use crate::decide::rollout::is_outdated;
        let cr = cluster(1);
        let desired = render(&cr, &Resolved::default()).unwrap();
        let sts = live_sts(&desired, &[]);
        let a = sts.iter().find(|s| s.metadata.name.as_deref() == Some("wal-pool-az-a")).unwrap();
        let names = ["wal-pool-az-a-0", "wal-pool-az-b-0", "wal-pool-az-c-0"].map(String::from);
        let current = pod(&desired, "wal-pool-az-a", 0, "active", &names);
        // The same pod without its revision label, and one of another revision.
        let mut unlabelled = current.clone();
        let mut p = (*unlabelled.pod).clone();
        p.metadata.labels.as_mut().unwrap().remove("controller-revision-hash");
        unlabelled.pod = Arc::new(p);
        let mut other = current.clone();
        let mut p = (*other.pod).clone();
        p.metadata.labels.as_mut().unwrap().insert("controller-revision-hash".into(), "rev0".into());
        other.pod = Arc::new(p);
        let token = cr.spec.rollout_policy.restart_token.as_str();
        let update_rev = a.status.as_ref().and_then(|s| s.update_revision.as_deref());
        for (v, want_outdated) in [(&current, false), (&unlabelled, true), (&other, true)] {
            let status_says = pod_is_current(&v.pod, Some(a), &desired.rendered.template_hash, token).is_err();
            let roll_says = is_outdated(
                &observed_pod(v, &desired.rendered.plan),
                update_rev,
                &desired.rendered.template_hash,
                token,
            );
            assert_eq!((status_says, roll_says), (want_outdated, want_outdated), "{}", v.name);
        }
    }

    #[test]
    fn storage_quantities_compare_across_suffixes() {
        assert_eq!(quantity_bytes("1Ki"), Some(1024.0));
        assert!(quantity_bytes("50Gi") > quantity_bytes("10Gi"));
        assert!(quantity_bytes("1Ti") > quantity_bytes("1000Gi"));
        assert!(quantity_bytes("1G") < quantity_bytes("1Gi"));
        assert_eq!(quantity_bytes("1.5k"), Some(1500.0));
        assert_eq!(quantity_bytes("12Qi"), None);
    }
}
