//! The planner glue against rendered clusters: idle when converged, scale-down order, the roll
//! gate, replicas never rendered from a stale cache, one definition of "outdated".

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
        members: Some(members.iter().map(|m| Member { name: m.clone(), alive: true, ..Default::default() }).collect()),
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
        ["wal-pool-az-a", "wal-pool-az-b", "wal-pool-az-c"].iter().map(|s| pod(&old, s, 0, "active", members)).collect()
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
        let roll_says =
            is_outdated(&observed_pod(v, &desired.rendered.plan), update_rev, &desired.rendered.template_hash, token);
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
