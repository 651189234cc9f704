//! Scaling planner (operator-design §5.7), per buffer pool.
//!
//! * Scale-up: raise `replicas`; the seeds are Services, so nothing restarts.
//! * Scale-down: the victims are ordinals `desired..current`, taken from the highest (the StatefulSet
//!   removes ordinals from the top) one at a time within the budget (`maxUnavailable`): a victim is
//!   decommissioned through the admin API, and once it reports `decommissioned` and
//!   `safe_to_terminate` the StatefulSet shrinks past it, then the next one drains. A scale-down
//!   below the ensemble size, or below ES zones under a hard multi-az strategy, is refused. A victim that vanished while its PVC remains keeps the shrink blocked (the
//!   StatefulSet recreates it so it can finish draining). Nothing is ever forced.
//! * A victim whose server never started (Pending, crash-looping: no container running and no
//!   admin answer) holds nothing to drain, so it does not hold the shrink.
//! * A victim that drains, or whose admin API does not answer, for longer than
//!   `decommissionTimeoutSeconds` is reported stalled (still never forced).
//! * Cancel: any pod below the desired count that reports `decommissioning`/`decommissioned` gets a
//!   cancel — that covers raising replicas mid-drain, a manual decommission and an operator crash.
//! * PVCs of removed ordinals are deleted once their pod is gone (with `pvcPolicy: Delete`).

use super::observed::NodeState;

/// A pod slot of a StatefulSet during scaling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePodView {
    /// Pod name.
    pub name: String,
    /// Ordinal.
    pub ordinal: i32,
    /// The pod object exists (and is not terminating).
    pub exists: bool,
    /// The pod is terminating (it still takes disruption budget until it is gone).
    pub terminating: bool,
    /// `/admin/node/status` state, `None` when unreachable.
    pub state: Option<NodeState>,
    /// Its server has started: the pod is Ready, a container runs, or the admin API answered.
    pub started: bool,
    /// `/admin/node/decommission/progress` `safe_to_terminate`.
    pub safe_to_terminate: bool,
    /// Its data PVC still exists.
    pub pvc_exists: bool,
    /// PVC name (`data-<pod>`).
    pub pvc_name: String,
    /// When the operator first asked this pod to decommission, or first saw it as a victim in an
    /// unknown state (Unix seconds).
    pub decommission_since: Option<i64>,
}

/// One node group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupScaleInput {
    /// StatefulSet name.
    pub stateful_set: String,
    /// `replicas` the spec asks for.
    pub desired: i32,
    /// `spec.replicas` currently applied on the StatefulSet (`None` when it does not exist yet).
    pub current: Option<i32>,
    /// Every pod slot seen: existing pods and PVCs of any ordinal.
    pub pods: Vec<ScalePodView>,
    /// Zone the group is pinned to.
    pub zone: Option<String>,
}

/// One pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolScaleInput {
    /// Pool name.
    pub pool: String,
    /// Groups of the pool.
    pub groups: Vec<GroupScaleInput>,
    /// Ensemble size: a scale-down that leaves fewer pods than this is refused.
    pub ensemble_size: i32,
    /// Delete PVCs of removed ordinals.
    pub delete_pvcs: bool,
    /// `scaleDown.decommissionTimeoutSeconds`.
    pub decommission_timeout_seconds: i64,
    /// Victims that may drain at once (what is left of `maxUnavailable`): each draining victim
    /// is NotReady and takes PodDisruptionBudget.
    pub budget: i32,
    /// Fewest zones with pods a scale-down may leave (the ensemble size under a hard multi-az
    /// strategy, else 0).
    pub min_zones: i32,
    /// Now, Unix seconds.
    pub now: i64,
}

