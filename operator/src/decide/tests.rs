//! Table tests for the roll and scale decisions, with synthetic pods and admin answers.

use std::collections::BTreeSet;

use woodpecker_crds::RolloutGates;

use super::observed::{AdminView, MemberView, NodeState, ObservedPod};
use super::rollout::{ExpectedGroup, RollDecision, RollInput, RollMemory, decide_roll};
use super::scale::{GroupScaleInput, PoolScaleInput, ScaleAction, ScalePodView, plan_pool_scale};

const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];

fn groups() -> Vec<ExpectedGroup> {
    ZONES
        .iter()
        .map(|z| ExpectedGroup {
            pool: "p".to_string(),
            group: z.to_string(),
            stateful_set: format!("wal-p-{z}"),
            update_revision: Some(format!("wal-p-{z}-new")),
            template_pending: false,
            replicas: 2,
            zone: Some(z.to_string()),
            region: None,
            resource_group: "default".to_string(),
        })
        .collect()
}

fn all_names() -> Vec<String> {
    groups().iter().flat_map(|g| g.pod_names()).collect()
}

fn admin(zone: &str) -> AdminView {
    AdminView {
        state: NodeState::Active,
        member_count: 6,
        members: all_names().into_iter().map(|name| MemberView { name, alive: true }).collect(),
        zone: Some(zone.to_string()),
        region: None,
        resource_group: Some("default".to_string()),
        log_health_ok: Some(true),
        disk_over_hard_watermark: false,
    }
}

/// Six Ready pods, all at the old revision (`updated` lists the ones already at the new one).
fn pods(updated: &[&str]) -> Vec<ObservedPod> {
    let mut out = Vec::new();
    for z in ZONES {
        for ordinal in 0..2 {
            let name = format!("wal-p-{z}-{ordinal}");
            let new = updated.contains(&name.as_str());
            out.push(ObservedPod {
                name: name.clone(),
                pool: "p".to_string(),
                group: z.to_string(),
                zone: Some(z.to_string()),
                ordinal,
                is_seed: ordinal == 0,
                ready: true,
                terminating: false,
                revision: Some(format!("wal-p-{z}-{}", if new { "new" } else { "old" })),
                config_hash: Some("h1".to_string()),
                restart_token: String::new(),
                admin: Some(admin(z)),
            });
        }
    }
    out
}

fn pod_mut<'a>(pods: &'a mut [ObservedPod], name: &str) -> &'a mut ObservedPod {
    pods.iter_mut().find(|p| p.name == name).expect("pod exists")
}

struct Case {
    groups: Vec<ExpectedGroup>,
    pods: Vec<ObservedPod>,
    gates: RolloutGates,
    paused: bool,
    decommissioning: bool,
    max_unavailable: i32,
    now: i64,
}

impl Case {
    fn new(pods: Vec<ObservedPod>) -> Self {
        Self {
            groups: groups(),
            pods,
            gates: RolloutGates::default(),
            paused: false,
            decommissioning: false,
            max_unavailable: 1,
            now: 1_000,
        }
    }

    fn run(&self, memory: &RollMemory) -> super::rollout::RollOutcome {
        let victims = BTreeSet::new();
        let input = RollInput {
            groups: &self.groups,
            pods: &self.pods,
            target_hash: "h1",
            restart_token: "",
            max_unavailable: self.max_unavailable,
            settle_seconds: 30,
            ready_timeout_seconds: 600,
            gates: &self.gates,
            paused: self.paused,
            decommission_in_progress: self.decommissioning,
            decommission_victims: &victims,
            now: self.now,
        };
        decide_roll(&input, memory)
    }
}

fn settled() -> RollMemory {
    RollMemory { gates_passed_at: Some(900), ..Default::default() }
}

fn is_wait_containing(d: &RollDecision, needle: &str) -> bool {
    matches!(d, RollDecision::Wait { reason } if reason.contains(needle))
}

