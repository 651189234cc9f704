//! Rolling restart planner (operator-design §5.6): one pod at a time across every node group,
//! within the disruption budget, gated on the replaced pod being Ready and on every peer's view of
//! gossip membership, with a settle re-check before the next victim. It never forces: a gate that
//! keeps failing past the ready timeout turns the wait into [`RollDecision::Block`].
//!
//! ```text
//!   outdated? ──no──▶ Done
//!      │yes
//!   updated pod not Ready / pod missing / terminating? ──▶ Wait (Block after readyTimeout)
//!      │
//!   budget: unavailable ≥ maxUnavailable and no outdated pod is already down? ──▶ Wait
//!      │
//!   gates (every Ready peer: active, member_count, memberlist ⊇ expected, topology; log health;
//!          disk watermark) fail? ──▶ Wait (Block after readyTimeout)
//!      │pass
//!   first pass, or settleTime not yet elapsed since it? ──▶ Wait (settling)
//!      │
//!   Evict{victim}: unready first → current zone first → non-seed first → highest ordinal
//! ```

use std::collections::{BTreeMap, BTreeSet};

use woodpecker_crds::RolloutGates;

use super::observed::{NodeState, ObservedPod};

/// A node group as the roll expects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedGroup {
    /// Pool name.
    pub pool: String,
    /// Group name.
    pub group: String,
    /// StatefulSet name (pods are `<stateful_set>-<ordinal>`).
    pub stateful_set: String,
    /// StatefulSet `status.updateRevision`; `None` until the StatefulSet controller reported it.
    pub update_revision: Option<String>,
    /// The StatefulSet controller has not yet taken up the target pod template (its status is behind
    /// the StatefulSet's generation, or the StatefulSet seen does not carry the target template yet). A
    /// pod evicted now could come back from the old template and need a second restart.
    pub template_pending: bool,
    /// Desired replicas.
    pub replicas: i32,
    /// Zone the pods must advertise.
    pub zone: Option<String>,
    /// Region the pods must advertise.
    pub region: Option<String>,
    /// Resource group the pods must advertise.
    pub resource_group: String,
}

impl ExpectedGroup {
    /// Names of the pods that should exist.
    pub fn pod_names(&self) -> Vec<String> {
        (0..self.replicas.max(0)).map(|i| format!("{}-{i}", self.stateful_set)).collect()
    }
}

/// Everything the roll decision looks at.
#[derive(Clone, Debug)]
pub struct RollInput<'a> {
    /// Local node groups, in spec order.
    pub groups: &'a [ExpectedGroup],
    /// Observed server pods of the cluster.
    pub pods: &'a [ObservedPod],
    /// Target pod-template hash (`Rendered::template_hash`).
    pub target_hash: &'a str,
    /// Target restart token (`spec.rolloutPolicy.restartToken`).
    pub restart_token: &'a str,
    /// Pods that may be unavailable at once (`spec.rolloutPolicy.maxUnavailable`).
    pub max_unavailable: i32,
    /// Seconds the gates must keep passing before the next eviction.
    pub settle_seconds: i64,
    /// Seconds a wait may last before it is reported as blocked.
    pub ready_timeout_seconds: i64,
    /// Which gates are on.
    pub gates: &'a RolloutGates,
    /// `spec.rolloutPolicy.paused`.
    pub paused: bool,
    /// A scale-down decommission is under way (rolls wait for it).
    pub decommission_in_progress: bool,
    /// Pods being decommissioned on purpose (excepted from the `state == active` gate).
    pub decommission_victims: &'a BTreeSet<String>,
    /// Now, in Unix seconds.
    pub now: i64,
}

