//! Against the real kube-apiserver + controller-manager: a 3-zone cluster is created, reports
//! status and Events, a second reconcile writes nothing, a missing Secret stops all writes, and
//! deleting the cluster lets the garbage collector remove everything it owned.

mod apiserver_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use apiserver_support::{
    FakeCluster, RunningOperator, TestNamespace, client, config, install_crd, set_pod_ready, wait_for,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use woodpecker_crds::WoodpeckerCluster;

/// A 3-zone cluster: one pool, groups az-a/az-b/az-c with `replicas` each.
pub fn three_zone_spec(admin_port: u16, replicas: i32) -> Value {
    json!({
        "metricsPort": admin_port,
        "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
        "rolloutPolicy": {"settleTimeSeconds": 1, "readyTimeoutSeconds": 60},
        "bufferPools": [{"name": "pool", "nodeGroups": [
            {"name": "az-a", "zone": "zone-a", "replicas": replicas},
            {"name": "az-b", "zone": "zone-b", "replicas": replicas},
            {"name": "az-c", "zone": "zone-c", "replicas": replicas},
        ]}],
    })
}

fn cluster(name: &str, spec: Value) -> WoodpeckerCluster {
    serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("cluster spec")
}

/// Plays kubelet: every pod that appears gets a loopback IP, a fake admin endpoint and Ready.
pub fn spawn_kubelet(client: Client, ns: &str, fake: FakeCluster) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        // Watch errors are retried with backoff (see apiserver_support::spawn_kubelet).
        let mut stream = watcher(pods.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(pod) = stream.next().await {
            let Ok(pod) = pod else { continue };
            if pod.metadata.deletion_timestamp.is_some() || apiserver_support_ready(&pod) {
                continue;
            }
            let name = pod.name_any();
            let zone = pod.labels().get("woodpecker.zilliz.io/zone").cloned().unwrap_or_default();
            let ip = fake.add_pod(&name, &zone).await;
            if set_pod_ready(&pods, &name, ip, true).await {
                fake.join(&name, Duration::ZERO);
            }
        }
    })
}

fn apiserver_support_ready(pod: &Pod) -> bool {
    woodpecker_operator::controller::observe::pod_ready(pod)
}