#[test]
fn nothing_outdated_is_done() {
    let case = Case::new(pods(&all_names().iter().map(String::as_str).collect::<Vec<_>>()));
    let out = case.run(&settled());
    assert_eq!(out.decision, RollDecision::Done);
    assert_eq!(out.memory, RollMemory::default());
}

#[test]
fn gates_passing_first_time_records_and_settles_then_evicts_on_a_later_pass() {
    let mut case = Case::new(pods(&[]));
    let first = case.run(&RollMemory::default());
    assert!(is_wait_containing(&first.decision, "settling"), "{:?}", first.decision);
    assert_eq!(first.memory.gates_passed_at, Some(1_000));

    case.now = 1_010;
    let early = case.run(&first.memory);
    assert!(is_wait_containing(&early.decision, "settling for 20s"), "{:?}", early.decision);

    case.now = 1_031;
    let later = case.run(&early.memory);
    // First zone, non-seed before seed, highest ordinal first.
    assert_eq!(later.decision, RollDecision::Evict { pod: "wal-p-az-a-1".to_string() });
    assert_eq!(later.memory.last_zone.as_deref(), Some("az-a"));
    assert_eq!(later.memory.gates_passed_at, None);
}

#[test]
fn a_failing_gate_during_settle_restarts_the_settle_period() {
    let mut case = Case::new(pods(&[]));
    pod_mut(&mut case.pods, "wal-p-az-b-0").admin.as_mut().expect("admin").member_count = 5;
    let out = case.run(&settled());
    assert!(is_wait_containing(&out.decision, "sees 5 members"), "{:?}", out.decision);
    assert_eq!(out.memory.gates_passed_at, None);
}

#[test]
fn roll_waits_while_the_evicted_pod_terminates_is_missing_or_its_replacement_is_not_ready() {
    let memory = RollMemory {
        last_evicted: Some(("wal-p-az-a-1".to_string(), 990)),
        last_zone: Some("az-a".to_string()),
        ..Default::default()
    };

    let mut terminating = Case::new(pods(&[]));
    pod_mut(&mut terminating.pods, "wal-p-az-a-1").terminating = true;
    assert!(is_wait_containing(&terminating.run(&memory).decision, "terminating"));

    let mut missing = Case::new(pods(&[]));
    missing.pods.retain(|p| p.name != "wal-p-az-a-1");
    assert!(is_wait_containing(&missing.run(&memory).decision, "does not exist"));

    let mut not_ready = Case::new(pods(&["wal-p-az-a-1"]));
    pod_mut(&mut not_ready.pods, "wal-p-az-a-1").ready = false;
    let out = not_ready.run(&memory);
    assert!(is_wait_containing(&out.decision, "updated pod wal-p-az-a-1 is not Ready"), "{:?}", out.decision);

    let mut not_replaced = Case::new(pods(&[]));
    not_replaced.now = 995;
    let out = not_replaced.run(&memory);
    assert!(is_wait_containing(&out.decision, "has not been replaced"), "{:?}", out.decision);
}

#[test]
fn a_wait_longer_than_the_ready_timeout_blocks_naming_the_pod() {
    let mut case = Case::new(pods(&["wal-p-az-a-1"]));
    pod_mut(&mut case.pods, "wal-p-az-a-1").ready = false;
    let first = case.run(&RollMemory::default());
    assert!(matches!(first.decision, RollDecision::Wait { .. }));
    case.now = 1_000 + 600;
    let out = case.run(&first.memory);
    match out.decision {
        RollDecision::Block { pod, reason } => {
            assert_eq!(pod.as_deref(), Some("wal-p-az-a-1"));
            assert!(reason.contains("not Ready"), "{reason}");
        }
        other => panic!("expected Block, got {other:?}"),
    }
}

#[test]
fn an_outdated_pod_that_is_already_down_is_replaced_first_without_gates() {
    let mut case = Case::new(pods(&[]));
    let down = pod_mut(&mut case.pods, "wal-p-az-c-0");
    down.ready = false;
    down.admin = None;
    // Peers cannot see it, which would fail the gossip gate; replacing a down pod costs nothing.
    for p in &mut case.pods {
        if let Some(a) = p.admin.as_mut() {
            a.member_count = 5;
            a.members.retain(|m| m.name != "wal-p-az-c-0");
        }
    }
    let out = case.run(&RollMemory::default());
    assert_eq!(out.decision, RollDecision::Evict { pod: "wal-p-az-c-0".to_string() });
}