/// State carried between passes. Losing it (operator restart) only costs one extra settle period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollMemory {
    /// When all gates were first seen passing in the current step.
    pub gates_passed_at: Option<i64>,
    /// When the current wait started (for the ready timeout).
    pub waiting_since: Option<i64>,
    /// Last pod evicted and when.
    pub last_evicted: Option<(String, i64)>,
    /// Zone of the last eviction (finish a zone before starting the next).
    pub last_zone: Option<String>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollDecision {
    /// Every pod is at the target revision, hash and token.
    Done,
    /// Hold: a gate is pending, the budget is used, the roll is paused or settling.
    Wait {
        /// Why, for status and events.
        reason: String,
    },
    /// A wait outlasted the ready timeout: report RolloutBlocked (never force).
    Block {
        /// Pod at fault, when one is.
        pod: Option<String>,
        /// Which gate, and why.
        reason: String,
    },
    /// Evict this pod through the Eviction API (on HTTP 429, keep the previous memory and retry).
    Evict {
        /// Pod to evict.
        pod: String,
    },
}

/// A decision plus the memory to keep for the next pass and the pods still outdated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollOutcome {
    /// The decision.
    pub decision: RollDecision,
    /// Memory for the next pass.
    pub memory: RollMemory,
    /// Pods not at the target, sorted by name.
    pub outdated: Vec<String>,
}

/// Why a pod with `revision`, `config_hash` and `restart_token` is not on the target
/// (`update_revision` of its StatefulSet, `target_hash`, `target_token`); `None` when it is.
/// The one definition of "outdated", used by the roll and by the status alike.
pub fn outdated_reason(
    revision: Option<&str>,
    config_hash: Option<&str>,
    restart_token: &str,
    update_revision: Option<&str>,
    target_hash: &str,
    target_token: &str,
) -> Option<String> {
    let hash = config_hash.unwrap_or("");
    if hash != target_hash {
        return Some(format!("config hash {hash:?} differs from target {target_hash:?}"));
    }
    if restart_token != target_token {
        return Some(format!("restart token {restart_token:?} differs from {target_token:?}"));
    }
    match (update_revision, revision) {
        (Some(u), Some(p)) if u != p => {
            Some(format!("revision {p} differs from the StatefulSet's update revision {u}"))
        }
        (Some(u), None) => Some(format!("no revision label while the StatefulSet's update revision is {u}")),
        _ => None,
    }
}

/// Whether `pod` differs from its group's target revision, the target hash or the restart token.
pub fn is_outdated(pod: &ObservedPod, update_revision: Option<&str>, target_hash: &str, restart_token: &str) -> bool {
    outdated_reason(
        pod.revision.as_deref(),
        pod.config_hash.as_deref(),
        &pod.restart_token,
        update_revision,
        target_hash,
        restart_token,
    )
    .is_some()
}

struct Wait {
    pod: Option<String>,
    reason: String,
}

fn wait(pod: Option<&str>, reason: impl Into<String>) -> Wait {
    Wait { pod: pod.map(str::to_string), reason: reason.into() }
}

