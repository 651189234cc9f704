//! Against the real kube-apiserver + controller-manager: scaling a zone down decommissions the
//! victim through its admin API first, shrinks the StatefulSet only once the victim is drained,
//! deletes its PVC (pvcPolicy Delete), restarts nothing, and records an Event for every step.

mod apiserver_support;

use std::time::Duration;

use apiserver_support::{
    Drain, FakeCluster, RunningOperator, TestNamespace, client, config, install_crd, spawn_kubelet,
    spawn_readiness_prober,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use woodpecker_crds::WoodpeckerCluster;

fn groups(a: i32) -> serde_json::Value {
    groups_sized(a, "10Gi")
}

fn groups_sized(a: i32, b_size: &str) -> serde_json::Value {
    json!([{"name": "pool", "nodeGroups": [
        {"name": "az-a", "zone": "zone-a", "replicas": a},
        {"name": "az-b", "zone": "zone-b", "replicas": 2, "storage": {"size": b_size}},
        {"name": "az-c", "zone": "zone-c", "replicas": 2},
    ]}])
}

#[tokio::test]
async fn scale_down_decommissions_then_shrinks_then_deletes_the_pvc() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "scale").await;
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
            "rolloutPolicy": {"settleTimeSeconds": 0},
            "scaleDown": {"pvcPolicy": "Delete"},
            "bufferPools": groups(2),
        },
    }))
    .expect("cluster");
    clusters.create(&PostParams::default(), &cr).await.expect("creating the cluster");
    ns.wait_for(&client, "6/6 Ready", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 6).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let uids_before: Vec<(String, String)> = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        pvcs.get_opt("data-wal-pool-az-a-1").await.expect("get pvc").is_some(),
        "the StatefulSet controller creates a PVC per pod"
    );

    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bufferPools": groups(1)}})))
        .await
        .expect("scaling az-a down");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    ns.wait_for(&client, "az-a shrunk to 1 after the decommission", Duration::from_secs(60), || async {
        let s = sts.get("wal-pool-az-a").await.ok()?;
        (s.spec?.replicas == Some(1)).then_some(())
    })
    .await;
    assert_eq!(
        fake.decommissions.lock().unwrap().as_slice(),
        ["wal-pool-az-a-1".to_string()],
        "exactly the victim is decommissioned, before the shrink"
    );
    ns.wait_for(&client, "the victim's PVC deleted", Duration::from_secs(60), || async {
        let p = pvcs.get_opt("data-wal-pool-az-a-1").await.ok()?;
        p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    assert!(pvcs.get_opt("data-wal-pool-az-a-0").await.expect("get pvc").is_some(), "survivors keep their PVCs");

    // Nothing else restarted.
    let after = pods.list(&ListParams::default()).await.expect("pods").items;
    for (name, uid) in uids_before.iter().filter(|(n, _)| n != "wal-pool-az-a-1") {
        let now = after.iter().find(|p| &p.name_any() == name).and_then(|p| p.uid());
        assert_eq!(now.as_deref(), Some(uid.as_str()), "pod {name} was restarted by a scale-down");
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let reasons: Vec<String> =
        events.list(&ListParams::default()).await.expect("events").items.into_iter().filter_map(|e| e.reason).collect();
    for want in ["Decommissioning", "Decommissioned", "DeletedPVC"] {
        assert!(reasons.iter().any(|r| r == want), "missing a {want} Event; have {reasons:?}");
    }
    ns.wait_for(&client, "status back to 5/5 and Running", Duration::from_secs(60), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 5 && st.replicas == 5 && st.decommission.is_empty()).then_some(())
    })
    .await;

    // Growing a group's storage never touches the immutable volumeClaimTemplates (the StatefulSet
    // apply keeps working) and asks for a PVC expansion instead; the test bed's PVCs are unbound,
    // so the API refuses and the operator reports it once, without restarting anything.
    let uids_now: Vec<String> =
        pods.list(&ListParams::default()).await.expect("pods").items.iter().filter_map(|p| p.uid()).collect();
    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bufferPools": groups_sized(1, "20Gi")}})))
        .await
        .expect("growing az-b storage");
    ns.wait_for(&client, "an expansion Event for az-b's PVCs", Duration::from_secs(60), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                matches!(e.reason.as_deref(), Some("ExpandingPVC") | Some("ExpandPVCFailed"))
                    && e.note.as_deref().is_some_and(|n| n.contains("data-wal-pool-az-b-0"))
            })
            .then_some(())
    })
    .await;
    let errors =
        op.metrics.encode().lines().any(|l| l.starts_with("woodpecker_operator_reconciles_total{outcome=\"Error\"}"));
    assert!(!errors, "growing storage must not make reconciles fail (immutable volumeClaimTemplates)");
    let uids_after: Vec<String> =
        pods.list(&ListParams::default()).await.expect("pods").items.iter().filter_map(|p| p.uid()).collect();
    assert_eq!(uids_now, uids_after, "growing storage restarts nothing");
    op.stop().await;
    kubelet.abort();
}