#[test]
fn budget_counts_down_pods_across_all_groups() {
    let mut case = Case::new(pods(&[]));
    case.max_unavailable = 1;
    pod_mut(&mut case.pods, "wal-p-az-b-1").ready = false;
    pod_mut(&mut case.pods, "wal-p-az-c-1").ready = false;
    // Two pods already down with a budget of one: only down pods may be touched.
    let out = case.run(&settled());
    match out.decision {
        RollDecision::Evict { pod } => assert!(pod == "wal-p-az-b-1" || pod == "wal-p-az-c-1", "{pod}"),
        other => panic!("expected an eviction of a down pod, got {other:?}"),
    }
}

#[test]
fn gossip_gate_requires_every_peer_to_see_every_member_alive() {
    let mut case = Case::new(pods(&[]));
    let view = pod_mut(&mut case.pods, "wal-p-az-c-1").admin.as_mut().expect("admin");
    if let Some(m) = view.members.iter_mut().find(|m| m.name == "wal-p-az-a-0") {
        m.alive = false;
    }
    let out = case.run(&settled());
    assert!(is_wait_containing(&out.decision, "does not see wal-p-az-a-0"), "{:?}", out.decision);

    case.gates.gossip = false;
    assert!(matches!(case.run(&settled()).decision, RollDecision::Evict { .. }));
}

#[test]
fn log_health_503_and_disk_watermark_hold_the_roll_when_their_gates_are_on() {
    let mut case = Case::new(pods(&[]));
    pod_mut(&mut case.pods, "wal-p-az-b-0").admin.as_mut().expect("admin").log_health_ok = Some(false);
    assert!(is_wait_containing(&case.run(&settled()).decision, "stalled log"));
    case.gates.log_health = false;
    assert!(matches!(case.run(&settled()).decision, RollDecision::Evict { .. }));

    let mut disk = Case::new(pods(&[]));
    pod_mut(&mut disk.pods, "wal-p-az-a-0").admin.as_mut().expect("admin").disk_over_hard_watermark = true;
    assert!(is_wait_containing(&disk.run(&settled()).decision, "watermark"));
}

#[test]
fn a_pod_advertising_the_wrong_zone_or_a_non_active_state_holds_the_roll() {
    let mut zone = Case::new(pods(&[]));
    pod_mut(&mut zone.pods, "wal-p-az-b-1").admin.as_mut().expect("admin").zone = Some("az-x".to_string());
    assert!(is_wait_containing(&zone.run(&settled()).decision, "advertises zone"));

    let mut state = Case::new(pods(&[]));
    pod_mut(&mut state.pods, "wal-p-az-b-1").admin.as_mut().expect("admin").state = NodeState::Decommissioning;
    assert!(is_wait_containing(&state.run(&settled()).decision, "not active"));
}

#[test]
fn a_zone_is_finished_before_the_next_and_seeds_go_last_within_it() {
    let case = Case::new(pods(&["wal-p-az-a-1"]));
    let memory = RollMemory {
        gates_passed_at: Some(900),
        last_evicted: Some(("wal-p-az-a-1".to_string(), 800)),
        last_zone: Some("az-a".to_string()),
        ..Default::default()
    };
    assert_eq!(case.run(&memory).decision, RollDecision::Evict { pod: "wal-p-az-a-0".to_string() });

    let case = Case::new(pods(&["wal-p-az-a-1", "wal-p-az-a-0"]));
    assert_eq!(case.run(&memory).decision, RollDecision::Evict { pod: "wal-p-az-b-1".to_string() });
}

#[test]
fn paused_rollouts_and_running_decommissions_hold_the_roll() {
    let mut paused = Case::new(pods(&[]));
    paused.paused = true;
    assert!(is_wait_containing(&paused.run(&settled()).decision, "paused"));
    let mut decom = Case::new(pods(&[]));
    decom.decommissioning = true;
    assert!(is_wait_containing(&decom.run(&settled()).decision, "decommission"));
}