/// Decide the next step of the roll.
pub fn decide_roll(input: &RollInput<'_>, memory: &RollMemory) -> RollOutcome {
    let by_name: BTreeMap<&str, &ObservedPod> = input.pods.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut group_of: BTreeMap<String, &ExpectedGroup> = BTreeMap::new();
    for g in input.groups {
        for name in g.pod_names() {
            group_of.insert(name, g);
        }
    }
    let mut outdated: Vec<&ObservedPod> = input
        .pods
        .iter()
        .filter(|p| {
            group_of
                .get(&p.name)
                .is_some_and(|g| is_outdated(p, g.update_revision.as_deref(), input.target_hash, input.restart_token))
        })
        .collect();
    outdated.sort_by(|a, b| a.name.cmp(&b.name));
    let outdated_names: Vec<String> = outdated.iter().map(|p| p.name.clone()).collect();

    if outdated.is_empty() {
        return RollOutcome { decision: RollDecision::Done, memory: RollMemory::default(), outdated: outdated_names };
    }
    if input.paused {
        return RollOutcome {
            decision: RollDecision::Wait { reason: "rollout is paused (spec.rolloutPolicy.paused)".to_string() },
            memory: memory.clone(),
            outdated: outdated_names,
        };
    }
    if input.decommission_in_progress {
        return RollOutcome {
            decision: RollDecision::Wait { reason: "a scale-down decommission is in progress".to_string() },
            memory: memory.clone(),
            outdated: outdated_names,
        };
    }

    if let Some(g) = outdated.iter().filter_map(|p| group_of.get(&p.name)).find(|g| g.template_pending) {
        return RollOutcome {
            decision: RollDecision::Wait {
                reason: format!("waiting for StatefulSet {} to take up the new pod template", g.stateful_set),
            },
            memory: memory.clone(),
            outdated: outdated_names,
        };
    }

    match choose(input, memory, &by_name, &group_of, &outdated) {
        Ok(Some(victim)) => {
            let zone = by_name.get(victim.as_str()).and_then(|p| p.zone.clone());
            RollOutcome {
                decision: RollDecision::Evict { pod: victim.clone() },
                memory: RollMemory {
                    gates_passed_at: None,
                    waiting_since: None,
                    last_evicted: Some((victim, input.now)),
                    last_zone: zone,
                },
                outdated: outdated_names,
            }
        }
        Ok(None) => {
            let mut next = memory.clone();
            next.waiting_since = None;
            let passed_at = *next.gates_passed_at.get_or_insert(input.now);
            let left = input.settle_seconds - (input.now - passed_at);
            RollOutcome {
                decision: RollDecision::Wait { reason: format!("gates pass; settling for {left}s before re-checking") },
                memory: next,
                outdated: outdated_names,
            }
        }
        Err(w) => {
            let mut next = memory.clone();
            next.gates_passed_at = None;
            let since = *next.waiting_since.get_or_insert(input.now);
            let decision = if input.now - since >= input.ready_timeout_seconds {
                RollDecision::Block {
                    pod: w.pod,
                    reason: format!(
                        "{} (for {}s, readyTimeout {}s)",
                        w.reason,
                        input.now - since,
                        input.ready_timeout_seconds
                    ),
                }
            } else {
                RollDecision::Wait { reason: w.reason }
            };
            RollOutcome { decision, memory: next, outdated: outdated_names }
        }
    }
}

/// `Ok(Some(victim))` to evict, `Ok(None)` when gates pass but the settle period is not over,
/// `Err` when something must be waited for.
fn choose(
    input: &RollInput<'_>,
    memory: &RollMemory,
    by_name: &BTreeMap<&str, &ObservedPod>,
    group_of: &BTreeMap<String, &ExpectedGroup>,
    outdated: &[&ObservedPod],
) -> Result<Option<String>, Wait> {
    // 1. Never run ahead of the previous step.
    if let Some(p) = input.pods.iter().find(|p| p.terminating) {
        return Err(wait(Some(&p.name), format!("pod {} is terminating", p.name)));
    }
    let mut unavailable = 0;
    for (name, g) in group_of {
        match by_name.get(name.as_str()) {
            None => return Err(wait(Some(name), format!("pod {name} does not exist yet"))),
            Some(p) => {
                if !p.ready {
                    unavailable += 1;
                    if !is_outdated(p, g.update_revision.as_deref(), input.target_hash, input.restart_token) {
                        return Err(wait(Some(name), format!("updated pod {name} is not Ready")));
                    }
                }
            }
        }
    }
    if let Some((last, _)) = &memory.last_evicted
        && outdated.iter().any(|p| &p.name == last && p.ready)
    {
        return Err(wait(Some(last), format!("evicted pod {last} has not been replaced yet")));
    }

    // 2. Global budget across all node groups.
    let down: Vec<&ObservedPod> = outdated.iter().copied().filter(|p| !p.ready).collect();
    let candidates: Vec<&ObservedPod> = if unavailable >= input.max_unavailable {
        if down.is_empty() {
            return Err(wait(
                None,
                format!("disruption budget used: {unavailable} unavailable, maxUnavailable {}", input.max_unavailable),
            ));
        }
        down.clone()
    } else {
        outdated.to_vec()
    };

    // 3. Cluster gates (skipped when the victim is already down: replacing it costs nothing).
    let victim = order_victims(&candidates, memory.last_zone.as_deref())
        .first()
        .map(|p| (*p).clone())
        .ok_or_else(|| wait(None, "no candidate pod"))?;
    if !victim.ready {
        return Ok(Some(victim.name));
    }
    check_gates(input, by_name, group_of)?;

    // 4. Settle: the gates must hold for settleSeconds, confirmed on a later pass.
    match memory.gates_passed_at {
        Some(at) if input.now - at >= input.settle_seconds => Ok(Some(victim.name)),
        _ => Ok(None),
    }
}

