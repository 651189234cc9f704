//! Status projection: the status and its conditions, built from what a pass observed (pods, their
//! admin answers, StatefulSets) and finished from the roll and scale decisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use woodpecker_crds::{
    BufferPoolStatus, CONDITION_AVAILABLE, CONDITION_DECOMMISSION_STALLED, CONDITION_DEGRADED, CONDITION_PROGRESSING,
    CONDITION_ROLLOUT_BLOCKED, CONDITION_TOPOLOGY_VALID, ClusterPhase, DecommissionStatus, HashStatus, NodeGroupStatus,
    NodeStatus, RolloutState, RolloutStatus, VersionStatus, WoodpeckerCluster, WoodpeckerClusterStatus,
};

use super::RollStep;
use super::pod_adapters::{pod_group, pod_is_current};
use crate::controller::observe::PodView;
use crate::render::names::{self, ANNOTATION_CONFIG_HASH};
use crate::render::{self, ClusterPlan, Rendered};

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