#[test]
fn a_changed_config_hash_or_restart_token_makes_pods_outdated() {
    let all = all_names();
    let mut case = Case::new(pods(&all.iter().map(String::as_str).collect::<Vec<_>>()));
    pod_mut(&mut case.pods, "wal-p-az-c-1").config_hash = Some("h0".to_string());
    let out = case.run(&settled());
    assert_eq!(out.outdated, vec!["wal-p-az-c-1".to_string()]);
    assert_eq!(out.decision, RollDecision::Evict { pod: "wal-p-az-c-1".to_string() });
    assert!(super::rollout::is_outdated(&case.pods[0], Some("wal-p-az-a-new"), "h1", "token-2"));
}

#[test]
fn no_eviction_before_the_stateful_set_takes_up_the_new_template() {
    let all = all_names();
    let mut case = Case::new(pods(&all.iter().map(String::as_str).collect::<Vec<_>>()));
    pod_mut(&mut case.pods, "wal-p-az-c-1").config_hash = Some("h0".to_string());
    // Another group's template being pending does not hold this one back.
    case.groups[0].template_pending = true;
    assert_eq!(case.run(&settled()).decision, RollDecision::Evict { pod: "wal-p-az-c-1".to_string() });
    // A pod replaced now could come back from the old template and need a second restart.
    case.groups[2].template_pending = true;
    let out = case.run(&settled());
    assert_eq!(
        out.decision,
        RollDecision::Wait { reason: "waiting for StatefulSet wal-p-az-c to take up the new pod template".to_string() }
    );
    assert_eq!(out.outdated, vec!["wal-p-az-c-1".to_string()]);
}

// ---- scaling ----

fn slot(ordinal: i32, state: Option<NodeState>, safe: bool) -> ScalePodView {
    ScalePodView {
        name: format!("wal-p-az-a-{ordinal}"),
        ordinal,
        exists: true,
        terminating: false,
        started: state.is_some(),
        state,
        safe_to_terminate: safe,
        pvc_exists: true,
        pvc_name: format!("data-wal-p-az-a-{ordinal}"),
        decommission_since: None,
    }
}

fn pool(desired: i32, current: Option<i32>, pods: Vec<ScalePodView>) -> PoolScaleInput {
    PoolScaleInput {
        pool: "p".to_string(),
        groups: vec![GroupScaleInput {
            stateful_set: "wal-p-az-a".to_string(),
            desired,
            current,
            pods,
            zone: Some("za".to_string()),
        }],
        ensemble_size: 3,
        delete_pvcs: true,
        decommission_timeout_seconds: 3600,
        budget: 1,
        min_zones: 0,
        now: 10_000,
    }
}

fn active(n: i32) -> Vec<ScalePodView> {
    (0..n).map(|i| slot(i, Some(NodeState::Active), false)).collect()
}

#[test]
fn scale_up_only_raises_replicas() {
    let plan = plan_pool_scale(&pool(5, Some(3), active(3)));
    assert_eq!(plan.actions, vec![ScaleAction::SetReplicas { stateful_set: "wal-p-az-a".to_string(), replicas: 5 }]);
    assert!(plan.victims.is_empty());
}

#[test]
fn scale_down_decommissions_victims_before_shrinking() {
    let plan = plan_pool_scale(&pool(3, Some(4), active(4)));
    assert_eq!(plan.actions, vec![ScaleAction::Decommission { pod: "wal-p-az-a-3".to_string() }]);
    assert_eq!(plan.victims, vec!["wal-p-az-a-3".to_string()]);
    assert!(plan.in_progress());
}