/// A side effect the controller should perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleAction {
    /// Apply this `replicas` to the StatefulSet.
    SetReplicas {
        /// StatefulSet.
        stateful_set: String,
        /// Replicas.
        replicas: i32,
    },
    /// `POST /admin/node/decommission` on the pod.
    Decommission {
        /// Pod.
        pod: String,
    },
    /// `POST /admin/node/decommission/cancel` on the pod.
    CancelDecommission {
        /// Pod.
        pod: String,
    },
    /// Delete this PVC (its pod is gone and was drained).
    DeletePvc {
        /// PVC name.
        pvc: String,
    },
}

/// The plan for one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScalePlan {
    /// Actions, in order.
    pub actions: Vec<ScaleAction>,
    /// Why something is still pending (for status and Progressing).
    pub waiting: Vec<String>,
    /// Victims draining longer than the timeout (DecommissionStalled).
    pub stalled: Vec<String>,
    /// Scale-down refused (for a condition), e.g. below the ensemble size.
    pub refused: Option<String>,
    /// Victims currently being decommissioned (rolls wait while this is non-empty).
    pub victims: Vec<String>,
    /// Victims draining now, counted against [`PoolScaleInput::budget`].
    pub draining: i32,
}

impl ScalePlan {
    /// Whether a scale or decommission is still under way.
    pub fn in_progress(&self) -> bool {
        !self.waiting.is_empty() || !self.victims.is_empty()
    }
}

