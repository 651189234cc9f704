//! Against the real kube-apiserver + controller-manager: errors reach the status with their real
//! words — an admin API that fails (not just "0 active members") and an API error other than a
//! validation failure (a ResourceQuota's 403), which used to be retried forever with no status.

mod apiserver_support;

use std::time::Duration;

use apiserver_support::{FakeCluster, RunningOperator, TestNamespace, client, config, install_crd, spawn_kubelet};
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use woodpecker_crds::{CONDITION_DEGRADED, CONDITION_RECONCILE_FAILED, WoodpeckerCluster};

fn cluster(port: u16) -> WoodpeckerCluster {
    let spec: Value = json!({
        "metricsPort": port,
        "quorum": {"ensembleSize": 3, "strategy": "multi-az-single-rg", "affinityMode": "hard"},
        "rolloutPolicy": {"settleTimeSeconds": 0},
        "bufferPools": [{"name": "pool", "nodeGroups": [
            {"name": "az-a", "zone": "zone-a", "replicas": 1},
            {"name": "az-b", "zone": "zone-b", "replicas": 1},
            {"name": "az-c", "zone": "zone-c", "replicas": 1},
        ]}],
    });
    serde_json::from_value(json!({
        "apiVersion": "woodpecker.zilliz.io/v1alpha1",
        "kind": "WoodpeckerCluster",
        "metadata": {"name": "wal"},
        "spec": spec,
    }))
    .expect("cluster")
}

#[tokio::test]
async fn a_failing_admin_api_is_named_in_the_degraded_condition() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "adminerr").await;
    let fake = FakeCluster::new().await;
    let kubelet = spawn_kubelet(client.clone(), &ns.name, fake.clone());
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster(fake.port)).await.expect("creating the cluster");
    ns.wait_for(&client, "3/3 Ready", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        (st.ready_replicas == 3).then_some(())
    })
    .await;
    if let Some(n) = fake.nodes.lock().unwrap().get_mut("wal-pool-az-b-0") {
        n.status_fails = true;
    }
    // A converged cluster is looked at again only on its idle requeue: poke it (a watch event).
    clusters
        .patch(
            "wal",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"test/poke": "1"}}})),
        )
        .await
        .expect("poking the cluster");
    let cond = ns
        .wait_for(&client, "Degraded naming the failing admin API", Duration::from_secs(60), || async {
            let st = clusters.get("wal").await.ok()?.status?;
            st.conditions
                .into_iter()
                .find(|c| c.type_ == CONDITION_DEGRADED && c.status == "True" && c.message.contains("wal-pool-az-b-0"))
        })
        .await;
    assert!(cond.message.contains("admin API"), "{}", cond.message);
    assert!(cond.message.contains("500") || cond.message.contains("data dir"), "the real error: {}", cond.message);
    op.stop().await;
    kubelet.abort();
}

#[tokio::test]
async fn an_api_error_such_as_an_exceeded_quota_reaches_the_status_and_clears() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns.name);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "one-service"},
        "spec": {"hard": {"services": "1"}},
    }))
    .expect("quota");
    quotas.create(&PostParams::default(), &quota).await.expect("creating the quota");
    let op = RunningOperator::start(config().await, &ns.name);
    let clusters: Api<WoodpeckerCluster> = Api::namespaced(client.clone(), &ns.name);
    clusters.create(&PostParams::default(), &cluster(19091)).await.expect("creating the cluster");
    let cond = ns
        .wait_for(&client, "ReconcileFailed=True with the API server's words", Duration::from_secs(60), || async {
            let st = clusters.get("wal").await.ok()?.status?;
            st.conditions.into_iter().find(|c| c.type_ == CONDITION_RECONCILE_FAILED && c.status == "True")
        })
        .await;
    assert!(cond.message.contains("Service"), "names the object: {}", cond.message);
    assert!(cond.message.contains("quota"), "carries the API server's reason: {}", cond.message);

    // Lifting the quota lets the next pass through, and the condition clears.
    quotas.delete("one-service", &DeleteParams::default()).await.expect("deleting the quota");
    ns.wait_for(&client, "ReconcileFailed=False after the quota is gone", Duration::from_secs(90), || async {
        let st = clusters.get("wal").await.ok()?.status?;
        st.conditions.iter().any(|c| c.type_ == CONDITION_RECONCILE_FAILED && c.status == "False").then_some(())
    })
    .await;
    op.stop().await;
}