async fn names<K>(api: &Api<K>, cluster: &str) -> BTreeSet<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels(&format!("woodpecker.zilliz.io/cluster={cluster}"));
    api.list(&lp).await.map(|l| l.items.iter().map(|o| o.name_any()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn three_zone_cluster_is_created_reports_status_and_a_second_reconcile_writes_nothing() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "life").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);

    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);

    let start = Instant::now();
    clusters
        .create(&PostParams::default(), &cluster("wal", three_zone_spec(fake.port, 1)))
        .await
        .expect("creating the cluster");
    wait_for("3 StatefulSets, Services, ConfigMaps and the PDB", Duration::from_secs(60), || async {
        let ok = names(&sts, "wal").await.len() == 3
            && names(&svcs, "wal").await.len() >= 2
            && names(&cms, "wal").await.len() >= 2
            && !names(&pdbs, "wal").await.is_empty();
        ok.then_some(())
    })
    .await;
    let created_in = start.elapsed();
    println!("METRIC time_to_all_objects_created_ms={}", created_in.as_millis());

    // Every rendered object carries the controller owner reference.
    let cr = clusters.get("wal").await.expect("cluster");
    for s in sts.list(&ListParams::default()).await.expect("list sts").items {
        let owners = s.owner_references();
        assert!(
            owners.iter().any(|o| o.uid == cr.uid().unwrap_or_default() && o.controller == Some(true)),
            "StatefulSet {} lacks the cluster's controller ownerRef: {owners:?}",
            s.name_any()
        );
        assert_eq!(
            s.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.clone()).as_deref(),
            Some("OnDelete"),
            "StatefulSet {} must use OnDelete (the operator paces restarts)",
            s.name_any()
        );
    }

    // Status: ready, observed, available.
    let status = wait_for("status: 3/3 ready, observedGeneration, Available=True", Duration::from_secs(60), || async {
        let c = clusters.get("wal").await.ok()?;
        let st = c.status.clone()?;
        let available = st.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
        (st.ready_replicas == 3 && st.observed_generation == c.metadata.generation && available).then_some(st)
    })
    .await;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.node_groups.len(), 3, "one status entry per node group: {:?}", status.node_groups);
    assert!(
        status.conditions.iter().any(|c| c.type_ == "ConfigValid" && c.status == "True"),
        "ConfigValid=True expected: {:?}",
        status.conditions
    );

    // A no-change reconcile: wait for quiet, poke the cluster (annotation => watch event =>
    // reconcile), and count what the operator sent.
    let mut quiet = false;
    let mut last_writes = Vec::new();
    for _ in 0..15 {
        let before = op.requests.len();
        tokio::time::sleep(Duration::from_secs(2)).await;
        last_writes = op.requests.since(before).into_iter().filter(|r| r.is_write()).collect();
        if last_writes.is_empty() {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the operator keeps writing to a converged cluster: {last_writes:?}");
    let mark = op.requests.len();
    let before = op.reconciles();
    for i in 0..5 {
        clusters
            .patch(
                "wal",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .expect("annotating the cluster");
        let target = before + f64::from(i) + 1.0;
        wait_for("a reconcile after the poke", Duration::from_secs(20), || async {
            (op.reconciles() >= target).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let passes = op.reconciles() - before;
    let sent = op.requests.since(mark);
    let writes: Vec<_> = sent.iter().filter(|r| r.is_write()).collect();
    println!(
        "METRIC apiserver_requests_per_nochange_reconcile={:.2} (passes={passes}, requests={}, writes={})",
        sent.len() as f64 / passes,
        sent.len(),
        writes.len()
    );
    assert!(writes.is_empty(), "a no-change reconcile must not write; sent: {writes:?}");

    // Events for the cluster exist (at least the pods' first-time creation is not an event, but
    // nothing else happened; poke a restart to produce one through the roll).
    clusters
        .patch(
            "wal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rolloutPolicy": {"restartToken": "one"}}})),
        )
        .await
        .expect("setting a restart token");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    wait_for("a RestartingPod Event regarding the cluster", Duration::from_secs(60), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("RestartingPod")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("wal")
            })
            .then_some(())
    })
    .await;

    // Deletion: the garbage collector removes every owned object.
    clusters.delete("wal", &DeleteParams::background()).await.expect("deleting the cluster");
    wait_for("GC to remove StatefulSets, Services, ConfigMaps and the PDB", Duration::from_secs(60), || async {
        let gone = names(&sts, "wal").await.is_empty()
            && names(&svcs, "wal").await.is_empty()
            && names(&cms, "wal").await.is_empty()
            && names(&pdbs, "wal").await.is_empty();
        gone.then_some(())
    })
    .await;
    op.stop().await;
    kubelet.abort();
}