/// Plan scaling of one pool.
pub fn plan_pool_scale(input: &PoolScaleInput) -> ScalePlan {
    let mut plan = ScalePlan::default();
    let desired_total: i32 = input.groups.iter().map(|g| g.desired).sum();
    let current_total: i32 = input.groups.iter().map(|g| g.current.unwrap_or(g.desired)).sum();
    let shrinking = input.groups.iter().any(|g| g.current.is_some_and(|c| g.desired < c));
    // Retiring a whole pool (every group to 0, which the CRD requires before a pool is removed) is
    // no quorum shortfall; stopping anywhere between 0 and the ensemble size is.
    let below_es = desired_total > 0 && desired_total < input.ensemble_size && desired_total < current_total;
    let zones = |count: &dyn Fn(&GroupScaleInput) -> i32| -> usize {
        let set: std::collections::BTreeSet<&str> =
            input.groups.iter().filter(|g| count(g) > 0).filter_map(|g| g.zone.as_deref()).collect();
        set.len()
    };
    let desired_zones = zones(&|g| g.desired);
    let current_zones = zones(&|g| g.current.unwrap_or(g.desired));
    let below_zones = desired_total > 0 && (desired_zones as i32) < input.min_zones && desired_zones < current_zones;
    let refuse = shrinking && (below_es || below_zones);
    if shrinking && below_es {
        plan.refused = Some(format!(
            "pool {} would shrink to {desired_total} pods, below ensembleSize {}; scale-down refused",
            input.pool, input.ensemble_size
        ));
    } else if refuse {
        plan.refused = Some(format!(
            "pool {} would keep pods in {desired_zones} zone(s), fewer than the {} a hard multi-az strategy needs; \
             scale-down refused",
            input.pool, input.min_zones
        ));
    }
    let mut budget = input.budget;

    for g in &input.groups {
        let current = g.current.unwrap_or(g.desired);
        // Cancel stray or reverted decommissions below the desired count.
        for p in g.pods.iter().filter(|p| p.ordinal < g.desired && p.exists) {
            if matches!(p.state, Some(NodeState::Decommissioning) | Some(NodeState::Decommissioned)) {
                plan.actions.push(ScaleAction::CancelDecommission { pod: p.name.clone() });
                plan.waiting.push(format!("cancelling decommission of {}", p.name));
            }
        }
        if g.desired >= current || refuse {
            if g.current != Some(g.desired) && !refuse {
                plan.actions
                    .push(ScaleAction::SetReplicas { stateful_set: g.stateful_set.clone(), replicas: g.desired });
            }
            if !refuse {
                delete_orphan_pvcs(input, g, g.desired.max(current), &mut plan);
            }
            continue;
        }

        // Scale-down from the top, one victim at a time: every ordinal at or above `shrink_to` is
        // removable now (drained, never started or gone).
        let mut shrink_to = current;
        let mut chain = true;
        // Victims shrunk away earlier whose pods are not gone yet (terminating, or not yet deleted by
        // the StatefulSet controller) are still unavailable.
        let leaving = g
            .pods
            .iter()
            .filter(|p| p.ordinal >= g.desired && (p.terminating || (p.exists && p.ordinal >= current)))
            .count() as i32;
        budget -= leaving;
        plan.draining += leaving;
        let mut group_victims = Vec::new();
        for ordinal in (g.desired..current).rev() {
            let victim = g.pods.iter().find(|p| p.ordinal == ordinal);
            let name = victim.map(|p| p.name.clone()).unwrap_or_else(|| format!("{}-{ordinal}", g.stateful_set));
            let removable = match victim {
                None => true,
                Some(p) if !p.exists && p.pvc_exists => {
                    plan.waiting.push(format!(
                        "victim {name} is gone but its PVC {} remains; waiting for it to come back and drain",
                        p.pvc_name
                    ));
                    false
                }
                Some(p) if !p.exists => true,
                Some(p) => match &p.state {
                    Some(NodeState::Decommissioned) if p.safe_to_terminate => true,
                    // Nothing ever ran there: nothing to drain.
                    None if !p.started => true,
                    Some(NodeState::Active) if budget > 0 => {
                        budget -= 1;
                        plan.draining += 1;
                        plan.actions.push(ScaleAction::Decommission { pod: name.clone() });
                        plan.waiting.push(format!("decommissioning {name}"));
                        false
                    }
                    Some(NodeState::Active) => {
                        plan.waiting.push(format!("{name} waits for the disruption budget (maxUnavailable)"));
                        false
                    }
                    Some(state) => {
                        budget -= 1;
                        plan.draining += 1;
                        plan.waiting.push(format!("{name} is draining (state {state:?})"));
                        stall_check(input, p, &mut plan);
                        false
                    }
                    None => {
                        budget -= 1;
                        plan.draining += 1;
                        plan.waiting.push(format!("admin API of victim {name} did not answer"));
                        stall_check(input, p, &mut plan);
                        false
                    }
                },
            };
            if chain && removable {
                shrink_to = ordinal;
                // Drained and removed in this pass, but unavailable until its pod is gone.
                if victim.is_some_and(|p| p.exists) {
                    budget -= 1;
                    plan.draining += 1;
                }
            } else {
                chain = false;
                if victim.is_some_and(|p| p.exists) {
                    group_victims.push(name);
                }
            }
        }
        if shrink_to < current {
            plan.actions.push(ScaleAction::SetReplicas { stateful_set: g.stateful_set.clone(), replicas: shrink_to });
        }
        delete_orphan_pvcs(input, g, shrink_to, &mut plan);
        group_victims.reverse();
        plan.victims.extend(group_victims);
    }
    plan
}

/// Report `p` stalled once it has waited longer than the decommission timeout.
fn stall_check(input: &PoolScaleInput, p: &ScalePodView, plan: &mut ScalePlan) {
    if let Some(since) = p.decommission_since
        && input.now - since >= input.decommission_timeout_seconds
    {
        plan.stalled.push(p.name.clone());
    }
}

/// PVCs at or above `keep_below` whose pod is gone are removed (policy Delete).
fn delete_orphan_pvcs(input: &PoolScaleInput, g: &GroupScaleInput, keep_below: i32, plan: &mut ScalePlan) {
    if !input.delete_pvcs {
        return;
    }
    for p in g.pods.iter().filter(|p| p.ordinal >= keep_below && !p.exists && p.pvc_exists) {
        plan.actions.push(ScaleAction::DeletePvc { pvc: p.pvc_name.clone() });
    }
}
