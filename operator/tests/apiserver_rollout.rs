//! Against the real kube-apiserver + controller-manager: a safe rolling restart of a 3-zone
//! cluster replaces one pod at a time, zone by zone, highest ordinal first, and waits for the
//! replacement to be Ready and seen by every peer's gossip before touching the next pod.
//!
//! The test plays kubelet (it sets pod status) and serves every pod's admin API on its own
//! loopback address, so the operator's real HTTP admin client and the Eviction API (with the
//! PDB evaluated by the disruption controller) are exercised.

mod apiserver_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver_support::{
    FakeCluster, RunningOperator, TestNamespace, client, config, finish_termination, hold_pod, install_crd,
    set_pod_ready,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use woodpecker_crds::WoodpeckerCluster;
use woodpecker_operator::controller::observe::pod_ready;

/// What the fake kubelet saw.
#[derive(Default, Debug)]
struct Timeline {
    /// (pod name, time) of every pod deletion, in order.
    deletions: Vec<(String, Instant)>,
    /// Pods not Ready at each deletion (besides the victim).
    unready_at_deletion: Vec<Vec<String>>,
    /// When each pod (by name) last joined gossip.
    joined: HashMap<String, Instant>,
    /// Most pods unready at once.
    max_unready: usize,
    /// Current uid and readiness by pod name.
    pods: BTreeMap<String, (String, bool)>,
}

/// Replacement pods become Ready after `ready_delay` and join gossip `join_delay` later.
fn spawn_kubelet(
    client: Client,
    ns: &str,
    fake: FakeCluster,
    timeline: Arc<Mutex<Timeline>>,
    ready_delay: Duration,
    join_delay: Duration,
) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pdbs = Api::namespaced(client, ns);
    tokio::spawn(async move {
        // Watch errors are retried with backoff (see apiserver_support::spawn_kubelet).
        let mut stream = watcher(pods.clone(), watcher::Config::default()).default_backoff().boxed();
        let mut first_generation = true;
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let (pod, deleted) = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                watcher::Event::Init => continue,
                watcher::Event::InitDone => continue,
            };
            let name = pod.name_any();
            let uid = pod.uid().unwrap_or_default();
            if deleted || pod.metadata.deletion_timestamp.is_some() {
                let mut t = timeline.lock().unwrap();
                if t.pods.get(&name).is_some_and(|(u, _)| *u == uid) {
                    t.pods.remove(&name);
                    let unready: Vec<String> =
                        t.pods.iter().filter(|(_, (_, r))| !*r).map(|(n, _)| n.clone()).collect();
                    t.deletions.push((name.clone(), Instant::now()));
                    t.unready_at_deletion.push(unready);
                }
                fake.leave(&name);
                if !deleted {
                    finish_termination(pods.clone(), pdbs.clone(), &pod);
                }
                continue;
            }
            if !hold_pod(&pods, &pod).await {
                continue;
            }
            let ready = pod_ready(&pod);
            {
                let mut t = timeline.lock().unwrap();
                t.pods.insert(name.clone(), (uid.clone(), ready));
                let unready = t.pods.values().filter(|(_, r)| !*r).count();
                t.max_unready = t.max_unready.max(unready);
            }
            if ready {
                continue;
            }
            let zone = pod.labels().get("woodpecker.zilliz.io/zone").cloned().unwrap_or_default();
            let ip = fake.add_pod(&name, &zone).await;
            let replacement = !first_generation || timeline.lock().unwrap().deletions.iter().any(|(n, _)| *n == name);
            let (rd, jd) = if replacement { (ready_delay, join_delay) } else { (Duration::ZERO, Duration::ZERO) };
            let pods = pods.clone();
            let fake = fake.clone();
            let tl = timeline.clone();
            tokio::spawn(async move {
                tokio::time::sleep(rd).await;
                if set_pod_ready(&pods, &name, ip, true).await {
                    fake.join(&name, jd);
                    tl.lock().unwrap().joined.insert(name.clone(), Instant::now() + jd);
                }
            });
            if timeline.lock().unwrap().pods.len() >= 6 {
                first_generation = false;
            }
        }
    })
}

