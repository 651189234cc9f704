//! Glue between the pure layers and the controller: render the desired objects, feed the
//! observed pods to the roll/scale planners, and build the status from the same observations.
//! Everything here is pure; `reconcile` executes what it returns.
//!
//! ```text
//!   desired            validate + render, grouped by kind
//!   pool_scale         pools ─▶ scale planner ─▶ ScaleSteps, held replicas, victims
//!   workload           rendered StatefulSets patched to what is live; PVC expansions
//!   pod_adapters       pods/StatefulSets in the planners' terms (one "outdated" definition)
//!   plan (this file)   the roll planner, then the status from status_projection
//! ```

mod desired;
mod pod_adapters;
mod pool_scale;
mod status_projection;
#[cfg(test)]
mod tests;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use woodpecker_crds::{CONDITION_TOPOLOGY_VALID, DecommissionStatus, WoodpeckerCluster, WoodpeckerClusterStatus};

pub use desired::{Desired, admin_port, render};
pub use pod_adapters::pod_is_current;
use pod_adapters::{observed_pod, template_pending};
use pool_scale::PoolScaleOutcome;
pub use status_projection::{Progress, WantedCondition, finish_status, observed_status};
pub use workload::quantity_bytes;
use workload::{LiveStatefulSets, applied_replicas};

use super::ClusterMemory;
use super::observe::PodView;
use crate::decide::rollout::ExpectedGroup;
use crate::decide::{ObservedPod, RollDecision, RollInput, RollMemory, decide_roll};

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

/// Whether `obj` names the cluster `cr` as its controller.
pub fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    cr: &WoodpeckerCluster,
) -> bool {
    let Some(uid) = cr.metadata.uid.as_deref() else { return false };
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
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
    let live_sts: LiveStatefulSets<'_> = obs.stateful_sets.iter().map(|s| (s.name_any(), s.as_ref())).collect();
    let pods: BTreeMap<&str, &PodView> = obs.pods.iter().map(|v| (v.name.as_str(), v)).collect();

    let PoolScaleOutcome {
        steps: mut scale,
        replicas_override,
        victims,
        stalled,
        waiting: scale_waiting,
        refused,
        decommission_since,
        scaling_up,
    } = pool_scale::plan_pools(cr, rendered, obs, memory, &live_sts, &pods, secs);
    let stateful_sets = workload::stateful_sets_to_apply(rendered, &live_sts, &replicas_override, memory);
    scale.extend(workload::pvc_expansions(rendered, &live_sts, obs.pvcs, memory));

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