#[tokio::test]
async fn missing_secret_sets_config_invalid_and_writes_nothing_else() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "nosecret").await;
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let mut spec = three_zone_spec(19091, 1);
    spec["objectStorage"] = json!({
        "endpoint": {"address": "minio.example", "port": 9000},
        "bucket": "wal",
        "credentials": {"secretRef": {"name": "s3-creds"}},
    });
    let mark = op.requests.len();
    clusters.create(&PostParams::default(), &cluster("wal", spec)).await.expect("creating the cluster");
    let cond = wait_for("ConfigValid=False naming the Secret", Duration::from_secs(30), || async {
        let c = clusters.get("wal").await.ok()?;
        c.status?.conditions.into_iter().find(|c| c.type_ == "ConfigValid" && c.status == "False")
    })
    .await;
    assert!(cond.message.contains("s3-creds"), "message should name the Secret: {}", cond.message);
    let writes: Vec<String> = op
        .requests
        .since(mark)
        .into_iter()
        .filter(|r| r.is_write())
        .map(|r| format!("{} {}", r.method, r.uri))
        .filter(|w| !w.contains("/woodpeckerclusters/wal/status") && !w.contains("/events"))
        .collect();
    assert!(writes.is_empty(), "only status and Events may be written while a Secret is missing: {writes:?}");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    assert!(names(&sts, "wal").await.is_empty(), "no StatefulSet may exist while ConfigValid=False");

    // Creating the Secret lets the next pass proceed.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123"},
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &secret).await.expect("creating the Secret");
    // The Secret is watched (metadata only) and mapped to the clusters naming it: no 15 s requeue.
    wait_for("StatefulSets soon after the Secret appears", Duration::from_secs(10), || async {
        (names(&sts, "wal").await.len() == 3).then_some(())
    })
    .await;
    let template_hash = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("woodpecker.zilliz.io/config-hash"))
            .cloned()
            .unwrap_or_default()
    };
    let before = template_hash(&sts.get("wal-pool-az-a").await.expect("sts"));

    // With a referenced Secret, a no-change pass still sends nothing: its contents are cached
    // per resourceVersion from the metadata watch.
    // Measured before the rotation below: a roll in progress legitimately reports its progress in status.
    // The first poke lets the pods' creation settle (it may write status); the second must be a pure
    // no-change pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut mark = 0;
    for poke in ["1", "2"] {
        mark = op.requests.len();
        let before = op.reconciles();
        clusters
            .patch(
                "wal",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": poke}}})),
            )
            .await
            .expect("poking the cluster");
        wait_for("a reconcile after the poke", Duration::from_secs(20), || async {
            (op.reconciles() > before).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let sent = op.requests.since(mark);
    println!("METRIC apiserver_requests_per_nochange_reconcile_with_secret_ref={}", sent.len());
    assert!(sent.is_empty(), "a no-change pass with a referenced Secret sent {sent:?}");

    // Rotating the credentials changes the overlay and the pod template hash (a safe roll follows).
    secrets
        .patch(
            "s3-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"AWS_SECRET_ACCESS_KEY": "rotated456"}})),
        )
        .await
        .expect("rotating the Secret");
    wait_for("a new template hash after the rotation", Duration::from_secs(10), || async {
        let now = template_hash(&sts.get("wal-pool-az-a").await.ok()?);
        (now != before).then_some(())
    })
    .await;

    // The credentials never land in a ConfigMap.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for cm in cms.list(&ListParams::default()).await.expect("list").items {
        let text = serde_json::to_string(&cm.data).unwrap_or_default();
        assert!(
            !text.contains("minio123") && !text.contains("rotated456"),
            "ConfigMap {} contains the secret key",
            cm.name_any()
        );
    }
    op.stop().await;
}

#[tokio::test]
async fn object_rejected_by_the_api_server_is_reported_in_status() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "reject").await;
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    let mut spec = three_zone_spec(19091, 1);
    // Not a valid annotation key: the CRD accepts any map, the StatefulSet validation does not.
    spec["podAnnotations"] = json!({"not a valid key!": "x"});
    clusters.create(&PostParams::default(), &cluster("wal", spec)).await.expect("creating the cluster");
    let cond = wait_for("ConfigValid=False naming the rejected object", Duration::from_secs(30), || async {
        let c = clusters.get("wal").await.ok()?;
        c.status?.conditions.into_iter().find(|c| c.type_ == "ConfigValid" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason, "RenderedObjectRejected");
    assert!(cond.message.contains("StatefulSet"), "message names the object: {}", cond.message);

    // Fixing the spec clears it.
    clusters
        .patch("wal", &PatchParams::default(), &Patch::Merge(json!({"spec": {"podAnnotations": null}})))
        .await
        .expect("fixing the spec");
    wait_for("ConfigValid=True after the fix", Duration::from_secs(30), || async {
        let c = clusters.get("wal").await.ok()?;
        c.status?.conditions.iter().any(|c| c.type_ == "ConfigValid" && c.status == "True").then_some(())
    })
    .await;
    op.stop().await;
}
