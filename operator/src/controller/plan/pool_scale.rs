//! Pool scale glue: every pool (and every StatefulSet of a removed node group or pool) fed to the
//! scale planner, with the victims' admin answers and decommission timers; its actions turned
//! into [`ScaleStep`]s, held replicas and decommission bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use woodpecker_crds::{PvcPolicy, WoodpeckerCluster};

use super::workload::{LiveStatefulSets, applied_replicas};
use super::{Observed, ScaleStep, controlled_by};
use crate::controller::ClusterMemory;
use crate::controller::observe::PodView;
use crate::decide::{GroupScaleInput, NodeState, PoolScaleInput, ScaleAction, ScalePodView, plan_pool_scale};
use crate::render::Rendered;
use crate::render::names::{self, LABEL_POOL};

/// A pool as the scale planner sees it: name, ensemble size to keep (0: retired), and its
/// StatefulSets with the replicas wanted.
type PoolToScale = (String, i32, Vec<(String, i32)>);

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

/// What the scale planner decided for every pool this pass.
pub(super) struct PoolScaleOutcome {
    /// Scale and decommission steps to carry out.
    pub steps: Vec<ScaleStep>,
    /// Replicas the planner holds or sets, by StatefulSet (a drain pending, or a finished shrink).
    pub replicas_override: BTreeMap<String, i32>,
    /// Pods being decommissioned.
    pub victims: BTreeSet<String>,
    /// Victims past the decommission timeout.
    pub stalled: Vec<String>,
    /// Why a scale-down waits (budget, zones, a victim not yet started).
    pub waiting: Vec<String>,
    /// Scale-downs refused (below the ensemble size or the zone count).
    pub refused: Vec<String>,
    /// When each victim's decommission started (Unix seconds).
    pub decommission_since: BTreeMap<String, i64>,
    /// A group is growing.
    pub scaling_up: bool,
}

/// Run the scale planner over every pool at Unix time `secs`.
pub(super) fn plan_pools(
    cr: &WoodpeckerCluster,
    rendered: &Rendered,
    obs: &Observed<'_>,
    memory: &ClusterMemory,
    live_sts: &LiveStatefulSets<'_>,
    pods: &BTreeMap<&str, &PodView>,
    secs: i64,
) -> PoolScaleOutcome {
    let spec = &cr.spec;
    let cplan = &rendered.plan;
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
    PoolScaleOutcome {
        steps: scale,
        replicas_override,
        victims,
        stalled,
        waiting: scale_waiting,
        refused,
        decommission_since,
        scaling_up,
    }
}