fn check_gates(
    input: &RollInput<'_>,
    by_name: &BTreeMap<&str, &ObservedPod>,
    group_of: &BTreeMap<String, &ExpectedGroup>,
) -> Result<(), Wait> {
    let mut expected_by_pool: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, g) in group_of {
        expected_by_pool.entry(g.pool.as_str()).or_default().insert(name.as_str());
    }
    for (pool, expected) in &expected_by_pool {
        for name in expected {
            let Some(pod) = by_name.get(name) else { continue };
            if !pod.ready {
                continue;
            }
            let Some(admin) = &pod.admin else {
                return Err(wait(Some(name), format!("admin API of {name} did not answer")));
            };
            if admin.state != NodeState::Active && !input.decommission_victims.contains(*name) {
                return Err(wait(Some(name), format!("{name} reports state {:?}, not active", admin.state)));
            }
            if input.gates.gossip {
                if admin.member_count != expected.len() as i32 {
                    return Err(wait(
                        Some(name),
                        format!("{name} sees {} members, pool {pool} expects {}", admin.member_count, expected.len()),
                    ));
                }
                let alive = admin.alive_members();
                if let Some(missing) = expected.iter().find(|e| !alive.contains(**e)) {
                    return Err(wait(Some(name), format!("{name} does not see {missing} alive in its memberlist")));
                }
            }
            if let Some(g) = group_of.get(*name) {
                let mismatch = |what: &str, want: Option<&str>, got: Option<&str>| {
                    (want.unwrap_or("") != got.unwrap_or("")).then(|| {
                        format!("{name} advertises {what} {:?}, expected {:?}", got.unwrap_or(""), want.unwrap_or(""))
                    })
                };
                if let Some(m) = mismatch("zone", g.zone.as_deref(), admin.zone.as_deref())
                    .or_else(|| mismatch("region", g.region.as_deref(), admin.region.as_deref()))
                    .or_else(|| mismatch("resource group", Some(&g.resource_group), admin.resource_group.as_deref()))
                {
                    return Err(wait(Some(name), m));
                }
            }
            if input.gates.log_health && admin.log_health_ok == Some(false) {
                return Err(wait(Some(name), format!("{name} reports a stalled log on /admin/log-health")));
            }
            if input.gates.disk_watermark && admin.disk_over_hard_watermark {
                return Err(wait(Some(name), format!("{name} is past the hard disk watermark")));
            }
        }
    }
    Ok(())
}

/// Victim order: unready first, then the zone of the last eviction, then other zones by name;
/// within a zone non-seeds before seeds, highest ordinal first.
pub fn order_victims<'p>(candidates: &[&'p ObservedPod], current_zone: Option<&str>) -> Vec<&'p ObservedPod> {
    let mut v: Vec<&ObservedPod> = candidates.to_vec();
    v.sort_by(|a, b| {
        let key = |p: &ObservedPod| {
            (
                p.ready,
                p.zone.as_deref() != current_zone || current_zone.is_none(),
                p.zone.clone().unwrap_or_default(),
                p.is_seed,
                std::cmp::Reverse(p.ordinal),
                p.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    v
}