/// A cluster of groups az-a (`a` replicas), az-b and az-c (1 each), with a realistic kubelet: a
/// decommissioning pod turns NotReady, as `/readyz` answers 503 unless the server is `active`.
struct Realistic {
    client: kube::Client,
    ns: TestNamespace,
    fake: FakeCluster,
    op: RunningOperator,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    clusters: Api<WoodpeckerCluster>,
}

fn small_groups(a: i32) -> serde_json::Value {
    json!([{"name": "pool", "nodeGroups": [
        {"name": "az-a", "zone": "zone-a", "replicas": a},
        {"name": "az-b", "zone": "zone-b", "replicas": 1},
        {"name": "az-c", "zone": "zone-c", "replicas": 1},
    ]}])
}

impl Realistic {
    async fn start(prefix: &str, drain: Drain, never_start: &[&str], a: i32, ready: usize) -> Self {
        Self::start_with(prefix, drain, never_start, small_groups(a), ready).await
    }

    async fn start_with(
        prefix: &str,
        drain: Drain,
        never_start: &[&str],
        groups: serde_json::Value,
        ready: usize,
    ) -> Self {
        let client = client().await;
        install_crd(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let fake = FakeCluster::new().await;
        *fake.drain.lock().unwrap() = drain;
        fake.never_start.lock().unwrap().extend(never_start.iter().map(|s| s.to_string()));
        let tasks = vec![
            spawn_kubelet(client.clone(), &ns.name, fake.clone()),
            spawn_readiness_prober(client.clone(), &ns.name, fake.clone()),
        ];
        let op = RunningOperator::start(config().await, &ns.name);
        let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
        let cr: WoodpeckerCluster = serde_json::from_value(json!({
            "apiVersion": "woodpecker.zilliz.io/v1alpha1",
            "kind": "WoodpeckerCluster",
            "metadata": {"name": "wal"},
            "spec": {
                "metricsPort": fake.port,
                "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
                "rolloutPolicy": {"settleTimeSeconds": 0},
                "bufferPools": groups,
            },
        }))
        .expect("cluster");
        clusters.create(&PostParams::default(), &cr).await.expect("creating the cluster");
        let this = Self { client, ns, fake, op, tasks, clusters };
        this.ns
            .wait_for(&this.client, &format!("{ready} pods Ready"), Duration::from_secs(90), || async {
                let st = this.clusters.get("wal").await.ok()?.status?;
                (st.ready_replicas == ready as i32).then_some(())
            })
            .await;
        this
    }

    async fn scale_a(&self, a: i32) {
        self.clusters
            .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bufferPools": small_groups(a)}})))
            .await
            .expect("scaling az-a");
    }

    async fn sts_replicas(&self, want: i32, what: &str) {
        let sts: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.ns.name);
        self.ns
            .wait_for(&self.client, what, Duration::from_secs(60), || async {
                let s = sts.get("wal-pool-az-a").await.ok()?;
                (s.spec?.replicas == Some(want)).then_some(())
            })
            .await;
    }