#[test]
fn a_draining_victim_keeps_the_shrink_waiting_and_stalls_after_the_timeout() {
    let mut pods = active(3);
    let mut victim = slot(3, Some(NodeState::Decommissioning), false);
    victim.decommission_since = Some(10_000 - 3_600);
    pods.push(victim);
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.stalled, vec!["wal-p-az-a-3".to_string()]);

    let mut pods = active(3);
    pods.push(slot(3, Some(NodeState::Decommissioned), false));
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert!(plan.actions.is_empty(), "decommissioned but not safe_to_terminate must wait");
}

#[test]
fn safe_victims_let_the_stateful_set_shrink_and_their_pvcs_go_once_the_pods_are_gone() {
    let mut pods = active(3);
    pods.push(slot(3, Some(NodeState::Decommissioned), true));
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert_eq!(plan.actions, vec![ScaleAction::SetReplicas { stateful_set: "wal-p-az-a".to_string(), replicas: 3 }]);

    let mut pods = active(3);
    let mut gone = slot(3, None, false);
    gone.exists = false;
    pods.push(gone);
    let plan = plan_pool_scale(&pool(3, Some(3), pods.clone()));
    assert_eq!(plan.actions, vec![ScaleAction::DeletePvc { pvc: "data-wal-p-az-a-3".to_string() }]);

    let mut retain = pool(3, Some(3), pods);
    retain.delete_pvcs = false;
    assert!(plan_pool_scale(&retain).actions.is_empty());
}

#[test]
fn raising_replicas_mid_drain_cancels_the_decommission() {
    let mut pods = active(3);
    pods.push(slot(3, Some(NodeState::Decommissioning), false));
    let plan = plan_pool_scale(&pool(4, Some(4), pods));
    assert_eq!(plan.actions, vec![ScaleAction::CancelDecommission { pod: "wal-p-az-a-3".to_string() }]);
    assert!(plan.in_progress());
}

#[test]
fn a_stray_persisted_decommission_is_cancelled() {
    let mut pods = active(3);
    pods[1].state = Some(NodeState::Decommissioned);
    let plan = plan_pool_scale(&pool(3, Some(3), pods));
    assert_eq!(plan.actions, vec![ScaleAction::CancelDecommission { pod: "wal-p-az-a-1".to_string() }]);
}

#[test]
fn a_victim_that_vanished_with_its_pvc_keeps_the_scale_down_blocked() {
    let mut pods = active(3);
    let mut vanished = slot(3, None, false);
    vanished.exists = false;
    pods.push(vanished);
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.waiting.iter().any(|w| w.contains("PVC")), "{:?}", plan.waiting);
}

#[test]
fn scale_down_below_the_ensemble_size_is_refused() {
    let plan = plan_pool_scale(&pool(2, Some(3), active(3)));
    assert!(plan.refused.as_deref().is_some_and(|r| r.contains("below ensembleSize 3")), "{:?}", plan.refused);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
}

#[test]
fn an_unreachable_victim_is_waited_for() {
    let mut pods = active(4);
    pods[3].state = None;
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert!(plan.actions.is_empty());
    assert!(plan.waiting.iter().any(|w| w.contains("did not answer")));
}

#[test]
fn a_victim_that_does_not_answer_stalls_after_the_timeout() {
    let mut pods = active(4);
    pods[3].state = None;
    pods[3].started = true;
    pods[3].decommission_since = Some(10_000 - 3_599);
    let plan = plan_pool_scale(&pool(3, Some(4), pods.clone()));
    assert!(plan.stalled.is_empty(), "not yet: {:?}", plan.stalled);
    pods[3].decommission_since = Some(10_000 - 3_600);
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert_eq!(plan.stalled, vec!["wal-p-az-a-3".to_string()]);
    assert!(plan.actions.is_empty(), "never forced: {:?}", plan.actions);
}

#[test]
fn a_victim_that_never_started_shrinks_without_a_drain() {
    // Pending or crash-looping: not Ready, no container running, no admin answer.
    let mut pods = active(3);
    pods.push(slot(3, None, false));
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert_eq!(plan.actions, vec![ScaleAction::SetReplicas { stateful_set: "wal-p-az-a".to_string(), replicas: 3 }]);
    assert!(plan.victims.is_empty(), "{:?}", plan.victims);
    assert!(!plan.in_progress());
}