#[tokio::test]
async fn rolling_restart_of_three_zones_replaces_one_pod_at_a_time_in_order_waiting_on_gates() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "roll").await;
    let fake = FakeCluster::new().await;
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let ready_delay = Duration::from_millis(1500);
    let join_delay = Duration::from_millis(2000);
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone(), timeline.clone(), ready_delay, join_delay);
    let op = RunningOperator::start(config().await, &ns.name);

    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let cr: WoodpeckerCluster = serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"},
        "spec": {
            "metricsPort": fake.port,
            "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
            "rolloutPolicy": {"settleTimeSeconds": 1, "readyTimeoutSeconds": 120},
            "bufferPools": [{"name": "pool", "nodeGroups": [
                {"name": "az-a", "zone": "zone-a", "replicas": 2},
                {"name": "az-b", "zone": "zone-b", "replicas": 2},
                {"name": "az-c", "zone": "zone-c", "replicas": 2},
            ]}],
        },
    }))
    .expect("cluster");
    clusters.create(&PostParams::default(), &cr).await.expect("creating the cluster");
    ns.wait_for(&client, "6/6 Ready and Available", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        let available = st.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
        (st.ready_replicas == 6 && available).then_some(())
    })
    .await;
    {
        let mut t = timeline.lock().unwrap();
        assert!(t.deletions.is_empty(), "no pod may restart while the cluster is created");
        // Creation starts all pods at once; the budget applies to the roll.
        t.max_unready = 0;
    }

    // Request a safe rolling restart.
    let started = Instant::now();
    clusters
        .patch(
            "wal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rolloutPolicy": {"restartToken": "r1"}}})),
        )
        .await
        .expect("setting the restart token");
    ns.wait_for(&client, "six restarts and the roll back to Idle", Duration::from_secs(240), || async {
        let done = timeline.lock().unwrap().deletions.len() >= 6;
        let st = clusters.get("wal").await.ok()?.status?;
        let idle = st.rollout.as_ref().is_none_or(|r| r.state == woodpecker_crds::RolloutState::Idle);
        (done && idle && st.ready_replicas == 6).then_some(())
    })
    .await;
    let roll_time = started.elapsed();
    println!("METRIC rolling_restart_6_pods_ms={}", roll_time.as_millis());

    let t = std::mem::take(&mut *timeline.lock().unwrap());
    let order: Vec<&str> = t.deletions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order.len(), 6, "each pod restarts exactly once: {order:?}");
    // One at a time: when a pod was evicted, every other pod was Ready.
    for (i, unready) in t.unready_at_deletion.iter().enumerate() {
        assert!(unready.is_empty(), "eviction #{i} ({}) happened while {unready:?} were not Ready", order[i]);
    }
    assert!(t.max_unready <= 1, "at most one pod may be unavailable at a time, saw {}", t.max_unready);
    // Gates: each eviction waited until the previous replacement had joined every peer's gossip.
    for i in 1..order.len() {
        let prev = order[i - 1];
        let joined = t.joined.get(prev).copied().unwrap_or_else(|| panic!("{prev} never rejoined"));
        assert!(
            t.deletions[i].1 >= joined,
            "{} was evicted {:?} before {prev}'s replacement joined gossip",
            order[i],
            joined - t.deletions[i].1
        );
    }
    // Order: one zone finished before the next; inside a zone the non-seed (ordinal 1) first.
    let zone_of = |p: &str| p.rsplit_once('-').map(|(sts, _)| sts.to_string()).unwrap_or_default();
    let zones: Vec<String> = order.iter().map(|p| zone_of(p)).collect();
    for pair in zones.chunks(2) {
        assert_eq!(pair[0], pair[1], "a zone must be finished before the next starts: {order:?}");
    }
    for pair in order.chunks(2) {
        assert!(pair[0].ends_with("-1") && pair[1].ends_with("-0"), "highest ordinal (non-seed) first: {order:?}");
    }

    // Every restart was announced by an Event.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns.name);
    let restarts = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RestartingPod"))
        // Identical Events are folded into one with a series count (when the pod was not in the cache,
        // two restarts' Events share their key), so count occurrences, not objects.
        .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
        .sum::<usize>();
    assert!(restarts >= 6, "expected a RestartingPod Event per restart, found {restarts}");
    op.stop().await;
    kubelet.abort();
}

#[tokio::test]
async fn failing_gate_blocks_the_roll_with_a_condition_and_event_and_never_forces() {
    use apiserver_support::spawn_kubelet;
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "block").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let cr: WoodpeckerCluster = serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"},
        "spec": {
            "metricsPort": fake.port,
            "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
            "rolloutPolicy": {"settleTimeSeconds": 0, "readyTimeoutSeconds": 10},
            "bufferPools": [{"name": "pool", "nodeGroups": [
                {"name": "az-a", "zone": "zone-a", "replicas": 1},
                {"name": "az-b", "zone": "zone-b", "replicas": 1},
                {"name": "az-c", "zone": "zone-c", "replicas": 1},
            ]}],
        },
    }))
    .expect("cluster");
    clusters.create(&PostParams::default(), &cr).await.expect("creating the cluster");
    ns.wait_for(&client, "3/3 Ready", Duration::from_secs(60), || async {
        (clusters.get("wal").await.ok()?.status?.ready_replicas == 3).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let uids = |list: Vec<Pod>| list.iter().map(|p| p.uid().unwrap_or_default()).collect::<Vec<_>>();
    let before = uids(pods.list(&Default::default()).await.expect("pods").items);

    // One peer reports a stalled log: the log-health gate fails.
    fake.nodes.lock().unwrap().get_mut("wal-pool-az-b-0").expect("fake node").log_unhealthy = true;
    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"rolloutPolicy": {"restartToken": "r"}}})))
        .await
        .expect("restart token");
    let cond = ns
        .wait_for(&client, "RolloutBlocked=True naming the failing gate", Duration::from_secs(40), || async {
            let st = clusters.get("wal").await.ok()?.status?;
            st.conditions.into_iter().find(|c| c.type_ == "RolloutBlocked" && c.status == "True")
        })
        .await;
    assert!(
        cond.message.contains("wal-pool-az-b-0") && cond.message.contains("log-health"),
        "the block names the pod and the gate: {}",
        cond.message
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns.name);
    let blocked = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("RolloutBlocked"));
    assert!(blocked, "a RolloutBlocked Event is recorded");
    assert_eq!(
        uids(pods.list(&Default::default()).await.expect("pods").items),
        before,
        "a blocked roll never forces a restart"
    );

    // Healing the gate lets the roll finish.
    fake.nodes.lock().unwrap().get_mut("wal-pool-az-b-0").expect("fake node").log_unhealthy = false;
    ns.wait_for(&client, "the roll to finish and RolloutBlocked=False", Duration::from_secs(120), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        let unblocked = st.conditions.iter().any(|c| c.type_ == "RolloutBlocked" && c.status == "False");
        let idle = st.rollout.as_ref().is_some_and(|r| r.state == woodpecker_crds::RolloutState::Idle);
        (unblocked && idle && st.ready_replicas == 3).then_some(())
    })
    .await;
    op.stop().await;
    kubelet.abort();
}