    fn state(&self, pod: &str) -> Option<String> {
        self.fake.nodes.lock().unwrap().get(pod).map(|n| n.state.clone())
    }

    async fn stop(self) {
        self.op.stop().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

#[tokio::test]
async fn scale_down_finishes_while_the_draining_victim_is_not_ready() {
    let t = Realistic::start("drain", Drain::After(Duration::from_secs(3)), &[], 2, 4).await;
    t.scale_a(1).await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &t.ns.name);
    t.ns.wait_for(&t.client, "the victim draining and NotReady", Duration::from_secs(30), || async {
        let p = pods.get("wal-pool-az-a-1").await.ok()?;
        let draining = t.state("wal-pool-az-a-1").as_deref() == Some("decommissioning");
        (draining && !woodpecker_operator::controller::observe::pod_ready(&p)).then_some(())
    })
    .await;
    t.sts_replicas(1, "az-a shrunk to 1 once the NotReady victim reported decommissioned").await;
    t.ns.wait_for(&t.client, "status 3/3 without a decommission entry", Duration::from_secs(60), || async {
        let st = t.clusters.get("wal").await.ok()?.status?;
        (st.replicas == 3 && st.ready_replicas == 3 && st.decommission.is_empty()).then_some(())
    })
    .await;
    assert_eq!(t.fake.decommissions.lock().unwrap().as_slice(), ["wal-pool-az-a-1".to_string()]);
    t.stop().await;
}

#[tokio::test]
async fn cancelled_scale_down_returns_the_not_ready_victim_to_active_and_ready() {
    let t = Realistic::start("cancel", Drain::Never, &[], 2, 4).await;
    t.scale_a(1).await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &t.ns.name);
    t.ns.wait_for(&t.client, "the victim draining and NotReady", Duration::from_secs(30), || async {
        let p = pods.get("wal-pool-az-a-1").await.ok()?;
        let draining = t.state("wal-pool-az-a-1").as_deref() == Some("decommissioning");
        (draining && !woodpecker_operator::controller::observe::pod_ready(&p)).then_some(())
    })
    .await;
    // 2 → 1 → 2: the drain is cancelled, the pod serves again.
    t.scale_a(2).await;
    t.ns.wait_for(&t.client, "the victim active and Ready again", Duration::from_secs(30), || async {
        let p = pods.get("wal-pool-az-a-1").await.ok()?;
        let active = t.state("wal-pool-az-a-1").as_deref() == Some("active");
        (active && woodpecker_operator::controller::observe::pod_ready(&p)).then_some(())
    })
    .await;
    assert!(t.fake.cancels.lock().unwrap().iter().any(|c| c == "wal-pool-az-a-1"), "a cancel was sent");
    t.sts_replicas(2, "az-a stays at 2").await;
    t.ns.wait_for(&t.client, "status 4/4 Running without a decommission", Duration::from_secs(30), || async {
        let st = t.clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 4 && st.decommission.is_empty()).then_some(())
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn a_victim_that_never_started_is_removed_without_a_drain() {
    // az-a-1 stays Pending (no node can run it): removing it has nothing to drain.
    let t = Realistic::start("pending", Drain::Never, &["wal-pool-az-a-1"], 2, 3).await;
    t.scale_a(1).await;
    t.sts_replicas(1, "az-a shrunk to 1 without waiting for the Pending victim").await;
    assert!(t.fake.decommissions.lock().unwrap().is_empty(), "nothing to decommission");
    t.stop().await;
}

#[tokio::test]
async fn a_paused_cluster_gets_no_write_at_all_until_it_is_unpaused() {
    let t = Realistic::start("paused", Drain::Instant, &[], 2, 4).await;
    // Let the passes of the start-up finish (a pass in flight may still write status).
    let mut quiet = false;
    for _ in 0..15 {
        let before = t.op.requests.len();
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !t.op.requests.since(before).iter().any(|r| r.is_write()) {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the operator kept writing to a converged cluster");
    let mark = t.op.requests.len();
    // Pause and ask for a scale-down and a restart in the same change.
    let groups = small_groups(1);
    t.clusters
        .patch(
            "wal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true, "bufferPools": groups,
                "rolloutPolicy": {"restartToken": "now"}}})),
        )
        .await
        .expect("pausing with a scale-down and a restart");
    for i in 0..3 {
        let before = t.op.reconciles();
        t.clusters
            .patch(
                "wal",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .expect("poking the cluster");
        t.ns.wait_for(&t.client, "a pass after the poke", Duration::from_secs(20), || async {
            (t.op.reconciles() > before).then_some(())
        })
        .await;
    }
    let writes: Vec<String> =
        t.op.requests
            .since(mark)
            .into_iter()
            .filter(|r| r.is_write())
            .map(|r| format!("{} {}", r.method, r.uri))
            .collect();
    assert!(writes.is_empty(), "a paused cluster was written to: {writes:?}");
    assert!(t.fake.decommissions.lock().unwrap().is_empty(), "a paused cluster was decommissioned");

    t.clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": false}})))
        .await
        .expect("unpausing");
    t.sts_replicas(1, "the scale-down proceeds once unpaused").await;
    t.stop().await;
}

#[tokio::test]
async fn victims_drain_one_at_a_time_from_the_top() {
    let t = Realistic::start("onebyone", Drain::After(Duration::from_secs(1)), &[], 3, 5).await;
    t.scale_a(1).await;
    t.sts_replicas(1, "az-a shrunk to 1").await;
    assert_eq!(
        t.fake.decommissions.lock().unwrap().as_slice(),
        ["wal-pool-az-a-2".to_string(), "wal-pool-az-a-1".to_string()],
        "the highest ordinal first, each once"
    );
    assert_eq!(*t.fake.max_draining.lock().unwrap(), 1, "two victims drained at once (maxUnavailable is 1)");
    t.stop().await;
}

#[tokio::test]
async fn a_scale_down_that_leaves_fewer_zones_than_the_ensemble_size_is_refused() {
    let groups = |c: i32| {
        json!([{"name": "pool", "nodeGroups": [
            {"name": "az-a", "zone": "zone-a", "replicas": 2},
            {"name": "az-b", "zone": "zone-b", "replicas": 2},
            {"name": "az-c", "zone": "zone-c", "replicas": c},
        ]}])
    };
    let t = Realistic::start_with("zones", Drain::Instant, &[], groups(1), 5).await;
    // 4 pods stay (≥ ES 3), but only 2 zones: a hard multi-az strategy cannot place a segment.
    t.clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"bufferPools": groups(0)}})))
        .await
        .expect("emptying zone c");
    let cond =
        t.ns.wait_for(
            &t.client,
            "TopologyValid=False saying the scale-down was refused",
            Duration::from_secs(30),
            || async {
                let st = t.clusters.get("wal").await.ok()?.status?;
                st.conditions.into_iter().find(|c| c.type_ == "TopologyValid" && c.reason == "ScaleDownRefused")
            },
        )
        .await;
    assert!(cond.message.contains("zone"), "{}", cond.message);
    assert!(t.fake.decommissions.lock().unwrap().is_empty(), "zone c's pod was decommissioned");
    let sts: Api<StatefulSet> = Api::namespaced(t.client.clone(), &t.ns.name);
    assert_eq!(sts.get("wal-pool-az-c").await.expect("sts").spec.and_then(|s| s.replicas), Some(1));
    t.stop().await;
}