#[test]
fn retiring_a_whole_pool_is_not_refused_but_stopping_below_the_ensemble_size_is() {
    let plan = plan_pool_scale(&pool(0, Some(3), active(3)));
    assert!(plan.refused.is_none(), "{:?}", plan.refused);
    // One at a time, from the top.
    assert_eq!(plan.actions, vec![ScaleAction::Decommission { pod: "wal-p-az-a-2".to_string() }]);
    assert!(plan_pool_scale(&pool(1, Some(3), active(3))).refused.is_some());
}

#[test]
fn victims_drain_one_at_a_time_from_the_top_within_the_budget() {
    // 5 → 3: only the highest victim is decommissioned while the budget is 1.
    let plan = plan_pool_scale(&pool(3, Some(5), active(5)));
    assert_eq!(plan.actions, vec![ScaleAction::Decommission { pod: "wal-p-az-a-4".to_string() }]);
    assert!(plan.waiting.iter().any(|w| w.contains("wal-p-az-a-3") && w.contains("budget")), "{:?}", plan.waiting);

    // The top victim drained: shrink past it; the next one waits until it is gone.
    let mut pods = active(5);
    pods[4] = slot(4, Some(NodeState::Decommissioned), true);
    let plan = plan_pool_scale(&pool(3, Some(5), pods.clone()));
    assert_eq!(plan.actions, vec![ScaleAction::SetReplicas { stateful_set: "wal-p-az-a".to_string(), replicas: 4 }]);
    // Not yet deleted by the StatefulSet controller, then terminating: still unavailable.
    let plan = plan_pool_scale(&pool(3, Some(4), pods.clone()));
    assert!(plan.actions.iter().all(|a| !matches!(a, ScaleAction::Decommission { .. })), "{:?}", plan.actions);
    pods[4].exists = false;
    pods[4].terminating = true;
    let plan = plan_pool_scale(&pool(3, Some(4), pods.clone()));
    assert!(plan.actions.iter().all(|a| !matches!(a, ScaleAction::Decommission { .. })), "{:?}", plan.actions);
    pods[4].terminating = false;
    let plan = plan_pool_scale(&pool(3, Some(4), pods));
    assert!(
        plan.actions.contains(&ScaleAction::Decommission { pod: "wal-p-az-a-3".to_string() }),
        "{:?}",
        plan.actions
    );

    // A victim still draining uses the budget: nothing else starts.
    let mut pods = active(5);
    pods[4] = slot(4, Some(NodeState::Decommissioning), false);
    let plan = plan_pool_scale(&pool(3, Some(5), pods.clone()));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.draining, 1);

    // With maxUnavailable 2, two drain at once.
    let mut wide = pool(3, Some(5), active(5));
    wide.budget = 2;
    assert_eq!(plan_pool_scale(&wide).actions.len(), 2);
}

#[test]
fn a_scale_down_leaving_fewer_zones_than_the_ensemble_size_is_refused_under_hard_multi_az() {
    let group = |name: &str, zone: &str, desired: i32, current: i32| GroupScaleInput {
        stateful_set: format!("wal-p-{name}"),
        desired,
        current: Some(current),
        pods: (0..current).map(|i| slot(i, Some(NodeState::Active), false)).collect(),
        zone: Some(zone.to_string()),
    };
    let mut input = pool(0, None, Vec::new());
    input.groups = vec![group("az-a", "za", 2, 2), group("az-b", "zb", 2, 2), group("az-c", "zc", 0, 1)];
    input.min_zones = 3;
    let plan = plan_pool_scale(&input);
    assert!(plan.refused.as_deref().is_some_and(|r| r.contains("zone")), "{:?}", plan.refused);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    // Without the hard multi-az rule the same scale-down (4 pods ≥ ES) proceeds.
    input.min_zones = 0;
    let plan = plan_pool_scale(&input);
    assert!(plan.refused.is_none());
    assert!(plan.actions.iter().any(|a| matches!(a, ScaleAction::Decommission { .. })), "{:?}", plan.actions);
}
